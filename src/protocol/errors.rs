//! MySQL errors: the codes the proxy answers with or looks for, named once, and [`MysqlError`], the one type an
//! ERR packet is read into and written from, whether a server sent it or the proxy makes it.

use std::fmt;

use bytes::{BufMut, BytesMut};

use super::frame;

/// ERR packets begin with this byte.
pub const ERR_HEADER: u8 = 0xFF;

/// Whether a packet is an ERR (MariaDB's progress reports look like one but are not: see
/// [`super::packets::is_progress_report`]).
pub fn is_err_packet(payload: &[u8]) -> bool {
    payload.first() == Some(&ERR_HEADER) && !super::packets::is_progress_report(payload)
}

/// The error codes the proxy uses, under MySQL's names for them.
pub mod code {
    /// The proxy is shutting down: a session's next request outside a transaction is answered with it.
    pub const ER_SERVER_SHUTDOWN: u16 = 1053;
    /// The proxy already serves as many connections (or unauthenticated handshakes) as it may: the new one is
    /// refused before the greeting, as a server at `max_connections` refuses it.
    pub const ER_CON_COUNT_ERROR: u16 = 1040;
    /// Access denied: a login the proxy cannot carry out safely (a password in cleartext over plaintext).
    pub const ER_ACCESS_DENIED_ERROR: u16 = 1045;
    /// A handshake the proxy cannot relay (malformed, or asking for what the proxy does not offer).
    pub const ER_HANDSHAKE_ERROR: u16 = 1043;
    /// A command the proxy does not relay.
    pub const ER_UNKNOWN_COM_ERROR: u16 = 1047;
    /// A server does not know a system variable a statement names (MySQL's `tx_isolation` since 8.0).
    pub const ER_UNKNOWN_SYSTEM_VARIABLE: u16 = 1193;
    /// A statement that server would refuse for want of a table privilege; also the retired old table.
    pub const ER_TABLEACCESS_DENIED_ERROR: u16 = 1142;
    /// A client packet larger than the proxy buffers (`listen.max_packet_bytes`); the connection closes, as a
    /// server closes it for a packet over its `max_allowed_packet`.
    pub const ER_NET_PACKET_TOO_LARGE: u16 = 1153;
    /// A server error without a code of its own.
    pub const ER_UNKNOWN_ERROR: u16 = 1105;
    /// The server rolled the whole transaction back to break a deadlock.
    pub const ER_LOCK_DEADLOCK: u16 = 1213;
    /// A savepoint (or stored routine) of that name does not exist.
    pub const ER_SP_DOES_NOT_EXIST: u16 = 1305;
    /// What the proxy cannot carry out exactly.
    pub const ER_NOT_SUPPORTED_YET: u16 = 1235;
    /// A command on a prepared statement the connection does not have.
    pub const ER_UNKNOWN_STMT_HANDLER: u16 = 1243;
    /// A request packet that does not parse.
    pub const ER_MALFORMED_PACKET: u16 = 1835;
    /// The connection to the client's own server failed during a request (the session ends), as a server
    /// reports a client connection it lost.
    ///
    /// The proxy's errors about its backends use server-range codes: MariaDB Connector/C (under `mysqlclient`
    /// and the `mariadb` CLI) replaces any ERR packet with a client-range code (2000-2999) by 2027 "Received
    /// malformed packet" and drops its message.
    pub const ER_NET_READ_ERROR: u16 = 1158;
    /// A backend server could not be reached or would not log the proxy in (FEDERATED's "Unable to connect to
    /// foreign data source").
    pub const ER_CONNECT_TO_FOREIGN_DATA_SOURCE: u16 = 1429;
    /// The `csmh` connection failed during a statement (FEDERATED's "problem processing the query on the
    /// foreign data source"); the client's session goes on.
    pub const ER_QUERY_ON_FOREIGN_DATA_SOURCE: u16 = 1430;
    /// MySQL's "Connections using insecure transport are prohibited": a plaintext client where TLS is required.
    pub const ER_SECURE_TRANSPORT_REQUIRED: u16 = 3159;
}

/// The SQLSTATEs the proxy answers with.
pub mod sqlstate {
    /// General error.
    pub const HY000: &[u8; 5] = b"HY000";
    /// Syntax error or access rule violation (MySQL uses it for privileges and unsupported statements).
    pub const ACCESS_OR_SYNTAX: &[u8; 5] = b"42000";
    /// The server rejected the connection.
    pub const CONNECTION_REJECTED: &[u8; 5] = b"08004";
    /// Access denied (a refused login).
    pub const ACCESS_DENIED: &[u8; 5] = b"28000";
    /// Communication link failure.
    pub const LINK_FAILURE: &[u8; 5] = b"08S01";
}

