//! MariaDB's protocol extensions that the proxy relays: extended type metadata in column definitions, metadata
//! caching (results of a prepared statement executed again without their column definitions), bulk execution of
//! a prepared statement (COM_STMT_BULK_EXECUTE), progress reports during long statements, and direct execution
//! (commands naming statement 0xFFFFFFFF, the one just prepared) — passed through byte for byte, and on the routed
//! history table as far as `docs/protocol.md` says.

mod support;

use csmh_proxy::backend::{Credentials, LOGIN_CAPABILITIES};
use csmh_proxy::history::Stage;
use csmh_proxy::protocol::command::{COM_STMT_CLOSE, COM_STMT_PREPARE, COM_STMT_RESET, LAST_STATEMENT_ID};
use csmh_proxy::protocol::frame;
use csmh_proxy::protocol::response::Expect;
use mysql_async::prelude::Queryable;
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use support::edx::*;
use support::raw::RawClient;
use support::statements::*;
use support::twins::Twins;

const EXTENDED_METADATA: MariadbCapabilities = MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA;
const BULK: MariadbCapabilities = MariadbCapabilities::MARIADB_CLIENT_STMT_BULK_OPERATIONS;
const PROGRESS: MariadbCapabilities = MariadbCapabilities::MARIADB_CLIENT_PROGRESS;
const CACHE_METADATA: MariadbCapabilities = MariadbCapabilities::MARIADB_CLIENT_CACHE_METADATA;

/// Logs in to `address` as the application account with `mariadb`'s extensions.
async fn client(address: &str, database: &str, mariadb: MariadbCapabilities) -> RawClient {
    let app = support::app();
    let credentials = Credentials { user: app.user, password: Some(app.password), database: Some(database.into()) };
    let capabilities = LOGIN_CAPABILITIES | CapabilityFlags::CLIENT_FOUND_ROWS;
    RawClient::connect_mariadb(address, &credentials, capabilities, mariadb).await
}

/// A COM_STMT_EXECUTE of statement `id` with one BIGINT parameter, asking for no cursor.
fn execute_with(id: u32, parameter: i64) -> Vec<u8> {
    let mut packet = vec![0x17];
    packet.extend_from_slice(&id.to_le_bytes());
    packet.extend_from_slice(&[0, 1, 0, 0, 0, 0, 1, 8, 0]);
    packet.extend_from_slice(&parameter.to_le_bytes());
    packet
}

/// Prepares `sql` and sends `then` right behind it (a command naming [`LAST_STATEMENT_ID`]) before reading
/// anything, as Connector/C's direct execution does; the answers to both.
async fn direct_execution(client: &mut RawClient, sql: &str, then: &[u8]) -> (Vec<u8>, Vec<u8>) {
    client.send(&[&[COM_STMT_PREPARE][..], sql.as_bytes()].concat()).await;
    client.send(then).await;
    let prepared = client.response(Expect::Prepare).await;
    (prepared, client.response(Expect::ResultSets).await)
}

