// The web app end to end, in Debian's Chromium, against a real gateway and mesh
// (MARQUEE_WEB_URL; tests/tests/browser.rs starts one). Two customers on one showtime:
// A holds two seats and B sees them go unavailable live; B is told why a taken seat
// cannot be picked, why a hold on a stale map is refused (SEAT_UNAVAILABLE) and why a
// hold that strands a seat is refused (SEAT_RULE_VIOLATION); A pays and sees the
// confirmation; A's declined card frees seats live for B; B picks the best two seats,
// books with the keyboard alone, and pays with a slow card; A is shown the refund before
// cancelling. axe-core checks every page.
// MARQUEE_SCREENSHOTS=dir also saves each page at phone and desktop sizes.
// Exits non-zero on the first failure.
import { mkdirSync } from "node:fs";
import { BASE, assert, axe, eventually, farShowtime, gql, launch, log, registerApi, seat, seatLabel } from "./lib.mjs";

const SHOTS = process.env.MARQUEE_SCREENSHOTS;
const PHONE = { width: 390, height: 844 };
const DESKTOP = { width: 1280, height: 800 };

async function shoot(page, name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  const size = page.viewportSize();
  for (const [label, viewport] of [["desktop", DESKTOP], ["phone", PHONE]]) {
    await page.setViewportSize(viewport);
    await page.waitForTimeout(150);
    // The phone shot is the whole page: what a phone scrolls to is part of the page.
    await page.screenshot({ path: `${SHOTS}/${name}-${label}.png`, fullPage: label === "phone" });
  }
  await page.setViewportSize(size);
}

async function open(context, hash) {
  const page = await context.newPage();
  page.setDefaultTimeout(10000);
  page.on("pageerror", (error) => log(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") log(`console error: ${message.text()}`);
  });
  await page.goto(`${BASE}/${hash}`);
  return page;
}

async function seatMapReady(page) {
  await page.locator(".seat-grid button[data-seat]").first().waitFor({ timeout: 15000 });
  await eventually("live seat updates", async () => (await page.locator(".live-status").textContent())?.startsWith("Live"), 10000);
}

