//! Nothing unbounded before login (docs/reliability.md, "Limits"): an oversized handshake packet, a client that
//! never logs in, too many connections or logins at once, a packet larger than `listen.max_packet_bytes`, and a
//! history statement larger than the proxy parses each get the error a client library reports, and cost the
//! proxy no more than the limit says.

mod support;

use std::time::Duration;

use csmh_proxy::config::{Config, Preconnect};
use csmh_proxy::history::{Flags, Stage};
use csmh_proxy::server::ProxyHandle;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use support::EdxDatabases;
use support::edx::{edxapp_insert, server_error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest any step of these tests waits, so that a proxy that never answers fails the test instead of
/// hanging it.
const BOUND: Duration = Duration::from_secs(20);

/// The proxy in front of `dbs` with `flags`, its configuration changed by `limits`. It opens no connections
/// ahead of clients: these tests count the server's connection attempts to show that a refused client costs
/// none, and two clients in quick succession are a rate at which the pool would open some for clients to come.
async fn proxy_with(dbs: &EdxDatabases, flags: Flags, limits: impl FnOnce(&mut Config)) -> ProxyHandle {
    let mut config = dbs.proxy_toml(flags).config().expect("the fixture's proxy.toml");
    config.backends.edxapp.preconnect = Some(Preconnect { max: 0, ..Preconnect::default() });
    limits(&mut config);
    config.validate().expect("valid limits");
    support::start_proxy(config).await
}

/// A raw TCP connection to the proxy that has read the server's greeting and sent nothing.
async fn greeted(proxy: &ProxyHandle) -> TcpStream {
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    let mut header = [0u8; 4];
    tokio::time::timeout(BOUND, stream.read_exact(&mut header)).await.expect("a greeting in time").expect("read");
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    let mut greeting = vec![0u8; len];
    stream.read_exact(&mut greeting).await.expect("the whole greeting");
    assert_ne!(greeting[..].first(), Some(&0xFF), "a greeting, not an error");
    stream
}

/// Everything the proxy sends until it closes the connection.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(BOUND, stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the proxy closes the connection; it sent {} bytes meanwhile", rest.len());
    rest
}

/// The code, sequence id and message of the ERR packet `bytes` must be.
fn err_packet(bytes: &[u8]) -> (u16, u8, String) {
    assert!(bytes.len() > 7 && bytes[4] == 0xFF, "an ERR packet, got {bytes:?}");
    let message = String::from_utf8_lossy(&bytes[13..]).into_owned();
    (u16::from_le_bytes([bytes[5], bytes[6]]), bytes[3], message)
}

/// The number of connection attempts the server has seen (its `Connections` status).
async fn connection_attempts(root: &mut Conn) -> u64 {
    let row: Option<(String, u64)> = root.query_first("SHOW GLOBAL STATUS LIKE 'Connections'").await.unwrap();
    row.expect("the Connections status").1
}

