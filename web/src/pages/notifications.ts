/** My notifications (emails and texts the platform sent), a page at a time. */
import { request, session } from "../api/client";
import { MyNotificationsDocument } from "../api/generated";
import { describeError } from "../lib/errors";
import { h, notice, replace } from "../ui/dom";

export function notificationsPage(main: HTMLElement): void {
  if (!session.signedIn) {
    replace(main, h("h1", null, "Notifications"), h("p", null, h("a", { href: "#/account" }, "Sign in"), " to see your notifications."));
    return;
  }
  const list = h("ol", { class: "notifications" });
  const more = h("button", { type: "button", class: "secondary" }, "Show more notifications");
  const status = h("div");
  let after: string | null = null;
  more.hidden = true;
  more.addEventListener("click", () => void loadPage());
  replace(main, h("h1", null, "Notifications"), status, list, more);

  async function loadPage(): Promise<void> {
    try {
      const { me } = await request(MyNotificationsDocument, { first: 20, after });
      if (!me) return replace(status, notice("info", "Please sign in again."));
      const page = me.notifications;
      if (!after && page.nodes.length === 0) replace(status, notice("info", "No notifications yet. They arrive a moment after you book or cancel."));
      for (const n of page.nodes) {
        list.appendChild(
          h("li", { class: "card" }, h("h2", null, n.subject || "Text message"), h("p", { class: "meta" }, `${n.channel === "sms" ? "Text" : "Email"} · `, h("time", { datetime: n.sentAt }, new Date(n.sentAt).toLocaleString("en-GB"))), h("p", { class: "body" }, n.body)),
        );
      }
      after = page.pageInfo.endCursor ?? null;
      more.hidden = !page.pageInfo.hasNextPage;
    } catch (error) {
      replace(status, notice("error", describeError(error)));
    }
  }
  void loadPage();
}
