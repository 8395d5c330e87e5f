//! The SQLite state store (default): one file, WAL journal, embedded migrations.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Row, SqlitePool};

use super::snapshot_rows::{layout_row, legacy_snapshot, log_converted, Layouts, CONVERT_BATCH};
use super::*;
use crate::fingerprint;
use std::sync::Arc;

/// The SQLite store.
pub struct SqliteStore {
    pool: SqlitePool,
    /// Snapshot layouts read or written (see `snapshot_rows`).
    layouts: Arc<Layouts>,
    /// The writer lock file, held (locked) while the store lives, when opened as the writer.
    _writer: Option<std::fs::File>,
}

/// The writer lock of state file `path`: `<path>.lock`, next to it.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the writer lock of state file `path` (an exclusive `flock` on `<path>.lock`, released by
/// the kernel when the process ends, however it ends) and writes who holds it into the file.
fn take_writer_lock(path: &Path) -> Result<std::fs::File, StoreError> {
    use std::io::{Read, Seek, Write};
    let lock = lock_path(path);
    let open_err = |e: std::io::Error| StoreError::Open {
        location: lock.display().to_string(),
        source: sqlx::Error::Io(e),
    };
    if let Some(dir) = lock.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(open_err)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock)
        .map_err(open_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = (&file).take(200).read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(StoreError::InUse {
                location: path.display().to_string(),
                lock: lock.display().to_string(),
                holder: if holder.is_empty() {
                    "a process".into()
                } else {
                    holder.to_string()
                },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(open_err(e)),
    }
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let holder = match host.trim() {
        "" => format!("pid {}", std::process::id()),
        host => format!("pid {} on {host}", std::process::id()),
    };
    // Best effort: the lock is what counts, the text only names the holder in errors.
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(holder.as_bytes()));
    Ok(file)
}

/// The file a `sqlite:` URL names.
fn file_of(url: &str) -> PathBuf {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    PathBuf::from(rest.split('?').next().unwrap_or(rest))
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the database at `url` (`sqlite://PATH`).
    /// A file that is not a pollbus database is refused and left untouched.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let path = file_of(url);
        let location = path.display().to_string();
        let open_err = |source| StoreError::Open {
            location: location.clone(),
            source,
        };
        if path.exists() {
            check_is_pollbus(&path).await?;
        } else if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(sqlx::Error::Io(e)))?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(open_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| open_err(sqlx::Error::Migrate(Box::new(e))))?;
        let store = SqliteStore {
            pool,
            layouts: Arc::default(),
            _writer: None,
        };
        store.load_layouts().await?;
        store.convert_legacy_snapshots(&location).await?;
        Ok(store)
    }

    /// Opens an existing, current state file without writing to it (`poll-once --dry-run`):
    /// a read-only connection, no migration, no conversion, no checkpoint, so the file keeps
    /// every byte (SQLite may create its `-wal`/`-shm` companions to read a WAL-mode file). A
    /// file an older pollbus wrote, whose schema this one would migrate, is refused with what
    /// to run first.
    pub async fn open_read_only(url: &str) -> Result<Self, StoreError> {
        let path = file_of(url);
        let location = path.display().to_string();
        check_is_pollbus(&path).await?;
        let open_err = |source| StoreError::Open {
            location: location.clone(),
            source,
        };
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .read_only(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        let wanted = sqlx::migrate!("./migrations/sqlite")
            .iter()
            .map(|m| m.version)
            .max()
            .unwrap_or_default();
        let applied: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
            .fetch_one(&pool)
            .await
            .unwrap_or(None);
        if applied != Some(wanted) {
            return Err(StoreError::NotPollbus {
                location,
                detail: format!(
                    "its schema is version {}, this pollbus uses {wanted}; run it once without \
                     --dry-run (poll-once or run) to migrate the file, then dry-run",
                    applied.map_or("none".to_string(), |v| v.to_string())
                ),
            });
        }
        let store = SqliteStore {
            pool,
            layouts: Arc::default(),
            _writer: None,
        };
        store.load_layouts().await?;
        Ok(store)
    }

    /// Opens `url` as its only writer (the daemon): takes the file's writer lock first — a file
    /// another process holds is refused with [`StoreError::InUse`] and left untouched — then
    /// ends every lease and heartbeat a previous process left, so a restarted pollbus polls at
    /// once instead of waiting out its own predecessor's `lease_ttl` (the previous holder is
    /// gone: the kernel released its lock when it ended). Fencing tokens still grow with the
    /// takeover.
    pub async fn open_writer(url: &str) -> Result<Self, StoreError> {
        let path = file_of(url);
        let writer = if path.as_os_str().is_empty() || path.starts_with(":memory:") {
            None
        } else {
            Some(take_writer_lock(&path)?)
        };
        let mut store = Self::open(url).await?;
        store._writer = writer;
        let ended = store.end_previous_leases().await?;
        if ended > 0 {
            tracing::info!(
                state = %path.display(),
                leases = ended,
                "ended the leases of a previous pollbus process on this state file (it no longer runs); polling at once"
            );
        }
        Ok(store)
    }

    /// Releases every lease and forgets every heartbeat; returns how many leases were held.
    async fn end_previous_leases(&self) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(query_err("begin leases"))?;
        let ended =
            sqlx::query("UPDATE leases SET owner = NULL, expires_at = 0 WHERE owner IS NOT NULL")
                .execute(&mut *tx)
                .await
                .map_err(query_err("end previous leases"))?
                .rows_affected();
        sqlx::query("DELETE FROM replicas")
            .execute(&mut *tx)
            .await
            .map_err(query_err("forget previous heartbeats"))?;
        tx.commit().await.map_err(query_err("commit leases"))?;
        Ok(ended)
    }
}

