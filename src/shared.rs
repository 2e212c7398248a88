//! What every session shares: the configuration snapshot in force and the counters.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::history::routing_table;
use crate::metrics::Metrics;
use crate::routing::{Prefilter, Router};

/// A configuration with the state derived from it, swapped as a whole so a statement sees one or the other.
#[derive(Debug)]
pub struct Snapshot {
    /// The configuration as read.
    pub config: Config,
    /// The pre-filter for the old history table's name.
    pub prefilter: Prefilter,
    /// The routing decisions for statements that pass the pre-filter.
    pub router: Router,
    /// Set once a session has checked, under this configuration, that the extended table's next id is above
    /// every id of the old table (design §3, "offset safety").
    pub offset_verified: std::sync::OnceLock<()>,
}

/// A configuration that passed validation but from which the data path cannot be derived.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the configuration: {0}")]
pub struct CompileError(String);

impl Snapshot {
    /// Derives what the data path needs from a validated `config`.
    pub fn compile(config: Config) -> Result<Snapshot, CompileError> {
        let error = |e: &dyn std::fmt::Display| CompileError(e.to_string());
        let old = config.history.old().map_err(|e| error(&e))?;
        let extended = config.history.extended().map_err(|e| error(&e))?;
        let table = routing_table(config.flags).map_err(|e| error(&e))?;
        let router = Router::new(table, old.clone(), extended, config.backends.same_server());
        Ok(Snapshot { prefilter: Prefilter::new(old.table()), router, config, offset_verified: Default::default() })
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
    pub fn new(config: Config) -> Result<Shared, CompileError> {
        Ok(Shared { current: ArcSwap::from_pointee(Snapshot::compile(config)?), metrics: Metrics::default() })
    }

    /// The snapshot in force now; a session holds it for one statement, or for a whole transaction.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Puts `config` in force for statements that start from now on.
    pub fn replace(&self, config: Config) -> Result<(), CompileError> {
        self.current.store(Arc::new(Snapshot::compile(config)?));
        Ok(())
    }
}
