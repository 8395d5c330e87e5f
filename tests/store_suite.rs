//! One store test suite, run against every backend, so all honour identical semantics.

mod support;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;

use pollbus::contract::{Change, EventType, Message, MessageContext, TraceContext};
use pollbus::detect::Snapshot;
use pollbus::store::{PageCommit, ResourceKey, ResourceState, Store};
use support::t;

fn snapshot(updated: &str, city: &str) -> Snapshot {
    Snapshot {
        updated: t(updated),
        values: json!({"City": city}).as_object().unwrap().clone(),
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
    assert_eq!(snaps["1"].values["City"], json!("Tromsø"));

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
        ["9", "2"],
        "requeued at the end"
    );
    assert_eq!(store.outbox_stats().await.unwrap().dead, 0);

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
        .reconcile_mark(&other, 7, &["a".into(), "zz".into()])
        .await
        .unwrap();
    let absent = store
        .reconcile_absent(&other, 7, listing_started)
        .await
        .unwrap();
    assert_eq!(
        absent.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["b"]
    );

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
}

#[tokio::test]
async fn sqlite_store_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store = pollbus::store::open(&url).await.unwrap();
    suite(store).await;
    // Reopening migrates nothing twice and keeps the data.
    let store = pollbus::store::open(&url).await.unwrap();
    assert_eq!(store.outbox_stats().await.unwrap().depth, 2);
}
