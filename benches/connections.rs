//! Benchmark 4 of issue 5: the proxy's CPU per statement under load, and its resident memory with 1,000 idle
//! and 1,000 busy connections.
//!
//! The proxy runs as the release binary (`csmh-proxy serve`, built by `cargo bench`) in a child process, so its
//! CPU time and memory are its own: CPU is user + system time from `/proc/<pid>/stat`, memory is `VmRSS` from
//! `/proc/<pid>/status`. Three configurations are measured in turn, each with a fresh proxy: every flag off
//! (`passthrough`), the reading-both flags with both tables on server A (`both_one_server`, reads become two
//! statements sent together on the client's connection and merged) and with the extended table on server B (`both_two_servers`, reads are merged in the
//! proxy, and every client session gets its own connection to B).
//!
//! - CPU: 16 connections each run a bounded loop of one statement: a point select on `auth_user` (a pre-filter
//!   miss, relayed untouched) or edxapp's history read of one module (a hit: parsed and routed unless every flag
//!   is off). The proxy's CPU seconds divided by the statements run; the `edxapp` server's, for scale.
//! - Memory: `VmRSS` with no client, after 1,000 connections have logged in and each read one module's
//!   history (so across two servers each also holds its connection to B), while those 1,000 run 20 such reads
//!   each at once (the highest of samples every 10 ms), and after they closed. Per connection: the difference
//!   to no client, divided by 1,000.
//!
//! The servers' `max_connections` and this process's open-file limit are raised as needed (the children
//! inherit the limit). The proxy logs at `warn`. Everything listens on 127.0.0.1; the proxy and the servers are
//! killed when this process ends, by panic or signal too.
//!
//! Run: `cargo bench --bench connections` (root installs MariaDB with apt-get if missing). It prints Markdown
//! tables for `benches/RESULTS.md`. The bench takes the machine-wide lock `/tmp/csmh-bench.lock` for its whole
//! run so no other benchmark measures at the same time (do not wrap it in `flock(1)` on that file).

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use csmh_proxy::history::Flags;
use csmh_proxy::sandbox::{
    Account, CSMH_DB, EDXAPP_DB, EXTENDED_TABLE, MariaDb, OLD_TABLE, ProxyToml, create_edxapp_tables,
    create_extended_table,
};
use futures_util::StreamExt;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;

/// Client connections for the memory measurements.
const CONNECTIONS: usize = 1_000;
/// Statements each of the [`CONNECTIONS`] runs at once while busy.
const BUSY_STATEMENTS: usize = 20;
/// Connections running statements for the CPU measurement.
const LOAD_CONNECTIONS: usize = 16;
/// Statements each of them runs, per workload.
const LOAD_STATEMENTS: usize = 2_500;
/// Logins in flight at once while opening connections.
const LOGINS_IN_FLIGHT: usize = 32;
/// How long one configuration's measurements may take.
const TIME_LIMIT: Duration = Duration::from_secs(300);
/// Users in `auth_user` and modules with history (four rows each: three old, one extended).
const ROWS: u32 = 10_000;

/// One proxy configuration measured.
struct Scenario {
    name: &'static str,
    flags: Flags,
    two_servers: bool,
}

/// A statement the load runs, for connection `conn`'s `i`th iteration.
#[derive(Clone, Copy)]
enum Workload {
    /// A primary-key read of `auth_user`: not the history table.
    PointSelect,
    /// edxapp's history read of one module.
    HistoryRead,
}

impl Workload {
    fn sql(self, conn: usize, i: usize) -> String {
        let id = (conn * 7_919 + i * 104_729) % ROWS as usize + 1;
        match self {
            Workload::PointSelect => {
                format!(
                    "SELECT `auth_user`.`id`, `auth_user`.`username` FROM `auth_user` WHERE `auth_user`.`id` = {id}"
                )
            }
            Workload::HistoryRead => history_read(id),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Workload::PointSelect => "point select (miss)",
            Workload::HistoryRead => "history read (hit)",
        }
    }
}

