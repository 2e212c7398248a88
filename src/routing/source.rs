//! A statement's text as the parser sees it, its tokens with byte ranges in the original bytes, and the places
//! where it names the old history table.
//!
//! Statements arrive as bytes in the client's character set. UTF-8 text is parsed as it is; anything else is
//! mapped byte for byte to Latin-1 characters, which keeps every byte's position recoverable, so replacement text
//! is always spliced into the original bytes.

use std::borrow::Cow;
use std::ops::Range;

use sqlparser::dialect::MySqlDialect;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use crate::history::TableName;

/// A statement's bytes, the text handed to the parser, and a map between the two.
#[derive(Debug)]
pub struct Source<'a> {
    bytes: &'a [u8],
    text: Cow<'a, str>,
    /// Whether the bytes are not UTF-8, and `text` is their Latin-1 mapping.
    latin1: bool,
    /// Whether every character of `text` is one byte of `bytes`: ASCII text, or the Latin-1 mapping of
    /// non-UTF-8 bytes. Then a location's offset is its line's start plus its column.
    one_byte_chars: bool,
    /// Offset in `bytes` where each line starts (a line feed is one byte, and the same byte, in both).
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    /// Wraps the statement bytes.
    pub fn new(bytes: &'a [u8]) -> Source<'a> {
        let (text, latin1) = match std::str::from_utf8(bytes) {
            Ok(text) => (Cow::Borrowed(text), false),
            Err(_) => (Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()), true),
        };
        let one_byte_chars = latin1 || text.is_ascii();
        let line_starts = std::iter::once(0).chain(line_breaks(bytes)).collect();
        Source { bytes, text, latin1, one_byte_chars, line_starts }
    }

    /// Whether the bytes are not UTF-8, so that the tokenizer reads them as Latin-1, one character a byte.
    pub fn is_latin1(&self) -> bool {
        self.latin1
    }

    /// Whether a `--` is followed by a character on which the server and the tokenizer disagree whether a comment
    /// starts there: the server starts one before a space or any control character (below 0x20, or 0x7F), the
    /// tokenizer before any Unicode white space. `--\x01'` opens a string for the tokenizer that the server never
    /// sees; `--\u{3000}` starts a comment the server reads as SQL.
    pub fn has_dash_dash_read_otherwise(&self) -> bool {
        let bytes = self.bytes;
        (0..bytes.len().saturating_sub(2)).filter(|&at| bytes[at] == b'-' && bytes[at + 1] == b'-').any(|at| {
            let next = match self.latin1 {
                true => char::from(bytes[at + 2]),
                // After an ASCII byte: a character boundary of the UTF-8 text, which is the bytes.
                false => self.text[at + 2..].chars().next().unwrap_or(' '),
            };
            next.is_whitespace() != (next == ' ' || next.is_ascii_control())
        })
    }

    /// The original bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The text the tokenizer and parser read.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The byte offset in the original bytes of a tokenizer location (1-based line and character column).
    pub fn offset(&self, location: Location) -> usize {
        Offsets::new(self).of(location)
    }

    /// Tokenizes the text (escapes kept as written), giving each token its byte range in the original.
    pub fn tokens(&self) -> Result<Vec<Tok>, String> {
        let dialect = MySqlDialect {};
        let tokens = Tokenizer::new(&dialect, &self.text)
            .with_unescape(false)
            .tokenize_with_location()
            .map_err(|e| e.to_string())?;
        let mut offsets = Offsets::new(self);
        Ok(tokens
            .into_iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .map(|t| Tok { range: offsets.of(t.span.start)..offsets.of(t.span.end), token: t })
            .collect())
    }
}

/// Offsets of the line feeds' successors: where each line after the first starts.
fn line_breaks(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    bytes.iter().enumerate().filter(|&(_, &b)| b == b'\n').map(|(i, _)| i + 1)
}

/// Maps tokenizer locations to byte offsets. Text of one-byte characters needs no walking; other UTF-8 text is
/// walked forward from the previous location, so mapping every token of a statement in order is one pass.
struct Offsets<'s, 'a> {
    source: &'s Source<'a>,
    /// The last location mapped (line, column) and its byte offset; the walk resumes there.
    line: u64,
    column: u64,
    at: usize,
}

impl<'s, 'a> Offsets<'s, 'a> {
    fn new(source: &'s Source<'a>) -> Offsets<'s, 'a> {
        Offsets { source, line: 1, column: 1, at: 0 }
    }

