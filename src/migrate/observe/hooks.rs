//! `--hooks-path`: commands a running `migrate` or `verify` runs when it starts, every few minutes, and when it
//! succeeds or fails, with its figures in their environment, for chat or paging (gh-ost's `--hooks-path` is the
//! model). The variables are documented in docs/migration.md, "Hooks".
//!
//! A hook runs beside the run, never in its way: it is spawned in a process group of its own, its output is
//! logged, and it is killed with its group once it outlasts its timeout. A hook that fails, hangs or cannot be
//! started is logged and changes nothing else. Its environment is the command's own less the variables that hold
//! the configuration's passwords (`password_env`), plus the `CSMH_*` figures.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command as Process;
use tokio::task::{AbortHandle, JoinHandle};
use tracing::{info, warn};

use super::{Command, Outcome};
use crate::config::Config;
use crate::migrate::MigrateError;
use crate::migrate::figures::Figures;

/// Lines of a hook's standard output, and as many of its standard error, that are logged; the rest is not.
const MAX_LINES: usize = 100;
/// Characters of a line of a hook's output that are logged.
const MAX_LINE: usize = 1_000;
/// How long a hook's output is still read once it has exited (a process it left behind may hold the pipe).
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// The run knows where it starts and where it goes.
    Start,
    /// Every `--hook-progress-minutes` while it runs.
    Progress,
    /// It ended well (`migrate` copied every row; `verify` found the tables equal).
    Success,
    /// It ended otherwise: refused, failed, or (`verify`) found differences.
    Failure,
}

impl Hook {
    /// The executable's name in the hooks directory, and `CSMH_HOOK`.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Start => "on-start",
            Hook::Progress => "on-progress",
            Hook::Success => "on-success",
            Hook::Failure => "on-failure",
        }
    }
}

/// What every hook of a run is told besides the figures: the command, the tables and the servers.
#[derive(Debug)]
struct Context {
    command: Command,
    old_table: String,
    extended_table: String,
    edxapp_address: String,
    csmh_address: String,
    /// Variables of the command's environment that hold passwords: hooks never see them.
    secrets: Vec<String>,
}

/// The hooks directory of a run, and the hooks it has started.
#[derive(Debug, Clone)]
pub struct Hooks {
    dir: PathBuf,
    timeout: Duration,
    context: Arc<Context>,
    started: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Hooks {
    /// The hooks in `dir` of `command` run for the site `config` describes, each killed after `timeout`; refused
    /// when `dir` is not a directory.
    pub fn new(dir: &Path, timeout: Duration, command: Command, config: &Config) -> Result<Hooks, MigrateError> {
        if !dir.is_dir() {
            return Err(MigrateError::Refused(format!(
                "--hooks-path {}: no such directory (it holds the executables on-start, on-progress, on-success \
                 and on-failure, each optional)",
                dir.display()
            )));
        }
        let backends = [&config.backends.edxapp, &config.backends.csmh];
        let context = Context {
            command,
            old_table: config.history.old_table.clone(),
            extended_table: config.history.extended_table.clone(),
            edxapp_address: config.backends.edxapp.address.clone(),
            csmh_address: config.backends.csmh.address.clone(),
            secrets: backends.iter().filter_map(|backend| backend.password_env.clone()).collect(),
        };
        Ok(Hooks { dir: dir.to_owned(), timeout, context: Arc::new(context), started: Arc::default() })
    }

    /// Starts the executables of `hook` (none if there is none) with `figures`, and `outcome` once the run is
    /// over; returns at once, with a handle on each.
    pub fn run(&self, hook: Hook, figures: &Figures, outcome: Option<&Outcome>) -> Vec<AbortHandle> {
        let files = self.files(hook);
        if files.is_empty() {
            return Vec::new();
        }
        let environment = Arc::new(environment(hook, &self.context, figures, outcome));
        let mut started = self.started.lock().unwrap_or_else(PoisonError::into_inner);
        started.retain(|handle| !handle.is_finished());
        files
            .into_iter()
            .map(|file| {
                let run = run_one(hook, file, Arc::clone(&environment), Arc::clone(&self.context), self.timeout);
                let handle = tokio::spawn(run);
                let abort = handle.abort_handle();
                started.push(handle);
                abort
            })
            .collect()
    }

    /// Waits for every hook started to end (each is killed at its timeout, so this is bounded).
    pub async fn wait(&self) {
        let started = std::mem::take(&mut *self.started.lock().unwrap_or_else(PoisonError::into_inner));
        for handle in started {
            let _ = handle.await;
        }
    }

    /// The executables of `hook`: the file named as the hook, and those named after it with a `-` and anything
    /// (`on-failure-pager`, `on-failure-chat`), in name order. Files that are not executable are skipped with a
    /// warning; the directory is read each time, so hooks may be added while the run goes on.
    fn files(&self, hook: Hook) -> Vec<PathBuf> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) => {
                warn!(dir = %self.dir.display(), %error, "cannot read the hooks directory; no hook runs");
                return Vec::new();
            }
        };
        let prefix = format!("{}-", hook.name());
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|entry| {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                name == hook.name() || name.starts_with(&prefix)
            })
            .map(|entry| entry.path())
            .filter(|path| path.is_file())
            .filter(|path| {
                let executable = is_executable(path);
                if !executable {
                    warn!(file = %path.display(), "a hook that is not executable is skipped (chmod +x)");
                }
                executable
            })
            .collect();
        files.sort();
        files
    }
}

