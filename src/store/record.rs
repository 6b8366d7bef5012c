//! Encoding of stored values: a format-version byte, then postcard (compact, so a million queued
//! messages stay small on disk and in the engine's cache).

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{OutboxItem, StoreError};
use crate::message::{InboundMessage, Kind, Message, MessageId, Millis, Origin, ReceiptOutcome};

/// Bumped when a stored type changes incompatibly; old versions are then migrated on read.
const FORMAT_V1: u8 = 1;
/// V2 added [`Message::origin`] as its last field; every other type is encoded as in V1.
const FORMAT_V2: u8 = 2;
/// V3 made the record of an SMPP multi-part submit a [`SubmitRecord`] (open, or complete) where
/// it was a bare [`SubmitAssembly`]; every other type is encoded as in V2.
const FORMAT_V3: u8 = 3;
/// V4 added [`Message::options`], [`InboundMessage::shop_number`] and
/// [`Conversation::shop_number`](super::Conversation::shop_number) as their last fields; every
/// other type is encoded as in V3.
const FORMAT_V4: u8 = 4;

/// A receipt that arrived before the channel reported the part as accepted.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EarlyReceipt {
    pub outcome: ReceiptOutcome,
    pub reason: Option<String>,
    pub at: i64,
}

/// Parts of a concatenated inbound message received so far.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Assembly {
    pub to: String,
    pub first_at: i64,
    pub in_reply_to: Option<crate::message::MessageId>,
    /// One slot per part, in order.
    pub parts: Vec<Option<String>>,
}

pub fn decode_assembly(key: &[u8], bytes: &[u8]) -> Result<Assembly, StoreError> {
    decode(key, bytes)
}

/// Parts of an SMPP client's multi-part submit received so far, with the message they will make.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubmitAssembly {
    /// The message's id, given when the first part came: every part's response carries it.
    pub id: MessageId,
    /// When the first part came (for the expiry of assemblies that never complete).
    pub first_at: Millis,
    /// The message as the first part to arrive described it; text, encoding and parts are
    /// recomputed from the joined parts.
    pub to: String,
    pub from: Option<String>,
    pub kind: Kind,
    pub reference: Option<String>,
    pub send_at: Option<Millis>,
    pub validity_ms: Millis,
    pub origin: Option<Origin>,
    /// One slot per part, in order.
    pub parts: Vec<Option<String>>,
}

/// What the `b` key of an SMPP multi-part submit holds.
// Decoded, looked at and dropped one at a time: boxing the assembly would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SubmitRecord {
    /// Parts are missing.
    Open(SubmitAssembly),
    /// Every part came and the message was made. Kept (without the texts) until the assembly
    /// expiry age, so a part the client sends again after a lost response is answered with
    /// the same id instead of starting a new assembly that would expire into a false failure.
    Complete {
        /// The message's id.
        id: MessageId,
        /// When the first part came: the marker is dropped at the assembly expiry age.
        first_at: Millis,
        /// A fingerprint of each part's text, in order: a part sent again with the same text
        /// is a resend; with another text it is a new message that reuses the reference.
        parts: Vec<String>,
    },
}

impl SubmitRecord {
    /// When the first part came, either way.
    pub fn first_at(&self) -> Millis {
        match self {
            SubmitRecord::Open(a) => a.first_at,
            SubmitRecord::Complete { first_at, .. } => *first_at,
        }
    }
}

pub fn decode_submit_record(key: &[u8], bytes: &[u8]) -> Result<SubmitRecord, StoreError> {
    match bytes.split_first() {
        // Before V3 the record was a bare assembly (only open ones were kept); postcard writes
        // an enum as its variant index then its content, so it reads as V3 with `Open`'s index
        // (one 0x00 byte) put before it.
        Some((&(FORMAT_V1 | FORMAT_V2), body)) => {
            let mut migrated = Vec::with_capacity(bytes.len() + 1);
            migrated.extend_from_slice(&[FORMAT_V4, 0]);
            migrated.extend_from_slice(body);
            decode(key, &migrated)
        }
        _ => decode(key, bytes),
    }
}

pub fn decode_outbox(key: &[u8], bytes: &[u8]) -> Result<OutboxItem, StoreError> {
    decode(key, bytes)
}

pub fn decode_dead_letter(
    key: &[u8],
    bytes: &[u8],
) -> Result<super::outbox::DeadLetter, StoreError> {
    decode(key, bytes)
}

pub fn decode_optout(key: &[u8], bytes: &[u8]) -> Result<crate::optout::OptOut, StoreError> {
    decode(key, bytes)
}

pub fn decode_conversation(key: &[u8], bytes: &[u8]) -> Result<super::Conversation, StoreError> {
    // Before V4 a conversation had no shop number: "" (one 0x00 byte, the empty string).
    decode(key, &with_trailing_defaults(bytes, &[], &[0]))
}

