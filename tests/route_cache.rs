//! The route cache on edxapp's own statements: with any literals, a statement routed from the cache is routed as
//! the router routes it (a differential property test), and through the proxy in front of real servers a repeated
//! history read routed from the cache answers with its own rows.

mod support;

use csmh_proxy::history::{Stage, routing_table};
use csmh_proxy::routing::{CacheOutcome, Classified, Form, Router};
use csmh_proxy::sandbox::{SAMPLE_COURSE, SAMPLE_PROBLEMS};
use csmh_proxy::topology::Topology;
use mysql_async::prelude::*;
use mysql_async::{Conn, Row};
use proptest::prelude::*;
use support::edx::*;

/// A router for `stage` and `topology`, as a configuration snapshot compiles it.
fn router(stage: Stage, topology: Topology) -> Router {
    Router::new(
        routing_table(stage.flags()).expect("a stage's flags are valid"),
        format!("edxapp.{OLD}").parse().expect("a table name"),
        "edxapp_csmh.coursewarehistoryextended_studentmodulehistoryextended".parse().expect("a table name"),
        topology,
    )
}

/// Every stage that routes history statements, on one server and on two.
fn routers() -> Vec<Router> {
    let stages = [Stage::ExtendedTableReadingBoth, Stage::ExtendedTableOnlyReads, Stage::OldTableRetired];
    stages.iter().flat_map(|&stage| [Topology::OneServer, Topology::TwoServers].map(|t| router(stage, t))).collect()
}

/// The literals of edxapp's history statements.
struct Literals<'a> {
    module: u64,
    modules: &'a str,
    user: &'a str,
    course: &'a str,
    problem: &'a str,
    state: &'a str,
    created: &'a str,
}

/// edxapp's four history statements with `literals`.
fn edxapps(literals: &Literals<'_>) -> [String; 4] {
    let Literals { module, modules, user, course, problem, state, created } = *literals;
    [
        edxapp_insert_at(module, state, created),
        edxapp_read(modules),
        edxapp_subquery_read(user, course, problem),
        edxapp_delete(modules),
    ]
}

/// Text as mysqlclient writes it into a string literal: backslashes and quotes escaped.
fn escaped(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\'', "\\'").replace('"', "\\\"")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn edxapps_statements_from_the_cache_are_routed_as_the_router_routes_them(
        modules in proptest::collection::vec(1u64..u64::MAX, 1..4),
        user in "[a-z0-9_'\"\\\\é@.+-]{1,20}",
        course in "course-v1:[A-Za-z0-9+_]{1,20}",
        problem in "block-v1:[A-Za-z0-9+_@]{1,40}",
        state in "\\{(\"[a-z_]{1,8}\": (\"[a-zé' \\\\]{0,8}\"|[0-9]{1,4}), ){0,3}\"done\": true\\}",
        created in "20[0-9]{2}-[01][0-9]-[0-3][0-9] [0-2][0-9]:[0-5][0-9]:[0-5][0-9]\\.[0-9]{6}",
    ) {
        let (course_key, problem_key) = (SAMPLE_COURSE, SAMPLE_PROBLEMS[0]);
        let first = edxapps(&Literals {
            module: 42, modules: "42", user: "alice", course: course_key, problem: problem_key, state: "{}",
            created: "2024-06-01 12:00:00.000000",
        });
        let second = edxapps(&Literals {
            module: 7, modules: "7", user: "bob", course: "course-v1:x", problem: "block-v1:y",
            state: "{\\\"a\\\": 1}", created: "2024-06-02 12:00:00.000000",
        });
        let listed: Vec<String> = modules.iter().map(u64::to_string).collect();
        let (user, state) = (escaped(&user), escaped(&state));
        let others = edxapps(&Literals {
            module: modules[0], modules: &listed.join(", "), user: &user, course: &course, problem: &problem,
            state: &state, created: &created,
        });
        for router in routers() {
            for (index, ((first, second), other)) in first.iter().zip(&second).zip(&others).enumerate() {
                router.classify(first.as_bytes(), Form::Query);
                router.classify(second.as_bytes(), Form::Query);
                let (classified, outcome) = router.classify_reporting(other.as_bytes(), Form::Query);
                prop_assert_eq!(&classified, &Classified::Named(router.route(other.as_bytes())), "{}", other);
                let same_shape = index % 2 == 0 || modules.len() == 1;
                if same_shape {
                    prop_assert_eq!(outcome, Some(CacheOutcome::Hit), "{}", other);
                }
            }
        }
    }
}

