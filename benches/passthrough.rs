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
//! `<!-- passthrough:measured:begin -->` and `<!-- passthrough:measured:end -->` (or, the first time, into the
//! `passthrough` section), unless `--no-write` is given.
//!
//! Every process started here is killed when the bench ends, panics included (guards' `Drop`), and with the
//! bench if it is killed (`PR_SET_PDEATHSIG`).

use std::fmt::Write as _;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use csmh_proxy::sandbox::{Account, MariaDb, ProxyToml, find_program, install_packages, is_root};
use mysql_async::prelude::Queryable;
use tls::{CertFiles, TestPki};
use tokio::runtime::Runtime;

/// The integration tests' certificate maker (rcgen), shared rather than copied.
#[path = "../tests/support/tls.rs"]
mod tls;

/// The database sysbench works in.
const DATABASE: &str = "sbtest";
/// Rows of sysbench's one table (its default size).
const TABLE_SIZE: u32 = 10_000;
/// The lock every benchmark of this project measures under.
const BENCH_LOCK: &str = "/tmp/csmh-bench.lock";
/// The results file, and the markers of the part this bench rewrites.
const RESULTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/RESULTS.md");
const SECTION: (&str, &str) = ("<!-- passthrough:begin -->", "<!-- passthrough:end -->");
const MEASURED: (&str, &str) = ("<!-- passthrough:measured:begin -->", "<!-- passthrough:measured:end -->");
/// The other benchmarks' section, written when this bench creates the file.
const ROUTING_SECTION: (&str, &str) = ("<!-- routing:begin -->", "<!-- routing:end -->");

/// Issue 5's targets and the floors below which the proxy is not acceptable at all.
const VS_DIRECT_AT_1: Target = Target { goal: 0.90, floor: 0.85 };
const VS_HAPROXY_AT_8: Target = Target { goal: 1.2, floor: 1.0 };