/// Refuses files that are not SQLite, or SQLite databases of another application, without
/// writing to them (read-only connection, journal mode untouched).
async fn check_is_pollbus(path: &Path) -> Result<(), StoreError> {
    let location = path.display().to_string();
    let not_pollbus = |detail: String| StoreError::NotPollbus {
        location: location.clone(),
        detail,
    };
    let mut header = [0u8; 16];
    let len = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| not_pollbus(e.to_string()))?;
        f.read(&mut header)
            .map_err(|e| not_pollbus(e.to_string()))?
    };
    if len == 0 {
        return Ok(()); // an empty file is a new database
    }
    if len < 16 || &header != b"SQLite format 3\0" {
        return Err(not_pollbus("not an SQLite file".into()));
    }
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
        .map_err(|e| not_pollbus(e.to_string()))?;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&mut conn)
            .await
            .map_err(|e| not_pollbus(e.to_string()))?;
    let _ = conn.close().await;
    if tables.is_empty() || tables.iter().any(|t| t == "pollbus_meta") {
        Ok(())
    } else {
        let mut shown: Vec<&str> = tables.iter().map(String::as_str).take(5).collect();
        shown.sort();
        Err(not_pollbus(format!("it has tables {}", shown.join(", "))))
    }
}

/// Fails with [`StoreError::LeaseLost`] unless `fence` still holds `key`'s lease. A write
/// first, so the transaction holds SQLite's write lock from here on (nobody takes the lease
/// over before it commits).
async fn check_fence(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    key: &ResourceKey,
    fence: &Fence,
) -> Result<(), StoreError> {
    let held = sqlx::query(
        "UPDATE leases SET token = token WHERE source = ? AND resource = ? \
         AND owner = ? AND token = ? AND expires_at > ?",
    )
    .bind(&key.source)
    .bind(&key.resource)
    .bind(&fence.owner)
    .bind(fence.token)
    .bind(now_nanos())
    .execute(&mut **tx)
    .await
    .map_err(query_err("check lease"))?
    .rows_affected();
    if held == 0 {
        return Err(lease_lost(key, fence));
    }
    Ok(())
}

fn message_from(text: &str) -> Result<Message, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what: "outbox message",
        detail: e.to_string(),
    })
}

/// Snapshot rows per INSERT statement (6 parameters each, under SQLite's 32,766).
const SNAPSHOT_ROWS_PER_STATEMENT: usize = 5000;

/// Outbox rows per INSERT statement (5 parameters each).
const OUTBOX_ROWS_PER_STATEMENT: usize = 5000;

fn json_ids(ids: &[String]) -> String {
    serde_json::to_string(ids).expect("strings serialize")
}

fn now_nanos() -> i64 {
    to_nanos(Utc::now())
}

fn opt_time(n: Option<i64>) -> Option<DateTime<Utc>> {
    n.map(from_nanos)
}

