//! caching_sha2_password, MySQL 8.4's default authentication, through the proxy on every combination of TLS
//! legs, against a scripted MySQL 8.4 server ([`support::mysql84`]): MySQL cannot be installed here, and MariaDB
//! has no caching_sha2_password server plugin. Real clients log in through the proxy (mysql_async, PyMySQL, and
//! mysqlclient on MariaDB Connector/C, whose caching_sha2_password plugin uses OpenSSL's RSA-OAEP), and each test
//! asserts what the user sees (the login succeeds, or fails with the code the driver reports; `SELECT
//! CURRENT_USER()` returns the account) and what the server saw (its leg's transport, the authentication's path,
//! the password it read). The server checks the sequence id of every packet it reads, as the drivers do of every
//! packet they read, so a packet misnumbered on either leg fails the test.
//!
//! What is tested:
//! - plaintext on both legs: full authentication with the server's own RSA key while the server has not cached
//!   the account's hash, fast authentication once it has, and a wrong password refused by the server (1045);
//! - TLS on both legs: full authentication with the password in cleartext inside TLS on each leg, then fast;
//! - a plaintext client and a server over TLS (`[backends.edxapp.tls] mode = "required"`): the proxy answers the
//!   client's request for an RSA key with its own key and hands the server the password in cleartext over TLS;
//!   a wrong password is refused by the server (1045); a client that encrypts with the server's own key, given to
//!   it as a file, is refused by the proxy (1045, saying why); hand-written packets check each packet's sequence
//!   id on both legs, for a full and a fast authentication;
//! - a login on a connection the proxy opened ahead of its client (greeted, not logged in): full authentication
//!   with the server's key over plaintext legs, and through the proxy's key to a server over TLS;
//! - a TLS client whose `edxapp` leg would be plaintext (`mode = "disabled"`, or a server without TLS): refused
//!   with 1429 naming the setting, and nothing of the client's reaches the server;
//! - COM_CHANGE_USER with full authentication on each combination of legs, the server answering with or without
//!   an AuthSwitchRequest carrying a new nonce (mysql_async answers with the key it kept from the login;
//!   Connector/C asks for the key again, and its COM_CHANGE_USER names `mysql_native_password`, so the server
//!   switches it to caching_sha2_password with the same nonce), and with hand-written packets a COM_CHANGE_USER
//!   naming caching_sha2_password after a login under mysql_native_password, as libmysqlclient sends it. PyMySQL
//!   has no COM_CHANGE_USER, and mysql_async is built without TLS here, so the TLS client legs are PyMySQL's and
//!   mysqlclient's.
//!
//! What relies on the protocol being relayed unchanged: every caching_sha2_password exchange except a plaintext
//! client's full authentication with a server over TLS is relayed packet for packet, only the sequence ids
//! renumbered per leg. The proxy checks no scramble, caches no hash and does not tell fast authentication from
//! full: the server decides, and these tests show that its decisions reach the client and the client's answers
//! reach it. They are as faithful as the scripted server is to MySQL's documented sequence, which it follows and
//! which the first test checks against the same client libraries without the proxy; what it does not script is
//! not tested: account locking, expired passwords, `sha256_password`, multi-factor authentication, which nonce a
//! real MySQL server uses for COM_CHANGE_USER (both possibilities are scripted), and what it does after a refused
//! COM_CHANGE_USER.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use csmh_proxy::config::{BackendTls, Config, ListenCertificate, ListenTls, Preconnect, TlsMode};
use csmh_proxy::protocol::frame;
use csmh_proxy::server::ProxyHandle;
use mysql_async::prelude::Queryable;
use mysql_async::{ChangeUserOpts, Conn, OptsBuilder};
use mysql_common::constants::CapabilityFlags;
use mysql_common::constants::UTF8MB4_GENERAL_CI;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, ComChangeUser, ComChangeUserMoreData, HandshakePacket, HandshakeResponse};
use mysql_common::proto::MySerialize;
use serde_json::Value;
use support::clients;
use support::mysql84::{
    self, Account, AuthPath, ChangeUser, FAST_AUTH_OK, Login, Mysql84, Options, PERFORM_FULL_AUTH, REQUEST_PUBLIC_KEY,
    Side, Start,
};
use support::packages::{MYSQLCLIENT, Venv};
use support::tls::TestPki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The account clients log in as.
const USER: &str = "edxapp001";
/// Its password: longer than the 20-byte nonce, so the XOR before RSA encryption wraps around.
const PASSWORD: &str = "a password longer than the twenty-byte nonce";
/// The account COM_CHANGE_USER switches to.
const OTHER_USER: &str = "edxapp002";
/// Its password.
const OTHER_PASSWORD: &str = "another password";
/// An account that still uses mysql_native_password.
const NATIVE_USER: &str = "edxapp_native";
/// Its password.
const NATIVE_PASSWORD: &str = "a native password";
/// A password that is not [`USER`]'s.
const WRONG_PASSWORD: &str = "not the password";
/// What the server answers `SELECT CURRENT_USER()` with for [`USER`].
const CURRENT_USER: &str = "edxapp001@%";

/// The Python drivers, with `cryptography` for PyMySQL's RSA exchange.
const PYTHON_DRIVERS: [&str; 2] = ["pymysql", "mysqlclient"];

/// Where TLS runs.
#[derive(Debug, Clone, Copy)]
struct Legs {
    /// The proxy has `[listen.tls]`, and the Python clients connect with TLS.
    client_tls: bool,
    /// The server has a certificate (offers CLIENT_SSL).
    server_tls: bool,
    /// `[backends.edxapp.tls] mode`.
    mode: TlsMode,
}

