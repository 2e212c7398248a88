//! One running `mariadbd` ([`MariaDb`]) and the machinery that keeps it from outliving its owner: servers are
//! forked from a dedicated spawner thread with `PR_SET_PDEATHSIG`, killed at exit, and the directories a
//! killed owner leaves behind are swept by the next start. A new server is ready once root logs in to it.

use std::ffi::{OsStr, OsString};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, Once, PoisonError, TryLockError, mpsc};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use tempfile::TempDir;

use super::accounts::{Account, create_account, grant_all, tcp_opts};
use super::error::{SandboxError, io_error, tail};
use super::install::{Binaries, is_root, mariadb_binaries};

/// Prefix of every temporary directory this module creates; the owner's pid follows it.
const DIR_PREFIX: &str = "csmh-sandbox-";
/// How long a new server may take to accept its first login.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many ports to try when another process takes the one picked.
const PORT_ATTEMPTS: usize = 5;

/// Options given to both `mariadb-install-db` and `mariadbd`, so the server starts on the files it was
/// initialised with (a different InnoDB log size would make it rebuild the log).
const SHARED_OPTIONS: &[&str] = &[
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=16M",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
];

/// Options for a fast, disposable test server that still behaves like production where the proxy can tell:
/// real accounts and passwords, LOAD DATA LOCAL, packets up to 256 MiB.
const SERVER_OPTIONS: &[&str] = &[
    "--bind-address=127.0.0.1",
    "--skip-name-resolve",
    "--local-infile=1",
    "--max-allowed-packet=256M",
    "--max-connections=500",
    "--innodb-flush-log-at-trx-commit=2",
    "--skip-innodb-doublewrite",
    "--skip-log-bin",
    "--plugin-load-add=auth_ed25519",
];

// ---------------------------------------------------------------------------------------------------------------
// Child processes that die with their owner

type SpawnJob = Box<dyn FnOnce() + Send>;

/// The thread every server is forked from. `PR_SET_PDEATHSIG` fires when the *thread* that forked the child
/// exits, not the process, so servers are forked from this thread, which lives as long as the process.
static SPAWNER: Mutex<Option<mpsc::Sender<SpawnJob>>> = Mutex::new(None);

/// Starts `command` so that the kernel kills it when this process dies, however it dies.
fn spawn_tied_to_process(mut command: Command) -> io::Result<Child> {
    // SAFETY: getpid has no preconditions and cannot fail.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the hook only makes async-signal-safe system calls and does not allocate.
    unsafe { command.pre_exec(move || die_with_parent(parent)) };
    let (reply, answer) = mpsc::channel();
    run_on_spawner(Box::new(move || {
        let _ = reply.send(command.spawn());
    }))?;
    answer.recv().map_err(|_| io::Error::other("the server-spawning thread stopped"))?
}

/// In the forked child: ask for SIGKILL when the parent goes, and go now if it already went.
fn die_with_parent(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) only changes this process's own attribute.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getppid has no preconditions and cannot fail.
    if unsafe { libc::getppid() } != parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

fn run_on_spawner(job: SpawnJob) -> io::Result<()> {
    let mut spawner = SPAWNER.lock().unwrap_or_else(PoisonError::into_inner);
    if spawner.is_none() {
        let (jobs, queue) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new().name("csmh-server-spawner".to_owned()).spawn(move || {
            for job in queue {
                job();
            }
        })?;
        *spawner = Some(jobs);
    }
    let jobs = spawner.as_ref().ok_or_else(|| io::Error::other("no server-spawning thread"))?;
    jobs.send(job).map_err(|_| io::Error::other("the server-spawning thread stopped"))
}

/// Servers alive in this process and their directories, for [`kill_live_servers`] at exit.
static LIVE: Mutex<Vec<(libc::pid_t, PathBuf)>> = Mutex::new(Vec::new());

/// Records a live server; the first call arranges for [`kill_live_servers`] to run at exit.
fn register_live(pid: libc::pid_t, dir: &Path) {
    static AT_EXIT: Once = Once::new();
    // SAFETY: kill_live_servers is a plain function that neither unwinds nor needs anything torn down before it.
    AT_EXIT.call_once(|| unsafe {
        libc::atexit(kill_live_servers);
    });
    LIVE.lock().unwrap_or_else(PoisonError::into_inner).push((pid, dir.to_owned()));
}