async function main() {
  const browser = await launch();
  const started = Date.now();
  try {
    const showtime = await farShowtime();
    log(`showtime ${showtime} at ${BASE}`);

    // --- A signs up through the page; B signs in with an account made over the API.
    const contextA = await browser.newContext({ viewport: DESKTOP });
    // Tomorrow: today's last showtimes may have started already, late in the day.
    const tomorrow = new Date(Date.now() + 86400_000).toISOString().slice(0, 10);
    const a = await open(contextA, `?date=${tomorrow}#/`);
    await a.locator(".showtime-card").first().waitFor();
    await axe(a, "browse");
    await shoot(a, "browse");
    await a.getByRole("link", { name: "Sign in", exact: true }).click();
    await a.getByRole("heading", { name: "Create an account", exact: true }).waitFor();
    await axe(a, "account (signed out)");
    await shoot(a, "account");
    const emailA = `ada.${Date.now()}@example.com`;
    await a.locator("#register-name").fill("Ada");
    await a.locator("#register-email").fill(emailA);
    await a.locator("#register-password").fill("correct horse battery");
    await a.getByRole("button", { name: "Create account" }).click();
    await a.getByRole("heading", { name: "My bookings", exact: true }).waitFor();
    assert((await a.getByRole("link", { name: /Account \(Ada\)/ }).count()) === 1, "A is signed in as Ada");
    log("A signed up in the page");
    // A reload loses the in-memory access token; the refresh token (this tab's
    // sessionStorage) buys a new one.
    await a.reload();
    await a.getByRole("link", { name: /Account \(Ada\)/ }).waitFor();
    log("A is still signed in after a reload (refresh token spent for a new access token)");

    const userB = await registerApi("Bea");
    const contextB = await browser.newContext({ viewport: DESKTOP });
    const b = await open(contextB, "#/account");
    // B's live updates pass through here, so the suite can hold them back for a moment
    // and have B act on a stale map, as on a slow connection.
    let holdBackLive = false;
    await b.routeWebSocket(/\/graphql$/, (ws) => {
      const server = ws.connectToServer();
      ws.onMessage((message) => server.send(message));
      server.onMessage((message) => {
        if (!(holdBackLive && String(message).includes('"type":"next"'))) ws.send(message);
      });
    });
    await b.locator("#login-email").fill(userB.email);
    await b.locator("#login-password").fill(userB.password);
    await b.getByRole("button", { name: "Sign in", exact: true }).click();
    await b.getByRole("heading", { name: "My bookings", exact: true }).waitFor();
    log("B signed in in the page");

    // --- Both open the showtime's live seat map.
    await a.goto(`${BASE}/#/showtime/${showtime}`);
    await b.goto(`${BASE}/#/showtime/${showtime}`);
    await seatMapReady(a);
    await seatMapReady(b);
    const e5 = await seatLabel(b, "E5");
    assert(/^Row E, seat 5, \w+, €\d+\.\d\d, available$/.test(e5), `a seat names row, number, category, price and state: ${e5}`);
    await axe(a, "seat map");
    await shoot(a, "seat-map");

    // --- A selects two seats and holds them; B sees them go unavailable within a second.
    await seat(a, "E5").click();
    await seat(a, "E6").click();
    const hold = a.getByRole("button", { name: "Hold 2 seats" });
    await hold.waitFor();
    const total = await a.locator(".selection .total").textContent();
    assert(/^Total €\d+\.\d\d$/.test(total ?? ""), `the total is shown: ${total}`);
    await hold.click();
    await a.locator(".countdown").waitFor();
    const heldAt = Date.now();
    const timer = await a.locator(".countdown").textContent();
    assert(/^Held for [78]:\d\d$/.test(timer ?? ""), `a countdown to expiresAt: ${timer}`);
    await eventually("B to see E5 and E6 held", async () => (await seatLabel(b, "E5")).endsWith("held by another customer") && (await seatLabel(b, "E6")).endsWith("held by another customer"), 1000, 20);
    log(`B saw A's hold live ${Date.now() - heldAt} ms after A's page showed it`);
    assert((await seatLabel(a, "E5")).endsWith("held by you"), "A's own seats say so");
    await axe(a, "hold and pay");
    await shoot(a, "hold-and-pay");

    // --- B tries a taken seat anyway: told why, the seat marked.
    // aria-disabled keeps it focusable and clickable for people; Playwright needs force.
    await seat(b, "E5").click({ force: true });
    const why = await b.getByRole("alert").textContent();
    assert(/E5 .*taken|held by another customer/.test(why ?? ""), `B is told why: ${why}`);
    assert((await seat(b, "E5").getAttribute("class")).includes("seat-flagged"), "the offending seat is highlighted");
    log(`B's refusal: ${why}`);

    // --- B, on a stale map, holds a seat someone took meanwhile: the server's refusal,
    // in words, the seat marked, the map reloaded.
    holdBackLive = true;
    await seat(b, "F5").click();
    await seat(b, "F6").click();
    const cy = await registerApi("Cy");
    await gql("mutation($i: HoldSeatsInput!) { holdSeats(input: $i) { id } }", { i: { showtimeId: showtime, seatIds: ["F5"], idempotencyKey: crypto.randomUUID() } }, cy.token);
    await b.waitForTimeout(300);
    assert((await seatLabel(b, "F5")).endsWith("available, selected"), "B's map is stale");
    await b.getByRole("button", { name: "Hold 2 seats" }).click();
    await eventually("the SEAT_UNAVAILABLE refusal", async () => /F5/.test((await b.getByRole("alert").textContent()) ?? ""), 5000);
    const taken = await b.getByRole("alert").textContent();
    assert(taken === "Sorry, seat F5 was just taken by someone else. Please pick other seats.", `explained: ${taken}`);
    assert((await seat(b, "F5").getAttribute("class")).includes("seat-flagged"), "the taken seat is highlighted");
    await eventually("the reloaded map", async () => (await seatLabel(b, "F5")).endsWith("held by another customer"), 3000);
    holdBackLive = false;
    assert((await seatLabel(b, "F6")).endsWith("available, selected"), "the seat still free stays selected");
    await seat(b, "F6").click();
    await b.getByRole("button", { name: "Select seats to hold" }).waitFor();
    log(`B's stale hold refused: ${taken}`);

    // --- A pays with pm_card_ok and sees CONFIRMED; B sees the seats booked.
    const pay = a.getByRole("button", { name: /^Pay €\d+\.\d\d$/ });
    assert((await pay.textContent()) === `Pay ${total.replace("Total ", "")}`, "the pay button names the total");
    await a.getByLabel(/pm_card_ok/).check();
    await pay.click();
    await a.getByRole("heading", { name: "Booking confirmed", exact: true }).waitFor({ timeout: 15000 });
    assert((await a.locator(".status").textContent()) === "Confirmed", "the confirmation says Confirmed");
    // One e-ticket per seat, each a QR code image, once the ticket service has issued them.
    for (const seatId of ["E5", "E6"]) {
      await a.getByRole("img", { name: `QR code of the ticket for seat ${seatId}` }).waitFor({ timeout: 15000 });
    }
    const qrs = await a.locator(".ticket img").evaluateAll((imgs) => imgs.map((img) => [img.getAttribute("src") ?? "", img.naturalWidth]));
    assert(qrs.length === 2, `two tickets shown: ${qrs.length}`);
    for (const [src, width] of qrs) {
      assert(src.startsWith("data:image/svg+xml") && decodeURIComponent(src).includes("<svg"), "a ticket's QR is an SVG image");
      assert(width > 0, "the QR image rendered");
    }
    assert((await a.locator(".ticket-status").allTextContents()).every((t) => t === "Valid: show this code at the door"), "fresh tickets are valid");
    log("A's confirmation shows a QR ticket for each seat");
    await axe(a, "confirmation");
    await shoot(a, "confirmation");
    await eventually("B to see E5 booked", async () => (await seatLabel(b, "E5")).endsWith("booked"), 2000);
    log("A paid with pm_card_ok: CONFIRMED; B sees the seats booked");

    // --- A's declined card frees its seats live for B.
    await a.goto(`${BASE}/#/showtime/${showtime}`);
    await seatMapReady(a);
    await seat(a, "C5").click();
    await seat(a, "C6").click();
    await a.getByRole("button", { name: "Hold 2 seats" }).click();
    await a.locator(".countdown").waitFor();
    await eventually("B to see C5 held", async () => (await seatLabel(b, "C5")).endsWith("held by another customer"), 1000, 20);
    await a.getByLabel(/pm_card_declined/).check();
    await a.getByRole("button", { name: /^Pay / }).click();
    const declined = await a.getByRole("alert").textContent({ timeout: 10000 });
    assert(/declined/.test(declined ?? ""), `A is told the card was declined: ${declined}`);
    await eventually("B to see C5 and C6 free again", async () => (await seatLabel(b, "C5")).endsWith("available") && (await seatLabel(b, "C6")).endsWith("available"), 2000, 20);
    log("a declined card freed C5 and C6 live for B");

    // --- B's hold that would strand E7 is refused with E7 highlighted (no-orphan rule).
    await b.locator(".notice").first().waitFor();
    await seat(b, "E8").click();
    await b.getByRole("button", { name: "Hold 1 seat" }).click();
    await eventually("the rule refusal", async () => /E7/.test((await b.getByRole("alert").textContent()) ?? ""), 5000);
    const rule = await b.getByRole("alert").textContent();
    assert(/single|own/.test(rule ?? ""), `the orphan rule in words: ${rule}`);
    assert((await seat(b, "E7").getAttribute("class")).includes("seat-flagged"), "the stranded seat is highlighted");
    log(`B's hold refused: ${rule}`);

    // --- "Find 2 best seats" selects two adjacent free seats (suggestSeats).
    await b.getByRole("button", { name: "Find 2 best seats" }).click();
    await b.getByRole("button", { name: "Hold 2 seats" }).waitFor();
    const best = await b.locator('button[data-seat][aria-pressed="true"]').evaluateAll((els) => els.map((e) => e.dataset.seat));
    assert(best.length === 2, `two seats suggested: ${best}`);
    const [r1, r2] = best.map((id) => /^([A-Z]+)(\d+)$/.exec(id));
    assert(r1[1] === r2[1] && Math.abs(Number(r1[2]) - Number(r2[2])) === 1, `side by side: ${best}`);
    log(`best available 2: ${best.join(", ")}`);

    // --- B books with the keyboard alone: Tab into the map, arrows, Space, Enter.
    await b.goto(`${BASE}/#/showtime/${showtime}`);
    await b.reload();
    await seatMapReady(b);
    let onSeat = false;
    for (let i = 0; i < 30 && !onSeat; i++) {
      await b.keyboard.press("Tab");
      onSeat = await b.evaluate(() => document.activeElement?.hasAttribute("data-seat") ?? false);
    }
    assert(onSeat, "Tab reaches the seat map");
    const firstSeat = await b.evaluate(() => document.activeElement.dataset.seat);
    assert(firstSeat === "A1", `the map's one tab stop starts at A1, not ${firstSeat}`);
    for (let i = 0; i < 6; i++) await b.keyboard.press("ArrowDown");
    for (let i = 0; i < 4; i++) await b.keyboard.press("ArrowRight");
    assert((await b.evaluate(() => document.activeElement.dataset.seat)) === "G5", "arrows move to G5");
    await b.keyboard.press("Space");
    await b.keyboard.press("ArrowRight");
    await b.keyboard.press("Enter");
    assert((await seatLabel(b, "G6")).endsWith("selected"), "Enter selects too");
    let onHold = false;
    for (let i = 0; i < 10 && !onHold; i++) {
      await b.keyboard.press("Tab");
      onHold = await b.evaluate(() => document.activeElement?.textContent === "Hold 2 seats");
    }
    assert(onHold, "Tab reaches the Hold 2 seats button");
    await b.keyboard.press("Enter");
    await b.locator(".countdown").waitFor();
    let onPay = false;
    for (let i = 0; i < 10 && !onPay; i++) {
      await b.keyboard.press("Tab");
      onPay = await b.evaluate(() => document.activeElement?.textContent?.startsWith("Pay ") ?? false);
    }
    assert(onPay, "Tab reaches the Pay button (pm_card_ok is preselected)");
    await b.keyboard.press("Enter");
    await b.getByRole("heading", { name: "Booking confirmed", exact: true }).waitFor({ timeout: 15000 });
    log("B booked G5 and G6 with the keyboard alone");

    // --- A slow card: "Payment processing…" until the booking settles.
    await b.goto(`${BASE}/#/showtime/${showtime}`);
    await seatMapReady(b);
    await seat(b, "B5").click();
    await seat(b, "B6").click();
    await b.getByRole("button", { name: "Hold 2 seats" }).click();
    await b.getByLabel(/pm_card_slow/).check();
    await b.getByRole("button", { name: /^Pay / }).click();
    await b.getByRole("heading", { name: "Payment processing…" }).waitFor({ timeout: 2000 });
    await b.getByRole("heading", { name: "Booking confirmed", exact: true }).waitFor({ timeout: 15000 });
    log("a slow card showed payment processing…, then the confirmation");

    // --- A cancels the confirmed booking and is shown the refund.
    await a.goto(`${BASE}/#/bookings`);
    const item = a.locator(".booking-item").filter({ hasText: "Confirmed" }).first();
    await item.waitFor();
    await axe(a, "my bookings");
    await shoot(a, "bookings");
    await item.getByRole("button", { name: "Cancel booking" }).click();
    const dialog = a.getByRole("dialog");
    await dialog.waitFor();
    const quote = await dialog.locator(".refund-quote").textContent();
    assert(quote === `You will get ${total.replace("Total ", "")} back (cancellation fee €0.00).`, `the refund is shown before confirming: ${quote}`);
    await axe(a, "cancel dialog");
    await shoot(a, "cancel-dialog");
    log(`before confirming: ${quote}`);
    await dialog.getByRole("button", { name: "Yes, cancel booking" }).click();
    const refunded = await a.locator(".notice-success").textContent({ timeout: 15000 });
    assert(/€\d+\.\d\d is on its way back to you \(fee €0\.00\)/.test(refunded ?? ""), `the refund is shown: ${refunded}`);
    assert(refunded.includes(total.replace("Total ", "")), "a full refund, more than a day before the show");
    log(`cancelled: ${refunded}`);

    // --- A's notifications arrive (the worker consumes the booking events).
    await eventually(
      "a confirmation notification",
      async () => {
        await a.goto(`${BASE}/#/notifications`);
        await a.reload();
        await a.locator("main h1").waitFor();
        await a.waitForTimeout(300);
        return (await a.locator(".notifications li").count()) > 0;
      },
      20000,
      500,
    );
    await axe(a, "notifications");
    await shoot(a, "notifications");
    log("notifications listed");

    // --- Sign out ends the session in this tab.
    await a.goto(`${BASE}/#/account`);
    await a.getByRole("button", { name: "Sign out" }).click();
    await a.getByRole("link", { name: "Sign in", exact: true }).waitFor();
    log("A signed out");
    log(`all passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  process.stderr.write(`[web e2e] FAILED: ${error.stack ?? error}\n`);
  process.exit(1);
});
