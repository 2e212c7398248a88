//! `csmh-proxy migrate`: copies every row of the old table into the extended table with the same id and values,
//! in primary-key chunks, resumable, throttled, then catches up with rows written meanwhile. How it works, and
//! what it guarantees, is in docs/migration.md.
//!
//! Across two servers rows stream from one to the other ([`streamed`]); on one server each chunk is an
//! `INSERT ... SELECT` ([`server_side`]). Either way a chunk and the checkpoint recording it commit in one
//! transaction on the `csmh` server ([`run`]), so a run killed at any point resumes from its checkpoint with
//! nothing lost or copied twice.

pub mod back;
mod lag;
pub mod load;
mod pace;
pub mod plan;
mod progress;
mod run;
mod server_side;
pub mod sql;
mod streamed;
pub mod throttle;
pub mod window;

use std::fmt;
use std::time::Duration;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tokio::time::Instant;
use tracing::info;

use self::load::LoadLimit;
use self::pace::ChunkSizer;
use self::progress::Progress;
pub use self::run::{DONE, PAUSED, RECOPY, RUNNING, Recopy, WAITING};
use self::run::{Removal, Run, csmh_error, edxapp_error, query_error};
use self::server_side::ServerSide;
use self::sql::{InsertBuilder, OnDuplicate};
use self::streamed::Streamed;
use self::throttle::{Steered, Throttle};
use self::window::Window;
use super::checkpoint::{self, Checkpoint, Task};
use super::figures::Figures;
use super::observe::{Command, ObserveArgs, Observers, Outcome};
use super::{ER_BAD_DB, ER_NO_SUCH_TABLE, MigrateError, Servers, Site};
use crate::config::Config;
use crate::string_literal::Escaping;
use crate::topology::{self, Topology};

/// Options of `csmh-proxy migrate`.
#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    /// Aim for chunks (transactions) of about this many seconds; the number of rows per chunk adapts to it.
    #[arg(long, default_value_t = 0.5, value_name = "SECONDS")]
    pub chunk_seconds: f64,
    /// Never put more rows than this in one chunk.
    #[arg(long, default_value_t = 200_000, value_name = "ROWS")]
    pub max_chunk_rows: u64,
    /// Copy at most this many rows per second, on average (no limit by default).
    #[arg(long, value_name = "ROWS")]
    pub max_rows_per_second: Option<u64>,
    /// Pause while the `csmh` server, if it is a replica, is more than this many seconds behind its source.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub max_replication_lag: u64,
    /// Copy again the rows copied before from this id on (this id included; 0: from the start), e.g. from the
    /// first id `verify` reported as different. Extended rows in that range that the old table no longer has are
    /// removed, never below the old table's smallest id.
    #[arg(long, value_name = "ID")]
    pub from_id: Option<u64>,
    /// Pause while this file exists (as gh-ost's --throttle-flag-file); its first line, if any, is shown as the
    /// reason. `csmh-proxy pause` does the same from any machine with the configuration.
    #[arg(long, value_name = "PATH")]
    pub pause_file: Option<std::path::PathBuf>,
    /// Pause while a global status variable of either server is above its bound: `Threads_running=50`, several
    /// separated by commas.
    #[arg(long, value_name = "VARIABLE=N,...")]
    pub max_load: Option<LoadLimit>,
    /// Copy only between these hours, in the named time zone or the process's own (`TZ`): `22:00-06:00`,
    /// `22:00-06:00 Europe/Paris`. Outside them the copy pauses between chunks.
    #[arg(long, value_name = "HH:MM-HH:MM [ZONE]")]
    pub run_between: Option<Window>,
    /// Change nothing: print the plan (where the copy would start, up to which id, how, with which throttles) and
    /// the exact statements of its first chunks, found with read-only queries. Refuses what a run would refuse.
    #[arg(long)]
    pub dry_run: bool,
    /// Metrics and hooks.
    #[command(flatten)]
    pub observe: ObserveArgs,
    /// Go back: copy the extended table into the old table instead, as the stage the flags are at asks (the old
    /// table made the same as the extended table while reads come from it alone; every extended row copied while
    /// reads come from both; the rows it got meanwhile once the flags are back on the old table), then raise the
    /// old table's next id above the extended table's by history.id_offset. Refused while the old table is
    /// retired. See docs/migration.md, "Going back".
    #[arg(long)]
    pub back: bool,
}

