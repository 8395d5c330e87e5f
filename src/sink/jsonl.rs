//! The `jsonl` sink: one JSON line per message appended to a file, synced before a batch is
//! acknowledged.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{to_lines, Sink, SinkError};
use crate::contract::Message;

/// Appends messages to a file.
#[derive(Debug)]
pub struct JsonlSink {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl JsonlSink {
    /// Opens `path` for appending, creating it and its folder.
    pub async fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(JsonlSink {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(file)),
        })
    }
}

#[async_trait]
impl Sink for JsonlSink {
    async fn publish(&self, _topic: &str, messages: &[Message]) -> Result<(), SinkError> {
        let lines = to_lines(messages);
        let file = self.file.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
            f.write_all(&lines)?;
            f.sync_data()
        })
        .await
        .map_err(|e| SinkError::transient(format!("jsonl writer stopped: {e}")))?
        .map_err(|e| SinkError::transient(format!("cannot write {}: {e}", path.display())))
    }

    fn describe(&self) -> String {
        format!("jsonl:{}", self.path.display())
    }
}
