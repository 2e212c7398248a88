//! Conformance: what a real MariaDB server sends back is what a client gets through the proxy, packet for packet.
//!
//! Every case runs twice, on the same database on two MariaDB servers: once on a connection straight to the
//! first server, once on a connection through the proxy (every routing flag off) to the second. The raw
//! response bytes, frame headers included, must be equal, under the capability sets of
//! [`support::twins::capability_sets`] (with CLIENT_DEPRECATE_EOF, with classic EOF packets, without session
//! tracking) wherever the format depends on them. After every case a follow-up statement runs on both connections
//! and must get the same answer as on a fresh connection, which shows that both sessions are still in step: a
//! relay that stopped early or late would leave bytes that the follow-up would read as its own answer.
//!
//! The cases:
//!
//! - **Stored programs with cursors** (text protocol): a procedure that opens a cursor, fetches one row and
//!   selects it; cursor loops that select every row (a result set per row); a nested CALL; an anonymous
//!   `BEGIN NOT ATOMIC` block; CONTINUE and EXIT handlers with GET DIAGNOSTICS inside a cursor loop; SIGNAL and
//!   RESIGNAL (the errors must be identical too); stored functions with cursors called from SELECTs, one of them
//!   failing in the middle of a result set; several CALLs in one multi-statement query.
//! - **The binary protocol**: a prepared `CALL q(?, ?)` with an IN and an OUT parameter and a cursor inside
//!   (its response ends with the OUT parameters' result set, SERVER_PS_OUT_PARAMS), executed without and with a
//!   cursor requested in the flags byte; a prepared `CALL p()`; read-only cursors over a SELECT of ten rows fetched
//!   in pieces with COM_STMT_FETCH, past their end, reset, re-executed and closed.
//! - **The `mariadb` command-line client**: `CALL p()` prints the same through the proxy as directly, and
//!   `--column-type-info` describes a JSON column the same way (MariaDB's extended metadata, which says
//!   `format=json`, is only sent to clients that negotiated MARIADB_CLIENT_EXTENDED_METADATA).
//! - **Every command byte** 0x00..=0x1f and 0xfa, sent by the application account (no global privileges: SHUTDOWN,
//!   RELOAD, SUPER and PROCESS commands get errors) on fresh connections with a plausible body: the server's
//!   answers are identical (COM_STATISTICS and COM_PROCESS_INFO, whose contents vary per connection, by shape);
//!   COM_QUIT closes both connections; the replication commands the proxy refuses get its ERR 1047 and leave the
//!   connection usable (they are never sent to a server directly). COM_CHANGE_USER is covered by other tests.
//!
//! Failures are collected per test, so a failing test lists every case that differs, each with the first packet
//! that differs on each side. The raw client finds the end of a response with the proxy's own
//! `ResponseScanner`, so a scanner that ends a response too early or too late would read both sides alike; the
//! follow-up statement is what catches it, and it then shows as "direct session out of step" as well.
//! Statement ids differ between connections, so prepare responses and errors that name a statement are compared
//! with the id left out.

mod support;

use std::fmt::Write as _;
use std::time::Duration;

use csmh_proxy::protocol::command::*;
use csmh_proxy::protocol::errors::code;
use csmh_proxy::protocol::response::Expect;
use mysql_async::prelude::Queryable;
use mysql_common::constants::CapabilityFlags;
use support::raw::{RawClient, Reply};
use support::twins::{Twins, capability_sets};

/// A name for a capability set of [`capability_sets`], for failure messages.
fn caps_name(caps: CapabilityFlags) -> &'static str {
    if !caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF) {
        "classic EOF"
    } else if !caps.contains(CapabilityFlags::CLIENT_SESSION_TRACK) {
        "DEPRECATE_EOF, no session tracking"
    } else {
        "DEPRECATE_EOF"
    }
}

/// The capability sets with and without CLIENT_DEPRECATE_EOF, for cases where session tracking changes nothing.
fn eof_capability_sets() -> [CapabilityFlags; 2] {
    let [with_deprecate_eof, classic_eof, _] = capability_sets();
    [with_deprecate_eof, classic_eof]
}

// ---------------------------------------------------------------------------------------------------------------
// Comparing two connections

/// A direct connection and a proxied one, driven in step; differences are collected, not panicked on.
struct Pair<'t> {
    twins: &'t Twins,
    caps: CapabilityFlags,
    direct: RawClient,
    proxied: RawClient,
    /// The statement run after every case to show that both sessions are still in step.
    follow_up: &'static str,
    /// Its response on a fresh connection.
    follow_up_reply: Vec<u8>,
    failures: Vec<String>,
}

