// The dashboard's logic: polls /api/v1/stats once a second for the figures, charts and
// tables; shows the client list (searchable by client id prefix, each with a disconnect
// button) and the top topics when the shard-backed API answers (and hides them while it
// does not); subscribes over MQTT-over-WebSocket (MQTT.js) for the topic viewer, at the
// listener /api/v1/info names.
"use strict";

const POLL_MS = 1000;
const CLIENT_PAGE = 50;
const VIEWER_KEEP = 200;

let apiKey = sessionStorage.getItem("ringmq-api-key") || "";
const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (apiKey) headers["Authorization"] = "Bearer " + apiKey;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    $("key-section").hidden = false;
  }
  return response;
}

function setFigure(id, value, digits = 0) {
  const el = $(id);
  el.dataset.value = String(value);
  el.textContent = value.toLocaleString("en-US", { maximumFractionDigits: digits });
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
  return td;
}

function fillTable(tbody, rows) {
  tbody.replaceChildren(
    ...rows.map((values) => {
      const tr = document.createElement("tr");
      values.forEach((v) => cell(tr, v));
      return tr;
    })
  );
}

const connectionsChart = new TimeChart($("chart-connections"), [
  { label: "connections", color: "#2563eb" },
]);
const messagesChart = new TimeChart($("chart-messages"), [
  { label: "messages in /s", color: "#16a34a" },
  { label: "deliveries /s", color: "#ea580c" },
]);

function formatUptime(s) {
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600),
    m = Math.floor((s % 3600) / 60);
  return `up ${d ? d + "d " : ""}${h}h ${m}m ${Math.floor(s % 60)}s`;
}

async function pollStats() {
  let stats;
  try {
    const response = await api("/api/v1/stats");
    if (!response.ok) {
      $("api-status").textContent = `API answered ${response.status}`;
      return;
    }
    stats = await response.json();
  } catch (e) {
    $("api-status").textContent = "broker unreachable";
    return;
  }
  $("api-status").textContent = "live";
  $("uptime").textContent = formatUptime(stats.uptime_seconds);
  const connections = stats.gauges.connections_current || 0;
  setFigure("connections", connections);
  setFigure("connections-tcp", stats.gauges.connections_tcp || 0);
  setFigure("connections-ws", stats.gauges.connections_ws || 0);
  setFigure("connections-tls", stats.gauges.connections_tls || 0);
  setFigure("rate-in", stats.rates.messages_in || 0, 1);
  setFigure("rate-deliveries", stats.rates.messages_out || 0, 1);
  setFigure("rate-out", stats.rates.packets_out || 0, 1);
  connectionsChart.push(stats.sampled_at_ms, [connections]);
  messagesChart.push(stats.sampled_at_ms, [stats.rates.messages_in || 0, stats.rates.messages_out || 0]);

  fillTable(
    $("latency").tBodies[0],
    Object.entries(stats.latency_us).map(([name, p]) => [name, p.count, p.p50, p.p90, p.p99, p.p999, p.max])
  );
  fillTable(
    $("shards").tBodies[0],
    stats.per_shard.map((s) => [
      s.shard,
      s.gauges.connections_current || 0,
      s.gauges.connections_tcp || 0,
      s.gauges.connections_ws || 0,
      (s.rates.messages_in || 0).toFixed(1),
      (s.rates.messages_out || 0).toFixed(1),
      s.gauges.outbound_bytes || 0,
      (s.rates.loop_turns || 0).toFixed(0),
    ])
  );
  const w = stats.webhooks;
  $("webhooks-section").hidden = !w || w.endpoints === 0;
  if (w && w.endpoints > 0) {
    fillTable($("webhooks").tBodies[0], Object.entries(w).map(([k, v]) => [k.replaceAll("_", " "), v]));
  }
}

