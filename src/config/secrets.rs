//! The secrets a `proxy.toml` holds (passwords), found in its text by a scan that reads TOML's keys and values as
//! far as it can without parsing the file (which may not even be TOML), so that no message about the file ever
//! shows one: not a syntax error quoting the line it is on, not toml's complaint about a value's type, not a
//! validation problem.
//!
//! A key is secret when its name says so ([`is_secret_key`]), however the name is written: bare, quoted, with
//! escapes (`"p\u0061ssword"`), dotted, as a table's header or inside an inline table. Everything assigned to such
//! a key is secret, whatever its type (a string, a number, a date, an array, an inline table), with whatever
//! follows the value on its last line (a value that does not parse may run on there). The scan records where in
//! the text these values are ([`Secrets::masked`] quotes a line without them) and the forms a message may show
//! them in ([`Secrets::redact`]): each line as written, strings with their escapes undone, numbers as toml reads
//! them.

use std::ops::Range;

use super::error::{ConfigError, Problem};

/// What a secret value reads as in a message.
pub(super) const REDACTED: &str = "<redacted>";

/// Parts of a key's name that make it a secret: `password`, and the names a secret is given by mistake or in a
/// later version (`pasword`, `pwd`, `secret`, `token`, `private_key`).
const SECRET_KEY_PARTS: [&str; 6] = ["pas", "pw", "secret", "token", "credential", "private"];

/// Whether the key named `key` (one part of a dotted path, as TOML reads it) holds a secret. `password_env` does
/// not: it names the variable that holds one.
pub(super) fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    !key.ends_with("_env") && SECRET_KEY_PARTS.iter().any(|part| key.contains(part))
}

/// Whether the key at `path` (its parts as TOML reads them) holds a secret, or belongs to a table that does.
pub(super) fn is_secret_path<'p>(path: impl IntoIterator<Item = &'p str>) -> bool {
    path.into_iter().any(is_secret_key)
}

/// What toml's or serde's `message` about the value of a secret key says without the value: only what was
/// expected, which the configuration's shape says (`invalid type: integer `1234567`, expected a string` names the
/// value).
pub(super) fn without_value(message: &str) -> String {
    match message.rsplit_once(", expected ") {
        Some((_, expected)) => format!("invalid value {REDACTED}, expected {expected}"),
        None => format!("invalid value {REDACTED}"),
    }
}

/// Where the values of secret keys are in a `proxy.toml`, and the forms they may take in a message.
#[derive(Debug, Default)]
pub(super) struct Secrets {
    /// Byte ranges of the text that hold secret values, in the order found.
    spans: Vec<Range<usize>>,
    /// The values as a message may show them, the longest first.
    forms: Vec<String>,
}

impl Secrets {
    /// Finds the values of every secret key in `text`.
    pub(super) fn scan(text: &str) -> Secrets {
        let mut scanner = Scanner { text, bytes: text.as_bytes(), at: 0, found: Secrets::default() };
        scanner.document();
        let mut secrets = scanner.found;
        // The longest first, so that one secret containing another is replaced whole.
        secrets.forms.sort_by_key(|form| std::cmp::Reverse(form.len()));
        secrets.forms.dedup();
        secrets
    }

    /// The part `line` (a byte range) of `text`, trimmed, with every secret value in it replaced by [`REDACTED`].
    pub(super) fn masked(&self, text: &str, line: Range<usize>) -> String {
        let mut spans: Vec<&Range<usize>> =
            self.spans.iter().filter(|span| span.start < line.end && line.start < span.end).collect();
        spans.sort_by_key(|span| span.start);
        let mut out = String::new();
        let mut at = line.start;
        for span in spans {
            if span.end <= at {
                continue;
            }
            let start = span.start.max(at);
            out.push_str(&text[at..start]);
            // Two secrets that touch read as one.
            if start > at || !out.ends_with(REDACTED) {
                out.push_str(REDACTED);
            }
            at = span.end.min(line.end);
        }
        out.push_str(&text[at..line.end]);
        out.trim().to_owned()
    }

    /// `message` with every form of a secret value replaced by [`REDACTED`].
    pub(super) fn redact(&self, message: &str) -> String {
        self.forms.iter().fold(message.to_owned(), |message, form| message.replace(form.as_str(), REDACTED))
    }

    /// `error` with every message it carries redacted.
    pub(super) fn redact_error(&self, error: ConfigError) -> ConfigError {
        match error {
            ConfigError::Syntax { at, message } => ConfigError::Syntax { at, message: self.redact(&message) },
            ConfigError::Invalid { problems } => ConfigError::Invalid {
                problems: problems
                    .into_iter()
                    .map(|problem| Problem { message: self.redact(&problem.message), ..problem })
                    .collect(),
            },
            read @ ConfigError::Read { .. } => read,
        }
    }

