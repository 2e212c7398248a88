//! Benchmarks 1 and 2 of issue 5, and their TLS row: what the proxy costs on the passthrough path, side by side
//! with a direct connection to MariaDB and with an L4 TCP relay (HAProxy in `mode tcp`) in front of the same
//! server, in plaintext and with TLS on both legs.
//!
//! ```sh
//! cargo bench --bench passthrough                          # 5 rounds of 5 s runs, about 10½ minutes
//! cargo bench --bench passthrough -- --rounds 7 --seconds 10 --no-write
//! ```
//!
//! What runs, all on 127.0.0.1:
//! - one throw-away MariaDB server from the sandbox code ([`MariaDb::start_with`], which installs MariaDB if
//!   needed), serving TLS with certificates made at bench time ([`Certificates`]: rcgen, one test authority), so
//!   that every row, plaintext or TLS, measures the same server;
//! - csmh-proxy as `csmh-proxy serve` runs in production: the binary cargo builds beside this bench (same `bench`
//!   profile, which inherits `release`), in processes of their own like HAProxy, every flag off. Two of them
//!   ([`ProxyProcess`]), because no single configuration serves both transports as measured: the plaintext one
//!   has `[backends.*.tls] mode = "disabled"`, the TLS one `[listen.tls]` (its own certificate, `required`) and
//!   `mode = "required"`. Once the server offers TLS, `preferred` (the default) and `required` both put a
//!   plaintext client's traffic to the server inside TLS, so the plaintext row would no longer be plaintext
//!   end to end; and `disabled` refuses clients that connected with TLS (their traffic would cross in plaintext);
//! - HAProxy in TCP mode from a minimal configuration, in the foreground as a child process (Debian's `haproxy`,
//!   installed with apt-get when missing, as `sysbench` is). The same HAProxy serves both transports: it relays
//!   bytes, so a client's TLS runs end to end to the server through it.
//!
//! sysbench's table (1 table × 10,000 rows) is prepared on the server directly. Each workload then runs against
//! three targets in turn, interleaved (direct, HAProxy, proxy, direct, HAProxy, proxy, …) so that machine noise
//! hits all three alike: (1) `oltp_point_select` with text queries (`--db-ps-mode=disable`), in plaintext and
//! then over TLS, and (2) `oltp_point_select` and `oltp_read_write` with server-side prepared statements
//! (`--db-ps-mode=auto`), in plaintext, each at 1 and 8 client threads. Over TLS ([`Transport::Tls`]) sysbench
//! runs with `--mysql-ssl=on` in a directory holding the authority and a client certificate under the names it
//! reads, and the three targets are: the server itself; HAProxy relaying sysbench's TLS to the server; the TLS
//! proxy, which ends sysbench's TLS and opens its own to the server. A short warm-up run through each of the six
//! endpoints checks the transport: the server must count TLS handshakes through a TLS endpoint and none through a
//! plaintext one; the TLS proxy itself refuses a plaintext client (`required = true`) and a server leg without TLS
//! (`mode = "required"`).
//!
//! The report gives, per target, the median rate (queries per second; transactions per second for read-write)
//! and its min–max, and the proxy's ratios to direct and to HAProxy: the median of the per-round ratios (each
//! round's three runs are neighbours in time) and their min–max; and each relay's CPU time per statement (all its
//! threads, from the scheduler's counters), less sensitive to machine noise. The TLS rows are a table of their
//! own with the same columns. It ends with the issue's targets — proxy/direct ≥ 0.90 at 1 thread,
//! proxy/HAProxy ≥ 1.2 at 8 threads, on plaintext text point selects — met or not (the other rows, TLS
//! included, are held to the same yardstick for information), and says how much of the machine other processes
//! used meanwhile.
//!
//! A default run spends 8 workloads × 5 rounds × 3 targets × 5 s = 600 s in measured sysbench runs (450 s before
//! the TLS row), plus six 2 s warm-up runs and a few seconds of setup: about 10½ minutes once built and installed
//! (`--rounds 1 --seconds 2` takes about 65 s).
//!
//! The measurements run under an exclusive `flock` on `/tmp/csmh-bench.lock`, shared with the other benchmarks,
//! so two benchmarks never measure at the same time (do not also wrap the command in `flock` on that file: the
//! bench would wait for itself). The report is printed and written to the part of `benches/RESULTS.md` between
//! `<!-- passthrough:measured:begin -->` and `<!-- passthrough:measured:end -->` (or, the first time, as the
//! `passthrough` section, added at the end of the file if it has none), unless `--no-write` is given.
//!
//! Every process started here is killed when the bench ends, panics included (guards' `Drop`), and with the
//! bench if it is killed (`PR_SET_PDEATHSIG`).

