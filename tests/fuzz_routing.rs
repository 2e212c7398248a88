//! The router on malformed statements: edxapp's own statements on the history table (and the other shapes the
//! routing knows), mutated byte by byte and token by token — invalid UTF-8, broken quotes and comments,
//! unbalanced parentheses, keywords in odd places — and arbitrary bytes naming the table. For every stage of the
//! migration, one server and two, as a query and as a statement to prepare, [`Router::classify`] must return a
//! route and never panic, and a rewrite's holes for subquery values must lie within the rewritten text.
//!
//! Pure logic, no server. A bounded run in `cargo test`; docs/reliability.md ("Malformed input") gives the long
//! one.

mod support;

use csmh_proxy::history::{Stage, StatementKind, TableName, Target, routing_table};
use csmh_proxy::routing::{FanOut, Form, Inline, MergeServers, Route, Router};
use csmh_proxy::topology::Topology;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use support::edx::{OLD, edxapp_delete, edxapp_insert, edxapp_read, edxapp_subquery_read};
use support::mutate;

/// Cases of a bounded run.
const CASES: u32 = 600;

/// Statements naming the history table: edxapp's, and the shapes the router tests cover.
fn statements() -> Vec<Vec<u8>> {
    let mut sql = vec![
        edxapp_insert(42, "{\\\"attempts\\\": 1}"),
        edxapp_read("42, 43"),
        edxapp_subquery_read("learner", "course-v1:edX+DemoX+Demo", "block-v1:edX+DemoX+type@problem+block@p1"),
        edxapp_delete("42"),
    ];
    sql.extend(
        [
            "SELECT * FROM courseware_studentmodulehistory h WHERE h.id = 5",
            "SELECT id FROM courseware_studentmodulehistory WHERE student_module_id = ?",
            "SELECT h.id FROM courseware_studentmodulehistory h JOIN courseware_studentmodule m ON m.id = h.student_module_id",
            "SELECT id FROM courseware_studentmodulehistory WHERE grade = (SELECT MAX(grade) FROM courseware_studentmodule)",
            "SELECT student_module_id, COUNT(*), MAX(grade) FROM courseware_studentmodulehistory GROUP BY student_module_id",
            "SELECT COUNT(*) FROM `edxapp`.`courseware_studentmodulehistory` AS h WHERE h.grade > 0.5 LIMIT 3 OFFSET 1",
            "SELECT DISTINCT student_module_id FROM courseware_studentmodulehistory ORDER BY student_module_id DESC LIMIT 2",
            "INSERT INTO edxapp.courseware_studentmodulehistory VALUES (1, NULL, NOW(), 's', 1, 2, 42)",
            "INSERT INTO courseware_studentmodulehistory (state, version, student_module_id) VALUES ('a\\'b\\\\c', X'00ff', 0x2A)",
            "INSERT INTO courseware_studentmodulehistory SET state = 's', student_module_id = 1",
            "UPDATE courseware_studentmodulehistory SET state = 'x' WHERE edxapp.courseware_studentmodulehistory.id = 7",
            "DELETE FROM courseware_studentmodulehistory WHERE student_module_id IN (SELECT id FROM courseware_studentmodule WHERE course_id = 'c')",
            "SELECT 1 /* courseware_studentmodulehistory */; -- courseware_studentmodulehistory\n",
            "ALTER TABLE courseware_studentmodulehistory ADD COLUMN x INT",
            "SHOW CREATE TABLE courseware_studentmodulehistory",
            "SELECT * FROM courseware_studentmodulehistory; SELECT 1",
        ]
        .map(str::to_owned),
    );
    sql.into_iter().map(String::into_bytes).collect()
}

/// Pieces a mutation inserts: tokens that change a statement's structure, and bytes that are not UTF-8.
fn tokens() -> Vec<Vec<u8>> {
    [
        "(",
        ")",
        "((",
        "))",
        ",",
        ";",
        "'",
        "\"",
        "`",
        "\\",
        "?",
        "*",
        ".",
        "/*",
        "*/",
        "/*!",
        "-- ",
        "#",
        "\n",
        "\r",
        "\t",
        " SELECT ",
        " FROM ",
        " WHERE ",
        " JOIN x ON 1 ",
        " AS a ",
        " IN (SELECT id FROM t) ",
        " UNION ALL SELECT 1 ",
        " ORDER BY id DESC ",
        " LIMIT 1 OFFSET 2 ",
        " GROUP BY 1 ",
        " INTO ",
        " SET ",
        " VALUES (1) ",
        OLD,
        "edxapp.",
        "`edxapp`.`courseware_studentmodulehistory`",
        "é",
        "😀",
        "\u{0}",
    ]
    .iter()
    .map(|t| t.as_bytes().to_vec())
    .chain([vec![0xff], vec![0xc3], vec![0xe9, 0x80], vec![0xf0, 0x9f]])
    .collect()
}

