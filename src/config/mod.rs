//! Configuration: TOML file → typed [`Config`], validated (no IO, all problems at once) and with
//! its secret references resolved.
//!
//! ```text
//! load(path) = read file → parse TOML (first syntax/type error) → validate (all problems)
//!              → resolve ${env:…}/${file:…} secrets (all failures)
//! ```

mod connection_string;
mod model;
mod secret;
mod validate;
mod vendor;

use std::fmt;
use std::path::Path;

pub use connection_string::{ConnectionString, ConnectionStringError};
pub use model::*;
pub use secret::{Secret, SecretError, SecretRef};
pub(crate) use validate::emulator_host;
pub use vendor::{problem, VendorDefaults, VendorRegistry, VendorRules};

/// One thing wrong with a configuration, at a config path such as
/// `sources[0].resources[2].fields.City`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where in the configuration (dotted path with indexes), or the file for read errors.
    pub path: String,
    /// What is wrong, naming the value.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A configuration that cannot be used; displays one problem per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Every problem found.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![Problem {
                path: path.into(),
                message: message.into(),
            }],
        }
    }
}

impl Config {
    /// Reads, parses, validates and resolves the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::one(path.display().to_string(), format!("cannot read: {e}"))
        })?;
        let mut config = Config::parse(&text, &path.display().to_string())?;
        config.resolve_secrets()?;
        Ok(config)
    }

    /// Parses and validates TOML text (no IO; secrets stay unresolved). `origin` names the text
    /// in syntax errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| toml_error(origin, text, &e))?;
        let problems = validate::validate(&config);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Resolves every secret reference, reporting every one that fails.
    pub fn resolve_secrets(&mut self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut resolve = |path: String, secret: &mut Secret| {
            if let Err(e) = secret.resolve() {
                problems.push(Problem {
                    path,
                    message: format!("{} ({})", e, secret.reference()),
                });
            }
        };
        resolve("state.url".into(), &mut self.state.url);
        if let SinkConfig::Servicebus(sb) = &mut self.sink {
            if let Some(cs) = &mut sb.connection_string {
                resolve("sink.connection_string".into(), cs);
            }
        }
        for (i, source) in self.sources.iter_mut().enumerate() {
            let path = format!("sources[{i}].auth");
            match &mut source.auth {
                AuthConfig::None => {}
                AuthConfig::Basic { password, .. } => resolve(format!("{path}.password"), password),
                AuthConfig::Bearer { token } => resolve(format!("{path}.token"), token),
                AuthConfig::Header { value, .. } => resolve(format!("{path}.value"), value),
                AuthConfig::Oauth2 {
                    client_secret,
                    password,
                    refresh_token,
                    ..
                } => {
                    resolve(format!("{path}.client_secret"), client_secret);
                    if let Some(password) = password {
                        resolve(format!("{path}.password"), password);
                    }
                    if let Some(token) = refresh_token {
                        resolve(format!("{path}.refresh_token"), token);
                    }
                }
            }
        }
        if let SinkConfig::Servicebus(sb) = &self.sink {
            if let Some(cs) = sb
                .connection_string
                .as_ref()
                .filter(|c| !c.expose().is_empty())
            {
                if let Err(e) = ConnectionString::parse(cs.expose()) {
                    problems.push(Problem {
                        path: "sink.connection_string".into(),
                        message: e.to_string(),
                    });
                }
            }
        }
        let url = self.state.url.expose();
        if problems.is_empty()
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            // Only the scheme is shown: the rest of a URL may hold a password.
            let scheme = url.split(':').next().unwrap_or_default();
            problems.push(Problem {
                path: "state.url".into(),
                message: format!(
                    "unsupported scheme {scheme:?}; use sqlite://PATH or postgres://…"
                ),
            });
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }

    /// The JSON Schema of the configuration file (`schemas/config.schema.json`).
    pub fn json_schema() -> serde_json::Value {
        let schema = schemars::generate::SchemaSettings::draft2020_12()
            .into_generator()
            .into_root_schema_for::<Config>();
        serde_json::to_value(schema).expect("schema serializes")
    }
}

/// Turns a TOML/serde error into a problem naming the key path and line.
fn toml_error(origin: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let location = e
        .span()
        .map(|span| {
            let start = span.start.min(text.len());
            let line = text[..start].matches('\n').count() + 1;
            // Name the key when the error points into a `key = value` line.
            let line_text = text.lines().nth(line - 1).unwrap_or_default();
            match line_text.split_once('=') {
                Some((key, _)) if !key.trim().starts_with('[') && !key.contains('{') => {
                    format!("{origin}:{line} ({})", key.trim())
                }
                _ => format!("{origin}:{line}"),
            }
        })
        .unwrap_or_else(|| origin.to_string());
    let message = e.message().replace('\n', " ");
    ConfigError::one(location, message.trim().to_string())
}

