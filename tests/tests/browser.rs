//! The web app in a real browser against the real mesh: `web/e2e/run.mjs` drives
//! Debian's Chromium with playwright-core through two customers on one showtime (live
//! seat map, hold, refusals, best available, payment, a declined card, a slow card,
//! cancellation with the refund shown first, keyboard-only booking, a reload keeping the
//! session, notifications, axe on every page). The gateway serves `web/dist`, built
//! by `npm run build` in web/ (scripts/test and scripts/up build it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use marquee_e2e::{Mesh, Service};

/// Debian's chromium package; playwright-core cannot download a browser here.
const CHROMIUM: &str = "/usr/bin/chromium";
/// Set to 1 to let a machine without Chromium skip (loudly) instead of failing.
const ALLOW_SKIP: &str = "MARQUEE_ALLOW_NO_BROWSER";

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../web")
}

/// Whether the browser and the built app are here; panics on a missing piece unless
/// the environment allows skipping without a browser.
fn ready_to_run() -> bool {
    if !Path::new(CHROMIUM).exists() {
        assert!(
            std::env::var(ALLOW_SKIP).as_deref() == Ok("1"),
            "{CHROMIUM} is missing: `apt-get install -y chromium` (scripts/test does), or set {ALLOW_SKIP}=1 to skip"
        );
        eprintln!(
            "\n!!!!!!!!\n!!! SKIPPED: browser end-to-end tests ({CHROMIUM} missing, {ALLOW_SKIP}=1)\n!!!!!!!!\n"
        );
        return false;
    }
    let web = web_dir();
    for needed in ["dist/index.html", "node_modules/playwright-core", "node_modules/axe-core"] {
        assert!(
            web.join(needed).exists(),
            "web/{needed} is missing: run `npm ci && npm run build` in web/ (scripts/test does)"
        );
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moviegoer_books_in_the_browser_while_another_watches_live() {
    if !ready_to_run() {
        return;
    }
    let dist = web_dir().join("dist");
    let mesh = Mesh::builder()
        .configure(move |settings| {
            settings.gateway.web_dir = dist;
            // As in production: a hold may not strand a single seat (the suite's refusal).
            settings.cinema.no_orphan_seats = true;
            // Long enough for "payment processing…" to be seen, within the saga lease.
            settings.payment.slow_card_delay_ms = 1500;
            // Two browsers, a few dozen page loads and their queries from one address.
            settings.gateway.rate_limit.per_ip = 100_000;
            settings.gateway.rate_limit.per_user = 100_000;
        })
        .start()
        .await
        .unwrap();
    let base = mesh.url(Service::Gateway).unwrap();

    let mut node = tokio::process::Command::new("node");
    node.arg("e2e/run.mjs")
        .current_dir(web_dir())
        .env("MARQUEE_WEB_URL", &base)
        .env("CHROMIUM", CHROMIUM)
        // Its progress streams into the test's output.
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let status = tokio::time::timeout(Duration::from_secs(240), node.status())
        .await
        .expect("the browser suite did not finish within 240 s")
        .expect("cannot run node");
    assert!(status.success(), "the browser suite failed ({status}); its output is above");
    mesh.stop().await;
}
