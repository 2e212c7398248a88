//! A property of the one-server fan-out read (`ENABLE_CSMH_EXTENDED` and
//! `ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES` on): whatever history rows the old and the extended table hold —
//! random modules, times, grades and states, NULLs included, rows split between the tables, ids in both tables
//! with different copies as a migration leaves them, extended ids past 2^31, 2^32 and 2^63 — a read of the
//! history table through the proxy returns exactly what the same statement returns when run directly on one
//! table holding the union of both tables, where an id in both keeps the extended table's row.
//!
//! The statements are the shapes the proxy supports: row reads filtered by `student_module_id IN (...)`, `= x`,
//! `grade > y`, `id > n`, `grade IS NULL`, an `AND`/`OR` of them, edxapp's subquery on
//! `courseware_studentmodule`, or nothing; `ORDER BY` a column in either direction with `id` as tie-breaker;
//! `LIMIT` with and without `OFFSET`; bare, Django-style qualified or aliased column references; `COUNT(*)`,
//! `MAX`/`MIN`/`SUM`, `DISTINCT student_module_id` and a per-module `GROUP BY`. Column names and every value (text
//! protocol, as the server formats it) must be equal.
//!
//! proptest's runner is driven by hand, on one server and one pair of databases, the tables refilled for each
//! case. The seed is fixed so that runs are repeatable; set `PROPTEST_RNG_SEED` to explore others, and
//! `PROPTEST_CASES` for more cases.

mod support;

use std::fmt::Write as _;

use csmh_proxy::history::Stage;
use csmh_proxy::sandbox::{EXTENDED_TABLE, OLD_TABLE};
use mysql_async::prelude::*;
use mysql_async::{Conn, Row, Value};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use support::EdxDatabases;
use tokio::sync::Mutex;

/// The reference table: the old table's columns in its order, with the extended table's types.
const REFERENCE: &str = "reference_history";

/// Cases per run, unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 50;

/// The seed unless `PROPTEST_RNG_SEED` gives one.
const SEED: u64 = 0x00c5_3a11_d0c5;

/// Times from a small set, so that ORDER BY created has ties.
const TIMES: [&str; 5] = [
    "2024-03-04 10:00:00.000000",
    "2024-03-04 10:00:00.000001",
    "2024-03-05 09:30:00.500000",
    "2024-03-05 09:30:00.500000",
    "2025-01-01 00:00:00.000000",
];

/// Grades that add up exactly in binary, so that SUM does not depend on the order it adds in.
const GRADES: [f64; 6] = [0.0, 0.25, 0.5, 1.0, 2.5, -1.0];

/// Module ids: the sample's, one without history, and one past the old table's signed INT (its history can
/// only be in the extended table).
const MODULES: [u64; 7] = [1, 2, 3, 4, 5, 6, 3_000_000_001];

/// One history row.
#[derive(Clone, Debug)]
struct History {
    id: u64,
    version: Option<&'static str>,
    created: &'static str,
    state: Option<String>,
    grade: Option<f64>,
    max_grade: Option<f64>,
    student_module_id: u64,
}

/// Where a row is.
#[derive(Clone, Debug)]
enum Place {
    Old,
    Extended,
    /// In both tables: the extended table's copy has another state and, when given, another grade.
    Both {
        copy_grade: Option<Option<f64>>,
    },
}

fn grade() -> impl Strategy<Value = Option<f64>> {
    prop::option::of(select(GRADES.to_vec()))
}

fn history(id: u64, module: impl Strategy<Value = u64>) -> impl Strategy<Value = History> {
    let state = prop::option::of((0u32..4).prop_map(|attempts| format!("{{\"attempts\": {attempts}}}")));
    (prop::option::of(select(vec!["v1", "v2"])), select(TIMES.to_vec()), state, grade(), grade(), module).prop_map(
        move |(version, created, state, grade, max_grade, student_module_id)| History {
            id,
            version,
            created,
            state,
            grade,
            max_grade,
            student_module_id,
        },
    )
}

fn place() -> impl Strategy<Value = Place> {
    prop_oneof![
        Just(Place::Old),
        Just(Place::Extended),
        prop::option::of(grade()).prop_map(|copy_grade| Place::Both { copy_grade }),
    ]
}

