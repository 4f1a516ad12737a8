// MQTT.js (npm `mqtt`) against a running ringmq, over TCP and over WebSocket, MQTT 3.1.1
// and 5.0: a subscriber and a publisher per combination; QoS 0, 1 and 2 published and
// each received once, with its QoS. Usage: node mqttjs.mjs TCP_URL WS_URL
// (mqtt://127.0.0.1:PORT, ws://127.0.0.1:PORT/mqtt). Exits non-zero on any failure.
import mqtt from "mqtt";

const [tcpUrl, wsUrl] = process.argv.slice(2);
if (!tcpUrl || !wsUrl) {
  console.error("usage: node mqttjs.mjs TCP_URL WS_URL");
  process.exit(2);
}
const WAIT_MS = 20000;

function connect(url, clientId, protocolVersion) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, { clientId, protocolVersion, clean: true, reconnectPeriod: 0, connectTimeout: WAIT_MS });
    c.once("connect", () => resolve(c));
    c.once("error", reject);
  });
}

async function combination(url, transport, protocolVersion) {
  const tag = `${transport}-v${protocolVersion}`;
  const topic = `mqttjs/${tag}`;
  const sub = await connect(url, `mqttjs-sub-${tag}`, protocolVersion);
  const pub = await connect(url, `mqttjs-pub-${tag}`, protocolVersion);
  const received = [];
  sub.on("message", (t, payload, packet) => received.push({ t, payload: payload.toString(), qos: packet.qos }));
  const granted = await sub.subscribeAsync(`${topic}/#`, { qos: 2 });
  if (granted[0].qos !== 2) throw new Error(`${tag}: subscription granted QoS ${granted[0].qos}, not 2`);
  for (const qos of [0, 1, 2]) {
    await pub.publishAsync(`${topic}/q${qos}`, `hello qos ${qos}`, { qos });
  }
  const deadline = Date.now() + WAIT_MS;
  while (received.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 200)); // a duplicate would arrive by now
  received.sort((a, b) => a.qos - b.qos);
  const want = [0, 1, 2].map((q) => ({ t: `${topic}/q${q}`, payload: `hello qos ${q}`, qos: q }));
  if (JSON.stringify(received) !== JSON.stringify(want)) {
    throw new Error(`${tag}: received ${JSON.stringify(received)}, wanted ${JSON.stringify(want)}`);
  }
  await Promise.all([sub.endAsync(), pub.endAsync()]);
}

let passed = 0, failed = 0;
for (const [url, transport] of [[tcpUrl, "tcp"], [wsUrl, "ws"]]) {
  for (const version of [4, 5]) {
    try {
      await combination(url, transport, version);
      console.log(`ok: MQTT.js ${transport} MQTT ${version === 5 ? "5.0" : "3.1.1"} QoS 0/1/2`);
      passed++;
    } catch (e) {
      console.log(`FAILED: MQTT.js ${transport} v${version}: ${e.stack || e}`);
      failed++;
    }
  }
}
console.log(`mqttjs: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
