//! One client request while it is handled: where its packet lies, what command it is, the configuration snapshot
//! it is decided by, and whether the proxy may still answer it with a packet of its own.

use std::sync::Arc;

use crate::metrics::RouteLabel;
use crate::protocol::command::{self, Command};
use crate::protocol::frame::PacketSpan;
use crate::state::ConfigSnapshot;

/// A request packet at the start of the client's buffer, and what handling it has decided so far.
pub(super) struct Request {
    /// Where the packet lies in the client's buffer (until it is relayed or answered).
    pub span: PacketSpan,
    /// The command, from the packet's first bytes.
    pub command: Command,
    /// The prepared statement a COM_STMT_* command names, read within the packet.
    pub statement_id: Option<u32>,
    /// The configuration snapshot that decides this request: its transaction's, or the one in force.
    pub snapshot: Arc<ConfigSnapshot>,
    /// The sequence id the proxy's own answer takes, while nothing of a server's answer has reached the client.
    pub answer_seq: Option<u8>,
    /// The route the metrics count the request under, when it is a statement.
    pub label: Option<RouteLabel>,
    /// The packet is still in the client's buffer: neither relayed nor consumed.
    pub buffered: bool,
}

impl Request {
    /// The request `command` in the packet at `span`, whose first frame's payload is `first_frame`.
    pub fn new(span: PacketSpan, command: Command, first_frame: &[u8], snapshot: Arc<ConfigSnapshot>) -> Request {
        let statement_id = if command.names_statement() { command::statement_id(first_frame) } else { None };
        Request {
            span,
            command,
            statement_id,
            snapshot,
            answer_seq: Some(span.last_seq.wrapping_add(1)),
            label: None,
            buffered: true,
        }
    }

    /// The sequence id the first packet of an answer takes.
    pub fn first_answer_seq(&self) -> u8 {
        self.span.last_seq.wrapping_add(1)
    }
}
