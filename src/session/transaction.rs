//! The client's transaction, as far as routing cares: the configuration snapshot it began with, which every
//! statement in it is routed by, so that a flag flipped in the middle never splits one transaction across two
//! routings. It is open from its first statement on either server until it ends.

use std::sync::Arc;

use crate::state::{ConfigSnapshot, ProxyState};

/// The snapshot a transaction in progress is pinned to.
#[derive(Default)]
pub(super) struct Transaction {
    /// The snapshot of the last request; it stays while the client's transaction is open.
    pinned: Option<Arc<ConfigSnapshot>>,
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
}
