//! The io_uring layer: ring set-up, the provided-buffer ring that multishot receives fill,
//! the token that names each operation in its completion, and the submission helpers. The
//! shard loop uses it for the broker's side of connections, and the swarm (`bench/`) for
//! the client side; nothing here knows what the bytes are.
//!
//! A ring is created with `SINGLE_ISSUER | DEFER_TASKRUN`: only its thread touches it, and
//! completion work runs when the thread asks for events, in one batch per loop turn, not in
//! interrupts between its instructions.

use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::{IoUring, cqueue, squeue, types};

/// What an operation was for: each user of a ring names its operations with its own enum,
/// carried in the top byte of the operation's `user_data` (see [`Token`]).
pub trait OpKind: Copy {
    /// The enum's byte; 0 is never used (a zero `user_data` names no operation).
    fn to_u8(self) -> u8;
    /// The enum of a byte that `to_u8` gave, `None` for any other byte.
    fn from_u8(byte: u8) -> Option<Self>;
}

/// The 64-bit `user_data` of an operation: `op` (8 bits) | `gen` (24 bits) | `index` (32
/// bits). `index` names what the operation is for (a connection's slab key, a listener's
/// number); `gen` tells a completion for a connection from one for the connection that has
/// since replaced it in the same slab entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<O> {
    pub op: O,
    pub gen_: u32,
    pub index: u32,
}

/// Generations wrap at 24 bits.
pub const GEN_MASK: u32 = 0x00ff_ffff;

impl<O: OpKind> Token<O> {
    pub fn new(op: O, index: u32, gen_: u32) -> Self {
        Token {
            op,
            gen_: gen_ & GEN_MASK,
            index,
        }
    }

    pub fn encode(self) -> u64 {
        (u64::from(self.op.to_u8()) << 56) | (u64::from(self.gen_) << 32) | u64::from(self.index)
    }

