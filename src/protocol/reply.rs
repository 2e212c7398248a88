//! Whole small answers the proxy reads for itself rather than relays (an OK, an ERR, a few rows of text, a
//! prepared statement), parsed from the bytes of the response held in memory.

use bytes::Bytes;
use mysql_common::io::ParseBuf;

use super::ProtocolError;
use super::capabilities::Negotiated;
use super::errors::MysqlError;
use super::frame;
use super::packets::{OkFields, PrepareOk, is_ok_packet, is_progress_report, lenenc_int, standard_column_definition};

/// A text-protocol row's NULL value.
const NULL: u8 = 0xFB;

/// A server's answer to a statement the proxy runs for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// An OK packet.
    Ok(OkFields),
    /// An ERR packet, to pass on to the client as it is.
    Err(MysqlError),
    /// A result set.
    Rows(Rows),
    /// A prepared statement.
    Prepared(Prepared),
}

/// A statement the server prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// Its id on that connection.
    pub id: u32,
    /// How many parameters it takes.
    pub params: u16,
    /// The column definitions of its result (none for a statement without one).
    pub columns: Vec<Bytes>,
}

/// A small text-protocol result set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rows {
    /// For each column, whether its type is a number (so its values are written without quotes as literals).
    pub numeric: Vec<bool>,
    /// Each row's values as text (`None` for NULL).
    pub values: Vec<Vec<Option<Vec<u8>>>>,
}

impl Reply {
    /// Reads a whole small response (frames included): OK, ERR, or a text result set.
    pub fn parse(response: &[u8], caps: Negotiated) -> Result<Reply, ProtocolError> {
        let packets = split_packets(response);
        let first = packets.first().ok_or(ProtocolError::Malformed("empty response"))?;
        if let Some(error) = MysqlError::parse(first) {
            return Ok(Reply::Err(error));
        }
        if is_ok_packet(first) {
            return OkFields::parse(first, caps.flags()).map(Reply::Ok).ok_or(ProtocolError::Malformed("OK"));
        }
        let malformed = || ProtocolError::Malformed("result set");
        let (columns, _) = lenenc_int(first).ok_or(ProtocolError::Malformed("column count"))?;
        let columns = usize::try_from(columns).map_err(|_| malformed())?;
        let defs = packets.get(1..columns.checked_add(1).ok_or_else(malformed)?).ok_or_else(malformed)?;
        let numeric = defs.iter().map(|def| is_numeric(def, caps)).collect::<Result<_, _>>()?;
        let skip = 1 + columns + usize::from(!caps.deprecate_eof());
        let rows = packets.get(skip..packets.len().saturating_sub(1)).unwrap_or_default();
        let values = rows.iter().map(|row| text_row(row)).collect::<Result<_, _>>()?;
        Ok(Reply::Rows(Rows { numeric, values }))
    }

    /// Reads a whole answer to a COM_STMT_PREPARE: the new statement and its result's column definitions, or
    /// the ERR.
    pub fn parse_prepared(response: &[u8], caps: Negotiated) -> Result<Reply, ProtocolError> {
        let packets = split_packets(response);
        let first = packets.first().ok_or(ProtocolError::Malformed("empty response"))?;
        if let Some(error) = MysqlError::parse(first) {
            return Ok(Reply::Err(error));
        }
        let ok = PrepareOk::parse(first).ok_or(ProtocolError::Malformed("prepare OK"))?;
        let eof = |defs: u16| usize::from(defs > 0 && !caps.deprecate_eof());
        let columns_at = 1 + usize::from(ok.params) + eof(ok.params);
        let columns = packets
            .get(columns_at..columns_at + usize::from(ok.columns))
            .ok_or(ProtocolError::Malformed("prepared statement's column definitions"))?;
        Ok(Reply::Prepared(Prepared { id: ok.statement_id, params: ok.params, columns: columns.to_vec() }))
    }
}

/// The payloads of the packets of a whole response held in memory, progress reports left out.
fn split_packets(response: &[u8]) -> Vec<Bytes> {
    let mut packets = Vec::new();
    let mut rest = response;
    while let Some(span) = frame::PacketSpan::find(rest) {
        let packet = frame::payload(Bytes::copy_from_slice(&rest[..span.wire_len]), &span);
        if !is_progress_report(&packet) {
            packets.push(packet);
        }
        rest = &rest[span.wire_len..];
    }
    packets
}

/// Whether a column definition describes a number.
fn is_numeric(def: &[u8], caps: Negotiated) -> Result<bool, ProtocolError> {
    let malformed = || ProtocolError::Malformed("column definition");
    let def = standard_column_definition(def, caps.extended_metadata()).ok_or_else(malformed)?;
    let column: mysql_common::packets::Column = ParseBuf(&def).parse(()).map_err(|_| malformed())?;
    Ok(column.column_type().is_numeric_type())
}

/// The values of a text-protocol row.
/// The values of a text protocol row (`None` for NULL).
pub fn text_row(mut row: &[u8]) -> Result<Vec<Option<Vec<u8>>>, ProtocolError> {
    let mut values = Vec::new();
    while let Some(&first) = row.first() {
        if first == NULL {
            values.push(None);
            row = &row[1..];
            continue;
        }
        let (len, at) = lenenc_int(row).ok_or(ProtocolError::Malformed("row"))?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| at.checked_add(len))
            .filter(|&end| end <= row.len())
            .ok_or(ProtocolError::Malformed("row"))?;
        values.push(Some(row[at..end].to_vec()));
        row = &row[end..];
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn response(packets: &[&[u8]]) -> Vec<u8> {
        let mut out = BytesMut::new();
        let mut seq = 1;
        for packet in packets {
            seq = frame::write_packet(&mut out, seq, packet);
        }
        out.to_vec()
    }

    #[test]
    fn a_column_count_from_the_network_cannot_overflow() {
        let caps = Negotiated::new(0, 0);
        let huge = response(&[b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff"]);
        assert!(Reply::parse(&huge, caps).is_err());
    }

    #[test]
    fn text_rows_read_nulls_and_values() {
        assert_eq!(text_row(b"\xfb\x0242").unwrap(), vec![None, Some(b"42".to_vec())]);
        assert!(text_row(b"\x05ab").is_err());
    }

    #[test]
    fn errors_and_oks_are_told_apart() {
        let caps = Negotiated::new(0, 0);
        let err = response(&[b"\xff\x7a\x04#42S02no such table"]);
        assert!(matches!(Reply::parse(&err, caps), Ok(Reply::Err(e)) if e.code == 1146));
        let ok = response(&[b"\x00\x01\x00\x02\x00\x00\x00"]);
        assert!(matches!(Reply::parse(&ok, caps), Ok(Reply::Ok(fields)) if fields.affected_rows == 1));
    }
}