impl Legs {
    const PLAINTEXT: Legs = Legs { client_tls: false, server_tls: false, mode: TlsMode::Preferred };
    const TLS: Legs = Legs { client_tls: true, server_tls: true, mode: TlsMode::VerifyIdentity };
    const SERVER_TLS: Legs = Legs { client_tls: false, server_tls: true, mode: TlsMode::Required };
    const TLS_CLIENT_DISABLED_BACKEND: Legs = Legs { client_tls: true, server_tls: true, mode: TlsMode::Disabled };
}

/// The proxy in front of a scripted MySQL 8.4 server, with certificates from a test authority.
struct Site {
    pki: TestPki,
    server: Mysql84,
    proxy: ProxyHandle,
    legs: Legs,
}

impl Site {
    /// A server with [`USER`] and [`OTHER_USER`] (caching_sha2_password, both uncached) and [`NATIVE_USER`], and
    /// the proxy in front of it.
    async fn start(legs: Legs, change_user: ChangeUser) -> Site {
        // The server numbers its connections in the order it accepts them, and the tests expect each login on the
        // next one: connections opened ahead of clients would take numbers no login uses (tests/preconnect.rs).
        Site::start_with(legs, change_user, Preconnect { max: 0, ..Preconnect::default() }).await
    }

    /// [`Site::start`] with the proxy opening connections ahead as `preconnect` says.
    async fn start_with(legs: Legs, change_user: ChangeUser, preconnect: Preconnect) -> Site {
        let pki = TestPki::new("caching_sha2 test authority");
        let certificate = legs.server_tls.then(|| pki.localhost("mysql84"));
        let server = Mysql84::start(Options {
            accounts: vec![
                Account::caching_sha2(USER, PASSWORD),
                Account::caching_sha2(OTHER_USER, OTHER_PASSWORD),
                Account::native(NATIVE_USER, NATIVE_PASSWORD),
            ],
            certificate,
            change_user,
        })
        .await;
        let proxy = support::start_proxy(proxy_config(&pki, server.addr(), legs, preconnect)).await;
        Site { pki, server, proxy, legs }
    }

    /// The certificate authority a TLS client verifies the proxy with; `None` for plaintext clients.
    fn client_ca(&self) -> Option<&Path> {
        self.legs.client_tls.then_some(self.pki.ca.as_path())
    }

    /// Logins the proxy counted on `leg` (`client` or `edxapp`) over TLS or plaintext.
    fn logins_over(&self, leg: &str, tls: bool) -> u64 {
        self.proxy.shared().metrics.connections_by_transport(leg, tls)
    }

    /// The server's authentications, panicking if it saw anything out of order.
    fn server_logins(&self) -> Vec<Login> {
        self.server.assert_no_violation();
        self.server.logins()
    }
}

/// A `proxy.toml` with both backends at `server`, the legs' TLS, and `edxapp`'s connections opened ahead as
/// `preconnect` says.
fn proxy_config(pki: &TestPki, server: SocketAddr, legs: Legs, preconnect: Preconnect) -> Config {
    let mut config = Config::parse(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n\n[backends.edxapp]\naddress = \"{server}\"\n\n\
         [backends.csmh]\naddress = \"{server}\"\n"
    ))
    .unwrap_or_else(|e| panic!("the test's proxy.toml: {e}"));
    if legs.client_tls {
        let proxy = pki.localhost("proxy");
        let certificate = ListenCertificate::Files { certificate: proxy.certificate, key: proxy.key };
        config.listen.tls = Some(ListenTls { certificate, required: false });
    }
    // The authority only for a server with TLS: with a `ca`, `preferred` does not fall back to plaintext.
    let ca = legs.server_tls.then(|| pki.ca.clone());
    config.backends.edxapp.tls = BackendTls { mode: legs.mode, ca, ..BackendTls::default() };
    config.backends.edxapp.preconnect = Some(preconnect);
    config
}

/// The password of the server's account `user`.
fn password_of(user: &str) -> &'static str {
    if user == USER { PASSWORD } else { OTHER_PASSWORD }
}

/// What the server records for a full authentication of `user` with `password` (granted if it is the account's)
/// on its `path`.
fn full_login(connection: usize, start: Start, user: &str, password: &str, path: AuthPath) -> Login {
    Login {
        connection,
        start,
        user: user.to_owned(),
        tls: path == AuthPath::FullCleartext,
        path,
        password: Some(password.to_owned()),
        granted: password == password_of(user),
    }
}

