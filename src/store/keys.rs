//! Key layout of the one ordered key space ([`super::engine`]). Every key starts with a one-byte
//! prefix naming its index; one atomic batch updates a record and all its indexes. The engine
//! keeps the keys of each prefix in a tree of their own (most prefixes are written in time
//! order, and apart they compact without rewriting each other).
//!
//! | prefix | key                                   | value                          |
//! |--------|---------------------------------------|--------------------------------|
//! | `m`    | id                                    | encoded [`Message`]            |
//! | `d`    | lane (BE u16) + due millis (BE) + id  | empty: the queue, while queued (per route lane) |
//! | `s`    | status code + id                      | empty: listing by status (not sent, delivered) |
//! | `t`    | recipient + 0x00 + id                 | empty: listing by recipient    |
//! | `f`    | settled millis (BE) + id              | empty: the retention sweep     |
//! | `k`    | scope + 0x00 + idempotency key        | id                             |
//! | `r`    | channel + 0x00 + normalized remote id | id + part indexes (1 or more)  |
//! | `p`    | channel + 0x00 + normalized remote id | encoded early receipt          |
//! | `i`    | id                                    | encoded [`InboundMessage`]     |
//! | `u`    | channel + 0 + fingerprint             | received millis (BE): seen inbound, for dedupe |
//! | `a`    | channel + 0 + from + 0 + ref (BE) + total | encoded parts of an inbound message being reassembled |
//! | `b`    | scope + 0 + source + 0 + dest + 0 + ref (BE u16) + total | encoded parts of an SMPP multi-part submit being reassembled |
//! | `o`    | target + 0x00 + entry id              | encoded [`OutboxItem`]: a receipt, reply or webhook event owed to the target |
//! | `w`    | target + 0x00 + entry id              | encoded [`DeadLetter`]: an outbox entry given up on |
//! | `x`    | customer number (E.164)               | encoded [`OptOut`]: the suppression list, in number order |
//! | `v`    | customer number + 0x00 + shop number  | encoded [`Conversation`]: a thread's summary |
//! | `y`    | last activity millis (BE) + customer + 0x00 + shop number | empty: conversations by latest activity |
//! | `z`    | customer + 0x00 + id                  | empty: inbound messages by customer |
//! | `c`    | counter name                          | u64 BE                         |
//!
//! [`Message`]: crate::message::Message
//! [`InboundMessage`]: crate::message::InboundMessage
//! [`DeadLetter`]: super::outbox::DeadLetter
//! [`OutboxItem`]: super::OutboxItem
//! [`OptOut`]: crate::optout::OptOut
//! [`Conversation`]: super::Conversation
//!
//! Names inside keys (channels, targets, addresses) end with 0x00 so one name never matches as
//! the prefix of another ("smpp:a" vs "smpp:ab"); they must not contain 0x00 themselves (SMPP
//! strings cannot).

use crate::message::{MessageId, Millis, Status};
use crate::route::Lane;

pub const MESSAGE: u8 = b'm';
pub const DUE: u8 = b'd';
pub const STATUS: u8 = b's';
pub const RECIPIENT: u8 = b't';
pub const FINISHED: u8 = b'f';
pub const IDEMPOTENCY: u8 = b'k';
pub const REMOTE: u8 = b'r';
pub const EARLY_RECEIPT: u8 = b'p';
pub const INBOUND: u8 = b'i';
pub const COUNTER: u8 = b'c';
pub const ASSEMBLY: u8 = b'a';
pub const SEEN: u8 = b'u';
pub const SUBMIT_ASSEMBLY: u8 = b'b';
pub const OUTBOX: u8 = b'o';
pub const DEAD_LETTER: u8 = b'w';
pub const OPTOUT: u8 = b'x';
pub const CONVERSATION: u8 = b'v';
pub const ACTIVITY: u8 = b'y';
pub const INBOUND_FROM: u8 = b'z';

/// Counter holding the fingerprint of the routes the queue's lanes were filed under.
pub const ROUTES_FINGERPRINT: &[u8] = b"routes_fingerprint";
/// Counter of messages requeued after a crash left them "sending".
pub const POSSIBLE_DUPLICATES: &[u8] = b"possible_duplicates";
/// Counter names of the messages in each status, followed by the status code: written with
/// every group that changes them, so the store knows its counts at open without a scan.
pub const STATUS_COUNT: &[u8] = b"status_count/";

