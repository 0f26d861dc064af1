//! `marquee-bench cinema` (scripts/bench-cinema), `marquee-bench rush [options]`
//! (scripts/bench), `marquee-bench chaos [options]` (scripts/chaos), `marquee-bench
//! replicas [options]` (scripts/bench-replicas) or `marquee-bench signups [options]`
//! (against a running `scripts/up`) or `marquee-bench checkin [options]`; see
//! `marquee_bench::rush::Options`, `marquee_bench::chaos::Options` and
//! `marquee_bench::replicas::Options` for the options. `marquee-bench subscriber-host`
//! is not for people: the connected users' scenario starts it to hold a share of its
//! WebSockets (`marquee_bench::subscribers::host`).

use std::path::Path;

use anyhow::Context;

/// The same allocator as the services' binaries, which this one embeds.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    marquee_kit::memory::no_transparent_huge_pages();
    marquee_kit::telemetry::install_crypto_provider();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("cinema") => marquee_bench::cinema::run(&root).await,
        Some("rush") => {
            if std::env::var_os("RUST_LOG").is_some() {
                let settings = <marquee_e2e::MeshSettings as marquee_kit::Config>::load_from(
                    &root.join("config"),
                    "test",
                )?;
                marquee_kit::telemetry::init(&settings.telemetry);
            }
            let options = marquee_bench::rush::Options::parse(args).context("bad options")?;
            marquee_bench::rush::run(&root, options).await
        }
        Some("signups") => {
            let options = marquee_bench::signups::Options::parse(&root, args).context("bad options")?;
            marquee_bench::signups::run(&root, options).await
        }
        Some("checkin") => {
            let options = marquee_bench::checkin::Options::parse(&root, args).context("bad options")?;
            marquee_bench::checkin::run(options).await
        }
        Some("chaos") => {
            let options = marquee_bench::chaos::Options::parse(args).context("bad options")?;
            marquee_bench::chaos::run(&root, options).await
        }
        Some("subscriber-host") => {
            let share = args.next().context("subscriber-host needs its share")?;
            marquee_bench::subscribers::host::run(&share).await
        }
        Some("replicas") => {
            let options = marquee_bench::replicas::Options::parse(args).context("bad options")?;
            marquee_bench::replicas::run(&root, options).await
        }
        _ => anyhow::bail!(
            "usage: marquee-bench cinema | marquee-bench rush [--users N] [--rounds N] [--hot-seats N] | {} | {} | {} | {}",
            marquee_bench::chaos::Options::USAGE,
            marquee_bench::replicas::Options::USAGE,
            marquee_bench::signups::Options::USAGE,
            marquee_bench::checkin::Options::USAGE
        ),
    }
}
