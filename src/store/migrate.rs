//! One-time import of a store written with the sled engine (parla's engine until 2026-11) into
//! the current one, at open, in place: keys and values are the same bytes in both, so it is a
//! copy. Crash-safe: the sled files are removed only after the copy, with its marker written
//! last, is synced; an interrupted import is started over from an empty keyspace.

use std::path::Path;

use super::StoreError;
use super::engine::Engine;
use super::keys;

/// The counter written with the import's last batch: the copy is complete.
const IMPORTED_MARKER: &[u8] = b"imported_from_sled";

/// Files and directories sled 0.34 keeps in its directory.
fn sled_files(path: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(path) else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if matches!(name.as_ref(), "conf" | "db" | "blobs") || name.starts_with("snap.") {
            found.push(entry.path());
        }
    }
    found
}

/// Whether `path` holds a sled database.
pub fn has_sled_store(path: &Path) -> bool {
    path.join("conf").is_file() && path.join("db").is_file()
}

/// Copies the sled database at `path`, if there is one, into `engine` (opened at the same
/// path), then deletes the sled files.
pub fn import_sled_store(path: &Path, engine: &Engine, cache_bytes: u64) -> Result<(), StoreError> {
    if !has_sled_store(path) {
        return Ok(());
    }
    let open_err = |reason: String| StoreError::Open {
        path: path.to_path_buf(),
        reason: format!("importing the sled store: {reason}"),
    };
    let marker = keys::counter(IMPORTED_MARKER);
    if engine.get(&marker)?.is_none() {
        // A copy that was interrupted: start over from an empty keyspace.
        let mut stale = Vec::new();
        for key in engine.iter().keys() {
            stale.push((key?.to_vec(), None));
        }
        engine.apply(stale)?;
        tracing::warn!(
            path = %path.display(),
            "this store was written by an older parla (sled engine); importing it"
        );
        let old = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|e| open_err(e.to_string()))?;
        let copied = engine.copy_in(old.iter().map(|item| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(|e| open_err(e.to_string()))
        }))?;
        // After every batch of the copy: its presence says the copy is complete.
        engine.apply([(marker, Some(copied.to_be_bytes().to_vec()))])?;
        engine.persist()?;
        tracing::info!(keys = copied, "the sled store was imported");
    }
    // "conf" goes last: while it is there, the next open finishes the removal.
    let mut files = sled_files(path);
    files.sort_by_key(|f| f.ends_with("conf"));
    for file in files {
        let removed = if file.is_dir() {
            std::fs::remove_dir_all(&file)
        } else {
            std::fs::remove_file(&file)
        };
        removed.map_err(|e| open_err(format!("removing {}: {e}", file.display())))?;
    }
    Ok(())
}
