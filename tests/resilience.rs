//! Bad input and failing parts: an unreachable backend, a backend connection killed under a client, malformed
//! and unsupported commands, a client vanishing mid-result, and shutdown while a statement runs. Each gets a
//! clear error or a clean close, and never disturbs other connections.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use csmh_proxy::backend::{Credentials, LOGIN_CAPABILITIES};
use csmh_proxy::history::{Flags, Stage};
use csmh_proxy::protocol::command::{COM_QUERY, COM_STMT_EXECUTE, COM_STMT_PREPARE};
use csmh_proxy::protocol::response::Expect;
use csmh_proxy::sandbox::ProxyToml;
use csmh_proxy::server::ProxyHandle;
use mysql_async::prelude::*;
use mysql_async::{Conn, Error};
use support::EdxDatabases;
use support::raw::RawClient;

async fn proxied() -> (EdxDatabases, ProxyHandle) {
    let dbs = EdxDatabases::fresh().await;
    let proxy = dbs.start_proxy(Flags::default()).await;
    (dbs, proxy)
}

fn server_error(result: Result<impl std::fmt::Debug, Error>) -> (u16, String) {
    match result {
        Err(Error::Server(e)) => (e.code, e.message),
        other => panic!("expected a server error, got {other:?}"),
    }
}

async fn select_one(conn: &mut Conn) -> Option<i64> {
    conn.query_first("SELECT 1").await.expect("SELECT 1")
}

#[tokio::test]
async fn an_unreachable_backend_is_a_clear_1429_error() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let config = ProxyToml::edx(any_port, closed_port, closed_port).config().unwrap();
    let proxy = support::start_proxy(config).await;
    let opts = support::app().opts(proxy.addr(), None);
    let (code, message) = server_error(Conn::new(opts.clone()).await);
    assert_eq!(code, 1429);
    assert!(message.contains(&closed_port.to_string()), "the message names the backend: {message}");
    let (again, _) = server_error(Conn::new(opts).await);
    assert_eq!(again, 1429, "the proxy keeps answering after a failed connection");
}

#[tokio::test]
async fn a_killed_backend_connection_ends_only_its_own_client() {
    let (dbs, proxy) = proxied().await;
    let opts = dbs.proxy_opts(&proxy, &support::app());
    let (mut victim, mut bystander) = (Conn::new(opts.clone()).await.unwrap(), Conn::new(opts.clone()).await.unwrap());
    let thread: Option<u64> = victim.query_first("SELECT CONNECTION_ID()").await.unwrap();
    let mut root = support::root_conn(&dbs.edxapp).await;
    root.query_drop(format!("KILL {}", thread.unwrap())).await.unwrap();
    let after_kill: Result<Option<i64>, _> = victim.query_first("SELECT 1").await;
    assert!(after_kill.is_err(), "the client whose backend connection died sees an error");
    assert_eq!(select_one(&mut bystander).await, Some(1));
    let mut newcomer = Conn::new(opts).await.unwrap();
    assert_eq!(select_one(&mut newcomer).await, Some(1));
}

async fn raw_pair() -> (EdxDatabases, ProxyHandle, RawClient) {
    let (dbs, proxy) = proxied().await;
    let app = support::app();
    let credentials =
        Credentials { user: app.user, password: Some(app.password), database: Some(dbs.edxapp_db.clone()) };
    let raw = RawClient::connect(&proxy.addr().to_string(), &credentials, LOGIN_CAPABILITIES).await;
    (dbs, proxy, raw)
}

fn err_code(response: &[u8]) -> Option<u16> {
    (response.get(4) == Some(&0xFF)).then(|| u16::from_le_bytes([response[5], response[6]]))
}

#[tokio::test]
async fn malformed_and_unsupported_commands_get_errors_and_the_connection_stays_usable() {
    let (_dbs, _proxy, mut raw) = raw_pair().await;
    let empty = raw.command(&[], Expect::OnePacket).await;
    assert_eq!(err_code(&empty), Some(1835), "an empty command packet");
    let binlog_dump = raw.command(&[0x12, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0], Expect::OnePacket).await;
    assert_eq!(err_code(&binlog_dump), Some(1047), "replication is not relayed");
    let com_multi = raw.command(&[0xFE, 1, 2, 3], Expect::OnePacket).await;
    assert_eq!(err_code(&com_multi), Some(1047), "MariaDB's COM_MULTI is not relayed");
    let ok = raw.query("SELECT 41 + 1").await;
    assert!(ok.windows(2).any(|w| w == b"42"), "the connection still answers queries");
}

