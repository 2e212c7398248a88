//! The real-server fixture of the integration tests: MariaDB servers started on first use, databases private to
//! each test, the proxy running in-process in front of them, and the `mariadb` command-line client.
//!
//! Every test binary shares one server ([`server`]), and a second one for two-server tests
//! ([`second_server`]); a test that needs the real names `edxapp` and `edxapp_csmh` gets servers of its own
//! ([`EdxDatabases::private_one_server`], [`EdxDatabases::private_two_servers`]). Servers are not tied to any
//! tokio runtime, so the `#[tokio::test]`s of a binary, each on its own runtime, can all use them.

// Each test binary uses its own part of the fixture.
#![allow(dead_code)]

pub mod clients;
pub mod edx;
pub mod frozen;
pub mod held;
pub mod memory;
pub mod mutate;
pub mod mysql84;
pub mod packages;
pub mod raw;
pub mod record;
pub mod statements;
pub mod tls;
pub mod twins;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use csmh_proxy::config::Config;
use csmh_proxy::history::Flags;
use csmh_proxy::sandbox::{self, EdxDatabase, EdxSchema, ProxyToml};
use csmh_proxy::server::{Proxy, ProxyHandle};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use tokio::sync::OnceCell;

pub use csmh_proxy::sandbox::{Account, AuthPlugin, MariaDb};

/// A `proxy.toml`'s `[flags]` with every flag off: a configuration file must write them all.
pub const FLAGS_OFF: &str = "[flags]\nENABLE_CSMH_EXTENDED = false\nENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES = false\nREAD_ONLY_FROM_CSMHE = false\n";

/// edxapp's application account (`mysql_native_password`).
pub fn app() -> Account {
    Account::app()
}

/// A second `mysql_native_password` account, to switch to with COM_CHANGE_USER.
pub fn other_app() -> Account {
    Account::native("edxapp002", "other-password")
}

/// An `ed25519` account, to show that authentication methods the proxy does not know pass through.
pub fn ed25519_app() -> Account {
    Account { user: "edxapp_ed25519".to_owned(), password: "ed25519-password".to_owned(), plugin: AuthPlugin::Ed25519 }
}

/// Root, which logs in over TCP without a password.
pub fn root() -> Account {
    Account::native("root", "")
}

/// The accounts the fixture creates on every server; each has every privilege on every fixture database.
pub fn accounts() -> [Account; 3] {
    [app(), other_app(), ed25519_app()]
}

static SHARED: OnceCell<Arc<MariaDb>> = OnceCell::const_new();
static SECOND: OnceCell<Arc<MariaDb>> = OnceCell::const_new();

/// The test binary's shared server, started on first use. Tests keep apart with [`fresh_database`].
pub async fn server() -> Arc<MariaDb> {
    SHARED.get_or_init(private_server).await.clone()
}

/// A second shared server, for tests with `edxapp` and `edxapp_csmh` on different servers.
pub async fn second_server() -> Arc<MariaDb> {
    SECOND.get_or_init(private_server).await.clone()
}

/// A server of the test's own, with the fixture's accounts; it is killed and removed when the last clone of
/// the `Arc` is dropped.
pub async fn private_server() -> Arc<MariaDb> {
    let server = MariaDb::start().await.unwrap_or_else(|e| panic!("cannot start a MariaDB server: {e}"));
    for account in accounts() {
        server.create_account(&account, &[]).await.unwrap_or_else(|e| panic!("cannot create {account:?}: {e}"));
    }
    Arc::new(server)
}

/// A MariaDB server serving `cert` (signed by `pki`), with the fixture's accounts and a database of its own.
pub async fn tls_server(pki: &tls::TestPki, cert: &tls::CertFiles) -> Arc<MariaDb> {
    let server = MariaDb::start_with(&pki.mariadb_options(cert)).await.expect("a MariaDB server with TLS");
    for account in accounts() {
        server.create_account(&account, &[]).await.expect("the fixture's accounts");
    }
    create_database(&server, "tls_data").await;
    Arc::new(server)
}

/// Makes `server` refuse plaintext TCP logins, as a managed server with TLS required does.
pub async fn require_secure_transport(server: &MariaDb) {
    let mut root = root_conn(server).await;
    root.query_drop("SET GLOBAL require_secure_transport = ON").await.expect("require_secure_transport");
}

/// A root connection to `server`.
pub async fn root_conn(server: &MariaDb) -> Conn {
    Conn::new(server.root_opts()).await.unwrap_or_else(|e| panic!("root cannot log in to {}: {e}", server.addr()))
}

