//! TLS on both legs against real servers and real clients: MariaDB servers serving certificates the test makes
//! (one with `require_secure_transport`), the proxy's own certificate from `[listen.tls]`, and the `mariadb` CLI
//! verifying it, `mysqlclient` with `ssl_mode="REQUIRED"`, PyMySQL with `ssl`, sysbench with `--mysql-ssl`.
//! What the clients see is asserted: the cipher of each leg, logins that work (native and ed25519 accounts,
//! COM_CHANGE_USER), logins refused with the code the client library reports (a plaintext client where TLS is
//! required, a TLS client whose traffic would cross in plaintext, a server certificate that does not verify),
//! a certificate rotated while a client keeps working, and connections to a server resuming its TLS session.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use csmh_proxy::config::{BackendTls, Config, ListenCertificate, ListenTls, TlsMode};
use csmh_proxy::protocol::conn::TlsHandshake;
use csmh_proxy::server::ProxyHandle;
use csmh_proxy::topology::Server;
use mysql_async::prelude::Queryable;
use serde_json::Value;
use support::clients;
use support::packages::MYSQLCLIENT;
use support::tls::{CertFiles, TestPki};
use support::{Account, MariaDb, require_secure_transport, tls_server};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// PyMySQL, beside mysqlclient in the same environment.
const PYMYSQL: &str = "PyMySQL==1.1.1";
/// The kinds of TLS handshake, in the order the assertions list their counts.
const TLS_KINDS: [TlsHandshake; 2] = [TlsHandshake::Full, TlsHandshake::Resumed];

/// A proxy configuration in front of `backend` (both backends on it), with TLS as given.
fn proxy_config(backend: SocketAddr, listen: Option<ListenTls>, edxapp: BackendTls) -> Config {
    let text = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n\n[backends.edxapp]\naddress = \"{backend}\"\n\n\
         [backends.csmh]\naddress = \"{backend}\"\n"
    );
    let mut config = Config::parse(&text).expect("a valid proxy.toml");
    config.listen.tls = listen;
    config.backends.edxapp.tls = edxapp;
    config
}

/// `[listen.tls]` with `cert`.
fn listen_tls(cert: &CertFiles, required: bool) -> Option<ListenTls> {
    let certificate = ListenCertificate::Files { certificate: cert.certificate.clone(), key: cert.key.clone() };
    Some(ListenTls { certificate, required })
}

/// `[backends.edxapp.tls]` in `mode`, checking against `ca` where the mode does.
fn backend_tls(mode: TlsMode, ca: Option<&Path>) -> BackendTls {
    BackendTls { mode, ca: ca.map(Path::to_owned), ..BackendTls::default() }
}

/// The `mariadb` CLI through `proxy` as `account`, verifying the proxy's certificate against `ca`.
fn cli_with_tls(addr: SocketAddr, account: &Account, ca: &Path) -> tokio::process::Command {
    let mut command = support::mariadb_cli(addr, account, None);
    command.arg("--ssl").arg("--ssl-verify-server-cert").arg(format!("--ssl-ca={}", ca.display()));
    command
}

/// Runs `command` with `sql` and returns its output.
async fn run_sql(mut command: tokio::process::Command, sql: &str) -> std::process::Output {
    command.arg("--execute").arg(sql);
    clients::run(&mut command).await
}

/// The value of the session status variable `Ssl_cipher` as a `SHOW SESSION STATUS` line in the CLI's batch
/// output.
fn ssl_cipher_in(output: &str) -> String {
    let line = output.lines().find(|line| line.starts_with("Ssl_cipher\t")).unwrap_or_else(|| panic!("{output}"));
    line["Ssl_cipher\t".len()..].trim().to_owned()
}

/// What `driver` (`mysqlclient` or `pymysql`) reports, one JSON value per step (see tests/python/client.py); with
/// `ca`, the driver requires TLS (mysqlclient with `ssl_mode="REQUIRED"`, PyMySQL verifying the certificate).
async fn python_sees(driver: &str, addr: SocketAddr, ca: Option<&Path>, statements: &[&str]) -> Vec<Value> {
    let python = clients::blocking(|| MYSQLCLIENT.python_with(&[PYMYSQL], "import MySQLdb, pymysql")).await;
    let account = support::app();
    let mut options = vec![format!("--user={}", account.user), format!("--password={}", account.password)];
    options.extend(ca.map(|ca| format!("--ca={}", ca.display())));
    options.push("--ssl-mode=REQUIRED".to_owned());
    clients::python_client_sees(python, driver, addr, &options, statements).await
}

