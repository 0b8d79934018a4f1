// UI strings, language choice, and the messages shown for relay errors, closes, sign-in and microphone failures.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import {
  describeClose,
  describeConnectFailure,
  describeErrorEvent,
  describeLoginFailure,
  describeMicFailure,
  isFatalErrorEvent,
  parseRetryAfter,
} from "../../web/errors.js";
import { format, pickLanguage, STRINGS, translator } from "../../web/i18n.js";

const RELAY_CODES = [
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
];

test("English and Japanese have exactly the same keys and placeholders", () => {
  const en = Object.keys(STRINGS.en).sort();
  assert.deepEqual(Object.keys(STRINGS.ja).sort(), en);
  const placeholders = (s) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();
  for (const key of en) assert.deepEqual(placeholders(STRINGS.ja[key]), placeholders(STRINGS.en[key]), key);
});

test("every key the markup uses exists", () => {
  const html = readFileSync(new URL("../../web/index.html", import.meta.url), "utf8");
  const keys = [
    ...[...html.matchAll(/data-i18n="([^"]+)"/g)].map((m) => m[1]),
    ...[...html.matchAll(/data-i18n-attr="([^"]+)"/g)].flatMap((m) => m[1].split(";").map((p) => p.split(":")[1])),
  ];
  assert.ok(keys.length > 30);
  for (const key of keys) assert.ok(key in STRINGS.en, key);
});

test("language: stored choice, then the browser's languages by primary tag, then English", () => {
  assert.equal(pickLanguage(["ja-JP", "en-US"], null), "ja");
  assert.equal(pickLanguage(["fr-FR", "en-GB"], null), "en");
  assert.equal(pickLanguage(["fr-FR", "ja"], null), "ja");
  assert.equal(pickLanguage(["ja-JP"], "en"), "en");
  assert.equal(pickLanguage(["de"], "xx"), "en");
  assert.equal(pickLanguage(undefined, null), "en");
});

test("placeholders are filled; unknown keys fall back to English, then to the key", () => {
  assert.equal(format("wait {seconds} s", { seconds: 30 }), "wait 30 s");
  assert.equal(format("{missing}", {}), "{missing}");
  assert.equal(translator("ja")("no.such.key"), "no.such.key");
  assert.equal(translator("xx")("btn.connect"), "Connect");
});

test("every relay error code has its own sentence in both languages", () => {
  for (const code of RELAY_CODES) {
    const { key } = describeErrorEvent({ code, message: "m" });
    assert.equal(key, `err.${code}`);
    assert.ok(STRINGS.en[key] && STRINGS.ja[key], code);
  }
});

test("unknown error codes show the server's own message", () => {
  const message = describeErrorEvent({ code: "invalid_value", message: "Invalid 'voice'." });
  assert.deepEqual(message, { key: "err.server", params: { message: "Invalid 'voice'." } });
  assert.equal(translator("en")(message.key, message.params), "The relay reported: Invalid 'voice'.");
});

test("upstream and shutdown errors end the conversation; request errors do not", () => {
  assert.equal(isFatalErrorEvent({ code: "relay_upstream_unavailable" }), true);
  assert.equal(isFatalErrorEvent({ code: "relay_shutting_down" }), true);
  assert.equal(isFatalErrorEvent({ code: "session_expired" }), true);
  assert.equal(isFatalErrorEvent({ code: "invalid_value" }), false);
  assert.equal(isFatalErrorEvent({ code: "relay_policy_violation" }), false);
});

test("close codes map to sentences; a normal or page-requested close needs none", () => {
  assert.equal(describeClose(1000), null);
  assert.equal(describeClose(1006, { requestedByPage: true }), null);
  assert.equal(describeClose(4502).key, "err.relay_upstream_unavailable");
  assert.equal(describeClose(4401).key, "err.relay_upstream_auth_failed");
  assert.equal(describeClose(4429).key, "err.relay_upstream_rate_limited");
  assert.equal(describeClose(4504).key, "err.relay_upstream_timeout");
  for (const code of [1001, 1008, 1009, 1011, 1013]) assert.equal(describeClose(code).key, `close.${code}`);
  assert.deepEqual(describeClose(1006), { key: "close.unexpected", params: { code: 1006 } });
});

test("a refused socket is explained from a fresh look at the relay", () => {
  const signedOut = { auth: { required: true, authenticated: false } };
  const fine = { auth: { required: true, authenticated: true } };
  assert.equal(describeConnectFailure({ config: null, readyStatus: null }).key, "connect.unreachable");
  assert.equal(describeConnectFailure({ config: signedOut, readyStatus: 200 }).key, "connect.signedOut");
  assert.equal(describeConnectFailure({ config: fine, readyStatus: 503 }).key, "connect.draining");
  assert.equal(describeConnectFailure({ config: fine, readyStatus: 200 }).key, "connect.failed");
});

test("sign-in refusals: wrong token, too many attempts with the wait, foreign origin, draining", () => {
  assert.equal(describeLoginFailure(401, null).key, "login.invalid");
  assert.deepEqual(describeLoginFailure(429, 42), { key: "login.rateLimited", params: { seconds: 42 } });
  assert.equal(translator("en")("login.rateLimited", { seconds: 42 }).includes("42 seconds"), true);
  assert.equal(describeLoginFailure(429, null).key, "login.rateLimitedNoTime");
  assert.equal(describeLoginFailure(403, null).key, "login.forbidden");
  assert.equal(describeLoginFailure(503, null).key, "login.draining");
  assert.equal(describeLoginFailure(0, null).key, "login.network");
  assert.deepEqual(describeLoginFailure(500, null), { key: "login.failed", params: { status: 500 } });
});

test("Retry-After in seconds or as an HTTP date", () => {
  assert.equal(parseRetryAfter("30"), 30);
  assert.equal(parseRetryAfter(null), null);
  assert.equal(parseRetryAfter("soon"), null);
  const now = Date.parse("2026-01-01T00:00:00Z");
  assert.equal(parseRetryAfter("Thu, 01 Jan 2026 00:01:00 GMT", now), 60);
});

test("microphone failures say what to do", () => {
  assert.equal(describeMicFailure({ name: "NotAllowedError" }).key, "mic.denied");
  assert.equal(describeMicFailure({ name: "NotFoundError" }).key, "mic.notFound");
  assert.equal(describeMicFailure({ name: "NotReadableError" }).key, "mic.busy");
  assert.equal(describeMicFailure({ name: "InsecureContext" }).key, "mic.insecure");
  assert.deepEqual(describeMicFailure({ name: "Weird", message: "boom" }), {
    key: "mic.failed",
    params: { message: "boom" },
  });
});
