//! AMQP outcomes and errors as [`SinkError`]s: retryable (busy, timeouts, lost connections: the
//! rows stay in the outbox) or permanent (missing topic, unauthorized, too large: the
//! dead-letter table).

use azure_core_amqp::AmqpSendOutcome;

use crate::sink::SinkError;

/// Classifies an AMQP failure by the error conditions its text names.
pub(super) fn classify(
    topic: &str,
    what: &str,
    error: &dyn std::fmt::Display,
    debug: &str,
) -> SinkError {
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

/// `error` with a rejection pinned to message `index` of the batch (when known); other errors
/// unchanged.
pub(super) fn at_index(error: SinkError, index: Option<usize>) -> SinkError {
    match error {
        SinkError::Rejected { reason, .. } => SinkError::Rejected { index, reason },
        other => other,
    }
}

/// The name of a send outcome, for messages.
pub(super) fn outcome_name(outcome: &AmqpSendOutcome) -> &'static str {
    match outcome {
        AmqpSendOutcome::Accepted => "accepted",
        AmqpSendOutcome::Rejected(_) => "rejected",
        AmqpSendOutcome::Released => "released",
        AmqpSendOutcome::Modified(_) => "modified",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_decide_between_rejected_and_transient() {
        let missing = classify("t", "sending to", &"amqp:not-found: no such entity", "");
        assert!(
            matches!(&missing, SinkError::Rejected { index: None, reason } if reason.starts_with("topic t not found")),
            "{missing:?}"
        );
        let denied = classify("t", "authorizing", &"status 401", "");
        assert!(
            matches!(&denied, SinkError::Rejected { reason, .. } if reason.starts_with("not authorized to send to topic t")),
            "{denied:?}"
        );
        let large = classify("t", "sending to", &"x", "amqp:link:message-size-exceeded");
        assert!(
            matches!(&large, SinkError::Rejected { reason, .. } if reason == "message too large for topic t (amqp:link:message-size-exceeded)"),
            "{large:?}"
        );
        assert_eq!(
            classify("t", "sending to", &"connection reset", ""),
            SinkError::Transient {
                reason: "sending to t: connection reset".into()
            }
        );
    }

    #[test]
    fn only_rejections_take_an_index() {
        let rejected = SinkError::Rejected {
            index: None,
            reason: "r".into(),
        };
        assert_eq!(
            at_index(rejected, Some(3)),
            SinkError::Rejected {
                index: Some(3),
                reason: "r".into()
            }
        );
        let transient = SinkError::Transient { reason: "t".into() };
        assert_eq!(at_index(transient.clone(), Some(3)), transient);
    }
}
