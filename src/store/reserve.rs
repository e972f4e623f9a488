//! Room kept back on the database's file system, for the day it is full.
//!
//! A WAL database on a full disk can wedge for good: the log's committed pages need the
//! main file to grow before the log can be reused, and every delete that would make room
//! needs log space first (SQLite's `wal.c`: a checkpoint copies frames into the database
//! file; the log restarts only once all of them are copied). No amount of pruning helps
//! without a few free bytes. So netmon keeps a file of its own beside the database,
//! `<db_path>.reserve`, a share of the storage budget (`budget::Limits::reserve_bytes`),
//! and gives it
//! up when commits keep failing for lack of space: the checkpoint and the storage
//! budget's deletes then have room, the budget prunes to its low mark and hands pages
//! back, and the reserve is taken again once the file system has room for it twice over
//! (so taking it cannot itself fill the disk).
//!
//! The file holds pseudo-random bytes, not zeros: a compressing file system (JFFS2,
//! UBIFS, btrfs) would store zeros in almost nothing and the reserve would hold back
//! nothing. It is written once per use, never in normal operation.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The reserve file of one database.
pub struct Reserve {
    path: PathBuf,
    bytes: u64,
}

impl Reserve {
    /// The reserve of the database at `db_path`: `bytes` long once taken.
    pub fn new(db_path: &Path, bytes: u64) -> Reserve {
        let mut name = db_path.as_os_str().to_owned();
        name.push(".reserve");
        Reserve {
            path: PathBuf::from(name),
            bytes,
        }
    }

    /// The reserve of the configured database, at its share of the storage budget.
    pub fn for_config(config: &crate::config::Config) -> Reserve {
        Reserve::new(
            &config.db_path,
            crate::store::budget::Limits::from_config(&config.retention).reserve_bytes(),
        )
    }

    /// Whether the reserve is on disk at its full size.
    pub fn held(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= self.bytes)
    }

    /// Takes the reserve if it is not held and the file system has room for it twice
    /// over. A failed attempt leaves no partial file.
    pub fn take_if_room(&self) {
        if self.held() || free_bytes(&self.path).is_none_or(|free| free < 2 * self.bytes) {
            return;
        }
        match self.write() {
            Ok(()) => log::info!(
                "storage reserve of {} KiB taken ({})",
                self.bytes >> 10,
                self.path.display()
            ),
            Err(e) => {
                let _ = std::fs::remove_file(&self.path);
                log::warn!("taking the storage reserve {}: {e}", self.path.display());
            }
        }
    }

    /// Gives the reserve back to the file system; true when there was one to give.
    pub fn release(&self) -> bool {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {
                metrics::counter!("netmon_storage_reserve_released_total").increment(1);
                log::warn!(
                    "storage reserve of {} KiB released: the database's file system is full",
                    self.bytes >> 10
                );
                true
            }
            Err(_) => false,
        }
    }

    fn write(&self) -> std::io::Result<()> {
        let mut file = File::create(&self.path)?;
        let mut block = vec![0u8; 64 << 10];
        // xorshift64: incompressible enough, no dependency, no syscall per byte.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut left = self.bytes;
        while left > 0 {
            for chunk in block.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            let n = left.min(block.len() as u64) as usize;
            file.write_all(&block[..n])?;
            left -= n as u64;
        }
        file.sync_all()
    }
}

/// Bytes an unprivileged writer may still use on the file system holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty())?;
    crate::disk::statvfs(dir).ok().map(|(_, free)| free)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_released_and_not_compressible() {
        let dir = tempfile::tempdir().unwrap();
        let r = Reserve::new(&dir.path().join("t.db"), 256 << 10);
        assert!(!r.held());
        r.take_if_room();
        assert!(r.held());
        let bytes = std::fs::read(dir.path().join("t.db.reserve")).unwrap();
        assert_eq!(bytes.len(), 256 << 10);
        // Not a run of one byte: a compressing file system must really store it.
        let zeros = bytes.iter().filter(|b| **b == 0).count();
        assert!(zeros < bytes.len() / 64, "{zeros} zero bytes");
        assert!(r.release());
        assert!(!r.held() && !r.release());
    }
}
