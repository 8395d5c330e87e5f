//! The alerting rules shipped in deploy/kubernetes/base/prometheusrule.yaml: they load in
//! Prometheus (`promtool check rules`), every alert fires and stays silent where
//! deploy/prometheus/alerts.test.yaml says (`promtool test rules`), every alert has at least one
//! firing and one non-firing case there, and each alert's annotations and runbook section exist.
//!
//! promtool comes from Debian's `prometheus` package; scripts/ensure-promtool.sh installs it when
//! it is missing (scripts/test.sh runs it first).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every alerting rule of the PrometheusRule, by name.
fn alerts(rule: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for group in rule["spec"]["groups"].as_sequence().expect("spec.groups") {
        for r in group["rules"].as_sequence().expect("rules") {
            let name = r["alert"]
                .as_str()
                .expect("only alerting rules")
                .to_string();
            assert!(
                out.insert(name.clone(), r.clone()).is_none(),
                "alert {name} defined twice"
            );
        }
    }
    out
}

fn promtool() -> String {
    let found = Command::new("promtool").arg("--version").output();
    if !found.is_ok_and(|o| o.status.success()) {
        let status = Command::new(repo().join("scripts/ensure-promtool.sh"))
            .status()
            .expect("scripts/ensure-promtool.sh runs");
        assert!(
            status.success(),
            "promtool is missing and scripts/ensure-promtool.sh could not install it"
        );
    }
    "promtool".into()
}

/// GitHub's anchor for a Markdown heading: lowercase, spaces to `-`, punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_is_documented_and_tested_both_ways_and_promtool_agrees() {
    let rule = yaml(&repo().join("deploy/kubernetes/base/prometheusrule.yaml"));
    let alerts = alerts(&rule);
    assert!(alerts.len() >= 10, "{:?}", alerts.keys());

    // Annotations and runbooks.
    let readme = std::fs::read_to_string(repo().join("deploy/README.md")).unwrap();
    let anchors: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| anchor(h.trim_start_matches('#')))
        .collect();
    for (name, r) in &alerts {
        let severity = r["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        for key in ["summary", "description", "runbook_url"] {
            assert!(
                r["annotations"][key]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{name}: annotation {key} missing"
            );
        }
        let runbook = r["annotations"]["runbook_url"].as_str().unwrap();
        let section = runbook
            .strip_prefix("deploy/README.md#")
            .unwrap_or_else(|| {
                panic!("{name}: runbook_url {runbook} is not a deploy/README.md section")
            });
        assert!(
            anchors.contains(section),
            "{name}: deploy/README.md has no heading for #{section}"
        );
        let summary = r["annotations"]["summary"].as_str().unwrap();
        let expr = r["expr"].as_str().unwrap();
        // An alert about one resource or topic names it.
        for label in ["resource", "topic", "source"] {
            if expr.contains(&format!("by ({label}")) || expr.contains(&format!(", {label})")) {
                assert!(
                    summary.contains(&format!("$labels.{label}")),
                    "{name}: the summary does not name the {label}"
                );
            }
        }
    }

    // Each alert has a firing and a non-firing case.
    let tests = yaml(&repo().join("deploy/prometheus/alerts.test.yaml"));
    let mut firing = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for t in tests["tests"].as_sequence().expect("tests") {
        for case in t["alert_rule_test"].as_sequence().expect("alert_rule_test") {
            let name = case["alertname"].as_str().unwrap().to_string();
            assert!(alerts.contains_key(&name), "test for unknown alert {name}");
            let expected = case["exp_alerts"].as_sequence().map_or(0, Vec::len);
            if expected > 0 {
                firing.insert(name);
            } else {
                silent.insert(name);
            }
        }
    }
    for name in alerts.keys() {
        assert!(firing.contains(name), "{name} has no firing test");
        assert!(silent.contains(name), "{name} has no non-firing test");
    }

    // promtool: the rules load, and every case holds.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("alerts");
    std::fs::create_dir_all(&dir).unwrap();
    let rules = dir.join("pollbus.rules.yaml");
    std::fs::write(&rules, serde_yaml_ng::to_string(&rule["spec"]).unwrap()).unwrap();
    std::fs::copy(
        repo().join("deploy/prometheus/alerts.test.yaml"),
        dir.join("alerts.test.yaml"),
    )
    .unwrap();
    let promtool = promtool();
    for args in [
        vec!["check", "rules", "pollbus.rules.yaml"],
        vec!["test", "rules", "alerts.test.yaml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("promtool runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("promtool {}:\n{text}", args.join(" "));
        assert!(out.status.success(), "promtool {}:\n{text}", args.join(" "));
    }
}
