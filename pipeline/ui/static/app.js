// tracepipe web UI: hash routes (#/traces, #/traces/ID, #/sessions, #/sessions/ID, #/users/ID, #/cost,
// #/alerts, #/budgets), each a view that reads the JSON API and builds DOM from it.
import { api, ApiError, query, token } from "./api.js";
import { barChart } from "./charts.js";
import { renderChat, spanMessages } from "./chat.js";
import { card, enc, h, kvTable, link, ms, num, sessionLink, statusCell, table, text, traceLink, usd, userLink,
  when } from "./dom.js";

const view = document.getElementById("view");
const SINCE = ["", "15m", "1h", "6h", "24h", "7d", "30d"];

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, qs] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, params: Object.fromEntries(new URLSearchParams(qs || "")) };
}

function sinceSelect(name, value, allowAny = true) {
  return h("select", { name }, SINCE.filter((s) => allowAny || s).map((s) =>
    h("option", { value: s, selected: s === (value || "") }, s ? `last ${s}` : "any time")));
}

function showError(e) {
  if (e instanceof ApiError && e.status === 401) {
    return h("div", { class: "banner error", id: "auth-needed" },
      "This API needs a token: paste one with the read scope in the box at the top right. (", e.message, ")");
  }
  if (e instanceof ApiError && e.status === 404) return h("div", { class: "banner", id: "not-found" }, "Not found: ", e.message);
  return h("div", { class: "banner error" }, e instanceof ApiError ? `Error ${e.status}: ${e.message}` : String(e));
}

// --- traces list -------------------------------------------------------------------
const FILTERS = ["service", "model", "user", "session", "status", "min_cost", "since"];

async function tracesList(params) {
  const form = h("form", { class: "filters", id: "trace-filters" },
    ["service", "model", "user", "session"].map((k) =>
      h("label", {}, k, h("input", { name: k, value: params[k] || "", size: 14 }))),
    h("label", {}, "status", h("select", { name: "status" }, ["", "ok", "error", "unset"].map((s) =>
      h("option", { value: s, selected: s === (params.status || "") }, s || "any")))),
    h("label", {}, "min cost (USD)", h("input", { name: "min_cost", value: params.min_cost || "", size: 8, inputmode: "decimal" })),
    h("label", {}, "time range", sinceSelect("since", params.since)),
    h("button", { type: "submit" }, "Apply"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const fd = new FormData(form);
    const p = {};
    for (const k of FILTERS) if (fd.get(k)) p[k] = fd.get(k).trim();
    location.hash = "#/traces" + query(p);
  });
  const filters = {};
  for (const k of FILTERS) if (params[k]) filters[k] = params[k];
  const body = await api("/api/traces" + query({ ...filters, cursor: params.cursor, limit: 50 }));
  const rows = body.traces.map((t) => h("tr", { "data-trace-id": t.trace_id },
    h("td", { class: "mono" }, traceLink(t.trace_id)),
    h("td", {}, when(t.start_ns)),
    h("td", {}, text(t.root_name || ""), h("div", { class: "muted" }, text(t.root_service || ""))),
    h("td", {}, text(t.models.join(", "))),
    h("td", {}, userLink(t.user_id)),
    h("td", {}, sessionLink(t.session_id)),
    h("td", {}, statusCell(t.status)),
    h("td", { class: "num" }, num(t.spans)),
    h("td", { class: "num" }, ms(t.duration_ns)),
    h("td", { class: "num" }, num(t.input_tokens + t.output_tokens)),
    h("td", { class: "num" }, usd(t.cost_usd))));
  const pager = h("div", { class: "pager" },
    params.cursor ? link("#/traces" + query(filters), "« newest") : null,
    body.next ? h("a", { href: "#/traces" + query({ ...filters, cursor: body.next }), id: "next-page" }, "older »") : null);
  return [h("h1", {}, "Traces"), form,
    body.traces.length ? table(["trace", "start (UTC)", "root", "models", "user", "session", "status",
      { class: "num", label: "spans" }, { class: "num", label: "duration" }, { class: "num", label: "tokens" },
      { class: "num", label: "cost" }], rows, "traces") : h("p", { class: "muted", id: "no-traces" }, "No trace matches."),
    pager];
}

// --- one trace ---------------------------------------------------------------------
function flatten(tree) {
  const out = [];
  const stack = tree.map((n) => [n, 0]).reverse();
  while (stack.length) {
    const [n, depth] = stack.pop();
    out.push([n, depth]);
    for (let i = n.children.length - 1; i >= 0; i--) stack.push([n.children[i], depth + 1]);
  }
  return out;
}

