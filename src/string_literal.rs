//! Bytes written as SQL string literals, escaped for the session that will read them. By default a backslash
//! escapes the next character; under `sql_mode`'s `NO_BACKSLASH_ESCAPES` it is an ordinary character and only a
//! doubled quote stands for a quote, so a literal escaped for one mode can mean something else, or end early, in
//! the other. The proxy writes values it read back into statements in three places: `migrate`'s copy, the values
//! of `IN (SELECT ...)` subqueries written into a statement for a separate `csmh` server, and the client's
//! session settings replayed there.
//!
//! Escaping works byte by byte and keeps bytes that are not UTF-8 as they are. That is right for UTF-8, Latin-1
//! and the other character sets whose multi-byte characters hold no ASCII byte; not for sjis, cp932, gbk, big5
//! and gb18030, where a character's second byte can be a backslash, so that an escape inserted after it would
//! end the literal early: there a value that escaping could split ([`escaping_may_split`]) is written in hex
//! with its character set's introducer ([`write_introduced_hex`]).

/// How a session reads a backslash in a string literal, from its `sql_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escaping {
    /// The default: a backslash escapes the next character.
    Backslashes,
    /// `NO_BACKSLASH_ESCAPES`: a backslash is itself, and a quote is written twice.
    DoubledQuotes,
}

impl Escaping {
    /// The escaping of a session whose `sql_mode` has `NO_BACKSLASH_ESCAPES` or not.
    pub fn with_no_backslash_escapes(on: bool) -> Escaping {
        if on { Escaping::DoubledQuotes } else { Escaping::Backslashes }
    }

    /// The escaping of a session whose `sql_mode` reads `mode` (comma-separated, as `@@session.sql_mode` reads).
    pub fn of_sql_mode(mode: &[u8]) -> Escaping {
        Escaping::with_no_backslash_escapes(sql_mode_has(mode, b"NO_BACKSLASH_ESCAPES"))
    }
}

/// How a session reads text in double quotes, from its `sql_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoubleQuotes {
    /// The default: a string, as in single quotes (and as the tokenizer reads it).
    Strings,
    /// `ANSI_QUOTES` (also part of the modes `ANSI`, `ORACLE`, … which `@@sql_mode` shows expanded): a name, as
    /// in backquotes, in which a backslash is an ordinary character.
    Names,
}

impl DoubleQuotes {
    /// How a session whose `sql_mode` reads `mode` (comma-separated) reads double quotes.
    pub fn of_sql_mode(mode: &[u8]) -> DoubleQuotes {
        match sql_mode_has(mode, b"ANSI_QUOTES") {
            true => DoubleQuotes::Names,
            false => DoubleQuotes::Strings,
        }
    }
}

/// Whether the `sql_mode` `mode` (comma-separated, as `@@session.sql_mode` reads) holds the mode `flag`.
fn sql_mode_has(mode: &[u8], flag: &[u8]) -> bool {
    mode.split(|&byte| byte == b',').any(|name| name.trim_ascii().eq_ignore_ascii_case(flag))
}

/// Whether the client's character set (`character_set_client`, which its statements are written in) is one of
/// [`SPLIT_BY_ESCAPES`], whose characters can end in a backslash or a backquote: the server then reads such a
/// byte as part of the character before, where the tokenizer (which reads UTF-8) reads an escape or a quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCharset {
    /// A character set whose multi-byte characters hold no ASCII byte (utf8mb4, latin1, ...); also what a
    /// session assumes without asking for a statement no such character could be hidden in.
    AsciiApart,
    /// One of [`SPLIT_BY_ESCAPES`].
    SplitByEscapes,
}

impl ClientCharset {
    /// The kind of the character set MySQL names `name` (any case).
    pub fn named(name: &str) -> ClientCharset {
        match SPLIT_BY_ESCAPES.iter().any(|split| split.eq_ignore_ascii_case(name)) {
            true => ClientCharset::SplitByEscapes,
            false => ClientCharset::AsciiApart,
        }
    }
}

/// How the client's session reads the text of its statements, where that can differ from the tokenizer's
/// reading (UTF-8, backslashes escaping, double quotes around strings): its `sql_mode`'s escaping and quotes,
/// and its character set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// How it reads a backslash in a string.
    pub escaping: Escaping,
    /// Whether its characters can end in a backslash or a backquote.
    pub charset: ClientCharset,
    /// Whether double quotes hold a string or a name.
    pub quotes: DoubleQuotes,
}

