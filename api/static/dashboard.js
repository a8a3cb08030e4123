// The dashboard: polls /api/overview, /api/platforms and /api/ticks once per tick and follows the bids
// live from /decisions/stream (server-sent events, read with fetch so the token goes in a header).
"use strict";

const state = {
  token: localStorage.getItem("ce-token") || "",
  tickSeconds: 2,
  sort: { key: "id", desc: false },
  campaigns: [],
  decisionsSeen: 0,
  recent: [], // timestamps of decisions seen, for the rate
  stream: null, // the AbortController of the open event stream
  lastEventId: "",
  polling: false,
};

const MAX_DECISION_ROWS = 40;
const $ = (id) => document.getElementById(id);

const money = (v) => (v === null || v === undefined ? "-" :
  v.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 }));
const num = (v, digits = 2) => (v === null || v === undefined ? "-" : v.toFixed(digits));
const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) =>
  ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

async function getJson(path) {
  const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401) {
    $("token-banner").hidden = false;
    throw new Error("the API token is needed to read");
  }
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function setError(message) {
  const banner = $("error-banner");
  banner.hidden = !message;
  banner.textContent = message || "";
}

// --- campaigns -------------------------------------------------------------------------------------
const sortKeys = {
  id: (c) => c.id,
  status: (c) => c.status,
  spent: (c) => c.balance.spent,
  pace: (c) => c.pacing.spent_vs_plan ?? -1,
  value: (c) => c.outcomes.value,
  conversions: (c) => c.outcomes.conversions,
  cpa: (c) => c.outcomes.cpa ?? Infinity,
  goal: (c) => (c.goal ? c.goal.achieved / c.goal.target : -1),
};

// The goal's progress and the engine's projection: met, on track, or at risk with the shortfall.
const compactFormat = new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 1 });
const compact = (v) => (Math.abs(v) >= 10000 ? compactFormat.format(v) : num(v, Math.abs(v) >= 100 ? 0 : 2));

function goalCell(g) {
  if (!g) return '<span class="muted">-</span>';
  const unit = g.metric === "clicks" ? "clicks" : "conv.";
  const cls = { met: "under", "on track": "", "at risk": "over" }[g.status] ?? "muted";
  let note = g.status;
  if (g.status === "at risk" && g.shortfall !== null) note += `, ${compact(g.shortfall)} short`;
  const title = g.projected === null ? "not yet planned" : `projected ${num(g.projected)} by the end of the flight`;
  return `<span class="goal-progress" title="${escapeHtml(title)}">${compact(g.achieved)}
      <span class="muted">/ ${compact(g.target)} ${unit}</span></span>
    <span class="goal-status ${cls}">${escapeHtml(note)}</span>`;
}

