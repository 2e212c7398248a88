//! `csmh-proxy verify`: is every row of the old table in the extended table, with the same values?
//!
//! The old table's ids, from its smallest to its largest, are compared chunk by chunk. For each chunk both
//! servers compute, at the same time, the row count and an order-independent checksum (the XOR of a 64-bit hash
//! of each row's seven columns, in the manner of pt-table-checksum), so only two numbers per chunk and server
//! cross the network. A chunk that differs is halved until its parts are equal, all missing, all extra, or small
//! enough to compare row by row, and the differing id ranges are reported as missing, extra or changed rows.
//! The ids compared are every id where a copy can be: from the smaller of both tables' smallest ids to the
//! larger of the old table's largest id and the largest id `migrate` copied that the extended table still has.
//! So copies of rows deleted from the old table after their copy (edxapp's cascade delete at stage 0 reaches the
//! old table alone) are reported as extra, even above the old table's largest id or below its smallest. Ids of
//! the extended table above what `migrate` copied are new history written through the proxy (its ids start
//! above every old id, which `migrate` checks before copying into them) and are not compared. Once the old
//! table is retired, ids below its smallest are not compared: `truncate-old --slow` drains it from its first id,
//! and an interrupted drain leaves those rows in the extended table alone.
//!
//! Each run is recorded as the `verify` checkpoint (passed or failed, the ranges or the error, the rows, when),
//! which `status` shows; `truncate-old` verifies again before it acts, and records that run too.
//!
//! The hash is computed from the values as the server prints them, so both servers should run the same
//! MySQL/MariaDB family and version: another version may print a DOUBLE grade differently and report rows as
//! changed (never the other way round). Cost: the server reads every row once; on MariaDB 10.11 with small
//! states, about three seconds of one core per million rows and table.

mod compare;
pub mod ids;
mod progress;
mod report;
pub mod table;

use mysql_async::Conn;

pub use compare::Pair;
pub use ids::IdRange;
pub use progress::Progress;
pub use report::{Advice, Difference, DifferenceList, Differences, Kind, Repair, UnfinishedCopy, VerifyReport};
use table::{Read, Role, Table};

use super::checkpoint::{self, Checkpoint, Task};
use super::copy::{copied_up_to, copy_finished};
use super::figures::Figures;
use super::observe::{Command, ObserveArgs, Observers, Outcome};
use super::{MigrateError, Site};
use crate::config::Config;

/// The `verify` checkpoint's state while a run compares the tables.
pub const RUNNING: &str = "running";
/// The `verify` checkpoint's state after a run that found the tables equal.
pub const PASSED: &str = "passed";
/// The `verify` checkpoint's state after a run that found differences (listed in its detail) or stopped on an
/// error (its detail says which).
pub const FAILED: &str = "failed";

/// Options of `csmh-proxy verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// Ids per chunk: each chunk is one count-and-checksum query on each server.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub chunk_size: u64,
    /// Differing ranges to narrow down to single ids before further differing chunks are listed whole.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_ranges: u64,
    /// Metrics and hooks.
    #[command(flatten)]
    pub observe: ObserveArgs,
}

impl Default for VerifyArgs {
    fn default() -> VerifyArgs {
        VerifyArgs { chunk_size: 50_000, max_ranges: 100, observe: ObserveArgs::default() }
    }
}

/// Runs `csmh-proxy verify` for the site `config` describes: compares the tables and records the result, with
/// the metrics and hooks `args` ask for (differences found run `on-failure`, as they end the command with exit
/// status 1).
pub async fn run(config: &Config, args: &VerifyArgs) -> Result<VerifyReport, MigrateError> {
    let site = Site::new(config)?;
    let observers = Observers::start(Command::Verify, &args.observe, config).await?;
    let result = match site.connect().await {
        Ok(mut servers) => {
            verify_with(&site, (&mut servers.edxapp, &mut servers.csmh), args, observers.figures()).await
        }
        Err(error) => Err(error),
    };
    let outcome = match &result {
        Ok(report) if report.passed() => Outcome::Succeeded,
        Ok(report) => Outcome::Failed { exit_status: 1, error: report.failure() },
        Err(error) => Outcome::of_error(error),
    };
    observers.finish(outcome).await;
    result
}

