/** A hold's remaining time, from `expiresAt` and the clock (passed in: testable). */
export function remainingMs(expiresAt: string, now: number): number {
  return Math.max(0, Date.parse(expiresAt) - now);
}

/** "7:59", "0:05", "0:00": minutes and seconds, rounded up so 0:00 means expired. */
export function formatRemaining(ms: number): string {
  const total = Math.ceil(ms / 1000);
  const minutes = Math.floor(total / 60);
  const seconds = total % 60;
  return `${minutes}:${String(seconds).padStart(2, "0")}`;
}

/** For screen readers, announced sparingly: "7 minutes left", "45 seconds left". */
export function spokenRemaining(ms: number): string {
  const total = Math.ceil(ms / 1000);
  if (total >= 60) {
    const minutes = Math.ceil(total / 60);
    return `${minutes} minute${minutes === 1 ? "" : "s"} left`;
  }
  return `${total} second${total === 1 ? "" : "s"} left`;
}
