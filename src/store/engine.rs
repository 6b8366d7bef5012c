//! The storage engine under the store: one ordered key space (fjall, an LSM tree) with atomic
//! batches and an explicit sync. Everything above this file speaks keys and values only, so the
//! engine can change here alone (it did once: sled 0.34 until 2026-11, see [`super::migrate`]).
//!
//! Why fjall: at parla's four writes per message it takes about half the CPU of sled
//! (`bench/results/storage-engines-2026-11-23.md`), and its memory is bounded by the memtable
//! and the block cache we set here.

use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use fjall::Readable;

use super::StoreError;

/// A key or value read from the engine (cheap to clone, derefs to bytes).
pub type Bytes = fjall::Slice;

/// Name of the one keyspace; every key carries its own one-byte prefix ([`super::keys`]).
const KEYSPACE: &str = "parla";

/// The memtable size: writes are buffered this much before they go to a table file. Small, to
/// keep memory bounded (the journal already makes every synced write durable).
const MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;

/// What fjall adds to each entry's key and value when it sizes its memtable (the size of its
/// in-memory entry, 64 bytes in lsm-tree 3.1), rounded up so our count is never below its.
const MEMTABLE_ENTRY_OVERHEAD: usize = 80;

/// Journals kept before their memtables must be flushed (fjall's floor is 64 MiB).
const MAX_JOURNALING_BYTES: u64 = 64 * 1024 * 1024;

/// Longest wait for the database lock when opening.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Handle to the open database; cheap to clone, usable from any thread.
///
/// Every read goes through a snapshot of the batches applied so far: fjall's plain reads see a
/// batch while it is being applied, key by key, so a reader could see one outbox entry of a
/// batch, move its cursor past it, and never see the batch's earlier entry (found by the
/// kill -9 suite: webhook events that were never sent).
#[derive(Clone)]
pub struct Engine {
    db: fjall::Database,
    space: fjall::Keyspace,
    /// Bytes applied since the memtable was last seen sealed (see [`Engine::bound_memtable`]).
    unsealed: Arc<AtomicU64>,
    /// How many sealed memtables there were at the last apply.
    seen_sealed: Arc<AtomicUsize>,
}

