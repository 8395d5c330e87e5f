//! The Azure Service Bus sink, on Microsoft's AMQP crate `azure_core_amqp` with a thin Service
//! Bus layer of our own (see design.md → Key decisions):
//!
//! - one connection and session, opened lazily and re-opened after a failure (the publisher's
//!   backoff paces the reconnects);
//! - claims-based security: a SAS token (`sas.rs`) or an Entra ID token put to `$cbs` per
//!   topic, renewed before it expires;
//! - one sender link per topic, created on first use and reused;
//! - messages mapped exactly as `contract.rs` describes (MessageId, SessionId = partitionKey,
//!   Subject = event name, ContentType, application properties, JSON body in a data section);
//! - batches in the Service Bus envelope (message format `0x80013700`, one data section per
//!   encoded message, the first message's id/session/partition key on the envelope), cut at the
//!   link's maximum message size and, on partitioned topics, at every partition-key change;
//! - outcomes mapped to retryable (busy, timeouts, lost connections: the rows stay in the
//!   outbox) or permanent (missing topic, unauthorized, too large: dead-letter table).

mod connection_string;
pub mod dlq;
mod runtime;
pub mod sas;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use azure_core::credentials::{Secret as AzureSecret, TokenCredential};
use azure_core::time::OffsetDateTime;
use azure_core_amqp::message::AmqpMessageProperties;
use azure_core_amqp::{
    AmqpClaimsBasedSecurity, AmqpClaimsBasedSecurityApis, AmqpConnection, AmqpConnectionApis,
    AmqpConnectionOptions, AmqpMessage, AmqpSendOptions, AmqpSendOutcome, AmqpSender,
    AmqpSenderApis, AmqpSession, AmqpSessionApis, AmqpSimpleValue, AmqpSymbol, AmqpTransport,
};
use tokio::sync::Mutex;
use url::Url;

pub use connection_string::{ConnectionString, ConnectionStringError};

use super::{Sink, SinkBuildError, SinkError};
use crate::config::{EntraCredential, ServiceBusConfig, Transport};
use crate::contract::{Message, PropertyValue};
pub(crate) use runtime::AmqpRuntime;

/// Message format of a Service Bus batch.
pub const BATCH_FORMAT: u32 = 0x8001_3700;
/// Entra ID scope of Service Bus.
const SCOPE: &str = "https://servicebus.azure.net/.default";
/// SAS tokens are made for this long and renewed when a quarter is left.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Envelope and section overhead per message in a batch (bytes).
const BATCH_ITEM_OVERHEAD: u64 = 16;
/// Default link maximum when the broker does not say.
const DEFAULT_MAX_MESSAGE: u64 = 256 * 1024;
/// How long closing a connection may take before it is dropped instead.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How the sink authenticates.
#[derive(Clone)]
pub(crate) enum Credentials {
    /// A SAS key.
    Key { name: String, key: String },
    /// A ready-made SAS token.
    Signature(String),
    /// Entra ID.
    Entra(Arc<dyn TokenCredential>),
}

/// Where the namespace is and how to authenticate.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// The connection URL (`amqps://host`, `amqp://host:port` for the emulator).
    pub url: Url,
    /// Connection options (transport, custom endpoint).
    pub options: AmqpConnectionOptions,
    /// Credentials.
    pub credentials: Credentials,
    /// `host[:port]`, for messages.
    pub display: String,
}

