//! The client's own grants on the old table, for statements the extended table serves on another server. There
//! the proxy's `csmh` login would run them whatever the client may do, so before it does, the client's own
//! `edxapp` connection prepares the statement as the client wrote it: preparing checks the privileges without
//! running anything, and a refusal is the server's own error (1142, 1143). What was allowed is remembered for
//! the session by the rights the statement needs, and forgotten when the client changes user or resets its
//! connection.

use std::collections::HashSet;

use tracing::info;

use super::error::SessionError;
use super::{Request, Session};
use crate::protocol::ProtocolError;
use crate::protocol::command::{self, COM_STMT_CLOSE, COM_STMT_PREPARE};
use crate::protocol::errors::MysqlError;
use crate::protocol::reply::Reply;
use crate::protocol::response::Expect;
use crate::routing::Rights;

/// The rights on the old table the session's client was found to have.
#[derive(Default)]
pub(super) struct Grants {
    allowed: HashSet<Rights>,
}

impl Grants {
    /// Forgets what was found: the client is someone else now, or its session was reset.
    pub fn forget(&mut self) {
        self.allowed.clear();
    }
}

impl Session {
    /// Checks, unless it was allowed before in this session, that the client may run its statement (which
    /// needs `rights` on the old table) on `edxapp`; the server's error when it may not.
    pub(super) async fn check_grants(
        &mut self,
        request: &Request,
        rights: Rights,
    ) -> Result<Option<MysqlError>, SessionError> {
        if self.grants.allowed.contains(&rights) {
            return Ok(None);
        }
        let statement = command::body(&request.span.payload_in(&self.client.buf)).to_vec();
        match self.edxapp.command(COM_STMT_PREPARE, &statement, Expect::Prepare).await? {
            Reply::Prepared(prepared) => {
                self.edxapp.send(COM_STMT_CLOSE, &prepared.id.to_le_bytes()).await?;
                self.grants.allowed.insert(rights);
                Ok(None)
            }
            Reply::Err(error) => {
                info!(code = error.code, "history statement refused: the client's grants on the old table");
                Ok(Some(error))
            }
            Reply::Ok(_) | Reply::Rows(_) => {
                Err(SessionError::BackendProtocol(ProtocolError::Malformed("prepare answer")))
            }
        }
    }
}
