//! The connection cache: one connection and session with its `$cbs` node, opened lazily and
//! closed after a failure, and one sender link per topic, attached on first use, reused, and
//! re-authorized before its token expires: by the sink's renewal task (`mod.rs`) whether or not
//! anything is sent, and by [`Link::sender`] itself when a send finds the token due.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use azure_core_amqp::{
    AmqpClaimsBasedSecurity, AmqpClaimsBasedSecurityApis, AmqpConnection, AmqpConnectionApis,
    AmqpSender, AmqpSenderApis, AmqpSession, AmqpSessionApis,
};

use super::classify::classify;
use super::endpoint::Endpoint;
use crate::sink::SinkError;

/// Default link maximum when the broker does not say.
const DEFAULT_MAX_MESSAGE: u64 = 256 * 1024;
/// How long closing a connection may take before it is dropped instead.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// An open connection with its session, CBS link and senders.
pub(crate) struct Link {
    pub connection: AmqpConnection,
    pub session: AmqpSession,
    pub(super) cbs: AmqpClaimsBasedSecurity,
    senders: HashMap<String, TopicSender>,
}

/// The sender link of one topic.
pub(super) struct TopicSender {
    /// The attached link.
    pub sender: AmqpSender,
    /// The largest message the link takes (bytes).
    pub max_message_size: u64,
    /// When the token put to `$cbs` for the topic expires.
    token_expiry: SystemTime,
    /// When to put a fresh token (`None`: never, a fixed SAS signature).
    renew_at: Option<SystemTime>,
}

impl TopicSender {
    fn due(&self, now: SystemTime) -> bool {
        self.renew_at.is_some_and(|at| now >= at)
    }
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

/// The open link in `guard`, connecting first (within `limit`) when there is none.
pub(super) async fn ensure<'a>(
    guard: &'a mut Option<Link>,
    endpoint: &Endpoint,
    limit: Duration,
) -> Result<&'a mut Link, SinkError> {
    if guard.is_none() {
        let link = tokio::time::timeout(limit, connect(endpoint, "pollbus"))
            .await
            .map_err(|_| {
                SinkError::transient(format!("connecting to {} timed out", endpoint.display))
            })?
            .map_err(SinkError::transient)?;
        tracing::info!(namespace = %endpoint.display, "connected to Service Bus");
        *guard = Some(link);
    }
    Ok(guard.as_mut().expect("just connected"))
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

    /// The topics whose token is due for renewal at `now`.
    pub(super) fn due(&self, now: SystemTime) -> Vec<String> {
        self.senders
            .iter()
            .filter(|(_, s)| s.due(now))
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// When the earliest renewal is due, if any sender has one.
    pub(super) fn next_renewal(&self) -> Option<SystemTime> {
        self.senders.values().filter_map(|s| s.renew_at).min()
    }

    /// Puts a fresh token for `topic`'s sender.
    pub(super) async fn renew(
        &mut self,
        endpoint: &Endpoint,
        topic: &str,
    ) -> Result<(), SinkError> {
        let grant = self.authorize(endpoint, topic).await?;
        if let Some(s) = self.senders.get_mut(topic) {
            tracing::debug!(
                topic,
                expires_in = ?grant.expiry.duration_since(SystemTime::now()).unwrap_or_default(),
                previous_expired = s.token_expiry <= SystemTime::now(),
                "token renewed"
            );
            s.token_expiry = grant.expiry;
            s.renew_at = grant.renew_at;
        }
        Ok(())
    }

    /// The sender of `topic`: attached and authorized on first use, re-authorized first when
    /// its token is due for renewal (half its lifetime has passed) and the renewal task has
    /// not done it yet.
    pub(super) async fn sender(
        &mut self,
        endpoint: &Endpoint,
        topic: &str,
    ) -> Result<&TopicSender, SinkError> {
        let now = SystemTime::now();
        match self.senders.get(topic).map(|s| s.due(now)) {
            Some(false) => {}
            Some(true) => self.renew(endpoint, topic).await?,
            None => {
                tracing::debug!(topic, "authorizing");
                let grant = self.authorize(endpoint, topic).await?;
                tracing::debug!(topic, "attaching a sender");
                let sender = AmqpSender::new();
                sender
                    .attach(
                        &self.session,
                        format!("pollbus-{topic}"),
                        endpoint.entity(topic),
                        None,
                    )
                    .await
                    .map_err(|e| {
                        let e = classify(topic, "attaching a sender to", &e);
                        endpoint.credentials.explain(e)
                    })?;
                let max_message_size = sender
                    .max_message_size()
                    .await
                    .ok()
                    .flatten()
                    .filter(|m| *m > 0)
                    .unwrap_or(DEFAULT_MAX_MESSAGE);
                self.senders.insert(
                    topic.to_string(),
                    TopicSender {
                        sender,
                        max_message_size,
                        token_expiry: grant.expiry,
                        renew_at: grant.renew_at,
                    },
                );
            }
        }
        Ok(&self.senders[topic])
    }
}