mod support;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use csmh_proxy::sandbox::{Account, MariaDb};
use mysql_async::prelude::Queryable;
use support::BenchLock;
use support::processes::{Busy, BusyWatch, HaProxy, OutputOk, ProxyProcess, ensure_tools, process_cpu_ns};
use support::report::{Header, Section, Spread, mariadb_version, publish, threads, versions};
use tls::{CertFiles, TestPki};
use tokio::runtime::Runtime;

/// The integration tests' certificate maker (rcgen), shared rather than copied.
#[path = "../tests/support/tls.rs"]
mod tls;

/// The database sysbench works in.
const DATABASE: &str = "sbtest";
/// Rows of sysbench's one table (its default size).
const TABLE_SIZE: u32 = 10_000;
/// This bench's section of the results file, and the part of it each run rewrites.
const SECTION: Section = Section {
    markers: ("<!-- passthrough:begin -->", "<!-- passthrough:end -->"),
    measured: ("<!-- passthrough:measured:begin -->", "<!-- passthrough:measured:end -->"),
    heading: "## Passthrough: direct, HAProxy, proxy (benchmarks 1 and 2, and over TLS)",
};

/// Issue 5's targets and the floors below which the proxy is not acceptable at all.
const VS_DIRECT_AT_1: Target = Target { goal: 0.90, floor: 0.85 };
const VS_HAPROXY_AT_8: Target = Target { goal: 1.2, floor: 1.0 };

