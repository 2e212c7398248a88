//! The proxy itself on malformed client traffic, in front of real servers across two of them with both tables
//! read (the stage that routes the most). edxapp's statements are recorded through a relay as `mysql_async`
//! sends them — the login, history writes and reads as queries and as prepared statements — and the recorded
//! packets are mutated (bits, lengths, cut frames, repeated and pipelined packets) and sent before or after a
//! login. Whatever arrives, no task of the proxy may panic, every connection must be closed by the proxy once the
//! client half-closes it, and the proxy must go on serving new clients.
//!
//! Deeply nested history statements, which could overflow a worker thread's stack before the router parsed on a stack
//! of its own (aborting the whole proxy), get error 1235 and the session goes on.
//!
//! A bounded run in `cargo test`; docs/reliability.md ("Malformed input") gives the long one.

mod support;

use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use csmh_proxy::backend::{Credentials, LOGIN_CAPABILITIES};
use csmh_proxy::history::Stage;
use csmh_proxy::protocol::frame::PacketSpan;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use support::edx::{OLD, Site, edxapp_delete, edxapp_insert, edxapp_read, edxapp_subquery_read, server_error};
use support::mutate;
use support::raw::RawClient;
use support::record::Recorder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Cases of a bounded run.
const CASES: u32 = 400;

/// How long the proxy may take to close a connection the client half-closed.
const CLOSE_WITHIN: Duration = Duration::from_secs(10);

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts every panic in this test binary, the proxy's tasks included (the runtime would otherwise only end the
/// task that panicked, which a client sees as a closed connection).
fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            report(info);
        }));
    });
}

/// edxapp's session through `recorder`: history writes and reads, as queries and as prepared statements.
async fn edxapp_session(site: &Site, recorder: &Recorder) {
    let opts = site.dbs.proxy_opts(&site.proxy, &support::app());
    let opts = mysql_async::OptsBuilder::from_opts(opts).ip_or_hostname("127.0.0.1").tcp_port(recorder.addr().port());
    let mut conn = Conn::new(opts).await.expect("edxapp logs in through the recorder");
    for sql in
        [edxapp_insert(42, "{}"), edxapp_read("1, 2, 42"), edxapp_subquery_read("u", "c", "p"), edxapp_delete("42")]
    {
        conn.query_drop(sql).await.expect("edxapp's statement");
    }
    let read = format!("SELECT id, state FROM {OLD} WHERE student_module_id = ? ORDER BY id DESC LIMIT 3");
    let _: Vec<Row> = conn.exec(&read, (1,)).await.expect("a prepared history read");
    let write = format!("UPDATE {OLD} SET state = ? WHERE student_module_id = ?");
    conn.exec_drop(&write, ("{}", 3)).await.expect("a prepared history write");
    conn.disconnect().await.expect("edxapp logs out");
}

/// The recorded client packets (wire bytes): the handshake response first, then the requests.
fn client_packets(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    let mut rest = stream;
    while let Some(span) = PacketSpan::find(rest) {
        packets.push(rest[..span.wire_len].to_vec());
        rest = &rest[span.wire_len..];
    }
    packets
}

/// What a malformed client sends: before the login (in place of the handshake response), or after it.
#[derive(Debug, Clone)]
enum Attack {
    BeforeLogin(Vec<u8>),
    AfterLogin(Vec<u8>),
}

fn attacks(packets: &[Vec<u8>]) -> impl Strategy<Value = Attack> + use<> {
    let handshakes = vec![packets[..2].concat()];
    // Requests alone and runs of two or three pipelined, as recorded.
    let requests: Vec<Vec<u8>> = (1..packets.len())
        .flat_map(|start| (1..=3).map(move |n| (start, (start + n).min(packets.len()))))
        .map(|(start, end)| packets[start..end].concat())
        .collect();
    let pieces: Vec<Vec<u8>> = [&b"\x00\x00\x00\x00"[..], b"\xff\xff\xff\x00", b"\x01\x00\x00\x00\x19", b"\x19"]
        .iter()
        .map(|p| p.to_vec())
        .chain([format!("\x03SELECT * FROM {OLD} WHERE id IN (SELECT (").into_bytes()])
        .collect();
    prop_oneof![
        1 => mutate::inputs(handshakes, pieces.clone()).prop_map(Attack::BeforeLogin),
        4 => mutate::inputs(requests, pieces).prop_map(Attack::AfterLogin),
    ]
}

