//! Domain types shared by the store, the dispatcher, channels and the API: what a message is and
//! which states it moves through. No I/O here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::codec::gsm7::Encoding;

/// Milliseconds since the Unix epoch. Stored times are plain integers so records stay small and the
/// state machines can be driven with made-up times in tests.
pub type Millis = i64;

/// The current wall-clock time in [`Millis`]; the only place the crate reads the system clock for
/// stored timestamps.
pub fn now_millis() -> Millis {
    jiff::Timestamp::now().as_millisecond()
}

/// Formats stored milliseconds as RFC 3339 (UTC) for the API and the logs.
pub fn format_millis(ms: Millis) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => ts.to_string(),
        Err(_) => ms.to_string(),
    }
}

/// A message's id: a ULID, so ids sort by creation time and listings need no second index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub Ulid);

// Stored as its 16 bytes (the text form would double the size of every record).
impl Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_bytes().serialize(s)
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <[u8; 16]>::deserialize(d).map(MessageId::from_bytes)
    }
}

impl MessageId {
    /// The id as the 16 big-endian bytes used in store keys (byte order = time order).
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_bytes()
    }

    /// Reads an id back from store-key bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        MessageId(Ulid::from_bytes(bytes))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for MessageId {
    type Err = ulid::DecodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ulid::from_string(s).map(MessageId)
    }
}

/// Where a message is in its life. Transitions: queued -> sending -> sent -> delivered | failed |
/// expired; queued may also become canceled or expired, and sending goes back to queued on a
/// transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Status {
    /// Waiting in the queue until due.
    Queued = 0,
    /// Handed to a channel; its answer is awaited.
    Sending = 1,
    /// The network accepted every part; the delivery receipt is awaited.
    Sent = 2,
    /// The receipts say every part reached the phone.
    Delivered = 3,
    /// Refused for good (by the network, or after the retries ran out).
    Failed = 4,
    /// Its validity ended before it could be sent or delivered.
    Expired = 5,
    /// Canceled before it was sent: through the API or SMPP cancel_sm, or because the
    /// recipient opted out while it waited.
    Canceled = 6,
}

impl Status {
    /// Every status, in index order (for metrics and validation messages).
    pub const ALL: [Status; 7] = [
        Status::Queued,
        Status::Sending,
        Status::Sent,
        Status::Delivered,
        Status::Failed,
        Status::Expired,
        Status::Canceled,
    ];

    /// The name used in the API, the config and the logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
            Status::Expired => "expired",
            Status::Canceled => "canceled",
        }
    }

    /// Final statuses never change again; the retention sweep deletes such messages in time.
    /// `sent` is not final: a receipt may still come.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Delivered | Status::Failed | Status::Expired | Status::Canceled
        )
    }

    /// The one-byte code used in store keys.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or(())
    }
}

/// Transactional messages (order updates, codes) and marketing messages (promotions) are treated
/// differently by opt-outs and quiet hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Order updates, shipping notices, one-time codes: what the customer expects.
    #[default]
    Transactional,
    /// Promotions and reminders: subject to opt-outs and quiet hours.
    Marketing,
}

impl Kind {
    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Transactional => "transactional",
            Kind::Marketing => "marketing",
        }
    }
}

/// One stored state change, kept forever with the message so users can see why it ended as it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The status entered.
    pub status: Status,
    /// When.
    pub at: Millis,
    /// Why, in words a person can act on (the channel's error, the retry time).
    pub reason: Option<String>,
}

/// The state of one part of a (possibly multipart) message on its channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartState {
    /// This part's own status; the message's status is derived from all parts.
    pub status: Status,
    /// The id the channel gave this part (SMPP message_id, modem reference), for receipts.
    pub remote_id: Option<String>,
}

/// Outcome of a delivery receipt for one part, as channels report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptOutcome {
    /// The part reached the phone.
    Delivered,
    /// The network gave up on it (undeliverable, rejected).
    Failed,
    /// The network's validity period ended first.
    Expired,
}