fn unregister_live(pid: libc::pid_t) {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner).retain(|(live, _)| *live != pid);
}

/// At process exit: kills the servers still alive (a test binary's shared server is a static that is never
/// dropped) and removes their directories.
extern "C" fn kill_live_servers() {
    let mut live = match LIVE.try_lock() {
        Ok(live) => live,
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(TryLockError::WouldBlock) => return,
    };
    for (pid, dir) in live.drain(..) {
        // SAFETY: pid is a child of this process that has not been reaped, so it names that child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Removes the temporary directories of owners that are gone (a run killed before it could clean up), killing
/// a server still running in one. Directories of live processes are left alone. Returns how many were removed.
pub fn remove_stale_sandboxes() -> usize {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return 0 };
    let me = std::process::id();
    let stale = entries
        .flatten()
        .filter(|entry| owner_pid(&entry.file_name()).is_some_and(|pid| pid != me && !process_alive(pid)));
    stale
        .filter(|entry| {
            kill_server_in(&entry.path());
            std::fs::remove_dir_all(entry.path()).is_ok()
        })
        .count()
}

/// The owner's pid in a directory name `csmh-sandbox-<pid>-<random>`.
fn owner_pid(name: &OsStr) -> Option<u32> {
    let rest = name.to_str()?.strip_prefix(DIR_PREFIX)?;
    rest.split('-').next()?.parse().ok().filter(|pid| *pid > 0)
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: signal 0 only checks that the process exists.
    let found = unsafe { libc::kill(pid, 0) } == 0;
    found || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Kills the server whose pid file is in `dir`, if that process really is a server of `dir`.
fn kill_server_in(dir: &Path) {
    let Ok(text) = std::fs::read_to_string(ServerPaths::new(dir).pid_file) else { return };
    let Ok(pid) = text.trim().parse::<libc::pid_t>() else { return };
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return };
    let dir = dir.as_os_str().as_bytes();
    if pid > 0 && cmdline.windows(dir.len()).any(|window| window == dir) {
        // SAFETY: pid is a live process whose command line names this directory: an orphaned server.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// A new temporary directory named after this process, so [`remove_stale_sandboxes`] can tell when it is stale.
pub(super) fn owned_temp_dir() -> Result<TempDir, SandboxError> {
    tempfile::Builder::new()
        .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
        .tempdir()
        .map_err(io_error("create a temporary directory"))
}

// ---------------------------------------------------------------------------------------------------------------
// One server

/// The files of one server inside its temporary directory.
struct ServerPaths {
    root: PathBuf,
    data: PathBuf,
    tmp: PathBuf,
    socket: PathBuf,
    pid_file: PathBuf,
    error_log: PathBuf,
}

impl ServerPaths {
    fn new(root: &Path) -> ServerPaths {
        ServerPaths {
            root: root.to_owned(),
            data: root.join("data"),
            tmp: root.join("tmp"),
            socket: root.join("mysqld.sock"),
            pid_file: root.join("mysqld.pid"),
            error_log: root.join("error.log"),
        }
    }

    fn log_tail(&self) -> String {
        match std::fs::read(&self.error_log) {
            Ok(bytes) => tail(&String::from_utf8_lossy(&bytes)),
            Err(e) => format!("(no error log: {e})"),
        }
    }
}

/// `--name=path`, keeping paths that are not UTF-8 intact.
fn path_option(name: &str, path: &Path) -> OsString {
    let mut option = OsString::from(format!("--{name}="));
    option.push(path);
    option
}

/// `--user=root` when running as root: mariadbd refuses root otherwise, and naming any other user would make
/// it change credentials, which clears the parent-death signal.
fn user_option() -> Option<&'static str> {
    is_root().then_some("--user=root")
}

/// A running `mariadbd`, killed and reaped when dropped.
struct ServerProcess {
    child: Child,
    pid: libc::pid_t,
}

impl ServerProcess {
    fn spawn(command: Command, paths: &ServerPaths) -> Result<ServerProcess, SandboxError> {
        let child = spawn_tied_to_process(command).map_err(io_error("start mariadbd"))?;
        let pid =
            libc::pid_t::try_from(child.id()).map_err(|e| io_error("read mariadbd's pid")(io::Error::other(e)))?;
        register_live(pid, &paths.root);
        Ok(ServerProcess { child, pid })
    }

    fn kill(&mut self) -> io::Result<()> {
        unregister_live(self.pid);
        let killed = self.child.kill();
        let waited = self.child.wait();
        killed.and(waited.map(drop))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Why one launch attempt failed: the port was taken (try another), or anything else.
enum LaunchError {
    PortTaken,
    Failed(SandboxError),
}

impl From<SandboxError> for LaunchError {
    fn from(error: SandboxError) -> Self {
        LaunchError::Failed(error)
    }
}

/// One running `mariadbd` on 127.0.0.1 with its data in a temporary directory, removed with it.
///
/// Root logs in over TCP without a password; accounts made with [`MariaDb::create_account`] need theirs.
pub struct MariaDb {
    // Declared before `dir`: the server must be dead before its directory is removed.
    process: ServerProcess,
    dir: TempDir,
    port: u16,
    datadir: PathBuf,
    error_log: PathBuf,
}

impl MariaDb {
    /// Installs MariaDB if needed, creates a data directory and starts a server on a free port, returning once
    /// root can log in.
    pub async fn start() -> Result<MariaDb, SandboxError> {
        MariaDb::start_with(&[]).await
    }

    /// [`MariaDb::start`] with more `mariadbd` options, such as `--ssl-cert=<path>`: a server with TLS. Root must
    /// still be able to log in over plaintext TCP to start it (set `require_secure_transport` once it runs).
    pub async fn start_with(options: &[OsString]) -> Result<MariaDb, SandboxError> {
        let binaries = tokio::task::spawn_blocking(mariadb_binaries)
            .await
            .map_err(|e| io_error("look for MariaDB")(io::Error::other(e)))??;
        static SWEEP: Once = Once::new();
        SWEEP.call_once(|| {
            remove_stale_sandboxes();
        });
        let dir = owned_temp_dir()?;
        let paths = ServerPaths::new(dir.path());
        std::fs::create_dir(&paths.tmp).map_err(io_error("create the server's tmpdir"))?;
        init_datadir(binaries, &paths).await?;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            match launch(binaries, &paths, port, options).await {
                Ok(process) => {
                    return Ok(MariaDb { process, port, datadir: paths.data, error_log: paths.error_log, dir });
                }
                Err(LaunchError::PortTaken) => continue,
                Err(LaunchError::Failed(error)) => return Err(error),
            }
        }
        Err(SandboxError::NoFreePort { attempts: PORT_ATTEMPTS, tail: paths.log_tail(), log: paths.error_log })
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port))
    }

    /// A `mysql://` URL for root, over TCP.
    pub fn root_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/?prefer_socket=false", self.port)
    }

    /// Connection options for root, over TCP, for administrative work.
    pub fn root_opts(&self) -> Opts {
        tcp_opts(self.addr(), "root", None, None)
    }

    /// Connection options for `account`, over TCP, with `database` as the default database.
    pub fn opts_for(&self, account: &Account, database: Option<&str>) -> Opts {
        account.opts(self.addr(), database)
    }

    /// The server's data directory.
    pub fn datadir(&self) -> &Path {
        &self.datadir
    }

    /// The server's error log, worth quoting when a test fails.
    pub fn error_log(&self) -> &Path {
        &self.error_log
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// Creates `account` (from any host) and grants it every privilege on each of `databases`.
    pub async fn create_account(&self, account: &Account, databases: &[&str]) -> mysql_async::Result<()> {
        let mut conn = Conn::new(self.root_opts()).await?;
        create_account(&mut conn, account).await?;
        for database in databases {
            grant_all(&mut conn, &account.user, database).await?;
        }
        conn.disconnect().await
    }

    /// Kills the server and removes its directory, reporting what failed.
    pub fn stop(self) -> Result<(), SandboxError> {
        let MariaDb { mut process, dir, .. } = self;
        process.kill().map_err(io_error("stop mariadbd"))?;
        dir.close().map_err(io_error("remove the server's directory"))
    }
}

impl std::fmt::Debug for MariaDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MariaDb").field("addr", &self.addr()).field("dir", &self.dir.path()).finish()
    }
}