fn main() -> anyhow::Result<()> {
    let options = Options::parse(std::env::args().skip(1))?;
    ensure_tools()?;
    let certificates = Certificates::make()?;
    let harness = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let server = harness.block_on(start_server(&certificates))?;
    let proxy = ProxyProcess::start(server.addr(), None)?;
    let tls_proxy = ProxyProcess::start(server.addr(), Some(&certificates.proxy))?;
    let haproxy = HaProxy::start(server.addr())?;
    let endpoints = Endpoints::new(&server, &haproxy, &proxy, &tls_proxy, &certificates.sysbench_dir);
    for endpoint in &endpoints.plaintext {
        harness.block_on(check_login(endpoint))?;
    }
    sysbench(&WORKLOADS[0], &endpoints.plaintext[0]).arg("prepare").output_ok()?;

    let lock = BenchLock::acquire()?;
    let setup = Setup::describe(&harness, &server, &options)?;
    let ours = [server.pid(), haproxy.process.pid(), proxy.process.pid(), tls_proxy.process.pid()];
    let before = CpuLedger::read(&ours);
    warm_up(&harness, &server, &endpoints)?;
    let results = measure_all(&endpoints, &options)?;
    let interference = CpuLedger::read(&ours).others_share_since(&before);
    let load_after = load_average();

    let report = Report { setup, results, load_after, interference };
    let text = report.render();
    println!("\n{text}");
    if options.write {
        // Still under the lock, so that two benchmarks never rewrite the shared file at once.
        write_results(Path::new(RESULTS), &text)?;
        println!("written to {RESULTS}");
    }
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

/// Installs sysbench and HAProxy with apt-get when they are missing (MariaDB is installed by the sandbox).
fn ensure_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = ["sysbench", "haproxy"].into_iter().filter(|p| find_program(p).is_none()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    ensure!(is_root(), "{list} not installed; install with: sudo apt-get install -y {list}");
    eprintln!("installing {list} with apt-get");
    install_packages(&missing)?;
    Ok(())
}

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

/// The `csmh-proxy` binary cargo built beside this bench (same profile), serving a `proxy.toml` in a temporary
/// directory: the proxy exactly as `csmh-proxy serve` runs in production, in a process of its own like HAProxy.
struct ProxyProcess {
    // Before `dir`: the process goes before its files.
    process: ChildGuard,
    _dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl ProxyProcess {
    /// Serves a free port on 127.0.0.1 in front of `server`, every flag off: in plaintext on both legs without
    /// `tls`, else with TLS on both legs, `tls` being the certificate it shows clients (see [`proxy_tls`]).
    fn start(server: SocketAddr, tls: Option<&CertFiles>) -> anyhow::Result<ProxyProcess> {
        let dir = tempfile::Builder::new().prefix("csmh-bench-proxy-").tempdir()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let config = dir.path().join("proxy.toml");
        std::fs::write(&config, ProxyToml::edx(addr, server, server).render() + &proxy_tls(tls))?;
        let log = File::create(dir.path().join("proxy.log"))?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_csmh-proxy"));
        command.arg("serve").arg("--no-watch").arg("--config").arg(&config);
        command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let mut process = ChildGuard::spawn(command, "csmh-proxy")?;
        wait_until_listening(&mut process, addr)?;
        Ok(ProxyProcess { process, _dir: dir, addr })
    }
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

/// HAProxy relaying TCP from a free port on 127.0.0.1 to the server, with its configuration in a temporary
/// directory.
struct HaProxy {
    // Before `dir`: the process goes before its files.
    process: ChildGuard,
    _dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl HaProxy {
    fn start(server: SocketAddr) -> anyhow::Result<HaProxy> {
        let dir = tempfile::Builder::new().prefix("csmh-bench-haproxy-").tempdir()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(&config, haproxy_config(addr, server))?;
        let log = File::create(dir.path().join("haproxy.log"))?;
        let mut command = Command::new(find_program("haproxy").context("haproxy not found")?);
        // -db: stay in the foreground, as this process's child.
        command.arg("-db").arg("-f").arg(&config).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let mut process = ChildGuard::spawn(command, "haproxy")?;
        wait_until_listening(&mut process, addr)?;
        Ok(HaProxy { process, _dir: dir, addr })
    }
}

/// Polls until `addr` accepts TCP connections, failing if `process` exits or 10 s pass.
fn wait_until_listening(process: &mut ChildGuard, addr: SocketAddr) -> anyhow::Result<()> {
    let started = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        process.check_alive()?;
        ensure!(started.elapsed() < Duration::from_secs(10), "{} does not listen on {addr}", process.name);
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The smallest HAProxy configuration that relays TCP; threads and buffers are HAProxy's defaults.
fn haproxy_config(listen: SocketAddr, server: SocketAddr) -> String {
    format!(
        "global\n    maxconn 1000\n\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n\n\
         listen mysql\n    bind {listen}\n    server mariadb {server}\n"
    )
}

/// A port no one listens on right now on 127.0.0.1.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// A child process killed and reaped when this guard is dropped, and killed by the kernel if the bench dies.
struct ChildGuard {
    child: Child,
    name: &'static str,
}

impl ChildGuard {
    fn spawn(mut command: Command, name: &'static str) -> anyhow::Result<ChildGuard> {
        die_with_bench(&mut command);
        let child = command.spawn().with_context(|| format!("start {name}"))?;
        Ok(ChildGuard { child, name })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails, naming the process, if it has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!("{} exited: {status}", self.name),
            None => Ok(()),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes the kernel kill `command`'s process when the thread that forks it (the bench's main thread) exits.
fn die_with_bench(command: &mut Command) {
    // SAFETY: the hook makes one async-signal-safe system call and does not allocate.
    unsafe {
        command.pre_exec(|| {
            // SAFETY: prctl(PR_SET_PDEATHSIG) only changes the calling process's own attribute.
            match libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        })
    };
}

/// Logs in through `endpoint` as the application account, as sysbench will (in plaintext: this build of
/// mysql_async has no TLS; the warm-up run checks the TLS endpoints).
async fn check_login(endpoint: &Endpoint) -> anyhow::Result<()> {
    let conn = mysql_async::Conn::new(Account::app().opts(endpoint.addr, Some(DATABASE)))
        .await
        .with_context(|| format!("log in through {} at {}", endpoint.name, endpoint.addr))?;
    Ok(conn.disconnect().await?)
}

/// An exclusive `flock` on [`BENCH_LOCK`], held until dropped (closing the file releases it).
struct BenchLock {
    _file: File,
}

impl BenchLock {
    fn acquire() -> anyhow::Result<BenchLock> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(BENCH_LOCK)?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            eprintln!("waiting for {BENCH_LOCK}: another benchmark is measuring");
            // SAFETY: as above; blocks until the lock is free.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(std::io::Error::last_os_error()).context(BENCH_LOCK);
            }
        }
        Ok(BenchLock { _file: file })
    }
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
    let account = Account::app();
    let mut command = Command::new(find_program("sysbench").unwrap_or_else(|| "sysbench".into()));
    command
        .arg(workload.script)
        .args(["--db-driver=mysql", "--mysql-host=127.0.0.1"])
        .arg(format!("--mysql-port={}", endpoint.addr.port()))
        .arg(format!("--mysql-user={}", account.user))
        .arg(format!("--mysql-password={}", account.password))
        .arg(format!("--mysql-db={DATABASE}"))
        .arg(format!("--db-ps-mode={}", workload.ps_mode))
        .args(["--tables=1", &format!("--table-size={TABLE_SIZE}")])
        .arg(format!("--threads={}", workload.threads))
        .stdin(Stdio::null());
    if let Some(dir) = &endpoint.tls {
        command.arg("--mysql-ssl=on").current_dir(dir);
    }
    command
}

/// Runs a command to completion, failing with its output unless it succeeded.
trait OutputOk {
    fn output_ok(&mut self) -> anyhow::Result<Output>;
}

impl OutputOk for Command {
    fn output_ok(&mut self) -> anyhow::Result<Output> {
        die_with_bench(self);
        let output = self.output().with_context(|| format!("run {:?}", self.get_program()))?;
        ensure!(
            output.status.success(),
            "{self:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(output)
    }
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
// CPU accounting

/// The CPU time of every thread of process `pid` so far, in nanoseconds (the scheduler's own count).
fn process_cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let schedstat = std::fs::read_to_string(task?.path().join("schedstat")).unwrap_or_default();
        total += schedstat.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()).unwrap_or(0);
    }
    Ok(total)
}

/// Clock ticks of CPU time: the whole machine's busy time, and what this bench's processes used of it.
struct CpuLedger {
    at: Instant,
    machine_busy: u64,
    ours: u64,
}

impl CpuLedger {
    /// Reads the counters; `ours` are the long-lived processes, beside this one and its waited-for children
    /// (the sysbench runs).
    fn read(ours: &[u32]) -> CpuLedger {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<u64> =
            stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|n| n.parse().ok()).collect();
        // user, nice, system, idle, iowait, irq, softirq: busy is all but idle and iowait.
        let machine_busy = cpu.iter().take(7).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, n)| n).sum();
        let me = process_ticks("self", true);
        let ours = me + ours.iter().map(|pid| process_ticks(&pid.to_string(), false)).sum::<u64>();
        CpuLedger { at: Instant::now(), machine_busy, ours }
    }

    /// The share of the machine's CPU time that other processes (and interrupts outside ours) used since
    /// `before`: a concurrent build would show as tens of percent.
    fn others_share_since(&self, before: &CpuLedger) -> f64 {
        // SAFETY: sysconf has no preconditions.
        let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        let available = self.at.duration_since(before.at).as_secs_f64() * ticks_per_second * cpus;
        let others = (self.machine_busy - before.machine_busy).saturating_sub(self.ours - before.ours);
        others as f64 / available.max(1.0)
    }
}

