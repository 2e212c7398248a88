//! Passthrough: a request relayed to the client's `edxapp` connection as it is, and the answer copied back as
//! its bytes arrive. Also the relaying steps the other executors share: copying a server's answer to the client
//! with [`ResponseScanner`] finding its end, and sending a statement in place of the client's.

use std::io;

use super::error::{Oversize, SessionError};
use super::handshake::Sequence;
use super::request::Request;
use super::{Flow, Session};
use crate::protocol::ProtocolError;
use crate::protocol::command::{self, COM_RESET_CONNECTION, Command};
use crate::protocol::conn::Connection;
use crate::protocol::frame::PacketSpan;
use crate::protocol::packets::{self, MAX_HANDSHAKE_PACKET};
use crate::protocol::response::{ClientTurn, End, Expect, Progress, ResponseScanner};

impl Session {
    /// Relays the request to `edxapp` and its answer to the client, keeping the `csmh` connection in step with
    /// the client's session (its settings, its transaction) and forgetting the statements a reset drops.
    pub(super) async fn relay(&mut self, request: &mut Request) -> Result<Flow, SessionError> {
        let command = request.command;
        if command == Command::Quit {
            // What was answered early and not sent yet ends with the session: nothing could see it.
            self.edxapp.conn.forget_ahead();
        }
        if matches!(command, Command::ChangeUser | Command::Relayed(COM_RESET_CONNECTION)) {
            // The server forgets the session's prepared statements and rolls back its transaction: so does the
            // csmh side, whose connection closes (the next history statement opens a new one).
            self.statements.forget_all();
            self.grants.forget();
            self.csmh.discard();
        }
        if command == Command::Query && self.csmh.in_transaction() {
            let statement = command::body(&request.span.payload_in(&self.client.buf)).to_vec();
            let limit = request.snapshot.config.listen.max_parsed_statement_bytes;
            if let Some(error) = self.csmh.follow_transaction_control(&mut self.edxapp, &statement, limit).await? {
                return self.answer_error(request, error).await;
            }
        }
        let first_frame = request.span.first_frame(&self.client.buf);
        self.csmh.note_request(command, first_frame, request.span.is_single_frame());
        if command == Command::ChangeUser {
            self.edxapp.plugin = packets::change_user_plugin(first_frame, self.edxapp.caps.flags());
        }
        self.relay_request(request).await?;
        match command.response() {
            // An authentication exchange (COM_CHANGE_USER) is relayed packet by packet, as the login's is.
            Some(Expect::Auth) => {
                let seq = Sequence::after(request.span.last_seq);
                self.authenticate(seq, &mut request.answer_seq).await?;
                self.follow_csmh_transaction_end().await?;
                Ok(Flow::Continue)
            }
            Some(expect) => {
                self.relay_response(&mut request.answer_seq, expect).await?;
                Ok(Flow::Continue)
            }
            None if command == Command::Quit => Ok(Flow::Quit),
            None => Ok(Flow::Continue),
        }
    }

    /// Relays the request's packet to `edxapp`.
    pub(super) async fn relay_request(&mut self, request: &mut Request) -> Result<(), SessionError> {
        request.buffered = false;
        self.relay_client_packet(request.span.wire_len).await
    }

    /// Sends `sql` to `edxapp` in place of the client's statement, with its command (COM_QUERY or
    /// COM_STMT_PREPARE), and relays the answer.
    pub(super) async fn relay_instead(&mut self, request: &mut Request, sql: &[u8]) -> Result<Flow, SessionError> {
        self.consume_request(request);
        self.edxapp.send(request.command.byte(), sql).await?;
        let expect = request.command.response().unwrap_or(Expect::ResultSets);
        self.relay_response(&mut request.answer_seq, expect).await?;
        Ok(Flow::Continue)
    }

    /// Copies `edxapp`'s answer to the client as it arrives, handing the turn to the client where the protocol
    /// says so, until the answer ends; clears `answer_seq` once anything reached the client. The `csmh` side then
    /// follows how the answer left the client's transaction.
    pub(super) async fn relay_response(
        &mut self,
        answer_seq: &mut Option<u8>,
        expect: Expect,
    ) -> Result<End, SessionError> {
        let mut scanner = ResponseScanner::new(expect, self.edxapp.caps);
        loop {
            let progress = copy_response(&mut self.edxapp.conn, &mut self.client, &mut scanner, answer_seq)
                .await
                .map_err(CopyFailure::on_edxapp)?;
            match progress {
                // Authentication exchanges are relayed by `Session::authenticate`, never through here.
                Copied::ClientTurn(ClientTurn::Auth) => {
                    return Err(SessionError::BackendProtocol(ProtocolError::Unsupported(
                        "an authentication exchange outside a login or COM_CHANGE_USER",
                    )));
                }
                Copied::ClientTurn(ClientTurn::LocalInfile) => self.relay_local_infile().await?,
                Copied::Done(end) => {
                    self.edxapp.note_response(&scanner);
                    self.note_prepared(&scanner);
                    self.follow_csmh_transaction_end().await?;
                    return Ok(end);
                }
            }
        }
    }

