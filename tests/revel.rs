//! The Revel source through real HTTP against the simulator and real SQLite: detection,
//! anchored limit/offset paging with and without `meta.next`, PST dates across DST changes,
//! reconciled deletes, and errors that leave the cursor where it was.

use serde_json::json;

use pollbus::poll::PollError;
use pollbus::source::SourceError;
use pollbus_testkit::revel::{timesheet, Fault, RevelSim, API_AUTHENTICATION};
use pollbus_testkit::{param, t, Harness};

fn config(base: &str, page_size: u32, credentials: &str, extra: &str) -> String {
    format!(
        r#"
[[sources]]
name = "revel"
kind = "revel"
base_url = "{base}"
source_system = "Revel"
overlap = "60s"
page_size = {page_size}
max_attempts = 3
auth = {{ kind = "header", name = "API-AUTHENTICATION", value = "{credentials}" }}
  [[sources.resources]]
  name = "TimeSheetEntry"
  entity = "timesheet"
  fields = {{ ClockIn = "clock_in", ClockOut = "clock_out", Role = "role_name", Employee = "employee" }}
  on_behalf_of = {{ value = "Revel" }}
  deletes = "reconcile"
  dates = {{ updated_timezone = "PST", created_timezone = "PST" }}
  {extra}
"#
    )
}

async fn harness(sim: &RevelSim, page_size: u32, extra: &str) -> Harness {
    Harness::vendor(
        &config(sim.base_url(), page_size, API_AUTHENTICATION, extra),
        t("2024-06-01T12:00:00Z"),
    )
    .await
}

const ENTRY: &str = "TimeSheetEntry";

#[tokio::test]
async fn create_update_delete_end_to_end() {
    let sim = RevelSim::start(chrono_tz::America::Los_Angeles).await;
    let at = |s: &str| t(s);
    sim.insert(
        ENTRY,
        1829,
        at("2024-05-01T10:00:00.637966Z"),
        timesheet(3964, "Cashier", None),
    );
    let h = harness(&sim, 100, "").await;
    let r = h.poll(ENTRY).await;
    assert_eq!((r.baseline, r.messages()), (1, 0), "{r:?}");

    // The capture pair: 1829 clocks out, 1830 is created.
    sim.update(
        ENTRY,
        1829,
        at("2024-05-01T10:07:52.149863Z"),
        json!({"clock_out": "2018-08-20T17:38:00"}),
    );
    sim.insert(
        ENTRY,
        1830,
        at("2024-05-01T10:07:40.176497Z"),
        timesheet(3965, "Cook", None),
    );
    let r = h.poll(ENTRY).await;
    assert_eq!((r.created, r.updated), (1, 1), "{r:?}");
    let msgs = h.sink.messages();
    let create = msgs.iter().find(|m| m.body.id == "1830").unwrap();
    assert_eq!(create.body.even_type.code(), 1);
    assert_eq!(create.body.changed_fields, "ClockIn,ClockOut,Role,Employee");
    assert_eq!(create.body.timestamp, "2024-05-01T10:07:40.176497Z");
    assert_eq!(create.body.on_behalf_of.as_deref(), Some("Revel"));
    assert_eq!(create.topic, "api.event.timesheet");
    let update = msgs.iter().find(|m| m.body.id == "1829").unwrap();
    assert_eq!(
        (
            update.body.even_type.code(),
            update.body.changed_fields.as_str()
        ),
        (2, "ClockOut")
    );
    assert_eq!(update.body.timestamp, "2024-05-01T10:07:52.149863Z");

    // The request: JSON, ordered by (updated, id), the filter in the establishment's zone
    // (PDT here: cursor 03:00:00.637966 PDT minus the 60 s overlap).
    let last = sim
        .requests()
        .into_iter()
        .rev()
        .find(|r| param(r, "updated_date__gte").is_some())
        .unwrap();
    assert!(last.starts_with("/resources/TimeSheetEntry/?"), "{last}");
    assert_eq!(param(&last, "format").as_deref(), Some("json"));
    let order_by: Vec<String> =
        url::form_urlencoded::parse(last.split_once('?').map_or("", |(_, q)| q).as_bytes())
            .filter(|(k, _)| k == "order_by")
            .map(|(_, v)| v.into_owned())
            .collect();
    assert_eq!(order_by, ["updated_date", "id"], "one order_by per field");
    assert_eq!(param(&last, "limit").as_deref(), Some("100"));
    assert_eq!(param(&last, "offset").as_deref(), Some("0"));
    assert_eq!(
        param(&last, "updated_date__gte").as_deref(),
        Some("2024-05-01T02:59:00.637966")
    );

    // Delete 1830; the next reconciliation (due after reconcile_interval) finds it gone.
    sim.delete(ENTRY, 1830);
    h.advance(chrono::Duration::hours(2));
    let r = h.poll(ENTRY).await;
    assert_eq!(r.deleted, 1, "{r:?}");
    let delete = h.sink.messages().pop().unwrap();
    assert_eq!(
        (
            delete.body.even_type.code(),
            delete.body.id.as_str(),
            delete.body.changed_fields.as_str()
        ),
        (3, "1830", "")
    );
    let listing = sim
        .requests()
        .into_iter()
        .rev()
        .find(|r| param(r, "order_by").as_deref() == Some("id"))
        .unwrap();
    assert_eq!(
        param(&listing, "updated_date__gte"),
        None,
        "the listing has no time filter"
    );
}

