//! When `migrate` may copy its next chunk, and how fast: the throttles in force (the command line, replaced by
//! `csmh-proxy throttle`), and every reason to wait — `csmh-proxy pause`, a pause file, hours outside
//! `--run-between`, a server above `--max-load`, a replica behind by more than `--max-replication-lag`.
//!
//! The copy asks [`Throttle::before_chunk`] before each chunk, so it never waits inside a transaction or with a
//! result set open. While it waits, the reason shows in the progress line, in the log and in the checkpoint (so
//! `csmh-proxy status` shows it), and the copy's connections are pinged so that a night-long wait does not outlast
//! the server's `wait_timeout`.

use std::fmt;
use std::mem::discriminant;
use std::path::PathBuf;
use std::time::Duration;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tokio::time::Instant;
use tracing::{info, warn};

use super::lag::{Lag, replication_lag};
use super::load::{LoadLimit, Overload};
use super::pace::{ChunkSizer, RateLimit};
use super::progress::Notice;
use super::run::{csmh_error, edxapp_error, state_and_detail};
use super::window::Window;
use super::{Direction, MigrateArgs};
use crate::migrate::checkpoint;
use crate::migrate::control::{self, Control, Pause};
use crate::migrate::figures::{Figures, Waiting};
use crate::migrate::{MigrateError, Site};
use crate::topology::{self, Topology};

/// How often the control row, the load and the lag are read, at most; and how often a waiting copy looks again.
const POLL: Duration = Duration::from_secs(1);
/// How often a waiting copy pings its connections, and logs that it still waits.
pub const KEEP_ALIVE: Duration = Duration::from_secs(60);
/// How often a waiting copy rewrites its checkpoint (so `status` shows it alive and why it waits).
const MARK_EVERY: Duration = Duration::from_secs(10);

/// The throttles in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Throttles {
    /// Aim for chunks of about this many seconds.
    pub chunk_seconds: f64,
    /// At most this many rows per second.
    pub max_rows_per_second: Option<u64>,
    /// Wait while the server the copy writes to lags its source by more than this many seconds.
    pub max_replication_lag: u64,
    /// Wait while a server is busier than this.
    pub max_load: Option<LoadLimit>,
    /// Copy only in these hours.
    pub run_between: Option<Window>,
}

impl Throttles {
    /// The throttles of `migrate`'s command line.
    pub fn from_args(args: &MigrateArgs) -> Throttles {
        Throttles {
            chunk_seconds: args.chunk_seconds,
            max_rows_per_second: args.max_rows_per_second,
            max_replication_lag: args.max_replication_lag,
            max_load: args.max_load.clone(),
            run_between: args.run_between.clone(),
        }
    }

    /// These throttles, with those `control` sets in their place.
    pub fn with(&self, control: &control::Overrides) -> Throttles {
        Throttles {
            chunk_seconds: control.chunk_seconds.unwrap_or(self.chunk_seconds),
            max_rows_per_second: control
                .max_rows_per_second
                .clone()
                .map_or(self.max_rows_per_second, |limit| limit.into_option()),
            max_replication_lag: control.max_replication_lag.unwrap_or(self.max_replication_lag),
            max_load: control.max_load.clone().map_or_else(|| self.max_load.clone(), |limit| limit.into_option()),
            run_between: control
                .run_between
                .clone()
                .map_or_else(|| self.run_between.clone(), |limit| limit.into_option()),
        }
    }
}

impl fmt::Display for Throttles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let none = || "none".to_owned();
        write!(
            f,
            "chunks of {} s, max {} rows/s, max replication lag {} s, max load {}, run between {}",
            self.chunk_seconds,
            self.max_rows_per_second.map_or_else(none, |max| max.to_string()),
            self.max_replication_lag,
            self.max_load.as_ref().map_or_else(none, ToString::to_string),
            self.run_between.as_ref().map_or_else(|| "any hours".to_owned(), ToString::to_string),
        )
    }
}

/// Why the copy waits.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// `csmh-proxy pause`.
    Paused(Pause),
    /// `--pause-file` exists; with the first line written in it, if any.
    PauseFile(PathBuf, String),
    /// Now is outside `--run-between`.
    OutsideWindow(Window),
    /// A server is above `--max-load`.
    Load {
        /// Which server.
        server: &'static str,
        /// What is above its bound.
        over: Overload,
    },
    /// The server the copy writes to lags its source by more than `--max-replication-lag`.
    Lag {
        /// Which server.
        server: &'static str,
        /// Its lag.
        seconds: u64,
        /// The limit.
        limit: u64,
    },
}

