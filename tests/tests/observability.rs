//! What `promtool` and Grafana would otherwise be trusted with, checked offline against
//! the code: deploy/observability's alert rules are well formed, its Prometheus scrapes
//! every process on the port config/default.toml gives it, and every metric the rules
//! and the dashboard name is one a running mesh exports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Toml};
use marquee_e2e::{Mesh, Service};
use serde_json::Value;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(repository().join(path)).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn dashboard() -> Value {
    let path = repository().join("deploy/observability/grafana/dashboards/marquee.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn rules() -> Vec<Value> {
    let alerts = yaml("deploy/observability/alerts.yml");
    let groups = alerts["groups"].as_array().expect("alerts.yml has groups");
    groups.iter().flat_map(|group| group["rules"].as_array().expect("a group has rules").clone()).collect()
}

/// Every PromQL expression of the rules and the dashboard's panels.
fn expressions() -> Vec<String> {
    let mut exprs: Vec<String> =
        rules().iter().map(|rule| rule["expr"].as_str().unwrap().to_owned()).collect();
    for panel in dashboard()["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    exprs
}

/// The metric names in `expr` that Marquee exports (by prefix), histogram series
/// suffixes removed.
fn marquee_metrics(expr: &str) -> BTreeSet<String> {
    const PREFIXES: [&str; 7] =
        ["grpc_server_", "outbox_", "booking_", "cinema_", "notification_", "gateway_", "metrics_collect_"];
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|token| PREFIXES.iter().any(|prefix| token.starts_with(prefix)))
        .map(|token| {
            let base = ["_bucket", "_count", "_sum"].iter().find_map(|suffix| token.strip_suffix(suffix));
            base.unwrap_or(token).to_owned()
        })
        .collect()
}

#[test]
fn every_alert_rule_is_complete_and_named_once() {
    let rules = rules();
    assert!(rules.len() >= 5, "{rules:?}");
    let mut names = BTreeSet::new();
    for rule in &rules {
        let name = rule["alert"].as_str().expect("every rule is an alert");
        assert!(names.insert(name), "alert {name} is defined twice");
        assert!(rule["expr"].as_str().is_some_and(|e| !e.trim().is_empty()), "{name} has no expr");
        assert!(rule["for"].as_str().is_some(), "{name} fires on a single evaluation");
        let severity = rule["labels"]["severity"].as_str();
        assert!(matches!(severity, Some("page" | "ticket")), "{name}: severity {severity:?}");
        assert!(rule["annotations"]["summary"].as_str().is_some(), "{name} has no summary");
        let expr = rule["expr"].as_str().unwrap();
        assert_eq!(expr.matches('(').count(), expr.matches(')').count(), "{name}: unbalanced parentheses");
    }
    for wanted in
        ["OutboxBacklogAging", "SagasStuck", "DeadLettersWaiting", "GrpcErrorRatioHigh", "GrpcLatencyHigh"]
    {
        assert!(names.contains(wanted), "no {wanted} alert");
    }
}

#[test]
fn prometheus_scrapes_every_process_on_its_configured_port() {
    let config = yaml("deploy/observability/prometheus.yml");
    let targets: BTreeSet<String> = config["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|job| job["static_configs"].as_array().unwrap().clone())
        .flat_map(|statics| statics["targets"].as_array().unwrap().clone())
        .map(|target| target.as_str().unwrap().to_owned())
        .collect();
    let rule_files = config["rule_files"].as_array().unwrap();
    assert!(rule_files.iter().any(|file| file.as_str().unwrap().ends_with("/alerts.yml")), "{rule_files:?}");

    let defaults = Figment::from(Toml::file(repository().join("config/default.toml")));
    for service in ["user", "cinema", "booking", "payment", "notification", "ticket"] {
        let port: u16 = defaults.extract_inner(&format!("{service}.metrics_port")).unwrap();
        assert!(
            targets.contains(&format!("{service}:{port}")),
            "{service}:{port} is not scraped: {targets:?}"
        );
    }
    let gateway: u16 = defaults.extract_inner("gateway.port").unwrap();
    assert!(targets.contains(&format!("gateway:{gateway}")), "{targets:?}");

    let datasources = yaml("deploy/observability/grafana/provisioning/datasources/prometheus.yml");
    let uid = datasources["datasources"][0]["uid"].clone();
    for panel in dashboard()["panels"].as_array().unwrap() {
        if panel["type"] != "row" {
            assert_eq!(panel["datasource"]["uid"], uid, "panel {} uses another datasource", panel["title"]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_the_dashboard_name_is_exported() {
    let mesh = Mesh::start().await.unwrap();
    // One call through the gateway, so the request metrics have series to show.
    mesh.register("metrics").await.unwrap();
    let mut exported = BTreeSet::new();
    for service in Service::ALL {
        let text = mesh.scrape(service).await.unwrap();
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("# TYPE ").and_then(|rest| rest.split(' ').next()) {
                exported.insert(name.to_owned());
            }
        }
    }
    let named: BTreeSet<String> = expressions().iter().flat_map(|expr| marquee_metrics(expr)).collect();
    assert!(named.contains("grpc_server_requests_total") && named.contains("booking_sagas"), "{named:?}");
    let missing: Vec<&String> = named.difference(&exported).collect();
    assert!(missing.is_empty(), "named but not exported: {missing:?}; exported: {exported:?}");
}
