//! Issue 15's `connect` benchmark: what a new connection costs through the proxy, as edxapp opens one for every
//! web request (Django with mysqlclient: connect, greeting, login, a few statements, quit), side by side with a
//! direct connection to MariaDB and with HAProxy in `mode tcp`, with the proxy's preconnect pool off and on.
//!
//! ```sh
//! cargo bench --bench connect                          # 5 rounds, about 4 minutes (5½ with the pool-off proxy)
//! cargo bench --bench connect -- --rounds 3 --iterations 1000 --seconds 2 --no-write
//! ```
//!
//! What runs, all on 127.0.0.1: one throw-away MariaDB server from the sandbox code ([`MariaDb::start`], its
//! settings, no TLS); HAProxy in TCP mode; and `csmh-proxy serve` (the binary cargo builds beside this bench)
//! once per pool setting, every flag off: "pool on" is the default configuration (`[backends.edxapp.preconnect]
//! max` defaults to 4), "pool off" appends `max = 0` ([`POOL_OFF`]). The targets, in this order: direct, HAProxy,
//! proxy pool off (only once the configuration has the table: [`POOL_OFF_MEASURED`]), proxy pool on.
//!
//! Four workloads, each in interleaved rounds: every round runs each target once, the order turned by one target
//! per round, so that machine noise and the time since a target last ran fall on all targets alike.
//! 1. mysqlclient, paced: `benches/connect.py` (Python's `MySQLdb`, what Django uses, from the tests' virtual
//!    environment) times `--iterations` connections, each connect + login, `SELECT 1`, fetch, close, with a
//!    1 ms pause after each, the rate of a few busy Django workers together (about 600 a second);
//! 2. mysqlclient, steady: the same on a fixed schedule of `--rate` connections a second (200), half as many
//!    iterations: a steady rate of new clients for the pool to size itself from;
//! 3. and 4. sysbench with `benches/connect.lua`, whose every event disconnects, connects again and runs
//!    `SELECT 1`, for `--seconds` at 1 and 4 threads: connections per second, back to back.
//!
//! What makes the pool visible: a client finds a ready backend connection only if the pool opened one since the
//! client before it (the rate must be above 0, and the gap between two clients longer than a backend connect
//! and greeting), and if that connection is younger than `max_age_ms`. Each target stays idle while the others
//! run, longer than `max_age_ms`, so every run starts cold; the median of a run's first 10 connections shows
//! that start, p50 the steady state, and the server's counters what the pool costs it: connections opened
//! beyond the clients', and those closed unused (each is an `Aborted_connects`, the server's count of
//! connections that ended before a login).
//!
//! Per run: p50, p95 and p99 latency (mysqlclient: from every iteration's time; sysbench: from its latency
//! histogram), connections per second, the relay's CPU time per connection, and the deltas of the server's
//! `Connections`, `Aborted_connects`, `Threads_created` and `Threads_connected` (end minus start, read 100 ms
//! after the client exits) over the run, from one root connection held open for the whole bench. The report
//! gives per target the median over rounds (min–max), the proxies' ratios to direct and to HAProxy (median of
//! the per-round ratios: each round's runs are neighbours in time), and issue 15's targets on the paced
//! mysqlclient p50: proxy pool on ≤ 0.85 × HAProxy and ≤ 1.3 × direct, met or not.
//!
//! The measurements run under the benchmarks' lock ([`BenchLock`]); the report is printed and written between
//! `<!-- connect:measured:begin -->` and `<!-- connect:measured:end -->` in `benches/RESULTS.md` (the first time
//! as a new `connect` section at its end), unless `--no-write` is given. Every process started here is killed
//! when the bench ends, panics included, and with the bench if it is killed.

mod support;

/// The tests' Python virtual environments (mysqlclient), shared rather than copied.
#[path = "../tests/support/packages.rs"]
mod packages;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, ensure};
use csmh_proxy::sandbox::{Account, MariaDb};
use mysql_async::prelude::Queryable;
use support::BenchLock;
use support::processes::{Busy, BusyWatch, HaProxy, OutputOk, ProxyProcess, ensure_tools, process_cpu_ns, sysbench};
use support::report::{Header, Section, Spread, mariadb_version, publish, threads, versions};
use tokio::runtime::Runtime;

