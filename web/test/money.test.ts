import { describe, expect, it } from "vitest";
import { formatMoney, sumMoney } from "../src/lib/money";

describe("money", () => {
  it("formats minor units in the currency's own decimals", () => {
    expect(formatMoney({ amount: 850, currency: "EUR" })).toBe("€8.50");
    expect(formatMoney({ amount: 1700, currency: "EUR" })).toBe("€17.00");
    expect(formatMoney({ amount: 1500, currency: "JPY" })).toBe("JP¥1,500");
  });

  it("sums one currency and refuses to mix", () => {
    expect(sumMoney([])).toBeNull();
    expect(sumMoney([{ amount: 850, currency: "EUR" }, { amount: 1200, currency: "EUR" }])).toEqual({ amount: 2050, currency: "EUR" });
    expect(() => sumMoney([{ amount: 1, currency: "EUR" }, { amount: 1, currency: "USD" }])).toThrow(/mixed currencies/);
  });
});
