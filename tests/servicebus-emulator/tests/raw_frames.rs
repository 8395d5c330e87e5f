//! Raw AMQP frames against the emulator: encodings no SDK in this repository produces (the
//! JavaScript SDK's string-keyed rejected `info`), and frames the emulator cannot map, which
//! must cost the sender its link or session, never the connection.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fe2o3_amqp_types::{
    definitions::{AmqpError, ErrorCondition, Role},
    messaging::{DeliveryState, MessageId, Properties},
    performatives::Performative,
};
use serde_amqp::{described::Described, descriptor::Descriptor, primitives::OrderedMap, Value};
use servicebus_emulator::{codec, sas, server, AmqpMessage, Config, Emulator};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const CONFIG: &str =
    r#"{"UserConfig":{"Namespaces":[{"Name":"ns","Queues":[{"Name":"orders"}]}]}}"#;

fn described(code: u64, fields: Vec<Value>) -> Value {
    Value::Described(Box::new(Described {
        descriptor: Descriptor::Code(code),
        value: Value::List(fields),
    }))
}

fn string(s: &str) -> Value {
    Value::String(s.into())
}

fn map(entries: Vec<(Value, Value)>) -> Value {
    let mut m = OrderedMap::new();
    for (k, v) in entries {
        m.insert(k, v);
    }
    Value::Map(m)
}

/// An attach of the client's link `name` on `handle`; `client_sends` picks the role.
fn attach(name: &str, handle: u32, client_sends: bool, address: &str, peer: &str) -> Value {
    let (source, target) = if client_sends {
        (peer, address)
    } else {
        (address, peer)
    };
    described(
        0x12,
        vec![
            string(name),
            Value::Uint(handle),
            Value::Bool(!client_sends),
            Value::Ubyte(0), // snd-settle-mode unsettled
            Value::Ubyte(1), // rcv-settle-mode second
            described(0x28, vec![string(source)]),
            described(0x29, vec![string(target)]),
            Value::Null,
            Value::Bool(false),
            if client_sends {
                Value::Uint(0)
            } else {
                Value::Null
            },
        ],
    )
}

/// `begin` (no remote channel, next-outgoing-id 0, windows of 5000).
fn begin() -> Value {
    described(
        0x11,
        vec![
            Value::Null,
            Value::Uint(0),
            Value::Uint(5000),
            Value::Uint(5000),
        ],
    )
}

fn flow(handle: u32, delivery_count: u32, credit: u32) -> Value {
    described(
        0x13,
        vec![
            Value::Uint(1),
            Value::Uint(5000),
            Value::Uint(0),
            Value::Uint(5000),
            Value::Uint(handle),
            Value::Uint(delivery_count),
            Value::Uint(credit),
        ],
    )
}

struct Raw {
    stream: TcpStream,
}

impl Raw {
    async fn connect(emulator: &Emulator) -> Raw {
        let mut stream = TcpStream::connect(emulator.addr()).await.unwrap();
        stream.write_all(&codec::AMQP_HEADER).await.unwrap();
        let mut header = [0u8; 8];
        stream.read_exact(&mut header).await.unwrap();
        assert_eq!(header, codec::AMQP_HEADER);
        let mut raw = Raw { stream };
        raw.send(0, &described(0x10, vec![string("raw-client")]), &[])
            .await;
        raw.expect(|p| matches!(p, Performative::Open(_))).await;
        raw.begin(0).await;
        raw
    }

    /// Begins a session on `channel` (windows of 5000) and waits for the emulator's begin.
    async fn begin(&mut self, channel: u16) {
        self.send(channel, &begin(), &[]).await;
        self.expect(|p| matches!(p, Performative::Begin(_))).await;
    }

    async fn send(&mut self, channel: u16, performative: &Value, payload: &[u8]) {
        let body = serde_amqp::to_vec(performative).unwrap();
        self.send_bytes(channel, &body, payload).await;
    }

    async fn send_bytes(&mut self, channel: u16, body: &[u8], payload: &[u8]) {
        let frame = codec::encode_frame(codec::FRAME_TYPE_AMQP, channel, &[body, payload]);
        self.stream.write_all(&frame).await.unwrap();
    }

    /// Sends one unsettled single-frame delivery on `handle`.
    async fn transfer(&mut self, handle: u32, delivery_id: u32, message: &[u8]) {
        let t = described(
            0x14,
            vec![
                Value::Uint(handle),
                Value::Uint(delivery_id),
                Value::Binary(vec![delivery_id as u8; 4].into()),
                Value::Uint(0),
                Value::Bool(false),
                Value::Bool(false),
            ],
        );
        self.send(0, &t, message).await;
    }