/// What the server records for a fast authentication of [`USER`].
fn fast_login(connection: usize, tls: bool) -> Login {
    Login {
        connection,
        start: Start::Login,
        user: USER.to_owned(),
        tls,
        path: AuthPath::Fast,
        password: None,
        granted: true,
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Clients

/// Logs in with mysql_async as [`USER`] with `password`, in plaintext (mysql_async is built without TLS here).
async fn rust_login(addr: SocketAddr, password: &str) -> Result<Conn, mysql_async::Error> {
    let opts = OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .user(Some(USER))
        .pass(Some(password))
        .prefer_socket(false);
    Conn::new(opts).await
}

/// The account the server says `conn` is logged in as.
async fn current_user(conn: &mut Conn) -> String {
    conn.query_first::<String, _>("SELECT CURRENT_USER()").await.expect("SELECT CURRENT_USER()").expect("a row")
}

/// Asserts that a mysql_async login was refused by the server with 1045 (SQLSTATE 28000), in its own words.
fn assert_access_denied(result: Result<Conn, mysql_async::Error>) {
    match result {
        Err(mysql_async::Error::Server(error)) => {
            assert_eq!((error.code, error.state.as_str()), (mysql84::ER_ACCESS_DENIED_ERROR, "28000"), "{error:?}");
            assert!(error.message.starts_with(&format!("Access denied for user '{USER}'@")), "{error:?}");
        }
        Err(other) => panic!("not a server error: {other}"),
        Ok(_) => panic!("the login succeeded"),
    }
}

/// The Python interpreter of the drivers' virtual environment.
/// Oracle's libmysqlclient (in mysql-connector-python's C extension), the client library Tutor's openedx image
/// builds mysqlclient on.
const LIBMYSQLCLIENT: Venv<'static> = Venv {
    name: "libmysqlclient-venv",
    requirements: &["mysql-connector-python==26.10.0"],
    check: "import _mysql_connector, mysql.connector; assert mysql.connector.HAVE_CEXT",
    build_packages: &[],
};

/// The interpreter that runs `driver`.
async fn python_for(driver: &str) -> PathBuf {
    match driver {
        "libmysqlclient" => clients::blocking(|| LIBMYSQLCLIENT.python()).await,
        _ => python().await,
    }
}

async fn python() -> PathBuf {
    clients::blocking(|| {
        MYSQLCLIENT.python_with(&["PyMySQL==1.1.1", "cryptography==51.0.1"], "import MySQLdb, pymysql, cryptography")
    })
    .await
}

/// A login with a Python driver (`tests/python/client.py`) as [`USER`].
#[derive(Debug, Clone, Copy)]
struct PythonLogin<'a> {
    /// The password it gives.
    password: &'a str,
    /// The certificate authority it verifies the proxy with: TLS to the proxy; `None`: plaintext.
    ca: Option<&'a Path>,
    /// A PEM file of the RSA public key it encrypts the password with, without asking for one (PyMySQL only).
    server_public_key: Option<&'a Path>,
    /// The user and password it changes to with COM_CHANGE_USER after the login (mysqlclient only).
    change_to: Option<(&'a str, &'a str)>,
}

impl<'a> PythonLogin<'a> {
    /// With [`PASSWORD`], over TLS if `ca` is given.
    fn new(ca: Option<&'a Path>) -> PythonLogin<'a> {
        PythonLogin { password: PASSWORD, ca, server_public_key: None, change_to: None }
    }

    /// What `driver` reports of this login to `addr` and of `SELECT CURRENT_USER()` after it: one JSON object per
    /// step.
    async fn run(self, driver: &str, addr: SocketAddr) -> Vec<Value> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/client.py");
        let mut command = tokio::process::Command::new(python_for(driver).await);
        command
            .arg(script)
            .arg(driver)
            .arg(format!("--address={addr}"))
            .arg(format!("--user={USER}"))
            .arg(format!("--password={}", self.password))
            .args(self.ca.map(|ca| format!("--ca={}", ca.display())))
            .args(self.server_public_key.map(|key| format!("--server-public-key={}", key.display())))
            .args(self.change_to.map(|(user, _)| format!("--change-user={user}")))
            .args(self.change_to.map(|(_, password)| format!("--change-password={password}")))
            .arg("SELECT CURRENT_USER()");
        let output = clients::run_ok(&mut command).await;
        clients::text(&output.stdout).lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect()
    }
}

/// Asserts that every step of `driver` succeeded, its connection encrypted if `tls` (where the driver tells), and
/// that the server said it was logged in as `account` at the end.
fn assert_logged_in(driver: &str, steps: &[Value], tls: bool, account: &str) {
    assert!(steps.iter().all(|step| step.get("code").is_none()), "{driver} failed: {steps:?}");
    if driver == "pymysql" {
        assert_eq!(steps[0]["encrypted"], tls, "{driver}'s connection: {steps:?}");
    }
    let last = steps.last().expect("a step");
    assert_eq!(last["rows"], serde_json::json!([[account]]), "{driver}: {steps:?}");
}

/// Asserts that `driver`'s login failed with `code` and a message containing `part`.
fn assert_refused(driver: &str, steps: &[Value], code: u16, part: &str) {
    assert_eq!(steps.len(), 1, "{driver} logged in: {steps:?}");
    assert_eq!(steps[0]["step"], "connect", "{driver}: {steps:?}");
    assert_eq!(steps[0]["class"], "OperationalError", "{driver}: {steps:?}");
    assert_eq!(steps[0]["code"], code, "{driver}: {steps:?}");
    let message = steps[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains(part), "{driver}'s message says {part:?}: {message}");
}

// ---------------------------------------------------------------------------------------------------------------
// The scripted server

#[tokio::test]
async fn real_clients_log_in_to_the_scripted_server_as_to_mysql() {
    let pki = TestPki::new("scripted server authority");
    let accounts = vec![Account::caching_sha2(USER, PASSWORD)];
    let plaintext = Mysql84::start(Options { accounts: accounts.clone(), ..Options::default() }).await;
    let tls =
        Mysql84::start(Options { accounts, certificate: Some(pki.localhost("mysql84")), ..Options::default() }).await;

    let mut conn = rust_login(plaintext.addr(), PASSWORD).await.expect("mysql_async logs in");
    assert_eq!(current_user(&mut conn).await, CURRENT_USER);
    for driver in PYTHON_DRIVERS {
        plaintext.flush_cache();
        assert_logged_in(driver, &PythonLogin::new(None).run(driver, plaintext.addr()).await, false, CURRENT_USER);
        let steps = PythonLogin::new(Some(&pki.ca)).run(driver, tls.addr()).await;
        assert_logged_in(driver, &steps, true, CURRENT_USER);
    }
    let full =
        |connection| full_login(connection, Start::Login, USER, PASSWORD, AuthPath::FullRsa { key_requested: true });
    assert_eq!(plaintext.logins(), [full(0), full(1), full(2)], "each login after a flush is a full one");
    assert_eq!(
        tls.logins(),
        [full_login(0, Start::Login, USER, PASSWORD, AuthPath::FullCleartext), fast_login(1, true)],
        "the first login fills the cache"
    );
    plaintext.assert_no_violation();
    tls.assert_no_violation();
}

