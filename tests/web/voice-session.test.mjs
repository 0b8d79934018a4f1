// What the page does with server events: playback, barge-in with truncate, stale deltas, latency, PCM decoding.
import assert from "node:assert/strict";
import { test } from "node:test";

import { base64ToBytes, LinearResampler, Pcm16Assembler } from "../../web/pcm.js";
import { VoiceSession } from "../../web/voice-session.js";

const RATE = 48000;

function b64(int16) {
  return Buffer.from(int16.buffer, int16.byteOffset, int16.byteLength).toString("base64");
}

/** A player double that records calls and answers flushes with the samples it says it played. */
function fakePlayer(rate = RATE) {
  return {
    rate,
    pushed: [],
    ended: [],
    flushes: 0,
    played: {},
    push(itemId, pcm) {
      this.pushed.push([itemId, pcm.length]);
    },
    end(itemId) {
      this.ended.push(itemId);
    },
    async flush() {
      this.flushes++;
      return { ...this.played };
    },
    outputLatencyMs: () => 0,
  };
}

function setup(rate = RATE, truncate = true) {
  const sent = [];
  let clock = 1000;
  const player = fakePlayer(rate);
  const debug = {};
  const session = new VoiceSession({ send: (e) => sent.push(e), player, debug, now: () => clock, truncate });
  session.handleServerEvent({
    type: "session.created",
    session: { audio: { input: { format: { rate: 24000 } }, output: { format: { rate: 24000 } } } },
    relay: { input_rate: rate, output_rate: rate },
  });
  return { session, player, sent, debug, advance: (ms) => (clock += ms) };
}

const delta = (item, samples) => ({
  type: "response.output_audio.delta",
  item_id: item,
  delta: b64(new Int16Array(samples).fill(100)),
});

test("audio deltas go to the player; done lets it play out the tail", () => {
  const { session, player } = setup();
  session.handleServerEvent({ type: "response.created", response: { id: "r1" } });
  session.handleServerEvent(delta("a1", 4800));
  session.handleServerEvent(delta("a1", 4800));
  session.handleServerEvent({ type: "response.output_audio.done", item_id: "a1" });
  assert.deepEqual(player.pushed, [
    ["a1", 4800],
    ["a1", 4800],
  ]);
  assert.deepEqual(player.ended, ["a1"]);
  assert.equal(session.assistantSpeaking, true);
  session.handlePlayerMessage({ type: "drained" });
  assert.equal(session.assistantSpeaking, false);
});

test("speech during playback flushes and truncates at the played position, then ignores stale deltas", async () => {
  const { session, player, sent, debug } = setup();
  session.handleServerEvent(delta("a1", 48000));
  session.handlePlayerMessage({ type: "started", itemId: "a1", frame: 0 });
  player.played = { a1: 31234 }; // 650.7 ms
  session.handleServerEvent({ type: "input_audio_buffer.speech_started", item_id: "u2", audio_start_ms: 900 });
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(player.flushes, 1);
  assert.deepEqual(sent, [{ type: "conversation.item.truncate", item_id: "a1", content_index: 0, audio_end_ms: 650 }]);
  assert.equal(debug.lastTruncate.audioEndMs, 650);
  assert.equal(debug.playedSamplesByItem.a1, 31234);
  assert.equal(session.assistantSpeaking, false);
  session.handleServerEvent(delta("a1", 4800));
  assert.equal(player.pushed.length, 1, "a stale delta of the interrupted item must not play");
  assert.equal(debug.droppedStaleDeltas, 1);
});

test("a provider without truncation: barge-in still stops playback at once, and asks for no truncate", async () => {
  const { session, player, sent } = setup(RATE, false);
  session.handleServerEvent(delta("a1", 48000));
  session.handlePlayerMessage({ type: "started", itemId: "a1", frame: 0 });
  player.played = { a1: 24000 };
  session.handleServerEvent({ type: "input_audio_buffer.speech_started", item_id: "u2", audio_start_ms: 900 });
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(player.flushes, 1);
  assert.deepEqual(sent, []);
  assert.equal(session.assistantSpeaking, false);
});

test("speech with nothing playing does not truncate anything", async () => {
  const { session, player, sent } = setup();
  session.handleServerEvent({ type: "input_audio_buffer.speech_started", item_id: "u1", audio_start_ms: 0 });
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(player.flushes, 0);
  assert.deepEqual(sent, []);
});

test("turn latency runs from speech_stopped to the first reply sample played", () => {
  const { session, debug, advance } = setup();
  session.handleServerEvent({ type: "input_audio_buffer.speech_stopped", item_id: "u1", audio_end_ms: 2000 });
  advance(412);
  session.handleServerEvent(delta("a1", 4800));
  session.handlePlayerMessage({ type: "started", itemId: "a1", frame: 0 });
  session.handlePlayerMessage({ type: "started", itemId: "a2", frame: 9999 }); // not a new turn
  assert.deepEqual(debug.turnLatenciesMs, [412]);
});

