//! The client's own grants decide what it may do to history, whatever table serves it. Across two servers the
//! extended table is reached over the proxy's own `csmh` login; an `edxapp` account without rights on the old
//! table must still be refused there, with the error the `edxapp` server gives (1142), and an account with
//! rights must keep them, also after COM_CHANGE_USER switches between the two.

mod support;

use csmh_proxy::backend::{Credentials, LOGIN_CAPABILITIES};
use csmh_proxy::history::Stage;
use csmh_proxy::protocol::response::Expect;
use csmh_proxy::server::ProxyHandle;
use mysql_async::prelude::*;
use mysql_async::{ChangeUserOpts, Conn, Opts};
use mysql_common::constants::MariadbCapabilities;
use support::Account;
use support::edx::*;
use support::raw::RawClient;
use support::statements::*;

/// An account on the `edxapp` server with `grants` (`SELECT ON {db}.table` and the like, `{db}` standing for
/// the test's database) and nothing else.
async fn limited_account(site: &Site, name: &str, grants: &[&str]) -> Account {
    let account = Account::native(&format!("{name}_{}", site.dbs.edxapp_db), "limited-password");
    site.dbs.edxapp.create_account(&account, &[]).await.unwrap();
    let mut root = site.root().await;
    for grant in grants {
        let grant = grant.replace("{db}", &site.dbs.edxapp_db);
        root.query_drop(format!("GRANT {grant} TO '{}'@'%'", account.user)).await.unwrap();
    }
    account
}

fn opts(site: &Site, account: &Account) -> Opts {
    site.dbs.proxy_opts(&site.proxy, account)
}

fn change_to(account: &Account) -> ChangeUserOpts {
    ChangeUserOpts::default().with_user(Some(account.user.clone())).with_pass(Some(account.password.clone()))
}

async fn count_extended(conn: &mut Conn) -> Result<Option<u64>, mysql_async::Error> {
    conn.query_first(format!("SELECT COUNT(*) FROM `{OLD}` WHERE `{OLD}`.`student_module_id` = 1")).await
}

#[tokio::test]
async fn an_account_without_rights_on_the_old_table_is_refused_on_the_extended_table_too() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let account = limited_account(&site, "modules_only", &["SELECT ON {db}.courseware_studentmodule"]).await;
    let mut conn = Conn::new(opts(&site, &account)).await.unwrap();
    let (code, message) = server_error(conn.query_drop(edxapp_insert(1, "not allowed")).await);
    assert_eq!(code, 1142, "{message}");
    assert!(message.contains("INSERT command denied") && message.contains(OLD), "the server's own words: {message}");
    let (code, message) = server_error(count_extended(&mut conn).await);
    assert_eq!(code, 1142, "{message}");
    let (code, _) = server_error(conn.exec_drop(edxapp_insert(1, "prepared"), ()).await);
    assert_eq!(code, 1142, "a prepared statement is checked too");
    assert!(site.extended_ids().await.is_empty(), "nothing was written");
    let modules: Option<u64> = conn.query_first("SELECT COUNT(*) FROM courseware_studentmodule").await.unwrap();
    assert!(modules.is_some(), "what the account may do, it does");
}

#[tokio::test]
async fn on_one_server_an_account_without_rights_gets_the_servers_refusal_not_the_id_check() {
    // Before the first INSERT into the extended table the proxy checks, on the client's own connection here, that
    // the extended table's ids start above the old table's: what the account may not read is not a failed check.
    let grants: [(&str, &[&str]); 2] = [
        ("no_history", &["SELECT ON {db}.courseware_studentmodule"]),
        ("old_history_only", &["SELECT, INSERT ON {db}.courseware_studentmodulehistory"]),
    ];
    for (name, grants) in grants {
        let site = Site::new(Stage::ExtendedTableReadingBoth.flags()).await;
        let account = limited_account(&site, name, grants).await;
        let mut conn = Conn::new(opts(&site, &account)).await.unwrap();
        let (code, message) = server_error(conn.query_drop(edxapp_insert(1, "not allowed")).await);
        assert_eq!(code, 1142, "{name}: {message}");
        assert!(message.contains("command denied"), "{name}: the server's own words: {message}");
        site.edxapp().await.query_drop(edxapp_insert(1, "by the app")).await.expect("the app's INSERT");
        assert_eq!(site.extended_ids().await.len(), 1, "{name}: only the app's row was written");
    }
}

