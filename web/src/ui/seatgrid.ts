/**
 * The seat map on screen: one button per seat, drawn once, then only the seats that
 * change are touched (class, label, pressed/disabled state). A single tab stop (roving
 * tabindex) with arrow keys, so a 10,000-seat hall costs one Tab press, not 10,000.
 * Timings are recorded as performance marks for the budget benchmark.
 */
import { h } from "./dom";
import type { Seat, SeatMapModel } from "../lib/seatmap";

export interface SeatGrid {
  element: HTMLElement;
  /** Redraws these seats (after a live change or a selection change). */
  update(ids: Iterable<string>): void;
  /** Marks seats a refusal named (SEAT_UNAVAILABLE, SEAT_RULE_VIOLATION). */
  highlight(ids: readonly string[]): void;
  focus(id: string): void;
}

const KEYS: Record<string, "left" | "right" | "up" | "down" | "home" | "end"> = {
  ArrowLeft: "left",
  ArrowRight: "right",
  ArrowUp: "up",
  ArrowDown: "down",
  Home: "home",
  End: "end",
};

function className(model: SeatMapModel, seat: Seat, flagged: boolean): string {
  let name = `seat seat-${seat.state.toLowerCase()} cat-${seat.category.replace(/[^a-z0-9-]/gi, "")}`;
  if (seat.accessible) name += " seat-accessible";
  if (seat.companion) name += " seat-companion";
  if (model.isSelected(seat.id)) name += " seat-selected";
  if (model.isMine(seat.id)) name += " seat-mine";
  if (flagged) name += " seat-flagged";
  return name;
}

export function seatGrid(model: SeatMapModel, onToggle: (id: string) => void): SeatGrid {
  performance.mark("seatmap-render-start");
  const buttons = new Map<string, HTMLButtonElement>();
  const flagged = new Set<string>();
  let current: string | null = null;

  const draw = (seat: Seat, button: HTMLButtonElement) => {
    button.className = className(model, seat, flagged.has(seat.id));
    button.setAttribute("aria-label", model.label(seat));
    button.setAttribute("aria-pressed", String(model.isSelected(seat.id)));
    button.setAttribute("aria-disabled", String(seat.state !== "AVAILABLE" && !model.isSelected(seat.id)));
  };

  const grid = h("div", {
    class: "seat-grid",
    role: "group",
    "aria-label": "Seats. Use the arrow keys to move between seats, Space or Enter to select.",
  });
  grid.style.setProperty("--columns", String(model.columns));
  const fragment = document.createDocumentFragment();
  for (const row of model.rows) {
    const rowElement = h("div", { class: "seat-row", role: "group", "aria-label": `Row ${row.label}` });
    rowElement.appendChild(h("span", { class: "row-label", "aria-hidden": "true" }, row.label));
    for (const seat of row.seats) {
      const button = document.createElement("button");
      button.type = "button";
      button.tabIndex = -1;
      button.dataset.seat = seat.id;
      button.textContent = String(seat.number);
      button.style.gridColumnStart = String(seat.position + 1);
      draw(seat, button);
      buttons.set(seat.id, button);
      rowElement.appendChild(button);
    }
    fragment.appendChild(rowElement);
  }
  grid.appendChild(fragment);

  const first = model.rows[0]?.seats.find((s) => s.state === "AVAILABLE") ?? model.rows[0]?.seats[0];
  if (first) {
    current = first.id;
    buttons.get(first.id)!.tabIndex = 0;
  }

  const moveTo = (id: string, focus: boolean) => {
    if (current) buttons.get(current)!.tabIndex = -1;
    current = id;
    const button = buttons.get(id)!;
    button.tabIndex = 0;
    if (focus) button.focus();
  };

  // One listener for all seats (10,000 listeners would cost more than the seats).
  grid.addEventListener("click", (event) => {
    const button = (event.target as HTMLElement).closest<HTMLButtonElement>("button[data-seat]");
    if (!button) return;
    const id = button.dataset.seat!;
    moveTo(id, false);
    onToggle(id);
  });
  grid.addEventListener("keydown", (event) => {
    const direction = KEYS[event.key];
    if (!direction || !current) return;
    const next = model.neighbour(current, direction);
    event.preventDefault();
    if (next) moveTo(next.id, true);
  });

  // After the frame that shows it (style, layout and paint included).
  requestAnimationFrame(() =>
    setTimeout(() => {
      performance.mark("seatmap-render-end");
      performance.measure("seatmap-render", "seatmap-render-start", "seatmap-render-end");
    }, 0),
  );

  return {
    element: grid,
    update(ids) {
      performance.mark("seat-update-start");
      for (const id of ids) {
        const seat = model.seat(id);
        const button = buttons.get(id);
        if (seat && button) draw(seat, button);
      }
      performance.mark("seat-update-end");
      performance.measure("seat-update", "seat-update-start", "seat-update-end");
    },
    highlight(ids) {
      const before = [...flagged];
      flagged.clear();
      for (const id of ids) flagged.add(id);
      this.update([...before, ...ids]);
    },
    focus(id) {
      if (buttons.has(id)) moveTo(id, true);
    },
  };
}
