/** My bookings, a page at a time, with cancellation and its refund. */
import { request, session } from "../api/client";
import { CancelBookingDocument, CancellationQuoteDocument, MyBookingsDocument, type BookingFieldsFragment } from "../api/generated";
import { ApiError, describeError } from "../lib/errors";
import { formatMoney } from "../lib/money";
import { h, notice, replace } from "../ui/dom";
import { bookingDetails } from "./booking";

const PAGE_SIZE = 10;

export function bookingsPage(main: HTMLElement): void {
  if (!session.signedIn) {
    replace(main, h("h1", null, "My bookings"), h("p", null, h("a", { href: "#/account" }, "Sign in"), " to see your bookings."));
    return;
  }
  const list = h("ol", { class: "bookings" });
  const more = h("button", { type: "button", class: "secondary" }, "Show more bookings");
  const status = h("div");
  let after: string | null = null;
  replace(main, h("h1", null, "My bookings"), status, list, more);
  more.hidden = true;
  more.addEventListener("click", () => void loadPage());

  async function loadPage(): Promise<void> {
    try {
      const { me } = await request(MyBookingsDocument, { first: PAGE_SIZE, after });
      if (!me) {
        replace(status, notice("info", "Please sign in again to see your bookings."));
        return;
      }
      const page = me.bookings;
      if (!after && page.nodes.length === 0) replace(status, notice("info", "No bookings yet. Pick a showtime to book seats."));
      for (const booking of page.nodes) list.appendChild(item(booking));
      after = page.pageInfo.endCursor ?? null;
      more.hidden = !page.pageInfo.hasNextPage;
    } catch (error) {
      replace(status, notice("error", describeError(error)));
    }
  }
  void loadPage();
}

function item(booking: BookingFieldsFragment): HTMLElement {
  const li = h("li", { class: "card booking-item" });
  const draw = (b: BookingFieldsFragment, message: HTMLElement | null = null) => {
    const cancellable = b.status === "CONFIRMED" || b.status === "HELD";
    replace(
      li,
      h("h2", null, h("a", { href: `#/booking/${b.id}` }, b.showtime.movie.title)),
      bookingDetails(b),
      message,
      cancellable ? h("button", { type: "button", class: "danger", on: { click: () => void confirmCancel(b) } }, "Cancel booking") : null,
    );
  };

  /** Asks what cancelling would refund now, then asks the customer to confirm. */
  async function confirmCancel(b: BookingFieldsFragment): Promise<void> {
    let quote;
    try {
      quote = (await request(CancellationQuoteDocument, { id: b.id })).booking?.cancellation;
    } catch (error) {
      draw(b, notice("error", describeError(error)));
      return;
    }
    if (!quote) return draw(b, notice("error", describeError(new ApiError("NOT_FOUND", "gone"))));
    if (!quote.cancellable) {
      const closed = quote.closesAt ? ` Cancellations closed at ${new Date(quote.closesAt).toLocaleString("en-GB")}.` : "";
      return draw(b, notice("info", `This booking can no longer be cancelled.${closed}`));
    }
    const refundText =
      b.status === "HELD"
        ? "It is not paid yet: nothing is charged or refunded, and the seats are released."
        : `You will get ${formatMoney(quote.refund)} back (cancellation fee ${formatMoney(quote.fee)}).`;
    const dialog = h(
      "dialog",
      { class: "dialog", "aria-labelledby": `cancel-${b.id}` },
      h("h2", { id: `cancel-${b.id}` }, "Cancel this booking?"),
      h("p", null, `${b.showtime.movie.title}, seats ${b.seats.map((s) => s.seatId).join(", ")}: you paid ${formatMoney(b.total)}.`),
      h("p", { class: "refund-quote" }, refundText),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "danger", on: { click: () => void cancel(b, dialog) } }, "Yes, cancel booking"),
        h("button", { type: "button", class: "secondary", on: { click: () => (dialog.close(), dialog.remove()) } }, "Keep booking"),
      ),
    );
    document.body.appendChild(dialog);
    dialog.showModal();
  }

  async function cancel(b: BookingFieldsFragment, dialog: HTMLDialogElement): Promise<void> {
    dialog.close();
    dialog.remove();
    try {
      const { cancelBooking } = await request(CancelBookingDocument, { id: b.id });
      const refund = cancelBooking.refund;
      draw(
        cancelBooking,
        notice("success", refund ? `Booking cancelled. ${formatMoney(refund.amount)} is on its way back to you (fee ${formatMoney(refund.fee)}).` : "Booking cancelled. Nothing was charged, so nothing is refunded."),
      );
    } catch (error) {
      draw(b, notice("error", describeError(error)));
    }
  }

  draw(booking);
  return li;
}
