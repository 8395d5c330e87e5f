//! Service Bus connection strings, as the official SDKs accept them:
//! `Endpoint=sb://<host>[:port][/];SharedAccessKeyName=<name>;SharedAccessKey=<key>`
//! (or `SharedAccessSignature=<token>`), optionally `EntityPath=…` and
//! `UseDevelopmentEmulator=true` (plain TCP, port from the endpoint, default 5672).
//!
//! Pure parsing, so it lives with the config that validates it; the Service Bus sink reads it
//! from here.

use std::fmt;

/// A parsed connection string. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// Host of the namespace (`acme.servicebus.windows.net`, `localhost`).
    pub host: String,
    /// Port given in the endpoint, if any.
    pub port: Option<u16>,
    /// `SharedAccessKeyName`.
    pub key_name: Option<String>,
    /// `SharedAccessKey` (a secret).
    pub key: Option<String>,
    /// `SharedAccessSignature`: a ready-made token (a secret).
    pub signature: Option<String>,
    /// `EntityPath`, if the string is scoped to one entity.
    pub entity_path: Option<String>,
    /// `UseDevelopmentEmulator=true`.
    pub emulator: bool,
}

/// Why a connection string is unusable. Never contains the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    /// No `Endpoint`.
    #[error("connection string has no Endpoint=sb://… part")]
    NoEndpoint,
    /// The endpoint is not `sb://host[:port]`.
    #[error("Endpoint {0:?} is not sb://<host>[:port]")]
    BadEndpoint(String),
    /// Neither a key (with its name) nor a signature.
    #[error(
        "connection string needs SharedAccessKeyName and SharedAccessKey, or SharedAccessSignature"
    )]
    NoCredentials,
    /// A part without `=`.
    #[error("connection string part {0:?} is not Key=Value")]
    BadPart(String),
}

impl ConnectionString {
    /// Parses a connection string (keys are case-insensitive; values may contain `=`).
    pub fn parse(text: &str) -> Result<Self, ConnectionStringError> {
        let mut endpoint = None;
        let mut cs = ConnectionString {
            host: String::new(),
            port: None,
            key_name: None,
            key: None,
            signature: None,
            entity_path: None,
            emulator: false,
        };
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = part.split_once('=') else {
                // Name only the key-like start: the part could be a mangled secret.
                let shown: String = part.chars().take(12).collect();
                return Err(ConnectionStringError::BadPart(format!("{shown}…")));
            };
            let value = value.trim().to_string();
            match key.trim().to_ascii_lowercase().as_str() {
                "endpoint" => endpoint = Some(value),
                "sharedaccesskeyname" => cs.key_name = Some(value),
                "sharedaccesskey" => cs.key = Some(value),
                "sharedaccesssignature" => cs.signature = Some(value),
                "entitypath" => cs.entity_path = Some(value),
                "usedevelopmentemulator" => cs.emulator = value.eq_ignore_ascii_case("true"),
                _ => {} // unknown parts are ignored, as the SDKs do
            }
        }
        let endpoint = endpoint.ok_or(ConnectionStringError::NoEndpoint)?;
        let rest = endpoint
            .strip_prefix("sb://")
            .or_else(|| endpoint.strip_prefix("amqps://"))
            .or_else(|| endpoint.strip_prefix("amqp://"))
            .ok_or_else(|| ConnectionStringError::BadEndpoint(endpoint.clone()))?;
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                Some(
                    p.parse::<u16>()
                        .map_err(|_| ConnectionStringError::BadEndpoint(endpoint.clone()))?,
                ),
            ),
            None => (authority.to_string(), None),
        };
        if host.is_empty() {
            return Err(ConnectionStringError::BadEndpoint(endpoint));
        }
        cs.host = host;
        cs.port = port;
        let has_key = cs.key_name.is_some() && cs.key.is_some();
        if !has_key && cs.signature.is_none() {
            return Err(ConnectionStringError::NoCredentials);
        }
        Ok(cs)
    }

    /// `host[:port]` as given.
    pub fn endpoint_host(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionString")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("key_name", &self.key_name)
            .field("key", &self.key.as_ref().map(|_| "***"))
            .field("signature", &self.signature.as_ref().map(|_| "***"))
            .field("entity_path", &self.entity_path)
            .field("emulator", &self.emulator)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_azure_and_emulator_strings() {
        let cs = ConnectionString::parse(
            "Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=abc=def=",
        )
        .unwrap();
        assert_eq!(
            (cs.host.as_str(), cs.port, cs.emulator),
            ("acme.servicebus.windows.net", None, false)
        );
        assert_eq!(cs.key.as_deref(), Some("abc=def="));
        let cs = ConnectionString::parse(
            "Endpoint=sb://127.0.0.1:40123;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;",
        )
        .unwrap();
        assert_eq!(
            (cs.host.as_str(), cs.port, cs.emulator),
            ("127.0.0.1", Some(40123), true)
        );
        assert!(!format!("{cs:?}").contains("SAS_KEY_VALUE"));
    }

    #[test]
    fn errors_name_the_problem_not_the_key() {
        assert_eq!(
            ConnectionString::parse("SharedAccessKey=x").unwrap_err(),
            ConnectionStringError::NoEndpoint
        );
        assert_eq!(
            ConnectionString::parse("Endpoint=sb://h;SharedAccessKeyName=n").unwrap_err(),
            ConnectionStringError::NoCredentials
        );
        let e = ConnectionString::parse("Endpoint=https://h;SharedAccessSignature=s").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Endpoint \"https://h\" is not sb://<host>[:port]"
        );
        let e = ConnectionString::parse("Endpoint=sb://h;supersecretkeyvalue")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("keyvalue"), "{e}");
    }
}
