use proptest::prelude::*;

use super::*;
use crate::routing::literals::LiteralKind;
use crate::routing::tests::{CORPUS, router};
use crate::routing::{Classified, FanOut, Form, MergeServers};
use crate::topology::Topology;

const OLD: &str = "courseware_studentmodulehistory";

fn reading_both(topology: Topology) -> Router {
    router(true, true, false, topology)
}

/// edxapp's user-state read of the modules `modules`.
fn user_state_read(modules: &str) -> String {
    format!(
        "SELECT `{OLD}`.`id`, `{OLD}`.`state` FROM `{OLD}` WHERE `{OLD}`.`student_module_id` IN ({modules}) ORDER BY `{OLD}`.`id` DESC"
    )
}

fn classify(router: &Router, sql: &str) -> (Route, Option<CacheOutcome>) {
    let (classified, outcome) = router.classify_reporting(sql.as_bytes(), Form::Query);
    (classified.into_route(), outcome)
}

#[test]
fn a_statement_seen_twice_is_routed_from_the_cache_with_other_literals() {
    for topology in [Topology::OneServer, Topology::TwoServers] {
        let router = reading_both(topology);
        assert_eq!(classify(&router, &user_state_read("1")).1, Some(CacheOutcome::Miss));
        assert!(router.cache().is_empty(), "a statement seen once is not cached");
        assert_eq!(classify(&router, &user_state_read("2")).1, Some(CacheOutcome::Miss));
        assert_eq!(router.cache().len(), 1);
        let read = user_state_read("123456789");
        let (route, outcome) = classify(&router, &read);
        assert_eq!(outcome, Some(CacheOutcome::Hit));
        assert_eq!(route, router.route(read.as_bytes()));
        let Route::FanOut(FanOut::Merge(merge)) = route else { panic!("{route:?}") };
        assert!(String::from_utf8_lossy(&merge.extended).contains("IN (123456789)"));
        assert_eq!(classify(&router, &user_state_read("1, 2")).1, Some(CacheOutcome::Miss), "another shape");
    }
}

#[test]
fn subquery_values_land_where_the_session_fills_them_in() {
    let router = reading_both(Topology::TwoServers);
    let read = |user: &str| {
        format!(
            "SELECT `{OLD}`.`id` FROM `{OLD}` WHERE `{OLD}`.`student_module_id` IN (SELECT U0.`id` FROM \
             `courseware_studentmodule` U0 WHERE U0.`course_id` = '{user}') AND `{OLD}`.`grade` > 0.5 ORDER BY `{OLD}`.`id` DESC"
        )
    };
    classify(&router, &read("a"));
    classify(&router, &read("b"));
    let long = read("a much longer course key, with ''quotes'' and \\' and é");
    let (route, outcome) = classify(&router, &long);
    assert_eq!(outcome, Some(CacheOutcome::Hit));
    assert_eq!(route, router.route(long.as_bytes()));
    let Route::FanOut(FanOut::Merge(merge)) = route else { panic!() };
    let MergeServers::TwoServers { inline, .. } = &merge.servers else { panic!() };
    assert!(String::from_utf8_lossy(&inline[0].query).contains("'quotes''"));
}

#[test]
fn values_the_router_reads_must_match_for_a_hit() {
    let router = reading_both(Topology::OneServer);
    let page = |module: u32, limit: u32| {
        format!("SELECT `id` FROM `{OLD}` WHERE student_module_id = {module} ORDER BY `id` LIMIT {limit}")
    };
    classify(&router, &page(1, 10));
    classify(&router, &page(2, 10));
    assert_eq!(classify(&router, &page(3, 10)).1, Some(CacheOutcome::Hit));
    let (route, outcome) = classify(&router, &page(3, 20));
    assert_eq!(outcome, Some(CacheOutcome::Miss), "another LIMIT");
    assert_eq!(route, router.route(page(3, 20).as_bytes()));
}

#[test]
fn what_is_not_cached() {
    let router = reading_both(Topology::OneServer);
    let (_, prepared) = router.classify_reporting(user_state_read("1").as_bytes(), Form::Prepare);
    assert_eq!(prepared, Some(CacheOutcome::Skipped), "statements to prepare");
    let latin1 = format!("SELECT `id` FROM `{OLD}` WHERE state = '\u{e9}'").replace('\u{e9}', "\u{1}");
    let mut latin1 = latin1.into_bytes();
    let at = latin1.iter().position(|&b| b == 1).unwrap();
    latin1[at] = 0xe9;
    assert_eq!(router.classify_reporting(&latin1, Form::Query).1, Some(CacheOutcome::Skipped), "not UTF-8");
    let long = user_state_read(&vec!["1"; MAX_STATEMENT_BYTES / 2].join(","));
    assert_eq!(classify(&router, &long).1, Some(CacheOutcome::Skipped), "longer than the cache keeps");
    let limited = reading_both(Topology::OneServer).with_parse_limit(20);
    assert!(matches!(classify(&limited, &user_state_read("1")), (Route::Refuse(_), Some(CacheOutcome::Skipped))));
    let off = router_with_flags_off();
    assert_eq!(classify(&off, &user_state_read("1")).1, None, "nothing is routed");
    assert_eq!(router.classify_reporting(b"SELECT 1", Form::Query), (Classified::Unnamed, None));

    let two = reading_both(Topology::TwoServers);
    let refused = |n: u32| format!("SELECT student_module_id, AVG(grade) FROM {OLD} WHERE grade > {n} GROUP BY 1");
    for n in 0..3 {
        assert!(matches!(classify(&two, &refused(n)), (Route::Refuse(_), Some(CacheOutcome::Miss))));
    }
    assert!(two.cache().is_empty(), "refusals are not cached");
    let with_core = |n: u32| user_state_read(&format!("9753108{n}"));
    for n in 0..3 {
        assert_eq!(classify(&router, &with_core(n)).1, Some(CacheOutcome::Miss));
    }
    assert!(router.cache().is_empty(), "a statement holding the markers' digits is not cached");
}

