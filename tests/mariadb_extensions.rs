//! MariaDB's protocol extensions that the proxy relays: extended type metadata in column definitions, metadata
//! caching (results of a prepared statement executed again without their column definitions), bulk execution of
//! a prepared statement (COM_STMT_BULK_EXECUTE), and progress reports during long statements — passed through
//! byte for byte, and on the routed history table as far as `docs/protocol.md` says.

mod support;

use csmh_proxy::backend::{Credentials, LOGIN_CAPABILITIES};
use csmh_proxy::history::Stage;
use csmh_proxy::protocol::command::{COM_STMT_BULK_EXECUTE, COM_STMT_PREPARE};
use csmh_proxy::protocol::frame;
use csmh_proxy::protocol::response::Expect;
use mysql_async::prelude::Queryable;
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use support::edx::*;
use support::raw::RawClient;
use support::twins::Twins;

const EXTENDED_METADATA: MariadbCapabilities = MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA;
const BULK: MariadbCapabilities = MariadbCapabilities::MARIADB_CLIENT_STMT_BULK_OPERATIONS;
const PROGRESS: MariadbCapabilities = MariadbCapabilities::MARIADB_CLIENT_PROGRESS;
const CACHE_METADATA: MariadbCapabilities = MariadbCapabilities::MARIADB_CLIENT_CACHE_METADATA;

/// COM_STMT_BULK_EXECUTE's flag saying that parameter types follow.
const SEND_TYPES_TO_SERVER: u16 = 128;
/// MYSQL_TYPE_VAR_STRING: every parameter is sent as text, the server converts.
const VAR_STRING: u8 = 0xfd;

/// Logs in to `address` as the application account with `mariadb`'s extensions.
async fn client(address: &str, database: &str, mariadb: MariadbCapabilities) -> RawClient {
    let app = support::app();
    let credentials = Credentials { user: app.user, password: Some(app.password), database: Some(database.into()) };
    let capabilities = LOGIN_CAPABILITIES | CapabilityFlags::CLIENT_FOUND_ROWS;
    RawClient::connect_mariadb(address, &credentials, capabilities, mariadb).await
}

/// The packets' payloads of a raw response.
fn payloads(response: &[u8]) -> Vec<&[u8]> {
    let mut packets = Vec::new();
    let mut rest = response;
    while let Some(span) = frame::PacketSpan::find(rest) {
        packets.push(&rest[frame::HEADER_LEN..span.wire_len]);
        rest = &rest[span.wire_len..];
    }
    packets
}

/// Prepares `sql` and returns the statement id from the raw answer.
async fn prepare(client: &mut RawClient, sql: &str) -> u32 {
    prepared_id(&client.command(&[&[COM_STMT_PREPARE][..], sql.as_bytes()].concat(), Expect::Prepare).await)
}

/// The statement id in the raw answer to a COM_STMT_PREPARE.
fn prepared_id(response: &[u8]) -> u32 {
    let ok = payloads(response)[0];
    assert_eq!(ok[0], 0x00, "prepared: {:?}", String::from_utf8_lossy(ok));
    u32::from_le_bytes(ok[1..5].try_into().unwrap())
}

/// A COM_STMT_BULK_EXECUTE of statement `id` for `rows`, every parameter sent as text (`None` for NULL).
fn bulk_execute(id: u32, rows: &[Vec<Option<&str>>]) -> Vec<u8> {
    let mut packet = vec![COM_STMT_BULK_EXECUTE];
    packet.extend_from_slice(&id.to_le_bytes());
    packet.extend_from_slice(&SEND_TYPES_TO_SERVER.to_le_bytes());
    for _ in &rows[0] {
        packet.extend_from_slice(&[VAR_STRING, 0]);
    }
    for row in rows {
        for value in row {
            match value {
                None => packet.push(1),
                Some(text) => {
                    packet.push(0);
                    packet.push(u8::try_from(text.len()).unwrap());
                    packet.extend_from_slice(text.as_bytes());
                }
            }
        }
    }
    packet
}

