/**
 * GraphQL over HTTP to the gateway on this origin (`POST /graphql`). Answers become
 * data or an `ApiError` (never raw JSON on the page). A request refused as
 * UNAUTHENTICATED while a refresh token exists renews the session once and repeats:
 * the gateway checks the token before running anything, so the repeat is safe.
 */
import { ApiError, NETWORK, type GraphQLErrorShape } from "../lib/errors";
import { Session, sessionStorageStore, type Tokens } from "../lib/session";
import { RefreshTokenDocument, type TypedDocumentString } from "./generated";

export const GRAPHQL_PATH = "/graphql";

interface GraphQLResponse<T> {
  data?: T | null;
  errors?: GraphQLErrorShape[];
}

async function post<T>(query: string, variables: unknown, token: string | null): Promise<T> {
  const headers: Record<string, string> = {
    "Content-Type": "application/json",
    Accept: "application/graphql-response+json, application/json",
  };
  if (token) headers.Authorization = `Bearer ${token}`;
  let response: Response;
  try {
    response = await fetch(GRAPHQL_PATH, { method: "POST", headers, body: JSON.stringify({ query, variables }) });
  } catch {
    throw new ApiError(NETWORK, "network error", { retryable: true });
  }
  let body: GraphQLResponse<T>;
  try {
    body = (await response.json()) as GraphQLResponse<T>;
  } catch {
    // A proxy's HTML error page, say: a 429/503 from in front of the gateway.
    const code = response.status === 429 ? "RATE_LIMITED" : response.status === 503 ? "SERVICE_BUSY" : NETWORK;
    const retryAfter = Number(response.headers.get("Retry-After")) || null;
    throw new ApiError(code, `HTTP ${response.status}`, { retryAfterSeconds: retryAfter, retryable: true });
  }
  if (body.errors && body.errors.length > 0) throw ApiError.fromGraphQL(body.errors[0]);
  if (body.data == null) throw new ApiError("INTERNAL", "no data");
  return body.data;
}

export const session = new Session(sessionStorageStore, async (refreshToken) => {
  const data = await post<{ refreshToken: Tokens }>(RefreshTokenDocument.toString(), { refreshToken }, null);
  return data.refreshToken;
});

export async function request<R, V>(document: TypedDocumentString<R, V>, variables: V): Promise<R> {
  const query = document.toString();
  const token = await session.accessToken();
  try {
    return await post<R>(query, variables, token);
  } catch (error) {
    if (error instanceof ApiError && error.code === "UNAUTHENTICATED" && token !== null) {
      // The access token was revoked or expired early: renew once and repeat.
      if (await session.refresh()) return post<R>(query, variables, await session.accessToken());
      session.end();
    }
    throw error;
  }
}

/** A fresh key per user action: a retry of the same action reuses it. */
export function idempotencyKey(): string {
  return crypto.randomUUID();
}