/// A prepare's raw answer with the statement id zeroed (each server numbers its own statements).
fn without_id(mut response: Vec<u8>) -> Vec<u8> {
    response[frame::HEADER_LEN + 1..frame::HEADER_LEN + 5].fill(0);
    response
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

/// The grade of history row `id`, read directly from the table that holds it.
async fn grade_of(site: &Site, id: u64) -> Option<f64> {
    let (mut conn, table) = match id >= site.first_extended_id {
        true => (site.csmh_root().await, site.extended()),
        false => (site.root().await, site.old()),
    };
    conn.query_first(format!("SELECT grade FROM {table} WHERE id = {id}")).await.unwrap()
}

#[tokio::test]
async fn direct_execution_runs_the_history_statement_just_prepared() {
    // Checked: before, the id 0xFFFFFFFF was relayed to edxapp, whose last statement was the old table's side of
    // an UPDATE of both tables (the extended table's row was not changed) and, across two servers, none at all
    // for an INSERT prepared on the csmh server (1243: the grant check had closed its own statement).
    let flags = Stage::ExtendedTableReadingBoth.flags();
    for site in [Site::two_servers(flags).await, Site::new(flags).await] {
        let topology = if site.dbs.same_server() { "one server" } else { "two servers" };
        let mut raw = client(&site.proxy.addr().to_string(), &site.dbs.edxapp_db, BULK).await;
        let insert = edxapp_prepared_insert();
        let execute = execute_text(LAST_STATEMENT_ID, &[Param::Text("direct")]);
        let (prepared, executed) = direct_execution(&mut raw, &insert, &execute).await;
        prepared_id(&prepared);
        assert_eq!(affected_rows(payloads(&executed)[0]), 1, "{topology}: the insert ran");
        let new = site.extended_ids_with_state("direct").await;
        assert_eq!(new.len(), 1, "{topology}: in the extended table");

        let update = format!("UPDATE `{OLD}` SET `grade` = ? WHERE `id` = ?");
        for id in [new[0], 1] {
            let execute = execute_text(LAST_STATEMENT_ID, &[Param::Text("7"), Param::Text(&id.to_string())]);
            let (_, executed) = direct_execution(&mut raw, &update, &execute).await;
            assert_eq!(affected_rows(payloads(&executed)[0]), 1, "{topology}: row {id} updated");
            assert_eq!(grade_of(&site, id).await, Some(7.0), "{topology}: row {id}");
        }

        let rows = [vec![Some("bulk")], vec![Some("bulk")], vec![Some("bulk")]];
        let (_, executed) = direct_execution(&mut raw, &insert, &bulk_execute(LAST_STATEMENT_ID, &rows)).await;
        assert_eq!(affected_rows(payloads(&executed)[0]), 3, "{topology}: the batch ran");
        assert_eq!(site.extended_ids_with_state("bulk").await.len(), 3, "{topology}: in the extended table");

        prepare(&mut raw, &insert).await;
        raw.send(&long_data(LAST_STATEMENT_ID, "long data")).await;
        let executed = raw.command(&execute_text(LAST_STATEMENT_ID, &[Param::LongData]), Expect::ResultSets).await;
        assert_eq!(affected_rows(payloads(&executed)[0]), 1, "{topology}: executed with the long data");
        assert_eq!(site.extended_ids_with_state("long data").await.len(), 1, "{topology}: the long data");
        let reset = raw.command(&on_statement(COM_STMT_RESET, LAST_STATEMENT_ID), Expect::OnePacket).await;
        assert_eq!(payloads(&reset)[0][0], 0x00, "{topology}: reset");
        raw.send(&on_statement(COM_STMT_CLOSE, LAST_STATEMENT_ID)).await;
        let refused = raw.command(&execute_text(LAST_STATEMENT_ID, &[Param::Null]), Expect::ResultSets).await;
        let expected = "Unknown prepared statement handler (4294967295) given to mysqld_stmt_execute";
        assert_eq!(error_of(&refused), (1243, expected.to_owned()), "{topology}: closed, as MariaDB says");
        assert_eq!(site.old_ids().await.len(), 18, "{topology}: nothing was inserted into the old table");
    }
}

#[tokio::test]
async fn a_failed_prepare_leaves_no_statement_for_direct_execution() {
    // Checked: before, across two servers, the execution ran `SELECT ? + 1`, edxapp's last statement (the
    // UPDATE's old side was never prepared there: its shadow on the csmh server failed first).
    let flags = Stage::ExtendedTableReadingBoth.flags();
    for site in [Site::two_servers(flags).await, Site::new(flags).await] {
        let topology = if site.dbs.same_server() { "one server" } else { "two servers" };
        let mut raw = client(&site.proxy.addr().to_string(), &site.dbs.edxapp_db, BULK).await;
        prepare(&mut raw, "SELECT ? + 1").await;
        let failing = format!("UPDATE `{OLD}` SET `no_such_column` = ? WHERE `id` = 1");
        let execute = execute_text(LAST_STATEMENT_ID, &[Param::Text("1")]);
        let (prepared, executed) = direct_execution(&mut raw, &failing, &execute).await;
        assert_eq!(payloads(&prepared)[0][0], 0xFF, "{topology}: the prepare failed");
        let expected = "Unknown prepared statement handler (4294967295) given to mysqld_stmt_execute";
        assert_eq!(error_of(&executed), (1243, expected.to_owned()), "{topology}");
        raw.send(&on_statement(COM_STMT_CLOSE, LAST_STATEMENT_ID)).await;
        let reset = raw.command(&on_statement(COM_STMT_RESET, LAST_STATEMENT_ID), Expect::OnePacket).await;
        let expected = "Unknown prepared statement handler (4294967295) given to mysqld_stmt_reset";
        assert_eq!(error_of(&reset), (1243, expected.to_owned()), "{topology}: closed");
        assert_eq!(payloads(&raw.query("SELECT 1").await).len(), 4, "{topology}: the session goes on");
    }
}

#[tokio::test]
async fn mariadb_connector_python_executes_history_statements_directly() {
    let python = support::clients::blocking(|| {
        support::packages::MYSQLCLIENT
            .python_with(&[support::packages::MARIADB_CONNECTOR_PYTHON], "import MySQLdb, mariadb")
    })
    .await;
    let flags = Stage::ExtendedTableReadingBoth.flags();
    for site in [Site::two_servers(flags).await, Site::new(flags).await] {
        let topology = if site.dbs.same_server() { "one server" } else { "two servers" };
        let insert = edxapp_prepared_insert();
        let steps = [
            serde_json::json!({"sql": insert, "params": ["from python"]}),
            serde_json::json!({"sql": format!("UPDATE `{OLD}` SET `grade` = ? WHERE `state` = ?"), "params": [7, "from python"]}),
            serde_json::json!({"sql": format!("SELECT `id`, `grade` FROM `{OLD}` WHERE `state` = ?"), "params": ["from python"]}),
            serde_json::json!({"sql": insert, "many": [["python batch"], ["python batch"]]}),
        ];
        let seen = mariadb_connector_sees(&python, &site, &steps).await;
        let inserted = site.extended_ids_with_state("from python").await;
        assert_eq!(inserted.len(), 1, "{topology}: {seen:?}");
        let expected = [
            serde_json::json!({"step": "connect"}),
            serde_json::json!({"step": 0, "rows": [], "rowcount": 1}),
            serde_json::json!({"step": 1, "rows": [], "rowcount": 1}),
            serde_json::json!({"step": 2, "rows": [[inserted[0].to_string(), "7.0"]], "rowcount": 1}),
            serde_json::json!({"step": 3, "rows": [], "rowcount": 2}),
        ];
        assert_eq!(seen, expected, "{topology}");
        assert_eq!(site.extended_ids_with_state("python batch").await.len(), 2, "{topology}");
    }
}

/// What `tests/python/mariadb_connector.py`, run by `python`, reports of running `steps` through the site's proxy.
async fn mariadb_connector_sees(
    python: &std::path::Path,
    site: &Site,
    steps: &[serde_json::Value],
) -> Vec<serde_json::Value> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/mariadb_connector.py");
    let app = support::app();
    let mut command = tokio::process::Command::new(python);
    command
        .arg(script)
        .arg(format!("--address={}", site.proxy.addr()))
        .arg(format!("--user={}", app.user))
        .arg(format!("--password={}", app.password))
        .arg(format!("--database={}", site.dbs.edxapp_db))
        .args(steps.iter().map(serde_json::Value::to_string));
    let output = support::clients::run_ok(&mut command).await;
    let stdout = support::clients::text(&output.stdout);
    stdout.lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect()
}
