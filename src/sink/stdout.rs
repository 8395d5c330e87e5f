//! The `stdout` sink: one JSON line per message on standard output.

use std::io::Write;

use async_trait::async_trait;

use super::{to_lines, Sink, SinkError};
use crate::contract::Message;

/// Writes messages to standard output.
#[derive(Debug, Default)]
pub struct StdoutSink;

impl StdoutSink {
    /// A stdout sink.
    pub fn new() -> Self {
        StdoutSink
    }
}

#[async_trait]
impl Sink for StdoutSink {
    async fn publish(&self, _topic: &str, messages: &[Message]) -> Result<(), SinkError> {
        let lines = to_lines(messages);
        tokio::task::spawn_blocking(move || {
            let mut out = std::io::stdout().lock();
            out.write_all(&lines)?;
            out.flush()
        })
        .await
        .map_err(|e| SinkError::transient(format!("stdout writer stopped: {e}")))?
        .map_err(|e| SinkError::transient(format!("cannot write to stdout: {e}")))
    }

    fn describe(&self) -> String {
        "stdout".into()
    }
}
