//! WebSocket hot path: decoding a masked frame (head + unmask in place) at 64 B, 1 KiB
//! and 64 KiB, and `apply_mask` against a byte-at-a-time loop.
//!
//! Decoding works in place, so each iteration unmasks the previous iteration's output
//! (masking is its own inverse): the work is the same every time, with no copy to reset
//! the buffer.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringmq_proto::Decoded;
use ringmq_proto::ws::{Event, FrameDecoder, Opcode, Role, apply_mask, write_frame};

const SIZES: [(&str, usize); 3] = [("64B", 64), ("1KiB", 1024), ("64KiB", 64 * 1024)];
const MASK: [u8; 4] = [0x12, 0x9a, 0x4c, 0xe7];

/// The reference the word loop is measured against.
fn mask_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(offset + i) % 4];
    }
}

fn decode_frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("ws_decode_masked");
    for (name, len) in SIZES {
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut frame = Vec::new();
        write_frame(Opcode::BINARY, &payload, Some(MASK), &mut frame);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let mut decoder = FrameDecoder::new(Role::Server, 1 << 20);
                match decoder.decode(black_box(&mut frame)) {
                    Ok(Decoded::Complete(Event::Data { chunk, .. }, _)) => chunk.len(),
                    _ => 0,
                }
            })
        });
    }
    group.finish();
}

fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("ws_mask");
    for (name, len) in SIZES {
        let mut buf = vec![0x5au8; len];
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::new("word", name), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), MASK, 1))
        });
        group.bench_function(BenchmarkId::new("bytewise", name), |b| {
            b.iter(|| mask_bytewise(black_box(&mut buf), MASK, 1))
        });
    }
    group.finish();
}

criterion_group!(benches, decode_frame, mask);
criterion_main!(benches);
