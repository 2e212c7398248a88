//! Session settings answered early (`[listen] answer_settings_early`, docs/protocol.md "Session settings answered
//! early"): a new session's setup statements get the very bytes the server answers, take effect before the
//! session's next statement, the history statements among them; a server that starts answering otherwise has
//! its answers learned again; and with the setting off none is answered early.

mod support;

use bytes::BytesMut;
use csmh_proxy::backend::{Credentials, LOGIN_CAPABILITIES};
use csmh_proxy::history::Stage;
use csmh_proxy::protocol::reply::Reply as ServerReply;
use csmh_proxy::protocol::response::Expect;
use csmh_proxy::protocol::{frame, packets};
use csmh_proxy::sandbox::ProxyToml;
use csmh_proxy::server::ProxyHandle;
use mysql_async::Conn;
use mysql_async::prelude::*;
use mysql_common::constants::CapabilityFlags;
use support::raw::{RawClient, Reply};
use support::twins::{Twins, capability_sets};
use support::{EdxDatabases, MariaDb};

/// What Django with mysqlclient sends on a new connection before its first query, and a few more of the forms
/// answered early.
const SETUP: &[&str] = &[
    "SET sql_mode='STRICT_TRANS_TABLES'",
    "SET NAMES utf8mb4",
    "SET autocommit=0",
    "SET autocommit=1",
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    "SET NAMES latin1 COLLATE latin1_german1_ci",
    "SET @@session.autocommit = OFF",
];

/// Reads back what the setup set, then writes under it (autocommit off: the row is rolled back at the end).
const AFTER_SETUP: &[&str] = &[
    "SELECT @@autocommit, @@sql_mode, @@character_set_client, @@collation_connection, @@tx_isolation, \
     @@in_transaction",
    "INSERT INTO setup_rows VALUES ('\u{e9}')",
    "SELECT @@in_transaction, HEX(value) FROM setup_rows",
];

/// The proxy's counts of setup statements answered early, and of those the server then answered otherwise.
fn answered_early(proxy: &ProxyHandle) -> [u64; 2] {
    proxy.shared().metrics.settings_answered_early()
}

/// Runs [`SETUP`] then [`AFTER_SETUP`] on one new session directly to the server behind the proxy and on one
/// through the proxy, with `capabilities`, asserting that every answer is the same bytes. (The server's answer
/// to `SET NAMES` lists the variables it changed in an order of the server process's own, so a server is
/// compared with itself.)
async fn compare_one_session(twins: &Twins, capabilities: CapabilityFlags) {
    let app = support::app();
    let credentials =
        Credentials { user: app.user, password: Some(app.password), database: Some(twins.database.clone()) };
    let behind_proxy = support::second_server().await.addr().to_string();
    let mut direct = RawClient::connect(&behind_proxy, &credentials, capabilities).await;
    let mut proxied = RawClient::connect(&twins.proxy.addr().to_string(), &credentials, capabilities).await;
    for sql in SETUP.iter().chain(AFTER_SETUP) {
        let expected = direct.query(sql).await;
        assert_eq!(proxied.query(sql).await, expected, "answer to {sql:?} with {capabilities:?}");
    }
}

#[tokio::test]
async fn setup_statements_answered_early_get_the_servers_bytes_and_take_effect() {
    let twins = Twins::new().await;
    twins.setup("CREATE TABLE setup_rows (value VARCHAR(4) CHARACTER SET utf8mb4)").await;
    for capabilities in capability_sets() {
        let before = answered_early(&twins.proxy);
        // The first session teaches the proxy the server's answers; the next ones get them from the proxy, but for
        // each session's first, which is always relayed.
        for _ in 0..3 {
            compare_one_session(&twins, capabilities).await;
        }
        let answered = answered_early(&twins.proxy)[0] - before[0];
        assert!(
            answered >= 2 * (SETUP.len() as u64 - 1),
            "the later sessions' setup statements are answered early with {capabilities:?} ({answered})"
        );
    }
    assert_eq!(answered_early(&twins.proxy)[1], 0, "no answer differed");
    let mut root = support::root_conn(&*support::second_server().await).await;
    let rows: u64 =
        root.query_first(format!("SELECT COUNT(*) FROM `{}`.setup_rows", twins.database)).await.unwrap().unwrap();
    assert_eq!(rows, 0, "autocommit was off for the INSERTs, so the sessions' ends rolled them back");
}

