//! Microsoft's Service Bus emulator `Config.json` format.
//!
//! `{"UserConfig": {"Namespaces": [{"Name", "Queues": [...], "Topics": [{"Name", "Properties",
//! "Subscriptions": [{"Name", "Properties", "Rules": [...]}]}]}], "Logging": {...}}}`.
//! Unknown fields are ignored so the same file works with Microsoft's emulator.

use std::{collections::BTreeMap, path::Path, time::Duration};

use serde::Deserialize;

/// Errors while loading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The JSON is malformed.
    #[error("parsing Config.json: {0}")]
    Json(#[from] serde_json::Error),
    /// A duration is not ISO-8601.
    #[error("invalid ISO-8601 duration {0:?}")]
    Duration(String),
    /// A semantic problem (duplicate names, bad limits).
    #[error("{0}")]
    Invalid(String),
}

/// Top level of `Config.json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Config {
    /// The user configuration.
    #[serde(default)]
    pub user_config: UserConfig,
}

/// `UserConfig`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserConfig {
    /// Namespaces (Microsoft's emulator supports exactly one).
    #[serde(default)]
    pub namespaces: Vec<NamespaceConfig>,
}

/// One namespace.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NamespaceConfig {
    /// Namespace name (informational).
    #[serde(default)]
    pub name: String,
    /// Queues.
    #[serde(default)]
    pub queues: Vec<QueueConfig>,
    /// Topics.
    #[serde(default)]
    pub topics: Vec<TopicConfig>,
}

/// A queue.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct QueueConfig {
    /// Queue name.
    pub name: String,
    /// Its properties.
    #[serde(default)]
    pub properties: EntityProperties,
}

/// A topic.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TopicConfig {
    /// Topic name.
    pub name: String,
    /// Topic properties (TTL, duplicate detection).
    #[serde(default)]
    pub properties: EntityProperties,
    /// Subscriptions.
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionConfig>,
}

/// A subscription.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SubscriptionConfig {
    /// Subscription name.
    pub name: String,
    /// Its properties.
    #[serde(default)]
    pub properties: EntityProperties,
    /// Rules; none means the `$Default` rule (match everything).
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// Entity properties as Microsoft's emulator names them. Absent values take the emulator defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EntityProperties {
    /// Dead-letter expired messages.
    pub dead_lettering_on_message_expiration: Option<bool>,
    /// Default TTL (ISO-8601), default `PT1H`.
    pub default_message_time_to_live: Option<String>,
    /// Duplicate detection window (ISO-8601), default `PT20S`.
    pub duplicate_detection_history_time_window: Option<String>,
    /// Lock duration (ISO-8601), default `PT1M`.
    pub lock_duration: Option<String>,
    /// Deliveries before dead-lettering, default 3.
    pub max_delivery_count: Option<u32>,
    /// Duplicate detection on `MessageId`.
    pub requires_duplicate_detection: Option<bool>,
    /// Sessions required.
    pub requires_session: Option<bool>,
    /// Auto-forwarding target (accepted, not emulated).
    pub forward_to: Option<String>,
    /// Dead-letter forwarding target (accepted, not emulated).
    pub forward_dead_lettered_messages_to: Option<String>,
}

/// A subscription rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuleConfig {
    /// Rule name.
    pub name: String,
    /// Filter definition.
    #[serde(default)]
    pub properties: RuleProperties,
}

/// `Rules[].Properties`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuleProperties {
    /// `Correlation` or `Sql`.
    #[serde(default)]
    pub filter_type: String,
    /// Correlation filter.
    pub correlation_filter: Option<CorrelationFilterConfig>,
    /// SQL filter.
    pub sql_filter: Option<SqlFilterConfig>,
}

/// A correlation filter: every given field must be equal.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CorrelationFilterConfig {
    /// `content-type`.
    pub content_type: Option<String>,
    /// `correlation-id`.
    pub correlation_id: Option<String>,
    /// `subject`.
    pub label: Option<String>,
    /// `message-id`.
    pub message_id: Option<String>,
    /// `reply-to`.
    pub reply_to: Option<String>,
    /// `reply-to-group-id`.
    pub reply_to_session_id: Option<String>,
    /// `group-id`.
    pub session_id: Option<String>,
    /// `to`.
    pub to: Option<String>,
    /// Application properties that must be equal.
    #[serde(default)]
    pub properties: BTreeMap<String, serde_json::Value>,
}

/// A SQL filter.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SqlFilterConfig {
    /// The expression.
    #[serde(default)]
    pub sql_expression: String,
}

impl Config {
    /// Parses `Config.json` text.
    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        let config: Config = serde_json::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a `Config.json` file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json_str(&text)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for ns in &self.user_config.namespaces {
            for q in &ns.queues {
                if !names.insert(q.name.to_ascii_lowercase()) {
                    return Err(ConfigError::Invalid(format!(
                        "duplicate entity {:?}",
                        q.name
                    )));
                }
                q.properties.resolve()?;
            }
            for t in &ns.topics {
                if !names.insert(t.name.to_ascii_lowercase()) {
                    return Err(ConfigError::Invalid(format!(
                        "duplicate entity {:?}",
                        t.name
                    )));
                }
                t.properties.resolve()?;
                let mut subs = std::collections::HashSet::new();
                for s in &t.subscriptions {
                    if !subs.insert(s.name.to_ascii_lowercase()) {
                        return Err(ConfigError::Invalid(format!(
                            "duplicate subscription {:?} on {:?}",
                            s.name, t.name
                        )));
                    }
                    s.properties.resolve()?;
                }
            }
        }
        Ok(())
    }
}