function campaignRow(c) {
  const budget = c.balance.budget;
  const spentShare = budget > 0 ? Math.min(1, c.balance.spent / budget) : 0;
  const planShare = c.pacing.plan !== null && budget > 0 ? Math.min(1, c.pacing.plan / budget) : null;
  const ratio = c.pacing.spent_vs_plan;
  let pace = '<span class="muted">-</span>';
  if (ratio !== null) {
    const cls = ratio > 1.1 ? "ahead" : ratio < 0.9 ? "behind" : "";
    pace = `<span class="pace ${cls}">${(ratio * 100).toFixed(0)}% of plan</span>`;
  }
  const engine = [];
  if (c.pacing.engine_planned !== null) engine.push(`engine planned ${money(c.pacing.engine_planned)} for its last tick`);
  if (c.pacing.lam !== null) engine.push(`pacing multiplier ${c.pacing.lam.toFixed(3)}`);
  if (c.pacing.no_bid_reason) engine.push(`no bid: ${c.pacing.no_bid_reason}`);
  const target = c.spec.target_cpa;
  const cpa = c.outcomes.cpa;
  let cpaCell = `<span class="cpa">${cpa === null ? "-" : money(cpa)}</span>`;
  if (target !== null && cpa !== null) {
    cpaCell = `<span class="cpa ${cpa > target ? "over" : "under"}">${money(cpa)}</span>`;
  }
  cpaCell += ` <span class="muted">/ ${target === null ? "-" : money(target)}</span>`;
  return `<tr data-campaign="${escapeHtml(c.id)}" data-spent="${c.balance.spent}" data-budget="${budget}"
      data-value="${c.outcomes.value}" data-conversions="${c.outcomes.conversions}" data-status="${c.status}"
      data-goal-status="${c.goal ? escapeHtml(c.goal.status) : ""}" data-goal-achieved="${c.goal ? c.goal.achieved : ""}"
      data-goal-shortfall="${c.goal && c.goal.shortfall !== null ? c.goal.shortfall : ""}">
    <td>${escapeHtml(c.id)}</td>
    <td><span class="badge ${c.status}">${c.status}</span></td>
    <td class="num"><span class="spent">${money(c.balance.spent)}</span>
      <span class="muted">/ <span class="budget">${money(budget)}</span></span></td>
    <td title="${escapeHtml(engine.join("; "))}"><span class="bar" title="spent ${(spentShare * 100).toFixed(1)}% of budget${planShare === null ? "" :
      `, plan ${(planShare * 100).toFixed(1)}%`}"><span class="fill" style="width:${(spentShare * 100).toFixed(2)}%"></span>${
      planShare === null ? "" : `<span class="mark" style="left:${(planShare * 100).toFixed(2)}%"></span>`}</span>
      ${pace}</td>
    <td class="num value">${money(c.outcomes.value)}</td>
    <td class="num conversions">${num(c.outcomes.conversions)}</td>
    <td class="num">${cpaCell}</td>
    <td class="goal">${goalCell(c.goal)}</td>
    <td>${Charts.sparkline(c.roi_trend)}</td>
  </tr>`;
}

function renderCampaigns() {
  const { key, desc } = state.sort;
  const rows = [...state.campaigns].sort((a, b) => {
    const x = sortKeys[key](a), y = sortKeys[key](b);
    return (x < y ? -1 : x > y ? 1 : 0) * (desc ? -1 : 1);
  });
  document.querySelector("#campaigns tbody").innerHTML = rows.map(campaignRow).join("");
  document.querySelectorAll("#campaigns th[data-sort]").forEach((th) =>
    th.classList.toggle("sorted", th.dataset.sort === key));
}

function renderOverview(o) {
  const s = o.system;
  state.tickSeconds = s.tick_seconds;
  $("last-tick").textContent = s.last_tick ?? "-";
  $("last-tick").dataset.tick = s.last_tick ?? "";
  const age = s.last_tick_age_seconds;
  $("tick-age").textContent = age === null ? "-" : `${age.toFixed(1)} s`;
  $("tick-age").className = age !== null && age > Math.max(10, 5 * s.tick_seconds) ? "over" : "";
  $("workers-online").textContent = s.workers_online;
  $("workers-online").title = s.workers.join("\n");
  $("workers-online").className = s.workers_online === 0 ? "over" : "";
  const depth = s.queue_depth ? Object.values(s.queue_depth).reduce((a, b) => a + b, 0) : null;
  $("queue-depth").textContent = depth === null ? "-" : depth;
  $("queue-depth").title = s.queue_depth ? Object.entries(s.queue_depth).map(([q, n]) => `${q}: ${n}`).join("\n") : "";

  const t = o.totals;
  $("kpi-active").textContent = t.active;
  $("kpi-campaigns").textContent = `of ${t.campaigns} campaigns`;
  $("kpi-spent").textContent = money(t.spent);
  $("kpi-plan").textContent = `plan ${money(t.plan)}` + (t.plan > 0 ? ` (${((t.spent / t.plan) * 100).toFixed(0)}%)` : "");
  $("kpi-budget").textContent = money(t.budget);
  $("kpi-budget-share").textContent = t.budget > 0 ? `${((t.spent / t.budget) * 100).toFixed(1)}% spent` : "";
  $("kpi-value").textContent = money(t.value);
  $("kpi-roi").textContent = t.spent > 0 ? `ROI ${(t.value / t.spent).toFixed(2)}` : "ROI -";
  $("kpi-conversions").textContent = num(t.conversions, 1);
  $("kpi-cpa").textContent = t.conversions > 0 ? `CPA ${money(t.spent / t.conversions)}` : "CPA -";

  state.campaigns = o.campaigns;
  $("campaigns-note").textContent = o.campaigns.length < t.campaigns ?
    `first ${o.campaigns.length} of ${t.campaigns}` : `${t.campaigns}`;
  renderCampaigns();
}