fn main() -> anyhow::Result<()> {
    let options = Options::parse(std::env::args().skip(1))?;
    ensure_tools(&["sysbench", "haproxy"])?;
    let certificates = Certificates::make()?;
    let harness = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let server = harness.block_on(start_server(&certificates))?;
    let proxy = ProxyProcess::start(server.addr(), &proxy_tls(None))?;
    let tls_proxy = ProxyProcess::start(server.addr(), &proxy_tls(Some(&certificates.proxy)))?;
    let haproxy = HaProxy::start(server.addr())?;
    let endpoints = Endpoints::new(&server, &haproxy, &proxy, &tls_proxy, &certificates.sysbench_dir);
    for endpoint in &endpoints.plaintext {
        harness.block_on(check_login(endpoint))?;
    }
    sysbench(&WORKLOADS[0], &endpoints.plaintext[0]).arg("prepare").output_ok()?;

    let lock = BenchLock::acquire();
    let setup = Setup::describe(&harness, &server, &options)?;
    let ours = [server.pid(), haproxy.process.pid(), proxy.process.pid(), tls_proxy.process.pid()];
    let watch = BusyWatch::start(ours.to_vec());
    warm_up(&harness, &server, &endpoints)?;
    let results = measure_all(&endpoints, &options)?;
    let report = Report { setup, results, busy: watch.stop() };
    publish(&report.render(), &SECTION, options.write)?;
    drop(lock);
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Options

/// The command line: `--rounds N`, `--seconds N`, `--no-write` (cargo adds `--bench`, which is ignored).
struct Options {
    rounds: usize,
    seconds: u32,
    write: bool,
    /// The command as typed, for the report.
    command: String,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Options> {
        let mut options = Options { rounds: 5, seconds: 5, write: true, command: String::new() };
        let mut shown = Vec::new();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--bench" => continue,
                "--rounds" => options.rounds = value("--rounds")?.parse()?,
                "--seconds" => options.seconds = value("--seconds")?.parse()?,
                "--no-write" => options.write = false,
                other => bail!("unknown option {other}; expected --rounds N, --seconds N, --no-write"),
            }
            shown.push(arg);
        }
        ensure!(options.rounds >= 1 && options.seconds >= 1, "--rounds and --seconds must be at least 1");
        let extra = [("--rounds", options.rounds, 5), ("--seconds", options.seconds as usize, 5)]
            .into_iter()
            .filter(|(_, value, default)| value != default)
            .map(|(name, value, _)| format!("{name} {value}"))
            .collect::<Vec<_>>();
        options.command = match extra.is_empty() {
            true => "cargo bench --bench passthrough".to_owned(),
            false => format!("cargo bench --bench passthrough -- {}", extra.join(" ")),
        };
        Ok(options)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The processes: MariaDB, the proxy, HAProxy

/// The certificates of a run, made at bench time by one test authority ([`TestPki`], rcgen): the server's and
/// the TLS proxy's for `localhost` and `127.0.0.1`, and sysbench's client certificate.
struct Certificates {
    /// The authority and its directory, removed with it.
    pki: TestPki,
    /// What MariaDB serves.
    server: CertFiles,
    /// What the TLS proxy serves (`[listen.tls]`).
    proxy: CertFiles,
    /// sysbench's working directory for TLS runs: sysbench 1.0 reads the authority and its client certificate
    /// from fixed names there (`cacert.pem`, `client-cert.pem`, `client-key.pem`).
    sysbench_dir: PathBuf,
}

impl Certificates {
    /// Makes the authority and the certificates, and lays out sysbench's working directory.
    fn make() -> anyhow::Result<Certificates> {
        let pki = TestPki::new("csmh-proxy bench CA");
        let server = pki.localhost("server");
        let proxy = pki.localhost("proxy");
        let client = pki.issue("client", &[Account::app().user.as_str()]);
        let sysbench_dir = pki.dir().to_owned();
        for (from, to) in
            [(&pki.ca, "cacert.pem"), (&client.certificate, "client-cert.pem"), (&client.key, "client-key.pem")]
        {
            std::fs::copy(from, sysbench_dir.join(to)).with_context(|| format!("copy {} to {to}", from.display()))?;
        }
        Ok(Certificates { pki, server, proxy, sysbench_dir })
    }
}

/// A MariaDB server serving TLS with `certificates`, with the application account, allowed everything on
/// [`DATABASE`]; plaintext clients are served too.
async fn start_server(certificates: &Certificates) -> anyhow::Result<MariaDb> {
    let server = MariaDb::start_with(&certificates.pki.mariadb_options(&certificates.server)).await?;
    let mut root = mysql_async::Conn::new(server.root_opts()).await?;
    root.query_drop(format!("CREATE DATABASE {DATABASE}")).await?;
    root.disconnect().await?;
    server.create_account(&Account::app(), &[DATABASE]).await?;
    Ok(server)
}

/// The server's count of the TLS handshakes it accepted so far (`Ssl_accepts`).
async fn tls_handshakes(server: &MariaDb) -> anyhow::Result<u64> {
    let mut root = mysql_async::Conn::new(server.root_opts()).await?;
    let row: Option<(String, u64)> = root.query_first("SHOW GLOBAL STATUS LIKE 'Ssl_accepts'").await?;
    root.disconnect().await?;
    Ok(row.context("the server has no Ssl_accepts status variable")?.1)
}

/// The TLS tables of a proxy's `proxy.toml`. Without `listen`: no `[listen.tls]`, and `mode = "disabled"` to the
/// server, which offers TLS (under `preferred`, the default, plaintext clients' traffic would cross to it in
/// TLS). With `listen`: that certificate for clients, which must use TLS (`required`), and `mode = "required"` to
/// the server, its certificate not checked (checking it costs once per connection, and sysbench's connections
/// last the whole run).
fn proxy_tls(listen: Option<&CertFiles>) -> String {
    let quoted = |path: &Path| toml::Value::String(path.display().to_string()).to_string();
    let (client, mode) = match listen {
        None => (String::new(), "disabled"),
        Some(cert) => (
            format!(
                "\n[listen.tls]\ncertificate = {}\nkey = {}\nrequired = true\n",
                quoted(&cert.certificate),
                quoted(&cert.key)
            ),
            "required",
        ),
    };
    // Both backends, though on one server the proxy opens no connection of its own to `csmh`.
    format!("{client}\n[backends.edxapp.tls]\nmode = \"{mode}\"\n\n[backends.csmh.tls]\nmode = \"{mode}\"\n")
}

/// Logs in through `endpoint` as the application account, as sysbench will (in plaintext: this build of
/// mysql_async has no TLS; the warm-up run checks the TLS endpoints).
async fn check_login(endpoint: &Endpoint) -> anyhow::Result<()> {
    let conn = mysql_async::Conn::new(Account::app().opts(endpoint.addr, Some(DATABASE)))
        .await
        .with_context(|| format!("log in through {} at {}", endpoint.name, endpoint.addr))?;
    Ok(conn.disconnect().await?)
}

// ---------------------------------------------------------------------------------------------------------------
// sysbench

/// Where sysbench connects, and how.
struct Endpoint {
    name: &'static str,
    addr: SocketAddr,
    /// The relay's process, whose CPU time is counted, if there is a relay.
    relay: Option<u32>,
    /// For TLS (`--mysql-ssl=on`), the directory sysbench runs in, holding its TLS files
    /// ([`Certificates::sysbench_dir`]); plaintext without.
    tls: Option<PathBuf>,
}

/// The six endpoints: direct, HAProxy and proxy, in plaintext and over TLS, each three in that order.
struct Endpoints {
    plaintext: [Endpoint; 3],
    tls: [Endpoint; 3],
}

impl Endpoints {
    /// The plaintext three (`proxy` with TLS disabled), and the TLS three: the server itself, the same HAProxy
    /// relaying sysbench's TLS, and `tls_proxy`; sysbench's TLS files in `sysbench_dir`.
    fn new(
        server: &MariaDb,
        haproxy: &HaProxy,
        proxy: &ProxyProcess,
        tls_proxy: &ProxyProcess,
        sysbench_dir: &Path,
    ) -> Endpoints {
        let haproxy_pid = Some(haproxy.process.pid());
        let tls = || Some(sysbench_dir.to_owned());
        Endpoints {
            plaintext: [
                Endpoint { name: "direct", addr: server.addr(), relay: None, tls: None },
                Endpoint { name: "HAProxy", addr: haproxy.addr, relay: haproxy_pid, tls: None },
                Endpoint { name: "proxy", addr: proxy.addr, relay: Some(proxy.process.pid()), tls: None },
            ],
            tls: [
                Endpoint { name: "direct (TLS)", addr: server.addr(), relay: None, tls: tls() },
                Endpoint { name: "HAProxy (TLS)", addr: haproxy.addr, relay: haproxy_pid, tls: tls() },
                Endpoint {
                    name: "proxy (TLS)",
                    addr: tls_proxy.addr,
                    relay: Some(tls_proxy.process.pid()),
                    tls: tls(),
                },
            ],
        }
    }

    /// The three endpoints of `transport`.
    fn of(&self, transport: Transport) -> &[Endpoint; 3] {
        match transport {
            Transport::Plaintext => &self.plaintext,
            Transport::Tls => &self.tls,
        }
    }

    /// All six: the plaintext three, then the TLS three.
    fn all(&self) -> impl Iterator<Item = &Endpoint> {
        self.plaintext.iter().chain(&self.tls)
    }
}

/// How sysbench's statements travel.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// In plaintext on every leg (benchmarks 1 and 2).
    Plaintext,
    /// In TLS on every leg: sysbench's connection, HAProxy relaying it to the server, or the proxy's two.
    Tls,
}

