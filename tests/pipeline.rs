//! The pipeline end to end through real SQLite: detection rules, cursor safety, crashes and
//! restarts, deletes, dead letters. Every message is validated against the schemas by the sink.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use pollbus::contract::{Change, EventType, Message, MessageContext, PropertyValue, TraceContext};
use pollbus::metrics::Metrics;
use pollbus::poll::{PollError, Poller};
use pollbus::sink::TopicBlock;
use pollbus::store::{PageCommit, ResourceKey};
use pollbus_testkit::scripted::{config, customer, Row, ScriptedSource};
use pollbus_testkit::{t, Harness, SinkMode};

#[tokio::test]
async fn baseline_then_create_update_noop_and_reconciled_delete() {
    let rig = Harness::scripted(config(
        100,
        r#"deletes = "reconcile"
  reconcile_interval = "1m""#,
    ))
    .await;
    rig.source.put(
        "1",
        "2024-01-01T00:00:00Z",
        "2024-01-01T00:00:00Z",
        customer("Åse", "Oslo"),
    );
    rig.source.put(
        "2",
        "2024-01-01T00:00:00Z",
        "2024-01-02T00:00:00Z",
        customer("Bjørn", "Bergen"),
    );
    let r = rig.cycle().await;
    assert_eq!(
        (r.baseline, r.messages()),
        (2, 0),
        "first poll is a silent baseline"
    );

    rig.source.put(
        "3",
        "2024-06-01T11:00:00Z",
        "2024-06-01T11:00:00.400Z",
        customer("Øystein", "Tromsø"),
    );
    rig.source.update(
        "1",
        "2024-06-01T11:00:01Z",
        json!({"address": {"city": "Ålesund"}}),
    );
    rig.source
        .update("2", "2024-06-01T11:00:02Z", json!({"by": "Web"}));
    let r = rig.cycle().await;
    assert_eq!((r.created, r.updated, r.noop), (1, 1, 1), "{r:?}");
    assert_eq!(
        rig.sink.summary(),
        vec![
            (1, "3".into(), "FirstName,City,Vip".into()),
            (2, "1".into(), "City".into()),
        ]
    );
    let update = &rig.sink.messages()[1];
    assert_eq!(
        update.application_properties["City"],
        PropertyValue::String("Ålesund".into())
    );
    assert_eq!(update.body.on_behalf_of.as_deref(), Some("IFS"));
    assert_eq!(update.body.timestamp, "2024-06-01T11:00:01Z");
    assert_eq!(update.topic, "api.event.customer");

    rig.source.delete("2", "2024-06-01T11:30:00Z", false);
    rig.advance(chrono::Duration::minutes(2));
    let r = rig.cycle().await;
    assert_eq!(r.deleted, 1);
    let delete = rig.sink.messages().pop().unwrap();
    assert_eq!(
        (
            delete.body.even_type.code(),
            delete.body.id.as_str(),
            delete.body.changed_fields.as_str()
        ),
        (3, "2", "")
    );
    assert_eq!(
        delete.body.timestamp, "2024-06-01T12:02:00Z",
        "reconciled deletes carry the detection time"
    );

    let r = rig.cycle().await;
    assert_eq!(r.messages(), 0, "nothing new: {r:?}");
    rig.sink.assert_unique();
}