/// A COM_STMT_EXECUTE of statement `id` with one BIGINT parameter, asking for no cursor.
fn execute_with(id: u32, parameter: i64) -> Vec<u8> {
    let mut packet = vec![0x17];
    packet.extend_from_slice(&id.to_le_bytes());
    packet.extend_from_slice(&[0, 1, 0, 0, 0, 0, 1, 8, 0]);
    packet.extend_from_slice(&parameter.to_le_bytes());
    packet
}

/// A prepare's raw answer with the statement id zeroed (each server numbers its own statements).
fn without_id(mut response: Vec<u8>) -> Vec<u8> {
    response[frame::HEADER_LEN + 1..frame::HEADER_LEN + 5].fill(0);
    response
}

/// The affected rows of an OK packet's payload.
fn affected_rows(ok: &[u8]) -> u8 {
    assert_eq!(ok[0], 0x00, "an OK packet: {:?}", String::from_utf8_lossy(ok));
    ok[1]
}

#[tokio::test]
async fn extended_metadata_is_relayed_byte_for_byte() {
    let twins = Twins::new().await;
    twins.setup("CREATE TABLE j (id INT PRIMARY KEY, js JSON, u UUID, i INET6)").await;
    twins.setup("INSERT INTO j VALUES (1, '{\"a\": 1}', '123e4567-e89b-12d3-a456-426655440000', '::1')").await;
    let mut direct = client(&twins.direct.to_string(), &twins.database, EXTENDED_METADATA).await;
    let mut proxied = client(&twins.proxy.addr().to_string(), &twins.database, EXTENDED_METADATA).await;
    assert!(proxied.capabilities().extended_metadata(), "the proxy lets the client have extended metadata");
    let expected = direct.query("SELECT * FROM j").await;
    assert!(expected.windows(4).any(|w| w == b"json"), "the server sent the JSON format in the metadata");
    assert_eq!(proxied.query("SELECT * FROM j").await, expected);
    let prepare = b"\x16SELECT js, u FROM j WHERE id = 1";
    let expected = without_id(direct.command(prepare, Expect::Prepare).await);
    assert_eq!(without_id(proxied.command(prepare, Expect::Prepare).await), expected);
}

#[tokio::test]
async fn bulk_execution_is_relayed_byte_for_byte() {
    let twins = Twins::new().await;
    twins.setup("CREATE TABLE b (a INT PRIMARY KEY, s VARCHAR(10))").await;
    let rows = [vec![Some("1"), Some("one")], vec![Some("2"), None], vec![Some("3"), Some("three")]];
    for mariadb in [BULK, MariadbCapabilities::empty()] {
        let mut direct = client(&twins.direct.to_string(), &twins.database, mariadb).await;
        let mut proxied = client(&twins.proxy.addr().to_string(), &twins.database, mariadb).await;
        let sql = "INSERT INTO b VALUES (?, ?)";
        let (direct_id, proxied_id) = (prepare(&mut direct, sql).await, prepare(&mut proxied, sql).await);
        let expected = direct.command(&bulk_execute(direct_id, &rows), Expect::ResultSets).await;
        let got = proxied.command(&bulk_execute(proxied_id, &rows), Expect::ResultSets).await;
        assert_eq!(got, expected, "with {mariadb:?}");
        if mariadb == BULK {
            assert_eq!(affected_rows(payloads(&expected)[0]), 3, "one batch, three rows");
        }
        // The same rows again: a duplicate key, the server's own error.
        let expected = direct.command(&bulk_execute(direct_id, &rows), Expect::ResultSets).await;
        let got = proxied.command(&bulk_execute(proxied_id, &rows), Expect::ResultSets).await;
        assert_eq!(got, expected, "the second batch, with {mariadb:?}");
        let read = "SELECT * FROM b ORDER BY a";
        assert_eq!(proxied.query(read).await, direct.query(read).await);
    }
}

