//! The Grafana dashboard and the Prometheus alert rules under `deploy/` against the metrics the proxy actually
//! exports, and the migration commands (`migrate`, `verify` with `--metrics-address`): the expositions are rendered
//! in-process as each `/metrics` renders them, and every metric, label and
//! label value the dashboard's queries and the rules' expressions use must be in it. The dashboard must parse
//! and show the views operators look for; the rules must have Prometheus's rule-group shape, promtool (Debian
//! package `prometheus`, installed when missing) must accept them and every query of the dashboard, and the
//! scenarios of `tests/observability/alerts.test.yml` must pass (`promtool test rules`).

mod observability;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use csmh_proxy::config::Config;
use csmh_proxy::metrics::{ConfigState, LEGS, Metrics, REFUSAL_REASONS, RouteLabel};
use csmh_proxy::migrate::copy::throttle::Reason;
use csmh_proxy::migrate::figures::{Figures, Waiting};
use csmh_proxy::migrate::observe::Command as MigrationCommand;
use csmh_proxy::migrate::observe::metrics::render;
use csmh_proxy::protocol::conn::TlsHandshake;
use csmh_proxy::routing::CacheOutcome;
use csmh_proxy::state::ProxyState;
use csmh_proxy::topology::Server;
use observability::exposition::Exposition;
use observability::{is_target_label, problems};
use serde::Deserialize;
use serde_json::Value;
use support::packages::{assert_succeeded, ensure_packages};

/// The dashboard, relative to the repository.
const DASHBOARD: &str = "deploy/grafana/csmh-proxy.json";

/// The alert rules, relative to the repository.
const RULES: &str = "deploy/prometheus/csmh-proxy-rules.yml";

/// The promtool unit tests of the alert rules, relative to the repository.
const ALERT_TESTS: &str = "tests/observability/alerts.test.yml";

/// The views the dashboard must have, by panel title.
const PANELS: [&str; 21] = [
    "Statements/s by route",
    "History statements/s by route",
    "Route cache: history statements/s by result",
    "Blocked and refused statements/s",
    "Latency p50 by route",
    "Latency p99 by route",
    "Open connections per replica",
    "Connections accepted and refused/s",
    "Backend connect errors/s by backend",
    "Backend query errors/s by backend",
    "Client hangups/s",
    "Config generation per replica",
    "Generations in force",
    "Reloads applied and rejected",
    "Logins/s by leg and transport (TLS vs plaintext)",
    "Migration: old ids copied",
    "Migration: rows copied/s",
    "Migration: paused, by reason",
    "Migration: replication lag of csmh",
    "Verify: ids compared",
    "Verify: differing ranges found",
];

/// The alerts the rules must define.
const ALERTS: [&str; 5] = [
    "CsmhProxyBackendUnreachable",
    "CsmhProxyStatementsBlocked",
    "CsmhProxyStatementsRefused",
    "CsmhProxyGenerationsDiffer",
    "CsmhProxyReloadRejected",
];

/// Grafana's variables as promtool should see them: a range for the intervals, match-all for the selections.
const GRAFANA_VARIABLES: [(&str, &str); 4] =
    [("$__rate_interval", "5m"), ("$__range", "1h"), ("$job", ".*"), ("$instance", ".*")];

