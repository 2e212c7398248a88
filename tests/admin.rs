//! The admin HTTP listener against real servers, scraped over HTTP as Prometheus and an operator would: the route
//! counters and latency histograms moving as statements are routed, connections and backend errors counted,
//! `/healthz` following the backends, and `/config` showing the flags and routing table but no secret, and what
//! a backend's host name resolves to.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use csmh_proxy::config::{Admin, Config, Preconnect};
use csmh_proxy::history::{Flags, Stage};
use csmh_proxy::sandbox::ProxyToml;
use csmh_proxy::server::ProxyHandle;
use mysql_async::Conn;
use mysql_async::prelude::*;
use serde_json::{Value, json};
use support::edx::*;
use support::{Account, EdxDatabases};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The routes as `/metrics` labels them, in the order of [`counts`]'s arrays.
const ROUTES: [&str; 6] = [
    "route=\"passthrough\",prefilter=\"miss\"",
    "route=\"passthrough\",prefilter=\"hit\"",
    "route=\"rewrite\",prefilter=\"hit\"",
    "route=\"fanout\",prefilter=\"hit\"",
    "route=\"block\",prefilter=\"hit\"",
    "route=\"refuse\",prefilter=\"hit\"",
];

/// How long a counter may take to move after the client has its answer (it is counted just after).
const SETTLE: Duration = Duration::from_secs(3);

/// An HTTP response.
struct Response {
    status: u16,
    headers: String,
    body: String,
}

/// `GET path` on `addr` over a connection of its own.
async fn get(addr: SocketAddr, path: &str) -> Response {
    let mut stream = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).expect("the admin listener answers in UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no end of headers in {text:?}"));
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{status_line}"));
    Response { status, headers: headers.to_ascii_lowercase(), body: body.to_owned() }
}

/// `GET path` answered with 200 and JSON.
async fn get_json(addr: SocketAddr, path: &str, status: u16) -> Value {
    let response = get(addr, path).await;
    assert_eq!(response.status, status, "{path}: {}", response.body);
    assert!(response.headers.contains("content-type: application/json"), "{}", response.headers);
    serde_json::from_str(&response.body).unwrap_or_else(|e| panic!("{path} is not JSON ({e}): {}", response.body))
}

/// One scrape of `/metrics`.
struct Scrape(String);

impl Scrape {
    async fn of(proxy: &ProxyHandle) -> Scrape {
        let response = get(admin(proxy), "/metrics").await;
        assert_eq!(response.status, 200, "{}", response.body);
        assert!(response.headers.contains("content-type: text/plain; version=0.0.4"), "{}", response.headers);
        Scrape(response.body)
    }

