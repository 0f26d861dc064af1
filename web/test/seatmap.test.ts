import { describe, expect, it } from "vitest";
import { SeatMapModel, type Seat } from "../src/lib/seatmap";

const eur = (amount: number) => ({ amount, currency: "EUR" });

function seat(id: string, position: number, extra: Partial<Seat> = {}): Seat {
  const row = id.replace(/\d+$/, "");
  return { id, row, number: Number(id.slice(row.length)), category: "standard", state: "AVAILABLE", accessible: false, companion: false, position, price: eur(850), ...extra };
}

// Row B has an aisle after seat 2 (positions 1, 2, 4, 5); rows arrive shuffled.
const seats = [seat("B4", 5), seat("A1", 1), seat("B1", 1), seat("A2", 2), seat("B2", 2), seat("A3", 3, { category: "premium", price: eur(1200) }), seat("B3", 4, { accessible: true }), seat("AA1", 1)];

describe("SeatMapModel", () => {
  it("lays rows out front to back and seats by position, aisles included", () => {
    const model = new SeatMapModel(seats);
    expect(model.rows.map((r) => r.label)).toEqual(["A", "B", "AA"]);
    expect(model.rows[1].seats.map((s) => s.id)).toEqual(["B1", "B2", "B3", "B4"]);
    expect(model.columns).toBe(5);
    expect(model.size).toBe(8);
  });

  it("selects only available seats and totals their prices", () => {
    const model = new SeatMapModel(seats);
    model.apply([{ seatId: "A2", state: "HELD" }]);
    expect(model.toggle("A1")).toBe(true);
    expect(model.toggle("A2")).toBe(false);
    expect(model.toggle("A3")).toBe(true);
    expect(model.total()).toEqual(eur(2050));
    expect(model.toggle("A1")).toBe(true);
    expect(model.total()).toEqual(eur(1200));
    expect(model.toggle("nope")).toBe(false);
  });

  it("reports only the seats a live change altered, and drops them from the selection", () => {
    const model = new SeatMapModel(seats);
    model.toggle("B1");
    model.toggle("B2");
    const changed = model.apply([
      { seatId: "B1", state: "HELD" },
      { seatId: "A1", state: "AVAILABLE" }, // no change
      { seatId: "ZZ9", state: "BOOKED" }, // unknown seat
    ]);
    expect(changed).toEqual(["B1"]);
    expect(model.selected().map((s) => s.id)).toEqual(["B2"]);
    expect(model.seat("B1")?.state).toBe("HELD");
  });

  it("does not share state with the seats it was built from", () => {
    const input = [seat("A1", 1)];
    const model = new SeatMapModel(input);
    model.apply([{ seatId: "A1", state: "BOOKED" }]);
    expect(input[0].state).toBe("AVAILABLE");
  });

  it("replaces the selection with suggested seats", () => {
    const model = new SeatMapModel(seats);
    model.toggle("A1");
    const changed = model.select(["B1", "B2"]);
    expect(new Set(changed)).toEqual(new Set(["A1", "B1", "B2"]));
    expect(model.selected().map((s) => s.id)).toEqual(["B1", "B2"]);
  });

  it("names every seat by row, number, category, price and state", () => {
    const model = new SeatMapModel(seats);
    expect(model.label(model.seat("A1")!)).toBe("Row A, seat 1, standard, €8.50, available");
    model.toggle("A1");
    expect(model.label(model.seat("A1")!)).toBe("Row A, seat 1, standard, €8.50, available, selected");
    expect(model.label(model.seat("B3")!)).toBe("Row B, seat 3, standard, €8.50, wheelchair space, available");
    model.apply([{ seatId: "A3", state: "HELD" }]);
    expect(model.label(model.seat("A3")!)).toBe("Row A, seat 3, premium, €12.00, held by another customer");
    model.setMine(["A3"]);
    expect(model.label(model.seat("A3")!)).toBe("Row A, seat 3, premium, €12.00, held by you");
  });

  it("moves like a keyboard user expects: along the row, and to the nearest seat behind", () => {
    const model = new SeatMapModel(seats);
    expect(model.neighbour("B2", "right")?.id).toBe("B3");
    expect(model.neighbour("B1", "left")).toBeUndefined();
    expect(model.neighbour("A2", "down")?.id).toBe("B2");
    expect(model.neighbour("A3", "down")?.id).toBe("B2"); // positions 2 and 4 tie: the left one
    expect(model.neighbour("B4", "up")?.id).toBe("A3");
    expect(model.neighbour("A1", "up")).toBeUndefined();
    expect(model.neighbour("B2", "end")?.id).toBe("B4");
    expect(model.neighbour("B4", "home")?.id).toBe("B1");
  });

  it("lists categories with their prices, cheapest first, for the legend", () => {
    expect(new SeatMapModel(seats).categories()).toEqual([
      { category: "standard", price: eur(850) },
      { category: "premium", price: eur(1200) },
    ]);
  });
});
