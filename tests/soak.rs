//! A soak run: the proxy binary across two servers of the test's own, edxapp-like clients (a new connection per
//! request, a history INSERT, a read of the learner's history, an UPDATE of both tables), and faults injected
//! on a schedule: the proxy's `csmh` connections killed, the `csmh` server frozen past the proxy's read
//! timeout, the clients' `edxapp` connections killed, and the flags flipped in `proxy.toml` while it runs.
//!
//! What must hold, and is asserted: every INSERT the proxy acknowledged is in the history exactly once (one
//! that failed may or may not be there, as with any lost connection, but never twice); the proxy answers
//! afterwards and exits cleanly. What it reports: statements and errors by code, the longest wait for an
//! answer and for an error, and the proxy's resident memory. Timing is reported, never asserted.
//!
//! Ignored by default; run it with `cargo test --release --test soak -- --ignored --nocapture`. It lasts
//! `CSMH_SOAK_SECS` seconds (default 120).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use csmh_proxy::history::Stage;
use csmh_proxy::sandbox::MariaDb;
use mysql_async::prelude::*;
use mysql_async::{Conn, Error};
use support::EdxDatabases;
use support::edx::{edxapp_insert, edxapp_read};

const WORKERS: u64 = 6;
const FAULT_EVERY: Duration = Duration::from_secs(5);
const FREEZE_FOR: Duration = Duration::from_secs(3);
const CSMH_TIMEOUT_SECS: u64 = 2;

/// What the clients saw.
#[derive(Default)]
struct Tally {
    /// Statements by outcome: "ok" or the error code.
    outcomes: BTreeMap<String, u64>,
    /// The longest wait for an answer, by outcome.
    longest: BTreeMap<String, Duration>,
    /// The states of acknowledged INSERTs.
    acknowledged: Vec<String>,
}

impl Tally {
    fn record(&mut self, took: Duration, result: &Result<(), Error>) {
        let outcome = match result {
            Ok(()) => "ok".to_owned(),
            Err(Error::Server(e)) => e.code.to_string(),
            Err(other) => format!("client: {}", kind_of(other)),
        };
        *self.outcomes.entry(outcome.clone()).or_default() += 1;
        let longest = self.longest.entry(outcome).or_default();
        *longest = (*longest).max(took);
    }
}

fn kind_of(error: &Error) -> &'static str {
    match error {
        Error::Io(_) => "io",
        Error::Driver(_) => "driver",
        Error::Url(_) => "url",
        _ => "other",
    }
}

fn proxy_toml(dbs: &EdxDatabases, listen: SocketAddr, stage: Stage) -> String {
    let mut toml = dbs.proxy_toml(stage.flags());
    toml.listen = listen;
    toml.render().replacen(
        "[backends.csmh]\n",
        &format!(
            "[backends.csmh]\nread_timeout_secs = {CSMH_TIMEOUT_SECS}\nconnect_timeout_secs = {CSMH_TIMEOUT_SECS}\n"
        ),
        1,
    )
}

fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn resident_kib(pid: u32) -> u64 {
    support::memory::status_kib(pid, "VmRSS")
}

/// One edxapp-like request: connect, write a history row, read the learner's history, update its grade.
async fn request(address: SocketAddr, database: &str, module: u64, state: &str, tally: &Mutex<Tally>) {
    let started = Instant::now();
    let conn = Conn::new(support::app().opts(address, Some(database))).await;
    let mut conn = match conn {
        Ok(conn) => conn,
        Err(error) => return tally.lock().unwrap().record(started.elapsed(), &Err(error)),
    };
    let steps = [
        edxapp_insert(module, state),
        edxapp_read(&module.to_string()),
        format!("UPDATE courseware_studentmodulehistory SET grade = 1 WHERE student_module_id = {module}"),
    ];
    for (n, sql) in steps.iter().enumerate() {
        let started = Instant::now();
        let result = conn.query_drop(sql).await;
        let mut tally = tally.lock().unwrap();
        tally.record(started.elapsed(), &result);
        if n == 0 && result.is_ok() {
            tally.acknowledged.push(state.to_owned());
        }
    }
    let _ = conn.disconnect().await;
}

/// Kills the connections of `user` on `server`, except the killer's own.
async fn kill_connections(server: &MariaDb, user: &str) -> usize {
    let mut root = support::root_conn(server).await;
    let threads: Vec<u64> = root
        .query(format!("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{user}' AND ID <> CONNECTION_ID()"))
        .await
        .unwrap_or_default();
    for thread in &threads {
        let _ = root.query_drop(format!("KILL {thread}")).await;
    }
    threads.len()
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) with the pid of a server this test started.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

