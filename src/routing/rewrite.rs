//! The statements a route sends, made by splicing replacement text into the original statement bytes: the
//! parser finds where the old table is named, and everything else reaches the server exactly as the client
//! wrote it (escapes, comments, hex literals, letter case).

use std::ops::Range;

use sqlparser::tokenizer::Token;

use super::classify::{Read, Unroutable};
use super::source::{Source, Tok};
use crate::history::{COLUMNS, TableName, WIDENED_COLUMNS};

/// Edits to a statement's bytes: ranges replaced by new text, or cut out to leave a hole that is filled later.
#[derive(Debug)]
pub struct Splicer<'a> {
    bytes: &'a [u8],
    edits: Vec<(Range<usize>, Vec<u8>)>,
    /// Starts of the edits that are holes.
    holes: Vec<usize>,
}

impl<'a> Splicer<'a> {
    /// No edits yet to `bytes`.
    pub fn new(bytes: &'a [u8]) -> Splicer<'a> {
        Splicer { bytes, edits: Vec::new(), holes: Vec::new() }
    }

    /// Cuts `range` out, leaving a hole whose place [`Splicer::render_with_holes`] reports.
    pub fn hole(&mut self, range: Range<usize>) {
        self.holes.push(range.start);
        self.edits.push((range, Vec::new()));
    }

    /// Replaces `range` with `text` (an empty range inserts).
    pub fn replace(&mut self, range: Range<usize>, text: impl Into<Vec<u8>>) {
        self.edits.push((range, text.into()));
    }

    /// The bytes of `range` with the edits inside it applied; an edit straddling its edges, two edits
    /// overlapping, or a range outside the statement is an error rather than a guess.
    pub fn render(&self, range: Range<usize>) -> Result<Vec<u8>, Unroutable> {
        let within_statement = |r: &Range<usize>| r.start <= r.end && r.end <= self.bytes.len();
        if !within_statement(&range) || !self.edits.iter().all(|(r, _)| within_statement(r)) {
            return Err(Unroutable::new("a rewrite reaches outside the statement"));
        }
        let inside = |r: &Range<usize>| r.start >= range.start && r.end <= range.end;
        if self.edits.iter().any(|(r, _)| !inside(r) && r.start < range.end && r.end > range.start) {
            return Err(Unroutable::new("a rewrite straddles the part of the statement being copied"));
        }
        let mut edits: Vec<&(Range<usize>, Vec<u8>)> = self.edits.iter().filter(|(r, _)| inside(r)).collect();
        edits.sort_by_key(|(r, _)| (r.start, r.end));
        let mut out = Vec::with_capacity(range.len() + edits.iter().map(|(_, t)| t.len()).sum::<usize>());
        let mut at = range.start;
        for (r, text) in edits {
            if r.start < at {
                return Err(Unroutable::new("overlapping rewrites of one statement"));
            }
            out.extend_from_slice(&self.bytes[at..r.start]);
            out.extend_from_slice(text);
            at = r.end;
        }
        out.extend_from_slice(&self.bytes[at..range.end]);
        Ok(out)
    }

    /// The whole statement with every edit applied, and where each hole is in it, in order.
    pub fn render_with_holes(&self) -> Result<(Vec<u8>, Vec<usize>), Unroutable> {
        let out = self.render_all()?;
        let mut holes = self.holes.clone();
        holes.sort_unstable();
        let places = holes
            .iter()
            .map(|&start| {
                let before: Vec<&(Range<usize>, Vec<u8>)> = self.edits.iter().filter(|(r, _)| r.end <= start).collect();
                let grown: isize = before.iter().map(|(r, t)| t.len() as isize - r.len() as isize).sum();
                (start as isize + grown) as usize
            })
            .collect();
        Ok((out, places))
    }

    /// The whole statement with every edit applied.
    pub fn render_all(&self) -> Result<Vec<u8>, Unroutable> {
        self.render(0..self.bytes.len())
    }
}

/// The columns of the history table, in the old table's order, qualified with `alias`.
pub fn column_list(alias: &str, widen: bool) -> String {
    COLUMNS
        .iter()
        .map(|c| {
            if widen && WIDENED_COLUMNS.contains(c) {
                format!("CAST({alias}.`{c}` AS UNSIGNED) AS `{c}`")
            } else {
                format!("{alias}.`{c}`")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The column list an INSERT without one gets, so that values in the old table's order land in the right
/// columns of the extended table.
pub fn insert_columns() -> String {
    let names: Vec<String> = COLUMNS.iter().map(|c| format!("`{c}`")).collect();
    format!(" ({})", names.join(", "))
}

/// A read of the extended table in place of the old one, under the name the statement used, so qualified
/// column references mean what they meant. A statement that selects `*` gets a derived table with the old
/// table's column order (the extended table has `id` 6th); any other reads the table itself, which the server
/// plans as the plain table read it is.
pub fn extended_read(alias: &str, extended: &TableName, selects_wildcard: bool) -> String {
    if selects_wildcard {
        format!("(SELECT {} FROM {} AS {alias}) AS {alias}", column_list(alias, false), extended.quoted())
    } else {
        format!("{} AS {alias}", extended.quoted())
    }
}

/// A read of one table in place of the old one, with the old table's columns, order and (with `widen`) the
/// extended table's types, and the statement's condition inside so the table's indexes serve it.
pub fn single_read(alias: &str, condition: Option<&[u8]>, table: &TableName, widen: bool) -> String {
    let condition = condition.map(|c| format!(" WHERE ({})", String::from_utf8_lossy(c))).unwrap_or_default();
    format!("(SELECT {} FROM {} AS {alias}{condition}) AS {alias}", column_list(alias, widen), table.quoted())
}

/// The condition that an old row read as `alias` has no copy in the extended table (same server), so that each
/// id is read from the extended table when it has one there.
pub fn not_copied(alias: &str, extended: &TableName) -> String {
    let copy = "`csmh_proxy_copy`";
    format!("NOT EXISTS (SELECT 1 FROM {} AS {copy} WHERE {copy}.`id` = {alias}.`id`)", extended.quoted())
}

/// A read of both tables in place of the old one (both on one server): a `UNION ALL` derived table under the
/// name the statement used, with the statement's own condition inside each branch so each table is searched by
/// its indexes, and each id once — from the extended table when a migrated copy exists.
pub fn union_read(alias: &str, condition: Option<&[u8]>, old: &TableName, extended: &TableName) -> Vec<u8> {
    let condition = condition.map(|c| format!("({})", String::from_utf8_lossy(c)));
    let not_copied = not_copied(alias, extended);
    let old_where = match &condition {
        Some(c) => format!("{c} AND {not_copied}"),
        None => not_copied,
    };
    let extended_where = condition.map(|c| format!(" WHERE {c}")).unwrap_or_default();
    format!(
        "(SELECT {} FROM {} AS {alias} WHERE {old_where} UNION ALL SELECT {} FROM {} AS {alias}{extended_where}) AS {alias}",
        column_list(alias, true),
        old.quoted(),
        column_list(alias, false),
        extended.quoted(),
    )
    .into_bytes()
}

/// The name a read is known by in its statement: its alias, or the table's own name, as written.
pub fn read_alias<'s>(read: &Read, source: &Source<'s>, tokens: &[Tok]) -> &'s [u8] {
    let range = match &read.alias {
        Some(alias) => source.offset(alias.start)..source.offset(alias.end),
        None => {
            let end = source.offset(read.end);
            tokens.iter().rev().find(|t| t.range.end <= end).map_or(end..end, |t| t.range.clone())
        }
    };
    &source.bytes()[range]
}

/// A name as written (`h`, `` `h` ``, `` `a``b` ``) without its backquotes: the name the server compares.
pub fn unquoted(name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    match name.strip_prefix('`').and_then(|inner| inner.strip_suffix('`')) {
        Some(inner) => inner.replace("``", "`"),
        None => name.into_owned(),
    }
}

/// The byte range of the condition of the WHERE clause that follows the table factor ending at byte `after`.
pub fn where_condition(tokens: &[Tok], after: usize) -> Result<Range<usize>, Unroutable> {
    let lost = || Unroutable::new("cannot locate the WHERE clause next to the history table");
    let at = tokens.iter().position(|t| t.range.start >= after).ok_or_else(lost)?;
    if !tokens[at].is_keyword("WHERE") {
        return Err(lost());
    }
    let body = &tokens[at + 1..];
    let mut depth = 0usize;
    let mut end = None;
    for (i, tok) in body.iter().enumerate() {
        match &tok.token.token {
            Token::LParen => depth += 1,
            Token::RParen if depth == 0 => break,
            Token::RParen => depth -= 1,
            Token::SemiColon if depth == 0 => break,
            _ if depth == 0 && ENDS_WHERE.iter().any(|k| tok.is_keyword(k)) => break,
            _ => {}
        }
        end = Some(i);
    }
    let end = end.ok_or_else(lost)?;
    Ok(body[0].range.start..body[end].range.end)
}

/// An uncorrelated subquery in parentheses, as the `csmh` side would have to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subquery {
    /// Its bytes, parentheses included.
    pub range: Range<usize>,
    /// Its bytes inside the parentheses.
    pub inner: Range<usize>,
    /// It is the right side of `IN`/`NOT IN`, so its rows can be replaced by a list of values.
    pub after_in: bool,
}

/// The outermost `(SELECT ...)` groups of a statement.
pub fn subqueries(tokens: &[Tok]) -> Vec<Subquery> {
    let mut found = Vec::new();
    let mut i = 0;
    while i + 1 < tokens.len() {
        let opens_select = tokens[i].token.token == Token::LParen && tokens[i + 1].is_keyword("SELECT");
        if !opens_select {
            i += 1;
            continue;
        }
        let Some(close) = matching_paren(tokens, i) else { break };
        let after_in = i > 0 && tokens[i - 1].is_keyword("IN");
        found.push(Subquery {
            range: tokens[i].range.start..tokens[close].range.end,
            inner: tokens[i + 1].range.start..tokens[close - 1].range.end,
            after_in,
        });
        i = close + 1;
    }
    found
}

/// The index of the parenthesis closing the one at `open`.
fn matching_paren(tokens: &[Tok], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, tok) in tokens.iter().enumerate().skip(open) {
        match tok.token.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The byte offset of the first of `keywords` at the statement's own level (outside any parentheses).
pub fn top_level(tokens: &[Tok], keywords: &[&str]) -> Option<usize> {
    let mut depth = 0usize;
    for tok in tokens {
        match tok.token.token {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            _ if depth == 0 && keywords.iter().any(|k| tok.is_keyword(k)) => return Some(tok.range.start),
            _ => {}
        }
    }
    None
}

/// Where the statement's text ends: after its last token that is not a `;`.
pub fn statement_end(tokens: &[Tok]) -> usize {
    tokens.iter().rev().find(|t| t.token.token != Token::SemiColon).map_or(0, |t| t.range.end)
}

/// Keywords that end a WHERE clause at its own nesting level.
const ENDS_WHERE: [&str; 12] =
    ["GROUP", "HAVING", "ORDER", "LIMIT", "WINDOW", "FOR", "LOCK", "UNION", "EXCEPT", "INTERSECT", "INTO", "PROCEDURE"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splices_apply_in_order_and_leave_the_rest_untouched() {
        let sql = "SELECT a, 'x\\'y', 0xFF FROM t WHERE t.b = 1";
        let at = |needle: &str| sql.find(needle).unwrap();
        let mut s = Splicer::new(sql.as_bytes());
        s.replace(at("t.b")..at("t.b") + 1, "u");
        s.replace(at(" t ") + 1..at(" t ") + 2, "u");
        s.replace(at("a,")..at("a,"), "z, ");
        assert_eq!(text(s.render_all().unwrap()), "SELECT z, a, 'x\\'y', 0xFF FROM u WHERE u.b = 1");
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn edits_outside_the_statement_are_errors_not_panics() {
        let sql = b"SELECT a FROM t";
        for (start, end) in [(9, 7), (14, 99), (99, 99)] {
            let mut s = Splicer::new(sql);
            s.replace(start..end, "x");
            assert!(s.render_all().is_err(), "an edit of {start}..{end}");
            assert!(s.render_with_holes().is_err());
        }
        assert!(Splicer::new(sql).render(3..99).is_err());
    }

    #[test]
    fn holes_are_reported_where_they_land() {
        let sql = b"DELETE FROM t WHERE a IN (SELECT x FROM u) AND b IN (SELECT y FROM v)";
        let mut s = Splicer::new(sql);
        s.replace(12..13, "longer_name");
        s.hole(25..42);
        s.hole(52..69);
        let (out, holes) = s.render_with_holes().unwrap();
        assert_eq!(text(out.clone()), "DELETE FROM longer_name WHERE a IN  AND b IN ");
        assert_eq!(holes, vec![35, 45]);
    }

    #[test]
    fn finds_the_outermost_subqueries() {
        let sql = "SELECT a FROM t WHERE a IN (SELECT b FROM u WHERE c IN (SELECT d FROM w)) AND e = (SELECT 1)";
        let source = Source::new(sql.as_bytes());
        let found = subqueries(&source.tokens().unwrap());
        assert_eq!(found.len(), 2);
        assert_eq!(&sql[found[0].inner.clone()], "SELECT b FROM u WHERE c IN (SELECT d FROM w)");
        assert!(found[0].after_in);
        assert_eq!(&sql[found[1].range.clone()], "(SELECT 1)");
        assert!(!found[1].after_in);
    }

    #[test]
    fn overlapping_splices_are_refused() {
        let mut s = Splicer::new(b"abcdef");
        s.replace(1..4, "x");
        s.replace(2..5, "y");
        assert!(s.render_all().is_err());
    }

    #[test]
    fn where_condition_stops_at_the_next_clause_of_its_level() {
        let sql = "SELECT * FROM t WHERE a IN (SELECT b FROM u WHERE c = 1 ORDER BY b LIMIT 2) AND d ORDER BY id DESC";
        let source = Source::new(sql.as_bytes());
        let tokens = source.tokens().unwrap();
        let range = where_condition(&tokens, sql.find(" WHERE").unwrap()).unwrap();
        assert_eq!(&sql[range], "a IN (SELECT b FROM u WHERE c = 1 ORDER BY b LIMIT 2) AND d");
        let nested = "SELECT x FROM u WHERE y IN (SELECT z FROM t WHERE q = 2)";
        let source = Source::new(nested.as_bytes());
        let tokens = source.tokens().unwrap();
        let range = where_condition(&tokens, nested.rfind(" WHERE").unwrap()).unwrap();
        assert_eq!(&nested[range], "q = 2");
    }
}
