//! SMPP delivery receipts (SMPP 3.4 Appendix B) and message-id matching.
//!
//! SMSCs put a receipt's text in `short_message` (or `message_payload`) of a
//! `deliver_sm`/`data_sm` with esm_class "SMSC delivery receipt"; deciding that a PDU is
//! a receipt is the caller's job, this module only reads the text. Appendix B is only an
//! example format, so the parser is tolerant rather than strict: it finds the known keys
//! wherever they are and ignores what it does not know.
//!
//! Pure: no I/O, no clock, and no input makes it panic.

// Receipts come straight off the wire: let the compiler hold the "never panics" promise.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use crate::message::ReceiptOutcome;

// ---------------------------------------------------------------------------------- writing

/// A receipt's "submit date:" / "done date:" value: "YYMMDDhhmm" in UTC.
pub fn date(unix_secs: i64) -> String {
    jiff::Timestamp::from_second(unix_secs)
        .map(|t| {
            t.to_zoned(jiff::tz::TimeZone::UTC)
                .strftime("%y%m%d%H%M")
                .to_string()
        })
        .unwrap_or_else(|_| "0000000000".into())
}

/// The first 20 characters of a text, printable ASCII only ('?' for the rest), as receipt
/// texts are sent with data_coding 0.
pub fn text_head(text: &str) -> String {
    text.chars()
        .take(20)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------- reading

/// Why a text could not be read as a delivery receipt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// No non-empty `id:` field: without it nothing can be matched, so it is not a receipt.
    #[error("not a delivery receipt: no id field")]
    MissingId,
}

/// A delivery receipt as SMSCs write it in short_message or message_payload (SMPP 3.4 Appendix B):
/// "id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD err:E text: . . ."
///
/// Fields that are absent, empty or unreadable are `None`; when a key is written twice the
/// first occurrence wins.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Receipt {
    /// The message id as written (leading zeros and case kept); never empty.
    /// Look it up with [`id_candidates`].
    pub id: String,
    /// Number of short messages originally submitted (`sub:`).
    pub sub: Option<u32>,
    /// Number of short messages delivered (`dlvrd:`).
    pub dlvrd: Option<u32>,
    /// When the message was submitted, as the SMSC's local time without offset:
    /// `YYYY-MM-DDThh:mm`, or `YYYY-MM-DDThh:mm:ss` when the receipt gives seconds.
    /// `None` when absent or not a valid date (e.g. `0000000000`).
    pub submit_date: Option<String>,
    /// When the message reached its final state; same format as `submit_date`.
    pub done_date: Option<String>,
    /// The state as written, uppercased (`DELIVRD`); see [`Receipt::state`].
    pub stat: Option<String>,
    /// The error code as written (`000`, `21b`, `0`): its meaning is SMSC-specific.
    pub err: Option<String>,
    /// The `text:` field (usually the start of the message); `Some("")` when the key is
    /// there with nothing after it. Non-UTF-8 bytes become U+FFFD.
    pub text: Option<String>,
}

impl Receipt {
    /// What the receipt's `stat` says happened, or `None` when there is no stat or it is
    /// not one this module knows.
    #[must_use]
    pub fn state(&self) -> Option<ReceiptState> {
        self.stat.as_deref().and_then(ReceiptState::from_stat)
    }

    /// The final outcome the receipt reports, or `None` when it is not final or unknown.
    #[must_use]
    pub fn outcome(&self) -> Option<ReceiptOutcome> {
        self.state().and_then(ReceiptState::outcome)
    }
}

/// What a receipt's stat (or a message_state TLV) says happened to the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptState {
    /// In transit (`ENROUTE`, message_state 1).
    Enroute,
    /// Delivered to the destination (`DELIVRD`, 2).
    Delivered,
    /// Validity period expired (`EXPIRED`, 3).
    Expired,
    /// Deleted before delivery (`DELETED`, 4).
    Deleted,
    /// Undeliverable (`UNDELIV`, 5).
    Undeliverable,
    /// Accepted on the subscriber's behalf (`ACCEPTD`, 6).
    Accepted,
    /// State unknown to the SMSC (`UNKNOWN`, 7).
    Unknown,
    /// Rejected (`REJECTD`, 8).
    Rejected,
    /// Skipped (SMPP 5.0 message_state 9).
    Skipped,
}

/// Stat words SMSCs write, matched case-insensitively. The 7-letter forms are Appendix B's;
/// the full words and `FAILED` are what some SMSCs and aggregators write instead.
const STAT_WORDS: &[(&str, ReceiptState)] = &[
    ("DELIVRD", ReceiptState::Delivered),
    ("DELIVERED", ReceiptState::Delivered),
    ("EXPIRED", ReceiptState::Expired),
    ("DELETED", ReceiptState::Deleted),
    ("UNDELIV", ReceiptState::Undeliverable),
    ("UNDELIVERABLE", ReceiptState::Undeliverable),
    ("UNDELIVERED", ReceiptState::Undeliverable),
    ("FAILED", ReceiptState::Undeliverable),
    ("ACCEPTD", ReceiptState::Accepted),
    ("ACCEPTED", ReceiptState::Accepted),
    ("UNKNOWN", ReceiptState::Unknown),
    ("REJECTD", ReceiptState::Rejected),
    ("REJECTED", ReceiptState::Rejected),
    ("ENROUTE", ReceiptState::Enroute),
    ("SKIPPED", ReceiptState::Skipped),
];

