//! A local Entra ID (Azure AD) authority and managed identity endpoint, so pollbus's
//! workload identity and managed identity paths run end to end without Azure:
//!
//! - **authority** (HTTPS, [`Authority::url`] is what `AZURE_AUTHORITY_HOST` names):
//!   `POST /{tenant}/oauth2/v2.0/token`, the client-credentials grant with a client assertion
//!   that workload identity sends — the assertion is the Kubernetes service account token of
//!   the federated token file; it must be signed by the cluster's OIDC key, issued by the
//!   cluster issuer for audience `api://AzureADTokenExchange`, unexpired, and match a federated
//!   credential of the application `client_id` names; the scope must be
//!   `https://servicebus.azure.net/.default`. Errors come as Entra words them (`AADSTS…`
//!   codes). `GET /{tenant}/discovery/v2.0/keys` is the JWKS and
//!   `GET /{tenant}/v2.0/.well-known/openid-configuration` the metadata.
//! - **IMDS** (plain HTTP, as on Azure VMs and AKS nodes): `GET
//!   /metadata/identity/oauth2/token?resource=…` with `Metadata: true`. `azure_identity`
//!   always asks `http://169.254.169.254`; a test routes that to this endpoint by giving
//!   pollbus `HTTP_PROXY` = [`Authority::imds_url`] (the endpoint answers proxy-form requests).
//!
//! Access tokens are RS256 JWTs: `aud` `https://servicebus.azure.net`, `iss`
//! [`Authority::issuer`], `tid`, `oid`, `appid`, `iat`/`nbf`/`exp`, lifetime
//! [`Authority::set_token_lifetime`] (short, to exercise renewal). The emulator validates them
//! with [`Authority::jwks`] (`servicebus_emulator::EntraAuth`).
//!
//! The signing keys are fixed test keys (`keys/*.pem`, made with `openssl genrsa 2048`); they
//! sign nothing outside tests.

mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};

pub use tls::TestCa;

/// The audience of Service Bus access tokens.
pub const SERVICEBUS_AUDIENCE: &str = "https://servicebus.azure.net";
/// The scope clients ask for.
pub const SERVICEBUS_SCOPE: &str = "https://servicebus.azure.net/.default";
/// The audience of Kubernetes tokens exchanged for Entra tokens (workload identity).
pub const EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
/// The cluster OIDC issuer the federated credentials name.
pub const CLUSTER_ISSUER: &str = "https://oidc.aks.test/00000000-0000-0000-0000-00000000c1a5/";

const AUTHORITY_KEY: &str = include_str!("keys/authority.pem");
const CLUSTER_KEY: &str = include_str!("keys/cluster.pem");
const AUTHORITY_KID: &str = "pollbus-test-authority-1";
const CLUSTER_KID: &str = "pollbus-test-cluster-1";

/// An RSA key: signs with `jsonwebtoken`, publishes `n`/`e` (read with `ring`).
#[derive(Clone)]
struct SigningKey {
    kid: &'static str,
    encoding: EncodingKey,
    /// Modulus and exponent, base64url.
    n: String,
    e: String,
}

impl SigningKey {
    fn from_pem(pem: &str, kid: &'static str) -> SigningKey {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = STANDARD.decode(body).expect("test key PEM");
        let pair = ring::rsa::KeyPair::from_der(&der).expect("PKCS#1 RSA key");
        let public: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
        SigningKey {
            kid,
            encoding: EncodingKey::from_rsa_der(&der),
            n: URL_SAFE_NO_PAD.encode(&public.n),
            e: URL_SAFE_NO_PAD.encode(&public.e),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.to_string());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }

    fn decoding(&self) -> DecodingKey {
        DecodingKey::from_rsa_components(&self.n, &self.e).expect("public key")
    }

    fn jwk(&self) -> Value {
        json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": self.n, "e": self.e})
    }
}

/// An application registration with the federated credentials it trusts.
#[derive(Debug, Clone)]
struct App {
    oid: String,
    /// (issuer, subject) of each federated credential; audience is always
    /// [`EXCHANGE_AUDIENCE`].
    federated: Vec<(String, String)>,
}

