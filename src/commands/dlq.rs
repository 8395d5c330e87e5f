//! `pollbus dlq`: peek, resubmit and purge a subscription's dead-letter queue over the sink's
//! connection settings.

use std::io::Write;
use std::process::ExitCode;

use pollbus::cli::DlqAction;
use pollbus::config::{Config, SinkConfig};
use pollbus::sink::servicebus::dlq::{DeadLetter, DeadLetterQueue, DlqError};
use pollbus::sink::servicebus::AmqpRuntime;

use super::{timestamp_or, EXIT_CONFIG};

/// Runs a `pollbus dlq` action; exit 0 on success, 1 when Service Bus failed, 64 when the sink
/// is not Service Bus.
pub async fn dlq(
    config: &Config,
    action: DlqAction,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let SinkConfig::Servicebus(sb) = &config.sink else {
        eprintln!(
            "pollbus: config error: sink: `pollbus dlq` needs sink.kind = \"servicebus\", not {:?}",
            config.sink.kind()
        );
        return Ok(ExitCode::from(EXIT_CONFIG));
    };
    let (topic, subscription) = action.target();
    let (topic, subscription) = (topic.to_string(), subscription.to_string());
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
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("pollbus: dlq {topic}/{subscription}: {e}");
            Ok(ExitCode::FAILURE)
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
        timestamp_or(d.enqueued, "unknown"),
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
