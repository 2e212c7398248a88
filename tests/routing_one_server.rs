//! Routing with both history tables on one server, driven the way edxapp drives it: Django's exact statements
//! through the proxy, checked against what the tables hold, for every stage of the routing table (docs/routing.md).

mod support;

use csmh_proxy::history::Stage;
use mysql_async::prelude::*;
use mysql_async::{Conn, Row};
use support::edx::*;

#[tokio::test]
async fn with_the_flags_off_everything_reaches_the_old_table() {
    let site = Site::new(Stage::OldTableOnly.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(edxapp_insert(1, "{}")).await.unwrap();
    let new_id = edxapp.last_insert_id().unwrap();
    assert!(site.old_ids().await.contains(&new_id));
    assert!(site.extended_ids().await.is_empty());
    let ids: Vec<u64> =
        edxapp.query(edxapp_read("1")).await.unwrap().into_iter().map(|r: Row| r.get(0).unwrap()).collect();
    assert_eq!(ids, vec![new_id, 13, 7, 1]);
}

#[tokio::test]
async fn reading_both_writes_new_history_to_the_extended_table_and_reads_both_once() {
    let site = Site::new(Stage::ExtendedTableReadingBoth.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(edxapp_insert(1, "{\"new\": true}")).await.unwrap();
    let new_id = edxapp.last_insert_id().unwrap();
    assert!(new_id >= site.first_extended_id, "the insert id {new_id} comes from the extended table's range");
    assert_eq!(site.extended_ids().await, vec![new_id]);
    assert_eq!(site.old_ids().await.len(), 18, "nothing new in the old table");

    site.copy_to_extended(&[7, 13]).await;
    let rows: Vec<(u64, String, u64)> = edxapp
        .query_map(edxapp_read("1, 2"), |r: Row| (r.get(0).unwrap(), r.get(3).unwrap(), r.get(6).unwrap()))
        .await
        .unwrap();
    let ids: Vec<u64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(ids, vec![new_id, 14, 13, 8, 7, 2, 1], "newest first, each id once");
    let copied: Vec<&str> = rows.iter().filter(|r| r.0 == 7 || r.0 == 13).map(|r| r.1.as_str()).collect();
    assert!(copied.iter().all(|s| s.ends_with("(copy)")), "a copied id is read from the extended table: {copied:?}");

    let count: Option<u64> = edxapp.query_first(format!("SELECT COUNT(*) AS `__count` FROM `{OLD}`")).await.unwrap();
    assert_eq!(count, Some(19), "COUNT(*) counts each id once");
    let page: Vec<u64> = edxapp
        .query(format!("SELECT `{OLD}`.`id` FROM `{OLD}` ORDER BY `{OLD}`.`id` DESC LIMIT 2 OFFSET 1"))
        .await
        .unwrap();
    assert_eq!(page, vec![18, 17]);
    let exists: Option<i64> = edxapp
        .query_first(format!("SELECT 1 AS `a` FROM `{OLD}` WHERE `{OLD}`.`id` = {new_id} LIMIT 1"))
        .await
        .unwrap();
    assert_eq!(exists, Some(1));
}

#[tokio::test]
async fn edxapps_subquery_read_returns_the_learners_history_from_both_tables() {
    let site = Site::new(Stage::ExtendedTableReadingBoth.flags()).await;
    let mut edxapp = site.edxapp().await;
    let problem = csmh_proxy::sandbox::SAMPLE_PROBLEMS[0];
    edxapp.query_drop(edxapp_insert(3, "{}")).await.unwrap();
    let new_id = edxapp.last_insert_id().unwrap();
    let read = edxapp_subquery_read("bob", csmh_proxy::sandbox::SAMPLE_COURSE, problem);
    let ids: Vec<u64> = edxapp.query_map(read, |r: Row| r.get(0).unwrap()).await.unwrap();
    assert_eq!(ids, vec![new_id, 15, 9, 3]);
}

#[tokio::test]
async fn the_conditions_are_pushed_into_each_branch_so_other_learners_rows_are_not_read() {
    let site = Site::new(Stage::ExtendedTableReadingBoth.flags()).await;
    let mut root = site.root().await;
    for (table, offset) in [(site.old(), 100_000), (site.extended(), 200_000)] {
        root.query_drop(format!(
            "INSERT INTO {table} (id, version, created, state, grade, max_grade, student_module_id) \
             SELECT seq + {offset}, NULL, NOW(6), '{{}}', 0, 1, 1000 + seq FROM `{}`.seq_1_to_30000",
            site.dbs.edxapp_db
        ))
        .await
        .unwrap();
    }
    root.query_drop(format!("ANALYZE TABLE {}, {}", site.old(), site.extended())).await.unwrap();
    let mut edxapp = site.edxapp().await;
    let problem = csmh_proxy::sandbox::SAMPLE_PROBLEMS[0];
    let read = edxapp_subquery_read("alice", csmh_proxy::sandbox::SAMPLE_COURSE, problem);
    let before = rows_read(&mut edxapp).await;
    let ids: Vec<u64> = edxapp.query_map(read, |r: Row| r.get(0).unwrap()).await.unwrap();
    let read_rows = rows_read(&mut edxapp).await - before;
    assert_eq!(ids, vec![13, 7, 1]);
    assert!(read_rows < 200, "the read touched {read_rows} rows of 60,000 others: conditions were not pushed down");
}

/// Rows the server has read for this session so far, by index or by scan.
async fn rows_read(conn: &mut Conn) -> u64 {
    let counters: Vec<(String, u64)> = conn
        .query("SHOW SESSION STATUS WHERE Variable_name IN ('Handler_read_rnd_next', 'Handler_read_next', 'Handler_read_key')")
        .await
        .unwrap();
    counters.into_iter().map(|(_, v)| v).sum()
}

#[tokio::test]
async fn update_and_delete_reach_both_tables_and_report_the_sum() {
    let site = Site::new(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(edxapp_insert(2, "{}")).await.unwrap();
    let new_id = edxapp.last_insert_id().unwrap();
    site.copy_to_extended(&[2]).await;

    edxapp.query_drop(format!("UPDATE `{OLD}` SET `state` = 'saved twice' WHERE `{OLD}`.`id` = 2")).await.unwrap();
    assert_eq!(edxapp.affected_rows(), 2, "the old row and its copy were updated");
    let states: Vec<String> = site
        .root()
        .await
        .query(format!(
            "SELECT state FROM {} WHERE id = 2 UNION ALL SELECT state FROM {} WHERE id = 2",
            site.old(),
            site.extended()
        ))
        .await
        .unwrap();
    assert_eq!(states, vec!["saved twice", "saved twice"]);

    edxapp.query_drop(edxapp_delete("2")).await.unwrap();
    assert_eq!(edxapp.affected_rows(), 3 + 1 + 1, "three old rows, the copy and the new row");
    assert!(!site.old_ids().await.contains(&2));
    assert!(!site.extended_ids().await.contains(&new_id));
}

#[tokio::test]
async fn reading_the_extended_table_alone_keeps_the_old_column_order() {
    let site = Site::new(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(edxapp_insert(4, "{\"only\": 1}")).await.unwrap();
    let mut result = edxapp.query_iter(format!("SELECT * FROM `{OLD}`")).await.unwrap();
    let names: Vec<String> = result.columns().unwrap().iter().map(|c| c.name_str().into_owned()).collect();
    assert_eq!(names, ["id", "version", "created", "state", "grade", "max_grade", "student_module_id"]);
    let rows: Vec<Row> = result.collect().await.unwrap();
    assert_eq!(rows.len(), 1, "only the extended table is read");
    assert_eq!(rows[0].get::<u64, _>(6), Some(4));
}

#[tokio::test]
async fn a_retired_table_refuses_what_would_reach_it_and_the_connection_goes_on() {
    let site = Site::new(Stage::OldTableRetired.flags()).await;
    let mut edxapp = site.edxapp().await;
    let (code, message) = server_error(edxapp.query_drop(format!("TRUNCATE TABLE `{OLD}`")).await);
    assert_eq!(code, 1142);
    assert!(message.contains(OLD) && message.contains("READ_ONLY_FROM_CSMHE"), "{message}");
    assert_eq!(site.old_ids().await.len(), 18, "nothing was truncated");
    edxapp.query_drop(format!("ALTER TABLE `{OLD}` ADD INDEX `proxy_test_idx` (`grade`)")).await.unwrap();
    edxapp.query_drop(edxapp_delete("1")).await.unwrap();
    assert_eq!(site.old_ids().await.len(), 18, "DELETE no longer reaches the retired table");
    let one: Option<i64> = edxapp.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
}

#[tokio::test]
async fn unroutable_statements_are_refused_and_false_positives_pass() {
    let site = Site::new(Stage::ExtendedTableReadingBoth.flags()).await;
    let mut edxapp = site.edxapp().await;
    let (code, _) = server_error(edxapp.query_drop(format!("HANDLER `{OLD}` OPEN")).await);
    assert_eq!(code, 1235);
    let (code, message) = server_error(
        edxapp
            .query_drop(format!(
                "SELECT h.id FROM `{OLD}` h JOIN courseware_studentmodule m ON m.id = h.student_module_id"
            ))
            .await,
    );
    assert_eq!(code, 1235, "{message}");
    let literal: Option<String> = edxapp.query_first(format!("SELECT '{OLD}' AS name")).await.unwrap();
    assert_eq!(literal.as_deref(), Some(OLD));
}

#[tokio::test]
async fn what_would_change_one_table_alone_or_each_table_apart_is_refused_and_changes_nothing() {
    let site = Site::new(Stage::ExtendedTableReadingBoth.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(edxapp_insert(1, "{\"new\": true}")).await.unwrap();
    let new_id = edxapp.last_insert_id().unwrap();
    site.copy_to_extended(&[7, 13]).await;
    let before = site.both_tables().await;
    for sql in [
        // The extended row moved to an old row's id would hide it (one table answers 1062).
        format!("UPDATE `{OLD}` SET `id` = 2 WHERE `id` = {new_id}"),
        format!(
            "INSERT INTO `{OLD}` (`version`, `created`, `state`, `student_module_id`) VALUES (NULL, NOW(), 'x', 1) \
             ON DUPLICATE KEY UPDATE `id` = 2"
        ),
        format!("DELETE FROM `{OLD}` WHERE `student_module_id` = 1 ORDER BY `id` LIMIT 1"),
        format!("UPDATE `{OLD}` SET `version` = 'limited' WHERE `student_module_id` = 1 ORDER BY `id` DESC LIMIT 1"),
        format!("DELETE FROM `{OLD}` WHERE `student_module_id` = 1 RETURNING `id`"),
        format!(
            "UPDATE courseware_studentmodule m JOIN `{OLD}` h ON m.id = h.student_module_id SET h.state = 'joined' \
             WHERE m.id = 1"
        ),
        format!("DELETE h FROM courseware_studentmodule m JOIN `{OLD}` h ON m.id = h.student_module_id WHERE m.id = 1"),
        format!("DELETE FROM h USING `{OLD}` h WHERE h.id = 7"),
        format!(
            "INSERT INTO `{OLD}` (`id`, `version`, `created`, `state`, `grade`, `max_grade`, `student_module_id`) \
             VALUES (2, NULL, NOW(), 'hides the old row 2', 0, 1, 2)"
        ),
        format!("CREATE TABLE `history_archive` AS SELECT * FROM `{OLD}`"),
    ] {
        let (code, message) = server_error(edxapp.query_drop(&sql).await);
        assert_eq!(code, 1235, "{sql}: {message}");
    }
    assert_eq!(site.both_tables().await, before, "both tables as they were");
    let one: Option<i64> = edxapp.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the connection goes on");
}

/// While both tables are read, a read of the history table in a subquery or a derived table sees both tables'
/// rows, an id in both once (the extended table's), as the outer query needs them. Before, the outer query was
/// answered as a merge planned as if it read the history table itself: Django's
/// `StudentModule.objects.exclude(studentmodulehistory__grade=1)` listed every module (and its `.delete()`
/// deleted them all), and a derived table's LIMIT applied to each table apart.
#[tokio::test]
async fn a_read_of_both_tables_in_a_subquery_or_a_derived_table_sees_their_rows_together() {
    let site = Site::new(Stage::ExtendedTableReadingBoth.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(edxapp_insert(1, "{\"new\": true}")).await.unwrap();
    edxapp.query_drop(edxapp_insert(2, "{\"new\": true}")).await.unwrap();
    site.copy_to_extended(&[7, 13]).await;
    let (old, extended) = (format!("`{}`.`{OLD}`", site.dbs.edxapp_db), site.extended());
    let columns = "id, grade, state, student_module_id";
    let both = format!(
        "(SELECT {columns} FROM {extended} UNION ALL SELECT {columns} FROM {old} WHERE id NOT IN (SELECT id FROM \
         {extended}))"
    );
    let mut direct = site.root().await;
    direct.query_drop(format!("USE `{}`", site.dbs.edxapp_db)).await.unwrap();
    for (query, expected) in [
        (
            "SELECT m.id FROM courseware_studentmodule m WHERE m.id IN (SELECT U0.student_module_id FROM {h} U0 \
             WHERE U0.state LIKE '%new%') ORDER BY m.id",
            Some(vec![1, 2]),
        ),
        (
            "SELECT m.id FROM courseware_studentmodule m WHERE m.id NOT IN (SELECT U0.student_module_id FROM {h} U0 \
             WHERE U0.grade = 1.0) ORDER BY m.id",
            None,
        ),
        ("SELECT t.id FROM (SELECT h0.id FROM {h} h0 ORDER BY h0.id DESC LIMIT 2) t ORDER BY t.id", None),
        ("SELECT COUNT(*) FROM (SELECT h0.id FROM {h} h0 ORDER BY h0.id LIMIT 3 OFFSET 1) subquery", Some(vec![3])),
    ] {
        let through: Vec<u64> =
            edxapp.query(query.replace("{h}", OLD)).await.unwrap_or_else(|e| panic!("{query}: {e}"));
        let reference: Vec<u64> = direct.query(query.replace("{h}", &both)).await.unwrap();
        assert_eq!(through, reference, "{query}");
        if let Some(expected) = expected {
            assert_eq!(through, expected, "{query}");
        }
    }
    // A correlated subquery (Django's `.exclude(studentmodulehistory__grade=1)`): the derived table both tables
    // are read through cannot see the outer query.
    let correlated = format!(
        "SELECT m.id FROM courseware_studentmodule m WHERE NOT (EXISTS (SELECT 1 AS a FROM {OLD} U1 WHERE \
         (U1.grade = 1.0 AND U1.student_module_id = (m.id)) LIMIT 1)) ORDER BY m.id"
    );
    let (code, message) = server_error(edxapp.query_drop(&correlated).await);
    assert_eq!(code, 1235, "{message}");
}

#[tokio::test]
async fn transactions_commit_and_roll_back_both_tables_together() {
    let site = Site::new(Stage::ExtendedTableReadingBoth.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED").await.unwrap();
    edxapp.query_drop("SET autocommit = 0").await.unwrap();
    edxapp.query_drop(edxapp_insert(5, "{}")).await.unwrap();
    edxapp.query_drop(edxapp_delete("6")).await.unwrap();
    edxapp.query_drop("ROLLBACK").await.unwrap();
    assert!(site.extended_ids().await.is_empty(), "the rolled-back insert is gone");
    assert_eq!(site.old_ids().await.len(), 18, "the rolled-back delete is undone");

    edxapp.query_drop("SAVEPOINT s1").await.unwrap();
    edxapp.query_drop(edxapp_insert(5, "{}")).await.unwrap();
    edxapp.query_drop("ROLLBACK TO SAVEPOINT s1").await.unwrap();
    edxapp.query_drop(edxapp_insert(5, "{\"kept\": 1}")).await.unwrap();
    edxapp.query_drop("COMMIT").await.unwrap();
    edxapp.query_drop("SET autocommit = 1").await.unwrap();
    assert_eq!(site.extended_ids().await.len(), 1, "only the insert after the savepoint survives");
}

#[tokio::test]
async fn multi_row_inserts_land_in_the_extended_table() {
    let site = Site::new(Stage::ExtendedTableReadingBoth.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp
        .query_drop(format!(
            "INSERT INTO `{OLD}` (`version`, `created`, `state`, `grade`, `max_grade`, `student_module_id`) VALUES \
             (NULL, NOW(6), 'a', 1, 1, 1), (NULL, NOW(6), 'b', 1, 1, 1), (NULL, NOW(6), 'c', 1, 1, 1)"
        ))
        .await
        .unwrap();
    assert_eq!(edxapp.affected_rows(), 3);
    assert_eq!(site.extended_ids().await.len(), 3);
}

#[tokio::test]
async fn a_flag_change_reaches_an_open_connection_but_not_a_transaction_in_flight() {
    let site = Site::new(Stage::OldTableOnly.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(edxapp_insert(1, "{}")).await.unwrap();
    edxapp.query_drop("BEGIN").await.unwrap();
    edxapp.query_drop(edxapp_insert(1, "{}")).await.unwrap();
    let config = site.dbs.proxy_toml(Stage::ExtendedTableReadingBoth.flags()).config().unwrap();
    site.proxy.shared().replace(config).unwrap();
    edxapp.query_drop(edxapp_insert(1, "{}")).await.unwrap();
    edxapp.query_drop("COMMIT").await.unwrap();
    assert_eq!(site.old_ids().await.len(), 21, "the transaction kept the flags it began with");
    edxapp.query_drop(edxapp_insert(1, "{}")).await.unwrap();
    assert_eq!(site.extended_ids().await.len(), 1, "the next statement uses the new flags");
}

#[tokio::test]
async fn prepared_statements_are_routed_at_prepare_time() {
    let site = Site::new(Stage::ExtendedTableReadingBoth.flags()).await;
    let mut edxapp = site.edxapp().await;
    let insert = format!(
        "INSERT INTO `{OLD}` (`version`, `created`, `state`, `grade`, `max_grade`, `student_module_id`) VALUES (NULL, NOW(6), ?, 1, 1, ?)"
    );
    edxapp.exec_drop(&insert, ("prepared", 6)).await.unwrap();
    assert_eq!(site.extended_ids().await.len(), 1);
    let read =
        format!("SELECT `{OLD}`.`id` FROM `{OLD}` WHERE `{OLD}`.`student_module_id` = 6 ORDER BY `{OLD}`.`id` DESC");
    let ids: Vec<u64> = edxapp.exec(&read, ()).await.unwrap();
    assert_eq!(ids.len(), 4);
    assert!(ids[0] >= site.first_extended_id);
    let with_parameter = read.replace("= 6", "= ?");
    let by_parameter: Vec<u64> = edxapp.exec(&with_parameter, (6,)).await.unwrap();
    assert_eq!(by_parameter, ids, "a parameter keeps its single place: the client's statement takes one");
    let with_subquery = format!(
        "{} AND `{OLD}`.`grade` >= ? ORDER BY `{OLD}`.`id`",
        read.replace(
            "= 6 ORDER BY `courseware_studentmodulehistory`.`id` DESC",
            "IN (SELECT id FROM courseware_studentmodule)"
        )
    );
    let (code, message) = server_error(edxapp.exec::<u64, _, _>(&with_subquery, (0,)).await);
    assert_eq!(code, 1235, "parameters next to a subquery are refused, not miscounted: {message}");
}

#[tokio::test]
async fn inserts_wait_for_a_safe_starting_id_of_the_extended_table() {
    let site = Site::new(Stage::ExtendedTableReadingBoth.flags()).await;
    let mut root = site.root().await;
    root.query_drop(format!("ALTER TABLE {} AUTO_INCREMENT = 1", site.extended())).await.unwrap();
    let mut edxapp = site.edxapp().await;
    let (code, message) = server_error(edxapp.query_drop(edxapp_insert(1, "{}")).await);
    assert_eq!(code, 1235);
    assert!(message.contains("csmh-proxy init"), "{message}");
    assert!(site.extended_ids().await.is_empty(), "nothing was written");
    root.query_drop(format!("ALTER TABLE {} AUTO_INCREMENT = 50000", site.extended())).await.unwrap();
    edxapp.query_drop(edxapp_insert(1, "{}")).await.unwrap();
    assert_eq!(edxapp.last_insert_id(), Some(50000), "once the starting id is safe, inserts go through");
}

#[tokio::test]
async fn prepared_update_and_delete_reach_both_tables() {
    let site = Site::new(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(edxapp_insert(3, "{}")).await.unwrap();
    site.copy_to_extended(&[3]).await;
    let update = format!("UPDATE `{OLD}` SET `state` = ? WHERE `{OLD}`.`student_module_id` = ?");
    edxapp.exec_drop(&update, ("prepared", 3)).await.unwrap();
    assert_eq!(edxapp.affected_rows(), 3 + 1 + 1, "three old rows, the copy of one, the new row");
    edxapp.exec_drop(&update, ("again", 3)).await.unwrap();
    assert_eq!(edxapp.affected_rows(), 5, "the same statement executed again reaches both tables again");
    let delete = format!("DELETE FROM `{OLD}` WHERE `{OLD}`.`student_module_id` = ?");
    edxapp.exec_drop(&delete, (3,)).await.unwrap();
    assert_eq!(edxapp.affected_rows(), 5);
    assert!(!site.old_ids().await.contains(&3));
    assert_eq!(site.extended_ids().await, Vec::<u64>::new());
    let missing = edxapp.exec_drop(format!("UPDATE `{OLD}` SET `nope` = ? WHERE id = ?"), (1, 1)).await;
    assert_eq!(server_error(missing).0, 1054, "a statement the server cannot prepare fails as it would directly");
}

/// The ids and state lengths of module `module`'s history, read through the proxy.
async fn history_of(conn: &mut Conn, module: u64) -> Vec<(u64, usize)> {
    let read = edxapp_read(&module.to_string());
    conn.query_map(read, |r: Row| (r.get(0).unwrap(), r.get::<String, _>(3).unwrap().len())).await.unwrap()
}

#[tokio::test]
async fn a_read_of_both_tables_sees_its_own_transaction_and_is_whole_at_any_size() {
    let site = Site::new(Stage::ExtendedTableReadingBoth.flags()).await;
    let mut edxapp = site.edxapp().await;
    let ids = |rows: Vec<(u64, usize)>| rows.into_iter().map(|(id, _)| id).collect::<Vec<_>>();

    edxapp.query_drop("SET autocommit = 0").await.unwrap();
    edxapp.query_drop(edxapp_insert(1, "{\"uncommitted\": 1}")).await.unwrap();
    let new_id = edxapp.last_insert_id().unwrap();
    assert_eq!(ids(history_of(&mut edxapp, 1).await), vec![new_id, 13, 7, 1], "the transaction's own row");
    edxapp.query_drop("ROLLBACK").await.unwrap();
    edxapp.query_drop("SET autocommit = 1").await.unwrap();
    assert_eq!(ids(history_of(&mut edxapp, 1).await), vec![13, 7, 1]);

    // Six 1 MiB states in the old table: more than the proxy holds of one side while it merges.
    site.root()
        .await
        .query_drop(format!(
            "INSERT INTO {} (id, version, created, state, grade, max_grade, student_module_id) \
             SELECT 1000 + seq, NULL, NOW(6), REPEAT('x', 1048576), 1, 1, 1 FROM `{}`.seq_1_to_6",
            site.old(),
            site.dbs.edxapp_db
        ))
        .await
        .unwrap();
    site.copy_to_extended(&[1003, 7]).await;
    let rows = history_of(&mut edxapp, 1).await;
    assert_eq!(ids(rows.clone()), vec![1006, 1005, 1004, 1003, 1002, 1001, 13, 7, 1]);
    assert_eq!(rows[3].1, 1048576 + " (copy)".len(), "a copied id is read from the extended table");
    assert!(rows[..6].iter().all(|(_, len)| *len >= 1048576), "{rows:?}");

    let both_fail = format!(
        "SELECT `{OLD}`.`id` FROM `{OLD}` WHERE `{OLD}`.`student_module_id` = \
         (SELECT `id` FROM `courseware_studentmodule`) ORDER BY `{OLD}`.`id` DESC"
    );
    assert_eq!(server_error(edxapp.query_drop(both_fail).await).0, 1242, "subquery returns more than 1 row");
    assert_eq!(ids(history_of(&mut edxapp, 2).await), vec![14, 8, 2], "the connection goes on");
}

#[tokio::test]
async fn inserts_into_the_retired_stage_do_not_look_at_the_old_table() {
    let site = Site::new(Stage::OldTableRetired.flags()).await;
    let mut locker = site.root().await;
    locker.query_drop(format!("LOCK TABLES {} WRITE", site.old())).await.unwrap();
    let mut edxapp = site.edxapp().await;
    let insert = edxapp.query_drop(edxapp_insert(1, "{}"));
    let inserted = tokio::time::timeout(std::time::Duration::from_secs(20), insert).await;
    assert!(inserted.is_ok_and(|r| r.is_ok()), "the insert waited for the old table's lock (truncate-old holds one)");
    assert_eq!(site.extended_ids().await.len(), 1);
    locker.query_drop("UNLOCK TABLES").await.unwrap();
}

#[tokio::test]
async fn under_no_backslash_escapes_a_history_statement_the_router_would_misread_is_refused() {
    let site = Site::new(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("SET SESSION sql_mode = CONCAT(@@session.sql_mode, ',NO_BACKSLASH_ESCAPES')").await.unwrap();
    // The server reads the string `'it\'`, then the old table, which this stage no longer reads; the tokenizer
    // reads one string to the end (checked: before, the statement ran on the old table).
    let hidden = r"SELECT id, 'it\' FROM courseware_studentmodulehistory -- '";
    let (code, message) = server_error(edxapp.query_drop(hidden).await);
    assert_eq!(code, 1235, "{message}");
    assert!(message.contains("NO_BACKSLASH_ESCAPES"), "{message}");
    // A backslash that ends no string early is routed as ever: here to the extended table, which is empty.
    let ids: Vec<u64> =
        edxapp.query(r"SELECT id FROM courseware_studentmodulehistory WHERE state <> 'a\b' OR id > 0").await.unwrap();
    assert!(ids.is_empty(), "{ids:?}");
}

#[tokio::test]
async fn under_a_gbk_family_client_charset_a_history_statement_the_router_would_misread_is_refused() {
    let site = Site::new(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    // `中` is E4 B8 AD in UTF-8, which gbk reads as E4 B8 and AD 5C: the backslash ends a character, the string
    // ends at the quote after it, and the server reads the old table, which this stage no longer reads, where
    // the tokenizer reads one string to the end (checked: before, the statement ran on the old table).
    let hidden = "SELECT id, '中\\' FROM courseware_studentmodulehistory -- '";
    edxapp.query_drop("SET NAMES gbk").await.unwrap();
    let (code, message) = server_error(edxapp.query_drop(hidden).await);
    assert_eq!(code, 1235, "{message}");
    assert!(message.contains("character_set_client"), "{message}");
    // In utf8mb4 the server reads it as the tokenizer does: one string, and no table to read `id` from.
    edxapp.query_drop("SET NAMES utf8mb4").await.unwrap();
    let (code, message) = server_error(edxapp.query_drop(hidden).await);
    assert_eq!(code, 1054, "{message}");
    // Nor can a statement before it change the character set the check read (checked: before, it ran).
    let (code, message) = server_error(edxapp.query_drop(format!("SET NAMES gbk; {hidden}")).await);
    assert_eq!(code, 1235, "{message}");
    assert!(message.contains("several statements"), "{message}");
}

#[tokio::test]
async fn under_ansi_quotes_a_history_table_named_in_double_quotes_is_refused() {
    let site = Site::new(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    let in_double_quotes = r#"SELECT id FROM "courseware_studentmodulehistory" WHERE "id" > 0"#;
    // Without ANSI_QUOTES it holds strings: the server finds no table.
    let (code, message) = server_error(edxapp.query_drop(in_double_quotes).await);
    assert_eq!(code, 1064, "{message}");
    // With it, the server reads the old table, which this stage no longer reads, where the tokenizer reads a
    // string (checked: before, the statement ran on the old table).
    edxapp.query_drop("SET SESSION sql_mode = CONCAT(@@session.sql_mode, ',ANSI_QUOTES')").await.unwrap();
    let (code, message) = server_error(edxapp.query_drop(in_double_quotes).await);
    assert_eq!(code, 1235, "{message}");
    assert!(message.contains("ANSI_QUOTES"), "{message}");
    // Names in backquotes are routed as ever: to the extended table, which is empty.
    let ids: Vec<u64> =
        edxapp.query(r#"SELECT id FROM `courseware_studentmodulehistory` WHERE state <> '\"'"#).await.unwrap();
    assert!(ids.is_empty(), "{ids:?}");
}

#[tokio::test]
async fn under_latin1_a_space_the_router_reads_as_a_letter_is_refused() {
    let site = Site::new(Stage::ExtendedTableOnlyReads.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop("SET NAMES latin1").await.unwrap();
    // latin1 reads 0xA0 as a space, so the server reads the old table, which this stage no longer reads; the
    // tokenizer reads one word `FROM\u{a0}courseware_studentmodulehistory` (checked: before, it ran there).
    let hidden: &[u8] = b"SELECT id FROM\xa0courseware_studentmodulehistory";
    let (code, message) = server_error(edxapp.query_drop(hidden).await);
    assert_eq!(code, 1235, "{message}");
    assert!(message.contains("not UTF-8"), "{message}");
}

#[tokio::test]
async fn text_the_server_reads_otherwise_than_the_router_is_refused_and_the_retired_table_keeps_its_rows() {
    let site = Site::new(Stage::OldTableRetired.flags()).await;
    let mut edxapp = site.edxapp().await;
    // Each reached the retired table on the server, unseen by the router (checked: before, each ran there).
    for (hidden, why) in [
        // The server's comment before a control character; the tokenizer reads a string to the end.
        (format!("DELETE --\x01'\nFROM {OLD} -- '"), "`--`"),
        // The tokenizer's comment before U+3000; the server reads `0 - - <name>.id FROM` the old table.
        (format!("SELECT 0 --\u{3000}h.id FROM {OLD} \u{3000}h"), "`--`"),
        // A byte string without escapes for the tokenizer; the name `b` and an escaped string for the server.
        (format!(r#"SELECT b"\"" , h.id FROM (SELECT 1 AS b) x, {OLD} h -- ""#), "byte string"),
        // A comment to the tokenizer, which MariaDB runs.
        (format!("DELETE FROM /*M!100000 {OLD} */"), "executable comment"),
        // `@@` and a backquote: one word to the tokenizer, which then reads a quoted name to the comment's end.
        (format!("DELETE h FROM (SELECT @@`autocommit` AS a) x, {OLD} h /* ` */"), "`@`"),
        // A string to the router, which the server prepares.
        (format!("PREPARE s FROM 'DELETE FROM {OLD}'"), "PREPARE"),
    ] {
        let (code, message) = server_error(edxapp.query_drop(&hidden).await);
        assert_eq!(code, 1235, "{hidden:?}: {message}");
        assert!(message.contains(why), "{hidden:?}: {message}");
    }
    let (code, message) = server_error(edxapp.query_drop("EXECUTE s").await);
    assert_eq!(code, 1243, "nothing was prepared: {message}");
    assert_eq!(site.old_ids().await.len(), 18, "the retired table keeps its rows");
    let one: Option<i64> = edxapp.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the session goes on");
}
