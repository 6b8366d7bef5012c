//! Conversations: one thread per customer number and shop number (the number or sender id the
//! shop writes from, "" for a channel's default sender), both directions. The writer keeps a
//! small summary record per conversation (`v`), moved in the activity index (`y`) with every
//! message created in it and every message received in it; status changes do not touch it (the
//! last message's status is read from the message). Inbound messages are indexed by customer
//! (`z`), so a thread is the merge of that index and the recipient index (`t`), filtered by
//! the shop number each message records.

use serde::{Deserialize, Serialize};

use super::{Store, StoreError, keys, record};
use crate::message::{InboundMessage, Message, MessageId, Millis};

/// How many characters of the last message a conversation keeps.
pub const TEXT_HEAD_CHARS: usize = 60;

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// From the shop to the customer.
    Out,
    /// From the customer.
    In,
}

impl Direction {
    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
        }
    }
}

/// The latest message of a conversation, as kept on its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastMessage {
    /// Which way it went.
    pub direction: Direction,
    /// Its id (a message's for "out", an inbound message's for "in").
    pub id: MessageId,
    /// The first [`TEXT_HEAD_CHARS`] characters of its text.
    pub text: String,
}

/// A customer's conversation summary: what a list of threads shows without reading them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// The customer's number (E.164).
    pub customer: String,
    /// When the last message was created or received (the activity index's time).
    pub last_activity_at: Millis,
    /// The latest message either way.
    pub last_message: LastMessage,
    /// Messages received from the customer since the thread was last read.
    pub unread: u32,
    /// The latest non-empty reference (an order id) of a message sent to the customer.
    pub reference: Option<String>,
    /// The customer's latest message (what [`Store::mark_read`] is told was seen).
    pub last_inbound_id: Option<MessageId>,
    /// The channel the customer last wrote on.
    pub last_inbound_channel: Option<String>,
    /// The number or sender id the customer last wrote to: replies go out from it.
    pub last_inbound_to: Option<String>,
    /// The shop's side: the number or sender id it writes from ("" for the channel's default
    /// sender). Last field on purpose (see the store's record format).
    pub shop_number: String,
}

fn head(text: &str) -> String {
    text.chars().take(TEXT_HEAD_CHARS).collect()
}

impl Conversation {
    /// The record after the shop created `m` for the customer (`old`: the record before).
    pub fn outgoing(old: Option<Conversation>, m: &Message) -> Conversation {
        let mut c = old.unwrap_or_else(|| Conversation::empty(&m.to, m.conversation_number()));
        c.last_activity_at = m.created_at;
        c.last_message = LastMessage {
            direction: Direction::Out,
            id: m.id,
            text: head(&m.text),
        };
        if let Some(r) = m.reference.as_deref().filter(|r| !r.is_empty()) {
            c.reference = Some(r.to_owned());
        }
        c
    }

    /// The record after the customer's message `m` was received (`old`: the record before).
    pub fn incoming(old: Option<Conversation>, m: &InboundMessage) -> Conversation {
        let mut c = old.unwrap_or_else(|| Conversation::empty(&m.from, m.conversation_number()));
        c.last_activity_at = m.received_at;
        c.last_message = LastMessage {
            direction: Direction::In,
            id: m.id,
            text: head(&m.text),
        };
        c.unread = c.unread.saturating_add(1);
        c.last_inbound_id = Some(m.id);
        c.last_inbound_channel = Some(m.channel.clone());
        c.last_inbound_to = Some(m.to.clone());
        c
    }

    fn empty(customer: &str, shop_number: &str) -> Conversation {
        Conversation {
            customer: customer.to_owned(),
            shop_number: shop_number.to_owned(),
            last_activity_at: 0,
            last_message: LastMessage {
                direction: Direction::Out,
                id: MessageId::from_bytes([0; 16]),
                text: String::new(),
            },
            unread: 0,
            reference: None,
            last_inbound_id: None,
            last_inbound_channel: None,
            last_inbound_to: None,
        }
    }

    /// Whether `shop` (as a message records it) is this conversation's shop number.
    pub fn is_shop(&self, shop: &str) -> bool {
        keys::shop_key(&self.shop_number) == keys::shop_key(shop)
    }
}

