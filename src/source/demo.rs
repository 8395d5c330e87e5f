//! The `demo` source: synthetic customers with Norwegian names and cities (non-ASCII on
//! purpose) that are created, updated and deleted at a configured rate.
//!
//! The data is a pure function of the seed and the time, so a restarted pollbus sees the same
//! customers its snapshots remember. Each of `records` slots changes every
//! `records * 60 / changes_per_minute` seconds (at a per-slot phase); a slot's changes form
//! lives of `lifetime_changes` changes: a create, updates, and a delete, after which the slot
//! holds a new customer with a new id.
//!
//! Configuration: [`DEFAULTS`] (`id`, `updated_at`/`created_at` in RFC 3339); no HTTP, so no
//! `base_url` and no `auth`; `[sources.demo]` settings.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::vendor::{misplaced_settings, Vendor};
use super::{BuildError, IdPage, Page, Resource, Source, SourceContext, SourceError};
use crate::clock::Clock;
use crate::config::{
    problem, AuthConfig, DemoConfig, Problem, SourceConfig, SourceKind, VendorDefaults, VendorRules,
};

/// What pollbus assumes of a demo source.
pub const DEFAULTS: VendorDefaults = VendorDefaults {
    kind: SourceKind::Demo,
    name: "demo",
    id_field: "id",
    updated_field: "updated_at",
    created_field: "created_at",
    date_format: None,
    page_size: 1000,
    class_field: None,
    revision_field: None,
    delete_audit: false,
    http: false,
    token_path: "/oauth/token",
    bookkeeping_fields: &[
        // The last writer: rewritten by every change.
        "updated_by",
    ],
};

/// The demo vendor (`kind = "demo"`).
pub struct Demo;

impl VendorRules for Demo {
    fn defaults(&self) -> &'static VendorDefaults {
        &DEFAULTS
    }

    fn check_settings(&self, s: &SourceConfig, path: &str, p: &mut Vec<Problem>) {
        let Some(demo) = &s.demo else { return };
        misplaced_settings(&DEFAULTS, s, path, p);
        let path = format!("{path}.demo");
        if !(1..=1_000_000).contains(&demo.records) {
            problem(
                p,
                format!("{path}.records"),
                format!("{} is outside 1..=1000000", demo.records),
            );
        }
        if demo.changes_per_minute == 0 {
            problem(p, format!("{path}.changes_per_minute"), "0 changes nothing");
        }
        if demo.lifetime_changes < 2 {
            problem(
                p,
                format!("{path}.lifetime_changes"),
                format!(
                    "{} is below 2 (a create and a delete)",
                    demo.lifetime_changes
                ),
            );
        }
    }

    fn validate_source(&self, s: &SourceConfig, path: &str, p: &mut Vec<Problem>) {
        if !matches!(s.auth, AuthConfig::None) {
            problem(p, format!("{path}.auth"), "the demo source takes no auth");
        }
    }
}

impl Vendor for Demo {
    fn build(
        &self,
        config: &SourceConfig,
        ctx: &SourceContext,
    ) -> Result<Arc<dyn Source>, BuildError> {
        Ok(Arc::new(DemoSource::new(
            config.demo.clone().unwrap_or_default(),
            ctx.clock.clone(),
        )))
    }
}

const FIRST_NAMES: &[&str] = &[
    "Åse",
    "Bjørn",
    "Øystein",
    "Kari",
    "Ola",
    "Sigrid",
    "Håkon",
    "Ingrid",
    "Søren",
    "Æsa",
    "Torbjørn",
    "Randi",
    "Jørgen",
    "Liv",
    "Mathias",
    "Nora",
];
const LAST_NAMES: &[&str] = &[
    "Hansen",
    "Johansen",
    "Olsen",
    "Larsen",
    "Andersen",
    "Pedersen",
    "Nilsen",
    "Kristiansen",
    "Jensen",
    "Karlsen",
    "Bråthen",
    "Sæther",
    "Løkken",
    "Strømme",
    "Aas",
    "Østby",
];
const CITIES: &[(&str, &str)] = &[
    ("Oslo", "0150"),
    ("Bergen", "5003"),
    ("Trondheim", "7011"),
    ("Tromsø", "9008"),
    ("Ålesund", "6002"),
    ("Bodø", "8006"),
    ("Lillehammer", "2609"),
    ("Kristiansand", "4610"),
    ("Fredrikstad", "1606"),
    ("Hønefoss", "3510"),
    ("Sandnes", "4306"),
    ("Mo i Rana", "8622"),
];
const STREETS: &[&str] = &[
    "Storgata",
    "Kirkegata",
    "Kongens gate",
    "Fjordveien",
    "Skogveien",
    "Bjørkeveien",
    "Åsveien",
    "Sjøgata",
];
const ACTORS: &[&str] = &["IFS", "CRM", "Web", "Kundeservice"];

