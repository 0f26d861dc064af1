/**
 * One showtime: the live seat map, picking (click, tap, keyboard, best available),
 * the hold with its countdown, and payment with the test cards.
 */
import { idempotencyKey, request, session } from "../api/client";
import { watchSeats } from "../api/live";
import {
  BookingDocument,
  HoldSeatsDocument,
  PayBookingDocument,
  ShowtimeSeatsDocument,
  SuggestSeatsDocument,
  type BookingFieldsFragment,
} from "../api/generated";
import { formatRemaining, remainingMs, spokenRemaining } from "../lib/countdown";
import { ApiError, describeError, listSeats } from "../lib/errors";
import { formatMoney } from "../lib/money";
import { SeatMapModel, stateWord, type Seat } from "../lib/seatmap";
import { h, notice, replace } from "../ui/dom";
import { seatGrid, type SeatGrid } from "../ui/seatgrid";
import { poster, showtimeSummary } from "./browse";
import { PAYMENT_METHODS } from "./payment-methods";

/** How often an unsettled payment is looked up, and for how long at most. */
const POLL_MS = 1000;
const POLL_LIMIT_MS = 120_000;

export function showtimePage(main: HTMLElement, showtimeId: string): () => void {
  const stops: (() => void)[] = [];
  let model: SeatMapModel | null = null;
  let grid: SeatGrid | null = null;
  let held: BookingFieldsFragment | null = null;
  let holdAttempt: { seats: string; key: string } | null = null;
  let payAttempt: { booking: string; method: string; key: string } | null = null;
  let pending: { seatId: string; state: Seat["state"] }[] = [];

  const liveStatus = h("p", { class: "live-status", role: "status" }, "Connecting to live seat updates…");
  const mapBox = h("div", { class: "seat-map", "aria-busy": "true" }, h("p", null, "Loading the seat map…"));
  const legend = h("div", { class: "legend" });
  const panel = h("section", { class: "panel", "aria-labelledby": "panel-title" });
  const message = h("div", { class: "message" });
  replace(main, h("p", null, "Loading…"));

  const say = (kind: "error" | "info" | "success", text: string) => replace(message, notice(kind, text));

  // Subscribe before loading, so no change between the load and the subscription is lost.
  stops.push(
    watchSeats(showtimeId, {
      changes: (changes) => {
        if (!model || !grid) {
          pending.push(...changes);
          return;
        }
        const selected = model.selected().length;
        grid.update(model.apply(changes));
        // Redraw the panel only when a change took a selected seat: redrawing it on
        // every change would re-lay out the page beside a 10,000-seat map.
        if (model.selected().length !== selected) drawPanel();
      },
      resync: () => void reload(),
      status: (connected) => {
        liveStatus.textContent = connected ? "Live: seats update as others book." : "Reconnecting to live seat updates…";
      },
    }),
  );

  async function reload(): Promise<void> {
    if (!model || !grid) return;
    try {
      const { showtime } = await request(ShowtimeSeatsDocument, { id: showtimeId });
      if (!showtime) return;
      const changes = showtime.seatMap.seats.map((s) => ({ seatId: s.id, state: s.state }));
      grid.update(model.apply(changes));
      drawPanel();
    } catch {
      // The next live change or resync tries again.
    }
  }

  async function load(): Promise<void> {
    try {
      const { showtime } = await request(ShowtimeSeatsDocument, { id: showtimeId });
      if (!showtime) {
        replace(main, h("h1", null, "Showtime not found"), h("p", null, h("a", { href: "#/" }, "Back to showtimes")));
        return;
      }
      model = new SeatMapModel(showtime.seatMap.seats);
      model.apply(pending);
      pending = [];
      grid = seatGrid(model, toggle);
      replace(mapBox, h("div", { class: "screen", "aria-hidden": "true" }, "Screen"), grid.element);
      mapBox.setAttribute("aria-busy", "false");
      drawLegend(model);
      replace(
        main,
        h(
          "div",
          { class: "showtime-head" },
          poster(showtime.movie.posterUrl, showtime.movie.title),
          h(
            "div",
            null,
            h("h1", null, showtime.movie.title),
            h("p", null, h("time", { datetime: showtime.startsAt }, showtimeSummary(showtime))),
            h("p", { class: "meta" }, `${showtime.movie.rating || "Unrated"} · ${showtime.movie.runtimeMinutes} min`),
          ),
        ),
        liveStatus,
        h("div", { class: "booking-layout" }, h("section", { class: "map-section", "aria-label": "Seat map" }, legend, mapBox), h("div", { class: "side" }, message, panel)),
      );
      drawPanel();
    } catch (error) {
      replace(main, h("h1", null, "Seat map"), notice("error", describeError(error)));
    }
  }

  function drawLegend(m: SeatMapModel): void {
    const swatch = (cls: string, text: string) => h("li", null, h("span", { class: `swatch ${cls}`, "aria-hidden": "true" }), text);
    replace(
      legend,
      h("h2", { class: "visually-hidden" }, "Legend"),
      h(
        "ul",
        { class: "legend-list" },
        m.categories().map((c) => swatch(`seat-available cat-${c.category.replace(/[^a-z0-9-]/gi, "")}`, `${c.category} ${formatMoney(c.price)}`)),
        swatch("seat-selected", "your selection"),
        swatch("seat-mine", "held by you"),
        swatch("seat-held", "taken (held or booked)"),
        swatch("seat-blocked", "not for sale"),
        swatch("seat-accessible", "wheelchair space"),
        swatch("seat-companion", "companion seat"),
      ),
    );
  }

  function toggle(id: string): void {
    if (!model || !grid || held) return;
    const seat = model.seat(id);
    if (seat && seat.state !== "AVAILABLE" && !model.isSelected(id)) {
      say("error", `Seat ${seat.id} can't be selected: it is ${stateWord(seat.state)}. Please pick an available seat.`);
      grid.highlight([id]);
      return;
    }
    grid.highlight([]);
    if (model.toggle(id)) {
      grid.update([id]);
      drawPanel();
    }
  }

  function drawPanel(): void {
    if (!model) return;
    if (held) return drawHeld(held);
    const selected = model.selected();
    const total = model.total();
    const count = h("input", { type: "number", id: "best-count", min: "1", max: "10", value: "2", class: "count" });
    const best = h("button", { type: "button", class: "secondary" }, "Find 2 best seats");
    count.addEventListener("input", () => (best.textContent = `Find ${count.value || 2} best seats`));
    best.addEventListener("click", () => void suggest(Number(count.value) || 2));
    const n = selected.length;
    const hold = h("button", { type: "button", class: "primary", disabled: n === 0 }, n === 0 ? "Select seats to hold" : `Hold ${n} seat${n === 1 ? "" : "s"}`);
    hold.addEventListener("click", () => void holdSeats());
    const signIn = h("a", { href: "#/account", class: "button primary", on: { click: rememberReturn } }, "Sign in to hold seats");
    replace(
      panel,
      h("h2", { id: "panel-title" }, "Your seats"),
      h("div", { class: "field inline" }, h("label", { for: "best-count" }, "How many seats?"), count, best),
      h(
        "div",
        { class: "selection", "aria-live": "polite" },
        n === 0
          ? h("p", null, "No seats selected. Pick seats on the map or let us find the best ones.")
          : [h("p", null, `Selected: ${listSeats(selected.map((s) => s.id))}`), h("p", { class: "total" }, `Total ${total ? formatMoney(total) : ""}`)],
      ),
      session.signedIn ? hold : signIn,
    );
  }

  async function suggest(count: number): Promise<void> {
    if (!model || !grid) return;
    try {
      const { suggestSeats } = await request(SuggestSeatsDocument, { showtimeId, count });
      if (suggestSeats.length === 0) {
        say("info", `There is no block of ${count} seats together left. Try fewer seats.`);
        return;
      }
      grid.update(model.select(suggestSeats.map((s) => s.id)));
      grid.highlight([]);
      replace(message);
      drawPanel();
      grid.focus(suggestSeats[0].id);
    } catch (error) {
      say("error", describeError(error));
    }
  }

  async function holdSeats(): Promise<void> {
    if (!model || !grid) return;
    const seatIds = model.selected().map((s) => s.id);
    const seats = [...seatIds].sort().join(",");
    // A retry of the same selection (after a network error) reuses its key.
    if (!holdAttempt || holdAttempt.seats !== seats) holdAttempt = { seats, key: idempotencyKey() };
    say("info", "Holding your seats…");
    try {
      const { holdSeats } = await request(HoldSeatsDocument, { input: { showtimeId, seatIds, idempotencyKey: holdAttempt.key } });
      holdAttempt = null;
      held = holdSeats;
      const ids = holdSeats.seats.map((s) => s.seatId);
      grid.update([...model.clearSelection(), ...model.setMine(ids)]);
      grid.highlight([]);
      replace(message);
      drawPanel();
      // The panel was redrawn under the focus: keyboard users continue from its heading.
      panel.querySelector<HTMLElement>("h2")?.focus();
    } catch (error) {
      holdAttempt = error instanceof ApiError && error.retryable ? holdAttempt : null;
      refused(error);
    }
  }

  /** A refusal, explained, with the seats it names marked on the map. */
  function refused(error: unknown): void {
    say("error", describeError(error));
    if (error instanceof ApiError && error.seatIds.length > 0 && grid) {
      grid.highlight(error.seatIds);
      if (error.code === "SEAT_UNAVAILABLE") void reload();
    }
  }

  function drawHeld(booking: BookingFieldsFragment): void {
    const timer = h("p", { class: "countdown", role: "timer", "aria-live": "off" });
    const spoken = h("p", { class: "visually-hidden", "aria-live": "polite" });
    const tick = () => {
      if (!booking.expiresAt) return;
      const left = remainingMs(booking.expiresAt, Date.now());
      timer.textContent = `Held for ${formatRemaining(left)}`;
      const words = spokenRemaining(left);
      // Announce each minute, and the last 30 seconds once.
      if (words.endsWith("minutes left") || words.endsWith("minute left") || words === "30 seconds left") {
        if (spoken.textContent !== words) spoken.textContent = words;
      }
      if (left === 0) expired();
    };
    tick();
    const interval = setInterval(tick, 1000);
    stops.push(() => clearInterval(interval));
    const pay = h("button", { type: "submit", class: "primary" }, `Pay ${formatMoney(booking.total)}`);
    const methods = PAYMENT_METHODS.map((m, i) =>
      h("div", { class: "radio" }, h("input", { type: "radio", name: "pm", id: `pm-${m.id}`, value: m.id, checked: i === 0 }), h("label", { for: `pm-${m.id}` }, h("strong", null, m.label), ` (${m.id}): ${m.effect}`)),
    );
    const form = h(
      "form",
      { class: "pay-form", on: { submit: (e: Event) => (e.preventDefault(), void payBooking(booking, (form.querySelector("input[name=pm]:checked") as HTMLInputElement).value)) } },
      h("fieldset", null, h("legend", null, "Payment method (test cards: no real money moves)"), methods),
      pay,
    );
    replace(
      panel,
      h("h2", { id: "panel-title", tabindex: "-1" }, "Pay for your seats"),
      h("p", null, `Seats ${listSeats(booking.seats.map((s) => s.seatId))} are held for you.`),
      timer,
      spoken,
      h("p", { class: "total" }, `Total ${formatMoney(booking.total)}`),
      form,
    );
  }

  function expired(): void {
    if (!model || !grid) return;
    held = null;
    grid.update(model.setMine([]));
    say("error", describeError(new ApiError("HOLD_EXPIRED", "expired")));
    for (const stop of stops.splice(1)) stop();
    drawPanel();
  }

  async function payBooking(booking: BookingFieldsFragment, method: string): Promise<void> {
    if (!payAttempt || payAttempt.booking !== booking.id || payAttempt.method !== method) {
      payAttempt = { booking: booking.id, method, key: idempotencyKey() };
    }
    processing();
    try {
      const { payBooking } = await request(PayBookingDocument, { input: { bookingId: booking.id, paymentMethod: method, idempotencyKey: payAttempt.key } });
      settled(payBooking);
    } catch (error) {
      if (error instanceof ApiError && error.code === "PAYMENT_DECLINED" && error.retryable) {
        // A processor error: nothing charged, the hold stands; a retry is a new attempt.
        payAttempt = null;
        drawHeld(booking);
        say("error", describeError(error));
      } else if (error instanceof ApiError && (error.retryable || error.code === "CONFLICT")) {
        // The payment may still be running: follow the booking instead of guessing.
        await poll(booking.id);
      } else {
        released();
        refused(error);
      }
    }
  }

  function processing(): void {
    replace(panel, h("h2", { id: "panel-title" }, "Payment processing…"), h("p", { role: "status", class: "processing" }, "Payment processing… please keep this page open."));
    replace(message);
  }

  async function poll(bookingId: string): Promise<void> {
    processing();
    const started = Date.now();
    while (Date.now() - started < POLL_LIMIT_MS) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      try {
        const { booking } = await request(BookingDocument, { id: bookingId });
        if (booking && booking.status !== "HELD") return settled(booking);
      } catch {
        // Keep following until the limit.
      }
    }
    say("info", "Your payment is taking unusually long. Check My bookings in a minute.");
  }

  function settled(booking: BookingFieldsFragment): void {
    payAttempt = null;
    if (booking.status === "CONFIRMED") {
      location.hash = `#/booking/${booking.id}`;
      return;
    }
    if (booking.status === "HELD") {
      void poll(booking.id);
      return;
    }
    released();
    const why = booking.status === "PAYMENT_FAILED" ? "PAYMENT_DECLINED" : booking.status === "EXPIRED" ? "HOLD_EXPIRED" : "INTERNAL";
    say("error", describeError(new ApiError(why, booking.reason ?? booking.status)));
  }

  /** The hold is over (declined, expired): back to picking. */
  function released(): void {
    if (!model || !grid) return;
    held = null;
    for (const stop of stops.splice(1)) stop();
    grid.update(model.setMine([]));
    drawPanel();
  }

  void load();
  return () => {
    for (const stop of stops) stop();
  };
}

function rememberReturn(): void {
  sessionStorage.setItem("marquee.return", location.hash);
}
