//! Local MariaDB servers: the `csmh-proxy sandbox` demo and the integration tests' fixture.
//!
//! A [`MariaDb`] is one throw-away `mariadbd` on a free loopback port with its data in a temporary directory.
//! Servers die with the process that started them: [`Drop`] kills them, a normal exit kills the ones still alive,
//! and the kernel kills them (`PR_SET_PDEATHSIG`) when the owner is killed; the temporary directories a killed
//! owner leaves behind are removed by the next start. The rest of the module creates the accounts and the edX
//! tables of `courseware_studentmodulehistory` and its extended table, and [`run`] puts it all together behind
//! the proxy.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Once, OnceLock, PoisonError, TryLockError, mpsc};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use tempfile::TempDir;

use crate::config::{Config, ConfigError, Flag, Flags};
use crate::server::{Proxy, shutdown_signal};

/// The application account edxapp logs in as, in the sandbox and in the tests.
pub const APP_USER: &str = "edxapp001";
/// The application account's password (the servers listen on 127.0.0.1 only).
pub const APP_PASSWORD: &str = "sandbox-password";
/// The database of edxapp's own tables and the old history table.
pub const EDXAPP_DB: &str = "edxapp";
/// The database of the extended history table.
pub const CSMH_DB: &str = "edxapp_csmh";
/// The history table edxapp writes.
pub const OLD_TABLE: &str = "courseware_studentmodulehistory";
/// The extended history table (edx-platform's released name).
pub const EXTENDED_TABLE: &str = "coursewarehistoryextended_studentmodulehistoryextended";
/// edx-platform's `STUDENTMODULEHISTORYEXTENDED_OFFSET`: the extended table starts this far above the old ids.
pub const STUDENTMODULEHISTORYEXTENDED_OFFSET: u64 = 10_000;

/// Prefix of every temporary directory this module creates; the owner's pid follows it.
const DIR_PREFIX: &str = "csmh-sandbox-";
/// The Debian packages that provide `mariadbd`, `mariadb-install-db` and the `mariadb` client.
const PACKAGES: [&str; 2] = ["mariadb-server", "mariadb-client"];
/// How long a new server may take to accept its first login.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many ports to try when another process takes the one picked.
const PORT_ATTEMPTS: usize = 5;
/// Lines of the error log quoted in a failure message.
const LOG_TAIL_LINES: usize = 20;

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

/// Why a local MariaDB server could not be installed or started; each message says what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SandboxError {
    /// MariaDB is missing and this process may not install it.
    #[error(
        "MariaDB is not installed ({missing} not found in PATH, /usr/sbin or /usr/bin); install it with: {command}"
    )]
    NotInstalled {
        /// The program that was looked for.
        missing: String,
        /// The command that installs it.
        command: String,
    },
    /// The package manager failed.
    #[error("installing MariaDB failed: `{command}` exited with {status}:\n{output}")]
    InstallFailed {
        /// The command that failed.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of its output.
        output: String,
    },
    /// The packages installed but a program is still not where it is looked for.
    #[error("{missing} is still missing after installing {packages}; put its directory on PATH")]
    StillMissing {
        /// The program that was looked for.
        missing: String,
        /// The packages that were installed.
        packages: String,
    },
    /// An operating-system call failed.
    #[error("cannot {action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// What the OS said.
        #[source]
        source: Arc<io::Error>,
    },
    /// `mariadb-install-db` could not create the system tables.
    #[error("mariadb-install-db failed for {datadir} ({status}):\n{output}")]
    InitFailed {
        /// The data directory being initialised.
        datadir: PathBuf,
        /// Its exit status.
        status: String,
        /// The end of its output.
        output: String,
    },
    /// The server stopped before accepting a login.
    #[error("mariadbd exited ({status}) before accepting logins on {addr}; end of {log}:\n{tail}")]
    Exited {
        /// The address it was to listen on.
        addr: SocketAddr,
        /// Its exit status.
        status: String,
        /// The error log.
        log: PathBuf,
        /// The end of the error log.
        tail: String,
    },
    /// The server is running but did not accept a login in time.
    #[error(
        "mariadbd did not accept a root login on {addr} within {waited:?} (last error: {last_error}); end of {log}:\n{tail}"
    )]
    NotReady {
        /// The address it listens on.
        addr: SocketAddr,
        /// How long the fixture waited.
        waited: Duration,
        /// The last login error.
        last_error: String,
        /// The error log.
        log: PathBuf,
        /// The end of the error log.
        tail: String,
    },
    /// Every free port picked was taken by someone else before the server could bind it.
    #[error("mariadbd found its port taken {attempts} times in a row; end of {log}:\n{tail}")]
    NoFreePort {
        /// Ports tried.
        attempts: usize,
        /// The error log.
        log: PathBuf,
        /// The end of the error log.
        tail: String,
    },
}

