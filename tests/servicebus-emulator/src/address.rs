//! Link addresses as the SDKs write them (`topic`, `amqps://host/topic`,
//! `amqp://localhost/topic/Subscriptions/sub/$DeadLetterQueue`, `queue/$management`, `$cbs`).

/// What a link address names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// The claims-based-security node.
    Cbs,
    /// An entity's management node (lower-case entity path, dead-letter flag).
    Management(String, bool),
    /// An entity or its dead-letter queue.
    Entity(String, bool),
}

/// Strips `scheme://authority/` and leading slashes, and lower-cases the path.
pub fn normalize(address: &str) -> String {
    let path = match address.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map(|(_, p)| p).unwrap_or(""),
        None => address,
    };
    path.trim_matches('/').to_ascii_lowercase()
}

/// Parses a link address.
pub fn parse(address: &str) -> Address {
    let path = normalize(address);
    if path == "$cbs" {
        return Address::Cbs;
    }
    let (path, mgmt) = match path.strip_suffix("/$management") {
        Some(p) => (p.to_string(), true),
        None => (path, false),
    };
    let (path, dlq) = match path.strip_suffix("/$deadletterqueue") {
        Some(p) => (p.to_string(), true),
        None => (path, false),
    };
    if mgmt {
        Address::Management(path, dlq)
    } else {
        Address::Entity(path, dlq)
    }
}

/// Whether a token granted for `granted` (a normalized path) covers `path`.
pub fn covers(granted: &str, path: &str) -> bool {
    granted.is_empty() || path == granted || path.starts_with(&format!("{granted}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_addresses() {
        assert_eq!(
            parse("amqps://localhost:5672/Topic"),
            Address::Entity("topic".into(), false)
        );
        assert_eq!(
            parse("amqp://localhost/t/Subscriptions/S/$DeadLetterQueue"),
            Address::Entity("t/subscriptions/s".into(), true)
        );
        assert_eq!(
            parse("q/$management"),
            Address::Management("q".into(), false)
        );
        assert_eq!(parse("$cbs"), Address::Cbs);
        assert!(covers("t", "t/subscriptions/s"));
        assert!(!covers("t", "t2"));
        assert!(covers("", "anything"));
    }
}
