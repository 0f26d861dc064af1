//! The booking service's gauges on `/metrics`, read from MongoDB at each scrape (the
//! outbox's are `marquee_messaging::outbox::OutboxGauges`). Every replica reads the
//! same collection, so dashboards and alerts take the `max` over replicas.

use chrono::Utc;
use marquee_kit::metrics::{Gauge, Registry};

use crate::domain::BookingStatus;
use crate::store::BookingStore;

const SAGAS: &str = "booking_sagas";
const STUCK: &str = "booking_sagas_stuck";
const RELEASES_PENDING: &str = "booking_seat_releases_pending";

/// How long past its deadline an unfinished saga counts as stuck: the sweeper (every
/// `booking.sweep_interval_ms`, 5 s by default) expires or resumes it well before.
const STUCK_AFTER: chrono::Duration = chrono::Duration::seconds(60);

/// `booking_sagas{status}` (unfinished statuses only: finished bookings only grow, and
/// counting them would read the whole collection), `booking_sagas_stuck`,
/// `booking_seat_releases_pending`.
#[derive(Clone)]
pub struct SagaGauges {
    by_status: Vec<(BookingStatus, Gauge)>,
    stuck: Gauge,
    releases_pending: Gauge,
}

impl SagaGauges {
    pub fn new(registry: &Registry) -> Self {
        let by_status = std::iter::once(BookingStatus::Held)
            .chain(BookingStatus::IN_FLIGHT)
            .map(|status| {
                let help = "Bookings whose saga has not finished, by status";
                (status, registry.gauge(SAGAS, help, &[("status", status.as_str())]))
            })
            .collect();
        Self {
            by_status,
            stuck: registry.gauge(
                STUCK,
                "Unfinished sagas over a minute past their deadline (hold expiry or step lease)",
                &[],
            ),
            releases_pending: registry.gauge(
                RELEASES_PENDING,
                "Finished bookings whose seats cinema has not been told to release yet",
                &[],
            ),
        }
    }

    /// Sets every gauge from the store now.
    pub async fn refresh(&self, store: &BookingStore) -> anyhow::Result<()> {
        let (counts, stuck, releases) = futures::try_join!(
            store.unfinished_sagas(),
            store.stuck_sagas(Utc::now() - STUCK_AFTER),
            store.pending_release_count(),
        )?;
        for (status, gauge) in &self.by_status {
            let count = counts.iter().find(|(counted, _)| counted == status).map_or(0, |(_, count)| *count);
            gauge.set(count as f64);
        }
        self.stuck.set(stuck as f64);
        self.releases_pending.set(releases as f64);
        Ok(())
    }
}