/// Mutated statements, and arbitrary bytes with the table's name somewhere in them.
fn inputs() -> impl Strategy<Value = Vec<u8>> {
    let arbitrary_naming =
        (prop::collection::vec(any::<u8>(), 0..128), any::<prop::sample::Index>()).prop_map(|(mut bytes, at)| {
            let at = at.index(bytes.len() + 1);
            bytes.splice(at..at, OLD.bytes());
            bytes
        });
    prop_oneof![4 => mutate::inputs(statements(), tokens()), 1 => arbitrary_naming]
}

/// A router for every stage and topology.
fn routers() -> Vec<Router> {
    let old: TableName = format!("edxapp.{OLD}").parse().expect("the old table's name");
    let extended: TableName =
        "edxapp_csmh.coursewarehistoryextended_studentmodulehistoryextended".parse().expect("the extended name");
    Stage::ALL
        .iter()
        .flat_map(|stage| [Topology::OneServer, Topology::TwoServers].map(|topology| (stage, topology)))
        .map(|(stage, topology)| {
            let table = routing_table(stage.flags()).expect("a stage's flags are valid");
            Router::new(table, old.clone(), extended.clone(), topology)
        })
        .collect()
}

/// Holes for subquery values must lie within the statement they are written into.
fn check_inlines(sql: &[u8], inline: &[Inline]) -> Result<(), TestCaseError> {
    for hole in inline {
        prop_assert!(hole.at <= sql.len(), "a hole at {} in a statement of {} bytes", hole.at, sql.len());
    }
    Ok(())
}

fn check_route(route: &Route) -> Result<(), TestCaseError> {
    match route {
        Route::Rewrite(rewritten) => check_inlines(&rewritten.sql, &rewritten.inline),
        Route::FanOut(FanOut::Writes { extended, inline, .. }) => check_inlines(extended, inline),
        Route::FanOut(FanOut::Merge(read)) => match &read.servers {
            MergeServers::TwoServers { inline, .. } => check_inlines(&read.extended, inline),
            MergeServers::OneServer { .. } => Ok(()),
        },
        _ => Ok(()),
    }
}

#[test]
fn the_router_never_panics_on_malformed_statements() {
    let routers = routers();
    mutate::run(CASES, inputs(), |sql| {
        for router in &routers {
            for form in [Form::Query, Form::Prepare] {
                check_route(&router.classify(&sql, form).into_route())?;
            }
        }
        Ok(())
    });
}

/// A history read whose condition nests `depth` levels of `nesting`.
fn nested(nesting: (&str, &str), depth: usize) -> Vec<u8> {
    let (open, close) = nesting;
    format!("SELECT * FROM {OLD} WHERE id = {}1{}", open.repeat(depth), close.repeat(depth)).into_bytes()
}

/// The stack of the runtime's worker threads, which the session's classification runs on.
const WORKER_STACK: usize = 2 << 20;

#[test]
fn deeply_nested_statements_are_refused_without_overflowing_the_stack() {
    let on_worker_stack = std::thread::Builder::new().stack_size(WORKER_STACK).spawn(|| {
        // The parse is the same at every stage that routes: reading both tables, one server and two.
        let routers: Vec<Router> =
            routers().into_iter().filter(|r| r.table().route(StatementKind::Select) == Target::BothTables).collect();
        for nesting in mutate::NESTINGS {
            // Every depth up to past the parser's recursion limit, where the parse reaches deepest.
            for depth in (0..=64).chain([10_000]) {
                let sql = nested(nesting, depth);
                for router in &routers {
                    for form in [Form::Query, Form::Prepare] {
                        let route = router.classify(&sql, form).into_route();
                        if depth == 10_000 {
                            assert!(matches!(route, Route::Refuse(_)), "{nesting:?} nested {depth} deep: {route:?}");
                        }
                    }
                }
            }
        }
    });
    on_worker_stack.expect("a thread").join().expect("no panic");
}
