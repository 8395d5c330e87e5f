//! A request budget shared by every replica: a source's `max_requests_per_hour` counted in the
//! state store ([`BudgetStore::take_request_budget`]), so it holds across all replicas together.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;

use super::BudgetStore;
use crate::http::budget::{LocalBudget, RequestBudget};

/// Longest single wait before the shared count is asked again.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// `max_requests_per_hour` across replicas: this replica's sliding hour ([`LocalBudget`]) and
/// the store's per-clock-hour count shared with the others. When the store cannot be reached,
/// the local budget alone applies (with a warning) rather than stopping the poll.
pub struct SharedBudget {
    store: Arc<dyn BudgetStore>,
    source: String,
    per_hour: u32,
    local: LocalBudget,
}

impl SharedBudget {
    /// At most `per_hour` requests per hour for `source`, counted over every replica.
    pub fn per_hour(store: Arc<dyn BudgetStore>, source: &str, per_hour: u32) -> Self {
        SharedBudget {
            store,
            source: source.to_string(),
            per_hour: per_hour.max(1),
            local: LocalBudget::per_hour(source, per_hour),
        }
    }
}

#[async_trait]
impl RequestBudget for SharedBudget {
    async fn take(&self) {
        self.local.take().await;
        loop {
            match self
                .store
                .take_request_budget(&self.source, 1, self.per_hour)
                .await
            {
                Ok(None) => return,
                Ok(Some(wait)) => {
                    // A little jitter so replicas do not all ask again at the top of the hour.
                    let jitter = Duration::from_millis(rand::rng().random_range(0..500));
                    let wait = wait.min(MAX_WAIT) + jitter;
                    tracing::warn!(
                        source = %self.source,
                        wait_ms = wait.as_millis() as u64,
                        budget = self.per_hour,
                        "shared request budget (max_requests_per_hour, all replicas) used up; waiting"
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    tracing::warn!(
                        source = %self.source,
                        error = %e,
                        "shared request budget unavailable; counting in this replica only"
                    );
                    return;
                }
            }
        }
    }
}
