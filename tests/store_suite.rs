//! One store test suite, run against every backend, so all honour identical semantics.

mod pg;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use pollbus::contract::{Change, EventType, Message, MessageContext, TraceContext};
use pollbus::detect::Snapshot;
use pollbus::store::fenced::FencedStore;
use pollbus::store::postgres::PgStore;
use pollbus::store::{
    Fence, LeaseGrant, OutboxGauge, OutboxStore, PageCommit, PageStore, ResourceKey, ResourceState,
    Store, StoreError, StoreOptions,
};
use pollbus_testkit::t;

fn snapshot(updated: &str, city: &str) -> Snapshot {
    // every round trip below checks that the revision survives the store too
    Snapshot {
        revision: Some(city.len() as u64),
        ..Snapshot::from_legacy(
            t(updated),
            json!({"City": city}).as_object().unwrap().clone(),
        )
    }
}

fn message(entity: &str, id: &str) -> Message {
    let change = Change {
        kind: EventType::Update,
        id: id.into(),
        timestamp: t("2024-06-01T10:00:00Z"),
        changed: vec![("City".into(), json!("Bodø"))],
        on_behalf_of: None,
        version: id.into(),
    };
    let ctx = MessageContext {
        source: "crm",
        source_system: "CRM",
        entity,
        topic_prefix: "api.event.",
    };
    Message::build(&change, &ctx, &TraceContext::random())
}

/// A message of `pollbus replay`: marked with its replay id and target subscription.
fn replay_message(entity: &str, id: &str) -> Message {
    let plain = message(entity, id);
    let change = Change {
        kind: EventType::Update,
        id: id.into(),
        timestamp: t("2024-06-01T10:00:00Z"),
        changed: vec![("City".into(), json!("Bodø"))],
        on_behalf_of: None,
        version: format!("0123456789abcdef|{id}"),
    };
    let ctx = MessageContext {
        source: "crm",
        source_system: "CRM",
        entity,
        topic_prefix: "api.event.",
    };
    let marks = [
        (pollbus::replay::REPLAY, "0123456789abcdef".to_string()),
        (pollbus::replay::REPLAY_FOR, "crm-sync".to_string()),
    ];
    let replayed = Message::build_with(&change, &ctx, &TraceContext::random(), &marks);
    assert_ne!(replayed.message_id, plain.message_id);
    replayed
}

fn at(text: &str) -> DateTime<Utc> {
    t(text)
}