/// A site: a TLS-serving MariaDB, its authority, and a proxy with its own certificate in front of it.
struct Site {
    pki: TestPki,
    /// Kept running for as long as the site lives.
    _server: Arc<MariaDb>,
    proxy: ProxyHandle,
}

impl Site {
    /// A proxy serving TLS (`required` or not) in front of a TLS server, checking its certificate fully.
    async fn new(required: bool) -> Site {
        let pki = TestPki::new("csmh-proxy test CA");
        let server = tls_server(&pki, &pki.localhost("server")).await;
        let edxapp = backend_tls(TlsMode::VerifyIdentity, Some(&pki.ca));
        let config = proxy_config(server.addr(), listen_tls(&pki.localhost("proxy"), required), edxapp);
        let proxy = support::start_proxy(config).await;
        Site { pki, _server: server, proxy }
    }

    /// The logins so far on `leg` over TLS and over plaintext.
    fn transports(&self, leg: &str) -> (u64, u64) {
        let metrics = &self.proxy.shared().metrics;
        (metrics.connections_by_transport(leg, true), metrics.connections_by_transport(leg, false))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_verifies_the_proxy_and_both_legs_are_encrypted() {
    let site = Site::new(false).await;
    let cli = cli_with_tls(site.proxy.addr(), &support::app(), &site.pki.ca);
    let output = run_sql(cli, "SHOW SESSION STATUS LIKE 'Ssl_cipher';\n\\s").await;
    let stdout = support::cli_stdout(&output);
    assert!(!ssl_cipher_in(&stdout).is_empty(), "the server's leg has a cipher: {stdout}");
    assert!(stdout.contains("Cipher in use is"), "the client's leg has a cipher: {stdout}");
    assert_eq!(site.transports("client"), (1, 0));
    assert_eq!(site.transports("edxapp"), (1, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn python_drivers_require_tls_and_get_a_cipher() {
    let site = Site::new(false).await;
    for driver in ["mysqlclient", "pymysql"] {
        let steps =
            python_sees(driver, site.proxy.addr(), Some(&site.pki.ca), &["SHOW SESSION STATUS LIKE 'Ssl_cipher'"])
                .await;
        assert_eq!(steps[0]["step"], "connect", "{driver}: {steps:?}");
        if driver == "pymysql" {
            assert!(steps[0]["cipher"].as_str().is_some_and(|c| !c.is_empty()), "the client's leg: {steps:?}");
        }
        let cipher = &steps[1]["rows"][0][1];
        assert!(cipher.as_str().is_some_and(|c| !c.is_empty()), "{driver}: the server's leg: {steps:?}");
    }
    assert_eq!(site.transports("client"), (2, 0), "both drivers' legs are TLS");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plaintext_client_is_refused_when_tls_is_required() {
    let site = Site::new(true).await;
    let mut cli = support::mariadb_cli(site.proxy.addr(), &support::app(), None);
    cli.arg("--skip-ssl");
    let output = run_sql(cli, "SELECT 1").await;
    let stderr = clients::text(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("ERROR 3159") && stderr.contains("listen.tls.required"), "{stderr}");
    let steps = python_sees("pymysql", site.proxy.addr(), None, &["SELECT 1"]).await;
    assert_eq!(steps[0]["code"], 3159, "{steps:?}");
    let output = run_sql(cli_with_tls(site.proxy.addr(), &support::app(), &site.pki.ca), "SELECT 1").await;
    support::cli_stdout(&output);
    assert_eq!(site.transports("client").0, 1, "the TLS client got in");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_requires_tls_is_refused_by_a_proxy_without_it() {
    let pki = TestPki::new("csmh-proxy test CA");
    let server = tls_server(&pki, &pki.localhost("server")).await;
    let proxy = support::start_proxy(proxy_config(server.addr(), None, BackendTls::default())).await;
    let output = run_sql(cli_with_tls(proxy.addr(), &support::app(), &pki.ca), "SELECT 1").await;
    let stderr = clients::text(&output.stderr);
    assert!(!output.status.success() && stderr.contains("SSL"), "the client refuses to go on in plaintext: {stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_clients_reach_a_server_that_requires_tls() {
    let pki = TestPki::new("csmh-proxy test CA");
    let server = tls_server(&pki, &pki.localhost("server")).await;
    require_secure_transport(&server).await;
    let mut direct = support::mariadb_cli(server.addr(), &support::app(), None);
    direct.arg("--skip-ssl");
    let refused = run_sql(direct, "SELECT 1").await;
    assert!(!refused.status.success(), "the server refuses plaintext: {}", clients::text(&refused.stdout));

    let config = proxy_config(server.addr(), None, backend_tls(TlsMode::Required, None));
    let proxy = support::start_proxy(config).await;
    for account in [support::app(), support::ed25519_app()] {
        let mut conn = support::connect(proxy.addr(), &account, Some("tls_data")).await;
        let cipher: Option<(String, String)> =
            conn.query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'").await.expect("a query through the proxy");
        assert!(cipher.is_some_and(|(_, cipher)| !cipher.is_empty()), "{}: the server's leg is TLS", account.user);
        let other = support::other_app();
        let options = mysql_async::ChangeUserOpts::default()
            .with_user(Some(other.user.clone()))
            .with_pass(Some(other.password.clone()));
        conn.change_user(options).await.expect("COM_CHANGE_USER over the TLS leg");
        let user: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.expect("a query after it");
        assert!(user.is_some_and(|user| user.starts_with(&other.user)));
        conn.disconnect().await.expect("disconnect");
    }
    let disabled = support::start_proxy(proxy_config(server.addr(), None, backend_tls(TlsMode::Disabled, None))).await;
    let mut plaintext = support::mariadb_cli(disabled.addr(), &support::app(), None);
    plaintext.arg("--skip-ssl");
    let refused = run_sql(plaintext, "SELECT 1").await;
    let stderr = clients::text(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("ERROR 1045"), "the server's own refusal: {stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_to_a_server_resume_its_tls_session() {
    let pki = TestPki::new("csmh-proxy test CA");
    let server = tls_server(&pki, &pki.localhost("server")).await;
    let proxy = support::start_proxy(proxy_config(server.addr(), None, backend_tls(TlsMode::Required, None))).await;
    for _ in 0..3 {
        let conn = support::connect(proxy.addr(), &support::app(), Some("tls_data")).await;
        conn.disconnect().await.expect("disconnect");
    }
    let metrics = &proxy.shared().metrics;
    let handshakes = TLS_KINDS.map(|kind| metrics.backend_tls_handshakes(Server::Edxapp, kind));
    assert_eq!(handshakes, [1, 2], "the next connections resume the first one's TLS session (full, resumed)");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_client_is_never_downgraded_to_a_plaintext_server() {
    let pki = TestPki::new("csmh-proxy test CA");
    let plain = support::private_server().await;
    let config = proxy_config(plain.addr(), listen_tls(&pki.localhost("proxy"), false), BackendTls::default());
    let proxy = support::start_proxy(config).await;
    let output = run_sql(cli_with_tls(proxy.addr(), &support::app(), &pki.ca), "SELECT 1").await;
    let stderr = clients::text(&output.stderr);
    assert!(stderr.contains("ERROR 1429") && stderr.contains("backends.edxapp.tls.mode"), "{stderr}");
    let mut plaintext = support::mariadb_cli(proxy.addr(), &support::app(), None);
    plaintext.arg("--skip-ssl");
    support::cli_stdout(&run_sql(plaintext, "SELECT 1").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_certificate_is_verified_as_the_mode_says() {
    let pki = TestPki::new("csmh-proxy test CA");
    let server = tls_server(&pki, &pki.issue("elsewhere", &["db.example.org"])).await;
    let login = |mode: TlsMode, ca: Option<PathBuf>| {
        let server = Arc::clone(&server);
        async move {
            let proxy = support::start_proxy(proxy_config(server.addr(), None, backend_tls(mode, ca.as_deref()))).await;
            run_sql(support::mariadb_cli(proxy.addr(), &support::app(), None), "SELECT 1").await
        }
    };
    let wrong_name = login(TlsMode::VerifyIdentity, Some(pki.ca.clone())).await;
    let stderr = clients::text(&wrong_name.stderr);
    assert!(stderr.contains("ERROR 1429") && stderr.contains("TLS"), "verify-identity: {stderr}");
    support::cli_stdout(&login(TlsMode::VerifyCa, Some(pki.ca.clone())).await);
    let other_ca = TestPki::new("another CA");
    let untrusted = login(TlsMode::VerifyCa, Some(other_ca.ca.clone())).await;
    assert!(clients::text(&untrusted.stderr).contains("ERROR 1429"), "verify-ca with another authority");
    support::cli_stdout(&login(TlsMode::Required, None).await);
    // An authority given with `required` or `preferred` is checked too (checked: before, it was ignored and
    // these logins succeeded).
    for mode in [TlsMode::Required, TlsMode::Preferred] {
        let untrusted = login(mode, Some(other_ca.ca.clone())).await;
        assert!(clients::text(&untrusted.stderr).contains("ERROR 1429"), "{mode:?} with another authority");
    }
    support::cli_stdout(&login(TlsMode::Required, Some(pki.ca.clone())).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn sysbench_runs_over_tls() {
    let site = Site::new(true).await;
    clients::blocking(|| support::packages::ensure_packages(&["sysbench"])).await;
    let account = support::app();
    // sysbench 1.0 reads its TLS files from fixed names in its working directory.
    let client = site.pki.issue("client", &["edxapp001"]);
    std::fs::copy(&site.pki.ca, site.pki.dir().join("cacert.pem")).expect("cacert.pem");
    std::fs::copy(&client.certificate, site.pki.dir().join("client-cert.pem")).expect("client-cert.pem");
    std::fs::copy(&client.key, site.pki.dir().join("client-key.pem")).expect("client-key.pem");
    let sysbench = |command: &str, addr: SocketAddr| {
        let program = support::packages::find_program("sysbench").unwrap_or_else(|| "sysbench".into());
        let mut sysbench = tokio::process::Command::new(program);
        sysbench
            .args(["oltp_point_select", "--db-driver=mysql", "--mysql-host=127.0.0.1", "--mysql-ssl=on"])
            .arg(format!("--mysql-port={}", addr.port()))
            .arg(format!("--mysql-user={}", account.user))
            .arg(format!("--mysql-password={}", account.password))
            .args(["--mysql-db=tls_data", "--tables=1", "--table-size=100", "--events=200", "--time=0"])
            .arg(command)
            .current_dir(site.pki.dir())
            .kill_on_drop(true);
        sysbench
    };
    clients::run_ok(&mut sysbench("prepare", site.proxy.addr())).await;
    let output = clients::run_ok(&mut sysbench("run", site.proxy.addr())).await;
    let report = clients::text(&output.stdout);
    let events = report.lines().find_map(|line| line.trim().strip_prefix("total number of events:"));
    assert_eq!(events.map(str::trim), Some("200"), "{report}");
    let (tls, plaintext) = site.transports("client");
    assert!(tls >= 2 && plaintext == 0, "sysbench's connections came over TLS: {tls} TLS, {plaintext} plaintext");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_certificate_serves_new_clients_while_open_ones_go_on() {
    let first = TestPki::new("first CA");
    let second = TestPki::new("second CA");
    let server = tls_server(&first, &first.localhost("server")).await;
    let dir = tempfile::tempdir().expect("a directory");
    let (certificate, key) = (dir.path().join("proxy.pem"), dir.path().join("proxy.key"));
    let install = |files: &CertFiles| {
        std::fs::copy(&files.certificate, &certificate).expect("install the certificate");
        std::fs::copy(&files.key, &key).expect("install the key");
    };
    install(&first.localhost("proxy"));
    let path = dir.path().join("proxy.toml");
    let text = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n\n[listen.tls]\ncertificate = \"{}\"\nkey = \"{}\"\n\n\
         [backends.edxapp]\naddress = \"{addr}\"\n\n[backends.csmh]\naddress = \"{addr}\"\n\n{flags}",
        certificate.display(),
        key.display(),
        addr = server.addr(),
        flags = support::FLAGS_OFF
    );
    std::fs::write(&path, text).expect("write proxy.toml");
    let config = Config::load(&path).expect("a valid proxy.toml");
    let proxy = csmh_proxy::server::Proxy::bind(config).await.expect("bind");
    let proxy = proxy.watch_config(csmh_proxy::reload::Watch::file(&path)).spawn();

    // A session that stays open across the rotation: the CLI over TLS, reading statements from its stdin.
    let mut open = support::mariadb_cli(proxy.addr(), &support::app(), None);
    open.arg("--ssl").arg("--ssl-verify-server-cert").arg(format!("--ssl-ca={}", first.ca.display()));
    open.arg("--unbuffered")
        .arg("--skip-column-names")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut open = open.spawn().expect("start the mariadb CLI");
    let mut stdin = open.stdin.take().expect("its stdin");
    let mut stdout = tokio::io::BufReader::new(open.stdout.take().expect("its stdout")).lines();
    stdin.write_all(b"SELECT 'before';\n").await.expect("a statement before");
    let answer = stdout.next_line().await.expect("the CLI's output");
    assert_eq!(answer.as_deref(), Some("before"), "the open session logged in and ran its first statement");

    let generation = proxy.shared().generation();
    install(&second.localhost("proxy"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while proxy.shared().generation() == generation {
        let shared = proxy.shared();
        let (applied, rejected) = (shared.reloads_applied(), shared.reloads_rejected());
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotated certificate was not picked up ({applied} reloads applied, {rejected} rejected)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    support::cli_stdout(&run_sql(cli_with_tls(proxy.addr(), &support::app(), &second.ca), "SELECT 1").await);
    let old = run_sql(cli_with_tls(proxy.addr(), &support::app(), &first.ca), "SELECT 1").await;
    assert!(!old.status.success(), "a new client no longer gets the old certificate");

    std::fs::write(&key, "not a key").expect("break the key");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while proxy.shared().reloads_rejected() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the broken key was not noticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    support::cli_stdout(&run_sql(cli_with_tls(proxy.addr(), &support::app(), &second.ca), "SELECT 2").await);

    stdin.write_all(b"SELECT 'after';\n").await.expect("a statement after");
    drop(stdin);
    let answer = stdout.next_line().await.expect("the CLI's output");
    assert_eq!(answer.as_deref(), Some("after"), "the open session went on with the certificate it began with");
    assert!(open.wait().await.expect("the open session ends").success());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_csmh_connection_has_tls_settings_of_its_own() {
    let pki = TestPki::new("csmh-proxy test CA");
    let (edxapp_cert, csmh_cert) = (pki.localhost("edxapp"), pki.localhost("csmh"));
    let (edxapp, csmh) = tokio::join!(tls_server(&pki, &edxapp_cert), tls_server(&pki, &csmh_cert));
    let dbs = support::EdxDatabases::fresh_on(edxapp, Arc::clone(&csmh)).await;
    dbs.create_edx_schema(false).await;
    require_secure_transport(&csmh).await;
    let flags = csmh_proxy::history::Flags { enable_csmh_extended: true, ..Default::default() };
    let proxy_with = |mode: TlsMode| {
        let mut config = dbs.proxy_toml(flags).config().expect("the fixture's proxy.toml");
        config.backends.csmh.tls = backend_tls(mode, Some(&pki.ca));
        config.listen.tls = listen_tls(&pki.localhost("proxy"), false);
        support::start_proxy(config)
    };

    let proxy = proxy_with(TlsMode::VerifyIdentity).await;
    let mut conn = mysql_async::Conn::new(dbs.proxy_opts(&proxy, &support::app())).await.expect("login");
    conn.query_drop(support::edx::edxapp_insert(1, "{}")).await.expect("a history row written on csmh over TLS");
    let metrics = &proxy.shared().metrics;
    assert_eq!(metrics.connections_by_transport("csmh", true), 1, "the csmh leg is TLS");
    assert_eq!(metrics.connections_by_transport("edxapp", true), 1, "preferred, and the edxapp server offers TLS");

    let disabled = proxy_with(TlsMode::Disabled).await;
    let mut conn = mysql_async::Conn::new(dbs.proxy_opts(&disabled, &support::app())).await.expect("login");
    let (code, message) = support::edx::server_error(conn.query_drop(support::edx::edxapp_insert(1, "{}")).await);
    assert_eq!(code, 1429, "{message}");
    let count: Option<u64> = conn.query_first("SELECT 1").await.expect("the session goes on");
    assert_eq!(count, Some(1));

    // A client over TLS: the csmh leg must be TLS too, or its statement fails.
    let plain = support::private_server().await;
    let plain_dbs = support::EdxDatabases::fresh_on(Arc::clone(&dbs.edxapp), plain).await;
    plain_dbs.create_edx_schema(false).await;
    let mut config = plain_dbs.proxy_toml(flags).config().expect("the fixture's proxy.toml");
    config.listen.tls = listen_tls(&pki.localhost("proxy"), false);
    config.backends.edxapp.tls = backend_tls(TlsMode::Required, None);
    let proxy = support::start_proxy(config).await;
    let mut cli = cli_with_tls(proxy.addr(), &support::app(), &pki.ca);
    cli.arg(format!("--database={}", plain_dbs.edxapp_db));
    let output = run_sql(cli, &support::edx::edxapp_insert(1, "{}")).await;
    let stderr = clients::text(&output.stderr);
    assert!(stderr.contains("ERROR 1429") && stderr.contains("backends.csmh.tls.mode"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_logs_the_proxy_in_to_an_account_that_requires_one() {
    let pki = TestPki::new("csmh-proxy test CA");
    let server = tls_server(&pki, &pki.localhost("server")).await;
    let mut root = support::root_conn(&server).await;
    let account = Account::native("x509_app", "x509-password");
    root.query_drop("CREATE USER x509_app@'%' IDENTIFIED BY 'x509-password' REQUIRE X509").await.expect("CREATE USER");
    let login = |tls: BackendTls| {
        let (server, account) = (Arc::clone(&server), account.clone());
        async move {
            let proxy = support::start_proxy(proxy_config(server.addr(), None, tls)).await;
            mysql_async::Conn::new(account.opts(proxy.addr(), None)).await.map(drop)
        }
    };
    let (code, message) = support::edx::server_error(login(backend_tls(TlsMode::Required, None)).await);
    assert_eq!(code, 1045, "no client certificate, no login: {message}");
    let client = pki.issue("proxy-client", &["csmh-proxy"]);
    let with_certificate = BackendTls {
        certificate: Some(client.certificate.clone()),
        key: Some(client.key.clone()),
        ..backend_tls(TlsMode::VerifyIdentity, Some(&pki.ca))
    };
    login(with_certificate).await.expect("the proxy's client certificate satisfies REQUIRE X509");
}

/// Connects to `addr`, reads the greeting and sends an SSLRequest: a client about to start its TLS handshake.
async fn start_tls_request(addr: SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::AsyncReadExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut header = [0; 4];
    stream.read_exact(&mut header).await.expect("the greeting's header");
    let mut greeting = vec![0; usize::from(u16::from_le_bytes([header[0], header[1]]))];
    stream.read_exact(&mut greeting).await.expect("the greeting");
    let caps = (mysql_common::constants::CapabilityFlags::CLIENT_PROTOCOL_41
        | mysql_common::constants::CapabilityFlags::CLIENT_SSL
        | mysql_common::constants::CapabilityFlags::CLIENT_SECURE_CONNECTION)
        .bits();
    let mut request = vec![32, 0, 0, 1];
    request.extend_from_slice(&caps.to_le_bytes());
    request.resize(4 + 32, 0);
    stream.write_all(&request).await.expect("the SSLRequest");
    stream
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_or_stalled_tls_handshake_ends_only_that_connection() {
    use tokio::io::AsyncReadExt;
    let pki = TestPki::new("csmh-proxy test CA");
    let server = tls_server(&pki, &pki.localhost("server")).await;
    let mut config = proxy_config(server.addr(), listen_tls(&pki.localhost("proxy"), false), BackendTls::default());
    config.listen.handshake_timeout_secs = 1;
    let proxy = support::start_proxy(config).await;

    let mut garbage = start_tls_request(proxy.addr()).await;
    garbage.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]).await.expect("a broken ClientHello");
    let mut stalled = start_tls_request(proxy.addr()).await;
    for stream in [&mut garbage, &mut stalled] {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the proxy closes the connection (a TLS alert at most, no MySQL packet)");
    }
    let output = run_sql(cli_with_tls(proxy.addr(), &support::app(), &pki.ca), "SELECT 'still serving'").await;
    assert!(support::cli_stdout(&output).contains("still serving"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while proxy.shared().metrics.connections_open() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "every session ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_async_with_rustls_changes_user_with_tls_on_both_legs() {
    let site = Site::new(true).await;
    let ssl = mysql_async::SslOpts::default().with_root_certs(vec![site.pki.ca.clone().into()]);
    let account = support::app();
    let opts = mysql_async::OptsBuilder::from_opts(account.opts(site.proxy.addr(), Some("tls_data")))
        .ip_or_hostname("localhost")
        .ssl_opts(Some(ssl));
    let mut conn = mysql_async::Conn::new(opts).await.expect("mysql_async logs in over TLS, verifying the proxy");
    let other = support::other_app();
    let options =
        mysql_async::ChangeUserOpts::default().with_user(Some(other.user.clone())).with_pass(Some(other.password));
    conn.change_user(options).await.expect("COM_CHANGE_USER inside TLS on both legs");
    let user: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.expect("a query after it");
    assert!(user.is_some_and(|user| user.starts_with(&other.user)));
    let cipher: Option<(String, String)> =
        conn.query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'").await.expect("the server's leg");
    assert!(cipher.is_some_and(|(_, cipher)| !cipher.is_empty()));
    conn.disconnect().await.expect("disconnect");
    assert_eq!(site.transports("client"), (1, 0));
}
