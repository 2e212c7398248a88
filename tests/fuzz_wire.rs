//! The protocol code on malformed bytes, seeded from real sessions: clients log in through a recording relay to
//! the proxy in front of a real MariaDB server, under every capability set the scanner follows, and run text
//! statements, multi-results, errors, prepared statements with cursors and the utility commands. The recorded
//! greetings, handshake responses, requests and responses are then mutated (bits, interesting bytes, frame
//! lengths, insertions, cuts, repeats, pipelining) or replaced by arbitrary bytes, and fed to the frame codec, the
//! response scanner (every response shape, every capability combination, bytes arriving in pieces), the
//! handshake patching, the command parsing and the readers of whole answers. None may panic, a packet span never
//! reaches past its buffer, and a scan never consumes more than it was given.
//!
//! A bounded run in `cargo test`; docs/reliability.md ("Malformed input") gives the long one.

mod support;

use std::net::{Ipv4Addr, SocketAddr};

use bytes::Bytes;
use csmh_proxy::backend::{Credentials, LOGIN_CAPABILITIES};
use csmh_proxy::protocol::capabilities::Negotiated;
use csmh_proxy::protocol::command::{self, COM_STMT_CLOSE, COM_STMT_EXECUTE, Command};
use csmh_proxy::protocol::errors::MysqlError;
use csmh_proxy::protocol::frame::{self, PacketSpan};
use csmh_proxy::protocol::packets::{self, AuthAnswer, OkFields, PrepareOk, ResultHead, RowPacket};
use csmh_proxy::protocol::reply::Reply;
use csmh_proxy::protocol::response::{Expect, Progress, ResponseScanner};
use csmh_proxy::sandbox::ProxyToml;
use mysql_async::prelude::Queryable;
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use mysql_common::io::ParseBuf;
use mysql_common::packets::AuthSwitchRequest;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use support::mutate;
use support::raw::RawClient;
use support::record::{Conversation, Recorder};
use support::twins::capability_sets;
use tokio::sync::OnceCell;

/// Cases of a bounded run, per target.
const CASES: u32 = 1_000;

/// Every response shape the scanner knows.
const EXPECTS: [Expect; 7] = [
    Expect::ResultSets,
    Expect::Cursor,
    Expect::Prepare,
    Expect::Rows,
    Expect::FieldList,
    Expect::OnePacket,
    Expect::Auth,
];

/// Statements whose responses cover what servers send: result sets of every column type, NULLs, warnings, errors,
/// several results, OKs with session-state changes.
const SCRIPT: &[&str] = &[
    "CREATE TABLE kinds (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, b BLOB, d DECIMAL(10,3), \
     dt DATETIME(6), j JSON, s VARCHAR(20) CHARACTER SET utf8mb4, t TINYINT, f DOUBLE, e ENUM('x','y'), dd DATE, \
     tm TIME(3), bit BIT(3))",
    "INSERT INTO kinds (b, d, dt, j, s, t, f, e, dd, tm, bit) VALUES (X'00010203', 1234567.891, \
     '2024-05-01 12:00:00.000001', '{\"k\": [1, 2]}', 'ünïcødé 😀', -128, 1.5e300, 'y', '2024-02-29', \
     '838:59:59.999', b'101'), (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    "SELECT * FROM kinds ORDER BY id",
    "SELECT CAST('abc' AS UNSIGNED)",
    "SHOW WARNINGS",
    "SELEC 1",
    "SELECT 1 AS a; SELECT 2 AS b; INSERT INTO kinds (t) VALUES (9); SELECT * FROM kinds WHERE t = 9",
    "SET SESSION sql_mode = 'TRADITIONAL'",
    "BEGIN",
    "UPDATE kinds SET t = 5 WHERE id = 1",
    "COMMIT",
    "SELECT id, t FROM kinds WHERE 1 = 0",
];