impl Endpoint {
    /// The endpoint described by the sink configuration.
    pub(crate) fn from_config(config: &ServiceBusConfig) -> Result<Self, SinkBuildError> {
        let err = |message: String| SinkBuildError {
            kind: "servicebus",
            message,
        };
        let (host, port, emulator, credentials) =
            match (&config.connection_string, &config.namespace) {
                (Some(cs), _) => {
                    let cs =
                        ConnectionString::parse(cs.expose()).map_err(|e| err(e.to_string()))?;
                    let credentials = match (&cs.key_name, &cs.key, &cs.signature) {
                        (Some(name), Some(key), _) => Credentials::Key {
                            name: name.clone(),
                            key: key.clone(),
                        },
                        (_, _, Some(sig)) => Credentials::Signature(sig.clone()),
                        _ => return Err(err("no SAS key or signature".into())),
                    };
                    (cs.host, cs.port, cs.emulator, credentials)
                }
                (None, Some(ns)) => {
                    let credential: Arc<dyn TokenCredential> = match config.credential {
                        EntraCredential::WorkloadIdentity => {
                            azure_identity::WorkloadIdentityCredential::new(None)
                                .map_err(|e| err(format!("workload identity: {e}")))?
                        }
                        EntraCredential::ManagedIdentity => {
                            azure_identity::ManagedIdentityCredential::new(None)
                                .map_err(|e| err(format!("managed identity: {e}")))?
                        }
                        EntraCredential::Developer => {
                            azure_identity::DeveloperToolsCredential::new(None)
                                .map_err(|e| err(format!("developer tools credential: {e}")))?
                        }
                    };
                    (ns.clone(), None, false, Credentials::Entra(credential))
                }
                (None, None) => return Err(err("set connection_string or namespace".into())),
            };
        let websockets = config.transport == Transport::AmqpWebsockets;
        let url = if emulator {
            format!("amqp://{host}:{}", port.unwrap_or(5672))
        } else {
            match port {
                Some(p) if !websockets => format!("amqps://{host}:{p}"),
                _ => format!("amqps://{host}"),
            }
        };
        let url = Url::parse(&url).map_err(|e| err(format!("endpoint {url:?}: {e}")))?;
        let options = AmqpConnectionOptions {
            transport: Some(if websockets && !emulator {
                AmqpTransport::WebSocket
            } else {
                AmqpTransport::Tcp
            }),
            ..Default::default()
        };
        let display = match port {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        Ok(Endpoint {
            url,
            options,
            credentials,
            display,
        })
    }

    /// The address of an entity (`amqps://host/topic`).
    pub(crate) fn entity(&self, path: &str) -> String {
        format!("{}/{}", self.url.as_str().trim_end_matches('/'), path)
    }

    /// A token for `entity` and when it expires.
    async fn token(&self, audience: &str) -> Result<(String, &'static str, SystemTime), String> {
        match &self.credentials {
            Credentials::Key { name, key } => {
                let expiry = SystemTime::now() + TOKEN_LIFETIME;
                let se = expiry
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                Ok((
                    sas::token(audience, name, key, se),
                    "servicebus.windows.net:sastoken",
                    expiry,
                ))
            }
            Credentials::Signature(sig) => {
                let se = sig
                    .split('&')
                    .find_map(|p| p.strip_prefix("se="))
                    .and_then(|s| s.parse::<u64>().ok())
                    .map(|s| UNIX_EPOCH + Duration::from_secs(s))
                    .unwrap_or_else(|| SystemTime::now() + TOKEN_LIFETIME);
                Ok((sig.clone(), "servicebus.windows.net:sastoken", se))
            }
            Credentials::Entra(credential) => {
                let token = credential
                    .get_token(&[SCOPE], None)
                    .await
                    .map_err(|e| format!("Entra ID token: {e}"))?;
                let expiry = UNIX_EPOCH
                    + Duration::from_secs(token.expires_on.unix_timestamp().max(0) as u64);
                Ok((token.token.secret().to_string(), "jwt", expiry))
            }
        }
    }
}

/// An open connection with its session, CBS link and senders.
pub(crate) struct Link {
    pub connection: AmqpConnection,
    pub session: AmqpSession,
    cbs: AmqpClaimsBasedSecurity,
    senders: HashMap<String, TopicSender>,
}

struct TopicSender {
    sender: AmqpSender,
    max_message_size: u64,
    token_expiry: SystemTime,
}

/// Classifies an AMQP failure by the error conditions its text names.
fn classify(topic: &str, what: &str, error: &dyn std::fmt::Display, debug: &str) -> SinkError {
    let text = format!("{error} {debug}");
    let has = |c: &str| text.contains(c);
    let reason = format!("{what} {topic}: {error}");
    if has("amqp:not-found") || has("NotFound") {
        SinkError::Rejected {
            index: None,
            reason: format!("topic {topic} not found (amqp:not-found); create it or fix topic_prefix/entity: {error}"),
        }
    } else if has("amqp:unauthorized-access") || has("Unauthorized") || has("401") {
        SinkError::Rejected {
            index: None,
            reason: format!(
                "not authorized to send to topic {topic} (amqp:unauthorized-access): {error}"
            ),
        }
    } else if has("message-size-exceeded") {
        SinkError::Rejected {
            index: None,
            reason: format!(
                "message too large for topic {topic} (amqp:link:message-size-exceeded)"
            ),
        }
    } else {
        SinkError::Transient { reason }
    }
}

fn simple(value: &PropertyValue) -> AmqpSimpleValue {
    match value {
        PropertyValue::Null => AmqpSimpleValue::Null,
        PropertyValue::Bool(b) => AmqpSimpleValue::Boolean(*b),
        PropertyValue::Int(i) => AmqpSimpleValue::Long(*i),
        PropertyValue::Double(d) => AmqpSimpleValue::Double(*d),
        PropertyValue::String(s) => AmqpSimpleValue::String(s.clone()),
    }
}

/// Maps a pollbus message to an AMQP message (the contract on the wire).
pub fn to_amqp(message: &Message, session_id: bool, partitioned: bool) -> AmqpMessage {
    let mut builder = AmqpMessage::builder()
        .with_body(message.body_bytes())
        .with_properties(AmqpMessageProperties {
            message_id: Some(message.message_id.clone().into()),
            content_type: Some(AmqpSymbol::from(message.content_type.as_str())),
            subject: Some(message.body.even_type.name().to_string()),
            group_id: session_id.then(|| message.session_id.clone()),
            ..Default::default()
        });
    for (name, value) in &message.application_properties {
        builder = builder.add_application_property(name.clone(), simple(value));
    }
    let mut amqp = builder.build();
    if partitioned {
        amqp.add_message_annotation(
            AmqpSymbol::from("x-opt-partition-key"),
            message.session_id.clone(),
        );
    }
    amqp
}

/// Publishes to Service Bus topics. The AMQP work runs on a thread of its own
/// ([`runtime`] explains why).
pub struct ServiceBusSink {
    core: Arc<SinkCore>,
    runtime: AmqpRuntime,
}

/// The connection state and the publishing logic, used on the AMQP thread only.
struct SinkCore {
    endpoint: Endpoint,
    config: ServiceBusConfig,
    link: Mutex<Option<Link>>,
}

/// Selects rustls's process-wide crypto provider once: the dependency graph enables both `ring`
/// and `aws-lc-rs`, and rustls refuses to guess.
pub fn ensure_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Opens a connection and session and attaches the CBS node.
pub(crate) async fn connect(endpoint: &Endpoint, name: &str) -> Result<Link, String> {
    ensure_crypto_provider();
    tracing::debug!(endpoint = %endpoint.display, "connecting");
    let connection = AmqpConnection::new();
    connection
        .open(
            name.to_string(),
            endpoint.url.clone(),
            Some(endpoint.options.clone()),
        )
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", endpoint.display))?;
    let session = AmqpSession::new();
    session
        .begin(&connection, None)
        .await
        .map_err(|e| format!("cannot begin a session on {}: {e}", endpoint.display))?;
    let cbs = AmqpClaimsBasedSecurity::new(session.clone())
        .map_err(|e| format!("claims-based security: {e}"))?;
    cbs.attach()
        .await
        .map_err(|e| format!("cannot attach $cbs on {}: {e}", endpoint.display))?;
    Ok(Link {
        connection,
        session,
        cbs,
        senders: HashMap::new(),
    })
}

impl Link {
    /// Closes the connection, giving up on a clean goodbye after [`CLOSE_TIMEOUT`]: a connection
    /// that stopped answering is dropped instead, which ends it.
    pub(crate) async fn close(self) {
        if tokio::time::timeout(CLOSE_TIMEOUT, self.connection.close())
            .await
            .is_err()
        {
            tracing::warn!("closing the Service Bus connection timed out; dropping it");
        }
    }

