//! Opening the data directory at startup: lock it, recover every shard's log in
//! parallel, repair, and deal the data out again if the shard count changed.
//!
//! Layout:
//!
//! ```text
//! <dir>/LOCK                      flock'd while a ringmq uses the directory
//! <dir>/MANIFEST                  "ringmq-store 1\ngeneration <g>\nshards <n>\n"
//! <dir>/gen-<g>/shard-<i>/…       segments and snapshots of shard i (see `segment`)
//! ```
//!
//! A change of the shard count writes a new generation beside the old one: every new
//! shard's state as a snapshot, synced; then the manifest is replaced (write, sync,
//! rename, sync the directory), and only then is the old generation deleted. A crash
//! before the rename leaves the old generation in force (the new one is deleted at the
//! next start); after it, the new one.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::fs_driver::FsDriver;
use super::lock::{DirLock, LockError, lock};
use super::record::{EndReason, Lsn, Record};
use super::recover::{RecoverError, RecoveryStats, TailCut, recover_dirs, repair, sync_dir};
use super::shard_store::{ShardStore, StoreConfig};
use super::state::{State, redistribute};

const MANIFEST: &str = "MANIFEST";
const MANIFEST_MAGIC: &str = "ringmq-store 1";

/// Which new shard a client id's session, and a retained topic, belong to.
pub struct Homes<'a> {
    pub session: &'a dyn Fn(&str) -> usize,
    pub retained: &'a dyn Fn(&str) -> usize,
}

/// What `open` found and did, for the startup log.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Unsynced tails cut off, by shard.
    pub tails: Vec<(u32, TailCut)>,
    pub stats: Vec<RecoveryStats>,
    /// The shard count changed from the first to the second.
    pub reshard: Option<(usize, usize)>,
    /// Client ids found on two shards (a crash during a move); the older copy was ended.
    pub duplicates: Vec<String>,
    /// The highest retained-message version on any shard.
    pub retain_version: u64,
}

/// An opened data directory.
#[derive(Debug)]
pub struct Opened {
    pub lock: DirLock,
    /// Each shard's directory, for its driver.
    pub shard_dirs: Vec<PathBuf>,
    pub stores: Vec<ShardStore>,
    pub report: OpenReport,
}

#[derive(Debug)]
pub enum OpenError {
    Lock(LockError),
    Io { path: PathBuf, error: io::Error },
    Manifest { path: PathBuf, what: String },
    Recover(RecoverError),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Lock(e) => e.fmt(f),
            OpenError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            OpenError::Manifest { path, what } => write!(f, "{}: {what}", path.display()),
            OpenError::Recover(e) => write!(f, "cannot recover the log: {e}"),
        }
    }
}

impl std::error::Error for OpenError {}

fn io_at(path: &Path) -> impl Fn(io::Error) -> OpenError + '_ {
    move |error| OpenError::Io {
        path: path.to_path_buf(),
        error,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Manifest {
    generation: u64,
    shards: usize,
}

fn generation_dir(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("gen-{generation}"))
}

pub fn shard_dir(dir: &Path, generation: u64, shard: usize) -> PathBuf {
    generation_dir(dir, generation).join(format!("shard-{shard}"))
}

fn read_manifest(dir: &Path) -> Result<Option<Manifest>, OpenError> {
    let path = dir.join(MANIFEST);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at(&path)(e)),
    };
    let bad = |what: &str| OpenError::Manifest {
        path: path.clone(),
        what: what.to_string(),
    };
    let mut lines = text.lines();
    if lines.next() != Some(MANIFEST_MAGIC) {
        return Err(bad(
            "not a ringmq store manifest, or another format version",
        ));
    }
    let mut field = |name: &str| -> Result<u64, OpenError> {
        lines
            .next()
            .and_then(|l| l.strip_prefix(name))
            .and_then(|v| v.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(&format!("no valid `{name}` line")))
    };
    let generation = field("generation")?;
    let shards = field("shards")? as usize;
    if shards == 0 || shards > u32::MAX as usize {
        return Err(bad("shard count out of range"));
    }
    Ok(Some(Manifest { generation, shards }))
}

fn write_manifest(dir: &Path, m: Manifest) -> io::Result<()> {
    let tmp = dir.join("MANIFEST.tmp");
    let mut f = fs::File::create(&tmp)?;
    write!(
        f,
        "{MANIFEST_MAGIC}\ngeneration {}\nshards {}\n",
        m.generation, m.shards
    )?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(MANIFEST))?;
    sync_dir(dir)
}

/// Creates the directories of every shard of a generation.
fn make_generation(dir: &Path, m: Manifest) -> io::Result<Vec<PathBuf>> {
    let dirs: Vec<PathBuf> = (0..m.shards)
        .map(|i| shard_dir(dir, m.generation, i))
        .collect();
    for d in &dirs {
        fs::create_dir_all(d)?;
        sync_dir(d)?;
    }
    sync_dir(&generation_dir(dir, m.generation))?;
    sync_dir(dir)?;
    Ok(dirs)
}

/// Removes generation directories other than `keep` (left by an interrupted change of
/// the shard count, or one finished but not cleaned up).
fn remove_other_generations(dir: &Path, keep: u64) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(g) = name
            .to_str()
            .and_then(|n| n.strip_prefix("gen-"))
            .and_then(|g| g.parse::<u64>().ok())
        else {
            continue;
        };
        if g != keep {
            fs::remove_dir_all(entry.path())?;
        }
    }
    sync_dir(dir)
}

