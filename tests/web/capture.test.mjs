// The capture worklet's logic: float → PCM16 conversion and framing of at most 20 ms.
import assert from "node:assert/strict";
import { test } from "node:test";

import { floatToInt16, frameSamplesFor, Pcm16Framer } from "../../web/worklets/capture.js";

test("float samples convert to int16 with clamping, never wrapping", () => {
  assert.equal(floatToInt16(0), 0);
  assert.equal(floatToInt16(1), 32767);
  assert.equal(floatToInt16(-1), -32768);
  assert.equal(floatToInt16(1.7), 32767);
  assert.equal(floatToInt16(-3), -32768);
  assert.equal(floatToInt16(0.5), 16384);
});

test("frames are at most 20 ms at the context rate", () => {
  for (const rate of [8000, 16000, 44100, 48000, 96000]) {
    const samples = frameSamplesFor(rate, 20);
    assert.ok(samples / rate <= 0.02, `${rate}`);
    assert.ok(samples / rate > 0.0199, `${rate}`);
  }
  assert.equal(frameSamplesFor(44100, 20), 882);
});

test("render quanta are regrouped into whole frames with levels, losing nothing", () => {
  const framer = new Pcm16Framer(882);
  const frames = [];
  let next = 0;
  for (let q = 0; q < 20; q++) {
    const block = Float32Array.from({ length: 128 }, () => ((next++ % 100) - 50) / 100);
    frames.push(...framer.push(block));
  }
  assert.equal(frames.length, Math.floor((20 * 128) / 882));
  assert.ok(frames.every((f) => f.pcm.length === 882));
  const tail = framer.flush();
  assert.equal(tail.pcm.length, 20 * 128 - frames.length * 882);
  const all = [...frames.flatMap((f) => Array.from(f.pcm)), ...tail.pcm];
  assert.deepEqual(
    all,
    Array.from({ length: 20 * 128 }, (_, i) => floatToInt16(((i % 100) - 50) / 100)),
  );
  assert.equal(frames[0].peak, 0.5);
  assert.ok(frames[0].rms > 0.28 && frames[0].rms < 0.3);
  assert.equal(framer.flush(), null);
  // Each frame owns its buffer (it is transferred to the main thread).
  assert.notEqual(frames[0].pcm.buffer, frames[1].pcm.buffer);
});
