//! A statement rewritten to the extended table: sent in place of the client's on the connection that reaches
//! that table (the client's own on one server, the `csmh` one on two), its answer relayed as it is. Statements
//! prepared on the `csmh` connection are known to the client by an id of the registry's, and the
//! commands on them go there too. An insert first checks, once per configuration, that the extended table's ids
//! start above the old table's (docs/routing.md, "Offset safety").

use tracing::info;

use super::error::SessionError;
use super::relay::{Copied, CopyFailure, copy_response};
use super::request::Request;
use super::statements::GrantCheck;
use super::{Flow, Session};
use crate::protocol::ProtocolError;
use crate::protocol::command::{self, COM_STMT_CLOSE, Command};
use crate::protocol::errors::MysqlError;
use crate::protocol::packets::PrepareOk;
use crate::protocol::response::{Expect, ResponseScanner};
use crate::routing::Rewritten;
use crate::topology::Server;

impl Session {
    /// Carries out a rewrite: on `edxapp` in place of the client's statement, or on the `csmh` connection.
    pub(super) async fn rewrite(&mut self, request: &mut Request, rewritten: Rewritten) -> Result<Flow, SessionError> {
        let Rewritten { sql, on, inserts, inline, rights, check } = rewritten;
        let grants = GrantCheck { rights, check: check.into() };
        if on == Server::Csmh {
            if let Some(denied) = self.check_grants(request, grants.rights, &grants.check).await? {
                return self.answer_error(request, denied).await;
            }
        }
        if inserts {
            if let Some(error) = self.unsafe_offset(request).await? {
                return self.refuse_routed(request, error).await;
            }
        }
        match on {
            Server::Edxapp => self.relay_instead(request, &sql).await,
            Server::Csmh => match self.with_values(sql, &inline).await? {
                Ok(sql) => self.run_on_csmh(request, &sql, grants).await,
                Err(error) => self.answer_error(request, error).await,
            },
        }
    }

    /// Checks, once per configuration, that the extended table's next id is above every id of the old table;
    /// the error to answer an insert with when it is not (or cannot be checked). A failed check is logged and
    /// tried again on the next insert. Once the old table is retired nothing reads it any more, so its ids
    /// cannot collide with anything read, and it is not looked at (`truncate-old` may be holding it locked).
    ///
    /// The old table is read on the client's own connection: an account that may not read it gets the server's
    /// refusal. An extended table the checking account cannot see (on one server, the client's account without
    /// any right on it) is not checked this time: the server answers the statement itself, as it would directly
    /// (1142 without the right to insert, 1146 when the table does not exist).
    async fn unsafe_offset(&mut self, request: &Request) -> Result<Option<MysqlError>, SessionError> {
        let snapshot = &request.snapshot;
        if snapshot.offset_verified.get().is_some() || snapshot.config.flags.read_only_from_csmhe {
            return Ok(None);
        }
        let (old, extended) = (snapshot.router.old(), snapshot.router.extended());
        let max_old = format!("SELECT COALESCE(MAX(id), 0) FROM {}", old.quoted());
        let next_extended = format!(
            "SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{}' AND TABLE_NAME = '{}'",
            extended.schema(),
            extended.table()
        );
        let max_old = match self.number(snapshot, Server::Edxapp, &max_old).await? {
            Err(refused) => return Ok(Some(refused)),
            Ok(max_old) => max_old,
        };
        let extended_server = snapshot.router.topology().extended_server();
        let next = match self.number(snapshot, extended_server, &next_extended).await? {
            Err(failure) => return Ok(Some(failure)),
            Ok(None) => return Ok(None),
            Ok(Some(next)) => next,
        };
        if let Some(max_old) = max_old {
            if next > max_old {
                let _ = snapshot.offset_verified.set(());
                info!(max_old, next_extended = next, "the extended table's ids start above the old table's");
                return Ok(None);
            }
        }
        tracing::error!(
            next_extended = next,
            "the extended table's next id is not above the old table's largest id: inserts are refused until \
             `csmh-proxy init` sets its starting id"
        );
        Ok(Some(MysqlError::not_supported(format!(
            "csmh-proxy does not write to {} yet: its next id is not above every id of {}, so ids could collide; \
             run `csmh-proxy init` to set its starting id",
            extended.quoted(),
            old.quoted()
        ))))
    }