    /// The byte offset of `location`; past the end of the text for locations beyond it.
    fn of(&mut self, location: Location) -> usize {
        let source = self.source;
        let line_start = |line: u64| {
            let index = (line as usize).saturating_sub(1);
            source.line_starts.get(index).copied().unwrap_or(source.bytes.len())
        };
        let column = location.column.max(1);
        if source.one_byte_chars {
            return (line_start(location.line) + (column - 1) as usize).min(source.bytes.len());
        }
        if location.line != self.line || column < self.column {
            (self.line, self.column, self.at) = (location.line, 1, line_start(location.line));
        }
        let ahead = (column - self.column) as usize;
        let rest = &source.text[self.at..];
        self.at += rest.char_indices().nth(ahead).map_or(rest.len(), |(i, _)| i);
        self.column = column;
        self.at
    }
}

/// A token that is not white space, with its range in the original bytes.
#[derive(Debug, Clone)]
pub struct Tok {
    /// The token and its location as the parser reports it.
    pub token: TokenWithSpan,
    /// Where it lies in the original bytes.
    pub range: Range<usize>,
}

impl Tok {
    /// The identifier or keyword this token is, without quotes; `None` for other tokens.
    pub fn word(&self) -> Option<&str> {
        match &self.token.token {
            Token::Word(w) => Some(&w.value),
            _ => None,
        }
    }

    /// Whether the token is the keyword `keyword` (unquoted, any case).
    pub fn is_keyword(&self, keyword: &str) -> bool {
        matches!(&self.token.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(keyword))
    }

    /// Whether the token is `.`, between the parts of a qualified name.
    pub fn is_period(&self) -> bool {
        self.token.token == Token::Period
    }
}

/// Whether `tokens` are several statements: a `;` with more after it.
pub fn several_statements(tokens: &[Tok]) -> bool {
    let end = tokens.iter().position(|t| t.token.token == Token::SemiColon).unwrap_or(tokens.len());
    end + 1 < tokens.len()
}

/// Functions whose value belongs to the session or the server that evaluates them (who is logged in, what the
/// session last inserted or counted, its locks, the server's files and sequences): written with parentheses.
const SESSION_FUNCTIONS: [&str; 21] = [
    "CONNECTION_ID",
    "DATABASE",
    "FOUND_ROWS",
    "GET_LOCK",
    "IS_FREE_LOCK",
    "IS_USED_LOCK",
    "LAST_INSERT_ID",
    "LASTVAL",
    "LOAD_FILE",
    "MASTER_GTID_WAIT",
    "MASTER_POS_WAIT",
    "NEXTVAL",
    "RELEASE_ALL_LOCKS",
    "RELEASE_LOCK",
    "ROW_COUNT",
    "SCHEMA",
    "SESSION_USER",
    "SETVAL",
    "SOURCE_POS_WAIT",
    "SYSTEM_USER",
    "USER",
];

/// Words that read or set the session without parentheses: session functions the server also reads so, and
/// `SQL_CALC_FOUND_ROWS`, which leaves a count for the session's next `FOUND_ROWS()`.
const SESSION_KEYWORDS: [&str; 3] = ["CURRENT_ROLE", "CURRENT_USER", "SQL_CALC_FOUND_ROWS"];

/// The session's system variables that the proxy sets on its `csmh` connection to the client's values before a
/// statement runs there (`session/csmh.rs` reads and applies them), so a statement may read them there.
pub const SETTINGS_APPLIED_ON_CSMH: [&str; 11] = [
    "autocommit",
    "character_set_client",
    "character_set_connection",
    "character_set_results",
    "collation_connection",
    "sql_mode",
    "time_zone",
    "transaction_isolation",
    "transaction_read_only",
    "tx_isolation",
    "tx_read_only",
];

/// The first thing in `tokens` whose value belongs to the session that evaluates it: a user variable (`@v`,
/// `@'v'`), a system variable (`@@v`, `@@global.v`) but the settings of [`SETTINGS_APPLIED_ON_CSMH`], or one of
/// [`SESSION_FUNCTIONS`] (called by its name bare or quoted: the server reads `` `DATABASE`() `` as the built-in)
/// and [`SESSION_KEYWORDS`]. Run on another server's connection (the proxy's own, logged in with its account),
/// such a statement would read that session and server, not the client's.
pub fn bound_to_the_session(tokens: &[Tok]) -> Option<String> {
    tokens.iter().enumerate().find_map(|(i, t)| {
        let called = tokens.get(i + 1).is_some_and(|next| next.token.token == Token::LParen);
        let (word, quoted) = match &t.token.token {
            Token::AtSign | Token::AtAt => return Some("@".to_owned()),
            Token::Word(w) => (&w.value, w.quote_style.is_some()),
            Token::DoubleQuotedString(name) if called => (name, true),
            _ => return None,
        };
        let among = |names: &[&str]| names.iter().any(|name| name.eq_ignore_ascii_case(word));
        let bound = match word.strip_prefix("@@") {
            _ if quoted => called && among(&SESSION_FUNCTIONS),
            Some(variable) => !is_applied_setting(variable, &tokens[i + 1..]),
            None => word.starts_with('@') || among(&SESSION_KEYWORDS) || (called && among(&SESSION_FUNCTIONS)),
        };
        bound.then(|| word.to_ascii_uppercase())
    })
}

