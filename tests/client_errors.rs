//! The proxy's own errors, as the client libraries edxapp and operators use report them: Django's `mysqlclient`
//! and the `mariadb` CLI (both on MariaDB Connector/C, which turns any client-range code into 2027 "Received
//! malformed packet" and drops the message), and PyMySQL. Each must see the proxy's code and message, raised as
//! the `OperationalError` Django handles like a lost server; after an error about the `csmh` server, the same
//! connection goes on.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Output, Stdio};

use csmh_proxy::history::Stage;
use csmh_proxy::sandbox::ProxyToml;
use serde_json::Value;
use support::EdxDatabases;
use support::clients;
use support::edx::edxapp_insert;
use support::packages::MYSQLCLIENT;

/// PyMySQL, installed beside `mysqlclient`.
const PYMYSQL: &str = "PyMySQL==1.1.1";

/// The Python drivers the script knows.
const DRIVERS: [&str; 2] = ["mysqlclient", "pymysql"];

async fn python() -> PathBuf {
    clients::blocking(|| MYSQLCLIENT.python_with(&[PYMYSQL], "import MySQLdb, pymysql")).await
}

/// What `driver` reports of connecting to `address` and running `statements`: one JSON object per step.
async fn python_sees(driver: &str, address: SocketAddr, database: Option<&str>, statements: &[&str]) -> Vec<Value> {
    let account = support::app();
    let mut options = vec![format!("--user={}", account.user), format!("--password={}", account.password)];
    options.extend(database.map(|db| format!("--database={db}")));
    clients::python_client_sees(python().await, driver, address, &options, statements).await
}

/// Asserts that a step failed with `code` as an `OperationalError` whose message contains `part`.
fn assert_error(step: &Value, code: u64, part: &str) {
    assert_eq!(step["class"], "OperationalError", "{step}");
    assert_eq!(step["code"], code, "{step}");
    let message = step["message"].as_str().unwrap_or_default();
    assert!(message.contains(part), "the message says {part:?}: {step}");
}

/// How the `mariadb` CLI ran `sql` read from its standard input with `--force` (on past errors), and what it
/// printed on standard error.
async fn cli_sees(address: SocketAddr, database: Option<&str>, sql: &str) -> (Output, String) {
    use tokio::io::AsyncWriteExt;
    let mut command = support::mariadb_cli(address, &support::app(), database);
    command.arg("--force").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("the mariadb client runs");
    let mut stdin = child.stdin.take().expect("a pipe");
    stdin.write_all(sql.as_bytes()).await.expect("the client reads its statements");
    drop(stdin);
    let output = child.wait_with_output().await.expect("the mariadb client runs");
    let stderr = clients::text(&output.stderr);
    (output, stderr)
}

#[tokio::test]
async fn every_client_reads_the_proxys_error_when_edxapp_is_unreachable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = ProxyToml::edx(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), closed, closed).config().unwrap();
    let proxy = support::start_proxy(config).await;
    for driver in DRIVERS {
        let steps = python_sees(driver, proxy.addr(), None, &[]).await;
        assert_eq!(steps[0]["step"], "connect", "{driver}: {steps:?}");
        assert_error(&steps[0], 1429, &closed.to_string());
        assert_error(&steps[0], 1429, "csmh-proxy");
    }
    let (output, stderr) = cli_sees(proxy.addr(), None, "SELECT 1").await;
    assert!(!output.status.success());
    // The CLI, which asks for TLS by default, quotes an error that comes before TLS under its own code 2002.
    assert!(stderr.contains("1429") && stderr.contains("csmh-proxy"), "mariadb printed: {stderr}");
}

#[tokio::test]
async fn every_client_reads_the_proxys_error_for_an_unreachable_csmh_server_and_goes_on() {
    let dbs = EdxDatabases::fresh_two_servers().await;
    dbs.create_edx_schema(false).await;
    let mut toml = dbs.proxy_toml(Stage::ExtendedTableOnlyReads.flags());
    toml.csmh = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let proxy = support::start_proxy(toml.config().unwrap()).await;
    let insert = edxapp_insert(1, "{}");
    for driver in DRIVERS {
        let steps = python_sees(driver, proxy.addr(), Some(&dbs.edxapp_db), &[&insert, "SELECT 1"]).await;
        assert_eq!(steps.len(), 3, "{driver}: {steps:?}");
        assert_eq!(steps[0]["step"], "connect", "{driver}: {steps:?}");
        assert_error(&steps[1], 1429, "csmh server");
        assert_eq!(steps[2]["rows"], serde_json::json!([["1"]]), "{driver}: the session goes on: {steps:?}");
    }
    let (output, stderr) = cli_sees(proxy.addr(), Some(&dbs.edxapp_db), &format!("{insert}; SELECT 41 + 1")).await;
    assert!(stderr.contains("ERROR 1429") && stderr.contains("csmh server"), "mariadb printed: {stderr}");
    assert!(clients::text(&output.stdout).contains("42"), "the CLI's session went on: {output:?}");
}