#[tokio::test]
async fn initial_emit_publishes_existing_records_by_the_created_rule() {
    let rig = Harness::scripted(config(100, r#"initial = "emit""#)).await;
    rig.source.put(
        "new",
        "2024-01-01T00:00:00Z",
        "2024-01-01T00:00:00.900Z",
        customer("A", "B"),
    );
    rig.source.put(
        "old",
        "2023-01-01T00:00:00Z",
        "2024-01-01T00:00:00Z",
        customer("C", "D"),
    );
    let r = rig.cycle().await;
    assert_eq!((r.created, r.updated), (1, 1));
}

#[tokio::test]
async fn equal_timestamps_across_page_boundaries_lose_and_double_nothing() {
    let rig = Harness::scripted(config(3, "")).await;
    rig.cycle().await; // empty baseline
    for i in 0..10 {
        rig.source.put(
            &format!("r{i:02}"),
            "2024-06-01T10:00:00Z",
            "2024-06-01T10:00:00Z",
            customer("A", "B"),
        );
    }
    let r = rig.cycle().await;
    assert_eq!((r.pages, r.created), (4, 10), "{r:?}");
    // More records with the very same second as the cursor appear later (a late commit in the
    // same second): the overlap re-reads the second and only the new ones are published.
    for i in 10..13 {
        rig.source.put(
            &format!("r{i:02}"),
            "2024-06-01T10:00:00Z",
            "2024-06-01T10:00:00Z",
            customer("A", "B"),
        );
    }
    let r = rig.cycle().await;
    assert_eq!((r.created, r.unchanged), (3, 10), "{r:?}");
    assert_eq!(rig.sink.messages().len(), 13);
    rig.sink.assert_unique();
}

#[tokio::test]
async fn late_commit_within_the_overlap_is_found() {
    let rig = Harness::scripted(config(100, "")).await;
    rig.source.put(
        "a",
        "2024-06-01T10:00:00Z",
        "2024-06-01T10:00:00Z",
        customer("A", "B"),
    );
    rig.cycle().await;
    rig.source.put(
        "b",
        "2024-06-01T10:05:00Z",
        "2024-06-01T10:05:00Z",
        customer("B", "B"),
    );
    // A transaction that started earlier commits after the poll passed its timestamp.
    rig.source.put_row(Row {
        id: "late".into(),
        created: t("2024-06-01T10:04:30Z"),
        updated: t("2024-06-01T10:04:30Z"),
        fields: customer("L", "X"),
        class: None,
        visible: false,
    });
    rig.cycle().await;
    assert_eq!(rig.sink.summary().len(), 1, "only b was visible");
    rig.source.commit("late");
    let r = rig.cycle().await;
    assert_eq!(r.created, 1, "the overlap (60 s) reaches 30 s back: {r:?}");
    assert_eq!(rig.sink.messages().last().unwrap().body.id, "late");
    rig.sink.assert_unique();
}

#[tokio::test]
async fn a_failed_page_keeps_the_cursor_and_the_next_poll_completes() {
    let rig = Harness::scripted(config(2, "")).await;
    rig.cycle().await;
    for i in 0..5 {
        rig.source.put(
            &format!("x{i}"),
            "2024-06-01T10:00:00Z",
            &format!("2024-06-01T10:00:0{i}Z"),
            customer("A", "B"),
        );
    }
    rig.source.fail_from(Some(
        rig.source.fetches.load(std::sync::atomic::Ordering::SeqCst) + 2,
    ));
    let err = rig
        .poller("customers")
        .poll(&TraceContext::random(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, PollError::Source(_)), "{err}");
    assert!(err.to_string().contains("HTTP 503"), "{err}");
    rig.publisher().drain().await.unwrap();
    assert_eq!(
        rig.sink.messages().len(),
        2,
        "the first page was committed and published"
    );
    rig.source.fail_from(None);
    rig.cycle().await;
    assert_eq!(rig.sink.messages().len(), 5);
    rig.sink.assert_unique();
}

#[tokio::test]
async fn restart_in_the_middle_of_a_resource_loses_and_doubles_nothing() {
    let mut rig = Harness::scripted(config(2, "")).await;
    rig.cycle().await;
    for i in 0..7 {
        rig.source.put(
            &format!("y{i}"),
            "2024-06-01T10:00:00Z",
            "2024-06-01T10:00:00Z",
            customer("A", "B"),
        );
    }
    // SIGTERM arrives while page 2 is being fetched: the poll finishes that page and stops.
    let stop = CancellationToken::new();
    let calls = rig.source.fetches.load(std::sync::atomic::Ordering::SeqCst);
    rig.source.cancel_at(calls + 2, stop.clone());
    let r = rig
        .poller("customers")
        .poll(&TraceContext::random(), &stop)
        .await
        .unwrap();
    assert_eq!((r.pages, r.created), (2, 4));
    rig.restart().await;
    rig.cycle().await;
    let got: HashSet<String> = rig
        .sink
        .messages()
        .iter()
        .map(|m| m.body.id.clone())
        .collect();
    assert_eq!(got.len(), 7, "{:?}", rig.sink.summary());
    rig.sink.assert_unique();
}

#[tokio::test]
async fn crash_between_detection_and_publication_delivers_everything_once() {
    let mut rig = Harness::scripted(config(100, "")).await;
    rig.cycle().await;
    for i in 0..4 {
        rig.source.put(
            &format!("z{i}"),
            "2024-06-01T10:00:00Z",
            "2024-06-01T10:00:00Z",
            customer("A", "B"),
        );
    }
    rig.sink.set_mode(SinkMode::FailTransient);
    rig.poller("customers")
        .poll(&TraceContext::random(), &CancellationToken::new())
        .await
        .unwrap();
    assert!(rig.publisher().drain().await.is_err(), "the sink is down");
    assert_eq!(
        rig.store.outbox_stats().await.unwrap().depth,
        4,
        "changes wait in the outbox"
    );
    // The process dies here. A new one starts, the sink is back.
    rig.restart().await;
    rig.sink.set_mode(SinkMode::Accept);
    rig.cycle().await;
    assert_eq!(rig.sink.messages().len(), 4);
    assert_eq!(rig.store.outbox_stats().await.unwrap().depth, 0);
    rig.sink.assert_unique();
}

#[tokio::test]
async fn a_message_repeats_only_when_the_sink_never_acknowledged_it() {
    let rig = Harness::scripted(config(100, "")).await;
    rig.cycle().await;
    rig.source.put(
        "q",
        "2024-06-01T10:00:00Z",
        "2024-06-01T10:00:00Z",
        customer("A", "B"),
    );
    rig.sink.set_mode(SinkMode::DeliverThenFail);
    rig.poller("customers")
        .poll(&TraceContext::random(), &CancellationToken::new())
        .await
        .unwrap();
    assert!(rig.publisher().drain().await.is_err());
    rig.sink.set_mode(SinkMode::Accept);
    rig.publisher().drain().await.unwrap();
    let msgs = rig.sink.messages();
    assert_eq!(
        msgs.len(),
        2,
        "delivered twice because the first ack was lost"
    );
    assert_eq!(
        msgs[0].message_id, msgs[1].message_id,
        "with the same message id (Service Bus drops the repeat)"
    );
}

#[tokio::test]
async fn unreadable_records_are_skipped_and_the_poll_goes_on() {
    let rig = Harness::scripted(config(100, "")).await;
    rig.cycle().await;
    rig.source.put(
        "ok",
        "2024-06-01T10:00:00Z",
        "2024-06-01T10:00:00Z",
        customer("A", "B"),
    );
    rig.source.raw_extra.lock().unwrap().extend([
        json!({"first_name": "no id", "updated_at": "2024-06-01T10:00:00Z"}),
        json!({"id": "no-date"}),
        json!({"id": "bad-date", "updated_at": "01/06/2024"}),
    ]);
    let r = rig.cycle().await;
    assert_eq!((r.skipped, r.created), (3, 1), "{r:?}");
}

/// Polls with `poller` (a resource changed by hand) and drains the outbox.
async fn poll_with(
    rig: &Harness<pollbus_testkit::scripted::ScriptedSource>,
    poller: &Poller,
) -> pollbus::poll::PollReport {
    let r = poller
        .poll(&TraceContext::random(), &CancellationToken::new())
        .await
        .unwrap();
    rig.publisher().drain().await.unwrap();
    r
}

fn with_rev(fields: serde_json::Value, rev: u64) -> serde_json::Value {
    let mut fields = fields;
    fields["rev"] = json!(rev);
    fields
}

#[tokio::test]
async fn stale_copies_are_ignored_when_a_revision_proves_them_older() {
    let rig = Harness::scripted(config(100, "")).await;
    let mut poller = rig.poller("customers");
    let resource = std::sync::Arc::get_mut(&mut poller.resource).unwrap();
    resource.reader.revision = Some(pollbus::record::FieldPath::parse("rev").unwrap());
    rig.source.put(
        "s",
        "2024-06-01T10:00:00Z",
        "2024-06-01T10:00:10Z",
        with_rev(customer("A", "B"), 3),
    );
    poll_with(&rig, &poller).await;
    // A lagging replica serves an older version within the overlap window: older or equal
    // date, lower revision.
    for date in ["2024-06-01T10:00:05Z", "2024-06-01T10:00:10Z"] {
        rig.source.put(
            "s",
            "2024-06-01T10:00:00Z",
            date,
            with_rev(customer("Old", "B"), 2),
        );
        let r = poll_with(&rig, &poller).await;
        assert_eq!((r.stale, r.messages()), (1, 0), "{date}: {r:?}");
    }
    // A later revision under an earlier date (another node's clock) is a real change.
    rig.source.put(
        "s",
        "2024-06-01T10:00:00Z",
        "2024-06-01T10:00:08Z",
        with_rev(customer("New", "B"), 4),
    );
    let r = poll_with(&rig, &poller).await;
    assert_eq!((r.updated, r.stale), (1, 0), "{r:?}");
    assert_eq!(
        rig.sink.summary(),
        vec![(2, "s".into(), "FirstName".into())]
    );
}

#[tokio::test]
async fn an_update_dated_earlier_is_published_when_nothing_proves_it_older() {
    let rig = Harness::scripted(config(100, "")).await;
    rig.source.put(
        "s",
        "2024-06-01T10:00:00Z",
        "2024-06-01T10:00:10Z",
        customer("A", "B"),
    );
    rig.cycle().await;
    // Another vendor node, its clock 5 s behind, stamps the next change.
    rig.source.put(
        "s",
        "2024-06-01T10:00:00Z",
        "2024-06-01T10:00:05Z",
        customer("Skewed", "B"),
    );
    let r = rig.cycle().await;
    assert_eq!((r.updated, r.stale), (1, 0), "{r:?}");
    let stamps: Vec<String> = rig
        .sink
        .messages()
        .iter()
        .map(|m| m.body.timestamp.clone())
        .collect();
    assert_eq!(stamps.len(), 1);
    assert_eq!(t(&stamps[0]), t("2024-06-01T10:00:05Z"));
    // The overlap reads it again: nothing more.
    let r = rig.cycle().await;
    assert_eq!((r.messages(), r.unchanged), (0, 1), "{r:?}");
    // The price without a revision: had that been a lagging replica, the current copy read
    // next corrects the value with one more UPDATE.
    rig.source.put(
        "s",
        "2024-06-01T10:00:00Z",
        "2024-06-01T10:00:10Z",
        customer("A", "B"),
    );
    let r = rig.cycle().await;
    assert_eq!(r.updated, 1, "{r:?}");
}

#[tokio::test]
async fn records_changed_while_the_baseline_is_read_are_published() {
    let rig = Harness::scripted(config(2, "")).await;
    for n in 1..=6 {
        rig.source.put(
            &n.to_string(),
            "2024-01-01T00:00:00Z",
            &format!("2024-01-0{n}T00:00:00Z"),
            customer(&format!("n{n}"), "Oslo"),
        );
    }
    // While page 2 is being fetched (the clock says 12:00): record 6, not read yet, and
    // record 1, already remembered, change; record 7 is created.
    let row = |id: &str, created: &str, updated: &str, name: &str| Row {
        id: id.into(),
        created: t(created),
        updated: t(updated),
        fields: customer(name, "Oslo"),
        class: None,
        visible: true,
    };
    rig.source.put_at_fetch(
        2,
        row("6", "2024-01-01T00:00:00Z", "2024-06-01T12:00:30Z", "six"),
    );
    rig.source.put_at_fetch(
        2,
        row("1", "2024-01-01T00:00:00Z", "2024-06-01T12:00:31Z", "one"),
    );
    rig.source.put_at_fetch(
        2,
        row("7", "2024-06-01T12:00:32Z", "2024-06-01T12:00:32Z", "seven"),
    );
    let r = rig.cycle().await;
    assert_eq!(
        (r.baseline, r.created, r.updated),
        (5, 1, 2),
        "records 1-5 are the baseline; 6, 1 and 7 changed during it: {r:?}"
    );
    let mut got = rig.sink.summary();
    got.sort();
    assert_eq!(
        got,
        vec![
            (1, "7".into(), "FirstName,City,Vip".into()),
            (2, "1".into(), "FirstName".into()),
            (2, "6".into(), "FirstName,City,Vip".into()),
        ]
    );
    // The next poll (the overlap re-reads 1, 6 and 7) publishes nothing more.
    let r = rig.cycle().await;
    assert_eq!(r.messages(), 0, "{r:?}");
}

#[tokio::test]
async fn audit_and_reconcile_together_emit_one_delete() {
    // Only ServiceNow has a delete audit; the scripted source plays one for the engine.
    let mut config = config(100, r#"reconcile_interval = "1m""#);
    config.sources[0].resources[0].deletes = pollbus::config::DeleteMode::Both;
    let rig = Harness::scripted(config).await;
    rig.source.put(
        "d1",
        "2024-01-01T00:00:00Z",
        "2024-01-01T00:00:00Z",
        customer("A", "B"),
    );
    rig.source.put(
        "d2",
        "2024-01-01T00:00:00Z",
        "2024-01-01T00:00:00Z",
        customer("C", "D"),
    );
    rig.source.put(
        "keep",
        "2024-01-01T00:00:00Z",
        "2024-01-01T00:00:00Z",
        customer("E", "F"),
    );
    rig.cycle().await;
    rig.source.delete("d1", "2024-06-01T11:00:00Z", true); // audited
    rig.source.delete("d2", "2024-06-01T11:00:00Z", false); // table cleaner: no audit row
    rig.advance(chrono::Duration::minutes(5));
    let r = rig.cycle().await;
    assert_eq!(r.deleted, 2, "{r:?}");
    rig.advance(chrono::Duration::minutes(5));
    let r = rig.cycle().await;
    assert_eq!(
        r.deleted, 0,
        "the audit row is re-read in the overlap but the snapshot is gone"
    );
    let deletes: Vec<_> = rig
        .sink
        .summary()
        .into_iter()
        .filter(|(k, _, _)| *k == 3)
        .collect();
    assert_eq!(deletes.len(), 2);
    assert_eq!(
        rig.sink
            .messages()
            .iter()
            .find(|m| m.body.id == "d1")
            .unwrap()
            .body
            .timestamp,
        "2024-06-01T11:00:00Z"
    );
}

#[tokio::test]
async fn reconciliation_that_would_delete_too_much_is_refused() {
    let rig = Harness::scripted(config(
        100,
        r#"deletes = "reconcile"
  reconcile_interval = "1m""#,
    ))
    .await;
    for i in 0..4 {
        rig.source.put(
            &format!("k{i}"),
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00Z",
            customer("A", "B"),
        );
    }
    rig.cycle().await;
    *rig.source.empty_listing.lock().unwrap() = true;
    rig.advance(chrono::Duration::minutes(5));
    let err = rig
        .poller("customers")
        .poll(&TraceContext::random(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("would delete 4 of 4 known records"),
        "{err}"
    );
    assert_eq!(
        rig.store
            .snapshot_count(&pollbus::store::ResourceKey::new("crm", "customers"))
            .await
            .unwrap(),
        4
    );
}

#[tokio::test]
async fn rejected_messages_go_to_the_dead_table_and_can_be_retried() {
    let rig = Harness::scripted(config(100, "")).await;
    rig.cycle().await;
    for id in ["p1", "p2", "p3"] {
        rig.source.put(
            id,
            "2024-06-01T10:00:00Z",
            "2024-06-01T10:00:00Z",
            customer("A", "B"),
        );
    }
    rig.sink.reject_entity_id("p2");
    rig.cycle().await;
    assert_eq!(
        rig.sink
            .summary()
            .iter()
            .map(|s| s.1.as_str())
            .collect::<Vec<_>>(),
        ["p1", "p3"]
    );
    let dead = rig.store.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message.body.id, "p2");
    assert_eq!(dead[0].reason, "message for p2 is too large");
    rig.sink.clear_rejections();
    assert_eq!(rig.store.retry_dead(None).await.unwrap(), 1);
    rig.publisher().drain().await.unwrap();
    assert_eq!(rig.sink.messages().last().unwrap().body.id, "p2");
    assert_eq!(rig.store.outbox_stats().await.unwrap().dead, 0);
}

/// Outbox rows for `entity` (topic `api.event.<entity>`), written as a page of another
/// resource would write them.
async fn outbox_rows(rig: &Harness<ScriptedSource>, entity: &str, ids: &[&str]) {
    let messages = ids
        .iter()
        .map(|id| {
            let change = Change {
                kind: EventType::Create,
                id: id.to_string(),
                timestamp: t("2024-06-01T10:00:00Z"),
                changed: vec![("Name".into(), json!("x"))],
                on_behalf_of: None,
                version: "1".into(),
            };
            let ctx = MessageContext {
                source: "s",
                source_system: "CRM",
                entity,
                topic_prefix: "api.event.",
            };
            Message::build(&change, &ctx, &TraceContext::random())
        })
        .collect();
    rig.store
        .commit_page(
            &ResourceKey::new("s", entity),
            PageCommit {
                at: t("2024-06-01T12:00:00Z"),
                messages,
                ..Default::default()
            },
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_missing_topic_pauses_only_that_topic_and_dead_letters_nothing() {
    let mut config = config(100, "");
    config.outbox.batch_size = 2;
    let rig = Harness::scripted(config).await;
    // The paused topic's rows are the oldest and more than a batch: read oldest-first across
    // topics, they would fill every batch window.
    outbox_rows(&rig, "company", &["c1", "c2", "c3", "c4", "c5"]).await;
    outbox_rows(&rig, "account", &["a1", "a2", "a3"]).await;
    rig.sink.reject_topic("api.event.company");
    let metrics = Arc::new(Metrics::new());
    let publisher = rig.publisher().with_metrics(metrics.clone());
    let report = publisher.drain().await.unwrap();
    assert_eq!((report.published, report.dead), (3, 0), "{report:?}");
    assert_eq!(
        report.blocked,
        [("api.event.company".to_string(), TopicBlock::NotFound)]
    );
    let stats = rig.store.outbox_stats().await.unwrap();
    assert_eq!((stats.depth, stats.dead), (5, 0), "the topic's rows wait");
    let gauge = |reason: &str| {
        metrics
            .topic_blocked
            .with_label_values(&["api.event.company", reason])
            .get()
    };
    assert_eq!(gauge("not_found"), 1);
    let ids: Vec<String> = rig
        .sink
        .messages()
        .iter()
        .map(|m| m.body.id.clone())
        .collect();
    assert_eq!(ids, ["a1", "a2", "a3"]);

    // New rows of the healthy topic keep flowing while the other stays paused.
    outbox_rows(&rig, "account", &["a4"]).await;
    publisher.drain().await.unwrap();
    assert_eq!(rig.sink.messages().last().unwrap().body.id, "a4");

    // Fixed: after the topic's backoff (5–20 ms here) it is retried and resumes, in order.
    rig.sink.clear_rejections();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let report = publisher.drain().await.unwrap();
    assert_eq!((report.published, report.dead), (5, 0), "{report:?}");
    assert!(report.blocked.is_empty());
    assert_eq!(gauge("not_found"), 0);
    let ids: Vec<String> = rig.sink.messages()[4..]
        .iter()
        .map(|m| m.body.id.clone())
        .collect();
    assert_eq!(ids, ["c1", "c2", "c3", "c4", "c5"]);
    assert_eq!(rig.store.outbox_stats().await.unwrap().depth, 0);
}

#[tokio::test]
async fn max_rows_counts_per_topic_so_a_paused_topic_stops_only_its_resources() {
    let mut config = config(100, "");
    config.outbox.max_rows = 2;
    config.outbox.batch_size = 2;
    let rig = Harness::scripted(config).await;
    rig.poll("customers").await;
    // Another topic's rows, stuck (its topic is missing), beyond max_rows.
    outbox_rows(&rig, "company", &["c1", "c2", "c3"]).await;
    rig.sink.reject_topic("api.event.company");
    rig.source.put(
        "m",
        "2024-06-01T10:00:00Z",
        "2024-06-01T10:00:00Z",
        customer("A", "B"),
    );
    let r = rig.cycle().await;
    assert!(!r.paused, "customers has its own share: {r:?}");
    assert_eq!(r.created, 1);
    assert_eq!(rig.sink.messages().last().unwrap().body.id, "m");
    assert_eq!(
        rig.store
            .outbox_depth_in("api.event.company")
            .await
            .unwrap(),
        3
    );
}

#[tokio::test]
async fn polling_pauses_while_the_outbox_is_full() {
    let mut config = config(100, "");
    config.outbox.max_rows = 2;
    config.outbox.batch_size = 2;
    let rig = Harness::scripted(config).await;
    rig.cycle().await;
    for i in 0..3 {
        rig.source.put(
            &format!("f{i}"),
            "2024-06-01T10:00:00Z",
            "2024-06-01T10:00:00Z",
            customer("A", "B"),
        );
    }
    rig.sink.set_mode(SinkMode::FailTransient);
    let poller = rig.poller("customers");
    let r = poller
        .poll(&TraceContext::random(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(r.created, 3);
    rig.source.put(
        "f9",
        "2024-06-01T10:01:00Z",
        "2024-06-01T10:01:00Z",
        customer("A", "B"),
    );
    let r = poller
        .poll(&TraceContext::random(), &CancellationToken::new())
        .await
        .unwrap();
    assert!(r.paused && r.records == 0, "{r:?}");
    rig.sink.set_mode(SinkMode::Accept);
    rig.publisher().drain().await.unwrap();
    let r = rig.cycle().await;
    assert_eq!(r.created, 1, "nothing was lost while paused");
}

#[tokio::test]
async fn child_class_records_are_left_to_the_child_resource() {
    let rig = Harness::scripted(config(100, "")).await;
    let mut poller = rig.poller("customers");
    let resource = std::sync::Arc::get_mut(&mut poller.resource).unwrap();
    resource.skip_classes = vec!["customer_contact".into()];
    resource.reader.class = Some(pollbus::record::FieldPath::parse("sys_class_name").unwrap());
    poller
        .poll(&TraceContext::random(), &CancellationToken::new())
        .await
        .unwrap();
    rig.source.put_row(Row {
        id: "child".into(),
        created: t("2024-06-01T10:00:00Z"),
        updated: t("2024-06-01T10:00:00Z"),
        fields: customer("A", "B"),
        class: Some("customer_contact".into()),
        visible: true,
    });
    let r = poller
        .poll(&TraceContext::random(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((r.delegated, r.messages()), (1, 0), "{r:?}");
}

/// Injected: first a broker outage (every publish fails transiently for 15 rounds), then one
/// message the broker keeps timing out on (`poison`) while changes of other records keep
/// arriving. The outage dead-letters nothing and loses nothing; the poison message moves to the
/// dead table after `outbox.max_attempts` (10) failures that each came after other messages
/// were accepted, naming why; every other change is published.
#[tokio::test]
async fn a_message_the_broker_keeps_refusing_is_dead_lettered_and_the_others_flow() {
    let rig = Harness::scripted(config(100, "")).await;
    rig.cycle().await;
    // One long-lived publisher, as the daemon has.
    let publisher = rig.publisher();
    let poll = || async {
        rig.poller("customers")
            .poll(&TraceContext::random(), &CancellationToken::new())
            .await
            .unwrap()
    };
    let at = |s: i64| (t("2024-06-01T10:00:00Z") + chrono::Duration::seconds(s)).to_rfc3339();

    rig.sink.set_mode(SinkMode::FailTransient);
    rig.source.put("o1", &at(1), &at(1), customer("A", "B"));
    rig.source.put("o2", &at(1), &at(1), customer("A", "B"));
    poll().await;
    for _ in 0..15 {
        assert!(publisher.drain().await.is_err(), "the broker is down");
    }
    assert_eq!(
        rig.store.outbox_stats().await.unwrap().dead,
        0,
        "an outage is not poison"
    );
    rig.sink.set_mode(SinkMode::Accept);

    rig.sink.fail_entity_id("poison");
    rig.source.put("poison", &at(2), &at(2), customer("P", "Q"));
    poll().await;
    let mut rounds = 0;
    while rig.store.dead_letters(10).await.unwrap().is_empty() {
        rounds += 1;
        assert!(rounds <= 40, "the poison message was never dead-lettered");
        let _ = publisher.drain().await;
        let id = format!("n{rounds}");
        rig.advance(chrono::Duration::seconds(10));
        rig.source
            .put(&id, &at(10 + rounds), &at(10 + rounds), customer("N", "M"));
        poll().await;
    }
    publisher.drain().await.expect("nothing else is stuck");
    assert!(
        rounds >= 9,
        "dead-lettered only after max_attempts: {rounds} rounds"
    );
    let dead = rig.store.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message.body.id, "poison");
    assert!(
        dead[0]
            .reason
            .starts_with("failed 10 times while other messages were accepted"),
        "{}",
        dead[0].reason
    );
    let published: HashSet<String> = rig
        .sink
        .messages()
        .iter()
        .map(|m| m.body.id.clone())
        .collect();
    for i in 1..=rounds {
        assert!(published.contains(&format!("n{i}")), "n{i} published");
    }
    assert!(published.contains("o1") && published.contains("o2"));
    assert_eq!(rig.store.outbox_stats().await.unwrap().depth, 0);
}

/// A page store that holds each page commit until the source has been asked for the page
/// after it (or 1 s passes): the poll's next fetch must not wait for the commit.
struct CommitWaitsForNextFetch {
    inner: Arc<dyn pollbus::store::Store>,
    source: Arc<ScriptedSource>,
    /// The source's fetch count when the poll began.
    fetches_at_start: u32,
    /// Commits seen, and for each whether the next fetch had begun before it finished.
    overlapped: std::sync::Mutex<Vec<bool>>,
}

#[async_trait::async_trait]
impl pollbus::store::OutboxGauge for CommitWaitsForNextFetch {
    async fn outbox_stats(
        &self,
    ) -> Result<pollbus::store::OutboxStats, pollbus::store::StoreError> {
        self.inner.outbox_stats().await
    }
    async fn outbox_depth_in(&self, topic: &str) -> Result<u64, pollbus::store::StoreError> {
        self.inner.outbox_depth_in(topic).await
    }
}

#[async_trait::async_trait]
impl pollbus::store::PageStore for CommitWaitsForNextFetch {
    async fn resource_state(
        &self,
        key: &ResourceKey,
    ) -> Result<Option<pollbus::store::ResourceState>, pollbus::store::StoreError> {
        self.inner.resource_state(key).await
    }
    async fn snapshots(
        &self,
        key: &ResourceKey,
        ids: &[String],
    ) -> Result<
        std::collections::HashMap<String, pollbus::detect::Snapshot>,
        pollbus::store::StoreError,
    > {
        self.inner.snapshots(key, ids).await
    }
    async fn commit_page(
        &self,
        key: &ResourceKey,
        page: PageCommit,
    ) -> Result<(), pollbus::store::StoreError> {
        use std::sync::atomic::Ordering;
        // Commit k of the poll: the fetch of page k + 2 (counting from 1) should have begun.
        let k = self.overlapped.lock().unwrap().len() as u32;
        let wanted = self.fetches_at_start + k + 2;
        let mut overlapped = false;
        for _ in 0..100 {
            if self.source.fetches.load(Ordering::SeqCst) >= wanted {
                overlapped = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.overlapped.lock().unwrap().push(overlapped);
        self.inner.commit_page(key, page).await
    }
    async fn reconcile_mark(
        &self,
        key: &ResourceKey,
        run: i64,
        ids: &[String],
        fence: Option<&pollbus::store::Fence>,
    ) -> Result<(), pollbus::store::StoreError> {
        self.inner.reconcile_mark(key, run, ids, fence).await
    }
    async fn reconcile_miss(
        &self,
        key: &ResourceKey,
        run: i64,
        before: chrono::DateTime<chrono::Utc>,
        fence: Option<&pollbus::store::Fence>,
    ) -> Result<u64, pollbus::store::StoreError> {
        self.inner.reconcile_miss(key, run, before, fence).await
    }
    async fn reconcile_absent(
        &self,
        key: &ResourceKey,
        run: i64,
        before: chrono::DateTime<chrono::Utc>,
        min_missed: u32,
    ) -> Result<Vec<(String, pollbus::detect::Snapshot)>, pollbus::store::StoreError> {
        self.inner
            .reconcile_absent(key, run, before, min_missed)
            .await
    }
    async fn snapshot_count(&self, key: &ResourceKey) -> Result<u64, pollbus::store::StoreError> {
        self.inner.snapshot_count(key).await
    }
    async fn summaries(
        &self,
    ) -> Result<Vec<pollbus::store::ResourceSummary>, pollbus::store::StoreError> {
        self.inner.summaries().await
    }

    async fn request_resync(
        &self,
        key: &ResourceKey,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), pollbus::store::StoreError> {
        self.inner.request_resync(key, at).await
    }
}

/// Pipelining: while page N is committed, page N+1 is already being fetched. The store holds
/// every commit until the fetch after it has begun; a poll that fetched only after committing
/// would wait out each hold (1 s) and the overlap list would say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_page_is_fetched_while_a_page_commits() {
    let rig = Harness::scripted(config(2, "")).await;
    rig.cycle().await;
    for i in 0..7 {
        rig.source.put(
            &format!("p{i}"),
            "2024-06-01T10:00:00Z",
            &format!("2024-06-01T10:00:0{i}Z"),
            customer("A", "B"),
        );
    }
    let store = Arc::new(CommitWaitsForNextFetch {
        inner: rig.store.clone(),
        source: rig.source.clone(),
        fetches_at_start: rig.source.fetches.load(std::sync::atomic::Ordering::SeqCst),
        overlapped: Default::default(),
    });
    let mut poller = rig.poller("customers");
    poller.store = store.clone();
    let report = poller
        .poll(&TraceContext::random(), &CancellationToken::new())
        .await
        .unwrap();
    // 7 records at page size 2: pages of 2, 2, 2, 1
    assert_eq!((report.pages, report.messages()), (4, 7));
    let overlapped = store.overlapped.lock().unwrap().clone();
    assert_eq!(
        overlapped,
        [true, true, true, false],
        "each commit but the last ran while the next page was being fetched"
    );
    rig.publisher().drain().await.unwrap();
    assert_eq!(rig.sink.messages().len(), 7);
    rig.sink.assert_unique();
}
