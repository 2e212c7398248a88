//! Issue 15's `connect` benchmark: what a new connection costs through the proxy, as edxapp opens one for every
//! web request (Django with mysqlclient: connect, greeting, login, a few statements, quit), side by side with a
//! direct connection to MariaDB and with HAProxy in `mode tcp`, with the proxy's preconnect pool off and on.
//!
//! ```sh
//! cargo bench --bench connect                          # 5 rounds, about 15 minutes
//! cargo bench --bench connect -- --rounds 3 --iterations 1000 --seconds 2 --no-write
//! ```
//!
//! What runs, all on 127.0.0.1: one throw-away MariaDB server from the sandbox code ([`MariaDb::start`], its
//! settings, no TLS); HAProxy in TCP mode; and `csmh-proxy serve` (the binary cargo builds beside this bench)
//! once per pool setting, every flag off: "pool on" is the default configuration (`[backends.edxapp.preconnect]
//! max` defaults to 4), "pool off" appends `max = 0` ([`POOL_OFF`]). The targets, in this order: direct, HAProxy,
//! proxy pool off, proxy pool on.
//!
//! Five workloads, each in interleaved rounds: every round runs each target once, the order turned by one target
//! per round, so that machine noise and the time since a target last ran fall on all targets alike.
//! 1. mysqlclient, paced: `benches/connect/connect.py` (Python's `MySQLdb`, what Django uses, from the tests'
//!    virtual environment) times `--iterations` connections, each connect + login, `SELECT 1`, fetch, close,
//!    with a 1 ms pause after each, the rate of a few busy Django workers together (about 600 a second);
//! 2. mysqlclient, steady: the same on a fixed schedule of `--rate` connections a second (200), half as many
//!    iterations: a steady rate of new clients for the pool to size itself from;
//! 3. PyMySQL, paced as 1. with half as many iterations: `benches/connect/steps.py` makes the same connection
//!    with PyMySQL (the same statements as mysqlclient: `SET NAMES`, `SET AUTOCOMMIT = 0`), whose steps are
//!    Python methods, and times each: the TCP connect, the greeting, the login, the setup statements, `SELECT 1`,
//!    the close. It shows where a relay's time goes, and what the pool saves (the greeting) and costs;
//! 4. and 5. sysbench with `benches/connect/connect.lua`, whose every event disconnects, connects again and
//!    runs `SELECT 1`, for `--seconds` at 1 and 4 threads: connections per second, back to back.
//!
//! Then workloads on sites of their own ([`site`]), each a server reached four ways, each way measured with paced
//! mysqlclient connections (a quarter of `--iterations` a run) after the main workloads:
//! - TLS ([`tls`]): a second server with a certificate from the tests' authority, reached directly with TLS,
//!   through HAProxy passing the client's TLS through, through a proxy whose client is in plaintext and whose leg
//!   to the server is TLS (`verify-identity`), and through a proxy with TLS on both legs: what a new connection
//!   costs where the server requires TLS, as managed servers do, and what the proxy's resumed TLS sessions to the
//!   server save;
//! - a server across a network ([`remote`]), once per round trip of [`ROUND_TRIPS`]: a [`support::delay::DelayLine`]
//!   before the main server holds every byte half a round trip each way (this machine's kernel has no `netem`),
//!   and it is reached through the line directly, through HAProxy, and through the proxy with its pool off and
//!   on, the relays beside the client. On 127.0.0.1 a TCP connect and a greeting cost a few µs, and a pool can
//!   save little; here they cost two of the network's round trips, as in production;
//! - a site whose extended table is on a server of its own ([`history`]), behind delay lines of the same round
//!   trips: each connection runs edxapp's history read, to the old table directly, through HAProxy and through
//!   the proxy with the flags off, and rewritten to the extended table by the proxy with and without the
//!   connections to that server kept between sessions (`[backends.csmh] keep_idle`).
//!
//! What makes the pool visible: a client finds a ready backend connection only if the pool opened one since the
//! client before it (the rate must be above 0, and the gap between two clients longer than a backend connect
//! and greeting), and if that connection is younger than `max_age_ms`. A pool-on run's window goes on until
//! its unused connections have expired (`max_age_ms` and half a second after the last client), so every run
//! of every target starts with no pool connection left; the median of a run's first 10 connections shows that
//! cold start, p50 the steady state, and the server's counters what the pool costs it: connections opened
//! beyond the clients', and those closed unused (each is an `Aborted_connects`, the server's count of
//! connections that ended before a login), all within the pool-on row.
//!
//! Per run: p50, p95 and p99 latency (mysqlclient: from every iteration's time; sysbench: from its latency
//! histogram), connections per second, the relay's CPU time per connection, and the deltas of the server's
//! `Connections`, `Aborted_connects` and `Threads_created` over the run's window and of `Threads_connected`
//! from the start to 100 ms after the client exits (connections held ready show there), from one root
//! connection held open for the whole bench. The report gives per target the median over rounds (min–max),
//! the proxies' ratios to direct and to HAProxy (median of the per-round ratios: each round's runs are
//! neighbours in time), and issue 15's targets on the paced mysqlclient p50: proxy pool on ≤ 0.85 × HAProxy
//! and ≤ 1.3 × direct, met or not.
//!
//! The measurements run under the benchmarks' lock ([`BenchLock`]); the report is printed and written between
//! `<!-- connect:measured:begin -->` and `<!-- connect:measured:end -->` in `benches/RESULTS.md` (the first time
//! as a new `connect` section at its end), unless `--no-write` is given. Every process started here is killed
//! when the bench ends, panics included, and with the bench if it is killed.
//!
//! The bench's own parts: the clients ([`clients`]) and the report ([`report`]); what it shares with
//! `passthrough` is in `benches/support/`.

