// The conversation as a list of lines ordered by conversation item, not by the order events happen to arrive in.
//
// The server tells where each item sits (`previous_item_id` in conversation.item.added and
// input_audio_buffer.committed); text for an item can arrive before or long after that (the user's transcript is
// produced asynchronously, often after the assistant has started answering). Lines are keyed by item id, placed
// provisionally at the end when first seen, and moved once the server says where they belong.

/** Results up to this many characters are shown on a tool line; longer ones only say the call is done. */
export const SHORT_RESULT = 80;

/**
 * One line: {itemId, role: "user"|"assistant"|"tool", text, done, status: "pending"|"final"|"failed", interrupted}.
 * A tool line (a call the relay ran itself, marked `relay.server_tool`) also has `name` and `tool`:
 * "running"|"done"|"failed", and `text` holds the result when it is short.
 */
export class ChatLog {
  constructor() {
    this.lines = new Map();
    this.order = [];
    this.version = 0;
  }

  /** Lines in conversation order. */
  entries() {
    return this.order.map((id) => this.lines.get(id));
  }

  /** Apply one server event; returns true if the visible log changed. */
  apply(event) {
    const before = this.version;
    switch (event.type) {
      case "input_audio_buffer.committed":
        this.#place(event.item_id, event.previous_item_id, "user");
        break;
      case "conversation.item.added":
      case "conversation.item.created":
        if (event.relay?.server_tool) this.#serverTool(event.item, event.previous_item_id);
        else this.#addItem(event.item, event.previous_item_id);
        break;
      case "conversation.item.done":
        if (event.relay?.server_tool) this.#serverTool(event.item, event.previous_item_id);
        break;
      case "response.output_item.added":
        if (event.item?.type === "message") this.#ensure(event.item.id, event.item.role ?? "assistant");
        break;
      case "conversation.item.input_audio_transcription.delta":
        this.#appendDelta(event.item_id, "user", event.delta);
        break;
      case "conversation.item.input_audio_transcription.completed":
        this.#setFinal(event.item_id, "user", event.transcript);
        break;
      case "conversation.item.input_audio_transcription.failed":
        this.#markFailed(event.item_id);
        break;
      case "response.output_audio_transcript.delta":
      case "response.output_text.delta":
        this.#appendDelta(event.item_id, "assistant", event.delta);
        break;
      case "response.output_audio_transcript.done":
        this.#setFinal(event.item_id, "assistant", event.transcript);
        break;
      case "response.output_text.done":
        this.#setFinal(event.item_id, "assistant", event.text);
        break;
      case "conversation.item.truncated":
        this.markInterrupted(event.item_id);
        break;
      case "conversation.item.deleted":
        this.#remove(event.item_id);
        break;
      default:
        break;
    }
    return this.version !== before;
  }

  /** Mark an assistant line as cut short (barge-in); the page does this as soon as it stops playback. */
  markInterrupted(itemId) {
    const line = this.lines.get(itemId);
    if (line && !line.interrupted) {
      line.interrupted = true;
      this.version++;
    }
  }

  /** Forget everything (new conversation). */
  clear() {
    this.lines.clear();
    this.order = [];
    this.version++;
  }

  #addItem(item, previousItemId) {
    if (!item || item.type !== "message" || (item.role !== "user" && item.role !== "assistant")) return;
    const line = this.#place(item.id, previousItemId, item.role);
    // Typed messages carry their text in the item itself; spoken ones may carry a transcript.
    for (const part of item.content ?? []) {
      const text = part.text ?? part.transcript;
      if (typeof text === "string" && text !== "" && line.text === "") {
        line.text = text;
        line.status = "final";
        this.version++;
      }
    }
  }

  #serverTool(item, previousItemId) {
    if (item?.type === "function_call") {
      const line = this.#place(item.id, previousItemId, "tool");
      if (line.tool === undefined) {
        Object.assign(line, { name: item.name ?? "", tool: "running", callId: item.call_id });
        this.version++;
      }
    } else if (item?.type === "function_call_output") {
      const line = this.entries().find((l) => l.role === "tool" && l.callId === item.call_id);
      if (!line || line.tool !== "running") return;
      const { failed, shown } = readOutput(item.output);
      line.tool = failed ? "failed" : "done";
      line.text = shown.length <= SHORT_RESULT ? shown : "";
      line.status = "final";
      this.version++;
    }
  }

  #ensure(itemId, role) {
    let line = this.lines.get(itemId);
    if (!line) {
      line = { itemId, role, text: "", status: "pending", interrupted: false, placed: false };
      this.lines.set(itemId, line);
      this.order.push(itemId);
      this.version++;
    }
    return line;
  }

  #place(itemId, previousItemId, role) {
    const line = this.#ensure(itemId, role);
    if (line.placed) return line;
    line.placed = true;
    const current = this.order.indexOf(itemId);
    let target;
    if (previousItemId && this.lines.has(previousItemId)) {
      target = this.order.indexOf(previousItemId) + 1;
    } else {
      // No predecessor, or one that is not a displayed line (e.g. a function call): arrival order is the best
      // guess, and it is right for the first item of a conversation.
      return line;
    }
    this.order.splice(current, 1);
    if (current < target) target -= 1;
    this.order.splice(target, 0, itemId);
    if (target !== current) this.version++;
    return line;
  }

  #appendDelta(itemId, role, delta) {
    if (!itemId || typeof delta !== "string" || delta === "") return;
    const line = this.#ensure(itemId, role);
    if (line.status === "final") return;
    line.text += delta;
    this.version++;
  }

  #setFinal(itemId, role, text) {
    if (!itemId) return;
    const line = this.#ensure(itemId, role);
    if (typeof text === "string") line.text = text;
    line.status = "final";
    this.version++;
  }

  #markFailed(itemId) {
    const line = this.lines.get(itemId);
    if (line && line.status !== "final") {
      line.status = "failed";
      this.version++;
    }
  }

  #remove(itemId) {
    if (!this.lines.delete(itemId)) return;
    this.order.splice(this.order.indexOf(itemId), 1);
    this.version++;
  }
}

/** What a tool output says: whether the call failed, and its result (or error) as one line of text. */
export function readOutput(output) {
  let parsed;
  try {
    parsed = JSON.parse(output);
  } catch {
    return { failed: false, shown: String(output ?? "") };
  }
  if (parsed && typeof parsed === "object" && "error" in parsed) return { failed: true, shown: String(parsed.error) };
  const result = parsed && typeof parsed === "object" && "result" in parsed ? parsed.result : parsed;
  if (result && typeof result === "object") {
    return { failed: false, shown: Object.entries(result).map(([k, v]) => `${k}: ${v}`).join(", ") };
  }
  return { failed: false, shown: String(result) };
}
