-- Snapshots move to an ordinary rowid table with a unique key index. A snapshot row holds about
-- a kilobyte of JSON; in a WITHOUT ROWID table such rows live in the primary-key B-tree itself,
-- so inserting records in (random) sys_id order splits full pages all over the file: the
-- benchmark measured 5.4 KB of file and dozens of page reads per stored record. Rows now append
-- to the table and only the small (source, resource, id) entries are inserted at random.
CREATE TABLE snapshots_rowid (
    source   TEXT NOT NULL,
    resource TEXT NOT NULL,
    id       TEXT NOT NULL,
    updated  INTEGER NOT NULL,
    fields   TEXT NOT NULL,      -- JSON object: contract field name -> value
    seen_at  INTEGER NOT NULL,   -- local time of the last write (reconciliation safety)
    mark     INTEGER             -- last reconciliation run that listed this id
);
INSERT INTO snapshots_rowid (source, resource, id, updated, fields, seen_at, mark)
    SELECT source, resource, id, updated, fields, seen_at, mark FROM snapshots;
DROP TABLE snapshots;
ALTER TABLE snapshots_rowid RENAME TO snapshots;
CREATE UNIQUE INDEX snapshots_key ON snapshots (source, resource, id);
