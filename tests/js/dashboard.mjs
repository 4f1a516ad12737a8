// The dashboard in headless Chromium (Debian's, driven by playwright-core): while the
// test's clients are connected and publishing, the page's connection count (and its TCP /
// WebSocket split) must equal /metrics and its message rates must agree with the rates
// /metrics shows over the same seconds (within what 1-second sampling explains); the topic
// viewer must show a message published with mosquitto_pub; the client list finds a client
// by the search box, and its Disconnect button ends it (gone from /metrics and the API);
// the top topics show the publishers' topics; a screenshot is saved.
// Usage: node dashboard.mjs HTTP_URL MQTT_HOST MQTT_PORT SCREENSHOT_PATH CLIENT_TO_KICK
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";

const [base, mqttHost, mqttPort, screenshot, kick] = process.argv.slice(2);
if (!kick) {
  console.error("usage: node dashboard.mjs HTTP_URL MQTT_HOST MQTT_PORT SCREENSHOT_PATH CLIENT_TO_KICK");
  process.exit(2);
}
const executablePath = process.env.RINGMQ_CHROMIUM || "/usr/bin/chromium";
const WAIT_MS = 30000;

function fail(message) {
  console.log(`FAILED: ${message}`);
  process.exitCode = 1;
}

async function metrics() {
  const text = await (await fetch(`${base}/metrics`)).text();
  const get = (name) => {
    const line = text.split("\n").find((l) => l.startsWith(name + " "));
    return line ? Number(line.split(" ")[1]) : NaN;
  };
  return {
    at: Date.now(),
    connections: get("ringmq_connections_current"),
    tcp: get("ringmq_connections_tcp"),
    ws: get("ringmq_connections_ws"),
    tls: get("ringmq_connections_tls"),
    messagesIn: get("ringmq_messages_in"),
    messagesOut: get("ringmq_messages_out"),
  };
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1500 } });
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  // The browser logs each failed fetch: the favicon's 404 is expected, anything else is a
  // fault.
  page.on("console", (m) => {
    if (m.type() === "error" && !(m.location().url || "").endsWith("/favicon.ico")) pageErrors.push(m.text());
  });
  // The Disconnect button asks for confirmation.
  page.on("dialog", (d) => d.accept());
  await page.goto(base + "/");
  await page.waitForFunction(() => document.getElementById("api-status").textContent === "live", null, { timeout: WAIT_MS });

  // The topic viewer: subscribe to the test's topic, then publish there with mosquitto_pub.
  await page.fill("#viewer-filter", "dashboard/test/#");
  await page.waitForFunction(() => document.getElementById("viewer-status").textContent.startsWith("connected") ||
    document.getElementById("viewer-status").dataset.subscribed, null, { timeout: WAIT_MS });
  await page.click("#viewer-subscribe");
  await page.waitForFunction(() => document.getElementById("viewer-status").dataset.subscribed === "dashboard/test/#", null, { timeout: WAIT_MS });
  execFileSync("mosquitto_pub", ["-h", mqttHost, "-p", mqttPort, "-t", "dashboard/test/hello", "-m", "hello from mosquitto_pub", "-q", "1"]);
  await page.waitForSelector('li.viewer-message[data-topic="dashboard/test/hello"]', { timeout: WAIT_MS });
  const shown = await page.textContent('li.viewer-message[data-topic="dashboard/test/hello"]');
  if (!shown.includes("hello from mosquitto_pub")) fail(`the viewer shows ${JSON.stringify(shown)}`);
  else console.log("ok: the topic viewer shows the mosquitto_pub message");

  // Connections: the page's figure equals /metrics once both have sampled the same
  // (steady) population, the page's own WebSocket connection included.
  const readDom = () => page.evaluate(() => ({
    connections: Number(document.getElementById("connections").dataset.value),
    tcp: Number(document.getElementById("connections-tcp").dataset.value),
    ws: Number(document.getElementById("connections-ws").dataset.value),
    tls: Number(document.getElementById("connections-tls").dataset.value),
    rateIn: Number(document.getElementById("rate-in").dataset.value),
    rateDeliveries: Number(document.getElementById("rate-deliveries").dataset.value),
  }));
  let dom, m, same = false;
  const deadline = Date.now() + WAIT_MS;
  while (Date.now() < deadline) {
    m = await metrics();
    await page.waitForTimeout(1500); // the page polls once a second
    dom = await readDom();
    if (dom.connections === m.connections && dom.tcp === m.tcp && dom.ws === m.ws && dom.tls === m.tls) { same = true; break; }
  }
  if (!same) fail(`connections: page ${JSON.stringify(dom)}, /metrics ${JSON.stringify(m)}`);
  else console.log(`ok: the page shows ${dom.connections} connections (TCP ${dom.tcp}, WebSocket ${dom.ws}, TLS ${dom.tls}), as /metrics does`);
  if (same && dom.ws < 1) fail("the page's own WebSocket connection is not counted as WebSocket");
  if (dom.connections < 100) fail(`only ${dom.connections} connections: the test's clients are not connected`);

  // Rates: the page's per-second figures over 6 s against /metrics' counters over the
  // same 6 s. The page's are 1-second samples; their mean must be within a factor of 2.
  const first = await metrics();
  const seen = [];
  for (let i = 0; i < 6; i++) {
    await page.waitForTimeout(1000);
    seen.push(await readDom());
  }
  const last = await metrics();
  const seconds = (last.at - first.at) / 1000;
  const rateIn = (last.messagesIn - first.messagesIn) / seconds;
  const rateOut = (last.messagesOut - first.messagesOut) / seconds;
  const mean = (k) => seen.reduce((s, d) => s + d[k], 0) / seen.length;
  for (const [name, pageRate, metricRate] of [["messages in", mean("rateIn"), rateIn], ["deliveries", mean("rateDeliveries"), rateOut]]) {
    const ok = metricRate > 0 && pageRate >= metricRate / 2 && pageRate <= metricRate * 2;
    if (!ok) fail(`${name}: page ${pageRate.toFixed(1)}/s, /metrics ${metricRate.toFixed(1)}/s`);
    else console.log(`ok: ${name} ${pageRate.toFixed(1)}/s on the page, ${metricRate.toFixed(1)}/s from /metrics`);
  }

  // The client list: search, then disconnect one client with its button.
  await page.waitForFunction(() => !document.getElementById("clients-section").hidden, null, { timeout: WAIT_MS });
  await page.fill("#client-search", kick);
  const row = `#clients tr[data-client-id="${kick}"]`;
  await page.waitForSelector(row, { timeout: WAIT_MS });
  const listed = await page.$$eval("#clients tbody tr", (rows) => rows.map((r) => r.dataset.clientId));
  if (!listed.every((id) => id.startsWith(kick))) fail(`the search for ${kick} lists ${listed}`);
  const address = await page.textContent(`${row} td:nth-child(3)`);
  if (!/^127\.0\.0\.1:\d+$/.test(address)) fail(`${kick}'s address shows as ${JSON.stringify(address)}`);
  const before = (await metrics()).connections;
  await page.click(`${row} button.disconnect`);
  let gone = false;
  const kickDeadline = Date.now() + WAIT_MS;
  while (Date.now() < kickDeadline) {
    const m = await metrics();
    const answer = await fetch(`${base}/api/v1/clients/${encodeURIComponent(kick)}`);
    if (m.connections === before - 1 && answer.status === 404) { gone = true; break; }
    await page.waitForTimeout(200);
  }
  if (!gone) fail(`${kick} is still connected after its Disconnect button`);
  else console.log(`ok: the Disconnect button ended ${kick} (/metrics: ${before} → ${before - 1} connections, the API: 404)`);
  await page.waitForFunction((r) => !document.querySelector(r), row, { timeout: WAIT_MS });
  await page.fill("#client-search", "");

  // The top topics: the publishers' topics, with rates.
  await page.waitForFunction(() => !document.getElementById("topics-section").hidden &&
    document.querySelectorAll("#topics tbody tr").length > 0, null, { timeout: WAIT_MS });
  const top = await page.$$eval("#topics tbody tr td:first-child", (cells) => cells.map((c) => c.textContent));
  if (!top.some((t) => t.startsWith("load/"))) fail(`top topics: ${top}`);
  else console.log(`ok: the top topics show ${top.slice(0, 3).join(", ")}…`);
  const rows = await page.$$eval("#shards tbody tr", (r) => r.length);
  if (rows < 1) fail("no per-shard rows");
  if (pageErrors.length) fail(`errors in the page: ${pageErrors.join("; ")}`);

  mkdirSync(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`screenshot: ${screenshot}`);
} finally {
  await browser.close();
}
console.log(process.exitCode ? "dashboard: FAILED" : "dashboard: all checks passed");