function spanPane(span) {
  if (!span) return h("div", { class: "pane", id: "span-pane" }, h("p", { class: "muted" }, "Select a span."));
  const messages = spanMessages(span);
  const errors = [];
  if (span.status_code === "Error") errors.push(span.status_message || "status Error");
  for (const e of span.events) if (e.name === "exception") {
    errors.push(`${e.attributes["exception.type"] || "exception"}: ${e.attributes["exception.message"] || ""}`);
  }
  const tokens = ["input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens"]
    .filter((k) => span[k]).map((k) => `${k.replace("_tokens", "")} ${num(span[k])}`).join(" · ");
  return h("div", { class: "pane", id: "span-pane", "data-span-id": span.span_id },
    h("h2", {}, text(span.name)),
    h("div", { class: "cards" }, card("duration", ms(span.duration_ns)), card("model", text(span.model || "–")),
      card("tokens", tokens || "–"), card("cost", usd(span.cost_usd)), card("status", statusCell(span.status_code))),
    h("p", { class: "muted" }, text(`${span.service_name} · ${span.kind} · ${span.operation || ""} ${span.provider || ""}`),
      span.user_id ? [" · user ", userLink(span.user_id)] : null,
      span.session_id ? [" · session ", sessionLink(span.session_id)] : null),
    errors.length ? [h("h2", {}, "Errors"), errors.map((e) => h("div", { class: "banner error" }, text(e)))] : null,
    messages.length ? [h("h2", {}, "Messages"), renderChat(messages)] : null,
    span.events.length ? [h("h2", {}, "Events"), table(["time", "name", "attributes"], span.events.map((e) =>
      h("tr", {}, h("td", {}, ms(e.time_ns - span.start_ns)), h("td", {}, text(e.name)), h("td", {}, kvTable(e.attributes)))))] : null,
    (span.logs || []).length ? [h("h2", {}, "Log records"), table(["time", "event", "body"], span.logs.map((r) =>
      h("tr", {}, h("td", {}, ms(r.time_ns - span.start_ns)), h("td", {}, text(r.event_name || r.severity_text || "")),
        h("td", { class: "mono" }, text(r.body)))))] : null,
    h("h2", {}, "Attributes"), kvTable(span.attributes),
    h("h2", {}, "Resource"), kvTable(span.resource_attributes),
    h("p", { class: "muted mono" }, `span ${span.span_id} · parent ${span.parent_span_id || "–"}`));
}

async function traceView(id, params) {
  const t = await api(`/api/traces/${enc(id)}`);
  const byId = new Map(t.spans.map((s) => [s.span_id, s]));
  const t0 = t.totals.start_ns, total = Math.max(1, t.totals.duration_ns);
  const first = t.spans.find((s) => s.model) || t.spans[0];
  let selected = byId.get(params.span) || first;
  const paneHolder = h("div", {}, spanPane(selected));
  const rows = flatten(t.tree).map(([n, depth]) => {
    const left = ((n.start_ns - t0) / total) * 100;
    const width = Math.max(0.3, (n.duration_ns / total) * 100);
    const bar = h("div", { class: `bar${n.status_code === "Error" ? " err" : ""}`, style: { left: `${left}%`, width: `${Math.min(width, 100 - left)}%` } });
    const sub = n.subtree;
    const tr = h("tr", { class: `span-row${n.span_id === selected?.span_id ? " selected" : ""}`, "data-span-id": n.span_id,
      "data-depth": depth },
      h("td", { class: "name", style: { paddingLeft: `${0.4 + depth * 1.1}rem` } }, depth ? "└ " : "", text(n.name)),
      h("td", {}, h("div", { class: "timeline", title: `+${ms(n.start_ns - t0)} for ${ms(n.duration_ns)}` }, bar)),
      h("td", { class: "num" }, ms(n.duration_ns)),
      h("td", {}, text(n.model || "")),
      h("td", { class: "num" }, n.input_tokens + n.output_tokens ? num(n.input_tokens + n.output_tokens) : ""),
      h("td", { class: "num" }, usd(n.cost_usd)),
      h("td", {}, statusCell(n.status_code)),
      h("td", { class: "num muted", title: `${sub.spans} spans, ${sub.errors} errors, ${num(sub.input_tokens + sub.output_tokens)} tokens` },
        sub.spans > 1 ? `${usd(sub.cost_usd)} · ${sub.spans} spans` : ""));
    tr.addEventListener("click", () => {
      selected = byId.get(n.span_id);
      for (const r of tr.parentNode.children) r.classList.toggle("selected", r === tr);
      paneHolder.replaceChildren(spanPane(selected));
      history.replaceState(null, "", `#/traces/${enc(id)}?span=${enc(n.span_id)}`);
    });
    return tr;
  });
  const users = [...new Set(t.spans.map((s) => s.user_id).filter(Boolean))];
  const sessions = [...new Set(t.spans.map((s) => s.session_id || s.conversation_id).filter(Boolean))];
  const tot = t.totals;
  return [h("h1", {}, "Trace ", h("span", { class: "mono" }, t.trace_id), " ", text(t.root_name || "")),
    h("div", { class: "cards" }, card("start (UTC)", when(tot.start_ns)), card("duration", ms(tot.duration_ns)),
      card("spans", num(tot.spans)), card("LLM calls", num(tot.llm_calls)), card("errors", num(tot.errors)),
      card("tokens in/out", `${num(tot.input_tokens)} / ${num(tot.output_tokens)}`), card("cost", usd(tot.cost_usd)),
      card("user", users.length ? users.map((u) => userLink(u)) : "–"),
      card("session", sessions.length ? sessions.map((s) => sessionLink(s)) : "–")),
    h("div", { class: "trace-layout" },
      h("div", {}, table(["span", "timeline", { class: "num", label: "duration" }, "model", { class: "num", label: "tokens" },
        { class: "num", label: "cost" }, "status", { class: "num", label: "subtree" }], rows, "waterfall")),
      paneHolder),
    (t.logs || []).length ? [h("h2", {}, "Log records without a stored span"),
      table(["time", "event", "body"], t.logs.map((r) => h("tr", {}, h("td", {}, when(r.time_ns)),
        h("td", {}, text(r.event_name || "")), h("td", { class: "mono" }, text(r.body)))))] : null];
}

