//! The full mesh between shards: for every ordered pair (from, to) one bounded SPSC ring,
//! and for every shard one doorbell that wakes it when it sleeps in `io_uring_enter`.
//!
//! A send that finds the peer's ring full waits, in order, in a local overflow queue and
//! is moved into the ring on a later loop turn: a full ring is back-pressure, never a lock
//! and never a silent drop. The service reads `backlog(peer)` to decide what to shed
//! (QoS 0 only) when a peer falls behind.
//!
//! Waking: a shard about to sleep sets its `sleeping` flag, then looks at its inbound
//! rings once more; a producer, after its batch of sends, rings the doorbell of every
//! peer it sent to whose flag is set. Both sides put a SeqCst fence between their store
//! and their load, so at least one of them sees the other (no lost wake-up), and a busy
//! peer is never woken by a syscall.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering, fence};

use super::spsc::{self, Consumer, Producer};

/// Wakes one shard: an eventfd that the shard keeps a read posted on.
#[derive(Debug)]
pub struct Doorbell {
    eventfd: OwnedFd,
    sleeping: AtomicBool,
}

impl Doorbell {
    pub fn new() -> io::Result<Doorbell> {
        // SAFETY: plain syscall; the returned fd is owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Doorbell {
            eventfd,
            sleeping: AtomicBool::new(false),
        })
    }

    pub fn fd(&self) -> i32 {
        self.eventfd.as_raw_fd()
    }

    /// Wakes the shard unconditionally (used by the control plane).
    pub fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. A full counter
        // (EAGAIN) means a wake-up is already pending, which is all we want.
        unsafe { libc::write(self.eventfd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Wakes the shard if it said it is going to sleep. Call after publishing work.
    pub fn ring_if_sleeping(&self) -> bool {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel) {
            self.ring();
            return true;
        }
        false
    }

    /// Called by the owning shard before it sleeps; it must then look for work once more.
    pub fn prepare_sleep(&self) {
        self.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Called by the owning shard when it is awake again.
    pub fn awake(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }
}

/// Whether a message went straight into the peer's ring or waits in the overflow queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Ring,
    Overflow,
}

/// A message in a ring, with the sender's clock (ns since `clock_origin`) when it was
/// sent, for the cross-shard hop histogram.
type Stamped<M> = (u64, M);

/// The process-wide origin of the mesh clock, so stamps from different shards compare.
pub fn clock_origin() -> std::time::Instant {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(std::time::Instant::now)
}

/// One shard's ends of the mesh.
pub struct MeshLinks<M> {
    id: usize,
    outbound: Vec<Option<Producer<Stamped<M>>>>,
    inbound: Vec<Option<Consumer<Stamped<M>>>>,
    overflow: Vec<VecDeque<Stamped<M>>>,
    /// The sender's clock for this loop turn, stamped on every message sent in it.
    now_ns: u64,
    /// Peers sent to since the last `flush`, each once.
    touched: Vec<usize>,
    touched_flag: Vec<bool>,
    doorbells: Arc<[Doorbell]>,
}

/// Builds the mesh for `n` shards: `n × (n − 1)` rings of `capacity` messages, and one
/// doorbell per shard. Returns each shard's links, in shard order.
pub fn build<M: Send>(n: usize, capacity: usize) -> io::Result<Vec<MeshLinks<M>>> {
    let doorbells: Arc<[Doorbell]> = (0..n)
        .map(|_| Doorbell::new())
        .collect::<io::Result<Vec<_>>>()?
        .into();
    let mut links: Vec<MeshLinks<M>> = (0..n)
        .map(|id| MeshLinks {
            id,
            outbound: (0..n).map(|_| None).collect(),
            inbound: (0..n).map(|_| None).collect(),
            overflow: (0..n).map(|_| VecDeque::new()).collect(),
            touched: Vec::with_capacity(n),
            touched_flag: vec![false; n],
            now_ns: 0,
            doorbells: doorbells.clone(),
        })
        .collect();
    for from in 0..n {
        for to in 0..n {
            if from != to {
                let (p, c) = spsc::channel(capacity);
                links[from].outbound[to] = Some(p);
                links[to].inbound[from] = Some(c);
            }
        }
    }
    Ok(links)
}

impl<M: Send> MeshLinks<M> {
    pub fn id(&self) -> usize {
        self.id
    }

    pub fn shards(&self) -> usize {
        self.outbound.len()
    }

    pub fn doorbells(&self) -> &Arc<[Doorbell]> {
        &self.doorbells
    }

    pub fn my_doorbell(&self) -> &Doorbell {
        &self.doorbells[self.id]
    }

    /// Sets the clock stamped on messages sent from now on (once per loop turn).
    pub fn set_clock(&mut self, now_ns: u64) {
        self.now_ns = now_ns;
    }

    /// Sends `msg` to shard `to`, in order after everything sent to it before.
    pub fn send(&mut self, to: usize, msg: M) -> Sent {
        let msg = (self.now_ns, msg);
        if !self.touched_flag[to] {
            self.touched_flag[to] = true;
            self.touched.push(to);
        }
        let overflow = &mut self.overflow[to];
        let producer = self.outbound[to].as_mut().expect("no ring to self");
        if overflow.is_empty() {
            match producer.try_send(msg) {
                Ok(()) => return Sent::Ring,
                Err(back) => overflow.push_back(back),
            }
        } else {
            overflow.push_back(msg);
        }
        Sent::Overflow
    }

    /// Messages for `to` waiting in the local overflow queue.
    pub fn backlog(&self, to: usize) -> usize {
        self.overflow[to].len()
    }

    /// Messages waiting in all overflow queues together.
    pub fn backlog_total(&self) -> usize {
        self.overflow.iter().map(VecDeque::len).sum()
    }

    /// Whether any overflow queue still holds messages.
    pub fn has_backlog(&self) -> bool {
        self.overflow.iter().any(|q| !q.is_empty())
    }

    /// Moves overflow into rings as space allows and wakes the peers sent to. Call once
    /// per loop turn, after the turn's sends.
    pub fn flush(&mut self) {
        for to in 0..self.overflow.len() {
            let q = &mut self.overflow[to];
            if q.is_empty() {
                continue;
            }
            let producer = self.outbound[to].as_mut().expect("no ring to self");
            while let Some(m) = q.pop_front() {
                if let Err(back) = producer.try_send(m) {
                    q.push_front(back);
                    break;
                }
            }
        }
        for &to in &self.touched {
            self.touched_flag[to] = false;
            self.doorbells[to].ring_if_sleeping();
        }
        self.touched.clear();
    }

    /// Hands every inbound message (at most `max_per_peer` from each peer) to `f`, with
    /// the sender's clock when it was sent.
    pub fn drain(&mut self, max_per_peer: usize, mut f: impl FnMut(usize, M, u64)) -> usize {
        let mut n = 0;
        for (from, c) in self.inbound.iter_mut().enumerate() {
            if let Some(c) = c {
                n += c.drain_batch(max_per_peer, |(sent_ns, m)| f(from, m, sent_ns));
            }
        }
        n
    }

    /// Whether any inbound ring holds a message.
    pub fn inbound_pending(&self) -> bool {
        self.inbound.iter().flatten().any(|c| !c.is_empty())
    }
}