/// The history ids a read answers, in its order.
async fn ids(conn: &mut Conn, read: String) -> Vec<u64> {
    conn.query_map(read, |row: Row| row.get(0).expect("an id")).await.expect("the read succeeds")
}

/// The cache's hits so far in `site`'s proxy.
fn hits(site: &Site) -> u64 {
    site.proxy.shared().metrics.route_cache_count(CacheOutcome::Hit)
}

#[tokio::test]
async fn a_repeated_history_read_routed_from_the_cache_returns_its_own_rows() {
    let site = Site::new(Stage::ExtendedTableReadingBoth.flags()).await;
    let mut edxapp = site.edxapp().await;
    assert_eq!(ids(&mut edxapp, edxapp_read("1")).await, vec![13, 7, 1]);
    assert_eq!(ids(&mut edxapp, edxapp_read("2")).await, vec![14, 8, 2]);
    assert_eq!(hits(&site), 0, "a read is cached once seen twice");
    assert_eq!(ids(&mut edxapp, edxapp_read("5")).await, vec![17, 11, 5]);
    assert_eq!(hits(&site), 1);

    edxapp.query_drop(edxapp_insert(6, "{\"new\": true}")).await.unwrap();
    let new_id = edxapp.last_insert_id().unwrap();
    site.copy_to_extended(&[12]).await;
    assert_eq!(ids(&mut edxapp, edxapp_read("6")).await, vec![new_id, 18, 12, 6], "both tables, each id once");
    assert_eq!(hits(&site), 2);

    let problem = SAMPLE_PROBLEMS[0];
    assert_eq!(ids(&mut edxapp, edxapp_subquery_read("alice", SAMPLE_COURSE, problem)).await, vec![13, 7, 1]);
    assert_eq!(ids(&mut edxapp, edxapp_subquery_read("carol", SAMPLE_COURSE, problem)).await, vec![17, 11, 5]);
    assert_eq!(ids(&mut edxapp, edxapp_subquery_read("bob", SAMPLE_COURSE, problem)).await, vec![15, 9, 3]);
    assert_eq!(hits(&site), 3);
    let metrics = &site.proxy.shared().metrics;
    assert_eq!(metrics.route_cache_count(CacheOutcome::Miss), 5, "two of each read, and the insert");
}

#[tokio::test]
async fn across_two_servers_a_cached_subquery_read_gets_its_values_from_edxapp() {
    let site = Site::two_servers(Stage::ExtendedTableReadingBoth.flags()).await;
    let mut edxapp = site.edxapp().await;
    edxapp.query_drop(edxapp_insert(3, "{}")).await.unwrap();
    let new_id = edxapp.last_insert_id().unwrap();
    let problem = SAMPLE_PROBLEMS[0];
    assert_eq!(ids(&mut edxapp, edxapp_subquery_read("alice", SAMPLE_COURSE, problem)).await, vec![13, 7, 1]);
    assert_eq!(ids(&mut edxapp, edxapp_subquery_read("carol", SAMPLE_COURSE, problem)).await, vec![17, 11, 5]);
    let bob = edxapp_subquery_read("bob", SAMPLE_COURSE, problem);
    assert_eq!(ids(&mut edxapp, bob).await, vec![new_id, 15, 9, 3]);
    assert_eq!(hits(&site), 1, "bob's read is routed from the cache");
}
