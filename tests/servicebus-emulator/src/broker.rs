//! The in-memory broker: queues, topics with subscriptions, dead-letter queues, locks,
//! deferral, scheduling, sessions and duplicate detection. All state sits behind one mutex;
//! every change bumps a watch counter so connections know to retry pending receives.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex, MutexGuard,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use fe2o3_amqp_types::messaging::Header;
use serde_amqp::{primitives::OrderedMap, primitives::Timestamp, Value};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{
    config::{Config, ResolvedProperties},
    message::AmqpMessage,
    rules::Filter,
};

/// Reason written when MaxDeliveryCount is exceeded.
pub const MAX_DELIVERY_REASON: &str = "MaxDeliveryCountExceeded";
/// Description written when MaxDeliveryCount is exceeded.
pub const MAX_DELIVERY_DESCRIPTION: &str =
    "Message couldn't be consumed after maximum delivery attempts.";
/// Reason written when a message expires into the dead-letter queue.
pub const TTL_REASON: &str = "TTLExpiredException";
/// Upper bound of messages held per entity (active + DLQ + deferred + scheduled).
pub const MAX_MESSAGES_PER_ENTITY: usize = 100_000;

/// Milliseconds since the unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Broker errors, each mapping to a Service Bus error condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// No such entity.
    #[error("the messaging entity '{0}' could not be found")]
    NotFound(String),
    /// The lock token is unknown or expired.
    #[error("the lock supplied is invalid: either the lock expired, or the message has already been removed from the queue")]
    LockLost,
    /// The sequence number names no deferred message.
    #[error("the message with sequence number {0} was not found")]
    MessageNotFound(i64),
    /// The session is locked by another receiver or does not exist.
    #[error(
        "the requested session '{0}' cannot be accepted; it may be locked by another receiver"
    )]
    SessionCannotBeLocked(String),
    /// No session is available.
    #[error("no unlocked session is available")]
    NoSessionAvailable,
    /// The session lock was lost.
    #[error("the session lock has expired or was lost")]
    SessionLockLost,
    /// The entity holds too many messages.
    #[error("the entity is full ({MAX_MESSAGES_PER_ENTITY} messages)")]
    Full,
    /// Operation not valid for this entity.
    #[error("{0}")]
    Invalid(String),
    /// A fault injected by a test ([`Broker::fail_sends`]): answer sends with this condition.
    #[error("{description}")]
    Injected {
        /// The error condition symbol.
        condition: String,
        /// The error description.
        description: String,
    },
}

/// Longest MessageId, SessionId and partition key Service Bus accepts, in characters.
pub const MAX_ID_CHARS: usize = 128;

impl BrokerError {
    /// The AMQP error condition Service Bus uses for this error.
    pub fn condition(&self) -> &str {
        match self {
            BrokerError::NotFound(_) => "amqp:not-found",
            BrokerError::LockLost => "com.microsoft:message-lock-lost",
            BrokerError::MessageNotFound(_) => "com.microsoft:message-not-found",
            BrokerError::SessionCannotBeLocked(_) => "com.microsoft:session-cannot-be-locked",
            BrokerError::NoSessionAvailable => "com.microsoft:timeout",
            BrokerError::SessionLockLost => "com.microsoft:session-lock-lost",
            BrokerError::Full => "com.microsoft:server-busy",
            BrokerError::Invalid(_) => "amqp:invalid-field",
            BrokerError::Injected { condition, .. } => condition,
        }
    }

    /// The management status code for this error.
    pub fn status_code(&self) -> i32 {
        match self {
            BrokerError::NotFound(_) | BrokerError::MessageNotFound(_) => 404,
            BrokerError::LockLost | BrokerError::SessionLockLost => 410,
            BrokerError::SessionCannotBeLocked(_) => 409,
            BrokerError::NoSessionAvailable => 408,
            BrokerError::Full => 503,
            BrokerError::Invalid(_) => 400,
            BrokerError::Injected { .. } => 503,
        }
    }
}

/// Which sub-queue of an entity a link reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntityRef {
    /// Lower-case entity path: `queue` or `topic/subscriptions/sub`.
    pub key: String,
    /// The entity's dead-letter queue.
    pub dead_letter: bool,
}

/// How a receiver settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiveMode {
    /// Messages are locked and settled later.
    PeekLock,
    /// Messages are removed on delivery.
    ReceiveAndDelete,
}

