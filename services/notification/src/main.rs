use marquee_kit::Config as _;
use marquee_notification::Application;
use marquee_notification::Settings;
use marquee_notification::dead_letters;

/// mimalloc: far less time in the allocator than glibc's under many small, short-lived
/// allocations across threads (BENCHMARKS.md, cinema).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: marquee-notification                       run the worker
       marquee-notification dead-letters list [--limit N]    show what waits in the dead-letter queue
       marquee-notification dead-letters replay [--limit N]  move it back into the work queue";

/// Dead letters handled per command unless `--limit` says otherwise.
const DEFAULT_LIMIT: u32 = 100;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    marquee_kit::memory::no_transparent_huge_pages();
    marquee_kit::telemetry::install_crypto_provider();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = Settings::load()?;
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => {
            let telemetry = marquee_kit::telemetry::init(&settings.telemetry);
            let app = Application::build(settings).await?;
            tracing::info!(addr = %app.addr(), "notification service listening");
            let stopped = app.run_until_stopped(marquee_kit::shutdown::on_signal()).await;
            // The spans of the last requests are still in the batch.
            telemetry.shutdown().await;
            stopped
        }
        ["dead-letters", command, rest @ ..] => {
            let limit = match rest {
                [] => DEFAULT_LIMIT,
                ["--limit", n] => {
                    n.parse().map_err(|_| anyhow::anyhow!("--limit wants a number\n{USAGE}"))?
                }
                _ => anyhow::bail!("{USAGE}"),
            };
            match *command {
                "list" => {
                    let (total, letters) = dead_letters::list(&settings.rabbitmq, limit).await?;
                    println!("{total} dead-lettered message(s); showing {}", letters.len());
                    for letter in letters {
                        println!(
                            "event {} {} booking {} reason {} ({} bytes){}",
                            or_dash(&letter.event_id),
                            or_dash(&letter.event_type),
                            or_dash(&letter.booking_id),
                            or_dash(&letter.reason),
                            letter.bytes,
                            if letter.error.is_empty() {
                                String::new()
                            } else {
                                format!(": {}", letter.error)
                            },
                        );
                    }
                    Ok(())
                }
                "replay" => {
                    let done = dead_letters::replay(&settings.rabbitmq, limit).await?;
                    println!("replayed {}; {} left in the dead-letter queue", done.replayed, done.left);
                    Ok(())
                }
                _ => anyhow::bail!("{USAGE}"),
            }
        }
        _ => anyhow::bail!("{USAGE}"),
    }
}

fn or_dash(value: &str) -> &str {
    if value.is_empty() { "-" } else { value }
}
