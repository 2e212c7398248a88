//! Routing with the extended table on its own server: the proxy's own `csmh` connection, the client's session
//! settings replayed on it, writes to both servers kept atomic, the client's transactions mirrored, and reads of
//! both tables merged from the two servers' results — compared with the union of both tables read directly on
//! their servers, an id in both read once, from the extended table.

mod support;

use std::collections::BTreeMap;

use csmh_proxy::backend::{Credentials, LOGIN_CAPABILITIES};
use csmh_proxy::history::Stage;
use csmh_proxy::protocol::response::Expect;
use csmh_proxy::sandbox::{SAMPLE_COURSE, SAMPLE_PROBLEMS};
use mysql_async::prelude::*;
use mysql_async::{Conn, Row, Value};
use mysql_common::constants::MariadbCapabilities;
use support::EdxDatabases;
use support::edx::*;
use support::raw::RawClient;
use support::statements::{bulk_execute, error_of, prepare};

/// The extended table's rows (id, version, state), looked at directly on its server.
async fn extended_rows(site: &Site) -> Vec<(u64, Option<String>, String)> {
    site.csmh_root()
        .await
        .query(format!("SELECT id, version, state FROM {} ORDER BY id", site.extended()))
        .await
        .unwrap()
}

#[tokio::test]
async fn writes_and_reads_of_the_extended_table_go_to_its_server() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(edxapp_insert(1, "{\"two\": \"servers\"}")).await.unwrap();
    let new_id = edxapp.last_insert_id().unwrap();
    assert!(new_id >= site.first_extended_id);
    assert_eq!(extended_rows(&site).await.iter().map(|r| r.0).collect::<Vec<_>>(), vec![new_id]);
    assert_eq!(site.old_ids().await.len(), 18);
    let rows: Vec<(u64, String, u64)> = edxapp
        .query(format!("SELECT `{OLD}`.`id`, `{OLD}`.`state`, `{OLD}`.`student_module_id` FROM `{OLD}` WHERE `{OLD}`.`student_module_id` IN (1) ORDER BY `{OLD}`.`id` DESC"))
        .await
        .unwrap();
    assert_eq!(rows, vec![(new_id, "{\"two\": \"servers\"}".to_owned(), 1)]);
    let one: Option<i64> = edxapp.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the client's own connection goes on");
}

#[tokio::test]
async fn update_and_delete_reach_both_servers_and_report_the_sum() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(edxapp_insert(2, "{}")).await.unwrap();
    let new_id = edxapp.last_insert_id().unwrap();
    edxapp
        .query_drop(format!("UPDATE `{OLD}` SET `state` = 'graded' WHERE `{OLD}`.`student_module_id` = 2"))
        .await
        .unwrap();
    assert_eq!(edxapp.affected_rows(), 3 + 1);
    edxapp.query_drop(format!("DELETE FROM `{OLD}` WHERE `{OLD}`.`student_module_id` IN (2)")).await.unwrap();
    assert_eq!(edxapp.affected_rows(), 3 + 1);
    assert_eq!(site.old_ids().await.len(), 15);
    assert!(extended_rows(&site).await.iter().all(|r| r.0 != new_id));
}

#[tokio::test]
async fn what_would_read_the_proxys_session_or_an_edxapp_table_on_the_csmh_server_is_refused() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(edxapp_insert(2, "{}")).await.unwrap();
    let new_id = edxapp.last_insert_id().unwrap();
    let before = site.both_tables().await;
    edxapp.query_drop("SET @module = 2").await.unwrap();
    for sql in [
        format!("SELECT `id` FROM `{OLD}` WHERE `student_module_id` = @module"),
        format!("UPDATE `{OLD}` SET `version` = 'by a variable' WHERE `student_module_id` = @module"),
        format!("SELECT `id` INTO @id FROM `{OLD}` WHERE `id` = {new_id}"),
        format!("SELECT CURRENT_USER(), `id` FROM `{OLD}`"),
        format!("SELECT `DATABASE`(), `id` FROM `{OLD}`"),
        format!("SELECT SQL_CALC_FOUND_ROWS `id` FROM `{OLD}` WHERE `student_module_id` = 2 LIMIT 1"),
        format!(
            "SELECT `h`.`id` FROM `{OLD}` AS `h` WHERE `h`.`student_module_id` IN (SELECT U0.`id` FROM \
             courseware_studentmodule U0 WHERE U0.`id` = h.`student_module_id`)"
        ),
        format!(
            "SELECT `student_module_id` FROM `{OLD}` WHERE `id` = {new_id} UNION SELECT `id` FROM \
             courseware_studentmodule WHERE `id` = 1"
        ),
        format!(
            "SELECT h.`id` FROM `{OLD}` h WHERE h.`student_module_id` IN (SELECT U0.`id` FROM \
             courseware_studentmodule U0 WHERE U0.`id` = h.`student_module_id`)"
        ),
    ] {
        let (code, message) = server_error(edxapp.query_drop(&sql).await);
        assert_eq!(code, 1235, "{sql}: {message}");
    }
    assert_eq!(site.both_tables().await, before, "both tables as they were");
    let id: Option<Option<u64>> = edxapp.query_first("SELECT @id").await.unwrap();
    assert_eq!(id, Some(None), "the client's variable was not set");
}

#[tokio::test]
async fn the_clients_session_settings_apply_on_the_csmh_server() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    let too_long = "v".repeat(300);
    let insert = format!(
        "INSERT INTO `{OLD}` (`version`, `created`, `state`, `student_module_id`) VALUES ('{too_long}', NOW(6), 's', 3)"
    );
    let (code, _) = server_error(edxapp.query_drop(&insert).await);
    assert_eq!(code, 1406, "strict sql_mode, as on the client's connection: the value is too long");
    edxapp.query_drop("SET SESSION sql_mode = ''").await.unwrap();
    edxapp.query_drop(&insert).await.unwrap();
    assert_eq!(edxapp.get_warnings(), 1, "without strict mode the value is truncated with a warning");
    let stored = extended_rows(&site).await;
    assert_eq!(stored[0].1.as_deref().map(str::len), Some(255));
}

#[tokio::test]
async fn a_read_only_transaction_or_session_cannot_write_history_on_the_csmh_server() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    // The client's grants for an INSERT are checked (and remembered) before the read-only transactions: the
    // check, a prepare on edxapp, is not what refuses their writes.
    edxapp.query_drop(edxapp_insert(5, "read write")).await.unwrap();
    for (read_only, back) in [
        (&["START TRANSACTION READ ONLY"][..], "COMMIT"),
        // With autocommit off, where the csmh side's transaction is not begun with a BEGIN.
        (&["SET autocommit = 0", "START TRANSACTION READ ONLY"], "SET autocommit = 1"),
        (&["SET SESSION TRANSACTION READ ONLY"], "SET SESSION TRANSACTION READ WRITE"),
    ] {
        for &sql in read_only {
            edxapp.query_drop(sql).await.unwrap();
        }
        let (code, message) = server_error(edxapp.query_drop(edxapp_insert(5, "read only")).await);
        assert_eq!(code, 1792, "{read_only:?}: as on one server: {message}");
        edxapp.query_drop(back).await.unwrap();
    }
    assert_eq!(extended_rows(&site).await.len(), 1, "nothing was written read-only");
    edxapp.query_drop(edxapp_insert(5, "read write")).await.unwrap();
    assert_eq!(extended_rows(&site).await.len(), 2, "writable again");
}

#[tokio::test]
async fn the_clients_isolation_level_applies_on_the_csmh_server() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    let on_csmh = "SELECT @@session.tx_isolation, COUNT(*) FROM courseware_studentmodulehistory";
    let before: Option<(String, u64)> = edxapp.query_first(on_csmh).await.unwrap();
    assert_eq!(before.unwrap().0, "REPEATABLE-READ", "the server's default");
    edxapp.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED").await.unwrap();
    let after: Option<(String, u64)> = edxapp.query_first(on_csmh).await.unwrap();
    assert_eq!(after.unwrap().0, "READ-COMMITTED", "Django's level, as on the client's connection");
}

#[tokio::test]
async fn transactions_span_both_servers() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("SET autocommit = 0").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "rolled back")).await.unwrap();
    edxapp.query_drop(format!("DELETE FROM `{OLD}` WHERE `{OLD}`.`student_module_id` = 4")).await.unwrap();
    edxapp.query_drop("ROLLBACK").await.unwrap();
    assert!(extended_rows(&site).await.is_empty(), "the csmh side rolled back with the client");
    assert_eq!(site.old_ids().await.len(), 18, "and so did edxapp's");

    edxapp.query_drop("SAVEPOINT `s1_x1`").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "undone")).await.unwrap();
    edxapp.query_drop("ROLLBACK TO SAVEPOINT `s1_x1`").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "kept")).await.unwrap();
    edxapp.query_drop("SAVEPOINT `s1_x2`").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "undone too")).await.unwrap();
    edxapp.query_drop("ROLLBACK TO SAVEPOINT `s1_x2`").await.unwrap();
    edxapp.query_drop("RELEASE SAVEPOINT `s1_x2`").await.unwrap();
    edxapp.query_drop("COMMIT").await.unwrap();
    let states: Vec<String> = extended_rows(&site).await.into_iter().map(|r| r.2).collect();
    assert_eq!(states, vec!["kept"]);
}

