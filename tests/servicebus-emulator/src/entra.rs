//! Entra ID (Azure AD) tokens on `$cbs`: a put-token of type `jwt` carries an access token
//! that Service Bus validates against the authority's signing keys (JWKS) — signature,
//! audience `https://servicebus.azure.net`, issuer, tenant, expiry — and then authorizes by
//! Azure RBAC: the token's object id (`oid`) must hold a data role on the entity or the
//! namespace ("Azure Service Bus Data Sender" → Send, "… Data Receiver" → Listen, "… Data
//! Owner" → both and Manage).
//!
//! As on Service Bus, a valid token is accepted (202) whatever roles its identity holds; the
//! rights are checked when a link attaches ("Unauthorized access. 'Send' claim(s) are
//! required …") and links are detached when the token that authorized them expires. A role
//! revoked while a link is open takes effect when the token in force expires, as RBAC changes
//! do on Service Bus (they are evaluated when a token is put, not on every transfer).

use std::sync::RwLock;

use jsonwebtoken::{jwk::JwkSet, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::address;

/// The audience Service Bus accepts in Entra ID access tokens.
pub const AUDIENCE: &str = "https://servicebus.azure.net";

/// What a data role allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rights {
    /// Send to queues and topics.
    pub send: bool,
    /// Receive from queues and subscriptions.
    pub listen: bool,
    /// Manage entities (and everything else).
    pub manage: bool,
}

impl Rights {
    /// Every right (a SAS token of the namespace's root key).
    pub const ALL: Rights = Rights {
        send: true,
        listen: true,
        manage: true,
    };

    /// Whether any right is held.
    pub fn any(self) -> bool {
        self.send || self.listen || self.manage
    }

    fn union(self, other: Rights) -> Rights {
        Rights {
            send: self.send || other.send,
            listen: self.listen || other.listen,
            manage: self.manage || other.manage,
        }
    }
}

/// The Azure built-in data roles of Service Bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// "Azure Service Bus Data Sender": Send.
    DataSender,
    /// "Azure Service Bus Data Receiver": Listen.
    DataReceiver,
    /// "Azure Service Bus Data Owner": Send, Listen, Manage.
    DataOwner,
}

impl Role {
    /// The role's display name in Azure.
    pub fn name(self) -> &'static str {
        match self {
            Role::DataSender => "Azure Service Bus Data Sender",
            Role::DataReceiver => "Azure Service Bus Data Receiver",
            Role::DataOwner => "Azure Service Bus Data Owner",
        }
    }

    fn rights(self) -> Rights {
        match self {
            Role::DataSender => Rights {
                send: true,
                ..Rights::default()
            },
            Role::DataReceiver => Rights {
                listen: true,
                ..Rights::default()
            },
            Role::DataOwner => Rights::ALL,
        }
    }
}

/// Why a `jwt` put-token was refused; the text is the put-token's status description, worded
/// as Service Bus words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntraError {
    /// Not a JWT, or a header or claim that cannot be read.
    #[error("InvalidToken: the token is malformed ({0})")]
    Malformed(String),
    /// Signed with an algorithm other than RS256.
    #[error("InvalidSignature: the token must be signed with RS256")]
    Algorithm,
    /// `kid` names no key of the authority.
    #[error("InvalidSignature: the token's signing key {0:?} is not one of the authority's keys")]
    UnknownKey(String),
    /// The signature does not match.
    #[error("InvalidSignature: the token has an invalid signature")]
    BadSignature,
    /// `exp` is in the past.
    #[error("ExpiredToken: the token is expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("InvalidToken: the token is not valid yet")]
    NotYetValid,
    /// `aud` is not Service Bus.
    #[error("InvalidAudience: the token's audience is not {AUDIENCE}")]
    Audience,
    /// `iss` is not the configured authority.
    #[error("InvalidIssuer: token issuer is invalid")]
    Issuer,
    /// `tid` is another tenant.
    #[error("InvalidIssuer: the token is from tenant {0:?}, not the namespace's tenant")]
    Tenant(String),
}

/// The claims of a validated token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraClaims {
    /// The identity's object id.
    pub oid: String,
    /// Expiry (unix seconds).
    pub expires_at: u64,
}

#[derive(Deserialize)]
struct Claims {
    exp: u64,
    #[serde(default)]
    tid: String,
    #[serde(default)]
    oid: String,
}

/// The Entra ID trust of an emulated namespace: the authority's signing keys, its issuer and
/// tenant, and the role assignments on the namespace and its entities.
#[derive(Debug)]
pub struct EntraAuth {
    keys: JwkSet,
    issuer: String,
    tenant: String,
    assignments: RwLock<Vec<Assignment>>,
}

#[derive(Debug, Clone)]
struct Assignment {
    oid: String,
    role: Role,
    /// Normalized entity path; empty for the namespace.
    scope: String,
}

impl EntraAuth {
    /// Trusts tokens of `issuer` for `tenant` signed by a key of `jwks` (a JWKS document, as
    /// served at `{authority}/{tenant}/discovery/v2.0/keys`).
    pub fn new(jwks: &str, issuer: &str, tenant: &str) -> Result<Self, serde_json::Error> {
        Ok(EntraAuth {
            keys: serde_json::from_str(jwks)?,
            issuer: issuer.to_string(),
            tenant: tenant.to_string(),
            assignments: RwLock::new(Vec::new()),
        })
    }

    /// Assigns `role` to the identity `oid` on `scope` (an entity path such as a topic name,
    /// or `None` for the whole namespace).
    pub fn assign(&self, oid: &str, role: Role, scope: Option<&str>) {
        self.assignments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Assignment {
                oid: oid.to_string(),
                role,
                scope: scope.map(address::normalize).unwrap_or_default(),
            });
    }

    /// Removes every role assignment of `oid`.
    pub fn revoke(&self, oid: &str) {
        self.assignments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|a| a.oid != oid);
    }

    /// The rights `oid` holds on the entity `path` (normalized).
    pub fn rights(&self, oid: &str, path: &str) -> Rights {
        self.assignments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|a| a.oid == oid && address::covers(&a.scope, path))
            .fold(Rights::default(), |r, a| r.union(a.role.rights()))
    }

    /// Validates an access token: RS256 with a key of the authority, audience Service Bus, the
    /// configured issuer and tenant, not expired and already valid.
    pub fn validate(&self, token: &str) -> Result<EntraClaims, EntraError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| EntraError::Malformed(e.to_string()))?;
        if header.alg != Algorithm::RS256 {
            return Err(EntraError::Algorithm);
        }
        let kid = header.kid.unwrap_or_default();
        let jwk = self
            .keys
            .find(&kid)
            .ok_or_else(|| EntraError::UnknownKey(kid.clone()))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| EntraError::Malformed(e.to_string()))?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_audience(&[AUDIENCE, &format!("{AUDIENCE}/")]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature => EntraError::BadSignature,
                K::ExpiredSignature => EntraError::Expired,
                K::ImmatureSignature => EntraError::NotYetValid,
                K::InvalidAudience => EntraError::Audience,
                K::InvalidIssuer => EntraError::Issuer,
                _ => EntraError::Malformed(e.to_string()),
            }
        })?;
        if data.claims.tid != self.tenant {
            return Err(EntraError::Tenant(data.claims.tid));
        }
        if data.claims.oid.is_empty() {
            return Err(EntraError::Malformed("no oid claim".into()));
        }
        Ok(EntraClaims {
            oid: data.claims.oid,
            expires_at: data.claims.exp,
        })
    }
}
