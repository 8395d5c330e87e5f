//! Validates messages against the committed JSON Schemas (`schemas/`), resolving the body's
//! `$ref` from the repository instead of the network.

use std::sync::OnceLock;

use jsonschema::{Retrieve, Uri, Validator};
use serde_json::Value;

struct LocalSchemas;

fn load(name: &str) -> Value {
    let path = format!("{}/../../schemas/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

impl Retrieve for LocalSchemas {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let name = uri
            .path()
            .as_str()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        Ok(load(&name))
    }
}

fn validator(name: &'static str) -> &'static Validator {
    static MESSAGE: OnceLock<Validator> = OnceLock::new();
    static BODY: OnceLock<Validator> = OnceLock::new();
    let cell = if name == "message.schema.json" {
        &MESSAGE
    } else {
        &BODY
    };
    cell.get_or_init(|| {
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .with_retriever(LocalSchemas)
            .build(&load(name))
            .unwrap_or_else(|e| panic!("schema {name} does not compile: {e}"))
    })
}

/// Panics with every schema violation unless `message` (a stdout/jsonl line as JSON) is valid,
/// and checks what the schema cannot: session id = partition key, properties = changed fields
/// (besides `Diagnostic-Id`, `pollbus-truncated-fields` and a replay's marks).
pub fn assert_valid_message(message: &Value) {
    let errors: Vec<String> = validator("message.schema.json")
        .iter_errors(message)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "message violates schemas/message.schema.json:\n{}\n{message:#}",
        errors.join("\n")
    );
    assert_valid_body(&message["body"]);
    assert_eq!(
        message["session_id"], message["body"]["partitionKey"],
        "session id = partition key"
    );
    let changed = message["body"]["changedFields"]
        .as_str()
        .unwrap_or_default();
    let mut props: Vec<&str> = message["application_properties"]
        .as_object()
        .map(|m| {
            m.keys()
                .map(String::as_str)
                .filter(|k| {
                    ![
                        "Diagnostic-Id",
                        "pollbus-truncated-fields",
                        "pollbus-replay",
                        "pollbus-replay-for",
                    ]
                    .contains(k)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut fields: Vec<String> = changed
        .split(',')
        .filter(|f| !f.is_empty())
        .map(|f| {
            if [
                "diagnostic-id",
                "traceparent",
                "tracestate",
                "deadletterreason",
                "deadlettererrordescription",
                "pollbus-truncated-fields",
                "pollbus-replay",
                "pollbus-replay-for",
            ]
            .contains(&f.to_ascii_lowercase().as_str())
            {
                format!("pollbus-field-{f}")
            } else {
                f.to_string()
            }
        })
        .collect();
    if message["application_properties"]
        .get("pollbus-truncated-fields")
        .is_none()
    {
        props.sort_unstable();
        fields.sort_unstable();
        assert_eq!(props, fields, "one property per changed field: {message:#}");
    }
}

/// Panics unless `body` is a valid change-notification body.
pub fn assert_valid_body(body: &Value) {
    let errors: Vec<String> = validator("change-notification.schema.json")
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "body violates schemas/change-notification.schema.json:\n{}\n{body:#}",
        errors.join("\n")
    );
}
