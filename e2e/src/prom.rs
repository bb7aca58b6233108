//! Reading what gantry's `/metrics` serves (the Prometheus text format)
//! and what `deploy/metrics.md` documents, for tests that hold one to the
//! other.

use std::collections::{BTreeMap, BTreeSet};

/// One sample line: series name (a histogram's `_bucket`, `_sum` or
/// `_count` included), its labels, its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape: each metric family's type, and every sample.
#[derive(Debug, Default, Clone)]
pub struct Scrape {
    pub types: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

/// The labels of `{a="x",b="y"}` (without the braces); values may hold
/// escaped quotes and commas.
fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        value.push(match e {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').trim().to_string(), value);
        rest = &after[end..];
    }
    out
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let mut s = Scrape::default();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                if let Some((name, kind)) = t.split_once(' ') {
                    s.types.insert(name.to_string(), kind.trim().to_string());
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, parse_labels(l.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or(f64::NAN),
            };
            s.samples.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
        }
        s
    }

    /// The family a series belongs to: itself, or the histogram or summary
    /// whose `_bucket`, `_sum` or `_count` it is.
    pub fn family_of<'a>(&self, series: &'a str) -> &'a str {
        if self.types.contains_key(series) {
            return series;
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = series.strip_suffix(suffix) {
                if self.types.contains_key(base) {
                    return base;
                }
            }
        }
        series
    }

    /// The values of family `name`'s series whose labels include `want`
    /// (a histogram's observation counts).
    pub fn values(&self, name: &str, want: &[(&str, &str)]) -> Vec<f64> {
        let series = if self.types.get(name).map(String::as_str) == Some("histogram") {
            format!("{name}_count")
        } else {
            name.to_string()
        };
        self.samples
            .iter()
            .filter(|s| s.name == series)
            .filter(|s| {
                want.iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .collect()
    }

    /// The sum over family `name`'s series whose labels include `want`.
    pub fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.values(name, want).iter().sum()
    }
}

/// A metric as `deploy/metrics.md` documents it.
#[derive(Debug, Clone, PartialEq)]
pub struct Documented {
    pub name: String,
    /// counter, gauge or histogram.
    pub kind: String,
    pub labels: Vec<String>,
    /// The lifecycle test must see it above zero (else only present).
    pub moves: bool,
}

/// The rows of the metrics table of `deploy/metrics.md`:
/// `` | `name` | type | `label`, ... | moves/present | meaning | ``.
pub fn documented(markdown: &str) -> Vec<Documented> {
    markdown
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`').to_string();
            let labels = cells[3]
                .split(',')
                .map(|c| c.trim().trim_matches('`').to_string())
                .filter(|c| !c.is_empty())
                .collect();
            let moves = match cells[4] {
                "moves" => true,
                "present" => false,
                other => panic!("{name}: check column {other:?} is neither moves nor present"),
            };
            Documented {
                name,
                kind: cells[2].to_string(),
                labels,
                moves,
            }
        })
        .collect()
}

/// The PromQL of `deploy/`: every alert rule's expression (by alert name)
/// and every query of the Grafana dashboard (by panel title, or
/// `templating`), checked for their shape on the way.
pub fn deploy_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let alerts: serde_json::Value =
        serde_yaml::from_str(include_str!("../../deploy/prometheus-alerts.yaml"))
            .expect("deploy/prometheus-alerts.yaml is YAML");
    let groups = alerts["groups"].as_array().expect("alert rule groups");
    for rule in groups
        .iter()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
    {
        let name = rule["alert"].as_str().expect("every rule is an alert");
        let expr = rule["expr"].as_str().unwrap_or_default();
        assert!(!expr.trim().is_empty(), "alert {name} has no expr");
        assert!(
            ["critical", "warning", "info"]
                .contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
            "alert {name} has no known severity"
        );
        assert!(
            rule["annotations"]["summary"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "alert {name} has no summary"
        );
        out.push((format!("alert {name}"), expr.to_string()));
    }
    let dash: serde_json::Value =
        serde_json::from_str(include_str!("../../deploy/grafana-dashboard.json"))
            .expect("deploy/grafana-dashboard.json is JSON");
    let mut ids = BTreeSet::new();
    for p in dash["panels"].as_array().expect("dashboard panels") {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(
            ids.insert(p["id"].as_i64().expect("a panel id")),
            "panel id of {title} repeats"
        );
        assert!(p["gridPos"].is_object(), "panel {title} has no place");
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().expect("panel targets");
        assert!(!targets.is_empty(), "panel {title} queries nothing");
        for t in targets {
            let expr = t["expr"].as_str().expect("a PromQL target");
            out.push((format!("panel {title}"), expr.to_string()));
        }
    }
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap_or_default();
            out.push((format!("variable {}", v["name"]), q.to_string()));
        }
    }
    out
}