/// edxapp's history read of one module, as Django writes it.
fn history_read(module: usize) -> String {
    let t = OLD_TABLE;
    let columns = ["id", "version", "created", "state", "grade", "max_grade", "student_module_id"];
    let columns: Vec<String> = columns.iter().map(|c| format!("`{t}`.`{c}`")).collect();
    format!(
        "SELECT {} FROM `{t}` WHERE `{t}`.`student_module_id` = {module} ORDER BY `{t}`.`id` DESC",
        columns.join(", ")
    )
}

/// The cost of one statement of a workload.
struct Cost {
    workload: Workload,
    /// The proxy's user and system CPU microseconds.
    user_us: f64,
    sys_us: f64,
    /// The `edxapp` server's CPU microseconds.
    server_us: f64,
    /// The proxy's system calls and context switches (from `perf stat`, when it runs).
    syscalls: Option<f64>,
    switches: Option<f64>,
}

/// What one scenario measured.
struct Measured {
    cpu: Vec<Cost>,
    rss_empty: u64,
    rss_idle: u64,
    rss_busy: u64,
    rss_closed: u64,
}

mod support;
use support::BenchLock;

fn main() {
    let _lock = BenchLock::acquire();
    raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("client runtime");
    let (a, b) = runtime.block_on(prepare_servers());
    let scenarios = [
        Scenario { name: "passthrough", flags: Flags::default(), two_servers: false },
        Scenario { name: "both_one_server", flags: reading_both(), two_servers: false },
        Scenario { name: "both_two_servers", flags: reading_both(), two_servers: true },
    ];
    let mut results = Vec::new();
    for scenario in &scenarios {
        let csmh = if scenario.two_servers { &b } else { &a };
        let proxy = ProxyProcess::start(scenario, &a, csmh);
        let measured = runtime.block_on(bounded(measure(&proxy, &a), scenario.name));
        results.push((scenario.name, measured));
    }
    print_report(&results);
    let _ = a.stop();
    let _ = b.stop();
}

fn reading_both() -> Flags {
    Flags { enable_csmh_extended: true, enable_reading_from_multiple_history_tables: true, read_only_from_csmhe: false }
}

// ---------------------------------------------------------------------------------------------------------------
// Servers

/// Two servers with the app account and room for every connection: `auth_user` and the old history table on
/// A, the extended table on A and on B.
async fn prepare_servers() -> (MariaDb, MariaDb) {
    let (a, b) = tokio::try_join!(MariaDb::start(), MariaDb::start()).expect("start MariaDB");
    let app = Account::app();
    a.create_account(&app, &[EDXAPP_DB, CSMH_DB]).await.expect("account on A");
    b.create_account(&app, &[CSMH_DB]).await.expect("account on B");
    let (mut on_a, mut on_b) = (root(&a).await, root(&b).await);
    let room = format!("SET GLOBAL max_connections = {}", 2 * CONNECTIONS + 100);
    for conn in [&mut on_a, &mut on_b] {
        conn.query_drop(&room).await.expect("max_connections");
    }
    let next_id = 4 * ROWS + 10_000;
    create_edxapp_tables(&mut on_a, EDXAPP_DB).await.expect("edxapp tables");
    create_extended_table(&mut on_a, CSMH_DB, next_id.into()).await.expect("extended table on A");
    create_extended_table(&mut on_b, CSMH_DB, next_id.into()).await.expect("extended table on B");
    fill(&mut on_a, true).await;
    fill(&mut on_b, false).await;
    (a, b)
}

async fn root(server: &MariaDb) -> Conn {
    Conn::new(server.root_opts()).await.expect("root logs in")
}