/// The demo data's time origin.
fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .single()
        .expect("valid epoch")
}

/// Synthetic customers.
pub struct DemoSource {
    config: DemoConfig,
    clock: Arc<dyn Clock>,
    period_ms: i64,
}

/// One live customer at some instant.
#[derive(Debug, Clone, PartialEq)]
struct Customer {
    id: String,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
    record: Value,
}

impl DemoSource {
    /// A demo source with `config`, reading time from `clock`.
    pub fn new(config: DemoConfig, clock: Arc<dyn Clock>) -> Self {
        let period_ms = (i64::from(config.records) * 60_000
            / i64::from(config.changes_per_minute.max(1)))
        .max(1);
        DemoSource {
            config,
            clock,
            period_ms,
        }
    }

    fn hash(&self, parts: &[u64]) -> u64 {
        let mut h = Sha256::new();
        h.update(self.config.seed.to_be_bytes());
        for p in parts {
            h.update(p.to_be_bytes());
        }
        let d = h.finalize();
        u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
    }

    fn pick<'a, T>(&self, items: &'a [T], parts: &[u64]) -> &'a T {
        &items[(self.hash(parts) % items.len() as u64) as usize]
    }

    /// Where in its life cycle a slot starts, so slots are not in lockstep.
    fn life_phase(&self, slot: u32) -> i64 {
        (self.hash(&[slot as u64, 0x11FE]) % u64::from(self.config.lifetime_changes)) as i64
    }

    /// When change `m` (counted from the slot's life phase) of `slot` happens.
    fn change_time(&self, slot: u32, m: i64) -> DateTime<Utc> {
        let offset = (self.hash(&[slot as u64]) % self.period_ms as u64) as i64;
        let n = m - self.life_phase(slot);
        epoch() + chrono::Duration::milliseconds(offset + n * self.period_ms)
    }

    /// The customer in `slot` at `now`, if one is alive.
    fn customer(&self, slot: u32, now: DateTime<Utc>) -> Option<Customer> {
        let offset = (self.hash(&[slot as u64]) % self.period_ms as u64) as i64;
        let elapsed = (now - epoch()).num_milliseconds() - offset;
        if elapsed < 0 {
            return None;
        }
        let n = elapsed / self.period_ms + self.life_phase(slot);
        let life = i64::from(self.config.lifetime_changes);
        let (generation, version) = (n / life, n % life);
        if version == life - 1 {
            return None; // deleted until the slot's next life begins
        }
        let g = generation as u64;
        let s = slot as u64;
        let id = hex::encode_upper(self.hash(&[s, g, 0xC0FFEE]).to_be_bytes())
            + &hex::encode_upper(self.hash(&[s, g, 0xBEEF]).to_be_bytes());
        let first = *self.pick(FIRST_NAMES, &[s, g, 1]);
        let mut last = *self.pick(LAST_NAMES, &[s, g, 2]);
        let mut city = *self.pick(CITIES, &[s, g, 3]);
        let mut street = *self.pick(STREETS, &[s, g, 4]);
        let mut number = self.hash(&[s, g, 5]) % 120 + 1;
        let mut phone = 40_000_000 + self.hash(&[s, g, 6]) % 9_999_999;
        let mut vip = false;
        let mut actor = *self.pick(ACTORS, &[s, g, 7]);
        for v in 1..=version as u64 {
            actor = *self.pick(ACTORS, &[s, g, v, 7]);
            match self.hash(&[s, g, v, 8]) % 5 {
                0 => last = *self.pick(LAST_NAMES, &[s, g, v, 2]),
                1 => {
                    city = *self.pick(CITIES, &[s, g, v, 3]);
                    street = *self.pick(STREETS, &[s, g, v, 4]);
                    number = self.hash(&[s, g, v, 5]) % 120 + 1;
                }
                2 => phone = 40_000_000 + self.hash(&[s, g, v, 6]) % 9_999_999,
                3 => vip = !vip,
                _ => street = *self.pick(STREETS, &[s, g, v, 4]),
            }
        }
        let created = self.change_time(slot, generation * life);
        let updated = self.change_time(slot, n);
        let email = format!(
            "{}.{}@example.no",
            ascii_fold(first).to_lowercase(),
            ascii_fold(last).to_lowercase()
        );
        let record = json!({
            "id": id,
            "first_name": first,
            "last_name": last,
            "email": email,
            "phone": format!("+47 {phone}"),
            "vip": vip,
            "address": {
                "street": format!("{street} {number}"),
                "postal_code": city.1,
                "city": city.0,
                "country": "NO",
            },
            "updated_by": actor,
            "created_at": created.to_rfc3339_opts(SecondsFormat::Millis, true),
            "updated_at": updated.to_rfc3339_opts(SecondsFormat::Millis, true),
        });
        Some(Customer {
            id,
            created,
            updated,
            record,
        })
    }

    fn customers(&self) -> Vec<Customer> {
        let now = self.clock.now();
        (0..self.config.records)
            .filter_map(|slot| self.customer(slot, now))
            .collect()
    }
}

