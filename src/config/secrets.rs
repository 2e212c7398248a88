//! The secrets a `proxy.toml` holds (passwords), found in its text without parsing it, so that no message about
//! the file ever shows one: not a syntax error quoting the line it is on, not toml's complaint about its type, not
//! a validation problem. [`Secrets::redact`] replaces each value wherever it appears in a message.

use super::error::{ConfigError, Problem};

/// What a secret value reads as in a message.
pub(super) const REDACTED: &str = "<redacted>";

/// Parts of a key's name that make it a secret: `password`, and the names a secret is given by mistake or in a
/// later version (`pasword`, `pwd`, `secret`, `token`, `private_key`).
const SECRET_KEY_PARTS: [&str; 6] = ["pas", "pw", "secret", "token", "credential", "private"];

/// Whether the key named `key` (the last part of its dotted path) holds a secret. `password_env` does not: it
/// names the variable that holds one.
pub(super) fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    !key.ends_with("_env") && SECRET_KEY_PARTS.iter().any(|part| key.contains(part))
}

/// The values of secret keys written in a `proxy.toml`, as written (without their quotes).
#[derive(Debug, Default)]
pub(super) struct Secrets(Vec<String>);

impl Secrets {
    /// Finds every `key = value` whose key is secret, line by line, in a file that may not even be TOML: the
    /// value runs to its closing quote, or unquoted to a comma, brace, comment or the end of the line. A
    /// multi-line string (`"""`, `'''`) not closed on its key's line goes on to the line that closes it, and each
    /// of its lines is a secret of its own, since a message quotes the one line it is about.
    pub(super) fn scan(text: &str) -> Secrets {
        let mut values = Vec::new();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let (found, open) = secret_values(line);
            values.extend(found);
            if let Some(delimiter) = open {
                values.extend(lines_until_closed(&mut lines, delimiter));
            }
        }
        // The longest first, so that one secret containing another is replaced whole.
        values.sort_by_key(|value| std::cmp::Reverse(value.len()));
        values.dedup();
        Secrets(values)
    }

    /// `message` with every secret value replaced by [`REDACTED`].
    pub(super) fn redact(&self, message: &str) -> String {
        self.0.iter().fold(message.to_owned(), |message, secret| message.replace(secret.as_str(), REDACTED))
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
}

/// The values of the secret keys assigned on one line (an inline table may assign several), and the delimiter
/// of a multi-line string one of them opens and does not close there.
fn secret_values(line: &str) -> (Vec<String>, Option<&'static str>) {
    let mut found = Vec::new();
    let mut open = None;
    for (at, _) in line.match_indices('=') {
        if !key_before(&line[..at]).is_some_and(is_secret_key) {
            continue;
        }
        let (value, opens) = value_after(&line[at + 1..]);
        push_value(&mut found, value);
        open = open.or(opens);
    }
    (found, open)
}

/// The lines of a secret multi-line string after its first, up to the one holding its closing `delimiter` (or
/// the end of the text), each as a value of its own.
fn lines_until_closed<'t>(lines: &mut impl Iterator<Item = &'t str>, delimiter: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in lines {
        let end = line.find(delimiter);
        push_value(&mut found, line[..end.unwrap_or(line.len())].trim());
        if end.is_some() {
            break;
        }
    }
    found
}

/// Records a secret value as written and, when that differs, as toml may show it.
fn push_value(found: &mut Vec<String>, value: &str) {
    if !value.is_empty() {
        found.extend(unescaped(value));
        found.push(value.to_owned());
    }
}

/// The bare or quoted key that ends `before` (an `=` follows it).
fn key_before(before: &str) -> Option<&str> {
    let before = before.trim_end().trim_end_matches(['"', '\'']);
    let start = before.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-')).map_or(0, |i| i + 1);
    let key = &before[start..];
    (!key.is_empty()).then_some(key)
}

/// The value as written after an `=`, without its quotes, to the end of the line when a quote is not closed; and
/// the delimiter of a multi-line string left open, whose value goes on on the next lines.
fn value_after(after: &str) -> (&str, Option<&'static str>) {
    let after = after.trim_start();
    for quote in ["\"\"\"", "'''"] {
        if let Some(inner) = after.strip_prefix(quote) {
            return match inner.find(quote) {
                Some(end) => (inner[..end].trim_end(), None),
                None => (inner.trim(), Some(quote)),
            };
        }
    }
    if let Some(inner) = after.strip_prefix('\'') {
        return (inner.find('\'').map_or(inner, |end| &inner[..end]).trim_end(), None);
    }
    if let Some(inner) = after.strip_prefix('"') {
        return (&inner[..closing_quote(inner).unwrap_or(inner.len())], None);
    }
    (after.split(['#', ',', '}']).next().unwrap_or("").trim(), None)
}

/// Where the basic string `inner` (after its opening quote) closes: the first quote not escaped by a backslash.
fn closing_quote(inner: &str) -> Option<usize> {
    let mut escaped = false;
    for (at, c) in inner.char_indices() {
        match c {
            '"' if !escaped => return Some(at),
            '\\' => escaped = !escaped,
            _ => escaped = false,
        }
    }
    None
}

/// The value with a basic string's simple escapes undone, as toml may show it, when that differs.
fn unescaped(value: &str) -> Option<String> {
    let plain = value.replace("\\\"", "\"").replace("\\\\", "\\");
    (plain != value).then_some(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_are_passwords_and_the_like_but_not_the_variable_naming_one() {
        for key in ["password", "PASSWORD", "pasword", "db_pwd", "secret", "api_token", "private_key"] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in ["password_env", "address", "user", "old_table", "id_offset", "connect_timeout_secs"] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn values_are_found_quoted_unquoted_unterminated_and_in_inline_tables() {
        let text = "password = \"one-1\" # c\npassword='two-2'\n\"password\" = three-3\npassword = \"four-4\n\
                    csmh = { address = \"x:1\", password = \"five-5\" }\npassword = \"\"\"six-6\"\"\"\n\
                    address = \"7.7.7.7:1\"\npassword_env = \"VAR\"\n";
        let secrets = Secrets::scan(text);
        let message = secrets.redact(text);
        for secret in ["one-1", "two-2", "three-3", "four-4", "five-5", "six-6"] {
            assert!(!message.contains(secret), "{secret} in:\n{message}");
        }
        assert!(message.contains("7.7.7.7:1") && message.contains("VAR"), "{message}");
        assert!(message.contains("password = \"<redacted>\" # c"), "{message}");
    }

    #[test]
    fn a_multi_line_string_is_redacted_line_by_line_to_its_closing_delimiter() {
        let text = "password = \"\"\"\nfirst-line\n  second-line \"\"\" x\naddress = \"8.8.8.8:1\"\n\
                    token = '''third-line\nfourth-line'''\n";
        let secrets = Secrets::scan(text);
        let message = secrets.redact(text);
        for secret in ["first-line", "second-line", "third-line", "fourth-line"] {
            assert!(!message.contains(secret), "{secret} in:\n{message}");
        }
        assert!(message.contains("8.8.8.8:1"), "the line after the string is not a secret: {message}");
    }

    #[test]
    fn escaped_quotes_are_redacted_as_written_and_as_read() {
        let secrets = Secrets::scan(r#"password = "a\"b""#);
        assert_eq!(secrets.redact(r#"x a\"b a"b"#), format!("x {REDACTED} {REDACTED}"));
    }
}
