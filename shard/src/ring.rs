//! The io_uring layer of a shard: ring set-up, the provided-buffer ring that multishot
//! receives fill, the token that names each operation in its completion, and the
//! submission helpers. Nothing here knows about MQTT or WebSocket.
//!
//! A shard's ring is created with `SINGLE_ISSUER | DEFER_TASKRUN`: only the shard thread
//! touches it, and completion work runs when the shard asks for events, in one batch per
//! loop turn, not in interrupts between its instructions.

use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::{IoUring, cqueue, squeue, types};

/// What an operation was for, carried in the top byte of its `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Multishot accept on listener number `index`.
    Accept = 1,
    /// Multishot receive on a connection.
    Recv = 2,
    /// A send on a connection.
    Send = 3,
    /// `shutdown(SHUT_WR)` on a connection, the first step of a graceful close.
    Shutdown = 4,
    /// Closing a connection's fixed-file slot, the last step.
    Close = 5,
    /// The read on the shard's doorbell eventfd.
    Doorbell = 6,
    /// Cancellation requests; their completions carry nothing we act on.
    Cancel = 7,
}

/// The 64-bit `user_data` of an operation: `op` (8 bits) | `gen` (24 bits) | `index` (32 bits).
/// `index` is a connection's slab key or a listener's number; `gen` tells a completion for a
/// connection that has since been replaced by another in the same slab entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub op: Op,
    pub gen_: u32,
    pub index: u32,
}

/// Generations wrap at 24 bits.
pub const GEN_MASK: u32 = 0x00ff_ffff;

impl Token {
    pub fn new(op: Op, index: u32, gen_: u32) -> Self {
        Token {
            op,
            gen_: gen_ & GEN_MASK,
            index,
        }
    }

    pub fn encode(self) -> u64 {
        ((self.op as u64) << 56) | ((self.gen_ as u64) << 32) | self.index as u64
    }

    pub fn decode(v: u64) -> Option<Token> {
        let op = match (v >> 56) as u8 {
            1 => Op::Accept,
            2 => Op::Recv,
            3 => Op::Send,
            4 => Op::Shutdown,
            5 => Op::Close,
            6 => Op::Doorbell,
            7 => Op::Cancel,
            _ => return None,
        };
        Some(Token {
            op,
            gen_: ((v >> 32) as u32) & GEN_MASK,
            index: v as u32,
        })
    }
}

/// A completion, copied out of the completion queue.
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    pub token: Option<Token>,
    pub result: i32,
    pub flags: u32,
}

impl Completion {
    /// The multishot operation that produced this completion is still armed.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// The provided buffer this completion filled, if any.
    pub fn buffer_id(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }
}

/// One shard's io_uring instance with its fixed-file table.
pub struct Ring {
    ring: IoUring,
    /// Submissions pushed since the last `enter`.
    pending: u32,
}