// --- sessions and users ------------------------------------------------------------
async function sessionsList(params) {
  const since = params.since || "24h";
  const body = await api("/api/sessions" + query({ since, user: params.user, limit: 100 }));
  const select = sinceSelect("since", since, false);
  select.addEventListener("change", () => { location.hash = "#/sessions" + query({ since: select.value, user: params.user }); });
  return [h("h1", {}, "Sessions ", select), table(["session", "last activity (UTC)", { class: "num", label: "turns" }, "users",
    { class: "num", label: "LLM calls" }, { class: "num", label: "errors" }, { class: "num", label: "cost" }],
  body.sessions.map((s) => h("tr", {}, h("td", {}, sessionLink(s.session_id)), h("td", {}, when(s.last_ns)),
    h("td", { class: "num" }, num(s.turns)), h("td", {}, s.users.map((u) => [userLink(u), " "])),
    h("td", { class: "num" }, num(s.llm_calls)), h("td", { class: "num" }, num(s.errors)),
    h("td", { class: "num" }, usd(s.cost_usd))))), body.sessions.length ? null : h("p", { class: "muted" }, "No session in this window.")];
}

async function sessionView(id) {
  const s = await api(`/api/sessions/${enc(id)}`);
  const tot = s.totals;
  return [h("h1", {}, "Session ", text(s.session_id)),
    h("div", { class: "cards" }, card("turns", num(tot.turns)), card("cost", usd(tot.cost_usd)),
      card("time in turns", ms(tot.duration_ns)), card("LLM calls", num(tot.llm_calls)), card("errors", num(tot.errors)),
      card("users", s.users.length ? s.users.map((u) => [userLink(u), " "]) : "–")),
    table([{ class: "num", label: "turn" }, "trace", "start (UTC)", "root", "models", "user", { class: "num", label: "latency" },
      { class: "num", label: "tokens" }, { class: "num", label: "errors" }, { class: "num", label: "cost" }],
    s.turns.map((t) => h("tr", { "data-turn": t.turn }, h("td", { class: "num" }, t.turn), h("td", { class: "mono" }, traceLink(t.trace_id)),
      h("td", {}, when(t.start_ns)), h("td", {}, text(t.root_name || "")), h("td", {}, text(t.models.join(", "))),
      h("td", {}, userLink(t.user_id)), h("td", { class: "num" }, ms(t.duration_ns)),
      h("td", { class: "num" }, num(t.input_tokens + t.output_tokens)), h("td", { class: "num" }, num(t.errors)),
      h("td", { class: "num" }, usd(t.cost_usd)))), "turns")];
}

