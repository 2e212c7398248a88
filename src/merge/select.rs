//! Reading the parts of a SELECT that a merge across two servers depends on: the clauses it cannot merge, the
//! select list (with `*` expanded, and each aggregate recognized), LIMIT/OFFSET, and the ORDER BY keys resolved
//! to select-list positions as MySQL resolves them.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Distinct, DuplicateTreatment, Expr, Function, FunctionArguments, GroupByExpr, LimitClause, ObjectName, OrderByKind,
    OrderBySort, Query, Select, SelectItem, SetExpr, Value, Visit, Visitor, WildcardAdditionalOptions,
};

use super::error::Unsupported;
use super::plan::{Aggregate, Direction, Limit, TableColumns};

/// One column of the select list.
pub(super) struct Output<'q> {
    /// The name an ORDER BY can use for it: its alias, or a plain column's own name.
    pub name: Option<String>,
    /// The table column it is, if it is a plain column reference.
    pub column: Option<String>,
    /// Its expression, to match an ORDER BY expression; `None` for columns of `*`.
    pub expr: Option<&'q Expr>,
    /// How it combines, if it is an aggregate.
    pub aggregate: Option<Aggregate>,
}

/// Refuses the query-level clauses the merge cannot reproduce.
pub(super) fn check_query_clauses(query: &Query) -> Result<(), Unsupported> {
    let refused = [
        (query.with.is_some(), "WITH"),
        (query.fetch.is_some(), "FETCH"),
        (!query.locks.is_empty(), "FOR UPDATE or FOR SHARE"),
        (query.for_clause.is_some(), "FOR XML or FOR JSON"),
        (query.settings.is_some(), "SETTINGS"),
        (query.format_clause.is_some(), "FORMAT"),
        (!query.pipe_operators.is_empty(), "a pipe operator"),
    ];
    first_refused(&refused)
}

/// The one SELECT the query is (not a UNION or a parenthesized query).
pub(super) fn single_select(query: &Query) -> Result<&Select, Unsupported> {
    match query.body.as_ref() {
        SetExpr::Select(select) => Ok(select),
        SetExpr::SetOperation { .. } => Err(Unsupported::Clause("UNION, INTERSECT or EXCEPT")),
        SetExpr::Query(_) => Err(Unsupported::Clause("a parenthesized query")),
        _ => Err(Unsupported::Clause("this form of query")),
    }
}

/// Refuses the SELECT clauses the merge cannot reproduce, and any FROM but the history table alone.
pub(super) fn check_select_clauses(select: &Select) -> Result<(), Unsupported> {
    match &select.group_by {
        GroupByExpr::Expressions(exprs, modifiers) if exprs.is_empty() && modifiers.is_empty() => {}
        _ => return Err(Unsupported::GroupBy),
    }
    if select.having.is_some() {
        return Err(Unsupported::Having);
    }
    if !select.named_window.is_empty() {
        return Err(Unsupported::WindowFunction);
    }
    if select.from.len() != 1 || !select.from[0].joins.is_empty() {
        return Err(Unsupported::NotAlone);
    }
    let refused = [
        (matches!(select.distinct, Some(Distinct::On(_))), "DISTINCT ON"),
        (select.top.is_some(), "TOP"),
        (select.into.is_some(), "SELECT ... INTO"),
        (select.select_modifiers.as_ref().is_some_and(|m| m.sql_calc_found_rows), "SQL_CALC_FOUND_ROWS"),
        (select.exclude.is_some(), "EXCLUDE"),
        (!select.lateral_views.is_empty(), "LATERAL VIEW"),
        (select.prewhere.is_some(), "PREWHERE"),
        (!select.connect_by.is_empty(), "CONNECT BY"),
        (!select.cluster_by.is_empty() || !select.distribute_by.is_empty(), "CLUSTER BY or DISTRIBUTE BY"),
        (!select.sort_by.is_empty(), "SORT BY"),
        (select.qualify.is_some(), "QUALIFY"),
        (select.value_table_mode.is_some(), "SELECT AS VALUE"),
    ];
    first_refused(&refused)
}

