//! Entra ID credentials of the sink, built with `azure_identity`, and the token they share.
//!
//! - **workload identity** (AKS): the client-credentials grant with the Kubernetes service
//!   account token as client assertion, from `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
//!   `AZURE_FEDERATED_TOKEN_FILE` and `AZURE_AUTHORITY_HOST` (default
//!   `https://login.microsoftonline.com`), the variables the AKS workload identity webhook
//!   injects. It is `azure_identity`'s [`ClientAssertionCredential`] with the assertion read
//!   from the file **at every token request** ([`FederatedTokenFile`]):
//!   `WorkloadIdentityCredential` re-reads the file only every 10 minutes, so a pod whose
//!   projected token the kubelet rotated could keep presenting the expired one.
//! - **managed identity**: `azure_identity`'s `ManagedIdentityCredential` (IMDS at
//!   `169.254.169.254`, or App Service's `IDENTITY_ENDPOINT`).
//! - **developer**: the Azure CLI / Azure Developer CLI login.
//!
//! Their HTTPS requests trust the system roots, plus the CA certificates of
//! `sink.identity_ca_file` when set (a private or test authority); verification is never off.
//!
//! One token serves every topic: it is fetched once and reused until half its lifetime has
//! passed ([`EntraToken::token`]), so renewing N topics costs one token request.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::{ClientMethodOptions, ClientOptions, Transport};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions,
};

use crate::config::EntraCredential;
use crate::sink::{SinkError, TopicBlock};

/// Entra ID scope of Service Bus.
pub(super) const SCOPE: &str = "https://servicebus.azure.net/.default";
/// The role an identity needs on a topic to publish.
pub(crate) const SENDER_ROLE: &str = "Azure Service Bus Data Sender";

/// How long the HTTPS requests of a credential may take to connect / to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A token for `$cbs`: its value, when it expires and when to renew it.
#[derive(Clone)]
pub(super) struct CachedToken {
    /// The access token (a secret: never logged).
    pub value: String,
    /// When it expires.
    pub expiry: SystemTime,
    /// When half its lifetime has passed: renew from then on.
    pub renew_at: SystemTime,
}

impl CachedToken {
    /// A token obtained at `now` that expires at `expiry`.
    pub fn new(value: String, now: SystemTime, expiry: SystemTime) -> Self {
        let lifetime = expiry.duration_since(now).unwrap_or_default();
        CachedToken {
            value,
            expiry,
            renew_at: now + lifetime / 2,
        }
    }
}

/// Why no Entra ID token could be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    /// The authority (or managed identity endpoint) answered and refused: the identity is
    /// misconfigured, and retrying changes nothing until an operator fixes it.
    #[error("Entra ID refused a token to the {identity}: {message}; {fix}")]
    Refused {
        /// What asked.
        identity: String,
        /// The credential's error (the authority's AADSTS code and text).
        message: String,
        /// What to check.
        fix: &'static str,
    },
    /// No answer, a server error, or a local problem (the token file unreadable): retried.
    #[error("no Entra ID token for the {identity}: {message}")]
    Unavailable {
        /// What asked.
        identity: String,
        /// The credential's error.
        message: String,
    },
}

impl TokenError {
    /// The sink error of a send to `topic` that needed the token: a refusal pauses the topic
    /// (`not authorized`), anything else is retried.
    pub(crate) fn for_topic(&self, topic: &str) -> SinkError {
        match self {
            TokenError::Refused { .. } => SinkError::Blocked {
                block: TopicBlock::Unauthorized,
                reason: format!("topic {topic} cannot be authorized: {self}"),
            },
            TokenError::Unavailable { .. } => {
                SinkError::transient(format!("authorizing {topic}: {self}"))
            }
        }
    }
}

/// Whether `error` (or an error it wraps) is an HTTP 4xx answer: a refusal.
fn refused(error: &azure_core::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(core) = e.downcast_ref::<azure_core::Error>() {
            if let ErrorKind::HttpResponse { status, .. } = core.kind() {
                return (400..500).contains(&u16::from(*status));
            }
        }
        next = e.source();
    }
    false
}