/// Every backend must pass this.
async fn suite(store: Arc<dyn Store>) {
    let key = ResourceKey::new("crm", "customers");
    let other = ResourceKey::new("crm", "accounts");
    assert_eq!(store.resource_state(&key).await.unwrap(), None);

    // A page: snapshots + outbox + cursor, atomically.
    let state = ResourceState {
        baseline_done: false,
        cursor: Some(at("2024-06-01T10:00:00.123456789Z")),
        ..Default::default()
    };
    store
        .commit_page(
            &key,
            PageCommit {
                at: at("2024-06-01T12:00:00Z"),
                snapshots: vec![
                    ("1".into(), snapshot("2024-06-01T10:00:00Z", "Oslo")),
                    ("2".into(), snapshot("2024-06-01T10:00:00Z", "Bergen")),
                ],
                messages: vec![
                    message("customer", "1"),
                    message("customer", "2"),
                    message("account", "9"),
                ],
                state: Some(state.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store.resource_state(&key).await.unwrap(),
        Some(state),
        "nanosecond cursor round-trips"
    );
    let snaps = store
        .snapshots(&key, &["1".into(), "3".into()])
        .await
        .unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps["1"], snapshot("2024-06-01T10:00:00Z", "Oslo"));
    assert!(
        store
            .snapshots(&other, &["1".into()])
            .await
            .unwrap()
            .is_empty(),
        "resources are separate"
    );
    assert_eq!(store.snapshot_count(&key).await.unwrap(), 2);

    // Upsert replaces; removal deletes.
    store
        .commit_page(
            &key,
            PageCommit {
                at: at("2024-06-01T12:01:00Z"),
                snapshots: vec![("1".into(), snapshot("2024-06-01T11:00:00Z", "Tromsø"))],
                removed: vec!["2".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let snaps = store
        .snapshots(&key, &["1".into(), "2".into()])
        .await
        .unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps["1"], snapshot("2024-06-01T11:00:00Z", "Tromsø"));
    assert_eq!(
        snaps["1"]
            .fingerprint
            .field(pollbus::fingerprint::name_tag("City")),
        Some(pollbus::fingerprint::value_hash(&json!("Tromsø")) as u32)
    );

    // Outbox: publication order, ack, failure accounting, dead letters and retry.
    let rows = store.outbox_next(10).await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| r.message.body.id.as_str())
            .collect::<Vec<_>>(),
        ["1", "2", "9"]
    );
    assert!(rows.windows(2).all(|w| w[0].seq < w[1].seq));
    store.outbox_failed(&[rows[0].seq], "busy").await.unwrap();
    assert_eq!(store.outbox_next(1).await.unwrap()[0].attempts, 1);
    store.outbox_ack(&[rows[0].seq]).await.unwrap();
    store
        .outbox_dead(rows[1].seq, "topic api.event.customer not found")
        .await
        .unwrap();
    let stats = store.outbox_stats().await.unwrap();
    assert_eq!((stats.depth, stats.dead), (1, 1));
    assert_eq!(stats.oldest, Some(at("2024-06-01T12:00:00Z")));
    let dead = store.dead_letters(10).await.unwrap();
    assert_eq!(
        (dead[0].seq, dead[0].reason.as_str()),
        (rows[1].seq, "topic api.event.customer not found")
    );
    assert_eq!(dead[0].message.body.id, "2");
    assert_eq!(
        store.retry_dead(Some(&[12345])).await.unwrap(),
        0,
        "unknown seq: nothing moves"
    );
    assert_eq!(store.retry_dead(None).await.unwrap(), 1);
    let rows = store.outbox_next(10).await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| r.message.body.id.as_str())
            .collect::<Vec<_>>(),
        ["2", "9"],
        "requeued in its original place, before later rows"
    );
    assert_eq!(store.outbox_stats().await.unwrap().dead, 0);

    // Per topic: topics by their oldest row, one topic's rows, one topic's depth.
    let replayed = replay_message("account", "a2");
    store
        .commit_page(
            &other,
            PageCommit {
                at: at("2024-06-01T12:00:30Z"),
                messages: vec![message("account", "a1"), replayed.clone()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // A page of messages alone (what `pollbus replay` commits) writes no resource state.
    assert_eq!(store.resource_state(&other).await.unwrap(), None);
    // Waiting now: customer "2" (requeued in its place), account "9", accounts a1, a2.
    assert_eq!(
        store.outbox_topics().await.unwrap(),
        ["api.event.customer", "api.event.account"]
    );
    let accounts = store.outbox_next_in("api.event.account", 2).await.unwrap();
    assert_eq!(
        accounts
            .iter()
            .map(|r| r.message.body.id.as_str())
            .collect::<Vec<_>>(),
        ["9", "a1"]
    );
    let customers = store
        .outbox_next_in("api.event.customer", 10)
        .await
        .unwrap();
    assert_eq!(
        customers
            .iter()
            .map(|r| r.message.body.id.as_str())
            .collect::<Vec<_>>(),
        ["2"]
    );
    assert_eq!(
        store.outbox_depth_in("api.event.customer").await.unwrap(),
        1
    );
    assert_eq!(store.outbox_depth_in("api.event.account").await.unwrap(), 3);
    assert_eq!(store.outbox_depth_in("api.event.none").await.unwrap(), 0);
    let accounts = store.outbox_next_in("api.event.account", 10).await.unwrap();
    let seqs: Vec<i64> = accounts.iter().map(|r| r.seq).collect();
    assert_eq!(seqs.len(), 3);
    assert_eq!(accounts[2].message, replayed, "a replay's marks round-trip");
    store.outbox_ack(&seqs).await.unwrap();
    assert_eq!(store.outbox_topics().await.unwrap(), ["api.event.customer"]);

    // Reconciliation: marks, and records written during the listing are not absent.
    store
        .commit_page(
            &other,
            PageCommit {
                at: at("2024-06-01T12:00:00Z"),
                snapshots: vec![
                    ("a".into(), snapshot("2024-01-01T00:00:00Z", "x")),
                    ("b".into(), snapshot("2024-01-01T00:00:00Z", "y")),
                ],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let listing_started = at("2024-06-01T13:00:00Z");
    store
        .commit_page(
            &other,
            PageCommit {
                at: at("2024-06-01T13:00:05Z"),
                snapshots: vec![("c".into(), snapshot("2024-06-01T13:00:04Z", "z"))],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    store
        .reconcile_mark(&other, 7, &["a".into(), "zz".into()], None)
        .await
        .unwrap();
    assert_eq!(
        store
            .reconcile_miss(&other, 7, listing_started, None)
            .await
            .unwrap(),
        1,
        "counted without loading"
    );
    let absent = store
        .reconcile_absent(&other, 7, listing_started, 1)
        .await
        .unwrap();
    assert_eq!(
        absent.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["b"]
    );
    assert!(
        store
            .reconcile_absent(&other, 7, listing_started, 2)
            .await
            .unwrap()
            .is_empty(),
        "missed once: not yet for offset-paged listings"
    );
    // A second listing without "b": missed twice.
    store
        .reconcile_mark(&other, 8, &["a".into(), "c".into()], None)
        .await
        .unwrap();
    assert_eq!(
        store
            .reconcile_miss(&other, 8, listing_started, None)
            .await
            .unwrap(),
        1
    );
    let absent = store
        .reconcile_absent(&other, 8, listing_started, 2)
        .await
        .unwrap();
    assert_eq!(
        absent.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["b"]
    );
    // Seen again (listed, or written by a poll): the count starts over.
    store
        .reconcile_mark(&other, 9, &["a".into(), "b".into(), "c".into()], None)
        .await
        .unwrap();
    store
        .reconcile_miss(&other, 10, listing_started, None)
        .await
        .unwrap();
    assert!(store
        .reconcile_absent(&other, 10, listing_started, 2)
        .await
        .unwrap()
        .is_empty());

    // Tokens replace atomically.
    assert_eq!(store.token("sn/oauth").await.unwrap(), None);
    store.put_token("sn/oauth", "t1").await.unwrap();
    store.put_token("sn/oauth", "t2").await.unwrap();
    assert_eq!(
        store.token("sn/oauth").await.unwrap().as_deref(),
        Some("t2")
    );

    let summaries = store.summaries().await.unwrap();
    assert_eq!(summaries.len(), 1, "only resources with state appear");
    assert_eq!((summaries[0].key.clone(), summaries[0].snapshots), (key, 1));

    leases(store.clone()).await;
    request_budget(store.clone()).await;
}

fn fence_of(grant: &LeaseGrant, resource: &str) -> Fence {
    grant
        .held
        .iter()
        .find(|l| l.key.resource == resource)
        .unwrap_or_else(|| panic!("{resource} not held: {grant:?}"))
        .fence
        .clone()
}

fn held(grant: &LeaseGrant) -> Vec<&str> {
    grant.held.iter().map(|l| l.key.resource.as_str()).collect()
}

/// A page that writes nothing but must pass the fence.
fn fenced_page(fence: &Fence) -> PageCommit {
    PageCommit {
        at: at("2024-06-01T12:00:00Z"),
        fence: Some(fence.clone()),
        ..Default::default()
    }
}

/// Leases: fair share, balancing, fencing tokens, takeover after expiry, release.
async fn leases(store: Arc<dyn Store>) {
    let keys: Vec<ResourceKey> = (0..4)
        .map(|i| ResourceKey::new("crm", format!("r{i}")))
        .collect();
    let ttl = Duration::from_millis(1500);
    let a = store.acquire_leases("a", &keys, ttl).await.unwrap();
    assert_eq!((a.live_replicas, a.share), (1, 4));
    assert_eq!(held(&a), ["r0", "r1", "r2", "r3"], "alone: every lease");
    let a_r0 = fence_of(&a, "r0");
    assert_eq!(a_r0.owner, "a");

    let b = store.acquire_leases("b", &keys, ttl).await.unwrap();
    assert_eq!((b.live_replicas, b.share), (2, 2));
    assert!(held(&b).is_empty(), "live leases are not taken: {b:?}");
    assert!(b.next_expiry.is_some_and(|d| d <= ttl), "{b:?}");

    let a = store.acquire_leases("a", &keys, ttl).await.unwrap();
    assert_eq!(held(&a), ["r0", "r1"], "above the share: released");
    assert_eq!(fence_of(&a, "r0"), a_r0, "a renewal keeps the token");
    let b = store.acquire_leases("b", &keys, ttl).await.unwrap();
    assert_eq!(held(&b), ["r2", "r3"]);
    let b_r2 = fence_of(&b, "r2");
    let a_r2 = Fence {
        owner: "a".into(),
        token: b_r2.token - 1,
    };
    assert!(b_r2.token > 0);
    let mut owners: Vec<(String, String)> = store
        .leases()
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.key.resource, l.fence.owner))
        .collect();
    owners.sort();
    assert_eq!(
        owners,
        [("r0", "a"), ("r1", "a"), ("r2", "b"), ("r3", "b")]
            .map(|(r, o)| (r.to_string(), o.to_string()))
    );
    assert_eq!(store.live_replicas().await.unwrap(), ["a", "b"]);

    // Fencing: the holder writes; the previous holder of a lease cannot.
    store
        .commit_page(&keys[0], fenced_page(&a_r0))
        .await
        .unwrap();
    store
        .commit_page(&keys[2], fenced_page(&b_r2))
        .await
        .unwrap();
    let err = store
        .commit_page(&keys[2], fenced_page(&a_r2))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::LeaseLost { resource, .. } if resource == "crm/r2"),
        "{err}"
    );
    assert!(err.to_string().contains("crm/r2"), "{err}");
    // Reconcile marks are fenced too: the previous holder cannot overwrite the owner's marks
    // (which would make live records look absent to the owner's reconciliation).
    store
        .commit_page(
            &keys[2],
            PageCommit {
                at: at("2024-06-01T12:00:00Z"),
                snapshots: vec![("m".into(), snapshot("2024-01-01T00:00:00Z", "x"))],
                fence: Some(b_r2.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    store
        .reconcile_mark(&keys[2], 41, &["m".into()], Some(&b_r2))
        .await
        .unwrap();
    let err = store
        .reconcile_mark(&keys[2], 40, &["m".into()], Some(&a_r2))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    assert!(
        store
            .reconcile_absent(&keys[2], 41, at("2030-01-01T00:00:00Z"), 0)
            .await
            .unwrap()
            .is_empty(),
        "the owner's mark stands"
    );
    let fenced = FencedStore::new(store.clone());
    assert!(
        matches!(
            fenced.reconcile_mark(&keys[0], 1, &[], None).await,
            Err(StoreError::NotLeased { .. })
        ),
        "a fenced store without a lease marks nothing"
    );
    assert!(
        matches!(
            fenced.commit_page(&keys[0], PageCommit::default()).await,
            Err(StoreError::NotLeased { .. })
        ),
        "a fenced store without a lease writes nothing"
    );
    fenced.set_fence(Some(a_r0.clone()));
    fenced
        .commit_page(&keys[0], PageCommit::default())
        .await
        .unwrap();

    // Both stop renewing (a is frozen); b comes back after expiry and takes everything over.
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let err = store
        .commit_page(&keys[0], fenced_page(&a_r0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::LeaseLost { .. }),
        "expired: {err}"
    );
    let b = store.acquire_leases("b", &keys, ttl).await.unwrap();
    assert_eq!((b.live_replicas, b.share), (1, 4));
    assert_eq!(held(&b), ["r0", "r1", "r2", "r3"]);
    assert!(
        fence_of(&b, "r0").token > a_r0.token,
        "a takeover bumps the token"
    );
    assert!(
        fence_of(&b, "r2").token > b_r2.token,
        "b's own expired lease is taken again with a new token"
    );
    let err = store
        .commit_page(&keys[0], fenced_page(&a_r0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::LeaseLost { .. }),
        "taken over: {err}"
    );

    // The frozen replica wakes up: it gets nothing while b is alive and holds every lease.
    let a = store.acquire_leases("a", &keys, ttl).await.unwrap();
    assert!(held(&a).is_empty(), "{a:?}");
    // b stops gracefully: a takes over at once.
    store.release_leases("b", None).await.unwrap();
    let a = store.acquire_leases("a", &keys, ttl).await.unwrap();
    assert_eq!(held(&a), ["r0", "r1", "r2", "r3"]);
    assert_eq!(store.live_replicas().await.unwrap(), ["a"]);
    store.release_leases("a", Some(&keys[..1])).await.unwrap();
    let a = store.acquire_leases("a", &keys[1..], ttl).await.unwrap();
    assert_eq!(held(&a), ["r1", "r2", "r3"]);
    store.release_leases("a", None).await.unwrap();
    assert!(store.leases().await.unwrap().is_empty());
    assert!(store.live_replicas().await.unwrap().is_empty());
}

/// The shared request budget: per source, per clock hour.
async fn request_budget(store: Arc<dyn Store>) {
    assert_eq!(store.take_request_budget("crm", 3, 5).await.unwrap(), None);
    assert_eq!(store.take_request_budget("crm", 2, 5).await.unwrap(), None);
    let wait = store.take_request_budget("crm", 1, 5).await.unwrap();
    assert!(
        wait.is_some_and(|w| w <= Duration::from_secs(3600)),
        "used up: {wait:?}"
    );
    assert!(
        store
            .take_request_budget("crm", 1, 5)
            .await
            .unwrap()
            .is_some(),
        "nothing taken by a refusal"
    );
    assert_eq!(
        store.take_request_budget("hr", 7, 5).await.unwrap(),
        None,
        "another source; a request larger than the budget goes alone in an untouched hour"
    );
    assert!(store
        .take_request_budget("hr", 1, 5)
        .await
        .unwrap()
        .is_some());

    // The budget the HTTP layer uses, one per replica: waits once the shared count is used up
    // although each replica sent only one request.
    use pollbus::http::budget::RequestBudget;
    let replica_a = pollbus::store::budget::SharedBudget::per_hour(store.clone(), "erp", 2);
    let replica_b = pollbus::store::budget::SharedBudget::per_hour(store.clone(), "erp", 2);
    replica_a.take().await;
    replica_b.take().await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), replica_a.take())
            .await
            .is_err(),
        "a third request in the hour waits"
    );
}

/// A snapshot's layout keeps its field names across a reopen (a process restart): with
/// `fields = "*"`, a field a record stops carrying is named from them.
async fn field_names_survive_a_reopen(url: &str) {
    let key = ResourceKey::new("crm", "names");
    let store = pollbus::store::open(url).await.unwrap();
    store
        .commit_page(
            &key,
            PageCommit {
                at: at("2024-06-01T12:00:00Z"),
                snapshots: vec![("n".into(), snapshot("2024-06-01T10:00:00Z", "Oslo"))],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    drop(store);
    let store = pollbus::store::open(url).await.unwrap();
    let snaps = store.snapshots(&key, &["n".into()]).await.unwrap();
    let layout = &snaps["n"].fingerprint.layout;
    assert_eq!(
        layout.name_of(pollbus::fingerprint::name_tag("City")),
        Some("City")
    );
}

/// A resync's progress round-trips with the state, and a request made while a poll runs is not
/// overwritten by that poll's page commit (which carries the state it read before).
async fn resync_state_and_requests(url: &str) {
    let key = ResourceKey::new("crm", "resynced");
    let store = pollbus::store::open(url).await.unwrap();
    let read_by_a_poll = store
        .resource_state(&key)
        .await
        .unwrap()
        .unwrap_or_default();
    store
        .request_resync(&key, at("2024-06-01T12:00:00Z"))
        .await
        .unwrap();
    let state = ResourceState {
        baseline_done: true,
        last_resync: Some(at("2024-06-01T00:00:00Z")),
        resync_started: Some(at("2024-06-01T11:00:00Z")),
        resync_token: Some("2024-06-01 10:59:59|abc".into()),
        ..read_by_a_poll
    };
    store
        .commit_page(
            &key,
            PageCommit {
                at: at("2024-06-01T12:00:01Z"),
                state: Some(state.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store.resource_state(&key).await.unwrap(),
        Some(ResourceState {
            resync_requested: Some(at("2024-06-01T12:00:00Z")),
            ..state
        })
    );
}

#[tokio::test]
async fn sqlite_store_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store = pollbus::store::open(&url).await.unwrap();
    suite(store).await;
    field_names_survive_a_reopen(&url).await;
    resync_state_and_requests(&url).await;
    // Reopening migrates nothing twice and keeps the data.
    let store = pollbus::store::open(&url).await.unwrap();
    assert_eq!(
        store.outbox_stats().await.unwrap().depth,
        1,
        "customer \"2\" still waits"
    );
}

#[tokio::test]
async fn postgres_store_passes_the_suite() {
    let db = pg::TestDb::create().await;
    let store = pollbus::store::open(&db.url).await.unwrap();
    suite(store).await;
    field_names_survive_a_reopen(&db.url).await;
    resync_state_and_requests(&db.url).await;
    // Reopening migrates nothing twice and keeps the data.
    let store = pollbus::store::open(&db.url).await.unwrap();
    assert_eq!(
        store.outbox_stats().await.unwrap().depth,
        1,
        "customer \"2\" still waits"
    );
}

fn keyed(id: &str, version: &str) -> Message {
    let mut m = message("customer", id);
    m.message_id = format!("{id}@{version}");
    m
}

async fn pg_store(url: &str, replica: &str, claim_timeout: Duration) -> Arc<PgStore> {
    let options = StoreOptions {
        replica_id: replica.into(),
        claim_timeout,
        ..StoreOptions::default()
    };
    Arc::new(PgStore::open(url, &options).await.unwrap())
}

fn bodies(rows: &[pollbus::store::OutboxRow]) -> Vec<String> {
    rows.iter().map(|r| r.message.message_id.clone()).collect()
}

#[tokio::test]
async fn postgres_outbox_claims_keep_partition_key_order_and_expire() {
    let db = pg::TestDb::create().await;
    let timeout = Duration::from_secs(1);
    let a = pg_store(&db.url, "a", timeout).await;
    let b = pg_store(&db.url, "b", timeout).await;
    let key = ResourceKey::new("crm", "customers");
    // Ids 1 and 2 are two partition keys; 1 changes twice.
    a.commit_page(
        &key,
        PageCommit {
            at: at("2024-06-01T12:00:00Z"),
            messages: vec![
                keyed("1", "v1"),
                keyed("2", "v1"),
                keyed("1", "v2"),
                keyed("3", "v1"),
            ],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_ne!(keyed("1", "v1").session_id, keyed("2", "v1").session_id);

    let mine = a.outbox_next(1).await.unwrap();
    assert_eq!(bodies(&mine), ["1@v1"]);
    let theirs = b.outbox_next(10).await.unwrap();
    assert_eq!(
        bodies(&theirs),
        ["2@v1", "3@v1"],
        "1@v2 waits while 1@v1 is claimed by a"
    );
    assert!(b
        .outbox_next(10)
        .await
        .unwrap()
        .iter()
        .all(|r| r.message.body.id != "1"));
    b.outbox_ack(&theirs.iter().map(|r| r.seq).collect::<Vec<_>>())
        .await
        .unwrap();

    // a crashes without acknowledging: after the claim timeout b takes the key, in order.
    drop(a);
    assert!(b.outbox_next(10).await.unwrap().is_empty());
    tokio::time::sleep(timeout + Duration::from_millis(200)).await;
    let reclaimed = b.outbox_next(10).await.unwrap();
    assert_eq!(bodies(&reclaimed), ["1@v1", "1@v2"]);
    // A transient failure releases the claim at once.
    b.outbox_failed(&[reclaimed[0].seq, reclaimed[1].seq], "busy")
        .await
        .unwrap();
    let c = pg_store(&db.url, "c", timeout).await;
    let rows = c.outbox_next(10).await.unwrap();
    assert_eq!(bodies(&rows), ["1@v1", "1@v2"]);
    assert_eq!(rows[0].attempts, 1);
}

#[tokio::test]
async fn postgres_concurrent_claimers_publish_each_key_in_order() {
    let db = pg::TestDb::create().await;
    let writer = pg_store(&db.url, "writer", Duration::from_secs(30)).await;
    let key = ResourceKey::new("crm", "customers");
    let mut messages = Vec::new();
    for version in 0..40 {
        for id in ["1", "2", "3", "4", "5"] {
            messages.push(keyed(id, &format!("{version:03}")));
        }
    }
    writer
        .commit_page(
            &key,
            PageCommit {
                at: at("2024-06-01T12:00:00Z"),
                messages,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let published = Arc::new(std::sync::Mutex::new(Vec::<(String, i64)>::new()));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let store = pg_store(&db.url, &format!("claimer-{i}"), Duration::from_secs(30)).await;
        let published = published.clone();
        tasks.push(tokio::spawn(async move {
            let mut idle = 0;
            while idle < 20 {
                let rows = store.outbox_next(3).await.unwrap();
                if rows.is_empty() {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                idle = 0;
                {
                    let mut log = published.lock().unwrap();
                    for r in &rows {
                        log.push((r.message.session_id.clone(), r.seq));
                    }
                }
                tokio::task::yield_now().await;
                store
                    .outbox_ack(&rows.iter().map(|r| r.seq).collect::<Vec<_>>())
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let log = published.lock().unwrap().clone();
    assert_eq!(log.len(), 200, "every row published exactly once");
    let mut last: std::collections::HashMap<String, i64> = Default::default();
    for (key, seq) in log {
        let prev = last.insert(key.clone(), seq);
        assert!(
            prev.is_none_or(|p| p < seq),
            "key {key}: seq {seq} published after {prev:?}"
        );
    }
    assert_eq!(writer.outbox_stats().await.unwrap().depth, 0);
}

#[tokio::test]
async fn postgres_migrations_from_several_pools_at_once_run_once() {
    let db = pg::TestDb::create().await;
    let opened = futures::future::join_all((0..3).map(|i| {
        pg_store(
            &db.url,
            Box::leak(format!("r{i}").into_boxed_str()),
            Duration::from_secs(5),
        )
    }))
    .await;
    assert_eq!(opened.len(), 3);
    let mut conn = db.connect().await;
    let migrations: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let files = std::fs::read_dir("migrations/postgres").unwrap().count() as i64;
    assert_eq!(migrations, files);
    let meta: i64 = sqlx::query_scalar("SELECT count(*) FROM pollbus_meta")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(meta, 1);
    // Each works.
    for store in &opened {
        assert_eq!(store.outbox_stats().await.unwrap().depth, 0);
    }
}

#[tokio::test]
async fn postgres_refuses_a_database_of_another_application() {
    let db = pg::TestDb::create().await;
    let mut conn = db.connect().await;
    sqlx::query("CREATE TABLE invoices (id int)")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = match pollbus::store::open(&db.url).await {
        Ok(_) => panic!("a foreign database was accepted"),
        Err(e) => e,
    };
    assert!(matches!(err, StoreError::NotPollbus { .. }), "{err}");
    assert!(err.to_string().contains("invoices"), "{err}");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(tables, ["invoices"], "nothing was changed");
}

#[tokio::test]
async fn postgres_errors_never_show_the_password() {
    let err = match pollbus::store::open("postgres://pollbus:s3cr3t-pw@127.0.0.1:1/state").await {
        Ok(_) => panic!("nothing listens on port 1"),
        Err(e) => e,
    };
    let text = format!("{err} {err:?}");
    assert!(!text.contains("s3cr3t-pw"), "{text}");
    assert!(text.contains("127.0.0.1:1/state"), "{text}");
}

#[tokio::test]
async fn postgres_errors_carry_the_sqlstate_and_the_operation() {
    let db = pg::TestDb::create().await;
    let store = pollbus::store::open(&db.url).await.unwrap();
    let mut conn = db.connect().await;
    sqlx::query("DROP TABLE tokens")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = store.token("sn/oauth").await.unwrap_err();
    match &err {
        StoreError::Database {
            operation,
            sqlstate,
            transient,
            ..
        } => assert_eq!(
            (*operation, sqlstate.as_str(), *transient),
            ("read token", "42P01", false)
        ),
        other => panic!("not mapped: {other:?}"),
    }
    assert!(err.to_string().contains("sqlstate 42P01"), "{err}");
}

#[tokio::test]
async fn postgres_schemas_keep_deployments_apart() {
    let db = pg::TestDb::create().await;
    let mut conn = db.connect().await;
    for schema in ["tenant_a", "tenant_b"] {
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    // Another application's table in the default schema does not matter to either.
    sqlx::query("CREATE TABLE public.invoices (id int)")
        .execute(&mut conn)
        .await
        .unwrap();
    let url = |schema: &str| format!("{}?options=-c%20search_path%3D{schema}", db.url);
    let a = pollbus::store::open(&url("tenant_a")).await.unwrap();
    let b = pollbus::store::open(&url("tenant_b")).await.unwrap();
    a.put_token("t", "a").await.unwrap();
    assert_eq!(b.token("t").await.unwrap(), None);
    assert_eq!(a.token("t").await.unwrap().as_deref(), Some("a"));
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'outbox' \
         AND table_schema IN ('tenant_a', 'tenant_b')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(tables, 2);
}
