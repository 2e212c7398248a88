//! Plans derived from statements: edxapp's own reads, ORDER BY resolution, LIMIT pushdown, DISTINCT,
//! aggregates, and every refusal.

use super::*;

const H: &str = "`courseware_studentmodulehistory`";

/// edxapp's history read, newest first.
fn edxapp_read() -> String {
    let columns = ["id", "version", "created", "state", "grade", "max_grade", "student_module_id"]
        .map(|c| format!("{H}.`{c}`"))
        .join(", ");
    format!("SELECT {columns} FROM {H} WHERE {H}.`student_module_id` IN (42, 43) ORDER BY {H}.`id` DESC")
}

fn tail(sql: &str) -> String {
    plan(sql).unwrap().side_clauses("`h`.`id`").tail
}

fn refusal(sql: &str) -> Unsupported {
    plan(sql).expect_err(sql)
}

#[test]
fn edxapp_history_read_is_merged_by_id_descending() {
    let plan = plan(&edxapp_read()).unwrap();
    assert_eq!(plan.order(), [SortKey { column: 0, direction: Direction::Descending }]);
    assert_eq!((plan.visible_columns(), plan.side_columns()), (7, 7));
    assert!(!plan.needs_matching_copies());
    let clauses = plan.side_clauses("`h`.`id`");
    assert_eq!(clauses, SideClauses { extra_column: None, tail: " ORDER BY 1 DESC".into() });
}

#[test]
fn ordering_by_an_id_not_selected_uses_the_hidden_id() {
    let plan = plan("SELECT state FROM h WHERE student_module_id = 1 ORDER BY h.id DESC").unwrap();
    assert_eq!(plan.order(), [SortKey { column: 1, direction: Direction::Descending }]);
    assert_eq!((plan.visible_columns(), plan.side_columns()), (1, 2));
    let clauses = plan.side_clauses("`h`.`id`");
    assert_eq!(clauses, SideClauses { extra_column: Some(", `h`.`id`".into()), tail: " ORDER BY 2 DESC".into() });
}

#[test]
fn a_read_without_order_by_is_sorted_by_id() {
    assert_eq!(tail("SELECT id, state FROM h WHERE id = 42 LIMIT 21"), " ORDER BY 1 ASC LIMIT 21");
    assert_eq!(tail("SELECT * FROM h"), " ORDER BY 1 ASC");
}

#[test]
fn limit_and_offset_are_pushed_down_as_their_sum() {
    let plan = plan("SELECT id FROM h ORDER BY id LIMIT 10 OFFSET 5").unwrap();
    assert_eq!(plan.limit(), Some(Limit { offset: 5, count: 10 }));
    assert_eq!(plan.side_limit(), Some(15));
    assert_eq!(tail("SELECT id FROM h ORDER BY id LIMIT 5, 10"), " ORDER BY 1 ASC LIMIT 15");
    assert_eq!(
        tail("SELECT id FROM h LIMIT 18446744073709551615 OFFSET 3"),
        " ORDER BY 1 ASC LIMIT 18446744073709551615"
    );
}

#[test]
fn exists_reads_the_id_it_did_not_select() {
    let plan = plan("SELECT 1 AS `a` FROM h WHERE student_module_id = 42 LIMIT 1").unwrap();
    assert_eq!((plan.visible_columns(), plan.side_columns()), (1, 2));
    let clauses = plan.side_clauses("`h`.`id`");
    assert_eq!(clauses.extra_column.as_deref(), Some(", `h`.`id`"));
    assert_eq!(clauses.tail, " ORDER BY 2 ASC LIMIT 1");
}

#[test]
fn latest_by_created_breaks_ties_by_id_in_the_same_direction() {
    let plan = plan("SELECT h.id, h.version, h.created FROM h ORDER BY h.created DESC LIMIT 1").unwrap();
    assert_eq!(plan.side_clauses("id").tail, " ORDER BY 3 DESC, 1 DESC LIMIT 1");
    assert!(plan.needs_matching_copies());
}

#[test]
fn order_by_keys_after_the_id_are_dropped() {
    assert_eq!(tail("SELECT id, grade, created FROM h ORDER BY grade, id DESC, created"), " ORDER BY 2 ASC, 1 DESC");
    assert_eq!(tail("SELECT id, grade FROM h ORDER BY grade, grade DESC"), " ORDER BY 2 ASC, 1 ASC");
}

#[test]
fn order_by_resolves_aliases_positions_and_columns_as_mysql_does() {
    assert_eq!(tail("SELECT id, created AS c FROM h ORDER BY c DESC"), " ORDER BY 2 DESC, 1 DESC");
    assert_eq!(tail("SELECT id, created AS c FROM h ORDER BY created"), " ORDER BY 2 ASC, 1 ASC");
    assert_eq!(tail("SELECT id, created AS c FROM h ORDER BY h.created"), " ORDER BY 2 ASC, 1 ASC");
    assert_eq!(tail("SELECT id, created FROM h ORDER BY 2 DESC"), " ORDER BY 2 DESC, 1 DESC");
    assert_eq!(tail("SELECT id, grade * 2 FROM h ORDER BY grade * 2"), " ORDER BY 2 ASC, 1 ASC");
    assert_eq!(tail("SELECT student_module_id AS id, created FROM h ORDER BY id"), " ORDER BY 1 ASC, 3 ASC");
    assert_eq!(tail("SELECT * FROM h ORDER BY student_module_id DESC"), " ORDER BY 7 DESC, 1 DESC");
    assert_eq!(tail("SELECT id, id FROM h ORDER BY id DESC"), " ORDER BY 1 DESC");
}

