//! Connections to a separate `csmh` server kept open between client sessions (`[backends.csmh] keep_idle`).
//!
//! edxapp opens a new connection for every web request, so across two servers every request that touches the
//! history opened its own `csmh` connection: a TCP connect, the greeting, the login (and TLS where the server
//! requires it), several round trips before its statement. The proxy logs in to the `csmh` server with its own
//! account, the same for every session, so a connection whose session ended cleanly can serve the next one: it
//! is reset first (`COM_RESET_CONNECTION`: the server rolls back, forgets prepared statements, temporary tables
//! and variables, and puts the session's settings back to the account's defaults), and the settings the session
//! had applied are applied again in the same write. edxapp's requests all run with the same settings but for
//! autocommit (off in a request `ATOMIC_REQUESTS` wraps in a transaction, on in a view that opts out), so the next
//! session usually finds its own settings in place and runs its first statement at once, where it would otherwise
//! pay a round trip to apply them; one whose settings differ applies them as on a new connection. A connection is
//! kept for [`KEPT_FOR`] (up to half as long again, between two sweeps), under the configuration generation it was
//! opened with; the newest is taken first (of those with the session's settings, if any), so that in quiet times
//! the others age out.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};

use crate::metrics::KeptCounters;
use crate::protocol::capabilities::Negotiated;
use crate::protocol::conn::Connection;

/// How long a connection is kept unused at most: well within the servers' `wait_timeout` (8 hours by default,
/// often minutes on managed servers), long enough for the gaps between a site's requests.
pub const KEPT_FOR: Duration = Duration::from_secs(30);

/// How long a kept connection may have waited and still take a session's first statement with nothing sent
/// before it. A server that stopped answering without closing the connection (frozen, or cut off by the network)
/// shows nothing on its socket: a connection that waited longer is asked to answer first (`COM_PING`, within
/// `connect_timeout_secs`), so that a client's statement is not sent into the silence. Under load connections
/// are taken again within milliseconds and skip it.
pub const TRUSTED_FOR: Duration = Duration::from_secs(1);

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
    /// The client session settings applied on it since its reset.
    pub settings: Settings,
    since: Instant,
}

/// Client session settings applied on a `csmh` connection, as the proxy's read of the client's session answered
/// them (one value per setting, in the reader's order); empty when none is applied (the account's defaults).
pub type Settings = Vec<Option<Vec<u8>>>;

/// The client's protocol features a `csmh` login asks for (those that decide the layout of the answers the
/// proxy relays, and MariaDB's extensions), so that the connection answers as the client expects.
pub type LoginAsked = (CapabilityFlags, MariadbCapabilities);

impl Kept {
    /// A connection of `generation`, asked for `asked`, with `settings` applied, ready to be kept from now.
    pub fn new(conn: Connection, caps: Negotiated, asked: LoginAsked, generation: u64, settings: Settings) -> Kept {
        Kept { conn, caps, asked, generation, settings, since: Instant::now() }
    }

    /// How long it has been kept.
    pub fn waited(&self) -> Duration {
        self.since.elapsed()
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

    /// The newest kept connection of `generation` that `fits` the session, and of those the newest with
    /// `settings` applied, that the server has not closed or spoken on since it was kept. Connections of older
    /// generations, those kept longer than [`KEPT_FOR`] and those the server closed are closed on the way.
    pub fn take(&self, generation: u64, settings: &Settings, fits: impl Fn(&Kept) -> bool) -> Option<Kept> {
        loop {
            let mut state = self.lock();
            self.close_outdated(&mut state, generation);
            let fits = |kept: &Kept| kept.generation == generation && fits(kept);
            let same = state.kept.iter().rposition(|kept| fits(kept) && kept.settings == *settings);
            let index = same.or_else(|| state.kept.iter().rposition(fits))?;
            let mut kept = state.kept.remove(index);
            self.counters.kept.set(state.kept.len() as i64);
            drop(state);
            if kept.conn.is_quiet() {
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
