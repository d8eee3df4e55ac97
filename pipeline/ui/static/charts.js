// Horizontal bar charts as SVG, drawn from API rows (the bar values are the API's numbers).
import { h, usd } from "./dom.js";

export function barChart(title, rows, { label = (r) => r.group ?? "(none)", value = (r) => r.cost_usd ?? 0,
  fmt = usd, href = null } = {}) {
  const width = 560, rowH = 22, labelW = 170, valueW = 90;
  const max = Math.max(0, ...rows.map(value));
  const svg = h("svg", { viewBox: `0 0 ${width} ${Math.max(1, rows.length) * rowH + 4}`, role: "img",
    "aria-label": title });
  rows.forEach((r, i) => {
    const v = value(r);
    const w = max > 0 ? Math.max(1, ((width - labelW - valueW) * v) / max) : 1;
    const y = i * rowH + 2;
    const name = String(label(r));
    const short = name.length > 26 ? name.slice(0, 25) + "…" : name;
    const t = h("text", { x: labelW - 6, y: y + 15, "text-anchor": "end" }, short);
    const bar = h("rect", { class: "bar", x: labelW, y: y + 3, width: w, height: rowH - 6, "data-label": name,
      "data-value": String(v) }, h("title", {}, `${name}: ${fmt(v)}`));
    const val = h("text", { x: labelW + w + 6, y: y + 15, class: "value" }, fmt(v));
    const g = h("g", { class: "row" }, t, bar, val);
    if (href && label(r) !== null) {
      const a = document.createElementNS("http://www.w3.org/2000/svg", "a");
      a.setAttribute("href", href(r));
      a.append(g);
      svg.append(a);
    } else svg.append(g);
  });
  if (!rows.length) svg.append(h("text", { x: 4, y: 16, class: "muted" }, "no data"));
  return h("div", { class: "chart", "data-chart": title }, h("h2", {}, title), svg);
}
