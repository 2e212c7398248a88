//! `--dry-run` of `csmh-proxy init`, `migrate` and `truncate-old` against real MariaDB servers, with both tables on
//! one server and on two: the built binary prints the plan and the statements a run would send, refuses what a
//! run would refuse, and leaves both servers exactly as they were (databases, tables, definitions with their
//! AUTO_INCREMENT, checksums). Each scenario also shows that the servers' state would have shown a change: the
//! real command, or the checkpoint table a dry run must not create, changes it.

mod migrate_support;
mod support;

use std::process::Output;

use csmh_proxy::history::Stage;
use csmh_proxy::migrate::checkpoint;
use csmh_proxy::migrate::copy::{MigrateArgs, migrate};
use csmh_proxy::migrate::init::init;
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

/// The id of the old table's row at `offset` (from 0) in id order.
async fn old_id_at(site: &MigrationSite, offset: u64) -> u64 {
    let sql = format!("SELECT `id` FROM {} ORDER BY `id` LIMIT 1 OFFSET {offset}", site.old());
    site.edxapp().await.query_first(sql).await.unwrap().expect("a row there")
}

/// Runs `sql` on the extended table's server.
async fn on_csmh(site: &MigrationSite, sql: &str) {
    site.csmh().await.query_drop(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Copies every old row with the library, as `init` and `migrate` do.
async fn init_and_migrate(site: &MigrationSite) {
    init(&site.site(), site.config.history.id_offset).await.expect("init");
    migrate(&site.site(), &MigrateArgs::default()).await.expect("migrate");
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

async fn migrate_dry_run(two_servers: bool) {
    let mut site = MigrationSite::new(two_servers).await;
    site.generate_old_rows(ROWS).await;
    init(&site.site(), site.config.history.id_offset).await.expect("init");
    // No checkpoint table yet: a dry run reads none, and must not create it.
    let checkpoint_table = checkpoint::table_for(&site.site().extended);
    on_csmh(&site, &format!("DROP TABLE {checkpoint_table}")).await;
    let (old, extended) = (site.old(), site.extended());
    let old_max = site.old_fingerprint().await.max_id;
    let ends = [old_id_at(&site, 999).await, old_id_at(&site, 1_999).await, old_id_at(&site, 2_999).await];

    let out = changes_nothing(&site, &["migrate", "--dry-run", "--max-rows-per-second", "5000"], 0).await;
    assert_contains(
        &out,
        &[
            "dry run: nothing has been changed\n",
            &format!(
                "checkpoint table {checkpoint_table}: missing; a run creates it first:\nCREATE TABLE IF NOT EXISTS"
            ),
            "start: no checkpoint yet, so from the first id\n",
            &format!("first pass: ids 1-{old_max}, up to the old table's largest id now"),
            "chunks: 1000 rows to start",
            "throttles in force: chunks of 0.5 s, max 5000 rows/s, max replication lag 10 s, max load none, run \
             between any hours (with those of `csmh-proxy throttle`: none",
            &format!("chunk 1: ids 1-{} (1000 rows)\n", ends[0]),
            &format!("chunk 2: ids {}-{} (1000 rows)\n", ends[0] + 1, ends[1]),
            &format!("chunk 3: ids {}-{} (1000 rows)\n", ends[1] + 1, ends[2]),
            "(task 'migrate', state 'running', last_id ",
        ],
    );
    assert!(!out.contains("chunk 4:"), "{out}");
    let columns = "`version`, `created`, `state`, `grade`, `max_grade`, `id`, `student_module_id`";
    if two_servers {
        assert_contains(
            &out,
            &[
                "how: streamed across two servers",
                &format!(
                    "SELECT {columns} FROM {old} WHERE `id` > 0 AND `id` <= {old_max} ORDER BY `id` LIMIT 1000;\n"
                ),
                &format!(
                    "SELECT {columns} FROM {old} WHERE `id` > {} AND `id` <= {old_max} ORDER BY `id` LIMIT 1000;\n",
                    ends[1]
                ),
                "-- on [backends.csmh], writer 1 of 2:\nBEGIN;\n",
                "-- on [backends.csmh], writer 2 of 2:\nBEGIN;\n",
                &format!(
                    "INSERT INTO {extended} ({columns}) VALUES (<version>, <created>, <state>, <grade>, <max_grade>, <id>, <student_module_id>), "
                ),
                "ON DUPLICATE KEY UPDATE `version` = VALUES(`version`)",
            ],
        );
    } else {
        assert_contains(
            &out,
            &[
                "how: INSERT ... SELECT on one server",
                &format!(
                    "BEGIN;\nSELECT `id` FROM {old} WHERE `id` > 0 AND `id` <= {old_max} ORDER BY `id` LIMIT 1 OFFSET 999;\n"
                ),
                &format!(
                    "INSERT INTO {extended} ({columns}) SELECT {columns} FROM {old} WHERE `id` > 0 AND `id` <= {} ORDER BY `id` ON DUPLICATE KEY UPDATE",
                    ends[0]
                ),
                &format!("WHERE `id` > {} AND `id` <= {} ORDER BY `id` ON DUPLICATE KEY UPDATE", ends[1], ends[2]),
            ],
        );
    }

    // A rows-per-second limit keeps chunks to about a second of it, so the copy goes evenly, not in bursts.
    let out = changes_nothing(&site, &["migrate", "--dry-run", "--max-rows-per-second", "300"], 0).await;
    let end = old_id_at(&site, 299).await;
    assert_contains(&out, &["chunks: 300 rows to start", &format!("chunk 1: ids 1-{end} (300 rows)\n")]);

    // The servers' state would show the checkpoint table a dry run must not create.
    let before = site.servers_state().await;
    checkpoint::ensure(&mut site.csmh().await, &site.site()).await.unwrap();
    assert_ne!(site.servers_state().await, before, "a checkpoint table shows in the servers' state");

    // After a run, rows written meanwhile: the dry run starts after the checkpoint.
    migrate(&site.site(), &MigrateArgs::default()).await.expect("migrate");
    let insert = format!(
        "INSERT INTO {old} (`id`, `version`, `created`, `state`, `grade`, `max_grade`, `student_module_id`) \
         SELECT `id` + {old_max}, `version`, `created`, `state`, `grade`, `max_grade`, `student_module_id` FROM {old} \
         WHERE `id` <= 600"
    );
    site.edxapp().await.query_drop(insert).await.unwrap();
    let new_max = site.old_fingerprint().await.max_id;
    let out = changes_nothing(&site, &["migrate", "--dry-run"], 0).await;
    assert_contains(
        &out,
        &[
            &format!("start: after id {old_max}, the checkpoint's last id (state done, {ROWS} rows copied since "),
            &format!("chunk 1: ids {}-{new_max} (the rest of the pass)\n", old_max + 1),
        ],
    );
    assert!(!out.contains("chunk 2:"), "{out}");

    // A re-copy from an id: on one server each chunk also removes the extended rows the old table lost.
    let out = changes_nothing(&site, &["migrate", "--dry-run", "--from-id", "10"], 0).await;
    assert_contains(
        &out,
        &[
            &format!("start: --from-id 10: copies again ids 10 to {old_max} (the highest id copied before)"),
            &format!(
                "re-copy: ids up to {old_max} are copied over their earlier copies; each chunk of them also removes"
            ),
        ],
    );
    if !two_servers {
        assert_contains(&out, &[&format!("DELETE FROM {extended} WHERE `id` > 9 AND `id` <= ")]);
    }

    // What a run refuses, a dry run refuses too: ids the extended table already has ...
    let far = old_max + 100_000;
    site.edxapp()
        .await
        .query_drop(format!(
            "INSERT INTO {old} (`id`, `created`, `student_module_id`) VALUES ({far}, '2024-05-01 00:00:00', 1)"
        ))
        .await
        .unwrap();
    on_csmh(
        &site,
        &format!("INSERT INTO {extended} (`created`, `student_module_id`) VALUES ('2024-05-01 00:00:00', 1)"),
    )
    .await;
    let refused = changes_nothing(&site, &["migrate", "--dry-run"], 1).await;
    assert_contains(&refused, &[&format!("already has rows with ids between {} and {far}", old_max + 1)]);
    // ... a missing extended table, and a retired old table.
    on_csmh(&site, &format!("DROP TABLE {extended}")).await;
    let refused = changes_nothing(&site, &["migrate", "--dry-run"], 1).await;
    assert_contains(&refused, &["does not exist: run `csmh-proxy init` first"]);
    site.set_flags(Stage::OldTableRetired.flags());
    let refused = changes_nothing(&site, &["migrate", "--dry-run"], 1).await;
    assert_contains(&refused, &["is retired (READ_ONLY_FROM_CSMHE is on)"]);
}

async fn truncate_dry_run(two_servers: bool) {
    let mut site = MigrationSite::new(two_servers).await;
    site.generate_old_rows(ROWS).await;
    init_and_migrate(&site).await;
    let old = site.old();
    let (first, old_max) = (old_id_at(&site, 0).await, site.old_fingerprint().await.max_id);

    // Not retired: the plan says it would refuse; a dry run refuses, as --yes would.
    let out = changes_nothing(&site, &["truncate-old"], 0).await;
    assert_contains(&out, &["it is OFF, so it would refuse", &format!("TRUNCATE TABLE {old};\n")]);
    let refused = changes_nothing(&site, &["truncate-old", "--dry-run"], 1).await;
    assert_contains(&refused, &["READ_ONLY_FROM_CSMHE is off"]);

    site.set_flags(Stage::OldTableRetired.flags());
    let out = changes_nothing(&site, &["truncate-old", "--dry-run"], 0).await;
    let next_id = old_max + 1;
    assert_contains(
        &out,
        &[
            "checked now, none does",
            &format!("its next id stays at {next_id}\n"),
            &format!(
                "SET SESSION lock_wait_timeout = 60;\nLOCK TABLES {old} WRITE;\n-- the verify, as `csmh-proxy verify` runs \
                 it (it records its result in the checkpoint table), through this connection\nTRUNCATE TABLE {old};\n\
                 ALTER TABLE {old} AUTO_INCREMENT = {next_id};\nUNLOCK TABLES;\n"
            ),
            "nothing has been changed",
        ],
    );

    let out =
        changes_nothing(&site, &["truncate-old", "--dry-run", "--slow", "--chunk-size", "2000", "--pause", "0.5"], 0)
            .await;
    let chunk = |n: u64| (first + n * 2_000, first + n * 2_000 + 1_999);
    assert_contains(&out, &["SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ;\n", "-- a pause of 0.5 s\n"]);
    for n in 0..3 {
        let (from, to) = chunk(n);
        assert_contains(
            &out,
            &[
                &format!("-- ids {from}-{to}\nSTART TRANSACTION;\nSELECT COUNT(*), COALESCE(BIT_XOR("),
                &format!("FROM {old} WHERE `id` BETWEEN {from} AND {to} FOR UPDATE;\n"),
                &format!("FROM {} WHERE `id` BETWEEN {from} AND {to};\n", site.extended()),
                &format!("DELETE FROM {old} WHERE `id` BETWEEN {from} AND {to};\nCOMMIT;\n"),
            ],
        );
    }
    assert!(!out.contains(&format!("-- ids {}-", chunk(3).0)), "only the first chunks: {out}");
    assert_contains(&out, &["-- and so on, up to "]);

    // --keep: the empty copy, the lock and the verify, then the swap in one RENAME TABLE.
    let out = changes_nothing(&site, &["truncate-old", "--dry-run", "--keep"], 0).await;
    let (fresh, retired) =
        (format!("{}_new`", old.trim_end_matches('`')), format!("{}_retired_", old.trim_end_matches('`')));
    assert_contains(
        &out,
        &[
            &format!(
                "CREATE TABLE {fresh} LIKE {old};\n-- on the first connection:\nSET SESSION lock_wait_timeout = 60;\nLOCK TABLES {old} WRITE;\n"
            ),
            &format!("ALTER TABLE {fresh} AUTO_INCREMENT = {next_id};\nRENAME TABLE {old} TO {retired}"),
            &format!(", {fresh} TO {old};\n-- which waits for the lock"),
            "UNLOCK TABLES;\n-- the RENAME TABLE goes before any statement waiting for the old table\n",
            "nothing has been changed",
        ],
    );
    assert!(!out.contains("TRUNCATE TABLE"), "{out}");
    let both = site.command(&["truncate-old", "--dry-run", "--keep", "--slow"]).await;
    assert_eq!(both.status.code(), Some(2), "--keep and --slow conflict: {}", outputs(&both));

    // A proxy that cannot be asked may still use the old table: refused, as --yes would.
    let refused = changes_nothing(&site, &["truncate-old", "--dry-run", "--admin", "127.0.0.1:9"], 1).await;
    assert_contains(&refused, &["not every proxy has retired it", "127.0.0.1:9"]);
    let both = site.command(&["truncate-old", "--dry-run", "--yes"]).await;
    assert_eq!(both.status.code(), Some(2), "--dry-run and --yes conflict: {}", outputs(&both));

    // The servers' state shows what --yes does.
    let before = site.servers_state().await;
    let output = site.command(&["truncate-old", "--yes"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", outputs(&output));
    assert_ne!(site.servers_state().await, before, "the truncate shows in the servers' state");
}

#[tokio::test]
async fn init_dry_run_on_one_server() {
    init_dry_run(false).await;
}

#[tokio::test]
async fn init_dry_run_on_two_servers() {
    init_dry_run(true).await;
}

#[tokio::test]
async fn migrate_dry_run_on_one_server() {
    migrate_dry_run(false).await;
}

#[tokio::test]
async fn migrate_dry_run_on_two_servers() {
    migrate_dry_run(true).await;
}

#[tokio::test]
async fn truncate_dry_run_on_one_server() {
    truncate_dry_run(false).await;
}

#[tokio::test]
async fn truncate_dry_run_on_two_servers() {
    truncate_dry_run(true).await;
}
