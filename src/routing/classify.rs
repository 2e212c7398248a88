//! What the parser says about a statement naming the old history table: its kind, and where the table is read
//! from or written to.
//!
//! Only the shapes the routing can translate exactly are described; anything else is reported as
//! [`Unroutable`] with the reason, so that it is refused rather than answered wrongly.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Assignment, AssignmentTarget, Delete, Expr, FromTable, Insert, ObjectName, OnInsert, Query, SelectItem, SetExpr,
    Statement, TableFactor, TableObject, TableWithJoins, Update, UpdateTableFromKind, Value, Visit, Visitor,
};
use sqlparser::tokenizer::Location;

use crate::history::{COLUMNS, StatementKind, TableName};

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
    /// For [`StatementKind::Other`]: whether it only changes or shows the table's definition (ALTER TABLE but
    /// its RENAME, CREATE/DROP INDEX, SHOW, DESCRIBE, EXPLAIN, ANALYZE), which stays allowed on a retired table so
    /// that edxapp's own migrations keep working.
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
        Statement::Update(update) => match update_target(update, old)? {
            Some(start) => (StatementKind::UpdateDelete, Some(Write::UpdateDelete { start })),
            None => (StatementKind::Other, None),
        },
        Statement::Delete(delete) => match delete_target(delete, old)? {
            Some(start) => (StatementKind::UpdateDelete, Some(Write::UpdateDelete { start })),
            None => (StatementKind::Other, None),
        },
        _ => (StatementKind::Other, None),
    };
    if write.is_some() && !reads.is_empty() {
        return Err(Unroutable::new("a statement that writes the history table may not also read it"));
    }
    let inserts_from_select = matches!(statement, Statement::Insert(insert)
        if insert.source.as_ref().is_some_and(|q| !matches!(*q.body, SetExpr::Values(_))));
    Ok(Shape { kind, reads, write, inserts_from_select, selects_wildcard, schema_only: is_schema_only(statement) })
}

/// The old table as the one table an UPDATE writes; an error when it is among the tables of a multi-table form.
fn update_target(update: &Update, old: &TableName) -> Result<Option<Location>, Unroutable> {
    let from = match &update.from {
        Some(UpdateTableFromKind::BeforeSet(from) | UpdateTableFromKind::AfterSet(from)) => from.as_slice(),
        None => &[],
    };
    let tables: Vec<&TableWithJoins> = std::iter::once(&update.table).chain(from).collect();
    single_target(&tables, false, old, "UPDATE")
}

/// The old table as the one table a DELETE removes rows from; an error when it is among the tables of a
/// multi-table form.
fn delete_target(delete: &Delete, old: &TableName) -> Result<Option<Location>, Unroutable> {
    let from = match &delete.from {
        FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from) => from,
    };
    let using = delete.using.as_deref().unwrap_or_default();
    let tables: Vec<&TableWithJoins> = from.iter().chain(using).collect();
    single_target(&tables, !delete.tables.is_empty(), old, "DELETE")
}

/// The old table's place when it is the only table of `tables`, which an UPDATE or DELETE writes; `None` when
/// none of them is the old table. A multi-table form naming it anywhere (a join, a comma list, `FROM`, `USING`,
/// or a list of tables to delete from) is an error: passed through, it would change the old table's rows alone.
fn single_target(
    tables: &[&TableWithJoins],
    multi_table: bool,
    old: &TableName,
    verb: &str,
) -> Result<Option<Location>, Unroutable> {
    if !tables.iter().any(|table| names_old_anywhere(table, old)) {
        return Ok(None);
    }
    match tables {
        [TableWithJoins { relation: TableFactor::Table { name, .. }, joins }] if joins.is_empty() && !multi_table => {
            Ok(Some(first(name)))
        }
        _ => Err(Unroutable::new(format!("a multi-table {verb} that involves the history table cannot be routed"))),
    }
}

/// Whether `table` or one of the tables joined to it is the old table.
fn names_old_anywhere(table: &TableWithJoins, old: &TableName) -> bool {
    factor_names_old(&table.relation, old) || table.joins.iter().any(|join| factor_names_old(&join.relation, old))
}

/// Whether `factor` is the old table, or a parenthesized join holding it. A derived table's reads of it are
/// collected as reads.
fn factor_names_old(factor: &TableFactor, old: &TableName) -> bool {
    match factor {
        TableFactor::Table { name, .. } => names(name, old),
        TableFactor::NestedJoin { table_with_joins, .. } => names_old_anywhere(table_with_joins, old),
        _ => false,
    }
}