/// The states of the history rows of module 4 in the extended table, in the order they were written.
async fn module_4_states(site: &Site) -> Vec<String> {
    extended_rows(site).await.into_iter().map(|row| row.2).collect()
}

#[tokio::test]
async fn a_savepoint_named_in_another_case_is_the_same_savepoint_on_both_servers() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("SET autocommit = 0").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "before the savepoint")).await.unwrap();
    edxapp.query_drop("SAVEPOINT SP1").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "after it")).await.unwrap();
    // The servers compare savepoint names without regard to case: this steps back to SP1 on both.
    edxapp.query_drop("ROLLBACK TO SAVEPOINT sp1").await.unwrap();
    edxapp.query_drop("COMMIT").await.unwrap();
    assert_eq!(module_4_states(&site).await, ["before the savepoint"]);
}

#[tokio::test]
async fn a_savepoint_set_again_under_its_name_leaves_the_ones_set_in_between() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("SET autocommit = 0").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "first")).await.unwrap();
    edxapp.query_drop("SAVEPOINT a").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "after a")).await.unwrap();
    edxapp.query_drop("SAVEPOINT b").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "after b")).await.unwrap();
    // `a` moves here; `b`, set before it, stays.
    edxapp.query_drop("SAVEPOINT a").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "after a again")).await.unwrap();
    edxapp.query_drop("ROLLBACK TO SAVEPOINT a").await.unwrap();
    edxapp.query_drop("ROLLBACK TO SAVEPOINT b").await.unwrap();
    edxapp.query_drop("COMMIT").await.unwrap();
    assert_eq!(module_4_states(&site).await, ["first", "after a"]);
}

#[tokio::test]
async fn a_rollback_to_a_savepoint_no_server_has_fails_and_rolls_nothing_back() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("SET autocommit = 0").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "written")).await.unwrap();
    let (code, message) = server_error(edxapp.query_drop("ROLLBACK TO SAVEPOINT nowhere").await);
    assert_eq!(code, 1305, "the server's own error: {message}");
    edxapp.query_drop(edxapp_insert(4, "written after the error")).await.unwrap();
    edxapp.query_drop("COMMIT").await.unwrap();
    assert_eq!(module_4_states(&site).await, ["written", "written after the error"]);
}

#[tokio::test]
async fn a_rollback_to_a_savepoint_older_than_the_csmh_part_rolls_all_of_that_part_back() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("SET autocommit = 0").await.unwrap();
    edxapp.query_drop("SAVEPOINT older").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "after the savepoint")).await.unwrap();
    edxapp.query_drop("SAVEPOINT newer").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "after the newer one")).await.unwrap();
    edxapp.query_drop("RELEASE SAVEPOINT newer").await.unwrap();
    edxapp.query_drop("ROLLBACK TO SAVEPOINT older").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "kept")).await.unwrap();
    edxapp.query_drop("COMMIT").await.unwrap();
    assert_eq!(module_4_states(&site).await, ["kept"]);
}

#[tokio::test]
async fn rollback_work_to_a_savepoint_steps_back_on_both_servers() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("SET autocommit = 0").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "before the savepoint")).await.unwrap();
    edxapp.query_drop("SAVEPOINT w").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "after it")).await.unwrap();
    edxapp.query_drop("ROLLBACK WORK TO w").await.unwrap();
    edxapp.query_drop("COMMIT").await.unwrap();
    assert_eq!(module_4_states(&site).await, ["before the savepoint"]);
}

#[tokio::test]
async fn a_rollback_the_edxapp_server_refuses_rolls_nothing_back() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("SET autocommit = 0").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "written")).await.unwrap();
    let (code, message) = server_error(edxapp.query_drop("ROLLBACK 1").await);
    assert_eq!(code, 1064, "a syntax error: {message}");
    edxapp.query_drop("COMMIT").await.unwrap();
    assert_eq!(module_4_states(&site).await, ["written"]);
}

#[tokio::test]
async fn a_rollback_to_a_savepoint_released_with_an_older_one_fails_and_rolls_nothing_back() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("SET autocommit = 0").await.unwrap();
    // `older` is set before the csmh side's part of the transaction begins; releasing it releases `newer` too.
    edxapp.query_drop("SAVEPOINT older").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "one")).await.unwrap();
    edxapp.query_drop("SAVEPOINT newer").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "two")).await.unwrap();
    edxapp.query_drop("RELEASE SAVEPOINT older").await.unwrap();
    let (code, message) = server_error(edxapp.query_drop("ROLLBACK TO SAVEPOINT newer").await);
    assert_eq!(code, 1305, "released with the older one: {message}");
    edxapp.query_drop("COMMIT").await.unwrap();
    assert_eq!(module_4_states(&site).await, ["one", "two"]);
}

#[tokio::test]
async fn a_client_rollback_with_autocommit_on_rolls_the_csmh_side_back() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("BEGIN").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "rolled back")).await.unwrap();
    edxapp.query_drop("SAVEPOINT s").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "rolled back too")).await.unwrap();
    edxapp.query_drop("ROLLBACK TO SAVEPOINT s").await.unwrap();
    edxapp.query_drop("ROLLBACK").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "autocommitted")).await.unwrap();
    assert_eq!(module_4_states(&site).await, ["autocommitted"]);
}

#[tokio::test]
async fn a_csmh_side_that_cannot_step_back_rolls_the_client_back_and_its_next_statement_says_so() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("BEGIN").await.unwrap();
    edxapp.query_drop("INSERT INTO auth_user (id, username) VALUES (99, 'dora')").await.unwrap();
    edxapp.query_drop(edxapp_insert(5, "before the savepoint")).await.unwrap();
    edxapp.query_drop("SAVEPOINT s").await.unwrap();
    edxapp.query_drop(edxapp_insert(5, "after it")).await.unwrap();
    site.kill_csmh_connections().await;
    // edxapp steps back first and answers; the csmh side, gone, took its part of the transaction with it.
    edxapp.query_drop("ROLLBACK TO SAVEPOINT s").await.expect("edxapp's answer");
    let (code, message) = server_error(edxapp.query_drop("SELECT 1").await);
    assert_eq!(code, 1430, "{message}");
    assert!(message.contains("rolled back"), "{message}");
    let dora: Option<String> = edxapp.query_first("SELECT username FROM auth_user WHERE id = 99").await.unwrap();
    assert_eq!(dora, None, "the edxapp side of the transaction was rolled back with the csmh side's");
    edxapp.query_drop("COMMIT").await.unwrap();
    assert!(extended_rows(&site).await.is_empty());
}

#[tokio::test]
async fn after_an_untold_rollback_a_batch_execution_gets_the_error_instead_of_running() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let app = support::app();
    let credentials =
        Credentials { user: app.user, password: Some(app.password), database: Some(site.dbs.edxapp_db.clone()) };
    let bulk = MariadbCapabilities::MARIADB_CLIENT_STMT_BULK_OPERATIONS;
    let mut raw =
        RawClient::connect_mariadb(&site.proxy.addr().to_string(), &credentials, LOGIN_CAPABILITIES, bulk).await;
    let add_user = prepare(&mut raw, "INSERT INTO auth_user (id, username) VALUES (?, ?)").await;
    for sql in ["BEGIN".to_owned(), edxapp_insert(5, "before"), "SAVEPOINT s".to_owned(), edxapp_insert(5, "after")] {
        raw.query(&sql).await;
    }
    site.kill_csmh_connections().await;
    // edxapp steps back and answers; the csmh side lost its part, so the proxy rolled edxapp's back too.
    raw.query("ROLLBACK TO SAVEPOINT s").await;
    let batch = raw.command(&bulk_execute(add_user, &[vec![Some("98"), Some("eve")]]), Expect::ResultSets).await;
    let (code, message) = error_of(&batch);
    assert_eq!(code, 1430, "the rollback the client was not told of: {message}");
    let eve: Option<String> =
        site.edxapp().await.query_first("SELECT username FROM auth_user WHERE id = 98").await.unwrap();
    assert_eq!(eve, None, "the batch did not run outside the transaction the client believes in");
}

#[tokio::test]
async fn a_csmh_commit_failure_rolls_the_client_back_and_is_reported() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("BEGIN").await.unwrap();
    edxapp.query_drop("INSERT INTO auth_user (id, username) VALUES (99, 'dora')").await.unwrap();
    edxapp.query_drop(edxapp_insert(5, "{}")).await.unwrap();
    assert_eq!(site.kill_csmh_connections().await, 1, "one csmh connection for the session");
    let (code, message) = server_error(edxapp.query_drop("COMMIT").await);
    assert_eq!(code, 1430, "{message}");
    let dora: Option<String> = edxapp.query_first("SELECT username FROM auth_user WHERE id = 99").await.unwrap();
    assert_eq!(dora, None, "the edxapp side of the transaction was rolled back, not committed alone");
    assert!(extended_rows(&site).await.is_empty());
    edxapp.query_drop(edxapp_insert(5, "after")).await.unwrap();
    assert_eq!(extended_rows(&site).await.len(), 1, "a new csmh connection serves the next statement");
}

