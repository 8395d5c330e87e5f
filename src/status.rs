//! The status page (`GET /` on the admin server): one self-contained HTML page (inline CSS, no
//! scripts, no external assets) that refreshes itself and shows, per source/resource, the last
//! poll (outcome, age, records, changes), the cursor and its lag and the lease holder, plus the
//! outbox (depth, oldest row, dead letters) and the live replicas.
//!
//! Nothing secret is shown: no configuration values besides names, intervals and topics, no
//! error texts (they may name URLs; the log has them), and every string is HTML-escaped by
//! `maud`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use maud::{html, Markup, DOCTYPE};

use crate::store::{Lease, OutboxStats, ResourceKey, ResourceSummary, Store};

/// Seconds between two loads of the page (`<meta http-equiv="refresh">`).
pub const REFRESH_SECONDS: u32 = 5;

/// How a poll ended, as the page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollOutcome {
    /// Every page was committed.
    Ok,
    /// The poll stopped early because the outbox is full.
    Paused,
    /// The poll failed; the kind names the failing part (`vendor`, `auth`, `store`, …).
    Failed(&'static str),
}

impl PollOutcome {
    fn label(self) -> String {
        match self {
            PollOutcome::Ok => "ok".into(),
            PollOutcome::Paused => "paused (outbox full)".into(),
            PollOutcome::Failed(kind) => format!("failed ({kind})"),
        }
    }

    fn class(self) -> &'static str {
        match self {
            PollOutcome::Ok => "ok",
            PollOutcome::Paused => "warn",
            PollOutcome::Failed(_) => "bad",
        }
    }
}

/// The last poll of one resource.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LastPoll {
    /// When it ended.
    pub at: DateTime<Utc>,
    /// How it ended.
    pub outcome: PollOutcome,
    /// Records the vendor returned.
    pub records: u64,
    /// Changes detected (creates + updates + deletes).
    pub changes: u64,
    /// How long it took.
    pub duration: Duration,
}

/// The last poll of every resource this replica polled, kept in memory by the daemon.
#[derive(Debug, Default)]
pub struct PollBoard {
    polls: Mutex<BTreeMap<ResourceKey, LastPoll>>,
}

impl PollBoard {
    /// Records `key`'s latest poll.
    pub fn record(&self, key: &ResourceKey, poll: LastPoll) {
        self.polls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), poll);
    }

    /// `key`'s latest poll, if this replica polled it.
    pub fn last(&self, key: &ResourceKey) -> Option<LastPoll> {
        self.polls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
    }
}

/// A configured resource, as the page lists it.
#[derive(Debug, Clone)]
pub struct PageResource {
    /// Source and resource names.
    pub key: ResourceKey,
    /// The topic its messages go to.
    pub topic: String,
    /// Its poll interval.
    pub interval: Duration,
}

/// Everything the page is rendered from.
pub struct StatusPage {
    store: Arc<dyn Store>,
    board: Arc<PollBoard>,
    resources: Vec<PageResource>,
    replica: String,
    backend: &'static str,
}

/// What the store said when the page was rendered (`None` where it failed).
#[derive(Debug, Default)]
struct Snapshot {
    summaries: Option<BTreeMap<ResourceKey, ResourceSummary>>,
    outbox: Option<OutboxStats>,
    leases: Option<BTreeMap<ResourceKey, Lease>>,
    replicas: Option<Vec<String>>,
}

impl StatusPage {
    /// A page over `store` and `board` for `resources`; `replica` is this replica's id and
    /// `backend` the state store's kind (`sqlite`, `postgres`).
    pub fn new(
        store: Arc<dyn Store>,
        board: Arc<PollBoard>,
        resources: Vec<PageResource>,
        replica: String,
        backend: &'static str,
    ) -> Self {
        StatusPage {
            store,
            board,
            resources,
            replica,
            backend,
        }
    }

    async fn snapshot(&self) -> Snapshot {
        fn logged<T>(what: &str, r: Result<T, crate::store::StoreError>) -> Option<T> {
            r.map_err(|e| tracing::warn!(error = %e, "status page: cannot read {what}"))
                .ok()
        }
        let summaries = logged("resources", self.store.summaries().await)
            .map(|v| v.into_iter().map(|s| (s.key.clone(), s)).collect());
        let outbox = logged("the outbox", self.store.outbox_stats().await);
        let leases = logged("leases", self.store.leases().await)
            .map(|v| v.into_iter().map(|l| (l.key.clone(), l)).collect());
        let replicas = logged("replicas", self.store.live_replicas().await);
        Snapshot {
            summaries,
            outbox,
            leases,
            replicas,
        }
    }

