//! The dashboard: a page served at `/` with its scripts under `/dashboard/`, all embedded
//! in the binary, nothing fetched from elsewhere. It polls `/api/v1/stats` once a second
//! for its charts and tables, asks `/api/v1/info` where the MQTT-over-WebSocket listener
//! is, and subscribes there from the browser with MQTT.js (vendored, with its licence) for
//! the topic viewer. The client list and the top topics need the shard-backed API: the
//! page shows them when `/api/v1/clients` answers and hides them while it answers 404.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// An embedded file: its path under `/`, content type and bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: [Asset; 6] = [
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("dashboard/index.html"),
    },
    Asset {
        path: "/dashboard/app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("dashboard/app.js"),
    },
    Asset {
        path: "/dashboard/chart.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("dashboard/chart.js"),
    },
    Asset {
        path: "/dashboard/style.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("dashboard/style.css"),
    },
    Asset {
        path: "/dashboard/mqtt.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("dashboard/mqtt.min.js"),
    },
    Asset {
        path: "/dashboard/LICENSE.mqtt.js.txt",
        content_type: "text/plain; charset=utf-8",
        bytes: include_bytes!("dashboard/LICENSE.mqtt.js.txt"),
    },
];

/// What the page may load and connect to: its own origin, and WebSockets (the MQTT
/// listener is on another port).
/// (MQTT.js runs its keep-alive timer in a worker made from a blob: URL.)
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; \
     img-src 'self' data:; style-src 'self'; script-src 'self'; worker-src 'self' blob:; \
     frame-ancestors 'none'";

pub fn router() -> Router {
    let mut router = Router::new();
    for asset in &ASSETS {
        router = router.route(asset.path, get(move || serve(asset)));
    }
    router
}

async fn serve(asset: &'static Asset) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        asset.bytes,
    )
        .into_response()
}
