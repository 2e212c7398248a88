//! The `mariadb` command-line client through the proxy, compared with the same client talking to the server
//! directly: query output with full column metadata (`--column-type-info`), `LOAD DATA LOCAL INFILE` (a file
//! loaded, a missing file refused with the session still usable), a wrong password (`ERROR 1045`), a session with
//! `USE`, `\s` and a script that fails halfway, and an `ed25519` account's login.

mod support;

use std::net::SocketAddr;
use std::process::Stdio;

use mysql_async::prelude::Queryable;
use support::Account;
use support::clients::{self, ProxiedDatabase};
use tokio::io::AsyncWriteExt;

/// What a user sees of one `mariadb` run.
#[derive(Debug, PartialEq, Eq)]
struct Transcript {
    exit_code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// One `mariadb` run: who logs in, to which database, with which options (besides [`support::mariadb_cli`]'s
/// batch mode and utf8mb4), running which script from standard input.
struct Invocation<'a> {
    account: Account,
    database: Option<&'a str>,
    options: &'a [&'a str],
    script: &'a str,
}

impl<'a> Invocation<'a> {
    /// The app account in the test's database.
    fn app(database: &'a ProxiedDatabase, options: &'a [&'a str], script: &'a str) -> Invocation<'a> {
        Invocation { account: support::app(), database: Some(database.name()), options, script }
    }

    /// Runs the client against `addr`.
    async fn run(&self, addr: SocketAddr) -> Transcript {
        let mut command = support::mariadb_cli(addr, &self.account, self.database);
        command.arg("--default-character-set=utf8mb4").args(self.options);
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot run the mariadb client: {e}"));
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(self.script.as_bytes()).await.expect("write the script to mariadb");
        drop(stdin);
        let output = child.wait_with_output().await.expect("wait for mariadb");
        Transcript {
            exit_code: output.status.code(),
            stdout: clients::text(&output.stdout),
            stderr: clients::text(&output.stderr),
        }
    }

    /// Runs the client directly against the server, then through the proxy.
    async fn both_ways(&self, database: &ProxiedDatabase) -> [Transcript; 2] {
        [self.run(database.direct()).await, self.run(database.proxy()).await]
    }

    /// Runs the client both ways, asserts that the user sees the same, and returns what that is.
    async fn same_both_ways(&self, database: &ProxiedDatabase) -> Transcript {
        let [direct, proxied] = self.both_ways(database).await;
        assert_eq!(proxied, direct, "through the proxy (left) and directly (right) differ for:\n{}", self.script);
        proxied
    }
}

/// Creates a table with the column types edxapp uses, and a few rows of awkward values, directly on the server.
async fn create_sample_table(database: &ProxiedDatabase) {
    let mut conn = support::connect(database.direct(), &support::app(), Some(database.name())).await;
    conn.query_drop(
        "CREATE TABLE sample (
           id bigint unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY,
           name varchar(40) NOT NULL,
           state longtext NULL,
           grade double NULL,
           amount decimal(10, 3) NULL,
           created datetime(6) NOT NULL,
           data varbinary(8) NULL,
           KEY (name)
         ) DEFAULT CHARSET = utf8mb4",
    )
    .await
    .expect("CREATE TABLE sample");
    conn.query_drop(
        "INSERT INTO sample (name, state, grade, amount, created, data) VALUES
           ('alice', '{\"attempts\": 2}', 1.0, 12.5, '2024-03-04 10:01:07.123456', 0x00ff),
           ('bob 🎓', NULL, NULL, -0.001, '1970-01-01 00:00:01', NULL),
           ('tab\\there', 'line\\nbreak', 0.1, NULL, '2038-01-19 03:14:07.999999', '')",
    )
    .await
    .expect("INSERT INTO sample");
}

#[tokio::test]
async fn query_output_and_column_metadata_are_the_same_through_the_proxy() {
    let database = ProxiedDatabase::new().await;
    create_sample_table(&database).await;
    let query = "SELECT s.*, CAST(18446744073709551615 AS UNSIGNED) AS u, NULL AS nothing, COUNT(*) OVER () AS n \
                 FROM sample AS s ORDER BY id;\n\
                 SELECT name, LENGTH(state) FROM sample WHERE id > 100;\n";
    let seen = Invocation::app(&database, &["--table", "--column-type-info"], query).same_both_ways(&database).await;
    assert_eq!(seen.exit_code, Some(0), "{seen:?}");
    for expected in ["Field   1:  `id`", "Org_table:  `sample`", "Type:       NEWDECIMAL", "Decimals:   6", "bob 🎓"]
    {
        assert!(seen.stdout.contains(expected), "no {expected:?} in:\n{}", seen.stdout);
    }
}

