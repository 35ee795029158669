// tokenbudget dashboard: fetches /dashboard/data and draws hand-written SVG charts (no libraries, no CDN).
// The bearer token, when the service needs one, comes from "#token=..." in the URL or the form,
// and is kept in sessionStorage for this tab only.
// Every URL is relative to this script's own (…/dashboard/static/dashboard.js), never root-absolute,
// so the page works wherever the service is: at /, mounted under a prefix, or behind a proxy's path.
"use strict";

const DASHBOARD = new URL("../", document.currentScript.src); // …/dashboard/

const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#3062d4", "#2e9e6b", "#d98a1c", "#8e44ad", "#c9362b", "#16a2b8", "#7f8c8d", "#b8860b", "#e67e9f", "#34495e"];

function $(id) { return document.getElementById(id); }

function token() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    sessionStorage.setItem("tokenbudget-token", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("tokenbudget-token");
}

// Money arrives as decimal strings; shown with 6 decimals (2 from $100 up).
function usd(value) {
  if (value === null || value === undefined) return "–";
  const n = Number(value);
  if (Math.abs(n) >= 100) {
    return "$" + n.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  }
  return "$" + n.toFixed(6);
}
// A cost that leaves out calls of models without a known price is marked "*" (see the note): never shown as free.
function cost(value, unpriced) {
  return unpriced && value !== null && value !== undefined ? usd(value) + "*" : usd(value);
}
function pct(value) { return value === null || value === undefined ? "–" : (Number(value) * 100).toFixed(1) + "%"; }
function int(value) { return Number(value).toLocaleString("en-US"); }
function label(key) { return key === null ? "(none)" : key; }
// A row's label: its id, or for the last row summing the rest past the top N, "(N more)".
function rowLabel(row, key) { return row.omitted ? `(${int(row.omitted)} more)` : label(key); }
function dataKey(row, key) { return row.omitted ? "(more)" : key === null ? "" : key; }

