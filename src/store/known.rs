//! Numbers the writer knows have a record under a key prefix: customers with a conversation
//! (`v`), numbers on the opt-out list (`x`). The writer looks for both with every message it
//! creates, and most messages go to numbers that have neither; an absent key is the dearest read
//! of an LSM tree (it reaches every table), and those reads cost 9% of the daemon's CPU under
//! load. Held by the writer, the only thread that writes these records; never shrunk, so a
//! number whose record went, or whose hash collides, costs one read, never a wrong answer.
//! Memory: about 16 bytes per number that ever had such a record.

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use super::StoreError;
use super::engine::Engine;

/// Numbers with a record under one prefix, as hashes.
#[derive(Debug, Default)]
pub(super) struct KnownNumbers(HashSet<u64>);

impl KnownNumbers {
    /// The numbers of the keys under `prefix` in `tree`: the key's bytes after the prefix, up
    /// to a 0x00 if there is one (conversation keys go on with the shop number).
    pub(super) fn load(tree: &Engine, prefix: u8) -> Result<KnownNumbers, StoreError> {
        let mut known = KnownNumbers::default();
        for key in tree.scan_prefix([prefix]).keys() {
            let key = key?;
            let rest = key.get(1..).unwrap_or_default();
            let number = rest.split(|&b| b == 0).next().unwrap_or_default();
            known.0.insert(hash_of(number));
        }
        Ok(known)
    }

    /// Notes that `number` has a record (from the group being staged on).
    pub(super) fn add(&mut self, number: &str) {
        self.0.insert(hash_of(number.as_bytes()));
    }

    /// False when `number` certainly has no record.
    pub(super) fn may_have(&self, number: &str) -> bool {
        self.0.contains(&hash_of(number.as_bytes()))
    }
}

fn hash_of(number: &[u8]) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::keys;

    #[test]
    fn numbers_are_read_from_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Engine::open(dir.path(), 1 << 20).unwrap();
        tree.insert(keys::conversation("+391", "Shop"), b"c".to_vec())
            .unwrap();
        tree.insert(keys::optout("+392"), b"o".to_vec()).unwrap();
        let conversing = KnownNumbers::load(&tree, keys::CONVERSATION).unwrap();
        assert!(conversing.may_have("+391"));
        assert!(!conversing.may_have("+39"), "not a prefix of the number");
        assert!(!conversing.may_have("+392"));
        let mut opted_out = KnownNumbers::load(&tree, keys::OPTOUT).unwrap();
        assert!(opted_out.may_have("+392"));
        assert!(!opted_out.may_have("+391"));
        opted_out.add("+393");
        assert!(opted_out.may_have("+393"));
    }
}
