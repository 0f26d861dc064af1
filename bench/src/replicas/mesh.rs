//! One phase's mesh: the real service processes, started and supervised as the chaos
//! suite starts them (`chaos::setup`, `procs::Supervisor`) on stores of their own, with
//! one or two replicas of cinema, booking and payment and one to three gateways; the
//! benchmark hall built through the cinema admin RPCs; and, at the end, the processes
//! stopped and the phase's queues (and, unless asked to keep them, stores) deleted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use marquee_e2e::MeshSettings as Settings;
use tonic::transport::{Channel, Endpoint};

use crate::brokers;
use crate::catalog::build_hall;
use crate::chaos::setup::{
    Ports, drop_stores, environment, gateway_replica, isolated_settings, rabbitmq_port, specs,
    wait_until_ready,
};
use crate::mesh::Gateway;
use crate::procs::Supervisor;

/// Which processes run more than once.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// A second cinema, booking, payment and gateway (`chaos::setup::REPLICATED`).
    pub replicas: bool,
    /// A third gateway on top of those.
    pub third_gateway: bool,
}

impl Layout {
    pub const ONE: Self = Self { replicas: false, third_gateway: false };
    pub const TWO: Self = Self { replicas: true, third_gateway: false };
    pub const THREE_GATEWAYS: Self = Self { replicas: true, third_gateway: true };

    pub const fn gateway_count(self) -> usize {
        1 + self.replicas as usize + self.third_gateway as usize
    }

    /// The gateway processes: their supervisor names and ports.
    fn gateways(self, ports: Ports) -> Vec<(&'static str, u16)> {
        let mut gateways = vec![("gateway", ports.gateway)];
        if self.replicas {
            gateways.push(("gateway-2", ports.gateway_2));
        }
        if self.third_gateway {
            gateways.push(("gateway-3", ports.gateway_3));
        }
        gateways
    }
}

/// Where every phase's mesh comes from and where it logs.
pub struct Place {
    /// The binaries (`marquee-user`, ... `marquee-gateway`).
    pub bin_dir: PathBuf,
    /// The repository's `config/`, for the processes and for reading their settings.
    pub config_dir: PathBuf,
    pub port_base: u16,
    /// `<logs>/<phase>/<process>.log`.
    pub logs: PathBuf,
    /// The run's start: the supervisors' and the killer's timelines count from it.
    pub epoch: Instant,
}

/// A phase's processes, up and answering, with the hall built. The supervisor is
/// returned beside it: a killer takes it over during a rush.
pub struct ProcessMesh {
    /// `one-replica`, `two-replicas` or `three-gateways`.
    pub phase: String,
    pub tag: String,
    pub settings: Settings,
    pub ports: Ports,
    pub logs: PathBuf,
    /// One showtime of the hall per day from tomorrow.
    pub showtimes: Vec<String>,
    pub processes: Vec<&'static str>,
    gateways: Vec<(&'static str, u16)>,
}

impl ProcessMesh {
    pub async fn start(
        place: &Place,
        phase: &str,
        layout: Layout,
        showtimes: usize,
    ) -> anyhow::Result<(Self, Supervisor)> {
        let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let ports = Ports::from_base(place.port_base);
        ports.ensure_free()?;
        let settings = isolated_settings(&place.config_dir, &tag).await?;
        let mut env = environment(&settings, ports, &place.config_dir, layout.replicas);
        // Warnings and errors only, as the rush bench logs (the chaos suite logs every
        // request, which costs CPU on two cores); MARQUEE_TELEMETRY__LEVEL overrides.
        if std::env::var_os("MARQUEE_TELEMETRY__LEVEL").is_none() {
            env.push(("MARQUEE_TELEMETRY__LEVEL".to_owned(), "warn".to_owned()));
        }
        let mut specs = specs(&place.bin_dir, &env, ports, None, layout.replicas);
        if layout.third_gateway {
            specs.push(gateway_replica(&place.bin_dir, &env, "gateway-3", ports.gateway_3));
        }
        for spec in &specs {
            let binary = spec.binary.display();
            anyhow::ensure!(
                spec.binary.is_file(),
                "{binary} not found: build it (scripts/bench-replicas does)"
            );
        }
        brokers::wait_for_amqp(rabbitmq_port(&settings), Duration::from_secs(120))
            .await
            .context("RabbitMQ does not answer AMQP handshakes: not starting the mesh")?;
        let logs = place.logs.join(phase);
        let processes = specs.iter().map(|spec| spec.name).collect();
        let gateways = layout.gateways(ports);
        let mut supervisor = Supervisor::new(specs, &logs, place.epoch, Duration::from_secs(60))?;
        let phase = phase.to_owned();
        let mesh = Self { phase, tag, settings, ports, logs, showtimes: Vec::new(), processes, gateways };
        let started = async {
            supervisor.start_all().await?;
            for (_, port) in &mesh.gateways {
                wait_until_ready(*port).await?;
            }
            build_hall(mesh.cinema().await?, showtimes).await.context("cannot build the hall")
        };
        match started.await {
            Ok(showtimes) => Ok((Self { showtimes, ..mesh }, supervisor)),
            Err(error) => {
                supervisor.stop_all().await;
                Err(error.context(format!(
                    "the {} mesh did not start; see {}",
                    mesh.phase,
                    mesh.logs.display()
                )))
            }
        }
    }