impl Reason {
    /// Every kind of reason by its key, as the metrics label it (`csmh_migrate_pause_reason{reason="..."}`) and
    /// the hooks' `CSMH_PAUSED` names it: a small fixed set.
    pub const KEYS: [&'static str; 5] = ["pause", "pause_file", "run_between", "max_load", "replication_lag"];

    /// The kind of reason, one of [`Reason::KEYS`].
    pub fn key(&self) -> &'static str {
        match self {
            Reason::Paused(_) => "pause",
            Reason::PauseFile(..) => "pause_file",
            Reason::OutsideWindow(_) => "run_between",
            Reason::Load { .. } => "max_load",
            Reason::Lag { .. } => "replication_lag",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Paused(pause) => write!(f, "{pause} (`csmh-proxy resume` goes on)"),
            Reason::PauseFile(path, said) => {
                write!(f, "the pause file {} exists (remove it to go on)", path.display())?;
                if !said.is_empty() {
                    write!(f, ": {said}")?;
                }
                Ok(())
            }
            Reason::OutsideWindow(window) => write!(f, "outside --run-between {window}"),
            Reason::Load { server, over } => {
                write!(f, "{} = {} on {server}, above --max-load {}", over.variable, over.value, over.limit)
            }
            Reason::Lag { server, seconds, limit } => {
                write!(f, "replication lag {seconds} s on {server}, above --max-replication-lag {limit}")
            }
        }
    }
}

/// The first line of the file at `path` (of its first 200 bytes), trimmed; empty if it cannot be read.
fn first_line(path: &std::path::Path) -> String {
    use std::io::Read;
    let mut start = Vec::new();
    let read = std::fs::File::open(path).and_then(|file| file.take(200).read_to_end(&mut start));
    let text = if read.is_ok() { String::from_utf8_lossy(&start).into_owned() } else { String::new() };
    text.lines().next().unwrap_or("").trim().to_owned()
}

/// Whose copy a throttle steers, and where it says why the copy waits.
#[derive(Debug, Clone)]
pub struct Steered {
    /// Which way the copy goes: the checkpoint it marks while it waits, and the server it writes to, whose
    /// replication lag is watched.
    pub direction: Direction,
    /// The first line of that checkpoint's detail (a re-copy's, say), kept while the copy waits.
    pub note: Option<String>,
    /// Where the copy stands, and why it waits, for whoever writes the checkpoint, the metrics and the hooks.
    pub figures: Figures,
    /// The progress bar, which shows why the copy waits.
    pub notice: Notice,
}

/// Decides, before each chunk, whether the copy may go on, and how fast; see the module's doc.
pub struct Throttle<'a> {
    site: &'a Site,
    base: Throttles,
    settings: Throttles,
    sizer: &'a ChunkSizer,
    rate: RateLimit,
    pause_file: Option<PathBuf>,
    /// A connection to the `csmh` server for the control row, its load and its lag, and the checkpoint's state
    /// while the copy waits.
    csmh: Conn,
    /// A connection to the `edxapp` server when it is another server and its load (or, copying back, its lag)
    /// is watched.
    edxapp: Option<Conn>,
    control: Control,
    control_read: Option<Instant>,
    probed: Option<Instant>,
    lag_watched: bool,
    unknown_warned: bool,
    steered: Steered,
}

/// Where a wait stands.
struct Wait {
    reason: Reason,
    since: Instant,
    marked: Instant,
    pinged: Instant,
}

