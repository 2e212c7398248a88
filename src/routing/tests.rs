use super::*;
use crate::history::Flags;
use crate::history::routing_table;
use crate::string_literal::Escaping;

const OLD: &str = "courseware_studentmodulehistory";
const EXT: &str = "`edxapp_csmh`.`coursewarehistoryextended_studentmodulehistoryextended`";

pub(super) fn router(extended: bool, reading_both: bool, retired: bool, topology: Topology) -> Router {
    let flags = Flags {
        enable_csmh_extended: extended,
        enable_reading_from_multiple_history_tables: reading_both,
        read_only_from_csmhe: retired,
    };
    Router::new(
        routing_table(flags).unwrap(),
        format!("edxapp.{OLD}").parse().unwrap(),
        "edxapp_csmh.coursewarehistoryextended_studentmodulehistoryextended".parse().unwrap(),
        topology,
    )
}

fn reading_both() -> Router {
    router(true, true, false, Topology::OneServer)
}

fn extended_only() -> Router {
    router(true, false, false, Topology::OneServer)
}

fn retired() -> Router {
    router(true, false, true, Topology::OneServer)
}

fn text(sql: &[u8]) -> String {
    String::from_utf8(sql.to_vec()).unwrap()
}

fn rewritten(route: Route) -> String {
    match route {
        Route::Rewrite(Rewritten { sql, .. }) => text(&sql),
        other => panic!("expected a rewrite, got {other:?}"),
    }
}

