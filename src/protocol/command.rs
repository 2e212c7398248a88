//! Client commands: the first byte of every request, and what kind of response each one gets.
//!
//! Every command a MySQL or MariaDB server answers is relayed, the obsolete ones included (the server answers
//! those with its own error), so a client gets the server's own answer. Only commands that turn the connection
//! into something else than a request/response session are refused: replication streams, MySQL's clone and
//! group-replication streams, and MariaDB's removed COM_MULTI (several responses to one request).
//! `docs/protocol.md` lists every command byte with its decision.

use super::response::Expect;

/// A client command, from the first bytes of its packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// COM_QUIT: the client is leaving; no response.
    Quit,
    /// COM_QUERY: a text statement.
    Query,
    /// COM_STMT_PREPARE: a statement to prepare.
    StmtPrepare,
    /// COM_STMT_EXECUTE, and whether it asked the server for a read-only cursor (rows then come by
    /// COM_STMT_FETCH).
    StmtExecute {
        /// The execute's flags ask for a cursor.
        cursor: bool,
    },
    /// COM_CHANGE_USER: re-authenticate and reset the session.
    ChangeUser,
    /// Any other command the proxy relays with a response shape it knows, obsolete and unknown bytes included.
    Relayed(u8),
    /// A command the proxy does not relay, because it would leave the request/response protocol.
    Refused(u8),
}

/// COM_SLEEP: internal to the server; a client that sends it gets an error.
pub const COM_SLEEP: u8 = 0x00;
/// COM_QUIT.
pub const COM_QUIT: u8 = 0x01;
/// COM_INIT_DB.
pub const COM_INIT_DB: u8 = 0x02;
/// COM_QUERY.
pub const COM_QUERY: u8 = 0x03;
/// COM_FIELD_LIST.
pub const COM_FIELD_LIST: u8 = 0x04;
/// COM_REFRESH (`mysql_refresh()`, FLUSH by command).
pub const COM_REFRESH: u8 = 0x07;
/// COM_SHUTDOWN.
pub const COM_SHUTDOWN: u8 = 0x08;
/// COM_STATISTICS.
pub const COM_STATISTICS: u8 = 0x09;
/// COM_PROCESS_INFO.
pub const COM_PROCESS_INFO: u8 = 0x0a;
/// COM_PROCESS_KILL.
pub const COM_PROCESS_KILL: u8 = 0x0c;
/// COM_DEBUG.
pub const COM_DEBUG: u8 = 0x0d;
/// COM_PING.
pub const COM_PING: u8 = 0x0e;
/// COM_CHANGE_USER.
pub const COM_CHANGE_USER: u8 = 0x11;
/// COM_BINLOG_DUMP: the connection becomes a replication stream.
pub const COM_BINLOG_DUMP: u8 = 0x12;
/// COM_REGISTER_SLAVE: a replica announcing itself before it streams.
pub const COM_REGISTER_SLAVE: u8 = 0x15;
/// COM_STMT_PREPARE.
pub const COM_STMT_PREPARE: u8 = 0x16;
/// COM_STMT_EXECUTE.
pub const COM_STMT_EXECUTE: u8 = 0x17;
/// COM_STMT_SEND_LONG_DATA.
pub const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
/// COM_STMT_CLOSE.
pub const COM_STMT_CLOSE: u8 = 0x19;
/// COM_STMT_RESET.
pub const COM_STMT_RESET: u8 = 0x1a;
/// COM_SET_OPTION.
pub const COM_SET_OPTION: u8 = 0x1b;
/// COM_STMT_FETCH.
pub const COM_STMT_FETCH: u8 = 0x1c;
/// MySQL's COM_BINLOG_DUMP_GTID (MariaDB: unused, answered with an error): a replication stream.
pub const COM_BINLOG_DUMP_GTID: u8 = 0x1e;
/// COM_RESET_CONNECTION.
pub const COM_RESET_CONNECTION: u8 = 0x1f;
/// MySQL's COM_CLONE: the connection becomes a clone plugin's data stream.
pub const COM_CLONE: u8 = 0x20;
/// MySQL's COM_SUBSCRIBE_GROUP_REPLICATION_STREAM.
pub const COM_SUBSCRIBE_GROUP_REPLICATION_STREAM: u8 = 0x21;
/// MariaDB's COM_STMT_BULK_EXECUTE: one prepared statement executed for an array of parameter sets.
pub const COM_STMT_BULK_EXECUTE: u8 = 0xfa;
/// MariaDB's COM_MULTI (10.2 to 10.5, since removed): several commands in one packet, several responses.
pub const COM_MULTI: u8 = 0xfe;

