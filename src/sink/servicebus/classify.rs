//! AMQP failures as [`SinkError`]s, decided by the error's **condition symbol** (read from
//! `azure_core_amqp`'s typed errors), never by searching its text: a description or tracking id
//! that happens to contain "401" or "NotFound" changes nothing.
//!
//! Three outcomes:
//! - **transient**: the rows stay in the outbox and the publisher backs off (for
//!   `com.microsoft:server-busy` at least [`SERVER_BUSY_WAIT`], the wait Microsoft's SDKs use
//!   after that error);
//! - **topic-level** ([`SinkError::Blocked`]): the topic cannot take messages until an operator
//!   fixes something; its rows stay in the outbox, the topic is paused (capped backoff) and the
//!   others keep flowing;
//! - **message-level** ([`SinkError::Rejected`]): this message will never be accepted; it moves
//!   to the dead-letter table and the messages behind it continue.
//!
//! Every condition pollbus knows is in [`CONDITIONS`]; **any other condition is transient**, as
//! are failures without a condition (lost connections, timeouts, I/O). Management status codes
//! (the `$cbs` put-token answer) map as 401/403 → unauthorized, 404 → not found, others
//! transient.

use std::time::Duration;

use azure_core_amqp::error::{AmqpDescribedError, AmqpErrorKind};
use azure_core_amqp::{AmqpError, AmqpSendOutcome};

use crate::sink::{SinkError, TopicBlock};

/// How long to wait after `com.microsoft:server-busy` (Service Bus sends no retry hint over
/// AMQP; Microsoft's SDKs wait 10 s after this error).
pub const SERVER_BUSY_WAIT: Duration = Duration::from_secs(10);

/// What a condition means for a publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Retry later with backoff.
    Transient,
    /// Retry later, waiting at least [`SERVER_BUSY_WAIT`].
    ServerBusy,
    /// Pause the topic until it is fixed.
    Topic(TopicBlock),
    /// Dead-letter this message.
    Message,
}

/// Every AMQP and Service Bus error condition pollbus classifies, with its outcome. Conditions
/// not listed here are [`Class::Transient`].
pub const CONDITIONS: &[(&str, Class)] = &[
    // Topic-level: an operator must act; the topic pauses, nothing is dead-lettered.
    ("amqp:not-found", Class::Topic(TopicBlock::NotFound)),
    ("amqp:resource-deleted", Class::Topic(TopicBlock::NotFound)),
    (
        "amqp:unauthorized-access",
        Class::Topic(TopicBlock::Unauthorized),
    ),
    (
        "com.microsoft:publisher-revoked",
        Class::Topic(TopicBlock::Unauthorized),
    ),
    (
        "com.microsoft:entity-disabled",
        Class::Topic(TopicBlock::Disabled),
    ),
    (
        "amqp:resource-limit-exceeded",
        Class::Topic(TopicBlock::QuotaExceeded),
    ),
    (
        "com.microsoft:quota-exceeded",
        Class::Topic(TopicBlock::QuotaExceeded),
    ),
    // Message-level: this message can never be accepted as it is.
    ("amqp:link:message-size-exceeded", Class::Message),
    ("amqp:decode-error", Class::Message),
    ("amqp:invalid-field", Class::Message),
    ("amqp:not-allowed", Class::Message),
    ("amqp:not-implemented", Class::Message),
    ("amqp:precondition-failed", Class::Message),
    ("com.microsoft:argument-error", Class::Message),
    ("com.microsoft:argument-out-of-range", Class::Message),
    // Transient with the broker's wait.
    ("com.microsoft:server-busy", Class::ServerBusy),
    // Transient: the broker or the connection recovers on its own (listed so the table
    // documents them; unlisted conditions are transient too).
    ("com.microsoft:timeout", Class::Transient),
    ("com.microsoft:operation-cancelled", Class::Transient),
    ("com.microsoft:partition-not-owned", Class::Transient),
    ("com.microsoft:store-lock-lost", Class::Transient),
    ("com.microsoft:entity-updated", Class::Transient),
    ("com.microsoft:message-lock-lost", Class::Transient),
    ("com.microsoft:session-lock-lost", Class::Transient),
    ("com.microsoft:session-cannot-be-locked", Class::Transient),
    ("com.microsoft:message-not-found", Class::Transient),
    ("com.microsoft:session-not-found", Class::Transient),
    ("amqp:internal-error", Class::Transient),
    ("amqp:resource-locked", Class::Transient),
    ("amqp:illegal-state", Class::Transient),
    ("amqp:frame-size-too-small", Class::Transient),
    ("amqp:connection:forced", Class::Transient),
    ("amqp:connection:framing-error", Class::Transient),
    ("amqp:connection:redirect", Class::Transient),
    ("amqp:session:window-violation", Class::Transient),
    ("amqp:session:errant-link", Class::Transient),
    ("amqp:session:handle-in-use", Class::Transient),
    ("amqp:session:unattached-handle", Class::Transient),
    ("amqp:link:detach-forced", Class::Transient),
    ("amqp:link:stolen", Class::Transient),
    ("amqp:link:redirect", Class::Transient),
    ("amqp:link:transfer-limit-exceeded", Class::Transient),
];