#[path = "../support/mod.rs"]
mod support;

/// The tests' Python virtual environments (mysqlclient), shared rather than copied.
#[path = "../../tests/support/packages.rs"]
mod packages;

/// The tests' certificate authority, for the TLS workload's server and proxy certificates.
#[path = "../../tests/support/tls.rs"]
#[allow(dead_code, reason = "shared with the tests, whose client certificates the bench does not use")]
mod tls_pki;

mod clients;
mod history;
mod remote;
mod report;
mod site;
mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, ensure};
use clients::{ClientRun, Clients, Pacing, WORKLOADS, Workload};
use csmh_proxy::sandbox::{Account, MariaDb};
use history::{HISTORY_READ, HistoryServers, HistorySite};
use mysql_async::prelude::Queryable;
use remote::{ROUND_TRIPS, RemoteSite};
use report::{Report, Setup};
use site::Runs;
use support::BenchLock;
use support::processes::{BusyWatch, HaProxy, ProxyProcess, ensure_tools, process_cpu_ns};
use support::report::{Section, Spread, publish};
use tokio::runtime::Runtime;

/// PyMySQL, for `steps.py`, at the version the tests use.
const PYMYSQL: &str = "PyMySQL==1.1.1";
/// The database the clients log in to.
const DATABASE: &str = "connect_bench";
/// The pool's default `max_age_ms`: a ready connection older than this is closed.
const POOL_MAX_AGE: Duration = Duration::from_millis(5000);
/// What the report calls the TLS workload.
const TLS_LABEL: &str = "mysqlclient to a server with TLS";
/// What the pool-off proxy's `proxy.toml` appends to the default configuration.
const POOL_OFF: &str = "\n[backends.edxapp.preconnect]\nmax = 0\n";
/// How long after a client exits the server's counters are read, so that its last connection has gone.
const SETTLE: Duration = Duration::from_millis(100);
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
    let python = packages::MYSQLCLIENT.python_with(&[PYMYSQL], "import MySQLdb, pymysql");
    let harness = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let server = harness.block_on(start_server())?;
    let tls_site = harness.block_on(tls::TlsSite::start())?;
    let relays = Relays::start(server.addr())?;
    let remote_sites =
        ROUND_TRIPS.into_iter().map(|rtt| RemoteSite::start(server.addr(), rtt)).collect::<anyhow::Result<Vec<_>>>()?;
    let history_servers = harness.block_on(HistoryServers::start(&server))?;
    let history_sites = ROUND_TRIPS
        .into_iter()
        .map(|rtt| HistorySite::start(server.addr(), &history_servers, rtt))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let targets = relays.targets(server.addr());
    let clients = Clients { python, options: &options };

    let lock = BenchLock::acquire();
    let mut status = ServerStatus::open(harness, &server)?;
    let setup = Setup::describe(&mut status, &server, &clients)?;
    let mut ours = relays.pids(server.pid());
    ours.extend(tls_site.pids().into_iter().chain(remote_sites.iter().flat_map(RemoteSite::pids)));
    ours.extend(history_sites.iter().flat_map(HistorySite::pids).chain([history_servers.pid()]));
    let watch = BusyWatch::start(ours);
    warm_up(&clients, &targets)?;
    let results = WORKLOADS
        .iter()
        .map(|workload| measure(workload, &targets, &clients, &mut status))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // The sites' runs come after the main workloads: the pools of the remote sites' proxies, which reach the
    // same server, hold none of its connections while the main workloads count them.
    let runs = |statement| Runs { rounds: options.rounds, iterations: options.iterations / 4, statement };
    let tls = site::measure(TLS_LABEL.to_owned(), tls_site.targets(), &clients, runs(None))?;
    let remote = remote_sites
        .iter()
        .map(|site| site::measure(site.label(), site.targets(), &clients, runs(None)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let history = history_sites
        .iter()
        .map(|site| site::measure(site.label(), site.targets(), &clients, runs(Some(HISTORY_READ))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report = Report { setup, targets, results, tls, remote, history, busy: watch.stop() };
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
    pool_off: ProxyProcess,
    pool_on: ProxyProcess,
}

impl Relays {
    /// Starts HAProxy and the two proxies in front of `server`.
    fn start(server: SocketAddr) -> anyhow::Result<Relays> {
        Ok(Relays {
            haproxy: HaProxy::start(server)?,
            pool_off: ProxyProcess::start(server, POOL_OFF)?,
            pool_on: ProxyProcess::start(server, "")?,
        })
    }

    /// Direct, HAProxy, proxy pool off, proxy pool on.
    fn targets(&self, server: SocketAddr) -> Vec<Target> {
        let relay = |kind, addr, pid| Target { kind, addr, relay: Some(pid) };
        vec![
            Target { kind: Kind::Direct, addr: server, relay: None },
            relay(Kind::HaProxy, self.haproxy.addr, self.haproxy.process.pid()),
            relay(Kind::PoolOff, self.pool_off.addr, self.pool_off.process.pid()),
            relay(Kind::PoolOn, self.pool_on.addr, self.pool_on.process.pid()),
        ]
    }

    /// The long-lived processes of the bench: the server's and the relays'.
    fn pids(&self, server: u32) -> Vec<u32> {
        vec![server, self.haproxy.process.pid(), self.pool_off.process.pid(), self.pool_on.process.pid()]
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

    /// How long after a run the target may still open or close connections of its own: the pool-on proxy's
    /// ready connections expire [`POOL_MAX_AGE`] after the last client, so its run's window extends past that.
    /// What the pool opened and closed unused then counts in its own row, and none of it in the next target's.
    fn drain(&self) -> Duration {
        match self.kind == Kind::PoolOn {
            true => POOL_MAX_AGE + Duration::from_millis(500),
            false => Duration::ZERO,
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

/// Runs `workload` once against `target`, reading the relay's CPU time and the server's counters around it:
/// `Threads_connected` just after the client exits, the rest once the target has drained ([`Target::drain`]).
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
    let at_end = status.read()?;
    std::thread::sleep(target.drain());
    let cpu_after = target.relay.map(process_cpu_ns).transpose()?;
    let server = Counters {
        threads_connected: at_end.threads_connected - before.threads_connected,
        ..status.read()?.since(&before)
    };
    let relay_cpu_ns = cpu_before.zip(cpu_after).map(|(before, after)| after.saturating_sub(before));
    Ok(Sample { client, relay_cpu_ns, server })
}

/// A short run of each client against each target, not counted: the server's caches, the relays' code paths
/// and Python's imports are warm before the first measured run. It ends once the targets have drained, so that
/// no connection the pool opened during it closes in the first measured run.
fn warm_up(clients: &Clients, targets: &[Target]) -> anyhow::Result<()> {
    let options = Options { rounds: 1, iterations: 100, rate: 200, seconds: 1, write: false, command: String::new() };
    let quick = Clients { python: clients.python.clone(), options: &options };
    for target in targets {
        for workload in [Workload::Mysqlclient(Pacing::Pause), Workload::Steps, Workload::Sysbench { threads: 1 }] {
            quick.run(&workload, target)?;
        }
    }
    std::thread::sleep(targets.iter().map(Target::drain).max().unwrap_or_default());
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