/// A proxy in front of `server` (both backends there, every flag off), `answer_settings_early` as `early` says,
/// and the app account's credentials for a database of its own there, named after `role`.
async fn proxy_in_front_of(server: &MariaDb, role: &str, early: bool) -> (ProxyHandle, Credentials) {
    let database = support::fresh_database(server, role).await;
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let mut config = ProxyToml::edx(listen, server.addr(), server.addr()).config().unwrap();
    config.listen.answer_settings_early = early;
    let app = support::app();
    let credentials = Credentials { user: app.user, password: Some(app.password), database: Some(database) };
    (support::start_proxy(config).await, credentials)
}

#[tokio::test]
async fn with_the_setting_off_no_statement_is_answered_early() {
    let (proxy, credentials) = proxy_in_front_of(&*support::second_server().await, "early_off", false).await;
    for _ in 0..2 {
        let mut client = RawClient::connect(&proxy.addr().to_string(), &credentials, LOGIN_CAPABILITIES).await;
        for sql in SETUP {
            client.query(sql).await;
        }
    }
    assert_eq!(answered_early(&proxy), [0, 0]);
}

#[tokio::test]
async fn a_session_has_at_most_sixteen_statements_answered_early_and_held() {
    let (proxy, credentials) = proxy_in_front_of(&*support::second_server().await, "early_bound", true).await;
    for turn in ["learned", "answered"] {
        let mut client = RawClient::connect(&proxy.addr().to_string(), &credentials, LOGIN_CAPABILITIES).await;
        for at in 0..40 {
            let sql = if at % 2 == 0 { "SET autocommit=0" } else { "SET autocommit=1" };
            client.query(sql).await;
        }
        let answer = client.query("SELECT @@autocommit").await;
        let rows = match ServerReply::parse(&answer, client.capabilities()) {
            Ok(ServerReply::Rows(rows)) => rows.values,
            other => panic!("{turn}: {other:?}"),
        };
        assert_eq!(rows, [[Some(b"1".to_vec())]], "{turn}: the last setting held took effect");
    }
    // The first session's first two statements taught the proxy both answers (autocommit on, autocommit off);
    // in each session, after its first (always relayed), 16 were answered early and held, and the rest relayed.
    assert_eq!(answered_early(&proxy), [32, 0]);
}

#[tokio::test]
async fn a_sessions_state_set_by_init_connect_is_never_answered_from_another_state() {
    // The server runs init_connect (for accounts without SUPER) after the login's OK: a session's state then
    // differs from what that OK says. Here it sets NO_BACKSLASH_ESCAPES, which client libraries escape strings by:
    // an answer learned in one state must not be given in another with its status flags (checked: before, it
    // was). The two orders of the same settings make a statement relayed first in one session come second in
    // the next. The answers' status flags are compared: MariaDB lists the variables `SET NAMES` changes in an
    // order that may differ from session to session.
    let server = support::private_server().await;
    let (proxy, credentials) = proxy_in_front_of(&server, "early_init_connect", true).await;
    let orders = [["SET NAMES utf8mb4", "SET autocommit=1"], ["SET autocommit=1", "SET NAMES utf8mb4"]];
    let session = |address: String, setup: [&'static str; 2]| {
        let credentials = credentials.clone();
        async move {
            let mut client = RawClient::connect(&address, &credentials, LOGIN_CAPABILITIES).await;
            let mut statuses = Vec::new();
            for sql in setup {
                let answer = client.query(sql).await;
                statuses.push(packets::ok_status(&answer[4..]).expect("an OK"));
            }
            statuses
        }
    };
    let mut root = support::root_conn(&server).await;
    for init_connect in ["", "SET sql_mode = 'NO_BACKSLASH_ESCAPES'", "", "SET sql_mode = 'NO_BACKSLASH_ESCAPES'"] {
        root.query_drop(format!("SET GLOBAL init_connect = \"{init_connect}\"")).await.unwrap();
        for setup in orders.into_iter().chain(orders) {
            let direct = session(server.addr().to_string(), setup).await;
            let proxied = session(proxy.addr().to_string(), setup).await;
            assert_eq!(proxied, direct, "{setup:?} with init_connect = {init_connect:?}");
        }
    }
    assert!(answered_early(&proxy)[0] >= 4, "the second settings were answered early");
    root.query_drop("SET GLOBAL init_connect = ''").await.unwrap();
}

