//! `csmh-proxy migrate --back`: copies the extended table back into the old table, so that the flags can go back
//! to the old table alone (docs/migration.md, "Going back"). It makes the old table hold what the proxy shows at
//! the stage the flags are at, which decides how ([`Mode`]):
//!
//! - reading the extended table alone (stage 2): the old table is made the same as the extended table. Rows
//!   deleted or changed while the old table was retired are put right, so that reads of both tables afterwards
//!   show no stale row. Only old rows `migrate` copied (ids up to its checkpoint) are ever removed, and a run is
//!   refused while the old table has rows above that checkpoint which the extended table lacks: written to the
//!   old table after the copy, they are history the extended table never got;
//! - reading both tables (stage 1): every extended row is copied; an old row the extended table does not have is
//!   kept where the merged read shows it (ids up to the old table's own highest id when the way back began), and
//!   removed above, where only this command put rows;
//! - the old table alone again (stage 0): the rows the extended table got before every proxy followed the flags
//!   are copied, and an old row with the same id, which edxapp may have changed since, is kept.
//!
//! Retired (stage 3), nothing reaches the old table, so it cannot be kept in line: refused.
//!
//! The ids are walked from the start in chunks of ids, sized as `migrate`'s are, after [`Throttle`] allows each.
//! At stages 2 and 1 each chunk is compared first (row count and checksum on both servers, as `verify` does),
//! and copied only if it differs, so a chunk already in line costs two checksum queries. A chunk is copied in one
//! transaction on the `edxapp` server ([`ServerSide`] on one server; across two, rows read on the `csmh` server
//! become [`InsertBuilder`] statements), and the checkpoint (`migrate-back`) is written after it commits: copying
//! a chunk again gives the same result, so a run stopped at any point resumes from the checkpoint. Catch-up passes
//! follow until one finds nothing new, and then (stages 2 and 1) the old table's next id is raised to the extended
//! table's next id plus `history.id_offset`, so that rows edxapp writes to the old table once the flags are back
//! never take an id the extended table gave meanwhile.

use std::fmt;
use std::time::Duration;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tokio::time::Instant;
use tracing::info;

use super::progress::Progress;
use super::run::{DONE, RUNNING, copy_checkpoint, csmh_error, edxapp_error};
use super::server_side::{ServerSide, records};
use super::sql::{InsertBuilder, OnDuplicate};
use super::streamed::{ID_COLUMN, bad_row, chunk_select, remove_extra};
use super::throttle::{Steered, Throttle};
use super::{Direction, MigrateArgs, check_args, chunk_sizer, escaping_of, open_copy, statement_bytes};
use crate::history::{Flag, Stage, TableName, routing_table};
use crate::migrate::checkpoint::{self, Checkpoint, Task};
use crate::migrate::figures::Figures;
use crate::migrate::init::{extended_ids, next_auto_increment, old_highest_id};
use crate::migrate::status::LARGEST_32_BIT_ID;
use crate::migrate::verify::table::{Read, Role, Table};
use crate::migrate::verify::{Difference, DifferenceList, Differences, IdRange, Kind, Pair};
use crate::migrate::{MigrateError, Servers, Site};
use crate::topology::{self, Topology};

mod plan;

pub use plan::{BackPlan, plan};

/// Differing ranges narrowed down when looking for old rows `migrate` never copied, before the rest are listed
/// whole.
const NOT_COPIED_RANGES: usize = 100;
/// How long the statement that raises the old table's next id waits for the table's lock.
const LOCK_WAIT_SECS: u64 = 60;
/// How the line of the checkpoint's detail that says where the old table's own rows end starts.
const COPIES_ABOVE: &str = "old rows above id ";
/// How it ends.
const COPIES_ABOVE_END: &str = " are copies of the extended table's";

/// How `migrate --back` copies, decided by the stage the flags are at; see the module's doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Reading the extended table alone: the old table becomes the same as the extended table.
    Same,
    /// Reading both tables: every extended row is copied; old rows the extended table lacks are kept up to the
    /// old table's own highest id.
    Merge,
    /// The old table alone again: the extended rows the old table lacks are copied, its own rows kept.
    CatchUp,
}

