//! The values of `IN (SELECT ...)` subqueries on `edxapp` tables, for a statement bound for a separate `csmh`
//! server, which has no `edxapp` tables: each subquery runs on the client's `edxapp` connection and its values
//! are written into the statement as a list.

use super::Session;
use super::error::SessionError;
use crate::protocol::errors::MysqlError;
use crate::protocol::reply::{Reply, Rows};
use crate::routing::Inline;

/// The most values an `IN (SELECT ...)` subquery may return to be written into a statement for the `csmh` side.
const MAX_INLINED: usize = 10_000;

impl Session {
    /// `sql` with each of its subqueries on `edxapp` tables run on the client's `edxapp` connection and their
    /// values written in; the error for the client if one of them fails or returns too many values.
    pub(super) async fn with_values(
        &mut self,
        mut sql: Vec<u8>,
        inline: &[Inline],
    ) -> Result<Result<Vec<u8>, MysqlError>, SessionError> {
        for Inline { at, query } in inline.iter().rev() {
            let rows = match self.edxapp.query(query).await? {
                Reply::Rows(rows) => rows,
                Reply::Err(error) => return Ok(Err(error)),
                Reply::Ok(_) | Reply::Prepared(_) => Rows::default(),
            };
            match value_list(&rows) {
                Some(list) => {
                    sql.splice(at..at, list.into_bytes());
                }
                None => {
                    return Ok(Err(MysqlError::not_supported(format!(
                        "csmh-proxy does not support a subquery on edxapp tables returning more than {MAX_INLINED} \
                         values"
                    ))));
                }
            }
        }
        Ok(Ok(sql))
    }
}

/// The values of a one-column result as a parenthesized SQL list: numbers as they are, anything else quoted.
/// An empty result becomes a subquery with no rows, so that `NOT IN` keeps its meaning.
fn value_list(rows: &Rows) -> Option<String> {
    if rows.values.len() > MAX_INLINED {
        return None;
    }
    if rows.values.is_empty() {
        return Some("(SELECT NULL FROM DUAL WHERE FALSE)".to_owned());
    }
    let numeric = rows.numeric.first().copied().unwrap_or(false);
    let literal = |value: &Option<Vec<u8>>| match value {
        None => "NULL".to_owned(),
        Some(v) if numeric => String::from_utf8_lossy(v).into_owned(),
        Some(v) => format!("'{}'", String::from_utf8_lossy(v).replace('\\', "\\\\").replace('\'', "\\'")),
    };
    let values: Vec<String> = rows.values.iter().map(|row| literal(&row.first().cloned().flatten())).collect();
    Some(format!("({})", values.join(", ")))
}