/// A connection to `addr` as `account`, with `database` as the default database.
pub async fn connect(addr: SocketAddr, account: &Account, database: Option<&str>) -> Conn {
    Conn::new(account.opts(addr, database))
        .await
        .unwrap_or_else(|e| panic!("{} cannot log in to {addr}: {e}", account.user))
}

static NEXT_DATABASE: AtomicUsize = AtomicUsize::new(1);

/// A number no other test of this binary gets, for database names.
fn unique_number() -> usize {
    NEXT_DATABASE.fetch_add(1, Ordering::Relaxed)
}

/// Creates the empty database `name` on `server`, granting the fixture's accounts everything on it.
pub async fn create_database(server: &MariaDb, name: &str) {
    let mut conn = root_conn(server).await;
    conn.query_drop(format!("CREATE DATABASE `{name}`"))
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    for account in accounts() {
        sandbox::grant_all(&mut conn, &account.user, name).await.unwrap_or_else(|e| panic!("GRANT on {name}: {e}"));
    }
}

/// A new empty database on `server`, named `t<n>_<role>` with a number no other test of this binary uses.
pub async fn fresh_database(server: &MariaDb, role: &str) -> String {
    let name = format!("t{}_{role}", unique_number());
    create_database(server, &name).await;
    name
}

/// A test's pair of edX databases: the server and name of the `edxapp` side and of the `csmh` side (which may be
/// the same server).
#[derive(Clone)]
pub struct EdxDatabases {
    /// The server of the `edxapp` database, which clients authenticate against.
    pub edxapp: Arc<MariaDb>,
    /// The `edxapp` database's name.
    pub edxapp_db: String,
    /// The server of the `edxapp_csmh` database.
    pub csmh: Arc<MariaDb>,
    /// The `edxapp_csmh` database's name.
    pub csmh_db: String,
}

impl EdxDatabases {
    /// Two new empty databases on the shared server, `t<n>_edxapp` and `t<n>_edxapp_csmh`.
    pub async fn fresh() -> EdxDatabases {
        let server = server().await;
        EdxDatabases::fresh_on(server.clone(), server).await
    }

    /// `t<n>_edxapp` on the shared server and `t<n>_edxapp_csmh` on the second shared server.
    pub async fn fresh_two_servers() -> EdxDatabases {
        EdxDatabases::fresh_on(server().await, second_server().await).await
    }

    /// A server of the test's own with empty databases under the real names `edxapp` and `edxapp_csmh`.
    pub async fn private_one_server() -> EdxDatabases {
        let server = private_server().await;
        EdxDatabases::named(server.clone(), server, sandbox::EDXAPP_DB, sandbox::CSMH_DB).await
    }

    /// Two servers of the test's own: empty `edxapp` on one, empty `edxapp_csmh` on the other.
    pub async fn private_two_servers() -> EdxDatabases {
        let (edxapp, csmh) = tokio::join!(private_server(), private_server());
        EdxDatabases::named(edxapp, csmh, sandbox::EDXAPP_DB, sandbox::CSMH_DB).await
    }

    /// Two new empty databases, `t<n>_edxapp` on `edxapp` and `t<n>_edxapp_csmh` on `csmh`.
    pub async fn fresh_on(edxapp: Arc<MariaDb>, csmh: Arc<MariaDb>) -> EdxDatabases {
        let n = unique_number();
        EdxDatabases::named(edxapp, csmh, &format!("t{n}_edxapp"), &format!("t{n}_edxapp_csmh")).await
    }

    async fn named(edxapp: Arc<MariaDb>, csmh: Arc<MariaDb>, edxapp_db: &str, csmh_db: &str) -> EdxDatabases {
        create_database(&edxapp, edxapp_db).await;
        create_database(&csmh, csmh_db).await;
        EdxDatabases { edxapp, edxapp_db: edxapp_db.to_owned(), csmh, csmh_db: csmh_db.to_owned() }
    }

    /// Whether both databases are on one server.
    pub fn same_server(&self) -> bool {
        Arc::ptr_eq(&self.edxapp, &self.csmh)
    }

    /// Creates edx-platform's tables in these databases, with [`sandbox::insert_sample_history`]'s rows if
    /// asked, and returns the extended table's first id.
    pub async fn create_edx_schema(&self, sample_history: bool) -> u64 {
        let schema = EdxSchema {
            edxapp: EdxDatabase { server: self.edxapp.root_opts(), name: self.edxapp_db.clone() },
            csmh: Some(EdxDatabase { server: self.csmh.root_opts(), name: self.csmh_db.clone() }),
            sample_history,
            generated_rows: 0,
        };
        let start =
            sandbox::create_edx_schema(&schema).await.unwrap_or_else(|e| panic!("creating the edX schema: {e}"));
        start.unwrap_or_else(|| unreachable!("the schema has a csmh database"))
    }

