//! Carrying out a route other than passthrough: sending a rewritten statement, reading both tables, writing
//! both tables as one statement, or answering with the proxy's own error.

use bytes::BytesMut;
use mysql_common::constants::{CapabilityFlags, StatusFlags};
use tracing::{debug, info, warn};

use super::csmh::CsmhError;
use super::{CopyFailure, Flow, Session, SessionError, copy_response};
use crate::backend::{self, QueryError, Reply, Rows};
use crate::metrics::RouteLabel;
use crate::protocol::ProtocolError;
use crate::protocol::command::Command;
use crate::protocol::command::{COM_QUERY, COM_STMT_PREPARE};
use crate::protocol::frame::{self, PacketSpan};
use crate::protocol::packets::{MysqlError, OkFields};
use crate::protocol::response::{Expect, Progress, ResponseScanner};
use crate::routing::{FanOut, Inline, Rewritten, Route, Side};

/// How a statement the proxy runs for itself ended.
pub(super) enum Outcome {
    /// It succeeded.
    Ok(OkFields),
    /// It failed: the ERR packet's payload, to pass on to the client.
    Failed(Vec<u8>),
}

/// How a pair of writes is made all-or-nothing.
#[derive(Clone, Copy)]
enum Atomic {
    /// The client is in a transaction: a savepoint undoes the first write if the second fails.
    Savepoint,
    /// The client is in autocommit mode: a transaction of the proxy's own around both.
    Transaction,
}

impl Atomic {
    fn begin(self) -> &'static [u8] {
        match self {
            Atomic::Savepoint => b"SAVEPOINT csmh_proxy_fan_out",
            Atomic::Transaction => b"BEGIN",
        }
    }

    fn commit(self) -> &'static [u8] {
        match self {
            Atomic::Savepoint => b"RELEASE SAVEPOINT csmh_proxy_fan_out",
            Atomic::Transaction => b"COMMIT",
        }
    }

    fn undo(self) -> &'static [u8] {
        match self {
            Atomic::Savepoint => b"ROLLBACK TO SAVEPOINT csmh_proxy_fan_out",
            Atomic::Transaction => b"ROLLBACK",
        }
    }
}

/// The bit set in the ids of statements prepared on the `csmh` connection, as the client sees them. Servers
/// number a connection's statements from 1, so the client's own statements on `edxapp` never have it.
pub(super) const CSMH_STATEMENT: u32 = 0x8000_0000;

/// The reason of a refusal as the info-level log gives it: the router's explanation without the parser's or the
/// merge's details, which may quote the statement (and so its values); the whole message is logged at debug.
fn reason_for_log(message: &str) -> &str {
    let reason = message.split_once("`: ").map_or(message, |(_, reason)| reason);
    reason.split(" (").next().unwrap_or(reason)
}

/// The most values an `IN (SELECT ...)` subquery may return to be written into a statement for the `csmh` side.
const MAX_INLINED: usize = 10_000;

/// The values of a one-column result as a parenthesized SQL list: numbers as they are, anything else quoted.
/// An empty result becomes a subquery with no rows, so that `NOT IN` keeps its meaning.
fn value_list(rows: &Rows) -> Option<String> {
    if rows.values.len() > MAX_INLINED {
        return None;
    }
    if rows.values.is_empty() {
        return Some("(SELECT NULL FROM DUAL WHERE FALSE)".to_owned());
    }
    let numeric = rows.numeric.first().copied().unwrap_or(false);
    let literal = |value: &Option<Vec<u8>>| match value {
        None => "NULL".to_owned(),
        Some(v) if numeric => String::from_utf8_lossy(v).into_owned(),
        Some(v) => format!("'{}'", String::from_utf8_lossy(v).replace('\\', "\\\\").replace('\'', "\\'")),
    };
    let values: Vec<String> = rows.values.iter().map(|row| literal(&row.first().cloned().flatten())).collect();
    Some(format!("({})", values.join(", ")))
}

