import { describe, expect, it } from "vitest";
import { ApiError, describeError, listSeats } from "../src/lib/errors";

const from = (code: string, extensions: Record<string, unknown> = {}, message = "raw server text") =>
  ApiError.fromGraphQL({ message, extensions: { code, ...extensions } });

describe("describeError", () => {
  it("names the taken seats", () => {
    expect(describeError(from("SEAT_UNAVAILABLE", { seatIds: ["E7", "E8"] }))).toBe(
      "Sorry, seats E7 and E8 were just taken by someone else. Please pick other seats.",
    );
    expect(describeError(from("SEAT_UNAVAILABLE", { seatIds: ["E7"] }))).toContain("seat E7 was just taken");
  });

  it("explains the no-single-seat rule with the stranded seat", () => {
    const text = describeError(from("SEAT_RULE_VIOLATION", { seatIds: ["E7"] }));
    expect(text).toContain("seat E7 empty on its own");
    expect(text).toContain("single seat can't be sold");
  });

  it("tells how long to wait when rate limited or busy", () => {
    expect(describeError(from("RATE_LIMITED", { retryAfterSeconds: 30 }))).toBe("You're going a little fast. Please wait 30 seconds and try again.");
    expect(describeError(from("SERVICE_BUSY", { retryAfterSeconds: 1, retryable: true }))).toBe("Marquee is very busy right now. Please try again in a moment.");
  });

  it("tells a declined card from a processor error", () => {
    expect(describeError(from("PAYMENT_DECLINED"))).toContain("declined and nothing was charged");
    expect(describeError(from("PAYMENT_DECLINED", { retryable: true }))).toContain("still held");
  });

  it("never shows raw server text for internal errors, or anything that is not an ApiError", () => {
    expect(describeError(from("INTERNAL", {}, "panic at upstream.rs:12"))).not.toContain("upstream.rs");
    expect(describeError(new TypeError("x is undefined"))).toBe("Something went wrong on our side. Please try again.");
    expect(describeError({ errors: [{ message: "{json}" }] })).not.toContain("json");
    expect(describeError(from("SOMETHING_NEW"))).not.toContain("raw server text");
  });

  it("passes input errors through: the services word them for people", () => {
    expect(describeError(from("BAD_USER_INPUT", {}, "password must be 10 to 128 characters"))).toBe("password must be 10 to 128 characters");
  });

  it("reads an error without extensions as INTERNAL", () => {
    expect(ApiError.fromGraphQL({ message: "boom" }).code).toBe("INTERNAL");
  });

  it("lists seats as a person would", () => {
    expect(listSeats([])).toBe("");
    expect(listSeats(["A1"])).toBe("A1");
    expect(listSeats(["A1", "A2", "A3"])).toBe("A1, A2 and A3");
  });
});