#[async_trait]
impl PageStore for SqliteStore {
    async fn resource_state(&self, key: &ResourceKey) -> Result<Option<ResourceState>, StoreError> {
        let row = sqlx::query(
            "SELECT cursor, last_reconcile, audit_cursor, baseline_done, last_resync, resync_requested, resync_started, resync_token FROM resources WHERE source = ? AND resource = ?",
        )
        .bind(&key.source)
        .bind(&key.resource)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("read resource state"))?;
        Ok(row.map(|r| ResourceState {
            baseline_done: r.get(3),
            cursor: opt_time(r.get(0)),
            last_reconcile: opt_time(r.get(1)),
            audit_cursor: opt_time(r.get(2)),
            last_resync: opt_time(r.get(4)),
            resync_requested: opt_time(r.get(5)),
            resync_started: opt_time(r.get(6)),
            resync_token: r.get(7),
        }))
    }

    async fn snapshots(
        &self,
        key: &ResourceKey,
        ids: &[String],
    ) -> Result<HashMap<String, Snapshot>, StoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query(
            "SELECT id, updated, fp, fields FROM snapshots \
             WHERE source = ? AND resource = ? AND id IN (SELECT value FROM json_each(?))",
        )
        .bind(&key.source)
        .bind(&key.resource)
        .bind(json_ids(ids))
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("read snapshots"))?;
        self.decode_snapshots(&rows).await
    }

    async fn commit_page(&self, key: &ResourceKey, page: PageCommit) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(query_err("begin page"))?;
        if let Some(fence) = &page.fence {
            check_fence(&mut tx, key, fence).await?;
        }
        let now = to_nanos(page.at);
        let new_layouts = self.layouts.unsaved(page.snapshots.iter().map(|(_, s)| s));
        for layout in &new_layouts {
            insert_layout(&mut tx, layout).await?;
        }
        // Multi-row VALUES with bound parameters: no JSON re-encoding of the rows, one
        // statement per chunk (SQLite allows 32,766 parameters; 6 per row).
        for chunk in page.snapshots.chunks(SNAPSHOT_ROWS_PER_STATEMENT) {
            let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO snapshots (source, resource, id, updated, fp, seen_at) ",
            );
            insert.push_values(chunk, |mut row, (id, s)| {
                row.push_bind(&key.source)
                    .push_bind(&key.resource)
                    .push_bind(id)
                    .push_bind(to_nanos(s.updated))
                    .push_bind(fingerprint::encode(&s.fingerprint, s.revision))
                    .push_bind(now);
            });
            insert.push(
                " ON CONFLICT (source, resource, id) DO UPDATE SET \
                 updated = excluded.updated, fp = excluded.fp, fields = NULL, \
                 seen_at = excluded.seen_at, missed = 0",
            );
            insert
                .build()
                .execute(&mut *tx)
                .await
                .map_err(query_err("write snapshots"))?;
        }
        if !page.removed.is_empty() {
            sqlx::query(
                "DELETE FROM snapshots WHERE source = ? AND resource = ? \
                 AND id IN (SELECT value FROM json_each(?))",
            )
            .bind(&key.source)
            .bind(&key.resource)
            .bind(json_ids(&page.removed))
            .execute(&mut *tx)
            .await
            .map_err(query_err("remove snapshots"))?;
        }
        // One statement per chunk, rows in page order so outbox order is detection order.
        for chunk in page.messages.chunks(OUTBOX_ROWS_PER_STATEMENT) {
            let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO outbox (topic, partition_key, message_id, message, created_at) ",
            );
            insert.push_values(chunk, |mut row, m| {
                row.push_bind(&m.topic)
                    .push_bind(&m.session_id)
                    .push_bind(&m.message_id)
                    .push_bind(serde_json::to_string(m).expect("message serializes"))
                    .push_bind(now);
            });
            insert
                .build()
                .execute(&mut *tx)
                .await
                .map_err(query_err("write outbox"))?;
        }
        if let Some(state) = &page.state {
            sqlx::query(
                "INSERT INTO resources (source, resource, cursor, last_reconcile, audit_cursor, baseline_done, updated_at, last_resync, resync_started, resync_token) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, resource) DO UPDATE SET \
                 cursor = excluded.cursor, last_reconcile = excluded.last_reconcile, \
                 audit_cursor = excluded.audit_cursor, baseline_done = excluded.baseline_done, \
                 updated_at = excluded.updated_at, last_resync = excluded.last_resync, \
                 resync_started = excluded.resync_started, resync_token = excluded.resync_token",
            )
            .bind(&key.source)
            .bind(&key.resource)
            .bind(state.cursor.map(to_nanos))
            .bind(state.last_reconcile.map(to_nanos))
            .bind(state.audit_cursor.map(to_nanos))
            .bind(state.baseline_done)
            .bind(now)
            .bind(state.last_resync.map(to_nanos))
            .bind(state.resync_started.map(to_nanos))
            .bind(state.resync_token.as_deref())
            .execute(&mut *tx)
            .await
            .map_err(query_err("write resource state"))?;
        }
        tx.commit().await.map_err(query_err("commit page"))?;
        self.layouts.remember(new_layouts);
        Ok(())
    }

    async fn reconcile_mark(
        &self,
        key: &ResourceKey,
        run: i64,
        ids: &[String],
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(query_err("begin marks"))?;
        if let Some(fence) = fence {
            check_fence(&mut tx, key, fence).await?;
        }
        sqlx::query(
            "UPDATE snapshots SET mark = ?, missed = 0 WHERE source = ? AND resource = ? \
             AND id IN (SELECT value FROM json_each(?))",
        )
        .bind(run)
        .bind(&key.source)
        .bind(&key.resource)
        .bind(json_ids(ids))
        .execute(&mut *tx)
        .await
        .map_err(query_err("mark reconciled ids"))?;
        tx.commit().await.map_err(query_err("commit marks"))
    }

    async fn reconcile_miss(
        &self,
        key: &ResourceKey,
        run: i64,
        before: DateTime<Utc>,
        fence: Option<&Fence>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(query_err("begin misses"))?;
        if let Some(fence) = fence {
            check_fence(&mut tx, key, fence).await?;
        }
        let missed = sqlx::query(
            "UPDATE snapshots SET missed = missed + 1 WHERE source = ? AND resource = ? \
             AND (mark IS NULL OR mark <> ?) AND seen_at < ?",
        )
        .bind(&key.source)
        .bind(&key.resource)
        .bind(run)
        .bind(to_nanos(before))
        .execute(&mut *tx)
        .await
        .map_err(query_err("count absent ids"))?
        .rows_affected();
        tx.commit().await.map_err(query_err("commit misses"))?;
        Ok(missed)
    }

    async fn reconcile_absent(
        &self,
        key: &ResourceKey,
        run: i64,
        before: DateTime<Utc>,
        min_missed: u32,
    ) -> Result<Vec<(String, Snapshot)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, updated, fp, fields FROM snapshots WHERE source = ? AND resource = ? \
             AND (mark IS NULL OR mark <> ?) AND seen_at < ? AND missed >= ? ORDER BY id",
        )
        .bind(&key.source)
        .bind(&key.resource)
        .bind(run)
        .bind(to_nanos(before))
        .bind(i64::from(min_missed))
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("find absent ids"))?;
        Ok(self.decode_snapshots(&rows).await?.into_iter().collect())
    }

    async fn snapshot_count(&self, key: &ResourceKey) -> Result<u64, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM snapshots WHERE source = ? AND resource = ?")
                .bind(&key.source)
                .bind(&key.resource)
                .fetch_one(&self.pool)
                .await
                .map_err(query_err("count snapshots"))?;
        Ok(n as u64)
    }

    async fn request_resync(&self, key: &ResourceKey, at: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO resources (source, resource, updated_at, resync_requested) VALUES (?, ?, ?, ?) \
             ON CONFLICT (source, resource) DO UPDATE SET resync_requested = excluded.resync_requested",
        )
        .bind(&key.source)
        .bind(&key.resource)
        .bind(to_nanos(at))
        .bind(to_nanos(at))
        .execute(&self.pool)
        .await
        .map_err(query_err("request a resync"))?;
        Ok(())
    }

    async fn summaries(&self) -> Result<Vec<ResourceSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.source, r.resource, r.cursor, r.last_reconcile, r.audit_cursor, r.baseline_done, \
                    r.last_resync, r.resync_requested, r.resync_started, r.resync_token, \
                    (SELECT count(*) FROM snapshots s WHERE s.source = r.source AND s.resource = r.resource) \
             FROM resources r ORDER BY r.source, r.resource",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("summarize resources"))?;
        Ok(rows
            .iter()
            .map(|r| ResourceSummary {
                key: ResourceKey::new(r.get::<String, _>(0), r.get::<String, _>(1)),
                state: ResourceState {
                    cursor: opt_time(r.get(2)),
                    last_reconcile: opt_time(r.get(3)),
                    audit_cursor: opt_time(r.get(4)),
                    baseline_done: r.get(5),
                    last_resync: opt_time(r.get(6)),
                    resync_requested: opt_time(r.get(7)),
                    resync_started: opt_time(r.get(8)),
                    resync_token: r.get(9),
                },
                snapshots: r.get::<i64, _>(10) as u64,
            })
            .collect())
    }
}