    /// Puts a token for `path` (an entity path) to `$cbs`; returns its expiry.
    pub(crate) async fn authorize(
        &self,
        endpoint: &Endpoint,
        path: &str,
    ) -> Result<SystemTime, SinkError> {
        let audience = endpoint.entity(path);
        let (token, kind, expiry) = endpoint
            .token(&audience)
            .await
            .map_err(|reason| SinkError::Transient { reason })?;
        let expires_on = OffsetDateTime::from_unix_timestamp(
            expiry
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs() as i64,
        )
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
        self.cbs
            .authorize_path(
                audience,
                Some(kind.to_string()),
                &AzureSecret::new(token),
                expires_on,
            )
            .await
            .map_err(|e| classify(path, "authorizing", &e, &format!("{e:?}")))?;
        Ok(expiry)
    }
}

impl ServiceBusSink {
    /// A sink for `config`; connects on first use.
    pub fn new(config: &ServiceBusConfig) -> Result<Self, SinkBuildError> {
        let core = SinkCore {
            endpoint: Endpoint::from_config(config)?,
            config: config.clone(),
            link: Mutex::new(None),
        };
        let runtime = AmqpRuntime::start("pollbus-amqp").map_err(|e| SinkBuildError {
            kind: "servicebus",
            message: format!("cannot start the Service Bus client thread: {e}"),
        })?;
        Ok(ServiceBusSink {
            core: Arc::new(core),
            runtime,
        })
    }