/// What sysbench's rate counts: queries (each point-select event is one query) or transactions.
#[derive(Clone, Copy)]
enum Metric {
    Qps,
    Tps,
}

impl Metric {
    fn label(self) -> &'static str {
        match self {
            Metric::Qps => "qps",
            Metric::Tps => "tps",
        }
    }
}

/// One sysbench workload.
struct Workload {
    /// The bundled Lua script.
    script: &'static str,
    /// `--db-ps-mode`: `disable` for text queries, `auto` for server-side prepared statements.
    ps_mode: &'static str,
    threads: u32,
    metric: Metric,
    /// Benchmark 1 or 2 of the issue.
    benchmark: u8,
    /// Which three endpoints it runs against.
    transport: Transport,
}

impl Workload {
    fn label(&self) -> String {
        let protocol = if self.ps_mode == "disable" { "text" } else { "prepared" };
        let tls = if self.transport == Transport::Tls { ", TLS" } else { "" };
        format!("{} ({protocol}{tls})", self.script.trim_start_matches("oltp_"))
    }

    /// The same workload over TLS.
    const fn over_tls(self) -> Workload {
        Workload { transport: Transport::Tls, ..self }
    }

    /// Whether the issue's targets apply to it (else it is held to the same yardstick for information only).
    fn has_target(&self) -> bool {
        self.benchmark == 1 && self.transport == Transport::Plaintext
    }
}

