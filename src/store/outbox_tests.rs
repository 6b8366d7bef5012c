//! Receipts and replies owed to SMPP accounts, and SMPP multi-part submits.

use super::*;
use crate::codec::gsm7::Encoding;
use crate::message::{Kind, Origin, OriginAddress, ReceiptRequest, now_millis};
use crate::route::ReplyAccount;

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
        options: Default::default(),
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
            OutboxItem::Reply { .. } | OutboxItem::Event { .. } | OutboxItem::Callback { .. } => {
                None
            }
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
            maybe_sent: false,
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
    let depth = |target: &str, pending| super::OutboxDepth {
        target: target.into(),
        pending,
        dead: 0,
    };
    assert_eq!(
        store.outbox_depths().unwrap(),
        [depth("smpp:a", 5), depth("smpp:ab", 1)]
    );
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
            OutboxItem::Reply { .. } | OutboxItem::Event { .. } | OutboxItem::Callback { .. } => {
                None
            }
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

fn part(reference: u16, total: u8, seq: u8, text: &str, new: &NewMessage) -> SubmitPart {
    SubmitPart {
        scope: smpp_target("shopA"),
        source: "3900111".into(),
        reference,
        total,
        seq,
        text: text.into(),
        message: new.clone(),
    }
}

#[tokio::test]
async fn multi_part_submits_become_one_message_under_the_id_every_part_was_given() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let new = new_message(
        "+393471234567",
        Some(origin("shopA", ReceiptRequest::Final)),
    );
    let (a, b, c) = ("a".repeat(153), "b".repeat(153), "c".repeat(100));
    let PartSubmitted::Kept(id) = store.submit_part(part(7, 3, 3, &c, &new)).await.unwrap() else {
        panic!("one part of three");
    };
    let second = store.submit_part(part(7, 3, 1, &a, &new)).await.unwrap();
    assert!(matches!(second, PartSubmitted::Kept(same) if same == id));
    // A resent part (its response was lost) gets the same id and keeps its first text.
    let resent = store
        .submit_part(part(7, 3, 1, "changed", &new))
        .await
        .unwrap();
    assert!(matches!(resent, PartSubmitted::Kept(same) if same == id));
    // Same reference to another recipient: another message.
    let elsewhere = new_message("+393471234599", None);
    let other = store
        .submit_part(part(7, 3, 1, &a, &elsewhere))
        .await
        .unwrap();
    assert_ne!(other.id(), id);
    assert!(store.get(id).unwrap().is_none(), "not a message yet");

    let PartSubmitted::Complete(m) = store.submit_part(part(7, 3, 2, &b, &new)).await.unwrap()
    else {
        panic!("the last part completes it");
    };
    assert_eq!(m.id, id);
    assert_eq!(m.text, format!("{a}{b}{c}"));
    assert_eq!(m.encoding, Encoding::Gsm7);
    assert_eq!(m.parts.len(), 3);
    assert_eq!(m.status, Status::Queued);
    assert_eq!(m.origin, new.origin);
    assert_eq!(store.get(id).unwrap().unwrap(), m);
    assert_eq!(store.due(&[0], now_millis(), 10).unwrap(), vec![id]);
    // The assembly is gone: only the other recipient's is left to expire.
    assert_eq!(
        store
            .expire_submit_assemblies(now_millis() + 1, 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.get(id).unwrap().unwrap().status, Status::Queued);
    store.close().await;
}

#[tokio::test]
async fn impossible_part_numbers_are_refused_and_nothing_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let new = new_message("+393471234567", None);
    for (total, seq) in [(3, 0), (3, 4), (1, 1), (0, 0)] {
        let refused = store.submit_part(part(1, total, seq, "x", &new)).await;
        assert!(
            matches!(refused, Err(StoreError::InvalidPart(_))),
            "{total}/{seq}: {refused:?}"
        );
    }
    assert_eq!(
        store
            .expire_submit_assemblies(now_millis() + 1, 10)
            .await
            .unwrap(),
        0
    );
    store.close().await;
}