/// Picks a port no one is listening on right now (another process may take it before the server binds it).
pub(super) fn free_port() -> Result<u16, SandboxError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_error("find a free port"))?;
    let addr = listener.local_addr().map_err(io_error("find a free port"))?;
    Ok(addr.port())
}

/// Runs `mariadb-install-db`: system tables, and root accounts without a password (`normal` authentication;
/// the default, `socket`, leaves root unable to log in over TCP). Its temporary tables go to the server's own
/// tmpdir: in a shared /tmp, concurrent bootstraps have been seen to lose them.
async fn init_datadir(binaries: &Binaries, paths: &ServerPaths) -> Result<(), SandboxError> {
    let output = tokio::process::Command::new(&binaries.install_db)
        .arg("--no-defaults")
        .arg(path_option("datadir", &paths.data))
        .arg(path_option("tmpdir", &paths.tmp))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .args(user_option())
        .args(SHARED_OPTIONS)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(io_error("run mariadb-install-db"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(SandboxError::InitFailed {
        datadir: paths.data.clone(),
        status: output.status.to_string(),
        output: tail(&String::from_utf8_lossy(&[output.stdout, output.stderr].concat())),
    })
}

/// The `mariadbd` command line for a server in `paths` on `port`.
fn server_command(binaries: &Binaries, paths: &ServerPaths, port: u16) -> Command {
    let mut command = Command::new(&binaries.mariadbd);
    command
        .arg("--no-defaults")
        .arg(path_option("datadir", &paths.data))
        .arg(path_option("tmpdir", &paths.tmp))
        .arg(path_option("socket", &paths.socket))
        .arg(path_option("pid-file", &paths.pid_file))
        .arg(path_option("log-error", &paths.error_log))
        .arg(format!("--port={port}"))
        .args(user_option())
        .args(SHARED_OPTIONS)
        .args(SERVER_OPTIONS)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C in the terminal reaches the sandbox, which then stops the servers.
        .process_group(0);
    command
}

/// Starts the server on `port` and waits until root can log in.
async fn launch(
    binaries: &Binaries,
    paths: &ServerPaths,
    port: u16,
    options: &[OsString],
) -> Result<ServerProcess, LaunchError> {
    match std::fs::remove_file(&paths.error_log) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_error("reset the error log")(e).into()),
        _ => {}
    }
    let mut command = server_command(binaries, paths, port);
    command.args(options);
    let mut process = ServerProcess::spawn(command, paths)?;
    wait_until_ready(&mut process, paths, port).await?;
    Ok(process)
}

