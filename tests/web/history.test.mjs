// The history panel's formatting: durations, costs, and transcript lines (an interrupted reply says what was heard).
import assert from "node:assert/strict";
import { test } from "node:test";

import { formatCost, formatDuration, transcriptLine } from "../../web/history.js";
import { translator } from "../../web/i18n.js";

test("durations and costs read as people expect", () => {
  assert.equal(formatDuration(42.4), "42 s");
  assert.equal(formatDuration(65), "1 min 05 s");
  assert.equal(formatCost(0.004391), "$0.0044");
  assert.equal(formatCost(null), "$0.0000");
});

test("transcript lines name the speaker and the heard part of an interrupted reply", () => {
  const t = translator("en");
  assert.deepEqual(transcriptLine({ type: "message", role: "user", text: "Hello" }, t), { who: "You", text: "Hello" });
  assert.deepEqual(
    transcriptLine({ type: "message", role: "assistant", text: "Well", interrupted: true, audio_end_ms: 30 }, t),
    { who: "Assistant", text: "Well (interrupted after 30 ms)" },
  );
  assert.equal(transcriptLine({ type: "function_call", name: "weather", arguments: "{}" }, t).text, "weather({})");
  assert.equal(translator("ja")("history.interrupted", { ms: 5 }), "（5 ミリ秒で中断）");
});
