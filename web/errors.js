// Turning what the relay says (error events, close codes, HTTP answers) into messages that tell the user what to do.
// Every function returns {key, params} for i18n.js, so the wording lives in one place and in both languages.

/** Error codes the relay (or the model service) sends that have a dedicated explanation. */
const KNOWN_ERROR_CODES = new Set([
  "relay_upstream_unavailable",
  "relay_upstream_timeout",
  "relay_upstream_auth_failed",
  "relay_upstream_rate_limited",
  "relay_upstream_protocol_error",
  "relay_policy_violation",
  "relay_limit_exceeded",
  "relay_bad_audio",
  "relay_bad_event",
  "relay_internal_error",
  "relay_shutting_down",
  "session_expired",
]);

/** Close codes that mean the same thing as a relay error code share its sentence. */
const CLOSE_CODE_TO_ERROR = {
  4401: "relay_upstream_auth_failed",
  4429: "relay_upstream_rate_limited",
  4502: "relay_upstream_unavailable",
  4504: "relay_upstream_timeout",
};

const CLOSE_CODES_WITH_TEXT = new Set([1001, 1008, 1009, 1011, 1013]);

/**
 * Explain an `error` event. Known codes get a sentence saying what to do; anything else shows the server's own
 * message, which is more useful than a generic one.
 */
export function describeErrorEvent(error) {
  const code = error?.code ?? "";
  const message = String(error?.message ?? code ?? "").trim() || "unknown error";
  if (KNOWN_ERROR_CODES.has(code)) return { key: `err.${code}`, params: { message } };
  return { key: "err.server", params: { message } };
}

/**
 * Whether an error event ends the conversation (the relay closes right after it), as opposed to a rejected
 * request inside a conversation that goes on.
 */
export function isFatalErrorEvent(error) {
  const code = error?.code ?? "";
  return (
    code.startsWith("relay_upstream_") ||
    code === "relay_internal_error" ||
    code === "relay_shutting_down" ||
    code === "relay_limit_exceeded" ||
    code === "session_expired"
  );
}

/**
 * Explain a WebSocket close. Returns null for closes that need no explanation (normal end, or a close the page
 * itself asked for).
 */
export function describeClose(code, { requestedByPage = false } = {}) {
  if (requestedByPage || code === 1000) return null;
  if (CLOSE_CODE_TO_ERROR[code]) return { key: `err.${CLOSE_CODE_TO_ERROR[code]}`, params: {} };
  if (CLOSE_CODES_WITH_TEXT.has(code)) return { key: `close.${code}`, params: {} };
  return { key: "close.unexpected", params: { code } };
}

/**
 * Explain a socket that failed before it opened. Browsers hide the HTTP status of a refused WebSocket handshake,
 * so the page asks the relay again: `config` is a fresh /api/config answer (or null if unreachable) and `ready`
 * the /readyz status code (or null).
 */
export function describeConnectFailure({ config, readyStatus }) {
  if (config === null && readyStatus === null) return { key: "connect.unreachable", params: {} };
  if (config?.auth?.required && !config.auth.authenticated) return { key: "connect.signedOut", params: {} };
  if (readyStatus === 503) return { key: "connect.draining", params: {} };
  return { key: "connect.failed", params: {} };
}

/** Parse a Retry-After header given in seconds (the HTTP-date form is converted relative to `now`). */
export function parseRetryAfter(value, now = Date.now()) {
  if (value === null || value === undefined || value === "") return null;
  const text = String(value).trim();
  if (/^\d+$/.test(text)) return Number(text);
  const when = Date.parse(text);
  if (Number.isNaN(when)) return null;
  return Math.max(0, Math.ceil((when - now) / 1000));
}

/** Explain a refused POST /auth/login. `status` 0 means the request never reached the relay. */
export function describeLoginFailure(status, retryAfterSeconds) {
  switch (status) {
    case 0:
      return { key: "login.network", params: {} };
    case 400:
    case 401:
      return { key: "login.invalid", params: {} };
    case 403:
      return { key: "login.forbidden", params: {} };
    case 429:
      return retryAfterSeconds === null || retryAfterSeconds === undefined
        ? { key: "login.rateLimitedNoTime", params: {} }
        : { key: "login.rateLimited", params: { seconds: retryAfterSeconds } };
    case 503:
      return { key: "login.draining", params: {} };
    default:
      return { key: "login.failed", params: { status } };
  }
}

/** Explain a getUserMedia failure by the DOMException name browsers use. */
export function describeMicFailure(error) {
  switch (error?.name) {
    case "NotAllowedError":
    case "PermissionDeniedError":
    case "SecurityError":
      return { key: "mic.denied", params: {} };
    case "NotFoundError":
    case "DevicesNotFoundError":
    case "OverconstrainedError":
      return { key: "mic.notFound", params: {} };
    case "NotReadableError":
    case "TrackStartError":
    case "AbortError":
      return { key: "mic.busy", params: {} };
    case "InsecureContext":
      return { key: "mic.insecure", params: {} };
    default:
      return { key: "mic.failed", params: { message: error?.message || String(error) } };
  }
}