#[async_trait]
impl OutboxGauge for SqliteStore {
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM outbox), (SELECT min(created_at) FROM outbox), \
                    (SELECT count(*) FROM dead_letters)",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(query_err("outbox stats"))?;
        Ok(OutboxStats {
            depth: row.get::<i64, _>(0) as u64,
            oldest: opt_time(row.get(1)),
            dead: row.get::<i64, _>(2) as u64,
        })
    }

    async fn outbox_depth_in(&self, topic: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE topic = ?")
            .bind(topic)
            .fetch_one(&self.pool)
            .await
            .map_err(query_err("count outbox rows"))?;
        Ok(n as u64)
    }
}

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn outbox_next(&self, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query("SELECT seq, message, attempts FROM outbox ORDER BY seq LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("read outbox"))?;
        rows.iter().map(outbox_row).collect()
    }

    async fn outbox_topics(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar("SELECT topic FROM outbox GROUP BY topic ORDER BY min(seq)")
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("list outbox topics"))
    }

    async fn outbox_next_in(&self, topic: &str, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, message, attempts FROM outbox WHERE topic = ? ORDER BY seq LIMIT ?",
        )
        .bind(topic)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("read outbox"))?;
        rows.iter().map(outbox_row).collect()
    }

    async fn outbox_ack(&self, seqs: &[i64]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?))")
            .bind(serde_json::to_string(seqs).expect("ints serialize"))
            .execute(&self.pool)
            .await
            .map_err(query_err("acknowledge outbox rows"))?;
        Ok(())
    }

    async fn outbox_failed(&self, seqs: &[i64], error: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ? \
             WHERE seq IN (SELECT value FROM json_each(?))",
        )
        .bind(error)
        .bind(serde_json::to_string(seqs).expect("ints serialize"))
        .execute(&self.pool)
        .await
        .map_err(query_err("record outbox failure"))?;
        Ok(())
    }

    async fn outbox_dead(&self, seq: i64, reason: &str) -> Result<(), StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_err("begin dead letter"))?;
        sqlx::query(
            "INSERT INTO dead_letters (seq, topic, partition_key, message_id, message, created_at, failed_at, reason) \
             SELECT seq, topic, partition_key, message_id, message, created_at, ?, ? FROM outbox WHERE seq = ?",
        )
        .bind(now_nanos())
        .bind(reason)
        .bind(seq)
        .execute(&mut *tx)
        .await
        .map_err(query_err("write dead letter"))?;
        sqlx::query("DELETE FROM outbox WHERE seq = ?")
            .bind(seq)
            .execute(&mut *tx)
            .await
            .map_err(query_err("remove dead outbox row"))?;
        tx.commit().await.map_err(query_err("commit dead letter"))
    }
}