/// A settlement requested by a client.
#[derive(Debug, Clone)]
pub enum Settlement {
    /// Remove the message.
    Complete,
    /// Unlock, delivery count + 1, with optional properties to modify.
    Abandon(Option<OrderedMap<Value, Value>>),
    /// Unlock without counting a delivery (AMQP `released`).
    Release,
    /// Move to the deferred set.
    Defer(Option<OrderedMap<Value, Value>>),
    /// Move to the dead-letter queue.
    DeadLetter {
        /// `DeadLetterReason`.
        reason: Option<String>,
        /// `DeadLetterErrorDescription`.
        description: Option<String>,
        /// Extra properties to modify.
        properties: Option<OrderedMap<Value, Value>>,
    },
}

/// A message handed to a receiver.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The encoded message, broker annotations included.
    pub payload: Vec<u8>,
    /// The lock token (peek-lock only).
    pub lock_token: Option<Uuid>,
    /// Sequence number.
    pub sequence_number: i64,
    /// Lock expiry in unix ms (peek-lock only).
    pub locked_until: Option<i64>,
}

/// Message counts of one entity, for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntityCounts {
    /// Available to receivers (not locked).
    pub active: usize,
    /// Active messages locked by a receiver (locked DLQ and deferred messages count there).
    pub locked: usize,
    /// In the dead-letter queue (locked DLQ messages included).
    pub dead_letter: usize,
    /// Scheduled for later.
    pub scheduled: usize,
    /// Deferred.
    pub deferred: usize,
}

#[derive(Debug, Clone)]
struct Stored {
    seq: i64,
    expires_ms: Option<i64>,
    scheduled_ms: Option<i64>,
    delivery_count: u32,
    msg: AmqpMessage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Active,
    DeadLetter,
    Deferred,
}

#[derive(Debug)]
struct Lock {
    stored: Stored,
    until_ms: i64,
    origin: Origin,
}

#[derive(Debug, Default)]
struct SessionInfo {
    owner: Option<(u64, i64)>,
    state: Option<Vec<u8>>,
}

#[derive(Debug, Default)]
struct DuplicateDetector {
    seen: HashMap<String, i64>,
    order: VecDeque<(i64, String)>,
}

impl DuplicateDetector {
    /// Returns true when `id` was seen within `window_ms`; records it otherwise.
    fn check(&mut self, id: &str, now: i64, window_ms: i64) -> bool {
        while let Some((t, _)) = self.order.front() {
            if *t + window_ms > now {
                break;
            }
            if let Some((t, old)) = self.order.pop_front() {
                if self.seen.get(&old) == Some(&t) {
                    self.seen.remove(&old);
                }
            }
        }
        if self.seen.contains_key(id) {
            return true;
        }
        self.seen.insert(id.to_string(), now);
        self.order.push_back((now, id.to_string()));
        false
    }
}

#[derive(Debug)]
struct Entity {
    name: String,
    props: ResolvedProperties,
    next_seq: i64,
    active: BTreeMap<i64, Stored>,
    dead_letter: BTreeMap<i64, Stored>,
    deferred: BTreeMap<i64, Stored>,
    scheduled: BTreeMap<i64, Stored>,
    locks: HashMap<Uuid, Lock>,
    sessions: HashMap<String, SessionInfo>,
    duplicates: DuplicateDetector,
}

impl Entity {
    fn new(name: String, props: ResolvedProperties) -> Self {
        Entity {
            name,
            props,
            next_seq: 1,
            active: BTreeMap::new(),
            dead_letter: BTreeMap::new(),
            deferred: BTreeMap::new(),
            scheduled: BTreeMap::new(),
            locks: HashMap::new(),
            sessions: HashMap::new(),
            duplicates: DuplicateDetector::default(),
        }
    }

    fn len(&self) -> usize {
        self.active.len()
            + self.dead_letter.len()
            + self.deferred.len()
            + self.scheduled.len()
            + self.locks.len()
    }

    fn lock_ms(&self) -> i64 {
        self.props.lock_duration.as_millis() as i64
    }

    /// Assigns a sequence number and stores the message (active or scheduled).
    /// `topic_seq` is the topic-wide sequence number of a fanned-out message, so every
    /// subscription's copy carries the same number (as in Service Bus).
    fn enqueue(
        &mut self,
        mut msg: AmqpMessage,
        now: i64,
        ttl_ms: Option<i64>,
        topic_seq: Option<i64>,
    ) -> Result<i64, BrokerError> {
        if self.len() >= MAX_MESSAGES_PER_ENTITY {
            return Err(BrokerError::Full);
        }
        let seq = topic_seq.unwrap_or(self.next_seq);
        self.next_seq = self.next_seq.max(seq + 1);
        let scheduled_ms = match msg.annotation("x-opt-scheduled-enqueue-time") {
            Some(Value::Timestamp(t)) if t.milliseconds() > now => Some(t.milliseconds()),
            _ => None,
        };
        let enqueued = scheduled_ms.unwrap_or(now);
        let default_ttl = self.props.default_ttl.as_millis() as i64;
        let ttl = ttl_ms.map(|t| t.min(default_ttl)).unwrap_or(default_ttl);
        msg.set_annotation(
            "x-opt-enqueued-time",
            Value::Timestamp(Timestamp::from_milliseconds(enqueued)),
        );
        msg.set_annotation("x-opt-sequence-number", Value::Long(seq));
        msg.set_annotation("x-opt-enqueue-sequence-number", Value::Long(seq));
        let stored = Stored {
            seq,
            expires_ms: Some(enqueued.saturating_add(ttl)),
            scheduled_ms,
            delivery_count: 0,
            msg,
        };
        if scheduled_ms.is_some() {
            self.scheduled.insert(seq, stored);
        } else {
            self.active.insert(seq, stored);
        }
        Ok(seq)
    }

