//! The proxy's own answers to a request: an error, an OK, or packets it composed, written where the server's
//! answer would have gone (the sequence id after the request's). Only here does a session write to its client
//! other than by relaying.

use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;

use super::error::{DRAIN_LINGER, SessionError};
use super::request::Request;
use super::{Flow, Session};
use crate::admission::Refused;
use crate::protocol::conn::Connection;
use crate::protocol::errors::{MysqlError, code, sqlstate};
use crate::protocol::frame::PacketSpan;
use crate::protocol::packets::OkFields;

impl Session {
    /// Drops the request's packet from the client's buffer, if it was neither relayed nor dropped yet: the
    /// proxy answers it, or sends something else in its place.
    pub(super) fn consume_request(&mut self, request: &mut Request) {
        if request.buffered {
            self.client.consume(request.span.wire_len);
            request.buffered = false;
        }
    }

    /// Answers the request with `error`.
    pub(super) async fn answer_error(
        &mut self,
        request: &mut Request,
        error: MysqlError,
    ) -> Result<Flow, SessionError> {
        let mut out = BytesMut::new();
        error.write_packet(&mut out, request.first_answer_seq());
        self.answer(request, &out).await
    }

    /// Answers the request with an OK carrying `fields`.
    pub(super) async fn answer_ok(&mut self, request: &mut Request, fields: &OkFields) -> Result<Flow, SessionError> {
        let mut out = BytesMut::new();
        let session_track =
            self.edxapp.caps.flags().contains(mysql_common::constants::CapabilityFlags::CLIENT_SESSION_TRACK);
        fields.write_packet(&mut out, request.first_answer_seq(), session_track);
        self.answer(request, &out).await
    }

    /// Answers the request with `packets`, whole packets the proxy framed itself.
    pub(super) async fn answer(&mut self, request: &mut Request, packets: &[u8]) -> Result<Flow, SessionError> {
        self.consume_request(request);
        self.write_to_client(request, packets).await?;
        Ok(Flow::Continue)
    }

    /// Writes part of an answer the proxy composes (it may go on).
    pub(super) async fn write_to_client(&mut self, request: &mut Request, bytes: &[u8]) -> Result<(), SessionError> {
        request.answer_seq = None;
        self.client.write_all(bytes).await.map_err(SessionError::Client)
    }

    /// Answers an empty request packet, which is no command at all.
    pub(super) async fn answer_empty_packet(&mut self, span: PacketSpan) -> Result<(), SessionError> {
        self.client.consume(span.wire_len);
        let error =
            MysqlError::new(code::ER_MALFORMED_PACKET, sqlstate::LINK_FAILURE, "Malformed communication packet");
        let mut out = BytesMut::new();
        error.write_packet(&mut out, span.last_seq.wrapping_add(1));
        self.client.write_all(&out).await.map_err(SessionError::Client)
    }
}

/// Tells the client why its session ends, if the proxy may still answer (`answer_seq`) and the client is there;
/// a client that may still be sending a refused packet is read until it stops, so that it gets the answer.
pub(super) async fn report(client: &mut Connection, error: &SessionError, answer_seq: Option<u8>) {
    if let (Some(seq), Some(mysql)) = (error.answer_seq(answer_seq), error.to_mysql()) {
        let mut out = BytesMut::new();
        mysql.write_packet(&mut out, seq);
        let _ = client.write_all(&out).await;
    }
    if error.client_still_sending() {
        client.close_draining(DRAIN_LINGER).await;
    }
}

/// How long the proxy tries to tell a refused client why before it closes the connection.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);

/// Refuses a client the admission did not let in: error 1040 as its first packet (sequence id 0, where the
/// greeting would be, as a server at its `max_connections` answers), then the connection closes. No backend
/// connection is opened for it.
pub async fn refuse(stream: TcpStream, refused: Refused) {
    let mut client = Connection::new(stream);
    let mut out = BytesMut::new();
    refused.to_mysql().write_packet(&mut out, 0);
    let told = async {
        client.write_all(&out).await?;
        client.shutdown().await
    };
    let _ = tokio::time::timeout(REFUSAL_WRITE, told).await;
}