#[async_trait]
impl DeadLetterStore for SqliteStore {
    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, message, reason, failed_at FROM dead_letters ORDER BY seq LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("read dead letters"))?;
        rows.iter()
            .map(|r| {
                Ok(DeadRow {
                    seq: r.get(0),
                    message: message_from(r.get::<&str, _>(1))?,
                    reason: r.get(2),
                    failed_at: from_nanos(r.get(3)),
                })
            })
            .collect()
    }

    async fn retry_dead(&self, seqs: Option<&[i64]>) -> Result<u64, StoreError> {
        let filter = seqs.map(|s| serde_json::to_string(s).expect("ints serialize"));
        let mut tx = self.pool.begin().await.map_err(query_err("begin retry"))?;
        let moved = sqlx::query(
            // Back in its original place (its seq): before later changes of its partition key
            // that still wait, so a requeued message never overtakes them.
            "INSERT INTO outbox (seq, topic, partition_key, message_id, message, created_at) \
             SELECT seq, topic, partition_key, message_id, message, ? FROM dead_letters \
             WHERE ?2 IS NULL OR seq IN (SELECT value FROM json_each(?2)) ORDER BY seq",
        )
        .bind(now_nanos())
        .bind(&filter)
        .execute(&mut *tx)
        .await
        .map_err(query_err("requeue dead letters"))?
        .rows_affected();
        sqlx::query(
            "DELETE FROM dead_letters WHERE ?1 IS NULL OR seq IN (SELECT value FROM json_each(?1))",
        )
        .bind(&filter)
        .execute(&mut *tx)
        .await
        .map_err(query_err("remove requeued dead letters"))?;
        tx.commit().await.map_err(query_err("commit retry"))?;
        Ok(moved)
    }
}

