//! The clients of the `connect` bench: the workloads, and what runs them, `connect.py` (mysqlclient), `steps.py`
//! (PyMySQL, step by step) and sysbench with `connect.lua`, each reading back what it measured.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, ensure};
use csmh_proxy::sandbox::Account;

use super::support::processes::{OutputOk, sysbench};
use super::support::report::threads;
use super::{DATABASE, Options, Target};

/// The pause after each paced mysqlclient connection.
pub const PAUSE_US: u32 = 1000;
/// The connections of a run whose median shows its cold start.
pub const FIRST: usize = 10;
/// The timed mysqlclient loop.
const CONNECT_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/connect/connect.py");
/// The timed PyMySQL loop, step by step.
const STEPS_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/connect/steps.py");
/// The steps `steps.py` times, in its order.
pub const STEPS: [&str; 6] = ["connect", "greeting", "login", "setup", "statement", "close"];
/// sysbench's script: a new connection per event.
const LUA_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/connect/connect.lua");

/// The workloads, in the order they run.
pub const WORKLOADS: [Workload; 5] = [
    Workload::Mysqlclient(Pacing::Pause),
    Workload::Mysqlclient(Pacing::Steady),
    Workload::Steps,
    Workload::Sysbench { threads: 1 },
    Workload::Sysbench { threads: 4 },
];

/// One way of opening connections.
#[derive(Clone, Copy)]
pub enum Workload {
    /// `connect.py`, one client.
    Mysqlclient(Pacing),
    /// `steps.py`, one client, [`PAUSE_US`] after each connection, half as many as the paced mysqlclient runs.
    Steps,
    /// sysbench with `connect.lua`.
    Sysbench { threads: u32 },
}

/// How the mysqlclient loop spaces its connections.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// [`PAUSE_US`] after each connection.
    Pause,
    /// On a fixed schedule of `--rate` a second.
    Steady,
}

impl Workload {
    /// `mysqlclient, 1 ms pause`, `mysqlclient, steady 200/s` (`rate`), `sysbench, 4 threads`.
    pub fn label(&self, rate: u32) -> String {
        match self {
            Workload::Mysqlclient(Pacing::Pause) => format!("mysqlclient, {} ms pause", PAUSE_US / 1000),
            Workload::Mysqlclient(Pacing::Steady) => format!("mysqlclient, steady {rate}/s"),
            Workload::Steps => format!("PyMySQL, {} ms pause", PAUSE_US / 1000),
            Workload::Sysbench { threads: n } => format!("sysbench, {}", threads(*n)),
        }
    }
}

/// What runs the clients: the Python of the mysqlclient environment, and the options.
pub struct Clients<'a> {
    pub python: PathBuf,
    pub options: &'a Options,
}

/// What one client run measured: its connections, their rate, and their latencies in microseconds.
#[derive(Clone, Copy, Default)]
pub struct ClientRun {
    pub connections: u64,
    pub per_second: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    /// The median of the first [`FIRST`] connections (mysqlclient only: sysbench gives a histogram).
    pub first: Option<f64>,
    /// The p50 of each of the [`STEPS`] (`steps.py` only).
    pub steps: Option<[f64; STEPS.len()]>,
}

