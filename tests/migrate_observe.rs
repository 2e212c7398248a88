//! Watching `csmh-proxy migrate` and `verify` run, against real MariaDB servers: the hooks of `--hooks-path`
//! called with their figures (on start, every few seconds of a throttled copy, on success, on failure), without
//! the configuration's password, and never failing or holding up the run, a hanging one killed at its timeout;
//! and the metrics of `--metrics-address` scraped while the copy runs, while it is paused and after it resumes.

mod migrate_support;
mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use migrate_support::{MigrationSite, outputs};
use mysql_async::prelude::Queryable;
use tokio::process::Child;

/// Old rows in each test: enough for many chunks at the throttles the tests set.
const ROWS: u64 = 20_000;

/// Small chunks at a modest pace: about five seconds for [`ROWS`] rows.
const THROTTLED: [&str; 4] = ["--max-chunk-rows", "500", "--max-rows-per-second", "4000"];

/// How long any run may take before the test gives up on it.
const DEADLINE: Duration = Duration::from_secs(120);

/// One call of a hook: its whole environment.
type Call = BTreeMap<String, String>;

/// A hooks directory, and a directory where the recording hooks write what they were called with.
struct HookDir {
    root: tempfile::TempDir,
}

impl HookDir {
    fn new() -> HookDir {
        let root = tempfile::tempdir().expect("a directory");
        for dir in ["hooks", "calls"] {
            std::fs::create_dir(root.path().join(dir)).expect("a directory");
        }
        HookDir { root }
    }

    /// The directory to give `--hooks-path`.
    fn hooks(&self) -> String {
        self.path("hooks").to_str().expect("a path").to_owned()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// Adds the executable hook `name` running the shell `script`.
    fn add(&self, name: &str, script: &str) {
        let path = self.path("hooks").join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("write the hook");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("make it executable");
    }

    /// Adds the hooks `names`, each writing its whole environment (`env -0`) to a file of its own in `calls/`,
    /// named after `CSMH_HOOK`.
    fn recording(&self, names: &[&str]) {
        let calls = self.path("calls");
        let calls = calls.display();
        for name in names {
            self.add(name, &format!("env -0 > \"{calls}/.$$\" && mv \"{calls}/.$$\" \"{calls}/$CSMH_HOOK.$$\""));
        }
    }

    /// The calls of `hook` recorded so far.
    fn calls(&self, hook: &str) -> Vec<Call> {
        let entries = std::fs::read_dir(self.path("calls")).expect("the calls");
        let prefix = format!("{hook}.");
        entries
            .map(|entry| entry.expect("an entry").path())
            .filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with(&prefix)))
            .map(|path| {
                let text = std::fs::read(&path).expect("a call");
                let text = String::from_utf8_lossy(&text).into_owned();
                let pairs = text.split('\0').filter_map(|pair| pair.split_once('='));
                pairs.map(|(name, value)| (name.to_owned(), value.to_owned())).collect()
            })
            .collect()
    }

    /// The one call of `hook`.
    fn one_call(&self, hook: &str) -> Call {
        let mut calls = self.calls(hook);
        assert_eq!(calls.len(), 1, "{hook} called {} times: {calls:#?}", calls.len());
        calls.remove(0)
    }
}

/// Asserts that `call` has each of `expected`'s variables with its value.
fn assert_has(call: &Call, expected: &[(&str, &str)]) {
    for (name, value) in expected {
        assert_eq!(call.get(*name).map(String::as_str), Some(*value), "{name} in {call:#?}");
    }
}

/// The number `call` has in `name`.
fn number(call: &Call, name: &str) -> u64 {
    call.get(name).and_then(|value| value.parse().ok()).unwrap_or_else(|| panic!("no number {name} in {call:#?}"))
}

/// Waits for `child` to end (within [`DEADLINE`]) and returns its output.
async fn ended(child: Child) -> Output {
    tokio::time::timeout(DEADLINE, child.wait_with_output()).await.expect("the run ends").expect("its output")
}