// --- platforms and system --------------------------------------------------------------------------
const METRICS = [["cpc", "CPC"], ["cvr", "CVR"], ["volume", "volume"]];

function renderPlatforms(p) {
  const root = $("platforms");
  const ids = Object.keys(p.platforms);
  if (root.dataset.ids !== ids.join(",")) {
    root.dataset.ids = ids.join(",");
    root.innerHTML = ids.map((pid) => `<div class="platform" data-platform="${escapeHtml(pid)}">
      <h3>${escapeHtml(pid)}</h3><div class="charts">${METRICS.map(([m, label]) =>
        `<figure><figcaption>${label}</figcaption><canvas data-metric="${m}"></canvas></figure>`).join("")}
      </div></div>`).join("") || '<p class="note">no platform figures yet</p>';
  }
  for (const pid of ids) {
    const series = p.platforms[pid];
    for (const [m] of METRICS) {
      const canvas = root.querySelector(`[data-platform="${CSS.escape(pid)}"] canvas[data-metric="${m}"]`);
      Charts.draw(canvas, p.ticks, [
        { values: series.actual[m], color: "#4fb3ff" },
        { values: series.forecast[m], color: "#f5b942", dash: [4, 3] },
      ]);
    }
  }
}

function renderTicks(t) {
  const rows = t.ticks;
  const x = rows.map((r) => r.tick);
  Charts.draw($("chart-duration"), x, [{ values: rows.map((r) => r.worst_latency_ms), color: "#4fb3ff" }],
    { zeroBased: true, hline: { value: state.tickSeconds * 1000, color: "#ff6b6b" } });
  Charts.draw($("chart-late"), x, [
    { values: rows.map((r) => r.late + r.dropped), color: "#ff6b6b", kind: "bar" },
  ], { zeroBased: true, min: 0, integer: true });
  Charts.draw($("chart-bids"), x, [{ values: rows.map((r) => r.bids), color: "#3ecf8e", kind: "bar" }],
    { zeroBased: true, integer: true });
  const late = rows.reduce((a, r) => a + r.late + r.dropped, 0);
  const missed = rows.reduce((a, r) => a + r.missed, 0);
  $("late-total").textContent = rows.length ?
    `last ${rows.length} ticks: ${late} late or dropped evaluations, ${missed} missed` : "no finished tick yet";
  renderCapacity(rows);
}

// Over capacity as the fleet judges it (common/fleet/capacity.py), carried by each tick's summary.
function renderCapacity(rows) {
  const newest = rows[rows.length - 1];
  const share = (r) => `${Math.round(r.evaluated_share * 100)}%`;
  $("capacity").textContent = !newest ? "-" : newest.over_capacity ? `over ${share(newest)}` : "ok";
  $("capacity").className = newest && newest.over_capacity ? "over" : "";
  const over = rows.filter((r) => r.over_capacity).length;
  $("capacity-note").textContent = !newest ? "" : newest.over_capacity ?
    `over capacity: tick ${newest.tick} evaluated ${share(newest)} of its due campaigns, the most spend at stake ` +
    `first; ${over} of the last ${rows.length} ticks over capacity` :
    `capacity ok: tick ${newest.tick} evaluated ${share(newest)} of its due campaigns` +
    (over ? `; ${over} of the last ${rows.length} ticks over capacity` : "");
  $("capacity-note").className = newest && newest.over_capacity ? "note over" : "note";
}

// --- live decisions --------------------------------------------------------------------------------
function addDecision(d) {
  state.decisionsSeen += 1;
  const now = performance.now();
  state.recent.push(now);
  const body = document.querySelector("#decisions tbody");
  const row = document.createElement("tr");
  row.className = "new";
  row.dataset.id = d.id;
  row.innerHTML = `<td class="num">${d.tick}</td><td>${escapeHtml(d.campaign)}</td><td>${escapeHtml(d.platform)}</td>
    <td class="num">${d.bid.toFixed(3)}</td><td class="num">${d.spend_cap.toFixed(2)}</td>
    <td class="num">${d.cost.toFixed(2)}</td>`;
  body.prepend(row);
  while (body.rows.length > MAX_DECISION_ROWS) body.deleteRow(body.rows.length - 1);
}