/// The counter of the messages in `status`.
pub fn status_count(status: Status) -> Vec<u8> {
    let mut name = STATUS_COUNT.to_vec();
    name.push(status.code());
    counter(&name)
}

/// Millis as big-endian bytes that sort like the numbers (negative times clamp to 0).
fn time_bytes(ms: Millis) -> [u8; 8] {
    u64::try_from(ms).unwrap_or(0).to_be_bytes()
}

pub fn message(id: MessageId) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(MESSAGE);
    k.extend_from_slice(&id.to_bytes());
    k
}

pub fn inbound(id: MessageId) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(INBOUND);
    k.extend_from_slice(&id.to_bytes());
    k
}

fn timed(prefix: u8, at: Millis, id: MessageId) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.push(prefix);
    k.extend_from_slice(&time_bytes(at));
    k.extend_from_slice(&id.to_bytes());
    k
}

/// A queued message's entry in its lane of the queue ([`crate::route`]).
pub fn due(lane: Lane, at: Millis, id: MessageId) -> Vec<u8> {
    let mut k = Vec::with_capacity(27);
    k.push(DUE);
    k.extend_from_slice(&lane.to_be_bytes());
    k.extend_from_slice(&time_bytes(at));
    k.extend_from_slice(&id.to_bytes());
    k
}

/// The keys of `lane`'s entries due at or before `at`.
pub fn due_range(lane: Lane, at: Millis) -> std::ops::Range<Vec<u8>> {
    let mut start = vec![DUE];
    start.extend_from_slice(&lane.to_be_bytes());
    let mut end = start.clone();
    end.extend_from_slice(&time_bytes(at.saturating_add(1)));
    start..end
}

/// The prefix of `lane`'s entries.
pub fn due_lane(lane: Lane) -> Vec<u8> {
    let mut k = vec![DUE];
    k.extend_from_slice(&lane.to_be_bytes());
    k
}

/// The first key after every entry of `lane`.
pub fn due_lane_end(lane: Lane) -> Vec<u8> {
    match lane.checked_add(1) {
        Some(next) => due_lane(next),
        None => vec![DUE + 1],
    }
}

/// The lane of a due entry.
pub fn due_lane_of(key: &[u8]) -> Option<Lane> {
    if key.first() != Some(&DUE) {
        return None;
    }
    key.get(1..3)
        .and_then(|b| <[u8; 2]>::try_from(b).ok())
        .map(Lane::from_be_bytes)
}

/// The due time of a due entry.
pub fn due_time(key: &[u8]) -> Option<Millis> {
    key.get(3..11)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .and_then(|v| Millis::try_from(v).ok())
}

pub fn finished(at: Millis, id: MessageId) -> Vec<u8> {
    timed(FINISHED, at, id)
}

pub fn finished_upper_bound(at: Millis) -> Vec<u8> {
    let mut k = vec![FINISHED];
    k.extend_from_slice(&time_bytes(at));
    k
}

/// Whether messages in `status` have an entry in the status index. Sent and delivered, the
/// statuses of nearly every message once it went out, have none: their entries cost 3 of about
/// 16 writes per message (an insert and a delete at each step), while a listing of them finds
/// its page among the newest messages anyway. The rest are rare or short-lived, and recovery and
/// operators look for them: queued, sending, failed, expired, canceled.
pub fn status_indexed(status: Status) -> bool {
    !matches!(status, Status::Sent | Status::Delivered)
}

/// Counter set once the status entries of sent and delivered messages, written by earlier
/// versions, are removed.
pub const STATUS_INDEX_TRIMMED: &[u8] = b"status_index_trimmed";

pub fn status(status: Status, id: MessageId) -> Vec<u8> {
    let mut k = status_prefix(status);
    k.extend_from_slice(&id.to_bytes());
    k
}

pub fn status_prefix(status: Status) -> Vec<u8> {
    vec![STATUS, status.code()]
}

pub fn recipient(to: &str, id: MessageId) -> Vec<u8> {
    let mut k = recipient_prefix(to);
    k.extend_from_slice(&id.to_bytes());
    k
}

pub fn recipient_prefix(to: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(to.len() + 18);
    k.push(RECIPIENT);
    k.extend_from_slice(to.as_bytes());
    k.push(0);
    k
}

fn named(prefix: u8, scope: &str, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(scope.len() + name.len() + 2);
    k.push(prefix);
    k.extend_from_slice(scope.as_bytes());
    k.push(0);
    k.extend_from_slice(name);
    k
}

