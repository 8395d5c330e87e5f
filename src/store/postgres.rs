//! The PostgreSQL state store: several replicas share one database.
//!
//! - **Migrations** are embedded and run under a session-level `pg_try_advisory_lock`, retried
//!   politely, so replicas starting together migrate once; a database whose schema holds
//!   tables of another application is refused untouched.
//! - **Leases**: [`Store::acquire_leases`] is serialized with `pg_advisory_xact_lock`, so the
//!   fair share is computed on a consistent view. A fenced [`Store::commit_page`] locks its
//!   lease row `FOR SHARE` and checks owner, token and expiry first, so a takeover waits for an
//!   in-flight page and a replica that lost its lease writes nothing.
//! - **Outbox claims**: [`Store::outbox_next`] claims rows for this replica (`claimed_by`,
//!   `claimed_until`) with `FOR UPDATE SKIP LOCKED`, under `pg_advisory_xact_lock`. A row is
//!   claimed only together with every earlier row of its partition key that still exists, so
//!   no replica can publish a later message of a key while an earlier one waits elsewhere. A
//!   crashed claimer's rows become claimable when `claimed_until` passes.
//!
//! Times of leases, claims, heartbeats and budgets come from the database's clock.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, PgPool, Row};

use super::snapshot_rows::{layout_row, legacy_snapshot, log_converted, Layouts, CONVERT_BATCH};
use super::*;
use crate::fingerprint::{self, Layout};
use std::sync::Arc;

/// The database's time in nanoseconds since the epoch (microsecond resolution).
const NOW_NS: &str = "((extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000)";

/// Advisory lock keys ("pollbus" in ASCII, plus a role number).
const MIGRATE_LOCK: i64 = 0x706f_6c6c_6275_7300;
const LEASE_LOCK: i64 = MIGRATE_LOCK + 1;
const CLAIM_LOCK: i64 = MIGRATE_LOCK + 2;

/// Longest wait for another replica's migration.
const MIGRATE_WAIT: Duration = Duration::from_secs(120);

/// Tables of pollbus (and sqlx's migration table), the only ones allowed in its schema.
const OWN_TABLES: &[&str] = &[
    "_sqlx_migrations",
    "pollbus_meta",
    "resources",
    "snapshots",
    "outbox",
    "dead_letters",
    "tokens",
    "leases",
    "replicas",
    "request_budget",
    "token_refresh",
];

/// The PostgreSQL store.
pub struct PgStore {
    pool: PgPool,
    claimer: String,
    claim_timeout: Duration,
    statements: AtomicU64,
    /// Snapshot layouts read or written (see `snapshot_rows`).
    layouts: Arc<Layouts>,
}

/// `host:port/database` of a URL: never the user or password.
pub fn location_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "postgres://{}:{}{}",
            u.host_str().unwrap_or("localhost"),
            u.port().unwrap_or(5432),
            u.path()
        ),
        Err(_) => "postgres://(unparsable url)".to_string(),
    }
}

/// Maps an sqlx error, keeping PostgreSQL's SQLSTATE for the caller and the logs.
fn pg_err(operation: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| {
        let code = source
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        match code {
            Some(sqlstate) => StoreError::Database {
                operation,
                transient: is_transient(&sqlstate),
                sqlstate,
                source,
            },
            None => StoreError::Query { operation, source },
        }
    }
}

/// Fails with [`StoreError::LeaseLost`] unless `fence` still holds `key`'s lease; the lease row
/// stays share-locked until the transaction ends, so no takeover commits in between.
async fn check_fence(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    key: &ResourceKey,
    fence: &Fence,
) -> Result<(), StoreError> {
    let held = sqlx::query(&format!(
        "SELECT 1 FROM leases WHERE source = $1 AND resource = $2 AND owner = $3 \
         AND token = $4 AND expires_at > {NOW_NS} FOR SHARE"
    ))
    .bind(&key.source)
    .bind(&key.resource)
    .bind(&fence.owner)
    .bind(fence.token)
    .fetch_optional(&mut **tx)
    .await
    .map_err(pg_err("check lease"))?;
    if held.is_none() {
        return Err(lease_lost(key, fence));
    }
    Ok(())
}

/// SQLSTATEs worth retrying: serialization failures and deadlocks (class 40), connection
/// problems (08), insufficient resources (53), operator intervention (57P), a lock not
/// obtained within `lock_timeout` (55P03) and a statement cancelled by `statement_timeout`
/// (57014, in 57).
fn is_transient(sqlstate: &str) -> bool {
    ["40", "08", "53", "57", "55P03"]
        .iter()
        .any(|p| sqlstate.starts_with(p))
}

fn nanos_of(d: Duration) -> i64 {
    d.as_nanos().min(i64::MAX as u128) as i64
}

fn message_from(text: &str) -> Result<Message, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what: "outbox message",
        detail: e.to_string(),
    })
}

fn key_arrays(keys: &[ResourceKey]) -> (Vec<String>, Vec<String>) {
    keys.iter()
        .map(|k| (k.source.clone(), k.resource.clone()))
        .unzip()
}

