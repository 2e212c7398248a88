//! docs/migration.md, "The 2^31 boundary", on real parts: edX databases with new history going to the extended
//! table, csmh-proxy in front, and a real Django with edx-platform's history model and its second save of a
//! problem's state within one request (`tests/python/edx_courseware/`), driven by `tests/python/django_boundary.py`.
//!
//! - Django 5.2 (Open edX Ulmo and later), the history model's `id` a 32-bit `AutoField` as edx-platform has it: up
//!   to id 2147483647 the second save updates the row the first wrote; past it, Django drops the second save's
//!   `get(id=…)` without sending a statement, edxapp logs "Cached StudentModuleHistory instance does not exist" at
//!   ERROR and adds a row: two rows for the request, both states kept.
//! - The remedy: the model declares `id = models.BigAutoField(primary_key=True)` and a migration changes the field in
//!   Django's state only (`SeparateDatabaseAndState`, applied with `migrate`): no statement touches the history
//!   tables, whose definitions stay as they were, and the second save updates its row again. The migration alone does
//!   not do it, nor edx-platform's own `UnsignedBigIntAutoField`, which Django checks as a 32-bit `AutoField`.
//! - Django 4.2 (up to Teak) is not affected.
//!
//! Each scenario runs with reads from both tables and with reads from the extended table alone. The tables are read
//! directly on their servers; what Django sent comes from its `execute_wrapper`, and edxapp's log from the
//! script's standard error.

mod support;

use std::path::{Path, PathBuf};

use csmh_proxy::history::Stage;
use mysql_async::prelude::*;
use serde::Deserialize;
use support::clients;
use support::edx::Site;
use support::packages::{self, DJANGO_4_2, DJANGO_5_2, DJANGO_5_2_VENV};

/// The largest id of a 32-bit `AutoField`, which Django 5 still looks up.
const LAST_32_BIT_ID: u64 = 2_147_483_647;

/// The sample module whose state the requests save (alice's first problem).
const MODULE: u64 = 1;

/// A Django release, with the virtual environment it is installed in.
#[derive(Debug, Clone, Copy)]
enum Django {
    /// 4.2, edx-platform's release up to Teak.
    V4_2,
    /// 5.2, edx-platform's release from Ulmo on.
    V5_2,
}

impl Django {
    /// The Python interpreter with this release installed.
    async fn python(self) -> PathBuf {
        match self {
            Django::V4_2 => clients::blocking(packages::django_4_2_python).await,
            Django::V5_2 => clients::blocking(|| DJANGO_5_2_VENV.python()).await,
        }
    }

    /// The release's version, as `django.get_version()` says it.
    fn version(self) -> &'static str {
        match self {
            Django::V4_2 => DJANGO_4_2,
            Django::V5_2 => DJANGO_5_2,
        }
    }
}

/// How the history model declares its `id`.
#[derive(Debug, Clone, Copy)]
enum HistoryId {
    /// As edx-platform does: not at all, so it is the app's default, a 32-bit `AutoField`.
    Auto,
    /// `models.BigAutoField`, Django's 64-bit id.
    BigAutoField,
    /// edx-platform's `UnsignedBigIntAutoField` (the extended model's id): a `bigint unsigned` column, but an
    /// `AutoField` to Django.
    UnsignedBigIntAutoField,
}

impl HistoryId {
    /// The script's `--history-id`.
    fn script_name(self) -> &'static str {
        match self {
            HistoryId::Auto => "auto",
            HistoryId::BigAutoField => "BigAutoField",
            HistoryId::UnsignedBigIntAutoField => "UnsignedBigIntAutoField",
        }
    }

    /// The class of the model's id field.
    fn class(self) -> &'static str {
        match self {
            HistoryId::Auto => "AutoField",
            other => other.script_name(),
        }
    }
}

