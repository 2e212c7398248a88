//! What the tests of real clients share: a database of the test's own with the proxy in front of its server, and
//! running a client program to completion with its output at hand when it fails.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

use csmh_proxy::history::Flags;
use csmh_proxy::server::ProxyHandle;

use super::packages::assert_succeeded;
use crate::support::{EdxDatabases, MariaDb};

/// A database no other test uses, on the shared server, and a proxy (every flag off) in front of that server.
///
/// Create it before installing anything with [`super::packages`]: starting the server installs MariaDB, and two
/// apt-gets cannot run at once.
pub struct ProxiedDatabase {
    databases: EdxDatabases,
    proxy: ProxyHandle,
}

impl ProxiedDatabase {
    /// A new empty database and a proxy running on this test's runtime.
    pub async fn new() -> ProxiedDatabase {
        let databases = EdxDatabases::fresh().await;
        let proxy = databases.start_proxy(Flags::default()).await;
        ProxiedDatabase { databases, proxy }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.databases.edxapp_db
    }

    /// The server the database is on.
    pub fn server(&self) -> &MariaDb {
        &self.databases.edxapp
    }

    /// The server's own address.
    pub fn direct(&self) -> SocketAddr {
        self.databases.edxapp.addr()
    }

    /// The proxy's address.
    pub fn proxy(&self) -> SocketAddr {
        self.proxy.addr()
    }
}

/// Runs `command` to completion, capturing its output; panics if it cannot be started.
pub async fn run(command: &mut tokio::process::Command) -> Output {
    command.output().await.unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// Runs `command` and returns its output, panicking with its exit status, stdout and stderr unless it succeeded.
pub async fn run_ok(command: &mut tokio::process::Command) -> Output {
    let output = run(command).await;
    assert_succeeded(&output, &format!("{command:?}"));
    output
}

/// What `tests/python/client.py`, run by `python`, reports of logging in to `addr` with `driver` (`mysqlclient`
/// or `pymysql`) and `options` (`--user=…`, `--password=…`, `--ca=…`, `--charset=…`, …), then running
/// `statements`: one JSON value per step.
pub async fn python_client_sees(
    python: PathBuf,
    driver: &str,
    addr: SocketAddr,
    options: &[String],
    statements: &[&str],
) -> Vec<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/client.py");
    let mut command = tokio::process::Command::new(python);
    command.arg(script).arg(driver).arg(format!("--address={addr}")).args(options).args(statements);
    let output = run_ok(&mut command).await;
    text(&output.stdout).lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect()
}

/// Bytes of a client's output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs blocking `work` (installing packages, building a virtual environment) off the test's runtime, so a
/// proxy on that runtime keeps serving; a panic in `work` fails the test with its message.
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}
