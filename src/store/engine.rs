//! The storage engine under the store: one ordered key space (fjall: an LSM tree per first key
//! byte, see [`Engine`]) with atomic batches and an explicit sync. Everything above this file
//! speaks keys and values only, so the engine can change here alone (it did once: sled 0.34
//! until 2026-11, see [`super::migrate`]).
//!
//! Why fjall: at parla's four writes per message it takes about half the CPU of sled
//! (`bench/results/storage-engines-2026-11-23.md`), and its memory is bounded by the memtables
//! and the block cache we set here.

use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use fjall::Readable;

use super::StoreError;

/// A key or value read from the engine (cheap to clone, derefs to bytes).
pub type Bytes = fjall::Slice;

/// The one keyspace of stores written before 2026-11-23, when every key lived in one tree;
/// imported into the per-byte keyspaces at open ([`Engine::import_single_keyspace`]).
const SINGLE_KEYSPACE: &str = "parla";

/// Prefix of the keyspaces' names; the rest is the keys' first byte in hex ("key-6d").
const KEYSPACE_NAME_PREFIX: &str = "key-";

/// Entries copied per batch by [`Engine::copy_in`].
const COPY_BATCH: usize = 10_000;

/// A keyspace's memtable size: writes are buffered this much before they go to a table file.
/// Small, to keep memory bounded (the journal already makes every synced write durable).
const MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;

/// Most bytes buffered in the active memtables of all keyspaces together: past it the largest
/// is sealed, so memory stays bounded however the writes spread over the keyspaces.
const ACTIVE_MEMTABLES_BYTES: u64 = 12 * 1024 * 1024;

/// What fjall adds to each entry's key and value when it sizes its memtable (the size of its
/// in-memory entry, 64 bytes in lsm-tree 3.1), rounded up so our count is never below its.
const MEMTABLE_ENTRY_OVERHEAD: usize = 80;

/// Journals kept before their memtables must be flushed (fjall's floor is 64 MiB).
const MAX_JOURNALING_BYTES: u64 = 64 * 1024 * 1024;

/// Longest wait for the database lock when opening.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Handle to the open database; cheap to clone, usable from any thread.
///
/// Keys live in one LSM tree (fjall keyspace) per first byte, created when the first key with
/// that byte is written; scans that cross first bytes chain the trees in byte order, so callers
/// see one ordered key space. Why not one tree: parla's key prefixes are separate indexes, most
/// written in time order; in one tree every flushed table spans all of them, so each level-0
/// compaction rewrote the whole of level 1 (up to 256 MiB): with a million messages queued, a
/// third of the daemon's CPU went to compaction. Per prefix, time-ordered keys mostly move
/// down without a rewrite. One batch spans keyspaces atomically (one journal).
///
/// Every read goes through a snapshot of the batches applied so far: fjall's plain reads see a
/// batch while it is being applied, key by key, so a reader could see one outbox entry of a
/// batch, move its cursor past it, and never see the batch's earlier entry (found by the
/// kill -9 suite: webhook events that were never sent). A scan keeps its snapshot until it is
/// dropped, and with it every memtable flushed meanwhile (in every keyspace): keep scans
/// bounded, as the store's pages and sweeps are (a million entries copied under one snapshot
/// held 659 MiB).
#[derive(Clone)]
pub struct Engine {
    db: fjall::Database,
    spaces: Arc<Spaces>,
}

/// The keyspaces by first key byte.
struct Spaces {
    by_first_byte: [OnceLock<Space>; 256],
    /// Held while a keyspace is created (by the writer; tests may write from several threads).
    creating: Mutex<()>,
}

/// One keyspace and what [`Engine::bound_memtables`] knows of its memtable.
struct Space {
    keyspace: fjall::Keyspace,
    /// Bytes applied since its memtable was last seen sealed.
    unsealed: AtomicU64,
    /// How many sealed memtables it had at the last apply.
    seen_sealed: AtomicUsize,
}

