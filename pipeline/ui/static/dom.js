// DOM helpers: every value from the API becomes a text node (never HTML), so nothing stored can run here.

const REDACTED = /\[REDACTED:[^\]]*\]/g;

export function h(tag, attrs = {}, ...children) {
  const svg = ["svg", "rect", "text", "g", "line", "title"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.setAttribute("class", v);
    else if (k === "style") Object.assign(el.style, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// Text with every [REDACTED:...] marker shown as a badge.
export function text(value) {
  const s = value === null || value === undefined ? "" : String(value);
  const frag = document.createDocumentFragment();
  let last = 0;
  for (const m of s.matchAll(REDACTED)) {
    if (m.index > last) frag.append(s.slice(last, m.index));
    frag.append(h("span", { class: "redacted", title: "removed by the redact processor" }, m[0]));
    last = m.index + m[0].length;
  }
  if (last < s.length) frag.append(s.slice(last));
  return frag;
}

export function link(href, label) {
  return h("a", { href }, text(label));
}

export const enc = encodeURIComponent;
export const traceLink = (id, label) => link(`#/traces/${enc(id)}`, label ?? id.slice(0, 16));
export const userLink = (id) => (id ? link(`#/users/${enc(id)}`, id) : h("span", { class: "muted" }, "–"));
export const sessionLink = (id) => (id ? link(`#/sessions/${enc(id)}`, id) : h("span", { class: "muted" }, "–"));

// Money as the API gives it, to 6 decimal places at most (unpriced: "–", never $0).
export function usd(v) {
  if (v === null || v === undefined) return "–";
  if (v === 0) return "$0";
  const digits = Math.abs(v) >= 1 ? 2 : 6;
  return "$" + Number(v).toFixed(digits).replace(/(\.\d*?[1-9])0+$/, "$1").replace(/\.0+$/, "");
}

export function ms(ns) {
  if (ns === null || ns === undefined) return "–";
  const v = ns / 1e6;
  if (v < 1) return v.toFixed(2) + " ms";
  if (v < 1000) return v.toFixed(v < 10 ? 1 : 0) + " ms";
  return (v / 1000).toFixed(v < 10000 ? 2 : 1) + " s";
}

export function when(ns) {
  if (!ns) return "–";
  return new Date(ns / 1e6).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export const num = (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US"));

export function statusCell(status) {
  const s = (status || "").toLowerCase();
  return h("span", { class: s === "error" ? "status-error" : s === "ok" ? "status-ok" : "muted" }, status || "unset");
}

export function table(headers, rows, cls) {
  return h("table", { class: cls },
    h("thead", {}, h("tr", {}, headers.map((x) => (typeof x === "string" ? h("th", {}, x) : h("th", x, x.label))))),
    h("tbody", {}, rows));
}

export function kvTable(obj) {
  const keys = Object.keys(obj || {}).sort();
  if (!keys.length) return h("p", { class: "muted" }, "none");
  return h("table", { class: "kv" }, h("tbody", {}, keys.map((k) => h("tr", {}, h("td", {}, k), h("td", {}, text(obj[k]))))));
}

export function card(k, v) {
  return h("div", { class: "card" }, h("div", { class: "v" }, v), h("div", { class: "k" }, k));
}
