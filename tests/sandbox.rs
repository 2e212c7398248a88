//! `csmh-proxy sandbox` as a newcomer runs it: the built binary starts its two MariaDB servers and the proxy, and
//! the operator's commands run against the configuration it wrote, as README's runbook says; Ctrl-C stops it all.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

/// The generous bound on the sandbox's start (two servers initialised) and stop.
const PATIENCE: Duration = Duration::from_secs(120);

/// Runs `csmh-proxy <args> --config <config>` and returns its exit code and output.
async fn command(args: &[&str], config: &str) -> (Option<i32>, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_csmh-proxy"))
        .args(args)
        .args(["--config", config])
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("the binary runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runbooks_commands_run_against_the_sandbox() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port();
    let mut sandbox = tokio::process::Command::new(env!("CARGO_BIN_EXE_csmh-proxy"))
        .args(["sandbox", "--port", &port.to_string()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the sandbox");
    let mut lines = BufReader::new(sandbox.stdout.take().expect("its output")).lines();
    let config = loop {
        let line = tokio::time::timeout(PATIENCE, lines.next_line()).await.expect("the sandbox starts");
        let line = line.expect("its output").expect("the sandbox names its configuration before it ends");
        if let Some(path) = line.strip_prefix("proxy configuration:") {
            break path.trim().to_owned();
        }
    };

    let (code, status) = command(&["status"], &config).await;
    assert_eq!(code, Some(0), "status against the sandbox: {status}");
    let (code, init) = command(&["init"], &config).await;
    assert_eq!(code, Some(0), "init against the sandbox: {init}");
    let (code, verify) = command(&["verify"], &config).await;
    assert_eq!(code, Some(1), "nothing is copied yet: {verify}");
    let (code, migrate) = command(&["migrate"], &config).await;
    assert_eq!(code, Some(0), "migrate against the sandbox: {migrate}");
    let (code, verify) = command(&["verify"], &config).await;
    assert_eq!(code, Some(0), "verify after migrate: {verify}");
    let (code, status) = command(&["status"], &config).await;
    assert!(code == Some(0) && status.contains("passed"), "status shows the verify: {status}");

    let pid = sandbox.id().expect("a running sandbox") as libc::pid_t;
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child's, not yet waited for.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let stopped = tokio::time::timeout(PATIENCE, sandbox.wait()).await.expect("the sandbox stops on Ctrl-C");
    assert!(stopped.expect("its status").success());
}
