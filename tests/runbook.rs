//! The README's "Migrating a large instance", step by step, on one server and on two: `init`, the flags flipped
//! in the `proxy.toml` a running proxy follows, `migrate` while edxapp writes through the proxy, `verify`, the
//! old table retired, `truncate-old` refused and then done, `status`. At every step a learner's history read
//! through the proxy is the same rows, newest first: the migration never shows a row twice or loses one.

mod migrate_support;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use csmh_proxy::history::{Flag, Flags, Stage};
use csmh_proxy::reload::Watch;
use csmh_proxy::server::{Proxy, ProxyHandle};
use migrate_support::{MigrationSite, outputs};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use support::edx::{edxapp_insert, edxapp_read};
use support::{app, connect};

/// Old history rows the site starts with.
const ROWS: u64 = 20_000;

#[tokio::test]
async fn the_runbook_on_one_server() {
    the_runbook(false).await;
}

#[tokio::test]
async fn the_runbook_on_two_servers() {
    the_runbook(true).await;
}

async fn the_runbook(two_servers: bool) {
    let site = MigrationSite::new(two_servers).await;
    site.generate_old_rows(ROWS).await;
    let module = module_with_history(&site).await;
    let proxy = serve(&site).await;
    let mut edxapp = connect(proxy.addr(), &app(), Some(&site.dbs.edxapp_db)).await;
    for attempt in 2..=3 {
        edxapp.query_drop(edxapp_insert(module, &format!("{{\"attempt\": {attempt}}}"))).await.unwrap();
    }
    let mut history = read_history(&mut edxapp, module).await;
    assert_eq!(history.len(), 3, "module {module}'s old history: {history:?}");

    assert_next_step(&site, "init", &[]).await;
    let init = run(&site, &["init"], 0).await;
    assert!(init.contains("starting id"), "{init}");

    // New history goes to the extended table; reads include both tables.
    let both = [("ENABLE_CSMH_EXTENDED", true), ("ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES", true)];
    assert_next_step(&site, "set_flags", &both).await;
    flip(&site, &proxy, Stage::ExtendedTableReadingBoth.flags()).await;
    edxapp.query_drop(edxapp_insert(module, "{\"after\": \"init\"}")).await.unwrap();
    let new_id = edxapp.last_insert_id().unwrap();
    assert!(new_id > history[0].0, "the new row's id {new_id} is above every old id");
    history.insert(0, (new_id, "{\"after\": \"init\"}".to_owned()));
    assert_eq!(read_history(&mut edxapp, module).await, history);

    assert_next_step(&site, "migrate", &[]).await;
    run(&site, &["migrate"], 0).await;
    assert_eq!(read_history(&mut edxapp, module).await, history, "copied rows are not shown twice");
    let status = assert_next_step(&site, "verify", &[]).await;
    assert_eq!(status["migrate"]["state"], "done");
    assert_eq!(status["migrate"]["rows_copied"], ROWS + 2);
    assert_eq!(status["migrate"]["percent"], 100.0);
    assert_eq!(status["migrate"]["eta_seconds"], 0);
    let verify = run(&site, &["verify"], 0).await;
    assert!(verify.contains("passed") || verify.contains("identical"), "{verify}");

    // Reads of the extended table alone, then the old table retired.
    let status = assert_next_step(&site, "set_flags", &[("ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES", false)]).await;
    assert_eq!(status["verify"]["state"], "passed");
    assert_eq!(status["stage"], "extended_table_reading_both");
    flip(&site, &proxy, Stage::ExtendedTableOnlyReads.flags()).await;
    assert_next_step(&site, "set_flags", &[("READ_ONLY_FROM_CSMHE", true)]).await;
    assert_eq!(read_history(&mut edxapp, module).await, history, "every row is in the extended table");
    let refused = run(&site, &["truncate-old", "--yes"], 1).await;
    assert!(refused.contains("READ_ONLY_FROM_CSMHE"), "{refused}");
    flip(&site, &proxy, Stage::OldTableRetired.flags()).await;
    assert_next_step(&site, "truncate_old", &[]).await;
    let plan = run(&site, &["truncate-old"], 0).await;
    assert_eq!(old_rows(&site).await, ROWS + 2, "without --yes nothing changes:\n{plan}");
    run(&site, &["truncate-old", "--yes"], 0).await;
    assert_eq!(old_rows(&site).await, 0);
    assert_eq!(read_history(&mut edxapp, module).await, history, "the history outlives the old table");

    edxapp.query_drop(edxapp_insert(module, "{\"after\": \"truncate\"}")).await.unwrap();
    assert_eq!(read_history(&mut edxapp, module).await.len(), history.len() + 1);
    let status = run(&site, &["status"], 0).await;
    assert!(status.contains("passed"), "the last verify is shown:\n{status}");
    assert!(status.contains("next step:      none: the old table is retired and empty"), "{status}");
    let status = assert_next_step(&site, "done", &[]).await;
    assert_eq!(status["old_table"]["exists"], true);
    assert_eq!(status["old_table"]["last_id"], serde_json::Value::Null, "emptied");
    edxapp.disconnect().await.unwrap();
    proxy.shutdown().await.expect("the proxy shuts down");
}

