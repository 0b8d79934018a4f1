// The playback worklet's logic: jitter buffer, re-buffering, seamless deltas, fade-out flush, per-item accounting.
import assert from "node:assert/strict";
import { test } from "node:test";

import { PlayerCore, SampleRing } from "../../web/worklets/player.js";

const RATE = 48000;
const QUANTUM = 128;

function ramp(length, start = 0) {
  return Int16Array.from({ length }, (_, i) => ((start + i) % 20000) + 1);
}

/** Render n quanta; returns the concatenated output and every message. */
function render(core, quanta) {
  const out = new Float32Array(quanta * QUANTUM);
  const messages = [];
  for (let q = 0; q < quanta; q++) {
    const block = new Float32Array(QUANTUM);
    messages.push(...core.render(block, q * QUANTUM));
    out.set(block, q * QUANTUM);
  }
  return { out, messages };
}

test("ring buffer grows without losing or reordering samples", () => {
  const ring = new SampleRing(8);
  const out = new Float32Array(30);
  ring.writeInt16(Int16Array.from([1, 2, 3, 4, 5, 6]));
  ring.readInto(out, 0, 4);
  ring.writeInt16(Int16Array.from({ length: 20 }, (_, i) => 7 + i)); // wraps, then grows
  ring.readInto(out, 4, 22);
  assert.equal(ring.size, 0);
  assert.deepEqual(
    Array.from(out.subarray(0, 26), (x) => Math.round(x * 32768)),
    Array.from({ length: 26 }, (_, i) => i + 1),
  );
});

test("waits for about 60 ms of audio before starting, then plays it unchanged", () => {
  const core = new PlayerCore(RATE, { prebufferMs: 60 });
  core.push("a", ramp(0.04 * RATE)); // 40 ms: not enough
  let { out } = render(core, 4);
  assert.ok(out.every((x) => x === 0), "must stay silent while buffering");
  assert.equal(core.state, "buffering");
  core.push("a", ramp(0.04 * RATE, 0.04 * RATE)); // 80 ms now
  ({ out } = render(core, 1));
  assert.equal(core.state, "playing");
  assert.equal(Math.round(out[0] * 32768), 1);
});

test("consecutive deltas play back to back with no gap or repeat", () => {
  const core = new PlayerCore(RATE, { prebufferMs: 0 });
  const total = 10 * 480;
  for (let i = 0; i < 10; i++) core.push("a", ramp(480, i * 480));
  core.end("a");
  const { out, messages } = render(core, Math.ceil(total / QUANTUM) + 2);
  const played = Array.from(out.subarray(0, total), (x) => Math.round(x * 32768));
  assert.deepEqual(played, Array.from(ramp(total)));
  assert.ok(out.subarray(total).every((x) => x === 0));
  assert.ok(messages.some((m) => m.type === "drained"));
  assert.ok(!messages.some((m) => m.type === "underrun"));
});

test("an underrun re-buffers instead of playing dribbles", () => {
  const core = new PlayerCore(RATE, { prebufferMs: 10 }); // 480 samples
  core.push("a", ramp(600));
  let { messages } = render(core, 5); // 640 > 600: runs dry
  assert.ok(messages.some((m) => m.type === "underrun"));
  assert.equal(core.state, "buffering");
  core.push("a", ramp(200, 600)); // below the threshold, item not ended: wait
  ({ messages } = render(core, 2));
  assert.equal(core.state, "buffering");
  assert.equal(core.played.get("a"), 600);
  core.end("a"); // nothing more is coming: play the tail
  ({ messages } = render(core, 3));
  assert.equal(core.played.get("a"), 800);
  assert.ok(messages.some((m) => m.type === "drained"));
});

test("counts played samples per item across item boundaries and reports them", () => {
  const core = new PlayerCore(RATE, { prebufferMs: 0, reportMs: 1 });
  core.push("a", ramp(300));
  core.push("b", ramp(300));
  core.end("b");
  const { messages } = render(core, 6);
  assert.equal(core.played.get("a"), 300);
  assert.equal(core.played.get("b"), 300);
  const started = messages.filter((m) => m.type === "started");
  assert.deepEqual(
    started.map((m) => [m.itemId, m.frame]),
    [
      ["a", 0],
      ["b", 300],
    ],
  );
  const reported = {};
  for (const m of messages.filter((m) => m.type === "progress")) Object.assign(reported, m.played);
  assert.deepEqual(reported, { a: 300, b: 300 });
});

test("flush fades out within a few ms, reports exactly what was played, and drops later audio", () => {
  const core = new PlayerCore(RATE, { prebufferMs: 0, fadeMs: 2 }); // 96-sample fade
  const full = new Int16Array(RATE).fill(16384); // 1 s at half scale
  core.push("a", full);
  render(core, 10); // 1280 samples played
  core.flush(7);
  const { out, messages } = render(core, 2);
  const flushed = messages.find((m) => m.type === "flushed");
  assert.equal(flushed.id, 7);
  assert.equal(flushed.played.a, 1280 + 96);
  // Monotonic fade from near full level to near zero, then silence.
  for (let i = 1; i < 96; i++) assert.ok(out[i] <= out[i - 1]);
  assert.ok(out[0] > 0.45 && out[95] < 0.01);
  assert.ok(out.subarray(96).every((x) => x === 0));
  assert.equal(core.state, "idle");
  core.push("a", full); // a late delta of the flushed item
  assert.equal(render(core, 2).out.every((x) => x === 0), true);
});

test("flush while still buffering answers at once with nothing played", () => {
  const core = new PlayerCore(RATE, { prebufferMs: 60 });
  core.push("a", ramp(100));
  core.flush(1);
  const { messages } = render(core, 1);
  assert.deepEqual(messages.find((m) => m.type === "flushed"), { type: "flushed", id: 1, played: { a: 0 }, starved: 0 });
});

test("silence output during an underrun is counted, so played time can be squared with the clock", () => {
  const core = new PlayerCore(RATE, { prebufferMs: 0 });
  core.push("a", ramp(200));
  render(core, 2); // 200 played, 56 starved in the second quantum
  render(core, 3); // 384 more starved while waiting
  core.push("a", ramp(128));
  const { messages } = render(core, 1); // resumes: no longer starving
  render(core, 1); // ran dry again: starving
  core.end("a");
  render(core, 2); // ended: not starving, just finished
  assert.equal(core.starved, 56 + 384 + 128);
  assert.equal(messages.find((m) => m.type === "progress").starved, 440);
});
