//! Conversations: the record per customer and shop number and the activity index written with
//! each new message and each inbound one, which conversation a customer's message joins,
//! threads in both directions, marking read, the polling listing, old records' keys.

use super::*;
use crate::codec::gsm7::Encoding;
use crate::message::{Kind, now_millis};

const ANNA: &str = "+393471111111";
const BEN: &str = "+393472222222";
const SHOP: &str = "+393400000001";

fn open(dir: &Path) -> Store {
    Store::open(&StoreOptions::new(dir)).unwrap().0
}

fn outgoing(to: &str, text: &str, reference: Option<&str>) -> NewMessage {
    NewMessage {
        to: to.into(),
        from: None,
        text: text.into(),
        kind: Kind::Transactional,
        reference: reference.map(Into::into),
        encoding: Encoding::Gsm7,
        parts: 1,
        send_at: None,
        validity_ms: 3_600_000,
        origin: None,
        options: Default::default(),
    }
}

fn incoming(from: &str, to: &str, text: &str, at: Millis) -> Update {
    Update::Inbound(InboundNew {
        channel: "sim".into(),
        from: from.into(),
        to: to.into(),
        text: text.into(),
        received_at: at,
        in_reply_to: None,
        part: None,
        dedupe: None,
    })
}

async fn send(store: &Store, to: &str, text: &str, reference: Option<&str>) -> MessageId {
    let submitted = store
        .submit(outgoing(to, text, reference), None)
        .await
        .unwrap();
    submitted.message().id
}

async fn receive(store: &Store, from: &str, text: &str, at: Millis) -> MessageId {
    receive_at(store, from, SHOP, text, at).await
}

async fn receive_at(store: &Store, from: &str, to: &str, text: &str, at: Millis) -> MessageId {
    match store
        .apply(vec![incoming(from, to, text, at)])
        .await
        .unwrap()[..]
    {
        [Applied::Inbound(id)] => id,
        ref other => panic!("not stored: {other:?}"),
    }
}

fn activity_entries(store: &Store) -> usize {
    store.inner.tree.scan_prefix([keys::ACTIVITY]).count()
}

#[tokio::test]
async fn a_customer_s_first_message_opens_the_conversation_and_it_keeps_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let long = "x".repeat(100);
    let first = send(&store, ANNA, &long, Some("order-1")).await;
    // Messages to a customer who never wrote keep no record (most never do).
    assert!(store.conversation(ANNA, "").unwrap().is_none());
    assert_eq!(activity_entries(&store), 0);
    let answer = receive(&store, ANNA, "thanks", now_millis()).await;
    let c = store.conversation(ANNA, "").unwrap().unwrap();
    assert_eq!(c.customer, ANNA);
    assert_eq!(c.last_message.direction, Direction::In);
    assert_eq!(c.last_message.id, answer);
    assert_eq!(
        c.reference.as_deref(),
        Some("order-1"),
        "from the message answered"
    );
    assert_eq!(c.unread, 1);
    // From now on the shop's messages are activity too. One without a reference keeps the
    // last one; a new reference replaces it.
    send(&store, ANNA, "no reference", None).await;
    let c = store.conversation(ANNA, "").unwrap().unwrap();
    assert_eq!(c.reference.as_deref(), Some("order-1"));
    assert_eq!(c.last_message.direction, Direction::Out);
    assert_eq!(c.last_message.text, "no reference");
    send(&store, ANNA, "next order", Some("order-2")).await;
    let c = store.conversation(ANNA, "").unwrap().unwrap();
    assert_eq!(c.reference.as_deref(), Some("order-2"));
    assert_eq!(c.last_message.text, "next order");
    let long_reply = send(&store, ANNA, &long, None).await;
    let c = store.conversation(ANNA, "").unwrap().unwrap();
    assert_eq!(c.last_message.id, long_reply);
    assert_eq!(c.last_message.text.chars().count(), TEXT_HEAD_CHARS);
    // Status changes do not rewrite the record.
    let before = store.conversation(ANNA, "").unwrap();
    store.cancel(first).await.unwrap();
    assert_eq!(store.conversation(ANNA, "").unwrap(), before);
    assert_eq!(
        activity_entries(&store),
        1,
        "the index entry moved, not added"
    );
}

