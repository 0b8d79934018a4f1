// The page's audio I/O: one AudioContext at the device's native rate, the capture worklet fed by the microphone,
// and the player worklet feeding the speakers.
//
// The context is never created at 24 kHz: some browsers then capture silence. The relay resamples instead.

const FLUSH_TIMEOUT_MS = 250;
// Without a working sound output some browsers (Firefox) never settle resume(); say so instead of waiting forever.
const RESUME_TIMEOUT_MS = 5000;

export class AudioOutputTimeoutError extends Error {
  constructor() {
    super("the audio output did not start");
    this.name = "AudioOutputTimeoutError";
  }
}

export class AudioUnsupportedError extends Error {
  constructor() {
    super("AudioWorklet is not available");
    this.name = "AudioUnsupportedError";
  }
}

export class AudioEngine {
  /**
   * Create the context. Call this synchronously inside the user's click handler: Safari and iOS only let audio
   * start from a user gesture, and the resume() must begin there too.
   */
  static createInGesture() {
    const Context = globalThis.AudioContext ?? globalThis.webkitAudioContext;
    if (!Context) throw new AudioUnsupportedError();
    const ctx = new Context({ latencyHint: "interactive" });
    if (!ctx.audioWorklet) {
      void ctx.close();
      throw new AudioUnsupportedError();
    }
    const resumed = ctx.resume();
    return new AudioEngine(ctx, resumed);
  }

  constructor(ctx, resumed) {
    this.ctx = ctx;
    this.resumed = resumed;
    this.stream = null;
    this.source = null;
    this.capture = null;
    this.player = null;
    this.flushes = new Map();
    this.nextFlushId = 1;
    this.lastPlayed = {};
    this.onCaptureFrame = () => {};
    this.onPlayerMessage = () => {};
  }

  get sampleRate() {
    return this.ctx.sampleRate;
  }

  /** Load both worklets and build the fixed part of the graph. */
  async init() {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new AudioOutputTimeoutError()), RESUME_TIMEOUT_MS);
    });
    try {
      await Promise.race([this.resumed, timeout]);
    } finally {
      clearTimeout(timer);
    }
    const base = new URL("./worklets/", import.meta.url);
    await this.ctx.audioWorklet.addModule(new URL("capture.js", base));
    await this.ctx.audioWorklet.addModule(new URL("player.js", base));

    this.capture = new AudioWorkletNode(this.ctx, "relay-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { frameMs: 20 },
    });
    this.capture.port.onmessage = (event) => {
      if (event.data?.type === "frame") this.onCaptureFrame(event.data);
    };
    // A silent path to the destination keeps the capture node pulled on every browser.
    const mute = new GainNode(this.ctx, { gain: 0 });
    this.capture.connect(mute).connect(this.ctx.destination);

    this.player = new AudioWorkletNode(this.ctx, "relay-player", {
      numberOfInputs: 0,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { prebufferMs: 60, fadeMs: 8, reportMs: 20 },
    });
    this.player.port.onmessage = (event) => this.#playerMessage(event.data);
    this.player.connect(this.ctx.destination);
  }

  /** Open the microphone with the given audio constraints and start feeding the capture worklet. */
  async startMic(constraints) {
    if (!navigator.mediaDevices?.getUserMedia) {
      const error = new Error("getUserMedia unavailable");
      error.name = globalThis.isSecureContext === false ? "InsecureContext" : "NotFoundError";
      throw error;
    }
    this.stopMic();
    const stream = await navigator.mediaDevices.getUserMedia({ audio: constraints, video: false });
    // The user may have disconnected while the permission prompt was open.
    if (this.ctx.state === "closed") {
      for (const track of stream.getTracks()) track.stop();
      return;
    }
    this.stream = stream;
    this.source = this.ctx.createMediaStreamSource(stream);
    this.source.connect(this.capture);
    // iOS can suspend the context when the audio session changes for recording.
    if (this.ctx.state !== "running") await this.ctx.resume();
  }

  /** Stop the microphone: release the device (the browser's recording indicator goes off) and send the last bit. */
  stopMic() {
    if (this.source) {
      this.source.disconnect();
      this.source = null;
      this.capture?.port.postMessage({ type: "flush" });
    }
    if (this.stream) {
      for (const track of this.stream.getTracks()) track.stop();
      this.stream = null;
    }
  }

  get micOn() {
    return this.stream !== null;
  }

  /** The player as VoiceSession sees it. */
  playerApi() {
    return {
      rate: this.ctx.sampleRate,
      push: (itemId, pcm) => this.player.port.postMessage({ type: "push", itemId, pcm: pcm.buffer }, [pcm.buffer]),
      end: (itemId) => this.player.port.postMessage({ type: "end", itemId }),
      flush: () => this.#flush(),
      outputLatencyMs: () => this.outputLatencyMs(),
    };
  }

  /**
   * How long a rendered sample takes to reach the speaker: the context's own processing latency plus the device's
   * output latency (each 0 where a browser does not report it).
   */
  outputLatencyMs() {
    return 1000 * ((this.ctx.baseLatency || 0) + (this.ctx.outputLatency || 0));
  }

  /** Drop all queued playback at once (disconnect). */
  resetPlayer() {
    this.player?.port.postMessage({ type: "reset" });
  }

  async close() {
    this.stopMic();
    for (const resolve of this.flushes.values()) resolve({ ...this.lastPlayed });
    this.flushes.clear();
    if (this.ctx.state !== "closed") await this.ctx.close();
  }

  /** Ask the player to fade out and drop everything; resolves with the samples played per item. */
  #flush() {
    const id = this.nextFlushId++;
    return new Promise((resolve) => {
      this.flushes.set(id, resolve);
      this.player.port.postMessage({ type: "flush", id });
      // A suspended context never renders, so never answers: fall back to the last reported figures.
      setTimeout(() => {
        if (this.flushes.delete(id)) resolve({ ...this.lastPlayed });
      }, FLUSH_TIMEOUT_MS);
    });
  }

  #playerMessage(msg) {
    if (msg?.type === "progress") Object.assign(this.lastPlayed, msg.played);
    if (msg?.type === "flushed") {
      Object.assign(this.lastPlayed, msg.played);
      const resolve = this.flushes.get(msg.id);
      if (resolve) {
        this.flushes.delete(msg.id);
        resolve(msg.played);
      }
    }
    this.onPlayerMessage(msg);
  }
}
