//! Fuzzes `parla::codec::gsm7`, the codec of SMS user data.
//!
//! The input is used twice: as packed user data from a peer (septet unpacking with several
//! TP-UDL/fill-bit combinations, septet decoding, UCS-2 decoding) and, read as lossy UTF-8, as the
//! text of a message to segment. Every function must be total, and where the codec promises a
//! property (round trips, part counts, capacities) it is asserted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use parla::codec::gsm7::{
    self, Encoding, Gsm7Error, PartPayload, count_parts, count_parts_as, from_septets, from_ucs2,
    pack_septets, segment, segment_as, septet_len, to_septets, to_ucs2, ucs2_from_be_bytes,
    ucs2_to_be_bytes, unpack_septets,
};

/// The `max_parts` the brief asks for: the most an 8-bit concatenation reference can number.
const MAX_PARTS: usize = 255;

fuzz_target!(|data: &[u8]| {
    check_unpack(data);
    check_from_septets(data);
    check_ucs2(data);
    let text = String::from_utf8_lossy(data);
    check_segment(&text, MAX_PARTS);
    // A small limit taken from the input reaches the TooManyParts path with short inputs.
    let small = usize::from(data.first().copied().unwrap_or(0) % 4);
    check_segment(&text, small);
});

/// `unpack_septets` with septet counts and fill bits a peer could send for this many octets.
fn check_unpack(data: &[u8]) {
    let capacity = data.len() * 8 / 7;
    let first = usize::from(data.first().copied().unwrap_or(0));
    let counts = [
        0,
        1,
        capacity,
        capacity.saturating_sub(1),
        capacity + 1,
        first,
        first * 2,
        usize::MAX / 7 + 1,
        usize::MAX,
    ];
    let fills = [0u8, 1, 3, 6, 7, data.last().copied().unwrap_or(0)];
    for &count in &counts {
        for &fill in &fills {
            check_unpack_one(data, count, fill);
        }
    }
}

fn check_unpack_one(data: &[u8], count: usize, fill: u8) {
    let result = unpack_septets(data, count, fill);
    if fill > 6 {
        assert_eq!(result, Err(Gsm7Error::InvalidFillBits { fill_bits: fill }));
        return;
    }
    let needed_bits = count
        .checked_mul(7)
        .and_then(|bits| bits.checked_add(usize::from(fill)));
    let fits = count == 0 || needed_bits.is_some_and(|bits| bits <= data.len() * 8);
    let septets = match result {
        Ok(septets) => septets,
        Err(e) => {
            assert!(
                !fits,
                "unpack({count}, fill {fill}) of {} octets: {e:?}",
                data.len()
            );
            assert_eq!(e, Gsm7Error::Truncated);
            return;
        }
    };
    assert!(
        fits,
        "unpack({count}, fill {fill}) of {} octets succeeded",
        data.len()
    );
    assert_eq!(septets.len(), count);
    assert!(septets.iter().all(|&s| s <= 0x7F), "septet above 0x7F");
    if count == 0 {
        return;
    }
    // Packing the septets again gives back the octets they came from, with the fill bits and the
    // padding bits of the last octet zeroed (pack_septets writes zeros there).
    let needed_bits = count * 7 + usize::from(fill);
    let needed_octets = needed_bits.div_ceil(8);
    let mut expected = data[..needed_octets].to_vec();
    expected[0] &= !((1u8 << fill) - 1);
    let used_in_last = needed_bits - 8 * (needed_octets - 1);
    if used_in_last < 8 {
        let last = needed_octets - 1;
        expected[last] &= (1u8 << used_in_last) - 1;
    }
    let repacked = pack_septets(&septets, fill);
    assert_eq!(
        repacked, expected,
        "pack(unpack(x)) != x for count {count}, fill {fill}"
    );
    assert_eq!(
        unpack_septets(&repacked, count, fill).as_ref(),
        Ok(&septets)
    );
}

/// `from_septets` on arbitrary octets (bit 8 set, stray escapes): total, and what it yields is
/// GSM text that survives a round trip through the encoder.
fn check_from_septets(data: &[u8]) {
    let text = from_septets(data);
    assert!(text.chars().count() <= data.len());
    assert!(
        gsm7::is_gsm7(&text),
        "from_septets produced non-GSM text {text:?}"
    );
    let septets = to_septets(&text).expect("decoded text must encode");
    assert!(septets.len() <= data.len());
    assert_eq!(from_septets(&septets), text);
    assert_eq!(septet_len(&text), Ok(septets.len()));
}