/// `path` in the repository.
fn repository(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The text of the repository's file `path`.
fn read(path: &str) -> String {
    std::fs::read_to_string(repository(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// Moves every labelled series of `metrics` once, so the exposition shows each label value in use.
fn exercise(metrics: &Metrics) {
    for route in RouteLabel::ALL {
        metrics.statement(route, Duration::from_millis(3));
    }
    metrics.connection_opened();
    for tls in [false, true] {
        metrics.client_connection(tls);
    }
    for tls in [None, Some(TlsHandshake::Full)] {
        for server in Server::BOTH {
            metrics.backend_connection(server, tls);
        }
    }
    for reason in REFUSAL_REASONS {
        metrics.connection_refused(reason);
    }
    for server in Server::BOTH {
        metrics.backend_connect_error(server);
        metrics.backend_query_error(server);
    }
    metrics.client_hangup();
    for outcome in CacheOutcome::ALL {
        metrics.route_cache(outcome);
    }
}

/// The exposition of a proxy started with the repository's `proxy.toml` that has routed a statement of each route,
/// applied one reload and rejected another, rendered as the admin listener's `/metrics` renders it.
fn exposition() -> Exposition {
    let config = || Config::parse(&read("proxy.toml")).unwrap_or_else(|e| panic!("proxy.toml: {e}"));
    let state = ProxyState::new(config()).unwrap_or_else(|e| panic!("{e}"));
    exercise(&state.metrics);
    state.replace(config()).unwrap_or_else(|e| panic!("{e}"));
    state.record_rejected_reload();
    let config_state = ConfigState {
        generation: state.generation(),
        reloads_applied: state.reloads_applied(),
        reloads_rejected: state.reloads_rejected(),
    };
    let text = state.metrics.render(config_state).unwrap_or_else(|e| panic!("{e}"));
    for leg in LEGS {
        assert!(text.contains(&format!("leg=\"{leg}\",transport=\"tls\"}} 1")), "{leg} over TLS not counted:\n{text}");
    }
    Exposition::parse(&(text + &migration_exposition()))
}

/// The `/metrics` text of a `migrate` paused by replication lag (so that every series it may show is there) and of
/// a `verify`, as their `--metrics-address` renders them.
fn migration_exposition() -> String {
    let figures = Figures::new();
    figures.begin(0, 0, 20_000, 0);
    figures.advance(5_000, 4_000);
    figures.set_replication_lag(Some(12));
    figures.set_waiting(Some(Waiting { key: "replication_lag", reason: "replication lag 12 s".to_owned() }));
    let migrate = render(MigrationCommand::Migrate, &figures).unwrap_or_else(|e| panic!("{e}"));
    for key in Reason::KEYS {
        assert!(migrate.contains(&format!("reason=\"{key}\"")), "no reason {key}:\n{migrate}");
    }
    let verify = render(MigrationCommand::Verify, &figures).unwrap_or_else(|e| panic!("{e}"));
    migrate + &verify
}

/// The dashboard, parsed.
fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

/// Every panel of `dashboard`, those inside collapsed rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let top = dashboard["panels"].as_array().unwrap_or_else(|| panic!("{DASHBOARD} has no panels"));
    top.iter()
        .flat_map(|panel| std::iter::once(panel).chain(panel["panels"].as_array().into_iter().flatten()))
        .collect()
}

/// The string at `key` of `value`, or a panic naming `what`.
fn string<'a>(value: &'a Value, key: &str, what: &str) -> &'a str {
    value[key].as_str().unwrap_or_else(|| panic!("{what} has no string `{key}`: {value}"))
}

/// Every PromQL expression of the dashboard's panels and annotations, with where it is.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let targets = panels(dashboard).into_iter().flat_map(|panel| {
        let title = panel["title"].as_str().unwrap_or_default().to_owned();
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        targets.into_iter().map(move |target| (format!("panel {title:?}"), string(&target, "expr", &title).to_owned()))
    });
    let annotations = dashboard["annotations"]["list"].as_array().into_iter().flatten().filter_map(|annotation| {
        let expr = annotation["expr"].as_str()?;
        Some((format!("annotation {}", annotation["name"]), expr.to_owned()))
    });
    targets.chain(annotations).collect()
}

/// The dashboard's `label_values(selector, label)` variables: their name, selector and label.
fn label_values_variables(dashboard: &Value) -> Vec<(String, String, String)> {
    let variables = dashboard["templating"]["list"].as_array().into_iter().flatten();
    variables
        .filter(|variable| variable["type"] == "query")
        .map(|variable| {
            let name = string(variable, "name", "a variable");
            let query = variable["query"]["query"].as_str().or(variable["query"].as_str()).unwrap_or_default();
            let inner = query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')'));
            let (selector, label) = inner
                .and_then(|inner| inner.rsplit_once(','))
                .unwrap_or_else(|| panic!("variable {name}: not label_values(selector, label): {query}"));
            (name.to_owned(), selector.trim().to_owned(), label.trim().to_owned())
        })
        .collect()
}

