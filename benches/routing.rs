//! Benchmark 3 of issue 5: the latency of edxapp's history read under each route, through the proxy and
//! directly.
//!
//! edxapp reads a module's history with the text protocol and a literal:
//! `SELECT <the 7 columns> FROM courseware_studentmodulehistory WHERE student_module_id = 123 ORDER BY id DESC`.
//! Two MariaDB servers hold 200,000 history rows of 50,000 modules (four per module: three old attempts in the
//! old table on server A, the newest in the extended table, and every tenth old row also copied there, as the
//! migration does), the extended table both on A (one server) and on B (two servers), and on A a third
//! database, `edxapp_all`, with one old-layout table holding every row once. Each target runs the read for
//! the same modules, one connection each, one statement at a time:
//!
//! - `direct_all`: directly on A, on the one table holding both tables' rows (the baseline);
//! - `direct_old`, `direct_ext_a`, `direct_ext_b`: directly, the old table on A and the extended table on A and
//!   on B (the backends' own latencies for the same query);
//! - `settings_a`: directly on A, the session-settings read the proxy sends before each statement that uses
//!   its separate `csmh` connection (a sub-step of `fanout_two`);
//! - `sql_*`: directly, the statements the proxy sends instead (taken from `Router::route`): the rewrite's,
//!   the `UNION ALL` read, and each side of the merge — what the server's share of each route costs; and
//!   `sql_aliased_a`, the rewrite done without a derived table, for comparison;
//! - `relay`, `relay_settings`: through a plain tokio TCP relay (`copy_bidirectional`) on the proxies'
//!   runtime — what two extra loopback hops cost without any proxy logic;
//! - `passthrough`, `passthrough_settings`: through the proxy with every flag off, on `edxapp_all`;
//! - `rewrite`: through the proxy, `ENABLE_CSMH_EXTENDED` only (read from the extended table on A);
//! - `fanout_one`: reading-both flags, both tables on A (both statements sent together on the client's
//!   connection, merged in the proxy);
//! - `fanout_two`: reading-both flags, the extended table on B (both read concurrently, merged in the proxy);
//! - `net_direct_all`, `net_passthrough`, `net_fanout_one`, `net_fanout_two`: the same with the servers across a
//!   network, a delay line of [`NETWORK_RTT`] before each (`support::delay`), as in production, where a round trip
//!   to the server costs more than the proxy's work.
//!
//! Targets are interleaved: each round runs every target in turn (rotating which goes first), so machine noise
//! falls on all alike; one round is a warm-up. Results are checked first (every route returns what the
//! one-table read returns). The proxies run in this process on a tokio runtime of their own (two workers, as
//! the binary's), the client on another; `cargo bench` builds both with the release profile.
//!
//! Run: `cargo bench --bench routing` (root installs MariaDB with apt-get if missing). It prints Markdown
//! tables for `benches/RESULTS.md`: latencies, ratios, and the server's counters for each direct statement.
//! The bench takes the machine-wide lock `/tmp/csmh-bench.lock` for its whole run so no other benchmark
//! measures at the same time (do not wrap it in `flock(1)` on that file).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use csmh_proxy::history::Flags;
use csmh_proxy::routing::{FanOut, Route, Router};
use csmh_proxy::sandbox::{
    Account, CSMH_DB, EDXAPP_DB, EXTENDED_TABLE, MariaDb, OLD_TABLE, ProxyToml, create_edxapp_tables,
    create_extended_table,
};
use csmh_proxy::server::{Proxy, ProxyHandle};
use csmh_proxy::state::ConfigSnapshot;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use tokio::runtime::Runtime;

/// Modules with history.
const MODULES: u32 = 50_000;
/// History rows of each module in the old table; one more is in the extended table.
const OLD_ATTEMPTS: u32 = 3;
/// Every this many old rows, one is also copied to the extended table (same id).
const COPY_EVERY: u32 = 10;
/// The extended table's ids start this far above the old ones (edx-platform's offset).
const EXTENDED_OFFSET: u32 = 10_000;
/// The database with one table holding both tables' rows, once each.
const ALL_DB: &str = "edxapp_all";
/// Measured rounds (plus one warm-up round).
const ROUNDS: usize = 20;
/// Reads per target per round.
const READS_PER_ROUND: usize = 250;

