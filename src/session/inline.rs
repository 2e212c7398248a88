//! The values of `IN (SELECT ...)` subqueries on `edxapp` tables, for a statement bound for a separate `csmh`
//! server, which has no `edxapp` tables: each subquery runs on the client's `edxapp` connection and its values
//! are written into the statement as a list, strings escaped as the client's session reads them.

use super::Session;
use super::edxapp::Settings;
use super::error::SessionError;
use crate::protocol::errors::MysqlError;
use crate::protocol::reply::{Reply, Rows};
use crate::routing::Inline;
use crate::string_literal::{ClientCharset, Escaping, escaping_may_split, write_introduced_hex, write_quoted};

/// The most values an `IN (SELECT ...)` subquery may return to be written into a statement for the `csmh` side.
const MAX_INLINED: usize = 10_000;

/// The most bytes of a subquery's answer the session holds to write its values: [`MAX_INLINED`] values of about
/// 200 bytes each (edxapp's subqueries return ids). A larger answer is read to its end and dropped, so a
/// subquery returning much cannot cost the proxy memory in proportion.
const MAX_ANSWER_BYTES: usize = 2 << 20;

impl Session {
    /// `sql` with each of its subqueries on `edxapp` tables run on the client's `edxapp` connection and their
    /// values written in; the error for the client if one of them fails or returns too many values.
    pub(super) async fn with_values(
        &mut self,
        mut sql: Vec<u8>,
        inline: &[Inline],
    ) -> Result<Result<Vec<u8>, MysqlError>, SessionError> {
        for Inline { at, query } in inline.iter().rev() {
            let rows = match self.edxapp.query_within(query, MAX_ANSWER_BYTES).await? {
                Some(Reply::Rows(rows)) => rows,
                Some(Reply::Err(error)) => {
                    self.follow_edxapp_error(error.code).await?;
                    return Ok(Err(error));
                }
                Some(Reply::Ok(_) | Reply::Prepared(_)) => Rows::default(),
                None => return Ok(Err(too_large(format!("an answer larger than {} MiB", MAX_ANSWER_BYTES >> 20)))),
            };
            if rows.values.len() > MAX_INLINED {
                return Ok(Err(too_large(format!("more than {MAX_INLINED} values"))));
            }
            let split_by_escapes = match string_values(&rows).any(escaping_may_split) {
                false => None,
                true => match self.edxapp.settings().await? {
                    Some(settings) => charset_split_by_escapes(settings),
                    None => return Ok(Err(MysqlError::not_supported(UNREADABLE_CHARSET))),
                },
            };
            let literals = Literals { escaping: self.edxapp.escaping(), split_by_escapes };
            sql.splice(at..at, value_list(&rows, &literals));
        }
        Ok(Ok(sql))
    }
}

/// Why a subquery's values with a quote or backslash among bytes above 0x7F cannot be written in.
const UNREADABLE_CHARSET: &str = "csmh-proxy could not read the session's character set (character_set_client), \
    which decides how a subquery's values with quotes or backslashes among bytes above 0x7F are written into the \
    statement for the extended table's server";

/// When the character set the `csmh` server parses the client's statements in (`character_set_client`, which
/// that connection mirrors) is one whose characters escaping could split
/// ([`SPLIT_BY_ESCAPES`](crate::string_literal::SPLIT_BY_ESCAPES)): the character set the values are in,
/// `character_set_results`, to name in their introducer.
fn charset_split_by_escapes(settings: Settings) -> Option<String> {
    (settings.client_charset_kind() == ClientCharset::SplitByEscapes).then_some(settings.results_charset)
}

/// The error for a subquery whose values are too many to write into a statement.
fn too_large(what: String) -> MysqlError {
    MysqlError::not_supported(format!(
        "csmh-proxy does not support a subquery on edxapp tables returning {what} (its values are written into the \
         statement for the extended table's server)"
    ))
}

/// The string values of a one-column result (none if the column is a number).
fn string_values(rows: &Rows) -> impl Iterator<Item = &[u8]> {
    let numeric = rows.numeric.first().copied().unwrap_or(false);
    rows.values.iter().filter(move |_| !numeric).filter_map(|row| row.first().and_then(Option::as_deref))
}

/// How string values are written into the statement.
struct Literals {
    /// As the client's `sql_mode` reads them.
    escaping: Escaping,
    /// When escaping could split the characters of the set the `csmh` server parses in: the set the values are
    /// in, whose introducer they are then written in hex with, if escaping could split them.
    split_by_escapes: Option<String>,
}

/// The values of a one-column result as a parenthesized SQL list: numbers as they are, anything else a string
/// literal as `literals` says. An empty result becomes a subquery with no rows, so that `NOT IN` keeps its
/// meaning.
fn value_list(rows: &Rows, literals: &Literals) -> Vec<u8> {
    if rows.values.is_empty() {
        return b"(SELECT NULL FROM DUAL WHERE FALSE)".to_vec();
    }
    let numeric = rows.numeric.first().copied().unwrap_or(false);
    let mut list = vec![b'('];
    for (index, row) in rows.values.iter().enumerate() {
        if index > 0 {
            list.extend_from_slice(b", ");
        }
        match row.first().and_then(Option::as_deref) {
            None => list.extend_from_slice(b"NULL"),
            Some(number) if numeric => list.extend_from_slice(number),
            Some(text) => match &literals.split_by_escapes {
                Some(charset) if escaping_may_split(text) => write_introduced_hex(&mut list, text, charset),
                _ => write_quoted(&mut list, text, literals.escaping),
            },
        }
    }
    list.push(b')');
    list
}
