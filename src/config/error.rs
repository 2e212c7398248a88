//! Why a `proxy.toml` was refused, and where in the file the fault is.

use std::fmt;

/// Where in `proxy.toml` something is: the 1-based line and column, and the dotted key path, each when known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// 1-based line of the key (or of the table it belongs in, when the key is missing).
    pub line: Option<usize>,
    /// 1-based column, for faults that toml's parser points at precisely.
    pub column: Option<usize>,
    /// Dotted path of the key, e.g. `backends.csmh.password_env`.
    pub key: Option<String>,
}

impl Location {
    /// A location known only by its key, before (or without) a file to find its line in.
    pub fn key(key: impl Into<String>) -> Location {
        Location { key: Some(key.into()), ..Location::default() }
    }
}

/// `line 3, column 1, key listen.adress`, leaving out what is unknown; `top level` when nothing is.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(line) = self.line {
            parts.push(format!("line {line}"));
        }
        if let Some(column) = self.column {
            parts.push(format!("column {column}"));
        }
        if let Some(key) = &self.key {
            parts.push(format!("key `{key}`"));
        }
        if parts.is_empty() { f.write_str("top level") } else { f.write_str(&parts.join(", ")) }
    }
}

/// One thing a well-formed `proxy.toml` says that the proxy cannot do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key at fault and its line.
    pub at: Location,
    /// What is wrong and how to put it right.
    pub message: String,
}

impl Problem {
    /// A problem with the key at dotted path `key`; its line is filled in from the file later.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem { at: Location::key(key), message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// Why a `proxy.toml` was refused. The message is one line, fit for a log line, naming the line and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not TOML, or its TOML does not fit `proxy.toml`'s shape: an unknown key, a wrong type, a
    /// missing key.
    #[error("{at}: {message}")]
    Syntax {
        /// Where the fault is.
        at: Location,
        /// What toml or the schema said.
        message: String,
    },
    /// The file is well-formed but says something the proxy cannot do; every such problem is listed.
    #[error("{}", list_problems(problems))]
    Invalid {
        /// The problems, in the order of their lines in the file.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// Where the (first) fault is, when known: for pointing an editor or a test at it.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Syntax { at, .. } => Some(at),
            ConfigError::Invalid { problems } => problems.first().map(|problem| &problem.at),
        }
    }
}

/// One problem as it is; several as `N problems: first; second; ...`, still on one line.
fn list_problems(problems: &[Problem]) -> String {
    let listed: Vec<String> = problems.iter().map(Problem::to_string).collect();
    match listed.as_slice() {
        [only] => only.clone(),
        _ => format!("{} problems: {}", listed.len(), listed.join("; ")),
    }
}
