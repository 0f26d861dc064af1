//! The benchmark hall: one cinema with a 100 x 100 screen, built through the cinema
//! service's admin RPCs, and showtimes on it days away (no hold cutoff applies).

use marquee_proto::cinema::v1 as pb;
use marquee_proto::cinema::v1::cinema_service_client::CinemaServiceClient;
use tonic::transport::Channel;
use uuid::Uuid;

pub const ROWS: usize = 100;
pub const SEATS_PER_ROW: usize = 100;
pub const SEATS: usize = ROWS * SEATS_PER_ROW;
/// Price of every seat, minor units (EUR).
pub const PRICE_MINOR: i64 = 1000;

fn row_label(row: usize) -> String {
    // Letters only, so "AB" + "12" can never collide with another row's seat id.
    let letter = |i: usize| char::from(b'A' + u8::try_from(i).unwrap_or(0));
    format!("{}{}", letter(row / 26), letter(row % 26))
}

/// Seat `k` (0-based, row-major) of the hall; `pgbench_seat_sql` computes the same id in SQL.
pub fn seat_id(k: usize) -> String {
    format!("{}{}", row_label(k / SEATS_PER_ROW), k % SEATS_PER_ROW + 1)
}

/// `seat_id(:k)` as a SQL expression over the pgbench variable `:k`.
pub fn pgbench_seat_sql() -> String {
    format!(
        "chr(65 + (:k / {SEATS_PER_ROW}) / 26) || chr(65 + (:k / {SEATS_PER_ROW}) % 26) || (:k % {SEATS_PER_ROW} + 1)"
    )
}

/// xorshift64*: cheap, dependency-free randomness for seat picks.
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Self {
        Self(Uuid::new_v4().as_u64_pair().0 | 1)
    }

    pub fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound.max(1) as u64) as usize
    }
}

/// Creates the movie, cinema and hall, then `showtimes` showtimes on consecutive days
/// starting tomorrow; returns their ids.
pub async fn build_hall(channel: Channel, showtimes: usize) -> anyhow::Result<Vec<String>> {
    let mut client = CinemaServiceClient::new(channel);
    let movie = client
        .create_movie(pb::CreateMovieRequest {
            title: "Benchmark".into(),
            runtime_minutes: 120,
            ..Default::default()
        })
        .await?
        .into_inner();
    let cinema = client
        .create_cinema(pb::CreateCinemaRequest {
            name: "Bench Palace".into(),
            city: "Benchville".into(),
            address: String::new(),
            time_zone: "Europe/Berlin".into(),
        })
        .await?
        .into_inner();
    let rows = (0..ROWS)
        .map(|r| pb::LayoutRow {
            label: row_label(r),
            seats: (1..=SEATS_PER_ROW)
                .map(|n| pb::LayoutSeat {
                    number: i32::try_from(n).unwrap_or(1),
                    category: "standard".into(),
                    ..Default::default()
                })
                .collect(),
        })
        .collect();
    let screen = client
        .create_screen(pb::CreateScreenRequest { cinema_id: cinema.id, name: "Hall".into(), rows })
        .await?
        .into_inner();
    let mut ids = Vec::new();
    for day in 1..=showtimes {
        let starts_at = chrono::Utc::now() + chrono::Duration::days(i64::try_from(day).unwrap_or(1));
        let showtime = client
            .create_showtime(pb::CreateShowtimeRequest {
                movie_id: movie.id.clone(),
                screen_id: screen.id.clone(),
                starts_at: Some(marquee_kit::time::to_proto(starts_at)),
                prices: vec![pb::CategoryPrice {
                    category: "standard".into(),
                    price: Some(marquee_proto::common::v1::Money {
                        amount_minor: PRICE_MINOR,
                        currency: "EUR".into(),
                    }),
                }],
            })
            .await?
            .into_inner();
        ids.push(showtime.id);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seat_ids_are_distinct_over_the_hall() {
        let ids: std::collections::HashSet<String> = (0..SEATS).map(seat_id).collect();
        assert_eq!(ids.len(), SEATS);
        assert_eq!(seat_id(0), "AA1");
        assert_eq!(seat_id(SEATS - 1), "DV100");
    }
}
