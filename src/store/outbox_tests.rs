//! Receipts and replies owed to SMPP accounts.

use super::*;
use crate::codec::gsm7::Encoding;
use crate::message::{Kind, Origin, OriginAddress, ReceiptRequest, now_millis};

fn address(addr: &str) -> OriginAddress {
    OriginAddress {
        addr: addr.into(),
        ton: 1,
        npi: 1,
    }
}

fn origin(account: &str, receipt: ReceiptRequest) -> Origin {
    Origin {
        account: account.into(),
        receipt,
        source: address("3900111"),
        dest: address("393471234567"),
    }
}

fn new_message(to: &str, origin: Option<Origin>) -> NewMessage {
    NewMessage {
        to: to.into(),
        from: Some("3900111".into()),
        text: "Your order 1234 has shipped today".into(),
        kind: Kind::Transactional,
        reference: None,
        encoding: Encoding::Gsm7,
        parts: 1,
        send_at: None,
        validity_ms: 3_600_000,
        origin,
    }
}

fn open(dir: &Path) -> Store {
    Store::open(&StoreOptions::new(dir)).unwrap().0
}

async fn submit(store: &Store, account: &str, receipt: ReceiptRequest) -> MessageId {
    let new = new_message("+393471234567", Some(origin(account, receipt)));
    store.submit(new, None).await.unwrap().message().id
}

/// Claims, has the channel accept, then applies a receipt with `outcome`.
async fn settle(store: &Store, id: MessageId, outcome: ReceiptOutcome) {
    assert_eq!(store.claim(vec![id], "smsc".into()).await.unwrap().len(), 1);
    let remote = format!("R{id}");
    store
        .apply(vec![Update::PartAccepted {
            id,
            parts: 0..=0,
            channel: "smsc".into(),
            remote_id: Some(remote.clone()),
            at: now_millis(),
        }])
        .await
        .unwrap();
    let applied = store
        .apply(vec![Update::Receipt {
            channel: "smsc".into(),
            remote_id: remote,
            outcome,
            reason: Some("network says 0x0b".into()),
            at: now_millis(),
        }])
        .await
        .unwrap();
    assert!(matches!(applied[0], Applied::Message { .. }), "{applied:?}");
}

/// The statuses of the receipts owed to `target`, oldest first.
fn receipt_statuses(store: &Store, target: &str) -> Vec<(MessageId, Status)> {
    store
        .outbox(target, None, 100)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.item {
            OutboxItem::Receipt {
                message_id, status, ..
            } => Some((message_id, status)),
            OutboxItem::Reply { .. } => None,
        })
        .collect()
}

#[tokio::test]
async fn a_delivered_message_owes_its_submitter_exactly_one_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let id = submit(&store, "shopA", ReceiptRequest::Final).await;
    assert_eq!(
        store.outbox_len("smpp:shopA").unwrap(),
        0,
        "queued is not final"
    );
    settle(&store, id, ReceiptOutcome::Delivered).await;
    let entries = store.outbox("smpp:shopA", None, 10).unwrap();
    assert_eq!(entries.len(), 1);
    let m = store.get(id).unwrap().unwrap();
    assert_eq!(
        entries[0].item,
        OutboxItem::Receipt {
            message_id: id,
            status: Status::Delivered,
            submitted_at: m.created_at,
            done_at: m.status_since(),
            reason: Some("network says 0x0b".into()),
            parts: 1,
            text_head: "Your order 1234 has ".into(),
            source: address("3900111"),
            dest: address("393471234567"),
        }
    );
    assert!(entries[0].key.id().is_some());
    // The same receipt again changes nothing and owes nothing more.
    let again = store
        .apply(vec![Update::Receipt {
            channel: "smsc".into(),
            remote_id: format!("R{id}"),
            outcome: ReceiptOutcome::Delivered,
            reason: None,
            at: now_millis(),
        }])
        .await
        .unwrap();
    assert!(matches!(again[0], Applied::Ignored(_)), "{again:?}");
    assert_eq!(store.outbox_len("smpp:shopA").unwrap(), 1);
    store.close().await;
}

#[tokio::test]
async fn receipts_follow_what_the_submitter_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let none = submit(&store, "shopA", ReceiptRequest::None).await;
    settle(&store, none, ReceiptOutcome::Delivered).await;
    let without_origin = store
        .submit(new_message("+393471234567", None), None)
        .await
        .unwrap()
        .message()
        .id;
    settle(&store, without_origin, ReceiptOutcome::Failed).await;
    assert_eq!(store.outbox_len("smpp:shopA").unwrap(), 0);

    let delivered = submit(&store, "shopB", ReceiptRequest::FailureOnly).await;
    let failed = submit(&store, "shopB", ReceiptRequest::FailureOnly).await;
    settle(&store, delivered, ReceiptOutcome::Delivered).await;
    settle(&store, failed, ReceiptOutcome::Failed).await;
    assert_eq!(
        receipt_statuses(&store, "smpp:shopB"),
        vec![(failed, Status::Failed)]
    );

    let delivered = submit(&store, "shopC", ReceiptRequest::SuccessOnly).await;
    let failed = submit(&store, "shopC", ReceiptRequest::SuccessOnly).await;
    settle(&store, failed, ReceiptOutcome::Failed).await;
    settle(&store, delivered, ReceiptOutcome::Delivered).await;
    assert_eq!(
        receipt_statuses(&store, "smpp:shopC"),
        vec![(delivered, Status::Delivered)]
    );
    store.close().await;
}