/// `oltp_point_select`: one primary-key lookup per event, counted in queries per second.
const fn point_select(ps_mode: &'static str, threads: u32, benchmark: u8) -> Workload {
    Workload {
        script: "oltp_point_select",
        ps_mode,
        threads,
        metric: Metric::Qps,
        benchmark,
        transport: Transport::Plaintext,
    }
}

/// `oltp_read_write` with prepared statements: one transaction of 20 statements per event, counted in
/// transactions per second.
const fn read_write(threads: u32) -> Workload {
    Workload {
        script: "oltp_read_write",
        ps_mode: "auto",
        threads,
        metric: Metric::Tps,
        benchmark: 2,
        transport: Transport::Plaintext,
    }
}

/// Benchmark 1 (text point selects), the same over TLS, then benchmark 2 (prepared statements), read-write last
/// so that its writes (and InnoDB's purge after them) do not fall on the read-only runs.
const WORKLOADS: [Workload; 8] = [
    point_select("disable", 1, 1),
    point_select("disable", 8, 1),
    point_select("disable", 1, 1).over_tls(),
    point_select("disable", 8, 1).over_tls(),
    point_select("auto", 1, 2),
    point_select("auto", 8, 2),
    read_write(1),
    read_write(8),
];

/// sysbench with `workload`'s options against `endpoint`, over TLS if the endpoint is; the caller adds the
/// command (`prepare`, `run`).
fn sysbench(workload: &Workload, endpoint: &Endpoint) -> Command {
    let mut command = support::processes::sysbench(workload.script, endpoint.addr.port(), DATABASE);
    command
        .arg(format!("--db-ps-mode={}", workload.ps_mode))
        .args(["--tables=1", &format!("--table-size={TABLE_SIZE}")])
        .arg(format!("--threads={}", workload.threads));
    if let Some(dir) = &endpoint.tls {
        command.arg("--mysql-ssl=on").current_dir(dir);
    }
    command
}

/// What one sysbench run reports, and what the relay spent on it.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    /// Queries or transactions per second, as the workload's metric says.
    rate: f64,
    /// Statements sent (for read-write, the statements of every transaction).
    queries: u64,
    ignored_errors: u64,
    /// CPU time of the relay's threads during the run, in nanoseconds (none for a direct connection).
    relay_cpu_ns: Option<u64>,
}

impl Run {
    /// The relay's CPU time per statement, in microseconds.
    fn relay_us_per_query(&self) -> Option<f64> {
        Some(self.relay_cpu_ns? as f64 / 1000.0 / self.queries.max(1) as f64)
    }
}

