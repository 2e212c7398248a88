//! The login: the `edxapp` server's greeting relayed, TLS on each leg as `[listen.tls]` and
//! `[backends.edxapp.tls]` say, the client's handshake response, then the authentication exchange packet for
//! packet ([`Session::authenticate`], which COM_CHANGE_USER shares).
//!
//! The two legs may count packets differently: a leg with TLS has an SSLRequest packet the other has not, and
//! the proxy may answer the client's request for an RSA key itself ([`super::full_auth`]). [`Sequence`] keeps
//! each leg's own count, so every packet reaches its side with the sequence id that side expects.

use tracing::debug;

use super::Session;
use super::error::SessionError;
use crate::protocol::ProtocolError;
use crate::protocol::capabilities::Negotiated;
use crate::protocol::errors::MysqlError;
use crate::protocol::frame::{self, PacketSpan};
use crate::protocol::packets::{self, AuthAnswer, MAX_HANDSHAKE_PACKET};
use crate::protocol::response::End;
use crate::tls::Leg;
use crate::topology::Server;

/// The sequence id each leg expects next during an authentication exchange.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sequence {
    /// The id of the next packet the client reads or sends.
    pub client: u8,
    /// The id of the next packet the server reads or sends.
    pub server: u8,
}

impl Sequence {
    /// After a packet with sequence id `seq` on both legs (a command).
    pub fn after(seq: u8) -> Sequence {
        Sequence { client: seq.wrapping_add(1), server: seq.wrapping_add(1) }
    }
}

impl Session {
    /// Relays the server's greeting and the client's answer, with TLS on the legs that have it and capabilities
    /// masked, then the authentication exchange; returns how it ended. `answer_seq` says where the proxy may
    /// still answer the client with an error of its own.
    pub(super) async fn handshake(&mut self, answer_seq: &mut Option<u8>) -> Result<End, SessionError> {
        let snapshot = self.shared.snapshot();
        let tls = &snapshot.tls;
        let conn = &mut self.edxapp.conn;
        let span = conn
            .next_packet_within(MAX_HANDSHAKE_PACKET)
            .await
            .map_err(SessionError::from_backend_handshake)?
            .ok_or_else(SessionError::backend_closed)?;
        if MysqlError::parse(span.first_frame(&conn.buf)).is_some() {
            // The server refused the connection outright (too many connections, host blocked): pass it on.
            *answer_seq = None;
            self.client.relay_from(conn, span.wire_len).await.map_err(SessionError::Client)?;
            return Ok(End::Err);
        }
        let greeting = packets::patch_greeting(span.first_frame_mut(&mut conn.buf), tls.listener.is_some())
            .map_err(SessionError::BackendProtocol)?;
        *answer_seq = None;
        self.client.relay_from(conn, span.wire_len).await.map_err(SessionError::Client)?;
        // Until the client answers, the proxy may end the handshake with an error of its own, as a server would.
        *answer_seq = Some(span.last_seq.wrapping_add(1));

        let mut span = self.next_handshake_packet().await?;
        *answer_seq = Some(span.last_seq.wrapping_add(1));
        if packets::is_tls_request(span.first_frame(&self.client.buf)) {
            let Some(listener) = &tls.listener else {
                return Err(SessionError::ClientProtocol(ProtocolError::Unsupported(
                    "TLS between client and proxy is not enabled (no [listen.tls])",
                )));
            };
            self.client.consume(span.wire_len);
            *answer_seq = None;
            self.client.accept_tls(&listener.acceptor).await.map_err(SessionError::ClientTls)?;
            span = self.next_handshake_packet().await?;
        } else if tls.listener.as_ref().is_some_and(|listener| listener.required) {
            return Err(SessionError::InsecureClient);
        }
        *answer_seq = Some(span.last_seq.wrapping_add(1));
        self.shared.metrics.client_connection(self.client.is_tls());
        self.csmh.serve_client_over(self.client.is_tls());

        let leg =
            tls.edxapp.leg(greeting.offers_tls, self.client.is_tls()).map_err(|refusal| SessionError::BackendTls {
                server: Server::Edxapp,
                address: self.edxapp.address.clone(),
                reason: refusal.to_string(),
            })?;
        let backend_tls = matches!(leg, Leg::Tls(..));
        let hello = packets::patch_client_response(span.first_frame_mut(&mut self.client.buf), backend_tls)
            .map_err(SessionError::ClientProtocol)?;
        debug!(
            user = %String::from_utf8_lossy(&hello.user),
            database = ?hello.database,
            backend_thread = greeting.connection_id,
            client_tls = self.client.is_tls(),
            backend_tls,
            "authenticating"
        );
        self.grants.logged_in(&self.edxapp.address, &hello.user);
        if self.shared.snapshot().config.listen.answer_settings_early {
            self.early = super::Early::Opening { user: hello.user.clone() };
        }
        self.edxapp.caps = Negotiated::new(greeting.capabilities, hello.capabilities)
            .with_mariadb(greeting.mariadb_capabilities, hello.mariadb_capabilities);
        self.edxapp.server_is_mariadb = greeting.is_mariadb();
        self.edxapp.scramble = greeting.scramble;
        self.edxapp.plugin = hello.plugin;

        // The server's count: its greeting was 0, then the TLS request if its leg has one.
        let server_seq = match leg {
            Leg::Tls(connector, name) => {
                self.start_backend_tls(span, connector, name).await?;
                2
            }
            Leg::Plain => 1,
        };
        self.shared.metrics.backend_connection(Server::Edxapp, self.edxapp.conn.tls_handshake());
        let next = span.renumber(&mut self.client.buf, server_seq);
        self.edxapp.conn.relay_from(&mut self.client, span.wire_len).await.map_err(SessionError::Backend)?;
        self.authenticate(Sequence { client: span.last_seq.wrapping_add(1), server: next }, answer_seq).await
    }