impl From<fjall::Error> for StoreError {
    fn from(e: fjall::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// The name of the keyspace of keys starting with `byte`.
fn keyspace_name(byte: u8) -> String {
    format!("{KEYSPACE_NAME_PREFIX}{byte:02x}")
}

/// The first byte a keyspace named by [`keyspace_name`] holds.
fn keyspace_byte(name: &str) -> Option<u8> {
    let hex = name.strip_prefix(KEYSPACE_NAME_PREFIX)?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok())?
}

fn keyspace_options() -> fjall::KeyspaceCreateOptions {
    fjall::KeyspaceCreateOptions::default()
        .max_memtable_size(MEMTABLE_BYTES)
        .manual_journal_persist(true)
}

/// The keyspace of `key` (an empty bound sorts first, with the keys starting with 0; keys
/// themselves are never empty).
fn first_byte(key: &[u8]) -> u8 {
    key.first().copied().unwrap_or(0)
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
        let engine = Engine {
            db,
            spaces: Arc::new(Spaces {
                by_first_byte: std::array::from_fn(|_| OnceLock::new()),
                creating: Mutex::new(()),
            }),
        };
        for name in engine.db.list_keyspace_names() {
            if let Some(byte) = keyspace_byte(&name) {
                engine
                    .space_for_write(byte)
                    .map_err(|e| open_err(e.to_string()))?;
            }
        }
        engine
            .import_single_keyspace()
            .map_err(|e| open_err(format!("importing the single-keyspace layout: {e}")))?;
        Ok(engine)
    }

    /// Whether a database was created in `path` (its format marker is there).
    pub fn exists_at(path: &Path) -> bool {
        path.join("version").is_file()
    }

