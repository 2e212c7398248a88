//! What can go wrong merging a read across two servers: a statement or result shape the merge cannot answer
//! exactly ([`Unsupported`], which the client gets as error 1235 before any row), and results that break the
//! protocol or the merge's expectations ([`MergeError`]).

use super::Origin;

/// Why a read of both tables on two servers cannot be merged exactly; the client is refused rather than
/// answered wrongly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    /// A clause or construct whose result the merge would have to compute itself, e.g. `WITH`, `UNION`,
    /// `INTO`, `FOR UPDATE`, `SQL_CALC_FOUND_ROWS`.
    #[error("{0} cannot be merged across two servers")]
    Clause(&'static str),
    /// The history table is joined with other tables, or is not read alone.
    #[error("a read of both tables across two servers must have the history table alone in FROM")]
    NotAlone,
    /// GROUP BY: groups would have to be merged across both results.
    #[error("GROUP BY cannot be merged across two servers")]
    GroupBy,
    /// HAVING: a condition on aggregates the servers only see halves of.
    #[error("HAVING cannot be merged across two servers")]
    Having,
    /// A window function (`... OVER (...)`): each server sees only its half of the window.
    #[error("window functions cannot be merged across two servers")]
    WindowFunction,
    /// An aggregate whose halves cannot be combined exactly (AVG, GROUP_CONCAT, STD, ...).
    #[error("{function}() cannot be combined from two servers; COUNT, SUM, MIN and MAX can")]
    Aggregate {
        /// The function's name as written.
        function: String,
    },
    /// An aggregate over distinct values, e.g. `COUNT(DISTINCT x)`.
    #[error("{function}(DISTINCT ...) cannot be combined from two servers")]
    AggregateDistinct {
        /// The function's name as written.
        function: String,
    },
    /// An expression computed from an aggregate, e.g. `COUNT(*) + 1` or `IFNULL(SUM(x), 0)`.
    #[error("an expression over an aggregate cannot be combined from two servers; select the aggregate alone")]
    ExpressionOverAggregate,
    /// A select-list item that is not an aggregate next to aggregates, without GROUP BY.
    #[error("`{item}` next to aggregates cannot be combined from two servers")]
    NotAnAggregate {
        /// The item as written.
        item: String,
    },
    /// ORDER BY on an aggregate read: it has one row, so the merge does not order it.
    #[error("ORDER BY with aggregates cannot be merged across two servers")]
    AggregateWithOrderBy,
    /// An ORDER BY expression that is not a column of the select list, so the merge could not compare it.
    #[error("ORDER BY {expr} is not a column of the select list; the merge can only compare selected columns")]
    OrderByNotSelected {
        /// The expression as written.
        expr: String,
    },
    /// An ORDER BY name that matches several select-list columns.
    #[error("ORDER BY {name} is ambiguous: several selected columns have that name")]
    AmbiguousOrderBy {
        /// The name as written.
        name: String,
    },
    /// `ORDER BY n` with no n-th column in the select list.
    #[error("ORDER BY {position} is not a position in the select list")]
    OrderByPosition {
        /// The position as written.
        position: String,
    },
    /// An ORDER BY option MySQL's sort does not have, e.g. `NULLS LAST`, `USING`.
    #[error("ORDER BY ... {0} cannot be merged across two servers")]
    OrderByOption(&'static str),
    /// LIMIT or OFFSET given as a parameter or an expression, not a number.
    #[error("LIMIT and OFFSET must be numbers to be pushed down to both servers")]
    LimitNotLiteral,
    /// A column whose values the merge must compare has a type it does not order (ENUM, SET, BIT, JSON, ...).
    #[error("column `{column}` has type {type_name}, which the proxy cannot order or combine")]
    ColumnType {
        /// The column's name in the result.
        column: String,
        /// Its type as the server reported it.
        type_name: String,
    },
    /// A string column whose collation does not order by bytes.
    #[error(
        "column `{column}` is a string in collation {collation}, whose order the proxy does not reproduce; only \
         binary strings and _bin collations can be merged across two servers"
    )]
    Collation {
        /// The column's name in the result.
        column: String,
        /// The collation, named if known, with its id.
        collation: String,
    },
    /// The two servers give a compared column types that do not compare with each other (say a number and a
    /// string).
    #[error("column `{column}` is {old} on the old table but {extended} on the extended one")]
    KindsDiffer {
        /// The column's name in the result.
        column: String,
        /// How the old table's values compare.
        old: &'static str,
        /// How the extended table's values compare.
        extended: &'static str,
    },
    /// In the binary protocol, rows pass through unchanged, so both servers must encode every column alike.
    #[error(
        "column `{column}` has a different type on each server; prepared statements need the same types on both \
         (cast the old table's column)"
    )]
    BinaryTypesDiffer {
        /// The column's name in the result.
        column: String,
    },
    /// SUM of FLOAT or DOUBLE: the server's rounding and formatting of the total cannot be reproduced.
    #[error("SUM of the approximate column `{column}` cannot be combined exactly from two servers")]
    ApproximateSum {
        /// The column's name in the result.
        column: String,
    },
}

/// A result that the merge cannot go on with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// The read cannot be merged exactly.
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    /// A column definition packet that does not parse.
    #[error("malformed column definition from the {origin}")]
    ColumnDefinition {
        /// Which side sent it.
        origin: Origin,
    },
    /// A side's result has another number of columns than the plan expects.
    #[error("the {origin} returned {got} columns where the merge expects {expected}")]
    ColumnCount {
        /// Which side.
        origin: Origin,
        /// Columns the plan expects.
        expected: usize,
        /// Columns the side returned.
        got: usize,
    },
    /// A row payload that does not hold what the column definitions announce.
    #[error("malformed row from the {origin}: column {column}: {what}")]
    MalformedRow {
        /// Which side sent it.
        origin: Origin,
        /// The column's position (0-based).
        column: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// A string compared in a column whose collation's trailing-space rule is unknown, on which the rules
    /// disagree: it ends with a space or holds a byte below the space.
    #[error(
        "column {column} from the {origin} holds a string ending with a space or holding a control character, which \
         cannot be ordered without knowing whether its collation pads with spaces"
    )]
    AmbiguousString {
        /// Which side sent it.
        origin: Origin,
        /// The column's position (0-based).
        column: usize,
    },
    /// A side's rows are not in the order the merge compares by, or repeat a sort key: the server sorted
    /// differently than the proxy compares, so merging would give a wrong answer.
    #[error("rows from the {origin} are not in the order the merge compares by")]
    OutOfOrder {
        /// Which side.
        origin: Origin,
    },
    /// A combined COUNT or SUM does not fit the type of its column.
    #[error("the combined value of column {column} does not fit its type")]
    DoesNotFit {
        /// The column's position (0-based).
        column: usize,
    },
    /// A row or end of rows was given for a side the merge did not ask to read.
    #[error("a row from the {origin} was given while the merge was not waiting for one")]
    NotAsked {
        /// Which side.
        origin: Origin,
    },
}

impl MergeError {
    /// The side whose data caused the error, if one did.
    pub fn origin(&self) -> Option<Origin> {
        match self {
            MergeError::Unsupported(_) | MergeError::DoesNotFit { .. } => None,
            MergeError::ColumnDefinition { origin }
            | MergeError::ColumnCount { origin, .. }
            | MergeError::MalformedRow { origin, .. }
            | MergeError::AmbiguousString { origin, .. }
            | MergeError::OutOfOrder { origin }
            | MergeError::NotAsked { origin } => Some(*origin),
        }
    }
}