    fn dead_letter(&mut self, mut stored: Stored, reason: Option<&str>, description: Option<&str>) {
        if let Some(r) = reason {
            stored
                .msg
                .set_application_property("DeadLetterReason", Value::String(r.to_string()));
        }
        if let Some(d) = description {
            stored.msg.set_application_property(
                "DeadLetterErrorDescription",
                Value::String(d.to_string()),
            );
        }
        stored
            .msg
            .set_annotation("x-opt-deadletter-source", Value::String(self.name.clone()));
        stored.expires_ms = None;
        tracing::debug!(entity = %self.name, seq = stored.seq, reason, "dead-lettered");
        self.dead_letter.insert(stored.seq, stored);
    }

    /// Puts a previously locked message back after an abandon or a lock expiry.
    fn return_after_failure(&mut self, mut stored: Stored, origin: Origin, count: bool) {
        if count {
            stored.delivery_count += 1;
        }
        match origin {
            Origin::DeadLetter => {
                self.dead_letter.insert(stored.seq, stored);
            }
            Origin::Deferred => {
                self.deferred.insert(stored.seq, stored);
            }
            Origin::Active => {
                if stored.delivery_count >= self.props.max_delivery_count {
                    self.dead_letter(
                        stored,
                        Some(MAX_DELIVERY_REASON),
                        Some(MAX_DELIVERY_DESCRIPTION),
                    );
                } else {
                    self.active.insert(stored.seq, stored);
                }
            }
        }
    }