/// The class of an error condition symbol; unknown symbols are transient.
pub fn class_of(condition: &str) -> Class {
    CONDITIONS
        .iter()
        .find(|(c, _)| *c == condition)
        .map_or(Class::Transient, |(_, class)| *class)
}

/// The [`SinkError`] for a failure with `condition` while doing `what` (e.g. "sending to")
/// with `topic`; `detail` (the broker's description) is only quoted.
pub(super) fn from_condition(topic: &str, what: &str, condition: &str, detail: &str) -> SinkError {
    let said = if detail.is_empty() {
        condition.to_string()
    } else {
        format!("{condition}: {detail}")
    };
    match class_of(condition) {
        Class::Transient => SinkError::transient(format!("{what} {topic}: {said}")),
        Class::ServerBusy => SinkError::Transient {
            reason: format!("{what} {topic}: {said}"),
            retry_after: Some(SERVER_BUSY_WAIT),
        },
        Class::Topic(block) => blocked(topic, block, &said),
        Class::Message => SinkError::Rejected {
            index: None,
            reason: format!("topic {topic} refused the message ({said})"),
        },
    }
}

fn blocked(topic: &str, block: TopicBlock, said: &str) -> SinkError {
    let what = match block {
        TopicBlock::NotFound => "does not exist",
        TopicBlock::Unauthorized => "refuses us (not authorized to send)",
        TopicBlock::Disabled => "is disabled",
        TopicBlock::QuotaExceeded => "is full (quota exceeded)",
    };
    SinkError::Blocked {
        block,
        reason: format!("topic {topic} {what}; {} ({said})", block.fix()),
    }
}

/// Classifies a described AMQP error (a rejected outcome, a detach or close with an error).
pub(super) fn from_described(topic: &str, what: &str, error: &AmqpDescribedError) -> SinkError {
    from_condition(
        topic,
        what,
        error.condition.as_ref(),
        error.description.as_deref().unwrap_or_default(),
    )
}

/// Classifies an error of `azure_core_amqp` by the [`AmqpError`] it carries (found in its
/// source chain): a described error by its condition, a management status by its code, anything
/// else (lost connection, I/O, timeouts) as transient.
pub(super) fn classify(
    topic: &str,
    what: &str,
    error: &(dyn std::error::Error + 'static),
) -> SinkError {
    match find_amqp(error).map(AmqpError::kind) {
        Some(AmqpErrorKind::AmqpDescribedError(described)) => {
            from_described(topic, what, described)
        }
        Some(AmqpErrorKind::ManagementStatusCode(code, description)) => {
            let detail = description.as_deref().unwrap_or_default();
            let said = format!("status {}: {detail}", u16::from(*code));
            match u16::from(*code) {
                401 | 403 => blocked(topic, TopicBlock::Unauthorized, &said),
                404 => blocked(topic, TopicBlock::NotFound, &said),
                _ => SinkError::transient(format!("{what} {topic}: {said}")),
            }
        }
        _ => SinkError::transient(format!("{what} {topic}: {error}")),
    }
}

/// The first [`AmqpError`] in `error`'s source chain (itself included).
fn find_amqp<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a AmqpError> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(amqp) = e.downcast_ref::<AmqpError>() {
            return Some(amqp);
        }
        next = e.source();
    }
    None
}

