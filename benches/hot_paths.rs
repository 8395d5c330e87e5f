//! Micro-benchmarks of the per-record hot paths (issue 9): URL template rendering, vendor date
//! parsing, the record diff on a realistic ServiceNow record unchanged and changed, and message
//! encoding. The record is the recorded incident (92 columns) cut to what pollbus asks for with
//! `sysparm_fields`: 60 tracked columns plus sys_id, sys_updated_on, sys_created_on,
//! sys_class_name and sys_updated_by. Run with
//! `cargo bench --bench hot_paths`; criterion prints the numbers.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::Value;

use pollbus::contract::{Message, MessageContext, TraceContext};
use pollbus::detect::{Detector, OnBehalfOfSource, Phase};
use pollbus::formats::datefmt::{JavaDateFormat, Zone};
use pollbus::formats::template::UrlTemplate;
use pollbus::record::{DateParser, FieldPath, RecordReader};

/// The allocator the `pollbus` binary uses, so the figures match it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct SnDates(JavaDateFormat);

impl DateParser for SnDates {
    fn parse(&self, value: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, String> {
        self.0
            .parse_optional(value, &Zone::Utc)
            .map_err(|e| e.to_string())
    }
}

fn fixture() -> (String, Value) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/reference/fixtures/servicenow/table_incident_page.json"
    );
    let text = std::fs::read_to_string(path)
        .expect("fixture (the shared reference folder beside the repository)");
    let page: Value = serde_json::from_str(&text).unwrap();
    let full = page["result"][0].as_object().unwrap();
    let tracked = full.keys().filter(|k| !k.starts_with("sys_")).take(60);
    let system = [
        "sys_id",
        "sys_updated_on",
        "sys_created_on",
        "sys_class_name",
        "sys_updated_by",
    ];
    let record: serde_json::Map<String, Value> = tracked
        .map(String::as_str)
        .chain(system)
        .map(|k| (k.to_string(), full[k].clone()))
        .collect();
    let record = Value::Object(record);
    (record.to_string(), record)
}

fn setup(record: &Value) -> (RecordReader, Detector) {
    let fields: Vec<(String, FieldPath)> = record
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| !k.starts_with("sys_"))
        .take(60)
        .map(|k| (k.clone(), FieldPath::parse(k).unwrap()))
        .collect();
    assert_eq!(
        fields.len(),
        60,
        "the fixture has 60 non-system fields to track"
    );
    let dates = || {
        Box::new(SnDates(
            JavaDateFormat::compile("yyyy-MM-dd HH:mm:ss").unwrap(),
        )) as Box<dyn DateParser>
    };
    let reader = RecordReader {
        id: FieldPath::parse("sys_id").unwrap(),
        updated: FieldPath::parse("sys_updated_on").unwrap(),
        updated_format: dates(),
        created: Some(FieldPath::parse("sys_created_on").unwrap()),
        created_format: dates(),
        class: Some(FieldPath::parse("sys_class_name").unwrap()),
        revision: Some(FieldPath::parse("sys_mod_count").unwrap()),
    };
    let detector = Detector::new(fields, OnBehalfOfSource::None, Duration::from_secs(1));
    (reader, detector)
}

