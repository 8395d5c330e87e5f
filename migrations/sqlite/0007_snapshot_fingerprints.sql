-- Snapshots keep fingerprints of the tracked values instead of the values (src/fingerprint.rs):
-- `fp` holds them (format 1: layout id, record fingerprint, revision, 4 bytes per field) and
-- `snapshot_layouts` each layout's field tags once. Rows written before this migration keep
-- their JSON values in `fields` with `fp` NULL; pollbus reads either, converts the old rows when
-- it opens the file (and compacts it once), and writes only `fp`.
CREATE TABLE snapshot_layouts (
    id   INTEGER PRIMARY KEY,   -- the layout's content address (u32)
    tags BLOB NOT NULL,         -- its field tags, ascending, u32 little-endian each
    names TEXT                  -- the field names in tag order (JSON array), when known
);
CREATE TABLE snapshots_fp (
    source   TEXT NOT NULL,
    resource TEXT NOT NULL,
    id       TEXT NOT NULL,
    updated  INTEGER NOT NULL,
    fp       BLOB,               -- fingerprints (NULL only in rows not yet converted)
    fields   TEXT,               -- pre-fingerprint JSON values (NULL once converted)
    seen_at  INTEGER NOT NULL,
    mark     INTEGER,
    missed   INTEGER NOT NULL DEFAULT 0
);
INSERT INTO snapshots_fp (source, resource, id, updated, fp, fields, seen_at, mark, missed)
    SELECT source, resource, id, updated, NULL, fields, seen_at, mark, missed FROM snapshots;
DROP TABLE snapshots;
ALTER TABLE snapshots_fp RENAME TO snapshots;
CREATE UNIQUE INDEX snapshots_key ON snapshots (source, resource, id);
-- Rows still to convert, so that opening a converted file finds none without scanning it.
CREATE INDEX snapshots_unconverted ON snapshots (id) WHERE fp IS NULL;
