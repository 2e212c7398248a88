//! Django's driver, Python's `mysqlclient`, through the proxy: each test runs one scenario of
//! `tests/python/django_client.py` — connecting as Django's MySQL backend does, then types and metadata, write
//! feedback (FOUND_ROWS rowcount, insert ids, warnings, errors), transactions and savepoints, multiple result
//! sets — directly against the server and through the proxy, and fails when anything the application could
//! observe differs, or when either run misses the scenario's expectations.
//!
//! The driver is installed in a virtual environment under the target directory, built on first use.

mod support;

use std::path::{Path, PathBuf};

use support::clients::{self, ProxiedDatabase};
use support::packages::MYSQLCLIENT;

/// The Python interpreter of a virtual environment with `mysqlclient`, built (once) if needed.
async fn python() -> PathBuf {
    clients::blocking(|| MYSQLCLIENT.python()).await
}

/// Runs `scenario` directly and through the proxy, in a database of the test's own; the script's report is the
/// failure message.
async fn compare(scenario: &str) {
    let database = ProxiedDatabase::new().await;
    let python = python().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/django_client.py");
    let account = support::app();
    let output = clients::run(
        tokio::process::Command::new(python)
            .arg(script)
            .arg(scenario)
            .arg(format!("--direct={}", database.direct()))
            .arg(format!("--proxy={}", database.proxy()))
            .arg(format!("--user={}", account.user))
            .arg(format!("--password={}", account.password))
            .arg(format!("--database={}", database.name())),
    )
    .await;
    assert!(
        output.status.success(),
        "{scenario}: mysqlclient saw a difference ({}):\n{}{}",
        output.status,
        clients::text(&output.stdout),
        clients::text(&output.stderr)
    );
}

#[tokio::test]
async fn types_values_and_column_metadata_are_the_same_through_the_proxy() {
    compare("types").await;
}

#[tokio::test]
async fn rowcounts_insert_ids_warnings_and_errors_are_the_same_through_the_proxy() {
    compare("feedback").await;
}

#[tokio::test]
async fn autocommit_rollback_and_savepoints_behave_the_same_through_the_proxy() {
    compare("transactions").await;
}

#[tokio::test]
async fn multi_statement_and_stored_procedure_result_sets_are_the_same_through_the_proxy() {
    compare("results").await;
}
