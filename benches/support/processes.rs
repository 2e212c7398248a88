//! The processes the end-to-end benchmarks run beside the MariaDB sandbox: HAProxy in `mode tcp` and
//! `csmh-proxy serve`, each a child process in a temporary directory of its own; the tools they need; and the
//! CPU time they and the rest of the machine use.
//!
//! Every process started here is killed when its guard is dropped, panics included, and with the bench if it is
//! killed (`PR_SET_PDEATHSIG`).

// Each bench uses its own part of this module.
#![allow(dead_code)]

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::report::load_average;
use anyhow::{Context, bail, ensure};
use csmh_proxy::sandbox::{Account, ProxyToml, find_program, install_packages, is_root};

/// Installs the Debian packages among `programs` (each named after its program, as `sysbench` and `haproxy` are)
/// with apt-get when they are missing; MariaDB is installed by the sandbox.
pub fn ensure_tools(programs: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = programs.iter().copied().filter(|p| find_program(p).is_none()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    ensure!(is_root(), "{list} not installed; install with: sudo apt-get install -y {list}");
    eprintln!("installing {list} with apt-get");
    install_packages(&missing)?;
    Ok(())
}

/// The `csmh-proxy` binary cargo built beside the bench (same profile), serving a `proxy.toml` in a temporary
/// directory: the proxy exactly as `csmh-proxy serve` runs in production, in a process of its own like HAProxy.
pub struct ProxyProcess {
    // Before `dir`: the process goes before its files.
    pub process: ChildGuard,
    _dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl ProxyProcess {
    /// Serves a free port on 127.0.0.1 in front of `server` (both backends), every flag off, with `extra` (TOML
    /// tables) after the sandbox's configuration.
    pub fn start(server: SocketAddr, extra: &str) -> anyhow::Result<ProxyProcess> {
        ProxyProcess::start_with(|addr| ProxyToml::edx(addr, server, server), extra)
    }

    /// Serves a free port on 127.0.0.1 with the configuration `toml` makes for that address, and `extra` (TOML
    /// tables) after it.
    pub fn start_with(toml: impl FnOnce(SocketAddr) -> ProxyToml, extra: &str) -> anyhow::Result<ProxyProcess> {
        let dir = tempfile::Builder::new().prefix("csmh-bench-proxy-").tempdir()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let config = dir.path().join("proxy.toml");
        std::fs::write(&config, toml(addr).render() + extra)?;
        let log = File::create(dir.path().join("proxy.log"))?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_csmh-proxy"));
        command.arg("serve").arg("--no-watch").arg("--config").arg(&config);
        command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let mut process = ChildGuard::spawn(command, "csmh-proxy")?;
        wait_until_listening(&mut process, addr).with_context(|| log_tail(&dir.path().join("proxy.log")))?;
        Ok(ProxyProcess { process, _dir: dir, addr })
    }
}

/// The end of a log file, for an error message.
fn log_tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!("its log ends:\n{}", lines[lines.len().saturating_sub(20)..].join("\n"))
}

/// HAProxy relaying TCP from a free port on 127.0.0.1 to the server, with its configuration in a temporary
/// directory.
pub struct HaProxy {
    // Before `dir`: the process goes before its files.
    pub process: ChildGuard,
    _dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl HaProxy {
    /// Starts HAProxy in front of `server`, returning once it listens.
    pub fn start(server: SocketAddr) -> anyhow::Result<HaProxy> {
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
pub struct ChildGuard {
    child: Child,
    name: &'static str,
}

impl ChildGuard {
    /// Starts `command`, named `name` in errors.
    fn spawn(mut command: Command, name: &'static str) -> anyhow::Result<ChildGuard> {
        die_with_bench(&mut command);
        let child = command.spawn().with_context(|| format!("start {name}"))?;
        Ok(ChildGuard { child, name })
    }

    /// The process's id.
    pub fn pid(&self) -> u32 {
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

/// sysbench running `script` (a bundled name or a Lua file) with its MySQL driver against the server or relay
/// on 127.0.0.1 at `port`, as the application account in `database`; the caller adds the rest.
pub fn sysbench(script: &str, port: u16, database: &str) -> Command {
    let account = Account::app();
    let mut command = Command::new(find_program("sysbench").unwrap_or_else(|| "sysbench".into()));
    command
        .arg(script)
        .args(["--db-driver=mysql", "--mysql-host=127.0.0.1"])
        .arg(format!("--mysql-port={port}"))
        .arg(format!("--mysql-user={}", account.user))
        .arg(format!("--mysql-password={}", account.password))
        .arg(format!("--mysql-db={database}"))
        .stdin(Stdio::null());
    command
}

/// Runs a command to completion, failing with its output unless it succeeded.
pub trait OutputOk {
    /// The command's output, once it exited successfully (and killed with the bench if the bench dies first).
    fn output_ok(&mut self) -> anyhow::Result<Output>;
}

impl OutputOk for Command {
    fn output_ok(&mut self) -> anyhow::Result<Output> {
        die_with_bench(self);
        let output = self.output().with_context(|| format!("run {:?}", self.get_program()))?;
        if !output.status.success() {
            let [stdout, stderr] = [&output.stdout, &output.stderr].map(|bytes| String::from_utf8_lossy(bytes));
            bail!("{self:?} failed ({}):\n{stdout}{stderr}", output.status);
        }
        Ok(output)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// CPU accounting

/// The CPU time of every thread of process `pid` so far, in nanoseconds (the scheduler's own count).
pub fn process_cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let schedstat = std::fs::read_to_string(task?.path().join("schedstat")).unwrap_or_default();
        total += schedstat.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()).unwrap_or(0);
    }
    Ok(total)
}

/// Watches how busy the machine is while a bench measures: started before the measurements, stopped after.
pub struct BusyWatch {
    ours: Vec<u32>,
    before: CpuLedger,
    load_before: String,
}

impl BusyWatch {
    /// Starts watching; `ours` are the bench's long-lived processes (server, relays).
    pub fn start(ours: Vec<u32>) -> BusyWatch {
        BusyWatch { before: CpuLedger::read(&ours), ours, load_before: load_average() }
    }

    /// What the machine did since the start.
    pub fn stop(self) -> Busy {
        let others = CpuLedger::read(&self.ours).others_share_since(&self.before);
        Busy { load_before: self.load_before, load_after: load_average(), others }
    }
}

/// How busy the machine was while a bench measured.
pub struct Busy {
    /// The 1, 5 and 15-minute load averages before and after.
    pub load_before: String,
    pub load_after: String,
    /// The share of the machine's CPU time that other processes used.
    pub others: f64,
}

impl Busy {
    /// The sentence a report says it in.
    pub fn sentence(&self) -> String {
        format!(
            "Load average before / after: {} / {} (the bench's clients count in it). Other processes used {:.1} % \
             of the machine's CPU time while the bench measured.",
            self.load_before,
            self.load_after,
            self.others * 100.0
        )
    }
}

/// Clock ticks of CPU time: the whole machine's busy time, and what the bench's processes used of it.
struct CpuLedger {
    at: Instant,
    machine_busy: u64,
    ours: u64,
}

impl CpuLedger {
    /// Reads the counters; `ours` are the long-lived processes, beside this one and its waited-for children
    /// (the client runs).
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
