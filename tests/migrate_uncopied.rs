//! Rows the copy did not see, against real MariaDB servers: old rows written after `migrate` finished (by a proxy
//! still sending history to the old table, or while the flags were set back to the old table) are never removed
//! by `migrate --back`, and `status` says to copy them before the flags go on; copies of rows deleted from the old
//! table after the copy (edxapp's cascade delete through a proxy at stage 0 reaches the old table alone) are
//! found by `verify`, even above the old table's largest id, and removed by `migrate --from-id`.

mod migrate_support;
mod support;

use csmh_proxy::history::Stage;
use migrate_support::MigrationSite;
use migrate_support::runbook::{assert_next_step, run};
use mysql_async::prelude::Queryable;

/// Old rows each site starts with.
const ROWS: u64 = 2_000;
/// Old rows written after the copy finished.
const LATE_ROWS: usize = 4;

/// A site whose old rows were copied (`migrate` done) and verified, reading both tables.
async fn copied_site(two_servers: bool) -> MigrationSite {
    let site = MigrationSite::ready(two_servers, ROWS).await;
    run(&site, &["migrate"], 0).await;
    run(&site, &["verify"], 0).await;
    site
}

/// Writes `rows` history rows to the old table alone, as a proxy at stage 0 does; returns their ids.
async fn write_to_the_old_table_alone(site: &MigrationSite, rows: usize) -> Vec<u64> {
    let mut edxapp = site.edxapp().await;
    let mut ids = Vec::new();
    for _ in 0..rows {
        let sql = format!(
            "INSERT INTO {} (`created`, `state`, `student_module_id`) VALUES (NOW(6), 'written late', 7)",
            site.old()
        );
        edxapp.query_drop(sql).await.unwrap();
        ids.push(edxapp.last_insert_id().expect("an id"));
    }
    ids
}

/// Which of `ids` the old table has.
async fn old_ids_among(site: &MigrationSite, ids: &[u64]) -> Vec<u64> {
    let list: Vec<String> = ids.iter().map(u64::to_string).collect();
    let sql = format!("SELECT `id` FROM {} WHERE `id` IN ({}) ORDER BY `id`", site.old(), list.join(", "));
    site.edxapp().await.query(sql).await.unwrap()
}

async fn the_way_back_never_removes_old_rows_that_were_not_copied(two_servers: bool) {
    let mut site = copied_site(two_servers).await;
    let late = write_to_the_old_table_alone(&site, LATE_ROWS).await;
    site.set_flags(Stage::ExtendedTableOnlyReads.flags());

    let refused = run(&site, &["migrate", "--back"], 1).await;
    assert!(refused.contains(&format!("{LATE_ROWS} rows")), "{refused}");
    assert!(refused.contains("run `csmh-proxy migrate`"), "{refused}");
    assert_eq!(old_ids_among(&site, &late).await, late, "nothing removed:\n{refused}");

    run(&site, &["migrate"], 0).await;
    let back = run(&site, &["migrate", "--back"], 0).await;
    assert!(back.contains(" 0 old rows removed"), "{back}");
    assert_eq!(old_ids_among(&site, &late).await, late, "{back}");
    assert_eq!(site.old_fingerprint().await, site.extended_fingerprint(u64::MAX).await);
}

#[tokio::test]
async fn the_way_back_never_removes_old_rows_that_were_not_copied_on_one_server() {
    the_way_back_never_removes_old_rows_that_were_not_copied(false).await;
}

#[tokio::test]
async fn the_way_back_never_removes_old_rows_that_were_not_copied_on_two_servers() {
    the_way_back_never_removes_old_rows_that_were_not_copied(true).await;
}

#[tokio::test]
async fn status_says_to_copy_old_rows_written_after_the_copy() {
    let mut site = copied_site(true).await;
    let stop_reading_old = [("ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES", false)];
    assert_next_step(&site, "set_flags", &stop_reading_old).await;

    write_to_the_old_table_alone(&site, LATE_ROWS).await;
    let status = assert_next_step(&site, "migrate", &[]).await;
    assert_eq!(status["next_step"]["command"], "csmh-proxy migrate", "{status:#}");
    site.set_flags(Stage::ExtendedTableOnlyReads.flags());
    assert_next_step(&site, "migrate", &[]).await;

    run(&site, &["migrate"], 0).await;
    assert_next_step(&site, "verify", &[]).await;
    run(&site, &["verify"], 0).await;
    assert_next_step(&site, "set_flags", &[("READ_ONLY_FROM_CSMHE", true)]).await;
}

async fn verify_finds_copies_of_deleted_rows_above_the_old_tables_largest_id(two_servers: bool) {
    let site = copied_site(two_servers).await;
    // New history the proxy wrote to the extended table, with its own ids: never compared.
    let new_row = format!(
        "INSERT INTO {} (`created`, `state`, `student_module_id`) VALUES (NOW(6), 'new history', 7)",
        site.extended()
    );
    site.csmh().await.query_drop(new_row).await.unwrap();
    // edxapp deletes learner state through a proxy at stage 0: the old table's last rows go, their copies stay.
    let mut edxapp = site.edxapp().await;
    let last: Vec<u64> =
        edxapp.query(format!("SELECT `id` FROM {} ORDER BY `id` DESC LIMIT 5", site.old())).await.unwrap();
    let (first_gone, last_gone) = (last[4], last[0]);
    edxapp.query_drop(format!("DELETE FROM {} WHERE `id` >= {first_gone}", site.old())).await.unwrap();

    let failed = run(&site, &["verify"], 1).await;
    let extra = format!("ids {first_gone}-{last_gone}");
    assert!(failed.lines().any(|line| line.trim_start().starts_with(&extra) && line.contains("extra")), "{failed}");
    assert!(failed.contains("5 rows in the extended table only"), "{failed}");

    run(&site, &["migrate", "--from-id", &first_gone.to_string()], 0).await;
    let passed = run(&site, &["verify"], 0).await;
    assert_eq!(site.extended_fingerprint(last_gone).await, site.old_fingerprint().await, "{passed}");
    let extended_rows = site.csmh_number(&format!("SELECT COUNT(*) FROM {}", site.extended())).await;
    assert_eq!(extended_rows, Some(site.old_fingerprint().await.rows + 1), "the new history row stays");
}

#[tokio::test]
async fn verify_finds_copies_of_deleted_rows_above_the_old_tables_largest_id_on_one_server() {
    verify_finds_copies_of_deleted_rows_above_the_old_tables_largest_id(false).await;
}

#[tokio::test]
async fn verify_finds_copies_of_deleted_rows_above_the_old_tables_largest_id_on_two_servers() {
    verify_finds_copies_of_deleted_rows_above_the_old_tables_largest_id(true).await;
}