/// A server's ERR payload as an error to pass on.
fn err_from_payload(payload: &[u8]) -> MysqlError {
    let code = payload.get(1..3).map_or(1105, |c| u16::from_le_bytes([c[0], c[1]]));
    let (state, message) = match payload.get(3) {
        Some(b'#') if payload.len() >= 9 => (payload[4..9].try_into().unwrap_or(*b"HY000"), &payload[9..]),
        _ => (*b"HY000", payload.get(3..).unwrap_or_default()),
    };
    MysqlError::new(code, &state, String::from_utf8_lossy(message))
}

/// A failure of a statement the proxy ran on the client's own `edxapp` connection ends the session.
pub(super) fn edxapp_failure(error: QueryError) -> SessionError {
    match error {
        QueryError::Io(e) => SessionError::Backend(e),
        QueryError::Protocol(e) => SessionError::BackendProtocol(e),
    }
}

/// The ERR payload telling the client the `csmh` side failed.
pub(super) fn error_payload(failure: &CsmhError) -> Vec<u8> {
    let mut out = BytesMut::new();
    failure.to_mysql().write_packet(&mut out, 0);
    out[frame::HEADER_LEN..].to_vec()
}

impl Session {
    /// Carries out `route` for the statement in `span` (a COM_QUERY or COM_STMT_PREPARE).
    pub(super) async fn execute_routed(
        &mut self,
        span: PacketSpan,
        command: Command,
        route: Route,
    ) -> Result<Flow, SessionError> {
        let expect = command.response().unwrap_or(Expect::ResultSets);
        if let Route::Rewrite(Rewritten { inserts: true, .. }) = &route {
            if let Some(error) = self.unsafe_offset().await {
                self.count_as_refused();
                return self.refuse(span, error).await;
            }
        }
        match route {
            Route::Passthrough => unreachable!("passthrough is relayed by the caller"),
            Route::Rewrite(Rewritten { sql, on: Side::Edxapp, .. }) => self.send_instead(span, &sql, expect).await,
            Route::FanOut(FanOut::Merge(read)) if read.extended_on == Side::Edxapp => {
                self.merge_read_one_server(span, *read).await
            }
            Route::FanOut(FanOut::Merge(read)) if command == Command::StmtPrepare => {
                self.prepare_merged(span, *read).await
            }
            Route::FanOut(FanOut::Merge(read)) => match self.with_values(read.extended.clone(), &read.inline).await? {
                Ok(extended) => self.merge_read(span, *read, extended).await,
                Err(error) => self.refuse(span, error).await,
            },
            Route::FanOut(FanOut::Union(sql)) => self.send_instead(span, &sql, expect).await,
            Route::FanOut(FanOut::Writes { old, extended, inline }) if command == Command::Query => {
                match self.with_values(extended, &inline).await? {
                    Ok(extended) => self.write_both(span, &old, &extended).await,
                    Err(error) => self.refuse(span, error).await,
                }
            }
            Route::FanOut(FanOut::Writes { extended, inline, .. }) => self.prepare_both(span, &extended, &inline).await,
            Route::Rewrite(Rewritten { sql, on: Side::Csmh, inline, .. }) => {
                match self.with_values(sql, &inline).await? {
                    Ok(sql) => self.run_on_csmh(span, command, &sql).await,
                    Err(error) => self.refuse(span, error).await,
                }
            }
            Route::Block(error) => {
                info!(route = "block", code = error.code, "statement refused: the history table is retired");
                debug!(%error, "blocked");
                self.refuse(span, error).await
            }
            Route::Refuse(error) => {
                let reason = reason_for_log(&error.message);
                info!(route = "refuse", code = error.code, reason, "statement naming the history table refused");
                debug!(%error, "refused");
                self.refuse(span, error).await
            }
        }
    }

