//! How the sink proves who it is: a SAS key (signed by `sas.rs`), a ready-made SAS signature or
//! an Entra ID token, put to the connection's `$cbs` node for each entity it uses.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azure_core::credentials::{Secret as AzureSecret, TokenCredential};
use azure_core::time::OffsetDateTime;
use azure_core_amqp::AmqpClaimsBasedSecurityApis;

use super::classify::classify;
use super::endpoint::Endpoint;
use super::link::Link;
use super::sas;
use crate::config::ConnectionString;
use crate::config::EntraCredential;
use crate::sink::SinkError;

/// Entra ID scope of Service Bus.
const SCOPE: &str = "https://servicebus.azure.net/.default";
/// SAS tokens are made for this long and renewed when a quarter is left.
pub(super) const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// The token type `$cbs` expects for SAS tokens.
const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";

/// How the sink authenticates.
#[derive(Clone)]
pub(crate) enum Credentials {
    /// A SAS key.
    Key { name: String, key: String },
    /// A ready-made SAS token.
    Signature(String),
    /// Entra ID.
    Entra(Arc<dyn TokenCredential>),
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

    /// The Entra ID credential of the configured kind.
    pub(super) fn entra(kind: &EntraCredential) -> Result<Self, String> {
        let credential: Arc<dyn TokenCredential> = match kind {
            EntraCredential::WorkloadIdentity => {
                azure_identity::WorkloadIdentityCredential::new(None)
                    .map_err(|e| format!("workload identity: {e}"))?
            }
            EntraCredential::ManagedIdentity => {
                azure_identity::ManagedIdentityCredential::new(None)
                    .map_err(|e| format!("managed identity: {e}"))?
            }
            EntraCredential::Developer => azure_identity::DeveloperToolsCredential::new(None)
                .map_err(|e| format!("developer tools credential: {e}"))?,
        };
        Ok(Credentials::Entra(credential))
    }

    /// A token for `audience`, its `$cbs` token type and when it expires.
    async fn token(&self, audience: &str) -> Result<(String, &'static str, SystemTime), String> {
        match self {
            Credentials::Key { name, key } => {
                let expiry = SystemTime::now() + TOKEN_LIFETIME;
                let se = expiry
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                Ok((sas::token(audience, name, key, se), SAS_TOKEN_TYPE, expiry))
            }
            Credentials::Signature(sig) => {
                let se = sig
                    .split('&')
                    .find_map(|p| p.strip_prefix("se="))
                    .and_then(|s| s.parse::<u64>().ok())
                    .map(|s| UNIX_EPOCH + Duration::from_secs(s))
                    .unwrap_or_else(|| SystemTime::now() + TOKEN_LIFETIME);
                Ok((sig.clone(), SAS_TOKEN_TYPE, se))
            }
            Credentials::Entra(credential) => {
                let token = credential
                    .get_token(&[SCOPE], None)
                    .await
                    .map_err(|e| format!("Entra ID token: {e}"))?;
                let expiry = UNIX_EPOCH
                    + Duration::from_secs(token.expires_on.unix_timestamp().max(0) as u64);
                Ok((token.token.secret().to_string(), "jwt", expiry))
            }
        }
    }
}

impl Link {
    /// Puts a token for `path` (an entity path) to `$cbs`; returns its expiry.
    pub(crate) async fn authorize(
        &self,
        endpoint: &Endpoint,
        path: &str,
    ) -> Result<SystemTime, SinkError> {
        let audience = endpoint.entity(path);
        let (token, kind, expiry) = endpoint
            .credentials
            .token(&audience)
            .await
            .map_err(SinkError::transient)?;
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
            .map_err(|e| classify(path, "authorizing", &e))?;
        Ok(expiry)
    }
}