/// The database the clients log in to.
const DATABASE: &str = "connect_bench";
/// Whether the proxy's configuration has `[backends.edxapp.preconnect]`: the pool-off target is measured only
/// then (a proxy without the table refuses it, as it refuses every unknown key).
const POOL_OFF_MEASURED: bool = false;
/// What the pool-off proxy's `proxy.toml` appends to the default configuration.
const POOL_OFF: &str = "\n[backends.edxapp.preconnect]\nmax = 0\n";
/// The pause after each paced mysqlclient connection.
const PAUSE_US: u32 = 1000;
/// The connections of a run whose median shows its cold start.
const FIRST: usize = 10;
/// How long after a client exits the server's counters are read, so that its last connection has gone.
const SETTLE: Duration = Duration::from_millis(100);
/// The timed mysqlclient loop.
const PYTHON_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/connect.py");
/// sysbench's script: a new connection per event.
const LUA_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/connect.lua");
/// This bench's section of the results file, and the part of it each run rewrites.
const SECTION: Section = Section {
    markers: ("<!-- connect:begin -->", "<!-- connect:end -->"),
    measured: ("<!-- connect:measured:begin -->", "<!-- connect:measured:end -->"),
    heading: "## Connect: a new connection per request, direct, HAProxy, proxy (issue 15)",
};
/// Issue 15's target on the paced mysqlclient p50: proxy pool on over HAProxy, at most.
const VS_HAPROXY: f64 = 0.85;
/// Issue 15's target on the paced mysqlclient p50: proxy pool on over direct, at most.
const VS_DIRECT: f64 = 1.3;