impl Mode {
    /// The mode for the flags of `site`; refused while the old table is retired, or the flags are refused.
    pub fn of(site: &Site) -> Result<Mode, MigrateError> {
        let stage = routing_table(site.flags)
            .map_err(|refused| MigrateError::Refused(format!("the proxy refuses these flags: {refused}")))?
            .stage();
        match stage {
            Stage::ExtendedTableOnlyReads => Ok(Mode::Same),
            Stage::ExtendedTableReadingBoth => Ok(Mode::Merge),
            Stage::OldTableOnly => Ok(Mode::CatchUp),
            Stage::OldTableRetired => Err(MigrateError::Refused(format!(
                "the old table {} is retired ({} is on): deletes and changes of history reach the extended table \
                 only, so the old table cannot be kept in line while it is. To go back, set {} = false first (the \
                 proxy then applies them to both tables again), then run `csmh-proxy migrate --back`",
                site.old,
                Flag::ReadOnlyFromCsmhe,
                Flag::ReadOnlyFromCsmhe
            ))),
        }
    }

    /// Whether each chunk is compared before it is copied (and copied only if it differs).
    fn compares(self) -> bool {
        self != Mode::CatchUp
    }

    /// What the copy does with an old row that has the id of an extended row.
    fn on_duplicate(self) -> OnDuplicate {
        match self {
            Mode::Same | Mode::Merge => OnDuplicate::Overwrite,
            Mode::CatchUp => OnDuplicate::Keep,
        }
    }

    /// Where, in the chunk `(from, to]`, old rows the extended table lacks are removed, given the ids where that
    /// is allowed (`removable`): `(after, up_to]`, or `None`.
    fn removal(self, removable: Removable, (from, to): (u64, u64)) -> Option<(u64, u64)> {
        let after = match self {
            Mode::Same => from,
            Mode::Merge => from.max(removable.above),
            Mode::CatchUp => return None,
        };
        let up_to = to.min(removable.up_to);
        (after < up_to).then_some((after, up_to))
    }

    /// What the mode does, as the report says it.
    fn describe(self) -> &'static str {
        match self {
            Mode::Same => "reading the extended table alone: the old table made the same as the extended table",
            Mode::Merge => {
                "reading both tables: every extended row copied into the old table, the old table's own rows kept"
            }
            Mode::CatchUp => {
                "the old table alone: the extended rows it lacks copied, its own rows kept as edxapp left them"
            }
        }
    }
}

/// The ids where old rows the extended table lacks may be removed: above `above`, up to `up_to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Removable {
    /// Where the old table's own rows end (reading both tables): above it, old rows are copies this command
    /// made.
    above: u64,
    /// Where `migrate` copied up to (reading the extended table alone): above it, an old row the extended table
    /// lacks was never copied, so it is history only the old table has.
    up_to: u64,
}

/// The line of the checkpoint's detail that says where the old table's own rows end: above that id, old rows are
/// copies this command made, and may be removed where the extended table no longer has them.
pub fn series_detail(floor: u64) -> String {
    format!("{COPIES_ABOVE}{floor}{COPIES_ABOVE_END}")
}

/// The floor a checkpoint's detail records (on its first line).
pub fn floor_of(checkpoint: &Checkpoint) -> Option<u64> {
    let first = checkpoint.detail.as_deref()?.lines().next()?;
    first.strip_prefix(COPIES_ABOVE)?.strip_suffix(COPIES_ABOVE_END)?.parse().ok()
}

/// What a run of `migrate --back` did; its `Display` is what the command prints.
#[derive(Debug, Clone, PartialEq)]
pub struct BackReport {
    /// How it copied.
    pub mode: Mode,
    /// Whether it went on from where the way back's last run stopped (its checkpoint).
    pub resumed: bool,
    /// It went over the ids above this one.
    pub after: u64,
    /// Old rows above this id are copies (see the module's doc).
    pub floor: u64,
    /// Every extended row up to this id is in the old table, as the mode wants it.
    pub last_id: u64,
    /// Passes that found something: the first, then catch-up passes.
    pub passes: u32,
    /// Chunks gone over.
    pub chunks: u64,
    /// Chunks copied (the others were already in line).
    pub chunks_copied: u64,
    /// Rows copied into the old table.
    pub rows_copied: u64,
    /// Old rows removed because the extended table no longer has them.
    pub rows_removed: u64,
    /// The old table's next id, when this run raised it.
    pub old_next_id: Option<u64>,
    /// How long it took.
    pub elapsed: Duration,
}

