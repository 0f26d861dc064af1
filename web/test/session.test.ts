import { describe, expect, it, vi } from "vitest";
import { ApiError } from "../src/lib/errors";
import { RENEW_BEFORE_MS, Session, tokenExpiry, type RefreshTokenStore, type Tokens } from "../src/lib/session";

const user = { id: "u1", name: "Ada", email: "ada@example.com" };

function jwt(expSeconds: number): string {
  const part = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${part({ alg: "HS256" })}.${part({ sub: "u1", exp: expSeconds })}.sig`;
}

function memoryStore(initial: string | null = null): RefreshTokenStore & { value: string | null } {
  return {
    value: initial,
    load() {
      return this.value;
    },
    save(token) {
      this.value = token;
    },
  };
}

describe("Session", () => {
  it("reads the expiry of an access token", () => {
    expect(tokenExpiry(jwt(1_800_000_000))).toBe(1_800_000_000_000);
    expect(tokenExpiry("not a jwt")).toBeNull();
  });

  it("keeps the access token in memory and the refresh token in the store", async () => {
    const store = memoryStore();
    const session = new Session(store, vi.fn(), () => 1_000_000);
    session.start({ token: jwt(2_000), refreshToken: "r1", user });
    expect(store.value).toBe("r1");
    expect(await session.accessToken()).toBe(jwt(2_000));
    expect(session.user).toEqual(user);
  });

  it("renews a token about to expire, once for many concurrent callers", async () => {
    let now = 1_000_000;
    const store = memoryStore();
    const refresher = vi.fn(async (token: string): Promise<Tokens> => {
      expect(token).toBe("r1");
      return { token: jwt(5_000), refreshToken: "r2", user };
    });
    const session = new Session(store, refresher, () => now);
    session.start({ token: jwt(1_000 + 900), refreshToken: "r1", user });
    now = (1_000 + 900) * 1000 - RENEW_BEFORE_MS + 1; // inside the renewal window
    const tokens = await Promise.all([session.accessToken(), session.accessToken(), session.accessToken()]);
    expect(refresher).toHaveBeenCalledTimes(1); // a one-use token is spent once
    expect(tokens).toEqual([jwt(5_000), jwt(5_000), jwt(5_000)]);
    expect(store.value).toBe("r2");
  });

  it("restores the session after a reload from the stored refresh token", async () => {
    const store = memoryStore("r1");
    const session = new Session(store, async () => ({ token: jwt(9_999), refreshToken: "r2", user }), () => 0);
    expect(session.signedIn).toBe(true);
    expect(session.user).toBeNull();
    expect(await session.accessToken()).toBe(jwt(9_999));
    expect(session.user).toEqual(user);
  });

  it("signs out when the refresh token is refused", async () => {
    const store = memoryStore("spent");
    const changes = vi.fn();
    const session = new Session(store, async () => Promise.reject(new ApiError("UNAUTHENTICATED", "revoked")), () => 0);
    session.onChange(changes);
    expect(await session.accessToken()).toBeNull();
    expect(store.value).toBeNull();
    expect(session.signedIn).toBe(false);
    expect(changes).toHaveBeenCalled();
  });

  it("keeps the refresh token through a network failure, to try again", async () => {
    const store = memoryStore("r1");
    const session = new Session(store, async () => Promise.reject(new ApiError("NETWORK", "offline")), () => 0);
    expect(await session.accessToken()).toBeNull();
    expect(store.value).toBe("r1");
  });

  it("forgets everything on sign out", () => {
    const store = memoryStore();
    const session = new Session(store, vi.fn(), () => 0);
    session.start({ token: jwt(10), refreshToken: "r1", user });
    session.end();
    expect(store.value).toBeNull();
    expect(session.user).toBeNull();
    expect(session.signedIn).toBe(false);
  });
});
