//! The WebSocket hot path allocates nothing: decoding a masked frame with
//! `FrameDecoder` (head, unmask, UTF-8 check) in several chunkings, `encode_head`, and
//! `parse_request` of a whole request. A counting global allocator proves it.
//!
//! The counter is per thread, so the test harness's own threads do not disturb it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ringmq_proto::Decoded;
use ringmq_proto::ws::{
    Event, FrameDecoder, MAX_HEAD_LEN, Opcode, Role, ServerConfig, accept_key, apply_mask,
    encode_head, parse_request, write_accept,
};

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

/// Counts allocations and reallocations on the current thread, then defers to `System`.
struct Counting;

// SAFETY: every call is passed unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn count() {
    // `try_with`: a thread being torn down may still free and allocate.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns how many allocations it made on this thread.
fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

const PAYLOAD_LEN: usize = 1000;
const MASK: [u8; 4] = [0x6b, 0x01, 0xfe, 0x33];
/// Bytes a simulated receive buffer holds: a frame with room to spare.
const RECV_BUF: usize = 2048;

/// A masked frame as a client sends it, in a stack array.
fn masked_frame(opcode: Opcode) -> ([u8; RECV_BUF], usize) {
    let mut frame = [0u8; RECV_BUF];
    let mut head = [0; MAX_HEAD_LEN];
    let n = encode_head(true, opcode, PAYLOAD_LEN as u64, Some(MASK), &mut head);
    frame[..n].copy_from_slice(&head[..n]);
    for (i, b) in frame[n..n + PAYLOAD_LEN].iter_mut().enumerate() {
        *b = b'a' + (i % 26) as u8;
    }
    apply_mask(&mut frame[n..n + PAYLOAD_LEN], MASK, 0);
    (frame, n + PAYLOAD_LEN)
}

/// Feeds `frame` to a fresh decoder in pieces of `piece` bytes, keeping unconsumed bytes
/// in a fixed buffer as a connection does; returns the payload bytes handed out.
fn decode_in_pieces(frame: &[u8], piece: usize) -> usize {
    let mut decoder = FrameDecoder::new(Role::Server, 1 << 20);
    let mut buf = [0u8; RECV_BUF];
    let (mut held, mut fed, mut payload) = (0, 0, 0);
    while fed < frame.len() {
        let n = piece.min(frame.len() - fed);
        buf[held..held + n].copy_from_slice(&frame[fed..fed + n]);
        held += n;
        fed += n;
        let mut pos = 0;
        while let Ok(Decoded::Complete(event, consumed)) = decoder.decode(&mut buf[pos..held]) {
            if let Event::Data { chunk, .. } = event {
                payload += chunk.len();
            }
            pos += consumed;
        }
        buf.copy_within(pos..held, 0);
        held -= pos;
    }
    payload
}

#[test]
fn hot_path_does_not_allocate() {
    let seen = allocations_in(|| drop(std::hint::black_box(Vec::<u8>::with_capacity(1))));
    assert_eq!(seen, 1, "the counter must see an allocation");

    for opcode in [Opcode::BINARY, Opcode::TEXT] {
        let (frame, len) = masked_frame(opcode);
        for piece in [len, 1, 2, 5, 13, 64, 999] {
            let mut payload = 0;
            let allocs = allocations_in(|| payload = decode_in_pieces(&frame[..len], piece));
            assert_eq!(payload, PAYLOAD_LEN, "{opcode:?} in pieces of {piece}");
            assert_eq!(allocs, 0, "decoding {opcode:?} in pieces of {piece}");
        }
    }

    let mut head = [0; MAX_HEAD_LEN];
    let allocs = allocations_in(|| {
        for len in [0, 125, 126, 65_535, 65_536] {
            encode_head(true, Opcode::BINARY, len, Some(MASK), &mut head);
        }
    });
    assert_eq!(allocs, 0, "encode_head");

    let request = b"GET /mqtt?x=1 HTTP/1.1\r\nHost: broker:8083\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Protocol: mqttv3.1, mqtt\r\n\r\n";
    let cfg = ServerConfig::default();
    let mut accept = [0u8; 28];
    let mut answer = Vec::with_capacity(256);
    let allocs = allocations_in(|| {
        let Ok(Decoded::Complete(req, _)) = parse_request(request, &cfg) else {
            panic!("request did not parse");
        };
        accept = accept_key(req.key);
        write_accept(&req, &mut answer);
    });
    assert_eq!(&accept, b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_eq!(
        allocs, 0,
        "parse_request, accept_key, write_accept into a reserved buffer"
    );
}
