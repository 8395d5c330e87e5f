//! The admin HTTP server (`admin.listen`, default `0.0.0.0:9464`): `/live` (200 while the
//! process does its work; checks nothing external — 503 once the outbox publisher or every
//! resource task keeps dying, so the orchestrator restarts the process), `/ready` (503 until the
//! store is migrated and the sink connected, and while shutting down), `/metrics` (Prometheus
//! text), and `/`, the status page ([`crate::status`]) when the daemon gives one.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::status::StatusPage;

/// Readiness latches (ready when the store and sink are up and no stop has begun) and the
/// liveness of the tasks doing the work.
#[derive(Debug, Default)]
pub struct Readiness {
    store: AtomicBool,
    sink: AtomicBool,
    stopping: AtomicBool,
    publisher_dead: AtomicBool,
    poll_tasks: AtomicUsize,
    dead_poll_tasks: AtomicUsize,
}

impl Readiness {
    /// The state store is open and migrated.
    pub fn store_ready(&self) {
        self.store.store(true, Ordering::SeqCst);
    }
    /// The sink is connected.
    pub fn sink_ready(&self) {
        self.sink.store(true, Ordering::SeqCst);
    }
    /// A stop has begun: readiness is withdrawn for good.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }
    /// The outbox publisher keeps dying (`true`) or runs again (`false`).
    pub fn publisher_dead(&self, dead: bool) {
        self.publisher_dead.store(dead, Ordering::SeqCst);
    }
    /// A resource task started.
    pub fn poll_task_started(&self) {
        self.poll_tasks.fetch_add(1, Ordering::SeqCst);
    }
    /// A resource task keeps dying (`true`) or polls again (`false`); call on changes only.
    pub fn poll_task_dead(&self, dead: bool) {
        if dead {
            self.dead_poll_tasks.fetch_add(1, Ordering::SeqCst);
        } else {
            self.dead_poll_tasks.fetch_sub(1, Ordering::SeqCst);
        }
    }
    /// Why the process is not alive (the publisher or every resource task keeps dying), if so.
    pub fn death(&self) -> Option<&'static str> {
        let tasks = self.poll_tasks.load(Ordering::SeqCst);
        if self.publisher_dead.load(Ordering::SeqCst) {
            Some("the outbox publisher keeps dying")
        } else if tasks > 0 && self.dead_poll_tasks.load(Ordering::SeqCst) >= tasks {
            Some("every resource task keeps dying")
        } else {
            None
        }
    }
    /// What keeps the process from being ready, if anything.
    pub fn blocker(&self) -> Option<&'static str> {
        if self.stopping.load(Ordering::SeqCst) {
            Some("shutting down")
        } else if !self.store.load(Ordering::SeqCst) {
            Some("state store not ready")
        } else if !self.sink.load(Ordering::SeqCst) {
            Some("sink not connected")
        } else {
            None
        }
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    status: Option<Arc<StatusPage>>,
}

async fn live(State(s): State<AdminState>) -> impl IntoResponse {
    match s.ready.death() {
        None => (StatusCode::OK, "live\n".to_string()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not live: {why}\n"),
        ),
    }
}

async fn ready(State(s): State<AdminState>) -> impl IntoResponse {
    match s.ready.blocker() {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn status(State(s): State<AdminState>) -> Response {
    match &s.status {
        Some(page) => (
            [(header::CACHE_CONTROL, "no-store")],
            Html(page.render(chrono::Utc::now()).await),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no status page\n").into_response(),
    }
}

/// Binds the admin server; call [`AdminServer::serve`] to run it.
pub struct AdminServer {
    listener: tokio::net::TcpListener,
    state: AdminState,
}

impl AdminServer {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        ready: Arc<Readiness>,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        Ok(AdminServer {
            listener,
            state: AdminState {
                metrics,
                ready,
                status: None,
            },
        })
    }

    /// Serves `page` at `/`.
    pub fn with_status(mut self, page: Arc<StatusPage>) -> Self {
        self.state.status = Some(page);
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop`.
    pub async fn serve(self, stop: CancellationToken) {
        let app = Router::new()
            .route("/", get(status))
            .route("/live", get(live))
            .route("/ready", get(ready))
            .route("/metrics", get(metrics))
            .with_state(self.state);
        let result = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "admin server stopped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_when_the_publisher_or_every_poll_task_keeps_dying() {
        let r = Readiness::default();
        assert_eq!(r.death(), None);
        r.poll_task_started();
        r.poll_task_started();
        r.poll_task_dead(true);
        assert_eq!(r.death(), None, "one of two resource tasks still works");
        r.poll_task_dead(true);
        assert_eq!(r.death(), Some("every resource task keeps dying"));
        r.poll_task_dead(false);
        assert_eq!(r.death(), None);
        r.publisher_dead(true);
        assert_eq!(r.death(), Some("the outbox publisher keeps dying"));
        r.publisher_dead(false);
        assert_eq!(r.death(), None);
    }
}