/// Opens a transaction with `begin` that writes a user on `edxapp` and a history row on the `csmh` server, loses
/// the proxy's `csmh` connection, then ends the transaction with `end`: its error, and whether the user was kept.
async fn lose_the_csmh_side_then_end(site: &Site, begin: &str, end: &str) -> ((u16, String), bool) {
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(begin).await.unwrap();
    edxapp.query_drop("INSERT INTO auth_user (id, username) VALUES (99, 'dora')").await.unwrap();
    edxapp.query_drop(edxapp_insert(5, "{}")).await.unwrap();
    site.kill_csmh_connections().await;
    let error = server_error(edxapp.query_drop(end).await);
    let dora: Option<String> = edxapp.query_first("SELECT username FROM auth_user WHERE id = 99").await.unwrap();
    (error, dora.is_some())
}

#[tokio::test]
async fn a_statement_that_commits_implicitly_commits_the_csmh_side_first_and_a_failure_there_rolls_both_back() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    for (begin, end) in [
        // Autocommit off, turned back on: the server commits the transaction.
        ("SET autocommit = 0", "SET autocommit = 1"),
        // Autocommit on, BEGIN, then DDL: the server commits before running it.
        ("BEGIN", "CREATE TABLE implicitly_committing (i INT)"),
    ] {
        let ((code, message), kept) = lose_the_csmh_side_then_end(&site, begin, end).await;
        assert_eq!(code, 1430, "{end}: {message}");
        assert!(!kept, "{end}: the edxapp side was rolled back, not committed alone");
    }
    let created = "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_NAME = 'implicitly_committing'";
    let created: Option<u64> = site.root().await.query_first(created).await.unwrap();
    assert_eq!(created, Some(0), "the statement did not run");
    assert!(extended_rows(&site).await.is_empty());
    // Without a failure, both commit.
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("SET autocommit = 0").await.unwrap();
    edxapp.query_drop("INSERT INTO auth_user (id, username) VALUES (99, 'dora')").await.unwrap();
    edxapp.query_drop(edxapp_insert(5, "kept")).await.unwrap();
    edxapp.query_drop("SET autocommit = ON").await.unwrap();
    let committed = format!("SELECT username FROM `{}`.auth_user WHERE id = 99", site.dbs.edxapp_db);
    let found: Option<String> = site.root().await.query_first(committed).await.unwrap();
    assert_eq!(found.as_deref(), Some("dora"));
    assert_eq!(module_4_states(&site).await, ["kept"]);
}

/// In a transaction begun with `begin` that wrote a user on `edxapp` and a history row on the `csmh` server, runs
/// `statement`, then ROLLBACK: the statement's error code if it had one, and whether the user and the history row
/// were kept. The transaction's two parts are left as one server would leave them: both kept or both gone.
async fn ends_together(site: &Site, begin: &str, statement: &str) -> (Option<u16>, (bool, bool)) {
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(begin).await.unwrap();
    edxapp.query_drop("INSERT INTO auth_user (id, username) VALUES (99, 'dora')").await.unwrap();
    edxapp.query_drop(edxapp_insert(5, "{}")).await.unwrap();
    let code = match edxapp.query_drop(statement).await {
        Ok(()) => None,
        Err(error) => Some(server_error::<()>(Err(error)).0),
    };
    edxapp.query_drop("ROLLBACK").await.unwrap();
    let user: Option<String> = edxapp.query_first("SELECT username FROM auth_user WHERE id = 99").await.unwrap();
    let history = !extended_rows(site).await.is_empty();
    site.root()
        .await
        .query_drop(format!("DELETE FROM `{}`.auth_user WHERE id = 99", site.dbs.edxapp_db))
        .await
        .unwrap();
    site.csmh_root().await.query_drop(format!("DELETE FROM {}", site.extended())).await.unwrap();
    (code, (user.is_some(), history))
}

#[tokio::test]
async fn a_statement_that_ends_the_transaction_on_one_server_only_is_refused_or_ends_it_on_both() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let (rolled_back, committed) = ((false, false), (true, true));
    for (begin, statement, code, kept) in [
        // Commits nothing, although its first word is DROP.
        ("BEGIN", "DROP PREPARE no_such_statement", Some(1243), rolled_back),
        // Ends the transaction in a way the proxy cannot follow: refused, unrun.
        ("BEGIN", "SET STATEMENT max_statement_time = 0 FOR ROLLBACK", Some(1235), rolled_back),
        ("SET autocommit = 0", "SET autocommit = 2", Some(1235), rolled_back),
        ("SET autocommit = 0", "SET autocommit = 1 - 1", Some(1235), rolled_back),
        // Refused by the server before it commits, or not committing there (MySQL commits for CACHE INDEX,
        // MariaDB does not): the csmh side committed first, so edxapp's part is committed too.
        ("SET autocommit = 0", "SET autocommit = 1, sql_mode = 'NO_SUCH_MODE'", Some(1231), committed),
        ("BEGIN", "CREATE TABLE refused_unparsed (", Some(1064), committed),
        ("BEGIN", "CACHE INDEX auth_user IN default", None, committed),
    ] {
        let ended = ends_together(&site, begin, statement).await;
        assert_eq!(ended, (code, kept), "{begin}; {statement}: (error, (user kept, history kept))");
    }
}

#[tokio::test]
async fn a_user_variable_named_autocommit_commits_nothing() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("SET autocommit = 0").await.unwrap();
    edxapp.query_drop(edxapp_insert(5, "rolled back")).await.unwrap();
    edxapp.query_drop("SET @autocommit = 1").await.unwrap();
    edxapp.query_drop("ROLLBACK").await.unwrap();
    assert!(extended_rows(&site).await.is_empty(), "the csmh side's part was rolled back with the rest");
}

#[tokio::test]
async fn an_unreachable_csmh_server_is_an_error_for_the_statement_only() {
    let dbs = EdxDatabases::fresh_two_servers().await;
    dbs.create_edx_schema(false).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut toml = dbs.proxy_toml(Stage::ExtendedTableOnlyReads.flags());
    toml.csmh = closed;
    let proxy = support::start_proxy(toml.config().unwrap()).await;
    let mut edxapp = Conn::new(dbs.proxy_opts(&proxy, &support::app())).await.unwrap();
    let (code, message) = server_error(edxapp.query_drop(edxapp_insert(1, "{}")).await);
    assert_eq!(code, 1429);
    assert!(message.contains("csmh"), "{message}");
    let one: Option<i64> = edxapp.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    // A connection that never opened is a connect error, not a connection lost (which alerts on failovers).
    let metrics = &proxy.shared().metrics;
    let csmh = csmh_proxy::topology::Server::Csmh;
    assert_eq!((metrics.backend_connect_errors(csmh), metrics.backend_query_errors(csmh)), (1, 0));
}

/// The old table's columns, in its order, as edxapp's statements name them.
const HISTORY: [&str; 7] = ["id", "version", "created", "state", "grade", "max_grade", "student_module_id"];

/// `SELECT <columns> FROM <the old table> <rest>`, the columns qualified as Django qualifies them.
fn select(columns: &[&str], rest: &str) -> String {
    let columns: Vec<String> = columns.iter().map(|c| format!("`{OLD}`.`{c}`")).collect();
    format!("SELECT {} FROM `{OLD}` {rest}", columns.join(", "))
}

/// Django's SELECT of whole history rows, followed by `rest` (WHERE, ORDER BY, LIMIT).
fn django_select(rest: &str) -> String {
    select(&HISTORY, rest)
}

/// `WHERE` the history's module is `module`, as Django writes it.
fn of_module(module: u64) -> String {
    format!("WHERE `{OLD}`.`student_module_id` = {module}")
}

/// A row as the client gets it in the text protocol: each value as the server wrote it.
type Values = Vec<Value>;

/// The rows of `sql`, through `conn`.
async fn rows(conn: &mut Conn, sql: &str) -> Vec<Values> {
    let rows: Vec<Row> = conn.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.into_iter().map(Row::unwrap).collect()
}

/// The value of column `at` of `row` as a `T`.
fn get<T: FromValue>(row: &Values, at: usize) -> T {
    mysql_async::from_value(row[at].clone())
}

/// The ids of `rows`, whose first column is the id.
fn ids(rows: &[Values]) -> Vec<u64> {
    rows.iter().map(|row| get(row, 0)).collect()
}