#[tokio::test]
async fn an_account_keeps_exactly_the_rights_it_has_on_the_old_table() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut app = site.edxapp().await;
    app.query_drop(edxapp_insert(1, "by the app")).await.unwrap();
    let reader = limited_account(&site, "history_reader", &[&format!("SELECT ON {{db}}.{OLD}")]).await;
    let mut conn = Conn::new(opts(&site, &reader)).await.unwrap();
    assert_eq!(count_extended(&mut conn).await.unwrap(), Some(1), "reading is allowed");
    assert_eq!(count_extended(&mut conn).await.unwrap(), Some(1), "and stays allowed");
    let (code, message) = server_error(conn.query_drop(edxapp_insert(1, "not allowed")).await);
    assert_eq!(code, 1142, "{message}");
    let (code, _) = server_error(conn.query_drop(edxapp_insert(1, "still not allowed")).await);
    assert_eq!(code, 1142, "a refusal is not forgotten");
    assert_eq!(site.extended_ids().await.len(), 1);
}

#[tokio::test]
async fn a_change_of_user_forgets_what_the_previous_user_was_allowed() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let limited = limited_account(&site, "changed_to", &["SELECT ON {db}.courseware_studentmodule"]).await;
    let mut conn = site.edxapp().await;
    conn.query_drop(edxapp_insert(1, "as the app")).await.unwrap();
    conn.change_user(change_to(&limited)).await.unwrap();
    let (code, message) = server_error(conn.query_drop(edxapp_insert(1, "as the limited account")).await);
    assert_eq!(code, 1142, "{message}");
    conn.change_user(change_to(&support::app())).await.unwrap();
    conn.query_drop(edxapp_insert(1, "as the app again")).await.unwrap();
    assert_eq!(site.extended_ids().await.len(), 2);
}

#[tokio::test]
async fn reads_and_writes_of_both_tables_are_refused_without_rights_on_the_old_table() {
    let site = Site::two_servers(Stage::ExtendedTableReadingBoth.flags()).await;
    site.edxapp().await.query_drop(edxapp_insert(1, "new")).await.unwrap();
    let (old, extended) = (site.old_ids().await.len(), site.extended_ids().await.len());
    let account = limited_account(&site, "both_tables", &["SELECT ON {db}.courseware_studentmodule"]).await;
    let mut conn = Conn::new(opts(&site, &account)).await.unwrap();
    let (code, message) = server_error(conn.query_drop(edxapp_read("1")).await);
    assert_eq!(code, 1142, "{message}");
    let (code, message) = server_error(conn.query_drop(edxapp_delete("1")).await);
    assert_eq!(code, 1142, "{message}");
    let (code, _) = server_error(conn.exec_drop(edxapp_read("1"), ()).await);
    assert_eq!(code, 1142, "a prepared read of both tables");
    assert_eq!((site.old_ids().await.len(), site.extended_ids().await.len()), (old, extended), "nothing deleted");
}

async fn prepares_on(server: &support::MariaDb) -> u64 {
    let mut root = support::root_conn(server).await;
    let row: Option<(String, u64)> = root.query_first("SHOW GLOBAL STATUS LIKE 'Com_stmt_prepare'").await.unwrap();
    row.map(|(_, n)| n).unwrap_or_default()
}

#[tokio::test]
async fn an_accounts_check_is_shared_by_its_connections_and_a_refusal_is_not_remembered() {
    let site = Site::private_two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let before = prepares_on(&site.dbs.edxapp).await;
    site.edxapp().await.query_drop(edxapp_insert(1, "first request")).await.unwrap();
    let after_first = prepares_on(&site.dbs.edxapp).await;
    assert_eq!(after_first - before, 1, "the first statement of its kind is checked");
    for request in 0..3 {
        // edxapp opens a connection per web request.
        site.edxapp().await.query_drop(edxapp_insert(1, &format!("request {request}"))).await.unwrap();
    }
    assert_eq!(prepares_on(&site.dbs.edxapp).await, after_first, "later connections of the account are not");

    let account = limited_account(&site, "granted_later", &["SELECT ON {db}.courseware_studentmodule"]).await;
    let mut conn = Conn::new(opts(&site, &account)).await.unwrap();
    let (code, _) = server_error(conn.query_drop(edxapp_insert(1, "refused")).await);
    assert_eq!(code, 1142);
    let grant = format!("GRANT INSERT ON {}.{OLD} TO '{}'@'%'", site.dbs.edxapp_db, account.user);
    site.root().await.query_drop(grant).await.unwrap();
    conn.query_drop(edxapp_insert(1, "granted")).await.unwrap();
    assert_eq!(site.extended_ids().await.len(), 5);
}