#[tokio::test]
async fn inbound_counts_unread_keeps_the_sticky_number_and_reading_clears_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    send(&store, ANNA, "your order shipped", Some("order-7")).await;
    let now = now_millis();
    receive(&store, ANNA, "thanks", now + 1).await;
    let last = receive(&store, ANNA, "when does it arrive?", now + 2).await;
    let c = store.conversation(ANNA, "").unwrap().unwrap();
    assert_eq!(c.unread, 2);
    assert_eq!(c.last_message.direction, Direction::In);
    assert_eq!(c.last_message.id, last);
    assert_eq!(c.last_activity_at, now + 2);
    assert_eq!(c.last_inbound_channel.as_deref(), Some("sim"));
    assert_eq!(c.last_inbound_to.as_deref(), Some(SHOP));
    assert_eq!(c.reference.as_deref(), Some("order-7"));
    assert_eq!(c.last_inbound_id, Some(last));
    // A reader who saw only the first message does not clear the second.
    let seen_first = Some(MessageId(ulid::Ulid::from_parts(0, 1)));
    assert!(store.mark_read(ANNA, "", seen_first).await.unwrap());
    assert_eq!(store.conversation(ANNA, "").unwrap().unwrap().unread, 2);
    assert!(store.mark_read(ANNA, "", Some(last)).await.unwrap());
    assert_eq!(store.conversation(ANNA, "").unwrap().unwrap().unread, 0);
    assert!(
        !store.mark_read(BEN, "", None).await.unwrap(),
        "no conversation"
    );
    assert!(store.conversation(BEN, "").unwrap().is_none());
    // Survives a restart.
    store.close().await;
    drop(store);
    let store = open(dir.path());
    let c = store.conversation(ANNA, "").unwrap().unwrap();
    assert_eq!((c.unread, c.last_message.id), (0, last));
}

#[tokio::test]
async fn conversations_list_latest_activity_first_with_a_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let now = now_millis();
    receive(&store, ANNA, "first", now - 2_000).await;
    receive(&store, BEN, "second", now - 1_000).await;
    let listed: Vec<_> = store
        .list_conversations(None, 10, None)
        .unwrap()
        .into_iter()
        .map(|c| c.customer)
        .collect();
    assert_eq!(listed, [BEN, ANNA]);
    // Anna gets a message now (from the default sender: it joins her latest conversation):
    // she moves to the top, and her old entry is gone.
    send(&store, ANNA, "hello again", Some("order-9")).await;
    let page = store.list_conversations(None, 1, None).unwrap();
    assert_eq!(page[0].customer, ANNA);
    let cursor = ConversationCursor::after(&page[0]);
    let parsed: ConversationCursor = cursor.to_string().parse().unwrap();
    assert_eq!(parsed, cursor);
    assert_eq!(page[0].shop_number, SHOP, "the number Anna wrote to");
    let rest = store.list_conversations(Some(&parsed), 10, None).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].customer, BEN);
    // Found by reference (an order id).
    let found = store.list_conversations(None, 10, Some("order-9")).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].customer, ANNA);
    assert!(
        store
            .list_conversations(None, 10, Some("order-0"))
            .unwrap()
            .is_empty()
    );
    assert_eq!(activity_entries(&store), 2);
    assert!("zz".parse::<ConversationCursor>().is_err());
    assert!("6d00".parse::<ConversationCursor>().is_err());
}

