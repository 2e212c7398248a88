//! The proxy's own connection to a separate `csmh` server: opened the first time a statement needs the extended
//! table, logged in with `[backends.csmh]`'s credentials, and kept in step with the client's session — the
//! settings that change results before every use, and the client's transaction (BEGIN, savepoints, COMMIT and
//! ROLLBACK are mirrored). Where it must read the client's session, it takes the `edxapp` connection as an
//! argument.

use std::sync::Arc;

use mysql_common::constants::CapabilityFlags;
use sqlparser::tokenizer::Token;
use tracing::{info, warn};

use super::edxapp::{Access, Edxapp};
use super::error::SessionError;
use crate::backend::{self, BackendError, Credentials, LoginError, LoginTls, QueryError};
use crate::csmh_pool::{self, Kept, LoginAsked, Settings};
use crate::protocol::capabilities::{LAYOUT_MARIADB, Negotiated};
use crate::protocol::command::{self, COM_PING, COM_QUERY, COM_RESET_CONNECTION, COM_STMT_BULK_EXECUTE, Command};
use crate::protocol::conn::Connection;
use crate::protocol::errors::{MysqlError, code, sqlstate};
use crate::protocol::reply::Reply;
use crate::resolver::Resolver;
use crate::routing::source::{self, Source, Tok};
use crate::state::{ConfigSnapshot, ProxyState};
use crate::string_literal::{self, ClientCharset, Escaping};
use crate::topology::Server;

/// The statement that reads the client session's settings that change what statements return, from its `edxapp`
/// connection, with the transaction isolation level and access mode last under the names `$isolation` and
/// `$read_only`.
macro_rules! settings_query {
    ($isolation:literal, $read_only:literal) => {
        concat!(
            "SELECT @@session.character_set_client, @@session.character_set_connection, ",
            "@@session.character_set_results, @@session.collation_connection, @@session.time_zone, ",
            "@@session.sql_mode, @@session.autocommit, @@session.",
            $isolation,
            ", @@session.",
            $read_only
        )
    };
}

/// The settings read on a MariaDB server, which names the isolation level `tx_isolation` and the access mode
/// `tx_read_only` (and has no `transaction_…` names before 11.1).
const SETTINGS_MARIADB: &str = settings_query!("tx_isolation", "tx_read_only");

/// The settings read on a MySQL server, which names them `transaction_isolation` and `transaction_read_only` (and
/// has no `tx_…` names since 8.0).
const SETTINGS_MYSQL: &str = settings_query!("transaction_isolation", "transaction_read_only");

/// The variables of the settings read, but the isolation level and access mode, in their order, as `SET SESSION`
/// names them on MariaDB and MySQL alike; the other two are set with `SET SESSION TRANSACTION ISOLATION LEVEL …,
/// READ ONLY|READ WRITE`, which both understand.
const SETTING_NAMES: [&str; 7] = [
    "character_set_client",
    "character_set_connection",
    "character_set_results",
    "collation_connection",
    "time_zone",
    "sql_mode",
    "autocommit",
];

/// Where autocommit is among [`SETTING_NAMES`].
const AUTOCOMMIT: usize = 6;

/// The access modes as the servers report them (the session's read-only variable), and as `SET SESSION
/// TRANSACTION` takes them.
const ACCESS_MODES: [(&[u8], &str); 2] = [(b"0", "READ WRITE"), (b"1", "READ ONLY")];

/// The isolation levels as the servers report them, and as `SET SESSION TRANSACTION ISOLATION LEVEL` takes them.
const ISOLATION_LEVELS: [(&[u8], &str); 4] = [
    (b"READ-UNCOMMITTED", "READ UNCOMMITTED"),
    (b"READ-COMMITTED", "READ COMMITTED"),
    (b"REPEATABLE-READ", "REPEATABLE READ"),
    (b"SERIALIZABLE", "SERIALIZABLE"),
];

/// What the error of a statement says when the client's transaction was rolled back with the `csmh` side.
const ROLLED_BACK: &str = "; the transaction was rolled back";

/// What the error of a statement says when the client's transaction was committed on `edxapp` and the `csmh`
/// side could not commit its part.
const COMMITTED_WITHOUT_CSMH: &str = "; the transaction was committed on edxapp without its part on the csmh server";

/// What the error of a write of both tables says when the `csmh` server's answer to the proxy's own COMMIT was
/// lost: whether that side committed is unknown.
const COMMIT_UNKNOWN: &str = "; the csmh server's answer to COMMIT was lost: the write was rolled back on the old \
     table, and may have been committed on the extended table";

/// What the error of a client's COMMIT says when the `csmh` server's answer to it was lost: whether that side
/// committed is unknown.
const CLIENT_COMMIT_UNKNOWN: &str = "; the csmh server's answer to COMMIT was lost: the transaction was rolled back \
     on edxapp, and its part on the csmh server may have been committed";

/// Capabilities that decide the layout of the responses relayed to the client: the `csmh` connection must have
/// exactly the client's.
const LAYOUT: CapabilityFlags = CapabilityFlags::CLIENT_DEPRECATE_EOF
    .union(CapabilityFlags::CLIENT_SESSION_TRACK)
    .union(CapabilityFlags::CLIENT_FOUND_ROWS)
    .union(CapabilityFlags::CLIENT_PROTOCOL_41);

/// A session's link to the `csmh` server: no connection until a statement needs one, and none again after the
/// connection failed (the next statement that needs it opens a new one).
#[derive(Default)]
pub(super) struct CsmhLink {
    open: Option<CsmhConnection>,
    /// How many connections the link has opened: the open one's number, which statements prepared on it keep.
    opened: u64,
    /// How many of them failed.
    failed: u64,
    /// The client reached the proxy over TLS, so the `csmh` connection must be encrypted too.
    client_tls: bool,
    /// The `csmh` side committed ahead of the client statement running on `edxapp` now, which ends the transaction
    /// as this says: checked against `edxapp`'s answer ([`CsmhLink::follow_transaction_end`]).
    committed_ahead: Option<Ending>,
}

/// The proxy's open connection to the `csmh` server for one client session.
pub(super) struct CsmhConnection {
    /// The socket.
    pub conn: Connection,
    /// The capabilities the proxy's login negotiated: the client's layout ones included.
    pub caps: Negotiated,
    /// The settings last applied, as read from the client's session.
    settings: Settings,
    /// The transaction here, as the proxy follows it.
    transaction: Transaction,
    /// The settings applied here are the client's: synced since the last request that may have changed them
    /// ([`may_change_settings`]).
    synced: bool,
    /// What its login asked for on behalf of the client ([`login_asked`]).
    asked: LoginAsked,
    /// The configuration generation it was opened under.
    generation: u64,
}

impl CsmhConnection {
    /// A connection just logged in, on which none of the client's settings is applied yet.
    fn new(conn: Connection, caps: Negotiated, asked: LoginAsked, generation: u64) -> CsmhConnection {
        let transaction = Transaction::Closed;
        CsmhConnection { conn, caps, settings: Vec::new(), transaction, synced: false, asked, generation }
    }
}

/// The transaction on a `csmh` connection, as the proxy follows it. Which savepoints it has is the server's to
/// say (it compares their names as `edxapp` does, without regard to case, and moves one set again under its
/// name): the proxy runs the client's savepoint statements here and reads the answers.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Transaction {
    /// None is open.
    Closed,
    /// One is open: begun with BEGIN, or, under autocommit off, by the statement that followed.
    Open,
    /// One is open, and the client's ROLLBACK or ROLLBACK TO SAVEPOINT is on its way to `edxapp`: this side steps
    /// back once `edxapp` has, and not at all if `edxapp` refuses the statement (a savepoint it does not have, a
    /// syntax error).
    Awaiting(StepBack),
}

impl Transaction {
    /// Whether a transaction is open.
    fn is_open(&self) -> bool {
        *self != Transaction::Closed
    }
}

/// How far the client's transaction steps back.
#[derive(Clone, Debug, PartialEq, Eq)]
enum StepBack {
    /// All of it (ROLLBACK).
    All,
    /// To the named savepoint (ROLLBACK TO SAVEPOINT): on the `csmh` side, all of its part when it does not have
    /// the savepoint, which was then set before that part began.
    To(String),
}

impl From<Kept> for CsmhConnection {
    /// A connection kept from an earlier session, reset by the server, with that session's settings applied.
    fn from(kept: Kept) -> CsmhConnection {
        let Kept { conn, caps, asked, generation, settings, .. } = kept;
        CsmhConnection { settings, ..CsmhConnection::new(conn, caps, asked, generation) }
    }
}

