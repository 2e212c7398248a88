//! Session settings answered early: the statements a client library sends right after its login to set its
//! session up (`SET NAMES`, `SET autocommit`, the isolation level, `sql_mode`), which the proxy answers itself,
//! with the server's own answer to the same statement in the same state, and sends on with the client's next
//! command (docs/protocol.md, "Session settings answered early").
//!
//! Django opens a connection per web request and sends four to six such statements on it before its first
//! query: each is a round trip to the server through any relay. Answered early, each is a round trip to the
//! proxy only, and the server gets them all in one write, with the statement that follows.
//!
//! This module holds the pure part: which statements qualify ([`answerable`]) and the answers learned from the
//! servers ([`LearnedAnswers`]). A statement qualifies only if, once run successfully from a session's state,
//! it cannot fail from the same state, and sets nothing but the session's own settings.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

/// The longest statement that may be answered early: the drivers' setup statements are short.
pub const MAX_STATEMENT_BYTES: usize = 128;

/// The most statements of one session answered early and not sent yet: a client that sends more before another
/// statement has the rest relayed, so that what is held for it stays small.
pub const MAX_AHEAD: usize = 16;

/// The most answers kept: one per distinct statement, server, account, client capabilities and session state.
const MAX_LEARNED: usize = 256;

/// The status flags that are the session's state rather than the last statement's: in a transaction,
/// autocommit, a read-only transaction, `NO_BACKSLASH_ESCAPES`, MariaDB's `ANSI_QUOTES`.
const SESSION_STATUS: u16 = 0x0001 | 0x0002 | 0x0200 | 0x2000 | 0x8000;

/// Whether `statement` is a session setting the proxy may answer early, once it knows the server's answer:
/// `SET NAMES name [COLLATE name]`, `SET [SESSION] autocommit = 0|1|ON|OFF|TRUE|FALSE` (also `@@autocommit`,
/// `@@session.autocommit`), `SET SESSION TRANSACTION ISOLATION LEVEL level`, and `SET [SESSION] sql_mode =
/// 'modes'`, written as drivers write them: no comments, no other statement, names of letters, digits and `_`.
pub fn answerable(statement: &[u8]) -> bool {
    if statement.len() > MAX_STATEMENT_BYTES {
        return false;
    }
    let Some(lexemes) = lex(statement) else { return false };
    match lexemes.as_slice() {
        [set, names, charset] if set.is("SET") && names.is("NAMES") => charset.is_name(),
        [set, names, charset, collate, collation] if set.is("SET") && names.is("NAMES") && collate.is("COLLATE") => {
            charset.is_name() && collation.is_name()
        }
        [set, session, transaction, isolation, level, rest @ ..]
            if set.is("SET")
                && session.is("SESSION")
                && transaction.is("TRANSACTION")
                && isolation.is("ISOLATION")
                && level.is("LEVEL") =>
        {
            is_isolation_level(rest)
        }
        [set, session, rest @ ..] if set.is("SET") && session.is("SESSION") => is_assignment(rest),
        [set, rest @ ..] if set.is("SET") => is_assignment(rest),
        _ => false,
    }
}

