//! `csmh-proxy sandbox --rows N` as a newcomer rehearses the README's "Migrating a large instance" on it: the
//! built binary starts its two MariaDB servers (with generated history) and the proxy, and every step of the
//! runbook runs against the configuration it wrote — status, init, the flags flipped in the file the proxy
//! follows, a throttled migrate paused and resumed, verify, the shadow comparison of reads made through the
//! proxy, then the old table retired and emptied; Ctrl-C stops it all.

use std::process::Stdio;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The generous bound on the sandbox's start (two servers initialised) and stop, and on each step.
const PATIENCE: Duration = Duration::from_secs(120);
/// Generated old history rows.
const ROWS: u64 = 20_000;

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

/// Runs a step that must succeed and returns its output.
async fn step(args: &[&str], config: &str) -> String {
    let (code, output) = command(args, config).await;
    assert_eq!(code, Some(0), "csmh-proxy {}: {output}", args.join(" "));
    output
}

/// `status --json`.
async fn status(config: &str) -> serde_json::Value {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_csmh-proxy"))
        .args(["status", "--json", "--config", config])
        .output()
        .await
        .expect("the binary runs");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {output:?}"))
}

/// Sets the flags in the sandbox's file as an operator's editor does, and waits until the proxy runs them.
async fn flip(config: &str, flags: [bool; 3], stage: &str) {
    let text = std::fs::read_to_string(config).expect("the sandbox's file");
    let names = ["ENABLE_CSMH_EXTENDED", "ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES", "READ_ONLY_FROM_CSMHE"];
    let lines: Vec<String> = text
        .lines()
        .map(|line| match names.iter().position(|name| line.starts_with(&format!("{name} ="))) {
            Some(flag) => format!("{} = {}", names[flag], flags[flag]),
            None => line.to_owned(),
        })
        .collect();
    let saved = format!("{config}.new");
    std::fs::write(&saved, lines.join("\n") + "\n").expect("write the flags");
    std::fs::rename(&saved, config).expect("replace the file");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (code, fleet) = command(&["fleet"], config).await;
        if code == Some(0) && fleet.contains(stage) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the proxy never ran {stage}: {fleet}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runbook_rehearsed_on_the_sandbox() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port();
    let mut sandbox = tokio::process::Command::new(env!("CARGO_BIN_EXE_csmh-proxy"))
        .args(["sandbox", "--port", &port.to_string(), "--rows", &ROWS.to_string()])
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
    let config = config.as_str();

    // Where it stands, and step 1.
    let before = status(config).await;
    let old_rows = before["old_table"]["estimated_rows"].as_u64().expect("an estimate");
    assert!(old_rows > ROWS / 2, "the generated history is there: {before:#}");
    assert_eq!(before["next_step"]["step"], "set_flags", "the sandbox made the extended table: {before:#}");
    let plan = step(&["init", "--dry-run"], config).await;
    assert!(plan.contains("checkpoint table `edxapp_csmh`.`csmh_proxy_checkpoint`: would be created"), "{plan}");
    step(&["init"], config).await;

    // Step 2: new history to the extended table, reads of both.
    flip(config, [true, true, false], "extended_table_reading_both").await;
    assert_eq!(status(config).await["next_step"]["step"], "migrate");

    // Step 3: a throttled copy, paused and resumed from another process.
    let mut migrate = tokio::process::Command::new(env!("CARGO_BIN_EXE_csmh-proxy"))
        .args(["migrate", "--max-rows-per-second", "4000", "--max-chunk-rows", "500", "--config", config])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start migrate");
    while status(config).await["migrate"]["last_id"].as_u64().unwrap_or(0) == 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    step(&["pause", "--reason", "rehearsal"], config).await;
    let paused = loop {
        let now = status(config).await;
        if now["migrate"]["state"] == "paused" {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(paused["migrate"]["paused_reason"].as_str().unwrap_or("").contains("rehearsal"), "{paused:#}");
    assert_eq!(paused["next_step"]["step"], "resume", "{paused:#}");
    step(&["resume"], config).await;
    let copied = tokio::time::timeout(PATIENCE, migrate.wait()).await.expect("migrate ends").expect("its status");
    assert!(copied.success(), "migrate after resume");

    // Step 4, and the evidence from reads made through the proxy.
    step(&["verify"], config).await;
    let proxy = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let app = csmh_proxy::sandbox::Account::app();
    let mut client = mysql_async::Conn::new(app.opts(proxy, Some("edxapp"))).await.expect("a client of the proxy");
    for module in 1..=3 {
        let rows: Vec<(u64, Option<String>)> = client
            .query(format!(
                "SELECT `id`, `state` FROM `courseware_studentmodulehistory` WHERE `student_module_id` IN ({module}) \
                 ORDER BY `id` DESC"
            ))
            .await
            .expect("a learner's history through the proxy");
        assert!(!rows.is_empty(), "module {module} has history");
    }
    client.disconnect().await.expect("disconnect");
    let evidence = status(config).await;
    assert_eq!(evidence["shadow"]["compared"], 3, "{evidence:#}");
    assert_eq!(evidence["shadow"]["differing"], 0, "{evidence:#}");
    assert_eq!(evidence["next_step"]["step"], "set_flags", "{evidence:#}");
    assert_eq!(evidence["next_step"]["set_flags"]["ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES"], false);

    // Steps 5 to 7.
    flip(config, [true, false, false], "extended_table_only_reads").await;
    flip(config, [true, false, true], "old_table_retired").await;
    assert_eq!(status(config).await["next_step"]["step"], "truncate_old");
    step(&["truncate-old", "--yes"], config).await;
    assert_eq!(status(config).await["next_step"]["step"], "done");

    let pid = sandbox.id().expect("a running sandbox") as libc::pid_t;
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child's, not yet waited for.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let stopped = tokio::time::timeout(PATIENCE, sandbox.wait()).await.expect("the sandbox stops on Ctrl-C");
    assert!(stopped.expect("its status").success());
}