#[tokio::test]
async fn pages_with_and_without_meta_next() {
    for with_next in [false, true] {
        let sim = RevelSim::start(chrono_tz::Asia::Bangkok).await;
        sim.set_meta_next(with_next);
        // Seven records, three sharing one updated date across a page boundary.
        for (id, at) in [
            (1, "2024-05-01T10:00:00Z"),
            (2, "2024-05-01T10:00:01Z"),
            (3, "2024-05-01T10:00:02Z"),
            (4, "2024-05-01T10:00:02Z"),
            (5, "2024-05-01T10:00:02Z"),
            (6, "2024-05-01T10:00:03Z"),
            (7, "2024-05-01T10:00:04Z"),
        ] {
            sim.insert(ENTRY, id, t(at), timesheet(3964, "Cashier", None));
        }
        let h = harness(&sim, 2, "initial = \"emit\"").await;
        let r = h.poll(ENTRY).await;
        assert_eq!(r.created, 7, "with_next={with_next}: {r:?}");
        let mut ids: Vec<String> = h
            .sink
            .messages()
            .iter()
            .map(|m| m.body.id.clone())
            .collect();
        ids.sort();
        assert_eq!(ids, ["1", "2", "3", "4", "5", "6", "7"]);
        // Pages of two, anchored on the last updated date (local time, UTC+7): the second page
        // restarts at 17:00:01 (one seen there), the third at 17:00:02 (two seen), the fourth
        // at 17:00:03 (one seen).
        let fetches: Vec<(String, String)> = sim
            .requests()
            .iter()
            .filter_map(|r| Some((param(r, "updated_date__gte")?, param(r, "offset")?)))
            .collect();
        assert_eq!(
            fetches[1..],
            [
                ("2024-05-01T17:00:01".to_string(), "1".to_string()),
                ("2024-05-01T17:00:02".to_string(), "2".to_string()),
                ("2024-05-01T17:00:03".to_string(), "1".to_string()),
            ],
            "with_next={with_next}"
        );
        assert_eq!(r.pages, 4, "with_next={with_next}: {r:?}");
    }
}

#[tokio::test]
async fn a_server_side_cap_on_limit_is_followed() {
    for with_next in [false, true] {
        let sim = RevelSim::start(chrono_tz::America::Los_Angeles).await;
        sim.set_meta_next(with_next);
        sim.set_max_limit(2);
        for id in 1..=5 {
            let at = t(&format!("2024-05-01T10:00:0{id}Z"));
            sim.insert(ENTRY, id, at, timesheet(1, "Cook", None));
        }
        let h = harness(&sim, 100, "initial = \"emit\"").await;
        let r = h.poll(ENTRY).await;
        assert_eq!((r.records, r.pages), (5, 3), "with_next={with_next}: {r:?}");
    }
}

#[tokio::test]
async fn an_api_ignoring_filters_stops_the_poll_instead_of_looping() {
    let sim = RevelSim::start(chrono_tz::America::Los_Angeles).await;
    for id in 1..=5 {
        let at = t(&format!("2024-05-01T10:00:0{id}Z"));
        sim.insert(ENTRY, id, at, timesheet(1, "Cook", None));
    }
    let h = harness(&sim, 2, "").await;
    sim.ignore_filters();
    let poll = tokio::time::timeout(std::time::Duration::from_secs(30), h.try_poll(ENTRY));
    let err = poll
        .await
        .expect("no endless paging")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the API ignored updated_date__gte=2024-05-01T03:00:03"),
        "{err}"
    );
    assert_eq!(
        h.cursor(ENTRY).await,
        Some(t("2024-05-01T10:00:03Z")),
        "the pages before are kept"
    );
    // The id listing has the same guard (reconciliation runs after a successful poll).
    let listing = h.source.list_ids(&h.resource(ENTRY), Some("2")).await;
    let err = listing.unwrap_err().to_string();
    assert!(
        err.contains("the API ignored id__gt=2 (id 1 came back)"),
        "{err}"
    );
}

