// Capture worklet: turns the microphone's float32 samples (at the AudioContext's own rate) into PCM16LE frames of
// at most `frameMs` and hands them to the main thread, which sends each one as a binary WebSocket frame.
//
// Loaded with audioWorklet.addModule(); also importable by tests, so the audio-thread globals are guarded.

/** Converts a float32 sample in [-1, 1] to int16, clamping out-of-range input instead of wrapping. */
export function floatToInt16(x) {
  const s = x > 1 ? 1 : x < -1 ? -1 : x;
  return s < 0 ? Math.round(s * 0x8000) : Math.round(s * 0x7fff);
}

/**
 * Collects samples into fixed-size int16 frames and measures each frame's peak and RMS level for the meter.
 * Returns completed frames from push(); a frame's buffer is handed over (transferred), never reused.
 */
export class Pcm16Framer {
  constructor(frameSamples) {
    if (!(frameSamples > 0)) throw new RangeError("frameSamples must be positive");
    this.frameSamples = frameSamples;
    this.#reset();
  }

  /** Append one block of float32 samples; returns the frames completed by it. */
  push(samples) {
    const done = [];
    for (let i = 0; i < samples.length; i++) {
      const x = samples[i];
      const a = x < 0 ? -x : x;
      if (a > this.peak) this.peak = a;
      this.sumSquares += x * x;
      this.frame[this.fill++] = floatToInt16(x);
      if (this.fill === this.frameSamples) {
        done.push(this.#take(this.fill));
      }
    }
    return done;
  }

  /** Hand over a partly filled frame (when the microphone stops), or null if there is none. */
  flush() {
    return this.fill > 0 ? this.#take(this.fill) : null;
  }

  #take(count) {
    const pcm = count === this.frameSamples ? this.frame : this.frame.slice(0, count);
    const result = { pcm, peak: this.peak, rms: Math.sqrt(this.sumSquares / count) };
    this.#reset();
    return result;
  }

  #reset() {
    this.frame = new Int16Array(this.frameSamples);
    this.fill = 0;
    this.peak = 0;
    this.sumSquares = 0;
  }
}

/** Number of samples in a frame of `frameMs` at `rate`, never more than frameMs long. */
export function frameSamplesFor(rate, frameMs) {
  return Math.max(1, Math.floor((rate * frameMs) / 1000));
}

const Base = globalThis.AudioWorkletProcessor ?? class {};

class CaptureProcessor extends Base {
  constructor(options) {
    super();
    const frameMs = options?.processorOptions?.frameMs ?? 20;
    // `sampleRate` is the AudioWorkletGlobalScope's rate, i.e. the AudioContext's native rate.
    this.framer = new Pcm16Framer(frameSamplesFor(sampleRate, frameMs));
    this.mix = null;
    this.port.onmessage = (event) => {
      if (event.data?.type === "flush") {
        const frame = this.framer.flush();
        if (frame) this.#post(frame);
      }
    };
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    let mono = channels[0];
    if (channels.length > 1) {
      // Some devices deliver stereo even when asked for mono: average the channels.
      if (!this.mix || this.mix.length !== mono.length) this.mix = new Float32Array(mono.length);
      this.mix.fill(0);
      for (const channel of channels) {
        for (let i = 0; i < channel.length; i++) this.mix[i] += channel[i] / channels.length;
      }
      mono = this.mix;
    }
    for (const frame of this.framer.push(mono)) this.#post(frame);
    return true;
  }

  #post(frame) {
    this.port.postMessage(
      { type: "frame", pcm: frame.pcm.buffer, peak: frame.peak, rms: frame.rms },
      [frame.pcm.buffer],
    );
  }
}

if (typeof registerProcessor === "function") registerProcessor("relay-capture", CaptureProcessor);
