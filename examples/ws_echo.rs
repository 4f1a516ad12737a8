//! A WebSocket echo server on ringmq's runtime and framer, for conformance runs
//! (Autobahn|Testsuite's fuzzing client): every text and binary message comes back as
//! it came; pings are answered, closes are echoed, protocol errors close with the code
//! RFC 6455 names. The runtime does the frames; this file only joins chunks into
//! messages and writes them back.
//!
//! `cargo run --release --example ws_echo -- 127.0.0.1:9001 [SHARDS]`

use std::sync::Arc;

use ringmq_proto::ws::MessageAssembler;
use ringmq_shard::config::{Listen, ListenerKind, ShardConfig, WsFraming, WsOptions};
use ringmq_shard::conn::{CloseReason, ConnKey};
use ringmq_shard::hist;
use ringmq_shard::mesh::links;
use ringmq_shard::runtime::{self, ShardSpec};
use ringmq_shard::service::{Data, Io, Service};

/// Largest message echoed (Autobahn's largest cases send 16 MiB).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

struct Echo;

#[derive(Default)]
struct Conn {
    assembler: Option<MessageAssembler>,
}

impl Service for Echo {
    type ConnState = Conn;
    type Msg = ();
    type Request = ();

    fn on_open(&mut self, _io: &mut Io<Self>, _key: ConnKey) {}

    fn on_data(&mut self, io: &mut Io<Self>, key: ConnKey, data: Data<'_>) {
        let Some(state) = io.state(key) else { return };
        let mut asm = state
            .assembler
            .take()
            .unwrap_or_else(|| MessageAssembler::new(MAX_MESSAGE));
        match asm.push(data.text, data.bytes, data.message_end) {
            Ok(Some(m)) => {
                let (text, payload) = (m.text, m.payload);
                io.write_message(key, text, payload);
            }
            Ok(None) => {}
            Err(_) => io.close(key, CloseReason::TooBig),
        }
        if let Some(state) = io.state(key) {
            state.assembler = Some(asm);
        }
    }

    fn on_close(&mut self, _io: &mut Io<Self>, _key: ConnKey, _state: Conn, _why: CloseReason) {}
    fn on_deadline(&mut self, io: &mut Io<Self>, key: ConnKey) {
        io.close(key, CloseReason::Timeout);
    }
    fn on_message(&mut self, _io: &mut Io<Self>, _from: usize, _msg: ()) {}
    fn on_request(&mut self, _io: &mut Io<Self>, _request: ()) {}
    fn on_shutdown(&mut self, io: &mut Io<Self>) {
        for key in io.open_keys() {
            io.close(key, CloseReason::GoingAway);
        }
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9001".into());
    let shards: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let addr = addr
        .parse()
        .map_err(|e| std::io::Error::other(format!("bad address: {e}")))?;
    let cfg = Arc::new(ShardConfig {
        listeners: vec![Listen {
            addr,
            kind: ListenerKind::WebSocket(WsOptions {
                path: "/".into(),
                subprotocol: None,
                require_subprotocol: false,
                framing: WsFraming::Messages,
                allowed_origins: None,
            }),
            connect_rate: None,
            tls: None,
        }],
        max_ws_message: MAX_MESSAGE as u64,
        out_hard_limit: 4 * MAX_MESSAGE,
        ..ShardConfig::default()
    });
    let mut handles = Vec::new();
    for (id, mesh) in links::build::<()>(shards, 64)?.into_iter().enumerate() {
        let (_tx, control) = crossbeam_channel::unbounded::<runtime::Control<()>>();
        let spec = ShardSpec {
            id,
            core: None,
            cfg: cfg.clone(),
            stats: Arc::default(),
            mesh,
            control,
            hists: hist::shared(hist::RUNTIME),
        };
        let (handle, ready) = runtime::spawn(spec, || Echo)?;
        ready.recv().map_err(std::io::Error::other)??;
        handles.push((handle, _tx));
    }
    println!("ws_echo listening on ws://{addr}/ with {shards} shard(s)");
    for (h, _tx) in handles {
        let _ = h.join();
    }
    Ok(())
}