    /// The value of the sample `series` (name and labels, as rendered).
    fn value(&self, series: &str) -> u64 {
        let line = self.0.lines().find(|line| line.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')));
        let value = line.and_then(|line| line[series.len()..].trim().parse::<f64>().ok());
        value.unwrap_or_else(|| panic!("no sample {series} in\n{}", self.0)) as u64
    }

    /// Statements counted per route, and latency observations per route.
    fn counts(&self) -> ([u64; 6], [u64; 6]) {
        let statements = ROUTES.map(|labels| self.value(&format!("csmh_proxy_statements_total{{{labels}}}")));
        let observed =
            ROUTES.map(|labels| self.value(&format!("csmh_proxy_statement_duration_seconds_count{{{labels}}}")));
        (statements, observed)
    }
}

/// The admin address of a proxy started with one.
fn admin(proxy: &ProxyHandle) -> SocketAddr {
    proxy.admin_addr().expect("the proxy was configured with an admin address")
}

/// `config` with the admin listener on a free loopback port.
fn with_admin(mut config: Config) -> Config {
    config.admin = Some(Admin { address: "127.0.0.1:0".to_owned() });
    config
}

/// A proxy in front of `dbs` with `flags` and an admin listener.
async fn proxy_with_admin(dbs: &EdxDatabases, flags: Flags) -> ProxyHandle {
    let config = dbs.proxy_toml(flags).config().unwrap_or_else(|e| panic!("{e}"));
    support::start_proxy(with_admin(config)).await
}

/// edxapp's connection through `proxy`, as [`Site::edxapp`] makes it.
async fn edxapp(dbs: &EdxDatabases, proxy: &ProxyHandle) -> Conn {
    let opts = mysql_async::OptsBuilder::from_opts(dbs.proxy_opts(proxy, &support::app())).client_found_rows(true);
    Conn::new(opts).await.expect("edxapp logs in through the proxy")
}

/// Runs `statement` on `conn` and checks that exactly the route at `route` (an index of [`ROUTES`]) counted one
/// statement and one latency observation more.
async fn assert_counted(proxy: &ProxyHandle, conn: &mut Conn, statement: &str, route: usize, succeeds: bool) {
    let (before, before_observed) = Scrape::of(proxy).await.counts();
    let result = conn.query_drop(statement).await;
    assert_eq!(result.is_ok(), succeeds, "{statement}: {result:?}");
    let mut expected = before;
    expected[route] += 1;
    let mut expected_observed = before_observed;
    expected_observed[route] += 1;
    let deadline = Instant::now() + SETTLE;
    loop {
        let (now, observed) = Scrape::of(proxy).await.counts();
        if (now, observed) == (expected, expected_observed) || Instant::now() > deadline {
            assert_eq!(now, expected, "statements by route after {statement}");
            assert_eq!(observed, expected_observed, "latency observations by route after {statement}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `series` has `value`, failing with the last scrape.
async fn assert_eventually(proxy: &ProxyHandle, series: &str, value: u64) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let scrape = Scrape::of(proxy).await;
        if scrape.value(series) == value {
            return;
        }
        assert!(Instant::now() < deadline, "{series} is {}, not {value}", scrape.value(series));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An address on which nothing listens.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn statements_move_their_routes_counter_and_latency_histogram() {
    let dbs = EdxDatabases::fresh().await;
    dbs.create_edx_schema(true).await;
    let proxy = proxy_with_admin(&dbs, Stage::ExtendedTableReadingBoth.flags()).await;
    let mut conn = edxapp(&dbs, &proxy).await;
    assert_counted(&proxy, &mut conn, "SELECT 1", 0, true).await;
    assert_counted(&proxy, &mut conn, &format!("SELECT '{OLD}' AS name"), 1, true).await;
    assert_counted(&proxy, &mut conn, &edxapp_insert(1, "{}"), 2, true).await;
    assert_counted(&proxy, &mut conn, &edxapp_read("1"), 3, true).await;
    let join = format!("SELECT h.id FROM `{OLD}` h JOIN courseware_studentmodule m ON m.id = h.student_module_id");
    assert_counted(&proxy, &mut conn, &join, 5, false).await;

    let retired_proxy = proxy_with_admin(&dbs, Stage::OldTableRetired.flags()).await;
    let mut conn = edxapp(&dbs, &retired_proxy).await;
    assert_counted(&retired_proxy, &mut conn, &format!("TRUNCATE TABLE `{OLD}`"), 4, false).await;

    let text = Scrape::of(&proxy).await.0;
    let bucket = "csmh_proxy_statement_duration_seconds_bucket{route=\"fanout\",prefilter=\"hit\",le=\"10\"} 1";
    assert!(text.lines().any(|line| line == bucket), "the fan-out took less than 10 s:\n{text}");
    assert!(text.contains("# TYPE csmh_proxy_statement_duration_seconds histogram"), "{text}");
}

#[tokio::test]
async fn connections_open_and_total_follow_the_clients() {
    let dbs = EdxDatabases::fresh().await;
    let proxy = proxy_with_admin(&dbs, Flags::default()).await;
    let scrape = Scrape::of(&proxy).await;
    assert_eq!(scrape.value("csmh_proxy_connections_total"), 0);
    assert_eq!(scrape.value("csmh_proxy_connections_open"), 0);
    let first = edxapp(&dbs, &proxy).await;
    let second = edxapp(&dbs, &proxy).await;
    assert_eventually(&proxy, "csmh_proxy_connections_open", 2).await;
    assert_eq!(Scrape::of(&proxy).await.value("csmh_proxy_connections_total"), 2);
    first.disconnect().await.unwrap();
    assert_eventually(&proxy, "csmh_proxy_connections_open", 1).await;
    second.disconnect().await.unwrap();
    assert_eventually(&proxy, "csmh_proxy_connections_open", 0).await;
    assert_eq!(Scrape::of(&proxy).await.value("csmh_proxy_connections_total"), 2);
}

#[tokio::test]
async fn healthz_is_ok_with_both_backends_up_and_503_naming_the_one_down() {
    let dbs = EdxDatabases::fresh().await;
    let up = proxy_with_admin(&dbs, Flags::default()).await;
    let health = get_json(admin(&up), "/healthz", 200).await;
    assert_eq!(health["healthy"], true, "{health}");
    assert_eq!(health["backends"]["edxapp"]["reachable"], true, "{health}");
    assert_eq!(health["backends"]["csmh"]["reachable"], true, "{health}");

    // The old table is there: the client's grants on it are checked before the extended table's server is asked.
    dbs.create_edx_schema(false).await;
    let closed = closed_port().await;
    let toml = ProxyToml { csmh: closed, ..dbs.proxy_toml(Stage::ExtendedTableOnlyReads.flags()) };
    let down = support::start_proxy(with_admin(toml.config().unwrap_or_else(|e| panic!("{e}")))).await;
    let health = get_json(admin(&down), "/healthz", 503).await;
    assert_eq!(health["healthy"], false, "{health}");
    assert_eq!(health["backends"]["edxapp"]["reachable"], true, "{health}");
    assert_eq!(health["backends"]["csmh"]["reachable"], false, "{health}");
    assert_eq!(health["backends"]["csmh"]["address"], closed.to_string(), "{health}");
    assert!(health["backends"]["csmh"]["error"].is_string(), "{health}");

    let mut conn = edxapp(&dbs, &down).await;
    assert!(conn.query_drop(edxapp_read("1")).await.is_err(), "the extended table's server is down");
    assert_eventually(&down, "csmh_proxy_backend_connect_errors_total{backend=\"csmh\"}", 1).await;
    assert_eq!(Scrape::of(&down).await.value("csmh_proxy_backend_connect_errors_total{backend=\"edxapp\"}"), 0);
}

#[tokio::test]
async fn a_burst_of_healthz_requests_probes_the_servers_once() {
    // The probes go to a listener of the test's own, which counts the connections a server would (each closed
    // before its handshake: a connect error of the proxy's host on a real server, counted to max_connect_errors).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counting = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counting.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    let dbs = EdxDatabases::fresh().await;
    let toml = ProxyToml { edxapp: backend, csmh: backend, ..dbs.proxy_toml(Flags::default()) };
    let proxy = support::start_proxy(with_admin(toml.config().unwrap_or_else(|e| panic!("{e}")))).await;
    let requests = (0..40).map(|_| get_json(admin(&proxy), "/healthz", 200));
    let answers = futures_util::future::join_all(requests).await;
    assert!(answers.iter().all(|health| health["healthy"] == true), "{answers:?}");
    // Checked: before, each request probed both backends (80 connections).
    let probes = accepted.load(Ordering::SeqCst);
    assert!((2..=4).contains(&probes), "{probes} connections for 40 requests in a burst");
}

#[tokio::test]
async fn config_shows_the_flags_and_routing_but_no_secret_and_follows_a_reload() {
    let dbs = EdxDatabases::fresh_two_servers().await;
    let secret = "csmh-password-never-shown";
    let toml = ProxyToml {
        csmh_account: Account::native("csmh_login_never_shown", secret),
        ..dbs.proxy_toml(Stage::ExtendedTableReadingBoth.flags())
    };
    let config = with_admin(toml.config().unwrap_or_else(|e| panic!("{e}")));
    let proxy = support::start_proxy(config.clone()).await;

    let response = get(admin(&proxy), "/config").await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(!response.body.contains(secret) && !response.body.contains("never_shown"), "{}", response.body);
    let view: Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(view["generation"], 1, "{view}");
    assert_eq!(view["flags"]["ENABLE_CSMH_EXTENDED"], true, "{view}");
    assert_eq!(view["flags"]["ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES"], true, "{view}");
    assert_eq!(view["flags"]["READ_ONLY_FROM_CSMHE"], false, "{view}");
    assert_eq!(view["topology"], "two servers", "{view}");
    assert_eq!(view["tables"]["old"], dbs.old_table(), "{view}");
    assert_eq!(view["tables"]["extended"], dbs.extended_table(), "{view}");
    assert_eq!(view["backends"]["csmh"]["address"], dbs.csmh.addr().to_string(), "{view}");
    assert_eq!(view["routing"]["stage"], "extended_table_reading_both", "{view}");
    let routes = view["routing"]["routes"].as_array().unwrap_or_else(|| panic!("{view}"));
    let select = routes.iter().find(|r| r["statements"] == "SELECT").unwrap_or_else(|| panic!("{view}"));
    assert_eq!(select["target"], "both_tables", "{view}");
    assert_eq!((&view["preconnect"]["max"], &view["preconnect"]["max_age_ms"]), (&json!(4), &json!(5000)), "{view}");
    assert!(view["preconnect"]["ready"].is_i64() && view["preconnect"]["target"].is_i64(), "{view}");
    assert_eq!((&view["csmh_kept"]["keep_idle"], &view["csmh_kept"]["kept"]), (&json!(8), &json!(0)), "{view}");

    let mut reloaded = config;
    reloaded.flags = Stage::OldTableRetired.flags();
    reloaded.backends.edxapp.preconnect = Some(Preconnect { max: 0, max_age_ms: 2000 });
    reloaded.backends.csmh.keep_idle = Some(2);
    proxy.shared().replace(reloaded).unwrap_or_else(|e| panic!("{e}"));
    let view = get_json(admin(&proxy), "/config", 200).await;
    assert_eq!(view["generation"], 2, "{view}");
    assert_eq!(view["routing"]["stage"], "old_table_retired", "{view}");
    assert_eq!((&view["preconnect"]["max"], &view["preconnect"]["max_age_ms"]), (&json!(0), &json!(2000)), "{view}");
    assert_eq!(view["csmh_kept"]["keep_idle"], 2, "{view}");
    let scrape = Scrape::of(&proxy).await;
    assert_eq!(scrape.value("csmh_proxy_config_generation"), 2);
    assert_eq!(scrape.value("csmh_proxy_config_reloads_total{result=\"applied\"}"), 1);
    assert_eq!(scrape.value("csmh_proxy_config_reloads_total{result=\"rejected\"}"), 0);
}

#[tokio::test]
async fn config_shows_what_a_backend_named_by_host_name_resolves_to() {
    let dbs = EdxDatabases::fresh().await;
    let mut config = with_admin(dbs.proxy_toml(Flags::default()).config().unwrap_or_else(|e| panic!("{e}")));
    let port = dbs.edxapp.addr().port();
    config.backends.edxapp.address = format!("localhost:{port}");
    config.backends.edxapp.preconnect = Some(Preconnect { max: 0, max_age_ms: 5000 });
    let proxy = support::start_proxy(config).await;

    let view = get_json(admin(&proxy), "/config", 200).await;
    assert_eq!(view["backends"]["edxapp"]["resolved"], Value::Null, "not looked up before a client came: {view}");
    assert_eq!(view["backends"]["csmh"]["resolved"], Value::Null, "an ip:port is never looked up: {view}");
    edxapp(&dbs, &proxy).await.disconnect().await.expect("quit");
    let view = get_json(admin(&proxy), "/config", 200).await;
    let resolved = view["backends"]["edxapp"]["resolved"].as_array().unwrap_or_else(|| panic!("{view}"));
    assert!(resolved.contains(&json!(format!("127.0.0.1:{port}"))), "localhost's addresses: {view}");
    assert_eq!(view["backends"]["edxapp"]["resolve_error"], Value::Null, "{view}");
}

#[tokio::test]
async fn without_an_admin_address_nothing_is_served_and_the_listener_stops_with_the_proxy() {
    let dbs = EdxDatabases::fresh().await;
    let plain = dbs.start_proxy(Flags::default()).await;
    assert_eq!(plain.admin_addr(), None);
    plain.shutdown().await.unwrap();

    let proxy = proxy_with_admin(&dbs, Flags::default()).await;
    let addr = admin(&proxy);
    assert_eq!(get(addr, "/nothing-here").await.status, 404);
    proxy.shutdown().await.unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "the admin listener is closed after shutdown");
}
