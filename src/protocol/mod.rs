//! The MySQL client/server protocol as far as a relaying proxy needs it: frames, the handshake's capability
//! bits, where a response ends, and the few packets the proxy reads or writes itself (ERR, OK,
//! EOF, prepare answers).
//!
//! Nothing here knows about edX, routing or configuration.

pub mod capabilities;
pub mod command;
pub mod conn;
pub mod errors;
pub mod frame;
pub mod packets;
pub mod reply;
pub mod response;

/// A packet that does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A packet is shorter than its kind requires, or a field is out of range.
    #[error("malformed {0} packet")]
    Malformed(&'static str),
    /// The client asked for something the proxy cannot relay.
    #[error("{0}")]
    Unsupported(&'static str),
}
