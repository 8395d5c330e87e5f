//! Human-readable output of `pollbus check` (the plan) and `pollbus state`.

use std::fmt::Write as _;
use std::io::Write;

use crate::cli::{DlqAction, StateAction};
use crate::config::{Config, DeleteMode, SinkConfig};
use crate::contract::format_timestamp;
use crate::sink::servicebus::dlq::{DeadLetter, DeadLetterQueue, DlqError};
use crate::sink::servicebus::AmqpRuntime;
use crate::store::{Store, StoreError};

/// A state URL safe to print: the password of `postgres://user:pw@host/db` is masked.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// The plan `pollbus check` prints for a valid configuration.
pub fn describe(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "configuration is valid");
    let _ = writeln!(out, "state: {}", redact_url(config.state.url.expose()));
    let sink = match &config.sink {
        SinkConfig::Stdout { .. } => "stdout (one JSON line per message)".to_string(),
        SinkConfig::Jsonl { path, .. } => format!("jsonl file {path}"),
        SinkConfig::Servicebus(sb) => match (&sb.connection_string, &sb.namespace) {
            (Some(cs), _) => match crate::sink::servicebus::ConnectionString::parse(cs.expose()) {
                Ok(c) => format!(
                    "Azure Service Bus {} (SAS key {:?}{})",
                    c.endpoint_host(),
                    c.key_name.as_deref().unwrap_or("-"),
                    if c.emulator {
                        ", development emulator"
                    } else {
                        ""
                    }
                ),
                Err(_) => "Azure Service Bus (connection string)".into(),
            },
            (None, Some(ns)) => format!("Azure Service Bus {ns} (Entra ID {:?})", sb.credential),
            (None, None) => "Azure Service Bus".into(),
        },
    };
    let _ = writeln!(
        out,
        "sink: {sink}, topic prefix {:?}",
        config.sink.topic_prefix()
    );
    for s in &config.sources {
        let _ =
            writeln!(
            out,
            "source {} ({}, sourceSystem {:?}){}: every {} + up to {} jitter, overlap {}, auth {}",
            s.name,
            s.kind.as_str(),
            s.source_system,
            s.base_url.as_deref().map(|u| format!(" at {u}")).unwrap_or_default(),
            humantime::format_duration(s.interval),
            humantime::format_duration(s.effective_jitter()),
            humantime::format_duration(s.overlap),
            s.auth.kind(),
        );
        for r in &s.resources {
            let fields: Vec<String> = r.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let deletes = match r.deletes {
                DeleteMode::Off => "deletes off".to_string(),
                DeleteMode::Audit => "deletes from the audit".to_string(),
                mode => format!(
                    "deletes {} every {}",
                    if mode == DeleteMode::Both {
                        "from the audit + reconcile"
                    } else {
                        "by reconcile"
                    },
                    humantime::format_duration(r.reconcile_interval)
                ),
            };
            let _ = writeln!(
                out,
                "  {}/{} -> topic {}{} (type {:?}); id {}; fields {}; {}; first poll: {:?}",
                s.name,
                r.name,
                config.sink.topic_prefix(),
                r.entity,
                r.entity,
                r.id_field.as_deref().unwrap_or(s.kind.default_id_field()),
                fields.join(", "),
                deletes,
                r.initial,
            );
        }
    }
    out
}

/// Runs a `pollbus state` action, writing its output to `out`.
pub async fn state(
    store: &dyn Store,
    action: StateAction,
    out: &mut dyn Write,
) -> Result<(), StoreError> {
    let mut text = String::new();
    match action {
        StateAction::Show => {
            let stats = store.outbox_stats().await?;
            let _ = writeln!(
                text,
                "outbox: {} waiting{}; dead letters: {}",
                stats.depth,
                stats
                    .oldest
                    .map(|t| format!(", oldest written {}", format_timestamp(t)))
                    .unwrap_or_default(),
                stats.dead
            );
            let summaries = store.summaries().await?;
            if summaries.is_empty() {
                let _ = writeln!(text, "no resource has been polled yet");
            }
            for s in summaries {
                let _ = writeln!(
                    text,
                    "{}: cursor {}, {} snapshots, baseline {}, last reconcile {}",
                    s.key,
                    s.state
                        .cursor
                        .map(format_timestamp)
                        .unwrap_or_else(|| "none".into()),
                    s.snapshots,
                    if s.state.baseline_done {
                        "done"
                    } else {
                        "in progress"
                    },
                    s.state
                        .last_reconcile
                        .map(format_timestamp)
                        .unwrap_or_else(|| "never".into()),
                );
            }
        }
        StateAction::Dead { limit } => {
            let rows = store.dead_letters(limit).await?;
            if rows.is_empty() {
                let _ = writeln!(text, "no dead letters");
            }
            for d in rows {
                let _ = writeln!(
                    text,
                    "seq {} topic {} message {} failed {}: {}",
                    d.seq,
                    d.message.topic,
                    d.message.message_id,
                    format_timestamp(d.failed_at),
                    d.reason
                );
            }
        }
        StateAction::RetryDead { seqs } => {
            let filter = (!seqs.is_empty()).then_some(seqs.as_slice());
            let n = store.retry_dead(filter).await?;
            let _ = writeln!(text, "requeued {n} dead letters to the outbox");
        }
    }
    let _ = out.write_all(text.as_bytes());
    Ok(())
}