    /// Moves the entries of a store written with one keyspace ([`SINGLE_KEYSPACE`]) into the
    /// per-byte keyspaces, then drops it. Interrupted, it starts over at the next open: the
    /// copies are the same entries again, and nothing else writes before the open returns.
    fn import_single_keyspace(&self) -> Result<(), StoreError> {
        if !self.db.keyspace_exists(SINGLE_KEYSPACE) {
            return Ok(());
        }
        let old = self.db.keyspace(SINGLE_KEYSPACE, keyspace_options)?;
        let mut copied = 0;
        let mut after: Bound<Vec<u8>> = Bound::Unbounded;
        loop {
            // A snapshot per chunk: an open snapshot keeps every memtable flushed after it
            // in memory (659 MiB for a million messages copied under one).
            let chunk = self
                .db
                .snapshot()
                .range(&old, (after.clone(), Bound::Unbounded))
                .take(COPY_BATCH)
                .map(|guard| {
                    let (key, value) = guard.into_inner()?;
                    Ok((key.to_vec(), Some(value.to_vec())))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let Some((last, _)) = chunk.last() else { break };
            after = Bound::Excluded(last.clone());
            copied += chunk.len();
            self.apply(chunk)?;
        }
        self.persist()?;
        self.db.delete_keyspace(old)?;
        self.persist()?;
        tracing::info!(
            entries = copied,
            "store: moved the single keyspace into one per key prefix"
        );
        Ok(())
    }

    /// The keyspace of keys starting with `byte`, if one was created.
    fn space(&self, byte: u8) -> Option<&Space> {
        self.spaces.by_first_byte[usize::from(byte)].get()
    }

    /// The keyspace of keys starting with `byte`, created if there is none yet.
    fn space_for_write(&self, byte: u8) -> Result<&Space, StoreError> {
        let slot = &self.spaces.by_first_byte[usize::from(byte)];
        if let Some(space) = slot.get() {
            return Ok(space);
        }
        let _creating = self
            .spaces
            .creating
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(space) = slot.get() {
            return Ok(space);
        }
        let keyspace = self.db.keyspace(&keyspace_name(byte), keyspace_options)?;
        Ok(slot.get_or_init(|| Space {
            keyspace,
            unsealed: AtomicU64::new(0),
            seen_sealed: AtomicUsize::new(0),
        }))
    }

    /// The keyspaces created so far whose first byte is in `first..=last`, in byte order.
    fn spaces_between(&self, first: u8, last: u8) -> impl Iterator<Item = &Space> {
        (first..=last).filter_map(|byte| self.space(byte))
    }

    /// The value at `key`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, StoreError> {
        let key = key.as_ref();
        let Some(space) = key.first().and_then(|&byte| self.space(byte)) else {
            return Ok(None);
        };
        Ok(self.db.snapshot().get(&space.keyspace, key)?)
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> Iter {
        self.range::<&[u8], _>(..)
    }

    /// The entries whose keys fall in `range`, in key order (reversible).
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        let owned = |bound: Bound<&K>| bound.map(|key| key.as_ref().to_vec());
        let (start, end) = (owned(range.start_bound()), owned(range.end_bound()));
        let first = match &start {
            Bound::Included(key) | Bound::Excluded(key) => first_byte(key),
            Bound::Unbounded => 0,
        };
        let last = match &end {
            Bound::Included(key) | Bound::Excluded(key) => first_byte(key),
            Bound::Unbounded => u8::MAX,
        };
        if first > last {
            return Iter(Vec::new().into_iter().flatten());
        }
        let snapshot = self.db.snapshot();
        let scans: Vec<fjall::Iter> = self
            .spaces_between(first, last)
            .map(|space| snapshot.range(&space.keyspace, (start.clone(), end.clone())))
            .collect();
        Iter(scans.into_iter().flatten())
    }

    /// The entries whose keys start with `prefix`, in key order (reversible).
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Iter {
        let prefix = prefix.as_ref();
        let Some(&byte) = prefix.first() else {
            return self.iter();
        };
        let scans: Vec<fjall::Iter> = self
            .space(byte)
            .map(|space| self.db.snapshot().prefix(&space.keyspace, prefix))
            .into_iter()
            .collect();
        Iter(scans.into_iter().flatten())
    }

    /// Applies puts (Some) and deletes (None) as one atomic batch: readers see all of it or
    /// none. Not yet durable: see [`Engine::persist`].
    pub fn apply(
        &self,
        entries: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), StoreError> {
        let mut batch = self.db.batch();
        // Bytes per first byte, in the order first seen (a group touches a handful).
        let mut applied: Vec<(u8, u64)> = Vec::new();
        for (key, value) in entries {
            // fjall asserts this; every key of ours starts with its prefix byte.
            if key.is_empty() {
                return Err(StoreError::Unavailable(
                    "an empty key cannot be stored".into(),
                ));
            }
            let byte = first_byte(&key);
            let space = self.space_for_write(byte)?;
            let bytes =
                (key.len() + value.as_ref().map_or(0, Vec::len) + MEMTABLE_ENTRY_OVERHEAD) as u64;
            match applied.iter_mut().find(|(b, _)| *b == byte) {
                Some((_, sum)) => *sum += bytes,
                None => applied.push((byte, bytes)),
            }
            match value {
                Some(v) => batch.insert(&space.keyspace, key, v),
                None => batch.remove(&space.keyspace, key),
            }
        }
        // From here on the batch may be in the journal's file, whole or not.
        let unconfirmed = |e: StoreError| StoreError::Unconfirmed(e.to_string());
        batch.commit().map_err(|e| unconfirmed(e.into()))?;
        self.bound_memtables(&applied).map_err(unconfirmed)
    }

    /// Seals memtables before fjall would ask for it. fjall asks its worker to, once per commit
    /// while a memtable is over its size, with a `try_send` to the worker's queue of 1,000;
    /// when the one worker is in a long compaction (tens of seconds after a million messages
    /// queued in a minute) the requests fill the queue, the memtable grows (to 300 MiB
    /// measured), and the worker can then block forever sending a flush to its own full queue
    /// (seen: the daemon stopped, every thread parked). Sealed here at three quarters of the
    /// size, counted as fjall counts it, a memtable never reaches fjall's threshold; a sealed
    /// one waits for the worker to flush it, and past four in a keyspace fjall holds the writes
    /// back: memory stays bounded and intake waits, as it must when the disk work lags. A
    /// keyspace's count restarts when fjall was seen to seal one itself (for its journal's
    /// size). Past [`ACTIVE_MEMTABLES_BYTES`] in all keyspaces, the largest is sealed.
    fn bound_memtables(&self, applied: &[(u8, u64)]) -> Result<(), StoreError> {
        for &(byte, bytes) in applied {
            let Some(space) = self.space(byte) else {
                continue;
            };
            let sealed = space.keyspace.sealed_memtable_count();
            let unsealed = if sealed > space.seen_sealed.swap(sealed, Ordering::Relaxed) {
                space.unsealed.store(bytes, Ordering::Relaxed);
                bytes
            } else {
                space.unsealed.fetch_add(bytes, Ordering::Relaxed) + bytes
            };
            if unsealed >= MEMTABLE_BYTES / 4 * 3 {
                Self::seal(space)?;
            }
        }
        let mut total = 0;
        let mut largest: Option<(&Space, u64)> = None;
        for space in self.spaces_between(0, u8::MAX) {
            let unsealed = space.unsealed.load(Ordering::Relaxed);
            total += unsealed;
            if largest.is_none_or(|(_, most)| unsealed > most) {
                largest = Some((space, unsealed));
            }
        }
        if let Some((space, _)) = largest.filter(|_| total >= ACTIVE_MEMTABLES_BYTES) {
            Self::seal(space)?;
        }
        Ok(())
    }

    fn seal(space: &Space) -> Result<(), StoreError> {
        space.keyspace.rotate_memtable()?;
        space.unsealed.store(0, Ordering::Relaxed);
        space
            .seen_sealed
            .store(space.keyspace.sealed_memtable_count(), Ordering::Relaxed);
        Ok(())
    }

    /// Writes the in-memory write buffers to table files, so that the next open has no journal
    /// to replay (a graceful stop; after a crash the replay is bounded by the journal's size).
    pub fn write_buffer_to_table(&self) -> Result<(), StoreError> {
        for space in self.spaces_between(0, u8::MAX) {
            space.keyspace.rotate_memtable_and_wait()?;
        }
        Ok(())
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
        let mut batch = Vec::with_capacity(COPY_BATCH);
        let mut copied = 0;
        for entry in entries {
            let (key, value) = entry?;
            batch.push((key, Some(value)));
            copied += 1;
            if batch.len() == COPY_BATCH {
                self.apply(std::mem::take(&mut batch))?;
            }
        }
        self.apply(batch)?;
        Ok(copied)
    }

    /// Makes every batch applied so far durable: the journal is written out and fdatasync'ed.
    pub fn persist(&self) -> Result<(), StoreError> {
        // Part of what was applied may have reached the disk before the failure.
        self.db
            .persist(fjall::PersistMode::SyncData)
            .map_err(|e| StoreError::Unconfirmed(StoreError::from(e).to_string()))
    }
}

/// Entries of a scan, in key order or (with `.rev()`) reversed: the scans of the keyspaces it
/// crosses, one after the other.
pub struct Iter(std::iter::Flatten<std::vec::IntoIter<fjall::Iter>>);

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

