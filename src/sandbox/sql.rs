//! Quoting for the SQL text the sandbox builds: string literals and identifiers.

/// A single-quoted SQL string literal.
pub(super) fn quote_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// A back-quoted SQL identifier.
pub(super) fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_quotes_and_backslashes() {
        assert_eq!(quote_string(r"it's a \ test"), r"'it''s a \\ test'");
        assert_eq!(quote_ident("odd`name"), "`odd``name`");
    }
}
