// Chat messages of a GenAI span, from its attributes and its GenAI log events, as role-tagged bubbles.
//
// Attributes: gen_ai.system_instructions, gen_ai.input.messages, gen_ai.output.messages (OTel GenAI
// semconv: JSON lists of {role, parts: [{type: text|tool_call|tool_call_response, ...}]}, or
// {role, content}); the older gen_ai.prompt.N.* / gen_ai.completion.N.* flattening. Log events:
// gen_ai.{system,user,assistant,tool}.message and gen_ai.choice, body {content, tool_calls} or
// {message: {...}}.
import { h, text } from "./dom.js";

function parse(value) {
  if (typeof value !== "string") return value;
  try {
    return JSON.parse(value);
  } catch {
    return value;
  }
}

function show(v) {
  if (v === undefined || v === null) return "";
  return typeof v === "string" ? v : JSON.stringify(v, null, 2);
}

// One message -> {role, content: [string], tools: [string]}.
function normalize(m, fallbackRole) {
  if (m === null || typeof m !== "object") return { role: fallbackRole, content: [show(m)], tools: [] };
  if (m.message && typeof m.message === "object") {
    const inner = normalize(m.message, fallbackRole);
    if (m.finish_reason) inner.finish = m.finish_reason;
    return inner;
  }
  const out = { role: m.role || fallbackRole, content: [], tools: [], finish: m.finish_reason };
  if (Array.isArray(m.parts)) {
    for (const p of m.parts) {
      if (!p || typeof p !== "object") out.content.push(show(p));
      else if (p.type === "tool_call") out.tools.push(`→ ${p.name || "tool"}(${show(p.arguments)})${p.id ? "  #" + p.id : ""}`);
      else if (p.type === "tool_call_response") out.tools.push(`← ${p.id ? "#" + p.id + " " : ""}${show(p.response ?? p.result)}`);
      else out.content.push(show(p.content ?? p.text ?? p));
    }
  }
  if (m.content !== undefined) {
    if (Array.isArray(m.content)) for (const c of m.content) out.content.push(show(c && (c.text ?? c.content ?? c)));
    else out.content.push(show(m.content));
  }
  for (const tc of m.tool_calls || []) {
    const fn = tc.function || tc;
    out.tools.push(`→ ${fn.name || "tool"}(${show(fn.arguments)})${tc.id ? "  #" + tc.id : ""}`);
  }
  if (out.role === "tool" && m.id && !out.tools.length) out.tools.push(`← #${m.id}`);
  return out;
}

function fromList(value, role, source) {
  const v = parse(value);
  const list = Array.isArray(v) ? v : [v];
  return list.map((m) => ({ ...normalize(m, role), source }));
}

export function spanMessages(span) {
  const a = span.attributes || {};
  const out = [];
  if (a["gen_ai.system_instructions"] !== undefined) {
    const v = parse(a["gen_ai.system_instructions"]);
    out.push({ ...normalize({ role: "system", parts: Array.isArray(v) ? v : [v] }, "system"), source: "attribute" });
  }
  if (a["gen_ai.input.messages"] !== undefined) out.push(...fromList(a["gen_ai.input.messages"], "user", "attribute"));
  // OpenLLMetry-style flattening: gen_ai.prompt.0.role / gen_ai.prompt.0.content, gen_ai.completion.0.*
  for (const kind of ["prompt", "completion"]) {
    const idx = new Set();
    for (const k of Object.keys(a)) {
      const m = k.match(new RegExp(`^gen_ai\\.${kind}\\.(\\d+)\\.`));
      if (m) idx.add(Number(m[1]));
    }
    for (const i of [...idx].sort((x, y) => x - y)) {
      const p = `gen_ai.${kind}.${i}.`;
      out.push({ role: a[p + "role"] || (kind === "prompt" ? "user" : "assistant"),
        content: a[p + "content"] !== undefined ? [show(a[p + "content"])] : [], tools: [], source: "attribute" });
    }
  }
  if (a["gen_ai.output.messages"] !== undefined) out.push(...fromList(a["gen_ai.output.messages"], "assistant", "attribute"));
  for (const rec of span.logs || []) {
    const ev = rec.event_name || rec.attributes?.["event.name"] || "";
    const m = ev.match(/^gen_ai\.(system|user|assistant|tool)\.message$/);
    if (m) out.push({ ...normalize(parse(rec.body), m[1]), source: "log event" });
    else if (ev === "gen_ai.choice") out.push({ ...normalize(parse(rec.body), "assistant"), source: "log event" });
  }
  return out;
}

export function renderChat(messages) {
  return h("div", { class: "chat" }, messages.map((m) => {
    const role = ["system", "user", "assistant", "tool"].includes(m.role) ? m.role : "other";
    return h("div", { class: `msg ${role}`, "data-role": m.role },
      h("span", { class: "src" }, m.source, m.finish ? ` · ${m.finish}` : ""),
      h("div", { class: "role" }, m.role),
      m.content.filter((c) => c !== "").map((c) => h("div", { class: "content" }, text(c))),
      m.tools.map((t) => h("div", { class: "toolcall" }, text(t))));
  }));
}
