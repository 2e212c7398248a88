//! What the operator sees while `migrate` runs: a progress bar with rows, rate and ETA on a terminal, and a log
//! line every few seconds otherwise (a service's journal, a redirected run).
//!
//! Progress is measured in ids: how far the copied position is from the pass's target id. With gaps in the ids
//! that is a steadier measure of what is left than a row count, which would need a slow `COUNT(*)`.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;
use tracing::info;

use crate::migrate::figures::Figures;

/// How often a log line is written when standard error is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Reports the copy's progress, from the run's [`Figures`] (which the metrics and the hooks read too).
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    last_logged: Instant,
    first_id: u64,
    figures: Figures,
}

impl Progress {
    /// Progress from `first_id` (the position the run starts at), drawn as a bar when standard error is a
    /// terminal, kept in `figures`.
    pub fn new(first_id: u64, figures: Figures) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            let template = "{bar:40} {percent:>3}%  {msg}  ETA {eta}";
            bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
            bar
        });
        Progress { bar, last_logged: Instant::now(), first_id, figures }
    }

    /// The run knows where it goes: the first pass's `target_id`, with `rows_before` rows copied by earlier runs.
    pub fn begin(&mut self, target_id: u64, rows_before: u64) {
        self.figures.begin(0, self.first_id, target_id, rows_before);
        self.set_target(target_id);
    }

    /// A new pass goes on to `target_id`.
    pub fn set_target(&mut self, target_id: u64) {
        self.figures.set_target(target_id);
        if let Some(bar) = &self.bar {
            bar.set_length(target_id.saturating_sub(self.first_id));
        }
    }

    /// Every row up to `last_id` is copied; `rows` more rows were copied since the last call.
    pub fn copied(&mut self, last_id: u64, rows: u64) {
        self.figures.advance(last_id, rows);
        let now = self.figures.snapshot();
        let rate = self.figures.rows_per_second();
        match &self.bar {
            Some(bar) => {
                bar.set_position(last_id.saturating_sub(self.first_id));
                bar.set_message(format!("{} rows, {rate:.0} rows/s, id {last_id} of {}", now.rows, now.target_id));
            }
            None if self.last_logged.elapsed() >= LOG_EVERY => {
                self.last_logged = Instant::now();
                let left = now.target_id.saturating_sub(last_id);
                info!(
                    rows = now.rows,
                    rows_per_second = rate as u64,
                    last_id,
                    target_id = now.target_id,
                    ids_left = left,
                    "copying"
                );
            }
            None => {}
        }
    }

    /// The run's figures.
    pub fn figures(&self) -> &Figures {
        &self.figures
    }

    /// A handle that shows on the bar why the copy waits, for the throttle that decides it.
    pub fn notice(&self) -> Notice {
        Notice { bar: self.bar.clone() }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Shows on the progress bar, if there is one, why the copy waits (log lines say it otherwise).
#[derive(Debug, Clone)]
pub struct Notice {
    bar: Option<ProgressBar>,
}

impl Notice {
    /// The copy waits for `reason`; the next chunk's progress replaces it.
    pub fn waiting(&self, reason: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("paused: {reason}"));
        }
    }
}
