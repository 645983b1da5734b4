// porch dashboard: one page, hash routes, JSON from /api, live notices from /api/events (SSE).
// Everything shown is set with textContent or SVG attributes: no markup from data.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = {
  completed: "#2e9d5b", running: "#2f74d0", failed: "#d23f3f", paused: "#d69a18",
  pending: "#a9b0b9", cancelled: "#7a5cc2", timed_out: "#b4541c", requested: "#8aa4c8",
  dispatched: "#9cc3f0", lost: "#c9ced4", reused: "#7fc8a9",
};
const STATUSES = ["requested", "running", "paused", "completed", "failed", "cancelled", "timed_out"];

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(path, options) {
  const reply = await fetch("/api/" + path, options);
  const kind = reply.headers.get("Content-Type") || "";
  const body = kind.startsWith("application/json") ? await reply.json() : await reply.text();
  if (!reply.ok) throw new Error((body && body.error) || String(body) || reply.statusText);
  return body;
}

async function act(path) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
}

const kids = (...items) => items.filter((x) => x !== null && x !== undefined && x !== false);
const badge = (status) => h("span", { class: "badge " + status }, status.replace("_", " "));
const when = (ts) => (ts ? new Date(ts * 1000).toLocaleString() : "–");
const clock = (ts) => (ts ? new Date(ts * 1000).toLocaleTimeString() : "–");
const secs = (x) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2)) + " s";
const num = (x) => (x === null || x === undefined ? "–" : Number(x).toLocaleString());

// --- live notices and refreshes -------------------------------------------------------------

// A page's refresh runs when a notice says its data may have changed; one at a time, and a
// notice that comes meanwhile runs it once more after (no polling, no pile-up).
class Refresher {
  constructor(fn) { this.fn = fn; this.running = false; this.again = false; this.gone = false; }
  async run() {
    if (this.gone) return;
    if (this.running) { this.again = true; return; }
    this.running = true;
    try { await this.fn(); } catch (err) { showError(err); }
    this.running = false;
    if (this.again) { this.again = false; this.run(); }
  }
}

// Draws into `el` only when what it draws from changed: a refresh that brings the same data
// leaves that part of the page alone (no layout, no paint, a toggled <details> stays as it is).
const drawnFrom = new WeakMap(); // element -> the JSON of what it was drawn from
function redraw(el, data, draw) {
  const key = JSON.stringify(data);
  if (drawnFrom.get(el) === key) return;
  drawnFrom.set(el, key);
  el.replaceChildren(...[draw()].flat());
}

// Puts `nodes` in `parent`, replacing only the children that changed when the others stay in
// place (a live list where one row moved on redraws that row, not the table).
function patch(parent, nodes) {
  const old = parent.children;
  if (old.length === nodes.length && nodes.every((n, i) => n === old[i] || !n.isConnected)) {
    nodes.forEach((n, i) => { if (old[i] !== n) old[i].replaceWith(n); });
  } else {
    parent.replaceChildren(...nodes);
  }
}

let page = null; // { notice(n), stop() }
const liveEl = document.getElementById("live");

// One stream of notices at a time. An execution's page follows its execution on it: the
// notices about it carry what the page shows, so following a busy execution costs no request.
let source = null;
let followed = null;

function connect(follow, again) {
  if (source && follow === followed && !again) return;
  if (source) source.close();
  followed = follow;
  source = new EventSource("/api/events" + (follow ? "?execution=" + encodeURIComponent(follow) : ""));
  source.onopen = () => { liveEl.textContent = "live"; liveEl.classList.remove("off"); };
  source.onerror = () => { liveEl.textContent = "reconnecting…"; liveEl.classList.add("off"); };
  source.onmessage = (e) => {
    const notice = JSON.parse(e.data);
    liveEl.dataset.seq = notice.seq;
    if (page && page.notice) page.notice(notice);
  };
}

function showError(err) {
  const box = document.getElementById("page-error");
  if (box) box.textContent = String(err.message || err);
}

function route() {
  if (page && page.stop) page.stop();
  const main = document.getElementById("main");
  main.replaceChildren(h("div", { id: "page-error", class: "error" }));
  const [path, search] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(search || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const name = parts[0] || "executions";
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("active", a.dataset.nav === name || (name === "execution" && a.dataset.nav === "executions"));
  }
  const pages = { executions: executionsPage, execution: executionPage, schedules: schedulesPage, metrics: metricsPage, alerts: alertsPage };
  const make = pages[name];
  page = make ? make(main, parts.slice(1), params) : null;
  if (!make) main.append(h("p", {}, "No such page: ", path));
  connect(name === "execution" ? parts[1] : null, name === "execution"); // its hello draws it
}