#[test]
fn distinct_without_id_sorts_by_every_column() {
    let plan = plan("SELECT DISTINCT student_module_id, grade FROM h ORDER BY grade DESC LIMIT 3").unwrap();
    assert_eq!(
        plan.side_clauses("id"),
        SideClauses { extra_column: None, tail: " ORDER BY 2 DESC, 1 ASC LIMIT 3".into() }
    );
    assert!(plan.needs_matching_copies());
    assert_eq!(tail("SELECT DISTINCT id, grade FROM h"), " ORDER BY 1 ASC");
}

#[test]
fn count_is_read_per_id() {
    let plan = plan("SELECT COUNT(*) AS `__count` FROM h WHERE student_module_id IN (1, 2)").unwrap();
    assert_eq!(plan.aggregates(), [Aggregate::Count]);
    assert_eq!(plan.side_limit(), None);
    assert!(!plan.needs_matching_copies());
    let clauses = plan.side_clauses("`h`.`id`");
    assert_eq!(clauses.extra_column.as_deref(), Some(", `h`.`id`"));
    assert_eq!(clauses.tail, " GROUP BY 2 ORDER BY 2 ASC");
    let both = super::plan("SELECT COUNT(grade), SUM(grade), MIN(created), MAX(id) FROM h LIMIT 1").unwrap();
    assert_eq!(both.aggregates(), [Aggregate::Count, Aggregate::Sum, Aggregate::Min, Aggregate::Max]);
    assert_eq!(both.limit(), Some(Limit { offset: 0, count: 1 }));
    assert_eq!(both.side_clauses("id").tail, " GROUP BY 5 ORDER BY 5 ASC");
    assert_eq!(both.to_string(), "aggregates by id: GROUP BY 5 ORDER BY 5 ASC");
}

#[test]
fn every_shape_that_cannot_be_merged_exactly_is_refused_with_its_reason() {
    use Unsupported::*;
    let cases: Vec<(&str, Unsupported)> = vec![
        ("SELECT student_module_id, COUNT(*) FROM h GROUP BY student_module_id", GroupBy),
        ("SELECT COUNT(*) FROM h HAVING COUNT(*) > 1", Having),
        ("SELECT id, ROW_NUMBER() OVER (ORDER BY created) FROM h", WindowFunction),
        ("SELECT AVG(grade) FROM h", Aggregate { function: "AVG".into() }),
        ("SELECT GROUP_CONCAT(state) FROM h", Aggregate { function: "GROUP_CONCAT".into() }),
        ("SELECT COUNT(DISTINCT student_module_id) FROM h", AggregateDistinct { function: "COUNT".into() }),
        ("SELECT COUNT(*) + 1 FROM h", ExpressionOverAggregate),
        ("SELECT IFNULL(SUM(grade), 0) FROM h", ExpressionOverAggregate),
        ("SELECT id, COUNT(*) FROM h", NotAnAggregate { item: "id".into() }),
        ("SELECT COUNT(*) AS n FROM h ORDER BY n", AggregateWithOrderBy),
        ("SELECT id FROM h ORDER BY created", OrderByNotSelected { expr: "created".into() }),
        ("SELECT id FROM h ORDER BY RAND()", OrderByNotSelected { expr: "RAND()".into() }),
        ("SELECT id, grade AS x, max_grade AS x FROM h ORDER BY x", AmbiguousOrderBy { name: "x".into() }),
        ("SELECT id FROM h ORDER BY 2", OrderByPosition { position: "2".into() }),
        ("SELECT id FROM h ORDER BY 0", OrderByPosition { position: "0".into() }),
        ("SELECT id FROM h ORDER BY id NULLS LAST", OrderByOption("NULLS FIRST or NULLS LAST")),
        ("SELECT id FROM h LIMIT ?", LimitNotLiteral),
        ("SELECT id FROM h LIMIT 1 OFFSET ?", LimitNotLiteral),
        ("SELECT id FROM h UNION SELECT id FROM h", Clause("UNION, INTERSECT or EXCEPT")),
        ("WITH x AS (SELECT 1) SELECT id FROM h", Clause("WITH")),
        ("SELECT id FROM h FOR UPDATE", Clause("FOR UPDATE or FOR SHARE")),
        ("SELECT SQL_CALC_FOUND_ROWS id FROM h LIMIT 1", Clause("SQL_CALC_FOUND_ROWS")),
        ("SELECT id FROM h JOIN courseware_studentmodule m ON m.id = h.student_module_id", NotAlone),
        ("SELECT h.id FROM h, auth_user", NotAlone),
    ];
    for (sql, expected) in cases {
        assert_eq!(refusal(sql), expected, "{sql}");
        assert!(!expected.to_string().is_empty());
    }
}

#[test]
fn subqueries_in_the_select_list_are_the_servers_business() {
    let plan = plan("SELECT id, (SELECT COUNT(*) FROM auth_user) AS users FROM h ORDER BY id DESC").unwrap();
    assert!(plan.aggregates().is_empty());
    assert_eq!(plan.side_clauses("id").tail, " ORDER BY 1 DESC");
}
