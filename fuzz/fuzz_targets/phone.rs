//! Fuzzes `parla::phone`: recipient normalization to E.164 and sender-id validation, which see
//! whatever an API client submits.
//!
//! Properties: never a panic; a normalized number is `+` and digits and is a fixed point (normalizing it again, with or without a region, gives it back); an accepted
//! sender is trimmed, non-empty and also a fixed point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use parla::phone::{normalize, normalize_sender, region};

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    let it = region(Some("IT"));
    assert!(it.is_some(), "IT must be a known region");
    for region in [None, it] {
        if let Ok(e164) = normalize(&input, region) {
            check_e164(&input, &e164);
            assert_eq!(
                normalize(&e164, None).as_deref(),
                Ok(e164.as_str()),
                "normalize({input:?}, {region:?}) = {e164:?}, which normalizes differently without a region"
            );
            assert_eq!(
                normalize(&e164, it).as_deref(),
                Ok(e164.as_str()),
                "normalize({input:?}, {region:?}) = {e164:?}, which normalizes differently with region IT"
            );
        }
        if let Ok(sender) = normalize_sender(&input, region) {
            assert!(!sender.is_empty());
            assert_eq!(sender.trim(), sender, "sender {sender:?} is not trimmed");
            if sender.starts_with('+') {
                check_e164(&input, &sender);
            }
            assert_eq!(
                normalize_sender(&sender, region).as_deref(),
                Ok(sender.as_str()),
                "normalize_sender({input:?}, {region:?}) = {sender:?}, which is not a fixed point"
            );
        }
    }
});

fn check_e164(input: &str, e164: &str) {
    let digits = e164
        .strip_prefix('+')
        .unwrap_or_else(|| panic!("{e164:?} (from {input:?}) does not start with '+'"));
    assert!(
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
        "{e164:?} (from {input:?}) is not '+' and digits"
    );
    // E.164 itself allows 15 digits, but libphonenumber's metadata accepts longer numbers as
    // valid (Germany: national numbers of up to 15 digits, so "+49-2330-1 1267145677" gives 17
    // digits). Its own bounds (country code <= 3 digits, national number <= 17) are what holds.
    assert!(
        digits.len() <= 20,
        "{e164:?} (from {input:?}) has more than 20 digits"
    );
}
