//! MQTT.js (npm `mqtt`) under Node.js against the real binary, over TCP and WebSocket,
//! MQTT 3.1.1 and 5.0, QoS 0, 1 and 2 (tests/js/mqttjs.mjs).

mod support;

use support::Broker;

#[test]
fn mqttjs_over_tcp_and_websocket() {
    support::js::require_node(&["mqtt"]);
    let b = Broker::start(&[]);
    let tcp = format!("mqtt://{}", b.mqtt_addr());
    let out = support::js::run_script("mqttjs.mjs", &[&tcp, &b.ws_url()]);
    println!("{out}");
    assert!(out.contains("mqttjs: 4 passed, 0 failed"), "{out}");
}
