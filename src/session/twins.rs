//! Statements prepared twice. While UPDATE and DELETE reach both tables, a prepared one is prepared as the client
//! wrote it, on the old table (the id the client gets), and rewritten, on the extended table (a shadow the client
//! never sees); a prepared read of both tables across two servers likewise, its old side widened to the extended
//! side's types. Executing the client's statement executes both (writes atomically, with the sums for an answer;
//! reads merged); resetting, sending long data to and closing it does the same to its shadow.

use super::error::SessionError;
use super::merged_read::Merging;
use super::own::Outcome;
use super::request::Request;
use super::statements::{KnownColumns, Shadow, Twin};
use super::two_table_write::Write;
use super::{Flow, Session};
use crate::backend;
use crate::merge::Protocol;
use crate::protocol::command::{
    self, COM_STMT_BULK_EXECUTE, COM_STMT_CLOSE, COM_STMT_EXECUTE, COM_STMT_PREPARE, COM_STMT_RESET,
    COM_STMT_SEND_LONG_DATA, Command,
};
use crate::protocol::errors::{MysqlError, code, sqlstate};
use crate::protocol::reply::{Prepared, Reply};
use crate::protocol::response::Expect;
use crate::routing::{Inline, MergeRead, MergeServers};
use crate::topology::Server;

impl Session {
    /// Prepares a fanned-out UPDATE/DELETE: the shadow on the extended table (on `on`) first (if it cannot be
    /// prepared, the client's statement is not either), then `old`, the client's statement with the old table
    /// named with its schema, whose answer is relayed.
    pub(super) async fn prepare_writes(
        &mut self,
        request: &mut Request,
        old: &[u8],
        extended: &[u8],
        inline: &[Inline],
        on: Server,
    ) -> Result<Flow, SessionError> {
        if !inline.is_empty() {
            let reason = "a prepared UPDATE or DELETE with a subquery on edxapp tables while both tables are written";
            return self.refuse_unsupported(request, reason).await;
        }
        // The old side as the router wrote it, the old table named with its schema, in place of the client's text.
        self.prepare_pair(request, Some(old), on, extended, Twin::Write).await
    }

    /// Prepares a read of both tables across two servers: the old side's widened statement on `edxapp` (the id
    /// the client gets) and the extended side's on the `csmh` connection.
    pub(super) async fn prepare_merged(
        &mut self,
        request: &mut Request,
        read: MergeRead,
    ) -> Result<Flow, SessionError> {
        let MergeRead { extended, plan, servers, .. } = read;
        let (old_widened, inline) = match servers {
            MergeServers::TwoServers { old_widened, inline } => (old_widened, inline),
            // The router prepares reads of both tables on one server as a union.
            MergeServers::OneServer { .. } => {
                return self.refuse_unsupported(request, "a prepared read of both tables merged on one server").await;
            }
        };
        let refusal = if !inline.is_empty() {
            Some("a prepared read of both tables across two servers with a subquery on edxapp tables")
        } else if plan.side_columns() != plan.visible_columns() {
            Some("a prepared read of both tables across two servers that does not select the history id")
        } else {
            None
        };
        if let Some(reason) = refusal {
            return self.refuse_unsupported(request, reason).await;
        }
        let twin = Twin::Merge { plan: Box::new(plan), known: KnownColumns::default() };
        self.prepare_pair(request, Some(&old_widened), Server::Csmh, &extended, twin).await
    }

    /// Prepares the shadow on `server` first (if it cannot be prepared, the client's statement is not either),
    /// then the client's statement on `edxapp` — its own text, or `own` in its place — relaying the answer.
    async fn prepare_pair(
        &mut self,
        request: &mut Request,
        own: Option<&[u8]>,
        server: Server,
        extended: &[u8],
        twin: Twin,
    ) -> Result<Flow, SessionError> {
        let shadow = match self.prepare_shadow(request, server, extended).await? {
            Ok(prepared) => prepared,
            Err(error) => return self.answer_error(request, error).await,
        };
        match own {
            Some(sql) => {
                self.consume_request(request);
                self.edxapp.send(COM_STMT_PREPARE, sql).await?;
            }
            None => self.relay_request(request).await?,
        }
        // A prepare's answer is small: it is read whole, for its statement id and column definitions, then relayed.
        let caps = self.edxapp.caps;
        let response = backend::read_response(&mut self.edxapp.conn, caps, Expect::Prepare).await?;
        let answer = Reply::parse_prepared(&response, caps).map_err(SessionError::BackendProtocol)?;
        self.write_to_client(request, &response).await?;
        let Reply::Prepared(own) = answer else {
            self.close_shadow(server, shadow.id).await;
            return Ok(Flow::Continue);
        };
        let twin = match twin {
            Twin::Merge { plan, .. } => Twin::Merge { plan, known: KnownColumns::new(own.columns, shadow.columns) },
            write => write,
        };
        let csmh_connection = match server {
            Server::Csmh => self.csmh.connection_number(),
            Server::Edxapp => None,
        };
        self.statements.insert(Shadow { own: own.id, server, csmh_connection, id: shadow.id, twin });
        self.statements.prepared(own.id, own.params);
        Ok(Flow::Continue)
    }