/// One token request, as the authority saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// `workload` (token endpoint) or `imds`.
    pub endpoint: &'static str,
    /// The client id asked for (workload identity), empty for IMDS.
    pub client_id: String,
    /// The `jti` of the service account token presented as the assertion (workload identity).
    pub assertion_id: String,
    /// `None` when a token was issued, else the error code (`AADSTS70021`, `invalid_request`).
    pub refused: Option<String>,
    /// When (unix milliseconds).
    pub at_ms: u128,
}

struct Inner {
    tenant: String,
    url: String,
    key: SigningKey,
    cluster: SigningKey,
    apps: Mutex<HashMap<String, App>>,
    /// The object id of the managed identity IMDS hands out; `None`: none assigned.
    managed: Mutex<Option<String>>,
    lifetime: Mutex<Duration>,
    requests: Mutex<Vec<TokenRequest>>,
}

/// A running authority and IMDS endpoint (they stop with the test's runtime).
#[derive(Clone)]
pub struct Authority {
    inner: Arc<Inner>,
    imds: SocketAddr,
    ca_pem: String,
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl Authority {
    /// Starts the authority (HTTPS) and the IMDS endpoint (HTTP) on ephemeral loopback ports,
    /// for `tenant`, issuing 1-hour tokens until [`Authority::set_token_lifetime`].
    pub async fn start(tenant: &str) -> Authority {
        let ca = TestCa::new("pollbus test authority CA");
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let inner = Arc::new(Inner {
            tenant: tenant.to_string(),
            url: format!("https://{addr}"),
            key: SigningKey::from_pem(AUTHORITY_KEY, AUTHORITY_KID),
            cluster: SigningKey::from_pem(CLUSTER_KEY, CLUSTER_KID),
            apps: Mutex::default(),
            managed: Mutex::default(),
            lifetime: Mutex::new(Duration::from_secs(3600)),
            requests: Mutex::default(),
        });
        let authority = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route("/{tenant}/discovery/v2.0/keys", get(keys))
            .route(
                "/{tenant}/v2.0/.well-known/openid-configuration",
                get(metadata),
            )
            .with_state(inner.clone());
        let listener = tls::TlsListener {
            tcp,
            acceptor: ca.acceptor,
        };
        tokio::spawn(async move { axum::serve(listener, authority).await });

        let imds_tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let imds = imds_tcp.local_addr().unwrap();
        let imds_app = Router::new()
            .route("/metadata/identity/oauth2/token", get(imds_token))
            .with_state(inner.clone());
        tokio::spawn(async move { axum::serve(imds_tcp, imds_app).await });
        Authority {
            inner,
            imds,
            ca_pem: ca.ca_pem,
        }
    }

    /// The authority host (`https://127.0.0.1:port`): `AZURE_AUTHORITY_HOST`.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The IMDS endpoint as an HTTP proxy URL (`http://127.0.0.1:port`): `HTTP_PROXY`.
    pub fn imds_url(&self) -> String {
        format!("http://{}", self.imds)
    }

    /// The tenant id.
    pub fn tenant(&self) -> &str {
        &self.inner.tenant
    }

    /// The test CA's certificate (PEM), which pollbus must trust to reach [`Authority::url`].
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The `iss` of the access tokens.
    pub fn issuer(&self) -> String {
        format!("{}/{}/v2.0", self.inner.url, self.inner.tenant)
    }

    /// The JWKS document (as served at `/{tenant}/discovery/v2.0/keys`).
    pub fn jwks(&self) -> String {
        json!({"keys": [self.inner.key.jwk()]}).to_string()
    }

    /// Access tokens live this long from now on.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        *self.inner.lifetime.lock().unwrap() = lifetime;
    }

    /// Registers application `client_id` (service principal object id `oid`) with a federated
    /// credential for the Kubernetes service account `subject`
    /// (`system:serviceaccount:<namespace>:<name>`) of [`CLUSTER_ISSUER`].
    pub fn register_workload(&self, client_id: &str, oid: &str, subject: &str) {
        self.inner.apps.lock().unwrap().insert(
            client_id.to_string(),
            App {
                oid: oid.to_string(),
                federated: vec![(CLUSTER_ISSUER.to_string(), subject.to_string())],
            },
        );
    }

    /// Gives the machine a managed identity with object id `oid` (`None`: none assigned).
    pub fn set_managed_identity(&self, oid: Option<&str>) {
        *self.inner.managed.lock().unwrap() = oid.map(str::to_string);
    }