/// An SMPP address as a client wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginAddress {
    /// The address digits or alphanumeric id, unnormalized.
    pub addr: String,
    /// Type of number, echoed back in receipts.
    pub ton: u8,
    /// Numbering plan indicator, echoed back in receipts.
    pub npi: u8,
}

/// Which receipts the submitter asked for (registered_delivery bits 0-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ReceiptRequest {
    /// No receipt.
    #[default]
    None,
    /// A receipt for any final status.
    Final,
    /// A receipt only when the message did not reach the phone.
    FailureOnly,
    /// A receipt only when it was delivered.
    SuccessOnly,
}

impl ReceiptRequest {
    /// Reads the SMSC-delivery-receipt bits of an SMPP `registered_delivery` field.
    pub fn from_registered_delivery(rd: u8) -> Self {
        match rd & 0x03 {
            0 => ReceiptRequest::None,
            1 => ReceiptRequest::Final,
            2 => ReceiptRequest::FailureOnly,
            _ => ReceiptRequest::SuccessOnly,
        }
    }

    /// Whether a message that reached `status` owes a receipt. Only final statuses do: "sent"
    /// may still turn into anything.
    pub fn wants(self, status: Status) -> bool {
        match self {
            ReceiptRequest::None => false,
            ReceiptRequest::Final => status.is_final(),
            ReceiptRequest::FailureOnly => {
                matches!(status, Status::Failed | Status::Expired | Status::Canceled)
            }
            ReceiptRequest::SuccessOnly => status == Status::Delivered,
        }
    }
}

/// Who submitted a message through the SMPP server: receipts go back to that account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The account's system_id.
    pub account: String,
    /// The receipts it asked for.
    pub receipt: ReceiptRequest,
    /// source_addr as submitted (becomes the receipt's destination).
    pub source: OriginAddress,
    /// destination_addr as submitted (becomes the receipt's source).
    pub dest: OriginAddress,
}

/// A message as accepted by intake, before it has an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Recipient in E.164 (normalized at intake).
    pub to: String,
    /// Sender: E.164 number, short code or alphanumeric id; None = the channel's default.
    pub from: Option<String>,
    /// The text as the shop wrote it.
    pub text: String,
    /// Transactional or marketing.
    pub kind: Kind,
    /// The shop's own reference (an order id).
    pub reference: Option<String>,
    /// The alphabet chosen for the text.
    pub encoding: Encoding,
    /// How many SMS parts the text needs.
    pub parts: u8,
    /// Not to be sent before this time.
    pub send_at: Option<Millis>,
    /// How long after `send_at` (or acceptance) the message may still be sent.
    pub validity_ms: Millis,
    /// The SMPP account that submitted it and the receipts it asked for; None for messages
    /// from the HTTP API.
    pub origin: Option<Origin>,
    /// Callback URL, sticky channel, conversation.
    pub options: MessageOptions,
}

/// What a message may ask beyond its content: where its events go and which conversation and
/// channel it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MessageOptions {
    /// An http(s) URL that gets this message's status events, besides the configured webhooks.
    pub callback_url: Option<String>,
    /// The channel tried first (a reply goes out on the channel the customer wrote on); the
    /// route's channels follow it when it cannot send.
    pub channel: Option<String>,
    /// The shop number of the conversation the message belongs to, when that is not `from`:
    /// a reply sent from the number the customer wrote to, in a conversation the shop started
    /// from an alphanumeric sender or its default one ("" for the default sender).
    pub shop_number: Option<String>,
}

