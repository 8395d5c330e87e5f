-- pollbus state, PostgreSQL (several replicas). Tables live in the connection's current schema
-- (search_path). Times are BIGINT nanoseconds since the Unix epoch (UTC); lease, claim and
-- heartbeat times come from the database's clock, so replicas' clocks may disagree.

CREATE TABLE pollbus_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO pollbus_meta (key, value) VALUES ('application', 'pollbus');

-- One row per polled resource, written with the first committed page.
CREATE TABLE resources (
    source         TEXT NOT NULL,
    resource       TEXT NOT NULL,
    cursor         BIGINT,
    last_reconcile BIGINT,
    audit_cursor   BIGINT,
    baseline_done  BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (source, resource)
);

-- Tracked values of every known record (not whole records).
CREATE TABLE snapshots (
    source   TEXT NOT NULL,
    resource TEXT NOT NULL,
    id       TEXT NOT NULL,
    updated  BIGINT NOT NULL,
    fields   TEXT NOT NULL,      -- JSON object: contract field name -> value
    seen_at  BIGINT NOT NULL,    -- local time of the last write (reconciliation safety)
    mark     BIGINT,             -- last reconciliation run that listed this id
    PRIMARY KEY (source, resource, id)
);

-- Messages detected but not yet acknowledged by the sink, in publication order. A replica
-- claims rows (claimed_by/claimed_until) before it publishes them.
CREATE TABLE outbox (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic         TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    message_id    TEXT NOT NULL,
    message       TEXT NOT NULL, -- the JSON line (see schemas/message.schema.json)
    created_at    BIGINT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    claimed_by    TEXT,
    claimed_until BIGINT
);
CREATE INDEX outbox_partition_key ON outbox (partition_key, seq);

-- Messages the sink rejected for good; `pollbus state retry-dead` requeues them.
CREATE TABLE dead_letters (
    seq           BIGINT PRIMARY KEY,
    topic         TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    message_id    TEXT NOT NULL,
    message       TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    failed_at     BIGINT NOT NULL,
    reason        TEXT NOT NULL
);

-- OAuth tokens and similar per-source secrets that must survive restarts.
CREATE TABLE tokens (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- One row per resource ever leased; `token` grows with every takeover (the fencing token).
CREATE TABLE leases (
    source     TEXT NOT NULL,
    resource   TEXT NOT NULL,
    owner      TEXT,
    token      BIGINT NOT NULL DEFAULT 0,
    expires_at BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (source, resource)
);

-- Live replicas (heartbeats), for the fair share.
CREATE TABLE replicas (
    id         TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

-- Requests sent per source per clock hour (max_requests_per_hour across replicas).
CREATE TABLE request_budget (
    source       TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    used         BIGINT NOT NULL,
    PRIMARY KEY (source, window_start)
);
