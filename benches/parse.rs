//! Benchmark 5 of issue 5: what looking at a statement costs the proxy, per statement (criterion).
//!
//! - `prefilter_miss/*`: the pre-filter on typical edxapp statements of 100–300 bytes that do not name the
//!   history table (every statement edxapp sends pays this, and nothing more). Target: ≤ 50 ns.
//! - `prefilter_hit/*`: the same scan on edxapp's history statements, for comparison.
//! - `route/{one_server,two_servers}/*`: `Router::route` — tokenize, find the table, parse, classify, plan and
//!   splice the rewritten statement(s) — on edxapp's four history statements (the INSERT, the user-state read, the
//!   staff view's subquery read, the cascade DELETE; texts as in `tests/support/edx.rs`) with the reading-both
//!   flags, both tables on one server (`one_server`: reads become a merge plan and one statement per side, sent
//!   together) and on two servers (`two_servers`: a merge plan and one statement per side). Target: ≤ 20 µs.
//! - `route_cached/{one_server,two_servers}/*`: `Router::classify` of the same four statements once the route
//!   cache has them (each seen twice before), every iteration with other literals (module ids, usernames): scan the
//!   literals, look the key up, splice the literals into the cached statements. Target: ≤ 10 µs for the reads.
//! - `steps/*`: the sub-steps of `route` (tokenize, mentions, clone the tokens, parse, classify), to see where
//!   its time goes, and sqlparser's tokenizer alone (`sqlparser_tokenize`).
//!
//! Run: `cargo bench --bench parse` (add a filter such as `-- prefilter` to run a part). The bench takes the
//! machine-wide lock `/tmp/csmh-bench.lock` for its whole run, so no other benchmark measures at the same time;
//! do not wrap it in `flock(1)` on that same file (it would wait for itself).

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use csmh_proxy::history::Flags;
use csmh_proxy::history::TableName;
use csmh_proxy::routing::source::{self, Source, Tok};
use csmh_proxy::routing::{CacheOutcome, FanOut, Form, MergeServers, Route, classify};
use csmh_proxy::sandbox::ProxyToml;
use csmh_proxy::state::ConfigSnapshot;
use sqlparser::ast::Statement;
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::{Parser, ParserOptions};
use sqlparser::tokenizer::{TokenWithSpan, Tokenizer};

/// The old history table, as edxapp names it.
const OLD: &str = "courseware_studentmodulehistory";

/// A course and a problem's usage key, as edxapp writes them into its statements.
const COURSE: &str = "course-v1:edX+DemoX+Demo_Course";
const PROBLEM: &str = "block-v1:edX+DemoX+Demo_Course+type@problem+block@d1b84dcd39b0423d9e288f27f0f7f242";

/// Typical edxapp statements (Django's SQL) that do not name the history table, 100–300 bytes each. The
/// courseware ones name `courseware_studentmodule`, a prefix of the history table's name: the scan's worst case.
fn misses() -> Vec<(&'static str, String)> {
    vec![
        (
            "session",
            "SELECT `django_session`.`session_key`, `django_session`.`session_data`, `django_session`.`expire_date` \
             FROM `django_session` WHERE (`django_session`.`expire_date` > '2024-06-01 12:00:00.000000' AND \
             `django_session`.`session_key` = 'f3kq9x0v2l8m1n4b7c6z5a0s9d8f7g6h') LIMIT 21"
                .to_owned(),
        ),
        (
            "auth_user",
            "SELECT `auth_user`.`id`, `auth_user`.`password`, `auth_user`.`last_login`, `auth_user`.`is_superuser`, \
             `auth_user`.`username`, `auth_user`.`email`, `auth_user`.`is_staff`, `auth_user`.`is_active` FROM \
             `auth_user` WHERE `auth_user`.`id` = 4242 LIMIT 21"
                .to_owned(),
        ),
        (
            "studentmodule_get",
            format!(
                "SELECT `courseware_studentmodule`.`id`, `courseware_studentmodule`.`state` FROM \
                 `courseware_studentmodule` WHERE (`courseware_studentmodule`.`course_id` = '{COURSE}' AND \
                 `courseware_studentmodule`.`module_id` = '{PROBLEM}' AND `courseware_studentmodule`.`student_id` = \
                 4242) LIMIT 21"
            ),
        ),
        (
            "studentmodule_update",
            "UPDATE `courseware_studentmodule` SET `state` = '{\\\"seed\\\": 1, \\\"attempts\\\": 2, \\\"done\\\": \
             true}', `grade` = 1.0, `max_grade` = 1.0, `modified` = '2024-06-01 12:00:00.000000' WHERE \
             `courseware_studentmodule`.`id` = 123456"
                .to_owned(),
        ),
        (
            "enrollment",
            format!(
                "SELECT `student_courseenrollment`.`id`, `student_courseenrollment`.`mode`, \
                 `student_courseenrollment`.`is_active` FROM `student_courseenrollment` WHERE \
                 (`student_courseenrollment`.`course_id` = '{COURSE}' AND `student_courseenrollment`.`user_id` = 4242) \
                 LIMIT 21"
            ),
        ),
    ]
}

