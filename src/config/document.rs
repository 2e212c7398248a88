//! The text of a `proxy.toml` with the position of every key, so that errors can name their line.
//!
//! toml's span-preserving [`DeTable`] gives the byte ranges of keys and values; this module turns a range into a
//! line and column, and into the dotted path of the key it belongs to.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{ConfigError, Location, Problem};
use super::secrets::{self, Secrets};

/// A parsed `proxy.toml`, not yet checked against the configuration's shape.
pub(super) struct Document<'a> {
    text: &'a str,
    root: Spanned<DeTable<'a>>,
}

impl<'a> Document<'a> {
    /// Parses the TOML; a syntax error (bad TOML, a key given twice) names its line and quotes it, without the
    /// values of `secrets`.
    pub(super) fn parse(text: &'a str, secrets: &Secrets) -> Result<Document<'a>, ConfigError> {
        match DeTable::parse(text) {
            Ok(root) => Ok(Document { text, root }),
            Err(error) => Err(ConfigError::Syntax {
                at: Self::position_of(text, error.span()),
                message: with_source_line(error.message(), text, error.span(), secrets),
            }),
        }
    }

    /// Reads the document into `T`; an unknown key, wrong type or missing key names its line and key path. A
    /// complaint about the value of a secret key says what was expected, not what was found.
    pub(super) fn deserialize<T: Deserialize<'a>>(&self) -> Result<T, ConfigError> {
        T::deserialize(toml::de::Deserializer::from(self.root.clone())).map_err(|error| {
            let span = error.span().filter(|span| *span != self.root.span());
            let key = span.as_ref().and_then(|span| key_path_at(self.root.get_ref(), span));
            let message = match &key {
                Some(path) if secrets::is_secret_path(path.iter().map(String::as_str)) => {
                    secrets::without_value(error.message())
                }
                _ => error.message().to_owned(),
            };
            ConfigError::Syntax {
                at: Location { key: key.map(|path| path.join(".")), ..Self::position_of(self.text, span) },
                message,
            }
        })
    }

    /// Fills in the line of `problem`'s key: where the key is written or, if the file leaves it out, where the
    /// nearest table that should hold it is.
    pub(super) fn locate(&self, mut problem: Problem) -> Problem {
        if let Some(key) = &problem.at.key {
            let span = nearest_key_span(self.root.get_ref(), key.split('.'));
            problem.at.line = span.map(|span| line_and_column(self.text, span.start).0);
        }
        problem
    }

    /// The line and column of the start of `span`, when there is one.
    fn position_of(text: &str, span: Option<Range<usize>>) -> Location {
        let position = span.map(|span| line_and_column(text, span.start));
        Location { line: position.map(|(line, _)| line), column: position.map(|(_, column)| column), key: None }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// toml's message followed by the offending line of the file, quoted with the values of `secrets` masked, so the
/// operator sees what was read.
fn with_source_line(message: &str, text: &str, span: Option<Range<usize>>, secrets: &Secrets) -> String {
    let Some(offset) = span.map(|span| span.start.min(text.len())).filter(|&offset| text.is_char_boundary(offset))
    else {
        return message.to_owned();
    };
    let start = text[..offset].rfind('\n').map_or(0, |newline| newline + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |newline| offset + newline);
    match secrets.masked(text, start..end) {
        source if !source.is_empty() => format!("{message} in `{source}`"),
        _ => message.to_owned(),
    }
}

/// The dotted path of the deepest key whose name or value covers `span`, e.g. `["listen", "adress"]` for an
/// unknown key, or `["backends", "csmh"]` for a key missing from that table.
fn key_path_at(table: &DeTable<'_>, span: &Range<usize>) -> Option<Vec<String>> {
    table.iter().find_map(|(key, value)| {
        let inner = value.get_ref().as_table().and_then(|inner| key_path_at(inner, span));
        let here = covers(&key.span(), span) || covers(&value.span(), span);
        match inner {
            Some(mut path) => {
                path.insert(0, key.get_ref().to_string());
                Some(path)
            }
            None if here => Some(vec![key.get_ref().to_string()]),
            None => None,
        }
    })
}

/// Whether `outer` contains all of `inner`.
fn covers(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// The span of the key at `path`, or of the deepest of its parent tables present in the file.
fn nearest_key_span<'k>(table: &DeTable<'_>, mut path: impl Iterator<Item = &'k str>) -> Option<Range<usize>> {
    let name = path.next()?;
    let (key, value) = table.iter().find(|(key, _)| key.get_ref() == name)?;
    let deeper = match value.get_ref() {
        DeValue::Table(inner) => nearest_key_span(inner, path),
        _ => None,
    };
    deeper.or_else(|| Some(key.span()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters_from_one() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_and_column(text, 0), (1, 1));
        assert_eq!(line_and_column(text, 6), (2, 1));
        assert_eq!(line_and_column(text, text.rfind('=').unwrap_or(0)), (2, 4));
    }

    #[test]
    fn key_paths_reach_into_nested_tables() {
        let text = "[backends.csmh]\naddress = 1\n";
        let document = Document::parse(text, &Secrets::default()).unwrap();
        let start = text.find('1').unwrap();
        let path = key_path_at(document.root.get_ref(), &(start..start + 1));
        assert_eq!(path, Some(vec!["backends".to_owned(), "csmh".to_owned(), "address".to_owned()]));
    }

    #[test]
    fn a_missing_key_is_located_at_its_table() {
        let text = "[listen]\naddress = 'x'\n\n[backends.csmh]\naddress = 'y'\n";
        let document = Document::parse(text, &Secrets::default()).unwrap();
        let problem = document.locate(Problem::new("backends.csmh.user", "needed"));
        assert_eq!(problem.at.line, Some(4));
        let problem = document.locate(Problem::new("flags.READ_ONLY_FROM_CSMHE", "needed"));
        assert_eq!(problem.at.line, None);
    }
}
