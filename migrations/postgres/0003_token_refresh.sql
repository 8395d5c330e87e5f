-- One OAuth refresh at a time per token across replicas (rotating refresh tokens): a replica
-- claims the refresh here, re-reads the stored token, refreshes, stores the new one and
-- releases. A claim that is never released (the replica died mid-refresh) expires at `until`
-- (nanoseconds of the database clock).
CREATE TABLE token_refresh (
    name   TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until  BIGINT NOT NULL
);
