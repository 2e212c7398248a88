//! One history table on its server, and what the migration commands ask of it: its id bounds and size, and the
//! checksums the comparison is made of, computed by the server so that rows never cross the network in bulk.

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::ids::IdRange;
use crate::history::TableName;
use crate::migrate::{ER_NO_SUCH_TABLE, MigrateError};

/// A per-row hash of the seven history columns, named so that the tables' different column order does not
/// matter: 64 bits of the MD5 of the values joined by `#`, after a marker of which values are NULL (so NULL and
/// an empty string differ) and the lengths of the text columns (so a `#` inside a value cannot shift the
/// others). Text is converted to utf8mb4 first, so tables in different character sets hash the same text alike;
/// the integer columns (INT in the old table, BIGINT UNSIGNED in the extended one) print alike; `created` is
/// printed with microseconds whatever its column's precision, so an old table whose `created` is a `datetime`
/// without fractional seconds (as installs from before Django 1.8 have it) hashes like the extended table's
/// `datetime(6)` copy of it. `state` enters by its own MD5: joined whole, a state longer than the server's
/// `max_allowed_packet` made `CONCAT_WS` NULL (with a warning), and `BIT_XOR` skips a NULL, so such a row was
/// compared by nothing.
const ROW_HASH: &str = "CAST(CONV(LEFT(MD5(CONCAT_WS('#', `id`, CONVERT(`version` USING utf8mb4), \
     CAST(`created` AS DATETIME(6)), \
     MD5(CONVERT(`state` USING utf8mb4)), `grade`, `max_grade`, `student_module_id`, \
     CONCAT(ISNULL(`version`), ISNULL(`state`), ISNULL(`grade`), ISNULL(`max_grade`)), \
     CHAR_LENGTH(`version`), CHAR_LENGTH(`state`))), 16), 16, 10) AS UNSIGNED)";

/// The statement [`Table::sum`] sends: the row count, checksum, smallest and largest id of `table`'s ids in
/// `range`, read as `read` says (and printed by `truncate-old`'s plan).
pub fn sum_sql(table: &TableName, range: IdRange, read: Read) -> String {
    let lock = if read == Read::Locking { " FOR UPDATE" } else { "" };
    format!(
        "SELECT COUNT(*), COALESCE(BIT_XOR({ROW_HASH}), 0), MIN(`id`), MAX(`id`) FROM {} WHERE `id` BETWEEN {} AND {}{lock}",
        table.quoted(),
        range.first,
        range.last
    )
}

/// How a chunk's rows are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// A plain consistent read that blocks no one.
    Plain,
    /// `FOR UPDATE`: the rows stay locked until the caller's transaction ends, so nothing can change them
    /// between the check and what the caller does next. The gaps between them are locked too (so no row can be
    /// inserted there) only under REPEATABLE READ or SERIALIZABLE, which the caller must set.
    Locking,
}

/// The row count and order-independent checksum of the rows in one id range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sum {
    /// How many rows the range holds.
    pub rows: u64,
    /// The XOR of the rows' hashes: equal sets of rows give equal sums whatever order they are read in.
    pub hash: u64,
    /// The smallest and largest id present; `None` when the range is empty.
    pub ids: Option<IdRange>,
}

impl Sum {
    /// Whether `other` holds the same rows (same count, same checksum).
    pub fn matches(&self, other: &Sum) -> bool {
        self.rows == other.rows && self.hash == other.hash
    }
}

/// Statistics the server keeps about a table, cheap to read even for billions of rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// The storage engine's estimate of the row count (InnoDB's can be off by tens of percent).
    pub estimated_rows: Option<u64>,
    /// The id the next insert without an id gets (`AUTO_INCREMENT`).
    pub next_id: Option<u64>,
}

/// Which of the two history tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The old table, on the `edxapp` backend.
    Old,
    /// The extended table, on the `csmh` backend.
    Extended,
}

impl Role {
    /// The `[backends.*]` the table lives on.
    pub fn backend(self) -> &'static str {
        match self {
            Role::Old => "edxapp",
            Role::Extended => "csmh",
        }
    }

    /// What to do when the table does not exist.
    fn when_missing(self) -> &'static str {
        match self {
            Role::Old => "check `old_table` in [history]",
            Role::Extended => "run `csmh-proxy init` to create it",
        }
    }
}

/// A history table and the connection that reads it.
pub struct Table<'a> {
    /// Which table it is.
    pub role: Role,
    /// The connection to that server.
    pub conn: &'a mut Conn,
    /// The table.
    pub name: &'a TableName,
}

