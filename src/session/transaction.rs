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
    /// The client's transaction ended in a way its last answer could not say (the proxy rolled it back when its
    /// `csmh` side failed, or that side lost its part of a commit): the error the client's next statement gets
    /// instead of running.
    untold_end: Option<MysqlError>,
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

    /// Records that the client's transaction ended as `error` says, while no answer could say so.
    pub fn ended_untold(&mut self, error: MysqlError) {
        self.untold_end = Some(error);
    }

    /// For a statement (`command`: a query, a prepare, an execution or a batch of them): the error of an end of the transaction the client was not told of yet. The
    /// statement does not run, so that it does not carry on, outside a transaction, what the client believes is
    /// one.
    pub fn take_untold_end(&mut self, command: Command) -> Option<MysqlError> {
        let statement = matches!(command, Command::Query | Command::StmtPrepare) || command.executes();
        if statement { self.untold_end.take() } else { None }
    }
}