/// What a target's connection sends for a module.
#[derive(Clone)]
enum Statement {
    /// edxapp's history read of the old table's name.
    History,
    /// The same read of the extended table, as its own server would be asked.
    Extended,
    /// The proxy's session-settings read.
    Settings,
    /// edxapp's read with the extended table put in place of the old one under the old name
    /// (`FROM edxapp_csmh.… AS courseware_studentmodulehistory`): a rewrite without a derived table.
    Aliased,
    /// What the proxy sends for edxapp's history read under `router`'s flags: the part `part` of its route.
    Routed(Box<Router>, Part),
}

/// A statement the router makes of edxapp's history read.
#[derive(Clone, Copy)]
enum Part {
    /// The read rewritten to the extended table.
    Rewritten,
    /// The `UNION ALL` read of both tables on one server.
    Union,
    /// The old table's side of a merged read.
    MergeOld,
    /// The extended table's side of a merged read.
    MergeExtended,
}

impl Statement {
    fn sql(&self, module: u32) -> String {
        match self {
            Statement::History => history_read(OLD_TABLE, module),
            Statement::Extended => history_read(EXTENDED_TABLE, module),
            Statement::Settings => SETTINGS.to_owned(),
            Statement::Aliased => history_read(OLD_TABLE, module).replacen(
                &format!("FROM `{OLD_TABLE}`"),
                &format!("FROM `{CSMH_DB}`.`{EXTENDED_TABLE}` AS `{OLD_TABLE}`"),
                1,
            ),
            Statement::Routed(router, part) => routed(router, *part, module),
        }
    }
}

/// The statement the proxy sends for edxapp's read of `module`, as `part` names it.
fn routed(router: &Router, part: Part, module: u32) -> String {
    let read = history_read(OLD_TABLE, module);
    let route = match part {
        Part::Union => router.route_prepared(read.as_bytes()),
        _ => router.route(read.as_bytes()),
    };
    let sql = match (part, route) {
        (Part::Rewritten, Route::Rewrite(rewritten)) => rewritten.sql,
        (Part::Union, Route::FanOut(FanOut::Union(sql))) => sql,
        (Part::MergeOld, Route::FanOut(FanOut::Merge(read))) => read.old,
        (Part::MergeExtended, Route::FanOut(FanOut::Merge(read))) => read.extended,
        (_, route) => panic!("unexpected route {route:?}"),
    };
    String::from_utf8(sql).expect("the statements are ASCII")
}

/// The statement `session/csmh.rs` sends on the client's connection before a statement on the `csmh` server.
const SETTINGS: &str = "SELECT @@session.character_set_client, @@session.character_set_connection, \
    @@session.character_set_results, @@session.collation_connection, @@session.time_zone, @@session.sql_mode, \
    @@session.autocommit, @@session.tx_isolation";

/// edxapp's history read of one module, as Django writes it (`filter(student_module_id=…).order_by('-id')`).
fn history_read(table: &str, module: u32) -> String {
    let columns = ["id", "version", "created", "state", "grade", "max_grade", "student_module_id"];
    let columns: Vec<String> = columns.iter().map(|c| format!("`{table}`.`{c}`")).collect();
    format!(
        "SELECT {} FROM `{table}` WHERE `{table}`.`student_module_id` = {module} ORDER BY `{table}`.`id` DESC",
        columns.join(", ")
    )
}

/// One thing measured: a connection and the statement it runs.
struct Target {
    name: &'static str,
    /// Where the statement goes, for the report.
    what: &'static str,
    conn: Conn,
    statement: Statement,
    /// Every measured latency.
    samples: Vec<Duration>,
    /// Each measured round's median, in microseconds.
    round_p50: Vec<f64>,
}

