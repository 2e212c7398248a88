//! `--dry-run` of `csmh-proxy init` against real MariaDB servers, with both tables on
//! one server and on two: the built binary prints the plan and the statements a run would send, refuses what a
//! run would refuse, and leaves both servers exactly as they were (databases, tables, definitions with their
//! AUTO_INCREMENT, checksums). Each scenario also shows that the servers' state would have shown a change: the
//! real command, or the checkpoint table a dry run must not create, changes it.

mod migrate_support;
mod support;

use std::process::Output;

use csmh_proxy::migrate::checkpoint;
use csmh_proxy::migrate::schema::extended_table_ddl;
use migrate_support::{MigrationSite, outputs};
use mysql_async::prelude::Queryable;

/// Old rows the scenarios start with.
const ROWS: u64 = 5_000;

/// Runs the binary with `args` and asserts that it exits with `code` and left both servers as they were;
/// returns its standard output (standard error for a refusal).
async fn changes_nothing(site: &MigrationSite, args: &[&str], code: i32) -> String {
    let before = site.servers_state().await;
    let output = site.command(args).await;
    assert_eq!(output.status.code(), Some(code), "{args:?}: {}", outputs(&output));
    assert_eq!(site.servers_state().await, before, "{args:?} changed a server: {}", outputs(&output));
    printed(&output, code)
}

/// What a run printed: its standard output, or its standard error if it failed.
fn printed(output: &Output, code: i32) -> String {
    String::from_utf8_lossy(if code == 0 { &output.stdout } else { &output.stderr }).into_owned()
}

/// Asserts that `text` contains every one of `parts`.
fn assert_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "no `{part}` in:\n{text}");
    }
}

/// Runs `sql` on the extended table's server.
async fn on_csmh(site: &MigrationSite, sql: &str) {
    site.csmh().await.query_drop(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn init_dry_run(two_servers: bool) {
    let site = MigrationSite::new(two_servers).await;
    site.generate_old_rows(ROWS).await;
    let old_max = site.old_fingerprint().await.max_id;
    let start = old_max + 10_000;
    let mut root = support::root_conn(&site.dbs.csmh).await;
    root.query_drop(format!("DROP DATABASE `{}`", site.dbs.csmh_db)).await.unwrap();

    let out = changes_nothing(&site, &["init", "--dry-run"], 0).await;
    let checkpoint_table = checkpoint::table_for(&site.site().extended);
    assert_contains(
        &out,
        &[
            "dry run: nothing has been changed\n",
            &format!("would create database {}\n", site.dbs.csmh_db),
            ": would be created\n",
            &format!("extended table's next id: {start}\n"),
            "starting id offset: 10000 (history.id_offset = 10000)",
            &format!("checkpoint table {checkpoint_table}: would be created\n"),
            &format!("-- create the extended table's database\nCREATE DATABASE IF NOT EXISTS `{}`", site.dbs.csmh_db),
            &format!("-- create the extended table\nCREATE TABLE {} (", site.extended()),
            &format!("ENGINE=InnoDB AUTO_INCREMENT={start};\n"),
            &format!("-- create the checkpoint table\nCREATE TABLE IF NOT EXISTS {checkpoint_table} ("),
        ],
    );

    // What it printed is what init does: the state changes, and a dry run afterwards has nothing to do.
    let before = site.servers_state().await;
    let output = site.command(&["init"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", outputs(&output));
    assert_ne!(site.servers_state().await, before, "init's changes show in the servers' state");
    let out = changes_nothing(&site, &["init", "--dry-run"], 0).await;
    assert_contains(
        &out,
        &[": already exists; would be left as it is\n", "nothing would change: init would run no statement"],
    );
    assert!(!out.contains("CREATE"), "{out}");

    // An empty extended table whose start is unset: its start would be raised; the checkpoint table is there.
    on_csmh(&site, &format!("DROP TABLE {}", site.extended())).await;
    on_csmh(&site, &extended_table_ddl(&site.extended(), 1)).await;
    let out = changes_nothing(&site, &["init", "--dry-run"], 0).await;
    assert_contains(
        &out,
        &[
            ": exists empty; starting id would be raised\n",
            &format!(
                "-- set the extended table's starting id\nALTER TABLE {} AUTO_INCREMENT = {start};\n",
                site.extended()
            ),
            &format!("checkpoint table {checkpoint_table}: already exists\n"),
        ],
    );
    assert!(!out.contains("CREATE"), "{out}");

    // What init refuses, a dry run refuses too.
    let insert =
        format!("INSERT INTO {} (`created`, `student_module_id`) VALUES ('2024-05-01 00:00:00', 1)", site.extended());
    on_csmh(&site, &insert).await;
    let refused = changes_nothing(&site, &["init", "--dry-run"], 1).await;
    assert_contains(&refused, &["unsafe starting id", "next row id 2, which is not above the old table"]);
    site.edxapp().await.query_drop(format!("DROP TABLE {}", site.old())).await.unwrap();
    let refused = changes_nothing(&site, &["init", "--dry-run"], 1).await;
    assert_contains(&refused, &["does not exist on [backends.edxapp]: check `history.old_table`"]);
}

#[tokio::test]
async fn init_dry_run_on_one_server() {
    init_dry_run(false).await;
}

#[tokio::test]
async fn init_dry_run_on_two_servers() {
    init_dry_run(true).await;
}