impl Default for MigrateArgs {
    fn default() -> Self {
        MigrateArgs {
            chunk_seconds: 0.5,
            max_chunk_rows: 200_000,
            max_rows_per_second: None,
            max_replication_lag: 10,
            from_id: None,
            pause_file: None,
            max_load: None,
            run_between: None,
            dry_run: false,
            observe: ObserveArgs::default(),
            back: false,
        }
    }
}

/// Which way a copy goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the old table into the extended table: `csmh-proxy migrate`.
    Forward,
    /// From the extended table back into the old table: `csmh-proxy migrate --back` ([`back`]).
    Back,
}

impl Direction {
    /// The task whose checkpoint records a copy this way.
    pub fn task(self) -> Task {
        match self {
            Direction::Forward => Task::Migrate,
            Direction::Back => Task::MigrateBack,
        }
    }

    /// The server a copy this way writes to.
    pub fn destination(self) -> topology::Server {
        match self {
            Direction::Forward => topology::Server::Csmh,
            Direction::Back => topology::Server::Edxapp,
        }
    }
}

/// The first chunk's size, before any timing is known.
const INITIAL_CHUNK_ROWS: u64 = 1_000;

/// The chunk sizer of a copy run with `args`: the first chunk's size, `--chunk-seconds`, `--max-chunk-rows`, and
/// chunks of about one second's worth of `--max-rows-per-second`.
fn chunk_sizer(args: &MigrateArgs) -> ChunkSizer {
    let sizer = ChunkSizer::new(INITIAL_CHUNK_ROWS, args.max_chunk_rows, Duration::from_secs_f64(args.chunk_seconds));
    sizer.set_rate_cap(args.max_rows_per_second);
    sizer
}
/// The size at which a statement is sent across two servers (at most half the server's `max_allowed_packet`).
const STATEMENT_BYTES: usize = 4 << 20;
/// How long a run waits for another run of `migrate` on the same table to end before refusing.
const LOCK_WAIT_SECS: u32 = 10;

/// What a run of `migrate` did; its `Display` is what the command prints.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrateReport {
    /// Where the run started: the checkpoint's last id (or `--from-id`); `None` for a first run.
    pub resumed_from: Option<u64>,
    /// Rows this run copied.
    pub rows_copied: u64,
    /// Rows copied since the migration started, across resumed runs; for a re-copy (`recopy`), since it began.
    pub rows_total: u64,
    /// The `--from-id` re-copy this run made or resumed, if any.
    pub recopy: Option<Recopy>,
    /// Every old row with an id up to this one is in the extended table.
    pub last_id: u64,
    /// Passes that copied something: the first, then catch-up passes for rows written meanwhile.
    pub passes: u32,
    /// Whether the copy ran inside the server (`INSERT ... SELECT`, one server).
    pub server_side: bool,
    /// How long the run took.
    pub elapsed: Duration,
}

impl MigrateReport {
    /// Rows copied per second by this run.
    pub fn rows_per_second(&self) -> f64 {
        self.rows_copied as f64 / self.elapsed.as_secs_f64().max(1e-6)
    }
}

