//! The client's own connection to the `edxapp` server, with what the proxy follows of it: the capabilities the
//! client negotiated (every response the proxy writes has their layout), the transaction state its last answer
//! reported, and whether that answer was an error. A failure of this connection ends the session.

use mysql_common::constants::StatusFlags;

use super::error::SessionError;
use crate::backend::{self, QueryError};
use crate::protocol::capabilities::Negotiated;
use crate::protocol::command::COM_QUERY;
use crate::protocol::conn::Connection;
use crate::protocol::errors::code::ER_LOCK_DEADLOCK;
use crate::protocol::reply::Reply;
use crate::protocol::response::{Expect, ResponseScanner};
use crate::string_literal::{ClientCharset, DoubleQuotes, Escaping, Reading};

/// The settings of a client's session that decide how the server reads the text of its statements, read on its
/// connection for the statements that need them.
#[derive(Debug)]
pub(super) struct Settings {
    /// `character_set_client`, lowercase as MySQL names it: the set its statements are written in.
    pub client_charset: String,
    /// `character_set_results`, lowercase: the set values are sent to it in (the client's own if that is unset).
    pub results_charset: String,
    /// How its `sql_mode` reads double quotes.
    pub quotes: DoubleQuotes,
}

impl Settings {
    /// How the client's character set reads ASCII bytes in its statements.
    pub fn client_charset_kind(&self) -> ClientCharset {
        ClientCharset::named(&self.client_charset)
    }
}

/// Whether the client's transaction may write: `START TRANSACTION READ ONLY` makes it read-only, which its
/// answers report (SERVER_STATUS_IN_TRANS_READONLY).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// It may write (the session's own access mode decides).
    ReadWrite,
    /// It was begun read-only.
    ReadOnly,
}

/// The `edxapp` connection of one session.
pub(super) struct Edxapp {
    /// The socket.
    pub conn: Connection,
    /// The capabilities the client and the server agreed on in the handshake the proxy relayed.
    pub caps: Negotiated,
    /// Status flags of the last answer (transaction state, autocommit).
    pub status: StatusFlags,
    /// The error code of the last answer relayed to the client, if it was an ERR.
    pub last_error: Option<u16>,
    /// The server's address, as the connection was made to it.
    pub address: String,
    /// The scramble of the login's last authentication round (the greeting's, or an auth switch's): what a
    /// client's RSA-encrypted password is XORed with.
    pub scramble: Vec<u8>,
    /// The authentication method in force in the login's last round: the client's, or an auth switch's.
    pub plugin: Vec<u8>,
    /// The server is MariaDB, not MySQL (from its greeting): the two name some session variables differently.
    pub server_is_mariadb: bool,
}

impl Edxapp {
    /// A connection to the server at `address` whose handshake has not been relayed yet.
    pub fn new(conn: Connection, address: String) -> Edxapp {
        let status = StatusFlags::SERVER_STATUS_AUTOCOMMIT;
        Edxapp {
            conn,
            caps: Negotiated::new(0, 0),
            status,
            last_error: None,
            address,
            scramble: Vec::new(),
            plugin: Vec::new(),
            server_is_mariadb: false,
        }
    }

    /// Whether a transaction is open (SERVER_STATUS_IN_TRANS): the one a configuration snapshot is pinned to.
    pub fn transaction_open(&self) -> bool {
        self.status.contains(StatusFlags::SERVER_STATUS_IN_TRANS)
    }

    /// Whether the client's statements are part of a transaction: one is open, or autocommit is off (so the next
    /// statement opens one).
    pub fn in_transaction(&self) -> bool {
        self.transaction_open() || !self.autocommit()
    }

    /// The client's transaction, by its access mode, if its statements are part of one
    /// ([`Edxapp::in_transaction`]).
    pub fn transaction(&self) -> Option<Access> {
        let read_only = self.status.contains(StatusFlags::SERVER_STATUS_IN_TRANS_READONLY);
        self.in_transaction().then_some(if read_only { Access::ReadOnly } else { Access::ReadWrite })
    }