fn lease_from(r: &PgRow) -> Lease {
    Lease {
        key: ResourceKey::new(r.get::<String, _>(0), r.get::<String, _>(1)),
        fence: Fence {
            owner: r.get::<Option<String>, _>(2).unwrap_or_default(),
            token: r.get(3),
        },
        expires_at: from_nanos(r.get(4)),
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://…`), refuses a database whose schema belongs to another
    /// application, and migrates under an advisory lock.
    pub async fn open(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let location = location_of(url);
        let open_err = |source| StoreError::Open {
            location: location.clone(),
            source,
        };
        let connect = PgConnectOptions::from_str(url).map_err(open_err)?;
        // One direct connection for the migration (fails fast when nothing answers), then the
        // pool, which connects on demand.
        let mut conn = PgConnection::connect_with(&connect)
            .await
            .map_err(open_err)?;
        lock_for_migration(&mut conn, &location).await?;
        let migrated = async {
            check_is_pollbus(&mut conn, &location).await?;
            let mut migrator = sqlx::migrate!("./migrations/postgres");
            migrator.set_locking(false); // the advisory lock above is held
            migrator
                .run_direct(&mut conn)
                .await
                .map_err(|e| open_err(sqlx::Error::Migrate(Box::new(e))))
        }
        .await;
        // Closing the session releases the advisory lock even if unlocking fails.
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATE_LOCK)
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
        migrated?;
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .acquire_timeout(Duration::from_secs(10))
            // The migration above ran without the timeouts (a large migration may take long).
            .connect_lazy_with(session_options(connect, options));
        let store = PgStore {
            pool,
            claimer: options.replica_id.clone(),
            claim_timeout: options.claim_timeout,
            statements: AtomicU64::new(0),
            layouts: Arc::default(),
        };
        store.load_layouts().await?;
        store.convert_legacy_snapshots(&location).await?;
        Ok(store)
    }

    /// SQL statements this store has sent (for measurements).
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    fn count(&self, n: u64) {
        self.statements.fetch_add(n, Ordering::Relaxed);
    }

    /// The database's clock, in nanoseconds.
    async fn db_now(&self, conn: &mut PgConnection) -> Result<i64, StoreError> {
        self.count(1);
        sqlx::query_scalar(&format!("SELECT {NOW_NS}"))
            .fetch_one(conn)
            .await
            .map_err(pg_err("read the database clock"))
    }
}

/// This replica's session settings: `application_name` = the replica id (operators tell
/// replicas apart in `pg_stat_activity`), and the timeouts that bound how long a frozen or
/// partitioned replica can hold a lock or an open transaction ([`StoreOptions::session_timeout`]):
/// `idle_in_transaction_session_timeout` at the session timeout, `lock_timeout` at twice it (a
/// replica waiting for a lock outlasts a frozen holder, whose session the server ends first),
/// `statement_timeout` at three times it. They rely on nothing but the server honouring these
/// standard settings (PostgreSQL ≥ 9.6; a pooler in transaction mode such as PgBouncer must pass
/// startup options through, or set them per database).
fn session_options(connect: PgConnectOptions, options: &StoreOptions) -> PgConnectOptions {
    let ms = |d: Duration| d.as_millis().clamp(1, i32::MAX as u128).to_string();
    let name: String = options
        .replica_id
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(63)
        .collect();
    connect.application_name(&name).options([
        (
            "idle_in_transaction_session_timeout",
            ms(options.session_timeout),
        ),
        ("lock_timeout", ms(options.session_timeout * 2)),
        ("statement_timeout", ms(options.session_timeout * 3)),
    ])
}

/// Waits between attempts to take the migration lock: 50 ms, 100 ms, 200 ms … up to 2 s,
/// without jitter.
fn migration_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(2))
        .without_max_times()
        .build()
}

/// Takes the migration lock, waiting (politely, bounded) while another replica migrates.
async fn lock_for_migration(conn: &mut PgConnection, location: &str) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let mut waits = migration_backoff();
    loop {
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(MIGRATE_LOCK)
            .fetch_one(&mut *conn)
            .await
            .map_err(pg_err("take the migration lock"))?;
        if got {
            return Ok(());
        }
        if started.elapsed() >= MIGRATE_WAIT {
            return Err(StoreError::Open {
                location: location.to_string(),
                source: sqlx::Error::Protocol(format!(
                    "another replica held the migration lock for more than {}s",
                    MIGRATE_WAIT.as_secs()
                )),
            });
        }
        tracing::info!(
            location,
            "another replica is migrating the state store; waiting"
        );
        tokio::time::sleep(waits.next().unwrap_or(Duration::from_secs(2))).await;
    }
}

/// Refuses a schema that holds tables of another application (nothing is changed).
async fn check_is_pollbus(conn: &mut PgConnection, location: &str) -> Result<(), StoreError> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() ORDER BY table_name",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(pg_err("list tables"))?;
    if tables.is_empty() || tables.iter().any(|t| t == "pollbus_meta") {
        return Ok(());
    }
    let foreign: Vec<&str> = tables
        .iter()
        .map(String::as_str)
        .filter(|t| !OWN_TABLES.contains(t))
        .take(5)
        .collect();
    if foreign.is_empty() {
        return Ok(()); // an interrupted first migration
    }
    Err(StoreError::NotPollbus {
        location: location.to_string(),
        detail: format!("its schema has tables {}", foreign.join(", ")),
    })
}

