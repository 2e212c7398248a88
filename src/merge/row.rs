//! Rows as the servers send them, in the text protocol (COM_QUERY) and in the binary protocol
//! (COM_STMT_EXECUTE): where each value lies in a row payload, cutting off the trailing columns the proxy added,
//! and writing the one row of an aggregate read.
//!
//! A text row is one length-encoded string per column, `0xFB` for NULL. A binary row is a `0x00` header, a NULL
//! bitmap whose first two bits are unused, and the non-NULL values one after the other, each encoded by its
//! column's type. Nothing here interprets a value: that is `value`'s work.

use std::ops::Range;

use bytes::{BufMut, Bytes};
use mysql_common::constants::ColumnType;
use mysql_common::io::BufMutExt;

use super::Origin;
use super::column::{BinaryWidth, ColumnDef, binary_width};
use super::error::{MergeError, Unsupported};
use crate::protocol::packets::lenenc_int;

/// How the rows of a result are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Text rows: results of COM_QUERY.
    Text,
    /// Binary rows: results of COM_STMT_EXECUTE.
    Binary,
}

/// The text protocol's NULL.
const TEXT_NULL: u8 = 0xFB;
/// The first byte of every binary row.
const BINARY_ROW_HEADER: u8 = 0x00;
/// Bits of a binary row's NULL bitmap before the first column's.
const NULL_BITMAP_OFFSET: usize = 2;

/// Where one non-NULL value lies in a row payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Cell {
    /// The value as encoded, length prefix included: copying these bytes writes the same value again.
    pub encoded: Range<usize>,
    /// The value's own bytes.
    pub value: Range<usize>,
}

/// Why a value cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unreadable {
    /// The bytes do not hold what the column definitions announce.
    Malformed(&'static str),
    /// A string on which the two trailing-space rules disagree, in a column whose rule is unknown.
    AmbiguousPadding,
}

/// What is wrong with a row, before it is known which side sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RowFault {
    /// The column being read.
    pub column: usize,
    /// What is wrong.
    pub problem: Unreadable,
}

impl RowFault {
    /// A malformed value in `column`.
    pub fn malformed(column: usize, what: &'static str) -> RowFault {
        RowFault { column, problem: Unreadable::Malformed(what) }
    }

    /// The error, blaming the side that sent the row.
    pub fn blamed_on(self, origin: Origin) -> MergeError {
        let column = self.column;
        match self.problem {
            Unreadable::Malformed(what) => MergeError::MalformedRow { origin, column, what },
            Unreadable::AmbiguousPadding => MergeError::AmbiguousString { origin, column },
        }
    }
}

/// How to find the values in the rows of one side's result.
#[derive(Debug, Clone)]
pub(super) struct RowLayout {
    protocol: Protocol,
    /// Each column's binary encoding; unused for text rows.
    widths: Vec<BinaryWidth>,
}

impl RowLayout {
    /// The layout of rows whose columns `defs` describe.
    pub fn new(protocol: Protocol, defs: &[ColumnDef]) -> Result<RowLayout, Unsupported> {
        let widths = defs
            .iter()
            .map(|def| {
                binary_width(def.column_type())
                    .ok_or_else(|| Unsupported::ColumnType { column: def.name().into(), type_name: def.type_name() })
            })
            .collect::<Result<_, _>>()?;
        Ok(RowLayout { protocol, widths })
    }

    fn columns(&self) -> usize {
        self.widths.len()
    }

    /// The cells of the first `count` columns of `row`, `None` for a NULL.
    pub fn cells(&self, row: &[u8], count: usize) -> Result<Vec<Option<Cell>>, RowFault> {
        let mut walk = self.walk(row)?;
        (0..count).map(|column| walk.next_cell(column)).collect()
    }

