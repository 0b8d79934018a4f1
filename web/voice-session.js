// What the page does with the relay's server events: feed the player, barge in, keep the chat log and measure
// turn latency. No sockets and no audio nodes here: sending goes through `send`, playback through `player`, so the
// logic runs the same in the browser and in tests.

import { ChatLog } from "./chatlog.js";
import { base64ToBytes, LinearResampler, Pcm16Assembler } from "./pcm.js";

/**
 * player: {rate, push(itemId, Int16Array), end(itemId), flush() → Promise<{itemId: samples}>, outputLatencyMs()}
 * send(event): sends a client event to the relay.
 * debug: a plain object kept up to date for diagnostics (window.relayDebug).
 * truncate: whether barge-in tells the relay how much of the reply was heard (a provider may not support it).
 */
export class VoiceSession {
  constructor({
    send,
    player,
    debug = {},
    now = () => performance.now(),
    onChange = () => {},
    onError = () => {},
    truncate = true,
  }) {
    this.send = send;
    this.truncate = truncate;
    this.player = player;
    this.now = now;
    this.onChange = onChange;
    this.onError = onError;
    this.chat = new ChatLog();
    this.outputRate = player.rate; // what the relay delivers; corrected by session.created
    this.assemblers = new Map(); // itemId → Pcm16Assembler (a delta may split a sample)
    this.resamplers = new Map(); // itemId → LinearResampler, only if the relay ignored output_rate
    this.unplayed = new Set(); // items with audio queued in the player and not yet played out
    this.cancelled = new Set(); // items cut off by barge-in or cancel: late deltas are dropped
    this.responseActive = false;
    this.userSpeaking = false;
    // From the end of the user's turn until the reply's first audio (or its end, if it brings none).
    this.awaitingReply = false;
    this.playerState = "idle";
    this.turnStartedAt = null;
    this.debug = debug;
    Object.assign(debug, {
      playedSamplesByItem: {},
      playedMsByItem: {},
      receivedSamplesByItem: {},
      startedAtMs: {},
      bargeInAtMs: null,
      lastTruncate: null,
      truncates: [],
      turnLatenciesMs: [],
      bargeIns: 0,
      droppedStaleDeltas: 0,
      underruns: 0,
      starvedMs: 0,
      events: {},
      sessionInputRate: null,
      sessionOutputRate: null,
    });
  }

  /** Whether the assistant is audible or about to be (audio queued and not played out). */
  get assistantSpeaking() {
    return this.unplayed.size > 0;
  }

  /**
   * Where the user's turn stands, as the server sees it: "hearing" between its speech_started and speech_stopped,
   * "thinking" from the end of the turn until the reply's first audio, otherwise "idle".
   */
  get turn() {
    if (this.userSpeaking) return "hearing";
    return this.awaitingReply ? "thinking" : "idle";
  }

  /** Handle one parsed server event. */
  handleServerEvent(event) {
    const type = event?.type;
    if (typeof type !== "string") return;
    this.debug.events[type] = (this.debug.events[type] ?? 0) + 1;
    if (this.chat.apply(event)) this.onChange("chat");

    switch (type) {
      case "session.created":
      case "session.updated":
        this.#noteSession(event);
        break;
      case "input_audio_buffer.speech_started":
        this.userSpeaking = true;
        this.awaitingReply = false;
        if (this.assistantSpeaking) void this.bargeIn();
        this.onChange("user");
        break;
      case "input_audio_buffer.speech_stopped":
        this.userSpeaking = false;
        this.awaitingReply = true;
        this.turnStartedAt = this.now();
        this.onChange("user");
        break;
      case "response.created":
        this.responseActive = true;
        break;
      case "response.output_audio.delta":
        this.#audioDelta(event);
        break;
      case "response.output_audio.done":
        if (!this.cancelled.has(event.item_id)) this.player.end(event.item_id);
        break;
      case "response.done":
        this.#responseDone(event.response);
        break;
      case "error":
        this.#replyArrived();
        this.onError(event.error ?? {});
        break;
      default:
        break;
    }
  }

  /** Handle a message from the player worklet. */
  handlePlayerMessage(msg) {
    switch (msg?.type) {
      case "progress":
        this.#noteProgress(msg);
        this.#setPlayerState(msg.state);
        break;
      case "flushed":
        this.#noteProgress(msg);
        break;
      case "started":
        this.debug.startedAtMs[msg.itemId] = this.now();
        this.#setPlayerState("playing");
        if (this.turnStartedAt !== null && !this.cancelled.has(msg.itemId)) {
          const latency = this.now() - this.turnStartedAt + this.player.outputLatencyMs();
          this.debug.turnLatenciesMs.push(Math.round(latency));
          this.turnStartedAt = null;
          this.onChange("latency");
        }
        break;
      case "underrun":
        this.debug.underruns++;
        this.#setPlayerState("buffering");
        break;
      case "drained":
        this.unplayed.clear();
        this.#setPlayerState("idle");
        break;
      default:
        break;
    }
  }