impl<'t> Pair<'t> {
    /// Logs in directly and through the proxy with `caps`.
    async fn new(twins: &'t Twins, caps: CapabilityFlags, follow_up: &'static str) -> Pair<'t> {
        let (mut direct, mut proxied) = twins.clients(caps).await;
        let follow_up_reply = direct.query(follow_up).await;
        assert_eq!(proxied.query(follow_up).await, follow_up_reply, "{follow_up} on fresh connections");
        Pair { twins, caps, direct, proxied, follow_up, follow_up_reply, failures: Vec::new() }
    }

    /// Starts both sessions afresh after they fell out of step.
    async fn reconnect(&mut self) {
        (self.direct, self.proxied) = self.twins.clients(self.caps).await;
    }

    fn fail(&mut self, case: &str, what: String) {
        self.failures.push(format!("[{}] {case}: {what}", caps_name(self.caps)));
    }

    /// Runs `sql` on both connections and compares the responses; see [`Pair::command`].
    async fn query(&mut self, sql: &str) -> Reply {
        let mut payload = vec![COM_QUERY];
        payload.extend_from_slice(sql.as_bytes());
        self.command(sql, &payload).await
    }

    /// Sends `payload` on both connections, compares the responses (for a command that gets one, by the shape
    /// `Command::of(payload).response()` gives), then runs the follow-up on both. Returns the direct reply.
    async fn command(&mut self, case: &str, payload: &[u8]) -> Reply {
        self.command_each(case, payload, payload, None).await.0
    }

    /// Records a failure unless `holds`: the server's own answer to a case must be what the case is about (a
    /// comparison of two errors would prove little).
    fn expect(&mut self, case: &str, holds: bool, what: &str) {
        if !holds {
            self.fail(case, format!("the server's answer is not what the case needs: {what}"));
        }
    }

    /// Runs a statement that sets up later cases on both connections, comparing the responses: it must succeed.
    async fn setup(&mut self, sql: &str) {
        let reply = self.query(sql).await;
        if !matches!(&reply, Reply::Complete(bytes) if bytes.get(4) == Some(&0)) {
            self.fail(sql, format!("the setup statement did not succeed on the server: {}", outline(&reply)));
        }
    }

    /// Like [`Pair::command`], for a command on the prepared statement `statement`, whose payload `build` makes
    /// from the statement's id on each side.
    async fn on(&mut self, case: &str, statement: Statement, build: impl Fn(u32) -> Vec<u8>) -> Reply {
        let (direct, proxied) = (build(statement.direct), build(statement.proxied));
        self.command_each(case, &direct, &proxied, Some(statement)).await.0
    }

    /// Prepares `sql` on both connections (comparing the responses, the statement ids left out) and returns the
    /// statement's id on each side.
    async fn prepare(&mut self, sql: &str) -> Statement {
        let payload = prepare(sql);
        let (direct, proxied) = self.command_each(&format!("prepare {sql:?}"), &payload, &payload, None).await;
        match (prepared_id(&direct), prepared_id(&proxied)) {
            (Some(direct), Some(proxied)) => Statement { direct, proxied },
            _ => panic!(
                "[{}] prepare {sql:?}: direct {}; proxy {}; earlier failures: {:#?}",
                caps_name(self.caps),
                outline(&direct),
                outline(&proxied),
                self.failures
            ),
        }
    }

    /// Sends a command to each connection, compares the responses (statement ids normalised), then runs the
    /// follow-up on both. Returns both replies as they came.
    async fn command_each(
        &mut self,
        case: &str,
        direct_payload: &[u8],
        proxied_payload: &[u8],
        statement: Option<Statement>,
    ) -> (Reply, Reply) {
        let expect = Command::of(direct_payload).and_then(|command| command.response());
        let (direct, proxied) = self.exchange(case, direct_payload, proxied_payload, expect, statement).await;
        if let Reply::Complete(_) = direct {
            self.check_follow_up(case).await;
        }
        (direct, proxied)
    }

    /// Sends a command to each connection and compares the responses, without a follow-up.
    async fn exchange(
        &mut self,
        case: &str,
        direct_payload: &[u8],
        proxied_payload: &[u8],
        expect: Option<Expect>,
        statement: Option<Statement>,
    ) -> (Reply, Reply) {
        let Some(expect) = expect else {
            let direct = self.direct.try_send(direct_payload).await;
            let proxied = self.proxied.try_send(proxied_payload).await;
            if !(direct && proxied) {
                self.fail(case, format!("could not send the command (direct: {direct}, proxy: {proxied})"));
            }
            return (Reply::Complete(Vec::new()), Reply::Complete(Vec::new()));
        };
        let direct = self.direct.try_command(direct_payload, expect).await;
        let proxied = self.proxied.try_command(proxied_payload, expect).await;
        let command = direct_payload.first().copied();
        let normal_direct = normalise(&direct, command, statement.map(|s| s.direct));
        let normal_proxied = normalise(&proxied, command, statement.map(|s| s.proxied));
        if normal_proxied != normal_direct {
            self.fail(case, describe(&normal_direct, &normal_proxied));
        }
        if !matches!((&direct, &proxied), (Reply::Complete(_), Reply::Complete(_))) {
            if !matches!(direct, Reply::Complete(_) | Reply::Closed(_)) {
                self.fail(case, format!("the direct connection's reply is not a whole response: {}", outline(&direct)));
            }
            self.reconnect().await;
        }
        (direct, proxied)
    }

    /// Runs the follow-up statement on both connections: both must get what a fresh connection gets.
    async fn check_follow_up(&mut self, case: &str) {
        let direct = self.direct.try_query(self.follow_up).await;
        let proxied = self.proxied.try_query(self.follow_up).await;
        let expected = Reply::Complete(self.follow_up_reply.clone());
        let in_step = direct == expected && proxied == expected;
        if direct != expected {
            self.fail(case, format!("direct session out of step afterwards: {}", describe(&expected, &direct)));
        }
        if proxied != expected {
            let what = format!(
                "proxied session out of step afterwards ({}): {}",
                self.follow_up,
                describe(&expected, &proxied)
            );
            self.fail(case, what);
        }
        if !in_step {
            self.reconnect().await;
        }
    }
}

/// Asserts that no case of a test failed, listing every failure.
fn assert_no_failures(test: &str, failures: &[String]) {
    assert!(failures.is_empty(), "{test}: {} case(s) differ:\n{}", failures.len(), failures.join("\n"));
}

/// A prepared statement's id on each side: two connections do not get the same ids from their servers.
#[derive(Debug, Clone, Copy)]
struct Statement {
    direct: u32,
    proxied: u32,
}

/// The statement id of a COM_STMT_PREPARE's OK.
fn prepared_id(reply: &Reply) -> Option<u32> {
    match reply {
        Reply::Complete(bytes) if bytes.len() >= 9 && bytes[4] == 0 => {
            Some(u32::from_le_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]))
        }
        _ => None,
    }
}

/// SERVER_STATUS_CURSOR_EXISTS.
const CURSOR_EXISTS: u16 = 0x0040;
/// SERVER_PS_OUT_PARAMS.
const PS_OUT_PARAMS: u16 = 0x1000;

/// Whether an EOF packet of `reply` (or an OK packet with the EOF header, under CLIENT_DEPRECATE_EOF) carries the
/// status flag `flag`. Both have the status word at bytes 3..5 when their counts are small.
fn has_status(reply: &Reply, flag: u16) -> bool {
    let Reply::Complete(bytes) = reply else { return false };
    packets(bytes)
        .iter()
        .any(|&(_, p)| p.len() >= 5 && p.len() < 9 && p[0] == 0xfe && { u16::from_le_bytes([p[3], p[4]]) & flag != 0 })
}

/// Whether `reply` has a packet whose payload is `payload`.
fn has_packet(reply: &Reply, payload: &[u8]) -> bool {
    matches!(reply, Reply::Complete(bytes) if packets(bytes).iter().any(|&(_, p)| p == payload))
}