    /// Runs `work` with the core on the AMQP thread.
    async fn on_amqp_thread<T, F, Fut>(&self, work: F) -> Result<T, SinkError>
    where
        F: FnOnce(Arc<SinkCore>) -> Fut,
        Fut: std::future::Future<Output = Result<T, SinkError>> + Send + 'static,
        T: Send + 'static,
    {
        self.runtime
            .run(work(self.core.clone()))
            .await
            .unwrap_or_else(|stopped| {
                Err(SinkError::Transient {
                    reason: stopped.to_string(),
                })
            })
    }

    /// Connects now (readiness, `check --probe`).
    pub async fn connect_now(&self) -> Result<(), SinkError> {
        self.on_amqp_thread(|core| async move {
            let mut guard = core.link.lock().await;
            core.ensure_link(&mut guard).await.map(|_| ())
        })
        .await
    }

    /// Attaches a sender to each topic without sending anything (`check --probe`).
    pub async fn probe_topics(&self, topics: &[String]) -> Vec<(String, Result<(), SinkError>)> {
        let core = self.core.clone();
        let owned = topics.to_vec();
        match self
            .runtime
            .run(async move { core.probe_topics(owned).await })
            .await
        {
            Ok(results) => results,
            Err(stopped) => topics
                .iter()
                .map(|t| {
                    let reason = stopped.to_string();
                    (t.clone(), Err(SinkError::Transient { reason }))
                })
                .collect(),
        }
    }
}

impl SinkCore {
    async fn probe_topics(&self, topics: Vec<String>) -> Vec<(String, Result<(), SinkError>)> {
        let mut out = Vec::new();
        for topic in &topics {
            let mut guard = self.link.lock().await;
            let result = self
                .attempt(
                    &mut guard,
                    &format!("attaching to topic {topic}"),
                    async |g| {
                        let link = self.ensure_link(g).await?;
                        self.sender(link, topic).await.map(|_| ())
                    },
                )
                .await;
            out.push((topic.clone(), result));
        }
        out
    }