impl fmt::Display for BackReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "going back, {}", self.mode.describe())?;
        if self.resumed {
            writeln!(f, "resumed after id {}", self.after)?;
        }
        if self.chunks == 0 {
            writeln!(f, "nothing new: the extended table has no id above {}", self.after)?;
        } else {
            let compared = if self.mode.compares() { ", the others already in line" } else { "" };
            writeln!(
                f,
                "{} in {} chunks: {} copied{compared}; {} rows copied, {} old rows removed, in {:.1} s",
                IdRange::new(self.after + 1, self.last_id),
                self.chunks,
                self.chunks_copied,
                self.rows_copied,
                self.rows_removed,
                self.elapsed.as_secs_f64()
            )?;
        }
        writeln!(f, "passes: {}", self.passes)?;
        writeln!(f, "every extended row up to id {} is in the old table", self.last_id)?;
        if let Some(next) = self.old_next_id {
            writeln!(
                f,
                "the old table's next id is now {next}: above every id the extended table gives until it has \
                 given history.id_offset more"
            )?;
        }
        let next = match self.mode {
            Mode::Same => format!(
                "set {} = true (reads of both tables), then run `csmh-proxy migrate --back` there",
                Flag::EnableReadingFromMultipleHistoryTables
            ),
            Mode::Merge => format!(
                "set {} = false (the old table alone), and once every proxy runs it (`csmh-proxy fleet`), run \
                 `csmh-proxy migrate --back` again at once: it copies what the extended table got in between",
                Flag::EnableCsmhExtended
            ),
            Mode::CatchUp => {
                "none: edxapp reads and writes the old table alone, which has every history row".to_owned()
            }
        };
        writeln!(f, "next: {next}")
    }
}

/// Copies the extended table back into the old table as the stage the flags are at asks; see the module's doc.
/// `offset` is `history.id_offset`.
pub async fn migrate_back(site: &Site, args: &MigrateArgs, offset: u64) -> Result<BackReport, MigrateError> {
    super::plan::refuse_dry_run(args)?;
    check_args(args)?;
    let mode = Mode::of(site)?;
    let started = Instant::now();
    let (mut servers, previous) = open_copy(site, Task::MigrateBack).await?;
    prepare_sessions(&mut servers, site).await?;
    let start = start(&mut servers, site, mode, args.from_id, previous).await?;
    check_ids_fit(&mut servers.csmh, site, mode, offset).await?;
    let figures = Figures::new();
    let mut walk = Walk {
        site,
        mode,
        removable: start.removable,
        last_id: start.after,
        target_id: start.after,
        rows_done: start.rows_done,
        started_at: start.started_at,
        waiting: figures.clone(),
        progress: Progress::new(start.after, figures),
        report: BackReport {
            mode,
            resumed: start.resumed,
            after: start.after,
            floor: start.removable.above,
            last_id: start.after,
            passes: 0,
            chunks: 0,
            chunks_copied: 0,
            rows_copied: 0,
            rows_removed: 0,
            old_next_id: None,
            elapsed: Duration::ZERO,
        },
    };
    checkpoint::save(&mut servers.csmh, site, Task::MigrateBack, &walk.checkpoint(RUNNING)).await?;
    let passes = walk.passes(&mut servers, args).await;
    walk.progress.finish();
    passes?;
    if mode != Mode::CatchUp {
        walk.report.old_next_id = raise_old_next_id(&mut servers, site, offset).await?;
    }
    checkpoint::save(&mut servers.csmh, site, Task::MigrateBack, &walk.checkpoint(DONE)).await?;
    walk.report.last_id = walk.last_id;
    walk.report.elapsed = started.elapsed();
    Ok(walk.report)
}

/// Where a run starts.
struct Start {
    /// Whether it goes on with the way back the checkpoint records (rather than starting it anew).
    resumed: bool,
    /// Ids above this one are gone over.
    after: u64,
    /// Where old rows the extended table lacks may be removed.
    removable: Removable,
    /// Rows copied back before, in the same way back.
    rows_done: u64,
    /// When the way back started.
    started_at: String,
}

