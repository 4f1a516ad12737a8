//! The swarm's io_uring layer: one ring per worker thread with a sparse fixed-file table
//! (sockets are direct descriptors, so a process holds more of them than `RLIMIT_NOFILE`),
//! the provided-buffer ring that multishot receives fill, and the token that names each
//! operation in its completion. Nothing here knows about MQTT.

use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::{IoUring, squeue, types};

/// What an operation was for, carried in the top byte of its `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// `socket()` straight into a fixed-file slot.
    Socket = 1,
    /// `setsockopt(TCP_NODELAY)`.
    SockOpt = 2,
    /// `bind()` to a source address, port 0.
    Bind = 3,
    Connect = 4,
    /// Multishot receive into the provided-buffer ring.
    Recv = 5,
    Send = 6,
    /// `shutdown()` followed (linked) by the close of the slot.
    Shutdown = 7,
    Close = 8,
    /// Cancels a pending connect that ran past its deadline.
    Cancel = 9,
}

impl Op {
    fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            1 => Op::Socket,
            2 => Op::SockOpt,
            3 => Op::Bind,
            4 => Op::Connect,
            5 => Op::Recv,
            6 => Op::Send,
            7 => Op::Shutdown,
            8 => Op::Close,
            9 => Op::Cancel,
            _ => return None,
        })
    }
}

/// Generations wrap at 24 bits.
pub const GEN_MASK: u32 = 0x00ff_ffff;

/// The 64-bit `user_data` of an operation: `op` (8 bits) | `gen` (24 bits) | `index` (32
/// bits). `index` is the client's place in its worker; `gen` names the connection attempt,
/// so a completion for an attempt that has since been replaced is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub op: Op,
    pub gen_: u32,
    pub index: u32,
}

impl Token {
    pub fn new(op: Op, index: u32, gen_: u32) -> Token {
        Token {
            op,
            gen_: gen_ & GEN_MASK,
            index,
        }
    }

    pub fn encode(self) -> u64 {
        ((self.op as u64) << 56) | (u64::from(self.gen_) << 32) | u64::from(self.index)
    }

    pub fn decode(v: u64) -> Option<Token> {
        Some(Token {
            op: Op::from_u8((v >> 56) as u8)?,
            gen_: ((v >> 32) as u32) & GEN_MASK,
            index: v as u32,
        })
    }
}

/// A completion, copied out of the completion queue.
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    pub user_data: u64,
    pub result: i32,
    pub flags: u32,
}

impl Completion {
    /// The multishot operation that produced this completion is still armed.
    pub fn more(&self) -> bool {
        io_uring::cqueue::more(self.flags)
    }

    /// The provided buffer this completion filled, if any.
    pub fn buffer_id(&self) -> Option<u16> {
        io_uring::cqueue::buffer_select(self.flags)
    }
}

/// One worker's ring.
pub struct Ring {
    ring: IoUring,
    /// Completions read early, while making room to submit; handed out by the next `reap`.
    stash: Vec<Completion>,
}

impl Ring {
    /// A ring with `entries` submission slots, a completion queue eight times as large
    /// (every connection's multishot receive may post while the worker is busy), and a
    /// sparse table of `files` fixed-file slots.
    pub fn new(entries: u32, files: u32) -> io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(entries * 8)
            .setup_submit_all()
            .build(entries)?;
        if files > 0 {
            ring.submitter().register_files_sparse(files)?;
        }
        Ok(Ring {
            ring,
            stash: Vec::new(),
        })
    }

    pub fn fd(&self) -> i32 {
        self.ring.as_raw_fd()
    }

    /// Queues `entries` together, so that a linked chain is never split across two
    /// submissions (the kernel would end the chain at the split). When the submission
    /// queue lacks room, what is queued is handed to the kernel first.
    pub fn push(&mut self, entries: &[squeue::Entry]) {
        loop {
            // SAFETY: every entry built by the swarm points only at memory that outlives
            // the operation: the worker's address table (boxed, dropped after the ring),
            // the provided-buffer ring, and a client's in-flight send buffer, which is not
            // touched until that send completes (see `Core::flush`).
            if unsafe { self.ring.submission().push_multiple(entries) }.is_ok() {
                return;
            }
            if let Err(e) = self.submit(0, None) {
                // EBUSY: the completion queue is full and the kernel wants it read first.
                // Keep what is read for the caller's next `reap`, then submit again.
                if e.raw_os_error() != Some(libc::EBUSY) {
                    panic!("io_uring_enter failed: {e}");
                }
                let stash = &mut self.stash;
                stash.extend(self.ring.completion().map(copy_completion));
            }
        }
    }

    /// Submits what is queued and waits for `wait_for` completions, or until `timeout`.
    pub fn submit(&mut self, wait_for: u32, timeout: Option<Duration>) -> io::Result<()> {
        let res = match timeout {
            Some(t) if wait_for > 0 => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring
                    .submitter()
                    .submit_with_args(wait_for as usize, &args)
            }
            _ => self.ring.submitter().submit_and_wait(wait_for as usize),
        };
        match res {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Moves every available completion into `out` (cleared first).
    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        out.clear();
        out.append(&mut self.stash);
        out.extend(self.ring.completion().map(copy_completion));
    }

    /// Registers a provided-buffer ring.
    fn register_buf_ring(&self, addr: u64, entries: u16, group: u16) -> io::Result<()> {
        // SAFETY: `addr` points at a page-aligned mapping of `entries` ring entries that
        // the `BufRing` owning it keeps alive until after this ring is dropped (field order
        // in `Worker`).
        unsafe {
            self.ring
                .submitter()
                .register_buf_ring_with_flags(addr, entries, group, 0)
        }
    }
}