#[tokio::test]
async fn bulk_inserts_into_the_history_table_reach_the_extended_server() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut raw = client(&site.proxy.addr().to_string(), &site.dbs.edxapp_db, BULK).await;
    let insert = format!(
        "INSERT INTO `{OLD}` (`version`, `created`, `state`, `grade`, `max_grade`, `student_module_id`) \
         VALUES (?, ?, ?, ?, ?, ?)"
    );
    let id = prepare(&mut raw, &insert).await;
    let row = |state| vec![None, Some("2024-06-01 12:00:00"), Some(state), Some("1"), Some("2"), Some("5")];
    let response = raw.command(&bulk_execute(id, &[row("a"), row("b"), row("c")]), Expect::ResultSets).await;
    assert_eq!(affected_rows(payloads(&response)[0]), 3);
    assert_eq!(site.extended_ids().await.len(), 3, "the batch was written to the extended table");
    assert_eq!(site.old_ids().await.len(), 18, "and not to the old one");
}

#[tokio::test]
async fn bulk_writes_to_both_history_tables_are_refused() {
    let site = Site::two_servers(Stage::ExtendedTableReadingBoth.flags()).await;
    let mut raw = client(&site.proxy.addr().to_string(), &site.dbs.edxapp_db, BULK).await;
    let id = prepare(&mut raw, &format!("UPDATE `{OLD}` SET `state` = ? WHERE `id` = ?")).await;
    let response = raw.command(&bulk_execute(id, &[vec![Some("x"), Some("1")]]), Expect::ResultSets).await;
    let err = payloads(&response)[0];
    assert_eq!((err[0], u16::from_le_bytes([err[1], err[2]])), (0xFF, 1235), "{:?}", String::from_utf8_lossy(err));
    let states: Vec<String> =
        site.root().await.query(format!("SELECT state FROM {} WHERE id = 1", site.old())).await.unwrap();
    assert_ne!(states, ["x"], "nothing was written");
    assert_eq!(payloads(&raw.query("SELECT 1").await).len(), 4, "the session goes on");
}

#[tokio::test]
async fn progress_reports_reach_a_client_that_asked_for_them() {
    let twins = Twins::new().await;
    twins.setup("CREATE TABLE big (id INT PRIMARY KEY, s VARCHAR(100)) ENGINE=InnoDB").await;
    let mut proxied = client(&twins.proxy.addr().to_string(), &twins.database, PROGRESS).await;
    proxied.query("INSERT INTO big SELECT seq, REPEAT('x', 100) FROM seq_1_to_400000").await;
    proxied.query("SET SESSION progress_report_time = 1").await;
    let response = proxied.query("ALTER TABLE big FORCE, ALGORITHM = COPY").await;
    let packets = payloads(&response);
    let reports = packets.iter().filter(|p| p.starts_with(&[0xFF, 0xFF, 0xFF])).count();
    assert!(reports > 0, "the server reported progress through the proxy");
    assert_eq!(packets.last().unwrap()[0], 0x00, "and the statement ended with its OK");
    assert_eq!(packets.len(), reports + 1);
    assert_eq!(payloads(&proxied.query("SELECT 1").await).len(), 4, "the session goes on");
}

#[tokio::test]
async fn the_cli_reads_both_history_tables_across_two_servers() {
    let site = Site::two_servers(Stage::ExtendedTableReadingBoth.flags()).await;
    site.edxapp().await.query_drop(edxapp_insert(1, "{\"new\": 1}")).await.unwrap();
    let read = format!("SELECT `id`, `state` FROM `{OLD}` WHERE `student_module_id` = 1 ORDER BY `id`");
    let app = support::app();
    let output = support::mariadb_cli_run(site.proxy.addr(), &app, Some(&site.dbs.edxapp_db), &read).await;
    let printed = support::cli_stdout(&output);
    let mut expected: Vec<(u64, String)> = site
        .root()
        .await
        .query(format!("SELECT id, state FROM {} WHERE student_module_id = 1", site.old()))
        .await
        .unwrap();
    let extended: Vec<(u64, String)> = site
        .csmh_root()
        .await
        .query(format!("SELECT id, state FROM {} WHERE student_module_id = 1", site.extended()))
        .await
        .unwrap();
    assert_eq!(extended.len(), 1);
    expected.extend(extended);
    expected.sort();
    let lines: Vec<String> = expected.iter().map(|(id, state)| format!("{id}\t{state}")).collect();
    assert_eq!(printed, format!("id\tstate\n{}\n", lines.join("\n")));
}

