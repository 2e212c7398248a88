//! `csmh-proxy migrate` against real MariaDB servers, across two servers and on one: 200,000 edX-shaped rows
//! with id gaps copied with their ids and exact values while edxapp keeps writing to the old table, a run killed
//! with SIGKILL and resumed with nothing lost or copied twice, and the refusals an operator can meet.

mod migrate_support;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use csmh_proxy::history::Stage;
use csmh_proxy::migrate::Site;
use csmh_proxy::migrate::copy::{MigrateArgs, migrate};
use csmh_proxy::migrate::init::init;
use migrate_support::{MigrationSite, outputs};
use mysql_async::prelude::Queryable;

/// Rows of old history in each copy test.
const ROWS: u64 = 200_000;

#[tokio::test]
async fn copies_200k_rows_across_two_servers_while_edxapp_writes() {
    copies_every_row_while_edxapp_writes(true).await;
}

#[tokio::test]
async fn copies_200k_rows_on_one_server_while_edxapp_writes() {
    copies_every_row_while_edxapp_writes(false).await;
}

/// Copies [`ROWS`] rows while a writer adds rows to the old table from the first chunk on until the copy is
/// halfway through its first pass: every row, the writer's included, ends up in the extended table with its id
/// and exact values, and a second run finds nothing to copy.
async fn copies_every_row_while_edxapp_writes(two_servers: bool) {
    let site = MigrationSite::new(two_servers).await;
    site.generate_old_rows(ROWS).await;
    let target = site.old_fingerprint().await.max_id;
    init(&site.site(), 10_000).await.expect("init");

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_history_until_halfway(Arc::clone(&site_handle(&site)), target, Arc::clone(&stop)));
    let report = migrate(&site.site(), &MigrateArgs::default()).await.expect("migrate");
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.expect("the writer");

    assert!(written > 0, "the writer wrote while the copy ran");
    assert!(report.passes >= 2, "a catch-up pass copied the writer's rows: {report:?}");
    assert_eq!(report.rows_copied, ROWS + written, "{report}");
    assert_eq!(report.server_side, !two_servers);
    let old = site.old_fingerprint().await;
    assert_eq!(old.rows, ROWS + written);
    assert_eq!(report.last_id, old.max_id, "{report}");
    assert_eq!(site.extended_fingerprint(u64::MAX).await, old, "same ids and values in both tables");
    assert!(report.to_string().contains(&format!("every old row up to id {} is in the extended table", old.max_id)));

    let again = migrate(&site.site(), &MigrateArgs::default()).await.expect("migrate again");
    assert_eq!((again.rows_copied, again.passes, again.resumed_from), (0, 0, Some(old.max_id)), "{again}");
    assert_eq!(again.rows_total, ROWS + written);
}

/// What the writer needs of the site (the test keeps the site itself).
fn site_handle(site: &MigrationSite) -> Arc<WriterSite> {
    Arc::new(WriterSite {
        edxapp: site.dbs.direct_opts(&support::app()),
        old: site.old(),
        csmh_db: site.dbs.csmh_db.clone(),
        csmh: site.dbs.csmh_direct_opts(&support::app()),
    })
}

/// Where the writer writes and where it reads the copy's progress.
struct WriterSite {
    edxapp: mysql_async::Opts,
    old: String,
    csmh: mysql_async::Opts,
    csmh_db: String,
}