#[tokio::test]
async fn a_thread_merges_both_directions_newest_first_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let now = now_millis();
    let a = send(&store, ANNA, "one", None).await;
    let b = receive(&store, ANNA, "two", now).await;
    let other = receive(&store, BEN, "not Anna's", now).await;
    let c = send(&store, ANNA, "three", None).await;
    let d = receive(&store, ANNA, "four", now).await;
    send(&store, BEN, "not Anna's either", None).await;
    let ids: Vec<_> = store
        .thread(ANNA, None, None, 10)
        .unwrap()
        .iter()
        .map(ThreadItem::id)
        .collect();
    assert_eq!(ids, [d, c, b, a]);
    assert!(!ids.contains(&other));
    let page = store.thread(ANNA, None, None, 3).unwrap();
    let rest = store.thread(ANNA, None, Some(page[2].id()), 3).unwrap();
    assert_eq!(rest.iter().map(ThreadItem::id).collect::<Vec<_>>(), [a]);
    assert!(matches!(&page[0], ThreadItem::In(m) if m.text == "four"));
    assert!(matches!(&page[1], ThreadItem::Out(m) if m.text == "three"));
    // Swept inbound messages leave the customer's index too.
    store.sweep(now_millis() + 60_000, 100).await.unwrap();
    assert!(
        store
            .inner
            .tree
            .scan_prefix([keys::INBOUND_FROM])
            .next()
            .is_none()
    );
}

#[tokio::test]
async fn polling_lists_inbound_after_an_id_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let now = now_millis();
    let a = receive(&store, ANNA, "a", now).await;
    let b = receive(&store, BEN, "b", now).await;
    let c = receive(&store, ANNA, "c", now).await;
    let start = MessageId(ulid::Ulid::from_parts(0, 0));
    let ids = |after, limit| -> Vec<MessageId> {
        store
            .inbound_after(after, limit)
            .unwrap()
            .iter()
            .map(|m| m.id)
            .collect()
    };
    assert_eq!(ids(start, 10), [a, b, c]);
    assert_eq!(ids(a, 1), [b]);
    assert!(ids(c, 10).is_empty());
}

/// A message from the shop with its sender, and the store's answer.
async fn send_from(store: &Store, to: &str, from: &str, text: &str) -> MessageId {
    let mut new = outgoing(to, text, None);
    new.from = Some(from.into());
    store.submit(new, None).await.unwrap().message().id
}

#[tokio::test]
async fn a_conversation_per_shop_number_and_replies_to_a_reply_number_join_the_latest() {
    const SHOP_2: &str = "+393400000002";
    const REPLY_NUMBER: &str = "+393400000099";
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // The shop writes to Anna from two numbers and from an alphanumeric sender.
    let from_1 = send_from(&store, ANNA, SHOP, "order 1 shipped").await;
    let from_2 = send_from(&store, ANNA, SHOP_2, "your table is booked").await;
    let from_name = send_from(&store, ANNA, "ShopName", "50% off today").await;
    let now = now_millis() + 1_000;
    // Anna answers number 1 (an SMSC may write it without the +): conversation 1.
    let a1 = receive_at(&store, ANNA, "393400000001", "thanks", now).await;
    let c1 = store.conversation(ANNA, SHOP).unwrap().unwrap();
    assert_eq!(c1.shop_number, SHOP, "as the shop wrote it");
    assert_eq!(c1.last_message.id, a1);
    let thread_1: Vec<_> = store
        .thread(ANNA, Some(SHOP), None, 10)
        .unwrap()
        .iter()
        .map(ThreadItem::id)
        .collect();
    assert_eq!(thread_1, [a1, from_1]);
    // She answers number 2: conversation 2, not 1.
    let a2 = receive_at(&store, ANNA, SHOP_2, "see you at 8", now + 1).await;
    let thread_2: Vec<_> = store
        .thread(ANNA, Some(SHOP_2), None, 10)
        .unwrap()
        .iter()
        .map(ThreadItem::id)
        .collect();
    assert_eq!(thread_2, [a2, from_2]);
    // She writes to the reply number, which the shop never wrote from: her latest
    // conversation within the window takes it, conversation 2 (her answer there is newer than
    // the alphanumeric sender's message).
    let a3 = receive_at(&store, ANNA, REPLY_NUMBER, "STOP the offers?", now + 2).await;
    let c2 = store.conversation(ANNA, SHOP_2).unwrap().unwrap();
    assert_eq!(c2.last_message.id, a3);
    assert_eq!(c2.unread, 2);
    assert!(store.conversation(ANNA, REPLY_NUMBER).unwrap().is_none());
    // Ben got only the alphanumeric message, then answers the reply number: that
    // conversation, started from the message.
    let offer = send_from(&store, BEN, "ShopName", "50% off today").await;
    let b = receive_at(&store, BEN, REPLY_NUMBER, "which shop?", now + 3).await;
    let cb = store.conversation(BEN, "ShopName").unwrap().unwrap();
    assert_eq!(cb.last_message.id, b);
    let thread_b: Vec<_> = store
        .thread(BEN, Some("ShopName"), None, 10)
        .unwrap()
        .iter()
        .map(ThreadItem::id)
        .collect();
    assert_eq!(thread_b, [b, offer]);
    // Outside the window (a week later) a message to the reply number opens its own.
    let week = crate::store::DEFAULT_REPLY_WINDOW_MS;
    receive_at(&store, BEN, REPLY_NUMBER, "hello?", now + 3 + week + 1).await;
    assert!(store.conversation(BEN, REPLY_NUMBER).unwrap().is_some());
    // Anna's conversations, latest first; the alphanumeric one has no record (she never
    // wrote in it), but its message is in her whole history.
    let mine: Vec<_> = store
        .conversations_of(ANNA)
        .unwrap()
        .into_iter()
        .map(|c| c.shop_number)
        .collect();
    assert_eq!(mine, [SHOP_2, SHOP]);
    let all = store.thread(ANNA, None, None, 10).unwrap();
    assert_eq!(all.len(), 6);
    assert!(all.iter().any(|i| i.id() == from_name));
}

