//! `csmh-proxy verify`, `truncate-old` and `status` against real MariaDB servers, with both tables on one server
//! and on two: the built binary run as an operator runs it, with a `proxy.toml` that gives both backends an
//! account, and what the operator sees (exit status, printed ranges) and what the tables hold afterwards.

mod support;

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use csmh_proxy::config::Config;
use csmh_proxy::history::{Flags, Stage};
use csmh_proxy::migrate::Site;
use csmh_proxy::migrate::checkpoint::{self, Checkpoint, Task};
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use support::{EdxDatabases, app, root_conn};

/// Rows of the old table, ids 1 to `ROWS`, generated server-side.
const ROWS: u64 = 20_000;
/// Rows written through the proxy: extended ids above every old id, which verify leaves out.
const NEW_IDS: (u64, u64) = (30_001, 30_010);

/// A test's migration: the edX tables with `ROWS` identical rows in both, and a `proxy.toml` for the commands.
struct Migration {
    dbs: EdxDatabases,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Migration {
    /// The tables on `dbs`, filled identically, with `flags` in the configuration.
    async fn new(dbs: EdxDatabases, flags: Flags) -> Migration {
        dbs.create_edx_schema(false).await;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = dir.path().join("proxy.toml");
        std::fs::write(&config, proxy_toml(&dbs, flags)).expect("writing proxy.toml");
        let migration = Migration { dbs, config, _dir: dir };
        let old = migration.old();
        migration.edxapp().await.query_drop(insert_history(&old, &migration.dbs.edxapp_db, 1, ROWS)).await.unwrap();
        let extended = migration.extended();
        let mut csmh = migration.csmh().await;
        csmh.query_drop(insert_history(&extended, &migration.dbs.csmh_db, 1, ROWS)).await.unwrap();
        csmh.query_drop(insert_history(&extended, &migration.dbs.csmh_db, NEW_IDS.0, NEW_IDS.1)).await.unwrap();
        migration
    }

    /// Runs `csmh-proxy <args> --config proxy.toml`.
    async fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().await.expect("running csmh-proxy"))
    }

    /// The command `csmh-proxy <args> --config proxy.toml`, its output captured.
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_csmh-proxy"));
        command
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// The old table, quoted.
    fn old(&self) -> String {
        format!("`{}`.`courseware_studentmodulehistory`", self.dbs.edxapp_db)
    }

    /// The extended table, quoted.
    fn extended(&self) -> String {
        format!("`{}`.`coursewarehistoryextended_studentmodulehistoryextended`", self.dbs.csmh_db)
    }

    /// A root connection to the old table's server.
    async fn edxapp(&self) -> Conn {
        root_conn(&self.dbs.edxapp).await
    }

    /// A root connection to the extended table's server.
    async fn csmh(&self) -> Conn {
        root_conn(&self.dbs.csmh).await
    }

    /// Runs `sql` on the old table's server.
    async fn on_old(&self, sql: &str) {
        self.edxapp().await.query_drop(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Runs `sql` on the extended table's server.
    async fn on_extended(&self, sql: &str) {
        self.csmh().await.query_drop(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The old table's row count, and a checksum of its contents, to show it was left untouched.
    async fn old_contents(&self) -> (u64, u64) {
        self.contents(&self.old()).await
    }

    /// The old table's row count.
    async fn old_rows(&self) -> u64 {
        self.edxapp().await.query_first(format!("SELECT COUNT(*) FROM {}", self.old())).await.unwrap().unwrap()
    }

    /// The extended table's row count.
    async fn extended_rows(&self) -> u64 {
        self.csmh().await.query_first(format!("SELECT COUNT(*) FROM {}", self.extended())).await.unwrap().unwrap()
    }

    /// The old table's next id, as the server reports it.
    async fn old_next_id(&self) -> u64 {
        let sql = format!(
            "SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{}' \
             AND TABLE_NAME = 'courseware_studentmodulehistory'",
            self.dbs.edxapp_db
        );
        self.edxapp().await.query_first(sql).await.unwrap().unwrap()
    }

    /// The old table's definition, its `AUTO_INCREMENT` left out.
    async fn old_definition(&self) -> String {
        let sql = format!("SHOW CREATE TABLE {}", self.old());
        let (_, definition): (String, String) = self.edxapp().await.query_first(sql).await.unwrap().unwrap();
        definition.split(' ').filter(|word| !word.starts_with("AUTO_INCREMENT=")).collect::<Vec<_>>().join(" ")
    }

    /// The row count and checksum of `table` (quoted), as [`Migration::old_contents`] gives the old table's.
    async fn contents(&self, table: &str) -> (u64, u64) {
        let sql = format!(
            "SELECT COUNT(*), BIT_XOR(CRC32(CONCAT_WS('#', id, version, created, state, grade, max_grade, \
             student_module_id))) FROM {table}"
        );
        self.edxapp().await.query_first::<(u64, u64), _>(sql).await.unwrap().unwrap()
    }

    /// The tables of the old table's database, by name.
    async fn edxapp_tables(&self) -> Vec<String> {
        let sql = "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME";
        self.edxapp().await.exec(sql, (&self.dbs.edxapp_db,)).await.unwrap()
    }

    /// The retired copies `truncate-old --keep` made, quoted.
    async fn retired_tables(&self) -> Vec<String> {
        let tables = self.edxapp_tables().await;
        let retired = tables.into_iter().filter(|name| name.starts_with("courseware_studentmodulehistory_retired_"));
        retired.map(|name| format!("`{}`.`{name}`", self.dbs.edxapp_db)).collect()
    }

    /// The recorded `verify` checkpoint.
    async fn verify_checkpoint(&self) -> Checkpoint {
        let config = Config::load(&self.config).unwrap();
        let site = Site::new(&config).unwrap();
        checkpoint::load(&mut self.csmh().await, &site, Task::Verify).await.unwrap().expect("a verify checkpoint")
    }

    /// Records a `migrate` checkpoint, as a copy part-way through would.
    async fn save_migrate_checkpoint(&self, checkpoint: &Checkpoint) {
        let config = Config::load(&self.config).unwrap();
        let site = Site::new(&config).unwrap();
        let mut csmh = self.csmh().await;
        checkpoint::ensure(&mut csmh, &site).await.unwrap();
        checkpoint::save(&mut csmh, &site, Task::Migrate, checkpoint).await.unwrap();
    }
}

/// A `proxy.toml` for `dbs` in which both backends have the app account (on one server, only `edxapp` does, and
/// the commands log in to `csmh` with it).
fn proxy_toml(dbs: &EdxDatabases, flags: Flags) -> String {
    let account = app();
    let login = format!("user = \"{}\"\npassword = \"{}\"\n", account.user, account.password);
    let csmh_login = if dbs.same_server() { String::new() } else { login.clone() };
    format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n\n\
         [backends.edxapp]\naddress = \"{}\"\n{login}\n\
         [backends.csmh]\naddress = \"{}\"\n{csmh_login}\n\
         [history]\nold_table = \"{}\"\nextended_table = \"{}\"\n\n\
         [flags]\nENABLE_CSMH_EXTENDED = {}\nENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES = {}\n\
         READ_ONLY_FROM_CSMHE = {}\n",
        dbs.edxapp.addr(),
        dbs.csmh.addr(),
        dbs.old_table(),
        dbs.extended_table(),
        flags.enable_csmh_extended,
        flags.enable_reading_from_multiple_history_tables,
        flags.read_only_from_csmhe,
    )
}

/// History rows with ids `first` to `last`, generated by the server from its Sequence engine (in `database`), the
/// same on every server: NULL versions, states and grades here and there, text with `#` in it.
fn insert_history(table: &str, database: &str, first: u64, last: u64) -> String {
    format!(
        "INSERT INTO {table} (id, version, created, state, grade, max_grade, student_module_id)
         SELECT seq, IF(seq % 7 = 0, NULL, 'v1'), '2024-01-01 00:00:00.250000' + INTERVAL seq MINUTE,
                IF(seq % 11 = 0, NULL, CONCAT('{{\"attempts\": ', seq % 5, ', \"answer\": \"a#', seq, '\"}}')),
                IF(seq % 3 = 0, NULL, (seq % 10) / 10), 1, seq DIV 3 + 1
         FROM `{database}`.seq_{first}_to_{last}"
    )
}

/// What a run of the binary showed.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().expect("csmh-proxy exited"),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Asserts the exit status, showing the output otherwise.
    fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(self.code, code, "exit status\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}

/// Asserts that `text` has a line that starts with `ids` (then spaces) and then says `kind` and `rows`.
fn assert_range(text: &str, ids: &str, kind: &str, rows: &str) {
    let found = text.lines().map(str::trim_start).any(|line| {
        line.strip_prefix(ids)
            .is_some_and(|rest| rest.starts_with(' ') && rest.trim_start().starts_with(kind) && rest.contains(rows))
    });
    assert!(found, "no line `{ids} ... {kind} ... {rows}` in:\n{text}");
}

/// The line of `text` starting with `label`.
fn line<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines().find(|line| line.starts_with(label)).unwrap_or_else(|| panic!("no `{label}` line in:\n{text}"))
}

async fn identical_tables_pass(dbs: EdxDatabases) {
    let migration = Migration::new(dbs, Stage::ExtendedTableReadingBoth.flags()).await;
    let run = migration.run(&["verify", "--chunk-size", "3000"]).await;
    run.expect_code(0);
    assert!(run.stdout.contains("verify passed"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("ids 1-{ROWS} in 7 chunks: {ROWS} rows in the old table")), "{}", run.stdout);
    let checkpoint = migration.verify_checkpoint().await;
    assert_eq!((checkpoint.state.as_str(), checkpoint.rows_done, checkpoint.last_id), ("passed", ROWS, Some(ROWS)));
}

async fn differences_are_narrowed_down_to_the_ids(dbs: EdxDatabases) {
    let migration = Migration::new(dbs, Stage::ExtendedTableReadingBoth.flags()).await;
    let (old, extended) = (migration.old(), migration.extended());
    migration.on_extended(&format!("UPDATE {extended} SET state = CONCAT(state, ' ') WHERE id = 7778")).await;
    migration.on_extended(&format!("UPDATE {extended} SET version = '' WHERE id = 14")).await;
    migration.on_extended(&format!("DELETE FROM {extended} WHERE id BETWEEN 500 AND 502")).await;
    migration.on_extended(&format!("DELETE FROM {extended} WHERE id BETWEEN 18001 AND {ROWS}")).await;
    migration.on_old(&format!("DELETE FROM {old} WHERE id = 900")).await;
    // The same characters split differently between two columns are another row.
    migration.on_old(&format!("UPDATE {old} SET version = 'a#b', state = 'c' WHERE id = 3001")).await;
    migration.on_extended(&format!("UPDATE {extended} SET version = 'a', state = 'b#c' WHERE id = 3001")).await;

    let run = migration.run(&["verify", "--chunk-size", "5000"]).await;
    run.expect_code(1);
    assert!(run.stdout.contains("verify FAILED: the tables differ in 6 id ranges"), "{}", run.stdout);
    assert_range(&run.stdout, "id 14", "changed", "1 row with different values");
    assert_range(&run.stdout, "ids 500-502", "missing", "3 rows of the old table");
    assert_range(&run.stdout, "id 900", "extra", "1 row in the extended table only");
    assert_range(&run.stdout, "id 3001", "changed", "1 row");
    assert_range(&run.stdout, "id 7778", "changed", "1 row");
    assert_range(&run.stdout, "ids 18001-20000", "missing", "2000 rows");
    assert!(run.stdout.contains("`csmh-proxy migrate --from-id 14`"), "what to run: {}", run.stdout);

    let checkpoint = migration.verify_checkpoint().await;
    assert_eq!(checkpoint.state, "failed");
    let detail = checkpoint.detail.unwrap_or_default();
    assert!(detail.contains("ids 500-502") && detail.contains("id 900"), "{detail}");

    // With a limit of one range, the first is narrowed down and the rest are listed as whole differing ranges.
    let run = migration.run(&["verify", "--chunk-size", "5000", "--max-ranges", "1"]).await;
    run.expect_code(1);
    assert_range(&run.stdout, "id 14", "changed", "1 row");
    assert_range(&run.stdout, "ids 15001-20000", "differs", "5000 rows in the old table, 3000 rows in the extended");
    assert!(run.stdout.contains("verify --max-ranges N"), "{}", run.stdout);
}

async fn a_created_column_without_fractional_seconds_compares_equal(dbs: EdxDatabases) {
    let migration = Migration::new(dbs, Stage::ExtendedTableReadingBoth.flags()).await;
    let (old, extended) = (migration.old(), migration.extended());
    // An install from before Django 1.8: the old table's `created` has no fractional seconds, and its copy in the
    // extended table's `datetime(6)` has them all zero.
    migration.on_old(&format!("ALTER TABLE {old} MODIFY created datetime NOT NULL")).await;
    migration
        .on_extended(&format!(
            "UPDATE {extended} SET created = created - INTERVAL MICROSECOND(created) MICROSECOND WHERE id <= {ROWS}"
        ))
        .await;
    let run = migration.run(&["verify", "--chunk-size", "5000"]).await;
    run.expect_code(0);
    assert!(run.stdout.contains("verify passed"), "{}", run.stdout);

    // A second or a microsecond apart is still a difference.
    migration.on_extended(&format!("UPDATE {extended} SET created = created + INTERVAL 1 SECOND WHERE id = 77")).await;
    migration
        .on_extended(&format!("UPDATE {extended} SET created = created + INTERVAL 1 MICROSECOND WHERE id = 12345"))
        .await;
    let run = migration.run(&["verify", "--chunk-size", "5000"]).await;
    run.expect_code(1);
    assert_range(&run.stdout, "id 77", "changed", "1 row");
    assert_range(&run.stdout, "id 12345", "changed", "1 row");
}

/// A state longer than the server's `max_allowed_packet` (one that was lowered after the row was written): a
/// difference in it is still found. Joined whole into one string to hash, such a row hashed as NULL, which the
/// chunk's sum skips, and `verify` passed.
async fn a_state_longer_than_max_allowed_packet_is_compared(dbs: EdxDatabases) {
    let migration = Migration::new(dbs, Stage::ExtendedTableReadingBoth.flags()).await;
    let (old, extended) = (migration.old(), migration.extended());
    migration.on_old(&format!("UPDATE {old} SET state = REPEAT('a', 1500000) WHERE id = 5")).await;
    migration.on_extended(&format!("UPDATE {extended} SET state = REPEAT('a', 1500000) WHERE id = 5")).await;
    migration
        .on_extended(&format!("UPDATE {extended} SET state = CONCAT(REPEAT('a', 1499999), 'b') WHERE id = 6"))
        .await;
    migration.on_old(&format!("UPDATE {old} SET state = REPEAT('a', 1500000) WHERE id = 6")).await;
    migration.on_old("SET GLOBAL max_allowed_packet = 1048576").await;
    migration.on_extended("SET GLOBAL max_allowed_packet = 1048576").await;
    let run = migration.run(&["verify", "--chunk-size", "5000"]).await;
    run.expect_code(1);
    assert!(run.stdout.contains("verify FAILED: the tables differ in 1 id range"), "{}", run.stdout);
    assert_range(&run.stdout, "id 6", "changed", "1 row");
}

async fn a_verify_stopped_by_an_error_is_recorded_as_failed(dbs: EdxDatabases) {
    let migration = Migration::new(dbs, Stage::ExtendedTableReadingBoth.flags()).await;
    migration.on_old(&format!("DROP TABLE {}", migration.old())).await;
    let run = migration.run(&["verify"]).await;
    run.expect_code(1);
    assert!(run.stderr.contains("does not exist on [backends.edxapp]"), "{}", run.stderr);
    let checkpoint = migration.verify_checkpoint().await;
    assert_eq!(checkpoint.state, "failed", "not left running: {checkpoint:?}");
    let detail = checkpoint.detail.unwrap_or_default();
    assert!(detail.contains("stopped by an error") && detail.contains("does not exist"), "{detail}");
}

async fn truncate_is_refused_while_the_old_table_is_not_retired(dbs: EdxDatabases) {
    let migration = Migration::new(dbs, Stage::ExtendedTableReadingBoth.flags()).await;
    let before = migration.old_contents().await;
    for args in [&["truncate-old", "--yes"][..], &["truncate-old", "--yes", "--slow", "--pause", "0"]] {
        let run = migration.run(args).await;
        run.expect_code(1);
        assert!(run.stderr.contains("READ_ONLY_FROM_CSMHE is off"), "{}", run.stderr);
    }
    assert_eq!(migration.old_contents().await, before);
}

async fn truncate_is_refused_when_verify_fails(dbs: EdxDatabases) {
    let migration = Migration::new(dbs, Stage::OldTableRetired.flags()).await;
    let extended = migration.extended();
    migration.on_extended(&format!("UPDATE {extended} SET grade = 0.5 WHERE id = 4242")).await;
    let before = migration.old_contents().await;
    for args in [&["truncate-old", "--yes"][..], &["truncate-old", "--yes", "--slow", "--pause", "0"]] {
        let run = migration.run(args).await;
        run.expect_code(1);
        assert!(run.stderr.contains("verify found differences"), "{}", run.stderr);
        assert_range(&run.stderr, "id 4242", "changed", "1 row");
        // `migrate` refuses to copy a retired table (checked: before, this advised `migrate --from-id 4242`).
        assert!(!run.stderr.contains("--from-id") && run.stderr.contains("fix them by hand"), "{}", run.stderr);
    }
    let verify = migration.run(&["verify"]).await;
    assert!(!verify.stdout.contains("--from-id") && verify.stdout.contains("fix them by hand"), "{}", verify.stdout);
    assert_eq!(migration.old_contents().await, before);
    assert_eq!(migration.verify_checkpoint().await.state, "failed");
    // The lock taken for the check is gone with the command: the old table can be written again.
    migration.on_old(&format!("UPDATE {} SET grade = grade WHERE id = 1", migration.old())).await;
}

async fn truncate_without_yes_changes_nothing(dbs: EdxDatabases) {
    let migration = Migration::new(dbs, Stage::OldTableRetired.flags()).await;
    let before = migration.old_contents().await;
    let run = migration.run(&["truncate-old"]).await;
    run.expect_code(0);
    assert!(run.stdout.contains("READ_ONLY_FROM_CSMHE is on in the configuration: it is"), "{}", run.stdout);
    assert!(run.stdout.contains("TRUNCATE TABLE") && run.stdout.contains("nothing has been changed"), "{}", run.stdout);
    let run = migration.run(&["truncate-old", "--slow", "--chunk-size", "4000"]).await;
    run.expect_code(0);
    assert!(run.stdout.contains("4000 ids per DELETE (up to 5 chunks)"), "{}", run.stdout);
    assert_eq!(migration.old_contents().await, before);
}

async fn truncate_empties_the_old_table_and_keeps_its_next_id(dbs: EdxDatabases) {
    let migration = Migration::new(dbs, Stage::OldTableRetired.flags()).await;
    let next_id = migration.old_next_id().await;
    let run = migration.run(&["truncate-old", "--yes"]).await;
    run.expect_code(0);
    assert!(run.stdout.contains("emptied with TRUNCATE TABLE"), "{}", run.stdout);
    assert_eq!(migration.old_rows().await, 0);
    assert_eq!(migration.old_next_id().await, next_id, "TRUNCATE must not reset the old table's ids");
    assert_eq!(migration.extended_rows().await, ROWS + NEW_IDS.1 - NEW_IDS.0 + 1);
    assert_eq!(migration.verify_checkpoint().await.state, "passed");
}

async fn truncate_keep_swaps_the_old_table_for_an_empty_copy(dbs: EdxDatabases) {
    let migration = Migration::new(dbs, Stage::OldTableRetired.flags()).await;
    // The highest ids were deleted: the next id is above every id left, and must stay there.
    migration.on_old(&format!("DELETE FROM {} WHERE id > {}", migration.old(), ROWS - 5)).await;
    migration
        .on_extended(&format!("DELETE FROM {} WHERE id BETWEEN {} AND {ROWS}", migration.extended(), ROWS - 4))
        .await;
    let (next_id, before) = (migration.old_next_id().await, migration.old_contents().await);
    let definition = migration.old_definition().await;

    let plan = migration.run(&["truncate-old", "--keep"]).await;
    plan.expect_code(0);
    let retired = format!("`{}`.`courseware_studentmodulehistory_retired_", migration.dbs.edxapp_db);
    assert!(plan.stdout.contains(&format!("RENAME TABLE {} TO {retired}", migration.old())), "{}", plan.stdout);
    assert!(plan.stdout.contains(&format!("AUTO_INCREMENT = {next_id}")), "{}", plan.stdout);
    assert_eq!(migration.old_contents().await, before, "the plan changes nothing");

    let run = migration.run(&["truncate-old", "--yes", "--keep"]).await;
    run.expect_code(0);
    assert!(run.stdout.contains("swapped for an empty copy in one RENAME TABLE"), "{}", run.stdout);
    let retired = migration.retired_tables().await;
    assert_eq!(retired.len(), 1, "{retired:?}");
    assert!(run.stdout.contains(&format!("DROP TABLE {};", retired[0])), "{}", run.stdout);
    assert_eq!(migration.old_rows().await, 0, "the old table's place holds the empty copy");
    assert_eq!(migration.old_next_id().await, next_id, "the empty copy keeps the old table's next id");
    assert_eq!(migration.old_definition().await, definition, "the empty copy is the old table's twin");
    assert_eq!(migration.contents(&retired[0]).await, before, "the retired copy holds every old row");
    assert_eq!(migration.verify_checkpoint().await.state, "passed");

    // Again: the old table is empty, so nothing is kept and nothing changes.
    let run = migration.run(&["truncate-old", "--yes", "--keep"]).await;
    run.expect_code(0);
    assert!(run.stdout.contains("there is nothing to keep"), "{}", run.stdout);
    assert_eq!(migration.retired_tables().await, retired);
    assert_eq!(migration.old_next_id().await, next_id);
}

/// A write that waits for the old table while `--keep` holds it locked lands in the empty copy, after the swap:
/// the retired copy holds exactly the rows that were verified.
async fn truncate_keep_swaps_before_a_waiting_write(dbs: EdxDatabases) {
    let migration = Migration::new(dbs, Stage::OldTableRetired.flags()).await;
    let (old, extended) = (migration.old(), migration.extended());
    let before = migration.old_contents().await;
    // The verify under the old table's lock waits for this one, so the lock is held long enough.
    let mut lock = migration.csmh().await;
    lock.query_drop(format!("LOCK TABLES {extended} WRITE")).await.unwrap();
    let keep = migration.command(&["truncate-old", "--yes", "--keep"]).spawn().expect("starting csmh-proxy");
    let waiting = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE STATE = 'Waiting for table metadata lock'";
    let verifying = format!("{waiting} AND INFO LIKE '%{extended}%'");
    wait_for(&mut migration.csmh().await, &verifying, "the verify waiting for the extended table").await;
    let mut writer = migration.edxapp().await;
    let insert = format!(
        "INSERT INTO {old} (version, created, state, grade, max_grade, student_module_id) \
                          VALUES (NULL, '2024-06-01 12:00:00', 'written meanwhile', 1, 2, 42)"
    );
    let insert = tokio::spawn(async move { writer.query_drop(insert).await });
    let writing = format!("{waiting} AND INFO LIKE 'INSERT INTO {old}%'");
    wait_for(&mut migration.edxapp().await, &writing, "the write waiting for the old table").await;
    lock.query_drop("UNLOCK TABLES").await.unwrap();

    let run = Run::from(keep.wait_with_output().await.expect("csmh-proxy ran"));
    run.expect_code(0);
    insert.await.unwrap().expect("the write goes through once the tables are swapped");
    let retired = migration.retired_tables().await;
    assert_eq!(migration.contents(&retired[0]).await, before, "only the verified rows are retired");
    let kept: Vec<String> = migration.edxapp().await.query(format!("SELECT state FROM {old}")).await.unwrap();
    assert_eq!(kept, ["written meanwhile"], "the write reached the empty copy");
}

/// A `--keep` whose verify fails changes nothing, and leaves no empty copy behind; an empty copy an interrupted
/// run left is replaced.
async fn truncate_keep_is_refused_when_verify_fails(dbs: EdxDatabases) {
    let migration = Migration::new(dbs, Stage::OldTableRetired.flags()).await;
    let leftover = format!("`{}`.`courseware_studentmodulehistory_new`", migration.dbs.edxapp_db);
    migration.on_old(&format!("CREATE TABLE {leftover} LIKE {}", migration.old())).await;
    migration.on_extended(&format!("DELETE FROM {} WHERE id = 4242", migration.extended())).await;
    let before = migration.old_contents().await;
    let run = migration.run(&["truncate-old", "--yes", "--keep"]).await;
    run.expect_code(1);
    assert_range(&run.stderr, "id 4242", "missing", "1 row");
    assert_eq!(migration.old_contents().await, before);
    assert!(migration.retired_tables().await.is_empty());
    let tables = migration.edxapp_tables().await;
    assert!(!tables.iter().any(|name| name.ends_with("_new")), "no copy is left: {tables:?}");
}

async fn slow_truncate_drains_the_old_table(dbs: EdxDatabases) {
    let migration = Migration::new(dbs, Stage::OldTableRetired.flags()).await;
    // A drain interrupted earlier left ids 1-4000 deleted: verify compares only what the old table still holds.
    migration.on_old(&format!("DELETE FROM {} WHERE id <= 4000", migration.old())).await;
    let run = migration.run(&["truncate-old", "--yes", "--slow", "--chunk-size", "3000", "--pause", "0"]).await;
    run.expect_code(0);
    assert!(run.stdout.contains("16000 rows deleted in 6 chunks"), "{}", run.stdout);
    assert_eq!(migration.old_rows().await, 0);
    assert_eq!(migration.extended_rows().await, ROWS + NEW_IDS.1 - NEW_IDS.0 + 1);
}

async fn slow_truncate_stops_at_a_chunk_that_changed_during_the_drain(dbs: EdxDatabases) {
    let migration = Migration::new(dbs, Stage::OldTableRetired.flags()).await;
    let args = ["truncate-old", "--yes", "--slow", "--chunk-size", "5000", "--pause", "1.5"];
    let drain = migration.command(&args).spawn().expect("starting csmh-proxy");
    // Once the first chunk is gone (the verify before the drain has passed), a later chunk changes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while migration.old_rows().await > ROWS - 5000 {
        assert!(Instant::now() < deadline, "the drain never deleted its first chunk");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let extended = migration.extended();
    migration.on_extended(&format!("UPDATE {extended} SET state = 'changed meanwhile' WHERE id = 19000")).await;

    let run = Run::from(drain.wait_with_output().await.expect("csmh-proxy ran"));
    run.expect_code(1);
    assert!(run.stderr.contains("stopped before deleting ids 15001-20000"), "{}", run.stderr);
    assert_range(&run.stderr, "id 19000", "changed", "1 row");
    assert_eq!(migration.old_rows().await, 5000, "the changed chunk and those above it stay");
}

/// Polls `sql` (a count) on `conn` until it is above zero, for at most ten seconds.
async fn wait_for(conn: &mut Conn, sql: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while conn.query_first::<u64, _>(sql).await.unwrap().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// On a server whose default isolation level is READ COMMITTED, a row inserted with an explicit id into a chunk
/// after the chunk's rows were checked and locked, before its DELETE, must not be deleted unchecked. The servers
/// are the test's own, since it changes a server-wide default.
async fn slow_truncate_never_deletes_a_row_inserted_into_a_checked_chunk(dbs: EdxDatabases) {
    let migration = Migration::new(dbs, Stage::OldTableRetired.flags()).await;
    let (old, extended) = (migration.old(), migration.extended());
    migration.on_old("SET GLOBAL TRANSACTION ISOLATION LEVEL READ COMMITTED").await;
    // A gap in the second chunk, in both tables: the drain's verify passes.
    migration.on_old(&format!("DELETE FROM {old} WHERE id = 7000")).await;
    migration.on_extended(&format!("DELETE FROM {extended} WHERE id = 7000")).await;
    let args = ["truncate-old", "--yes", "--slow", "--chunk-size", "5000", "--pause", "2"];
    let drain = migration.command(&args).spawn().expect("starting csmh-proxy");
    let deadline = Instant::now() + Duration::from_secs(20);
    while migration.old_rows().await > ROWS - 1 - 5000 {
        assert!(Instant::now() < deadline, "the drain never deleted its first chunk");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // During the pause after the first chunk: the second chunk's check of the extended table will wait for this
    // lock, after the old table's rows of the chunk are read and locked.
    let mut lock = migration.csmh().await;
    lock.query_drop(format!("LOCK TABLES {extended} WRITE")).await.unwrap();
    let waiting = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE STATE = 'Waiting for table metadata lock'";
    wait_for(&mut migration.csmh().await, waiting, "the check of the extended table waiting for the lock").await;
    let locked = "SELECT COUNT(*) FROM information_schema.INNODB_TRX JOIN information_schema.PROCESSLIST \
                  ON ID = trx_mysql_thread_id WHERE trx_rows_locked > 0 AND COMMAND = 'Sleep'";
    wait_for(&mut migration.edxapp().await, locked, "the old rows of the second chunk being locked").await;

    // Something writes to the retired old table, inside the chunk being checked.
    let mut writer = migration.edxapp().await;
    let insert = insert_history(&old, &migration.dbs.edxapp_db, 7000, 7000);
    let insert = tokio::spawn(async move { writer.query_drop(insert).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    lock.query_drop("UNLOCK TABLES").await.unwrap();
    insert.await.unwrap().expect("the insert succeeds, once the chunk is done with if it has to wait");

    let run = Run::from(drain.wait_with_output().await.expect("csmh-proxy ran"));
    run.expect_code(1);
    assert!(run.stderr.contains("stopped"), "{}", run.stderr);
    let kept: u64 = migration
        .edxapp()
        .await
        .query_first(format!("SELECT COUNT(*) FROM {old} WHERE id = 7000"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept, 1, "the row the check never saw was deleted\nstderr:\n{}", run.stderr);
}

async fn status_shows_counts_offset_and_checkpoints(dbs: EdxDatabases) {
    let migration = Migration::new(dbs, Stage::ExtendedTableReadingBoth.flags()).await;
    let copying = Checkpoint {
        state: "running".to_owned(),
        last_id: Some(12_000),
        target_id: Some(ROWS),
        rows_done: 12_000,
        detail: None,
        started_at: String::new(),
        updated_at: String::new(),
    };
    migration.save_migrate_checkpoint(&copying).await;
    migration.run(&["verify"]).await.expect_code(0);

    let run = migration.run(&["status", "--exact"]).await;
    run.expect_code(0);
    let out = &run.stdout;
    assert!(line(out, "stage:").contains("extended table, reading both"), "{out}");
    let old = line(out, "old table:");
    assert!(old.contains(&format!("{ROWS} rows, ids 1-{ROWS}, next id {}", ROWS + 1)), "{out}");
    let extended = line(out, "extended table:");
    assert!(extended.contains("20010 rows (20000 with ids up to the old table's largest, 10 above it)"), "{out}");
    assert!(extended.contains(&format!("next id {}", NEW_IDS.1 + 1)), "{out}");
    assert!(line(out, "id offset:").contains("safe: the extended table's next id 30011"), "{out}");
    assert_eq!(
        line(out, "32-bit ids:"),
        "32-bit ids:     2147453636 ids left below 2147483647 (next id 30011)",
        "{out}"
    );
    assert!(line(out, "migrate:").contains("running") && out.contains("ids up to 12000 of 20000 (60.0%)"), "{out}");
    assert!(line(out, "verify:").contains("passed") && out.contains("20000 rows compared"), "{out}");

    let run = migration.run(&["status"]).await;
    run.expect_code(0);
    assert!(line(&run.stdout, "old table:").contains("rows (estimate; --exact counts them)"), "{}", run.stdout);
}

async fn a_missing_extended_table_is_named_with_what_to_run(dbs: EdxDatabases) {
    let migration = Migration::new(dbs, Stage::OldTableRetired.flags()).await;
    migration.on_extended(&format!("DROP TABLE {}", migration.extended())).await;
    let before = migration.old_contents().await;
    for args in [&["verify"][..], &["truncate-old", "--yes"]] {
        let run = migration.run(args).await;
        run.expect_code(1);
        assert!(run.stderr.contains("does not exist on [backends.csmh]: run `csmh-proxy init`"), "{}", run.stderr);
    }
    assert_eq!(migration.old_contents().await, before);
    let run = migration.run(&["status"]).await;
    run.expect_code(0);
    assert!(line(&run.stdout, "extended table:").contains("does not exist"), "{}", run.stdout);
}

/// Each scenario as two tests: both tables on one server, and on two servers.
macro_rules! on_both_topologies {
    ($($scenario:ident),* $(,)?) => {
        mod one_server {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::EdxDatabases::fresh().await).await
                }
            )*
        }
        mod two_servers {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::EdxDatabases::fresh_two_servers().await).await
                }
            )*
        }
    };
}

on_both_topologies!(
    identical_tables_pass,
    differences_are_narrowed_down_to_the_ids,
    a_created_column_without_fractional_seconds_compares_equal,
    a_verify_stopped_by_an_error_is_recorded_as_failed,
    truncate_is_refused_while_the_old_table_is_not_retired,
    truncate_is_refused_when_verify_fails,
    truncate_without_yes_changes_nothing,
    truncate_empties_the_old_table_and_keeps_its_next_id,
    truncate_keep_swaps_the_old_table_for_an_empty_copy,
    truncate_keep_is_refused_when_verify_fails,
    truncate_keep_swaps_before_a_waiting_write,
    slow_truncate_drains_the_old_table,
    slow_truncate_stops_at_a_chunk_that_changed_during_the_drain,
    status_shows_counts_offset_and_checkpoints,
    a_missing_extended_table_is_named_with_what_to_run,
);

/// A proxy of a fleet, in front of `dbs` with `flags` and an admin listener, started in-process.
async fn fleet_proxy(dbs: &EdxDatabases, flags: Flags) -> csmh_proxy::server::ProxyHandle {
    let text = format!("{}\n[admin]\naddress = \"127.0.0.1:0\"\n", proxy_toml(dbs, flags));
    support::start_proxy(Config::parse(&text).expect("the fleet's proxy.toml")).await
}

/// The `--admin` options naming `proxies`.
fn admin_options(proxies: &[&csmh_proxy::server::ProxyHandle]) -> Vec<String> {
    proxies
        .iter()
        .flat_map(|proxy| ["--admin".to_owned(), proxy.admin_addr().expect("an admin listener").to_string()])
        .collect()
}

#[tokio::test]
async fn fleet_and_truncate_wait_for_every_proxy_to_retire_the_old_table() {
    let dbs = EdxDatabases::fresh().await;
    let retired = Stage::OldTableRetired.flags();
    let migration = Migration::new(dbs.clone(), retired).await;
    let (first, second) = (fleet_proxy(&dbs, retired).await, fleet_proxy(&dbs, retired).await);
    let lagging = fleet_proxy(&dbs, Stage::ExtendedTableOnlyReads.flags()).await;
    let admins = admin_options(&[&first, &second, &lagging]);
    let admins: Vec<&str> = admins.iter().map(String::as_str).collect();
    let before = migration.old_contents().await;

    let fleet = migration.run(&[&["fleet"][..], &admins].concat()).await;
    fleet.expect_code(1);
    assert!(
        fleet.stdout.contains("agree: NO") && fleet.stdout.contains("extended_table_only_reads"),
        "{}",
        fleet.stdout
    );
    let refused = migration.run(&[&["truncate-old", "--yes"][..], &admins].concat()).await;
    refused.expect_code(1);
    let lagging_admin = lagging.admin_addr().expect("an admin listener").to_string();
    assert!(
        refused.stderr.contains("not every proxy has retired it") && refused.stderr.contains(&lagging_admin),
        "{}",
        refused.stderr
    );
    assert_eq!(migration.old_contents().await, before, "nothing emptied while a proxy may use the old table");

    // The lagging proxy reloads the file: the fleet agrees, and the old table can go.
    let file = Config::parse(&format!("{}\n[admin]\naddress = \"127.0.0.1:0\"\n", proxy_toml(&dbs, retired))).unwrap();
    csmh_proxy::reload::apply(lagging.shared(), file, csmh_proxy::reload::TlsFiles::Unchanged).expect("reload");
    let fleet = migration.run(&[&["fleet"][..], &admins].concat()).await;
    fleet.expect_code(0);
    assert!(fleet.stdout.contains("agree: yes, 3 proxies"), "{}", fleet.stdout);
    assert!(fleet.stdout.contains(&format!("{lagging_admin:<24} generation 2")), "{}", fleet.stdout);
    let by_dns = format!("--dns={}", first.admin_addr().expect("an admin listener"));
    let fleet = migration.run(&["fleet", &by_dns]).await;
    assert!(fleet.stdout.contains("agree: yes, 1 proxies"), "a name's addresses are the fleet: {}", fleet.stdout);
    migration.run(&[&["truncate-old", "--yes"][..], &admins].concat()).await.expect_code(0);
    assert_eq!(migration.old_rows().await, 0, "emptied once every proxy retired it");
}

/// Scenarios that change a server-wide setting, on servers of their own.
mod own_servers {
    #[tokio::test]
    async fn a_state_longer_than_max_allowed_packet_is_compared() {
        let dbs = super::EdxDatabases::private_one_server().await;
        super::a_state_longer_than_max_allowed_packet_is_compared(dbs).await
    }

    #[tokio::test]
    async fn slow_truncate_never_deletes_a_row_inserted_into_a_checked_chunk_on_one_server() {
        let dbs = super::EdxDatabases::private_one_server().await;
        super::slow_truncate_never_deletes_a_row_inserted_into_a_checked_chunk(dbs).await
    }

    #[tokio::test]
    async fn slow_truncate_never_deletes_a_row_inserted_into_a_checked_chunk_on_two_servers() {
        let dbs = super::EdxDatabases::private_two_servers().await;
        super::slow_truncate_never_deletes_a_row_inserted_into_a_checked_chunk(dbs).await
    }
}