    /// `row` with only its first `keep` columns; zero-copy unless a binary row's NULL bitmap must shrink.
    pub fn truncated(&self, row: &Bytes, keep: usize) -> Result<Bytes, RowFault> {
        if keep >= self.columns() {
            return Ok(row.clone());
        }
        let mut walk = self.walk(row)?;
        for column in 0..keep {
            walk.next_cell(column)?;
        }
        let end = walk.pos;
        match self.protocol {
            Protocol::Text => Ok(row.slice(..end)),
            Protocol::Binary => Ok(truncated_binary(row, self.columns(), keep, end)),
        }
    }

    fn walk<'r>(&'r self, row: &'r [u8]) -> Result<Walk<'r>, RowFault> {
        let (pos, bitmap) = match self.protocol {
            Protocol::Text => (0, &[][..]),
            Protocol::Binary => {
                let fault = |what| RowFault::malformed(0, what);
                if row.first() != Some(&BINARY_ROW_HEADER) {
                    return Err(fault("a binary row must start with 0x00"));
                }
                let len = null_bitmap_len(self.columns());
                let bitmap = row.get(1..1 + len).ok_or(fault("the NULL bitmap is cut short"))?;
                (1 + len, bitmap)
            }
        };
        Ok(Walk { layout: self, row, bitmap, pos })
    }
}

/// A pass over a row's cells, from the first column on.
struct Walk<'r> {
    layout: &'r RowLayout,
    row: &'r [u8],
    bitmap: &'r [u8],
    pos: usize,
}

impl Walk<'_> {
    fn next_cell(&mut self, column: usize) -> Result<Option<Cell>, RowFault> {
        let fault = |what| RowFault::malformed(column, what);
        let start = self.pos;
        let cell = match self.layout.protocol {
            Protocol::Text => match self.row.get(start) {
                None => return Err(fault("the row ends before this column")),
                Some(&TEXT_NULL) => {
                    self.pos += 1;
                    return Ok(None);
                }
                Some(_) => self.length_encoded(start).ok_or(fault("bad length-encoded value"))?,
            },
            Protocol::Binary if is_null(self.bitmap, column) => return Ok(None),
            Protocol::Binary => match self.layout.widths.get(column) {
                None => return Err(fault("the row has more columns than its definitions")),
                Some(BinaryWidth::Fixed(len)) => Cell { encoded: start..start + len, value: start..start + len },
                Some(BinaryWidth::LengthByte) => {
                    let len = usize::from(*self.row.get(start).ok_or(fault("the row ends before this column"))?);
                    Cell { encoded: start..start + 1 + len, value: start + 1..start + 1 + len }
                }
                Some(BinaryWidth::LengthEncoded) => {
                    self.length_encoded(start).ok_or(fault("bad length-encoded value"))?
                }
                Some(BinaryWidth::Empty) => Cell { encoded: start..start, value: start..start },
            },
        };
        if cell.encoded.end > self.row.len() {
            return Err(fault("the value runs past the end of the row"));
        }
        self.pos = cell.encoded.end;
        Ok(Some(cell))
    }

    /// A length-encoded string at `start`; `None` if its length is malformed.
    fn length_encoded(&self, start: usize) -> Option<Cell> {
        let rest = self.row.get(start..)?;
        if rest.first() == Some(&0xFF) {
            return None;
        }
        let (len, prefix) = lenenc_int(rest)?;
        let value_start = start + prefix;
        let end = value_start.checked_add(usize::try_from(len).ok()?)?;
        Some(Cell { encoded: start..end, value: value_start..end })
    }
}

/// Bytes of the NULL bitmap of a binary row of `columns` columns.
fn null_bitmap_len(columns: usize) -> usize {
    (columns + NULL_BITMAP_OFFSET).div_ceil(8)
}

fn is_null(bitmap: &[u8], column: usize) -> bool {
    let bit = column + NULL_BITMAP_OFFSET;
    bitmap.get(bit / 8).is_some_and(|byte| byte & (1 << (bit % 8)) != 0)
}

