/**
 * What went wrong, in words a moviegoer can act on. Every failure the app shows goes
 * through `describeError`, so a raw JSON error never reaches the page.
 */

/** One GraphQL error as the gateway sends it (`extensions.code` and friends). */
export interface GraphQLErrorShape {
  message: string;
  extensions?: {
    code?: string;
    seatIds?: string[];
    retryAfterSeconds?: number;
    retryable?: boolean;
  };
}

export class ApiError extends Error {
  readonly code: string;
  readonly seatIds: string[];
  readonly retryAfterSeconds: number | null;
  readonly retryable: boolean;

  constructor(code: string, message: string, extra: Partial<Pick<ApiError, "seatIds" | "retryAfterSeconds" | "retryable">> = {}) {
    super(message);
    this.name = "ApiError";
    this.code = code;
    this.seatIds = extra.seatIds ?? [];
    this.retryAfterSeconds = extra.retryAfterSeconds ?? null;
    this.retryable = extra.retryable ?? false;
  }

  static fromGraphQL(error: GraphQLErrorShape): ApiError {
    const ext = error.extensions ?? {};
    return new ApiError(ext.code ?? "INTERNAL", error.message, {
      seatIds: Array.isArray(ext.seatIds) ? ext.seatIds.map(String) : [],
      retryAfterSeconds: typeof ext.retryAfterSeconds === "number" ? ext.retryAfterSeconds : null,
      retryable: ext.retryable === true,
    });
  }
}

/** The fetch itself failed: offline, DNS, the gateway down. */
export const NETWORK = "NETWORK";

/** "E7", "E7 and E8", "E7, E8 and E9". */
export function listSeats(ids: readonly string[]): string {
  if (ids.length <= 1) return ids.join("");
  return `${ids.slice(0, -1).join(", ")} and ${ids[ids.length - 1]}`;
}

function wait(seconds: number | null): string {
  if (!seconds || seconds <= 1) return "a moment";
  return `${seconds} seconds`;
}

export function describeError(error: unknown): string {
  if (!(error instanceof ApiError)) {
    return "Something went wrong on our side. Please try again.";
  }
  const seats = listSeats(error.seatIds);
  const plural = error.seatIds.length > 1;
  switch (error.code) {
    case "SEAT_UNAVAILABLE":
      return seats
        ? `Sorry, seat${plural ? "s" : ""} ${seats} ${plural ? "were" : "was"} just taken by someone else. Please pick other seats.`
        : "Sorry, some of these seats were just taken by someone else. Please pick other seats.";
    case "SEAT_RULE_VIOLATION":
      return seats
        ? `This choice would leave seat${plural ? "s" : ""} ${seats} empty on ${plural ? "their" : "its"} own, and a single seat can't be sold. Include ${plural ? "them" : "it"} or move your selection next to it.`
        : "This choice would leave a single empty seat that can't be sold. Please pick seats next to each other.";
    case "HOLD_EXPIRED":
      return "Your hold on these seats ran out before payment. Please pick your seats again.";
    case "PAYMENT_DECLINED":
      return error.retryable
        ? "The payment service had a problem and nothing was charged. Your seats are still held: please try again."
        : "Your payment was declined and nothing was charged. The seats were released; pick them again to try another card.";
    case "RATE_LIMITED":
      return `You're going a little fast. Please wait ${wait(error.retryAfterSeconds)} and try again.`;
    case "SERVICE_BUSY":
      return `Marquee is very busy right now. Please try again in ${wait(error.retryAfterSeconds)}.`;
    case "UNAUTHENTICATED":
      return "Please sign in to continue.";
    case "FORBIDDEN":
      return "Your account is not allowed to do that.";
    case "NOT_FOUND":
      return "We couldn't find that. It may have been cancelled or removed.";
    case "CONFLICT":
      return "This booking changed in the meantime (perhaps in another tab). Reload to see where it stands.";
    case "BAD_USER_INPUT":
      // The services word these for people ("password must be at least 10 characters").
      return error.message;
    case NETWORK:
      return "We can't reach Marquee. Check your connection and try again.";
    default:
      return error.retryable
        ? "Something went wrong on our side. Please try again."
        : "Something went wrong on our side. Please try again later.";
  }
}