    pub fn decode(v: u64) -> Option<Self> {
        Some(Token {
            op: O::from_u8((v >> 56) as u8)?,
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
    /// The operation this completion is for, if its `user_data` names one of `O`.
    pub fn token<O: OpKind>(&self) -> Option<Token<O>> {
        Token::decode(self.user_data)
    }

    /// The multishot operation that produced this completion is still armed.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// The provided buffer this completion filled, if any.
    pub fn buffer_id(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }
}

fn copy_completion(cqe: cqueue::Entry) -> Completion {
    Completion {
        user_data: cqe.user_data(),
        result: cqe.result(),
        flags: cqe.flags(),
    }
}

/// One thread's io_uring instance with its fixed-file table.
///
/// It counts the operations it has handed to the kernel and not yet seen end (a
/// multishot operation ends with its last completion, the one without `F_MORE`): memory
/// an operation points at (a send buffer, a receive buffer ring, an eventfd's counter)
/// must live until then. [`Ring::quiesce`] cancels them all and waits for their ends, and
/// dropping a ring does it too, so an owner that drops its ring before the buffers (field
/// order) never frees memory the kernel may still read or write.
pub struct Ring {
    ring: IoUring,
    /// Completions read early, while making room to submit (see `push_all`); handed out
    /// first by the next `reap`.
    stash: Vec<Completion>,
    /// Operations queued or submitted whose last completion has not been reaped.
    in_flight: usize,
}

/// How long `Drop` waits for cancelled operations to end (they end within a loop of the
/// kernel's task work; the bound only keeps a wedged ring from hanging its thread).
const QUIESCE_ON_DROP: Duration = Duration::from_secs(10);

impl Ring {
    /// Creates a ring with `entries` submission slots, `cq_entries` completion slots (more
    /// than `entries`: multishot operations post many completions per submission), and a
    /// sparse fixed-file table of `files` slots for direct descriptors.
    pub fn new(entries: u32, cq_entries: u32, files: u32) -> io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(cq_entries)
            .setup_submit_all()
            .setup_taskrun_flag()
            .build(entries)?;
        if files > 0 {
            ring.submitter().register_files_sparse(files)?;
        }
        Ok(Ring {
            ring,
            stash: Vec::new(),
            in_flight: 0,
        })
    }

    /// Operations handed to the ring whose last completion has not been reaped yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Cancels every operation in flight and waits until each has posted its last
    /// completion, at most `timeout`; the completions are dropped (provided buffers they
    /// name are not recycled: the buffer ring goes with the ring). Returns the operations
    /// still in flight after that: 0 when it is safe to free whatever they pointed at.
    pub fn quiesce(&mut self, timeout: Duration) -> usize {
        let deadline = std::time::Instant::now() + timeout;
        let mut cancelled_since_submit = false;
        let mut done = Vec::with_capacity(256);
        while self.in_flight > 0 {
            if !cancelled_since_submit {
                // Cancels what was submitted before it; requests queued after it (none
                // but itself here) are cancelled by the next round.
                let cancel =
                    io_uring::opcode::AsyncCancel2::new(types::CancelBuilder::any()).build();
                self.push(cancel.user_data(0));
                cancelled_since_submit = true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let wait = left.min(Duration::from_millis(50));
            if self.enter(1, Some(wait)).is_err() {
                break;
            }
            self.reap(&mut done);
            if done.is_empty() {
                // Nothing ended in a while: cancel again (an operation may have been
                // re-armed or queued after the last cancellation).
                cancelled_since_submit = false;
            }
        }
        self.in_flight
    }

    /// Stops waiting for the operations in flight: their owner has leaked whatever they
    /// point at, so dropping the ring may close it at once.
    pub fn abandon_in_flight(&mut self) {
        self.in_flight = 0;
    }

    pub fn fd(&self) -> i32 {
        self.ring.as_raw_fd()
    }

    /// Queues one submission (see `push_all`).
    pub fn push(&mut self, entry: squeue::Entry) {
        self.push_all(std::slice::from_ref(&entry));
    }

    /// Queues `entries` together, so that a linked chain is never split across two
    /// submissions (the kernel would end the chain at the split). When the submission queue
    /// lacks room, what is queued is handed to the kernel first; when the kernel refuses
    /// that because the completion queue is full, the completions are read out (kept for the
    /// next `reap`) and it is handed over again. A burst larger than the queue never fails.
    pub fn push_all(&mut self, entries: &[squeue::Entry]) {
        self.in_flight += entries.len();
        loop {
            // SAFETY: every entry built by this crate's users points only at memory that
            // outlives the operation: provided-buffer rings, send buffers that stay in place
            // until their send completes, socket addresses and doorbell buffers that are
            // boxed and dropped after the ring; see the callers.
            if unsafe { self.ring.submission().push_multiple(entries) }.is_ok() {
                return;
            }
            if let Err(e) = self.enter(0, None) {
                if e.raw_os_error() != Some(libc::EBUSY) {
                    panic!("io_uring_enter failed: {e}");
                }
                let stash = &mut self.stash;
                stash.extend(self.ring.completion().map(copy_completion));
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
            // A timeout or a signal ends the wait; both are normal.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR)) => Ok(()),
            res => res,
        }
    }

    /// Moves up to `out.capacity()` completions (at least one) into `out`, cleared first:
    /// those read early, then the completion queue's.
    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        out.clear();
        let cap = out.capacity().max(1);
        let early = self.stash.len().min(cap);
        out.extend(self.stash.drain(..early));
        let room = cap - out.len();
        out.extend(self.ring.completion().take(room).map(copy_completion));
        let ended = out.iter().filter(|c| !c.more()).count();
        self.in_flight = self.in_flight.saturating_sub(ended);
    }

    /// Has the kernel signal `eventfd` whenever completion work for this ring is queued
    /// while the ring's thread is not in it: a thread that sleeps on another ring learns
    /// from a read posted there on `eventfd` that this one has something.
    pub fn register_eventfd(&self, eventfd: i32) -> io::Result<()> {
        self.ring.submitter().register_eventfd(eventfd)
    }

    /// Whether this ring needs the thread's attention: completions to reap, completion work
    /// the kernel deferred until the thread enters the ring, or submissions not yet handed
    /// over.
    pub fn wants_enter(&mut self) -> bool {
        !self.stash.is_empty()
            || !self.ring.completion().is_empty()
            || self.ring.submission().taskrun()
            || !self.ring.submission().is_empty()
    }

    /// Whether submissions are queued that the kernel has not been handed yet.
    pub fn has_unsubmitted(&mut self) -> bool {
        !self.ring.submission().is_empty()
    }

    /// Whether completions wait to be reaped.
    pub fn completions_ready(&mut self) -> bool {
        !self.stash.is_empty() || !self.ring.completion().is_empty()
    }

    /// Restricts the fixed-file slots the kernel picks for direct descriptors it
    /// allocates (multishot accept with `allocate_file_index`) to `off..off + len`, so the
    /// slots outside are the caller's own to fill (`update_file`).
    pub fn set_file_alloc_range(&self, off: u32, len: u32) -> io::Result<()> {
        /// `struct io_uring_file_index_range`.
        #[repr(C)]
        struct Range {
            off: u32,
            len: u32,
            resv: u64,
        }
        const IORING_REGISTER_FILE_ALLOC_RANGE: libc::c_long = 25;
        let range = Range { off, len, resv: 0 };
        // SAFETY: io_uring_register(2) on our ring's fd with a pointer to a live,
        // properly laid out range structure and nr_args 0, as the operation requires.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                self.fd(),
                IORING_REGISTER_FILE_ALLOC_RANGE,
                &range as *const Range,
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Puts file descriptor `fd` in fixed-file slot `slot` (the table takes its own
    /// reference), or empties the slot with `fd` −1.
    pub fn update_file(&self, slot: u32, fd: i32) -> io::Result<()> {
        self.ring.submitter().register_files_update(slot, &[fd])?;
        Ok(())
    }

    /// Registers a provided-buffer ring with the kernel.
    fn register_buf_ring(&self, addr: u64, entries: u16, group: u16) -> io::Result<()> {
        // SAFETY: `addr` points at a page-aligned mapping of `entries` ring entries that
        // the `BufRing` owning it keeps alive until after the ring is dropped (its owner
        // drops the `Ring` first: see `BufRing`).
        unsafe {
            self.ring
                .submitter()
                .register_buf_ring_with_flags(addr, entries, group, 0)
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Closing the ring's descriptor does not wait for its operations: cancel them and
        // wait here, so the memory they point at, freed after the ring, is no longer used.
        if self.in_flight > 0 {
            let left = self.quiesce(QUIESCE_ON_DROP);
            if left > 0 {
                tracing::error!(
                    left,
                    "io_uring operations still in flight when the ring closed"
                );
            }
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
///
/// Its owner must drop the [`Ring`] that registered it first, so the kernel has let go of
/// the buffers before they are unmapped (field order in the shard and in a swarm worker).
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
    /// The mappings are left in place on drop (`leak`).
    leaked: bool,
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
            leaked: false,
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

    /// Leaves the buffers mapped when the ring is dropped: for an owner whose operations
    /// did not end, which must not have the kernel write into memory given back.
    pub fn leak(&mut self) {
        self.leaked = true;
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
        if self.leaked {
            return;
        }
        // SAFETY: both mappings were created in `new` with these lengths. The ring that
        // registered them is dropped first (see the type's documentation), so the kernel no
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

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum TestOp {
        Read = 1,
        Write = 200,
    }

    impl OpKind for TestOp {
        fn to_u8(self) -> u8 {
            self as u8
        }

        fn from_u8(byte: u8) -> Option<Self> {
            match byte {
                1 => Some(TestOp::Read),
                200 => Some(TestOp::Write),
                _ => None,
            }
        }
    }

    #[test]
    fn token_round_trips_and_wraps_generation() {
        for op in [TestOp::Read, TestOp::Write] {
            let t = Token::new(op, 0xdead_beef, 0x1ff_ffff);
            let d = Token::<TestOp>::decode(t.encode()).unwrap();
            assert_eq!(d, Token::new(op, 0xdead_beef, 0xff_ffff));
            assert_eq!(d.gen_, 0xff_ffff);
        }
        assert_eq!(Token::<TestOp>::decode(0), None);
        assert_eq!(Token::<TestOp>::decode(7 << 56), None);
    }

    /// A burst of submissions far larger than both queues: every one completes once, none
    /// is lost while the completion queue is full.
    #[test]
    fn a_burst_past_both_queues_completes_in_full() {
        let mut ring = Ring::new(8, 16, 0).unwrap();
        for i in 0..1000u32 {
            let nop = io_uring::opcode::Nop::new()
                .build()
                .user_data(Token::new(TestOp::Read, i, 0).encode());
            ring.push(nop);
        }
        ring.enter(0, None).unwrap();
        let mut seen = vec![false; 1000];
        let mut out = Vec::with_capacity(64);
        let mut idle_waits = 0;
        while seen.iter().any(|s| !s) {
            ring.reap(&mut out);
            if out.is_empty() {
                idle_waits += 1;
                assert!(idle_waits < 50, "completions lost");
                ring.enter(1, Some(Duration::from_millis(100))).unwrap();
                continue;
            }
            idle_waits = 0;
            for c in &out {
                let t = c.token::<TestOp>().expect("a test token");
                assert!(!std::mem::replace(&mut seen[t.index as usize], true));
            }
        }
    }

    /// A thread asleep on one ring wakes when another ring of its has a completion: the
    /// second ring signals an eventfd that the first has a read posted on, and the second's
    /// deferred completion work shows (`wants_enter`) until the thread enters it.
    #[test]
    fn a_completion_on_one_ring_wakes_a_thread_asleep_on_another() {
        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: eventfd(2) with valid flags.
        let bell = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(bell >= 0);
        let mut primary = Ring::new(8, 16, 0).unwrap();
        let mut lane = Ring::new(8, 16, 0).unwrap();
        lane.register_eventfd(bell).unwrap();
        let mut bell_buf = Box::new([0u8; 8]);
        let mut pipe_buf = Box::new([0u8; 8]);
        primary.push(
            io_uring::opcode::Read::new(types::Fd(bell), bell_buf.as_mut_ptr(), 8)
                .build()
                .user_data(Token::new(TestOp::Read, 1, 0).encode()),
        );
        lane.push(
            io_uring::opcode::Read::new(types::Fd(fds[0]), pipe_buf.as_mut_ptr(), 8)
                .build()
                .user_data(Token::new(TestOp::Read, 2, 0).encode()),
        );
        primary.enter(0, None).unwrap();
        lane.enter(0, None).unwrap();
        assert!(!lane.wants_enter());
        let writer = fds[1];
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            // SAFETY: writes 3 bytes from a live array to the pipe's write end.
            unsafe { libc::write(writer, b"abc".as_ptr().cast(), 3) };
        });
        let mut out = Vec::with_capacity(8);
        let mut woke = false;
        for _ in 0..100 {
            primary.enter(1, Some(Duration::from_millis(100))).unwrap();
            primary.reap(&mut out);
            if !out.is_empty() {
                woke = true;
                break;
            }
        }
        t.join().unwrap();
        assert!(woke, "the primary ring never woke");
        assert_eq!(out[0].token::<TestOp>().unwrap().index, 1);
        for _ in 0..100 {
            if lane.wants_enter() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(lane.wants_enter(), "the lane shows no work");
        lane.enter(0, None).unwrap();
        lane.reap(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].result, 3);
        assert!(!lane.wants_enter(), "entering the lane cleared its work");
        drop((bell_buf, pipe_buf));
        // SAFETY: each descriptor was opened above and is closed once.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
            libc::close(bell);
        }
    }

    /// An operation that would never end on its own (a read of a pipe nobody writes) is
    /// counted in flight until it is cancelled and its completion reaped, so its buffer
    /// may be freed only then.
    #[test]
    fn quiesce_cancels_and_waits_for_every_operation() {
        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let mut ring = Ring::new(8, 16, 0).unwrap();
        let mut buf = Box::new([0u8; 8]);
        for _ in 0..2 {
            let read = io_uring::opcode::Read::new(types::Fd(fds[0]), buf.as_mut_ptr(), 8)
                .build()
                .user_data(Token::new(TestOp::Read, 0, 0).encode());
            ring.push(read);
        }
        ring.enter(0, None).unwrap();
        let mut out = Vec::with_capacity(8);
        ring.reap(&mut out);
        assert!(out.is_empty(), "nothing was written: {out:?}");
        assert_eq!(ring.in_flight(), 2);
        assert_eq!(ring.quiesce(Duration::from_secs(10)), 0);
        assert_eq!(ring.in_flight(), 0);
        drop(buf);
        // SAFETY: both descriptors came from pipe(2) above and are closed once.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
}