impl Table<'_> {
    /// The smallest and largest id, up to `at_most` when given; `None` when there is no such row. Instant on the
    /// primary key whatever the table's size.
    pub async fn bounds(&mut self, at_most: Option<u64>) -> Result<Option<IdRange>, MigrateError> {
        let condition = at_most.map_or(String::new(), |last| format!(" WHERE `id` <= {last}"));
        let sql = format!("SELECT MIN(`id`), MAX(`id`) FROM {}{condition}", self.name.quoted());
        let (min, max): (Option<i64>, Option<u64>) = self.first_row(&sql, "read its smallest and largest id").await?;
        match (min, max) {
            (Some(min), Some(max)) => Ok(Some(IdRange::new(self.non_negative(min)?, max))),
            _ => Ok(None),
        }
    }

    /// The exact number of rows (a scan of the whole table: minutes on billions of rows).
    pub async fn count(&mut self) -> Result<u64, MigrateError> {
        let sql = format!("SELECT COUNT(*) FROM {}", self.name.quoted());
        self.first_row(&sql, "count its rows").await
    }

    /// The exact number of rows, and of those how many have an id up to `last`, in one scan (so the second is
    /// never above the first, whatever is written meanwhile).
    pub async fn count_split(&mut self, last: u64) -> Result<(u64, u64), MigrateError> {
        let sql =
            format!("SELECT COUNT(*), CAST(COALESCE(SUM(`id` <= {last}), 0) AS UNSIGNED) FROM {}", self.name.quoted());
        self.first_row(&sql, "count its rows").await
    }

    /// The server's statistics of the table; `None` when the table does not exist.
    pub async fn stats(&mut self) -> Result<Option<Stats>, MigrateError> {
        let sql = "SELECT `TABLE_ROWS`, `AUTO_INCREMENT` FROM information_schema.`TABLES` \
                   WHERE `TABLE_SCHEMA` = ? AND `TABLE_NAME` = ?";
        let row: Option<(Option<u64>, Option<u64>)> = self
            .conn
            .exec_first(sql, (self.name.schema(), self.name.table()))
            .await
            .map_err(|source| self.error("read its statistics", source))?;
        Ok(row.map(|(estimated_rows, next_id)| Stats { estimated_rows, next_id }))
    }

    /// The row count and checksum of the ids in `range`.
    pub async fn sum(&mut self, range: IdRange, read: Read) -> Result<Sum, MigrateError> {
        let sql = sum_sql(self.name, range, read);
        let (rows, hash, min, max): (u64, u64, Option<u64>, Option<u64>) =
            self.first_row(&sql, &format!("checksum {range}")).await?;
        let ids = min.zip(max).map(|(min, max)| IdRange::new(min, max));
        Ok(Sum { rows, hash, ids })
    }

    /// Each row's id and hash in `range`, by id: for ranges small enough to compare row by row.
    pub async fn row_hashes(&mut self, range: IdRange) -> Result<Vec<(u64, u64)>, MigrateError> {
        let sql = format!(
            "SELECT `id`, {ROW_HASH} FROM {} WHERE `id` BETWEEN {} AND {} ORDER BY `id`",
            self.name.quoted(),
            range.first,
            range.last
        );
        self.conn.query(sql).await.map_err(|source| self.error(&format!("read the rows of {range}"), source))
    }

    /// Runs `sql` (on this connection) for its effect.
    pub async fn execute(&mut self, sql: &str, what: &str) -> Result<(), MigrateError> {
        self.conn.query_drop(sql).await.map_err(|source| self.error(what, source))
    }

    /// Runs `sql` and returns how many rows it changed.
    pub async fn affected(&mut self, sql: &str, what: &str) -> Result<u64, MigrateError> {
        self.execute(sql, what).await?;
        Ok(self.conn.affected_rows())
    }

    async fn first_row<T: mysql_async::prelude::FromRow + Send + 'static>(
        &mut self,
        sql: &str,
        what: &str,
    ) -> Result<T, MigrateError> {
        let row = self.conn.query_first(sql).await.map_err(|source| self.error(what, source))?;
        row.ok_or_else(|| {
            MigrateError::Refused(format!("{}: {what}: the server answered with no row", self.role.backend()))
        })
    }

    /// Old ids below zero cannot be copied into the extended table's unsigned ids, so no comparison or drain
    /// can account for them.
    fn non_negative(&self, id: i64) -> Result<u64, MigrateError> {
        u64::try_from(id).map_err(|_| {
            MigrateError::Refused(format!(
                "{} has ids below 0 (the smallest is {id}): the extended table's ids are unsigned, so these rows \
                 cannot have been copied; move or delete them by hand first",
                self.name
            ))
        })
    }

    /// Refuses, saying what to do, unless the table exists.
    pub async fn require(&mut self) -> Result<(), MigrateError> {
        match self.stats().await? {
            Some(_) => Ok(()),
            None => Err(self.missing()),
        }
    }

    /// The refusal for a table that does not exist.
    fn missing(&self) -> MigrateError {
        MigrateError::Refused(format!(
            "{} does not exist on [backends.{}]: {}",
            self.name,
            self.role.backend(),
            self.role.when_missing()
        ))
    }

    /// The error for a failed statement: a missing table is said plainly, with what to do.
    pub fn error(&self, what: &str, source: mysql_async::Error) -> MigrateError {
        match &source {
            mysql_async::Error::Server(error) if error.code == ER_NO_SUCH_TABLE => self.missing(),
            _ => MigrateError::Query { backend: self.role.backend(), what: format!("{}: {what}", self.name), source },
        }
    }
}
