//! GSM 03.38 text codec and segmenter: the 7-bit default alphabet and its extension table
//! (3GPP TS 23.038 §6.2.1), septet packing with UDH fill bits (TS 23.040 §9.2.3.24), UCS-2 /
//! UTF-16 and the split of a message into the parts it is sent as.
//!
//! Pure code: no I/O, no clock. Every function is total: untrusted input yields a value or a
//! [`Gsm7Error`], never a panic.
//!
//! Decisions that other modules rely on:
//! - Nothing is transliterated. A character outside the alphabet (`È`, `á`, `ç`, emoji ...) makes
//!   [`choose_encoding`] pick UCS-2, so the recipient sees exactly what was submitted.
//! - Concatenated parts leave room for a 6-octet UDH with an 8-bit reference (IEI 00): 153 septets
//!   or 67 UTF-16 units per part.
//! - An escape pair (0x1B + extension septet) and a UTF-16 surrogate pair are never cut across
//!   parts, so each part decodes on its own.

use thiserror::Error;

/// Septet that makes the next septet index the extension table; exposed because PDU code and
/// tests need to recognise escape pairs.
pub const ESCAPE: u8 = 0x1B;
/// Septets in a single (non-concatenated) GSM 7-bit message: 140 octets * 8 / 7.
pub const GSM7_SINGLE_MAX: usize = 160;
/// Septets per part of a concatenated GSM 7-bit message: 160 minus the 7 septets a 6-octet
/// concatenation UDH (IEI 00) occupies with its fill bit.
pub const GSM7_CONCAT_MAX: usize = 153;
/// UTF-16 units in a single UCS-2 message: 140 octets / 2.
pub const UCS2_SINGLE_MAX: usize = 70;
/// UTF-16 units per part of a concatenated UCS-2 message: (140 - 6 octets of UDH) / 2.
pub const UCS2_CONCAT_MAX: usize = 67;

/// Which alphabet a message is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// GSM 7-bit default alphabet with the extension table (DCS 0x00).
    Gsm7,
    /// UCS-2, carried as big-endian UTF-16 so surrogate pairs pass through (DCS 0x08).
    Ucs2,
}

impl Encoding {
    /// Stable lower-case name, used in API responses, logs and config values.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "gsm7",
            Encoding::Ucs2 => "ucs2",
        }
    }

    /// Units (septets or UTF-16 units) that fit a single unconcatenated message; lets the API
    /// report how much room is left.
    pub fn single_part_capacity(self) -> usize {
        match self {
            Encoding::Gsm7 => GSM7_SINGLE_MAX,
            Encoding::Ucs2 => UCS2_SINGLE_MAX,
        }
    }

    /// Units (septets or UTF-16 units) per part once a message needs concatenation.
    pub fn concat_part_capacity(self) -> usize {
        match self {
            Encoding::Gsm7 => GSM7_CONCAT_MAX,
            Encoding::Ucs2 => UCS2_CONCAT_MAX,
        }
    }
}

/// Everything that can go wrong in this codec; one enum so callers chain it with `#[from]`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Gsm7Error {
    /// GSM 7-bit was required (forced or checked) but the text holds a character outside the
    /// default alphabet and its extension table.
    #[error(
        "character {ch:?} at position {index} has no GSM 7-bit encoding; send the message as UCS-2 or replace the character"
    )]
    Unencodable {
        /// The offending character.
        ch: char,
        /// Its index in the input, counted in chars (not bytes).
        index: usize,
    },
    /// The message would need more parts than the caller allows.
    #[error("message needs {needed} parts but at most {max} are allowed; shorten the text")]
    TooManyParts {
        /// Parts the text needs.
        needed: usize,
        /// The caller's limit.
        max: usize,
    },
    /// Packed user data holds fewer bits than the septet count (from TP-UDL) requires.
    #[error("packed user data is shorter than its septet count says; the PDU is truncated")]
    Truncated,
    /// A fill-bit count outside 0..=6 was given; a UDH never needs more than 6.
    #[error("fill bits must be 0..=6, got {fill_bits}; compute them from the UDH length")]
    InvalidFillBits {
        /// The rejected value.
        fill_bits: u8,
    },
}

/// TS 23.038 §6.2.1 default alphabet, indexed by septet. Slot 0x1B is the escape, never a
/// character of its own; it holds U+001B only so the table is complete and is never encoded.
const DEFAULT_TABLE: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1B}', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// TS 23.038 §6.2.1.1 extension table: (septet after 0x1B, character). Each costs 2 septets.
const EXTENSION_TABLE: [(u8, char); 10] = [
    (0x0A, '\u{0C}'), // form feed (page break)
    (0x14, '^'),
    (0x28, '{'),
    (0x29, '}'),
    (0x2F, '\\'),
    (0x3C, '['),
    (0x3D, '~'),
    (0x3E, ']'),
    (0x40, '|'),
    (0x65, '€'),
];

/// Marks "no encoding" in [`LATIN1_REVERSE`].
const NO_SEPTET: u8 = 0xFF;
/// Marks an extension-table entry in [`LATIN1_REVERSE`] (the low 7 bits are the ext septet).
const EXT_FLAG: u8 = 0x80;

/// Encoder lookup for U+0000..=U+00FF, where almost all traffic is; built at compile time from
/// the two tables above so encoder and decoder cannot drift apart.
const LATIN1_REVERSE: [u8; 256] = build_latin1_reverse();

/// Runs at compile time only: an out-of-range index or cast here fails the build, it cannot
/// panic at run time.
const fn build_latin1_reverse() -> [u8; 256] {
    let mut table = [NO_SEPTET; 256];
    let mut septet = 0;
    while septet < DEFAULT_TABLE.len() {
        let code = DEFAULT_TABLE[septet] as u32;
        // The escape slot must never encode: U+001B in text is not a GSM character.
        if code < 256 && septet != ESCAPE as usize {
            table[code as usize] = septet as u8;
        }
        septet += 1;
    }
    let mut i = 0;
    while i < EXTENSION_TABLE.len() {
        let (ext, ch) = EXTENSION_TABLE[i];
        let code = ch as u32;
        if code < 256 {
            table[code as usize] = EXT_FLAG | ext;
        }
        i += 1;
    }
    table
}

/// Septets of one character: `Some((s, None))` for a default-table character, `Some((0x1B,
/// Some(ext)))` for an extension-table character (2 septets), `None` when GSM 7-bit cannot carry
/// it. The building block of every length and encoding decision.
pub fn char_septets(ch: char) -> Option<(u8, Option<u8>)> {
    let entry = match u8::try_from(u32::from(ch)) {
        Ok(latin1) => LATIN1_REVERSE
            .get(usize::from(latin1))
            .copied()
            .unwrap_or(NO_SEPTET),
        // Outside Latin-1 only the Greek capitals and the euro sign are in the alphabet.
        Err(_) => match ch {
            'Δ' => 0x10,
            'Φ' => 0x12,
            'Γ' => 0x13,
            'Λ' => 0x14,
            'Ω' => 0x15,
            'Π' => 0x16,
            'Ψ' => 0x17,
            'Σ' => 0x18,
            'Θ' => 0x19,
            'Ξ' => 0x1A,
            '€' => EXT_FLAG | 0x65,
            _ => NO_SEPTET,
        },
    };
    if entry == NO_SEPTET {
        None
    } else if entry & EXT_FLAG != 0 {
        Some((ESCAPE, Some(entry & 0x7F)))
    } else {
        Some((entry, None))
    }
}

