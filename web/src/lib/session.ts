/**
 * Who is signed in. The access token lives in memory only (this object), so it
 * vanishes with the page. The refresh token is kept in sessionStorage: it survives a
 * reload of this tab but not the tab itself, and is never readable by another
 * origin. The CSP the gateway sends allows only this origin's scripts, which is the
 * real guard against a script reading it (see ARCHITECTURE.md for why not a cookie).
 * Refresh tokens are one-use and rotate; reusing a spent one revokes the family.
 */

export interface SessionUser {
  id: string;
  name: string;
  email: string;
}

export interface Tokens {
  token: string;
  refreshToken: string;
  user: SessionUser;
}

/** Where the refresh token is kept (sessionStorage in the app, a Map in tests). */
export interface RefreshTokenStore {
  load(): string | null;
  save(token: string | null): void;
}

/** Spends a refresh token for new tokens; throws an ApiError when refused. */
export type Refresher = (refreshToken: string) => Promise<Tokens>;

/** Renew this long before the access token's `exp`, so no request is sent with a stale one. */
export const RENEW_BEFORE_MS = 60_000;

/** `exp` (ms since the epoch) of a JWT, read without verifying it: only to plan renewal. */
export function tokenExpiry(jwt: string): number | null {
  const payload = jwt.split(".")[1];
  if (!payload) return null;
  try {
    const json = JSON.parse(atob(payload.replace(/-/g, "+").replace(/_/g, "/")));
    return typeof json.exp === "number" ? json.exp * 1000 : null;
  } catch {
    return null;
  }
}

export class Session {
  private access: string | null = null;
  private expiresAt: number | null = null;
  private current: SessionUser | null = null;
  private inFlight: Promise<boolean> | null = null;
  private listeners = new Set<() => void>();

  constructor(
    private readonly store: RefreshTokenStore,
    private readonly refresher: Refresher,
    private readonly now: () => number = Date.now,
  ) {}

  get user(): SessionUser | null {
    return this.current;
  }

  get signedIn(): boolean {
    return this.access !== null || this.store.load() !== null;
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** After register, login or a refresh. */
  start(tokens: Tokens): void {
    this.access = tokens.token;
    this.expiresAt = tokenExpiry(tokens.token);
    this.current = tokens.user;
    this.store.save(tokens.refreshToken);
    this.emit();
  }

  /** Forgets everything locally (the server side is `logout`). */
  end(): void {
    this.access = null;
    this.expiresAt = null;
    this.current = null;
    this.store.save(null);
    this.emit();
  }

  refreshToken(): string | null {
    return this.store.load();
  }

  /**
   * A usable access token, renewed first when it is missing (after a reload) or about
   * to expire; null when signed out or the refresh token was refused.
   */
  async accessToken(): Promise<string | null> {
    const fresh = this.access !== null && (this.expiresAt === null || this.expiresAt - this.now() > RENEW_BEFORE_MS);
    if (fresh) return this.access;
    if (this.store.load() === null) return null;
    return (await this.refresh()) ? this.access : null;
  }

  /**
   * Spends the refresh token once, however many callers ask at the same time: a second
   * concurrent spend of a one-use token would look like theft and revoke the session.
   * A refusal (expired, revoked) signs out; a network failure keeps the token to retry.
   */
  refresh(): Promise<boolean> {
    if (this.inFlight) return this.inFlight;
    const token = this.store.load();
    if (token === null) return Promise.resolve(false);
    this.inFlight = this.refresher(token)
      .then((tokens) => {
        this.start(tokens);
        return true;
      })
      .catch((error: unknown) => {
        const code = (error as { code?: string }).code;
        if (code === "UNAUTHENTICATED" || code === "BAD_USER_INPUT" || code === "NOT_FOUND") this.end();
        else this.access = null;
        return false;
      })
      .finally(() => {
        this.inFlight = null;
      });
    return this.inFlight;
  }

  private emit(): void {
    for (const listener of this.listeners) listener();
  }
}

/** The browser's store: sessionStorage (per tab, cleared when the tab closes). */
export const sessionStorageStore: RefreshTokenStore = {
  load: () => {
    try {
      return sessionStorage.getItem("marquee.refresh");
    } catch {
      return null;
    }
  },
  save: (token) => {
    try {
      if (token === null) sessionStorage.removeItem("marquee.refresh");
      else sessionStorage.setItem("marquee.refresh", token);
    } catch {
      // Storage disabled: the session lasts as long as the page.
    }
  },
};