    /// Runs `sql` on the `csmh` connection in place of the client's statement (COM_QUERY or COM_STMT_PREPARE)
    /// and relays the answer; a prepared statement's executions will check the client's rights with `grants`.
    /// If the connection fails before anything reached the client, the client gets an error for this statement
    /// (and its transaction is rolled back if the `csmh` side was part of it); the session goes on.
    async fn run_on_csmh(
        &mut self,
        request: &mut Request,
        sql: &[u8],
        grants: GrantCheck,
    ) -> Result<Flow, SessionError> {
        let csmh = self.csmh.ready(&mut self.edxapp, &request.snapshot, &self.shared).await?;
        crate::backend::send_command(&mut csmh.conn, request.command.byte(), sql)
            .await
            .map_err(SessionError::csmh_io)?;
        self.consume_request(request);
        if request.command == Command::StmtPrepare {
            self.mark_csmh_statement(grants).await?;
        }
        let expect = request.command.response().unwrap_or(Expect::ResultSets);
        self.relay_csmh_response(request, expect).await
    }

    /// Relays a command on a statement prepared on the `csmh` connection, with the id the `csmh` server knows.
    pub(super) async fn on_csmh_statement(
        &mut self,
        request: &mut Request,
        id: u32,
        grants: GrantCheck,
    ) -> Result<Flow, SessionError> {
        if request.command == Command::Relayed(COM_STMT_CLOSE) {
            self.statements.remove(request.statement_id.unwrap_or_default());
        }
        // Every execution, one at a time or a batch, is checked as the server checks the client's own.
        if request.command.executes() {
            if let Some(denied) = self.check_grants(request, grants.rights, &grants.check).await? {
                return self.answer_error(request, denied).await;
            }
        }
        // A command that gets an answer runs in the client's session (settings, transaction); one that gets none
        // (closing the statement, sending it long data) only needs the connection.
        if request.command.response().is_some() {
            self.csmh.ready(&mut self.edxapp, &request.snapshot, &self.shared).await?;
        }
        let Some(csmh) = self.csmh.connection() else { return Err(SessionError::csmh_closed()) };
        // The registry found the id in the request, so the packet is long enough to take the other one.
        command::set_statement_id(request.span.first_frame_mut(&mut self.client.buf), id);
        // Until it is relayed whole, the request stays the client's to be answered.
        csmh.conn.relay_from(&mut self.client, request.span.wire_len).await.map_err(SessionError::csmh_io)?;
        request.buffered = false;
        match request.command.response() {
            Some(expect) => self.relay_csmh_response(request, expect).await,
            None => Ok(Flow::Continue),
        }
    }

    /// Marks the statement id in the `csmh` server's answer to a COM_STMT_PREPARE, so the client's later
    /// commands on it are recognised and sent there, and its executions check the client's rights with `grants`.
    async fn mark_csmh_statement(&mut self, grants: GrantCheck) -> Result<(), SessionError> {
        let Some(connection) = self.csmh.connection_number() else { return Ok(()) };
        let Some(csmh) = self.csmh.connection() else { return Ok(()) };
        let span = csmh.conn.next_packet().await.map_err(SessionError::csmh_io)?;
        let span = span.ok_or_else(|| SessionError::csmh_io(std::io::ErrorKind::UnexpectedEof.into()))?;
        let payload = span.first_frame_mut(&mut csmh.conn.buf);
        if let Some(prepared) = PrepareOk::parse(payload) {
            let id = self.statements.insert_on_csmh(connection, prepared.statement_id, grants);
            PrepareOk::set_statement_id(payload, id);
        }
        Ok(())
    }

    /// Copies the `csmh` connection's answer to the client.
    async fn relay_csmh_response(&mut self, request: &mut Request, expect: Expect) -> Result<Flow, SessionError> {
        let Some(csmh) = self.csmh.connection() else { return Err(SessionError::csmh_closed()) };
        let mut scanner = ResponseScanner::new(expect, csmh.caps);
        match copy_response(&mut csmh.conn, &mut self.client, &mut scanner, &mut request.answer_seq).await {
            Ok(Copied::Done(_)) => {
                // A prepare's answer carries the id the client knows the statement by (marked before it was relayed).
                self.note_prepared(&scanner);
                self.follow_csmh_rollback(scanner.error_code()).await?;
                Ok(Flow::Continue)
            }
            Ok(Copied::ClientTurn(_)) => {
                Err(SessionError::csmh_protocol(ProtocolError::Unsupported("csmh server asked for client data")))
            }
            Err(CopyFailure::Client(e)) => Err(SessionError::Client(e)),
            Err(CopyFailure::Server(e)) => Err(SessionError::csmh_io(e)),
            Err(CopyFailure::Protocol(e)) => Err(SessionError::csmh_protocol(e)),
        }
    }
}
