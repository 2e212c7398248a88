//! Progress of a long pass over the ids, as a log line every few seconds: how far, how many rows, how long is left;
//! kept in the run's [`Figures`] too, which the metrics and the hooks read.

use std::time::{Duration, Instant};

use tracing::info;

use super::ids::IdRange;
use crate::migrate::figures::Figures;

/// How often a progress line is logged.
const EVERY: Duration = Duration::from_secs(5);

/// A pass over the ids of `range`, lowest first.
pub struct Progress {
    task: &'static str,
    range: IdRange,
    started: Instant,
    logged: Instant,
    figures: Figures,
}

impl Progress {
    /// Starts timing a pass of `task` (`verify`, `truncate-old`) over `range`, keeping where it stands in
    /// `figures`.
    pub fn start(task: &'static str, range: IdRange, figures: Figures) -> Progress {
        let now = Instant::now();
        Progress { task, range, started: now, logged: now, figures }
    }

    /// Notes that every id up to `done` has been handled, `rows` rows so far, and logs a line if the last one is
    /// old enough. `note` is appended (e.g. differences found so far).
    pub fn update(&mut self, done: u64, rows: u64, note: &str) {
        self.figures.reach(done, rows);
        if self.logged.elapsed() < EVERY {
            return;
        }
        self.logged = Instant::now();
        let fraction = (done.saturating_sub(self.range.first) + 1) as f64 / self.range.span() as f64;
        let elapsed = self.started.elapsed().as_secs_f64();
        let left = if fraction > 0.0 { elapsed / fraction - elapsed } else { 0.0 };
        info!(
            "{}: {:.1}% (ids up to {done} of {}), {rows} rows, {:.0} s elapsed, about {:.0} s left{note}",
            self.task,
            fraction * 100.0,
            self.range.last,
            elapsed,
            left
        );
    }

    /// Time since the pass started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}
