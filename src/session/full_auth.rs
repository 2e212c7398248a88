//! caching_sha2_password's full authentication of a plaintext client whose server leg is encrypted: the client's
//! request for an RSA key is answered with the proxy's own ([`crate::auth_key`]), and the password it sends
//! encrypted with it reaches the server in cleartext inside TLS. Every other combination of legs relays the
//! exchange unchanged.

use bytes::BytesMut;

use super::Session;
use super::error::SessionError;
use super::handshake::Sequence;
use crate::protocol::frame::{self, PacketSpan};
use crate::protocol::packets;

impl Session {
    /// Carries on a full authentication from the client's packet at `span` (its first after the server asked for
    /// the password), returning the legs' sequence ids once the server has the password to answer. `answer_seq`
    /// follows the client's packets, so that a password the proxy cannot pass on is refused with an error the
    /// client reads.
    pub(super) async fn full_auth_for_plaintext_client(
        &mut self,
        mut span: PacketSpan,
        mut seq: Sequence,
        answer_seq: &mut Option<u8>,
    ) -> Result<Sequence, SessionError> {
        let shared = std::sync::Arc::clone(&self.shared);
        let key = shared.auth_key().await.ok_or(FullAuthFailure::NoKey)?;
        let mut packet = self.client.buf.split_to(span.wire_len);
        if span.first_frame(&packet) == packets::REQUEST_PUBLIC_KEY {
            let mut out = BytesMut::new();
            seq.client = packets::write_auth_more_data(&mut out, seq.client, key.public_pem());
            self.client.write_all(&out).await.map_err(SessionError::Client)?;
            span = self.next_handshake_packet().await?;
            seq.client = span.last_seq.wrapping_add(1);
            *answer_seq = Some(seq.client);
            packet = self.client.buf.split_to(span.wire_len);
        }
        let password =
            key.decrypt_password(span.first_frame(&packet), &self.edxapp.scramble).map_err(FullAuthFailure::from)?;
        let mut out = BytesMut::new();
        seq.server = frame::write_packet(&mut out, seq.server, &password);
        let sent = self.edxapp.conn.write_all(&out).await;
        out.fill(0);
        sent.map_err(SessionError::Backend)?;
        Ok(seq)
    }
}

/// Why the proxy could not carry a plaintext client's full authentication to a server reached over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FullAuthFailure {
    /// The proxy's RSA key could not be generated.
    #[error("csmh-proxy has no RSA key to offer the client")]
    NoKey,
    /// What the client sent does not decrypt with the proxy's key.
    #[error(transparent)]
    Undecryptable(#[from] crate::auth_key::UndecryptablePassword),
}
