//! What a merge of one read of both tables must do, derived from the parsed statement, or why the read cannot be
//! merged exactly (on one server, the read is then one `UNION ALL` statement instead; across two, it is refused).
//!
//! A [`MergePlan`] says what each side's rows are sorted by (the client's ORDER BY, turned into select-list
//! positions, completed so that it tells rows apart), the LIMIT/OFFSET window the merge applies after merging,
//! and for an aggregate read how the halves combine. Its [`SideClauses`] are what the router adds to the
//! statement sent to each side, so that every side sorts exactly as the merge compares.
//!
//! Rows must be told apart to be de-duplicated in bounded memory. The plan chooses:
//! - **by history id** (every row read without DISTINCT, and DISTINCT reads that select `id`, where DISTINCT
//!   changes nothing): the sort ends with `id`, added as the last key when the client's ORDER BY lacks it, and
//!   added to the select list when the client did not select it (the merge cuts it off again). Without an
//!   ORDER BY the sort is `ORDER BY id`.
//! - **by the whole row** (DISTINCT without `id`): the sort covers every selected column.
//!
//! Then two rows with equal sort keys at the heads of the two sides are one, and the extended table's is
//! emitted. Sorting by `id` first, this is exact. Sorting by another column first, or by whole rows, it relies
//! on the two copies of a history row agreeing on the sorted columns (they are copies: the migration copies rows
//! as they are, and UPDATE reaches both): see [`MergePlan::needs_matching_copies`].
//!
//! Aggregates without GROUP BY (COUNT, SUM, MIN, MAX) are read per history id (`GROUP BY id ORDER BY id`), so
//! that a row present in both tables counts once, and combined by the merge into the one row the client gets.

use std::fmt;

use sqlparser::ast::{Distinct, Expr, Query};

use super::error::Unsupported;
use super::select::{
    Output, check_query_clauses, check_select_clauses, column_name, order_by, outputs, resolve, single_select, window,
};
use crate::history::COLUMNS;

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `ASC`: smallest first, NULL first.
    Ascending,
    /// `DESC`: largest first, NULL last.
    Descending,
}

impl Direction {
    fn sql(self) -> &'static str {
        match self {
            Direction::Ascending => "ASC",
            Direction::Descending => "DESC",
        }
    }
}

/// One key of the sort both sides follow: a column of the sides' rows and a direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SortKey {
    /// Position in each side's rows (0-based).
    pub column: usize,
    /// Direction.
    pub direction: Direction,
}

/// The client's LIMIT: rows skipped, then rows returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    /// OFFSET.
    pub offset: u64,
    /// The row count.
    pub count: u64,
}

/// How one column of an aggregate read combines its per-id values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aggregate {
    /// `COUNT(*)` or `COUNT(expr)`: the counts add up.
    Count,
    /// `SUM(expr)`: the sums add up exactly; NULL when every value is NULL.
    Sum,
    /// `MIN(expr)`: the smallest non-NULL value.
    Min,
    /// `MAX(expr)`: the largest non-NULL value.
    Max,
}

/// The columns of the table read: what `*` stands for, and which column is the history id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableColumns<'a> {
    /// Every column, in the order `*` gives them to the client.
    pub columns: &'a [&'a str],
    /// The history id's column.
    pub id: &'a str,
}

impl TableColumns<'static> {
    /// The history table, in the old table's column order (the order the rewrites give both tables).
    pub const HISTORY: TableColumns<'static> = TableColumns { columns: &COLUMNS, id: "id" };
}

/// What tells the rows of a row read apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unique {
    /// The history id, the last sort key; `selected` says whether the client selected it, or the plan added it
    /// as the last column.
    Id { selected: bool },
    /// All the columns, every one a sort key (DISTINCT).
    WholeRow,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    Rows(Unique),
    Aggregates(Vec<Aggregate>),
}

/// What the merge of one read of both tables does, on one server or across two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergePlan {
    visible: usize,
    order: Vec<SortKey>,
    limit: Option<Limit>,
    shape: Shape,
}

/// What the router adds to the statement it sends to each side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideClauses {
    /// Text to append to the select list, after its last item: `, <id>` when the plan reads the history id the
    /// client did not select.
    pub extra_column: Option<String>,
    /// Clauses to put in place of the statement's ORDER BY and LIMIT (right after its WHERE clause, or its FROM
    /// clause if it has none), starting with a space: GROUP BY for aggregates, the ORDER BY the merge relies on
    /// (by select-list positions), and `LIMIT offset+count`.
    pub tail: String,
}

impl MergePlan {
    /// The plan for `query`, a read of `table` alone, or why it cannot be merged exactly.
    pub fn for_select(query: &Query, table: &TableColumns<'_>) -> Result<MergePlan, Unsupported> {
        check_query_clauses(query)?;
        let select = single_select(query)?;
        check_select_clauses(select)?;
        let outputs = outputs(select, table)?;
        let limit = window(query.limit_clause.as_ref())?;
        let order_by = order_by(query)?;
        if outputs.iter().any(|o| o.aggregate.is_some()) {
            return aggregate_plan(&outputs, order_by, limit);
        }
        let keys = order_by
            .iter()
            .map(|(expr, direction)| {
                let column = match resolve(expr, &outputs) {
                    // Sorting by the history id the client did not select: the plan reads it as a hidden column.
                    Err(Unsupported::OrderByNotSelected { .. })
                        if column_name(expr).is_some_and(|c| c.eq_ignore_ascii_case(table.id)) =>
                    {
                        outputs.len()
                    }
                    other => other?,
                };
                Ok(SortKey { column, direction: *direction })
            })
            .collect::<Result<Vec<_>, Unsupported>>()?;
        let distinct = matches!(select.distinct, Some(Distinct::Distinct));
        Ok(row_plan(&outputs, keys, limit, distinct, table.id))
    }

