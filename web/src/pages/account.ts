/** Sign up, sign in, sign out. */
import { request, session } from "../api/client";
import { LoginDocument, LogoutDocument, RegisterDocument } from "../api/generated";
import { describeError } from "../lib/errors";
import { h, notice, replace } from "../ui/dom";

function field(id: string, label: string, type: string, autocomplete: string, extra: Record<string, unknown> = {}): HTMLElement {
  return h("div", { class: "field" }, h("label", { for: id }, label), h("input", { id, name: id, type, autocomplete, required: true, ...extra }));
}

function value(form: HTMLFormElement, name: string): string {
  return (form.elements.namedItem(name) as HTMLInputElement).value;
}

/** Back where the visitor was when sign-in was asked for (a seat map), else My bookings. */
function afterSignIn(): void {
  const back = sessionStorage.getItem("marquee.return");
  sessionStorage.removeItem("marquee.return");
  location.hash = back && back.startsWith("#/") ? back : "#/bookings";
}

export function accountPage(main: HTMLElement): () => void {
  const draw = () => (session.user || session.signedIn ? signedIn(main) : signedOut(main));
  draw();
  return session.onChange(draw);
}

function signedIn(main: HTMLElement): void {
  const status = h("div");
  const out = h("button", { type: "button", class: "secondary" }, "Sign out");
  out.addEventListener("click", async () => {
    const refreshToken = session.refreshToken();
    try {
      if (refreshToken) await request(LogoutDocument, { refreshToken });
    } catch {
      // Signed out here either way; the tokens lapse on their own.
    }
    session.end();
  });
  const user = session.user;
  replace(
    main,
    h("h1", null, "Your account"),
    user ? h("p", null, `Signed in as ${user.name} (${user.email}).`) : h("p", null, "You are signed in."),
    h("ul", null, h("li", null, h("a", { href: "#/bookings" }, "My bookings")), h("li", null, h("a", { href: "#/notifications" }, "My notifications"))),
    out,
    status,
  );
}

function signedOut(main: HTMLElement): void {
  const loginStatus = h("div");
  const login = h(
    "form",
    { class: "card", "aria-labelledby": "login-title" },
    h("h2", { id: "login-title" }, "Sign in"),
    field("login-email", "Email", "email", "username"),
    field("login-password", "Password", "password", "current-password"),
    loginStatus,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  login.addEventListener("submit", async (event) => {
    event.preventDefault();
    replace(loginStatus, notice("info", "Signing in…"));
    try {
      const { login: tokens } = await request(LoginDocument, { input: { email: value(login, "login-email"), password: value(login, "login-password") } });
      session.start(tokens);
      afterSignIn();
    } catch (error) {
      replace(loginStatus, notice("error", describeError(error)));
    }
  });

  const registerStatus = h("div");
  const register = h(
    "form",
    { class: "card", "aria-labelledby": "register-title" },
    h("h2", { id: "register-title" }, "Create an account"),
    field("register-name", "Name", "text", "name"),
    field("register-email", "Email", "email", "email"),
    field("register-password", "Password (at least 10 characters)", "password", "new-password", { minlength: 10 }),
    registerStatus,
    h("button", { type: "submit", class: "primary" }, "Create account"),
  );
  register.addEventListener("submit", async (event) => {
    event.preventDefault();
    replace(registerStatus, notice("info", "Creating your account…"));
    try {
      const { register: tokens } = await request(RegisterDocument, {
        input: { name: value(register, "register-name"), email: value(register, "register-email"), password: value(register, "register-password") },
      });
      session.start(tokens);
      afterSignIn();
    } catch (error) {
      replace(registerStatus, notice("error", describeError(error)));
    }
  });

  replace(main, h("h1", null, "Sign in or create an account"), h("div", { class: "two-columns" }, login, register));
}