    /// A service account token, as the kubelet projects it into the federated token file:
    /// signed by the cluster key, issuer [`CLUSTER_ISSUER`], audience [`EXCHANGE_AUDIENCE`],
    /// valid for `lifetime`, with a fresh `jti`.
    pub fn service_account_token(&self, subject: &str, lifetime: Duration) -> String {
        let iat = now().as_secs();
        self.inner.cluster.sign(&json!({
            "iss": CLUSTER_ISSUER,
            "sub": subject,
            "aud": [EXCHANGE_AUDIENCE],
            "iat": iat,
            "nbf": iat,
            "exp": iat + lifetime.as_secs(),
            "jti": format!("sa-{}", now().as_nanos()),
        }))
    }

    /// Signs arbitrary access-token `claims` with the authority's key (to test validation).
    pub fn sign_access_token(&self, claims: &Value) -> String {
        self.inner.key.sign(claims)
    }

    /// Signs `claims` with a key the authority does not publish (a forged token).
    pub fn sign_with_foreign_key(&self, claims: &Value) -> String {
        let mut forged = self.inner.cluster.clone();
        forged.kid = AUTHORITY_KID;
        forged.sign(claims)
    }

    /// The claims of a valid access token for `oid`, issued now for `lifetime`.
    pub fn access_claims(&self, oid: &str, lifetime: Duration) -> Value {
        let iat = now().as_secs();
        json!({
            "aud": SERVICEBUS_AUDIENCE,
            "iss": self.issuer(),
            "iat": iat,
            "nbf": iat,
            "exp": iat + lifetime.as_secs(),
            "tid": self.inner.tenant,
            "oid": oid,
            "sub": oid,
            "ver": "2.0",
        })
    }

    /// Every token request so far, in order.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.inner.requests.lock().unwrap().clone()
    }
}

impl Inner {
    fn issue(&self, oid: &str, appid: &str) -> (String, u64) {
        let lifetime = (*self.lifetime.lock().unwrap()).max(Duration::from_secs(1));
        let iat = now().as_secs();
        let token = self.key.sign(&json!({
            "aud": SERVICEBUS_AUDIENCE,
            "iss": format!("{}/{}/v2.0", self.url, self.tenant),
            "iat": iat,
            "nbf": iat,
            "exp": iat + lifetime.as_secs(),
            "tid": self.tenant,
            "oid": oid,
            "sub": oid,
            "appid": appid,
            "ver": "2.0",
        }));
        (token, lifetime.as_secs())
    }

    fn record(&self, request: TokenRequest) {
        self.requests.lock().unwrap().push(request);
    }
}

/// An Entra error answer: `error`, `error_description` starting with the AADSTS code, and
/// `error_codes`.
fn entra_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description} Trace ID: 00000000-0000-0000-0000-000000000000 Correlation ID: 00000000-0000-0000-0000-000000000000 Timestamp: 2026-01-01 00:00:00Z"),
        "error_codes": [code],
        "timestamp": "2026-01-01 00:00:00Z",
        "trace_id": "00000000-0000-0000-0000-000000000000",
        "correlation_id": "00000000-0000-0000-0000-000000000000",
    });
    (status, Json(body)).into_response()
}

