//! pollbus: polls SaaS systems that have no change events and publishes a clean
//! change-notification stream (the `api.event.<entity>` contract) to Azure Service Bus.
//!
//! ```text
//! source ──pages──► detect ──► store (snapshots + outbox + cursor, one transaction per page)
//!                                         └──► outbox publisher ──► sink
//! ```
//! See `README.md` and the `docs/` folder of the repository for the whole picture.
//!
//! The top-level modules import each other without cycles (`tests/module_graph.rs` checks it);
//! `clock`, `contract`, `formats` and `metrics` are leaves that import nothing of the crate.

pub mod admin;
pub mod cli;
pub mod clock;
pub mod config;
pub mod contract;
pub mod daemon;
pub mod detect;
pub mod fingerprint;
pub mod formats;
pub mod http;
pub mod import;
pub mod metrics;
pub mod outbox;
pub mod poll;
pub mod record;
pub mod replay;
pub mod sink;
pub mod source;
pub mod status;
pub mod store;
pub mod telemetry;