/// Septets one character costs (1 or 2), or `None` if it is not encodable; used for length
/// checks without building septet vectors.
pub fn char_septet_len(ch: char) -> Option<usize> {
    char_septets(ch).map(|(_, ext)| if ext.is_some() { 2 } else { 1 })
}

/// True when every character of `text` has a GSM 7-bit encoding.
pub fn is_gsm7(text: &str) -> bool {
    text.chars().all(|ch| char_septets(ch).is_some())
}

/// The encoding a message is sent in: GSM 7-bit when every character encodes (cheaper: 160 vs
/// 70 characters per SMS), otherwise UCS-2. Empty text is GSM 7-bit.
pub fn choose_encoding(text: &str) -> Encoding {
    if is_gsm7(text) {
        Encoding::Gsm7
    } else {
        Encoding::Ucs2
    }
}

/// Total septets `text` needs in GSM 7-bit (escapes included), or the first unencodable
/// character; the cheap form of `to_septets(text)?.len()`.
pub fn septet_len(text: &str) -> Result<usize, Gsm7Error> {
    text.chars()
        .enumerate()
        .try_fold(0usize, |total, (index, ch)| {
            char_septet_len(ch)
                .map(|n| total.saturating_add(n))
                .ok_or(Gsm7Error::Unencodable { ch, index })
        })
}

/// Unpacked septets of `text` (one per byte, values 0..=0x7F), escape pairs included; the input
/// of [`pack_septets`] and of segmenting.
pub fn to_septets(text: &str) -> Result<Vec<u8>, Gsm7Error> {
    let mut out = Vec::with_capacity(text.len());
    for (index, ch) in text.chars().enumerate() {
        let (first, ext) = char_septets(ch).ok_or(Gsm7Error::Unencodable { ch, index })?;
        out.push(first);
        if let Some(ext) = ext {
            out.push(ext);
        }
    }
    Ok(out)
}

/// Default-table character of a septet (masked to 7 bits).
fn default_char(septet: u8) -> char {
    DEFAULT_TABLE
        .get(usize::from(septet & 0x7F))
        .copied()
        .unwrap_or(' ')
}

/// Extension-table character of the septet that follows an escape, if it is defined.
fn extension_char(septet: u8) -> Option<char> {
    EXTENSION_TABLE
        .iter()
        .find(|(code, _)| *code == septet)
        .map(|(_, ch)| *ch)
}

/// Text of unpacked septets; the inverse of [`to_septets`] (lossless for its output) and total on
/// anything a peer sends:
/// - values above 0x7F are masked to 7 bits (a septet has no 8th bit);
/// - 0x1B + an undefined extension code decodes as that code's default-table character
///   (TS 23.038 §6.2.1.1: "display the character in the default table");
/// - 0x1B 0x1B (reserved for a further extension table) decodes as a space, as §6.2.1.1 asks;
/// - a trailing lone 0x1B decodes as nothing: the escape has no character to modify, and
///   emitting a space would add a character the sender never typed.
pub fn from_septets(septets: &[u8]) -> String {
    let mut out = String::with_capacity(septets.len());
    let mut iter = septets.iter().map(|s| s & 0x7F);
    while let Some(septet) = iter.next() {
        if septet != ESCAPE {
            out.push(default_char(septet));
            continue;
        }
        match iter.next() {
            None => {}
            Some(ESCAPE) => out.push(' '),
            Some(ext) => out.push(extension_char(ext).unwrap_or_else(|| default_char(ext))),
        }
    }
    out
}

/// Low 8 bits of the bit accumulator; a named helper so the narrowing is explicit.
fn low_byte(acc: u32) -> u8 {
    let [low, ..] = acc.to_le_bytes();
    low
}

/// Packs septets LSB-first into octets (TS 23.038 §6.1.2.1.1), after `fill_bits` zero bits so
/// the text starts on a septet boundary behind a UDH (TS 23.040 §9.2.3.24). `fill_bits` above 6
/// is taken modulo 7 (7 fill bits would be a whole wasted septet); septets are masked to 7 bits.
/// Unused bits of the last octet are zero. No septets gives no octets, whatever the fill.
pub fn pack_septets(septets: &[u8], fill_bits: u8) -> Vec<u8> {
    if septets.is_empty() {
        return Vec::new();
    }
    let fill = u32::from(fill_bits % 7);
    let bits = septets.len().saturating_mul(7).saturating_add(7);
    let mut out = Vec::with_capacity(bits / 8 + 1);
    // Invariant: fewer than 8 pending bits before each septet, so the accumulator stays < 2^15.
    let mut acc: u32 = 0;
    let mut pending: u32 = fill;
    for &septet in septets {
        acc |= u32::from(septet & 0x7F) << pending;
        pending += 7;
        while pending >= 8 {
            out.push(low_byte(acc));
            acc >>= 8;
            pending -= 8;
        }
    }
    if pending > 0 {
        out.push(low_byte(acc));
    }
    out
}

/// Unpacks exactly `septet_count` septets (the count comes from TP-UDL) from LSB-first packed
/// octets, skipping `fill_bits` leading bits. Bits left over in the last octet are padding, never
/// a septet, so 7 septets in 7 octets do not grow an eighth '@'. Octets beyond those needed are
/// ignored; fewer than needed is [`Gsm7Error::Truncated`].
pub fn unpack_septets(
    packed: &[u8],
    septet_count: usize,
    fill_bits: u8,
) -> Result<Vec<u8>, Gsm7Error> {
    if fill_bits > 6 {
        return Err(Gsm7Error::InvalidFillBits { fill_bits });
    }
    if septet_count == 0 {
        return Ok(Vec::new());
    }
    // A count too large to even express in bits cannot be backed by the input either.
    let needed_bits = septet_count
        .checked_mul(7)
        .and_then(|bits| bits.checked_add(usize::from(fill_bits)))
        .ok_or(Gsm7Error::Truncated)?;
    let needed_octets = needed_bits.div_ceil(8);
    // Checked before allocating, so a peer's UDL cannot make us reserve memory.
    if packed.len() < needed_octets {
        return Err(Gsm7Error::Truncated);
    }
    let mut out = Vec::with_capacity(septet_count);
    let mut acc: u32 = 0;
    let mut pending: u32 = 0;
    let mut skip = u32::from(fill_bits);
    for &octet in packed.iter().take(needed_octets) {
        // Invariant: fewer than 7 pending bits before each octet, so acc stays < 2^15.
        acc |= u32::from(octet) << pending;
        pending += 8;
        if skip > 0 {
            acc >>= skip;
            pending -= skip;
            skip = 0;
        }
        while pending >= 7 && out.len() < septet_count {
            out.push(low_byte(acc) & 0x7F);
            acc >>= 7;
            pending -= 7;
        }
    }
    if out.len() == septet_count {
        Ok(out)
    } else {
        Err(Gsm7Error::Truncated)
    }
}

/// UTF-16 code units of `text`: what UCS-2 user data carries (non-BMP characters become
/// surrogate pairs, as every current handset expects).
pub fn to_ucs2(text: &str) -> Vec<u16> {
    text.encode_utf16().collect()
}

