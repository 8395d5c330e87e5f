//! The plan `pollbus check` prints for a valid configuration: state, sink, and every source
//! and resource with its topic, fields and delete mode (secrets masked).

use std::fmt::Write as _;

use pollbus::config::{Config, DeleteMode, SinkConfig, TrackedFields};

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
            (Some(cs), _) => match pollbus::config::ConnectionString::parse(cs.expose()) {
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
            let fields: Vec<String> = match &r.fields {
                TrackedFields::All if r.exclude.is_empty() => vec!["*".to_string()],
                TrackedFields::All => vec![format!("* except {}", r.exclude.join(", "))],
                TrackedFields::Listed(map) => map.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            };
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
            let resync = match r.resync_interval {
                Some(every) => format!(
                    "; resync every {} at {} pages/min",
                    humantime::format_duration(every),
                    r.resync_pages_per_minute
                ),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "  {}/{} -> topic {}{} (type {:?}); id {}; fields {}; {}{}; first poll: {:?}",
                s.name,
                r.name,
                config.sink.topic_prefix(),
                r.entity,
                r.entity,
                r.id_field.as_deref().unwrap_or(s.kind.default_id_field()),
                fields.join(", "),
                deletes,
                resync,
                r.initial,
            );
        }
    }
    out
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