fn copy_completion(cqe: io_uring::cqueue::Entry) -> Completion {
    Completion {
        user_data: cqe.user_data(),
        result: cqe.result(),
        flags: cqe.flags(),
    }
}

/// `count` buffers of `size` bytes that the kernel picks from for multishot receives, so
/// an idle client holds no receive buffer. A buffer goes back (`recycle`) as soon as its
/// bytes are processed, within the same loop turn.
pub struct BufRing {
    entries: NonNull<types::BufRingEntry>,
    entries_len: usize,
    buffers: NonNull<u8>,
    buffers_len: usize,
    count: u16,
    size: u32,
    group: u16,
    tail: u16,
}

impl BufRing {
    /// Maps and registers `count` (a power of two, at most 32,768) buffers of `size` bytes
    /// as buffer group `group` of `ring`.
    pub fn new(ring: &Ring, group: u16, count: u16, size: u32) -> io::Result<BufRing> {
        assert!(count.is_power_of_two() && count <= 32_768);
        let entries_len = usize::from(count) * std::mem::size_of::<types::BufRingEntry>();
        let buffers_len = usize::from(count) * size as usize;
        let entries = map_anonymous(entries_len)?;
        let buffers = match map_anonymous(buffers_len) {
            Ok(b) => b,
            Err(e) => {
                // SAFETY: mapped above with this length, not shared with anyone yet.
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
            size,
            group,
            tail: 0,
        };
        ring.register_buf_ring(br.entries.as_ptr() as u64, count, group)?;
        for bid in 0..count {
            br.recycle(bid);
        }
        br.commit();
        Ok(br)
    }

    pub fn group(&self) -> u16 {
        self.group
    }

    /// The bytes a completion put in buffer `bid`; valid until `recycle(bid)`.
    pub fn get(&mut self, bid: u16, len: usize) -> &mut [u8] {
        assert!(bid < self.count && len <= self.size as usize);
        let offset = usize::from(bid) * self.size as usize;
        // SAFETY: in bounds of the buffers mapping (checked above); the kernel does not
        // write buffer `bid` between the completion naming it and its recycling, and the
        // returned borrow of `self` ends before `recycle` can be called.
        unsafe { std::slice::from_raw_parts_mut(self.buffers.as_ptr().add(offset), len) }
    }

    /// Puts buffer `bid` back (visible to the kernel after `commit`).
    pub fn recycle(&mut self, bid: u16) {
        let slot = usize::from(self.tail & (self.count - 1));
        // SAFETY: `slot < count`, inside the entries mapping; the kernel reads entries
        // only between its head and the published tail, and this one is past the tail.
        let entry = unsafe { &mut *self.entries.as_ptr().add(slot) };
        entry.set_addr(self.buffers.as_ptr() as u64 + u64::from(bid) * u64::from(self.size));
        entry.set_len(self.size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes recycled buffers to the kernel.
    pub fn commit(&mut self) {
        // SAFETY: the tail overlays the `resv` field of entry 0, inside the mapping; the
        // release store orders the entry writes of `recycle` before it.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries.as_ptr()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: both mappings were made in `new` with these lengths; the ring that used
        // them is dropped before this (field order in `Worker`).
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
            Op::Socket,
            Op::Connect,
            Op::Recv,
            Op::Send,
            Op::Close,
            Op::Cancel,
        ] {
            let t = Token::new(op, 0xdead_beef, 0x1ff_ffff);
            let d = Token::decode(t.encode()).unwrap();
            assert_eq!(d, Token::new(op, 0xdead_beef, 0xff_ffff));
        }
        assert_eq!(Token::decode(0), None);
    }
}
