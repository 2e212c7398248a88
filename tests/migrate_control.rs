//! Steering a running `csmh-proxy migrate` against real MariaDB servers: `csmh-proxy pause` and `resume` from
//! another process, a pause file, `--max-load` and `--run-between` holding the copy with the reason in its
//! checkpoint and in `status`, and `csmh-proxy throttle` lifting them while the copy runs. Each wait is observed in
//! the checkpoint: its `last_id` does not move, then the copy finishes with every row.

mod migrate_support;
mod support;

use std::time::Duration;

use migrate_support::{MigrationSite, outputs};
use tokio::process::Child;

/// Old rows in each test: enough for many chunks at the throttles the tests set.
const ROWS: u64 = 20_000;

/// `migrate` started in the background with small chunks at a modest pace, and `extra` options.
fn start_migrate(site: &MigrationSite, extra: &[&str]) -> Child {
    let mut args = vec!["migrate", "--max-chunk-rows", "500", "--max-rows-per-second", "4000"];
    args.extend_from_slice(extra);
    site.spawn(&args)
}

/// The migrate checkpoint's state, detail and last id.
async fn checkpoint(site: &MigrationSite) -> Option<(String, Option<String>, Option<u64>)> {
    site.migrate_checkpoint_columns("`state`, `detail`, `last_id`").await
}

/// Waits until the checkpoint says the copy is paused with a reason containing `reason`, and returns its last id.
async fn paused_with(site: &MigrationSite, child: &mut Child, reason: &str) -> u64 {
    for _ in 0..600 {
        if let Some((state, detail, last_id)) = checkpoint(site).await
            && state == "paused"
        {
            let detail = detail.unwrap_or_default();
            assert!(detail.contains(reason), "paused, but not for {reason:?}: {detail}");
            return last_id.unwrap_or(0);
        }
        assert!(child.try_wait().expect("the child").is_none(), "migrate ended without pausing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the checkpoint never said paused for {reason:?}: {:?}", checkpoint(site).await);
}

/// Asserts that the copy stays at `last_id` while paused: two more seconds pass without a chunk committed.
async fn stays_at(site: &MigrationSite, last_id: u64) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (state, _, now) = checkpoint(site).await.expect("a checkpoint");
    assert_eq!((state.as_str(), now.unwrap_or(0)), ("paused", last_id), "the copy went on while paused");
}