/// The union of both tables read directly on their servers, by id, the extended table's row winning for an id in
/// both: `columns` (the id first) of the rows `h` that meet `condition`, each server's session set up with
/// `session` first.
async fn direct_union(site: &Site, columns: &str, condition: &str, session: &[&str]) -> BTreeMap<u64, Values> {
    let mut union = BTreeMap::new();
    for (mut conn, table) in [(site.root().await, site.old()), (site.csmh_root().await, site.extended())] {
        for set in session {
            conn.query_drop(*set).await.unwrap();
        }
        for row in rows(&mut conn, &format!("SELECT {columns} FROM {table} AS h WHERE {condition}")).await {
            union.insert(get(&row, 0), row);
        }
    }
    union
}

/// Whole history rows of the union of both tables (see [`direct_union`]), by id.
async fn history_union(site: &Site) -> BTreeMap<u64, Values> {
    let columns: Vec<String> = HISTORY.iter().map(|c| format!("h.{c}")).collect();
    direct_union(site, &columns.join(", "), "TRUE", &[]).await
}

/// The rows of `union` of the modules `modules`, newest (largest id) first.
fn newest_first(union: &BTreeMap<u64, Values>, modules: &[u64]) -> Vec<Values> {
    union.values().rev().filter(|row| modules.contains(&get(row, 6))).cloned().collect()
}

/// Whether the row's state (column `at`) is the extended table's copy of an old row.
fn is_copy(row: &Values, at: usize) -> bool {
    get::<String>(row, at).ends_with(" (copy)")
}

#[tokio::test]
async fn edxapps_reads_of_both_tables_return_each_id_once_newest_first() {
    let site = Site::two_servers(Stage::ExtendedTableReadingBoth.flags()).await;
    site.copy_to_extended(&[7, 8, 9, 13]).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(edxapp_insert(1, "{\"new\": 1}")).await.unwrap();
    let new_1 = edxapp.last_insert_id().unwrap();
    edxapp.query_drop(edxapp_insert(3, "{\"new\": 3}")).await.unwrap();
    let new_3 = edxapp.last_insert_id().unwrap();
    assert!(new_1 >= site.first_extended_id && new_3 > new_1, "ids {new_1}, {new_3} from the extended range");
    assert_eq!(site.extended_ids().await, vec![7, 8, 9, 13, new_1, new_3]);
    assert_eq!(site.old_ids().await.len(), 18, "nothing new in the old table");
    let union = history_union(&site).await;

    let read = rows(&mut edxapp, &edxapp_read("1, 2")).await;
    assert_eq!(ids(&read), vec![new_1, 14, 13, 8, 7, 2, 1], "newest first, each id once");
    assert_eq!(read, newest_first(&union, &[1, 2]), "the rows of both tables, the extended copies winning");
    let copies: Vec<u64> = read.iter().filter(|row| is_copy(row, 3)).map(|row| get(row, 0)).collect();
    assert_eq!(copies, vec![13, 8, 7], "copied ids come from the extended server");

    let learners = [
        ("alice", 0, 1, vec![new_1, 13, 7, 1]),
        ("bob", 0, 3, vec![new_3, 15, 9, 3]),
        ("carol", 1, 6, vec![18, 12, 6]),
    ];
    for (learner, problem, module, wanted) in learners {
        let read = rows(&mut edxapp, &edxapp_subquery_read(learner, SAMPLE_COURSE, SAMPLE_PROBLEMS[problem])).await;
        let expected: Vec<Values> = newest_first(&union, &[module])
            .into_iter()
            .map(|row| vec![row[0].clone(), row[3].clone(), row[6].clone()])
            .collect();
        assert_eq!(ids(&read), wanted, "{learner}'s submission history, newest first, each id once");
        assert_eq!(read, expected, "{learner}'s submission history");
    }
    let nobody = rows(&mut edxapp, &edxapp_subquery_read("nobody", SAMPLE_COURSE, SAMPLE_PROBLEMS[0])).await;
    assert_eq!(nobody, Vec::<Values>::new(), "a subquery without rows selects nothing on either server");
}

/// The test site of [`djangos_queryset_shapes_answer_as_the_union_of_both_tables`]: modules 1 and 2 partly and
/// wholly copied, and three rows written through the proxy, for modules 1, 3 and 7 (whose history is in the
/// extended table only), with `created` values distinct from each other and later than the old rows'.
async fn queryset_site() -> (Site, Conn, Vec<u64>) {
    let site = Site::two_servers(Stage::ExtendedTableReadingBoth.flags()).await;
    site.copy_to_extended(&[2, 7, 8, 13, 14]).await;
    let mut edxapp = site.edxapp().await;
    let mut new = Vec::new();
    let writes =
        [(1, "2024-06-01 12:00:01.000001"), (3, "2024-06-01 12:00:02.000002"), (7, "2024-06-01 12:00:03.000003")];
    for (module, created) in writes {
        edxapp.query_drop(edxapp_insert_at(module, "{\"new\": true}", created)).await.unwrap();
        new.push(edxapp.last_insert_id().unwrap());
    }
    (site, edxapp, new)
}