#[test]
fn every_query_of_the_dashboard_uses_series_the_proxy_exports() {
    let exposition = exposition();
    let dashboard = dashboard();
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= PANELS.len(), "only {} queries in {DASHBOARD}", queries.len());
    let mut found: Vec<String> = queries
        .iter()
        .flat_map(|(place, expr)| problems(expr, &exposition).into_iter().map(move |p| format!("{place}: {p}")))
        .collect();
    let variables = label_values_variables(&dashboard);
    assert!(variables.iter().any(|(name, _, label)| name == "instance" && label == "instance"), "{variables:?}");
    for (name, selector, label) in &variables {
        found.extend(problems(selector, &exposition).into_iter().map(|p| format!("variable {name}: {p}")));
        let metric = selector.split('{').next().unwrap_or_default();
        let has_label = exposition.series.get(metric).is_some_and(|series| series.labels.contains_key(label));
        if !is_target_label(label) && !has_label {
            found.push(format!("variable {name}: `{metric}` has no label `{label}`"));
        }
    }
    assert!(found.is_empty(), "{DASHBOARD}:\n{}", found.join("\n"));
}

#[test]
fn the_dashboard_is_importable_and_has_every_view() {
    let dashboard = dashboard();
    let variables = dashboard["templating"]["list"].as_array().unwrap_or_else(|| panic!("no variables"));
    let datasource = variables.iter().find(|variable| variable["type"] == "datasource");
    let datasource = datasource.unwrap_or_else(|| panic!("no data source variable in {DASHBOARD}"));
    assert_eq!(datasource["query"], "prometheus", "{datasource}");
    let uid = format!("${{{}}}", string(datasource, "name", "the data source variable"));
    assert!(
        dashboard.get("__inputs").is_none(),
        "a data source variable, not an import-time input, so provisioning works"
    );

    let panels = panels(&dashboard);
    let mut ids = BTreeSet::new();
    for panel in &panels {
        let title = string(panel, "title", "a panel");
        assert!(ids.insert(panel["id"].as_u64().unwrap_or_else(|| panic!("{title}: no id"))), "{title}: id taken");
        assert!(["x", "y", "w", "h"].iter().all(|key| panel["gridPos"][key].is_u64()), "{title}: no gridPos");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], uid.as_str(), "{title}");
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no query");
        assert!(targets.iter().all(|target| target["datasource"]["uid"] == uid.as_str()), "{title}: {targets:?}");
    }
    let titles: BTreeSet<&str> = panels.iter().filter_map(|panel| panel["title"].as_str()).collect();
    let missing: Vec<&str> = PANELS.into_iter().filter(|title| !titles.contains(title)).collect();
    assert!(missing.is_empty(), "{DASHBOARD} lacks the panels {missing:?}; it has {titles:?}");
}

/// A Prometheus rule file, as `promtool check rules` reads it (alerting rules only).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

/// A rule group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    #[serde(default)]
    interval: Option<String>,
    rules: Vec<AlertingRule>,
}

/// An alerting rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertingRule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    pending: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

/// Whether `text` is a Prometheus duration such as `5m` or `1h30m`.
fn is_duration(text: &str) -> bool {
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let unit = ["ms", "s", "m", "h", "d", "w", "y"].into_iter().find(|unit| rest[digits..].starts_with(unit));
        match unit {
            Some(unit) if digits > 0 => rest = &rest[digits + unit.len()..],
            _ => return false,
        }
    }
    !text.is_empty()
}

