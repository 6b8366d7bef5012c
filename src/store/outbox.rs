//! The durable outbox: receipts, replies and events owed to one target (an SMPP account, a
//! webhook endpoint, the callbacks to one host), written in the same batch as the state change that causes them, so a crash can
//! neither lose one nor produce one for a change that was not committed. The target's consumer
//! reads them in order, delivers them, and deletes them with [`Store::outbox_done`]; an entry
//! stays (and is delivered again after a restart) until then.
//!
//! [`Store::outbox_done`]: super::Store::outbox_done

use serde::{Deserialize, Serialize};

use super::keys;
use crate::message::{InboundMessage, Message, MessageId, Millis, OriginAddress, Status};

/// Opaque key of one outbox entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutboxKey(pub(super) Vec<u8>);

impl OutboxKey {
    /// The entry's id (the key's ULID suffix): unique, and ordered like the entries.
    pub fn id(&self) -> Option<MessageId> {
        keys::id_suffix(&self.0)
    }
}

/// What is owed to a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutboxItem {
    /// A final status of a message submitted by the target's account.
    Receipt {
        /// The message.
        message_id: MessageId,
        /// The final status (delivered, failed, expired or canceled).
        status: Status,
        /// When the message was accepted (its `created_at`).
        submitted_at: Millis,
        /// When it became final.
        done_at: Millis,
        /// The last transition's reason (the network's error text, say).
        reason: Option<String>,
        /// How many SMS parts the message had.
        parts: u8,
        /// The first 20 characters of the text (the receipt's "text:" field).
        text_head: String,
        /// source_addr as submitted.
        source: OriginAddress,
        /// destination_addr as submitted.
        dest: OriginAddress,
    },
    /// A customer's message routed to the target's account.
    Reply {
        /// The stored inbound message.
        inbound_id: MessageId,
        /// The customer (E.164 when it could be normalized).
        from: String,
        /// The number the customer wrote to.
        to: String,
        /// The text.
        text: String,
        /// When the gateway received it.
        received_at: Millis,
        /// The outgoing message it answers, when known.
        in_reply_to: Option<MessageId>,
    },
    /// A webhook event (the target is a webhook endpoint).
    Event {
        /// Its id ("evt_" and a ULID), sent as webhook-id on every attempt.
        id: String,
        /// Its type ("message.status", ...).
        event_type: String,
        /// The JSON body, rendered when the change it reports was committed.
        body: String,
    },
    /// An event for a message's own `callback_url` (the target is the URL's host and port).
    Callback {
        /// Where it is POSTed (the message's callback_url as stored).
        url: String,
        /// Its id ("evt_" and a ULID), sent as webhook-id on every attempt.
        id: String,
        /// Its type ("message.status").
        event_type: String,
        /// The JSON body, rendered when the change it reports was committed.
        body: String,
    },
}

impl OutboxItem {
    /// The event id of a webhook event or callback (its webhook-id); None for SMPP entries.
    pub fn event_id(&self) -> Option<&str> {
        match self {
            OutboxItem::Event { id, .. } | OutboxItem::Callback { id, .. } => Some(id),
            OutboxItem::Receipt { .. } | OutboxItem::Reply { .. } => None,
        }
    }
}

/// An outbox entry given up on (a webhook event not delivered within its endpoint's
/// retry_for), kept for operators to see and replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// What was owed.
    pub item: OutboxItem,
    /// Why the last attempt failed.
    pub reason: String,
    /// When it was given up on.
    pub at: Millis,
}

/// A dead letter as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterEntry {
    /// The outbox target it was owed to.
    pub target: String,
    /// Its key (the outbox key it had, under the dead-letter prefix).
    pub key: OutboxKey,
    /// The entry.
    pub letter: DeadLetter,
}

/// One outbox entry as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Its key, to page on and to pass to [`Store::outbox_done`](super::Store::outbox_done).
    pub key: OutboxKey,
    /// What it carries.
    pub item: OutboxItem,
}

/// How many characters of the text a receipt repeats (SMPP's receipt format has 20).
const TEXT_HEAD_CHARS: usize = 20;

/// The receipt `m` owes its submitter now that it moved from `old` to its status, with the
/// target it goes to; None when it owes none (no origin, not newly final, not asked for).
pub(super) fn receipt_for(old: Option<&Message>, m: &Message) -> Option<(String, OutboxItem)> {
    // Only the move into a final status counts: a final message is never rewritten with a
    // different status, but a rewrite of a final one (none today) must not repeat the receipt.
    if !m.status.is_final() || old.is_some_and(|o| o.status.is_final()) {
        return None;
    }
    let origin = m.origin.as_ref()?;
    if !origin.receipt.wants(m.status) {
        return None;
    }
    let item = OutboxItem::Receipt {
        message_id: m.id,
        status: m.status,
        submitted_at: m.created_at,
        done_at: m.status_since(),
        reason: m.history.last().and_then(|t| t.reason.clone()),
        parts: u8::try_from(m.parts.len()).unwrap_or(u8::MAX),
        text_head: m.text.chars().take(TEXT_HEAD_CHARS).collect(),
        source: origin.source.clone(),
        dest: origin.dest.clone(),
    };
    Some((smpp_target(&origin.account), item))
}

