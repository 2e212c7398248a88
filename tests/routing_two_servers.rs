//! Routing with the extended table on its own server: the proxy's own `csmh` connection, the client's session
//! settings replayed on it, writes to both servers kept atomic, and the client's transactions mirrored.

mod support;

use mysql_async::Conn;
use mysql_async::prelude::*;
use support::EdxDatabases;
use support::edx::*;

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
    let site = Site::two_servers(flags(true, false, false)).await;
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
    let site = Site::two_servers(flags(true, false, false)).await;
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
async fn the_clients_session_settings_apply_on_the_csmh_server() {
    let site = Site::two_servers(flags(true, false, false)).await;
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
async fn transactions_span_both_servers() {
    let site = Site::two_servers(flags(true, false, false)).await;
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

#[tokio::test]
async fn a_csmh_commit_failure_rolls_the_client_back_and_is_reported() {
    let site = Site::two_servers(flags(true, false, false)).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("BEGIN").await.unwrap();
    edxapp.query_drop("INSERT INTO auth_user (id, username) VALUES (99, 'dora')").await.unwrap();
    edxapp.query_drop(edxapp_insert(5, "{}")).await.unwrap();
    let mut csmh_root = support::root_conn(&site.dbs.csmh).await;
    let threads: Vec<u64> = csmh_root
        .query(format!("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = '{}'", site.dbs.csmh_db))
        .await
        .unwrap();
    assert_eq!(threads.len(), 1, "one csmh connection for the session");
    csmh_root.query_drop(format!("KILL {}", threads[0])).await.unwrap();
    let (code, message) = server_error(edxapp.query_drop("COMMIT").await);
    assert_eq!(code, 2013, "{message}");
    let dora: Option<String> = edxapp.query_first("SELECT username FROM auth_user WHERE id = 99").await.unwrap();
    assert_eq!(dora, None, "the edxapp side of the transaction was rolled back, not committed alone");
    assert!(extended_rows(&site).await.is_empty());
    edxapp.query_drop(edxapp_insert(5, "after")).await.unwrap();
    assert_eq!(extended_rows(&site).await.len(), 1, "a new csmh connection serves the next statement");
}

#[tokio::test]
async fn an_unreachable_csmh_server_is_an_error_for_the_statement_only() {
    let dbs = EdxDatabases::fresh_two_servers().await;
    dbs.create_edx_schema(false).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut toml = dbs.proxy_toml(flags(true, false, false));
    toml.csmh = closed;
    let proxy = support::start_proxy(toml.config().unwrap()).await;
    let mut edxapp = Conn::new(dbs.proxy_opts(&proxy, &support::app())).await.unwrap();
    let (code, message) = server_error(edxapp.query_drop(edxapp_insert(1, "{}")).await);
    assert_eq!(code, 2013);
    assert!(message.contains("csmh"), "{message}");
    let one: Option<i64> = edxapp.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
}

#[tokio::test]
async fn reading_both_tables_across_servers_is_refused_until_merged() {
    let site = Site::two_servers(flags(true, true, false)).await;
    let mut edxapp = site.edxapp().await;
    let (code, _) = server_error(edxapp.query_drop(format!("SELECT * FROM `{OLD}`")).await);
    assert_eq!(code, 1235);
}