impl PgStore {
    /// Claims the oldest `limit` rows (of `topic`, when given) for this replica: a row only
    /// with every earlier row of its partition key.
    async fn claim(&self, topic: Option<&str>, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(pg_err("begin claim"))?;
        self.count(4);
        let now: i64 = sqlx::query_scalar(&format!(
            "SELECT {NOW_NS} FROM (SELECT pg_advisory_xact_lock($1)) AS serialized"
        ))
        .bind(CLAIM_LOCK)
        .fetch_one(&mut *tx)
        .await
        .map_err(pg_err("serialize outbox claims"))?;
        // Candidates: claimable rows (unclaimed, expired, or already ours) whose key has no
        // earlier row claimed by another live claimer. Claimed: the candidates all of whose
        // earlier same-key rows are candidates too (a row skipped as locked holds back the
        // rest of its key).
        let rows = sqlx::query(
            "WITH cand AS ( \
               SELECT o.seq, o.partition_key FROM outbox o \
               WHERE (o.claimed_until IS NULL OR o.claimed_until <= $2 OR o.claimed_by = $1) \
                 AND NOT EXISTS (SELECT 1 FROM outbox b WHERE b.partition_key = o.partition_key \
                   AND b.seq < o.seq AND b.claimed_by <> $1 AND b.claimed_until > $2) \
                 AND ($5::text IS NULL OR o.topic = $5) \
               ORDER BY o.seq LIMIT $3 \
               FOR UPDATE OF o SKIP LOCKED \
             ), ok AS ( \
               SELECT c.seq FROM cand c WHERE NOT EXISTS ( \
                 SELECT 1 FROM outbox b WHERE b.partition_key = c.partition_key AND b.seq < c.seq \
                   AND b.seq NOT IN (SELECT seq FROM cand)) \
             ) \
             UPDATE outbox u SET claimed_by = $1, claimed_until = $2 + $4 \
             FROM ok WHERE u.seq = ok.seq \
             RETURNING u.seq, u.message, u.attempts",
        )
        .bind(&self.claimer)
        .bind(now)
        .bind(i64::from(limit))
        .bind(nanos_of(self.claim_timeout))
        .bind(topic)
        .fetch_all(&mut *tx)
        .await
        .map_err(pg_err("claim outbox rows"))?;
        tx.commit().await.map_err(pg_err("commit claim"))?;
        let mut out = rows
            .iter()
            .map(|r| {
                Ok(OutboxRow {
                    seq: r.get(0),
                    message: message_from(r.get::<&str, _>(1))?,
                    attempts: r.get::<i32, _>(2).max(0) as u32,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        out.sort_by_key(|r| r.seq);
        Ok(out)
    }
}

#[async_trait]
impl PageStore for PgStore {
    async fn resource_state(&self, key: &ResourceKey) -> Result<Option<ResourceState>, StoreError> {
        self.count(1);
        let row = sqlx::query(
            "SELECT cursor, last_reconcile, audit_cursor, baseline_done, last_resync, resync_requested, resync_started, resync_token FROM resources \
             WHERE source = $1 AND resource = $2",
        )
        .bind(&key.source)
        .bind(&key.resource)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_err("read resource state"))?;
        Ok(row.map(|r| ResourceState {
            baseline_done: r.get(3),
            cursor: r.get::<Option<i64>, _>(0).map(from_nanos),
            last_reconcile: r.get::<Option<i64>, _>(1).map(from_nanos),
            audit_cursor: r.get::<Option<i64>, _>(2).map(from_nanos),
            last_resync: r.get::<Option<i64>, _>(4).map(from_nanos),
            resync_requested: r.get::<Option<i64>, _>(5).map(from_nanos),
            resync_started: r.get::<Option<i64>, _>(6).map(from_nanos),
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
        self.count(1);
        let rows = sqlx::query(
            "SELECT id, updated, fp, fields FROM snapshots \
             WHERE source = $1 AND resource = $2 AND id = ANY($3)",
        )
        .bind(&key.source)
        .bind(&key.resource)
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err("read snapshots"))?;
        self.decode_snapshots(&rows).await
    }

    async fn commit_page(&self, key: &ResourceKey, page: PageCommit) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(pg_err("begin page"))?;
        self.count(2); // begin + commit
        if let Some(fence) = &page.fence {
            self.count(1);
            check_fence(&mut tx, key, fence).await?;
        }
        let now = to_nanos(page.at);
        let new_layouts = self.layouts.unsaved(page.snapshots.iter().map(|(_, s)| s));
        for layout in &new_layouts {
            self.count(1);
            insert_layout(&mut tx, layout).await?;
        }
        if !page.snapshots.is_empty() {
            // One row per id (the last one wins), as ON CONFLICT may touch a row only once.
            let mut last: HashMap<&str, usize> = HashMap::new();
            for (i, (id, _)) in page.snapshots.iter().enumerate() {
                last.insert(id.as_str(), i);
            }
            let mut ids = Vec::with_capacity(last.len());
            let mut updated = Vec::with_capacity(last.len());
            let mut fields = Vec::with_capacity(last.len());
            for (i, (id, s)) in page.snapshots.iter().enumerate() {
                if last.get(id.as_str()) == Some(&i) {
                    ids.push(id.clone());
                    updated.push(to_nanos(s.updated));
                    fields.push(fingerprint::encode(&s.fingerprint, s.revision));
                }
            }
            self.count(1);
            sqlx::query(
                "INSERT INTO snapshots (source, resource, id, updated, fp, seen_at) \
                 SELECT $1, $2, u.id, u.updated, u.fp, $3 \
                 FROM UNNEST($4::text[], $5::bigint[], $6::bytea[]) AS u(id, updated, fp) \
                 ON CONFLICT (source, resource, id) DO UPDATE SET \
                   updated = excluded.updated, fp = excluded.fp, fields = NULL, \
                   seen_at = excluded.seen_at, missed = 0",
            )
            .bind(&key.source)
            .bind(&key.resource)
            .bind(now)
            .bind(&ids)
            .bind(&updated)
            .bind(&fields)
            .execute(&mut *tx)
            .await
            .map_err(pg_err("write snapshots"))?;
        }
        if !page.removed.is_empty() {
            self.count(1);
            sqlx::query(
                "DELETE FROM snapshots WHERE source = $1 AND resource = $2 AND id = ANY($3)",
            )
            .bind(&key.source)
            .bind(&key.resource)
            .bind(&page.removed)
            .execute(&mut *tx)
            .await
            .map_err(pg_err("remove snapshots"))?;
        }
        if !page.messages.is_empty() {
            let n = page.messages.len();
            let (mut topics, mut keys, mut ids, mut texts) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for m in &page.messages {
                topics.push(m.topic.clone());
                keys.push(m.session_id.clone());
                ids.push(m.message_id.clone());
                texts.push(serde_json::to_string(m).expect("message serializes"));
            }
            self.count(1);
            sqlx::query(
                "INSERT INTO outbox (topic, partition_key, message_id, message, created_at) \
                 SELECT u.topic, u.partition_key, u.message_id, u.message, $5 \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY \
                   AS u(topic, partition_key, message_id, message, ord) \
                 ORDER BY u.ord",
            )
            .bind(&topics)
            .bind(&keys)
            .bind(&ids)
            .bind(&texts)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(pg_err("write outbox"))?;
        }
        if let Some(state) = &page.state {
            self.count(1);
            sqlx::query(
                "INSERT INTO resources (source, resource, cursor, last_reconcile, audit_cursor, baseline_done, updated_at, last_resync, resync_started, resync_token) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (source, resource) DO UPDATE SET \
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
            .map_err(pg_err("write resource state"))?;
        }
        tx.commit().await.map_err(pg_err("commit page"))
    }

    async fn reconcile_mark(
        &self,
        key: &ResourceKey,
        run: i64,
        ids: &[String],
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(pg_err("begin marks"))?;
        self.count(3);
        if let Some(fence) = fence {
            self.count(1);
            check_fence(&mut tx, key, fence).await?;
        }
        sqlx::query(
            "UPDATE snapshots SET mark = $1, missed = 0 WHERE source = $2 AND resource = $3 \
             AND id = ANY($4)",
        )
        .bind(run)
        .bind(&key.source)
        .bind(&key.resource)
        .bind(ids)
        .execute(&mut *tx)
        .await
        .map_err(pg_err("mark reconciled ids"))?;
        tx.commit().await.map_err(pg_err("commit marks"))
    }

    async fn reconcile_miss(
        &self,
        key: &ResourceKey,
        run: i64,
        before: DateTime<Utc>,
        fence: Option<&Fence>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(pg_err("begin misses"))?;
        self.count(3);
        if let Some(fence) = fence {
            self.count(1);
            check_fence(&mut tx, key, fence).await?;
        }
        let missed = sqlx::query(
            "UPDATE snapshots SET missed = missed + 1 WHERE source = $1 AND resource = $2 \
             AND (mark IS NULL OR mark <> $3) AND seen_at < $4",
        )
        .bind(&key.source)
        .bind(&key.resource)
        .bind(run)
        .bind(to_nanos(before))
        .execute(&mut *tx)
        .await
        .map_err(pg_err("count absent ids"))?
        .rows_affected();
        tx.commit().await.map_err(pg_err("commit misses"))?;
        Ok(missed)
    }

    async fn reconcile_absent(
        &self,
        key: &ResourceKey,
        run: i64,
        before: DateTime<Utc>,
        min_missed: u32,
    ) -> Result<Vec<(String, Snapshot)>, StoreError> {
        self.count(1);
        let rows = sqlx::query(
            "SELECT id, updated, fp, fields FROM snapshots WHERE source = $1 AND resource = $2 \
             AND (mark IS NULL OR mark <> $3) AND seen_at < $4 AND missed >= $5 ORDER BY id",
        )
        .bind(&key.source)
        .bind(&key.resource)
        .bind(run)
        .bind(to_nanos(before))
        .bind(i64::from(min_missed))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err("find absent ids"))?;
        let mut found: Vec<(String, Snapshot)> =
            self.decode_snapshots(&rows).await?.into_iter().collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    async fn snapshot_count(&self, key: &ResourceKey) -> Result<u64, StoreError> {
        self.count(1);
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM snapshots WHERE source = $1 AND resource = $2",
        )
        .bind(&key.source)
        .bind(&key.resource)
        .fetch_one(&self.pool)
        .await
        .map_err(pg_err("count snapshots"))?;
        Ok(n as u64)
    }

    async fn request_resync(&self, key: &ResourceKey, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.count(1);
        sqlx::query(
            "INSERT INTO resources (source, resource, updated_at, resync_requested) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (source, resource) DO UPDATE SET resync_requested = excluded.resync_requested",
        )
        .bind(&key.source)
        .bind(&key.resource)
        .bind(to_nanos(at))
        .bind(to_nanos(at))
        .execute(&self.pool)
        .await
        .map_err(pg_err("request a resync"))?;
        Ok(())
    }

    async fn summaries(&self) -> Result<Vec<ResourceSummary>, StoreError> {
        self.count(1);
        let rows = sqlx::query(
            "SELECT r.source, r.resource, r.cursor, r.last_reconcile, r.audit_cursor, r.baseline_done, \
                    r.last_resync, r.resync_requested, r.resync_started, r.resync_token, \
                    (SELECT count(*) FROM snapshots s WHERE s.source = r.source AND s.resource = r.resource) \
             FROM resources r ORDER BY r.source, r.resource",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err("summarize resources"))?;
        Ok(rows
            .iter()
            .map(|r| ResourceSummary {
                key: ResourceKey::new(r.get::<String, _>(0), r.get::<String, _>(1)),
                state: ResourceState {
                    cursor: r.get::<Option<i64>, _>(2).map(from_nanos),
                    last_reconcile: r.get::<Option<i64>, _>(3).map(from_nanos),
                    audit_cursor: r.get::<Option<i64>, _>(4).map(from_nanos),
                    baseline_done: r.get(5),
                    last_resync: r.get::<Option<i64>, _>(6).map(from_nanos),
                    resync_requested: r.get::<Option<i64>, _>(7).map(from_nanos),
                    resync_started: r.get::<Option<i64>, _>(8).map(from_nanos),
                    resync_token: r.get(9),
                },
                snapshots: r.get::<i64, _>(10) as u64,
            })
            .collect())
    }
}

#[async_trait]
impl OutboxGauge for PgStore {
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        self.count(1);
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM outbox), (SELECT min(created_at) FROM outbox), \
                    (SELECT count(*) FROM dead_letters)",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(pg_err("outbox stats"))?;
        Ok(OutboxStats {
            depth: row.get::<i64, _>(0) as u64,
            oldest: row.get::<Option<i64>, _>(1).map(from_nanos),
            dead: row.get::<i64, _>(2) as u64,
        })
    }

    async fn outbox_depth_in(&self, topic: &str) -> Result<u64, StoreError> {
        self.count(1);
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE topic = $1")
            .bind(topic)
            .fetch_one(&self.pool)
            .await
            .map_err(pg_err("count outbox rows"))?;
        Ok(n as u64)
    }
}

#[async_trait]
impl OutboxStore for PgStore {
    async fn outbox_next(&self, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
        self.claim(None, limit).await
    }

    async fn outbox_topics(&self) -> Result<Vec<String>, StoreError> {
        self.count(1);
        sqlx::query_scalar("SELECT topic FROM outbox GROUP BY topic ORDER BY min(seq)")
            .fetch_all(&self.pool)
            .await
            .map_err(pg_err("list outbox topics"))
    }

    async fn outbox_next_in(&self, topic: &str, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
        self.claim(Some(topic), limit).await
    }

    async fn outbox_ack(&self, seqs: &[i64]) -> Result<(), StoreError> {
        self.count(1);
        sqlx::query("DELETE FROM outbox WHERE seq = ANY($1)")
            .bind(seqs)
            .execute(&self.pool)
            .await
            .map_err(pg_err("acknowledge outbox rows"))?;
        Ok(())
    }

    async fn outbox_failed(&self, seqs: &[i64], error: &str) -> Result<(), StoreError> {
        self.count(1);
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $1, \
             claimed_by = NULL, claimed_until = NULL WHERE seq = ANY($2)",
        )
        .bind(error)
        .bind(seqs)
        .execute(&self.pool)
        .await
        .map_err(pg_err("record outbox failure"))?;
        Ok(())
    }

    async fn outbox_dead(&self, seq: i64, reason: &str) -> Result<(), StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(pg_err("begin dead letter"))?;
        self.count(4);
        sqlx::query(
            "INSERT INTO dead_letters (seq, topic, partition_key, message_id, message, created_at, failed_at, reason) \
             SELECT seq, topic, partition_key, message_id, message, created_at, $1, $2 FROM outbox WHERE seq = $3 \
             ON CONFLICT (seq) DO NOTHING",
        )
        .bind(to_nanos(Utc::now()))
        .bind(reason)
        .bind(seq)
        .execute(&mut *tx)
        .await
        .map_err(pg_err("write dead letter"))?;
        sqlx::query("DELETE FROM outbox WHERE seq = $1")
            .bind(seq)
            .execute(&mut *tx)
            .await
            .map_err(pg_err("remove dead outbox row"))?;
        tx.commit().await.map_err(pg_err("commit dead letter"))
    }
}