#[tokio::test]
async fn djangos_queryset_shapes_answer_as_the_union_of_both_tables() {
    let (site, mut edxapp, new) = queryset_site().await;
    let union = history_union(&site).await;
    let all_rows = newest_first(&union, &[1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(all_rows.len(), 18 + 3);
    let in_1_2 = format!("WHERE `{OLD}`.`student_module_id` IN (1, 2)");
    let rows_1_2 = newest_first(&union, &[1, 2]);

    // count()
    let count = |rest: &str| format!("SELECT COUNT(*) AS `__count` FROM `{OLD}` {rest}");
    for (rest, wanted) in [("", 21), (in_1_2.as_str(), rows_1_2.len()), (&of_module(424242), 0)] {
        let counted: Option<usize> = edxapp.query_first(count(rest)).await.unwrap();
        assert_eq!(counted, Some(wanted), "count() {rest}: every id once");
    }

    // exists()
    for (module, exists) in [(7, Some(1)), (2, Some(1)), (6, Some(1)), (424242, None)] {
        let sql = format!("SELECT 1 AS `a` FROM `{OLD}` {} LIMIT 1", of_module(module));
        let found: Option<i64> = edxapp.query_first(&sql).await.unwrap();
        assert_eq!(found, exists, "exists() for module {module}");
    }

    // Slicing: [1:3].
    let page = rows(&mut edxapp, &django_select(&format!("ORDER BY `{OLD}`.`id` DESC LIMIT 2 OFFSET 1"))).await;
    assert_eq!(page, all_rows[1..3].to_vec());
    assert_eq!(ids(&page), vec![new[1], new[0]]);
    let slice = django_select(&format!("{in_1_2} ORDER BY `{OLD}`.`id` DESC LIMIT 2 OFFSET 1"));
    let page = rows(&mut edxapp, &slice).await;
    assert_eq!(page, rows_1_2[1..3].to_vec());
    assert_eq!((ids(&page), is_copy(&page[0], 3), is_copy(&page[1], 3)), (vec![14, 13], true, true));

    // latest('created') and earliest('created'): Django 4.2 sorts by the field alone (no tie-breaker), LIMIT 1;
    // the test's `created` values are distinct, so there is one right answer.
    for (condition, of) in [("", &all_rows), (in_1_2.as_str(), &rows_1_2), (&of_module(2), &newest_first(&union, &[2]))]
    {
        let mut by_created = of.clone();
        by_created.sort_by_key(|row| get::<String>(row, 2));
        let latest = format!("{condition} ORDER BY `{OLD}`.`created` DESC LIMIT 1");
        assert_eq!(rows(&mut edxapp, &django_select(&latest)).await, by_created[by_created.len() - 1..].to_vec());
        let earliest = format!("{condition} ORDER BY `{OLD}`.`created` ASC LIMIT 1");
        assert_eq!(rows(&mut edxapp, &django_select(&earliest)).await, by_created[..1].to_vec());
    }
    let latest = django_select(&format!("{} ORDER BY `{OLD}`.`created` DESC LIMIT 1", of_module(2)));
    let latest = rows(&mut edxapp, &latest).await;
    assert_eq!((ids(&latest), is_copy(&latest[0], 3)), (vec![14], true), "module 2's latest, from its copy");

    // get(id=...)
    for id in [2, 13, 5, new[2], 424242] {
        let got = rows(&mut edxapp, &django_select(&format!("WHERE `{OLD}`.`id` = {id} LIMIT 21"))).await;
        assert_eq!(got, union.get(&id).cloned().into_iter().collect::<Vec<_>>(), "get(id={id})");
    }

    // values_list('state', flat=True) without an ordering (the proxy reads the id to merge and cuts it off),
    // values_list('student_module_id', flat=True).distinct(), and aggregate(Max('id'), Min('created'),
    // Count('grade')).
    let states: Vec<String> = edxapp.query(select(&["state"], &of_module(1))).await.unwrap();
    let union_states: Vec<String> = newest_first(&union, &[1]).iter().rev().map(|row| get(row, 3)).collect();
    assert_eq!(states, union_states, "each id's state once, in id order");
    let mut modules: Vec<u64> =
        edxapp.query(format!("SELECT DISTINCT `{OLD}`.`student_module_id` FROM `{OLD}`")).await.unwrap();
    modules.sort_unstable();
    assert_eq!(modules, vec![1, 2, 3, 4, 5, 6, 7]);
    let aggregates = format!(
        "SELECT MAX(`{OLD}`.`id`) AS `id__max`, MIN(`{OLD}`.`created`) AS `created__min`, \
         COUNT(`{OLD}`.`grade`) AS `grade__count` FROM `{OLD}`"
    );
    let aggregated = rows(&mut edxapp, &aggregates).await;
    let graded = union.values().filter(|row| row[4] != Value::NULL).count();
    let earliest = union
        .values()
        .map(|row| row[2].clone())
        .min_by_key(|created| mysql_async::from_value::<String>(created.clone()));
    assert_eq!(
        aggregated,
        vec![vec![Value::from(new[2].to_string()), earliest.unwrap(), Value::from(graded.to_string())]]
    );
}

#[tokio::test]
async fn djangos_values_list_ordered_by_an_id_it_does_not_select() {
    let (site, mut edxapp, new) = queryset_site().await;
    let union = history_union(&site).await;
    let read = select(&["state"], &format!("{} ORDER BY `{OLD}`.`id` DESC", of_module(1)));
    let states: Vec<String> = edxapp.query(&read).await.unwrap_or_else(|e| panic!("{read}: {e}"));
    let expected: Vec<String> = newest_first(&union, &[1]).iter().map(|row| get(row, 3)).collect();
    assert_eq!(states, expected);
    assert_eq!(states.len(), 4, "module 1's history: rows 1, 7, 13 and {}", new[0]);
}

#[tokio::test]
async fn shapes_the_merge_cannot_answer_exactly_are_refused_and_the_connection_goes_on() {
    let site = Site::two_servers(Stage::ExtendedTableReadingBoth.flags()).await;
    site.copy_to_extended(&[7]).await;
    let mut edxapp = site.edxapp().await;
    let refused = [
        // values('student_module_id').annotate(n=Count('id')): GROUP BY.
        format!(
            "SELECT `{OLD}`.`student_module_id`, COUNT(`{OLD}`.`id`) AS `n` FROM `{OLD}` \
             GROUP BY `{OLD}`.`student_module_id`"
        ),
        // aggregate(Avg('grade')), aggregate(Sum('grade')) of a DOUBLE, Count('student_module', distinct=True).
        format!("SELECT AVG(`{OLD}`.`grade`) AS `grade__avg` FROM `{OLD}`"),
        format!("SELECT SUM(`{OLD}`.`grade`) AS `grade__sum` FROM `{OLD}`"),
        format!("SELECT COUNT(DISTINCT `{OLD}`.`student_module_id`) AS `student_module__count` FROM `{OLD}`"),
        // order_by('state') and a slice of it: a string column in a case-insensitive collation.
        django_select(&format!("ORDER BY `{OLD}`.`state` ASC")),
        django_select(&format!("WHERE `{OLD}`.`student_module_id` IN (1, 2) ORDER BY `{OLD}`.`state` DESC LIMIT 1")),
    ];
    let module_1 = select(&["id", "state"], &format!("{} ORDER BY `{OLD}`.`id` DESC", of_module(1)));
    for sql in refused {
        let (code, message) = server_error(edxapp.query_drop(&sql).await);
        assert_eq!(code, 1235, "{sql}: {message}");
        let read = rows(&mut edxapp, &module_1).await;
        assert_eq!((ids(&read), is_copy(&read[1], 1)), (vec![13, 7, 1], true), "a merged read after refusing {sql}");
    }
}

/// Rows the server has read, by index or by scan, since it started (its global counters). `Handler_read_prev`
/// counts too: a server may answer `ORDER BY id DESC` by reading the primary key backwards, row by row.
async fn handler_reads(conn: &mut Conn) -> u64 {
    let counters: Vec<(String, u64)> = conn
        .query(
            "SHOW GLOBAL STATUS WHERE Variable_name IN ('Handler_read_rnd_next', 'Handler_read_next', \
             'Handler_read_key', 'Handler_read_prev')",
        )
        .await
        .unwrap();
    counters.into_iter().map(|(_, v)| v).sum()
}

#[tokio::test]
async fn edxapps_subquery_read_reaches_only_the_learners_rows_on_each_server() {
    // Servers of the test's own: their counters count this test's statements only.
    let site = Site::private_two_servers(Stage::ExtendedTableReadingBoth.flags()).await;
    let other_learners = |table: String, database: &str, first: u64| {
        format!(
            "INSERT INTO {table} (id, version, created, state, grade, max_grade, student_module_id) \
             SELECT seq + {first}, NULL, '2024-05-01 00:00:00', '{{}}', 0, 1, seq + 1000 + {first} \
             FROM `{database}`.seq_1_to_30000"
        )
    };
    let (mut edxapp_root, mut csmh_root) = (site.root().await, site.csmh_root().await);
    edxapp_root.query_drop(other_learners(site.old(), &site.dbs.edxapp_db, 18)).await.unwrap();
    edxapp_root.query_drop(format!("ANALYZE TABLE {}", site.old())).await.unwrap();
    csmh_root.query_drop(other_learners(site.extended(), &site.dbs.csmh_db, 100_000)).await.unwrap();
    csmh_root.query_drop(format!("ANALYZE TABLE {}", site.extended())).await.unwrap();
    site.copy_to_extended(&[7]).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(edxapp_insert(1, "{\"new\": 1}")).await.unwrap();
    let new_id = edxapp.last_insert_id().unwrap();
    let read = edxapp_subquery_read("alice", SAMPLE_COURSE, SAMPLE_PROBLEMS[0]);
    // The first read opens the proxy's csmh connection; the second is measured.
    let first = rows(&mut edxapp, &read).await;
    assert_eq!(ids(&first), vec![new_id, 13, 7, 1]);
    assert!(is_copy(&first[2], 1));

    let before = (handler_reads(&mut edxapp_root).await, handler_reads(&mut csmh_root).await);
    let again = rows(&mut edxapp, &read).await;
    let after = (handler_reads(&mut edxapp_root).await, handler_reads(&mut csmh_root).await);
    assert_eq!(again, first);
    let (on_edxapp, on_csmh) = (after.0 - before.0, after.1 - before.1);
    println!("rows read for edxapp's subquery read: {on_edxapp} on the edxapp server, {on_csmh} on the csmh server");
    for (server, read_rows) in [("edxapp", on_edxapp), ("csmh", on_csmh)] {
        assert!(
            read_rows < 500,
            "the read made the {server} server read {read_rows} rows among 30,000 other learners': its conditions \
             did not reach that server"
        );
    }

    // The whole history streams through the merge: 30,018 old rows and 30,002 extended ones, one of them a copy.
    let counted: Option<u64> = edxapp.query_first(format!("SELECT COUNT(*) AS `__count` FROM `{OLD}`")).await.unwrap();
    assert_eq!(counted, Some(60_019));
    let all: Vec<u64> = edxapp.query(select(&["id"], &format!("ORDER BY `{OLD}`.`id` DESC"))).await.unwrap();
    assert_eq!(all.len(), 60_019);
    assert!(all.windows(2).all(|pair| pair[0] > pair[1]), "newest first, each id once");
}

/// The history of module `module`, newest first, as (id, state), read through `conn`.
async fn history_of_module(conn: &mut Conn, module: u64) -> Vec<(u64, String)> {
    conn.query(select(&["id", "state"], &format!("{} ORDER BY `{OLD}`.`id` DESC", of_module(module)))).await.unwrap()
}

#[tokio::test]
async fn a_merged_read_inside_a_transaction_sees_the_transaction_on_both_servers() {
    let site = Site::two_servers(Stage::ExtendedTableReadingBoth.flags()).await;
    site.copy_to_extended(&[10]).await;
    let mut edxapp = site.edxapp().await;
    let mut other = site.edxapp().await;
    let before = history_of_module(&mut edxapp, 4).await;
    assert_eq!(before.iter().map(|r| r.0).collect::<Vec<_>>(), vec![16, 10, 4]);
    assert!(before[1].1.ends_with(" (copy)"));

    edxapp.query_drop("BEGIN").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "in the transaction")).await.unwrap();
    let new_id = edxapp.last_insert_id().unwrap();
    edxapp.query_drop(format!("UPDATE `{OLD}` SET `state` = 'updated' WHERE `{OLD}`.`id` IN (4, 10)")).await.unwrap();
    assert_eq!(edxapp.affected_rows(), 3, "the old rows 4 and 10, and the copy of 10");
    let updated =
        |(id, state): &(u64, String)| (*id, if [4, 10].contains(id) { "updated".into() } else { state.clone() });
    let mut expected = vec![(new_id, "in the transaction".to_owned())];
    expected.extend(before.iter().map(updated));
    assert_eq!(history_of_module(&mut edxapp, 4).await, expected, "the transaction's own writes, on both servers");
    assert_eq!(history_of_module(&mut other, 4).await, before, "another session does not see them");
    edxapp.query_drop("ROLLBACK").await.unwrap();
    assert_eq!(history_of_module(&mut edxapp, 4).await, before, "rolled back on both servers");

    // A transaction's reads see one snapshot of each server (REPEATABLE READ): rows others commit meanwhile on
    // either server stay out until it ends.
    edxapp.query_drop("START TRANSACTION").await.unwrap();
    assert_eq!(history_of_module(&mut edxapp, 4).await, before);
    let insert_19 = format!(
        "INSERT INTO {} (id, created, state, student_module_id) VALUES (19, NOW(6), 'committed meanwhile', 4)",
        site.old()
    );
    site.root().await.query_drop(insert_19).await.unwrap();
    other.query_drop(edxapp_insert(4, "committed meanwhile")).await.unwrap();
    let others = other.last_insert_id().unwrap();
    assert_eq!(history_of_module(&mut edxapp, 4).await, before, "the transaction's snapshot of both servers");
    edxapp.query_drop("COMMIT").await.unwrap();
    let after: Vec<u64> = history_of_module(&mut edxapp, 4).await.into_iter().map(|r| r.0).collect();
    assert_eq!(after, vec![others, 19, 16, 10, 4]);
}

