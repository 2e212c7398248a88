//! Counters the proxy keeps about itself; cheap enough for the per-statement path (relaxed atomics).

use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide counters, shared by every session through [`crate::server::Shared`].
#[derive(Debug, Default)]
pub struct Metrics {
    /// Client connections accepted.
    pub connections_total: AtomicU64,
    /// Client connections closed.
    pub connections_closed: AtomicU64,
    /// Statements (COM_QUERY, COM_STMT_PREPARE) that cannot name the history table and were relayed unparsed.
    pub statements_prefilter_miss: AtomicU64,
    /// Statements whose text names the history table (before parsing: literals and comments count too).
    pub statements_prefilter_hit: AtomicU64,
    /// Statements sent to the extended table instead of the old one.
    pub statements_rewritten: AtomicU64,
    /// Statements run against both tables.
    pub statements_fanned_out: AtomicU64,
    /// Statements refused with 1142 because the old table is retired.
    pub statements_blocked: AtomicU64,
    /// Statements naming the history table refused with 1235 because they cannot be routed exactly.
    pub statements_refused: AtomicU64,
    /// Failed connection attempts to a backend.
    pub backend_connect_errors: AtomicU64,
}

impl Metrics {
    /// Adds one to `counter`.
    #[inline]
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Client connections open now.
    pub fn connections_open(&self) -> u64 {
        Self::get(&self.connections_total).saturating_sub(Self::get(&self.connections_closed))
    }
}
