//! Test support for pollbus, shared by the integration tests, the source conformance suite and
//! the end-to-end benchmark:
//!
//! - vendor simulators over real HTTP: [`servicenow`], [`revel`], [`concur`] and a generic REST
//!   contacts API ([`rest`]), each with fault hooks;
//! - [`harness::Harness`]: one way to poll a source into a SQLite file and a [`sink::MemorySink`];
//! - [`scripted::ScriptedSource`]: an ordered, keyset-paged vendor in memory;
//! - [`schema`]: message checks against the committed JSON Schemas;
//! - [`cli`]: running the `pollbus` binary and reading its admin endpoints;
//! - [`subscriber`]: Microsoft's Python Service Bus SDK as the subscriber;
//! - [`entra`]: a local Entra ID authority (workload identity token endpoint, JWKS) and IMDS
//!   managed identity endpoint.

pub mod cli;
pub mod concur;
pub mod entra;
pub mod harness;
pub mod rest;
pub mod revel;
pub mod schema;
pub mod scripted;
pub mod servicenow;
pub mod sink;
pub mod subscriber;

use chrono::{DateTime, Utc};

pub use harness::Harness;
pub use scripted::ScriptedSource;
pub use sink::{MemorySink, SinkMode};

/// Parses a UTC timestamp literal.
pub fn t(text: &str) -> DateTime<Utc> {
    text.parse().expect("timestamp literal")
}

/// The value of query parameter `name` in `query`, a query string or a path with one
/// (everything up to the first `?` is skipped), percent- and plus-decoded.
pub fn param(query: &str, name: &str) -> Option<String> {
    let query = query.split_once('?').map_or(query, |(_, q)| q);
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
