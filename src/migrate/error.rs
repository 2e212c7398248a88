//! What can stop a migration command, each with the message the operator reads.

use super::tls::{ClientError, LoginError};
use crate::config::PasswordError;
use crate::history::TableNameError;
use crate::tls::TlsError;

/// Why a migration command could not run or stopped; displayed as the command's error line.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// A table name in `[history]` is not `schema.table`.
    #[error("[history]: {0}")]
    TableName(#[from] TableNameError),
    /// A backend's password could not be read.
    #[error("[backends.{backend}]: {source}")]
    Password {
        /// `edxapp` or `csmh`.
        backend: &'static str,
        /// What was wrong with it.
        source: PasswordError,
    },
    /// The migration commands log in on their own and need an account.
    #[error("[backends.{backend}] has no `user`: the migration commands log in to the server themselves")]
    NoUser {
        /// `edxapp` or `csmh`.
        backend: &'static str,
    },
    /// A file of a backend's `[tls]` cannot be used (the message names the key).
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// Logging in to a backend failed.
    #[error("cannot connect to [backends.{backend}] at {address}: {source}")]
    Connect {
        /// `edxapp` or `csmh`.
        backend: &'static str,
        /// The address tried.
        address: String,
        /// Why: TLS as `[backends.<name>.tls]` asks for it, or the client library's error (boxed: it is large).
        source: Box<LoginError>,
    },
    /// A backend did not complete the login in time.
    #[error("cannot connect to [backends.{backend}] at {address}: no login within {seconds} s (connect_timeout_secs)")]
    ConnectTimeout {
        /// `edxapp` or `csmh`.
        backend: &'static str,
        /// The address tried.
        address: String,
        /// The timeout.
        seconds: u64,
    },
    /// A statement failed on a backend.
    #[error("{backend}: {what}: {}", ClientError(source))]
    Query {
        /// `edxapp` or `csmh`.
        backend: &'static str,
        /// What the statement was for, in the operator's words.
        what: String,
        /// The server's (or the client library's) error.
        source: mysql_async::Error,
    },
    /// The metrics endpoint (`--metrics-address`) cannot listen.
    #[error("cannot serve metrics on {address} (--metrics-address): {source}")]
    Metrics {
        /// The address asked for.
        address: String,
        /// Why it cannot be bound.
        source: std::io::Error,
    },
    /// The command refuses to act, and says why and what to do instead.
    #[error("{0}")]
    Refused(String),
}

impl MigrateError {
    /// The command's exit status for this error: 1 when it refused to act (running it again as it is would
    /// refuse again), 2 when it could not run.
    pub fn exit_status(&self) -> i32 {
        match self {
            MigrateError::Refused(_) => 1,
            _ => 2,
        }
    }
}

/// MySQL's "table doesn't exist": the commands tell the operator what to run (`init`) instead of failing.
pub(super) const ER_NO_SUCH_TABLE: u16 = 1146;
/// MySQL's "unknown database".
pub(super) const ER_BAD_DB: u16 = 1049;