fn main() -> anyhow::Result<()> {
    let options = Options::parse(std::env::args().skip(1))?;
    ensure_tools(&["sysbench", "haproxy"])?;
    let python = packages::MYSQLCLIENT.python();
    let harness = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let server = harness.block_on(start_server())?;
    let relays = Relays::start(server.addr())?;
    let targets = relays.targets(server.addr());
    let clients = Clients { python, options: &options };

    let lock = BenchLock::acquire();
    let mut status = ServerStatus::open(harness, &server)?;
    let setup = Setup::describe(&mut status, &server, &clients)?;
    let watch = BusyWatch::start(relays.pids(server.pid()));
    warm_up(&clients, &targets)?;
    let results = WORKLOADS
        .iter()
        .map(|workload| measure(workload, &targets, &clients, &mut status))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report = Report { setup, targets, results, busy: watch.stop() };
    publish(&report.render(), &SECTION, options.write)?;
    drop(lock);
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Options

/// The command line (cargo adds `--bench`, which is ignored).
struct Options {
    /// Rounds per workload.
    rounds: usize,
    /// Connections per paced mysqlclient run (the steady runs make half as many).
    iterations: usize,
    /// Connections per second of the steady mysqlclient runs.
    rate: u32,
    /// Seconds per sysbench run.
    seconds: u32,
    write: bool,
    /// The command as typed, for the report.
    command: String,
}

impl Options {
    /// The options that take a number, and their defaults.
    const DEFAULTS: [(&'static str, usize); 4] =
        [("--rounds", 5), ("--iterations", 2000), ("--rate", 200), ("--seconds", 3)];

    /// Reads `args`, the command line after the program's name.
    fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Options> {
        let mut values = Options::DEFAULTS;
        let mut write = true;
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--bench" => {}
                "--no-write" => write = false,
                name => {
                    let slot = values.iter_mut().find(|(known, _)| *known == name).with_context(|| {
                        format!(
                            "unknown option {name}; expected --rounds, --iterations, --rate, --seconds N, --no-write"
                        )
                    })?;
                    slot.1 = args.next().with_context(|| format!("{name} needs a value"))?.parse()?;
                }
            }
        }
        ensure!(values.iter().all(|(_, value)| *value >= 1), "every option's value must be at least 1");
        let changed: Vec<String> = values
            .iter()
            .zip(Options::DEFAULTS)
            .filter(|(value, default)| value.1 != default.1)
            .map(|((name, value), _)| format!("{name} {value}"))
            .collect();
        let command = match changed.is_empty() {
            true => "cargo bench --bench connect".to_owned(),
            false => format!("cargo bench --bench connect -- {}", changed.join(" ")),
        };
        let [rounds, iterations, rate, seconds] = values.map(|(_, value)| value);
        Ok(Options { rounds, iterations, rate: rate as u32, seconds: seconds as u32, write, command })
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The server, the relays and the targets

/// A MariaDB server with the sandbox's settings and the application account, allowed everything on
/// [`DATABASE`].
async fn start_server() -> anyhow::Result<MariaDb> {
    let server = MariaDb::start().await?;
    let mut root = mysql_async::Conn::new(server.root_opts()).await?;
    root.query_drop(format!("CREATE DATABASE {DATABASE}")).await?;
    root.disconnect().await?;
    server.create_account(&Account::app(), &[DATABASE]).await?;
    Ok(server)
}

/// HAProxy and the proxies in front of the server.
struct Relays {
    haproxy: HaProxy,
    pool_off: Option<ProxyProcess>,
    pool_on: ProxyProcess,
}

impl Relays {
    /// Starts HAProxy and the proxies (the pool-off one only if [`POOL_OFF_MEASURED`]) in front of `server`.
    fn start(server: SocketAddr) -> anyhow::Result<Relays> {
        let pool_off = POOL_OFF_MEASURED.then(|| ProxyProcess::start(server, POOL_OFF)).transpose()?;
        Ok(Relays { haproxy: HaProxy::start(server)?, pool_off, pool_on: ProxyProcess::start(server, "")? })
    }

    /// Direct, HAProxy, proxy pool off (when measured), proxy pool on.
    fn targets(&self, server: SocketAddr) -> Vec<Target> {
        let relay = |kind, addr, pid| Target { kind, addr, relay: Some(pid) };
        let mut targets = vec![
            Target { kind: Kind::Direct, addr: server, relay: None },
            relay(Kind::HaProxy, self.haproxy.addr, self.haproxy.process.pid()),
        ];
        targets.extend(self.pool_off.as_ref().map(|p| relay(Kind::PoolOff, p.addr, p.process.pid())));
        targets.push(relay(Kind::PoolOn, self.pool_on.addr, self.pool_on.process.pid()));
        targets
    }

    /// The long-lived processes of the bench: the server's and the relays'.
    fn pids(&self, server: u32) -> Vec<u32> {
        let mut pids = vec![server, self.haproxy.process.pid(), self.pool_on.process.pid()];
        pids.extend(self.pool_off.as_ref().map(|p| p.process.pid()));
        pids
    }
}

/// What a target is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Direct,
    HaProxy,
    PoolOff,
    PoolOn,
}

/// Where the clients connect.
struct Target {
    kind: Kind,
    addr: SocketAddr,
    /// The relay's process, whose CPU time is counted; none for the server itself.
    relay: Option<u32>,
}

impl Target {
    /// Its name in the report.
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Direct => "direct",
            Kind::HaProxy => "HAProxy",
            Kind::PoolOff => "proxy (pool off)",
            Kind::PoolOn => "proxy (pool on)",
        }
    }

    /// Whether it is one of the proxies, whose ratios the report gives.
    fn is_proxy(&self) -> bool {
        matches!(self.kind, Kind::PoolOff | Kind::PoolOn)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The server's counters

/// The server's global status counters a run changes.
#[derive(Clone, Copy, Default)]
struct Counters {
    connections: i64,
    aborted_connects: i64,
    threads_created: i64,
    threads_connected: i64,
}

impl Counters {
    const NAMES: [&'static str; 4] = ["Connections", "Aborted_connects", "Threads_created", "Threads_connected"];

    /// `self` minus `before`, counter by counter.
    fn since(&self, before: &Counters) -> Counters {
        Counters {
            connections: self.connections - before.connections,
            aborted_connects: self.aborted_connects - before.aborted_connects,
            threads_created: self.threads_created - before.threads_created,
            threads_connected: self.threads_connected - before.threads_connected,
        }
    }
}

/// One root connection to the server, held open for the whole bench so that reading the counters opens no
/// connection of its own, and the runtime it runs on.
struct ServerStatus {
    harness: Runtime,
    root: mysql_async::Conn,
}

impl ServerStatus {
    fn open(harness: Runtime, server: &MariaDb) -> anyhow::Result<ServerStatus> {
        let root = harness.block_on(mysql_async::Conn::new(server.root_opts()))?;
        Ok(ServerStatus { harness, root })
    }

    /// The counters now.
    fn read(&mut self) -> anyhow::Result<Counters> {
        let list = Counters::NAMES.map(|name| format!("'{name}'")).join(", ");
        let query = format!("SHOW GLOBAL STATUS WHERE Variable_name IN ({list})");
        let rows: Vec<(String, i64)> = self.harness.block_on(self.root.query(query))?;
        let value = |name: &str| rows.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v);
        let [connections, aborted_connects, threads_created, threads_connected] =
            Counters::NAMES.map(|name| value(name).with_context(|| format!("no status variable {name}")));
        Ok(Counters {
            connections: connections?,
            aborted_connects: aborted_connects?,
            threads_created: threads_created?,
            threads_connected: threads_connected?,
        })
    }

    /// The first row of `query`, as text.
    fn text(&mut self, query: &str) -> anyhow::Result<String> {
        let row: Option<mysql_async::Row> = self.harness.block_on(self.root.query_first(query))?;
        let row = row.with_context(|| format!("no row from {query}"))?;
        let values: Vec<String> =
            (0..row.len()).map(|i| row.get::<Option<String>, _>(i).flatten().unwrap_or_default()).collect();
        Ok(values.join(" "))
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The clients

/// The workloads, in the order they run.
const WORKLOADS: [Workload; 4] = [
    Workload::Mysqlclient(Pacing::Pause),
    Workload::Mysqlclient(Pacing::Steady),
    Workload::Sysbench { threads: 1 },
    Workload::Sysbench { threads: 4 },
];

/// One way of opening connections.
#[derive(Clone, Copy)]
enum Workload {
    /// `benches/connect.py`, one client.
    Mysqlclient(Pacing),
    /// sysbench with `benches/connect.lua`.
    Sysbench { threads: u32 },
}

/// How the mysqlclient loop spaces its connections.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pacing {
    /// [`PAUSE_US`] after each connection.
    Pause,
    /// On a fixed schedule of `--rate` a second.
    Steady,
}

impl Workload {
    /// `mysqlclient, 1 ms pause`, `mysqlclient, steady 200/s` (`rate`), `sysbench, 4 threads`.
    fn label(&self, rate: u32) -> String {
        match self {
            Workload::Mysqlclient(Pacing::Pause) => format!("mysqlclient, {} ms pause", PAUSE_US / 1000),
            Workload::Mysqlclient(Pacing::Steady) => format!("mysqlclient, steady {rate}/s"),
            Workload::Sysbench { threads: n } => format!("sysbench, {}", threads(*n)),
        }
    }
}

/// What runs the clients: the Python of the mysqlclient environment, and the options.
struct Clients<'a> {
    python: PathBuf,
    options: &'a Options,
}

/// What one client run measured: its connections, their rate, and their latencies in microseconds.
#[derive(Clone, Copy, Default)]
struct ClientRun {
    connections: u64,
    per_second: f64,
    p50: f64,
    p95: f64,
    p99: f64,
    /// The median of the first [`FIRST`] connections (mysqlclient only: sysbench gives a histogram).
    first: Option<f64>,
}

impl Clients<'_> {
    /// Runs `workload` against `target` once.
    fn run(&self, workload: &Workload, target: &Target) -> anyhow::Result<ClientRun> {
        match *workload {
            Workload::Mysqlclient(Pacing::Pause) => {
                self.mysqlclient(target, self.options.iterations, &[format!("--pause-us={PAUSE_US}")])
            }
            Workload::Mysqlclient(Pacing::Steady) => {
                self.mysqlclient(target, self.options.iterations / 2, &[format!("--rate={}", self.options.rate)])
            }
            Workload::Sysbench { threads } => self.sysbench(target, threads, self.options.seconds),
        }
    }

    /// `benches/connect.py` against `target`: `iterations` timed connections paced by `pacing` (its options).
    fn mysqlclient(&self, target: &Target, iterations: usize, pacing: &[String]) -> anyhow::Result<ClientRun> {
        let account = Account::app();
        let output = Command::new(&self.python)
            .arg(PYTHON_SCRIPT)
            .arg(format!("--port={}", target.addr.port()))
            .arg(format!("--user={}", account.user))
            .arg(format!("--password={}", account.password))
            .arg(format!("--database={DATABASE}"))
            .arg(format!("--iterations={}", iterations.max(1)))
            .args(pacing)
            .stdin(Stdio::null())
            .output_ok()?;
        let loop_run: LoopRun = serde_json::from_slice(&output.stdout).context("connect.py's output")?;
        Ok(loop_run.summary())
    }

    /// sysbench with `benches/connect.lua` against `target`, at `threads` for `seconds`.
    fn sysbench(&self, target: &Target, threads: u32, seconds: u32) -> anyhow::Result<ClientRun> {
        let output = sysbench(LUA_SCRIPT, target.addr.port(), DATABASE)
            .arg(format!("--threads={threads}"))
            .arg(format!("--time={seconds}"))
            .args(["--events=0", "--report-interval=0", "--histogram=on", "run"])
            .output_ok()?;
        let text = String::from_utf8_lossy(&output.stdout);
        parse_sysbench(&text).with_context(|| format!("sysbench's output against {}:\n{text}", target.name()))
    }

    /// `Python <version>, mysqlclient <version> on MariaDB Connector/C <version>`.
    fn versions(&self) -> anyhow::Result<String> {
        let code = "import sys, importlib.metadata, MySQLdb; \
                    print('Python', sys.version.split()[0] + ', mysqlclient', \
                    importlib.metadata.version('mysqlclient'), 'on MariaDB Connector/C', MySQLdb.get_client_info())";
        let output = Command::new(&self.python).args(["-c", code]).stdin(Stdio::null()).output_ok()?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

/// What `benches/connect.py` prints.
#[derive(serde::Deserialize)]
struct LoopRun {
    elapsed_ns: u64,
    latencies_ns: Vec<u64>,
}

impl LoopRun {
    fn summary(&self) -> ClientRun {
        let micros = |ns: &[u64]| -> Vec<f64> {
            let mut us: Vec<f64> = ns.iter().map(|&n| n as f64 / 1000.0).collect();
            us.sort_by(f64::total_cmp);
            us
        };
        let all = micros(&self.latencies_ns);
        let first = micros(&self.latencies_ns[..FIRST.min(self.latencies_ns.len())]);
        ClientRun {
            connections: all.len() as u64,
            per_second: all.len() as f64 / (self.elapsed_ns.max(1) as f64 / 1e9),
            p50: percentile(&all, 0.50),
            p95: percentile(&all, 0.95),
            p99: percentile(&all, 0.99),
            first: Some(percentile(&first, 0.50)),
        }
    }
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
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Measuring

/// One run against one target: what the client measured, what the relay spent, what the server counted.
#[derive(Clone, Copy, Default)]
struct Sample {
    client: ClientRun,
    /// The relay's CPU time over the run, in nanoseconds (none for direct).
    relay_cpu_ns: Option<u64>,
    server: Counters,
}

impl Sample {
    /// The relay's CPU time per connection, in microseconds.
    fn relay_us_per_connection(&self) -> Option<f64> {
        Some(self.relay_cpu_ns? as f64 / 1000.0 / self.client.connections.max(1) as f64)
    }
}

/// Runs `workload` once against `target`, reading the relay's CPU time and the server's counters around it.
fn run_once(
    workload: &Workload,
    target: &Target,
    clients: &Clients,
    status: &mut ServerStatus,
) -> anyhow::Result<Sample> {
    let before = status.read()?;
    let cpu_before = target.relay.map(process_cpu_ns).transpose()?;
    let client = clients.run(workload, target)?;
    std::thread::sleep(SETTLE);
    let cpu_after = target.relay.map(process_cpu_ns).transpose()?;
    let server = status.read()?.since(&before);
    let relay_cpu_ns = cpu_before.zip(cpu_after).map(|(before, after)| after.saturating_sub(before));
    Ok(Sample { client, relay_cpu_ns, server })
}

/// A short run of each client against each target, not counted: the server's caches, the relays' code paths
/// and Python's imports are warm before the first measured run.
fn warm_up(clients: &Clients, targets: &[Target]) -> anyhow::Result<()> {
    let options = Options { rounds: 1, iterations: 100, rate: 200, seconds: 1, write: false, command: String::new() };
    let quick = Clients { python: clients.python.clone(), options: &options };
    for target in targets {
        quick.run(&WORKLOADS[0], target)?;
        quick.run(&WORKLOADS[2], target)?;
    }
    Ok(())
}

/// The runs of one workload: `runs[round][target]`, targets in the order of [`Relays::targets`].
struct Measured {
    workload: &'static Workload,
    runs: Vec<Vec<Sample>>,
}

/// `options.rounds` rounds of `workload`, each running every target once, starting one target later each round.
fn measure(
    workload: &'static Workload,
    targets: &[Target],
    clients: &Clients,
    status: &mut ServerStatus,
) -> anyhow::Result<Measured> {
    let options = clients.options;
    let mut runs = Vec::with_capacity(options.rounds);
    for round in 0..options.rounds {
        let mut samples = vec![Sample::default(); targets.len()];
        for i in (0..targets.len()).map(|k| (k + round) % targets.len()) {
            samples[i] = run_once(workload, &targets[i], clients, status)?;
        }
        let p50s: Vec<String> = samples.iter().map(|s| format!("{:.0}", s.client.p50)).collect();
        let names: Vec<&str> = targets.iter().map(Target::name).collect();
        eprintln!(
            "{} round {}/{}: p50 {} µs ({})",
            workload.label(options.rate),
            round + 1,
            options.rounds,
            p50s.join(" / "),
            names.join(" / ")
        );
        runs.push(samples);
    }
    Ok(Measured { workload, runs })
}

impl Measured {
    /// `value` of target `i`'s runs over the rounds.
    fn spread(&self, i: usize, value: impl Fn(&Sample) -> f64) -> Spread {
        Spread::of(self.runs.iter().map(|round| value(&round[i])).collect())
    }

    /// Target `i`'s p50 over target `j`'s, round by round.
    fn p50_ratio(&self, i: usize, j: usize) -> Spread {
        Spread::of(self.runs.iter().map(|round| round[i].client.p50 / round[j].client.p50).collect())
    }

    /// Target `i`'s rate over target `j`'s, round by round.
    fn rate_ratio(&self, i: usize, j: usize) -> Spread {
        Spread::of(self.runs.iter().map(|round| round[i].client.per_second / round[j].client.per_second).collect())
    }

    /// Target `i`'s relay CPU time per connection over the rounds, in microseconds.
    fn relay_cpu(&self, i: usize) -> Option<Spread> {
        let values: Option<Vec<f64>> = self.runs.iter().map(|round| round[i].relay_us_per_connection()).collect();
        values.map(Spread::of)
    }

    /// Target `i`'s counters summed over the rounds, and the smallest and largest `Threads_connected` change.
    fn counters(&self, i: usize) -> (Counters, Spread) {
        let mut sum = Counters::default();
        for round in &self.runs {
            let c = round[i].server;
            sum.connections += c.connections;
            sum.aborted_connects += c.aborted_connects;
            sum.threads_created += c.threads_created;
        }
        (sum, self.spread(i, |s| s.server.threads_connected as f64))
    }

    /// The clients' connections to target `i` over the rounds.
    fn client_connections(&self, i: usize) -> u64 {
        self.runs.iter().map(|round| round[i].client.connections).sum()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Reporting

/// The machine, the versions and the settings of a run.
struct Setup {
    header: Header,
    /// The server's settings that decide whether it counts connect errors per host.
    host_cache: String,
    rounds: usize,
    iterations: usize,
    rate: u32,
    seconds: u32,
}

impl Setup {
    fn describe(status: &mut ServerStatus, server: &MariaDb, clients: &Clients) -> anyhow::Result<Setup> {
        let mariadb = status.harness.block_on(mariadb_version(server))?;
        let host_cache = status.text(
            "SELECT CONCAT('skip_name_resolve = ', @@skip_name_resolve, ', host_cache_size = ', \
             @@host_cache_size, ', max_connect_errors = ', @@max_connect_errors, ', performance_schema = ', \
             @@performance_schema)",
        )?;
        let options = clients.options;
        let versions = format!("{}, {}", versions(&mariadb)?, clients.versions()?);
        Ok(Setup {
            header: Header::new(&options.command, versions),
            host_cache,
            rounds: options.rounds,
            iterations: options.iterations,
            rate: options.rate,
            seconds: options.seconds,
        })
    }
}

/// A column of a report's table: its heading, and its cell for target `i`'s runs of a workload.
type Column<'a> = (&'a str, &'a dyn Fn(&Measured, usize) -> String);

/// Everything the bench prints and writes.
struct Report {
    setup: Setup,
    targets: Vec<Target>,
    results: Vec<Measured>,
    busy: Busy,
}

impl Report {
    /// The Markdown of the measured part of the `connect` section.
    fn render(&self) -> String {
        let parts: [fn(&Report, &mut String); 6] = [
            Report::render_setup,
            Report::render_latencies,
            Report::render_rates,
            Report::render_counters,
            Report::render_targets,
            Report::render_runs,
        ];
        let mut out = String::new();
        for part in parts {
            part(self, &mut out);
        }
        out
    }

    /// The index of the target of `kind`.
    fn index(&self, kind: Kind) -> Option<usize> {
        self.targets.iter().position(|t| t.kind == kind)
    }

    fn render_setup(&self, out: &mut String) {
        let s = &self.setup;
        let names: Vec<&str> = self.targets.iter().map(Target::name).collect();
        s.header.render(out);
        let _ = writeln!(
            out,
            "- One MariaDB server (sandbox settings, no TLS; {}); HAProxy in `mode tcp`; `csmh-proxy serve` (the \
             `bench` profile = `release`), every flag off, pool on = the default configuration{}. Targets: {}.",
            s.host_cache,
            if POOL_OFF_MEASURED { ", pool off = `[backends.edxapp.preconnect] max = 0`" } else { "" },
            names.join(", ")
        );
        let _ = writeln!(
            out,
            "- {} round(s) per workload, every target once a round (the order turned by one each round): \
             mysqlclient {} connections with a {} ms pause after each, and {} at a steady {}/s; sysbench {} s \
             per run. {}\n",
            s.rounds,
            s.iterations,
            PAUSE_US / 1000,
            s.iterations / 2,
            s.rate,
            s.seconds,
            self.busy.sentence()
        );
        let _ = writeln!(
            out,
            "Medians (min–max) over the rounds; ratios are the median (min–max) of the per-round ratios. Latency \
             is per connection: connect, login, `SELECT 1`, fetch, close. \"First {FIRST}\" is the median of each \
             run's first {FIRST} connections (each target is idle while the others run). CPU is the relay \
             process's CPU time (all threads) per connection.\n"
        );
    }

    /// The mysqlclient table: one row per workload and target.
    fn render_latencies(&self, out: &mut String) {
        let (direct, haproxy) = (self.index(Kind::Direct), self.index(Kind::HaProxy));
        let columns: [Column; 7] = [
            ("p50 µs", &|m, i| m.spread(i, |s| s.client.p50).rate()),
            ("p99 µs", &|m, i| m.spread(i, |s| s.client.p99).rate()),
            (&format!("first {FIRST} µs"), &|m, i| m.spread(i, |s| s.client.first.unwrap_or(f64::NAN)).rate()),
            ("conn/s", &|m, i| m.spread(i, |s| s.client.per_second).rate()),
            ("relay CPU µs/conn", &|m, i| Spread::micros(m.relay_cpu(i))),
            ("p50 / direct", &|m, i| self.proxy_ratio(i, direct, |j| m.p50_ratio(i, j))),
            ("p50 / HAProxy", &|m, i| self.proxy_ratio(i, haproxy, |j| m.p50_ratio(i, j))),
        ];
        self.render_table(out, "workload", |w| matches!(w, Workload::Mysqlclient(_)), &columns);
    }

    /// The sysbench table: one row per thread count and target.
    fn render_rates(&self, out: &mut String) {
        let (direct, haproxy) = (self.index(Kind::Direct), self.index(Kind::HaProxy));
        let columns: [Column; 7] = [
            ("conn/s", &|m, i| m.spread(i, |s| s.client.per_second).rate()),
            ("p50 µs", &|m, i| m.spread(i, |s| s.client.p50).rate()),
            ("p95 µs", &|m, i| m.spread(i, |s| s.client.p95).rate()),
            ("p99 µs", &|m, i| m.spread(i, |s| s.client.p99).rate()),
            ("relay CPU µs/conn", &|m, i| Spread::micros(m.relay_cpu(i))),
            ("rate / direct", &|m, i| self.proxy_ratio(i, direct, |j| m.rate_ratio(i, j))),
            ("rate / HAProxy", &|m, i| self.proxy_ratio(i, haproxy, |j| m.rate_ratio(i, j))),
        ];
        self.render_table(out, "sysbench", |w| matches!(w, Workload::Sysbench { .. }), &columns);
    }

    /// The server's counters per workload and target, summed over the rounds.
    fn render_counters(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "Server counters, deltas over each target's runs summed over the rounds (Threads_connected: end minus \
             start of a run, min–max over the rounds):\n"
        );
        let columns: [Column; 5] = [
            ("client connections", &|m, i| m.client_connections(i).to_string()),
            ("Connections", &|m, i| m.counters(i).0.connections.to_string()),
            ("Aborted_connects", &|m, i| m.counters(i).0.aborted_connects.to_string()),
            ("Threads_created", &|m, i| m.counters(i).0.threads_created.to_string()),
            ("Threads_connected", &|m, i| format!("{:.0}–{:.0}", m.counters(i).1.min, m.counters(i).1.max)),
        ];
        self.render_table(out, "workload", |_| true, &columns);
    }

    /// A table with a row per target of each workload `rows` keeps: the workload, the target, then `columns`.
    fn render_table(&self, out: &mut String, first: &str, rows: impl Fn(&Workload) -> bool, columns: &[Column]) {
        let headings: Vec<&str> = columns.iter().map(|(heading, _)| *heading).collect();
        let _ = writeln!(out, "| {first} | target | {} |", headings.join(" | "));
        let _ = writeln!(out, "|---|---|{}", "--:|".repeat(columns.len()));
        for m in self.results.iter().filter(|m| rows(m.workload)) {
            for (i, target) in self.targets.iter().enumerate() {
                let cells: Vec<String> = columns.iter().map(|(_, cell)| cell(m, i)).collect();
                let label = m.workload.label(self.setup.rate);
                let _ = writeln!(out, "| {label} | {} | {} |", target.name(), cells.join(" | "));
            }
        }
        out.push('\n');
    }

    /// Target `i`'s ratio to target `to` (`ratio(to)`) if `i` is a proxy, else `–`.
    fn proxy_ratio(&self, i: usize, to: Option<usize>, ratio: impl Fn(usize) -> Spread) -> String {
        match (self.targets[i].is_proxy(), to) {
            (true, Some(to)) => ratio(to).ratio(),
            _ => "–".to_owned(),
        }
    }

    /// Issue 15's targets on the paced mysqlclient runs, and the same yardstick on the steady ones.
    fn render_targets(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "Targets (issue 15, mysqlclient paced): proxy pool on p50 ≤ {VS_HAPROXY:.2} × HAProxy p50 and ≤ \
             {VS_DIRECT:.2} × direct p50.\n"
        );
        let (Some(on), Some(haproxy), Some(direct)) =
            (self.index(Kind::PoolOn), self.index(Kind::HaProxy), self.index(Kind::Direct))
        else {
            return;
        };
        for m in &self.results {
            let Workload::Mysqlclient(pacing) = m.workload else { continue };
            let scope = if *pacing == Pacing::Pause { "target" } else { "same yardstick" };
            for (name, over, limit) in [("HAProxy", haproxy, VS_HAPROXY), ("direct", direct, VS_DIRECT)] {
                let ratio = m.p50_ratio(on, over).median;
                let verdict = if ratio <= limit { "met" } else { "**not met**" };
                let _ = writeln!(
                    out,
                    "- {}: pool on / {name} {ratio:.3} ≤ {limit:.2}: {verdict} ({scope})",
                    m.workload.label(self.setup.rate)
                );
            }
            if let Some(off) = self.index(Kind::PoolOff) {
                let gain = m.p50_ratio(on, off);
                let _ = writeln!(out, "- {}: pool on / pool off {}", m.workload.label(self.setup.rate), gain.ratio());
            }
        }
        out.push('\n');
    }

    /// Every run's p50, for whoever wants more than medians.
    fn render_runs(&self, out: &mut String) {
        let names: Vec<&str> = self.targets.iter().map(Target::name).collect();
        let _ = writeln!(out, "<details><summary>Every run's p50 in µs ({}, by round)</summary>\n", names.join(" / "));
        for m in &self.results {
            let rounds: Vec<String> = m
                .runs
                .iter()
                .map(|round| round.iter().map(|s| format!("{:.0}", s.client.p50)).collect::<Vec<_>>().join(" / "))
                .collect();
            let _ = writeln!(out, "- {}: {}", m.workload.label(self.setup.rate), rounds.join(" · "));
        }
        let _ = writeln!(out, "\n</details>");
    }
}