    /// Applies time: expired locks, due scheduled messages, TTL.
    fn sweep(&mut self, now: i64) -> bool {
        let mut changed = false;
        let expired: Vec<Uuid> = self
            .locks
            .iter()
            .filter(|(_, l)| l.until_ms <= now)
            .map(|(t, _)| *t)
            .collect();
        for token in expired {
            if let Some(lock) = self.locks.remove(&token) {
                tracing::debug!(entity = %self.name, seq = lock.stored.seq, %token, "lock expired");
                self.return_after_failure(lock.stored, lock.origin, true);
                changed = true;
            }
        }
        let due: Vec<i64> = self
            .scheduled
            .iter()
            .filter(|(_, s)| s.scheduled_ms.is_none_or(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        for seq in due {
            if let Some(mut s) = self.scheduled.remove(&seq) {
                s.scheduled_ms = None;
                self.active.insert(seq, s);
                changed = true;
            }
        }
        let expired: Vec<i64> = self
            .active
            .iter()
            .filter(|(_, s)| s.expires_ms.is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        for seq in expired {
            if let Some(s) = self.active.remove(&seq) {
                changed = true;
                if self.props.dead_lettering_on_message_expiration {
                    self.dead_letter(
                        s,
                        Some(TTL_REASON),
                        Some("The message expired and was dead lettered."),
                    );
                } else {
                    tracing::debug!(entity = %self.name, seq, "message expired");
                }
            }
        }
        changed
    }

    fn session_lock(&self, session: &str, owner: u64, now: i64) -> bool {
        self.sessions
            .get(session)
            .and_then(|s| s.owner)
            .is_some_and(|(o, until)| o == owner && until > now)
    }
}

/// Encodes a stored message for delivery, with broker annotations.
fn render(stored: &Stored, lock: Option<(Uuid, i64)>, state: i64) -> Result<Vec<u8>, BrokerError> {
    let mut msg = stored.msg.clone();
    let mut header = msg.header.clone().unwrap_or(Header {
        durable: false,
        priority: Default::default(),
        ttl: None,
        first_acquirer: false,
        delivery_count: 0,
    });
    header.delivery_count = stored.delivery_count;
    msg.header = Some(header);
    if let Some((_, until)) = lock {
        msg.set_annotation(
            "x-opt-locked-until",
            Value::Timestamp(Timestamp::from_milliseconds(until)),
        );
    }
    if state != 0 {
        msg.set_annotation("x-opt-message-state", Value::Int(state as i32));
    }
    let delivery_annotations = lock.map(|(token, _)| {
        let mut m = OrderedMap::new();
        m.insert(
            Value::Symbol("x-opt-lock-token".into()),
            Value::Uuid(serde_amqp::primitives::Uuid::from(*token.as_bytes())),
        );
        m
    });
    msg.encode(delivery_annotations.as_ref())
        .map_err(|e| BrokerError::Invalid(format!("cannot encode message: {e}")))
}

#[derive(Debug)]
struct Topic {
    name: String,
    props: ResolvedProperties,
    subscriptions: Vec<(String, Vec<Filter>)>,
    duplicates: DuplicateDetector,
    next_seq: i64,
}

#[derive(Debug, Default)]
struct State {
    entities: HashMap<String, Entity>,
    topics: HashMap<String, Topic>,
    /// Injected send faults by entity key: condition, description, until (ms).
    faults: HashMap<String, (String, String, i64)>,
}

/// What an address resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A queue (send and receive).
    Queue(String),
    /// A topic (send only).
    Topic(String),
    /// A subscription (receive only).
    Subscription(String),
}

/// The broker. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Broker {
    state: Mutex<State>,
    changes: watch::Sender<u64>,
    next_owner: AtomicU64,
}

/// Properties of an entity that links need to know.
#[derive(Debug, Clone)]
pub struct EntityInfo {
    /// Display name.
    pub name: String,
    /// Sessions required.
    pub requires_session: bool,
    /// Lock duration in ms.
    pub lock_ms: i64,
}

impl Broker {
    /// Builds the entities of `config` (all namespaces merged).
    pub fn new(config: &Config) -> Result<Self, crate::config::ConfigError> {
        let mut state = State::default();
        for ns in &config.user_config.namespaces {
            for q in &ns.queues {
                let key = q.name.to_ascii_lowercase();
                state
                    .entities
                    .insert(key, Entity::new(q.name.clone(), q.properties.resolve()?));
            }
            for t in &ns.topics {
                let tkey = t.name.to_ascii_lowercase();
                let mut subs = Vec::new();
                for s in &t.subscriptions {
                    let key = format!("{tkey}/subscriptions/{}", s.name.to_ascii_lowercase());
                    let name = format!("{}/Subscriptions/{}", t.name, s.name);
                    state
                        .entities
                        .insert(key.clone(), Entity::new(name, s.properties.resolve()?));
                    let filters = if s.rules.is_empty() {
                        vec![Filter::True]
                    } else {
                        s.rules.iter().map(Filter::from_rule).collect()
                    };
                    subs.push((key, filters));
                }
                state.topics.insert(
                    tkey,
                    Topic {
                        name: t.name.clone(),
                        props: t.properties.resolve()?,
                        subscriptions: subs,
                        duplicates: DuplicateDetector::default(),
                        next_seq: 1,
                    },
                );
            }
        }
        let (changes, _) = watch::channel(0);
        Ok(Broker {
            state: Mutex::new(state),
            changes,
            next_owner: AtomicU64::new(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that matters
        // to a test broker; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that changes whenever messages may have become available.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// A fresh id for a link (owner of session locks).
    pub fn new_owner(&self) -> u64 {
        self.next_owner.fetch_add(1, Ordering::Relaxed)
    }

    /// Resolves a lower-case entity path.
    pub fn resolve(&self, key: &str) -> Option<Node> {
        let st = self.lock();
        if st.topics.contains_key(key) {
            return Some(Node::Topic(key.to_string()));
        }
        if st.entities.contains_key(key) {
            return Some(if key.contains("/subscriptions/") {
                Node::Subscription(key.to_string())
            } else {
                Node::Queue(key.to_string())
            });
        }
        None
    }

    /// Link-relevant properties of an entity.
    pub fn info(&self, key: &str) -> Result<EntityInfo, BrokerError> {
        let st = self.lock();
        let e = st
            .entities
            .get(key)
            .ok_or_else(|| BrokerError::NotFound(key.to_string()))?;
        Ok(EntityInfo {
            name: e.name.clone(),
            requires_session: e.props.requires_session,
            lock_ms: e.lock_ms(),
        })
    }

    /// Applies time to every entity (lock expiry, scheduled messages, TTL).
    pub fn sweep(&self) {
        let now = now_ms();
        let mut changed = false;
        {
            let mut st = self.lock();
            for e in st.entities.values_mut() {
                changed |= e.sweep(now);
            }
            for s in st.entities.values_mut() {
                for info in s.sessions.values_mut() {
                    if info.owner.is_some_and(|(_, until)| until <= now) {
                        info.owner = None;
                        changed = true;
                    }
                }
            }
        }
        if changed {
            self.bump();
        }
    }

    /// Fault hook: for `duration`, every send to `entity` (a queue or topic) is rejected with
    /// error `condition` and `description` (e.g. `com.microsoft:server-busy`).
    pub fn fail_sends(&self, entity: &str, condition: &str, description: &str, duration: Duration) {
        let until = now_ms() + duration.as_millis() as i64;
        self.lock().faults.insert(
            entity.to_ascii_lowercase(),
            (condition.to_string(), description.to_string(), until),
        );
    }

    /// Sends messages to a queue or topic; returns the sequence numbers assigned (for a topic,
    /// the topic-wide number every subscription's copy carries). Duplicates are dropped silently. Ids above
    /// [`MAX_ID_CHARS`] characters are refused (`amqp:invalid-field`), as Service Bus does.
    pub fn send(&self, key: &str, messages: Vec<AmqpMessage>) -> Result<Vec<i64>, BrokerError> {
        let now = now_ms();
        let mut seqs = Vec::new();
        {
            let mut st = self.lock();
            if let Some((condition, description, until)) = st.faults.get(key) {
                if *until > now {
                    return Err(BrokerError::Injected {
                        condition: condition.clone(),
                        description: description.clone(),
                    });
                }
            }
            // Service Bus refuses ids above 128 characters.
            for msg in &messages {
                let too_long = |what: &str, id: &str| {
                    (id.chars().count() > MAX_ID_CHARS).then(|| {
                        BrokerError::Invalid(format!(
                            "the {what} exceeds the maximum length of {MAX_ID_CHARS} characters"
                        ))
                    })
                };
                let partition_key = msg.annotation("x-opt-partition-key").and_then(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                });
                if let Some(e) = msg
                    .message_id()
                    .and_then(|id| too_long("MessageId", &id))
                    .or_else(|| msg.session_id().and_then(|id| too_long("SessionId", id)))
                    .or_else(|| partition_key.and_then(|k| too_long("PartitionKey", &k)))
                {
                    return Err(e);
                }
            }
            for msg in messages {
                let ttl = msg.ttl_ms().map(|t| t as i64);
                let id = msg.message_id();
                if let Some(topic) = st.topics.get_mut(key) {
                    if topic.props.requires_duplicate_detection {
                        if let Some(id) = &id {
                            let window = topic.props.duplicate_window.as_millis() as i64;
                            if topic.duplicates.check(id, now, window) {
                                tracing::debug!(topic = %topic.name, message_id = %id, "duplicate dropped");
                                continue;
                            }
                        }
                    }
                    let topic_ttl = topic.props.default_ttl.as_millis() as i64;
                    let targets: Vec<String> = topic
                        .subscriptions
                        .iter()
                        .filter(|(_, filters)| filters.iter().any(|f| f.matches(&msg)))
                        .map(|(k, _)| k.clone())
                        .collect();
                    let ttl = Some(ttl.map_or(topic_ttl, |t| t.min(topic_ttl)));
                    let seq = topic.next_seq;
                    topic.next_seq += 1;
                    for sub in targets {
                        if let Some(e) = st.entities.get_mut(&sub) {
                            e.enqueue(msg.clone(), now, ttl, Some(seq))?;
                        }
                    }
                    seqs.push(seq);
                } else if let Some(e) = st.entities.get_mut(key) {
                    if key.contains("/subscriptions/") {
                        return Err(BrokerError::Invalid("cannot send to a subscription".into()));
                    }
                    if e.props.requires_duplicate_detection {
                        if let Some(id) = &id {
                            let window = e.props.duplicate_window.as_millis() as i64;
                            if e.duplicates.check(id, now, window) {
                                tracing::debug!(queue = %e.name, message_id = %id, "duplicate dropped");
                                continue;
                            }
                        }
                    }
                    seqs.push(e.enqueue(msg, now, ttl, None)?);
                } else {
                    return Err(BrokerError::NotFound(key.to_string()));
                }
            }
        }
        self.bump();
        Ok(seqs)
    }

    /// Takes the next message for a receiver, or `None` when nothing is available.
    pub fn receive(
        &self,
        entity: &EntityRef,
        mode: ReceiveMode,
        session: Option<(&str, u64)>,
    ) -> Result<Option<Delivered>, BrokerError> {
        let now = now_ms();
        let mut st = self.lock();
        let e = st
            .entities
            .get_mut(&entity.key)
            .ok_or_else(|| BrokerError::NotFound(entity.key.clone()))?;
        e.sweep(now);
        if let Some((sid, owner)) = session {
            if !e.session_lock(sid, owner, now) {
                return Err(BrokerError::SessionLockLost);
            }
        }
        let queue = if entity.dead_letter {
            &mut e.dead_letter
        } else {
            &mut e.active
        };
        let seq = queue
            .iter()
            .find(|(_, s)| match session {
                Some((sid, _)) => s.msg.session_id() == Some(sid),
                None => true,
            })
            .map(|(k, _)| *k);
        let Some(seq) = seq else { return Ok(None) };
        let Some(stored) = queue.remove(&seq) else {
            return Ok(None);
        };
        let origin = if entity.dead_letter {
            Origin::DeadLetter
        } else {
            Origin::Active
        };
        match mode {
            ReceiveMode::ReceiveAndDelete => {
                let payload = render(&stored, None, 0)?;
                Ok(Some(Delivered {
                    payload,
                    lock_token: None,
                    sequence_number: seq,
                    locked_until: None,
                }))
            }
            ReceiveMode::PeekLock => {
                let token = Uuid::new_v4();
                let until = now + e.lock_ms();
                let payload = render(&stored, Some((token, until)), 0)?;
                e.locks.insert(
                    token,
                    Lock {
                        stored,
                        until_ms: until,
                        origin,
                    },
                );
                Ok(Some(Delivered {
                    payload,
                    lock_token: Some(token),
                    sequence_number: seq,
                    locked_until: Some(until),
                }))
            }
        }
    }

    fn find_lock<'a>(
        st: &'a mut State,
        key: &str,
        token: Uuid,
    ) -> Result<(&'a mut Entity, Uuid), BrokerError> {
        let e = st
            .entities
            .get_mut(key)
            .ok_or_else(|| BrokerError::NotFound(key.to_string()))?;
        if e.locks.contains_key(&token) {
            return Ok((e, token));
        }
        // Clients disagree on GUID byte order; accept the .NET mixed-endian form too.
        let swapped = Uuid::from_bytes_le(*token.as_bytes());
        if e.locks.contains_key(&swapped) {
            return Ok((e, swapped));
        }
        Err(BrokerError::LockLost)
    }

    /// Settles a locked message.
    pub fn settle(
        &self,
        key: &str,
        token: Uuid,
        settlement: Settlement,
    ) -> Result<(), BrokerError> {
        let now = now_ms();
        {
            let mut st = self.lock();
            let (e, token) = Self::find_lock(&mut st, key, token)?;
            let lock = e.locks.remove(&token).ok_or(BrokerError::LockLost)?;
            if lock.until_ms <= now {
                e.return_after_failure(lock.stored, lock.origin, true);
                drop(st);
                self.bump();
                return Err(BrokerError::LockLost);
            }
            let mut stored = lock.stored;
            let apply = |stored: &mut Stored, props: &Option<OrderedMap<Value, Value>>| {
                if let Some(p) = props {
                    for (k, v) in p.iter() {
                        if let Value::String(k) | Value::Symbol(serde_amqp::primitives::Symbol(k)) =
                            k
                        {
                            stored.msg.set_application_property(k, v.clone());
                        }
                    }
                }
            };
            tracing::debug!(entity = %e.name, seq = stored.seq, %token, ?settlement, "settled");
            match settlement {
                Settlement::Complete => {}
                Settlement::Abandon(props) => {
                    apply(&mut stored, &props);
                    e.return_after_failure(stored, lock.origin, true);
                }
                Settlement::Release => e.return_after_failure(stored, lock.origin, false),
                Settlement::Defer(props) => {
                    apply(&mut stored, &props);
                    if lock.origin == Origin::DeadLetter {
                        e.dead_letter.insert(stored.seq, stored);
                    } else {
                        e.deferred.insert(stored.seq, stored);
                    }
                }
                Settlement::DeadLetter {
                    reason,
                    description,
                    properties,
                } => {
                    apply(&mut stored, &properties);
                    if lock.origin == Origin::DeadLetter {
                        return Err(BrokerError::Invalid(
                            "cannot dead-letter a dead-lettered message".into(),
                        ));
                    }
                    e.dead_letter(stored, reason.as_deref(), description.as_deref());
                }
            }
        }
        self.bump();
        Ok(())
    }

    /// Renews message locks; returns the new expiries (unix ms).
    pub fn renew_locks(&self, key: &str, tokens: &[Uuid]) -> Result<Vec<i64>, BrokerError> {
        let now = now_ms();
        let mut st = self.lock();
        let mut out = Vec::new();
        for t in tokens {
            let (e, token) = Self::find_lock(&mut st, key, *t)?;
            let lock_ms = e.lock_ms();
            let lock = e.locks.get_mut(&token).ok_or(BrokerError::LockLost)?;
            if lock.until_ms <= now {
                return Err(BrokerError::LockLost);
            }
            lock.until_ms = now + lock_ms;
            out.push(lock.until_ms);
        }
        Ok(out)
    }

    /// Peeks messages with sequence number ≥ `from` (active, locked, deferred, scheduled; or the DLQ).
    pub fn peek(
        &self,
        entity: &EntityRef,
        from: i64,
        count: usize,
        session: Option<&str>,
    ) -> Result<Vec<(i64, Vec<u8>)>, BrokerError> {
        let now = now_ms();
        let mut st = self.lock();
        let e = st
            .entities
            .get_mut(&entity.key)
            .ok_or_else(|| BrokerError::NotFound(entity.key.clone()))?;
        e.sweep(now);
        let mut all: BTreeMap<i64, (&Stored, i64)> = BTreeMap::new();
        if entity.dead_letter {
            for (k, s) in e.dead_letter.range(from..) {
                all.insert(*k, (s, 0));
            }
            for l in e
                .locks
                .values()
                .filter(|l| l.origin == Origin::DeadLetter && l.stored.seq >= from)
            {
                all.insert(l.stored.seq, (&l.stored, 0));
            }
        } else {
            for (k, s) in e.active.range(from..) {
                all.insert(*k, (s, 0));
            }
            for (k, s) in e.deferred.range(from..) {
                all.insert(*k, (s, 1));
            }
            for (k, s) in e.scheduled.range(from..) {
                all.insert(*k, (s, 2));
            }
            for l in e
                .locks
                .values()
                .filter(|l| l.origin != Origin::DeadLetter && l.stored.seq >= from)
            {
                all.insert(
                    l.stored.seq,
                    (&l.stored, if l.origin == Origin::Deferred { 1 } else { 0 }),
                );
            }
        }
        let mut out = Vec::new();
        for (seq, (s, state)) in all {
            if out.len() >= count {
                break;
            }
            if let Some(sid) = session {
                if s.msg.session_id() != Some(sid) {
                    continue;
                }
            }
            out.push((seq, render(s, None, state)?));
        }
        Ok(out)
    }

    /// Schedules messages (management `schedule-message`); returns sequence numbers.
    pub fn schedule(&self, key: &str, messages: Vec<AmqpMessage>) -> Result<Vec<i64>, BrokerError> {
        self.send(key, messages)
    }

    /// Cancels scheduled messages of a queue, or of every subscription of a topic.
    pub fn cancel_scheduled(&self, key: &str, seqs: &[i64]) -> Result<(), BrokerError> {
        let mut st = self.lock();
        let keys: Vec<String> = match st.topics.get(key) {
            Some(t) => t.subscriptions.iter().map(|(k, _)| k.clone()).collect(),
            None if st.entities.contains_key(key) => vec![key.to_string()],
            None => return Err(BrokerError::NotFound(key.to_string())),
        };
        for k in keys {
            if let Some(e) = st.entities.get_mut(&k) {
                for s in seqs {
                    e.scheduled.remove(s);
                }
            }
        }
        Ok(())
    }

    /// Receives deferred messages by sequence number.
    pub fn receive_deferred(
        &self,
        key: &str,
        seqs: &[i64],
        mode: ReceiveMode,
    ) -> Result<Vec<Delivered>, BrokerError> {
        let now = now_ms();
        let mut out = Vec::new();
        {
            let mut st = self.lock();
            let e = st
                .entities
                .get_mut(key)
                .ok_or_else(|| BrokerError::NotFound(key.to_string()))?;
            if let Some(missing) = seqs.iter().find(|s| !e.deferred.contains_key(s)) {
                return Err(BrokerError::MessageNotFound(*missing));
            }
            for s in seqs {
                let Some(stored) = e.deferred.remove(s) else {
                    continue;
                };
                match mode {
                    ReceiveMode::ReceiveAndDelete => out.push(Delivered {
                        payload: render(&stored, None, 1)?,
                        lock_token: None,
                        sequence_number: *s,
                        locked_until: None,
                    }),
                    ReceiveMode::PeekLock => {
                        let token = Uuid::new_v4();
                        let until = now + e.lock_ms();
                        let payload = render(&stored, Some((token, until)), 1)?;
                        e.locks.insert(
                            token,
                            Lock {
                                stored,
                                until_ms: until,
                                origin: Origin::Deferred,
                            },
                        );
                        out.push(Delivered {
                            payload,
                            lock_token: Some(token),
                            sequence_number: *s,
                            locked_until: Some(until),
                        });
                    }
                }
            }
        }
        self.bump();
        Ok(out)
    }

    /// Locks a session for `owner`: a given id, or the next session with available messages.
    /// Returns the session id and the lock expiry (unix ms).
    pub fn lock_session(
        &self,
        key: &str,
        requested: Option<&str>,
        owner: u64,
    ) -> Result<(String, i64), BrokerError> {
        let now = now_ms();
        let mut st = self.lock();
        let e = st
            .entities
            .get_mut(key)
            .ok_or_else(|| BrokerError::NotFound(key.to_string()))?;
        e.sweep(now);
        let free = |e: &Entity, sid: &str| {
            e.sessions
                .get(sid)
                .and_then(|s| s.owner)
                .is_none_or(|(_, until)| until <= now)
        };
        let sid = match requested {
            Some(sid) => {
                if !free(e, sid) {
                    return Err(BrokerError::SessionCannotBeLocked(sid.to_string()));
                }
                sid.to_string()
            }
            None => e
                .active
                .values()
                .filter_map(|s| s.msg.session_id())
                .find(|sid| free(e, sid))
                .map(str::to_string)
                .ok_or(BrokerError::NoSessionAvailable)?,
        };
        let until = now + e.lock_ms();
        e.sessions.entry(sid.clone()).or_default().owner = Some((owner, until));
        Ok((sid, until))
    }

    /// Renews a session lock held by any link; returns the new expiry.
    pub fn renew_session_lock(&self, key: &str, sid: &str) -> Result<i64, BrokerError> {
        let now = now_ms();
        let mut st = self.lock();
        let e = st
            .entities
            .get_mut(key)
            .ok_or_else(|| BrokerError::NotFound(key.to_string()))?;
        let lock_ms = e.lock_ms();
        let info = e
            .sessions
            .get_mut(sid)
            .ok_or(BrokerError::SessionLockLost)?;
        match &mut info.owner {
            Some((_, until)) if *until > now => {
                *until = now + lock_ms;
                Ok(*until)
            }
            _ => Err(BrokerError::SessionLockLost),
        }
    }

    /// Releases every session lock held by `owner` (its link detached).
    pub fn release_owner(&self, owner: u64) {
        let mut st = self.lock();
        for e in st.entities.values_mut() {
            for info in e.sessions.values_mut() {
                if info.owner.is_some_and(|(o, _)| o == owner) {
                    info.owner = None;
                }
            }
        }
        drop(st);
        self.bump();
    }

    /// Gets a session's state.
    pub fn session_state(&self, key: &str, sid: &str) -> Result<Option<Vec<u8>>, BrokerError> {
        let st = self.lock();
        let e = st
            .entities
            .get(key)
            .ok_or_else(|| BrokerError::NotFound(key.to_string()))?;
        Ok(e.sessions.get(sid).and_then(|s| s.state.clone()))
    }

    /// Sets a session's state (`None` clears it).
    pub fn set_session_state(
        &self,
        key: &str,
        sid: &str,
        state: Option<Vec<u8>>,
    ) -> Result<(), BrokerError> {
        let mut st = self.lock();
        let e = st
            .entities
            .get_mut(key)
            .ok_or_else(|| BrokerError::NotFound(key.to_string()))?;
        e.sessions.entry(sid.to_string()).or_default().state = state;
        Ok(())
    }

    /// Session ids that currently have messages or state.
    pub fn message_sessions(&self, key: &str) -> Result<Vec<String>, BrokerError> {
        let st = self.lock();
        let e = st
            .entities
            .get(key)
            .ok_or_else(|| BrokerError::NotFound(key.to_string()))?;
        let mut ids: Vec<String> = e
            .active
            .values()
            .filter_map(|s| s.msg.session_id().map(str::to_string))
            .collect();
        ids.extend(
            e.sessions
                .iter()
                .filter(|(_, s)| s.state.is_some())
                .map(|(k, _)| k.clone()),
        );
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Message counts of a queue or subscription (`name` is matched case-insensitively;
    /// subscriptions as `topic/Subscriptions/sub`).
    pub fn counts(&self, name: &str) -> Option<EntityCounts> {
        let now = now_ms();
        let mut st = self.lock();
        let e = st.entities.get_mut(&name.to_ascii_lowercase())?;
        e.sweep(now);
        Some(EntityCounts {
            active: e.active.len(),
            locked: e
                .locks
                .values()
                .filter(|l| l.origin == Origin::Active)
                .count(),
            dead_letter: e.dead_letter.len()
                + e.locks
                    .values()
                    .filter(|l| l.origin == Origin::DeadLetter)
                    .count(),
            scheduled: e.scheduled.len(),
            deferred: e.deferred.len()
                + e.locks
                    .values()
                    .filter(|l| l.origin == Origin::Deferred)
                    .count(),
        })
    }

    /// Removes every message from every entity (entities stay).
    pub fn purge(&self) {
        let mut st = self.lock();
        for e in st.entities.values_mut() {
            let (name, props) = (e.name.clone(), e.props.clone());
            *e = Entity::new(name, props);
        }
        for t in st.topics.values_mut() {
            t.duplicates = DuplicateDetector::default();
            t.next_seq = 1;
        }
    }
}
