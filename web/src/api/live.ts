/**
 * Live seat changes over graphql-ws (`graphql-transport-ws`) on the same origin. One
 * client per page; it reconnects by itself, and every reconnect counts as a resync
 * (changes may have been missed while it was away).
 */
import { createClient, type Client } from "graphql-ws";
import { SeatMapLiveDocument, type SeatMapLiveSubscription } from "./generated";
import { session } from "./client";
import type { SeatChange } from "../lib/seatmap";

export interface LiveHandlers {
  changes(changes: SeatChange[]): void;
  resync(): void;
  status(connected: boolean): void;
}

/** Pause before re-opening a subscription the server ended. */
const RESUBSCRIBE_MS = 1000;

function url(): string {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/graphql`;
}

/** Watches one showtime until the returned function is called. */
export function watchSeats(showtimeId: string, handlers: LiveHandlers): () => void {
  let connectedOnce = false;
  const client: Client = createClient({
    url: url(),
    lazy: false,
    retryAttempts: Infinity,
    shouldRetry: () => true,
    connectionParams: async () => {
      const token = await session.accessToken();
      return token ? { Authorization: `Bearer ${token}` } : {};
    },
    on: {
      connected: () => {
        handlers.status(true);
        if (connectedOnce) handlers.resync();
        connectedOnce = true;
      },
      closed: () => handlers.status(false),
    },
  });
  let stopped = false;
  let unsubscribe = () => {};
  // A subscription the server ends (its upstream feed closed for good) is opened again
  // after a pause, with a resync: changes may have been missed in between.
  const subscribe = () => {
    unsubscribe = client.subscribe<SeatMapLiveSubscription>(
      { query: SeatMapLiveDocument.toString(), variables: { showtimeId } },
      {
        next: ({ data }) => {
          const update = data?.seatMap;
          if (!update) return;
          if (update.resync) handlers.resync();
          else handlers.changes(update.changes);
        },
        error: () => again(),
        complete: () => again(),
      },
    );
  };
  const again = () => {
    if (stopped) return;
    setTimeout(() => {
      if (stopped) return;
      handlers.resync();
      subscribe();
    }, RESUBSCRIBE_MS);
  };
  subscribe();
  return () => {
    stopped = true;
    unsubscribe();
    void client.dispose();
  };
}
