//! How fast `migrate` goes while it copies: the chunk size that keeps each chunk near a target time, and an
//! optional ceiling on rows per second. Both can be changed while the copy runs (`csmh-proxy throttle`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The smallest chunk, whatever the timing says.
const MIN_CHUNK_ROWS: u64 = 100;
/// How much one chunk's timing may change the next chunk's size, up or down.
const MAX_STEP: u64 = 2;

/// The number of rows the next chunk reads: adapted after every chunk so that a chunk takes about the target
/// time. Shared between the task that reads chunks and those that write them, and retargeted while the copy
/// runs, hence the atomics.
#[derive(Debug)]
pub struct ChunkSizer {
    rows: AtomicU64,
    target_nanos: AtomicU64,
    max_rows: u64,
    /// About one second's worth of the rows-per-second limit (0: no limit), so that a limited copy goes in
    /// chunks it can space evenly rather than in bursts followed by long sleeps.
    rate_cap: AtomicU64,
}

impl ChunkSizer {
    /// Starts at `initial` rows (at most `max_rows`), aiming at chunks of `target`.
    pub fn new(initial: u64, max_rows: u64, target: Duration) -> ChunkSizer {
        let max_rows = max_rows.max(MIN_CHUNK_ROWS);
        let sizer = ChunkSizer {
            rows: AtomicU64::new(initial.clamp(MIN_CHUNK_ROWS, max_rows)),
            target_nanos: AtomicU64::new(0),
            max_rows,
            rate_cap: AtomicU64::new(0),
        };
        sizer.set_target(target);
        sizer
    }

    /// Aims at chunks of `target` from the next chunk's timing on.
    pub fn set_target(&self, target: Duration) {
        let nanos = u64::try_from(target.as_nanos()).unwrap_or(u64::MAX);
        self.target_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Keeps chunks to about one second's worth of `max_per_second` rows (not below the smallest chunk); no cap
    /// with `None`.
    pub fn set_rate_cap(&self, max_per_second: Option<u64>) {
        let cap = max_per_second.filter(|max| *max > 0).map_or(0, |max| max.max(MIN_CHUNK_ROWS));
        self.rate_cap.store(cap, Ordering::Relaxed);
    }

    /// The size of the next chunk.
    pub fn rows(&self) -> u64 {
        let rows = self.rows.load(Ordering::Relaxed);
        match self.rate_cap.load(Ordering::Relaxed) {
            0 => rows,
            cap => rows.min(cap),
        }
    }

    /// Records that a chunk of `rows` took `elapsed`, and sizes the next one from that rate: at most twice or
    /// half the current size, so one slow or fast chunk does not swing it.
    pub fn record(&self, rows: u64, elapsed: Duration) {
        let current = self.rows();
        if rows < current / 2 {
            // A short chunk (the end of a pass) says little about the rate.
            return;
        }
        let rate = rows as f64 / elapsed.as_secs_f64().max(1e-3);
        let target = Duration::from_nanos(self.target_nanos.load(Ordering::Relaxed));
        let wanted = (rate * target.as_secs_f64()) as u64;
        let next = wanted.clamp(current / MAX_STEP, current.saturating_mul(MAX_STEP));
        self.rows.store(next.clamp(MIN_CHUNK_ROWS, self.max_rows), Ordering::Relaxed);
    }
}

/// Holds the copy to at most a number of rows per second, on average since it started, was last changed or last
/// came back from a pause (so that a pause is not made up for by a burst afterwards).
#[derive(Debug)]
pub struct RateLimit {
    max_per_second: Option<u64>,
    started: Instant,
    rows: u64,
}

impl RateLimit {
    /// No more than `max_per_second` rows a second; no limit with `None`.
    pub fn new(max_per_second: Option<u64>) -> RateLimit {
        RateLimit { max_per_second, started: Instant::now(), rows: 0 }
    }

    /// The ceiling in force.
    pub fn max_per_second(&self) -> Option<u64> {
        self.max_per_second
    }

    /// Changes the ceiling, counting afresh from now.
    pub fn set_max(&mut self, max_per_second: Option<u64>) {
        *self = RateLimit::new(max_per_second);
    }

    /// Counts afresh from now, after a pause.
    pub fn restart(&mut self) {
        self.set_max(self.max_per_second);
    }

    /// Counts `rows` copied.
    pub fn copied(&mut self, rows: u64) {
        self.rows += rows;
    }

    /// How long the copy is ahead of the limit: the wait before the next chunk. Waiting before a chunk rather
    /// than after one, the copy never sleeps after its last chunk.
    pub fn ahead(&self) -> Option<Duration> {
        let max = self.max_per_second.filter(|max| *max > 0)?;
        let due = Duration::from_secs_f64(self.rows as f64 / max as f64);
        due.checked_sub(self.started.elapsed()).filter(|ahead| !ahead.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_grow_toward_the_target_time_at_most_twofold() {
        let sizer = ChunkSizer::new(1_000, 1_000_000, Duration::from_millis(500));
        sizer.record(1_000, Duration::from_millis(10));
        assert_eq!(sizer.rows(), 2_000);
        sizer.record(2_000, Duration::from_millis(400));
        assert_eq!(sizer.rows(), 2_500);
        sizer.record(2_500, Duration::from_secs(10));
        assert_eq!(sizer.rows(), 1_250);
    }

    #[test]
    fn chunks_stay_within_bounds_and_short_chunks_say_nothing() {
        let sizer = ChunkSizer::new(150, 300, Duration::from_millis(500));
        sizer.record(150, Duration::from_millis(1));
        assert_eq!(sizer.rows(), 300);
        sizer.record(10, Duration::from_secs(60));
        assert_eq!(sizer.rows(), 300);
        let slow = ChunkSizer::new(100, 300, Duration::from_millis(500));
        slow.record(100, Duration::from_secs(60));
        assert_eq!(slow.rows(), MIN_CHUNK_ROWS);
    }

    #[test]
    fn the_rate_limit_says_how_far_ahead_the_copy_is() {
        let mut limit = RateLimit::new(Some(10_000));
        limit.copied(500);
        let ahead = limit.ahead().expect("500 rows at 10,000 a second are due in 50 ms");
        assert!(ahead > Duration::from_millis(20) && ahead <= Duration::from_millis(50), "{ahead:?}");
        let mut unlimited = RateLimit::new(None);
        unlimited.copied(1_000_000);
        assert_eq!(unlimited.ahead(), None);
    }

    #[test]
    fn a_rate_limit_keeps_chunks_to_about_a_second_of_it() {
        let sizer = ChunkSizer::new(1_000, 200_000, Duration::from_millis(500));
        sizer.set_rate_cap(Some(2_000));
        for _ in 0..10 {
            // Fast chunks: unlimited, the sizer would grow them to 64,000 rows.
            sizer.record(sizer.rows(), Duration::from_millis(10));
        }
        assert_eq!(sizer.rows(), 2_000, "one second's worth of --max-rows-per-second 2000");
        sizer.set_rate_cap(Some(10));
        assert_eq!(sizer.rows(), MIN_CHUNK_ROWS, "never below the smallest chunk");
        sizer.set_rate_cap(None);
        assert_eq!(sizer.rows(), 4_000, "lifted, chunks grow again from where they were");
    }
}
