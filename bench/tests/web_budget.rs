//! The web app's budgets (issue #20) in headless Chromium against the real mesh with
//! the 10,000-seat bench hall: first-load JavaScript, the 10,000-seat render and the
//! main-thread cost of one live seat change, measured by `web/e2e/bench.mjs` from the
//! page's performance marks and Chrome's task metrics. Writes
//! `bench/results/web-budget.json`. A benchmark, not a test: `scripts/bench-web` runs it
//! (ignored by `scripts/test`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;

use marquee_bench::catalog::build_hall;
use marquee_bench::mesh::{Mesh, Service};
use tonic::transport::Endpoint;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by scripts/bench-web"]
async fn web_budget() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("bench/ has a parent").to_path_buf();
    let web = root.join("web");
    assert!(web.join("dist/index.html").exists(), "build the web app first: scripts/web-build");
    let mut settings: marquee_e2e::MeshSettings = marquee_kit::testing::isolated_settings().await.unwrap();
    settings.cinema.no_orphan_seats = false;
    settings.gateway.web_dir = web.join("dist");
    settings.gateway.rate_limit.per_ip = 1_000_000;
    settings.gateway.rate_limit.per_user = 1_000_000;
    let mesh = Mesh::builder().settings(settings).start().await.unwrap();
    let channel = Endpoint::from_shared(mesh.url(Service::Cinema).unwrap()).unwrap().connect().await.unwrap();
    let showtime = build_hall(channel, 1).await.unwrap().remove(0);

    let out = root.join("bench/results/web-budget.json");
    let status = tokio::process::Command::new("node")
        .arg("e2e/bench.mjs")
        .current_dir(&web)
        .env("MARQUEE_WEB_URL", mesh.url(Service::Gateway).unwrap())
        .env("MARQUEE_BENCH_SHOWTIME", &showtime)
        .env("MARQUEE_BENCH_OUT", &out)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .status()
        .await
        .expect("cannot run node");
    assert!(status.success(), "a budget was missed or the run failed; see above and {}", out.display());
    mesh.stop().await;
}
