//! Statements prepared twice. While UPDATE and DELETE reach both tables, a prepared one is prepared as the client
//! wrote it, on the old table (the id the client gets), and rewritten, on the extended table (a shadow the client
//! never sees). Executing the client's statement executes both atomically and answers with the sums; resetting,
//! sending long data to and closing it does the same to its shadow.

use super::csmh::CsmhError;
use super::merged::KnownColumns;
use super::routed::edxapp_failure;
use super::{Flow, Session, SessionError};
use crate::backend::{self, Reply};
use crate::merge::{MergePlan, Protocol};
use crate::protocol::command::{
    COM_STMT_BULK_EXECUTE, COM_STMT_CLOSE, COM_STMT_EXECUTE, COM_STMT_PREPARE, COM_STMT_RESET, COM_STMT_SEND_LONG_DATA,
    Command,
};
use crate::protocol::frame::{self, PacketSpan};
use crate::protocol::response::Expect;
use crate::routing::{Inline, MergeRead, Side};

/// The extended-table twin of a client's prepared statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Shadow {
    /// The connection it is prepared on.
    side: Side,
    /// Its id there.
    id: u32,
    /// What executing the pair does.
    twin: Twin,
}

/// What executing a statement and its shadow does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Twin {
    /// Both write; the client gets the summed OK.
    Write,
    /// Both read (two servers); the client gets the rows merged as the plan says.
    Merge {
        /// How the two results merge.
        plan: Box<MergePlan>,
        /// The column definitions each side sent last.
        known: KnownColumns,
    },
}

impl Session {
    /// Prepares a fanned-out UPDATE/DELETE: the shadow on the extended table first (if it cannot be prepared, the
    /// client's statement is not either), then the client's own statement, whose answer is relayed.
    pub(super) async fn prepare_both(
        &mut self,
        span: PacketSpan,
        extended: &[u8],
        inline: &[Inline],
    ) -> Result<Flow, SessionError> {
        if !inline.is_empty() {
            let reason = "a prepared UPDATE or DELETE with a subquery on edxapp tables while both tables are written";
            return self.refuse_unsupported(span, reason).await;
        }
        let side = self.extended_side();
        self.prepare_pair(span, None, side, extended, Twin::Write).await
    }

    /// Prepares a read of both tables across two servers: the old side's statement on `edxapp` (the id the
    /// client gets) and the extended side's on the `csmh` connection.
    pub(super) async fn prepare_merged(&mut self, span: PacketSpan, read: MergeRead) -> Result<Flow, SessionError> {
        let refusal = if !read.inline.is_empty() {
            Some("a prepared read of both tables across two servers with a subquery on edxapp tables")
        } else if read.plan.side_columns() != read.plan.visible_columns() {
            Some("a prepared read of both tables across two servers that does not select the history id")
        } else {
            None
        };
        if let Some(reason) = refusal {
            return self.refuse_unsupported(span, reason).await;
        }
        // Prepared reads of both tables on one server are routed as a union, never here.
        let Some(old) = read.old_widened.as_deref() else {
            return self.refuse_unsupported(span, "a prepared read of both tables merged on one server").await;
        };
        let twin = Twin::Merge { plan: Box::new(read.plan), known: KnownColumns::default() };
        self.prepare_pair(span, Some(old), Side::Csmh, &read.extended, twin).await
    }

    /// Prepares the shadow on `side` first (if it cannot be prepared, the client's statement is not either), then
    /// the client's statement on `edxapp` — its own text, or `own` in its place — relaying the answer.
    async fn prepare_pair(
        &mut self,
        span: PacketSpan,
        own: Option<&[u8]>,
        side: Side,
        extended: &[u8],
        twin: Twin,
    ) -> Result<Flow, SessionError> {
        let shadow = match self.prepare_shadow(side, extended).await? {
            Ok(prepared) => prepared,
            Err(error) => {
                self.client.consume(span.wire_len);
                return self.answer_raw(span.last_seq.wrapping_add(1), &error).await;
            }
        };
        match own {
            Some(sql) => {
                self.client.consume(span.wire_len);
                backend::send_command(&mut self.backend, COM_STMT_PREPARE, sql).await.map_err(SessionError::Backend)?;
            }
            None => self.relay_to_backend(span.wire_len).await?,
        }
        // A prepare's answer is small: it is read whole, for its statement id and column definitions, then relayed.
        let response =
            backend::read_response(&mut self.backend, self.caps, Expect::Prepare).await.map_err(edxapp_failure)?;
        let answer = backend::parse_prepared(&response, self.caps).map_err(edxapp_failure)?;
        self.answer_seq = None;
        self.client.write_all(&response).await.map_err(SessionError::Client)?;
        let Reply::Prepared(own) = answer else {
            self.close_shadow(shadow.id, side).await;
            return Ok(Flow::Continue);
        };
        let twin = match twin {
            Twin::Merge { plan, .. } => Twin::Merge { plan, known: KnownColumns::new(own.columns, shadow.columns) },
            write => write,
        };
        self.shadows.insert(own.id, Shadow { side, id: shadow.id, twin });
        Ok(Flow::Continue)
    }

