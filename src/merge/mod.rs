//! Merging one read of both history tables, as pure logic: no sockets, no async.
//!
//! A SELECT that must read both the old and the extended table is sent as two statements, one per table, and the
//! two result sets are merged while they stream to the client, as if both tables were one. Across two servers
//! each statement runs on its table's server and both run at once; on one server both are sent together on the
//! client's connection, which answers them one after the other (the session holds the old side's result while
//! the extended side's streams). Prepared reads are merged only across two servers; on one they are one
//! `UNION ALL` statement. The merge is the same either way:
//!
//! 1. The router derives a [`MergePlan`] from the parsed statement ([`MergePlan::for_select`]) and adds the
//!    plan's [`SideClauses`] to the statement sent to each side: the sort the merge relies on, the pushed-down
//!    `LIMIT offset+count`, and the history id when the client did not select it. A read with no plan
//!    ([`Unsupported`]) is refused across two servers; on one server it is read with one `UNION ALL` statement.
//! 2. The session reads both sides' column definitions, parses them ([`ColumnDef::parse`]) and builds a
//!    [`Merge`], which checks that the two results can be merged exactly (otherwise, before a byte reaches the
//!    client, the read is refused across two servers and answered by the `UNION ALL` statement on one).
//! 3. The session asks [`Merge::step`] what to do: read a row of one side and [`Merge::push`] it (or
//!    [`Merge::finish`] the side at its end of rows), send a row to the client, or stop.
//!
//! Rows stay raw payloads: the merge reads only the values it compares or combines, and passes every row it
//! emits through untouched, except that a trailing history id the proxy added is cut off, and the one row of an
//! aggregate read is encoded anew. It holds at most one row of each side at a time.
//!
//! Each history row appears once: two rows with equal sort keys are one row, and the extended table's copy is
//! the one emitted (docs/routing.md, "Reads of both tables: the merge": an id present in both tables is returned
//! once, from the extended table).

mod aggregate;
mod column;
mod decimal;
mod error;
mod kway;
mod plan;
mod row;
mod select;
mod value;

pub use column::{ColumnDef, KeyKind, Padding};
pub use decimal::Decimal;
pub use error::{MergeError, Unsupported};
pub use kway::{Merge, Step};
pub use plan::{Aggregate, Direction, Limit, MergePlan, SideClauses, SortKey, TableColumns};
pub use row::Protocol;
pub use value::{DateTime, Key};

use std::fmt;

/// Which table a row of a merged read comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The old table, `courseware_studentmodulehistory`.
    Old,
    /// The extended table: its rows win over old copies of the same history row.
    Extended,
}

impl Origin {
    /// Both origins, old first.
    pub const BOTH: [Origin; 2] = [Origin::Old, Origin::Extended];

    /// A position for per-origin arrays.
    pub fn index(self) -> usize {
        match self {
            Origin::Old => 0,
            Origin::Extended => 1,
        }
    }

    /// The other origin.
    pub fn other(self) -> Origin {
        match self {
            Origin::Old => Origin::Extended,
            Origin::Extended => Origin::Old,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Old => "old table",
            Origin::Extended => "extended table",
        })
    }
}

#[cfg(test)]
mod tests;
