//! Which literals of a statement the route cache may mask: those the parser took as plain values (`Expr::Value`)
//! in places no routing decision reads.
//!
//! The router reads a literal's value in these places only (docs/routing.md, "Route cache"): the merge plan reads
//! LIMIT and OFFSET (the rows it lets through, and each side's `LIMIT offset+count`), ORDER BY (a number is a
//! select-list position, and an expression is matched against the select list's, literals included), and so the
//! select list too; the refusals quote expressions, but refusals are never cached. The literals of every
//! ORDER BY, LIMIT, OFFSET, FETCH, GROUP BY and select list, at any depth, and of the LIMIT and ORDER BY of an
//! UPDATE or DELETE, are kept as they are in the cache's entries: a statement matches an entry only with the same
//! values there. So is any literal the parser did not take as a value of its own: a type's length
//! (`DECIMAL(10, 2)`), a string after a type name (`DATE '…'`), adjacent strings the parser joins. (A string after
//! a character-set introducer, `_utf8mb4'…'`, is a value of its own, prefixed.)

use std::ops::{ControlFlow, Range};

use sqlparser::ast::{Expr, OrderByExpr, Query, Select, Statement, Visit, Visitor};
use sqlparser::tokenizer::Span;

use super::literals::Literal;
use super::source::Source;

/// For each of `literals` (the scanner's, of the statement `source` holds and `statement` is), whether a cache
/// entry may mask it.
pub fn maskable(statement: &Statement, source: &Source<'_>, literals: &[Literal]) -> Vec<bool> {
    let mut values = Values { source, found: Vec::new(), read: Vec::new(), reading: 0 };
    let _ = statement.visit(&mut values);
    let Values { found, read, .. } = values;
    literals.iter().map(|l| found.contains(&l.range) && !read.contains(&l.range)).collect()
}

/// Collects the byte ranges of the statement's values, and of those in places the router reads.
struct Values<'s, 'a> {
    source: &'s Source<'a>,
    found: Vec<Range<usize>>,
    read: Vec<Range<usize>>,
    /// How many clauses whose values are read the visit is inside.
    reading: usize,
}

impl Values<'_, '_> {
    fn range(&self, span: Span) -> Range<usize> {
        self.source.offset(span.start)..self.source.offset(span.end)
    }

    /// Counts every value inside `node` as read.
    fn read_within(&mut self, node: &impl Visit) {
        self.reading += 1;
        let _ = node.visit(self);
        self.reading -= 1;
    }
}

impl Visitor for Values<'_, '_> {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Value(value) = expr {
            let range = self.range(value.span);
            if self.reading > 0 {
                self.read.push(range.clone());
            }
            self.found.push(range);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        self.read_within(&query.limit_clause);
        self.read_within(&query.fetch);
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        self.read_within(&select.projection);
        self.read_within(&select.group_by);
        ControlFlow::Continue(())
    }

    // Every value of an ORDER BY (a query's, a window's, an aggregate's, a DELETE's or UPDATE's) lies in one of
    // its `OrderByExpr`s: MySQL's dialect parses nothing else there.
    fn pre_visit_order_by_expr(&mut self, _order_by_expr: &OrderByExpr) -> ControlFlow<()> {
        self.reading += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_order_by_expr(&mut self, _order_by_expr: &OrderByExpr) -> ControlFlow<()> {
        self.reading -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        match statement {
            Statement::Update(update) => self.read_within(&update.limit),
            Statement::Delete(delete) => self.read_within(&delete.limit),
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::literals::scan;

    fn masked(sql: &str) -> Vec<(&str, bool)> {
        let scan = scan(sql.as_bytes()).unwrap();
        let source = Source::new(sql.as_bytes());
        let statement = crate::routing::parse_one(&source.tokens().unwrap()).unwrap();
        let maskable = maskable(&statement, &source, &scan.literals);
        scan.literals.iter().zip(maskable).map(|(l, m)| (&sql[l.range.clone()], m)).collect()
    }

    #[test]
    fn values_in_conditions_are_masked() {
        let sql = "SELECT id FROM t WHERE a IN (1, 2) AND b = 'x' AND c IN (SELECT d FROM u WHERE e = -3)";
        assert_eq!(masked(sql), vec![("1", true), ("2", true), ("'x'", true), ("3", true)]);
        let insert = "INSERT INTO t (a, b) VALUES (NULL, 'y'), (4, 5.5)";
        assert_eq!(masked(insert), vec![("'y'", true), ("4", true), ("5.5", true)]);
    }

    #[test]
    fn what_the_merge_plan_reads_is_kept() {
        let sql = "SELECT 1 AS a, grade + 2 FROM t WHERE b = 3 GROUP BY 4 ORDER BY grade + 2, 1 LIMIT 5 OFFSET 6";
        let kept: Vec<&str> = masked(sql).into_iter().filter(|(_, m)| !m).map(|(l, _)| l).collect();
        assert_eq!(kept, vec!["1", "2", "4", "2", "1", "5", "6"]);
        assert_eq!(masked("SELECT a FROM t LIMIT 5, 10"), vec![("5", false), ("10", false)]);
        let subquery = "SELECT a FROM t WHERE b IN (SELECT c FROM u ORDER BY 1 LIMIT 2)";
        assert_eq!(masked(subquery), vec![("1", false), ("2", false)]);
        let delete = "DELETE FROM t WHERE a = 1 ORDER BY b + 2 LIMIT 3";
        assert_eq!(masked(delete), vec![("1", true), ("2", false), ("3", false)]);
    }

    #[test]
    fn literals_that_are_not_values_of_their_own_are_kept() {
        let sql = "SELECT a FROM t WHERE b = CAST(c AS DECIMAL(10, 2)) AND d = DATE '2020-01-01' AND e = 'f' 'g'";
        let kept: Vec<&str> = masked(sql).into_iter().filter(|(_, m)| !m).map(|(l, _)| l).collect();
        assert!(kept.starts_with(&["10", "2", "'2020-01-01'"]), "{kept:?}");
        assert!(kept.contains(&"'g'"), "{kept:?}");
        let introduced = "SELECT a FROM t WHERE d = _utf8mb4'x'";
        assert_eq!(masked(introduced), vec![("'x'", true)], "a value with a character set is a value");
    }
}
