//! `--metrics-address`: a running `migrate` or `verify` serves `GET /metrics` in the Prometheus text format, so
//! that a dashboard shows the migration beside the proxy. The series are read from the run's [`Figures`] at each
//! scrape (a collector, not values copied into a registry); their names are documented in docs/migration.md,
//! "Metrics".

use std::fmt;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, prometheus_text};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Command;
use crate::migrate::MigrateError;
use crate::migrate::copy::throttle::Reason;
use crate::migrate::figures::{Figures, Snapshot};

/// The prefix of every series: `csmh_migrate_...` and `csmh_verify_...`, beside the proxy's `csmh_proxy_...`.
const PREFIX: &str = "csmh";

/// The metrics endpoint of a run, serving in the background until [`MetricsServer::stop`].
#[derive(Debug)]
pub struct MetricsServer {
    task: JoinHandle<std::io::Result<()>>,
    shutdown: CancellationToken,
}

impl MetricsServer {
    /// Serves `GET /metrics` of `command`'s `figures` on `address` (`host:port`; port 0 picks a free port).
    pub async fn start(address: &str, command: Command, figures: Figures) -> Result<MetricsServer, MigrateError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| MigrateError::Metrics { address: address.to_owned(), source })?;
        let shown = listener.local_addr().map_or_else(|_| address.to_owned(), |local| local.to_string());
        info!("serving the {} metrics at http://{shown}/metrics", command.name());
        let routes = Router::new().route("/metrics", get(endpoint)).with_state(Arc::new(registry(command, figures)));
        let shutdown = CancellationToken::new();
        let stopped = shutdown.clone().cancelled_owned();
        let task = tokio::spawn(async move { axum::serve(listener, routes).with_graceful_shutdown(stopped).await });
        Ok(MetricsServer { task, shutdown })
    }

    /// Stops serving: the run is over, and its series go away with it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => warn!(%error, "the metrics endpoint failed"),
            Err(error) => warn!(%error, "the metrics endpoint's task"),
        }
    }
}

/// `GET /metrics`.
async fn endpoint(State(registry): State<Arc<Registry>>) -> Response {
    let mut text = String::new();
    match prometheus_text::encode(&mut text, &registry) {
        Ok(()) => ([(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot render the metrics\n").into_response(),
    }
}

/// The registry of `command`'s series, read from `figures` at each scrape.
fn registry(command: Command, figures: Figures) -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(RunCollector { command, figures }));
    registry
}

/// `command`'s series as `GET /metrics` renders them now, in the Prometheus text format.
pub fn render(command: Command, figures: &Figures) -> Result<String, fmt::Error> {
    let mut text = String::new();
    prometheus_text::encode(&mut text, &registry(command, figures.clone()))?;
    Ok(text)
}

/// Reads a run's figures into its series at each scrape.
#[derive(Debug)]
struct RunCollector {
    command: Command,
    figures: Figures,
}

impl Collector for RunCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let now = self.figures.snapshot();
        match self.command {
            Command::Migrate => self.encode_migrate(&now, &mut encoder),
            Command::Verify => encode_verify(&now, &mut encoder),
        }
    }
}

impl RunCollector {
    /// `migrate`'s series.
    fn encode_migrate(&self, now: &Snapshot, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        counter(encoder, "migrate_rows_copied", "Rows this run of migrate has copied", now.rows)?;
        gauge(
            encoder,
            "migrate_rows_copied_all_runs",
            "Rows copied since the migration started, across runs (the checkpoint's rows_done)",
            now.rows_all_runs(),
        )?;
        gauge(
            encoder,
            "migrate_last_id",
            "Every old row with an id up to this one is in the extended table",
            now.last_id,
        )?;
        gauge(
            encoder,
            "migrate_target_id",
            "The current pass's target: the old table's largest id when the pass started",
            now.target_id,
        )?;
        let rate = ConstGauge::new(self.figures.rows_per_second());
        let help = "Rows per second this run has copied, on average since it started (pauses included)";
        rate.encode(encoder.encode_descriptor("migrate_rows_per_second", help, None, rate.metric_type())?)?;
        let paused = now.waiting.as_ref().map(|waiting| waiting.key);
        let help =
            "1 while the copy waits (csmh-proxy pause, --pause-file, --run-between, --max-load, replication lag)";
        gauge(encoder, "migrate_paused", help, u64::from(paused.is_some()))?;
        let help = "1 for the reason the copy waits for, 0 for the others: pause (csmh-proxy pause), pause_file, \
                    run_between, max_load, replication_lag";
        let by_reason = ConstGauge::<i64>::new(0);
        let mut family = encoder.encode_descriptor("migrate_pause_reason", help, None, by_reason.metric_type())?;
        for key in Reason::KEYS {
            let labels = [("reason", key)];
            ConstGauge::new(i64::from(paused == Some(key))).encode(family.encode_family(&labels)?)?;
        }
        if let Some(lag) = now.replication_lag {
            let help = "How many seconds the csmh server, a replica, is behind its source, as last read (absent \
                        when it is no replica or the lag is unknown)";
            gauge(encoder, "migrate_replication_lag_seconds", help, lag)?;
        }
        Ok(())
    }
}

