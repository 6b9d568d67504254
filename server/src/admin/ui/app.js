// synod dashboard: polls this node's admin API and renders members, tenants, request rate and latency
// (from a ring buffer kept here), sessions, and a znode browser routed by the URL hash
// (#/path/to/node). Plain DOM and <canvas>, no dependencies. Every value from the server is
// inserted as text, never as HTML.
"use strict";

const POLL_MS = 2000;
const WINDOW_MS = 5 * 60 * 1000;
const RING = Math.ceil(WINDOW_MS / POLL_MS);

// Ring buffer of samples: {t, rate (req/s), latency (ms)}.
const samples = [];
let lastRequests = null;

function $(id) { return document.getElementById(id); }

function el(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function row(cells, attrs) {
  const tr = el("tr", null, attrs);
  for (const c of cells) tr.appendChild(el("td", c));
  return tr;
}

async function getJson(url) {
  const r = await fetch(url, { cache: "no-store" });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || (url + ": HTTP " + r.status));
  return body;
}

function showError(msg) {
  const e = $("error");
  if (msg) { e.textContent = msg; e.hidden = false; } else { e.hidden = true; }
}

function renderStatus(s) {
  $("node-id").textContent = s.id;
  $("node-role").textContent = s.role;
  $("leader").textContent = s.leader != null ? "leader: node " + s.leader : "leader: unknown";
  $("term").textContent = s.term;
  $("applied").textContent = s.applied_index;
  $("znodes").textContent = s.znodes;
  $("session-count").textContent = s.sessions;
  $("connections").textContent = s.connections;
  const req = s.requests;
  const now = Date.now();
  if (lastRequests) {
    const dt = (now - lastRequests.t) / 1000;
    const dn = req.latency.count - lastRequests.count;
    const dus = req.latency.total_us - lastRequests.total_us;
    if (dt > 0 && dn >= 0) {
      samples.push({ t: now, rate: dn / dt, latency: dn > 0 ? dus / dn / 1000 : 0 });
      while (samples.length > RING) samples.shift();
    }
  }
  lastRequests = { t: now, count: req.latency.count, total_us: req.latency.total_us };
  const last = samples[samples.length - 1];
  $("rate-now").textContent = last ? last.rate.toFixed(1) + " req/s" : "";
  $("latency-now").textContent = last ? last.latency.toFixed(3) + " ms" : "";
  drawChart($("rate-chart"), samples.map((x) => [x.t, x.rate]), "req/s");
  drawChart($("latency-chart"), samples.map((x) => [x.t, x.latency]), "ms");
}

