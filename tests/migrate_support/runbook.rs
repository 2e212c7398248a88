//! The runbook as an operator walks it through a real proxy: the proxy following the site's `proxy.toml`, the
//! flags flipped in that file, the migration commands run as the built binary, `status --json`'s next step, and
//! edxapp's history read of a learner's module through the proxy.

use std::path::Path;
use std::time::{Duration, Instant};

use csmh_proxy::history::{Flag, Flags, Stage};
use csmh_proxy::reload::Watch;
use csmh_proxy::server::{Proxy, ProxyHandle};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

use super::{MigrationSite, outputs};
use crate::support::edx::edxapp_read;

/// Asserts that `status --json` names `step` as the next one (with the flags to set), and returns the report.
pub async fn assert_next_step(site: &MigrationSite, step: &str, flags: &[(&str, bool)]) -> serde_json::Value {
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

/// The module with the most old history (the smallest id among them).
pub async fn module_with_history(site: &MigrationSite) -> u64 {
    let sql = format!(
        "SELECT student_module_id FROM {} GROUP BY student_module_id ORDER BY COUNT(*) DESC, student_module_id LIMIT 1",
        site.old()
    );
    site.edxapp().await.query_first(sql).await.unwrap().expect("old history")
}

/// The proxy in front of the site, following its `proxy.toml`, with `flags`.
pub async fn serve(site: &MigrationSite, flags: Flags) -> ProxyHandle {
    write_flags(&site.config_path, flags);
    let config = csmh_proxy::config::Config::load(&site.config_path).unwrap();
    let proxy = Proxy::bind(config).await.unwrap_or_else(|e| panic!("the proxy cannot bind: {e}"));
    proxy.watch_config(Watch::file(site.config_path.clone())).spawn()
}

/// Writes the flags of `stage` into the site's `proxy.toml` as an operator's editor does, and waits for the proxy
/// to apply them.
pub async fn flip(site: &MigrationSite, proxy: &ProxyHandle, stage: Stage) {
    let flags = stage.flags();
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
pub fn write_flags(path: &Path, flags: Flags) {
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
pub async fn run(site: &MigrationSite, args: &[&str], status: i32) -> String {
    let output = site.command(args).await;
    assert_eq!(output.status.code(), Some(status), "csmh-proxy {}: {}", args.join(" "), outputs(&output));
    outputs(&output)
}

/// edxapp's history read of `module` through the proxy: ids and states, newest first.
pub async fn read_history(conn: &mut Conn, module: u64) -> Vec<(u64, String)> {
    let rows: Vec<Row> = conn.query(edxapp_read(&module.to_string())).await.unwrap();
    rows.into_iter()
        .map(|row| (row.get(0).unwrap(), row.get::<Option<String>, _>(3).unwrap().unwrap_or_default()))
        .collect()
}

/// Rows in the old table.
pub async fn old_rows(site: &MigrationSite) -> u64 {
    site.edxapp().await.query_first(format!("SELECT COUNT(*) FROM {}", site.old())).await.unwrap().unwrap()
}