/// A place in the list of conversations: the activity index key of the last one shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationCursor(Vec<u8>);

impl ConversationCursor {
    /// The cursor after `c` in the list.
    pub fn after(c: &Conversation) -> Self {
        ConversationCursor(keys::activity(
            c.last_activity_at,
            &c.customer,
            &c.shop_number,
        ))
    }
}

impl std::fmt::Display for ConversationCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ConversationCursor {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        if !s.len().is_multiple_of(2) || s.len() > 512 || !s.is_ascii() {
            return Err(());
        }
        let bytes = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| ()))
            .collect::<Result<Vec<u8>, ()>>()?;
        if bytes.first() != Some(&keys::ACTIVITY) || bytes.len() < 10 {
            return Err(());
        }
        Ok(ConversationCursor(bytes))
    }
}

/// One message of a thread.
// Listed and shown once: boxing the message would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ThreadItem {
    /// A message to the customer.
    Out(Message),
    /// A message from the customer.
    In(InboundMessage),
}

impl ThreadItem {
    /// The shop number of its conversation.
    pub fn conversation_number(&self) -> &str {
        match self {
            ThreadItem::Out(m) => m.conversation_number(),
            ThreadItem::In(m) => m.conversation_number(),
        }
    }

    /// Its id; ids of both kinds come from one generator, so they sort by time together.
    pub fn id(&self) -> MessageId {
        match self {
            ThreadItem::Out(m) => m.id,
            ThreadItem::In(m) => m.id,
        }
    }
}