/// A stored message with its whole history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Its id, given when it was stored.
    pub id: MessageId,
    /// Recipient in E.164.
    pub to: String,
    /// Sender, or None for the channel's default.
    pub from: Option<String>,
    /// The text.
    pub text: String,
    /// Transactional or marketing.
    pub kind: Kind,
    /// The shop's own reference.
    pub reference: Option<String>,
    /// The alphabet the text is sent in.
    pub encoding: Encoding,
    /// When it was accepted.
    pub created_at: Millis,
    /// Not to be sent before this time.
    pub send_at: Option<Millis>,
    /// After this time it is no longer sent: it expires instead.
    pub expires_at: Millis,
    /// Its current status (also the last entry of `history`).
    pub status: Status,
    /// When the message is next due for sending while queued (the due-index key).
    pub due_at: Millis,
    /// Hand-overs to a channel so far.
    pub attempts: u32,
    /// The channel that carried the last attempt.
    pub channel: Option<String>,
    /// True when a crash may have sent this message once already (see the durability contract).
    pub possible_duplicate: bool,
    /// Each SMS part's own state and remote id.
    pub parts: Vec<PartState>,
    /// Every status change, oldest first.
    pub history: Vec<Transition>,
    /// The idempotency-index key that points at this message, deleted with it.
    pub idempotency_key: Option<Vec<u8>>,
    /// Who submitted it through the SMPP server, so its final status goes back to that account
    /// as a receipt.
    pub origin: Option<Origin>,
    /// Callback URL, sticky channel, conversation. Last field on purpose: records written
    /// before it existed decode by appending its default (see the store's record format).
    pub options: MessageOptions,
}

impl Message {
    /// The shop number of the conversation this message belongs to: "" for the channel's
    /// default sender.
    pub fn conversation_number(&self) -> &str {
        self.options
            .shop_number
            .as_deref()
            .or(self.from.as_deref())
            .unwrap_or("")
    }

    /// Records a new status with its time and reason.
    pub fn transition(&mut self, status: Status, at: Millis, reason: Option<String>) {
        self.status = status;
        self.history.push(Transition { status, at, reason });
    }

    /// When the message reached its current status.
    pub fn status_since(&self) -> Millis {
        self.history.last().map_or(self.created_at, |t| t.at)
    }
}

/// A message received from a customer (stored; threads come with the conversations issue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// Its id, given when it was stored.
    pub id: MessageId,
    /// Channel it arrived on.
    pub channel: String,
    /// Customer number (E.164 when it could be normalized, else as received).
    pub from: String,
    /// The shop number or sender id the customer wrote to.
    pub to: String,
    /// The text, decoded.
    pub text: String,
    /// When the gateway received it.
    pub received_at: Millis,
    /// The outgoing message this answers, when the channel or correlation could tell.
    pub in_reply_to: Option<MessageId>,
    /// How many SMS it arrived as (1 unless it was concatenated).
    pub parts: u8,
    /// Parts (numbered from 1) that never arrived: the message was stored incomplete after
    /// waiting for them too long. Empty when whole.
    pub missing_parts: Vec<u8>,
    /// The shop number of the conversation it was put in: `to`, or the number of the
    /// customer's latest conversation when they answered an alphanumeric or default sender
    /// through a reply number ("" for the default sender). None in records stored before
    /// conversations had shop numbers: those belong to the default one. Last field on purpose.
    pub shop_number: Option<String>,
}

impl InboundMessage {
    /// The shop number of its conversation ("" for the default sender).
    pub fn conversation_number(&self) -> &str {
        self.shop_number.as_deref().unwrap_or("")
    }
}

/// A stable 64-bit FNV-1a label of `bytes` in hex: the same on every platform and release, so it
/// can be stored (token scopes, fingerprints of received PDUs).
pub fn fingerprint(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_requests_follow_the_registered_delivery_bits() {
        use ReceiptRequest as R;
        assert_eq!(R::from_registered_delivery(0x00), R::None);
        assert_eq!(R::from_registered_delivery(0x01), R::Final);
        assert_eq!(R::from_registered_delivery(0x02), R::FailureOnly);
        assert_eq!(R::from_registered_delivery(0x03), R::SuccessOnly);
        // Only bits 0-1 count: SME acknowledgement and intermediate bits are ignored.
        assert_eq!(R::from_registered_delivery(0x1d), R::Final);
        for status in Status::ALL {
            assert!(!R::None.wants(status));
            assert_eq!(R::Final.wants(status), status.is_final());
            assert_eq!(R::SuccessOnly.wants(status), status == Status::Delivered);
            assert_eq!(
                R::FailureOnly.wants(status),
                status.is_final() && status != Status::Delivered
            );
        }
    }
}
