// The relay's history endpoints (/api/conversations): same origin, the sign-in cookie travels by itself.

async function call(path, options = {}) {
  let response;
  try {
    response = await fetch(`/api/conversations${path}`, { credentials: "same-origin", cache: "no-store", ...options });
  } catch {
    return { ok: false, status: 0, body: null };
  }
  let body = null;
  if (response.status !== 204) {
    try {
      body = await response.json();
    } catch {
      body = null;
    }
  }
  return { ok: response.ok, status: response.status, body };
}

/** The signed-in user's conversations, newest first: [{id, started_at, duration_s, first_words, cost}], or null. */
export async function listConversations() {
  const result = await call("");
  return result.ok ? (result.body?.conversations ?? []) : null;
}

/** One conversation with its items in order, or null. */
export async function openConversation(id) {
  const result = await call(`/${encodeURIComponent(id)}`);
  return result.ok ? result.body : null;
}

/** Delete one conversation; true when it is gone. */
export async function deleteConversation(id) {
  const result = await call(`/${encodeURIComponent(id)}`, { method: "DELETE" });
  return result.ok;
}

/** Where the JSON export of a conversation downloads from. */
export function exportUrl(id) {
  return `/api/conversations/${encodeURIComponent(id)}/export`;
}