    /// Notes the statement a prepare's answer, relayed as `scanner` followed it, gave the client.
    pub(super) fn note_prepared(&mut self, scanner: &ResponseScanner) {
        if let Some(prepared) = scanner.prepared_statement() {
            self.statements.prepared(prepared.statement_id, prepared.params);
        }
    }

    /// The client's next packet of a login or an authentication exchange, no larger than a handshake packet.
    pub(super) async fn next_handshake_packet(&mut self) -> Result<PacketSpan, SessionError> {
        self.client
            .next_packet_within(MAX_HANDSHAKE_PACKET)
            .await
            .map_err(Oversize::Handshake.of_client(MAX_HANDSHAKE_PACKET))?
            .ok_or_else(SessionError::client_closed)
    }

    /// Relays the file contents a client sends for LOAD DATA LOCAL INFILE, up to and including the empty packet
    /// that ends them.
    async fn relay_local_infile(&mut self) -> Result<(), SessionError> {
        loop {
            let limit = self.shared.max_packet_bytes();
            let span = self
                .client
                .next_packet_within(limit)
                .await
                .map_err(Oversize::Request.of_client(limit))?
                .ok_or_else(SessionError::client_closed)?;
            self.relay_client_packet(span.wire_len).await?;
            if span.payload_len == 0 {
                return Ok(());
            }
        }
    }

    async fn relay_client_packet(&mut self, wire_len: usize) -> Result<(), SessionError> {
        self.edxapp.conn.relay_from(&mut self.client, wire_len).await.map_err(SessionError::Backend)
    }
}

/// The `edxapp` server spoke while no request was pending: it is closing (idle timeout, KILL, shutdown). The
/// session cannot be kept in step, so it ends; the client sees its connection close, as it would directly.
pub(super) fn unsolicited(read: io::Result<usize>) -> SessionError {
    match read {
        Ok(0) => SessionError::backend_closed(),
        Ok(_) => SessionError::BackendProtocol(ProtocolError::Unsupported("backend sent data while idle")),
        Err(e) => SessionError::Backend(e),
    }
}

/// Where copying a response stopped.
pub(super) enum Copied {
    /// The client must send something; then the response goes on.
    ClientTurn(ClientTurn),
    /// The response is complete.
    Done(End),
}

/// What went wrong while copying a response, by side.
pub(super) enum CopyFailure {
    /// The server's connection failed or closed.
    Server(io::Error),
    /// The server's bytes do not follow the protocol.
    Protocol(ProtocolError),
    /// Writing to the client failed.
    Client(io::Error),
}

impl CopyFailure {
    /// The session error when the server was the client's own `edxapp` connection.
    pub(super) fn on_edxapp(self) -> SessionError {
        match self {
            CopyFailure::Server(e) => SessionError::Backend(e),
            CopyFailure::Protocol(e) => SessionError::BackendProtocol(e),
            CopyFailure::Client(e) => SessionError::Client(e),
        }
    }
}

/// Copies a response from `server` to `client` as its bytes arrive, until it ends or the client must speak.
/// Clears `answer_seq` once anything has reached the client, since the proxy can no longer answer instead.
pub(super) async fn copy_response(
    server: &mut Connection,
    client: &mut Connection,
    scanner: &mut ResponseScanner,
    answer_seq: &mut Option<u8>,
) -> Result<Copied, CopyFailure> {
    loop {
        let (n, progress) = scanner.scan(&server.buf).map_err(CopyFailure::Protocol)?;
        if n > 0 {
            *answer_seq = None;
            client.relay_from(server, n).await.map_err(CopyFailure::Client)?;
        }
        match progress {
            Progress::NeedMore => match server.fill().await {
                Ok(0) => return Err(CopyFailure::Server(io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(e) => return Err(CopyFailure::Server(e)),
            },
            Progress::ClientTurn(turn) => return Ok(Copied::ClientTurn(turn)),
            Progress::Done(end) => return Ok(Copied::Done(end)),
        }
    }
}
