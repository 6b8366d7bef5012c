//! Conversations: the per-customer record and activity index written with each new message and
//! each inbound one, threads in both directions, marking read, the polling listing.

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
    }
}

fn incoming(from: &str, text: &str, at: Millis) -> Update {
    Update::Inbound(InboundNew {
        channel: "sim".into(),
        from: from.into(),
        to: SHOP.into(),
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
    match store.apply(vec![incoming(from, text, at)]).await.unwrap()[..] {
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
    assert!(store.conversation(ANNA).unwrap().is_none());
    assert_eq!(activity_entries(&store), 0);
    let answer = receive(&store, ANNA, "thanks", now_millis()).await;
    let c = store.conversation(ANNA).unwrap().unwrap();
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
    let c = store.conversation(ANNA).unwrap().unwrap();
    assert_eq!(c.reference.as_deref(), Some("order-1"));
    assert_eq!(c.last_message.direction, Direction::Out);
    assert_eq!(c.last_message.text, "no reference");
    send(&store, ANNA, "next order", Some("order-2")).await;
    let c = store.conversation(ANNA).unwrap().unwrap();
    assert_eq!(c.reference.as_deref(), Some("order-2"));
    assert_eq!(c.last_message.text, "next order");
    let long_reply = send(&store, ANNA, &long, None).await;
    let c = store.conversation(ANNA).unwrap().unwrap();
    assert_eq!(c.last_message.id, long_reply);
    assert_eq!(c.last_message.text.chars().count(), TEXT_HEAD_CHARS);
    // Status changes do not rewrite the record.
    let before = store.conversation(ANNA).unwrap();
    store.cancel(first).await.unwrap();
    assert_eq!(store.conversation(ANNA).unwrap(), before);
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
    let c = store.conversation(ANNA).unwrap().unwrap();
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
    assert!(store.mark_read(ANNA, seen_first).await.unwrap());
    assert_eq!(store.conversation(ANNA).unwrap().unwrap().unread, 2);
    assert!(store.mark_read(ANNA, Some(last)).await.unwrap());
    assert_eq!(store.conversation(ANNA).unwrap().unwrap().unread, 0);
    assert!(
        !store.mark_read(BEN, None).await.unwrap(),
        "no conversation"
    );
    assert!(store.conversation(BEN).unwrap().is_none());
    // Survives a restart.
    store.close().await;
    drop(store);
    let store = open(dir.path());
    let c = store.conversation(ANNA).unwrap().unwrap();
    assert_eq!((c.unread, c.last_message.id), (0, last));
}

#[tokio::test]
async fn conversations_list_latest_activity_first_with_a_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    receive(&store, ANNA, "first", 1_000).await;
    receive(&store, BEN, "second", 2_000).await;
    let listed: Vec<_> = store
        .list_conversations(None, 10)
        .unwrap()
        .into_iter()
        .map(|c| c.customer)
        .collect();
    assert_eq!(listed, [BEN, ANNA]);
    // Anna gets a message now: she moves to the top, and her old entry is gone.
    send(&store, ANNA, "hello again", None).await;
    let page = store.list_conversations(None, 1).unwrap();
    assert_eq!(page[0].customer, ANNA);
    let cursor = ConversationCursor::after(&page[0]);
    let parsed: ConversationCursor = cursor.to_string().parse().unwrap();
    assert_eq!(parsed, cursor);
    let rest = store.list_conversations(Some(&parsed), 10).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].customer, BEN);
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
        .thread(ANNA, None, 10)
        .unwrap()
        .iter()
        .map(ThreadItem::id)
        .collect();
    assert_eq!(ids, [d, c, b, a]);
    assert!(!ids.contains(&other));
    let page = store.thread(ANNA, None, 3).unwrap();
    let rest = store.thread(ANNA, Some(page[2].id()), 3).unwrap();
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
