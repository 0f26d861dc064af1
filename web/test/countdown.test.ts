import { describe, expect, it } from "vitest";
import { formatRemaining, remainingMs, spokenRemaining } from "../src/lib/countdown";

describe("countdown", () => {
  const expiresAt = "2026-12-04T20:08:00Z";
  const at = (iso: string) => Date.parse(iso);

  it("counts down to expiresAt and stops at zero", () => {
    expect(remainingMs(expiresAt, at("2026-12-04T20:00:00Z"))).toBe(480_000);
    expect(remainingMs(expiresAt, at("2026-12-04T20:09:00Z"))).toBe(0);
  });

  it("shows minutes and seconds, rounding up so 0:00 only when expired", () => {
    expect(formatRemaining(480_000)).toBe("8:00");
    expect(formatRemaining(479_001)).toBe("8:00");
    expect(formatRemaining(479_000)).toBe("7:59");
    expect(formatRemaining(5_000)).toBe("0:05");
    expect(formatRemaining(1)).toBe("0:01");
    expect(formatRemaining(0)).toBe("0:00");
  });

  it("words the time for screen readers", () => {
    expect(spokenRemaining(480_000)).toBe("8 minutes left");
    expect(spokenRemaining(61_000)).toBe("2 minutes left");
    expect(spokenRemaining(60_000)).toBe("1 minute left");
    expect(spokenRemaining(30_000)).toBe("30 seconds left");
    expect(spokenRemaining(1_000)).toBe("1 second left");
  });
});