/// Compares the old table, read on `edxapp`, with the extended table, read on `csmh`, and records the result as
/// the `verify` checkpoint; a comparison stopped by an error is recorded as failed, with the error. `edxapp` may
/// hold a lock on the old table: only that table is read through it.
pub async fn verify(
    site: &Site,
    edxapp: &mut Conn,
    csmh: &mut Conn,
    args: &VerifyArgs,
) -> Result<VerifyReport, MigrateError> {
    verify_with(site, (edxapp, csmh), args, &Figures::new()).await
}

/// [`verify`], keeping where it stands in `figures` for the metrics and the hooks.
pub async fn verify_with(
    site: &Site,
    (edxapp, csmh): (&mut Conn, &mut Conn),
    args: &VerifyArgs,
    figures: &Figures,
) -> Result<VerifyReport, MigrateError> {
    Table { role: Role::Extended, conn: csmh, name: &site.extended }.require().await?;
    checkpoint::ensure(csmh, site).await?;
    let started_at = started_after_the_copy(csmh, site).await?;
    let running = Checkpoint {
        state: RUNNING.to_owned(),
        last_id: None,
        target_id: None,
        rows_done: 0,
        detail: None,
        started_at: started_at.clone(),
        updated_at: String::new(),
    };
    checkpoint::save(csmh, site, Task::Verify, &running).await?;
    let report = match compare(site, edxapp, csmh, args, figures).await {
        Ok(report) => report,
        Err(error) => {
            // Best effort: the comparison's error is what the operator needs, even if it cannot be recorded.
            let failed = error_checkpoint(&error, started_at);
            let _ = checkpoint::save(csmh, site, Task::Verify, &failed).await;
            return Err(error);
        }
    };
    checkpoint::save(csmh, site, Task::Verify, &result_checkpoint(&report, started_at)).await?;
    Ok(report)
}