#[tokio::test]
async fn a_multi_part_submit_that_never_completes_fails_with_a_receipt_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let asked = new_message(
        "+393471234567",
        Some(origin("shopA", ReceiptRequest::Final)),
    );
    let silent = new_message("+393471234568", Some(origin("shopA", ReceiptRequest::None)));
    let id = store
        .submit_part(part(9, 3, 1, "Hello ", &asked))
        .await
        .unwrap()
        .id();
    let quiet = store
        .submit_part(part(9, 2, 2, "there", &silent))
        .await
        .unwrap()
        .id();
    // Young assemblies wait.
    assert_eq!(
        store
            .expire_submit_assemblies(now_millis() - 60_000, 10)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .expire_submit_assemblies(now_millis() + 1, 10)
            .await
            .unwrap(),
        2
    );
    let m = store.get(id).unwrap().unwrap();
    assert_eq!(m.status, Status::Failed);
    assert_eq!(m.parts.len(), 3);
    assert_eq!(
        m.history.last().and_then(|t| t.reason.as_deref()),
        Some("parts 2, 3 of 3 never arrived from the client")
    );
    assert_eq!(m.text, "Hello [part 2 of 3 missing][part 3 of 3 missing]");
    assert_eq!(
        store.get(quiet).unwrap().unwrap().history[0]
            .reason
            .as_deref(),
        Some("part 1 of 2 never arrived from the client")
    );
    let entries = store.outbox("smpp:shopA", None, 10).unwrap();
    assert_eq!(entries.len(), 1, "only the one that asked: {entries:?}");
    let OutboxItem::Receipt {
        message_id,
        status,
        parts,
        ..
    } = &entries[0].item
    else {
        panic!("{entries:?}");
    };
    assert_eq!((*message_id, *status, *parts), (id, Status::Failed, 3));
    // Nothing is left to expire, and the failed message is not sent.
    assert_eq!(
        store
            .expire_submit_assemblies(now_millis() + 1, 10)
            .await
            .unwrap(),
        0
    );
    assert!(store.due(&[0], now_millis(), 10).unwrap().is_empty());
    store.close().await;
}

/// How many keys the keyspace `prefix` holds.
fn count_keys(store: &Store, prefix: u8) -> usize {
    store.inner.tree.scan_prefix([prefix]).count()
}

/// Sends a three-part message's parts; returns the message the last one made.
async fn complete_three_parts(store: &Store, reference: u16, new: &NewMessage) -> Message {
    let id = store
        .submit_part(part(reference, 3, 1, "one ", new))
        .await
        .unwrap()
        .id();
    store
        .submit_part(part(reference, 3, 2, "two ", new))
        .await
        .unwrap();
    let PartSubmitted::Complete(m) = store
        .submit_part(part(reference, 3, 3, "three", new))
        .await
        .unwrap()
    else {
        panic!("the last part completes it");
    };
    assert_eq!(m.id, id);
    m
}