    /// Checks, once per configuration, that the extended table's next id is above every id of the old table
    /// (design §3, "offset safety"); the error to answer an insert with when it is not (or cannot be checked).
    /// A failed check is logged and tried again on the next insert. Once the old table is retired nothing reads
    /// it any more, so its ids cannot collide with anything read, and it is not looked at (`truncate-old` may be
    /// holding it locked).
    async fn unsafe_offset(&mut self) -> Option<MysqlError> {
        let snapshot = std::sync::Arc::clone(self.pinned.as_ref().expect("routed by a snapshot"));
        if snapshot.offset_verified.get().is_some() || snapshot.config.flags.read_only_from_csmhe {
            return None;
        }
        let (old, extended) = (snapshot.router.old(), snapshot.router.extended());
        let max_old = format!("SELECT COALESCE(MAX(id), 0) FROM {}", old.quoted());
        let next_extended = format!(
            "SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{}' AND TABLE_NAME = '{}'",
            extended.schema(),
            extended.table()
        );
        let max_old = self.number(Side::Edxapp, &max_old).await.ok().flatten();
        let extended_side = if snapshot.router.same_server() { Side::Edxapp } else { Side::Csmh };
        let next = match self.number(extended_side, &next_extended).await {
            Err(failure) => return Some(failure),
            Ok(next) => next,
        };
        if let (Some(max_old), Some(next)) = (max_old, next) {
            if next > max_old {
                let _ = snapshot.offset_verified.set(());
                info!(max_old, next_extended = next, "the extended table's ids start above the old table's");
                return None;
            }
        }
        tracing::error!(
            next_extended = ?next,
            "the extended table's next id is not above the old table's largest id: inserts are refused until \
             `csmh-proxy init` sets its starting id"
        );
        Some(MysqlError::new(
            1235,
            b"42000",
            format!(
                "csmh-proxy does not write to {} yet: its next id is not above every id of {}, so ids could \
                 collide; run `csmh-proxy init` to set its starting id",
                extended.quoted(),
                old.quoted()
            ),
        ))
    }

