//! An UPDATE or DELETE on both tables, answered as one statement: the write runs on the old table and on the
//! extended one inside a transaction of the proxy's own (or a savepoint in the client's), and the client gets
//! one OK whose counts are the sums, or the first error with nothing written. Across two servers the `csmh` side
//! commits first, so that a failure there still lets `edxapp` roll back (docs/routing.md gives the remaining
//! window); once the commit has begun, the request runs to its end even if the client hangs up.

use tracing::warn;

use super::csmh::CsmhError;
use super::error::SessionError;
use super::own::Outcome;
use super::request::Request;
use super::{Flow, Session};
use crate::protocol::command::COM_QUERY;
use crate::protocol::errors::MysqlError;
use crate::protocol::errors::code::ER_LOCK_DEADLOCK;
use crate::protocol::packets::OkFields;
use crate::protocol::reply::Reply;
use crate::routing::Inline;
use crate::state::ConfigSnapshot;
use crate::topology::Server;

/// How a pair of writes is made all-or-nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Atomic {
    /// The client is in a transaction: a savepoint undoes the first write if the second fails.
    Savepoint,
    /// The client is in autocommit mode: a transaction of the proxy's own around both.
    Transaction,
}

impl Atomic {
    fn begin(self) -> &'static [u8] {
        match self {
            Atomic::Savepoint => b"SAVEPOINT csmh_proxy_fan_out",
            Atomic::Transaction => b"BEGIN",
        }
    }

    fn commit(self) -> &'static [u8] {
        match self {
            Atomic::Savepoint => b"RELEASE SAVEPOINT csmh_proxy_fan_out",
            Atomic::Transaction => b"COMMIT",
        }
    }

    fn undo(self) -> &'static [u8] {
        match self {
            Atomic::Savepoint => b"ROLLBACK TO SAVEPOINT csmh_proxy_fan_out",
            Atomic::Transaction => b"ROLLBACK",
        }
    }
}

/// One of a pair of writes: the server it runs on, its command (COM_QUERY or COM_STMT_EXECUTE) and the command's
/// body.
pub(super) struct Write<'a> {
    /// Where it runs.
    pub server: Server,
    /// The command byte.
    pub command: u8,
    /// What follows the command byte.
    pub body: &'a [u8],
}

impl Session {
    /// Runs the client's UPDATE or DELETE (`old`) and its extended-table form (`extended`, on `on`, with the
    /// values of its `edxapp` subqueries written in) as one statement.
    pub(super) async fn write_both(
        &mut self,
        request: &mut Request,
        old: &[u8],
        extended: &[u8],
        inline: &[Inline],
        on: Server,
    ) -> Result<Flow, SessionError> {
        let extended = match self.with_values(extended.to_vec(), inline).await? {
            Ok(extended) => extended,
            Err(error) => return self.answer_error(request, error).await,
        };
        self.consume_request(request);
        let writes = [
            Write { server: Server::Edxapp, command: COM_QUERY, body: old },
            Write { server: on, command: COM_QUERY, body: &extended },
        ];
        self.write_pair(request, writes).await
    }

