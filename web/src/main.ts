/**
 * The app shell: header navigation and a hash router (`#/showtime/…`), so every deep
 * link is served by the one `index.html` and the gateway needs no route per page.
 */
import "./style.css";
import { session } from "./api/client";
import { h, replace } from "./ui/dom";
import { browsePage } from "./pages/browse";
import { showtimePage } from "./pages/showtime";
import { bookingPage } from "./pages/booking";
import { accountPage } from "./pages/account";
import { bookingsPage } from "./pages/bookings";
import { notificationsPage } from "./pages/notifications";

/** A page draws into `main` and returns how to stop (subscriptions, timers). */
export type Page = (main: HTMLElement, param: string) => void | (() => void);

const routes: [RegExp, Page][] = [
  [/^#?\/?$/, browsePage],
  [/^#\/showtime\/([^/]+)$/, showtimePage],
  [/^#\/booking\/([^/]+)$/, bookingPage],
  [/^#\/account$/, accountPage],
  [/^#\/bookings$/, bookingsPage],
  [/^#\/notifications$/, notificationsPage],
];

const main = h("main", { id: "main", tabindex: "-1" });
const accountLink = h("a", { href: "#/account" });
const nav = h(
  "nav",
  { "aria-label": "Main" },
  h("a", { href: "#/" }, "Showtimes"),
  h("a", { href: "#/bookings" }, "My bookings"),
  h("a", { href: "#/notifications" }, "Notifications"),
  accountLink,
);
const header = h("header", { class: "site-header" }, h("a", { class: "brand", href: "#/" }, "Marquee"), nav);
document.body.replaceChildren(h("a", { class: "skip", href: "#main", on: { click: skip } }, "Skip to content"), header, main);

function skip(event: Event): void {
  event.preventDefault();
  main.focus();
}

function drawAccountLink(): void {
  accountLink.textContent = session.user ? `Account (${session.user.name})` : session.signedIn ? "Account" : "Sign in";
}
session.onChange(drawAccountLink);

let stop: (() => void) | void;
let first = true;
function route(): void {
  if (stop) stop();
  stop = undefined;
  const hash = location.hash || "#/";
  for (const link of nav.querySelectorAll("a")) {
    if (link.getAttribute("href") === hash) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  for (const [pattern, page] of routes) {
    const match = pattern.exec(hash);
    if (match) {
      replace(main);
      stop = page(main, decodeURIComponent(match[1] ?? ""));
      if (!first) main.focus();
      first = false;
      return;
    }
  }
  replace(main, h("h1", null, "Page not found"), h("p", null, h("a", { href: "#/" }, "See today's showtimes")));
}

window.addEventListener("hashchange", route);
drawAccountLink();
// A reload keeps the session: the refresh token (sessionStorage) buys a new access token.
void session.accessToken().finally(drawAccountLink);
route();