impl Reading {
    /// The tokenizer's own reading: backslashes escaping, characters holding no ASCII byte, strings in double
    /// quotes.
    pub const TOKENIZER: Reading =
        Reading { escaping: Escaping::Backslashes, charset: ClientCharset::AsciiApart, quotes: DoubleQuotes::Strings };

    /// The reading to assume when the session's settings could not be read: every difference the router
    /// guards against, but the escaping, which every status reports.
    pub const fn worst(escaping: Escaping) -> Reading {
        Reading { escaping, charset: ClientCharset::SplitByEscapes, quotes: DoubleQuotes::Names }
    }
}

/// Whether `bytes` hold a backslash or a backquote right after a byte above 0x7F, which a character of the sets
/// [`SPLIT_BY_ESCAPES`] can end in: there the server reads neither an escape nor a quote, and a string or a quoted
/// name ends elsewhere for it than for the tokenizer. The other ASCII bytes such a character can end in (letters,
/// digits, `@[]^_{|}~`) open or close nothing: read as part of a character, they can only join what the tokenizer
/// splits, never show the server a name the tokenizer saw inside a string or quotes.
pub fn may_hide_quoting(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|pair| pair[0] > 0x7f && (pair[1] == b'\\' || pair[1] == b'`'))
}

/// Whether `bytes` hold a double quote that is not right after a backslash: one that may open a name under
/// `ANSI_QUOTES`. Client libraries escape a double quote in a string as `\"` (mysqlclient, PyMySQL and
/// mysql_common do), and outside strings and quotes a backslash is no token a quote could follow, so edxapp's
/// statements, whose values are JSON, hold none.
pub fn may_open_double_quotes(bytes: &[u8]) -> bool {
    bytes.first() == Some(&b'"') || bytes.windows(2).any(|pair| pair[1] == b'"' && pair[0] != b'\\')
}

/// Appends `bytes` as a string literal in single quotes, escaped as `escaping` says (with backslashes, as
/// mysql_common's `Value::as_sql` writes them).
pub fn write_quoted(buf: &mut Vec<u8>, bytes: &[u8], escaping: Escaping) {
    buf.reserve(bytes.len() + 2);
    buf.push(b'\'');
    match escaping {
        Escaping::DoubledQuotes => {
            for &byte in bytes {
                if byte == b'\'' {
                    buf.push(b'\'');
                }
                buf.push(byte);
            }
        }
        Escaping::Backslashes => {
            for &byte in bytes {
                match byte {
                    0 => buf.extend_from_slice(b"\\0"),
                    b'\n' => buf.extend_from_slice(b"\\n"),
                    b'\r' => buf.extend_from_slice(b"\\r"),
                    0x1a => buf.extend_from_slice(b"\\Z"),
                    b'\\' | b'\'' | b'"' => buf.extend_from_slice(&[b'\\', byte]),
                    _ => buf.push(byte),
                }
            }
        }
    }
    buf.push(b'\'');
}

/// The character sets whose multi-byte characters can end in a backslash (or another ASCII byte), as MySQL and
/// MariaDB name them: in these an escape inserted after such a byte is read as part of the character before.
pub const SPLIT_BY_ESCAPES: [&str; 5] = ["big5", "cp932", "gb18030", "gbk", "sjis"];

/// Whether escaping `bytes` could split a multi-byte character in one of [`SPLIT_BY_ESCAPES`]: they hold a quote
/// or a backslash (which escaping precedes with a backslash) and bytes above 0x7F.
pub fn escaping_may_split(bytes: &[u8]) -> bool {
    bytes.iter().any(|byte| *byte > 0x7f) && bytes.iter().any(|byte| *byte == b'\\' || *byte == b'\'')
}

/// Appends `bytes` as a hexadecimal literal with the introducer of `charset` (`_gbk X'…'`): the same string as a
/// quoted literal in that character set, with nothing to escape.
pub fn write_introduced_hex(buf: &mut Vec<u8>, bytes: &[u8], charset: &str) {
    buf.push(b'_');
    buf.extend_from_slice(charset.as_bytes());
    buf.push(b' ');
    write_hex(buf, bytes);
}