/// Classifies a send outcome other than accepted.
pub(super) fn from_outcome(topic: &str, outcome: &AmqpSendOutcome) -> SinkError {
    match outcome {
        AmqpSendOutcome::Rejected(Some(error)) => from_described(topic, "sending to", error),
        // A rejection without an error says nothing about why: retry (and dead-letter only
        // through the attempts limit).
        other => SinkError::transient(format!(
            "topic {topic} did not accept the message ({})",
            outcome_name(other)
        )),
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
    use azure_core_amqp::error::AmqpErrorCondition;
    use azure_core_amqp::{AmqpOrderedMap, AmqpSymbol, AmqpValue};

    fn described(condition: &str, description: &str) -> AmqpDescribedError {
        let mut info = AmqpOrderedMap::new();
        info.insert(
            AmqpSymbol::from("com.microsoft:tracking-id"),
            AmqpValue::from("401-NotFound-unauthorized-access"),
        );
        AmqpDescribedError::new(
            condition.parse::<AmqpErrorCondition>().unwrap(),
            Some(description.to_string()),
            info,
        )
    }

    /// The error as `azure_core_amqp` returns it from `send`: an `AmqpError` inside an
    /// `azure_core::Error`.
    fn core_error(kind: AmqpErrorKind) -> azure_core::Error {
        azure_core::Error::from(AmqpError::from(kind))
    }

    #[test]
    fn server_busy_mentioning_401_is_transient_with_the_brokers_wait() {
        let e = core_error(AmqpErrorKind::AmqpDescribedError(described(
            "com.microsoft:server-busy",
            "The request was terminated because the entity is being throttled. Error code : 50009. TrackingId:401-amqp:unauthorized-access, NotFound",
        )));
        match classify("t", "sending to", &e) {
            SinkError::Transient {
                retry_after,
                reason,
            } => {
                assert_eq!(retry_after, Some(SERVER_BUSY_WAIT));
                assert!(reason.starts_with("sending to t: com.microsoft:server-busy"));
            }
            other => panic!("{other:?}"),
        }
        let outcome = AmqpSendOutcome::Rejected(Some(described(
            "com.microsoft:server-busy",
            "status 401 amqp:not-found",
        )));
        assert!(matches!(
            from_outcome("t", &outcome),
            SinkError::Transient {
                retry_after: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn topic_problems_block_the_topic() {
        for (condition, block) in [
            ("amqp:not-found", TopicBlock::NotFound),
            ("amqp:unauthorized-access", TopicBlock::Unauthorized),
            ("com.microsoft:entity-disabled", TopicBlock::Disabled),
            ("amqp:resource-limit-exceeded", TopicBlock::QuotaExceeded),
        ] {
            let e = core_error(AmqpErrorKind::AmqpDescribedError(described(condition, "x")));
            match classify("api.event.x", "attaching a sender to", &e) {
                SinkError::Blocked { block: b, reason } => {
                    assert_eq!(b, block, "{condition}");
                    assert!(reason.starts_with("topic api.event.x "), "{reason}");
                    assert!(reason.contains(block.fix()), "{reason}");
                }
                other => panic!("{condition}: {other:?}"),
            }
        }
    }

    #[test]
    fn message_problems_reject_the_message() {
        let outcome = AmqpSendOutcome::Rejected(Some(described(
            "amqp:link:message-size-exceeded",
            "too big",
        )));
        assert_eq!(
            from_outcome("t", &outcome),
            SinkError::Rejected {
                index: None,
                reason: "topic t refused the message (amqp:link:message-size-exceeded: too big)"
                    .into()
            }
        );
    }

    #[test]
    fn unknown_conditions_and_plain_failures_are_transient() {
        let e = core_error(AmqpErrorKind::AmqpDescribedError(described(
            "com.example:something-new",
            "unauthorized-access 401 not-found",
        )));
        assert!(matches!(
            classify("t", "sending to", &e),
            SinkError::Transient {
                retry_after: None,
                ..
            }
        ));
        let dropped = core_error(AmqpErrorKind::SimpleMessage(
            "amqp:not-found Unauthorized 401".into(),
        ));
        assert!(matches!(
            classify("t", "sending to", &dropped),
            SinkError::Transient { .. }
        ));
        let io = std::io::Error::other("status 401 amqp:unauthorized-access");
        assert!(matches!(
            classify("t", "sending to", &io),
            SinkError::Transient { .. }
        ));
        let released = from_outcome("t", &AmqpSendOutcome::Released);
        assert!(matches!(released, SinkError::Transient { .. }));
        let bare = from_outcome("t", &AmqpSendOutcome::Rejected(None));
        assert!(matches!(bare, SinkError::Transient { .. }));
    }

    #[test]
    fn management_status_codes_map_by_code() {
        let e = core_error(AmqpErrorKind::ManagementStatusCode(
            azure_core::http::StatusCode::from(401),
            Some("InvalidSignature: server-busy".into()),
        ));
        assert!(matches!(
            classify("t", "authorizing", &e),
            SinkError::Blocked {
                block: TopicBlock::Unauthorized,
                ..
            }
        ));
        let e = core_error(AmqpErrorKind::ManagementStatusCode(
            azure_core::http::StatusCode::from(500),
            Some("401".into()),
        ));
        assert!(matches!(
            classify("t", "authorizing", &e),
            SinkError::Transient { .. }
        ));
    }

    #[test]
    fn every_condition_of_the_table_round_trips_and_appears_once() {
        let mut seen = std::collections::HashSet::new();
        for (condition, class) in CONDITIONS {
            assert!(seen.insert(*condition), "{condition} listed twice");
            assert_eq!(class_of(condition), *class);
            let parsed: AmqpErrorCondition = condition.parse().unwrap();
            assert_eq!(parsed.as_ref(), *condition);
        }
        assert_eq!(class_of("com.example:unheard-of"), Class::Transient);
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
        let transient = SinkError::transient("t");
        assert_eq!(at_index(transient.clone(), Some(3)), transient);
    }
}
