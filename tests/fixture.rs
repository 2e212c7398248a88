//! The test fixture itself, against real MariaDB servers: servers start and answer, databases keep tests apart,
//! the edX schema is edx-platform's, accounts need their passwords, and servers go away with their owner.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use csmh_proxy::sandbox;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use support::{Account, EdxDatabases};

/// Set in the environment of the child process that [`a_killed_owner_takes_its_server_along`] kills.
const KILL_HELPER_ENV: &str = "CSMH_FIXTURE_KILL_HELPER";

/// The first column of the first row of `sql`.
async fn scalar<T: mysql_async::prelude::FromValue + Send + 'static>(conn: &mut Conn, sql: &str) -> T {
    let value: Option<T> = conn.query_first(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    value.unwrap_or_else(|| panic!("{sql}: no row"))
}

/// Whether process `pid` still runs (a zombie does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

/// Waits up to ten seconds for `pid` to stop running.
fn wait_until_gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

#[tokio::test]
async fn the_shared_server_answers_root_and_the_app_account() {
    let server = support::server().await;
    let mut root = support::root_conn(&server).await;
    let version: String = scalar(&mut root, "SELECT VERSION()").await;
    assert!(version.contains("MariaDB"), "{version}");
    let mut app = support::connect(server.addr(), &support::app(), None).await;
    let user: String = scalar(&mut app, "SELECT CURRENT_USER()").await;
    assert_eq!(user, "edxapp001@%");
}

#[tokio::test]
async fn fresh_databases_do_not_see_each_other() {
    let (first, second) = tokio::join!(EdxDatabases::fresh(), EdxDatabases::fresh());
    assert_ne!(first.edxapp_db, second.edxapp_db);
    for (databases, value) in [(&first, 1), (&second, 2)] {
        let mut conn = Conn::new(databases.direct_opts(&support::app())).await.expect("app login");
        conn.query_drop("CREATE TABLE t (v int)").await.expect("CREATE TABLE");
        conn.exec_drop("INSERT INTO t VALUES (?)", (value,)).await.expect("INSERT");
    }
    for (databases, value) in [(&first, 1), (&second, 2)] {
        let mut conn = Conn::new(databases.direct_opts(&support::app())).await.expect("app login");
        let values: Vec<i32> = conn.query("SELECT v FROM t").await.expect("SELECT");
        assert_eq!(values, [value], "{}", databases.edxapp_db);
    }
}

#[tokio::test]
async fn the_edx_schema_puts_the_extended_id_sixth_and_above_every_old_id() {
    let databases = EdxDatabases::fresh().await;
    let start = databases.create_edx_schema(true).await;
    let mut conn = Conn::new(databases.direct_opts(&support::app())).await.expect("app login");
    let max_old: u64 = scalar(&mut conn, "SELECT MAX(id) FROM courseware_studentmodulehistory").await;
    assert_eq!(max_old, 18, "three learners, two problems, three history rows each");
    assert_eq!(start, max_old + sandbox::STUDENTMODULEHISTORYEXTENDED_OFFSET);
    let columns: Vec<(String, String, u64)> = conn
        .exec(
            "SELECT TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION FROM information_schema.COLUMNS
             WHERE COLUMN_NAME = 'id' AND TABLE_SCHEMA IN (?, ?) AND TABLE_NAME IN (?, ?) ORDER BY TABLE_SCHEMA",
            (&databases.edxapp_db, &databases.csmh_db, sandbox::OLD_TABLE, sandbox::EXTENDED_TABLE),
        )
        .await
        .expect("information_schema");
    assert_eq!(
        columns,
        [
            (databases.edxapp_db.clone(), sandbox::OLD_TABLE.to_owned(), 1),
            (databases.csmh_db.clone(), sandbox::EXTENDED_TABLE.to_owned(), 6),
        ]
    );
    let insert = format!(
        "INSERT INTO {}.{} (created, student_module_id) VALUES (NOW(6), 1)",
        databases.csmh_db,
        sandbox::EXTENDED_TABLE
    );
    conn.query_drop(insert).await.expect("INSERT into the extended table");
    assert_eq!(conn.last_insert_id(), Some(start), "the extended table's first id");
}

