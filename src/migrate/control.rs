//! Steering a running `migrate` from anywhere: `csmh-proxy pause`, `resume` and `throttle` write one control row
//! in the checkpoint table, on the `csmh` server, and a running `migrate` reads it before each chunk (at most once
//! a second). Whoever has the site's `proxy.toml` can steer a copy someone else started, on another machine or
//! pod, with no file to reach inside the copy's container.
//!
//! The row outlives the run: a `migrate` started while the row says paused waits, and its throttles replace the
//! command line's until `throttle --reset`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use mysql_async::Conn;

use super::checkpoint::{self, Checkpoint, Task};
use super::copy::load::LoadLimit;
use super::copy::window::Window;
use super::{MigrateError, Site};
use crate::config::Config;

/// The control row's `state` while the copy is paused.
const PAUSED: &str = "paused";
/// The control row's `state` otherwise.
const RUNNING: &str = "running";
/// The key of the pause's reason in the control row's `detail`.
const REASON: &str = "reason";

/// A limit that can also be lifted: `none` on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Limit<T> {
    /// No limit.
    None,
    /// This limit.
    At(T),
}

impl<T> Limit<T> {
    /// The limit, if any.
    pub fn into_option(self) -> Option<T> {
        match self {
            Limit::None => None,
            Limit::At(limit) => Some(limit),
        }
    }
}

impl<T: FromStr> FromStr for Limit<T> {
    type Err = T::Err;

    fn from_str(text: &str) -> Result<Self, T::Err> {
        if text.trim().eq_ignore_ascii_case("none") { Ok(Limit::None) } else { text.parse().map(Limit::At) }
    }
}

impl<T: fmt::Display> fmt::Display for Limit<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::None => f.write_str("none"),
            Limit::At(limit) => limit.fmt(f),
        }
    }
}

/// Throttles set by `csmh-proxy throttle`, replacing `migrate`'s command-line values; `None`: not set.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct Overrides {
    /// Aim for chunks of about this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub chunk_seconds: Option<f64>,
    /// Copy at most this many rows per second (`none`: no limit).
    #[arg(long, value_name = "ROWS|none")]
    pub max_rows_per_second: Option<Limit<u64>>,
    /// Pause while the `csmh` server, if it is a replica, is more than this many seconds behind its source.
    #[arg(long, value_name = "SECONDS")]
    pub max_replication_lag: Option<u64>,
    /// Pause while a global status variable of either server is above its bound (`Threads_running=50`; several
    /// separated by commas; `none`: no limit).
    #[arg(long, value_name = "VARIABLE=N,...|none")]
    pub max_load: Option<Limit<LoadLimit>>,
    /// Copy only between these hours, in the named time zone or the process's own (`22:00-06:00`,
    /// `22:00-06:00 Europe/Paris`; `none`: at any hour).
    #[arg(long, value_name = "HH:MM-HH:MM [ZONE]|none")]
    pub run_between: Option<Limit<Window>>,
}

/// The keys of [`Overrides`] in the control row, as `csmh-proxy throttle` names its options (with `_`).
const KEYS: [&str; 5] = ["chunk_seconds", "max_rows_per_second", "max_replication_lag", "max_load", "run_between"];

