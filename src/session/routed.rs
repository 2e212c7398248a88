//! Carrying out a route other than passthrough: sending a rewritten statement, reading both tables, writing
//! both tables as one statement, or answering with the proxy's own error.

use bytes::BytesMut;
use mysql_common::constants::{CapabilityFlags, StatusFlags};
use tracing::{debug, info};

use super::{Flow, Session, SessionError};
use crate::metrics::Metrics;
use crate::protocol::command::Command;
use crate::protocol::frame::{self, PacketSpan};
use crate::protocol::packets::{MysqlError, OkFields};
use crate::protocol::response::{Expect, Progress, ResponseScanner};
use crate::routing::{FanOut, Rewritten, Route, Side};

/// The answer to one statement the proxy runs on the client's connection for its own purposes.
enum Reply {
    /// It succeeded.
    Ok(OkFields),
    /// It failed: the ERR packet's payload, to pass on to the client.
    Err(Vec<u8>),
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

impl Session {
    /// Carries out `route` for the statement in `span` (a COM_QUERY or COM_STMT_PREPARE).
    pub(super) async fn execute_routed(
        &mut self,
        span: PacketSpan,
        command: Command,
        route: Route,
    ) -> Result<Flow, SessionError> {
        let metrics = &self.shared.metrics;
        let expect = command.response().unwrap_or(Expect::ResultSets);
        match route {
            Route::Passthrough => unreachable!("passthrough is relayed by the caller"),
            Route::Rewrite(Rewritten { sql, on: Side::Edxapp }) => {
                Metrics::incr(&metrics.statements_rewritten);
                self.send_instead(span, &sql, expect).await
            }
            Route::FanOut(FanOut::Union { copies_placeholders: true, .. }) if command == Command::StmtPrepare => {
                let reason = "a prepared read of both tables whose condition has parameters";
                self.refuse_unsupported(span, reason).await
            }
            Route::FanOut(FanOut::Union { sql, .. }) => {
                Metrics::incr(&metrics.statements_fanned_out);
                self.send_instead(span, &sql, expect).await
            }
            Route::FanOut(FanOut::Writes { old, extended }) if command == Command::Query => {
                Metrics::incr(&metrics.statements_fanned_out);
                self.write_both(span, &old, &extended).await
            }
            Route::FanOut(FanOut::Writes { .. }) => {
                let reason = "a prepared UPDATE or DELETE of the history table while both tables are written";
                self.refuse_unsupported(span, reason).await
            }
            Route::Rewrite(Rewritten { on: Side::Csmh, .. }) => {
                let reason = "statements on the extended table on a separate csmh server";
                self.refuse_unsupported(span, reason).await
            }
            Route::Block(error) => {
                Metrics::incr(&metrics.statements_blocked);
                info!(route = "block", code = error.code, "statement refused: the history table is retired");
                debug!(%error, "blocked");
                self.refuse(span, error).await
            }
            Route::Refuse(error) => {
                Metrics::incr(&metrics.statements_refused);
                info!(route = "refuse", code = error.code, "statement naming the history table refused");
                debug!(%error, "refused");
                self.refuse(span, error).await
            }
        }
    }

    async fn refuse_unsupported(&mut self, span: PacketSpan, what: &str) -> Result<Flow, SessionError> {
        let error = MysqlError::new(1235, b"42000", format!("csmh-proxy does not support {what} yet"));
        Metrics::incr(&self.shared.metrics.statements_refused);
        info!(route = "refuse", code = error.code, "statement naming the history table refused: {what}");
        self.refuse(span, error).await
    }

    /// Sends `sql` in place of the client's statement, keeping its command byte, and relays the response.
    async fn send_instead(&mut self, span: PacketSpan, sql: &[u8], expect: Expect) -> Result<Flow, SessionError> {
        let command = self.client.buf[frame::HEADER_LEN];
        self.client.consume(span.wire_len);
        self.send_to_backend(command, sql).await?;
        self.relay_response(expect).await?;
        Ok(Flow::Continue)
    }

