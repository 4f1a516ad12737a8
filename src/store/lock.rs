//! The data directory lock: `<dir>/LOCK`, held with `flock` for as long as the process
//! uses the directory, so that a second ringmq on the same directory refuses to start
//! instead of writing the same logs. The kernel drops the lock when the process ends,
//! however it ends. The file holds the holder's process id, for the error message.

use std::fmt;
use std::fs::{self, File, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The name of the lock file in the data directory.
pub const LOCK_FILE: &str = "LOCK";

/// A held lock; dropping it releases the directory.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[derive(Debug)]
pub enum LockError {
    /// Another process (or another open of the directory) holds the lock.
    Held {
        path: PathBuf,
        /// The holder's process id, as it wrote it.
        holder: Option<u32>,
    },
    Io {
        path: PathBuf,
        error: io::Error,
    },
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Held { path, holder } => {
                write!(f, "{} is locked: another ringmq", path.display())?;
                if let Some(pid) = holder {
                    write!(f, " (process {pid})")?;
                }
                write!(f, " uses this data directory")
            }
            LockError::Io { path, error } => write!(f, "cannot lock {}: {error}", path.display()),
        }
    }
}

impl std::error::Error for LockError {}

/// Locks `dir` (which must exist) for this process.
pub fn lock(dir: &Path) -> Result<DirLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let io_err = |error| LockError::Io {
        path: path.clone(),
        error,
    };
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let holder = fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            return Err(LockError::Held { path, holder });
        }
        Err(TryLockError::Error(e)) => return Err(io_err(e)),
    }
    file.set_len(0).map_err(io_err)?;
    writeln!(file, "{}", std::process::id()).map_err(io_err)?;
    Ok(DirLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holder_named_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).expect("first lock");
        match lock(dir.path()) {
            Err(e @ LockError::Held { .. }) => {
                let LockError::Held { holder, .. } = &e else {
                    unreachable!()
                };
                assert_eq!(*holder, Some(std::process::id()));
                let msg = e.to_string();
                assert!(
                    msg.contains("LOCK") && msg.contains("another ringmq"),
                    "{msg}"
                );
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        lock(dir.path()).expect("free again");
    }
}
