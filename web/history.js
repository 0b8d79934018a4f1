// The history panel: the signed-in user's saved conversations, each opened as a transcript, continued, exported
// or deleted. Pure formatting is exported for tests; the panel itself only needs the DOM ids in index.html.

import { deleteConversation, exportUrl, listConversations, openConversation } from "./history-api.js";

/** "1 min 05 s", "42 s": a conversation's length for people. */
export function formatDuration(seconds) {
  const whole = Math.max(0, Math.round(seconds));
  const minutes = Math.floor(whole / 60);
  const rest = whole % 60;
  return minutes ? `${minutes} min ${String(rest).padStart(2, "0")} s` : `${rest} s`;
}

/** "$0.0123": dollars with four decimals (a voice turn costs fractions of a cent). */
export function formatCost(dollars) {
  return `$${Number(dollars || 0).toFixed(4)}`;
}

/** What one transcript line says: who spoke, the words, and how much of an interrupted reply was heard. */
export function transcriptLine(item, t) {
  if (item.type === "function_call") return { who: t("history.tool"), text: `${item.name}(${item.arguments ?? ""})` };
  if (item.type === "function_call_output") return { who: t("history.toolOutput"), text: item.output ?? "" };
  const who = item.role === "user" ? t("history.you") : item.role === "assistant" ? t("history.assistant") : item.role;
  const text = item.interrupted
    ? `${item.text} ${t("history.interrupted", { ms: item.audio_end_ms ?? 0 })}`.trim()
    : item.text;
  return { who, text };
}

export class HistoryPanel {
  /** `onContinue(id)` starts a new session seeded with that conversation. */
  constructor({ root, t, onContinue }) {
    this.root = root;
    this.t = t;
    this.onContinue = onContinue;
    this.list = root.querySelector("#history-list");
    this.transcript = root.querySelector("#history-transcript");
    this.empty = root.querySelector("#history-empty");
    root.querySelector("#history-refresh").addEventListener("click", () => void this.refresh());
    this.conversations = [];
  }

  setTranslator(t) {
    this.t = t;
    this.render();
  }

  async refresh() {
    const found = await listConversations();
    this.conversations = found ?? [];
    this.render();
  }

  render() {
    this.list.replaceChildren();
    this.empty.hidden = this.conversations.length > 0;
    for (const conversation of this.conversations) {
      const entry = document.createElement("li");
      entry.className = "history-entry";
      entry.dataset.id = conversation.id;
      const when = new Date(conversation.started_at * 1000);
      const title = document.createElement("p");
      title.className = "history-words";
      title.textContent = conversation.first_words || this.t("history.noWords");
      const meta = document.createElement("p");
      meta.className = "muted history-meta";
      meta.textContent = `${when.toLocaleString()} · ${formatDuration(conversation.duration_s)} · ${formatCost(conversation.cost)}`;
      const actions = document.createElement("div");
      actions.className = "history-actions";
      actions.append(
        this.button("history.open", "open", () => void this.open(conversation.id)),
        this.button("history.continue", "continue", () => this.onContinue(conversation.id)),
        this.link("history.export", exportUrl(conversation.id)),
        this.button("history.delete", "delete", () => void this.remove(conversation.id)),
      );
      entry.append(title, meta, actions);
      this.list.append(entry);
    }
  }

  button(key, action, onClick) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "btn small";
    button.dataset.action = action;
    button.textContent = this.t(key);
    button.addEventListener("click", onClick);
    return button;
  }

  link(key, href) {
    const link = document.createElement("a");
    link.className = "btn small";
    link.dataset.action = "export";
    link.href = href;
    link.download = "";
    link.textContent = this.t(key);
    return link;
  }

  async open(id) {
    const conversation = await openConversation(id);
    this.transcript.replaceChildren();
    this.transcript.hidden = !conversation;
    if (!conversation) return;
    this.transcript.dataset.id = id;
    for (const item of conversation.items) {
      const { who, text } = transcriptLine(item, this.t);
      const line = document.createElement("li");
      line.className = `history-line ${item.role ?? item.type}`;
      const name = document.createElement("strong");
      name.textContent = `${who}: `;
      line.append(name, document.createTextNode(text));
      this.transcript.append(line);
    }
  }

  async remove(id) {
    if (await deleteConversation(id)) {
      if (this.transcript.dataset.id === id) {
        this.transcript.replaceChildren();
        this.transcript.hidden = true;
      }
      await this.refresh();
    }
  }
}
