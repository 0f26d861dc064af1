//! The shared brokers under a running mesh (the chaos suite's): restarting them, and
//! reading RabbitMQ queue depths, with their own command-line tools.
//!
//! Both brokers are shared with everything else on the machine, so a restart always
//! ends with the broker running again (or a loud error saying how to start it):
//! - RabbitMQ: its node is a system service this suite does not own, so the RabbitMQ
//!   application inside it is stopped and started (`rabbitmqctl stop_app`/`start_app`):
//!   every connection drops, durable exchanges and quorum queues stay.
//! - Redis: `SHUTDOWN SAVE`, then the same server started again (`redis-server
//!   --daemonize yes`) with the settings it reported (`CONFIG GET`: port, bind, dir,
//!   dump file, persistence), so it reloads the dump and every other user of it finds
//!   its keys again. A dump file that did not exist before is removed afterwards.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::process::Command;

async fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .await
        .with_context(|| format!("cannot run {program} (is it installed?)"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "{program} {} failed ({}): {}{}",
        args.join(" "),
        output.status,
        stdout.trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(stdout)
}

async fn port_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

/// Whether RabbitMQ on `port` starts an AMQP handshake (answers the protocol header)
/// within `patience`. An open port is not enough: a node whose listener is stuck (seen
/// here while other tests churned hundreds of quorum queues) accepts TCP connections
/// and then says nothing, and every client's connect hangs.
pub async fn amqp_answers(port: u16, patience: Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let handshake = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"AMQP\x00\x00\x09\x01").await?;
        let mut first = [0u8; 1];
        stream.read_exact(&mut first).await?;
        anyhow::Ok(())
    };
    matches!(tokio::time::timeout(patience, handshake).await, Ok(Ok(())))
}

/// Waits up to `patience` for RabbitMQ to answer AMQP handshakes promptly.
pub async fn wait_for_amqp(port: u16, patience: Duration) -> anyhow::Result<()> {
    wait_until("RabbitMQ answered no AMQP handshake", patience, || amqp_answers(port, Duration::from_secs(2)))
        .await
}

