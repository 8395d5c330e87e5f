//! Why the store failed.

use super::{Fence, ResourceKey};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file or database is not a pollbus state store; nothing was changed.
    #[error("{location} is not a pollbus state database ({detail}); refusing to touch it")]
    NotPollbus {
        /// The file or database (without credentials).
        location: String,
        /// What was found.
        detail: String,
    },
    /// Another process holds the SQLite state file's writer lock: SQLite state has one writer.
    #[error("state file {location} is in use by another pollbus process ({holder} holds {lock}); SQLite state has one writer: stop that process first, or use PostgreSQL (state.url = \"postgres://…\") for several replicas")]
    InUse {
        /// The state file.
        location: String,
        /// The lock file.
        lock: String,
        /// Who holds it, as far as the lock file says (`pid N on HOST`), or `a process`.
        holder: String,
    },
    /// The database could not be opened or migrated.
    #[error("cannot open state store {location}: {source}")]
    Open {
        /// The file or database (without credentials).
        location: String,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// A query failed.
    #[error("state store {operation} failed: {source}")]
    Query {
        /// What was being done.
        operation: &'static str,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// PostgreSQL refused a statement; `sqlstate` says why (e.g. `40P01` deadlock, `08006`
    /// connection failure, `53300` too many connections).
    #[error("state store {operation} failed (sqlstate {sqlstate}{}): {source}", if *.transient { ", transient" } else { "" })]
    Database {
        /// What was being done.
        operation: &'static str,
        /// PostgreSQL's error code.
        sqlstate: String,
        /// Whether retrying later may succeed (serialization, connection, resources).
        transient: bool,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// The page was not written: the replica no longer holds the resource's lease (it expired
    /// or another replica took it over).
    #[error("lease on {resource} is no longer held by replica {owner} (token {token}); page not written")]
    LeaseLost {
        /// The resource (`source/resource`).
        resource: String,
        /// The replica that tried to write.
        owner: String,
        /// The fencing token it presented.
        token: i64,
    },
    /// Nothing was written: this replica does not hold the resource's lease (another replica
    /// polls it).
    #[error("{resource} is leased by another replica; nothing written here")]
    NotLeased {
        /// The resource (`source/resource`).
        resource: String,
    },
    /// A stored value could not be decoded.
    #[error("state store holds an unreadable {what}: {detail}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// Why it is unreadable.
        detail: String,
    },
}

/// Shorthand for mapping sqlx errors.
pub(crate) fn query_err(operation: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { operation, source }
}

/// The [`StoreError::LeaseLost`] for `key` and `fence`.
pub(crate) fn lease_lost(key: &ResourceKey, fence: &Fence) -> StoreError {
    StoreError::LeaseLost {
        resource: key.to_string(),
        owner: fence.owner.clone(),
        token: fence.token,
    }
}