    /// Keys of a batch that land in different keyspaces are seen together too: one scan
    /// reads every keyspace at the same snapshot.
    #[test]
    fn a_scan_never_sees_a_batch_in_part_across_keyspaces() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), 1 << 20).unwrap();
        const BATCHES: u32 = 5_000;
        let key = |space: u8, n: u32| {
            let mut key = vec![space];
            key.extend_from_slice(&n.to_be_bytes());
            key
        };
        let writer = {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for n in 0..BATCHES {
                    engine
                        .apply([
                            (key(b'b', n), Some(Vec::new())),
                            (key(b'a', n), Some(Vec::new())),
                        ])
                        .unwrap();
                }
            })
        };
        let mut torn = 0;
        loop {
            let (mut a, mut b) = (0u32, 0u32);
            for key in engine.iter().keys() {
                match key.unwrap()[0] {
                    b'a' => a += 1,
                    _ => b += 1,
                }
            }
            if a != b {
                torn += 1;
            }
            if b == BATCHES {
                break;
            }
        }
        writer.join().unwrap();
        assert_eq!(torn, 0, "scans that saw one keyspace's half of a batch");
    }

    /// Scans across keyspaces, forwards and backwards, give what one ordered map gives.
    #[test]
    fn scans_across_keyspaces_are_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), 1 << 20).unwrap();
        let mut model = std::collections::BTreeMap::new();
        let keys: Vec<Vec<u8>> = vec![
            vec![0],
            vec![0, 9],
            b"a".to_vec(),
            b"a\x00z".to_vec(),
            b"ab".to_vec(),
            b"b".to_vec(),
            b"m1".to_vec(),
            b"m2".to_vec(),
            b"t\xff".to_vec(),
            vec![0xff],
            vec![0xff, 0xff],
        ];
        for (n, key) in keys.iter().enumerate() {
            model.insert(key.clone(), vec![n as u8]);
        }
        engine
            .apply(model.iter().map(|(k, v)| (k.clone(), Some(v.clone()))))
            .unwrap();
        // A deleted key in a keyspace of its own leaves it empty.
        engine.apply([(b"q".to_vec(), Some(vec![1]))]).unwrap();
        engine.remove(b"q").unwrap();

        let read = |iter: Iter| -> Vec<Vec<u8>> { iter.map(|e| e.unwrap().0.to_vec()).collect() };
        let all: Vec<Vec<u8>> = model.keys().cloned().collect();
        assert_eq!(read(engine.iter()), all);
        let mut reversed = all.clone();
        reversed.reverse();
        assert_eq!(
            engine
                .iter()
                .rev()
                .map(|e| e.unwrap().0.to_vec())
                .collect::<Vec<_>>(),
            reversed
        );
        for (lo, hi) in [
            (b"a".to_vec(), b"m2".to_vec()),
            (b"a\x00".to_vec(), b"b".to_vec()),
            (vec![0], vec![0xff]),
            (b"c".to_vec(), b"p".to_vec()),
            (b"m".to_vec(), b"m".to_vec()),
            (b"z".to_vec(), b"a".to_vec()),
        ] {
            let expected: Vec<Vec<u8>> = if lo <= hi {
                model
                    .range(lo.clone()..hi.clone())
                    .map(|(k, _)| k.clone())
                    .collect()
            } else {
                Vec::new()
            };
            assert_eq!(
                read(engine.range(lo.clone()..hi.clone())),
                expected,
                "{lo:?}..{hi:?}"
            );
            let mut back = expected.clone();
            back.reverse();
            let got: Vec<Vec<u8>> = engine
                .range(lo.clone()..hi.clone())
                .rev()
                .map(|e| e.unwrap().0.to_vec())
                .collect();
            assert_eq!(got, back, "{lo:?}..{hi:?} reversed");
        }
        assert_eq!(
            read(engine.scan_prefix(b"m")),
            vec![b"m1".to_vec(), b"m2".to_vec()]
        );
        assert_eq!(read(engine.scan_prefix(b"q")), Vec::<Vec<u8>>::new());
        assert_eq!(read(engine.scan_prefix(b"x")), Vec::<Vec<u8>>::new());
        assert_eq!(engine.get(b"ab").unwrap().as_deref(), Some(&[4u8][..]));
        assert_eq!(engine.get(b"x").unwrap(), None);
        assert_eq!(engine.get([]).unwrap(), None);
        assert!(
            engine
                .apply([(b"n".to_vec(), None), (vec![], None)])
                .is_err()
        );
        assert_eq!(
            read(engine.iter()),
            all,
            "a rejected batch changed something"
        );
    }

    /// Writes `bytes` (as fjall counts them) into the keyspace of `prefix`, in batches of 100.
    fn fill(engine: &Engine, prefix: u8, bytes: u64) {
        const VALUE: usize = 1_000;
        let entry = (1 + 4 + VALUE + MEMTABLE_ENTRY_OVERHEAD) as u64;
        let entries = u32::try_from(bytes / entry).unwrap();
        for chunk in (0..entries).collect::<Vec<_>>().chunks(100) {
            engine
                .apply(chunk.iter().map(|n| {
                    let mut key = vec![prefix];
                    key.extend_from_slice(&n.to_be_bytes());
                    (key, Some(vec![7; VALUE]))
                }))
                .unwrap();
        }
    }

    /// Whether the keyspace of `prefix` had a memtable sealed (waiting or written to a table).
    fn sealed_any(engine: &Engine, prefix: u8) -> bool {
        let keyspace = &engine.space(prefix).unwrap().keyspace;
        keyspace.sealed_memtable_count() + keyspace.table_count() > 0
    }

    /// One keyspace's memtable is sealed before fjall's own threshold (where fjall would flood
    /// its worker's queue with requests).
    #[test]
    fn a_memtable_is_sealed_before_fjall_would_ask() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), 1 << 20).unwrap();
        fill(&engine, b'm', MEMTABLE_BYTES / 4 * 3 - 200_000);
        assert!(!sealed_any(&engine, b'm'), "sealed below three quarters");
        fill(&engine, b'm', 400_000);
        assert!(sealed_any(&engine, b'm'), "not sealed past three quarters");
    }

    /// Writes spread over several keyspaces, each below its own size: the largest is sealed
    /// once all of them together pass the budget.
    #[test]
    fn memtables_of_all_keyspaces_together_stay_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), 1 << 20).unwrap();
        let each = ACTIVE_MEMTABLES_BYTES / 4 - 200_000;
        for prefix in [b'd', b's', b't', b'm'] {
            fill(&engine, prefix, each);
        }
        assert!(
            [b'd', b's', b't', b'm']
                .iter()
                .all(|&p| !sealed_any(&engine, p)),
            "sealed below the budget"
        );
        fill(&engine, b'm', 1_000_000);
        assert!(
            sealed_any(&engine, b'm'),
            "the largest was not sealed past the budget"
        );
        assert!(!sealed_any(&engine, b'd'), "a smaller one was sealed");
    }

    /// A store written when every key lived in one keyspace opens with all its entries, in the
    /// per-byte keyspaces, and the single keyspace is gone.
    #[test]
    fn a_single_keyspace_store_is_moved_into_one_keyspace_per_first_byte() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..25_000u32)
            .map(|n| {
                let prefix = [b'c', b'd', b'm', b't'][n as usize % 4];
                let mut key = vec![prefix];
                key.extend_from_slice(&n.to_be_bytes());
                (key, n.to_le_bytes().to_vec())
            })
            .collect();
        {
            let db = fjall::Database::builder(dir.path()).open().unwrap();
            let old = db.keyspace(SINGLE_KEYSPACE, keyspace_options).unwrap();
            for (key, value) in &entries {
                old.insert(key, value).unwrap();
            }
            db.persist(fjall::PersistMode::SyncAll).unwrap();
        }
        for _ in 0..2 {
            let engine = Engine::open(dir.path(), 1 << 20).unwrap();
            assert!(!engine.db.keyspace_exists(SINGLE_KEYSPACE));
            let mut sorted = entries.clone();
            sorted.sort();
            let read: Vec<(Vec<u8>, Vec<u8>)> = engine
                .iter()
                .map(|e| {
                    let (k, v) = e.unwrap();
                    (k.to_vec(), v.to_vec())
                })
                .collect();
            assert_eq!(read, sorted);
            let mut names: Vec<String> = engine
                .db
                .list_keyspace_names()
                .iter()
                .map(|n| n.to_string())
                .collect();
            names.sort();
            assert_eq!(names, ["key-63", "key-64", "key-6d", "key-74"]);
        }
    }

    /// An import interrupted after some chunks (the single keyspace still there, part of its
    /// entries already in the per-byte keyspaces) is started over and completes.
    #[test]
    fn an_interrupted_move_out_of_the_single_keyspace_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..3_000u32)
            .map(|n| {
                let mut key = vec![[b'm', b't'][n as usize % 2]];
                key.extend_from_slice(&n.to_be_bytes());
                (key, n.to_le_bytes().to_vec())
            })
            .collect();
        {
            let db = fjall::Database::builder(dir.path()).open().unwrap();
            let old = db.keyspace(SINGLE_KEYSPACE, keyspace_options).unwrap();
            let copied = db.keyspace(&keyspace_name(b'm'), keyspace_options).unwrap();
            for (n, (key, value)) in entries.iter().enumerate() {
                old.insert(key, value).unwrap();
                if key[0] == b'm' && n < 1_000 {
                    copied.insert(key, value).unwrap();
                }
            }
            db.persist(fjall::PersistMode::SyncAll).unwrap();
        }
        let engine = Engine::open(dir.path(), 1 << 20).unwrap();
        assert!(!engine.db.keyspace_exists(SINGLE_KEYSPACE));
        let mut sorted = entries;
        sorted.sort();
        let read: Vec<(Vec<u8>, Vec<u8>)> = engine
            .iter()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect();
        assert_eq!(read, sorted);
    }
}