/// Runs `workload` against `endpoint` for `seconds`.
fn run_once(workload: &Workload, endpoint: &Endpoint, seconds: u32) -> anyhow::Result<Run> {
    let mut command = sysbench(workload, endpoint);
    command.arg(format!("--time={seconds}")).args(["--events=0", "--report-interval=0", "run"]);
    let cpu_before = endpoint.relay.map(process_cpu_ns).transpose()?;
    let output = command.output_ok()?;
    let cpu_after = endpoint.relay.map(process_cpu_ns).transpose()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let run = parse_run(&text, workload.metric)
        .with_context(|| format!("sysbench's output against {}:\n{text}", endpoint.name))?;
    let relay_cpu_ns = cpu_before.zip(cpu_after).map(|(before, after)| after.saturating_sub(before));
    Ok(Run { relay_cpu_ns, ..run })
}

/// Reads a run's rate, statements and errors from sysbench's output; a reconnect fails the run.
fn parse_run(output: &str, metric: Metric) -> anyhow::Result<Run> {
    let line = |label: &str| output.lines().map(str::trim).find_map(|line| line.strip_prefix(label));
    let count = |label: &str| -> anyhow::Result<u64> {
        let rest = line(label).with_context(|| format!("no `{label}`"))?;
        Ok(rest.split_whitespace().next().context("no count")?.parse()?)
    };
    let label = if let Metric::Qps = metric { "queries:" } else { "transactions:" };
    let rest = line(label).with_context(|| format!("no `{label}`"))?;
    let rate = rest.split('(').nth(1).and_then(|r| r.split_whitespace().next()).context("no rate")?.parse()?;
    ensure!(count("reconnects:")? == 0, "sysbench reconnected");
    Ok(Run { rate, queries: count("queries:")?, ignored_errors: count("ignored errors:")?, relay_cpu_ns: None })
}

// ---------------------------------------------------------------------------------------------------------------
// Measuring

/// The runs of one workload: `runs[round][endpoint]`, endpoints in [direct, HAProxy, proxy] order (those of the
/// workload's transport).
struct Measured {
    workload: &'static Workload,
    runs: Vec<[Run; 3]>,
}

/// A short run through each endpoint (not counted), to warm the server's buffer pool and every code path, and to
/// check the endpoint's transport: the server must count TLS handshakes during a TLS endpoint's run and none
/// during a plaintext one's.
fn warm_up(harness: &Runtime, server: &MariaDb, endpoints: &Endpoints) -> anyhow::Result<()> {
    for endpoint in endpoints.all() {
        let before = harness.block_on(tls_handshakes(server))?;
        run_once(&WORKLOADS[0], endpoint, 2)?;
        let handshakes = harness.block_on(tls_handshakes(server))? - before;
        ensure!(
            (handshakes > 0) == endpoint.tls.is_some(),
            "{}: the server accepted {handshakes} TLS handshake(s) during its warm-up run",
            endpoint.name
        );
    }
    Ok(())
}

/// Each workload's rounds, against the endpoints of its transport.
fn measure_all(endpoints: &Endpoints, options: &Options) -> anyhow::Result<Vec<Measured>> {
    WORKLOADS.iter().map(|workload| measure(workload, endpoints.of(workload.transport), options)).collect()
}

/// `options.rounds` rounds of `workload`, each running the three endpoints one after the other.
fn measure(workload: &'static Workload, endpoints: &[Endpoint; 3], options: &Options) -> anyhow::Result<Measured> {
    let mut runs = Vec::with_capacity(options.rounds);
    for round in 1..=options.rounds {
        let mut one = [Run::default(); 3];
        for (run, endpoint) in one.iter_mut().zip(endpoints) {
            *run = run_once(workload, endpoint, options.seconds)?;
        }
        eprintln!(
            "{} × {} round {round}/{}: {:.0} / {:.0} / {:.0} {} (direct / HAProxy / proxy)",
            workload.label(),
            workload.threads,
            options.rounds,
            one[0].rate,
            one[1].rate,
            one[2].rate,
            workload.metric.label()
        );
        runs.push(one);
    }
    Ok(Measured { workload, runs })
}