/// The two servers and the proxies in front of them.
struct Site {
    a: MariaDb,
    b: MariaDb,
    /// Delay lines of [`NETWORK_RTT`] before A and B, for the targets whose servers are across a network.
    a_far: DelayLine,
    b_far: DelayLine,
    proxies: Vec<(&'static str, ProxyHandle)>,
    /// A plain TCP relay to A on the proxies' runtime, for comparison.
    relay: Option<SocketAddr>,
}

mod support;
use support::BenchLock;
use support::delay::DelayLine;

/// The round trip of the network before the servers of the `net_` targets: a server near its clients.
const NETWORK_RTT: Duration = Duration::from_micros(250);

fn main() {
    let _lock = BenchLock::acquire();
    let client = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("client runtime");
    let proxy_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("proxy")
        .enable_all()
        .build()
        .expect("proxy runtime");
    let site = client.block_on(prepare_servers());
    let site = start_proxies(&proxy_runtime, site);
    let mut targets = client.block_on(connect_targets(&site));
    client.block_on(check_results(&mut targets));
    client.block_on(run_rounds(&mut targets));
    print_report(&targets);
    client.block_on(print_server_work(&mut targets));
    client.block_on(print_versions(&site));
    drop(targets);
    shutdown(&proxy_runtime, site);
}

// ---------------------------------------------------------------------------------------------------------------
// Servers and data

/// Starts both servers with the app account, the tables and the history rows.
async fn prepare_servers() -> Site {
    let (a, b) = tokio::try_join!(MariaDb::start(), MariaDb::start()).expect("start MariaDB");
    let app = Account::app();
    a.create_account(&app, &[EDXAPP_DB, CSMH_DB, ALL_DB]).await.expect("account on A");
    b.create_account(&app, &[CSMH_DB]).await.expect("account on B");
    let (mut on_a, mut on_b) = (root(&a).await, root(&b).await);
    for conn in [&mut on_a, &mut on_b] {
        conn.query_drop("SET GLOBAL innodb_buffer_pool_size = 256 * 1024 * 1024").await.expect("buffer pool");
    }
    let next_id = OLD_ATTEMPTS * MODULES + EXTENDED_OFFSET + MODULES + 1;
    create_edxapp_tables(&mut on_a, EDXAPP_DB).await.expect("edxapp tables");
    create_edxapp_tables(&mut on_a, ALL_DB).await.expect("edxapp_all tables");
    create_extended_table(&mut on_a, CSMH_DB, next_id.into()).await.expect("extended table on A");
    create_extended_table(&mut on_b, CSMH_DB, next_id.into()).await.expect("extended table on B");
    fill_old(&mut on_a).await;
    fill_extended(&mut on_a).await;
    fill_extended(&mut on_b).await;
    fill_all(&mut on_a).await;
    warm(&mut on_a, &[EDXAPP_DB, ALL_DB], &[CSMH_DB]).await;
    warm(&mut on_b, &[], &[CSMH_DB]).await;
    let a_far = DelayLine::start(a.addr(), NETWORK_RTT).expect("a delay line before A");
    let b_far = DelayLine::start(b.addr(), NETWORK_RTT).expect("a delay line before B");
    Site { a, b, a_far, b_far, proxies: Vec::new(), relay: None }
}

async fn root(server: &MariaDb) -> Conn {
    Conn::new(server.root_opts()).await.expect("root logs in")
}

/// The state JSON a problem's XBlock saves, for attempt `attempt` (an SQL expression).
fn state_sql(attempt: &str) -> String {
    format!(
        "CONCAT('{{\"seed\": 1, \"attempts\": ', {attempt}, ', \"done\": true, \"student_answers\": {{\"2_1\": \
         \"choice_', {attempt}, '\"}}, \"correct_map\": {{\"2_1\": {{\"correctness\": \"correct\", \"npoints\": \
         null}}}}, \"last_submission_time\": \"2024-03-04T10:00:07Z\"}}')"
    )
}

/// The old table's rows: attempt `a` of module `m` has id `a * MODULES + m`, oldest attempts first.
async fn fill_old(conn: &mut Conn) {
    for attempt in 0..OLD_ATTEMPTS {
        let sql = format!(
            "INSERT INTO `{EDXAPP_DB}`.`{OLD_TABLE}` (id, version, created, state, grade, max_grade, \
             student_module_id) SELECT {attempt} * {MODULES} + seq, NULL, \
             '2024-03-04 10:00:00' + INTERVAL {attempt} DAY + INTERVAL seq SECOND, {}, {attempt}, 1, seq \
             FROM `{EDXAPP_DB}`.seq_1_to_{MODULES}",
            state_sql(&attempt.to_string())
        );
        conn.query_drop(sql).await.expect("fill the old table");
    }
}

/// The extended table's rows: each module's newest attempt, above the old ids, and the copies of every
/// [`COPY_EVERY`]th old row (same id, as the migration copies them). Identical on both servers.
async fn fill_extended(conn: &mut Conn) {
    let table = format!("`{CSMH_DB}`.`{EXTENDED_TABLE}`");
    let columns = "(version, created, state, grade, max_grade, id, student_module_id)";
    let newest = format!(
        "INSERT INTO {table} {columns} SELECT NULL, '2024-03-04 10:00:00' + INTERVAL {OLD_ATTEMPTS} DAY + INTERVAL \
         seq SECOND, {}, 1, 1, {} + seq, seq FROM `{CSMH_DB}`.seq_1_to_{MODULES}",
        state_sql(&OLD_ATTEMPTS.to_string()),
        OLD_ATTEMPTS * MODULES + EXTENDED_OFFSET
    );
    let total = OLD_ATTEMPTS * MODULES;
    let copies = format!(
        "INSERT INTO {table} {columns} SELECT NULL, '2024-03-04 10:00:00' + INTERVAL (seq - 1) DIV {MODULES} DAY + \
         INTERVAL (seq - 1) % {MODULES} + 1 SECOND, {}, (seq - 1) DIV {MODULES}, 1, seq, (seq - 1) % {MODULES} + 1 \
         FROM `{CSMH_DB}`.seq_{COPY_EVERY}_to_{total}_step_{COPY_EVERY}",
        state_sql(&format!("(seq - 1) DIV {MODULES}"))
    );
    conn.query_drop(newest).await.expect("fill the extended table");
    conn.query_drop(copies).await.expect("copy old rows to the extended table");
}

/// The one table holding both tables' rows: the extended table's, and the old rows it has no copy of.
async fn fill_all(conn: &mut Conn) {
    let (old, extended) = (format!("`{EDXAPP_DB}`.`{OLD_TABLE}`"), format!("`{CSMH_DB}`.`{EXTENDED_TABLE}`"));
    let columns = "id, version, created, state, grade, max_grade, student_module_id";
    conn.query_drop(format!(
        "INSERT INTO `{ALL_DB}`.`{OLD_TABLE}` ({columns}) SELECT {columns} FROM {extended} UNION ALL \
         SELECT {columns} FROM {old} o WHERE NOT EXISTS (SELECT 1 FROM {extended} e WHERE e.id = o.id)"
    ))
    .await
    .expect("fill the one-table copy");
}

/// Updates the statistics and reads every page of the history tables (rows and the module index) into the
/// buffer pool.
async fn warm(conn: &mut Conn, old_layout: &[&str], extended: &[&str]) {
    let tables = old_layout.iter().map(|db| format!("`{db}`.`{OLD_TABLE}`"));
    let tables = tables.chain(extended.iter().map(|db| format!("`{db}`.`{EXTENDED_TABLE}`")));
    for table in tables {
        conn.query_drop(format!("ANALYZE TABLE {table}")).await.expect("analyze");
        conn.query_drop(format!("SELECT SUM(LENGTH(state)) FROM {table}")).await.expect("warm the rows");
        conn.query_drop(format!("SELECT SUM(student_module_id) FROM {table} WHERE student_module_id > 0"))
            .await
            .expect("warm the module index");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Proxies and targets

/// The flags of each proxy: every flag off, the extended table only, reading both tables (twice: one server and
/// two).
fn proxy_configs(site: &Site) -> Vec<(&'static str, ProxyToml)> {
    let any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let flags = |extended, reading_both| Flags {
        enable_csmh_extended: extended,
        enable_reading_from_multiple_history_tables: reading_both,
        read_only_from_csmhe: false,
    };
    let toml = |flags, a, b| ProxyToml { flags, ..ProxyToml::edx(any_port, a, b) };
    let (a, b, a_far, b_far) = (site.a.addr(), site.b.addr(), site.a_far.addr, site.b_far.addr);
    vec![
        ("passthrough", toml(Flags::default(), a, a)),
        ("rewrite", toml(flags(true, false), a, a)),
        ("fanout_one", toml(flags(true, true), a, a)),
        ("fanout_two", toml(flags(true, true), a, b)),
        ("net_passthrough", toml(Flags::default(), a_far, a_far)),
        ("net_fanout_one", toml(flags(true, true), a_far, a_far)),
        ("net_fanout_two", toml(flags(true, true), a_far, b_far)),
    ]
}

/// Starts one proxy per configuration on `runtime`.
fn start_proxies(runtime: &Runtime, mut site: Site) -> Site {
    for (name, toml) in proxy_configs(&site) {
        let config = toml.config().expect("the bench's proxy.toml is valid");
        let proxy = runtime.block_on(async { Proxy::bind(config).await.expect("the proxy binds").spawn() });
        site.proxies.push((name, proxy));
    }
    site.relay = Some(runtime.block_on(start_relay(site.a.addr())));
    site
}

/// A TCP relay to `server` (tokio's `copy_bidirectional` per connection), for what two extra hops cost on
/// their own.
async fn start_relay(server: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("the relay binds");
    let addr = listener.local_addr().expect("a bound listener has an address");
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut upstream = tokio::net::TcpStream::connect(server).await?;
                let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
                tokio::io::copy_bidirectional(&mut client, &mut upstream).await
            });
        }
    });
    addr
}

