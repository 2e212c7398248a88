//! Statements and commands the proxy runs for itself, on either server: their answer is read whole and never
//! relayed. A failure of the `csmh` connection becomes the command's error (and the connection is dropped), so
//! the client's session goes on; a failure of `edxapp` ends the session.

use super::Session;
use super::csmh::CsmhError;
use super::error::SessionError;
use crate::backend;
use crate::protocol::ProtocolError;
use crate::protocol::command::COM_QUERY;
use crate::protocol::errors::MysqlError;
use crate::protocol::errors::code::ER_LOCK_DEADLOCK;
use crate::protocol::packets::OkFields;
use crate::protocol::reply::Reply;
use crate::protocol::response::Expect;
use crate::state::ConfigSnapshot;
use crate::topology::Server;

/// How a statement the proxy runs for itself ended.
pub(super) enum Outcome {
    /// It succeeded.
    Ok(OkFields),
    /// It failed: the error to pass on to the client.
    Failed(MysqlError),
}

impl Session {
    /// Runs one statement of the proxy's own on `server`, whose answer must be an OK or an ERR.
    pub(super) async fn run_own(
        &mut self,
        snapshot: &ConfigSnapshot,
        server: Server,
        sql: &[u8],
    ) -> Result<Outcome, SessionError> {
        self.run_own_command(snapshot, server, COM_QUERY, sql).await
    }

    /// Sends one command of the proxy's own on `server`, whose answer must be an OK or an ERR.
    pub(super) async fn run_own_command(
        &mut self,
        snapshot: &ConfigSnapshot,
        server: Server,
        command: u8,
        body: &[u8],
    ) -> Result<Outcome, SessionError> {
        let reply = match server {
            Server::Edxapp => Ok(self.edxapp.command(command, body, Expect::ResultSets).await?),
            Server::Csmh => self.csmh_command(snapshot, command, body, Expect::ResultSets).await?,
        };
        match reply {
            Ok(Reply::Ok(ok)) => Ok(Outcome::Ok(ok)),
            Ok(Reply::Err(error)) => Ok(Outcome::Failed(error)),
            Ok(Reply::Rows(_) | Reply::Prepared(_)) if server == Server::Edxapp => {
                Err(SessionError::BackendProtocol(ProtocolError::Malformed("OK (got rows)")))
            }
            Ok(_) => Ok(Outcome::Failed(CsmhError::Refused("unexpected rows".into()).to_mysql())),
            Err(failure) => Ok(Outcome::Failed(failure)),
        }
    }

    /// Sends one command of the proxy's own on the `csmh` connection (opened if needed) and reads its whole
    /// answer; a failure drops the connection (rolling back the client's transaction if the connection had part
    /// of it) and is the client's error.
    pub(super) async fn csmh_command(
        &mut self,
        snapshot: &ConfigSnapshot,
        command: u8,
        body: &[u8],
        expect: Expect,
    ) -> Result<Result<Reply, MysqlError>, SessionError> {
        let reply = match self.csmh.ready(&mut self.edxapp, snapshot, &self.shared).await {
            Ok(csmh) => {
                backend::command(&mut csmh.conn, csmh.caps, command, body, expect).await.map_err(CsmhError::Query)
            }
            Err(failure) => Err(failure),
        };
        match reply {
            Ok(reply) => {
                if let Reply::Err(error) = &reply {
                    self.follow_csmh_rollback(Some(error.code)).await?;
                }
                Ok(Ok(reply))
            }
            Err(failure) => Ok(Err(self.csmh.fail(&mut self.edxapp, failure).await?)),
        }
    }

    /// After a statement on the `csmh` connection failed with `code`: if the server rolled back the transaction
    /// the connection held (a deadlock), the client's transaction on `edxapp` is rolled back too, as one server
    /// would have rolled back all of it; the client has the server's error.
    pub(super) async fn follow_csmh_rollback(&mut self, code: Option<u16>) -> Result<(), SessionError> {
        if code == Some(ER_LOCK_DEADLOCK) && self.csmh.in_transaction() {
            tracing::info!("the csmh server rolled back its side of the transaction: rolling back edxapp's");
            self.csmh.server_rolled_back();
            self.edxapp.rollback().await?;
        }
        Ok(())
    }

    /// After a statement of the proxy's own on `edxapp` (one side of a merged read, a subquery's values, a write
    /// of both tables) failed with `code`: if the server rolled the client's transaction back (a deadlock), the
    /// `csmh` side's part of it goes too, as one server would have rolled back all of it.
    pub(super) async fn follow_edxapp_error(&mut self, code: u16) -> Result<(), SessionError> {
        self.edxapp.note_error(Some(code));
        self.follow_csmh_transaction_end().await
    }

    /// After a client statement ran on `edxapp`: the `csmh` side follows how it left the client's transaction
    /// ([`CsmhLink::follow_transaction_end`](super::csmh::CsmhLink::follow_transaction_end)); a rollback the
    /// client could not be told of is the error of its next statement.
    pub(super) async fn follow_csmh_transaction_end(&mut self) -> Result<(), SessionError> {
        if let Some(error) = self.csmh.follow_transaction_end(&mut self.edxapp).await? {
            self.transaction.ended_untold(error);
        }
        Ok(())
    }

    /// The single number `sql` answers with on `server`, if it answers with one; the server's error when it
    /// refuses `sql`, and a failure of the `csmh` connection, are the client's error for the statement.
    pub(super) async fn number(
        &mut self,
        snapshot: &ConfigSnapshot,
        server: Server,
        sql: &str,
    ) -> Result<Result<Option<u64>, MysqlError>, SessionError> {
        let reply = match server {
            Server::Edxapp => self.edxapp.query(sql.as_bytes()).await?,
            Server::Csmh => match self.csmh_command(snapshot, COM_QUERY, sql.as_bytes(), Expect::ResultSets).await? {
                Ok(reply) => reply,
                Err(error) => return Ok(Err(error)),
            },
        };
        let rows = match reply {
            Reply::Rows(rows) => rows,
            Reply::Err(error) => return Ok(Err(error)),
            Reply::Ok(_) | Reply::Prepared(_) => return Ok(Ok(None)),
        };
        let value = rows.values.first().and_then(|row| row.first()).cloned().flatten();
        Ok(Ok(value.and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())))
    }
}