/// Inserts history rows one at a time, as edxapp does, from the copy's first checkpoint until it has copied half
/// of the ids up to `target` (or `stop`); returns how many.
async fn write_history_until_halfway(site: Arc<WriterSite>, target: u64, stop: Arc<AtomicBool>) -> u64 {
    let mut edxapp = mysql_async::Conn::new(site.edxapp.clone()).await.expect("writer login");
    let mut csmh = mysql_async::Conn::new(site.csmh.clone()).await.expect("writer login");
    let progress = format!("SELECT `last_id` FROM `{}`.`csmh_proxy_checkpoint` WHERE `task` = 'migrate'", site.csmh_db);
    let insert = format!(
        "INSERT INTO {} (`version`, `created`, `state`, `grade`, `max_grade`, `student_module_id`) \
         VALUES (NULL, NOW(6), '{{\"attempts\": 1}}', 0.5, 1, 42)",
        site.old
    );
    let mut written = 0;
    loop {
        let last: Option<u64> = match csmh.query_first::<Option<u64>, _>(&progress).await {
            Ok(row) => row.flatten(),
            Err(_) => None,
        };
        match last {
            Some(last) if last >= target / 2 => return written,
            Some(last) if last > 0 => {
                edxapp.query_drop(&insert).await.expect("insert history");
                written += 1;
            }
            _ if stop.load(Ordering::Relaxed) => return written,
            _ => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

#[tokio::test]
async fn resumes_after_kill_9_across_two_servers() {
    resumes_after_kill_9(true).await;
}

#[tokio::test]
async fn resumes_after_kill_9_on_one_server() {
    resumes_after_kill_9(false).await;
}

/// Kills `csmh-proxy migrate` with SIGKILL once its checkpoint shows progress: the extended table then holds
/// exactly the old rows up to the checkpoint, and the next run copies the rest, nothing lost or copied twice.
async fn resumes_after_kill_9(two_servers: bool) {
    let site = MigrationSite::new(two_servers).await;
    site.generate_old_rows(ROWS).await;
    let init = site.command(&["init"]).await;
    assert_eq!(init.status.code(), Some(0), "{}", outputs(&init));

    let mut child = site
        .binary(&["migrate", "--max-rows-per-second", "40000", "--chunk-seconds", "0.1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start csmh-proxy migrate");
    let (last_id, rows_done) = loop {
        if let Some((Some(last_id), rows_done)) = site.migrate_checkpoint().await {
            if rows_done >= 20_000 {
                break (last_id, rows_done);
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "migrate ended before it was killed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    child.start_kill().expect("SIGKILL");
    let status = child.wait().await.unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));

    let (killed_at, done_at_kill) = site.migrate_checkpoint().await.expect("a checkpoint");
    let killed_at = killed_at.expect("a last id");
    assert!(killed_at >= last_id && done_at_kill >= rows_done);
    let copied = site.extended_fingerprint(u64::MAX).await;
    assert_eq!(copied, site.old_fingerprint_up_to(killed_at).await, "exactly the rows up to the checkpoint");
    assert_eq!(copied.rows, done_at_kill);
    assert!(copied.rows < ROWS, "killed before the end");

    let resumed = site.command(&["migrate"]).await;
    assert_eq!(resumed.status.code(), Some(0), "{}", outputs(&resumed));
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    assert!(stdout.contains(&format!("resumed after id {killed_at}\n")), "{stdout}");
    assert!(stdout.contains(&format!("copied {} rows", ROWS - done_at_kill)), "{stdout}");
    assert!(stdout.contains(&format!("; {ROWS} rows since the migration started")), "{stdout}");
    assert_eq!(site.extended_fingerprint(u64::MAX).await, site.old_fingerprint().await);
}

/// Kills `csmh-proxy migrate --from-id 1` with SIGKILL once its re-copy has gone past id 10,000; the same
/// command run again (a Kubernetes Job retries with the same arguments) finishes the re-copy. Before, the second
/// run took the first one's position for the end of what had been copied, and refused the copies above it as
/// rows of the extended table's own, for good.
#[tokio::test]
async fn an_interrupted_rerun_from_an_id_can_be_run_again() {
    let site = MigrationSite::new(true).await;
    site.generate_old_rows(60_000).await;
    init(&site.site(), 10_000).await.expect("init");
    migrate(&site.site(), &MigrateArgs::default()).await.expect("migrate");

    let recopy = ["migrate", "--from-id", "1", "--max-rows-per-second", "20000", "--chunk-seconds", "0.1"];
    let mut child = site.binary(&recopy).stdout(std::process::Stdio::null()).spawn().expect("start the re-copy");
    loop {
        if let Some((Some(last_id), _)) = site.migrate_checkpoint().await {
            if (10_000..50_000).contains(&last_id) {
                break;
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "the re-copy ended before it was killed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.start_kill().expect("SIGKILL");
    child.wait().await.unwrap();

    let again = site.command(&recopy[..3]).await;
    assert_eq!(again.status.code(), Some(0), "{}", outputs(&again));
    assert_eq!(site.extended_fingerprint(u64::MAX).await, site.old_fingerprint().await);
    let resumed = site.command(&["migrate"]).await;
    assert_eq!(resumed.status.code(), Some(0), "a plain run after it: {}", outputs(&resumed));
}

#[tokio::test]
async fn migrate_refuses_before_init() {
    let site = MigrationSite::new(true).await;
    let output = site.command(&["migrate"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", outputs(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not exist: run `csmh-proxy init` first"), "{stderr}");
}

#[tokio::test]
async fn a_rerun_from_an_id_repairs_rows_changed_or_deleted_after_their_copy() {
    for two_servers in [true, false] {
        let site = MigrationSite::new(two_servers).await;
        site.generate_old_rows(5_000).await;
        init(&site.site(), 10_000).await.expect("init");
        migrate(&site.site(), &MigrateArgs::default()).await.expect("migrate");
        // What the race of a chunk's read with edxapp's writes can leave: a copy the old table no longer has, and
        // a copy older than its row.
        let mut edxapp = site.edxapp().await;
        edxapp.query_drop(format!("DELETE FROM {} WHERE `id` BETWEEN 100 AND 130", site.old())).await.unwrap();
        edxapp
            .query_drop(format!("UPDATE {} SET `state` = 'newer' WHERE `id` > 200 ORDER BY `id` LIMIT 1", site.old()))
            .await
            .unwrap();
        assert_ne!(site.extended_fingerprint(u64::MAX).await, site.old_fingerprint().await);

        let repair = MigrateArgs { from_id: Some(50), ..MigrateArgs::default() };
        let report = migrate(&site.site(), &repair).await.expect("migrate --from-id");
        assert_eq!(report.resumed_from, Some(49));
        let printed = report.to_string();
        assert!(printed.starts_with("copying again from id 50 up to id "), "not a resumption: {printed}");
        assert!(printed.contains(" rows since the re-copy from id 50 began"), "{printed}");
        assert_eq!(
            site.extended_fingerprint(u64::MAX).await,
            site.old_fingerprint().await,
            "two servers: {two_servers}"
        );

        // `--from-id N` copies row N itself again: the id verify names first is the one to give.
        let changed: u64 = edxapp
            .query_first(format!("SELECT MIN(`id`) FROM {} WHERE `id` > 4000", site.old()))
            .await
            .unwrap()
            .unwrap();
        edxapp
            .query_drop(format!("UPDATE {} SET `state` = 'newest' WHERE `id` = {changed}", site.old()))
            .await
            .unwrap();
        let repair = MigrateArgs { from_id: Some(changed), ..MigrateArgs::default() };
        migrate(&site.site(), &repair).await.expect("migrate --from-id <the changed id>");
        assert_eq!(site.extended_fingerprint(u64::MAX).await, site.old_fingerprint().await, "row {changed} too");

        // The start of the old table drained (`truncate-old --slow` stopped half-way): copying again from 0 keeps
        // the extended rows below the old table's smallest id, their only copy left.
        edxapp.query_drop(format!("DELETE FROM {} WHERE `id` <= 3000", site.old())).await.unwrap();
        let before = site.extended_fingerprint(u64::MAX).await;
        migrate(&site.site(), &MigrateArgs { from_id: Some(0), ..MigrateArgs::default() }).await.expect("from 0");
        assert_eq!(site.extended_fingerprint(u64::MAX).await, before, "no drained row removed");
    }
}

#[tokio::test]
async fn from_id_copies_only_rows_copied_before_and_nothing_is_copied_from_a_retired_table() {
    let site = MigrationSite::new(false).await;
    site.generate_old_rows(1_000).await;
    init(&site.site(), 10_000).await.expect("init");
    let early = MigrateArgs { from_id: Some(10), ..MigrateArgs::default() };
    let refused = migrate(&site.site(), &early).await.expect_err("nothing copied yet");
    assert!(refused.to_string().contains("nothing has been copied yet"), "{refused}");
    let report = migrate(&site.site(), &MigrateArgs::default()).await.expect("migrate");
    let beyond = MigrateArgs { from_id: Some(report.last_id + 1), ..MigrateArgs::default() };
    let refused = migrate(&site.site(), &beyond).await.expect_err("above the copied ids");
    assert!(refused.to_string().contains("above every id copied so far"), "{refused}");

    let mut retired = site.config.clone();
    retired.flags = Stage::OldTableRetired.flags();
    let refused = migrate(&Site::new(&retired).unwrap(), &MigrateArgs::default()).await.expect_err("retired");
    assert!(refused.to_string().contains("READ_ONLY_FROM_CSMHE is on"), "{refused}");
}

#[tokio::test]
async fn migrate_refuses_to_overwrite_rows_when_the_old_ids_reach_the_extended_tables() {
    let site = MigrationSite::new(true).await;
    site.generate_old_rows(1_000).await;
    let old_max = site.old_fingerprint().await.max_id;
    let text = std::fs::read_to_string(&site.config_path).unwrap();
    std::fs::write(&site.config_path, text.replace("[history]\n", "[history]\nid_offset = 10\n")).unwrap();
    let init = site.command(&["init"]).await;
    assert_eq!(init.status.code(), Some(0), "{}", outputs(&init));
    // edxapp writes a new row to the extended table, then (misconfigured) keeps writing old rows past its id.
    let new_row = format!(
        "INSERT INTO {} (`created`, `state`, `student_module_id`) VALUES ('2024-06-01 00:00:00', 'new', 7)",
        site.extended()
    );
    site.csmh().await.query_drop(new_row).await.unwrap();
    let late_old_row = format!(
        "INSERT INTO {} (`id`, `created`, `state`, `student_module_id`) VALUES ({}, '2024-06-02 00:00:00', 'old', 8)",
        site.old(),
        old_max + 10
    );
    site.edxapp().await.query_drop(late_old_row).await.unwrap();

    let output = site.command(&["migrate"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", outputs(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("already has rows with ids between 1 and {}", old_max + 10)), "{stderr}");
    assert!(stderr.contains("nothing was copied past id 0"), "{stderr}");
    let state = format!("SELECT COUNT(*) FROM {} WHERE `state` = 'new' AND `id` = {}", site.extended(), old_max + 10);
    assert_eq!(site.csmh_number(&state).await, Some(1), "the extended table's own row is untouched");
    assert_eq!(site.extended_fingerprint(u64::MAX).await.rows, 1, "nothing copied");
}