/// Waits for `migrate` to end, asserts it succeeded, and that the extended table has every old row; returns its
/// log.
async fn finishes(site: &MigrationSite, child: Child) -> String {
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("migrate ends")
        .expect("migrate's output");
    assert_eq!(output.status.code(), Some(0), "{}", outputs(&output));
    assert_eq!(site.extended_fingerprint(u64::MAX).await, site.old_fingerprint().await);
    let (state, detail, _) = checkpoint(site).await.expect("a checkpoint");
    assert_eq!((state.as_str(), detail), ("done", None));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn pause_from_another_process_holds_the_copy_until_resume_on_either_topology() {
    for two_servers in [true, false] {
        let site = MigrationSite::ready(two_servers, ROWS).await;
        let mut child = start_migrate(&site, &[]);
        while checkpoint(&site).await.and_then(|(_, _, last_id)| last_id).unwrap_or(0) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let paused = site.succeeds(&["pause", "--reason", "exam week"]).await;
        assert!(paused.contains("migrate: paused by `csmh-proxy pause` at "), "{paused}");
        assert!(paused.contains(": exam week"), "{paused}");

        let last_id = paused_with(&site, &mut child, "paused by `csmh-proxy pause`").await;
        stays_at(&site, last_id).await;
        assert!(last_id < site.old_fingerprint().await.max_id, "paused before the end");
        let status = site.succeeds(&["status"]).await;
        assert!(status.contains("migrate:        paused, last written"), "{status}");
        assert!(status.contains("paused: paused by `csmh-proxy pause` at "), "{status}");
        assert!(status.contains("exam week (`csmh-proxy resume` goes on)"), "{status}");
        assert!(status.contains("control:        paused by `csmh-proxy pause`"), "{status}");
        assert!(status.contains("next step:      csmh-proxy resume"), "{status}");
        let json: serde_json::Value = serde_json::from_str(&site.succeeds(&["status", "--json"]).await).expect("JSON");
        assert_eq!(json["migrate"]["state"], "paused", "{json:#}");
        let reason = json["migrate"]["paused_reason"].as_str().expect("a reason");
        assert!(reason.starts_with("paused by `csmh-proxy pause` at ") && reason.contains("exam week"), "{json:#}");
        assert_eq!(json["migrate"]["last_id"], last_id);
        assert_eq!(json["control"]["paused"], true);
        assert_eq!(json["control"]["pause_reason"], "exam week");
        assert_eq!(json["next_step"]["step"], "resume");
        assert_eq!(json["next_step"]["command"], "csmh-proxy resume");

        let resumed = site.succeeds(&["resume"]).await;
        assert!(resumed.contains("migrate: not paused"), "{resumed}");
        finishes(&site, child).await;
    }
}

#[tokio::test]
async fn a_migrate_started_while_paused_waits_and_says_why() {
    let site = MigrationSite::ready(false, ROWS).await;
    site.succeeds(&["pause"]).await;
    let mut child = start_migrate(&site, &[]);
    let last_id = paused_with(&site, &mut child, "paused by `csmh-proxy pause`").await;
    assert_eq!(last_id, 0, "nothing copied while paused");
    stays_at(&site, 0).await;
    site.succeeds(&["resume"]).await;
    finishes(&site, child).await;
}

#[tokio::test]
async fn a_pause_file_holds_the_copy_while_it_exists() {
    let site = MigrationSite::ready(true, ROWS).await;
    let dir = tempfile::tempdir().expect("a directory");
    let pause_file = dir.path().join("pause");
    std::fs::write(&pause_file, "db maintenance until 06:00\nsecond line").expect("the pause file");
    let mut child = start_migrate(&site, &["--pause-file", pause_file.to_str().expect("a path")]);
    let reason =
        format!("the pause file {} exists (remove it to go on): db maintenance until 06:00", pause_file.display());
    let last_id = paused_with(&site, &mut child, &reason).await;
    stays_at(&site, last_id).await;
    std::fs::remove_file(&pause_file).expect("remove the pause file");
    let log = finishes(&site, child).await;
    let pausing = log.lines().find(|line| line.contains("pausing the copy")).unwrap_or_else(|| panic!("{log}"));
    assert!(pausing.contains(&reason), "{pausing}");
    assert!(log.contains("copying again"), "{log}");
}

#[tokio::test]
async fn max_load_holds_the_copy_with_the_reading_and_throttle_lifts_it_while_it_runs() {
    for two_servers in [true, false] {
        let site = MigrationSite::ready(two_servers, ROWS).await;
        // At least one thread runs whenever the server is asked: above any bound of 0.
        let mut child = start_migrate(&site, &["--max-load", "Threads_running=0"]);
        let server = if two_servers { "[backends.csmh]" } else { "the server" };
        let reason = format!(" on {server}, above --max-load 0");
        let last_id = paused_with(&site, &mut child, &reason).await;
        assert!(
            checkpoint(&site)
                .await
                .and_then(|(_, detail, _)| detail)
                .unwrap_or_default()
                .contains("Threads_running = ")
        );
        stays_at(&site, last_id).await;

        let changed = site.succeeds(&["throttle", "--max-load", "none"]).await;
        assert!(changed.contains("throttle overrides: max_load = none"), "{changed}");
        finishes(&site, child).await;
        let shown = site.succeeds(&["throttle"]).await;
        assert!(shown.contains("throttle overrides: max_load = none"), "the override stays: {shown}");
        let reset = site.succeeds(&["throttle", "--reset"]).await;
        assert!(reset.contains("throttle overrides: none (migrate's command line is in force)"), "{reset}");
    }
}

#[tokio::test]
async fn outside_run_between_the_copy_waits_until_the_window_is_lifted() {
    let site = MigrationSite::ready(true, ROWS).await;
    let hour = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).hour();
    let window = format!("{:02}:00-{:02}:00 UTC", (hour + 2) % 24, (hour + 3) % 24);
    let mut child = start_migrate(&site, &["--run-between", &window]);
    let last_id = paused_with(&site, &mut child, &format!("outside --run-between {window}")).await;
    assert_eq!(last_id, 0);
    stays_at(&site, 0).await;
    site.succeeds(&["throttle", "--run-between", "none"]).await;
    finishes(&site, child).await;
}

#[tokio::test]
async fn throttle_refuses_what_migrate_would_and_pause_needs_no_running_copy() {
    let site = MigrationSite::ready(false, ROWS).await;
    let zero = site.command(&["throttle", "--chunk-seconds", "0"]).await;
    assert_eq!(zero.status.code(), Some(1), "{}", outputs(&zero));
    assert!(String::from_utf8_lossy(&zero.stderr).contains("--chunk-seconds must be a positive number"));
    let no_rate = site.command(&["throttle", "--max-rows-per-second", "0"]).await;
    assert_eq!(no_rate.status.code(), Some(1), "{}", outputs(&no_rate));
    let bad_load = site.command(&["throttle", "--max-load", "lots"]).await;
    assert_eq!(bad_load.status.code(), Some(2), "{}", outputs(&bad_load));
    assert!(String::from_utf8_lossy(&bad_load.stderr).contains("is not a load limit such as Threads_running=50"));
    let bad_window = site.command(&["migrate", "--run-between", "22:00-06:00 Mars/Olympus"]).await;
    assert_eq!(bad_window.status.code(), Some(2), "{}", outputs(&bad_window));
    assert!(String::from_utf8_lossy(&bad_window.stderr).contains("no time zone is called Mars/Olympus"));

    let set = site.succeeds(&["throttle", "--max-rows-per-second", "900", "--run-between", "22:00-06:00 UTC"]).await;
    assert!(set.contains("max_rows_per_second = 900, run_between = 22:00-06:00 UTC"), "{set}");
    let status = site.succeeds(&["status"]).await;
    assert!(
        status.contains("control:        not paused; throttle overrides: max_rows_per_second = 900, run_between = "),
        "{status}"
    );
}