/// Runs a `pollbus dlq` action; exit 0 on success, 1 when Service Bus failed, 64 when the sink
/// is not Service Bus.
pub async fn dlq(
    config: &Config,
    action: DlqAction,
    out: &mut dyn Write,
) -> anyhow::Result<std::process::ExitCode> {
    let SinkConfig::Servicebus(sb) = &config.sink else {
        eprintln!(
            "pollbus: config error: sink: `pollbus dlq` needs sink.kind = \"servicebus\", not {:?}",
            config.sink.kind()
        );
        return Ok(std::process::ExitCode::from(64));
    };
    let (topic, subscription) = match &action {
        DlqAction::Peek {
            topic,
            subscription,
            ..
        }
        | DlqAction::Resubmit {
            topic,
            subscription,
            ..
        }
        | DlqAction::Purge {
            topic,
            subscription,
            ..
        } => (topic.clone(), subscription.clone()),
    };
    let prefetch = match &action {
        DlqAction::Peek { count, .. } | DlqAction::Resubmit { count, .. } => {
            (*count).clamp(1, 1000) as u32
        }
        DlqAction::Purge { .. } => 100,
    };
    // On the AMQP client's own thread (sink::servicebus::runtime explains why).
    let runtime = AmqpRuntime::start("pollbus-dlq")?;
    let sb = sb.clone();
    let (t, s) = (topic.clone(), subscription.clone());
    let work = async move {
        let queue = DeadLetterQueue::open(&sb, &t, &s, prefetch).await?;
        let result = dlq_action(&queue, action, &t, &s).await;
        queue.close().await;
        result
    };
    let result = runtime
        .run(work)
        .await
        .unwrap_or_else(|stopped| Err(DlqError::ServiceBus(stopped.to_string())));
    match result {
        Ok(text) => {
            let _ = out.write_all(text.as_bytes());
            Ok(std::process::ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("pollbus: dlq {topic}/{subscription}: {e}");
            Ok(std::process::ExitCode::FAILURE)
        }
    }
}

/// One line per dead-lettered message.
fn show_dead_letter(d: &DeadLetter) -> String {
    format!(
        "message {} reason {:?} description {:?} deliveries {} enqueued {} body {}\n",
        d.message_id,
        d.reason.as_deref().unwrap_or(""),
        d.description.as_deref().unwrap_or(""),
        d.delivery_count,
        d.enqueued
            .map(format_timestamp)
            .unwrap_or_else(|| "unknown".into()),
        d.body
    )
}

/// Runs `action` on an open dead-letter queue; returns what to print.
async fn dlq_action(
    queue: &DeadLetterQueue,
    action: DlqAction,
    topic: &str,
    subscription: &str,
) -> Result<String, DlqError> {
    let listing = |found: &[DeadLetter], summary: String| {
        let mut text: String = found.iter().map(show_dead_letter).collect();
        text.push_str(&summary);
        text
    };
    match action {
        DlqAction::Peek { count, .. } => queue.peek(count).await.map(|found| {
            let summary = format!(
                "{} dead-lettered message(s) shown from {topic}/{subscription}\n",
                found.len()
            );
            listing(&found, summary)
        }),
        DlqAction::Resubmit { count, dry_run, .. } => {
            queue.resubmit(count, dry_run).await.map(|done| {
                let verb = if dry_run {
                    "would resubmit"
                } else {
                    "resubmitted"
                };
                let summary = format!(
                    "{verb} {} message(s) from {topic}/{subscription} to {topic}\n",
                    done.len()
                );
                listing(&done, summary)
            })
        }
        DlqAction::Purge {
            older_than,
            dry_run,
            ..
        } => {
            let cutoff = older_than
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .map(|d| chrono::Utc::now() - d);
            queue.purge(cutoff, dry_run).await.map(|done| {
                let verb = if dry_run { "would delete" } else { "deleted" };
                let summary = format!(
                    "{verb} {} message(s) from {topic}/{subscription}\n",
                    done.len()
                );
                listing(&done, summary)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(
            redact_url("postgres://u:secret@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(redact_url("sqlite://./data/p.db"), "sqlite://./data/p.db");
    }
}