    async fn ensure_link<'a>(
        &self,
        guard: &'a mut Option<Link>,
    ) -> Result<&'a mut Link, SinkError> {
        if guard.is_none() {
            let link =
                tokio::time::timeout(self.config.send_timeout, connect(&self.endpoint, "pollbus"))
                    .await
                    .map_err(|_| SinkError::Transient {
                        reason: format!("connecting to {} timed out", self.endpoint.display),
                    })?
                    .map_err(|reason| SinkError::Transient { reason })?;
            tracing::info!(namespace = %self.endpoint.display, "connected to Service Bus");
            *guard = Some(link);
        }
        Ok(guard.as_mut().expect("just connected"))
    }

    async fn sender<'a>(
        &self,
        link: &'a mut Link,
        topic: &str,
    ) -> Result<&'a TopicSender, SinkError> {
        let renew_before = TOKEN_LIFETIME / 4;
        let expiring = link.senders.get(topic).map(|s| {
            s.token_expiry
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                < renew_before
        });
        match expiring {
            Some(false) => {}
            Some(true) => {
                let expiry = link.authorize(&self.endpoint, topic).await?;
                if let Some(s) = link.senders.get_mut(topic) {
                    s.token_expiry = expiry;
                }
            }
            None => {
                tracing::debug!(topic, "authorizing");
                let expiry = link.authorize(&self.endpoint, topic).await?;
                tracing::debug!(topic, "attaching a sender");
                let sender = AmqpSender::new();
                sender
                    .attach(
                        &link.session,
                        format!("pollbus-{topic}"),
                        self.endpoint.entity(topic),
                        None,
                    )
                    .await
                    .map_err(|e| classify(topic, "attaching a sender to", &e, &format!("{e:?}")))?;
                let max_message_size = sender
                    .max_message_size()
                    .await
                    .ok()
                    .flatten()
                    .filter(|m| *m > 0)
                    .unwrap_or(DEFAULT_MAX_MESSAGE);
                link.senders.insert(
                    topic.to_string(),
                    TopicSender {
                        sender,
                        max_message_size,
                        token_expiry: expiry,
                    },
                );
            }
        }
        Ok(&link.senders[topic])
    }

    /// Splits encoded messages into batches within `max` bytes and, on partitioned topics, one
    /// partition key each. Returns index ranges.
    fn batches(
        &self,
        messages: &[Message],
        encoded: &[Vec<u8>],
        max: u64,
    ) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut size = 512u64; // envelope
        for (i, bytes) in encoded.iter().enumerate() {
            let item = bytes.len() as u64 + BATCH_ITEM_OVERHEAD;
            let key_change = self.config.partitioned
                && i > start
                && messages[i].session_id != messages[start].session_id;
            if i > start && (size + item > max || key_change) {
                out.push(start..i);
                start = i;
                size = 512;
            }
            size += item;
        }
        if start < encoded.len() {
            out.push(start..encoded.len());
        }
        out
    }

    async fn send_all(
        &self,
        link: &mut Link,
        topic: &str,
        messages: &[Message],
    ) -> Result<(), SinkError> {
        let sender = self.sender(link, topic).await?;
        let max = self
            .config
            .max_batch_bytes
            .unwrap_or(sender.max_message_size)
            .min(sender.max_message_size.max(1));
        let amqp: Vec<AmqpMessage> = messages
            .iter()
            .map(|m| to_amqp(m, self.config.session_id, self.config.partitioned))
            .collect();
        let encoded: Vec<Vec<u8>> = amqp
            .iter()
            .map(|m| AmqpMessage::serialize(m).unwrap_or_default())
            .collect();
        for range in self.batches(messages, &encoded, max) {
            let single = range.len() == 1;
            tracing::debug!(topic, messages = range.len(), "sending");
            let outcome = if single {
                sender.sender.send_ref(&amqp[range.start], None).await
            } else {
                let first = &messages[range.start];
                let mut envelope = AmqpMessage::builder()
                    .with_body(azure_core_amqp::message::AmqpMessageBody::Binary(
                        encoded[range.clone()].to_vec(),
                    ))
                    .with_properties(AmqpMessageProperties {
                        message_id: Some(first.message_id.clone().into()),
                        group_id: self.config.session_id.then(|| first.session_id.clone()),
                        ..Default::default()
                    })
                    .build();
                if self.config.partitioned {
                    envelope.add_message_annotation(
                        AmqpSymbol::from("x-opt-partition-key"),
                        first.session_id.clone(),
                    );
                }
                sender
                    .sender
                    .send(
                        envelope,
                        Some(AmqpSendOptions {
                            message_format: Some(BATCH_FORMAT),
                            ..Default::default()
                        }),
                    )
                    .await
            };
            match outcome {
                Ok(AmqpSendOutcome::Accepted) => {}
                Ok(AmqpSendOutcome::Rejected(error)) => {
                    let text = format!("{error:?}");
                    return Err(match classify(topic, "sending to", &text, "") {
                        SinkError::Rejected { reason, .. } => SinkError::Rejected {
                            index: single.then_some(range.start),
                            reason,
                        },
                        transient => transient,
                    });
                }
                Ok(other) => {
                    return Err(SinkError::Transient {
                        reason: format!(
                            "topic {topic} did not accept the message ({})",
                            outcome_name(&other)
                        ),
                    })
                }
                Err(e) => {
                    let classified = classify(topic, "sending to", &e, &format!("{e:?}"));
                    return Err(match classified {
                        SinkError::Rejected { reason, .. } => SinkError::Rejected {
                            index: single.then_some(range.start),
                            reason,
                        },
                        other => other,
                    });
                }
            }
        }
        Ok(())
    }
}

