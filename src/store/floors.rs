//! Where scans of the due index start. The engine is an LSM tree: a deleted key stays behind as a
//! tombstone until compaction reaches it, and the queue is deleted from its front all day (every
//! claim removes the earliest entries). A scan from a lane's first key would step over every
//! message claimed since the last compaction, on every dispatcher pass: measured, 14% of the
//! daemon's CPU at 256 clients. So each lane keeps a floor: every entry below it is known gone.
//!
//! Readers raise a floor to the first live key they found; the writer lowers it before it inserts
//! a key below it. A raise is dropped when a write that inserts due keys was in flight during the
//! scan, or started since (its key may be missing from the scan's snapshot yet sort below the
//! new floor). So no live key is ever below its lane's floor once its write is visible.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::route::Lane;

use super::keys;

#[derive(Default)]
struct State {
    floors: HashMap<Lane, Vec<u8>>,
    /// Bumped by every write that inserts due keys.
    generation: u64,
    /// Writes that inserted due keys and are not yet visible.
    writing: usize,
}

/// The floors of every lane (shared by the writer and the readers).
#[derive(Default)]
pub struct DueFloors(Mutex<State>);

/// What a scan read before it started: where to start, and whether it may raise the floor.
pub struct FloorRead {
    /// The first key to scan.
    pub start: Vec<u8>,
    generation: u64,
    may_raise: bool,
}

impl DueFloors {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Before a scan of `lane`'s due entries: where it starts.
    pub fn read(&self, lane: Lane) -> FloorRead {
        let s = self.state();
        FloorRead {
            start: s
                .floors
                .get(&lane)
                .cloned()
                .unwrap_or_else(|| keys::due_lane(lane)),
            generation: s.generation,
            may_raise: s.writing == 0,
        }
    }

    /// After a scan that started at `read`: nothing live in `lane` sorts below `to` (the first
    /// live key found, or the end of the scanned range when none was).
    pub fn raise(&self, lane: Lane, read: FloorRead, to: Vec<u8>) {
        let mut s = self.state();
        if !read.may_raise || s.writing > 0 || s.generation != read.generation {
            return;
        }
        let floor = s.floors.entry(lane).or_insert_with(|| keys::due_lane(lane));
        if to > *floor {
            *floor = to;
        }
    }

    /// The writer, before applying a batch that inserts the due `entries`: lowers the floors
    /// below them. Must be followed by [`DueFloors::written`] once the batch is visible (or failed).
    pub fn writing<'a>(&self, entries: impl Iterator<Item = &'a [u8]>) {
        let mut s = self.state();
        s.generation += 1;
        s.writing += 1;
        for key in entries {
            let Some(lane) = keys::due_lane_of(key) else {
                continue;
            };
            if let Some(floor) = s.floors.get_mut(&lane)
                && key < floor.as_slice()
            {
                *floor = key.to_vec();
            }
        }
    }

    /// The batch announced by [`DueFloors::writing`] is visible (or failed).
    pub fn written(&self) {
        let mut s = self.state();
        s.writing = s.writing.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageId;

    fn due(lane: Lane, at: i64) -> Vec<u8> {
        keys::due(lane, at, MessageId(ulid::Ulid::from_parts(at as u64, 1)))
    }

    #[test]
    fn a_raise_moves_the_start_and_an_insert_below_lowers_it() {
        let floors = DueFloors::default();
        let read = floors.read(1);
        assert_eq!(read.start, keys::due_lane(1));
        floors.raise(1, read, due(1, 500));
        assert_eq!(floors.read(1).start, due(1, 500));
        // Other lanes are untouched.
        assert_eq!(floors.read(2).start, keys::due_lane(2));
        floors.writing([due(1, 100).as_slice()].into_iter());
        floors.written();
        assert_eq!(floors.read(1).start, due(1, 100));
        // A floor never goes down by a raise.
        let read = floors.read(1);
        floors.raise(1, read, due(1, 50));
        assert_eq!(floors.read(1).start, due(1, 100));
    }

    #[test]
    fn a_raise_is_dropped_when_a_due_insert_was_in_flight_or_started_during_the_scan() {
        let floors = DueFloors::default();
        // In flight when the scan started: its key may be missing from the scan.
        floors.writing([due(1, 900).as_slice()].into_iter());
        let read = floors.read(1);
        floors.written();
        floors.raise(1, read, due(1, 1000));
        assert_eq!(floors.read(1).start, keys::due_lane(1));
        // Started during the scan.
        let read = floors.read(1);
        floors.writing([due(1, 900).as_slice()].into_iter());
        floors.written();
        floors.raise(1, read, due(1, 1000));
        assert_eq!(floors.read(1).start, keys::due_lane(1));
        // Quiet: the raise holds.
        let read = floors.read(1);
        floors.raise(1, read, due(1, 1000));
        assert_eq!(floors.read(1).start, due(1, 1000));
    }
}