/// Appends `bytes` as a hexadecimal literal, `X'…'`.
fn write_hex(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(b"X'");
    for byte in bytes {
        buf.extend_from_slice(format!("{byte:02X}").as_bytes());
    }
    buf.push(b'\'');
}

/// `bytes` as a literal every session reads as the same bytes, whatever its `sql_mode`: quoted with doubled
/// quotes, or as a hexadecimal literal (a binary string) if it holds a backslash or is not UTF-8.
pub fn any_mode_literal(bytes: &[u8]) -> String {
    // Doubled quotes are read alike in both modes; a backslash is not.
    match std::str::from_utf8(bytes) {
        Ok(text) if !bytes.contains(&b'\\') => {
            let mut buf = Vec::with_capacity(text.len() + 2);
            write_quoted(&mut buf, bytes, Escaping::DoubledQuotes);
            String::from_utf8(buf).expect("UTF-8 with ASCII quotes added")
        }
        _ => {
            let mut buf = Vec::with_capacity(bytes.len() * 2 + 3);
            write_hex(&mut buf, bytes);
            String::from_utf8(buf).expect("hexadecimal digits")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(bytes: &[u8], escaping: Escaping) -> Vec<u8> {
        let mut buf = Vec::new();
        write_quoted(&mut buf, bytes, escaping);
        buf
    }

    #[test]
    fn each_mode_escapes_what_it_reads_as_special() {
        let bytes = b"it's \"a\\b\"\n\r\0\x1a\xff";
        assert_eq!(quoted(bytes, Escaping::Backslashes), b"'it\\'s \\\"a\\\\b\\\"\\n\\r\\0\\Z\xff'");
        assert_eq!(quoted(bytes, Escaping::DoubledQuotes), b"'it''s \"a\\b\"\n\r\0\x1a\xff'");
    }

    #[test]
    fn what_escaping_could_split_is_written_in_hex_with_its_introducer() {
        // In gbk, 0xBF 0x5C is one character: escaping doubles the 0x5C, and the server reads the second as
        // escaping the quote after it.
        assert!(escaping_may_split(b"\xbf\\' OR 1=1 -- "));
        assert!(!escaping_may_split("caf\u{e9}".as_bytes()), "nothing to escape");
        assert!(!escaping_may_split(b"it's"), "ASCII");
        let mut buf = Vec::new();
        write_introduced_hex(&mut buf, b"\xbf\\'", "gbk");
        assert_eq!(buf, b"_gbk X'BF5C27'");
    }

    #[test]
    fn a_double_quote_escaped_as_client_libraries_escape_it_opens_nothing() {
        assert!(!may_open_double_quotes(br#"INSERT INTO t VALUES ('{\"input_state\": {}}')"#));
        assert!(may_open_double_quotes(br#"SELECT id FROM "t""#));
        assert!(may_open_double_quotes(br#""t""#));
        assert!(!may_open_double_quotes(b"SELECT id FROM `t`"));
    }

    #[test]
    fn the_mode_is_read_from_the_flag_list() {
        assert_eq!(Escaping::of_sql_mode(b"STRICT_TRANS_TABLES,NO_BACKSLASH_ESCAPES"), Escaping::DoubledQuotes);
        assert_eq!(Escaping::of_sql_mode(b"no_backslash_escapes"), Escaping::DoubledQuotes);
        assert_eq!(Escaping::of_sql_mode(b"STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION"), Escaping::Backslashes);
        assert_eq!(Escaping::of_sql_mode(b""), Escaping::Backslashes);
        let ansi = b"REAL_AS_FLOAT,PIPES_AS_CONCAT,ANSI_QUOTES,IGNORE_SPACE,ANSI";
        assert_eq!(DoubleQuotes::of_sql_mode(ansi), DoubleQuotes::Names);
        assert_eq!(DoubleQuotes::of_sql_mode(b"ansi_quotes"), DoubleQuotes::Names);
        assert_eq!(DoubleQuotes::of_sql_mode(b"STRICT_TRANS_TABLES"), DoubleQuotes::Strings);
    }

    #[test]
    fn a_literal_for_any_mode_doubles_quotes_or_is_hexadecimal() {
        assert_eq!(any_mode_literal(b"Europe/Paris's"), "'Europe/Paris''s'");
        assert_eq!(any_mode_literal(b"a\\'"), "X'615C27'");
        assert_eq!(any_mode_literal(b"\xff"), "X'FF'");
    }
}