/// `reply` without what names its connection's statement: the id in a prepare's OK (zeroed), and `(<id>)` in
/// error messages about statement `id` (made `(?)`); frame lengths follow the new payloads.
fn normalise(reply: &Reply, command: Option<u8>, id: Option<u32>) -> Reply {
    let rebuild = |bytes: &[u8]| {
        let parsed = packets(bytes);
        let mut out = Vec::new();
        let mut used = 0;
        for (i, &(seq, payload)) in parsed.iter().enumerate() {
            used += 4 + payload.len();
            let mut payload = payload.to_vec();
            if i == 0 && command == Some(COM_STMT_PREPARE) && payload.len() >= 5 && payload[0] == 0 {
                payload[1..5].fill(0);
            }
            if let (Some(id), Some(_)) = (id, error_of(&payload)) {
                let (needle, replacement) = (format!("({id})"), b"(?)");
                if let Some(at) = payload.windows(needle.len()).position(|w| w == needle.as_bytes()) {
                    payload.splice(at..at + needle.len(), replacement.iter().copied());
                }
            }
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes()[..3]);
            out.push(seq);
            out.extend_from_slice(&payload);
        }
        out.extend_from_slice(&bytes[used..]);
        out
    };
    match reply {
        Reply::Complete(b) => Reply::Complete(rebuild(b)),
        Reply::Closed(b) => Reply::Closed(rebuild(b)),
        Reply::Malformed(b) => Reply::Malformed(rebuild(b)),
        Reply::Stalled(b) => Reply::Stalled(rebuild(b)),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Reading responses, for comparisons by shape and for failure messages

/// The packets of a response (one per frame), as sequence id and payload; a truncated tail is left out.
fn packets(bytes: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let [a, b, c, seq, tail @ ..] = rest {
        let len = u32::from_le_bytes([*a, *b, *c, 0]) as usize;
        if tail.len() < len {
            break;
        }
        out.push((*seq, &tail[..len]));
        rest = &tail[len..];
    }
    out
}

/// An ERR packet's code, SQL state and message.
fn error_of(payload: &[u8]) -> Option<(u16, String, String)> {
    match payload {
        [0xff, lo, hi, b'#', rest @ ..] if rest.len() >= 5 => Some((
            u16::from_le_bytes([*lo, *hi]),
            String::from_utf8_lossy(&rest[..5]).into_owned(),
            String::from_utf8_lossy(&rest[5..]).into_owned(),
        )),
        [0xff, lo, hi, rest @ ..] => {
            Some((u16::from_le_bytes([*lo, *hi]), String::new(), String::from_utf8_lossy(rest).into_owned()))
        }
        _ => None,
    }
}

/// One packet, briefly: ERR packets decoded, others as escaped bytes.
fn packet_summary((seq, payload): (u8, &[u8])) -> String {
    if let Some((code, state, message)) = error_of(payload) {
        return format!("#{seq} ERR {code} ({state}) {message:?}");
    }
    let shown: String = payload.escape_ascii().to_string().chars().take(160).collect();
    format!("#{seq} [{} bytes] b\"{shown}\"", payload.len())
}

/// A reply, briefly: how it ended, its packet count and its last packet.
fn outline(reply: &Reply) -> String {
    let (how, bytes) = match reply {
        Reply::Complete(bytes) => ("complete", bytes),
        Reply::Closed(bytes) => ("connection closed", bytes),
        Reply::Malformed(bytes) => ("malformed", bytes),
        Reply::Stalled(bytes) => ("stalled (no more bytes for 5 s)", bytes),
    };
    let packets = packets(bytes);
    match packets.last() {
        Some(&last) => {
            format!("{how}, {} bytes in {} packet(s), last {}", bytes.len(), packets.len(), packet_summary(last))
        }
        None => format!("{how}, {} bytes", bytes.len()),
    }
}

/// How two replies differ: how each ended, and the first packet where they part.
fn describe(direct: &Reply, proxied: &Reply) -> String {
    let bytes = |reply: &Reply| match reply {
        Reply::Complete(b) | Reply::Closed(b) | Reply::Malformed(b) | Reply::Stalled(b) => b.clone(),
    };
    let (d, p) = (bytes(direct), bytes(proxied));
    let mut out = format!("direct: {}; proxy: {}", outline(direct), outline(proxied));
    let (dp, pp) = (packets(&d), packets(&p));
    if let Some(i) = (0..dp.len().max(pp.len())).find(|&i| dp.get(i) != pp.get(i)) {
        let show = |packet: Option<&(u8, &[u8])>| packet.map_or("none".to_owned(), |&p| packet_summary(p));
        let _ = write!(out, "; first difference at packet {i}: direct {} / proxy {}", show(dp.get(i)), show(pp.get(i)));
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Stored programs with cursors

/// Tables, procedures and functions of the stored-program cases, created by the application account.
const STORED_PROGRAMS: &[&str] = &[
    // The exact case: a cursor opened, one row fetched into a variable, a SELECT while the cursor is open.
    "CREATE TABLE t1 (a INT)",
    "INSERT INTO t1 VALUES (1),(2)",
    "CREATE PROCEDURE p() BEGIN DECLARE x INT; DECLARE c CURSOR FOR SELECT a FROM t1; OPEN c; FETCH c INTO x; \
     SELECT 1, x; CLOSE c; END",
    "CREATE TABLE t5 (a INT PRIMARY KEY, s VARCHAR(10))",
    "INSERT INTO t5 VALUES (1, 'one'), (2, 'two'), (3, 'three'), (4, 'four'), (5, 'five')",
    // A cursor loop selecting every row: one result set per row, each while the cursor is open.
    "CREATE PROCEDURE p_loop() BEGIN \
       DECLARE done INT DEFAULT 0; DECLARE x INT; DECLARE y VARCHAR(10); \
       DECLARE c CURSOR FOR SELECT a, s FROM t5 ORDER BY a; \
       DECLARE CONTINUE HANDLER FOR NOT FOUND SET done = 1; \
       OPEN c; \
       l: LOOP FETCH c INTO x, y; IF done THEN LEAVE l; END IF; SELECT x AS a, y AS s, x * 10 AS tenfold; END LOOP; \
       CLOSE c; \
       SELECT 'done' AS status, done; \
     END",
    "CREATE PROCEDURE p_outer() BEGIN CALL p(); CALL p_loop(); SELECT 'outer' AS o; END",
    // An EXIT handler that reads the diagnostics area, inside a cursor loop that fails at its third row.
    "CREATE PROCEDURE p_handlers() BEGIN \
       DECLARE done INT DEFAULT 0; DECLARE x INT; \
       DECLARE c CURSOR FOR SELECT a FROM t5 ORDER BY a; \
       DECLARE CONTINUE HANDLER FOR NOT FOUND SET done = 1; \
       DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN \
         GET DIAGNOSTICS CONDITION 1 @p_sqlstate = RETURNED_SQLSTATE, @p_errno = MYSQL_ERRNO, @p_text = MESSAGE_TEXT; \
         SELECT 'caught' AS what, @p_sqlstate AS state, @p_errno AS errno, @p_text AS message, x AS at_row; \
       END; \
       OPEN c; \
       l: LOOP FETCH c INTO x; IF done THEN LEAVE l; END IF; \
         SELECT x AS row_value; \
         IF x = 3 THEN INSERT INTO no_such_table VALUES (x); END IF; \
       END LOOP; \
       CLOSE c; \
     END",
    // A CONTINUE handler for errors: the loop goes on after each, with warnings on the way.
    "CREATE PROCEDURE p_continue() BEGIN \
       DECLARE done INT DEFAULT 0; DECLARE x INT; DECLARE errors INT DEFAULT 0; \
       DECLARE c CURSOR FOR SELECT a FROM t5 ORDER BY a; \
       DECLARE CONTINUE HANDLER FOR NOT FOUND SET done = 1; \
       DECLARE CONTINUE HANDLER FOR SQLEXCEPTION SET errors = errors + 1; \
       OPEN c; \
       l: LOOP FETCH c INTO x; IF done THEN LEAVE l; END IF; \
         IF x MOD 2 = 0 THEN INSERT INTO no_such_table VALUES (x); END IF; \
         SELECT x AS row_value, errors, CAST(CONCAT(x, 'abc') AS UNSIGNED) AS with_warning; \
       END LOOP; \
       CLOSE c; \
       SELECT errors AS total_errors; \
     END",
    // SIGNAL after a result set, with the cursor still open.
    "CREATE PROCEDURE p_signal() BEGIN \
       DECLARE x INT; DECLARE c CURSOR FOR SELECT a FROM t5 ORDER BY a; \
       OPEN c; FETCH c INTO x; SELECT x AS fetched; \
       SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'custom failure from p_signal', MYSQL_ERRNO = 30001; \
     END",
    // A handler that selects, then RESIGNALs the SIGNALled condition with a new message.
    "CREATE PROCEDURE p_resignal() BEGIN \
       DECLARE x INT; DECLARE c CURSOR FOR SELECT a FROM t5 ORDER BY a; \
       DECLARE EXIT HANDLER FOR SQLSTATE '45000' BEGIN \
         SELECT 'handler' AS h, x; \
         RESIGNAL SET MESSAGE_TEXT = 'resignalled from the handler'; \
       END; \
       OPEN c; FETCH c INTO x; SELECT x AS fetched; \
       SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'original failure'; \
     END",
    // A plain RESIGNAL of a server error caught in a cursor loop.
    "CREATE PROCEDURE p_resignal_plain() BEGIN \
       DECLARE done INT DEFAULT 0; DECLARE x INT; \
       DECLARE c CURSOR FOR SELECT a FROM t5 ORDER BY a; \
       DECLARE CONTINUE HANDLER FOR NOT FOUND SET done = 1; \
       DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN \
         GET DIAGNOSTICS CONDITION 1 @r_sqlstate = RETURNED_SQLSTATE, @r_errno = MYSQL_ERRNO; \
         SELECT @r_sqlstate AS state, @r_errno AS errno, x AS at_row; \
         RESIGNAL; \
       END; \
       OPEN c; \
       l: LOOP FETCH c INTO x; IF done THEN LEAVE l; END IF; \
         SELECT x AS row_value; \
         IF x = 2 THEN SELECT * FROM no_such_table; END IF; \
       END LOOP; \
     END",
    // Stored functions with cursors.
    "CREATE FUNCTION f_sum() RETURNS INT READS SQL DATA BEGIN \
       DECLARE done INT DEFAULT 0; DECLARE s INT DEFAULT 0; DECLARE x INT; \
       DECLARE c CURSOR FOR SELECT a FROM t5; \
       DECLARE CONTINUE HANDLER FOR NOT FOUND SET done = 1; \
       OPEN c; \
       l: LOOP FETCH c INTO x; IF done THEN LEAVE l; END IF; SET s = s + x; END LOOP; \
       CLOSE c; \
       RETURN s; \
     END",
    "CREATE FUNCTION f_first_above(n INT) RETURNS INT READS SQL DATA BEGIN \
       DECLARE x INT; \
       DECLARE c CURSOR FOR SELECT a FROM t5 WHERE a > n ORDER BY a; \
       DECLARE EXIT HANDLER FOR NOT FOUND SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'nothing above'; \
       OPEN c; FETCH c INTO x; CLOSE c; \
       RETURN x; \
     END",
];

/// Creates [`STORED_PROGRAMS`] on both servers through raw clients, comparing the responses; returns the
/// differences.
async fn create_stored_programs(twins: &Twins) -> Vec<String> {
    let mut pair = Pair::new(twins, capability_sets()[0], "SELECT 42").await;
    for sql in STORED_PROGRAMS {
        pair.setup(sql).await;
    }
    pair.failures
}

/// Runs each statement on fresh connections of every capability set, comparing responses; returns the differences.
async fn compare_statements(twins: &Twins, statements: &[&str]) -> Vec<String> {
    let mut failures = Vec::new();
    for caps in capability_sets() {
        let mut pair = Pair::new(twins, caps, "SELECT 42").await;
        for sql in statements {
            pair.query(sql).await;
        }
        failures.append(&mut pair.failures);
    }
    failures
}

#[tokio::test]
async fn call_of_a_procedure_with_a_cursor_is_identical() {
    let twins = Twins::new().await;
    let mut failures = create_stored_programs(&twins).await;
    for caps in capability_sets() {
        let mut pair = Pair::new(&twins, caps, "SELECT 42").await;
        for sql in ["CALL p()", "CALL p()", "CALL p(); CALL p()"] {
            let reply = pair.query(sql).await;
            // The row `1, 1`, in a result whose end says the procedure's cursor is open.
            pair.expect(sql, has_packet(&reply, b"\x011\x011"), "a row 1, 1");
            pair.expect(sql, has_status(&reply, CURSOR_EXISTS), "SERVER_STATUS_CURSOR_EXISTS in a result");
        }
        failures.append(&mut pair.failures);
    }
    assert_no_failures("CALL p()", &failures);
}

#[tokio::test]
async fn cursor_loops_and_anonymous_blocks_are_identical() {
    let twins = Twins::new().await;
    let mut failures = create_stored_programs(&twins).await;
    let statements = [
        "CALL p_loop()",
        "CALL p_outer()",
        "BEGIN NOT ATOMIC \
           DECLARE done INT DEFAULT 0; DECLARE x INT; DECLARE y VARCHAR(10); \
           DECLARE c CURSOR FOR SELECT a, s FROM t5 ORDER BY a; \
           DECLARE CONTINUE HANDLER FOR NOT FOUND SET done = 1; \
           OPEN c; \
           l: LOOP FETCH c INTO x, y; IF done THEN LEAVE l; END IF; SELECT x, y, CONCAT(y, '!') AS shout; END LOOP; \
           CLOSE c; \
         END",
        "BEGIN NOT ATOMIC \
           DECLARE x INT; DECLARE c CURSOR FOR SELECT a FROM t1 ORDER BY a; \
           OPEN c; FETCH c INTO x; SELECT x AS first_row; FETCH c INTO x; SELECT x AS second_row; CLOSE c; \
         END",
        "CALL p(); CALL p_loop(); SELECT f_sum() AS total",
    ];
    failures.extend(compare_statements(&twins, &statements).await);
    assert_no_failures("cursor loops and anonymous blocks", &failures);
}

#[tokio::test]
async fn handlers_signal_and_resignal_are_identical() {
    let twins = Twins::new().await;
    let mut failures = create_stored_programs(&twins).await;
    let statements = [
        "CALL p_handlers()",
        "SELECT @p_sqlstate, @p_errno, @p_text",
        "CALL p_continue()",
        "CALL p_signal()",
        "CALL p_resignal()",
        "CALL p_resignal_plain()",
        "BEGIN NOT ATOMIC \
           DECLARE x INT; DECLARE c CURSOR FOR SELECT a FROM t5 ORDER BY a; \
           DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN \
             GET DIAGNOSTICS CONDITION 1 @b_text = MESSAGE_TEXT, @b_errno = MYSQL_ERRNO; \
             SELECT 'anonymous handler' AS h, @b_text AS message, @b_errno AS errno, x; \
           END; \
           OPEN c; FETCH c INTO x; SELECT x; \
           SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'from an anonymous block'; \
         END",
        "BEGIN NOT ATOMIC SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'uncaught', MYSQL_ERRNO = 30002; END",
        "CALL p_signal(); SELECT 'not reached'",
    ];
    failures.extend(compare_statements(&twins, &statements).await);
    assert_no_failures("handlers, SIGNAL and RESIGNAL", &failures);
}

#[tokio::test]
async fn stored_functions_with_cursors_are_identical() {
    let twins = Twins::new().await;
    let mut failures = create_stored_programs(&twins).await;
    let statements = [
        "SELECT f_sum() AS total",
        "SELECT a, s, f_sum() AS total FROM t5 ORDER BY a",
        "SELECT f_first_above(2) AS next",
        "SELECT f_first_above(99) AS next",
        // Rows, then the function fails at the last row: an ERR in the middle of a result set.
        "SELECT a, f_first_above(a) AS next FROM t5 ORDER BY a",
    ];
    failures.extend(compare_statements(&twins, &statements).await);
    assert_no_failures("stored functions with cursors", &failures);
}

// ---------------------------------------------------------------------------------------------------------------
// The binary protocol

/// Creates the tables and the procedure of the binary-protocol cases.
const BINARY_SETUP: &[&str] = &[
    "CREATE TABLE t10 (id INT PRIMARY KEY, label VARCHAR(20), amount DECIMAL(8,2))",
    "INSERT INTO t10 VALUES (1, 'row 1', 1.25), (2, 'row 2', 2.50), (3, 'row 3', 3.75), (4, 'row 4', 5.00), \
     (5, 'row 5', 6.25), (6, 'row 6', 7.50), (7, 'row 7', 8.75), (8, 'row 8', 10.00), (9, 'row 9', 11.25), \
     (10, 'row 10', 12.50)",
    // An IN and an OUT parameter, a cursor, and SELECTs while the cursor is open.
    "CREATE PROCEDURE q(IN lo INT, OUT total INT) BEGIN \
       DECLARE done INT DEFAULT 0; DECLARE x INT; \
       DECLARE c CURSOR FOR SELECT id FROM t10 WHERE id >= lo ORDER BY id; \
       DECLARE CONTINUE HANDLER FOR NOT FOUND SET done = 1; \
       SET total = 0; \
       OPEN c; \
       l: LOOP FETCH c INTO x; IF done THEN LEAVE l; END IF; \
         IF x <= lo + 1 THEN SELECT x AS fetched, lo; END IF; \
         SET total = total + x; \
       END LOOP; \
       CLOSE c; \
     END",
];

const NO_CURSOR: u8 = 0;
const CURSOR_TYPE_READ_ONLY: u8 = 1;

/// A COM_STMT_PREPARE.
fn prepare(sql: &str) -> Vec<u8> {
    let mut payload = vec![COM_STMT_PREPARE];
    payload.extend_from_slice(sql.as_bytes());
    payload
}

/// A COM_STMT_EXECUTE of statement `id` with `flags`, one iteration, and BIGINT parameters (`None`: NULL).
fn execute(id: u32, flags: u8, params: &[Option<i64>]) -> Vec<u8> {
    let mut payload = vec![COM_STMT_EXECUTE];
    payload.extend_from_slice(&id.to_le_bytes());
    payload.push(flags);
    payload.extend_from_slice(&1u32.to_le_bytes());
    if !params.is_empty() {
        let mut nulls = vec![0u8; params.len().div_ceil(8)];
        for (i, param) in params.iter().enumerate() {
            if param.is_none() {
                nulls[i / 8] |= 1 << (i % 8);
            }
        }
        payload.extend_from_slice(&nulls);
        payload.push(1); // new parameter types follow
        for _ in params {
            payload.extend_from_slice(&[0x08, 0x00]); // MYSQL_TYPE_LONGLONG, signed
        }
        for value in params.iter().flatten() {
            payload.extend_from_slice(&value.to_le_bytes());
        }
    }
    payload
}

/// A COM_STMT_FETCH of `rows` rows of statement `id`'s cursor.
fn fetch(id: u32, rows: u32) -> Vec<u8> {
    let mut payload = vec![COM_STMT_FETCH];
    payload.extend_from_slice(&id.to_le_bytes());
    payload.extend_from_slice(&rows.to_le_bytes());
    payload
}

/// A command of `byte` on statement `id` with nothing else (COM_STMT_RESET, COM_STMT_CLOSE).
fn on_statement(byte: u8, id: u32) -> Vec<u8> {
    let mut payload = vec![byte];
    payload.extend_from_slice(&id.to_le_bytes());
    payload
}

/// A COM_STMT_SEND_LONG_DATA of `data` for the first parameter of statement `id`.
fn long_data(id: u32, data: &[u8]) -> Vec<u8> {
    let mut payload = on_statement(COM_STMT_SEND_LONG_DATA, id);
    payload.extend_from_slice(&0u16.to_le_bytes());
    payload.extend_from_slice(data);
    payload
}

#[tokio::test]
async fn prepared_call_with_out_parameter_and_cursor_is_identical() {
    let twins = Twins::new().await;
    let mut failures = create_stored_programs(&twins).await;
    let mut setup = Pair::new(&twins, capability_sets()[0], "SELECT 42").await;
    for sql in BINARY_SETUP {
        setup.setup(sql).await;
    }
    failures.append(&mut setup.failures);
    for caps in capability_sets() {
        let mut pair = Pair::new(&twins, caps, "SELECT 42").await;
        let q = pair.prepare("CALL q(?, ?)").await;
        for (flags, lo) in [(NO_CURSOR, 8), (CURSOR_TYPE_READ_ONLY, 8), (NO_CURSOR, 1), (CURSOR_TYPE_READ_ONLY, 1)] {
            let case = format!("execute CALL q({lo}, ?) with flags {flags}");
            let reply = pair.on(&case, q, |id| execute(id, flags, &[Some(lo), None])).await;
            pair.expect(&case, has_status(&reply, PS_OUT_PARAMS), "the OUT parameters' result set");
            pair.expect(&case, has_status(&reply, CURSOR_EXISTS), "SERVER_STATUS_CURSOR_EXISTS in a result");
        }
        pair.on("reset CALL q(?, ?)", q, |id| on_statement(COM_STMT_RESET, id)).await;
        pair.on("execute CALL q(?, ?) after reset, cursor", q, |id| {
            execute(id, CURSOR_TYPE_READ_ONLY, &[Some(9), None])
        })
        .await;
        pair.on("close CALL q(?, ?)", q, |id| on_statement(COM_STMT_CLOSE, id)).await;

        let p = pair.prepare("CALL p()").await;
        pair.on("execute CALL p() with flags 0", p, |id| execute(id, NO_CURSOR, &[])).await;
        pair.on("execute CALL p() with flags 1", p, |id| execute(id, CURSOR_TYPE_READ_ONLY, &[])).await;
        pair.on("close CALL p()", p, |id| on_statement(COM_STMT_CLOSE, id)).await;
        failures.append(&mut pair.failures);
    }
    assert_no_failures("prepared CALL with an OUT parameter and a cursor", &failures);
}

#[tokio::test]
async fn cursor_fetches_in_pieces_are_identical() {
    let twins = Twins::new().await;
    let mut setup = Pair::new(&twins, capability_sets()[0], "SELECT 42").await;
    for sql in BINARY_SETUP {
        setup.setup(sql).await;
    }
    let mut failures = setup.failures;
    for caps in capability_sets() {
        let mut pair = Pair::new(&twins, caps, "SELECT 42").await;
        let s = pair.prepare("SELECT id, label, amount FROM t10 ORDER BY id").await;
        let reply = pair.on("execute with a cursor", s, |id| execute(id, CURSOR_TYPE_READ_ONLY, &[])).await;
        pair.expect("execute with a cursor", has_status(&reply, CURSOR_EXISTS), "a cursor opened");
        for rows in [3, 3, 10] {
            pair.on(&format!("fetch {rows}"), s, |id| fetch(id, rows)).await;
        }
        pair.on("fetch past the end", s, |id| fetch(id, 1)).await;
        pair.on("reset", s, |id| on_statement(COM_STMT_RESET, id)).await;
        pair.on("execute with a cursor again", s, |id| execute(id, CURSOR_TYPE_READ_ONLY, &[])).await;
        pair.on("fetch 4", s, |id| fetch(id, 4)).await;
        pair.on("reset with an open cursor", s, |id| on_statement(COM_STMT_RESET, id)).await;
        pair.on("fetch after reset", s, |id| fetch(id, 1)).await;
        pair.on("execute without a cursor", s, |id| execute(id, NO_CURSOR, &[])).await;
        pair.on("execute with a cursor, then fetch all", s, |id| execute(id, CURSOR_TYPE_READ_ONLY, &[])).await;
        pair.on("fetch 100", s, |id| fetch(id, 100)).await;

        let w = pair.prepare("SELECT id, label FROM t10 WHERE id > ? ORDER BY id").await;
        pair.on("execute with a parameter and a cursor", w, |id| execute(id, CURSOR_TYPE_READ_ONLY, &[Some(5)])).await;
        pair.on("fetch 2 of 5", w, |id| fetch(id, 2)).await;
        pair.on("fetch the other 3", w, |id| fetch(id, 10)).await;
        pair.on("execute with a cursor over no rows", w, |id| execute(id, CURSOR_TYPE_READ_ONLY, &[Some(99)])).await;
        pair.on("fetch from an empty cursor", w, |id| fetch(id, 1)).await;
        pair.on("close with an open cursor", s, |id| on_statement(COM_STMT_CLOSE, id)).await;
        pair.on("close", w, |id| on_statement(COM_STMT_CLOSE, id)).await;
        pair.on("fetch after close", s, |id| fetch(id, 1)).await;
        failures.append(&mut pair.failures);
    }
    assert_no_failures("cursor fetches", &failures);
}

/// Whether `reply` is one ERR packet with `code`.
fn is_error(reply: &Reply, code: u16) -> bool {
    matches!(reply, Reply::Complete(bytes) if packets(bytes).first().and_then(|&(_, p)| error_of(p)).is_some_and(|e| e.0 == code))
}

#[tokio::test]
async fn commands_on_the_last_statement_prepared_are_identical() {
    // MariaDB reads the statement id 0xFFFFFFFF as the statement the connection prepared last (Connector/C's
    // direct execution); the proxy names that statement by its id, or answers as the server does when there is
    // none. The commands name it the same way on both sides, so the replies are compared unchanged.
    let twins = Twins::new().await;
    let mut setup = Pair::new(&twins, capability_sets()[0], "SELECT 42").await;
    for sql in BINARY_SETUP {
        setup.setup(sql).await;
    }
    let mut failures = setup.failures;
    let read = "SELECT id, label FROM t10 WHERE id > ? ORDER BY id";
    let execute_last = |lo| execute(LAST_STATEMENT_ID, NO_CURSOR, &[Some(lo)]);
    let unknown = code::ER_UNKNOWN_STMT_HANDLER;
    for caps in capability_sets() {
        let mut pair = Pair::new(&twins, caps, "SELECT 42").await;
        pair.prepare(read).await;
        let reply = pair.command("execute the last statement", &execute_last(7)).await;
        pair.expect("execute the last statement", prepared_id(&reply).is_none() && !is_error(&reply, unknown), "rows");
        pair.command("execute it with a cursor", &execute(LAST_STATEMENT_ID, CURSOR_TYPE_READ_ONLY, &[Some(6)])).await;
        pair.command("fetch from it", &fetch(LAST_STATEMENT_ID, 2)).await;
        pair.command("reset it", &on_statement(COM_STMT_RESET, LAST_STATEMENT_ID)).await;
        let first = pair.prepare("SELECT ? + 1").await;
        pair.prepare(read).await;
        pair.on("close a statement that is not the last", first, |id| on_statement(COM_STMT_CLOSE, id)).await;
        pair.command("the last is still there", &execute_last(8)).await;
        pair.command("close the last", &on_statement(COM_STMT_CLOSE, LAST_STATEMENT_ID)).await;
        for (case, payload) in [
            ("execute after closing the last", execute_last(8)),
            ("reset after closing the last", on_statement(COM_STMT_RESET, LAST_STATEMENT_ID)),
            ("fetch after closing the last", fetch(LAST_STATEMENT_ID, 1)),
        ] {
            let reply = pair.command(case, &payload).await;
            pair.expect(case, is_error(&reply, unknown), "error 1243");
        }
        pair.prepare(read).await;
        let mut without_types = execute(LAST_STATEMENT_ID, NO_CURSOR, &[Some(1)]);
        without_types.truncate(11); // the NULL bitmap, then no "types follow" byte
        for (case, payload) in [("a direct execution without parameter types", without_types.clone()), {
            without_types.push(0); // types do not follow
            ("a direct execution saying its parameter types do not follow", without_types)
        }] {
            let reply = pair.command(case, &payload).await;
            pair.expect(case, is_error(&reply, code::ER_MALFORMED_PACKET), "error 1835");
        }
        let kept = pair.prepare(read).await;
        pair.setup("PREPARE by_name FROM 'SELECT 1'").await;
        let reply = pair.command("execute after an SQL PREPARE", &execute_last(9)).await;
        pair.expect("execute after an SQL PREPARE", !is_error(&reply, unknown), "a named statement is not the last");
        let reply = pair.command("a prepare that fails", &prepare("SELECT FROM WHERE")).await;
        pair.expect("a prepare that fails", is_error(&reply, 1064), "a syntax error");
        let reply = pair.command("execute after a failed prepare", &execute_last(9)).await;
        pair.expect("execute after a failed prepare", is_error(&reply, unknown), "error 1243");
        pair.command("send long data after a failed prepare", &long_data(LAST_STATEMENT_ID, b"ignored")).await;
        pair.command("close after a failed prepare", &on_statement(COM_STMT_CLOSE, LAST_STATEMENT_ID)).await;
        pair.on("the statement prepared before is still there", kept, |id| execute(id, NO_CURSOR, &[Some(9)])).await;
        let again = pair.prepare(read).await;
        pair.on("close the last by its id", again, |id| on_statement(COM_STMT_CLOSE, id)).await;
        let reply = pair.command("execute after closing the last by its id", &execute_last(9)).await;
        pair.expect("execute after closing the last by its id", is_error(&reply, unknown), "error 1243");
        pair.prepare(read).await;
        pair.command("reset the connection", &[COM_RESET_CONNECTION]).await;
        let reply = pair.command("execute after a reset of the connection", &execute_last(9)).await;
        pair.expect("execute after a reset of the connection", is_error(&reply, unknown), "error 1243");
        failures.append(&mut pair.failures);
    }
    assert_no_failures("commands on the last statement prepared", &failures);
}

// ---------------------------------------------------------------------------------------------------------------
// The mariadb command-line client

/// How long a run of the `mariadb` client may take.
const CLI_TIME_LIMIT: Duration = Duration::from_secs(20);

/// Runs the `mariadb` client with `args` and `sql` directly and through the proxy; returns both standard outputs,
/// panicking if a run failed.
async fn cli_twice(twins: &Twins, args: &[&str], sql: &str) -> (String, String) {
    let mut outputs = Vec::new();
    for addr in [twins.direct, twins.proxy.addr()] {
        let mut command = support::mariadb_cli(addr, &support::app(), Some(&twins.database));
        command.args(args).arg("--execute").arg(sql);
        // A client left waiting by a relay that lost its place must fail the test, not hang it (the client is
        // killed when the timed-out future drops it).
        let output = tokio::time::timeout(CLI_TIME_LIMIT, command.output())
            .await
            .unwrap_or_else(|_| panic!("mariadb {args:?} -e {sql:?} via {addr} did not finish in {CLI_TIME_LIMIT:?}"))
            .unwrap_or_else(|e| panic!("cannot run the mariadb client: {e}"));
        assert!(
            output.status.success(),
            "mariadb {args:?} -e {sql:?} failed via {addr} ({}): {}",
            if addr == twins.direct { "direct" } else { "proxy" },
            String::from_utf8_lossy(&output.stderr)
        );
        outputs.push(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let proxied = outputs.pop().unwrap();
    (outputs.pop().unwrap(), proxied)
}

#[tokio::test]
async fn the_cli_calls_a_procedure_with_a_cursor_through_the_proxy() {
    let twins = Twins::new().await;
    assert_no_failures("creating the stored programs", &create_stored_programs(&twins).await);
    let app = support::app();
    let run = support::mariadb_cli_run(twins.proxy.addr(), &app, Some(&twins.database), "CALL p()");
    let output =
        tokio::time::timeout(CLI_TIME_LIMIT, run).await.expect("mariadb -e 'CALL p()' through the proxy finishes");
    let proxied = support::cli_stdout(&output);
    assert!(proxied.lines().any(|line| line == "1\t1"), "CALL p() through the proxy printed {proxied:?}");
    let (direct, proxied) = cli_twice(&twins, &[], "CALL p()").await;
    assert_eq!(proxied, direct, "CALL p() through the proxy and directly");
    let sql = "CALL p_loop(); CALL p_outer(); SELECT f_sum() AS total; SELECT 42";
    let (direct, proxied) = cli_twice(&twins, &[], sql).await;
    assert_eq!(proxied, direct, "{sql} through the proxy and directly");
}

#[tokio::test]
async fn the_cli_column_type_info_of_a_json_column_is_identical() {
    let twins = Twins::new().await;
    let mut pair = Pair::new(&twins, capability_sets()[0], "SELECT 42").await;
    pair.setup("CREATE TABLE t (js JSON)").await;
    pair.setup("INSERT INTO t VALUES ('{\"a\": 1}'), ('[1, 2, 3]')").await;
    assert_no_failures("creating the JSON table", &pair.failures);
    // `--table`: in batch mode (tab-separated output) the client prints no column information.
    let (direct, proxied) = cli_twice(&twins, &["--table", "--column-type-info"], "SELECT js FROM t").await;
    assert!(direct.contains("Field   1:  `js`"), "the client printed column information: {direct:?}");
    assert_eq!(
        proxied, direct,
        "mariadb --column-type-info -e 'SELECT js FROM t' through the proxy (left) and directly (right)"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Every command byte

/// A statement id no connection has.
const UNKNOWN_STATEMENT: u32 = 12345;
/// A connection id no server has.
const UNKNOWN_THREAD: u32 = 999_999;

/// Obsolete command bytes the server answers with "unknown command" (or another error) by name.
const COM_CREATE_DB: u8 = 0x05;
const COM_DROP_DB: u8 = 0x06;
const COM_TABLE_DUMP: u8 = 0x13;

/// `byte` as a command packet with a plausible body: names that exist where one is wanted, ids that do not.
fn bare_command(byte: u8, database: &str) -> Vec<u8> {
    let mut payload = vec![byte];
    let statement = UNKNOWN_STATEMENT.to_le_bytes();
    match byte {
        COM_INIT_DB => payload.extend_from_slice(database.as_bytes()),
        COM_QUERY => payload.extend_from_slice(b"SELECT 1"),
        COM_FIELD_LIST => payload.extend_from_slice(b"fl\0"),
        COM_CREATE_DB => payload.extend_from_slice(b"no_such_db_created"),
        COM_DROP_DB => payload.extend_from_slice(b"no_such_db_dropped"),
        COM_REFRESH => payload.push(0x04), // REFRESH_TABLES
        COM_SHUTDOWN => payload.push(0),
        COM_PROCESS_KILL => payload.extend_from_slice(&UNKNOWN_THREAD.to_le_bytes()),
        COM_TABLE_DUMP => {
            payload.push(database.len() as u8);
            payload.extend_from_slice(database.as_bytes());
            payload.extend_from_slice(b"\x02fl");
        }
        COM_BINLOG_DUMP => {
            payload.extend_from_slice(&4u32.to_le_bytes()); // position
            payload.extend_from_slice(&0u16.to_le_bytes()); // flags
            payload.extend_from_slice(&4242u32.to_le_bytes()); // server id
            payload.extend_from_slice(b"binlog.000001");
        }
        COM_REGISTER_SLAVE => {
            payload.extend_from_slice(&4242u32.to_le_bytes()); // server id
            payload.extend_from_slice(&[0, 0, 0]); // host, user, password: empty
            payload.extend_from_slice(&0u16.to_le_bytes()); // port
            payload.extend_from_slice(&0u32.to_le_bytes()); // replication rank
            payload.extend_from_slice(&0u32.to_le_bytes()); // master id
        }
        COM_BINLOG_DUMP_GTID => {
            payload.extend_from_slice(&0u16.to_le_bytes()); // flags
            payload.extend_from_slice(&4242u32.to_le_bytes()); // server id
            payload.extend_from_slice(&0u32.to_le_bytes()); // file name length
            payload.extend_from_slice(&4u64.to_le_bytes()); // position
            payload.extend_from_slice(&0u32.to_le_bytes()); // GTID data size
        }
        COM_STMT_PREPARE => payload.extend_from_slice(b"SELECT ? + 1"),
        COM_STMT_EXECUTE => {
            payload.extend_from_slice(&statement);
            payload.push(NO_CURSOR);
            payload.extend_from_slice(&1u32.to_le_bytes());
        }
        COM_STMT_SEND_LONG_DATA => {
            payload.extend_from_slice(&statement);
            payload.extend_from_slice(&0u16.to_le_bytes()); // parameter
            payload.extend_from_slice(b"long data");
        }
        COM_STMT_CLOSE | COM_STMT_RESET => payload.extend_from_slice(&statement),
        COM_SET_OPTION => payload.extend_from_slice(&0u16.to_le_bytes()), // MYSQL_OPTION_MULTI_STATEMENTS_ON
        COM_STMT_FETCH => {
            payload.extend_from_slice(&statement);
            payload.extend_from_slice(&10u32.to_le_bytes());
        }
        COM_STMT_BULK_EXECUTE => {
            payload.extend_from_slice(&statement);
            payload.extend_from_slice(&0u16.to_le_bytes()); // flags
        }
        _ => {}
    }
    payload
}

/// The packets of a result set's column count and column definitions (with the EOF after them, if any).
fn result_set_head<'a>(packets: &[(u8, &'a [u8])], deprecate_eof: bool) -> Option<Vec<(u8, &'a [u8])>> {
    let &(_, count) = packets.first()?;
    let columns = match count {
        [n @ 1..=0xfa] => usize::from(*n),
        _ => return None,
    };
    let head = columns + 1 + usize::from(!deprecate_eof);
    (packets.len() > head).then(|| packets[..head].to_vec())
}

/// The global privileges the application account has on the server at `addr` (it must have none that would
/// let a command shut the server down, flush it or debug it).
async fn global_privileges(addr: std::net::SocketAddr, database: &str) -> Vec<String> {
    let mut conn = support::connect(addr, &support::app(), Some(database)).await;
    conn.query("SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES").await.unwrap()
}

/// The command bytes the suite sends: 0x00..=0x1f and MariaDB's COM_STMT_BULK_EXECUTE.
fn command_bytes() -> impl Iterator<Item = u8> {
    (0x00..=0x1f).chain([COM_STMT_BULK_EXECUTE])
}

/// Whether the proxy refuses `byte` on purpose (a replication stream would follow).
fn refused(byte: u8) -> bool {
    Command::from_byte(byte).refusal().is_some()
}

#[tokio::test]
async fn every_command_byte_gets_the_servers_answer() {
    let twins = Twins::new().await;
    twins.setup("CREATE TABLE fl (a INT COMMENT 'x', b VARCHAR(3))").await;
    let behind_proxy = support::second_server().await.addr();
    for addr in [twins.direct, behind_proxy] {
        assert_eq!(global_privileges(addr, &twins.database).await, ["USAGE"], "the application account at {addr}");
    }
    let mut failures = Vec::new();
    for caps in eof_capability_sets() {
        let deprecate_eof = caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
        for byte in command_bytes().filter(|&b| b != COM_CHANGE_USER && b != COM_QUIT && !refused(b)) {
            let payload = bare_command(byte, &twins.database);
            let case = format!("command {byte:#04x}");
            let mut pair = Pair::new(&twins, caps, "SELECT 1").await;
            let command = Command::of(&payload).unwrap();
            if byte == COM_STATISTICS || byte == COM_PROCESS_INFO {
                // What these say varies per connection (uptime and counters; the connections listed): compared by
                // shape only.
                let expect = command.response().unwrap();
                let direct = pair.direct.try_command(&payload, expect).await;
                let proxied = pair.proxied.try_command(&payload, expect).await;
                let (Reply::Complete(d), Reply::Complete(p)) = (&direct, &proxied) else {
                    pair.fail(&case, format!("direct: {}; proxy: {}", outline(&direct), outline(&proxied)));
                    failures.append(&mut pair.failures);
                    continue;
                };
                let (d, p) = (packets(d), packets(p));
                let same_shape = if byte == COM_STATISTICS {
                    let uptime = |ps: &[(u8, &[u8])]| ps.len() == 1 && ps[0].1.starts_with(b"Uptime:");
                    uptime(&d) && uptime(&p)
                } else {
                    let head = result_set_head(&d, deprecate_eof);
                    head.is_some() && head == result_set_head(&p, deprecate_eof)
                };
                if !same_shape {
                    let what = format!("different shapes: {}", describe(&direct, &proxied));
                    pair.fail(&case, what);
                }
                pair.check_follow_up(&case).await;
            } else {
                // If the server closes the connection instead of answering, the proxied connection must close the
                // same way: the replies are compared whole, how they ended included.
                pair.command(&case, &payload).await;
            }
            failures.append(&mut pair.failures);
        }
    }
    assert_no_failures("command bytes", &failures);
}

#[tokio::test]
async fn replication_commands_are_refused_by_the_proxy() {
    let refusals: Vec<u8> = command_bytes().filter(|&b| refused(b)).collect();
    assert_eq!(refusals, [COM_BINLOG_DUMP, COM_REGISTER_SLAVE, COM_BINLOG_DUMP_GTID], "the commands refused");
    let twins = Twins::new().await;
    let mut failures = Vec::new();
    for caps in eof_capability_sets() {
        for byte in refusals.iter().copied() {
            let payload = bare_command(byte, &twins.database);
            let case = format!("command {byte:#04x}");
            // Only through the proxy: sent directly, this could start a replication stream.
            let mut pair = Pair::new(&twins, caps, "SELECT 1").await;
            let reply = pair.proxied.try_command(&payload, Expect::OnePacket).await;
            let error = match &reply {
                Reply::Complete(bytes) => packets(bytes).first().and_then(|&(_, p)| error_of(p)),
                _ => None,
            };
            match error {
                Some((1047, _, message)) if message.contains("refused") => {}
                _ => pair
                    .fail(&case, format!("expected the proxy's ERR 1047 saying it refuses, got {}", outline(&reply))),
            }
            let follow_up = pair.proxied.try_query("SELECT 1").await;
            if follow_up != Reply::Complete(pair.follow_up_reply.clone()) {
                pair.fail(&case, format!("SELECT 1 afterwards through the proxy: {}", outline(&follow_up)));
            }
            failures.append(&mut pair.failures);
        }
    }
    assert_no_failures("refused commands", &failures);
}

#[tokio::test]
async fn com_quit_closes_both_connections() {
    let twins = Twins::new().await;
    for caps in eof_capability_sets() {
        let (mut direct, mut proxied) = twins.clients(caps).await;
        direct.send(&[COM_QUIT]).await;
        proxied.send(&[COM_QUIT]).await;
        assert!(direct.closes_within(Duration::from_secs(5)).await, "the server closes the connection on COM_QUIT");
        assert!(proxied.closes_within(Duration::from_secs(5)).await, "the proxy closes the connection on COM_QUIT");
    }
}