#[tokio::test]
async fn a_part_sent_again_after_its_message_is_complete_is_answered_with_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let new = new_message(
        "+393471234567",
        Some(origin("shopA", ReceiptRequest::Final)),
    );
    let m = complete_three_parts(&store, 5, &new).await;
    assert_eq!(count_keys(&store, keys::MESSAGE), 1);
    assert_eq!(count_keys(&store, keys::SUBMIT_ASSEMBLY), 1, "the marker");
    // The middle part and the last one again (their responses were lost): the same id,
    // nothing stored.
    for (seq, text) in [(2, "two "), (3, "three"), (3, "three"), (1, "one ")] {
        let again = store
            .submit_part(part(5, 3, seq, text, &new))
            .await
            .unwrap();
        assert!(
            matches!(again, PartSubmitted::Repeated(id) if id == m.id),
            "part {seq}: {again:?}"
        );
        assert_eq!(again.id(), m.id);
    }
    assert_eq!(count_keys(&store, keys::MESSAGE), 1, "no new message");
    assert_eq!(
        count_keys(&store, keys::SUBMIT_ASSEMBLY),
        1,
        "no new assembly"
    );
    assert_eq!(
        store.get(m.id).unwrap().unwrap(),
        m,
        "the message is untouched"
    );
    assert_eq!(store.due(&[0], now_millis(), 10).unwrap(), vec![m.id]);
    // Nothing expires into a failure, however late.
    assert_eq!(
        store
            .expire_submit_assemblies(now_millis() + 1, 10)
            .await
            .unwrap(),
        0
    );
    assert_eq!(count_keys(&store, keys::MESSAGE), 1);
    assert_eq!(store.get(m.id).unwrap().unwrap(), m);
    assert_eq!(store.outbox_len("smpp:shopA").unwrap(), 0, "no receipt");
    // The same reference with other texts is another message (clients reuse references):
    // it must not be taken for a resend and lost.
    let first = store
        .submit_part(part(5, 3, 1, "uno ", &new))
        .await
        .unwrap();
    let PartSubmitted::Kept(other) = first else {
        panic!("a new assembly: {first:?}");
    };
    assert_ne!(other, m.id);
    store
        .submit_part(part(5, 3, 2, "due ", &new))
        .await
        .unwrap();
    let last = store.submit_part(part(5, 3, 3, "tre", &new)).await.unwrap();
    let PartSubmitted::Complete(second) = last else {
        panic!("{last:?}");
    };
    assert_eq!((second.id, second.text.as_str()), (other, "uno due tre"));
    assert_eq!(count_keys(&store, keys::MESSAGE), 2);
    store.close().await;
}

#[tokio::test]
async fn the_completed_marker_goes_at_the_assembly_expiry_age_without_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let new = new_message(
        "+393471234567",
        Some(origin("shopA", ReceiptRequest::Final)),
    );
    let m = complete_three_parts(&store, 6, &new).await;
    // An open assembly of another recipient, overdue with the marker.
    let elsewhere = new_message(
        "+393471234599",
        Some(origin("shopA", ReceiptRequest::Final)),
    );
    let open_id = store
        .submit_part(part(6, 2, 1, "half", &elsewhere))
        .await
        .unwrap()
        .id();
    // Younger than the age: kept.
    assert_eq!(
        store
            .expire_submit_assemblies(now_millis() - 60_000, 10)
            .await
            .unwrap(),
        0
    );
    assert_eq!(count_keys(&store, keys::SUBMIT_ASSEMBLY), 2);
    // With no failures allowed (max 0), the marker still goes, silently; the open one waits.
    assert_eq!(
        store
            .expire_submit_assemblies(now_millis() + 1, 0)
            .await
            .unwrap(),
        0
    );
    assert_eq!(count_keys(&store, keys::SUBMIT_ASSEMBLY), 1);
    assert_eq!(
        count_keys(&store, keys::MESSAGE),
        1,
        "nothing was made of it"
    );
    assert_eq!(store.get(m.id).unwrap().unwrap(), m);
    assert_eq!(store.outbox_len("smpp:shopA").unwrap(), 0, "no receipt");
    // Only the open one counts as failed.
    assert_eq!(
        store
            .expire_submit_assemblies(now_millis() + 1, 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.get(open_id).unwrap().unwrap().status, Status::Failed);
    assert_eq!(count_keys(&store, keys::SUBMIT_ASSEMBLY), 0);
    // Past the marker's age a part sent again is a new message (the limit of the marker).
    let late = store
        .submit_part(part(6, 3, 2, "two ", &new))
        .await
        .unwrap();
    assert!(
        matches!(late, PartSubmitted::Kept(id) if id != m.id),
        "{late:?}"
    );
    store.close().await;
}

