//! File I/O through the shard's own ring: a service writes (and `fdatasync`s) files the
//! way it sends to sockets, without ever blocking its loop.
//!
//! Files live in a few slots at the top of the ring's fixed-file table, kept out of the
//! range the kernel hands to accepted connections (`IORING_REGISTER_FILE_ALLOC_RANGE`),
//! so a connection can never land in a file's slot or the other way round. A write is an
//! `IORING_OP_WRITE` at an offset, and with `sync`, an `IORING_OP_FSYNC`
//! (`IORING_FSYNC_DATASYNC`) linked to it (`IOSQE_IO_LINK`): the sync starts only once
//! the write is done, and both are submitted with the turn's other operations.
//!
//! The runtime owns every buffer it lends the kernel: the service hands over a `Vec`,
//! which stays where it is until the write (and its sync) has completed, and comes back
//! with the completion ([`FileDone`]). A short write is continued here; the service hears
//! only of the whole write. The shard loop does not end while a write is in flight, and
//! if the ring is ever dropped with one in flight, its buffer is leaked rather than freed
//! under the kernel.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use io_uring::{opcode, squeue, types};
use slab::Slab;

use crate::ring::Ring;

/// Slots at the top of each shard's fixed-file table kept for files (the rest is for
/// connections): the log segment being written, the next one made ahead of need, and
/// room for one on its way out.
pub const FILE_SLOTS: u32 = 4;

/// A file registered in the shard's fixed-file table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileSlot(u32);

impl FileSlot {
    pub fn index(self) -> u32 {
        self.0
    }
}

/// Which step of a write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Write,
    Sync,
}

/// A failed write or sync: the `errno` and where it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileError {
    pub errno: i32,
    pub stage: Stage,
}

impl FileError {
    pub fn to_io(self) -> io::Error {
        io::Error::from_raw_os_error(self.errno)
    }
}

/// A write (or sync) the service asked for has ended: its tag, how it went, and the
/// buffer it lent.
#[derive(Debug)]
pub struct FileDone {
    pub tag: u64,
    pub result: Result<(), FileError>,
    pub buf: Vec<u8>,
}

/// `buf` to write at `offset` of the file in `slot`, then (`sync`) a data sync; an empty
/// `buf` with `sync` is a sync alone. `tag` comes back with the outcome.
#[derive(Debug)]
pub(crate) struct WriteReq {
    pub slot: FileSlot,
    pub offset: u64,
    pub buf: Vec<u8>,
    pub sync: bool,
    pub tag: u64,
}

/// One write in flight, continued after a short write until all of `buf` is written.
#[derive(Debug)]
struct FileOp {
    slot: u32,
    offset: u64,
    buf: Vec<u8>,
    written: usize,
    sync: bool,
    tag: u64,
    /// Completions still to come for the submission in flight (write, sync).
    waiting: u8,
    /// The write of the submission in flight ended short (the linked sync is then
    /// cancelled by the kernel, or runs early and is repeated).
    short: bool,
    error: Option<FileError>,
}

/// What the runtime's `Op::FileWrite` / `Op::FileSync` tokens name: an entry of this slab.
#[derive(Debug, Default)]
pub(crate) struct Disk {
    /// First slot of the range kept for files, and which of them hold a file.
    first_slot: u32,
    used: Vec<bool>,
    ops: Slab<FileOp>,
    /// Writes finished this turn, for the service.
    pub(crate) done: Vec<FileDone>,
}

/// The two operations of one write, for the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Write,
    Sync,
}

impl Disk {
    /// Keeps the top [`FILE_SLOTS`] slots of a table of `files` for files (none if the
    /// table is too small to spare them).
    pub(crate) fn new(ring: &Ring, files: u32) -> io::Result<Disk> {
        let slots = if files > FILE_SLOTS * 2 {
            FILE_SLOTS
        } else {
            0
        };
        let first_slot = files - slots;
        if slots > 0 {
            ring.set_file_alloc_range(0, first_slot)?;
        }
        Ok(Disk {
            first_slot,
            used: vec![false; slots as usize],
            ops: Slab::new(),
            done: Vec::new(),
        })
    }

    /// Slots of the table left for connections.
    pub(crate) fn connection_slots(&self) -> u32 {
        self.first_slot
    }