fn first_refused(checks: &[(bool, &'static str)]) -> Result<(), Unsupported> {
    match checks.iter().find(|(refused, _)| *refused) {
        Some((_, clause)) => Err(Unsupported::Clause(clause)),
        None => Ok(()),
    }
}

/// The select list, with `*` expanded to the table's columns.
pub(super) fn outputs<'q>(select: &'q Select, table: &TableColumns<'_>) -> Result<Vec<Output<'q>>, Unsupported> {
    let mut outputs = Vec::new();
    for item in &select.projection {
        let (expr, alias) = match item {
            SelectItem::Wildcard(options) | SelectItem::QualifiedWildcard(_, options) if has_options(options) => {
                return Err(Unsupported::Clause("a * with options"));
            }
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                outputs.extend(table.columns.iter().map(|c| Output {
                    name: Some((*c).to_owned()),
                    column: Some((*c).to_owned()),
                    expr: None,
                    aggregate: None,
                }));
                continue;
            }
            SelectItem::UnnamedExpr(expr) => (expr, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
            SelectItem::ExprWithAliases { .. } => {
                return Err(Unsupported::Clause("a select item with several aliases"));
            }
        };
        let column = column_name(expr).map(str::to_owned);
        let aggregate = aggregate_of(expr)?;
        outputs.push(Output { name: alias.or_else(|| column.clone()), column, expr: Some(expr), aggregate });
    }
    Ok(outputs)
}

/// Whether `*` comes with options that change its columns (EXCLUDE, REPLACE, ...).
fn has_options(options: &WildcardAdditionalOptions) -> bool {
    options.opt_ilike.is_some()
        || options.opt_exclude.is_some()
        || options.opt_except.is_some()
        || options.opt_replace.is_some()
        || options.opt_rename.is_some()
        || options.opt_alias.is_some()
}

/// The column a plain column reference (`col`, `t.col`, `db.t.col`) names.
pub(super) fn column_name(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Identifier(ident) => Some(&ident.value),
        Expr::CompoundIdentifier(parts) => parts.last().map(|ident| ident.value.as_str()),
        Expr::Nested(inner) => column_name(inner),
        _ => None,
    }
}

/// MySQL's and MariaDB's aggregate functions.
const AGGREGATE_FUNCTIONS: [&str; 18] = [
    "AVG",
    "BIT_AND",
    "BIT_OR",
    "BIT_XOR",
    "COUNT",
    "GROUP_CONCAT",
    "JSON_ARRAYAGG",
    "JSON_OBJECTAGG",
    "MAX",
    "MIN",
    "STD",
    "STDDEV",
    "STDDEV_POP",
    "STDDEV_SAMP",
    "SUM",
    "VARIANCE",
    "VAR_POP",
    "VAR_SAMP",
];

fn function_name(name: &ObjectName) -> Option<&str> {
    name.0.last().and_then(|part| part.as_ident()).map(|ident| ident.value.as_str())
}

fn is_aggregate(function: &Function) -> bool {
    function_name(&function.name).is_some_and(|n| AGGREGATE_FUNCTIONS.iter().any(|a| a.eq_ignore_ascii_case(n)))
}

/// Aggregate and window calls in an expression, outside its subqueries (which each server evaluates whole).
#[derive(Default)]
struct Calls {
    depth: usize,
    aggregates: usize,
    windows: usize,
}

impl Visitor for Calls {
    type Break = ();

    fn pre_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.depth += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let (0, Expr::Function(function)) = (self.depth, expr) {
            if function.over.is_some() {
                self.windows += 1;
            } else if is_aggregate(function) {
                self.aggregates += 1;
            }
        }
        ControlFlow::Continue(())
    }
}

fn calls(expr: &Expr) -> Calls {
    let mut calls = Calls::default();
    let _ = expr.visit(&mut calls);
    calls
}

/// How a select-list expression combines: `None` for a plain value, or the aggregate it is.
fn aggregate_of(expr: &Expr) -> Result<Option<Aggregate>, Unsupported> {
    let found = calls(expr);
    if found.windows > 0 {
        return Err(Unsupported::WindowFunction);
    }
    match (found.aggregates, unnested(expr)) {
        (0, _) => Ok(None),
        (1, Expr::Function(function)) if is_aggregate(function) => combinable(function).map(Some),
        _ => Err(Unsupported::ExpressionOverAggregate),
    }
}

/// The aggregate `function` is, if its halves combine exactly.
fn combinable(function: &Function) -> Result<Aggregate, Unsupported> {
    let name = function_name(&function.name).unwrap_or_default().to_ascii_uppercase();
    let refused = || Unsupported::Aggregate { function: name.clone() };
    let FunctionArguments::List(arguments) = &function.args else {
        return Err(refused());
    };
    if arguments.duplicate_treatment == Some(DuplicateTreatment::Distinct) {
        return Err(Unsupported::AggregateDistinct { function: name });
    }
    if function.filter.is_some() || !function.within_group.is_empty() || !arguments.clauses.is_empty() {
        return Err(refused());
    }
    match name.as_str() {
        "COUNT" => Ok(Aggregate::Count),
        "SUM" => Ok(Aggregate::Sum),
        "MIN" => Ok(Aggregate::Min),
        "MAX" => Ok(Aggregate::Max),
        _ => Err(refused()),
    }
}

fn unnested(expr: &Expr) -> &Expr {
    match expr {
        Expr::Nested(inner) => unnested(inner),
        _ => expr,
    }
}

