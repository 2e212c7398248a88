//! The client's own grants on the old table, for statements the extended table serves on another server. There
//! the proxy's `csmh` login would run them whatever the client may do, so before it does, the client's own
//! `edxapp` connection prepares the statement as the client wrote it: preparing checks the privileges without
//! running anything, and a refusal is the server's own error (1142, 1143). What was allowed is remembered by
//! the rights the statement needs: for the account, across sessions ([`crate::grant_cache`]); after a change of
//! user, for the session alone, until it changes user or resets again.

use std::collections::HashSet;
use std::time::Instant;

use tracing::info;

use super::Session;
use super::error::SessionError;
use super::request::Request;
use crate::grant_cache::{GrantKey, Verdict};
use crate::protocol::ProtocolError;
use crate::protocol::command::{COM_STMT_CLOSE, COM_STMT_PREPARE};
use crate::protocol::errors::MysqlError;
use crate::protocol::reply::Reply;
use crate::protocol::response::Expect;
use crate::routing::Rights;

/// Whose grants the session's statements are checked with, and what this session found.
#[derive(Default)]
pub(super) struct Grants {
    /// The `edxapp` server and the user the client logged in as; `None` after a change of user, whose outcome
    /// the proxy does not follow.
    account: Option<(String, Vec<u8>)>,
    /// What was allowed in this session.
    allowed: HashSet<Rights>,
}

impl Grants {
    /// The grants of `user` (the name's bytes as the client sent them) on the `edxapp` server at `server`.
    pub fn logged_in(&mut self, server: &str, user: &[u8]) {
        self.account = Some((server.to_owned(), user.to_owned()));
    }

    /// Forgets what was found: the client is someone else now, or its session was reset.
    pub fn forget(&mut self) {
        self.account = None;
        self.allowed.clear();
    }

    fn key(&self, rights: Rights) -> Option<GrantKey> {
        let (server, user) = self.account.clone()?;
        Some(GrantKey { server, user, rights })
    }
}

impl Session {
    /// Checks, unless it was allowed before in this session, that the client may run its statement (which
    /// needs `rights` on the old table) on `edxapp`, by preparing `check` there (the statement with the old table
    /// named with its schema); the server's error when it may not.
    pub(super) async fn check_grants(
        &mut self,
        request: &Request,
        rights: Rights,
        check: &[u8],
    ) -> Result<Option<MysqlError>, SessionError> {
        let key = self.grants.key(rights);
        let shared = &self.shared.grants;
        let valid_for = request.snapshot.config.backends.csmh_grants_valid_for();
        let allowed = match &key {
            Some(key) => shared.verdict(key, Instant::now(), valid_for) == Verdict::Allowed,
            None => self.grants.allowed.contains(&rights),
        };
        if allowed {
            return Ok(None);
        }
        match self.edxapp.command(COM_STMT_PREPARE, check, Expect::Prepare).await? {
            Reply::Prepared(prepared) => {
                self.edxapp.send(COM_STMT_CLOSE, &prepared.id.to_le_bytes()).await?;
                match key {
                    Some(key) => self.shared.grants.allowed(key, Instant::now()),
                    None => drop(self.grants.allowed.insert(rights)),
                }
                Ok(None)
            }
            Reply::Err(error) => {
                info!(code = error.code, "history statement refused: the client's grants on the old table");
                if let Some(key) = &key {
                    self.shared.grants.refused(key);
                }
                Ok(Some(error))
            }
            Reply::Ok(_) | Reply::Rows(_) => {
                Err(SessionError::BackendProtocol(ProtocolError::Malformed("prepare answer")))
            }
        }
    }
}