impl fmt::Display for MigrateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A re-copy's first run starts just below `--from-id`: that is no resumption.
        match (self.resumed_from, self.recopy) {
            (Some(after), Some(recopy)) if after == recopy.from.saturating_sub(1) => {
                writeln!(f, "copying again from id {} up to id {}", recopy.from, recopy.until)?
            }
            (Some(after), Some(recopy)) => {
                writeln!(f, "resumed after id {after} (re-copy from id {} up to id {})", recopy.from, recopy.until)?
            }
            (Some(after), None) => writeln!(f, "resumed after id {after}")?,
            (None, _) => {}
        }
        let since = match self.recopy {
            Some(recopy) => format!("since the re-copy from id {} began", recopy.from),
            None => "since the migration started".to_owned(),
        };
        let how = if self.server_side { "INSERT ... SELECT on one server" } else { "streamed across two servers" };
        writeln!(
            f,
            "copied {} rows in {:.1} s ({:.0} rows/s, {how}); {} rows {since}",
            self.rows_copied,
            self.elapsed.as_secs_f64(),
            self.rows_per_second(),
            self.rows_total
        )?;
        let catch_up = self.passes.saturating_sub(1);
        writeln!(f, "passes: {} ({catch_up} catch-up)", self.passes)?;
        writeln!(f, "every old row up to id {} is in the extended table; next: csmh-proxy verify", self.last_id)
    }
}

/// Runs `migrate` for the site `config` describes, with the metrics and hooks `args` ask for; or with `--dry-run`
/// plans it ([`plan::plan`]).
pub async fn run(config: &Config, args: &MigrateArgs) -> Result<plan::Outcome, MigrateError> {
    let site = Site::new(config)?;
    match (args.back, args.dry_run) {
        (true, true) => back::plan(&site, args, config.history.id_offset).await.map(plan::Outcome::BackPlanned),
        (true, false) => back::migrate_back(&site, args, config.history.id_offset).await.map(plan::Outcome::Back),
        (false, true) => plan::plan(&site, args).await.map(|plan| plan::Outcome::Planned(Box::new(plan))),
        (false, false) => {
            let observers = Observers::start(Command::Migrate, &args.observe, config).await?;
            let result = migrate_with(&site, args, observers.figures()).await;
            let outcome = match &result {
                Ok(_) => Outcome::Succeeded,
                Err(error) => Outcome::of_error(error),
            };
            observers.finish(outcome).await;
            result.map(plan::Outcome::Copied)
        }
    }
}

/// Copies every old row into the extended table; see the module's doc. A dry run (`args.dry_run`) is refused
/// here, since it copies nothing: [`plan::plan`] makes it.
pub async fn migrate(site: &Site, args: &MigrateArgs) -> Result<MigrateReport, MigrateError> {
    migrate_with(site, args, &Figures::new()).await
}

/// [`migrate`], keeping where it stands in `figures` for the metrics and the hooks.
pub async fn migrate_with(site: &Site, args: &MigrateArgs, figures: &Figures) -> Result<MigrateReport, MigrateError> {
    plan::refuse_dry_run(args)?;
    if args.back {
        return Err(MigrateError::Refused("copying back is `migrate::copy::back::migrate_back`".to_owned()));
    }
    check_args(args)?;
    refuse_retired(site)?;
    let started = Instant::now();
    let (mut servers, previous) = open_copy(site, Task::Migrate).await?;
    prepare_sessions(&mut servers, site).await?;
    let (resumed_from, rows_before, started_at, recopy) = match (args.from_id, previous) {
        (Some(from), previous) => {
            let recopy = recopy_of(from, previous.as_ref().and_then(copied_up_to))?;
            (Some(from.saturating_sub(1)), 0, checkpoint::server_now(&mut servers.csmh).await?, Some(recopy))
        }
        (None, Some(previous)) => {
            let recopy = Recopy::resumed(&previous);
            (previous.last_id, previous.rows_done, previous.started_at, recopy)
        }
        (None, None) => (None, 0, checkpoint::server_now(&mut servers.csmh).await?, None),
    };
    let first_id = resumed_from.unwrap_or(0);
    let mut run = Run {
        site,
        last_id: first_id,
        target_id: first_id,
        rows_done: rows_before,
        rows_this_run: 0,
        started_at,
        recopy,
        progress: Progress::new(first_id, figures.clone()),
    };
    checkpoint::save(&mut servers.csmh, site, Task::Migrate, &run.checkpoint(RUNNING)).await?;
    let passes = copy_passes(&mut servers, site, args, &mut run).await;
    run.progress.finish();
    let passes = passes?;
    let recopy = run.recopy.take();
    checkpoint::save(&mut servers.csmh, site, Task::Migrate, &run.checkpoint(DONE)).await?;
    Ok(MigrateReport {
        resumed_from,
        rows_copied: run.rows_this_run,
        rows_total: run.rows_done,
        recopy,
        last_id: run.last_id,
        passes,
        server_side: site.topology == Topology::OneServer,
        elapsed: started.elapsed(),
    })
}