/// Wraps an [`io::Error`] with what was being done when it happened.
fn io_error(action: impl Into<String>) -> impl FnOnce(io::Error) -> SandboxError {
    let action = action.into();
    move |source| SandboxError::Io { action, source: Arc::new(source) }
}

// ---------------------------------------------------------------------------------------------------------------
// Finding and installing MariaDB

/// The MariaDB programs the sandbox runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The server.
    pub mariadbd: PathBuf,
    /// The script that creates a data directory's system tables.
    pub install_db: PathBuf,
    /// The `mariadb` command-line client.
    pub client: PathBuf,
}

/// Makes sure the MariaDB server and client are installed, installing them with apt-get when running as root.
///
/// Parallel callers wait for one installation; the outcome, success or failure, is remembered for the process.
pub fn ensure_mariadb_installed() -> Result<(), SandboxError> {
    mariadb_binaries().map(|_| ())
}

/// Where the MariaDB programs are, after [`ensure_mariadb_installed`]'s work if it was needed.
pub fn mariadb_binaries() -> Result<&'static Binaries, SandboxError> {
    static FOUND: OnceLock<Result<Binaries, SandboxError>> = OnceLock::new();
    FOUND.get_or_init(locate_or_install).as_ref().map_err(Clone::clone)
}

fn locate_or_install() -> Result<Binaries, SandboxError> {
    let missing = match locate() {
        Ok(found) => return Ok(found),
        Err(missing) => missing,
    };
    if !is_root() || find_program("apt-get").is_none() {
        return Err(SandboxError::NotInstalled { missing, command: install_hint() });
    }
    with_install_lock(|| {
        if let Ok(found) = locate() {
            return Ok(found);
        }
        tracing::warn!(packages = %PACKAGES.join(" "), "MariaDB is not installed; installing it with apt-get");
        apt_install(&PACKAGES)?;
        locate().map_err(|missing| SandboxError::StillMissing { missing, packages: PACKAGES.join(" ") })
    })
}

/// Installs Debian packages with apt-get (`update` first), one installation at a time across processes.
/// The caller checks that it runs as root.
pub fn install_packages(packages: &[&str]) -> Result<(), SandboxError> {
    with_install_lock(|| apt_install(packages))
}

fn apt_install(packages: &[&str]) -> Result<(), SandboxError> {
    apt_get_update()?;
    apt_get(&[&["install", "-y"][..], packages].concat())
}

/// `apt-get update`, retried while another apt holds the package lists' lock (unlike `install` with
/// `DPkg::Lock::Timeout`, `update` does not wait for it by itself).
fn apt_get_update() -> Result<(), SandboxError> {
    const RETRIES: u32 = 120;
    let mut attempt = 0;
    loop {
        match apt_get(&["update"]) {
            Err(SandboxError::InstallFailed { output, .. })
                if output.contains("Could not get lock") && attempt < RETRIES =>
            {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_secs(5));
            }
            result => return result,
        }
    }
}

