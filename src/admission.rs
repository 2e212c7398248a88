//! Who gets in: `listen.max_connections` client connections at most, of which `listen.max_handshakes` at most
//! have not finished logging in. A client beyond either limit is refused before the proxy opens a backend
//! connection for it; the limits are read from the configuration in force at each accept, so a reload changes
//! them for the next client.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::Listen;
use crate::protocol::errors::{MysqlError, code, sqlstate};

/// The counts of connections and of handshakes in progress, shared by the accept loop and every session.
#[derive(Debug, Default)]
pub struct Admission {
    connections: Arc<AtomicUsize>,
    handshakes: Arc<AtomicUsize>,
}

/// Why a new client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// `listen.max_connections` clients are connected already.
    #[error("{0} connections are open (listen.max_connections)")]
    Connections(usize),
    /// `listen.max_handshakes` clients are logging in already.
    #[error("{0} clients are logging in (listen.max_handshakes)")]
    Handshakes(usize),
}

impl Refused {
    /// The `reason` label of `csmh_proxy_connections_refused_total`: the key of the limit.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Connections(_) => "max_connections",
            Refused::Handshakes(_) => "max_handshakes",
        }
    }

    /// What the refused client is told, as a server at its `max_connections` tells it: error 1040.
    pub fn to_mysql(self) -> MysqlError {
        MysqlError::new(
            code::ER_CON_COUNT_ERROR,
            sqlstate::CONNECTION_REJECTED,
            format!("Too many connections: {self} at csmh-proxy"),
        )
    }
}

/// A client's place: it holds one connection, and one handshake until [`Permit::logged_in`]. Dropping it gives
/// both back.
#[derive(Debug)]
pub struct Permit {
    _connection: Slot,
    handshake: Option<Slot>,
}

impl Permit {
    /// The client has finished logging in (or given up): its handshake no longer counts.
    pub fn logged_in(&mut self) {
        self.handshake = None;
    }
}

/// One unit of a count, given back on drop.
#[derive(Debug)]
struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// Takes one unit of `count` if it is below `limit`.
    fn take(count: &Arc<AtomicUsize>, limit: usize) -> Option<Slot> {
        count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1)).ok()?;
        Some(Slot(Arc::clone(count)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// A place for a new client under `limits`, or why there is none.
    pub fn admit(&self, limits: &Listen) -> Result<Permit, Refused> {
        let connection = Slot::take(&self.connections, limits.max_connections)
            .ok_or(Refused::Connections(limits.max_connections))?;
        let handshake =
            Slot::take(&self.handshakes, limits.max_handshakes).ok_or(Refused::Handshakes(limits.max_handshakes))?;
        Ok(Permit { _connection: connection, handshake: Some(handshake) })
    }

    /// Client connections admitted and not yet closed.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Admitted clients that have not finished logging in.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn limits(connections: usize, handshakes: usize) -> Listen {
        let text = format!(
            "[listen]\naddress = \"127.0.0.1:0\"\nmax_connections = {connections}\nmax_handshakes = {handshakes}\n\
             [backends.edxapp]\naddress = \"127.0.0.1:3306\"\n[backends.csmh]\naddress = \"127.0.0.1:3306\"\n"
        );
        Config::parse(&text).unwrap_or_else(|e| panic!("{e}")).listen
    }

    #[test]
    fn places_are_given_back_when_a_client_logs_in_or_leaves() {
        let admission = Admission::default();
        let limits = limits(2, 1);
        let mut first = admission.admit(&limits).unwrap();
        assert_eq!(admission.admit(&limits).unwrap_err(), Refused::Handshakes(1));
        assert_eq!((admission.connections(), admission.handshakes()), (1, 1), "a refusal takes nothing");
        first.logged_in();
        let second = admission.admit(&limits).unwrap();
        assert_eq!(admission.admit(&limits).unwrap_err(), Refused::Connections(2));
        drop((first, second));
        assert_eq!((admission.connections(), admission.handshakes()), (0, 0));
        assert_eq!(Refused::Connections(2).to_mysql().code, 1040);
    }
}
