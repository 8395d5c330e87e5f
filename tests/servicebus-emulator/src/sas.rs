//! Shared Access Signature tokens: validation (the emulator) and signing (tests).

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};
use sha2::Sha256;

/// Why a SAS token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SasError {
    /// Not `SharedAccessSignature k=v&...` or a field is missing.
    #[error("malformed SAS token: {0}")]
    Malformed(&'static str),
    /// `skn` names no configured key.
    #[error("unknown key name {0:?}")]
    UnknownKeyName(String),
    /// The signature does not match.
    #[error("invalid signature")]
    BadSignature,
    /// `se` is in the past.
    #[error("token expired")]
    Expired,
}

/// A validated token: its audience (`sr`, decoded) and expiry (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SasClaims {
    /// The decoded resource URI the token grants access to.
    pub audience: String,
    /// Expiry in unix seconds.
    pub expires_at: u64,
}

/// The prefix of SAS tokens.
pub const SAS_PREFIX: &str = "SharedAccessSignature ";

/// Validates `token` against the key `key_name`/`key` at time `now` (unix seconds).
///
/// The signature is recomputed over `sr` exactly as it appears in the token (still URL-encoded),
/// a newline and `se`; the key is used as its raw UTF-8 bytes.
pub fn validate(token: &str, key_name: &str, key: &str, now: u64) -> Result<SasClaims, SasError> {
    let fields = token
        .strip_prefix(SAS_PREFIX)
        .ok_or(SasError::Malformed("missing SharedAccessSignature prefix"))?;
    let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
    for pair in fields.split('&') {
        let (k, v) = pair
            .split_once('=')
            .ok_or(SasError::Malformed("field without '='"))?;
        match k.trim() {
            "sr" => sr = Some(v),
            "sig" => sig = Some(v),
            "se" => se = Some(v),
            "skn" => skn = Some(v),
            _ => {}
        }
    }
    let sr = sr.ok_or(SasError::Malformed("missing sr"))?;
    let sig = sig.ok_or(SasError::Malformed("missing sig"))?;
    let se = se.ok_or(SasError::Malformed("missing se"))?;
    let skn = skn.ok_or(SasError::Malformed("missing skn"))?;
    let skn = percent_decode_str(skn).decode_utf8_lossy();
    if skn != key_name {
        return Err(SasError::UnknownKeyName(skn.into_owned()));
    }
    let expected = sign(sr, se, key);
    let given = percent_decode_str(sig).decode_utf8_lossy();
    if !constant_time_eq(expected.as_bytes(), given.as_bytes()) {
        return Err(SasError::BadSignature);
    }
    let expires_at: u64 = se
        .parse()
        .map_err(|_| SasError::Malformed("se is not a number"))?;
    if expires_at <= now {
        return Err(SasError::Expired);
    }
    Ok(SasClaims {
        audience: percent_decode_str(sr).decode_utf8_lossy().into_owned(),
        expires_at,
    })
}

fn sign(encoded_resource: &str, expiry: &str, key: &str) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for HMAC-SHA256.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(encoded_resource.as_bytes());
    mac.update(b"\n");
    mac.update(expiry.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Builds a SAS token for `resource` (e.g. `sb://127.0.0.1:5672/topic`) valid until `expires_at`.
pub fn make_token(resource: &str, key_name: &str, key: &str, expires_at: u64) -> String {
    let sr = utf8_percent_encode(resource, NON_ALPHANUMERIC).to_string();
    let se = expires_at.to_string();
    let sig = utf8_percent_encode(&sign(&sr, &se, key), NON_ALPHANUMERIC).to_string();
    let skn = utf8_percent_encode(key_name, NON_ALPHANUMERIC);
    format!("{SAS_PREFIX}sr={sr}&sig={sig}&se={se}&skn={skn}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let t = make_token("sb://localhost/topic", "Root", "KEY", 2000);
        let c = validate(&t, "Root", "KEY", 1000).unwrap();
        assert_eq!(c.audience, "sb://localhost/topic");
        assert_eq!(
            validate(&t, "Root", "OTHER", 1000),
            Err(SasError::BadSignature)
        );
        assert_eq!(validate(&t, "Root", "KEY", 3000), Err(SasError::Expired));
        assert!(matches!(
            validate(&t, "X", "KEY", 1000),
            Err(SasError::UnknownKeyName(_))
        ));
        assert!(validate("Bearer abc", "Root", "KEY", 1000).is_err());
    }

    #[test]
    fn field_order_does_not_matter() {
        let t = make_token("sb://h/q", "Root", "KEY", 2000);
        let fields: Vec<&str> = t.strip_prefix(SAS_PREFIX).unwrap().split('&').collect();
        let reordered = format!(
            "{SAS_PREFIX}{}&{}&{}&{}",
            fields[3], fields[2], fields[1], fields[0]
        );
        assert!(validate(&reordered, "Root", "KEY", 1000).is_ok());
    }
}
