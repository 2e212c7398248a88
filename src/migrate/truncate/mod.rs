//! `csmh-proxy truncate-old`: empties the old history table once it is retired and every row of it is in the
//! extended table.
//!
//! It acts only when `READ_ONLY_FROM_CSMHE` is on in the configuration (so the proxy sends nothing to the old
//! table any more) and a verify run at that moment passes. Three ways, each guarded against writes between the
//! check and the removal:
//!
//! - by default, the old table is locked against writes (`LOCK TABLES ... WRITE`), verified through the locking
//!   connection, and emptied with `TRUNCATE TABLE`, all under the lock;
//! - `--slow`, for a table too large to drop at once: after a verify, rows are deleted by id in chunks with a
//!   pause between them, each chunk checked against the extended table again under row and gap locks
//!   (`FOR UPDATE` under REPEATABLE READ, so no row can be inserted into the chunk either) in the transaction
//!   that deletes it, and the chunk is rolled back unless the DELETE removes exactly the rows checked. An
//!   interrupted drain can simply be run again;
//! - `--keep` ([`keep`]): as by default, but instead of `TRUNCATE TABLE` the locked table is swapped for an
//!   empty copy in one `RENAME TABLE`, and its rows are kept aside as `<old>_retired_<YYYYMMDD>`, to be dropped
//!   later or put back.
//!
//! Every way the old table keeps its next id (`AUTO_INCREMENT`), so ids are never reused should edxapp write to
//! it again. Without `--yes` nothing is changed: the command prints what it would do and the statements it would
//! run (one set of builders makes them for the plan and for the run). `--dry-run` also checks first what `--yes`
//! checks before it acts (the flag, the fleet), and refuses as it would.

use std::fmt;
use std::time::Duration;

use mysql_async::Conn;

pub mod keep;

use super::checkpoint::{self, Checkpoint, Task};
use super::figures::Figures;
use super::verify::table::{Read, Role, Table, sum_sql};
use super::verify::{
    self, Advice, DifferenceList, Differences, IdRange, Pair, Progress, Repair, VerifyArgs, VerifyReport,
};
use super::{MigrateError, Site};
use crate::config::Config;
use crate::fleet::{Fleet, FleetArgs};
use crate::history::Flag;
use crate::history::TableName;

/// How long `truncate-old` waits for the old table's lock (other sessions' open transactions on it) before it
/// gives up with an error, rather than the server's default of a day.
const LOCK_WAIT: Duration = Duration::from_secs(60);
/// How many of `--slow`'s chunks the plan shows the statements of.
const FIRST_CHUNKS: usize = 3;
/// Opens a chunk's transaction (`--slow`).
const START_TRANSACTION: &str = "START TRANSACTION";
/// Ends a chunk's transaction, keeping its DELETE (`--slow`).
const COMMIT: &str = "COMMIT";
/// Releases the lock on the old table.
const UNLOCK_TABLES: &str = "UNLOCK TABLES";
/// `--slow`'s isolation level, under which `FOR UPDATE` locks the gaps between the rows too.
const REPEATABLE_READ: &str = "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ";

/// Options of `csmh-proxy truncate-old`.
#[derive(Debug, Clone, clap::Args)]
pub struct TruncateArgs {
    /// Do it. Without --yes, print what would be done, with the statements, and change nothing.
    #[arg(long)]
    pub yes: bool,
    /// Change nothing, but refuse where --yes would refuse before acting (READ_ONLY_FROM_CSMHE off, a proxy
    /// still using the old table), then print what would be done, with the statements.
    #[arg(long, conflicts_with = "yes")]
    pub dry_run: bool,
    /// Delete the rows in throttled chunks by id instead of one TRUNCATE TABLE, for a table too large to drop
    /// at once.
    #[arg(long)]
    pub slow: bool,
    /// Keep the old rows: instead of TRUNCATE TABLE, swap the locked old table for an empty copy with the same
    /// next id, in one RENAME TABLE, and keep it as <old>_retired_<YYYYMMDD>, which nothing reads or writes and
    /// which can be dropped later or put back (docs/migration.md, "Going back").
    #[arg(long, conflicts_with = "slow")]
    pub keep: bool,
    /// With --slow: ids per DELETE.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..), requires = "slow")]
    pub chunk_size: u64,
    /// With --slow: seconds to pause after each DELETE (fractions allowed, e.g. 0.5).
    #[arg(long, default_value = "3", value_parser = parse_seconds, requires = "slow")]
    pub pause: Duration,
    /// The proxies that must all have retired the old table first (besides `[admin] address`).
    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// Parses a number of seconds.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text.parse().map_err(|_| format!("`{text}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("`{text}` is not a number of seconds from 0 up"))
}

