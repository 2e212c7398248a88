//! Clients that vanish: a process killed or a worker timed out closes its socket with no COM_QUIT while a
//! statement runs, while a result streams, in the middle of LOAD DATA LOCAL INFILE, or inside a transaction that
//! holds row locks. Directly, the server notices the closed socket and ends the statement (rolling back the
//! transaction); through the proxy it must too, on every server the statement reached. The servers' own
//! processlists are the evidence.

mod support;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use csmh_proxy::backend::{Credentials, LOGIN_CAPABILITIES};
use csmh_proxy::history::Stage;
use csmh_proxy::protocol::command::COM_QUIT;
use csmh_proxy::protocol::frame;
use csmh_proxy::protocol::response::Expect;
use csmh_proxy::sandbox::ProxyToml;
use csmh_proxy::server::ProxyHandle;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use mysql_common::constants::CapabilityFlags;
use support::edx::*;
use support::frozen::Frozen;
use support::held::CommitAnswersHeld;
use support::raw::RawClient;

/// How long the server may take to end the statement of a client that went away (it takes under 2 s directly).
const ENDS_WITHIN: Duration = Duration::from_secs(5);

/// A proxy in front of the shared server, flags off, and a database of the test's own.
async fn passthrough() -> (ProxyHandle, String) {
    let server = support::server().await;
    let database = support::fresh_database(&server, "hangup").await;
    let any_port = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
    let config = ProxyToml::edx(any_port, server.addr(), server.addr()).config().unwrap();
    (support::start_proxy(config).await, database)
}

/// A root connection to the shared server.
async fn root() -> Conn {
    support::root_conn(&*support::server().await).await
}

/// The application account's raw connection through `proxy`, in `database`, asking for `extra` capabilities.
async fn raw_client(proxy: &ProxyHandle, database: &str, extra: CapabilityFlags) -> RawClient {
    let app = support::app();
    let credentials = Credentials { user: app.user, password: Some(app.password), database: Some(database.into()) };
    RawClient::connect(&proxy.addr().to_string(), &credentials, LOGIN_CAPABILITIES | extra).await
}

/// How many connections of `server` (other than `root`'s own) are running a statement whose text contains
/// `marker`.
async fn running(root: &mut Conn, marker: &str) -> u64 {
    let sql = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND INFO LIKE ?";
    root.exec_first(sql, (format!("%{marker}%"),)).await.unwrap().unwrap_or(0)
}

