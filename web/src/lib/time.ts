const formats = new Map<string, Intl.DateTimeFormat>();

/** "Fri 4 Dec, 18:00" in the cinema's own time zone, whatever the browser's. */
export function formatShowTime(iso: string, timeZone: string, locale = "en-GB"): string {
  const key = `${locale}/${timeZone}`;
  let format = formats.get(key);
  if (!format) {
    format = new Intl.DateTimeFormat(locale, {
      timeZone,
      weekday: "short",
      day: "numeric",
      month: "short",
      hour: "2-digit",
      minute: "2-digit",
      hourCycle: "h23",
    });
    formats.set(key, format);
  }
  return format.format(new Date(iso));
}

/** Today as YYYY-MM-DD in the browser's time zone (the default browse date). */
export function today(now = new Date()): string {
  const y = now.getFullYear();
  const m = String(now.getMonth() + 1).padStart(2, "0");
  const d = String(now.getDate()).padStart(2, "0");
  return `${y}-${m}-${d}`;
}