/// PromQL words that are never metric names.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "atan2",
    "inf",
    "nan",
    "start",
    "end",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression selects. A small lexer rather than
/// a parser: what it must tell apart is only which identifiers are metric
/// names, and those are the identifiers that are not functions or
/// aggregations (followed by `(`), keywords, label names (inside `{...}`
/// and the lists after `by`, `on`, ...), numbers or durations (inside
/// `[...]`, after `offset`), strings, or Grafana variables (`$x`,
/// `${x}`). A Grafana `label_values(<selector>, <label>)` query yields the
/// names in its selector. (The promql-parser crate would parse it whole,
/// at the cost of a grammar generator in the build.)
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let expr = match expr.trim().strip_prefix("label_values(") {
        // Only the selector: the label after the last comma is no metric.
        Some(inner) => inner
            .trim_end()
            .trim_end_matches(')')
            .rsplit_once(',')
            .map(|(sel, _)| sel)
            .unwrap_or(inner),
        None => expr,
    };
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // Skips from an opening bracket to its match, over strings.
    let skip_group = |mut i: usize, open: char, close: char| -> usize {
        let mut depth = 0;
        while i < chars.len() {
            match chars[i] {
                '"' | '\'' | '`' => {
                    let q = chars[i];
                    i += 1;
                    while i < chars.len() && chars[i] != q {
                        if chars[i] == '\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                }
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        i
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '#' {
            // A comment runs to the end of the line.
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            i = skip_group(i, '{', '}');
        } else if c == '[' {
            i = skip_group(i, '[', ']');
        } else if c == '$' {
            i += 1;
            if i < chars.len() && chars[i] == '{' {
                i = skip_group(i, '{', '}');
            } else {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit()
            || c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)
        {
            // Numbers (1e3, 0x1f, .5) and durations (5m, 1h30m).
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '.' || chars[i] == '_')
            {
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            // An aggregation may put its grouping first: `sum by (x) (...)`.
            let next_word: String = chars[j..]
                .iter()
                .take_while(|c| c.is_alphanumeric() || **c == '_')
                .collect::<String>()
                .to_ascii_lowercase();
            let called = chars.get(j) == Some(&'(')
                || j > i && (next_word == "by" || next_word == "without");
            let lower = word.to_ascii_lowercase();
            if LABEL_LISTS.contains(&lower.as_str()) {
                if called {
                    i = skip_group(j, '(', ')');
                }
            } else if !called && !KEYWORDS.contains(&lower.as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_are_told_from_the_rest_of_promql() {
        let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
        assert_eq!(
            names(
                r#"histogram_quantile(0.95, sum by (instance, le) (rate(gantry_x_bucket{job="gantry", method=~"Run.*|by"}[$__rate_interval])))
                  > 10 and on (instance) up{job="gantry"} offset 5m"#
            ),
            ["gantry_x_bucket", "up"]
        );
        assert_eq!(
            names("sum by (reason) (increase(a_total{reason=\"OOMKilled\"}[15m])) / ignoring(reason) group_left(kind) b > bool 1e3"),
            ["a_total", "b"]
        );
        assert_eq!(
            names("avg_over_time(c[1h:5m]) unless d or e:recorded:rate5m * .5 # f"),
            ["c", "d", "e:recorded:rate5m"]
        );
        assert_eq!(
            names(r#"{__name__="weird"} + sum without(x)(y)"#),
            ["y"],
            "a selector by __name__ alone is not seen (none is used)"
        );
        assert_eq!(names(r#"label_values(up{job="gantry"}, instance)"#), ["up"]);
        assert_eq!(names("${datasource_var} + $var + m"), ["m"]);
        assert_eq!(names("Inf + NaN - foo"), ["foo"]);
    }

    #[test]
    fn scrapes_and_docs_parse() {
        let s = Scrape::parse(
            "# HELP h a histogram\n# TYPE h histogram\nh_bucket{le=\"0.5\",op=\"ADD\"} 1\nh_bucket{le=\"+Inf\",op=\"ADD\"} 2\nh_sum{op=\"ADD\"} 0.7\nh_count{op=\"ADD\"} 2\n# TYPE c counter\nc{reason=\"a \\\"quoted\\\", odd\"} 3\n",
        );
        assert_eq!(s.family_of("h_bucket"), "h");
        assert_eq!(s.family_of("c"), "c");
        assert_eq!(s.values("h", &[("op", "ADD")]), [2.0]);
        assert_eq!(s.sum("c", &[("reason", "a \"quoted\", odd")]), 3.0);
        let d = documented(
            "| metric | type |\n|---|---|\n| `x_total` | counter | `a`, `b` | moves | x |\n| `y` | gauge | | present | y |\n",
        );
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].labels, ["a", "b"]);
        assert!(d[0].moves && !d[1].moves);
    }
}