/// The reply entry for a stored inbound message.
pub(super) fn reply_for(m: &InboundMessage) -> OutboxItem {
    OutboxItem::Reply {
        inbound_id: m.id,
        from: m.from.clone(),
        to: m.to.clone(),
        text: m.text.clone(),
        received_at: m.received_at,
        in_reply_to: m.in_reply_to,
    }
}

/// The outbox target of an SMPP server account.
pub fn smpp_target(account: &str) -> String {
    format!("smpp:{account}")
}

/// A consumer's view of one target's outbox: reads it in order, a batch at a time, each entry
/// once; what the consumer gives back goes first again, and what it retries comes back when due
/// (before anything new). The SMPP server's pumps and the webhook workers read through it.
#[derive(Debug)]
pub struct OutboxReader {
    target: String,
    batch: usize,
    cursor: Option<OutboxKey>,
    fresh: std::collections::VecDeque<OutboxEntry>,
    retry: std::collections::BTreeMap<(std::time::Instant, u64), OutboxEntry>,
    serial: u64,
}

impl OutboxReader {
    /// A reader of `target`'s outbox that reads `batch` entries at a time.
    pub fn new(target: &str, batch: usize) -> Self {
        OutboxReader {
            target: target.to_owned(),
            batch: batch.max(1),
            cursor: None,
            fresh: std::collections::VecDeque::new(),
            retry: std::collections::BTreeMap::new(),
            serial: 0,
        }
    }

    /// The next entry to deliver: a retry that is due, else (when `take_new`) the next one not
    /// yet handed out.
    ///
    /// # Errors
    ///
    /// When the outbox cannot be read; nothing is lost, the next call reads again.
    pub fn next(
        &mut self,
        store: &super::Store,
        take_new: bool,
    ) -> Result<Option<OutboxEntry>, super::StoreError> {
        let now = std::time::Instant::now();
        if self
            .retry
            .first_key_value()
            .is_some_and(|((at, _), _)| *at <= now)
        {
            return Ok(self.retry.pop_first().map(|(_, e)| e));
        }
        if !take_new {
            return Ok(None);
        }
        if self.fresh.is_empty() {
            let entries = store.outbox(&self.target, self.cursor.as_ref(), self.batch)?;
            if let Some(last) = entries.last() {
                self.cursor = Some(last.key.clone());
            }
            self.fresh.extend(entries);
        }
        Ok(self.fresh.pop_front())
    }

    /// An entry the consumer could not place now: it is the next one handed out.
    pub fn give_back(&mut self, entry: OutboxEntry) {
        self.fresh.push_front(entry);
    }

    /// An entry to try again after `delay`.
    pub fn retry_after(&mut self, entry: OutboxEntry, delay: std::time::Duration) {
        self.serial += 1;
        self.retry
            .insert((std::time::Instant::now() + delay, self.serial), entry);
    }

    /// When the earliest retry is due.
    pub fn next_retry(&self) -> Option<std::time::Instant> {
        self.retry.first_key_value().map(|((at, _), _)| *at)
    }

    /// Whether retries are waiting.
    pub fn has_retries(&self) -> bool {
        !self.retry.is_empty()
    }
}

/// How many entries wait in a target's outbox, and how many were given up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxDepth {
    /// The target (an SMPP account's or a webhook endpoint's).
    pub target: String,
    /// Entries not yet delivered.
    pub pending: u64,
    /// Dead letters kept for replay.
    pub dead: u64,
}

impl super::Store {
    /// Every target with entries, in name order (reads every key of both keyspaces: for
    /// metrics, which ask every few seconds at most).
    pub fn outbox_depths(&self) -> Result<Vec<OutboxDepth>, super::StoreError> {
        self.readable()?;
        let mut depths: std::collections::BTreeMap<String, OutboxDepth> = Default::default();
        for (space, dead) in [(keys::OUTBOX, false), (keys::DEAD_LETTER, true)] {
            // Keys of one target are adjacent: its name is parsed once per run of them.
            let mut run: Option<(Vec<u8>, u64)> = None;
            let mut close = |run: Option<(Vec<u8>, u64)>| {
                let Some((prefix, n)) = run else { return };
                let Some(target) = keys::target_of(&prefix) else {
                    return;
                };
                let depth = depths.entry(target.clone()).or_insert(OutboxDepth {
                    target,
                    pending: 0,
                    dead: 0,
                });
                if dead {
                    depth.dead += n;
                } else {
                    depth.pending += n;
                }
            };
            for key in self.inner.tree.scan_prefix([space]).keys() {
                let key = key?;
                let Some(end) = key.iter().skip(1).position(|&b| b == 0) else {
                    continue;
                };
                let prefix = &key[..end + 2];
                match &mut run {
                    Some((p, n)) if p.as_slice() == prefix => *n += 1,
                    _ => close(run.replace((prefix.to_vec(), 1))),
                }
            }
            close(run);
        }
        Ok(depths.into_values().collect())
    }
}