/// `auth_user` and three old history rows per module (on A), one extended row per module (on both).
async fn fill(conn: &mut Conn, edxapp: bool) {
    let state = "'{\"seed\": 1, \"attempts\": 2, \"done\": true, \"student_answers\": {\"2_1\": \"choice_2\"}}'";
    let extended = format!(
        "INSERT INTO `{CSMH_DB}`.`{EXTENDED_TABLE}` (version, created, state, grade, max_grade, id, \
         student_module_id) SELECT NULL, NOW(6), {state}, 1, 1, {} + seq, seq FROM `{CSMH_DB}`.seq_1_to_{ROWS}",
        3 * ROWS + 10_000
    );
    conn.query_drop(extended).await.expect("fill the extended table");
    if !edxapp {
        return;
    }
    let users = format!(
        "INSERT INTO `{EDXAPP_DB}`.`auth_user` (id, username) SELECT seq, CONCAT('learner', seq) \
         FROM `{EDXAPP_DB}`.seq_1_to_{ROWS}"
    );
    let old = format!(
        "INSERT INTO `{EDXAPP_DB}`.`{OLD_TABLE}` (id, version, created, state, grade, max_grade, student_module_id) \
         SELECT seq, NULL, NOW(6), {state}, 0, 1, (seq - 1) % {ROWS} + 1 FROM `{EDXAPP_DB}`.seq_1_to_{}",
        3 * ROWS
    );
    conn.query_drop(users).await.expect("fill auth_user");
    conn.query_drop(old).await.expect("fill the old table");
}

/// Lets this process and its children open as many files as the hard limit allows (each client connection
/// costs a descriptor here and two in the proxy).
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    let needed = 3 * CONNECTIONS as u64 + 200;
    assert!(limit.rlim_cur >= needed, "the open-files limit is {}, {needed} are needed", limit.rlim_cur);
}

// ---------------------------------------------------------------------------------------------------------------
// The proxy process

/// The proxy binary running in a child process, killed (and reaped) when dropped, and by the kernel when this
/// process dies.
struct ProxyProcess {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl ProxyProcess {
    fn start(scenario: &Scenario, edxapp: &MariaDb, csmh: &MariaDb) -> ProxyProcess {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let addr = free_addr();
        let toml = ProxyToml { flags: scenario.flags, ..ProxyToml::edx(addr, edxapp.addr(), csmh.addr()) };
        let config = dir.path().join("proxy.toml");
        std::fs::write(&config, toml.render()).expect("write proxy.toml");
        let log = std::fs::File::create(dir.path().join("proxy.log")).expect("create the proxy's log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_csmh-proxy"));
        command.arg("--config").arg(&config).args(["serve", "--no-watch"]);
        command.env("RUST_LOG", "warn").stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        let child = spawn_tied(command).expect("start the proxy binary");
        let proxy = ProxyProcess { child, addr, _dir: dir };
        proxy.wait_until_listening();
        proxy
    }

    fn wait_until_listening(&self) {
        let started = Instant::now();
        while TcpStream::connect(self.addr).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "the proxy did not listen on {}", self.addr);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `command` so that the kernel kills it when this process dies (the main thread spawns, and lives as
/// long as the process).
fn spawn_tied(mut command: Command) -> std::io::Result<Child> {
    // SAFETY: the hook only makes one system call (prctl) and does not allocate.
    unsafe {
        command.pre_exec(|| match libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        })
    };
    command.spawn()
}

/// `perf stat` counting a process's system calls and context switches, until [`PerfStat::stop`].
struct PerfStat {
    child: Child,
}

impl PerfStat {
    /// Attaches to `pid`; `None` when perf is not installed or may not attach.
    fn start(pid: u32) -> Option<PerfStat> {
        let perf = csmh_proxy::sandbox::find_program("perf")?;
        let mut command = Command::new(perf);
        command.args(["stat", "-x,", "-e", "raw_syscalls:sys_enter,context-switches", "-p", &pid.to_string()]);
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let child = spawn_tied(command).ok()?;
        std::thread::sleep(Duration::from_millis(300));
        Some(PerfStat { child })
    }

