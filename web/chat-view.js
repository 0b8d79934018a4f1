// Draws the chat log into an <ol>: one <li> per conversation item, kept in the log's order, updated in place so
// streaming text does not rebuild the list (and screen readers announce only what changed).

/**
 * Bring `list` in line with `entries` (ChatLog.entries()). `t` translates; `transcriptionOn` decides the
 * placeholder of a user line that has no text.
 */
export function renderChatLog(list, entries, { t, transcriptionOn }) {
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 48;
  const existing = new Map([...list.children].map((li) => [li.dataset.itemId, li]));
  entries.forEach((entry, index) => {
    const li = existing.get(entry.itemId) ?? createLine(entry);
    existing.delete(entry.itemId);
    updateLine(li, entry, t, transcriptionOn);
    if (list.children[index] !== li) list.insertBefore(li, list.children[index] ?? null);
  });
  for (const stale of existing.values()) stale.remove();
  // Follow new text only if the reader had not scrolled up to read older lines.
  if (nearBottom) list.scrollTop = list.scrollHeight;
}

function createLine(entry) {
  const li = document.createElement("li");
  li.dataset.itemId = entry.itemId;
  li.className = `line ${entry.role}`;
  const who = document.createElement("span");
  who.className = "who";
  const text = document.createElement("p");
  text.className = "text";
  const tag = document.createElement("span");
  tag.className = "tag";
  li.append(who, text, tag);
  return li;
}

function updateLine(li, entry, t, transcriptionOn) {
  const [who, text, tag] = li.children;
  if (entry.role === "tool") {
    updateToolLine(li, entry, t);
    return;
  }
  who.textContent = t(entry.role === "user" ? "chat.you" : "chat.assistant");
  let body = entry.text;
  li.classList.toggle("placeholder", body === "");
  if (body === "") {
    if (entry.status === "failed") body = t("chat.transcriptionFailed");
    else if (entry.role === "user" && !transcriptionOn) body = t("chat.voiceOnly");
    else body = t("chat.listeningPlaceholder");
  }
  if (text.textContent !== body) text.textContent = body;
  li.classList.toggle("pending", entry.status === "pending");
  tag.textContent = entry.interrupted ? t("chat.interrupted") : "";
  tag.hidden = !entry.interrupted;
}

// A call the relay ran: its name, a short status, and the result when it is short.
function updateToolLine(li, entry, t) {
  const [who, text, tag] = li.children;
  who.textContent = t("chat.tool", { name: entry.name });
  const body = entry.text || t(`chat.tool.${entry.tool}`);
  if (text.textContent !== body) text.textContent = body;
  li.classList.toggle("pending", entry.tool === "running");
  li.classList.toggle("failed", entry.tool === "failed");
  tag.textContent = entry.text ? t(`chat.tool.${entry.tool}`) : "";
  tag.hidden = !entry.text;
}
