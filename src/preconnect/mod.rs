//! Connections to the `edxapp` server opened ahead of clients (`[backends.edxapp.preconnect]`): connected, the
//! server's greeting read into the buffer, not logged in. A new client takes one and its login starts at once
//! with that greeting, scramble and all, relayed as from a connection opened for it; the TCP connect and the
//! server's first round trip are off its path. Each connection serves one client, as one opened for it would.
//!
//! How many are kept follows the rate of new clients ([`sizing`]); one not taken within `max_age_ms` is closed
//! before the server's `connect_timeout` would close it, and one the server closed or spoke on meanwhile is never
//! handed out ([`Connection::is_quiet`]). What this costs the server is in docs/reliability.md ("Connections
//! opened ahead").

pub mod sizing;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::backend::{self, BackendError};
use crate::config::{Backends, Preconnect as Settings};
use crate::metrics::PreconnectCounters;
use crate::protocol::conn::{Connection, ReadError};
use crate::protocol::errors::MysqlError;
use crate::protocol::packets::MAX_HANDSHAKE_PACKET;
use crate::resolver::Resolver;
use sizing::{ArrivalRate, TICK};

/// After a failure to open a connection ahead, the next attempt waits this long (clients meanwhile connect
/// themselves, and see the failure themselves if it lasts).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The connections ready for the next clients, and what keeps them ready. One per proxy, across reloads.
#[derive(Debug)]
pub struct Preconnect {
    /// Oldest first: a client takes the oldest, so the others wait as little as they can.
    ready: Mutex<VecDeque<Ready>>,
    /// Clients that asked for a connection since the proxy started, the rate's raw count.
    arrivals: AtomicU64,
    /// Connections closed unused (expired, lost or discarded) since the last client asked for one. Nothing more
    /// is opened while it is at `max`: between two clients the pool ends at most `max` connections without a
    /// login, which is what a server that resolves names counts against the proxy's host ([`Preconnect::fill`]).
    unused_since_client: AtomicUsize,
    /// Woken when a client took (or looked for) a connection, so the pool is refilled at once.
    wake: Notify,
    counters: PreconnectCounters,
}

/// Where the connections go and how many may be kept: from the configuration in force, read at every step.
#[derive(Debug, Clone)]
pub struct Target {
    /// The `edxapp` server's `host:port`.
    pub address: String,
    /// `[backends.edxapp] connect_timeout_secs`: how long opening one may take (connect, then greeting).
    pub connect_timeout_secs: u64,
    /// `[backends.edxapp.preconnect]`.
    pub settings: Settings,
}

impl Target {
    /// The target `backends` names: their `edxapp` server.
    pub fn of(backends: &Backends) -> Target {
        let edxapp = &backends.edxapp;
        Target {
            address: edxapp.address.clone(),
            connect_timeout_secs: edxapp.connect_timeout_secs,
            settings: backends.edxapp_preconnect(),
        }
    }
}

/// A connection greeted and waiting for a client.
#[derive(Debug)]
struct Ready {
    conn: Connection,
    address: String,
    /// When its TCP connect began: the server's `connect_timeout` runs from about then.
    opened: Instant,
}

/// What a ready connection is good for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// A client may log in on it.
    Usable,
    /// It is older than `max_age_ms`.
    Expired,
    /// It goes to a server the configuration no longer names, or preconnecting is off now.
    Discarded,
    /// The server closed it, or sent something after its greeting (an error before closing).
    Lost,
}

impl Ready {
    /// What the configuration in force and the connection's age say of it: no system call, so the pool looks
    /// its connections over with it at every step.
    fn fate(&self, target: &Target, now: Instant) -> Fate {
        if self.address != target.address || !target.settings.is_on() {
            Fate::Discarded
        } else if now.duration_since(self.opened) >= target.settings.max_age() {
            Fate::Expired
        } else {
            Fate::Usable
        }
    }

    /// [`Ready::fate`], then, for one a client is about to have, whether the server closed it or wrote to it
    /// meanwhile (one non-blocking read).
    fn fate_for_client(&mut self, target: &Target, now: Instant) -> Fate {
        match self.fate(target, now) {
            Fate::Usable if !self.conn.is_quiet() => Fate::Lost,
            fate => fate,
        }
    }
}

/// Why a connection could not be opened ahead.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error(transparent)]
    Connect(#[from] BackendError),
    #[error("no greeting from {address} within {seconds} s")]
    NoGreeting { address: String, seconds: u64 },
    #[error("{address} closed the connection before its greeting")]
    Closed { address: String },
    #[error("reading the greeting of {address}: {source}")]
    Read { address: String, source: ReadError },
    #[error("{address} refused the connection: {error}")]
    Refused { address: String, error: MysqlError },
}

impl Preconnect {
    /// An empty pool counting into `counters`.
    pub fn new(counters: PreconnectCounters) -> Preconnect {
        Preconnect {
            ready: Mutex::default(),
            arrivals: AtomicU64::new(0),
            unused_since_client: AtomicUsize::new(0),
            wake: Notify::new(),
            counters,
        }
    }

