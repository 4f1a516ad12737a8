//! Per-client inbound rate limits: PUBLISH packets and their bytes a second, each a token
//! bucket with a burst (`--client-msg-rate`, `--client-byte-rate`).
//!
//! A client past its bucket is not disconnected and loses nothing: the PUBLISH that went
//! past it is handled, then reading from the client stops (`Io::throttle`) until the
//! bucket has half its burst back. What it had sent and the shard had already received
//! is held in order (as for back-pressure, acknowledgements aside); the rest waits in the
//! kernel's socket buffer, and TCP flow control slows the client down. Other clients of
//! the shard are not affected.
//!
//! Buckets are kept only for clients that used some of theirs (a full bucket is
//! forgotten at the next tick), so an idle connection costs nothing here.

use std::collections::HashMap;

use ringmq_shard::conn::ConnKey;
use ringmq_shard::rate::Gcra;

use super::{Broker, Io};

/// One client's buckets.
#[derive(Default, Clone, Copy)]
struct Buckets {
    messages: Gcra,
    bytes: Gcra,
}

/// The buckets of this shard's clients that are not full.
#[derive(Default)]
pub(super) struct Throttle {
    buckets: HashMap<ConnKey, Buckets>,
}

impl Throttle {
    pub fn forget(&mut self, key: ConnKey) {
        self.buckets.remove(&key);
    }

    /// Forgets the buckets that are full again at `now_ns`.
    fn sweep(&mut self, now_ns: u64) {
        self.buckets
            .retain(|_, b| !(b.messages.is_full(now_ns) && b.bytes.is_full(now_ns)));
        if self.buckets.capacity() > 64 && self.buckets.len() < self.buckets.capacity() / 4 {
            self.buckets.shrink_to_fit();
        }
    }
}

impl Broker {
    /// Whether clients' publishing is limited at all.
    pub(super) fn publish_rates_on(&self) -> bool {
        self.config().client_msg_rate.is_some() || self.config().client_byte_rate.is_some()
    }

    /// A PUBLISH packet of `len` bytes from `key` was taken up: it takes from the client's
    /// buckets, and past them reading from it stops until they allow again.
    pub(super) fn charge_publish(&mut self, io: &mut Io, key: ConnKey, len: usize) {
        let (msg_rate, byte_rate) = (
            self.config().client_msg_rate,
            self.config().client_byte_rate,
        );
        let now_ms = io.now_ms();
        let now_ns = now_ms * 1_000_000;
        let b = self.throttle.buckets.entry(key).or_default();
        let mut wait_ns = 0;
        if let Some(rate) = msg_rate {
            wait_ns = wait_ns.max(b.messages.take(rate, 1, now_ns));
        }
        if let Some(rate) = byte_rate {
            wait_ns = wait_ns.max(b.bytes.take(rate, len as u64, now_ns));
        }
        if wait_ns > 0 && io.throttle(key, now_ms + wait_ns.div_ceil(1_000_000)) {
            self.stats.publishers_throttled.add(1);
        }
    }

    /// Once a second: full buckets are forgotten.
    pub(super) fn sweep_buckets(&mut self, io: &Io) {
        if self.publish_rates_on() {
            self.throttle.sweep(io.now_ms() * 1_000_000);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_shard::rate::Rate;
    use std::num::NonZeroU32;

    #[test]
    fn throttle_forgets_full_buckets() {
        let mut t = Throttle::default();
        let key = ConnKey {
            index: 1,
            gen_: NonZeroU32::MIN,
        };
        let b = t.buckets.entry(key).or_default();
        b.messages.take(Rate::new(10, 10), 5, 0);
        t.sweep(100_000_000);
        assert_eq!(
            t.buckets.len(),
            1,
            "half a second of 5 messages at 10/s is not back"
        );
        t.sweep(600_000_000);
        assert!(t.buckets.is_empty());
    }
}