    /// Writes and syncs in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.ops.len()
    }

    pub(crate) fn register(&mut self, ring: &Ring, fd: OwnedFd) -> io::Result<FileSlot> {
        let Some(i) = self.used.iter().position(|u| !u) else {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "every file slot of the shard's ring is in use",
            ));
        };
        let slot = self.first_slot + i as u32;
        ring.update_file(slot, fd.as_raw_fd())?;
        // The table holds its own reference to the file now.
        drop(fd);
        self.used[i] = true;
        Ok(FileSlot(slot))
    }

    pub(crate) fn unregister(&mut self, ring: &Ring, slot: FileSlot) -> io::Result<()> {
        let i = slot.0.checked_sub(self.first_slot).map(|i| i as usize);
        match i {
            Some(i) if self.used.get(i) == Some(&true) => {
                // Operations in flight on the file keep their own reference to it.
                ring.update_file(slot.0, -1)?;
                self.used[i] = false;
                Ok(())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a registered file slot",
            )),
        }
    }

    /// Starts a write (see [`WriteReq`]); the entries to submit go into `out`.
    pub(crate) fn start(
        &mut self,
        w: WriteReq,
        token: impl Fn(Part, u32) -> u64,
        out: &mut Vec<squeue::Entry>,
    ) {
        let id = self.ops.insert(FileOp {
            slot: w.slot.0,
            offset: w.offset,
            buf: w.buf,
            written: 0,
            sync: w.sync,
            tag: w.tag,
            waiting: 0,
            short: false,
            error: None,
        }) as u32;
        self.submit(id, token, out);
    }

    fn submit(&mut self, id: u32, token: impl Fn(Part, u32) -> u64, out: &mut Vec<squeue::Entry>) {
        let op = &mut self.ops[id as usize];
        op.short = false;
        op.waiting = 0;
        let rest = &op.buf[op.written..];
        let fd = types::Fixed(op.slot);
        if !rest.is_empty() {
            let len = rest.len().min(u32::MAX as usize) as u32;
            let mut write = opcode::Write::new(fd, rest.as_ptr(), len)
                .offset(op.offset + op.written as u64)
                .build()
                .user_data(token(Part::Write, id));
            if op.sync {
                write = write.flags(squeue::Flags::IO_LINK);
            }
            out.push(write);
            op.waiting += 1;
        }
        if op.sync {
            let sync = opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build()
                .user_data(token(Part::Sync, id));
            out.push(sync);
            op.waiting += 1;
        }
    }

    /// A completion of operation `id`. When the whole write is done (or failed), its
    /// [`FileDone`] joins `done`; after a short write the rest is resubmitted into `out`.
    pub(crate) fn complete(
        &mut self,
        id: u32,
        part: Part,
        result: i32,
        token: impl Fn(Part, u32) -> u64,
        out: &mut Vec<squeue::Entry>,
    ) {
        let Some(op) = self.ops.get_mut(id as usize) else {
            return;
        };
        op.waiting = op.waiting.saturating_sub(1);
        match part {
            Part::Write if result < 0 => {
                op.error.get_or_insert(FileError {
                    errno: -result,
                    stage: Stage::Write,
                });
            }
            Part::Write => {
                let n = result as usize;
                op.written += n;
                if op.written < op.buf.len() {
                    if n == 0 {
                        // No progress: the file cannot take more (a full quota, say).
                        op.error.get_or_insert(FileError {
                            errno: libc::ENOSPC,
                            stage: Stage::Write,
                        });
                    } else {
                        op.short = true;
                    }
                }
            }
            // The sync linked to a write that failed or ended short was cancelled.
            Part::Sync if result == -libc::ECANCELED && (op.short || op.error.is_some()) => {}
            Part::Sync if result < 0 => {
                op.error.get_or_insert(FileError {
                    errno: -result,
                    stage: Stage::Sync,
                });
            }
            Part::Sync => {}
        }
        if op.waiting > 0 {
            return;
        }
        if op.error.is_none() && op.short {
            self.submit(id, token, out);
            return;
        }
        let op = self.ops.remove(id as usize);
        self.done.push(FileDone {
            tag: op.tag,
            result: op.error.map_or(Ok(()), Err),
            buf: op.buf,
        });
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        // The kernel may still read from the buffer of a write in flight: such a buffer is
        // leaked, never freed under it. (The shard loop waits for every write before it
        // ends, so this happens only when the ring itself failed.)
        for op in self.ops.drain() {
            std::mem::forget(op.buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn token(part: Part, id: u32) -> u64 {
        (u64::from(part == Part::Sync) << 40) | u64::from(id) | (1 << 56)
    }

    fn part_of(user_data: u64) -> (Part, u32) {
        let part = if user_data & (1 << 40) != 0 {
            Part::Sync
        } else {
            Part::Write
        };
        (part, user_data as u32)
    }

    /// Drives `disk` until every write it has in flight ended.
    fn run(ring: &mut Ring, disk: &mut Disk) -> Vec<FileDone> {
        let mut out = Vec::new();
        let mut sqes = Vec::new();
        let mut spins = 0;
        while disk.in_flight() > 0 {
            spins += 1;
            assert!(spins < 1000, "file writes never completed");
            ring.enter(1, Some(Duration::from_millis(100))).unwrap();
            ring.reap(&mut out);
            for c in out.clone() {
                let (part, id) = part_of(c.user_data);
                sqes.clear();
                disk.complete(id, part, c.result, token, &mut sqes);
                ring.push_all(&sqes);
            }
        }
        std::mem::take(&mut disk.done)
    }

    fn temp_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("ringmq-disk-{name}-{}", std::process::id()))
    }

    #[test]
    fn writes_and_syncs_land_where_asked_and_the_buffers_come_back() {
        let mut ring = Ring::new(8, 16, 32).unwrap();
        let mut disk = Disk::new(&ring, 32).unwrap();
        assert_eq!(disk.connection_slots(), 32 - FILE_SLOTS);
        let path = temp_path("ok");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .unwrap();
        let slot = disk.register(&ring, file.into()).unwrap();
        assert!(slot.index() >= 32 - FILE_SLOTS);
        let mut sqes = Vec::new();
        disk.start(
            WriteReq {
                slot,
                offset: 0,
                buf: b"hello ".to_vec(),
                sync: true,
                tag: 7,
            },
            token,
            &mut sqes,
        );
        disk.start(
            WriteReq {
                slot,
                offset: 6,
                buf: b"world".to_vec(),
                sync: false,
                tag: 8,
            },
            token,
            &mut sqes,
        );
        disk.start(
            WriteReq {
                slot,
                offset: 11,
                buf: Vec::new(),
                sync: true,
                tag: 9,
            },
            token,
            &mut sqes,
        );
        ring.push_all(&sqes);
        let mut done = run(&mut ring, &mut disk);
        done.sort_by_key(|d| d.tag);
        let tags: Vec<_> = done.iter().map(|d| (d.tag, d.result)).collect();
        assert_eq!(tags, [(7, Ok(())), (8, Ok(())), (9, Ok(()))]);
        assert_eq!(done[0].buf, b"hello ", "the buffer comes back whole");
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
        disk.unregister(&ring, slot).unwrap();
        assert!(disk.unregister(&ring, slot).is_err(), "emptied already");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_failed_write_is_reported_with_its_stage_and_cancels_its_sync() {
        let mut ring = Ring::new(8, 16, 32).unwrap();
        let mut disk = Disk::new(&ring, 32).unwrap();
        let path = temp_path("ro");
        std::fs::write(&path, b"x").unwrap();
        let read_only = std::fs::File::open(&path).unwrap();
        let slot = disk.register(&ring, read_only.into()).unwrap();
        let mut sqes = Vec::new();
        disk.start(
            WriteReq {
                slot,
                offset: 0,
                buf: b"data".to_vec(),
                sync: true,
                tag: 1,
            },
            token,
            &mut sqes,
        );
        ring.push_all(&sqes);
        let done = run(&mut ring, &mut disk);
        assert_eq!(done.len(), 1);
        let err = done[0].result.unwrap_err();
        assert_eq!((err.errno, err.stage), (libc::EBADF, Stage::Write));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_short_write_is_continued_and_reported_once_whole() {
        let mut disk = Disk::default();
        let mut sqes = Vec::new();
        let w = WriteReq {
            slot: FileSlot(30),
            offset: 100,
            buf: b"abcdef".to_vec(),
            sync: true,
            tag: 5,
        };
        disk.start(w, token, &mut sqes);
        assert_eq!(sqes.len(), 2, "write + linked sync");
        sqes.clear();
        disk.complete(0, Part::Write, 4, token, &mut sqes);
        disk.complete(0, Part::Sync, -libc::ECANCELED, token, &mut sqes);
        assert_eq!(sqes.len(), 2, "the rest, and its sync again");
        assert!(disk.done.is_empty());
        sqes.clear();
        disk.complete(0, Part::Write, 2, token, &mut sqes);
        disk.complete(0, Part::Sync, 0, token, &mut sqes);
        assert!(sqes.is_empty());
        assert_eq!(disk.done.len(), 1);
        assert_eq!((disk.done[0].tag, disk.done[0].result), (5, Ok(())));
        // A failed sync is the sync's failure.
        disk.start(
            WriteReq {
                slot: FileSlot(30),
                offset: 0,
                buf: b"x".to_vec(),
                sync: true,
                tag: 6,
            },
            token,
            &mut sqes,
        );
        disk.complete(0, Part::Write, 1, token, &mut sqes);
        disk.complete(0, Part::Sync, -libc::EIO, token, &mut sqes);
        let err = disk.done[1].result.unwrap_err();
        assert_eq!((err.errno, err.stage), (libc::EIO, Stage::Sync));
    }

    #[test]
    fn file_slots_run_out_and_free_up() {
        let ring = Ring::new(8, 16, 32).unwrap();
        let mut disk = Disk::new(&ring, 32).unwrap();
        let open = || std::fs::File::open("/dev/null").unwrap().into();
        let slots: Vec<_> = (0..FILE_SLOTS)
            .map(|_| disk.register(&ring, open()).unwrap())
            .collect();
        assert!(disk.register(&ring, open()).is_err());
        disk.unregister(&ring, slots[1]).unwrap();
        assert_eq!(disk.register(&ring, open()).unwrap(), slots[1]);
    }
}