/// `verify`'s series.
fn encode_verify(now: &Snapshot, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
    counter(encoder, "verify_rows_compared", "Old rows this run of verify has compared", now.rows)?;
    gauge(encoder, "verify_last_id", "Every id up to this one has been compared", now.last_id)?;
    gauge(
        encoder,
        "verify_target_id",
        "Where the comparison ends: the old table's largest id, or a larger copy",
        now.target_id,
    )?;
    gauge(encoder, "verify_differences", "Differing id ranges found so far", now.differences)
}

/// One counter without labels.
fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), fmt::Error> {
    let counter = ConstCounter::new(value);
    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
}

/// One gauge without labels.
fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), fmt::Error> {
    let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::figures::Waiting;

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn a_paused_copy_shows_its_figures_and_one_reason() {
        let figures = Figures::new();
        figures.begin(0, 100, 20_100, 40);
        figures.advance(600, 500);
        figures.set_waiting(Some(Waiting { key: "max_load", reason: "Threads_running = 57".to_owned() }));
        let text = render(Command::Migrate, &figures).expect("rendered");
        let lines = lines(&text);
        for line in [
            "# TYPE csmh_migrate_rows_copied_total counter",
            "csmh_migrate_rows_copied_total 500",
            "csmh_migrate_rows_copied_all_runs 540",
            "csmh_migrate_last_id 600",
            "csmh_migrate_target_id 20100",
            "csmh_migrate_paused 1",
            "csmh_migrate_pause_reason{reason=\"max_load\"} 1",
            "csmh_migrate_pause_reason{reason=\"pause\"} 0",
            "csmh_migrate_pause_reason{reason=\"replication_lag\"} 0",
        ] {
            assert!(lines.contains(&line), "no line `{line}` in\n{text}");
        }
        assert!(lines.iter().any(|line| line.starts_with("csmh_migrate_rows_per_second ")), "{text}");
        assert!(!text.contains("replication_lag_seconds"), "no lag known: no series\n{text}");
        assert!(!text.contains("csmh_verify"), "{text}");

        figures.set_waiting(None);
        figures.set_replication_lag(Some(3));
        let text = render(Command::Migrate, &figures).expect("rendered");
        let lines = super::tests::lines(&text);
        for line in [
            "csmh_migrate_paused 0",
            "csmh_migrate_pause_reason{reason=\"max_load\"} 0",
            "csmh_migrate_replication_lag_seconds 3",
        ] {
            assert!(lines.contains(&line), "no line `{line}` in\n{text}");
        }
    }

    #[test]
    fn verify_shows_what_it_compared_and_found() {
        let figures = Figures::new();
        figures.begin(9, 9, 5_000, 0);
        figures.reach(2_500, 2_000);
        figures.set_differences(2);
        let text = render(Command::Verify, &figures).expect("rendered");
        let lines = lines(&text);
        for line in [
            "csmh_verify_rows_compared_total 2000",
            "csmh_verify_last_id 2500",
            "csmh_verify_target_id 5000",
            "csmh_verify_differences 2",
        ] {
            assert!(lines.contains(&line), "no line `{line}` in\n{text}");
        }
        assert!(!text.contains("csmh_migrate"), "{text}");
    }
}
