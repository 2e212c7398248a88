//! `csmh-proxy route`: what the proxy would do with each statement, for an operator checking a flag change
//! before making it (and for tests). It classifies each statement with the same [`Router::classify`] step the
//! session uses.
//!
//! [`Router::classify`]: crate::routing::Router::classify

use std::fmt;

use crate::config::Config;
use crate::routing::{FanOut, Form, Inline, MergeServers, Rewritten, Route};
use crate::state::{CompileError, ConfigSnapshot};
use crate::topology::Server;

/// Routes each non-empty line of `statements` under `config` and describes the result, statement by statement.
pub fn explain_lines(config: Config, statements: &[u8]) -> Result<String, CompileError> {
    let snapshot = ConfigSnapshot::compile(config)?;
    let mut out = format!("routing: {}\n\n", snapshot.router.table().stage());
    for line in statements.split(|&b| b == b'\n').map(|l| l.trim_ascii()).filter(|l| !l.is_empty()) {
        let route = snapshot.router.classify(line, Form::Query);
        out.push_str(&format!("{}\n  -> {}\n", String::from_utf8_lossy(line), Explained(&route.into_route())));
    }
    Ok(out)
}

/// A route as an operator reads it: its name, and the statement(s) the proxy would send.
pub struct Explained<'a>(pub &'a Route);

impl fmt::Display for Explained<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Route::Passthrough => writeln!(f, "passthrough: sent unchanged"),
            Route::Rewrite(Rewritten { sql, on, inline, .. }) => {
                let on = match on {
                    Server::Edxapp => "on the client's connection",
                    Server::Csmh => "on the proxy's csmh connection",
                };
                writeln!(f, "rewrite, {on}:")?;
                indented(f, sql)?;
                inlined(f, inline)
            }
            Route::FanOut(FanOut::Union(sql)) => {
                writeln!(f, "fan out, one statement reading both tables:")?;
                indented(f, sql)
            }
            Route::FanOut(FanOut::Merge(read)) => match &read.servers {
                MergeServers::OneServer { .. } => {
                    writeln!(
                        f,
                        "fan out, both statements sent together on the client's connection, rows merged in the \
                         proxy:"
                    )?;
                    indented(f, &read.old)?;
                    indented(f, &read.extended)
                }
                MergeServers::TwoServers { inline, .. } => {
                    writeln!(f, "fan out across the two servers, rows merged in the proxy:")?;
                    indented(f, &read.old)?;
                    indented(f, &read.extended)?;
                    inlined(f, inline)
                }
            },
            Route::FanOut(FanOut::Writes { old, extended, .. }) => {
                writeln!(f, "fan out, the write on each table, affected rows summed:")?;
                indented(f, old)?;
                indented(f, extended)
            }
            Route::Block(error) => writeln!(f, "block: {error}"),
            Route::Refuse(refusal) => writeln!(f, "refuse: {}", refusal.error),
        }
    }
}

fn inlined(f: &mut fmt::Formatter<'_>, inline: &[Inline]) -> fmt::Result {
    for Inline { at, query } in inline {
        writeln!(f, "    with, at byte {at}, the values of (run on edxapp first):")?;
        indented(f, query)?;
    }
    Ok(())
}

fn indented(f: &mut fmt::Formatter<'_>, sql: &[u8]) -> fmt::Result {
    writeln!(f, "    {}", String::from_utf8_lossy(sql))
}