/// Whether the system variable `@@variable`, followed by `rest`, is the session's value of one of
/// [`SETTINGS_APPLIED_ON_CSMH`]: `@@name`, `@@session.name` or `@@local.name`.
fn is_applied_setting(variable: &str, rest: &[Tok]) -> bool {
    let name = match rest {
        [period, name, ..]
            if period.is_period()
                && (variable.eq_ignore_ascii_case("session") || variable.eq_ignore_ascii_case("local")) =>
        {
            name.word().unwrap_or_default()
        }
        _ => variable,
    };
    SETTINGS_APPLIED_ON_CSMH.iter().any(|setting| setting.eq_ignore_ascii_case(name))
}

/// Whether an unquoted word of `tokens` holds a character above U+007F. In a statement that is not UTF-8
/// ([`Source::is_latin1`]) that is a byte the client's single-byte character set may read as a space (latin1's
/// 0xA0, which the tokenizer reads as a letter): the server would split the word where the tokenizer does not.
/// In quotes, strings and comments such a byte separates nothing.
fn has_word_with_high_bytes(tokens: &[Tok]) -> bool {
    tokens.iter().any(|t| matches!(&t.token.token, Token::Word(w) if w.quote_style.is_none() && !w.value.is_ascii()))
}

/// Where `tokens` hold text in double quotes: a string for the tokenizer, a name under `ANSI_QUOTES`.
pub fn double_quoted(tokens: &[Tok]) -> impl Iterator<Item = Range<usize>> + '_ {
    tokens.iter().filter(|t| matches!(t.token.token, Token::DoubleQuotedString(_))).map(|t| t.range.clone())
}

/// The first string among `tokens` (of the statement `bytes`) that a session with `NO_BACKSLASH_ESCAPES` in its
/// `sql_mode` reads otherwise than the tokenizer, which always takes a backslash as an escape: there a backslash
/// is an ordinary character, so a string with a backslash before a quote ends earlier, and what follows is read
/// as SQL. `None` when every string ends where the tokenizer ends it: then both readings give the same tokens
/// (only the values of strings with backslashes differ, and statements are spliced, never re-printed).
pub fn string_read_otherwise_without_backslash_escapes(tokens: &[Tok], bytes: &[u8]) -> Option<Range<usize>> {
    tokens.iter().map(|tok| tok.range.clone()).find(|range| {
        let raw = &bytes[range.clone()];
        let backquoted = raw.first() == Some(&b'`');
        let Some(open) = raw.iter().position(|&b| b == b'\'' || b == b'"') else { return false };
        raw.contains(&b'\\') && !backquoted && end_without_backslash_escapes(raw, open) != Some(raw.len())
    })
}

/// Where the string whose opening quote is at `open` in `raw` ends (past its closing quote) when a backslash is
/// an ordinary character and a doubled quote stands for one quote; `None` if it does not end.
fn end_without_backslash_escapes(raw: &[u8], open: usize) -> Option<usize> {
    let quote = raw[open];
    let mut at = open + 1;
    while at < raw.len() {
        if raw[at] == quote {
            if raw.get(at + 1) != Some(&quote) {
                return Some(at + 1);
            }
            at += 1;
        }
        at += 1;
    }
    None
}

/// A way the server reads a statement's text otherwise than sqlparser's tokenizer whatever the session's
/// settings, so that the tokens cannot show what the server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misreading {
    /// A name or keyword with a byte above 0x7F in a statement that is not UTF-8 ([`has_word_with_high_bytes`]).
    HighByteInWord,
    /// `--` before a control character or before white space beyond ASCII
    /// ([`Source::has_dash_dash_read_otherwise`]).
    DashDash,
    /// `b"…"`: a byte string without escapes for the tokenizer, the name `b` and a string for the server.
    DoubleQuotedByteString,
    /// `/*M!…*/`, or `/*!` with a version: the server runs the contents or not by its version, the tokenizer
    /// always reads inside `/*!` and never inside `/*M!`.
    ConditionalComment,
    /// `@` or `@@` before a character no name holds: the tokenizer takes that character into one word with them
    /// (a backquote after `@@` opens a quoted name to the tokenizer and closes one to the server; after
    /// `'user'@` a `#`, `/*` or `;` starts a comment or a statement for the server).
    SwallowedByAt,
}