/// Where a run in `mode` starts, given `--from-id` and the checkpoint of the run before; refuses what must not
/// start.
async fn start(
    servers: &mut Servers,
    site: &Site,
    mode: Mode,
    from_id: Option<u64>,
    previous: Option<Checkpoint>,
) -> Result<Start, MigrateError> {
    let from = from_id.map(|id| id.saturating_sub(1));
    let go_on = |previous: Checkpoint, floor: u64| Start {
        resumed: true,
        after: from.or(previous.last_id).unwrap_or(0),
        removable: Removable { above: floor, up_to: u64::MAX },
        rows_done: previous.rows_done,
        started_at: previous.started_at,
    };
    let now = checkpoint::server_now(&mut servers.csmh).await?;
    let anew = |floor: u64| Start {
        resumed: false,
        after: from.unwrap_or(0),
        removable: Removable { above: floor, up_to: u64::MAX },
        rows_done: 0,
        started_at: now.clone(),
    };
    match (mode, previous) {
        (Mode::CatchUp, None) => Err(MigrateError::Refused(format!(
            "the flags already send history to the old table alone ({} is off), but `csmh-proxy migrate --back` \
             never copied the extended table back: rows written to the extended table are not in the old table, \
             so edxapp does not see them. Set {} = true and {} = true again (reads of both tables), run \
             `csmh-proxy migrate --back` there, and only then turn {} off",
            Flag::EnableCsmhExtended,
            Flag::EnableCsmhExtended,
            Flag::EnableReadingFromMultipleHistoryTables,
            Flag::EnableCsmhExtended
        ))),
        (Mode::CatchUp, Some(previous)) => {
            let floor = floor_of(&previous).unwrap_or(0);
            Ok(go_on(previous, floor))
        }
        (Mode::Merge, Some(previous)) => {
            let floor = floor_of(&previous).unwrap_or(0);
            Ok(go_on(previous, floor))
        }
        (Mode::Merge, None) => Ok(anew(old_highest_id(&mut servers.edxapp, &site.old).await?)),
        (Mode::Same, previous) => {
            let copied_up_to = require_forward_copy(servers, site).await?;
            let start = match previous {
                Some(previous) if from_id.is_none() && previous.state != DONE && floor_of(&previous) == Some(0) => {
                    go_on(previous, 0)
                }
                _ => anew(0),
            };
            Ok(Start { removable: Removable { above: 0, up_to: copied_up_to }, ..start })
        }
    }
}

/// Refuses to make the old table the same as the extended table unless every old row was copied into it: `migrate`
/// is done (or the old table is empty), and the old table has no row above where it copied that the extended
/// table lacks. Otherwise old rows never copied would be removed. Returns the highest id `migrate` copied (0 if
/// it never ran): only up to it can an old row the extended table lacks be one deleted since its copy.
async fn require_forward_copy(servers: &mut Servers, site: &Site) -> Result<u64, MigrateError> {
    let copied = checkpoint::load(&mut servers.csmh, site, Task::Migrate).await?;
    let copied_up_to = copied.as_ref().and_then(super::copied_up_to).unwrap_or(0);
    let done = copied.is_some_and(|copied| copied.state == DONE);
    let mut old = Table { role: Role::Old, conn: &mut servers.edxapp, name: &site.old };
    if !done && old.bounds(None).await?.is_some() {
        return Err(forward_copy_unfinished());
    }
    refuse_rows_not_copied(servers, site, copied_up_to).await?;
    Ok(copied_up_to)
}

/// The refusal while `migrate` has not finished copying a non-empty old table.
fn forward_copy_unfinished() -> MigrateError {
    MigrateError::Refused(format!(
        "reads come from the extended table alone ({} is off), but `csmh-proxy migrate` never finished copying \
         the old table into it: old rows it has not copied are missing from what edxapp sees, and making the old \
         table the same as the extended table would remove them for good. Set {} = true (reads of both tables \
         show them again) and run `csmh-proxy migrate --back` there",
        Flag::EnableReadingFromMultipleHistoryTables,
        Flag::EnableReadingFromMultipleHistoryTables
    ))
}