/// Retries logging in through the proxy until it lets the client in (a place freed by a closed connection is
/// given back when the proxy notices the close).
async fn logs_in_again(opts: Opts) -> Conn {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        match Conn::new(opts.clone()).await {
            Ok(conn) => return conn,
            Err(error) if tokio::time::Instant::now() > deadline => panic!("never let in again: {error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test]
async fn a_handshake_packet_larger_than_any_login_gets_1043_before_its_body_is_read() {
    let dbs = EdxDatabases::fresh().await;
    let proxy = dbs.start_proxy(Flags::default()).await;
    let mut stream = greeted(&proxy).await;
    // The header of a 16 MiB frame that another frame continues, as the first of 96 MiB of handshake response.
    let mut start = vec![0xFF, 0xFF, 0xFF, 1];
    start.extend_from_slice(&[b'x'; 4096]);
    stream.write_all(&start).await.unwrap();
    let (code, seq, message) = err_packet(&until_closed(&mut stream).await);
    assert_eq!((code, seq), (1043, 2), "{message}");
    assert!(message.contains("Bad handshake"), "{message}");
    let mut fine = Conn::new(dbs.proxy_opts(&proxy, &support::app())).await.unwrap();
    assert_eq!(fine.query_first::<i64, _>("SELECT 1").await.unwrap(), Some(1));
}

#[tokio::test]
async fn a_client_that_never_logs_in_gets_1043_after_handshake_timeout_secs() {
    let dbs = EdxDatabases::fresh().await;
    let proxy = proxy_with(&dbs, Flags::default(), |config| config.listen.handshake_timeout_secs = 1).await;
    let mut stream = greeted(&proxy).await;
    let (code, seq, message) = err_packet(&until_closed(&mut stream).await);
    assert_eq!((code, seq), (1043, 1), "{message}");
    assert!(message.contains("listen.handshake_timeout_secs"), "{message}");
}

#[tokio::test]
async fn clients_beyond_max_connections_get_1040_without_a_backend_connection() {
    let dbs = EdxDatabases::private_one_server().await;
    let proxy = proxy_with(&dbs, Flags::default(), |config| config.listen.max_connections = 2).await;
    let opts = dbs.proxy_opts(&proxy, &support::app());
    let first = Conn::new(opts.clone()).await.unwrap();
    let mut second = Conn::new(opts.clone()).await.unwrap();
    let mut root = support::root_conn(&dbs.edxapp).await;
    let attempts = connection_attempts(&mut root).await;

    let (code, message) = server_error(Conn::new(opts.clone()).await);
    assert_eq!(code, 1040, "{message}");
    assert!(message.contains("Too many connections") && message.contains("listen.max_connections"), "{message}");
    assert_eq!(connection_attempts(&mut root).await, attempts, "no backend connection for a refused client");
    assert_eq!(proxy.shared().metrics.connections_refused("max_connections"), 1);
    assert_eq!(second.query_first::<i64, _>("SELECT 2").await.unwrap(), Some(2), "the others go on");

    drop(first);
    let mut third = logs_in_again(opts).await;
    assert_eq!(third.query_first::<i64, _>("SELECT 3").await.unwrap(), Some(3));
}

#[tokio::test]
async fn logins_beyond_max_handshakes_get_1040_without_a_backend_connection() {
    let dbs = EdxDatabases::private_one_server().await;
    let proxy = proxy_with(&dbs, Flags::default(), |config| config.listen.max_handshakes = 1).await;
    let opts = dbs.proxy_opts(&proxy, &support::app());
    let mut logged_in = Conn::new(opts.clone()).await.unwrap();
    let stalled = greeted(&proxy).await;
    let mut root = support::root_conn(&dbs.edxapp).await;
    let attempts = connection_attempts(&mut root).await;

    let (code, message) = server_error(Conn::new(opts.clone()).await);
    assert_eq!(code, 1040, "{message}");
    assert!(message.contains("listen.max_handshakes"), "{message}");
    assert_eq!(connection_attempts(&mut root).await, attempts, "no backend connection for a refused client");
    assert_eq!(proxy.shared().metrics.connections_refused("max_handshakes"), 1);
    assert_eq!(logged_in.query_first::<i64, _>("SELECT 1").await.unwrap(), Some(1), "logged-in clients go on");

    drop(stalled);
    let mut next = logs_in_again(opts).await;
    assert_eq!(next.query_first::<i64, _>("SELECT 2").await.unwrap(), Some(2));
}

#[tokio::test]
async fn a_packet_larger_than_max_packet_bytes_gets_1153_and_the_connection_closes() {
    let dbs = EdxDatabases::fresh().await;
    let proxy = proxy_with(&dbs, Flags::default(), |config| config.listen.max_packet_bytes = 1 << 20).await;
    let mut conn = Conn::new(dbs.proxy_opts(&proxy, &support::app())).await.unwrap();
    let within = format!("SELECT LENGTH('{}')", "x".repeat(512 << 10));
    assert_eq!(conn.query_first::<u64, _>(within).await.unwrap(), Some(512 << 10));

    let beyond = format!("SELECT LENGTH('{}')", "x".repeat(2 << 20));
    let (code, message) = server_error(conn.query_first::<u64, _>(beyond).await);
    assert_eq!(code, 1153, "{message}");
    assert!(message.contains("listen.max_packet_bytes"), "{message}");
    assert!(conn.query_first::<i64, _>("SELECT 1").await.is_err(), "the connection is closed");
}

#[tokio::test]
async fn a_history_statement_longer_than_max_parsed_statement_bytes_gets_1235_unparsed() {
    let dbs = EdxDatabases::fresh().await;
    dbs.create_edx_schema(true).await;
    let flags = Stage::ExtendedTableReadingBoth.flags();
    let proxy = proxy_with(&dbs, flags, |config| config.listen.max_parsed_statement_bytes = 64 << 10).await;
    let mut conn = Conn::new(dbs.proxy_opts(&proxy, &support::app())).await.unwrap();

    let long_state = "s".repeat(100 << 10);
    let (code, message) = server_error(conn.query_drop(edxapp_insert(7, &long_state)).await);
    assert_eq!(code, 1235, "{message}");
    assert!(message.contains("listen.max_parsed_statement_bytes"), "{message}");
    assert!(!message.contains(&long_state[..100]), "the statement is not quoted back");

    conn.query_drop(edxapp_insert(7, "{\"short\": 1}")).await.expect("a history INSERT within the limit is routed");
    let passthrough = format!("SELECT LENGTH('{long_state}')");
    let length: Option<u64> = conn.query_first(passthrough).await.expect("a long statement not naming the table");
    assert_eq!(length, Some(100 << 10));
}
