//! One AMQP connection: SASL, open, sessions and links, written directly over the frame codec
//! so the server chooses delivery tags (16-byte GUID lock tokens, as Service Bus does).

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use fe2o3_amqp_types::{
    definitions::{self, ErrorCondition, Fields, Handle, Role, SenderSettleMode},
    messaging::{Accepted, DeliveryState, Modified, Rejected, Released, Source, TargetArchetype},
    performatives::{
        Attach, Begin, Close, Detach, Disposition, End, Flow, Open, Performative, Transfer,
    },
    primitives::{Array, Symbol},
    sasl::{SaslCode, SaslInit, SaslMechanisms, SaslOutcome},
};
use serde_amqp::{primitives::OrderedMap, Value};
use serde_bytes::ByteBuf;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{mpsc, watch},
};
use uuid::Uuid;

use crate::{
    address::{self, Address},
    broker::{Broker, BrokerError, EntityRef, Node, ReceiveMode, Settlement},
    codec::{self, CodecError, RawFrame},
    entra::Rights,
    management::{self, as_str, Reply},
    message::{AmqpMessage, BATCH_MESSAGE_FORMAT},
    sas,
    server::ServerSettings,
};

/// Max frame size we accept.
const OUR_MAX_FRAME: u32 = 65_536;
/// Credit granted to client senders, topped up at half.
const SENDER_CREDIT: u32 = 200;
/// Session windows we advertise.
const WINDOW: u32 = 5_000;
/// Sessions per connection.
const MAX_SESSIONS: usize = 64;
/// Links per session.
const MAX_LINKS: usize = 256;
/// Unsettled outgoing deliveries per session.
const MAX_UNSETTLED: usize = 10_000;
/// Queued replies per link.
const MAX_PENDING_REPLIES: usize = 1_000;

/// What one accepted `$cbs` token allows, until when.
#[derive(Debug)]
struct Grant {
    /// The entity path the token was put for (normalized); it covers the entities below it.
    entity: String,
    /// Expiry (unix seconds).
    expires_at: u64,
    /// The SAS key generation that signed it (`None` for Entra ID tokens, which no SAS key
    /// rotation revokes).
    key_epoch: Option<u64>,
    /// What it allows: everything for the root SAS key, the identity's roles for Entra ID.
    rights: Rights,
}

/// The right a link needs.
#[derive(Debug, Clone, Copy)]
enum Need {
    /// A sender to a queue or topic.
    Send,
    /// A receiver from a queue or subscription.
    Listen,
    /// A management node: any right.
    Any,
}

impl Need {
    fn met_by(self, rights: Rights) -> bool {
        match self {
            Need::Send => rights.send || rights.manage,
            Need::Listen => rights.listen || rights.manage,
            Need::Any => rights.any(),
        }
    }

    /// The claim Service Bus names when it is missing.
    fn claim(self) -> &'static str {
        match self {
            Need::Send => "Send",
            Need::Listen => "Listen",
            Need::Any => "Manage,EntityRead",
        }
    }
}

/// An AMQP error. `info` is always present (empty): pyamqp indexes all three fields.
fn err(condition: &str, description: impl Into<String>) -> definitions::Error {
    definitions::Error {
        condition: ErrorCondition::Custom(Symbol::from(condition)),
        description: Some(description.into()),
        info: Some(Box::default()),
    }
}

#[derive(Debug)]
enum LinkKind {
    /// The client sends messages to a queue or topic.
    Inbound { key: String },
    /// We deliver messages from an entity to the client.
    Outbound {
        entity: EntityRef,
        mode: ReceiveMode,
        session: Option<String>,
    },
    /// The client sends requests to `$cbs`.
    CbsRequests,
    /// The client sends requests to an entity's `$management` node.
    ManagementRequests { entity: EntityRef },
    /// We send replies (cbs or management).
    Replies,
}

#[derive(Debug)]
struct Link {
    name: String,
    local_handle: u32,
    kind: LinkKind,
    /// Address of the node (source for outbound, target for inbound).
    node: String,
    /// Client-side terminus address (the reply-to for replies links).
    peer_address: Option<String>,
    owner: u64,
    credit: u32,
    delivery_count: u32,
    drain: bool,
    /// First transfer, bytes so far and total size of a multi-frame delivery.
    partial: Option<(Transfer, Vec<u8>, usize)>,
    pending: VecDeque<Vec<u8>>,
    max_message_size: u64,
}

#[derive(Debug)]
struct Unsettled {
    remote_handle: u32,
    key: String,
    token: Uuid,
}

#[derive(Debug)]
struct Session {
    local_channel: u16,
    next_outgoing_id: u32,
    next_incoming_id: u32,
    incoming_left: u32,
    next_delivery_id: u32,
    links: HashMap<u32, Link>,
    /// Next-available-session attaches waiting for a session, with their deadlines.
    pending: Vec<(Attach, Instant)>,
    unsettled: HashMap<u32, Unsettled>,
    /// Remote handles we detached on our own (decode error, oversize, expired token) whose
    /// detach the client has not answered yet: frames still in flight on them are dropped.
    detached: std::collections::HashSet<u32>,
}

/// Errors that end a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// Frame layer.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Protocol violation by the client.
    #[error("protocol: {0}")]
    Protocol(String),
}

struct Connection {
    settings: Arc<ServerSettings>,
    broker: Arc<Broker>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    peer: String,
    remote_max_frame: u32,
    sessions: HashMap<u16, Session>,
    /// What each accepted token allows.
    grants: Vec<Grant>,
    last_write: Instant,
    idle_send: Option<Duration>,
}