/// Waits until a statement containing `marker` runs on the server `root` is connected to.
async fn wait_until_running(root: &mut Conn, marker: &str) {
    let started = Instant::now();
    while running(root, marker).await == 0 {
        assert!(started.elapsed() < ENDS_WITHIN, "the statement {marker} never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until no statement containing `marker` runs any more; panics after [`ENDS_WITHIN`].
async fn assert_ends(root: &mut Conn, marker: &str) {
    let started = Instant::now();
    while running(root, marker).await > 0 {
        assert!(
            started.elapsed() < ENDS_WITHIN,
            "the statement {marker} still runs {ENDS_WITHIN:?} after its client went away"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the server still has connection `id`.
async fn connection_exists(root: &mut Conn, id: u64) -> bool {
    let sql = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?";
    root.exec_first::<u64, _, _>(sql, (id,)).await.unwrap() == Some(1)
}

/// Waits until the server no longer has connection `id`; panics after [`ENDS_WITHIN`].
async fn assert_connection_ends(root: &mut Conn, id: u64) {
    let started = Instant::now();
    while connection_exists(root, id).await {
        assert!(started.elapsed() < ENDS_WITHIN, "connection {id} still open {ENDS_WITHIN:?} after its client left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a COM_QUERY and does not wait for its answer.
async fn send_query(client: &mut RawClient, sql: &str) {
    client.send(&[&[0x03][..], sql.as_bytes()].concat()).await;
}

/// The backend connection id of a raw client, as `SELECT CONNECTION_ID()` answers through the proxy.
async fn backend_thread(client: &mut RawClient) -> u64 {
    let response = client.query("SELECT CONNECTION_ID()").await;
    let mut packets = Vec::new();
    let mut rest = &response[..];
    while let Some(span) = frame::PacketSpan::find(rest) {
        packets.push(rest[frame::HEADER_LEN..span.wire_len].to_vec());
        rest = &rest[span.wire_len..];
    }
    // Column count, definition, then the row (CLIENT_DEPRECATE_EOF: no EOF between them).
    let row = &packets[2];
    std::str::from_utf8(&row[1..1 + usize::from(row[0])]).unwrap().parse().unwrap()
}

/// A root connection holding a lock named after `database`, and the lock's name.
async fn hold_lock(database: &str) -> (Conn, String) {
    let mut root = root().await;
    let lock = format!("{database}_lock");
    root.query_drop(format!("SELECT GET_LOCK('{lock}', 10)")).await.unwrap();
    (root, lock)
}

/// Has `client` run a statement that waits for the lock `root` holds, hangs the client up, and asserts that the
/// statement ends on the server and that the hang-up is counted.
async fn hang_up_waiting_for_lock(proxy: &ProxyHandle, (mut root, lock): (Conn, String), mut client: RawClient) {
    let marker = format!("GET_LOCK('{lock}', 3600)");
    send_query(&mut client, &format!("SELECT {marker}")).await;
    wait_until_running(&mut root, &marker).await;
    drop(client);
    assert_ends(&mut root, &marker).await;
    assert_eq!(proxy.shared().metrics.client_hangups(), 1, "the hang-up is counted");
}

#[tokio::test]
async fn a_client_gone_mid_statement_ends_it_on_the_server() {
    let (proxy, database) = passthrough().await;
    let lock = hold_lock(&database).await;
    let client = raw_client(&proxy, &database, CapabilityFlags::empty()).await;
    hang_up_waiting_for_lock(&proxy, lock, client).await;
}

/// The watch keeps one timer from request to request: a long statement right behind fast ones (whose timer is
/// still set, due sooner than the long one's) is watched all the same.
#[tokio::test]
async fn a_client_gone_mid_statement_right_after_fast_ones_ends_it() {
    let (proxy, database) = passthrough().await;
    let lock = hold_lock(&database).await;
    let mut client = raw_client(&proxy, &database, CapabilityFlags::empty()).await;
    for _ in 0..50 {
        client.query("SELECT 1").await;
    }
    // The long statement follows the last fast one at once, while the timer that one set is still pending.
    hang_up_waiting_for_lock(&proxy, lock, client).await;
}

#[tokio::test]
async fn a_client_gone_mid_result_ends_its_statement() {
    let (proxy, database) = passthrough().await;
    let mut root = root().await;
    let mut client = raw_client(&proxy, &database, CapabilityFlags::empty()).await;
    let thread = backend_thread(&mut client).await;
    // About 400 MiB: far more than the sockets between server, proxy and client hold.
    send_query(&mut client, "SELECT /* mid-result */ REPEAT('x', 1048576) FROM seq_1_to_400").await;
    assert!(client.read_some().await > 0, "the result starts to arrive");
    drop(client);
    assert_connection_ends(&mut root, thread).await;
}

#[tokio::test]
async fn a_client_gone_mid_load_data_local_infile_ends_it() {
    let (proxy, database) = passthrough().await;
    let mut root = root().await;
    root.query_drop(format!("CREATE TABLE `{database}`.loaded (a INT)")).await.unwrap();
    let mut client = raw_client(&proxy, &database, CapabilityFlags::CLIENT_LOCAL_FILES).await;
    let thread = backend_thread(&mut client).await;
    send_query(&mut client, "LOAD DATA LOCAL INFILE 'rows.txt' INTO TABLE loaded").await;
    assert!(client.read_some().await > 0, "the server asks for the file");
    // Part of the file (sequence id 2, after the request and the server's 0xFB), never its final empty packet.
    let mut part = BytesMut::new();
    frame::write_packet(&mut part, 2, b"1\n2\n3\n");
    client.send_bytes(&part).await;
    drop(client);
    assert_connection_ends(&mut root, thread).await;
    let count: Option<u64> = root.query_first(format!("SELECT COUNT(*) FROM `{database}`.loaded")).await.unwrap();
    assert_eq!(count, Some(0), "a half-sent file loads nothing");
}

#[tokio::test]
async fn a_client_gone_inside_a_transaction_releases_its_row_locks() {
    let (proxy, database) = passthrough().await;
    let mut root = root().await;
    let table = format!("`{database}`.counters");
    root.query_drop(format!("CREATE TABLE {table} (id INT PRIMARY KEY, n INT) ENGINE=InnoDB")).await.unwrap();
    root.query_drop(format!("INSERT INTO {table} VALUES (1, 0), (2, 0)")).await.unwrap();
    let marker = format!("SLEEP(3600) /* {database} */");
    // Row 1 is locked by a client that goes away while idle, row 2 by one that goes away mid-statement.
    let mut idle = raw_client(&proxy, &database, CapabilityFlags::empty()).await;
    let mut busy = raw_client(&proxy, &database, CapabilityFlags::empty()).await;
    for (client, id) in [(&mut idle, 1), (&mut busy, 2)] {
        client.query("BEGIN").await;
        client.query(&format!("UPDATE counters SET n = n + 1 WHERE id = {id}")).await;
    }
    send_query(&mut busy, &format!("SELECT {marker}")).await;
    wait_until_running(&mut root, &marker).await;
    drop(idle);
    drop(busy);
    assert_ends(&mut root, &marker).await;
    root.query_drop("SET SESSION innodb_lock_wait_timeout = 5").await.unwrap();
    root.query_drop(format!("UPDATE {table} SET n = n + 10")).await.expect("the row locks were released");
    let rows: Vec<(i32, i32)> = root.query(format!("SELECT id, n FROM {table} ORDER BY id")).await.unwrap();
    assert_eq!(rows, [(1, 10), (2, 10)], "both clients' uncommitted updates were rolled back");
}

#[tokio::test]
async fn com_quit_behind_a_running_statement_waits_for_its_answer() {
    let (proxy, database) = passthrough().await;
    let mut root = root().await;
    let mut client = raw_client(&proxy, &database, CapabilityFlags::empty()).await;
    let thread = backend_thread(&mut client).await;
    let query = [&[0x03][..], b"SELECT SLEEP(0.5) AS slept"].concat();
    let mut pipelined = BytesMut::new();
    frame::write_packet(&mut pipelined, 0, &query);
    frame::write_packet(&mut pipelined, 0, &[COM_QUIT]);
    client.send_bytes(&pipelined).await;
    let answer = client.response(Expect::ResultSets).await;
    assert!(answer.windows(5).any(|w| w == b"slept"), "the statement is answered before the client leaves");
    assert!(client.is_closed().await, "then the connection closes, as the server closes it");
    assert_connection_ends(&mut root, thread).await;
    assert_eq!(proxy.shared().metrics.client_hangups(), 0, "a client that waited for its answer did not hang up");
}

#[tokio::test]
async fn a_client_gone_while_its_history_read_waits_on_the_csmh_server() {
    for flags in [Stage::ExtendedTableOnlyReads.flags(), Stage::ExtendedTableReadingBoth.flags()] {
        let site = Site::two_servers(flags).await;
        let module_one: Vec<u64> = site
            .root()
            .await
            .query(format!("SELECT id FROM {} WHERE student_module_id = 1", site.old()))
            .await
            .unwrap();
        site.copy_to_extended(&module_one).await;
        // The extended table locked, the read waits on the `csmh` server (functions such as GET_LOCK are refused
        // there: they would run in the proxy's session).
        let mut csmh_root = site.csmh_root().await;
        csmh_root.query_drop(format!("LOCK TABLES {} WRITE", site.extended())).await.unwrap();
        let mut client = raw_client(&site.proxy, &site.dbs.edxapp_db, CapabilityFlags::CLIENT_FOUND_ROWS).await;
        let marker = format!("waits for {}", site.dbs.csmh_db);
        let read = format!("SELECT `id` FROM `{OLD}` WHERE `student_module_id` = 1 ORDER BY `id` /* {marker} */");
        send_query(&mut client, &read).await;
        wait_until_running(&mut csmh_root, &marker).await;
        drop(client);
        assert_ends(&mut csmh_root, &marker).await;
        csmh_root.query_drop("UNLOCK TABLES").await.unwrap();
        assert_eq!(site.proxy.shared().metrics.client_hangups(), 1, "with flags {flags:?}");
    }
}

#[tokio::test]
async fn a_client_gone_while_the_proxy_reads_its_session_settings_ends_its_session() {
    // The double quote makes the proxy read the session's sql_mode on the `edxapp` server before routing the
    // read; with that server frozen, only noticing the hang-up can end the session (checked: before, the
    // settings were read outside the watch, and the session waited for the server).
    let site = Site::private_two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("SELECT 1").await.unwrap();
    let metrics = &site.proxy.shared().metrics;
    let _frozen = Frozen::server(&site.dbs.edxapp).await;
    let read = format!(r#"SELECT `id` FROM `{OLD}` WHERE `state` = "frozen""#);
    let waiting = tokio::spawn(async move { edxapp.query_drop(read).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    waiting.abort();
    let _ = waiting.await;
    sessions_end_within(site.proxy.shared(), ENDS_WITHIN, "after its client left").await;
    assert_eq!(metrics.client_hangups(), 1);
}

#[tokio::test]
async fn a_client_that_hangs_up_during_a_commit_across_two_servers_has_both_sides_committed() {
    // Directly, a COMMIT the server has received is carried out whatever its client does next. Across two servers
    // the csmh side commits first: a hang-up while it does must not keep the edxapp side from committing.
    let site = Site::private_two_servers(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("BEGIN").await.unwrap();
    edxapp.query_drop("INSERT INTO auth_user (id, username) VALUES (77, 'committer')").await.unwrap();
    edxapp.query_drop(edxapp_insert(5, "committed")).await.unwrap();
    let frozen = Frozen::server(&site.dbs.csmh).await;
    let committing = tokio::spawn(async move { edxapp.query_drop("COMMIT").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    committing.abort();
    let _ = committing.await;
    drop(frozen);
    sessions_end_within(site.proxy.shared(), ENDS_WITHIN, "after the server woke").await;

    let user: Option<String> = site
        .root()
        .await
        .query_first(format!("SELECT username FROM `{}`.auth_user WHERE id = 77", site.dbs.edxapp_db))
        .await
        .unwrap();
    assert_eq!(user.as_deref(), Some("committer"), "edxapp's side committed with the csmh side's");
    let states: Vec<String> = site
        .csmh_root()
        .await
        .query(format!("SELECT state FROM {} WHERE student_module_id = 5", site.extended()))
        .await
        .unwrap();
    assert_eq!(states, ["committed"]);
}

#[tokio::test]
async fn a_client_that_hangs_up_while_a_write_of_both_tables_commits_has_it_committed_on_both() {
    // An autocommit UPDATE of both tables runs in a transaction of the proxy's own on each server, the csmh side
    // committing first. The client hangs up once the csmh server has committed and its answer is held back: the
    // edxapp side must commit too (checked: before, the request was abandoned there, and edxapp rolled back).
    let (site, relay) = CommitAnswersHeld::in_front_of_csmh(None).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(edxapp_insert(1, "extended")).await.unwrap();
    let update = format!("UPDATE `{OLD}` SET `state` = 'updated' WHERE `student_module_id` = 1");
    let writing = tokio::spawn(async move { edxapp.query_drop(update).await });
    relay.answer_held().await;
    writing.abort();
    let _ = writing.await;
    // Ample time for the proxy to notice the hang-up (it looks 20 ms into a request).
    tokio::time::sleep(Duration::from_millis(500)).await;
    relay.release();
    sessions_end_within(site.proxy.shared(), ENDS_WITHIN, "after the csmh server's answer came").await;

    let updated = |table: String| {
        format!("SELECT COUNT(*), COUNT(IF(state = 'updated', 1, NULL)) FROM {table} WHERE student_module_id = 1")
    };
    let extended: Option<(u64, u64)> = site.csmh_root().await.query_first(updated(site.extended())).await.unwrap();
    assert_eq!(extended, Some((1, 1)), "the csmh side committed");
    let old: Option<(u64, u64)> = site.root().await.query_first(updated(site.old())).await.unwrap();
    assert!(old.is_some_and(|(rows, updated)| rows > 0 && updated == rows), "edxapp's side committed too: {old:?}");
}

/// Waits until no session of the proxy whose state is `shared` is open, at most `limit` (`when` says since what).
async fn sessions_end_within(shared: &csmh_proxy::state::ProxyState, limit: Duration, when: &str) {
    let started = Instant::now();
    while shared.metrics.connections_open() > 0 {
        assert!(started.elapsed() < limit, "a session still open {limit:?} {when}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