/// Why a command's `SOURCE/RESOURCE` (or `RESOURCE`) names no single configured resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceLookupError {
    /// No configured resource has that name.
    #[error("no resource {0:?} is configured (use SOURCE/RESOURCE as `pollbus check` lists them)")]
    Unknown(String),
    /// A resource of that name is configured in several sources.
    #[error("resource {name:?} is configured in several sources ({candidates}); name one as SOURCE/RESOURCE")]
    Ambiguous {
        /// The name given.
        name: String,
        /// The matching `source/resource` keys.
        candidates: String,
    },
}

impl Config {
    /// The source and resource `name` designates: `SOURCE/RESOURCE`, or `RESOURCE` when only
    /// one source has it (what `pollbus replay` and `pollbus resync` take).
    pub fn resource_named(
        &self,
        name: &str,
    ) -> Result<(&SourceConfig, &ResourceConfig), ResourceLookupError> {
        let found: Vec<(&SourceConfig, &ResourceConfig)> = self
            .sources
            .iter()
            .flat_map(|s| s.resources.iter().map(move |r| (s, r)))
            .filter(|(s, r)| r.name == name || format!("{}/{}", s.name, r.name) == name)
            .collect();
        match found.as_slice() {
            [] => Err(ResourceLookupError::Unknown(name.to_string())),
            [one] => Ok(*one),
            many => Err(ResourceLookupError::Ambiguous {
                name: name.to_string(),
                candidates: many
                    .iter()
                    .map(|(s, r)| format!("{}/{}", s.name, r.name))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[sources]]
name = "demo"
kind = "demo"
source_system = "CRM"
  [[sources.resources]]
  name = "customers"
  entity = "customer"
  fields = { FirstName = "first_name", City = "address.city" }
"#;

    #[test]
    fn minimal_config_takes_defaults() {
        let c = Config::parse(MINIMAL, "t.toml").unwrap();
        assert_eq!(c.sink.topic_prefix(), "api.event.");
        assert_eq!(c.state.url.expose(), "sqlite://./data/pollbus.db");
        let r = &c.sources[0].resources[0];
        assert_eq!(
            r.fields.listed().keys().collect::<Vec<_>>(),
            ["FirstName", "City"],
            "config order is kept"
        );
        assert_eq!(r.initial, InitialMode::Baseline);
        assert_eq!(
            c.sources[0].effective_jitter(),
            std::time::Duration::from_secs(6)
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_line() {
        let text = MINIMAL.replace(
            "source_system = \"CRM\"",
            "source_system = \"CRM\"\ncolour = 1",
        );
        let err = Config::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(
            err.starts_with("t.toml:6 (colour): unknown field `colour`"),
            "{err}"
        );
    }

    /// `F27439` and `F61595` share a 32-bit tag (found by search with the Python `xxhash`
    /// package), so snapshots could not tell them apart.
    #[test]
    fn two_fields_with_one_fingerprint_tag_are_refused() {
        let text = MINIMAL.replace(
            "fields = { FirstName = \"first_name\", City = \"address.city\" }",
            "fields = { F27439 = \"a\", F61595 = \"b\" }",
        );
        let err = Config::parse(&text, "t.toml").unwrap_err();
        let lines: Vec<String> = err.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            lines,
            ["sources[0].resources[0].fields.F61595: \"F61595\" and \"F27439\" have the same fingerprint tag; rename one of them"]
        );
    }

    #[test]
    fn fields_star_tracks_every_field_and_other_strings_are_refused() {
        let text = MINIMAL.replace(
            "fields = { FirstName = \"first_name\", City = \"address.city\" }",
            "fields = \"*\"\nexclude = [\"notes\"]",
        );
        let c = Config::parse(&text, "t.toml").unwrap();
        let r = &c.sources[0].resources[0];
        assert_eq!(
            (r.fields.is_all(), r.exclude.as_slice()),
            (true, &["notes".to_string()][..])
        );
        let text = MINIMAL.replace(
            "fields = { FirstName = \"first_name\", City = \"address.city\" }",
            "fields = \"all\"",
        );
        let err = Config::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(
            err.contains("invalid value: string \"all\", expected \"*\" (every field) or a table"),
            "{err}"
        );
        let text = MINIMAL.replace(
            "fields = { FirstName = \"first_name\", City = \"address.city\" }",
            "fields = { A = \"a\" }\nexclude = [\"b\"]",
        );
        let err = Config::parse(&text, "t.toml").unwrap_err();
        let lines: Vec<String> = err.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            lines,
            ["sources[0].resources[0].exclude: exclude applies only to fields = \"*\"; leave the field out of the table instead"]
        );
    }

    #[test]
    fn a_resource_is_named_as_source_slash_resource_or_alone_when_unique() {
        let mut c = Config::parse(MINIMAL, "t.toml").unwrap();
        let (s, r) = c.resource_named("customers").unwrap();
        assert_eq!((s.name.as_str(), r.name.as_str()), ("demo", "customers"));
        assert!(c.resource_named("demo/customers").is_ok());
        assert_eq!(
            c.resource_named("demo/nope").unwrap_err().to_string(),
            "no resource \"demo/nope\" is configured (use SOURCE/RESOURCE as `pollbus check` lists them)"
        );
        let mut other = c.sources[0].clone();
        other.name = "erp".into();
        c.sources.push(other);
        assert_eq!(
            c.resource_named("customers").unwrap_err().to_string(),
            "resource \"customers\" is configured in several sources (demo/customers, erp/customers); name one as SOURCE/RESOURCE"
        );
        assert!(c.resource_named("erp/customers").is_ok());
    }

    #[test]
    fn bad_duration_is_rejected() {
        let text = MINIMAL.replace(
            "source_system = \"CRM\"",
            "source_system = \"CRM\"\ninterval = \"soon\"",
        );
        let err = Config::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("t.toml:6"), "{err}");
        assert!(err.contains("soon") || err.contains("invalid"), "{err}");
    }

    #[test]
    fn every_semantic_problem_is_reported_at_once() {
        let text = r#"
[[sources]]
name = "a b"
kind = "servicenow"
source_system = ""
  [[sources.resources]]
  name = "t"
  entity = "cust omer"
  fields = { City = "" }
  [[sources.resources]]
  name = "t"
  entity = "x"
  fields = { A = "a..b" }
  deletes = "audit"
[[sources]]
name = "dup"
kind = "demo"
source_system = "X"
resources = [{ name = "c", entity = "c", fields = { A = "a" } }]
[[sources]]
name = "dup"
kind = "demo"
source_system = "X"
resources = [{ name = "c", entity = "c.", fields = { A = "a" }, deletes = "audit" }]
"#;
        let err = Config::parse(text, "t.toml").unwrap_err();
        let lines: Vec<String> = err.problems.iter().map(|p| p.to_string()).collect();
        let expect = [
            "sources[0].name: \"a b\" must be non-empty letters, digits, '-' or '_'",
            "sources[0].source_system: empty source_system",
            "sources[0].base_url: required for kind \"servicenow\"",
            "sources[0].resources[0].entity: \"cust omer\" contains ' '",
            "sources[0].resources[0].fields.City: empty vendor path",
            "sources[0].resources[1].name: duplicate resource name \"t\"",
            "sources[0].resources[1].fields.A: empty segment in vendor path \"a..b\"",
            "sources[2].name: duplicate source name \"dup\"",
            "sources[2].resources[0].entity: topic \"api.event.c.\" must start and end with a letter or digit",
            "sources[2].resources[0].deletes: \"audit\" needs a vendor delete audit",
        ];
        for e in expect {
            assert!(
                lines.iter().any(|l| l.starts_with(e)),
                "missing {e:?} in:\n{}",
                lines.join("\n")
            );
        }
        assert_eq!(lines.len(), expect.len(), "{}", lines.join("\n"));
    }

    #[test]
    fn unset_env_secret_is_reported_with_path_and_reference() {
        let text = MINIMAL.replace(
            "[[sources]]",
            "[state]\nurl = \"${env:POLLBUS_TEST_UNSET_STATE}\"\n[[sources]]",
        );
        let mut c = Config::parse(&text, "t.toml").unwrap();
        let err = c.resolve_secrets().unwrap_err().to_string();
        assert_eq!(
            err,
            "state.url: environment variable POLLBUS_TEST_UNSET_STATE is not set (${env:POLLBUS_TEST_UNSET_STATE})"
        );
    }

    #[test]
    fn state_url_scheme_is_checked_without_showing_the_rest() {
        let text = MINIMAL.replace(
            "[[sources]]",
            "[state]\nurl = \"mysql://user:pw@host/db\"\n[[sources]]",
        );
        let mut c = Config::parse(&text, "t.toml").unwrap();
        let err = c.resolve_secrets().unwrap_err().to_string();
        assert!(err.contains("\"mysql\""), "{err}");
        assert!(!err.contains("pw"), "{err}");
    }

    #[test]
    fn the_development_emulator_takes_only_a_loopback_host_and_port() {
        let with = |sink: &str| {
            let text = MINIMAL.replace("[[sources]]", &format!("[sink]\n{sink}\n[[sources]]"));
            match Config::parse(&text, "t.toml") {
                Ok(_) => Vec::new(),
                Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
            }
        };
        let ok = "kind = \"servicebus\"\nnamespace = \"127.0.0.1:5672\"\nuse_development_emulator = true";
        assert_eq!(with(ok), Vec::<String>::new());
        let ok = "kind = \"servicebus\"\nnamespace = \"localhost:40111\"\nuse_development_emulator = true\nidentity_ca_file = \"/ca.pem\"";
        assert_eq!(with(ok), Vec::<String>::new());
        for bad in [
            "acme.servicebus.windows.net:5672",
            "10.0.0.4:5672",
            "127.0.0.1",
        ] {
            let problems = with(&format!(
                "kind = \"servicebus\"\nnamespace = \"{bad}\"\nuse_development_emulator = true"
            ));
            assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
            assert!(problems[0].starts_with("sink.namespace:"), "{problems:?}");
            assert!(problems[0].contains(bad), "{problems:?}");
        }
        let problems = with("kind = \"servicebus\"\nconnection_string = \"Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=s\"\nidentity_ca_file = \"/ca.pem\"");
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("sink.identity_ca_file:")),
            "{problems:?}"
        );
    }
}
