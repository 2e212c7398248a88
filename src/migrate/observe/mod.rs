//! Watching a running `migrate` or `verify` from outside: Prometheus metrics on `--metrics-address` ([`metrics`])
//! and commands run on start, every few minutes, on success and on failure from `--hooks-path` ([`hooks`]). Both
//! read the run's [`Figures`], which the run updates where it reports its progress. docs/migration.md, "Metrics"
//! and "Hooks", lists the series and the variables.

pub mod hooks;
pub mod metrics;

use std::path::PathBuf;
use std::time::Duration;

use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use self::hooks::{Hook, Hooks};
use self::metrics::MetricsServer;
use super::MigrateError;
use super::figures::Figures;
use crate::config::Config;

/// Options of `migrate` and `verify` for watching them run.
#[derive(Debug, Clone, PartialEq, clap::Args)]
#[command(next_help_heading = "Metrics and hooks")]
pub struct ObserveArgs {
    /// Serve Prometheus metrics of the run at http://HOST:PORT/metrics while it runs (off by default; port 0 picks
    /// a free port, logged).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_address: Option<String>,
    /// Run the executables of this directory named on-start, on-progress, on-success and on-failure (and
    /// on-success-*, ...: several per event) when the run starts, every --hook-progress-minutes, and when it ends,
    /// with its figures in CSMH_* environment variables; a missing one is skipped.
    #[arg(long, value_name = "DIR")]
    pub hooks_path: Option<PathBuf>,
    /// Run on-progress every this many minutes while the run goes on (fractions allowed: 0.5 is 30 s).
    #[arg(long, default_value_t = 10.0, value_name = "MINUTES")]
    pub hook_progress_minutes: f64,
    /// Kill a hook (with every process it started) still running after this many seconds.
    #[arg(long, default_value_t = 60, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub hook_timeout: u64,
}

impl Default for ObserveArgs {
    fn default() -> ObserveArgs {
        ObserveArgs { metrics_address: None, hooks_path: None, hook_progress_minutes: 10.0, hook_timeout: 60 }
    }
}

/// The command being watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `csmh-proxy migrate`.
    Migrate,
    /// `csmh-proxy verify`.
    Verify,
}

impl Command {
    /// Its name, as `CSMH_COMMAND` gives it.
    pub fn name(self) -> &'static str {
        match self {
            Command::Migrate => "migrate",
            Command::Verify => "verify",
        }
    }
}

/// How a run ended, for the last hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It did what it was for: `on-success`.
    Succeeded,
    /// It did not: `on-failure`.
    Failed {
        /// The command's exit status (1 refused or found differences, 2 could not run).
        exit_status: i32,
        /// What it printed about it.
        error: String,
    },
}

impl Outcome {
    /// The outcome of a run that ended with `error`.
    pub fn of_error(error: &MigrateError) -> Outcome {
        Outcome::Failed { exit_status: error.exit_status(), error: error.to_string() }
    }
}

/// The metrics endpoint and the hooks of a run, from its start to its end.
#[derive(Debug)]
pub struct Observers {
    figures: Figures,
    metrics: Option<MetricsServer>,
    hooks: Option<Hooks>,
    schedule: Option<(CancellationToken, JoinHandle<()>)>,
}

impl Observers {
    /// Starts watching a run of `command` for the site `config` describes, as `args` ask: binds the metrics
    /// endpoint, and runs `on-start` once the run has begun and `on-progress` every `--hook-progress-minutes`.
    pub async fn start(command: Command, args: &ObserveArgs, config: &Config) -> Result<Observers, MigrateError> {
        let minutes = args.hook_progress_minutes;
        if !(minutes > 0.0 && minutes.is_finite()) {
            return Err(MigrateError::Refused(
                "--hook-progress-minutes must be a positive number of minutes".to_owned(),
            ));
        }
        let timeout = Duration::from_secs(args.hook_timeout);
        let hooks = args.hooks_path.as_deref().map(|dir| Hooks::new(dir, timeout, command, config)).transpose()?;
        let figures = Figures::new();
        let metrics = match &args.metrics_address {
            Some(address) => Some(MetricsServer::start(address, command, figures.clone()).await?),
            None => None,
        };
        let schedule = hooks.clone().map(|hooks| {
            let stop = CancellationToken::new();
            let every = Duration::from_secs_f64(minutes * 60.0);
            let task = tokio::spawn(schedule(hooks, figures.clone(), every, stop.clone()));
            (stop, task)
        });
        Ok(Observers { figures, metrics, hooks, schedule })
    }

    /// The run's figures, for the run to keep up to date.
    pub fn figures(&self) -> &Figures {
        &self.figures
    }

    /// The run ended with `outcome`: runs `on-success` or `on-failure`, waits for the hooks still running (each
    /// killed at its timeout), and stops the metrics endpoint.
    pub async fn finish(self, outcome: Outcome) {
        if let Some((stop, task)) = self.schedule {
            stop.cancel();
            let _ = task.await;
        }
        if let Some(hooks) = &self.hooks {
            let hook = if outcome == Outcome::Succeeded { Hook::Success } else { Hook::Failure };
            hooks.run(hook, &self.figures, Some(&outcome));
            hooks.wait().await;
        }
        if let Some(metrics) = self.metrics {
            metrics.stop().await;
        }
    }
}

/// Runs `on-start` once the run has begun (not if it is over first), then `on-progress` every `every`, until
/// `stop`. An `on-progress` still running when the next is due is left to finish, and that one is skipped.
async fn schedule(hooks: Hooks, figures: Figures, every: Duration, stop: CancellationToken) {
    tokio::select! {
        biased;
        () = figures.begun() => {}
        () = stop.cancelled() => return,
    }
    hooks.run(Hook::Start, &figures, None);
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut progress: Vec<AbortHandle> = Vec::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if progress.iter().any(|handle| !handle.is_finished()) {
            warn!("on-progress is still running since the last time; skipped this time");
            continue;
        }
        progress = hooks.run(Hook::Progress, &figures, None);
    }
}