/// Polls until root logs in to *this* server (its socket path proves it is not another server that took the
/// port), the server exits, or [`START_TIMEOUT`] passes.
async fn wait_until_ready(process: &mut ServerProcess, paths: &ServerPaths, port: u16) -> Result<(), LaunchError> {
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    let opts = tcp_opts(addr, "root", None, None);
    let started = Instant::now();
    loop {
        if let Some(status) = process.child.try_wait().map_err(io_error("watch mariadbd"))? {
            let tail = paths.log_tail();
            if tail.contains("Address already in use") || tail.contains("Bind on TCP/IP port") {
                return Err(LaunchError::PortTaken);
            }
            let log = paths.error_log.clone();
            return Err(SandboxError::Exited { addr, status: status.to_string(), log, tail }.into());
        }
        let last_error = match tokio::time::timeout(Duration::from_secs(5), server_socket(&opts)).await {
            Ok(Ok(socket)) if Path::new(&socket) == paths.socket => return Ok(()),
            Ok(Ok(socket)) => format!("another server answered (socket {socket})"),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "login timed out".to_owned(),
        };
        if started.elapsed() > START_TIMEOUT {
            let (log, tail) = (paths.error_log.clone(), paths.log_tail());
            return Err(SandboxError::NotReady { addr, waited: START_TIMEOUT, last_error, log, tail }.into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Logs in and asks the server for its socket path.
async fn server_socket(opts: &Opts) -> mysql_async::Result<String> {
    let mut conn = Conn::new(opts.clone()).await?;
    let socket: Option<String> = conn.query_first("SELECT @@socket").await?;
    conn.disconnect().await?;
    Ok(socket.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_pid_is_read_from_the_directory_name() {
        assert_eq!(owner_pid(OsStr::new("csmh-sandbox-4242-aB3xYz")), Some(4242));
        assert_eq!(owner_pid(OsStr::new("csmh-sandbox-0-aB3xYz")), None);
        assert_eq!(owner_pid(OsStr::new("csmh-sandbox-x-aB3xYz")), None);
        assert_eq!(owner_pid(OsStr::new("tmp4242")), None);
    }
}