/// Asserts that `status --json` names `step` as the next one (with the flags to set), and returns the report.
async fn assert_next_step(site: &MigrationSite, step: &str, flags: &[(&str, bool)]) -> serde_json::Value {
    let output = site.command(&["status", "--json"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", outputs(&output));
    let status: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", outputs(&output)));
    assert_eq!(status["format"], 1, "{status:#}");
    assert_eq!(status["next_step"]["step"], step, "{status:#}");
    let expected: serde_json::Map<String, serde_json::Value> =
        flags.iter().map(|(flag, on)| ((*flag).to_owned(), serde_json::Value::Bool(*on))).collect();
    assert_eq!(status["next_step"]["set_flags"], serde_json::Value::Object(expected), "{status:#}");
    assert_eq!(status["ids_below_2_31"]["warning"], if step == "init" { "unknown" } else { "plenty" });
    assert_eq!(status["control"]["paused"], false);
    status
}

/// A module with old history.
async fn module_with_history(site: &MigrationSite) -> u64 {
    let sql = format!(
        "SELECT student_module_id FROM {} GROUP BY student_module_id ORDER BY COUNT(*) DESC, student_module_id LIMIT 1",
        site.old()
    );
    site.edxapp().await.query_first(sql).await.unwrap().expect("old history")
}

/// The proxy in front of the site, following its `proxy.toml`, every flag off.
async fn serve(site: &MigrationSite) -> ProxyHandle {
    write_flags(&site.config_path, Stage::OldTableOnly.flags());
    let config = csmh_proxy::config::Config::load(&site.config_path).unwrap();
    let proxy = Proxy::bind(config).await.unwrap_or_else(|e| panic!("the proxy cannot bind: {e}"));
    proxy.watch_config(Watch::file(site.config_path.clone())).spawn()
}

/// Writes `flags` into the site's `proxy.toml` as an operator's editor does, and waits for the proxy to apply it.
async fn flip(site: &MigrationSite, proxy: &ProxyHandle, flags: Flags) {
    let generation = proxy.shared().generation();
    write_flags(&site.config_path, flags);
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.shared().generation() == generation {
        assert!(Instant::now() < deadline, "the proxy did not apply {flags:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxy.shared().snapshot().config.flags, flags);
}

/// Replaces the `[flags]` values of the file at `path` with `flags`, by renaming a new version over it.
fn write_flags(path: &Path, flags: Flags) {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<String> = text
        .lines()
        .map(|line| match Flag::ALL.iter().find(|flag| line.starts_with(&format!("{} =", flag.name()))) {
            Some(&flag) => format!("{} = {}", flag.name(), flags.is_on(flag)),
            None => line.to_owned(),
        })
        .collect();
    let saved = path.with_extension("toml.new");
    std::fs::write(&saved, lines.join("\n") + "\n").unwrap();
    std::fs::rename(saved, path).unwrap();
}

/// Runs a migration command, expects `status` as its exit status, and returns what it printed.
async fn run(site: &MigrationSite, args: &[&str], status: i32) -> String {
    let output = site.command(args).await;
    assert_eq!(output.status.code(), Some(status), "csmh-proxy {}: {}", args.join(" "), outputs(&output));
    outputs(&output)
}

/// edxapp's history read of `module` through the proxy: ids and states, newest first.
async fn read_history(conn: &mut Conn, module: u64) -> Vec<(u64, String)> {
    let rows: Vec<Row> = conn.query(edxapp_read(&module.to_string())).await.unwrap();
    rows.into_iter()
        .map(|row| (row.get(0).unwrap(), row.get::<Option<String>, _>(3).unwrap().unwrap_or_default()))
        .collect()
}

/// Rows in the old table.
async fn old_rows(site: &MigrationSite) -> u64 {
    site.edxapp().await.query_first(format!("SELECT COUNT(*) FROM {}", site.old())).await.unwrap().unwrap()
}