/// Runs `install` while holding a lock file shared by every process of this project on the machine, so that
/// two test runs (or a test run and a sandbox) never run apt-get at the same time. apt's own locks make the
/// second installation fail instead of wait in some of its phases.
pub fn with_install_lock<T>(install: impl FnOnce() -> T) -> T {
    let path = std::env::temp_dir().join("csmh-proxy-install.lock");
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&path);
    if let Ok(file) = &file {
        // SAFETY: flock on a file descriptor this function owns; it blocks until the lock is free.
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(file), libc::LOCK_EX) };
    }
    let result = install();
    drop(file);
    result
}

/// Finds the three programs, or names the first one missing.
fn locate() -> Result<Binaries, String> {
    let find = |name: &str| find_program(name).ok_or_else(|| name.to_owned());
    Ok(Binaries { mariadbd: find("mariadbd")?, install_db: find("mariadb-install-db")?, client: find("mariadb")? })
}

/// Looks for an executable in PATH, then in /usr/sbin and /usr/bin (often missing from a user's PATH).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    path.metadata().is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Whether this process runs as root (and so may install packages).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The command an operator runs to install what is missing.
fn install_hint() -> String {
    if find_program("apt-get").is_some() {
        format!("sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y {}", PACKAGES.join(" "))
    } else {
        "your package manager's MariaDB server and client packages (10.11 or newer)".to_owned()
    }
}

/// Runs `apt-get <args>` non-interactively, waiting up to ten minutes for another apt or dpkg to finish.
fn apt_get(args: &[&str]) -> Result<(), SandboxError> {
    let mut command = Command::new("apt-get");
    command
        .args(["-o", "DPkg::Lock::Timeout=600"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    let shown = format!("apt-get -o DPkg::Lock::Timeout=600 {}", args.join(" "));
    let output = command.output().map_err(io_error(format!("run {shown}")))?;
    if output.status.success() {
        return Ok(());
    }
    let text = [output.stdout, output.stderr].concat();
    Err(SandboxError::InstallFailed {
        command: shown,
        status: output.status.to_string(),
        output: tail(&String::from_utf8_lossy(&text)),
    })
}

/// The last [`LOG_TAIL_LINES`] lines of `text`.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

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
fn owned_temp_dir() -> Result<TempDir, SandboxError> {
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
            match launch(binaries, &paths, port).await {
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

/// Connection options for a TCP login. `prefer_socket` is off: mysql_async would otherwise switch a loopback
/// connection to the server's Unix socket, where accounts match as `localhost` and no proxy is in the way.
pub fn tcp_opts(addr: SocketAddr, user: &str, password: Option<&str>, database: Option<&str>) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .user(Some(user))
        .pass(password)
        .db_name(database)
        .prefer_socket(false)
        .into()
}

/// Picks a port no one is listening on right now (another process may take it before the server binds it).
fn free_port() -> Result<u16, SandboxError> {
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
async fn launch(binaries: &Binaries, paths: &ServerPaths, port: u16) -> Result<ServerProcess, LaunchError> {
    match std::fs::remove_file(&paths.error_log) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_error("reset the error log")(e).into()),
        _ => {}
    }
    let mut process = ServerProcess::spawn(server_command(binaries, paths, port), paths)?;
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

// ---------------------------------------------------------------------------------------------------------------
// Accounts

/// How an account proves its password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthPlugin {
    /// `mysql_native_password`, what edxapp's accounts use.
    NativePassword,
    /// MariaDB's `ed25519` (the servers load the plugin), to show that other methods pass through too.
    Ed25519,
}

impl AuthPlugin {
    fn sql_name(self) -> &'static str {
        match self {
            AuthPlugin::NativePassword => "mysql_native_password",
            AuthPlugin::Ed25519 => "ed25519",
        }
    }
}

/// A MariaDB account: who logs in, with what password, checked how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The user name; the account's host is `%`.
    pub user: String,
    /// The password.
    pub password: String,
    /// How the password is checked.
    pub plugin: AuthPlugin,
}