async fn states(server: &MariaDb, table: &str) -> Vec<String> {
    let mut root = support::root_conn(server).await;
    root.query(format!("SELECT state FROM {table} WHERE state LIKE 'soak-%'")).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a soak run of minutes; see the module's documentation"]
async fn soak_with_faults_on_a_schedule() {
    let seconds = std::env::var("CSMH_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(120);
    let dbs = EdxDatabases::private_two_servers().await;
    dbs.create_edx_schema(true).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    let address = free_address();
    std::fs::write(&path, proxy_toml(&dbs, address, Stage::ExtendedTableReadingBoth)).unwrap();
    let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
    let mut proxy = tokio::process::Command::new(env!("CARGO_BIN_EXE_csmh-proxy"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = proxy.id().unwrap();
    wait_until_listening(address).await;
    let idle_kib = resident_kib(pid);

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let (tally, database) = (Arc::clone(&tally), dbs.edxapp_db.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < deadline {
                n += 1;
                request(address, &database, 100 + worker, &format!("soak-{worker}-{n}"), &tally).await;
            }
        }));
    }

    let mut faults: HashMap<&str, u64> = HashMap::new();
    let mut peak_kib = idle_kib;
    let mut round = 0;
    while Instant::now() + FAULT_EVERY < deadline {
        tokio::time::sleep(FAULT_EVERY).await;
        peak_kib = peak_kib.max(resident_kib(pid));
        round += 1;
        let fault = match round % 4 {
            0 => {
                kill_connections(&dbs.csmh, &support::app().user).await;
                "csmh connections killed"
            }
            1 => {
                signal(dbs.csmh.pid(), libc::SIGSTOP);
                tokio::time::sleep(FREEZE_FOR).await;
                signal(dbs.csmh.pid(), libc::SIGCONT);
                "csmh server frozen"
            }
            2 => {
                kill_connections(&dbs.edxapp, &support::app().user).await;
                "edxapp connections killed"
            }
            _ => {
                let stage = match round % 8 {
                    3 => Stage::ExtendedTableOnlyReads,
                    _ => Stage::ExtendedTableReadingBoth,
                };
                std::fs::write(&path, proxy_toml(&dbs, address, stage)).unwrap();
                "flags flipped"
            }
        };
        *faults.entry(fault).or_default() += 1;
    }
    for worker in workers {
        worker.await.unwrap();
    }
    peak_kib = peak_kib.max(resident_kib(pid));

    let mut after = Conn::new(support::app().opts(address, Some(&dbs.edxapp_db))).await.expect("the proxy answers");
    let one: Option<i64> = after.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    after.disconnect().await.unwrap();

    let mut stored: HashMap<String, u64> = HashMap::new();
    let tables = [(&dbs.edxapp, dbs.old_table()), (&dbs.csmh, dbs.extended_table())];
    for (server, table) in tables {
        for state in states(server, &table).await {
            *stored.entry(state).or_default() += 1;
        }
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let duplicated: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
    let missing: Vec<_> = tally.acknowledged.iter().filter(|state| !stored.contains_key(*state)).collect();

    signal(pid, libc::SIGTERM);
    let status = tokio::time::timeout(Duration::from_secs(30), proxy.wait()).await.expect("the proxy stops").unwrap();
    report(seconds, &faults, &tally, (missing.len(), duplicated.len()), (idle_kib, peak_kib));
    if !missing.is_empty() || !duplicated.is_empty() {
        let log = std::fs::read_to_string(dir.path().join("proxy.log")).unwrap_or_default();
        eprintln!("proxy log (last lines):\n{}", log.lines().rev().take(40).collect::<Vec<_>>().join("\n"));
    }
    assert!(missing.is_empty(), "acknowledged INSERTs missing: {missing:?}");
    assert!(duplicated.is_empty(), "rows written twice: {duplicated:?}");
    assert!(status.success(), "the proxy exits cleanly: {status}");
}

async fn wait_until_listening(address: SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the proxy does not listen on {address}");
}

fn report(
    seconds: u64,
    faults: &HashMap<&str, u64>,
    tally: &Tally,
    (missing, duplicated): (usize, usize),
    (idle, peak): (u64, u64),
) {
    println!("soak: {seconds} s, {WORKERS} clients, faults every {} s: {faults:?}", FAULT_EVERY.as_secs());
    let acknowledged = tally.acknowledged.len();
    println!("acknowledged INSERTs: {acknowledged}, missing: {missing}; rows stored twice: {duplicated}");
    for (outcome, count) in &tally.outcomes {
        let longest = tally.longest[outcome];
        println!("  {outcome:>10}: {count:>7} statements, longest wait {:.3} s", longest.as_secs_f64());
    }
    println!("proxy resident memory: {idle} KiB idle, {peak} KiB at most");
}