#[tokio::test]
async fn two_private_servers_hold_the_real_names_apart() {
    let databases = EdxDatabases::private_two_servers().await;
    assert!(!databases.same_server());
    assert_eq!((databases.edxapp_db.as_str(), databases.csmh_db.as_str()), (sandbox::EDXAPP_DB, sandbox::CSMH_DB));
    let start = databases.create_edx_schema(true).await;
    assert_eq!(start, 18 + sandbox::STUDENTMODULEHISTORYEXTENDED_OFFSET);
    let count_extended = "SELECT COUNT(*) FROM information_schema.TABLES
                          WHERE TABLE_NAME = 'coursewarehistoryextended_studentmodulehistoryextended'";
    let mut edxapp = support::root_conn(&databases.edxapp).await;
    let mut csmh = support::root_conn(&databases.csmh).await;
    assert_eq!(scalar::<u64>(&mut edxapp, count_extended).await, 0);
    assert_eq!(scalar::<u64>(&mut csmh, count_extended).await, 1);
    let mut app = Conn::new(databases.csmh_direct_opts(&support::app())).await.expect("app login to csmh");
    let next: u64 = scalar(
        &mut app,
        "SELECT AUTO_INCREMENT FROM information_schema.TABLES
         WHERE TABLE_SCHEMA = 'edxapp_csmh' AND TABLE_NAME = 'coursewarehistoryextended_studentmodulehistoryextended'",
    )
    .await;
    assert_eq!(next, start);
}

#[tokio::test]
async fn the_second_shared_server_is_another_server() {
    let databases = EdxDatabases::fresh_two_servers().await;
    assert_ne!(databases.edxapp.addr(), databases.csmh.addr());
    let mut csmh = Conn::new(databases.csmh_direct_opts(&support::app())).await.expect("app login to csmh");
    let database: String = scalar(&mut csmh, "SELECT DATABASE()").await;
    assert_eq!(database, databases.csmh_db);
}

#[tokio::test]
async fn the_app_account_needs_its_password() {
    let server = support::server().await;
    let app = support::app();
    for password in ["wrong-password", ""] {
        let impostor = Account::native(&app.user, password);
        match Conn::new(impostor.opts(server.addr(), None)).await {
            Err(mysql_async::Error::Server(error)) => assert_eq!(error.code, 1045, "{error}"),
            Err(other) => panic!("password {password:?}: expected error 1045, got {other}"),
            Ok(_) => panic!("password {password:?}: logged in"),
        }
    }
    let mut conn = support::connect(server.addr(), &app, None).await;
    let rows: Vec<Row> = conn.query("SELECT 1").await.expect("SELECT 1");
    assert_eq!(rows.len(), 1);
}

#[tokio::test]
async fn every_fixture_account_logs_in_with_the_mariadb_client() {
    let server = support::server().await;
    let database = support::fresh_database(&server, "cli").await;
    for account in support::accounts() {
        let output =
            support::mariadb_cli_run(server.addr(), &account, Some(&database), "SELECT CURRENT_USER(), DATABASE()")
                .await;
        let stdout = support::cli_stdout(&output);
        assert!(stdout.contains(&format!("{}@%\t{database}", account.user)), "{stdout}");
    }
}

#[tokio::test]
async fn a_server_outlives_the_thread_that_started_it() {
    let server = std::thread::spawn(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        runtime.block_on(support::private_server())
    })
    .join()
    .expect("the starting thread");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(running(server.pid()), "the server died with the thread that started it");
    let mut conn = support::root_conn(&server).await;
    assert_eq!(scalar::<u32>(&mut conn, "SELECT 1").await, 1);
}

#[tokio::test]
async fn dropping_a_server_kills_it_and_removes_its_directory() {
    let server = support::private_server().await;
    let (pid, dir) = (server.pid(), server.datadir().parent().map(Path::to_owned).expect("a parent directory"));
    assert!(running(pid) && dir.is_dir());
    drop(server);
    assert!(!running(pid), "the server still runs");
    assert!(!dir.exists(), "{} is still there", dir.display());
}

/// Run only as the child process of [`a_killed_owner_takes_its_server_along`]: starts a server, says where it
/// is, and waits to be killed.
#[tokio::test]
#[ignore = "a helper process, started by a_killed_owner_takes_its_server_along"]
async fn kill_helper() {
    if std::env::var_os(KILL_HELPER_ENV).is_none() {
        return;
    }
    let server = support::private_server().await;
    let dir = server.datadir().parent().map(Path::to_owned).expect("a parent directory");
    println!("SERVER {} {}", server.pid(), dir.display());
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[test]
fn a_killed_owner_takes_its_server_along() {
    let exe = std::env::current_exe().expect("the test binary");
    let mut owner = Command::new(exe)
        .args(["kill_helper", "--exact", "--ignored", "--nocapture"])
        .env(KILL_HELPER_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the helper process starts");
    let stdout = owner.stdout.take().expect("piped stdout");
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|line| line.starts_with("SERVER "))
        .expect("the helper started a server");
    let mut words = line.split(' ').skip(1);
    let pid: u32 = words.next().and_then(|pid| pid.parse().ok()).expect("a pid");
    let dir = PathBuf::from(words.next().expect("a directory"));
    assert!(running(pid));
    owner.kill().expect("SIGKILL to the helper");
    owner.wait().expect("the helper is reaped");
    assert!(wait_until_gone(pid), "the server outlived its killed owner");
    sandbox::remove_stale_sandboxes();
    assert!(!dir.exists(), "{} was not swept", dir.display());
}