    /// Sends the `edxapp` server an SSLRequest made from the client's handshake response at `span` (patched to
    /// ask for TLS), then runs the TLS handshake.
    async fn start_backend_tls(
        &mut self,
        span: PacketSpan,
        connector: &tokio_rustls::TlsConnector,
        name: rustls::pki_types::ServerName<'static>,
    ) -> Result<(), SessionError> {
        let request = packets::tls_request(span.first_frame(&self.client.buf)).map_err(SessionError::ClientProtocol)?;
        let mut out = bytes::BytesMut::new();
        frame::write_packet(&mut out, 1, request);
        self.edxapp.conn.write_all(&out).await.map_err(SessionError::Backend)?;
        self.edxapp.conn.connect_tls(connector, name).await.map_err(|error| SessionError::BackendTls {
            server: Server::Edxapp,
            address: self.edxapp.address.clone(),
            reason: error.to_string(),
        })
    }

    /// Relays an authentication exchange (a login's, or COM_CHANGE_USER's) packet by packet until the server
    /// says OK or ERR, each packet renumbered for the leg it goes to. Where only the server's leg is encrypted,
    /// the client's request for an RSA key in caching_sha2_password's full authentication is answered by the
    /// proxy ([`super::full_auth`]).
    pub(super) async fn authenticate(
        &mut self,
        mut seq: Sequence,
        answer_seq: &mut Option<u8>,
    ) -> Result<End, SessionError> {
        let mut full_auth = false;
        loop {
            // The client waits for the server's next packet: the proxy may answer with an error in its place.
            *answer_seq = Some(seq.client);
            let span = self
                .edxapp
                .conn
                .next_packet_within(MAX_HANDSHAKE_PACKET)
                .await
                .map_err(SessionError::from_backend_handshake)?
                .ok_or_else(SessionError::backend_closed)?;
            let payload = span.first_frame(&self.edxapp.conn.buf);
            let answer = AuthAnswer::classify(payload);
            match answer {
                AuthAnswer::Switch => {
                    let switch = packets::AuthSwitch::parse(payload).map_err(SessionError::BackendProtocol)?;
                    if switch.sends_cleartext() && !self.client.is_tls() {
                        return Err(SessionError::ClearPasswordInPlaintext);
                    }
                    self.edxapp.scramble = switch.scramble;
                    self.edxapp.plugin = switch.plugin;
                }
                AuthAnswer::MoreData => {
                    full_auth = payload == packets::FULL_AUTH && self.edxapp.plugin == packets::CACHING_SHA2_PASSWORD;
                }
                AuthAnswer::Ok => self.edxapp.note_status(packets::ok_status(payload).unwrap_or_default()),
                // Anything else is a plugin's own data, relayed for the client to answer.
                AuthAnswer::FastAuthOk | AuthAnswer::Err | AuthAnswer::Other => {}
            }
            seq.server = span.last_seq.wrapping_add(1);
            seq.client = span.renumber(&mut self.edxapp.conn.buf, seq.client);
            *answer_seq = None;
            self.client.relay_from(&mut self.edxapp.conn, span.wire_len).await.map_err(SessionError::Client)?;
            match answer {
                AuthAnswer::Ok => return Ok(End::Ok),
                AuthAnswer::Err => return Ok(End::Err),
                AuthAnswer::FastAuthOk => continue,
                _ => {}
            }
            let span = self.next_handshake_packet().await?;
            seq.client = span.last_seq.wrapping_add(1);
            // The client waits for the server's answer to its packet, which the proxy may give in its place.
            *answer_seq = Some(seq.client);
            if full_auth && self.edxapp.conn.is_tls() && !self.client.is_tls() {
                seq = self.full_auth_for_plaintext_client(span, seq, answer_seq).await?;
                continue;
            }
            seq.server = span.renumber(&mut self.client.buf, seq.server);
            self.edxapp.conn.relay_from(&mut self.client, span.wire_len).await.map_err(SessionError::Backend)?;
        }
    }
}
