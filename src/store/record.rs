//! Encoding of stored values: a format-version byte, then postcard (compact, so a million queued
//! messages stay small on disk and in sled's cache).

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{OutboxItem, StoreError};
use crate::message::{InboundMessage, Kind, Message, MessageId, Millis, Origin, ReceiptOutcome};

/// Bumped when a stored type changes incompatibly; old versions are then migrated on read.
const FORMAT_V1: u8 = 1;
/// V2 added [`Message::origin`] as its last field; every other type is encoded as in V1.
const FORMAT_V2: u8 = 2;

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
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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

pub fn decode_submit_assembly(key: &[u8], bytes: &[u8]) -> Result<SubmitAssembly, StoreError> {
    decode(key, bytes)
}

pub fn decode_outbox(key: &[u8], bytes: &[u8]) -> Result<OutboxItem, StoreError> {
    decode(key, bytes)
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_V2];
    // Serializing our own plain structs into a Vec cannot fail; keep the version byte alone if
    // it ever does, which decodes as corrupt rather than panicking.
    if let Ok(body) = postcard::to_allocvec(value) {
        out.extend_from_slice(&body);
    }
    out
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    };
    match bytes.split_first() {
        Some((&(FORMAT_V1 | FORMAT_V2), body)) => {
            postcard::from_bytes(body).map_err(|e| corrupt(e.to_string()))
        }
        Some((v, _)) => Err(corrupt(format!("unknown format version {v}"))),
        None => Err(corrupt("empty record".into())),
    }
}

pub fn decode_message(key: &[u8], bytes: &[u8]) -> Result<Message, StoreError> {
    match bytes.split_first() {
        // A V1 message lacks the trailing `origin`; postcard is not self-describing, so it is
        // read as V2 with that field's `None` (one 0x00 byte) appended.
        Some((&FORMAT_V1, body)) => {
            let mut migrated = Vec::with_capacity(bytes.len() + 1);
            migrated.push(FORMAT_V2);
            migrated.extend_from_slice(body);
            migrated.push(0);
            decode(key, &migrated)
        }
        _ => decode(key, bytes),
    }
}

pub fn decode_inbound(key: &[u8], bytes: &[u8]) -> Result<InboundMessage, StoreError> {
    decode(key, bytes)
}

pub fn decode_early_receipt(key: &[u8], bytes: &[u8]) -> Result<EarlyReceipt, StoreError> {
    decode(key, bytes)
}
