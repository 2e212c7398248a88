//! Statements the proxy answers with its own error instead of running them: the retired old table (1142), what
//! the router cannot route exactly (1235), what an executor finds it cannot carry out (1235), and commands on a
//! prepared statement lost with its `csmh` connection or naming the last statement prepared when there is none
//! (1243). Each is logged at info with its reason, never
//! with the statement (whose values are the learners' data).

use tracing::{debug, info};

use super::error::SessionError;
use super::request::Request;
use super::{Flow, Session};
use crate::metrics::RouteLabel;
use crate::protocol::command::{COM_STMT_CLOSE, COM_STMT_FETCH, COM_STMT_RESET, Command, LAST_STATEMENT_ID};
use crate::protocol::errors::MysqlError;
use crate::routing::Refusal;

impl Session {
    /// Refuses a statement that reaches the retired old table.
    pub(super) async fn block(&mut self, request: &mut Request, error: MysqlError) -> Result<Flow, SessionError> {
        info!(route = "block", code = error.code, "statement refused: the history table is retired");
        debug!(%error, "blocked");
        self.answer_error(request, error).await
    }

    /// Refuses a statement the router cannot route exactly, logging its reason (the whole message, which may
    /// quote the statement, only at debug).
    pub(super) async fn refuse(&mut self, request: &mut Request, refusal: Refusal) -> Result<Flow, SessionError> {
        let Refusal { error, reason } = refusal;
        info!(route = "refuse", code = error.code, reason, "statement naming the history table refused");
        debug!(%error, "refused");
        self.answer_error(request, error).await
    }

    /// Refuses a statement the router routed but whose route an executor cannot carry out (`what` it is), and
    /// counts it as refused.
    pub(super) async fn refuse_unsupported(&mut self, request: &mut Request, what: &str) -> Result<Flow, SessionError> {
        info!(route = "refuse", "statement naming the history table refused: {what}");
        let error = MysqlError::not_supported(format!("csmh-proxy does not support {what} yet"));
        self.refuse_routed(request, error).await
    }

    /// Answers a statement the router routed with `error` instead, and counts it as refused.
    pub(super) async fn refuse_routed(
        &mut self,
        request: &mut Request,
        error: MysqlError,
    ) -> Result<Flow, SessionError> {
        if request.label.is_some() {
            request.label = Some(RouteLabel::Refuse);
        }
        self.answer_error(request, error).await
    }

    /// Answers a command on a prepared statement that lived on (or had its shadow on) a `csmh` connection that
    /// failed since: an execution gets error 1243, as for a statement the server does not have; closing it
    /// forgets it (and closes the client's own part on `edxapp`); other commands without an answer are dropped.
    pub(super) async fn on_lost_statement(&mut self, request: &mut Request, id: u32) -> Result<Flow, SessionError> {
        match request.command {
            Command::Relayed(COM_STMT_CLOSE) => {
                self.statements.remove(id);
                self.relay_request(request).await.map(|()| Flow::Continue)
            }
            command if command.response().is_none() => {
                self.consume_request(request);
                Ok(Flow::Continue)
            }
            _ => {
                info!(statement = id, "command on a prepared statement lost with its csmh connection");
                let message = format!(
                    "Unknown prepared statement handler ({id}): it was lost with csmh-proxy's connection to the csmh \
                     server; prepare it again"
                );
                self.answer_error(request, MysqlError::unknown_statement(message)).await
            }
        }
    }

    /// Answers a command naming the last statement prepared ([`LAST_STATEMENT_ID`]) while there is none, as
    /// MariaDB does: an execution, a reset or a fetch gets error 1243 with the server's own words; closing it
    /// or sending it long data gets no answer and does nothing.
    pub(super) async fn on_no_last_statement(&mut self, request: &mut Request) -> Result<Flow, SessionError> {
        if request.command.response().is_none() {
            self.consume_request(request);
            return Ok(Flow::Continue);
        }
        let handler = match request.command {
            Command::Relayed(COM_STMT_RESET) => "mysqld_stmt_reset",
            Command::Relayed(COM_STMT_FETCH) => "mysqld_stmt_fetch",
            _ => "mysqld_stmt_execute",
        };
        info!("command on the last statement prepared, with none prepared");
        let message = format!("Unknown prepared statement handler ({LAST_STATEMENT_ID}) given to {handler}");
        self.answer_error(request, MysqlError::unknown_statement(message)).await
    }
}
