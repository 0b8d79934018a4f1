// Playback worklet: plays the assistant's PCM16 audio at the AudioContext's own rate from a continuous ring buffer,
// with a small jitter buffer, and reports how many samples of each assistant item were actually played.
//
// Messages in:  {type:"push", itemId, pcm: ArrayBuffer (Int16)}   queue audio of an item
//               {type:"end", itemId}                               no more audio for that item: play out its tail
//               {type:"flush", id}                                 barge-in/stop: short fade, then drop everything
//               {type:"reset"}                                     drop everything at once (disconnect)
// Messages out: {type:"started", itemId, frame}      first sample of an item rendered (context frame number)
//               {type:"progress", played, buffered, state}  played = {itemId: samples played so far}, changed items only
//               {type:"underrun"} {type:"drained"}  {type:"flushed", id, played, starved}
//
// Loaded with audioWorklet.addModule(); also importable by tests, so the audio-thread globals are guarded.

/** A growable FIFO of float32 samples in one ring, so consecutive deltas play back to back without seams. */
export class SampleRing {
  constructor(capacity = 16384) {
    this.buffer = new Float32Array(capacity);
    this.start = 0;
    this.size = 0;
  }

  /** Append int16 samples, converted to float32; grows (doubling) instead of ever dropping audio. */
  writeInt16(samples) {
    this.#reserve(samples.length);
    const cap = this.buffer.length;
    let at = (this.start + this.size) % cap;
    for (let i = 0; i < samples.length; i++) {
      this.buffer[at] = samples[i] / 32768;
      at = at + 1 === cap ? 0 : at + 1;
    }
    this.size += samples.length;
  }

  /** Move `count` samples into out[offset…], scaling each by gain(i) if given. */
  readInto(out, offset, count, gain) {
    const cap = this.buffer.length;
    for (let i = 0; i < count; i++) {
      const x = this.buffer[this.start];
      out[offset + i] = gain ? x * gain(i) : x;
      this.start = this.start + 1 === cap ? 0 : this.start + 1;
    }
    this.size -= count;
  }

  clear() {
    this.start = 0;
    this.size = 0;
  }

  #reserve(extra) {
    if (this.size + extra <= this.buffer.length) return;
    let cap = this.buffer.length;
    while (cap < this.size + extra) cap *= 2;
    const next = new Float32Array(cap);
    const first = Math.min(this.size, this.buffer.length - this.start);
    next.set(this.buffer.subarray(this.start, this.start + first), 0);
    next.set(this.buffer.subarray(0, this.size - first), first);
    this.buffer = next;
    this.start = 0;
  }
}

/**
 * The player's logic, free of the audio thread: states idle → buffering → playing, with re-buffering on underrun
 * and a fade-out on flush. render() fills one output block and returns the messages to post.
 */
export class PlayerCore {
  constructor(rate, { prebufferMs = 60, fadeMs = 8, reportMs = 20 } = {}) {
    this.rate = rate;
    this.prebuffer = Math.round((rate * prebufferMs) / 1000);
    this.fadeSamples = Math.max(1, Math.round((rate * fadeMs) / 1000));
    this.reportEvery = Math.max(1, Math.round((rate * reportMs) / 1000));
    this.ring = new SampleRing();
    this.segments = []; // [{itemId, remaining}] in ring order
    this.lastItem = null; // the item of the newest queued audio
    this.played = new Map(); // itemId → samples rendered
    this.ended = new Set(); // items whose audio is complete
    this.dropped = new Set(); // flushed items: late audio for them is ignored
    this.startedItems = new Set();
    this.dirty = new Set();
    this.state = "idle";
    this.fade = null; // {remaining, total, id} while fading out before a flush
    this.sinceReport = 0;
    this.underruns = 0;
    this.starving = false; // inside an underrun: the reply has begun and more of it is awaited
    this.starved = 0; // silent samples output during underruns (a listener hears these as a gap)
  }

  push(itemId, int16) {
    if (this.dropped.has(itemId) || int16.length === 0) return;
    this.ring.writeInt16(int16);
    const last = this.segments[this.segments.length - 1];
    if (last && last.itemId === itemId) last.remaining += int16.length;
    else this.segments.push({ itemId, remaining: int16.length });
    this.lastItem = itemId;
    if (this.state === "idle") this.state = "buffering";
  }

  end(itemId) {
    this.ended.add(itemId);
  }

  /** Start a flush; it completes (with a "flushed" message) after the fade, within one or two blocks. */
  flush(id) {
    if (this.fade) {
      // Already fading out: answer this request together with the running one.
      this.fade.ids.push(id);
      return;
    }
    const items = [...new Set(this.segments.map((segment) => segment.itemId))];
    for (const itemId of items) this.dropped.add(itemId);
    const total = this.state === "playing" ? Math.min(this.fadeSamples, this.ring.size) : 0;
    this.fade = { remaining: total, total, ids: [id], items };
  }