/// Commands after the script: utility commands, prepared statements in the binary protocol, a cursor.
fn commands() -> Vec<(Vec<u8>, Option<Expect>)> {
    let mut execute = vec![COM_STMT_EXECUTE, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 8, 0];
    execute.extend_from_slice(&0i64.to_le_bytes());
    vec![
        (vec![command::COM_PING], Some(Expect::OnePacket)),
        (b"\x04kinds\0".to_vec(), Some(Expect::FieldList)),
        (vec![command::COM_SET_OPTION, 0, 0], Some(Expect::OnePacket)),
        (vec![command::COM_STATISTICS], Some(Expect::OnePacket)),
        (b"\x16SELECT id, b, d, dt, s, f, tm FROM kinds WHERE id >= ?".to_vec(), Some(Expect::Prepare)),
        (execute, Some(Expect::ResultSets)),
        (b"\x16SELECT id, d FROM kinds ORDER BY id".to_vec(), Some(Expect::Prepare)),
        (vec![COM_STMT_EXECUTE, 2, 0, 0, 0, 1, 1, 0, 0, 0], Some(Expect::Cursor)),
        (vec![command::COM_STMT_FETCH, 2, 0, 0, 0, 1, 0, 0, 0], Some(Expect::Rows)),
        (vec![command::COM_STMT_FETCH, 2, 0, 0, 0, 10, 0, 0, 0], Some(Expect::Rows)),
        (vec![COM_STMT_CLOSE, 2, 0, 0, 0], None),
        (vec![command::COM_RESET_CONNECTION], Some(Expect::OnePacket)),
    ]
}

/// The capability sets sessions are recorded under: those the byte-faithfulness tests compare, and MariaDB's
/// extended metadata, metadata caching and progress reports on top.
fn recorded_capabilities() -> Vec<(CapabilityFlags, MariadbCapabilities)> {
    let mariadb = MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA
        | MariadbCapabilities::MARIADB_CLIENT_CACHE_METADATA
        | MariadbCapabilities::MARIADB_CLIENT_PROGRESS;
    let mut sets: Vec<_> = capability_sets().into_iter().map(|caps| (caps, MariadbCapabilities::empty())).collect();
    sets.push((capability_sets()[0], mariadb));
    sets.push((capability_sets()[1], mariadb));
    sets
}

static RECORDED: OnceCell<Vec<Conversation>> = OnceCell::const_new();

/// Sessions through the proxy in front of a real server, recorded byte for byte.
async fn recorded() -> &'static [Conversation] {
    RECORDED.get_or_init(record_sessions).await
}

async fn record_sessions() -> Vec<Conversation> {
    let server = support::server().await;
    let database = support::fresh_database(&server, "fuzz").await;
    let any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let proxy = support::start_proxy(ProxyToml::edx(any_port, server.addr(), server.addr()).config().unwrap()).await;
    let recorder = Recorder::start(proxy.addr()).await;
    let app = support::app();
    let credentials =
        Credentials { user: app.user.clone(), password: Some(app.password.clone()), database: Some(database.clone()) };
    for (n, (capabilities, mariadb)) in recorded_capabilities().into_iter().enumerate() {
        let address = recorder.addr().to_string();
        let mut client = RawClient::connect_mariadb(&address, &credentials, capabilities, mariadb).await;
        client.query(&format!("DROP TABLE IF EXISTS kinds{n}")).await;
        for sql in SCRIPT {
            client.query(&sql.replace("kinds", &format!("kinds{n}"))).await;
        }
        for (payload, expect) in commands() {
            let payload = replace(&payload, b"kinds", format!("kinds{n}").as_bytes());
            match expect {
                Some(expect) => drop(client.command(&payload, expect).await),
                None => client.send(&payload).await,
            }
        }
    }
    let mut conn = support::connect(recorder.addr(), &app, Some(&database)).await;
    let rows: Vec<(u64, Option<String>)> =
        conn.exec("SELECT id, s FROM kinds0 WHERE id > ? AND s <> ?", (0, "x")).await.expect("a prepared read");
    assert!(!rows.is_empty(), "the recorded session reads rows");
    drop(conn);
    recorder.conversations()
}

fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    match bytes.windows(from.len()).position(|w| w == from) {
        Some(at) => [&bytes[..at], to, &bytes[at + from.len()..]].concat(),
        None => bytes.to_vec(),
    }
}

/// The packets of a stream, as (sequence id, wire bytes).
fn packets(stream: &[u8]) -> Vec<(u8, &[u8])> {
    let mut found = Vec::new();
    let mut rest = stream;
    while let Some(span) = PacketSpan::find(rest) {
        found.push((span.first_seq, &rest[..span.wire_len]));
        rest = &rest[span.wire_len..];
    }
    found
}

