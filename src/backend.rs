//! Connections to the MySQL servers behind the proxy.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::protocol::conn::Connection;

/// Why a backend could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The TCP connection failed.
    #[error("cannot connect to backend {address}: {source}")]
    Connect {
        /// The backend's `host:port`.
        address: String,
        /// What the OS said.
        source: io::Error,
    },
    /// The TCP connection did not complete in time.
    #[error("cannot connect to backend {address}: no answer within {seconds} s")]
    Timeout {
        /// The backend's `host:port`.
        address: String,
        /// The configured connect timeout.
        seconds: u64,
    },
}

impl BackendError {
    /// The backend's address.
    pub fn address(&self) -> &str {
        match self {
            BackendError::Connect { address, .. } | BackendError::Timeout { address, .. } => address,
        }
    }
}

/// Opens a TCP connection to `address`, giving up after `timeout_secs`.
pub async fn connect(address: &str, timeout_secs: u64) -> Result<Connection, BackendError> {
    let attempt = tokio::time::timeout(Duration::from_secs(timeout_secs), TcpStream::connect(address));
    match attempt.await {
        Ok(Ok(stream)) => Ok(Connection::new(stream)),
        Ok(Err(source)) => Err(BackendError::Connect { address: address.to_owned(), source }),
        Err(_) => Err(BackendError::Timeout { address: address.to_owned(), seconds: timeout_secs }),
    }
}
