//! docs/migration.md, "Going back", step by step on one server and on two: from the retired stage (the old table
//! kept aside by `truncate-old --keep` and put back, or emptied), from reads of both tables before the copy
//! finished, and from reads of the extended table alone. edxapp reads and writes through a real proxy following
//! the `proxy.toml` the flags are flipped in, and learners' history changes while the old table is retired. At
//! every step back a learner's history read through the proxy is the same rows (ids and values, newest first),
//! and history written on the way back is read too.

mod migrate_support;
mod support;

use csmh_proxy::history::Stage;
use csmh_proxy::server::ProxyHandle;
use migrate_support::MigrationSite;
use migrate_support::runbook::{assert_next_step, flip, read_history, run, serve};
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use support::edx::{OLD, edxapp_delete, edxapp_insert};
use support::{app, connect};

/// Old history rows the site starts with.
const ROWS: u64 = 20_000;

/// A site with old history, a proxy in front with every flag off, and edxapp's connection through it.
struct WayBack {
    site: MigrationSite,
    proxy: ProxyHandle,
    edxapp: Conn,
    /// Learners' modules with the most old history: one gets new history, one has its history deleted, and
    /// one a history row changed.
    modules: [u64; 3],
}

impl WayBack {
    async fn new(two_servers: bool) -> WayBack {
        let site = MigrationSite::new(two_servers).await;
        site.generate_old_rows(ROWS).await;
        let sql = format!(
            "SELECT student_module_id FROM {} GROUP BY student_module_id ORDER BY COUNT(*) DESC, student_module_id \
             LIMIT 3",
            site.old()
        );
        let found: Vec<u64> = site.edxapp().await.query(sql).await.unwrap();
        let modules = found.try_into().expect("three modules with history");
        let proxy = serve(&site, Stage::OldTableOnly.flags()).await;
        let edxapp = connect(proxy.addr(), &app(), Some(&site.dbs.edxapp_db)).await;
        WayBack { site, proxy, edxapp, modules }
    }

    /// The module that gets new history.
    fn written(&self) -> u64 {
        self.modules[0]
    }

    /// The module whose history is deleted.
    fn deleted(&self) -> u64 {
        self.modules[1]
    }

    /// The module one of whose history rows is changed.
    fn changed(&self) -> u64 {
        self.modules[2]
    }

    /// Each module's history read through the proxy, newest first.
    async fn histories(&mut self) -> Vec<Vec<(u64, String)>> {
        let mut read = Vec::new();
        for module in self.modules {
            read.push(read_history(&mut self.edxapp, module).await);
        }
        read
    }

    /// edxapp writes a history row of the first module; returns its id.
    async fn write(&mut self, state: &str) -> u64 {
        self.edxapp.query_drop(edxapp_insert(self.written(), state)).await.unwrap();
        self.edxapp.last_insert_id().expect("an id")
    }

    /// Deletes the second module's history and changes the oldest history row of the third, through the proxy,
    /// as edxapp's "reset student attempts" and second save in a request do.
    async fn change_history(&mut self, state: &str) {
        self.edxapp.query_drop(edxapp_delete(&self.deleted().to_string())).await.unwrap();
        let changed = self.changed();
        let oldest = read_history(&mut self.edxapp, changed).await.last().expect("history").0;
        let update = format!("UPDATE `{OLD}` SET `state` = '{state}' WHERE `{OLD}`.`id` = {oldest}");
        self.edxapp.query_drop(update).await.unwrap();
    }

    /// `init`, new history on the extended table, `migrate` and `verify`, then reads of the extended table alone.
    async fn forward_to_extended_reads(&mut self) {
        run(&self.site, &["init"], 0).await;
        flip(&self.site, &self.proxy, Stage::ExtendedTableReadingBoth).await;
        self.write("{\"after\": \"init\"}").await;
        run(&self.site, &["migrate"], 0).await;
        run(&self.site, &["verify"], 0).await;
        flip(&self.site, &self.proxy, Stage::ExtendedTableOnlyReads).await;
    }

    /// Whether the old table holds exactly the extended table's rows.
    async fn old_is_the_extended_table(&self) -> bool {
        self.site.old_fingerprint().await == self.site.extended_fingerprint(u64::MAX).await
    }