/// The start of a copy either way: both servers logged in (their sessions set up by the caller, as its direction
/// needs), the migration lock taken, the extended table checked, the checkpoint table made sure of, and `task`'s
/// checkpoint from the run before.
pub(super) async fn open_copy(site: &Site, task: Task) -> Result<(Servers, Option<Checkpoint>), MigrateError> {
    let mut servers = site.connect().await?;
    take_lock(&mut servers.csmh, site).await?;
    check_extended_table(&mut servers.csmh, site).await?;
    checkpoint::ensure(&mut servers.csmh, site).await?;
    let previous = checkpoint::load(&mut servers.csmh, site, task).await?;
    Ok((servers, previous))
}

/// The highest id copied so far, as the checkpoint of the run before (`previous`) records it: its last id, or,
/// if it was a re-copy that did not finish, the highest id copied before that re-copy began (rows above its
/// last id were copied then, and are copies, not rows of the extended table's own).
pub(crate) fn copied_up_to(previous: &Checkpoint) -> Option<u64> {
    previous.last_id.max(Recopy::resumed(previous).map(|recopy| recopy.until))
}

/// Whether the copy `checkpoint` records has copied every old row once: its run finished, or a `--from-id`
/// re-copy is under way (which copies again rows an earlier run copied). `false` when `migrate` never ran.
pub(crate) fn copy_finished(checkpoint: Option<&Checkpoint>) -> bool {
    checkpoint.is_some_and(|checkpoint| checkpoint.state == DONE || Recopy::resumed(checkpoint).is_some())
}

/// The re-copy `--from-id from` asks for, given the highest id copied so far: only rows copied before can be
/// copied again (the others are copied by a run without `--from-id`, from the checkpoint).
fn recopy_of(from: u64, copied_up_to: Option<u64>) -> Result<Recopy, MigrateError> {
    match copied_up_to {
        Some(until) if from <= until => Ok(Recopy { from, until }),
        Some(until) => Err(MigrateError::Refused(format!(
            "--from-id {from} is above every id copied so far (up to {until}): run `csmh-proxy migrate` without \
             --from-id, which continues from there"
        ))),
        None => Err(MigrateError::Refused(
            "nothing has been copied yet, so there is nothing to copy again: run `csmh-proxy migrate` without \
             --from-id"
                .to_owned(),
        )),
    }
}

/// Refuses to copy from a retired old table.
fn refuse_retired(site: &Site) -> Result<(), MigrateError> {
    if !site.flags.read_only_from_csmhe {
        return Ok(());
    }
    Err(MigrateError::Refused(format!(
        "the old table {} is retired (READ_ONLY_FROM_CSMHE is on): learner state deleted since then is gone from \
         the extended table only, and copying the old table now would bring it back. To go back to the old \
         table, the copy goes the other way: `csmh-proxy migrate --back` (docs/migration.md, \"Going back\")",
        site.old
    )))
}

/// Refuses options that make no sense.
fn check_args(args: &MigrateArgs) -> Result<(), MigrateError> {
    if !(args.chunk_seconds > 0.0 && args.chunk_seconds.is_finite()) {
        return Err(MigrateError::Refused("--chunk-seconds must be a positive number of seconds".to_owned()));
    }
    if args.max_rows_per_second == Some(0) {
        return Err(MigrateError::Refused("--max-rows-per-second must be at least 1".to_owned()));
    }
    Ok(())
}

