//! One run of `migrate`: where it stands (the last id copied, rows copied), and the commit of a chunk together
//! with the checkpoint that records it, in one transaction on the `csmh` server.

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::progress::Progress;
use crate::migrate::checkpoint::{self, Checkpoint, Task};
use crate::migrate::{MigrateError, Site};
use crate::topology;

/// The checkpoint's `state` while a run copies.
pub const RUNNING: &str = "running";
/// The checkpoint's `state` while a run waits to copy (`csmh-proxy pause`, `--max-load`, ...); its `detail`
/// then has a line that starts with [`WAITING`] and says why.
pub const PAUSED: &str = "paused";
/// The checkpoint's `state` once a run has copied every row it found.
pub const DONE: &str = "done";
/// How the line of a paused checkpoint's `detail` that says why starts.
pub const WAITING: &str = "paused: ";
/// How the checkpoint's `detail` starts while a run copies again over rows copied before (`--from-id`).
pub const RECOPY: &str = "re-copy from id ";
/// Between the two ids of a re-copy in the checkpoint's `detail`.
const RECOPY_UNTIL: &str = " up to id ";

/// The ids a `--from-id` run copies again: rows an earlier run copied, `from..=until`. Only here may the copy
/// meet rows the extended table already has, and remove those the old table no longer has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recopy {
    /// The first id copied again.
    pub from: u64,
    /// The highest id copied before the re-copy started.
    pub until: u64,
}

impl Recopy {
    /// The checkpoint's `detail` recording it, so that an interrupted re-copy resumes as one.
    pub fn detail(self) -> String {
        format!("{RECOPY}{}{RECOPY_UNTIL}{}", self.from, self.until)
    }

    /// The re-copy a checkpoint's `detail` records, if any (on its first line).
    pub fn from_detail(detail: &str) -> Option<Recopy> {
        let first = detail.lines().next()?;
        let (from, until) = first.strip_prefix(RECOPY)?.split_once(RECOPY_UNTIL)?;
        Some(Recopy { from: from.parse().ok()?, until: until.parse().ok()? })
    }

    /// The re-copy a run resumes from `previous` (the checkpoint of the run before): one it recorded and did not
    /// finish.
    pub fn resumed(previous: &Checkpoint) -> Option<Recopy> {
        previous.detail.as_deref().and_then(Recopy::from_detail).filter(|_| previous.state != DONE)
    }
}

/// The checkpoint's `state` and `detail` for a run in `state`, whose detail starts with `note` (what the run is,
/// such as a re-copy's [`Recopy::detail`]), waiting for `waiting`: a running copy that waits is recorded as
/// [`PAUSED`], with the reason on the detail's last line.
pub fn state_and_detail<'a>(state: &'a str, note: Option<String>, waiting: Option<&str>) -> (&'a str, Option<String>) {
    let waiting = waiting.filter(|_| state == RUNNING);
    let state = if waiting.is_some() { PAUSED } else { state };
    let lines: Vec<String> = note.into_iter().chain(waiting.map(|reason| format!("{WAITING}{reason}"))).collect();
    (state, (!lines.is_empty()).then(|| lines.join("\n")))
}

/// The checkpoint of a copy (either way) in `state`, whose detail starts with `note`, waiting for `waiting`, at
/// `(last_id, target_id, rows_done)`, started at `started_at`.
pub fn copy_checkpoint(
    state: &str,
    note: Option<String>,
    waiting: Option<&str>,
    (last_id, target_id, rows_done): (u64, u64, u64),
    started_at: &str,
) -> Checkpoint {
    let (state, detail) = state_and_detail(state, note, waiting);
    Checkpoint {
        state: state.to_owned(),
        last_id: Some(last_id),
        target_id: Some(target_id),
        rows_done,
        detail,
        started_at: started_at.to_owned(),
        updated_at: String::new(),
    }
}

/// Where a pass removes the extended rows that the old table no longer has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removal {
    /// The re-copy: nowhere else are extended rows removed.
    pub recopy: Recopy,
    /// The old table's smallest id when the pass started (`None`: the old table is empty). Below it, rows may
    /// have been drained from the old table and live only in the extended one, so nothing there is removed.
    pub floor: Option<u64>,
}

impl Removal {
    /// The part of the chunk `(from, to]` (as `(after, up_to]`) where extended rows the old table lacks are
    /// removed; `None` when no id of the chunk qualifies.
    pub fn range(self, (from, to): (u64, u64)) -> Option<(u64, u64)> {
        let floor = self.floor?;
        let from = from.max(self.recopy.from.max(floor).saturating_sub(1));
        let to = to.min(self.recopy.until);
        (from < to).then_some((from, to))
    }
}

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
    /// While a `--from-id` run (or its resumption) copies again over rows copied before: which ones.
    pub recopy: Option<Recopy>,
    /// What the operator sees, and the run's figures (why the copy waits among them, set by the throttle and
    /// read here when the checkpoint is written: the writers of a streamed copy commit chunks still in flight
    /// while the reader waits).
    pub progress: Progress,
}

impl Run<'_> {
    /// The checkpoint recording this position, in `state`.
    pub fn checkpoint(&self, state: &str) -> Checkpoint {
        let position = (self.last_id, self.target_id, self.rows_done);
        let waiting = self.progress.figures().waiting_reason();
        copy_checkpoint(state, self.recopy.map(Recopy::detail), waiting.as_deref(), position, &self.started_at)
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

/// A failed statement on `server`.
pub fn query_error(server: topology::Server, what: &str, source: mysql_async::Error) -> MigrateError {
    MigrateError::Query { backend: server.name(), what: what.to_owned(), source }
}

/// A failed statement on the `csmh` server.
pub fn csmh_error(what: &str, source: mysql_async::Error) -> MigrateError {
    query_error(topology::Server::Csmh, what, source)
}

/// A failed statement on the `edxapp` server.
pub fn edxapp_error(what: &str, source: mysql_async::Error) -> MigrateError {
    query_error(topology::Server::Edxapp, what, source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recopy_survives_its_checkpoint() {
        let recopy = Recopy { from: 14, until: 200_000 };
        assert_eq!(Recopy::from_detail(&recopy.detail()), Some(recopy));
        assert_eq!(Recopy::from_detail("something else"), None);
        let (state, detail) = state_and_detail(RUNNING, Some(recopy.detail()), Some("pause file /run/pause exists"));
        assert_eq!(state, PAUSED);
        let detail = detail.expect("a detail");
        assert_eq!(detail, "re-copy from id 14 up to id 200000\npaused: pause file /run/pause exists");
        assert_eq!(Recopy::from_detail(&detail), Some(recopy));
        assert_eq!(state_and_detail(DONE, None, Some("late")), (DONE, None), "a finished run is not paused");
    }

    #[test]
    fn rows_are_removed_only_inside_the_recopy_and_above_the_old_tables_smallest_id() {
        let removal = Removal { recopy: Recopy { from: 100, until: 1_000 }, floor: Some(500) };
        assert_eq!(removal.range((0, 300)), None, "below the old table's smallest id");
        assert_eq!(removal.range((0, 600)), Some((499, 600)));
        assert_eq!(removal.range((900, 2_000)), Some((900, 1_000)), "not above the re-copy");
        assert_eq!(removal.range((1_000, 2_000)), None);
        assert_eq!(Removal { floor: None, ..removal }.range((0, 2_000)), None, "an empty old table");
        let from_start = Removal { recopy: Recopy { from: 0, until: 1_000 }, floor: Some(1) };
        assert_eq!(from_start.range((0, 10)), Some((0, 10)));
    }
}