#[async_trait]
impl LeaseStore for SqliteStore {
    async fn acquire_leases(
        &self,
        replica: &str,
        keys: &[ResourceKey],
        ttl: Duration,
    ) -> Result<LeaseGrant, StoreError> {
        let mut tx = self.pool.begin().await.map_err(query_err("begin leases"))?;
        let now = now_nanos();
        let until = now.saturating_add(ttl.as_nanos().min(i64::MAX as u128) as i64);
        sqlx::query(
            "INSERT INTO replicas (id, expires_at) VALUES (?, ?) \
             ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at",
        )
        .bind(replica)
        .bind(until)
        .execute(&mut *tx)
        .await
        .map_err(query_err("write heartbeat"))?;
        let live: i64 = sqlx::query_scalar("SELECT count(*) FROM replicas WHERE expires_at > ?")
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(query_err("count replicas"))?;
        let key_json = keys_json(keys);
        sqlx::query(
            "INSERT INTO leases (source, resource) \
             SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?) \
             WHERE true ON CONFLICT (source, resource) DO NOTHING",
        )
        .bind(&key_json)
        .execute(&mut *tx)
        .await
        .map_err(query_err("create leases"))?;
        let rows = sqlx::query(
            "SELECT source, resource, owner, token, expires_at FROM leases \
             WHERE (source, resource) IN \
               (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))",
        )
        .bind(&key_json)
        .fetch_all(&mut *tx)
        .await
        .map_err(query_err("read leases"))?;
        let rows: Vec<LeaseRow> = rows
            .iter()
            .map(|r| LeaseRow {
                key: ResourceKey::new(r.get::<String, _>(0), r.get::<String, _>(1)),
                owner: r.get(2),
                token: r.get(3),
                expires_at: r.get(4),
            })
            .collect();
        let share = fair_share(keys.len(), live as usize);
        let plan = plan_leases(&rows, replica, share, now);
        for (keys, sql) in [
            (
                &plan.renew,
                "UPDATE leases SET expires_at = ?1 WHERE owner = ?2 AND (source, resource) IN \
                 (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?3))",
            ),
            (
                &plan.release,
                "UPDATE leases SET owner = NULL, expires_at = 0 WHERE owner = ?2 AND ?1 IS NOT NULL \
                 AND (source, resource) IN \
                 (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?3))",
            ),
            (
                &plan.take,
                "UPDATE leases SET owner = ?2, token = token + 1, expires_at = ?1 WHERE (source, resource) IN \
                 (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?3))",
            ),
        ] {
            if keys.is_empty() {
                continue;
            }
            sqlx::query(sql)
                .bind(until)
                .bind(replica)
                .bind(keys_json(keys))
                .execute(&mut *tx)
                .await
                .map_err(query_err("write leases"))?;
        }
        let held = self.held(&mut tx, replica, keys, now).await?;
        tx.commit().await.map_err(query_err("commit leases"))?;
        Ok(LeaseGrant {
            held,
            live_replicas: live as usize,
            share,
            next_expiry: plan
                .next_expiry
                .map(|n| Duration::from_nanos(n.max(0) as u64)),
        })
    }

