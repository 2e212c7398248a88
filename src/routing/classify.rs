//! What the parser says about a statement naming the old history table: its kind, and where the table is read
//! from or written to.
//!
//! Only the shapes the routing can translate exactly are described; anything else is reported as
//! [`Unroutable`] with the reason, so that it is refused rather than answered wrongly.

use std::ops::ControlFlow;

use sqlparser::ast::{
    FromTable, ObjectName, Query, SelectItem, SetExpr, Statement, TableFactor, TableObject, TableWithJoins, Visit,
    Visitor,
};
use sqlparser::tokenizer::Location;

use crate::history::{StatementKind, TableName};

/// Where a SELECT reads the old table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// Location of the table name's first part.
    pub start: Location,
    /// End of the table factor: after the alias if there is one, else after the name.
    pub end: Location,
    /// The alias as written (with its quotes), if any.
    pub alias: Option<Alias>,
    /// The table is the only one in its SELECT's FROM clause (no join, no comma).
    pub alone: bool,
    /// Its SELECT has a WHERE clause.
    pub has_where: bool,
}

/// A table alias: where it lies, so its text can be reused as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// Start of the alias identifier.
    pub start: Location,
    /// End of the alias identifier.
    pub end: Location,
}

/// The statement writes the old table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// `INSERT`/`REPLACE INTO t ...`.
    Insert {
        /// Location of the table name's first part.
        start: Location,
        /// End of the table name.
        end: Location,
        /// The statement lists its columns (or uses `SET col = ...`), so none need adding.
        names_columns: bool,
    },
    /// `UPDATE t ...` or `DELETE FROM t ...` on this one table.
    UpdateDelete {
        /// Location of the table name's first part.
        start: Location,
    },
}

/// A statement naming the old table, as far as routing needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// What kind of statement it is for the routing table.
    pub kind: StatementKind,
    /// Every SELECT that reads the old table.
    pub reads: Vec<Read>,
    /// The write to the old table, for INSERT, UPDATE and DELETE on it.
    pub write: Option<Write>,
    /// An INSERT whose rows come from a SELECT (rather than VALUES or SET).
    pub inserts_from_select: bool,
    /// Some SELECT in it lists `*` or `t.*`, whose columns come in the table's own order.
    pub selects_wildcard: bool,
    /// For [`StatementKind::Other`]: whether it only changes or shows the table's definition (ALTER TABLE,
    /// CREATE/DROP INDEX, SHOW, DESCRIBE, EXPLAIN, ANALYZE), which stays allowed on a retired table so that
    /// edxapp's own migrations keep working.
    pub schema_only: bool,
}

/// Why a statement naming the old table cannot be routed: a reason the log may show, and the parser's details,
/// which may quote the statement (and so a learner's values) and go only to the client and the debug log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unroutable {
    /// What cannot be routed, in the proxy's words.
    pub reason: String,
    /// What the tokenizer or parser said, when it said something.
    pub detail: Option<String>,
}

impl Unroutable {
    /// A statement that cannot be routed, for `reason`.
    pub fn new(reason: impl Into<String>) -> Unroutable {
        Unroutable { reason: reason.into(), detail: None }
    }

    /// A statement that cannot be routed, for `reason`, with the parser's `detail`.
    pub fn with_detail(reason: impl Into<String>, detail: String) -> Unroutable {
        Unroutable { reason: reason.into(), detail: Some(detail) }
    }
}