/// What the script printed on standard output, and its standard error.
#[derive(Debug, Deserialize)]
struct Report {
    /// `django.get_version()`.
    django: String,
    /// The class of the history model's id field.
    history_id_field: String,
    /// Every statement Django sent, with its values.
    statements: Vec<String>,
    /// `request`: the ids of the history rows the request's saves added.
    #[serde(default)]
    written: Vec<u64>,
    /// `migrate`: the output of `migrate`.
    #[serde(default)]
    migrate_output: String,
    /// `migrate`: the output of `makemigrations --check`.
    #[serde(default)]
    makemigrations_output: String,
    /// `migrate`: whether `makemigrations --check` found the migrations describing the models as declared.
    #[serde(default)]
    agree: bool,
    /// The log lines on standard error.
    #[serde(skip)]
    log: String,
}

impl Report {
    /// edxapp's ERROR lines about a cached history row it could not find.
    fn missing_cached_rows(&self) -> Vec<&str> {
        self.log.lines().filter(|line| line.contains("Cached StudentModuleHistory instance does not exist")).collect()
    }

    /// The statements that read the history table.
    fn history_selects(&self) -> Vec<&str> {
        self.statements
            .iter()
            .map(String::as_str)
            .filter(|sql| sql.starts_with("SELECT") && sql.contains("`courseware_studentmodulehistory`"))
            .collect()
    }
}

/// Runs `tests/python/django_boundary.py` with `django` against `site`'s proxy, the history model's id declared as
/// `id`, with the command line `command`; panics with its output unless it succeeds.
async fn run_script(site: &Site, django: Django, id: HistoryId, command: &[&str]) -> Report {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/django_boundary.py");
    let account = support::app();
    let mut process = tokio::process::Command::new(django.python().await);
    process
        .arg(script)
        .arg(format!("--proxy={}", site.proxy.addr()))
        .arg(format!("--user={}", account.user))
        .arg(format!("--password={}", account.password))
        .arg(format!("--edxapp-db={}", site.dbs.edxapp_db))
        .arg(format!("--history-id={}", id.script_name()))
        .args(command)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let output = clients::run_ok(&mut process).await;
    // The script's report and log, shown by the test harness on failure (or with --nocapture).
    println!("{command:?}:\n{}{}", clients::text(&output.stdout), clients::text(&output.stderr));
    let mut report: Report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("the script's report: {e}\n{}", clients::text(&output.stdout)));
    report.log = clients::text(&output.stderr);
    assert_eq!(report.django, django.version(), "the Django release that ran");
    assert_eq!(report.history_id_field, id.class(), "the history model's id field");
    report
}

/// One LMS request in which Django `django` saves the sample module's state once per entry of `states`.
async fn request(site: &Site, django: Django, id: HistoryId, states: &[&str]) -> Report {
    let mut command = vec!["request".to_owned(), format!("--module={MODULE}")];
    command.extend(states.iter().map(|state| format!("--state={state}")));
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    run_script(site, django, id, &command).await
}

/// The extended table's rows, `(id, state)` by id, read directly.
async fn history_rows(site: &Site) -> Vec<(u64, String)> {
    let sql = format!("SELECT id, state FROM {} ORDER BY id", site.extended());
    site.csmh_root().await.query(sql).await.unwrap()
}

/// The history rows `request` adds to the extended table, and the report of the request.
async fn rows_added_by<F: Future<Output = Report>>(site: &Site, request: F) -> (Vec<(u64, String)>, Report) {
    let before: Vec<u64> = history_rows(site).await.into_iter().map(|(id, _)| id).collect();
    let report = request.await;
    let after = history_rows(site).await;
    (after.into_iter().filter(|(id, _)| !before.contains(id)).collect(), report)
}

/// Makes `next` the extended table's next id.
async fn set_next_history_id(site: &Site, next: u64) {
    let sql = format!("ALTER TABLE {} AUTO_INCREMENT = {next}", site.extended());
    site.csmh_root().await.query_drop(sql).await.unwrap();
}

/// `SHOW CREATE TABLE` of both history tables, read directly.
async fn table_definitions(site: &Site) -> [String; 2] {
    async fn definition(mut conn: mysql_async::Conn, table: String) -> String {
        let row: Option<(String, String)> = conn.query_first(format!("SHOW CREATE TABLE {table}")).await.unwrap();
        row.expect("the table exists").1
    }
    [definition(site.root().await, site.old()).await, definition(site.csmh_root().await, site.extended()).await]
}