/// Rows with low ids anywhere (the old table's range: old rows, copies, and copies whose old row a chunked
/// delete already removed), and rows with ids from the extended table's own range, written there after the switch.
fn rows() -> impl Strategy<Value = Vec<(History, Place)>> {
    let low = prop::collection::btree_set(1u64..=60, 0..24);
    let high = prop::collection::btree_set(
        prop_oneof![
            10_001u64..=10_030,
            // Past the old table's signed INT, past 32 bits, and past BIGINT's signed range.
            2_147_483_640u64..=2_147_483_655,
            4_294_967_290u64..=4_294_967_300,
            9_223_372_036_854_775_800u64..=9_223_372_036_854_775_815,
        ],
        0..10,
    );
    (low, high)
        .prop_flat_map(|(low, high)| {
            let low: Vec<_> = low.into_iter().map(|id| (history(id, 1u64..=5), place())).collect();
            let high: Vec<_> =
                high.into_iter().map(|id| (history(id, select(MODULES.to_vec())), Just(Place::Extended))).collect();
            (low, high)
        })
        .prop_map(|(low, high)| low.into_iter().chain(high).collect())
}

/// How a statement names the table and its columns.
#[derive(Clone, Copy, Debug)]
enum Naming {
    /// `id ... FROM t`
    Bare,
    /// Django's: `` `t`.`id` ... FROM `t` ``
    Django,
    /// `h.id ... FROM t AS h`
    Alias,
}

#[derive(Clone, Debug)]
enum Filter {
    None,
    In(Vec<u64>),
    Eq(u64),
    IdAbove(u64),
    GradeAbove(f64),
    InAndGradeAbove(Vec<u64>, f64),
    EqOrGradeAbove(u64, f64),
    GradeIsNull,
    /// edxapp's submission-history form: the learner's modules as a subquery on `courseware_studentmodule`.
    InSubquery(u32),
}

#[derive(Clone, Debug)]
enum Shape {
    Rows {
        columns: &'static [&'static str],
        key: &'static str,
        desc: bool,
        tie_desc: bool,
        limit: Option<(u32, u32)>,
    },
    Count,
    Aggregate(&'static str),
    Distinct {
        desc: bool,
        limit: Option<u32>,
    },
    /// Per module: `COUNT(*)`, `MAX(grade)`, ordered by module.
    PerModule {
        desc: bool,
    },
}

#[derive(Clone, Debug)]
struct Statement {
    naming: Naming,
    filter: Filter,
    shape: Shape,
}

const COLUMN_SETS: [&[&str]; 5] = [
    &["*"],
    &["id", "state"],
    &["id", "student_module_id", "grade", "created"],
    &["id", "version", "created", "state", "grade", "max_grade", "student_module_id"],
    &["state", "grade"],
];

/// The columns a row read is ordered by (then by `id`).
const ORDER_KEYS: [&str; 4] = ["id", "created", "grade", "student_module_id"];

/// Aggregates, with `{}` for a column reference.
const AGGREGATES: [&str; 4] = ["MAX({grade}) AS m", "MIN({created}) AS m", "SUM({grade}) AS s", "ALL"];

fn modules() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(select(MODULES.to_vec()), 1..4)
}

fn filter() -> impl Strategy<Value = Filter> {
    prop_oneof![
        Just(Filter::None),
        modules().prop_map(Filter::In),
        select(MODULES.to_vec()).prop_map(Filter::Eq),
        select(vec![0u64, 40, 10_010, 2_147_483_647, 9_223_372_036_854_775_807]).prop_map(Filter::IdAbove),
        select(GRADES.to_vec()).prop_map(Filter::GradeAbove),
        (modules(), select(GRADES.to_vec())).prop_map(|(m, g)| Filter::InAndGradeAbove(m, g)),
        (select(MODULES.to_vec()), select(GRADES.to_vec())).prop_map(|(m, g)| Filter::EqOrGradeAbove(m, g)),
        Just(Filter::GradeIsNull),
        (1u32..=4).prop_map(Filter::InSubquery),
    ]
}