impl Clients<'_> {
    /// Runs `workload` against `target` once.
    pub fn run(&self, workload: &Workload, target: &Target) -> anyhow::Result<ClientRun> {
        match *workload {
            Workload::Mysqlclient(Pacing::Pause) => {
                self.mysqlclient_paced(target.addr.port(), self.options.iterations, None, None)
            }
            Workload::Mysqlclient(Pacing::Steady) => {
                let rate = [format!("--rate={}", self.options.rate)];
                self.python(CONNECT_SCRIPT, target.addr.port(), self.options.iterations / 2, &rate)
            }
            Workload::Steps => {
                let pause = [format!("--pause-us={PAUSE_US}")];
                self.python(STEPS_SCRIPT, target.addr.port(), self.options.iterations / 2, &pause)
            }
            Workload::Sysbench { threads } => self.sysbench(target, threads, self.options.seconds),
        }
    }

    /// `connect.py` against 127.0.0.1:`port`: `iterations` connections with [`PAUSE_US`] after each, with TLS
    /// verified by the authority `ca` if there is one, each running `statement` (`SELECT 1` if none).
    pub fn mysqlclient_paced(
        &self,
        port: u16,
        iterations: usize,
        ca: Option<&Path>,
        statement: Option<&str>,
    ) -> anyhow::Result<ClientRun> {
        let mut options = vec![format!("--pause-us={PAUSE_US}")];
        options.extend(ca.map(|ca| format!("--ssl-ca={}", ca.display())));
        options.extend(statement.map(|statement| format!("--statement={statement}")));
        self.python(CONNECT_SCRIPT, port, iterations, &options)
    }

    /// `script` (`connect.py` or `steps.py`) against 127.0.0.1:`port`: `iterations` timed connections, with
    /// `options` (pacing, TLS).
    fn python(&self, script: &str, port: u16, iterations: usize, options: &[String]) -> anyhow::Result<ClientRun> {
        let account = Account::app();
        let output = Command::new(&self.python)
            .arg(script)
            .arg(format!("--port={port}"))
            .arg(format!("--user={}", account.user))
            .arg(format!("--password={}", account.password))
            .arg(format!("--database={DATABASE}"))
            .arg(format!("--iterations={}", iterations.max(1)))
            .args(options)
            .stdin(Stdio::null())
            .output_ok()?;
        let loop_run: LoopRun = serde_json::from_slice(&output.stdout).with_context(|| format!("{script}'s output"))?;
        Ok(loop_run.summary())
    }

    /// sysbench with `connect.lua` against `target`, at `threads` for `seconds`.
    fn sysbench(&self, target: &Target, threads: u32, seconds: u32) -> anyhow::Result<ClientRun> {
        let output = sysbench(LUA_SCRIPT, target.addr.port(), DATABASE)
            .arg(format!("--threads={threads}"))
            .arg(format!("--time={seconds}"))
            .args(["--events=0", "--report-interval=0", "--histogram=on", "run"])
            .output_ok()?;
        let text = String::from_utf8_lossy(&output.stdout);
        parse_sysbench(&text).with_context(|| format!("sysbench's output against {}:\n{text}", target.name()))
    }

    /// `Python <version>, mysqlclient <version> on MariaDB Connector/C <version>, PyMySQL <version>`.
    pub fn versions(&self) -> anyhow::Result<String> {
        let code = "import sys, importlib.metadata, MySQLdb; \
                    print('Python', sys.version.split()[0] + ', mysqlclient', \
                    importlib.metadata.version('mysqlclient'), 'on MariaDB Connector/C', \
                    MySQLdb.get_client_info() + ', PyMySQL', importlib.metadata.version('PyMySQL'))";
        let output = Command::new(&self.python).args(["-c", code]).stdin(Stdio::null()).output_ok()?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

/// What `connect.py` and `steps.py` print.
#[derive(serde::Deserialize)]
struct LoopRun {
    elapsed_ns: u64,
    latencies_ns: Vec<u64>,
    /// Each connection's [`STEPS`] (`steps.py` only).
    #[serde(default)]
    steps_ns: Vec<[u64; STEPS.len()]>,
}

impl LoopRun {
    fn summary(&self) -> ClientRun {
        let all = sorted_micros(self.latencies_ns.iter().copied());
        let first = sorted_micros(self.latencies_ns.iter().copied().take(FIRST));
        ClientRun {
            connections: all.len() as u64,
            per_second: all.len() as f64 / (self.elapsed_ns.max(1) as f64 / 1e9),
            p50: percentile(&all, 0.50),
            p95: percentile(&all, 0.95),
            p99: percentile(&all, 0.99),
            first: Some(percentile(&first, 0.50)),
            steps: (!self.steps_ns.is_empty()).then(|| self.step_p50s()),
        }
    }

    /// The p50 of each step, in microseconds.
    fn step_p50s(&self) -> [f64; STEPS.len()] {
        std::array::from_fn(|step| percentile(&sorted_micros(self.steps_ns.iter().map(|one| one[step])), 0.50))
    }
}

/// `ns` in microseconds, ascending.
fn sorted_micros(ns: impl Iterator<Item = u64>) -> Vec<f64> {
    let mut us: Vec<f64> = ns.map(|n| n as f64 / 1000.0).collect();
    us.sort_by(f64::total_cmp);
    us
}

/// The nearest-rank `q` percentile of `sorted` (ascending, not empty).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Reads a sysbench run's events (connections), their rate and latency percentiles (from `--histogram=on`, in
/// milliseconds, buckets about 2 % wide); a reconnect or an error fails the run.
fn parse_sysbench(output: &str) -> anyhow::Result<ClientRun> {
    let line = |label: &str| output.lines().map(str::trim).find_map(|line| line.strip_prefix(label));
    let count = |label: &str| -> anyhow::Result<u64> {
        let rest = line(label).with_context(|| format!("no `{label}`"))?;
        Ok(rest.split_whitespace().next().context("no count")?.parse()?)
    };
    ensure!(count("reconnects:")? == 0 && count("ignored errors:")? == 0, "sysbench reconnected or failed");
    let rest = line("transactions:").context("no `transactions:`")?;
    let per_second = rest.split('(').nth(1).and_then(|r| r.split_whitespace().next()).context("no rate")?.parse()?;
    let histogram: Vec<(f64, u64)> = output
        .lines()
        .skip_while(|line| !line.starts_with("Latency histogram"))
        .filter_map(|line| {
            let (value, bar) = line.split_once('|')?;
            Some((value.trim().parse::<f64>().ok()? * 1000.0, bar.split_whitespace().last()?.parse().ok()?))
        })
        .collect();
    let total: u64 = histogram.iter().map(|(_, n)| n).sum();
    ensure!(total > 0, "no latency histogram");
    let at = |q: f64| {
        let rank = (q * total as f64).ceil() as u64;
        let mut seen = 0;
        histogram.iter().find(|(_, n)| {
            seen += n;
            seen >= rank
        })
    };
    let at = |q| at(q).map_or(f64::NAN, |(value, _)| *value);
    Ok(ClientRun {
        connections: count("transactions:")?,
        per_second,
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
        first: None,
        steps: None,
    })
}