/// The seven columns of the old history table, qualified as Django writes them.
fn history_columns() -> String {
    let columns = ["id", "version", "created", "state", "grade", "max_grade", "student_module_id"];
    columns.iter().map(|c| format!("`{OLD}`.`{c}`")).collect::<Vec<_>>().join(", ")
}

/// edxapp's four statements on the history table, as `tests/support/edx.rs` spells them.
fn history_statements() -> Vec<(&'static str, String)> {
    let state = r#"{"seed": 1, "attempts": 2, "done": true, "student_answers": {"2_1": "choice_2"}}"#;
    vec![
        (
            "insert",
            format!(
                "INSERT INTO `{OLD}` (`version`, `created`, `state`, `grade`, `max_grade`, `student_module_id`) \
                 VALUES (NULL, '2024-06-01 12:00:00.000000', '{state}', 1.0, 2.0, 123456)"
            ),
        ),
        (
            "user_state_read",
            format!(
                "SELECT {} FROM `{OLD}` WHERE `{OLD}`.`student_module_id` IN (123456) ORDER BY `{OLD}`.`id` DESC",
                history_columns()
            ),
        ),
        (
            "subquery_read",
            format!(
                "SELECT `{OLD}`.`id`, `{OLD}`.`state`, `{OLD}`.`student_module_id` FROM `{OLD}` WHERE \
                 `{OLD}`.`student_module_id` IN (SELECT U0.`id` FROM `courseware_studentmodule` U0 INNER JOIN \
                 `auth_user` U1 ON (U0.`student_id` = U1.`id`) WHERE (U0.`course_id` = '{COURSE}' AND \
                 U0.`module_id` = '{PROBLEM}' AND U1.`username` = 'alice')) ORDER BY `{OLD}`.`id` DESC"
            ),
        ),
        ("cascade_delete", format!("DELETE FROM `{OLD}` WHERE `{OLD}`.`student_module_id` IN (123456)")),
    ]
}

/// The history statements with other literals: module ids and usernames as edxapp varies them.
fn history_variants() -> Vec<Vec<(&'static str, String)>> {
    let variants = [("123456", "alice"), ("654321", "bob"), ("42", "carol_the_instructor"), ("7777777", "dave")];
    variants
        .iter()
        .map(|(module, user)| {
            history_statements()
                .into_iter()
                .map(|(name, sql)| (name, sql.replace("123456", module).replace("'alice'", &format!("'{user}'"))))
                .collect()
        })
        .collect()
}

/// The configuration snapshot of a proxy with the reading-both flags, both tables on one server or on two.
fn reading_both(two_servers: bool) -> ConfigSnapshot {
    let addr = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let flags = Flags {
        enable_csmh_extended: true,
        enable_reading_from_multiple_history_tables: true,
        read_only_from_csmhe: false,
    };
    let csmh = if two_servers { addr(3307) } else { addr(3306) };
    let toml = ProxyToml { flags, ..ProxyToml::edx(addr(0), addr(3306), csmh) };
    let config = toml.config().expect("the bench's proxy.toml is valid");
    ConfigSnapshot::compile(config).expect("the bench's configuration compiles")
}

/// What each statement must become, so the bench measures the routes it names: a rewrite for the INSERT, the
/// topology's fan-out for reads, two writes for the DELETE.
fn check_route(name: &str, two_servers: bool, route: &Route) {
    let fine = match (name, route) {
        ("insert", Route::Rewrite(_)) => true,
        ("cascade_delete", Route::FanOut(FanOut::Writes { .. })) => true,
        (_, Route::FanOut(FanOut::Merge(read))) => {
            matches!(read.servers, MergeServers::TwoServers { .. }) == two_servers
        }
        _ => false,
    };
    assert!(fine, "{name} (two servers: {two_servers}) was routed as {route:?}");
}

