//! The Prometheus text exposition as the proxy renders it, read back into what a query may refer to: each sample
//! name (with its `_total`, `_bucket`, `_sum` or `_count` suffix, as Prometheus stores it), the labels it has and
//! their values, and whether it counts up (a counter, or a histogram's series) or is a gauge.

use std::collections::{BTreeMap, BTreeSet};

/// How a series behaves, which decides the functions that make sense on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only ever goes up (a counter, or a histogram's `_bucket`, `_sum` and `_count`): for `rate` and `increase`.
    Counter,
    /// Goes up and down: read as it is, never through `rate` or `increase`.
    Gauge,
}

/// One sample name's labels and kind.
#[derive(Debug, Default)]
pub struct Series {
    /// Label name → every value it has in the exposition.
    pub labels: BTreeMap<String, BTreeSet<String>>,
    /// The kind of the family it belongs to; `None` when the exposition had no `# TYPE` line for it.
    pub kind: Option<Kind>,
}

/// Every sample name of an exposition.
#[derive(Debug, Default)]
pub struct Exposition {
    /// Sample name → its labels and kind.
    pub series: BTreeMap<String, Series>,
}

impl Exposition {
    /// Reads the text format; panics on a sample line it cannot read, since the proxy rendered it.
    pub fn parse(text: &str) -> Exposition {
        let mut types = BTreeMap::new();
        let mut exposition = Exposition::default();
        for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
            if let Some(declaration) = line.strip_prefix("# TYPE ") {
                let (family, kind) = declaration.split_once(' ').unwrap_or_else(|| panic!("bad TYPE line {line}"));
                types.insert(family.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (name, labels) = sample(line);
            let series = exposition.series.entry(name.to_owned()).or_default();
            series.kind = kind_of(name, &types);
            for (label, value) in labels {
                series.labels.entry(label).or_default().insert(value);
            }
        }
        exposition
    }
}

/// The kind of the sample `name`, from the `# TYPE` of the family it belongs to.
fn kind_of(name: &str, types: &BTreeMap<String, String>) -> Option<Kind> {
    let declared = |family: &str, suffixes: &[&str], kind: &str| {
        suffixes.iter().any(|suffix| {
            name.strip_suffix(suffix).is_some_and(|stem| stem == family) && types.get(family).is_some_and(|t| t == kind)
        })
    };
    types.keys().find_map(|family| {
        // The 0.0.4 text format declares a counter under its sample's name, OpenMetrics without `_total`.
        if declared(family, &["", "_total"], "counter") || declared(family, &["_bucket", "_sum", "_count"], "histogram")
        {
            Some(Kind::Counter)
        } else if declared(family, &[""], "gauge") {
            Some(Kind::Gauge)
        } else {
            None
        }
    })
}

/// The name and labels of a sample line `name{label="value",…} value`.
fn sample(line: &str) -> (&str, Vec<(String, String)>) {
    let Some((name, rest)) = line.split_once('{') else {
        let name = line.split_whitespace().next().unwrap_or_else(|| panic!("empty sample line {line}"));
        return (name, Vec::new());
    };
    let (pairs, _value) = rest.rsplit_once('}').unwrap_or_else(|| panic!("unclosed labels in {line}"));
    let labels = pairs
        .split("\",")
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (label, value) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad label {pair} in {line}"));
            (label.to_owned(), value.trim_end_matches('"').to_owned())
        })
        .collect();
    (name, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_keep_their_suffixes_labels_and_kinds() {
        let exposition = Exposition::parse(
            "# TYPE x_requests counter\nx_requests_total{route=\"a\",le=\"b\"} 1\nx_requests_total{route=\"c\"} 2\n\
             # TYPE x_open gauge\nx_open 3\n# TYPE x_seconds histogram\nx_seconds_bucket{le=\"+Inf\"} 0\n\
             # TYPE x_errors_total counter\nx_errors_total 0\n",
        );
        let requests = &exposition.series["x_requests_total"];
        assert_eq!(requests.kind, Some(Kind::Counter));
        assert_eq!(requests.labels["route"], BTreeSet::from(["a".to_owned(), "c".to_owned()]));
        assert_eq!(exposition.series["x_errors_total"].kind, Some(Kind::Counter));
        assert_eq!(exposition.series["x_open"].kind, Some(Kind::Gauge));
        assert_eq!(exposition.series["x_seconds_bucket"].kind, Some(Kind::Counter));
        assert_eq!(exposition.series["x_seconds_bucket"].labels["le"], BTreeSet::from(["+Inf".to_owned()]));
    }
}
