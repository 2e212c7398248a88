//! Binary-protocol commands built by hand, for the tests that send them with [`RawClient`]: prepared statements
//! executed one at a time or in a batch, long data, and what the raw answers say.

use csmh_proxy::protocol::command::{
    COM_STMT_BULK_EXECUTE, COM_STMT_EXECUTE, COM_STMT_PREPARE, COM_STMT_SEND_LONG_DATA,
};
use csmh_proxy::protocol::frame;
use csmh_proxy::protocol::response::Expect;

use super::raw::RawClient;

/// COM_STMT_BULK_EXECUTE's flag saying that parameter types follow.
pub const SEND_TYPES_TO_SERVER: u16 = 128;
/// MYSQL_TYPE_VAR_STRING: every parameter is sent as text, the server converts.
pub const VAR_STRING: u8 = 0xfd;

/// The packets' payloads of a raw response.
pub fn payloads(response: &[u8]) -> Vec<&[u8]> {
    let mut packets = Vec::new();
    let mut rest = response;
    while let Some(span) = frame::PacketSpan::find(rest) {
        packets.push(&rest[frame::HEADER_LEN..span.wire_len]);
        rest = &rest[span.wire_len..];
    }
    packets
}

/// Prepares `sql` and returns the statement id from the raw answer.
pub async fn prepare(client: &mut RawClient, sql: &str) -> u32 {
    prepared_id(&client.command(&[&[COM_STMT_PREPARE][..], sql.as_bytes()].concat(), Expect::Prepare).await)
}

/// The statement id in the raw answer to a COM_STMT_PREPARE.
pub fn prepared_id(response: &[u8]) -> u32 {
    let ok = payloads(response)[0];
    assert_eq!(ok[0], 0x00, "prepared: {:?}", String::from_utf8_lossy(ok));
    u32::from_le_bytes(ok[1..5].try_into().unwrap())
}

/// A COM_STMT_BULK_EXECUTE of statement `id` for `rows`, every parameter sent as text (`None` for NULL).
pub fn bulk_execute(id: u32, rows: &[Vec<Option<&str>>]) -> Vec<u8> {
    let mut packet = vec![COM_STMT_BULK_EXECUTE];
    packet.extend_from_slice(&id.to_le_bytes());
    packet.extend_from_slice(&SEND_TYPES_TO_SERVER.to_le_bytes());
    for _ in &rows[0] {
        packet.extend_from_slice(&[VAR_STRING, 0]);
    }
    for row in rows {
        for value in row {
            match value {
                None => packet.push(1),
                Some(text) => {
                    packet.push(0);
                    packet.push(u8::try_from(text.len()).unwrap());
                    packet.extend_from_slice(text.as_bytes());
                }
            }
        }
    }
    packet
}

/// A parameter of [`execute_text`].
#[derive(Clone, Copy)]
pub enum Param<'a> {
    /// A value, sent as text (the server converts).
    Text(&'a str),
    /// NULL.
    Null,
    /// Sent before the execution by COM_STMT_SEND_LONG_DATA.
    LongData,
}

/// A COM_STMT_EXECUTE of statement `id` with `params`, their types always sent, as Connector/C's direct execution
/// sends it.
pub fn execute_text(id: u32, params: &[Param]) -> Vec<u8> {
    let mut packet = vec![COM_STMT_EXECUTE];
    packet.extend_from_slice(&id.to_le_bytes());
    packet.extend_from_slice(&[0, 1, 0, 0, 0]); // no cursor, one iteration
    let mut nulls = vec![0u8; params.len().div_ceil(8)];
    for (i, param) in params.iter().enumerate() {
        if matches!(param, Param::Null) {
            nulls[i / 8] |= 1 << (i % 8);
        }
    }
    packet.extend_from_slice(&nulls);
    packet.push(1); // types follow
    for _ in params {
        packet.extend_from_slice(&[VAR_STRING, 0]);
    }
    for param in params {
        if let Param::Text(text) = param {
            packet.push(u8::try_from(text.len()).unwrap());
            packet.extend_from_slice(text.as_bytes());
        }
    }
    packet
}

/// A command of `byte` on statement `id` with nothing else (COM_STMT_RESET, COM_STMT_CLOSE).
pub fn on_statement(byte: u8, id: u32) -> Vec<u8> {
    [&[byte][..], &id.to_le_bytes()].concat()
}

/// A COM_STMT_SEND_LONG_DATA of `data` for the first parameter of statement `id`.
pub fn long_data(id: u32, data: &str) -> Vec<u8> {
    [on_statement(COM_STMT_SEND_LONG_DATA, id), 0u16.to_le_bytes().to_vec(), data.as_bytes().to_vec()].concat()
}

/// The code and message of the ERR packet that `response` is.
pub fn error_of(response: &[u8]) -> (u16, String) {
    let err = payloads(response)[0];
    assert_eq!(err[0], 0xFF, "an error: {:?}", String::from_utf8_lossy(err));
    (u16::from_le_bytes([err[1], err[2]]), String::from_utf8_lossy(&err[9..]).into_owned())
}

/// The affected rows of an OK packet's payload.
pub fn affected_rows(ok: &[u8]) -> u8 {
    assert_eq!(ok[0], 0x00, "an OK packet: {:?}", String::from_utf8_lossy(ok));
    ok[1]
}
