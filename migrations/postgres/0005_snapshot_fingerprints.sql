-- Snapshots keep fingerprints of the tracked values instead of the values (src/fingerprint.rs):
-- `fp` holds them (format 1: layout id, record fingerprint, revision, 4 bytes per field) and
-- `snapshot_layouts` each layout's field tags once. Rows written before this migration keep
-- their JSON values in `fields` with `fp` NULL; pollbus reads either, converts the old rows when
-- it opens the database, and writes only `fp`.
CREATE TABLE snapshot_layouts (
    id   BIGINT PRIMARY KEY,    -- the layout's content address (u32)
    tags BYTEA NOT NULL,        -- its field tags, ascending, u32 little-endian each
    names TEXT                  -- the field names in tag order (JSON array), when known
);
ALTER TABLE snapshots ADD COLUMN fp BYTEA;
ALTER TABLE snapshots ALTER COLUMN fields DROP NOT NULL;
-- Rows still to convert, so that opening a converted database finds none without scanning it.
CREATE INDEX snapshots_unconverted ON snapshots (id) WHERE fp IS NULL;