  reset() {
    for (const segment of this.segments) this.dropped.add(segment.itemId);
    this.ring.clear();
    this.segments = [];
    this.lastItem = null;
    this.fade = null;
    this.state = "idle";
  }

  /** Fill `out` (one render quantum); `frame` is the context frame of out[0]. Returns messages to post. */
  render(out, frame = 0) {
    const messages = [];
    let written = 0;
    if (this.fade) {
      const fade = this.fade;
      const count = Math.min(out.length, fade.remaining, this.ring.size);
      const from = fade.remaining;
      this.ring.readInto(out, 0, count, (i) => (from - i) / (fade.total + 1));
      this.#account(count, frame, messages);
      fade.remaining -= count;
      written = count;
      if (fade.remaining === 0 || this.ring.size === 0) {
        const played = {};
        for (const itemId of fade.items) played[itemId] = this.played.get(itemId) ?? 0;
        this.ring.clear();
        this.segments = [];
        this.lastItem = null;
        this.fade = null;
        this.state = "idle";
        for (const id of fade.ids) messages.push({ type: "flushed", id, played, starved: this.starved });
      }
    } else {
      if (this.state === "buffering" && (this.ring.size >= this.prebuffer || this.#tailComplete())) {
        this.state = "playing";
      }
      if (this.state === "playing") {
        const count = Math.min(out.length, this.ring.size);
        this.ring.readInto(out, 0, count);
        this.#account(count, frame, messages);
        written = count;
        if (this.ring.size === 0) {
          if (this.#tailComplete()) {
            this.state = "idle";
            messages.push({ type: "drained" });
          } else {
            this.state = "buffering";
            this.underruns++;
            this.starving = true;
            messages.push({ type: "underrun" });
          }
        }
      } else if (this.state === "buffering" && this.ring.size === 0 && this.#tailComplete()) {
        this.state = "idle";
      }
    }
    out.fill(0, written);
    if (this.starving && this.state === "buffering") this.starved += out.length - written;
    if (this.state !== "buffering") this.starving = false;
    this.sinceReport += out.length;
    if (this.dirty.size > 0 && (this.sinceReport >= this.reportEvery || this.state !== "playing")) {
      messages.push(this.#progress());
    }
    return messages;
  }

  /** Whether the newest item's audio is complete, so there is nothing more to wait for. */
  #tailComplete() {
    return this.lastItem === null || this.ended.has(this.lastItem);
  }

  #account(count, frame, messages) {
    let left = count;
    let offset = 0;
    while (left > 0 && this.segments.length > 0) {
      const segment = this.segments[0];
      const take = Math.min(left, segment.remaining);
      if (!this.startedItems.has(segment.itemId)) {
        this.startedItems.add(segment.itemId);
        messages.push({ type: "started", itemId: segment.itemId, frame: frame + offset });
      }
      this.played.set(segment.itemId, (this.played.get(segment.itemId) ?? 0) + take);
      this.dirty.add(segment.itemId);
      segment.remaining -= take;
      if (segment.remaining === 0) this.segments.shift();
      left -= take;
      offset += take;
    }
  }

  #progress() {
    const played = {};
    for (const itemId of this.dirty) played[itemId] = this.played.get(itemId);
    this.dirty.clear();
    this.sinceReport = 0;
    return { type: "progress", played, buffered: this.ring.size, state: this.state, starved: this.starved };
  }
}

const Base = globalThis.AudioWorkletProcessor ?? class {};

class PlayerProcessor extends Base {
  constructor(options) {
    super();
    // `sampleRate` is the AudioWorkletGlobalScope's rate: the context's native rate, which the relay delivers.
    this.core = new PlayerCore(sampleRate, options?.processorOptions ?? {});
    this.port.onmessage = (event) => {
      const msg = event.data;
      switch (msg?.type) {
        case "push":
          this.core.push(msg.itemId, new Int16Array(msg.pcm));
          break;
        case "end":
          this.core.end(msg.itemId);
          break;
        case "flush":
          this.core.flush(msg.id);
          break;
        case "reset":
          this.core.reset();
          break;
        default:
          break;
      }
    };
  }

  process(_inputs, outputs) {
    const output = outputs[0];
    const messages = this.core.render(output[0], currentFrame);
    for (let c = 1; c < output.length; c++) output[c].set(output[0]);
    for (const message of messages) this.port.postMessage(message);
    return true;
  }
}

if (typeof registerProcessor === "function") registerProcessor("relay-player", PlayerProcessor);
