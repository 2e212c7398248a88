//! Connections to a separate `csmh` server kept open between client sessions (`[backends.csmh] keep_idle`).
//!
//! edxapp opens a new connection for every web request, so across two servers every request that touches the
//! history opened its own `csmh` connection: a TCP connect, the greeting, the login (and TLS where the server
//! requires it), several round trips before its statement. The proxy logs in to the `csmh` server with its own
//! account, the same for every session, so a connection whose session ended cleanly can serve the next one: it
//! is reset first (`COM_RESET_CONNECTION`: the server rolls back, forgets prepared statements, temporary tables
//! and variables, and puts the session's settings back to the account's defaults), and the next session applies
//! its client's settings on it as on a new connection. A connection is kept for [`KEPT_FOR`] (up to half as long
//! again, between two sweeps), under the configuration generation it was opened with; the newest is taken first,
//! so that in quiet times the others age out.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};

use crate::metrics::KeptCounters;
use crate::protocol::capabilities::Negotiated;
use crate::protocol::conn::Connection;

/// How long a connection is kept unused at most: well within the servers' `wait_timeout` (8 hours by default,
/// often minutes on managed servers), long enough for the gaps between a site's requests.
pub const KEPT_FOR: Duration = Duration::from_secs(30);

/// A connection to the `csmh` server, logged in and reset, waiting for a session.
pub struct Kept {
    /// The socket.
    pub conn: Connection,
    /// The capabilities its login negotiated.
    pub caps: Negotiated,
    /// What its login asked for on behalf of the client that opened it: a session whose client asks the same
    /// can use it.
    pub asked: LoginAsked,
    /// The configuration generation it was opened under.
    pub generation: u64,
    since: Instant,
}

/// The client's protocol features a `csmh` login asks for (those that decide the layout of the answers the
/// proxy relays, and MariaDB's extensions), so that the connection answers as the client expects.
pub type LoginAsked = (CapabilityFlags, MariadbCapabilities);

impl Kept {
    /// A connection of `generation`, asked for `asked`, ready to be kept from now.
    pub fn new(conn: Connection, caps: Negotiated, asked: LoginAsked, generation: u64) -> Kept {
        Kept { conn, caps, asked, generation, since: Instant::now() }
    }

    /// Whether it runs over TLS, as a session whose client came over TLS needs.
    pub fn encrypted(&self) -> bool {
        self.conn.is_tls()
    }
}

/// The kept connections of one proxy.
pub struct CsmhPool {
    state: Mutex<PoolState>,
    counters: KeptCounters,
}

impl std::fmt::Debug for CsmhPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsmhPool").field("kept", &self.len()).finish()
    }
}

#[derive(Default)]
struct PoolState {
    /// Oldest first.
    kept: Vec<Kept>,
    /// A task closes the connections that outlive [`KEPT_FOR`] while any are kept.
    sweeping: bool,
    /// The proxy stopped: nothing is kept any more.
    closed: bool,
}

impl CsmhPool {
    /// An empty pool counting into `counters`.
    pub fn new(counters: KeptCounters) -> CsmhPool {
        CsmhPool { state: Mutex::default(), counters }
    }

    /// The newest kept connection of `generation` that `fits` the session and that the server has not closed
    /// (checked for a plaintext one; a TLS one is checked by its first use). Connections of older generations,
    /// those kept longer than [`KEPT_FOR`] and those the server closed are closed on the way.
    pub fn take(&self, generation: u64, fits: impl Fn(&Kept) -> bool) -> Option<Kept> {
        loop {
            let mut state = self.lock();
            self.close_outdated(&mut state, generation);
            let index = state.kept.iter().rposition(|kept| kept.generation == generation && fits(kept))?;
            let mut kept = state.kept.remove(index);
            self.counters.kept.set(state.kept.len() as i64);
            drop(state);
            if kept.encrypted() || kept.conn.is_quiet() {
                return Some(kept);
            }
            // The server closed it or spoke (a KILL, its wait_timeout).
            self.counters.lost.inc();
        }
    }

    /// Keeps `kept` for a later session, closing the oldest beyond `max`; after [`CsmhPool::close_all`], closes
    /// it instead.
    pub fn keep(self: &Arc<Self>, kept: Kept, max: usize) {
        let mut state = self.lock();
        if state.closed {
            self.counters.discarded.inc();
            return;
        }
        state.kept.push(kept);
        let beyond = state.kept.len().saturating_sub(max);
        state.kept.drain(..beyond);
        self.counters.discarded.inc_by(beyond as u64);
        self.counters.kept.set(state.kept.len() as i64);
        if !state.sweeping && !state.kept.is_empty() {
            state.sweeping = true;
            tokio::spawn(Arc::clone(self).sweep());
        }
    }

    /// Closes every kept connection, and keeps none from now on: the proxy is stopping.
    pub fn close_all(&self) {
        let mut state = self.lock();
        state.closed = true;
        self.counters.discarded.inc_by(state.kept.len() as u64);
        state.kept.clear();
        self.counters.kept.set(0);
    }

    /// How many connections are kept now.
    pub fn len(&self) -> usize {
        self.lock().kept.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes the connections kept longer than [`KEPT_FOR`] every half of it, until none is kept: a connection
    /// lives at most one and a half times [`KEPT_FOR`] unused.
    async fn sweep(self: Arc<Self>) {
        loop {
            tokio::time::sleep(KEPT_FOR / 2).await;
            let mut state = self.lock();
            self.close_outdated(&mut state, 0);
            if state.kept.is_empty() {
                state.sweeping = false;
                return;
            }
        }
    }

    /// Closes the connections of generations before `generation` (as discarded) and those kept longer than
    /// [`KEPT_FOR`] (as expired).
    fn close_outdated(&self, state: &mut PoolState, generation: u64) {
        let before = state.kept.len();
        state.kept.retain(|kept| kept.generation >= generation);
        self.counters.discarded.inc_by((before - state.kept.len()) as u64);
        let before = state.kept.len();
        state.kept.retain(|kept| kept.since.elapsed() < KEPT_FOR);
        self.counters.expired.inc_by((before - state.kept.len()) as u64);
        self.counters.kept.set(state.kept.len() as i64);
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
