//! `--max-load`: pause the copy while a server is busy, as gh-ost and pt-online-schema-change do, judged by its
//! global status counters (`Threads_running=50`: more than 50 statements running at once).

use std::fmt;
use std::str::FromStr;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

/// Upper bounds on global status variables (at least one); the copy pauses while any is exceeded on either server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadLimit {
    limits: Vec<(String, u64)>,
}

/// A status variable above its bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overload {
    /// The variable, as the limit names it.
    pub variable: String,
    /// Its value.
    pub value: u64,
    /// Its bound.
    pub limit: u64,
}

impl LoadLimit {
    /// Reads the limit's variables on `conn`'s server: the first bound it exceeds now, and the variables it does
    /// not have (or whose value is not a number), which cannot be watched.
    pub async fn check(&self, conn: &mut Conn) -> Result<LoadCheck, mysql_async::Error> {
        let mut check = LoadCheck::default();
        for (variable, limit) in &self.limits {
            let row: Option<(String, String)> =
                conn.exec_first("SHOW GLOBAL STATUS WHERE `Variable_name` = ?", (variable,)).await?;
            match row.and_then(|(_, value)| value.parse::<u64>().ok()) {
                None => check.unknown.push(variable.clone()),
                Some(value) if value > *limit && check.over.is_none() => {
                    check.over = Some(Overload { variable: variable.clone(), value, limit: *limit });
                }
                Some(_) => {}
            }
        }
        Ok(check)
    }
}

/// What one server's status says of a [`LoadLimit`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadCheck {
    /// The first bound exceeded.
    pub over: Option<Overload>,
    /// Variables the server does not have.
    pub unknown: Vec<String>,
}

/// Why a load limit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a load limit such as Threads_running=50 or Threads_running=50,Threads_connected=800: {why}")]
pub struct LoadLimitError {
    text: String,
    why: String,
}

impl FromStr for LoadLimit {
    type Err = LoadLimitError;

    /// `Variable=N[,Variable=N...]`.
    fn from_str(text: &str) -> Result<LoadLimit, LoadLimitError> {
        let refused = |why: &str| LoadLimitError { text: text.to_owned(), why: why.to_owned() };
        let mut limits = Vec::new();
        for part in text.split(',') {
            let (variable, limit) = part.trim().split_once('=').ok_or_else(|| refused("each part needs a `=`"))?;
            let variable = variable.trim();
            if variable.is_empty() || !variable.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(refused("a status variable's name is letters, digits and `_`"));
            }
            let limit = limit.trim().parse().map_err(|_| refused("each bound is a whole number"))?;
            limits.push((variable.to_owned(), limit));
        }
        Ok(LoadLimit { limits })
    }
}

impl fmt::Display for LoadLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.limits.iter().map(|(variable, limit)| format!("{variable}={limit}")).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_and_print_back() {
        let limit: LoadLimit = "Threads_running=50, Threads_connected=800".parse().expect("a limit");
        assert_eq!(limit.to_string(), "Threads_running=50,Threads_connected=800");
        for bad in ["", "none", "Threads_running", "Threads_running=lots", "Threads running=5", "=5"] {
            assert!(bad.parse::<LoadLimit>().is_err(), "{bad}");
        }
    }
}