/// User and system ticks of `/proc/<pid>/stat`, with those of waited-for children if `children`.
fn process_ticks(pid: &str, children: bool) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces: state is the first.
    let fields: Vec<u64> =
        stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    let take = if children { 11..15 } else { 11..13 };
    fields.get(take).map_or(0, |ticks| ticks.iter().sum())
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

/// A median with the smallest and largest value.
#[derive(Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Spread {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 };
        Spread { median, min: values[0], max: values[n - 1] }
    }

    fn rate(&self) -> String {
        format!("{:.0} ({:.0}–{:.0})", self.median, self.min, self.max)
    }

    fn ratio(&self) -> String {
        format!("**{:.3}** ({:.3}–{:.3})", self.median, self.min, self.max)
    }

    fn micros(spread: Option<Spread>) -> String {
        spread.map_or_else(|| "–".to_owned(), |s| format!("{:.1} ({:.1}–{:.1})", s.median, s.min, s.max))
    }
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
    date: String,
    command: String,
    machine: String,
    versions: String,
    rounds: usize,
    seconds: u32,
    load_before: String,
}

impl Setup {
    fn describe(harness: &Runtime, server: &MariaDb, options: &Options) -> anyhow::Result<Setup> {
        let mariadb: Option<String> = harness.block_on(async {
            let mut root = mysql_async::Conn::new(server.root_opts()).await?;
            let version = root.query_first("SELECT VERSION()").await?;
            root.disconnect().await?;
            Ok::<_, mysql_async::Error>(version)
        })?;
        let versions = format!(
            "MariaDB {}, {}, {}, {}",
            mariadb.unwrap_or_default(),
            first_line(Command::new(find_program("haproxy").context("haproxy")?).arg("-v"))
                .split(" - ")
                .next()
                .unwrap_or_default(),
            first_line(Command::new(find_program("sysbench").context("sysbench")?).arg("--version")),
            first_line(Command::new("rustc").arg("-V")),
        );
        Ok(Setup {
            date: first_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
            command: options.command.clone(),
            machine: machine(),
            versions,
            rounds: options.rounds,
            seconds: options.seconds,
            load_before: load_average(),
        })
    }
}

