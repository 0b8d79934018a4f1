// The relay's HTTP endpoints the page uses (same origin; the sign-in cookie travels by itself).

import { parseRetryAfter } from "./errors.js";

/** GET /api/config; returns the parsed JSON, or null when the relay cannot be reached or answers oddly. */
export async function fetchConfig() {
  try {
    const response = await fetch("/api/config", { credentials: "same-origin", cache: "no-store" });
    if (!response.ok) return null;
    return await response.json();
  } catch {
    return null;
  }
}

/** GET /readyz; returns the HTTP status, or null when unreachable. */
export async function fetchReadyStatus() {
  try {
    const response = await fetch("/readyz", { cache: "no-store" });
    return response.status;
  } catch {
    return null;
  }
}

/**
 * POST /auth/login with the access token. Returns {ok: true} or {ok: false, status, retryAfter, code, message};
 * status 0 means the request did not reach the relay.
 */
export async function login(token) {
  let response;
  try {
    response = await fetch("/auth/login", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token }),
    });
  } catch {
    return { ok: false, status: 0, retryAfter: null, code: null, message: null };
  }
  if (response.ok) return { ok: true };
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  return {
    ok: false,
    status: response.status,
    retryAfter: parseRetryAfter(response.headers.get("Retry-After")),
    code: body?.error?.code ?? null,
    message: body?.error?.message ?? null,
  };
}

/** POST /auth/logout; the relay clears the cookie. */
export async function logout() {
  try {
    await fetch("/auth/logout", { method: "POST", credentials: "same-origin" });
  } catch {
    /* signed out locally anyway */
  }
}
