// The page: wires the DOM to the relay connection, the audio engine and the conversation logic.

import { fetchConfig, fetchReadyStatus, login, logout } from "./api.js";
import { AudioEngine, AudioOutputTimeoutError, AudioUnsupportedError } from "./audio-engine.js";
import { renderChatLog } from "./chat-view.js";
import {
  describeClose,
  describeConnectFailure,
  describeErrorEvent,
  describeLoginFailure,
  describeMicFailure,
  isFatalErrorEvent,
} from "./errors.js";
import {
  applyTranslations,
  loadStoredLanguage,
  pickLanguage,
  storeLanguage,
  translator,
} from "./i18n.js";
import {
  allVoices,
  canTruncate,
  chooseProvider,
  providersOf,
  rememberProvider,
  voiceFor,
  voicesFor,
} from "./providers.js";
import { RelayConnection } from "./relay-connection.js";
import {
  buildSessionUpdate,
  captureConstraints,
  isLocked,
  loadSettings,
  realtimeUrl,
  saveSettings,
  VOICES,
} from "./session.js";
import { HistoryPanel } from "./history.js";
import { VoiceSession } from "./voice-session.js";

const $ = (id) => document.getElementById(id);
const storage = (() => {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
})();

/** Diagnostics for tests and for anyone debugging audio in the console. */
const debug = {
  state: "disconnected",
  turn: "off", // off (not connected) | idle | hearing (speech_started) | thinking (turn ended, no reply audio yet)
  contextRate: null,
  inputRate: null,
  outputRate: null,
  micOn: false,
  captureFrames: 0,
  captureSamples: 0,
  captureRms: 0,
  connection: null,
  lastError: null,
  lastClose: null,
  // Filled per conversation by VoiceSession: playedSamplesByItem, playedMsByItem, lastTruncate, turnLatenciesMs…
  playedSamplesByItem: {},
  playedMsByItem: {},
  lastTruncate: null,
  turnLatenciesMs: [],
};
window.relayDebug = debug;

const app = {
  lang: "en",
  t: translator("en"),
  config: null,
  provider: null, // the chosen upstream from /api/config's providers (null: the relay offers no choice)
  settings: null,
  lockedFields: [],
  conn: "disconnected", // disconnected | connecting | connected | error
  error: null, // {key, params} shown in the error area
  engine: null,
  connection: null,
  voice: null,
  micWanted: true,
  level: 0,
  meterFrame: 0,
  meterAnnouncedAt: 0,
  history: null, // the history panel, when the relay saves conversations
  continueId: null, // the saved conversation the next session continues
};

// ---------------------------------------------------------------------------------------------------------------
// Language

function setLanguage(lang, remember) {
  app.lang = lang;
  app.t = translator(lang);
  document.documentElement.lang = lang;
  $("lang-select").value = lang;
  if (remember) storeLanguage(storage, lang);
  applyTranslations(document, app.t);
  document.title = app.t("app.title");
  renderAll();
}

// ---------------------------------------------------------------------------------------------------------------
// Rendering

function renderAll() {
  renderStatus();
  renderMic();
  renderError();
  renderLatency();
  renderChat(true);
  app.history?.render();
}

function displayedState() {
  if (app.conn !== "connected") return app.conn;
  // Speaking from the first queued reply audio until it has all played, underruns included: no flicker.
  if (app.voice?.assistantSpeaking) return "speaking";
  if (app.engine?.micOn) return "listening";
  return "connected";
}

function renderStatus() {
  const state = displayedState();
  debug.state = state;
  $("status-dot").dataset.state = state;
  $("status-text").textContent = app.t(`status.${state}`);
  document.body.dataset.state = state;
  renderTurn();
  const busy = app.conn === "connecting" || app.conn === "connected";
  const connectBtn = $("connect-btn");
  connectBtn.textContent = app.t(busy ? "btn.disconnect" : "btn.connect");
  connectBtn.classList.toggle("primary", !busy);
  connectBtn.classList.toggle("danger", busy);
  const canSend = app.conn === "connected";
  $("compose-input").disabled = !canSend;
  $("compose-send").disabled = !canSend;
}

/** What the server makes of the user's speech: heard, the turn ended (thinking until the reply's first audio). */
function renderTurn() {
  const turn = app.conn === "connected" ? (app.voice?.turn ?? "idle") : "off";
  debug.turn = turn;
  const line = $("turn");
  line.dataset.turn = turn;
  const key = turn === "idle" && !app.engine?.micOn ? "turn.idleTyping" : `turn.${turn}`;
  line.textContent = turn === "off" ? "" : app.t(key);
}

