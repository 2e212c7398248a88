//! sysbench's OLTP workloads through the proxy: point selects from four threads with server-side prepared
//! statements (COM_STMT_PREPARE / EXECUTE, checked on the server's counters) and with text queries, and
//! read-write transactions with prepared statements, from four threads and, with every kind of write, from one.
//! Tables are prepared directly on the server; each run is a fixed number of events and must end with no error
//! and no reconnect, having run exactly the queries and transactions those events imply.

mod support;

use std::net::SocketAddr;

use mysql_async::prelude::Queryable;
use support::MariaDb;
use support::clients::{self, ProxiedDatabase};
use support::packages;

/// Rows of the one table the workloads use.
const TABLE_SIZE: u32 = 1000;

/// The counters of sysbench's "SQL statistics" and "General statistics" sections.
#[derive(Debug, PartialEq, Eq)]
struct Report {
    read: u64,
    write: u64,
    other: u64,
    total: u64,
    transactions: u64,
    queries: u64,
    ignored_errors: u64,
    reconnects: u64,
    events: u64,
}

/// The queries one event of a workload runs, by sysbench's kind.
#[derive(Debug, Clone, Copy)]
struct PerEvent {
    read: u64,
    write: u64,
    other: u64,
}

/// `oltp_point_select`: one primary-key lookup, no transaction around it.
const POINT_SELECT: PerEvent = PerEvent { read: 1, write: 0, other: 0 };

/// `oltp_read_write` with its default options: BEGIN; ten point selects and four range queries; an index UPDATE,
/// a non-index UPDATE, a DELETE and an INSERT; COMMIT.
const READ_WRITE: PerEvent = PerEvent { read: 14, write: 4, other: 2 };

impl Report {
    /// The report of `events` events that each ran `per_event`, with no error, one transaction each.
    fn expected(events: u64, per_event: PerEvent) -> Report {
        let (read, write, other) = (events * per_event.read, events * per_event.write, events * per_event.other);
        let total = read + write + other;
        Report {
            read,
            write,
            other,
            total,
            transactions: events,
            queries: total,
            ignored_errors: 0,
            reconnects: 0,
            events,
        }
    }

    /// Reads the counters from sysbench's output; panics, quoting it, when one is missing.
    fn parse(output: &str) -> Report {
        let counter = |label: &str| -> u64 {
            let line = output.lines().map(str::trim).find(|line| line.starts_with(label));
            let number = line.and_then(|line| line[label.len()..].split_whitespace().next());
            number
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no `{label}` in sysbench's output:\n{output}"))
        };
        Report {
            read: counter("read:"),
            write: counter("write:"),
            other: counter("other:"),
            total: counter("total:"),
            transactions: counter("transactions:"),
            queries: counter("queries:"),
            ignored_errors: counter("ignored errors:"),
            reconnects: counter("reconnects:"),
            events: counter("total number of events:"),
        }
    }
}

/// A sysbench workload and the options that shape it.
struct Workload {
    /// The bundled Lua script: `oltp_point_select`, `oltp_read_write`.
    name: &'static str,
    /// `--db-ps-mode`: `auto` for server-side prepared statements, `disable` for text queries.
    ps_mode: &'static str,
    /// Client threads.
    threads: u32,
    /// Further options of the workload.
    options: &'static [&'static str],
}

impl Workload {
    /// sysbench running this workload with `command` (`prepare`, `run`) against `addr`.
    fn sysbench(&self, addr: SocketAddr, database: &str, command: &str) -> tokio::process::Command {
        let account = support::app();
        let program = packages::find_program("sysbench").unwrap_or_else(|| "sysbench".into());
        let mut sysbench = tokio::process::Command::new(program);
        sysbench
            .arg(self.name)
            .args(["--db-driver=mysql", "--mysql-host=127.0.0.1"])
            .arg(format!("--mysql-port={}", addr.port()))
            .arg(format!("--mysql-user={}", account.user))
            .arg(format!("--mysql-password={}", account.password))
            .arg(format!("--mysql-db={database}"))
            .arg(format!("--db-ps-mode={}", self.ps_mode))
            .args(["--tables=1", &format!("--table-size={TABLE_SIZE}")])
            .args(self.options)
            .arg(command)
            .kill_on_drop(true);
        sysbench
    }

    /// Prepares the table directly on the server, runs `events` events through the proxy, and returns the report
    /// of a run that must have succeeded with no error and no reconnect.
    async fn run_through_proxy(&self, events: u64) -> Report {
        let database = ProxiedDatabase::new().await;
        clients::blocking(|| packages::ensure_packages(&["sysbench"])).await;
        clients::run_ok(&mut self.sysbench(database.direct(), database.name(), "prepare")).await;
        let mut run = self.sysbench(database.proxy(), database.name(), "run");
        run.arg(format!("--threads={}", self.threads)).arg(format!("--events={events}")).arg("--time=0");
        let executions_before = statement_executions(database.server()).await;
        let output = clients::run_ok(&mut run).await;
        let report = Report::parse(&clients::text(&output.stdout));
        assert_eq!((report.ignored_errors, report.reconnects), (0, 0), "errors or reconnects: {report:?}");
        assert_eq!(report.events, events, "{report:?}");
        if self.ps_mode == "auto" {
            let executions = statement_executions(database.server()).await - executions_before;
            let statements = report.read + report.write;
            assert!(executions >= statements, "{statements} statements, {executions} COM_STMT_EXECUTE: {report:?}");
        }
        report
    }
}

/// How many COM_STMT_EXECUTE the server has run, for every client (other tests only add to it).
async fn statement_executions(server: &MariaDb) -> u64 {
    let mut root = support::root_conn(server).await;
    let row: Option<(String, u64)> =
        root.query_first("SHOW GLOBAL STATUS LIKE 'Com_stmt_execute'").await.expect("SHOW STATUS");
    row.expect("Com_stmt_execute").1
}

#[tokio::test(flavor = "multi_thread")]
async fn point_selects_with_server_side_prepared_statements() {
    let workload = Workload { name: "oltp_point_select", ps_mode: "auto", threads: 4, options: &[] };
    assert_eq!(workload.run_through_proxy(2000).await, Report::expected(2000, POINT_SELECT));
}

#[tokio::test(flavor = "multi_thread")]
async fn point_selects_with_text_queries() {
    let workload = Workload { name: "oltp_point_select", ps_mode: "disable", threads: 4, options: &[] };
    assert_eq!(workload.run_through_proxy(2000).await, Report::expected(2000, POINT_SELECT));
}

#[tokio::test(flavor = "multi_thread")]
async fn read_write_transactions_with_server_side_prepared_statements() {
    // One locking write per transaction, so that four threads cannot deadlock (InnoDB would roll a transaction
    // back and sysbench would count an ignored error): the UPDATE of a random row by primary key.
    let options = &["--index-updates=0", "--non-index-updates=1", "--delete-inserts=0"];
    let workload = Workload { name: "oltp_read_write", ps_mode: "auto", threads: 4, options };
    let per_transaction = PerEvent { write: 1, ..READ_WRITE };
    assert_eq!(workload.run_through_proxy(300).await, Report::expected(300, per_transaction));
}

#[tokio::test(flavor = "multi_thread")]
async fn read_write_transactions_with_every_kind_of_write() {
    // Every write of the workload (index and non-index UPDATE, DELETE, INSERT) on one thread, which cannot deadlock.
    let workload = Workload { name: "oltp_read_write", ps_mode: "auto", threads: 1, options: &[] };
    assert_eq!(workload.run_through_proxy(200).await, Report::expected(200, READ_WRITE));
}