/// Text of UTF-16 units from a peer; a lone surrogate becomes U+FFFD instead of an error so one
/// bad unit (e.g. half an emoji from a badly split part) does not lose the message.
pub fn from_ucs2(units: &[u16]) -> String {
    String::from_utf16_lossy(units)
}

/// Text of big-endian UCS-2 user data as it sits in a PDU; an odd trailing byte (a truncated
/// unit) is ignored, lone surrogates become U+FFFD.
pub fn ucs2_from_be_bytes(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|pair| match pair {
            [hi, lo] => u16::from_be_bytes([*hi, *lo]),
            // chunks_exact never yields another length; mapping it keeps this total anyway.
            _ => 0xFFFD,
        })
        .collect();
    from_ucs2(&units)
}

/// Big-endian bytes of UTF-16 units, as UCS-2 user data is written into a PDU.
pub fn ucs2_to_be_bytes(units: &[u16]) -> Vec<u8> {
    units.iter().flat_map(|unit| unit.to_be_bytes()).collect()
}

/// A message cut into the parts it is sent as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segmented {
    /// Alphabet of every part (the DCS the PDUs carry).
    pub encoding: Encoding,
    /// Payload of each part in order; one part means no concatenation UDH is needed.
    pub parts: Vec<PartPayload>,
}

/// The user-data payload of one part, before packing, so the PDU encoder can add a UDH and
/// pick fill bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartPayload {
    /// Unpacked GSM 7-bit septets (escape pairs complete).
    Septets(Vec<u8>),
    /// UTF-16 units (surrogate pairs complete).
    Ucs2(Vec<u16>),
}

impl PartPayload {
    /// Text of this part alone; lets logs and the simulator show what each SMS carries.
    pub fn to_text(&self) -> String {
        match self {
            PartPayload::Septets(septets) => from_septets(septets),
            PartPayload::Ucs2(units) => from_ucs2(units),
        }
    }

    /// Length in the unit TP-UDL counts for this payload's alphabet (septets or UTF-16 units;
    /// UCS-2 TP-UDL is twice this, in octets).
    pub fn len_units(&self) -> usize {
        match self {
            PartPayload::Septets(septets) => septets.len(),
            PartPayload::Ucs2(units) => units.len(),
        }
    }
}

/// Greedy split shared by [`segment_as`] and [`count_parts_as`], so the count always equals the
/// number of parts built. Each character is placed whole (width 1 or 2) into the current part,
/// or starts a new one when it does not fit.
struct PartPlanner {
    limit: usize,
    used: usize,
    parts: usize,
}

impl PartPlanner {
    /// `total` decides between the single-message limit and the concatenated one.
    fn new(total: usize, encoding: Encoding) -> Self {
        let limit = if total <= encoding.single_part_capacity() {
            encoding.single_part_capacity()
        } else {
            encoding.concat_part_capacity()
        };
        PartPlanner {
            limit,
            used: 0,
            parts: 1,
        }
    }

    /// Places a character of `width` units; returns true when it opens a new part.
    fn place(&mut self, width: usize) -> bool {
        if self.used > 0 && self.used.saturating_add(width) > self.limit {
            self.parts += 1;
            self.used = width;
            true
        } else {
            self.used = self.used.saturating_add(width);
            false
        }
    }
}

/// Splits `text` into parts, choosing GSM 7-bit when every character encodes and UCS-2 otherwise.
/// GSM 7-bit: 160 septets single / 153 per part when concatenated; UCS-2: 70 units single / 67
/// per part. Never splits an escape pair (0x1B + ext) nor a surrogate pair across parts. Empty
/// text is one empty part (an SMS with UDL 0). Errors with TooManyParts when more than
/// `max_parts` would be needed.
pub fn segment(text: &str, max_parts: usize) -> Result<Segmented, Gsm7Error> {
    segment_as(text, choose_encoding(text), max_parts)
}

/// [`segment`] with the encoding forced, because a link may require one (an SMPP link that only
/// takes UCS-2, say). Forcing GSM 7-bit on text it cannot carry is
/// [`Gsm7Error::Unencodable`]; nothing is transliterated.
pub fn segment_as(
    text: &str,
    encoding: Encoding,
    max_parts: usize,
) -> Result<Segmented, Gsm7Error> {
    // Count first so an over-long text is refused before any part is built.
    let needed = count_parts_as(text, encoding)?;
    if needed > max_parts {
        return Err(Gsm7Error::TooManyParts {
            needed,
            max: max_parts,
        });
    }
    let parts = match encoding {
        Encoding::Gsm7 => {
            let mut planner = PartPlanner::new(septet_len(text)?, encoding);
            let mut parts: Vec<Vec<u8>> = vec![Vec::new()];
            for (index, ch) in text.chars().enumerate() {
                let (first, ext) = char_septets(ch).ok_or(Gsm7Error::Unencodable { ch, index })?;
                let width = if ext.is_some() { 2 } else { 1 };
                if planner.place(width) {
                    parts.push(Vec::with_capacity(GSM7_CONCAT_MAX));
                }
                if let Some(part) = parts.last_mut() {
                    part.push(first);
                    part.extend(ext);
                }
            }
            parts.into_iter().map(PartPayload::Septets).collect()
        }
        Encoding::Ucs2 => {
            let mut planner = PartPlanner::new(text.encode_utf16().count(), encoding);
            let mut parts: Vec<Vec<u16>> = vec![Vec::new()];
            let mut buf = [0u16; 2];
            for ch in text.chars() {
                let units = ch.encode_utf16(&mut buf);
                if planner.place(units.len()) {
                    parts.push(Vec::with_capacity(UCS2_CONCAT_MAX));
                }
                if let Some(part) = parts.last_mut() {
                    part.extend_from_slice(units);
                }
            }
            parts.into_iter().map(PartPayload::Ucs2).collect()
        }
    };
    Ok(Segmented { encoding, parts })
}

/// Number of parts `text` needs in `encoding`, without building them; equals
/// `segment_as(text, encoding, usize::MAX)?.parts.len()`.
pub fn count_parts_as(text: &str, encoding: Encoding) -> Result<usize, Gsm7Error> {
    match encoding {
        Encoding::Gsm7 => {
            let mut planner = PartPlanner::new(septet_len(text)?, encoding);
            for (index, ch) in text.chars().enumerate() {
                let width = char_septet_len(ch).ok_or(Gsm7Error::Unencodable { ch, index })?;
                planner.place(width);
            }
            Ok(planner.parts)
        }
        Encoding::Ucs2 => {
            let mut planner = PartPlanner::new(text.encode_utf16().count(), encoding);
            for ch in text.chars() {
                planner.place(ch.len_utf16());
            }
            Ok(planner.parts)
        }
    }
}