function renderMic() {
  const on = app.micWanted;
  $("mic-btn").setAttribute("aria-pressed", String(on));
  $("mic-state").textContent = app.t(on ? "btn.micStateOn" : "btn.micStateOff");
  debug.micOn = Boolean(app.engine?.micOn);
}

function showError(message) {
  app.error = message;
  debug.lastError = message;
  renderError();
}

function clearError() {
  app.error = null;
  renderError();
}

function renderError() {
  const box = $("error-box");
  box.hidden = app.error === null;
  $("error-text").textContent = app.error ? app.t(app.error.key, app.error.params) : "";
}

function renderLatency() {
  const values = app.voice?.debug.turnLatenciesMs ?? [];
  const out = $("latency-out");
  if (values.length === 0) {
    out.textContent = app.t("latency.none");
    return;
  }
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 ? sorted[middle] : Math.round((sorted[middle - 1] + sorted[middle]) / 2);
  out.textContent = app.t("latency.value", { last: values.at(-1), median, count: values.length });
}

let renderedChatVersion = -1;

function renderChat(force = false) {
  const chat = app.voice?.chat;
  const entries = chat ? chat.entries() : [];
  $("chat-empty").hidden = entries.length > 0;
  if (!force && chat && chat.version === renderedChatVersion) return;
  renderedChatVersion = chat?.version ?? -1;
  renderChatLog($("chat-log"), entries, { t: app.t, transcriptionOn: app.settings.transcription });
}

function startMeter() {
  if (app.meterFrame === 0) app.meterFrame = requestAnimationFrame(animateMeter);
}

function animateMeter() {
  // Decay so the bar falls smoothly between capture frames and drops to zero when the microphone stops.
  app.level *= 0.88;
  const percent = Math.min(100, Math.round(Math.sqrt(app.level) * 140));
  $("meter-fill").style.transform = `scaleX(${percent / 100})`;
  const now = performance.now();
  if (now - app.meterAnnouncedAt > 500) {
    $("meter").setAttribute("aria-valuenow", String(percent));
    app.meterAnnouncedAt = now;
  }
  // Stop redrawing once the bar is empty and no microphone can refill it (saves battery on phones).
  const idle = !app.engine && app.level < 0.001;
  app.meterFrame = idle ? 0 : requestAnimationFrame(animateMeter);
}

// ---------------------------------------------------------------------------------------------------------------
// Settings panel

function renderSettings() {
  const serverSession = app.config?.session ?? {};
  const voiceSelect = $("voice-select");
  voiceSelect.replaceChildren(
    ...voicesFor(app.provider, VOICES).map((voice) => {
      const option = document.createElement("option");
      option.value = voice;
      option.textContent = voice[0].toUpperCase() + voice.slice(1);
      return option;
    }),
  );
  const voiceLocked = isLocked("voice", app.lockedFields);
  voiceSelect.value = voiceLocked ? (serverSession.voice ?? app.settings.voice) : effectiveSettings().voice;
  voiceSelect.disabled = voiceLocked;
  $("voice-locked").hidden = !voiceLocked;

  const instructions = $("instructions-input");
  const instructionsLocked = isLocked("instructions", app.lockedFields);
  instructions.value =
    instructionsLocked || app.settings.instructions === null
      ? (serverSession.instructions ?? "")
      : app.settings.instructions;
  instructions.readOnly = instructionsLocked;
  $("instructions-note").dataset.i18n = instructionsLocked ? "settings.locked" : "settings.instructionsHint";
  $("instructions-note").textContent = app.t($("instructions-note").dataset.i18n);

  const transcriptionLocked = isLocked("transcription", app.lockedFields);
  $("transcription-input").checked = app.settings.transcription;
  $("transcription-input").disabled = transcriptionLocked;
  $("transcription-locked").hidden = !transcriptionLocked;

  $("echo-input").checked = app.settings.echoCancellation;
  $("noise-input").checked = app.settings.noiseSuppression;
  $("gain-input").checked = app.settings.autoGainControl;
}

