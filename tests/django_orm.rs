//! Django's ORM through the proxy, used the way edxapp uses it on the student-module history: edx-platform's
//! `StudentModule` and `StudentModuleHistory` models (`tests/python/edx_courseware/`) on Django's MySQL backend
//! connected to the proxy, driven by `tests/python/django_orm.py` — history written on save, the second save of a
//! request updating its row, the user-state client's and the submission-history view's reads (a literal list and
//! a subquery), slicing, `count()`, `exists()`, `get()`, `latest()`, deleting learner state (the collector's
//! cascade), committed and rolled-back requests and nested `atomic` blocks — under each stage of the routing
//! table (docs/routing.md), on one server and on two. The script checks every ORM result and every write against the
//! tables, read directly on their servers; its report is the failure message.
//!
//! Across two servers the row that reads both tables exercises the proxy's merge of the two servers' results
//! (`tests/routing_two_servers.rs` tests the merge's shapes and refusals statement by statement).
//!
//! Django is installed into the `mysqlclient` virtual environment of `tests/mysqlclient.rs`.

mod support;

use std::path::Path;

use csmh_proxy::history::Stage;
use csmh_proxy::sandbox::EXTENDED_TABLE;
use mysql_async::prelude::*;
use support::clients;
use support::edx::Site;
use support::packages;

/// The script's name for a stage's flags.
fn script_name(stage: Stage) -> &'static str {
    match stage {
        Stage::OldTableOnly => "off",
        Stage::ExtendedTableReadingBoth => "both",
        Stage::ExtendedTableOnlyReads => "extended",
        Stage::OldTableRetired => "retired",
    }
}

/// The sample modules whose history `csmh-proxy migrate` has copied to the extended table (ids kept, state
/// marked) when the site is at `stage`: none before the migration, part of it while both tables are read, all but
/// the last module's once only the extended table is read (rows written to the old table during the roll-out,
/// which the catch-up pass has not copied yet).
fn copied_modules(stage: Stage) -> &'static [u64] {
    match stage {
        Stage::OldTableOnly => &[],
        Stage::ExtendedTableReadingBoth => &[1, 2],
        Stage::ExtendedTableOnlyReads | Stage::OldTableRetired => &[1, 2, 3, 4, 5],
    }
}

/// The ids of the old table's history rows of `modules`.
async fn history_of(site: &Site, modules: &[u64]) -> Vec<u64> {
    if modules.is_empty() {
        return Vec::new();
    }
    let list: Vec<String> = modules.iter().map(u64::to_string).collect();
    let sql = format!("SELECT id FROM {} WHERE student_module_id IN ({}) ORDER BY id", site.old(), list.join(", "));
    site.root().await.query(sql).await.unwrap()
}

/// Where the extended table is.
#[derive(Clone, Copy, Debug)]
enum Servers {
    /// On the `edxapp` server.
    One,
    /// On a server of its own.
    Two,
}

/// Runs the Django scenario with `stage`'s flags, the sample history copied as that stage of the migration has it.
async fn django_scenario(servers: Servers, stage: Stage) {
    let site = match servers {
        Servers::One => Site::new(stage.flags()).await,
        Servers::Two => Site::two_servers(stage.flags()).await,
    };
    site.copy_to_extended(&history_of(&site, copied_modules(stage)).await).await;
    let (dbs, proxy) = (&site.dbs, &site.proxy);
    let python = clients::blocking(packages::django_4_2_python).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/django_orm.py");
    let account = support::app();
    let mut command = tokio::process::Command::new(python);
    command
        .arg(script)
        .arg(format!("--proxy={}", proxy.addr()))
        .arg(format!("--edxapp={}", dbs.edxapp.addr()))
        .arg(format!("--csmh={}", dbs.csmh.addr()))
        .arg(format!("--user={}", account.user))
        .arg(format!("--password={}", account.password))
        .arg(format!("--edxapp-db={}", dbs.edxapp_db))
        .arg(format!("--csmh-db={}", dbs.csmh_db))
        .arg(format!("--extended-table={EXTENDED_TABLE}"))
        .arg(format!("--flags={}", script_name(stage)))
        .arg(format!("--first-extended-id={}", site.first_extended_id))
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let output = clients::run(&mut command).await;
    // The script's report, shown by the test harness on failure (or with --nocapture).
    println!("{}{}", clients::text(&output.stdout), clients::text(&output.stderr));
    assert!(
        output.status.success(),
        "Django through the proxy, flags {:?} on {servers:?} server(s): the ORM saw something else than the \
         tables hold ({}); the script's report is above",
        stage.flags(),
        output.status,
    );
}

#[tokio::test]
async fn one_server_flags_off_django_reads_and_writes_the_old_table() {
    django_scenario(Servers::One, Stage::OldTableOnly).await;
}

#[tokio::test]
async fn one_server_reading_both_tables_django_sees_each_history_row_once() {
    django_scenario(Servers::One, Stage::ExtendedTableReadingBoth).await;
}

#[tokio::test]
async fn one_server_extended_table_only_django_reads_and_writes_the_extended_table() {
    django_scenario(Servers::One, Stage::ExtendedTableOnlyReads).await;
}

#[tokio::test]
async fn one_server_retired_old_table_django_never_reaches_it() {
    django_scenario(Servers::One, Stage::OldTableRetired).await;
}

#[tokio::test]
async fn two_servers_flags_off_django_reads_and_writes_the_old_table() {
    django_scenario(Servers::Two, Stage::OldTableOnly).await;
}

#[tokio::test]
async fn two_servers_extended_table_only_django_reads_and_writes_the_extended_server() {
    django_scenario(Servers::Two, Stage::ExtendedTableOnlyReads).await;
}

#[tokio::test]
async fn two_servers_retired_old_table_django_never_reaches_it() {
    django_scenario(Servers::Two, Stage::OldTableRetired).await;
}

#[tokio::test]
async fn two_servers_reading_both_tables_django_sees_each_history_row_once() {
    django_scenario(Servers::Two, Stage::ExtendedTableReadingBoth).await;
}