/// What `truncate-old` did, or would do.
#[derive(Debug, Clone)]
pub enum TruncateReport {
    /// Without `--yes` (or with `--dry-run`): the plan, nothing changed.
    Plan(Plan),
    /// The old table was emptied with `TRUNCATE TABLE`.
    Truncated {
        /// The verify run under the lock, which passed.
        verify: VerifyReport,
        /// The old table's next id, kept.
        next_id: u64,
    },
    /// The old table was swapped for an empty copy, and its rows kept aside (`--keep`).
    Kept {
        /// The verify run under the lock, which passed.
        verify: VerifyReport,
        /// Where the old rows are now.
        retired: TableName,
        /// The next id of the empty copy in the old table's place: the old table's, kept.
        next_id: u64,
    },
    /// `--keep` found the old table empty: there was nothing to keep, and nothing was changed.
    NothingToKeep {
        /// The verify run under the lock, which passed.
        verify: VerifyReport,
    },
    /// The old table was drained by chunked deletes.
    Drained {
        /// The verify run before the drain, which passed.
        verify: VerifyReport,
        /// Rows deleted.
        rows: u64,
        /// DELETE statements run.
        chunks: u64,
    },
}

/// What `truncate-old --yes` would do, with what is known of the tables now.
#[derive(Debug, Clone)]
pub struct Plan {
    site: Site,
    args: TruncateArgs,
    estimated_rows: Option<u64>,
    ids: Option<IdRange>,
    /// The old table's next id now.
    next_id: Option<u64>,
    /// The next id TRUNCATE TABLE would keep, as of now.
    kept_next_id: u64,
    /// With `--keep`: the tables the swap would name.
    keep: Option<keep::Names>,
}

/// Runs `csmh-proxy truncate-old` for the site `config` describes.
pub async fn run(config: &Config, args: &TruncateArgs) -> Result<TruncateReport, MigrateError> {
    let site = Site::new(config)?;
    if args.yes || args.dry_run {
        require_retired(&site)?;
        require_fleet_retired(config, &args.fleet).await?;
    }
    if !args.yes {
        return plan(site, args).await.map(TruncateReport::Plan);
    }
    let mut servers = site.connect().await?;
    if args.slow {
        drain(&site, &mut servers.edxapp, &mut servers.csmh, args).await
    } else if args.keep {
        keep::keep(&site, &mut servers.edxapp, &mut servers.csmh).await
    } else {
        truncate(&site, &mut servers.edxapp, &mut servers.csmh).await
    }
}

/// Refuses unless the configuration retires the old table.
fn require_retired(site: &Site) -> Result<(), MigrateError> {
    if site.flags.read_only_from_csmhe {
        return Ok(());
    }
    Err(MigrateError::Refused(format!(
        "refusing to empty {}: {} is off in the configuration, so the proxy may still read or write the old table. \
         Once every row is copied (`csmh-proxy verify` passes), set {} = true in [flags], check that the proxy \
         reloaded it, and run `csmh-proxy truncate-old --yes` again",
        site.old,
        Flag::ReadOnlyFromCsmhe,
        Flag::ReadOnlyFromCsmhe
    )))
}

/// Refuses while a proxy it knows of (`[admin] address`, `--admin`, `--dns`) may still read or write the old
/// table, or cannot be asked: the file says the table is retired, but a proxy that has not reloaded it yet (or
/// reads another copy) would go on using it.
async fn require_fleet_retired(config: &Config, args: &FleetArgs) -> Result<(), MigrateError> {
    let fleet = Fleet::survey(args, Some(config)).await;
    if fleet.members.is_empty() {
        tracing::warn!("no proxy was asked whether it retired the old table: give --admin or --dns to check them");
    }
    let holding: Vec<String> = fleet
        .not_retired()
        .into_iter()
        .map(|member| match &member.answer {
            Ok(running) => format!("{} (generation {}, {})", member.address, running.generation, running.routing.stage),
            Err(error) => format!("{} ({error})", member.address),
        })
        .collect();
    if holding.is_empty() && fleet.dns_error.is_none() {
        return Ok(());
    }
    let dns = fleet.dns_error.map(|error| format!("; DNS: {error}")).unwrap_or_default();
    Err(MigrateError::Refused(format!(
        "refusing to empty the old table: not every proxy has retired it: {}{dns}. Wait until `csmh-proxy fleet` \
         shows every proxy with {} = true, then run `csmh-proxy truncate-old --yes` again",
        holding.join(", "),
        Flag::ReadOnlyFromCsmhe
    )))
}