impl Measured {
    /// The rates of endpoint `i` over the rounds.
    fn rates(&self, i: usize) -> Spread {
        Spread::of(self.runs.iter().map(|round| round[i].rate).collect())
    }

    /// The proxy's rate over endpoint `i`'s, round by round.
    fn proxy_over(&self, i: usize) -> Spread {
        Spread::of(self.runs.iter().map(|round| round[2].rate / round[i].rate).collect())
    }

    /// The relay's CPU time per statement at endpoint `i` over the rounds, in microseconds.
    fn relay_cpu(&self, i: usize) -> Option<Spread> {
        let values: Option<Vec<f64>> = self.runs.iter().map(|round| round[i].relay_us_per_query()).collect();
        values.map(Spread::of)
    }

    fn ignored_errors(&self) -> [u64; 3] {
        let sum = |i: usize| self.runs.iter().map(|round| round[i].ignored_errors).sum();
        [sum(0), sum(1), sum(2)]
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Reporting

/// A ratio the issue asks for, and the floor below which the proxy is not acceptable.
struct Target {
    goal: f64,
    floor: f64,
}

impl Target {
    fn verdict(&self, ratio: f64) -> &'static str {
        if ratio >= self.goal {
            "met"
        } else if ratio >= self.floor {
            "**not met** (above the floor)"
        } else {
            "**not met, below the floor**"
        }
    }
}

/// The machine, the versions and the settings of a run.
struct Setup {
    header: Header,
    rounds: usize,
    seconds: u32,
}

impl Setup {
    fn describe(harness: &Runtime, server: &MariaDb, options: &Options) -> anyhow::Result<Setup> {
        let mariadb = harness.block_on(mariadb_version(server))?;
        let header = Header::new(&options.command, versions(&mariadb)?);
        Ok(Setup { header, rounds: options.rounds, seconds: options.seconds })
    }
}

/// Everything the bench prints and writes.
struct Report {
    setup: Setup,
    results: Vec<Measured>,
    busy: Busy,
}

impl Report {
    /// The Markdown of the measured part of the `passthrough` section.
    fn render(&self) -> String {
        let mut out = String::new();
        self.render_setup(&mut out);
        self.render_tables(&mut out);
        self.render_targets(&mut out);
        self.render_runs(&mut out);
        out
    }

    fn render_setup(&self, out: &mut String) {
        let s = &self.setup;
        s.header.render(out);
        let _ = writeln!(
            out,
            "- One MariaDB server (sandbox settings) serving TLS with certificates made at bench time; HAProxy in \
             `mode tcp` (default threads); `csmh-proxy serve` (the binary cargo built with the bench, `bench` \
             profile = `release`), every flag off, twice: for plaintext with `[backends.*.tls] mode = \"disabled\"`, \
             for TLS with `[listen.tls]` and `mode = \"required\"`. sysbench table: 1 × {TABLE_SIZE} rows, prepared \
             directly."
        );
        let _ = writeln!(
            out,
            "- Round(s) per workload: {}, each running direct, HAProxy, proxy for {} s apiece, after a 2 s \
             warm-up run of each of the six (three plaintext, three TLS). {}\n",
            s.rounds,
            s.seconds,
            self.busy.sentence()
        );
        let _ = writeln!(
            out,
            "Medians (min–max) over the rounds; the ratios are the median (min–max) of the per-round ratios. \
             CPU is the relay process's CPU time (all threads, user + system) per statement.\n"
        );
    }

    /// The rows of `transport`, in the order they were measured.
    fn rows(&self, transport: Transport) -> impl Iterator<Item = &Measured> {
        self.results.iter().filter(move |m| m.workload.transport == transport)
    }

    /// Every row: plaintext, then TLS.
    fn all_rows(&self) -> impl Iterator<Item = &Measured> {
        self.rows(Transport::Plaintext).chain(self.rows(Transport::Tls))
    }