    /// A greeted connection to `target`'s server for a new client, if one is ready; `None`: the client connects
    /// itself. Every call counts in the rate of new clients.
    pub fn take(&self, target: &Target) -> Option<Connection> {
        self.arrivals.fetch_add(1, Ordering::Relaxed);
        self.unused_since_client.store(0, Ordering::Relaxed);
        if !target.settings.is_on() {
            return None;
        }
        let now = Instant::now();
        let taken = loop {
            let Some(mut ready) = self.pop() else { break None };
            match ready.fate_for_client(target, now) {
                Fate::Usable => break Some(ready.conn),
                fate => self.count_closed(fate),
            }
        };
        self.wake.notify_one();
        match &taken {
            Some(_) => self.counters.used.inc(),
            None => self.counters.misses.inc(),
        };
        taken
    }

    /// Keeps connections ready for the clients of the configuration `current` returns, until `stop`; then
    /// closes those left. Runs as one task per proxy.
    pub async fn keep_ready(&self, resolver: &Resolver, current: impl Fn() -> Target, stop: CancellationToken) {
        let mut rate = ArrivalRate::default();
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retry_at = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticks.tick() => rate.tick(self.arrivals.load(Ordering::Relaxed)),
                () = self.wake.notified() => {}
            }
            let target = current();
            self.look_over(&target);
            let wanted = sizing::wanted(rate.per_second(), target.settings);
            self.counters.target.set(i64::try_from(wanted).unwrap_or(i64::MAX));
            if retry_at.is_some_and(|at| Instant::now() < at) {
                continue;
            }
            tokio::select! {
                () = stop.cancelled() => break,
                filled = self.fill(resolver, &target, wanted) => {
                    retry_at = filled.err().map(|()| Instant::now() + RETRY_AFTER);
                }
            }
        }
        self.close_all();
    }

    /// Opens connections until `wanted` are ready, or until `max` have been closed unused since the last client
    /// (they would only be closed unused in turn); `Err` after a failure (logged and counted).
    ///
    /// The second bound is for the server: one that resolves names counts each connection closed before its
    /// login against the proxy's host, and refuses the host at `max_connect_errors` (100 by default) until a login
    /// resets the count. The rate alone does not bound that: with a short `max_age_ms`, a rate that falls slowly
    /// after a burst would keep opening connections that expire, `max` at a time, for the whole window.
    async fn fill(&self, resolver: &Resolver, target: &Target, wanted: usize) -> Result<(), ()> {
        while self.len() < wanted && self.unused_since_client.load(Ordering::Relaxed) < target.settings.max {
            match open(resolver, target).await {
                Ok(ready) => self.push(ready),
                Err(error) => {
                    self.counters.failed.inc();
                    warn!(%error, "cannot open a connection ahead of clients; they connect themselves meanwhile");
                    return Err(());
                }
            }
        }
        Ok(())
    }

    /// Closes the ready connections a client could no longer have by the configuration or their age (one the
    /// server closed meanwhile is found when a client takes it).
    fn look_over(&self, target: &Target) {
        let now = Instant::now();
        let mut closing = Vec::new();
        {
            let mut ready = self.lock();
            ready.retain(|ready| match ready.fate(target, now) {
                Fate::Usable => true,
                fate => {
                    closing.push(fate);
                    false
                }
            });
            self.set_ready_gauge(ready.len());
        }
        for fate in closing {
            self.count_closed(fate);
        }
    }

    /// Closes every ready connection (the proxy is stopping).
    fn close_all(&self) {
        let closed = std::mem::take(&mut *self.lock());
        self.set_ready_gauge(0);
        self.counters.discarded.inc_by(closed.len() as u64);
    }

    fn count_closed(&self, fate: Fate) {
        debug!(?fate, "closing a connection opened ahead of clients");
        self.unused_since_client.fetch_add(1, Ordering::Relaxed);
        match fate {
            Fate::Expired => self.counters.expired.inc(),
            Fate::Discarded => self.counters.discarded.inc(),
            Fate::Lost => self.counters.lost.inc(),
            Fate::Usable => 0,
        };
    }

    fn pop(&self) -> Option<Ready> {
        let mut ready = self.lock();
        let oldest = ready.pop_front();
        self.set_ready_gauge(ready.len());
        oldest
    }

    fn push(&self, connection: Ready) {
        let mut ready = self.lock();
        ready.push_back(connection);
        self.set_ready_gauge(ready.len());
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn set_ready_gauge(&self, len: usize) {
        self.counters.ready.set(i64::try_from(len).unwrap_or(i64::MAX));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Ready>> {
        self.ready.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Connects to `target`'s server (its name looked up through `resolver`) and reads its greeting into the
/// connection's buffer.
async fn open(resolver: &Resolver, target: &Target) -> Result<Ready, OpenError> {
    let address = &target.address;
    let opened = Instant::now();
    let mut conn = backend::connect(resolver, address, target.connect_timeout_secs).await?;
    let limit = Duration::from_secs(target.connect_timeout_secs);
    let greeting = tokio::time::timeout(limit, conn.next_packet_within(MAX_HANDSHAKE_PACKET))
        .await
        .map_err(|_| OpenError::NoGreeting { address: address.clone(), seconds: target.connect_timeout_secs })?
        .map_err(|source| OpenError::Read { address: address.clone(), source })?
        .ok_or_else(|| OpenError::Closed { address: address.clone() })?;
    if let Some(error) = MysqlError::parse(greeting.first_frame(&conn.buf)) {
        return Err(OpenError::Refused { address: address.clone(), error });
    }
    Ok(Ready { conn, address: address.clone(), opened })
}