    /// Prepares `sql` on `side` for the proxy itself: the statement, or the ERR payload for the client.
    async fn prepare_shadow(
        &mut self,
        side: Side,
        sql: &[u8],
    ) -> Result<Result<backend::Prepared, Vec<u8>>, SessionError> {
        let reply = match side {
            Side::Edxapp => backend::command(&mut self.backend, self.caps, COM_STMT_PREPARE, sql, Expect::Prepare)
                .await
                .map_err(edxapp_failure)?,
            Side::Csmh => match self.csmh_ready().await {
                Ok(csmh) => {
                    match backend::command(&mut csmh.conn, csmh.caps, COM_STMT_PREPARE, sql, Expect::Prepare).await {
                        Ok(reply) => reply,
                        Err(error) => {
                            self.csmh = None;
                            return Ok(Err(super::routed::error_payload(&CsmhError::Query(error))));
                        }
                    }
                }
                Err(failure) => {
                    self.csmh = None;
                    return Ok(Err(super::routed::error_payload(&failure)));
                }
            },
        };
        Ok(match reply {
            Reply::Prepared(prepared) => Ok(prepared),
            Reply::Err(payload) => Err(payload),
            Reply::Ok(_) | Reply::Rows(_) => Err(b"\xff\x33\x04#HY000prepare answered without a statement".to_vec()),
        })
    }

    /// Handles a command on a client's statement that has a shadow.
    pub(super) async fn on_shadowed(
        &mut self,
        span: PacketSpan,
        command: Command,
        shadow: Shadow,
    ) -> Result<Flow, SessionError> {
        let wire = bytes::Bytes::copy_from_slice(&self.client.buf[..span.wire_len]);
        let payload = frame::payload(wire, &span);
        let mut twin = payload.to_vec();
        twin[1..5].copy_from_slice(&shadow.id.to_le_bytes());
        let seq = span.last_seq.wrapping_add(1);
        match (payload[0], &shadow.twin) {
            (COM_STMT_EXECUTE, Twin::Write) => {
                self.client.consume(span.wire_len);
                let writes =
                    [(Side::Edxapp, COM_STMT_EXECUTE, &payload[1..]), (shadow.side, COM_STMT_EXECUTE, &twin[1..])];
                self.write_both_commands(seq, writes).await
            }
            (COM_STMT_EXECUTE, Twin::Merge { .. }) if command == (Command::StmtExecute { cursor: true }) => {
                self.refuse_unsupported(span, "a cursor on a read of both tables across two servers").await
            }
            (COM_STMT_EXECUTE, Twin::Merge { plan, known }) => {
                let mut known = known.clone();
                let flow = self.merge_commands(span, seq, (&payload, &twin), plan, Protocol::Binary, &mut known).await;
                if let Some(Shadow { twin: Twin::Merge { known: kept, .. }, .. }) =
                    self.shadows.get_mut(&statement_id(&payload))
                {
                    *kept = known;
                }
                flow
            }
            (COM_STMT_BULK_EXECUTE, _) => {
                self.refuse_unsupported(
                    span,
                    "a batch execution (COM_STMT_BULK_EXECUTE) of a statement on both history tables",
                )
                .await
            }
            (COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA, _) => {
                if payload[0] == COM_STMT_CLOSE {
                    self.shadows.remove(&statement_id(&payload));
                }
                self.send_to(shadow.side, &twin).await?;
                self.relay_to_backend(span.wire_len).await.map(|()| Flow::Continue)
            }
            (COM_STMT_RESET, _) => {
                self.on_command(shadow.side, COM_STMT_RESET, &twin[1..]).await?;
                self.relay_to_backend(span.wire_len).await?;
                self.relay_response(command.response().unwrap_or(Expect::OnePacket)).await.map(|_| Flow::Continue)
            }
            _ => {
                self.relay_to_backend(span.wire_len).await?;
                match command.response() {
                    Some(expect) => self.relay_response(expect).await.map(|_| Flow::Continue),
                    None => Ok(Flow::Continue),
                }
            }
        }
    }

    /// Closes a shadow whose client statement failed to prepare.
    async fn close_shadow(&mut self, id: u32, side: Side) {
        let close = [&[COM_STMT_CLOSE][..], &id.to_le_bytes()].concat();
        let _ = self.send_to(side, &close).await;
    }

    /// Sends a command that gets no answer (COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA) on `side`.
    async fn send_to(&mut self, side: Side, payload: &[u8]) -> Result<(), SessionError> {
        let conn = match side {
            Side::Edxapp => &mut self.backend,
            Side::Csmh => match self.csmh.as_mut() {
                Some(csmh) => &mut csmh.conn,
                None => return Ok(()),
            },
        };
        backend::send_command(conn, payload[0], &payload[1..]).await.map_err(SessionError::Backend)
    }
}

/// The statement id of a COM_STMT_* payload.
pub(super) fn statement_id(payload: &[u8]) -> u32 {
    payload.get(1..5).map_or(0, |id| u32::from_le_bytes([id[0], id[1], id[2], id[3]]))
}
