//! Statements the proxy answers with its own error instead of running them: the retired old table (1142), what
//! the router cannot route exactly (1235), and what an executor finds it cannot carry out (1235). Each is
//! logged at info with its reason, never with the statement (whose values are the learners' data).

use tracing::{debug, info};

use super::error::SessionError;
use super::request::Request;
use super::{Flow, Session};
use crate::metrics::RouteLabel;
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
}
