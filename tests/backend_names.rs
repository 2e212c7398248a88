//! Backends named by host name (docs/reliability.md, "Backends named by host name"), as Tutor names its MySQL
//! server on Kubernetes (`mysql:3306`): clients reach both servers through their names, and the proxy looks each
//! up once for all their connections rather than once per connection; after a connect to it failed, the next
//! client looks the name up again. (The rules for a lookup that fails are unit tests of `resolver`: a failing
//! lookup here would have to ask a DNS server.)

mod support;

use csmh_proxy::history::Stage;
use mysql_async::Conn;
use mysql_async::prelude::*;
use support::EdxDatabases;

#[tokio::test]
async fn a_server_named_by_host_name_is_looked_up_once_for_many_clients() {
    let dbs = EdxDatabases::fresh_two_servers().await;
    dbs.create_edx_schema(true).await;
    let mut config = dbs.proxy_toml(Stage::ExtendedTableReadingBoth.flags()).config().expect("the fixture's config");
    config.backends.edxapp.address = format!("localhost:{}", dbs.edxapp.addr().port());
    config.backends.csmh.address = format!("localhost:{}", dbs.csmh.addr().port());
    // Every client opens its own connection to each server, none of them ahead.
    config.backends.edxapp.preconnect = Some(csmh_proxy::config::Preconnect { max: 0, ..Default::default() });
    config.validate().expect("a valid configuration");
    let proxy = support::start_proxy(config).await;
    let opts = dbs.proxy_opts(&proxy, &support::app());

    for _ in 0..10 {
        let mut client = Conn::new(opts.clone()).await.expect("a client logs in through the proxy");
        let count: Option<u64> = client
            .query_first("SELECT COUNT(*) AS `__count` FROM courseware_studentmodulehistory")
            .await
            .expect("a read of both history tables");
        assert_eq!(count, Some(18), "the sample history, counted across both servers' tables");
        client.disconnect().await.expect("quit");
    }

    let lookups = proxy.shared().metrics.resolver();
    // One lookup of each server's name; one more each if the clients took longer than the names' 10 s.
    let resolved = lookups.resolved.get();
    assert!((2..=4).contains(&resolved), "20 server connections, {resolved} lookups of their 2 names");
    assert_eq!((lookups.stale.get(), lookups.failed.get()), (0, 0));
}

#[tokio::test]
async fn after_a_failed_connect_the_next_client_looks_the_name_up_again() {
    let dbs = EdxDatabases::fresh().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its port");
    let mut config = dbs.proxy_toml(Stage::OldTableOnly.flags()).config().expect("the fixture's config");
    config.backends.edxapp.address = format!("localhost:{}", closed.port());
    config.backends.edxapp.preconnect = Some(csmh_proxy::config::Preconnect { max: 0, ..Default::default() });
    let proxy = support::start_proxy(config).await;
    let opts = dbs.proxy_opts(&proxy, &support::app());

    for client in 1..=2 {
        let (code, message) = support::edx::server_error(Conn::new(opts.clone()).await);
        assert_eq!(code, 1429, "{message}");
        assert!(message.contains(&format!("localhost:{}", closed.port())), "{message}");
        let lookups = proxy.shared().metrics.resolver();
        assert_eq!(lookups.resolved.get(), client, "a lookup for each client after a refused connect");
    }
}
