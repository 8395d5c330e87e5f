//! Send, receive and settle through Microsoft's Rust AMQP crate (`azure_core_amqp`, on
//! fe2o3-amqp), the stack pollbus's Service Bus sink uses.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azure_core::{credentials::Secret, time::OffsetDateTime, Uuid};
use azure_core_amqp::{
    AmqpClaimsBasedSecurity, AmqpClaimsBasedSecurityApis, AmqpConnection, AmqpConnectionApis,
    AmqpDelivery, AmqpDeliveryApis, AmqpDeliveryOutcome, AmqpDescribedError, AmqpMessage,
    AmqpOrderedMap, AmqpReceiver, AmqpReceiverApis, AmqpReceiverOptions, AmqpSendOptions,
    AmqpSendOutcome, AmqpSender, AmqpSenderApis, AmqpSession, AmqpSessionApis, AmqpSessionOptions,
    AmqpSimpleValue, AmqpSource, AmqpSymbol, AmqpTimestamp, AmqpValue, ReceiverSettleMode,
};
use servicebus_emulator::{sas, server, Config, Emulator, EntityCounts};
use url::Url;

const CONFIG: &str = r#"{"UserConfig":{"Namespaces":[{"Name":"ns",
  "Queues":[{"Name":"orders","Properties":{"MaxDeliveryCount":3,"LockDuration":"PT30S"}}],
  "Topics":[{"Name":"events","Subscriptions":[{"Name":"s1"},{"Name":"s2"}]}]}]}}"#;

struct Client {
    base: String,
    connection: AmqpConnection,
    session: AmqpSession,
    cbs: AmqpClaimsBasedSecurity,
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

impl Client {
    async fn connect(emulator: &Emulator) -> Client {
        Client::connect_with(emulator, None).await
    }

    async fn connect_with(emulator: &Emulator, options: Option<AmqpSessionOptions>) -> Client {
        // With both rustls providers in the build, rustls refuses to guess.
        let _ = rustls::crypto::ring::default_provider().install_default();
        init_logs();
        let base = format!("amqp://{}", emulator.addr());
        let connection = AmqpConnection::new();
        connection
            .open("rust-sdk-test".into(), Url::parse(&base).unwrap(), None)
            .await
            .expect("connection opens");
        let session = AmqpSession::new();
        session
            .begin(&connection, options)
            .await
            .expect("session begins");
        let cbs = AmqpClaimsBasedSecurity::new(session.clone()).expect("cbs");
        cbs.attach().await.expect("cbs attaches");
        Client {
            base,
            connection,
            session,
            cbs,
        }
    }

    async fn authorize(&self, entity: &str, key: &str) -> azure_core_amqp::Result<()> {
        self.authorize_for(entity, key, 1800).await
    }

    async fn authorize_for(
        &self,
        entity: &str,
        key: &str,
        secs: u64,
    ) -> azure_core_amqp::Result<()> {
        let audience = format!("{}/{entity}", self.base);
        let expires = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + secs;
        let token = sas::make_token(&audience, server::DEFAULT_KEY_NAME, key, expires);
        self.cbs
            .authorize_path(
                audience,
                Some("servicebus.windows.net:sastoken".into()),
                &Secret::new(token),
                OffsetDateTime::now_utc() + Duration::from_secs(1800),
            )
            .await
    }

    async fn sender(&self, entity: &str) -> azure_core_amqp::Result<AmqpSender> {
        let sender = AmqpSender::new();
        sender
            .attach(
                &self.session,
                format!("send-{entity}"),
                format!("{}/{entity}", self.base),
                None,
            )
            .await?;
        Ok(sender)
    }