impl From<fjall::Error> for StoreError {
    fn from(e: fjall::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

impl Engine {
    /// Opens (or creates) the database in the directory `path`, with a block cache of
    /// `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Engine, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: path.to_path_buf(),
            reason,
        };
        std::fs::create_dir_all(path).map_err(|e| open_err(e.to_string()))?;
        // The previous holder's background threads release the lock a moment after it is
        // dropped: a store reopened at once (a restart in the same process, a test) waits.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            let opened = fjall::Database::builder(path)
                .cache_size(cache_bytes)
                .max_journaling_size(MAX_JOURNALING_BYTES)
                // With two or more workers, fjall 3.1's first worker hands every compaction
                // request back to the queue and takes it again while another compacts: a busy
                // loop that cost 8% of the daemon's CPU under load. One worker flushes and
                // compacts in turn.
                .worker_threads(1)
                // We persist after every group ourselves.
                .manual_journal_persist(true)
                .open();
            match opened {
                Err(fjall::Error::Locked) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(fjall::Error::Locked) => {
                    return Err(open_err(
                        "the database is locked (is another parla process using this store? \
                         stop it first)"
                            .into(),
                    ));
                }
                other => break other.map_err(|e| open_err(e.to_string()))?,
            }
        };
        let space = db
            .keyspace(KEYSPACE, || {
                fjall::KeyspaceCreateOptions::default()
                    .max_memtable_size(MEMTABLE_BYTES)
                    .manual_journal_persist(true)
            })
            .map_err(|e| open_err(e.to_string()))?;
        Ok(Engine {
            db,
            space,
            unsealed: Arc::default(),
            seen_sealed: Arc::default(),
        })
    }

    /// Whether a database was created in `path` (its format marker is there).
    pub fn exists_at(path: &Path) -> bool {
        path.join("version").is_file()
    }

    /// The value at `key`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, StoreError> {
        Ok(self.db.snapshot().get(&self.space, key)?)
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> Iter {
        Iter(self.db.snapshot().iter(&self.space))
    }

    /// The entries whose keys fall in `range`, in key order (reversible).
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        Iter(self.db.snapshot().range(&self.space, range))
    }

    /// The entries whose keys start with `prefix`, in key order (reversible).
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Iter {
        Iter(self.db.snapshot().prefix(&self.space, prefix))
    }

    /// Applies puts (Some) and deletes (None) as one atomic batch: readers see all of it or
    /// none. Not yet durable: see [`Engine::persist`].
    pub fn apply(
        &self,
        entries: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), StoreError> {
        let mut batch = self.db.batch();
        let mut bytes = 0;
        for (key, value) in entries {
            bytes +=
                (key.len() + value.as_ref().map_or(0, Vec::len) + MEMTABLE_ENTRY_OVERHEAD) as u64;
            match value {
                Some(v) => batch.insert(&self.space, key, v),
                None => batch.remove(&self.space, key),
            }
        }
        batch.commit()?;
        self.bound_memtable(bytes)
    }

    /// Seals the active memtable before fjall would ask for it. fjall asks its worker to, once
    /// per commit while the memtable is over its size, with a `try_send` to the worker's queue
    /// of 1,000; when the one worker is in a long compaction (tens of seconds after a million
    /// messages queued in a minute) the requests fill the queue, the memtable grows (to 300 MiB
    /// measured), and the worker can then block forever sending a flush to its own full queue
    /// (seen: the daemon stopped, every thread parked). Sealed here at three quarters of the
    /// size, counted as fjall counts it, the memtable never reaches fjall's threshold; a sealed
    /// one waits for the worker to flush it, and past four fjall holds the writes back: memory
    /// stays bounded and intake waits, as it must when the disk work lags. The count restarts
    /// when fjall was seen to seal one itself (for its journal's size).
    fn bound_memtable(&self, bytes: u64) -> Result<(), StoreError> {
        let sealed = self.space.sealed_memtable_count();
        let unsealed = if sealed > self.seen_sealed.swap(sealed, Ordering::Relaxed) {
            self.unsealed.store(bytes, Ordering::Relaxed);
            bytes
        } else {
            self.unsealed.fetch_add(bytes, Ordering::Relaxed) + bytes
        };
        if unsealed >= MEMTABLE_BYTES / 4 * 3 {
            self.space.rotate_memtable()?;
            self.unsealed.store(0, Ordering::Relaxed);
            self.seen_sealed
                .store(self.space.sealed_memtable_count(), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Writes the in-memory write buffer to a table file, so that the next open has no journal
    /// to replay (a graceful stop; after a crash the replay is bounded by the journal's size).
    pub fn write_buffer_to_table(&self) -> Result<(), StoreError> {
        Ok(self.space.rotate_memtable_and_wait()?)
    }

    /// [`Engine::write_buffer_to_table`], waiting at most `bound`: the write waits for fjall's
    /// one worker, which may be in a long compaction. Past the bound (false) the journal, synced
    /// already, keeps the buffer, and the database is left open until the process exits:
    /// closing it waits for the worker too, and a stop must not hang (one did, over 120 s,
    /// after a million messages were queued in a minute).
    pub fn write_buffer_to_table_within(
        &self,
        bound: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let engine = self.clone();
        std::thread::Builder::new()
            .name("parla-store-close".into())
            .spawn(move || {
                let _ = done_tx.send(engine.write_buffer_to_table());
            })
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        match done_rx.recv_timeout(bound) {
            Ok(written) => written.map(|()| true),
            Err(_) => {
                std::mem::forget(self.clone());
                Ok(false)
            }
        }
    }

    /// Puts every entry of `entries` in, in batches of 10,000; returns how many (for copies of a
    /// whole store: compaction and the import of a sled store). Not yet durable.
    pub fn copy_in(
        &self,
        entries: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>>,
    ) -> Result<u64, StoreError> {
        const BATCH: usize = 10_000;
        let mut batch = Vec::with_capacity(BATCH);
        let mut copied = 0;
        for entry in entries {
            let (key, value) = entry?;
            batch.push((key, Some(value)));
            copied += 1;
            if batch.len() == BATCH {
                self.apply(std::mem::take(&mut batch))?;
            }
        }
        self.apply(batch)?;
        Ok(copied)
    }

    /// Makes every batch applied so far durable: the journal is written out and fdatasync'ed.
    pub fn persist(&self) -> Result<(), StoreError> {
        Ok(self.db.persist(fjall::PersistMode::SyncData)?)
    }
}

/// Entries of a scan, in key order or (with `.rev()`) reversed.
pub struct Iter(fjall::Iter);

impl Iter {
    /// Only the keys (the values are not copied out).
    pub fn keys(self) -> impl DoubleEndedIterator<Item = Result<Bytes, StoreError>> {
        self.0.map(|guard| guard.key().map_err(StoreError::from))
    }
}

impl Iterator for Iter {
    type Item = Result<(Bytes, Bytes), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0
            .next()
            .map(|guard| guard.into_inner().map_err(StoreError::from))
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0
            .next_back()
            .map(|guard| guard.into_inner().map_err(StoreError::from))
    }
}

/// Raw writes for tests that plant records as older versions wrote them.
#[cfg(test)]
impl Engine {
    pub fn insert(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Vec<u8>>,
    ) -> Result<(), StoreError> {
        self.apply([(key.as_ref().to_vec(), Some(value.into()))])
    }

    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<(), StoreError> {
        self.apply([(key.as_ref().to_vec(), None)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store's contract: other threads see a group whole or not at all. A reader that
    /// follows a writer with a cursor (as outbox consumers do) must never see a batch's later
    /// key without its earlier one: it would move its cursor past the earlier key for good.
    #[test]
    fn a_cursor_reader_never_sees_a_batch_in_part() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), 1 << 20).unwrap();
        const BATCHES: u32 = 20_000;
        let writer = {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for batch in 0..BATCHES {
                    // The later key first: applied key by key, it shows before the earlier.
                    let key = |n: u32| (n.to_be_bytes().to_vec(), Some(Vec::new()));
                    engine.apply([key(2 * batch + 1), key(2 * batch)]).unwrap();
                }
            })
        };
        let mut next = 0u32;
        let mut gaps = 0;
        while next < 2 * BATCHES {
            let from = next.to_be_bytes();
            for key in engine.range(from.as_slice()..).keys() {
                let key = u32::from_be_bytes(key.unwrap()[..4].try_into().unwrap());
                if key != next {
                    gaps += 1;
                }
                next = key + 1;
            }
        }
        writer.join().unwrap();
        assert_eq!(gaps, 0, "keys skipped by a reader that saw a batch in part");
    }
}