/// Whether `lexemes` are `variable = value` of a variable that may be set early, with a value it takes.
fn is_assignment(lexemes: &[Lexeme<'_>]) -> bool {
    let [Lexeme::Word(variable), Lexeme::Equals, value] = lexemes else { return false };
    match session_variable(variable).to_ascii_lowercase().as_slice() {
        b"autocommit" => ["0", "1", "ON", "OFF", "TRUE", "FALSE"].iter().any(|word| value.is(word)),
        b"sql_mode" => {
            matches!(value, Lexeme::Quoted(b'\'', modes) if modes.iter().all(|b| b.is_ascii_alphabetic() || matches!(b, b'_' | b',')))
        }
        _ => false,
    }
}

/// The name of a session variable without its `@@` or `@@session.` prefix.
fn session_variable(word: &[u8]) -> &[u8] {
    let Some(rest) = word.strip_prefix(b"@@") else { return word };
    match rest.get(..8) {
        Some(prefix) if prefix.eq_ignore_ascii_case(b"session.") => &rest[8..],
        _ => rest,
    }
}

/// Whether `lexemes` name an isolation level.
fn is_isolation_level(lexemes: &[Lexeme<'_>]) -> bool {
    match lexemes {
        [read, level] if read.is("READ") => level.is("COMMITTED") || level.is("UNCOMMITTED"),
        [repeatable, read] => repeatable.is("REPEATABLE") && read.is("READ"),
        [serializable] => serializable.is("SERIALIZABLE"),
        _ => false,
    }
}

/// One piece of a statement as [`lex`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lexeme<'a> {
    /// Letters, digits, `_`, `@` and `.`.
    Word(&'a [u8]),
    /// Text between two quotes (`'`, `"` or `` ` ``), the quote first; no quote or backslash inside.
    Quoted(u8, &'a [u8]),
    /// `=`.
    Equals,
}

impl Lexeme<'_> {
    /// Whether this is the word `keyword`, in any case.
    fn is(&self, keyword: &str) -> bool {
        matches!(self, Lexeme::Word(word) if word.eq_ignore_ascii_case(keyword.as_bytes()))
    }

    /// Whether this is a character set's or a collation's name, quoted or not.
    fn is_name(&self) -> bool {
        let name = match self {
            Lexeme::Word(word) => word,
            Lexeme::Quoted(_, text) => text,
            Lexeme::Equals => return false,
        };
        !name.is_empty() && name.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
    }
}

/// Splits `statement` into [`Lexeme`]s, separated by ASCII whitespace or not; `None` for anything else in it
/// (comments, `;`, operators, escapes), which no setting answered early has.
fn lex(statement: &[u8]) -> Option<Vec<Lexeme<'_>>> {
    let mut lexemes = Vec::new();
    let mut at = 0;
    while at < statement.len() {
        let byte = statement[at];
        if byte.is_ascii_whitespace() {
            at += 1;
        } else if byte == b'=' {
            lexemes.push(Lexeme::Equals);
            at += 1;
        } else if matches!(byte, b'\'' | b'"' | b'`') {
            let inner = &statement[at + 1..];
            let end = inner.iter().position(|b| *b == byte)?;
            if inner[..end].contains(&b'\\') {
                return None;
            }
            lexemes.push(Lexeme::Quoted(byte, &inner[..end]));
            at += end + 2;
        } else if is_word_byte(byte) {
            let len = statement[at..].iter().take_while(|b| is_word_byte(**b)).count();
            lexemes.push(Lexeme::Word(&statement[at..at + len]));
            at += len;
        } else {
            return None;
        }
    }
    Some(lexemes)
}

/// Whether `byte` may be part of a [`Lexeme::Word`].
fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'@' | b'.')
}

/// What a learned answer is the answer to: a statement, sent by an account with the capabilities its client
/// negotiated, on a server, from a session state (the status flags of the session's last answer).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Question {
    backend: String,
    user: Vec<u8>,
    capabilities: u32,
    status: u16,
    statement: Vec<u8>,
}

impl Question {
    /// `statement`, sent by `user` with `capabilities` to the server at `backend`, in a session whose last
    /// answer had `status` (only the flags that are session state count).
    pub fn new(backend: &str, user: &[u8], capabilities: u32, status: u16, statement: &[u8]) -> Question {
        Question {
            backend: backend.to_owned(),
            user: user.to_owned(),
            capabilities,
            status: status & SESSION_STATUS,
            statement: statement.to_owned(),
        }
    }
}

/// The servers' answers (OK payloads) to the statements answered early, learned from sessions that sent them;
/// shared by all sessions.
#[derive(Debug, Default)]
pub struct LearnedAnswers {
    answers: Mutex<HashMap<Question, Bytes>>,
}

impl LearnedAnswers {
    /// The server's answer to `question`, if one was learned.
    pub fn answer(&self, question: &Question) -> Option<Bytes> {
        self.lock().get(question).cloned()
    }

