//! The text of the statements `migrate` sends: multi-row `INSERT ... ON DUPLICATE KEY UPDATE` statements built
//! into a reused buffer, one value at a time, with no allocation per row or per value.
//!
//! Values arrive from the old table's server in the binary protocol (`mysql_async::Value`) and are written back
//! as SQL literals with the same escaping as mysql_common's [`Value::as_sql`] (which returns a new `String` per
//! value, hence `string_literal`'s copy of its rules working in place). Doubles are written in exponent form with the
//! shortest digits that read back as the same double, so grades are copied exactly.

use std::io::Write as _;

use mysql_async::{Row, Value};

use crate::history::TableName;
use crate::migrate::schema::{COLUMN_LIST, COLUMNS};
use crate::string_literal::{Escaping, write_quoted};

/// What an INSERT of the copy does with a row whose id the table it writes to already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDuplicate {
    /// Overwrites it with the values copied, which are the newer ones (see docs/migration.md): every copy but
    /// the last catch-up of `migrate --back`.
    Overwrite,
    /// Keeps it: once edxapp writes the old table alone again, the old table's row is the newer one
    /// (`migrate --back` with the flags back on the old table alone).
    Keep,
}

impl OnDuplicate {
    /// The ` ON DUPLICATE KEY UPDATE ...` clause that does it.
    pub fn clause(self) -> String {
        match self {
            OnDuplicate::Overwrite => on_duplicate_key_update(),
            // A no-op update (the id is the duplicate one): unlike INSERT IGNORE, it leaves every other error (a
            // value out of range) an error.
            OnDuplicate::Keep => " ON DUPLICATE KEY UPDATE `id` = VALUES(`id`)".to_owned(),
        }
    }
}

/// Builds the copy's INSERT statements into the caller's buffer.
#[derive(Debug, Clone)]
pub struct InsertBuilder {
    prefix: String,
    suffix: String,
    escaping: Escaping,
}

impl InsertBuilder {
    /// INSERTs into `table` (the extended table, or the old one copying back), escaping strings as the session
    /// that runs them reads them, doing `on_duplicate` with rows already there.
    pub fn new(table: &TableName, escaping: Escaping, on_duplicate: OnDuplicate) -> InsertBuilder {
        InsertBuilder {
            prefix: format!("INSERT INTO {} ({COLUMN_LIST}) VALUES ", table.quoted()),
            suffix: on_duplicate.clause(),
            escaping,
        }
    }

    /// Empties `buf` and starts a statement in it.
    pub fn start(&self, buf: &mut Vec<u8>) {
        buf.clear();
        buf.extend_from_slice(self.prefix.as_bytes());
    }

    /// Whether `buf` holds no row yet.
    pub fn is_empty(&self, buf: &[u8]) -> bool {
        buf.len() <= self.prefix.len()
    }

    /// Appends one row, whose values are in [`COLUMNS`] order.
    pub fn push_row(&self, buf: &mut Vec<u8>, row: &Row) {
        if !self.is_empty(buf) {
            buf.push(b',');
        }
        buf.push(b'(');
        for index in 0..COLUMNS.len() {
            if index > 0 {
                buf.push(b',');
            }
            match row.as_ref(index) {
                Some(value) => write_value(buf, value, self.escaping),
                None => buf.extend_from_slice(b"NULL"),
            }
        }
        buf.push(b')');
    }

    /// Ends the statement in `buf`.
    pub fn finish(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(self.suffix.as_bytes());
    }
}

/// ` ON DUPLICATE KEY UPDATE` every column but `id` from the row being inserted: a row already copied is
/// overwritten by the old table's current values, which are the newer ones (see docs/migration.md).
pub fn on_duplicate_key_update() -> String {
    let updates: Vec<String> = COLUMNS
        .iter()
        .filter(|column| **column != "id")
        .map(|column| format!("`{column}` = VALUES(`{column}`)"))
        .collect();
    format!(" ON DUPLICATE KEY UPDATE {}", updates.join(", "))
}