impl Store {
    /// The conversation between the customer and a shop number, if there is one.
    pub fn conversation(
        &self,
        customer: &str,
        shop: &str,
    ) -> Result<Option<Conversation>, StoreError> {
        self.readable()?;
        let key = keys::conversation(customer, shop);
        match self.inner.tree.get(&key)? {
            Some(v) => record::decode_conversation(&key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// The customer's conversations (one per shop number they exchanged messages with),
    /// latest activity first.
    pub fn conversations_of(&self, customer: &str) -> Result<Vec<Conversation>, StoreError> {
        self.readable()?;
        let mut out = scan_conversations(&self.inner.tree, customer)?;
        out.sort_by_key(|c| std::cmp::Reverse(c.last_activity_at));
        Ok(out)
    }

    /// Up to `limit` conversations, latest activity first, after `cursor` when given; only
    /// those whose latest reference is `reference` when given.
    pub fn list_conversations(
        &self,
        cursor: Option<&ConversationCursor>,
        limit: usize,
        reference: Option<&str>,
    ) -> Result<Vec<Conversation>, StoreError> {
        self.readable()?;
        let start = vec![keys::ACTIVITY];
        let end = match cursor {
            Some(c) => c.0.clone(),
            None => vec![keys::ACTIVITY + 1],
        };
        let mut out = Vec::with_capacity(limit.min(1000));
        for key in self.inner.tree.range(start..end).keys().rev() {
            if out.len() >= limit {
                break;
            }
            let Some((customer, shop)) = keys::activity_conversation(&key?) else {
                continue;
            };
            if let Some(c) = self.conversation(&customer, &shop)?
                && reference.is_none_or(|r| c.reference.as_deref() == Some(r))
            {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Up to `limit` messages exchanged with the customer, both directions, newest first,
    /// strictly older than `before` when given: those of the conversation with shop number
    /// `shop` when given, else all of the customer's.
    pub fn thread(
        &self,
        customer: &str,
        shop: Option<&str>,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<ThreadItem>, StoreError> {
        self.readable()?;
        let range = |prefix: Vec<u8>| {
            let mut end = prefix.clone();
            match before {
                Some(id) => end.extend_from_slice(&id.to_bytes()),
                None => end.extend_from_slice(&[0xff; 17]),
            }
            self.inner.tree.range(prefix..end).keys().rev()
        };
        let mut outgoing = range(keys::recipient_prefix(customer)).peekable();
        let mut incoming = range(keys::inbound_from_prefix(customer)).peekable();
        let id_of = |k: &Result<super::engine::Bytes, StoreError>| {
            k.as_ref().ok().and_then(|k| keys::id_suffix(k))
        };
        let mut out = Vec::with_capacity(limit.min(1000));
        while out.len() < limit {
            let take_out = match (outgoing.peek(), incoming.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(o), Some(i)) => id_of(o) >= id_of(i),
            };
            let next = if take_out {
                outgoing.next()
            } else {
                incoming.next()
            };
            let Some(key) = next else { break };
            let Some(id) = keys::id_suffix(&key?) else {
                continue;
            };
            let item = if take_out {
                self.get(id)?.map(ThreadItem::Out)
            } else {
                let key = keys::inbound(id);
                match self.inner.tree.get(&key)? {
                    Some(v) => Some(ThreadItem::In(record::decode_inbound(&key, &v)?)),
                    None => None,
                }
            };
            let wanted = |item: &ThreadItem| {
                shop.is_none_or(|s| keys::shop_key(item.conversation_number()) == keys::shop_key(s))
            };
            if let Some(item) = item.filter(wanted) {
                out.push(item);
            }
        }
        Ok(out)
    }

    /// Up to `limit` inbound messages stored after `after` (an id; ids follow the time they
    /// were stored), oldest first: for integrators that poll.
    pub fn inbound_after(
        &self,
        after: MessageId,
        limit: usize,
    ) -> Result<Vec<InboundMessage>, StoreError> {
        use std::ops::Bound;
        self.readable()?;
        let start = Bound::Excluded(keys::inbound(after));
        let end = Bound::Excluded(vec![keys::INBOUND + 1]);
        let mut out = Vec::with_capacity(limit.min(1000));
        for item in self.inner.tree.range((start, end)).take(limit) {
            let (key, value) = item?;
            out.push(record::decode_inbound(&key, &value)?);
        }
        Ok(out)
    }

    /// Marks a conversation read (no unread messages), durably, when `seen` (the
    /// conversation's `last_inbound_id` as the reader saw it) is still the customer's latest
    /// message in it: one that came in meanwhile stays unread. False when there is no such
    /// conversation.
    pub async fn mark_read(
        &self,
        customer: &str,
        shop: &str,
        seen: Option<MessageId>,
    ) -> Result<bool, StoreError> {
        let customer = customer.to_owned();
        let shop = shop.to_owned();
        self.call(|reply| super::writer::Op::MarkRead {
            customer,
            shop,
            seen,
            reply,
        })
        .await
    }
}

/// The customer's conversation records as committed, in key order.
pub(super) fn scan_conversations(
    tree: &super::engine::Engine,
    customer: &str,
) -> Result<Vec<Conversation>, StoreError> {
    let mut out = Vec::new();
    for item in tree.scan_prefix(keys::conversations_of(customer)) {
        let (key, value) = item?;
        out.push(record::decode_conversation(&key, &value)?);
    }
    Ok(out)
}

/// Moves conversation records and activity entries written before conversations had shop
/// numbers (keyed by customer alone) to their keys under the default shop number "". Runs at
/// open, before the writer starts; a crash in between leaves keys it redoes next time.
pub(super) fn migrate_keys(tree: &super::engine::Engine) -> Result<usize, StoreError> {
    let mut batch = Vec::new();
    let mut moved = 0;
    for item in tree.scan_prefix([keys::CONVERSATION]) {
        let (key, value) = item?;
        if key.contains(&0) {
            continue;
        }
        let c = record::decode_conversation(&key, &value)?;
        batch.push((key.to_vec(), None));
        batch.push((
            keys::conversation(&c.customer, &c.shop_number),
            Some(record::encode(&c)),
        ));
        moved += 1;
    }
    for key in tree.scan_prefix([keys::ACTIVITY]).keys() {
        let key = key?;
        if key.get(9..).is_some_and(|rest| !rest.contains(&0)) {
            let mut new = key.to_vec();
            new.push(0);
            batch.push((key.to_vec(), None));
            batch.push((new, Some(Vec::new())));
            moved += 1;
        }
    }
    if moved > 0 {
        tree.apply(batch)?;
        tree.persist()?;
        tracing::info!(
            keys = moved,
            "conversation records moved to their shop-number keys"
        );
    }
    Ok(moved)
}