#[tokio::test]
async fn conversations_stored_before_shop_numbers_are_moved_to_the_default_one() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_millis();
    {
        let store = open(dir.path());
        send(&store, ANNA, "order shipped", Some("order-3")).await;
        receive(&store, ANNA, "thanks", now).await;
        let c = store.conversation(ANNA, "").unwrap().unwrap();
        // Rewrite it as the code before shop numbers did: keyed by the customer alone, V3,
        // without the trailing shop number (an empty string: one 0x00 byte).
        let mut old = record::encode(&c);
        assert_eq!(old.pop(), Some(0));
        old[0] = 3;
        let tree = &store.inner.tree;
        tree.remove(keys::conversation(ANNA, "")).unwrap();
        let mut legacy_key = vec![keys::CONVERSATION];
        legacy_key.extend_from_slice(ANNA.as_bytes());
        tree.insert(legacy_key, old).unwrap();
        let activity = keys::activity(c.last_activity_at, ANNA, "");
        tree.remove(&activity).unwrap();
        tree.insert(&activity[..activity.len() - 1], Vec::<u8>::new())
            .unwrap();
        tree.persist().unwrap();
        store.close().await;
    }
    let store = open(dir.path());
    let c = store.conversation(ANNA, "").unwrap().unwrap();
    assert_eq!(c.reference.as_deref(), Some("order-3"));
    assert_eq!(c.unread, 1);
    let listed = store.list_conversations(None, 10, None).unwrap();
    assert_eq!(listed, [c]);
    assert_eq!(activity_entries(&store), 1);
}

#[tokio::test]
async fn after_a_restart_messages_still_join_the_customers_conversations() {
    // The writer skips conversation lookups for customers it knows have none: what it knows
    // must come from the disk at open, not only from what it wrote since.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        send(&store, ANNA, "order shipped", Some("order-1")).await;
        receive(&store, ANNA, "thanks", now_millis()).await;
        store.close().await;
    }
    let store = open(dir.path());
    // Her conversation (with the default sender, which she answered) moves with it.
    let next = send(&store, ANNA, "and your invoice", None).await;
    let c = store.conversation(ANNA, "").unwrap().unwrap();
    assert_eq!(c.last_message.id, next);
    assert_eq!(c.last_message.direction, Direction::Out);
    assert_eq!(c.reference.as_deref(), Some("order-1"));
    // Ben never wrote: still no record for him.
    send(&store, BEN, "order shipped", None).await;
    assert!(store.conversations_of(BEN).unwrap().is_empty());
}