function updateSetting(field, value) {
  app.settings[field] = value;
  saveSettings(storage, app.settings);
  if (app.conn !== "connected" && app.conn !== "connecting") return;
  if (field === "voice" || field === "transcription") {
    sendSessionUpdate([field], app.settings);
  } else if (field === "instructions") {
    // Reverting to the server's text still has to be sent, since a custom text may be in effect.
    const text = value ?? app.config?.session?.instructions ?? "";
    sendSessionUpdate(["instructions"], { ...app.settings, instructions: text });
  } else if (app.engine?.micOn) {
    void startMic();
  }
  renderChat(true);
}

/** The settings as the chosen provider can take them (its own voice when the remembered one is not offered). */
function effectiveSettings(settings = app.settings) {
  return { ...settings, voice: voiceFor(app.provider, settings.voice, VOICES) };
}

function renderProvider() {
  const providers = providersOf(app.config);
  const select = $("provider-select");
  select.replaceChildren(
    ...providers.map((provider) => {
      const option = document.createElement("option");
      option.value = provider.name;
      option.textContent = provider.name;
      return option;
    }),
  );
  select.value = app.provider?.name ?? "";
  $("provider-choice").hidden = providers.length < 2;
  $("provider-name").textContent = app.provider?.name ?? "";
  $("provider-badge").hidden = !app.provider;
  $("simulated-badge").hidden = !(app.provider ? app.provider.simulated : app.config?.simulated);
}

function onProviderChange(name) {
  const provider = providersOf(app.config).find((p) => p.name === name);
  if (!provider) return;
  app.provider = provider;
  debug.provider = provider.name;
  rememberProvider(storage, provider.name);
  renderProvider();
  renderSettings();
  if (app.conn === "connecting" || app.conn === "connected") {
    // A session belongs to one upstream: switching is a new connection (still inside the user's gesture).
    disconnect();
    onConnectClick();
  }
}

function sendSessionUpdate(fields, settings) {
  const event = buildSessionUpdate(effectiveSettings(settings), { lockedFields: app.lockedFields, fields });
  if (event) app.connection?.sendEvent(event);
}

function toggleSettings(open) {
  const panel = $("settings-panel");
  const wasOpen = !panel.hidden;
  panel.hidden = !open;
  $("settings-toggle").setAttribute("aria-expanded", String(open));
  document.body.classList.toggle("settings-open", open);
  if (open) $("voice-select").disabled ? $("instructions-input").focus() : $("voice-select").focus();
  else if (wasOpen) $("settings-toggle").focus();
}

// ---------------------------------------------------------------------------------------------------------------
// Views and sign-in

function applyConfig(config) {
  app.config = config;
  debug.config = config;
  app.lockedFields = config?.session?.locked_fields ?? [];
  app.provider = chooseProvider(config, storage);
  debug.provider = app.provider?.name ?? null;
  renderProvider();
  const auth = config?.auth ?? {};
  const signedOut = Boolean(auth.required && !auth.authenticated);
  $("loading").hidden = true;
  $("signin-view").hidden = !signedOut;
  $("app-view").hidden = signedOut;
  $("settings-toggle").hidden = signedOut;
  $("signout").hidden = !(auth.required && auth.authenticated);
  if (signedOut) {
    toggleSettings(false);
    $("token-input").focus();
  }
  renderSettings();
  renderHistory(Boolean(config?.history) && !signedOut);
}

function renderHistory(shown) {
  $("history-panel").hidden = !shown;
  if (!shown) return;
  app.history ??= new HistoryPanel({
    root: $("history-panel"),
    t: (key, params) => app.t(key, params),
    onContinue: (id) => {
      if (app.conn === "connecting" || app.conn === "connected") disconnect();
      app.continueId = id;
      onConnectClick();
    },
  });
  void app.history.refresh();
}

async function onSignIn(event) {
  event.preventDefault();
  const input = $("token-input");
  const message = $("signin-error");
  const token = input.value.trim();
  if (token === "") {
    message.textContent = app.t("login.empty");
    input.setAttribute("aria-invalid", "true");
    input.focus();
    return;
  }
  const submit = $("signin-submit");
  submit.disabled = true;
  submit.textContent = app.t("auth.signingIn");
  message.textContent = "";
  const result = await login(token);
  submit.disabled = false;
  submit.textContent = app.t("auth.submit");
  if (!result.ok) {
    const failure = describeLoginFailure(result.status, result.retryAfter);
    message.textContent = app.t(failure.key, failure.params);
    input.setAttribute("aria-invalid", "true");
    input.select();
    return;
  }
  input.value = "";
  input.removeAttribute("aria-invalid");
  // A "sign in again" message from a refused connection is resolved now.
  clearError();
  if (app.conn === "error") setConn("disconnected");
  const config = await fetchConfig();
  if (!config) {
    message.textContent = app.t("config.failed");
    return;
  }
  // Strangers are not told the server's session defaults; now that we are signed in, take them.
  app.settings = loadSettings(storage, config.session ?? {}, allVoices(config, VOICES));
  applyConfig(config);
  $("connect-btn").focus();
}

