//! Why a session ends early, and what its client is told then.

use std::time::Duration;
use std::{fmt, io};

use super::csmh::CsmhError;
use super::full_auth::FullAuthFailure;
use crate::backend::{BackendError, QueryError};
use crate::protocol::ProtocolError;
use crate::protocol::conn::ReadError;
use crate::protocol::errors::{MysqlError, code, sqlstate};
use crate::protocol::frame::Oversized;
use crate::topology::Server;

/// How long the proxy goes on reading (and throwing away) what a client sends after refusing a packet too large,
/// so that the client reads the error rather than a reset connection.
pub(super) const DRAIN_LINGER: Duration = Duration::from_secs(2);

/// Which limit a client packet went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// A packet of the login or of COM_CHANGE_USER's authentication
    /// ([`MAX_HANDSHAKE_PACKET`](crate::protocol::packets::MAX_HANDSHAKE_PACKET)).
    Handshake,
    /// A request after login (`listen.max_packet_bytes`).
    Request,
}

impl Oversize {
    /// The session error for a failed read of a client packet of at most `limit` bytes.
    pub(super) fn of_client(self, limit: usize) -> impl Fn(ReadError) -> SessionError {
        move |error| match error {
            ReadError::Io(e) => SessionError::Client(e),
            ReadError::Oversized(Oversized { seq }) => SessionError::ClientPacketTooLarge { what: self, limit, seq },
        }
    }
}

impl fmt::Display for Oversize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Oversize::Handshake => "handshake packet",
            Oversize::Request => "request packet",
        })
    }
}

/// Why a session ended early, tagged with the side that failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Reading from or writing to the client failed.
    #[error("client connection: {0}")]
    Client(io::Error),
    /// The client sent something the proxy cannot relay.
    #[error("client protocol: {0}")]
    ClientProtocol(ProtocolError),
    /// The client did not finish the handshake in time (`listen.handshake_timeout_secs`).
    #[error("client did not complete the handshake within {secs} s")]
    HandshakeTimeout {
        /// The limit, in seconds.
        secs: u64,
    },
    /// The client's frame headers announced a packet larger than the proxy reads; its body was not read and the
    /// connection closes.
    #[error("client sent a {what} larger than {limit} bytes")]
    ClientPacketTooLarge {
        /// Which limit.
        what: Oversize,
        /// The limit, in bytes.
        limit: usize,
        /// The sequence id of the frame that went over it.
        seq: u8,
    },
    /// The client did not ask for TLS, which `listen.tls.required` demands.
    #[error("the client did not ask for TLS, which listen.tls.required demands")]
    InsecureClient,
    /// The TLS handshake with the client failed (the client is told by TLS itself, not by a MySQL error).
    #[error("TLS handshake with the client: {0}")]
    ClientTls(io::Error),
    /// The server asked for the password in cleartext, and the client's connection to the proxy is plaintext.
    #[error("the server asked for the password in cleartext, over a client connection without TLS")]
    ClearPasswordInPlaintext,
    /// A plaintext client's caching_sha2_password full authentication could not be carried to a server over TLS.
    #[error("full authentication: {0}")]
    FullAuth(#[from] FullAuthFailure),
    /// The backend could not be reached.
    #[error(transparent)]
    Connect(#[from] BackendError),
    /// The backend connection cannot run with the TLS it needs: refused by the rule, or its TLS handshake failed.
    #[error("TLS to the {server} server at {address}: {reason}")]
    BackendTls {
        /// The backend.
        server: Server,
        /// Its address.
        address: String,
        /// What went wrong.
        reason: String,
    },
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
            SessionError::InsecureClient => MysqlError::new(
                code::ER_SECURE_TRANSPORT_REQUIRED,
                sqlstate::HY000,
                "Connections using insecure transport are prohibited while csmh-proxy's listen.tls.required is on",
            ),
            SessionError::BackendTls { address, .. } => MysqlError::new(
                code::ER_CONNECT_TO_FOREIGN_DATA_SOURCE,
                sqlstate::HY000,
                format!("Can't connect to MySQL server on '{address}' (through csmh-proxy: {self})"),
            ),
            SessionError::ClearPasswordInPlaintext => MysqlError::new(
                code::ER_ACCESS_DENIED_ERROR,
                sqlstate::ACCESS_DENIED,
                "Access denied: the server asks for the password in cleartext (mysql_clear_password), which \
                 csmh-proxy passes on only from a client connected with TLS",
            ),
            SessionError::FullAuth(failure) => MysqlError::new(
                code::ER_ACCESS_DENIED_ERROR,
                sqlstate::ACCESS_DENIED,
                format!("Access denied: {failure}; connect to csmh-proxy with TLS instead"),
            ),
            SessionError::ClientProtocol(e) => {
                MysqlError::new(code::ER_HANDSHAKE_ERROR, sqlstate::LINK_FAILURE, format!("Bad handshake: {e}"))
            }
            SessionError::Backend(_) | SessionError::BackendProtocol(_) => MysqlError::new(
                code::ER_NET_READ_ERROR,
                sqlstate::LINK_FAILURE,
                format!("Lost connection to MySQL server during query ({self})"),
            ),
            SessionError::HandshakeTimeout { secs } => MysqlError::new(
                code::ER_HANDSHAKE_ERROR,
                sqlstate::LINK_FAILURE,
                format!("Bad handshake: no login within {secs} s (csmh-proxy's listen.handshake_timeout_secs)"),
            ),
            SessionError::ClientPacketTooLarge { what: Oversize::Handshake, limit, .. } => MysqlError::new(
                code::ER_HANDSHAKE_ERROR,
                sqlstate::LINK_FAILURE,
                format!("Bad handshake: a handshake packet larger than {limit} bytes"),
            ),
            SessionError::ClientPacketTooLarge { what: Oversize::Request, limit, .. } => MysqlError::new(
                code::ER_NET_PACKET_TOO_LARGE,
                sqlstate::LINK_FAILURE,
                format!("Got a packet bigger than 'listen.max_packet_bytes' ({limit} bytes) of csmh-proxy"),
            ),
            SessionError::Csmh(failure) => failure.to_mysql(),
            SessionError::Client(_) | SessionError::ClientTls(_) | SessionError::ClientHungUp => return None,
        })
    }

    /// The sequence id the client's answer takes: after the frame that went over a limit, which may follow the
    /// request's first frames, or else `otherwise`.
    pub(super) fn answer_seq(&self, otherwise: Option<u8>) -> Option<u8> {
        match self {
            SessionError::ClientPacketTooLarge { seq, .. } => Some(seq.wrapping_add(1)),
            _ => otherwise,
        }
    }

    /// Whether the client may still be sending the rest of a packet the proxy refused.
    pub(super) fn client_still_sending(&self) -> bool {
        matches!(self, SessionError::ClientPacketTooLarge { .. })
    }

    /// A failed read of the `edxapp` server's greeting; one larger than any greeting is a protocol error.
    pub(super) fn from_backend_handshake(error: ReadError) -> SessionError {
        match error {
            ReadError::Io(e) => SessionError::Backend(e),
            ReadError::Oversized(_) => SessionError::BackendProtocol(ProtocolError::Unsupported(
                "the server's greeting is larger than any handshake packet",
            )),
        }
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
            QueryError::TooLarge(_) => SessionError::BackendProtocol(ProtocolError::Malformed("an answer too large")),
        }
    }
}