/// Opens one connection per target, as edxapp's account, in the database edxapp would use.
async fn connect_targets(site: &Site) -> Vec<Target> {
    let app = Account::app();
    let proxy = |name: &str| site.proxies.iter().find(|(n, _)| *n == name).expect("a proxy of that name").1.addr();
    let relay = site.relay.expect("the relay runs");
    let router = |name: &str| {
        let toml = proxy_configs(site).into_iter().find(|(n, _)| *n == name).expect("a proxy of that name").1;
        let snapshot = ConfigSnapshot::compile(toml.config().expect("valid")).expect("compiles");
        Box::new(snapshot.router)
    };
    let routed = |name: &str, part| Statement::Routed(router(name), part);
    let (a, b) = (site.a.addr(), site.b.addr());
    use Statement::{Aliased, Extended, History, Settings};
    let plan: Vec<(&'static str, &'static str, SocketAddr, &str, Statement)> = vec![
        ("direct_all", "A, the one table holding both tables' rows (baseline)", a, ALL_DB, History),
        ("direct_old", "A, the old table", a, EDXAPP_DB, History),
        ("direct_ext_a", "A, the extended table", a, CSMH_DB, Extended),
        ("direct_ext_b", "B, the extended table", b, CSMH_DB, Extended),
        ("settings_a", "A, the proxy's session-settings read", a, EDXAPP_DB, Settings),
        ("sql_rewrite_a", "A, the rewrite's statement", a, EDXAPP_DB, routed("rewrite", Part::Rewritten)),
        ("sql_aliased_a", "A, the extended table under the old name (no derived table)", a, EDXAPP_DB, Aliased),
        (
            "sql_union_a",
            "A, the UNION ALL statement (prepared reads, fallback)",
            a,
            EDXAPP_DB,
            routed("fanout_one", Part::Union),
        ),
        ("sql_merge_old_a", "A, the merge's old side", a, EDXAPP_DB, routed("fanout_two", Part::MergeOld)),
        ("sql_merge_ext_b", "B, the merge's extended side", b, CSMH_DB, routed("fanout_two", Part::MergeExtended)),
        ("relay", "tokio TCP relay to A, one table", relay, ALL_DB, History),
        ("relay_settings", "tokio TCP relay to A, settings read", relay, ALL_DB, Settings),
        ("passthrough", "proxy, flags off, one table", proxy("passthrough"), ALL_DB, History),
        ("passthrough_settings", "proxy, flags off, settings read", proxy("passthrough"), ALL_DB, Settings),
        ("rewrite", "proxy, extended only (A)", proxy("rewrite"), EDXAPP_DB, History),
        ("fanout_one", "proxy, reading both, one server (pipelined merge)", proxy("fanout_one"), EDXAPP_DB, History),
        ("fanout_two", "proxy, reading both, two servers (merge)", proxy("fanout_two"), EDXAPP_DB, History),
        ("net_direct_all", "A across the network, one table", site.a_far.addr, ALL_DB, History),
        (
            "net_passthrough",
            "proxy, flags off, one table, across the network",
            proxy("net_passthrough"),
            ALL_DB,
            History,
        ),
        (
            "net_fanout_one",
            "proxy, reading both, one server across the network",
            proxy("net_fanout_one"),
            EDXAPP_DB,
            History,
        ),
        (
            "net_fanout_two",
            "proxy, reading both, two servers across the network",
            proxy("net_fanout_two"),
            EDXAPP_DB,
            History,
        ),
    ];
    let mut targets = Vec::new();
    for (name, what, addr, database, statement) in plan {
        let conn = Conn::new(app.opts(addr, Some(database))).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        targets.push(Target { name, what, conn, statement, samples: Vec::new(), round_p50: Vec::new() });
    }
    targets
}