/// Refuses when the old table has rows above `copied_up_to` (where `migrate` copied up to) that the extended table
/// lacks: written to the old table after the copy (by a proxy that still sent history there, or while the flags
/// were set back to it), they are history reads of the extended table alone do not show, and making the old
/// table the same as the extended table would delete them for good.
async fn refuse_rows_not_copied(servers: &mut Servers, site: &Site, copied_up_to: u64) -> Result<(), MigrateError> {
    let mut pair = Pair {
        old: Table { role: Role::Old, conn: &mut servers.edxapp, name: &site.old },
        extended: Table { role: Role::Extended, conn: &mut servers.csmh, name: &site.extended },
    };
    let old_last = pair.old.bounds(None).await?.map_or(0, |ids| ids.last);
    if old_last <= copied_up_to {
        return Ok(());
    }
    let above = IdRange::new(copied_up_to + 1, old_last);
    let sums = pair.sums(above, Read::Plain).await?;
    let mut found = Differences::new(NOT_COPIED_RANGES);
    pair.narrow(above, sums, &mut found).await?;
    let not_copied: Vec<Difference> = found
        .into_vec()
        .into_iter()
        .filter(|difference| matches!(difference.kind, Kind::Missing | Kind::NotNarrowed))
        .collect();
    if not_copied.is_empty() {
        return Ok(());
    }
    let rows: u64 = not_copied.iter().map(|difference| difference.old_rows).sum();
    Err(MigrateError::Refused(format!(
        "the old table {} has {rows} rows above id {copied_up_to}, where `csmh-proxy migrate` last copied up to, \
         that the extended table does not have:\n{}They were written to the old table after the copy (by a proxy \
         that still sent history there, or while the flags were set back to the old table), so reads of the \
         extended table alone do not show them, and making the old table the same as the extended table would \
         delete them for good; nothing was changed. To keep them, run `csmh-proxy migrate` first (it copies them), \
         then `csmh-proxy migrate --back` again",
        site.old,
        DifferenceList(&not_copied)
    )))
}

/// Refuses a copy whose ids or module ids do not fit the old table's signed 32-bit columns, and (but at the
/// old-table-alone stage, where it is set already) an old table whose next id could not be put `offset` above
/// the extended table's.
async fn check_ids_fit(csmh: &mut Conn, site: &Site, mode: Mode, offset: u64) -> Result<(), MigrateError> {
    let sql = format!("SELECT MAX(`id`), MAX(`student_module_id`) FROM {}", site.extended.quoted());
    let (largest, module): (Option<u64>, Option<u64>) = csmh
        .query_first(sql)
        .await
        .map_err(|source| csmh_error("read the extended table's largest ids", source))?
        .unwrap_or((None, None));
    let too_large = |what: &str, id: u64| {
        MigrateError::Refused(format!(
            "the extended table {} has a {what} of {id}, above {LARGEST_32_BIT_ID}: the old table's columns are \
             signed 32-bit integers and cannot hold it, so its history cannot go back to the old table; nothing \
             was copied",
            site.extended
        ))
    };
    if let Some(id) = largest.filter(|id| *id > LARGEST_32_BIT_ID) {
        return Err(too_large("history id", id));
    }
    if let Some(id) = module.filter(|id| *id > LARGEST_32_BIT_ID) {
        return Err(too_large("student_module_id", id));
    }
    if mode == Mode::CatchUp {
        return Ok(());
    }
    let next = extended_ids(csmh, &site.extended).await?.map_or(1, |ids| ids.next);
    old_next_id_fits(next, offset)
}

/// Refuses unless the old table's next id can be put `offset` above the extended table's `next` id within its
/// signed 32-bit ids.
fn old_next_id_fits(next: u64, offset: u64) -> Result<(), MigrateError> {
    if next.saturating_add(offset) <= LARGEST_32_BIT_ID {
        return Ok(());
    }
    Err(MigrateError::Refused(format!(
        "the extended table's next id is {next}: with history.id_offset = {offset} above it, the old table's next \
         id would pass {LARGEST_32_BIT_ID}, the largest its signed 32-bit ids can hold, and edxapp could not write \
         history to it once the flags are back. Lower history.id_offset (it is the room left for rows written \
         while the flags change) or stay on the extended table"
    )))
}

/// Raises the old table's next id to the extended table's next id plus `offset`, if it is lower; returns it
/// when raised.
async fn raise_old_next_id(servers: &mut Servers, site: &Site, offset: u64) -> Result<Option<u64>, MigrateError> {
    let next = extended_ids(&mut servers.csmh, &site.extended).await?.map_or(1, |ids| ids.next);
    old_next_id_fits(next, offset)?;
    let wanted = next + offset;
    let current = next_auto_increment(&mut servers.edxapp, &site.old, "edxapp").await?.unwrap_or(1);
    if current >= wanted {
        return Ok(None);
    }
    let sql = format!("ALTER TABLE {} AUTO_INCREMENT = {wanted}", site.old.quoted());
    servers.edxapp.query_drop(sql).await.map_err(|source| edxapp_error("raise the old table's next id", source))?;
    Ok(Some(wanted))
}