impl Account {
    /// A `mysql_native_password` account.
    pub fn native(user: &str, password: &str) -> Account {
        Account { user: user.to_owned(), password: password.to_owned(), plugin: AuthPlugin::NativePassword }
    }

    /// edxapp's application account, [`APP_USER`].
    pub fn app() -> Account {
        Account::native(APP_USER, APP_PASSWORD)
    }

    /// Connection options for this account at `addr`, over TCP.
    pub fn opts(&self, addr: SocketAddr, database: Option<&str>) -> Opts {
        tcp_opts(addr, &self.user, Some(&self.password), database)
    }
}

/// Creates `account` as `'user'@'%'`. With `skip-name-resolve`, `%` is what a TCP login from 127.0.0.1
/// matches (`localhost` entries only match Unix-socket logins).
pub async fn create_account(conn: &mut Conn, account: &Account) -> mysql_async::Result<()> {
    let sql = format!(
        "CREATE USER {}@'%' IDENTIFIED VIA {} USING PASSWORD({})",
        quote_string(&account.user),
        account.plugin.sql_name(),
        quote_string(&account.password)
    );
    conn.query_drop(sql).await
}

/// Grants `user@'%'` every privilege on `database` (which need not exist yet). LOAD DATA LOCAL needs nothing
/// more than INSERT on the table and the server's `local-infile`.
pub async fn grant_all(conn: &mut Conn, user: &str, database: &str) -> mysql_async::Result<()> {
    let sql = format!("GRANT ALL PRIVILEGES ON {}.* TO {}@'%'", quote_ident(database), quote_string(user));
    conn.query_drop(sql).await
}

/// A single-quoted SQL string literal.
fn quote_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// A back-quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

// ---------------------------------------------------------------------------------------------------------------
// The edX tables

/// One database of the edX schema: the server (with credentials that may create it) and its name.
#[derive(Debug, Clone)]
pub struct EdxDatabase {
    /// Administrative connection options for the server.
    pub server: Opts,
    /// The database's name.
    pub name: String,
}

/// Where to create the edX tables, and whether to fill in sample history.
#[derive(Debug, Clone)]
pub struct EdxSchema {
    /// `courseware_studentmodule`, `auth_user` and the old history table.
    pub edxapp: EdxDatabase,
    /// The extended history table; `None` for a site that never made it (Tutor).
    pub csmh: Option<EdxDatabase>,
    /// Whether to insert [`insert_sample_history`]'s rows before the extended table takes its starting id.
    pub sample_history: bool,
}

impl EdxSchema {
    /// Both databases under their real names on one server, with sample history.
    pub fn one_server(server: Opts) -> EdxSchema {
        EdxSchema::two_servers(server.clone(), server)
    }

    /// `edxapp` on one server and `edxapp_csmh` on another, under their real names, with sample history.
    pub fn two_servers(edxapp: Opts, csmh: Opts) -> EdxSchema {
        EdxSchema {
            edxapp: EdxDatabase { server: edxapp, name: EDXAPP_DB.to_owned() },
            csmh: Some(EdxDatabase { server: csmh, name: CSMH_DB.to_owned() }),
            sample_history: true,
        }
    }
}

/// Creates the databases and tables of `schema` as edx-platform's migrations do, the extended table last with
/// its AUTO_INCREMENT at `MAX(old id) + STUDENTMODULEHISTORYEXTENDED_OFFSET`. Returns that starting id (`None`
/// without a `csmh` database).
pub async fn create_edx_schema(schema: &EdxSchema) -> mysql_async::Result<Option<u64>> {
    let mut edxapp = Conn::new(schema.edxapp.server.clone()).await?;
    create_edxapp_tables(&mut edxapp, &schema.edxapp.name).await?;
    if schema.sample_history {
        insert_sample_history(&mut edxapp, &schema.edxapp.name).await?;
    }
    let start = match &schema.csmh {
        Some(csmh) => {
            let start = old_history_max_id(&mut edxapp, &schema.edxapp.name).await?.unwrap_or(0)
                + STUDENTMODULEHISTORYEXTENDED_OFFSET;
            let mut conn = Conn::new(csmh.server.clone()).await?;
            create_extended_table(&mut conn, &csmh.name, start).await?;
            conn.disconnect().await?;
            Some(start)
        }
        None => None,
    };
    edxapp.disconnect().await?;
    Ok(start)
}