/// Module 1's history as a read that depends on the session's `time_zone` (`UNIX_TIMESTAMP` of a DATETIME) and
/// `sql_mode` (`||`), computed directly on both servers with `session` set.
async fn settings_dependent_union(site: &Site, session: &[&str]) -> Vec<Values> {
    let columns = "h.id, UNIX_TIMESTAMP(h.created), h.state || '!'";
    direct_union(site, columns, "h.student_module_id IN (1)", session).await.into_values().rev().collect()
}

#[tokio::test]
async fn a_merged_read_uses_the_clients_time_zone_and_sql_mode_on_both_servers() {
    let site = Site::two_servers(Stage::ExtendedTableReadingBoth.flags()).await;
    site.copy_to_extended(&[7, 13]).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(edxapp_insert(1, "{\"new\": 1}")).await.unwrap();
    let read = format!(
        "SELECT `{OLD}`.`id`, UNIX_TIMESTAMP(`{OLD}`.`created`) AS `ts`, `{OLD}`.`state` || '!' AS `marked` \
         FROM `{OLD}` {} ORDER BY `{OLD}`.`id` DESC",
        of_module(1)
    );
    let server_defaults = settings_dependent_union(&site, &[]).await;
    let india = ["SET SESSION time_zone = '+05:30'", "SET SESSION sql_mode = CONCAT(@@sql_mode, ',PIPES_AS_CONCAT')"];
    for set in india {
        edxapp.query_drop(set).await.unwrap();
    }
    let merged = rows(&mut edxapp, &read).await;
    assert_eq!(merged, settings_dependent_union(&site, &india).await);
    assert_eq!(merged.len(), 4);
    for (row, default) in merged.iter().zip(&server_defaults) {
        assert!(get::<String>(row, 2).ends_with('!'), "|| concatenates, as PIPES_AS_CONCAT says: {row:?}");
        assert_ne!(row[1], default[1], "the client's time zone, not the server's, converts `created`");
    }

    // Changed in the middle of a transaction (autocommit off, as Django's atomic does it).
    edxapp.query_drop("SET autocommit = 0").await.unwrap();
    assert_eq!(rows(&mut edxapp, &read).await, merged);
    let brazil = "SET SESSION time_zone = '-03:00'";
    edxapp.query_drop(brazil).await.unwrap();
    let expected = settings_dependent_union(&site, &[india[1], brazil]).await;
    assert_eq!(rows(&mut edxapp, &read).await, expected, "a changed setting reaches both servers");
    edxapp.query_drop("COMMIT").await.unwrap();

    // Changed by a prepared statement, and by a procedure: neither starts with SET in a COM_QUERY.
    edxapp.exec_drop("SET SESSION time_zone = ?", ("+09:00",)).await.unwrap();
    let japan = "SET SESSION time_zone = '+09:00'";
    assert_eq!(rows(&mut edxapp, &read).await, settings_dependent_union(&site, &[india[1], japan]).await);
    edxapp.query_drop("CREATE PROCEDURE to_utc() SET SESSION time_zone = '+00:00'").await.unwrap();
    edxapp.query_drop("CALL to_utc()").await.unwrap();
    let utc = "SET SESSION time_zone = '+00:00'";
    assert_eq!(rows(&mut edxapp, &read).await, settings_dependent_union(&site, &[india[1], utc]).await);
}

#[tokio::test]
async fn prepared_statements_on_the_extended_table_run_on_its_server() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    let insert = format!(
        "INSERT INTO `{OLD}` (`version`, `created`, `state`, `grade`, `max_grade`, `student_module_id`) \
         VALUES (NULL, NOW(6), ?, 1, 1, ?)"
    );
    edxapp.exec_drop(&insert, ("prepared", 6)).await.unwrap();
    edxapp.exec_drop(&insert, ("prepared again", 6)).await.unwrap();
    let new_id = edxapp.last_insert_id().unwrap();
    assert!(new_id >= site.first_extended_id);
    let read = format!("SELECT `id`, `state` FROM `{OLD}` WHERE `student_module_id` = ? ORDER BY `id` DESC");
    let rows: Vec<(u64, String)> = edxapp.exec(&read, (6,)).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0], (new_id, "prepared again".to_owned()));
    let own: Option<i64> =
        edxapp.exec_first("SELECT COUNT(*) FROM courseware_studentmodule WHERE id <= ?", (6,)).await.unwrap();
    assert_eq!(own, Some(6), "statements on edxapp's own tables still run on the client's connection");
    assert_eq!(extended_rows(&site).await.len(), 2);
}

#[tokio::test]
async fn a_deadlock_that_rolls_the_client_back_rolls_the_csmh_side_back_too() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut victim = site.edxapp().await;
    let held = "UPDATE auth_user SET username = 'b2' WHERE id = 2";
    let statement = "UPDATE auth_user SET username = 'a2' WHERE id = 2";
    let code = deadlock_on_edxapp(&site, &mut victim, held, statement).await;
    assert_eq!(code, 1213, "the proxy's client is the deadlock victim");
    assert!(extended_rows(&site).await.is_empty(), "the csmh side's insert was rolled back with the transaction");
    victim.query_drop(edxapp_insert(1, "after the deadlock")).await.unwrap();
    let states: Vec<String> = extended_rows(&site).await.into_iter().map(|r| r.2).collect();
    assert_eq!(states, vec!["after the deadlock"]);
}

#[tokio::test]
async fn prepared_update_and_delete_reach_both_servers() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(edxapp_insert(4, "{}")).await.unwrap();
    let update = format!("UPDATE `{OLD}` SET `state` = ? WHERE `{OLD}`.`student_module_id` = ?");
    edxapp.exec_drop(&update, ("prepared", 4)).await.unwrap();
    assert_eq!(edxapp.affected_rows(), 3 + 1);
    edxapp.query_drop("BEGIN").await.unwrap();
    edxapp.exec_drop(format!("DELETE FROM `{OLD}` WHERE `{OLD}`.`student_module_id` = ?"), (4,)).await.unwrap();
    assert_eq!(edxapp.affected_rows(), 4);
    edxapp.query_drop("ROLLBACK").await.unwrap();
    let states: Vec<String> = extended_rows(&site).await.into_iter().map(|r| r.2).collect();
    assert_eq!(states, vec!["prepared"], "the rolled-back delete left the extended row, updated");
}

#[tokio::test]
async fn prepared_reads_of_both_tables_are_merged_in_the_binary_protocol() {
    let site = Site::two_servers(Stage::ExtendedTableReadingBoth.flags()).await;
    site.copy_to_extended(&[7, 13]).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(edxapp_insert(1, "{\"new\": 1}")).await.unwrap();
    let new_1 = edxapp.last_insert_id().unwrap();
    let union = history_union(&site).await;
    let read = django_select(&format!("WHERE `{OLD}`.`student_module_id` = ? ORDER BY `{OLD}`.`id` DESC"));
    let prepared: Vec<Row> = edxapp.exec(&read, (1,)).await.unwrap();
    let prepared: Vec<Values> = prepared.into_iter().map(Row::unwrap).collect();
    let text = rows(&mut edxapp, &django_select(&format!("{} ORDER BY `{OLD}`.`id` DESC", of_module(1)))).await;
    assert_eq!(ids(&prepared), vec![new_1, 13, 7, 1], "newest first, each id once");
    assert_eq!(ids(&prepared), ids(&newest_first(&union, &[1])));
    let states = |rows: &[Values]| rows.iter().map(|row| get::<String>(row, 3)).collect::<Vec<_>>();
    assert_eq!(states(&prepared), states(&text), "the binary rows hold what the text rows hold");
    let again: Vec<(u64, u64)> = edxapp
        .exec(
            select(
                &["id", "student_module_id"],
                &format!("WHERE `{OLD}`.`student_module_id` IN (?, ?) ORDER BY `{OLD}`.`id` LIMIT 3"),
            ),
            (1, 2),
        )
        .await
        .unwrap();
    assert_eq!(again, vec![(1, 1), (2, 2), (7, 1)]);
    let hidden_id = edxapp.exec::<String, _, _>(format!("SELECT `state` FROM `{OLD}` WHERE `id` = ?"), (1,)).await;
    assert_eq!(server_error(hidden_id).0, 1235, "a prepared merge that would need a hidden id is refused");
}