function drawChart(canvas, points, unit) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 28;
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px sans-serif";
  ctx.fillStyle = "#667";
  const now = Date.now();
  const peak = Math.max(0, ...points.map((p) => p[1]));
  const max = peak > 0 ? peak * 1.1 : 1;
  ctx.strokeStyle = "#d5dae3";
  ctx.beginPath();
  ctx.moveTo(pad, 4); ctx.lineTo(pad, h - 14); ctx.lineTo(w - 4, h - 14);
  ctx.stroke();
  ctx.fillText(max.toPrecision(3) + " " + unit, pad + 4, 12);
  ctx.fillText("-5 min", pad, h - 2);
  ctx.fillText("now", w - 26, h - 2);
  if (points.length < 2) {
    ctx.fillText("collecting samples...", w / 2 - 50, h / 2);
    return;
  }
  ctx.strokeStyle = "#1f5fbf";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  points.forEach(([t, v], i) => {
    const x = pad + (w - pad - 4) * (1 - (now - t) / WINDOW_MS);
    const y = (h - 14) - (h - 22) * (v / max);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

function renderMembers(m) {
  const body = $("members").tBodies[0];
  body.replaceChildren();
  for (const x of m.members) {
    const attrs = { class: "member" + (x.role === "leader" ? " leader" : ""), "data-id": x.id, "data-role": x.role };
    body.appendChild(row([
      x.id + (x.this_node ? " (this node)" : ""),
      x.role,
      x.voter ? "voter" : "learner",
      x.peer_addr,
      x.matched_index == null ? "-" : x.matched_index,
      x.lag == null ? "-" : x.lag,
    ], attrs));
  }
  $("members-note").textContent = m.is_leader_view
    ? "Replication progress as seen by this node (the leader)."
    : "Matched index and lag are known on the leader (node " + (m.leader == null ? "?" : m.leader) + ") only.";
}

function renderSessions(s) {
  const body = $("sessions").tBodies[0];
  body.replaceChildren();
  for (const x of s.sessions) {
    body.appendChild(row([x.id, x.timeout_ms + " ms", x.ephemerals, x.client || "-"], { class: "session" }));
  }
  $("sessions-total").textContent = "(" + s.total + " in the cluster" + (s.total > s.sessions.length ? ", first " + s.sessions.length + " shown" : "") + ")";
}

// "used / limit" of one resource of a tenant (no limit: just what it uses).
function used(value, limit) {
  return limit == null ? String(value) : value + " / " + limit;
}

function renderTenants(list) {
  const body = $("tenants").tBodies[0];
  body.replaceChildren();
  for (const t of list) {
    const u = t.usage, q = t.quota;
    body.appendChild(row([
      t.name,
      t.members.join(", "),
      used(u.znodes, q.znodes),
      used(u.bytes, q.bytes),
      used(u.ephemerals, q.ephemerals),
      used(u.sessions, q.sessions),
      used(t.watches_here, q.watches),
    ], { class: "tenant", "data-name": t.name }));
  }
  $("tenants-note").textContent = list.length === 0
    ? "(none declared: the cluster behaves as ZooKeeper)"
    : "(usage / quota; watches are counted per node)";
}

async function poll() {
  try {
    const [status, members, sessions, tenants] = await Promise.all([
      getJson("/status"), getJson("/members"), getJson("/sessions?limit=50"), getJson("/tenants"),
    ]);
    renderStatus(status);
    renderMembers(members);
    renderSessions(sessions);
    renderTenants(tenants);
    showError(null);
  } catch (e) {
    showError("cannot reach this node: " + e.message);
  }
}

// ---- znode browser ----

function currentPath() {
  let p = decodeURIComponent(location.hash.replace(/^#/, ""));
  if (!p.startsWith("/")) p = "/";
  if (p.length > 1 && p.endsWith("/")) p = p.slice(0, -1);
  return p;
}

function link(path, text) {
  return el("a", text, { href: "#" + path });
}

function renderBreadcrumb(path) {
  const nav = $("breadcrumb");
  nav.replaceChildren(link("/", "/"));
  let acc = "";
  for (const part of path.split("/").filter((x) => x)) {
    acc += "/" + part;
    nav.appendChild(document.createTextNode(" \u203a "));
    nav.appendChild(link(acc, part));
  }
}

async function browse() {
  const path = currentPath();
  renderBreadcrumb(path);
  $("znode-path").textContent = path;
  try {
    const r = await getJson("/tree?depth=1&limit=1001&path=" + encodeURIComponent(path));
    const n = r.tree;
    const list = $("children");
    list.replaceChildren();
    for (const c of n.children || []) {
      const li = el("li", null, { class: "child" });
      li.appendChild(link(c.path, c.name + (c.stat.num_children > 0 ? "/" : "")));
      list.appendChild(li);
    }
    if (r.truncated) list.appendChild(el("li", "(more children not shown)", { class: "note" }));
    $("znode-meta").textContent = n.kind + ", data as " + n.data_encoding +
      (n.data_truncated ? " (first bytes only)" : "") + ", at zxid " + r.applied_index;
    $("znode-data").textContent = n.data;
    const stat = $("znode-stat").tBodies[0];
    stat.replaceChildren();
    for (const [k, v] of Object.entries(n.stat)) stat.appendChild(row([k, v]));
    stat.appendChild(row(["acl", n.acl.map((a) => a.scheme + ":" + a.id + ":" + a.perms).join(", ")]));
  } catch (e) {
    $("children").replaceChildren();
    $("znode-meta").textContent = e.message;
    $("znode-data").textContent = "";
    $("znode-stat").tBodies[0].replaceChildren();
  }
}

window.addEventListener("hashchange", browse);
poll();
browse();
setInterval(poll, POLL_MS);