#[async_trait]
impl DeadLetterStore for PgStore {
    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadRow>, StoreError> {
        self.count(1);
        let rows = sqlx::query(
            "SELECT seq, message, reason, failed_at FROM dead_letters ORDER BY seq LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err("read dead letters"))?;
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
        let mut tx = self.pool.begin().await.map_err(pg_err("begin retry"))?;
        self.count(4);
        let moved = sqlx::query(
            // Back in its original place (its seq; identities are never reused): before later
            // changes of its partition key that still wait.
            "INSERT INTO outbox (seq, topic, partition_key, message_id, message, created_at) \
             OVERRIDING SYSTEM VALUE \
             SELECT seq, topic, partition_key, message_id, message, $1 FROM dead_letters \
             WHERE $2::bigint[] IS NULL OR seq = ANY($2) ORDER BY seq",
        )
        .bind(to_nanos(Utc::now()))
        .bind(seqs)
        .execute(&mut *tx)
        .await
        .map_err(pg_err("requeue dead letters"))?
        .rows_affected();
        sqlx::query("DELETE FROM dead_letters WHERE $1::bigint[] IS NULL OR seq = ANY($1)")
            .bind(seqs)
            .execute(&mut *tx)
            .await
            .map_err(pg_err("remove requeued dead letters"))?;
        tx.commit().await.map_err(pg_err("commit retry"))?;
        Ok(moved)
    }
}

#[async_trait]
impl LeaseStore for PgStore {
    async fn acquire_leases(
        &self,
        replica: &str,
        keys: &[ResourceKey],
        ttl: Duration,
    ) -> Result<LeaseGrant, StoreError> {
        let mut tx = self.pool.begin().await.map_err(pg_err("begin leases"))?;
        self.count(7);
        let now: i64 = sqlx::query_scalar(&format!(
            "SELECT {NOW_NS} FROM (SELECT pg_advisory_xact_lock($1)) AS serialized"
        ))
        .bind(LEASE_LOCK)
        .fetch_one(&mut *tx)
        .await
        .map_err(pg_err("serialize leases"))?;
        let until = now.saturating_add(nanos_of(ttl));
        // Heartbeat, forget replicas gone for an hour, count the others alive.
        let others: i64 = sqlx::query_scalar(
            "WITH beat AS ( \
               INSERT INTO replicas (id, expires_at) VALUES ($1, $2) \
               ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at \
             ), gone AS ( \
               DELETE FROM replicas WHERE expires_at < $3 - 3600000000000 AND id <> $1 \
             ) \
             SELECT count(*) FROM replicas WHERE expires_at > $3 AND id <> $1",
        )
        .bind(replica)
        .bind(until)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(pg_err("write heartbeat"))?;
        let live = others as usize + 1;
        let (sources, resources) = key_arrays(keys);
        sqlx::query(
            "INSERT INTO leases (source, resource) SELECT * FROM UNNEST($1::text[], $2::text[]) \
             ON CONFLICT (source, resource) DO NOTHING",
        )
        .bind(&sources)
        .bind(&resources)
        .execute(&mut *tx)
        .await
        .map_err(pg_err("create leases"))?;
        let rows = sqlx::query(
            "SELECT l.source, l.resource, l.owner, l.token, l.expires_at FROM leases l \
             JOIN UNNEST($1::text[], $2::text[]) AS k(source, resource) \
               ON l.source = k.source AND l.resource = k.resource",
        )
        .bind(&sources)
        .bind(&resources)
        .fetch_all(&mut *tx)
        .await
        .map_err(pg_err("read leases"))?;
        let rows: Vec<LeaseRow> = rows
            .iter()
            .map(|r| LeaseRow {
                key: ResourceKey::new(r.get::<String, _>(0), r.get::<String, _>(1)),
                owner: r.get(2),
                token: r.get(3),
                expires_at: r.get(4),
            })
            .collect();
        let share = fair_share(keys.len(), live);
        let plan = plan_leases(&rows, replica, share, now);
        for (chosen, sql) in [
            (
                &plan.renew,
                "UPDATE leases l SET expires_at = $1 FROM UNNEST($3::text[], $4::text[]) AS k(s, r) \
                 WHERE l.source = k.s AND l.resource = k.r AND l.owner = $2",
            ),
            (
                &plan.release,
                "UPDATE leases l SET owner = NULL, expires_at = 0 \
                 FROM UNNEST($3::text[], $4::text[]) AS k(s, r) \
                 WHERE l.source = k.s AND l.resource = k.r AND l.owner = $2 AND $1::bigint IS NOT NULL",
            ),
            (
                &plan.take,
                "UPDATE leases l SET owner = $2, token = l.token + 1, expires_at = $1 \
                 FROM UNNEST($3::text[], $4::text[]) AS k(s, r) \
                 WHERE l.source = k.s AND l.resource = k.r",
            ),
        ] {
            if chosen.is_empty() {
                continue;
            }
            let (s, r) = key_arrays(chosen);
            sqlx::query(sql)
                .bind(until)
                .bind(replica)
                .bind(&s)
                .bind(&r)
                .execute(&mut *tx)
                .await
                .map_err(pg_err("write leases"))?;
        }
        tx.commit().await.map_err(pg_err("commit leases"))?;
        let token_of: HashMap<&ResourceKey, i64> = rows.iter().map(|r| (&r.key, r.token)).collect();
        let mut held: Vec<Lease> = plan
            .renew
            .iter()
            .map(|k| (k, 0))
            .chain(plan.take.iter().map(|k| (k, 1)))
            .map(|(k, bump)| Lease {
                key: k.clone(),
                fence: Fence {
                    owner: replica.to_string(),
                    token: token_of.get(k).copied().unwrap_or_default() + bump,
                },
                expires_at: from_nanos(until),
            })
            .collect();
        held.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LeaseGrant {
            held,
            live_replicas: live,
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
        let mut tx = self.pool.begin().await.map_err(pg_err("begin release"))?;
        self.count(4);
        let (sources, resources) = keys.map(key_arrays).unzip();
        sqlx::query(
            "UPDATE leases SET owner = NULL, expires_at = 0 WHERE owner = $1 AND ($2::text[] IS NULL \
             OR (source, resource) IN (SELECT * FROM UNNEST($2::text[], $3::text[])))",
        )
        .bind(replica)
        .bind(&sources)
        .bind(&resources)
        .execute(&mut *tx)
        .await
        .map_err(pg_err("release leases"))?;
        if keys.is_none() {
            sqlx::query("DELETE FROM replicas WHERE id = $1")
                .bind(replica)
                .execute(&mut *tx)
                .await
                .map_err(pg_err("withdraw replica"))?;
        }
        tx.commit().await.map_err(pg_err("commit release"))
    }

    async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        self.count(1);
        let rows = sqlx::query(
            "SELECT source, resource, owner, token, expires_at FROM leases \
             WHERE owner IS NOT NULL ORDER BY source, resource",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err("read leases"))?;
        Ok(rows.iter().map(lease_from).collect())
    }