#[tokio::test]
async fn an_assembly_written_before_the_completed_marker_still_completes_and_expires() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let new = new_message(
        "+393471234567",
        Some(origin("shopA", ReceiptRequest::Final)),
    );
    // As the code before format V3 wrote them: version 2, then the bare assembly.
    let old_record = |id: MessageId, first_at: Millis| {
        let assembly = record::SubmitAssembly {
            id,
            first_at,
            to: new.to.clone(),
            from: new.from.clone(),
            kind: new.kind,
            reference: None,
            send_at: None,
            validity_ms: new.validity_ms,
            origin: new.origin.clone(),
            parts: vec![Some("first ".into()), None],
        };
        let mut bytes = vec![2];
        bytes.extend(postcard::to_allocvec(&assembly).unwrap());
        bytes
    };
    let (completes, expires) = (MessageId(ulid::Ulid::new()), MessageId(ulid::Ulid::new()));
    let key =
        |reference| keys::submit_assembly(&smpp_target("shopA"), "3900111", &new.to, reference, 2);
    let tree = &store.inner.tree;
    tree.insert(key(1), old_record(completes, now_millis()))
        .unwrap();
    tree.insert(key(2), old_record(expires, now_millis() - 7_200_000))
        .unwrap();

    let PartSubmitted::Complete(m) = store
        .submit_part(part(1, 2, 2, "second", &new))
        .await
        .unwrap()
    else {
        panic!("the old assembly's missing part completes it");
    };
    assert_eq!((m.id, m.text.as_str()), (completes, "first second"));
    let again = store
        .submit_part(part(1, 2, 1, "first ", &new))
        .await
        .unwrap();
    assert!(matches!(again, PartSubmitted::Repeated(id) if id == completes));
    assert_eq!(
        store
            .expire_submit_assemblies(now_millis() - 3_600_000, 10)
            .await
            .unwrap(),
        1
    );
    let failed = store.get(expires).unwrap().unwrap();
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(failed.text, "first [part 2 of 2 missing]");
    store.close().await;
}

/// Writes an outbox entry for `target` as if made at `at` (ids carry their time).
fn old_entry(store: &Store, target: &str, at: Millis) -> OutboxKey {
    let id = MessageId(ulid::Ulid::from_parts(
        u64::try_from(at).unwrap(),
        rand_bits(),
    ));
    let item = OutboxItem::Reply {
        inbound_id: id,
        from: "+393471234567".into(),
        to: "3900111".into(),
        text: format!("at {at}"),
        received_at: at,
        in_reply_to: None,
    };
    let key = keys::outbox(target, id);
    store
        .inner
        .tree
        .insert(&key, record::encode(&item))
        .unwrap();
    OutboxKey(key)
}

fn rand_bits() -> u128 {
    ulid::Ulid::new().random()
}

/// The times (received_at) of the entries owed to `target`, in order.
fn entry_times(store: &Store, target: &str) -> Vec<Millis> {
    store
        .outbox(target, None, 100)
        .unwrap()
        .into_iter()
        .map(|e| match e.item {
            OutboxItem::Reply { received_at, .. } => received_at,
            OutboxItem::Receipt { done_at, .. } => done_at,
            OutboxItem::Event { .. } | OutboxItem::Callback { .. } => panic!("no webhooks here"),
        })
        .collect()
}

#[tokio::test]
async fn old_outbox_entries_expire_oldest_first_across_targets_at_most_max_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let day = 86_400_000;
    let now = now_millis();
    let limit = now - 7 * day;
    // Written out of order, to three targets whose names prefix one another.
    for (target, at) in [
        ("smpp:a", limit - day),
        ("smpp:a", now),
        ("smpp:a", limit - 2 * day),
        ("smpp:ab", limit - 1),
        ("smpp:ab", limit),
        ("smpp:b", limit - 3 * day),
        ("smpp:b", limit + 1),
        ("smpp:b", limit - 4 * day),
    ] {
        old_entry(&store, target, at);
    }
    // One made the ordinary way (a receipt, now).
    let id = submit(&store, "b", ReceiptRequest::Final).await;
    settle(&store, id, ReceiptOutcome::Delivered).await;
    assert_eq!(store.outbox_len("smpp:b").unwrap(), 4);

    // At most max, the first target's oldest first.
    assert_eq!(store.expire_outbox(limit, 1).await.unwrap(), 1);
    assert_eq!(entry_times(&store, "smpp:a"), vec![limit - day, now]);
    // Then on to the next targets.
    assert_eq!(store.expire_outbox(limit, 2).await.unwrap(), 2);
    assert_eq!(entry_times(&store, "smpp:a"), vec![now]);
    assert_eq!(entry_times(&store, "smpp:ab"), vec![limit]);
    assert_eq!(store.outbox_len("smpp:b").unwrap(), 4);
    assert_eq!(store.expire_outbox(limit, 1).await.unwrap(), 1);
    assert_eq!(
        entry_times(&store, "smpp:b")[..2],
        [limit - 3 * day, limit + 1],
        "its oldest went first"
    );
    assert_eq!(store.expire_outbox(limit, 10).await.unwrap(), 1);
    assert_eq!(store.expire_outbox(limit, 10).await.unwrap(), 0);
    // Only what is older than the limit went.
    assert_eq!(entry_times(&store, "smpp:a"), vec![now]);
    assert_eq!(entry_times(&store, "smpp:ab"), vec![limit]);
    assert_eq!(store.outbox_len("smpp:b").unwrap(), 2);
    assert_eq!(entry_times(&store, "smpp:b")[0], limit + 1);
    // Everything is old enough later on, the ordinary receipt too; nothing else is touched.
    assert_eq!(store.expire_outbox(now_millis() + 1, 10).await.unwrap(), 4);
    for target in ["smpp:a", "smpp:ab", "smpp:b"] {
        assert_eq!(store.outbox_len(target).unwrap(), 0, "{target}");
    }
    assert_eq!(store.get(id).unwrap().unwrap().status, Status::Delivered);
    store.close().await;
}