    async fn receiver(&self, entity: &str) -> azure_core_amqp::Result<AmqpReceiver> {
        let receiver = AmqpReceiver::new();
        let source = AmqpSource::builder()
            .with_address(format!("{}/{entity}", self.base))
            .build();
        let options = AmqpReceiverOptions {
            receiver_settle_mode: Some(ReceiverSettleMode::Second),
            name: Some(format!("recv-{entity}-{}", Uuid::new_v4())),
            ..Default::default()
        };
        receiver
            .attach(&self.session, source, Some(options))
            .await?;
        Ok(receiver)
    }
}

fn emulator_config() -> Config {
    Config::from_json_str(CONFIG).unwrap()
}

fn message(body: &str, id: &str) -> AmqpMessage {
    AmqpMessage::builder()
        .with_body(body.as_bytes().to_vec())
        .with_properties(azure_core_amqp::message::AmqpMessageProperties {
            message_id: Some(id.into()),
            content_type: Some(AmqpSymbol::from("application/json")),
            ..Default::default()
        })
        .add_application_property("string".into(), "Bjørn — 東京")
        .add_application_property("long".into(), 1i64 << 40)
        .add_application_property("ulong".into(), u64::MAX)
        .add_application_property("short".into(), -3i16)
        .add_application_property("byte".into(), 7u8)
        .add_application_property("double".into(), 2.5f64)
        .add_application_property("float".into(), 0.5f32)
        .add_application_property("bool".into(), true)
        .add_application_property("char".into(), 'ß')
        .add_application_property("uuid".into(), Uuid::from_u128(0x1234))
        .add_application_property("binary".into(), vec![0u8, 255, 7])
        .add_application_property(
            "timestamp".into(),
            AmqpTimestamp::from(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
        )
        .build()
}

fn body_text(delivery: &AmqpDelivery) -> String {
    match &delivery.message().body {
        azure_core_amqp::message::AmqpMessageBody::Binary(parts) => {
            String::from_utf8(parts.concat()).unwrap()
        }
        other => panic!("unexpected body {other:?}"),
    }
}

fn app_prop<'a>(delivery: &'a AmqpDelivery, key: &str) -> &'a AmqpSimpleValue {
    delivery
        .message()
        .application_properties
        .as_ref()
        .and_then(|p| p.0.get(key))
        .unwrap_or_else(|| panic!("application property {key} present"))
}