    /// Reads frames until `want` matches one; fails on close or after 5 s.
    async fn expect(&mut self, want: impl Fn(&Performative) -> bool) -> (Performative, Vec<u8>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let frame =
                tokio::time::timeout_at(deadline, codec::read_frame(&mut self.stream, 1 << 20))
                    .await
                    .expect("the expected frame within 5 s")
                    .expect("the connection stays open");
            if frame.body.is_empty() {
                continue;
            }
            let (p, payload) = codec::decode_performative(frame.body).unwrap();
            assert!(
                !matches!(p, Performative::Close(_)),
                "connection closed: {p:?}"
            );
            if want(&p) {
                return (p, payload.to_vec());
            }
        }
    }

    /// Attaches `$cbs` request and reply links (handles 0 and 1) and authorizes `entity`.
    async fn authorize(&mut self, emulator: &Emulator, entity: &str) {
        self.send(0, &attach("cbs-req", 0, true, "$cbs", "cbs-client"), &[])
            .await;
        self.expect(|p| matches!(p, Performative::Attach(_))).await;
        self.send(0, &attach("cbs-rep", 1, false, "$cbs", "cbs-client"), &[])
            .await;
        self.expect(|p| matches!(p, Performative::Attach(_))).await;
        self.send(0, &flow(1, 0, 10), &[]).await;
        let status = self.put_token(emulator, entity, 0).await;
        assert_eq!(status, 202, "token accepted");
    }

    /// Sends a put-token for `entity` as delivery `delivery_id`; returns the status code.
    async fn put_token(&mut self, emulator: &Emulator, entity: &str, delivery_id: u32) -> i32 {
        let audience = format!("amqp://{}/{entity}", emulator.addr());
        let expires = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let token = sas::make_token(
            &audience,
            server::DEFAULT_KEY_NAME,
            server::DEFAULT_KEY,
            expires,
        );
        let mut request = AmqpMessage {
            properties: Some(Properties {
                message_id: Some(MessageId::String(format!("put-{delivery_id}"))),
                reply_to: Some("cbs-client".into()),
                ..Default::default()
            }),
            body: serde_amqp::to_vec(&Value::Described(Box::new(Described {
                descriptor: Descriptor::Code(0x77),
                value: Value::String(token),
            })))
            .unwrap(),
            ..Default::default()
        };
        request.set_application_property("operation", string("put-token"));
        request.set_application_property("type", string("servicebus.windows.net:sastoken"));
        request.set_application_property("name", string(&audience));
        self.transfer(0, delivery_id, &request.encode(None).unwrap())
            .await;
        let (_, payload) = self
            .expect(|p| matches!(p, Performative::Transfer(t) if t.handle.0 == 1))
            .await;
        let reply = AmqpMessage::decode(&payload).unwrap();
        match reply.application_property("status-code") {
            Some(Value::Int(n)) => *n,
            other => panic!("status-code missing: {other:?}"),
        }
    }
}

fn is_decode_error(e: &Option<fe2o3_amqp_types::definitions::Error>) -> bool {
    matches!(
        e.as_ref().map(|e| &e.condition),
        Some(ErrorCondition::AmqpError(AmqpError::DecodeError))
    )
}

/// Microsoft's JavaScript SDK dead-letters with a rejected outcome whose error `info` map has
/// *string* keys; the emulator applies it (reason and description) and echoes the outcome.
#[tokio::test]
async fn rejected_outcome_with_string_keyed_info_dead_letters() {
    let emulator = Emulator::start(Config::from_json_str(CONFIG).unwrap())
        .await
        .unwrap();
    emulator
        .send("orders", AmqpMessage::with_data(b"poison"))
        .unwrap();
    let mut raw = Raw::connect(&emulator).await;
    raw.authorize(&emulator, "orders").await;
    raw.send(0, &attach("recv", 2, false, "orders", "client-recv"), &[])
        .await;
    raw.expect(|p| matches!(p, Performative::Attach(_))).await;
    raw.send(0, &flow(2, 0, 1), &[]).await;
    let (p, _) = raw
        .expect(|p| matches!(p, Performative::Transfer(t) if t.delivery_tag.is_some()))
        .await;
    let Performative::Transfer(t) = p else {
        unreachable!()
    };
    let delivery_id = t.delivery_id.expect("delivery id");

    let info = map(vec![
        (string("DeadLetterReason"), string("js-reason")),
        (
            string("DeadLetterErrorDescription"),
            string("js description"),
        ),
    ]);
    let error = described(
        0x1d,
        vec![
            Value::Symbol("com.microsoft:dead-letter".into()),
            Value::Null,
            info,
        ],
    );
    let disposition = described(
        0x15,
        vec![
            Value::Bool(true),
            Value::Uint(delivery_id),
            Value::Null,
            Value::Bool(false),
            described(0x25, vec![error]),
        ],
    );
    raw.send(0, &disposition, &[]).await;
    let (p, _) = raw
        .expect(|p| matches!(p, Performative::Disposition(d) if d.role == Role::Sender))
        .await;
    let Performative::Disposition(d) = p else {
        unreachable!()
    };
    assert_eq!(d.first, delivery_id);
    assert!(
        matches!(d.state, Some(DeliveryState::Rejected(_))),
        "the applied outcome is echoed: {:?}",
        d.state
    );
    let counts = emulator.counts("orders").unwrap();
    assert_eq!(
        (counts.active, counts.locked, counts.dead_letter),
        (0, 0, 1)
    );
    let dead = emulator.receive("orders/$DeadLetterQueue", 1).unwrap();
    assert_eq!(
        dead[0].application_property("DeadLetterReason"),
        Some(&string("js-reason"))
    );
    assert_eq!(
        dead[0].application_property("DeadLetterErrorDescription"),
        Some(&string("js description"))
    );
    // The connection is still usable: another put-token round trip.
    assert_eq!(raw.put_token(&emulator, "orders", 1).await, 202);
}