    /// Runs an UPDATE or DELETE on both tables (one server) and answers with one OK whose affected rows are the
    /// sum; either both writes happen or neither does.
    async fn write_both(&mut self, span: PacketSpan, old: &[u8], extended: &[u8]) -> Result<Flow, SessionError> {
        let seq = span.last_seq.wrapping_add(1);
        self.client.consume(span.wire_len);
        let in_transaction = self.status.contains(StatusFlags::SERVER_STATUS_IN_TRANS)
            || !self.status.contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT);
        let atomic = if in_transaction { Atomic::Savepoint } else { Atomic::Transaction };
        let reply = match self.query_backend(atomic.begin()).await? {
            Reply::Err(error) => Reply::Err(error),
            Reply::Ok(_) => self.both_writes(atomic, old, extended).await?,
        };
        let mut out = BytesMut::new();
        match reply {
            Reply::Ok(ok) => {
                self.status = StatusFlags::from_bits_truncate(ok.status);
                ok.write_packet(&mut out, seq, self.caps.flags().contains(CapabilityFlags::CLIENT_SESSION_TRACK));
            }
            Reply::Err(payload) => {
                frame::write_packet(&mut out, seq, &payload);
            }
        }
        self.answer_seq = None;
        self.client.write_all(&out).await.map_err(SessionError::Client)?;
        Ok(Flow::Continue)
    }

    /// The two writes inside `atomic`: the summed OK, or the first error after undoing what was done.
    async fn both_writes(&mut self, atomic: Atomic, old: &[u8], extended: &[u8]) -> Result<Reply, SessionError> {
        let mut total = OkFields::default();
        for sql in [old, extended] {
            match self.query_backend(sql).await? {
                Reply::Ok(ok) => {
                    total.affected_rows += ok.affected_rows;
                    total.warnings = total.warnings.saturating_add(ok.warnings);
                }
                Reply::Err(error) => {
                    self.query_backend(atomic.undo()).await?;
                    if let Atomic::Savepoint = atomic {
                        self.query_backend(atomic.commit()).await?;
                    }
                    return Ok(Reply::Err(error));
                }
            }
        }
        match self.query_backend(atomic.commit()).await? {
            Reply::Ok(ok) => {
                total.status = ok.status;
                Ok(Reply::Ok(total))
            }
            Reply::Err(error) => Ok(Reply::Err(error)),
        }
    }

    /// Runs one statement of the proxy's own on the client's `edxapp` connection and reads its answer, which
    /// must be an OK or an ERR.
    async fn query_backend(&mut self, sql: &[u8]) -> Result<Reply, SessionError> {
        self.send_to_backend(crate::protocol::command::COM_QUERY, sql).await?;
        let mut scanner = ResponseScanner::new(Expect::ResultSets, self.caps.deprecate_eof());
        let mut response = Vec::new();
        loop {
            let (n, progress) = scanner.scan(&self.backend.buf).map_err(SessionError::BackendProtocol)?;
            response.extend_from_slice(&self.backend.buf[..n]);
            self.backend.consume(n);
            match progress {
                Progress::NeedMore => self.read_backend().await?,
                Progress::Done(_) => break,
                Progress::ClientTurn(_) => {
                    return Err(SessionError::BackendProtocol(crate::protocol::ProtocolError::Unsupported(
                        "the server asked the proxy for data",
                    )));
                }
            }
        }
        let payload = &response[frame::HEADER_LEN..];
        match payload.first() {
            Some(0xFF) => Ok(Reply::Err(payload.to_vec())),
            _ => OkFields::parse(payload, self.caps.flags()).map(Reply::Ok).ok_or(SessionError::BackendProtocol(
                crate::protocol::ProtocolError::Malformed("OK (a fanned-out write returned rows)"),
            )),
        }
    }

    async fn send_to_backend(&mut self, command: u8, sql: &[u8]) -> Result<(), SessionError> {
        let mut payload = Vec::with_capacity(1 + sql.len());
        payload.push(command);
        payload.extend_from_slice(sql);
        let mut out = BytesMut::with_capacity(payload.len() + 8);
        frame::write_packet(&mut out, 0, &payload);
        self.backend.write_all(&out).await.map_err(SessionError::Backend)
    }
}