/// Polls an entity's counts until `done` holds or 10 s pass; returns the last counts.
async fn eventually(
    emulator: &Emulator,
    entity: &str,
    done: impl Fn(EntityCounts) -> bool,
) -> EntityCounts {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let counts = emulator.counts(entity).expect("entity exists");
        if done(counts) || tokio::time::Instant::now() >= deadline {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn receive(receiver: &AmqpReceiver) -> AmqpDelivery {
    tokio::time::timeout(Duration::from_secs(10), receiver.receive_delivery())
        .await
        .expect("a delivery within 10 s")
        .expect("delivery")
}

#[tokio::test]
async fn send_receive_settle_through_azure_core_amqp() {
    let emulator = Emulator::start(emulator_config()).await.unwrap();
    let client = Client::connect(&emulator).await;
    client
        .authorize("orders", server::DEFAULT_KEY)
        .await
        .expect("SAS token accepted");

    let sender = client.sender("orders").await.expect("sender attaches");
    assert_eq!(
        sender.max_message_size().await.unwrap(),
        Some(server::DEFAULT_MAX_MESSAGE_SIZE)
    );
    for (body, id) in [
        ("{\"n\":1}", "m1"),
        ("{\"n\":2}", "m2"),
        ("{\"n\":3}", "m3"),
    ] {
        let outcome = sender.send(message(body, id), None).await.expect("send");
        assert!(
            matches!(outcome, AmqpSendOutcome::Accepted),
            "send not accepted"
        );
    }
    assert_eq!(emulator.counts("orders").unwrap().active, 3);

    let receiver = client.receiver("orders").await.expect("receiver attaches");

    // Complete: every property type survives, and the delivery tag is the GUID lock token.
    let d = receive(&receiver).await;
    assert_eq!(body_text(&d), "{\"n\":1}");
    assert_eq!(
        d.delivery_tag().len(),
        16,
        "lock token delivery tag is a 16-byte GUID"
    );
    let annotations = d
        .message()
        .delivery_annotations
        .as_ref()
        .expect("delivery annotations");
    let lock_token = annotations
        .0
        .iter()
        .find_map(|(k, v)| match (k, v) {
            (azure_core_amqp::message::AmqpAnnotationKey::Symbol(s), AmqpValue::Uuid(u))
                if s.0 == "x-opt-lock-token" =>
            {
                Some(*u)
            }
            _ => None,
        })
        .expect("x-opt-lock-token annotation");
    assert_eq!(
        d.delivery_tag().to_vec(),
        lock_token.to_bytes_le().to_vec(),
        "tag = lock token in .NET byte order"
    );
    assert_eq!(
        app_prop(&d, "string"),
        &AmqpSimpleValue::String("Bjørn — 東京".into())
    );
    assert_eq!(app_prop(&d, "long"), &AmqpSimpleValue::Long(1 << 40));
    assert_eq!(app_prop(&d, "ulong"), &AmqpSimpleValue::ULong(u64::MAX));
    assert_eq!(app_prop(&d, "short"), &AmqpSimpleValue::Short(-3));
    assert_eq!(app_prop(&d, "byte"), &AmqpSimpleValue::UByte(7));
    assert_eq!(app_prop(&d, "double"), &AmqpSimpleValue::Double(2.5));
    assert_eq!(app_prop(&d, "float"), &AmqpSimpleValue::Float(0.5));
    assert_eq!(app_prop(&d, "bool"), &AmqpSimpleValue::Boolean(true));
    assert_eq!(app_prop(&d, "char"), &AmqpSimpleValue::Char('ß'));
    assert_eq!(
        app_prop(&d, "uuid"),
        &AmqpSimpleValue::Uuid(Uuid::from_u128(0x1234))
    );
    assert_eq!(
        app_prop(&d, "binary"),
        &AmqpSimpleValue::Binary(vec![0, 255, 7])
    );
    assert_eq!(
        app_prop(&d, "timestamp"),
        &AmqpSimpleValue::TimeStamp(AmqpTimestamp::from(
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)
        ))
    );
    receiver.accept_delivery(&d).await.expect("complete");

    // Abandon: redelivered with delivery count + 1. The receiver's credit means the third
    // message is already on its way, so take both before abandoning the second.
    let d = receive(&receiver).await;
    assert_eq!(body_text(&d), "{\"n\":2}");
    let third = receive(&receiver).await;
    assert_eq!(body_text(&third), "{\"n\":3}");
    let first_count = d
        .message()
        .header
        .as_ref()
        .map(|h| h.delivery_count)
        .unwrap_or(0);
    receiver
        .settle_delivery(
            &d,
            AmqpDeliveryOutcome::Modified {
                delivery_failed: Some(true),
                undeliverable_here: Some(false),
                message_annotations: None,
            },
        )
        .await
        .expect("abandon");
    let again = receive(&receiver).await;
    assert_eq!(
        body_text(&again),
        "{\"n\":2}",
        "abandoned message redelivered"
    );
    assert_eq!(
        again.message().header.as_ref().unwrap().delivery_count,
        first_count + 1
    );
    receiver.accept_delivery(&again).await.expect("complete");

    // Dead-letter with reason and description.
    let d = third;
    let mut info = AmqpOrderedMap::new();
    info.insert(
        AmqpSymbol::from("DeadLetterReason"),
        AmqpValue::String("rust-reason".into()),
    );
    info.insert(
        AmqpSymbol::from("DeadLetterErrorDescription"),
        AmqpValue::String("rust description".into()),
    );
    let error = AmqpDescribedError::new(
        AmqpSymbol::from("com.microsoft:dead-letter").into(),
        Some("rust description".into()),
        info,
    );
    receiver
        .settle_delivery(&d, AmqpDeliveryOutcome::Rejected(Some(error)))
        .await
        .expect("dead-letter");

    // Settlements travel asynchronously (fe2o3 does not wait for the broker's echo).
    let counts = eventually(&emulator, "orders", |c| {
        (c.active, c.locked, c.dead_letter) == (0, 0, 1)
    })
    .await;
    assert_eq!(
        (counts.active, counts.locked, counts.dead_letter),
        (0, 0, 1),
        "{counts:?}"
    );

    client
        .authorize("orders/$deadletterqueue", server::DEFAULT_KEY)
        .await
        .expect("DLQ token");
    let dlq = client
        .receiver("orders/$DeadLetterQueue")
        .await
        .expect("DLQ receiver attaches");
    let d = receive(&dlq).await;
    assert_eq!(body_text(&d), "{\"n\":3}");
    assert_eq!(
        app_prop(&d, "DeadLetterReason"),
        &AmqpSimpleValue::String("rust-reason".into())
    );
    assert_eq!(
        app_prop(&d, "DeadLetterErrorDescription"),
        &AmqpSimpleValue::String("rust description".into())
    );
    dlq.accept_delivery(&d).await.expect("complete from DLQ");
    let counts = eventually(&emulator, "orders", |c| c == EntityCounts::default()).await;
    assert_eq!(counts, EntityCounts::default());

    client.connection.close().await.expect("close");
}

#[tokio::test]
async fn batch_envelope_fans_out_to_every_subscription() {
    let emulator = Emulator::start(emulator_config()).await.unwrap();
    let client = Client::connect(&emulator).await;
    client
        .authorize("events", server::DEFAULT_KEY)
        .await
        .unwrap();
    let sender = client.sender("events").await.unwrap();
    // Service Bus batch: message format 0x80013700, one encoded message per data section.
    let parts: Vec<Vec<u8>> = (0..3)
        .map(|i| AmqpMessage::serialize(&message(&format!("batch-{i}"), &format!("b{i}"))).unwrap())
        .collect();
    let envelope = AmqpMessage::builder().with_body(parts).build();
    let options = AmqpSendOptions {
        message_format: Some(0x8001_3700),
        settled: None,
    };
    let outcome = sender.send(envelope, Some(options)).await.unwrap();
    assert!(
        matches!(outcome, AmqpSendOutcome::Accepted),
        "send not accepted"
    );
    for sub in ["events/Subscriptions/s1", "events/Subscriptions/s2"] {
        assert_eq!(
            emulator.counts(sub).unwrap().active,
            3,
            "{sub} got the whole batch"
        );
    }
    let receiver = client.receiver("events/Subscriptions/s2").await.unwrap();
    for i in 0..3 {
        let d = receive(&receiver).await;
        assert_eq!(body_text(&d), format!("batch-{i}"));
        assert_eq!(
            app_prop(&d, "string"),
            &AmqpSimpleValue::String("Bjørn — 東京".into())
        );
        receiver.accept_delivery(&d).await.unwrap();
    }
    let counts = eventually(&emulator, "events/Subscriptions/s2", |c| {
        c == EntityCounts::default()
    })
    .await;
    assert_eq!(counts, EntityCounts::default());
}

#[tokio::test]
async fn refusals_wrong_key_unauthorized_unknown_and_oversize() {
    let emulator = Emulator::start(emulator_config()).await.unwrap();
    let client = Client::connect(&emulator).await;

    assert!(
        client.authorize("orders", "not-the-key").await.is_err(),
        "wrong SAS key refused"
    );
    assert!(
        client.sender("orders").await.is_err(),
        "attach without a valid token refused"
    );

    let client = Client::connect(&emulator).await;
    client
        .authorize("orders", server::DEFAULT_KEY)
        .await
        .unwrap();
    client.authorize("nope", server::DEFAULT_KEY).await.unwrap();
    assert!(
        client.sender("nope").await.is_err(),
        "unknown entity refused"
    );

    let sender = client.sender("orders").await.unwrap();
    let big = AmqpMessage::builder()
        .with_body(vec![b'x'; 300 * 1024])
        .build();
    let refused = !matches!(sender.send(big, None).await, Ok(AmqpSendOutcome::Accepted));
    assert!(refused, "a 300 KB message is refused");
    assert_eq!(emulator.counts("orders").unwrap().active, 0);
}

#[tokio::test]
async fn restart_keeps_the_address_and_loses_messages() {
    let mut emulator = Emulator::start(emulator_config()).await.unwrap();
    let addr = emulator.addr();
    {
        let client = Client::connect(&emulator).await;
        client
            .authorize("orders", server::DEFAULT_KEY)
            .await
            .unwrap();
        let sender = client.sender("orders").await.unwrap();
        sender.send(message("x", "r1"), None).await.unwrap();
    }
    assert_eq!(emulator.counts("orders").unwrap().active, 1);
    emulator.restart().await.unwrap();
    assert_eq!(emulator.addr(), addr);
    assert_eq!(
        emulator.counts("orders").unwrap().active,
        0,
        "in-memory: a restart loses messages"
    );
    let client = Client::connect(&emulator).await;
    client
        .authorize("orders", server::DEFAULT_KEY)
        .await
        .unwrap();
    client
        .sender("orders")
        .await
        .expect("the restarted emulator serves");
    emulator.stop().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "stopped emulator refuses connections"
    );
}