/// An Entra ID credential, what it is (for messages), and the token it last gave.
pub(crate) struct EntraToken {
    credential: Arc<dyn TokenCredential>,
    /// E.g. `workload identity (client id …, tenant …)`.
    pub identity: String,
    /// What to check when the authority refuses.
    fix: &'static str,
    cached: tokio::sync::Mutex<Option<CachedToken>>,
}

impl EntraToken {
    /// The credential of `kind`; its HTTPS requests also trust `ca_file`'s certificates.
    pub(crate) fn new(kind: &EntraCredential, ca_file: Option<&Path>) -> Result<Self, String> {
        let client_options = client_options(ca_file)?;
        let (credential, identity): (Arc<dyn TokenCredential>, String) = match kind {
            EntraCredential::WorkloadIdentity => workload_identity(client_options)?,
            EntraCredential::ManagedIdentity => {
                let credential =
                    ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                        client_options,
                        ..Default::default()
                    }))
                    .map_err(|e| format!("managed identity: {e}"))?;
                (credential, "managed identity".to_string())
            }
            EntraCredential::Developer => {
                let credential = azure_identity::DeveloperToolsCredential::new(None)
                    .map_err(|e| format!("developer tools credential: {e}"))?;
                (credential, "developer tools login".to_string())
            }
        };
        let fix = match kind {
            EntraCredential::WorkloadIdentity => WORKLOAD_FIX,
            EntraCredential::ManagedIdentity => MANAGED_FIX,
            EntraCredential::Developer => "log in with az login or azd auth login",
        };
        Ok(EntraToken {
            credential,
            identity,
            fix,
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// The current token, fetched anew once half the previous one's lifetime has passed.
    pub(super) async fn token(&self) -> Result<CachedToken, TokenError> {
        let mut cached = self.cached.lock().await;
        let now = SystemTime::now();
        if let Some(token) = cached.as_ref().filter(|t| now < t.renew_at) {
            return Ok(token.clone());
        }
        let fresh = self
            .credential
            .get_token(&[SCOPE], None)
            .await
            .map_err(|e| {
                // The credential's message ends with a troubleshooting link on a new line.
                let message = e.to_string().replace('\n', " ");
                let identity = self.identity.clone();
                if refused(&e) {
                    TokenError::Refused {
                        identity,
                        message,
                        fix: self.fix,
                    }
                } else {
                    TokenError::Unavailable { identity, message }
                }
            })?;
        let expiry =
            UNIX_EPOCH + Duration::from_secs(fresh.expires_on.unix_timestamp().max(0) as u64);
        let token = CachedToken::new(fresh.token.secret().to_string(), now, expiry);
        tracing::debug!(identity = %self.identity, expires_in = ?expiry.duration_since(now).unwrap_or_default(), "Entra ID token obtained");
        *cached = Some(token.clone());
        Ok(token)
    }
}

/// The pipeline options of a credential: the default HTTP client, or one that also trusts
/// the CA certificates of `ca_file` (PEM).
fn client_options(ca_file: Option<&Path>) -> Result<ClientOptions, String> {
    let Some(path) = ca_file else {
        return Ok(ClientOptions::default());
    };
    let what = || format!("sink.identity_ca_file {}", path.display());
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", what()))?;
    let certs = reqwest013::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{}: not PEM certificates: {e}", what()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no certificate", what()));
    }
    let client = reqwest013::ClientBuilder::new()
        .tls_certs_merge(certs)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .redirect(reqwest013::redirect::Policy::none())
        .build()
        .map_err(|e| format!("{}: {e}", what()))?;
    Ok(ClientOptions {
        transport: Some(Transport::new(Arc::new(client))),
        ..Default::default()
    })
}

/// What to check when Entra ID refuses workload identity.
const WORKLOAD_FIX: &str = "check that the app registration or user-assigned identity AZURE_CLIENT_ID names has a federated credential for this cluster's OIDC issuer, subject system:serviceaccount:<namespace>:<service account> and audience api://AzureADTokenExchange";
/// What to check when the managed identity endpoint refuses.
const MANAGED_FIX: &str =
    "check that a managed identity is assigned to this VM, node pool or service";