/// The LIMIT/OFFSET clause, whose numbers must be literals.
pub(super) fn window(clause: Option<&LimitClause>) -> Result<Option<Limit>, Unsupported> {
    let (offset, count) = match clause {
        None => return Ok(None),
        Some(LimitClause::LimitOffset { limit_by, .. }) if !limit_by.is_empty() => {
            return Err(Unsupported::Clause("LIMIT BY"));
        }
        Some(LimitClause::LimitOffset { limit: None, offset: None, .. }) => return Ok(None),
        Some(LimitClause::LimitOffset { limit: None, .. }) => return Err(Unsupported::Clause("OFFSET without LIMIT")),
        Some(LimitClause::LimitOffset { limit: Some(count), offset, .. }) => {
            (offset.as_ref().map(|o| literal(&o.value)).transpose()?.unwrap_or(0), literal(count)?)
        }
        Some(LimitClause::OffsetCommaLimit { offset, limit }) => (literal(offset)?, literal(limit)?),
    };
    Ok(Some(Limit { offset, count }))
}

fn literal(expr: &Expr) -> Result<u64, Unsupported> {
    match expr {
        Expr::Value(value) => match &value.value {
            Value::Number(digits, _) => digits.parse().map_err(|_| Unsupported::LimitNotLiteral),
            _ => Err(Unsupported::LimitNotLiteral),
        },
        _ => Err(Unsupported::LimitNotLiteral),
    }
}

/// The ORDER BY expressions and their directions.
pub(super) fn order_by(query: &Query) -> Result<Vec<(&Expr, Direction)>, Unsupported> {
    let Some(order_by) = &query.order_by else {
        return Ok(Vec::new());
    };
    if order_by.interpolate.is_some() {
        return Err(Unsupported::OrderByOption("INTERPOLATE"));
    }
    let OrderByKind::Expressions(exprs) = &order_by.kind else {
        return Err(Unsupported::Clause("ORDER BY ALL"));
    };
    exprs
        .iter()
        .map(|e| {
            if e.with_fill.is_some() {
                return Err(Unsupported::OrderByOption("WITH FILL"));
            }
            if e.options.nulls_first.is_some() {
                return Err(Unsupported::OrderByOption("NULLS FIRST or NULLS LAST"));
            }
            let direction = match e.options.sort {
                None | Some(OrderBySort::Asc) => Direction::Ascending,
                Some(OrderBySort::Desc) => Direction::Descending,
                Some(OrderBySort::Using(_)) => return Err(Unsupported::OrderByOption("USING")),
            };
            Ok((&e.expr, direction))
        })
        .collect()
}

/// The select-list position an ORDER BY expression sorts by, resolved as MySQL does: a number is a position; a
/// bare name is an alias (or a selected column's name) first, then a table column; a qualified name is a table
/// column; any other expression must be written as in the select list.
pub(super) fn resolve(expr: &Expr, outputs: &[Output<'_>]) -> Result<usize, Unsupported> {
    let expr = unnested(expr);
    let found = match expr {
        Expr::Value(value) => match &value.value {
            Value::Number(position, _) => {
                let index = position.parse::<usize>().ok().filter(|p| (1..=outputs.len()).contains(p));
                return index.map(|p| p - 1).ok_or_else(|| Unsupported::OrderByPosition { position: position.clone() });
            }
            _ => Vec::new(),
        },
        Expr::Identifier(ident) => {
            let by_name = matching(outputs, |o| o.name.as_deref(), &ident.value);
            if by_name.is_empty() { matching(outputs, |o| o.column.as_deref(), &ident.value) } else { by_name }
        }
        Expr::CompoundIdentifier(_) => {
            column_name(expr).map_or(Vec::new(), |c| matching(outputs, |o| o.column.as_deref(), c))
        }
        _ => (0..outputs.len()).filter(|&i| outputs[i].expr == Some(expr)).collect(),
    };
    match found.as_slice() {
        [] => Err(Unsupported::OrderByNotSelected { expr: expr.to_string() }),
        [first, rest @ ..] if rest.iter().all(|&i| same_value(&outputs[i], &outputs[*first])) => Ok(*first),
        _ => Err(Unsupported::AmbiguousOrderBy { name: expr.to_string() }),
    }
}

/// Positions of the outputs whose `field` is `name` (compared as MySQL compares column names).
fn matching<'q>(
    outputs: &[Output<'q>],
    field: impl for<'o> Fn(&'o Output<'q>) -> Option<&'o str>,
    name: &str,
) -> Vec<usize> {
    (0..outputs.len()).filter(|&i| field(&outputs[i]).is_some_and(|n| n.eq_ignore_ascii_case(name))).collect()
}

/// Whether two outputs hold the same value: both the same table column.
fn same_value(a: &Output<'_>, b: &Output<'_>) -> bool {
    matches!((&a.column, &b.column), (Some(x), Some(y)) if x.eq_ignore_ascii_case(y))
}