    /// Keeps `answer` for `question`. When as many answers are kept as may be, the others are forgotten first:
    /// a client sending many distinct settings costs the others some relearning, never memory.
    pub fn learn(&self, question: Question, answer: Bytes) {
        let mut answers = self.lock();
        if answers.len() >= MAX_LEARNED && !answers.contains_key(&question) {
            answers.clear();
        }
        answers.insert(question, answer);
    }

    /// Forgets the answers learned from the server at `backend`: it answered one otherwise since.
    pub fn forget(&self, backend: &str) {
        self.lock().retain(|question, _| question.backend != backend);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Question, Bytes>> {
        // The map is whole after any panic (every change is one call), so a poisoned lock is still good.
        self.answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drivers_setup_statements_are_answerable() {
        for statement in [
            "SET NAMES utf8mb4",
            "SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci",
            "set names 'latin1'",
            "SET autocommit=0",
            "SET autocommit = 1",
            "SET AUTOCOMMIT=ON",
            "SET @@autocommit = 0",
            "SET @@session.autocommit=1",
            "SET SESSION autocommit = FALSE",
            "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET sql_mode='STRICT_TRANS_TABLES'",
            "SET SESSION sql_mode = 'STRICT_TRANS_TABLES,NO_ZERO_DATE'",
            "SET @@sql_mode=''",
        ] {
            assert!(answerable(statement.as_bytes()), "{statement}");
        }
    }

    #[test]
    fn anything_else_is_not() {
        for statement in [
            "SET autocommit = 2",
            "SET autocommit = 1 - 1",
            "SET autocommit = @x",
            "SET GLOBAL autocommit = 0",
            "SET @@global.autocommit = 0",
            "SET @autocommit = 0",
            "SET autocommit = 0, sql_mode = ''",
            "SET autocommit = 0; DELETE FROM t",
            "SET NAMES utf8mb4 /* c */",
            "SET NAMES utf8mb4;",
            "SET NAMES utf8mb4 COLLATE",
            "SET NAMES 'utf8\\'mb4'",
            "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "SET SESSION TRANSACTION READ ONLY",
            "SET SESSION TRANSACTION ISOLATION LEVEL READ",
            "SET sql_mode = CONCAT(@@sql_mode, ',ANSI')",
            "SET sql_mode = \"ANSI\"",
            "SET time_zone = '+00:00'",
            "SET STATEMENT max_statement_time = 1 FOR SELECT 1",
            "SELECT 1",
            "SET",
            "",
        ] {
            assert!(!answerable(statement.as_bytes()), "{statement}");
        }
        assert!(!answerable(format!("SET NAMES {}", "a".repeat(MAX_STATEMENT_BYTES)).as_bytes()));
    }

    #[test]
    fn answers_are_learned_per_question_and_forgotten_per_server() {
        let answers = LearnedAnswers::default();
        let question = |backend: &str, status| Question::new(backend, b"u", 1, status, b"SET autocommit=0");
        answers.learn(question("a:1", 0x0002), Bytes::from_static(b"\x00\x00\x00\x00\x00"));
        // Only the flags that are session state count: 0x0010 is the last statement's (no index used).
        assert!(answers.answer(&question("a:1", 0x0012)).is_some());
        assert!(answers.answer(&question("a:1", 0x0000)).is_none());
        assert!(answers.answer(&question("b:1", 0x0002)).is_none());
        answers.forget("a:1");
        assert!(answers.answer(&question("a:1", 0x0002)).is_none());
    }

    #[test]
    fn a_full_store_makes_room_for_the_next_answer() {
        let answers = LearnedAnswers::default();
        let question = |n: usize| Question::new("a:1", b"u", 1, 2, format!("SET sql_mode='M{n}'").as_bytes());
        for n in 0..=MAX_LEARNED {
            answers.learn(question(n), Bytes::from_static(b"\x00\x00\x00\x02\x00\x00\x00"));
            assert!(answers.answer(&question(n)).is_some(), "the answer to statement {n} is kept");
        }
        assert!(answers.lock().len() <= MAX_LEARNED);
    }
}