fn outcome_name(outcome: &AmqpSendOutcome) -> &'static str {
    match outcome {
        AmqpSendOutcome::Accepted => "accepted",
        AmqpSendOutcome::Rejected(_) => "rejected",
        AmqpSendOutcome::Released => "released",
        AmqpSendOutcome::Modified(_) => "modified",
    }
}

impl SinkCore {
    async fn publish(&self, topic: &str, messages: &[Message]) -> Result<(), SinkError> {
        let mut guard = self.link.lock().await;
        self.attempt(
            &mut guard,
            &format!("sending to topic {topic}"),
            async |g| {
                let link = self.ensure_link(g).await?;
                self.send_all(link, topic, messages).await
            },
        )
        .await
    }

    /// Runs `work` on the connection within `send_timeout` (`what` names it in the timeout
    /// error). After any failure the connection is closed, so the next attempt starts over on a
    /// fresh one: after a timeout or a lost connection the old one is in doubt, and a refused
    /// link may leave the session in doubt too (refusals are rare; a reconnect is cheap).
    async fn attempt<T>(
        &self,
        guard: &mut Option<Link>,
        what: &str,
        work: impl AsyncFnOnce(&mut Option<Link>) -> Result<T, SinkError>,
    ) -> Result<T, SinkError> {
        let limit = self.config.send_timeout;
        let result = tokio::time::timeout(limit, work(guard))
            .await
            .unwrap_or_else(|_| {
                Err(SinkError::Transient {
                    reason: format!("{what} timed out after {limit:?}"),
                })
            });
        if result.is_err() {
            if let Some(link) = guard.take() {
                link.close().await;
            }
        }
        result
    }
}

#[async_trait]
impl Sink for ServiceBusSink {
    async fn publish(&self, topic: &str, messages: &[Message]) -> Result<(), SinkError> {
        let topic = topic.to_string();
        let messages = messages.to_vec();
        self.on_amqp_thread(|core| async move { core.publish(&topic, &messages).await })
            .await
    }

    fn describe(&self) -> String {
        format!("servicebus:{}", self.core.endpoint.display)
    }

