//! Connections opened ahead of clients (`[backends.edxapp.preconnect]`, docs/reliability.md "Connections opened
//! ahead"): a stream of new clients logs in on connections the proxy connected and had greeted before they came,
//! each client on a connection of its own; one the server closed meanwhile is never handed out; one not taken is
//! closed at its age, and the server is left with none; a reload to another server or to `max = 0` closes those
//! ready; after the last client at most `max` close unused; and a server that cannot be reached costs one attempt a second, not one per client.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use csmh_proxy::config::{Config, Preconnect};
use csmh_proxy::history::Stage;
use csmh_proxy::metrics::PreconnectCounters;
use csmh_proxy::server::ProxyHandle;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use support::EdxDatabases;

/// The longest any wait of these tests lasts, so that a proxy that never gets there fails the test.
const BOUND: Duration = Duration::from_secs(20);

/// A pause between two clients of a stream: 50 new clients a second, well above the rate that turns
/// preconnecting on.
const PACE: Duration = Duration::from_millis(20);

/// The proxy in front of `dbs` (flags off), with `preconnect` as its `[backends.edxapp.preconnect]`.
async fn proxy_with(dbs: &EdxDatabases, preconnect: Preconnect) -> ProxyHandle {
    support::start_proxy(config_with(dbs, preconnect)).await
}

fn config_with(dbs: &EdxDatabases, preconnect: Preconnect) -> Config {
    let mut config = dbs.proxy_toml(Stage::OldTableOnly.flags()).config().expect("the fixture's proxy.toml");
    config.backends.edxapp.preconnect = Some(preconnect);
    config.validate().expect("valid preconnect settings");
    config
}

/// Logs `clients` clients in through `proxy` one after the other, [`PACE`] apart; each reads its connection id
/// and the row the test stored, then quits. Returns the connection ids.
async fn stream_of_clients(opts: &Opts, clients: usize) -> Vec<u64> {
    let mut ids = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut conn = Conn::new(opts.clone()).await.expect("a client logs in through the proxy");
        let (id, value): (u64, String) =
            conn.query_first("SELECT CONNECTION_ID(), value FROM marker").await.expect("query").expect("a row");
        assert_eq!(value, "stored", "the client reads the server's data");
        ids.push(id);
        conn.disconnect().await.expect("quit");
        tokio::time::sleep(PACE).await;
    }
    ids
}

/// The proxy in front of `dbs` with the default preconnecting, after a stream of clients that left connections
/// ready; and the options its clients log in with.
async fn proxy_with_connections_ready(dbs: &EdxDatabases) -> (ProxyHandle, Opts) {
    let proxy = proxy_with(dbs, Preconnect::default()).await;
    let opts = dbs.proxy_opts(&proxy, &support::app());
    stream_of_clients(&opts, 30).await;
    until(&proxy, "ready", |c| c.ready.get() > 0).await;
    (proxy, opts)
}

/// Creates the table [`stream_of_clients`] reads in the test's `edxapp` database.
async fn store_marker(dbs: &EdxDatabases) {
    let mut conn = Conn::new(dbs.direct_opts(&support::app())).await.expect("direct login");
    conn.query_drop("CREATE TABLE marker (value VARCHAR(10)); INSERT INTO marker VALUES ('stored')")
        .await
        .expect("the marker table");
}