pub fn idempotency(scope: &str, key: &str) -> Vec<u8> {
    named(IDEMPOTENCY, scope, key.as_bytes())
}

pub fn remote(channel: &str, remote_id: &str) -> Vec<u8> {
    named(REMOTE, channel, normalize_remote_id(remote_id).as_bytes())
}

pub fn early_receipt(channel: &str, remote_id: &str) -> Vec<u8> {
    named(
        EARLY_RECEIPT,
        channel,
        normalize_remote_id(remote_id).as_bytes(),
    )
}

pub fn assembly(channel: &str, from: &str, reference: u16, total: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(channel.len() + from.len() + 6);
    k.push(ASSEMBLY);
    k.extend_from_slice(channel.as_bytes());
    k.push(0);
    k.extend_from_slice(from.as_bytes());
    k.push(0);
    k.extend_from_slice(&reference.to_be_bytes());
    k.push(total);
    k
}

/// The assembly of an SMPP client's multi-part submit: per account (`scope`), source,
/// destination and the client's reference and part count.
pub fn submit_assembly(
    scope: &str,
    source: &str,
    dest: &str,
    reference: u16,
    total: u8,
) -> Vec<u8> {
    let mut k = Vec::with_capacity(scope.len() + source.len() + dest.len() + 7);
    k.push(SUBMIT_ASSEMBLY);
    for name in [scope, source, dest] {
        k.extend_from_slice(name.as_bytes());
        k.push(0);
    }
    k.extend_from_slice(&reference.to_be_bytes());
    k.push(total);
    k
}

/// An outbox entry of `target`; ids are time-ordered, so the target's entries sort oldest first.
pub fn outbox(target: &str, id: MessageId) -> Vec<u8> {
    named(OUTBOX, target, &id.to_bytes())
}

/// An outbox entry's key moved under the dead-letter prefix (same target and id).
pub fn dead_letter_of(outbox_key: &[u8]) -> Vec<u8> {
    let mut k = outbox_key.to_vec();
    if let Some(first) = k.first_mut() {
        *first = DEAD_LETTER;
    }
    k
}