fn router_with_flags_off() -> Router {
    router(false, false, false, Topology::OneServer)
}

#[test]
fn the_cache_is_bounded() {
    let router = reading_both(Topology::OneServer);
    for n in 0..1200 {
        let read = format!("SELECT `id` AS `a{n}` FROM `{OLD}` WHERE `student_module_id` = 1");
        classify(&router, &read);
        classify(&router, &read);
    }
    let entries = router.cache().len();
    assert!((SHARDS * ENTRIES_PER_SHARD / 2..=SHARDS * ENTRIES_PER_SHARD).contains(&entries), "{entries}");
}

/// A literal of `kind` built from generated parts: numbers as they are, strings in their quotes with escapes,
/// doubled quotes, UTF-8, the markers' digits and the table's name.
fn literal(kind: LiteralKind, number: &str, parts: &[String]) -> String {
    match kind {
        LiteralKind::Number => number.to_owned(),
        LiteralKind::Quoted(quote) => {
            let quote = char::from(quote);
            let body: String = parts
                .iter()
                .map(|part| match part.as_str() {
                    "QUOTE" => format!("{quote}{quote}"),
                    "ESCAPED" => format!("\\{quote}"),
                    other => other.to_owned(),
                })
                .collect();
            format!("{quote}{body}{quote}")
        }
    }
}

fn string_parts() -> impl Strategy<Value = Vec<String>> {
    let part = prop_oneof![
        4 => "[a-z0-9 %_:+-]{0,6}",
        1 => Just("é😀".to_owned()),
        1 => Just("\\\\".to_owned()),
        1 => Just("QUOTE".to_owned()),
        1 => Just("ESCAPED".to_owned()),
        1 => Just("\"`'".to_owned()).prop_map(|s| s.replace('\'', "\\'").replace('"', "\\\"")),
        1 => Just("\\n".to_owned()),
        1 => Just("9753108".to_owned()),
        1 => Just(OLD.to_owned()),
    ];
    proptest::collection::vec(part, 0..5)
}

/// `sql` with each literal replaced by a generated one of its kind.
fn with_literals(sql: &str, numbers: &[String], strings: &[Vec<String>]) -> Option<String> {
    let scan = literals::scan(sql.as_bytes())?;
    let mut out = String::new();
    let mut at = 0;
    for (i, l) in scan.literals.iter().enumerate() {
        out.push_str(&sql[at..l.range.start]);
        out.push_str(&literal(l.kind, &numbers[i % numbers.len()], &strings[i % strings.len()]));
        at = l.range.end;
    }
    out.push_str(&sql[at..]);
    Some(out)
}

/// How many of the corpus's first statements are edxapp's, which must be routed from the cache.
const EDXAPPS: usize = 3;

/// Every stage and topology.
fn routers() -> Vec<Router> {
    let flags = [(true, true, false), (true, false, false), (true, false, true), (false, false, false)];
    let topologies = [Topology::OneServer, Topology::TwoServers];
    flags.iter().flat_map(|&(e, r, o)| topologies.map(|t| router(e, r, o, t))).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn routes_from_the_cache_are_the_routers_with_any_literals(
        numbers in proptest::collection::vec("[0-9]{1,12}(\\.[0-9]{1,3})?", 1..8),
        strings in proptest::collection::vec(string_parts(), 1..8),
    ) {
        for router in routers() {
            for (index, sql) in CORPUS.iter().enumerate() {
                classify(&router, sql);
                classify(&router, sql);
                let Some(other) = with_literals(sql, &numbers, &strings) else { continue };
                let expected = if router.prefilter().matches(other.as_bytes()) {
                    Classified::Named(router.route(other.as_bytes()))
                } else {
                    Classified::Unnamed
                };
                let (classified, outcome) = router.classify_reporting(other.as_bytes(), Form::Query);
                prop_assert_eq!(classified, expected, "{}", other);
                if index < EDXAPPS && !router.is_passthrough() {
                    prop_assert_eq!(outcome, Some(CacheOutcome::Hit), "{}", other);
                }
            }
        }
    }
}