/// Whether anyone may execute the file at `path`.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|metadata| metadata.permissions().mode() & 0o111 != 0)
}

/// The `CSMH_*` variables of `hook`: the run's figures now, and its outcome once it is over. Every variable of
/// the command is set, empty when it does not apply or is not known.
fn environment(hook: Hook, context: &Context, figures: &Figures, outcome: Option<&Outcome>) -> Vec<(String, String)> {
    let now = figures.snapshot();
    let known = |value: u64| if now.begun { value.to_string() } else { String::new() };
    let mut variables = vec![
        ("CSMH_HOOK", hook.name().to_owned()),
        ("CSMH_COMMAND", context.command.name().to_owned()),
        ("CSMH_OLD_TABLE", context.old_table.clone()),
        ("CSMH_EXTENDED_TABLE", context.extended_table.clone()),
        ("CSMH_EDXAPP_ADDRESS", context.edxapp_address.clone()),
        ("CSMH_CSMH_ADDRESS", context.csmh_address.clone()),
        ("CSMH_LAST_ID", known(now.last_id)),
        ("CSMH_TARGET_ID", known(now.target_id)),
        ("CSMH_PERCENT", if now.begun { format!("{:.1}", now.percent()) } else { String::new() }),
        ("CSMH_ROWS_PER_SECOND", format!("{:.0}", figures.rows_per_second())),
        ("CSMH_ELAPSED_SECONDS", format!("{:.0}", figures.elapsed_seconds())),
    ];
    match context.command {
        Command::Migrate => variables.extend([
            ("CSMH_ROWS_COPIED", now.rows.to_string()),
            ("CSMH_ROWS_COPIED_ALL_RUNS", known(now.rows_all_runs())),
            ("CSMH_PAUSED", now.waiting.as_ref().map_or("", |waiting| waiting.key).to_owned()),
            ("CSMH_PAUSED_REASON", now.waiting.map(|waiting| waiting.reason).unwrap_or_default()),
            ("CSMH_REPLICATION_LAG_SECONDS", now.replication_lag.map(|lag| lag.to_string()).unwrap_or_default()),
        ]),
        Command::Verify => variables
            .extend([("CSMH_ROWS_COMPARED", now.rows.to_string()), ("CSMH_DIFFERENCES", now.differences.to_string())]),
    }
    let (status, error) = match outcome {
        None => (String::new(), String::new()),
        Some(Outcome::Succeeded) => ("0".to_owned(), String::new()),
        Some(Outcome::Failed { exit_status, error }) => (exit_status.to_string(), error.clone()),
    };
    variables.extend([("CSMH_EXIT_STATUS", status), ("CSMH_ERROR", error)]);
    variables.into_iter().map(|(name, value)| (name.to_owned(), value)).collect()
}

/// Runs the executable `file` of `hook` with `environment`, logs its output and how it ended, and kills it (with
/// every process of its group) once it outlasts `timeout`.
async fn run_one(
    hook: Hook,
    file: PathBuf,
    environment: Arc<Vec<(String, String)>>,
    context: Arc<Context>,
    timeout: Duration,
) {
    let shown = file.display().to_string();
    let mut process = Process::new(&file);
    for secret in &context.secrets {
        process.env_remove(secret);
    }
    process
        .envs(environment.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match process.spawn() {
        Ok(child) => child,
        Err(error) => {
            warn!(hook = hook.name(), file = %shown, %error, "cannot start the hook; the run goes on");
            return;
        }
    };
    let group = child.id();
    let readers: Vec<JoinHandle<()>> = [
        child.stdout.take().map(|out| tokio::spawn(log_lines(out, hook, shown.clone()))),
        child.stderr.take().map(|err| tokio::spawn(log_lines(err, hook, shown.clone()))),
    ]
    .into_iter()
    .flatten()
    .collect();
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => info!(hook = hook.name(), file = %shown, "hook ran"),
        Ok(Ok(status)) => warn!(hook = hook.name(), file = %shown, %status, "hook failed; the run goes on"),
        Ok(Err(error)) => warn!(hook = hook.name(), file = %shown, %error, "cannot wait for the hook"),
        Err(_) => {
            kill_group(group);
            let _ = tokio::time::timeout(OUTPUT_GRACE, child.wait()).await;
            warn!(
                hook = hook.name(),
                file = %shown,
                timeout_seconds = timeout.as_secs(),
                "hook still running at its timeout (--hook-timeout): killed; the run goes on"
            );
        }
    }
    for mut reader in readers {
        if tokio::time::timeout(OUTPUT_GRACE, &mut reader).await.is_err() {
            reader.abort();
        }
    }
}