#[tokio::test]
async fn a_setting_sent_out_of_sequence_gets_the_servers_refusal() {
    let (proxy, credentials) = proxy_in_front_of(&*support::second_server().await, "early_sequence", true).await;
    for _ in 0..2 {
        let mut client = RawClient::connect(&proxy.addr().to_string(), &credentials, LOGIN_CAPABILITIES).await;
        client.query("SET NAMES utf8mb4").await;
        client.query("SET autocommit=0").await;
    }
    let mut client = RawClient::connect(&proxy.addr().to_string(), &credentials, LOGIN_CAPABILITIES).await;
    client.query("SET NAMES utf8mb4").await;
    let mut packet = BytesMut::new();
    frame::write_packet(&mut packet, 5, b"\x03SET autocommit=0");
    client.send_bytes(&packet).await;
    let answer = match client.try_response(Expect::ResultSets).await {
        Reply::Complete(bytes) | Reply::Closed(bytes) | Reply::Malformed(bytes) => bytes,
        other => panic!("{other:?}"),
    };
    let code = answer.get(5..7).map(|code| u16::from_le_bytes([code[0], code[1]]));
    assert_eq!((answer.get(4), code), (Some(&0xff), Some(1156)), "the server's own refusal: {answer:?}");
    assert_eq!(answered_early(&proxy)[1], 0, "nothing the server answered differed from what a client was told");
}

#[tokio::test]
async fn a_server_that_answers_otherwise_has_its_answers_learned_again() {
    let server = support::private_server().await;
    let (proxy, credentials) = proxy_in_front_of(&server, "early_diverged", true).await;
    let session = || async {
        let mut client = RawClient::connect(&proxy.addr().to_string(), &credentials, LOGIN_CAPABILITIES).await;
        // A session's first setting is always relayed; the second may be answered early.
        client.query("SET autocommit=1").await;
        let answer = client.query("SET NAMES utf8mb4").await;
        client.query("SELECT 1").await;
        answer
    };
    let learned = session().await;
    assert_eq!(session().await, learned, "the second session's answer is the learned one");
    assert_eq!(answered_early(&proxy), [1, 0]);

    // New sessions no longer report the character set variables they change.
    let mut root = support::root_conn(&server).await;
    root.query_drop("SET GLOBAL session_track_system_variables = 'autocommit'").await.unwrap();
    let mut direct = RawClient::connect(&server.addr().to_string(), &credentials, LOGIN_CAPABILITIES).await;
    let now = direct.query("SET NAMES utf8mb4").await;
    assert_ne!(now, learned, "the server's answer changed");

    assert_eq!(session().await, learned, "a session still gets the answer learned before");
    assert_eq!(answered_early(&proxy), [2, 1], "and the server's own answer is found to differ");
    assert_eq!(session().await, now, "the next session learns the server's new answer");
    assert_eq!(session().await, now, "and the one after gets it early");
    assert_eq!(answered_early(&proxy), [3, 1]);
}

#[tokio::test]
async fn a_history_statement_after_settings_answered_early_runs_under_them_on_the_csmh_server() {
    let dbs = EdxDatabases::fresh_two_servers().await;
    dbs.create_edx_schema(false).await;
    let proxy = dbs.start_proxy(Stage::ExtendedTableOnlyReads.flags()).await;
    let insert = format!(
        "INSERT INTO {} (id, created, state, grade, max_grade, student_module_id) \
         VALUES (%ID%, NOW(), '{{\"answer\": \"caf\u{e9}\"}}', NULL, NULL, 1)",
        dbs.old_table()
    );
    let app = support::app();
    let credentials =
        Credentials { user: app.user, password: Some(app.password), database: Some(dbs.edxapp_db.clone()) };
    for id in [1, 2, 3] {
        let mut client = RawClient::connect(&proxy.addr().to_string(), &credentials, LOGIN_CAPABILITIES).await;
        client.query("SET NAMES latin1").await;
        client.query("SET autocommit=0").await;
        // In Latin-1: the statement's `é` is one byte, which only a session set to latin1 reads right.
        let mut latin1 = vec![0x03];
        latin1.extend(encode_latin1(&insert.replace("%ID%", &id.to_string())));
        let inserted = client.try_command(&latin1, Expect::ResultSets).await;
        assert!(matches!(inserted, Reply::Complete(ref bytes) if bytes[4] == 0), "the history INSERT: {inserted:?}");
        client.query("COMMIT").await;
    }
    assert!(answered_early(&proxy)[0] >= 2, "the later sessions' settings were answered early");
    let mut csmh = Conn::new(dbs.csmh_direct_opts(&support::root())).await.unwrap();
    let states: Vec<String> = csmh
        .query(format!("SELECT state FROM {} ORDER BY id", dbs.extended_table()))
        .await
        .expect("the extended table's rows");
    assert_eq!(states, vec!["{\"answer\": \"caf\u{e9}\"}"; 3], "written in the session's character set");
}

/// `text` in Latin-1 (every character of it is in Latin-1).
fn encode_latin1(text: &str) -> Vec<u8> {
    text.chars().map(|c| u8::try_from(u32::from(c)).expect("a Latin-1 character")).collect()
}