impl<'a> Throttle<'a> {
    /// The throttle of a run of `site` with the command line `args`, sizing chunks with `sizer`, waiting on its
    /// own connection `csmh`, and telling why it waits as `steered` says (the checkpoint, the screen, the metrics
    /// and the hooks). The control row is read at once, so a paused migration says so before anything is copied.
    pub async fn new(
        site: &'a Site,
        args: &MigrateArgs,
        sizer: &'a ChunkSizer,
        csmh: Conn,
        steered: Steered,
    ) -> Result<Throttle<'a>, MigrateError> {
        let base = Throttles::from_args(args);
        sizer.set_rate_cap(args.max_rows_per_second);
        let mut throttle = Throttle {
            site,
            settings: base.clone(),
            base,
            sizer,
            rate: RateLimit::new(args.max_rows_per_second),
            pause_file: args.pause_file.clone(),
            csmh,
            edxapp: None,
            control: Control::default(),
            control_read: None,
            probed: None,
            lag_watched: true,
            unknown_warned: false,
            steered,
        };
        throttle.read_control().await?;
        info!(throttles = %throttle.settings, "copy throttles");
        Ok(throttle)
    }

    /// The chunk size.
    pub fn sizer(&self) -> &'a ChunkSizer {
        self.sizer
    }

    /// Counts `rows` copied, for the rows-per-second limit (the wait it calls for comes before the next chunk).
    pub fn copied(&mut self, rows: u64) {
        self.rate.copied(rows);
    }

    /// Returns once the next chunk may be copied, pinging `idle` (the caller's connection to `backend`) while it
    /// waits: first for as long as the copy is ahead of its rows-per-second limit, then while a reason holds it.
    pub async fn before_chunk(&mut self, idle: &mut Conn, backend: &'static str) -> Result<(), MigrateError> {
        if let Some(ahead) = self.rate.ahead() {
            tokio::time::sleep(ahead).await;
        }
        let mut wait: Option<Wait> = None;
        loop {
            let reason = self.reason(wait.is_some()).await?;
            match (reason, &mut wait) {
                (None, None) => return Ok(()),
                (None, Some(ended)) => {
                    info!(waited_seconds = ended.since.elapsed().as_secs(), "copying again");
                    self.steered.figures.set_waiting(None);
                    self.rate.restart();
                    return Ok(());
                }
                (Some(reason), None) => {
                    info!(%reason, "pausing the copy");
                    let now = Instant::now();
                    wait = Some(Wait { reason, since: now, marked: now, pinged: now });
                    self.show(wait.as_ref()).await?;
                }
                (Some(reason), Some(going)) => {
                    let changed = discriminant(&reason) != discriminant(&going.reason);
                    if changed {
                        info!(%reason, "the copy goes on waiting, for another reason");
                    }
                    going.reason = reason;
                    if changed || going.marked.elapsed() >= MARK_EVERY {
                        going.marked = Instant::now();
                        self.show(Some(going)).await?;
                    }
                    if going.pinged.elapsed() >= KEEP_ALIVE {
                        going.pinged = Instant::now();
                        info!(reason = %going.reason, waited_seconds = going.since.elapsed().as_secs(), "still paused");
                        idle.ping().await.map_err(|source| MigrateError::Query {
                            backend,
                            what: "keep the connection open".to_owned(),
                            source,
                        })?;
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Tells the operator why the copy waits: on screen and in the checkpoint.
    async fn show(&mut self, wait: Option<&Wait>) -> Result<(), MigrateError> {
        let Some(wait) = wait else { return Ok(()) };
        let reason = wait.reason.to_string();
        self.steered.notice.waiting(&reason);
        self.steered.figures.set_waiting(Some(Waiting { key: wait.reason.key(), reason: reason.clone() }));
        let (state, detail) = state_and_detail(super::RUNNING, self.steered.note.clone(), Some(&reason));
        let task = self.steered.direction.task();
        checkpoint::mark(&mut self.csmh, self.site, task, state, detail.as_deref()).await
    }

    /// The first reason to wait now, if any. The load and lag are read at most once a [`POLL`] unless `waiting`.
    async fn reason(&mut self, waiting: bool) -> Result<Option<Reason>, MigrateError> {
        self.read_control().await?;
        if let Some(pause) = &self.control.pause {
            return Ok(Some(Reason::Paused(pause.clone())));
        }
        if let Some(path) = self.pause_file.as_ref().filter(|path| path.exists()) {
            return Ok(Some(Reason::PauseFile(path.clone(), first_line(path))));
        }
        if let Some(window) = self.settings.run_between.as_ref().filter(|window| !window.is_open()) {
            return Ok(Some(Reason::OutsideWindow(window.clone())));
        }
        if !waiting && self.probed.is_some_and(|at| at.elapsed() < POLL) {
            return Ok(None);
        }
        self.probed = Some(Instant::now());
        if let Some(reason) = self.overload().await? {
            return Ok(Some(reason));
        }
        self.lag().await
    }

    /// Reads the control row, at most once a [`POLL`], and applies the throttles it sets.
    async fn read_control(&mut self) -> Result<(), MigrateError> {
        if self.control_read.is_some_and(|at| at.elapsed() < POLL) {
            return Ok(());
        }
        self.control_read = Some(Instant::now());
        let (control, skipped) = control::load(&mut self.csmh, self.site).await?;
        if control == self.control {
            return Ok(());
        }
        for skipped in skipped {
            warn!(setting = %skipped, "the control row has a setting that is not valid; it is ignored");
        }
        let settings = self.base.with(&control.overrides);
        if settings != self.settings {
            info!(throttles = %settings, "copy throttles changed");
            self.sizer.set_target(Duration::from_secs_f64(settings.chunk_seconds));
            if settings.max_rows_per_second != self.rate.max_per_second() {
                self.rate.set_max(settings.max_rows_per_second);
                self.sizer.set_rate_cap(settings.max_rows_per_second);
            }
            if settings.max_replication_lag != self.settings.max_replication_lag {
                self.lag_watched = true;
            }
            self.unknown_warned = false;
            self.settings = settings;
        }
        self.control = control;
        Ok(())
    }

    /// The first server above `--max-load`, if any.
    async fn overload(&mut self) -> Result<Option<Reason>, MigrateError> {
        let Some(limit) = self.settings.max_load.clone() else { return Ok(None) };
        let one_server = self.site.topology == Topology::OneServer;
        let csmh_name = if one_server { "the server" } else { "[backends.csmh]" };
        let check = limit.check(&mut self.csmh).await.map_err(|source| csmh_error("read the server's load", source))?;
        let mut unknown = check.unknown;
        if let Some(over) = check.over {
            return Ok(Some(Reason::Load { server: csmh_name, over }));
        }
        if !one_server {
            let check = self.edxapp_load(&limit).await?;
            unknown.extend(check.unknown);
            if let Some(over) = check.over {
                return Ok(Some(Reason::Load { server: "[backends.edxapp]", over }));
            }
        }
        if !unknown.is_empty() && !self.unknown_warned {
            self.unknown_warned = true;
            warn!(variables = ?unknown, "--max-load names status variables the server does not have; they are not watched");
        }
        Ok(None)
    }

    /// `limit` on the `edxapp` server, on a connection opened at first need and opened again if it was lost.
    async fn edxapp_load(&mut self, limit: &LoadLimit) -> Result<super::load::LoadCheck, MigrateError> {
        if let Some(conn) = &mut self.edxapp
            && let Ok(check) = limit.check(conn).await
        {
            return Ok(check);
        }
        let conn = self.edxapp.insert(self.site.connect_edxapp().await?);
        limit.check(conn).await.map_err(|source| edxapp_error("read the server's load", source))
    }

    /// Whether the server the copy writes to lags more than `--max-replication-lag`. A server that is not a
    /// replica, or does not let this account ask, is not asked again until the limit changes.
    async fn lag(&mut self) -> Result<Option<Reason>, MigrateError> {
        if !self.lag_watched {
            return Ok(None);
        }
        // On one server, the `csmh` connection reaches the server the copy writes to either way.
        let server = self.steered.direction.destination();
        let conn = match server {
            topology::Server::Edxapp if self.site.topology == Topology::TwoServers => {
                let conn = match self.edxapp.take() {
                    Some(conn) => conn,
                    None => self.site.connect_edxapp().await?,
                };
                self.edxapp.insert(conn)
            }
            _ => &mut self.csmh,
        };
        let server = match server {
            topology::Server::Edxapp => "[backends.edxapp]",
            topology::Server::Csmh => "[backends.csmh]",
        };
        let lag = replication_lag(conn).await;
        self.steered.figures.set_replication_lag(match lag {
            Lag::Seconds(seconds) => Some(seconds),
            Lag::NotAReplica | Lag::Unknown => None,
        });
        match lag {
            Lag::NotAReplica => {
                self.lag_watched = false;
                Ok(None)
            }
            Lag::Seconds(seconds) if seconds > self.settings.max_replication_lag => {
                Ok(Some(Reason::Lag { server, seconds, limit: self.settings.max_replication_lag }))
            }
            Lag::Seconds(_) | Lag::Unknown => Ok(None),
        }
    }
}
