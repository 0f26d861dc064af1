//! The GraphQL-over-HTTP conformance audit of the `graphql-http` npm package
//! (`serverAudits`), run by node against the real gateway. `gateway/audit/` pins
//! the package with its lockfile; `npm ci` installs it there when missing.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokio::process::Command;

use super::spawn_app;

fn audit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("audit")
}

/// `npm ci` once per clone (scripts/test does it up front; this covers a bare
/// `cargo nextest run`).
async fn install(dir: &Path) {
    if dir.join("node_modules/graphql-http/package.json").is_file() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .await
        .expect("npm is needed to install the graphql-http audit");
    assert!(status.success(), "npm ci failed in {}", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_must_of_the_graphql_http_audit_passes() {
    let app = spawn_app().await;
    let dir = audit_dir();
    install(&dir).await;

    let output = Command::new("node")
        .arg("audit.mjs")
        .arg(app.url("/graphql"))
        .current_dir(&dir)
        .output()
        .await
        .expect("node is needed to run the graphql-http audit");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let results: Vec<Value> = stdout.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let (summary, audits) = results
        .split_last()
        .unwrap_or_else(|| panic!("no audit output; stderr: {}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(summary["summary"], true, "{stdout}");
    // The suite is not empty and really ran against us.
    assert!(audits.len() > 30, "{stdout}");
    assert!(audits.iter().any(|a| a["status"] == "ok"), "{stdout}");

    // SHOULD and MAY findings are printed for the record, not failed on.
    for finding in audits.iter().filter(|a| a["status"] != "ok") {
        eprintln!("{finding}");
    }
    let failed_musts: Vec<&Value> = audits
        .iter()
        .filter(|a| a["name"].as_str().unwrap().starts_with("MUST") && a["status"] != "ok")
        .collect();
    assert!(failed_musts.is_empty(), "MUST audits failed:\n{failed_musts:#?}");
    assert!(output.status.success(), "{stdout}");
}
