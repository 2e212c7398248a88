//! Passthrough with a real driver (mysql_async): what a client observes directly and through the proxy is the
//! same — rows, column metadata, affected rows, insert ids, warnings, status flags — and authentication,
//! prepared statements, COM_CHANGE_USER, COM_RESET_CONNECTION, LOAD DATA LOCAL, large values and many
//! concurrent connections all work through it.

mod support;

use csmh_proxy::history::Flags;
use csmh_proxy::server::ProxyHandle;
use mysql_async::prelude::*;
use mysql_async::{ChangeUserOpts, Conn, Opts, OptsBuilder, Row, Value};
use support::EdxDatabases;

async fn proxied() -> (EdxDatabases, ProxyHandle) {
    let dbs = EdxDatabases::fresh().await;
    let proxy = dbs.start_proxy(Flags::default()).await;
    (dbs, proxy)
}

async fn conn(opts: Opts) -> Conn {
    Conn::new(opts).await.expect("log in")
}

/// What a driver lets an application observe about one statement.
/// Compared through its `Debug` text, with the database name normalised.
#[derive(Debug)]
#[allow(dead_code)]
struct Observed {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
    affected_rows: u64,
    last_insert_id: Option<u64>,
    warnings: u16,
    info: String,
    status: Option<u16>,
}