#[tokio::test]
async fn a_record_updated_while_paging_is_not_skipped() {
    let sim = RevelSim::start(chrono_tz::America::Los_Angeles).await;
    for id in 1..=4 {
        sim.insert(
            ENTRY,
            id,
            t(&format!("2024-05-01T10:00:0{id}Z")),
            timesheet(1, "Cook", None),
        );
    }
    let h = harness(&sim, 2, "").await;
    h.poll(ENTRY).await;
    for id in 1..=4 {
        sim.update(
            ENTRY,
            id,
            t(&format!("2024-05-01T11:00:0{id}Z")),
            json!({"stage": 1, "role_name": "Chef"}),
        );
    }
    // Page 1 is read, then record 1 changes again before page 2: plain offsets would now skip
    // record 3; the anchored offset reads 3 and 4, then 1 again.
    let source = h.source.clone();
    let resource = h.resource(ENTRY);
    let page1 = source
        .fetch(&resource, t("2024-05-01T10:59:00Z"), None)
        .await
        .unwrap();
    assert_eq!(
        page1
            .records
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2]
    );
    sim.update(
        ENTRY,
        1,
        t("2024-05-01T11:30:00Z"),
        json!({"role_name": "Head chef"}),
    );
    let page2 = source
        .fetch(&resource, t("2024-05-01T10:59:00Z"), page1.next.as_deref())
        .await
        .unwrap();
    assert_eq!(
        page2
            .records
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [3, 4]
    );
    let page3 = source
        .fetch(&resource, t("2024-05-01T10:59:00Z"), page2.next.as_deref())
        .await
        .unwrap();
    assert_eq!(
        page3
            .records
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [1]
    );
    assert_eq!(page3.next, None);
}

#[tokio::test]
async fn pst_dates_across_dst_changes() {
    let sim = RevelSim::start(chrono_tz::America::Los_Angeles).await;
    let h = harness(&sim, 100, "").await;
    sim.insert(
        ENTRY,
        1,
        t("2024-03-10T08:00:00Z"),
        timesheet(1, "Cook", None),
    );
    h.poll(ENTRY).await;

    // Spring forward (2024-03-10 02:00 PST → 03:00 PDT): 01:30 PST and 03:30 PDT are an hour apart.
    sim.insert(
        ENTRY,
        2,
        t("2024-03-10T09:30:00Z"),
        timesheet(2, "Cook", None),
    );
    sim.insert(
        ENTRY,
        3,
        t("2024-03-10T10:30:00.5Z"),
        timesheet(3, "Cook", None),
    );
    let r = h.poll(ENTRY).await;
    assert_eq!(r.created, 2, "{r:?}");
    let stamp = |id: &str| {
        h.sink
            .messages()
            .iter()
            .rev()
            .find(|m| m.body.id == id)
            .unwrap()
            .body
            .timestamp
            .clone()
    };
    assert_eq!(stamp("2"), "2024-03-10T09:30:00Z", "01:30 PST");
    assert_eq!(stamp("3"), "2024-03-10T10:30:00.500Z", "03:30:00.5 PDT");

    // Fall back (2024-11-03 02:00 PDT → 01:00 PST). A record at 01:50 PDT moves the cursor;
    // one written at 01:20 PST (later, but with a lower local time) must still be found.
    // pollbus's clock moves to that night too (dates ahead of it by more than max_clock_skew
    // would not move the cursor).
    h.advance(t("2024-11-03T09:30:00Z") - h.clock.now());
    sim.insert(
        ENTRY,
        4,
        t("2024-11-03T08:50:00Z"),
        timesheet(4, "Cook", None),
    );
    let r = h.poll(ENTRY).await;
    assert_eq!(r.created, 1, "{r:?}");
    assert_eq!(stamp("4"), "2024-11-03T08:50:00Z", "01:50 PDT");
    assert_eq!(h.cursor(ENTRY).await, Some(t("2024-11-03T08:50:00Z")));
    sim.clear_requests();
    sim.insert(
        ENTRY,
        5,
        t("2024-11-03T09:20:00Z"),
        timesheet(5, "Cook", None),
    );
    let r = h.poll(ENTRY).await;
    assert_eq!(
        r.created, 1,
        "the record in the repeated hour is found: {r:?}"
    );
    let request = &sim.requests()[0];
    assert_eq!(
        param(request, "updated_date__gte").as_deref(),
        Some("2024-11-03T00:49:00.000000"),
        "one fold before 01:49 PDT"
    );
    // Its local time 01:20 is ambiguous; the documented rule reads the earlier instant (PDT).
    assert_eq!(stamp("5"), "2024-11-03T08:20:00Z");
    assert_eq!(
        h.cursor(ENTRY).await,
        Some(t("2024-11-03T08:50:00Z")),
        "an ambiguous time never moves the cursor past what the vendor has"
    );
}

