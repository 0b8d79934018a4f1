// WCAG AA contrast of the stylesheet's colour pairs, in the light and the dark theme.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

const css = readFileSync(new URL("../../web/styles.css", import.meta.url), "utf8");

function variables(block) {
  return Object.fromEntries([...block.matchAll(/--([\w-]+):\s*(#[0-9a-fA-F]{6})\s*;/g)].map((m) => [m[1], m[2]]));
}

const light = variables(css.slice(css.indexOf(":root {"), css.indexOf("@media (prefers-color-scheme: dark)")));
const darkStart = css.indexOf("@media (prefers-color-scheme: dark)");
const dark = { ...light, ...variables(css.slice(darkStart, css.indexOf("\n}\n", darkStart))) };

function luminance(hex) {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255);
  const linear = (c) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
  return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
}

function ratio(a, b) {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

// [foreground, background, minimum]: 4.5 for text, 3 for graphics (status dots, focus ring) and large text.
const TEXT_PAIRS = [
  ["text", "bg"],
  ["text", "surface"],
  ["text", "surface-2"],
  ["text", "accent-soft"],
  ["muted", "bg"],
  ["muted", "surface"],
  ["muted", "surface-2"],
  ["accent-text", "surface"],
  ["accent-text", "accent-soft"],
  ["on-accent", "accent-bg"],
  ["on-accent", "accent-bg-hover"],
  ["error-text", "error-bg"],
  ["badge-text", "badge-bg"],
];
const GRAPHIC_PAIRS = [
  ["focus", "surface"],
  ["focus", "bg"],
  ["state-disconnected", "surface-2"],
  ["state-connecting", "surface-2"],
  ["state-connected", "surface-2"],
  ["state-listening", "surface-2"],
  ["state-speaking", "surface-2"],
  ["state-error", "surface-2"],
];

for (const [name, theme] of [
  ["light", light],
  ["dark", dark],
]) {
  test(`${name} theme: text meets 4.5:1, status dots and focus ring 3:1`, () => {
    for (const [fg, bg] of TEXT_PAIRS) {
      assert.ok(theme[fg] && theme[bg], `${fg}/${bg} defined`);
      assert.ok(ratio(theme[fg], theme[bg]) >= 4.5, `${fg} on ${bg}: ${ratio(theme[fg], theme[bg]).toFixed(2)}`);
    }
    for (const [fg, bg] of GRAPHIC_PAIRS) {
      assert.ok(ratio(theme[fg], theme[bg]) >= 3, `${fg} on ${bg}: ${ratio(theme[fg], theme[bg]).toFixed(2)}`);
    }
    // Buttons with fixed white text.
    for (const bg of ["danger-bg", "danger-bg-hover"]) {
      assert.ok(ratio("#ffffff", theme[bg]) >= 4.5, `white on ${bg}: ${ratio("#ffffff", theme[bg]).toFixed(2)}`);
    }
  });
}

test("the microphone chip text is readable on the listening colour", () => {
  assert.ok(ratio("#ffffff", light["state-listening"]) >= 4.5);
  assert.ok(ratio("#0d1117", dark["state-listening"]) >= 4.5);
});