impl Overrides {
    /// Each set override as its key and the text its option takes.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let values = [
            self.chunk_seconds.map(|value| value.to_string()),
            self.max_rows_per_second.as_ref().map(ToString::to_string),
            self.max_replication_lag.map(|value| value.to_string()),
            self.max_load.as_ref().map(ToString::to_string),
            self.run_between.as_ref().map(ToString::to_string),
        ];
        KEYS.into_iter().zip(values).filter_map(|(key, value)| Some((key, value?))).collect()
    }

    /// Sets `key` from the text its option takes.
    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        fn parse<T: FromStr>(value: &str) -> Result<Option<T>, String>
        where
            T::Err: fmt::Display,
        {
            value.parse().map(Some).map_err(|error: T::Err| error.to_string())
        }
        match key {
            "chunk_seconds" => self.chunk_seconds = parse(value)?,
            "max_rows_per_second" => self.max_rows_per_second = parse(value)?,
            "max_replication_lag" => self.max_replication_lag = parse(value)?,
            "max_load" => self.max_load = parse(value)?,
            "run_between" => self.run_between = parse(value)?,
            _ => return Err(format!("unknown setting `{key}`")),
        }
        Ok(())
    }

    /// Sets every override `newer` sets.
    fn update(&mut self, newer: Overrides) {
        let Overrides { chunk_seconds, max_rows_per_second, max_replication_lag, max_load, run_between } = newer;
        self.chunk_seconds = chunk_seconds.or(self.chunk_seconds);
        self.max_rows_per_second = max_rows_per_second.or(self.max_rows_per_second.take());
        self.max_replication_lag = max_replication_lag.or(self.max_replication_lag);
        self.max_load = max_load.or(self.max_load.take());
        self.run_between = run_between.or(self.run_between.take());
    }

    /// Refuses values `migrate` would refuse.
    fn check(&self) -> Result<(), MigrateError> {
        if self.chunk_seconds.is_some_and(|seconds| !(seconds > 0.0 && seconds.is_finite())) {
            return Err(MigrateError::Refused("--chunk-seconds must be a positive number of seconds".to_owned()));
        }
        if self.max_rows_per_second == Some(Limit::At(0)) {
            return Err(MigrateError::Refused(
                "--max-rows-per-second must be at least 1 (`none` lifts the limit; `csmh-proxy pause` stops the copy)"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Overrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries = self.entries();
        if entries.is_empty() {
            return f.write_str("none (migrate's command line is in force)");
        }
        let entries: Vec<String> = entries.into_iter().map(|(key, value)| format!("{key} = {value}")).collect();
        f.write_str(&entries.join(", "))
    }
}

/// A pause asked for by `csmh-proxy pause`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pause {
    /// Why, as the operator gave it (may be empty).
    pub reason: String,
    /// When (the `csmh` server's clock).
    pub since: String,
}

impl fmt::Display for Pause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "paused by `csmh-proxy pause` at {}", self.since)?;
        if !self.reason.is_empty() {
            write!(f, ": {}", self.reason)?;
        }
        Ok(())
    }
}

/// What the control row says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Control {
    /// Set while the copy must not go on.
    pub pause: Option<Pause>,
    /// Throttles replacing `migrate`'s command line.
    pub overrides: Overrides,
}

impl Control {
    /// The control the row `checkpoint` records. A value that no longer parses (the row was edited by hand) is
    /// skipped, and named in the second part.
    fn from_checkpoint(checkpoint: &Checkpoint) -> (Control, Vec<String>) {
        let mut control = Control::default();
        let mut skipped = Vec::new();
        let mut reason = String::new();
        let table: toml::Table = checkpoint.detail.as_deref().unwrap_or("").parse().unwrap_or_default();
        for (key, value) in table {
            let text = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
            if key == REASON {
                reason = text;
            } else if let Err(why) = control.overrides.set(&key, &text) {
                skipped.push(format!("{key} = {text}: {why}"));
            }
        }
        if checkpoint.state == PAUSED {
            control.pause = Some(Pause { reason, since: checkpoint.started_at.clone() });
        }
        (control, skipped)
    }

    /// The control row recording this control; `since` is kept unless the pause is new.
    fn to_checkpoint(&self) -> Checkpoint {
        let mut table = BTreeMap::new();
        for (key, value) in self.overrides.entries() {
            table.insert(key.to_owned(), value);
        }
        if let Some(pause) = &self.pause {
            table.insert(REASON.to_owned(), pause.reason.clone());
        }
        Checkpoint {
            state: if self.pause.is_some() { PAUSED } else { RUNNING }.to_owned(),
            last_id: None,
            target_id: None,
            rows_done: 0,
            detail: Some(toml::to_string(&table).unwrap_or_default()),
            started_at: self.pause.as_ref().map(|pause| pause.since.clone()).unwrap_or_default(),
            updated_at: String::new(),
        }
    }
}

impl fmt::Display for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pause {
            Some(pause) => write!(f, "{pause}")?,
            None => f.write_str("not paused")?,
        }
        write!(f, "; throttle overrides: {}", self.overrides)
    }
}

/// Reads the control row on `csmh` (the default control when there is none, or no checkpoint table yet); the
/// second part names the settings that could not be read back.
pub async fn load(csmh: &mut Conn, site: &Site) -> Result<(Control, Vec<String>), MigrateError> {
    Ok(match checkpoint::load(csmh, site, Task::Control).await? {
        Some(row) => Control::from_checkpoint(&row),
        None => (Control::default(), Vec::new()),
    })
}

/// What `pause`, `resume` and `throttle` print: the control now in force.
#[derive(Debug, Clone)]
pub struct ControlReport {
    control: Control,
    skipped: Vec<String>,
}

impl fmt::Display for ControlReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.control.pause {
            Some(pause) => writeln!(f, "migrate: {pause}")?,
            None => writeln!(f, "migrate: not paused")?,
        }
        writeln!(f, "throttle overrides: {}", self.control.overrides)?;
        for skipped in &self.skipped {
            writeln!(f, "ignored (not a valid setting): {skipped}")?;
        }
        writeln!(f, "a running `csmh-proxy migrate` applies this before its next chunk, within a second while it waits")
    }
}