async fn assert_fails_keeping_cursor(h: &Harness, expect: &[&str]) {
    let before = h.cursor(ENTRY).await;
    let sent = h.sink.messages().len();
    let err = h.try_poll(ENTRY).await.unwrap_err();
    let text = err.to_string();
    for e in expect {
        assert!(text.contains(e), "{e:?} not in {text}");
    }
    assert!(!text.contains("revel-secret"), "{text}");
    assert!(
        matches!(err, PollError::Source(SourceError::Vendor { .. })),
        "{err:?}"
    );
    assert_eq!(h.cursor(ENTRY).await, before, "cursor unchanged");
    assert_eq!(h.sink.messages().len(), sent, "nothing published");
}

#[tokio::test]
async fn errors_are_clear_and_leave_the_cursor_unchanged() {
    let sim = RevelSim::start(chrono_tz::America::Los_Angeles).await;
    sim.insert(
        ENTRY,
        1,
        t("2024-05-01T10:00:00Z"),
        timesheet(1, "Cook", None),
    );
    let h = harness(&sim, 100, "").await;
    h.poll(ENTRY).await;
    sim.update(
        ENTRY,
        1,
        t("2024-05-01T11:00:00Z"),
        json!({"role_name": "Chef"}),
    );

    sim.inject(Fault::Malformed, 1);
    assert_fails_keeping_cursor(
        &h,
        &[
            "GET http://",
            "/resources/TimeSheetEntry/",
            "malformed JSON",
        ],
    )
    .await;
    sim.inject(Fault::WrongShape, 1);
    assert_fails_keeping_cursor(&h, &["\"objects\" array"]).await;
    sim.inject(Fault::Status(503), 3);
    assert_fails_keeping_cursor(&h, &["HTTP 503", "Service temporarily unavailable"]).await;
    // A 429 with Retry-After is waited out within the poll.
    sim.inject(Fault::RateLimited { retry_after: 1 }, 1);
    let r = h.poll(ENTRY).await;
    assert_eq!(r.updated, 1, "{r:?}");
    assert_eq!(h.cursor(ENTRY).await, Some(t("2024-05-01T11:00:00Z")));

    // Wrong credentials: 401, not retried, the secret never shown.
    let bad = Harness::vendor(
        &config(sim.base_url(), 100, "revel-key:wrong-secret", ""),
        t("2024-06-01T12:00:00Z"),
    )
    .await;
    let err = bad.try_poll(ENTRY).await.unwrap_err().to_string();
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(
        err.contains("credentials were not provided or are invalid"),
        "{err}"
    );
    assert!(!err.contains("wrong-secret"), "{err}");
    assert_eq!(bad.cursor(ENTRY).await, None);
}

/// The simulator is as strict as stock Tastypie about `order_by`: a comma list is one unknown
/// field name and is refused with Tastypie's error; one parameter per field is accepted.
#[tokio::test]
async fn the_simulator_refuses_a_comma_list_in_order_by_as_tastypie_does() {
    let sim = RevelSim::start(chrono_tz::America::Los_Angeles).await;
    sim.insert(ENTRY, 1, t("2024-05-01T10:00:00Z"), timesheet(1, "v", None));
    let get = |query: &str| {
        let url = format!("{}/resources/{ENTRY}/?format=json&{query}", sim.base_url());
        async move {
            let response = reqwest::Client::new()
                .get(url)
                .header("API-AUTHENTICATION", API_AUTHENTICATION)
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let (status, body) = get("order_by=updated_date,id").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("No matching 'updated_date,id' field for ordering on."),
        "{body}"
    );
    let (status, body) = get("order_by=updated_date&order_by=id").await;
    assert_eq!(status, 200, "{body}");
}
