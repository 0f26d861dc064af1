//! The PostgreSQL-alone baseline: `pgbench` calling the cinema's own seat functions
//! (`cinema_lock_seats` then `cinema_confirm_seats`, exactly what LockSeats and
//! ConfirmSeats run) for one seat per booking, with no two clients on one seat. Each
//! client is one user, held to the services' default limit of 2 live holds.

use std::path::PathBuf;

use anyhow::Context;
use uuid::Uuid;

use crate::catalog::pgbench_seat_sql;

/// Runs `clients` pgbench clients, `per_client` bookings each, on `showtime` in the
/// database at `database_url`; returns pgbench's tps (one booking per transaction).
/// Client c books seats c, c + clients, c + 2 clients, ...
pub fn lock_confirm(
    database_url: &str,
    showtime: &str,
    clients: usize,
    per_client: usize,
) -> anyhow::Result<f64> {
    let seat = pgbench_seat_sql();
    let script = format!(
        "\\set i :i + 1\n\
         \\set k :client_id + (:i - 1) * {clients}\n\
         SELECT count(*) FROM cinema_lock_seats('{showtime}'::uuid, ARRAY[{seat}], md5('pgb' || :k)::uuid, \
           md5('pgu' || :client_id)::uuid, 2, 300, 0, false);\n\
         SELECT count(*) FROM cinema_confirm_seats('{showtime}'::uuid, md5('pgb' || :k)::uuid, ARRAY[{seat}]);\n"
    );
    let path: PathBuf = std::env::temp_dir().join(format!("marquee-bench-{}.sql", Uuid::new_v4()));
    std::fs::write(&path, script).context("cannot write the pgbench script")?;
    let output = std::process::Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-D", "i=0"])
        .args(["-c", &clients.to_string(), "-j", "2", "-t", &per_client.to_string()])
        .arg("-f")
        .arg(&path)
        .arg(database_url)
        .output()
        .context("cannot run pgbench (is it installed?)")?;
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed: {}{}",
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    let failed: i64 = count_after(&stdout, "number of failed transactions:").unwrap_or(0);
    anyhow::ensure!(failed == 0, "pgbench had {failed} failed transactions:\n{stdout}");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = ")?.split_whitespace().next()?.parse::<f64>().ok())
        .with_context(|| format!("no tps in pgbench output:\n{stdout}"))
}

fn count_after(text: &str, prefix: &str) -> Option<i64> {
    text.lines().find_map(|l| l.trim().strip_prefix(prefix)?.split_whitespace().next()?.parse().ok())
}