    /// Renders the page as of `now`.
    pub async fn render(&self, now: DateTime<Utc>) -> String {
        let started = Instant::now();
        let snap = self.snapshot().await;
        let view = View {
            board: &self.board,
            resources: &self.resources,
            replica: &self.replica,
            backend: self.backend,
        };
        let body = view.body(&snap, now);
        page(body, now, started.elapsed()).into_string()
    }
}

/// The page's markup over one [`Snapshot`] (no I/O).
struct View<'a> {
    board: &'a PollBoard,
    resources: &'a [PageResource],
    replica: &'a str,
    backend: &'a str,
}

impl View<'_> {
    fn body(&self, snap: &Snapshot, now: DateTime<Utc>) -> Markup {
        let unavailable = html! { span.bad { "unavailable (see the log)" } };
        html! {
            p.meta {
                "replica " b { (self.replica) } " · state store " b { (self.backend) }
                " · live replicas: "
                @match &snap.replicas {
                    Some(r) if r.is_empty() => { "none" }
                    Some(r) => { (r.join(", ")) }
                    None => { (unavailable) }
                }
            }
            h2 { "Outbox" }
            @match &snap.outbox {
                Some(o) => {
                    table.outbox {
                        tr { th { "waiting" } td.num #outbox-depth { (o.depth) } }
                        tr { th { "oldest row" } td #outbox-oldest {
                            @match o.oldest {
                                Some(t) => { (age(now, t)) " old" }
                                None => { "—" }
                            }
                        } }
                        tr { th { "dead letters" } td #dead-letters class=(if o.dead > 0 { "num bad" } else { "num" }) { (o.dead) } }
                    }
                }
                None => { p { (unavailable) } }
            }
            h2 { "Resources" }
            table.resources {
                thead { tr {
                    th { "source" } th { "resource" } th { "topic" } th { "interval" }
                    th { "last poll" } th { "age" } th { "records" } th { "changes" }
                    th { "cursor" } th { "lag" } th { "known records" } th { "lease held by" }
                } }
                tbody {
                    @for r in self.resources {
                        (self.row(r, snap, now))
                    }
                }
            }
        }
    }

    fn row(&self, r: &PageResource, snap: &Snapshot, now: DateTime<Utc>) -> Markup {
        let last = self.board.last(&r.key);
        let summary = snap.summaries.as_ref().map(|s| s.get(&r.key));
        let lease = snap.leases.as_ref().map(|l| l.get(&r.key));
        let cursor = summary.flatten().and_then(|s| s.state.cursor);
        html! {
            tr data-resource=(r.key) {
                td { (r.key.source) }
                td.name { (r.key.resource) }
                td { (r.topic) }
                td { (humantime::format_duration(r.interval)) }
                @match last {
                    Some(p) => {
                        td class=(p.outcome.class()) { (p.outcome.label()) }
                        td { (age(now, p.at)) " ago" }
                        td.num.records { (p.records) }
                        td.num.changes { (p.changes) }
                    }
                    None => { td colspan="4" { "not polled by this replica yet" } }
                }
                td { @match cursor {
                    Some(c) => { (c.to_rfc3339_opts(SecondsFormat::Secs, true)) }
                    None => { "—" }
                } }
                td { @match cursor {
                    Some(c) => { (age(now, c)) }
                    None => { "—" }
                } }
                td.num { @match summary {
                    Some(Some(s)) => { (s.snapshots) }
                    Some(None) => { "0" }
                    None => { "?" }
                } }
                td { @match lease {
                    Some(Some(l)) => {
                        (l.fence.owner)
                        @if l.fence.owner == self.replica { " (this replica)" }
                        @if l.expires_at < now { span.bad { " expired" } }
                    }
                    Some(None) => { span.bad { "nobody" } }
                    None => { "?" }
                } }
            }
        }
    }
}

/// `now - then`, whole seconds, as `1h 2m 3s` (`0s` for the future).
fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds().max(0) as u64;
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