#[tokio::test]
async fn expired_token_detaches_the_link() {
    let emulator = Emulator::start(emulator_config()).await.unwrap();
    let client = Client::connect(&emulator).await;
    client
        .authorize_for("orders", server::DEFAULT_KEY, 2)
        .await
        .unwrap();
    let sender = client.sender("orders").await.unwrap();
    // The token's `se` is whole seconds, so it lapses within 1–2 s; the emulator checks every 200 ms.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // fe2o3 may not notice the detach before it transfers; then no outcome ever comes back.
    let sent = tokio::time::timeout(
        Duration::from_secs(5),
        sender.send(message("late", "t1"), None),
    )
    .await;
    assert!(
        !matches!(sent, Ok(Ok(AmqpSendOutcome::Accepted))),
        "a send after the token expired must not be accepted"
    );
    assert_eq!(emulator.counts("orders").unwrap().active, 0);
}

/// A ~100 KB message spans several frames both ways; with the session windows Service Bus
/// SDKs use (`u32::MAX` incoming and outgoing) it must still go through and come back intact.
#[tokio::test]
async fn multi_frame_transfer_with_unbounded_session_windows() {
    let emulator = Emulator::start(emulator_config()).await.unwrap();
    let client = Client::connect_with(
        &emulator,
        Some(AmqpSessionOptions::with_unbounded_windows()),
    )
    .await;
    client
        .authorize("orders", server::DEFAULT_KEY)
        .await
        .unwrap();
    let sender = client.sender("orders").await.unwrap();
    let receiver = client.receiver("orders").await.unwrap();
    for round in 0..3u8 {
        let body: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8 ^ round).collect();
        let sent = tokio::time::timeout(
            Duration::from_secs(10),
            sender.send(AmqpMessage::builder().with_body(body.clone()).build(), None),
        )
        .await
        .expect("a multi-frame send completes within 10 s")
        .expect("send");
        assert!(matches!(sent, AmqpSendOutcome::Accepted), "round {round}");
        let d = receive(&receiver).await;
        let azure_core_amqp::message::AmqpMessageBody::Binary(parts) = &d.message().body else {
            panic!("binary body expected");
        };
        assert_eq!(parts.concat(), body, "round {round}: body intact");
        receiver.accept_delivery(&d).await.unwrap();
    }
    let counts = eventually(&emulator, "orders", |c| c == EntityCounts::default()).await;
    assert_eq!(counts, EntityCounts::default());
}