#[tokio::test]
async fn libmysqlclient_logs_in_in_full_only_through_a_proxy_that_offers_tls() {
    // A server over TLS whose cache does not hold the account (after a restart, or an ALTER USER as Tutor's init
    // runs): it asks for the password, which libmysqlclient sends only inside TLS or encrypted with a server key
    // it was given, and Tutor gives it none.
    let site = Site::start(Legs::SERVER_TLS, ChangeUser::SameNonce).await;
    let steps = PythonLogin::new(None).run("libmysqlclient", site.proxy.addr()).await;
    assert_eq!(steps[0]["code"], 2061, "without TLS to the proxy: {steps:?}");
    assert!(steps[0]["message"].as_str().unwrap_or_default().contains("secure connection"), "{steps:?}");

    // The proxy's own certificate, made when it starts: libmysqlclient takes the TLS offered and logs in.
    let mut config = proxy_config(&site.pki, site.server.addr(), Legs::SERVER_TLS, Preconnect::default());
    config.listen.tls = Some(ListenTls { certificate: ListenCertificate::SelfSigned, required: false });
    let proxy = support::start_proxy(config).await;
    let steps = PythonLogin::new(None).run("libmysqlclient", proxy.addr()).await;
    assert!(steps.iter().all(|step| step.get("code").is_none()), "{steps:?}");
    assert_eq!(steps.last().unwrap()["rows"], serde_json::json!([[CURRENT_USER]]), "{steps:?}");
    assert_eq!(proxy.shared().metrics.connections_by_transport("client", true), 1, "edxapp's leg was TLS");
    let full = site.server_logins().into_iter().filter(|login| login.path == AuthPath::FullCleartext).count();
    assert_eq!(full, 1, "the server read the password over its own TLS leg");
}

// ---------------------------------------------------------------------------------------------------------------
// 1. Plaintext on both legs

#[tokio::test]
async fn plaintext_legs_relay_full_authentication_with_the_servers_key_then_fast_authentication() {
    let site = Site::start(Legs::PLAINTEXT, ChangeUser::SameNonce).await;
    let addr = site.proxy.addr();

    let mut cold = rust_login(addr, PASSWORD).await.expect("a cold login");
    assert_eq!(current_user(&mut cold).await, CURRENT_USER);
    let mut warm = rust_login(addr, PASSWORD).await.expect("a warm login");
    assert_eq!(current_user(&mut warm).await, CURRENT_USER);
    site.server.flush_cache();
    assert_access_denied(rust_login(addr, WRONG_PASSWORD).await);
    for driver in PYTHON_DRIVERS {
        site.server.flush_cache();
        assert_logged_in(driver, &PythonLogin::new(None).run(driver, addr).await, false, CURRENT_USER);
    }

    let rsa = AuthPath::FullRsa { key_requested: true };
    assert_eq!(
        site.server_logins(),
        [
            full_login(0, Start::Login, USER, PASSWORD, rsa),
            fast_login(1, false),
            full_login(2, Start::Login, USER, WRONG_PASSWORD, rsa),
            full_login(3, Start::Login, USER, PASSWORD, rsa),
            full_login(4, Start::Login, USER, PASSWORD, rsa),
        ],
        "each client encrypted with the server's own key, which decrypted it"
    );
    assert_eq!((site.logins_over("edxapp", false), site.logins_over("edxapp", true)), (5, 0));
}

// ---------------------------------------------------------------------------------------------------------------
// 2. TLS on both legs

#[tokio::test]
async fn tls_legs_carry_the_password_in_cleartext_inside_tls_on_each_leg() {
    let site = Site::start(Legs::TLS, ChangeUser::SameNonce).await;
    let mut expected = Vec::new();
    for driver in PYTHON_DRIVERS {
        site.server.flush_cache();
        for _cold_then_warm in 0..2 {
            let steps = PythonLogin::new(site.client_ca()).run(driver, site.proxy.addr()).await;
            assert_logged_in(driver, &steps, true, CURRENT_USER);
        }
        let n = expected.len();
        expected.push(full_login(n, Start::Login, USER, PASSWORD, AuthPath::FullCleartext));
        expected.push(fast_login(n + 1, true));
    }
    assert_eq!(site.server_logins(), expected, "cold, then warm, for each driver");
    assert_eq!((site.logins_over("client", true), site.logins_over("edxapp", true)), (4, 4));
    assert_eq!((site.logins_over("client", false), site.logins_over("edxapp", false)), (0, 0));
}

// ---------------------------------------------------------------------------------------------------------------
// 3. A plaintext client, a server over TLS

#[tokio::test]
async fn a_plaintext_clients_password_reaches_a_tls_server_through_the_proxys_key() {
    let site = Site::start(Legs::SERVER_TLS, ChangeUser::SameNonce).await;
    let addr = site.proxy.addr();

    let mut conn = rust_login(addr, PASSWORD).await.expect("mysql_async logs in");
    assert_eq!(current_user(&mut conn).await, CURRENT_USER);
    site.server.flush_cache();
    assert_access_denied(rust_login(addr, WRONG_PASSWORD).await);
    for driver in PYTHON_DRIVERS {
        site.server.flush_cache();
        assert_logged_in(driver, &PythonLogin::new(None).run(driver, addr).await, false, CURRENT_USER);
        let wrong = PythonLogin { password: WRONG_PASSWORD, ..PythonLogin::new(None) };
        assert_refused(driver, &wrong.run(driver, addr).await, mysql84::ER_ACCESS_DENIED_ERROR, "Access denied");
    }

    let full = |connection, password| full_login(connection, Start::Login, USER, password, AuthPath::FullCleartext);
    assert_eq!(
        site.server_logins(),
        [
            full(0, PASSWORD),
            full(1, WRONG_PASSWORD),
            full(2, PASSWORD),
            full(3, WRONG_PASSWORD),
            full(4, PASSWORD),
            full(5, WRONG_PASSWORD),
        ],
        "the server read each password in cleartext over TLS, and refused the wrong ones itself"
    );
    assert_eq!((site.logins_over("client", false), site.logins_over("edxapp", true)), (6, 6));
}