/// Reads what the plan needs to say about the tables; changes nothing.
async fn plan(site: Site, args: &TruncateArgs) -> Result<Plan, MigrateError> {
    let mut servers = site.connect().await?;
    Table { role: Role::Extended, conn: &mut servers.csmh, name: &site.extended }.require().await?;
    let mut old = Table { role: Role::Old, conn: &mut servers.edxapp, name: &site.old };
    let stats = old.stats().await?;
    let ids = old.bounds(None).await?;
    let next_id = stats.and_then(|stats| stats.next_id);
    let copied = checkpoint::load(&mut servers.csmh, &site, Task::Migrate).await?;
    let keep = match args.keep {
        true => Some(keep::Names::of(&mut servers.edxapp, &site.old).await?),
        false => None,
    };
    Ok(Plan {
        keep,
        estimated_rows: stats.and_then(|stats| stats.estimated_rows),
        next_id,
        kept_next_id: next_id_to_keep(next_id, ids, copied.as_ref()),
        ids,
        args: args.clone(),
        site,
    })
}

/// `SET SESSION lock_wait_timeout`: how long the lock is waited for.
fn lock_wait_sql() -> String {
    format!("SET SESSION lock_wait_timeout = {}", LOCK_WAIT.as_secs())
}

/// `LOCK TABLES ... WRITE` of the old table.
fn lock_sql(old: &TableName) -> String {
    format!("LOCK TABLES {} WRITE", old.quoted())
}

/// `TRUNCATE TABLE` of the old table.
fn truncate_sql(old: &TableName) -> String {
    format!("TRUNCATE TABLE {}", old.quoted())
}

/// The `ALTER TABLE` that gives `table` the old table's next id: the old table itself after TRUNCATE, or its
/// empty copy before `--keep` swaps them.
fn keep_next_id_sql(table: &TableName, next_id: u64) -> String {
    format!("ALTER TABLE {} AUTO_INCREMENT = {next_id}", table.quoted())
}

/// `--slow`'s DELETE of the old table's rows in `chunk`.
fn delete_sql(old: &TableName, chunk: IdRange) -> String {
    format!("DELETE FROM {} WHERE `id` BETWEEN {} AND {}", old.quoted(), chunk.first, chunk.last)
}

/// Locks the old table, verifies it through the lock, and truncates it, keeping its next id.
async fn truncate(site: &Site, edxapp: &mut Conn, csmh: &mut Conn) -> Result<TruncateReport, MigrateError> {
    let mut old = Table { role: Role::Old, conn: edxapp, name: &site.old };
    old.execute(&lock_wait_sql(), "limit the wait for its lock").await?;
    old.execute(&lock_sql(&site.old), "lock it against writes").await?;
    let verify = verify::verify(site, old.conn, csmh, &VerifyArgs::default()).await;
    let verify = match verify {
        Ok(report) if report.passed() => report,
        outcome => {
            old.execute(UNLOCK_TABLES, "unlock it").await?;
            return Err(refusal_for(outcome?));
        }
    };
    let counter = old.stats().await?.and_then(|stats| stats.next_id);
    let copied = checkpoint::load(csmh, site, Task::Migrate).await?;
    let next_id = next_id_to_keep(counter, verify.range, copied.as_ref());
    old.execute(&truncate_sql(&site.old), "truncate it").await?;
    old.execute(&keep_next_id_sql(&site.old, next_id), "keep its next id").await?;
    old.execute(UNLOCK_TABLES, "unlock it").await?;
    Ok(TruncateReport::Truncated { verify, next_id })
}

/// The next id the old table keeps after TRUNCATE (which resets it): above its counter, its largest id, and the
/// largest id `migrate` recorded, so that a run interrupted between the TRUNCATE and the restored counter still
/// finds the old ids when run again.
fn next_id_to_keep(counter: Option<u64>, ids: Option<IdRange>, copied: Option<&Checkpoint>) -> u64 {
    let largest = [ids.map(|ids| ids.last), copied.and_then(|c| c.last_id), copied.and_then(|c| c.target_id)];
    largest.into_iter().flatten().map(|id| id + 1).chain(counter).max().unwrap_or(1)
}

