//! The TCP listener and the public handle tests use to start, stop, restart and inspect it.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{
    address::{self, Address},
    broker::{Broker, BrokerError, EntityCounts, EntityRef, ReceiveMode},
    config::{Config, ConfigError},
    entra::EntraAuth,
    message::AmqpMessage,
};

/// Default SAS key name (as Microsoft's emulator).
pub const DEFAULT_KEY_NAME: &str = "RootManageSharedAccessKey";
/// Default SAS key (as Microsoft's emulator).
pub const DEFAULT_KEY: &str = "SAS_KEY_VALUE";
/// Default Service Bus Standard message size limit.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 262_144;
/// Maximum concurrent connections.
pub const MAX_CONNECTIONS: usize = 100;

/// Settings shared by every connection.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// SAS key name accepted in tokens (`skn`).
    pub key_name: String,
    /// SAS key.
    pub key: String,
    /// Largest message (or batch) accepted, in bytes.
    pub max_message_size: u64,
    /// The key after [`Emulator::rotate_key`], shared by every connection.
    pub rotation: Arc<KeyRotation>,
    /// The Entra ID authority the namespace trusts for `jwt` put-tokens, with its role
    /// assignments; `None` refuses every `jwt` token that is not a SAS token.
    pub entra: Option<Arc<EntraAuth>>,
    /// `$cbs` put-tokens seen, by kind and answer (shared by every connection).
    pub cbs: Arc<CbsCounts>,
}

/// `$cbs` put-tokens answered since the emulator started, by kind and answer.
#[derive(Debug, Default)]
pub struct CbsCounts {
    /// SAS tokens accepted.
    pub sas_accepted: AtomicU64,
    /// SAS tokens refused.
    pub sas_refused: AtomicU64,
    /// Entra ID tokens (`jwt`) accepted.
    pub jwt_accepted: AtomicU64,
    /// Entra ID tokens (`jwt`) refused.
    pub jwt_refused: AtomicU64,
}

impl CbsCounts {
    /// Adds one to `counter` (one of this struct's fields).
    pub fn count(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::SeqCst);
    }

    /// The counts now: (sas accepted, sas refused, jwt accepted, jwt refused).
    pub fn snapshot(&self) -> CbsSnapshot {
        CbsSnapshot {
            sas_accepted: self.sas_accepted.load(Ordering::SeqCst),
            sas_refused: self.sas_refused.load(Ordering::SeqCst),
            jwt_accepted: self.jwt_accepted.load(Ordering::SeqCst),
            jwt_refused: self.jwt_refused.load(Ordering::SeqCst),
        }
    }
}

/// A copy of [`CbsCounts`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CbsSnapshot {
    /// SAS tokens accepted.
    pub sas_accepted: u64,
    /// SAS tokens refused.
    pub sas_refused: u64,
    /// Entra ID tokens accepted.
    pub jwt_accepted: u64,
    /// Entra ID tokens refused.
    pub jwt_refused: u64,
}

/// A regenerated SAS key: tokens signed with the previous one are refused from then on, and
/// links authorized by them are detached with `amqp:unauthorized-access`, as Service Bus does
/// when a key is regenerated.
#[derive(Debug, Default)]
pub struct KeyRotation {
    key: std::sync::RwLock<Option<String>>,
    epoch: std::sync::atomic::AtomicU64,
}

impl KeyRotation {
    /// The key in force: the rotated one, else `initial`.
    pub fn key(&self, initial: &str) -> String {
        self.key
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| initial.to_string())
    }

    /// How many times the key was regenerated.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            key_name: DEFAULT_KEY_NAME.into(),
            key: DEFAULT_KEY.into(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            rotation: Arc::default(),
            entra: None,
            cbs: Arc::default(),
        }
    }
}

/// Errors starting the emulator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Could not bind.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// A running emulator. Dropping it stops the listener and closes all connections.
#[derive(Debug)]
pub struct Emulator {
    config: Config,
    settings: Arc<ServerSettings>,
    broker: Arc<Broker>,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Starts an emulator on `127.0.0.1:0` (an ephemeral port) with default settings.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        Self::start_on(
            config,
            ServerSettings::default(),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
    }

