//! Why a session ends early, and what its client is told then.

use std::io;
use std::time::Duration;

use super::csmh::CsmhError;
use crate::backend::{BackendError, QueryError};
use crate::protocol::ProtocolError;
use crate::protocol::errors::{MysqlError, code, sqlstate};

/// How long a client may take to answer the server's greeting.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a session ended early, tagged with the side that failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Reading from or writing to the client failed.
    #[error("client connection: {0}")]
    Client(io::Error),
    /// The client sent something the proxy cannot relay.
    #[error("client protocol: {0}")]
    ClientProtocol(ProtocolError),
    /// The client did not finish the handshake in time.
    #[error("client did not complete the handshake within {} s", HANDSHAKE_TIMEOUT.as_secs())]
    HandshakeTimeout,
    /// The backend could not be reached.
    #[error(transparent)]
    Connect(#[from] BackendError),
    /// Reading from or writing to the backend failed, or it closed the connection.
    #[error("backend connection: {0}")]
    Backend(io::Error),
    /// The backend sent something that does not follow the protocol.
    #[error("backend protocol: {0}")]
    BackendProtocol(ProtocolError),
    /// The client closed its connection while a request was in flight; the backend connections are closed with
    /// the session, so the servers end the statement (and roll back its transaction) as they would directly.
    #[error("the client closed its connection while a request was in flight")]
    ClientHungUp,
    /// The `csmh` connection failed during a request. Unless part of the answer has reached the client, the
    /// session makes it the request's error and goes on (`Session::serve`).
    #[error(transparent)]
    Csmh(#[from] CsmhError),
}

impl SessionError {
    /// The error the client is told before its connection closes; `None` when the client is gone.
    pub(super) fn to_mysql(&self) -> Option<MysqlError> {
        Some(match self {
            SessionError::Connect(e) => MysqlError::new(
                code::ER_CONNECT_TO_FOREIGN_DATA_SOURCE,
                sqlstate::HY000,
                format!("Can't connect to MySQL server on '{}' (through csmh-proxy: {e})", e.address()),
            ),
            SessionError::ClientProtocol(e) => {
                MysqlError::new(code::ER_HANDSHAKE_ERROR, sqlstate::LINK_FAILURE, format!("Bad handshake: {e}"))
            }
            SessionError::Backend(_) | SessionError::BackendProtocol(_) => MysqlError::new(
                code::ER_NET_READ_ERROR,
                sqlstate::LINK_FAILURE,
                format!("Lost connection to MySQL server during query ({self})"),
            ),
            SessionError::HandshakeTimeout => {
                MysqlError::new(code::ER_HANDSHAKE_ERROR, sqlstate::LINK_FAILURE, "Bad handshake")
            }
            SessionError::Csmh(failure) => failure.to_mysql(),
            SessionError::Client(_) | SessionError::ClientHungUp => return None,
        })
    }

    /// The `edxapp` server closed the connection.
    pub(super) fn backend_closed() -> SessionError {
        SessionError::Backend(io::Error::new(io::ErrorKind::UnexpectedEof, "the backend closed the connection"))
    }

    /// The `csmh` connection a response was expected on is not there (closed after a failure).
    pub(super) fn csmh_closed() -> SessionError {
        SessionError::csmh_io(io::Error::new(io::ErrorKind::NotConnected, "the csmh connection is closed"))
    }

    /// Reading from or writing to the `csmh` connection failed, or the server closed it.
    pub(super) fn csmh_io(error: io::Error) -> SessionError {
        SessionError::Csmh(CsmhError::Query(QueryError::Io(error)))
    }

    /// The `csmh` server sent something that does not follow the protocol.
    pub(super) fn csmh_protocol(error: ProtocolError) -> SessionError {
        SessionError::Csmh(CsmhError::Query(QueryError::Protocol(error)))
    }

    /// The client closed the connection.
    pub(super) fn client_closed() -> SessionError {
        SessionError::Client(io::Error::new(io::ErrorKind::UnexpectedEof, "the client closed the connection"))
    }

    /// Whether the `edxapp` connection failed (counted in the metrics).
    pub(super) fn is_edxapp_failure(&self) -> bool {
        matches!(self, SessionError::Backend(_) | SessionError::BackendProtocol(_))
    }
}

/// A statement the proxy ran for itself on the client's own `edxapp` connection got no answer: the session
/// cannot be kept in step and ends.
impl From<QueryError> for SessionError {
    fn from(error: QueryError) -> SessionError {
        match error {
            QueryError::Io(e) => SessionError::Backend(e),
            QueryError::Protocol(e) => SessionError::BackendProtocol(e),
        }
    }
}