/// Sets up both sessions: the one that writes the old table refuses values out of its columns' range instead of
/// clipping them (strict mode), and waits at most a minute for the table's lock; on one server its `INSERT ...
/// SELECT` reads committed data without locking the extended table's rows (where the binary log allows it); the
/// one that reads the extended table may wait on a slow writer.
async fn prepare_sessions(servers: &mut Servers, site: &Site) -> Result<(), MigrateError> {
    let edxapp = &mut servers.edxapp;
    let setup = [
        "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'STRICT_ALL_TABLES')".to_owned(),
        format!("SET SESSION lock_wait_timeout = {LOCK_WAIT_SECS}"),
    ];
    for sql in setup {
        edxapp.query_drop(sql).await.map_err(|source| edxapp_error("set up the session", source))?;
    }
    if site.topology == Topology::OneServer {
        super::read_committed_unless_statement_binlog(edxapp, topology::Server::Edxapp).await?;
    }
    servers
        .csmh
        .query_drop("SET SESSION net_write_timeout = 600")
        .await
        .map_err(|source| csmh_error("set up the session", source))
}

/// A run going over the ids.
struct Walk<'a> {
    site: &'a Site,
    mode: Mode,
    /// Where old rows the extended table lacks may be removed.
    removable: Removable,
    /// Every extended row up to this id is in the old table, as the mode wants it.
    last_id: u64,
    /// The current pass's last id.
    target_id: u64,
    /// Rows copied back since the way back started.
    rows_done: u64,
    started_at: String,
    waiting: Figures,
    progress: Progress,
    report: BackReport,
}

/// How a chunk is copied.
enum Copier {
    /// One server: statements the server runs itself.
    OneServer(ServerSide),
    /// Two servers: rows read on the `csmh` server, written as INSERTs on the `edxapp` server.
    TwoServers(RowCopy),
}

impl Walk<'_> {
    /// The checkpoint recording this position, in `state`.
    fn checkpoint(&self, state: &str) -> Checkpoint {
        let position = (self.last_id, self.target_id, self.rows_done);
        let waiting = self.waiting.waiting_reason();
        copy_checkpoint(
            state,
            Some(series_detail(self.removable.above)),
            waiting.as_deref(),
            position,
            &self.started_at,
        )
    }

    /// Passes until one finds nothing new: each goes up to the extended table's largest id when it starts (at
    /// [`Mode::Same`], or the old table's, if larger).
    async fn passes(&mut self, servers: &mut Servers, args: &MigrateArgs) -> Result<(), MigrateError> {
        let site = self.site;
        let sizer = chunk_sizer(args);
        let steered = Steered {
            direction: Direction::Back,
            note: Some(series_detail(self.removable.above)),
            figures: self.waiting.clone(),
            notice: self.progress.notice(),
        };
        let mut throttle = Throttle::new(site, args, &sizer, site.connect_csmh().await?, steered).await?;
        let copier = match site.topology {
            Topology::OneServer => {
                Copier::OneServer(ServerSide::between(&site.extended, &site.old, self.mode.on_duplicate()))
            }
            Topology::TwoServers => {
                let escaping = escaping_of(&mut servers.edxapp, topology::Server::Edxapp).await?;
                Copier::TwoServers(RowCopy {
                    select: chunk_select(&site.extended),
                    insert: InsertBuilder::new(&site.old, escaping, self.mode.on_duplicate()),
                    statement_bytes: statement_bytes(&mut servers.edxapp, topology::Server::Edxapp).await?,
                })
            }
        };
        loop {
            let target = pass_target(servers, site, self.mode).await?;
            if target <= self.last_id {
                return Ok(());
            }
            self.report.passes += 1;
            if self.report.passes > 1 {
                info!(from = self.last_id, to = target, "catch-up pass: rows written to the extended table since");
            }
            self.target_id = target;
            self.progress.set_target(target);
            while self.last_id < self.target_id {
                throttle.before_chunk(&mut servers.edxapp, "edxapp").await?;
                let started = Instant::now();
                let (from, to) = (self.last_id, self.target_id.min(self.last_id.saturating_add(sizer.rows())));
                let rows = self.chunk(servers, &copier, (from, to)).await?;
                self.last_id = to;
                checkpoint::save(&mut servers.csmh, site, Task::MigrateBack, &self.checkpoint(RUNNING)).await?;
                self.progress.copied(to, rows);
                sizer.record(to - from, started.elapsed());
                throttle.copied(rows);
            }
        }
    }

    /// Goes over the chunk `(from, to]`: compares it (but at [`Mode::CatchUp`]) and copies it unless it is in
    /// line; returns the rows copied.
    async fn chunk(
        &mut self,
        servers: &mut Servers,
        copier: &Copier,
        (from, to): (u64, u64),
    ) -> Result<u64, MigrateError> {
        let site = self.site;
        self.report.chunks += 1;
        let removal = self.mode.removal(self.removable, (from, to));
        if self.mode.compares() {
            let mut pair = Pair {
                old: Table { role: Role::Old, conn: &mut servers.edxapp, name: &site.old },
                extended: Table { role: Role::Extended, conn: &mut servers.csmh, name: &site.extended },
            };
            let (old, extended) = pair.sums(IdRange::new(from + 1, to), Read::Plain).await?;
            if old.matches(&extended) || (extended.rows == 0 && removal.is_none()) {
                return Ok(0);
            }
        }
        let (copied, removed) = match copier {
            Copier::OneServer(statements) => {
                copy_on_one_server(&mut servers.edxapp, statements, (from, to), removal).await?
            }
            Copier::TwoServers(rows) => rows.copy(servers, &site.old, (from, to), removal).await?,
        };
        self.report.chunks_copied += 1;
        self.report.rows_copied += copied;
        self.report.rows_removed += removed;
        self.rows_done += copied;
        Ok(copied)
    }
}