async fn observe(conn: &mut Conn, sql: &str) -> Result<Observed, (u16, String)> {
    let mut result = conn.query_iter(sql).await.map_err(server_error)?;
    let columns = result
        .columns()
        .map(|cols| {
            cols.iter()
                .map(|c| {
                    format!(
                        "{}.{}.{} as {}.{}: {:?} len {} charset {} flags {:?} decimals {}",
                        c.schema_str(),
                        c.org_table_str(),
                        c.org_name_str(),
                        c.table_str(),
                        c.name_str(),
                        c.column_type(),
                        c.column_length(),
                        c.character_set(),
                        c.flags(),
                        c.decimals()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let rows: Vec<Row> = result.collect().await.map_err(server_error)?;
    drop(result);
    Ok(Observed {
        columns,
        rows: rows.into_iter().map(Row::unwrap).collect(),
        affected_rows: conn.affected_rows(),
        last_insert_id: conn.last_insert_id(),
        warnings: conn.get_warnings(),
        info: conn.info().into_owned(),
        status: conn.last_ok_packet().map(|ok| ok.status_flags().bits()),
    })
}

fn server_error(e: mysql_async::Error) -> (u16, String) {
    match e {
        mysql_async::Error::Server(e) => (e.code, format!("{} {}", e.state, e.message)),
        other => panic!("not a server error: {other}"),
    }
}

/// Runs `script` on a direct connection to one database and a proxied connection to a twin database with the
/// same tables, and asserts that every statement is observed the same way.
async fn assert_same_observations(found_rows: bool, script: &[&str]) {
    let (direct_dbs, proxied_dbs) = (EdxDatabases::fresh().await, EdxDatabases::fresh().await);
    let proxy = proxied_dbs.start_proxy(Flags::default()).await;
    let opts = |o: Opts| Opts::from(OptsBuilder::from_opts(o).client_found_rows(found_rows));
    let mut direct = conn(opts(direct_dbs.direct_opts(&support::app()))).await;
    let mut through = conn(opts(proxied_dbs.proxy_opts(&proxy, &support::app()))).await;
    for sql in script {
        // The two databases' names differ; everything else must not.
        let expected = format!("{:?}", observe(&mut direct, sql).await).replace(&direct_dbs.edxapp_db, "<db>");
        let got = format!("{:?}", observe(&mut through, sql).await).replace(&proxied_dbs.edxapp_db, "<db>");
        assert_eq!(got, expected, "{sql}");
    }
}

#[tokio::test]
async fn a_driver_observes_the_same_through_the_proxy() {
    let script = [
        "CREATE TABLE v (id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, b BLOB, vb VARBINARY(8), d DECIMAL(12,4), \
         dt DATETIME(6), j JSON, u BIGINT UNSIGNED, n INT NULL, s VARCHAR(10))",
        "INSERT INTO v (b, vb, d, dt, j, u, s) VALUES (X'00FF10', X'0102', 12345678.1234, \
         '2024-05-01 12:00:00.123456', '[1, {\"a\": null}]', 18446744073709551615, 'ok'), \
         (NULL, NULL, -0.0001, NULL, NULL, 0, NULL)",
        "SELECT * FROM v ORDER BY id",
        "UPDATE v SET s = s WHERE id = 1",
        "UPDATE v SET s = 'new' WHERE id >= 1",
        "SET SESSION sql_mode = ''",
        "INSERT INTO v (n) VALUES ('not a number')",
        "SHOW WARNINGS",
        "SET autocommit = 0",
        "SELECT COUNT(*) FROM v",
        "ROLLBACK",
        "SET autocommit = 1",
        "SELECT * FROM v WHERE id = 999",
        "SELECT nonsense FROM v",
    ];
    assert_same_observations(false, &script).await;
    assert_same_observations(true, &script).await;
}

#[tokio::test]
async fn wrong_password_is_refused_by_the_backend() {
    let (dbs, proxy) = proxied().await;
    let mut wrong = support::app();
    wrong.password = "not-the-password".into();
    let direct = Conn::new(dbs.direct_opts(&wrong)).await.map(drop).map_err(server_error).unwrap_err();
    let through = Conn::new(dbs.proxy_opts(&proxy, &wrong)).await.map(drop).map_err(server_error).unwrap_err();
    assert_eq!(through.0, 1045);
    assert_eq!(through.0, direct.0);
}

#[tokio::test]
async fn prepared_statements_run_through_the_proxy() {
    let (dbs, proxy) = proxied().await;
    let mut c = conn(dbs.proxy_opts(&proxy, &support::app())).await;
    c.query_drop("CREATE TABLE ps (id INT PRIMARY KEY, name VARCHAR(20), score DOUBLE)").await.unwrap();
    let insert = c.prep("INSERT INTO ps VALUES (?, ?, ?)").await.unwrap();
    c.exec_batch(&insert, (1..=50).map(|i| (i, format!("n{i}"), f64::from(i) / 2.0))).await.unwrap();
    let rows: Vec<(i32, String, f64)> =
        c.exec("SELECT id, name, score FROM ps WHERE id > ? ORDER BY id DESC LIMIT ?", (45, 3)).await.unwrap();
    assert_eq!(rows, vec![(50, "n50".into(), 25.0), (49, "n49".into(), 24.5), (48, "n48".into(), 24.0)]);
    let missing: Result<Vec<Row>, _> = c.exec("SELECT nope FROM ps WHERE id = ?", (1,)).await;
    assert_eq!(missing.map_err(server_error).unwrap_err().0, 1054);
    c.close(insert).await.unwrap();
    let count: Option<i64> = c.exec_first("SELECT COUNT(*) FROM ps WHERE id <= ?", (10,)).await.unwrap();
    assert_eq!(count, Some(10));
}

#[tokio::test]
async fn a_20_mib_blob_round_trips() {
    let (dbs, proxy) = proxied().await;
    let mut c = conn(dbs.proxy_opts(&proxy, &support::app())).await;
    c.query_drop("CREATE TABLE big (id INT PRIMARY KEY, b LONGBLOB)").await.unwrap();
    let blob: Vec<u8> = (0..20 * 1024 * 1024).map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    c.exec_drop("INSERT INTO big VALUES (1, ?)", (blob.clone(),)).await.unwrap();
    let text: Option<Vec<u8>> = c.query_first("SELECT b FROM big WHERE id = 1").await.unwrap();
    assert!(text.as_deref() == Some(&blob[..]), "text protocol returned a different blob");
    let binary: Option<Vec<u8>> = c.exec_first("SELECT b FROM big WHERE id = ?", (1,)).await.unwrap();
    assert!(binary.as_deref() == Some(&blob[..]), "binary protocol returned a different blob");
}

#[tokio::test]
async fn change_user_and_reset_connection_are_relayed() {
    let (dbs, proxy) = proxied().await;
    let mut c = conn(dbs.proxy_opts(&proxy, &support::app())).await;
    c.query_drop("SET @marker = 'kept until reset'").await.unwrap();
    assert!(c.reset().await.unwrap(), "COM_RESET_CONNECTION is supported");
    let marker: Option<Option<String>> = c.query_first("SELECT @marker").await.unwrap();
    assert_eq!(marker, Some(None), "a reset clears user variables");

    let other = support::other_app();
    let change = ChangeUserOpts::default().with_user(Some(other.user.clone())).with_pass(Some(other.password.clone()));
    c.change_user(change).await.unwrap();
    let user: Option<String> = c.query_first("SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1)").await.unwrap();
    assert_eq!(user.as_deref(), Some(other.user.as_str()));

    let wrong = ChangeUserOpts::default().with_user(Some(other.user)).with_pass(Some("wrong".into()));
    let refused = c.change_user(wrong).await.map_err(server_error).unwrap_err();
    assert_eq!(refused.0, 1045, "a wrong password in COM_CHANGE_USER is refused by the backend");
}

#[tokio::test]
async fn load_data_local_infile_is_relayed() {
    let (dbs, proxy) = proxied().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rows.csv");
    let contents: String = (1..=1000).map(|i| format!("{i},row {i}\n")).collect();
    std::fs::write(&file, contents).unwrap();
    let handler = mysql_async::WhiteListFsHandler::new(std::slice::from_ref(&file));
    let opts = OptsBuilder::from_opts(dbs.proxy_opts(&proxy, &support::app())).local_infile_handler(Some(handler));
    let mut c = conn(opts.into()).await;
    c.query_drop("CREATE TABLE li (id INT PRIMARY KEY, s VARCHAR(20))").await.unwrap();
    let sql = format!("LOAD DATA LOCAL INFILE '{}' INTO TABLE li FIELDS TERMINATED BY ','", file.display());
    c.query_drop(&sql).await.unwrap();
    assert_eq!(c.affected_rows(), 1000);
    let last: Option<String> = c.query_first("SELECT s FROM li ORDER BY id DESC LIMIT 1").await.unwrap();
    assert_eq!(last.as_deref(), Some("row 1000"));
    let duplicate = c.query_drop(&sql).await;
    assert!(duplicate.is_ok(), "duplicates are warnings with LOCAL: {duplicate:?}");
    assert_eq!(c.get_warnings(), 1000);
}

#[tokio::test]
async fn sixty_four_connections_at_once() {
    let (dbs, proxy) = proxied().await;
    let opts = dbs.proxy_opts(&proxy, &support::app());
    let clients = (0..64u32).map(|i| {
        let opts = opts.clone();
        tokio::spawn(async move {
            let mut c = conn(opts).await;
            let mut seen = Vec::new();
            for j in 0..20u32 {
                let v: Option<u32> = c.query_first(format!("SELECT {i} * 1000 + {j}")).await.unwrap();
                seen.push(v.unwrap());
            }
            c.disconnect().await.unwrap();
            seen
        })
    });
    for (i, client) in futures_util::future::join_all(clients).await.into_iter().enumerate() {
        let expected: Vec<u32> = (0..20).map(|j| i as u32 * 1000 + j).collect();
        assert_eq!(client.unwrap(), expected, "connection {i} saw another connection's answers");
    }
}