/// Norwegian letters folded to ASCII for e-mail addresses.
fn ascii_fold(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'Å' | 'å' => "aa".to_string(),
            'Æ' | 'æ' => "ae".to_string(),
            'Ø' | 'ø' => "o".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// Keyset token: `<updated millis>|<id>`.
fn parse_token(token: Option<&str>) -> Option<(i64, &str)> {
    let (ms, id) = token?.split_once('|')?;
    Some((ms.parse().ok()?, id))
}

#[async_trait]
impl Source for DemoSource {
    async fn fetch(
        &self,
        resource: &Resource,
        since: DateTime<Utc>,
        token: Option<&str>,
    ) -> Result<Page, SourceError> {
        let after = parse_token(token);
        let mut matching: Vec<Customer> = self
            .customers()
            .into_iter()
            .filter(|c| c.updated >= since)
            .filter(|c| match after {
                Some((ms, id)) => (c.updated.timestamp_millis(), c.id.as_str()) > (ms, id),
                None => true,
            })
            .collect();
        matching.sort_by(|a, b| (a.updated, &a.id).cmp(&(b.updated, &b.id)));
        let size = resource.page_size as usize;
        let more = matching.len() > size;
        matching.truncate(size);
        let next = match (more, matching.last()) {
            (true, Some(last)) => Some(format!("{}|{}", last.updated.timestamp_millis(), last.id)),
            _ => None,
        };
        debug_assert!(matching.iter().all(|c| c.created <= c.updated));
        Ok(Page {
            records: matching.into_iter().map(|c| c.record).collect(),
            next,
            requests: 1,
            vendor_time: None,
        })
    }

    async fn list_ids(
        &self,
        resource: &Resource,
        token: Option<&str>,
    ) -> Result<IdPage, SourceError> {
        let mut ids: Vec<String> = self
            .customers()
            .into_iter()
            .map(|c| c.id)
            .filter(|id| token.is_none_or(|t| id.as_str() > t))
            .collect();
        ids.sort();
        let size = resource.page_size as usize;
        let more = ids.len() > size;
        ids.truncate(size);
        let next = if more { ids.last().cloned() } else { None };
        Ok(IdPage { ids, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn source(at: &str) -> (DemoSource, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(at.parse().unwrap()));
        let config = DemoConfig {
            seed: 7,
            records: 10,
            changes_per_minute: 60,
            lifetime_changes: 4,
        };
        (DemoSource::new(config, clock.clone()), clock)
    }

    #[test]
    fn same_seed_and_time_give_the_same_data() {
        let (a, _) = source("2026-01-01T00:00:00Z");
        let (b, _) = source("2026-01-01T00:00:00Z");
        assert_eq!(a.customers(), b.customers());
        assert!(!a.customers().is_empty());
    }

    #[test]
    fn customers_change_get_deleted_and_replaced_over_time() {
        let (s, clock) = source("2026-01-01T00:00:00Z");
        let before = s.customers();
        clock.advance(chrono::Duration::seconds(10));
        let after = s.customers();
        let changed = after
            .iter()
            .filter(|c| before.iter().any(|b| b.id == c.id && b.record != c.record))
            .count();
        let created = after
            .iter()
            .filter(|c| !before.iter().any(|b| b.id == c.id))
            .count();
        let deleted = before
            .iter()
            .filter(|b| !after.iter().any(|c| c.id == b.id))
            .count();
        assert!(
            changed + created + deleted > 0,
            "10 s at 60/min must change something"
        );
        for c in &after {
            assert!(c.created <= c.updated);
            assert_eq!(c.id.len(), 32);
        }
    }

    #[test]
    fn names_are_norwegian_and_not_all_ascii() {
        let (s, _) = source("2026-01-01T00:00:00Z");
        let text: String = s.customers().iter().map(|c| c.record.to_string()).collect();
        assert!(text.chars().any(|c| "æøåÆØÅ".contains(c)), "{text}");
    }
}
