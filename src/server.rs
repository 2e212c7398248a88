//! The listener: accepts clients, runs a [`session`](crate::session) for each, follows the configuration file
//! while it runs, and shuts down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admin::{self, AdminServer};
use crate::config::Config;
use crate::preconnect::Target;
use crate::reload::{Watch, Watcher};
use crate::session;
use crate::state::ProxyState;

/// A bound, not yet running proxy.
pub struct Proxy {
    listener: TcpListener,
    shared: Arc<ProxyState>,
    watch: Option<Watch>,
    /// The admin HTTP listener, when `[admin] address` is set.
    admin: Option<TcpListener>,
}

/// A proxy running in the background (tests, the sandbox).
pub struct ProxyHandle {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shared: Arc<ProxyState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Proxy {
    /// Binds the client listener named in `config`, and the admin listener if it names one.
    pub async fn bind(config: Config) -> anyhow::Result<Proxy> {
        let address = config.listen.address.clone();
        let listener =
            TcpListener::bind(&address).await.map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))?;
        let admin = match &config.admin {
            Some(settings) => Some(admin::bind(&settings.address).await?),
            None => None,
        };
        let shared = Arc::new(ProxyState::new(config)?);
        Ok(Proxy { listener, shared, watch: None, admin })
    }

    /// Follows a configuration file while the proxy runs: reloads it as `watch` says (and on SIGHUP), from
    /// [`Proxy::run`]'s start to its shutdown. Without this the configuration given to [`Proxy::bind`] stays.
    pub fn watch_config(self, watch: Watch) -> Proxy {
        Proxy { watch: Some(watch), ..self }
    }

    /// The address clients connect to (useful when the config said port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The address of the admin HTTP listener, if there is one (useful when the config said port 0).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|listener| listener.local_addr().ok())
    }

    /// The state shared with every session (configuration in force, counters).
    pub fn shared(&self) -> Arc<ProxyState> {
        Arc::clone(&self.shared)
    }

    /// Serves clients until `shutdown` resolves; then drains: unready at once (`/readyz` 503) while it goes on
    /// accepting for `listen.drain_secs`, then stops accepting, lets sessions finish the statement and the
    /// transaction they are in (up to `listen.shutdown_timeout_secs`; an idle session's next request gets 1053),
    /// and closes the rest.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let watcher = self.watch.map(|watch| Watcher::spawn(watch, Arc::clone(&self.shared)));
        let stop = CancellationToken::new();
        let admin: Option<AdminServer> =
            self.admin.map(|listener| admin::spawn(listener, Arc::clone(&self.shared), stop.child_token()));
        let preconnect = tokio::spawn(keep_connections_ready(Arc::clone(&self.shared), stop.child_token()));
        let mut sessions = JoinSet::new();
        let shared = Arc::clone(&self.shared);
        let drained = async move {
            shutdown.await;
            shared.start_draining();
            let drain = Duration::from_secs(shared.snapshot().config.listen.drain_secs);
            info!(drain_secs = drain.as_secs(), "shutdown requested: unready, still accepting while draining");
            tokio::time::sleep(drain).await;
        };
        tokio::pin!(drained);
        loop {
            tokio::select! {
                () = &mut drained => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => start_session(&self.shared, stream, peer, &mut sessions, &stop),
                    Err(error) => {
                        // Out of file descriptors and the like: keep serving the connections we have.
                        warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            }
        }
        drop(self.listener);
        if let Some(watcher) = watcher {
            watcher.stop().await;
        }
        stop.cancel();
        let _ = preconnect.await;
        let grace = Duration::from_secs(self.shared.snapshot().config.listen.shutdown_timeout_secs);
        info!(connections = sessions.len(), grace_secs = grace.as_secs(), "shutting down");
        let drained = tokio::time::timeout(grace, async { while sessions.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            warn!(connections = sessions.len(), "closing connections still busy after the shutdown timeout");
            sessions.shutdown().await;
        }
        self.shared.csmh_pool.close_all();
        if let Some(admin) = admin {
            admin.stopped().await;
        }
        info!("stopped");
        Ok(())
    }

    /// [`Proxy::run`] on a worker thread of the current runtime, waiting for it from the caller's thread (the one
    /// blocking on the runtime, for `serve` and `sandbox`). A session spawned from a worker starts on that worker
    /// (tokio's LIFO slot); from the blocking thread, every new client would cost a cross-thread wake-up.
    pub async fn run_on_worker(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        tokio::spawn(self.run(shutdown)).await?
    }

    /// Runs the proxy on the current tokio runtime in the background.
    pub fn spawn(self) -> ProxyHandle {
        let addr = self.local_addr();
        let admin_addr = self.admin_addr();
        let shared = self.shared();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(self.run(async {
            let _ = rx.await;
        }));
        ProxyHandle { addr, admin_addr, shared, shutdown: Some(tx), task }
    }
}

impl ProxyHandle {
    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the admin HTTP listener, if `[admin] address` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The state shared with every session (configuration in force, counters).
    pub fn shared(&self) -> &Arc<ProxyState> {
        &self.shared
    }

    /// Stops accepting, lets in-flight statements finish, and waits for the proxy to end.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await?
    }
}

/// Starts a session for a client just accepted, or refuses it (error 1040, no backend connection) when the
/// limits in force say there is no place for it.
fn start_session(
    shared: &Arc<ProxyState>,
    stream: TcpStream,
    peer: SocketAddr,
    sessions: &mut JoinSet<()>,
    stop: &CancellationToken,
) {
    match shared.admission.admit(&shared.snapshot().config.listen) {
        Ok(permit) => {
            sessions.spawn(session::run(stream, peer, permit, Arc::clone(shared), stop.child_token()));
        }
        Err(refused) => {
            shared.metrics.connection_refused(refused.reason());
            warn!(%peer, %refused, "connection refused");
            sessions.spawn(session::refuse(stream, refused));
        }
    }
}

/// Keeps connections to the `edxapp` server of the configuration in force ready for new clients, until `stop`.
async fn keep_connections_ready(shared: Arc<ProxyState>, stop: CancellationToken) {
    let current = || Target::of(&shared.snapshot().config.backends);
    shared.preconnect.keep_ready(&shared.resolver, current, stop).await;
}

/// Binds and serves until SIGINT or SIGTERM, reloading the configuration file as `watch` says.
pub async fn serve(config: Config, watch: Watch) -> anyhow::Result<()> {
    let proxy = Proxy::bind(config).await?.watch_config(watch);
    info!(address = %proxy.local_addr(), "listening");
    if let Some(address) = proxy.admin_addr() {
        info!(%address, "admin listening (/metrics, /livez, /readyz, /healthz, /config)");
    }
    proxy.run_on_worker(shutdown_signal()).await
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