/// The last id of a pass starting now: the extended table's largest id (at [`Mode::Same`], or the old table's,
/// if larger: the old table's rows above are removed too).
async fn pass_target(servers: &mut Servers, site: &Site, mode: Mode) -> Result<u64, MigrateError> {
    let extended = Table { role: Role::Extended, conn: &mut servers.csmh, name: &site.extended };
    let mut largest = largest_id(extended).await?;
    if mode == Mode::Same {
        largest = largest.max(largest_id(Table { role: Role::Old, conn: &mut servers.edxapp, name: &site.old }).await?);
    }
    Ok(largest)
}

/// The largest id of `table`; 0 when it is empty.
async fn largest_id(mut table: Table<'_>) -> Result<u64, MigrateError> {
    Ok(table.bounds(None).await?.map_or(0, |ids| ids.last))
}

/// Copies the extended rows of `(from, to]` into the old table in one transaction on `edxapp` (which reaches both
/// tables), removing first the old rows of `removal` that the extended table lacks; returns the rows copied and
/// removed.
async fn copy_on_one_server(
    edxapp: &mut Conn,
    statements: &ServerSide,
    (from, to): (u64, u64),
    removal: Option<(u64, u64)>,
) -> Result<(u64, u64), MigrateError> {
    edxapp.query_drop("BEGIN").await.map_err(|source| edxapp_error("start a chunk", source))?;
    let mut removed = 0;
    if let Some(range) = removal {
        edxapp
            .exec_drop(&statements.remove_extra, range)
            .await
            .map_err(|source| edxapp_error("remove old rows the extended table no longer has", source))?;
        removed = edxapp.affected_rows();
    }
    edxapp.exec_drop(&statements.copy, (from, to)).await.map_err(|source| edxapp_error("copy a chunk back", source))?;
    let copied = records(&edxapp.info()).unwrap_or_else(|| edxapp.affected_rows());
    edxapp.query_drop("COMMIT").await.map_err(|source| edxapp_error("commit a chunk", source))?;
    Ok((copied, removed))
}

/// Across two servers: a chunk's extended rows read on the `csmh` server and written to the old table as they
/// come.
struct RowCopy {
    /// The SELECT of a chunk of the extended table.
    select: String,
    /// Builds the INSERTs into the old table.
    insert: InsertBuilder,
    /// The size at which an INSERT is sent.
    statement_bytes: usize,
}