/// Waits until `done` holds of the proxy's preconnect counters.
async fn until(proxy: &ProxyHandle, what: &str, done: impl Fn(&PreconnectCounters) -> bool) {
    let counters = proxy.shared().metrics.preconnect();
    let deadline = tokio::time::Instant::now() + BOUND;
    while !done(counters) {
        assert!(tokio::time::Instant::now() < deadline, "never {what}: {counters:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connections on `server` that have not logged in (the server's `unauthenticated user`).
async fn unauthenticated(root: &mut Conn) -> Vec<u64> {
    root.query("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'unauthenticated user'")
        .await
        .expect("the process list")
}

async fn global_status(root: &mut Conn, name: &str) -> u64 {
    let row: Option<(String, u64)> =
        root.query_first(format!("SHOW GLOBAL STATUS LIKE '{name}'")).await.expect("SHOW GLOBAL STATUS");
    row.unwrap_or_else(|| panic!("no status {name}")).1
}

#[tokio::test]
async fn a_stream_of_clients_logs_in_on_connections_opened_ahead_each_client_on_its_own() {
    let dbs = EdxDatabases::fresh().await;
    store_marker(&dbs).await;
    let proxy = proxy_with(&dbs, Preconnect::default()).await;
    let opts = dbs.proxy_opts(&proxy, &support::app());

    let ids = stream_of_clients(&opts, 60).await;

    let distinct: HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "every client had a server connection of its own: {ids:?}");
    let counters = proxy.shared().metrics.preconnect();
    assert!(
        counters.used.get() >= 40,
        "once the stream's rate is known, clients find a connection ready: {counters:?}"
    );
    assert_eq!(counters.used.get() + counters.misses.get(), 60, "every client counted once");
    assert_eq!(counters.lost.get(), 0);
    assert_eq!(counters.failed.get(), 0);
}

#[tokio::test]
async fn connections_not_taken_close_at_their_age_and_leave_the_server_none() {
    let dbs = EdxDatabases::private_one_server().await;
    store_marker(&dbs).await;
    let mut root = support::root_conn(&dbs.edxapp).await;
    let aborted_before = global_status(&mut root, "Aborted_connects").await;
    let max = 3;
    let proxy = proxy_with(&dbs, Preconnect { max, max_age_ms: 300 }).await;

    stream_of_clients(&dbs.proxy_opts(&proxy, &support::app()), 40).await;
    until(&proxy, "expired and emptied", |c| c.expired.get() > 0 && c.ready.get() == 0 && c.target.get() == 0).await;

    assert_eq!(unauthenticated(&mut root).await, Vec::<u64>::new(), "the server keeps no connection of the proxy");
    let counters = proxy.shared().metrics.preconnect();
    let aborted = global_status(&mut root, "Aborted_connects").await - aborted_before;
    assert_eq!(
        aborted,
        counters.expired.get(),
        "the server counts each connection closed at its age, and nothing else, as an aborted connect"
    );
    assert!(counters.used.get() >= 10, "the stream used connections opened ahead: {counters:?}");
}

/// Connections the pool closed without a client's login on them: what a server that resolves names counts
/// against the proxy's host.
fn closed_unused(counters: &PreconnectCounters) -> u64 {
    counters.expired.get() + counters.lost.get() + counters.discarded.get()
}

#[tokio::test]
async fn after_the_last_client_at_most_max_connections_close_unused() {
    let dbs = EdxDatabases::fresh().await;
    store_marker(&dbs).await;
    // A short age: while the rate of a stream that stopped takes its 2 s to fall, connections would expire and be
    // replaced several times over, were it not for the bound.
    let max = 2;
    let proxy = proxy_with(&dbs, Preconnect { max, max_age_ms: 100 }).await;

    stream_of_clients(&dbs.proxy_opts(&proxy, &support::app()), 60).await;
    let counters = proxy.shared().metrics.preconnect();
    let at_last_client = closed_unused(counters);
    until(&proxy, "emptied after the rate fell", |c| c.target.get() == 0 && c.ready.get() == 0).await;

    assert!(counters.used.get() >= 8, "the stream used connections opened ahead: {counters:?}");
    let after = closed_unused(counters) - at_last_client;
    assert!(
        after <= max as u64,
        "{after} connections closed unused after the last client, more than max: {counters:?}"
    );
}

#[tokio::test]
async fn a_connection_the_server_closed_meanwhile_is_never_handed_to_a_client() {
    let dbs = EdxDatabases::private_one_server().await;
    store_marker(&dbs).await;
    let (proxy, opts) = proxy_with_connections_ready(&dbs).await;

    let mut root = support::root_conn(&dbs.edxapp).await;
    let waiting = unauthenticated(&mut root).await;
    assert!(!waiting.is_empty(), "the server sees the connections opened ahead");
    for id in waiting {
        root.query_drop(format!("KILL {id}")).await.expect("KILL a connection opened ahead");
    }

    stream_of_clients(&opts, 10).await;
    assert!(proxy.shared().metrics.preconnect().lost.get() > 0, "the killed connections were noticed");
}

#[tokio::test]
async fn a_reload_to_another_server_or_to_max_zero_closes_the_connections_ready() {
    let dbs = EdxDatabases::fresh().await;
    store_marker(&dbs).await;
    let (proxy, opts) = proxy_with_connections_ready(&dbs).await;

    proxy.shared().replace(config_with(&dbs, Preconnect { max: 0, ..Preconnect::default() })).expect("reload");
    until(&proxy, "discarded", |c| c.discarded.get() > 0 && c.ready.get() == 0).await;
    let used = proxy.shared().metrics.preconnect().used.get();
    stream_of_clients(&opts, 10).await;
    let counters = proxy.shared().metrics.preconnect();
    assert_eq!(counters.used.get(), used, "off: no client takes a connection opened ahead");
    assert_eq!(counters.ready.get(), 0, "off: none is opened");

    let other = support::second_server().await;
    let mut moved = config_with(&dbs, Preconnect::default());
    proxy.shared().replace(moved.clone()).expect("reload");
    stream_of_clients(&opts, 30).await;
    until(&proxy, "ready again", |c| c.ready.get() > 0).await;
    let discarded = proxy.shared().metrics.preconnect().discarded.get();
    moved.backends.edxapp.address = other.addr().to_string();
    proxy.shared().replace(moved).expect("reload");
    let mut conn = Conn::new(support::app().opts(proxy.addr(), None)).await.expect("login on the new server");
    let port: u16 = conn.query_first("SELECT @@port").await.expect("query").expect("a row");
    assert_eq!(port, other.addr().port(), "the client reached the server the configuration names now");
    assert!(
        proxy.shared().metrics.preconnect().discarded.get() > discarded,
        "connections ready for the old server were closed"
    );
}

#[tokio::test]
async fn a_server_that_cannot_be_reached_costs_one_attempt_a_second_not_one_per_client() {
    let dbs = EdxDatabases::fresh().await;
    let mut config = config_with(&dbs, Preconnect::default());
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    config.backends.edxapp.address = closed.local_addr().expect("address").to_string();
    drop(closed);
    let proxy = support::start_proxy(config).await;
    let opts = dbs.proxy_opts(&proxy, &support::app());

    let started = std::time::Instant::now();
    let mut refused = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        let error = Conn::new(opts.clone()).await.expect_err("no server to reach");
        assert!(error.to_string().contains("1429") || error.to_string().contains("connect"), "{error}");
        refused += 1;
        tokio::time::sleep(PACE).await;
    }
    let counters = proxy.shared().metrics.preconnect();
    assert!(refused >= 20, "a stream of clients: {refused}");
    assert!(
        (1..=3).contains(&counters.failed.get()),
        "the proxy tried to open connections ahead, once a second: {counters:?}"
    );
}