function el(tag, attrs, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(width, height) {
  return el("svg:svg", { viewBox: `0 0 ${width} ${height}`, role: "img", preserveAspectRatio: "xMinYMin meet" });
}

function empty(target, message) {
  target.replaceChildren(el("p", { class: "empty" }, message));
}

// Line chart of cost per active user per day; days without active users leave a gap.
function lineChart(target, days) {
  const points = days.filter((d) => d.cost_per_active_user_usd !== null);
  if (!points.length) return empty(target, "No active users in these days.");
  const W = 760, H = 220, L = 80, R = 16, T = 14, B = 34;
  const max = Math.max(...points.map((d) => Number(d.cost_per_active_user_usd))) || 1;
  const x = (i) => L + (days.length === 1 ? (W - L - R) / 2 : (i * (W - L - R)) / (days.length - 1));
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const chart = svg(W, H);
  chart.append(el("svg:line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  chart.append(el("svg:line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  chart.append(el("svg:text", { x: L - 6, y: T + 4, "text-anchor": "end" }, usd(max)));
  chart.append(el("svg:text", { x: L - 6, y: H - B, "text-anchor": "end" }, usd(0)));
  let path = "";
  let pen = "M";
  days.forEach((d, i) => {
    if (d.cost_per_active_user_usd === null) { pen = "M"; return; }
    const v = Number(d.cost_per_active_user_usd);
    path += `${pen}${x(i).toFixed(1)},${y(v).toFixed(1)} `;
    pen = "L";
    const dot = el("svg:circle", { class: "dot", cx: x(i), cy: y(v), r: 4, "data-day": d.day });
    dot.append(el("svg:title", {}, `${d.day}: ${usd(d.cost_per_active_user_usd)} per active user`));
    chart.append(dot);
  });
  chart.prepend(el("svg:path", { class: "line", d: path.trim() }));
  const every = Math.ceil(days.length / 10);
  days.forEach((d, i) => {
    if (i % every === 0 || i === days.length - 1) {
      chart.append(el("svg:text", { x: x(i), y: H - B + 16, "text-anchor": "middle" }, d.day.slice(5)));
    }
  });
  target.replaceChildren(chart);
}

// Horizontal bars: one row per key, the value printed at the bar's end.
function barChart(target, rows, valueOf, text, opts = {}) {
  if (!rows.length) return empty(target, opts.emptyText || "Nothing recorded in these days.");
  const W = 400, row = 26, L = 150, R = 90;
  const max = Math.max(...rows.map(valueOf), opts.max || 0) || 1;
  const chart = svg(W, rows.length * row + 4);
  rows.forEach((r, i) => {
    const y = i * row + 4;
    const g = el("svg:g", { class: "bar-row", "data-key": dataKey(r, r.key), "data-value": opts.raw ? opts.raw(r) : "" });
    g.append(el("svg:text", { class: "label", x: 0, y: y + 14 }, rowLabel(r, r.key).slice(0, 24)));
    g.append(el("svg:rect", { class: "track", x: L, y: y + 2, width: W - L - R, height: 16, rx: 3 }));
    const width = Math.max(((W - L - R) * valueOf(r)) / max, valueOf(r) > 0 ? 1 : 0);
    g.append(el("svg:rect", { class: opts.cls ? opts.cls(r) : "bar", x: L, y: y + 2, width, height: 16, rx: 3 }));
    g.append(el("svg:text", { class: "value", x: W - R + 6, y: y + 14 }, text(r)));
    chart.append(g);
  });
  target.replaceChildren(chart);
}

function spendBars(target, rows) {
  barChart(target, rows, (r) => Number(r.cost_usd), (r) => cost(r.cost_usd, r.unpriced_requests), { raw: (r) => r.cost_usd });
}

function table(target, rows, cells) {
  const body = target.querySelector("tbody");
  body.replaceChildren(...rows.map((r) => {
    const tr = el("tr");
    for (const [cls, value, raw] of cells(r)) {
      const td = el("td", { class: cls }, value);
      if (raw !== undefined && raw !== null) td.setAttribute("data-value", raw);
      tr.append(td);
    }
    return tr;
  }));
}

// 100% stacked bar of calls by model, with a legend; widths are shares of all calls.
function mixChart(target, mix, totals) {
  const total = totals.requests;
  if (!total) return empty(target, "No calls in these days.");
  const W = 380, H = 28;
  const chart = svg(W, H);
  let x = 0;
  const legend = el("ul", { class: "legend" });
  mix.forEach((m, i) => {
    const width = (W * m.requests) / total;
    const color = PALETTE[i % PALETTE.length];
    const rect = el("svg:rect", { x, y: 0, width, height: H, fill: color });
    rect.append(el("svg:title", {}, `${rowLabel(m, m.model)}: ${pct(m.share)}`));
    chart.append(rect);
    x += width;
    const item = el("li", { "data-key": dataKey(m, m.model), "data-value": m.share });
    item.append(el("span", { class: "swatch", style: `background:${color}` }));
    item.append(document.createTextNode(`${rowLabel(m, m.model)} ${pct(m.share)} (${int(m.requests)})`));
    legend.append(item);
  });
  const saved = el("p", { class: "muted", id: "routing-saved", "data-value": totals.routing_saved_usd },
    `${int(totals.routed_requests)} routed calls; saved ${usd(totals.routing_saved_usd)} vs the premium tier.`);
  target.replaceChildren(chart, legend, saved);
}

function cacheChart(target, totals) {
  const rate = totals.cache_hit_rate === null ? 0 : Number(totals.cache_hit_rate);
  barChart(
    target,
    [{ key: "hit rate", v: rate }],
    (r) => r.v,
    () => pct(totals.cache_hit_rate),
    { max: 1, raw: () => totals.cache_hit_rate ?? "" },
  );
  // The report's hit rate: over the app's own calls (tokenbudget's own, e.g. the embeddings of a
  // semantic cache's lookups, are not calls a cache could have answered).
  const own = totals.overhead_requests
    ? ` (${int(totals.overhead_requests)} of tokenbudget's own calls not counted)` : "";
  target.append(el("p", { class: "muted" },
    `${int(totals.own_cache_hits)} of ${int(totals.own_requests)} calls answered from cache${own}; saved ${usd(totals.saved_usd)}.`));
}

function budgetChart(target, budgets) {
  barChart(
    target,
    budgets.map((b) => ({ ...b, key: b.feature ? `${b.feature}: ${b.budget}` : b.budget })),
    (b) => Math.min(b.share, 1),
    (b) => (b.unit === "usd" ? usd(b.headroom) : int(b.headroom)) + " left",
    { max: 1, cls: (b) => "step-" + b.step, raw: (b) => b.headroom, emptyText: "No budget limits configured." },
  );
}

function render(data) {
  const t = data.totals;
  const latest = [...data.per_day].reverse().find((d) => d.cost_per_active_user_usd !== null);
  $("period").textContent = `${data.days[0]} – ${data.days[data.days.length - 1]} (${data.timezone})`;
  $("kpi-cost").textContent = cost(t.cost_usd, t.unpriced_requests);
  $("kpi-cost").dataset.value = t.cost_usd;
  $("kpi-requests").textContent = int(t.requests);
  $("kpi-users").textContent = int(t.active_users);
  $("kpi-cpu").textContent = latest ? cost(latest.cost_per_active_user_usd, latest.unpriced_requests) : "–";
  $("kpi-cpu").dataset.value = latest ? latest.cost_per_active_user_usd : "";
  $("kpi-hit-rate").textContent = pct(t.cache_hit_rate);
  $("kpi-saved").textContent = usd(t.saved_usd);
  $("kpi-projected").textContent = cost(data.projection.projected_usd, data.projection.unpriced_requests);
  // Before the month's first full day there is no projection: say why instead of a wild number.
  $("kpi-projected-note").textContent = data.projection.reason || "";
  const unpriced = Math.max(t.unpriced_requests, data.projection.unpriced_requests || 0);
  $("unpriced-note").hidden = !unpriced;
  $("unpriced-note").textContent = unpriced
    ? `* leaves out ${int(t.unpriced_requests)} call(s) of these days (${int(data.projection.unpriced_requests || 0)} this month) ` +
      "of models without a known price: their cost is unknown, not $0."
    : "";
  lineChart($("cpu-chart"), data.per_day);
  table($("per-day"), [...data.per_day].reverse(), (d) => [
    ["day", d.day], ["requests", int(d.requests)], ["cost", cost(d.cost_usd, d.unpriced_requests), d.cost_usd],
    ["users", int(d.active_users)],
    ["cpu", cost(d.cost_per_active_user_usd, d.unpriced_requests), d.cost_per_active_user_usd],
  ]);
  spendBars($("by-feature"), data.by_feature);
  spendBars($("by-model"), data.by_model);
  table($("top-users"), data.top_users, (u) => [
    ["user", rowLabel(u, u.key)], ["requests", int(u.requests)],
    ["cost", cost(u.cost_usd, u.unpriced_requests), u.cost_usd],
  ]);
  budgetChart($("budgets"), data.budgets);
  cacheChart($("cache"), t);
  mixChart($("routing-mix"), data.routing_mix, t);
}

async function load() {
  const days = $("days").value;
  const headers = {};
  const secret = token();
  if (secret) headers.Authorization = "Bearer " + secret;
  document.body.dataset.ready = "false";
  const response = await fetch(new URL(`data?last_days=${encodeURIComponent(days)}`, DASHBOARD), { headers });
  if (response.status === 401) {
    $("auth").hidden = false;
    $("content").hidden = true;
    return;
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    $("error").textContent = body.message || `The service answered ${response.status}.`;
    $("error").hidden = false;
    return;
  }
  $("error").hidden = true;
  $("auth").hidden = true;
  render(await response.json());
  $("content").hidden = false;
  document.body.dataset.ready = "true";
}

$("auth").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("tokenbudget-token", $("token").value);
  load();
});
$("days").addEventListener("change", load);
load().catch((e) => { $("error").textContent = String(e); $("error").hidden = false; });