impl ReceiptState {
    /// The state a receipt's `stat:` value names: the Appendix B words (DELIVRD, EXPIRED,
    /// DELETED, UNDELIV, ACCEPTD, UNKNOWN, REJECTD, ENROUTE), the full words some SMSCs
    /// write (DELIVERED, UNDELIVERABLE, UNDELIVERED, ACCEPTED, REJECTED, SKIPPED) and
    /// FAILED (as undeliverable), case-insensitively and ignoring surrounding blanks.
    /// `None` for anything else.
    #[must_use]
    pub fn from_stat(stat: &str) -> Option<Self> {
        let stat = stat.trim();
        STAT_WORDS
            .iter()
            .find(|(word, _)| word.eq_ignore_ascii_case(stat))
            .map(|&(_, state)| state)
    }

    /// The state a message_state TLV (0x0427) value names, SMPP 3.4 §5.2.28: 1 ENROUTE,
    /// 2 DELIVERED, 3 EXPIRED, 4 DELETED, 5 UNDELIVERABLE, 6 ACCEPTED, 7 UNKNOWN,
    /// 8 REJECTED, and 9 SKIPPED from SMPP 5.0. `None` for anything else (including 5.0's
    /// 0 SCHEDULED, which a receipt never reports).
    #[must_use]
    pub fn from_message_state(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Enroute,
            2 => Self::Delivered,
            3 => Self::Expired,
            4 => Self::Deleted,
            5 => Self::Undeliverable,
            6 => Self::Accepted,
            7 => Self::Unknown,
            8 => Self::Rejected,
            9 => Self::Skipped,
            _ => return None,
        })
    }

    /// The final outcome for the message, or None while not final (ENROUTE, ACCEPTED, UNKNOWN).
    ///
    /// Delivered -> Delivered; Expired -> Expired; Deleted, Undeliverable, Rejected and
    /// Skipped -> Failed.
    #[must_use]
    pub fn outcome(self) -> Option<ReceiptOutcome> {
        match self {
            Self::Delivered => Some(ReceiptOutcome::Delivered),
            Self::Expired => Some(ReceiptOutcome::Expired),
            Self::Deleted | Self::Undeliverable | Self::Rejected | Self::Skipped => {
                Some(ReceiptOutcome::Failed)
            }
            Self::Enroute | Self::Accepted | Self::Unknown => None,
        }
    }
}

/// The keys of a receipt, as indexes into the parser's per-key tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Id,
    Sub,
    Dlvrd,
    SubmitDate,
    DoneDate,
    Stat,
    Err,
    Text,
}

impl Key {
    const COUNT: usize = 8;

    const fn index(self) -> usize {
        self as usize
    }
}

/// Single-word keys. `sub` cannot swallow `submit date`: it must be followed by a colon.
const WORD_KEYS: &[(&[u8], Key)] = &[
    (b"id", Key::Id),
    (b"sub", Key::Sub),
    (b"dlvrd", Key::Dlvrd),
    (b"stat", Key::Stat),
    (b"err", Key::Err),
    (b"text", Key::Text),
];

/// Parses a delivery receipt's text (short_message or message_payload bytes).
///
/// Tolerant, because SMSCs vary: keys in any case (`Text:`, `Stat:`), `submit date` also as
/// `submit_date`/`submitdate`, fields missing, extra or out of order, extra blanks, blanks
/// before a colon, trailing NULs, non-UTF-8 bytes (replaced by U+FFFD). A key counts only at
/// the start of the input or after a blank, so `msgid:` is not `id:`.
///
/// Every field but `text` is one blank-delimited word; `text` runs to the end of the input,
/// or, when it is not the last field, up to the next key that has not yet been seen. So a
/// text that contains colons or even `id:` is kept whole when it comes last (the usual
/// case); the price is that a text which precedes e.g. `stat:` and itself contains `stat:`
/// is cut there. Text keeps its blanks as written except the ones that separate it from a
/// following key.
///
/// # Errors
///
/// [`ReceiptError::MissingId`] only when there is no non-empty `id:` value: then it is not
/// a receipt.
pub fn parse(bytes: &[u8]) -> Result<Receipt, ReceiptError> {
    // C-octet strings and padded payloads end in NULs; they are never part of a field.
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let input = bytes.get(..end).unwrap_or_default();

    // First occurrence wins; `Some` also marks a key as seen, even with an empty value.
    let mut values: [Option<&[u8]>; Key::COUNT] = [None; Key::COUNT];
    let mut pos = 0;
    while pos < input.len() {
        let Some((key, value_start)) = match_key(input, pos) else {
            pos += 1;
            continue;
        };
        let (value, next) = if key == Key::Text {
            text_value(input, value_start, &values)
        } else {
            word_value(input, value_start)
        };
        if let Some(slot @ None) = values.get_mut(key.index()) {
            *slot = Some(value);
        }
        // Always advance, so a malformed input cannot stall the scan.
        pos = next.max(pos + 1);
    }

    let field = |key: Key| values.get(key.index()).copied().flatten();
    let id = field(Key::Id)
        .filter(|v| !v.is_empty())
        .ok_or(ReceiptError::MissingId)?;
    let word = |key: Key| field(key).filter(|v| !v.is_empty()).map(lossy);
    Ok(Receipt {
        id: lossy(id),
        sub: field(Key::Sub).and_then(parse_u32),
        dlvrd: field(Key::Dlvrd).and_then(parse_u32),
        submit_date: field(Key::SubmitDate).and_then(parse_date),
        done_date: field(Key::DoneDate).and_then(parse_date),
        stat: word(Key::Stat).map(|s| s.to_ascii_uppercase()),
        err: word(Key::Err),
        text: field(Key::Text).map(lossy),
    })
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Bytes that separate fields. NUL counts so that C-string padding between fields splits them.
const fn is_sep(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c | 0)
}

const fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t')
}

/// `rest` without a case-insensitive `prefix`, if it starts with one.
fn strip_prefix_ci<'a>(rest: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = rest.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| rest.get(prefix.len()..))
        .flatten()
}