impl std::fmt::Display for Unroutable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.detail {
            Some(detail) => write!(f, "{} ({detail})", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// Describes `statement` as far as routing is concerned.
pub fn shape(statement: &Statement, old: &TableName) -> Result<Shape, Unroutable> {
    let mut collector = ReadCollector { old, reads: Vec::new(), selects_wildcard: false };
    let _ = statement.visit(&mut collector);
    let ReadCollector { reads, selects_wildcard, .. } = collector;
    let (kind, write) = match statement {
        Statement::Query(_) => (StatementKind::Select, None),
        Statement::Insert(insert) => match &insert.table {
            TableObject::TableName(name) if names(name, old) => {
                let names_columns = !insert.columns.is_empty() || !insert.assignments.is_empty();
                (StatementKind::Insert, Some(Write::Insert { start: first(name), end: last(name), names_columns }))
            }
            _ => (StatementKind::Other, None),
        },
        Statement::Update(update) => match update_target(&update.table, update.from.is_some(), old)? {
            Some(start) => (StatementKind::UpdateDelete, Some(Write::UpdateDelete { start })),
            None => (StatementKind::Other, None),
        },
        Statement::Delete(delete) => {
            let from = match &delete.from {
                FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from) => from,
            };
            match delete_target(from, !delete.tables.is_empty() || delete.using.is_some(), old)? {
                Some(start) => (StatementKind::UpdateDelete, Some(Write::UpdateDelete { start })),
                None => (StatementKind::Other, None),
            }
        }
        _ => (StatementKind::Other, None),
    };
    if write.is_some() && !reads.is_empty() {
        return Err(Unroutable::new("a statement that writes the history table may not also read it"));
    }
    let inserts_from_select = matches!(statement, Statement::Insert(insert)
        if insert.source.as_ref().is_some_and(|q| !matches!(*q.body, SetExpr::Values(_))));
    Ok(Shape { kind, reads, write, inserts_from_select, selects_wildcard, schema_only: is_schema_only(statement) })
}

/// The old table as the single target of an UPDATE; an error for multi-table forms that involve it.
fn update_target(table: &TableWithJoins, has_from: bool, old: &TableName) -> Result<Option<Location>, Unroutable> {
    let target = match &table.relation {
        TableFactor::Table { name, .. } if names(name, old) => Some(first(name)),
        _ => None,
    };
    if target.is_some() && (has_from || !table.joins.is_empty()) {
        return Err(Unroutable::new("a multi-table UPDATE of the history table cannot be routed"));
    }
    Ok(target)
}

/// The old table as the single target of a DELETE; an error for multi-table forms that involve it.
fn delete_target(from: &[TableWithJoins], multi_table: bool, old: &TableName) -> Result<Option<Location>, Unroutable> {
    let targets: Vec<Location> = from
        .iter()
        .filter_map(|t| match &t.relation {
            TableFactor::Table { name, .. } if names(name, old) => Some(first(name)),
            _ => None,
        })
        .collect();
    match targets.as_slice() {
        [] => Ok(None),
        [start] if from.len() == 1 && from[0].joins.is_empty() && !multi_table => Ok(Some(*start)),
        _ => Err(Unroutable::new("a multi-table DELETE of the history table cannot be routed")),
    }
}

fn is_schema_only(statement: &Statement) -> bool {
    use sqlparser::ast::ObjectType;
    match statement {
        Statement::AlterTable(_)
        | Statement::CreateIndex(_)
        | Statement::ExplainTable { .. }
        | Statement::Explain { .. }
        | Statement::Analyze(_)
        | Statement::ShowCreate { .. }
        | Statement::ShowColumns { .. } => true,
        Statement::Drop { object_type, .. } => *object_type == ObjectType::Index,
        _ => false,
    }
}

/// Collects every SELECT's FROM entries that are the old table, and whether any SELECT lists a wildcard.
struct ReadCollector<'a> {
    old: &'a TableName,
    reads: Vec<Read>,
    selects_wildcard: bool,
}

impl Visitor for ReadCollector<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        self.collect_set_expr(&query.body);
        ControlFlow::Continue(())
    }
}

impl ReadCollector<'_> {
    fn collect_set_expr(&mut self, body: &SetExpr) {
        match body {
            SetExpr::Select(select) => {
                self.selects_wildcard |= select
                    .projection
                    .iter()
                    .any(|item| matches!(item, SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)));
                let alone = select.from.len() == 1 && select.from[0].joins.is_empty();
                for table in &select.from {
                    self.collect_factor(&table.relation, alone, select.selection.is_some());
                    for join in &table.joins {
                        self.collect_factor(&join.relation, false, select.selection.is_some());
                    }
                }
            }
            SetExpr::SetOperation { left, right, .. } => {
                self.collect_set_expr(left);
                self.collect_set_expr(right);
            }
            // Nested queries are visited on their own.
            _ => {}
        }
    }

    fn collect_factor(&mut self, factor: &TableFactor, alone: bool, has_where: bool) {
        match factor {
            TableFactor::Table { name, alias, .. } if names(name, self.old) => {
                let alias = alias.as_ref().map(|a| Alias { start: a.name.span.start, end: a.name.span.end });
                let end = alias.as_ref().map_or_else(|| last(name), |a| a.end);
                self.reads.push(Read { start: first(name), end, alias, alone, has_where });
            }
            TableFactor::NestedJoin { table_with_joins, .. } => {
                self.collect_factor(&table_with_joins.relation, false, has_where);
                for join in &table_with_joins.joins {
                    self.collect_factor(&join.relation, false, has_where);
                }
            }
            _ => {}
        }
    }
}

/// Whether `name` is the old table: its bare name, or qualified with its schema.
fn names(name: &ObjectName, old: &TableName) -> bool {
    let parts: Vec<&str> = name.0.iter().filter_map(|p| p.as_ident()).map(|i| i.value.as_str()).collect();
    match parts.as_slice() {
        [table] => table.eq_ignore_ascii_case(old.table()),
        [schema, table] => schema.eq_ignore_ascii_case(old.schema()) && table.eq_ignore_ascii_case(old.table()),
        _ => false,
    }
}

fn first(name: &ObjectName) -> Location {
    name.0.first().and_then(|p| p.as_ident()).map_or(Location::empty(), |i| i.span.start)
}

fn last(name: &ObjectName) -> Location {
    name.0.last().and_then(|p| p.as_ident()).map_or(Location::empty(), |i| i.span.end)
}