/// UCS-2 user data: total; exact round trip for well-formed UTF-16; one unit per unit otherwise.
fn check_ucs2(data: &[u8]) {
    let text = ucs2_from_be_bytes(data);
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .collect();
    assert_eq!(from_ucs2(&units), text);
    let back = to_ucs2(&text);
    // from_utf16_lossy replaces each lone surrogate with one U+FFFD, a single unit.
    assert_eq!(back.len(), units.len());
    if String::from_utf16(&units).is_ok() {
        assert_eq!(back, units);
        assert_eq!(ucs2_to_be_bytes(&back), data[..data.len() & !1]);
    }
}

/// Segmenting `text`: parts rebuild the text, the count agrees, capacities hold.
fn check_segment(text: &str, max_parts: usize) {
    let encoding = gsm7::choose_encoding(text);
    let (count_encoding, count) = count_parts(text);
    assert_eq!(count_encoding, encoding);
    assert_eq!(count_parts_as(text, encoding), Ok(count));
    // UCS-2 carries any text.
    assert!(count_parts_as(text, Encoding::Ucs2).is_ok());

    if encoding == Encoding::Gsm7 {
        let septets = to_septets(text).expect("GSM text must encode");
        assert_eq!(from_septets(&septets), text, "GSM 7-bit round trip");
        assert_eq!(septet_len(text), Ok(septets.len()));
    } else {
        assert!(to_septets(text).is_err());
        assert!(matches!(
            segment_as(text, Encoding::Gsm7, max_parts),
            Err(Gsm7Error::Unencodable { .. })
        ));
    }

    match segment(text, max_parts) {
        Ok(segmented) => {
            assert!(count <= max_parts);
            check_parts(text, &segmented.parts, segmented.encoding, count);
            assert_eq!(segmented.encoding, encoding);
        }
        Err(Gsm7Error::TooManyParts { needed, max }) => {
            assert_eq!(max, max_parts);
            assert_eq!(needed, count);
            assert!(needed > max_parts);
        }
        Err(e) => panic!("segment failed with {e:?} on {text:?}"),
    }
    // Forced UCS-2 works for every text.
    if let Ok(segmented) = segment_as(text, Encoding::Ucs2, max_parts) {
        let n = count_parts_as(text, Encoding::Ucs2).unwrap();
        check_parts(text, &segmented.parts, Encoding::Ucs2, n);
    }
}

fn check_parts(text: &str, parts: &[PartPayload], encoding: Encoding, count: usize) {
    assert_eq!(parts.len(), count, "count_parts disagrees with segment");
    assert!(!parts.is_empty());
    let capacity = if parts.len() == 1 {
        encoding.single_part_capacity()
    } else {
        encoding.concat_part_capacity()
    };
    let mut joined = String::with_capacity(text.len());
    for part in parts {
        assert!(part.len_units() <= capacity, "part over capacity");
        if parts.len() > 1 {
            assert!(part.len_units() > 0, "empty part in a concatenated message");
        }
        match (part, encoding) {
            (PartPayload::Septets(septets), Encoding::Gsm7) => {
                // No part ends inside an escape pair (0x1B is never a character of its own).
                assert_ne!(
                    septets.last(),
                    Some(&gsm7::ESCAPE),
                    "part ends on an escape"
                );
                for fill in 0..=6 {
                    let packed = pack_septets(septets, fill);
                    assert_eq!(
                        unpack_septets(&packed, septets.len(), fill).as_ref(),
                        Ok(septets),
                        "pack/unpack of a part with fill {fill}"
                    );
                }
            }
            (PartPayload::Ucs2(units), Encoding::Ucs2) => {
                // Each part is well-formed UTF-16 on its own: no split surrogate pair.
                assert!(
                    String::from_utf16(units).is_ok(),
                    "part splits a surrogate pair"
                );
            }
            _ => panic!("part payload does not match encoding {encoding:?}"),
        }
        joined.push_str(&part.to_text());
    }
    assert_eq!(joined, text, "parts do not rebuild the text");
}