test("a typed message interrupts, cancels the running response, and starts the latency clock", async () => {
  const { session, player, sent, debug, advance } = setup();
  session.handleServerEvent({ type: "response.created", response: { id: "r1" } });
  session.handleServerEvent(delta("a1", 4800));
  player.played = { a1: 2400 };
  await session.sendText("hello");
  assert.deepEqual(
    sent.map((e) => e.type),
    ["conversation.item.truncate", "response.cancel", "conversation.item.create", "response.create"],
  );
  assert.equal(sent[0].audio_end_ms, 50);
  assert.deepEqual(sent[2].item.content, [{ type: "input_text", text: "hello" }]);
  advance(300);
  session.handlePlayerMessage({ type: "started", itemId: "a2", frame: 0 });
  assert.deepEqual(debug.turnLatenciesMs, [300]);
});

test("the relay's rate field wins over the spec's 24000", () => {
  const { player, debug } = setup(44100);
  assert.equal(debug.sessionOutputRate, 44100);
  assert.equal(debug.sessionInputRate, 44100);
  assert.equal(player.rate, 44100);
});

test("output at another rate than asked for is resampled before playing", () => {
  const { session, player } = setup(44100);
  session.handleServerEvent({
    type: "session.updated",
    session: { audio: { output: { format: { rate: 24000 } } } },
    relay: { input_rate: 44100, output_rate: 24000 },
  });
  session.handleServerEvent(delta("a1", 2400)); // 100 ms at 24 kHz
  const [[, samples]] = player.pushed;
  assert.ok(Math.abs(samples - 4410) <= 2, `${samples}`);
});

test("PCM16 bytes split at odd offsets reassemble into the same samples", () => {
  const source = Int16Array.from({ length: 101 }, (_, i) => i * 300 - 15000);
  const bytes = new Uint8Array(source.buffer);
  const assembler = new Pcm16Assembler();
  const out = [];
  for (const [a, b] of [
    [0, 3],
    [3, 4],
    [4, 101],
    [101, 202],
  ]) {
    out.push(...assembler.push(bytes.subarray(a, b)));
  }
  assert.deepEqual(out, Array.from(source));
  assert.deepEqual(base64ToBytes(Buffer.from([1, 2, 255]).toString("base64")), new Uint8Array([1, 2, 255]));
});

test("the fallback resampler is continuous across chunks and keeps the rate ratio", () => {
  const input = Int16Array.from({ length: 2400 }, (_, i) => Math.round(10000 * Math.sin((2 * Math.PI * 440 * i) / 24000)));
  const whole = new LinearResampler(24000, 48000).push(input);
  const chunked = new LinearResampler(24000, 48000);
  const parts = [];
  for (let i = 0; i < input.length; i += 317) parts.push(...chunked.push(input.subarray(i, i + 317)));
  assert.deepEqual(parts, Array.from(whole));
  assert.ok(Math.abs(whole.length - 4800) <= 2);
});

test("turn: hearing from speech_started, thinking from speech_stopped until the reply's first audio", () => {
  const { session } = setup();
  assert.equal(session.turn, "idle");
  session.handleServerEvent({ type: "input_audio_buffer.speech_started" });
  assert.equal(session.turn, "hearing");
  session.handleServerEvent({ type: "input_audio_buffer.speech_stopped" });
  assert.equal(session.turn, "thinking");
  session.handleServerEvent({ type: "response.created", response: { id: "r1" } });
  session.handleServerEvent({ type: "response.output_audio_transcript.delta", item_id: "a1", delta: "Hi" });
  assert.equal(session.turn, "thinking", "a transcript is not yet something heard");
  session.handleServerEvent(delta("a1", 480));
  assert.equal(session.turn, "idle");
});

test("turn: a typed message thinks until the reply; a cancelled older response does not end that", async () => {
  const { session } = setup();
  await session.sendText("Hello");
  assert.equal(session.turn, "thinking");
  session.handleServerEvent({ type: "response.done", response: { id: "r0", status: "cancelled", output: [] } });
  assert.equal(session.turn, "thinking");
  session.handleServerEvent({ type: "response.done", response: { id: "r1", status: "completed", output: [] } });
  assert.equal(session.turn, "idle", "a reply without audio still ends the wait");
});

test("turn: speaking again while thinking is hearing; an error ends the wait", () => {
  const { session } = setup();
  session.handleServerEvent({ type: "input_audio_buffer.speech_stopped" });
  session.handleServerEvent({ type: "input_audio_buffer.speech_started" });
  assert.equal(session.turn, "hearing");
  session.handleServerEvent({ type: "input_audio_buffer.speech_stopped" });
  session.handleServerEvent({ type: "error", error: { code: "relay_upstream_unavailable" } });
  assert.equal(session.turn, "idle");
});
