//! The TCP listener and the public handle tests use to start, stop, restart and inspect it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{
    broker::{Broker, EntityCounts},
    config::{Config, ConfigError},
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
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            key_name: DEFAULT_KEY_NAME.into(),
            key: DEFAULT_KEY.into(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
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
            self.settings.key
        )
    }

    /// The broker (in-process access to entities).
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Message counts of a queue (`name`) or subscription (`topic/Subscriptions/sub`).
    pub fn counts(&self, entity: &str) -> Option<EntityCounts> {
        self.broker.counts(entity)
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
