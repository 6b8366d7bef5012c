//! libFuzzer target for the AT response decoder (`cargo fuzz run at`).
//!
//! The first input byte chooses where the rest is split in two pushes, so the fuzzer also
//! explores chunk boundaries; frames are drained after each push.
#![no_main]

use libfuzzer_sys::fuzz_target;
use parla::codec::at::{AtDecoder, MAX_LINE};

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let at = usize::from(split) * bytes.len() / 255;
    let (first, second) = bytes.split_at(at.min(bytes.len()));
    let mut decoder = AtDecoder::new();
    for chunk in [first, second] {
        decoder.push(chunk);
        assert!(decoder.buffered() <= MAX_LINE, "buffer grew to {}", decoder.buffered());
        while let Some(frame) = decoder.next_frame() {
            // Formatting walks every string in the frame.
            let _ = format!("{frame:?}");
        }
    }
    assert!(decoder.discarded() <= bytes.len() as u64);
});
