use marquee_booking::Application;
use marquee_booking::Settings;
use marquee_kit::Config as _;

/// mimalloc: far less time in the allocator than glibc's under many small, short-lived
/// allocations across threads (BENCHMARKS.md, cinema).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    marquee_kit::memory::no_transparent_huge_pages();
    marquee_kit::telemetry::install_crypto_provider();
    let settings = Settings::load()?;
    let telemetry = marquee_kit::telemetry::init(&settings.telemetry);
    let app = Application::build(settings).await?;
    tracing::info!(addr = %app.addr(), "booking service listening");
    let stopped = app.run_until_stopped(marquee_kit::shutdown::on_signal()).await;
    // The spans of the last requests are still in the batch.
    telemetry.shutdown().await;
    stopped
}
