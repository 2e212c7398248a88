//! `status`'s next step when the flags went ahead of the copy, against a real MariaDB server: retired before
//! `migrate` ever ran, reads of the extended table alone while `migrate` copies, and a failed `verify` at each of
//! the last two stages. The next step is never the stage after (nor `truncate-old`) while the copy is unfinished
//! or not verified; it sets the flags back or repairs, and `truncate-old` refuses with the same advice.

mod migrate_support;
mod support;

use std::time::Duration;

use csmh_proxy::history::Stage;
use migrate_support::{MigrationSite, outputs};
use mysql_async::prelude::Queryable;
use serde_json::json;

/// Old history rows on the site.
const ROWS: u64 = 5_000;

/// `status --json`'s next step.
async fn next_step(site: &MigrationSite) -> serde_json::Value {
    let status: serde_json::Value =
        serde_json::from_str(&site.succeeds(&["status", "--json"]).await).expect("status --json");
    status["next_step"].clone()
}

/// Runs a command, expects `code` as its exit status, and returns what it printed.
async fn run(site: &MigrationSite, args: &[&str], code: i32) -> String {
    let output = site.command(args).await;
    assert_eq!(output.status.code(), Some(code), "{args:?}: {}", outputs(&output));
    outputs(&output)
}

#[tokio::test]
async fn status_sets_the_flags_back_or_repairs_while_the_copy_is_unfinished_or_unverified() {
    let mut site = MigrationSite::ready(false, ROWS).await;

    // Retired straight from the start: reads show no old row, and truncating would lose them all.
    site.set_flags(Stage::OldTableRetired.flags());
    let next = next_step(&site).await;
    assert_eq!(next["step"], "set_flags", "{next:#}");
    let back = json!({"READ_ONLY_FROM_CSMHE": false, "ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES": true});
    assert_eq!((&next["set_flags"], &next["then"]), (&back, &json!("migrate")), "{next:#}");
    let refused = run(&site, &["truncate-old", "--yes"], 1).await;
    assert!(refused.contains("has not finished copying"), "{refused}");
    assert!(refused.contains("READ_ONLY_FROM_CSMHE = false"), "{refused}");
    assert!(!refused.contains("fix them by hand"), "{refused}");
    let verify = run(&site, &["verify"], 1).await;
    assert!(verify.contains("not to be fixed by hand") && !verify.contains("fix them by hand"), "{verify}");
    assert_eq!(site.old_fingerprint().await.rows, ROWS, "nothing was removed");

    // Reads of the extended table alone while the copy runs: reads of both tables back on, and wait for it.
    site.set_flags(Stage::ExtendedTableOnlyReads.flags());
    let next = next_step(&site).await;
    let both = json!({"ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES": true});
    assert_eq!((&next["step"], &next["set_flags"], &next["then"]), (&json!("set_flags"), &both, &json!("migrate")));
    let copy = site.spawn(&["migrate", "--max-chunk-rows", "200", "--max-rows-per-second", "1000"]);
    while site.migrate_checkpoint().await.and_then(|(last_id, _)| last_id).unwrap_or(0) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let next = next_step(&site).await;
    assert_eq!((&next["set_flags"], &next["then"]), (&both, &json!("wait_for_migrate")), "{next:#}");
    assert!(next["why"].as_str().unwrap_or("").contains("wait: `csmh-proxy migrate` is running"), "{next:#}");
    let copied = tokio::time::timeout(Duration::from_secs(60), copy.wait_with_output()).await.expect("migrate ends");
    assert_eq!(copied.expect("its output").status.code(), Some(0));

    // Copied but not verified, then a verify that fails: verify, then repair; never the old table retired.
    assert_eq!(next_step(&site).await["step"], "verify");
    let first: u64 =
        site.csmh().await.query_first(format!("SELECT MIN(id) FROM {}", site.extended())).await.unwrap().unwrap();
    site.csmh().await.query_drop(format!("DELETE FROM {} WHERE id = {first}", site.extended())).await.unwrap();
    run(&site, &["verify"], 1).await;
    let next = next_step(&site).await;
    assert_eq!(next["step"], "repair", "{next:#}");
    assert!(next["why"].as_str().unwrap_or("").contains("--from-id"), "{next:#}");

    // Retired with that failed verify: fixed by hand (migrate no longer copies), never truncated as it is.
    site.set_flags(Stage::OldTableRetired.flags());
    let next = next_step(&site).await;
    assert_eq!(next["step"], "repair", "{next:#}");
    assert!(next["why"].as_str().unwrap_or("").contains("by hand"), "{next:#}");

    // Repaired at reads of the extended table alone: then, and only then, the old table is retired and emptied.
    site.set_flags(Stage::ExtendedTableOnlyReads.flags());
    run(&site, &["migrate", "--from-id", &first.to_string()], 0).await;
    assert_eq!(next_step(&site).await["step"], "verify");
    run(&site, &["verify"], 0).await;
    let next = next_step(&site).await;
    assert_eq!((&next["step"], &next["set_flags"]), (&json!("set_flags"), &json!({"READ_ONLY_FROM_CSMHE": true})));
    site.set_flags(Stage::OldTableRetired.flags());
    assert_eq!(next_step(&site).await["step"], "truncate_old");
}

#[tokio::test]
async fn status_names_an_unreachable_server_once() {
    let site = MigrationSite::new(false).await;
    let text = std::fs::read_to_string(&site.config_path).expect("the configuration");
    let server = site.dbs.edxapp.addr().to_string();
    assert!(text.contains(&server), "{text}");
    let path = site.config_path.with_file_name("unreachable.toml");
    std::fs::write(&path, text.replace(&server, "127.0.0.1:1")).expect("write the configuration");
    let output = migrate_support::binary(&path, &["status"]).output().await.expect("run status");
    assert_eq!(output.status.code(), Some(2), "{}", outputs(&output));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("cannot connect to [backends.edxapp] at 127.0.0.1:1: "), "{error}");
    assert!(!error.contains("Input/output error: Input/output error"), "said once: {error}");
}