// --- executions -----------------------------------------------------------------------------

function executionsPage(main, _parts, params) {
  const state = {
    status: params.get("status") || "", q: params.get("q") || "", page: Number(params.get("page") || 1),
  };
  const status = h("select", { id: "status-filter", onchange: () => { state.status = status.value; state.page = 1; refresh.run(); } },
    h("option", { value: "" }, "any status"), STATUSES.map((st) => h("option", { value: st }, st)));
  status.value = state.status;
  const search = h("input", { id: "search", type: "search", placeholder: "id, pipeline or trigger", value: state.q });
  let typing = null;
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.q = search.value; state.page = 1; refresh.run(); }, 250);
  });
  const counts = h("div", { class: "counts" });
  const body = h("tbody");
  const pager = h("div", { class: "pager" });
  main.append(
    h("h1", {}, "Executions"),
    h("div", { class: "panel" },
      h("div", { class: "filters" }, status, search, counts),
      h("table", { id: "executions" },
        h("thead", {}, h("tr", {}, ["Execution", "Status", "Pipeline", "Mode", "Started", "Duration", "Records", "Trigger"]
          .map((t, i) => h("th", { class: i >= 5 && i <= 6 ? "num" : "" }, t)))),
        body),
      pager),
  );
  let drawn = new Map(); // execution id -> { key, tr }: a row is drawn again only when it changed
  const refresh = new Refresher(async () => {
    const query = new URLSearchParams({ page: state.page, per_page: 50 });
    if (state.status) query.set("status", state.status);
    if (state.q) query.set("q", state.q);
    const data = await api("executions?" + query);
    redraw(counts, [data.by_status, data.evicted], () => kids(
      ...Object.entries(data.by_status).map(([k, v]) => h("span", {}, `${k} ${v}`)),
      data.evicted ? h("span", { title: "finished long ago: `porch replay --state ID` still shows them" }, `(+${data.evicted} older, not kept)`) : null,
    ));
    const rows = data.rows.map((r) => {
      const key = JSON.stringify(r);
      const had = drawn.get(r.execution_id);
      if (had && had.key === key) return had;
      return { key, tr: h("tr", {
        class: "clickable", "data-id": r.execution_id, "data-status": r.status,
        onclick: () => { location.hash = "#/execution/" + encodeURIComponent(r.execution_id); },
      },
        h("td", {}, h("a", { href: "#/execution/" + encodeURIComponent(r.execution_id) }, r.execution_id)),
        h("td", {}, badge(r.status)), h("td", {}, r.pipeline), h("td", {}, r.mode),
        h("td", {}, when(r.started_ts)), h("td", { class: "num" }, r.started_ts ? secs(r.duration_s) : "–"),
        h("td", { class: "num" }, num(r.records)), h("td", {}, r.trigger)) };
    });
    drawn = new Map(data.rows.map((r, i) => [r.execution_id, rows[i]]));
    patch(body, rows.length ? rows.map((r) => r.tr) : [h("tr", {}, h("td", { colspan: 8, class: "muted" }, "no executions match"))]);
    const pages = Math.max(1, Math.ceil(data.matched / data.per_page));
    redraw(pager, [state.page, pages, data.matched, data.kept], () => [
      h("button", { id: "prev", disabled: state.page <= 1, onclick: () => { state.page -= 1; refresh.run(); } }, "‹ newer"),
      h("span", { class: "muted" }, `page ${state.page} of ${pages} · ${data.matched} shown of ${data.kept} kept`),
      h("button", { id: "next", disabled: state.page >= pages, onclick: () => { state.page += 1; refresh.run(); } }, "older ›"),
    ]);
  });
  refresh.run();
  return { notice: (n) => { if (n.executions || n.all) refresh.run(); }, stop: () => { refresh.gone = true; } };
}

// --- one execution --------------------------------------------------------------------------

