//! [`SandboxError`], why a local MariaDB server could not be installed or started, and the helpers that build
//! its messages: an OS error with what was being done, and the end of a long output.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Lines of the error log quoted in a failure message.
const LOG_TAIL_LINES: usize = 20;

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
pub(super) fn io_error(action: impl Into<String>) -> impl FnOnce(io::Error) -> SandboxError {
    let action = action.into();
    move |source| SandboxError::Io { action, source: Arc::new(source) }
}

/// The last [`LOG_TAIL_LINES`] lines of `text`.
pub(super) fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let text: String = (1..=30).map(|n| format!("line {n}\n")).collect();
        let kept = tail(&text);
        assert!(kept.starts_with("line 11\n") && kept.ends_with("line 30"), "{kept}");
    }
}