/// Verifies, then deletes the old table's rows chunk by chunk, each chunk checked again under row locks in the
/// transaction that deletes it, until the table is empty.
async fn drain(
    site: &Site,
    edxapp: &mut Conn,
    csmh: &mut Conn,
    args: &TruncateArgs,
) -> Result<TruncateReport, MigrateError> {
    let verify = verify::verify(site, edxapp, csmh, &VerifyArgs::default()).await?;
    if !verify.passed() {
        return Err(refusal_for(verify));
    }
    let mut pair = Pair {
        old: Table { role: Role::Old, conn: edxapp, name: &site.old },
        extended: Table { role: Role::Extended, conn: csmh, name: &site.extended },
    };
    // FOR UPDATE locks the gaps between the rows only under REPEATABLE READ: under READ COMMITTED (edxapp's
    // choice, and maybe the server's default) a row inserted into a chunk after its check would be deleted too.
    pair.old.execute(REPEATABLE_READ, "lock the gaps between the rows it checks").await?;
    let (mut rows, mut chunks) = (0, 0);
    // Rows written to the old table during the drain (there should be none) are found by the next pass.
    while let Some(range) = pair.old.bounds(None).await? {
        let mut progress = Progress::start("truncate-old", range, Figures::new());
        for chunk in range.chunks(args.chunk_size) {
            let deleted = delete_chunk(&mut pair, site, chunk, rows).await?;
            if deleted > 0 {
                rows += deleted;
                chunks += 1;
                progress.update(chunk.last, rows, "");
                if chunk.last < range.last {
                    tokio::time::sleep(args.pause).await;
                }
            }
        }
    }
    Ok(TruncateReport::Drained { verify, rows, chunks })
}

/// Deletes the old table's rows in `chunk` if, under row and gap locks, they are exactly the extended table's,
/// and if the DELETE removes exactly the rows checked (otherwise nothing of the chunk is deleted); returns how
/// many were deleted. `deleted` (rows deleted before this chunk) is for the message if it is refused.
async fn delete_chunk(pair: &mut Pair<'_>, site: &Site, chunk: IdRange, deleted: u64) -> Result<u64, MigrateError> {
    pair.old.execute(START_TRANSACTION, "start a transaction").await?;
    let (old, extended) = pair.sums(chunk, Read::Locking).await?;
    if old.rows == 0 {
        pair.old.execute(COMMIT, "end the transaction").await?;
        return Ok(0);
    }
    if !old.matches(&extended) {
        pair.old.execute("ROLLBACK", "end the transaction").await?;
        let mut found = Differences::new(100);
        pair.narrow(chunk, (old, extended), &mut found).await?;
        let found = found.into_vec();
        return Err(MigrateError::Refused(format!(
            "stopped before deleting {chunk} of {}: they no longer match the extended table:\n{}{}\
             {deleted} rows with lower ids were deleted, each checked against the extended table first. Find out \
             what changed, then run `csmh-proxy truncate-old --yes --slow` again",
            site.old,
            DifferenceList(&found),
            Advice(&found, Repair::ByHand)
        )));
    }
    let rows = pair.old.affected(&delete_sql(&site.old, chunk), &format!("delete {chunk}")).await?;
    if let Err(refusal) = deleted_as_checked(&site.old, chunk, old.rows, rows, deleted) {
        pair.old.execute("ROLLBACK", "undo the delete").await?;
        return Err(refusal);
    }
    pair.old.execute(COMMIT, "commit the delete").await?;
    Ok(rows)
}

/// Refuses unless the DELETE of `chunk` removed as many rows (`removed`) as its check saw (`checked`): any
/// other row was not compared with the extended table. `deleted` is rows deleted before this chunk.
fn deleted_as_checked(
    table: &TableName,
    chunk: IdRange,
    checked: u64,
    removed: u64,
    deleted: u64,
) -> Result<(), MigrateError> {
    if removed == checked {
        return Ok(());
    }
    Err(MigrateError::Refused(format!(
        "stopped at {chunk} of {}: its DELETE would have removed {removed} rows but only {checked} were checked \
         against the extended table, so it was rolled back and nothing of {chunk} is deleted. Something writes to \
         the old table although {} is on; {deleted} rows with lower ids were deleted, each checked against the \
         extended table first. Find out what writes there, then run `csmh-proxy truncate-old --yes --slow` again",
        table,
        Flag::ReadOnlyFromCsmhe
    )))
}

