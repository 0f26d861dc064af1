use marquee_common::Settings;
use marquee_ticket::Application;

/// mimalloc: far less time in the allocator than glibc's under many small, short-lived
/// allocations across threads (BENCHMARKS.md, cinema).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    marquee_common::telemetry::install_crypto_provider();
    let settings = Settings::load()?;
    marquee_common::telemetry::init(&settings.telemetry);
    let app = Application::build(settings).await?;
    tracing::info!(addr = %app.addr(), "ticket service listening");
    app.run_until_stopped(marquee_common::shutdown::on_signal()).await
}