/// Creates `database` with `auth_user` (id and username only), `courseware_studentmodule` and the old history
/// table, columns in edx-platform's order.
pub async fn create_edxapp_tables(conn: &mut Conn, database: &str) -> mysql_async::Result<()> {
    let db = quote_ident(database);
    conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS {db}")).await?;
    conn.query_drop(format!(
        "CREATE TABLE {db}.`auth_user` (
           `id` int NOT NULL AUTO_INCREMENT PRIMARY KEY,
           `username` varchar(150) NOT NULL UNIQUE)"
    ))
    .await?;
    conn.query_drop(format!(
        "CREATE TABLE {db}.`courseware_studentmodule` (
           `id` bigint unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY,
           `module_type` varchar(32) NOT NULL,
           `module_id` varchar(255) NOT NULL,
           `student_id` int NOT NULL,
           `state` longtext NULL,
           `grade` double NULL,
           `max_grade` double NULL,
           `done` varchar(8) NOT NULL,
           `created` datetime(6) NOT NULL,
           `modified` datetime(6) NOT NULL,
           `course_id` varchar(255) NOT NULL,
           UNIQUE KEY (`student_id`, `module_id`, `course_id`),
           KEY (`module_type`), KEY (`course_id`), KEY (`grade`), KEY (`created`), KEY (`modified`),
           KEY `courseware_stats` (`module_id`, `grade`, `student_id`))"
    ))
    .await?;
    conn.query_drop(format!(
        "CREATE TABLE {db}.{} (
           `id` int NOT NULL AUTO_INCREMENT PRIMARY KEY,
           {HISTORY_COLUMNS_DDL},
           `student_module_id` int NOT NULL,
           KEY (`version`), KEY (`created`), KEY (`student_module_id`))",
        quote_ident(OLD_TABLE)
    ))
    .await
}

/// The history columns both tables share, between `id` (first in the old table) and `student_module_id`.
const HISTORY_COLUMNS_DDL: &str = "`version` varchar(255) NULL,
           `created` datetime(6) NOT NULL,
           `state` longtext NULL,
           `grade` double NULL,
           `max_grade` double NULL";

/// Creates `database` and the extended history table, `id` 6th as edx-platform's migration made it, with its
/// next id at `next_id`.
pub async fn create_extended_table(conn: &mut Conn, database: &str, next_id: u64) -> mysql_async::Result<()> {
    let db = quote_ident(database);
    conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS {db}")).await?;
    conn.query_drop(format!(
        "CREATE TABLE {db}.{} (
           {HISTORY_COLUMNS_DDL},
           `id` bigint unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY,
           `student_module_id` bigint unsigned NOT NULL,
           KEY (`version`), KEY (`created`), KEY `student_module_idx` (`student_module_id`)
         ) AUTO_INCREMENT={next_id}",
        quote_ident(EXTENDED_TABLE)
    ))
    .await
}

/// `MAX(id)` of the old history table in `database`; `None` when it is empty.
pub async fn old_history_max_id(conn: &mut Conn, database: &str) -> mysql_async::Result<Option<u64>> {
    let sql = format!("SELECT MAX(`id`) FROM {}.{}", quote_ident(database), quote_ident(OLD_TABLE));
    Ok(conn.query_first::<Option<u64>, _>(sql).await?.flatten())
}

