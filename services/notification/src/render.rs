//! The text of the notifications this service sends.

use crate::domain::BookingConfirmed;

pub struct Message {
    pub subject: String,
    pub body: String,
}

/// Formats minor units with two decimals, which fits every currency the catalog uses.
fn format_money(amount_minor: i64, currency: &str) -> String {
    let sign = if amount_minor < 0 { "-" } else { "" };
    let abs = amount_minor.unsigned_abs();
    format!("{sign}{}.{:02} {currency}", abs / 100, abs % 100)
}

pub fn booking_confirmed(event: &BookingConfirmed) -> Message {
    let seats = event.seat_ids.join(", ");
    let subject =
        format!("Your Marquee booking is confirmed ({} seat{})", event.seat_ids.len(), plural(event));
    let body = format!(
        "Your booking {booking} is confirmed.\n\nShowtime: {showtime}\nSeats: {seats}\nTotal: {total}\nPayment: {payment}\n",
        booking = event.booking_id,
        showtime = event.showtime_id,
        total = format_money(event.total_minor, &event.currency),
        payment = event.payment_id,
    );
    Message { subject, body }
}

fn plural(event: &BookingConfirmed) -> &'static str {
    if event.seat_ids.len() == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_has_two_decimals() {
        assert_eq!(format_money(2500, "EUR"), "25.00 EUR");
        assert_eq!(format_money(1205, "USD"), "12.05 USD");
        assert_eq!(format_money(7, "EUR"), "0.07 EUR");
    }
}