/// The target named in an outbox or dead-letter key.
pub fn target_of(key: &[u8]) -> Option<String> {
    let rest = key.get(1..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    String::from_utf8(rest.get(..end)?.to_vec()).ok()
}

/// The prefix of every outbox entry of `target` (its name and the 0x00 after it).
pub fn outbox_prefix(target: &str) -> Vec<u8> {
    named(OUTBOX, target, &[])
}

/// A customer's entry on the suppression list. Numbers are whole keys (no 0x00 after them):
/// entries are only read by exact number or listed in order.
pub fn optout(number: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(number.len() + 1);
    k.push(OPTOUT);
    k.extend_from_slice(number.as_bytes());
    k
}

/// The record of the conversation between a customer and a shop number, written as
/// [`shop_key`] gives it ("" for the channel's default sender).
pub fn conversation(customer: &str, shop: &str) -> Vec<u8> {
    named(CONVERSATION, customer, shop_key(shop).as_bytes())
}

/// The prefix of a customer's conversation records.
pub fn conversations_of(customer: &str) -> Vec<u8> {
    named(CONVERSATION, customer, &[])
}

/// A shop number as conversation keys hold it: "+393400000001" and "393400000001" (how SMPP
/// peers often write a destination) are one number.
pub fn shop_key(shop: &str) -> &str {
    crate::route::without_plus(shop)
}

/// A conversation's entry in the activity index: sorts by time, then customer, then shop
/// number.
pub fn activity(at: Millis, customer: &str, shop: &str) -> Vec<u8> {
    let shop = shop_key(shop);
    let mut k = Vec::with_capacity(customer.len() + shop.len() + 10);
    k.push(ACTIVITY);
    k.extend_from_slice(&time_bytes(at));
    k.extend_from_slice(customer.as_bytes());
    k.push(0);
    k.extend_from_slice(shop.as_bytes());
    k
}

/// The customer and shop number (as [`shop_key`] writes it) named in an activity key.
pub fn activity_conversation(key: &[u8]) -> Option<(String, String)> {
    let rest = std::str::from_utf8(key.get(9..)?).ok()?;
    let (customer, shop) = rest.split_once('\0')?;
    Some((customer.to_owned(), shop.to_owned()))
}

/// An inbound message's entry in its customer's index.
pub fn inbound_from(from: &str, id: MessageId) -> Vec<u8> {
    let mut k = inbound_from_prefix(from);
    k.extend_from_slice(&id.to_bytes());
    k
}

pub fn inbound_from_prefix(from: &str) -> Vec<u8> {
    named(INBOUND_FROM, from, &[])
}

pub fn seen(channel: &str, fingerprint: &str) -> Vec<u8> {
    named(SEEN, channel, fingerprint.as_bytes())
}

pub fn counter(name: &[u8]) -> Vec<u8> {
    let mut k = vec![COUNTER];
    k.extend_from_slice(name);
    k
}

/// The trailing 16 id bytes of an index key.
pub fn id_suffix(key: &[u8]) -> Option<MessageId> {
    let start = key.len().checked_sub(16)?;
    let bytes: [u8; 16] = key.get(start..)?.try_into().ok()?;
    Some(MessageId::from_bytes(bytes))
}

/// Remote ids are compared case-insensitively and without leading zeros, because SMSCs report the
/// same id as "0A1b" in one PDU and "a1B" in another (one definition, shared with the receipt
/// codec's id matching).
pub fn normalize_remote_id(remote_id: &str) -> String {
    crate::codec::receipt::normalize_id(remote_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_ids_match_across_case_and_leading_zeros() {
        assert_eq!(normalize_remote_id("000A1b"), normalize_remote_id("a1B"));
        assert_eq!(normalize_remote_id("000"), "0");
        assert_ne!(normalize_remote_id("10"), normalize_remote_id("1"));
    }

    #[test]
    fn outbox_keys_of_one_target_never_fall_under_a_longer_or_shorter_name() {
        let id = MessageId(ulid::Ulid::from_parts(5, 1));
        assert!(outbox("smpp:a", id).starts_with(&outbox_prefix("smpp:a")));
        assert!(!outbox("smpp:ab", id).starts_with(&outbox_prefix("smpp:a")));
        assert!(!outbox("smpp:a", id).starts_with(&outbox_prefix("smpp:ab")));
        assert_eq!(id_suffix(&outbox("smpp:a", id)), Some(id));
        assert_ne!(
            submit_assembly("smpp:a", "1", "23", 7, 2),
            submit_assembly("smpp:a", "12", "3", 7, 2)
        );
    }

    #[test]
    fn activity_keys_sort_by_time_and_name_their_conversation() {
        assert!(activity(99, "+49", "") < activity(100, "+39", ""));
        assert_eq!(
            activity_conversation(&activity(7, "+393471234567", "+393400000001")),
            Some(("+393471234567".into(), "393400000001".into()))
        );
        assert_eq!(
            activity_conversation(&activity(7, "+393471234567", "")),
            Some(("+393471234567".into(), String::new()))
        );
        // One number, however the shop or the SMSC writes it.
        assert_eq!(
            conversation("+391", "+393400000001"),
            conversation("+391", "393400000001")
        );
        assert!(conversation("+391", "Shop").starts_with(&conversations_of("+391")));
        assert!(!conversation("+3912", "Shop").starts_with(&conversations_of("+391")));
        let id = MessageId(ulid::Ulid::from_parts(5, 1));
        assert!(inbound_from("+391", id).starts_with(&inbound_from_prefix("+391")));
        assert!(!inbound_from("+3912", id).starts_with(&inbound_from_prefix("+391")));
        assert_eq!(id_suffix(&inbound_from("+391", id)), Some(id));
    }

    #[test]
    fn due_keys_sort_by_lane_then_time_then_id() {
        let a = MessageId(ulid::Ulid::from_parts(5, 1));
        let b = MessageId(ulid::Ulid::from_parts(1, 2));
        assert!(due(0, 100, a) < due(0, 200, b));
        assert!(due(0, 200, b) < due(1, 100, a));
        let range = due_range(1, 200);
        assert!(range.contains(&due(1, 200, b)));
        assert!(range.contains(&due(1, 0, a)));
        assert!(!range.contains(&due(1, 201, b)));
        assert!(!range.contains(&due(0, 100, b)));
        assert!(!range.contains(&due(2, 100, b)));
        assert!(due(1, 7, a).starts_with(&due_lane(1)));
        assert_eq!(id_suffix(&due(3, 7, a)), Some(a));
        assert_eq!(due_time(&due(3, 7, a)), Some(7));
    }
}