    /// Records `span` of `text` as secret, each of its lines as a form.
    fn record(&mut self, text: &str, span: Range<usize>) {
        for line in text[span.clone()].lines() {
            self.form(line.trim());
        }
        self.spans.push(span);
    }

    /// Records a form of a secret value.
    fn form(&mut self, form: &str) {
        if !form.is_empty() {
            self.forms.push(form.to_owned());
        }
    }
}

/// A forgiving reader of TOML's structure: keys, table headers and the extent of values, on text that may hold
/// mistakes anywhere. What it cannot read as a key is passed over to the end of its line (and counted secret when
/// the text before its `=` names a secret); a value that is not closed runs as far as TOML would read it (a basic
/// string to the end of its line, an array or a multi-line string on to the end of the text).
struct Scanner<'t> {
    text: &'t str,
    bytes: &'t [u8],
    at: usize,
    found: Secrets,
}

impl Scanner<'_> {
    /// Reads the whole text: table headers, and the key/value pairs under them.
    fn document(&mut self) {
        let mut table_is_secret = false;
        loop {
            self.skip_blank(true);
            match self.peek() {
                None => return,
                Some(b'[') => table_is_secret = self.table_header(),
                Some(_) => self.pair(table_is_secret),
            }
        }
    }

    /// Reads a table header (`[a.b]` or `[[a.b]]`) and the rest of its line; whether it names a secret.
    fn table_header(&mut self) -> bool {
        let start = self.at;
        self.at += if self.starts_with(b"[[") { 2 } else { 1 };
        let secret = self.key(b']').unwrap_or_else(|| names_secret(&self.text[start..self.line_end()]));
        self.at = self.line_end();
        secret
    }

    /// Reads `key = value` and the rest of its line, recording the value (and that rest) when the key, or the
    /// table it is in, is secret. A line that holds no key is passed over, and recorded from its `=` on when the
    /// text before that names a secret.
    fn pair(&mut self, in_secret_table: bool) {
        let start = self.at;
        let Some(key_is_secret) = self.key(b'=') else {
            let end = self.line_end();
            let line = &self.text[start..end];
            match line.find('=') {
                _ if in_secret_table => self.found.record(self.text, start..end),
                Some(eq) if names_secret(&line[..eq]) => self.found.record(self.text, start + eq + 1..end),
                _ => {}
            }
            self.at = end;
            return;
        };
        let secret = in_secret_table || key_is_secret;
        self.skip_blank(false);
        let value_start = self.at;
        self.value(secret);
        let end = self.line_end().max(self.at);
        if secret {
            self.found.record(self.text, value_start..end);
        }
        self.at = end;
    }

    /// Reads a dotted key up to `end` (`=` after a key, `]` in a table header), passing over `end`; whether a
    /// part of it is a secret's name. `None`, with nothing passed over, when the text there is not a key.
    fn key(&mut self, end: u8) -> Option<bool> {
        let start = self.at;
        let key = self.key_parts(end);
        if key.is_none() {
            self.at = start;
        }
        key
    }

    fn key_parts(&mut self, end: u8) -> Option<bool> {
        let mut secret = false;
        loop {
            self.skip_blank(false);
            let part = match self.peek()? {
                b'"' | b'\'' => self.string_on_line(false)?,
                byte if is_bare_key_byte(byte) => {
                    let start = self.at;
                    while self.peek().is_some_and(is_bare_key_byte) {
                        self.at += 1;
                    }
                    self.text[start..self.at].to_owned()
                }
                _ => return None,
            };
            secret |= is_secret_key(&part);
            self.skip_blank(false);
            match self.peek()? {
                b'.' => self.at += 1,
                byte if byte == end => {
                    self.at += 1;
                    return Some(secret);
                }
                _ => return None,
            }
        }
    }

    /// Reads one value: a string, an array, an inline table or a bare word (a number, a date, a boolean, a
    /// mistake). Inside a value that is not `secret`, the values of an inline table's secret keys are recorded.
    fn value(&mut self, secret: bool) {
        match self.peek() {
            Some(b'"' | b'\'') if self.starts_with(b"\"\"\"") || self.starts_with(b"'''") => {
                self.multi_line_string(secret)
            }
            Some(quote @ (b'"' | b'\'')) => {
                let start = self.at + 1;
                let value = self.string_on_line(true);
                if secret {
                    // As written between its quotes, and as read.
                    let raw = &self.text[start..self.at];
                    self.found.form(raw.strip_suffix(char::from(quote)).unwrap_or(raw));
                    self.found.form(value.as_deref().unwrap_or_default());
                }
            }
            Some(b'[') => self.array(secret),
            Some(b'{') => self.inline_table(secret),
            _ => self.bare(secret),
        }
    }

    /// Reads `[` values separated by commas `]`, over lines and comments.
    fn array(&mut self, secret: bool) {
        self.delimited(b']', |scanner| scanner.value_making_progress(secret));
    }

    /// Reads `{` key = value pairs separated by commas `}`; one whose key is secret is recorded here when the
    /// table itself is not.
    fn inline_table(&mut self, secret: bool) {
        self.delimited(b'}', |scanner| match scanner.key(b'=') {
            Some(key_is_secret) => {
                scanner.skip_blank(false);
                let start = scanner.at;
                scanner.value_making_progress(secret || key_is_secret);
                if key_is_secret && !secret {
                    scanner.found.record(scanner.text, start..scanner.at);
                }
            }
            None => scanner.value_making_progress(secret),
        });
    }

    /// Reads items by `item` from the opening bracket at the cursor to `close`, separated by commas, over lines and
    /// comments; the end of the text ends them too.
    fn delimited(&mut self, close: u8, mut item: impl FnMut(&mut Self)) {
        self.at += 1;
        loop {
            self.skip_blank(true);
            match self.peek() {
                None => return,
                Some(byte) if byte == close => {
                    self.at += 1;
                    return;
                }
                Some(b',') => self.at += 1,
                Some(_) => item(self),
            }
        }
    }

    /// [`Scanner::value`], passing over at least one byte, so that a mistake cannot stop an array or a table.
    fn value_making_progress(&mut self, secret: bool) {
        let before = self.at;
        self.value(secret);
        if self.at == before {
            self.at += self.text[self.at..].chars().next().map_or(1, char::len_utf8);
        }
    }

    /// Reads a bare word: to a comma, a closing bracket or brace, a comment or the end of the line.
    fn bare(&mut self, secret: bool) {
        let start = self.at;
        while self.peek().is_some_and(|byte| !matches!(byte, b',' | b']' | b'}' | b'#' | b'\n')) {
            self.at += 1;
        }
        if secret {
            let word = self.text[start..self.at].trim();
            self.found.form(word);
            for number in numbers_read_from(word) {
                self.found.form(&number);
            }
        }
    }

    /// Reads a basic (`"`, with escapes) or literal (`'`) string that ends on its line; its value. A string not
    /// closed on its line ends there: `None`, unless `unclosed_ok`, when what it holds so far is its value.
    fn string_on_line(&mut self, unclosed_ok: bool) -> Option<String> {
        let quote = self.bytes[self.at];
        self.at += 1;
        let start = self.at;
        let mut escaped = false;
        while let Some(byte) = self.peek() {
            match byte {
                b'\n' => break,
                b'\\' if quote == b'"' && !escaped => escaped = true,
                _ if byte == quote && !escaped => {
                    let raw = &self.text[start..self.at];
                    self.at += 1;
                    return Some(if quote == b'"' { unescape(raw) } else { raw.to_owned() });
                }
                _ => escaped = false,
            }
            self.at += 1;
        }
        let raw = &self.text[start..self.at];
        unclosed_ok.then(|| if quote == b'"' { unescape(raw) } else { raw.to_owned() })
    }

    /// Reads a multi-line string (`"""` or `'''`) to its closing delimiter, or to the end of the text.
    fn multi_line_string(&mut self, secret: bool) {
        let delimiter = [self.bytes[self.at]; 3];
        self.at += 3;
        let start = self.at;
        let mut escaped = false;
        while self.at < self.bytes.len() {
            if !escaped && self.starts_with(&delimiter) {
                // Up to two quotes right before the delimiter belong to the string.
                while self.bytes[self.at + 1..].starts_with(&delimiter) {
                    self.at += 1;
                }
                break;
            }
            escaped = delimiter[0] == b'"' && self.bytes[self.at] == b'\\' && !escaped;
            self.at += 1;
        }
        if secret {
            for line in self.text[start..self.at].lines() {
                self.found.form(line.trim());
                self.found.form(unescape(line).trim());
            }
        }
        self.at = (self.at + 3).min(self.bytes.len());
    }

    /// Passes over spaces and tabs, and also line ends and comments when `lines`.
    fn skip_blank(&mut self, lines: bool) {
        while let Some(byte) = self.peek() {
            match byte {
                b' ' | b'\t' => self.at += 1,
                b'\r' | b'\n' if lines => self.at += 1,
                b'#' if lines => self.at = self.line_end(),
                _ => return,
            }
        }
    }

    /// Where the current line ends (its `\n`, or the end of the text).
    fn line_end(&self) -> usize {
        self.bytes[self.at..]
            .iter()
            .position(|&byte| byte == b'\n')
            .map_or(self.bytes.len(), |newline| self.at + newline)
    }

    /// The byte at the scan's position.
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// Whether the text at the scan's position starts with `bytes`.
    fn starts_with(&self, bytes: &[u8]) -> bool {
        self.bytes[self.at..].starts_with(bytes)
    }
}