    /// Runs the two writes (on the old table, then on the extended one) atomically and answers the client with
    /// one OK whose counts are the sums, or with the error.
    pub(super) async fn write_pair(
        &mut self,
        request: &mut Request,
        writes: [Write<'_>; 2],
    ) -> Result<Flow, SessionError> {
        let atomic = if self.edxapp.in_transaction() { Atomic::Savepoint } else { Atomic::Transaction };
        let servers: &[Server] = match writes[1].server {
            Server::Edxapp => &[Server::Edxapp],
            Server::Csmh => &[Server::Edxapp, Server::Csmh],
        };
        let snapshot = std::sync::Arc::clone(&request.snapshot);
        match self.atomically(&snapshot, atomic, servers, &writes).await? {
            Outcome::Ok(ok) => self.answer_ok(request, &ok).await,
            Outcome::Failed(error) => self.answer_error(request, error).await,
        }
    }

    /// Runs `writes` inside `atomic` on every one of `servers`: the summed OK, or the first error after undoing
    /// what was done.
    async fn atomically(
        &mut self,
        snapshot: &ConfigSnapshot,
        atomic: Atomic,
        servers: &[Server],
        writes: &[Write<'_>],
    ) -> Result<Outcome, SessionError> {
        // The csmh side begins first: once edxapp is in the proxy's transaction, the csmh connection would
        // otherwise take it for the client's and open one of its own.
        for (begun, &server) in servers.iter().enumerate().rev() {
            if let Outcome::Failed(error) = self.run_own(snapshot, server, atomic.begin()).await? {
                return self.undo(snapshot, atomic, &servers[begun + 1..], error).await;
            }
            self.mark_own_transaction(server, atomic, true);
        }
        let mut total = OkFields::default();
        for write in writes {
            match self.run_own_command(snapshot, write.server, write.command, write.body).await? {
                Outcome::Ok(ok) => {
                    total.affected_rows = total.affected_rows.saturating_add(ok.affected_rows);
                    total.warnings = total.warnings.saturating_add(ok.warnings);
                }
                Outcome::Failed(error)
                    if error.code == ER_LOCK_DEADLOCK
                        && write.server == Server::Edxapp
                        && atomic == Atomic::Savepoint =>
                {
                    // The server rolled back the client's whole transaction, not only the savepoint.
                    self.follow_edxapp_error(error.code).await?;
                    return Ok(Outcome::Failed(error));
                }
                Outcome::Failed(error) => return self.undo(snapshot, atomic, servers, error).await,
            }
        }
        // Abandoned between the csmh side's commit and edxapp's, the write would stay on the extended table only.
        self.no_return.pass();
        for (committed, &server) in servers.iter().enumerate().rev() {
            let outcome = match (server, atomic) {
                (Server::Csmh, Atomic::Transaction) => self.commit_csmh().await,
                _ => self.run_own(snapshot, server, atomic.commit()).await?,
            };
            self.mark_own_transaction(server, atomic, false);
            match outcome {
                Outcome::Ok(ok) if server == Server::Edxapp => total.status = ok.status,
                Outcome::Ok(_) => {}
                Outcome::Failed(error) if committed + 1 == servers.len() => {
                    return self.undo(snapshot, atomic, &servers[..committed], error).await;
                }
                Outcome::Failed(error) => {
                    warn!("the csmh side committed but edxapp did not: the write is on the extended table only");
                    return Ok(Outcome::Failed(error));
                }
            }
        }
        Ok(Outcome::Ok(total))
    }

    /// Commits the proxy's own transaction on the `csmh` connection
    /// ([`CsmhLink::commit_own`](super::csmh::CsmhLink::commit_own)).
    async fn commit_csmh(&mut self) -> Outcome {
        match self.csmh.commit_own().await {
            Ok(Reply::Ok(ok)) => Outcome::Ok(ok),
            Ok(Reply::Err(error)) => Outcome::Failed(error),
            Ok(Reply::Rows(_) | Reply::Prepared(_)) => {
                Outcome::Failed(CsmhError::Refused("unexpected rows".into()).to_mysql())
            }
            Err(error) => Outcome::Failed(error),
        }
    }

    /// Undoes `atomic` on `servers` and passes `error` on.
    async fn undo(
        &mut self,
        snapshot: &ConfigSnapshot,
        atomic: Atomic,
        servers: &[Server],
        error: MysqlError,
    ) -> Result<Outcome, SessionError> {
        for &server in servers {
            if server == Server::Csmh && !self.csmh.is_open() {
                // The connection failed, and the server rolled its side back when it went.
                continue;
            }
            self.run_own(snapshot, server, atomic.undo()).await?;
            self.mark_own_transaction(server, atomic, false);
            if let Atomic::Savepoint = atomic {
                self.run_own(snapshot, server, atomic.commit()).await?;
            }
        }
        Ok(Outcome::Failed(error))
    }

    /// Records that the proxy's own transaction on the `csmh` connection is open (or over), so that it is not
    /// mistaken for one mirroring the client's; a savepoint lives inside the client's, which stays as it is.
    fn mark_own_transaction(&mut self, server: Server, atomic: Atomic, open: bool) {
        if let (Server::Csmh, Atomic::Transaction) = (server, atomic) {
            self.csmh.set_own_transaction(open);
        }
    }
}
