//! Snapshot rows as both SQL stores keep them: `fp` bytes ([`crate::fingerprint::encode`]) whose
//! layout lives once in `snapshot_layouts`, or, in rows written before fingerprints, the JSON
//! values in `fields` (read as [`Snapshot::from_legacy`] and converted when the store opens).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::StoreError;
use crate::detect::Snapshot;
use crate::fingerprint::{self, Layout};

/// Rows converted per transaction when a store converts old snapshots.
pub(super) const CONVERT_BATCH: i64 = 5_000;

/// The layouts a store has read or written, by id. Layouts are content-addressed and never
/// change, so a cached one is always right; one missing here is read from the database (another
/// replica may have written it).
#[derive(Debug, Default)]
pub(super) struct Layouts {
    known: Mutex<HashMap<u32, Arc<Layout>>>,
}

impl Layouts {
    /// The layout `id`, if known.
    pub(super) fn get(&self, id: u32) -> Option<Arc<Layout>> {
        self.known.lock().expect("layout cache").get(&id).cloned()
    }

    /// Remembers layouts read from, or committed to, the database.
    pub(super) fn remember(&self, layouts: impl IntoIterator<Item = Arc<Layout>>) {
        let mut known = self.known.lock().expect("layout cache");
        for l in layouts {
            known.entry(l.id()).or_insert(l);
        }
    }

    /// The layouts of `snapshots` this store has not yet seen in the database: the page
    /// commit writes them (idempotently) in its transaction.
    pub(super) fn unsaved<'a>(
        &self,
        snapshots: impl IntoIterator<Item = &'a Snapshot>,
    ) -> Vec<Arc<Layout>> {
        let known = self.known.lock().expect("layout cache");
        let mut out: Vec<Arc<Layout>> = Vec::new();
        for s in snapshots {
            let l = &s.fingerprint.layout;
            if !known.contains_key(&l.id()) && !out.iter().any(|o| o.id() == l.id()) {
                out.push(l.clone());
            }
        }
        out
    }

    /// The layout ids `rows` name that are not cached (to read before decoding them).
    pub(super) fn missing<'a>(&self, rows: impl IntoIterator<Item = Option<&'a [u8]>>) -> Vec<u32> {
        let known = self.known.lock().expect("layout cache");
        let mut out = Vec::new();
        for fp in rows.into_iter().flatten() {
            if let Ok(id) = fingerprint::stored_layout(fp) {
                if !known.contains_key(&id) && !out.contains(&id) {
                    out.push(id);
                }
            }
        }
        out
    }

    /// A snapshot row: `fp` when converted, else the legacy JSON `fields`.
    pub(super) fn decode(
        &self,
        id: &str,
        updated: DateTime<Utc>,
        fp: Option<&[u8]>,
        legacy: Option<&str>,
    ) -> Result<Snapshot, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt {
            what: "snapshot",
            detail: format!("record {id}: {detail}"),
        };
        match (fp, legacy) {
            (Some(bytes), _) => {
                let layout_id =
                    fingerprint::stored_layout(bytes).map_err(|e| corrupt(e.to_string()))?;
                let layout = self.get(layout_id).ok_or_else(|| {
                    corrupt(fingerprint::DecodeError::UnknownLayout(layout_id).to_string())
                })?;
                let (fingerprint, revision) =
                    fingerprint::decode(bytes, layout).map_err(|e| corrupt(e.to_string()))?;
                Ok(Snapshot {
                    updated,
                    revision,
                    fingerprint,
                })
            }
            (None, Some(text)) => legacy_snapshot(id, updated, Some(text)),
            (None, None) => Err(corrupt("neither fingerprints nor values".into())),
        }
    }
}

/// A row of record `id` written before fingerprints: its JSON values (`fields`), converted.
pub(super) fn legacy_snapshot(
    id: &str,
    updated: DateTime<Utc>,
    text: Option<&str>,
) -> Result<Snapshot, StoreError> {
    let fields = serde_json::from_str(text.unwrap_or("null")).map_err(|e| StoreError::Corrupt {
        what: "snapshot",
        detail: format!("record {id}: stored values: {e}"),
    })?;
    Ok(Snapshot::from_legacy(updated, fields))
}

/// A layout row read back.
pub(super) fn layout_row(
    id: i64,
    tags: &[u8],
    names: Option<&str>,
) -> Result<Arc<Layout>, StoreError> {
    Layout::from_bytes(tags)
        .filter(|l| i64::from(l.id()) == id)
        .map(|l| Arc::new(l.with_names_json(names)))
        .ok_or_else(|| StoreError::Corrupt {
            what: "snapshot layout",
            detail: format!(
                "layout {id:08x}: {} bytes of tags do not hash to it",
                tags.len()
            ),
        })
}

/// Logs the conversion of a store's old snapshots.
pub(super) fn log_converted(location: &str, rows: u64, elapsed: std::time::Duration) {
    if rows > 0 {
        tracing::info!(
            store = location,
            rows,
            elapsed_ms = elapsed.as_millis() as u64,
            "converted snapshots written by an earlier pollbus to fingerprints (nothing is published)"
        );
    }
}
