//! A loopback relay in front of a server that holds back the server's answers to COMMIT until the test lets them
//! through, as a server slow to answer its COMMIT (a stalled disk flush, the network between) would: the COMMIT
//! reaches the server and is carried out, only its answer waits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use super::edx::Site;
use csmh_proxy::history::Stage;

/// A COM_QUERY of `COMMIT`, as the proxy sends it.
const COMMIT: &[u8] = b"\x03COMMIT";

/// A relay in front of `upstream` holding the answers to COMMIT until [`CommitAnswersHeld::release`].
pub struct CommitAnswersHeld {
    addr: SocketAddr,
    held: Arc<Notify>,
    released: watch::Sender<bool>,
}

impl CommitAnswersHeld {
    /// A site with the extended table on its own server, reading both tables, whose proxy reaches that server
    /// through a relay holding its answers to COMMIT, with `[backends.csmh] read_timeout_secs` set to
    /// `read_timeout_secs` if given.
    pub async fn in_front_of_csmh(read_timeout_secs: Option<u64>) -> (Site, CommitAnswersHeld) {
        let flags = Stage::ExtendedTableReadingBoth.flags();
        let site = Site::two_servers(flags).await;
        let relay = CommitAnswersHeld::start(site.dbs.csmh.addr()).await;
        let mut config = site.dbs.proxy_toml(flags).config().expect("the site's proxy.toml");
        config.backends.csmh.address = relay.addr().to_string();
        if let Some(secs) = read_timeout_secs {
            config.backends.csmh.read_timeout_secs = secs;
        }
        site.proxy.shared().replace(config).expect("the relay's configuration");
        (site, relay)
    }

    /// Listens on a free loopback port and relays every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> CommitAnswersHeld {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the relay");
        let addr = listener.local_addr().expect("the relay's address");
        let held = Arc::new(Notify::new());
        let (released, _) = watch::channel(false);
        let (notify, release) = (Arc::clone(&held), released.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else { continue };
                let ((client_read, client_write), (server_read, server_write)) =
                    (client.into_split(), server.into_split());
                let committing = Arc::new(AtomicBool::new(false));
                tokio::spawn(to_server(client_read, server_write, Arc::clone(&committing)));
                let waits = Wait { committing, held: Arc::clone(&notify), released: release.subscribe() };
                tokio::spawn(to_client(server_read, client_write, waits));
            }
        });
        CommitAnswersHeld { addr, held, released }
    }

    /// The address to connect to in place of the server's.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the server has answered a COMMIT, so has carried it out, and the relay holds the answer.
    pub async fn answer_held(&self) {
        self.held.notified().await;
    }

    /// Lets the answers held through, and every later one at once.
    pub fn release(&self) {
        self.released.send_replace(true);
    }
}

/// What the server-to-client half of one connection waits on.
struct Wait {
    /// The client's last packet was a COMMIT: the server's next bytes are its answer.
    committing: Arc<AtomicBool>,
    held: Arc<Notify>,
    released: watch::Receiver<bool>,
}

/// Copies the client's bytes to the server, noting each COMMIT before it is passed on.
async fn to_server(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, committing: Arc<AtomicBool>) {
    let (mut buf, mut pending) = (vec![0u8; 16 * 1024], Vec::new());
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        pending.extend_from_slice(&buf[..n]);
        while pending.len() >= 4 {
            let len = usize::from(pending[0]) | usize::from(pending[1]) << 8 | usize::from(pending[2]) << 16;
            if pending.len() < 4 + len {
                break;
            }
            if pending[4..4 + len].eq_ignore_ascii_case(COMMIT) {
                committing.store(true, Ordering::SeqCst);
            }
            pending.drain(..4 + len);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Copies the server's bytes to the client, holding an answer to COMMIT until the relay is released.
async fn to_client(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut wait: Wait) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        if wait.committing.swap(false, Ordering::SeqCst) {
            wait.held.notify_one();
            let _ = wait.released.wait_for(|released| *released).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