/// `bytes` as V4 when it is an older record of a type whose newer fields are all at its end:
/// postcard is not self-describing, so the missing fields' encoded defaults are appended
/// (`v1`: V1 records', `v2_v3`: V2 and V3 records').
fn with_trailing_defaults<'a>(
    bytes: &'a [u8],
    v1: &[u8],
    v2_v3: &[u8],
) -> std::borrow::Cow<'a, [u8]> {
    let appended = match bytes.first() {
        Some(&FORMAT_V1) => [v1, v2_v3].concat(),
        Some(&(FORMAT_V2 | FORMAT_V3)) => v2_v3.to_vec(),
        _ => return std::borrow::Cow::Borrowed(bytes),
    };
    let mut migrated = Vec::with_capacity(bytes.len() + appended.len());
    migrated.push(FORMAT_V4);
    migrated.extend_from_slice(&bytes[1..]);
    migrated.extend_from_slice(&appended);
    std::borrow::Cow::Owned(migrated)
}

/// Room reserved for a record: a message with its history fits, so it is written without
/// growing (each growth was a copy; the writer encodes every message several times).
const RECORD_CAPACITY: usize = 384;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_CAPACITY);
    out.push(FORMAT_V4);
    // Serializing our own plain structs into a Vec cannot fail; keep the version byte alone if
    // it ever does, which decodes as corrupt rather than panicking.
    postcard::to_extend(value, out).unwrap_or_else(|_| vec![FORMAT_V4])
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    };
    match bytes.split_first() {
        Some((&(FORMAT_V1 | FORMAT_V2 | FORMAT_V3 | FORMAT_V4), body)) => {
            postcard::from_bytes(body).map_err(|e| corrupt(e.to_string()))
        }
        Some((v, _)) => Err(corrupt(format!("unknown format version {v}"))),
        None => Err(corrupt("empty record".into())),
    }
}

pub fn decode_message(key: &[u8], bytes: &[u8]) -> Result<Message, StoreError> {
    // V1 lacks `origin` (None: 0x00); V1 to V3 lack `options` (three Nones).
    decode(key, &with_trailing_defaults(bytes, &[0], &[0, 0, 0]))
}

pub fn decode_inbound(key: &[u8], bytes: &[u8]) -> Result<InboundMessage, StoreError> {
    // Before V4 an inbound message had no `shop_number` (None: 0x00).
    decode(key, &with_trailing_defaults(bytes, &[], &[0]))
}

pub fn decode_early_receipt(key: &[u8], bytes: &[u8]) -> Result<EarlyReceipt, StoreError> {
    decode(key, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{OriginAddress, ReceiptRequest};

    /// An open assembly as format V2 wrote it (the code before [`SubmitRecord`]), byte for byte.
    const V2_ASSEMBLY: &str = "020102030405060708090a0b0c0d0e0f1080a0abfef9620d2b333933343731\
        323334353637010453686f7000000080bab703010573686f7041010453686f7005000c3339333437313233\
        34353637010102010648656c6c6f2000";

    fn assembly() -> SubmitAssembly {
        SubmitAssembly {
            id: MessageId::from_bytes([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]),
            first_at: 1_700_000_000_000,
            to: "+393471234567".into(),
            from: Some("Shop".into()),
            kind: Kind::Transactional,
            reference: None,
            send_at: None,
            validity_ms: 3_600_000,
            origin: Some(Origin {
                account: "shopA".into(),
                receipt: ReceiptRequest::Final,
                source: OriginAddress {
                    addr: "Shop".into(),
                    ton: 5,
                    npi: 0,
                },
                dest: OriginAddress {
                    addr: "393471234567".into(),
                    ton: 1,
                    npi: 1,
                },
            }),
            parts: vec![Some("Hello ".into()), None],
        }
    }

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn an_assembly_written_before_v3_reads_as_open() {
        let old = unhex(V2_ASSEMBLY);
        assert_eq!(
            decode_submit_record(b"b", &old).unwrap(),
            SubmitRecord::Open(assembly())
        );
    }

    #[test]
    fn inbound_messages_written_before_v4_read_without_a_shop_number() {
        let m = InboundMessage {
            id: assembly().id,
            channel: "sim".into(),
            from: "+393471234567".into(),
            to: "+393400000001".into(),
            text: "thanks".into(),
            received_at: 5,
            in_reply_to: None,
            parts: 1,
            missing_parts: Vec::new(),
            shop_number: None,
        };
        let mut old = encode(&m);
        assert_eq!(old.pop(), Some(0), "a trailing None");
        for version in [FORMAT_V1, FORMAT_V2, FORMAT_V3] {
            old[0] = version;
            assert_eq!(decode_inbound(b"i", &old).unwrap(), m);
        }
        let with_number = InboundMessage {
            shop_number: Some(String::new()),
            ..m
        };
        assert_eq!(
            decode_inbound(b"i", &encode(&with_number)).unwrap(),
            with_number
        );
    }

    #[test]
    fn submit_records_round_trip() {
        let complete = SubmitRecord::Complete {
            id: assembly().id,
            first_at: 5,
            parts: vec!["00ff".into(), "ff00".into()],
        };
        for record in [SubmitRecord::Open(assembly()), complete] {
            let bytes = encode(&record);
            assert_eq!(bytes[0], FORMAT_V4);
            assert_eq!(decode_submit_record(b"b", &bytes).unwrap(), record);
        }
        assert!(matches!(
            decode_submit_record(b"b", &[9, 0]),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