/// A packet's payload.
fn payload(wire: &[u8]) -> Vec<u8> {
    wire.get(frame::HEADER_LEN..).unwrap_or_default().to_vec()
}

/// The server's greetings (payloads).
fn greetings(sessions: &[Conversation]) -> Vec<Vec<u8>> {
    sessions.iter().filter_map(|s| packets(&s.server).first().map(|(_, wire)| payload(wire))).collect()
}

/// The clients' handshake responses (payloads).
fn handshake_responses(sessions: &[Conversation]) -> Vec<Vec<u8>> {
    sessions.iter().filter_map(|s| packets(&s.client).first().map(|(_, wire)| payload(wire))).collect()
}

/// The clients' requests after the login (payloads).
fn requests(sessions: &[Conversation]) -> Vec<Vec<u8>> {
    sessions.iter().flat_map(|s| packets(&s.client).into_iter().skip(2).map(|(_, wire)| payload(wire))).collect()
}

/// The servers' responses (wire bytes), each from its first packet (sequence id 1) to the next response.
fn responses(sessions: &[Conversation]) -> Vec<Vec<u8>> {
    let mut found = Vec::new();
    for session in sessions {
        let mut current: Vec<u8> = Vec::new();
        for (seq, wire) in packets(&session.server).into_iter().skip(1) {
            if seq == 1 && !current.is_empty() {
                found.push(std::mem::take(&mut current));
            }
            current.extend_from_slice(wire);
        }
        found.push(current);
    }
    found
}

/// Pieces mutations insert into packets: frame headers, the first bytes of each kind of packet, and lengths.
fn wire_pieces() -> Vec<Vec<u8>> {
    let pieces: [&[u8]; 12] = [
        b"\x00\x00\x00\x00",
        b"\x01\x00\x00\x01",
        b"\xff\xff\xff\x00",
        b"\x00",
        b"\xfe",
        b"\xff",
        b"\xfb",
        b"\xff\xff\xff",
        b"\xfc\xff\xff",
        b"\xfd\xff\xff\xff",
        b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x05\x00\x00\x01\xfe\x00\x00\x0a\x00",
    ];
    pieces.iter().map(|p| p.to_vec()).collect()
}

/// Every combination of the capabilities that change a response's layout.
fn layouts() -> Vec<Negotiated> {
    let deprecate = (CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_DEPRECATE_EOF).bits();
    let classic = CapabilityFlags::CLIENT_PROTOCOL_41.bits();
    let tracked = (LOGIN_CAPABILITIES | CapabilityFlags::CLIENT_SESSION_TRACK).bits();
    let mariadb = [
        MariadbCapabilities::empty(),
        MariadbCapabilities::MARIADB_CLIENT_CACHE_METADATA,
        MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA | MariadbCapabilities::MARIADB_CLIENT_CACHE_METADATA,
    ];
    [deprecate, classic, tracked, tracked & !CapabilityFlags::CLIENT_DEPRECATE_EOF.bits()]
        .into_iter()
        .flat_map(|caps| mariadb.map(|m| Negotiated::new(caps, caps).with_mariadb(m.bits(), m.bits())))
        .collect()
}

#[tokio::test]
async fn the_frame_codec_never_reaches_past_its_buffer() {
    let sessions = recorded().await;
    let streams: Vec<Vec<u8>> = sessions.iter().flat_map(|s| [s.client.clone(), s.server.clone()]).collect();
    mutate::run(CASES, mutate::inputs(streams, wire_pieces()), |buf| {
        let mut rest = &buf[..];
        while let Some(span) = PacketSpan::find(rest) {
            prop_assert!(span.wire_len <= rest.len() && span.payload_len <= span.wire_len);
            prop_assert_eq!(span.payload_in(rest).len(), span.payload_len);
            prop_assert!(span.first_frame(rest).len() <= span.payload_len);
            let wire = Bytes::copy_from_slice(&rest[..span.wire_len]);
            prop_assert_eq!(frame::payload(wire, &span).len(), span.payload_len);
            rest = &rest[span.wire_len..];
        }
        Ok(())
    });
}

