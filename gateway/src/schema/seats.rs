//! Seat maps: every seat of a showtime with its row, category, state and price.

use async_graphql::{Enum, ID, SimpleObject};
use marquee_proto::cinema::v1 as cinema;

use super::values::{Money, broken};
use crate::error::GatewayError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
pub enum SeatState {
    Available,
    Held,
    Booked,
    Blocked,
}

impl SeatState {
    fn from_proto(raw: i32) -> Result<Self, GatewayError> {
        match cinema::SeatState::try_from(raw) {
            Ok(cinema::SeatState::Available) => Ok(Self::Available),
            Ok(cinema::SeatState::Held) => Ok(Self::Held),
            Ok(cinema::SeatState::Booked) => Ok(Self::Booked),
            Ok(cinema::SeatState::Blocked) => Ok(Self::Blocked),
            Ok(cinema::SeatState::Unspecified) | Err(_) => Err(broken("a seat without a state")),
        }
    }
}

#[derive(Clone, Debug, SimpleObject)]
pub struct Seat {
    /// Stable seat label within the screen, e.g. "C7".
    pub id: ID,
    pub row: String,
    pub number: i32,
    pub category: String,
    pub state: SeatState,
    pub price: Money,
    /// A wheelchair space.
    pub accessible: bool,
    /// A seat for a wheelchair user's companion.
    pub companion: bool,
    /// Left-to-right place in the row counting aisles and gaps: seats are adjacent
    /// exactly when their positions differ by one, so a client can draw the aisles.
    pub position: i32,
}

impl Seat {
    pub fn from_proto(seat: cinema::Seat) -> Result<Self, GatewayError> {
        Ok(Seat {
            price: Money::from_proto(seat.price.as_ref(), "a seat without a price")?,
            state: SeatState::from_proto(seat.state)?,
            id: ID(seat.seat_id),
            row: seat.row,
            number: seat.number,
            category: seat.category,
            accessible: seat.accessible,
            companion: seat.companion,
            position: seat.position,
        })
    }
}

#[derive(Clone, Debug, SimpleObject)]
pub struct SeatMap {
    pub showtime_id: ID,
    pub seats: Vec<Seat>,
}

impl SeatMap {
    pub(super) fn from_proto(map: cinema::SeatMap) -> Result<Self, GatewayError> {
        let seats = map.seats.into_iter().map(Seat::from_proto).collect::<Result<_, GatewayError>>()?;
        Ok(Self { showtime_id: ID(map.showtime_id), seats })
    }
}