/// Passes until one finds nothing new: the first copies up to the old table's largest id when the run starts,
/// each later one (catch-up) the rows written meanwhile. Returns the number of passes that copied something.
async fn copy_passes(
    servers: &mut Servers,
    site: &Site,
    args: &MigrateArgs,
    run: &mut Run<'_>,
) -> Result<u32, MigrateError> {
    let sizer = chunk_sizer(args);
    let steered = Steered {
        direction: Direction::Forward,
        note: run.recopy.map(Recopy::detail),
        figures: run.progress.figures().clone(),
        notice: run.progress.notice(),
    };
    let mut throttle = Throttle::new(site, args, &sizer, site.connect_csmh().await?, steered).await?;
    let mut second_writer = match site.topology {
        Topology::OneServer => None,
        Topology::TwoServers => Some(site.connect_csmh().await?),
    };
    let escaping = escaping_of(&mut servers.csmh, topology::Server::Csmh).await?;
    let builder = InsertBuilder::new(&site.extended, escaping, OnDuplicate::Overwrite);
    let statement_bytes = statement_bytes(&mut servers.csmh, topology::Server::Csmh).await?;
    let server_side = ServerSide::forward(site);
    let mut passes = 0;
    loop {
        reconnect_if_lost(&mut servers.edxapp, site).await?;
        let target = pass_target(old_largest_id(&mut servers.edxapp, site).await?, run.recopy);
        if passes == 0 {
            // The first time round: the run now knows where it starts and where it goes (`on-start` runs).
            run.progress.begin(target, run.rows_done);
        }
        if target <= run.last_id {
            return Ok(passes);
        }
        passes += 1;
        if passes > 1 {
            info!(from = run.last_id, to = target, "catch-up pass: rows written to the old table since the last pass");
        }
        run.target_id = target;
        run.progress.set_target(target);
        let recopy = check_ids_free(&mut servers.csmh, site, run.recopy, run.last_id, target).await?;
        let removal = match recopy {
            Some(recopy) => Some(Removal { recopy, floor: old_smallest_id(&mut servers.edxapp, site).await? }),
            None => None,
        };
        match &mut second_writer {
            None => server_side.pass(&mut servers.csmh, run, &mut throttle, removal).await?,
            Some(second) => {
                let streamed = Streamed { builder: &builder, statement_bytes, removal };
                streamed.pass(&mut servers.edxapp, [&mut servers.csmh, second], run, &mut throttle).await?;
            }
        }
    }
}

/// The last id of a pass, given the old table's largest id now: that id, and during a re-copy (`--from-id`) at
/// least the highest id copied before it. So a re-copy also goes over copies above the old table's largest id,
/// of rows deleted from the old table since (edxapp's cascade delete reaching the old table alone), and removes
/// them.
fn pass_target(old_largest: u64, recopy: Option<Recopy>) -> u64 {
    old_largest.max(recopy.map_or(0, |recopy| recopy.until))
}

/// Refuses a pass up to `target`, from `last_id`, if the extended table has rows above what an earlier run copied
/// (`recopy`): those ids are its own. Returns the part of `recopy` the pass re-copies.
async fn check_ids_free(
    csmh: &mut Conn,
    site: &Site,
    recopy: Option<Recopy>,
    last_id: u64,
    target: u64,
) -> Result<Option<Recopy>, MigrateError> {
    let recopy = recopy.filter(|recopy| recopy.until > last_id);
    let first_new = recopy.map_or(last_id, |recopy| recopy.until);
    if first_new < target && extended_rows_between(csmh, site, first_new, target).await? {
        return Err(ids_taken(site, first_new, target));
    }
    Ok(recopy)
}