#[tokio::test]
async fn canceled_expired_and_permanently_failed_messages_owe_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let canceled = submit(&store, "shopA", ReceiptRequest::Final).await;
    store.cancel(canceled).await.unwrap();

    let mut short = new_message(
        "+393471234568",
        Some(origin("shopA", ReceiptRequest::Final)),
    );
    short.validity_ms = 1;
    let expired = store.submit(short, None).await.unwrap().message().id;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(store.expire_queued(now_millis(), 10).await.unwrap(), 1);

    let refused = submit(&store, "shopA", ReceiptRequest::Final).await;
    store.claim(vec![refused], "smsc".into()).await.unwrap();
    store
        .apply(vec![Update::SendFailed {
            id: refused,
            reason: "unknown subscriber".into(),
            retry_at: None,
            at: now_millis(),
            not_attempted: false,
            refused_by: None,
        }])
        .await
        .unwrap();

    assert_eq!(
        receipt_statuses(&store, "smpp:shopA"),
        vec![
            (canceled, Status::Canceled),
            (expired, Status::Expired),
            (refused, Status::Failed)
        ]
    );
    let entries = store.outbox("smpp:shopA", None, 10).unwrap();
    let OutboxItem::Receipt { reason, .. } = &entries[2].item else {
        panic!("{entries:?}");
    };
    assert_eq!(reason.as_deref(), Some("unknown subscriber"));
    store.close().await;
}

#[tokio::test]
async fn the_outbox_pages_in_order_keeps_targets_apart_and_forgets_what_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut ids = Vec::new();
    for _ in 0..5 {
        let id = submit(&store, "a", ReceiptRequest::Final).await;
        store.cancel(id).await.unwrap();
        ids.push(id);
    }
    // "smpp:a" is a prefix of "smpp:ab": neither may see the other's entries.
    let other = submit(&store, "ab", ReceiptRequest::Final).await;
    store.cancel(other).await.unwrap();
    assert_eq!(store.outbox_len("smpp:a").unwrap(), 5);
    assert_eq!(store.outbox_len("smpp:ab").unwrap(), 1);
    assert_eq!(store.outbox_len("smpp:").unwrap(), 0);
    assert_eq!(
        receipt_statuses(&store, "smpp:ab"),
        vec![(other, Status::Canceled)]
    );

    let first = store.outbox("smpp:a", None, 2).unwrap();
    let second = store.outbox("smpp:a", Some(&first[1].key), 2).unwrap();
    let third = store.outbox("smpp:a", Some(&second[1].key), 2).unwrap();
    assert_eq!(third.len(), 1);
    let paged: Vec<MessageId> = first
        .iter()
        .chain(&second)
        .chain(&third)
        .filter_map(|e| match e.item {
            OutboxItem::Receipt { message_id, .. } => Some(message_id),
            OutboxItem::Reply { .. } => None,
        })
        .collect();
    assert_eq!(paged, ids);
    assert!(first[0].key < first[1].key && first[0].key.id() < first[1].key.id());
    assert!(
        store
            .outbox("smpp:a", Some(&third[0].key), 2)
            .unwrap()
            .is_empty()
    );
    // A key of another target as `after` never leaks that target's entries.
    let ab = store.outbox("smpp:ab", None, 1).unwrap();
    assert_eq!(
        store.outbox("smpp:a", Some(&ab[0].key), 10).unwrap().len(),
        0
    );
    assert_eq!(
        store
            .outbox("smpp:ab", Some(&first[0].key), 10)
            .unwrap()
            .len(),
        1
    );

    store
        .outbox_done(first.iter().map(|e| e.key.clone()).collect())
        .await
        .unwrap();
    assert_eq!(store.outbox_len("smpp:a").unwrap(), 3);
    assert_eq!(store.outbox("smpp:a", None, 10).unwrap()[0], second[0]);
    // Keys already done are ignored.
    store
        .outbox_done(first.iter().map(|e| e.key.clone()).collect())
        .await
        .unwrap();
    assert_eq!(store.outbox_len("smpp:a").unwrap(), 3);
    store.close().await;
    drop(store);

    // Entries are durable until done.
    let store = open(dir.path());
    assert_eq!(store.outbox_len("smpp:a").unwrap(), 3);
    assert_eq!(store.outbox_len("smpp:ab").unwrap(), 1);
    store.close().await;
}

#[tokio::test]
async fn outbox_changed_fires_once_entries_are_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut changed = store.outbox_changed();
    let id = submit(&store, "shopA", ReceiptRequest::Final).await;
    assert!(!changed.has_changed().unwrap(), "no entry was added");
    store.cancel(id).await.unwrap();
    // Bumped before the write was answered: the entry is readable and durable by now.
    assert!(changed.has_changed().unwrap());
    changed.borrow_and_update();
    assert_eq!(store.outbox_len("smpp:shopA").unwrap(), 1);
    let keys = store
        .outbox("smpp:shopA", None, 10)
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    store.outbox_done(keys).await.unwrap();
    assert!(!changed.has_changed().unwrap(), "deleting adds nothing");
    // A consumer waiting in changed() wakes.
    let waiter = tokio::spawn(async move { changed.changed().await.is_ok() });
    let id = submit(&store, "shopA", ReceiptRequest::Final).await;
    store.cancel(id).await.unwrap();
    let woke = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(woke);
    store.close().await;
}