    /// From reads of both tables, once `migrate --back` has run there: history written in between, the flags
    /// back on the old table alone, a row written there, and the catch-up. Returns the history read at the end.
    async fn back_to_the_old_table(&mut self, mut history: Vec<Vec<(u64, String)>>) {
        // Written after the copy back, before every proxy follows the flags.
        let late = self.write("{\"written\": \"before the flip\"}").await;
        history[0].insert(0, (late, "{\"written\": \"before the flip\"}".to_owned()));
        flip(&self.site, &self.proxy, Stage::OldTableOnly).await;
        let own = self.write("{\"written\": \"on the old table\"}").await;
        assert!(own > late, "the old table's new row {own} takes an id above the extended table's {late}");
        let shown = self.histories().await;
        assert!(!shown[0].iter().any(|(id, _)| *id == late), "not copied back yet: {shown:?}");
        assert_next_step(&self.site, "migrate_back", &[]).await;
        let caught_up = run(&self.site, &["migrate", "--back"], 0).await;
        assert!(caught_up.contains("the extended rows it lacks copied"), "{caught_up}");
        history[0].insert(0, (own, "{\"written\": \"on the old table\"}".to_owned()));
        assert_eq!(self.histories().await, history, "every row is back, the old table's own too");
        let status = assert_next_step(&self.site, "went_back", &[]).await;
        assert_eq!(status["stage"], "old_table_only");
        let again = self.write("{\"written\": \"after going back\"}").await;
        history[0].insert(0, (again, "{\"written\": \"after going back\"}".to_owned()));
        assert_eq!(self.histories().await, history);
    }
}

/// Forward to the retired stage, the old table emptied (`keep`: kept aside by `truncate-old --keep`), history
/// changed while it is retired; then back, one stage at a time.
async fn from_the_retired_stage(two_servers: bool, keep: bool) {
    let mut way = WayBack::new(two_servers).await;
    way.forward_to_extended_reads().await;
    flip(&way.site, &way.proxy, Stage::OldTableRetired).await;
    let truncate = if keep { &["truncate-old", "--yes", "--keep"][..] } else { &["truncate-old", "--yes"] };
    let emptied = run(&way.site, truncate, 0).await;
    way.write("{\"written\": \"while retired\"}").await;
    way.change_history("{\"changed\": \"while retired\"}").await;
    let mut history = way.histories().await;
    assert!(history[1].is_empty() && history[2].last().unwrap().1.contains("while retired"), "{history:?}");

    // 3 -> 2: un-retire. The kept rows go back in place while nothing reaches the old table, stale as they are.
    if keep {
        let put_back = emptied.lines().find_map(|line| line.split_once("to put it back")).expect("the put-back").1;
        let statement = put_back.split_once(": ").expect("a statement").1.trim_end_matches(';');
        let mut edxapp = way.site.edxapp().await;
        edxapp.query_drop(statement).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
        edxapp.query_drop(format!("DROP TABLE `{}`.`{OLD}_new`", way.site.dbs.edxapp_db)).await.unwrap();
    }
    flip(&way.site, &way.proxy, Stage::ExtendedTableOnlyReads).await;
    assert_eq!(way.histories().await, history, "reads come from the extended table alone");
    let synced = run(&way.site, &["migrate", "--back"], 0).await;
    assert!(synced.contains("the old table made the same as the extended table"), "{synced}");
    if keep {
        assert!(!synced.contains(" 0 old rows removed"), "the deleted history is removed from the old table: {synced}");
    } else {
        let rows = way.site.csmh_number(&format!("SELECT COUNT(*) FROM {}", way.site.extended())).await;
        assert_eq!(number_before(&synced, " rows copied"), rows.unwrap(), "the emptied table gets every row: {synced}");
    }
    assert!(way.old_is_the_extended_table().await, "{synced}");
    let flags = [("ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES", true)];
    assert_next_step(&way.site, "set_flags", &flags).await;

    // 2 -> 1: reads of both tables show no row the extended table no longer has.
    flip(&way.site, &way.proxy, Stage::ExtendedTableReadingBoth).await;
    assert_eq!(way.histories().await, history, "deleted history stays deleted, changed history changed");
    let id = way.write("{\"written\": \"reading both again\"}").await;
    history[0].insert(0, (id, "{\"written\": \"reading both again\"}".to_owned()));
    assert_eq!(way.histories().await, history);

    // 1 -> 0.
    let merged = run(&way.site, &["migrate", "--back"], 0).await;
    assert!(merged.contains("every extended row copied into the old table"), "{merged}");
    assert_next_step(&way.site, "set_flags", &[("ENABLE_CSMH_EXTENDED", false)]).await;
    way.back_to_the_old_table(history).await;
}