/// Options of `csmh-proxy pause`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PauseArgs {
    /// Why, shown by `migrate`'s progress and by `status` (for whoever looks next).
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// Options of `csmh-proxy throttle`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ThrottleArgs {
    /// The throttles to set; the others keep their value.
    #[command(flatten)]
    pub overrides: Overrides,
    /// Remove every override first, so that `migrate`'s command line is in force again.
    #[arg(long)]
    pub reset: bool,
}

/// `csmh-proxy pause`: a running `migrate` stops before its next chunk, and one started later waits, until
/// `csmh-proxy resume`.
pub async fn pause(config: &Config, args: &PauseArgs) -> Result<ControlReport, MigrateError> {
    change(config, |control, now| {
        let since = control.pause.take().map_or(now, |pause| pause.since);
        control.pause = Some(Pause { reason: args.reason.clone(), since });
    })
    .await
}

/// `csmh-proxy resume`: lifts a pause.
pub async fn resume(config: &Config) -> Result<ControlReport, MigrateError> {
    change(config, |control, _| control.pause = None).await
}

/// `csmh-proxy throttle`: sets (or with `--reset` clears) the throttle overrides; with no option, shows them.
pub async fn throttle(config: &Config, args: &ThrottleArgs) -> Result<ControlReport, MigrateError> {
    args.overrides.check()?;
    change(config, |control, _| {
        if args.reset {
            control.overrides = Overrides::default();
        }
        control.overrides.update(args.overrides.clone());
    })
    .await
}

/// Reads the control row, applies `edit` (given the server's time) and writes the row back.
async fn change(config: &Config, edit: impl FnOnce(&mut Control, String)) -> Result<ControlReport, MigrateError> {
    let site = Site::new(config)?;
    let mut csmh = site.connect_csmh().await?;
    checkpoint::ensure(&mut csmh, &site).await?;
    let (mut control, skipped) = load(&mut csmh, &site).await?;
    let now = checkpoint::server_now(&mut csmh).await?;
    edit(&mut control, now);
    checkpoint::save(&mut csmh, &site, Task::Control, &control.to_checkpoint()).await?;
    let (control, _) = load(&mut csmh, &site).await?;
    Ok(ControlReport { control, skipped })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_survives_its_row() {
        let control = Control {
            pause: Some(Pause { reason: "exam week \"final\"".to_owned(), since: "2026-12-06 05:00:00".to_owned() }),
            overrides: Overrides {
                chunk_seconds: Some(0.25),
                max_rows_per_second: Some(Limit::None),
                max_replication_lag: Some(3),
                max_load: Some("Threads_running=40".parse().expect("a load limit")),
                run_between: Some("22:00-06:00 UTC".parse().expect("a window")),
            },
        };
        let (read, skipped) = Control::from_checkpoint(&control.to_checkpoint());
        assert_eq!(read, control);
        assert!(skipped.is_empty());
        let unpaused = Control { pause: None, overrides: Overrides::default() };
        assert_eq!(Control::from_checkpoint(&unpaused.to_checkpoint()).0, unpaused);
    }

    #[test]
    fn a_setting_that_no_longer_parses_is_skipped_and_named() {
        let row = Checkpoint {
            state: RUNNING.to_owned(),
            last_id: None,
            target_id: None,
            rows_done: 0,
            detail: Some("max_load = \"lots\"\nmax_replication_lag = \"5\"\n".to_owned()),
            started_at: String::new(),
            updated_at: String::new(),
        };
        let (control, skipped) = Control::from_checkpoint(&row);
        assert_eq!(control.overrides.max_replication_lag, Some(5));
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(skipped[0].starts_with("max_load = lots"), "{skipped:?}");
    }

    #[test]
    fn throttle_keeps_what_it_does_not_set_and_refuses_what_migrate_would() {
        let mut overrides = Overrides { max_replication_lag: Some(3), ..Overrides::default() };
        overrides.update(Overrides { chunk_seconds: Some(1.0), ..Overrides::default() });
        assert_eq!(
            overrides,
            Overrides { chunk_seconds: Some(1.0), max_replication_lag: Some(3), ..Overrides::default() }
        );
        assert!(Overrides { chunk_seconds: Some(0.0), ..Overrides::default() }.check().is_err());
        assert!(Overrides { max_rows_per_second: Some(Limit::At(0)), ..Overrides::default() }.check().is_err());
        assert!(Overrides { max_rows_per_second: Some(Limit::None), ..Overrides::default() }.check().is_ok());
    }
}