    /// Columns the client gets.
    pub fn visible_columns(&self) -> usize {
        self.visible
    }

    /// Columns each side returns: the client's, then the history id if the plan added it.
    pub fn side_columns(&self) -> usize {
        self.visible + usize::from(self.reads_hidden_id())
    }

    /// Whether each side's rows end with the history id the client did not select.
    fn reads_hidden_id(&self) -> bool {
        matches!(self.shape, Shape::Rows(Unique::Id { selected: false }) | Shape::Aggregates(_))
    }

    /// What each side's rows are sorted by, and the merge compares.
    pub fn order(&self) -> &[SortKey] {
        &self.order
    }

    /// The window the merge applies to the merged rows (or to the one row of an aggregate read).
    pub fn limit(&self) -> Option<Limit> {
        self.limit
    }

    /// How each column combines, for an aggregate read; empty for a read of rows.
    pub fn aggregates(&self) -> &[Aggregate] {
        match &self.shape {
            Shape::Aggregates(aggregates) => aggregates,
            Shape::Rows(_) => &[],
        }
    }

    /// The LIMIT each side gets: `offset + count` for a read of rows (an aggregate read needs every row).
    pub fn side_limit(&self) -> Option<u64> {
        match self.shape {
            Shape::Rows(_) => self.limit.map(|l| l.offset.saturating_add(l.count)),
            Shape::Aggregates(_) => None,
        }
    }

    /// Whether the answer is exact only if the two copies of a history row agree on the sorted columns: when
    /// sorting by another column before `id`, or de-duplicating whole rows (DISTINCT without `id`). Copies that
    /// disagree there do not meet at the heads of the merge and would both be returned.
    pub fn needs_matching_copies(&self) -> bool {
        match self.shape {
            Shape::Rows(Unique::Id { .. }) => self.order.len() > 1,
            Shape::Rows(Unique::WholeRow) => true,
            Shape::Aggregates(_) => false,
        }
    }

    /// What to add to the statement sent to each side; `id` is how that statement names the history id (say
    /// `` `courseware_studentmodulehistory`.`id` ``).
    pub fn side_clauses(&self, id: &str) -> SideClauses {
        let mut tail = String::new();
        if let Shape::Aggregates(_) = self.shape {
            tail.push_str(&format!(" GROUP BY {}", self.visible + 1));
        }
        let keys: Vec<String> = self.order.iter().map(|k| format!("{} {}", k.column + 1, k.direction.sql())).collect();
        tail.push_str(&format!(" ORDER BY {}", keys.join(", ")));
        if let Some(limit) = self.side_limit() {
            tail.push_str(&format!(" LIMIT {limit}"));
        }
        SideClauses { extra_column: self.reads_hidden_id().then(|| format!(", {id}")), tail }
    }
}

/// An aggregate read: each side grouped by history id and sorted by it, the window applied to the one row.
fn aggregate_plan(
    outputs: &[Output<'_>],
    order_by: Vec<(&Expr, Direction)>,
    limit: Option<Limit>,
) -> Result<MergePlan, Unsupported> {
    if !order_by.is_empty() {
        return Err(Unsupported::AggregateWithOrderBy);
    }
    let aggregates = outputs
        .iter()
        .map(|o| {
            o.aggregate
                .ok_or_else(|| Unsupported::NotAnAggregate { item: o.expr.map_or_else(|| "*".into(), Expr::to_string) })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let visible = outputs.len();
    Ok(MergePlan {
        visible,
        order: vec![SortKey { column: visible, direction: Direction::Ascending }],
        limit,
        shape: Shape::Aggregates(aggregates),
    })
}

/// A read of rows sorted by `keys` (the client's ORDER BY), completed so the sort tells rows apart.
fn row_plan(outputs: &[Output<'_>], keys: Vec<SortKey>, limit: Option<Limit>, distinct: bool, id: &str) -> MergePlan {
    let mut order: Vec<SortKey> = Vec::with_capacity(keys.len() + 1);
    for key in keys {
        if !order.iter().any(|k| k.column == key.column) {
            order.push(key);
        }
    }
    let visible = outputs.len();
    let selected_id = outputs.iter().position(|o| o.column.as_deref().is_some_and(|c| c.eq_ignore_ascii_case(id)));
    let unique = match (selected_id, distinct) {
        (None, true) => {
            let missing: Vec<usize> = (0..visible).filter(|c| !order.iter().any(|k| k.column == *c)).collect();
            order.extend(missing.into_iter().map(|column| SortKey { column, direction: Direction::Ascending }));
            Unique::WholeRow
        }
        _ => {
            let id_column = selected_id.unwrap_or(visible);
            match order.iter().position(|k| k.column == id_column) {
                Some(at) => order.truncate(at + 1),
                None => {
                    let direction = order.last().map_or(Direction::Ascending, |k| k.direction);
                    order.push(SortKey { column: id_column, direction });
                }
            }
            Unique::Id { selected: selected_id.is_some() }
        }
    };
    MergePlan { visible, order, limit, shape: Shape::Rows(unique) }
}

impl fmt::Display for MergePlan {
    /// A one-line summary for logs, e.g. `rows by id: ORDER BY 1 DESC LIMIT 21`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.shape {
            Shape::Rows(Unique::Id { .. }) => "rows by id",
            Shape::Rows(Unique::WholeRow) => "distinct rows",
            Shape::Aggregates(_) => "aggregates by id",
        };
        write!(f, "{what}:{}", self.side_clauses("id").tail)
    }
}