    /// Prepares `sql` on `server` for the proxy itself: the statement, or the error for the client.
    async fn prepare_shadow(
        &mut self,
        request: &Request,
        server: Server,
        sql: &[u8],
    ) -> Result<Result<Prepared, MysqlError>, SessionError> {
        let reply = match server {
            Server::Edxapp => self.edxapp.command(COM_STMT_PREPARE, sql, Expect::Prepare).await?,
            Server::Csmh => match self.csmh_command(&request.snapshot, COM_STMT_PREPARE, sql, Expect::Prepare).await? {
                Ok(reply) => reply,
                Err(error) => return Ok(Err(error)),
            },
        };
        Ok(match reply {
            Reply::Prepared(prepared) => Ok(prepared),
            Reply::Err(error) => Err(error),
            Reply::Ok(_) | Reply::Rows(_) => {
                Err(MysqlError::new(code::ER_UNKNOWN_ERROR, sqlstate::HY000, "prepare answered without a statement"))
            }
        })
    }

    /// Carries out a command on a client's statement that has a shadow.
    pub(super) async fn on_twin(&mut self, request: &mut Request, shadow: Shadow) -> Result<Flow, SessionError> {
        let payload = request.span.payload_in(&self.client.buf).into_owned();
        let mut twin = payload.clone();
        command::set_statement_id(&mut twin, shadow.id);
        match (request.command, &shadow.twin) {
            (Command::StmtExecute { .. }, Twin::Write) => {
                self.consume_request(request);
                let writes = [
                    Write { server: Server::Edxapp, command: COM_STMT_EXECUTE, body: command::body(&payload) },
                    Write { server: shadow.server, command: COM_STMT_EXECUTE, body: command::body(&twin) },
                ];
                self.write_pair(request, writes).await
            }
            (Command::StmtExecute { cursor: true }, Twin::Merge { .. }) => {
                self.refuse_unsupported(request, "a cursor on a read of both tables across two servers").await
            }
            (Command::StmtExecute { cursor: false }, Twin::Merge { plan, known }) => {
                let mut known = known.clone();
                let bodies = (command::body(&payload), command::body(&twin));
                let merging = Merging { plan, protocol: Protocol::Binary, known: &mut known, capture: None };
                let flow = self.merge_commands(request, COM_STMT_EXECUTE, bodies, merging).await;
                self.statements.remember_columns(shadow.own, known);
                flow
            }
            (Command::Relayed(COM_STMT_BULK_EXECUTE), _) => {
                let what = "a batch execution (COM_STMT_BULK_EXECUTE) of a statement on both history tables";
                self.refuse_unsupported(request, what).await
            }
            (Command::Relayed(byte @ (COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA)), _) => {
                if byte == COM_STMT_CLOSE {
                    self.statements.remove(shadow.own);
                }
                // The client's own statement first: it is closed on edxapp even when the shadow's side fails.
                self.relay_request(request).await?;
                self.send_without_answer(shadow.server, byte, command::body(&twin)).await.map(|()| Flow::Continue)
            }
            (Command::Relayed(COM_STMT_RESET), _) => {
                let snapshot = request.snapshot.clone();
                match self.run_own_command(&snapshot, shadow.server, COM_STMT_RESET, command::body(&twin)).await? {
                    // The shadow is lost with its connection (or the server refused): the client hears of it.
                    Outcome::Failed(error) => self.answer_error(request, error).await,
                    Outcome::Ok(_) => {
                        self.relay_request(request).await?;
                        let answer = &mut request.answer_seq;
                        self.relay_response(answer, Expect::OnePacket).await.map(|_| Flow::Continue)
                    }
                }
            }
            _ => {
                self.relay_request(request).await?;
                match request.command.response() {
                    Some(expect) => self.relay_response(&mut request.answer_seq, expect).await.map(|_| Flow::Continue),
                    None => Ok(Flow::Continue),
                }
            }
        }
    }

    /// Closes a shadow whose client statement failed to prepare.
    async fn close_shadow(&mut self, server: Server, id: u32) {
        let _ = self.send_without_answer(server, COM_STMT_CLOSE, &id.to_le_bytes()).await;
    }

    /// Sends a command that gets no answer (COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA) on `server`.
    async fn send_without_answer(&mut self, server: Server, command: u8, body: &[u8]) -> Result<(), SessionError> {
        match server {
            Server::Edxapp => self.edxapp.send(command, body).await,
            Server::Csmh => match self.csmh.connection() {
                Some(csmh) => backend::send_command(&mut csmh.conn, command, body).await.map_err(SessionError::csmh_io),
                None => Ok(()),
            },
        }
    }
}