fn reply_account(name: &str, numbers: &[&str], keywords: &[&str], catch_all: bool) -> ReplyAccount {
    ReplyAccount {
        target: smpp_target(name),
        account: name.into(),
        numbers: numbers.iter().map(|n| n.to_string()).collect(),
        keywords: keywords.iter().map(|k| k.to_string()).collect(),
        catch_all,
    }
}

fn open_with_replies(dir: &Path, accounts: Vec<ReplyAccount>) -> Store {
    let mut options = StoreOptions::new(dir);
    options.rules.replies = Arc::new(ReplyRules {
        accounts,
        conversation_window_ms: 60_000,
    });
    Store::open(&options).unwrap().0
}

fn inbound_new(from: &str, to: &str, text: &str, received_at: Millis) -> InboundNew {
    InboundNew {
        channel: "modem1".into(),
        from: from.into(),
        to: to.into(),
        text: text.into(),
        received_at,
        in_reply_to: None,
        part: None,
        dedupe: None,
    }
}

fn inbound(from: &str, to: &str, text: &str, received_at: Millis) -> Update {
    Update::Inbound(inbound_new(from, to, text, received_at))
}

async fn receive(store: &Store, update: Update) -> InboundMessage {
    let applied = store.apply(vec![update]).await.unwrap();
    let Applied::Inbound(id) = applied[0] else {
        panic!("{applied:?}");
    };
    store
        .list_inbound(None, 100)
        .unwrap()
        .into_iter()
        .find(|m| m.id == id)
        .unwrap()
}

/// The replies owed to `target`: (inbound id, in_reply_to).
fn replies(store: &Store, target: &str) -> Vec<(MessageId, Option<MessageId>)> {
    store
        .outbox(target, None, 100)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.item {
            OutboxItem::Reply {
                inbound_id,
                in_reply_to,
                ..
            } => Some((inbound_id, in_reply_to)),
            OutboxItem::Receipt { .. } | OutboxItem::Event { .. } | OutboxItem::Callback { .. } => {
                None
            }
        })
        .collect()
}