/// The `$labels.name` an annotation template uses.
fn template_labels(text: &str) -> Vec<&str> {
    text.split("$labels.")
        .skip(1)
        .map(|rest| rest.split(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap_or(""))
        .collect()
}

#[test]
fn every_alert_rule_has_the_prometheus_shape_and_uses_series_the_proxy_exports() {
    let exposition = exposition();
    let file: RuleFile =
        serde_yaml_ng::from_str(&read(RULES)).unwrap_or_else(|e| panic!("{RULES} is not a Prometheus rule file: {e}"));
    assert!(!file.groups.is_empty(), "{RULES} has no group");
    let mut names = BTreeSet::new();
    let mut found = Vec::new();
    for group in &file.groups {
        assert!(!group.name.is_empty() && !group.rules.is_empty(), "{group:?}");
        assert!(group.interval.as_deref().is_none_or(is_duration), "{group:?}");
        for rule in &group.rules {
            let name = &rule.alert;
            assert!(names.insert(name.clone()), "two alerts named {name}");
            assert!(is_duration(&rule.pending), "{name}: `for: {}` is not a duration", rule.pending);
            let severity = rule.labels.get("severity").map(String::as_str);
            assert!(matches!(severity, Some("critical" | "warning")), "{name}: severity {severity:?}");
            for key in ["summary", "description"] {
                assert!(rule.annotations.get(key).is_some_and(|text| text.len() > 20), "{name}: no {key}");
            }
            found.extend(problems(&rule.expr, &exposition).into_iter().map(|p| format!("{name}: {p}")));
            // An aggregated expression keeps only the labels it groups by: the annotations may use no other.
            let kept = observability::promql::references(&rule.expr).map(|r| r.grouping).unwrap_or_default();
            let used = rule.annotations.values().flat_map(|text| template_labels(text));
            for label in used.filter(|label| !kept.is_empty() && !kept.iter().any(|kept| kept == label)) {
                found.push(format!("{name}: an annotation uses $labels.{label}, which the expression drops"));
            }
        }
    }
    let missing: Vec<&str> = ALERTS.into_iter().filter(|alert| !names.contains(*alert)).collect();
    assert!(missing.is_empty(), "{RULES} lacks the alerts {missing:?}");
    assert!(found.is_empty(), "{RULES}:\n{}", found.join("\n"));
}

/// Runs `promtool` with `args` (installing Debian's `prometheus` package first if needed); panics unless it
/// succeeds.
fn promtool(args: &[&std::ffi::OsStr]) {
    ensure_packages(&["prometheus"]);
    let output = Command::new("promtool").args(args).output();
    let shown = format!("promtool {}", args.iter().map(|arg| arg.to_string_lossy()).collect::<Vec<_>>().join(" "));
    assert_succeeded(&output.unwrap_or_else(|e| panic!("cannot run promtool: {e}")), &shown);
}

#[test]
fn promtool_accepts_the_rules_and_every_query_of_the_dashboard() {
    let check = |path: &Path| promtool(&["check".as_ref(), "rules".as_ref(), path.as_os_str()]);
    check(&repository(RULES));

    // promtool parses PromQL only in rule files: the dashboard's queries become recording rules.
    let mut recording = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (index, (_, expr)) in dashboard_queries(&dashboard()).iter().enumerate() {
        let expr = GRAFANA_VARIABLES.iter().fold(expr.clone(), |expr, (variable, value)| expr.replace(variable, value));
        let quoted = serde_json::to_string(&expr).unwrap_or_default();
        recording.push_str(&format!("      - record: dashboard:query_{index}\n        expr: {quoted}\n"));
    }
    let file = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(file.path(), recording).unwrap_or_else(|e| panic!("{e}"));
    check(file.path());
}

#[test]
fn each_alert_fires_when_it_should_and_stays_quiet_otherwise() {
    let scenarios = read(ALERT_TESTS);
    // The scenarios' input series must be ones the proxy exports (`changes` reads counters and gauges alike).
    let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&scenarios).unwrap_or_else(|e| panic!("{e}"));
    let exposition = exposition();
    let tests = parsed["tests"].as_sequence().unwrap_or_else(|| panic!("{ALERT_TESTS} has no tests"));
    let series = tests.iter().flat_map(|test| test["input_series"].as_sequence().into_iter().flatten());
    let found: Vec<String> = series
        .flat_map(|input| problems(&format!("changes({}[1m])", input["series"].as_str().unwrap_or("")), &exposition))
        .collect();
    assert!(found.is_empty(), "{ALERT_TESTS}:\n{}", found.join("\n"));

    // promtool compares annotations word for word: the scenarios test the rules without theirs.
    let mut rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&read(RULES)).unwrap_or_else(|e| panic!("{e}"));
    let groups = rules["groups"].as_sequence_mut().unwrap_or_else(|| panic!("{RULES} has no groups"));
    for rule in groups.iter_mut().flat_map(|group| group["rules"].as_sequence_mut().into_iter().flatten()) {
        rule.as_mapping_mut().map(|rule| rule.remove("annotations"));
    }
    let directory = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let rules_name = Path::new(RULES).file_name().unwrap_or_default();
    let stripped = serde_yaml_ng::to_string(&rules).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(directory.path().join(rules_name), stripped).unwrap_or_else(|e| panic!("{e}"));
    let test_file = directory.path().join("alerts.test.yml");
    std::fs::write(&test_file, scenarios).unwrap_or_else(|e| panic!("{e}"));
    promtool(&["test".as_ref(), "rules".as_ref(), test_file.as_os_str()]);
}
