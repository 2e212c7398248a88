//! The column definitions of a result, as far as merging needs them: each column's type, sign, collation and
//! scale, and what kind of sort key its values make.
//!
//! Definitions are parsed with mysql_common's `Column` deserializer (never serialized back: the proxy forwards
//! the servers' own definition packets). A string column is only ordered when its own collation orders by bytes
//! (binary, or `_bin`); the proxy never imitates a linguistic collation such as `utf8mb4_general_ci`.

use mysql_common::constants::{ColumnFlags, ColumnType};
use mysql_common::io::ParseBuf;
use mysql_common::packets::Column;

use super::Origin;
use super::error::{MergeError, Unsupported};

/// One column of a result set, from its column definition packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    name: String,
    column_type: ColumnType,
    flags: ColumnFlags,
    collation: u16,
    decimals: u8,
}

impl ColumnDef {
    /// Reads a column definition packet's payload, as sent by the `origin` side.
    pub fn parse(payload: &[u8], origin: Origin) -> Result<ColumnDef, MergeError> {
        let column: Column = ParseBuf(payload).parse(()).map_err(|_| MergeError::ColumnDefinition { origin })?;
        Ok(ColumnDef {
            name: column.name_str().into_owned(),
            column_type: column.column_type(),
            flags: column.flags(),
            collation: column.character_set(),
            decimals: column.decimals(),
        })
    }

    /// The column's name in the result (its alias, if it has one).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The type the server reports.
    pub fn column_type(&self) -> ColumnType {
        self.column_type
    }

    /// Whether an integer column is unsigned.
    pub fn is_unsigned(&self) -> bool {
        self.flags.contains(ColumnFlags::UNSIGNED_FLAG)
    }

    /// The collation id (the protocol calls it the character set).
    pub fn collation(&self) -> u16 {
        self.collation
    }

    /// Digits after the decimal point, for DECIMAL columns.
    pub fn decimals(&self) -> u8 {
        self.decimals
    }

    /// Whether rows of this column and `other` encode their values alike in the binary protocol, so the client
    /// decodes either with one definition.
    pub fn same_binary_encoding(&self, other: &ColumnDef) -> bool {
        let lenenc = |def: &ColumnDef| binary_width(def.column_type) == Some(BinaryWidth::LengthEncoded);
        (lenenc(self) && lenenc(other))
            || (self.column_type == other.column_type && self.is_unsigned() == other.is_unsigned())
    }

    /// The type's name, for messages.
    pub fn type_name(&self) -> String {
        format!("{:?}", self.column_type).trim_start_matches("MYSQL_TYPE_").to_owned()
    }
}

/// How the binary protocol encodes a value of some type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BinaryWidth {
    /// Always this many bytes.
    Fixed(usize),
    /// A length byte, then that many bytes (dates, times).
    LengthByte,
    /// A length-encoded string (strings, decimals, ...).
    LengthEncoded,
    /// Nothing: the NULL type only has NULL values, which live in the NULL bitmap.
    Empty,
}

/// The binary protocol's encoding of `column_type`; `None` for types that never appear in a result.
pub(super) fn binary_width(column_type: ColumnType) -> Option<BinaryWidth> {
    use ColumnType::*;
    Some(match column_type {
        MYSQL_TYPE_TINY => BinaryWidth::Fixed(1),
        MYSQL_TYPE_SHORT | MYSQL_TYPE_YEAR => BinaryWidth::Fixed(2),
        MYSQL_TYPE_LONG | MYSQL_TYPE_INT24 | MYSQL_TYPE_FLOAT => BinaryWidth::Fixed(4),
        MYSQL_TYPE_LONGLONG | MYSQL_TYPE_DOUBLE => BinaryWidth::Fixed(8),
        MYSQL_TYPE_DATE
        | MYSQL_TYPE_NEWDATE
        | MYSQL_TYPE_DATETIME
        | MYSQL_TYPE_DATETIME2
        | MYSQL_TYPE_TIMESTAMP
        | MYSQL_TYPE_TIMESTAMP2
        | MYSQL_TYPE_TIME
        | MYSQL_TYPE_TIME2 => BinaryWidth::LengthByte,
        MYSQL_TYPE_DECIMAL
        | MYSQL_TYPE_NEWDECIMAL
        | MYSQL_TYPE_VARCHAR
        | MYSQL_TYPE_VAR_STRING
        | MYSQL_TYPE_STRING
        | MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB
        | MYSQL_TYPE_BLOB
        | MYSQL_TYPE_ENUM
        | MYSQL_TYPE_SET
        | MYSQL_TYPE_BIT
        | MYSQL_TYPE_GEOMETRY
        | MYSQL_TYPE_JSON
        | MYSQL_TYPE_VECTOR => BinaryWidth::LengthEncoded,
        MYSQL_TYPE_NULL => BinaryWidth::Empty,
        MYSQL_TYPE_TYPED_ARRAY | MYSQL_TYPE_UNKNOWN => return None,
    })
}

/// How a string collation treats trailing spaces when comparing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Padding {
    /// Every byte counts (`binary`, the `_nopad_bin` and `_0900_bin` collations).
    None,
    /// The shorter string compares as if padded with spaces (`utf8mb4_bin`, `latin1_bin`, ...).
    Space,
    /// Not known (the server reported the result character set's collation): strings compare by bytes, which
    /// both rules agree with unless a string ends with a space or holds a byte below it; such a string is
    /// refused when read.
    Unknown,
}