#[tokio::test]
async fn a_transaction_that_begins_on_the_csmh_server_keeps_the_flags_it_began_with() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("SET autocommit = 0").await.unwrap();
    // The transaction's first statement runs on the csmh server only; edxapp's side has no transaction open yet.
    edxapp.query_drop(edxapp_insert(7, "first")).await.unwrap();
    let back = site.dbs.proxy_toml(Stage::OldTableOnly.flags()).config().unwrap();
    site.proxy.shared().replace(back).unwrap();
    edxapp.query_drop(edxapp_insert(7, "second")).await.unwrap();
    edxapp.query_drop("COMMIT").await.unwrap();
    let states: Vec<String> = extended_rows(&site).await.into_iter().map(|r| r.2).collect();
    assert_eq!(states, vec!["first", "second"], "the whole transaction wrote the table it began with");
    let in_old: Option<u64> = site
        .root()
        .await
        .query_first(format!("SELECT COUNT(*) FROM {} WHERE student_module_id = 7", site.old()))
        .await
        .unwrap();
    assert_eq!(in_old, Some(0));
    edxapp.query_drop(edxapp_insert(7, "after")).await.unwrap();
    edxapp.query_drop("COMMIT").await.unwrap();
    assert_eq!(extended_rows(&site).await.len(), 2, "the next transaction follows the new flags");
}

#[tokio::test]
async fn a_deadlock_on_the_csmh_server_rolls_the_clients_edxapp_side_back_too() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut victim = site.edxapp().await;
    victim.query_drop(edxapp_insert(1, "x")).await.unwrap();
    victim.query_drop(edxapp_insert(2, "y")).await.unwrap();
    let ids: Vec<u64> = extended_rows(&site).await.into_iter().map(|r| r.0).collect();
    let (x, y) = (ids[0], ids[1]);
    let update = |id: u64, grade: u8| format!("UPDATE {OLD} SET grade = {grade} WHERE id = {id}");
    victim.query_drop("BEGIN").await.unwrap();
    victim.query_drop("INSERT INTO auth_user (id, username) VALUES (79, 'deadlocked')").await.unwrap();
    victim.query_drop(update(x, 5)).await.unwrap();

    // The other transaction, on the csmh server, does more work, so InnoDB picks the proxy's connection there.
    let mut other = site.csmh_root().await;
    let extended = site.extended();
    other.query_drop(format!("USE {}", site.dbs.csmh_db)).await.unwrap();
    other.query_drop("BEGIN").await.unwrap();
    other
        .query_drop(format!(
            "INSERT INTO {extended} (created, state, student_module_id) SELECT NOW(6), 's', 1000 + seq FROM seq_1_to_200"
        ))
        .await
        .unwrap();
    other.query_drop(format!("UPDATE {extended} SET grade = 2 WHERE id = {y}")).await.unwrap();
    let blocked = tokio::spawn(async move {
        let result = other.query_drop(format!("UPDATE {extended} SET grade = 2 WHERE id = {x}")).await;
        (other, result)
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (code, _) = server_error(victim.query_drop(update(y, 5)).await);
    assert_eq!(code, 1213, "the proxy's csmh connection is the deadlock victim");
    let (mut other, result) = blocked.await.unwrap();
    result.unwrap();
    other.query_drop("ROLLBACK").await.unwrap();
    let user: Option<String> = victim.query_first("SELECT username FROM auth_user WHERE id = 79").await.unwrap();
    assert_eq!(user, None, "the whole transaction was rolled back, as one server would have done");
    victim.query_drop("COMMIT").await.unwrap();
    let grades: Vec<Option<f64>> = site
        .csmh_root()
        .await
        .query(format!("SELECT grade FROM {} WHERE id IN ({x}, {y})", site.extended()))
        .await
        .unwrap();
    assert_eq!(grades, vec![Some(1.0), Some(1.0)], "nothing of the transaction was committed on csmh");
}

#[tokio::test]
async fn a_subquerys_strings_are_written_for_the_csmh_server_as_the_clients_sql_mode_reads_them() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let rows = "(id, version, created, state, grade, max_grade, student_module_id) VALUES \
                (990001, NULL, '2024-05-01 00:00:00', 'it''s', 0, 1, 990001), \
                (990002, NULL, '2024-05-01 00:00:00', 'a\\\\b', 0, 1, 990002)";
    site.csmh_root().await.query_drop(format!("INSERT INTO {} {rows}", site.extended())).await.unwrap();
    let mut edxapp = site.edxapp().await;
    let of_state = |subquery: &str| {
        format!("SELECT `{OLD}`.`id` FROM `{OLD}` WHERE `{OLD}`.`state` IN ({subquery}) ORDER BY `{OLD}`.`id`")
    };
    let read = async |conn: &mut Conn, subquery: &str| -> Vec<u64> {
        conn.query(of_state(subquery)).await.unwrap_or_else(|e| panic!("{subquery}: {e}"))
    };
    assert_eq!(read(&mut edxapp, r"SELECT 'it\'s'").await, [990001]);
    assert_eq!(read(&mut edxapp, r"SELECT 'a\\b'").await, [990002]);
    assert_eq!(read(&mut edxapp, r"SELECT 'it\'s' FROM DUAL UNION ALL SELECT 'a\\b'").await, [990001, 990002]);

    // Under NO_BACKSLASH_ESCAPES a backslash is an ordinary character: the values go to the csmh server as the
    // client wrote them, whose session has the client's sql_mode (checked: 1064, then no rows, before).
    edxapp.query_drop("SET SESSION sql_mode = CONCAT(@@session.sql_mode, ',NO_BACKSLASH_ESCAPES')").await.unwrap();
    assert_eq!(read(&mut edxapp, "SELECT 'it''s'").await, [990001]);
    assert_eq!(read(&mut edxapp, r"SELECT 'a\b'").await, [990002]);
    assert_eq!(read(&mut edxapp, r"SELECT 'it''s' FROM DUAL UNION ALL SELECT 'a\b'").await, [990001, 990002]);
}

#[tokio::test]
async fn a_subquery_answer_too_large_to_write_in_is_refused_without_being_held() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    // 2,000 values of 100 kB: 200 MB of answer from the edxapp server.
    let huge = format!(
        "SELECT `{OLD}`.`id` FROM `{OLD}` WHERE `{OLD}`.`state` IN (SELECT REPEAT('x', 100000) FROM seq_1_to_2000)"
    );
    let pid = std::process::id();
    support::memory::reset_own_peak();
    let resident = support::memory::status_kib(pid, "VmRSS");
    let (code, message) = server_error(edxapp.query_drop(&huge).await);
    let grown_mib = support::memory::status_kib(pid, "VmHWM").saturating_sub(resident) >> 10;
    assert_eq!(code, 1235, "{message}");
    assert!(message.contains("an answer larger than 2 MiB"), "{message}");
    // The proxy runs in this process (checked: it grew by 1,025 MiB before, and the client lost its connection).
    assert!(grown_mib < 100, "the proxy's memory grew by {grown_mib} MiB reading a subquery's answer");
    let one: Option<u8> = edxapp.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the connection goes on");
}