impl Misreading {
    /// What the statement holds, for the error that refuses it.
    pub fn describe(self) -> &'static str {
        match self {
            Misreading::HighByteInWord => {
                "a name or keyword with a byte above 0x7F in a statement that is not UTF-8: in a single-byte \
                 character set such a byte can be a space (latin1's 0xA0), where the tokenizer reads part of a name"
            }
            Misreading::DashDash => {
                "`--` before a control character (a comment for the server, not for the router) or before white \
                 space beyond ASCII (the reverse)"
            }
            Misreading::DoubleQuotedByteString => {
                "`b\"...\"`, a byte string without escapes for the router, a name and a string for the server"
            }
            Misreading::ConditionalComment => {
                "a conditional comment (`/*M!...*/`, or `/*!` with a version), whose contents the server runs or \
                 not by its version"
            }
            Misreading::SwallowedByAt => {
                "`@` or `@@` right before a quote, a comment or a sign, which the router reads as part of one name"
            }
        }
    }
}

/// The first way the server may read the statement of `source`, tokenized as `tokens`, otherwise than the
/// tokenizer, whatever the session's settings.
pub fn misreading(source: &Source<'_>, tokens: &[Tok]) -> Option<Misreading> {
    if source.is_latin1() && has_word_with_high_bytes(tokens) {
        Some(Misreading::HighByteInWord)
    } else if source.has_dash_dash_read_otherwise() {
        Some(Misreading::DashDash)
    } else if tokens.iter().any(|t| matches!(t.token.token, Token::DoubleQuotedByteStringLiteral(_))) {
        Some(Misreading::DoubleQuotedByteString)
    } else if has_conditional_comment(source.bytes()) {
        Some(Misreading::ConditionalComment)
    } else if tokens.iter().any(has_swallowed_character) {
        Some(Misreading::SwallowedByAt)
    } else {
        None
    }
}

/// Whether `tok` is an unquoted word holding an ASCII character no unquoted name or variable holds: only the
/// tokenizer's `@` and `@@` take one in ([`Misreading::SwallowedByAt`]).
fn has_swallowed_character(tok: &Tok) -> bool {
    let is_odd = |c: char| c.is_ascii() && !(c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '@'));
    matches!(&tok.token.token, Token::Word(w) if w.quote_style.is_none() && w.value.chars().any(is_odd))
}

/// Whether `bytes` hold `/*M!` or `/*!` followed by a digit (looked for anywhere, in strings too).
fn has_conditional_comment(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| w == b"/*M!" || (w.starts_with(b"/*!") && w[3].is_ascii_digit()))
}

/// Whether `tokens` are a statement that prepares or runs SQL given as text, `PREPARE name FROM …` or MariaDB's
/// `EXECUTE IMMEDIATE …`: what it runs is a string to the router.
pub fn runs_sql_from_text(tokens: &[Tok]) -> bool {
    match tokens {
        [first, second, ..] if first.is_keyword("EXECUTE") => second.is_keyword("IMMEDIATE"),
        [first, ..] => first.is_keyword("PREPARE"),
        [] => false,
    }
}

/// Whether `bytes` hold an executable comment, `/*! ... */` or MariaDB's `/*M! ... */` (looked for anywhere, in
/// strings too): the server runs its contents, and the tokenizer reads them too but places their tokens at the
/// comment's start, so no splice inside one would land on the right bytes.
pub fn has_executable_comment(bytes: &[u8]) -> bool {
    bytes.windows(3).any(|w| w == b"/*!") || bytes.windows(4).any(|w| w == b"/*M!")
}

/// How the old table is named at one place in a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mention {
    /// As a table: `t` or `` `edxapp`.`t` `` (the range covers the schema too).
    Table {
        /// Bytes of the name, schema included.
        range: Range<usize>,
        /// Where the parser locates the name's first part.
        start: Location,
    },
    /// As the qualifier of a column: the `t` of `t.col`, or the `edxapp.t` of `edxapp.t.col`.
    Qualifier {
        /// Bytes of the qualifier, without the period after it.
        range: Range<usize>,
        /// Whether the schema is part of it.
        with_schema: bool,
    },
}

