// The upstream providers the relay offers (from /api/config), which one the user chose, and what it allows.

const STORAGE_KEY = "relay.provider";

/** The providers /api/config lists for a signed-in user ([] for strangers, or a relay without profiles). */
export function providersOf(config) {
  const list = Array.isArray(config?.providers) ? config.providers : [];
  return list.filter((p) => p && typeof p.name === "string" && Array.isArray(p.models));
}

/** The remembered provider if still offered, else the relay's default, else the first (null if none). */
export function chooseProvider(config, storage) {
  const list = providersOf(config);
  let stored = null;
  try {
    stored = storage?.getItem(STORAGE_KEY) ?? null;
  } catch {
    stored = null;
  }
  return (
    list.find((p) => p.name === stored) ?? list.find((p) => p.name === config?.provider) ?? list[0] ?? null
  );
}

/** Remember the choice; failing to store it only means it is not remembered. */
export function rememberProvider(storage, name) {
  try {
    storage?.setItem(STORAGE_KEY, name);
  } catch {
    /* not remembered */
  }
}

/** The voices a provider offers (the OpenAI list when the relay names none). */
export function voicesFor(provider, fallback) {
  return Array.isArray(provider?.voices) && provider.voices.length > 0 ? provider.voices : fallback;
}

/** `wanted` if the provider has that voice, else the provider's own default, else its first. */
export function voiceFor(provider, wanted, fallback) {
  const voices = voicesFor(provider, fallback);
  if (voices.includes(wanted)) return wanted;
  return voices.includes(provider?.voice) ? provider.voice : voices[0];
}

/** Every voice any provider offers (what a remembered voice may be). */
export function allVoices(config, fallback) {
  return [...new Set([...fallback, ...providersOf(config).flatMap((p) => p.voices ?? [])])];
}

/**
 * Whether the provider keeps a truncated reply as heard: Gemini Live cannot truncate, so the page does not ask
 * (the relay would refuse it); barge-in still stops playback at once.
 */
export function canTruncate(provider) {
  return provider?.can_truncate !== false;
}