/// Kills the process group `group` (a hook and whatever it started), if it has one.
fn kill_group(group: Option<u32>) {
    let Some(group) = group.and_then(|group| libc::pid_t::try_from(group).ok()) else { return };
    // SAFETY: kill(2) with a negative pid signals that process group; it touches no memory of ours.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
}

/// Logs the lines `output` of the hook's `file` gives, up to [`MAX_LINES`] of at most [`MAX_LINE`] characters.
async fn log_lines(output: impl AsyncRead + Unpin, hook: Hook, file: String) {
    let mut lines = BufReader::new(output).lines();
    let mut logged = 0;
    while let Ok(Some(line)) = lines.next_line().await {
        if logged == MAX_LINES {
            info!(hook = hook.name(), file = %file, "more output of the hook is not logged");
        }
        if logged < MAX_LINES {
            let line: String = line.chars().take(MAX_LINE).collect();
            info!(hook = hook.name(), file = %file, "{line}");
        }
        logged += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::figures::Waiting;

    fn context(command: Command) -> Context {
        Context {
            command,
            old_table: "edxapp.courseware_studentmodulehistory".to_owned(),
            extended_table: "edxapp_csmh.coursewarehistoryextended_studentmodulehistoryextended".to_owned(),
            edxapp_address: "mysql:3306".to_owned(),
            csmh_address: "mysql:3306".to_owned(),
            secrets: Vec::new(),
        }
    }

    fn variable<'a>(environment: &'a [(String, String)], name: &str) -> &'a str {
        let found = environment.iter().find(|(key, _)| key == name);
        found.map(|(_, value)| value.as_str()).unwrap_or_else(|| panic!("no {name} in {environment:?}"))
    }

    #[test]
    fn a_migrate_hook_has_its_figures_and_the_failure() {
        let figures = Figures::new();
        let failed = Outcome::Failed { exit_status: 1, error: "refused".to_owned() };
        let before = environment(Hook::Failure, &context(Command::Migrate), &figures, Some(&failed));
        assert_eq!(variable(&before, "CSMH_LAST_ID"), "", "not known before the run begins");
        assert_eq!(variable(&before, "CSMH_ERROR"), "refused");
        assert_eq!(variable(&before, "CSMH_EXIT_STATUS"), "1");

        figures.begin(0, 1_000, 3_000, 500);
        figures.advance(1_600, 400);
        figures.set_waiting(Some(Waiting { key: "pause_file", reason: "the pause file exists".to_owned() }));
        let now = environment(Hook::Progress, &context(Command::Migrate), &figures, None);
        for (name, value) in [
            ("CSMH_HOOK", "on-progress"),
            ("CSMH_COMMAND", "migrate"),
            ("CSMH_LAST_ID", "1600"),
            ("CSMH_TARGET_ID", "3000"),
            ("CSMH_PERCENT", "53.3"),
            ("CSMH_ROWS_COPIED", "400"),
            ("CSMH_ROWS_COPIED_ALL_RUNS", "900"),
            ("CSMH_PAUSED", "pause_file"),
            ("CSMH_PAUSED_REASON", "the pause file exists"),
            ("CSMH_REPLICATION_LAG_SECONDS", ""),
            ("CSMH_EXIT_STATUS", ""),
            ("CSMH_ERROR", ""),
            ("CSMH_OLD_TABLE", "edxapp.courseware_studentmodulehistory"),
        ] {
            assert_eq!(variable(&now, name), value, "{name}");
        }
        assert!(!now.iter().any(|(name, _)| name == "CSMH_DIFFERENCES"), "verify's only");
    }

    #[test]
    fn a_verify_hook_has_the_rows_compared_and_the_differences() {
        let figures = Figures::new();
        figures.begin(0, 0, 100, 0);
        figures.reach(100, 90);
        figures.set_differences(3);
        let now = environment(Hook::Success, &context(Command::Verify), &figures, Some(&Outcome::Succeeded));
        for (name, value) in [
            ("CSMH_COMMAND", "verify"),
            ("CSMH_ROWS_COMPARED", "90"),
            ("CSMH_DIFFERENCES", "3"),
            ("CSMH_PERCENT", "100.0"),
            ("CSMH_EXIT_STATUS", "0"),
        ] {
            assert_eq!(variable(&now, name), value, "{name}");
        }
        assert!(!now.iter().any(|(name, _)| name == "CSMH_ROWS_COPIED"), "migrate's only");
    }
}
