// Settings → session.update, locked fields, remembered settings, URL.
import assert from "node:assert/strict";
import { test } from "node:test";

import { MemoryStorage } from "./memory-storage.mjs";

import {
  buildSessionUpdate,
  captureConstraints,
  defaultSettings,
  isLocked,
  loadSettings,
  realtimeUrl,
  saveSettings,
} from "../../web/session.js";


test("on connect: type realtime, voice, transcription; server instructions kept unless customised", () => {
  const settings = defaultSettings({ voice: "cedar" });
  assert.deepEqual(buildSessionUpdate(settings), {
    type: "session.update",
    session: {
      type: "realtime",
      audio: { input: { transcription: { model: "gpt-4o-mini-transcribe" } }, output: { voice: "cedar" } },
    },
  });
  const custom = { ...settings, instructions: "Be brief.", transcription: false };
  const event = buildSessionUpdate(custom);
  assert.equal(event.session.instructions, "Be brief.");
  assert.equal(event.session.audio.input.transcription, null);
});

test("locked fields are never sent, whichever name the server uses", () => {
  const settings = { ...defaultSettings(), instructions: "x" };
  const event = buildSessionUpdate(settings, { lockedFields: ["instructions", "audio.output.voice"] });
  assert.deepEqual(event.session, {
    type: "realtime",
    audio: { input: { transcription: { model: "gpt-4o-mini-transcribe" } } },
  });
  assert.equal(isLocked("voice", ["voice"]), true);
  assert.equal(isLocked("transcription", ["audio.input.transcription"]), true);
  assert.equal(isLocked("transcription", ["audio.output.voice"]), false);
  const all = ["instructions", "audio.output.voice", "audio.input.transcription"];
  assert.equal(buildSessionUpdate(settings, { lockedFields: all }), null);
});

test("on change only the changed field is sent", () => {
  const event = buildSessionUpdate({ ...defaultSettings(), voice: "sage" }, { fields: ["voice"] });
  assert.deepEqual(event.session, { type: "realtime", audio: { output: { voice: "sage" } } });
});

test("settings survive a reload; malformed storage falls back to defaults", () => {
  const storage = new MemoryStorage();
  saveSettings(storage, { ...defaultSettings(), voice: "ash", noiseSuppression: false });
  const loaded = loadSettings(storage);
  assert.equal(loaded.voice, "ash");
  assert.equal(loaded.noiseSuppression, false);
  storage.setItem("relay.settings", "{not json");
  assert.deepEqual(loadSettings(storage, { voice: "verse" }), defaultSettings({ voice: "verse" }));
  storage.setItem("relay.settings", JSON.stringify({ voice: "nobody", echoCancellation: "yes" }));
  assert.deepEqual(loadSettings(storage), defaultSettings());
});

test("capture processing is on by default and switchable; mono requested", () => {
  assert.deepEqual(captureConstraints(defaultSettings()), {
    echoCancellation: true,
    noiseSuppression: true,
    autoGainControl: true,
    channelCount: { ideal: 1 },
  });
  assert.equal(captureConstraints({ ...defaultSettings(), autoGainControl: false }).autoGainControl, false);
});

test("the socket URL is same-origin and declares the native rates", () => {
  assert.equal(
    realtimeUrl({ protocol: "https:", host: "relay.example.ts.net" }, 44100, 44100),
    "wss://relay.example.ts.net/v1/realtime?input_rate=44100&output_rate=44100",
  );
  assert.equal(
    realtimeUrl({ protocol: "http:", host: "127.0.0.1:8080" }, 48000, 48000),
    "ws://127.0.0.1:8080/v1/realtime?input_rate=48000&output_rate=48000",
  );
});
