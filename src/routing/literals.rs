//! The literals of a statement, found without sqlparser's tokenizer: the route cache's key is the statement with
//! its number and string literals masked, and a cache hit splices the new literals into the cached statements.
//!
//! The scanner is hand-written because a hit must cost a few microseconds, and sqlparser's tokenizer alone takes
//! 4.5–11 µs on edxapp's history statements (it builds a `String` per token and walks the text by `char`).
//! General-purpose SQL lexers would have to agree with sqlparser's tokenizer, which decides the routes, on every
//! corner of MySQL's syntax; this one only has to find where literals are, one pass over the bytes with no
//! allocation but the key, and it gives up on anything where it could disagree:
//!
//! - text that is not UTF-8 (the router then reads the bytes as Latin-1, see `routing/source.rs`) or that holds a
//!   NUL byte outside a literal (the key masks literals with NUL);
//! - a quote right after a word (`X'…'`, `B'…'`, `N'…'`, `x'…'` after a period, `@'…'`), except after a
//!   character-set introducer (`_utf8mb4'…'`, `_binary'…'`), whose string is an ordinary string token;
//! - a number that runs into a letter, a period or a quote (`1e5`, `0x2A`, `123abc`, `1.`, `1L`), which the
//!   tokenizer reads as an exponent, a hex literal or a word, and a word ending in `e` before a sign (`.5e-3`);
//! - `/*!` comments, whose contents MySQL runs and sqlparser tokenizes; `--` followed by a non-ASCII character
//!   (Unicode white space would make it a comment);
//! - an unterminated string, identifier or comment.
//!
//! It reads strings as sqlparser's MySQL tokenizer does, whatever the server's `sql_mode`: a backslash escapes the
//! next character and a doubled quote is one quote. Under `NO_BACKSLASH_ESCAPES` the server reads such a string
//! differently, but the uncached router reads it as the scanner does, so the cache changes nothing there.
//! Everything that is not a masked literal (keywords, identifiers in backquotes, white space, comments, numbers
//! after a period or a `?`, hex and bit literals) is kept byte for byte in the key, so two statements with one key
//! differ only in the values of their masked literals. Property tests check that every masked range is one
//! literal token of sqlparser's tokenizer.

use std::ops::Range;

/// What kind of literal a masked range is; part of the key, so a number never stands in for a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LiteralKind {
    /// Decimal digits, with a fraction or not: `42`, `1.5`.
    Number,
    /// A string in single quotes (`b'\''`) or double quotes (`b'"'`, a string in MySQL's default mode).
    Quoted(u8),
}

impl LiteralKind {
    /// The byte standing for the literal in the key, after a NUL.
    fn tag(self) -> u8 {
        match self {
            LiteralKind::Number => b'n',
            LiteralKind::Quoted(quote) => quote,
        }
    }
}

/// One literal: where it lies in the statement, quotes included, and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Literal {
    /// Its bytes in the statement.
    pub range: Range<usize>,
    /// Number or string.
    pub kind: LiteralKind,
}

/// A statement's literals and its key: the statement with each literal replaced by a NUL and its kind's tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// The statement with its literals masked.
    pub key: Vec<u8>,
    /// Its literals, in order.
    pub literals: Vec<Literal>,
}

impl Scan {
    /// The bytes of literal `index` in `sql`, the statement scanned.
    pub fn literal<'s>(&self, sql: &'s [u8], index: usize) -> &'s [u8] {
        &sql[self.literals[index].range.clone()]
    }
}

/// The literals and key of `sql`, or `None` where the scanner might disagree with sqlparser's tokenizer.
pub fn scan(sql: &[u8]) -> Option<Scan> {
    std::str::from_utf8(sql).ok()?;
    Scanner { sql, at: 0, scan: Scan { key: Vec::with_capacity(sql.len()), literals: Vec::new() } }.run()
}

/// Bytes a word, a number or a qualified name is made of: what MySQL's dialect takes as identifier characters
/// (ASCII letters and digits, `_`, `$`, `@`, and every non-ASCII character), and the period.
fn is_run_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'$' | b'@' | b'.') || !byte.is_ascii()
}

/// ASCII white space as `char::is_whitespace` has it.
fn is_ascii_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

struct Scanner<'a> {
    sql: &'a [u8],
    at: usize,
    scan: Scan,
}

