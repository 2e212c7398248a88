//! A loopback TCP relay that records every byte each way, to seed the fuzz tests with real sessions: clients
//! connect to the recorder, which connects them on to the proxy or a server.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// The bytes of one recorded connection.
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    /// What the client sent.
    pub client: Vec<u8>,
    /// What came back.
    pub server: Vec<u8>,
}

/// A relay in front of `upstream`, recording each connection through it.
pub struct Recorder {
    addr: SocketAddr,
    conversations: Arc<Mutex<Vec<Arc<Mutex<Conversation>>>>>,
}

impl Recorder {
    /// Listens on a free loopback port and relays every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the recorder");
        let addr = listener.local_addr().expect("the recorder's address");
        let conversations: Arc<Mutex<Vec<Arc<Mutex<Conversation>>>>> = Arc::default();
        let recorded = Arc::clone(&conversations);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else { continue };
                let conversation = Arc::new(Mutex::new(Conversation::default()));
                recorded.lock().expect("recordings").push(Arc::clone(&conversation));
                let ((client_read, client_write), (server_read, server_write)) =
                    (client.into_split(), server.into_split());
                tokio::spawn(copy(client_read, server_write, Arc::clone(&conversation), |c| &mut c.client));
                tokio::spawn(copy(server_read, client_write, conversation, |c| &mut c.server));
            }
        });
        Recorder { addr, conversations }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every connection recorded so far.
    pub fn conversations(&self) -> Vec<Conversation> {
        let conversations = self.conversations.lock().expect("recordings");
        conversations.iter().map(|c| c.lock().expect("a recording").clone()).collect()
    }
}

/// Copies `from` to `to` until either closes, appending what passes to the side of `conversation` that `side`
/// picks.
async fn copy(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    conversation: Arc<Mutex<Conversation>>,
    side: fn(&mut Conversation) -> &mut Vec<u8>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        side(&mut conversation.lock().expect("a recording")).extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