impl RowCopy {
    /// Copies the extended rows of `(from, to]` into the old table `old` in one transaction on the `edxapp`
    /// server, as they are read, then removes the old rows of `removal` that the extended table lacks; returns
    /// the rows copied and removed.
    async fn copy(
        &self,
        servers: &mut Servers,
        old: &TableName,
        (from, to): (u64, u64),
        removal: Option<(u64, u64)>,
    ) -> Result<(u64, u64), MigrateError> {
        let (edxapp, csmh) = (&mut servers.edxapp, &mut servers.csmh);
        edxapp.query_drop("BEGIN").await.map_err(|source| edxapp_error("start a chunk", source))?;
        let mut result = csmh
            .exec_iter(self.select.as_str(), (from, to, to - from))
            .await
            .map_err(|source| csmh_error("read a chunk", source))?;
        let (mut ids, mut rows, mut buf) = (Vec::new(), 0, Vec::with_capacity(self.statement_bytes * 2));
        self.insert.start(&mut buf);
        while let Some(row) = result.next().await.map_err(|source| csmh_error("read a chunk", source))? {
            let id: u64 = row.get(ID_COLUMN).ok_or_else(|| bad_row(&row))?;
            if removal.is_some() {
                ids.push(id);
            }
            rows += 1;
            self.insert.push_row(&mut buf, &row);
            if buf.len() >= self.statement_bytes {
                self.send(edxapp, &mut buf).await?;
            }
        }
        drop(result);
        if !self.insert.is_empty(&buf) {
            self.send(edxapp, &mut buf).await?;
        }
        let removed = match removal {
            Some(range) => remove_extra(edxapp, topology::Server::Edxapp, old, range, &ids).await?,
            None => 0,
        };
        edxapp.query_drop("COMMIT").await.map_err(|source| edxapp_error("commit a chunk", source))?;
        Ok((rows, removed))
    }

    /// Ends the statement in `buf`, runs it on `edxapp`, and starts the next one in `buf`.
    async fn send(&self, edxapp: &mut Conn, buf: &mut Vec<u8>) -> Result<(), MigrateError> {
        self.insert.finish(buf);
        edxapp.query_drop(&*buf).await.map_err(|source| edxapp_error("copy a chunk back", source))?;
        self.insert.start(buf);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::copy::run::state_and_detail;

    #[test]
    fn old_rows_are_removed_up_to_the_forward_copy_when_made_the_same_and_above_the_floor_when_merged() {
        let copied = Removable { above: 0, up_to: 800 };
        assert_eq!(Mode::Same.removal(copied, (0, 700)), Some((0, 700)));
        assert_eq!(Mode::Same.removal(copied, (0, 1_000)), Some((0, 800)), "above 800, never copied");
        assert_eq!(Mode::Same.removal(copied, (800, 1_000)), None);
        let floor = Removable { above: 500, up_to: u64::MAX };
        assert_eq!(Mode::Merge.removal(floor, (0, 1_000)), Some((500, 1_000)));
        assert_eq!(Mode::Merge.removal(floor, (0, 400)), None, "below the old table's own highest id");
        assert_eq!(Mode::Merge.removal(floor, (600, 700)), Some((600, 700)));
        let anywhere = Removable { above: 0, up_to: u64::MAX };
        assert_eq!(Mode::CatchUp.removal(anywhere, (0, 1_000)), None, "the old table alone: its rows are edxapp's");
    }

    #[test]
    fn the_floor_survives_the_checkpoint() {
        let (_, detail) = state_and_detail(RUNNING, Some(series_detail(20_002)), Some("csmh-proxy pause"));
        let checkpoint = Checkpoint {
            state: "paused".to_owned(),
            last_id: Some(1),
            target_id: Some(2),
            rows_done: 0,
            detail,
            started_at: String::new(),
            updated_at: String::new(),
        };
        assert_eq!(floor_of(&checkpoint), Some(20_002));
        assert_eq!(
            floor_of(&Checkpoint { detail: Some("re-copy from id 3 up to id 4".to_owned()), ..checkpoint }),
            None
        );
    }

    #[test]
    fn the_old_tables_next_id_must_fit_its_32_bit_ids() {
        assert!(old_next_id_fits(30_011, 10_000).is_ok());
        assert!(old_next_id_fits(LARGEST_32_BIT_ID - 10_000, 10_000).is_ok());
        let refused = old_next_id_fits(LARGEST_32_BIT_ID - 9_999, 10_000).unwrap_err().to_string();
        assert!(refused.contains("Lower history.id_offset"), "{refused}");
    }
}