/// A connection the proxy opened ahead of its client (greeted, not logged in) carries a full authentication as a
/// fresh one does: the client answers the nonce of the greeting the proxy read before the client came, with the
/// server's key over plaintext legs and through the proxy's key to a server over TLS.
#[tokio::test]
async fn a_connection_opened_ahead_carries_a_full_authentication() {
    for (legs, path) in
        [(Legs::PLAINTEXT, AuthPath::FullRsa { key_requested: true }), (Legs::SERVER_TLS, AuthPath::FullCleartext)]
    {
        let site = Site::start_with(legs, ChangeUser::SameNonce, Preconnect::default()).await;
        let addr = site.proxy.addr();
        let pool = site.proxy.shared().metrics.preconnect();
        // A stream of new clients, which the pool sizes itself from, until a connection is ready.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while pool.ready.get() == 0 {
            assert!(std::time::Instant::now() < deadline, "{legs:?}: no connection was opened ahead: {pool:?}");
            let conn = rust_login(addr, PASSWORD).await.expect("a login of the stream");
            conn.disconnect().await.expect("the login of the stream ends");
        }
        site.server.flush_cache();
        let used = pool.used.get();
        let accepted = site.server.record().connections.len();

        let mut conn = rust_login(addr, PASSWORD).await.expect("the login on a connection opened ahead");
        assert_eq!(current_user(&mut conn).await, CURRENT_USER);
        assert_eq!(pool.used.get(), used + 1, "{legs:?}: the login went over a connection opened ahead");
        let last = site.server_logins().pop().expect("the server saw the login");
        assert!(last.connection < accepted, "{legs:?}: the server accepted the login's connection before the client");
        assert_eq!(last, full_login(last.connection, Start::Login, USER, PASSWORD, path), "{legs:?}");
    }
}

#[tokio::test]
async fn a_client_with_the_servers_own_key_is_refused_when_the_proxy_carries_the_password() {
    let site = Site::start(Legs::SERVER_TLS, ChangeUser::SameNonce).await;
    let key = site.pki.dir().join("mysql84-public-key.pem");
    std::fs::write(&key, site.server.public_key_pem()).expect("write the server's public key");

    let login = PythonLogin { server_public_key: Some(&key), ..PythonLogin::new(None) };
    let steps = login.run("pymysql", site.proxy.addr()).await;
    assert_refused("pymysql", &steps, mysql84::ER_ACCESS_DENIED_ERROR, "does not decrypt with csmh-proxy's key");
    let seen = site.server.ended(0).await;
    assert!(
        seen.packets.iter().all(|packet| packet.payload != format!("{PASSWORD}\0").as_bytes()),
        "the server never got a password: {:?}",
        seen.packets
    );
    assert_eq!(site.server_logins(), [], "the login ended before the server's verdict");
}

/// A plaintext client's logins through the proxy to a server over TLS, packet by packet, with the sequence ids
/// each leg must see: the client's leg has no SSLRequest, and the proxy answers the key request itself.
#[tokio::test]
async fn each_packet_of_a_login_through_the_proxys_key_has_its_legs_sequence_id() {
    let site = Site::start(Legs::SERVER_TLS, ChangeUser::SameNonce).await;

    let (mut client, nonce) = RawLogin::start(&site).await;
    assert_eq!(client.read().await, (2, PERFORM_FULL_AUTH.to_vec()));
    client.send_password_with_the_proxys_key(3, &nonce, &site).await;
    client.select_current_user().await;
    client.quit().await;

    let (mut client, _) = RawLogin::start(&site).await;
    assert_eq!(client.read().await, (2, FAST_AUTH_OK.to_vec()), "the server has the account's hash now");
    client.read_ok(3).await;
    client.quit().await;

    let login =
        [(Side::Server, 0, "greeting"), (Side::Client, 1, "SSLRequest"), (Side::Client, 2, "handshake response")];
    let session = [
        (Side::Client, 0, "COM_QUERY"),
        (Side::Server, 1, "column count"),
        (Side::Server, 2, "column definition"),
        (Side::Server, 3, "row"),
        (Side::Server, 4, "end of rows"),
        (Side::Client, 0, "COM_QUIT"),
    ];
    let full = [
        (Side::Server, 3, "perform full authentication"),
        (Side::Client, 4, "the password in cleartext"),
        (Side::Server, 5, "OK"),
    ];
    let fast =
        [(Side::Server, 3, "fast authentication succeeded"), (Side::Server, 4, "OK"), (Side::Client, 0, "COM_QUIT")];
    let cold = site.server.ended(0).await;
    assert_eq!(summary(&cold.packets), [&login[..], &full, &session].concat(), "the full authentication");
    let warm = site.server.ended(1).await;
    assert_eq!(summary(&warm.packets), [&login[..], &fast].concat(), "the fast authentication");
    assert!(cold.tls && warm.tls);
    assert_eq!(
        site.server_logins(),
        [full_login(0, Start::Login, USER, PASSWORD, AuthPath::FullCleartext), fast_login(1, true)]
    );
}

/// A hand-written client's connection to the proxy, for the packet-level tests.
struct RawLogin {
    stream: TcpStream,
}