#[tokio::test]
async fn hooks_are_called_with_their_figures_on_start_progress_and_success_without_the_password() {
    let site = MigrationSite::ready(true, ROWS).await;
    let max_id = site.old_fingerprint().await.max_id;
    let hooks = HookDir::new();
    hooks.recording(&["on-start", "on-progress", "on-success", "on-failure"]);
    hooks.add("on-start-chat", "echo 'cannot reach the chat' >&2\nexit 7");
    let (config, password) = site.config_with_password_env("CSMH_TEST_EDXAPP_PASSWORD");
    let dir = hooks.hooks();
    let mut args = vec!["migrate", "--hooks-path", &dir, "--hook-progress-minutes", "0.02"];
    args.extend(THROTTLED);
    let mut command = migrate_support::binary(&config, &args);
    command
        .env("RUST_LOG", "info")
        .env("CSMH_TEST_EDXAPP_PASSWORD", &password)
        .env("CSMH_TEST_CHAT_URL", "https://chat.example/hook")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = ended(command.spawn().expect("start migrate")).await;
    assert_eq!(output.status.code(), Some(0), "{}", outputs(&output));
    assert_eq!(site.extended_fingerprint(u64::MAX).await, site.old_fingerprint().await);

    let (old, extended) = (site.dbs.old_table(), site.dbs.extended_table());
    let max = max_id.to_string();
    let start = hooks.one_call("on-start");
    assert_has(
        &start,
        &[
            ("CSMH_HOOK", "on-start"),
            ("CSMH_COMMAND", "migrate"),
            ("CSMH_OLD_TABLE", &old),
            ("CSMH_EXTENDED_TABLE", &extended),
            ("CSMH_LAST_ID", "0"),
            ("CSMH_TARGET_ID", &max),
            ("CSMH_PERCENT", "0.0"),
            ("CSMH_ROWS_COPIED_ALL_RUNS", "0"),
            ("CSMH_EXIT_STATUS", ""),
            ("CSMH_ERROR", ""),
        ],
    );
    let progress = hooks.calls("on-progress");
    assert!(!progress.is_empty(), "on-progress never ran in a throttled run of several seconds");
    for call in &progress {
        assert_has(call, &[("CSMH_HOOK", "on-progress"), ("CSMH_TARGET_ID", &max), ("CSMH_EXIT_STATUS", "")]);
        assert!(number(call, "CSMH_LAST_ID") <= max_id && number(call, "CSMH_ROWS_COPIED") <= ROWS, "{call:#?}");
    }
    let rows = ROWS.to_string();
    let success = hooks.one_call("on-success");
    assert_has(
        &success,
        &[
            ("CSMH_HOOK", "on-success"),
            ("CSMH_ROWS_COPIED", &rows),
            ("CSMH_ROWS_COPIED_ALL_RUNS", &rows),
            ("CSMH_LAST_ID", &max),
            ("CSMH_TARGET_ID", &max),
            ("CSMH_PERCENT", "100.0"),
            ("CSMH_PAUSED", ""),
            ("CSMH_PAUSED_REASON", ""),
            ("CSMH_EXIT_STATUS", "0"),
            ("CSMH_ERROR", ""),
        ],
    );
    assert!(number(&success, "CSMH_ROWS_PER_SECOND") > 0, "{success:#?}");
    assert!(hooks.calls("on-failure").is_empty());

    for call in progress.iter().chain([&start, &success]) {
        assert!(!call.contains_key("CSMH_TEST_EDXAPP_PASSWORD"), "the password's variable reached a hook");
        assert!(!call.values().any(|value| value.contains(&password)), "the password reached a hook");
        assert_eq!(call.get("CSMH_TEST_CHAT_URL").map(String::as_str), Some("https://chat.example/hook"));
    }
    let log = String::from_utf8_lossy(&output.stderr);
    let failed = log.lines().find(|line| line.contains("hook failed")).unwrap_or_else(|| panic!("{log}"));
    assert!(failed.contains("on-start-chat") && failed.contains("exit status: 7"), "{failed}");
    assert!(log.lines().any(|line| line.contains("on-start-chat") && line.contains("cannot reach the chat")), "{log}");
}