/// How the values of a column compare, as a sort key or an aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// An integer type (TINYINT to BIGINT, YEAR), compared as a number.
    Integer {
        /// Read as unsigned.
        unsigned: bool,
    },
    /// DECIMAL, compared exactly.
    Decimal,
    /// FLOAT.
    Float,
    /// DOUBLE.
    Double,
    /// DATE.
    Date,
    /// DATETIME or TIMESTAMP.
    DateTime,
    /// TIME, which may be negative and exceed a day.
    Time,
    /// A string whose collation orders by bytes.
    Bytes(Padding),
}

/// Values of kinds in one family compare with each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Exact,
    Approximate,
    Temporal,
    Time,
    Bytes(Padding),
}

impl KeyKind {
    /// The kind of `def`'s values, or why the merge cannot compare them.
    pub fn of(def: &ColumnDef) -> Result<KeyKind, Unsupported> {
        use ColumnType::*;
        if def.flags.intersects(ColumnFlags::ENUM_FLAG | ColumnFlags::SET_FLAG) {
            // ENUM and SET sort by their definition's order, which the result does not carry.
            let type_name = if def.flags.contains(ColumnFlags::ENUM_FLAG) { "ENUM" } else { "SET" };
            return Err(Unsupported::ColumnType { column: def.name.clone(), type_name: type_name.into() });
        }
        Ok(match def.column_type {
            MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_LONG | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONGLONG
            | MYSQL_TYPE_YEAR => KeyKind::Integer { unsigned: def.is_unsigned() },
            MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => KeyKind::Decimal,
            MYSQL_TYPE_FLOAT => KeyKind::Float,
            MYSQL_TYPE_DOUBLE => KeyKind::Double,
            MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => KeyKind::Date,
            MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 | MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => {
                KeyKind::DateTime
            }
            MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => KeyKind::Time,
            MYSQL_TYPE_VARCHAR
            | MYSQL_TYPE_VAR_STRING
            | MYSQL_TYPE_STRING
            | MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB
            | MYSQL_TYPE_BLOB => KeyKind::Bytes(byte_order(def)?),
            _ => return Err(Unsupported::ColumnType { column: def.name.clone(), type_name: def.type_name() }),
        })
    }

    /// Whether values of this kind and `other` compare with each other (say an INT and a BIGINT UNSIGNED, or a
    /// DATE and a DATETIME).
    pub fn compares_with(self, other: KeyKind) -> bool {
        self.family() == other.family()
    }

    /// A word for messages.
    pub fn describe(self) -> &'static str {
        match self.family() {
            Family::Exact => "an exact number",
            Family::Approximate => "a floating-point number",
            Family::Temporal => "a date",
            Family::Time => "a time",
            Family::Bytes(Padding::None) => "a binary string",
            Family::Bytes(Padding::Space) => "a space-padded _bin string",
            Family::Bytes(Padding::Unknown) => "a _bin or binary string",
        }
    }

    /// Whether the kind holds an exact number (integer or DECIMAL), as COUNT and SUM produce.
    pub fn is_exact_number(self) -> bool {
        self.family() == Family::Exact
    }

    fn family(self) -> Family {
        match self {
            KeyKind::Integer { .. } | KeyKind::Decimal => Family::Exact,
            KeyKind::Float | KeyKind::Double => Family::Approximate,
            KeyKind::Date | KeyKind::DateTime => Family::Temporal,
            KeyKind::Time => Family::Time,
            KeyKind::Bytes(padding) => Family::Bytes(padding),
        }
    }
}

/// Collation names, for messages.
const COLLATION_NAMES: [(u16, &str); 14] = [
    (8, "latin1_swedish_ci"),
    (33, "utf8mb3_general_ci"),
    (45, "utf8mb4_general_ci"),
    (46, "utf8mb4_bin"),
    (47, "latin1_bin"),
    (63, "binary"),
    (83, "utf8mb3_bin"),
    (192, "utf8mb3_unicode_ci"),
    (224, "utf8mb4_unicode_ci"),
    (255, "utf8mb4_0900_ai_ci"),
    (309, "utf8mb4_0900_bin"),
    (1070, "utf8mb4_nopad_bin"),
    (1071, "latin1_nopad_bin"),
    (1107, "utf8mb3_nopad_bin"),
];

/// The byte-ordered collations whose padding is known when the server reports them.
const BYTE_ORDERED: [(u16, Padding); 7] = [
    (46, Padding::Space),
    (47, Padding::Space),
    (83, Padding::Space),
    (309, Padding::None),
    (1070, Padding::None),
    (1071, Padding::None),
    (1107, Padding::None),
];

/// How a string column of `def` orders, if by bytes.
///
/// A column definition carries the collation of the connection's result character set, not the column's own:
/// a `utf8mb4_bin` column comes as `utf8mb4_general_ci` when results are in utf8mb4, and every column comes as
/// `binary` when results are binary. What tells that the column's own collation orders by bytes (it is
/// `binary` or a `_bin` collation) is the BINARY flag. Its padding is only known when the server reports the
/// column's own collation (results not converted); otherwise values compare by bytes, and a value on which the
/// two padding rules disagree is refused when read. UTF-8's byte order is its code point order, so converted
/// `_bin` strings keep their order, except a latin1 one's characters 0x80–0x9F (cp1252), which the merge would
/// place after the other accented letters.
fn byte_order(def: &ColumnDef) -> Result<Padding, Unsupported> {
    if !def.flags.contains(ColumnFlags::BINARY_FLAG) {
        let name = COLLATION_NAMES.iter().find(|(id, _)| *id == def.collation).map(|(_, name)| *name);
        let collation = match name {
            Some(name) => format!("{name} ({})", def.collation),
            None => format!("id {}", def.collation),
        };
        return Err(Unsupported::Collation { column: def.name.clone(), collation });
    }
    let known = BYTE_ORDERED.iter().find(|(id, _)| *id == def.collation);
    Ok(known.map_or(Padding::Unknown, |(_, padding)| *padding))
}