    /// The plaintext table, then the TLS one, with the same columns.
    fn render_tables(&self, out: &mut String) {
        self.render_table(out, Transport::Plaintext);
        let _ = writeln!(
            out,
            "**TLS on both legs** (the same server and relays, sysbench with `--mysql-ssl=on`): direct = sysbench's \
             TLS to the server; HAProxy = sysbench's TLS relayed end to end to the server; proxy = sysbench's TLS \
             ended by the proxy (`[listen.tls]`), which opens its own TLS to the server (`mode = \"required\"`).\n"
        );
        self.render_table(out, Transport::Tls);
    }

    /// The table of the rows of `transport`, and the errors sysbench ignored in them.
    fn render_table(&self, out: &mut String, transport: Transport) {
        let _ = writeln!(
            out,
            "| # | workload | threads | unit | direct | HAProxy | proxy | proxy/direct | proxy/HAProxy | \
             HAProxy CPU µs/stmt | proxy CPU µs/stmt |"
        );
        let _ = writeln!(out, "|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|");
        for m in self.rows(transport) {
            let w = m.workload;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                w.benchmark,
                w.label(),
                w.threads,
                w.metric.label(),
                m.rates(0).rate(),
                m.rates(1).rate(),
                m.rates(2).rate(),
                m.proxy_over(0).ratio(),
                m.proxy_over(1).ratio(),
                Spread::micros(m.relay_cpu(1)),
                Spread::micros(m.relay_cpu(2))
            );
        }
        let errors: Vec<String> = self
            .rows(transport)
            .filter(|m| m.ignored_errors().iter().any(|&n| n > 0))
            .map(|m| format!("{} × {}: {:?}", m.workload.label(), m.workload.threads, m.ignored_errors()))
            .collect();
        if !errors.is_empty() {
            let _ = writeln!(
                out,
                "\nErrors sysbench ignored and retried (deadlocks), direct / HAProxy / proxy: {}.",
                errors.join("; ")
            );
        }
        out.push('\n');
    }

    /// The issue's targets on benchmark 1, then the same yardstick on benchmark 2 and on the TLS rows.
    fn render_targets(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "Targets (issue 5, benchmark 1: text point selects): proxy/direct ≥ {:.2} at 1 thread (floor {:.2}), \
             proxy/HAProxy ≥ {:.2} at 8 threads (floor {:.2}).\n",
            VS_DIRECT_AT_1.goal, VS_DIRECT_AT_1.floor, VS_HAPROXY_AT_8.goal, VS_HAPROXY_AT_8.floor
        );
        for m in self.all_rows() {
            let (name, target, ratio) = match m.workload.threads {
                1 => ("proxy/direct", &VS_DIRECT_AT_1, m.proxy_over(0).median),
                _ => ("proxy/HAProxy", &VS_HAPROXY_AT_8, m.proxy_over(1).median),
            };
            let scope = if m.workload.has_target() { "target" } else { "same yardstick" };
            let _ = writeln!(
                out,
                "- {} × {}, {name} {ratio:.3} ≥ {:.2}: {} ({scope})",
                m.workload.label(),
                threads(m.workload.threads),
                target.goal,
                target.verdict(ratio)
            );
        }
        out.push('\n');
    }

    /// Every run's rate, for whoever wants more than medians.
    fn render_runs(&self, out: &mut String) {
        let _ = writeln!(out, "<details><summary>Every run (direct / HAProxy / proxy, by round)</summary>\n");
        for m in self.all_rows() {
            let rounds: Vec<String> = m
                .runs
                .iter()
                .map(|round| format!("{:.0} / {:.0} / {:.0}", round[0].rate, round[1].rate, round[2].rate))
                .collect();
            let w = m.workload;
            let _ = writeln!(out, "- {} × {} ({}): {}", w.label(), w.threads, w.metric.label(), rounds.join(" · "));
        }
        let _ = writeln!(out, "\n</details>");
    }
}