/// A binary row of `columns` columns cut to its first `keep`, whose values end at `end`.
fn truncated_binary(row: &Bytes, columns: usize, keep: usize, end: usize) -> Bytes {
    let (old_len, new_len) = (null_bitmap_len(columns), null_bitmap_len(keep));
    let mut bitmap = row[1..1 + new_len].to_vec();
    for column in keep..columns {
        let bit = column + NULL_BITMAP_OFFSET;
        if let Some(byte) = bitmap.get_mut(bit / 8) {
            *byte &= !(1 << (bit % 8));
        }
    }
    if old_len == new_len && bitmap[..] == row[1..1 + new_len] {
        return row.slice(..end);
    }
    let mut out = Vec::with_capacity(1 + new_len + end - 1 - old_len);
    out.push(BINARY_ROW_HEADER);
    out.extend_from_slice(&bitmap);
    out.extend_from_slice(&row[1 + old_len..end]);
    Bytes::from(out)
}

/// One value of a row the proxy writes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum OutCell {
    /// NULL.
    Null,
    /// An exact number, in decimal, to encode as its column's type.
    Number(String),
    /// A value encoded as the column's type, copied from a server's row.
    Copy(Bytes),
}

/// Why a number cannot be written as its column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DoesNotFit {
    /// The column.
    pub column: usize,
}

/// Writes one row of `cells` for columns `defs`.
pub(super) fn write_row(protocol: Protocol, defs: &[ColumnDef], cells: &[OutCell]) -> Result<Bytes, DoesNotFit> {
    let mut out = Vec::new();
    match protocol {
        Protocol::Text => {
            for cell in cells {
                match cell {
                    OutCell::Null => out.push(TEXT_NULL),
                    OutCell::Number(digits) => out.put_lenenc_str(digits.as_bytes()),
                    OutCell::Copy(encoded) => out.extend_from_slice(encoded),
                }
            }
        }
        Protocol::Binary => {
            out.push(BINARY_ROW_HEADER);
            let bitmap_at = out.len();
            out.resize(bitmap_at + null_bitmap_len(cells.len()), 0);
            for (column, (cell, def)) in cells.iter().zip(defs).enumerate() {
                match cell {
                    OutCell::Null => {
                        let bit = column + NULL_BITMAP_OFFSET;
                        out[bitmap_at + bit / 8] |= 1 << (bit % 8);
                    }
                    OutCell::Number(digits) => {
                        put_binary_number(&mut out, def, digits).ok_or(DoesNotFit { column })?;
                    }
                    OutCell::Copy(encoded) => out.extend_from_slice(encoded),
                }
            }
        }
    }
    Ok(Bytes::from(out))
}

/// Whether a number can be written as `def`'s type in a binary row.
pub(super) fn holds_binary_number(def: &ColumnDef) -> bool {
    integer_width(def.column_type()).is_some()
        || matches!(def.column_type(), ColumnType::MYSQL_TYPE_DECIMAL | ColumnType::MYSQL_TYPE_NEWDECIMAL)
}

/// Appends the number `digits` encoded as `def`'s type; `None` if it does not fit.
fn put_binary_number(out: &mut Vec<u8>, def: &ColumnDef, digits: &str) -> Option<()> {
    let Some(width) = integer_width(def.column_type()) else {
        if !holds_binary_number(def) {
            return None;
        }
        out.put_lenenc_str(digits.as_bytes());
        return Some(());
    };
    let value: i128 = digits.parse().ok()?;
    let bits = 8 * width as u32;
    let fits = match def.is_unsigned() {
        true => value >= 0 && value < 1i128 << bits,
        false => value >= -(1i128 << (bits - 1)) && value < 1i128 << (bits - 1),
    };
    fits.then(|| out.put_slice(&value.to_le_bytes()[..width]))
}

fn integer_width(column_type: ColumnType) -> Option<usize> {
    use ColumnType::*;
    match column_type {
        MYSQL_TYPE_TINY => Some(1),
        MYSQL_TYPE_SHORT | MYSQL_TYPE_YEAR => Some(2),
        MYSQL_TYPE_LONG | MYSQL_TYPE_INT24 => Some(4),
        MYSQL_TYPE_LONGLONG => Some(8),
        _ => None,
    }
}
