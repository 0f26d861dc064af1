/**
 * The seat map of one showtime as a plain model: rows as the screen lays them out
 * (positions count aisles and gaps), each seat's state, the customer's selection and
 * its total. Live changes go through `apply`, which reports exactly which seats
 * changed so the view redraws only those.
 */
import { formatMoney, sumMoney, type Money } from "./money";

export type SeatState = "AVAILABLE" | "HELD" | "BOOKED" | "BLOCKED";

export interface Seat {
  id: string;
  row: string;
  number: number;
  category: string;
  state: SeatState;
  accessible: boolean;
  companion: boolean;
  /** Left-to-right place in the row counting aisles: adjacent when they differ by one. */
  position: number;
  price: Money;
}

export interface SeatChange {
  seatId: string;
  state: SeatState;
}

export interface Row {
  label: string;
  seats: Seat[];
}

/** Row labels front to back: "A" < "B" < … < "Z" < "AA". */
function compareRows(a: string, b: string): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}

export function stateWord(state: SeatState): string {
  switch (state) {
    case "AVAILABLE":
      return "available";
    case "HELD":
      return "held by another customer";
    case "BOOKED":
      return "booked";
    case "BLOCKED":
      return "not for sale";
  }
}

export class SeatMapModel {
  readonly rows: Row[];
  /** The widest row's last position: the grid's column count. */
  readonly columns: number;
  private readonly byId = new Map<string, Seat>();
  private readonly selection = new Set<string>();
  /** Seats this customer holds (they show as HELD to everyone, "held by you" here). */
  private readonly mine = new Set<string>();

  constructor(seats: readonly Seat[]) {
    const rows = new Map<string, Seat[]>();
    let columns = 0;
    for (const original of seats) {
      const seat = { ...original };
      this.byId.set(seat.id, seat);
      let row = rows.get(seat.row);
      if (!row) rows.set(seat.row, (row = []));
      row.push(seat);
      columns = Math.max(columns, seat.position);
    }
    this.rows = [...rows.entries()]
      .sort(([a], [b]) => compareRows(a, b))
      .map(([label, rowSeats]) => ({ label, seats: rowSeats.sort((a, b) => a.position - b.position) }));
    this.columns = columns;
  }

  get size(): number {
    return this.byId.size;
  }

  seat(id: string): Seat | undefined {
    return this.byId.get(id);
  }

  isSelected(id: string): boolean {
    return this.selection.has(id);
  }

  selected(): Seat[] {
    return [...this.selection].map((id) => this.byId.get(id)).filter((s): s is Seat => s !== undefined);
  }

  /** Selects or deselects an available seat; false (no change) for any other seat. */
  toggle(id: string): boolean {
    const seat = this.byId.get(id);
    if (!seat) return false;
    if (this.selection.delete(id)) return true;
    if (seat.state !== "AVAILABLE") return false;
    this.selection.add(id);
    return true;
  }

  /** Replaces the selection (best available); returns every seat whose look changed. */
  select(ids: readonly string[]): string[] {
    const changed = new Set(this.selection);
    this.selection.clear();
    for (const id of ids) {
      const seat = this.byId.get(id);
      if (seat && seat.state === "AVAILABLE") {
        this.selection.add(id);
        changed.add(id);
      }
    }
    return [...changed];
  }

  isMine(id: string): boolean {
    return this.mine.has(id);
  }

  /** Marks the customer's own held seats (empty: none); returns every seat whose look changed. */
  setMine(ids: readonly string[]): string[] {
    const changed = new Set([...this.mine, ...ids]);
    this.mine.clear();
    for (const id of ids) if (this.byId.has(id)) this.mine.add(id);
    return [...changed];
  }

  clearSelection(): string[] {
    const ids = [...this.selection];
    this.selection.clear();
    return ids;
  }

  /**
   * Applies live changes (or a reloaded map's states). Returns the ids whose state
   * changed; a selected seat that became unavailable leaves the selection.
   */
  apply(changes: Iterable<SeatChange>): string[] {
    const changed: string[] = [];
    for (const { seatId, state } of changes) {
      const seat = this.byId.get(seatId);
      if (!seat || seat.state === state) continue;
      seat.state = state;
      if (state !== "AVAILABLE") this.selection.delete(seatId);
      changed.push(seatId);
    }
    return changed;
  }

  total(): Money | null {
    return sumMoney(this.selected().map((s) => s.price));
  }

  /** Each category with its price, cheapest first, for the legend. */
  categories(): { category: string; price: Money }[] {
    const seen = new Map<string, Money>();
    for (const seat of this.byId.values()) if (!seen.has(seat.category)) seen.set(seat.category, seat.price);
    return [...seen.entries()].map(([category, price]) => ({ category, price })).sort((a, b) => a.price.amount - b.price.amount);
  }

  /** "Row E, seat 7, standard, €8.50, wheelchair space, available, selected". */
  label(seat: Seat): string {
    const parts = [`Row ${seat.row}`, `seat ${seat.number}`, seat.category, formatMoney(seat.price)];
    if (seat.accessible) parts.push("wheelchair space");
    if (seat.companion) parts.push("companion seat");
    parts.push(this.mine.has(seat.id) && seat.state === "HELD" ? "held by you" : stateWord(seat.state));
    if (this.selection.has(seat.id)) parts.push("selected");
    return parts.join(", ");
  }

  /**
   * The seat a keyboard arrow moves to from `id`: left/right within the row, up/down to
   * the seat at the nearest position in the row in front or behind.
   */
  neighbour(id: string, direction: "left" | "right" | "up" | "down" | "home" | "end"): Seat | undefined {
    const seat = this.byId.get(id);
    if (!seat) return undefined;
    const rowIndex = this.rows.findIndex((r) => r.label === seat.row);
    const row = this.rows[rowIndex];
    const index = row.seats.indexOf(seat);
    switch (direction) {
      case "left":
        return row.seats[index - 1];
      case "right":
        return row.seats[index + 1];
      case "home":
        return row.seats[0];
      case "end":
        return row.seats[row.seats.length - 1];
      case "up":
      case "down": {
        const next = this.rows[rowIndex + (direction === "up" ? -1 : 1)];
        if (!next) return undefined;
        let best = next.seats[0];
        for (const candidate of next.seats) {
          if (Math.abs(candidate.position - seat.position) < Math.abs(best.position - seat.position)) best = candidate;
        }
        return best;
      }
    }
  }
}