/// Serves one accepted socket until it closes or `shutdown` fires.
pub async fn serve(
    stream: TcpStream,
    settings: Arc<ServerSettings>,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnectionError> {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::debug!(%peer, "connection accepted");
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let mut conn = Connection {
        settings,
        broker,
        writer,
        peer: peer.clone(),
        remote_max_frame: OUR_MAX_FRAME,
        sessions: HashMap::new(),
        grants: Vec::new(),
        last_write: Instant::now(),
        idle_send: None,
    };

    let handshake =
        tokio::time::timeout(Duration::from_secs(20), conn.handshake(&mut reader)).await;
    match handshake {
        Ok(r) => r?,
        Err(_) => return Err(ConnectionError::Protocol("handshake timed out".into())),
    }

    let (tx, mut rx) = mpsc::channel::<Result<RawFrame, CodecError>>(64);
    let read_task = tokio::spawn(async move {
        loop {
            let frame = codec::read_frame(&mut reader, OUR_MAX_FRAME).await;
            let stop = frame.is_err();
            if tx.send(frame).await.is_err() || stop {
                break;
            }
        }
    });

    let mut changes = conn.broker.subscribe();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let result = loop {
        tokio::select! {
            frame = rx.recv() => {
                let Some(frame) = frame else { break Ok(()) };
                match frame {
                    Ok(f) => match conn.on_frame(f).await {
                        Ok(true) => {}
                        Ok(false) => break Ok(()),
                        Err(e) => break Err(e),
                    },
                    Err(CodecError::Io(_)) => break Ok(()),
                    Err(e) => {
                        let _ = conn.close(Some(err("amqp:decode-error", e.to_string()))).await;
                        break Err(e.into());
                    }
                }
            }
            changed = changes.changed() => {
                if changed.is_err() { break Ok(()); }
                if let Err(e) = conn.pump_all().await { break Err(e); }
            }
            _ = tick.tick() => {
                if let Err(e) = conn.drop_unauthorized_links().await { break Err(e); }
                if let Err(e) = conn.pump_all().await { break Err(e); }
                if let Some(every) = conn.idle_send {
                    if conn.last_write.elapsed() >= every {
                        if let Err(e) = conn.write(codec::encode_frame(codec::FRAME_TYPE_AMQP, 0, &[])).await { break Err(e); }
                    }
                }
            }
            _ = shutdown.changed() => {
                let _ = conn.close(Some(err("amqp:connection:forced", "emulator stopping"))).await;
                break Ok(());
            }
        }
    };
    read_task.abort();
    conn.release_all();
    tracing::debug!(peer = %conn.peer, ?result, "connection closed");
    result
}

impl Connection {
    async fn write(&mut self, bytes: Vec<u8>) -> Result<(), ConnectionError> {
        self.writer
            .write_all(&bytes)
            .await
            .map_err(CodecError::from)?;
        self.last_write = Instant::now();
        Ok(())
    }

    async fn send<T: serde::Serialize + std::fmt::Debug>(
        &mut self,
        channel: u16,
        perf: &T,
    ) -> Result<(), ConnectionError> {
        tracing::trace!(peer = %self.peer, channel, ?perf, "frame out");
        let bytes = codec::encode_performative(channel, perf)?;
        self.write(bytes).await
    }

    async fn handshake(
        &mut self,
        reader: &mut tokio::net::tcp::OwnedReadHalf,
    ) -> Result<(), ConnectionError> {
        let mut header = [0u8; 8];
        reader
            .read_exact(&mut header)
            .await
            .map_err(CodecError::from)?;
        if header == codec::SASL_HEADER {
            self.write(codec::SASL_HEADER.to_vec()).await?;
            let mechanisms = SaslMechanisms {
                sasl_server_mechanisms: Array(vec![
                    Symbol::from("ANONYMOUS"),
                    Symbol::from("MSSBCBS"),
                    Symbol::from("PLAIN"),
                ]),
            };
            self.write(codec::encode_sasl(&mechanisms)?).await?;
            let frame = codec::read_frame(reader, OUR_MAX_FRAME).await?;
            if frame.frame_type != codec::FRAME_TYPE_SASL {
                return Err(ConnectionError::Protocol("expected sasl-init".into()));
            }
            let init: SaslInit = codec::decode_sasl(&frame.body)?;
            tracing::debug!(peer = %self.peer, mechanism = %init.mechanism.as_str(), "sasl");
            let code = match init.mechanism.as_str() {
                "ANONYMOUS" | "MSSBCBS" | "PLAIN" => SaslCode::Ok,
                _ => SaslCode::Auth,
            };
            let ok = matches!(code, SaslCode::Ok);
            self.write(codec::encode_sasl(&SaslOutcome {
                code,
                additional_data: None,
            })?)
            .await?;
            if !ok {
                return Err(ConnectionError::Protocol(
                    "unsupported SASL mechanism".into(),
                ));
            }
            reader
                .read_exact(&mut header)
                .await
                .map_err(CodecError::from)?;
        }
        if header != codec::AMQP_HEADER {
            self.write(codec::AMQP_HEADER.to_vec()).await?;
            return Err(ConnectionError::Protocol(format!(
                "unsupported protocol header {header:?}"
            )));
        }
        self.write(codec::AMQP_HEADER.to_vec()).await
    }

    async fn close(&mut self, error: Option<definitions::Error>) -> Result<(), ConnectionError> {
        self.send(0, &Close { error }).await
    }

    fn release_all(&mut self) {
        for s in self.sessions.values() {
            for l in s.links.values() {
                self.broker.release_owner(l.owner);
            }
        }
        self.sessions.clear();
    }

    /// Handles one frame; returns false when the connection is closed.
    async fn on_frame(&mut self, frame: RawFrame) -> Result<bool, ConnectionError> {
        if frame.frame_type != codec::FRAME_TYPE_AMQP {
            return Err(ConnectionError::Protocol("unexpected frame type".into()));
        }
        if frame.body.is_empty() {
            return Ok(true); // heartbeat
        }
        let channel = frame.channel;
        let (perf, payload) = match codec::decode_performative(frame.body) {
            Ok(decoded) => decoded,
            Err(CodecError::Performative {
                code,
                value,
                reason,
            }) => {
                return self
                    .on_undecodable(channel, code, value.as_deref(), reason)
                    .await
            }
            Err(e) => return Err(e.into()),
        };
        tracing::trace!(peer = %self.peer, channel, ?perf, "frame in");
        match perf {
            Performative::Open(open) => self.on_open(open).await?,
            Performative::Begin(begin) => self.on_begin(channel, begin).await?,
            Performative::Attach(attach) => self.on_attach(channel, attach).await?,
            Performative::Flow(flow) => self.on_flow(channel, flow).await?,
            Performative::Transfer(t) => self.on_transfer(channel, t, payload.to_vec()).await?,
            Performative::Disposition(d) => self.on_disposition(channel, d).await?,
            Performative::Detach(d) => self.on_detach(channel, d).await?,
            Performative::End(_) => {
                if let Some(s) = self.sessions.remove(&channel) {
                    for l in s.links.values() {
                        self.broker.release_owner(l.owner);
                    }
                    tracing::debug!(peer = %self.peer, channel, "session ended");
                    self.send(s.local_channel, &End { error: None }).await?;
                }
            }
            Performative::Close(_) => {
                self.close(None).await?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn on_open(&mut self, open: Open) -> Result<(), ConnectionError> {
        self.remote_max_frame = open.max_frame_size.0.max(codec::MIN_MAX_FRAME_SIZE);
        self.idle_send = open
            .idle_time_out
            .filter(|ms| *ms > 0)
            .map(|ms| Duration::from_millis(ms as u64 / 2));
        tracing::debug!(peer = %self.peer, container = %open.container_id, hostname = ?open.hostname, "open");
        let reply = Open {
            container_id: format!("servicebus-emulator-{}", Uuid::new_v4().simple()),
            hostname: None,
            max_frame_size: OUR_MAX_FRAME.into(),
            channel_max: (MAX_SESSIONS as u16 - 1).into(),
            idle_time_out: Some(120_000),
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        self.send(0, &reply).await
    }

    async fn on_begin(&mut self, channel: u16, begin: Begin) -> Result<(), ConnectionError> {
        if self.sessions.len() >= MAX_SESSIONS || self.sessions.contains_key(&channel) {
            self.close(Some(err(
                "amqp:resource-limit-exceeded",
                "too many sessions",
            )))
            .await?;
            return Err(ConnectionError::Protocol("session limit".into()));
        }
        let session = Session {
            local_channel: channel,
            next_outgoing_id: 1,
            next_incoming_id: begin.next_outgoing_id,
            incoming_left: WINDOW,
            next_delivery_id: 0,
            links: HashMap::new(),
            pending: Vec::new(),
            unsettled: HashMap::new(),
            detached: Default::default(),
        };
        self.sessions.insert(channel, session);
        tracing::debug!(peer = %self.peer, channel, "session begun");
        let reply = Begin {
            remote_channel: Some(channel),
            next_outgoing_id: 1,
            incoming_window: WINDOW,
            outgoing_window: WINDOW,
            handle_max: Handle(MAX_LINKS as u32 - 1),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        self.send(channel, &reply).await
    }

    /// Whether a token in force grants `need` on `path` (normalized).
    fn authorized(&self, path: &str, need: Need) -> bool {
        let now = crate::broker::now_ms() as u64 / 1000;
        let epoch = self.settings.rotation.epoch();
        self.grants.iter().any(|g| {
            g.expires_at > now
                && g.key_epoch.is_none_or(|e| e == epoch)
                && address::covers(&g.entity, path)
                && need.met_by(g.rights)
        })
    }

    async fn refuse_attach(
        &mut self,
        channel: u16,
        attach: Attach,
        local_handle: u32,
        error: definitions::Error,
    ) -> Result<(), ConnectionError> {
        tracing::debug!(peer = %self.peer, link = %attach.name, error = ?error.description, "link refused");
        let our_role = match attach.role {
            Role::Sender => Role::Receiver,
            Role::Receiver => Role::Sender,
        };
        let reply = Attach {
            name: attach.name,
            handle: Handle(local_handle),
            role: our_role.clone(),
            snd_settle_mode: attach.snd_settle_mode,
            rcv_settle_mode: attach.rcv_settle_mode,
            source: None,
            target: None,
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: if our_role == Role::Sender {
                Some(0)
            } else {
                None
            },
            max_message_size: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        self.send(channel, &reply).await?;
        self.send(
            channel,
            &Detach {
                handle: Handle(local_handle),
                closed: true,
                error: Some(error),
            },
        )
        .await
    }

    async fn on_attach(&mut self, channel: u16, attach: Attach) -> Result<(), ConnectionError> {
        self.attach_link(channel, attach, None).await
    }

    /// Attaches a link; `deadline` is set when retrying a next-available-session attach.
    async fn attach_link(
        &mut self,
        channel: u16,
        attach: Attach,
        deadline: Option<Instant>,
    ) -> Result<(), ConnectionError> {
        let remote_handle = attach.handle.0;
        let Some(session) = self.sessions.get_mut(&channel) else {
            // A session we ended (e.g. on a decode error) may still have frames in flight.
            tracing::debug!(peer = %self.peer, channel, link = %attach.name, "attach on a channel without a session ignored");
            return Ok(());
        };
        session.detached.remove(&remote_handle);
        // The lowest handle not in use keeps us within the client's handle-max.
        let used: std::collections::HashSet<u32> =
            session.links.values().map(|l| l.local_handle).collect();
        let local_handle = (0..).find(|h| !used.contains(h)).unwrap_or(0);
        let duplicate = session.links.contains_key(&remote_handle)
            || (deadline.is_none()
                && session
                    .pending
                    .iter()
                    .any(|(a, _)| a.handle.0 == remote_handle));
        if session.links.len() + session.pending.len() >= MAX_LINKS || duplicate {
            return self
                .refuse_attach(
                    channel,
                    attach,
                    local_handle,
                    err("amqp:resource-limit-exceeded", "too many links"),
                )
                .await;
        }
        let client_sends = attach.role == Role::Sender;
        let target_addr = match attach.target.as_deref() {
            Some(TargetArchetype::Target(t)) => t.address.clone(),
            _ => None,
        };
        let source_addr = attach.source.as_ref().and_then(|s| s.address.clone());
        let node = if client_sends {
            target_addr.clone()
        } else {
            source_addr.clone()
        }
        .unwrap_or_default();
        let peer_address = if client_sends {
            source_addr.clone()
        } else {
            target_addr.clone()
        };
        let max_message_size = self.settings.max_message_size;
        tracing::debug!(peer = %self.peer, channel, link = %attach.name, role = ?attach.role, address = %node, "attach");

        let parsed = address::parse(&node);
        let mut source = attach.source.clone();
        let mut properties: Option<Fields> = None;
        let owner = self.broker.new_owner();
        let kind = match (&parsed, client_sends) {
            (Address::Cbs, true) => LinkKind::CbsRequests,
            (Address::Cbs, false) => LinkKind::Replies,
            (Address::Management(path, dlq), _) => {
                if !matches!(
                    self.broker.resolve(path),
                    Some(Node::Queue(_) | Node::Subscription(_) | Node::Topic(_))
                ) {
                    return self
                        .refuse_attach(
                            channel,
                            attach,
                            local_handle,
                            err(
                                "amqp:not-found",
                                format!("The messaging entity '{path}' could not be found."),
                            ),
                        )
                        .await;
                }
                if !self.authorized(&address::normalize(&node), Need::Any) {
                    return self.refuse_attach(channel, attach, local_handle, err("amqp:unauthorized-access", "Unauthorized access. 'Manage,EntityRead' claim(s) are required to perform this operation.")).await;
                }
                if client_sends {
                    LinkKind::ManagementRequests {
                        entity: EntityRef {
                            key: path.clone(),
                            dead_letter: *dlq,
                        },
                    }
                } else {
                    LinkKind::Replies
                }
            }
            (Address::Entity(path, dlq), _) => {
                let resolved = self.broker.resolve(path);
                let ok = matches!(
                    (&resolved, client_sends, dlq),
                    (Some(Node::Queue(_)), _, false)
                        | (Some(Node::Topic(_)), true, false)
                        | (Some(Node::Queue(_) | Node::Subscription(_)), false, _)
                );
                if !ok {
                    return self
                        .refuse_attach(
                            channel,
                            attach,
                            local_handle,
                            err(
                                "amqp:not-found",
                                format!("The messaging entity '{node}' could not be found."),
                            ),
                        )
                        .await;
                }
                let need = if client_sends {
                    Need::Send
                } else {
                    Need::Listen
                };
                if !self.authorized(&address::normalize(&node), need) {
                    let description = format!(
                        "Unauthorized access. '{}' claim(s) are required to perform this operation. Resource: '{node}'.",
                        need.claim()
                    );
                    return self
                        .refuse_attach(
                            channel,
                            attach,
                            local_handle,
                            err("amqp:unauthorized-access", description),
                        )
                        .await;
                }
                if client_sends {
                    LinkKind::Inbound { key: path.clone() }
                } else {
                    let entity = EntityRef {
                        key: path.clone(),
                        dead_letter: *dlq,
                    };
                    let mode = if attach.snd_settle_mode == SenderSettleMode::Settled {
                        ReceiveMode::ReceiveAndDelete
                    } else {
                        ReceiveMode::PeekLock
                    };
                    let info = match self.broker.info(path) {
                        Ok(i) => i,
                        Err(e) => {
                            return self
                                .refuse_attach(
                                    channel,
                                    attach,
                                    local_handle,
                                    err(e.condition(), e.to_string()),
                                )
                                .await
                        }
                    };
                    let filter_key = Symbol::from("com.microsoft:session-filter");
                    let requested = source
                        .as_ref()
                        .and_then(|s| s.filter.as_ref())
                        .and_then(|f| {
                            f.iter()
                                .find(|(k, _)| k.as_str() == filter_key.as_str())
                                .map(|(_, v)| match v {
                                    Value::Described(d) => d.value.clone(),
                                    other => other.clone(),
                                })
                        });
                    let session = if info.requires_session && !dlq {
                        let want = requested.as_ref().and_then(as_str).map(str::to_string);
                        match self.broker.lock_session(path, want.as_deref(), owner) {
                            Ok((sid, until)) => {
                                if let Some(s) = source.as_mut() {
                                    let mut fs = s.filter.clone().unwrap_or_default();
                                    fs.as_inner_mut()
                                        .retain(|k, _| k.as_str() != filter_key.as_str());
                                    fs.insert(filter_key.clone(), Value::String(sid.clone()));
                                    s.filter = Some(fs);
                                }
                                let mut p = Fields::new();
                                let ticks = until * 10_000 + 621_355_968_000_000_000;
                                p.insert(
                                    Symbol::from("com.microsoft:locked-until-utc"),
                                    Value::Long(ticks),
                                );
                                properties = Some(p);
                                tracing::debug!(peer = %self.peer, session = %sid, "session locked");
                                Some(sid)
                            }
                            Err(BrokerError::NoSessionAvailable)
                                if want.is_none()
                                    && deadline.is_none_or(|d| Instant::now() < d) =>
                            {
                                // Service Bus holds the attach until a session frees up or the
                                // link's com.microsoft:timeout passes.
                                let deadline = deadline.unwrap_or_else(|| {
                                    Instant::now() + link_timeout(attach.properties.as_ref())
                                });
                                self.broker.release_owner(owner);
                                if let Some(s) = self.sessions.get_mut(&channel) {
                                    s.pending.push((attach, deadline));
                                }
                                return Ok(());
                            }
                            Err(e) => {
                                return self
                                    .refuse_attach(
                                        channel,
                                        attach,
                                        local_handle,
                                        err(e.condition(), e.to_string()),
                                    )
                                    .await
                            }
                        }
                    } else {
                        if requested.is_some() && !info.requires_session {
                            return self
                                .refuse_attach(
                                    channel,
                                    attach,
                                    local_handle,
                                    err(
                                        "amqp:not-allowed",
                                        format!(
                                            "The entity '{}' does not require sessions.",
                                            info.name
                                        ),
                                    ),
                                )
                                .await;
                        }
                        None
                    };
                    LinkKind::Outbound {
                        entity,
                        mode,
                        session,
                    }
                }
            }
        };

        let our_role = if client_sends {
            Role::Receiver
        } else {
            Role::Sender
        };
        let reply = Attach {
            name: attach.name.clone(),
            handle: Handle(local_handle),
            role: our_role,
            snd_settle_mode: attach.snd_settle_mode,
            rcv_settle_mode: attach.rcv_settle_mode,
            source: source.map(|s| Box::new(Source::clone(&s))),
            target: attach.target.clone(),
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: if client_sends { None } else { Some(0) },
            max_message_size: Some(max_message_size),
            offered_capabilities: None,
            desired_capabilities: None,
            properties,
        };
        self.send(channel, &reply).await?;
        let link = Link {
            name: attach.name,
            local_handle,
            kind,
            node,
            peer_address,
            owner,
            credit: 0,
            delivery_count: attach.initial_delivery_count.unwrap_or(0),
            drain: false,
            partial: None,
            pending: VecDeque::new(),
            max_message_size,
        };
        let grant = client_sends;
        if let Some(s) = self.sessions.get_mut(&channel) {
            s.links.insert(remote_handle, link);
        }
        if grant {
            self.grant_credit(channel, remote_handle).await?;
        }
        Ok(())
    }

    async fn grant_credit(
        &mut self,
        channel: u16,
        remote_handle: u32,
    ) -> Result<(), ConnectionError> {
        let Some(s) = self.sessions.get_mut(&channel) else {
            return Ok(());
        };
        let Some(l) = s.links.get_mut(&remote_handle) else {
            return Ok(());
        };
        l.credit = SENDER_CREDIT;
        let flow = Flow {
            next_incoming_id: Some(s.next_incoming_id),
            incoming_window: s.incoming_left,
            next_outgoing_id: s.next_outgoing_id,
            outgoing_window: WINDOW,
            handle: Some(Handle(l.local_handle)),
            delivery_count: Some(l.delivery_count),
            link_credit: Some(l.credit),
            available: None,
            drain: false,
            echo: false,
            properties: None,
        };
        let ch = s.local_channel;
        self.send(ch, &flow).await
    }

    async fn on_flow(&mut self, channel: u16, flow: Flow) -> Result<(), ConnectionError> {
        let Some(s) = self.sessions.get_mut(&channel) else {
            return Ok(());
        };
        let Some(handle) = flow.handle else {
            if flow.echo {
                let reply = Flow {
                    next_incoming_id: Some(s.next_incoming_id),
                    incoming_window: s.incoming_left,
                    next_outgoing_id: s.next_outgoing_id,
                    outgoing_window: WINDOW,
                    handle: None,
                    delivery_count: None,
                    link_credit: None,
                    available: None,
                    drain: false,
                    echo: false,
                    properties: None,
                };
                let ch = s.local_channel;
                self.send(ch, &reply).await?;
            }
            return Ok(());
        };
        let Some(l) = s.links.get_mut(&handle.0) else {
            return Ok(());
        };
        let is_our_sender = matches!(l.kind, LinkKind::Outbound { .. } | LinkKind::Replies);
        if is_our_sender {
            let remote_dc = flow.delivery_count.unwrap_or(l.delivery_count);
            let credit = flow.link_credit.unwrap_or(0);
            l.credit = remote_dc
                .wrapping_add(credit)
                .wrapping_sub(l.delivery_count);
            if l.credit > 100_000 {
                l.credit = 100_000;
            }
            l.drain = flow.drain;
        }
        let echo = flow.echo;
        let local_handle = l.local_handle;
        let (dc, cr) = (l.delivery_count, l.credit);
        if echo {
            let reply = Flow {
                next_incoming_id: Some(s.next_incoming_id),
                incoming_window: s.incoming_left,
                next_outgoing_id: s.next_outgoing_id,
                outgoing_window: WINDOW,
                handle: Some(Handle(local_handle)),
                delivery_count: Some(dc),
                link_credit: Some(cr),
                available: None,
                drain: false,
                echo: false,
                properties: None,
            };
            let ch = s.local_channel;
            self.send(ch, &reply).await?;
        }
        if is_our_sender {
            self.pump_link(channel, handle.0).await?;
        }
        Ok(())
    }

    async fn on_transfer(
        &mut self,
        channel: u16,
        t: Transfer,
        payload: Vec<u8>,
    ) -> Result<(), ConnectionError> {
        let Some(s) = self.sessions.get_mut(&channel) else {
            return Ok(());
        };
        s.next_incoming_id = s.next_incoming_id.wrapping_add(1);
        s.incoming_left = s.incoming_left.saturating_sub(1);
        let refill = s.incoming_left < WINDOW / 2;
        if refill {
            s.incoming_left = WINDOW;
            let flow = Flow {
                next_incoming_id: Some(s.next_incoming_id),
                incoming_window: WINDOW,
                next_outgoing_id: s.next_outgoing_id,
                outgoing_window: WINDOW,
                handle: None,
                delivery_count: None,
                link_credit: None,
                available: None,
                drain: false,
                echo: false,
                properties: None,
            };
            let ch = s.local_channel;
            self.send(ch, &flow).await?;
        }
        let Some(s) = self.sessions.get_mut(&channel) else {
            return Ok(());
        };
        let remote_handle = t.handle.0;
        let Some(l) = s.links.get_mut(&remote_handle) else {
            if s.detached.contains(&remote_handle) {
                return Ok(()); // in flight before the client saw our detach
            }
            tracing::warn!(peer = %self.peer, channel, handle = remote_handle, "transfer on an unattached handle; ending the session");
            self.end_session(
                channel,
                err(
                    "amqp:session:unattached-handle",
                    format!("handle {remote_handle} is not attached"),
                ),
            )
            .await?;
            return Ok(());
        };
        // Reassemble multi-frame deliveries; an oversize delivery is discarded frame by frame
        // (its size is still counted) and refused once its last frame has arrived.
        let (first, mut data, mut size) = match l.partial.take() {
            Some((first, buf, size)) => (first, buf, size),
            None => (t.clone(), Vec::new(), 0usize),
        };
        size += payload.len();
        let oversize = size as u64 > l.max_message_size;
        if oversize {
            data = Vec::new();
        } else {
            data.extend_from_slice(&payload);
        }
        if t.more {
            l.partial = Some((first, data, size));
            return Ok(());
        }
        if oversize && !t.aborted {
            let local = l.local_handle;
            let max = l.max_message_size;
            s.links.remove(&remote_handle);
            s.detached.insert(remote_handle);
            let ch = s.local_channel;
            let delivery_id = first.delivery_id.unwrap_or(0);
            tracing::debug!(peer = %self.peer, size, max, "message too large; detaching link");
            let e = err(
                "amqp:link:message-size-exceeded",
                format!("The received message (delivery-id:{delivery_id}, size:{size} bytes) exceeds the limit ({max} bytes) currently allowed on the link."),
            );
            if !first.settled.unwrap_or(false) {
                let d = Disposition {
                    role: Role::Receiver,
                    first: delivery_id,
                    last: None,
                    settled: true,
                    state: Some(DeliveryState::Rejected(Rejected {
                        error: Some(e.clone()),
                    })),
                    batchable: false,
                };
                self.send(ch, &d).await?;
            }
            let detach = Detach {
                handle: Handle(local),
                closed: true,
                error: Some(e),
            };
            return self.send(ch, &detach).await;
        }
        if t.aborted {
            return Ok(());
        }
        l.credit = l.credit.saturating_sub(1);
        l.delivery_count = l.delivery_count.wrapping_add(1);
        let needs_credit = l.credit < SENDER_CREDIT / 2;
        let settled = first.settled.unwrap_or(false);
        let delivery_id = first.delivery_id.unwrap_or(0);
        let ch = s.local_channel;
        let outcome: Option<DeliveryState> = match &l.kind {
            LinkKind::Inbound { key } => {
                let key = key.clone();
                let decoded = if first.message_format == Some(BATCH_MESSAGE_FORMAT) {
                    AmqpMessage::decode_batch(&data)
                } else {
                    AmqpMessage::decode(&data).map(|m| vec![m])
                };
                let state = match decoded {
                    Ok(msgs) => {
                        let n = msgs.len();
                        match self.broker.send(&key, msgs) {
                            Ok(_) => {
                                tracing::debug!(peer = %self.peer, entity = %key, messages = n, "accepted");
                                DeliveryState::Accepted(Accepted {})
                            }
                            Err(e) => DeliveryState::Rejected(Rejected {
                                error: Some(err(e.condition(), e.to_string())),
                            }),
                        }
                    }
                    Err(e) => DeliveryState::Rejected(Rejected {
                        error: Some(err("amqp:decode-error", e.to_string())),
                    }),
                };
                Some(state)
            }
            LinkKind::CbsRequests => {
                let reply = self.cbs(&data);
                self.route_reply(channel, remote_handle, reply).await?;
                Some(DeliveryState::Accepted(Accepted {}))
            }
            LinkKind::ManagementRequests { entity } => {
                let entity = entity.clone();
                let reply = match AmqpMessage::decode(&data) {
                    Ok(req) => {
                        let body = management::body_value(&req).unwrap_or(Value::Null);
                        let r = management::handle(&self.broker, &entity, &req, &body);
                        management::response_message(&req, "statusCode", "statusDescription", &r)
                            .map(|b| (req, b))
                    }
                    Err(e) => Err(e),
                };
                match reply {
                    Ok(r) => {
                        self.route_reply(channel, remote_handle, Some(r)).await?;
                        Some(DeliveryState::Accepted(Accepted {}))
                    }
                    Err(e) => {
                        // Without its message-id the request cannot be answered; refusing the
                        // delivery tells the client at once instead of at its timeout.
                        tracing::warn!(peer = %self.peer, error = %e, "undecodable management request rejected");
                        Some(DeliveryState::Rejected(Rejected {
                            error: Some(err("amqp:decode-error", e.to_string())),
                        }))
                    }
                }
            }
            _ => None,
        };
        if !settled {
            if let Some(state) = outcome {
                let d = Disposition {
                    role: Role::Receiver,
                    first: delivery_id,
                    last: None,
                    settled: true,
                    state: Some(state),
                    batchable: false,
                };
                self.send(ch, &d).await?;
            }
        }
        if needs_credit {
            self.grant_credit(channel, remote_handle).await?;
        }
        Ok(())
    }

    /// Handles a `$cbs` put-token request; returns the request and the encoded response.
    fn cbs(&mut self, data: &[u8]) -> Option<(AmqpMessage, Vec<u8>)> {
        let req = AmqpMessage::decode(data).ok()?;
        let op = req
            .application_property("operation")
            .and_then(as_str)
            .unwrap_or("");
        let name = req
            .application_property("name")
            .and_then(as_str)
            .unwrap_or("")
            .to_string();
        let token_type = req
            .application_property("type")
            .and_then(as_str)
            .unwrap_or("")
            .to_string();
        let token = match management::body_value(&req) {
            Ok(Value::String(s)) => s,
            Ok(Value::Binary(b)) => String::from_utf8_lossy(&b).into_owned(),
            _ => String::new(),
        };
        let now = crate::broker::now_ms() as u64 / 1000;
        let reply = if op != "put-token" {
            Reply {
                status: 400,
                description: format!("unsupported operation {op:?}"),
                condition: None,
                body: None,
            }
        } else if token.starts_with(sas::SAS_PREFIX) {
            let key = self.settings.rotation.key(&self.settings.key);
            match sas::validate(&token, &self.settings.key_name, &key, now) {
                Ok(claims)
                    if address::covers(
                        &address::normalize(&claims.audience),
                        &address::normalize(&name),
                    ) =>
                {
                    self.grants.push(Grant {
                        entity: address::normalize(&name),
                        expires_at: claims.expires_at,
                        key_epoch: Some(self.settings.rotation.epoch()),
                        rights: Rights::ALL,
                    });
                    self.settings.cbs.count(&self.settings.cbs.sas_accepted);
                    Reply {
                        status: 202,
                        description: "Accepted".into(),
                        condition: None,
                        body: None,
                    }
                }
                Ok(_) => Reply {
                    status: 401,
                    description: "The token audience does not cover the requested resource.".into(),
                    condition: None,
                    body: None,
                },
                Err(e) => Reply {
                    status: 401,
                    description: format!("InvalidSignature: {e}"),
                    condition: None,
                    body: None,
                },
            }
        } else if token_type == "jwt" && !token.is_empty() {
            self.put_jwt(&name, &token)
        } else {
            Reply {
                status: 401,
                description: "Unsupported or empty token.".into(),
                condition: None,
                body: None,
            }
        };
        if reply.status != 202 && token.starts_with(sas::SAS_PREFIX) {
            self.settings.cbs.count(&self.settings.cbs.sas_refused);
        }
        if self.grants.len() > 10_000 {
            self.grants.retain(|g| g.expires_at > now);
            self.grants.truncate(10_000);
        }
        tracing::debug!(peer = %self.peer, audience = %name, token_type, status = reply.status, "cbs put-token");
        let bytes =
            management::response_message(&req, "status-code", "status-description", &reply).ok()?;
        Some((req, bytes))
    }

    /// A `jwt` put-token: an Entra ID access token validated against the namespace's authority
    /// (`entra.rs`); refused when the namespace trusts none. A valid token is accepted whatever
    /// roles its identity holds: the rights are checked when a link attaches.
    fn put_jwt(&mut self, name: &str, token: &str) -> Reply {
        let cbs = self.settings.cbs.clone();
        let refuse = |description: String| {
            cbs.count(&cbs.jwt_refused);
            Reply {
                status: 401,
                description,
                condition: None,
                body: None,
            }
        };
        let Some(entra) = self.settings.entra.clone() else {
            return refuse("InvalidIssuer: this namespace trusts no Entra ID authority.".into());
        };
        match entra.validate(token) {
            Ok(claims) => {
                let entity = address::normalize(name);
                let rights = entra.rights(&claims.oid, &entity);
                tracing::debug!(peer = %self.peer, entity, oid = %claims.oid, ?rights, "entra token accepted");
                self.grants.push(Grant {
                    entity,
                    expires_at: claims.expires_at,
                    key_epoch: None,
                    rights,
                });
                cbs.count(&cbs.jwt_accepted);
                Reply {
                    status: 202,
                    description: "Accepted".into(),
                    condition: None,
                    body: None,
                }
            }
            Err(e) => refuse(e.to_string()),
        }
    }

    /// Sends a reply on the replies link matching the request's reply-to (or the node).
    async fn route_reply(
        &mut self,
        channel: u16,
        request_handle: u32,
        reply: Option<(AmqpMessage, Vec<u8>)>,
    ) -> Result<(), ConnectionError> {
        let Some((req, bytes)) = reply else {
            return Ok(());
        };
        let Some(s) = self.sessions.get_mut(&channel) else {
            return Ok(());
        };
        let node = s
            .links
            .get(&request_handle)
            .map(|l| address::normalize(&l.node))
            .unwrap_or_default();
        let reply_to = req.properties.as_ref().and_then(|p| p.reply_to.clone());
        let target = s
            .links
            .iter()
            .filter(|(_, l)| matches!(l.kind, LinkKind::Replies))
            .find(|(_, l)| reply_to.is_some() && l.peer_address == reply_to)
            .or_else(|| {
                s.links
                    .iter()
                    .filter(|(_, l)| matches!(l.kind, LinkKind::Replies))
                    .find(|(_, l)| address::normalize(&l.node) == node)
            })
            .map(|(h, _)| *h);
        let Some(h) = target else {
            tracing::debug!(peer = %self.peer, ?reply_to, "no link to reply on");
            return Ok(());
        };
        if let Some(l) = s.links.get_mut(&h) {
            if l.pending.len() < MAX_PENDING_REPLIES {
                l.pending.push_back(bytes);
            }
        }
        self.pump_link(channel, h).await
    }

    /// Detaches entity links whose token has expired (Service Bus does the same).
    async fn drop_unauthorized_links(&mut self) -> Result<(), ConnectionError> {
        let mut expired = Vec::new();
        for (c, s) in &self.sessions {
            for (h, l) in &s.links {
                let need = match l.kind {
                    LinkKind::Inbound { .. } => Need::Send,
                    LinkKind::Outbound { .. } => Need::Listen,
                    LinkKind::ManagementRequests { .. } => Need::Any,
                    LinkKind::CbsRequests | LinkKind::Replies => continue,
                };
                if !self.authorized(&address::normalize(&l.node), need) {
                    expired.push((*c, *h));
                }
            }
        }
        for (channel, handle) in expired {
            let Some(s) = self.sessions.get_mut(&channel) else {
                continue;
            };
            let Some(l) = s.links.remove(&handle) else {
                continue;
            };
            s.detached.insert(handle);
            s.unsettled.retain(|_, u| u.remote_handle != handle);
            let ch = s.local_channel;
            self.broker.release_owner(l.owner);
            tracing::debug!(peer = %self.peer, link = %l.name, "token expired; detaching link");
            let e = err(
                "amqp:unauthorized-access",
                "The token has expired, its key was regenerated or its identity lost its role.",
            );
            let detach = Detach {
                handle: Handle(l.local_handle),
                closed: true,
                error: Some(e),
            };
            self.send(ch, &detach).await?;
        }
        Ok(())
    }

    async fn pump_all(&mut self) -> Result<(), ConnectionError> {
        let pending: Vec<(u16, Attach, Instant)> = self
            .sessions
            .iter_mut()
            .flat_map(|(c, s)| s.pending.drain(..).map(move |(a, d)| (*c, a, d)))
            .collect();
        for (channel, attach, deadline) in pending {
            self.attach_link(channel, attach, Some(deadline)).await?;
        }
        let keys: Vec<(u16, u32)> = self
            .sessions
            .iter()
            .flat_map(|(c, s)| {
                s.links
                    .iter()
                    .filter(|(_, l)| l.credit > 0 || l.drain)
                    .map(move |(h, _)| (*c, *h))
            })
            .collect();
        for (c, h) in keys {
            self.pump_link(c, h).await?;
        }
        Ok(())
    }

    /// Sends what a sending link has credit for; answers drain requests.
    async fn pump_link(&mut self, channel: u16, remote_handle: u32) -> Result<(), ConnectionError> {
        let max_frame = self.remote_max_frame;
        loop {
            let Some(s) = self.sessions.get_mut(&channel) else {
                return Ok(());
            };
            let ch = s.local_channel;
            let Some(l) = s.links.get_mut(&remote_handle) else {
                return Ok(());
            };
            if l.credit == 0 {
                break;
            }
            let (payload, settled, tag, token) = match &l.kind {
                LinkKind::Replies => match l.pending.pop_front() {
                    Some(p) => (p, true, Uuid::new_v4(), None),
                    None => break,
                },
                LinkKind::Outbound {
                    entity,
                    mode,
                    session,
                } => {
                    if s.unsettled.len() >= MAX_UNSETTLED {
                        break;
                    }
                    let sess = session.as_deref().map(|sid| (sid, l.owner));
                    match self.broker.receive(entity, *mode, sess) {
                        Ok(Some(d)) => {
                            let settled = *mode == ReceiveMode::ReceiveAndDelete;
                            let tag = d.lock_token.unwrap_or_else(Uuid::new_v4);
                            (
                                d.payload,
                                settled,
                                tag,
                                d.lock_token.map(|t| (entity.key.clone(), t)),
                            )
                        }
                        Ok(None) => break,
                        Err(e @ BrokerError::SessionLockLost)
                        | Err(e @ BrokerError::NotFound(_)) => {
                            let local = l.local_handle;
                            s.links.remove(&remote_handle);
                            s.detached.insert(remote_handle);
                            let detach = Detach {
                                handle: Handle(local),
                                closed: true,
                                error: Some(err(e.condition(), e.to_string())),
                            };
                            return self.send(ch, &detach).await;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "receive failed");
                            break;
                        }
                    }
                }
                _ => break,
            };
            let delivery_id = s.next_delivery_id;
            s.next_delivery_id = s.next_delivery_id.wrapping_add(1);
            let Some(l) = s.links.get_mut(&remote_handle) else {
                return Ok(());
            };
            l.credit -= 1;
            l.delivery_count = l.delivery_count.wrapping_add(1);
            let transfer = Transfer {
                handle: Handle(l.local_handle),
                delivery_id: Some(delivery_id),
                // Service Bus lock tokens are the delivery tags, in .NET GUID byte order.
                delivery_tag: Some(ByteBuf::from(tag.to_bytes_le().to_vec())),
                message_format: Some(0),
                settled: Some(settled),
                more: false,
                rcv_settle_mode: None,
                state: None,
                resume: false,
                aborted: false,
                batchable: false,
            };
            if let Some((key, token)) = token {
                s.unsettled.insert(
                    delivery_id,
                    Unsettled {
                        remote_handle,
                        key,
                        token,
                    },
                );
                tracing::debug!(peer = %self.peer, link = %l.name, delivery_id, lock_token = %token, "delivered");
            }
            tracing::trace!(peer = %self.peer, channel = ch, ?transfer, "frame out");
            let frames = codec::encode_transfer(ch, &transfer, &payload, max_frame)?;
            s.next_outgoing_id = s.next_outgoing_id.wrapping_add(frames.len() as u32);
            for f in frames {
                self.write(f).await?;
            }
        }
        // Drain: nothing more to send, so consume the remaining credit and tell the receiver.
        let Some(s) = self.sessions.get_mut(&channel) else {
            return Ok(());
        };
        let ch = s.local_channel;
        let (nid, nod) = (s.next_incoming_id, s.next_outgoing_id);
        let inc = s.incoming_left;
        let Some(l) = s.links.get_mut(&remote_handle) else {
            return Ok(());
        };
        if l.drain {
            l.delivery_count = l.delivery_count.wrapping_add(l.credit);
            l.credit = 0;
            l.drain = false;
            let flow = Flow {
                next_incoming_id: Some(nid),
                incoming_window: inc,
                next_outgoing_id: nod,
                outgoing_window: WINDOW,
                handle: Some(Handle(l.local_handle)),
                delivery_count: Some(l.delivery_count),
                link_credit: Some(0),
                available: Some(0),
                drain: true,
                echo: false,
                properties: None,
            };
            self.send(ch, &flow).await?;
        }
        Ok(())
    }

    async fn on_disposition(
        &mut self,
        channel: u16,
        d: Disposition,
    ) -> Result<(), ConnectionError> {
        if d.role != Role::Receiver {
            return Ok(()); // the client settles deliveries we received; we already settled them
        }
        let Some(s) = self.sessions.get_mut(&channel) else {
            return Ok(());
        };
        let ch = s.local_channel;
        let last = d.last.unwrap_or(d.first);
        if last.wrapping_sub(d.first) > MAX_UNSETTLED as u32 {
            return Ok(());
        }
        let mut replies = Vec::new();
        let mut id = d.first;
        loop {
            if let Some(u) = s.unsettled.remove(&id) {
                let settlement = match &d.state {
                    Some(DeliveryState::Accepted(_)) => Settlement::Complete,
                    Some(DeliveryState::Modified(m)) if m.undeliverable_here == Some(true) => {
                        Settlement::Defer(fields_to_map(&m.message_annotations))
                    }
                    Some(DeliveryState::Modified(m)) => {
                        Settlement::Abandon(fields_to_map(&m.message_annotations))
                    }
                    Some(DeliveryState::Rejected(r)) => {
                        let info = r.error.as_ref().and_then(|e| e.info.as_deref());
                        let get = |k: &str| {
                            info.and_then(|i| {
                                i.iter()
                                    .find(|(s, _)| s.as_str() == k)
                                    .and_then(|(_, v)| as_str(v).map(str::to_string))
                            })
                        };
                        Settlement::DeadLetter {
                            reason: get("DeadLetterReason"),
                            description: get("DeadLetterErrorDescription")
                                .or_else(|| r.error.as_ref().and_then(|e| e.description.clone())),
                            properties: None,
                        }
                    }
                    _ => Settlement::Release,
                };
                let result = self.broker.settle(&u.key, u.token, settlement);
                tracing::debug!(peer = %self.peer, delivery_id = id, lock_token = %u.token, state = ?d.state, ok = result.is_ok(), "disposition");
                if !d.settled {
                    let echo = match (&result, &d.state) {
                        (Err(e), _) => DeliveryState::Rejected(Rejected {
                            error: Some(err(e.condition(), e.to_string())),
                        }),
                        (Ok(()), Some(DeliveryState::Accepted(_))) => {
                            DeliveryState::Accepted(Accepted {})
                        }
                        (Ok(()), Some(DeliveryState::Modified(m))) => {
                            DeliveryState::Modified(Modified {
                                delivery_failed: m.delivery_failed,
                                undeliverable_here: m.undeliverable_here,
                                message_annotations: None,
                            })
                        }
                        (Ok(()), Some(DeliveryState::Rejected(_))) => {
                            DeliveryState::Rejected(Rejected { error: None })
                        }
                        (Ok(()), _) => DeliveryState::Released(Released {}),
                    };
                    replies.push((id, echo));
                }
            } else if !d.settled {
                replies.push((
                    id,
                    DeliveryState::Rejected(Rejected {
                        error: Some(err(
                            "com.microsoft:message-lock-lost",
                            BrokerError::LockLost.to_string(),
                        )),
                    }),
                ));
            }
            if id == last {
                break;
            }
            id = id.wrapping_add(1);
        }
        for (id, state) in replies {
            let reply = Disposition {
                role: Role::Sender,
                first: id,
                last: None,
                settled: true,
                state: Some(state),
                batchable: false,
            };
            self.send(ch, &reply).await?;
        }
        Ok(())
    }

    /// Detaches a link on our own initiative with `error`; frames still in flight on it are
    /// dropped until the client answers.
    async fn detach_link(
        &mut self,
        channel: u16,
        remote_handle: u32,
        error: definitions::Error,
    ) -> Result<(), ConnectionError> {
        let Some(s) = self.sessions.get_mut(&channel) else {
            return Ok(());
        };
        let Some(l) = s.links.remove(&remote_handle) else {
            return Ok(());
        };
        s.detached.insert(remote_handle);
        s.unsettled.retain(|_, u| u.remote_handle != remote_handle);
        let ch = s.local_channel;
        self.broker.release_owner(l.owner);
        tracing::debug!(peer = %self.peer, link = %l.name, condition = ?error.condition, "detaching link");
        let detach = Detach {
            handle: Handle(l.local_handle),
            closed: true,
            error: Some(error),
        };
        self.send(ch, &detach).await
    }

    /// Ends a session on our own initiative with `error`; the connection and its other
    /// sessions stay up.
    async fn end_session(
        &mut self,
        channel: u16,
        error: definitions::Error,
    ) -> Result<(), ConnectionError> {
        let Some(s) = self.sessions.remove(&channel) else {
            return Ok(());
        };
        for l in s.links.values() {
            self.broker.release_owner(l.owner);
        }
        tracing::debug!(peer = %self.peer, channel, condition = ?error.condition, "ending session");
        self.send(s.local_channel, &End { error: Some(error) })
            .await
    }

    /// Answers a performative that could not be mapped (AMQP 1.0 §2.8.15 `decode-error`) at the
    /// narrowest scope the spec allows: the link it names (detach with error), else its session
    /// (end with error); only an undecodable open or close, or a frame outside any session,
    /// closes the connection. Returns false when the connection is closed.
    async fn on_undecodable(
        &mut self,
        channel: u16,
        code: Option<u64>,
        value: Option<&Value>,
        reason: String,
    ) -> Result<bool, ConnectionError> {
        use crate::normalize::{list_bool, list_str, list_uint};
        let what = code.map(performative_name).unwrap_or("frame");
        tracing::warn!(peer = %self.peer, channel, performative = what, %reason, "undecodable performative answered with amqp:decode-error");
        let e = err(
            "amqp:decode-error",
            format!("cannot decode the {what} frame: {reason}"),
        );
        let field = |i: usize| value.and_then(|v| list_uint(v, i));
        let in_session = self.sessions.contains_key(&channel);
        match code {
            Some(0x10) | Some(0x18) => {
                self.close(Some(e)).await?;
                return Ok(false);
            }
            Some(0x11) => {
                // Begin: answer with a begin and an end carrying the error (§2.5.5).
                let _ = self.sessions.remove(&channel);
                let reply = Begin {
                    remote_channel: Some(channel),
                    next_outgoing_id: 1,
                    incoming_window: 0,
                    outgoing_window: 0,
                    handle_max: Handle(0),
                    offered_capabilities: None,
                    desired_capabilities: None,
                    properties: None,
                };
                self.send(channel, &reply).await?;
                self.send(channel, &End { error: Some(e) }).await?;
                return Ok(true);
            }
            _ if !in_session => {
                self.close(Some(e)).await?;
                return Ok(false);
            }
            Some(0x12) => {
                let name = value.and_then(|v| list_str(v, 0));
                let handle = field(1);
                let role = value.and_then(|v| list_bool(v, 2));
                if let (Some(name), Some(handle), Some(role)) = (name, handle, role) {
                    let Some(s) = self.sessions.get(&channel) else {
                        return Ok(true);
                    };
                    let used: std::collections::HashSet<u32> =
                        s.links.values().map(|l| l.local_handle).collect();
                    let local = (0..).find(|h| !used.contains(h)).unwrap_or(0);
                    let attach = Attach {
                        name,
                        handle: Handle(handle),
                        role: if role { Role::Receiver } else { Role::Sender },
                        snd_settle_mode: SenderSettleMode::Mixed,
                        rcv_settle_mode: definitions::ReceiverSettleMode::First,
                        source: None,
                        target: None,
                        unsettled: None,
                        incomplete_unsettled: false,
                        initial_delivery_count: None,
                        max_message_size: None,
                        offered_capabilities: None,
                        desired_capabilities: None,
                        properties: None,
                    };
                    self.refuse_attach(channel, attach, local, e).await?;
                    return Ok(true);
                }
            }
            Some(0x13) | Some(0x14) | Some(0x16) => {
                if code == Some(0x14) {
                    if let Some(s) = self.sessions.get_mut(&channel) {
                        s.next_incoming_id = s.next_incoming_id.wrapping_add(1);
                    }
                }
                let handle = if code == Some(0x13) {
                    field(4)
                } else {
                    field(0)
                };
                let attached = handle.filter(|h| {
                    self.sessions
                        .get(&channel)
                        .is_some_and(|s| s.links.contains_key(h) || s.detached.contains(h))
                });
                if let Some(h) = attached {
                    let answered = code == Some(0x16)
                        && self
                            .sessions
                            .get_mut(&channel)
                            .is_some_and(|s| s.detached.remove(&h));
                    if !answered {
                        self.detach_link(channel, h, e).await?;
                    }
                    return Ok(true);
                }
                // A session-level flow, or a handle we cannot read: the session ends below.
            }
            Some(0x15) => {
                // Disposition: the links whose deliveries it names are detached.
                let first = field(1);
                let last = field(2).or(first);
                if let (Some(first), Some(last)) = (first, last) {
                    let handles: std::collections::BTreeSet<u32> = self
                        .sessions
                        .get(&channel)
                        .map(|s| {
                            s.unsettled
                                .iter()
                                .filter(|(id, _)| {
                                    id.wrapping_sub(first) <= last.wrapping_sub(first)
                                })
                                .map(|(_, u)| u.remote_handle)
                                .collect()
                        })
                        .unwrap_or_default();
                    if !handles.is_empty() {
                        for h in handles {
                            self.detach_link(channel, h, e.clone()).await?;
                        }
                        return Ok(true);
                    }
                }
            }
            _ => {}
        }
        self.end_session(channel, e).await?;
        Ok(true)
    }

    async fn on_detach(&mut self, channel: u16, d: Detach) -> Result<(), ConnectionError> {
        let Some(s) = self.sessions.get_mut(&channel) else {
            return Ok(());
        };
        let ch = s.local_channel;
        if s.detached.remove(&d.handle.0) {
            return Ok(()); // the client answers a detach we sent
        }
        if let Some(l) = s.links.remove(&d.handle.0) {
            tracing::debug!(peer = %self.peer, link = %l.name, error = ?d.error, "detach");
            self.broker.release_owner(l.owner);
            s.unsettled.retain(|_, u| u.remote_handle != d.handle.0);
            return self
                .send(
                    ch,
                    &Detach {
                        handle: Handle(l.local_handle),
                        closed: d.closed,
                        error: None,
                    },
                )
                .await;
        }
        if let Some(i) = s.pending.iter().position(|(a, _)| a.handle.0 == d.handle.0) {
            // A next-available-session attach the client gave up on: answer attach + detach.
            let (attach, _) = s.pending.remove(i);
            let used: std::collections::HashSet<u32> =
                s.links.values().map(|l| l.local_handle).collect();
            let local = (0..).find(|h| !used.contains(h)).unwrap_or(0);
            let e = err("com.microsoft:timeout", "no session became available");
            return self.refuse_attach(channel, attach, local, e).await;
        }
        Ok(())
    }
}

/// The performative a descriptor code names, for logs and error descriptions.
fn performative_name(code: u64) -> &'static str {
    match code {
        0x10 => "open",
        0x11 => "begin",
        0x12 => "attach",
        0x13 => "flow",
        0x14 => "transfer",
        0x15 => "disposition",
        0x16 => "detach",
        0x17 => "end",
        0x18 => "close",
        _ => "unknown",
    }
}

/// The link's `com.microsoft:timeout` (ms), default 60 s, at most 10 minutes.
fn link_timeout(properties: Option<&Fields>) -> Duration {
    let ms = properties
        .and_then(|p| {
            p.iter()
                .find(|(k, _)| k.as_str() == "com.microsoft:timeout")
                .map(|(_, v)| v)
        })
        .and_then(|v| match v {
            Value::Uint(n) => Some(*n as u64),
            Value::Ulong(n) => Some(*n),
            Value::Int(n) => u64::try_from(*n).ok(),
            Value::Long(n) => u64::try_from(*n).ok(),
            _ => None,
        })
        .unwrap_or(60_000);
    Duration::from_millis(ms.min(600_000))
}

fn fields_to_map(fields: &Option<Fields>) -> Option<OrderedMap<Value, Value>> {
    fields.as_ref().map(|f| {
        let mut m = OrderedMap::new();
        for (k, v) in f.iter() {
            m.insert(Value::String(k.as_str().to_string()), v.clone());
        }
        m
    })
}
