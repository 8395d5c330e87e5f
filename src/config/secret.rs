//! Secret values and the `${env:NAME}` / `${file:PATH}` references that produce them.
//!
//! A [`Secret`] is read from the configuration as the *reference* the operator wrote and is
//! resolved once at load. Its `Debug` and `Display` print `***`, so a secret cannot reach logs,
//! errors, metrics or panics by accident; [`Secret::expose`] is the one door to the value.
//! Written by hand rather than with `secrecy`: the type needs to carry the reference for
//! error messages and to print exactly `***`, and is a dozen lines.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

/// A configuration value that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    /// What the operator wrote (`${env:X}`, `${file:/p}` or a literal).
    reference: SecretRef,
    /// The value, once resolved.
    value: Option<String>,
}

/// Where a secret comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// `${env:NAME}`: an environment variable.
    Env(String),
    /// `${file:PATH}`: a file's content (one trailing newline trimmed).
    File(String),
    /// The value written directly in the configuration file.
    Literal,
}

/// Why a secret reference could not be resolved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// The environment variable is not set (or not valid unicode).
    #[error("environment variable {0} is not set")]
    EnvUnset(String),
    /// The file could not be read.
    #[error("cannot read secret file {path}: {reason}")]
    File {
        /// The file named by the reference.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The file is larger than any secret ([`MAX_SECRET_FILE_BYTES`]): probably the wrong file.
    #[error("secret file {path} is larger than the {cap} byte limit for a secret")]
    TooLarge {
        /// The file named by the reference.
        path: String,
        /// The limit.
        cap: u64,
    },
    /// The reference is empty.
    #[error("empty secret")]
    Empty,
}

/// The most a `${file:}` secret may hold: keys, tokens and certificates are far smaller; a larger
/// file is a mistake (a log, a device) and is refused before it is read into memory.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Reads a secret file, at most [`MAX_SECRET_FILE_BYTES`] of it.
fn read_capped(path: &str) -> Result<String, SecretError> {
    use std::io::Read;
    let unreadable = |e: std::io::Error| SecretError::File {
        path: path.to_string(),
        reason: e.kind().to_string(),
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    // One byte more than the cap tells a file at the cap from a larger one, without reading it
    // all (a FIFO or a device has no length to check first).
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(SecretError::TooLarge {
            path: path.to_string(),
            cap: MAX_SECRET_FILE_BYTES,
        });
    }
    String::from_utf8(bytes).map_err(|_| SecretError::File {
        path: path.to_string(),
        reason: "not UTF-8 text".into(),
    })
}

impl Secret {
    /// Parses a reference as written in the configuration.
    pub fn from_reference(text: &str) -> Self {
        let reference = if let Some(name) = strip(text, "${env:") {
            SecretRef::Env(name.to_string())
        } else if let Some(path) = strip(text, "${file:") {
            SecretRef::File(path.to_string())
        } else {
            SecretRef::Literal
        };
        let value = matches!(reference, SecretRef::Literal).then(|| text.to_string());
        Secret { reference, value }
    }

    /// A secret holding `value` directly (used by tests and importers).
    pub fn literal(value: impl Into<String>) -> Self {
        Secret {
            reference: SecretRef::Literal,
            value: Some(value.into()),
        }
    }

    /// The reference this secret was written as.
    pub fn reference(&self) -> &SecretRef {
        &self.reference
    }

    /// Reads the value from the environment or the file. Literals resolve to themselves.
    pub fn resolve(&mut self) -> Result<(), SecretError> {
        let value = match &self.reference {
            SecretRef::Env(name) => {
                std::env::var(name).map_err(|_| SecretError::EnvUnset(name.clone()))?
            }
            SecretRef::File(path) => {
                let mut text = read_capped(path)?;
                if text.ends_with('\n') {
                    text.pop();
                    if text.ends_with('\r') {
                        text.pop();
                    }
                }
                text
            }
            SecretRef::Literal => self.value.clone().unwrap_or_default(),
        };
        if value.is_empty() {
            return Err(SecretError::Empty);
        }
        self.value = Some(value);
        Ok(())
    }

    /// The secret's value; empty before [`Secret::resolve`] succeeded for a reference.
    pub fn expose(&self) -> &str {
        self.value.as_deref().unwrap_or("")
    }
}

fn strip<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.trim()
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix('}'))
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "${{env:{name}}}"),
            SecretRef::File(path) => write!(f, "${{file:{path}}}"),
            SecretRef::Literal => f.write_str("a literal value"),
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(Secret::from_reference(&text))
    }
}

impl JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A secret: `${env:NAME}` (environment variable), `${file:PATH}` (file content, one trailing newline trimmed) or, discouraged, the literal value.",
            "examples": ["${env:SN_CLIENT_SECRET}", "${file:/run/secrets/servicenow}"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::literal("hunter2");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn env_reference_resolves_and_reports_unset() {
        std::env::set_var("POLLBUS_TEST_SECRET_A", "s3cr3t");
        let mut s = Secret::from_reference("${env:POLLBUS_TEST_SECRET_A}");
        assert_eq!(s.expose(), "");
        s.resolve().unwrap();
        assert_eq!(s.expose(), "s3cr3t");
        let mut missing = Secret::from_reference("${env:POLLBUS_TEST_SECRET_UNSET_X}");
        assert_eq!(
            missing.resolve().unwrap_err().to_string(),
            "environment variable POLLBUS_TEST_SECRET_UNSET_X is not set"
        );
    }

    #[test]
    fn file_reference_trims_one_newline_and_reports_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "line\n").unwrap();
        let mut s = Secret::from_reference(&format!("${{file:{}}}", path.display()));
        s.resolve().unwrap();
        assert_eq!(s.expose(), "line");
        let mut bad = Secret::from_reference("${file:/nonexistent/pollbus}");
        let err = bad.resolve().unwrap_err().to_string();
        assert!(
            err.starts_with("cannot read secret file /nonexistent/pollbus"),
            "{err}"
        );
    }

    #[test]
    fn file_reference_larger_than_the_cap_is_refused_naming_file_and_cap() {
        let dir = tempfile::tempdir().unwrap();
        let at_cap = dir.path().join("at-cap");
        std::fs::write(&at_cap, "k".repeat(MAX_SECRET_FILE_BYTES as usize)).unwrap();
        let mut s = Secret::from_reference(&format!("${{file:{}}}", at_cap.display()));
        s.resolve().unwrap();
        assert_eq!(s.expose().len() as u64, MAX_SECRET_FILE_BYTES);
        let big = dir.path().join("big");
        std::fs::write(&big, "k".repeat(MAX_SECRET_FILE_BYTES as usize + 1)).unwrap();
        let mut s = Secret::from_reference(&format!("${{file:{}}}", big.display()));
        let err = s.resolve().unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "secret file {} is larger than the 65536 byte limit for a secret",
                big.display()
            )
        );
        assert!(!err.contains("kkkk"), "no content in the error: {err}");
    }
}
