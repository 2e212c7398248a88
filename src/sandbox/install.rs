//! Finding the MariaDB programs, and installing them with apt-get when they are missing, one installation at a
//! time across processes (a lock file in the temporary directory).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::error::{SandboxError, io_error, tail};

/// The Debian packages that provide `mariadbd`, `mariadb-install-db` and the `mariadb` client.
const PACKAGES: [&str; 2] = ["mariadb-server", "mariadb-client"];

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