impl RawLogin {
    /// Connects to the proxy and reads its greeting; returns the connection and the greeting's nonce.
    async fn connect(site: &Site) -> (RawLogin, Vec<u8>) {
        let stream = TcpStream::connect(site.proxy.addr()).await.expect("connect to the proxy");
        let mut client = RawLogin { stream };
        let (seq, greeting) = client.read().await;
        assert_eq!(seq, 0);
        let greeting: HandshakePacket<'_> = ParseBuf(&greeting).parse(()).expect("a greeting");
        assert_eq!(greeting.server_version_str(), mysql84::VERSION);
        assert_eq!(greeting.auth_plugin_name_ref(), Some(mysql84::CACHING_SHA2));
        assert!(!greeting.capabilities().contains(CapabilityFlags::CLIENT_SSL), "the proxy has no [listen.tls]");
        (client, greeting.nonce())
    }

    /// Connects to the proxy and answers its greeting as [`USER`] with caching_sha2_password's scramble of
    /// [`PASSWORD`]; returns the connection and the greeting's nonce.
    async fn start(site: &Site) -> (RawLogin, Vec<u8>) {
        let (mut client, nonce) = RawLogin::connect(site).await;
        let scramble = mysql84::scramble(PASSWORD.as_bytes(), &nonce);
        client.write(1, &handshake_response(USER, AuthPlugin::CachingSha2Password, &scramble)).await;
        (client, nonce)
    }

    /// After the server asked for [`PASSWORD`]: asks for the RSA key with sequence id `seq`, checks that the
    /// proxy answers with its own, sends the password encrypted with it (XORed with `nonce`) and reads the OK.
    async fn send_password_with_the_proxys_key(&mut self, seq: u8, nonce: &[u8], site: &Site) {
        self.write(seq, &REQUEST_PUBLIC_KEY).await;
        let (read, key) = self.read().await;
        assert_eq!(read, seq + 1);
        let pem = key.strip_prefix(&[0x01]).expect("AuthMoreData");
        assert!(pem.starts_with(b"-----BEGIN PUBLIC KEY-----\n"), "{}", String::from_utf8_lossy(pem));
        assert_ne!(pem, site.server.public_key_pem(), "the proxy's own key, not the server's");
        self.write(seq + 2, &encrypt_password(PASSWORD, nonce, pem)).await;
        self.read_ok(seq + 3).await;
    }

    /// Reads one packet: its sequence id and payload.
    async fn read(&mut self) -> (u8, Vec<u8>) {
        let mut header = [0u8; 4];
        self.stream.read_exact(&mut header).await.expect("a packet header");
        let mut payload = vec![0; u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize];
        self.stream.read_exact(&mut payload).await.expect("a packet payload");
        (header[3], payload)
    }

    /// Reads an OK packet, which must have sequence id `seq`.
    async fn read_ok(&mut self, seq: u8) {
        let (read, ok) = self.read().await;
        assert_eq!((read, ok.first()), (seq, Some(&0x00)), "OK: {ok:?}");
    }

    /// Writes one packet.
    async fn write(&mut self, seq: u8, payload: &[u8]) {
        let mut out = BytesMut::new();
        frame::write_packet(&mut out, seq, payload);
        self.stream.write_all(&out).await.expect("write a packet");
    }

