//! GetBooking and ListBookings: reads, with the rule of who may see a booking
//! (its owner, or an admin), which pay and cancel apply too.

use super::Saga;
use crate::domain::{Booking, BookingId, Caller, ListQuery};
use crate::error::BookingError;

impl Saga {
    pub(super) async fn visible(&self, id: BookingId, caller: Caller) -> Result<Booking, BookingError> {
        match self.store.find(id).await? {
            Some(booking) if caller.may_see(&booking) => Ok(booking),
            _ => Err(BookingError::NotFound),
        }
    }

    pub async fn get(&self, id: BookingId, caller: Caller) -> Result<Booking, BookingError> {
        self.visible(id, caller).await
    }

    /// One page, newest first, and the cursor of the next (if any).
    pub async fn list(&self, query: ListQuery) -> Result<(Vec<Booking>, Option<BookingId>), BookingError> {
        let (bookings, more) = self.store.list(&query).await?;
        let next = if more { bookings.last().map(|b| b.id) } else { None };
        Ok((bookings, next))
    }
}
