//! Connections to a separate `csmh` server kept between client sessions (`[backends.csmh] keep_idle`,
//! docs/reliability.md "Connections kept between sessions"): edxapp opens a connection per request, and each
//! request that touches the history would otherwise open its own connection to the `csmh` server. Which server
//! connection ran a session's history read is read from the `csmh` server's general log: the read carries a
//! marker in a comment, which the proxy's rewrite keeps.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use csmh_proxy::history::Stage;
use csmh_proxy::server::ProxyHandle;
use mysql_async::prelude::*;
use support::edx::{Site, edxapp_insert};

/// The id of the `csmh` server connection a new client session's history read runs on; the session then quits.
async fn csmh_connection_of_a_new_session(site: &Site) -> u64 {
    csmh_connection_of(site, site.edxapp().await).await
}

/// The id of the `csmh` server connection `client`'s history read runs on; the client then quits.
async fn csmh_connection_of(site: &Site, mut client: mysql_async::Conn) -> u64 {
    let (_, connection) = time_zone_and_connection(site, &mut client).await;
    client.disconnect().await.expect("quit");
    connection
}

/// The time zone and the id of the `csmh` server connection `client`'s history read runs on (the stage reads the
/// extended table only): the read is marked, and the `csmh` server's general log says which connection ran it.
async fn time_zone_and_connection(site: &Site, client: &mut mysql_async::Conn) -> (String, u64) {
    static READS: AtomicU64 = AtomicU64::new(0);
    let marker = format!("read {} of {}", READS.fetch_add(1, Ordering::Relaxed), site.dbs.csmh_db);
    let mut root = site.csmh_root().await;
    // Set only once: the settings tests count the server's SET statements.
    let logging: Option<bool> = root.query_first("SELECT @@general_log AND @@log_output = 'TABLE'").await.unwrap();
    if logging != Some(true) {
        root.query_drop("SET GLOBAL log_output = 'TABLE', general_log = ON").await.expect("the general log");
    }
    let row: Option<(String, u64)> = client
        .query_first(format!(
            "SELECT @@session.time_zone, COUNT(*) FROM courseware_studentmodulehistory /* {marker} */"
        ))
        .await
        .expect("a read on the csmh server");
    let (time_zone, _) = row.expect("a count has a row");
    let ran_it = "SELECT thread_id FROM mysql.general_log WHERE command_type = 'Query' AND thread_id <> CONNECTION_ID() \
                  AND argument LIKE ?";
    let connection: Option<u64> = root.exec_first(ran_it, (format!("%{marker}%"),)).await.expect("the general log");
    (time_zone, connection.expect("the csmh server logged the read"))
}

/// Waits until the proxy keeps `n` connections to the `csmh` server (a session's connection is reset by the
/// server before it is kept, after the session ended).
async fn wait_until_kept(proxy: &ProxyHandle, n: usize) {
    for _ in 0..500 {
        if proxy.shared().csmh_pool.len() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the proxy keeps {} csmh connections, not {n}", proxy.shared().csmh_pool.len());
}

#[tokio::test]
async fn sessions_one_after_another_run_on_one_csmh_connection() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let first = csmh_connection_of_a_new_session(&site).await;
    for _ in 0..4 {
        wait_until_kept(&site.proxy, 1).await;
        assert_eq!(csmh_connection_of_a_new_session(&site).await, first, "the next session reuses the connection");
    }
    let kept = site.proxy.shared().metrics.kept().clone();
    assert_eq!((kept.reused.get(), kept.lost.get()), (4, 0));
    assert_eq!(site.proxy.shared().metrics.connections_by_transport("csmh", false), 1, "one csmh login");
}

#[tokio::test]
async fn with_keep_idle_0_every_session_opens_its_own_csmh_connection() {
    let dbs = support::EdxDatabases::fresh_two_servers().await;
    dbs.create_edx_schema(true).await;
    let mut config = dbs.proxy_toml(Stage::ExtendedTableOnlyReads.flags()).config().expect("the fixture's config");
    config.backends.csmh.keep_idle = Some(0);
    let site = Site { proxy: support::start_proxy(config).await, first_extended_id: 0, dbs };
    let first = csmh_connection_of_a_new_session(&site).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_ne!(csmh_connection_of_a_new_session(&site).await, first);
    assert!(site.proxy.shared().csmh_pool.is_empty());
    assert_eq!(site.proxy.shared().metrics.connections_by_transport("csmh", false), 2);
}

