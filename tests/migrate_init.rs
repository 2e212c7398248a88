//! `csmh-proxy init` against real MariaDB servers: what the operator sees when the extended table is created,
//! when init runs again, when an existing table's ids are unsafe, and when an empty one's are merely unset; and
//! what `status` then says of the server's table names.

mod migrate_support;
mod support;

use migrate_support::{MigrationSite, outputs};
use mysql_async::prelude::Queryable;

/// The extended table's next id, as the server reports it.
async fn next_extended_id(site: &MigrationSite) -> u64 {
    let sql = format!(
        "SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{}' AND TABLE_NAME = '{}'",
        site.dbs.csmh_db,
        csmh_proxy::sandbox::EXTENDED_TABLE
    );
    site.csmh_number(&sql).await.expect("the extended table exists")
}

#[tokio::test]
async fn init_creates_the_extended_table_above_the_old_ids_and_prints_the_offset() {
    for two_servers in [true, false] {
        let site = MigrationSite::new(two_servers).await;
        site.generate_old_rows(1_000).await;
        let old_max = site.old_fingerprint().await.max_id;
        let mut root = support::root_conn(&site.dbs.csmh).await;
        root.query_drop(format!("DROP DATABASE `{}`", site.dbs.csmh_db)).await.unwrap();

        let output = site.command(&["init"]).await;
        assert_eq!(output.status.code(), Some(0), "{}", outputs(&output));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains(&format!("created database {}", site.dbs.csmh_db)), "{stdout}");
        assert!(stdout.contains(": created\n"), "{stdout}");
        assert!(stdout.contains(&format!("highest id {old_max}\n")), "{stdout}");
        assert!(stdout.contains(&format!("extended table's next id: {}\n", old_max + 10_000)), "{stdout}");
        assert!(stdout.contains("starting id offset: 10000 (history.id_offset = 10000)"), "{stdout}");
        assert!(stdout.contains("32-bit ids: ") && stdout.contains(" ids left below 2147483647"), "{stdout}");
        assert_eq!(next_extended_id(&site).await, old_max + 10_000);

        let columns: Vec<String> = site
            .csmh()
            .await
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
                 ORDER BY ORDINAL_POSITION",
                (&site.dbs.csmh_db, csmh_proxy::sandbox::EXTENDED_TABLE),
            )
            .await
            .unwrap();
        assert_eq!(columns, csmh_proxy::migrate::schema::COLUMNS, "edx-platform's order, id sixth");
        let checkpoint = format!("SELECT COUNT(*) FROM `{}`.`csmh_proxy_checkpoint`", site.dbs.csmh_db);
        assert_eq!(site.csmh_number(&checkpoint).await, Some(0), "the checkpoint table exists");
    }
}

#[tokio::test]
async fn init_is_idempotent() {
    let site = MigrationSite::new(false).await;
    site.generate_old_rows(100).await;
    let first = site.command(&["init"]).await;
    assert_eq!(first.status.code(), Some(0), "{}", outputs(&first));
    let next = next_extended_id(&site).await;
    // Rows written by edxapp to the extended table once it is in use do not make init change anything.
    let mut csmh = site.csmh().await;
    let insert =
        format!("INSERT INTO {} (`created`, `student_module_id`) VALUES ('2024-05-01 00:00:00', 1)", site.extended());
    csmh.query_drop(insert).await.unwrap();

    let second = site.command(&["init"]).await;
    assert_eq!(second.status.code(), Some(0), "{}", outputs(&second));
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(stdout.contains(": already exists; left as it is\n"), "{stdout}");
    assert!(!stdout.contains("created"), "{stdout}");
    assert!(stdout.contains("starting id offset: 10001"), "{stdout}");
    assert_eq!(next_extended_id(&site).await, next + 1);
}

#[tokio::test]
async fn init_takes_the_configured_offset_and_raises_an_empty_tables_unset_start() {
    let site = MigrationSite::new(true).await;
    site.generate_old_rows(100).await;
    let old_max = site.old_fingerprint().await.max_id;
    // The extended table as Django's router may leave it: created, but without the starting id.
    let mut csmh = site.csmh().await;
    csmh.query_drop(csmh_proxy::migrate::schema::extended_table_ddl(&site.extended(), 1)).await.unwrap();
    let text = std::fs::read_to_string(&site.config_path).unwrap();
    std::fs::write(&site.config_path, text.replace("[history]\n", "[history]\nid_offset = 500\n")).unwrap();

    let output = site.command(&["init"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", outputs(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(": existed empty; starting id raised\n"), "{stdout}");
    assert!(stdout.contains("starting id offset: 500 (history.id_offset = 500)"), "{stdout}");
    assert_eq!(next_extended_id(&site).await, old_max + 500);
}

#[tokio::test]
async fn init_refuses_an_extended_table_whose_ids_could_collide() {
    let site = MigrationSite::new(false).await;
    site.generate_old_rows(100).await;
    let old_max = site.old_fingerprint().await.max_id;
    let mut csmh = site.csmh().await;
    csmh.query_drop(csmh_proxy::migrate::schema::extended_table_ddl(&site.extended(), 1)).await.unwrap();
    let insert =
        format!("INSERT INTO {} (`created`, `student_module_id`) VALUES ('2024-05-01 00:00:00', 1)", site.extended());
    csmh.query_drop(insert).await.unwrap();

    let output = site.command(&["init"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", outputs(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unsafe starting id"), "{stderr}");
    assert!(stderr.contains("next row id 2, which is not above the old table"), "{stderr}");
    assert!(stderr.contains(&format!("highest id {old_max}")), "{stderr}");
    assert_eq!(next_extended_id(&site).await, 2, "left unchanged");
}

#[tokio::test]
async fn init_refuses_a_missing_old_table() {
    let site = MigrationSite::new(false).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(format!("DROP TABLE {}", site.old())).await.unwrap();
    let output = site.command(&["init"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", outputs(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not exist on [backends.edxapp]: check `history.old_table`"), "{stderr}");
}

#[tokio::test]
async fn status_warns_when_the_server_folds_table_names() {
    let site = MigrationSite::new(false).await;
    site.succeeds(&["init"]).await;
    let status = site.succeeds(&["status"]).await;
    assert!(status.contains("table names:    as written (lower_case_table_names = 0"), "{status}");

    // A server that folds names: `…hİstory` (U+0130) names the old table there, unseen by the proxy.
    let folding = csmh_proxy::sandbox::MariaDb::start_with(&["--lower-case-table-names=1".into()]).await.unwrap();
    for account in support::accounts() {
        folding.create_account(&account, &[]).await.unwrap();
    }
    let folding = std::sync::Arc::new(folding);
    let site = MigrationSite::on(support::EdxDatabases::fresh_on(folding.clone(), folding).await).await;
    site.succeeds(&["init"]).await;
    let status = site.succeeds(&["status"]).await;
    assert!(status.contains("table names:    WARNING: lower_case_table_names = 1"), "{status}");
    let json: serde_json::Value = serde_json::from_str(&site.succeeds(&["status", "--json"]).await).expect("JSON");
    assert_eq!(json["lower_case_table_names"], 1, "{json:#}");
}
