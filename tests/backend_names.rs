//! Backends named by host name (docs/reliability.md, "Backends named by host name"), as Tutor names its MySQL
//! server on Kubernetes (`mysql:3306`): clients reach both servers through their names, and the proxy looks each
//! up once for all their connections rather than once per connection. (The rules for a lookup that fails, or a
//! connect that fails, are unit tests of `resolver`: a failing lookup here would have to ask a DNS server.)

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
    assert_eq!(
        (lookups.resolved.get(), lookups.stale.get(), lookups.failed.get()),
        (2, 0, 0),
        "20 server connections, one lookup of each server's name"
    );
}