function executionPage(main, parts) {
  const id = parts[0];
  const facts = h("div", { class: "facts" });
  const ack = h("span", { id: "ack", class: "ack" });
  const buttons = Object.fromEntries(["pause", "resume", "cancel"].map((a) => [a, h("button", {
    id: a, class: a === "cancel" ? "danger" : "",
    onclick: async () => {
      if (a === "cancel" && !confirm(`Cancel execution ${id}?`)) return;
      ack.className = "ack"; ack.textContent = a + "…";
      try { const done = await act(`executions/${encodeURIComponent(id)}/${a}`); ack.className = "ack ok"; ack.textContent = done.message; }
      catch (err) { ack.className = "ack err"; ack.textContent = err.message; }
    },
  }, a[0].toUpperCase() + a.slice(1))]));
  const dag = h("div", { id: "dag" });
  const gantt = h("div", { id: "gantt" });
  const steps = h("div", { id: "steps" });
  const reports = h("div", { id: "reports" });
  const logBox = h("div", { id: "logs" }, h("p", { class: "muted" }, "Click a task in the timeline to see its log."));
  const slider = h("input", { id: "slider", type: "range", min: 0, max: 0, value: 0, step: 1 });
  const sliderLabel = h("span", { id: "slider-label", class: "muted" });
  const travelView = h("div", { id: "travel-view" });
  main.append(
    h("h1", {}, "Execution ", h("span", { id: "execution-id" }, id)),
    h("div", { class: "panel" }, facts, h("div", { class: "actions" }, buttons.pause, buttons.resume, buttons.cancel, ack)),
    h("div", { class: "panel" }, h("h2", {}, "Steps (DAG)"), dag),
    h("div", { class: "panel" }, h("h2", {}, "Records and reports per step"), steps, reports),
    h("div", { class: "panel" }, h("h2", {}, "Timeline of tasks by worker"), gantt),
    h("div", { class: "panel" }, h("h2", {}, "Task log"), logBox),
    h("div", { class: "panel" }, h("h2", {}, "Time travel"),
      h("div", { class: "travel" }, slider, sliderLabel), travelView),
  );
  let events = [];
  let tl = null; // the timeline, sent again only when it changed
  let following = true; // the slider stays at the newest event until moved
  const openLog = async (bar) => {
    const q = new URLSearchParams({ step: bar.step, phase: bar.phase, partition: bar.partition, attempt: bar.attempt });
    logBox.replaceChildren(h("p", { class: "muted" }, `${bar.step} ${bar.phase} part ${bar.partition} attempt ${bar.attempt}`),
      h("pre", { class: "log" }, await api(`executions/${encodeURIComponent(id)}/log?${q}`)));
  };
  // what the page shows, as its stream's notices carry it: the execution, its events list from
  // where it may have changed since the last notice, and its timeline when it changed
  const render = (shown) => {
    const ex = shown.execution, ev = shown.events;
    tl = shown.timeline || tl;
    main.dataset.status = ex.status;
    const started = ex.started_ts || ex.requested_ts;
    redraw(facts, [ex.status, ex.pipeline, ex.mode, ex.trigger, started, ex.started_ts && ex.duration_s, ex.records_processed, ex.error], () => kids(
      fact("Status", badge(ex.status)), fact("Pipeline", ex.pipeline), fact("Mode", ex.mode),
      fact("Trigger", ex.trigger), fact("Started", when(started)),
      fact("Duration", ex.started_ts ? secs(ex.duration_s) : "–"), fact("Records", num(ex.records_processed)),
      ex.error ? fact("Error", h("span", { class: "error" }, ex.error)) : null,
    ));
    const active = ["requested", "running", "paused"].includes(ex.status);
    buttons.pause.disabled = !active || ex.status === "paused";
    buttons.resume.disabled = !(ex.status === "paused" || ex.pause_requested) || !active;
    buttons.cancel.disabled = !active;
    redraw(dag, ex.dag, () => drawDag(ex.dag));
    redraw(steps, ex.steps, () => stepTable(ex.steps));
    const reported = Object.entries(ex.steps).filter(([, st]) => st.report && Object.keys(st.report).length);
    redraw(reports, reported, () => reported.map(([sid, st]) => reportView(sid, st)));
    // a bar still running grows with the clock: drawn again each time while there is one
    const moving = !ex.finished_ts && tl.bars.some((b) => ["running", "dispatched"].includes(b.status));
    redraw(gantt, [tl, ex.finished_ts, moving && Date.now()], () => drawGantt(tl, ex, openLog));
    events.length = Math.min(events.length, ev.start);
    for (const e of ev.events) events.push(e);
    slider.max = Math.max(0, events.length - 1);
    if (following) slider.value = slider.max;
    travelLabel();
    if (following) redraw(travelView, "hint", () => h("p", { class: "muted" }, "Move the slider to see the execution as it was at any event."));
    showError("");
  };
  const travelLabel = () => {
    const e = events[Number(slider.value)];
    sliderLabel.textContent = e ? `seq ${e.seq} · ${e.type}${e.step ? " · " + e.step : ""} · ${clock(e.ts)} (${Number(slider.value) + 1}/${events.length})` : "no events";
  };
  const travel = new Refresher(async () => {
    const e = events[Number(slider.value)];
    if (!e) return;
    const at = await api(`executions/${encodeURIComponent(id)}/at?seq=${e.seq}`);
    travelView.dataset.seq = at.seq;
    drawnFrom.delete(travelView);
    travelView.replaceChildren(
      h("p", {}, "As of seq ", h("b", { id: "travel-seq" }, at.seq), ": ", h("span", { id: "travel-status" }, badge(at.execution.status)),
        ` · ${num(at.execution.records_processed)} records`),
      drawDag(at.execution.dag), stepTable(at.execution.steps, "travel-steps"),
    );
  });
  slider.addEventListener("input", () => {
    following = Number(slider.value) === Number(slider.max);
    travelLabel();
    travel.run();
  });
  return {
    notice: (n) => {
      if (n.page && n.page.events.execution_id === id) {
        try { render(n.page); } catch (err) { showError(err); }
      } else if (n.page_error) {
        showError(n.page_error);
      }
    },
    stop: () => { travel.gone = true; },
  };
}