/// The statement id MariaDB reads as "the statement this connection prepared last" (its `LAST_STMT_ID`): MariaDB
/// Connector/C's direct execution sends COM_STMT_PREPARE and, right behind it, a COM_STMT_EXECUTE (or
/// COM_STMT_BULK_EXECUTE) naming this id, before it has read the prepare's answer. Servers never give a statement
/// this id (MariaDB numbers them below 2^31).
pub const LAST_STATEMENT_ID: u32 = 0xFFFF_FFFF;

/// The bit of COM_STMT_EXECUTE's flags byte that asks for a read-only cursor (CURSOR_TYPE_READ_ONLY; the
/// other cursor types are that one plus modifiers).
const CURSOR_TYPE_READ_ONLY: u8 = 0x01;

impl Command {
    /// Classifies a request from its payload; `None` for an empty payload, which is no command at all.
    pub fn of(payload: &[u8]) -> Option<Command> {
        let (&byte, rest) = payload.split_first()?;
        Some(match byte {
            COM_STMT_EXECUTE => {
                // Flags follow the 4-byte statement id; an execute too short to have them asks for nothing.
                let flags = rest.get(4).copied().unwrap_or(0);
                Command::StmtExecute { cursor: flags & CURSOR_TYPE_READ_ONLY != 0 }
            }
            other => Command::from_byte(other),
        })
    }

    /// Classifies a command byte (COM_STMT_EXECUTE as asking for no cursor: use [`Command::of`] for requests).
    pub fn from_byte(byte: u8) -> Command {
        match byte {
            COM_QUIT => Command::Quit,
            COM_QUERY => Command::Query,
            COM_STMT_PREPARE => Command::StmtPrepare,
            COM_STMT_EXECUTE => Command::StmtExecute { cursor: false },
            COM_CHANGE_USER => Command::ChangeUser,
            COM_BINLOG_DUMP
            | COM_REGISTER_SLAVE
            | COM_BINLOG_DUMP_GTID
            | COM_CLONE
            | COM_SUBSCRIBE_GROUP_REPLICATION_STREAM
            | COM_MULTI => Command::Refused(byte),
            other => Command::Relayed(other),
        }
    }

    /// The command byte.
    pub fn byte(&self) -> u8 {
        match *self {
            Command::Quit => COM_QUIT,
            Command::Query => COM_QUERY,
            Command::StmtPrepare => COM_STMT_PREPARE,
            Command::StmtExecute { .. } => COM_STMT_EXECUTE,
            Command::ChangeUser => COM_CHANGE_USER,
            Command::Relayed(byte) | Command::Refused(byte) => byte,
        }
    }