impl Ring {
    /// Creates a ring with `entries` submission slots, a completion queue four times as
    /// large (multishot operations post many completions per submission), and a sparse
    /// fixed-file table of `files` slots for direct descriptors.
    pub fn new(entries: u32, files: u32) -> io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(entries * 4)
            .setup_submit_all()
            .build(entries)?;
        if files > 0 {
            ring.submitter().register_files_sparse(files)?;
        }
        Ok(Ring { ring, pending: 0 })
    }

    pub fn fd(&self) -> i32 {
        self.ring.as_raw_fd()
    }

    /// Queues one submission. When the submission queue is full, what is queued is handed
    /// to the kernel first, so a burst larger than the queue never fails.
    pub fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every entry built by this crate points only at memory that outlives
            // the operation: the provided-buffer ring, connection send buffers that stay
            // in place until their send completes, and the doorbell's buffer; see the
            // callers.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_ok() {
                self.pending += 1;
                return;
            }
            if let Err(e) = self.enter(0, None) {
                // EBUSY: the completion queue is full; it is drained by the caller's next
                // turn, and submitting again after that succeeds. Keep trying after
                // reaping nothing: the kernel accepts submissions once it made room.
                if e.raw_os_error() != Some(libc::EBUSY) {
                    panic!("io_uring_enter failed: {e}");
                }
            }
        }
    }

    /// Submits everything queued, runs deferred completion work, and waits for at least
    /// `wait_for` completions or until `timeout` passes.
    pub fn enter(&mut self, wait_for: u32, timeout: Option<Duration>) -> io::Result<()> {
        let to_submit = self.ring.submission().len() as u32;
        let res = match timeout {
            Some(t) if wait_for > 0 => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring
                    .submitter()
                    .submit_with_args(wait_for as usize, &args)
                    .map(|_| ())
            }
            _ => {
                // GETEVENTS even when not waiting: with DEFER_TASKRUN that is what runs
                // the completion work queued since the last call.
                // SAFETY: no argument structure is passed.
                unsafe {
                    self.ring.submitter().enter::<libc::sigset_t>(
                        to_submit,
                        wait_for,
                        io_uring::EnterFlags::GETEVENTS.bits(),
                        None,
                    )
                }
                .map(|_| ())
            }
        };
        match res {
            Ok(()) => {
                self.pending = 0;
                Ok(())
            }
            // A timeout or a signal ends the wait; both are normal.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR)) => {
                self.pending = 0;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Copies up to `out.capacity()` completions out of the completion queue.
    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        out.clear();
        let cap = out.capacity().max(1);
        for cqe in self.ring.completion().take(cap) {
            out.push(Completion {
                token: Token::decode(cqe.user_data()),
                result: cqe.result(),
                flags: cqe.flags(),
            });
        }
    }

    pub fn completions_ready(&mut self) -> bool {
        !self.ring.completion().is_empty()
    }

    /// Registers a provided-buffer ring with the kernel.
    fn register_buf_ring(&self, addr: u64, entries: u16, group: u16) -> io::Result<()> {
        // SAFETY: `addr` points at a page-aligned mapping of `entries` ring entries that
        // the `BufRing` owning it keeps alive until the ring is dropped (the `BufRing` is
        // dropped after the `Ring`: see `Shard` field order).
        unsafe {
            self.ring
                .submitter()
                .register_buf_ring_with_flags(addr, entries, group, 0)
        }
    }
}

/// A provided-buffer ring: up to `count` buffers of `size` bytes that the kernel picks
/// from for multishot receives, so an idle connection holds no receive buffer. A buffer
/// is handed back (`recycle`) as soon as its bytes are processed, within the same loop
/// turn.
///
/// The memory for all `count` buffers is reserved (virtual) up front, but only
/// `provided` of them are given to the kernel: a quiet shard touches (and holds in RSS)
/// only those few pages; when receives run out of buffers (`-ENOBUFS`) the runtime calls
/// `grow` and more join the ring, up to `count`.
pub struct BufRing {
    /// The ring of `io_uring_buf` entries (one page-aligned mapping) followed by the
    /// buffers themselves (a second mapping).
    entries: NonNull<types::BufRingEntry>,
    entries_len: usize,
    buffers: NonNull<u8>,
    buffers_len: usize,
    count: u16,
    /// Buffers handed to the kernel so far: ids `0..provided`.
    provided: u16,
    size: u32,
    group: u16,
    /// Our copy of the tail; published to the kernel by `commit`.
    tail: u16,
}