fn benches(c: &mut Criterion) {
    let now = chrono::DateTime::parse_from_rfc3339("2024-07-01T12:00:00.123Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let template = UrlTemplate::compile(
        "/hubs/employee/employees?where=updated_date__gte='${DateTimeZone:PST:yyyy-MM-dd'T'HH:mm:ss.SSS}'",
        &Zone::Utc,
    )
    .unwrap();
    c.bench_function("template/render Revel seed URL", |b| {
        b.iter(|| black_box(template.render(black_box(now))))
    });

    let sn = JavaDateFormat::compile("yyyy-MM-dd HH:mm:ss").unwrap();
    c.bench_function("dates/ServiceNow yyyy-MM-dd HH:mm:ss", |b| {
        b.iter(|| {
            black_box(
                sn.parse(black_box("2024-05-01 10:00:00"), &Zone::Utc)
                    .unwrap(),
            )
        })
    });
    let revel = JavaDateFormat::compile("yyyy-MM-dd'T'HH:mm:ss.SSSSSS").unwrap();
    let pst = Zone::parse("PST").unwrap();
    c.bench_function("dates/Revel microseconds in PST", |b| {
        b.iter(|| {
            black_box(
                revel
                    .parse(black_box("2018-08-20T17:39:00.149863"), &pst)
                    .unwrap(),
            )
        })
    });

    let (text, record) = fixture();
    let (reader, detector) = setup(&record);
    let snapshot = detector
        .detect(&reader.read(record.clone()).unwrap(), None, Phase::Steady)
        .snapshot
        .unwrap();
    let mut changed = record.clone();
    let tracked = detector.fields()[0].0.clone();
    changed[tracked.as_str()] = Value::String("changed by the benchmark".into());
    changed["sys_updated_on"] = Value::String("2030-01-01 00:00:00".into());
    let changed_text = changed.to_string();

    let mut group = c.benchmark_group("record (65 fields as fetched, 60 tracked)");
    group.throughput(Throughput::Elements(1));
    group.bench_function("serde_json parse only (baseline)", |b| {
        b.iter(|| black_box(serde_json::from_str::<Value>(black_box(&text)).unwrap()))
    });
    group.bench_function("parse + read + fingerprint compare, unchanged", |b| {
        b.iter(|| {
            let raw: Value = serde_json::from_str(black_box(&text)).unwrap();
            let r = reader.read(raw).unwrap();
            black_box(detector.detect(&r, Some(&snapshot), Phase::Steady))
        })
    });
    group.bench_function("parse + read + fingerprint compare, changed", |b| {
        b.iter(|| {
            let raw: Value = serde_json::from_str(black_box(&changed_text)).unwrap();
            let r = reader.read(raw).unwrap();
            black_box(detector.detect(&r, Some(&snapshot), Phase::Steady))
        })
    });
    group.finish();

    // A vendor that returns every column (Revel, Concur, REST): the whole recorded incident,
    // 92 columns, 10 of them tracked. The page is read keeping only the keys in use
    // (`source::narrow`); the unchanged path is that parse + read + fingerprint compare.
    let full_text = {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/reference/fixtures/servicenow/table_incident_page.json"
        );
        let page: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        page["result"][0].to_string()
    };
    let full: Value = serde_json::from_str(&full_text).unwrap();
    let (wide_reader, _) = setup(&record);
    let wide_fields: Vec<(String, FieldPath)> = detector.fields()[..10].to_vec();
    let wide_detector = Detector::new(wide_fields, OnBehalfOfSource::None, Duration::from_secs(1));
    let keep = pollbus::source::narrow::RecordKeys::of(
        [&wide_reader.id, &wide_reader.updated]
            .into_iter()
            .chain(wide_reader.created.as_ref())
            .chain(wide_reader.class.as_ref())
            .chain(wide_reader.revision.as_ref())
            .chain(wide_detector.fields().iter().map(|(_, p)| p)),
    );
    let page_text = format!("{{\"result\":[{full_text}]}}");
    let wide_snapshot = wide_detector
        .detect(
            &wide_reader.read(full.clone()).unwrap(),
            None,
            Phase::Steady,
        )
        .snapshot
        .unwrap();
    let mut group = c.benchmark_group("wide record (92 columns as fetched, 10 tracked)");
    group.throughput(Throughput::Elements(1));
    group.bench_function("serde_json parse only (baseline)", |b| {
        b.iter(|| black_box(serde_json::from_str::<Value>(black_box(&page_text)).unwrap()))
    });
    group.bench_function("narrow parse only", |b| {
        b.iter(|| {
            black_box(pollbus::source::narrow::parse_page(
                black_box(page_text.as_bytes()),
                "/result",
                &keep,
            ))
        })
    });
    group.bench_function(
        "narrow parse + read + fingerprint compare, unchanged",
        |b| {
            b.iter(|| {
                let (_, mut records) = pollbus::source::narrow::parse_page(
                    black_box(page_text.as_bytes()),
                    "/result",
                    &keep,
                )
                .unwrap();
                let r = wide_reader.read(records.pop().unwrap()).unwrap();
                black_box(wide_detector.detect(&r, Some(&wide_snapshot), Phase::Steady))
            })
        },
    );
    group.finish();

    let r = reader.read(changed.clone()).unwrap();
    let change = match detector.detect(&r, Some(&snapshot), Phase::Steady).outcome {
        pollbus::detect::Outcome::Changed(c) => c,
        other => panic!("expected a change, got {other:?}"),
    };
    let ctx = MessageContext {
        source: "sn",
        source_system: "ServiceNow",
        entity: "incident",
        topic_prefix: "api.event.",
    };
    let trace = TraceContext::random();
    c.bench_function("message/build + JSON line", |b| {
        b.iter(|| {
            let m = Message::build(black_box(&change), &ctx, &trace);
            black_box(serde_json::to_vec(&m).unwrap())
        })
    });
    let message = Message::build(&change, &ctx, &trace);
    c.bench_function("message/AMQP encode (Service Bus sink)", |b| {
        b.iter(|| {
            let amqp = pollbus::sink::servicebus::to_amqp(black_box(&message), true, false);
            black_box(azure_core_amqp::AmqpMessage::serialize(&amqp).unwrap())
        })
    });
}

criterion_group!(hot_paths, benches);
criterion_main!(hot_paths);
