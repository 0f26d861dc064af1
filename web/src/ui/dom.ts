/**
 * The app's whole UI toolkit: `h` builds elements, pages are functions that return
 * them. The seat map, the one part that must be fast, is imperative anyway
 * (`seatgrid.ts`); see ARCHITECTURE.md for why no framework.
 */
type Child = Node | string | number | null | undefined | false;
type Props = Record<string, unknown> & { class?: string; on?: Record<string, (event: Event) => void> };

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, props: Props | null = null, ...children: (Child | Child[])[]): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "on") {
        for (const [event, handler] of Object.entries(value as Record<string, EventListener>)) element.addEventListener(event, handler);
      } else if (key === "class") {
        element.className = String(value);
      } else if (key in element && !key.startsWith("aria-") && !key.startsWith("data-") && key !== "role" && key !== "for") {
        (element as unknown as Record<string, unknown>)[key] = value;
      } else {
        element.setAttribute(key, value === true ? "" : String(value));
      }
    }
  }
  append(element, children);
  return element;
}

function append(parent: Node, children: (Child | Child[])[]): void {
  for (const child of children) {
    if (Array.isArray(child)) append(parent, child);
    else if (child instanceof Node) parent.appendChild(child);
    else if (child !== null && child !== undefined && child !== false) parent.appendChild(document.createTextNode(String(child)));
  }
}

export function replace(parent: Element, ...children: (Child | Child[])[]): void {
  parent.replaceChildren();
  append(parent, children);
}

/** A polite live region's message (status, errors are `role="alert"`). */
export function notice(kind: "error" | "info" | "success", text: string): HTMLElement {
  return h("p", { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}