/// Checks, for a few modules, that every route returns the ids the one-table read returns (and the rewrite
/// those of the extended table alone), so the bench measures correct answers.
async fn check_results(targets: &mut [Target]) {
    for module in [1, 10, 4_567, MODULES] {
        let mut ids = std::collections::HashMap::new();
        for target in targets.iter_mut().filter(|t| !matches!(t.statement, Statement::Settings)) {
            let sql = target.statement.sql(module);
            let got: Vec<u64> = target
                .conn
                .query_map(sql, |row: Row| row.get::<u64, _>(0).expect("an id"))
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", target.name));
            ids.insert(target.name, got);
        }
        let expect = |a: &str, b: &str| assert_eq!(ids[a], ids[b], "module {module}: {a} and {b} differ");
        for route in ["passthrough", "fanout_one", "fanout_two", "net_direct_all", "net_passthrough", "net_fanout_one"]
        {
            expect(route, "direct_all");
        }
        expect("net_fanout_two", "direct_all");
        expect("sql_union_a", "direct_all");
        expect("rewrite", "direct_ext_a");
        expect("sql_rewrite_a", "direct_ext_a");
        expect("sql_aliased_a", "direct_ext_a");
        expect("direct_ext_a", "direct_ext_b");
        assert_eq!(ids["direct_all"].len(), OLD_ATTEMPTS as usize + 1, "module {module}: four rows");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Measuring

/// The modules read in `round`: a fixed pseudo-random walk over all of them, the same for every target.
fn modules(round: usize) -> impl Iterator<Item = u32> {
    let mut x = 0x9E37_79B9_7F4A_7C15_u64 ^ (round as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    std::iter::repeat_with(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % u64::from(MODULES)) as u32 + 1
    })
    .take(READS_PER_ROUND)
}

/// Runs the warm-up round and [`ROUNDS`] measured rounds, each target in turn.
async fn run_rounds(targets: &mut [Target]) {
    for round in 0..=ROUNDS {
        for k in 0..targets.len() {
            let target = &mut targets[(round + k) % targets.len()];
            let mut samples = run_round(target, round).await;
            if round > 0 {
                target.samples.extend_from_slice(&samples);
                samples.sort_unstable();
                target.round_p50.push(quantile(&samples, 0.5));
            }
        }
    }
}

/// One round of one target: the latency of each read, as the client sees it (rows read and dropped).
async fn run_round(target: &mut Target, round: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(READS_PER_ROUND);
    for module in modules(round) {
        let sql = target.statement.sql(module);
        let started = Instant::now();
        target.conn.query_drop(sql).await.unwrap_or_else(|e| panic!("{}: {e}", target.name));
        samples.push(started.elapsed());
    }
    samples
}

/// The `q`-quantile of sorted samples, in microseconds.
fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index].as_secs_f64() * 1e6
}