/// An account with every right on a database of its own, where it made a table named like the old table, and
/// a connection through the proxy in that database: the unqualified name means its own table to the server,
/// and the old table to the router, which does not follow the session's database.
async fn account_with_a_table_of_the_same_name(site: &Site) -> Conn {
    let scratch = format!("{}_scratch", site.dbs.edxapp_db);
    let mut root = site.root().await;
    root.query_drop(format!("CREATE DATABASE `{scratch}`")).await.unwrap();
    root.query_drop(format!("CREATE TABLE `{scratch}`.`{OLD}` LIKE {}", site.old())).await.unwrap();
    let eve = limited_account(site, "eve", &[&format!("ALL ON `{scratch}`.*")]).await;
    let opts = mysql_async::OptsBuilder::from_opts(opts(site, &eve)).db_name(Some(scratch));
    Conn::new(opts).await.unwrap()
}

#[tokio::test]
async fn a_table_named_like_the_old_one_in_another_database_grants_nothing_on_the_history() {
    // Checked: before, the grant check prepared the client's text, which the server read as the account's own
    // table, and the account read the learner's history from the extended table over the proxy's csmh login.
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    site.edxapp().await.query_drop(edxapp_insert(1, "learner state")).await.unwrap();
    let mut eve = account_with_a_table_of_the_same_name(&site).await;
    let (code, message) = server_error(count_extended(&mut eve).await);
    assert_eq!(code, 1142, "{message}");
    assert!(message.contains(&site.dbs.edxapp_db), "the old table's grants, not the account's table's: {message}");

    let site = Site::two_servers(Stage::ExtendedTableReadingBoth.flags()).await;
    site.edxapp().await.query_drop(edxapp_insert(1, "learner state")).await.unwrap();
    let mut eve = account_with_a_table_of_the_same_name(&site).await;
    let (code, message) = server_error(count_extended(&mut eve).await);
    assert_eq!(code, 1142, "a merged read's old side is the old table: {message}");
    let (code, message) = server_error(eve.query_drop(format!("DELETE FROM `{OLD}`")).await);
    assert_eq!(code, 1142, "so is a write's: {message}");
    // Prepared too (checked: before, the prepared DELETE's old side was the client's text, its own table, and
    // the extended table's rows went).
    let (code, message) =
        server_error(eve.exec_drop(format!("DELETE FROM `{OLD}` WHERE `{OLD}`.`id` > ?"), (0,)).await);
    assert_eq!(code, 1142, "so is a prepared write's: {message}");
    assert_eq!(site.extended_ids().await.len(), 1, "nothing was deleted");
}

/// What PyMySQL, with the connection's character set latin1 (in which it also sends the user name), reports of
/// logging in to the proxy as `account` and running `sql`.
async fn latin1_client_sees(site: &Site, account: &Account, sql: &str) -> Vec<serde_json::Value> {
    let python = support::clients::blocking(|| {
        support::packages::MYSQLCLIENT.python_with(&["PyMySQL==1.1.1"], "import MySQLdb, pymysql")
    })
    .await;
    let options = [
        format!("--user={}", account.user),
        format!("--password={}", account.password),
        format!("--database={}", site.dbs.edxapp_db),
        "--charset=latin1".to_owned(),
    ];
    support::clients::python_client_sees(python, "pymysql", site.proxy.addr(), &options, &[sql]).await
}

#[tokio::test]
async fn accounts_whose_names_differ_in_bytes_utf8_cannot_read_are_two_accounts() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    site.edxapp().await.query_drop(edxapp_insert(1, "learner history")).await.unwrap();
    let reader = limited_account(&site, "caf\u{e9}", &["SELECT ON {db}.courseware_studentmodulehistory"]).await;
    let stranger = limited_account(&site, "caf\u{e8}", &["SELECT ON {db}.courseware_studentmodule"]).await;
    let read = format!("SELECT COUNT(*) FROM `{OLD}` WHERE `{OLD}`.`student_module_id` = 1");
    let refused = |steps: &[serde_json::Value]| steps.last().is_some_and(|step| step["code"] == 1142);
    let steps = latin1_client_sees(&site, &stranger, &read).await;
    assert!(refused(&steps), "no rights on the old table: {steps:?}");
    let steps = latin1_client_sees(&site, &reader, &read).await;
    assert_eq!(steps.last().unwrap()["rows"], serde_json::json!([["1"]]), "{steps:?}");
    let steps = latin1_client_sees(&site, &stranger, &read).await;
    assert!(refused(&steps), "the reader's verdict is not the stranger's: {steps:?}");
}