    /// Stops counting: the system calls and context switches seen.
    fn stop(self) -> Option<(f64, f64)> {
        let pid = libc::pid_t::try_from(self.child.id()).ok()?;
        // SAFETY: pid is this process's unreaped child.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let output = self.child.wait_with_output().ok()?;
        let text = String::from_utf8_lossy(&output.stderr);
        let count = |event: &str| {
            let line = text.lines().find(|l| l.split(',').nth(2) == Some(event))?;
            line.split(',').next()?.parse::<f64>().ok()
        };
        Some((count("raw_syscalls:sys_enter")?, count("context-switches")?))
    }
}

/// A loopback address no one listens on right now.
fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    listener.local_addr().expect("a bound listener has an address")
}

/// User + system CPU seconds of process `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let (user, sys) = user_sys_seconds(pid);
    user + sys
}

/// User and system CPU seconds of process `pid` so far.
fn user_sys_seconds(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // The fields after the command name (which is in parentheses and may hold spaces): utime and stime are the
    // 12th and 13th of them.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("a stat line") + 2..].split(' ').collect();
    let ticks = |i: usize| fields[i].parse::<u64>().expect("utime and stime are numbers") as f64;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) / hz, ticks(12) / hz)
}

/// A `kB` line of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    let line = status.lines().find(|l| l.starts_with(key)).expect("the key is in /proc/<pid>/status");
    line[key.len()..].trim().trim_end_matches(" kB").trim().parse().expect("a number of kB")
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

// ---------------------------------------------------------------------------------------------------------------
// Measuring

/// `work`, or a panic (which stops the proxy and the servers) if it takes longer than [`TIME_LIMIT`].
async fn bounded<T>(work: impl std::future::Future<Output = T>, what: &str) -> T {
    match tokio::time::timeout(TIME_LIMIT, work).await {
        Ok(done) => done,
        Err(_) => panic!("{what} did not finish within {TIME_LIMIT:?}"),
    }
}