/// Sends `bytes`, half-closes, and checks that the proxy closes the connection in time.
async fn send_and_half_close(mut stream: TcpStream, bytes: &[u8]) -> Result<(), TestCaseError> {
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(CLOSE_WITHIN, stream.read_to_end(&mut answer)).await;
    prop_assert!(closed.is_ok(), "the proxy kept the connection open after {} bytes of answer", answer.len());
    Ok(())
}

async fn attack(site: &Site, credentials: &Credentials, attack: Attack) -> Result<(), TestCaseError> {
    match attack {
        Attack::BeforeLogin(bytes) => {
            let mut stream = TcpStream::connect(site.proxy.addr()).await.expect("connect to the proxy");
            let mut greeting = [0u8; 1024];
            let _ = stream.read(&mut greeting).await;
            send_and_half_close(stream, &bytes).await
        }
        Attack::AfterLogin(bytes) => {
            let mut raw = RawClient::connect(&site.proxy.addr().to_string(), credentials, LOGIN_CAPABILITIES).await;
            raw.send_last(&bytes).await;
            prop_assert!(raw.closes_within(CLOSE_WITHIN).await, "the proxy kept the connection open");
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_client_traffic_never_panics_the_proxy() {
    count_panics();
    let site = Site::two_servers(Stage::ExtendedTableReadingBoth.flags()).await;
    let recorder = Recorder::start(site.proxy.addr()).await;
    edxapp_session(&site, &recorder).await;
    let recorded = recorder.conversations().remove(0);
    let packets = client_packets(&recorded.client);
    assert!(packets.len() > 8, "the session was recorded: {} packets", packets.len());
    let app = support::app();
    let credentials =
        Credentials { user: app.user, password: Some(app.password), database: Some(site.dbs.edxapp_db.clone()) };
    let runtime = tokio::runtime::Handle::current();
    let strategy = attacks(&packets);
    tokio::task::block_in_place(|| {
        mutate::run(CASES, strategy, |case| runtime.block_on(attack(&site, &credentials, case)));
    });
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a task of the proxy panicked (see the output above)");
    let mut after = site.edxapp().await;
    let rows: Vec<Row> = after.query(edxapp_read("1, 2, 3")).await.expect("the proxy still serves history reads");
    assert!(!rows.is_empty(), "the sample history is read");
}

/// A history read whose condition nests `depth` levels of `open` and `close`.
fn nested(open: &str, close: &str, depth: usize) -> String {
    format!("SELECT id FROM {OLD} WHERE id = {}1{}", open.repeat(depth), close.repeat(depth))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_statements_get_an_error_and_the_session_goes_on() {
    let site = Site::two_servers(Stage::ExtendedTableReadingBoth.flags()).await;
    let mut conn = site.edxapp().await;
    for (open, close) in mutate::NESTINGS {
        // Depths up to the parser's recursion limit, where the parse reaches deepest, and far past it.
        for depth in [1, 4, 8, 12, 16, 20, 24, 32, 48, 10_000] {
            let sql = nested(open, close, depth);
            // Shallow ones are routed (and some refused by the server for its own reasons); too deep, 1235.
            match conn.query_drop(&sql).await {
                Ok(()) => {}
                Err(mysql_async::Error::Server(e)) if depth < 10_000 || e.code == 1235 => {}
                Err(other) => panic!("{open} nested {depth} deep: {other}"),
            }
        }
        let (code, _) = server_error(conn.prep(nested(open, close, 10_000)).await);
        assert_eq!(code, 1235, "prepared");
    }
    let one: Option<i64> = conn.query_first("SELECT 1").await.expect("the session goes on");
    assert_eq!(one, Some(1));
}