    async fn release_leases(
        &self,
        replica: &str,
        keys: Option<&[ResourceKey]>,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_err("begin release"))?;
        sqlx::query(
            "UPDATE leases SET owner = NULL, expires_at = 0 WHERE owner = ?1 AND (?2 IS NULL OR \
             (source, resource) IN \
             (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?2)))",
        )
        .bind(replica)
        .bind(keys.map(keys_json))
        .execute(&mut *tx)
        .await
        .map_err(query_err("release leases"))?;
        if keys.is_none() {
            sqlx::query("DELETE FROM replicas WHERE id = ?")
                .bind(replica)
                .execute(&mut *tx)
                .await
                .map_err(query_err("withdraw replica"))?;
        }
        tx.commit().await.map_err(query_err("commit release"))
    }

    async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        let rows = sqlx::query(
            "SELECT source, resource, owner, token, expires_at FROM leases \
             WHERE owner IS NOT NULL ORDER BY source, resource",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("read leases"))?;
        Ok(rows.iter().map(lease_from).collect())
    }

    async fn live_replicas(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar("SELECT id FROM replicas WHERE expires_at > ? ORDER BY id")
            .bind(now_nanos())
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("read replicas"))
    }
}

#[async_trait]
impl TokenStore for SqliteStore {
    async fn token(&self, name: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT value FROM tokens WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("read token"))
    }

    async fn put_token(&self, name: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tokens (name, value, updated_at) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(value)
        .bind(now_nanos())
        .execute(&self.pool)
        .await
        .map_err(query_err("write token"))?;
        Ok(())
    }

    async fn claim_token_refresh(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = now_nanos();
        let until = now.saturating_add(ttl.as_nanos().min(i64::MAX as u128) as i64);
        let claimed = sqlx::query(
            "INSERT INTO token_refresh (name, holder, until) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
             WHERE token_refresh.until < ?4 OR token_refresh.holder = excluded.holder",
        )
        .bind(name)
        .bind(holder)
        .bind(until)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(query_err("claim a token refresh"))?
        .rows_affected();
        Ok(claimed == 1)
    }

    async fn release_token_refresh(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM token_refresh WHERE name = ? AND holder = ?")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await
            .map_err(query_err("release a token refresh"))?;
        Ok(())
    }
}

#[async_trait]
impl BudgetStore for SqliteStore {
    async fn take_request_budget(
        &self,
        source: &str,
        n: u32,
        per_hour: u32,
    ) -> Result<Option<Duration>, StoreError> {
        let now = now_nanos();
        let window = budget_window(now);
        let mut tx = self.pool.begin().await.map_err(query_err("begin budget"))?;
        sqlx::query("DELETE FROM request_budget WHERE source = ? AND window_start < ?")
            .bind(source)
            .bind(window)
            .execute(&mut *tx)
            .await
            .map_err(query_err("trim request budget"))?;
        // Granted when it fits, or when the window is untouched (a request larger than the
        // whole budget then goes alone instead of never).
        let granted = sqlx::query(
            "INSERT INTO request_budget (source, window_start, used) VALUES (?1, ?2, ?3) \
             ON CONFLICT (source, window_start) DO UPDATE SET used = used + excluded.used \
             WHERE used + excluded.used <= ?4",
        )
        .bind(source)
        .bind(window)
        .bind(i64::from(n))
        .bind(i64::from(per_hour))
        .execute(&mut *tx)
        .await
        .map_err(query_err("take request budget"))?
        .rows_affected();
        tx.commit()
            .await
            .map_err(query_err("commit request budget"))?;
        Ok((granted == 0).then(|| budget_wait(window, now)))
    }
}

impl SqliteStore {
    async fn held(
        &self,
        tx: &mut sqlx::SqliteConnection,
        replica: &str,
        keys: &[ResourceKey],
        now: i64,
    ) -> Result<Vec<Lease>, StoreError> {
        let rows = sqlx::query(
            "SELECT source, resource, owner, token, expires_at FROM leases \
             WHERE owner = ? AND expires_at > ? AND (source, resource) IN \
               (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?)) \
             ORDER BY source, resource",
        )
        .bind(replica)
        .bind(now)
        .bind(keys_json(keys))
        .fetch_all(&mut *tx)
        .await
        .map_err(query_err("read held leases"))?;
        Ok(rows.iter().map(lease_from).collect())
    }
}

fn lease_from(r: &sqlx::sqlite::SqliteRow) -> Lease {
    Lease {
        key: ResourceKey::new(r.get::<String, _>(0), r.get::<String, _>(1)),
        fence: Fence {
            owner: r.get::<Option<String>, _>(2).unwrap_or_default(),
            token: r.get(3),
        },
        expires_at: from_nanos(r.get(4)),
    }
}

