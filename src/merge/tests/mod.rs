//! Tests of the merge: byte fixtures for column definitions and rows in both protocols, and a driver that plays
//! the session's part against two lists of rows.

mod aggregates;
mod decimals;
mod malformed;
mod merging;
mod planning;
mod properties;
mod values;

use bytes::Bytes;
use mysql_common::constants::{ColumnFlags, ColumnType};
use mysql_common::io::BufMutExt;
use sqlparser::ast::Statement;
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use super::*;

/// Collation ids used by the fixtures.
const BINARY: u16 = 63;
const UTF8MB4_BIN: u16 = 46;
const UTF8MB4_GENERAL_CI: u16 = 45;
const UTF8MB4_NOPAD_BIN: u16 = 1070;

/// A column definition packet's payload, encoded by hand as a server sends it.
fn definition_packet(name: &str, column_type: ColumnType, flags: ColumnFlags, collation: u16, decimals: u8) -> Vec<u8> {
    let mut p = Vec::new();
    for text in ["def", "edxapp", "h", "courseware_studentmodulehistory", name, name] {
        p.put_lenenc_str(text.as_bytes());
    }
    p.push(0x0C);
    p.extend_from_slice(&collation.to_le_bytes());
    p.extend_from_slice(&255u32.to_le_bytes());
    p.push(column_type as u8);
    p.extend_from_slice(&flags.bits().to_le_bytes());
    p.push(decimals);
    p.extend_from_slice(&[0, 0]);
    p
}

/// A column definition as parsed from its packet.
fn def(name: &str, column_type: ColumnType, flags: ColumnFlags, collation: u16, decimals: u8) -> ColumnDef {
    ColumnDef::parse(&definition_packet(name, column_type, flags, collation, decimals), Origin::Old).unwrap()
}

fn bigint_unsigned(name: &str) -> ColumnDef {
    def(name, ColumnType::MYSQL_TYPE_LONGLONG, ColumnFlags::UNSIGNED_FLAG | ColumnFlags::NOT_NULL_FLAG, BINARY, 0)
}

fn int(name: &str) -> ColumnDef {
    def(name, ColumnType::MYSQL_TYPE_LONG, ColumnFlags::NOT_NULL_FLAG, BINARY, 0)
}

fn datetime6(name: &str) -> ColumnDef {
    def(name, ColumnType::MYSQL_TYPE_DATETIME, ColumnFlags::BINARY_FLAG, BINARY, 6)
}

fn double(name: &str) -> ColumnDef {
    def(name, ColumnType::MYSQL_TYPE_DOUBLE, ColumnFlags::empty(), BINARY, 31)
}

fn decimal(name: &str, scale: u8) -> ColumnDef {
    def(name, ColumnType::MYSQL_TYPE_NEWDECIMAL, ColumnFlags::empty(), BINARY, scale)
}

/// A TEXT column of a linguistic collation, reported as `collation`.
fn text_column(name: &str, collation: u16) -> ColumnDef {
    def(name, ColumnType::MYSQL_TYPE_BLOB, ColumnFlags::BLOB_FLAG, collation, 0)
}

/// A VARCHAR column of a `_bin` collation, reported as `collation` (its own, or the results' character set's).
fn bin_varchar(name: &str, collation: u16) -> ColumnDef {
    def(name, ColumnType::MYSQL_TYPE_VAR_STRING, ColumnFlags::BINARY_FLAG, collation, 0)
}

fn varbinary(name: &str) -> ColumnDef {
    def(name, ColumnType::MYSQL_TYPE_VAR_STRING, ColumnFlags::BINARY_FLAG, BINARY, 0)
}

/// A text-protocol row: each value length-encoded, `None` as NULL.
fn text_row(values: &[Option<&[u8]>]) -> Bytes {
    let mut p = Vec::new();
    for value in values {
        match value {
            Some(v) => p.put_lenenc_str(v),
            None => p.push(0xFB),
        }
    }
    Bytes::from(p)
}

/// A binary-protocol row of already encoded values, `None` as NULL.
fn binary_row(values: &[Option<Vec<u8>>]) -> Bytes {
    let mut p = vec![0x00];
    let bitmap_at = p.len();
    p.resize(bitmap_at + (values.len() + 9) / 8, 0);
    for (i, value) in values.iter().enumerate() {
        match value {
            Some(v) => p.extend_from_slice(v),
            None => p[bitmap_at + (i + 2) / 8] |= 1 << ((i + 2) % 8),
        }
    }
    Bytes::from(p)
}

/// A length-encoded string, as binary rows carry strings and decimals.
fn lenenc(value: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.put_lenenc_str(value);
    p
}

/// The parsed SELECT of `sql`.
fn query(sql: &str) -> sqlparser::ast::Query {
    match Parser::parse_sql(&MySqlDialect {}, sql).unwrap().remove(0) {
        Statement::Query(query) => *query,
        other => panic!("not a query: {other}"),
    }
}

/// The plan of `sql`, a read of the history table.
fn plan(sql: &str) -> Result<MergePlan, Unsupported> {
    MergePlan::for_select(&query(sql), &TableColumns::HISTORY)
}

/// What the driver saw: the rows the client got, and how many rows it read from each side.
#[derive(Debug, Default, PartialEq, Eq)]
struct Run {
    rows: Vec<Bytes>,
    read: [usize; 2],
}

/// Plays the session: answers each step from the two lists of rows until the merge is done.
fn drive(merge: &mut Merge, old: &[Bytes], extended: &[Bytes]) -> Result<Run, MergeError> {
    let mut run = Run::default();
    let sides = [old, extended];
    loop {
        match merge.step()? {
            Step::Row(row) => run.rows.push(row),
            Step::Read(origin) => {
                let i = origin.index();
                match sides[i].get(run.read[i]) {
                    Some(row) => {
                        run.read[i] += 1;
                        merge.push(origin, row.clone())?;
                    }
                    None => merge.finish(origin)?,
                }
            }
            Step::Done => return Ok(run),
        }
    }
}