impl Scanner<'_> {
    fn run(mut self) -> Option<Scan> {
        while let Some(&byte) = self.sql.get(self.at) {
            let end = match byte {
                0 => return None,
                b'\'' | b'"' => {
                    let end = self.quoted_end(self.at, byte, true)?;
                    self.literal(end, LiteralKind::Quoted(byte));
                    continue;
                }
                b'`' => self.quoted_end(self.at, b'`', false)?,
                b'#' => self.line_end(self.at),
                b'-' => self.dashes_end()?,
                b'/' => self.slash_end()?,
                b'0'..=b'9' if !self.follows(b'?') => match self.number_end()? {
                    Some(end) => {
                        self.literal(end, LiteralKind::Number);
                        continue;
                    }
                    None => self.run_end()?,
                },
                byte if is_run_byte(byte) => self.run_end()?,
                _ => self.at + 1,
            };
            self.verbatim(end);
        }
        Some(self.scan)
    }

    /// Copies the bytes up to `end` into the key.
    fn verbatim(&mut self, end: usize) {
        self.scan.key.extend_from_slice(&self.sql[self.at..end]);
        self.at = end;
    }

    /// Masks the literal from here to `end`.
    fn literal(&mut self, end: usize, kind: LiteralKind) {
        self.scan.key.extend_from_slice(&[0, kind.tag()]);
        self.scan.literals.push(Literal { range: self.at..end, kind });
        self.at = end;
    }

    fn follows(&self, byte: u8) -> bool {
        self.at > 0 && self.sql[self.at - 1] == byte
    }

    /// The end of the quoted text opening at `open` with `quote`: a doubled quote stands for itself, and in a
    /// string (`escapes`) a backslash takes the next byte with it. `None` when it does not end.
    fn quoted_end(&self, open: usize, quote: u8, escapes: bool) -> Option<usize> {
        let mut at = open + 1;
        loop {
            match *self.sql.get(at)? {
                b if b == quote && self.sql.get(at + 1) == Some(&quote) => at += 2,
                b if b == quote => return Some(at + 1),
                b'\\' if escapes => {
                    self.sql.get(at + 1)?;
                    at += 2;
                }
                _ => at += 1,
            }
        }
    }

    /// The end of a comment that runs to the line's end (the line feed is not part of it).
    fn line_end(&self, from: usize) -> usize {
        self.sql[from..].iter().position(|&b| b == b'\n').map_or(self.sql.len(), |i| from + i)
    }

    /// At a `-`: a `-- ` comment, or the operator.
    fn dashes_end(&self) -> Option<usize> {
        if self.sql.get(self.at + 1) != Some(&b'-') {
            return Some(self.at + 1);
        }
        match self.sql.get(self.at + 2) {
            Some(&b) if is_ascii_space(b) => Some(self.line_end(self.at)),
            Some(&b) if !b.is_ascii() => None,
            _ => Some(self.at + 1),
        }
    }

    /// At a `/`: a `/* */` comment, or the operator. A `/*!` comment is MySQL's executable comment, whose
    /// contents sqlparser tokenizes: the scanner does not follow it there.
    fn slash_end(&self) -> Option<usize> {
        if self.sql.get(self.at + 1) != Some(&b'*') {
            return Some(self.at + 1);
        }
        if self.sql.get(self.at + 2) == Some(&b'!') {
            return None;
        }
        let body = self.at + 2;
        self.sql[body..].windows(2).position(|w| w == b"*/").map(|i| body + i + 2)
    }

    /// At a digit that starts a token: the end of a plain number (`digits` or `digits.digits`), `Some(None)`
    /// when the digits are part of a run of word bytes (after a period or inside a word) and kept as they are,
    /// `None` when the number runs into something the tokenizer would read otherwise.
    fn number_end(&self) -> Option<Option<usize>> {
        if self.at > 0 && is_run_byte(self.sql[self.at - 1]) {
            return Some(None);
        }
        let digits_from = |from: usize| from + self.sql[from..].iter().take_while(|b| b.is_ascii_digit()).count();
        let mut end = digits_from(self.at);
        if self.sql.get(end) == Some(&b'.') && self.sql.get(end + 1).is_some_and(u8::is_ascii_digit) {
            end = digits_from(end + 1);
        }
        match self.sql.get(end) {
            Some(&b) if is_run_byte(b) || matches!(b, b'\'' | b'"' | b'`') => None,
            _ => Some(Some(end)),
        }
    }

    /// The end of a run of word bytes kept as they are. A quote right after it is a prefixed literal (`X'…'`,
    /// `N'…'`) unless the run is a character-set introducer (`_utf8mb4`), whose string is a string token; a sign
    /// after an `e` may continue a number's exponent (`.5e-3`).
    fn run_end(&self) -> Option<usize> {
        let run = &self.sql[self.at..];
        let end = self.at + run.iter().take_while(|&&b| is_run_byte(b)).count();
        let run = &self.sql[self.at..end];
        let introducer = run[0] == b'_' && run[1..].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_');
        match self.sql.get(end) {
            Some(b'\'' | b'"') if !introducer => None,
            Some(b'+' | b'-') if matches!(run.last(), Some(b'e' | b'E')) => None,
            _ => Some(end),
        }
    }
}

#[cfg(test)]
mod tests;