fn is_schema_only(statement: &Statement) -> bool {
    use sqlparser::ast::{AlterTableOperation, ObjectType};
    match statement {
        Statement::AlterTable(alter) => {
            !alter.operations.iter().any(|operation| matches!(operation, AlterTableOperation::RenameTable { .. }))
        }
        Statement::CreateIndex(_)
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

/// Whether a write of the old table gives a row's `id` a value of its own: an INSERT (or REPLACE) with a column
/// list, a positional row (whose first value is the id, in the old table's order) or a `SET` naming `id`, with a
/// value other than `NULL` or `DEFAULT` (which let the table number the row), or rows from a SELECT; an INSERT's
/// `ON DUPLICATE KEY UPDATE` or an UPDATE assigning `id` at all. Read from token kinds and keywords only, never
/// from a literal's value.
pub fn sets_an_id(statement: &Statement) -> bool {
    match statement {
        Statement::Insert(insert) => {
            let updates_id = match &insert.on {
                Some(OnInsert::DuplicateKeyUpdate(assignments)) => assigns_id(assignments),
                _ => false,
            };
            updates_id || inserts_an_id(insert)
        }
        Statement::Update(update) => assigns_id(&update.assignments),
        _ => false,
    }
}

/// Whether `name` is the `id` column, bare or qualified.
fn is_id(name: &ObjectName) -> bool {
    name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| i.value.eq_ignore_ascii_case(COLUMNS[0]))
}

/// Whether `assignments` (of an UPDATE, or an INSERT's `ON DUPLICATE KEY UPDATE`) set `id`, whatever to.
fn assigns_id(assignments: &[Assignment]) -> bool {
    assignments.iter().any(|a| match &a.target {
        AssignmentTarget::ColumnName(name) => is_id(name),
        AssignmentTarget::Tuple(_) => true,
    })
}

/// The INSERT part of [`sets_an_id`]: whether the rows it inserts have ids of their own.
fn inserts_an_id(insert: &Insert) -> bool {
    if !insert.assignments.is_empty() {
        return insert.assignments.iter().any(|a| match &a.target {
            AssignmentTarget::ColumnName(name) => is_id(name) && !numbers_itself(&a.value),
            AssignmentTarget::Tuple(_) => true,
        });
    }
    let position = match insert.columns.iter().position(is_id) {
        Some(position) => position,
        None if insert.columns.is_empty() => 0,
        None => return false,
    };
    match insert.source.as_deref().map(|query| &*query.body) {
        Some(SetExpr::Values(values)) => {
            values.rows.iter().any(|row| row.get(position).is_some_and(|value| !numbers_itself(value)))
        }
        _ => true,
    }
}

/// Whether `read` is the whole FROM clause of `query`'s own SELECT (no join, no comma list): the read a merge of
/// both tables' rows answers. One in a subquery (`EXISTS`, `IN`), a derived table or a branch is not: each
/// table's rows then feed an outer query, which the merge does not evaluate.
pub fn reads_the_outer_from(query: &Query, read: &Read) -> bool {
    let SetExpr::Select(select) = &*query.body else { return false };
    match select.from.as_slice() {
        [TableWithJoins { relation: TableFactor::Table { name, .. }, joins }] => {
            joins.is_empty() && first(name) == read.start
        }
        _ => false,
    }
}

/// Whether an INSERT's value for an auto-increment column leaves the numbering to the table.
fn numbers_itself(value: &Expr) -> bool {
    match value {
        Expr::Value(value) => value.value == Value::Null,
        Expr::Identifier(ident) => ident.quote_style.is_none() && ident.value.eq_ignore_ascii_case("DEFAULT"),
        _ => false,
    }
}

/// Where `statement` names a table other than `old` and `extended` (a join, a comma list, a branch of a UNION, a
/// subquery, a CTE's name): the first part of each such name.
pub fn other_tables(statement: &Statement, old: &TableName, extended: &TableName) -> Vec<Location> {
    let mut found = Vec::new();
    let _ = sqlparser::ast::visit_relations(statement, |name| {
        if !names(name, old) && !names(name, extended) {
            found.push(first(name));
        }
        ControlFlow::<()>::Continue(())
    });
    found
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