/// Entity properties with defaults applied.
#[derive(Debug, Clone)]
pub struct ResolvedProperties {
    /// Dead-letter on expiry.
    pub dead_lettering_on_message_expiration: bool,
    /// Default TTL.
    pub default_ttl: Duration,
    /// Duplicate detection window.
    pub duplicate_window: Duration,
    /// Lock duration.
    pub lock_duration: Duration,
    /// Max delivery count (≥ 1).
    pub max_delivery_count: u32,
    /// Duplicate detection.
    pub requires_duplicate_detection: bool,
    /// Sessions.
    pub requires_session: bool,
}

impl EntityProperties {
    /// Applies the emulator defaults (TTL PT1H, window PT20S, lock PT1M, MaxDeliveryCount 3).
    pub fn resolve(&self) -> Result<ResolvedProperties, ConfigError> {
        let dur =
            |v: &Option<String>, default: &str| parse_duration(v.as_deref().unwrap_or(default));
        let max_delivery_count = self.max_delivery_count.unwrap_or(3);
        if max_delivery_count == 0 {
            return Err(ConfigError::Invalid(
                "MaxDeliveryCount must be at least 1".into(),
            ));
        }
        Ok(ResolvedProperties {
            dead_lettering_on_message_expiration: self
                .dead_lettering_on_message_expiration
                .unwrap_or(false),
            default_ttl: dur(&self.default_message_time_to_live, "PT1H")?,
            duplicate_window: dur(&self.duplicate_detection_history_time_window, "PT20S")?,
            lock_duration: dur(&self.lock_duration, "PT1M")?,
            max_delivery_count,
            requires_duplicate_detection: self.requires_duplicate_detection.unwrap_or(false),
            requires_session: self.requires_session.unwrap_or(false),
        })
    }
}

/// Parses an ISO-8601 duration such as `PT1H`, `P1DT2H`, `PT0.5S` (years and months are not
/// accepted; weeks are). Huge values saturate.
pub fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    let bad = || ConfigError::Duration(text.to_string());
    let rest = text.trim().strip_prefix('P').ok_or_else(bad)?;
    if rest.is_empty() {
        return Err(bad());
    }
    let mut secs = 0f64;
    let mut in_time = false;
    let mut number = String::new();
    for c in rest.chars() {
        match c {
            'T' if !in_time && number.is_empty() => in_time = true,
            '0'..='9' | '.' | ',' => number.push(if c == ',' { '.' } else { c }),
            unit => {
                let n: f64 = number.parse().map_err(|_| bad())?;
                number.clear();
                let factor = match (in_time, unit) {
                    (false, 'W') => 604_800.0,
                    (false, 'D') => 86_400.0,
                    (true, 'H') => 3_600.0,
                    (true, 'M') => 60.0,
                    (true, 'S') => 1.0,
                    _ => return Err(bad()),
                };
                secs += n * factor;
            }
        }
    }
    if !number.is_empty() {
        return Err(bad());
    }
    // Clamp to ~100 years so arithmetic on instants never overflows.
    Ok(Duration::from_secs_f64(secs.min(3_153_600_000.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("PT1H").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("PT20S").unwrap(), Duration::from_secs(20));
        assert_eq!(
            parse_duration("P1DT1M").unwrap(),
            Duration::from_secs(86_460)
        );
        assert_eq!(
            parse_duration("PT0.5S").unwrap(),
            Duration::from_millis(500)
        );
        assert!(parse_duration("1H").is_err());
        assert!(parse_duration("PT").is_err() || parse_duration("PT").unwrap().is_zero());
        assert!(parse_duration("PT5X").is_err());
        assert!(parse_duration("P10675199DT2H48M5.4775807S").is_ok());
    }

    #[test]
    fn microsoft_sample_config_parses() {
        let text = r#"{"UserConfig":{"Namespaces":[{"Name":"sbemulatorns","Queues":[{"Name":"queue.1",
        "Properties":{"DeadLetteringOnMessageExpiration":false,"DefaultMessageTimeToLive":"PT1H",
        "DuplicateDetectionHistoryTimeWindow":"PT20S","ForwardDeadLetteredMessagesTo":"","ForwardTo":"",
        "LockDuration":"PT1M","MaxDeliveryCount":3,"RequiresDuplicateDetection":false,"RequiresSession":false}}],
        "Topics":[{"Name":"topic.1","Properties":{"DefaultMessageTimeToLive":"PT1H",
        "DuplicateDetectionHistoryTimeWindow":"PT20S","RequiresDuplicateDetection":false},
        "Subscriptions":[{"Name":"subscription.1","Properties":{"DeadLetteringOnMessageExpiration":false,
        "DefaultMessageTimeToLive":"PT1H","LockDuration":"PT1M","MaxDeliveryCount":3,
        "ForwardDeadLetteredMessagesTo":"","ForwardTo":"","RequiresSession":false},
        "Rules":[{"Name":"app-prop-filter-1","Properties":{"FilterType":"Correlation",
        "CorrelationFilter":{"ContentType":"application/text","CorrelationId":"id1","Label":"subject1",
        "MessageId":"msgid1","ReplyTo":"someQueue","ReplyToSessionId":"sessionId","SessionId":"session1",
        "To":"xyz","Properties":{"prop1":"value1"}}}}]}]}]}],"Logging":{"Type":"File"}}}"#;
        let c = Config::from_json_str(text).unwrap();
        let ns = &c.user_config.namespaces[0];
        assert_eq!(ns.queues[0].name, "queue.1");
        let sub = &ns.topics[0].subscriptions[0];
        assert_eq!(sub.rules[0].properties.filter_type, "Correlation");
        let cf = sub.rules[0].properties.correlation_filter.as_ref().unwrap();
        assert_eq!(cf.properties["prop1"], serde_json::json!("value1"));
        assert_eq!(sub.properties.resolve().unwrap().max_delivery_count, 3);
    }
}