/// The bytes of a bare key.
fn is_bare_key_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'
}

/// Whether text that is not a well-formed key still names a secret, read as loosely as can be: the last word
/// before an `=` that TOML would not take for a key (`pass word`, `"password`).
fn names_secret(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    !lower.trim_end().trim_end_matches(['"', '\'']).ends_with("_env")
        && SECRET_KEY_PARTS.iter().any(|p| lower.contains(p))
}

/// A basic string's content with its escapes undone, as TOML reads it (an escape TOML refuses is kept as written).
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(escape) = chars.next() else {
            out.push('\\');
            break;
        };
        let hex_digits = match escape {
            'x' => 2,
            'u' => 4,
            'U' => 8,
            _ => 0,
        };
        let simple = match escape {
            'b' => Some('\u{8}'),
            't' => Some('\t'),
            'n' => Some('\n'),
            'f' => Some('\u{c}'),
            'r' => Some('\r'),
            'e' => Some('\u{1b}'),
            '"' => Some('"'),
            '\\' => Some('\\'),
            _ => None,
        };
        let hex: String = chars.clone().take(hex_digits).collect();
        match (simple, u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)) {
            (Some(c), _) => out.push(c),
            (None, Some(c)) if hex.len() == hex_digits && hex_digits > 0 => {
                out.push(c);
                chars.nth(hex_digits - 1);
            }
            _ => {
                out.push('\\');
                out.push(escape);
            }
        }
    }
    out
}

