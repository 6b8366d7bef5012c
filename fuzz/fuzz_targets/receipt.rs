//! libFuzzer target for `codec::receipt`: `cargo fuzz add receipt` and replace the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use parla::codec::receipt::{ReceiptError, id_candidates, normalize_id, parse};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(receipt) => {
            assert!(!receipt.id.is_empty());
            let _ = receipt.state().and_then(|state| state.outcome());
            check_id(&receipt.id);
        }
        Err(ReceiptError::MissingId) => {}
    }
    check_id(&String::from_utf8_lossy(data));
});

fn check_id(id: &str) {
    let candidates = id_candidates(id);
    if id.is_empty() {
        assert!(candidates.is_empty());
        return;
    }
    assert_eq!(candidates.first(), Some(&normalize_id(id)));
    for (i, candidate) in candidates.iter().enumerate() {
        assert!(!candidate.is_empty());
        assert!(!candidates[..i].contains(candidate), "duplicate candidate");
    }
}