#[tokio::test]
async fn replies_go_to_the_account_by_keyword_conversation_number_or_catch_all() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_replies(
        dir.path(),
        vec![
            reply_account("shopA", &["+3900111"], &["info"], false),
            reply_account("shopB", &["+3900222"], &[], false),
            reply_account("desk", &[], &[], true),
        ],
    );
    let customer = "+393471234567";
    // shopB wrote to the customer from shopA's number; an API message (no origin) came later.
    let mut from_b = new_message(customer, Some(origin("shopB", ReceiptRequest::None)));
    from_b.from = Some("+3900111".into());
    let b_msg = store.submit(from_b, None).await.unwrap().message().clone();
    let mut api = new_message(customer, None);
    api.from = Some("+3900111".into());
    store.submit(api, None).await.unwrap();
    let mut changed = store.outbox_changed();

    // Keyword first, whatever the conversation.
    let now = now_millis();
    let keyword = receive(&store, inbound(customer, "+3900111", "INFO please", now)).await;
    assert!(changed.has_changed().unwrap(), "a reply wakes the consumer");
    changed.borrow_and_update();
    // Conversation: the answer to shopB's message goes to shopB, not to the number's owner.
    let answer = receive(&store, inbound(customer, "3900111", "yes", now)).await;
    assert_eq!(
        answer.in_reply_to,
        Some(b_msg.id),
        "stored with what it answers"
    );
    // Past the window it is no conversation: the number decides.
    let late = b_msg.created_at + 60_001;
    let late_answer = receive(&store, inbound(customer, "+3900111", "yes", late)).await;
    assert_eq!(late_answer.in_reply_to, None);
    // Writing to another number is not answering shopB.
    let to_b = receive(&store, inbound(customer, "+3900222", "hello", now)).await;
    // Nobody's number, no conversation: the catch-all.
    let stranger = receive(&store, inbound("+393479999999", "+3900999", "hi", now)).await;

    let owned = |m: &InboundMessage| (m.id, m.in_reply_to);
    assert_eq!(
        replies(&store, "smpp:shopA"),
        vec![owned(&keyword), owned(&late_answer)]
    );
    assert_eq!(keyword.in_reply_to, Some(b_msg.id));
    assert_eq!(
        replies(&store, "smpp:shopB"),
        vec![owned(&answer), owned(&to_b)]
    );
    assert_eq!(replies(&store, "smpp:desk"), vec![owned(&stranger)]);
    let entry = &store.outbox("smpp:shopB", None, 1).unwrap()[0];
    assert_eq!(
        entry.item,
        OutboxItem::Reply {
            inbound_id: answer.id,
            from: customer.into(),
            to: "3900111".into(),
            text: "yes".into(),
            received_at: now,
            in_reply_to: Some(b_msg.id),
        }
    );
    // The latest conversation wins: the desk wrote to the customer after shopB.
    let mut from_desk = new_message(customer, Some(origin("desk", ReceiptRequest::None)));
    from_desk.from = None;
    let desk_msg = store
        .submit(from_desk, None)
        .await
        .unwrap()
        .message()
        .clone();
    let to_desk = receive(&store, inbound(customer, "+3900111", "ok", now_millis())).await;
    assert_eq!(to_desk.in_reply_to, Some(desk_msg.id));
    assert_eq!(replies(&store, "smpp:desk").last(), Some(&owned(&to_desk)));
    store.close().await;
}

#[tokio::test]
async fn replies_nobody_claims_are_stored_without_an_outbox_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_replies(
        dir.path(),
        vec![reply_account("shopA", &["+3900111"], &[], false)],
    );
    let changed = store.outbox_changed();
    let m = receive(
        &store,
        inbound("+393471234567", "+3900999", "hi", now_millis()),
    )
    .await;
    assert_eq!(m.text, "hi");
    assert_eq!(store.outbox_len("smpp:shopA").unwrap(), 0);
    assert!(!changed.has_changed().unwrap());
    // A concatenated message stored incomplete is routed like any other.
    let part = Update::Inbound(InboundNew {
        part: Some(crate::channel::InboundPart {
            reference: 3,
            total: 2,
            seq: 1,
        }),
        ..inbound_new("+393471234567", "+3900111", "first half", now_millis())
    });
    assert_eq!(
        store.apply(vec![part]).await.unwrap(),
        vec![Applied::PartKept]
    );
    assert_eq!(
        store.expire_assemblies(now_millis() + 1, 10).await.unwrap(),
        1
    );
    assert_eq!(replies(&store, "smpp:shopA").len(), 1);
    assert!(changed.has_changed().unwrap());
    store.close().await;
}

fn open_with_webhooks(dir: &Path) -> Store {
    use crate::webhook::event::{EventType, Subscriber, Subscriptions, target};
    let mut options = StoreOptions::new(dir);
    options.rules.webhooks = Arc::new(Subscriptions {
        endpoints: vec![
            Subscriber {
                target: target("crm"),
                events: EventType::ALL.to_vec(),
            },
            Subscriber {
                target: target("inbox"),
                events: vec![EventType::MessageReceived],
            },
        ],
    });
    Store::open(&options).unwrap().0
}