    /// A channel to the (first) cinema service.
    pub async fn cinema(&self) -> anyhow::Result<Channel> {
        Endpoint::from_shared(format!("http://127.0.0.1:{}", self.ports.cinema))?
            .connect()
            .await
            .context("cinema unreachable")
    }

    pub fn graphql_urls(&self) -> Vec<String> {
        self.gateways.iter().map(|(_, port)| format!("http://127.0.0.1:{port}/graphql")).collect()
    }

    /// The gateway processes as they run now (their pids from the supervisor).
    pub fn gateways(&self, supervisor: &Supervisor) -> Vec<Gateway> {
        self.gateways
            .iter()
            .map(|(name, port)| Gateway {
                addr: SocketAddr::from(([127, 0, 0, 1], *port)),
                pid: supervisor.pid(name),
            })
            .collect()
    }

    /// Stops the processes (SIGTERM, drained) and deletes the phase's queues; drops its
    /// databases unless `keep_stores` (a failed phase keeps them for inspection).
    pub async fn stop(&self, supervisor: &mut Supervisor, keep_stores: bool) -> anyhow::Result<()> {
        supervisor.stop_all().await;
        // Quorum queues hold file handles of the shared broker: they go now rather
        // than when they expire.
        for queue in [&self.settings.rabbitmq.notification_queue, &self.settings.rabbitmq.ticket_queue] {
            if let Err(error) = brokers::delete_queue_family(queue).await {
                eprintln!(
                    "[replicas] cannot delete the phase's queues (they expire in 10 minutes): {error:#}"
                );
            }
        }
        if !keep_stores {
            drop_stores(&self.settings, None).await.context("cannot drop the phase's stores")?;
        }
        Ok(())
    }

    /// The phase's stores and logs, for the report.
    pub fn describe(&self) -> serde_json::Value {
        let s = &self.settings;
        serde_json::json!({
            "phase": self.phase,
            "run": self.tag,
            "processes": self.processes,
            "gateways": self.gateways.iter().map(|(name, port)| format!("{name} 127.0.0.1:{port}")).collect::<Vec<_>>(),
            "postgres_database": s.postgres.url.expose().rsplit('/').next(),
            "mongo_database_prefix": s.mongo.database_prefix,
            "redis_key_prefix": s.redis.key_prefix,
            "rabbitmq_exchange": s.rabbitmq.exchange,
            "logs": self.logs.display().to_string(),
        })
    }
}