/// The line edxapp logs when the second save cannot find the row the first wrote, `id`.
fn missing_cached_row(id: u64) -> String {
    format!(
        "ERROR [edx.courseware] Cached StudentModuleHistory instance does not exist: StudentModuleHistory({id}) for \
         StudentModule({MODULE})"
    )
}

/// The first of two saves in one request, as when a learner submits an answer: the attempt.
const FIRST: &str = r#"{"attempts": 1, "student_answers": {"2_1": "choice_3"}}"#;
/// The second save of that request: the graded state.
const SECOND: &str = r#"{"attempts": 1, "student_answers": {"2_1": "choice_3"}, "correct_map": {"2_1": "correct"}}"#;

/// Checks that a request with two saves, its first row at `id`, left one row holding the second save's state, that
/// the second save read that row back through the proxy, and that nothing was logged about it.
fn assert_updated_in_place(id: u64, (added, report): &(Vec<(u64, String)>, Report)) {
    assert_eq!(added, &[(id, SECOND.to_owned())], "one history row, updated by the second save");
    assert_eq!(report.written, [id], "the request added one row");
    let selects = report.history_selects();
    assert_eq!(selects.len(), 1, "the second save looks its row up: {selects:#?}");
    assert!(selects[0].ends_with(&format!("= {id} LIMIT 21")), "by its id: {}", selects[0]);
    assert_eq!(report.missing_cached_rows(), Vec::<&str>::new(), "nothing logged about the cached row");
}

/// Checks that a request with two saves, its first row at `id`, left two rows, one per save, that Django sent no
/// statement to read the first back, and that edxapp logged the ERROR line about it.
fn assert_second_row_added(id: u64, (added, report): &(Vec<(u64, String)>, Report)) {
    let expected = [(id, FIRST.to_owned()), (id + 1, SECOND.to_owned())];
    assert_eq!(added, &expected, "a second row instead of an update; both states kept");
    assert_eq!(report.written, [id, id + 1], "the request added two rows");
    assert_eq!(report.history_selects(), Vec::<&str>::new(), "the lookup by id never reached the database");
    assert_eq!(report.missing_cached_rows(), [missing_cached_row(id)], "edxapp's log:\n{}", report.log);
}

/// Django 5.2 with edx-platform's model: the second save of a request updates the first's row as long as its id
/// fits in 32 bits (the last such id included), and adds a row once ids have passed 2^31.
async fn django_5_2_across_the_boundary(stage: Stage) {
    let site = Site::new(stage.flags()).await;
    set_next_history_id(&site, LAST_32_BIT_ID).await;

    let below = rows_added_by(&site, request(&site, Django::V5_2, HistoryId::Auto, &[FIRST, SECOND])).await;
    assert_updated_in_place(LAST_32_BIT_ID, &below);

    let past = rows_added_by(&site, request(&site, Django::V5_2, HistoryId::Auto, &[FIRST, SECOND])).await;
    assert_second_row_added(LAST_32_BIT_ID + 1, &past);
}

