//! A client that records every byte a server sends back, to compare a direct connection with one through the
//! proxy byte for byte.

use bytes::BytesMut;
use csmh_proxy::backend::{self, Credentials};
use csmh_proxy::protocol::capabilities::Negotiated;
use csmh_proxy::protocol::conn::Connection;
use csmh_proxy::protocol::frame;
use csmh_proxy::protocol::response::{Expect, Progress, ResponseScanner};
use csmh_proxy::resolver::Resolver;
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};

/// How long [`RawClient::try_command`] waits for the next bytes of a response before it calls it stalled.
const STALL: std::time::Duration = std::time::Duration::from_secs(5);

/// What came back for a request, for clients that must not panic when a server (or the proxy) misbehaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The whole response, frame headers included.
    Complete(Vec<u8>),
    /// The connection closed (or could not be written to) after these bytes of the response.
    Closed(Vec<u8>),
    /// These bytes are not the start of a well-formed response of the expected shape, or the response asked the
    /// client for something (LOCAL INFILE contents, an authentication packet) that this client does not send.
    Malformed(Vec<u8>),
    /// No more bytes came for a while after these.
    Stalled(Vec<u8>),
}

/// A logged-in connection that sends raw commands and returns raw responses.
pub struct RawClient {
    conn: Connection,
    caps: Negotiated,
}

impl RawClient {
    /// Connects to `address` and logs in with `capabilities` added to the usual ones.
    pub async fn connect(address: &str, credentials: &Credentials, capabilities: CapabilityFlags) -> RawClient {
        RawClient::connect_mariadb(address, credentials, capabilities, MariadbCapabilities::empty()).await
    }

    /// [`RawClient::connect`], asking for MariaDB's extended capabilities `mariadb` too.
    pub async fn connect_mariadb(
        address: &str,
        credentials: &Credentials,
        capabilities: CapabilityFlags,
        mariadb: MariadbCapabilities,
    ) -> RawClient {
        let mut conn = backend::connect(&Resolver::default(), address, 5).await.expect("connect");
        let caps = backend::login_mariadb(&mut conn, credentials, capabilities, mariadb).await.expect("login");
        RawClient { conn, caps }
    }

    /// The capabilities the login agreed on.
    pub fn capabilities(&self) -> Negotiated {
        self.caps
    }

    /// Sends `payload` as a command packet and returns the response's bytes, frame headers included.
    pub async fn command(&mut self, payload: &[u8], expect: Expect) -> Vec<u8> {
        let mut out = BytesMut::new();
        frame::write_packet(&mut out, 0, payload);
        self.conn.write_all(&out).await.expect("send command");
        self.response(expect).await
    }

    /// Sends a COM_QUERY and returns the response's bytes.
    pub async fn query(&mut self, sql: &str) -> Vec<u8> {
        let mut payload = vec![0x03];
        payload.extend_from_slice(sql.as_bytes());
        self.command(&payload, Expect::ResultSets).await
    }

    /// Reads one whole response.
    pub async fn response(&mut self, expect: Expect) -> Vec<u8> {
        let mut scanner = ResponseScanner::new(expect, self.caps);
        let mut received = Vec::new();
        loop {
            let (n, progress) = scanner.scan(&self.conn.buf).expect("well-formed response");
            received.extend_from_slice(&self.conn.buf[..n]);
            self.conn.consume(n);
            match progress {
                Progress::NeedMore => {
                    assert!(self.conn.fill().await.expect("read response") > 0, "connection closed mid-response")
                }
                Progress::Done(_) => return received,
                Progress::ClientTurn(turn) => panic!("raw client does not answer {turn:?}"),
            }
        }
    }

    /// Like [`RawClient::command`], but says how the response went wrong instead of panicking; the connection is
    /// of no further use unless the reply is [`Reply::Complete`].
    pub async fn try_command(&mut self, payload: &[u8], expect: Expect) -> Reply {
        let mut out = BytesMut::new();
        frame::write_packet(&mut out, 0, payload);
        if self.conn.write_all(&out).await.is_err() {
            return Reply::Closed(Vec::new());
        }
        self.try_response(expect).await
    }

    /// Like [`RawClient::query`], but see [`RawClient::try_command`].
    pub async fn try_query(&mut self, sql: &str) -> Reply {
        let mut payload = vec![0x03];
        payload.extend_from_slice(sql.as_bytes());
        self.try_command(&payload, Expect::ResultSets).await
    }

    /// Like [`RawClient::response`], but see [`RawClient::try_command`].
    pub async fn try_response(&mut self, expect: Expect) -> Reply {
        let mut scanner = ResponseScanner::new(expect, self.caps);
        let mut received = Vec::new();
        loop {
            let Ok((n, progress)) = scanner.scan(&self.conn.buf) else {
                received.extend_from_slice(&self.conn.buf);
                return Reply::Malformed(received);
            };
            received.extend_from_slice(&self.conn.buf[..n]);
            self.conn.consume(n);
            match progress {
                Progress::NeedMore => match tokio::time::timeout(STALL, self.conn.fill()).await {
                    Ok(Ok(0) | Err(_)) => {
                        received.extend_from_slice(&self.conn.buf);
                        return Reply::Closed(received);
                    }
                    Ok(Ok(_)) => {}
                    Err(_elapsed) => {
                        received.extend_from_slice(&self.conn.buf);
                        return Reply::Stalled(received);
                    }
                },
                Progress::Done(_) => return Reply::Complete(received),
                Progress::ClientTurn(_) => return Reply::Malformed(received),
            }
        }
    }

    /// Whether the server closes the connection within `limit` (reads until EOF, discarding anything before it).
    pub async fn closes_within(&mut self, limit: std::time::Duration) -> bool {
        tokio::time::timeout(limit, self.is_closed()).await.unwrap_or(false)
    }

    /// Sends a command that gets no response.
    pub async fn send(&mut self, payload: &[u8]) {
        let mut out = BytesMut::new();
        frame::write_packet(&mut out, 0, payload);
        self.conn.write_all(&out).await.expect("send command");
    }

    /// Like [`RawClient::send`], but says whether the command could be written instead of panicking.
    pub async fn try_send(&mut self, payload: &[u8]) -> bool {
        let mut out = BytesMut::new();
        frame::write_packet(&mut out, 0, payload);
        self.conn.write_all(&out).await.is_ok()
    }

    /// Sends raw bytes, framed or not, as a misbehaving client would.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.conn.write_all(bytes).await.expect("send bytes");
    }

    /// Sends raw bytes, framed or not, then half-closes the connection, as a client that sent its last request;
    /// `false` if the connection was closed before.
    pub async fn send_last(&mut self, bytes: &[u8]) -> bool {
        self.conn.write_all(bytes).await.is_ok() && self.conn.shutdown().await.is_ok()
    }

    /// Reads whatever the server has sent (waiting for at least one byte) and discards it; returns how much.
    pub async fn read_some(&mut self) -> usize {
        let n = self.conn.fill().await.expect("read");
        self.conn.consume(self.conn.buf.len());
        n
    }

    /// Whether the server closed the connection (reads until EOF, discarding anything sent before it).
    pub async fn is_closed(&mut self) -> bool {
        loop {
            match self.conn.fill().await {
                Ok(0) | Err(_) => return true,
                Ok(_) => self.conn.consume(self.conn.buf.len()),
            }
        }
    }
}