  /**
   * Stop the assistant at once and tell the server how much of each cut-off item the user actually heard, so the
   * conversation history matches what was heard.
   */
  async bargeIn() {
    const items = [...this.unplayed];
    if (items.length === 0) return;
    for (const itemId of items) this.cancelled.add(itemId);
    this.unplayed.clear();
    this.debug.bargeIns++;
    this.debug.bargeInAtMs = this.now();
    this.debug.outputLatencyMs = this.player.outputLatencyMs();
    const played = await this.player.flush();
    for (const itemId of items) {
      const samples = played[itemId] ?? this.debug.playedSamplesByItem[itemId] ?? 0;
      this.#notePlayed(itemId, samples);
      // Round down: claiming more than was heard is an error for audio_end_ms past the item's end.
      const audioEndMs = Math.floor((samples * 1000) / this.player.rate);
      if (this.truncate) {
        this.send({ type: "conversation.item.truncate", item_id: itemId, content_index: 0, audio_end_ms: audioEndMs });
      }
      const record = { itemId, audioEndMs, playedSamples: samples, rate: this.player.rate };
      this.debug.lastTruncate = record;
      this.debug.truncates.push(record);
      this.chat.markInterrupted(itemId);
    }
    this.#setPlayerState("idle");
    this.onChange("chat");
  }

  /**
   * A typed message: interrupt whatever is playing or being generated, add the user's message, ask for a reply,
   * and start the latency clock (the "end of speech" of a manual turn is the moment of sending).
   */
  async sendText(text) {
    await this.bargeIn();
    if (this.responseActive) this.send({ type: "response.cancel" });
    this.send({
      type: "conversation.item.create",
      item: { type: "message", role: "user", content: [{ type: "input_text", text }] },
    });
    this.send({ type: "response.create" });
    this.turnStartedAt = this.now();
    this.awaitingReply = true;
    this.onChange("user");
  }

  // The relay tells the client its own PCM rates in its `relay` field; the spec's `format.rate` stays the API's
  // 24000 (what the SDK's types allow), so it is only the fallback for a server that does not convert.
  #noteSession(event) {
    const session = event?.session;
    const inputRate = event?.relay?.input_rate ?? session?.audio?.input?.format?.rate;
    const outputRate = event?.relay?.output_rate ?? session?.audio?.output?.format?.rate;
    if (Number.isFinite(inputRate)) this.debug.sessionInputRate = inputRate;
    if (Number.isFinite(outputRate)) {
      this.debug.sessionOutputRate = outputRate;
      this.outputRate = outputRate;
    }
    this.onChange("session");
  }

  #audioDelta(event) {
    const itemId = event.item_id;
    if (!itemId || typeof event.delta !== "string") return;
    if (this.cancelled.has(itemId)) {
      this.debug.droppedStaleDeltas++;
      return;
    }
    let assembler = this.assemblers.get(itemId);
    if (!assembler) {
      assembler = new Pcm16Assembler();
      this.assemblers.set(itemId, assembler);
    }
    let pcm = assembler.push(base64ToBytes(event.delta));
    if (this.outputRate !== this.player.rate) {
      let resampler = this.resamplers.get(itemId);
      if (!resampler) {
        resampler = new LinearResampler(this.outputRate, this.player.rate);
        this.resamplers.set(itemId, resampler);
      }
      pcm = resampler.push(pcm);
    }
    if (pcm.length === 0) return;
    this.debug.receivedSamplesByItem[itemId] = (this.debug.receivedSamplesByItem[itemId] ?? 0) + pcm.length;
    this.unplayed.add(itemId);
    this.player.push(itemId, pcm);
    this.#replyArrived();
    if (this.playerState === "idle") this.#setPlayerState("buffering");
  }

  #responseDone(response) {
    this.responseActive = false;
    const cancelled = response?.status === "cancelled";
    // A cancelled response is the one the new turn replaced; the reply to that turn is still to come.
    if (!cancelled) this.#replyArrived();
    for (const item of response?.output ?? []) {
      if (!item?.id) continue;
      this.assemblers.delete(item.id);
      this.resamplers.delete(item.id);
      // Whatever audio arrived is all there will be: let the player play out the tail instead of waiting.
      this.player.end(item.id);
      if (cancelled) this.cancelled.add(item.id);
    }
  }

  #replyArrived() {
    if (!this.awaitingReply) return;
    this.awaitingReply = false;
    this.onChange("user");
  }

  #noteProgress(msg) {
    for (const [itemId, samples] of Object.entries(msg.played ?? {})) this.#notePlayed(itemId, samples);
    if (Number.isFinite(msg.starved)) this.debug.starvedMs = (msg.starved * 1000) / this.player.rate;
  }

  #notePlayed(itemId, samples) {
    this.debug.playedSamplesByItem[itemId] = samples;
    this.debug.playedMsByItem[itemId] = (samples * 1000) / this.player.rate;
  }

  #setPlayerState(state) {
    if (!state || state === this.playerState) return;
    this.playerState = state;
    this.onChange("player");
  }
}