/// Makes `statement`, sent through `victim`, a deadlock victim on the edxapp server, and returns its error code.
/// The victim first begins a transaction, writes a history row and updates user 1; another transaction, which
/// does more work so that InnoDB picks the victim, runs `held` and then waits for user 1 (it commits at the
/// end). `statement` must wait for what `held` locked.
async fn deadlock_on_edxapp(site: &Site, victim: &mut Conn, held: &str, statement: &str) -> u16 {
    victim.query_drop("BEGIN").await.unwrap();
    victim.query_drop(edxapp_insert(1, "lost in a deadlock")).await.unwrap();
    victim.query_drop("UPDATE auth_user SET username = 'a1' WHERE id = 1").await.unwrap();
    let mut other = support::connect(site.dbs.edxapp.addr(), &support::app(), Some(&site.dbs.edxapp_db)).await;
    other.query_drop("BEGIN").await.unwrap();
    other
        .query_drop("INSERT INTO auth_user (id, username) SELECT 1000 + seq, CONCAT('u', seq) FROM seq_1_to_200")
        .await
        .unwrap();
    other.query_drop(held).await.unwrap();
    let blocked = tokio::spawn(async move {
        let result = other.query_drop("UPDATE auth_user SET username = 'b1' WHERE id = 1").await;
        (other, result)
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (code, _) = server_error(victim.query_drop(statement).await);
    let (mut other, result) = blocked.await.unwrap();
    result.unwrap();
    other.query_drop("COMMIT").await.unwrap();
    code
}

/// The username of user `id`, looked at directly on the edxapp server.
async fn username(site: &Site, id: u64) -> Option<String> {
    let sql = format!("SELECT username FROM `{}`.auth_user WHERE id = {id}", site.dbs.edxapp_db);
    site.root().await.query_first(sql).await.unwrap()
}

/// The states in the extended table, looked at directly on its server.
async fn extended_states(site: &Site) -> Vec<String> {
    extended_rows(site).await.into_iter().map(|row| row.2).collect()
}

#[tokio::test]
async fn a_query_whose_end_of_the_transaction_the_csmh_side_cannot_follow_is_refused_unrun() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("BEGIN").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "rolled back")).await.unwrap();
    // A rollback the proxy would not see before edxapp ran it, nor tell from a commit by the answer's status:
    // the csmh side would commit the row edxapp rolled back (checked: before, these queries ran).
    let refused = [
        "UPDATE auth_user SET username = 'a3' WHERE id = 3; ROLLBACK",
        "UPDATE auth_user SET username = 'a3' WHERE id = 3; SELECT 1",
        "XA ROLLBACK 'x'",
        "CALL nothing()",
    ];
    for sql in refused {
        let (code, message) = server_error(edxapp.query_drop(sql).await);
        assert_eq!(code, 1235, "{sql}: {message}");
        assert!(message.contains("COMMIT or ROLLBACK first"), "{message}");
    }
    // Read in the client's own transaction, which would see its own uncommitted UPDATE.
    let renamed: Option<String> = edxapp.query_first("SELECT username FROM auth_user WHERE id = 3").await.unwrap();
    assert_ne!(renamed.as_deref(), Some("a3"), "nothing of a refused query ran");
    edxapp.query_drop("ROLLBACK").await.unwrap();
    assert!(extended_states(&site).await.is_empty(), "the client's ROLLBACK rolled the csmh side back");
}

#[tokio::test]
async fn under_a_gbk_client_a_rollback_the_tokenizer_reads_in_a_string_is_refused_unrun() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("SET NAMES gbk").await.unwrap();
    edxapp.query_drop("BEGIN").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "rolled back")).await.unwrap();
    // gbk reads the last byte of `中` (E4 B8 AD in UTF-8) and the backslash as one character: the string ends at
    // the quote after it and the server runs the ROLLBACK the tokenizer reads in the string. Its answer's status
    // looks like a commit's, so the csmh side would commit the row (checked: before, it did).
    let (code, message) = server_error(edxapp.query_drop("SELECT '中\\'; ROLLBACK; -- '").await);
    assert_eq!(code, 1235, "{message}");
    assert!(message.contains("COMMIT or ROLLBACK first"), "{message}");
    edxapp.query_drop("ROLLBACK").await.unwrap();
    assert!(extended_states(&site).await.is_empty(), "the client's ROLLBACK rolled the csmh side back");
}

#[tokio::test]
async fn a_rollback_the_server_and_the_tokenizer_read_otherwise_is_refused_unrun() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("BEGIN").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "rolled back")).await.unwrap();
    // The server runs a ROLLBACK the tokenizer reads in a string (after the server's comment `--\x01`), or skips
    // one the tokenizer reads (a version above the server's): either way the two sides would part (checked:
    // before, the first committed the csmh side after edxapp's rollback, the second rolled it back alone).
    for hidden in ["SELECT 1 --\x01'\nROLLBACK -- '", "/*!999999 ROLLBACK */", "/*M!100000 ROLLBACK */"] {
        let (code, message) = server_error(edxapp.query_drop(hidden).await);
        assert_eq!(code, 1235, "{hidden:?}: {message}");
        assert!(message.contains("COMMIT or ROLLBACK first"), "{message}");
    }
    // Prepared, its executions would not be read at all.
    for hidden in ["\x0bROLLBACK", "--\x01\nROLLBACK"] {
        let (code, message) = server_error(edxapp.prep(hidden).await);
        assert_eq!(code, 1235, "{hidden:?}: {message}");
        assert!(message.contains("send them as text"), "{message}");
    }
    edxapp.query_drop("ROLLBACK").await.unwrap();
    assert!(extended_states(&site).await.is_empty(), "the client's ROLLBACK rolled the csmh side back");
}

#[tokio::test]
async fn with_autocommit_off_a_statement_that_commits_implicitly_commits_the_csmh_side() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("SET autocommit = 0").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "committed by CREATE TABLE")).await.unwrap();
    // The answer's status shows nothing of the commit: the next transaction has begun by then.
    edxapp.query_drop("CREATE TABLE made_in_a_transaction (a INT)").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "rolled back")).await.unwrap();
    edxapp.query_drop("ROLLBACK").await.unwrap();
    // Checked: before, the ROLLBACK took the committed row with it.
    assert_eq!(extended_states(&site).await, ["committed by CREATE TABLE"]);
}

#[tokio::test]
async fn a_begin_inside_a_transaction_commits_the_csmh_side_as_it_commits_edxapps() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("BEGIN").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "committed by the next BEGIN")).await.unwrap();
    edxapp.query_drop("UPDATE auth_user SET username = 'b3' WHERE id = 3").await.unwrap();
    edxapp.query_drop("START TRANSACTION").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "rolled back")).await.unwrap();
    edxapp.query_drop("ROLLBACK").await.unwrap();
    let renamed = username(&site, 3).await;
    assert_eq!(renamed.as_deref(), Some("b3"), "edxapp committed the first transaction");
    // Checked: before, the second transaction's ROLLBACK took the first one's history row with it.
    assert_eq!(extended_states(&site).await, ["committed by the next BEGIN"]);
}

#[tokio::test]
async fn a_deadlock_of_a_write_to_both_tables_rolls_the_whole_transaction_back_on_both_servers() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let old_row = site.old_ids().await[0];
    let mut victim = site.edxapp().await;
    // The proxy's write of the old row (the first of the UPDATE's two writes) is the deadlock victim.
    let held = format!("UPDATE `{OLD}` SET grade = 2 WHERE id = {old_row}");
    let both = format!("UPDATE `{OLD}` SET grade = 5 WHERE `{OLD}`.`id` = {old_row}");
    assert_eq!(deadlock_on_edxapp(&site, &mut victim, &held, &both).await, 1213);
    // A client may go on without ROLLBACK: the server has rolled its transaction back (checked: before, this
    // COMMIT committed the history row on the csmh server).
    victim.query_drop("COMMIT").await.unwrap();
    assert!(extended_states(&site).await.is_empty(), "the csmh side's insert went with the transaction");
    assert_eq!(username(&site, 1).await.as_deref(), Some("b1"));
}

#[tokio::test]
async fn statements_that_end_a_transaction_are_not_prepared_across_two_servers() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    // Executed in a transaction that reached the csmh server, the csmh side could not follow them (checked:
    // before, they were prepared).
    for sql in ["COMMIT", "ROLLBACK", "SAVEPOINT s", "BEGIN", "CREATE TABLE prepared_ddl (a INT)"] {
        let (code, message) = server_error(edxapp.prep(sql).await);
        assert_eq!(code, 1235, "{sql}: {message}");
        assert!(message.contains("send them as text"), "{message}");
    }
    let one: Option<u8> = edxapp.exec_first("SELECT ?", (1,)).await.unwrap();
    assert_eq!(one, Some(1), "other statements are prepared as ever");

    let one_server = Site::new(Stage::ExtendedTableOnlyReads.flags()).await;
    one_server.edxapp().await.exec_drop("COMMIT", ()).await.expect("on one server there is no csmh side to follow");
    let flags_off = Site::two_servers(Stage::OldTableOnly.flags()).await;
    flags_off.edxapp().await.exec_drop("COMMIT", ()).await.expect("with every flag off nothing reaches csmh");
}

#[tokio::test]
async fn a_subquerys_value_cannot_end_its_literal_early_in_a_multi_byte_character_set() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(edxapp_insert(1, "one")).await.unwrap();
    edxapp.query_drop(edxapp_insert(2, "two")).await.unwrap();
    edxapp.query_drop("SET NAMES gbk").await.unwrap();
    // 0xBF 0x5C is one gbk character; byte by byte, its 0x5C and the quote after it were escaped as 0x5C 0x5C
    // 0x5C 0x27, which gbk reads as that character, an escaped backslash, and a quote ending the literal, so that
    // ` OR 1=1 -- ` was SQL on the csmh server (checked: before, both rows came back).
    let injected = format!(
        "SELECT `{OLD}`.`id` FROM `{OLD}` WHERE `{OLD}`.`state` IN \
         (SELECT CONVERT(0xBF5C27204F5220313D31202D2D20 USING gbk))"
    );
    let ids: Vec<u64> = edxapp.query(&injected).await.unwrap();
    assert!(ids.is_empty(), "the value is one string, which no state equals: {ids:?}");
}
