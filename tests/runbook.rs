//! The README's "Migrating a large instance", step by step, on one server and on two: `init`, the flags flipped
//! in the `proxy.toml` a running proxy follows, `migrate` while edxapp writes through the proxy, `verify`, the
//! old table retired, `truncate-old` refused and then done, `status`. At every step a learner's history read
//! through the proxy is the same rows, newest first: the migration never shows a row twice or loses one.

mod migrate_support;
mod support;

use csmh_proxy::history::Stage;
use migrate_support::MigrationSite;
use migrate_support::runbook::{assert_next_step, flip, module_with_history, old_rows, read_history, run, serve};
use mysql_async::prelude::Queryable;
use support::edx::edxapp_insert;
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
    let proxy = serve(&site, Stage::OldTableOnly.flags()).await;
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
    flip(&site, &proxy, Stage::ExtendedTableReadingBoth).await;
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
    flip(&site, &proxy, Stage::ExtendedTableOnlyReads).await;
    assert_next_step(&site, "set_flags", &[("READ_ONLY_FROM_CSMHE", true)]).await;
    assert_eq!(read_history(&mut edxapp, module).await, history, "every row is in the extended table");
    let refused = run(&site, &["truncate-old", "--yes"], 1).await;
    assert!(refused.contains("READ_ONLY_FROM_CSMHE"), "{refused}");
    flip(&site, &proxy, Stage::OldTableRetired).await;
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