/// The refusal of a pass whose ids the extended table already has, outside a `--from-id` re-copy: the old
/// table's ids have reached rows the extended table got from elsewhere (its starting id offset used up), and
/// copying would overwrite them.
fn ids_taken(site: &Site, last_id: u64, target: u64) -> MigrateError {
    MigrateError::Refused(format!(
        "the extended table {} already has rows with ids between {} and {target}, which old rows still to copy \
         also have: the old table's ids have reached the extended table's own (its starting id offset is used \
         up, or something else wrote those ids), and copying would overwrite those rows, so nothing was copied \
         past id {last_id}. Look at them (`csmh-proxy status`, `csmh-proxy verify`): rows written there by \
         anything but `migrate` must be moved out of the way before the copy can go on",
        site.extended,
        last_id + 1,
    ))
}

/// Sets up both sessions for the copy: chunks read committed data without locking the old table's rows (where
/// the binary log allows it), and a reader may wait on a slow writer without the server timing it out.
async fn prepare_sessions(servers: &mut Servers, site: &Site) -> Result<(), MigrateError> {
    prepare_edxapp(&mut servers.edxapp).await?;
    if site.topology == Topology::OneServer {
        read_committed_unless_statement_binlog(&mut servers.csmh, topology::Server::Csmh).await?;
    }
    Ok(())
}

/// Sets the session of `conn` (on `server`, which runs the one-server copy's `INSERT ... SELECT`) to READ
/// COMMITTED, so that a chunk reads committed data without locking the rows it reads; unless the binary log is
/// statement-based, which forbids it: then REPEATABLE READ is kept, and the rows read are share-locked for the
/// chunk's duration.
async fn read_committed_unless_statement_binlog(conn: &mut Conn, server: topology::Server) -> Result<(), MigrateError> {
    let (log_bin, format): (Option<String>, Option<String>) = conn
        .query_first("SELECT @@log_bin, @@binlog_format")
        .await
        .map_err(|source| query_error(server, "read the binary log's settings", source))?
        .unwrap_or((None, None));
    let statement_based = log_bin.as_deref() == Some("1") && format.as_deref() == Some("STATEMENT");
    if statement_based {
        return Ok(());
    }
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await
        .map_err(|source| query_error(server, "set up the session", source))
}

/// Sets up the session that reads the old table: a reader may wait on a slow writer without the server timing it
/// out.
async fn prepare_edxapp(edxapp: &mut Conn) -> Result<(), MigrateError> {
    edxapp
        .query_drop("SET SESSION net_write_timeout = 600")
        .await
        .map_err(|source| edxapp_error("set up the session", source))
}

/// Makes sure no other run of `migrate` copies into the same table at the same time: a named lock on the `csmh`
/// server, held by the copy's connection (released when it closes, even if the process is killed).
async fn take_lock(csmh: &mut Conn, site: &Site) -> Result<(), MigrateError> {
    let got: Option<Option<u8>> = csmh
        .exec_first("SELECT GET_LOCK(?, ?)", (lock_name(site), LOCK_WAIT_SECS))
        .await
        .map_err(|source| csmh_error("take the migration lock", source))?;
    if got.flatten() == Some(1) { Ok(()) } else { Err(another_run(site)) }
}

/// The name of the lock [`take_lock`] takes (names are at most 64 characters).
fn lock_name(site: &Site) -> String {
    format!("csmh-proxy migrate {}", site.extended).chars().take(64).collect()
}

/// Refuses, without taking it, while another run of `migrate` (either way) holds the lock: for the dry runs.
async fn refuse_while_running(csmh: &mut Conn, site: &Site) -> Result<(), MigrateError> {
    let holder: Option<Option<u64>> = csmh
        .exec_first("SELECT IS_USED_LOCK(?)", (lock_name(site),))
        .await
        .map_err(|source| csmh_error("look for the migration lock", source))?;
    if holder.flatten().is_some() { Err(another_run(site)) } else { Ok(()) }
}

/// The refusal while another run of `migrate` holds the lock.
fn another_run(site: &Site) -> MigrateError {
    MigrateError::Refused(format!(
        "another `csmh-proxy migrate` is copying into {}: wait for it to end (or stop it) and run again",
        site.extended
    ))
}

