//! The state store as the OAuth [`TokenCache`]: tokens live in the store's token table, so every
//! replica and every restart sees the latest one ([`TokenStore::token`], [`TokenStore::put_token`]).

use std::sync::Arc;

use async_trait::async_trait;

use super::TokenStore;
use crate::http::auth::{TokenCache, TokenCacheError};

/// A [`TokenCache`] backed by the store's token role.
pub struct StoreTokenCache {
    store: Arc<dyn TokenStore>,
}

impl StoreTokenCache {
    /// OAuth tokens kept in `store`.
    pub fn new(store: Arc<dyn TokenStore>) -> Self {
        StoreTokenCache { store }
    }
}

#[async_trait]
impl TokenCache for StoreTokenCache {
    async fn token(&self, name: &str) -> Result<Option<String>, TokenCacheError> {
        self.store
            .token(name)
            .await
            .map_err(|e| TokenCacheError(e.to_string()))
    }

    async fn put_token(&self, name: &str, value: &str) -> Result<(), TokenCacheError> {
        self.store
            .put_token(name, value)
            .await
            .map_err(|e| TokenCacheError(e.to_string()))
    }

    async fn claim_refresh(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, TokenCacheError> {
        self.store
            .claim_token_refresh(name, holder, ttl)
            .await
            .map_err(|e| TokenCacheError(e.to_string()))
    }

    async fn release_refresh(&self, name: &str, holder: &str) -> Result<(), TokenCacheError> {
        self.store
            .release_token_refresh(name, holder)
            .await
            .map_err(|e| TokenCacheError(e.to_string()))
    }

    fn keeps_tokens(&self) -> bool {
        self.store.keeps_tokens()
    }
}