/// Scans `buf` as it would arrive in pieces cut at `cuts`, starting a new scan after each response ends as the
/// relay does for pipelined requests.
fn scan_in_pieces(
    buf: &[u8],
    cuts: &[prop::sample::Index],
    expect: Expect,
    caps: Negotiated,
) -> Result<(), TestCaseError> {
    let mut ends: Vec<usize> = cuts.iter().map(|cut| cut.index(buf.len() + 1)).chain([buf.len()]).collect();
    ends.sort_unstable();
    let (mut scanner, mut consumed) = (ResponseScanner::new(expect, caps), 0);
    for end in ends {
        loop {
            let arrived = &buf[consumed..end];
            let Ok((n, progress)) = scanner.scan(arrived) else { return Ok(()) };
            prop_assert!(n <= arrived.len(), "scanned {n} of {} bytes", arrived.len());
            consumed += n;
            match progress {
                Progress::NeedMore => break,
                Progress::Done(_) | Progress::ClientTurn(_) => scanner = ResponseScanner::new(expect, caps),
            }
            if n == 0 {
                break;
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn the_response_scanner_never_consumes_more_than_it_was_given() {
    let responses = responses(recorded().await);
    let layouts = layouts();
    let cuts = prop::collection::vec(any::<prop::sample::Index>(), 0..4);
    mutate::run(CASES, (mutate::inputs(responses, wire_pieces()), cuts), |(buf, cuts)| {
        for expect in EXPECTS {
            for &caps in &layouts {
                scan_in_pieces(&buf, &cuts, expect, caps)?;
            }
        }
        Ok(())
    });
}

#[tokio::test]
async fn handshake_patching_never_panics() {
    let sessions = recorded().await;
    let seeds = [greetings(sessions), handshake_responses(sessions)].concat();
    mutate::run(CASES, mutate::inputs(seeds, wire_pieces()), |payload| {
        let (mut greeting, mut response) = (payload.clone(), payload.clone());
        if packets::patch_greeting(&mut greeting, true).is_ok() {
            prop_assert_eq!(greeting.len(), payload.len());
        }
        if packets::patch_client_response(&mut response, true).is_ok() {
            prop_assert_eq!(response.len(), payload.len());
        }
        // What the proxy's own logins read of a greeting, and of an authentication switch.
        if let Ok(greeting) = packets::parse_greeting(&payload) {
            let _ = (greeting.nonce(), greeting.server_version_parsed(), greeting.auth_plugin());
        }
        if let Ok(switch) = ParseBuf(&payload).parse::<AuthSwitchRequest<'_>>(()) {
            let _ = switch.auth_plugin().gen_data(Some("password"), switch.plugin_data());
        }
        Ok(())
    });
}

#[tokio::test]
async fn commands_are_read_within_their_packet() {
    let requests = requests(recorded().await);
    mutate::run(CASES, mutate::inputs(requests, wire_pieces()), |payload| {
        let Some(command) = Command::of(&payload) else {
            prop_assert!(payload.is_empty());
            return Ok(());
        };
        let _ = (command.response(), command.refusal(), command.names_statement(), command::body(&payload));
        let id = command::statement_id(&payload);
        prop_assert_eq!(id.is_some(), payload.len() >= 5);
        let mut renamed = payload.clone();
        prop_assert_eq!(command::set_statement_id(&mut renamed, 7), id.is_some());
        Ok(())
    });
}

/// Every reader of single packets, on each packet of `buf`.
fn read_packets(buf: &[u8], caps: Negotiated) {
    for (_, wire) in packets(buf) {
        let mut packet = payload(wire);
        let _ = MysqlError::parse(&packet);
        let _ = (PrepareOk::parse(&packet), AuthAnswer::classify(&packet), RowPacket::classify(&packet, caps));
        let _ = (OkFields::parse(&packet, caps.flags()), OkFields::parse_end_of_rows(&packet, caps.flags()));
        let _ = (ResultHead::parse(&packet, caps.cache_metadata()), packets::lenenc_int(&packet));
        let _ = (packets::ok_status(&packet), packets::eof_status(&packet));
        let _ = packets::standard_column_definition(&packet, caps.extended_metadata());
        let _ = PrepareOk::set_statement_id(&mut packet, 7);
    }
}

#[tokio::test]
async fn whole_answers_are_read_without_panicking() {
    let responses = responses(recorded().await);
    let layouts = layouts();
    mutate::run(CASES, mutate::inputs(responses, wire_pieces()), |buf| {
        for &caps in &layouts {
            let _ = (Reply::parse(&buf, caps), Reply::parse_prepared(&buf, caps));
            read_packets(&buf, caps);
        }
        Ok(())
    });
}