fn shape() -> impl Strategy<Value = Shape> {
    let limit = prop::option::of((1u32..=6, prop_oneof![Just(0u32), 0u32..=8]));
    prop_oneof![
        4 => (select(COLUMN_SETS.to_vec()), select(ORDER_KEYS.to_vec()), any::<bool>(), any::<bool>(), limit)
            .prop_map(|(columns, key, desc, tie_desc, limit)| Shape::Rows { columns, key, desc, tie_desc, limit }),
        1 => Just(Shape::Count),
        2 => select(AGGREGATES.to_vec()).prop_map(Shape::Aggregate),
        1 => (any::<bool>(), prop::option::of(1u32..=4)).prop_map(|(desc, limit)| Shape::Distinct { desc, limit }),
        1 => any::<bool>().prop_map(|desc| Shape::PerModule { desc }),
    ]
}

fn statement() -> impl Strategy<Value = Statement> {
    let naming = prop_oneof![Just(Naming::Bare), Just(Naming::Django), Just(Naming::Alias)];
    (naming, filter(), shape()).prop_map(|(naming, filter, shape)| Statement { naming, filter, shape })
}

/// One case: the rows, and the statements to compare.
#[derive(Clone, Debug)]
struct Case {
    rows: Vec<(History, Place)>,
    statements: Vec<Statement>,
}

fn case() -> impl Strategy<Value = Case> {
    (rows(), prop::collection::vec(statement(), 1..=12)).prop_map(|(rows, statements)| Case { rows, statements })
}