const fact = (label, value) => h("div", {}, h("label", {}, label), h("span", {}, value));

function stepTable(steps, id) {
  const rows = Object.entries(steps).map(([sid, st]) => h("tr", { "data-step": sid, "data-status": st.status },
    h("td", {}, sid), h("td", {}, badge(st.status)), h("td", { class: "num" }, `${st.parts_done}/${st.parts}`),
    h("td", { class: "num records-in" }, num(st.records_in)), h("td", { class: "num records-out" }, num(st.records_out)),
    h("td", { class: "num" }, st.status === "completed" ? secs(st.duration_s) : st.progress ? Math.round(st.progress.fraction * 100) + "%" : "–"),
    h("td", { class: "num" }, st.attempts), h("td", {}, [st.reused ? "reused" : "", st.removed ? "removed" : ""].join(" ").trim())));
  return h("table", { class: "steps", id: id || "steps-table" },
    h("thead", {}, h("tr", {}, ["Step", "Status", "Parts", "In", "Out", "Time", "Attempts", ""].map((t, i) => h("th", { class: i >= 2 && i <= 6 ? "num" : "" }, t)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 8, class: "muted" }, "not planned yet"))));
}

function reportView(sid, st) {
  const r = st.report;
  if (!Array.isArray(r.rules)) {
    return h("details", { class: "report", "data-step": sid, open: st.status === "failed" },
      h("summary", {}, `Report of ${sid}`), h("pre", { class: "log" }, JSON.stringify(r, null, 2)));
  }
  const failing = r.rules.filter((rule) => !rule.passed);
  return h("details", { class: "report validation", "data-step": sid, open: failing.length > 0 },
    h("summary", {}, `Validation of ${sid}: `, `${r.errors || 0} error rule(s), ${r.warnings || 0} warning rule(s) failed over ${num(r.rows)} rows`),
    h("table", {}, h("thead", {}, h("tr", {}, ["Rule", "Severity", "Failing", "Detail", "Examples"].map((t) => h("th", {}, t)))),
      h("tbody", {}, (failing.length ? failing : r.rules).map((rule) => h("tr", { class: "rule", "data-passed": String(!!rule.passed) },
        h("td", {}, rule.rule), h("td", {}, rule.severity), h("td", { class: "num" }, num(rule.failing)),
        h("td", {}, rule.detail || ""), h("td", {}, (rule.examples || []).slice(0, 3).map(example).join("; ")))))));
}

