//! The dashboard in a real browser (Debian's Chromium, headless, driven by
//! playwright-core: tests/js/dashboard.mjs) while 300 clients are connected and some
//! publish: the page's connection count (TCP and WebSocket) and message rates agree with
//! /metrics, the topic viewer (MQTT.js over WebSocket in the page) shows a message
//! published with mosquitto_pub, the client list's search finds a client and its
//! Disconnect button ends it (gone from /metrics), the top topics show the publishers'
//! topics, and a screenshot is saved as target/ci-artifacts/dashboard.png.

mod support;

use std::path::Path;
use std::time::Duration;

use rumqttc::{AsyncClient, MqttOptions, QoS};
use support::Broker;

const CLIENTS: usize = 300;
const PUBLISHERS: usize = 10;
const SUBSCRIBERS: usize = 5;
/// Each publisher's messages per second.
const RATE: u64 = 10;

#[test]
fn the_dashboard_shows_what_metrics_shows() {
    support::js::require_node(&["playwright-core"]);
    support::js::require_chromium();
    support::js::require_program("mosquitto_pub", "--help");
    let b = Broker::start(&[]);
    let addr = b.mqtt_addr();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for i in 0..CLIENTS {
        let mut o = MqttOptions::new(format!("dash-{i}"), addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(60));
        let (client, mut events) = AsyncClient::new(o, 64);
        rt.spawn(async move { while events.poll().await.is_ok() {} });
        rt.spawn(async move {
            if i < SUBSCRIBERS {
                let _ = client.subscribe("load/#", QoS::AtMostOnce).await;
            } else if i < SUBSCRIBERS + PUBLISHERS {
                let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE));
                loop {
                    tick.tick().await;
                    if client
                        .publish(format!("load/{i}"), QoS::AtMostOnce, false, "x")
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
            // Idle clients hold their connection while the runtime lives.
            std::future::pending::<()>().await;
        });
    }
    b.wait_for_metric("ringmq_connections_current", Duration::from_secs(60), |n| {
        n == CLIENTS as u64
    });
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ci-artifacts/dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let base = format!("http://{}", b.metrics_addr());
    let out = support::js::run_script(
        "dashboard.mjs",
        &[
            &base,
            &addr.ip().to_string(),
            &addr.port().to_string(),
            shot.to_str().unwrap(),
            &format!("dash-{}", CLIENTS - 1),
        ],
    );
    println!("{out}");
    assert!(out.contains("dashboard: all checks passed"), "{out}");
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    rt.shutdown_background();
}