#[tokio::test]
async fn load_data_local_infile_loads_a_file_and_a_missing_file_leaves_the_session_usable() {
    let database = ProxiedDatabase::new().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("learners.tsv");
    let rows: String = (1..=500).map(|id| format!("{id}\tlearner {id} é\n")).collect();
    std::fs::write(&file, rows).expect("write the data file");
    let missing = dir.path().join("missing.tsv");
    let script = format!(
        "CREATE TABLE IF NOT EXISTS learners (id int PRIMARY KEY, name varchar(40)) DEFAULT CHARSET = utf8mb4;\n\
         TRUNCATE learners;\n\
         SET @session = CONNECTION_ID();\n\
         LOAD DATA LOCAL INFILE '{}' INTO TABLE learners CHARACTER SET utf8mb4;\n\
         LOAD DATA LOCAL INFILE '{}' INTO TABLE learners;\n\
         SELECT COUNT(*), SUM(id), MAX(name), @session = CONNECTION_ID() AS same_session FROM learners;\n",
        file.display(),
        missing.display()
    );
    let seen = Invocation::app(&database, &["--local-infile=1", "--force"], &script).same_both_ways(&database).await;
    assert_eq!(seen.stdout, "COUNT(*)\tSUM(id)\tMAX(name)\tsame_session\n500\t125250\tlearner 99 é\t1\n", "{seen:?}");
    let refusal = format!("File '{}' not found", missing.display());
    assert!(seen.stderr.contains(&refusal), "{seen:?}");

    let mut conn = support::connect(database.direct(), &support::app(), Some(database.name())).await;
    let loaded: Option<u64> = conn.query_first("SELECT COUNT(*) FROM learners").await.expect("count the rows");
    assert_eq!(loaded, Some(500));
}

#[tokio::test]
async fn a_wrong_password_is_refused_with_error_1045() {
    let database = ProxiedDatabase::new().await;
    let wrong = Account::native(&support::app().user, "not-the-password");
    let login = Invocation { account: wrong, ..Invocation::app(&database, &[], "SELECT 1;\n") };
    let proxied = login.same_both_ways(&database).await;
    assert_ne!(proxied.exit_code, Some(0));
    assert!(proxied.stderr.starts_with("ERROR 1045 (28000): Access denied for user 'edxapp001'@"), "{proxied:?}");
}

/// `\s` lines that differ between any two connections: the connection's id, the port, and server counters.
fn without_volatile_status(text: &str) -> String {
    let volatile = ["Connection id:", "TCP port:", "Uptime:", "Threads:"];
    text.lines().filter(|line| !volatile.iter().any(|prefix| line.starts_with(prefix))).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn a_session_with_use_status_and_a_failing_script_looks_the_same_through_the_proxy() {
    let database = ProxiedDatabase::new().await;
    create_sample_table(&database).await;
    let script = format!(
        "USE {};\n\\s\nSELECT name FROM sample ORDER BY id;\nUPDATE sample SET grade = 0.5 WHERE id = 1;\n\
         SELECT COUNT(*) FROM no_such_table;\nSELECT 'not reached';\n",
        database.name()
    );
    let session = Invocation { database: None, ..Invocation::app(&database, &[], &script) };
    let [direct, proxied] = session
        .both_ways(&database)
        .await
        .map(|seen| Transcript { stdout: without_volatile_status(&seen.stdout), ..seen });
    assert_eq!(proxied, direct, "through the proxy (left) and directly (right)");
    assert_eq!(proxied.exit_code, Some(1));
    let current = format!("Current database:\t{}", database.name());
    for expected in
        [current.as_str(), "Current user:\t\tedxapp001@127.0.0.1", "Conn.  characterset:\tutf8mb4", "bob 🎓"]
    {
        assert!(proxied.stdout.contains(expected), "no {expected:?} in:\n{}", proxied.stdout);
    }
    assert!(!proxied.stdout.contains("not reached"), "{proxied:?}");
    let error = format!("ERROR 1146 (42S02) at line 5: Table '{}.no_such_table' doesn't exist", database.name());
    assert!(proxied.stderr.trim_end().ends_with(&error), "{proxied:?}");
}

#[tokio::test]
async fn an_ed25519_account_logs_in_through_the_proxy() {
    let database = ProxiedDatabase::new().await;
    let account = support::ed25519_app();
    let login = Invocation { account: account.clone(), ..Invocation::app(&database, &[], "SELECT CURRENT_USER();\n") };
    let seen = login.run(database.proxy()).await;
    assert_eq!((seen.exit_code, seen.stdout.as_str()), (Some(0), "CURRENT_USER()\nedxapp_ed25519@%\n"), "{seen:?}");
    let wrong = Account { password: "not-the-password".to_owned(), ..account };
    let proxied = Invocation { account: wrong, ..login }.same_both_ways(&database).await;
    assert!(proxied.stderr.starts_with("ERROR 1045 (28000)"), "{proxied:?}");
}