// ---------------------------------------------------------------------------------------------------------------
// Report

/// Prints a Markdown table of each target's p50/p99 and its ratio to the one-table read, then the ratios the
/// targets of issue 5 are about.
fn print_report(targets: &[Target]) {
    let p50 = |name: &str| p(targets, name, 0.5);
    let baseline = p50("direct_all");
    println!("\n{ROUNDS} interleaved rounds x {READS_PER_ROUND} reads per target (plus one warm-up round)\n");
    println!("| target | what | p50 µs | p99 µs | rounds' p50 min–max µs | p50 / direct_all |");
    println!("|---|---|---:|---:|---:|---:|");
    for target in targets {
        let (median, p99) = (p50(target.name), p(targets, target.name, 0.99));
        let low = target.round_p50.iter().copied().fold(f64::INFINITY, f64::min);
        let high = target.round_p50.iter().copied().fold(0.0, f64::max);
        let ratio = median / baseline;
        println!("| {} | {} | {median:.0} | {p99:.0} | {low:.0}–{high:.0} | {ratio:.2} |", target.name, target.what);
    }
    let slower = p50("direct_old").max(p50("direct_ext_b"));
    println!(
        "\n- fanout_two p50 / slower backend's own p50 (max of direct_old, direct_ext_b = {slower:.0} µs): {:.2} (target ≤ 1.3)",
        p50("fanout_two") / slower
    );
    let sides = p50("sql_merge_old_a").max(p50("sql_merge_ext_b"));
    println!("- slower of the merge's two side statements, directly: {sides:.0} µs");
    let hops = p50("relay") - baseline;
    println!(
        "- two extra loopback hops (relay - direct_all): {hops:.0} µs; the proxy's own on top (passthrough - relay): {:.0} µs",
        p50("passthrough") - p50("relay")
    );
    let one = p50("direct_old").max(p50("direct_ext_a"));
    println!(
        "- fanout_one p50 / slower table's p50 on A (max of direct_old, direct_ext_a = {one:.0} µs): {:.2}",
        p50("fanout_one") / one
    );
    let rtt = NETWORK_RTT.as_micros();
    for (place, prefix) in [("on 127.0.0.1", ""), (&*format!("across a {rtt} µs network"), "net_")] {
        let over = |name: &str| p50(&format!("{prefix}{name}")) / p50(&format!("{prefix}passthrough"));
        println!(
            "- {place}: fanout_two / passthrough {:.2} (issue 15: ≤ 1.4), fanout_one / passthrough {:.2} (≤ 1.6)",
            over("fanout_two"),
            over("fanout_one")
        );
    }
}