/// Writes `state` as snapshot 1 of a new shard in `dir`; its size.
fn write_initial_snapshot(dir: &Path, shard: usize, state: &mut State) -> io::Result<u64> {
    let mut driver = FsDriver::new(dir);
    state.begin_snapshot(shard as u32, 1, Lsn::ZERO);
    while let Some(chunk) = state.snapshot_step(4 << 20) {
        if let Some(bytes) = driver.save_chunk(&chunk)? {
            return Ok(bytes);
        }
    }
    Err(io::Error::other("snapshot ended without its last chunk"))
}

/// Opens `dir` for `shards` shards: locks it, recovers every shard (in parallel),
/// repairs the files, and redistributes the data if the shard count changed.
pub fn open(
    dir: &Path,
    shards: usize,
    config: StoreConfig,
    homes: Homes<'_>,
) -> Result<Opened, OpenError> {
    let shards = shards.max(1);
    fs::create_dir_all(dir).map_err(io_at(dir))?;
    let lock = lock(dir).map_err(OpenError::Lock)?;
    let manifest = match read_manifest(dir)? {
        Some(m) => m,
        None => {
            let m = Manifest {
                generation: 1,
                shards,
            };
            remove_other_generations(dir, m.generation).map_err(io_at(dir))?;
            make_generation(dir, m).map_err(io_at(dir))?;
            write_manifest(dir, m).map_err(io_at(dir))?;
            m
        }
    };
    remove_other_generations(dir, manifest.generation).map_err(io_at(dir))?;
    let dirs: Vec<(u32, PathBuf)> = (0..manifest.shards)
        .map(|i| (i as u32, shard_dir(dir, manifest.generation, i)))
        .collect();
    for (_, d) in &dirs {
        if !d.is_dir() {
            return Err(OpenError::Manifest {
                path: dir.join(MANIFEST),
                what: format!("{} is missing", d.display()),
            });
        }
    }
    let mut report = OpenReport::default();
    let mut recovered = Vec::new();
    for (r, (_, d)) in recover_dirs(&dirs).into_iter().zip(&dirs) {
        let mut r = r.map_err(OpenError::Recover)?;
        repair(d, &mut r).map_err(io_at(d))?;
        if let Some(t) = r.tail {
            report.tails.push((r.shard, t));
        }
        report.stats.push(r.stats);
        report.retain_version = report.retain_version.max(r.state.retain_version());
        recovered.push(r);
    }

    if manifest.shards == shards {
        let mut stores: Vec<ShardStore> = recovered
            .into_iter()
            .map(|r| ShardStore::recovered(config, r))
            .collect();
        report.duplicates = end_duplicates(&mut stores);
        let shard_dirs = dirs.into_iter().map(|(_, d)| d).collect();
        return Ok(Opened {
            lock,
            shard_dirs,
            stores,
            report,
        });
    }

    let states: Vec<State> = recovered.into_iter().map(|r| r.state).collect();
    let (new_states, duplicates) = redistribute(&states, shards, homes.session, homes.retained);
    drop(states);
    report.duplicates = duplicates;
    report.reshard = Some((manifest.shards, shards));
    let next = Manifest {
        generation: manifest.generation + 1,
        shards,
    };
    let shard_dirs = make_generation(dir, next).map_err(io_at(dir))?;
    let mut stores = Vec::with_capacity(shards);
    for (i, (mut state, d)) in new_states.into_iter().zip(&shard_dirs).enumerate() {
        let bytes = write_initial_snapshot(d, i, &mut state).map_err(io_at(d))?;
        stores.push(ShardStore::from_snapshot(i as u32, config, state, 1, bytes));
    }
    write_manifest(dir, next).map_err(io_at(dir))?;
    remove_other_generations(dir, next.generation).map_err(io_at(dir))?;
    Ok(Opened {
        lock,
        shard_dirs,
        stores,
        report,
    })
}

/// Ends, with a logged record, every session whose client id another shard holds under
/// a later open; returns those client ids.
fn end_duplicates(stores: &mut [ShardStore]) -> Vec<String> {
    let mut newest: HashMap<String, (u64, usize)> = HashMap::new();
    for (i, st) in stores.iter().enumerate() {
        for s in st.state().sessions() {
            let e = newest
                .entry(s.client_id.to_string())
                .or_insert((s.opened_at_ms, i));
            if s.opened_at_ms > e.0 {
                *e = (s.opened_at_ms, i);
            }
        }
    }
    let mut ended = Vec::new();
    for (i, st) in stores.iter_mut().enumerate() {
        let losers: Vec<_> = st
            .state()
            .sessions()
            .filter(|s| newest.get(&*s.client_id).is_some_and(|&(_, w)| w != i))
            .map(|s| (s.key, s.client_id.to_string()))
            .collect();
        for (session, client) in losers {
            let end = Record::SessionEnded {
                session,
                reason: EndReason::Moved,
            };
            // Settling records are never refused for room; a failed log fails at its
            // first batch, where the shard hears of it.
            let _ = st.append(&end);
            ended.push(client);
        }
    }
    ended
}