fn bench_prefilter(c: &mut Criterion) {
    let snapshot = reading_both(false);
    let mut group = c.benchmark_group("prefilter_miss");
    for (name, sql) in misses() {
        assert!(!snapshot.router.prefilter().matches(sql.as_bytes()), "{name} must miss");
        group.bench_with_input(BenchmarkId::new(name, sql.len()), sql.as_bytes(), |b, sql| {
            b.iter(|| snapshot.router.prefilter().matches(black_box(sql)))
        });
    }
    group.finish();
    let mut group = c.benchmark_group("prefilter_hit");
    for (name, sql) in history_statements() {
        group.bench_with_input(BenchmarkId::new(name, sql.len()), sql.as_bytes(), |b, sql| {
            b.iter(|| snapshot.router.prefilter().matches(black_box(sql)))
        });
    }
    group.finish();
}

fn bench_route(c: &mut Criterion) {
    for (label, two_servers) in [("one_server", false), ("two_servers", true)] {
        let snapshot = reading_both(two_servers);
        let mut group = c.benchmark_group(format!("route/{label}"));
        for (name, sql) in history_statements() {
            check_route(name, two_servers, &snapshot.router.route(sql.as_bytes()));
            group.bench_with_input(BenchmarkId::new(name, sql.len()), sql.as_bytes(), |b, sql| {
                b.iter(|| snapshot.router.route(black_box(sql)))
            });
        }
        group.finish();
    }
}

fn bench_route_cached(c: &mut Criterion) {
    let variants = history_variants();
    for (label, two_servers) in [("one_server", false), ("two_servers", true)] {
        let snapshot = reading_both(two_servers);
        let router = &snapshot.router;
        let mut group = c.benchmark_group(format!("route_cached/{label}"));
        for (index, (name, sql)) in history_statements().into_iter().enumerate() {
            let statements: Vec<&[u8]> = variants.iter().map(|v| v[index].1.as_bytes()).collect();
            for sql in &statements {
                router.classify(sql, Form::Query);
            }
            for sql in &statements {
                let (classified, outcome) = router.classify_reporting(sql, Form::Query);
                assert_eq!(outcome, Some(CacheOutcome::Hit), "{name} is routed from the cache");
                assert_eq!(classified.into_route(), router.route(sql), "{name}: the cache's route is the router's");
            }
            let mut next = statements.iter().cycle();
            group.bench_function(BenchmarkId::new(name, sql.len()), |b| {
                b.iter(|| router.classify(black_box(next.next().expect("a cycle never ends")), Form::Query))
            });
        }
        group.finish();
    }
}

/// The sub-steps of `Router::route` that do not depend on the topology, each on its own, and sqlparser's
/// tokenizer without the byte-range mapping of `Source::tokens` (`sqlparser_tokenize`).
fn bench_steps(c: &mut Criterion) {
    let old: TableName = format!("edxapp.{OLD}").parse().expect("a plain table name");
    let mut group = c.benchmark_group("steps");
    for (name, sql) in history_statements() {
        let source = Source::new(sql.as_bytes());
        let tokens = source.tokens().expect("the statement tokenizes");
        let statement = parse(&tokens).remove(0);
        group
            .bench_function(format!("tokenize/{name}"), |b| b.iter(|| Source::new(black_box(sql.as_bytes())).tokens()));
        group.bench_function(format!("sqlparser_tokenize/{name}"), |b| b.iter(|| sqlparser_tokens(black_box(&sql))));
        group.bench_function(format!("mentions/{name}"), |b| b.iter(|| source::mentions(black_box(&tokens), &old)));
        group.bench_function(format!("clone_tokens/{name}"), |b| {
            b.iter(|| black_box(&tokens).iter().map(|t| t.token.clone()).collect::<Vec<_>>())
        });
        group.bench_function(format!("parse/{name}"), |b| b.iter(|| parse(black_box(&tokens))));
        group.bench_function(format!("classify/{name}"), |b| {
            b.iter(|| classify::shape(black_box(&statement), &old).map(|shape| shape.kind))
        });
    }
    group.finish();
}

/// What the router's `parse_one` does: the tokens cloned into sqlparser's parser, and parsed.
fn parse(tokens: &[Tok]) -> Vec<Statement> {
    Parser::new(&MySqlDialect {})
        .with_options(ParserOptions::new().with_unescape(false))
        .with_tokens_with_locations(tokens.iter().map(|t| t.token.clone()).collect())
        .parse_statements()
        .expect("the statement parses")
}

/// sqlparser's tokenizer alone, as `Source::tokens` calls it.
fn sqlparser_tokens(sql: &str) -> Vec<TokenWithSpan> {
    Tokenizer::new(&MySqlDialect {}, sql).with_unescape(false).tokenize_with_location().expect("it tokenizes")
}

mod support;
use support::BenchLock;

fn main() {
    let _lock = BenchLock::acquire();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_prefilter(&mut criterion);
    bench_route(&mut criterion);
    bench_route_cached(&mut criterion);
    bench_steps(&mut criterion);
    criterion.final_summary();
}