/// The forms a message may give a bare word that TOML reads as a number: an integer in decimal (from
/// `1_234_567`, `0xDEADBEEF`, `0o17`, `0b101`), a float as Rust and serde print it.
fn numbers_read_from(word: &str) -> Vec<String> {
    let digits = word.replace('_', "");
    let (sign, unsigned) = match digits.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", digits.strip_prefix('+').unwrap_or(&digits)),
    };
    let radix = [("0x", 16), ("0o", 8), ("0b", 2)].into_iter().find_map(|(prefix, radix)| {
        unsigned.strip_prefix(prefix).and_then(|rest| i128::from_str_radix(rest, radix).ok())
    });
    let mut forms = Vec::new();
    if let Some(integer) = radix.or_else(|| unsigned.parse::<i128>().ok()) {
        forms.push(format!("{sign}{integer}"));
    } else if let Ok(float) = digits.parse::<f64>() {
        forms.push(format!("{float}"));
        forms.push(format!("{float:?}"));
    }
    forms.retain(|form| form != word);
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` as a message that quotes every line of it, each line masked.
    fn every_line_masked(text: &str) -> String {
        let secrets = Secrets::scan(text);
        let mut start = 0;
        let mut lines = Vec::new();
        for line in text.split_inclusive('\n') {
            lines.push(secrets.masked(text, start..start + line.trim_end_matches('\n').len()));
            start += line.len();
        }
        lines.join("\n")
    }

    #[test]
    fn secret_keys_are_passwords_and_the_like_but_not_the_variable_naming_one() {
        for key in ["password", "PASSWORD", "pasword", "db_pwd", "secret", "api_token", "private_key"] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in ["password_env", "address", "user", "old_table", "id_offset", "connect_timeout_secs"] {
            assert!(!is_secret_key(key), "{key}");
        }
        assert!(is_secret_path(["backends", "csmh", "password"]));
        assert!(!is_secret_path(["backends", "csmh", "password_env"]));
    }

    #[test]
    fn values_are_found_quoted_unquoted_unterminated_and_in_inline_tables() {
        let text = "password = \"one-1\" # c\npassword='two-2'\n\"password\" = three-3\npassword = \"four-4\n\
                    csmh = { address = \"x:1\", password = \"five-5\" }\npassword = \"\"\"six-6\"\"\"\n\
                    address = \"7.7.7.7:1\"\npassword_env = \"VAR\"\n";
        let secrets = Secrets::scan(text);
        let message = secrets.redact(text);
        let masked = every_line_masked(text);
        for secret in ["one-1", "two-2", "three-3", "four-4", "five-5", "six-6"] {
            assert!(!message.contains(secret), "{secret} in:\n{message}");
            assert!(!masked.contains(secret), "{secret} in:\n{masked}");
        }
        assert!(message.contains("7.7.7.7:1") && message.contains("VAR"), "{message}");
        assert!(message.starts_with("password = <redacted>\n"), "the value and what follows it: {message}");
        assert!(masked.contains("csmh = { address = \"x:1\", password = <redacted> }"), "{masked}");
        assert!(masked.contains("address = \"7.7.7.7:1\"\npassword_env = \"VAR\""), "{masked}");
    }

    #[test]
    fn a_multi_line_string_is_redacted_line_by_line_to_its_closing_delimiter() {
        let text = "password = \"\"\"\nfirst-line\n  second-line \"\"\" x\naddress = \"8.8.8.8:1\"\n\
                    token = '''third-line\nfourth-line'''\n";
        let secrets = Secrets::scan(text);
        let message = secrets.redact(text);
        let masked = every_line_masked(text);
        for secret in ["first-line", "second-line", "third-line", "fourth-line"] {
            assert!(!message.contains(secret), "{secret} in:\n{message}");
            assert!(!masked.contains(secret), "{secret} in:\n{masked}");
        }
        assert!(message.contains("8.8.8.8:1") && masked.contains("8.8.8.8:1"), "not a secret: {masked}");
    }

    #[test]
    fn escaped_quotes_are_redacted_as_written_and_as_read() {
        let secrets = Secrets::scan(r#"password = "a\"b\u0063""#);
        assert_eq!(secrets.redact(r#"x a\"b\u0063 a"bc"#), format!("x {REDACTED} {REDACTED}"));
    }

    #[test]
    fn values_of_every_type_are_secret() {
        let text = "password = 1_234_567\npwd = 0xDEADBEEF\nsecret = 6.02e23\ntoken = true\n\
                    credential = 1979-05-27 07:32:00\npasword = [\"aa\", \"hunter2\"] x\n\
                    private_key = { a = [1, \"hunter3\"], b = { c = \"hunter4\" } }\n";
        let secrets = Secrets::scan(text);
        let masked = every_line_masked(text);
        for secret in ["1_234_567", "DEADBEEF", "6.02e23", "true", "07:32", "aa", "hunter2", "hunter3", "hunter4"] {
            assert!(!masked.contains(secret), "{secret} in:\n{masked}");
        }
        assert_eq!(masked.lines().next(), Some("password = <redacted>"));
        for read in ["1234567", "3735928559", "602000000000000000000000", "6.02e23"] {
            assert_eq!(secrets.redact(&format!("`{read}`")), format!("`{REDACTED}`"), "{read}");
        }
    }

    #[test]
    fn keys_are_read_however_they_are_written() {
        let text = "\"p\\u0061ssword\" = \"hunter1\" x\n'password' = \"hunter2\" x\n\
                    backends . csmh . \"PASSWORD\" = \"hunter3\" x\n\"pass\\u0077ord = \"hunter4\"\n\
                    [backends.password]\nanything = \"hunter5\"\nnot a key = \"hunter6\"\n\
                    [backends.csmh]\npass word = \"hunter7\"\naddress = \"9.9.9.9:1\" x\n";
        let masked = every_line_masked(text);
        for n in 1..=7 {
            assert!(!masked.contains(&format!("hunter{n}")), "hunter{n} in:\n{masked}");
        }
        assert!(masked.contains("address = \"9.9.9.9:1\" x"), "not a secret: {masked}");
    }

    #[test]
    fn an_array_over_several_lines_is_secret_on_each() {
        let text = "password = [\n  \"hunter1\",\n  \"hunter2\" x\n]\naddress = \"1.2.3.4:5\"\n";
        let masked = every_line_masked(text);
        assert!(!masked.contains("hunter"), "{masked}");
        assert!(masked.ends_with("address = \"1.2.3.4:5\""), "{masked}");
    }

    #[test]
    fn messages_about_a_secret_value_keep_only_what_was_expected() {
        assert_eq!(
            without_value("invalid type: integer `1234567`, expected a string"),
            format!("invalid value {REDACTED}, expected a string")
        );
        assert_eq!(without_value("something `hunter2`"), format!("invalid value {REDACTED}"));
    }
}