impl Mention {
    /// Whether this mention lies inside `range`.
    pub fn within(&self, range: &Range<usize>) -> bool {
        let at = match self {
            Mention::Table { range, .. } | Mention::Qualifier { range, .. } => range,
        };
        at.start >= range.start && at.end <= range.end
    }
}

/// Finds every place the tokens name the old table `old`: unquoted or in backquotes, bare or qualified with its
/// own schema. Names in string literals and comments are not tokens of this kind, so they never count; a name
/// qualified with another schema is another table.
pub fn mentions(tokens: &[Tok], old: &TableName) -> Vec<Mention> {
    let is_table = |t: &Tok| t.word().is_some_and(|w| w.eq_ignore_ascii_case(old.table()));
    let is_schema = |t: &Tok| t.word().is_some_and(|w| w.eq_ignore_ascii_case(old.schema()));
    let mut found = Vec::new();
    for (i, tok) in tokens.iter().enumerate().filter(|(_, t)| is_table(t)) {
        let qualified_by = (i >= 2 && tokens[i - 1].is_period()).then(|| &tokens[i - 2]);
        if qualified_by.is_some_and(|schema| !is_schema(schema)) {
            continue;
        }
        let first = qualified_by.unwrap_or(tok);
        let range = first.range.start..tok.range.end;
        let qualifies_a_column = tokens.get(i + 1).is_some_and(Tok::is_period);
        found.push(if qualifies_a_column {
            Mention::Qualifier { range, with_schema: qualified_by.is_some() }
        } else {
            Mention::Table { range, start: first.token.span.start }
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn old() -> TableName {
        "edxapp.courseware_studentmodulehistory".parse().unwrap()
    }

    fn mentioned(sql: &str) -> Vec<(&str, bool)> {
        let source = Source::new(sql.as_bytes());
        let tokens = source.tokens().unwrap();
        mentions(&tokens, &old())
            .into_iter()
            .map(|m| match m {
                Mention::Table { range, .. } => (&sql[range], true),
                Mention::Qualifier { range, .. } => (&sql[range], false),
            })
            .collect()
    }

    #[test]
    fn finds_tables_and_qualifiers_in_every_spelling() {
        let sql = "SELECT `courseware_studentmodulehistory`.`id`, edxapp.courseware_studentmodulehistory.state \
                   FROM `edxapp`.`courseware_studentmodulehistory` JOIN courseware_studentmodulehistory h";
        assert_eq!(
            mentioned(sql),
            vec![
                ("`courseware_studentmodulehistory`", false),
                ("edxapp.courseware_studentmodulehistory", false),
                ("`edxapp`.`courseware_studentmodulehistory`", true),
                ("courseware_studentmodulehistory", true),
            ]
        );
    }

    #[test]
    fn literals_comments_and_other_schemas_do_not_count() {
        let sql = "SELECT 'courseware_studentmodulehistory', \"courseware_studentmodulehistory\" /* \
                   courseware_studentmodulehistory */ FROM other.courseware_studentmodulehistory -- courseware_studentmodulehistory";
        assert_eq!(mentioned(sql), vec![]);
    }

    #[test]
    fn every_token_range_covers_its_text_on_multibyte_lines() {
        let sql = "SELECT 'é😀', `naïve`\n  , x /* ü */ FROM t WHERE s = 'ß'\nAND y = 'ÿ' -- ok\n ORDER BY `ñ`";
        let source = Source::new(sql.as_bytes());
        for tok in source.tokens().unwrap() {
            let text = &sql[tok.range.clone()];
            let expected = tok.token.token.to_string();
            assert_eq!(text.trim_end(), expected.trim_end(), "{tok:?}");
        }
    }

    #[test]
    fn byte_ranges_survive_multibyte_and_non_utf8_text() {
        let sql = "SELECT 'héllo 😀',\n  x FROM courseware_studentmodulehistory";
        assert_eq!(mentioned(sql), vec![("courseware_studentmodulehistory", true)]);
        let mut latin1 = b"SELECT '\xe9t\xe9' FROM courseware_studentmodulehistory WHERE state = '\xff'".to_vec();
        let source = Source::new(&latin1);
        let tokens = source.tokens().unwrap();
        let found = mentions(&tokens, &old());
        let [Mention::Table { range, .. }] = found.as_slice() else { panic!("{found:?}") };
        latin1.truncate(range.end);
        assert!(latin1.ends_with(b" FROM courseware_studentmodulehistory"));
    }
}