/// What a `csmh` connection must run to follow the client's session.
struct Steps {
    /// The client's settings, to apply: they differ from those applied.
    settings: Option<Settings>,
    /// A transaction to begin, with the access mode of the client's: the client is in one.
    begin: Option<Access>,
    /// The connection must answer before the client's statement is sent, even with nothing else to run
    /// ([`csmh_pool::TRUSTED_FOR`]).
    check: bool,
}

/// How a savepoint statement the client's transaction needed went on the `csmh` connection.
enum Savepoint {
    /// It was carried out.
    Done,
    /// The server does not have the savepoint (error 1305).
    Unknown,
}

/// Why the `csmh` connection failed.
#[derive(Debug, thiserror::Error)]
pub enum CsmhError {
    /// The configuration does not say how to log in.
    #[error("cannot log in to the csmh server: {0}")]
    Credentials(String),
    /// The server could not be reached.
    #[error(transparent)]
    Connect(#[from] BackendError),
    /// The login failed.
    #[error("cannot log in to the csmh server: {0}")]
    Login(#[from] LoginError),
    /// A statement the proxy ran for itself failed on the connection.
    #[error("csmh server: {0}")]
    Query(#[from] QueryError),
    /// Reading the client's session settings on its own `edxapp` connection failed: that connection cannot be
    /// kept in step, and the session ends.
    #[error("edxapp server: {0}")]
    Edxapp(QueryError),
    /// The server refused a statement the proxy needs to keep it in step.
    #[error("csmh server refused to follow the session: {0}")]
    Refused(String),
    /// The server cannot answer in the layout the client expects.
    #[error("the csmh server does not support the client's protocol features {0}")]
    Capabilities(String),
}

impl CsmhError {
    /// The error the client is told for the statement that needed the connection.
    pub(super) fn to_mysql(&self) -> MysqlError {
        match self {
            CsmhError::Credentials(_) | CsmhError::Connect(_) | CsmhError::Login(_) | CsmhError::Capabilities(_) => {
                MysqlError::new(
                    code::ER_CONNECT_TO_FOREIGN_DATA_SOURCE,
                    sqlstate::HY000,
                    format!("csmh-proxy cannot reach the csmh server: {self}"),
                )
            }
            CsmhError::Query(_) => MysqlError::new(
                code::ER_QUERY_ON_FOREIGN_DATA_SOURCE,
                sqlstate::HY000,
                format!("Lost connection to the csmh server during the statement (through csmh-proxy: {self})"),
            ),
            CsmhError::Edxapp(_) => MysqlError::new(
                code::ER_NET_READ_ERROR,
                sqlstate::LINK_FAILURE,
                format!("Lost connection to MySQL server during query ({self})"),
            ),
            CsmhError::Refused(_) => {
                MysqlError::new(code::ER_QUERY_ON_FOREIGN_DATA_SOURCE, sqlstate::HY000, format!("csmh-proxy: {self}"))
            }
        }
    }
}

/// A transaction-control statement, which the `csmh` connection must follow while it mirrors a transaction.
#[derive(Debug, PartialEq, Eq)]
enum Control {
    /// COMMIT; also BEGIN and START TRANSACTION, which commit the transaction before beginning the next, the
    /// statements that commit implicitly (see [`commits_implicitly`]), and with autocommit off a SET turning it on.
    /// The `csmh` side commits first; how `edxapp`'s answer tells that the statement committed there too is the
    /// [`Ending`].
    Commit(Ending),
    Rollback,
    Savepoint(String),
    RollbackTo(String),
    Release(String),
    /// A query whose end of the transaction the `csmh` side could not follow (it may roll back, or commit with
    /// no sign of it in the answer): refused, unrun, while that side holds part of the transaction.
    Unfollowable(&'static str),
}

/// How `edxapp`'s answer to a statement the `csmh` side committed ahead of ([`Control::Commit`]) tells whether the
/// statement committed there too. When it did not (the server refused it before its commit: a syntax error, a
/// missing privilege, a SET of a value it does not take; or it is not one the server commits for), `edxapp`'s part
/// is committed by the proxy, as the `csmh` side's already is: the client's transaction ends committed on both
/// servers, never on one only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// COMMIT, BEGIN, START TRANSACTION: an OK says it committed (a transaction open after it is the next one,
    /// begun by the statement).
    Explicit,
    /// A statement that commits implicitly, or a SET turning autocommit on: an OK says it committed unless a
    /// transaction is still open after it.
    Implicit,
}

/// The first words of statements that commit the transaction implicitly (MariaDB's and MySQL's lists), but
/// BEGIN, START TRANSACTION, ANALYZE and UNLOCK TABLES, which depend on what follows or on the session (see
/// [`commits_implicitly`]).
const IMPLICIT_COMMITS: [&str; 20] = [
    "ALTER",
    "CACHE",
    "CHANGE",
    "CHECK",
    "CREATE",
    "DROP",
    "FLUSH",
    "GRANT",
    "IMPORT",
    "INSTALL",
    "LOCK",
    "OPTIMIZE",
    "RENAME",
    "REPAIR",
    "RESET",
    "REVOKE",
    "SHUTDOWN",
    "STOP",
    "TRUNCATE",
    "UNINSTALL",
];

impl CsmhLink {
    /// Whether a connection is open.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// The open connection's number, different for every connection the link opens: a statement prepared on
    /// the `csmh` server lives as long as the connection of that number.
    pub fn connection_number(&self) -> Option<u64> {
        self.open.as_ref().map(|_| self.opened)
    }

    /// Whether a transaction mirroring the client's (or one of the proxy's own) is open on it.
    pub fn in_transaction(&self) -> bool {
        self.open.as_ref().is_some_and(|c| c.transaction.is_open())
    }

    /// Records whether the client logged in over TLS: the connections the link opens then use TLS too (or fail).
    pub fn serve_client_over(&mut self, tls: bool) {
        self.client_tls = tls;
    }

    /// The open connection, as it is (for commands on statements already prepared there).
    pub fn connection(&mut self) -> Option<&mut CsmhConnection> {
        self.open.as_mut()
    }

    /// The connection, opened if needed (under `snapshot`'s `[backends.csmh]`, counted in `shared`'s metrics),
    /// with the client's settings applied and, if the client is in a transaction, a transaction open (or, under
    /// autocommit off, begun by the next statement). After an error the caller drops the connection
    /// ([`CsmhLink::close`] or [`CsmhLink::fail`]).
    pub async fn ready(
        &mut self,
        edxapp: &mut Edxapp,
        snapshot: &ConfigSnapshot,
        shared: &ProxyState,
    ) -> Result<&mut CsmhConnection, CsmhError> {
        let csmh = match self.open.take() {
            Some(csmh) => csmh,
            None => self.connect(edxapp, snapshot, shared).await?,
        };
        let csmh = self.open.insert(csmh);
        csmh.follow(edxapp).await?;
        Ok(csmh)
    }

    /// A connection for this session, in step with the client's session ([`CsmhConnection::follow`]): one kept
    /// from an earlier session ([`crate::csmh_pool`]), with the client's settings if one has them, or else a new
    /// one. A kept connection that fails at its first step, or does not answer it within `connect_timeout_secs`
    /// (the server closed it or froze while it waited), is dropped for a new one, which takes the steps a new
    /// connection takes: nothing of the client's had been sent on it.
    async fn connect(
        &mut self,
        edxapp: &mut Edxapp,
        snapshot: &ConfigSnapshot,
        shared: &ProxyState,
    ) -> Result<CsmhConnection, CsmhError> {
        let metrics = &shared.metrics;
        let asked = login_asked(edxapp.caps);
        let settings = client_settings(edxapp).await?;
        let fits = |kept: &Kept| kept.asked == asked && (!self.client_tls || kept.encrypted());
        let Some(kept) = shared.csmh_pool.take(snapshot.generation, &settings, fits) else {
            return self.open_new(edxapp, snapshot, shared, settings).await;
        };
        self.opened += 1;
        let check = kept.waited() > csmh_pool::TRUSTED_FOR;
        let mut csmh = CsmhConnection::from(kept);
        let limit = std::time::Duration::from_secs(snapshot.config.backends.csmh.connect_timeout_secs);
        let steps = Steps { check, ..csmh.steps_for(Some(settings.clone()), edxapp.transaction()) };
        match tokio::time::timeout(limit, csmh.take_steps(&steps)).await {
            Ok(Ok(())) => {
                metrics.kept().reused.inc();
                return Ok(csmh);
            }
            // The connection is gone (a KILL, a restart, its wait_timeout): a new one will do.
            Ok(Err(error @ CsmhError::Query(_))) => {
                info!(%error, "a kept csmh connection failed on first use; opening a new one");
            }
            // The server refused the session's settings: a new connection would be refused the same way.
            Ok(Err(error)) => return Err(error),
            Err(_) => info!(secs = limit.as_secs(), "a kept csmh connection did not answer; opening a new one"),
        }
        metrics.kept().lost.inc();
        self.open_new(edxapp, snapshot, shared, settings).await
    }

    /// A new connection to the `csmh` server, counted in the link and in `shared`'s metrics, in step with the
    /// client's session, whose settings are `settings`.
    async fn open_new(
        &mut self,
        edxapp: &Edxapp,
        snapshot: &ConfigSnapshot,
        shared: &ProxyState,
        settings: Settings,
    ) -> Result<CsmhConnection, CsmhError> {
        let metrics = &shared.metrics;
        let csmh = open(edxapp.caps, snapshot, self.client_tls, &shared.resolver).await;
        let mut csmh = csmh.inspect_err(|_| metrics.backend_connect_error(Server::Csmh))?;
        metrics.backend_connection(Server::Csmh, csmh.conn.tls_handshake());
        self.opened += 1;
        csmh.take_steps(&csmh.steps_for(Some(settings), edxapp.transaction())).await?;
        Ok(csmh)
    }

    /// At the clean end of the session (between two requests): hands the open connection to the proxy's pool for
    /// a later session, once the server has reset it and the session's settings are applied again
    /// ([`reset_keeping_settings`]). The reset rolls back a transaction the connection mirrored, as closing it
    /// would, when the client's ends with its connection to `edxapp`. A connection of an earlier configuration,
    /// or with `keep_idle = 0`, is closed instead.
    pub fn keep_for_later(&mut self, shared: &Arc<ProxyState>) {
        // Every executor reads the csmh server's answers to their end; bytes left in the buffer would mean one did
        // not, and such a connection is closed.
        let Some(csmh) = self.open.take().filter(|csmh| csmh.conn.buf.is_empty()) else { return };
        let snapshot = shared.snapshot();
        let max = snapshot.config.backends.csmh_keep_idle();
        if max == 0 || csmh.generation != snapshot.generation {
            return;
        }
        let pool = Arc::clone(&shared.csmh_pool);
        tokio::spawn(async move {
            let CsmhConnection { mut conn, caps, asked, generation, settings, .. } = csmh;
            match reset_keeping_settings(&mut conn, caps, &settings).await {
                Ok(()) => pool.keep(Kept::new(conn, caps, asked, generation, settings), max),
                Err(error) => warn!(%error, "the csmh server did not reset a connection to keep; closing it"),
            }
        });
    }

    /// Drops the connection after a failure; whether it had a transaction open (which the client's side must
    /// then give up too).
    pub fn close(&mut self, failure: &CsmhError) -> bool {
        warn!(error = %failure, "the csmh connection failed");
        let lost = self.open.take();
        self.failed += u64::from(lost.is_some());
        lost.is_some_and(|c| c.transaction.is_open())
    }

    /// Records that the server rolled back the transaction the connection held (after a deadlock).
    pub fn server_rolled_back(&mut self) {
        if let Some(csmh) = &mut self.open {
            csmh.transaction = Transaction::Closed;
        }
    }

    /// How many of the link's open connections failed (for the metrics): lost, or broken by the server; a
    /// connection that could not be opened is counted apart, as a connect error.
    pub fn failures(&self) -> u64 {
        self.failed
    }

    /// Closes the connection because the client's session starts over (COM_CHANGE_USER, COM_RESET_CONNECTION):
    /// the server rolls back the `csmh` side of the client's transaction, as `edxapp` does the client's, and
    /// forgets the statements prepared there.
    pub fn discard(&mut self) {
        self.open = None;
    }

    /// Drops the connection after `failure`, rolling the client's transaction back if the connection had part
    /// of it; the error to answer the client's statement with. A failure of the client's own `edxapp`
    /// connection ends the session.
    pub async fn fail(&mut self, edxapp: &mut Edxapp, failure: CsmhError) -> Result<MysqlError, SessionError> {
        if let CsmhError::Edxapp(error) = failure {
            return Err(SessionError::from(error));
        }
        let mut error = failure.to_mysql();
        if self.close(&failure) {
            edxapp.rollback().await?;
            error.message.push_str(ROLLED_BACK);
        }
        Ok(error)
    }

    /// Notes a request relayed to `edxapp`: one that may change the session settings makes the connection read
    /// them again before its next use.
    pub fn note_request(&mut self, command: Command, payload: &[u8], single_frame: bool) {
        if let Some(csmh) = &mut self.open {
            csmh.synced &= !may_change_settings(command, payload, single_frame);
        }
    }

    /// Records that the proxy's own transaction is open (or over) on the connection, so that it is not mistaken
    /// for one mirroring the client's.
    pub fn set_own_transaction(&mut self, open: bool) {
        if let Some(csmh) = &mut self.open {
            csmh.transaction = if open { Transaction::Open } else { Transaction::Closed };
        }
    }

    /// Commits the proxy's own transaction (around a write of both tables, ahead of `edxapp`'s part) on the open
    /// connection: the server's answer, or the client's error if the answer is lost (the connection failed, or
    /// the server sent nothing for `read_timeout_secs`). The server may then have committed or not: the
    /// connection is dropped, the loss is logged at ERROR, and the error says the outcome is unknown.
    pub async fn commit_own(&mut self) -> Result<Reply, MysqlError> {
        let Some(csmh) = self.open.as_mut() else {
            return Err(CsmhError::Refused("the connection closed before COMMIT".into()).to_mysql());
        };
        let reply = backend::query(&mut csmh.conn, csmh.caps, b"COMMIT").await;
        csmh.transaction = Transaction::Closed;
        reply.map_err(|error| {
            tracing::error!(
                "the csmh server's answer to COMMIT was lost: if it committed, the extended table holds a write of \
                 both tables rolled back on edxapp"
            );
            let error = CsmhError::Query(error);
            self.close(&error);
            let mut error = error.to_mysql();
            error.message.push_str(COMMIT_UNKNOWN);
            error
        })
    }

    /// Before a client statement runs on `edxapp`: if it ends or steps back in the transaction the `csmh`
    /// connection mirrors, does the same there first. Returns an error for the client when the `csmh` side
    /// cannot follow: after rolling the client's transaction back, so that neither side commits alone, if its
    /// step failed; with the transaction as it was if the statement is one it could not follow at all (it is
    /// not run, nor one longer than `parse_limit`, which it does not read).
    pub async fn follow_transaction_control(
        &mut self,
        edxapp: &mut Edxapp,
        statement: &[u8],
        parse_limit: usize,
    ) -> Result<Option<MysqlError>, SessionError> {
        let Some(csmh) = self.open.as_mut().filter(|c| c.transaction.is_open()) else { return Ok(None) };
        let control = if statement.len() > parse_limit {
            Some(Control::Unfollowable("a statement longer than listen.max_parsed_statement_bytes"))
        } else if string_literal::may_hide_quoting(statement)
            && edxapp.reading().await?.charset == ClientCharset::SplitByEscapes
        {
            Some(Control::Unfollowable(
                "a statement with a backslash or backquote that may end a character of the session's character set",
            ))
        } else {
            transaction_control(statement, edxapp.autocommit(), edxapp.escaping())
        };
        let Some(control) = control else { return Ok(None) };
        let outcome = match &control {
            Control::Unfollowable(what) => {
                return Ok(Some(MysqlError::not_supported(format!(
                    "csmh-proxy does not run {what} in a transaction that reached the extended table on its own \
                     server (the csmh server could not follow how it ends): COMMIT or ROLLBACK first"
                ))));
            }
            Control::Commit(_) => csmh.end(b"COMMIT").await.inspect_err(|error| {
                if let CsmhError::Query(QueryError::Io(_)) = error {
                    tracing::error!(
                        "the csmh server's answer to COMMIT was lost: if it committed, the extended table holds \
                         history rows of a transaction rolled back on edxapp"
                    );
                }
            }),
            // Stepping back waits for edxapp's answer ([`CsmhLink::follow_transaction_end`]).
            Control::Rollback => {
                csmh.transaction = Transaction::Awaiting(StepBack::All);
                Ok(())
            }
            Control::RollbackTo(name) => {
                csmh.transaction = Transaction::Awaiting(StepBack::To(name.clone()));
                Ok(())
            }
            Control::Savepoint(name) => csmh.savepoint(b"SAVEPOINT", name).await.map(drop),
            // A savepoint unknown here was set before this side's part began: nothing of that part to release.
            Control::Release(name) => csmh.savepoint(b"RELEASE SAVEPOINT", name).await.map(drop),
        };
        match outcome {
            Ok(()) => {
                if let Control::Commit(ending) = control {
                    self.committed_ahead = Some(ending);
                }
                Ok(None)
            }
            // The side's part is gone with its connection, so edxapp's goes too (after a failed COMMIT the
            // connection no longer counts a transaction, so this is not `fail`).
            Err(error) => {
                warn!(?control, "the csmh side could not follow the client's transaction; rolling it back");
                let answer_lost = matches!(error, CsmhError::Query(QueryError::Io(_)));
                let outcome = match control {
                    Control::Commit(_) if answer_lost => CLIENT_COMMIT_UNKNOWN,
                    _ => ROLLED_BACK,
                };
                self.close(&error);
                edxapp.rollback().await?;
                let mut error = error.to_mysql();
                error.message.push_str(outcome);
                Ok(Some(error))
            }
        }
    }

    /// After a client statement ran on `edxapp`: if the server rolled the transaction back (a deadlock), or
    /// carried out the client's ROLLBACK, the `csmh` side rolls back too; if it carried out a ROLLBACK TO
    /// SAVEPOINT, the `csmh` side steps back as well; if the transaction ended otherwise (a statement the proxy
    /// did not know commits), the `csmh` side commits. A `csmh` side that cannot step back to a savepoint loses
    /// its part with its connection, so the client's transaction is rolled back on `edxapp` too; one that cannot
    /// commit has lost its part of a transaction `edxapp` committed. Either is the error the client's next
    /// statement gets instead of running, as the client has had its statement's OK.
    pub async fn follow_transaction_end(&mut self, edxapp: &mut Edxapp) -> Result<Option<MysqlError>, SessionError> {
        if let Some(ending) = self.committed_ahead.take() {
            commit_unless_ended(ending, edxapp).await?;
            return Ok(None);
        }
        let Some(csmh) = self.open.as_mut().filter(|c| c.transaction.is_open()) else { return Ok(None) };
        let carried_out = match std::mem::replace(&mut csmh.transaction, Transaction::Open) {
            Transaction::Awaiting(step) if edxapp.last_error.is_none() => Some(step),
            _ => None,
        };
        let outcome = match (edxapp.last_error, carried_out) {
            (Some(code::ER_LOCK_DEADLOCK), _) | (_, Some(StepBack::All)) => csmh.end(b"ROLLBACK").await,
            (_, Some(StepBack::To(name))) => match csmh.step_back_to(&name).await {
                Ok(()) => Ok(()),
                // Its connection gone, the csmh side lost its part: edxapp's must go too, unless that part was
                // to go all along (the savepoint was older than it).
                Err(error) => {
                    let rolls_back = self.in_transaction();
                    warn!(rolls_back, "the csmh side could not step back with the client's transaction");
                    let error = self.fail(edxapp, error).await?;
                    return Ok(rolls_back.then_some(error));
                }
            },
            _ if !edxapp.in_transaction() => {
                let committed = csmh.end(b"COMMIT").await;
                return Ok(committed.err().map(|error| self.lost_after_edxapp_commit(&error)));
            }
            _ => return Ok(None),
        };
        if let Err(error) = outcome {
            tracing::error!("the client's transaction was rolled back on edxapp and the csmh side could not follow");
            self.close(&error);
        }
        Ok(None)
    }

    /// The `csmh` side could not commit after the client's transaction was committed on `edxapp` by a statement
    /// the proxy did not know commits (statements it knows commit the `csmh` side first): `edxapp`'s part is
    /// committed, this side's part lost (or, its answer lost, unknown). Nothing can undo the commit; the error
    /// the client's next statement gets instead of running, so that the loss is not silent.
    fn lost_after_edxapp_commit(&mut self, error: &CsmhError) -> MysqlError {
        tracing::error!("the client's transaction was committed on edxapp and the csmh side could not commit its part");
        self.close(error);
        let mut error = error.to_mysql();
        error.message.push_str(COMMITTED_WITHOUT_CSMH);
        error
    }
}

/// After a statement the `csmh` side committed ahead of ran on `edxapp`: if its answer does not say it committed
/// there ([`Ending`]), commits `edxapp`'s part of the transaction, so that the transaction ends on both servers.
/// The client has the statement's own answer.
async fn commit_unless_ended(ending: Ending, edxapp: &mut Edxapp) -> Result<(), SessionError> {
    let committed = edxapp.last_error.is_none() && (ending == Ending::Explicit || !edxapp.transaction_open());
    if committed {
        return Ok(());
    }
    warn!(
        error = edxapp.last_error,
        "a statement that ends the transaction did not commit on edxapp after the csmh side committed its part: \
         committing edxapp's part too"
    );
    if let Reply::Err(error) = edxapp.query(b"COMMIT").await? {
        tracing::error!(code = error.code, message = %error.message, "edxapp refused the COMMIT: the client's \
            transaction is committed on the csmh server and open on edxapp");
    }
    Ok(())
}

impl CsmhConnection {
    /// Brings the connection in step with the client's session: its settings, read on `edxapp` unless no request
    /// since the last reading may have changed them, applied if they differ from those applied here; and a
    /// transaction begun if the client is in one. What is to run here goes in one write (one round trip).
    async fn follow(&mut self, edxapp: &mut Edxapp) -> Result<(), CsmhError> {
        let steps = self.steps(edxapp).await?;
        self.take_steps(&steps).await
    }

    /// What [`CsmhConnection::follow`] must do here, with the client's settings read on `edxapp` if needed.
    async fn steps(&self, edxapp: &mut Edxapp) -> Result<Steps, CsmhError> {
        let client = match self.synced {
            true => None,
            false => Some(client_settings(edxapp).await?),
        };
        Ok(self.steps_for(client, edxapp.transaction()))
    }

    /// What [`CsmhConnection::follow`] must do here for a client session with settings `client` (`None`: those
    /// applied are still the client's) that is in `transaction` (`None`: in none).
    fn steps_for(&self, client: Option<Settings>, transaction: Option<Access>) -> Steps {
        let settings = client.filter(|settings| *settings != self.settings);
        let begin = transaction.filter(|_| !self.transaction.is_open());
        Steps { settings, begin, check: false }
    }

    /// Runs `steps` here, in one write. Under the client's autocommit off the transaction is not begun with a
    /// BEGIN: the next statement here begins it, as the client's own statements do on `edxapp`, and nothing is
    /// waited for when the settings are already the client's (edxapp's requests under `ATOMIC_REQUESTS`), unless
    /// the connection must answer first (`COM_PING` when there is nothing else to run). A read-only transaction
    /// (`START TRANSACTION READ ONLY`) is begun as one, whatever autocommit is, so that a write here is refused
    /// (1792) as on `edxapp`.
    async fn take_steps(&mut self, steps: &Steps) -> Result<(), CsmhError> {
        let set = steps.settings.as_deref().map(set_session).transpose()?.unwrap_or_default();
        let applied = steps.settings.as_ref().unwrap_or(&self.settings);
        let begin: Option<&[u8]> = match steps.begin {
            Some(Access::ReadOnly) => Some(b"START TRANSACTION READ ONLY"),
            Some(Access::ReadWrite) if !autocommit_off(applied) => Some(b"BEGIN"),
            _ => None,
        };
        let statements = set.iter().map(String::as_bytes).chain(begin);
        let mut commands: Vec<(u8, &[u8])> = statements.map(|sql| (COM_QUERY, sql)).collect();
        if commands.is_empty() && steps.check {
            commands.push((COM_PING, b""));
        }
        for reply in backend::pipeline(&mut self.conn, self.caps, &commands).await? {
            expect_ok(reply)?;
        }
        self.synced = true;
        if let Some(settings) = &steps.settings {
            self.settings.clone_from(settings);
        }
        if steps.begin.is_some() {
            self.transaction = Transaction::Open;
        }
        Ok(())
    }

    /// Ends the transaction open here with `sql` (COMMIT or ROLLBACK).
    async fn end(&mut self, sql: &[u8]) -> Result<(), CsmhError> {
        let reply = backend::query(&mut self.conn, self.caps, sql).await;
        self.transaction = Transaction::Closed;
        expect_ok(reply?)
    }

    /// Steps back to the savepoint `name`, as `edxapp` did: to it, or out of all of this side's part when this
    /// side does not have it (it was set before that part began).
    async fn step_back_to(&mut self, name: &str) -> Result<(), CsmhError> {
        match self.savepoint(b"ROLLBACK TO SAVEPOINT", name).await? {
            Savepoint::Done => Ok(()),
            Savepoint::Unknown => self.end(b"ROLLBACK").await,
        }
    }

    /// Runs `verb` (SAVEPOINT, ROLLBACK TO SAVEPOINT, RELEASE SAVEPOINT) on the savepoint `name` here.
    async fn savepoint(&mut self, verb: &[u8], name: &str) -> Result<Savepoint, CsmhError> {
        let sql = [verb, b" `", name.replace('`', "``").as_bytes(), b"`"].concat();
        match backend::query(&mut self.conn, self.caps, &sql).await? {
            Reply::Err(error) if error.code == code::ER_SP_DOES_NOT_EXIST => Ok(Savepoint::Unknown),
            reply => expect_ok(reply).map(|()| Savepoint::Done),
        }
    }
}

/// Opens and logs in a connection to the `csmh` server of `snapshot` (its name looked up through `resolver`),
/// with the layout capabilities of the client (`client`) so that its answers can be relayed as they are.
async fn open(
    client: Negotiated,
    snapshot: &ConfigSnapshot,
    client_tls: bool,
    resolver: &Resolver,
) -> Result<CsmhConnection, CsmhError> {
    let config = &snapshot.config.backends.csmh;
    let password = config.password().map_err(|e| CsmhError::Credentials(e.to_string()))?;
    let user = config.user.clone().ok_or_else(|| CsmhError::Credentials("no user configured".into()))?;
    let database = Some(snapshot.router.extended().schema().to_owned());
    let credentials = Credentials { user, password, database };
    let mut conn = backend::connect(resolver, &config.address, config.connect_timeout_secs).await?;
    conn.set_io_timeout(std::time::Duration::from_secs(config.read_timeout_secs));
    let asked = login_asked(client);
    let wanted = (backend::LOGIN_CAPABILITIES - LAYOUT) | asked.0;
    // The greeting and login are bounded too: a server whose accept queue overflowed never greets.
    let timeout = std::time::Duration::from_secs(config.connect_timeout_secs);
    let tls = LoginTls { settings: &snapshot.tls.csmh, client_tls };
    let login = backend::login_over(&mut conn, &credentials, wanted, asked.1, Some(tls));
    let caps = tokio::time::timeout(timeout, login)
        .await
        .map_err(|_| LoginError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "no login answer in time")))??;
    let missing = (client.flags() & LAYOUT) - caps.flags();
    if !missing.is_empty() {
        return Err(CsmhError::Capabilities(format!("{missing:?}")));
    }
    let missing = (client.mariadb() & LAYOUT_MARIADB) - caps.mariadb();
    if !missing.is_empty() {
        return Err(CsmhError::Capabilities(format!("{missing:?}")));
    }
    info!(address = %config.address, "opened the csmh connection");
    Ok(CsmhConnection::new(conn, caps, asked, snapshot.generation))
}

/// What a `csmh` login asks for on behalf of a client with capabilities `client`: its layout capabilities, and
/// its MariaDB extensions.
fn login_asked(client: Negotiated) -> LoginAsked {
    (client.flags() & LAYOUT, client.mariadb())
}

/// Resets a `csmh` connection that is to be kept (`COM_RESET_CONNECTION`) and applies `settings` on it again, in
/// one write: the next session to take it finds them in place, with nothing else of this session's.
async fn reset_keeping_settings(conn: &mut Connection, caps: Negotiated, settings: &Settings) -> Result<(), CsmhError> {
    let set = if settings.is_empty() { Vec::new() } else { set_session(settings)? };
    let reset = std::iter::once((COM_RESET_CONNECTION, b"".as_slice()));
    let commands: Vec<(u8, &[u8])> = reset.chain(set.iter().map(|sql| (COM_QUERY, sql.as_bytes()))).collect();
    for reply in backend::pipeline(conn, caps, &commands).await? {
        expect_ok(reply)?;
    }
    Ok(())
}

/// Whether `settings` (as [`client_settings`] reads them) turn autocommit off: a statement run under them begins
/// a transaction if none is open.
fn autocommit_off(settings: &Settings) -> bool {
    settings.get(AUTOCOMMIT).is_some_and(|value| value.as_deref() == Some(b"0"))
}

/// The client session's settings, read on its `edxapp` connection with the names its server knows: those of
/// MariaDB or MySQL as its greeting said, and the other ones if the server does not know a name (error 1193: a
/// front end such as ProxySQL may announce a version of its own), which the connection then remembers.
async fn client_settings(edxapp: &mut Edxapp) -> Result<Settings, CsmhError> {
    match read_settings(edxapp).await? {
        Reply::Err(error) if error.code == code::ER_UNKNOWN_SYSTEM_VARIABLE => {
            edxapp.server_is_mariadb = !edxapp.server_is_mariadb;
            settings_row(read_settings(edxapp).await?)
        }
        reply => settings_row(reply),
    }
}

/// Runs the settings read of [`client_settings`] under the names of the server `edxapp` is believed to be.
async fn read_settings(edxapp: &mut Edxapp) -> Result<Reply, CsmhError> {
    let query = if edxapp.server_is_mariadb { SETTINGS_MARIADB } else { SETTINGS_MYSQL };
    backend::query(&mut edxapp.conn, edxapp.caps, query.as_bytes()).await.map_err(CsmhError::Edxapp)
}

/// The one row of the settings read's answer.
fn settings_row(reply: Reply) -> Result<Settings, CsmhError> {
    match reply {
        Reply::Rows(mut rows) if rows.values.len() == 1 && rows.values[0].len() == SETTING_NAMES.len() + 2 => {
            Ok(rows.values.remove(0))
        }
        Reply::Err(error) => {
            Err(CsmhError::Refused(format!("cannot read the client's session settings: {}", error.message)))
        }
        _ => Err(CsmhError::Refused("cannot read the client's session settings: an unexpected answer".into())),
    }
}

/// The statements that apply `settings` (as [`client_settings`] reads them) on a MariaDB or MySQL server: the
/// variables of [`SETTING_NAMES`], then the isolation level and access mode.
fn set_session(settings: &[Option<Vec<u8>>]) -> Result<Vec<String>, CsmhError> {
    let [variables @ .., isolation, read_only] = settings else {
        return Err(CsmhError::Refused("no settings".into()));
    };
    let assignments: Vec<String> =
        SETTING_NAMES.iter().zip(variables).map(|(name, value)| format!("{name} = {}", literal(value))).collect();
    let level = reported_as(&ISOLATION_LEVELS, isolation)
        .ok_or_else(|| CsmhError::Refused(format!("unknown transaction isolation level {}", literal(isolation))))?;
    let access = reported_as(&ACCESS_MODES, read_only)
        .ok_or_else(|| CsmhError::Refused(format!("unknown transaction access mode {}", literal(read_only))))?;
    Ok(vec![
        format!("SET SESSION {}", assignments.join(", ")),
        format!("SET SESSION TRANSACTION ISOLATION LEVEL {level}, {access}"),
    ])
}

/// The words `SET SESSION TRANSACTION` takes for a characteristic the server reported as `value`, among `known`.
fn reported_as(known: &[(&[u8], &'static str)], value: &Option<Vec<u8>>) -> Option<&'static str> {
    known.iter().find(|(reported, _)| value.as_deref() == Some(*reported)).map(|(_, words)| *words)
}

/// Whether `reply` is an OK; an ERR becomes the error.
pub(super) fn expect_ok(reply: Reply) -> Result<(), CsmhError> {
    match reply {
        Reply::Ok(_) | Reply::Rows(_) | Reply::Prepared(_) => Ok(()),
        Reply::Err(error) => Err(CsmhError::Refused(error.message)),
    }
}

/// A SQL literal for a setting's value as the server reported it, read alike under any `sql_mode` (the mode the
/// `csmh` connection parses the `SET` under is its own until then, not necessarily the client's).
fn literal(value: &Option<Vec<u8>>) -> String {
    match value {
        None => "NULL".to_owned(),
        Some(digits) if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) => {
            String::from_utf8_lossy(digits).into_owned()
        }
        Some(bytes) => string_literal::any_mode_literal(bytes),
    }
}

/// The first words, besides [`IMPLICIT_COMMITS`], of the statements [`transaction_control`] recognises.
const CONTROL_FIRST_WORDS: [&str; 13] = [
    "ANALYZE",
    "BEGIN",
    "CALL",
    "COMMIT",
    "EXECUTE",
    "LOAD",
    "RELEASE",
    "ROLLBACK",
    "SAVEPOINT",
    "SET",
    "START",
    "UNLOCK",
    "XA",
];

/// Whether `statement`, run in a transaction, would end it or step in it as [`transaction_control`] sees it
/// (with autocommit off, where implicit commits count): for statements to prepare, whose executions the `csmh`
/// side cannot follow. A statement to prepare is one statement, so its first word rules out most without
/// tokenizing. One the tokenizer cannot read counts as one: the server may read it (a name ending in a gbk
/// character that holds a backquote, say).
pub fn controls_transactions(statement: &[u8], escaping: Escaping) -> bool {
    if let Some(start) = first_keyword_start(statement) {
        let word_len = statement[start..].iter().take_while(|b| b.is_ascii_alphabetic()).count();
        let word = &statement[start..start + word_len];
        let is = |known: &&str| word.eq_ignore_ascii_case(known.as_bytes());
        // No word at all (a statement starting with a character the check does not skip) is left to the tokenizer.
        if word_len > 0 && !CONTROL_FIRST_WORDS.iter().any(is) && !IMPLICIT_COMMITS.iter().any(is) {
            return false;
        }
    }
    let source = Source::new(statement);
    match source.tokens() {
        Ok(tokens) => control_of(&tokens, &source, false, escaping).is_some(),
        Err(_) => true,
    }
}

/// Recognises COMMIT, ROLLBACK and the savepoint statements (as Django and mysqlclient send them), the
/// statements that commit before beginning a transaction, with autocommit off those that commit implicitly, and
/// what the `csmh` side cannot follow: several statements in one query, XA, CALL, EXECUTE, compound statements.
fn transaction_control(statement: &[u8], autocommit: bool, escaping: Escaping) -> Option<Control> {
    let source = Source::new(statement);
    match source.tokens() {
        Ok(tokens) => control_of(&tokens, &source, autocommit, escaping),
        Err(_) => Some(Control::Unfollowable("a statement it cannot read")),
    }
}

/// [`transaction_control`] of the statement of `source`, read as `tokens`.
fn control_of(tokens: &[Tok], source: &Source<'_>, autocommit: bool, escaping: Escaping) -> Option<Control> {
    let statement = source.bytes();
    if let Some(misreading) = source::misreading(source, tokens) {
        return Some(Control::Unfollowable(misreading.describe()));
    }
    if escaping == Escaping::DoubledQuotes
        && source::string_read_otherwise_without_backslash_escapes(tokens, statement).is_some()
    {
        return Some(Control::Unfollowable("a statement with a string read otherwise under NO_BACKSLASH_ESCAPES"));
    }
    if source::double_quoted(tokens).any(|range| statement[range].contains(&b'\\')) {
        return Some(Control::Unfollowable("a statement with a backslash in double quotes (a name under ANSI_QUOTES)"));
    }
    let statements_end = tokens.iter().position(|t| t.token.token == Token::SemiColon).unwrap_or(tokens.len());
    if statements_end + 1 < tokens.len() {
        return Some(Control::Unfollowable("several statements in one query"));
    }
    // The first words decide (a savepoint's name is the fifth at most).
    let word_tokens: Vec<&Tok> = tokens.iter().filter(|t| t.word().is_some()).take(5).collect();
    let words: Vec<String> = word_tokens.iter().filter_map(|t| t.word().map(str::to_ascii_uppercase)).collect();
    let raw_name = |i: usize| word_tokens.get(i).and_then(|t| t.word()).map(str::to_owned);
    match words.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["COMMIT", ..] => Some(Control::Commit(Ending::Explicit)),
        ["BEGIN", "NOT", "ATOMIC", ..] => Some(Control::Unfollowable("a compound statement")),
        ["BEGIN", ..] | ["START", "TRANSACTION", ..] => Some(Control::Commit(Ending::Explicit)),
        ["SET", "STATEMENT", ..] => Some(Control::Unfollowable("SET STATEMENT … FOR")),
        ["XA", ..] => Some(Control::Unfollowable("XA statements")),
        ["CALL", ..] => Some(Control::Unfollowable("a stored procedure")),
        ["EXECUTE", ..] => Some(Control::Unfollowable("EXECUTE")),
        ["UNLOCK", ..] if !autocommit => Some(Control::Unfollowable("UNLOCK TABLES with autocommit off")),
        words if commits_implicitly(words) => Some(Control::Commit(Ending::Implicit)),
        ["SET", ..] if !autocommit => autocommit_turned_on(tokens),
        ["ROLLBACK", ..] => rollback(&word_tokens),
        ["SAVEPOINT", ..] => raw_name(1).map(Control::Savepoint),
        ["RELEASE", "SAVEPOINT", ..] => raw_name(2).map(Control::Release),
        _ => None,
    }
}

/// The control of a ROLLBACK statement whose first word tokens are `words`: `ROLLBACK [WORK] TO [SAVEPOINT]
/// name` steps back to a savepoint (the keywords unquoted, the name quoted or not), any other rolls the whole
/// transaction back; `None` for `ROLLBACK [WORK] TO` without a name, which the server refuses.
fn rollback(words: &[&Tok]) -> Option<Control> {
    let mut rest = words.get(1..).unwrap_or_default();
    if rest.first().is_some_and(|word| word.is_keyword("WORK")) {
        rest = &rest[1..];
    }
    if !rest.first().is_some_and(|word| word.is_keyword("TO")) {
        return Some(Control::Rollback);
    }
    rest = &rest[1..];
    if rest.len() > 1 && rest[0].is_keyword("SAVEPOINT") {
        rest = &rest[1..];
    }
    rest.first().and_then(|word| word.word()).map(|name| Control::RollbackTo(name.to_owned()))
}

/// Whether a statement whose words (upper case) are `words` commits the transaction implicitly, but BEGIN and
/// START TRANSACTION. The `csmh` side commits first, as for a COMMIT, so that a failure there rolls both sides
/// back and the statement does not run (the server commits before running such a statement; one it refuses
/// before that, or does not commit for, is followed by a COMMIT of the proxy's: [`Ending::Implicit`]).
/// `CREATE TEMPORARY` and `DROP TEMPORARY` do not commit, nor `DROP PREPARE`.
fn commits_implicitly(words: &[&str]) -> bool {
    match words {
        ["CREATE" | "DROP", ..] if words.iter().take(4).any(|word| *word == "TEMPORARY") => false,
        ["DROP", "PREPARE", ..] => false,
        // MariaDB's ANALYZE of a SELECT, UPDATE or DELETE runs it; only ANALYZE TABLE commits.
        ["ANALYZE", second, ..] => matches!(*second, "TABLE" | "LOCAL" | "NO_WRITE_TO_BINLOG"),
        ["LOAD", "INDEX", ..] | ["SET", "PASSWORD", ..] | ["START", ..] => true,
        [first, ..] => IMPLICIT_COMMITS.contains(first),
        [] => false,
    }
}

/// The control of a SET statement run with autocommit off: setting `autocommit` to 1, ON or TRUE commits the
/// transaction ([`Control::Commit`], the `csmh` side first); to 0, OFF or FALSE, or not naming it, changes
/// nothing; to any other value (an expression, a variable, a string, a number but 0 and 1) it is not followed.
fn autocommit_turned_on(tokens: &[Tok]) -> Option<Control> {
    // `autocommit`, `@@autocommit`, `@@session.autocommit`; `@autocommit` is a user variable.
    let names_autocommit =
        |t: &Tok| t.word().is_some_and(|w| w.strip_prefix("@@").unwrap_or(w).eq_ignore_ascii_case("autocommit"));
    if !tokens.iter().any(names_autocommit) {
        return None;
    }
    let global = |t: &Tok| t.is_keyword("GLOBAL") || t.is_keyword("@@GLOBAL");
    if tokens.iter().any(global) {
        return Some(Control::Unfollowable("a SET GLOBAL naming autocommit"));
    }
    let mut turned_on = false;
    for (at, _) in tokens.iter().enumerate().filter(|(_, t)| names_autocommit(t)) {
        let value = match tokens.get(at + 1..at + 3) {
            Some([assign, value]) if matches!(assign.token.token, Token::Eq | Token::Assignment) => value,
            _ => return Some(Control::Unfollowable("a SET of autocommit the proxy cannot read")),
        };
        // The value is the whole expression: the next assignment, or the statement's end, comes after it.
        let ends = |t: &Tok| matches!(t.token.token, Token::Comma | Token::SemiColon | Token::EOF);
        if !tokens.get(at + 3).is_none_or(ends) {
            return Some(Control::Unfollowable("a SET of autocommit to a value other than 0, 1, ON or OFF"));
        }
        match autocommit_value(value) {
            Some(on) => turned_on |= on,
            None => return Some(Control::Unfollowable("a SET of autocommit to a value other than 0, 1, ON or OFF")),
        }
    }
    turned_on.then_some(Control::Commit(Ending::Implicit))
}

/// Whether `value`, assigned to autocommit, turns it on; `None` for what is not a plain 0, 1, ON, OFF, TRUE or
/// FALSE (the server refuses other numbers).
fn autocommit_value(value: &Tok) -> Option<bool> {
    match &value.token.token {
        Token::Number(number, _) => match number.as_str() {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        },
        Token::Word(word) if word.quote_style.is_none() => match word.value.to_ascii_uppercase().as_str() {
            "ON" | "TRUE" => Some(true),
            "OFF" | "FALSE" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Whether a passthrough request may change the session settings mirrored on the `csmh` connection
/// ([`client_settings`]), so that they must be read again before its next statement: a statement that sets
/// variables (`SET`, also in an executable comment or after a `;`), calls a procedure or executes an
/// SQL-prepared statement; any binary-protocol execution; a change of user or a reset. Other requests leave the
/// settings as they were, and the next csmh statement needs no settings read on the client's connection.
pub(super) fn may_change_settings(command: Command, payload: &[u8], single_frame: bool) -> bool {
    match command {
        Command::Query => !single_frame || statement_may_change_settings(command::body(payload)),
        Command::ChangeUser => true,
        Command::StmtExecute { .. } => true,
        Command::Relayed(byte) => matches!(byte, COM_STMT_BULK_EXECUTE | COM_RESET_CONNECTION),
        Command::Quit | Command::StmtPrepare | Command::Refused(_) => false,
    }
}

/// Keywords that start a statement which may change session variables.
const SETTING_KEYWORDS: [&[u8]; 3] = [b"SET", b"CALL", b"EXECUTE"];

/// The text part of [`may_change_settings`].
fn statement_may_change_settings(text: &[u8]) -> bool {
    let Some(start) = first_keyword_start(text) else { return true };
    let word_len = text[start..].iter().take_while(|b| b.is_ascii_alphabetic()).count();
    let word = &text[start..start + word_len];
    SETTING_KEYWORDS.iter().any(|keyword| word.eq_ignore_ascii_case(keyword)) || text[start..].contains(&b';')
}

/// Where the first keyword of `text` starts, after white space and comments as the server reads them; `None`
/// when an executable comment (`/*! ... */`, `/*M! ... */`) comes first, whose content the server runs.
fn first_keyword_start(text: &[u8]) -> Option<usize> {
    // The server's white space: tab, line feed, vertical tab, form feed, carriage return and space.
    let is_space = |byte: &u8| matches!(byte, b'\t'..=b'\r' | b' ');
    let mut at = 0;
    loop {
        let rest = &text[at..];
        if rest.first().is_some_and(is_space) {
            at += 1;
        } else if rest.starts_with(b"/*!") || rest.starts_with(b"/*M!") {
            return None;
        } else if rest.starts_with(b"/*") {
            at += rest.windows(2).position(|w| w == b"*/").map_or(rest.len(), |end| end + 2);
        } else if rest.starts_with(b"#")
            || (rest.starts_with(b"--") && rest.get(2).is_some_and(|b| is_space(b) || b.is_ascii_control()))
        {
            at += rest.iter().position(|&b| b == b'\n').map_or(rest.len(), |end| end + 1);
        } else {
            return Some(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_again_only_after_requests_that_may_change_them() {
        let query = |sql: &str| may_change_settings(Command::Query, &[b"\x03", sql.as_bytes()].concat(), true);
        for sql in [
            "SET time_zone = '+00:00'",
            "  set names utf8mb4",
            "/* django */ SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "-- note\nSET autocommit=0",
            "/*!40101 SET NAMES utf8 */",
            "CALL refresh()",
            "execute stmt",
            "SELECT 1; SET sql_mode = ''",
        ] {
            assert!(query(sql), "{sql}");
        }
        for sql in
            ["SELECT 1", "UPDATE courseware_studentmodule SET state = '{}' WHERE id = 1", "COMMIT", "  # x\nSELECT 2"]
        {
            assert!(!query(sql), "{sql}");
        }
        assert!(may_change_settings(Command::Query, b"\x03SELECT 1", false), "a statement in several frames");
        assert!(may_change_settings(Command::ChangeUser, b"\x11", true));
        assert!(may_change_settings(Command::StmtExecute { cursor: false }, b"\x17", true));
        assert!(!may_change_settings(Command::Relayed(crate::protocol::command::COM_INIT_DB), b"\x02edxapp", true));
    }

    #[test]
    fn recognises_djangos_transaction_statements() {
        assert_eq!(
            transaction_control(b"COMMIT", true, Escaping::Backslashes),
            Some(Control::Commit(Ending::Explicit))
        );
        assert_eq!(transaction_control(b"rollback", true, Escaping::Backslashes), Some(Control::Rollback));
        assert_eq!(
            transaction_control(b"SAVEPOINT `s1403_x1`", true, Escaping::Backslashes),
            Some(Control::Savepoint("s1403_x1".into()))
        );
        assert_eq!(
            transaction_control(b"ROLLBACK TO SAVEPOINT `s1403_x1`", true, Escaping::Backslashes),
            Some(Control::RollbackTo("s1403_x1".into()))
        );
        assert_eq!(
            transaction_control(b"RELEASE SAVEPOINT `s1403_x1`", true, Escaping::Backslashes),
            Some(Control::Release("s1403_x1".into()))
        );
        assert_eq!(transaction_control(b"SELECT 1", true, Escaping::Backslashes), None);
        let to = |name: &str| Some(Control::RollbackTo(name.into()));
        for (sql, control) in [
            ("ROLLBACK WORK TO w", to("w")),
            ("rollback work to savepoint w", to("w")),
            ("ROLLBACK TO `savepoint`", to("savepoint")),
            ("ROLLBACK TO SAVEPOINT `savepoint`", to("savepoint")),
            ("ROLLBACK WORK", Some(Control::Rollback)),
            ("ROLLBACK AND NO CHAIN", Some(Control::Rollback)),
            ("ROLLBACK `TO` x", Some(Control::Rollback)),
            ("ROLLBACK TO", None),
        ] {
            assert_eq!(transaction_control(sql.as_bytes(), true, Escaping::Backslashes), control, "{sql}");
        }
        assert_eq!(transaction_control(b"COMMITTED_READS", true, Escaping::Backslashes), None);
        assert_eq!(
            transaction_control(b"BEGIN", true, Escaping::Backslashes),
            Some(Control::Commit(Ending::Explicit)),
            "BEGIN commits the one before"
        );
        assert_eq!(
            transaction_control(b"start transaction read only", false, Escaping::Backslashes),
            Some(Control::Commit(Ending::Explicit))
        );
        let unfollowable = |sql: &[u8], autocommit| {
            matches!(transaction_control(sql, autocommit, Escaping::Backslashes), Some(Control::Unfollowable(_)))
        };
        for sql in [
            &b"UPDATE auth_user SET username = 'a'; ROLLBACK"[..],
            b"SELECT 1;SELECT 2",
            b"XA ROLLBACK 'x'",
            b"CALL roll_back()",
            b"EXECUTE s",
            b"BEGIN NOT ATOMIC ROLLBACK; END",
        ] {
            assert!(unfollowable(sql, true), "{}", String::from_utf8_lossy(sql));
        }
        for sql in [&b"CREATE TABLE t (a INT)"[..], b"truncate table t", b"LOCK TABLES t WRITE", b"SET PASSWORD = ''"] {
            for autocommit in [false, true] {
                let commit = transaction_control(sql, autocommit, Escaping::Backslashes);
                assert_eq!(
                    commit,
                    Some(Control::Commit(Ending::Implicit)),
                    "{}: commits implicitly",
                    String::from_utf8_lossy(sql)
                );
            }
        }
        for (sql, control) in [
            ("SET autocommit = 1", Some(Control::Commit(Ending::Implicit))),
            ("set @@session.AUTOCOMMIT := ON, sql_mode = ''", Some(Control::Commit(Ending::Implicit))),
            ("SET SESSION autocommit = true", Some(Control::Commit(Ending::Implicit))),
            ("SET autocommit = 0", None),
            ("SET autocommit = OFF", None),
            ("SET time_zone = '+00:00'", None),
            ("SET @autocommit = 1", None),
        ] {
            assert_eq!(transaction_control(sql.as_bytes(), false, Escaping::Backslashes), control, "{sql}");
            assert_eq!(transaction_control(sql.as_bytes(), true, Escaping::Backslashes), None, "already on: {sql}");
        }
        for sql in [
            &b"SET autocommit = @on"[..],
            b"SET autocommit = '1'",
            b"SET autocommit = DEFAULT",
            b"SET GLOBAL autocommit = 1",
            b"SET @@global.autocommit = 1",
            b"SET autocommit = 2",
            b"SET autocommit = 1 - 1",
            b"SET autocommit = 1 AND 0, sql_mode = ''",
            b"SET autocommit = ON OR 0",
        ] {
            assert!(unfollowable(sql, false), "{}", String::from_utf8_lossy(sql));
        }
        for autocommit in [false, true] {
            let set_statement = b"SET STATEMENT max_statement_time = 0 FOR ROLLBACK";
            assert!(unfollowable(set_statement, autocommit), "SET STATEMENT runs a statement the proxy does not read");
            let drop = transaction_control(b"DROP PREPARE s1", autocommit, Escaping::Backslashes);
            assert_eq!(drop, None, "DROP PREPARE commits nothing");
        }
        let ended = transaction_control(b"SET autocommit = 1;", false, Escaping::Backslashes);
        assert_eq!(ended, Some(Control::Commit(Ending::Implicit)));
        assert_eq!(transaction_control(b"CREATE TEMPORARY TABLE t (a INT)", false, Escaping::Backslashes), None);
        for sql in [
            &b"CREATE OR REPLACE TEMPORARY TABLE t (a INT)"[..],
            b"DROP TEMPORARY TABLE IF EXISTS t",
            b"ANALYZE SELECT 1",
            b"ANALYZE FORMAT=JSON DELETE FROM t",
        ] {
            let control = transaction_control(sql, false, Escaping::Backslashes);
            assert_eq!(control, None, "{}: commits nothing", String::from_utf8_lossy(sql));
        }
        for (sql, prepared_controls) in [
            (&b"/* x */ commit"[..], true),
            (b"/*!40101 COMMIT */", true),
            (b"Create table t (a INT)", true),
            (b"SELECT 1", false),
            (b"-- note\nUPDATE t SET a = 1", false),
            // Unreadable to the tokenizer, which ends the name at the backquote a gbk character ends in.
            ("ROLLBACK TO SAVEPOINT `中`s`".as_bytes(), true),
            // The server's white space and comments before the word, which the first-word check does not skip.
            (b"\x0bROLLBACK", true),
            (b"--\t\nROLLBACK", true),
            (b"--\x01\nROLLBACK", true),
            (b"/*M! ROLLBACK */", true),
        ] {
            let seen = controls_transactions(sql, Escaping::Backslashes);
            assert_eq!(seen, prepared_controls, "{}", String::from_utf8_lossy(sql));
        }
        let commit = transaction_control(b"ANALYZE TABLE t", false, Escaping::Backslashes);
        assert_eq!(commit, Some(Control::Commit(Ending::Implicit)));
        assert!(unfollowable(b"UNLOCK TABLES", false), "commits only if tables are locked");
        assert!(unfollowable(b"SELECT 'unterminated", true), "not read, not run");
        // latin1 reads 0xA0 as a space, the tokenizer as a letter of one word.
        assert!(unfollowable(b"\xa0ROLLBACK", true), "a word with a byte above 0x7F, not UTF-8");
        // The server reads a ROLLBACK the tokenizer does not, or skips one it reads.
        let hiding: [&[u8]; 4] = [
            b"SELECT 1 --\x01'\nROLLBACK -- '",
            b"/*M! ROLLBACK */",
            b"/*!999999 ROLLBACK */",
            b"SELECT @@`a`; ROLLBACK; -- `",
        ];
        for hidden in hiding {
            assert!(unfollowable(hidden, true), "{}", String::from_utf8_lossy(hidden));
        }
        // Under ANSI_QUOTES a name `a\`, then a ROLLBACK; one string to the tokenizer.
        assert!(unfollowable(br#"SELECT "a\"; ROLLBACK; -- ""#, true), "a backslash in double quotes");
        assert!(!unfollowable(br#"SELECT "a""#, true), "double quotes alone read alike but for the kind");
        let hidden = br"UPDATE t SET a = 'C:\'; ROLLBACK -- '";
        assert_eq!(transaction_control(hidden, true, Escaping::Backslashes), None, "one string to the tokenizer");
        let refused = transaction_control(hidden, true, Escaping::DoubledQuotes);
        assert!(matches!(refused, Some(Control::Unfollowable(_))), "two statements under NO_BACKSLASH_ESCAPES");
        assert_eq!(
            transaction_control(b"SELECT 1;", false, Escaping::Backslashes),
            None,
            "one statement and its semicolon"
        );
        assert_eq!(transaction_control(b"SELECT ';'", false, Escaping::Backslashes), None);
    }

    #[test]
    fn settings_become_safe_literals() {
        assert_eq!(literal(&None), "NULL");
        assert_eq!(literal(&Some(b"STRICT_TRANS_TABLES,NO_ZERO_DATE".to_vec())), "'STRICT_TRANS_TABLES,NO_ZERO_DATE'");
        assert_eq!(literal(&Some(b"it's".to_vec())), "'it''s'");
        assert_eq!(literal(&Some(b"a\\b".to_vec())), "X'615C62'", "read alike under any sql_mode");
        assert_eq!(literal(&Some(b"1".to_vec())), "1", "autocommit takes a number");
    }

    #[test]
    fn the_isolation_level_is_read_and_set_under_names_each_server_knows() {
        assert!(SETTINGS_MARIADB.ends_with("@@session.autocommit, @@session.tx_isolation, @@session.tx_read_only"));
        assert!(
            SETTINGS_MYSQL
                .ends_with("@@session.autocommit, @@session.transaction_isolation, @@session.transaction_read_only")
        );
        assert!(!SETTINGS_MYSQL.contains("tx_"), "MySQL 8.0 removed tx_isolation and tx_read_only");
        let read = |isolation: &[u8]| {
            let mut values: Vec<Option<Vec<u8>>> = SETTING_NAMES.iter().map(|_| Some(b"1".to_vec())).collect();
            values.push(Some(isolation.to_vec()));
            values.push(Some(b"0".to_vec()));
            values
        };
        let set = set_session(&read(b"READ-COMMITTED")).expect("a known level");
        assert_eq!(set[1], "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED, READ WRITE");
        let mut read_only = read(b"SERIALIZABLE");
        *read_only.last_mut().unwrap() = Some(b"1".to_vec());
        let set = set_session(&read_only).expect("a known mode");
        assert_eq!(set[1], "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY");
        assert!(set[0].starts_with("SET SESSION character_set_client = 1,") && set[0].ends_with("autocommit = 1"));
        assert!(!set[0].contains("isolation"), "{}", set[0]);
        let unknown = set_session(&read(b"READ COMMITTED; DROP TABLE t")).expect_err("not a level a server reports");
        assert!(unknown.to_string().contains("unknown transaction isolation level"), "{unknown}");
    }

    #[test]
    fn the_router_lets_statements_on_csmh_read_exactly_the_settings_applied_there() {
        use crate::routing::source::SETTINGS_APPLIED_ON_CSMH;
        let applied = SETTING_NAMES.iter().copied().chain(["tx_isolation", "transaction_isolation"]);
        let mut applied: Vec<&str> = applied.chain(["tx_read_only", "transaction_read_only"]).collect();
        applied.sort_unstable();
        assert_eq!(applied, SETTINGS_APPLIED_ON_CSMH);
    }

    #[test]
    fn autocommit_is_read_where_the_settings_read_puts_it() {
        assert_eq!(SETTING_NAMES[AUTOCOMMIT], "autocommit");
        assert!(SETTINGS_MARIADB.contains("@@session.sql_mode, @@session.autocommit,"));
        let with = |autocommit: &[u8]| {
            let mut values: Settings = SETTING_NAMES.iter().map(|_| Some(b"utf8mb4".to_vec())).collect();
            values[AUTOCOMMIT] = Some(autocommit.to_vec());
            values.push(Some(b"REPEATABLE-READ".to_vec()));
            values.push(Some(b"0".to_vec()));
            values
        };
        assert!(autocommit_off(&with(b"0")));
        assert!(!autocommit_off(&with(b"1")));
        assert!(!autocommit_off(&Vec::new()), "a connection with no settings applied has the server's default");
    }
}