// The client list and the top topics: shown while the API serves them.
async function pollClients() {
  const prefix = $("client-search").value.trim();
  const query = new URLSearchParams({ limit: String(CLIENT_PAGE) });
  if (prefix) query.set("prefix", prefix);
  let response;
  try {
    response = await api("/api/v1/clients?" + query);
  } catch (e) {
    return;
  }
  $("clients-section").hidden = !response.ok;
  if (!response.ok) return;
  const page = await response.json();
  // An answer to an older search that arrives after a newer one's is dropped.
  if ($("client-search").value.trim() !== prefix) return;
  const tbody = $("clients").tBodies[0];
  tbody.replaceChildren(
    ...page.items.map((c) => {
      const tr = document.createElement("tr");
      tr.dataset.clientId = c.client_id;
      const since = new Date(c.connected_at_ms).toLocaleString();
      const mqtt = c.protocol_version === 5 ? "5.0" : "3.1.1";
      [c.client_id, c.username || "", c.address, c.transport, mqtt, c.shard, since].forEach((v) => cell(tr, v));
      const button = document.createElement("button");
      button.className = "disconnect";
      button.textContent = "Disconnect";
      button.addEventListener("click", async () => {
        if (!confirm(`Disconnect ${c.client_id}?`)) return;
        button.disabled = true;
        const r = await api("/api/v1/clients/" + encodeURIComponent(c.client_id), { method: "DELETE" });
        if (r.status === 204 || r.status === 404) tr.remove();
        else button.disabled = false;
        pollClients();
      });
      cell(tr, "").appendChild(button);
      return tr;
    })
  );
  $("clients-more").hidden = !page.next;
}

async function pollTopics() {
  let response;
  try {
    response = await api("/api/v1/topics/top?limit=10");
  } catch (e) {
    return;
  }
  $("topics-section").hidden = !response.ok;
  if (!response.ok) return;
  const top = await response.json();
  fillTable($("topics").tBodies[0], top.topics.map((t) => [t.topic, t.messages_per_second.toFixed(1)]));
}

// The topic viewer: one MQTT-over-WebSocket connection from the browser.
let viewer = null;
let viewerFilter = null;

function wsUrl(info) {
  const ws = info.ws;
  const unspecified = ws.address === "0.0.0.0" || ws.address === "::";
  let host = unspecified ? location.hostname : ws.address;
  if (host.includes(":") && !host.startsWith("[")) host = `[${host}]`;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${host}:${ws.port}${ws.path}`;
}

async function startViewer() {
  let info;
  try {
    const response = await api("/api/v1/info");
    if (!response.ok) return;
    info = await response.json();
  } catch (e) {
    return;
  }
  $("version").textContent = `v${info.version} · ${info.shards} shard${info.shards === 1 ? "" : "s"}`;
  if (!info.ws) {
    $("viewer-status").textContent = "no MQTT-over-WebSocket listener (--ws none)";
    $("viewer-subscribe").disabled = true;
    return;
  }
  const url = wsUrl(info);
  viewer = mqtt.connect(url, {
    clientId: "ringmq-dashboard-" + Math.random().toString(16).slice(2, 10),
    clean: true,
    reconnectPeriod: 2000,
    protocolVersion: 5,
  });
  viewer.on("connect", () => {
    $("viewer-status").textContent = `connected to ${url}`;
    subscribeViewer();
  });
  viewer.on("reconnect", () => { $("viewer-status").textContent = `reconnecting to ${url}…`; });
  viewer.on("error", (e) => { $("viewer-status").textContent = `error: ${e.message}`; });
  viewer.on("message", (topic, payload) => {
    const li = document.createElement("li");
    li.className = "viewer-message";
    li.dataset.topic = topic;
    const text = new TextDecoder("utf-8", { fatal: false }).decode(payload);
    li.textContent = `${new Date().toLocaleTimeString()}  ${topic}  ${text}`;
    const list = $("viewer-messages");
    list.prepend(li);
    while (list.children.length > VIEWER_KEEP) list.lastChild.remove();
  });
}

function subscribeViewer() {
  const filter = $("viewer-filter").value.trim() || "#";
  if (!viewer || !viewer.connected) return;
  if (viewerFilter && viewerFilter !== filter) viewer.unsubscribe(viewerFilter);
  viewer.subscribe(filter, { qos: 0 }, (err) => {
    $("viewer-status").textContent = err ? `subscribe failed: ${err.message}` : `subscribed to ${filter}`;
    $("viewer-status").dataset.subscribed = err ? "" : filter;
  });
  viewerFilter = filter;
}

$("viewer-form").addEventListener("submit", (e) => {
  e.preventDefault();
  subscribeViewer();
});
$("client-search").addEventListener("input", () => pollClients());
$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  apiKey = $("key-input").value.trim();
  sessionStorage.setItem("ringmq-api-key", apiKey);
  $("key-section").hidden = true;
  if (!viewer) startViewer();
  tick();
});

function tick() {
  pollStats();
  pollClients();
  pollTopics();
}

startViewer();
tick();
setInterval(pollStats, POLL_MS);
setInterval(() => { pollClients(); pollTopics(); }, 5 * POLL_MS);