fn keys_json(keys: &[ResourceKey]) -> String {
    let pairs: Vec<[&str; 2]> = keys
        .iter()
        .map(|k| [k.source.as_str(), k.resource.as_str()])
        .collect();
    serde_json::to_string(&pairs).expect("strings serialize")
}

/// An outbox row as read by the publisher (`seq, message, attempts`).
fn outbox_row(r: &sqlx::sqlite::SqliteRow) -> Result<OutboxRow, StoreError> {
    Ok(OutboxRow {
        seq: r.get(0),
        message: message_from(r.get::<&str, _>(1))?,
        attempts: r.get::<i64, _>(2) as u32,
    })
}

/// Writes `layout` unless it is there (layouts are content-addressed, so a present one is the
/// same).
async fn insert_layout(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    layout: &fingerprint::Layout,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO snapshot_layouts (id, tags, names) VALUES (?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET names = coalesce(snapshot_layouts.names, excluded.names)",
    )
    .bind(i64::from(layout.id()))
    .bind(layout.to_bytes())
    .bind(layout.names_json())
    .execute(&mut **tx)
    .await
    .map_err(query_err("write snapshot layout"))?;
    Ok(())
}

/// Snapshot rows: layouts and the conversion of rows written before fingerprints.
impl SqliteStore {
    /// Reads every stored layout into the cache (a handful: one per field list ever used).
    async fn load_layouts(&self) -> Result<(), StoreError> {
        let rows = sqlx::query("SELECT id, tags, names FROM snapshot_layouts")
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("read snapshot layouts"))?;
        let layouts = rows
            .iter()
            .map(|r| layout_row(r.get(0), r.get(1), r.get(2)))
            .collect::<Result<Vec<_>, _>>()?;
        self.layouts.remember(layouts);
        Ok(())
    }

    /// Rows of `(id, updated, fp, fields)` as snapshots by id.
    async fn decode_snapshots(
        &self,
        rows: &[sqlx::sqlite::SqliteRow],
    ) -> Result<HashMap<String, Snapshot>, StoreError> {
        if !self
            .layouts
            .missing(rows.iter().map(|r| r.get::<Option<&[u8]>, _>(2)))
            .is_empty()
        {
            self.load_layouts().await?;
        }
        rows.iter()
            .map(|r| {
                let id: String = r.get(0);
                let snapshot = self.layouts.decode(
                    &id,
                    from_nanos(r.get(1)),
                    r.get::<Option<&[u8]>, _>(2),
                    r.get::<Option<&str>, _>(3),
                )?;
                Ok((id, snapshot))
            })
            .collect()
    }

    /// Converts snapshots an earlier pollbus stored as JSON values into fingerprints, a batch
    /// per transaction, then compacts the file once (the values took ~5× the space). Nothing is
    /// published: the fingerprints are those the same values read from the vendor give.
    async fn convert_legacy_snapshots(&self, location: &str) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let mut converted = 0u64;
        loop {
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(query_err("begin conversion"))?;
            let rows = sqlx::query(
                "SELECT rowid, id, updated, fields FROM snapshots WHERE fp IS NULL LIMIT ?",
            )
            .bind(CONVERT_BATCH)
            .fetch_all(&mut *tx)
            .await
            .map_err(query_err("read old snapshots"))?;
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                let id: String = r.get(1);
                let text: Option<&str> = r.get(3);
                let snapshot = legacy_snapshot(&id, from_nanos(r.get(2)), text)?;
                let layout = &snapshot.fingerprint.layout;
                if self.layouts.get(layout.id()).is_none() {
                    insert_layout(&mut tx, layout).await?;
                    self.layouts.remember([layout.clone()]);
                }
                sqlx::query("UPDATE snapshots SET fp = ?, fields = NULL WHERE rowid = ?")
                    .bind(fingerprint::encode(
                        &snapshot.fingerprint,
                        snapshot.revision,
                    ))
                    .bind(r.get::<i64, _>(0))
                    .execute(&mut *tx)
                    .await
                    .map_err(query_err("convert snapshot"))?;
            }
            tx.commit().await.map_err(query_err("commit conversion"))?;
            converted += rows.len() as u64;
        }
        if converted > 0 {
            sqlx::query("VACUUM")
                .execute(&self.pool)
                .await
                .map_err(query_err("compact after conversion"))?;
        }
        log_converted(location, converted, started.elapsed());
        Ok(())
    }
}