/// What the AKS workload identity webhook injects, and where it comes from.
const WEBHOOK: &str = "the AKS workload identity webhook sets it in pods labelled azure.workload.identity/use: \"true\" whose ServiceAccount is annotated azure.workload.identity/client-id";

fn required_env(name: &str) -> Result<String, String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        _ => Err(format!("workload identity: {name} is not set; {WEBHOOK}")),
    }
}

/// Workload identity from the environment the webhook injects.
fn workload_identity(
    client_options: ClientOptions,
) -> Result<(Arc<dyn TokenCredential>, String), String> {
    let client_id = required_env("AZURE_CLIENT_ID")?;
    let tenant_id = required_env("AZURE_TENANT_ID")?;
    let file = PathBuf::from(required_env("AZURE_FEDERATED_TOKEN_FILE")?);
    if let Err(e) = std::fs::metadata(&file) {
        return Err(format!(
            "workload identity: the federated token file {} (AZURE_FEDERATED_TOKEN_FILE) cannot be read: {e}",
            file.display()
        ));
    }
    let identity = format!("workload identity (client id {client_id}, tenant {tenant_id})");
    let credential = ClientAssertionCredential::new(
        tenant_id,
        client_id,
        FederatedTokenFile { path: file },
        Some(ClientAssertionCredentialOptions { client_options }),
    )
    .map_err(|e| format!("{identity}: {e}"))?;
    Ok((credential, identity))
}

/// The Kubernetes service account token the kubelet projects (and rotates) into
/// `AZURE_FEDERATED_TOKEN_FILE`, read at every token request.
#[derive(Debug)]
struct FederatedTokenFile {
    path: PathBuf,
}

#[async_trait::async_trait]
impl ClientAssertion for FederatedTokenFile {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        match tokio::fs::read_to_string(&self.path).await {
            Ok(token) if !token.trim().is_empty() => Ok(token.trim().to_string()),
            Ok(_) => Err(azure_core::Error::with_message(
                ErrorKind::Credential,
                format!(
                    "the federated token file {} (AZURE_FEDERATED_TOKEN_FILE) is empty",
                    self.path.display()
                ),
            )),
            Err(e) => Err(azure_core::Error::with_error(
                ErrorKind::Credential,
                e,
                format!(
                    "cannot read the federated token file {} (AZURE_FEDERATED_TOKEN_FILE)",
                    self.path.display()
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_renewed_once_half_its_lifetime_has_passed() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let t = CachedToken::new("x".into(), now, now + Duration::from_secs(5));
        assert_eq!(t.renew_at, now + Duration::from_millis(2_500));
        let t = CachedToken::new("x".into(), now, now + Duration::from_secs(3600));
        assert_eq!(t.renew_at, now + Duration::from_secs(1800));
        // Already expired: renew at once.
        let t = CachedToken::new("x".into(), now, now - Duration::from_secs(1));
        assert_eq!(t.renew_at, now);
    }

    #[tokio::test]
    async fn the_federated_token_file_is_read_at_every_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let file = FederatedTokenFile { path: path.clone() };
        assert_eq!(file.secret(None).await.unwrap(), "first");
        std::fs::write(&path, "rotated").unwrap();
        assert_eq!(file.secret(None).await.unwrap(), "rotated");
        std::fs::remove_file(&path).unwrap();
        let e = file.secret(None).await.unwrap_err().to_string();
        assert!(e.contains("AZURE_FEDERATED_TOKEN_FILE"), "{e}");
        assert!(e.contains(&path.display().to_string()), "{e}");
    }

    #[test]
    fn an_unreadable_or_empty_ca_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.pem");
        let e = client_options(Some(&missing)).err().unwrap();
        assert!(
            e.contains("sink.identity_ca_file") && e.contains("none.pem"),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = client_options(Some(&empty)).err().unwrap();
        assert!(e.contains("no certificate"), "{e}");
        assert!(client_options(None).unwrap().transport.is_none());
    }
}
