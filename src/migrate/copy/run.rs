//! One run of `migrate`: where it stands (the last id copied, rows copied), and the commit of a chunk together
//! with the checkpoint that records it, in one transaction on the `csmh` server.

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::progress::Progress;
use crate::migrate::checkpoint::{self, Checkpoint, Task};
use crate::migrate::{MigrateError, Site};

/// The checkpoint's `state` while a run copies.
pub const RUNNING: &str = "running";
/// The checkpoint's `state` once a run has copied every row it found.
pub const DONE: &str = "done";
/// How the checkpoint's `detail` starts while a run copies again over rows copied before (`--from-id`).
pub const RECOPY: &str = "re-copy from id ";

/// Where a run stands.
#[derive(Debug)]
pub struct Run<'a> {
    /// The tables.
    pub site: &'a Site,
    /// Every old row with an id up to this one is in the extended table.
    pub last_id: u64,
    /// The current pass's target: the old table's largest id when the pass started.
    pub target_id: u64,
    /// Rows copied since the migration started (across resumed runs).
    pub rows_done: u64,
    /// Rows copied by this run.
    pub rows_this_run: u64,
    /// When the migration started (server time), kept across resumed runs.
    pub started_at: String,
    /// The checkpoint's `detail`: [`RECOPY`] and the id while a `--from-id` run (or its resumption) copies again
    /// over rows copied before; `None` otherwise.
    pub detail: Option<String>,
    /// What the operator sees.
    pub progress: Progress,
}

impl Run<'_> {
    /// The checkpoint recording this position, in `state`.
    pub fn checkpoint(&self, state: &str) -> Checkpoint {
        Checkpoint {
            state: state.to_owned(),
            last_id: Some(self.last_id),
            target_id: Some(self.target_id),
            rows_done: self.rows_done,
            detail: self.detail.clone(),
            started_at: self.started_at.clone(),
            updated_at: String::new(),
        }
    }

    /// Records the chunk of `rows` rows up to `last_id` in the checkpoint and commits the transaction open on
    /// `csmh`, which holds the chunk's rows: both are kept or neither.
    pub async fn commit_chunk(&mut self, csmh: &mut Conn, last_id: u64, rows: u64) -> Result<(), MigrateError> {
        self.last_id = last_id;
        self.rows_done += rows;
        self.rows_this_run += rows;
        checkpoint::save(csmh, self.site, Task::Migrate, &self.checkpoint(RUNNING)).await?;
        csmh.query_drop("COMMIT").await.map_err(|source| csmh_error("commit a chunk", source))?;
        self.progress.copied(last_id, rows);
        Ok(())
    }
}

/// A failed statement on the `csmh` server.
pub fn csmh_error(what: &str, source: mysql_async::Error) -> MigrateError {
    MigrateError::Query { backend: "csmh", what: what.to_owned(), source }
}

/// A failed statement on the `edxapp` server.
pub fn edxapp_error(what: &str, source: mysql_async::Error) -> MigrateError {
    MigrateError::Query { backend: "edxapp", what: what.to_owned(), source }
}