    /// Why the proxy refuses this command, if it does.
    pub fn refusal(&self) -> Option<&'static str> {
        match self.byte() {
            COM_BINLOG_DUMP | COM_BINLOG_DUMP_GTID | COM_REGISTER_SLAVE => {
                Some("replication streams are not relayed by csmh-proxy; connect replicas to the server directly")
            }
            COM_CLONE | COM_SUBSCRIBE_GROUP_REPLICATION_STREAM => {
                Some("clone and group replication streams are not relayed by csmh-proxy")
            }
            COM_MULTI => Some("COM_MULTI is not relayed by csmh-proxy"),
            _ => None,
        }
    }

    /// Whether the command acts on a prepared statement named by the 4-byte id after the command byte.
    pub fn names_statement(&self) -> bool {
        matches!(self, Command::StmtExecute { .. })
            || matches!(
                self,
                Command::Relayed(
                    COM_STMT_SEND_LONG_DATA | COM_STMT_CLOSE | COM_STMT_RESET | COM_STMT_FETCH | COM_STMT_BULK_EXECUTE
                )
            )
    }

    /// Whether the command runs a prepared statement: COM_STMT_EXECUTE, and MariaDB's COM_STMT_BULK_EXECUTE (one
    /// execution per row of parameters).
    pub fn executes(&self) -> bool {
        matches!(self, Command::StmtExecute { .. } | Command::Relayed(COM_STMT_BULK_EXECUTE))
    }

    /// The shape of the server's response, or `None` when the server sends none.
    pub fn response(&self) -> Option<Expect> {
        match *self {
            Command::Quit | Command::Refused(_) => None,
            Command::Query => Some(Expect::ResultSets),
            Command::StmtPrepare => Some(Expect::Prepare),
            Command::StmtExecute { cursor: false } => Some(Expect::ResultSets),
            Command::StmtExecute { cursor: true } => Some(Expect::Cursor),
            Command::ChangeUser => Some(Expect::Auth),
            Command::Relayed(byte) => match byte {
                COM_PROCESS_INFO | COM_STMT_BULK_EXECUTE => Some(Expect::ResultSets),
                COM_STMT_FETCH => Some(Expect::Rows),
                COM_FIELD_LIST => Some(Expect::FieldList),
                COM_STMT_SEND_LONG_DATA | COM_STMT_CLOSE => None,
                // Everything else is answered with one packet: OK, ERR, EOF (COM_SHUTDOWN, COM_DEBUG,
                // COM_SET_OPTION), the statistics string, or the error for a command the server does not know.
                _ => Some(Expect::OnePacket),
            },
        }
    }
}

/// The id of the prepared statement a COM_STMT_* request names (the four bytes after the command byte of its
/// payload); `None` when the payload is too short to hold one.
pub fn statement_id(payload: &[u8]) -> Option<u32> {
    payload.get(1..5).map(|id| u32::from_le_bytes([id[0], id[1], id[2], id[3]]))
}

/// Whether a COM_STMT_EXECUTE's `payload`, for a statement of `params` parameters, says their types follow (after
/// the command byte, the statement id, the flags, the iteration count and the parameters' NULL bitmap), as a
/// direct execution must: MariaDB refuses one naming [`LAST_STATEMENT_ID`] without them as a malformed packet.
pub fn execute_sends_types(payload: &[u8], params: u16) -> bool {
    params == 0 || payload.get(10 + usize::from(params).div_ceil(8)).is_some_and(|&types| types != 0)
}

/// Makes a COM_STMT_* request name statement `id` instead, in place; `false` (and nothing changed) when the
/// payload is too short to name one.
pub fn set_statement_id(payload: &mut [u8], id: u32) -> bool {
    match payload.get_mut(1..5) {
        Some(field) => {
            field.copy_from_slice(&id.to_le_bytes());
            true
        }
        None => false,
    }
}

/// What follows the command byte in a request's payload: a statement's text, a statement id and its parameters.
pub fn body(payload: &[u8]) -> &[u8] {
    payload.get(1..).unwrap_or_default()
}