/// Back from reads of both tables before `migrate` ever copied the old rows: the old table keeps its own rows,
/// and gets the extended table's.
async fn from_reading_both_before_the_copy(two_servers: bool) {
    let mut way = WayBack::new(two_servers).await;
    run(&way.site, &["init"], 0).await;
    flip(&way.site, &way.proxy, Stage::ExtendedTableReadingBoth).await;
    way.write("{\"after\": \"init\"}").await;
    way.change_history("{\"changed\": \"reading both\"}").await;
    let history = way.histories().await;
    let old_rows = way.site.old_fingerprint().await;

    let merged = run(&way.site, &["migrate", "--back"], 0).await;
    assert!(merged.contains("the old table's own rows kept"), "{merged}");
    assert_eq!(way.site.old_fingerprint_up_to(old_rows.max_id).await, old_rows, "the old rows are left as they are");
    assert_eq!(way.histories().await, history);
    let status = assert_next_step(&way.site, "set_flags", &[("ENABLE_CSMH_EXTENDED", false)]).await;
    assert_eq!(status["migrate_back"]["state"], "done", "{status:#}");
    assert_eq!(status["migrate_back"]["old_own_ids_up_to"], old_rows.max_id, "{status:#}");
    let status = run(&way.site, &["status"], 0).await;
    assert!(status.contains("migrate back:   done"), "{status}");
    assert!(status.contains("as `csmh-proxy migrate --back` set it"), "{status}");
    way.back_to_the_old_table(history).await;
}

/// Back from reads of the extended table alone, never retired: reads of both tables again need nothing, since
/// the old table was kept in line; then the extended table's own rows are copied back, the rest compared.
async fn from_reading_the_extended_table_alone(two_servers: bool) {
    let mut way = WayBack::new(two_servers).await;
    way.forward_to_extended_reads().await;
    way.write("{\"written\": \"extended reads\"}").await;
    way.change_history("{\"changed\": \"extended reads\"}").await;
    let history = way.histories().await;

    flip(&way.site, &way.proxy, Stage::ExtendedTableReadingBoth).await;
    assert_eq!(way.histories().await, history, "deletes and changes reached both tables");
    let merged = run(&way.site, &["migrate", "--back"], 0).await;
    assert!(merged.contains("the others already in line"), "{merged}");
    let copied = number_before(&merged, " rows copied");
    assert!(copied > 0 && copied < ROWS / 4, "the chunks with the extended table's own rows only: {merged}");
    assert!(way.old_is_the_extended_table().await, "{merged}");
    way.back_to_the_old_table(history).await;
}