async function userView(id, params) {
  const interval = params.interval === "hour" ? "hour" : "day";
  const since = params.since || "30d";
  const u = await api(`/api/users/${enc(id)}` + query({ since, interval, limit: 50 }));
  const tot = u.totals;
  const top = [...u.traces].sort((a, b) => (b.cost_usd ?? -1) - (a.cost_usd ?? -1));
  return [h("h1", {}, "User ", text(u.user_id)),
    h("p", {}, ["day", "hour"].map((i) => [i === interval ? h("strong", {}, i) : link(`#/users/${enc(id)}` + query({ since, interval: i }), i), " "]),
      " · ", SINCE.filter(Boolean).map((s) => [s === since ? h("strong", {}, s) : link(`#/users/${enc(id)}` + query({ since: s, interval }), s), " "])),
    h("div", { class: "cards" }, card("traces", num(tot.traces)), card("cost", usd(tot.cost_usd)),
      card("LLM calls", num(tot.llm_calls)), card("tokens in/out", `${num(tot.input_tokens)} / ${num(tot.output_tokens)}`),
      card("errors", num(tot.errors)), h("div", { class: "card" }, h("div", { class: "v" }, link(`#/traces?user=${enc(id)}`, "all traces")))),
    barChart(`Spend per ${interval}`, u.series, { label: (r) => when(r.start_ns).slice(0, interval === "day" ? 10 : 16) }),
    h("h2", {}, `Top traces (most expensive of the ${u.traces.length} most recent)`),
    table(["trace", "start (UTC)", "root", "models", "session", { class: "num", label: "duration" }, { class: "num", label: "cost" }],
      top.map((t) => h("tr", {}, h("td", { class: "mono" }, traceLink(t.trace_id)), h("td", {}, when(t.start_ns)),
        h("td", {}, text(t.root_name || "")), h("td", {}, text(t.models.join(", "))), h("td", {}, sessionLink(t.session_id)),
        h("td", { class: "num" }, ms(t.duration_ns)), h("td", { class: "num" }, usd(t.cost_usd)))), "user-traces")];
}

// --- cost, alerts, budgets ---------------------------------------------------------
const COST_BY = { model: null, feature: null, user: (r) => `#/users/${enc(r.group)}`, tenant: null, service: null };

async function costView(params) {
  const since = params.since || "24h";
  const interval = ["15m", "1h", "6h", "24h"].includes(since) ? "hour" : "day";
  const [spend, ...results] = await Promise.all([api("/api/analytics/spend" + query({ since, interval })),
    ...Object.keys(COST_BY).map((by) => api("/api/analytics/cost" + query({ by, since })))]);
  const select = sinceSelect("since", since, false);
  select.addEventListener("change", () => { location.hash = "#/cost" + query({ since: select.value }); });
  return [h("h1", {}, "Cost ", select),
    h("div", { class: "cards" }, card("spend", usd(spend.totals.cost_usd)), card("traces", num(spend.totals.traces)),
      card("LLM calls", num(spend.totals.llm_calls)), card("errors", num(spend.totals.errors))),
    barChart(`Spend per ${interval}`, spend.series, { label: (r) => when(r.start_ns).slice(0, interval === "day" ? 10 : 16) }),
    h("div", { class: "charts" }, Object.keys(COST_BY).map((by, i) =>
      barChart(`Spend by ${by}`, results[i], { href: COST_BY[by] }))),
    h("h2", {}, "By model"),
    table(["model", { class: "num", label: "cost" }, { class: "num", label: "calls" }, { class: "num", label: "tokens in" },
      { class: "num", label: "tokens out" }, { class: "num", label: "p50" }, { class: "num", label: "p95" }],
    results[0].map((r) => h("tr", {}, h("td", {}, text(r.group ?? "(none)")), h("td", { class: "num" }, usd(r.cost_usd)),
      h("td", { class: "num" }, num(r.calls)), h("td", { class: "num" }, num(r.input_tokens)), h("td", { class: "num" }, num(r.output_tokens)),
      h("td", { class: "num" }, r.p50_ms === null ? "–" : `${r.p50_ms.toFixed(0)} ms`),
      h("td", { class: "num" }, r.p95_ms === null ? "–" : `${r.p95_ms.toFixed(0)} ms`))), "cost-by-model")];
}