    /// Starts an emulator on `listen` with `settings`.
    pub async fn start_on(
        config: Config,
        settings: ServerSettings,
        listen: SocketAddr,
    ) -> Result<Self, StartError> {
        let broker = Arc::new(Broker::new(&config)?);
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: listen,
            source,
        })?;
        let settings = Arc::new(settings);
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, settings.clone(), broker.clone(), rx));
        tracing::info!(%addr, "servicebus emulator listening");
        Ok(Emulator {
            config,
            settings,
            broker,
            addr,
            shutdown,
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A connection string for the official SDKs (`UseDevelopmentEmulator=true`).
    pub fn connection_string(&self) -> String {
        format!(
            "Endpoint=sb://{}:{};SharedAccessKeyName={};SharedAccessKey={};UseDevelopmentEmulator=true;",
            self.addr.ip(),
            self.addr.port(),
            self.settings.key_name,
            self.settings.rotation.key(&self.settings.key)
        )
    }

    /// Regenerates the SAS key: from now on only `key` signs valid tokens, and every link
    /// authorized with a token of the old key is detached (`amqp:unauthorized-access`).
    pub fn rotate_key(&self, key: &str) {
        *self
            .settings
            .rotation
            .key
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(key.to_string());
        self.settings
            .rotation
            .epoch
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// The Entra ID trust given in the settings (to assign and revoke roles while it runs).
    pub fn entra(&self) -> Option<&Arc<EntraAuth>> {
        self.settings.entra.as_ref()
    }

    /// The `$cbs` put-tokens answered so far.
    pub fn cbs_counts(&self) -> CbsSnapshot {
        self.settings.cbs.snapshot()
    }

    /// The broker (in-process access to entities).
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Message counts of a queue (`name`) or subscription (`topic/Subscriptions/sub`).
    pub fn counts(&self, entity: &str) -> Option<EntityCounts> {
        self.broker.counts(entity)
    }

    /// Peeks up to `max` messages of an entity without locking them. `entity` is a queue, a
    /// subscription (`topic/Subscriptions/sub`) or either's `…/$DeadLetterQueue`.
    pub fn peek(&self, entity: &str, max: usize) -> Result<Vec<AmqpMessage>, BrokerError> {
        let entity = entity_ref(entity);
        let peeked = self.broker.peek(&entity, 0, max, None)?;
        peeked
            .into_iter()
            .map(|(_, bytes)| {
                AmqpMessage::decode(&bytes).map_err(|e| BrokerError::Invalid(e.to_string()))
            })
            .collect()
    }

    /// Removes and returns up to `max` available messages (receive-and-delete), in order.
    pub fn receive(&self, entity: &str, max: usize) -> Result<Vec<AmqpMessage>, BrokerError> {
        let entity = entity_ref(entity);
        let mut out = Vec::new();
        while out.len() < max {
            match self
                .broker
                .receive(&entity, ReceiveMode::ReceiveAndDelete, None)?
            {
                Some(d) => out.push(
                    AmqpMessage::decode(&d.payload)
                        .map_err(|e| BrokerError::Invalid(e.to_string()))?,
                ),
                None => break,
            }
        }
        Ok(out)
    }

    /// Sends a message to a queue or topic in-process, as if a client had sent it.
    pub fn send(&self, entity: &str, message: AmqpMessage) -> Result<(), BrokerError> {
        self.broker
            .send(&address::normalize(entity), vec![message])
            .map(|_| ())
    }

    /// Stops the listener and closes every connection. Messages are lost (in-memory broker).
    pub async fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    /// Stops and starts again on the same address with the same configuration and an empty broker.
    pub async fn restart(&mut self) -> Result<(), StartError> {
        self.stop().await;
        let mut last = None;
        for _ in 0..50 {
            match Self::start_on(self.config.clone(), (*self.settings).clone(), self.addr).await {
                Ok(fresh) => {
                    let mut fresh = fresh;
                    std::mem::swap(self, &mut fresh);
                    // `fresh` now holds the stopped instance; dropping it is harmless.
                    return Ok(());
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        Err(last.unwrap_or_else(|| StartError::Bind {
            addr: self.addr,
            source: std::io::Error::other("restart failed"),
        }))
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn entity_ref(entity: &str) -> EntityRef {
    match address::parse(entity) {
        Address::Entity(key, dead_letter) | Address::Management(key, dead_letter) => {
            EntityRef { key, dead_letter }
        }
        Address::Cbs => EntityRef {
            key: "$cbs".into(),
            dead_letter: false,
        },
    }
}

async fn accept_loop(
    listener: TcpListener,
    settings: Arc<ServerSettings>,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut tasks = tokio::task::JoinSet::new();
    let mut sweep = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "connection limit reached; refusing");
                    drop(stream);
                    continue;
                };
                let (settings, broker, rx) = (settings.clone(), broker.clone(), shutdown.clone());
                tasks.spawn(async move {
                    if let Err(e) = crate::connection::serve(stream, settings, broker, rx).await {
                        tracing::debug!(%peer, error = %e, "connection ended with error");
                    }
                    drop(permit);
                });
            }
            _ = sweep.tick() => broker.sweep(),
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
}

#[cfg(test)]
mod tests {
    use serde_amqp::Value;

    use super::*;

    const CONFIG: &str = r#"{"UserConfig":{"Namespaces":[{"Name":"ns",
      "Queues":[{"Name":"q","Properties":{"MaxDeliveryCount":2,"RequiresDuplicateDetection":true}},
                {"Name":"s","Properties":{"RequiresSession":true}}],
      "Topics":[{"Name":"t","Subscriptions":[{"Name":"all"},{"Name":"red","Rules":[{"Name":"r",
        "Properties":{"FilterType":"Correlation","CorrelationFilter":{"Label":"red","Properties":{"n":1}}}}]}]}]}]}}"#;

    async fn emulator() -> Emulator {
        Emulator::start(Config::from_json_str(CONFIG).unwrap())
            .await
            .unwrap()
    }

    fn msg(body: &str, id: &str) -> AmqpMessage {
        let mut m = AmqpMessage::with_data(body.as_bytes());
        m.properties = Some(fe2o3_amqp_types::messaging::Properties {
            message_id: Some(fe2o3_amqp_types::messaging::MessageId::String(id.into())),
            ..Default::default()
        });
        m
    }

    #[tokio::test]
    async fn in_process_send_peek_receive() {
        let emu = emulator().await;
        emu.send("q", msg("one", "1")).unwrap();
        emu.send("q", msg("dup", "1")).unwrap();
        emu.send("amqp://host/Q", msg("two", "2")).unwrap();
        let peeked = emu.peek("q", 10).unwrap();
        assert_eq!(
            peeked.iter().map(|m| m.body_data()).collect::<Vec<_>>(),
            vec![b"one".to_vec(), b"two".to_vec()]
        );
        assert_eq!(peeked[0].sequence_number(), Some(1));
        assert_eq!(
            emu.counts("q").unwrap().active,
            2,
            "peek does not remove, duplicate dropped"
        );
        let got = emu.receive("q", 10).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(emu.counts("q").unwrap().active, 0);
        assert!(emu.send("nope", msg("x", "x")).is_err());
    }

    #[tokio::test]
    async fn rules_route_topic_messages() {
        let emu = emulator().await;
        let mut red = msg("red", "a");
        red.properties.as_mut().unwrap().subject = Some("red".into());
        red.set_application_property("n", Value::Long(1));
        let mut red_wrong_n = red.clone();
        red_wrong_n.set_application_property("n", Value::Long(2));
        emu.send("t", red).unwrap();
        emu.send("t", red_wrong_n).unwrap();
        emu.send("t", msg("plain", "c")).unwrap();
        assert_eq!(emu.counts("t/Subscriptions/all").unwrap().active, 3);
        assert_eq!(emu.counts("T/subscriptions/RED").unwrap().active, 1);
    }

    #[tokio::test]
    async fn abandon_past_max_delivery_dead_letters() {
        let emu = emulator().await;
        emu.send("q", msg("p", "p")).unwrap();
        let q = EntityRef {
            key: "q".into(),
            dead_letter: false,
        };
        for _ in 0..2 {
            let d = emu
                .broker()
                .receive(&q, ReceiveMode::PeekLock, None)
                .unwrap()
                .expect("a message");
            emu.broker()
                .settle("q", d.lock_token.unwrap(), crate::Settlement::Abandon(None))
                .unwrap();
        }
        let c = emu.counts("q").unwrap();
        assert_eq!((c.active, c.dead_letter), (0, 1));
        let dlq = emu.receive("q/$DeadLetterQueue", 1).unwrap();
        assert_eq!(
            dlq[0].application_property("DeadLetterReason"),
            Some(&Value::String(crate::broker::MAX_DELIVERY_REASON.into()))
        );
    }

    #[tokio::test]
    async fn sessions_lock_exclusively() {
        let emu = emulator().await;
        let mut m = msg("s1", "1");
        m.properties.as_mut().unwrap().group_id = Some("a".into());
        emu.send("s", m).unwrap();
        let b = emu.broker();
        let (sid, _) = b.lock_session("s", None, 1).unwrap();
        assert_eq!(sid, "a");
        assert!(
            b.lock_session("s", Some("a"), 2).is_err(),
            "second owner refused"
        );
        assert!(
            b.lock_session("s", None, 2).is_err(),
            "no other session available"
        );
        b.release_owner(1);
        assert!(b.lock_session("s", Some("a"), 2).is_ok());
    }

    #[tokio::test]
    async fn restart_empties_and_stop_closes() {
        let mut emu = emulator().await;
        emu.send("q", msg("x", "x")).unwrap();
        let addr = emu.addr();
        emu.restart().await.unwrap();
        assert_eq!(emu.addr(), addr);
        assert_eq!(emu.counts("q").unwrap().active, 0);
        emu.stop().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
