//! Just enough of PromQL to find what an expression refers to: its series selectors (metric name, label matchers,
//! and the function applied to them) and the labels it groups by (`by`, `without`, `on`, `ignoring`). Grafana's
//! variables (`$job`, `$__rate_interval`) may appear in strings and ranges. Syntax errors are promtool's business:
//! this only has to see every name.

/// A label matcher: `label op "value"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    /// The label's name.
    pub label: String,
    /// `=`, `!=`, `=~` or `!~`.
    pub op: String,
    /// The value or regular expression, unquoted.
    pub value: String,
}

/// A series selector: `metric{matchers}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// The metric name (from `__name__` for a selector without one before its braces).
    pub metric: String,
    /// Its label matchers.
    pub matchers: Vec<Matcher>,
    /// The function or aggregation whose argument list it is directly in, if any (`rate`, `sum`, …).
    pub function: Option<String>,
}

/// What an expression refers to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct References {
    /// Every series selector.
    pub selectors: Vec<Selector>,
    /// Every label named in a `by`, `without`, `on` or `ignoring` list.
    pub grouping: Vec<String>,
}

/// Aggregation operators, which may be followed by `by (…)` or `without (…)` before their parenthesis.
const AGGREGATIONS: [&str; 12] =
    ["sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile"];

/// Keywords followed by a list of label names.
const GROUPING: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];

/// Keywords and literals that are not metric names.
const KEYWORDS: [&str; 7] = ["and", "or", "unless", "bool", "offset", "inf", "nan"];

/// The selectors and grouping labels of `expr`, or what could not be read.
pub fn references(expr: &str) -> Result<References, String> {
    Scanner { chars: expr.chars().collect(), at: 0 }.scan()
}

/// A cursor over an expression's characters.
struct Scanner {
    chars: Vec<char>,
    at: usize,
}