function updateRate() {
  const cutoff = performance.now() - 5000;
  state.recent = state.recent.filter((t) => t >= cutoff);
  $("decisions-rate").textContent = (state.recent.length / 5).toFixed(0);
  $("decisions-count").textContent = state.decisionsSeen;
}

// The live bids are read with fetch, not EventSource: EventSource cannot send the token in a header,
// and a token in the URL would end up in logs and the browser's history.
const STREAM_RETRY_MS = 2000;

function setLive(on, text) {
  $("live").textContent = text;
  $("live").className = on ? "pill on" : "pill off";
}

function connectStream() {
  if (state.stream) state.stream.abort();
  const controller = new AbortController();
  state.stream = controller;
  readStream(controller.signal)
    .catch((err) => err)
    .then((err) => {
      if (state.stream !== controller) return; // replaced by a newer connection
      if (err && err.needsToken) { setLive(false, "token needed"); return; } // reconnects once one is given
      setLive(false, "reconnecting");
      setTimeout(() => { if (state.stream === controller) connectStream(); }, STREAM_RETRY_MS);
    });
}

async function readStream(signal) {
  const headers = { Accept: "text/event-stream" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
  const response = await fetch("/decisions/stream", { headers, signal, cache: "no-store" });
  if (response.status === 401) {
    $("token-banner").hidden = false;
    throw Object.assign(new Error("the API token is needed to read"), { needsToken: true });
  }
  if (!response.ok || !response.body) throw new Error(`/decisions/stream: HTTP ${response.status}`);
  setLive(true, "live");
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      handleEvent(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
    }
  }
}

// One server-sent event: "field: value" lines; comments (":") are keepalives.
function handleEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
    else if (field === "id") state.lastEventId = value;
  }
  if (event === "decision" && data.length) addDecision(JSON.parse(data.join("\n")));
}

// --- health ----------------------------------------------------------------------------------------
// What is wrong while it lasts, as /health says it: Redis unreachable since, no worker or no tick
// since, a platform skipped by its breaker, a platform's feed stale since, a clock off Redis time.
// Read apart from the other views, so that it shows while they fail (503 while Redis is down).
async function pollHealth() {
  const banner = $("health-banner");
  try {
    const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
    const response = await fetch("/health", { headers, cache: "no-store" });
    const body = await response.json();
    banner.hidden = body.status === "ok";
    banner.className = body.status;
    banner.innerHTML = `<strong>${escapeHtml(body.status)}</strong> ` +
      body.reasons.map((r) => `<span class="reason">${escapeHtml(r)}</span>`).join("");
  } catch (err) {
    banner.hidden = false;
    banner.className = "unavailable";
    banner.textContent = `the API does not answer: ${err.message}`;
  }
}

// --- polling ---------------------------------------------------------------------------------------
async function poll() {
  if (state.polling) return;
  state.polling = true;
  pollHealth();
  try {
    const [o, p, t] = await Promise.all([getJson("/api/overview"), getJson("/api/platforms"), getJson("/api/ticks")]);
    renderOverview(o);
    renderPlatforms(p);
    renderTicks(t);
    setError("");
    document.body.dataset.updated = String(o.now);
  } catch (err) {
    setError(`update failed: ${err.message}`);
  } finally {
    state.polling = false;
  }
}

function schedule() {
  poll().finally(() => setTimeout(schedule, Math.max(1000, state.tickSeconds * 1000)));
}

document.querySelectorAll("#campaigns th[data-sort]").forEach((th) => th.addEventListener("click", () => {
  const key = th.dataset.sort;
  state.sort = { key, desc: state.sort.key === key ? !state.sort.desc : key !== "id" && key !== "status" };
  renderCampaigns();
}));

$("token-banner").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("token-input").value.trim();
  localStorage.setItem("ce-token", state.token);
  $("token-banner").hidden = true;
  connectStream();
  poll();
});

setInterval(updateRate, 1000);
connectStream();
schedule();