const CSS: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d2430;background:#fafbfc}\
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.2em 0 .4em}\
table{border-collapse:collapse;background:#fff}\
th,td{border:1px solid #d5dae1;padding:.3em .6em;text-align:left;vertical-align:top;white-space:nowrap}\
thead th{background:#eef1f5}td.num{text-align:right;font-variant-numeric:tabular-nums}\
.ok{color:#17692b}.warn{color:#8a5a00}.bad{color:#b3261e;font-weight:600}\
.meta{color:#555}footer{margin-top:1.5em;color:#777;font-size:.9em}";

fn page(body: Markup, now: DateTime<Utc>, took: Duration) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content=(REFRESH_SECONDS);
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "pollbus status" }
                style { (maud::PreEscaped(CSS)) }
            }
            body {
                h1 { "pollbus status" }
                (body)
                footer {
                    "generated " (now.to_rfc3339_opts(SecondsFormat::Secs, true))
                    " in " (format!("{:.1}", took.as_secs_f64() * 1000.0)) " ms"
                    " · refreshes every " (REFRESH_SECONDS) " s · "
                    a href="metrics" { "metrics" } " · " a href="ready" { "ready" }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Fence, ResourceState};

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn render(resources: &[PageResource], board: &PollBoard, snap: &Snapshot) -> String {
        let view = View {
            board,
            resources,
            replica: "pod-a",
            backend: "postgres",
        };
        let now = t("2026-01-02T03:04:05Z");
        page(view.body(snap, now), now, Duration::from_millis(3)).into_string()
    }

    fn resource(source: &str, name: &str) -> PageResource {
        PageResource {
            key: ResourceKey::new(source, name),
            topic: format!("api.event.{name}"),
            interval: Duration::from_secs(60),
        }
    }

    #[test]
    fn shows_last_poll_cursor_lease_and_outbox_and_escapes_text() {
        let crm = resource("crm", "customers");
        let evil = resource("crm", "<script>alert(1)</script>");
        let board = PollBoard::default();
        board.record(
            &crm.key,
            LastPoll {
                at: t("2026-01-02T03:03:05Z"),
                outcome: PollOutcome::Ok,
                records: 17,
                changes: 5,
                duration: Duration::from_millis(40),
            },
        );
        board.record(
            &evil.key,
            LastPoll {
                at: t("2026-01-02T03:04:00Z"),
                outcome: PollOutcome::Failed("auth"),
                records: 0,
                changes: 0,
                duration: Duration::from_millis(40),
            },
        );
        let summary = ResourceSummary {
            key: crm.key.clone(),
            state: ResourceState {
                baseline_done: true,
                cursor: Some(t("2026-01-02T02:04:05Z")),
                ..Default::default()
            },
            snapshots: 42,
        };
        let lease = Lease {
            key: crm.key.clone(),
            fence: Fence {
                owner: "pod-b & co".into(),
                token: 3,
            },
            expires_at: t("2026-01-02T03:05:00Z"),
        };
        let snap = Snapshot {
            summaries: Some([(crm.key.clone(), summary)].into()),
            outbox: Some(OutboxStats {
                depth: 12,
                oldest: Some(t("2026-01-02T03:02:05Z")),
                dead: 2,
            }),
            leases: Some([(crm.key.clone(), lease)].into()),
            replicas: Some(vec!["pod-a".into(), "pod-b & co".into()]),
        };
        let html = render(&[crm, evil], &board, &snap);
        assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
        assert!(
            html.contains(r#"<meta http-equiv="refresh" content="5">"#),
            "{html}"
        );
        for expected in [
            "<td class=\"num records\">17</td>",
            "<td class=\"num changes\">5</td>",
            "1m ago",
            "2026-01-02T02:04:05Z",
            "<td>1h</td>",
            "<td class=\"num\">42</td>",
            "pod-b &amp; co",
            "id=\"outbox-depth\">12</td>",
            "2m old",
            "id=\"dead-letters\" class=\"num bad\">2</td>",
            "failed (auth)",
            "&lt;script&gt;alert(1)&lt;/script&gt;",
            ">nobody<",
        ] {
            assert!(html.contains(expected), "{expected} missing from {html}");
        }
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no external asset: {html}"
        );
    }

    #[test]
    fn says_when_the_store_cannot_be_read() {
        let html = render(
            &[resource("crm", "customers")],
            &PollBoard::default(),
            &Snapshot::default(),
        );
        assert!(html.contains("unavailable (see the log)"), "{html}");
        assert!(html.contains("not polled by this replica yet"), "{html}");
    }
}