impl Scanner {
    /// Reads the whole expression.
    fn scan(mut self) -> Result<References, String> {
        let mut found = References::default();
        // The function each open parenthesis belongs to ("" for plain grouping), and the one whose parenthesis
        // comes next.
        let mut open: Vec<String> = Vec::new();
        let mut pending: Option<String> = None;
        while let Some(c) = self.peek() {
            match c {
                c if c.is_whitespace() => self.at += 1,
                '"' | '\'' | '`' => {
                    self.string()?;
                    pending = None;
                }
                '#' => self.skip_past('\n'),
                '[' => self.skip_past(']'),
                '$' => {
                    self.at += 1;
                    self.take_while(|c| c.is_alphanumeric() || matches!(c, '_' | '{' | '}' | ':'));
                }
                '(' => {
                    self.at += 1;
                    open.push(pending.take().unwrap_or_default());
                }
                ')' => {
                    self.at += 1;
                    open.pop().ok_or_else(|| format!("unbalanced ) in {}", self.text()))?;
                }
                '{' => {
                    let matchers = self.matchers()?;
                    let metric =
                        matchers.iter().find(|m| m.label == "__name__" && m.op == "=").map(|m| m.value.clone());
                    let metric =
                        metric.ok_or_else(|| format!("a selector without a metric name in {}", self.text()))?;
                    found.selectors.push(Selector { metric, matchers, function: open.last().cloned() });
                }
                c if c.is_ascii_digit() || c == '.' => {
                    self.take_while(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'));
                }
                c if c.is_alphabetic() || matches!(c, '_' | ':') => {
                    let word = self.take_while(|c| c.is_alphanumeric() || matches!(c, '_' | ':'));
                    if GROUPING.contains(&word.as_str()) {
                        // `sum by (x) (…)`: the aggregation's parenthesis is still to come.
                        if self.next_is('(') {
                            found.grouping.extend(self.label_list()?);
                        }
                    } else if KEYWORDS.contains(&word.as_str()) {
                        pending = None;
                    } else if self.next_is('(') || AGGREGATIONS.contains(&word.as_str()) {
                        pending = Some(word);
                    } else {
                        pending = None;
                        let matchers = if self.next_is('{') { self.matchers()? } else { Vec::new() };
                        found.selectors.push(Selector { metric: word, matchers, function: open.last().cloned() });
                    }
                }
                _ => {
                    self.at += 1;
                    pending = None;
                }
            }
        }
        if open.is_empty() { Ok(found) } else { Err(format!("unbalanced ( in {}", self.text())) }
    }

    /// The whole expression, for error messages.
    fn text(&self) -> String {
        self.chars.iter().collect()
    }

    /// The character at the cursor.
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    /// Whether the next character after blanks is `c` (the blanks are consumed).
    fn next_is(&mut self, c: char) -> bool {
        self.take_while(char::is_whitespace);
        self.peek() == Some(c)
    }

    /// Consumes and returns the characters from the cursor on that `keep` accepts.
    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> String {
        let start = self.at;
        while self.peek().is_some_and(&keep) {
            self.at += 1;
        }
        self.chars[start..self.at].iter().collect()
    }

    /// Moves the cursor past the next `end`.
    fn skip_past(&mut self, end: char) {
        self.take_while(|c| c != end);
        self.at += 1;
    }

    /// A quoted string at the cursor, unquoted.
    fn string(&mut self) -> Result<String, String> {
        let quote = self.peek().ok_or("a string expected")?;
        self.at += 1;
        let mut value = String::new();
        loop {
            match self.peek() {
                None => return Err(format!("unterminated string in {}", self.text())),
                Some(c) if c == quote => {
                    self.at += 1;
                    return Ok(value);
                }
                Some('\\') if quote != '`' => {
                    value.extend(self.chars.get(self.at + 1));
                    self.at += 2;
                }
                Some(c) => {
                    value.push(c);
                    self.at += 1;
                }
            }
        }
    }

    /// `{label op "value", …}` at the cursor.
    fn matchers(&mut self) -> Result<Vec<Matcher>, String> {
        self.at += 1;
        let mut matchers = Vec::new();
        loop {
            self.take_while(|c| c.is_whitespace() || c == ',');
            if self.peek() == Some('}') {
                self.at += 1;
                return Ok(matchers);
            }
            let label = self.take_while(|c| c.is_alphanumeric() || c == '_');
            self.take_while(char::is_whitespace);
            let op = self.take_while(|c| matches!(c, '=' | '!' | '~'));
            self.take_while(char::is_whitespace);
            if label.is_empty() || !["=", "!=", "=~", "!~"].contains(&op.as_str()) {
                return Err(format!("cannot read the matchers of {}", self.text()));
            }
            let value = self.string()?;
            matchers.push(Matcher { label, op, value });
        }
    }

    /// `(label, …)` at the cursor.
    fn label_list(&mut self) -> Result<Vec<String>, String> {
        self.at += 1;
        let list = self.take_while(|c| c != ')');
        if self.peek() != Some(')') {
            return Err(format!("unclosed label list in {}", self.text()));
        }
        self.at += 1;
        Ok(list.split(',').map(str::trim).filter(|label| !label.is_empty()).map(str::to_owned).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(metric: &str, matchers: &[(&str, &str, &str)], function: Option<&str>) -> Selector {
        Selector {
            metric: metric.to_owned(),
            matchers: matchers
                .iter()
                .map(|(label, op, value)| Matcher {
                    label: (*label).to_owned(),
                    op: (*op).to_owned(),
                    value: (*value).to_owned(),
                })
                .collect(),
            function: function.map(str::to_owned),
        }
    }

    #[test]
    fn a_quantile_over_a_grouped_rate_names_the_bucket_series_and_its_grouping() {
        let found = references(
            "histogram_quantile(0.99, sum by (le, route) (rate(x_seconds_bucket{job=~\"$job\", route!=\"a\"}\
             [$__rate_interval])))",
        );
        let expected = References {
            selectors: vec![selector("x_seconds_bucket", &[("job", "=~", "$job"), ("route", "!=", "a")], Some("rate"))],
            grouping: vec!["le".to_owned(), "route".to_owned()],
        };
        assert_eq!(found, Ok(expected));
    }

    #[test]
    fn binary_operators_trailing_groupings_and_bare_metrics_are_all_seen() {
        let found = references(
            "sum(rate(a_total[5m])) by (x) / on (x) group_left max without (y) (b) > 0 and up{job='p'} == 0 \
             # a comment naming not_a_metric\n or {__name__=\"c\"} offset 1h",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let metrics: Vec<(&str, Option<&str>)> =
            found.selectors.iter().map(|s| (s.metric.as_str(), s.function.as_deref())).collect();
        assert_eq!(metrics, [("a_total", Some("rate")), ("b", Some("max")), ("up", None), ("c", None)]);
        assert_eq!(found.grouping, ["x", "x", "y"]);
    }

    #[test]
    fn unbalanced_parentheses_are_reported() {
        assert!(references("sum(rate(a_total[5m])").is_err());
        assert!(references("a_total)").is_err());
        assert!(references("a_total{job=}").is_err());
    }
}
