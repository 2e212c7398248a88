//! The client's transaction, as far as routing cares: the configuration snapshot it began with, which every
//! statement in it is routed by, so that a flag flipped in the middle never splits one transaction across two
//! routings. It is open from its first statement on either server until it ends.

use std::sync::Arc;

use crate::protocol::command::Command;
use crate::protocol::errors::MysqlError;
use crate::state::{ConfigSnapshot, ProxyState};

/// The snapshot a transaction in progress is pinned to.
#[derive(Default)]
pub(super) struct Transaction {
    /// The snapshot of the last request; it stays while the client's transaction is open.
    pinned: Option<Arc<ConfigSnapshot>>,
    /// The proxy rolled the client's transaction back during a command that gets no answer (its `csmh` side
    /// failed): the error the client's next statement gets instead of running.
    rolled_back: Option<MysqlError>,
}

impl Transaction {
    /// The snapshot a request is decided by: the pinned one while a transaction is `open`, otherwise the one in
    /// force now, which is pinned in turn (a statement may begin a transaction).
    pub fn snapshot(&mut self, open: bool, shared: &ProxyState) -> Arc<ConfigSnapshot> {
        let snapshot = match &self.pinned {
            Some(pinned) if open => Arc::clone(pinned),
            _ => shared.snapshot(),
        };
        self.pinned = Some(Arc::clone(&snapshot));
        snapshot
    }

    /// Records that the client's transaction was rolled back, with `error`, while no answer could say so.
    pub fn rolled_back(&mut self, error: MysqlError) {
        self.rolled_back = Some(error);
    }

    /// For a statement (`command`): the error of a rollback the client was not told of yet. The statement does
    /// not run, so that it does not carry on, outside a transaction, what the client believes is one.
    pub fn take_rollback_error(&mut self, command: Command) -> Option<MysqlError> {
        match command {
            Command::Query | Command::StmtPrepare | Command::StmtExecute { .. } => self.rolled_back.take(),
            _ => None,
        }
    }
}