/// The refusal for a verify that did not pass.
fn refusal_for(report: VerifyReport) -> MigrateError {
    MigrateError::Refused(format!(
        "refusing to empty {}: verify found differences, so the old table is left as it is.\n{}\n\
         The tables differ in {} id ranges:\n{}{}Once `csmh-proxy verify` passes, run \
         `csmh-proxy truncate-old --yes` again",
        report.old,
        report.scope(),
        report.differences.len(),
        DifferenceList(&report.differences),
        Advice(&report.differences, report.repair)
    ))
}

impl fmt::Display for TruncateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TruncateReport::Plan(plan) => write!(f, "{plan}"),
            TruncateReport::Truncated { verify, next_id } => {
                writeln!(f, "{}", verify.scope())?;
                writeln!(f, "verify passed under a write lock; {} emptied with TRUNCATE TABLE", verify.old)?;
                writeln!(f, "its next id stays {next_id}, so old ids are never reused")
            }
            TruncateReport::Kept { verify, retired, next_id } => {
                let old = &verify.old;
                writeln!(f, "{}", verify.scope())?;
                writeln!(f, "verify passed under a write lock; {old} swapped for an empty copy in one RENAME TABLE")?;
                writeln!(f, "its next id stays {next_id}, so old ids are never reused")?;
                writeln!(f, "the old rows are kept in {retired}; the proxy never reads or writes it")?;
                writeln!(f, "to drop it once it is no longer wanted: DROP TABLE {};", retired.quoted())?;
                writeln!(f, "to put it back (docs/migration.md, \"Going back\"): {};", keep::put_back_sql(old, retired))
            }
            TruncateReport::NothingToKeep { verify } => {
                writeln!(f, "{}", verify.scope())?;
                writeln!(f, "{} is empty: there is nothing to keep, and nothing was changed", verify.old)
            }
            TruncateReport::Drained { verify, rows, chunks } => {
                writeln!(f, "{}", verify.scope())?;
                writeln!(
                    f,
                    "verify passed; {} drained: {rows} rows deleted in {chunks} chunks, each checked against the \
                     extended table just before its deletion; the table is empty",
                    verify.old
                )
            }
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (old, extended) = (&self.site.old, &self.site.extended);
        let flag = Flag::ReadOnlyFromCsmhe;
        writeln!(f, "truncate-old --yes would:")?;
        if self.args.dry_run {
            writeln!(
                f,
                "  1. check that {flag} is on in the configuration and that no proxy it can ask still uses the old \
                 table: checked now, none does"
            )?;
        } else if self.site.flags.read_only_from_csmhe {
            writeln!(f, "  1. check that {flag} is on in the configuration: it is")?;
        } else {
            writeln!(f, "  1. check that {flag} is on in the configuration: it is OFF, so it would refuse")?;
        }
        let size = match (self.estimated_rows, self.ids) {
            (_, None) => "it is empty".to_owned(),
            (Some(rows), Some(ids)) => format!("about {rows} rows, {ids}"),
            (None, Some(ids)) => ids.to_string(),
        };
        if self.args.slow {
            let next_id = self.next_id.map_or(String::new(), |id| format!(" at {id}"));
            writeln!(f, "  2. verify {old} against {extended} ({size}), and refuse if they differ")?;
            let chunks = self.ids.map_or(0, |ids| ids.chunk_count(self.args.chunk_size));
            writeln!(
                f,
                "  3. delete its rows by id, {} ids per DELETE (up to {chunks} chunks) with a pause of {:.1} s after \
                 each, every chunk checked against the extended table again, under row locks, in the transaction \
                 that deletes it; its next id stays{next_id}",
                self.args.chunk_size,
                self.args.pause.as_secs_f64()
            )?;
        } else {
            writeln!(
                f,
                "  2. lock {old} against writes and verify it against {extended} ({size}), and refuse if they differ"
            )?;
            match &self.keep {
                Some(names) => writeln!(
                    f,
                    "  3. swap it, as the lock is released, for an empty copy whose next id is {}, in one RENAME \
                     TABLE, keeping its rows in {}",
                    self.kept_next_id, names.retired
                )?,
                None => writeln!(
                    f,
                    "  3. empty it with TRUNCATE TABLE under the same lock; its next id stays at {}",
                    self.kept_next_id
                )?,
            }
        }
        self.statements(f)?;
        writeln!(f, "nothing has been changed: add --yes to do it")
    }
}