async fn token(
    State(inner): State<Arc<Inner>>,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let client_id = field("client_id");
    let assertion = field("client_assertion");
    let assertion_id = jsonwebtoken::dangerous::insecure_decode::<Value>(&assertion)
        .ok()
        .and_then(|d| d.claims["jti"].as_str().map(str::to_string))
        .unwrap_or_default();
    let refuse = |code: u32, error: &str, description: String| {
        inner.record(TokenRequest {
            endpoint: "workload",
            client_id: client_id.clone(),
            assertion_id: assertion_id.clone(),
            refused: Some(format!("AADSTS{code}")),
            at_ms: now().as_millis(),
        });
        entra_error(StatusCode::BAD_REQUEST, error, code, &description)
    };
    if tenant != inner.tenant {
        return refuse(
            90002,
            "invalid_request",
            format!("Tenant '{tenant}' not found."),
        );
    }
    if field("grant_type") != "client_credentials"
        || field("client_assertion_type")
            != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    {
        return refuse(
            900144,
            "invalid_request",
            "The request body must contain the client_credentials grant with a jwt-bearer client assertion.".into(),
        );
    }
    if field("scope") != SERVICEBUS_SCOPE {
        return refuse(
            70011,
            "invalid_scope",
            format!(
                "The provided value for the input parameter 'scope' is not valid. The scope {} is not valid.",
                field("scope")
            ),
        );
    }
    let Some(app) = inner.apps.lock().unwrap().get(&client_id).cloned() else {
        return refuse(
            700016,
            "unauthorized_client",
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
            ),
        );
    };
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = 0;
    validation.set_audience(&[EXCHANGE_AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    let decoded = jsonwebtoken::decode::<Value>(&assertion, &inner.cluster.decoding(), &validation);
    let claims = match decoded {
        Ok(d) => d.claims,
        Err(e) => {
            use jsonwebtoken::errors::ErrorKind as K;
            return match e.kind() {
                K::ExpiredSignature => refuse(
                    700024,
                    "invalid_client",
                    "Client assertion is not within its valid time range.".into(),
                ),
                K::InvalidSignature => refuse(
                    50013,
                    "invalid_client",
                    "Assertion failed signature validation.".into(),
                ),
                _ => refuse(
                    50027,
                    "invalid_request",
                    format!("JWT token is invalid or malformed ({e})."),
                ),
            };
        }
    };
    let issuer = claims["iss"].as_str().unwrap_or_default();
    let subject = claims["sub"].as_str().unwrap_or_default();
    if !app
        .federated
        .iter()
        .any(|(i, s)| i == issuer && s == subject)
    {
        return refuse(
            70021,
            "invalid_request",
            format!(
                "No matching federated identity record found for presented assertion. Assertion Issuer: '{issuer}'. Assertion Subject: '{subject}'. Assertion Audience: '{EXCHANGE_AUDIENCE}'."
            ),
        );
    }
    let (access, lifetime) = inner.issue(&app.oid, &client_id);
    inner.record(TokenRequest {
        endpoint: "workload",
        client_id: client_id.clone(),
        assertion_id: assertion_id.clone(),
        refused: None,
        at_ms: now().as_millis(),
    });
    Json(json!({
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access,
    }))
    .into_response()
}

async fn keys(State(inner): State<Arc<Inner>>, Path(tenant): Path<String>) -> Response {
    if tenant != inner.tenant {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    Json(json!({"keys": [inner.key.jwk()]})).into_response()
}

async fn metadata(State(inner): State<Arc<Inner>>, Path(tenant): Path<String>) -> Response {
    let base = format!("{}/{}", inner.url, tenant);
    Json(json!({
        "issuer": format!("{base}/v2.0"),
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "jwks_uri": format!("{base}/discovery/v2.0/keys"),
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
    .into_response()
}

/// IMDS: `GET /metadata/identity/oauth2/token?api-version=…&resource=…` with `Metadata: true`.
async fn imds_token(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let refuse = |error: &str, description: &str| {
        inner.record(TokenRequest {
            endpoint: "imds",
            client_id: String::new(),
            assertion_id: String::new(),
            refused: Some(error.to_string()),
            at_ms: now().as_millis(),
        });
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": error, "error_description": description})),
        )
            .into_response()
    };
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return refuse("invalid_request", "Required metadata header not specified");
    }
    let resource = query.get("resource").cloned().unwrap_or_default();
    if resource.trim_end_matches('/') != SERVICEBUS_AUDIENCE {
        return refuse(
            "invalid_resource",
            &format!("AADSTS500011: The resource principal named {resource} was not found in the tenant."),
        );
    }
    let Some(oid) = inner.managed.lock().unwrap().clone() else {
        return refuse("invalid_request", "Identity not found");
    };
    let (access, lifetime) = inner.issue(&oid, "");
    inner.record(TokenRequest {
        endpoint: "imds",
        client_id: String::new(),
        assertion_id: String::new(),
        refused: None,
        at_ms: now().as_millis(),
    });
    let now_s = now().as_secs();
    Json(json!({
        "access_token": access,
        "client_id": "",
        "expires_in": lifetime.to_string(),
        "expires_on": (now_s + lifetime).to_string(),
        "ext_expires_in": lifetime.to_string(),
        "not_before": now_s.to_string(),
        "resource": resource,
        "token_type": "Bearer",
    }))
    .into_response()
}