/// A `migrate --back` killed part-way resumes from its checkpoint, and the old table ends up the same as the
/// extended table.
async fn an_interrupted_way_back_resumes(two_servers: bool) {
    let mut way = WayBack::new(two_servers).await;
    way.forward_to_extended_reads().await;
    flip(&way.site, &way.proxy, Stage::OldTableRetired).await;
    run(&way.site, &["truncate-old", "--yes"], 0).await;
    flip(&way.site, &way.proxy, Stage::ExtendedTableOnlyReads).await;
    let history = way.histories().await;

    let mut copying = way.site.binary(&["migrate", "--back", "--max-rows-per-second", "4000"]);
    let mut copying = copying.stderr(std::process::Stdio::null()).spawn().unwrap();
    let checkpoint = format!(
        "SELECT COALESCE(MAX(last_id), 0) FROM `{}`.csmh_proxy_checkpoint WHERE task = 'migrate-back'",
        way.site.dbs.csmh_db
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while way.site.csmh_number(&checkpoint).await.unwrap_or(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "the copy back never recorded a chunk");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    copying.kill().await.unwrap();
    let stopped = way.site.csmh_number(&checkpoint).await.unwrap();
    let rows = way.site.csmh_number(&format!("SELECT COUNT(*) FROM {}", way.site.extended())).await.unwrap();
    assert!(way.site.old_fingerprint().await.rows < rows, "killed before the end");

    let resumed = run(&way.site, &["migrate", "--back"], 0).await;
    assert!(resumed.contains(&format!("resumed after id {stopped}")), "{resumed}");
    assert!(way.old_is_the_extended_table().await, "{resumed}");
    flip(&way.site, &way.proxy, Stage::ExtendedTableReadingBoth).await;
    assert_eq!(way.histories().await, history);
}

/// What `migrate --back` refuses, and its dry run.
async fn refusals_and_dry_run(two_servers: bool) {
    let mut site = MigrationSite::new(two_servers).await;
    site.generate_old_rows(ROWS).await;
    run(&site, &["init"], 0).await;
    let extended = site.extended();
    // New history the proxy wrote, above the old ids.
    let new_rows = format!("INSERT INTO {extended} (created, state, student_module_id) VALUES (NOW(), 'new', 1)");
    for _ in 0..5 {
        site.csmh().await.query_drop(&new_rows).await.unwrap();
    }
    let old_highest = site.old_fingerprint().await.max_id;
    let extended_next = site.csmh_number(&format!("SELECT MAX(id) + 1 FROM {extended}")).await.unwrap();

    site.set_flags(Stage::OldTableOnly.flags());
    let refused = run(&site, &["migrate", "--back"], 1).await;
    assert!(refused.contains("never copied the extended table back"), "{refused}");
    site.set_flags(Stage::ExtendedTableOnlyReads.flags());
    let refused = run(&site, &["migrate", "--back"], 1).await;
    assert!(refused.contains("never finished copying the old table into it"), "{refused}");
    site.set_flags(Stage::OldTableRetired.flags());
    let refused = run(&site, &["migrate", "--back"], 1).await;
    assert!(refused.contains("set READ_ONLY_FROM_CSMHE = false first"), "{refused}");

    site.set_flags(Stage::ExtendedTableReadingBoth.flags());
    let before = site.servers_state().await;
    let plan = run(&site, &["migrate", "--back", "--dry-run"], 0).await;
    assert_eq!(site.servers_state().await, before, "the dry run changes nothing:\n{plan}");
    let old = site.old();
    for expected in [
        "dry run: nothing has been changed",
        "start: from the first id",
        &format!("the old table's own rows end at id {old_highest}"),
        "WHERE `id` BETWEEN 1 AND 1000;\n",
        &format!("ALTER TABLE {old} AUTO_INCREMENT = {};", extended_next + 10_000),
    ] {
        assert!(plan.contains(expected), "no `{expected}` in:\n{plan}");
    }
    let copy = if two_servers {
        format!(
            "INSERT INTO {old} (`version`, `created`, `state`, `grade`, `max_grade`, `id`, `student_module_id`) VALUES"
        )
    } else {
        format!(
            "INSERT INTO {old} (`version`, `created`, `state`, `grade`, `max_grade`, `id`, `student_module_id`) SELECT"
        )
    };
    assert!(plan.contains(&copy), "no `{copy}` in:\n{plan}");

    // Ids the old table's signed 32-bit columns cannot hold.
    site.csmh()
        .await
        .query_drop(format!("INSERT INTO {extended} (created, id, student_module_id) VALUES (NOW(), 2147483648, 1)"))
        .await
        .unwrap();
    let old_rows = site.old_fingerprint().await;
    let refused = run(&site, &["migrate", "--back"], 1).await;
    assert!(refused.contains("history id of 2147483648, above 2147483647"), "{refused}");
    assert_eq!(site.old_fingerprint().await, old_rows, "nothing was copied");
}

/// The number just before `suffix` in `text` (`20001` in `... 20001 rows copied ...`).
fn number_before(text: &str, suffix: &str) -> u64 {
    let before = &text[..text.find(suffix).unwrap_or_else(|| panic!("no `{suffix}` in:\n{text}"))];
    let digits = before.rsplit(|c: char| !c.is_ascii_digit()).next().unwrap_or_default();
    digits.parse().unwrap_or_else(|_| panic!("no number before `{suffix}` in:\n{text}"))
}

#[tokio::test]
async fn from_the_retired_stage_with_the_old_rows_kept_on_one_server() {
    from_the_retired_stage(false, true).await;
}

#[tokio::test]
async fn from_the_retired_stage_with_the_old_rows_kept_on_two_servers() {
    from_the_retired_stage(true, true).await;
}

#[tokio::test]
async fn from_the_retired_stage_after_truncate_on_one_server() {
    from_the_retired_stage(false, false).await;
}

#[tokio::test]
async fn from_the_retired_stage_after_truncate_on_two_servers() {
    from_the_retired_stage(true, false).await;
}

#[tokio::test]
async fn from_reading_both_before_the_copy_on_one_server() {
    from_reading_both_before_the_copy(false).await;
}

#[tokio::test]
async fn from_reading_both_before_the_copy_on_two_servers() {
    from_reading_both_before_the_copy(true).await;
}

#[tokio::test]
async fn from_reading_the_extended_table_alone_on_one_server() {
    from_reading_the_extended_table_alone(false).await;
}

#[tokio::test]
async fn from_reading_the_extended_table_alone_on_two_servers() {
    from_reading_the_extended_table_alone(true).await;
}

#[tokio::test]
async fn an_interrupted_way_back_resumes_on_one_server() {
    an_interrupted_way_back_resumes(false).await;
}

#[tokio::test]
async fn an_interrupted_way_back_resumes_on_two_servers() {
    an_interrupted_way_back_resumes(true).await;
}

#[tokio::test]
async fn refusals_and_dry_run_on_one_server() {
    refusals_and_dry_run(false).await;
}

#[tokio::test]
async fn refusals_and_dry_run_on_two_servers() {
    refusals_and_dry_run(true).await;
}