    /// Runs `SELECT CURRENT_USER()`, checking the sequence ids of its answer and its row.
    async fn select_current_user(&mut self) {
        self.write(0, b"\x03SELECT CURRENT_USER()").await;
        let mut answer = Vec::new();
        for _ in 0..4 {
            answer.push(self.read().await);
        }
        assert_eq!(answer.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(answer[2].1, [&[CURRENT_USER.len() as u8][..], CURRENT_USER.as_bytes()].concat(), "the row");
    }

    /// Sends COM_QUIT and waits for the proxy to close the connection.
    async fn quit(mut self) {
        self.write(0, &[0x01]).await;
        assert_eq!(self.stream.read(&mut [0; 1]).await.expect("read"), 0, "the proxy closes after COM_QUIT");
    }
}

/// What each packet on the server's leg is, with its sender and sequence id.
fn summary(packets: &[mysql84::Packet]) -> Vec<(Side, u8, &'static str)> {
    let cleartext = format!("{PASSWORD}\0");
    packets
        .iter()
        .map(|packet| {
            let what = match (packet.from, packet.seq, packet.payload.as_slice()) {
                (Side::Server, 0, [10, ..]) => "greeting",
                (Side::Server, _, [0x01, 0x03]) => "fast authentication succeeded",
                (Side::Server, _, [0x01, 0x04]) => "perform full authentication",
                (Side::Server, _, [0x00, ..]) => "OK",
                (Side::Server, 1, [1]) => "column count",
                (Side::Server, 2, [3, b'd', b'e', b'f', ..]) => "column definition",
                (Side::Server, _, [0xFE, ..]) => "end of rows",
                (Side::Server, 3, _) => "row",
                (Side::Client, 1, payload) if payload.len() == 32 => "SSLRequest",
                (Side::Client, 2, payload) if payload.len() > 32 => "handshake response",
                (Side::Client, _, payload) if payload == cleartext.as_bytes() => "the password in cleartext",
                (Side::Client, 0, [0x03, ..]) => "COM_QUERY",
                (Side::Client, 0, [0x01]) => "COM_QUIT",
                _ => "unexpected",
            };
            (packet.from, packet.seq, what)
        })
        .collect()
}

/// A handshake response for `user` answering with `scramble` for `plugin`.
fn handshake_response(user: &str, plugin: AuthPlugin<'_>, scramble: &[u8]) -> Vec<u8> {
    let caps = CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_LONG_PASSWORD
        | CapabilityFlags::CLIENT_TRANSACTIONS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_DEPRECATE_EOF;
    let response = HandshakeResponse::new(
        Some(scramble),
        (8, 4, 3),
        Some(user.as_bytes()),
        None::<&[u8]>,
        Some(plugin),
        caps,
        None,
        16 * 1024 * 1024,
    );
    let mut payload = Vec::new();
    response.serialize(&mut payload);
    payload
}

/// A COM_CHANGE_USER to `user` answering with caching_sha2_password's `scramble`, naming that method.
fn change_user_command(user: &str, scramble: &[u8]) -> Vec<u8> {
    let more = ComChangeUserMoreData::new(UTF8MB4_GENERAL_CI).with_auth_plugin(Some(AuthPlugin::CachingSha2Password));
    let command = ComChangeUser::new()
        .with_user(Some(user.as_bytes()))
        .with_auth_plugin_data(Some(scramble))
        .with_more_data(Some(more));
    let mut payload = Vec::new();
    command.serialize(&mut payload);
    payload
}

/// What a client sends with the key `pem`: `password\0` XORed with the nonce, encrypted with RSA-OAEP.
fn encrypt_password(password: &str, nonce: &[u8], pem: &[u8]) -> Vec<u8> {
    let block: Vec<u8> =
        password.bytes().chain([0]).zip(nonce.iter().cycle()).map(|(byte, mask)| byte ^ mask).collect();
    mysql_common::crypto::encrypt(&block, pem)
}

// ---------------------------------------------------------------------------------------------------------------
// 4. A TLS client, and no TLS to the server

#[tokio::test]
async fn a_tls_client_is_refused_when_the_edxapp_leg_would_be_plaintext() {
    let server_without_tls = Legs { client_tls: true, server_tls: false, mode: TlsMode::Preferred };
    for legs in [Legs::TLS_CLIENT_DISABLED_BACKEND, server_without_tls] {
        let site = Site::start(legs, ChangeUser::SameNonce).await;
        for driver in PYTHON_DRIVERS {
            let steps = PythonLogin::new(site.client_ca()).run(driver, site.proxy.addr()).await;
            assert_refused(driver, &steps, 1429, "backends.edxapp.tls.mode");
        }
        for connection in 0..PYTHON_DRIVERS.len() {
            let seen = site.server.ended(connection).await;
            let greeting_only = [(Side::Server, 0, "greeting")];
            assert_eq!(summary(&seen.packets), greeting_only, "{legs:?}: nothing of the client's reached the server");
        }
        assert_eq!(site.server_logins(), [], "{legs:?}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 5. COM_CHANGE_USER

/// Logs in with mysql_async as [`USER`] through `site`, then changes to [`OTHER_USER`]; returns the account the
/// server says the connection is logged in as afterwards.
async fn rust_change_user(site: &Site) -> String {
    let mut conn = rust_login(site.proxy.addr(), PASSWORD).await.expect("log in");
    assert_eq!(current_user(&mut conn).await, CURRENT_USER);
    let other =
        ChangeUserOpts::default().with_user(Some(OTHER_USER.to_owned())).with_pass(Some(OTHER_PASSWORD.to_owned()));
    conn.change_user(other).await.expect("COM_CHANGE_USER");
    current_user(&mut conn).await
}

/// Logs in with mysqlclient as [`USER`] through `site` (with TLS if the proxy has it), then changes to
/// [`OTHER_USER`], asserting that the server says it is logged in as that account afterwards. Connector/C asks for
/// the RSA key again in plaintext, and answers the AuthSwitchRequest the server sends it.
async fn python_change_user(site: &Site) {
    let login = PythonLogin { change_to: Some((OTHER_USER, OTHER_PASSWORD)), ..PythonLogin::new(site.client_ca()) };
    let steps = login.run("mysqlclient", site.proxy.addr()).await;
    assert_logged_in("mysqlclient", &steps, site.legs.client_tls, &format!("{OTHER_USER}@%"));
}

#[tokio::test]
async fn change_user_relays_full_authentication_with_the_servers_key_over_plaintext_legs() {
    for change in [ChangeUser::SameNonce, ChangeUser::NewNonce] {
        let site = Site::start(Legs::PLAINTEXT, change).await;
        assert_eq!(rust_change_user(&site).await, format!("{OTHER_USER}@%"), "{change:?}");
        site.server.flush_cache();
        python_change_user(&site).await;
        let rsa = |key_requested| AuthPath::FullRsa { key_requested };
        assert_eq!(
            site.server_logins(),
            [
                full_login(0, Start::Login, USER, PASSWORD, rsa(true)),
                // mysql_async keeps the key it was sent at login: the server's own, which decrypts.
                full_login(0, Start::ChangeUser, OTHER_USER, OTHER_PASSWORD, rsa(false)),
                full_login(1, Start::Login, USER, PASSWORD, rsa(true)),
                full_login(1, Start::ChangeUser, OTHER_USER, OTHER_PASSWORD, rsa(true)),
            ],
            "{change:?}"
        );
    }
}

#[tokio::test]
async fn change_user_of_a_plaintext_client_reaches_a_tls_server_through_the_proxys_key() {
    for change in [ChangeUser::SameNonce, ChangeUser::NewNonce] {
        let site = Site::start(Legs::SERVER_TLS, change).await;
        assert_eq!(rust_change_user(&site).await, format!("{OTHER_USER}@%"), "{change:?}");
        site.server.flush_cache();
        python_change_user(&site).await;
        let full =
            |connection, start, user| full_login(connection, start, user, password_of(user), AuthPath::FullCleartext);
        assert_eq!(
            site.server_logins(),
            [
                full(0, Start::Login, USER),
                full(0, Start::ChangeUser, OTHER_USER),
                full(1, Start::Login, USER),
                full(1, Start::ChangeUser, OTHER_USER),
            ],
            "{change:?}: the proxy decrypted with the nonce in force"
        );
    }
}

#[tokio::test]
async fn change_user_over_tls_legs_carries_the_password_in_cleartext() {
    for change in [ChangeUser::SameNonce, ChangeUser::NewNonce] {
        let site = Site::start(Legs::TLS, change).await;
        python_change_user(&site).await;
        let full = |start, user| full_login(0, start, user, password_of(user), AuthPath::FullCleartext);
        assert_eq!(site.server_logins(), [full(Start::Login, USER), full(Start::ChangeUser, OTHER_USER)], "{change:?}");
    }
}

/// A COM_CHANGE_USER naming caching_sha2_password after a login under mysql_native_password, as libmysqlclient's
/// `mysql_change_user` sends it (it answers with its default method), to an account of that method whose hash
/// is not cached: the server asks for the password without switching methods, and the proxy carries the full
/// authentication as at a login.
#[tokio::test]
async fn change_user_to_caching_sha2_after_a_native_login_carries_the_full_authentication() {
    let site = Site::start(Legs::SERVER_TLS, ChangeUser::SameNonce).await;
    let (mut client, nonce) = RawLogin::connect(&site).await;
    let native = mysql84::native_scramble(NATIVE_PASSWORD.as_bytes(), &nonce);
    client.write(1, &handshake_response(NATIVE_USER, AuthPlugin::MysqlNativePassword, &native)).await;
    client.read_ok(2).await;
    client.write(0, &change_user_command(USER, &mysql84::scramble(PASSWORD.as_bytes(), &nonce))).await;
    assert_eq!(client.read().await, (1, PERFORM_FULL_AUTH.to_vec()));
    client.send_password_with_the_proxys_key(2, &nonce, &site).await;
    client.select_current_user().await;
    client.quit().await;

    let native_login = Login {
        connection: 0,
        start: Start::Login,
        user: NATIVE_USER.to_owned(),
        tls: true,
        path: AuthPath::NativePassword,
        password: None,
        granted: true,
    };
    assert_eq!(
        site.server_logins(),
        [native_login, full_login(0, Start::ChangeUser, USER, PASSWORD, AuthPath::FullCleartext)]
    );
}

// ---------------------------------------------------------------------------------------------------------------
// The proxy's own logins (to a separate `csmh` server, and the shadow worker's)

/// The proxy's own login to a server without TLS that asks for the password in full: refused without the
/// server's key, which a man in the middle could otherwise have swapped for his own (before, the proxy asked
/// the server for its key and sent the password encrypted with whatever came back); with the key given as a
/// file, the password is encrypted with it, no key asked for.
#[tokio::test]
async fn the_proxys_own_login_sends_its_password_only_inside_tls_or_with_the_key_it_was_given() {
    use csmh_proxy::backend::{self, Credentials, LoginError, LoginTls};
    use csmh_proxy::protocol::conn::Connection;
    use csmh_proxy::topology::Server;

    let server =
        Mysql84::start(Options { accounts: vec![Account::caching_sha2(USER, PASSWORD)], ..Options::default() }).await;
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), server.public_key_pem()).unwrap();
    let login = |key: Option<&Path>| {
        let key = key.map(|path| format!("server_public_key = {:?}\n", path.display().to_string()));
        let toml = format!("address = \"{}\"\n[tls]\nmode = \"preferred\"\n{}", server.addr(), key.unwrap_or_default());
        let backend: csmh_proxy::config::Backend = toml::from_str(&toml).unwrap();
        let addr = server.addr();
        async move {
            let settings = csmh_proxy::tls::BackendTls::load(Server::Csmh, &backend).unwrap();
            let credentials =
                Credentials { user: USER.to_owned(), password: Some(PASSWORD.to_owned()), database: None };
            let mut conn = Connection::new(TcpStream::connect(addr).await.unwrap());
            let tls = LoginTls { settings: &settings, client_tls: false };
            backend::login_over(&mut conn, &credentials, backend::LOGIN_CAPABILITIES, Default::default(), Some(tls))
                .await
        }
    };
    let refused = login(None).await;
    assert!(matches!(refused, Err(LoginError::PasswordWithoutTls)), "{refused:?}");
    login(Some(key_file.path())).await.expect("a login with the server's key");
    let logins = server.logins();
    assert_eq!(logins.len(), 1, "the refused login sent no password: {logins:?}");
    assert_eq!(logins[0].path, AuthPath::FullRsa { key_requested: false });
    assert_eq!((logins[0].password.as_deref(), logins[0].granted), (Some(PASSWORD), true));
}

/// `preferred` with a `ca` does not fall back to plaintext on a server that offers no TLS: the operator asked
/// for the certificate to be checked, and a man in the middle could strip the offer to skip the check (before,
/// the login went on in plaintext).
#[tokio::test]
async fn preferred_with_a_ca_does_not_fall_back_to_plaintext() {
    use csmh_proxy::backend::{self, Credentials, LoginError, LoginTls};
    use csmh_proxy::protocol::conn::Connection;
    use csmh_proxy::tls::LegRefusal;
    use csmh_proxy::topology::Server;

    let server =
        Mysql84::start(Options { accounts: vec![Account::caching_sha2(USER, PASSWORD)], ..Options::default() }).await;
    let pki = TestPki::new("an authority the server is not under");
    let toml = format!("address = \"{}\"\n[tls]\nmode = \"preferred\"\nca = {:?}\n", server.addr(), pki.ca);
    let backend: csmh_proxy::config::Backend = toml::from_str(&toml).unwrap();
    let settings = csmh_proxy::tls::BackendTls::load(Server::Csmh, &backend).unwrap();
    let credentials = Credentials { user: USER.to_owned(), password: Some(PASSWORD.to_owned()), database: None };
    let mut conn = Connection::new(TcpStream::connect(server.addr()).await.unwrap());
    let tls = LoginTls { settings: &settings, client_tls: false };
    let login =
        backend::login_over(&mut conn, &credentials, backend::LOGIN_CAPABILITIES, Default::default(), Some(tls)).await;
    assert!(matches!(login, Err(LoginError::TlsRefused(LegRefusal::CertificateToCheck { .. }))), "{login:?}");
    assert!(server.logins().is_empty(), "nothing was sent");
}