/// The learners of the sample history: `auth_user` ids and usernames.
pub const SAMPLE_LEARNERS: [(u32, &str); 3] = [(1, "alice"), (2, "bob"), (3, "carol")];
/// The course of the sample history.
pub const SAMPLE_COURSE: &str = "course-v1:edX+DemoX+Demo_Course";
/// The problems of the sample history (usage keys).
pub const SAMPLE_PROBLEMS: [&str; 2] = [
    "block-v1:edX+DemoX+Demo_Course+type@problem+block@d1b84dcd39b0423d9e288f27f0f7f242",
    "block-v1:edX+DemoX+Demo_Course+type@problem+block@75f9562c77bc4858b61f907bb810d974",
];
/// History rows per learner and problem: the first view, then each submission.
pub const SAMPLE_ATTEMPTS: u32 = 3;

/// How much sample data [`insert_sample_history`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleHistory {
    /// Rows in `courseware_studentmodule`.
    pub modules: u64,
    /// Rows in the old history table.
    pub history_rows: u64,
}

/// Inserts a small, realistic course history into `database`'s tables: a few learners, each with a
/// `courseware_studentmodule` row per problem and several history rows per module, oldest first, as edxapp
/// would have written them.
pub async fn insert_sample_history(conn: &mut Conn, database: &str) -> mysql_async::Result<SampleHistory> {
    let db = quote_ident(database);
    conn.exec_batch(format!("INSERT INTO {db}.`auth_user` (`id`, `username`) VALUES (?, ?)"), SAMPLE_LEARNERS).await?;
    let modules = sample_modules();
    conn.exec_batch(
        format!(
            "INSERT INTO {db}.`courseware_studentmodule` (`id`, `module_type`, `module_id`, `student_id`, `state`,
               `grade`, `max_grade`, `done`, `created`, `modified`, `course_id`)
             VALUES (?, 'problem', ?, ?, ?, ?, 1, 'na', ?, ?, ?)"
        ),
        modules.iter().map(|m| {
            let last = SAMPLE_ATTEMPTS - 1;
            (m.id, m.problem, m.learner, sample_state(last), sample_grade(last), m.time(0), m.time(last), SAMPLE_COURSE)
        }),
    )
    .await?;
    let history: Vec<_> = (0..SAMPLE_ATTEMPTS)
        .flat_map(|attempt| {
            modules.iter().map(move |m| (m.time(attempt), sample_state(attempt), sample_grade(attempt), m.id))
        })
        .collect();
    conn.exec_batch(
        format!(
            "INSERT INTO {db}.{} (`version`, `created`, `state`, `grade`, `max_grade`, `student_module_id`)
             VALUES (NULL, ?, ?, ?, 1, ?)",
            quote_ident(OLD_TABLE)
        ),
        &history,
    )
    .await?;
    Ok(SampleHistory { modules: modules.len() as u64, history_rows: history.len() as u64 })
}

/// One learner's state of one problem in the sample.
struct SampleModule {
    id: u64,
    learner: u32,
    problem: &'static str,
}

impl SampleModule {
    /// When attempt `attempt` was saved: a day per attempt, a minute per module.
    fn time(&self, attempt: u32) -> String {
        format!("2024-03-{:02} 10:{:02}:07.{:06}", 4 + attempt, self.id, 120_000 + self.id * 1_111)
    }
}

fn sample_modules() -> Vec<SampleModule> {
    let pairs =
        SAMPLE_LEARNERS.iter().flat_map(|&(learner, _)| SAMPLE_PROBLEMS.iter().map(move |&problem| (learner, problem)));
    pairs.zip(1..).map(|((learner, problem), id)| SampleModule { id, learner, problem }).collect()
}