impl Plan {
    /// The statements `--yes` would run on the old table's connection, with the ids known now.
    fn statements(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (old, extended) = (&self.site.old, &self.site.extended);
        let verify = "the verify, as `csmh-proxy verify` runs it (it records its result in the checkpoint table)";
        writeln!(f, "statements on [backends.edxapp], in order:")?;
        if let Some(names) = &self.keep {
            writeln!(f, "-- on a second connection, the empty copy:")?;
            writeln!(f, "{};\n{};", lock_wait_sql(), keep::create_copy_sql(old, &names.fresh))?;
            writeln!(f, "-- on the first connection:\n{};\n{};", lock_wait_sql(), lock_sql(old))?;
            writeln!(f, "-- {verify}, through this connection")?;
            writeln!(f, "-- on the second connection, with the next id read under the lock:")?;
            writeln!(f, "{};", keep_next_id_sql(&names.fresh, self.kept_next_id))?;
            writeln!(f, "{};", keep::rename_sql(old, names))?;
            writeln!(f, "-- which waits for the lock; once the server shows it waiting, on the first connection:")?;
            writeln!(f, "{UNLOCK_TABLES};")?;
            return writeln!(f, "-- the RENAME TABLE goes before any statement waiting for the old table");
        }
        if !self.args.slow {
            writeln!(f, "{};\n{};", lock_wait_sql(), lock_sql(old))?;
            writeln!(f, "-- {verify}, through this connection")?;
            writeln!(f, "{};\n{};", truncate_sql(old), keep_next_id_sql(old, self.kept_next_id))?;
            return writeln!(f, "{UNLOCK_TABLES};");
        }
        writeln!(f, "-- {verify}")?;
        writeln!(f, "{REPEATABLE_READ};")?;
        let Some(ids) = self.ids else {
            return writeln!(f, "-- nothing to delete: the old table is empty");
        };
        for chunk in ids.chunks(self.args.chunk_size).take(FIRST_CHUNKS) {
            writeln!(f, "-- {chunk}")?;
            writeln!(f, "{START_TRANSACTION};\n{};", sum_sql(old, chunk, Read::Locking))?;
            writeln!(f, "-- at the same time on [backends.csmh]:\n{};", sum_sql(extended, chunk, Read::Plain))?;
            writeln!(f, "-- if both match (a chunk without rows is only committed):")?;
            writeln!(f, "{};\n{COMMIT};", delete_sql(old, chunk))?;
            if chunk.last < ids.last {
                writeln!(f, "-- a pause of {:.1} s", self.args.pause.as_secs_f64())?;
            }
        }
        let chunks = ids.chunk_count(self.args.chunk_size);
        if chunks > FIRST_CHUNKS as u64 {
            writeln!(f, "-- and so on, up to {chunks} chunks in all, until the table is empty")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copied(last_id: u64, target_id: u64) -> Checkpoint {
        Checkpoint {
            state: crate::migrate::copy::DONE.to_owned(),
            last_id: Some(last_id),
            target_id: Some(target_id),
            rows_done: 0,
            detail: None,
            started_at: String::new(),
            updated_at: String::new(),
        }
    }

    #[test]
    fn a_delete_that_removes_other_rows_than_were_checked_is_refused_naming_the_chunk() {
        let table: TableName = "edxapp.courseware_studentmodulehistory".parse().unwrap();
        let chunk = IdRange::new(5_001, 10_000);
        assert!(deleted_as_checked(&table, chunk, 4_999, 4_999, 5_000).is_ok());
        let refusal = deleted_as_checked(&table, chunk, 4_999, 5_000, 5_000).unwrap_err().to_string();
        assert!(refusal.contains("stopped at ids 5001-10000 of edxapp.courseware_studentmodulehistory"), "{refusal}");
        assert!(refusal.contains("removed 5000 rows but only 4999 were checked"), "{refusal}");
        assert!(refusal.contains("nothing of ids 5001-10000 is deleted"), "{refusal}");
    }

    #[test]
    fn the_kept_next_id_is_above_every_id_known() {
        assert_eq!(next_id_to_keep(Some(101), Some(IdRange::new(1, 90)), None), 101);
        assert_eq!(next_id_to_keep(Some(1), Some(IdRange::new(1, 90)), None), 91);
        assert_eq!(next_id_to_keep(Some(1), None, Some(&copied(500, 700))), 701, "after an interrupted run");
        assert_eq!(next_id_to_keep(None, None, None), 1);
    }
}
