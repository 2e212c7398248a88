//! A client that records every byte a server sends back, to compare a direct connection with one through the
//! proxy byte for byte.

use bytes::BytesMut;
use csmh_proxy::backend::{self, Credentials};
use csmh_proxy::protocol::capabilities::Negotiated;
use csmh_proxy::protocol::conn::Connection;
use csmh_proxy::protocol::frame;
use csmh_proxy::protocol::response::{Expect, Progress, ResponseScanner};
use mysql_common::constants::CapabilityFlags;

/// A logged-in connection that sends raw commands and returns raw responses.
pub struct RawClient {
    conn: Connection,
    caps: Negotiated,
}

impl RawClient {
    /// Connects to `address` and logs in with `capabilities` added to the usual ones.
    pub async fn connect(address: &str, credentials: &Credentials, capabilities: CapabilityFlags) -> RawClient {
        let mut conn = backend::connect(address, 5).await.expect("connect");
        let caps = backend::login(&mut conn, credentials, capabilities).await.expect("login");
        RawClient { conn, caps }
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
        let mut scanner = ResponseScanner::new(expect, self.caps.deprecate_eof());
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

    /// Sends a command that gets no response.
    pub async fn send(&mut self, payload: &[u8]) {
        let mut out = BytesMut::new();
        frame::write_packet(&mut out, 0, payload);
        self.conn.write_all(&out).await.expect("send command");
    }

    /// Sends raw bytes, framed or not, as a misbehaving client would.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.conn.write_all(bytes).await.expect("send bytes");
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
