//! How the sink proves who it is: a SAS key (signed by `sas.rs`), a ready-made SAS signature or
//! an Entra ID token (`entra.rs`), put to the connection's `$cbs` node for each entity it uses.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azure_core::credentials::Secret as AzureSecret;
use azure_core::time::OffsetDateTime;
use azure_core_amqp::AmqpClaimsBasedSecurityApis;

use super::classify::classify;
use super::endpoint::Endpoint;
use super::entra::{CachedToken, EntraToken, TokenError, SENDER_ROLE};
use super::link::Link;
use super::sas;
use crate::config::ConnectionString;
use crate::config::EntraCredential;
use crate::sink::{SinkError, TopicBlock};

/// SAS tokens are made for this long (and renewed when half of it has passed).
pub(super) const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// The token type `$cbs` expects for SAS tokens.
const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";
/// The token type of Entra ID tokens.
const JWT_TOKEN_TYPE: &str = "jwt";

/// How the sink authenticates.
#[derive(Clone)]
pub(crate) enum Credentials {
    /// A SAS key.
    Key { name: String, key: String },
    /// A ready-made SAS token.
    Signature(String),
    /// Entra ID.
    Entra(Arc<EntraToken>),
}

/// A token for one entity, as put to `$cbs`.
pub(crate) struct Grant {
    /// When it expires.
    pub expiry: SystemTime,
    /// When to put a fresh one; `None` for a fixed SAS signature, which cannot be renewed.
    pub renew_at: Option<SystemTime>,
}

impl Credentials {
    /// Whether `other` authenticates the same way (the same SAS key or signature; Entra ID
    /// credentials are never reloaded this way).
    pub(super) fn same_as(&self, other: &Credentials) -> bool {
        match (self, other) {
            (
                Credentials::Key { name, key },
                Credentials::Key {
                    name: other_name,
                    key: other_key,
                },
            ) => name == other_name && key == other_key,
            (Credentials::Signature(a), Credentials::Signature(b)) => a == b,
            _ => matches!(
                (self, other),
                (Credentials::Entra(_), Credentials::Entra(_))
            ),
        }
    }

    /// The SAS key or signature a connection string carries.
    pub(super) fn from_connection_string(cs: &ConnectionString) -> Result<Self, String> {
        match (&cs.key_name, &cs.key, &cs.signature) {
            (Some(name), Some(key), _) => Ok(Credentials::Key {
                name: name.clone(),
                key: key.clone(),
            }),
            (_, _, Some(sig)) => Ok(Credentials::Signature(sig.clone())),
            _ => Err("no SAS key or signature".into()),
        }
    }

    /// The Entra ID credential of the configured kind (`ca_file`: extra CA certificates for
    /// its HTTPS requests).
    pub(super) fn entra(
        kind: &EntraCredential,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        Ok(Credentials::Entra(Arc::new(EntraToken::new(
            kind, ca_file,
        )?)))
    }

    /// Fetches a fresh Entra ID token when the shared one is due, so that renewing many
    /// topics afterwards costs no request (SAS needs nothing).
    pub(super) async fn prefetch(&self) -> Result<(), TokenError> {
        match self {
            Credentials::Entra(entra) => entra.token().await.map(|_| ()),
            _ => Ok(()),
        }
    }

    /// A token for `audience`, its `$cbs` token type, and when it expires and is renewed.
    async fn token(&self, audience: &str) -> Result<(String, &'static str, Grant), TokenError> {
        match self {
            Credentials::Key { name, key } => {
                let now = SystemTime::now();
                let expiry = now + TOKEN_LIFETIME;
                let se = expiry
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let token = CachedToken::new(sas::token(audience, name, key, se), now, expiry);
                Ok((
                    token.value,
                    SAS_TOKEN_TYPE,
                    Grant {
                        expiry,
                        renew_at: Some(token.renew_at),
                    },
                ))
            }
            Credentials::Signature(sig) => {
                let se = sig
                    .split('&')
                    .find_map(|p| p.strip_prefix("se="))
                    .and_then(|s| s.parse::<u64>().ok())
                    .map(|s| UNIX_EPOCH + Duration::from_secs(s))
                    .unwrap_or_else(|| SystemTime::now() + TOKEN_LIFETIME);
                Ok((
                    sig.clone(),
                    SAS_TOKEN_TYPE,
                    Grant {
                        expiry: se,
                        renew_at: None,
                    },
                ))
            }
            Credentials::Entra(entra) => {
                let token = entra.token().await?;
                Ok((
                    token.value,
                    JWT_TOKEN_TYPE,
                    Grant {
                        expiry: token.expiry,
                        renew_at: Some(token.renew_at),
                    },
                ))
            }
        }
    }

    /// `error` with, for an Entra ID identity the broker refused, what to grant to whom.
    pub(super) fn explain(&self, error: SinkError) -> SinkError {
        match (self, error) {
            (
                Credentials::Entra(entra),
                SinkError::Blocked {
                    block: TopicBlock::Unauthorized,
                    reason,
                },
            ) => SinkError::Blocked {
                block: TopicBlock::Unauthorized,
                reason: format!(
                    "{reason}; assign the role \"{SENDER_ROLE}\" on the topic (or its namespace) to the {}",
                    entra.identity
                ),
            },
            (_, other) => other,
        }
    }
}

impl Link {
    /// Puts a token for `path` (an entity path) to `$cbs`; returns when it expires and when
    /// to renew it.
    pub(crate) async fn authorize(
        &self,
        endpoint: &Endpoint,
        path: &str,
    ) -> Result<Grant, SinkError> {
        let audience = endpoint.entity(path);
        let (token, kind, grant) = endpoint
            .credentials
            .token(&audience)
            .await
            .map_err(|e| e.for_topic(path))?;
        let expiry = grant.expiry;
        let expires_on = OffsetDateTime::from_unix_timestamp(
            expiry
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs() as i64,
        )
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
        self.cbs
            .authorize_path(
                audience,
                Some(kind.to_string()),
                &AzureSecret::new(token),
                expires_on,
            )
            .await
            .map_err(|e| {
                endpoint
                    .credentials
                    .explain(classify(path, "authorizing", &e))
            })?;
        Ok(grant)
    }
}
