//! Faults of the `csmh` server across two servers, as an operator meets them: its connection lost between
//! statements (a restart, a KILL, an idle timeout), the server frozen, a client giving up while it is frozen.
//! Each fails the statement that needed the `csmh` server with an error the client reads, never the client's
//! session; nothing is half-written; the next statement opens a new connection; and nothing waits forever.

mod support;

use std::time::Duration;

use csmh_proxy::history::Stage;
use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};
use support::edx::*;
use support::frozen::Frozen;
use support::held::CommitAnswersHeld;

/// Generous bound on any one step, so that a regression fails the test instead of hanging it.
const STEP: Duration = Duration::from_secs(60);

async fn bounded<T>(what: &str, step: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, step).await.unwrap_or_else(|_| panic!("{what} did not finish"))
}

async fn extended_states(site: &Site) -> Vec<String> {
    site.csmh_root().await.query(format!("SELECT state FROM {} ORDER BY id", site.extended())).await.unwrap()
}

/// A client without mysql_async's statement cache, so that preparing a statement again prepares it anew.
async fn uncached_client(site: &Site) -> Conn {
    let opts = OptsBuilder::from_opts(site.dbs.proxy_opts(&site.proxy, &support::app())).stmt_cache_size(0);
    Conn::new(opts).await.unwrap()
}

#[tokio::test]
async fn a_lost_csmh_connection_fails_one_rewritten_statement_and_the_session_goes_on() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(edxapp_insert(1, "before")).await.unwrap();
    site.kill_csmh_connections().await;
    let (code, message) = server_error(edxapp.query_drop(edxapp_insert(1, "lost")).await);
    assert_eq!(code, 1430, "{message}");
    assert!(message.contains("csmh server"), "{message}");
    let one: Option<i64> = edxapp.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the session goes on");
    edxapp.query_drop(edxapp_insert(1, "after")).await.unwrap();
    assert_eq!(extended_states(&site).await, ["before", "after"], "the failed statement wrote nothing");
    assert_eq!(site.proxy.shared().metrics.backend_query_errors(csmh_proxy::topology::Server::Csmh), 1);
}

#[tokio::test]
async fn a_lost_csmh_connection_fails_one_merged_read_and_the_next_reads_both_tables_again() {
    let site = Site::two_servers(Stage::ExtendedTableReadingBoth.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(edxapp_insert(1, "new")).await.unwrap();
    let read = edxapp_read("1");
    let before: Vec<mysql_async::Row> = edxapp.query(&read).await.unwrap();
    assert!(before.len() > 1, "rows of both tables");
    site.kill_csmh_connections().await;
    let (code, message) = server_error(edxapp.query_drop(&read).await);
    assert_eq!(code, 1430, "{message}");
    let after: Vec<mysql_async::Row> = edxapp.query(&read).await.unwrap();
    assert_eq!(after.len(), before.len());
}

#[tokio::test]
async fn a_lost_csmh_connection_fails_one_write_of_both_tables_with_nothing_written() {
    let site = Site::two_servers(Stage::ExtendedTableReadingBoth.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(edxapp_insert(1, "new")).await.unwrap();
    let (old, extended) = (site.old_ids().await.len(), site.extended_ids().await.len());
    site.kill_csmh_connections().await;
    let (code, message) = server_error(edxapp.query_drop(edxapp_delete("1")).await);
    assert_eq!(code, 1430, "{message}");
    assert_eq!((site.old_ids().await.len(), site.extended_ids().await.len()), (old, extended), "nothing deleted");
    edxapp.query_drop(edxapp_delete("1")).await.unwrap();
    assert!(site.old_ids().await.len() < old && site.extended_ids().await.is_empty(), "deleted from both");
}

#[tokio::test]
async fn a_lost_csmh_connection_inside_a_transaction_rolls_it_back_and_says_so() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("BEGIN").await.unwrap();
    edxapp.query_drop("INSERT INTO auth_user (id, username) VALUES (77, 'eve')").await.unwrap();
    edxapp.query_drop(edxapp_insert(1, "in the transaction")).await.unwrap();
    site.kill_csmh_connections().await;
    let (code, message) = server_error(edxapp.query_drop(edxapp_insert(1, "lost")).await);
    assert_eq!(code, 1430, "{message}");
    assert!(message.contains("rolled back"), "{message}");
    let eve: Option<String> = edxapp.query_first("SELECT username FROM auth_user WHERE id = 77").await.unwrap();
    assert_eq!(eve, None, "edxapp's part of the transaction went with the csmh side's");
    assert!(extended_states(&site).await.is_empty());
}

#[tokio::test]
async fn a_statement_prepared_on_a_lost_csmh_connection_is_never_confused_with_a_later_one() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = uncached_client(&site).await;
    let insert = edxapp.prep(edxapp_insert(2, "prepared")).await.unwrap();
    edxapp.exec_drop(&insert, ()).await.unwrap();
    site.kill_csmh_connections().await;
    let (code, message) = server_error(edxapp.exec_drop(&insert, ()).await);
    assert_eq!(code, 1430, "{message}");
    // The next connection numbers its statements from 1 again.
    let read = edxapp.prep(edxapp_read("2")).await.unwrap();
    let rows: Vec<mysql_async::Row> = edxapp.exec(&read, ()).await.unwrap();
    assert_eq!(rows.len(), 1);
    let (code, message) = server_error(edxapp.exec_drop(&insert, ()).await);
    assert_eq!(code, 1243, "the lost statement is unknown, not the read that took its number: {message}");
    edxapp.close(insert).await.unwrap();
    let again = edxapp.prep(edxapp_insert(2, "prepared again")).await.unwrap();
    edxapp.exec_drop(&again, ()).await.unwrap();
    assert_eq!(extended_states(&site).await, ["prepared", "prepared again"]);
}