impl BufRing {
    /// Maps and registers a ring for `count` (a power of two, at most 32,768) buffers of
    /// `size` bytes as buffer group `group` of `ring`, and provides the first `initial`.
    pub fn new(
        ring: &Ring,
        group: u16,
        count: u16,
        initial: u16,
        size: u32,
    ) -> io::Result<BufRing> {
        assert!(
            count.is_power_of_two(),
            "buffer count must be a power of two"
        );
        let entries_len = count as usize * std::mem::size_of::<types::BufRingEntry>();
        let buffers_len = count as usize * size as usize;
        let entries = map_anonymous(entries_len)?;
        let buffers = match map_anonymous(buffers_len) {
            Ok(b) => b,
            Err(e) => {
                // SAFETY: `entries` was mapped above with this length.
                unsafe { libc::munmap(entries.as_ptr().cast(), entries_len) };
                return Err(e);
            }
        };
        let mut br = BufRing {
            entries: entries.cast(),
            entries_len,
            buffers,
            buffers_len,
            count,
            provided: 0,
            size,
            group,
            tail: 0,
        };
        ring.register_buf_ring(br.entries.as_ptr() as u64, count, group)?;
        br.grow(initial.max(1));
        Ok(br)
    }

    /// Hands up to `n` more buffers to the kernel. Returns how many were added (0 once
    /// all `count` are in use).
    pub fn grow(&mut self, n: u16) -> u16 {
        let add = n.min(self.count - self.provided);
        for bid in self.provided..self.provided + add {
            self.recycle(bid);
        }
        self.provided += add;
        self.commit();
        add
    }

    /// Buffers handed to the kernel so far.
    pub fn provided(&self) -> u16 {
        self.provided
    }

    pub fn group(&self) -> u16 {
        self.group
    }

    /// The bytes a completion put in buffer `bid`.
    ///
    /// The slice stays valid until the buffer is recycled; the caller must not hold it
    /// across `recycle(bid)`.
    pub fn get(&mut self, bid: u16, len: usize) -> &mut [u8] {
        assert!(bid < self.count && len <= self.size as usize);
        let offset = bid as usize * self.size as usize;
        // SAFETY: in bounds of the buffers mapping (checked above); the kernel no longer
        // writes to buffer `bid` once it posted the completion that named it, and hands it
        // out again only after `recycle` + `commit`.
        unsafe { std::slice::from_raw_parts_mut(self.buffers.as_ptr().add(offset), len) }
    }

    /// Puts buffer `bid` back at the tail of the ring (visible to the kernel after `commit`).
    pub fn recycle(&mut self, bid: u16) {
        let mask = self.count - 1;
        let slot = (self.tail & mask) as usize;
        // SAFETY: `slot < count`, inside the entries mapping; the kernel reads entries
        // only between the head and the published tail, and this slot is past the tail.
        let entry = unsafe { &mut *self.entries.as_ptr().add(slot) };
        entry.set_addr(self.buffers.as_ptr() as u64 + bid as u64 * self.size as u64);
        entry.set_len(self.size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes recycled buffers to the kernel.
    pub fn commit(&mut self) {
        // SAFETY: the tail field overlays the `resv` field of entry 0, inside the mapping.
        // The kernel reads it with acquire semantics; the release store orders the entry
        // writes in `recycle` before it.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries.as_ptr()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: both mappings were created in `new` with these lengths. The ring that
        // registered them is dropped first (field order in `Shard`), so the kernel no
        // longer uses them.
        unsafe {
            libc::munmap(self.entries.as_ptr().cast(), self.entries_len);
            libc::munmap(self.buffers.as_ptr().cast(), self.buffers_len);
        }
    }
}

fn map_anonymous(len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len.max(1),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(NonNull::new(p.cast()).expect("mmap returned null"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_wraps_generation() {
        for op in [
            Op::Accept,
            Op::Recv,
            Op::Send,
            Op::Shutdown,
            Op::Close,
            Op::Doorbell,
            Op::Cancel,
        ] {
            let t = Token::new(op, 0xdead_beef, 0x1ff_ffff);
            let d = Token::decode(t.encode()).unwrap();
            assert_eq!(d.op, op);
            assert_eq!(d.index, 0xdead_beef);
            assert_eq!(d.gen_, 0xff_ffff);
        }
        assert_eq!(Token::decode(0), None);
    }
}