#[tokio::test]
async fn a_transaction_a_session_left_open_is_rolled_back_not_committed_by_the_next_session() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut client = site.edxapp().await;
    client.query_drop("BEGIN").await.expect("BEGIN");
    client.query_drop(edxapp_insert(1, "left open")).await.expect("a history write in the transaction");
    client.disconnect().await.expect("quit without COMMIT");
    wait_until_kept(&site.proxy, 1).await;

    // The next session's statements run in autocommit on the same connection: had the transaction stayed open
    // there, they would have run inside it.
    let mut next = site.edxapp().await;
    next.query_drop(edxapp_insert(2, "committed")).await.expect("a history write in autocommit");
    next.disconnect().await.expect("quit");
    assert_eq!(site.proxy.shared().metrics.kept().reused.get(), 1, "the second session reused the connection");

    let states: Vec<String> = site
        .csmh_root()
        .await
        .query(format!("SELECT state FROM {} WHERE state IN ('left open', 'committed')", site.extended()))
        .await
        .expect("the extended table");
    assert_eq!(states, ["committed"], "the first session's row was rolled back with its transaction");
}

#[tokio::test]
async fn a_kept_connection_the_server_closed_is_replaced() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let first = csmh_connection_of_a_new_session(&site).await;
    wait_until_kept(&site.proxy, 1).await;
    site.csmh_root().await.query_drop(format!("KILL {first}")).await.expect("KILL the kept connection");

    let next = csmh_connection_of_a_new_session(&site).await;
    assert_ne!(next, first, "a new connection");
    let kept = site.proxy.shared().metrics.kept().clone();
    assert_eq!((kept.reused.get(), kept.lost.get()), (0, 1));
}

#[tokio::test]
async fn a_reload_closes_the_connections_kept_under_the_configuration_before() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let first = csmh_connection_of_a_new_session(&site).await;
    wait_until_kept(&site.proxy, 1).await;
    let config = site.proxy.shared().snapshot().config.clone();
    site.proxy.shared().replace(config).expect("a reload");

    assert_ne!(csmh_connection_of_a_new_session(&site).await, first, "a connection of the new configuration");
    assert_eq!(site.proxy.shared().metrics.kept().discarded.get(), 1);
}

#[tokio::test]
async fn a_session_cannot_leave_a_user_variable_on_a_kept_connection() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut client = site.edxapp().await;
    let set = client.query_drop("SELECT @kept := 42, COUNT(*) FROM courseware_studentmodulehistory").await;
    let (code, _) = support::edx::server_error(set);
    assert_eq!(code, 1235, "a variable is the client's session's, never the proxy's csmh connection's");
    client.disconnect().await.expect("quit");
}