/// An error as an ERR packet carries it: code, SQLSTATE and message. One read from a server is written back
/// byte for byte, whatever its message's character set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlError {
    /// MySQL error number.
    pub code: u16,
    /// Five-character SQLSTATE.
    pub sqlstate: [u8; 5],
    /// Human-readable message.
    pub message: String,
    /// The payload as a server sent it, when it came from one.
    original: Option<Vec<u8>>,
}

impl MysqlError {
    /// An error with the given code, SQLSTATE and message.
    pub fn new(code: u16, sqlstate: &[u8; 5], message: impl Into<String>) -> MysqlError {
        MysqlError { code, sqlstate: *sqlstate, message: message.into(), original: None }
    }

    /// Error 1235 for what the proxy cannot carry out exactly, as MySQL words its own: "... does not support ...".
    pub fn not_supported(message: impl Into<String>) -> MysqlError {
        MysqlError::new(code::ER_NOT_SUPPORTED_YET, sqlstate::ACCESS_OR_SYNTAX, message)
    }

    /// Error 1243 for a command on a prepared statement that is not there to run, as a server answers one it does
    /// not know: "Unknown prepared statement handler (…) …".
    pub fn unknown_statement(message: impl Into<String>) -> MysqlError {
        MysqlError::new(code::ER_UNKNOWN_STMT_HANDLER, sqlstate::HY000, message)
    }

    /// Error 1835 for a command whose packet is not what the command needs, as MariaDB answers one (SQLSTATE
    /// HY000: the server's handler of the command refuses it).
    pub fn malformed_command() -> MysqlError {
        MysqlError::new(code::ER_MALFORMED_PACKET, sqlstate::HY000, "Malformed communication packet")
    }

    /// Reads an ERR packet's payload; `None` if it is not one. Without a SQLSTATE marker (servers older than
    /// protocol 4.1 answers) the state reads as HY000.
    pub fn parse(payload: &[u8]) -> Option<MysqlError> {
        let (&ERR_HEADER, rest) = payload.split_first()? else { return None };
        let code = rest.first_chunk::<2>().map(|c| u16::from_le_bytes(*c))?;
        let rest = &rest[2..];
        let (state, message) = match rest.split_first() {
            Some((b'#', tail)) if tail.len() >= 5 => (tail[..5].try_into().unwrap_or(*sqlstate::HY000), &tail[5..]),
            _ => (*sqlstate::HY000, rest),
        };
        Some(MysqlError {
            code,
            sqlstate: state,
            message: String::from_utf8_lossy(message).into_owned(),
            original: Some(payload.to_vec()),
        })
    }

    /// The ERR packet's payload.
    pub fn payload(&self) -> Vec<u8> {
        if let Some(original) = &self.original {
            return original.clone();
        }
        let mut payload = Vec::with_capacity(9 + self.message.len());
        payload.put_u8(ERR_HEADER);
        payload.put_u16_le(self.code);
        payload.put_u8(b'#');
        payload.put_slice(&self.sqlstate);
        payload.put_slice(self.message.as_bytes());
        payload
    }

    /// Appends this error as an ERR packet with sequence id `seq`; returns the sequence id after it.
    pub fn write_packet(&self, out: &mut BytesMut, seq: u8) -> u8 {
        frame::write_packet(out, seq, &self.payload())
    }
}

impl fmt::Display for MysqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = String::from_utf8_lossy(&self.sqlstate);
        write!(f, "ERROR {} ({}): {}", self.code, state, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn err_packet_carries_code_state_and_message() {
        let mut out = BytesMut::new();
        MysqlError::not_supported("not supported").write_packet(&mut out, 1);
        assert_eq!(out[3], 1);
        assert_eq!(&out[4..], b"\xff\xd3\x04#42000not supported");
    }

    #[test]
    fn a_servers_error_is_written_back_as_it_came() {
        let latin1 = b"\xff\x7a\x04#42S02Table 'caf\xe9' doesn't exist";
        let error = MysqlError::parse(latin1).unwrap();
        assert_eq!((error.code, &error.sqlstate), (1146, b"42S02"));
        assert_eq!(error.payload(), latin1);
        let old_style = MysqlError::parse(b"\xff\x10\x04Too many connections").unwrap();
        assert_eq!((error.code, old_style.code, &old_style.sqlstate[..]), (1146, 1040, &b"HY000"[..]));
        assert_eq!(old_style.message, "Too many connections");
        assert_eq!(MysqlError::parse(b"\x00\x00\x00"), None);
        assert_eq!(MysqlError::parse(b"\xff\x01"), None);
    }
}
