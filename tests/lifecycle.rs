//! The built binary's lifecycle as Kubernetes drives it: `/livez` and `/readyz` on the admin listener, asked with
//! `csmh-proxy healthcheck` (the image's exec health check); then SIGTERM: unready at once while it keeps serving
//! new clients for `listen.drain_secs`, then no new connections, a transaction in flight allowed to commit, the
//! next request of every session outside a transaction answered with 1053, and a clean exit.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::edx::server_error;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

/// The generous bound on anything that should happen within a second or two.
const PATIENCE: Duration = Duration::from_secs(20);

/// Runs `csmh-proxy healthcheck --probe <probe>` against the configuration at `config`.
async fn healthcheck(config: &Path, probe: &str) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_csmh-proxy"))
        .args(["healthcheck", "--probe", probe, "--config"])
        .arg(config)
        .output()
        .await
        .expect("the binary runs")
}

/// Sends `signal` to the child.
fn signal(child: &Child, signal: libc::c_int) {
    let pid = child.id().expect("a running child") as libc::pid_t;
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child's, not yet waited for.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill: {}", std::io::Error::last_os_error());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_then_lets_transactions_finish_and_answers_idle_sessions_with_1053() {
    let server = support::server().await;
    let database = support::fresh_database(&server, "lifecycle").await;
    let mut root = support::root_conn(&server).await;
    root.query_drop(format!("CREATE TABLE `{database}`.t (id INT PRIMARY KEY)")).await.expect("a table");
    let dir = tempfile::tempdir().expect("a directory");
    let config = dir.path().join("proxy.toml");
    let text = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\ndrain_secs = 3\nshutdown_timeout_secs = 10\n\n\
         [admin]\naddress = \"127.0.0.1:0\"\n\n[backends.edxapp]\naddress = \"{addr}\"\n\n\
         [backends.csmh]\naddress = \"{addr}\"\n\n{flags}",
        addr = server.addr(),
        flags = support::FLAGS_OFF
    );
    std::fs::write(&config, text).expect("write proxy.toml");
    let mut child = support::serve_binary(&[], &config);
    let mut log = BufReader::new(child.stderr.take().expect("its log")).lines();
    let proxy = support::address_logged(&mut log, "listening").await;
    let admin = support::address_logged(&mut log, "admin listening").await;
    // The probes read the admin address from the file: give them the one the proxy bound.
    std::fs::write(
        dir.path().join("probe.toml"),
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("[admin]\naddress = \"127.0.0.1:0\"", &format!("[admin]\naddress = \"{admin}\"")),
    )
    .expect("write the probes' file");
    let probes = dir.path().join("probe.toml");
    for probe in ["livez", "readyz"] {
        let output = healthcheck(&probes, probe).await;
        assert!(output.status.success(), "{probe} before SIGTERM: {output:?}");
    }

    let opts = support::app().opts(proxy, Some(&database));
    let mut idle = mysql_async::Conn::new(opts.clone()).await.expect("an idle session");
    let mut in_transaction = mysql_async::Conn::new(opts.clone()).await.expect("a session in a transaction");
    in_transaction.query_drop("BEGIN").await.expect("BEGIN");
    in_transaction.query_drop("INSERT INTO t VALUES (1)").await.expect("an INSERT in the transaction");

    signal(&child, libc::SIGTERM);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while healthcheck(&probes, "readyz").await.status.success() {
        assert!(tokio::time::Instant::now() < deadline, "/readyz still 200 after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let live = healthcheck(&probes, "livez").await;
    assert!(live.status.success(), "live while draining: {live:?}");
    let unready = healthcheck(&probes, "readyz").await;
    assert!(String::from_utf8_lossy(&unready.stderr).contains("503"), "{unready:?}");
    let mut during_drain = mysql_async::Conn::new(opts.clone()).await.expect("a new client while draining");
    let one: Option<u8> = during_drain.query_first("SELECT 1").await.expect("served while draining");
    assert_eq!(one, Some(1));

    // Once the drain is over, the listener is closed.
    while tokio::net::TcpStream::connect(proxy).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "still accepting after the drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, message) = server_error(idle.query_drop("SELECT 1").await);
    assert_eq!(code, 1053, "an idle session's next request: {message}");
    in_transaction.query_drop("INSERT INTO t VALUES (2)").await.expect("the transaction goes on");
    in_transaction.query_drop("COMMIT").await.expect("and commits");
    let (code, _) = server_error(in_transaction.query_drop("SELECT 1").await);
    assert_eq!(code, 1053, "after its transaction, the session's next request");
    let (code, _) = server_error(during_drain.query_drop("SELECT 1").await);
    assert_eq!(code, 1053);

    let status = tokio::time::timeout(PATIENCE, child.wait()).await.expect("the proxy exits").expect("its status");
    assert!(status.success(), "a clean exit: {status}");
    let committed: Vec<i32> = root.query(format!("SELECT id FROM `{database}`.t ORDER BY id")).await.expect("rows");
    assert_eq!(committed, vec![1, 2], "the transaction in flight at SIGTERM committed whole");
    assert!(!healthcheck(&probes, "livez").await.status.success(), "nothing answers once it has exited");
}

#[test]
fn the_images_health_check_runs_the_binarys_own_probe() {
    let dockerfile = include_str!("../Dockerfile");
    let line = dockerfile.lines().skip_while(|line| !line.starts_with("HEALTHCHECK")).nth(1).expect("HEALTHCHECK");
    let exec = line.trim().strip_prefix("CMD ").expect("HEALTHCHECK … CMD");
    let argv: Vec<String> = serde_json::from_str(exec).expect("the exec form: no shell in the image");
    assert_eq!(argv[0], "/usr/local/bin/csmh-proxy");
    assert!(dockerfile.contains("COPY --from=build /src/target/release/csmh-proxy /usr/local/bin/csmh-proxy"));
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_csmh-proxy"))
        .args(&argv[1..])
        .arg("--help")
        .output()
        .expect("the binary runs");
    assert!(help.status.success(), "`{}` is a subcommand: {help:?}", argv[1..].join(" "));
}
