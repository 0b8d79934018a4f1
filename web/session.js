// The user's settings, how they are remembered, and the session.update event they become.

export const VOICES = ["alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"];
export const TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe";
const STORAGE_KEY = "relay.settings";

/** Settings fields that go to the relay, each with the dotted session paths a server may use to lock it. */
const LOCK_NAMES = {
  voice: ["voice", "audio.output.voice", "audio.output", "audio"],
  instructions: ["instructions"],
  transcription: ["transcription", "input_audio_transcription", "audio.input.transcription", "audio.input", "audio"],
};

export const SESSION_FIELDS = Object.keys(LOCK_NAMES);

/**
 * Defaults: the server's voice, the server's instructions (null = don't send any), transcription of the user's
 * speech on, and the browser's own echo cancellation, noise suppression and gain control on.
 */
export function defaultSettings(serverSession = {}) {
  return {
    voice: VOICES.includes(serverSession.voice) ? serverSession.voice : "marin",
    instructions: null,
    transcription: true,
    echoCancellation: true,
    noiseSuppression: true,
    autoGainControl: true,
  };
}

/** Whether the server locks a settings field (`locked_fields` from /api/config). */
export function isLocked(field, lockedFields = []) {
  const names = LOCK_NAMES[field] ?? [field];
  return names.some((name) => lockedFields.includes(name));
}

/** Merge remembered settings over the defaults, ignoring anything malformed (or a voice not in `voices`). */
export function loadSettings(storage, serverSession = {}, voices = VOICES) {
  const settings = defaultSettings(serverSession);
  let stored = null;
  try {
    stored = JSON.parse(storage?.getItem(STORAGE_KEY) ?? "null");
  } catch {
    stored = null;
  }
  if (stored && typeof stored === "object") {
    if (voices.includes(stored.voice)) settings.voice = stored.voice;
    if (typeof stored.instructions === "string") settings.instructions = stored.instructions;
    for (const flag of ["transcription", "echoCancellation", "noiseSuppression", "autoGainControl"]) {
      if (typeof stored[flag] === "boolean") settings[flag] = stored[flag];
    }
  }
  return settings;
}

/** Remember the settings; failing to store them only means they are not remembered. */
export function saveSettings(storage, settings) {
  try {
    storage?.setItem(STORAGE_KEY, JSON.stringify(settings));
  } catch {
    /* not remembered */
  }
}

/**
 * Build the `session.update` for the given fields (all by default), leaving out fields the server locks, and
 * instructions the user never customised (so the server's default, which answers in the user's language, stays).
 * Returns null when nothing is left to send.
 */
export function buildSessionUpdate(settings, { lockedFields = [], fields = SESSION_FIELDS } = {}) {
  const session = { type: "realtime" };
  let any = false;
  const wanted = (field) => fields.includes(field) && !isLocked(field, lockedFields);

  if (wanted("instructions") && typeof settings.instructions === "string") {
    session.instructions = settings.instructions;
    any = true;
  }
  if (wanted("voice") || wanted("transcription")) {
    session.audio = {};
    if (wanted("transcription")) {
      session.audio.input = { transcription: settings.transcription ? { model: TRANSCRIPTION_MODEL } : null };
      any = true;
    }
    if (wanted("voice")) {
      session.audio.output = { voice: settings.voice };
      any = true;
    }
  }
  return any ? { type: "session.update", session } : null;
}

/** The getUserMedia audio constraints for the capture toggles. Mono: the relay wants one channel. */
export function captureConstraints(settings) {
  return {
    echoCancellation: settings.echoCancellation,
    noiseSuppression: settings.noiseSuppression,
    autoGainControl: settings.autoGainControl,
    channelCount: { ideal: 1 },
  };
}

/**
 * The relay WebSocket URL on this page's origin, declaring the capture rate and asking for output at `outputRate`,
 * naming the chosen provider when there is one; `continueId` seeds the new session with a saved conversation.
 */
export function realtimeUrl(location, inputRate, outputRate, provider = null, continueId = null) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = new URLSearchParams({ input_rate: String(inputRate), output_rate: String(outputRate) });
  if (provider) query.set("provider", provider);
  if (continueId) query.set("continue", continueId);
  return `${scheme}//${location.host}/v1/realtime?${query}`;
}