#[tokio::test]
async fn a_garbage_handshake_is_dropped_without_harm() {
    let (dbs, proxy) = proxied().await;
    let mut garbage = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut greeting = [0u8; 256];
    let _ = garbage.read(&mut greeting).await.unwrap();
    garbage.write_all(&[5, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 0x00]).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), garbage.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the proxy closes a connection whose handshake is garbage");
    assert!(rest.get(4) == Some(&0xFF), "and says why with an ERR packet: {rest:?}");
    let mut fine = Conn::new(dbs.proxy_opts(&proxy, &support::app())).await.unwrap();
    assert_eq!(select_one(&mut fine).await, Some(1));
}

#[tokio::test]
async fn a_client_vanishing_mid_result_releases_its_backend_connection() {
    let (dbs, proxy, mut raw) = raw_pair().await;
    let mut root = support::root_conn(&dbs.edxapp).await;
    let sessions = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'edxapp001'";
    let before: Option<i64> = root.query_first(sessions).await.unwrap();
    raw.send(b"\x03SELECT REPEAT('z', 1000000) FROM seq_1_to_200").await;
    drop(raw);
    let mut remaining = before;
    for _ in 0..100 {
        remaining = root.query_first(sessions).await.unwrap();
        if remaining < before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(remaining < before, "the backend connection of a vanished client is closed");
    let mut fine = Conn::new(dbs.proxy_opts(&proxy, &support::app())).await.unwrap();
    assert_eq!(select_one(&mut fine).await, Some(1));
}

#[tokio::test]
async fn shutdown_lets_the_running_statement_finish() {
    let (dbs, proxy) = proxied().await;
    let opts = dbs.proxy_opts(&proxy, &support::app());
    let mut busy = Conn::new(opts.clone()).await.unwrap();
    let mut idle = Conn::new(opts.clone()).await.unwrap();
    let running = tokio::spawn(async move {
        let answer: Option<i64> = busy.query_first("SELECT SLEEP(1) + 42").await.unwrap();
        answer
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.shutdown().await.unwrap();
    assert_eq!(running.await.unwrap(), Some(42), "the statement in flight completed");
    assert!(idle.query_drop("SELECT 1").await.is_err(), "idle connections are closed");
    assert!(Conn::new(opts).await.is_err(), "no new connections after shutdown");
}

/// A COM_STMT_EXECUTE too short to name a statement, pipelined with another request: the statement id must be
/// read within the execute's own packet. Read from the bytes after it (the next packet's header: its length, then
/// sequence id 0), it named the client's prepared statement, whose shadow on the extended table then took the
/// proxy past the end of the packet and the connection was lost.
#[tokio::test]
async fn a_statement_id_is_never_read_from_the_next_packet() {
    let site = support::edx::Site::two_servers(Stage::ExtendedTableReadingBoth.flags()).await;
    let app = support::app();
    let credentials =
        Credentials { user: app.user, password: Some(app.password), database: Some(site.dbs.edxapp_db.clone()) };
    let mut raw = RawClient::connect(&site.proxy.addr().to_string(), &credentials, LOGIN_CAPABILITIES).await;
    let update = format!("UPDATE `{}` SET `state` = ? WHERE `id` = ?", support::edx::OLD);
    let prepared = raw.command(&[&[COM_STMT_PREPARE][..], update.as_bytes()].concat(), Expect::Prepare).await;
    assert_eq!(prepared[4], 0x00, "prepared, with a shadow on the csmh server: {prepared:?}");
    let id = u32::from_le_bytes(prepared[5..9].try_into().unwrap());
    assert!((1..256).contains(&id), "a small id, which a packet header can spell: {id}");
    // A COM_QUERY of `id` bytes (blank text): its header reads, as an id, the client's statement.
    let mut pipelined = vec![1, 0, 0, 0, COM_STMT_EXECUTE];
    pipelined.extend_from_slice(&id.to_le_bytes());
    pipelined.push(COM_QUERY);
    pipelined.extend(std::iter::repeat_n(b' ', id as usize - 1));
    raw.send_bytes(&pipelined).await;
    let execute = raw.response(Expect::OnePacket).await;
    assert!(err_code(&execute).is_some(), "the short execute gets the server's error: {execute:?}");
    let empty = raw.response(Expect::OnePacket).await;
    assert_eq!(err_code(&empty), Some(1065), "and the blank query its own: {empty:?}");
    let ok = raw.query("SELECT 41 + 1").await;
    assert!(ok.windows(2).any(|w| w == b"42"), "the connection still answers queries");
}
