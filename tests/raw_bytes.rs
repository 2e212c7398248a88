//! Byte-faithfulness: the same commands sent directly and through the proxy get the very same response bytes.
//!
//! A raw client records every byte the server sends back after login; for each command the direct bytes and the
//! proxied bytes must be equal. This covers column metadata (schema, table, charset, length, type, flags,
//! decimals) of every column type, warnings, status flags, session-state info, errors, multiple result sets,
//! prepared statements in the binary protocol, and statements longer than one frame, under both end-of-result
//! formats (classic EOF and CLIENT_DEPRECATE_EOF).

mod support;

use csmh_proxy::backend::LOGIN_CAPABILITIES;
use csmh_proxy::protocol::command::*;
use csmh_proxy::protocol::frame::MAX_PAYLOAD;
use csmh_proxy::protocol::response::Expect;
use mysql_common::constants::CapabilityFlags;
use support::raw::RawClient;
use support::twins::{Twins, capability_sets};

/// Session setup and statements whose responses do not depend on the connection (no ids, no clocks).
const SCRIPT: &[&str] = &[
    "SELECT 1, 'a', NULL, 2.5, -1, 18446744073709551615, X'00FF', _binary 'abc', 'héllo 😀'",
    "SELECT CAST('2024-01-02 03:04:05.123456' AS DATETIME(6)) AS dt, JSON_OBJECT('a', 1) AS j",
    "CREATE TABLE kinds (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, b BLOB, vb VARBINARY(16), \
     d DECIMAL(10,3), dt DATETIME(6), j JSON, u BIGINT UNSIGNED, s VARCHAR(20) CHARACTER SET utf8mb4, \
     t TINYINT, f DOUBLE, e ENUM('x','y'), dd DATE, tm TIME(3), ts TIMESTAMP(2) NULL, bit BIT(3))",
    "INSERT INTO kinds (b, vb, d, dt, j, u, s, t, f, e, dd, tm, ts, bit) VALUES \
     (X'00010203', X'FF00', 1234567.891, '2024-05-01 12:00:00.000001', '{\"k\": [1, 2]}', 18446744073709551615, \
      'ünïcødé 😀', -128, 1.5e300, 'y', '2024-02-29', '838:59:59.999', '2038-01-19 03:14:07.99', b'101'), \
     (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    "SELECT * FROM kinds ORDER BY id",
    "SELECT CAST('abc' AS UNSIGNED)",
    "SHOW WARNINGS",
    "SELEC 1",
    "SELECT * FROM no_such_table",
    "INSERT INTO kinds (id) VALUES (1)",
    "UPDATE kinds SET t = t WHERE id = 1",
    "UPDATE kinds SET t = 5 WHERE id = 1",
    "SET autocommit = 0",
    "SELECT COUNT(*) FROM kinds",
    "INSERT INTO kinds (t) VALUES (7)",
    "ROLLBACK",
    "SET autocommit = 1",
    "BEGIN",
    "SAVEPOINT s1",
    "INSERT INTO kinds (t) VALUES (8)",
    "ROLLBACK TO SAVEPOINT s1",
    "RELEASE SAVEPOINT s1",
    "COMMIT",
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    "SET SESSION sql_mode = 'TRADITIONAL'",
    // One variable at a time: the server lists several tracked variables in no fixed order.
    "SET character_set_results = utf8mb4",
    "CREATE PROCEDURE two_results() BEGIN SELECT 1 AS one; SELECT 'two' AS two, 2.0 AS n; END",
    "CALL two_results()",
    "SELECT 1 AS a; SELECT 2 AS b; INSERT INTO kinds (t) VALUES (9); SELECT * FROM kinds WHERE t = 9",
    "SELECT 1; SELEC 2; SELECT 3",
    "SELECT id, t FROM kinds WHERE 1 = 0",
    "DO 1",
];

async fn clients(capabilities: CapabilityFlags) -> (RawClient, RawClient, Twins) {
    let twins = Twins::new().await;
    let (direct, proxied) = twins.clients(capabilities).await;
    (direct, proxied, twins)
}

#[tokio::test]
async fn text_protocol_responses_are_identical() {
    for capabilities in capability_sets() {
        let (mut direct, mut proxied, _twins) = clients(capabilities).await;
        for sql in SCRIPT {
            let expected = direct.query(sql).await;
            let got = proxied.query(sql).await;
            assert_eq!(got, expected, "response to {sql:?} with {capabilities:?}");
        }
    }
}

#[tokio::test]
async fn utility_commands_are_identical() {
    let twins = Twins::new().await;
    twins.setup("CREATE TABLE fl (a INT COMMENT 'x', b VARCHAR(3))").await;
    let (mut direct, mut proxied) = twins.clients(LOGIN_CAPABILITIES).await;
    let mut init_db = vec![COM_INIT_DB];
    init_db.extend_from_slice(twins.database.as_bytes());
    let commands: Vec<(Vec<u8>, Expect)> = vec![
        (vec![COM_PING], Expect::OnePacket),
        (init_db, Expect::OnePacket),
        (b"\x02no_such_db".to_vec(), Expect::OnePacket),
        (b"\x04fl\0".to_vec(), Expect::FieldList),
        (b"\x04no_such_table\0".to_vec(), Expect::FieldList),
        (vec![COM_SET_OPTION, 0, 0], Expect::OnePacket),
        (vec![COM_RESET_CONNECTION], Expect::OnePacket),
    ];
    for (payload, expect) in commands {
        let expected = direct.command(&payload, expect).await;
        assert_eq!(proxied.command(&payload, expect).await, expected, "response to command {payload:?}");
    }
}