async function onSignOut() {
  disconnect();
  await logout();
  applyConfig(await fetchConfig());
}

// ---------------------------------------------------------------------------------------------------------------
// Connection

function setConn(state) {
  app.conn = state;
  renderStatus();
  renderMic();
}

function onConnectClick() {
  if (app.conn === "connecting" || app.conn === "connected") {
    disconnect();
    return;
  }
  clearError();
  let engine;
  try {
    // Synchronously inside the click: the only moment Safari and iOS allow audio to start.
    engine = AudioEngine.createInGesture();
  } catch (error) {
    fail(
      error instanceof AudioUnsupportedError
        ? { key: "audio.unsupported", params: {} }
        : { key: "audio.failed", params: { message: error.message } },
    );
    return;
  }
  void connect(engine);
}

async function connect(engine) {
  app.engine = engine;
  setConn("connecting");
  try {
    await engine.init();
  } catch (error) {
    if (app.engine === engine) {
      teardown();
      fail(
        error instanceof AudioOutputTimeoutError
          ? { key: "audio.noOutput", params: {} }
          : { key: "audio.failed", params: { message: error.message } },
      );
    }
    return;
  }
  if (app.engine !== engine) return; // disconnected meanwhile

  const rate = engine.sampleRate;
  Object.assign(debug, {
    captureFrames: 0,
    captureSamples: 0,
    captureRms: 0,
    lastClose: null,
    contextRate: rate,
    inputRate: rate,
    outputRate: rate,
    outputLatencyMs: engine.outputLatencyMs(),
  });
  const continueId = app.continueId;
  app.continueId = null;
  const url = realtimeUrl(window.location, rate, rate, app.provider?.name ?? null, continueId);
  const connection = new RelayConnection(url, {
    onEvent: (event) => {
      if (app.connection === connection) voice.handleServerEvent(event);
    },
    onClose: (info) => onClosed(connection, info),
  });
  app.connection = connection;
  debug.connection = connection.stats;

  const voice = new VoiceSession({
    send: (event) => connection.sendEvent(event),
    player: engine.playerApi(),
    debug,
    onChange: (what) => onVoiceChange(voice, what),
    onError: (error) => onErrorEvent(voice, error),
    truncate: canTruncate(app.provider),
  });
  app.voice = voice;
  renderChat(true);
  renderLatency();

  engine.onCaptureFrame = (frame) => {
    connection.sendAudio(frame.pcm);
    debug.captureFrames++;
    debug.captureSamples += frame.pcm.byteLength / 2;
    debug.captureRms = frame.rms;
    app.level = Math.max(app.level, frame.rms);
  };
  engine.onPlayerMessage = (message) => voice.handlePlayerMessage(message);
  startMeter();

  // Ask for the microphone while the socket opens: the permission prompt is the slow part.
  const mic = app.micWanted ? startMic() : Promise.resolve();
  try {
    await connection.open();
  } catch (info) {
    if (app.connection !== connection) return;
    debug.lastClose = { code: info.code, reason: info.reason, opened: false };
    teardown();
    const [config, readyStatus] = await Promise.all([fetchConfig(), fetchReadyStatus()]);
    const explanation = describeConnectFailure({ config, readyStatus });
    if (config) applyConfig(config);
    fail(explanation);
    if (explanation.key === "connect.signedOut") {
      $("signin-error").textContent = app.t(explanation.key, explanation.params);
    }
    return;
  }
  if (app.connection !== connection) return;
  sendSessionUpdate(undefined, app.settings);
  await mic;
}

async function startMic() {
  const engine = app.engine;
  if (!engine) return;
  try {
    await engine.startMic(captureConstraints(app.settings));
  } catch (error) {
    if (app.engine !== engine) return;
    app.micWanted = false;
    showError(describeMicFailure(error));
  }
  renderMic();
  renderStatus();
}

