//! Checking a PromQL expression against the proxy's exposition: each metric it selects is exported (with the
//! suffix Prometheus stores it under), each label it matches or groups by exists on what it selects, each literal
//! label value it matches occurs, and `rate`/`increase` are taken of counters only.

pub mod exposition;
pub mod promql;

use exposition::{Exposition, Kind, Series};
use promql::Selector;

/// Labels Prometheus attaches to every series it scrapes (from the target), which the exposition cannot show.
pub const TARGET_LABELS: [&str; 4] = ["job", "instance", "pod", "namespace"];

/// Series Prometheus makes itself for each target, with only [`TARGET_LABELS`].
const SYNTHETIC: [&str; 1] = ["up"];

/// Functions that only make sense over a counter.
const COUNTER_FUNCTIONS: [&str; 4] = ["rate", "irate", "increase", "resets"];

/// Functions a counter may be read through besides [`COUNTER_FUNCTIONS`].
const ANY_FUNCTIONS: [&str; 1] = ["changes"];

/// What is wrong with `expr` against `exposition`: empty when every reference is exported.
pub fn problems(expr: &str, exposition: &Exposition) -> Vec<String> {
    let references = match promql::references(expr) {
        Ok(references) => references,
        Err(error) => return vec![error],
    };
    let mut problems: Vec<String> = references
        .selectors
        .iter()
        .flat_map(|selector| selector_problems(selector, exposition))
        .map(|problem| format!("{problem} (in {expr})"))
        .collect();
    let grouped: Vec<&Series> =
        references.selectors.iter().filter_map(|selector| exposition.series.get(&selector.metric)).collect();
    for label in &references.grouping {
        if !is_target_label(label) && !grouped.iter().any(|series| series.labels.contains_key(label)) {
            problems.push(format!("grouping by `{label}`, which none of its series has (in {expr})"));
        }
    }
    problems
}

/// Whether Prometheus attaches `label` from the scrape target.
pub fn is_target_label(label: &str) -> bool {
    TARGET_LABELS.contains(&label)
}

/// What is wrong with one selector against `exposition`.
fn selector_problems(selector: &Selector, exposition: &Exposition) -> Vec<String> {
    let metric = &selector.metric;
    if SYNTHETIC.contains(&metric.as_str()) {
        return selector
            .matchers
            .iter()
            .filter(|m| !is_target_label(&m.label))
            .map(|m| format!("`{metric}` has only target labels, not `{}`", m.label))
            .collect();
    }
    let Some(series) = exposition.series.get(metric) else {
        return vec![format!("no series `{metric}` in the proxy's exposition")];
    };
    let mut problems = Vec::new();
    match (series.kind, selector.function.as_deref()) {
        (Some(Kind::Gauge), Some(f)) if COUNTER_FUNCTIONS.contains(&f) => {
            problems.push(format!("`{f}` of the gauge `{metric}`"));
        }
        (Some(Kind::Counter), f)
            if !f.is_some_and(|f| COUNTER_FUNCTIONS.contains(&f) || ANY_FUNCTIONS.contains(&f)) =>
        {
            problems.push(format!("the counter `{metric}` read without rate or increase"));
        }
        (None, _) => problems.push(format!("`{metric}` has no TYPE in the exposition")),
        _ => {}
    }
    for matcher in selector.matchers.iter().filter(|m| m.label != "__name__" && !is_target_label(&m.label)) {
        let Some(values) = series.labels.get(&matcher.label) else {
            problems.push(format!("`{metric}` has no label `{}`", matcher.label));
            continue;
        };
        if matcher.value.contains('$') {
            continue;
        }
        let alternatives: Vec<&str> =
            if matcher.op.contains('~') { matcher.value.split('|').collect() } else { vec![matcher.value.as_str()] };
        for value in alternatives.into_iter().filter(|value| !values.contains(*value)) {
            problems.push(format!("`{metric}` never has {}=\"{value}\" (it has {values:?})", matcher.label));
        }
    }
    problems
}