/// Appends `value` as an SQL literal.
pub fn write_value(buf: &mut Vec<u8>, value: &Value, escaping: Escaping) {
    // Writing to a Vec cannot fail.
    let _ = match *value {
        Value::NULL => buf.write_all(b"NULL"),
        Value::Int(x) => write!(buf, "{x}"),
        Value::UInt(x) => write!(buf, "{x}"),
        Value::Float(x) => write!(buf, "{x:e}"),
        Value::Double(x) => write!(buf, "{x:e}"),
        Value::Date(year, month, day, hour, minute, second, micros) => {
            write!(buf, "'{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}.{micros:06}'")
        }
        Value::Time(negative, days, hours, minutes, seconds, micros) => {
            let sign = if negative { "-" } else { "" };
            let hours = days * 24 + u32::from(hours);
            write!(buf, "'{sign}{hours:03}:{minutes:02}:{seconds:02}.{micros:06}'")
        }
        Value::Bytes(ref bytes) => {
            write_quoted(buf, bytes, escaping);
            Ok(())
        }
    };
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn literal(value: &Value, no_backslash_escapes: bool) -> String {
        let mut buf = Vec::new();
        write_value(&mut buf, value, Escaping::with_no_backslash_escapes(no_backslash_escapes));
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn special_characters_are_escaped() {
        let value = Value::Bytes(b"it's \"a\\b\"\n\r\0\x1a".to_vec());
        assert_eq!(literal(&value, false), r#"'it\'s \"a\\b\"\n\r\0\Z'"#);
        assert_eq!(literal(&value, true), "'it''s \"a\\b\"\n\r\0\x1a'");
    }

    #[test]
    fn datetimes_keep_their_microseconds_and_doubles_their_digits() {
        assert_eq!(literal(&Value::Date(2024, 3, 4, 10, 1, 7, 121_111), false), "'2024-03-04 10:01:07.121111'");
        assert_eq!(literal(&Value::Date(2024, 3, 4, 10, 1, 7, 0), false), "'2024-03-04 10:01:07.000000'");
        assert_eq!(literal(&Value::Double(0.1 + 0.2), false), "3.0000000000000004e-1");
        assert_eq!(literal(&Value::Double(1.0), false), "1e0");
        assert_eq!(literal(&Value::NULL, false), "NULL");
        assert_eq!(literal(&Value::Int(-42), false), "-42");
    }

    #[test]
    fn rows_are_joined_into_one_statement() {
        let table: TableName = "edxapp_csmh.h".parse().unwrap();
        let builder = InsertBuilder::new(&table, Escaping::Backslashes, OnDuplicate::Overwrite);
        let mut buf = Vec::new();
        builder.start(&mut buf);
        assert!(builder.is_empty(&buf));
        let columns: std::sync::Arc<[mysql_async::Column]> = COLUMNS
            .iter()
            .map(|name| {
                mysql_async::Column::new(mysql_async::consts::ColumnType::MYSQL_TYPE_STRING).with_name(name.as_bytes())
            })
            .collect();
        let row = |id: i64| {
            mysql_common::row::new_row(
                vec![
                    Value::NULL,
                    Value::Date(2024, 1, 2, 3, 4, 5, 6),
                    Value::Bytes(b"{}".to_vec()),
                    Value::Double(0.5),
                    Value::Double(1.0),
                    Value::Int(id),
                    Value::Int(7),
                ],
                columns.clone(),
            )
        };
        builder.push_row(&mut buf, &row(1));
        builder.push_row(&mut buf, &row(2));
        builder.finish(&mut buf);
        let sql = String::from_utf8(buf).unwrap();
        assert!(sql.starts_with("INSERT INTO `edxapp_csmh`.`h` (`version`, `created`, `state`, `grade`, `max_grade`, `id`, `student_module_id`) VALUES (NULL,'2024-01-02 03:04:05.000006','{}',5e-1,1e0,1,7),(NULL,"), "{sql}");
        assert!(sql.ends_with("ON DUPLICATE KEY UPDATE `version` = VALUES(`version`), `created` = VALUES(`created`), `state` = VALUES(`state`), `grade` = VALUES(`grade`), `max_grade` = VALUES(`max_grade`), `student_module_id` = VALUES(`student_module_id`)"), "{sql}");
    }

    proptest! {
        #[test]
        fn strings_are_escaped_as_mysql_common_escapes_them(text in any::<String>(), no_backslash_escapes: bool) {
            let value = Value::Bytes(text.into_bytes());
            prop_assert_eq!(literal(&value, no_backslash_escapes), value.as_sql(no_backslash_escapes));
        }

        #[test]
        fn integers_are_written_as_mysql_common_writes_them(x: i64, y: u64) {
            prop_assert_eq!(literal(&Value::Int(x), false), Value::Int(x).as_sql(false));
            prop_assert_eq!(literal(&Value::UInt(y), false), Value::UInt(y).as_sql(false));
        }

        #[test]
        fn doubles_read_back_exactly(x in any::<f64>().prop_filter("finite", |x| x.is_finite())) {
            prop_assert_eq!(literal(&Value::Double(x), false).parse::<f64>().unwrap().to_bits(), x.to_bits());
        }
    }
}