    /// `[history]`'s `old_table`: the old history table in this test's `edxapp` database.
    pub fn old_table(&self) -> String {
        format!("{}.{}", self.edxapp_db, sandbox::OLD_TABLE)
    }

    /// `[history]`'s `extended_table`: the extended table in this test's `edxapp_csmh` database.
    pub fn extended_table(&self) -> String {
        format!("{}.{}", self.csmh_db, sandbox::EXTENDED_TABLE)
    }

    /// A `proxy.toml` for a proxy on a free port in front of these databases, with `flags`.
    pub fn proxy_toml(&self, flags: Flags) -> ProxyToml {
        let any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        ProxyToml {
            old_table: self.old_table(),
            extended_table: self.extended_table(),
            flags,
            ..ProxyToml::edx(any_port, self.edxapp.addr(), self.csmh.addr())
        }
    }

    /// Starts the proxy in-process in front of these databases, with `flags`.
    pub async fn start_proxy(&self, flags: Flags) -> ProxyHandle {
        let config = self.proxy_toml(flags).config().unwrap_or_else(|e| panic!("the fixture's proxy.toml: {e}"));
        start_proxy(config).await
    }

    /// Options to log in as `account` directly to the `edxapp` server, in the `edxapp` database.
    pub fn direct_opts(&self, account: &Account) -> Opts {
        account.opts(self.edxapp.addr(), Some(&self.edxapp_db))
    }

    /// The same login as [`EdxDatabases::direct_opts`], through `proxy`.
    pub fn proxy_opts(&self, proxy: &ProxyHandle, account: &Account) -> Opts {
        account.opts(proxy.addr(), Some(&self.edxapp_db))
    }

    /// Options to log in as `account` directly to the `csmh` server, in the `edxapp_csmh` database.
    pub fn csmh_direct_opts(&self, account: &Account) -> Opts {
        account.opts(self.csmh.addr(), Some(&self.csmh_db))
    }
}

/// Binds the proxy with `config` (whose listen address should have port 0) and runs it on this test's runtime.
pub async fn start_proxy(config: Config) -> ProxyHandle {
    let proxy = Proxy::bind(config).await.unwrap_or_else(|e| panic!("the proxy cannot bind: {e}"));
    proxy.spawn()
}

/// The `mariadb` client logging in to `addr` over TCP as `account`, reading no option files, in batch mode
/// (tab-separated output); add `-e <sql>` or pipe statements to its standard input.
pub fn mariadb_cli(addr: SocketAddr, account: &Account, database: Option<&str>) -> tokio::process::Command {
    let binaries = sandbox::mariadb_binaries().unwrap_or_else(|e| panic!("{e}"));
    let mut command = tokio::process::Command::new(&binaries.client);
    command
        .arg("--no-defaults")
        .arg("--protocol=TCP")
        .arg(format!("--host={}", addr.ip()))
        .arg(format!("--port={}", addr.port()))
        .arg(format!("--user={}", account.user))
        .arg(format!("--password={}", account.password))
        .arg("--batch")
        .args(database.map(|db| format!("--database={db}")))
        .kill_on_drop(true);
    command
}

/// Runs `sql` with the `mariadb` client (see [`mariadb_cli`]) and returns its exit status and output.
pub async fn mariadb_cli_run(addr: SocketAddr, account: &Account, database: Option<&str>, sql: &str) -> Output {
    let mut command = mariadb_cli(addr, account, database);
    command.arg("--execute").arg(sql);
    command.output().await.unwrap_or_else(|e| panic!("cannot run the mariadb client: {e}"))
}

/// The standard output of a `mariadb` run that must have succeeded.
pub fn cli_stdout(output: &Output) -> String {
    assert!(output.status.success(), "mariadb failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Reads the proxy's log until a line contains `what`, and returns the value after `address=` on it.
pub async fn address_logged(
    log: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    what: &str,
) -> SocketAddr {
    loop {
        let line =
            tokio::time::timeout(std::time::Duration::from_secs(20), log.next_line()).await.expect("the log goes on");
        let line = line.expect("the proxy's log").unwrap_or_else(|| panic!("the log ended before {what:?}"));
        if line.contains(what) {
            let address = line.split("address=").nth(1).and_then(|rest| rest.split_whitespace().next());
            return address.and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("no address in {line:?}"));
        }
    }
}

/// Starts the built `csmh-proxy serve` with `options` and the configuration at `config`, logging at info level to
/// a pipe (its `stderr`), killed when dropped.
pub fn serve_binary(options: &[&str], config: &std::path::Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_csmh-proxy"))
        .arg("serve")
        .args(options)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the proxy")
}