function example(e) {
  if (e && typeof e === "object" && "row" in e && e.values && typeof e.values === "object") {
    return `row ${e.row}: ` + Object.entries(e.values).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ");
  }
  return typeof e === "object" ? Object.entries(e || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ") : String(e);
}

// --- drawings -------------------------------------------------------------------------------

function drawDag(dag) {
  const level = {};
  const preds = {};
  for (const [a, b] of dag.edges) (preds[b] = preds[b] || []).push(a);
  const depth = (id, seen = new Set()) => {
    if (level[id] !== undefined) return level[id];
    if (seen.has(id)) return 0;
    seen.add(id);
    level[id] = Math.max(-1, ...(preds[id] || []).map((p) => depth(p, seen))) + 1;
    return level[id];
  };
  dag.nodes.forEach((n) => depth(n.id));
  const columns = {};
  for (const n of dag.nodes) (columns[level[n.id]] = columns[level[n.id]] || []).push(n);
  const W = 150, H = 42, GX = 40, GY = 16;
  const pos = {};
  let rows = 1;
  for (const [col, nodes] of Object.entries(columns)) {
    rows = Math.max(rows, nodes.length);
    nodes.forEach((n, i) => { pos[n.id] = { x: 10 + Number(col) * (W + GX), y: 10 + i * (H + GY) }; });
  }
  const cols = Object.keys(columns).length;
  const width = 20 + cols * W + (cols - 1) * GX, height = 20 + rows * H + (rows - 1) * GY;
  const svg = s("svg", { class: "dag", width, height, viewBox: `0 0 ${width} ${height}` });
  for (const [a, b] of dag.edges) {
    if (!pos[a] || !pos[b]) continue;
    const x1 = pos[a].x + W, y1 = pos[a].y + H / 2, x2 = pos[b].x, y2 = pos[b].y + H / 2;
    svg.append(s("path", { d: `M${x1},${y1} C${x1 + GX / 2},${y1} ${x2 - GX / 2},${y2} ${x2},${y2}`, "marker-end": "" }));
  }
  for (const n of dag.nodes) {
    const p = pos[n.id];
    const label = n.id === n.stage || n.id === "source" ? n.stage : `${n.id}`;
    svg.append(s("g", { class: "node", "data-step": n.id, "data-status": n.status, transform: `translate(${p.x},${p.y})` },
      s("title", {}, `${n.id} (${n.stage}): ${n.status}${n.parts > 1 ? `, ${n.parts} parts` : ""}${n.reused ? ", reused" : ""}`),
      s("rect", { width: W, height: H, fill: COLORS[n.status] || COLORS.pending }),
      s("text", { x: 8, y: 17 }, label.length > 20 ? label.slice(0, 19) + "…" : label),
      s("text", { x: 8, y: 33, class: "sub" }, n.status + (n.parts > 1 ? ` · ${n.parts} parts` : "") + (n.reused ? " · reused" : ""))));
  }
  return svg;
}

function drawGantt(tl, ex, onBar) {
  if (!tl.bars.length) return h("p", { class: "muted" }, "No task has been dispatched yet.");
  const lanes = tl.workers;
  const t0 = Math.min(...tl.bars.map((b) => b.dispatched_ts || b.started_ts || b.finished_ts));
  const now = Date.now() / 1000;
  const end = (b) => b.finished_ts || (["running", "dispatched"].includes(b.status) && !ex.finished_ts ? now : b.started_ts || b.dispatched_ts);
  const t1 = Math.max(t0 + 0.001, ...tl.bars.map(end), ex.finished_ts || 0);
  const LEFT = 170, ROW = 26, TOP = 22;
  const W = Math.max(480, document.getElementById("main").clientWidth - LEFT - 90);
  const x = (t) => LEFT + ((t - t0) / (t1 - t0)) * W;
  const height = TOP + lanes.length * ROW + 10;
  const svg = s("svg", { class: "gantt", width: LEFT + W + 20, height, viewBox: `0 0 ${LEFT + W + 20} ${height}` });
  const axis = s("g", { class: "axis" });
  for (let i = 0; i <= 5; i++) {
    const t = t0 + ((t1 - t0) * i) / 5;
    axis.append(s("line", { x1: x(t), x2: x(t), y1: TOP - 4, y2: height - 8 }), s("text", { x: x(t) + (i === 5 ? -2 : 2), y: 12, "text-anchor": i === 5 ? "end" : "start" }, `+${(t - t0).toFixed(2)}s`));
  }
  svg.append(axis);
  lanes.forEach((lane, i) => svg.append(s("g", { class: "lane" }, s("text", { x: 6, y: TOP + i * ROW + 16 }, lane.length > 24 ? lane.slice(0, 23) + "…" : lane))));
  for (const b of tl.bars) {
    const lane = lanes.indexOf(b.worker || "(not started)");
    const start = b.started_ts || b.dispatched_ts;
    const fill = b.reused ? COLORS.reused : COLORS[b.status] || COLORS.pending;
    const bx = x(start), bw = Math.max(3, x(end(b)) - bx);
    const g = s("g", { class: "bar", "data-status": b.status, "data-step": b.step, "data-attempt": b.attempt, "data-reused": String(b.reused), onclick: () => onBar(b).catch(showError) },
      s("title", {}, `${b.step} ${b.phase} part ${b.partition} attempt ${b.attempt}: ${b.status}${b.reused ? " (reused from checkpoint)" : ""}` +
        `${b.worker ? " on " + b.worker : ""}; ${b.finished_ts && start ? secs(b.finished_ts - start) : "…"}${b.rows_out ? `, ${b.rows_out} rows out` : ""}${b.error ? "\n" + b.error : ""}`),
      b.dispatched_ts && b.started_ts > b.dispatched_ts ? s("rect", { x: x(b.dispatched_ts), y: TOP + lane * ROW + 10, width: Math.max(1, bx - x(b.dispatched_ts)), height: 4, fill: COLORS.dispatched }) : null,
      s("rect", { x: bx, y: TOP + lane * ROW + 4, width: bw, height: ROW - 8, rx: 3, fill, stroke: b.attempt > 1 ? "#333" : "none", "stroke-dasharray": b.attempt > 1 ? "3 2" : "" }),
      bw > 60 ? s("text", { x: bx + 4, y: TOP + lane * ROW + 17, fill: "#fff" }, `${b.step}${b.partition || b.phase !== "run" ? ` ${b.phase}#${b.partition}` : ""}${b.attempt > 1 ? ` a${b.attempt}` : ""}`) : null);
    svg.append(g);
  }
  for (const m of tl.marks) {
    if (!["ExecutionPaused", "ExecutionResumed", "CancelRequested", "ExecutionFailed", "StageInvalidated"].includes(m.type) || m.ts < t0) continue;
    const label = m.type === "StageInvalidated" ? "recompute" : m.type.replace("Execution", "").toLowerCase();
    svg.append(s("g", { class: "mark" }, s("line", { x1: x(m.ts), x2: x(m.ts), y1: TOP - 4, y2: height - 8 }),
      s("text", { x: x(m.ts) + 3, y: height - 10 }, label)));
  }
  const legend = h("div", { class: "legend" }, ["completed", "running", "failed", "lost", "reused", "dispatched"].map((k) => h("span", {}, h("i", { style: `background:${COLORS[k]}` }), k === "dispatched" ? "waiting for a worker" : k)),
    h("span", {}, "dashed outline: a retry"));
  return h("div", {}, svg, legend);
}

// --- schedules ------------------------------------------------------------------------------

function ackBox() { return h("span", { class: "ack", id: "ack" }); }

async function press(ack, path, refresh) {
  ack.className = "ack"; ack.textContent = "…";
  try { const done = await act(path); ack.className = "ack ok"; ack.textContent = done.message; refresh.run(); }
  catch (err) { ack.className = "ack err"; ack.textContent = err.message; }
}

function schedulesPage(main) {
  const ack = ackBox();
  const list = h("tbody");
  const misses = h("div");
  const queue = h("div");
  main.append(h("h1", {}, "Schedules"), h("div", { class: "panel" }, ack,
    h("table", { id: "schedules" }, h("thead", {}, h("tr", {}, ["Schedule", "Type", "When", "State", "Next fires", "Fires", "Missed", "Recent runs", ""].map((t) => h("th", {}, t)))), list)),
    h("div", { class: "two" }, h("div", { class: "panel" }, h("h2", {}, "Misfires"), misses), h("div", { class: "panel" }, h("h2", {}, "Queue and retries"), queue)));
  const refresh = new Refresher(async () => {
    const data = await api("schedules");
    list.replaceChildren(...data.schedules.map((sc) => {
      const id = encodeURIComponent(sc.schedule_id);
      return h("tr", { "data-id": sc.schedule_id, "data-state": sc.state },
        h("td", {}, sc.schedule_id), h("td", {}, sc.schedule_type), h("td", {}, sc.schedule_expression || (sc.dependencies || []).join(", ")),
        h("td", {}, badge(sc.state === "active" ? "running" : sc.state === "paused" ? "paused" : "failed"), " ", sc.state),
        h("td", {}, sc.next_fires.length ? sc.next_fires.map((t) => when(t)).join("\n") : sc.dependencies.length ? "on upstream success" : "–"),
        h("td", { class: "num" }, sc.fires), h("td", { class: "num" }, sc.missed),
        h("td", {}, sc.runs.slice(0, 5).map((r) => h("a", { href: "#/execution/" + encodeURIComponent(r.execution_id), title: r.execution_id, style: "margin-right:4px" }, badge(r.status)))),
        h("td", {}, h("button", { onclick: () => press(ack, `schedules/${id}/${sc.state === "paused" ? "resume" : "pause"}`, refresh) }, sc.state === "paused" ? "Resume" : "Pause"), " ",
          h("button", { onclick: () => press(ack, `schedules/${id}/trigger`, refresh) }, "Trigger now")));
    }));
    if (!data.schedules.length) list.append(h("tr", {}, h("td", { colspan: 9, class: "muted" }, "no schedules: add one with `porch schedule add`")));
    misses.replaceChildren(data.missed.length ? h("table", {}, h("thead", {}, h("tr", {}, ["Schedule", "Slot", "Count", "Reason"].map((t) => h("th", {}, t)))),
      h("tbody", {}, data.missed.map((m) => h("tr", {}, h("td", {}, m.schedule_id), h("td", {}, when(m.fire_time)), h("td", { class: "num" }, m.count), h("td", {}, m.reason)))))
      : h("p", { class: "muted" }, "no misfires"));
    const q = data.queue;
    queue.replaceChildren(h("p", {}, `${q.running.length} running, ${q.queued.length} queued (at most ${q.max_concurrent_executions} at once), ${q.waiting_retries.length} retries waiting`),
      ...q.waiting_retries.map((r) => h("p", { class: "muted" }, `${r.execution_id} (schedule ${r.schedule_id}, attempt ${r.attempt})`)));
  });
  refresh.run();
  return { notice: (n) => { if (n.schedules) refresh.run(); }, stop: () => { refresh.gone = true; } };
}

// --- metrics --------------------------------------------------------------------------------

const PALETTE = ["#2f74d0", "#2e9d5b", "#d23f3f", "#d69a18", "#7a5cc2", "#b4541c", "#1f9bb4", "#777"];

function lineChart(chart, from, to) {
  const W = 560, H = 180, L = 44, B = 22;
  const svg = s("svg", { class: "chart", width: W, height: H + 40, viewBox: `0 0 ${W} ${H + 40}` });
  const all = Object.values(chart.lines).flat();
  if (!all.length) return h("div", { class: "chartbox" }, h("h2", {}, chart.title), h("p", { class: "muted" }, "no samples in this window"));
  const max = Math.max(1e-9, ...all.map((p) => p[1]));
  from = Math.min(to - 60, Math.max(from, Math.min(...all.map((p) => p[0])))); // no empty hour before the first sample
  const x = (t) => L + ((t - from) / (to - from)) * (W - L - 8);
  const y = (v) => H - B - (v / max) * (H - B - 8);
  svg.append(s("line", { x1: L, x2: W - 8, y1: H - B, y2: H - B, stroke: "#ccc" }), s("line", { x1: L, x2: L, y1: 4, y2: H - B, stroke: "#ccc" }),
    s("text", { x: L - 4, y: 12, "text-anchor": "end", fill: "#888" }, max.toPrecision(3)), s("text", { x: L - 4, y: H - B, "text-anchor": "end", fill: "#888" }, "0"),
    s("text", { x: L, y: H - 6, fill: "#888" }, clock(from)), s("text", { x: W - 8, y: H - 6, fill: "#888", "text-anchor": "end" }, clock(to)));
  const legend = h("div", { class: "legend" });
  Object.entries(chart.lines).slice(0, PALETTE.length).forEach(([name, pts], i) => {
    svg.append(s("polyline", { points: pts.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "), fill: "none", stroke: PALETTE[i], "stroke-width": 1.6 },
      s("title", {}, `${name}: last ${pts[pts.length - 1][1]}`)));
    if (pts.length === 1) svg.append(s("circle", { cx: x(pts[0][0]), cy: y(pts[0][1]), r: 2.5, fill: PALETTE[i] }));
    legend.append(h("span", {}, h("i", { style: `background:${PALETTE[i]}` }), name));
  });
  return h("div", { class: "chartbox", "data-title": chart.title }, h("h2", {}, chart.title), svg, legend);
}

function metricsPage(main) {
  const windowSel = h("select", { id: "window", onchange: () => refresh.run() }, [["15", "15 minutes"], ["60", "1 hour"], ["360", "6 hours"], ["1440", "24 hours"]].map(([v, t]) => h("option", { value: v }, t)));
  windowSel.value = "60";
  const summary = h("div", { class: "facts" });
  const charts = h("div", { class: "two", id: "charts" });
  const note = h("p", { class: "muted" });
  main.append(h("h1", {}, "Metrics"), h("div", { class: "panel" }, h("div", { class: "filters" }, "Window ", windowSel), summary, note), charts);
  const refresh = new Refresher(async () => {
    const data = await api("metrics?minutes=" + windowSel.value);
    const c = data.current;
    const rate = (r) => (r === null || r === undefined ? "–" : (r * 100).toFixed(1) + "%");
    summary.replaceChildren(fact("Executions", num(c.executions.total)), fact("Running", num(c.executions.running)),
      fact("Success rate", rate(c.executions.success_rate)), fact("Queue depth", num(c.queue_depth)),
      fact("Workers alive", num(c.workers_alive)), fact("Active alerts", num(c.alerts.active)));
    note.textContent = `raw samples for the last ${data.raw_window_minutes} minutes, then minute and hour means; kept ${data.retention_hours} hours`;
    charts.replaceChildren(...data.charts.map((ch) => h("div", { class: "panel" }, lineChart(ch, data.from_ts, data.to_ts))));
  });
  refresh.run();
  return { notice: (n) => { if (n.metrics || n.all) refresh.run(); }, stop: () => { refresh.gone = true; } };
}

// --- alerts ---------------------------------------------------------------------------------

function alertsPage(main) {
  const ack = ackBox();
  const body = h("tbody");
  const rules = h("div");
  main.append(h("h1", {}, "Alerts"), h("div", { class: "panel" }, ack,
    h("table", { id: "alerts" }, h("thead", {}, h("tr", {}, ["Alert", "State", "Severity", "Rule", "Metric", "Value", "Threshold", "Fired", "Message", ""].map((t) => h("th", {}, t)))), body)),
    h("div", { class: "panel" }, h("h2", {}, "Rules"), rules));
  const refresh = new Refresher(async () => {
    const data = await api("alerts");
    body.replaceChildren(...data.alerts.map((a) => {
      const state = a.resolved ? "resolved" : a.acknowledged ? "acknowledged" : "active";
      const id = encodeURIComponent(a.alert_id);
      return h("tr", { "data-id": a.alert_id, "data-state": state },
        h("td", {}, a.alert_id), h("td", {}, badge(state)), h("td", {}, a.severity), h("td", {}, a.rule_id),
        h("td", {}, a.metric_name + (Object.keys(a.labels || {}).length ? ` {${Object.entries(a.labels).map(([k, v]) => `${k}=${v}`).join(",")}}` : "")),
        h("td", { class: "num" }, a.value), h("td", { class: "num" }, a.threshold), h("td", {}, when(a.fired_ts)), h("td", {}, a.message),
        h("td", {}, a.resolved ? "" : [!a.acknowledged ? h("button", { class: "ack-button", onclick: () => press(ack, `alerts/${id}/ack`, refresh) }, "Acknowledge") : null, " ",
          h("button", { class: "resolve-button", onclick: () => press(ack, `alerts/${id}/resolve`, refresh) }, "Resolve")]));
    }));
    if (!data.alerts.length) body.append(h("tr", {}, h("td", { colspan: 10, class: "muted" }, "no alerts")));
    rules.replaceChildren(data.rules.length ? h("table", {}, h("thead", {}, h("tr", {}, ["Rule", "Metric", "Condition", "Threshold", "Severity"].map((t) => h("th", {}, t)))),
      h("tbody", {}, data.rules.map((r) => h("tr", {}, h("td", {}, r.rule_id), h("td", {}, r.metric_name), h("td", {}, r.condition), h("td", {}, String(r.threshold)), h("td", {}, r.severity)))))
      : h("p", { class: "muted" }, "no rules: add one with `porch alerts add-rule`"));
  });
  refresh.run();
  return { notice: (n) => { if (n.alerts) refresh.run(); }, stop: () => { refresh.gone = true; } };
}

window.addEventListener("hashchange", route);
route();