/// A proxy in front of `site` that remembers no verdict on grants (`grants_valid_secs = 0`): every execution is
/// checked.
async fn proxy_checking_every_execution(site: &Site) -> ProxyHandle {
    let mut config = site.dbs.proxy_toml(Stage::ExtendedTableOnlyReads.flags()).config().unwrap();
    config.backends.csmh.grants_valid_secs = Some(0);
    support::start_proxy(config).await
}

/// Revokes `right` on the old table from `account`.
async fn revoke(site: &Site, right: &str, account: &Account) {
    let revoke = format!("REVOKE {right} ON `{}`.{OLD} FROM '{}'@'%'", site.dbs.edxapp_db, account.user);
    site.root().await.query_drop(revoke).await.unwrap();
}

#[tokio::test]
async fn a_statement_prepared_before_a_revoke_is_refused_when_the_grants_are_checked_again() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    site.edxapp().await.query_drop(edxapp_insert(1, "learner history")).await.unwrap();
    let proxy = proxy_checking_every_execution(&site).await;
    let reader = limited_account(&site, "prepared_reader", &["SELECT ON {db}.courseware_studentmodulehistory"]).await;
    let mut conn = Conn::new(site.dbs.proxy_opts(&proxy, &reader)).await.unwrap();
    let read = format!("SELECT COUNT(*) FROM `{OLD}` WHERE `{OLD}`.`student_module_id` = ?");
    let read = conn.prep(read).await.unwrap();
    let count: Option<u64> = conn.exec_first(&read, (1,)).await.unwrap();
    assert_eq!(count, Some(1), "allowed");
    revoke(&site, "SELECT", &reader).await;
    let (code, message) = server_error(conn.exec_first::<u64, _, _>(&read, (1,)).await);
    assert_eq!(code, 1142, "the execution checks the grants as the server would: {message}");
}

#[tokio::test]
async fn a_batch_of_a_statement_prepared_before_a_revoke_is_refused_too() {
    // Checked: before, only COM_STMT_EXECUTE checked the grants again, and the batch (COM_STMT_BULK_EXECUTE) of the
    // same statement still inserted.
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let proxy = proxy_checking_every_execution(&site).await;
    // SELECT too, for the proxy's check that the extended table's ids start above the old table's.
    let writer = limited_account(&site, "batch_writer", &[&format!("SELECT, INSERT ON {{db}}.{OLD}")]).await;
    let credentials = Credentials {
        user: writer.user.clone(),
        password: Some(writer.password.clone()),
        database: Some(site.dbs.edxapp_db.clone()),
    };
    let bulk = MariadbCapabilities::MARIADB_CLIENT_STMT_BULK_OPERATIONS;
    let mut raw = RawClient::connect_mariadb(&proxy.addr().to_string(), &credentials, LOGIN_CAPABILITIES, bulk).await;
    let id = prepare(&mut raw, &edxapp_prepared_insert()).await;
    let batch = |state| bulk_execute(id, &[vec![Some(state)], vec![Some(state)]]);
    let allowed = raw.command(&batch("allowed"), Expect::ResultSets).await;
    assert_eq!(affected_rows(payloads(&allowed)[0]), 2, "allowed");
    revoke(&site, "INSERT", &writer).await;
    let executed = raw.command(&execute_text(id, &[Param::Text("revoked")]), Expect::ResultSets).await;
    assert_eq!(error_of(&executed).0, 1142, "an execution is refused");
    let batched = raw.command(&batch("revoked"), Expect::ResultSets).await;
    let (code, message) = error_of(&batched);
    assert_eq!(code, 1142, "and so is a batch, as the server would refuse it: {message}");
    assert!(site.extended_ids_with_state("revoked").await.is_empty(), "nothing was inserted after the revoke");
}