async fn measure(proxy: &ProxyProcess, edxapp: &MariaDb) -> Measured {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_empty = rss_kib(proxy.pid());
    let mut cpu = Vec::new();
    for workload in [Workload::PointSelect, Workload::HistoryRead] {
        cpu.push(cpu_per_statement(proxy, edxapp, workload).await);
    }
    let mut conns = open(proxy.addr, CONNECTIONS).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = rss_kib(proxy.pid());
    let rss_busy = while_sampling_rss(proxy.pid(), run_all(&mut conns, Workload::HistoryRead, BUSY_STATEMENTS)).await;
    for conn in conns {
        let _ = conn.disconnect().await;
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let rss_closed = rss_kib(proxy.pid());
    Measured { cpu, rss_empty, rss_idle, rss_busy, rss_closed }
}

/// What one statement of `workload` costs while [`LOAD_CONNECTIONS`] run it (after a warm-up of a tenth as
/// many).
async fn cpu_per_statement(proxy: &ProxyProcess, edxapp: &MariaDb, workload: Workload) -> Cost {
    let mut conns = open(proxy.addr, LOAD_CONNECTIONS).await;
    run_all(&mut conns, workload, LOAD_STATEMENTS / 10).await;
    let perf = PerfStat::start(proxy.pid());
    let ((user_before, sys_before), server_before) = (user_sys_seconds(proxy.pid()), cpu_seconds(edxapp.pid()));
    run_all(&mut conns, workload, LOAD_STATEMENTS).await;
    let ((user_after, sys_after), server_after) = (user_sys_seconds(proxy.pid()), cpu_seconds(edxapp.pid()));
    let counted = perf.and_then(PerfStat::stop);
    for conn in conns {
        let _ = conn.disconnect().await;
    }
    let statements = (LOAD_CONNECTIONS * LOAD_STATEMENTS) as f64;
    let per = |seconds: f64| seconds * 1e6 / statements;
    Cost {
        workload,
        user_us: per(user_after - user_before),
        sys_us: per(sys_after - sys_before),
        server_us: per(server_after - server_before),
        syscalls: counted.map(|(calls, _)| calls / statements),
        switches: counted.map(|(_, switches)| switches / statements),
    }
}

/// `count` connections through the proxy as edxapp's account, each having run one history read (which opens
/// its connection to the `csmh` server, across two servers), [`LOGINS_IN_FLIGHT`] at a time. (All at once,
/// the burst of connections overflows the `csmh` server's accept queue, and the proxy waits forever for the
/// greeting of a connection the server dropped: its login has no timeout.)
async fn open(addr: SocketAddr, count: usize) -> Vec<Conn> {
    let opts = Account::app().opts(addr, Some(EDXAPP_DB));
    let logins = futures_util::stream::iter(0..count).map(|n| {
        let opts = opts.clone();
        async move {
            let mut conn = Conn::new(opts).await.unwrap_or_else(|e| panic!("cannot log in through the proxy: {e}"));
            conn.query_drop(history_read(n % ROWS as usize + 1)).await.unwrap_or_else(|e| panic!("first read: {e}"));
            conn
        }
    });
    logins.buffer_unordered(LOGINS_IN_FLIGHT).collect().await
}

/// Every connection runs `statements` statements of `workload`, all connections at once.
async fn run_all(conns: &mut [Conn], workload: Workload, statements: usize) {
    let loops = conns.iter_mut().enumerate().map(|(n, conn)| async move {
        for i in 0..statements {
            conn.query_drop(workload.sql(n, i)).await.unwrap_or_else(|e| panic!("{}: {e}", workload.name()));
        }
    });
    futures_util::future::join_all(loops).await;
}

/// Runs `work` while a thread samples the proxy's `VmRSS` every 10 ms; returns the highest sample.
async fn while_sampling_rss(pid: u32, work: impl std::future::Future<Output = ()>) -> u64 {
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut highest = 0;
            while !done.load(Ordering::Relaxed) {
                highest = highest.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            highest
        })
    };
    work.await;
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("the sampler ends")
}

// ---------------------------------------------------------------------------------------------------------------
// Report

fn print_report(results: &[(&str, Measured)]) {
    println!("\nCPU: {LOAD_CONNECTIONS} connections x {LOAD_STATEMENTS} statements per workload\n");
    println!(
        "| configuration | workload | proxy CPU µs/stmt (user + sys) | proxy syscalls/stmt | proxy context \
         switches/stmt | edxapp server CPU µs/stmt |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    let optional = |value: Option<f64>| value.map_or("–".to_owned(), |v| format!("{v:.1}"));
    for (name, measured) in results {
        for c in &measured.cpu {
            println!(
                "| {name} | {} | {:.1} ({:.1} + {:.1}) | {} | {} | {:.1} |",
                c.workload.name(),
                c.user_us + c.sys_us,
                c.user_us,
                c.sys_us,
                optional(c.syscalls),
                optional(c.switches),
                c.server_us
            );
        }
    }
    println!(
        "\nMemory (VmRSS of the proxy): {CONNECTIONS} connections, busy = {BUSY_STATEMENTS} history reads each, all at once\n"
    );
    println!(
        "| configuration | no client KiB | 1,000 idle KiB | per idle conn KiB | 1,000 busy (peak) KiB | per busy conn KiB | after close KiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, m) in results {
        let per = |rss: u64| rss.saturating_sub(m.rss_empty) as f64 / CONNECTIONS as f64;
        println!(
            "| {name} | {} | {} | {:.1} | {} | {:.1} | {} |",
            m.rss_empty,
            m.rss_idle,
            per(m.rss_idle),
            m.rss_busy,
            per(m.rss_busy),
            m.rss_closed
        );
    }
}
