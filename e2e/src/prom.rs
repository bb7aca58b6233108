//! Reading what gantry's `/metrics` serves (the Prometheus text format)
//! and what `deploy/metrics.md` documents, for tests that hold one to the
//! other.

use std::collections::BTreeMap;

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

#[cfg(test)]
mod tests {
    use super::*;

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