/// Polls `check` until it holds; after `patience`, fails saying `what` did not happen.
async fn wait_until<F, Fut>(what: &str, patience: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + patience;
    while !check().await {
        anyhow::ensure!(Instant::now() < deadline, "{what} within {patience:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Stops the RabbitMQ application for `down` (plus the time `rabbitmqctl` takes) and
/// starts it again; returns once it accepts AMQP connections on `port` again.
pub async fn restart_rabbitmq(port: u16, down: Duration) -> anyhow::Result<()> {
    run("rabbitmqctl", &["-q", "stop_app"]).await?;
    tokio::time::sleep(down).await;
    let mut started = run("rabbitmqctl", &["-q", "start_app"]).await;
    for _ in 0..3 {
        if started.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        started = run("rabbitmqctl", &["-q", "start_app"]).await;
    }
    started.context("RABBITMQ IS STOPPED: run `rabbitmqctl start_app`")?;
    wait_for_amqp(port, Duration::from_secs(60)).await
}

/// Ready and unacknowledged messages of each queue of the default vhost.
pub async fn queue_depths() -> anyhow::Result<HashMap<String, (u64, u64)>> {
    let listing = run(
        "rabbitmqctl",
        &["-q", "list_queues", "--no-table-headers", "name", "messages_ready", "messages_unacknowledged"],
    )
    .await?;
    let mut depths = HashMap::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [name, ready, unacked] = fields[..]
            && let (Ok(ready), Ok(unacked)) = (ready.parse(), unacked.parse())
        {
            depths.insert(name.to_owned(), (ready, unacked));
        }
    }
    Ok(depths)
}

/// Deletes `queue` and every queue named `<queue>.<something>` (its dead-letter and
/// retry queues) of the default vhost.
pub async fn delete_queue_family(queue: &str) -> anyhow::Result<()> {
    let family = format!("{queue}.");
    for name in queue_depths().await?.keys().filter(|name| *name == queue || name.starts_with(&family)) {
        run("rabbitmqctl", &["-q", "delete_queue", name]).await?;
    }
    Ok(())
}

/// A running Redis server and how to start it again as it is.
#[derive(Debug, Clone)]
pub struct RedisServer {
    host: String,
    port: u16,
    /// `redis-server` arguments reproducing its current settings.
    args: Vec<String>,
    dump: PathBuf,
}

impl RedisServer {
    /// Asks the server at `url` (`redis://host:port[/db]`) for its settings.
    pub async fn inspect(url: &str) -> anyhow::Result<Self> {
        let authority = url
            .strip_prefix("redis://")
            .context("only redis:// URLs are supported")?
            .split('/')
            .next()
            .unwrap_or_default();
        anyhow::ensure!(!authority.contains('@'), "a Redis with a password is not restarted by this suite");
        let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "6379"));
        let mut server = Self {
            host: host.to_owned(),
            port: port.parse().context("bad Redis port")?,
            args: Vec::new(),
            dump: PathBuf::new(),
        };
        let mut args = vec!["--daemonize".to_owned(), "yes".to_owned()];
        for key in ["port", "bind", "dir", "logfile", "save", "appendonly", "dbfilename", "protected-mode"] {
            let value = server.config_get(key).await?;
            args.push(format!("--{key}"));
            // `bind` lists addresses: each is its own argument.
            if key == "bind" {
                args.extend(value.split_whitespace().map(str::to_owned));
            } else {
                args.push(value);
            }
        }
        let value_of = |key: &str| {
            args.iter().position(|a| a == &format!("--{key}")).and_then(|i| args.get(i + 1)).cloned()
        };
        let dir = value_of("dir").unwrap_or_default();
        let file = value_of("dbfilename").unwrap_or_default();
        anyhow::ensure!(!dir.is_empty() && !file.is_empty(), "Redis reports no dump location");
        server.dump = PathBuf::from(dir).join(file);
        server.args = args;
        Ok(server)
    }

    async fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let port = self.port.to_string();
        let mut all = vec!["-h", self.host.as_str(), "-p", port.as_str(), "--raw"];
        all.extend_from_slice(args);
        run("redis-cli", &all).await
    }

    async fn config_get(&self, key: &str) -> anyhow::Result<String> {
        let reply = self.cli(&["CONFIG", "GET", key]).await?;
        let mut lines = reply.lines();
        anyhow::ensure!(lines.next() == Some(key), "Redis did not report {key}: {reply:?}");
        Ok(lines.next().unwrap_or_default().to_owned())
    }

    async fn answers(&self) -> bool {
        self.cli(&["PING"]).await.is_ok_and(|reply| reply.trim() == "PONG")
    }

    /// The command that starts this server again as it was.
    pub fn start_command(&self) -> String {
        let quoted: Vec<String> =
            self.args.iter().map(|a| if a.is_empty() { "''".to_owned() } else { a.clone() }).collect();
        format!("redis-server {}", quoted.join(" "))
    }

    /// Saves and shuts the server down, waits `down`, and starts it again; returns once
    /// it answers PING (after loading its dump).
    pub async fn restart(&self, down: Duration) -> anyhow::Result<()> {
        let had_dump = self.dump.exists();
        // The connection closes under redis-cli as the server exits: not an error.
        let _ = self.cli(&["SHUTDOWN", "SAVE"]).await;
        let port = self.port;
        wait_until("Redis did not stop", Duration::from_secs(30), || async move { !port_open(port).await })
            .await?;
        tokio::time::sleep(down).await;
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut started = Err(anyhow::anyhow!("not started"));
        for _ in 0..3 {
            started = async {
                run("redis-server", &args).await?;
                wait_until("Redis did not answer", Duration::from_secs(30), || self.answers()).await
            }
            .await;
            if started.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        started.with_context(|| format!("REDIS IS DOWN: start it with `{}`", self.start_command()))?;
        if !had_dump {
            // Loaded (PING answers only after loading); leave no stale dump behind for a
            // later start of the server to load.
            let _ = std::fs::remove_file(&self.dump);
        }
        Ok(())
    }
}