/// The problem state JSON an XBlock saves after `attempt` submissions.
fn sample_state(attempt: u32) -> String {
    let mut state = format!("{{\"seed\": 1, \"attempts\": {attempt}");
    if attempt > 0 {
        let correct = if attempt == SAMPLE_ATTEMPTS - 1 { "correct" } else { "incorrect" };
        let _ = write!(
            state,
            ", \"done\": true, \"student_answers\": {{\"2_1\": \"choice_{attempt}\"}}, \
             \"correct_map\": {{\"2_1\": {{\"correctness\": \"{correct}\", \"npoints\": null}}}}"
        );
    }
    state.push('}');
    state
}

/// The grade after `attempt` submissions: none before the first, full marks on the last.
fn sample_grade(attempt: u32) -> Option<f64> {
    (attempt > 0).then_some(if attempt == SAMPLE_ATTEMPTS - 1 { 1.0 } else { 0.0 })
}

// ---------------------------------------------------------------------------------------------------------------
// The `sandbox` subcommand

/// Options of `csmh-proxy sandbox`.
#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    /// Port the proxy listens on; when it is taken, a free one is used instead.
    #[arg(long, default_value_t = 6033)]
    pub port: u16,
}

/// `csmh-proxy sandbox`: two local MariaDB servers (`edxapp` with sample history, `edxapp_csmh` with the
/// extended table) and the proxy in front of them, until Ctrl-C, which removes everything.
pub async fn run(args: SandboxArgs) -> anyhow::Result<()> {
    let (edxapp, csmh) = tokio::try_join!(MariaDb::start(), MariaDb::start())?;
    let app = Account::app();
    edxapp.create_account(&app, &[EDXAPP_DB]).await?;
    csmh.create_account(&app, &[CSMH_DB]).await?;
    create_edx_schema(&EdxSchema::two_servers(edxapp.root_opts(), csmh.root_opts())).await?;
    let dir = owned_temp_dir()?;
    let config_path = dir.path().join("proxy.toml");
    let port = proxy_port(args.port)?;
    let listen = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    let text = ProxyToml::edx(listen, edxapp.addr(), csmh.addr()).render();
    std::fs::write(&config_path, format!("# Written by `csmh-proxy sandbox`.\n{text}"))?;
    let proxy = Proxy::bind(Config::load(&config_path)?).await?;
    print_banner(proxy.local_addr(), &edxapp, &csmh, &app, &config_path);
    let served = proxy.run(shutdown_signal()).await;
    println!("stopping the MariaDB servers and removing their data");
    edxapp.stop()?;
    csmh.stop()?;
    dir.close()?;
    served
}

/// `wanted` if it is free on 127.0.0.1, else a free port (saying so).
fn proxy_port(wanted: u16) -> anyhow::Result<u16> {
    match TcpListener::bind((Ipv4Addr::LOCALHOST, wanted)) {
        Ok(listener) => Ok(listener.local_addr()?.port()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let port = free_port()?;
            println!("port {wanted} is taken; the proxy listens on {port} instead");
            Ok(port)
        }
        Err(e) => Err(e.into()),
    }
}

/// The `proxy.toml` of a proxy in front of local servers, as the sandbox and the tests' fixture write it.
#[derive(Debug, Clone)]
pub struct ProxyToml {
    /// `[listen] address`; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The server of the `edxapp` database.
    pub edxapp: SocketAddr,
    /// The server of the `edxapp_csmh` database (may be `edxapp`'s).
    pub csmh: SocketAddr,
    /// The account the proxy logs in to `csmh` with; written only when it is another server.
    pub csmh_account: Account,
    /// `[history] old_table`, schema-qualified.
    pub old_table: String,
    /// `[history] extended_table`, schema-qualified.
    pub extended_table: String,
    /// `[flags]`.
    pub flags: Flags,
}

