//! What every session shares: the configuration snapshot in force and the counters.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::routing::Prefilter;

/// A configuration with the state derived from it, swapped as a whole so a statement sees one or the other.
#[derive(Debug)]
pub struct Snapshot {
    /// The configuration as read.
    pub config: Config,
    /// The pre-filter for the old history table's name.
    pub prefilter: Prefilter,
}

impl Snapshot {
    /// Derives what the data path needs from `config`.
    pub fn compile(config: Config) -> Snapshot {
        let table = config.history.old().map(|name| name.table().to_owned()).unwrap_or_default();
        Snapshot { prefilter: Prefilter::new(&table), config }
    }
}

/// State shared by the listener and every session (no process globals: tests run proxies side by side).
#[derive(Debug)]
pub struct Shared {
    current: ArcSwap<Snapshot>,
    /// The proxy's counters.
    pub metrics: Metrics,
}

impl Shared {
    /// Shared state starting with `config`.
    pub fn new(config: Config) -> Shared {
        Shared { current: ArcSwap::from_pointee(Snapshot::compile(config)), metrics: Metrics::default() }
    }

    /// The snapshot in force now; hold it for the length of one statement (or transaction).
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Puts `config` in force for statements that start from now on.
    pub fn replace(&self, config: Config) {
        self.current.store(Arc::new(Snapshot::compile(config)));
    }
}