/// The `q`-quantile of every sample of the target `name`, in microseconds.
fn p(targets: &[Target], name: &str, q: f64) -> f64 {
    let target = targets.iter().find(|t| t.name == name).expect("a target of that name");
    let mut sorted = target.samples.clone();
    sorted.sort_unstable();
    quantile(&sorted, q)
}

/// What the server does for each direct statement, from its session counters around one run: rows read by
/// index and by position, rows sorted, internal temporary tables (on disk: Aria, because of the LONGTEXT).
async fn print_server_work(targets: &mut [Target]) {
    const COUNTERS: &str = "SHOW SESSION STATUS WHERE Variable_name IN ('Handler_read_key', 'Handler_read_next', \
        'Handler_read_prev', 'Handler_read_rnd', 'Handler_read_rnd_next', 'Sort_rows', 'Created_tmp_tables', \
        'Created_tmp_disk_tables')";
    println!("\n| direct statement | bytes | server counters for one read (module 4567) |\n|---|---:|---|");
    for target in targets.iter_mut().filter(|t| t.name.starts_with("direct_") || t.name.starts_with("sql_")) {
        let sql = target.statement.sql(4_567);
        let before: Vec<(String, i64)> = target.conn.query(COUNTERS).await.expect("counters");
        target.conn.query_drop(&sql).await.expect("the read");
        let after: Vec<(String, i64)> = target.conn.query(COUNTERS).await.expect("counters");
        let changed: Vec<String> = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| a.1 != b.1)
            .map(|(b, a)| format!("{} {}", b.0, a.1 - b.1))
            .collect();
        println!("| {} | {} | {} |", target.name, sql.len(), changed.join(", "));
    }
}

async fn print_versions(site: &Site) {
    let mut conn = root(&site.a).await;
    let version: Option<String> = conn.query_first("SELECT VERSION()").await.expect("version");
    println!("MariaDB {}, csmh-proxy {}", version.unwrap_or_default(), env!("CARGO_PKG_VERSION"));
}

/// Stops the proxies, then the servers.
fn shutdown(runtime: &Runtime, site: Site) {
    let Site { a, b, proxies, .. } = site;
    runtime.block_on(async {
        for (_, proxy) in proxies {
            let _ = proxy.shutdown().await;
        }
    });
    let _ = a.stop();
    let _ = b.stop();
}