/// Refuses to copy into an extended table that does not exist.
async fn check_extended_table(csmh: &mut Conn, site: &Site) -> Result<(), MigrateError> {
    let sql = format!("SELECT 1 FROM {} LIMIT 0", site.extended.quoted());
    match csmh.query_drop(sql).await {
        Ok(()) => Ok(()),
        Err(mysql_async::Error::Server(error)) if error.code == ER_NO_SUCH_TABLE || error.code == ER_BAD_DB => {
            Err(MigrateError::Refused(format!(
                "the extended table {} does not exist: run `csmh-proxy init` first",
                site.extended
            )))
        }
        Err(source) => Err(csmh_error("look for the extended table", source)),
    }
}

/// Opens `edxapp` again if the server closed it: on one server it sits idle through a whole pass, which on a large
/// table outlasts the server's `wait_timeout`.
async fn reconnect_if_lost(edxapp: &mut Conn, site: &Site) -> Result<(), MigrateError> {
    if edxapp.ping().await.is_err() {
        info!("the connection to [backends.edxapp] was closed while idle; opening another");
        *edxapp = site.connect_edxapp().await?;
        prepare_edxapp(edxapp).await?;
    }
    Ok(())
}

/// The old table's smallest id; `None` when it is empty.
async fn old_smallest_id(edxapp: &mut Conn, site: &Site) -> Result<Option<u64>, MigrateError> {
    let sql = format!("SELECT MIN(`id`) FROM {}", site.old.quoted());
    let smallest: Option<Option<u64>> =
        edxapp.query_first(sql).await.map_err(|source| edxapp_error("read the old table's smallest id", source))?;
    Ok(smallest.flatten())
}

/// The old table's largest id (0 when empty).
async fn old_largest_id(edxapp: &mut Conn, site: &Site) -> Result<u64, MigrateError> {
    let sql = format!("SELECT COALESCE(MAX(`id`), 0) FROM {}", site.old.quoted());
    let largest: Option<u64> =
        edxapp.query_first(sql).await.map_err(|source| edxapp_error("read the old table's largest id", source))?;
    Ok(largest.unwrap_or(0))
}

/// Whether the extended table has any row with an id in `(from, to]`: then the pass re-copies rows copied
/// before, and each chunk also removes the extended rows the old table no longer has.
async fn extended_rows_between(csmh: &mut Conn, site: &Site, from: u64, to: u64) -> Result<bool, MigrateError> {
    let sql = format!("SELECT 1 FROM {} WHERE `id` > ? AND `id` <= ? LIMIT 1", site.extended.quoted());
    let found: Option<u8> =
        csmh.exec_first(sql, (from, to)).await.map_err(|source| csmh_error("look for copied rows", source))?;
    Ok(found.is_some())
}

/// How the session of `conn`, on `server` (the one the copy writes to), reads string literals: its `sql_mode`
/// with `NO_BACKSLASH_ESCAPES` or without.
async fn escaping_of(conn: &mut Conn, server: topology::Server) -> Result<Escaping, MigrateError> {
    let mode: Option<String> = conn
        .query_first("SELECT @@SESSION.sql_mode")
        .await
        .map_err(|source| query_error(server, "read the sql_mode", source))?;
    Ok(Escaping::of_sql_mode(mode.unwrap_or_default().as_bytes()))
}

/// How large an INSERT may grow: [`STATEMENT_BYTES`], or half the `max_allowed_packet` of `server` (which `conn`
/// reaches, the one the copy writes to) if smaller.
async fn statement_bytes(conn: &mut Conn, server: topology::Server) -> Result<usize, MigrateError> {
    let max: Option<u64> = conn
        .query_first("SELECT @@max_allowed_packet")
        .await
        .map_err(|source| query_error(server, "read max_allowed_packet", source))?;
    let half = usize::try_from(max.unwrap_or(0) / 2).unwrap_or(usize::MAX);
    Ok(STATEMENT_BYTES.min(half.max(64 << 10)))
}