#[tokio::test]
async fn a_stopped_proxy_keeps_no_connection() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    csmh_connection_of_a_new_session(&site).await;
    wait_until_kept(&site.proxy, 1).await;
    let shared = std::sync::Arc::clone(site.proxy.shared());
    site.proxy.shutdown().await.expect("a clean stop");
    assert!(shared.csmh_pool.is_empty());
    assert_eq!(shared.metrics.kept().discarded.get(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_tls_connection_the_server_closed_is_replaced() {
    // A TLS connection is checked by looking at its socket only (a read would take TLS records from under the
    // session), and the next session has the same settings, so no step is sent on it before the client's
    // statement. The proxy's mode makes its csmh connections TLS; the server lets root in in plaintext, to KILL one.
    let pki = support::tls::TestPki::new("csmh-proxy test CA");
    let (edxapp_cert, csmh_cert) = (pki.localhost("edxapp"), pki.localhost("csmh"));
    let (edxapp, csmh) = tokio::join!(support::tls_server(&pki, &edxapp_cert), support::tls_server(&pki, &csmh_cert));
    let dbs = support::EdxDatabases::fresh_on(edxapp, csmh).await;
    dbs.create_edx_schema(true).await;
    let mut config = dbs.proxy_toml(Stage::ExtendedTableOnlyReads.flags()).config().expect("the fixture's config");
    config.backends.csmh.tls.mode = csmh_proxy::config::TlsMode::VerifyIdentity;
    config.backends.csmh.tls.ca = Some(pki.ca.clone());
    let site = Site { proxy: support::start_proxy(config).await, first_extended_id: 0, dbs };

    let first = csmh_connection_of_a_new_session(&site).await;
    wait_until_kept(&site.proxy, 1).await;
    site.csmh_root().await.query_drop(format!("KILL {first}")).await.expect("KILL the kept connection");

    let next = csmh_connection_of_a_new_session(&site).await;
    assert_ne!(next, first, "a new connection");
    let metrics = &site.proxy.shared().metrics;
    assert_eq!((metrics.kept().reused.get(), metrics.kept().lost.get()), (0, 1));
    assert_eq!(metrics.connections_by_transport("csmh", true), 2, "both over TLS");
}

#[tokio::test]
async fn a_kept_connection_goes_only_to_a_client_with_the_same_protocol_features() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    // edxapp's connection has CLIENT_FOUND_ROWS, which changes what an UPDATE's OK says: the csmh connection
    // logged in for it answers in that layout.
    let found_rows = csmh_connection_of_a_new_session(&site).await;
    wait_until_kept(&site.proxy, 1).await;
    let plain = mysql_async::OptsBuilder::from_opts(site.dbs.proxy_opts(&site.proxy, &support::app()));
    let other =
        csmh_connection_of(&site, mysql_async::Conn::new(plain).await.expect("a client without FOUND_ROWS")).await;
    assert_ne!(other, found_rows, "a client without CLIENT_FOUND_ROWS gets a connection of its own");
    wait_until_kept(&site.proxy, 2).await;
    assert_eq!(csmh_connection_of_a_new_session(&site).await, found_rows, "and edxapp's next session edxapp's");
}

/// The `csmh` server's global counters of `SET` statements, BEGINs, COMMITs and ROLLBACKs, read on `root`.
async fn transaction_and_set_counts(root: &mut mysql_async::Conn) -> [u64; 4] {
    let rows: Vec<(String, u64)> = root
        .query(
            "SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_set_option', 'Com_begin', 'Com_commit', 'Com_rollback')",
        )
        .await
        .expect("SHOW GLOBAL STATUS");
    let count = |name: &str| rows.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).expect(name).1;
    [count("Com_set_option"), count("Com_begin"), count("Com_commit"), count("Com_rollback")]
}

/// How much each of `after`'s counters grew since `before`.
fn grown(before: [u64; 4], after: [u64; 4]) -> [u64; 4] {
    std::array::from_fn(|i| after[i] - before[i])
}

#[tokio::test]
async fn the_next_session_with_the_same_settings_runs_its_statement_without_a_step_before_it() {
    // The servers are the test's own: their global counters count the proxy's statements only.
    let site = Site::private_two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let first = csmh_connection_of_a_new_session(&site).await;
    wait_until_kept(&site.proxy, 1).await;
    let mut root = site.csmh_root().await;
    let before = transaction_and_set_counts(&mut root).await;

    // Counted before the session quits: its connection is then reset and its settings applied again.
    let mut next = site.edxapp().await;
    assert_eq!(time_zone_and_connection(&site, &mut next).await.1, first, "the kept connection");
    let [set, begin, ..] = grown(before, transaction_and_set_counts(&mut root).await);
    assert_eq!((set, begin), (0, 0), "the settings of the session before were kept applied");
}

#[tokio::test]
async fn under_autocommit_off_a_kept_connection_mirrors_the_transaction_without_a_begin() {
    // edxapp under ATOMIC_REQUESTS: autocommit off, COMMIT or ROLLBACK at the end of the request.
    let site = Site::private_two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut client = site.edxapp().await;
    client.query_drop("SET autocommit = 0").await.expect("autocommit off");
    client.query_drop(edxapp_insert(1, "first request")).await.expect("a history write");
    client.query_drop("COMMIT").await.expect("COMMIT");
    client.disconnect().await.expect("quit");
    wait_until_kept(&site.proxy, 1).await;
    let mut root = site.csmh_root().await;
    let before = transaction_and_set_counts(&mut root).await;

    let mut next = site.edxapp().await;
    next.query_drop("SET autocommit = 0").await.expect("autocommit off");
    next.query_drop(edxapp_insert(1, "rolled back")).await.expect("a history write");
    next.query_drop("ROLLBACK").await.expect("ROLLBACK");
    next.query_drop(edxapp_insert(1, "committed")).await.expect("a history write in the next transaction");
    next.query_drop("COMMIT").await.expect("COMMIT");
    let counts = transaction_and_set_counts(&mut root).await;
    assert_eq!(site.proxy.shared().metrics.kept().reused.get(), 1, "the second session reused the connection");

    let states: Vec<String> = root
        .query(format!("SELECT state FROM {} WHERE student_module_id = 1 ORDER BY id", site.extended()))
        .await
        .expect("the extended table");
    assert_eq!(states, ["first request", "committed"], "the ROLLBACK reached the csmh server's transaction");
    let [set, begin, commit, rollback] = grown(before, counts);
    assert_eq!((set, begin), (0, 0), "the statements began the transactions, under the kept settings");
    assert_eq!((commit, rollback), (1, 1), "each transaction ended as the client's did");
}

