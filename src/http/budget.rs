//! Request budgets: keep a source under a vendor's hourly rate-limit rule
//! (`max_requests_per_hour`) by waiting before a request would exceed it.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Grants permission to send one request, waiting as long as needed.
#[async_trait]
pub trait RequestBudget: Send + Sync {
    /// Returns once one more request fits in the budget.
    async fn take(&self);
}

/// A sliding one-hour window in this process.
pub struct LocalBudget {
    per_window: usize,
    window: Duration,
    sent: Mutex<VecDeque<Instant>>,
    source: String,
}

impl LocalBudget {
    /// At most `per_hour` requests in any hour.
    pub fn per_hour(source: &str, per_hour: u32) -> Self {
        Self::new(source, per_hour, Duration::from_secs(3600))
    }

    /// At most `per_window` requests in any `window` (tests use short windows).
    pub fn new(source: &str, per_window: u32, window: Duration) -> Self {
        LocalBudget {
            per_window: per_window.max(1) as usize,
            window,
            sent: Mutex::new(VecDeque::new()),
            source: source.to_string(),
        }
    }
}

#[async_trait]
impl RequestBudget for LocalBudget {
    async fn take(&self) {
        let mut sent = self.sent.lock().await;
        loop {
            let now = Instant::now();
            while sent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= self.window)
            {
                sent.pop_front();
            }
            if sent.len() < self.per_window {
                sent.push_back(now);
                return;
            }
            let oldest = *sent.front().expect("full window has a front");
            let wait = self.window.saturating_sub(now.duration_since(oldest));
            tracing::warn!(
                source = %self.source,
                wait_ms = wait.as_millis() as u64,
                budget = self.per_window,
                "request budget (max_requests_per_hour) used up; waiting"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_when_the_window_is_full() {
        let b = LocalBudget::new("s", 3, Duration::from_secs(60));
        let start = Instant::now();
        for _ in 0..3 {
            b.take().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        b.take().await;
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }
}
