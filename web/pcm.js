// PCM16LE helpers for the main thread. Int16Array views use the platform's byte order, which is little-endian on
// every platform browsers ship on, so PCM16LE bytes can be viewed directly.

/** Decode base64 into bytes (Uint8Array.fromBase64 where available, atob otherwise). */
export function base64ToBytes(text) {
  if (typeof Uint8Array.fromBase64 === "function") return Uint8Array.fromBase64(text);
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/**
 * Turns a stream of PCM16LE byte chunks into Int16Array chunks. A chunk with an odd number of bytes keeps its last
 * byte for the next one instead of shifting every later sample by a byte.
 */
export class Pcm16Assembler {
  constructor() {
    this.carry = null;
  }

  /** Append bytes; returns the whole samples now available (possibly empty). */
  push(bytes) {
    let data = bytes;
    if (this.carry !== null) {
      data = new Uint8Array(bytes.length + 1);
      data[0] = this.carry;
      data.set(bytes, 1);
      this.carry = null;
    }
    const whole = data.length & ~1;
    if (whole !== data.length) this.carry = data[data.length - 1];
    // Copy into a fresh, aligned buffer: the result is transferred to the audio thread.
    const samples = new Int16Array(whole / 2);
    new Uint8Array(samples.buffer).set(data.subarray(0, whole));
    return samples;
  }

  reset() {
    this.carry = null;
  }
}

/**
 * A streaming linear-interpolation resampler for Int16 audio, used only if the relay did not deliver output at the
 * rate the page asked for. State carries across chunks so the seams are continuous.
 */
export class LinearResampler {
  constructor(fromRate, toRate) {
    this.step = fromRate / toRate;
    this.position = 0;
    this.previous = null;
  }

  /** Resample one chunk; returns an Int16Array at the target rate. */
  push(input) {
    if (input.length === 0) return new Int16Array(0);
    // Prepend the previous chunk's last sample so that interpolation across the seam works; `position` is
    // measured from that sample.
    const src = this.previous === null ? input : prepend(this.previous, input);
    const last = src.length - 1;
    const out = [];
    let pos = this.position;
    while (pos <= last) {
      const i = Math.floor(pos);
      const frac = pos - i;
      const a = src[i];
      const b = i < last ? src[i + 1] : a;
      out.push(Math.round(a + (b - a) * frac));
      pos += this.step;
    }
    this.position = pos - last;
    this.previous = src[last];
    return Int16Array.from(out);
  }
}

function prepend(sample, input) {
  const out = new Int16Array(input.length + 1);
  out[0] = sample;
  out.set(input, 1);
  return out;
}