#[tokio::test]
async fn results_without_cached_metadata_are_relayed_byte_for_byte() {
    let twins = Twins::new().await;
    twins.setup("CREATE TABLE c (id INT PRIMARY KEY, s VARCHAR(10))").await;
    twins.setup("INSERT INTO c VALUES (1, 'one'), (2, 'two'), (3, 'three')").await;
    let app = support::app();
    let credentials =
        Credentials { user: app.user, password: Some(app.password), database: Some(twins.database.clone()) };
    let (direct_address, proxy_address) = (twins.direct.to_string(), twins.proxy.addr().to_string());
    for capabilities in support::twins::capability_sets() {
        let mut direct = RawClient::connect_mariadb(&direct_address, &credentials, capabilities, CACHE_METADATA).await;
        let mut proxied = RawClient::connect_mariadb(&proxy_address, &credentials, capabilities, CACHE_METADATA).await;
        assert!(proxied.capabilities().cache_metadata(), "the proxy lets the client cache metadata");
        let prepare = b"\x16SELECT id, s FROM c WHERE id >= ? ORDER BY id";
        let (direct_prepared, proxied_prepared) =
            (direct.command(prepare, Expect::Prepare).await, proxied.command(prepare, Expect::Prepare).await);
        assert_eq!(without_id(proxied_prepared.clone()), without_id(direct_prepared.clone()));
        let (direct_id, proxied_id) = (prepared_id(&direct_prepared), prepared_id(&proxied_prepared));
        for parameter in [1, 2, 1] {
            let expected = direct.command(&execute_with(direct_id, parameter), Expect::ResultSets).await;
            let got = proxied.command(&execute_with(proxied_id, parameter), Expect::ResultSets).await;
            assert_eq!(got, expected, "execution with {parameter} under {capabilities:?}");
            let head: &[u8] = &[2, 0];
            assert_eq!(payloads(&got)[0], head, "two columns, their definitions left out (the prepare gave them)");
        }
        let read = "SELECT * FROM c ORDER BY id";
        assert_eq!(proxied.query(read).await, direct.query(read).await, "text results under {capabilities:?}");
    }
}

#[tokio::test]
async fn a_prepared_read_of_both_history_tables_survives_cached_metadata() {
    let site = Site::two_servers(Stage::ExtendedTableReadingBoth.flags()).await;
    site.edxapp().await.query_drop(edxapp_insert(1, "{\"new\": 1}")).await.unwrap();
    let mut raw = client(&site.proxy.addr().to_string(), &site.dbs.edxapp_db, CACHE_METADATA).await;
    assert!(raw.capabilities().cache_metadata());
    let read = format!("SELECT `id`, `state` FROM `{OLD}` WHERE `student_module_id` = ? ORDER BY `id`");
    let id = prepare(&mut raw, &read).await;
    let first = raw.command(&execute_with(id, 1), Expect::ResultSets).await;
    let old_rows: Vec<u64> =
        site.root().await.query(format!("SELECT id FROM {} WHERE student_module_id = 1", site.old())).await.unwrap();
    let expected_rows = old_rows.len() + 1;
    let packets = payloads(&first);
    // Column count, two definitions, the rows, the end (CLIENT_DEPRECATE_EOF).
    assert_eq!(packets.len(), 1 + 2 + expected_rows + 1, "{packets:?}");
    let new_state = b"{\"new\": 1}";
    assert!(first.windows(new_state.len()).any(|w| w == new_state), "the extended side's row is there");
    for _ in 0..2 {
        let again = raw.command(&execute_with(id, 1), Expect::ResultSets).await;
        assert_eq!(again, first, "the servers left their column definitions out; the proxy still merges");
    }
}