    async fn live_replicas(&self) -> Result<Vec<String>, StoreError> {
        self.count(1);
        sqlx::query_scalar(&format!(
            "SELECT id FROM replicas WHERE expires_at > {NOW_NS} ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err("read replicas"))
    }
}

#[async_trait]
impl TokenStore for PgStore {
    async fn token(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.count(1);
        sqlx::query_scalar("SELECT value FROM tokens WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_err("read token"))
    }

    async fn put_token(&self, name: &str, value: &str) -> Result<(), StoreError> {
        self.count(1);
        sqlx::query(
            "INSERT INTO tokens (name, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(value)
        .bind(to_nanos(Utc::now()))
        .execute(&self.pool)
        .await
        .map_err(pg_err("write token"))?;
        Ok(())
    }

    async fn claim_token_refresh(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.count(1);
        let ttl = ttl.as_nanos().min(i64::MAX as u128) as i64;
        let claimed = sqlx::query(&format!(
            "INSERT INTO token_refresh (name, holder, until) VALUES ($1, $2, {NOW_NS} + $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
             WHERE token_refresh.until < {NOW_NS} OR token_refresh.holder = excluded.holder"
        ))
        .bind(name)
        .bind(holder)
        .bind(ttl)
        .execute(&self.pool)
        .await
        .map_err(pg_err("claim a token refresh"))?
        .rows_affected();
        Ok(claimed == 1)
    }

    async fn release_token_refresh(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.count(1);
        sqlx::query("DELETE FROM token_refresh WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await
            .map_err(pg_err("release a token refresh"))?;
        Ok(())
    }
}

#[async_trait]
impl BudgetStore for PgStore {
    async fn take_request_budget(
        &self,
        source: &str,
        n: u32,
        per_hour: u32,
    ) -> Result<Option<Duration>, StoreError> {
        self.count(1);
        // Granted when it fits, or when the hour is untouched (a request larger than the whole
        // budget then goes alone instead of never). Earlier hours are forgotten.
        let granted = sqlx::query(&format!(
            "WITH t AS (SELECT {NOW_NS} AS now), w AS (SELECT now - now % {HOUR_NANOS} AS start FROM t), \
             gone AS (DELETE FROM request_budget WHERE source = $1 AND window_start < (SELECT start FROM w)) \
             INSERT INTO request_budget (source, window_start, used) SELECT $1, start, $2 FROM w \
             ON CONFLICT (source, window_start) DO UPDATE SET used = request_budget.used + excluded.used \
             WHERE request_budget.used + excluded.used <= $3"
        ))
        .bind(source)
        .bind(i64::from(n))
        .bind(i64::from(per_hour))
        .execute(&self.pool)
        .await
        .map_err(pg_err("take request budget"))?
        .rows_affected();
        if granted > 0 {
            return Ok(None);
        }
        let mut conn = self.pool.acquire().await.map_err(pg_err("connect"))?;
        let now = self.db_now(&mut conn).await?;
        Ok(Some(budget_wait(budget_window(now), now)))
    }
}

/// Writes `layout` unless it is there (layouts are content-addressed, so a present one is the
/// same).
async fn insert_layout(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    layout: &Layout,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO snapshot_layouts (id, tags, names) VALUES ($1, $2, $3) \
         ON CONFLICT (id) DO UPDATE SET names = coalesce(snapshot_layouts.names, excluded.names)",
    )
    .bind(i64::from(layout.id()))
    .bind(layout.to_bytes())
    .bind(layout.names_json())
    .execute(&mut **tx)
    .await
    .map_err(pg_err("write snapshot layout"))?;
    Ok(())
}

/// Snapshot rows: layouts and the conversion of rows written before fingerprints.
impl PgStore {
    /// Reads every stored layout into the cache (a handful: one per field list ever used).
    async fn load_layouts(&self) -> Result<(), StoreError> {
        self.count(1);
        let rows = sqlx::query("SELECT id, tags, names FROM snapshot_layouts")
            .fetch_all(&self.pool)
            .await
            .map_err(pg_err("read snapshot layouts"))?;
        let layouts = rows
            .iter()
            .map(|r| layout_row(r.get(0), r.get(1), r.get(2)))
            .collect::<Result<Vec<_>, _>>()?;
        self.layouts.remember(layouts);
        Ok(())
    }

    /// Rows of `(id, updated, fp, fields)` as snapshots by id. A layout another replica wrote
    /// since this one read them is read first.
    async fn decode_snapshots(
        &self,
        rows: &[PgRow],
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
    /// per transaction (replicas converting at once write the same bytes). Nothing is
    /// published: the fingerprints are those the same values read from the vendor give.
    async fn convert_legacy_snapshots(&self, location: &str) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let mut converted = 0u64;
        loop {
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(pg_err("begin conversion"))?;
            self.count(3);
            let rows = sqlx::query(
                "SELECT source, resource, id, updated, fields FROM snapshots \
                 WHERE fp IS NULL LIMIT $1 FOR UPDATE SKIP LOCKED",
            )
            .bind(CONVERT_BATCH)
            .fetch_all(&mut *tx)
            .await
            .map_err(pg_err("read old snapshots"))?;
            if rows.is_empty() {
                break;
            }
            let (mut sources, mut resources, mut ids, mut fps) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for r in &rows {
                let id: String = r.get(2);
                let text: Option<&str> = r.get(4);
                let snapshot = legacy_snapshot(&id, from_nanos(r.get(3)), text)?;
                let layout = &snapshot.fingerprint.layout;
                if self.layouts.get(layout.id()).is_none() {
                    self.count(1);
                    insert_layout(&mut tx, layout).await?;
                    self.layouts.remember([layout.clone()]);
                }
                sources.push(r.get::<String, _>(0));
                resources.push(r.get::<String, _>(1));
                ids.push(id);
                fps.push(fingerprint::encode(
                    &snapshot.fingerprint,
                    snapshot.revision,
                ));
            }
            sqlx::query(
                "UPDATE snapshots s SET fp = u.fp, fields = NULL \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[]) AS u(source, resource, id, fp) \
                 WHERE s.source = u.source AND s.resource = u.resource AND s.id = u.id",
            )
            .bind(&sources)
            .bind(&resources)
            .bind(&ids)
            .bind(&fps)
            .execute(&mut *tx)
            .await
            .map_err(pg_err("convert snapshots"))?;
            tx.commit().await.map_err(pg_err("commit conversion"))?;
            converted += rows.len() as u64;
        }
        log_converted(location, converted, started.elapsed());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh database on the test server (`POLLBUS_TEST_POSTGRES` or the local trust-auth
    /// server), dropped by the caller with [`drop_db`].
    async fn create_db() -> (String, String, String) {
        let candidates = match std::env::var("POLLBUS_TEST_POSTGRES") {
            Ok(url) => vec![url],
            Err(_) => vec![
                "postgres://postgres@127.0.0.1:5432/test".to_string(),
                "postgres://root@127.0.0.1:5432/test".to_string(),
            ],
        };
        let mut last = String::new();
        for admin in candidates {
            match PgConnection::connect(&admin).await {
                Ok(mut conn) => {
                    let name = format!("pollbus_unit_{:016x}", rand::random::<u64>());
                    sqlx::query(&format!("CREATE DATABASE {name}"))
                        .execute(&mut conn)
                        .await
                        .unwrap();
                    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                    return (format!("{base}/{name}"), admin.clone(), name);
                }
                Err(e) => last = e.to_string(),
            }
        }
        panic!("PostgreSQL is not reachable at 127.0.0.1:5432 ({last}); run scripts/ensure-postgres.sh");
    }

    async fn drop_db(admin: &str, name: &str) {
        if let Ok(mut conn) = PgConnection::connect(admin).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }

    fn options(replica: &str) -> StoreOptions {
        StoreOptions {
            replica_id: replica.into(),
            session_timeout: Duration::from_secs(1),
            ..StoreOptions::default()
        }
    }

    /// Injected: replica `a` freezes inside the lease transaction and inside the outbox claim
    /// transaction, holding their advisory locks — what the server sees of a SIGSTOPped or
    /// partitioned replica (a session idle in a transaction; the test holds the transaction
    /// open and sends nothing, exactly as a stopped process would). Replica `b` still takes the
    /// leases and claims outbox rows within a few session timeouts: the server ends `a`'s
    /// session (`idle_in_transaction_session_timeout`) and releases its locks. Also: each
    /// replica's sessions carry its id as `application_name`.
    #[tokio::test]
    async fn a_replica_frozen_inside_a_transaction_cannot_stall_the_others() {
        let (url, admin, name) = create_db().await;
        let a = PgStore::open(&url, &options("replica-a")).await.unwrap();
        let b = PgStore::open(&url, &options("replica-b")).await.unwrap();
        let keys = [ResourceKey::new("crm", "customers")];
        for lock in [LEASE_LOCK, CLAIM_LOCK] {
            let mut frozen = a.pool.begin().await.unwrap();
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(lock)
                .execute(&mut *frozen)
                .await
                .unwrap();
            let started = std::time::Instant::now();
            let bounded = Duration::from_secs(20);
            if lock == LEASE_LOCK {
                let grant = tokio::time::timeout(
                    bounded,
                    b.acquire_leases("replica-b", &keys, Duration::from_secs(30)),
                )
                .await
                .expect("b is not stalled by the frozen lease transaction")
                .expect("b takes the lease");
                assert_eq!(grant.held.len(), 1, "{grant:?}");
            } else {
                tokio::time::timeout(bounded, b.outbox_next(10))
                    .await
                    .expect("b is not stalled by the frozen claim transaction")
                    .expect("b claims");
            }
            eprintln!(
                "lock {lock:x}: b went on after {} ms with a frozen a (session_timeout 1 s)",
                started.elapsed().as_millis()
            );
            let dead = sqlx::query("SELECT 1").execute(&mut *frozen).await;
            assert!(dead.is_err(), "the frozen session was ended by the server");
        }
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT application_name FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name LIKE 'replica-%' ORDER BY 1",
        )
        .fetch_all(&b.pool)
        .await
        .unwrap();
        assert!(names.contains(&"replica-b".to_string()), "{names:?}");
        for (setting, value) in [
            ("idle_in_transaction_session_timeout", "1s"),
            ("lock_timeout", "2s"),
            ("statement_timeout", "3s"),
        ] {
            let shown: String = sqlx::query_scalar(&format!("SHOW {setting}"))
                .fetch_one(&b.pool)
                .await
                .unwrap();
            assert_eq!(shown, value, "{setting}");
        }
        drop((a, b));
        drop_db(&admin, &name).await;
    }

    #[test]
    fn migration_backoff_doubles_from_fifty_milliseconds_up_to_two_seconds() {
        let waits: Vec<u128> = migration_backoff().take(8).map(|d| d.as_millis()).collect();
        assert_eq!(waits, [50, 100, 200, 400, 800, 1600, 2000, 2000]);
    }
}