#[tokio::test]
async fn a_kept_connection_with_the_sessions_settings_is_taken_before_a_newer_one() {
    let site = Site::private_two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    // Two sessions at once, one in a time zone of its own: two csmh connections, the other one kept last.
    let mut default = site.edxapp().await;
    let (default_zone, with_default) = time_zone_and_connection(&site, &mut default).await;
    let mut elsewhere = site.edxapp().await;
    elsewhere.query_drop("SET time_zone = '+05:00'").await.expect("a time zone of the session's");
    let (zone, with_elsewhere) = time_zone_and_connection(&site, &mut elsewhere).await;
    assert_eq!(zone, "+05:00", "the session's time zone reaches the csmh server");
    assert_ne!(with_elsewhere, with_default);
    default.disconnect().await.expect("quit");
    wait_until_kept(&site.proxy, 1).await;
    elsewhere.disconnect().await.expect("quit");
    wait_until_kept(&site.proxy, 2).await;
    let mut root = site.csmh_root().await;
    let before = transaction_and_set_counts(&mut root).await;

    let mut next = site.edxapp().await;
    let (zone, connection) = time_zone_and_connection(&site, &mut next).await;
    assert_eq!((zone, connection), (default_zone, with_default), "the older connection, with the default zone");
    let [set, ..] = grown(before, transaction_and_set_counts(&mut root).await);
    assert_eq!(set, 0, "its settings were in place");
    next.disconnect().await.expect("quit");
    wait_until_kept(&site.proxy, 2).await;

    let mut other = site.edxapp().await;
    other.query_drop("SET time_zone = '-03:00'").await.expect("a time zone no kept connection has");
    let (zone, connection) = time_zone_and_connection(&site, &mut other).await;
    assert_eq!(zone, "-03:00", "a kept connection's settings give way to the session's");
    assert!([with_default, with_elsewhere].contains(&connection), "on a kept connection");
}

#[tokio::test]
async fn a_kept_connection_that_waited_answers_before_the_clients_statement_goes_out() {
    // A server that stopped answering without closing (frozen, or cut off by the network) cannot be seen on the
    // socket. A kept connection that waited more than a second must answer first, within connect_timeout_secs,
    // so that the client's statement is not sent into the silence to wait out the read timeout.
    let dbs = support::EdxDatabases::private_two_servers().await;
    dbs.create_edx_schema(true).await;
    let mut config = dbs.proxy_toml(Stage::ExtendedTableOnlyReads.flags()).config().expect("the fixture's config");
    config.backends.csmh.connect_timeout_secs = 1;
    config.backends.csmh.read_timeout_secs = 30;
    let site = Site { proxy: support::start_proxy(config).await, first_extended_id: 0, dbs };
    csmh_connection_of_a_new_session(&site).await;
    wait_until_kept(&site.proxy, 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut client = site.edxapp().await;
    let frozen = support::frozen::Frozen::server(&site.dbs.csmh).await;
    let write = client.query_drop(edxapp_insert(1, "sent into the silence"));
    let answer = tokio::time::timeout(Duration::from_secs(15), write).await.expect("an answer well before 30 s");
    let (code, message) = support::edx::server_error(answer);
    assert_eq!(code, 1429, "no connection to the csmh server could be had: {message}");
    drop(frozen);
    assert_eq!(site.proxy.shared().metrics.kept().lost.get(), 1, "the kept connection was given up");

    let written: Vec<u64> = site
        .csmh_root()
        .await
        .query(format!("SELECT id FROM {} WHERE state = 'sent into the silence'", site.extended()))
        .await
        .expect("the extended table");
    assert!(written.is_empty(), "the statement never reached the server");
}