fn code(route: &Route) -> u16 {
    match route {
        Route::Block(e) | Route::Refuse(Refusal { error: e, .. }) => e.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// edxapp's history write, as mysqlclient interpolates it.
const EDXAPP_INSERT: &str = "INSERT INTO `courseware_studentmodulehistory` (`version`, `created`, `state`, `grade`, \
    `max_grade`, `student_module_id`) VALUES (NULL, '2016-05-01 12:00:00.000000', '{\\\"attempts\\\": 1}', 1.0, 2.0, 42)";

/// edxapp's history read from the user-state client.
const EDXAPP_READ: &str = "SELECT `courseware_studentmodulehistory`.`id`, `courseware_studentmodulehistory`.`version`, \
    `courseware_studentmodulehistory`.`created`, `courseware_studentmodulehistory`.`state`, \
    `courseware_studentmodulehistory`.`grade`, `courseware_studentmodulehistory`.`max_grade`, \
    `courseware_studentmodulehistory`.`student_module_id` FROM `courseware_studentmodulehistory` WHERE \
    `courseware_studentmodulehistory`.`student_module_id` IN (42, 43) ORDER BY `courseware_studentmodulehistory`.`id` DESC";

/// edxapp's cascade delete.
const EDXAPP_DELETE: &str = "DELETE FROM `courseware_studentmodulehistory` WHERE \
    `courseware_studentmodulehistory`.`student_module_id` IN (42, 43)";

/// The statements of these tests and edxapp's, for the route cache's differential test
/// (`routing/cache/tests.rs`): each with other literals must route from the cache as the router routes it.
pub(super) const CORPUS: &[&str] = &[
    EDXAPP_INSERT,
    EDXAPP_READ,
    EDXAPP_DELETE,
    "SELECT 'courseware_studentmodulehistory'",
    "INSERT INTO log (msg) VALUES (\"from courseware_studentmodulehistory\")",
    "INSERT INTO edxapp.courseware_studentmodulehistory VALUES (1, NULL, NOW(), 's', 1, 2, 42)",
    "SELECT `courseware_studentmodulehistory`.`id` FROM `courseware_studentmodulehistory` WHERE \
     `courseware_studentmodulehistory`.`student_module_id` IN (SELECT U0.`id` FROM `courseware_studentmodule` U0 \
     INNER JOIN `auth_user` U1 ON (U0.`student_id` = U1.`id`) WHERE (U0.`course_id` = 'c' AND U1.`username` = 'alice')) \
     ORDER BY `courseware_studentmodulehistory`.`id` DESC",
    "SELECT * FROM courseware_studentmodulehistory h WHERE h.id = 5",
    "UPDATE courseware_studentmodulehistory SET state = 'x' WHERE edxapp.courseware_studentmodulehistory.id = 7",
    "UPDATE courseware_studentmodulehistory SET grade = grade + 1 WHERE id = 2",
    "TRUNCATE TABLE courseware_studentmodulehistory",
    "ALTER TABLE courseware_studentmodulehistory ADD COLUMN x INT",
    "SELECT * FROM courseware_studentmodulehistory_retired_20260101 WHERE id = 7",
    "DELETE FROM `courseware_studentmodulehistory_retired_20260101_2` WHERE student_module_id IN (42)",
    "SELECT * FROM courseware_studentmodulehistory h JOIN courseware_studentmodule m ON m.id = h.student_module_id",
    "INSERT INTO courseware_studentmodulehistory (state, created, student_module_id) VALUES ('caf\u{e9} \\'', NOW(), 1)",
    r"INSERT INTO courseware_studentmodulehistory (state, version, student_module_id) VALUES ('a\'b\\c', X'00ff', 0x2A)",
    "SELECT id FROM courseware_studentmodulehistory WHERE student_module_id IN (SELECT U0.`id` FROM \
     `courseware_studentmodule` U0 WHERE U0.`student_id` = 7) ORDER BY id DESC",
    "SELECT id FROM courseware_studentmodulehistory WHERE grade = (SELECT MAX(grade) FROM courseware_studentmodule)",
    "SELECT student_module_id, AVG(grade) FROM courseware_studentmodulehistory WHERE grade > 0.5 GROUP BY student_module_id",
    "SELECT FROM courseware_studentmodulehistory WHERE state = 'secret' AND",
    "REPLACE INTO courseware_studentmodulehistory (id, state) VALUES (1, '')",
    "INSERT INTO courseware_studentmodulehistory (id, state) VALUES (1, '') ON DUPLICATE KEY UPDATE state = ''",
    "DELETE FROM courseware_studentmodulehistory WHERE student_module_id = 2 ORDER BY id LIMIT 10",
    "SELECT `courseware_studentmodulehistory`.`id` FROM `courseware_studentmodulehistory` \
     ORDER BY `courseware_studentmodulehistory`.`id` DESC LIMIT 2 OFFSET 1",
    "SELECT 1 AS `a` FROM `courseware_studentmodulehistory` WHERE `courseware_studentmodulehistory`.`id` = 19 LIMIT 1",
    "SELECT COUNT(*) AS `__count` FROM `courseware_studentmodulehistory` WHERE student_module_id = 3",
    "SELECT id, grade + 1 FROM courseware_studentmodulehistory WHERE student_module_id = 4 ORDER BY grade + 1, 1",
    "SELECT id FROM courseware_studentmodulehistory WHERE created > DATE '2020-01-01' AND state LIKE _utf8mb4'%x%' \
     /* a comment with 'quotes' */ AND grade BETWEEN 0.5 AND 1 -- and 2\n",
];

#[test]
fn with_every_flag_off_nothing_is_parsed() {
    let off = router(false, true, false, Topology::OneServer);
    assert!(off.is_passthrough());
    assert_eq!(off.route(b"HANDLER courseware_studentmodulehistory OPEN"), Route::Passthrough);
    assert_eq!(off.route(EDXAPP_INSERT.as_bytes()), Route::Passthrough);
}

#[test]
fn a_statement_longer_than_the_parse_limit_is_refused_unparsed_when_it_may_name_the_table() {
    let limit = EDXAPP_INSERT.len() - 1;
    let route = reading_both().with_parse_limit(limit).route(EDXAPP_INSERT.as_bytes());
    let Route::Refuse(Refusal { error, reason }) = route else { panic!("{route:?}") };
    assert_eq!(error.code, 1235);
    assert!(error.message.contains("listen.max_parsed_statement_bytes"), "{}", error.message);
    assert!(reason.contains(&EDXAPP_INSERT.len().to_string()), "{reason}");
    let within = reading_both().with_parse_limit(EDXAPP_INSERT.len()).route(EDXAPP_INSERT.as_bytes());
    assert!(matches!(within, Route::Rewrite(_)), "{within:?}");
    let off = router(false, false, false, Topology::OneServer).with_parse_limit(1);
    assert_eq!(off.route(EDXAPP_INSERT.as_bytes()), Route::Passthrough, "nothing is parsed with every flag off");
    let long_miss = format!("SELECT '{}'", "x".repeat(100));
    let classified = reading_both().with_parse_limit(10).classify(long_miss.as_bytes(), Form::Query);
    assert_eq!(classified, Classified::Unnamed, "statements the pre-filter lets through are not limited");
}

#[test]
fn names_in_literals_and_comments_pass_through() {
    for sql in [
        "SELECT 'courseware_studentmodulehistory'",
        "SELECT 1 /* courseware_studentmodulehistory */",
        "INSERT INTO log (msg) VALUES (\"from courseware_studentmodulehistory\")",
        "SELECT * FROM archive.courseware_studentmodulehistory",
    ] {
        assert_eq!(reading_both().route(sql.as_bytes()), Route::Passthrough, "{sql}");
    }
}

#[test]
fn insert_is_spliced_and_keeps_every_other_byte() {
    let sql = rewritten(reading_both().route(EDXAPP_INSERT.as_bytes()));
    assert_eq!(sql, EDXAPP_INSERT.replacen("`courseware_studentmodulehistory`", EXT, 1));
}

#[test]
fn insert_without_a_column_list_names_the_columns_in_the_old_order() {
    let sql = rewritten(
        extended_only()
            .route(b"INSERT INTO edxapp.courseware_studentmodulehistory VALUES (1, NULL, NOW(), 's', 1, 2, 42)"),
    );
    assert_eq!(
        sql,
        format!(
            "INSERT INTO {EXT} (`id`, `version`, `created`, `state`, `grade`, `max_grade`, `student_module_id`) VALUES (1, NULL, NOW(), 's', 1, 2, 42)"
        )
    );
}

#[test]
fn reading_both_on_one_server_is_merged_from_both_statements_on_the_clients_connection() {
    let Route::FanOut(FanOut::Merge(read)) = reading_both().route(EDXAPP_READ.as_bytes()) else { panic!() };
    let MergeServers::OneServer { union: Ok(union) } = &read.servers else { panic!("{:?}", read.servers) };
    let union = text(union);
    assert!(union.contains("UNION ALL"), "the read as one statement, for when the merge gives up: {union}");
    let (old, extended) = (text(&read.old), text(&read.extended));
    let condition = "`courseware_studentmodulehistory`.`student_module_id` IN (42, 43)";
    assert!(old.contains(&format!("WHERE ({condition}) AND NOT EXISTS (SELECT 1 FROM {EXT} AS")), "{old}");
    assert!(old.ends_with(" ORDER BY 1 DESC") && !old.contains("CAST("), "{old}");
    assert!(extended.contains(&format!("FROM {EXT} AS `courseware_studentmodulehistory` WHERE {condition}")));
}

#[test]
fn a_read_of_both_on_one_server_in_a_subquery_is_one_union_unless_correlated() {
    // edxapp's submission-history read: the history table is the outer FROM, its subquery reads edxapp tables.
    let edxapp = format!(
        "SELECT h.id FROM {OLD} h WHERE h.student_module_id IN (SELECT U0.id FROM courseware_studentmodule U0 \
         INNER JOIN auth_user U1 ON (U0.student_id = U1.id) WHERE U1.username = 'alice') ORDER BY h.id DESC"
    );
    let Route::FanOut(FanOut::Merge(read)) = reading_both().route(edxapp.as_bytes()) else { panic!() };
    assert!(matches!(read.servers, MergeServers::OneServer { union: Ok(_) }), "the union to fall back on");
    let nested = format!(
        "SELECT m.id FROM courseware_studentmodule m WHERE m.id NOT IN (SELECT U0.student_module_id FROM {OLD} U0 \
         WHERE U0.grade = 1.0)"
    );
    let Route::FanOut(FanOut::Union(sql)) = reading_both().route(nested.as_bytes()) else { panic!("{nested}") };
    assert!(text(&sql).contains("UNION ALL"));
    let correlated = format!(
        "SELECT m.id FROM courseware_studentmodule m WHERE EXISTS (SELECT 1 FROM {OLD} U1 WHERE U1.student_module_id \
         = m.id)"
    );
    assert_eq!(code(&reading_both().route(correlated.as_bytes())), 1235);
}

#[test]
fn prepared_reads_of_both_on_one_server_are_one_union_with_the_condition_in_each_branch() {
    let Route::FanOut(FanOut::Union(sql)) = reading_both().route_prepared(EDXAPP_READ.as_bytes()) else { panic!() };
    let sql = text(&sql);
    let condition = "(`courseware_studentmodulehistory`.`student_module_id` IN (42, 43))";
    assert_eq!(sql.matches(condition).count(), 2, "{sql}");
    assert!(sql.contains("UNION ALL"));
    assert!(sql.contains("NOT EXISTS"), "ids copied to the extended table are read from it only");
    assert!(sql.contains(") AS `courseware_studentmodulehistory` WHERE `courseware_studentmodulehistory`.`student_module_id` IN (42, 43) ORDER BY"));
    assert!(sql.starts_with("SELECT `courseware_studentmodulehistory`.`id`, "), "the projection is untouched");
}

#[test]
fn the_subquery_form_of_edxapps_read_is_pushed_into_each_branch() {
    let sql = "SELECT `courseware_studentmodulehistory`.`id` FROM `courseware_studentmodulehistory` WHERE \
               `courseware_studentmodulehistory`.`student_module_id` IN (SELECT U0.`id` FROM `courseware_studentmodule` U0 \
               INNER JOIN `auth_user` U1 ON (U0.`student_id` = U1.`id`) WHERE (U0.`course_id` = 'c' AND U1.`username` = 'alice')) \
               ORDER BY `courseware_studentmodulehistory`.`id` DESC";
    let Route::FanOut(FanOut::Union(union)) = reading_both().route_prepared(sql.as_bytes()) else { panic!() };
    let union = text(&union);
    assert_eq!(union.matches("U1.`username` = 'alice'").count(), 3, "{union}");
}

#[test]
fn reading_the_extended_table_alone_keeps_the_old_column_order() {
    let sql = rewritten(extended_only().route(b"SELECT * FROM courseware_studentmodulehistory h WHERE h.id = 5"));
    assert_eq!(
        sql,
        format!(
            "SELECT * FROM (SELECT h.`id`, h.`version`, h.`created`, h.`state`, h.`grade`, h.`max_grade`, h.`student_module_id` FROM {EXT} AS h) AS h WHERE h.id = 5"
        )
    );
}

#[test]
fn update_and_delete_fan_out_while_the_old_table_is_in_use() {
    let Route::FanOut(FanOut::Writes { old, extended, .. }) = extended_only().route(EDXAPP_DELETE.as_bytes()) else {
        panic!()
    };
    // The old side names the old table with its schema: it is that table whatever the session's database.
    let qualified = "DELETE FROM `edxapp`.`courseware_studentmodulehistory` WHERE";
    assert_eq!(text(&old), EDXAPP_DELETE.replacen("DELETE FROM `courseware_studentmodulehistory` WHERE", qualified, 1));
    assert_eq!(
        text(&extended),
        format!(
            "DELETE FROM {EXT} WHERE `coursewarehistoryextended_studentmodulehistoryextended`.`student_module_id` IN (42, 43)"
        )
    );
}

#[test]
fn once_retired_writes_go_to_the_extended_table_only() {
    let sql = rewritten(retired().route(
        b"UPDATE courseware_studentmodulehistory SET state = 'x' WHERE edxapp.courseware_studentmodulehistory.id = 7",
    ));
    assert_eq!(sql, format!("UPDATE {EXT} SET state = 'x' WHERE {EXT}.id = 7"));
}

#[test]
fn the_retired_table_refuses_what_would_reach_it_but_allows_schema_changes() {
    for sql in [
        "TRUNCATE TABLE courseware_studentmodulehistory",
        "DROP TABLE courseware_studentmodulehistory",
        "RENAME TABLE courseware_studentmodulehistory TO x",
        "ALTER TABLE courseware_studentmodulehistory RENAME TO x",
        "INSERT INTO archive SELECT * FROM courseware_studentmodulehistory",
    ] {
        assert_eq!(code(&retired().route(sql.as_bytes())), 1142, "{sql}");
    }
    for sql in [
        "ALTER TABLE courseware_studentmodulehistory ADD COLUMN x INT",
        "CREATE INDEX i ON courseware_studentmodulehistory (created)",
        "SHOW CREATE TABLE courseware_studentmodulehistory",
    ] {
        assert_eq!(retired().route(sql.as_bytes()), Route::Passthrough, "{sql}");
    }
}

#[test]
fn a_retired_copy_kept_by_truncate_old_is_another_table() {
    for sql in [
        "SELECT * FROM courseware_studentmodulehistory_retired_20260101 WHERE id = 7",
        "DROP TABLE edxapp.courseware_studentmodulehistory_retired_20260101",
        "DELETE FROM `courseware_studentmodulehistory_retired_20260101_2` WHERE student_module_id IN (42)",
    ] {
        assert_eq!(retired().route(sql.as_bytes()), Route::Passthrough, "{sql}");
        assert_eq!(reading_both().route(sql.as_bytes()), Route::Passthrough, "{sql}");
    }
}

#[test]
fn what_cannot_be_routed_exactly_is_refused() {
    for sql in [
        "HANDLER courseware_studentmodulehistory OPEN",
        "SELECT * FROM courseware_studentmodulehistory; SELECT 1",
        "SELECT * FROM courseware_studentmodulehistory h JOIN courseware_studentmodule m ON m.id = h.student_module_id",
        "INSERT INTO courseware_studentmodulehistory SELECT * FROM courseware_studentmodulehistory",
    ] {
        assert_eq!(code(&reading_both().route(sql.as_bytes())), 1235, "{sql}");
    }
}

#[test]
fn on_two_servers_rewrites_go_to_the_csmh_connection() {
    let two = router(true, false, false, Topology::TwoServers);
    let Route::Rewrite(Rewritten { on, .. }) = two.route(EDXAPP_INSERT.as_bytes()) else { panic!() };
    assert_eq!(on, Server::Csmh);
}

#[test]
fn non_utf8_bytes_are_kept_as_they_were() {
    let mut sql = b"INSERT INTO courseware_studentmodulehistory (state, created, student_module_id) VALUES ('".to_vec();
    sql.extend_from_slice(b"caf\xe9 \xff', NOW(), 1)");
    let Route::Rewrite(Rewritten { sql: out, .. }) = reading_both().route(&sql) else { panic!() };
    assert!(out.ends_with(b"VALUES ('caf\xe9 \xff', NOW(), 1)"));
    assert!(out.starts_with(format!("INSERT INTO {EXT} (state").as_bytes()));
}

#[test]
fn escapes_and_hex_literals_are_not_reprinted() {
    let sql = br"INSERT INTO courseware_studentmodulehistory (state, version, student_module_id) VALUES ('a\'b\\c', X'00ff', 0x2A)";
    let out = rewritten(reading_both().route(sql));
    assert!(out.ends_with(r"VALUES ('a\'b\\c', X'00ff', 0x2A)"), "{out}");
}

#[test]
fn a_prepared_condition_is_left_outside_the_union_so_the_parameter_count_stays() {
    let route =
        reading_both().route_prepared(b"SELECT id FROM courseware_studentmodulehistory WHERE student_module_id = ?");
    let Route::FanOut(FanOut::Union(sql)) = route else { panic!("{route:?}") };
    assert_eq!(text(&sql).matches('?').count(), 1, "{}", text(&sql));
    let with_subquery = b"SELECT id FROM courseware_studentmodulehistory WHERE grade > ? AND student_module_id IN \
        (SELECT id FROM courseware_studentmodule WHERE student_id = 3)";
    assert_eq!(code(&reading_both().route_prepared(with_subquery)), 1235);
}

#[test]
fn on_two_servers_subqueries_on_edxapp_tables_are_left_for_the_session_to_fill() {
    let two = router(true, false, false, Topology::TwoServers);
    let sql = "SELECT id FROM courseware_studentmodulehistory WHERE student_module_id IN (SELECT U0.`id` FROM \
               `courseware_studentmodule` U0 WHERE U0.`student_id` = 7) ORDER BY id DESC";
    let Route::Rewrite(Rewritten { sql: out, inline, on: Server::Csmh, .. }) = two.route(sql.as_bytes()) else {
        panic!()
    };
    let [Inline { at, query }] = inline.as_slice() else { panic!("{inline:?}") };
    assert_eq!(text(query), "SELECT U0.`id` FROM `courseware_studentmodule` U0 WHERE U0.`student_id` = 7");
    let mut filled = out.clone();
    filled.splice(*at..*at, b"(1, 2)".iter().copied());
    assert!(text(&filled).ends_with("WHERE student_module_id IN (1, 2) ORDER BY id DESC"), "{}", text(&filled));
}

#[test]
fn on_two_servers_what_needs_edxapp_tables_otherwise_is_refused() {
    let two = router(true, false, false, Topology::TwoServers);
    for sql in [
        "SELECT id FROM courseware_studentmodulehistory WHERE grade = (SELECT MAX(grade) FROM courseware_studentmodule)",
        "SELECT h.id FROM courseware_studentmodulehistory h, courseware_studentmodule m WHERE m.id = h.student_module_id",
        "INSERT INTO courseware_studentmodulehistory (state, created, student_module_id) SELECT state, modified, id FROM courseware_studentmodule",
    ] {
        assert_eq!(code(&two.route(sql.as_bytes())), 1235, "{sql}");
    }
}

#[test]
fn on_two_servers_reading_both_tables_is_merged_with_each_side_sorted_by_id() {
    let two = router(true, true, false, Topology::TwoServers);
    let Route::FanOut(FanOut::Merge(read)) = two.route(EDXAPP_READ.as_bytes()) else { panic!() };
    let MergeServers::TwoServers { old_widened, inline } = &read.servers else { panic!("{:?}", read.servers) };
    let (old, widened, extended) = (text(&read.old), text(old_widened), text(&read.extended));
    for side in [&old, &widened, &extended] {
        assert!(side.ends_with(" ORDER BY 1 DESC"), "{side}");
        assert!(side.starts_with("SELECT `courseware_studentmodulehistory`.`id`, "), "{side}");
    }
    let as_written = EDXAPP_READ.rsplit_once(" ORDER BY").unwrap().0;
    let old_words = old.split_whitespace().collect::<Vec<_>>().join(" ");
    let as_written = as_written.replacen(
        "FROM `courseware_studentmodulehistory`",
        "FROM `edxapp`.`courseware_studentmodulehistory`",
        1,
    );
    assert_eq!(
        old_words,
        format!("{as_written} ORDER BY 1 DESC"),
        "the text protocol's old side is the client's read, the old table named with its schema"
    );
    assert!(widened.contains("CAST(`courseware_studentmodulehistory`.`id` AS UNSIGNED)"), "{widened}");
    assert!(widened.contains("WHERE (`courseware_studentmodulehistory`.`student_module_id` IN (42, 43))"), "{widened}");
    assert!(extended.contains(&format!("FROM {EXT} AS `courseware_studentmodulehistory`")), "{extended}");
    assert!(!extended.contains("`edxapp`.`courseware"), "{extended}");
    assert!(inline.is_empty());
}

#[test]
fn on_two_servers_a_read_the_merge_cannot_answer_exactly_is_refused() {
    let two = router(true, true, false, Topology::TwoServers);
    let sql = b"SELECT student_module_id, AVG(grade) FROM courseware_studentmodulehistory GROUP BY student_module_id";
    assert_eq!(code(&two.route(sql)), 1235);
}

#[test]
fn a_refusals_logged_reason_leaves_out_the_parsers_quote_of_the_statement() {
    let sql = b"SELECT FROM courseware_studentmodulehistory WHERE state = 'secret' AND";
    let Route::Refuse(Refusal { error, reason }) = reading_both().route(sql) else { panic!() };
    assert_eq!(reason, "cannot parse it");
    assert!(
        error.message.starts_with(
            "csmh-proxy cannot route this statement on `edxapp`.`courseware_studentmodulehistory`: cannot parse it ("
        ),
        "{}",
        error.message
    );
    let join = b"SELECT h.id FROM courseware_studentmodulehistory h JOIN courseware_studentmodule m ON m.id = h.student_module_id";
    let Route::Refuse(Refusal { reason, .. }) = router(true, true, false, Topology::TwoServers).route(join) else {
        panic!()
    };
    assert!(!reason.contains('('), "{reason}");
}

#[test]
fn the_rights_a_statement_needs_on_the_old_table_tell_apart_every_form_that_needs_more() {
    let retired = router(true, false, true, Topology::TwoServers);
    let rights = |sql: &str| match retired.route(sql.as_bytes()) {
        Route::Rewrite(Rewritten { rights, .. }) => rights,
        other => panic!("expected a rewrite of {sql}, got {other:?}"),
    };
    let h = OLD;
    let select_insert = Rights::INSERT.union(Rights::SELECT);
    for (sql, expected) in [
        (format!("INSERT INTO {h} (state, student_module_id) VALUES ('{{}}', 1)"), Rights::INSERT),
        (format!("REPLACE INTO {h} (id, state) VALUES (1, '')"), Rights::INSERT.union(Rights::DELETE)),
        (
            format!("INSERT INTO {h} (id, state) VALUES (1, '') ON DUPLICATE KEY UPDATE state = ''"),
            select_insert.union(Rights::UPDATE),
        ),
        (format!("UPDATE {h} SET grade = 1"), Rights::UPDATE),
        (format!("UPDATE {h} SET grade = grade + 1"), Rights::UPDATE.union(Rights::SELECT)),
        (format!("UPDATE {h} SET grade = 1 WHERE id = 2"), Rights::UPDATE.union(Rights::SELECT)),
        (format!("DELETE FROM {h}"), Rights::DELETE),
        (format!("DELETE FROM {h} WHERE student_module_id = 2"), Rights::DELETE.union(Rights::SELECT)),
        (format!("DELETE FROM {h} RETURNING id, state"), Rights::DELETE.union(Rights::SELECT)),
        (format!("INSERT INTO {h} (state) VALUES ('') RETURNING id"), select_insert),
        (format!("SELECT id FROM {h} WHERE student_module_id = 2"), Rights::SELECT),
    ] {
        assert_eq!(rights(&sql), expected, "{sql}");
    }
}

#[test]
fn under_no_backslash_escapes_a_string_read_otherwise_is_refused() {
    let router = extended_only();
    // The tokenizer reads one string up to the last quote; under NO_BACKSLASH_ESCAPES the server reads the
    // string `'it\'`, then `FROM` the history table.
    let hidden = br"SELECT id, 'it\' FROM courseware_studentmodulehistory -- '";
    assert_eq!(router.route(hidden), Route::Passthrough);
    let (read_as_default, _) = router.classify_for(hidden, Form::Query, Reading::TOKENIZER);
    assert_eq!(read_as_default.into_route(), Route::Passthrough);
    let (refused, outcome) = router.classify_for(hidden, Form::Query, NO_BACKSLASH_ESCAPES);
    let Route::Refuse(refusal) = refused.into_route() else { panic!("refused") };
    assert!(refusal.error.message.contains("NO_BACKSLASH_ESCAPES"), "{}", refusal.error.message);
    assert_eq!(outcome, Some(CacheOutcome::Skipped));

    // Strings that end where the tokenizer ends them either way are routed as ever.
    for alike in [
        &br"SELECT id FROM courseware_studentmodulehistory WHERE state = 'a\\b' OR state = 'c''d'"[..],
        br"SELECT id FROM courseware_studentmodulehistory WHERE state = 'a\bc'",
        br"SELECT `a\b` FROM courseware_studentmodulehistory",
    ] {
        let (classified, _) = router.classify_for(alike, Form::Query, NO_BACKSLASH_ESCAPES);
        assert_eq!(classified.into_route(), router.route(alike), "{}", String::from_utf8_lossy(alike));
    }
}

/// A session with `NO_BACKSLASH_ESCAPES` and a character set whose characters hold no ASCII byte.
const NO_BACKSLASH_ESCAPES: Reading = Reading { escaping: Escaping::DoubledQuotes, ..Reading::TOKENIZER };

#[test]
fn under_a_gbk_family_client_charset_a_backslash_or_backquote_a_character_may_end_is_refused() {
    let router = extended_only();
    let gbk = Reading { charset: ClientCharset::SplitByEscapes, ..Reading::TOKENIZER };
    // `中` is E4 B8 AD in UTF-8, which gbk reads as E4 B8 and AD 5C: the backslash ends a character, the string
    // ends at the next quote, and the server reads `FROM` the history table that the tokenizer saw in a string.
    let hidden = "SELECT id, '中\\' FROM courseware_studentmodulehistory -- '".as_bytes();
    // Likewise AD 60: the backquote the tokenizer opens a name with is part of a character for the server.
    let unquoted = "SELECT 中` FROM courseware_studentmodulehistory -- ` FROM t".as_bytes();
    for statement in [hidden, unquoted] {
        let shown = String::from_utf8_lossy(statement);
        assert!(router.needs_session_settings(statement), "{shown}");
        assert_eq!(router.classify_for(statement, Form::Query, Reading::TOKENIZER).0.into_route(), Route::Passthrough);
        let (refused, outcome) = router.classify_for(statement, Form::Query, gbk);
        let Route::Refuse(refusal) = refused.into_route() else { panic!("refused: {shown}") };
        assert!(refusal.error.message.contains("character_set_client"), "{}", refusal.error.message);
        assert_eq!(outcome, Some(CacheOutcome::Skipped));
    }
    // Bytes above 0x7F before anything else are read alike, and need no character set read.
    for alike in
        ["SELECT id FROM courseware_studentmodulehistory WHERE state = '中 \\\\中' OR state = '中a'", "SELECT 1"]
    {
        let alike = alike.as_bytes();
        assert!(!router.needs_session_settings(alike), "{}", String::from_utf8_lossy(alike));
        let (classified, _) = router.classify_for(alike, Form::Query, gbk);
        assert_eq!(classified.into_route(), router.route(alike), "{}", String::from_utf8_lossy(alike));
    }
    // Statements the router does not parse need none either.
    assert!(!router.needs_session_settings("SELECT '中\\' FROM auth_user".as_bytes()));
}

#[test]
fn under_ansi_quotes_a_history_statement_with_double_quotes_is_refused() {
    let router = extended_only();
    let ansi_quotes = Reading { quotes: DoubleQuotes::Names, ..Reading::TOKENIZER };
    // Under ANSI_QUOTES the server reads the old table, the tokenizer a string; and a backslash there ends the
    // name for the server, where the tokenizer reads an escaped quote.
    let named = br#"SELECT id FROM "courseware_studentmodulehistory""#;
    let escaped = br#"SELECT "a\" FROM courseware_studentmodulehistory -- ""#;
    for statement in [&named[..], escaped] {
        let shown = String::from_utf8_lossy(statement);
        assert!(router.needs_session_settings(statement), "{shown}");
        assert_eq!(router.classify_for(statement, Form::Query, Reading::TOKENIZER).0.into_route(), Route::Passthrough);
        let Route::Refuse(refusal) = router.classify_for(statement, Form::Query, ansi_quotes).0.into_route() else {
            panic!("refused: {shown}")
        };
        assert!(refusal.error.message.contains("ANSI_QUOTES"), "{}", refusal.error.message);
    }
    // Double quotes escaped in a value, as client libraries write them, need no settings read.
    let json = br#"INSERT INTO courseware_studentmodulehistory (state) VALUES ('{\"attempts\": 1}')"#;
    assert!(!router.needs_session_settings(json));
    let (classified, _) = router.classify_for(json, Form::Query, ansi_quotes);
    assert_eq!(classified.into_route(), router.route(json));
}

#[test]
fn text_the_server_reads_otherwise_whatever_the_settings_is_refused() {
    let router = extended_only();
    for (sql, why) in [
        // The server's comment before any control character: the tokenizer reads a string to the end.
        ("DELETE --\x01'\nFROM courseware_studentmodulehistory -- '", "`--`"),
        ("DELETE ---\x7f'\nFROM courseware_studentmodulehistory -- '", "`--`"),
        // The tokenizer's comment before U+3000, which the server reads as a name.
        ("SELECT 0 --\u{3000}h.id FROM courseware_studentmodulehistory \u{3000}h", "`--`"),
        // A byte string without escapes for the tokenizer, `b` and an escaped string for the server.
        ("SELECT b\"\\\"\" , h.id FROM (SELECT 1 AS b) x, courseware_studentmodulehistory h -- \"", "byte string"),
        // The tokenizer does not read inside `/*M!`, the server runs it.
        ("DELETE FROM /*M!100000 courseware_studentmodulehistory */", "executable comment"),
        // `@@` and the backquote are one word to the tokenizer, which then opens a quoted name the server closes.
        ("DELETE h FROM (SELECT @@`autocommit` AS a) x, courseware_studentmodulehistory h /* ` */", "`@`"),
        ("CREATE DEFINER='root'@#'\n VIEW v AS SELECT * FROM courseware_studentmodulehistory -- '", "`@`"),
        ("CREATE DEFINER='root'@/*'*/ VIEW v AS SELECT * FROM courseware_studentmodulehistory #'", "`@`"),
        // What these run is a string to the router.
        ("PREPARE s FROM 'DELETE FROM courseware_studentmodulehistory'", "PREPARE"),
        ("EXECUTE IMMEDIATE 'DELETE FROM courseware_studentmodulehistory'", "EXECUTE IMMEDIATE"),
    ] {
        let Route::Refuse(refusal) = router.route(sql.as_bytes()) else { panic!("refused: {sql:?}") };
        assert!(refusal.error.message.contains(why), "{sql:?}: {}", refusal.error.message);
    }
    // `--` before ASCII white space is a comment for both, before anything else two minus signs for both.
    for alike in [
        "SELECT id FROM courseware_studentmodulehistory --\tnote",
        "SELECT id FROM courseware_studentmodulehistory WHERE id = 1 --1",
        "SELECT id FROM courseware_studentmodulehistory WHERE state = '--\u{e9}'",
        "SELECT id, @x, @@session.sql_mode FROM courseware_studentmodulehistory",
    ] {
        assert!(matches!(router.route(alike.as_bytes()), Route::Rewrite(_)), "{alike:?}");
    }
}

#[test]
fn several_statements_with_the_history_tables_name_anywhere_are_refused() {
    let router = extended_only();
    // An earlier statement can change how the server reads a later one: here the string ends early for it.
    for sql in [
        "SET NAMES gbk; SELECT id, '中\\' FROM courseware_studentmodulehistory -- '",
        "SET sql_mode = 'NO_BACKSLASH_ESCAPES'; SELECT 'x\\' FROM courseware_studentmodulehistory -- '",
        "SELECT 1; SELECT 'courseware_studentmodulehistory'",
    ] {
        let Route::Refuse(refusal) = router.route(sql.as_bytes()) else { panic!("refused: {sql}") };
        assert!(refusal.error.message.contains("several statements"), "{}", refusal.error.message);
    }
    // One statement and its semicolon are routed as ever.
    assert_eq!(router.route(b"SELECT 'courseware_studentmodulehistory';"), Route::Passthrough);
}

#[test]
fn a_word_with_a_byte_above_0x7f_in_a_statement_that_is_not_utf8_is_refused() {
    let router = extended_only();
    // latin1 reads 0xA0 as a space: the server reads `DELETE FROM courseware_studentmodulehistory`, the
    // tokenizer one word `FROM\u{a0}courseware_studentmodulehistory` (before, passed through).
    let Route::Refuse(refusal) = router.route(b"DELETE FROM\xa0courseware_studentmodulehistory") else { panic!() };
    assert!(refusal.error.message.contains("not UTF-8"), "{}", refusal.error.message);
    // In strings such bytes separate nothing (and are spliced as they came, see non_utf8_bytes_are_kept...).
    let quoted = b"SELECT id FROM courseware_studentmodulehistory WHERE state = '\xa0\xe9'";
    assert!(matches!(router.route(quoted), Route::Rewrite(_)));
}

#[test]
fn executable_comments_in_history_statements_are_refused() {
    // The tokenizer reads inside `/*! ... */` but places those tokens at the comment's start, so a splice there
    // would land on the wrong bytes (it made `SELECT <extended table> AS id FROM <old table>` of the first).
    let router = extended_only();
    for sql in [
        &b"/*!40101 SELECT id FROM courseware_studentmodulehistory */"[..],
        b"SELECT /*!99999 1, */ id FROM courseware_studentmodulehistory",
        b"SELECT id FROM courseware_studentmodulehistory /*M!100000 LIMIT 1 */",
    ] {
        let Route::Refuse(refusal) = router.route(sql) else { panic!("{}", String::from_utf8_lossy(sql)) };
        assert!(refusal.error.message.contains("executable comment"), "{}", refusal.error.message);
    }
    let no_history = b"/*!40101 SET NAMES utf8 */";
    assert_eq!(router.route(no_history), Route::Passthrough);
}

#[test]
fn an_update_or_delete_of_both_tables_with_a_limit_or_returning_is_refused() {
    for sql in [
        "DELETE FROM courseware_studentmodulehistory WHERE student_module_id = 7 ORDER BY id LIMIT 1",
        "UPDATE courseware_studentmodulehistory SET version = 'v' WHERE student_module_id = 7 ORDER BY id DESC LIMIT 1",
        "DELETE FROM courseware_studentmodulehistory WHERE student_module_id = 7 RETURNING id",
    ] {
        for topology in [Topology::OneServer, Topology::TwoServers] {
            for router in [router(true, true, false, topology), router(true, false, false, topology)] {
                assert_eq!(code(&router.route(sql.as_bytes())), 1235, "{sql}");
            }
        }
        assert!(matches!(retired().route(sql.as_bytes()), Route::Rewrite(_)), "one table: {sql}");
    }
}

#[test]
fn a_multi_table_update_or_delete_naming_the_history_table_anywhere_is_refused() {
    for sql in [
        "UPDATE courseware_studentmodule m JOIN courseware_studentmodulehistory h ON m.id = h.student_module_id \
         SET h.state = 'x' WHERE m.id = 1",
        "UPDATE courseware_studentmodule m, courseware_studentmodulehistory h SET h.state = 'x' WHERE m.id = 1",
        "DELETE h FROM courseware_studentmodule m JOIN courseware_studentmodulehistory h ON m.id = h.student_module_id",
        "DELETE FROM h USING courseware_studentmodulehistory h WHERE h.id = 24",
        "DELETE h FROM courseware_studentmodulehistory h WHERE h.id = 24",
    ] {
        for router in [reading_both(), extended_only(), retired()] {
            assert!(matches!(code(&router.route(sql.as_bytes())), 1235 | 1142), "{sql}");
            assert!(!matches!(router.route(sql.as_bytes()), Route::Passthrough), "{sql}");
        }
    }
}

#[test]
fn a_statement_that_reads_the_history_table_for_something_else_is_refused_while_the_old_table_is_not_all() {
    for sql in [
        "INSERT INTO archive SELECT * FROM courseware_studentmodulehistory",
        "CREATE TABLE archive AS SELECT * FROM courseware_studentmodulehistory",
        "SET @n = (SELECT COUNT(*) FROM courseware_studentmodulehistory)",
        "UPDATE courseware_studentmodule SET grade = (SELECT MAX(grade) FROM courseware_studentmodulehistory)",
        "DELETE FROM courseware_studentmodule WHERE id IN (SELECT student_module_id FROM courseware_studentmodulehistory)",
    ] {
        assert_eq!(code(&reading_both().route(sql.as_bytes())), 1235, "{sql}");
        assert_eq!(code(&extended_only().route(sql.as_bytes())), 1235, "{sql}");
        assert_eq!(router(false, true, false, Topology::OneServer).route(sql.as_bytes()), Route::Passthrough);
    }
    for sql in
        ["EXPLAIN SELECT * FROM courseware_studentmodulehistory", "TRUNCATE TABLE courseware_studentmodulehistory"]
    {
        assert_eq!(reading_both().route(sql.as_bytes()), Route::Passthrough, "{sql}");
    }
}

#[test]
fn on_two_servers_what_would_read_the_proxys_session_there_is_refused() {
    let h = OLD;
    for sql in [
        format!("SELECT id FROM {h} WHERE student_module_id = @sm"),
        format!("SELECT id FROM {h} WHERE student_module_id = @'sm'"),
        format!("SELECT id, @@hostname FROM {h}"),
        format!("SELECT id, CURRENT_USER FROM {h}"),
        format!("SELECT id, current_user() FROM {h}"),
        format!("SELECT CONNECTION_ID(), id FROM {h}"),
        format!("SELECT LOAD_FILE('/etc/passwd'), id FROM {h}"),
        format!("SELECT id INTO @x FROM {h} WHERE id = 1"),
        format!("SELECT id FROM {h} WHERE id = 1 INTO OUTFILE '/tmp/x'"),
        format!("UPDATE {h} SET version = 'v' WHERE student_module_id = @sm"),
        format!("INSERT INTO {h} (state, student_module_id) VALUES (USER(), LAST_INSERT_ID())"),
        format!("SELECT `DATABASE`(), id FROM {h}"),
        format!("SELECT `connection_id` (), id FROM {h}"),
        format!("SELECT SQL_CALC_FOUND_ROWS id FROM {h} WHERE student_module_id = 2 LIMIT 1"),
    ] {
        for flags in [(true, true, false), (true, false, false), (true, false, true)] {
            let two = router(flags.0, flags.1, flags.2, Topology::TwoServers);
            assert_eq!(code(&two.route(sql.as_bytes())), 1235, "{flags:?}: {sql}");
        }
        let one = router(true, false, false, Topology::OneServer);
        let parses = !sql.contains("@'") && !sql.contains("OUTFILE");
        assert!(
            !parses || !matches!(one.route(sql.as_bytes()), Route::Refuse(_)),
            "the client's own connection: {sql}"
        );
    }
    let two = router(true, false, false, Topology::TwoServers);
    for sql in [
        format!("SELECT id AS user, `database` FROM {h} WHERE student_module_id = 7"),
        format!("SELECT @@session.tx_isolation, @@time_zone, @@LOCAL.sql_mode, COUNT(*) FROM {h}"),
    ] {
        assert!(matches!(two.route(sql.as_bytes()), Route::Rewrite(_)), "names, and settings applied there: {sql}");
    }
    let sql = format!("SELECT @@global.time_zone, COUNT(*) FROM {h}");
    assert_eq!(code(&two.route(sql.as_bytes())), 1235, "the csmh server's own setting");
}

#[test]
fn on_two_servers_a_correlated_subquery_is_refused_not_run_on_edxapp_alone() {
    let two = router(true, false, false, Topology::TwoServers);
    let sql = format!(
        "SELECT h.id FROM {OLD} h WHERE h.student_module_id IN (SELECT U0.id FROM courseware_studentmodule U0 \
         WHERE U0.id = H.student_module_id)"
    );
    assert_eq!(code(&two.route(sql.as_bytes())), 1235);
    let quoted = format!(
        "SELECT `h`.id FROM {OLD} AS `h` WHERE `h`.student_module_id IN (SELECT U0.id FROM courseware_studentmodule \
         U0 WHERE U0.id = h.student_module_id)"
    );
    assert_eq!(code(&two.route(quoted.as_bytes())), 1235, "the alias quoted in one place and not the other");
    let uncorrelated = format!(
        "SELECT h.id FROM {OLD} h WHERE h.student_module_id IN (SELECT U0.id FROM courseware_studentmodule U0 \
         WHERE U0.student_id = 7)"
    );
    assert!(matches!(two.route(uncorrelated.as_bytes()), Route::Rewrite(_)));
}

#[test]
fn on_two_servers_a_union_branch_on_an_edxapp_table_is_refused() {
    let h = OLD;
    for sql in [
        format!("SELECT student_module_id FROM {h} WHERE id = 1 UNION SELECT id FROM courseware_studentmodule"),
        format!(
            "WITH m AS (SELECT id FROM courseware_studentmodule) SELECT id FROM {h} WHERE student_module_id IN (SELECT id FROM m)"
        ),
    ] {
        let two = router(true, false, false, Topology::TwoServers);
        assert_eq!(code(&two.route(sql.as_bytes())), 1235, "{sql}");
    }
}

#[test]
fn while_both_tables_are_read_an_insert_with_an_id_of_its_own_is_refused() {
    let h = OLD;
    for sql in [
        format!("INSERT INTO {h} (id, state, student_module_id) VALUES (20, 's', 7)"),
        format!("INSERT INTO {h} (state, id) VALUES ('s', NULL), ('t', 21)"),
        format!("INSERT INTO {h} VALUES (20, NULL, NOW(), 's', 1, 2, 7)"),
        format!("INSERT INTO {h} SET id = 20, state = 's'"),
        format!("REPLACE INTO {h} (id, state) VALUES (1 + 1, '')"),
    ] {
        assert_eq!(code(&reading_both().route(sql.as_bytes())), 1235, "{sql}");
        assert!(matches!(extended_only().route(sql.as_bytes()), Route::Rewrite(_)), "{sql}");
    }
    for sql in [
        format!("INSERT INTO {h} (id, state, student_module_id) VALUES (NULL, 's', 7), (DEFAULT, 't', 7)"),
        format!("INSERT INTO {h} VALUES (NULL, NULL, NOW(), 's', 1, 2, 7)"),
        format!("INSERT INTO {h} SET state = 's', student_module_id = 7"),
        EDXAPP_INSERT.to_owned(),
    ] {
        assert!(matches!(reading_both().route(sql.as_bytes()), Route::Rewrite(_)), "{sql}");
    }
}