/// The first line a command prints, or `unknown`.
fn first_line(command: &mut Command) -> String {
    let output = command.stderr(Stdio::null()).output().ok();
    let text = output.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    text.lines().next().map_or_else(|| "unknown".to_owned(), |line| line.trim().to_owned())
}

/// `1 thread`, `8 threads`.
fn threads(n: u32) -> String {
    if n == 1 { "1 thread".to_owned() } else { format!("{n} threads") }
}

/// `2 × <CPU model>, <memory> GiB, Linux <release>`.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = proc_field(&cpuinfo, "model name").unwrap_or("unknown CPU");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib: f64 =
        proc_field(&meminfo, "MemTotal").and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} × {model}, {:.1} GiB RAM, Linux {}", kib / 1024.0 / 1024.0, kernel.trim())
}

/// The value of the first `name: value` line of a `/proc` file.
fn proc_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim())
    })
}

/// The 1, 5 and 15-minute load averages.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Everything the bench prints and writes.
struct Report {
    setup: Setup,
    results: Vec<Measured>,
    load_after: String,
    /// The share of the machine's CPU time other processes used while this bench measured.
    interference: f64,
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
        let _ = writeln!(out, "Measured {} with `{}`.\n", s.date, s.command);
        let _ = writeln!(out, "- Machine: {}.", s.machine);
        let _ = writeln!(out, "- Versions: {}.", s.versions);
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
             warm-up run of each of the six (three plaintext, three TLS). Load average before / after: {} / {} \
             (sysbench's threads count in it). Other processes used {:.1} % of the machine's CPU time while the \
             bench measured.\n",
            s.rounds,
            s.seconds,
            s.load_before,
            self.load_after,
            self.interference * 100.0
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

/// Puts `measured` into the results file: between this bench's `measured` markers if they are there (keeping
/// the notes around them), else as the whole `passthrough` section; creates the file with both benchmarks'
/// sections when it does not exist.
fn write_results(path: &Path, measured: &str) -> anyhow::Result<()> {
    let skeleton = format!(
        "# Benchmarks (issue 5)\n\n{}\n{}\n\n{}\n{}\n",
        ROUTING_SECTION.0, ROUTING_SECTION.1, SECTION.0, SECTION.1
    );
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => skeleton,
        Err(e) => return Err(e).context(path.display().to_string()),
    };
    let block = format!("{}\n{measured}{}", MEASURED.0, MEASURED.1);
    let updated = replace_between(&text, MEASURED, &block).or_else(|| {
        let section = format!(
            "{}\n## Passthrough: direct, HAProxy, proxy (benchmarks 1 and 2, and over TLS)\n\n{block}\n{}",
            SECTION.0, SECTION.1
        );
        replace_between(&text, SECTION, &section)
    });
    let updated = updated.with_context(|| format!("no {} … {} in {}", SECTION.0, SECTION.1, path.display()))?;
    let temporary = PathBuf::from(format!("{}.passthrough.tmp", path.display()));
    std::fs::write(&temporary, updated)?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}

/// `text` with everything from `markers.0` to `markers.1` (both included) replaced by `with`.
fn replace_between(text: &str, markers: (&str, &str), with: &str) -> Option<String> {
    let start = text.find(markers.0)?;
    let end = start + text[start..].find(markers.1)? + markers.1.len();
    Some(format!("{}{with}{}", &text[..start], &text[end..]))
}
