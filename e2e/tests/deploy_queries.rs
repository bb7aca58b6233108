//! The Grafana dashboard and the Prometheus alert rules in `deploy/` query
//! only what gantry exports: every metric name in their PromQL is one
//! `deploy/metrics.md` documents (which `tests/metrics.rs` holds to a real
//! scrape), or `up`, the scrape's own status. Histogram series
//! (`_bucket`, `_sum`, `_count`) count as their histogram. Needs no daemon.

use std::collections::BTreeMap;

use gantry_e2e::prom::{deploy_queries, documented, metric_names};

const DOC: &str = include_str!("../../deploy/metrics.md");

#[test]
fn dashboards_and_alerts_use_only_exported_metrics() {
    let docs = documented(DOC);
    let kinds: BTreeMap<&str, &str> = docs
        .iter()
        .map(|d| (d.name.as_str(), d.kind.as_str()))
        .collect();
    let exported = |name: &str| {
        name == "up"
            || kinds.contains_key(name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| kinds.get(base) == Some(&"histogram"))
            })
    };
    let queries = deploy_queries();
    assert!(queries.len() > 20, "{} queries found", queries.len());
    let mut problems = Vec::new();
    for (source, expr) in &queries {
        let names = metric_names(expr);
        if names.is_empty() {
            problems.push(format!("{source}: no metric in {expr:?}"));
        }
        for n in names {
            if !exported(&n) {
                problems.push(format!("{source}: {n} is not a metric gantry exports"));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_alerts_an_sre_needs_are_there() {
    let alerts: Vec<String> = deploy_queries()
        .into_iter()
        .filter_map(|(source, _)| source.strip_prefix("alert ").map(str::to_string))
        .collect();
    for want in [
        "GantryDown",
        "GantryPodStartSlow",
        "GantryCNIErrors",
        "GantryOOMKills",
        "GantryStateRootDiskLow",
    ] {
        assert!(alerts.iter().any(|a| a == want), "no {want} in {alerts:?}");
    }
}
