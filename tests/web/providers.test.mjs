// The provider choice: what /api/config offers, the remembered choice, voices per provider, truncate support.
import assert from "node:assert/strict";
import { test } from "node:test";

import { MemoryStorage } from "./memory-storage.mjs";

import {
  allVoices,
  canTruncate,
  chooseProvider,
  providersOf,
  rememberProvider,
  voiceFor,
  voicesFor,
} from "../../web/providers.js";
import { loadSettings, realtimeUrl, VOICES } from "../../web/session.js";


const CONFIG = {
  provider: "openai",
  providers: [
    { name: "openai", models: ["gpt-realtime"], voices: VOICES, voice: "marin", simulated: true, can_truncate: true },
    { name: "gemini", models: ["gemini-live-2.5-flash-preview"], voices: ["Puck", "Kore"], voice: "Puck",
      simulated: true, can_truncate: false },
  ],
};

test("the choice is remembered, falls back to the relay's default, and ignores what is no longer offered", () => {
  const storage = new MemoryStorage();
  assert.equal(chooseProvider(CONFIG, storage).name, "openai");
  rememberProvider(storage, "gemini");
  assert.equal(chooseProvider(CONFIG, storage).name, "gemini");
  rememberProvider(storage, "retired");
  assert.equal(chooseProvider(CONFIG, storage).name, "openai");
  assert.equal(chooseProvider({ simulated: false, auth: {} }, storage), null);
  assert.deepEqual(providersOf({ providers: [{ name: 3 }, null, CONFIG.providers[1]] }), [CONFIG.providers[1]]);
});

test("voices follow the provider; a remembered voice another provider offers is replaced by this one's", () => {
  const [openai, gemini] = CONFIG.providers;
  assert.deepEqual(voicesFor(gemini, VOICES), ["Puck", "Kore"]);
  assert.deepEqual(voicesFor(null, VOICES), VOICES);
  assert.equal(voiceFor(gemini, "marin", VOICES), "Puck");
  assert.equal(voiceFor(gemini, "Kore", VOICES), "Kore");
  assert.equal(voiceFor(openai, "Kore", VOICES), "marin");
  // A Gemini voice survives a reload when the relay offers it.
  const storage = new MemoryStorage();
  storage.setItem("relay.settings", JSON.stringify({ voice: "Kore" }));
  assert.equal(loadSettings(storage, {}, allVoices(CONFIG, VOICES)).voice, "Kore");
  assert.equal(loadSettings(storage, {}).voice, "marin");
});

test("the URL names the provider; truncation only where the provider supports it", () => {
  const location = { protocol: "https:", host: "relay.example" };
  assert.equal(
    realtimeUrl(location, 48000, 48000, "gemini"),
    "wss://relay.example/v1/realtime?input_rate=48000&output_rate=48000&provider=gemini",
  );
  assert.equal(realtimeUrl(location, 48000, 48000), "wss://relay.example/v1/realtime?input_rate=48000&output_rate=48000");
  assert.equal(canTruncate(CONFIG.providers[0]), true);
  assert.equal(canTruncate(CONFIG.providers[1]), false);
  assert.equal(canTruncate(null), true);
});