/// Past 2^31 on Django 5.2: the state-only migration, applied with `migrate`, leaves the tables as they are; with
/// it and the model declaring a `BigAutoField`, the second save updates its row again. The migration with the
/// model unchanged, or with edx-platform's `UnsignedBigIntAutoField`, still adds a row.
async fn state_only_big_auto_field_past_the_boundary(stage: Stage) {
    let site = Site::new(stage.flags()).await;
    let mut next = LAST_32_BIT_ID + 1;
    set_next_history_id(&site, next).await;

    let before = table_definitions(&site).await;
    let migrated = run_script(&site, Django::V5_2, HistoryId::BigAutoField, &["migrate"]).await;
    assert!(
        migrated.migrate_output.contains("Applying courseware.0002_studentmodulehistory_id_64_bit... OK"),
        "migrate applies the state-only migration:\n{}",
        migrated.migrate_output
    );
    assert!(
        migrated.agree && migrated.makemigrations_output.contains("No changes detected"),
        "the migrations describe the model with its BigAutoField:\n{}",
        migrated.makemigrations_output
    );
    let touching_history: Vec<&String> =
        migrated.statements.iter().filter(|sql| sql.contains("courseware_studentmodulehistory")).collect();
    assert_eq!(touching_history, Vec::<&String>::new(), "migrate sends nothing about the history table");
    let schema_changes: Vec<&String> = migrated
        .statements
        .iter()
        .filter(|sql| ["ALTER", "CREATE", "DROP", "RENAME"].iter().any(|verb| sql.starts_with(verb)))
        .filter(|sql| !sql.contains("`django_migrations`"))
        .collect();
    assert_eq!(schema_changes, Vec::<&String>::new(), "no schema change but Django's own migration table");
    assert_eq!(table_definitions(&site).await, before, "both history tables are defined as before");

    for unchanged_model in [HistoryId::Auto, HistoryId::UnsignedBigIntAutoField] {
        let saves = rows_added_by(&site, request(&site, Django::V5_2, unchanged_model, &[FIRST, SECOND])).await;
        assert_second_row_added(next, &saves);
        next += 2;
    }

    let fixed = rows_added_by(&site, request(&site, Django::V5_2, HistoryId::BigAutoField, &[FIRST, SECOND])).await;
    assert_updated_in_place(next, &fixed);
}

/// Django 4.2 with edx-platform's model: past 2^31 the second save still updates its row.
async fn django_4_2_past_the_boundary(stage: Stage) {
    let site = Site::new(stage.flags()).await;
    set_next_history_id(&site, LAST_32_BIT_ID + 1).await;
    let saves = rows_added_by(&site, request(&site, Django::V4_2, HistoryId::Auto, &[FIRST, SECOND])).await;
    assert_updated_in_place(LAST_32_BIT_ID + 1, &saves);
}

#[tokio::test]
async fn reading_both_tables_django_5_2_second_save_adds_a_row_and_logs_an_error_past_2_31() {
    django_5_2_across_the_boundary(Stage::ExtendedTableReadingBoth).await;
}

#[tokio::test]
async fn extended_table_only_django_5_2_second_save_adds_a_row_and_logs_an_error_past_2_31() {
    django_5_2_across_the_boundary(Stage::ExtendedTableOnlyReads).await;
}

#[tokio::test]
async fn reading_both_tables_a_state_only_big_auto_field_restores_the_second_save_past_2_31() {
    state_only_big_auto_field_past_the_boundary(Stage::ExtendedTableReadingBoth).await;
}

#[tokio::test]
async fn extended_table_only_a_state_only_big_auto_field_restores_the_second_save_past_2_31() {
    state_only_big_auto_field_past_the_boundary(Stage::ExtendedTableOnlyReads).await;
}

#[tokio::test]
async fn reading_both_tables_django_4_2_is_not_affected_past_2_31() {
    django_4_2_past_the_boundary(Stage::ExtendedTableReadingBoth).await;
}

#[tokio::test]
async fn extended_table_only_django_4_2_is_not_affected_past_2_31() {
    django_4_2_past_the_boundary(Stage::ExtendedTableOnlyReads).await;
}

/// The state-only migration docs/migration.md ("The 2^31 boundary") gives operators: its Python block.
fn documented_migration() -> String {
    let docs = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/migration.md")).unwrap();
    let section = &docs[docs.find("## The 2^31 boundary").expect("the section")..];
    let block = &section[section.find("```python\n").expect("a Python block") + "```python\n".len()..];
    block[..block.find("```").expect("the block's end")].to_owned()
}

/// `migration` with its dependency on the `courseware` app's previous migration left out.
fn without_dependency(migration: &str) -> String {
    let lines = migration.lines().filter(|line| !line.trim_start().starts_with(r#"("courseware", "#));
    lines.collect::<Vec<_>>().join("\n")
}

#[test]
fn the_documented_migration_is_the_one_tested() {
    let tested = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python/edx_courseware/migrations/0002_studentmodulehistory_id_64_bit.py");
    let tested = std::fs::read_to_string(tested).unwrap();
    assert_eq!(without_dependency(&documented_migration()), without_dependency(&tested));
}