/// The payload of a command: its byte, then `body`.
pub fn command_payload(command: u8, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(1 + body.len());
    payload.push(command);
    payload.extend_from_slice(body);
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_without_a_response() {
        for byte in [COM_QUIT, COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA] {
            assert_eq!(Command::from_byte(byte).response(), None, "command {byte:#x}");
        }
    }

    #[test]
    fn only_streams_are_refused() {
        let refused: Vec<u8> =
            (0..=u8::MAX).filter(|&b| matches!(Command::from_byte(b), Command::Refused(_))).collect();
        assert_eq!(refused, [0x12, 0x15, 0x1e, 0x20, 0x21, 0xfe]);
        for byte in refused {
            assert!(Command::from_byte(byte).refusal().is_some(), "command {byte:#x} says why");
            assert_eq!(Command::from_byte(byte).response(), None);
        }
    }

    #[test]
    fn obsolete_and_unknown_commands_get_one_packet() {
        for byte in [COM_SLEEP, 0x05, 0x06, COM_REFRESH, COM_SHUTDOWN, 0x0b, 0x0f, 0x10, 0x13, 0x14, 0x1d, 0x40, 0xff] {
            assert_eq!(Command::from_byte(byte).response(), Some(Expect::OnePacket), "command {byte:#x}");
            assert_eq!(Command::from_byte(byte).refusal(), None);
        }
    }

    #[test]
    fn statements_get_result_sets() {
        assert_eq!(Command::from_byte(COM_QUERY).response(), Some(Expect::ResultSets));
        assert_eq!(Command::from_byte(COM_STMT_EXECUTE).response(), Some(Expect::ResultSets));
        assert_eq!(Command::from_byte(COM_STMT_BULK_EXECUTE).response(), Some(Expect::ResultSets));
        assert_eq!(Command::from_byte(COM_STMT_PREPARE).response(), Some(Expect::Prepare));
        assert!(Command::from_byte(COM_STMT_BULK_EXECUTE).names_statement());
    }

    #[test]
    fn executions_are_execute_and_bulk_execute() {
        let executing: Vec<u8> = (0..=u8::MAX).filter(|&b| Command::from_byte(b).executes()).collect();
        assert_eq!(executing, [COM_STMT_EXECUTE, COM_STMT_BULK_EXECUTE]);
        assert!(Command::StmtExecute { cursor: true }.executes());
    }

    #[test]
    fn an_execute_asking_for_a_cursor_gets_a_cursor_response() {
        let execute = |flags: u8| [COM_STMT_EXECUTE, 1, 0, 0, 0, flags, 1, 0, 0, 0];
        assert_eq!(Command::of(&execute(0)), Some(Command::StmtExecute { cursor: false }));
        assert_eq!(Command::of(&execute(1)), Some(Command::StmtExecute { cursor: true }));
        assert_eq!(Command::of(&execute(1)).unwrap().response(), Some(Expect::Cursor));
        // MySQL's PARAMETER_COUNT_AVAILABLE flag alone asks for no cursor.
        assert_eq!(Command::of(&execute(8)), Some(Command::StmtExecute { cursor: false }));
        assert_eq!(Command::of(&[COM_STMT_EXECUTE, 1]), Some(Command::StmtExecute { cursor: false }));
        assert_eq!(Command::of(&[]), None);
        assert_eq!(Command::of(&[COM_PING]), Some(Command::Relayed(COM_PING)));
    }

    #[test]
    fn an_execute_says_whether_parameter_types_follow() {
        let execute = |tail: &[u8]| [&[COM_STMT_EXECUTE, 1, 0, 0, 0, 0, 1, 0, 0, 0][..], tail].concat();
        assert!(execute_sends_types(&execute(&[]), 0));
        assert!(execute_sends_types(&execute(&[0, 1, 0xfd, 0, 1, b'x']), 1));
        assert!(!execute_sends_types(&execute(&[0, 0, 1, b'x']), 1));
        assert!(!execute_sends_types(&execute(&[0]), 1));
        assert!(!execute_sends_types(&execute(&[0, 1]), 9), "nine parameters take two bytes of NULL bitmap");
        assert!(execute_sends_types(&execute(&[0, 0, 1]), 9));
    }

    #[test]
    fn statement_ids_are_read_within_the_packet() {
        assert_eq!(statement_id(&[COM_STMT_CLOSE, 7, 0, 0, 0x80]), Some(0x8000_0007));
        assert_eq!(statement_id(&[COM_STMT_CLOSE, 7, 0]), None);
        let mut execute = [COM_STMT_EXECUTE, 7, 0, 0, 0x80, 0];
        assert!(set_statement_id(&mut execute, 7));
        assert_eq!(execute, [COM_STMT_EXECUTE, 7, 0, 0, 0, 0]);
        assert!(!set_statement_id(&mut [COM_STMT_EXECUTE, 1], 2));
    }
}