/// Two servers of the test's own (the `csmh` one gets frozen), with the proxy's `csmh` read timeout at
/// `seconds` (its connect timeout stays at the default 5 s, ample for a login on a busy machine).
async fn site_with_csmh_timeouts(seconds: u64) -> Site {
    let site = Site::private_two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut config = site.dbs.proxy_toml(Stage::ExtendedTableOnlyReads.flags()).config().unwrap();
    config.backends.csmh.read_timeout_secs = seconds;
    site.proxy.shared().replace(config).unwrap();
    site
}

#[tokio::test]
async fn a_frozen_csmh_server_fails_the_statement_within_its_timeout_and_the_session_goes_on() {
    let site = site_with_csmh_timeouts(2).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(edxapp_insert(1, "before")).await.unwrap();
    let frozen = Frozen::server(&site.dbs.csmh).await;
    let (code, message) = server_error(bounded("a statement", edxapp.query_drop(edxapp_insert(1, "frozen"))).await);
    assert_eq!(code, 1430, "{message}");
    assert!(message.contains("did not respond within 2 s"), "{message}");
    let one: Option<i64> = bounded("SELECT 1", edxapp.query_first("SELECT 1")).await.unwrap();
    assert_eq!(one, Some(1), "the session goes on");
    // A new connection to the frozen server is accepted by its kernel but never greeted: the login is bounded.
    let (code, message) = server_error(bounded("a statement", edxapp.query_drop(edxapp_insert(1, "again"))).await);
    assert_eq!(code, 1429, "{message}");
    drop(frozen);
    bounded("a statement", edxapp.query_drop(edxapp_insert(1, "thawed"))).await.unwrap();
    let states = extended_states(&site).await;
    assert_eq!(states.first().map(String::as_str), Some("before"));
    assert!(states.contains(&"thawed".to_owned()), "{states:?}");
}