function alertsTable(alerts) {
  if (!alerts.length) return h("p", { class: "muted" }, "none");
  const keys = [...new Set(alerts.flatMap((a) => Object.keys(a)))].filter((k) => typeof alerts[0][k] !== "object" || k === "labels");
  return table(keys, alerts.map((a) => h("tr", {}, keys.map((k) => h("td", {},
    k === "trace_id" && a[k] ? traceLink(a[k]) : k === "user_id" && a[k] ? userLink(a[k]) : k.endsWith("_ns") && a[k] ? when(a[k])
      : text(typeof a[k] === "object" && a[k] !== null ? JSON.stringify(a[k]) : a[k] ?? ""))))), "alerts");
}

async function alertsView() {
  const [active, recent] = await Promise.all([api("/api/alerts?state=active"), api("/api/alerts?state=all&limit=100")]);
  return [h("h1", {}, "Alerts"), h("h2", {}, `Active (${active.active_count})`), alertsTable(active.alerts),
    h("h2", {}, "Recent (firing and resolved, newest first)"), alertsTable(recent.alerts)];
}

async function budgetsView(params) {
  const defs = await api("/api/budgets");
  const form = h("form", { class: "filters" },
    h("label", {}, "scope", h("input", { name: "scope", value: params.scope || "", placeholder: "user", size: 14 })),
    h("label", {}, "id", h("input", { name: "id", value: params.id || "", placeholder: "u-42", size: 20 })),
    h("button", { type: "submit" }, "Show utilisation"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const fd = new FormData(form);
    location.hash = "#/budgets" + query({ scope: fd.get("scope").trim(), id: fd.get("id").trim() });
  });
  let status = null;
  if (params.scope && params.id) {
    try {
      const st = await api(`/api/budgets/${enc(params.scope)}/${params.id.split("/").map(enc).join("/")}`);
      status = table(["budget", "period", { class: "num", label: "spent" }, { class: "num", label: "limit" },
        { class: "num", label: "tokens" }, "utilisation", "resets (UTC)"],
      st.budgets.map((b) => {
        const ratio = b.utilization ?? 0;
        return h("tr", { "data-budget": b.budget }, h("td", {}, text(b.budget)), h("td", {}, text(`${b.period} (${b.time_zone})`)),
          h("td", { class: "num" }, usd(b.spent_usd)), h("td", { class: "num" }, b.limit_usd === null ? "none" : usd(b.limit_usd)),
          h("td", { class: "num" }, `${num(b.spent_tokens)} / ${b.limit_tokens === null ? "none" : num(b.limit_tokens)}`),
          h("td", {}, h("div", { class: "util", title: b.utilization === null ? "no limit" : `${(ratio * 100).toFixed(1)}%` },
            h("div", { class: b.exceeded ? "over" : "", style: { width: `${Math.min(1, ratio) * 100}%` } })),
          b.utilization === null ? "" : ` ${(ratio * 100).toFixed(1)}%`),
          h("td", {}, text(b.reset_at)));
      }), "budget-status");
    } catch (e) {
      status = showError(e);
    }
  }
  return [h("h1", {}, "Budgets"), form, status, h("h2", {}, "Definitions"),
    defs.budgets.length ? table(Object.keys(defs.budgets[0]), defs.budgets.map((b) => h("tr", {}, Object.keys(defs.budgets[0]).map((k) =>
      h("td", {}, text(typeof b[k] === "object" && b[k] !== null ? JSON.stringify(b[k]) : b[k] ?? "")))))) : h("p", { class: "muted" }, "none")];
}

// --- router ------------------------------------------------------------------------
async function route() {
  const { parts, params } = parseHash();
  const [page, id] = parts;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === (page || "traces"));
  const render = {
    traces: () => (id ? traceView(id, params) : tracesList(params)),
    sessions: () => (id ? sessionView(id) : sessionsList(params)),
    users: () => userView(id, params),
    cost: () => costView(params),
    alerts: () => alertsView(),
    budgets: () => budgetsView(params),
  }[page || "traces"];
  view.setAttribute("aria-busy", "true");
  let content;
  try {
    content = render ? await render() : [h("div", { class: "banner" }, "Unknown page: ", page)];
  } catch (e) {
    content = [showError(e)];
  }
  view.replaceChildren(...[content].flat(Infinity).filter(Boolean));
  view.dataset.page = page || "traces";
  view.removeAttribute("aria-busy");
}

function showTokenState() {
  document.getElementById("token-state").textContent = token.get() ? "token set (this tab)" : "no token";
}

document.getElementById("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = document.getElementById("token-input");
  token.set(input.value.trim());
  input.value = "";
  showTokenState();
  route();
});
document.getElementById("token-clear").addEventListener("click", () => {
  token.set("");
  showTokenState();
  route();
});
window.addEventListener("hashchange", route);
showTokenState();
route();