    /// Whether the client's session has autocommit on, as its last answer reported.
    pub fn autocommit(&self) -> bool {
        self.status.contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT)
    }

    /// Records how a response relayed to the client ended.
    pub fn note_response(&mut self, scanner: &ResponseScanner) {
        if let Some(status) = scanner.status() {
            self.status = status;
        }
        self.note_error(scanner.error_code());
    }

    /// Records the error code of an answer (`None` for a success), relayed or the proxy's own.
    pub fn note_error(&mut self, code: Option<u16>) {
        self.last_error = code;
        if code == Some(ER_LOCK_DEADLOCK) {
            // An ERR carries no status flags, but this one means the server left the transaction.
            self.status.remove(StatusFlags::SERVER_STATUS_IN_TRANS);
        }
    }

    /// Records the status of an OK the proxy read itself.
    pub fn note_status(&mut self, status: u16) {
        self.status = StatusFlags::from_bits_truncate(status);
    }

    /// Runs one statement of the proxy's own and reads its whole (small) answer.
    pub async fn query(&mut self, sql: &[u8]) -> Result<Reply, SessionError> {
        self.command(COM_QUERY, sql, Expect::ResultSets).await
    }

    /// Runs one statement of the proxy's own whose answer may be large, holding at most `limit` bytes of it:
    /// `None` when the answer was larger (it was read to its end and dropped, so the connection goes on).
    pub async fn query_within(&mut self, sql: &[u8], limit: usize) -> Result<Option<Reply>, SessionError> {
        match backend::query_within(&mut self.conn, self.caps, sql, limit).await {
            Ok(reply) => {
                if let Reply::Ok(ok) = &reply {
                    self.note_status(ok.status);
                }
                Ok(Some(reply))
            }
            Err(QueryError::TooLarge(_)) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// How the client's session reads string literals: its `sql_mode`'s `NO_BACKSLASH_ESCAPES`, which every
    /// OK and EOF status reports (as client libraries read it to escape strings).
    pub fn escaping(&self) -> Escaping {
        Escaping::with_no_backslash_escapes(self.status.contains(StatusFlags::SERVER_STATUS_NO_BACKSLASH_ESCAPES))
    }

    /// The settings of the client's session, read on its connection; `None` when the answer names none (an
    /// error), which callers take for the worst case.
    pub async fn settings(&mut self) -> Result<Option<Settings>, SessionError> {
        // With a LIMIT of its own, the session's sql_select_limit cannot empty the answer.
        let sql = b"SELECT @@session.character_set_client, @@session.character_set_results, @@session.sql_mode LIMIT 1";
        let Reply::Rows(rows) = self.query(sql).await? else {
            return Ok(None);
        };
        let Some(row) = rows.values.first() else { return Ok(None) };
        let read = |at: usize| row.get(at).cloned().flatten();
        let lowercase = |name: Vec<u8>| String::from_utf8_lossy(&name).to_ascii_lowercase();
        let (Some(client), Some(sql_mode)) = (read(0), read(2)) else { return Ok(None) };
        let client_charset = lowercase(client);
        let results_charset = read(1).map_or_else(|| client_charset.clone(), lowercase);
        Ok(Some(Settings { client_charset, results_charset, quotes: DoubleQuotes::of_sql_mode(&sql_mode) }))
    }

    /// How the client's session reads the text of its statements, its settings read on its connection: the
    /// worst reading when they cannot be read.
    pub async fn reading(&mut self) -> Result<Reading, SessionError> {
        let escaping = self.escaping();
        Ok(match self.settings().await? {
            Some(settings) => Reading { escaping, charset: settings.client_charset_kind(), quotes: settings.quotes },
            None => Reading::worst(escaping),
        })
    }

    /// Sends one command of the proxy's own and reads its whole (small) answer, of shape `expect`.
    pub async fn command(&mut self, command: u8, body: &[u8], expect: Expect) -> Result<Reply, SessionError> {
        let reply = backend::command(&mut self.conn, self.caps, command, body, expect).await?;
        if let Reply::Ok(ok) = &reply {
            self.note_status(ok.status);
        }
        Ok(reply)
    }

    /// Sends one command whose answer the caller reads (or which gets none).
    pub async fn send(&mut self, command: u8, body: &[u8]) -> Result<(), SessionError> {
        backend::send_command(&mut self.conn, command, body).await.map_err(SessionError::Backend)
    }

    /// Rolls the client's transaction back, when the `csmh` side of it could not go on.
    pub async fn rollback(&mut self) -> Result<(), SessionError> {
        self.query(b"ROLLBACK").await.map(drop)
    }
}