#[tokio::test]
async fn a_refused_migrate_calls_on_failure_with_the_error() {
    let mut site = MigrationSite::new(false).await;
    site.set_flags(csmh_proxy::history::Stage::ExtendedTableReadingBoth.flags());
    site.generate_old_rows(100).await;
    let hooks = HookDir::new();
    hooks.recording(&["on-start", "on-progress", "on-success", "on-failure"]);
    let dir = hooks.hooks();
    let refused = site.command(&["migrate", "--hooks-path", &dir]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", outputs(&refused));
    let failure = hooks.one_call("on-failure");
    assert_has(
        &failure,
        &[("CSMH_COMMAND", "migrate"), ("CSMH_EXIT_STATUS", "1"), ("CSMH_LAST_ID", ""), ("CSMH_ROWS_COPIED", "0")],
    );
    let error = &failure["CSMH_ERROR"];
    assert!(error.contains("does not exist: run `csmh-proxy init` first"), "{error}");
    assert!(hooks.calls("on-start").is_empty(), "the run never began");
    assert!(hooks.calls("on-success").is_empty());

    let missing = site.command(&["migrate", "--hooks-path", "/nonexistent/hooks"]).await;
    assert_eq!(missing.status.code(), Some(1), "{}", outputs(&missing));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--hooks-path /nonexistent/hooks: no such directory"));
    let never = site.command(&["migrate", "--hooks-path", &dir, "--hook-progress-minutes", "0"]).await;
    assert_eq!(never.status.code(), Some(1), "{}", outputs(&never));
    assert_eq!(hooks.calls("on-failure").len(), 1, "options refused before the run starts call no hook");
}

#[tokio::test]
async fn verify_calls_on_success_when_the_tables_match_and_on_failure_with_the_differences() {
    let site = MigrationSite::ready(false, ROWS).await;
    let migrated = site.command(&["migrate"]).await;
    assert_eq!(migrated.status.code(), Some(0), "{}", outputs(&migrated));
    let max = site.old_fingerprint().await.max_id.to_string();
    let rows = ROWS.to_string();

    let hooks = HookDir::new();
    hooks.recording(&["on-start", "on-success", "on-failure"]);
    let passed = site.command(&["verify", "--hooks-path", &hooks.hooks()]).await;
    assert_eq!(passed.status.code(), Some(0), "{}", outputs(&passed));
    assert_has(&hooks.one_call("on-start"), &[("CSMH_COMMAND", "verify"), ("CSMH_TARGET_ID", &max)]);
    let success = hooks.one_call("on-success");
    assert_has(
        &success,
        &[
            ("CSMH_COMMAND", "verify"),
            ("CSMH_ROWS_COMPARED", &rows),
            ("CSMH_DIFFERENCES", "0"),
            ("CSMH_LAST_ID", &max),
            ("CSMH_PERCENT", "100.0"),
            ("CSMH_EXIT_STATUS", "0"),
        ],
    );
    assert!(!success.contains_key("CSMH_ROWS_COPIED"), "{success:#?}");
    assert!(hooks.calls("on-failure").is_empty());

    // The generated ids are `seq * 3 + seq % 3`: 76 is the 25th row's.
    let delete = format!("DELETE FROM {} WHERE `id` = 76", site.extended());
    site.csmh().await.query_drop(delete).await.expect("delete an extended row");
    let hooks = HookDir::new();
    hooks.recording(&["on-success", "on-failure"]);
    let failed = site.command(&["verify", "--hooks-path", &hooks.hooks()]).await;
    assert_eq!(failed.status.code(), Some(1), "{}", outputs(&failed));
    let failure = hooks.one_call("on-failure");
    assert_has(&failure, &[("CSMH_COMMAND", "verify"), ("CSMH_DIFFERENCES", "1"), ("CSMH_EXIT_STATUS", "1")]);
    let error = &failure["CSMH_ERROR"];
    assert!(error.starts_with("verify FAILED: the tables differ in 1 id ranges:"), "{error}");
    assert!(error.contains("76") && error.contains("missing"), "{error}");
    assert!(hooks.calls("on-success").is_empty());
}

/// Whether the process `pid` is gone (or a zombie left to be reaped).
fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn a_hanging_hook_is_killed_with_what_it_started_at_its_timeout_and_holds_up_nothing() {
    let site = MigrationSite::ready(true, ROWS).await;
    let hooks = HookDir::new();
    for hook in ["on-start", "on-success"] {
        let pid_file = hooks.path(&format!("{hook}.pid"));
        hooks.add(hook, &format!("sleep 600 &\necho $! > {}\nwait", pid_file.display()));
    }
    let child = site.spawn(&["migrate", "--hooks-path", &hooks.hooks(), "--hook-timeout", "2"]);
    let output = ended(child).await;
    assert_eq!(output.status.code(), Some(0), "{}", outputs(&output));
    assert_eq!(site.extended_fingerprint(u64::MAX).await, site.old_fingerprint().await);
    let log = String::from_utf8_lossy(&output.stderr);
    for hook in ["on-start", "on-success"] {
        let killed = log.lines().any(|line| line.contains("killed") && line.contains(&format!("hook=\"{hook}\"")));
        assert!(killed, "{hook} not killed at its timeout:\n{log}");
        let pid = std::fs::read_to_string(hooks.path(&format!("{hook}.pid"))).expect("the hook's pid file");
        assert!(gone(&pid), "the process {hook} started outlived its timeout");
    }
}

/// `GET /metrics` at `address`: the text, or `None` while nothing answers.
async fn scrape(address: &str) -> Option<String> {
    match csmh_proxy::admin::http_get(address, "/metrics").await {
        Ok((200, body)) => Some(String::from_utf8(body).expect("UTF-8")),
        Ok((status, body)) => panic!("/metrics answered {status}: {}", String::from_utf8_lossy(&body)),
        Err(_) => None,
    }
}

/// The value of the sample `series` (name and labels as written) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes `address` until `series` satisfies `wanted`, and returns that scrape; fails if `child` ends first or
/// after [`DEADLINE`].
async fn scrape_until(address: &str, child: &mut Child, series: &str, wanted: impl Fn(f64) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        assert!(child.try_wait().expect("the child").is_none(), "migrate ended first; last scrape:\n{last:?}");
        if let Some(text) = scrape(address).await {
            if sample(&text, series).is_some_and(&wanted) {
                return text;
            }
            last = Some(text);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{series} never reached the value wanted; last scrape:\n{last:?}");
}

/// A free port on the loopback address.
fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").to_string()
}

#[tokio::test]
async fn metrics_show_the_copy_growing_paused_and_resumed_while_it_runs() {
    let site = MigrationSite::ready(false, ROWS).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let taken = taken.local_addr().expect("its address").to_string();
    let refused = site.command(&["migrate", "--metrics-address", &taken]).await;
    assert_eq!(refused.status.code(), Some(2), "{}", outputs(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains(&format!("cannot serve metrics on {taken}")));

    let address = free_address();
    let mut args = vec!["migrate", "--metrics-address", &address];
    args.extend(THROTTLED);
    let mut child = site.spawn(&args);
    let copied = "csmh_migrate_rows_copied_total";
    let first = scrape_until(&address, &mut child, copied, |rows| rows > 0.0).await;
    let rows = sample(&first, copied).unwrap_or_default();
    assert!(first.lines().any(|line| line == "# TYPE csmh_migrate_rows_copied_total counter"), "{first}");
    let max_id = site.old_fingerprint().await.max_id as f64;
    assert_eq!(sample(&first, "csmh_migrate_target_id"), Some(max_id), "{first}");
    assert_eq!(sample(&first, "csmh_migrate_paused"), Some(0.0), "{first}");
    let later = scrape_until(&address, &mut child, copied, |now| now > rows).await;
    assert!(sample(&later, "csmh_migrate_last_id").is_some_and(|last| last > 0.0 && last <= max_id), "{later}");
    assert!(sample(&later, "csmh_migrate_rows_per_second").is_some_and(|rate| rate > 0.0), "{later}");

    site.succeeds(&["pause", "--reason", "exam week"]).await;
    let paused = scrape_until(&address, &mut child, "csmh_migrate_paused", |paused| paused == 1.0).await;
    assert_eq!(sample(&paused, "csmh_migrate_pause_reason{reason=\"pause\"}"), Some(1.0), "{paused}");
    assert_eq!(sample(&paused, "csmh_migrate_pause_reason{reason=\"max_load\"}"), Some(0.0), "{paused}");
    assert!(sample(&paused, "csmh_migrate_last_id").is_some_and(|last| last < max_id), "paused before the end");
    site.succeeds(&["resume"]).await;
    scrape_until(&address, &mut child, "csmh_migrate_paused", |paused| paused == 0.0).await;

    let output = ended(child).await;
    assert_eq!(output.status.code(), Some(0), "{}", outputs(&output));
    assert_eq!(site.extended_fingerprint(u64::MAX).await, site.old_fingerprint().await);
    assert!(scrape(&address).await.is_none(), "the endpoint ends with the run");
}