    /// The single number `sql` answers with on `side`, if it answers with one; a failure of the `csmh`
    /// connection is the client's error for the statement.
    async fn number(&mut self, side: Side, sql: &str) -> Result<Option<u64>, MysqlError> {
        let reply = match side {
            Side::Edxapp => backend::query(&mut self.backend, self.caps, sql.as_bytes()).await,
            Side::Csmh => match self.csmh_ready().await {
                Ok(csmh) => backend::query(&mut csmh.conn, csmh.caps, sql.as_bytes()).await,
                Err(failure) => {
                    self.csmh = None;
                    return Err(failure.to_mysql());
                }
            },
        };
        let Ok(Reply::Rows(rows)) = reply else { return Ok(None) };
        let value = rows.values.first().and_then(|row| row.first()).cloned().flatten();
        Ok(value.and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()))
    }

    pub(super) async fn refuse_unsupported(&mut self, span: PacketSpan, what: &str) -> Result<Flow, SessionError> {
        let error = MysqlError::new(1235, b"42000", format!("csmh-proxy does not support {what} yet"));
        self.count_as_refused();
        info!(route = "refuse", code = error.code, "statement naming the history table refused: {what}");
        self.refuse(span, error).await
    }

    /// Counts the statement being handled as refused: the router chose a route, but the proxy answers with its own
    /// error instead.
    fn count_as_refused(&mut self) {
        if let Some(route) = self.statement.as_mut() {
            *route = RouteLabel::Refuse;
        }
    }

    /// `sql` with each of its subqueries on `edxapp` tables run on the client's `edxapp` connection and their
    /// values written in; the error for the client if one of them fails or returns too many values.
    async fn with_values(
        &mut self,
        mut sql: Vec<u8>,
        inline: &[Inline],
    ) -> Result<Result<Vec<u8>, MysqlError>, SessionError> {
        for Inline { at, query } in inline.iter().rev() {
            let rows = match backend::query(&mut self.backend, self.caps, query).await.map_err(edxapp_failure)? {
                Reply::Rows(rows) => rows,
                Reply::Err(payload) => return Ok(Err(err_from_payload(&payload))),
                Reply::Ok(_) | Reply::Prepared(_) => Rows::default(),
            };
            match value_list(&rows) {
                Some(list) => {
                    sql.splice(at..at, list.into_bytes());
                }
                None => {
                    let reason = format!("a subquery on edxapp tables returning more than {MAX_INLINED} values");
                    return Ok(Err(MysqlError::new(1235, b"42000", format!("csmh-proxy does not support {reason}"))));
                }
            }
        }
        Ok(Ok(sql))
    }

    /// Runs `sql` on the `csmh` connection in place of the client's statement and relays the answer. If the
    /// connection fails before anything reached the client, the client gets an error for this statement (and
    /// its transaction is rolled back if the `csmh` side was part of it); the session goes on.
    async fn run_on_csmh(&mut self, span: PacketSpan, command: Command, sql: &[u8]) -> Result<Flow, SessionError> {
        let byte = if command == Command::StmtPrepare { COM_STMT_PREPARE } else { COM_QUERY };
        let failure = match self.csmh_ready().await {
            Ok(csmh) => match backend::send_command(&mut csmh.conn, byte, sql).await {
                Ok(()) => {
                    self.client.consume(span.wire_len);
                    if command == Command::StmtPrepare {
                        self.mark_csmh_statement().await?;
                    }
                    let expect = command.response().unwrap_or(Expect::ResultSets);
                    return self.relay_csmh_response(expect).await;
                }
                Err(e) => CsmhError::Query(QueryError::Io(e)),
            },
            Err(failure) => failure,
        };
        self.csmh_failed(span, failure).await
    }

    /// Relays a command on a statement prepared on the `csmh` connection (its id carries [`CSMH_STATEMENT`]),
    /// with the id the `csmh` server knows.
    pub(super) async fn on_csmh_statement(&mut self, span: PacketSpan, command: Command) -> Result<Flow, SessionError> {
        if self.csmh.is_none() {
            let error = MysqlError::new(1243, b"HY000", "Unknown prepared statement handler given to csmh-proxy");
            return self.refuse(span, error).await;
        }
        if let Err(failure) = self.csmh_ready().await {
            return self.csmh_failed(span, failure).await;
        }
        let id_at = frame::HEADER_LEN + 4;
        self.client.buf[id_at] &= !(CSMH_STATEMENT >> 24) as u8;
        let csmh = self.csmh.as_mut().expect("made ready above");
        csmh.conn.relay_from(&mut self.client, span.wire_len).await.map_err(SessionError::Backend)?;
        match command.response() {
            Some(expect) => self.relay_csmh_response(expect).await,
            None => Ok(Flow::Continue),
        }
    }

    /// Marks the statement id in the `csmh` server's answer to a COM_STMT_PREPARE, so the client's later
    /// commands on it are recognised and sent there.
    async fn mark_csmh_statement(&mut self) -> Result<(), SessionError> {
        let csmh = self.csmh.as_mut().expect("the statement was sent on it");
        let span = csmh.conn.next_packet().await.map_err(SessionError::Backend)?;
        let span = span.ok_or_else(|| SessionError::Backend(std::io::ErrorKind::UnexpectedEof.into()))?;
        let id_at = frame::HEADER_LEN + 4;
        if span.payload_len >= 5 && csmh.conn.buf[frame::HEADER_LEN] == 0x00 {
            csmh.conn.buf[id_at] |= (CSMH_STATEMENT >> 24) as u8;
        }
        Ok(())
    }

    /// Copies the `csmh` connection's answer to the client.
    async fn relay_csmh_response(&mut self, expect: Expect) -> Result<Flow, SessionError> {
        let csmh = self.csmh.as_mut().expect("the statement was sent on it");
        let mut scanner = ResponseScanner::new(expect, csmh.caps);
        let progress = copy_response(&mut csmh.conn, &mut self.client, &mut scanner, &mut self.answer_seq).await;
        match progress {
            Ok(Progress::Done(_)) => Ok(Flow::Continue),
            Ok(_) => {
                Err(SessionError::BackendProtocol(ProtocolError::Unsupported("csmh server asked for client data")))
            }
            Err(CopyFailure::Client(e)) => Err(SessionError::Client(e)),
            Err(CopyFailure::Server(e)) => Err(SessionError::Backend(e)),
            Err(CopyFailure::Protocol(e)) => Err(SessionError::BackendProtocol(e)),
        }
    }

    /// Sends `sql` in place of the client's statement, keeping its command byte, and relays the response.
    async fn send_instead(&mut self, span: PacketSpan, sql: &[u8], expect: Expect) -> Result<Flow, SessionError> {
        let command = self.client.buf[frame::HEADER_LEN];
        self.client.consume(span.wire_len);
        self.send_to_backend(command, sql).await?;
        self.relay_response(expect).await?;
        Ok(Flow::Continue)
    }

    /// Runs an UPDATE or DELETE on both tables and answers with one OK whose affected rows are the sum; either
    /// both writes happen or neither does (across two servers, see docs/routing.md for the commit window).
    async fn write_both(&mut self, span: PacketSpan, old: &[u8], extended: &[u8]) -> Result<Flow, SessionError> {
        let seq = span.last_seq.wrapping_add(1);
        self.client.consume(span.wire_len);
        let extended_side = self.extended_side();
        self.write_both_commands(seq, [(Side::Edxapp, COM_QUERY, old), (extended_side, COM_QUERY, extended)]).await
    }

    /// Where the extended table is reached: the client's own connection on one server, the `csmh` one on two.
    pub(super) fn extended_side(&self) -> Side {
        let same_server = match &self.pinned {
            Some(snapshot) => snapshot.router.same_server(),
            None => self.shared.snapshot().router.same_server(),
        };
        if same_server { Side::Edxapp } else { Side::Csmh }
    }

    /// Runs the two writes (on the old table, then on the extended one) atomically and answers the client with
    /// one OK whose counts are the sums, or with the error.
    pub(super) async fn write_both_commands(
        &mut self,
        seq: u8,
        writes: [(Side, u8, &[u8]); 2],
    ) -> Result<Flow, SessionError> {
        let atomic = if self.in_transaction() { Atomic::Savepoint } else { Atomic::Transaction };
        let sides: &[Side] = if writes[1].0 == Side::Edxapp { &[Side::Edxapp] } else { &[Side::Edxapp, Side::Csmh] };
        let outcome = self.atomically(atomic, sides, &writes).await?;
        let mut out = BytesMut::new();
        match outcome {
            Outcome::Ok(ok) => {
                ok.write_packet(&mut out, seq, self.caps.flags().contains(CapabilityFlags::CLIENT_SESSION_TRACK));
            }
            Outcome::Failed(payload) => {
                frame::write_packet(&mut out, seq, &payload);
            }
        }
        self.answer_seq = None;
        self.client.write_all(&out).await.map_err(SessionError::Client)?;
        Ok(Flow::Continue)
    }

    /// Runs `writes` (commands: a statement, or the execution of a prepared one) inside `atomic` on every one of
    /// `sides`: the summed OK, or the first error after undoing what was done. Commits go to the `csmh` side first, so a failure there still lets `edxapp` roll back.
    async fn atomically(
        &mut self,
        atomic: Atomic,
        sides: &[Side],
        writes: &[(Side, u8, &[u8])],
    ) -> Result<Outcome, SessionError> {
        // The csmh side begins first: once edxapp is in the proxy's transaction, the csmh connection would
        // otherwise take it for the client's and open one of its own.
        for (begun, &side) in sides.iter().enumerate().rev() {
            if let Outcome::Failed(error) = self.on(side, atomic.begin()).await? {
                return self.undo(atomic, &sides[begun + 1..], error).await;
            }
            self.mark_csmh_transaction(side, atomic, true);
        }
        let mut total = OkFields::default();
        for &(side, command, body) in writes {
            match self.on_command(side, command, body).await? {
                Outcome::Ok(ok) => {
                    total.affected_rows += ok.affected_rows;
                    total.warnings = total.warnings.saturating_add(ok.warnings);
                }
                Outcome::Failed(error) => return self.undo(atomic, sides, error).await,
            }
        }
        for (committed, &side) in sides.iter().enumerate().rev() {
            let outcome = self.on(side, atomic.commit()).await?;
            self.mark_csmh_transaction(side, atomic, false);
            match outcome {
                Outcome::Ok(ok) if side == Side::Edxapp => total.status = ok.status,
                Outcome::Ok(_) => {}
                Outcome::Failed(error) if committed + 1 == sides.len() => {
                    return self.undo(atomic, &sides[..committed], error).await;
                }
                Outcome::Failed(error) => {
                    warn!("the csmh side committed but edxapp did not: the write is on the extended table only");
                    return Ok(Outcome::Failed(error));
                }
            }
        }
        Ok(Outcome::Ok(total))
    }

    /// Undoes `atomic` on `sides` and passes `error` on.
    async fn undo(&mut self, atomic: Atomic, sides: &[Side], error: Vec<u8>) -> Result<Outcome, SessionError> {
        for &side in sides {
            self.on(side, atomic.undo()).await?;
            self.mark_csmh_transaction(side, atomic, false);
            if let Atomic::Savepoint = atomic {
                self.on(side, atomic.commit()).await?;
            }
        }
        Ok(Outcome::Failed(error))
    }

    /// Records that the proxy's own transaction on the `csmh` connection is open (or over), so that it is not
    /// mistaken for one mirroring the client's; a savepoint lives inside the client's, which stays as it is.
    fn mark_csmh_transaction(&mut self, side: Side, atomic: Atomic, open: bool) {
        if let (Side::Csmh, Atomic::Transaction, Some(csmh)) = (side, atomic, self.csmh.as_mut()) {
            csmh.set_transaction(open);
        }
    }

    /// Runs one statement of the proxy's own on `side`.
    async fn on(&mut self, side: Side, sql: &[u8]) -> Result<Outcome, SessionError> {
        self.on_command(side, COM_QUERY, sql).await
    }

    /// Runs one command of the proxy's own on `side`, whose answer must be an OK or an ERR. A failure of the
    /// `csmh` connection becomes the command's error (and the connection is dropped), so the client's session
    /// goes on.
    pub(super) async fn on_command(&mut self, side: Side, command: u8, body: &[u8]) -> Result<Outcome, SessionError> {
        let reply = match side {
            Side::Edxapp => Ok(backend::command(&mut self.backend, self.caps, command, body, Expect::ResultSets)
                .await
                .map_err(edxapp_failure)?),
            Side::Csmh => match self.csmh_ready().await {
                Ok(csmh) => backend::command(&mut csmh.conn, csmh.caps, command, body, Expect::ResultSets)
                    .await
                    .map_err(CsmhError::Query),
                Err(failure) => Err(failure),
            },
        };
        match reply {
            Ok(Reply::Ok(ok)) => {
                if side == Side::Edxapp {
                    self.status = StatusFlags::from_bits_truncate(ok.status);
                }
                Ok(Outcome::Ok(ok))
            }
            Ok(Reply::Err(payload)) => Ok(Outcome::Failed(payload)),
            Ok(Reply::Rows(_) | Reply::Prepared(_)) if side == Side::Edxapp => {
                Err(SessionError::BackendProtocol(ProtocolError::Malformed("OK (got rows)")))
            }
            Ok(_) => Ok(Outcome::Failed(error_payload(&CsmhError::Refused("unexpected rows".into())))),
            Err(failure) => {
                warn!(error = %failure, "the csmh connection failed");
                self.csmh = None;
                Ok(Outcome::Failed(error_payload(&failure)))
            }
        }
    }

    pub(super) async fn send_to_backend(&mut self, command: u8, sql: &[u8]) -> Result<(), SessionError> {
        backend::send_command(&mut self.backend, command, sql).await.map_err(SessionError::Backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_reasons_leave_out_the_statement() {
        let parse = "csmh-proxy cannot route this statement on `edxapp`.`courseware_studentmodulehistory`: cannot \
                     parse it (sql parser error: Expected: an expression, found: 'secret' at Line: 1, Column: 9)";
        assert_eq!(reason_for_log(parse), "cannot parse it");
        let join = "csmh-proxy cannot route this statement on `edxapp`.`courseware_studentmodulehistory`: a join with \
                    the history table cannot be read from both tables; query it alone";
        assert_eq!(
            reason_for_log(join),
            "a join with the history table cannot be read from both tables; query it alone"
        );
    }
}