fn list(values: &[u64]) -> String {
    values.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

impl Statement {
    /// The statement's text reading `table`.
    fn render(&self, table: &str) -> String {
        let col = |name: &str| match self.naming {
            Naming::Bare => name.to_owned(),
            Naming::Django => format!("`{table}`.`{name}`"),
            Naming::Alias => format!("h.{name}"),
        };
        let from = match self.naming {
            Naming::Bare => format!("FROM {table}"),
            Naming::Django => format!("FROM `{table}`"),
            Naming::Alias => format!("FROM {table} AS h"),
        };
        let condition = match &self.filter {
            Filter::None => String::new(),
            Filter::In(m) => format!(" WHERE {} IN ({})", col("student_module_id"), list(m)),
            Filter::Eq(m) => format!(" WHERE {} = {m}", col("student_module_id")),
            Filter::GradeAbove(g) => format!(" WHERE {} > {g}", col("grade")),
            Filter::InAndGradeAbove(m, g) => {
                format!(" WHERE {} IN ({}) AND {} > {g}", col("student_module_id"), list(m), col("grade"))
            }
            Filter::EqOrGradeAbove(m, g) => {
                format!(" WHERE {} = {m} OR {} > {g}", col("student_module_id"), col("grade"))
            }
            Filter::IdAbove(id) => format!(" WHERE {} > {id}", col("id")),
            Filter::GradeIsNull => format!(" WHERE {} IS NULL", col("grade")),
            Filter::InSubquery(student) => format!(
                " WHERE {} IN (SELECT U0.`id` FROM `courseware_studentmodule` U0 WHERE U0.`student_id` = {student})",
                col("student_module_id")
            ),
        };
        let direction = |desc: bool| if desc { "DESC" } else { "ASC" };
        match &self.shape {
            Shape::Rows { columns, key, desc, tie_desc, limit } => {
                let columns: Vec<String> =
                    columns.iter().map(|c| if *c == "*" { "*".to_owned() } else { col(c) }).collect();
                let mut sql = format!(
                    "SELECT {} {from}{condition} ORDER BY {} {}",
                    columns.join(", "),
                    col(key),
                    direction(*desc)
                );
                if *key != "id" {
                    let _ = write!(sql, ", {} {}", col("id"), direction(*tie_desc));
                }
                match limit {
                    Some((count, 0)) => {
                        let _ = write!(sql, " LIMIT {count}");
                    }
                    Some((count, offset)) => {
                        let _ = write!(sql, " LIMIT {count} OFFSET {offset}");
                    }
                    None => {}
                }
                sql
            }
            Shape::Count => format!("SELECT COUNT(*) AS `__count` {from}{condition}"),
            Shape::Aggregate(aggregate) => {
                let (grade, created) = (col("grade"), col("created"));
                let expression = match *aggregate {
                    "ALL" => format!("COUNT(*) AS c, MAX({grade}) AS mx, MIN({created}) AS mn, SUM({grade}) AS s"),
                    other => other.replace("{grade}", &grade).replace("{created}", &created),
                };
                format!("SELECT {expression} {from}{condition}")
            }
            Shape::Distinct { desc, limit } => {
                let module = col("student_module_id");
                let mut sql =
                    format!("SELECT DISTINCT {module} {from}{condition} ORDER BY {module} {}", direction(*desc));
                if let Some(count) = limit {
                    let _ = write!(sql, " LIMIT {count}");
                }
                sql
            }
            Shape::PerModule { desc } => {
                let module = col("student_module_id");
                format!(
                    "SELECT {module}, COUNT(*) AS n, MAX({}) AS g {from}{condition} GROUP BY {module} ORDER BY {module} {}",
                    col("grade"),
                    direction(*desc)
                )
            }
        }
    }
}

/// A SQL literal.
fn literal<T: ToString>(value: Option<T>, quoted: bool) -> String {
    match value {
        None => "NULL".to_owned(),
        Some(v) if quoted => format!("'{}'", v.to_string()),
        Some(v) => v.to_string(),
    }
}

/// The `VALUES` row of `row` for the column list `id, version, created, state, grade, max_grade, student_module_id`.
fn values(row: &History) -> String {
    format!(
        "({}, {}, '{}', {}, {}, {}, {})",
        row.id,
        literal(row.version, true),
        row.created,
        literal(row.state.as_deref(), true),
        literal(row.grade, false),
        literal(row.max_grade, false),
        row.student_module_id
    )
}

/// What a statement returned: column names and the rows' values.
type Answer = (Vec<String>, Vec<Vec<Value>>);

async fn answer(conn: &mut Conn, sql: &str) -> Result<Answer, mysql_async::Error> {
    let mut result = conn.query_iter(sql).await?;
    let names = result.columns().map(|c| c.iter().map(|c| c.name_str().into_owned()).collect()).unwrap_or_default();
    let rows: Vec<Row> = result.collect().await?;
    Ok((names, rows.into_iter().map(Row::unwrap).collect()))
}

/// The test's databases, the proxy in front of them, and connections reused across cases.
struct Site {
    dbs: EdxDatabases,
    proxy: csmh_proxy::server::ProxyHandle,
    /// edxapp's connection, through the proxy.
    edxapp: Mutex<Conn>,
    /// Root, directly on the server, in the `edxapp` database: fills the tables, reads the reference table.
    root: Mutex<Conn>,
}

impl Site {
    async fn new() -> Site {
        let dbs = EdxDatabases::fresh().await;
        assert!(dbs.same_server());
        dbs.create_edx_schema(false).await;
        let mut root = support::root_conn(&dbs.edxapp).await;
        root.query_drop(format!("USE `{}`", dbs.edxapp_db)).await.unwrap();
        root.query_drop(format!(
            "CREATE TABLE `{REFERENCE}` (
               `id` bigint unsigned NOT NULL PRIMARY KEY,
               `version` varchar(255) NULL,
               `created` datetime(6) NOT NULL,
               `state` longtext NULL,
               `grade` double NULL,
               `max_grade` double NULL,
               `student_module_id` bigint unsigned NOT NULL,
               KEY (`version`), KEY (`created`), KEY (`student_module_id`))"
        ))
        .await
        .unwrap();
        // Learner k's modules for the subquery filter: learner 1 has modules 1 and 4, 2 has 2 and 5, 3 has 3 and
        // 6, learner 4 none.
        root.query_drop(
            "INSERT INTO courseware_studentmodule (id, module_type, module_id, student_id, state, grade, max_grade, \
             done, created, modified, course_id) \
             SELECT seq, 'problem', CONCAT('block-', seq), (seq - 1) % 3 + 1, '{}', NULL, 1, 'na', NOW(6), NOW(6), \
             'course-v1:edX+DemoX+Demo_Course' FROM seq_1_to_6",
        )
        .await
        .unwrap();
        let proxy = dbs.start_proxy(Stage::ExtendedTableReadingBoth.flags()).await;
        let edxapp =
            Conn::new(dbs.proxy_opts(&proxy, &support::app())).await.expect("edxapp logs in through the proxy");
        Site { dbs, proxy, edxapp: Mutex::new(edxapp), root: Mutex::new(root) }
    }

    fn old(&self) -> String {
        format!("`{}`.`{OLD_TABLE}`", self.dbs.edxapp_db)
    }

    fn extended(&self) -> String {
        format!("`{}`.`{EXTENDED_TABLE}`", self.dbs.csmh_db)
    }

    fn reference(&self) -> String {
        format!("`{}`.`{REFERENCE}`", self.dbs.edxapp_db)
    }

    /// Empties the three tables and writes the case's rows: each where it is, and into the reference table the
    /// row a read must return (the extended copy of a row in both).
    async fn fill(&self, rows: &[(History, Place)]) {
        let (mut old, mut extended, mut reference) = (Vec::new(), Vec::new(), Vec::new());
        for (row, place) in rows {
            match place {
                Place::Old => {
                    old.push(values(row));
                    reference.push(values(row));
                }
                Place::Extended => {
                    extended.push(values(row));
                    reference.push(values(row));
                }
                Place::Both { copy_grade } => {
                    old.push(values(row));
                    let copy = History {
                        state: Some(format!("{} (copy)", row.state.as_deref().unwrap_or("null"))),
                        grade: copy_grade.unwrap_or(row.grade),
                        ..row.clone()
                    };
                    extended.push(values(&copy));
                    reference.push(values(&copy));
                }
            }
        }
        let mut root = self.root.lock().await;
        let columns = "(id, version, created, state, grade, max_grade, student_module_id)";
        for (table, rows) in [(self.old(), old), (self.extended(), extended), (self.reference(), reference)] {
            root.query_drop(format!("DELETE FROM {table}")).await.unwrap();
            if !rows.is_empty() {
                root.query_drop(format!("INSERT INTO {table} {columns} VALUES {}", rows.join(", "))).await.unwrap();
            }
        }
    }

    /// Logs out and stops the proxy.
    async fn close(self) {
        self.edxapp.into_inner().disconnect().await.unwrap();
        self.root.into_inner().disconnect().await.unwrap();
        self.proxy.shutdown().await.unwrap();
    }

    /// Every statement of `case` answers the same through the proxy as on the reference table.
    async fn check(&self, case: &Case) -> Result<(), TestCaseError> {
        self.fill(&case.rows).await;
        let (mut root, mut edxapp) = (self.root.lock().await, self.edxapp.lock().await);
        for statement in &case.statements {
            let through_proxy = statement.render(OLD_TABLE);
            let direct = statement.render(REFERENCE);
            let expected = answer(&mut root, &direct)
                .await
                .map_err(|e| TestCaseError::fail(format!("the reference statement failed: {direct}: {e}")))?;
            let actual = answer(&mut edxapp, &through_proxy).await.map_err(|e| {
                TestCaseError::fail(format!("through the proxy: {through_proxy}\nfailed: {e}\nexpected: {expected:?}"))
            })?;
            prop_assert_eq!(actual, expected, "through the proxy: {}\nreference: {}", through_proxy, direct);
        }
        Ok(())
    }
}

#[test]
fn one_server_fan_out_reads_equal_the_union_with_extended_copies_winning() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let site = runtime.block_on(Site::new());
    let from_env = Config::default();
    let config = Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() { from_env.cases } else { CASES },
        rng_seed: if std::env::var_os("PROPTEST_RNG_SEED").is_some() {
            from_env.rng_seed
        } else {
            RngSeed::Fixed(SEED)
        },
        max_shrink_iters: 400,
        failure_persistence: None,
        ..from_env
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case(), |case| runtime.block_on(site.check(&case)));
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, case)) => {
            panic!("a fan-out read differs from the union's: {reason}\nminimal case: {case:#?}")
        }
        Err(e) => panic!("{e}"),
    }
    runtime.block_on(site.close());
}
