// Chat log ordering: by conversation item, whatever order the events arrive in.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ChatLog } from "../../web/chatlog.js";

const userItem = (id) => ({ id, type: "message", role: "user", content: [{ type: "input_audio", transcript: null }] });
const assistantItem = (id) => ({ id, type: "message", role: "assistant", content: [] });

function view(log) {
  return log.entries().map((l) => `${l.role}:${l.text}${l.interrupted ? " [cut]" : ""}`);
}

test("a late user transcript stays above the assistant reply it triggered", () => {
  const log = new ChatLog();
  log.apply({ type: "input_audio_buffer.committed", item_id: "u1", previous_item_id: null });
  log.apply({ type: "conversation.item.added", item: userItem("u1"), previous_item_id: null });
  log.apply({ type: "response.output_item.added", item: assistantItem("a1") });
  log.apply({ type: "conversation.item.added", item: assistantItem("a1"), previous_item_id: "u1" });
  log.apply({ type: "response.output_audio_transcript.delta", item_id: "a1", delta: "Hi " });
  log.apply({ type: "response.output_audio_transcript.delta", item_id: "a1", delta: "there" });
  log.apply({ type: "conversation.item.input_audio_transcription.delta", item_id: "u1", delta: "Hel" });
  log.apply({ type: "conversation.item.input_audio_transcription.completed", item_id: "u1", transcript: "Hello" });
  log.apply({ type: "response.output_audio_transcript.done", item_id: "a1", transcript: "Hi there!" });
  assert.deepEqual(view(log), ["user:Hello", "assistant:Hi there!"]);
});

test("an item seen first through its text is moved once its position is known", () => {
  const log = new ChatLog();
  log.apply({ type: "conversation.item.added", item: userItem("u1"), previous_item_id: null });
  log.apply({ type: "conversation.item.added", item: assistantItem("a1"), previous_item_id: "u1" });
  // u2's transcript delta arrives before the event that places it; a2 is placed after u2.
  log.apply({ type: "response.output_text.delta", item_id: "a2", delta: "second reply" });
  log.apply({ type: "conversation.item.input_audio_transcription.delta", item_id: "u2", delta: "again" });
  log.apply({ type: "conversation.item.added", item: userItem("u2"), previous_item_id: "a1" });
  log.apply({ type: "conversation.item.added", item: assistantItem("a2"), previous_item_id: "u2" });
  assert.deepEqual(
    log.entries().map((l) => l.itemId),
    ["u1", "a1", "u2", "a2"],
  );
});

test("typed messages show their text; truncation and deletion are reflected", () => {
  const log = new ChatLog();
  const typed = { id: "u1", type: "message", role: "user", content: [{ type: "input_text", text: "hi" }] };
  assert.equal(log.apply({ type: "conversation.item.added", item: typed, previous_item_id: null }), true);
  log.apply({ type: "conversation.item.added", item: assistantItem("a1"), previous_item_id: "u1" });
  log.apply({ type: "response.output_audio_transcript.delta", item_id: "a1", delta: "Once upon" });
  log.apply({ type: "conversation.item.truncated", item_id: "a1", content_index: 0, audio_end_ms: 300 });
  assert.deepEqual(view(log), ["user:hi", "assistant:Once upon [cut]"]);
  log.apply({ type: "conversation.item.deleted", item_id: "u1" });
  assert.deepEqual(view(log), ["assistant:Once upon [cut]"]);
});

test("function calls and unrelated events do not create lines", () => {
  const log = new ChatLog();
  const call = { id: "f1", type: "function_call", call_id: "c", name: "x", arguments: "{}" };
  assert.equal(log.apply({ type: "conversation.item.added", item: call, previous_item_id: null }), false);
  assert.equal(log.apply({ type: "rate_limits.updated", rate_limits: [] }), false);
  assert.deepEqual(log.entries(), []);
});

test("a failed transcription is marked, and a completed one is not overwritten by stray deltas", () => {
  const log = new ChatLog();
  log.apply({ type: "conversation.item.added", item: userItem("u1"), previous_item_id: null });
  log.apply({ type: "conversation.item.input_audio_transcription.failed", item_id: "u1", error: {} });
  assert.equal(log.entries()[0].status, "failed");
  log.apply({ type: "conversation.item.added", item: userItem("u2"), previous_item_id: "u1" });
  log.apply({ type: "conversation.item.input_audio_transcription.completed", item_id: "u2", transcript: "ok" });
  log.apply({ type: "conversation.item.input_audio_transcription.delta", item_id: "u2", delta: "late" });
  assert.equal(log.entries()[1].text, "ok");
});

test("a call the relay runs is a tool line: name, status, then the result when it is short", () => {
  const log = new ChatLog();
  const mark = { server_tool: true };
  log.apply({ type: "conversation.item.added", item: userItem("u1"), previous_item_id: null });
  const call = { id: "f1", type: "function_call", call_id: "c1", name: "current_time", arguments: "" };
  assert.equal(log.apply({ type: "conversation.item.added", item: call, previous_item_id: "u1", relay: mark }), true);
  assert.deepEqual(
    log.entries().map((l) => [l.role, l.name, l.tool, l.text]),
    [["user", undefined, undefined, ""], ["tool", "current_time", "running", ""]],
  );
  const output = { id: "o1", type: "function_call_output", call_id: "c1", output: '{"result":{"time":"09:30"}}' };
  log.apply({ type: "conversation.item.added", item: output, previous_item_id: "f1", relay: mark });
  const [, tool] = log.entries();
  assert.deepEqual([tool.tool, tool.text], ["done", "time: 09:30"]);
  // Only the call is a line; its output fills it in.
  assert.equal(log.entries().length, 2);
});

test("a failed or long tool result shows the status only where the text would not fit", () => {
  const log = new ChatLog();
  const mark = { server_tool: true };
  const call = (id, callId) => ({ id, type: "function_call", call_id: callId, name: "lookup", arguments: "{}" });
  const output = (callId, text) => ({ id: `o_${callId}`, type: "function_call_output", call_id: callId, output: text });
  log.apply({ type: "conversation.item.added", item: call("f1", "c1"), previous_item_id: null, relay: mark });
  log.apply({ type: "conversation.item.added", item: call("f2", "c2"), previous_item_id: "f1", relay: mark });
  log.apply({ type: "conversation.item.done", item: output("c1", '{"error":"timed out"}'), relay: mark });
  log.apply({ type: "conversation.item.done", item: output("c2", JSON.stringify({ result: "x".repeat(500) })), relay: mark });
  assert.deepEqual(
    log.entries().map((l) => [l.tool, l.text]),
    [["failed", "timed out"], ["done", ""]],
  );
  // An unmarked call (the client's own tool) is not drawn.
  log.apply({ type: "conversation.item.added", item: call("f3", "c3"), previous_item_id: "f2" });
  assert.equal(log.entries().length, 2);
});
