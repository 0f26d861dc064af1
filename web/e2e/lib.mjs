// Shared by the browser suite (run.mjs) and the budget benchmark (bench.mjs): Debian's
// Chromium through playwright-core, a GraphQL helper, axe-core, small assertions.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);

export const BASE = process.env.MARQUEE_WEB_URL ?? "http://127.0.0.1:8080";
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

/**
 * Chromium with the flags this machine needs (no network beyond loopback). Playwright
 * gives every launch a fresh temporary --user-data-dir of its own.
 */
export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

export async function gql(query, variables = {}, token = null) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(`${BASE}/graphql`, { method: "POST", headers, body: JSON.stringify({ query, variables }) });
  const body = await response.json();
  if (body.errors) throw new Error(`${query.slice(0, 60)}…: ${JSON.stringify(body.errors)}`);
  return body.data;
}

export async function registerApi(name) {
  const email = `${name.toLowerCase()}.${Date.now()}.${Math.floor(Math.random() * 1e6)}@example.com`;
  const password = "correct horse battery";
  const data = await gql("mutation($i: RegisterInput!) { register(input: $i) { token } }", { i: { email, password, name } });
  return { email, password, name, token: data.register.token };
}

/** A showtime more than a day away: full refund on cancel, no hold cutoff. */
export async function farShowtime() {
  const { showtimes } = await gql("{ showtimes { id startsAt cinema { name } } }");
  const far = showtimes.filter((s) => Date.parse(s.startsAt) - Date.now() > 26 * 3600_000 && s.cinema.name !== "Bench Palace");
  if (far.length === 0) throw new Error("no showtime more than a day away in the demo data");
  return far[0].id;
}

const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

/** axe-core on the page as it is now; throws on any serious or critical violation. */
export async function axe(page, what) {
  // Through the DevTools protocol: the page's CSP rightly refuses an injected <script>.
  await page.evaluate(axeSource);
  const result = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ["violations"] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(" ")) }));
  });
  const bad = result.filter((v) => v.impact === "serious" || v.impact === "critical");
  const minor = result.filter((v) => !bad.includes(v));
  log(`axe ${what}: ${bad.length} serious/critical, ${minor.length} minor/moderate${minor.length ? ` (${minor.map((v) => v.id).join(", ")})` : ""}`);
  if (bad.length > 0) throw new Error(`axe on ${what}: ${JSON.stringify(bad, null, 2)}`);
}

export function log(message) {
  process.stdout.write(`[web] ${message}\n`);
}

export function assert(condition, message) {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}

/** Polls `probe` until it returns a truthy value; throws after `timeout` ms. */
export async function eventually(what, probe, timeout = 5000, every = 50) {
  const started = Date.now();
  let last;
  while (Date.now() - started < timeout) {
    try {
      last = await probe();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    await new Promise((resolve) => setTimeout(resolve, every));
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${last})`);
}

/** The seat button for `id` ("E7"). */
export function seat(page, id) {
  return page.locator(`button[data-seat="${id}"]`);
}

export async function seatLabel(page, id) {
  return (await seat(page, id).getAttribute("aria-label")) ?? "";
}