/// An undecodable frame on one link detaches that link with `amqp:decode-error`; the other
/// links of the same session and connection keep working, and so does a new link.
#[tokio::test]
async fn undecodable_frame_on_one_link_leaves_the_others_working() {
    let emulator = Emulator::start(Config::from_json_str(CONFIG).unwrap())
        .await
        .unwrap();
    let mut raw = Raw::connect(&emulator).await;
    raw.authorize(&emulator, "orders").await;
    raw.send(0, &attach("send", 2, true, "orders", "client-send"), &[])
        .await;
    let (p, _) = raw.expect(|p| matches!(p, Performative::Attach(_))).await;
    let Performative::Attach(a) = p else {
        unreachable!()
    };
    let sender_local = a.handle.0;

    // A transfer whose delivery-id is a string cannot be mapped to any transfer.
    let bad = described(
        0x14,
        vec![
            Value::Uint(2),
            string("not-a-number"),
            Value::Binary(vec![9; 4].into()),
        ],
    );
    raw.send(
        0,
        &bad,
        &AmqpMessage::with_data(b"lost").encode(None).unwrap(),
    )
    .await;
    let (p, _) = raw
        .expect(|p| matches!(p, Performative::Detach(d) if d.handle.0 == sender_local))
        .await;
    let Performative::Detach(d) = p else {
        unreachable!()
    };
    assert!(d.closed);
    assert!(is_decode_error(&d.error), "decode-error: {:?}", d.error);
    // A continuation frame still in flight on the detached handle is dropped quietly.
    raw.transfer(2, 99, b"late").await;
    // The client answers the detach.
    raw.send(
        0,
        &described(0x16, vec![Value::Uint(2), Value::Bool(true)]),
        &[],
    )
    .await;

    // The cbs links on the same session still work …
    assert_eq!(raw.put_token(&emulator, "orders", 1).await, 202);
    // … and the handle can be attached again and used.
    raw.send(
        0,
        &attach("send-again", 2, true, "orders", "client-send"),
        &[],
    )
    .await;
    raw.expect(|p| matches!(p, Performative::Attach(_))).await;
    raw.transfer(2, 2, &AmqpMessage::with_data(b"ok").encode(None).unwrap())
        .await;
    let (p, _) = raw
        .expect(|p| matches!(p, Performative::Disposition(d) if d.first == 2))
        .await;
    let Performative::Disposition(d) = p else {
        unreachable!()
    };
    assert!(matches!(d.state, Some(DeliveryState::Accepted(_))));
    assert_eq!(emulator.counts("orders").unwrap().active, 1);
    assert_eq!(emulator.peek("orders", 1).unwrap()[0].body_data(), b"ok");
}

/// A frame that names no link (a session-level flow that cannot be mapped, a performative
/// with an unknown descriptor) ends its session with `amqp:decode-error`; a session begun on
/// another channel of the same connection keeps working.
#[tokio::test]
async fn undecodable_session_frame_ends_only_that_session() {
    let emulator = Emulator::start(Config::from_json_str(CONFIG).unwrap())
        .await
        .unwrap();
    let mut raw = Raw::connect(&emulator).await;
    // Second session on channel 1.
    raw.begin(1).await;
    // An unknown performative on channel 1.
    raw.send_bytes(1, &[0x00, 0x53, 0x42, 0x45], &[]).await;
    let (p, _) = raw.expect(|p| matches!(p, Performative::End(_))).await;
    let Performative::End(end) = p else {
        unreachable!()
    };
    assert!(is_decode_error(&end.error), "{:?}", end.error);
    // Session 0 still works.
    raw.authorize(&emulator, "orders").await;
    // A session-level flow with a window that is a string: session 0 ends.
    let bad_flow = described(
        0x13,
        vec![
            Value::Uint(0),
            string("wide"),
            Value::Uint(0),
            Value::Uint(1),
        ],
    );
    raw.send(0, &bad_flow, &[]).await;
    let (p, _) = raw.expect(|p| matches!(p, Performative::End(_))).await;
    let Performative::End(end) = p else {
        unreachable!()
    };
    assert!(is_decode_error(&end.error), "{:?}", end.error);
    // Frames still in flight for the ended session are ignored; the connection serves a new
    // session on the same channel.
    raw.send(0, &attach("late", 5, true, "orders", "x"), &[])
        .await;
    raw.send(
        0,
        &described(
            0x11,
            vec![
                Value::Null,
                Value::Uint(0),
                Value::Uint(5000),
                Value::Uint(5000),
            ],
        ),
        &[],
    )
    .await;
    raw.expect(|p| matches!(p, Performative::Begin(_))).await;
    raw.authorize(&emulator, "orders").await;
}
