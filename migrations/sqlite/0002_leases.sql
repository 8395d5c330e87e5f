-- Leases, replicas and the shared request budget. SQLite is one process: it holds every lease
-- itself (opening the file ends earlier leases), but the semantics match PostgreSQL's.

-- One row per resource ever leased; `token` grows with every takeover (the fencing token).
CREATE TABLE leases (
    source     TEXT NOT NULL,
    resource   TEXT NOT NULL,
    owner      TEXT,
    token      INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (source, resource)
);

-- Live replicas (heartbeats), for the fair share.
CREATE TABLE replicas (
    id         TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);

-- Requests sent per source per clock hour (max_requests_per_hour across replicas).
CREATE TABLE request_budget (
    source       TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    used         INTEGER NOT NULL,
    PRIMARY KEY (source, window_start)
);