#[tokio::test]
async fn a_client_that_gives_up_on_a_frozen_csmh_server_leaves_nothing_behind() {
    // A timeout far beyond the test: only noticing the client's hang-up can end its session.
    let site = site_with_csmh_timeouts(3600).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(edxapp_insert(1, "before")).await.unwrap();
    let metrics = &site.proxy.shared().metrics;
    assert_eq!(metrics.connections_open(), 1);
    let _frozen = Frozen::server(&site.dbs.csmh).await;
    let waiting = tokio::spawn(async move { edxapp.query_drop(edxapp_insert(1, "frozen")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The client gives up: its task, and with it its socket, goes away.
    waiting.abort();
    let _ = waiting.await;
    bounded("the proxy noticing the client left", async {
        while metrics.connections_open() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(metrics.client_hangups(), 1);
}

#[tokio::test]
async fn a_write_of_both_tables_whose_csmh_commit_answer_times_out_says_its_outcome_is_unknown() {
    // The csmh server commits the proxy's own transaction, its answer is held past the read timeout: edxapp's
    // side is rolled back, and the client must not be told the write was rolled back (checked: before, the
    // message said "the transaction was rolled back").
    let (site, relay) = CommitAnswersHeld::in_front_of_csmh(Some(2)).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(edxapp_insert(1, "extended")).await.unwrap();
    let (old, extended) = (site.old_ids().await.len(), site.extended_ids().await.len());
    let (code, message) = server_error(bounded("the write", edxapp.query_drop(edxapp_delete("1"))).await);
    relay.release();
    assert_eq!(code, 1430, "{message}");
    assert!(message.contains("did not respond within 2 s"), "{message}");
    assert!(message.contains("may have been committed"), "{message}");
    assert!(!message.contains("the transaction was rolled back"), "{message}");
    assert_eq!(site.old_ids().await.len(), old, "edxapp's side was rolled back");
    assert_eq!((extended, site.extended_ids().await.len()), (1, 0), "the csmh server had committed its side");
    let one: Option<i64> = bounded("SELECT 1", edxapp.query_first("SELECT 1")).await.unwrap();
    assert_eq!(one, Some(1), "the session goes on");
}

#[tokio::test]
async fn a_clients_commit_whose_csmh_answer_times_out_says_its_outcome_is_unknown() {
    // The client's transaction wrote history on the csmh server; its COMMIT is carried out there, the answer held
    // past the read timeout: edxapp's side is rolled back, and the client must not be told the whole transaction
    // was (checked: before, the message said "the transaction was rolled back").
    let (site, relay) = CommitAnswersHeld::in_front_of_csmh(Some(2)).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("BEGIN").await.unwrap();
    edxapp.query_drop(edxapp_insert(1, "in a transaction")).await.unwrap();
    let (code, message) = server_error(bounded("the COMMIT", edxapp.query_drop("COMMIT")).await);
    relay.release();
    assert_eq!(code, 1430, "{message}");
    assert!(message.contains("may have been committed"), "{message}");
    assert!(!message.ends_with("the transaction was rolled back"), "{message}");
    assert_eq!(site.extended_ids().await.len(), 1, "the csmh server had committed its part");
    let one: Option<i64> = bounded("SELECT 1", edxapp.query_first("SELECT 1")).await.unwrap();
    assert_eq!(one, Some(1), "the session goes on");
}

#[tokio::test]
async fn closing_a_statement_on_a_lost_csmh_connection_answers_nothing() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = uncached_client(&site).await;
    let insert = edxapp.prep(edxapp_insert(3, "prepared")).await.unwrap();
    edxapp.exec_drop(&insert, ()).await.unwrap();
    site.kill_csmh_connections().await;
    // The csmh connection must read the session's settings again before its next use, which fails now.
    edxapp.query_drop("SET time_zone = '+01:00'").await.unwrap();
    edxapp.close(insert).await.unwrap();
    let one: Option<i64> = edxapp.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the next statement gets its own answer, not an error meant for the close");
}

#[tokio::test]
async fn a_reset_connection_rolls_back_the_csmh_side_of_the_transaction() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("BEGIN").await.unwrap();
    edxapp.query_drop(edxapp_insert(4, "abandoned")).await.unwrap();
    edxapp.reset().await.unwrap();
    assert!(extended_states(&site).await.is_empty(), "the abandoned transaction's history was not committed");
    edxapp.query_drop(edxapp_insert(4, "after the reset")).await.unwrap();
    assert_eq!(extended_states(&site).await, ["after the reset"]);
}

#[tokio::test]
async fn a_rollback_reaches_edxapp_when_the_csmh_side_is_lost() {
    let site = Site::two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("BEGIN").await.unwrap();
    edxapp.query_drop("INSERT INTO auth_user (id, username) VALUES (78, 'rolled')").await.unwrap();
    edxapp.query_drop(edxapp_insert(5, "rolled back")).await.unwrap();
    site.kill_csmh_connections().await;
    edxapp.query_drop("ROLLBACK").await.unwrap();
    edxapp.query_drop("COMMIT").await.unwrap();
    let user: Option<String> = edxapp.query_first("SELECT username FROM auth_user WHERE id = 78").await.unwrap();
    assert_eq!(user, None, "the client's ROLLBACK undid edxapp's side");
    assert!(extended_states(&site).await.is_empty());
}