#[tokio::test]
async fn binary_protocol_responses_are_identical() {
    let (mut direct, mut proxied, _twins) = clients(LOGIN_CAPABILITIES).await;
    let setup = ["CREATE TABLE p (id INT PRIMARY KEY, b BLOB, d DECIMAL(6,2))", "INSERT INTO p VALUES (1, 'x', 1.5)"];
    for sql in setup {
        assert_eq!(proxied.query(sql).await, direct.query(sql).await);
    }
    let prepare = b"\x16SELECT id, b, d, ? AS p FROM p WHERE id >= ?".to_vec();
    // Statement 1, no cursor, one iteration, two parameters (no NULLs), new types: LONGLONG and LONGLONG.
    let mut execute = vec![COM_STMT_EXECUTE, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 8, 0, 8, 0];
    execute.extend_from_slice(&7i64.to_le_bytes());
    execute.extend_from_slice(&0i64.to_le_bytes());
    let long_data = [COM_STMT_SEND_LONG_DATA, 2, 0, 0, 0, 0, 0, b'l', b'o', b'n', b'g'];
    let commands: Vec<(Vec<u8>, Option<Expect>)> = vec![
        (prepare, Some(Expect::Prepare)),
        (execute.clone(), Some(Expect::ResultSets)),
        (b"\x16INSERT INTO p VALUES (?, ?, 2.25)".to_vec(), Some(Expect::Prepare)),
        (long_data.to_vec(), None),
        (vec![COM_STMT_EXECUTE, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 0, 0xfc, 0, 2, 0, 0, 0], Some(Expect::ResultSets)),
        (vec![COM_STMT_RESET, 2, 0, 0, 0], Some(Expect::OnePacket)),
        (vec![COM_STMT_CLOSE, 2, 0, 0, 0], None),
        (vec![COM_STMT_EXECUTE, 2, 0, 0, 0, 0, 1, 0, 0, 0], Some(Expect::ResultSets)),
        (b"\x16SELEC ?".to_vec(), Some(Expect::Prepare)),
        (execute, Some(Expect::ResultSets)),
        // A read-only cursor (statement 3): metadata now, rows fetched in batches with COM_STMT_FETCH.
        (b"\x16SELECT id, d FROM p ORDER BY id".to_vec(), Some(Expect::Prepare)),
        (vec![COM_STMT_EXECUTE, 3, 0, 0, 0, 1, 1, 0, 0, 0], Some(Expect::Cursor)),
        (vec![COM_STMT_FETCH, 3, 0, 0, 0, 1, 0, 0, 0], Some(Expect::Rows)),
        (vec![COM_STMT_FETCH, 3, 0, 0, 0, 10, 0, 0, 0], Some(Expect::Rows)),
    ];
    for (payload, expect) in commands {
        match expect {
            Some(expect) => {
                let expected = direct.command(&payload, expect).await;
                assert_eq!(proxied.command(&payload, expect).await, expected, "response to command {payload:?}");
            }
            None => {
                direct.send(&payload).await;
                proxied.send(&payload).await;
            }
        }
    }
    assert_eq!(proxied.query("SELECT * FROM p ORDER BY id").await, direct.query("SELECT * FROM p ORDER BY id").await);
}

#[tokio::test]
async fn a_statement_of_exactly_one_full_frame_is_relayed() {
    let (mut direct, mut proxied, _twins) = clients(LOGIN_CAPABILITIES).await;
    for payload_len in [MAX_PAYLOAD, MAX_PAYLOAD + 1, MAX_PAYLOAD - 1] {
        let prefix = "SELECT LENGTH('";
        let suffix = "') AS n";
        let filler = payload_len - 1 - prefix.len() - suffix.len();
        let sql = format!("{prefix}{}{suffix}", "x".repeat(filler));
        assert_eq!(sql.len() + 1, payload_len);
        let expected = direct.query(&sql).await;
        let got = proxied.query(&sql).await;
        assert!(got == expected, "response to a statement of {payload_len} bytes differs");
        assert!(String::from_utf8_lossy(&got).contains(&filler.to_string()), "the server saw the whole statement");
    }
}

#[tokio::test]
async fn large_result_rows_stream_through() {
    let (mut direct, mut proxied, _twins) = clients(LOGIN_CAPABILITIES).await;
    let sql = "SELECT REPEAT('y', 20 * 1024 * 1024) AS big, 1 AS after_big UNION ALL SELECT 'small', 2";
    let expected = direct.query(sql).await;
    assert!(expected.len() > 20 * 1024 * 1024);
    assert!(proxied.query(sql).await == expected, "a 20 MiB row differs through the proxy");
}