/// Encoding and part count of `text` (cheap, for validation and API responses); always equals
/// what [`segment`] produces.
pub fn count_parts(text: &str) -> (Encoding, usize) {
    match count_parts_as(text, Encoding::Gsm7) {
        Ok(parts) => (Encoding::Gsm7, parts),
        // UCS-2 carries any text, so this arm cannot fail; 1 keeps it total regardless.
        Err(_) => (
            Encoding::Ucs2,
            count_parts_as(text, Encoding::Ucs2).unwrap_or(1),
        ),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::Value;

    /// The shared PDU corpus (copy of shared/corpus/sms/sms-pdu-vectors.json); see its README.
    pub(crate) const CORPUS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/corpus/sms/sms-pdu-vectors.json"
    ));

    /// Vectors whose TP-UDL overstates the octets present. The corpus README says tolerant
    /// decoders output the text the available octets hold; these are checked that way.
    pub(crate) const OVERRUN: [&str; 2] = ["gammu-at-sms-41", "pgm-submit-ucs2-concat-bad-udl"];

    // ---------------------------------------------------------------- small helpers

    fn repeat(ch: char, n: usize) -> String {
        std::iter::repeat_n(ch, n).collect()
    }

    fn hex(s: &str) -> Vec<u8> {
        assert!(s.len().is_multiple_of(2), "odd hex length");
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
            .collect()
    }

    // ---------------------------------------------------------------- alphabet tables

    #[test]
    fn every_default_table_char_round_trips() {
        for (septet, &ch) in DEFAULT_TABLE.iter().enumerate() {
            let septet = u8::try_from(septet).unwrap();
            if septet == ESCAPE {
                assert_eq!(char_septets(ch), None, "U+001B must not encode");
                continue;
            }
            assert_eq!(char_septets(ch), Some((septet, None)), "{ch:?}");
            assert_eq!(char_septet_len(ch), Some(1));
            assert_eq!(from_septets(&[septet]), ch.to_string());
            assert_eq!(to_septets(&ch.to_string()), Ok(vec![septet]));
        }
    }

    #[test]
    fn every_extension_char_round_trips_as_two_septets() {
        for &(code, ch) in &EXTENSION_TABLE {
            assert_eq!(char_septets(ch), Some((ESCAPE, Some(code))), "{ch:?}");
            assert_eq!(char_septet_len(ch), Some(2));
            assert_eq!(from_septets(&[ESCAPE, code]), ch.to_string());
            assert_eq!(to_septets(&ch.to_string()), Ok(vec![ESCAPE, code]));
        }
    }

    #[test]
    fn encoder_agrees_with_decoder_over_all_of_unicode() {
        // Every char the encoder accepts must decode back to itself, and exactly the
        // 127 default + 10 extension characters are accepted.
        let mut encodable = 0;
        for code in 0..=0x10_FFFFu32 {
            let Some(ch) = char::from_u32(code) else {
                continue;
            };
            if let Some((first, ext)) = char_septets(ch) {
                encodable += 1;
                let seq: Vec<u8> = std::iter::once(first).chain(ext).collect();
                assert_eq!(from_septets(&seq), ch.to_string(), "U+{code:04X}");
            }
        }
        assert_eq!(encodable, 127 + 10);
    }

    #[test]
    fn specific_memberships() {
        let named = [
            ('@', Some((0x00, None))),
            ('$', Some((0x02, None))),
            ('_', Some((0x11, None))),
            ('¤', Some((0x24, None))),
            ('¡', Some((0x40, None))),
            ('§', Some((0x5F, None))),
            ('¿', Some((0x60, None))),
            ('\n', Some((0x0A, None))),
            ('\r', Some((0x0D, None))),
            ('Ç', Some((0x09, None))),
            ('ò', Some((0x08, None))),
            ('É', Some((0x1F, None))),
            ('à', Some((0x7F, None))),
            ('\u{0C}', Some((ESCAPE, Some(0x0A)))),
            ('€', Some((ESCAPE, Some(0x65)))),
            ('|', Some((ESCAPE, Some(0x40)))),
        ];
        for (ch, want) in named {
            assert_eq!(char_septets(ch), want, "{ch:?}");
        }
        // Not in the alphabet: no transliteration, these force UCS-2.
        // U+0391 is GREEK CAPITAL ALPHA (looks like 'A'), U+2126 OHM SIGN (looks like 'Ω').
        for ch in [
            'È', 'á', 'í', 'ó', 'ú', 'ç', '`', '\u{1B}', '\t', '\u{0391}', '\u{2126}', '’', '👋',
        ] {
            assert_eq!(char_septets(ch), None, "{ch:?}");
            assert_eq!(choose_encoding(&format!("abc{ch}")), Encoding::Ucs2);
        }
        assert_eq!(char_septets('\u{03A9}'), Some((0x15, None)));
        assert!(is_gsm7(""));
        assert_eq!(choose_encoding(""), Encoding::Gsm7);
        assert_eq!(Encoding::Gsm7.as_str(), "gsm7");
        assert_eq!(Encoding::Ucs2.as_str(), "ucs2");
    }

    #[test]
    fn septet_counts_of_known_strings() {
        let table: [(&str, usize); 9] = [
            ("", 0),
            ("€", 2),
            ("abc", 3),
            ("{}", 4),
            ("\r\n", 2),
            ("\u{0C}", 2),
            ("Price: 5€ [x]", 16),
            ("ΔΦΓΛΩΠΨΣΘΞ", 10),
            ("^{}\\[~]|€\u{0C}", 20),
        ];
        for (text, want) in table {
            assert_eq!(septet_len(text), Ok(want), "{text:?}");
            assert_eq!(to_septets(text).map(|s| s.len()), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn unencodable_reports_char_index_not_byte_index() {
        assert_eq!(
            to_septets("€€È"),
            Err(Gsm7Error::Unencodable { ch: 'È', index: 2 })
        );
        assert_eq!(
            septet_len("aé🙂"),
            Err(Gsm7Error::Unencodable {
                ch: '🙂', index: 2
            })
        );
    }

    #[test]
    fn from_septets_edge_rules() {
        // Undefined extension code: the default-table character is shown.
        assert_eq!(from_septets(&[ESCAPE, 0x41]), "A");
        assert_eq!(from_septets(&[ESCAPE, 0x0D]), "\r");
        // Reserved double escape: a space.
        assert_eq!(from_septets(&[ESCAPE, ESCAPE]), " ");
        // Trailing lone escape: nothing.
        assert_eq!(from_septets(&[ESCAPE]), "");
        assert_eq!(from_septets(&[0x41, ESCAPE]), "A");
        // Eighth bit is masked.
        assert_eq!(from_septets(&[0xC1, 0x80, 0x9B, 0xE5]), "A@€");
        assert_eq!(from_septets(&[]), "");
    }

    // ---------------------------------------------------------------- packing

    #[test]
    fn pack_known_vectors() {
        // Classic "hellohello" (TS 23.038 examples, oFono) and a 7-char string whose 7 octets
        // leave 7 zero bits: unpacking by octet count would invent an eighth '@'.
        let hello = to_septets("hellohello").unwrap();
        assert_eq!(pack_septets(&hello, 0), hex("E8329BFD4697D9EC37"));
        let seven = to_septets("1234567").unwrap();
        let packed = pack_septets(&seven, 0);
        assert_eq!(packed, hex("31D98C56B3DD00"));
        assert_eq!(packed[6] >> 1, 0, "top 7 bits of the last octet are zero");
        let back = unpack_septets(&packed, 7, 0).unwrap();
        assert_eq!(from_septets(&back), "1234567");
        // The hazard the UDL count avoids:
        assert_eq!(
            from_septets(&unpack_septets(&packed, 8, 0).unwrap()),
            "1234567@"
        );
        // 8 septets fill 7 octets exactly.
        let eight = to_septets("12345678").unwrap();
        assert_eq!(pack_septets(&eight, 0).len(), 7);
    }

    #[test]
    fn pack_with_fill_bits_round_trips() {
        let septets = to_septets("Hello {world} €").unwrap();
        for fill in 0..=6u8 {
            let packed = pack_septets(&septets, fill);
            let bits = usize::from(fill) + septets.len() * 7;
            assert_eq!(packed.len(), bits.div_ceil(8));
            // Fill bits are zero.
            assert_eq!(packed[0] & ((1u8 << fill) - 1), 0);
            assert_eq!(
                unpack_septets(&packed, septets.len(), fill),
                Ok(septets.clone())
            );
        }
        // 1 fill bit after a 6-octet UDH: first septet 'H' (0x48) starts at bit 1.
        assert_eq!(pack_septets(&[0x48], 1), vec![0x90]);
        assert_eq!(pack_septets(&[], 3), Vec::<u8>::new());
        // Out-of-range fill is reduced modulo 7 when packing, refused when unpacking.
        assert_eq!(pack_septets(&[0x48], 8), pack_septets(&[0x48], 1));
        assert_eq!(
            unpack_septets(&[0x90], 1, 7),
            Err(Gsm7Error::InvalidFillBits { fill_bits: 7 })
        );
    }

    #[test]
    fn unpack_refuses_short_input() {
        assert_eq!(unpack_septets(&[], 1, 0), Err(Gsm7Error::Truncated));
        assert_eq!(unpack_septets(&[0xFF], 2, 0), Err(Gsm7Error::Truncated));
        // 1 octet holds one septet only when at most 1 fill bit precedes it.
        assert!(unpack_septets(&[0xFF], 1, 1).is_ok());
        assert_eq!(unpack_septets(&[0xFF], 1, 2), Err(Gsm7Error::Truncated));
        assert_eq!(
            unpack_septets(&[0xFF], usize::MAX, 0),
            Err(Gsm7Error::Truncated)
        );
        assert_eq!(unpack_septets(&[], 0, 6), Ok(vec![]));
        // Extra octets are ignored.
        assert_eq!(unpack_septets(&[0x41, 0xFF, 0xFF], 1, 0), Ok(vec![0x41]));
    }

    // ---------------------------------------------------------------- UCS-2

    #[test]
    fn ucs2_surrogates_and_bytes() {
        let text = "Привет 👋!";
        let units = to_ucs2(text);
        assert_eq!(units.len(), text.chars().count() + 1, "emoji is 2 units");
        assert_eq!(from_ucs2(&units), text);
        let bytes = ucs2_to_be_bytes(&units);
        assert_eq!(ucs2_from_be_bytes(&bytes), text);
        assert_eq!(ucs2_to_be_bytes(&to_ucs2("👋")), hex("D83DDC4B"));
        // Lone surrogates and odd trailing bytes.
        assert_eq!(from_ucs2(&[0xD83D, 0x0041]), "\u{FFFD}A");
        assert_eq!(from_ucs2(&[0xDC4B]), "\u{FFFD}");
        assert_eq!(ucs2_from_be_bytes(&hex("00410042FF")), "AB");
        assert_eq!(ucs2_from_be_bytes(&[]), "");
    }

    // ---------------------------------------------------------------- segmenting

    #[test]
    fn part_counts_of_known_lengths() {
        let b = 'б'; // Cyrillic: forces UCS-2 at 1 unit per char.
        let cases: Vec<(String, Encoding, usize)> = vec![
            (String::new(), Encoding::Gsm7, 1),
            (repeat('a', 160), Encoding::Gsm7, 1),
            (repeat('a', 161), Encoding::Gsm7, 2),
            (repeat('a', 153 * 2), Encoding::Gsm7, 2),
            (repeat('a', 153 * 2 + 1), Encoding::Gsm7, 3),
            (repeat('€', 80), Encoding::Gsm7, 1),
            (repeat('€', 81), Encoding::Gsm7, 2),
            (repeat(b, 70), Encoding::Ucs2, 1),
            (repeat(b, 71), Encoding::Ucs2, 2),
            (repeat(b, 67 * 2), Encoding::Ucs2, 2),
            (repeat(b, 67 * 2 + 1), Encoding::Ucs2, 3),
            (repeat('👋', 35), Encoding::Ucs2, 1),
            (repeat('👋', 36), Encoding::Ucs2, 2),
            // One È turns 100 plain chars into UCS-2: 101 units, 2 parts.
            (format!("{}È", repeat('a', 100)), Encoding::Ucs2, 2),
        ];
        for (text, encoding, parts) in cases {
            let label = format!(
                "{} chars of {:?}",
                text.chars().count(),
                text.chars().next()
            );
            assert_eq!(count_parts(&text), (encoding, parts), "{label}");
            let seg = segment(&text, 10).unwrap();
            assert_eq!(seg.encoding, encoding, "{label}");
            assert_eq!(seg.parts.len(), parts, "{label}");
            let joined: String = seg.parts.iter().map(PartPayload::to_text).collect();
            assert_eq!(joined, text, "{label}");
        }
    }

    #[test]
    fn escape_pair_is_never_split() {
        // '€' would occupy septets 153-154 of part 1: it moves whole to part 2.
        let text = format!("{}€{}", repeat('a', 152), repeat('a', 10));
        let seg = segment(&text, 5).unwrap();
        assert_eq!(seg.encoding, Encoding::Gsm7);
        let [PartPayload::Septets(p1), PartPayload::Septets(p2)] = seg.parts.as_slice() else {
            panic!("expected two GSM parts, got {seg:?}");
        };
        assert_eq!(p1.len(), 152);
        assert_ne!(p1.last(), Some(&ESCAPE));
        assert_eq!(p2[..2], [ESCAPE, 0x65]);
        assert_eq!(p2.len(), 12);
        // '€' exactly filling septets 152-153 stays in part 1.
        let text = format!("{}€{}", repeat('a', 151), repeat('a', 10));
        let seg = segment(&text, 5).unwrap();
        assert_eq!(seg.parts[0].len_units(), 153);
        assert_eq!(seg.parts[1].len_units(), 10);
    }

    #[test]
    fn surrogate_pair_is_never_split() {
        // The emoji would occupy units 67-68 of part 1: it moves whole to part 2.
        let text = format!("{}👋{}", repeat('б', 66), repeat('б', 5));
        let seg = segment(&text, 5).unwrap();
        assert_eq!(seg.encoding, Encoding::Ucs2);
        let [PartPayload::Ucs2(p1), PartPayload::Ucs2(p2)] = seg.parts.as_slice() else {
            panic!("expected two UCS-2 parts, got {seg:?}");
        };
        assert_eq!(p1.len(), 66);
        assert_eq!(p2[..2], [0xD83D, 0xDC4B]);
        assert_eq!(seg.parts[1].to_text(), format!("👋{}", repeat('б', 5)));
        assert_eq!(count_parts(&text), (Encoding::Ucs2, 2));
    }

    #[test]
    fn part_limits_and_forced_encodings() {
        assert_eq!(
            segment(&repeat('a', 161), 1),
            Err(Gsm7Error::TooManyParts { needed: 2, max: 1 })
        );
        assert_eq!(
            segment("", 0),
            Err(Gsm7Error::TooManyParts { needed: 1, max: 0 })
        );
        assert_eq!(
            segment_as("ok È", Encoding::Gsm7, 3),
            Err(Gsm7Error::Unencodable { ch: 'È', index: 3 })
        );
        // A link that forces UCS-2 gets plain text as UTF-16, at UCS-2 limits.
        let seg = segment_as(&repeat('a', 100), Encoding::Ucs2, 3).unwrap();
        assert_eq!(seg.encoding, Encoding::Ucs2);
        assert_eq!(seg.parts.len(), 2);
        assert_eq!(count_parts_as(&repeat('a', 100), Encoding::Ucs2), Ok(2));
        assert_eq!(
            count_parts_as("È", Encoding::Gsm7),
            Err(Gsm7Error::Unencodable { ch: 'È', index: 0 })
        );
        let empty = segment("", 1).unwrap();
        assert_eq!(empty.parts, vec![PartPayload::Septets(vec![])]);
    }

    #[test]
    fn random_texts_segment_consistently() {
        let pool = [
            'a', 'Z', ' ', '@', '€', '{', '\\', 'É', '\n', 'È', 'б', '👋', '中', '🇮',
        ];
        let mut rng = fastrand::Rng::with_seed(0x9E37_79B9_7F4A_7C15);
        for round in 0..3000 {
            // Mostly-GSM texts most of the time, so both alphabets get long messages.
            let gsm_only = round % 2 == 0;
            let choices = if gsm_only { 7 } else { pool.len() };
            let len = rng.usize(..420);
            let text: String = (0..len).map(|_| pool[rng.usize(..choices)]).collect();
            let max = 1 + rng.usize(..6);
            let (encoding, count) = count_parts(&text);
            assert_eq!(encoding, choose_encoding(&text));
            match segment(&text, max) {
                Ok(seg) => {
                    assert_eq!(seg.encoding, encoding);
                    assert_eq!(seg.parts.len(), count);
                    assert!(count <= max);
                    let joined: String = seg.parts.iter().map(PartPayload::to_text).collect();
                    assert_eq!(joined, text);
                    let cap = if count == 1 {
                        encoding.single_part_capacity()
                    } else {
                        encoding.concat_part_capacity()
                    };
                    for part in &seg.parts {
                        assert!(part.len_units() <= cap);
                        match part {
                            PartPayload::Septets(s) => {
                                assert_ne!(s.last(), Some(&ESCAPE));
                                let fill = u8::try_from(rng.usize(..7)).unwrap();
                                let packed = pack_septets(s, fill);
                                assert_eq!(unpack_septets(&packed, s.len(), fill).as_ref(), Ok(s));
                            }
                            PartPayload::Ucs2(u) => {
                                let last = u.last().copied().unwrap_or(0);
                                assert!(!(0xD800..0xDC00).contains(&last), "split surrogate");
                                let first = u.first().copied().unwrap_or(0);
                                assert!(!(0xDC00..0xE000).contains(&first), "split surrogate");
                            }
                        }
                    }
                }
                Err(Gsm7Error::TooManyParts { needed, max: m }) => {
                    assert_eq!((needed, m), (count, max));
                    assert!(count > max);
                }
                Err(other) => panic!("unexpected {other:?}"),
            }
            // Forcing UCS-2 always works and counts agree.
            let forced = segment_as(&text, Encoding::Ucs2, usize::MAX).unwrap();
            assert_eq!(
                Ok(forced.parts.len()),
                count_parts_as(&text, Encoding::Ucs2)
            );
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0xD1B5_4A32_D192_ED03);
        for _ in 0..20_000 {
            let len = rng.usize(..48);
            let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let count = rng.usize(..64);
            let fill = u8::try_from(rng.usize(..9)).unwrap();
            match unpack_septets(&bytes, count, fill) {
                Ok(septets) => {
                    assert_eq!(septets.len(), count);
                    assert!(septets.iter().all(|s| *s < 0x80));
                    let text = from_septets(&septets);
                    assert!(text.chars().count() <= count);
                }
                Err(Gsm7Error::Truncated) => {
                    assert!(bytes.len() * 8 < count * 7 + usize::from(fill));
                }
                Err(Gsm7Error::InvalidFillBits { fill_bits }) => assert!(fill_bits > 6),
                Err(other) => panic!("unexpected {other:?}"),
            }
            let _ = from_septets(&bytes);
            let text = ucs2_from_be_bytes(&bytes);
            assert!(text.chars().count() <= bytes.len() / 2);
            // Packing arbitrary bytes keeps only 7 bits of each.
            let masked: Vec<u8> = bytes.iter().map(|b| b & 0x7F).collect();
            let packed = pack_septets(&bytes, fill);
            assert_eq!(unpack_septets(&packed, bytes.len(), fill % 7), Ok(masked));
        }
    }

    // ---------------------------------------------------------------- corpus

    /// Alphabet a DCS selects (TS 23.038 §4), as far as the corpus checks need it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Alphabet {
        Gsm7,
        Eight,
        Ucs2,
        Other,
    }

    /// GSM 7-bit here: 00xx xxxx / 01xx xxxx uncompressed with bits 3..2 = 00 (0x00-0x03,
    /// 0x10-0x13, 0x40-0x43, 0x50-0x53), MWI groups 0xC0-0xDF, and group 1111 with bit 2 = 0
    /// (0xF0-0xF3, plus 0xF8-0xFB whose reserved bit 3 is ignored as gammu, tshark and
    /// python-gsmmodem do; corpus vector gammu-at-sms-42 is DCS 0xFB). UCS-2: bits 3..2 = 10 in
    /// the general groups (0x08-0x0B, 0x18-0x1B, 0x48-0x4B, 0x58-0x5B) and 0xE0-0xEF.
    fn dcs_alphabet(dcs: u8) -> Alphabet {
        match dcs >> 4 {
            0x0..=0x7 if dcs & 0x20 != 0 => Alphabet::Other, // compressed
            0x0..=0x7 => match (dcs >> 2) & 0x03 {
                0 => Alphabet::Gsm7,
                1 => Alphabet::Eight,
                2 => Alphabet::Ucs2,
                _ => Alphabet::Other,
            },
            0xC | 0xD => Alphabet::Gsm7,
            0xE => Alphabet::Ucs2,
            0xF if dcs & 0x04 == 0 => Alphabet::Gsm7,
            0xF => Alphabet::Eight,
            _ => Alphabet::Other,
        }
    }

    /// Where the user data starts, found by walking the TPDU header (TS 23.040 §9.2.2), so the
    /// "UD is the last octets" rule can be cross-checked and overrunning UDLs detected.
    struct UdPos {
        start: usize,
        udhi: bool,
        dcs: u8,
        udl: usize,
    }

    fn locate_ud(pdu: &[u8]) -> Option<UdPos> {
        let mut i = 1 + usize::from(*pdu.first()?); // SCA length octet + SCA
        let first = *pdu.get(i)?;
        i += 1;
        // Address: digit count, TOA, then ceil(digits/2) octets.
        let skip_address =
            |at: usize| -> Option<usize> { Some(at + 2 + usize::from(*pdu.get(at)?).div_ceil(2)) };
        let tail_after_dcs = match first & 0x03 {
            0 => {
                i = skip_address(i)?; // OA
                7 // SCTS
            }
            1 => {
                i = skip_address(i + 1)?; // MR, DA
                match (first >> 3) & 0x03 {
                    0 => 0,
                    2 => 1,
                    _ => 7,
                }
            }
            _ => return None,
        };
        i += 1; // PID
        let dcs = *pdu.get(i)?;
        i += 1 + tail_after_dcs;
        let udl = usize::from(*pdu.get(i)?);
        Some(UdPos {
            start: i + 1,
            udhi: first & 0x40 != 0,
            dcs,
            udl,
        })
    }

    /// A corpus vector that carries text.
    struct TextVector {
        id: String,
        pdu: Vec<u8>,
        dcs: u8,
        udl: usize,
        text: String,
        udh: Option<Vec<Value>>,
    }

    fn all_vectors() -> Vec<Value> {
        let doc: Value = serde_json::from_str(CORPUS).expect("corpus is JSON");
        doc["vectors"].as_array().expect("vectors array").clone()
    }

    /// Vectors without `must_fail` that have `expected.text`.
    fn text_vectors() -> Vec<TextVector> {
        all_vectors()
            .iter()
            .filter(|v| v["expected"]["must_fail"].as_bool() != Some(true))
            .filter(|v| v["must_fail"].as_bool() != Some(true))
            .filter_map(|v| {
                let e = &v["expected"];
                let text = e["text"].as_str()?.to_string();
                Some(TextVector {
                    id: v["id"].as_str().expect("id").to_string(),
                    pdu: hex(v["pdu_hex"].as_str().expect("pdu_hex")),
                    dcs: u8::from_str_radix(e["dcs"].as_str().expect("dcs"), 16).expect("dcs hex"),
                    udl: usize::try_from(e["udl"].as_u64().expect("udl")).unwrap(),
                    text,
                    udh: e["udh"].as_array().cloned(),
                })
            })
            .collect()
    }

    /// How a vector's user data was located and compared.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Outcome {
        /// Re-encoding reproduced the UD octets byte for byte.
        Exact,
        /// Septets matched, but the vector's padding/fill bits are not zero (allowed by
        /// TS 23.040: receivers ignore them), so bytes were compared with those bits masked.
        PaddingMasked,
        /// TP-UDL overruns the PDU: the available octets were decoded (see OVERRUN).
        Overrun,
    }

    /// The UD octets: the last ones of the PDU as the UDL says, cross-checked against the
    /// header walk; for known overrun vectors, whatever follows the UDL octet.
    fn user_data(v: &TextVector, ud_octets: usize) -> (&[u8], bool) {
        let pos = locate_ud(&v.pdu).unwrap_or_else(|| panic!("{}: TPDU header walk", v.id));
        assert_eq!(pos.udl, v.udl, "{}: UDL", v.id);
        assert_eq!(pos.dcs, v.dcs, "{}: DCS", v.id);
        assert_eq!(pos.udhi, v.udh.is_some(), "{}: UDHI vs expected.udh", v.id);
        let available = v.pdu.len().saturating_sub(pos.start);
        if available < ud_octets {
            assert!(OVERRUN.contains(&v.id.as_str()), "{}: UDL overruns", v.id);
            (&v.pdu[pos.start..], true)
        } else {
            assert_eq!(available, ud_octets, "{}: UD is not at the end", v.id);
            (&v.pdu[v.pdu.len() - ud_octets..], false)
        }
    }

    /// Splits off the UDH (checking its IEs against expected.udh); returns (UDH octets, body).
    fn strip_udh<'a>(v: &TextVector, ud: &'a [u8]) -> (usize, &'a [u8]) {
        let Some(expected) = &v.udh else {
            return (0, ud);
        };
        let udhl = usize::from(ud[0]);
        let mut ies = &ud[1..=udhl];
        let mut seen = Vec::new();
        while let [iei, len, rest @ ..] = ies {
            let (data, next) = rest.split_at(usize::from(*len));
            seen.push((
                format!("{iei:02X}"),
                data.iter().map(|b| format!("{b:02X}")).collect::<String>(),
            ));
            ies = next;
        }
        let want: Vec<(String, String)> = expected
            .iter()
            .map(|ie| {
                (
                    ie["iei"].as_str().unwrap().to_uppercase(),
                    ie["data"].as_str().unwrap().to_uppercase(),
                )
            })
            .collect();
        assert_eq!(seen, want, "{}: UDH IEs", v.id);
        (udhl + 1, &ud[udhl + 1..])
    }

    fn check_gsm7_vector(v: &TextVector) -> Outcome {
        let (ud, overrun) = user_data(v, (v.udl * 7).div_ceil(8));
        let (udh_octets, body) = strip_udh(v, ud);
        let fill = u8::try_from((7 - (udh_octets * 8) % 7) % 7).unwrap();
        let text_septets = v.udl - (udh_octets * 8).div_ceil(7);
        if overrun {
            assert_eq!(
                unpack_septets(body, text_septets, fill),
                Err(Gsm7Error::Truncated),
                "{}",
                v.id
            );
            let available = (body.len() * 8 - usize::from(fill)) / 7;
            let septets = unpack_septets(body, available, fill).unwrap();
            assert_eq!(from_septets(&septets), v.text, "{}: decoded text", v.id);
            return Outcome::Overrun;
        }
        let septets = unpack_septets(body, text_septets, fill).expect(&v.id);
        assert_eq!(from_septets(&septets), v.text, "{}: decoded text", v.id);
        let encoded = to_septets(&v.text).expect(&v.id);
        assert_eq!(encoded.len(), text_septets, "{}: septet count", v.id);
        assert_eq!(encoded, septets, "{}: re-encoded septets", v.id);
        let packed = pack_septets(&encoded, fill);
        // Ones exactly where septet bits sit: masks out fill and trailing padding bits.
        let mask = pack_septets(&vec![0x7F; text_septets], fill);
        assert_eq!(packed.len(), body.len(), "{}: packed length", v.id);
        let masked: Vec<u8> = body.iter().zip(&mask).map(|(b, m)| b & m).collect();
        assert_eq!(packed, masked, "{}: packed octets", v.id);
        if masked == body {
            Outcome::Exact
        } else {
            Outcome::PaddingMasked
        }
    }

    fn check_ucs2_vector(v: &TextVector) -> Outcome {
        let (ud, overrun) = user_data(v, v.udl);
        let (_, body) = strip_udh(v, ud);
        assert_eq!(ucs2_from_be_bytes(body), v.text, "{}: decoded text", v.id);
        assert_eq!(ucs2_to_be_bytes(&to_ucs2(&v.text)), body, "{}: bytes", v.id);
        if overrun {
            Outcome::Overrun
        } else {
            Outcome::Exact
        }
    }

    fn check_vector(v: &TextVector) -> Outcome {
        match dcs_alphabet(v.dcs) {
            Alphabet::Gsm7 => check_gsm7_vector(v),
            Alphabet::Ucs2 => check_ucs2_vector(v),
            other => panic!("{}: text vector with {other:?} DCS {:02X}", v.id, v.dcs),
        }
    }

    #[test]
    fn corpus_gsm7_vectors_decode_and_reencode() {
        let mut outcomes: Vec<(String, Outcome)> = Vec::new();
        for v in text_vectors() {
            if dcs_alphabet(v.dcs) == Alphabet::Gsm7 {
                outcomes.push((v.id.clone(), check_gsm7_vector(&v)));
            }
        }
        let of = |o: Outcome| -> Vec<&str> {
            outcomes
                .iter()
                .filter(|(_, x)| *x == o)
                .map(|(id, _)| id.as_str())
                .collect()
        };
        eprintln!(
            "GSM 7-bit corpus vectors checked: {} (byte-exact {}, padding masked {:?}, overrun {:?})",
            outcomes.len(),
            of(Outcome::Exact).len(),
            of(Outcome::PaddingMasked),
            of(Outcome::Overrun)
        );
        assert!(
            outcomes.len() >= 42,
            "only {} GSM 7-bit vectors",
            outcomes.len()
        );
        assert!(of(Outcome::Exact).len() >= 39);
    }

    #[test]
    fn corpus_ucs2_vectors_decode_and_reencode() {
        let mut checked = 0;
        for v in text_vectors() {
            if dcs_alphabet(v.dcs) == Alphabet::Ucs2 {
                check_ucs2_vector(&v);
                checked += 1;
            }
        }
        eprintln!("UCS-2 corpus vectors checked: {checked}");
        assert!(checked >= 18, "only {checked} UCS-2 vectors");
    }

    #[test]
    fn corpus_every_text_vector_is_gsm7_or_ucs2() {
        // Guards the two tests above against silently skipping a vector.
        let vectors = text_vectors();
        assert!(vectors.len() >= 60);
        for v in &vectors {
            let alphabet = dcs_alphabet(v.dcs);
            assert!(
                matches!(alphabet, Alphabet::Gsm7 | Alphabet::Ucs2),
                "{}: DCS {:02X} is {alphabet:?}",
                v.id,
                v.dcs
            );
        }
    }

    #[test]
    fn corpus_reserved_dcs_vector_decodes_both_ways() {
        // gammu-at-sms-14: DCS 0xF9 (reserved bit 3) with UCS-2 octets; the corpus lists both
        // readings and asks only that neither crashes. Both readings must match.
        let v = all_vectors()
            .into_iter()
            .find(|v| v["id"] == "gammu-at-sms-14")
            .expect("gammu-at-sms-14");
        let pdu = hex(v["pdu_hex"].as_str().unwrap());
        let pos = locate_ud(&pdu).unwrap();
        assert_eq!((pos.dcs, pos.udl), (0xF9, 18));
        assert_eq!(dcs_alphabet(pos.dcs), Alphabet::Gsm7);
        let ud = &pdu[pos.start..];
        let candidates = &v["expected"]["text_candidates"];
        let literal = from_septets(&unpack_septets(ud, pos.udl, 0).unwrap());
        assert_eq!(literal, candidates["spec_literal_gsm7"].as_str().unwrap());
        assert_eq!(
            ucs2_from_be_bytes(ud),
            candidates["ucs2_interpretation"].as_str().unwrap()
        );
    }

    #[test]
    fn corpus_all_pdus_never_panic() {
        // Every PDU, malformed ones included, through every decoder at every fill.
        for v in all_vectors() {
            let pdu = hex(v["pdu_hex"].as_str().unwrap());
            let udl = v["expected"]["udl"].as_u64().unwrap_or(0);
            let udl = usize::try_from(udl).unwrap();
            for start in 0..=pdu.len() {
                let tail = &pdu[start..];
                for fill in 0..=7 {
                    let _ = unpack_septets(tail, udl, fill);
                }
                let _ = from_septets(tail);
                let _ = ucs2_from_be_bytes(tail);
            }
        }
    }

    /// A named vector and the checks specific to it.
    type NamedCheck<'a> = (&'a str, &'a dyn Fn(&TextVector));

    #[test]
    fn corpus_named_vectors() {
        let vectors = text_vectors();
        let get = |id: &str| vectors.iter().find(|v| v.id == id);
        let ext_chars: Vec<char> = EXTENSION_TABLE.iter().map(|(_, ch)| *ch).collect();
        let mut checked = Vec::new();
        let mut missing = Vec::new();
        // (id, checks specific to that vector beyond the generic decode/re-encode)
        let named: [NamedCheck; 10] = [
            ("ofono-charset-default-ext", &|v| {
                for ch in &ext_chars {
                    assert!(v.text.contains(*ch), "missing {ch:?}");
                }
                assert_eq!(septet_len(&v.text), Ok(21));
            }),
            ("con-submit-ext-all", &|v| {
                for ch in &ext_chars {
                    assert!(v.text.contains(*ch), "missing {ch:?}");
                }
            }),
            ("mm-pdu1-ext-chars", &|v| {
                for ch in ['[', '{', '}', ']', '§', '¿', 'Ω', '£'] {
                    assert!(v.text.contains(ch), "missing {ch:?}");
                }
            }),
            ("pgm-deliver-ext-braces", &|v| {
                assert_eq!(v.text, "@{tést}!");
                assert_eq!(septet_len(&v.text), Ok(10));
            }),
            ("ofono-charset-default-full", &|v| {
                for (septet, ch) in DEFAULT_TABLE.iter().enumerate() {
                    if septet != usize::from(ESCAPE) {
                        assert!(v.text.contains(*ch), "missing {ch:?}");
                    }
                }
            }),
            ("con-submit-it-gsm7", &|v| {
                assert_eq!(choose_encoding(&v.text), Encoding::Gsm7);
            }),
            ("con-deliver-alnum-it", &|v| {
                for ch in ['é', 'è', 'ì', 'ò', 'ù', 'à'] {
                    assert!(v.text.contains(ch), "missing {ch:?}");
                }
                assert_eq!(choose_encoding(&v.text), Encoding::Gsm7);
                assert_eq!(count_parts(&v.text), (Encoding::Gsm7, 1));
            }),
            ("con-submit-it-ucs2", &|v| {
                assert_eq!(choose_encoding(&v.text), Encoding::Ucs2);
                assert_eq!(
                    to_septets(&v.text),
                    Err(Gsm7Error::Unencodable { ch: 'È', index: 0 })
                );
                assert!(is_gsm7(&v.text.replace('È', "É")), "È is the only blocker");
                assert_eq!(count_parts(&v.text), (Encoding::Ucs2, 1));
            }),
            ("con-deliver-emoji", &|v| {
                assert!(v.text.chars().any(|c| c.len_utf16() == 2));
            }),
            ("con-deliver-ucs2-iei08-part2", &|v| {
                assert!(v.text.ends_with('👋'));
                let units = to_ucs2(&v.text);
                assert_eq!(units.len(), v.text.chars().count() + 1);
                assert_eq!(units[units.len() - 2..], [0xD83D, 0xDC4B]);
            }),
        ];
        for (id, extra) in named {
            match get(id) {
                Some(v) => {
                    let outcome = check_vector(v);
                    assert_ne!(outcome, Outcome::Overrun, "{id}");
                    extra(v);
                    checked.push(id);
                }
                None => missing.push(id),
            }
        }
        eprintln!("named vectors checked: {checked:?}; absent from corpus: {missing:?}");
        // The README names these three but the file (90 vectors) does not contain them; their
        // ground is covered by ofono-charset-default-ext, con-deliver-alnum-it and
        // con-deliver-ucs2-iei08-part2. If they appear they are checked above.
        assert!(checked.len() >= 7, "named vectors missing: {missing:?}");
    }
}
