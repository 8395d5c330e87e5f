-- pollbus state, SQLite. Times are INTEGER nanoseconds since the Unix epoch (UTC).

CREATE TABLE pollbus_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO pollbus_meta (key, value) VALUES ('application', 'pollbus');

-- One row per polled resource, written with the first committed page.
CREATE TABLE resources (
    source         TEXT NOT NULL,
    resource       TEXT NOT NULL,
    cursor         INTEGER,
    last_reconcile INTEGER,
    audit_cursor   INTEGER,
    baseline_done  BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (source, resource)
);

-- Tracked values of every known record (not whole records).
CREATE TABLE snapshots (
    source   TEXT NOT NULL,
    resource TEXT NOT NULL,
    id       TEXT NOT NULL,
    updated  INTEGER NOT NULL,
    fields   TEXT NOT NULL,      -- JSON object: contract field name -> value
    seen_at  INTEGER NOT NULL,   -- local time of the last write (reconciliation safety)
    mark     INTEGER,            -- last reconciliation run that listed this id
    PRIMARY KEY (source, resource, id)
) WITHOUT ROWID;

-- Messages detected but not yet acknowledged by the sink, in publication order.
CREATE TABLE outbox (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    topic         TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    message_id    TEXT NOT NULL,
    message       TEXT NOT NULL, -- the JSON line (see schemas/message.schema.json)
    created_at    INTEGER NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT
);

-- Messages the sink rejected for good; `pollbus state retry-dead` requeues them.
CREATE TABLE dead_letters (
    seq           INTEGER PRIMARY KEY,
    topic         TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    message_id    TEXT NOT NULL,
    message       TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    failed_at     INTEGER NOT NULL,
    reason        TEXT NOT NULL
);

-- OAuth tokens and similar per-source secrets that must survive restarts.
CREATE TABLE tokens (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