impl ProxyToml {
    /// The real edX names on `edxapp` and `csmh`, the app account, every flag off.
    pub fn edx(listen: SocketAddr, edxapp: SocketAddr, csmh: SocketAddr) -> ProxyToml {
        ProxyToml {
            listen,
            edxapp,
            csmh,
            csmh_account: Account::app(),
            old_table: format!("{EDXAPP_DB}.{OLD_TABLE}"),
            extended_table: format!("{CSMH_DB}.{EXTENDED_TABLE}"),
            flags: Flags::default(),
        }
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let quoted = |text: &str| toml::Value::String(text.to_owned()).to_string();
        let mut text =
            format!("[listen]\naddress = \"{}\"\n\n[backends.edxapp]\naddress = \"{}\"\n\n", self.listen, self.edxapp);
        let _ = writeln!(text, "[backends.csmh]\naddress = \"{}\"", self.csmh);
        if self.csmh != self.edxapp {
            let (user, password) = (quoted(&self.csmh_account.user), quoted(&self.csmh_account.password));
            let _ = writeln!(text, "user = {user}\npassword = {password}");
        }
        let (old, extended) = (quoted(&self.old_table), quoted(&self.extended_table));
        let _ = writeln!(text, "\n[history]\nold_table = {old}\nextended_table = {extended}\n\n[flags]");
        for flag in Flag::ALL {
            let _ = writeln!(text, "{flag} = {}", self.flags.is_on(flag));
        }
        text
    }

    /// The parsed and validated configuration.
    pub fn config(&self) -> Result<Config, ConfigError> {
        Config::parse(&self.render())
    }
}

/// Tells the operator how to connect, through the proxy and directly.
fn print_banner(proxy: SocketAddr, edxapp: &MariaDb, csmh: &MariaDb, app: &Account, config: &Path) {
    let cli = |port: u16, db: &str| format!("mariadb -h127.0.0.1 -P{port} -u{} -p{} {db}", app.user, app.password);
    println!();
    println!("csmh-proxy sandbox is running. Connect through the proxy:");
    println!();
    println!("    {}", cli(proxy.port(), EDXAPP_DB));
    println!();
    println!("directly to the edxapp server:       {}", cli(edxapp.port(), EDXAPP_DB));
    println!("directly to the edxapp_csmh server:  {}", cli(csmh.port(), CSMH_DB));
    println!("proxy configuration:                 {}", config.display());
    println!();
    println!("Press Ctrl-C to stop; the servers and their data are removed.");
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

    #[test]
    fn quoting_escapes_quotes_and_backslashes() {
        assert_eq!(quote_string(r"it's a \ test"), r"'it''s a \\ test'");
        assert_eq!(quote_ident("odd`name"), "`odd``name`");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let text: String = (1..=30).map(|n| format!("line {n}\n")).collect();
        let kept = tail(&text);
        assert!(kept.starts_with("line 11\n") && kept.ends_with("line 30"), "{kept}");
    }

    #[test]
    fn the_generated_proxy_toml_is_a_valid_configuration() {
        let addr = |port| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        let two = ProxyToml::edx(addr(0), addr(3306), addr(3307));
        let config = two.config().unwrap_or_else(|e| panic!("{e}\n{}", two.render()));
        assert_eq!(config.backends.csmh.user.as_deref(), Some(APP_USER));
        assert_eq!(config.flags, Flags::default());
        let one = ProxyToml { flags: Flags { enable_csmh_extended: true, ..Flags::default() }, ..two };
        let one = ProxyToml { csmh: one.edxapp, ..one };
        let config = one.config().unwrap_or_else(|e| panic!("{e}\n{}", one.render()));
        assert_eq!(config.backends.csmh.user, None);
        assert!(config.flags.enable_csmh_extended);
    }

    #[test]
    fn sample_history_is_oldest_first_and_graded_on_submission() {
        let modules = sample_modules();
        assert_eq!(modules.len(), SAMPLE_LEARNERS.len() * SAMPLE_PROBLEMS.len());
        assert!(modules[0].time(0) < modules[1].time(0) && modules[5].time(0) < modules[0].time(1));
        assert_eq!((sample_grade(0), sample_grade(1), sample_grade(2)), (None, Some(0.0), Some(1.0)));
    }
}