function onVoiceChange(voice, what) {
  if (app.voice !== voice) return;
  if (what === "session" && app.conn === "connecting") setConn("connected");
  if (what === "chat") renderChat();
  if (what === "latency") renderLatency();
  renderStatus();
}

function onErrorEvent(voice, error) {
  if (app.voice !== voice) return;
  showError(describeErrorEvent(error));
  if (isFatalErrorEvent(error)) setConn("error");
}

function onClosed(connection, info) {
  if (app.connection !== connection) return;
  debug.lastClose = { code: info.code, reason: info.reason, opened: true };
  teardown();
  const explanation = describeClose(info.code, { requestedByPage: info.requestedByPage });
  if (app.conn === "error" && app.error) {
    setConn("error"); // the error event before the close already said what happened
  } else if (explanation) {
    fail(explanation);
  } else {
    setConn("disconnected");
  }
}

function fail(message) {
  showError(message);
  setConn("error");
}

function disconnect() {
  const connection = app.connection;
  teardown();
  connection?.close();
  setConn("disconnected");
  // The conversation just ended is saved by now (or soon): show it in the list.
  if (app.history && !$("history-panel").hidden) setTimeout(() => void app.history.refresh(), 500);
}

/** Release the socket handlers, the microphone and the audio context; the chat log stays visible. */
function teardown() {
  const engine = app.engine;
  app.engine = null;
  app.connection = null;
  if (engine) void engine.close();
  app.level = 0;
  renderMic();
}

// ---------------------------------------------------------------------------------------------------------------
// Start-up

function bindEvents() {
  $("lang-select").addEventListener("change", (e) => setLanguage(e.target.value, true));
  $("settings-toggle").addEventListener("click", () => toggleSettings($("settings-panel").hidden));
  $("settings-close").addEventListener("click", () => toggleSettings(false));
  $("settings-panel").addEventListener("keydown", (e) => {
    if (e.key === "Escape") toggleSettings(false);
  });
  $("signin-form").addEventListener("submit", onSignIn);
  $("signout").addEventListener("click", () => void onSignOut());
  $("connect-btn").addEventListener("click", onConnectClick);
  $("mic-btn").addEventListener("click", () => {
    app.micWanted = !app.micWanted;
    if (app.engine) {
      if (app.micWanted) void startMic();
      else app.engine.stopMic();
    }
    renderMic();
    renderStatus();
  });
  $("error-dismiss").addEventListener("click", () => {
    clearError();
    if (app.conn === "error") setConn("disconnected");
    $("connect-btn").focus();
  });
  $("compose").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("compose-input");
    const text = input.value.trim();
    if (!text || !app.voice || app.conn !== "connected") return;
    input.value = "";
    void app.voice.sendText(text);
  });
  $("voice-select").addEventListener("change", (e) => updateSetting("voice", e.target.value));
  $("provider-select").addEventListener("change", (e) => onProviderChange(e.target.value));
  $("instructions-input").addEventListener("change", (e) => {
    const text = e.target.value;
    updateSetting("instructions", text === (app.config?.session?.instructions ?? "") ? null : text);
  });
  $("transcription-input").addEventListener("change", (e) => updateSetting("transcription", e.target.checked));
  $("echo-input").addEventListener("change", (e) => updateSetting("echoCancellation", e.target.checked));
  $("noise-input").addEventListener("change", (e) => updateSetting("noiseSuppression", e.target.checked));
  $("gain-input").addEventListener("change", (e) => updateSetting("autoGainControl", e.target.checked));
  window.addEventListener("pagehide", () => disconnect());
  // iOS suspends ("interrupted") the context for calls and other apps' audio; it may only resume on a gesture.
  for (const type of ["pointerdown", "keydown"]) {
    document.addEventListener(type, () => {
      const ctx = app.engine?.ctx;
      if (ctx && ctx.state !== "running" && ctx.state !== "closed") void ctx.resume();
    });
  }
}

async function start() {
  bindEvents();
  app.settings = loadSettings(storage);
  setLanguage(pickLanguage(navigator.languages ?? [navigator.language], loadStoredLanguage(storage)), false);
  const config = await fetchConfig();
  if (!config) {
    applyConfig({});
    fail({ key: "config.failed", params: {} });
    return;
  }
  app.settings = loadSettings(storage, config.session ?? {}, allVoices(config, VOICES));
  applyConfig(config);
}

void start();