fn skip_while(mut rest: &[u8], pred: impl Fn(u8) -> bool) -> &[u8] {
    while let Some((&b, tail)) = rest.split_first() {
        if !pred(b) {
            break;
        }
        rest = tail;
    }
    rest
}

/// The key starting at `pos`, with the offset just past its colon.
fn match_key(input: &[u8], pos: usize) -> Option<(Key, usize)> {
    if pos > 0 && !input.get(pos - 1).copied().is_some_and(is_sep) {
        return None;
    }
    let rest = input.get(pos..)?;
    let (key, after_name) = two_word_key(rest).or_else(|| {
        WORD_KEYS
            .iter()
            .find_map(|&(name, key)| strip_prefix_ci(rest, name).map(|r| (key, r)))
    })?;
    let after_colon = skip_while(after_name, is_blank).strip_prefix(b":")?;
    Some((key, input.len() - after_colon.len()))
}

/// `submit date` / `done date`, with a blank, underscore, hyphen or nothing between the words.
fn two_word_key(rest: &[u8]) -> Option<(Key, &[u8])> {
    let (key, tail) = if let Some(tail) = strip_prefix_ci(rest, b"submit") {
        (Key::SubmitDate, tail)
    } else {
        (Key::DoneDate, strip_prefix_ci(rest, b"done")?)
    };
    let tail = skip_while(tail, |b| is_blank(b) || b == b'_' || b == b'-');
    Some((key, strip_prefix_ci(tail, b"date")?))
}

/// A one-word value starting at `start` and the offset to resume scanning at.
fn word_value(input: &[u8], start: usize) -> (&[u8], usize) {
    let rest = input.get(start..).unwrap_or_default();
    let trimmed = skip_while(rest, is_sep);
    let begin = input.len() - trimmed.len();
    // "sub: dlvrd:001" is an empty sub, not a sub of "dlvrd:001".
    if match_key(input, begin).is_some() {
        return (&[], begin);
    }
    let len = trimmed
        .iter()
        .position(|&b| is_sep(b))
        .unwrap_or(trimmed.len());
    (trimmed.get(..len).unwrap_or_default(), begin + len)
}

/// The `text:` value starting at `start` and the offset to resume scanning at.
fn text_value<'a>(
    input: &'a [u8],
    start: usize,
    seen: &[Option<&[u8]>; Key::COUNT],
) -> (&'a [u8], usize) {
    let next_key = (start..input.len()).find(|&p| {
        match_key(input, p).is_some_and(|(key, _)| {
            key != Key::Text && seen.get(key.index()).is_some_and(Option::is_none)
        })
    });
    match next_key {
        Some(end) => {
            let raw = input.get(start..end).unwrap_or_default();
            let kept = raw.iter().rposition(|&b| !is_sep(b)).map_or(0, |i| i + 1);
            (raw.get(..kept).unwrap_or_default(), end)
        }
        None => (input.get(start..).unwrap_or_default(), input.len()),
    }
}

/// Decimal digits only (leading zeros fine); `None` on anything else or overflow.
fn parse_u32(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u32, |acc, &b| {
        let digit = char::from(b).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(digit)
    })
}

/// `YYMMDDhhmm`, `YYMMDDhhmmss` or `YYYYMMDDhhmmss` as `YYYY-MM-DDThh:mm[:ss]`.
///
/// Two-digit years are 20YY: receipts predating 2000 are not worth a century guess.
/// Twelve digits are read as `YYMMDDhhmmss` (what SMSCs write) rather than `YYYYMMDDhhmm`.
fn parse_date(digits: &[u8]) -> Option<String> {
    let field = |from: usize, len: usize| parse_u32(digits.get(from..from + len)?);
    let (year, at) = match digits.len() {
        10 | 12 => (2000 + field(0, 2)?, 2),
        14 => (field(0, 4)?, 4),
        _ => return None,
    };
    let month = field(at, 2)?;
    let day = field(at + 2, 2)?;
    let hour = field(at + 4, 2)?;
    let minute = field(at + 6, 2)?;
    let second = if digits.len() > at + 8 {
        Some(field(at + 8, 2)?)
    } else {
        None
    };
    let valid = (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour < 24
        && minute < 60
        && second.is_none_or(|s| s < 60);
    if !valid {
        return None;
    }
    Some(match second {
        Some(s) => format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{s:02}"),
        None => format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}"),
    })
}

const fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Message id forms to look a receipt up by. SMSCs give the id in submit_sm_resp in one form
/// and in the receipt in another: hex in one and decimal in the other, upper/lower case, with
/// or without leading zeros. Returns the distinct normalized candidates (lowercase, leading
/// zeros stripped, "0" for all zeros): the id itself, and when it reads as a number, its other
/// base (hex digits -> decimal; decimal digits -> lowercase hex). Ids too long for u128 or
/// non-alphanumeric (UUIDs) give just the normalized id. Always at least one candidate for a
/// non-empty id; the first is the id itself normalized.
///
/// Order: the id itself, then its decimal-read-as-hex form, then its hex-read-as-decimal
/// form. An id of decimal digits is also valid hex, so "10" gives "10", "a" (decimal 10 in
/// hex) and "16" (hex 10 in decimal). The trade-off: the gateway looks every candidate up in a
/// per-link index of the ids it has seen, so a false match needs two messages of the same
/// link in flight whose ids collide across bases (say one stored as "16" and another as
/// "10"); that is rare and far cheaper than never matching an SMSC that switches bases
/// between submit_sm_resp and the receipt.
///
/// An empty id gives no candidates.
#[must_use]
pub fn id_candidates(id: &str) -> Vec<String> {
    if id.is_empty() {
        return Vec::new();
    }
    let normalized = normalize_id(id);
    let mut out = vec![normalized.clone()];
    let mut push = |candidate: String| {
        if !out.contains(&candidate) {
            out.push(candidate);
        }
    };
    // Digit checks first: from_str_radix also takes a leading '+', which is not an id form.
    if normalized.bytes().all(|b| b.is_ascii_digit())
        && let Ok(value) = normalized.parse::<u128>()
    {
        push(format!("{value:x}"));
    }
    if normalized.bytes().all(|b| b.is_ascii_hexdigit())
        && let Ok(value) = u128::from_str_radix(&normalized, 16)
    {
        push(value.to_string());
    }
    out
}

