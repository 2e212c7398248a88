//! Client commands: the first byte of every request, and what kind of response each one gets.

use super::response::Expect;

/// A client command, from the first byte of its packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// COM_QUIT: the client is leaving; no response.
    Quit,
    /// COM_QUERY: a text statement.
    Query,
    /// COM_STMT_PREPARE: a statement to prepare.
    StmtPrepare,
    /// COM_CHANGE_USER: re-authenticate and reset the session.
    ChangeUser,
    /// Any command the proxy relays with a response shape it knows.
    Relayed(u8),
    /// A command the proxy does not relay (replication streams, MariaDB's COM_MULTI, unknown bytes).
    Refused(u8),
}

/// COM_QUIT.
pub const COM_QUIT: u8 = 0x01;
/// COM_INIT_DB.
pub const COM_INIT_DB: u8 = 0x02;
/// COM_QUERY.
pub const COM_QUERY: u8 = 0x03;
/// COM_FIELD_LIST.
pub const COM_FIELD_LIST: u8 = 0x04;
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
/// COM_RESET_CONNECTION.
pub const COM_RESET_CONNECTION: u8 = 0x1f;

impl Command {
    /// Classifies a command byte.
    pub fn from_byte(byte: u8) -> Command {
        match byte {
            COM_QUIT => Command::Quit,
            COM_QUERY => Command::Query,
            COM_STMT_PREPARE => Command::StmtPrepare,
            COM_CHANGE_USER => Command::ChangeUser,
            COM_INIT_DB
            | COM_FIELD_LIST
            | COM_STATISTICS
            | COM_PROCESS_INFO
            | COM_PROCESS_KILL
            | COM_DEBUG
            | COM_PING
            | COM_STMT_EXECUTE
            | COM_STMT_SEND_LONG_DATA
            | COM_STMT_CLOSE
            | COM_STMT_RESET
            | COM_SET_OPTION
            | COM_STMT_FETCH
            | COM_RESET_CONNECTION => Command::Relayed(byte),
            other => Command::Refused(other),
        }
    }

    /// Whether the command acts on a prepared statement named by the 4-byte id after the command byte.
    pub fn names_statement(&self) -> bool {
        matches!(
            self,
            Command::Relayed(
                COM_STMT_EXECUTE | COM_STMT_SEND_LONG_DATA | COM_STMT_CLOSE | COM_STMT_RESET | COM_STMT_FETCH
            )
        )
    }

    /// The shape of the server's response, or `None` when the server sends none.
    pub fn response(&self) -> Option<Expect> {
        match *self {
            Command::Quit | Command::Refused(_) => None,
            Command::Query => Some(Expect::ResultSets),
            Command::StmtPrepare => Some(Expect::Prepare),
            Command::ChangeUser => Some(Expect::Auth),
            Command::Relayed(byte) => match byte {
                COM_STMT_EXECUTE | COM_PROCESS_INFO => Some(Expect::ResultSets),
                COM_STMT_FETCH => Some(Expect::Rows),
                COM_FIELD_LIST => Some(Expect::FieldList),
                COM_STMT_SEND_LONG_DATA | COM_STMT_CLOSE => None,
                _ => Some(Expect::OnePacket),
            },
        }
    }
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
    fn replication_and_unknown_commands_are_refused() {
        assert_eq!(Command::from_byte(0x12), Command::Refused(0x12));
        assert_eq!(Command::from_byte(0xFE), Command::Refused(0xFE));
    }

    #[test]
    fn statements_get_result_sets() {
        assert_eq!(Command::from_byte(COM_QUERY).response(), Some(Expect::ResultSets));
        assert_eq!(Command::from_byte(COM_STMT_EXECUTE).response(), Some(Expect::ResultSets));
        assert_eq!(Command::from_byte(COM_STMT_PREPARE).response(), Some(Expect::Prepare));
    }
}
