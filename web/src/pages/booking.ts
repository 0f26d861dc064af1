/** A booking's confirmation (or where it stands): seats, total, showtime, refund. */
import { request } from "../api/client";
import { BookingDocument, type BookingFieldsFragment } from "../api/generated";
import { describeError, listSeats } from "../lib/errors";
import { formatMoney } from "../lib/money";
import { h, notice, replace } from "../ui/dom";
import { showtimeSummary } from "./browse";

export const STATUS_WORDS: Record<BookingFieldsFragment["status"], string> = {
  HELD: "Held, not paid yet",
  CONFIRMED: "Confirmed",
  PAYMENT_FAILED: "Payment failed",
  EXPIRED: "Expired",
  CANCELLED: "Cancelled",
  FAILED: "Failed (refunded)",
};

export function bookingDetails(b: BookingFieldsFragment): HTMLElement {
  return h(
    "dl",
    { class: "details" },
    h("dt", null, "Movie"),
    h("dd", null, b.showtime.movie.title),
    h("dt", null, "When and where"),
    h("dd", null, showtimeSummary(b.showtime)),
    h("dt", null, "Seats"),
    h("dd", null, listSeats(b.seats.map((s) => s.seatId))),
    h("dt", null, "Total"),
    h("dd", null, formatMoney(b.total)),
    h("dt", null, "Status"),
    h("dd", { class: `status status-${b.status.toLowerCase()}` }, STATUS_WORDS[b.status]),
    b.refund ? [h("dt", null, "Refund"), h("dd", null, `${formatMoney(b.refund.amount)} refunded (fee ${formatMoney(b.refund.fee)})`)] : null,
    h("dt", null, "Booking reference"),
    h("dd", { class: "mono" }, b.id),
  );
}

export function bookingPage(main: HTMLElement, id: string): void {
  replace(main, h("p", null, "Loading your booking…"));
  void (async () => {
    try {
      const { booking } = await request(BookingDocument, { id });
      if (!booking) {
        replace(main, h("h1", null, "Booking not found"), notice("info", "This booking does not exist or belongs to another account."));
        return;
      }
      const title = booking.status === "CONFIRMED" ? "Booking confirmed" : `Booking: ${STATUS_WORDS[booking.status]}`;
      replace(
        main,
        h("h1", null, title),
        booking.status === "CONFIRMED" ? notice("success", "Enjoy the film! A confirmation is on its way to you.") : null,
        bookingDetails(booking),
        h("p", null, h("a", { href: "#/bookings" }, "All my bookings"), " · ", h("a", { href: "#/" }, "More showtimes")),
      );
    } catch (error) {
      replace(main, h("h1", null, "Booking"), notice("error", describeError(error)));
    }
  })();
}