/// The normalized form of an id as stored from submit_sm_resp (must equal the first candidate
/// of the same id).
///
/// Surrounding blanks and NULs are dropped (some SMSCs pad the id), ASCII letters are
/// lowercased and leading zeros stripped, "0" for all zeros. An id that is nothing but
/// blanks/NULs is kept as is, so a non-empty id never normalizes to "".
#[must_use]
pub fn normalize_id(id: &str) -> String {
    let trimmed = id.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\0' || c == '\u{b}');
    if trimmed.is_empty() {
        return id.to_owned();
    }
    let lower = trimmed.to_ascii_lowercase();
    match lower.trim_start_matches('0') {
        "" => "0".to_owned(),
        stripped => stripped.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::BTreeSet;

    const TSV: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/corpus/smpp/dlr-receipts.tsv"
    ));
    const VECTORS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/corpus/smpp/smpp-pdu-vectors.json"
    ));

    // ---- corpus helpers -------------------------------------------------------------

    /// One TSV row as a column-name lookup.
    struct Row<'a> {
        header: Vec<&'a str>,
        cells: Vec<String>,
    }

    impl Row<'_> {
        fn get(&self, column: &str) -> &str {
            let at = self.header.iter().position(|h| *h == column).unwrap();
            &self.cells[at]
        }
    }

    /// The notes column is CSV-quoted where it contains quotes: `"""Text:"" ..."`.
    fn unquote(cell: &str) -> String {
        match cell.strip_prefix('"').and_then(|c| c.strip_suffix('"')) {
            Some(inner) => inner.replace("\"\"", "\""),
            None => cell.to_owned(),
        }
    }

    fn tsv_rows() -> Vec<Row<'static>> {
        let mut lines = TSV.lines();
        let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
        lines
            .filter(|l| !l.is_empty())
            .map(|line| {
                let cells: Vec<String> = line.split('\t').map(unquote).collect();
                assert_eq!(cells.len(), header.len(), "row {line:?}");
                Row {
                    header: header.clone(),
                    cells,
                }
            })
            .collect()
    }

    /// The TSV writes non-ASCII (and control) bytes of PDU-taken rows as `\xHH` / `\uHHHH`.
    fn unescape(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = s;
        while let Some(c) = rest.chars().next() {
            let escape = rest
                .strip_prefix("\\x")
                .and_then(|r| Some((u8::from_str_radix(r.get(..2)?, 16).ok()?, 4)))
                .map(|(b, n)| (vec![b], n))
                .or_else(|| {
                    let r = rest.strip_prefix("\\u")?;
                    let ch = char::from_u32(u32::from_str_radix(r.get(..4)?, 16).ok()?)?;
                    Some((ch.to_string().into_bytes(), 6))
                });
            match escape {
                Some((bytes, n)) => {
                    out.extend(bytes);
                    rest = &rest[n..];
                }
                None => {
                    out.extend(c.to_string().bytes());
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
        out
    }

    /// Raw receipt dates as the expected ISO-like form, written independently of the parser.
    fn iso(raw: &str) -> String {
        let (year, rest) = match raw.len() {
            10 | 12 => (format!("20{}", &raw[..2]), &raw[2..]),
            14 => (raw[..4].to_owned(), &raw[4..]),
            _ => panic!("unexpected raw date {raw:?}"),
        };
        let mut out = format!(
            "{year}-{}-{}T{}:{}",
            &rest[0..2],
            &rest[2..4],
            &rest[4..6],
            &rest[6..8]
        );
        if rest.len() == 10 {
            out = format!("{out}:{}", &rest[8..10]);
        }
        out
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn share_candidate(a: &str, b: &str) -> bool {
        let b = id_candidates(b);
        id_candidates(a).iter().any(|c| b.contains(c))
    }

    /// What must hold for any input at all.
    fn check_invariants(input: &[u8]) {
        if let Ok(r) = parse(input) {
            assert!(!r.id.is_empty());
            check_id(&r.id);
            let _ = r.outcome();
            if let Some(stat) = &r.stat {
                assert_eq!(stat, &stat.to_ascii_uppercase());
            }
        } else {
            assert_eq!(parse(input), Err(ReceiptError::MissingId));
        }
        check_id(&String::from_utf8_lossy(input));
    }

    fn check_id(id: &str) {
        let candidates = id_candidates(id);
        if id.is_empty() {
            assert!(candidates.is_empty());
            return;
        }
        assert_eq!(candidates.first(), Some(&normalize_id(id)), "{id:?}");
        let distinct: BTreeSet<&String> = candidates.iter().collect();
        assert_eq!(distinct.len(), candidates.len(), "{id:?}");
        assert!(candidates.iter().all(|c| !c.is_empty()), "{id:?}");
    }

    // ---- corpus: dlr-receipts.tsv -----------------------------------------------------

    /// Rows whose `exp_err` is the integer cloudhopper's DeliveryReceipt parsed (012 -> 12),
    /// while `Receipt::err` keeps what was written: compared by numeric value.
    const NUMERIC_ERR_ROWS: &[&str] = &[
        "ch-parse-1",
        "ch-parse-2-capital-Text",
        "ch-realworld-0",
        "ch-seconds",
        "ch-out-of-order",
        "ch-generated-badstat",
    ];

    /// Rows a strict parser rejects and this tolerant one accepts, with the reason.
    const TOLERATED_REJECTS: &[(&str, &str)] = &[(
        "ch-invalid-txt",
        "misspelled `txt:` is an unknown key and ignored: the receipt has an id, so it parses, with no text",
    )];

    #[test]
    fn corpus_tsv_rows_parse_as_expected() {
        let rows = tsv_rows();
        assert_eq!(rows.len(), 20, "README says 20 receipts");
        let mut numeric_err = BTreeSet::new();
        let mut tolerated = BTreeSet::new();
        let mut rejected = BTreeSet::new();
        for row in &rows {
            let name = row.get("id");
            let notes = row.get("notes");
            let escaped = notes.contains("escaped with \\x");
            let decode = |s: &str| {
                if escaped {
                    unescape(s)
                } else {
                    s.as_bytes().to_vec()
                }
            };
            let input = decode(row.get("receipt_text"));
            let result = parse(&input);

            if row.get("exp_id").is_empty() {
                // The corpus expects a strict parser to reject it.
                assert!(notes.contains("must reject"), "{name}");
                match TOLERATED_REJECTS.iter().find(|(n, _)| *n == name) {
                    Some(_) => {
                        let r = result.unwrap_or_else(|e| panic!("{name}: {e}"));
                        assert_eq!(r.id, "0123456789", "{name}");
                        assert_eq!(r.err.as_deref(), Some("012"), "{name}");
                        assert_eq!(r.text, None, "{name}");
                        tolerated.insert(name);
                    }
                    None => {
                        assert_eq!(result, Err(ReceiptError::MissingId), "{name}");
                        rejected.insert(name);
                    }
                }
                continue;
            }

            let r = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(r.id, row.get("exp_id"), "{name}");
            let number = |col: &str| {
                let v = row.get(col);
                (!v.is_empty()).then(|| v.parse::<u32>().unwrap())
            };
            assert_eq!(r.sub, number("exp_sub"), "{name} sub");
            assert_eq!(r.dlvrd, number("exp_dlvrd"), "{name} dlvrd");
            for (col, got) in [
                ("exp_submit_date", &r.submit_date),
                ("exp_done_date", &r.done_date),
            ] {
                let exp = row.get(col);
                let want = if exp.ends_with("(invalid date)") {
                    None
                } else if notes.contains("dates left raw") {
                    Some(iso(exp))
                } else {
                    Some(exp.to_owned())
                };
                assert_eq!(got, &want, "{name} {col}");
            }
            assert_eq!(r.stat.as_deref(), Some(row.get("exp_stat")), "{name}");
            let err = r.err.as_deref().unwrap();
            let exp_err = row.get("exp_err");
            if err != exp_err {
                assert_eq!(err.parse::<u32>(), exp_err.parse::<u32>(), "{name} err");
                numeric_err.insert(name);
            }
            let exp_text = String::from_utf8_lossy(&decode(row.get("exp_text"))).into_owned();
            assert_eq!(r.text.as_deref().unwrap_or(""), exp_text, "{name} text");
            let has_text_key = String::from_utf8_lossy(&input)
                .to_ascii_lowercase()
                .contains("text:");
            assert_eq!(r.text.is_some(), has_text_key, "{name} text presence");
            match r.stat.as_deref() {
                Some("BADSTAT") => assert_eq!(r.state(), None, "{name}"),
                _ => assert!(r.state().is_some(), "{name}"),
            }
        }
        assert_eq!(numeric_err, NUMERIC_ERR_ROWS.iter().copied().collect());
        assert_eq!(
            tolerated,
            TOLERATED_REJECTS.iter().map(|(n, _)| *n).collect()
        );
        assert_eq!(rejected, BTreeSet::from(["ch-invalid-i"]));
    }

    // ---- corpus: smpp-pdu-vectors.json ------------------------------------------------

    fn vectors() -> Vec<Value> {
        let doc: Value = serde_json::from_str(VECTORS).unwrap();
        doc["vectors"].as_array().unwrap().clone()
    }

    fn tlv<'a>(vector: &'a Value, tag: &str) -> Option<&'a Value> {
        vector["decoded"]["tlvs"]
            .as_array()?
            .iter()
            .find(|t| t["tag"] == tag)
    }

    /// The receipt bytes of a vector: short_message, or message_payload when that is empty.
    fn receipt_bytes(vector: &Value) -> Vec<u8> {
        let sm = hex(vector["decoded"]["short_message_hex"]
            .as_str()
            .unwrap_or(""));
        if !sm.is_empty() {
            return sm;
        }
        hex(tlv(vector, "0x0424").unwrap()["value_hex"]
            .as_str()
            .unwrap())
    }

    #[test]
    fn corpus_vectors_receipts_match_dlr_fields() {
        let (mut receipts, mut with_state, mut with_id) = (0, 0, 0);
        for v in vectors().iter().filter(|v| v.get("dlr_fields").is_some()) {
            let name = v["id"].as_str().unwrap();
            let dlr = &v["dlr_fields"];
            let field = |k: &str| dlr.get(k).and_then(Value::as_str);
            let r = parse(&receipt_bytes(v)).unwrap_or_else(|e| panic!("{name}: {e}"));
            receipts += 1;

            assert_eq!(Some(r.id.as_str()), field("id"), "{name}");
            let number = |k: &str| field(k).map(|s| s.parse::<u32>().unwrap());
            assert_eq!(r.sub, number("sub"), "{name}");
            assert_eq!(r.dlvrd, number("dlvrd"), "{name}");
            assert_eq!(r.submit_date, field("submit date").map(iso), "{name}");
            assert_eq!(r.done_date, field("done date").map(iso), "{name}");
            assert_eq!(r.stat.as_deref(), field("stat"), "{name}");
            assert_eq!(r.err.as_deref(), field("err"), "{name}");
            // dlr_fields decoded the text as Latin-1: turn it back into the bytes.
            let want_text = field("text").map(|t| {
                let bytes: Vec<u8> = t.chars().map(|c| u8::try_from(c).unwrap()).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            });
            assert_eq!(r.text, want_text, "{name}");
            assert!(r.state().is_some(), "{name}");

            if let Some(state) = tlv(v, "0x0427") {
                let value = hex(state["value_hex"].as_str().unwrap())[0];
                let from_tlv = ReceiptState::from_message_state(value);
                assert!(from_tlv.is_some(), "{name}");
                assert_eq!(from_tlv, r.state(), "{name}: message_state vs stat");
                with_state += 1;
            }
            if let Some(id_tlv) = tlv(v, "0x001E") {
                let raw = hex(id_tlv["value_hex"].as_str().unwrap());
                let tlv_id = String::from_utf8(raw).unwrap();
                let tlv_id = tlv_id.trim_end_matches('\0');
                // Every one of these names the same message as its text (smpp-35 says so
                // in the TSV notes; 58 and 73 are hex vs zero-padded decimal too).
                assert!(
                    share_candidate(tlv_id, &r.id),
                    "{name}: {tlv_id} vs {}",
                    r.id
                );
                assert!(share_candidate(&r.id, tlv_id), "{name}");
                with_id += 1;
            }
        }
        assert_eq!((receipts, with_state, with_id), (11, 8, 8));
    }

    #[test]
    fn corpus_hex_and_decimal_ids_match() {
        for (tlv_id, text_id) in [
            ("38601fa", "0059113978"),
            ("1d305b4c", "0489708364"),
            ("18d0e03a", "0416342074"),
        ] {
            assert!(share_candidate(tlv_id, text_id), "{tlv_id} {text_id}");
            assert!(id_candidates(text_id).contains(&tlv_id.to_owned()));
            assert!(id_candidates(tlv_id).contains(&normalize_id(text_id)));
        }
    }

    // ---- parser behaviour ---------------------------------------------------------------

    fn p(s: &str) -> Receipt {
        parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn appendix_b_example() {
        let r = p(
            "id:0123456789 sub:001 dlvrd:001 submit date:1005232039 done date:1005242339 stat:DELIVRD err:000 text:Hello world",
        );
        assert_eq!(
            r,
            Receipt {
                id: "0123456789".into(),
                sub: Some(1),
                dlvrd: Some(1),
                submit_date: Some("2010-05-23T20:39".into()),
                done_date: Some("2010-05-24T23:39".into()),
                stat: Some("DELIVRD".into()),
                err: Some("000".into()),
                text: Some("Hello world".into()),
            }
        );
        assert_eq!(r.state(), Some(ReceiptState::Delivered));
        assert_eq!(r.outcome(), Some(ReceiptOutcome::Delivered));
    }

    #[test]
    fn keys_are_case_insensitive_and_date_keys_vary() {
        let r = p(
            "ID:AbC SUB:2 Dlvrd:1 Submit_Date:1005232039 DONE-date:1005242339 Stat:undeliv ERR:21b TEXT:x",
        );
        assert_eq!(r.id, "AbC");
        assert_eq!((r.sub, r.dlvrd), (Some(2), Some(1)));
        assert_eq!(r.submit_date.as_deref(), Some("2010-05-23T20:39"));
        assert_eq!(r.done_date.as_deref(), Some("2010-05-24T23:39"));
        assert_eq!(r.stat.as_deref(), Some("UNDELIV"));
        assert_eq!(r.err.as_deref(), Some("21b"));
        assert_eq!(r.text.as_deref(), Some("x"));
        let r = p("id:1 submitdate:1005232039 done  date:1005242339");
        assert!(r.submit_date.is_some() && r.done_date.is_some());
    }

    #[test]
    fn extra_blanks_line_breaks_and_blank_before_colon() {
        let r = p("  id:  123   sub :  001\r\n\tstat:\tDELIVRD  err : 0   text:  hi  ");
        assert_eq!(r.id, "123");
        assert_eq!(r.sub, Some(1));
        assert_eq!(r.stat.as_deref(), Some("DELIVRD"));
        assert_eq!(r.err.as_deref(), Some("0"));
        // Text is kept as written when it is last.
        assert_eq!(r.text.as_deref(), Some("  hi  "));
    }

    #[test]
    fn trailing_nuls_are_dropped() {
        let r = parse(b"id:7 stat:DELIVRD text:hi\0\0\0").unwrap();
        assert_eq!(r.text.as_deref(), Some("hi"));
        let r = parse(b"id:7 err:000\0").unwrap();
        assert_eq!(r.err.as_deref(), Some("000"));
    }

    #[test]
    fn text_keeps_colons_and_seen_keys_but_stops_at_unseen_ones() {
        let r = p("id:1 stat:DELIVRD err:0 text:call id:5 at 10:30 stat:x");
        assert_eq!(r.text.as_deref(), Some("call id:5 at 10:30 stat:x"));
        assert_eq!(r.id, "1");
        assert_eq!(r.stat.as_deref(), Some("DELIVRD"));
        let r = p("text:first part  stat:ENROUTE id:9");
        assert_eq!(r.text.as_deref(), Some("first part"));
        assert_eq!(r.stat.as_deref(), Some("ENROUTE"));
        assert_eq!(r.id, "9");
    }

    #[test]
    fn empty_and_missing_values() {
        let r = p("id:1 sub: dlvrd:001 stat: text:");
        assert_eq!(r.sub, None);
        assert_eq!(r.dlvrd, Some(1));
        assert_eq!(r.stat, None);
        assert_eq!(r.text.as_deref(), Some(""));
        let r = p("id:1");
        assert_eq!(r.state(), None);
        assert_eq!(
            (
                r.sub,
                r.dlvrd,
                r.submit_date,
                r.done_date,
                r.stat,
                r.err,
                r.text
            ),
            (None, None, None, None, None, None, None)
        );
    }

    #[test]
    fn unreadable_numbers_and_dates_are_none() {
        let r = p("id:1 sub:abc dlvrd:99999999999 submit date:10052320 done date:1O05232039");
        assert_eq!((r.sub, r.dlvrd), (None, None));
        assert_eq!((r.submit_date, r.done_date), (None, None));
    }

    #[test]
    fn dates_are_validated() {
        let date = |d: &str| p(&format!("id:1 submit date:{d}")).submit_date;
        assert_eq!(date("2402291200").as_deref(), Some("2024-02-29T12:00"));
        assert_eq!(date("2302291200"), None);
        assert_eq!(
            date("20000229120000").as_deref(),
            Some("2000-02-29T12:00:00")
        );
        assert_eq!(date("21000229120000"), None);
        assert_eq!(date("1013010000"), None);
        assert_eq!(date("1004310000"), None);
        assert_eq!(date("1012312400"), None);
        assert_eq!(date("1012312360"), None);
        assert_eq!(date("101231235960"), None);
        assert_eq!(date("101231235959").as_deref(), Some("2010-12-31T23:59:59"));
        assert_eq!(date("0000000000"), None);
        assert_eq!(date("10123123"), None);
        assert_eq!(date("+012312359"), None);
    }

    #[test]
    fn non_utf8_bytes_are_replaced() {
        let r = parse(b"id:\xff12 stat:delivrd text:caf\xe9 \x84A").unwrap();
        assert_eq!(r.id, "\u{fffd}12");
        assert_eq!(r.stat.as_deref(), Some("DELIVRD"));
        assert_eq!(r.text.as_deref(), Some("caf\u{fffd} \u{fffd}A"));
    }

    #[test]
    fn first_occurrence_wins_and_keys_need_a_boundary() {
        let r = p("id:1 id:2 stat:DELIVRD stat:EXPIRED");
        assert_eq!((r.id.as_str(), r.stat.as_deref()), ("1", Some("DELIVRD")));
        assert_eq!(parse(b"msgid:5 stat:DELIVRD"), Err(ReceiptError::MissingId));
        assert_eq!(p("msgid:5 id:6").id, "6");
    }

    #[test]
    fn no_id_is_an_error() {
        for input in [
            &b""[..],
            b"\0\0",
            b"   ",
            b"id:",
            b"id: sub:001",
            b"hello there",
            b"i:0123 stat:DELIVRD",
        ] {
            assert_eq!(parse(input), Err(ReceiptError::MissingId), "{input:?}");
        }
        assert_eq!(
            ReceiptError::MissingId.to_string(),
            "not a delivery receipt: no id field"
        );
    }

    #[test]
    fn serializes_to_json() {
        let r = p("id:0A sub:001 submit date:110206193041 stat:expired text:");
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({
                "id": "0A", "sub": 1, "dlvrd": null,
                "submit_date": "2011-02-06T19:30:41", "done_date": null,
                "stat": "EXPIRED", "err": null, "text": ""
            })
        );
        assert_eq!(
            serde_json::to_value(ReceiptState::Undeliverable).unwrap(),
            "undeliverable"
        );
    }

    // ---- states ------------------------------------------------------------------------

    #[test]
    fn stat_words() {
        use ReceiptState::*;
        for (word, state) in [
            ("DELIVRD", Delivered),
            ("delivered", Delivered),
            ("EXPIRED", Expired),
            ("DELETED", Deleted),
            ("UNDELIV", Undeliverable),
            ("Undeliverable", Undeliverable),
            ("UNDELIVERED", Undeliverable),
            ("FAILED", Undeliverable),
            ("ACCEPTD", Accepted),
            ("accepted", Accepted),
            ("UNKNOWN", Unknown),
            ("REJECTD", Rejected),
            ("Rejected", Rejected),
            ("ENROUTE", Enroute),
            ("SKIPPED", Skipped),
            (" DELIVRD ", Delivered),
        ] {
            assert_eq!(ReceiptState::from_stat(word), Some(state), "{word}");
        }
        for word in ["", "BADSTAT", "DELIV", "DELIVRDX", "2", "délivrd"] {
            assert_eq!(ReceiptState::from_stat(word), None, "{word}");
        }
    }

    #[test]
    fn message_state_values() {
        use ReceiptState::*;
        let spec = [
            (1, Enroute, "ENROUTE"),
            (2, Delivered, "DELIVRD"),
            (3, Expired, "EXPIRED"),
            (4, Deleted, "DELETED"),
            (5, Undeliverable, "UNDELIV"),
            (6, Accepted, "ACCEPTD"),
            (7, Unknown, "UNKNOWN"),
            (8, Rejected, "REJECTD"),
            (9, Skipped, "SKIPPED"),
        ];
        for value in 0..=u8::MAX {
            let want = spec.iter().find(|(v, ..)| *v == value);
            assert_eq!(
                ReceiptState::from_message_state(value),
                want.map(|(_, s, _)| *s),
                "{value}"
            );
            if let Some((_, state, word)) = want {
                assert_eq!(ReceiptState::from_stat(word), Some(*state));
            }
        }
    }

    #[test]
    fn outcomes() {
        use ReceiptState::*;
        assert_eq!(Delivered.outcome(), Some(ReceiptOutcome::Delivered));
        assert_eq!(Expired.outcome(), Some(ReceiptOutcome::Expired));
        for s in [Deleted, Undeliverable, Rejected, Skipped] {
            assert_eq!(s.outcome(), Some(ReceiptOutcome::Failed), "{s:?}");
        }
        for s in [Enroute, Accepted, Unknown] {
            assert_eq!(s.outcome(), None, "{s:?}");
        }
        assert_eq!(
            p("id:1 stat:REJECTD").outcome(),
            Some(ReceiptOutcome::Failed)
        );
        assert_eq!(p("id:1 stat:BADSTAT").outcome(), None);
    }

    // ---- ids -----------------------------------------------------------------------------

    fn cands(id: &str) -> Vec<String> {
        id_candidates(id)
    }

    #[test]
    fn ids_hex_versus_decimal() {
        assert_eq!(cands("0A1B2C3D"), ["a1b2c3d", "169552957"]);
        assert_eq!(cands("169552957"), ["169552957", "a1b2c3d", "6062156119"]);
        assert!(share_candidate("0A1B2C3D", "169552957"));
        assert_eq!(cands("10"), ["10", "a", "16"]);
        assert!(!share_candidate("7f3c9a22", "12345"));
    }

    #[test]
    fn ids_leading_zeros_and_case() {
        assert_eq!(cands("0059113978"), ["59113978", "38601fa", "1494301048"]);
        assert_eq!(cands("4D19C83C"), cands("4d19c83c"));
        assert_eq!(cands("004D19C83C"), cands("4d19c83c"));
        assert_eq!(cands("0"), ["0"]);
        assert_eq!(cands("0000"), ["0"]);
        assert_eq!(normalize_id("000"), "0");
        assert_eq!(normalize_id("00ABC"), "abc");
    }

    #[test]
    fn ids_non_numeric_empty_and_padded() {
        assert_eq!(
            cands("74E02EE1-4E2F-4A6E-A78B-4B247D756A22"),
            ["74e02ee1-4e2f-4a6e-a78b-4b247d756a22"]
        );
        assert_eq!(cands("msg_12"), ["msg_12"]);
        assert_eq!(cands("+12"), ["+12"]);
        assert_eq!(cands("-5"), ["-5"]);
        assert!(cands("").is_empty());
        assert_eq!(normalize_id(""), "");
        assert_eq!(cands(" 0123\0"), ["123", "7b", "291"]);
        // Nothing but padding: kept as is so a non-empty id still has a candidate.
        assert_eq!(cands("  "), ["  "]);
        assert_eq!(cands("\0"), ["\0"]);
    }

    #[test]
    fn ids_huge_numbers() {
        let max = u128::MAX.to_string();
        let f32 = "f".repeat(32);
        assert_eq!(cands(&max), [max.clone(), f32.clone()]);
        assert_eq!(cands(&f32.to_uppercase()), [f32.clone(), max.clone()]);
        let f33 = "f".repeat(33);
        assert_eq!(cands(&f33), [f33.as_str()]);
        // 40 digits: neither base fits in u128.
        let forty = "1234567890".repeat(4);
        assert_eq!(cands(&forty), [forty.as_str()]);
        // 33 digits: too long as hex, fine as decimal.
        let thirty_three = "9".repeat(33);
        let as_hex = format!("{:x}", thirty_three.parse::<u128>().unwrap());
        assert_eq!(cands(&thirty_three), [thirty_three.clone(), as_hex]);
    }

    #[test]
    fn ids_non_ascii() {
        // Arabic-Indic digits are not ASCII digits: no other base.
        assert_eq!(cands("٣٤٥"), ["٣٤٥"]);
        assert_eq!(cands("ÄB0"), ["Äb0"]);
        assert_eq!(cands("00é"), ["é"]);
        assert_eq!(cands("１２"), ["１２"]);
        for id in ["٣٤٥", "ÄB0", "00é", "\u{fffd}12", "🙂"] {
            check_id(id);
        }
    }

    // ---- robustness ---------------------------------------------------------------------

    #[test]
    fn random_inputs_never_panic() {
        const PIECES: &[&[u8]] = &[
            b"id:",
            b"ID :",
            b"sub:",
            b"dlvrd:",
            b"submit date:",
            b"done_date:",
            b"stat:",
            b"err:",
            b"text:",
            b"Text:",
            b" ",
            b"  ",
            b"\t",
            b"\0",
            b":",
            b"0",
            b"00",
            b"1005232039",
            b"110206193041",
            b"20110314181534",
            b"DELIVRD",
            b"ff",
            b"\xff",
            b"\xe9",
            b"\xf0\x9f",
            b"submit",
            b"date",
            b"-",
            b"_",
        ];
        let mut rng = fastrand::Rng::with_seed(0x9E37_79B9_7F4A_7C15);
        let mut parsed = 0;
        for round in 0..20_000 {
            let len = rng.usize(..120);
            let mut input = Vec::with_capacity(len * 4);
            for _ in 0..len {
                if round % 2 == 0 {
                    input.push(rng.u8(..));
                } else {
                    input.extend_from_slice(PIECES[rng.usize(..PIECES.len())]);
                }
            }
            check_invariants(&input);
            parsed += usize::from(parse(&input).is_ok());
        }
        // The token soup must reach the success paths, not only the error one.
        assert!(parsed > 1_000, "{parsed}");
    }

    #[test]
    fn every_prefix_and_suffix_of_corpus_receipts_never_panics() {
        let mut receipts: Vec<Vec<u8>> = tsv_rows()
            .iter()
            .map(|r| unescape(r.get("receipt_text")))
            .collect();
        receipts.extend(
            vectors()
                .iter()
                .filter(|v| v.get("dlr_fields").is_some())
                .map(receipt_bytes),
        );
        assert_eq!(receipts.len(), 31);
        for receipt in &receipts {
            for cut in 0..=receipt.len() {
                check_invariants(&receipt[..cut]);
                check_invariants(&receipt[cut..]);
            }
        }
    }
}
