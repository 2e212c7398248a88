//! Where a running `migrate` or `verify` stands, in one place: the figures its progress reports already
//! compute (position, target, rows, why it waits), kept where the checkpoint, the metrics endpoint
//! (`--metrics-address`) and the hooks (`--hooks-path`) read them. The copy and the comparison update them where
//! they report progress; nothing else keeps its own count.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

/// A run's figures, shared between the run that updates them and whoever reads them. Cloning shares them.
#[derive(Debug, Clone)]
pub struct Figures {
    started: Instant,
    state: Arc<watch::Sender<Snapshot>>,
}

/// The figures at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Whether the run has read where it starts and where it goes (then `on-start` runs).
    pub begun: bool,
    /// The position the run started from: the ids it covers are above it.
    pub first_id: u64,
    /// Every id up to this one is done: copied (`migrate`) or compared (`verify`).
    pub last_id: u64,
    /// Where the run goes: the current pass's target (`migrate`), the old table's largest id (`verify`).
    pub target_id: u64,
    /// Rows this run copied or compared.
    pub rows: u64,
    /// Rows copied by earlier runs of the same migration (`migrate`; 0 for `verify`).
    pub rows_before: u64,
    /// Differing id ranges found so far (`verify`).
    pub differences: u64,
    /// Why the copy waits, while it does.
    pub waiting: Option<Waiting>,
    /// The `csmh` server's replication lag in seconds, when it was last read and known.
    pub replication_lag: Option<u64>,
}

/// Why a copy waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The kind of reason, one of a small fixed set (the metrics' `reason` label): see
    /// [`crate::migrate::copy::throttle::Reason::KEYS`].
    pub key: &'static str,
    /// The reason as the log and the checkpoint say it.
    pub reason: String,
}

impl Default for Figures {
    fn default() -> Figures {
        Figures::new()
    }
}

impl Figures {
    /// Figures of a run starting now, all at zero.
    pub fn new() -> Figures {
        Figures { started: Instant::now(), state: Arc::new(watch::Sender::new(Snapshot::default())) }
    }

    /// The figures now.
    pub fn snapshot(&self) -> Snapshot {
        self.state.borrow().clone()
    }

    /// Seconds since the run started.
    pub fn elapsed_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Rows per second this run has copied or compared, on average since it started.
    pub fn rows_per_second(&self) -> f64 {
        self.state.borrow().rows as f64 / self.elapsed_seconds().max(1e-3)
    }

    /// The run knows where it starts (every id up to `last_id` done, `rows_before` rows by earlier runs) and where
    /// it goes (`target_id`); its percentage counts the ids above `first_id`.
    pub fn begin(&self, first_id: u64, last_id: u64, target_id: u64, rows_before: u64) {
        self.state.send_modify(|state| {
            state.begun = true;
            state.first_id = first_id;
            state.last_id = last_id;
            state.target_id = target_id;
            state.rows_before = rows_before;
        });
    }

    /// Waits until the run has begun.
    pub async fn begun(&self) {
        let mut changes = self.state.subscribe();
        // The sender lives as long as `self`, so the wait cannot fail.
        let _ = changes.wait_for(|state| state.begun).await;
    }

    /// A new pass goes on to `target_id`.
    pub fn set_target(&self, target_id: u64) {
        self.state.send_modify(|state| state.target_id = target_id);
    }

    /// Every id up to `last_id` is done, and `rows` more rows were.
    pub fn advance(&self, last_id: u64, rows: u64) {
        self.state.send_modify(|state| {
            state.last_id = last_id;
            state.rows += rows;
        });
    }

    /// Every id up to `last_id` is done, `rows` rows so far in all.
    pub fn reach(&self, last_id: u64, rows: u64) {
        self.state.send_modify(|state| {
            state.last_id = last_id;
            state.rows = rows;
        });
    }

    /// `count` differing id ranges found so far.
    pub fn set_differences(&self, count: u64) {
        self.state.send_modify(|state| state.differences = count);
    }

    /// The copy waits for `waiting`; `None` once it copies again.
    pub fn set_waiting(&self, waiting: Option<Waiting>) {
        self.state.send_modify(|state| state.waiting = waiting);
    }

    /// Why the copy waits, as the checkpoint says it, if it does.
    pub fn waiting_reason(&self) -> Option<String> {
        self.state.borrow().waiting.as_ref().map(|waiting| waiting.reason.clone())
    }

    /// The `csmh` server's replication lag as last read (`None`: not a replica, or unknown).
    pub fn set_replication_lag(&self, seconds: Option<u64>) {
        self.state.send_modify(|state| state.replication_lag = seconds);
    }
}

impl Snapshot {
    /// How far the run is, in percent of the ids from `first_id` to `target_id` (`migrate` counts from id 0, as
    /// `status` does; `verify` from the old table's smallest id); 100 once there is nothing left.
    pub fn percent(&self) -> f64 {
        let span = self.target_id.saturating_sub(self.first_id);
        if span == 0 {
            return if self.begun { 100.0 } else { 0.0 };
        }
        let done = self.last_id.saturating_sub(self.first_id).min(span);
        done as f64 * 100.0 / span as f64
    }

    /// Rows copied since the migration started, across runs.
    pub fn rows_all_runs(&self) -> u64 {
        self.rows_before + self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_percentage_counts_ids_from_the_first_and_stops_at_a_hundred() {
        let figures = Figures::new();
        assert_eq!(figures.snapshot().percent(), 0.0, "not begun");
        figures.begin(100, 100, 300, 40);
        figures.advance(150, 50);
        figures.advance(200, 30);
        let now = figures.snapshot();
        assert_eq!((now.last_id, now.rows, now.rows_all_runs()), (200, 80, 120));
        assert_eq!(now.percent(), 50.0);
        figures.set_target(150);
        assert_eq!(figures.snapshot().percent(), 100.0, "rows deleted at the end of the old table");
        let empty = Figures::new();
        empty.begin(0, 0, 0, 0);
        assert_eq!(empty.snapshot().percent(), 100.0, "nothing to do is done");
    }

    #[tokio::test]
    async fn a_wait_for_the_beginning_ends_when_the_run_begins() {
        let figures = Figures::new();
        let waiting = tokio::spawn({
            let figures = figures.clone();
            async move { figures.begun().await }
        });
        figures.set_waiting(Some(Waiting { key: "pause", reason: "exam week".to_owned() }));
        assert!(!waiting.is_finished());
        assert_eq!(figures.waiting_reason().as_deref(), Some("exam week"));
        figures.begin(0, 0, 10, 0);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.expect("begun").expect("the task");
    }
}