/// The time the run starts at, by the `csmh` server's clock: strictly after the `migrate` checkpoint was last
/// written (within a second of it, it waits for the next second). `status` tells whether a verify ran since the
/// copy by comparing these times to the second, so one that started in the second the copy ended must not look
/// as if it started before.
async fn started_after_the_copy(csmh: &mut Conn, site: &Site) -> Result<String, MigrateError> {
    let copied_at = checkpoint::load(csmh, site, Task::Migrate).await?.map(|copied| copied.updated_at);
    loop {
        let now = checkpoint::server_now(csmh).await?;
        // Times are `YYYY-MM-DD hh:mm:ss` on one clock, so they compare as text.
        if copied_at.as_ref().is_none_or(|copied_at| *copied_at < now) {
            return Ok(now);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Compares the tables without recording anything.
async fn compare(
    site: &Site,
    edxapp: &mut Conn,
    csmh: &mut Conn,
    args: &VerifyArgs,
    figures: &Figures,
) -> Result<VerifyReport, MigrateError> {
    let copied = checkpoint::load(csmh, site, Task::Migrate).await?;
    let copied_up_to = copied.as_ref().and_then(copied_up_to);
    let mut pair = Pair {
        old: Table { role: Role::Old, conn: edxapp, name: &site.old },
        extended: Table { role: Role::Extended, conn: csmh, name: &site.extended },
    };
    let old = pair.old.bounds(None).await?;
    let copies = match copied_up_to {
        Some(last) => pair.extended.bounds(Some(last)).await?,
        None => None,
    };
    // Without a `migrate` checkpoint, rows of the extended table among the old ids were copied some other way.
    let copied_once = match (&copied, old) {
        (Some(_), _) => copy_finished(copied.as_ref()),
        (None, Some(old)) => pair.extended.bounds(Some(old.last)).await?.is_some(),
        (None, None) => true,
    };
    let mut report = VerifyReport {
        old: site.old.clone(),
        extended: site.extended.clone(),
        range: compared_ids(old, copies, site.flags.read_only_from_csmhe),
        old_rows: 0,
        extended_rows: 0,
        chunks: 0,
        differences: Vec::new(),
        repair: Repair::of(&site.flags, copied_once),
        elapsed: Default::default(),
    };
    let Some(range) = report.range else {
        figures.begin(0, 0, 0, 0);
        return Ok(report);
    };
    let before = range.first.saturating_sub(1);
    figures.begin(before, before, range.last, 0);
    let limit = usize::try_from(args.max_ranges).unwrap_or(usize::MAX);
    let mut found = Differences::new(limit);
    let mut progress = Progress::start("verify", range, figures.clone());
    for chunk in range.chunks(args.chunk_size) {
        let (old, extended) = pair.sums(chunk, Read::Plain).await?;
        report.old_rows += old.rows;
        report.extended_rows += extended.rows;
        report.chunks += 1;
        pair.narrow(chunk, (old, extended), &mut found).await?;
        figures.set_differences(found.count() as u64);
        progress.update(chunk.last, report.old_rows, &format!(", {} differing ranges so far", found.count()));
    }
    report.differences = found.into_vec();
    report.elapsed = progress.elapsed();
    Ok(report)
}

/// The ids to compare, given the old table's ids (`old`) and the ids of the extended table's rows up to where
/// `migrate` copied (`copies`): both together, but below the old table's smallest id once it is `retired` (rows
/// drained from it live in the extended table alone); `None` when there is nothing to compare.
fn compared_ids(old: Option<IdRange>, copies: Option<IdRange>, retired: bool) -> Option<IdRange> {
    match (old, copies) {
        (Some(old), Some(copies)) => {
            let first = if retired { old.first } else { old.first.min(copies.first) };
            Some(IdRange::new(first, old.last.max(copies.last)))
        }
        (None, Some(copies)) if !retired => Some(copies),
        (old, _) => old,
    }
}

/// The checkpoint recording `report`.
fn result_checkpoint(report: &VerifyReport, started_at: String) -> Checkpoint {
    let detail = if report.passed() {
        report.scope()
    } else {
        format!("{}\n{}", report.scope(), DifferenceList(&report.differences))
    };
    Checkpoint {
        state: if report.passed() { PASSED } else { FAILED }.to_owned(),
        last_id: report.range.map(|range| range.last),
        target_id: report.range.map(|range| range.last),
        rows_done: report.old_rows,
        detail: Some(detail),
        started_at,
        updated_at: String::new(),
    }
}

/// The checkpoint recording a run that stopped on `error`.
fn error_checkpoint(error: &MigrateError, started_at: String) -> Checkpoint {
    Checkpoint {
        state: FAILED.to_owned(),
        last_id: None,
        target_id: None,
        rows_done: 0,
        detail: Some(format!("stopped by an error before the comparison finished: {error}")),
        started_at,
        updated_at: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::{IdRange, compared_ids};

    #[test]
    fn copies_of_rows_gone_from_the_old_table_are_compared_but_drained_ones_once_retired() {
        let (old, copies) = (Some(IdRange::new(100, 900)), Some(IdRange::new(1, 1_000)));
        assert_eq!(compared_ids(old, copies, false), Some(IdRange::new(1, 1_000)));
        assert_eq!(compared_ids(old, copies, true), Some(IdRange::new(100, 1_000)), "drained below 100");
        assert_eq!(compared_ids(old, Some(IdRange::new(100, 800)), false), old, "nothing copied above 900");
        assert_eq!(compared_ids(old, None, false), old, "nothing copied");
        assert_eq!(compared_ids(None, copies, false), copies, "every old row deleted since its copy");
        assert_eq!(compared_ids(None, copies, true), None, "emptied by truncate-old");
    }
}