fn events(store: &Store, target: &str) -> Vec<(String, String, serde_json::Value)> {
    store
        .outbox(target, None, 100)
        .unwrap()
        .into_iter()
        .map(|e| match e.item {
            OutboxItem::Event {
                id,
                event_type,
                body,
            } => (id, event_type, serde_json::from_str(&body).unwrap()),
            other => panic!("{other:?}"),
        })
        .collect()
}

/// The message statuses of events as [`events`] and [`callbacks`] list them.
fn statuses(events: &[(String, String, serde_json::Value)]) -> Vec<&str> {
    events
        .iter()
        .map(|(_, _, body)| body["data"]["status"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn webhook_events_are_written_with_the_changes_they_report() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_webhooks(dir.path());
    let id = submit(&store, "shopA", ReceiptRequest::None).await;
    assert!(events(&store, "webhook:crm").is_empty(), "queued: no event");
    settle(&store, id, ReceiptOutcome::Delivered).await;
    let crm = events(&store, "webhook:crm");
    assert_eq!(statuses(&crm), ["sent", "delivered"]);
    for (event_id, event_type, body) in &crm {
        assert!(event_id.starts_with("evt_"), "{event_id}");
        assert_eq!(event_type, "message.status");
        assert_eq!(body["type"], "message.status");
        assert_eq!(body["data"]["id"], id.to_string());
        assert_eq!(body["data"]["to"], "+393471234567");
    }
    assert_ne!(crm[0].0, crm[1].0, "every event has its own id");
    assert_eq!(crm[1].2["data"]["previous_status"], "sent");
    assert!(events(&store, "webhook:inbox").is_empty(), "not subscribed");

    // A customer's message: both endpoints get it.
    store
        .apply(vec![Update::Inbound(inbound_new(
            "+393471234567",
            "+393400000001",
            "thanks!",
            now_millis(),
        ))])
        .await
        .unwrap();
    for target in ["webhook:crm", "webhook:inbox"] {
        let received = events(&store, target);
        let (_, event_type, body) = received.last().unwrap();
        assert_eq!(event_type, "message.received", "{target}");
        assert_eq!(body["data"]["text"], "thanks!");
        assert_eq!(body["data"]["from"], "+393471234567");
    }

    // Dead-lettered: out of the outbox, into the dead letters with the reason.
    let first = store.outbox("webhook:crm", None, 1).unwrap().remove(0);
    store
        .outbox_dead_letter(first.key.clone(), "HTTP 500".into())
        .await
        .unwrap();
    assert_eq!(store.outbox_len("webhook:crm").unwrap(), 2);
    let dead = store.dead_letters(10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].target, "webhook:crm");
    assert_eq!(dead[0].letter.reason, "HTTP 500");
    assert_eq!(dead[0].letter.item, first.item);
    let crm = store
        .outbox_depths()
        .unwrap()
        .into_iter()
        .find(|d| d.target == "webhook:crm")
        .unwrap();
    assert_eq!((crm.pending, crm.dead), (2, 1));

    // Opt-outs through the API: announced to the endpoints that want them.
    store
        .add_optout("+393471234567", crate::optout::OptOutScope::Marketing)
        .await
        .unwrap();
    assert!(store.remove_optout("+393471234567").await.unwrap());
    assert!(!store.remove_optout("+393471234567").await.unwrap());
    let crm = events(&store, "webhook:crm");
    let tail: Vec<(&str, &serde_json::Value)> = crm
        .iter()
        .rev()
        .take(2)
        .rev()
        .map(|(_, t, b)| (t.as_str(), b))
        .collect();
    assert_eq!(tail[0].0, "conversation.opted_out");
    assert_eq!(tail[0].1["data"]["number"], "+393471234567");
    assert_eq!(tail[0].1["data"]["scope"], "marketing");
    assert_eq!(tail[0].1["data"]["source"], "api");
    assert_eq!(tail[1].0, "conversation.opted_in");
    assert_eq!(
        events(&store, "webhook:inbox").len(),
        1,
        "inbox wants message.received only"
    );
    store.close().await;
}

fn with_callback(url: &str) -> NewMessage {
    let mut new = new_message("+393471234567", None);
    new.options.callback_url = Some(url.into());
    new
}

fn callbacks(store: &Store, target: &str) -> Vec<(String, String, serde_json::Value)> {
    store
        .outbox(target, None, 100)
        .unwrap()
        .into_iter()
        .map(|e| match e.item {
            OutboxItem::Callback { url, id, body, .. } => {
                (url, id, serde_json::from_str(&body).unwrap())
            }
            other => panic!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn a_status_change_writes_the_callback_of_its_message_in_the_same_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(dir.path());
    options.callbacks = true;
    let store = Store::open(&options).unwrap().0;
    let shop = "https://shop.example/sms/123";
    let id = store
        .submit(with_callback(shop), Some(("client".into(), "k1".into())))
        .await
        .unwrap()
        .message()
        .id;
    let other = store
        .submit(with_callback("http://127.0.0.1:9001/cb"), None)
        .await
        .unwrap()
        .message()
        .id;
    let plain = store
        .submit(new_message("+393471234568", None), None)
        .await
        .unwrap()
        .message()
        .id;
    assert!(
        store.outbox_targets("callback:", 10).unwrap().is_empty(),
        "queued: no event"
    );
    settle(&store, id, ReceiptOutcome::Delivered).await;
    // Each status change, once applied, has its callback: they were one write.
    let owed = callbacks(&store, "callback:shop.example:443");
    assert_eq!(statuses(&owed), ["sent", "delivered"]);
    for (url, event_id, body) in &owed {
        assert_eq!(url, shop);
        assert!(event_id.starts_with("evt_"), "{event_id}");
        assert_eq!(body["type"], "message.status");
        assert_eq!(body["data"]["id"], id.to_string());
    }
    settle(&store, other, ReceiptOutcome::Delivered).await;
    settle(&store, plain, ReceiptOutcome::Delivered).await;
    assert_eq!(
        store.outbox_targets("callback:", 10).unwrap(),
        ["callback:127.0.0.1:9001", "callback:shop.example:443"],
        "a queue per host and port; none for the message without a callback"
    );
    assert_eq!(store.outbox_len("callback:127.0.0.1:9001").unwrap(), 2);
    assert_eq!(store.outbox_targets("callback:", 1).unwrap().len(), 1);

    // The callback URL is part of an idempotent request.
    let again = store
        .submit(with_callback(shop), Some(("client".into(), "k1".into())))
        .await
        .unwrap();
    assert!(matches!(again, Submitted::Existing(_)));
    let elsewhere = store
        .submit(
            with_callback("https://shop.example/sms/124"),
            Some(("client".into(), "k1".into())),
        )
        .await;
    assert!(matches!(elsewhere, Err(StoreError::IdempotencyConflict(same)) if same == id));

    // Dead-lettered and replayed: back in its host's queue under the same event id.
    let first = store
        .outbox("callback:shop.example:443", None, 1)
        .unwrap()
        .remove(0);
    let event = first.item.event_id().unwrap().to_owned();
    store
        .outbox_dead_letter(first.key.clone(), "HTTP 503".into())
        .await
        .unwrap();
    let dead = store.dead_letters(10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].target, "callback:shop.example:443");
    assert!(store.replay_dead_letter(&event).await.unwrap());
    assert!(store.dead_letters(10).unwrap().is_empty());
    let back = callbacks(&store, "callback:shop.example:443");
    assert_eq!(back.len(), 2);
    assert_eq!(back[1].1, event);
    store.close().await;
}

#[tokio::test]
async fn callbacks_off_write_no_callback_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let id = store
        .submit(with_callback("https://shop.example/sms/1"), None)
        .await
        .unwrap()
        .message()
        .id;
    settle(&store, id, ReceiptOutcome::Delivered).await;
    assert!(store.outbox_targets("callback:", 10).unwrap().is_empty());
    store.close().await;
}