    async fn probe(&self, topics: &[String]) -> Vec<(String, Result<(), SinkError>)> {
        self.probe_topics(topics).await
    }

    async fn connect(&self) -> Result<(), SinkError> {
        self.connect_now().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{Change, EventType, MessageContext, TraceContext};
    use serde_json::json;

    fn message(id: &str) -> Message {
        let change = Change {
            kind: EventType::Update,
            id: id.into(),
            timestamp: "2024-01-01T00:00:00Z".parse().unwrap(),
            changed: vec![
                ("City".into(), json!("Bodø")),
                ("Age".into(), json!(3)),
                ("Gone".into(), json!(null)),
            ],
            on_behalf_of: None,
            version: "1".into(),
        };
        let ctx = MessageContext {
            source: "s",
            source_system: "CRM",
            entity: "customer",
            topic_prefix: "api.event.",
        };
        Message::build(&change, &ctx, &TraceContext::random())
    }

    #[test]
    fn amqp_mapping_carries_the_contract() {
        let m = message("42");
        let a = to_amqp(&m, true, true);
        let p = a.properties.as_ref().unwrap();
        assert_eq!(p.message_id, Some(m.message_id.clone().into()));
        assert_eq!(p.group_id.as_deref(), Some("customer.42"));
        assert_eq!(p.subject.as_deref(), Some("update"));
        assert_eq!(p.content_type, Some(AmqpSymbol::from("application/json")));
        let props = &a.application_properties.as_ref().unwrap().0;
        assert_eq!(
            props.get("City"),
            Some(&AmqpSimpleValue::String("Bodø".into()))
        );
        assert_eq!(props.get("Age"), Some(&AmqpSimpleValue::Long(3)));
        assert_eq!(props.get("Gone"), Some(&AmqpSimpleValue::Null));
        assert!(props.get("Diagnostic-Id").is_some());
        let no_session = to_amqp(&m, false, false);
        assert_eq!(no_session.properties.unwrap().group_id, None);
    }

    #[test]
    fn emulator_connection_strings_keep_the_port_and_use_plain_tcp() {
        let config: ServiceBusConfig = toml::from_str(
            r#"connection_string = "Endpoint=sb://127.0.0.1:40111;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=k;UseDevelopmentEmulator=true;""#,
        )
        .unwrap();
        let mut config = config;
        config
            .connection_string
            .as_mut()
            .unwrap()
            .resolve()
            .unwrap();
        let e = Endpoint::from_config(&config).unwrap();
        assert_eq!(e.url.as_str(), "amqp://127.0.0.1:40111");
        assert_eq!(
            e.entity("api.event.customer"),
            "amqp://127.0.0.1:40111/api.event.customer"
        );
    }

    #[test]
    fn batches_respect_size_and_partition_keys() {
        let config: ServiceBusConfig =
            toml::from_str(r#"connection_string = "Endpoint=sb://h;SharedAccessSignature=x""#)
                .unwrap();
        let mut sink_config = config.clone();
        sink_config
            .connection_string
            .as_mut()
            .unwrap()
            .resolve()
            .unwrap();
        let sink = ServiceBusSink::new(&sink_config).unwrap();
        let msgs: Vec<Message> = ["1", "1", "2", "3"].iter().map(|i| message(i)).collect();
        let encoded: Vec<Vec<u8>> = msgs.iter().map(|_| vec![0u8; 1000]).collect();
        assert_eq!(sink.core.batches(&msgs, &encoded, 100_000), vec![0..4]);
        assert_eq!(sink.core.batches(&msgs, &encoded, 2_600), vec![0..2, 2..4]);
        let mut partitioned = sink_config.clone();
        partitioned.partitioned = true;
        let sink = ServiceBusSink::new(&partitioned).unwrap();
        assert_eq!(
            sink.core.batches(&msgs, &encoded, 100_000),
            vec![0..2, 2..3, 3..4]
        );
    }
}
