/** A booking's confirmation (or where it stands): seats, total, showtime, refund. */
import { request } from "../api/client";
import { BookingDocument, type BookingFieldsFragment, type BookingQuery } from "../api/generated";
import { describeError, listSeats } from "../lib/errors";
import { formatMoney } from "../lib/money";
import { formatShowTime } from "../lib/time";
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

type Ticket = NonNullable<BookingQuery["booking"]>["tickets"][number];

/** Tickets are issued from the confirmation event, a moment after the booking turns
 * CONFIRMED: the page asks again this often, this many times, before giving up. */
const TICKET_POLL_MS = 1000;
const TICKET_POLLS = 15;

const TICKET_WORDS: Record<Ticket["status"], string> = {
  VALID: "Valid: show this code at the door",
  CHECKED_IN: "Checked in",
  REVOKED: "Revoked (the booking was cancelled)",
};

/** One QR code per seat. The SVG comes from the gateway; it is shown as an image (a
 * data URL), never inserted as markup, so nothing in it can run. */
function ticketCards(tickets: Ticket[], timeZone: string): HTMLElement {
  const sorted = [...tickets].sort((a, b) => a.seatId.localeCompare(b.seatId, "en", { numeric: true }));
  return h(
    "ul",
    { class: "tickets" },
    sorted.map((t) =>
      h(
        "li",
        { class: `ticket ticket-${t.status.toLowerCase()}` },
        h("img", {
          src: `data:image/svg+xml;charset=utf-8,${encodeURIComponent(t.qrSvg)}`,
          alt: `QR code of the ticket for seat ${t.seatId}`,
          width: 220,
          height: 220,
        }),
        h("p", { class: "ticket-seat" }, `Seat ${t.seatId}`),
        h(
          "p",
          { class: "ticket-status" },
          t.status === "CHECKED_IN" && t.checkedInAt ? `Checked in ${formatShowTime(t.checkedInAt, timeZone)}` : TICKET_WORDS[t.status],
        ),
      ),
    ),
  );
}

/** The tickets section: the cards, or a note while they are being issued (asking again
 * until they are there or the polls run out). */
function ticketsSection(id: string, first: NonNullable<BookingQuery["booking"]>): HTMLElement {
  const section = h("section", { class: "tickets-section", "aria-live": "polite" }, h("h2", null, "Your tickets"));
  const body = h("div", null);
  section.append(body);
  const timeZone = first.showtime.cinema.timeZone;
  const show = (tickets: Ticket[]): boolean => {
    if (tickets.length === 0) return false;
    replace(body, ticketCards(tickets, timeZone));
    return true;
  };
  if (!show(first.tickets)) {
    replace(body, h("p", null, "Your tickets are being issued…"));
    void (async () => {
      for (let poll = 0; poll < TICKET_POLLS; poll++) {
        await new Promise((resolve) => setTimeout(resolve, TICKET_POLL_MS));
        // The customer went to another page.
        if (!section.isConnected) return;
        try {
          const { booking } = await request(BookingDocument, { id });
          if (booking && show(booking.tickets)) return;
        } catch {
          // A failed poll is retried by the next one.
        }
      }
      replace(body, h("p", null, "Your tickets are not ready yet: reload this page in a minute, or use the codes in your confirmation email."));
    })();
  }
  return section;
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
        booking.status === "CONFIRMED" || booking.tickets.length > 0 ? ticketsSection(id, booking) : null,
        h("p", null, h("a", { href: "#/bookings" }, "All my bookings"), " · ", h("a", { href: "#/" }, "More showtimes")),
      );
    } catch (error) {
      replace(main, h("h1", null, "Booking"), notice("error", describeError(error)));
    }
  })();
}
