use super::*;
use crate::codec::gsm7::Encoding;
use crate::message::{
    Kind, NewMessage, Origin, OriginAddress, ReceiptOutcome, ReceiptRequest, Status, now_millis,
};

fn new_message(to: &str, parts: u8) -> NewMessage {
    NewMessage {
        to: to.into(),
        from: Some("Shop".into()),
        text: "hello".into(),
        kind: Kind::Transactional,
        reference: Some("order-1".into()),
        encoding: Encoding::Gsm7,
        parts,
        send_at: None,
        validity_ms: 3_600_000,
        origin: None,
        options: Default::default(),
    }
}

/// Queues a one-part message and returns its id.
async fn submit(store: &Store, to: &str) -> MessageId {
    store
        .submit(new_message(to, 1), None)
        .await
        .unwrap()
        .message()
        .id
}

fn open(dir: &Path) -> Store {
    Store::open(&StoreOptions::new(dir)).unwrap().0
}

async fn accept_all(store: &Store, claimed: &Claimed, channel: &str) {
    let updates = claimed
        .parts_to_send
        .iter()
        .map(|&part| Update::PartAccepted {
            id: claimed.message.id,
            parts: part..=part,
            channel: channel.into(),
            remote_id: Some(format!("R{}-{part}", claimed.message.id)),
            at: now_millis(),
        })
        .collect();
    store.apply(updates).await.unwrap();
}

fn receipt(channel: &str, remote: &str, outcome: ReceiptOutcome) -> Update {
    Update::Receipt {
        channel: channel.into(),
        remote_id: remote.into(),
        outcome,
        reason: None,
        at: now_millis(),
    }
}

#[tokio::test]
async fn message_goes_from_queued_to_delivered_with_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let m = store
        .submit(new_message("+393471234567", 2), None)
        .await
        .unwrap()
        .message()
        .clone();
    assert_eq!(m.status, Status::Queued);
    assert_eq!(store.due(&[0], now_millis(), 10).unwrap(), vec![m.id]);

    let claimed = store.claim(vec![m.id], "sim".into()).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].parts_to_send, vec![0, 1]);
    assert!(
        store.due(&[0], now_millis(), 10).unwrap().is_empty(),
        "claimed leaves the queue"
    );
    // A second claim of the same id does nothing: no double hand-over.
    assert!(
        store
            .claim(vec![m.id], "sim".into())
            .await
            .unwrap()
            .is_empty()
    );

    accept_all(&store, &claimed[0], "sim").await;
    assert_eq!(store.get(m.id).unwrap().unwrap().status, Status::Sent);

    // Receipts name the ids in another case and with leading zeros.
    let r0 = format!("00R{}-0", m.id).to_lowercase();
    store
        .apply(vec![receipt("sim", &r0, ReceiptOutcome::Delivered)])
        .await
        .unwrap();
    assert_eq!(
        store.get(m.id).unwrap().unwrap().status,
        Status::Sent,
        "one part of two"
    );
    let r1 = format!("R{}-1", m.id);
    store
        .apply(vec![receipt("sim", &r1, ReceiptOutcome::Delivered)])
        .await
        .unwrap();
    let done = store.get(m.id).unwrap().unwrap();
    assert_eq!(done.status, Status::Delivered);
    let statuses: Vec<Status> = done.history.iter().map(|t| t.status).collect();
    assert_eq!(
        statuses,
        [
            Status::Queued,
            Status::Sending,
            Status::Sent,
            Status::Delivered
        ]
    );
    assert_eq!(store.count_status(Status::Delivered).unwrap(), 1);
    assert_eq!(store.count_status(Status::Sent).unwrap(), 0);
    store.close().await;
}

#[tokio::test]
async fn receipt_before_acceptance_is_kept_and_applied() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let m = store
        .submit(new_message("+393471234567", 1), None)
        .await
        .unwrap();
    let id = m.message().id;
    store.claim(vec![id], "smsc".into()).await.unwrap();
    let applied = store
        .apply(vec![receipt("smsc", "ABC", ReceiptOutcome::Delivered)])
        .await
        .unwrap();
    assert_eq!(applied, vec![Applied::ReceiptKept]);
    store
        .apply(vec![Update::PartAccepted {
            id,
            parts: 0..=0,
            channel: "smsc".into(),
            remote_id: Some("abc".into()),
            at: now_millis(),
        }])
        .await
        .unwrap();
    assert_eq!(store.get(id).unwrap().unwrap().status, Status::Delivered);
    store.close().await;
}

#[tokio::test]
async fn receipts_find_their_part_whether_the_id_is_in_hex_or_decimal() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = submit(&store, "+393471234567").await;
    let b = submit(&store, "+393471234568").await;
    store.claim(vec![a, b], "smsc".into()).await.unwrap();
    let accept = |id, remote: &str| Update::PartAccepted {
        id,
        parts: 0..=0,
        channel: "smsc".into(),
        remote_id: Some(remote.into()),
        at: now_millis(),
    };
    // submit_sm_resp said hex; the receipt says decimal (0x0A1B2C3D = 169552957).
    store.apply(vec![accept(a, "0A1B2C3D")]).await.unwrap();
    let applied = store
        .apply(vec![receipt(
            "smsc",
            "169552957",
            ReceiptOutcome::Delivered,
        )])
        .await
        .unwrap();
    assert!(matches!(applied[0], Applied::Message { .. }), "{applied:?}");
    assert_eq!(store.get(a).unwrap().unwrap().status, Status::Delivered);
    // A receipt in decimal before the hex acceptance is kept and applied on acceptance.
    let applied = store
        .apply(vec![receipt("smsc", "3054", ReceiptOutcome::Failed)])
        .await
        .unwrap();
    assert_eq!(applied[0], Applied::ReceiptKept);
    store.apply(vec![accept(b, "0BEE")]).await.unwrap();
    assert_eq!(store.get(b).unwrap().unwrap().status, Status::Failed);
}

#[tokio::test]
async fn transient_failure_requeues_and_permanent_fails() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = submit(&store, "+393471234567").await;
    let b = submit(&store, "+393471234568").await;
    let c = submit(&store, "+393471234569").await;
    store.claim(vec![a, b, c], "sim".into()).await.unwrap();
    let now = now_millis();
    store
        .apply(vec![
            Update::SendFailed {
                id: a,
                reason: "busy".into(),
                retry_at: Some(now + 60_000),
                at: now,
                not_attempted: false,
                maybe_sent: false,
                refused_by: None,
            },
            Update::SendFailed {
                id: b,
                reason: "invalid destination".into(),
                retry_at: None,
                at: now,
                not_attempted: false,
                maybe_sent: false,
                refused_by: None,
            },
            // Past validity (1 h): expires instead of waiting.
            Update::SendFailed {
                id: c,
                reason: "busy".into(),
                retry_at: Some(now + 7_200_000),
                at: now,
                not_attempted: false,
                maybe_sent: false,
                refused_by: None,
            },
        ])
        .await
        .unwrap();
    let a_now = store.get(a).unwrap().unwrap();
    assert_eq!(a_now.status, Status::Queued);
    assert_eq!(a_now.due_at, now + 60_000);
    assert!(
        store.due(&[0], now, 10).unwrap().is_empty(),
        "not due before its retry time"
    );
    assert_eq!(store.due(&[0], now + 60_000, 10).unwrap(), vec![a]);
    assert_eq!(store.get(b).unwrap().unwrap().status, Status::Failed);
    assert_eq!(store.get(c).unwrap().unwrap().status, Status::Expired);
    store.close().await;
}

#[tokio::test]
async fn a_message_handed_back_untried_does_not_use_up_an_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = submit(&store, "+393471234567").await;
    for _ in 0..3 {
        let claimed = store.claim(vec![a], "modem1".into()).await.unwrap();
        assert_eq!(claimed[0].message.attempts, 1);
        let now = now_millis();
        store
            .apply(vec![Update::SendFailed {
                id: a,
                reason: "the modem is not available".into(),
                retry_at: Some(now),
                at: now,
                not_attempted: true,
                maybe_sent: false,
                refused_by: None,
            }])
            .await
            .unwrap();
    }
    let m = store.get(a).unwrap().unwrap();
    assert_eq!((m.status, m.attempts), (Status::Queued, 0));
}

#[tokio::test]
async fn queued_messages_past_validity_expire_without_a_channel() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut short = new_message("+393471234567", 1);
    short.validity_ms = 1_000;
    let short = store.submit(short, None).await.unwrap().message().id;
    let long = submit(&store, "+393471234568").await;
    assert_eq!(store.expire_queued(now_millis(), 100).await.unwrap(), 0);
    let later = now_millis() + 2_000;
    assert_eq!(store.expire_queued(later, 100).await.unwrap(), 1);
    let m = store.get(short).unwrap().unwrap();
    assert_eq!(m.status, Status::Expired);
    assert_eq!(m.parts[0].status, Status::Expired);
    assert_eq!(store.get(long).unwrap().unwrap().status, Status::Queued);
    assert_eq!(store.due(&[0], later, 10).unwrap(), vec![long]);
}

#[tokio::test]
async fn cancel_only_while_queued() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = submit(&store, "+393471234567").await;
    let b = submit(&store, "+393471234567").await;
    store.claim(vec![b], "sim".into()).await.unwrap();
    assert_eq!(store.cancel(a).await.unwrap().status, Status::Canceled);
    assert!(store.due(&[0], now_millis(), 10).unwrap().is_empty());
    assert!(matches!(
        store.cancel(b).await,
        Err(StoreError::WrongStatus {
            status: Status::Sending,
            ..
        })
    ));
    let unknown = MessageId(ulid::Ulid::new());
    assert!(matches!(
        store.cancel(unknown).await,
        Err(StoreError::NotFound(_))
    ));
    store.close().await;
}

#[tokio::test]
async fn idempotency_returns_same_message_or_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = Some(("client".to_string(), "k1".to_string()));
    let first = store
        .submit(new_message("+393471234567", 1), key.clone())
        .await
        .unwrap();
    let again = store
        .submit(new_message("+393471234567", 1), key.clone())
        .await
        .unwrap();
    assert!(matches!(again, Submitted::Existing(_)));
    assert_eq!(first.message().id, again.message().id);
    let other = store
        .submit(new_message("+393471234999", 1), key.clone())
        .await;
    assert!(matches!(other, Err(StoreError::IdempotencyConflict(id)) if id == first.message().id));
    // Another client may use the same key.
    let scoped = store
        .submit(
            new_message("+393471234999", 1),
            Some(("other".into(), "k1".into())),
        )
        .await
        .unwrap();
    assert!(matches!(scoped, Submitted::Created(_)));
    assert_eq!(store.count_status(Status::Queued).unwrap(), 2);
    store.close().await;
}

#[tokio::test]
async fn sending_messages_are_requeued_after_a_crash_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let store = open(dir.path());
        id = submit(&store, "+393471234567").await;
        store.claim(vec![id], "sim".into()).await.unwrap();
        // No close: the writer's commit already made it durable, as after a kill.
        store.close().await;
    }
    let (store, recovery) = Store::open(&StoreOptions::new(dir.path())).unwrap();
    assert_eq!(recovery.requeued_possible_duplicates, 1);
    let m = store.get(id).unwrap().unwrap();
    assert_eq!(m.status, Status::Queued);
    assert!(m.possible_duplicate);
    assert_eq!(store.due(&[0], now_millis(), 10).unwrap(), vec![id]);
    assert_eq!(store.possible_duplicates().unwrap(), 1);
    store.close().await;
}

/// Start-up recovery requeues what its record says is sending, not whatever the index lists:
/// a stale `sending` entry for a delivered message must not send it again.
#[tokio::test]
async fn a_stale_sending_entry_does_not_requeue_a_delivered_message() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let store = open(dir.path());
        id = submit(&store, "+393471234567").await;
        let claimed = store.claim(vec![id], "sim".into()).await.unwrap();
        accept_all(&store, &claimed[0], "sim").await;
        let remote = format!("R{id}-0");
        store
            .apply(vec![receipt("sim", &remote, ReceiptOutcome::Delivered)])
            .await
            .unwrap();
        // An index entry its record does not back (a bug, an interrupted repair).
        store
            .inner
            .tree
            .insert(keys::status(Status::Sending, id), [])
            .unwrap();
        store.inner.tree.persist().unwrap();
        store.close().await;
    }
    let (store, recovery) = Store::open(&StoreOptions::new(dir.path())).unwrap();
    assert_eq!(recovery.requeued_possible_duplicates, 0);
    let m = store.get(id).unwrap().unwrap();
    assert_eq!((m.status, m.possible_duplicate), (Status::Delivered, false));
    assert!(store.due(&[0], now_millis(), 10).unwrap().is_empty());
    assert_eq!(
        store.count_status(Status::Sending).unwrap(),
        0,
        "the entry is gone"
    );
    store.close().await;
}

#[tokio::test]
async fn list_pages_newest_first_with_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut ids = Vec::new();
    for i in 0..7 {
        let to = if i % 2 == 0 {
            "+393471234567"
        } else {
            "+393471234568"
        };
        ids.push(submit(&store, to).await);
    }
    store.cancel(ids[6]).await.unwrap();
    let page1 = store.list(&ListFilter::default(), None, 3).unwrap();
    assert_eq!(page1.next, Some(page1.messages[2].id));
    let page2 = store.list(&ListFilter::default(), page1.next, 3).unwrap();
    let got: Vec<MessageId> = page1
        .messages
        .iter()
        .chain(&page2.messages)
        .map(|m| m.id)
        .collect();
    assert_eq!(got, vec![ids[6], ids[5], ids[4], ids[3], ids[2], ids[1]]);
    let last = store.list(&ListFilter::default(), page2.next, 3).unwrap();
    assert_eq!(last.messages.len(), 1);
    assert_eq!(last.next, None);

    let to_a = ListFilter {
        to: Some("+393471234567".into()),
        status: None,
    };
    let listed: Vec<MessageId> = store
        .list(&to_a, None, 10)
        .unwrap()
        .messages
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(listed, vec![ids[6], ids[4], ids[2], ids[0]]);

    let queued_to_a = ListFilter {
        to: Some("+393471234567".into()),
        status: Some(Status::Queued),
    };
    assert_eq!(
        store.list(&queued_to_a, None, 10).unwrap().messages.len(),
        3
    );
    let canceled = ListFilter {
        to: None,
        status: Some(Status::Canceled),
    };
    let listed: Vec<MessageId> = store
        .list(&canceled, None, 10)
        .unwrap()
        .messages
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(listed, vec![ids[6]]);
    store.close().await;
}

/// Sent and delivered messages have no status entries; listing them reads the records.
#[tokio::test]
async fn sent_and_delivered_messages_are_listed_without_status_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (delivered, sent_at) = sent_message(&store).await;
    store
        .apply(vec![delivered_at(delivered, sent_at + 1_000)])
        .await
        .unwrap();
    let (sent, _) = sent_message(&store).await;
    let queued = submit(&store, "+393471234567").await;
    assert_eq!(
        keys_with_prefix(&store, keys::STATUS),
        vec![keys::status(Status::Queued, queued)]
    );
    let listed = |status| {
        let filter = ListFilter {
            status: Some(status),
            to: None,
        };
        let page = store.list(&filter, None, 10).unwrap();
        assert_eq!(page.next, None);
        page.messages.iter().map(|m| m.id).collect::<Vec<_>>()
    };
    assert_eq!(listed(Status::Delivered), vec![delivered]);
    assert_eq!(listed(Status::Sent), vec![sent]);
    assert_eq!(listed(Status::Queued), vec![queued]);
    assert_eq!(store.count_status(Status::Sent).unwrap(), 1);
    assert_eq!(store.count_status(Status::Delivered).unwrap(), 1);
    store.close().await;
}

/// A listing that stops at its budget names where to go on, and following it finds the rest.
#[tokio::test]
async fn a_listing_past_its_budget_goes_on_from_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (sent, _) = sent_message(&store).await;
    for _ in 0..5 {
        submit(&store, "+393471234567").await;
    }
    let filter = ListFilter {
        status: Some(Status::Sent),
        to: None,
    };
    let mut before = None;
    let mut found = Vec::new();
    let mut pages = 0;
    loop {
        let page = store.list_within(&filter, before, 10, 2).unwrap();
        pages += 1;
        found.extend(page.messages.iter().map(|m| m.id));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(found, vec![sent]);
    assert_eq!(pages, 3, "6 messages, 2 examined per page");
    store.close().await;
}

/// A store written before sent and delivered lost their status entries has them removed at
/// the next start, once.
#[tokio::test]
async fn status_entries_of_an_older_store_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (delivered, sent);
    {
        let store = open(dir.path());
        let (id, sent_at) = sent_message(&store).await;
        store
            .apply(vec![delivered_at(id, sent_at + 1_000)])
            .await
            .unwrap();
        delivered = id;
        sent = sent_message(&store).await.0;
        // As the older code left them, and without the mark that they were removed.
        store
            .inner
            .tree
            .apply([
                (keys::status(Status::Delivered, delivered), Some(Vec::new())),
                (keys::status(Status::Sent, sent), Some(Vec::new())),
                (keys::counter(keys::STATUS_INDEX_TRIMMED), None),
            ])
            .unwrap();
        store.inner.tree.persist().unwrap();
        store.close().await;
    }
    let store = open(dir.path());
    let left = keys_with_prefix(&store, keys::STATUS);
    assert!(left.is_empty(), "left: {left:?}");
    assert!(
        store
            .inner
            .tree
            .get(keys::counter(keys::STATUS_INDEX_TRIMMED))
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store.get(delivered).unwrap().unwrap().status,
        Status::Delivered
    );
    assert_eq!(store.get(sent).unwrap().unwrap().status, Status::Sent);
    store.close().await;
}

#[tokio::test]
async fn sweep_deletes_finished_messages_and_their_index_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = Some(("c".to_string(), "k".to_string()));
    let done = store
        .submit(new_message("+393471234567", 1), key.clone())
        .await
        .unwrap()
        .message()
        .id;
    let live = submit(&store, "+393471234567").await;
    store.cancel(done).await.unwrap();
    // Not yet past retention.
    assert_eq!(store.sweep(now_millis() - 60_000, 100).await.unwrap(), 0);
    assert_eq!(store.sweep(now_millis() + 1, 100).await.unwrap(), 1);
    assert!(store.get(done).unwrap().is_none());
    assert!(store.get(live).unwrap().is_some());
    assert_eq!(store.count_status(Status::Canceled).unwrap(), 0);
    let all: Vec<MessageId> = store
        .list(
            &ListFilter {
                to: Some("+393471234567".into()),
                status: None,
            },
            None,
            10,
        )
        .unwrap()
        .messages
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(all, vec![live]);
    // The idempotency key went with its message: it can be used again.
    let reused = store
        .submit(new_message("+393471234999", 1), key)
        .await
        .unwrap();
    assert!(matches!(reused, Submitted::Created(_)));
    store.close().await;
}

#[tokio::test]
async fn acknowledged_writes_are_synced_in_shared_groups() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .submit(new_message(&format!("+3934712{:05}", i), 1), None)
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let syncs = store.stats().syncs.load(Ordering::Relaxed);
    let writes = store.stats().writes.load(Ordering::Relaxed);
    assert_eq!(writes, 200);
    // Every answer came after a sync; concurrent submissions share them (group commit).
    assert!(
        (1..200).contains(&syncs),
        "{syncs} syncs for 200 concurrent writes"
    );
    store.close().await;
}

#[tokio::test]
async fn compaction_keeps_live_data_and_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut keep = Vec::new();
    {
        let store = open(&path);
        let mut gone = Vec::new();
        for i in 0..2000 {
            let id = submit(&store, &format!("+3934712{:05}", i)).await;
            if i % 100 == 0 {
                keep.push(id)
            } else {
                gone.push(id)
            }
        }
        for id in gone {
            store.cancel(id).await.unwrap();
        }
        while store.sweep(now_millis() + 1, 500).await.unwrap() > 0 {}
        store.close().await;
    }
    let report = compact(&path, 8 * 1024 * 1024).unwrap();
    assert!(report.bytes_after < report.bytes_before, "{report:?}");
    let store = open(&path);
    for id in keep {
        assert_eq!(store.get(id).unwrap().unwrap().status, Status::Queued);
    }
    assert_eq!(store.count_status(Status::Queued).unwrap(), 20);
    store.close().await;
}

#[test]
fn interrupted_compaction_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let id = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = open(&path);
            let id = submit(&store, "+393471234567").await;
            store.close().await;
            id
        })
    };
    // As if compaction stopped between its two renames.
    std::fs::rename(&path, sibling(&path, "compact-old")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = open(&path);
        assert!(
            store.get(id).unwrap().is_some(),
            "the data came back from compact-old"
        );
        store.close().await;
    });
}

#[tokio::test]
async fn sent_messages_without_receipt_age_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let id = submit(&store, "+393471234567").await;
    let claimed = store.claim(vec![id], "sim".into()).await.unwrap();
    accept_all(&store, &claimed[0], "sim").await;
    assert_eq!(store.get(id).unwrap().unwrap().status, Status::Sent);
    assert_eq!(
        store.sweep(now_millis() - 60_000, 10).await.unwrap(),
        0,
        "not yet"
    );
    assert_eq!(store.sweep(now_millis() + 1, 10).await.unwrap(), 1);
    assert!(store.get(id).unwrap().is_none());
    // Its remote id went with it: a very late receipt is kept as unmatched, not misapplied.
    let late = receipt("sim", &format!("R{id}-0"), ReceiptOutcome::Delivered);
    assert_eq!(
        store.apply(vec![late]).await.unwrap(),
        vec![Applied::ReceiptKept]
    );
    store.close().await;
}

/// The retention index's keys (`f`), in order.
fn finished_keys(store: &Store) -> Vec<Vec<u8>> {
    keys_with_prefix(store, keys::FINISHED)
}

/// Every key of one prefix (index), in key order.
fn keys_with_prefix(store: &Store, prefix: u8) -> Vec<Vec<u8>> {
    store
        .inner
        .tree
        .scan_prefix([prefix])
        .keys()
        .map(|k| k.unwrap().to_vec())
        .collect()
}

/// Queues, claims and accepts a one-part message on "sim"; returns its id and when it was sent.
async fn sent_message(store: &Store) -> (MessageId, Millis) {
    let id = submit(store, "+393471234567").await;
    let claimed = store.claim(vec![id], "sim".into()).await.unwrap();
    accept_all(store, &claimed[0], "sim").await;
    let m = store.get(id).unwrap().unwrap();
    assert_eq!(m.status, Status::Sent);
    (id, m.status_since())
}

/// The "delivered" receipt of [`sent_message`]'s message, as if it came at `at`.
fn delivered_at(id: MessageId, at: Millis) -> Update {
    Update::Receipt {
        channel: "sim".into(),
        remote_id: format!("R{id}-0"),
        outcome: ReceiptOutcome::Delivered,
        reason: None,
        at,
    }
}

#[tokio::test]
async fn a_prompt_receipt_keeps_the_retention_entry_written_when_the_message_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (id, sent_at) = sent_message(&store).await;
    let at_send = finished_keys(&store);
    assert_eq!(at_send.len(), 1);
    store
        .apply(vec![delivered_at(id, sent_at + 5_000)])
        .await
        .unwrap();
    assert_eq!(store.get(id).unwrap().unwrap().status, Status::Delivered);
    assert_eq!(finished_keys(&store), at_send, "the entry did not move");
    // Retention counts from the send: the sweep takes it once that is past.
    assert_eq!(store.sweep(sent_at, 10).await.unwrap(), 0);
    assert_eq!(store.sweep(sent_at + 1, 10).await.unwrap(), 1);
    assert!(store.get(id).unwrap().is_none());
    assert!(finished_keys(&store).is_empty());
    store.close().await;
}

/// Stores written before the rule above moved the entry to the receipt's time; the sweep
/// still deletes such a message, and its entry, once that time is past.
#[tokio::test]
async fn an_entry_at_the_receipt_s_time_from_an_older_store_is_swept() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (id, sent_at) = sent_message(&store).await;
    let receipt_at = sent_at + 5_000;
    store
        .apply(vec![delivered_at(id, receipt_at)])
        .await
        .unwrap();
    // As the older code left it: the entry at the receipt's time, none at the send's.
    store
        .inner
        .tree
        .apply([
            (keys::finished(sent_at, id), None),
            (keys::finished(receipt_at, id), Some(Vec::new())),
        ])
        .unwrap();
    assert_eq!(store.sweep(receipt_at, 10).await.unwrap(), 0);
    assert_eq!(store.sweep(receipt_at + 1, 10).await.unwrap(), 1);
    assert!(store.get(id).unwrap().is_none());
    assert!(finished_keys(&store).is_empty());
    store.close().await;
}

#[tokio::test]
async fn a_receipt_hours_late_starts_the_retention_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (id, sent_at) = sent_message(&store).await;
    let at_send = finished_keys(&store);
    let receipt_at = sent_at + 2 * 3_600_000;
    store
        .apply(vec![delivered_at(id, receipt_at)])
        .await
        .unwrap();
    let after = finished_keys(&store);
    assert_eq!(after.len(), 1);
    assert_ne!(after, at_send, "the entry moved to the receipt's time");
    assert_eq!(store.sweep(receipt_at, 10).await.unwrap(), 0);
    assert!(store.get(id).unwrap().is_some());
    assert_eq!(store.sweep(receipt_at + 1, 10).await.unwrap(), 1);
    assert!(finished_keys(&store).is_empty());
    store.close().await;
}

fn inbound_part(from: &str, text: &str, reference: u16, total: u8, seq: u8) -> Update {
    Update::Inbound(InboundNew {
        channel: "modem1".into(),
        from: from.into(),
        to: "+393470000000".into(),
        text: text.into(),
        received_at: now_millis(),
        in_reply_to: None,
        part: Some(crate::channel::InboundPart {
            reference,
            total,
            seq,
        }),
        dedupe: None,
    })
}

#[tokio::test]
async fn an_sms_read_twice_is_stored_once_until_retention_ends() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let sms = |fp: &str| {
        Update::Inbound(InboundNew {
            channel: "modem1".into(),
            from: "+393471111111".into(),
            to: "+393470000000".into(),
            text: "hi".into(),
            received_at: now_millis(),
            in_reply_to: None,
            part: None,
            dedupe: Some(fp.into()),
        })
    };
    let applied = store.apply(vec![sms("aa"), sms("bb")]).await.unwrap();
    assert!(applied.iter().all(|a| matches!(a, Applied::Inbound(_))));
    store.close().await;
    drop(store);
    // Restarted (the modem still had it: the crash came before the delete).
    let store = open(dir.path());
    let applied = store.apply(vec![sms("aa")]).await.unwrap();
    assert!(matches!(applied[0], Applied::Ignored(_)), "{applied:?}");
    assert_eq!(store.list_inbound(None, 10).unwrap().len(), 2);
    // Past retention the fingerprints go with the messages.
    store.sweep(now_millis() + 1, 100).await.unwrap();
    assert!(store.list_inbound(None, 10).unwrap().is_empty());
    let applied = store.apply(vec![sms("aa")]).await.unwrap();
    assert!(matches!(applied[0], Applied::Inbound(_)));
}

#[tokio::test]
async fn an_smpp_resend_within_the_window_is_stored_once_and_a_later_repeat_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let t0 = now_millis();
    let sms = |at: Millis| {
        Update::Inbound(InboundNew {
            channel: "carrier".into(),
            from: "+393471111111".into(),
            to: "+393470000000".into(),
            text: "YES".into(),
            received_at: at,
            in_reply_to: None,
            part: None,
            dedupe: Some(crate::channel::Dedupe {
                fingerprint: "same-pdu".into(),
                within_ms: Some(300_000),
            }),
        })
    };
    // The SMSC resends after a lost deliver_sm_resp: the same PDU 20 s later.
    let applied = store.apply(vec![sms(t0), sms(t0 + 20_000)]).await.unwrap();
    assert!(matches!(applied[0], Applied::Inbound(_)), "{applied:?}");
    assert!(matches!(applied[1], Applied::Ignored(_)), "{applied:?}");
    // The customer writes YES again ten minutes later: a real message.
    let applied = store.apply(vec![sms(t0 + 600_000)]).await.unwrap();
    assert!(matches!(applied[0], Applied::Inbound(_)), "{applied:?}");
    assert_eq!(store.list_inbound(None, 10).unwrap().len(), 2);
}

#[tokio::test]
async fn concatenated_inbound_is_reassembled_across_restarts_and_duplicates_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let applied = store
        .apply(vec![
            inbound_part("+393471111111", "world", 7, 3, 3),
            inbound_part("+393471111111", "Hello ", 7, 3, 1),
            // Same reference from another customer: a different message.
            inbound_part("+393472222222", "other", 7, 2, 1),
        ])
        .await
        .unwrap();
    assert_eq!(applied, vec![Applied::PartKept; 3]);
    assert!(store.list_inbound(None, 10).unwrap().is_empty());
    store.close().await;
    drop(store);

    let store = open(dir.path());
    let applied = store
        .apply(vec![
            inbound_part("+393471111111", "Hello ", 7, 3, 1),
            inbound_part("+393471111111", "big ", 7, 3, 2),
        ])
        .await
        .unwrap();
    assert!(matches!(applied[0], Applied::Ignored(_)), "{applied:?}");
    assert!(matches!(applied[1], Applied::Inbound(_)), "{applied:?}");
    let inbound = store.list_inbound(None, 10).unwrap();
    assert_eq!(inbound.len(), 1);
    assert_eq!(inbound[0].text, "Hello big world");
    assert_eq!(inbound[0].parts, 3);
    assert!(inbound[0].missing_parts.is_empty());

    // A late repeat of a part of the finished message starts a new assembly, which then
    // expires as incomplete rather than being lost or duplicated silently.
    assert_eq!(
        store.expire_assemblies(now_millis() + 1, 10).await.unwrap(),
        1
    );
    let inbound = store.list_inbound(None, 10).unwrap();
    assert_eq!(inbound.len(), 2);
    let partial = inbound.iter().find(|m| m.from == "+393472222222").unwrap();
    assert_eq!(partial.missing_parts, vec![2]);
    assert_eq!(partial.text, "other[part 2 of 2 missing]");
}

#[tokio::test]
async fn young_assemblies_wait_and_bad_part_numbers_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let applied = store
        .apply(vec![
            inbound_part("+393471111111", "a", 1, 2, 1),
            inbound_part("+393471111111", "x", 2, 2, 3),
            inbound_part("+393471111111", "x", 2, 2, 0),
        ])
        .await
        .unwrap();
    assert_eq!(applied[0], Applied::PartKept);
    assert!(matches!(applied[1], Applied::Ignored(_)));
    assert!(matches!(applied[2], Applied::Ignored(_)));
    assert_eq!(
        store
            .expire_assemblies(now_millis() - 60_000, 10)
            .await
            .unwrap(),
        0
    );
    assert!(store.list_inbound(None, 10).unwrap().is_empty());
}

#[tokio::test]
async fn sweep_keeps_a_reused_remote_id_that_names_a_newer_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let old = submit(&store, "+393471111111").await;
    let new = submit(&store, "+393471111111").await;
    let claimed = store.claim(vec![old, new], "modem1".into()).await.unwrap();
    assert_eq!(claimed.len(), 2);
    // A modem's 8-bit reference wrapped: both parts got the same remote id.
    let accept = |id| Update::PartAccepted {
        id,
        parts: 0..=0,
        channel: "modem1".into(),
        remote_id: Some("17/71111111".into()),
        at: now_millis(),
    };
    store.apply(vec![accept(old)]).await.unwrap();
    store
        .apply(vec![receipt(
            "modem1",
            "17/71111111",
            ReceiptOutcome::Delivered,
        )])
        .await
        .unwrap();
    let old_finished = now_millis() + 1;
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    store.apply(vec![accept(new)]).await.unwrap();
    // The old message is final; sweeping it must not delete the entry the new one owns.
    assert_eq!(store.sweep(old_finished, 100).await.unwrap(), 1);
    assert!(store.get(old).unwrap().is_none());
    let applied = store
        .apply(vec![receipt(
            "modem1",
            "17/71111111",
            ReceiptOutcome::Delivered,
        )])
        .await
        .unwrap();
    assert!(matches!(applied[0], Applied::Message { .. }), "{applied:?}");
    assert_eq!(store.get(new).unwrap().unwrap().status, Status::Delivered);
}

#[tokio::test]
async fn one_remote_id_for_several_parts_is_settled_by_its_one_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let submit_parts = |to: &'static str| {
        let store = store.clone();
        async move {
            store
                .submit(new_message(to, 3), None)
                .await
                .unwrap()
                .message()
                .id
        }
    };
    let a = submit_parts("+393471234567").await;
    let b = submit_parts("+393471234568").await;
    store.claim(vec![a, b], "smsc".into()).await.unwrap();
    let accept = |id, remote: &str| Update::PartAccepted {
        id,
        parts: 0..=2,
        channel: "smsc".into(),
        remote_id: Some(remote.into()),
        at: now_millis(),
    };
    // A message_payload submission: one id for the three parts.
    store.apply(vec![accept(a, "77")]).await.unwrap();
    let m = store.get(a).unwrap().unwrap();
    assert_eq!(m.status, Status::Sent);
    assert!(m.parts.iter().all(|p| p.remote_id.as_deref() == Some("77")));
    store
        .apply(vec![receipt("smsc", "77", ReceiptOutcome::Delivered)])
        .await
        .unwrap();
    assert_eq!(store.get(a).unwrap().unwrap().status, Status::Delivered);
    // The receipt came before the acceptance: kept, then applied to every part.
    let kept = store
        .apply(vec![receipt("smsc", "ab12", ReceiptOutcome::Delivered)])
        .await
        .unwrap();
    assert_eq!(kept, vec![Applied::ReceiptKept]);
    store.apply(vec![accept(b, "00AB12")]).await.unwrap();
    let m = store.get(b).unwrap().unwrap();
    assert_eq!(m.status, Status::Delivered, "{m:?}");
}

#[tokio::test]
async fn a_refusal_hands_the_message_to_the_next_step_of_its_route_and_lanes_follow_the_routes() {
    use crate::route::{RouteSettings, RouteStep, Router};
    let dir = tempfile::tempdir().unwrap();
    let routes = vec![RouteSettings {
        prefixes: vec!["+39".into()],
        channels: vec![RouteStep::One("a".into()), RouteStep::One("b".into())],
    }];
    let names = ["a".to_string(), "b".to_string(), "c".to_string()];
    let mut options = StoreOptions::new(dir.path());
    options.rules.router = Arc::new(Router::new(&routes, &names));
    let store = Store::open(&options).unwrap().0;
    let italy = submit(&store, "+393471234567").await;
    let germany = submit(&store, "+4915123456789").await;
    let now = now_millis();
    // Lane 0x0000 is Italy's first step, 0x0100 the default route (every channel).
    assert_eq!(store.due(&[0x0000], now, 10).unwrap(), vec![italy]);
    assert_eq!(store.due(&[0x0100], now, 10).unwrap(), vec![germany]);
    store.claim(vec![italy], "a".into()).await.unwrap();
    let refused = Update::SendFailed {
        id: italy,
        reason: "a: SMSC refused: ESME_RINVDSTADR".into(),
        retry_at: None,
        at: now,
        not_attempted: false,
        maybe_sent: false,
        refused_by: Some("a".into()),
    };
    store.apply(vec![refused]).await.unwrap();
    let m = store.get(italy).unwrap().unwrap();
    assert_eq!(m.status, Status::Queued);
    assert_eq!(m.channel.as_deref(), Some("b"));
    assert!(
        m.history
            .last()
            .unwrap()
            .reason
            .as_deref()
            .unwrap()
            .contains("handed to b")
    );
    assert!(store.due(&[0x0000], now, 10).unwrap().is_empty());
    assert_eq!(store.due(&[0x0001], now, 10).unwrap(), vec![italy]);
    // The last step refuses too: now it fails.
    store.claim(vec![italy], "b".into()).await.unwrap();
    store
        .apply(vec![Update::SendFailed {
            id: italy,
            reason: "b: SMSC refused: ESME_RINVDSTADR".into(),
            retry_at: None,
            at: now,
            not_attempted: false,
            maybe_sent: false,
            refused_by: Some("b".into()),
        }])
        .await
        .unwrap();
    assert_eq!(store.get(italy).unwrap().unwrap().status, Status::Failed);
    store.close().await;
    drop(store);
    // Reopened without routes: the queue is refiled under the one lane.
    let store = Store::open(&StoreOptions::new(dir.path())).unwrap().0;
    assert_eq!(store.due(&[0], now_millis(), 10).unwrap(), vec![germany]);
    assert_eq!(store.lanes(), vec![0]);
}

#[tokio::test]
async fn messages_written_before_origin_or_options_existed_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let id = submit(&store, "+393471234567").await;
    let current = store.get(id).unwrap().unwrap();
    // V2 and V3 messages lack the trailing default `options` (three `None`s); a V1 one also
    // lacks the `None` of `origin` before them.
    let mut old = record::encode(&current);
    assert_eq!(old.first(), Some(&4));
    assert_eq!(old.split_off(old.len() - 3), [0, 0, 0]);
    for version in [2, 3] {
        old[0] = version;
        store
            .inner
            .tree
            .insert(keys::message(id), old.clone())
            .unwrap();
        assert_eq!(store.get(id).unwrap().unwrap(), current);
    }
    assert_eq!(old.pop(), Some(0));
    old[0] = 1;
    store.inner.tree.insert(keys::message(id), old).unwrap();
    assert_eq!(store.get(id).unwrap().unwrap(), current);
    // And it is written as V4 with its next change.
    store.cancel(id).await.unwrap();
    let raw = store.inner.tree.get(keys::message(id)).unwrap().unwrap();
    assert_eq!(raw.first(), Some(&4));
    assert_eq!(store.get(id).unwrap().unwrap().status, Status::Canceled);
    // Other types decode from either version, and an unknown version is corrupt.
    let early = record::EarlyReceipt {
        outcome: ReceiptOutcome::Failed,
        reason: None,
        at: 5,
    };
    let mut bytes = record::encode(&early);
    for version in [1, 2, 3, 4] {
        bytes[0] = version;
        assert_eq!(record::decode_early_receipt(b"p", &bytes).unwrap().at, 5);
    }
    bytes[0] = 5;
    assert!(matches!(
        record::decode_early_receipt(b"p", &bytes),
        Err(StoreError::Corrupt { .. })
    ));
    store.close().await;
}

#[tokio::test]
async fn a_message_keeps_its_origin_and_a_repeat_must_have_the_same_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let address = |addr: &str| OriginAddress {
        addr: addr.into(),
        ton: 5,
        npi: 0,
    };
    let mut new = new_message("+393471234567", 1);
    new.origin = Some(Origin {
        account: "shopA".into(),
        receipt: ReceiptRequest::FailureOnly,
        source: address("Shop"),
        dest: address("393471234567"),
    });
    let key = Some(("smpp".to_string(), "k1".to_string()));
    let id = store
        .submit(new.clone(), key.clone())
        .await
        .unwrap()
        .message()
        .id;
    assert_eq!(store.get(id).unwrap().unwrap().origin, new.origin);
    let again = store.submit(new.clone(), key.clone()).await.unwrap();
    assert!(matches!(again, Submitted::Existing(m) if m.id == id));
    new.origin = None;
    assert!(matches!(
        store.submit(new, key).await,
        Err(StoreError::IdempotencyConflict(same)) if same == id
    ));
    store.close().await;
}

/// Quiet hours in UTC from an hour before now to an hour after: now is quiet.
fn quiet_now() -> crate::schedule::QuietHours {
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    let hm = |z: jiff::Zoned| format!("{:02}:{:02}", z.hour(), z.minute());
    let start = hm(now.checked_sub(jiff::Span::new().hours(1)).unwrap());
    let end = hm(now.checked_add(jiff::Span::new().hours(1)).unwrap());
    crate::schedule::QuietHours::new(&start, &end, "UTC").unwrap()
}

#[tokio::test]
async fn marketing_waits_out_quiet_hours_and_transactional_does_not() {
    let dir = tempfile::tempdir().unwrap();
    // Queued before quiet hours were configured.
    let store = open(dir.path());
    let early = store
        .submit(
            NewMessage {
                kind: Kind::Marketing,
                ..new_message("+393471234567", 1)
            },
            None,
        )
        .await
        .unwrap()
        .message()
        .id;
    store.close().await;
    drop(store);

    let quiet = quiet_now();
    let mut options = StoreOptions::new(dir.path());
    options.rules.quiet_hours = Some(quiet.clone());
    let store = Store::open(&options).unwrap().0;
    let now = now_millis();
    let end = quiet.next_allowed(now);
    assert!(end > now + 30 * 60_000, "the window ends in about an hour");
    let promo = store
        .submit(
            NewMessage {
                kind: Kind::Marketing,
                ..new_message("+393471234568", 1)
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(promo.message().due_at, end, "deferred at submit");
    let code = store
        .submit(new_message("+393471234569", 1), None)
        .await
        .unwrap();
    assert!(
        code.message().due_at <= now_millis(),
        "transactional: due now"
    );

    // The marketing message already due is not claimed but deferred, and says so.
    let claimed = store
        .claim(vec![early, code.message().id], "sim".into())
        .await
        .unwrap();
    let ids: Vec<MessageId> = claimed.iter().map(|c| c.message.id).collect();
    assert_eq!(ids, [code.message().id]);
    let deferred = store.get(early).unwrap().unwrap();
    assert_eq!(deferred.status, Status::Queued);
    assert_eq!(deferred.due_at, end);
    let reason = deferred.history.last().unwrap().reason.clone().unwrap();
    assert!(reason.starts_with("quiet hours: deferred to"), "{reason}");
    store.close().await;
}

#[tokio::test]
async fn a_reload_s_new_routes_refile_the_queue_at_once() {
    use crate::route::{RouteSettings, RouteStep, Router};
    let dir = tempfile::tempdir().unwrap();
    let names = ["a".to_string(), "b".to_string()];
    let store = Store::open(&StoreOptions::new(dir.path())).unwrap().0;
    let italy = submit(&store, "+393471234567").await;
    let germany = submit(&store, "+4915123456789").await;
    let now = now_millis();
    assert_eq!(store.due(&[0], now, 10).unwrap(), vec![italy, germany]);
    // Italy gets its own route: the reload files Italy's message under it, Germany's under
    // the default route (now the second).
    let routes = vec![RouteSettings {
        prefixes: vec!["+39".into()],
        channels: vec![RouteStep::One("b".into())],
    }];
    let mut rules = StoreRules {
        router: Arc::new(Router::new(&routes, &names)),
        ..StoreRules::default()
    };
    store.reconfigure(rules.clone()).await.unwrap();
    assert_eq!(store.due(&[0x0000], now, 10).unwrap(), vec![italy]);
    assert_eq!(store.due(&[0x0100], now, 10).unwrap(), vec![germany]);
    assert!(store.lanes().contains(&0x0100));
    // A message submitted after the reload is filed by the new routes too.
    let later = submit(&store, "+393470000000").await;
    assert_eq!(
        store.due(&[0x0000], now_millis(), 10).unwrap(),
        vec![italy, later]
    );
    // And back: one lane again.
    rules.router = Arc::new(Router::new(&[], &names));
    store.reconfigure(rules).await.unwrap();
    assert_eq!(
        store.due(&[0], now_millis(), 10).unwrap(),
        vec![italy, germany, later]
    );
    store.close().await;
}

#[tokio::test]
async fn status_counts_are_kept_with_the_changes_and_read_back_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = submit(&store, "+393471234567").await;
    submit(&store, "+393471234568").await;
    submit(&store, "+393471234569").await;
    store.cancel(a).await.unwrap();
    store.close().await;
    drop(store);
    let count = |options: &StoreOptions, status| options.metrics.count(status);
    // Reopened: the counts come from the stored counters.
    let options = StoreOptions::new(dir.path());
    let store = Store::open(&options).unwrap().0;
    assert_eq!(count(&options, Status::Queued), 2);
    assert_eq!(count(&options, Status::Canceled), 1);
    assert_eq!(count(&options, Status::Delivered), 0);
    assert!(
        store
            .inner
            .tree
            .get(keys::status_count(Status::Queued))
            .unwrap()
            .is_some()
    );
    // The retention sweep's deletions count too.
    store.sweep(now_millis() + 1, 100).await.unwrap();
    assert_eq!(count(&options, Status::Canceled), 0);
    // A store without the counters (written before them) is counted from its index once.
    for status in Status::ALL {
        store.inner.tree.remove(keys::status_count(status)).unwrap();
    }
    store.inner.tree.persist().unwrap();
    store.close().await;
    drop(store);
    let options = StoreOptions::new(dir.path());
    let _store = Store::open(&options).unwrap().0;
    assert_eq!(count(&options, Status::Queued), 2);
    assert_eq!(count(&options, Status::Canceled), 0);
}

#[tokio::test]
async fn a_retry_after_an_unanswered_attempt_is_marked_and_counted_as_a_possible_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = submit(&store, "+393471234567").await;
    let b = submit(&store, "+393471234568").await;
    store.claim(vec![a, b], "carrier".into()).await.unwrap();
    let now = now_millis();
    let failed = |id, maybe_sent| Update::SendFailed {
        id,
        reason: "carrier: the link dropped before the SMSC answered".into(),
        retry_at: Some(now),
        at: now,
        not_attempted: false,
        maybe_sent,
        refused_by: None,
    };
    store
        .apply(vec![failed(a, true), failed(b, false)])
        .await
        .unwrap();
    let a = store.get(a).unwrap().unwrap();
    let b = store.get(b).unwrap().unwrap();
    assert_eq!((a.status, a.possible_duplicate), (Status::Queued, true));
    assert_eq!((b.status, b.possible_duplicate), (Status::Queued, false));
    assert_eq!(store.possible_duplicates().unwrap(), 1);
}

/// Scans of the due index start at each lane's floor (the engine keeps deleted keys as
/// tombstones): a message queued below a floor that a scan already raised must still be found.
#[tokio::test]
async fn a_message_due_before_one_a_scan_already_passed_is_still_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let lanes = store.lanes();
    let now = now_millis();
    let mut later = new_message("+393471234567", 1);
    later.send_at = Some(now + 3_600_000);
    let later = store.submit(later, None).await.unwrap().message().id;
    // A scan from two hours ahead raises the floor to the later message.
    assert_eq!(store.due(&lanes, now + 7_200_000, 10).unwrap(), vec![later]);
    assert_eq!(store.due(&lanes, now_millis(), 10).unwrap(), vec![]);
    // A message due now sorts below that floor: the writer lowers it.
    let soon = submit(&store, "+393471234568").await;
    assert_eq!(store.due(&lanes, now_millis(), 10).unwrap(), vec![soon]);
    assert!(store.next_due(&lanes).unwrap().unwrap() <= now_millis());
    // Claimed: scans and the next due time move past it, to the later one.
    store.claim(vec![soon], "sim".into()).await.unwrap();
    assert_eq!(store.due(&lanes, now_millis(), 10).unwrap(), vec![]);
    assert_eq!(store.next_due(&lanes).unwrap(), Some(now + 3_600_000));
    store.close().await;
}

/// A store an older parla wrote with sled (the same keys and values) is imported at open: every
/// message is there with its status, the sled files are gone, and a copy that a crash
/// interrupted is started over.
#[tokio::test]
async fn a_sled_store_is_imported_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (fresh, old) = (dir.path().join("fresh"), dir.path().join("old"));
    let store = open(&fresh);
    let (kept, canceled) = (
        submit(&store, "+393471234567").await,
        submit(&store, "+393471234568").await,
    );
    store.cancel(canceled).await.unwrap();
    store.close().await;
    let entries: Vec<_> = store.inner.tree.iter().map(|item| item.unwrap()).collect();
    drop(store);
    {
        let sled = sled::open(&old).unwrap();
        for (k, v) in &entries {
            sled.insert(k.as_ref(), v.as_ref()).unwrap();
        }
        sled.flush().unwrap();
    }
    assert!(exists_at(&old) && migrate::has_sled_store(&old));
    // A copy a crash interrupted: the engine's files are there, with a key of its own.
    {
        let engine = engine::Engine::open(&old, 1 << 20).unwrap();
        engine.insert(b"stray", b"x".to_vec()).unwrap();
        engine.persist().unwrap();
    }
    let store = open(&old);
    assert_eq!(store.get(kept).unwrap().unwrap().status, Status::Queued);
    assert_eq!(
        store.get(canceled).unwrap().unwrap().status,
        Status::Canceled
    );
    assert_eq!(store.count_status(Status::Queued).unwrap(), 1);
    assert_eq!(
        store.due(&store.lanes(), now_millis(), 10).unwrap(),
        vec![kept]
    );
    assert!(store.inner.tree.get(b"stray").unwrap().is_none());
    assert!(!migrate::has_sled_store(&old));
    assert!(!old.join("conf").exists() && !old.join("db").exists());
    store.close().await;
    drop(store);
    // Opened again: nothing left to import, nothing lost.
    let store = open(&old);
    assert_eq!(store.get(kept).unwrap().unwrap().status, Status::Queued);
    store.close().await;
}

#[tokio::test]
async fn messages_read_back_alike_whether_the_writer_still_holds_them_or_not() {
    // The writer keeps the messages it wrote last: the oldest here have left that cache and
    // come from the engine, the newest from the cache. Both must move through their states.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut ids = Vec::new();
    for i in 0..writer::RECENT_MESSAGES + 50 {
        ids.push(submit(&store, &format!("+39347{:07}", i)).await);
    }
    for id in [ids[0], ids[ids.len() - 1]] {
        let claimed = store.claim(vec![id], "sim".into()).await.unwrap();
        assert_eq!(claimed.len(), 1, "{id} claimed once");
        accept_all(&store, &claimed[0], "sim").await;
        assert_eq!(store.get(id).unwrap().unwrap().status, Status::Sent);
        store
            .apply(vec![receipt(
                "sim",
                &format!("R{id}-0"),
                ReceiptOutcome::Delivered,
            )])
            .await
            .unwrap();
        let m = store.get(id).unwrap().unwrap();
        assert_eq!(m.status, Status::Delivered);
        let statuses: Vec<_> = m.history.iter().map(|h| h.status).collect();
        assert_eq!(
            statuses,
            [
                Status::Queued,
                Status::Sending,
                Status::Sent,
                Status::Delivered
            ]
        );
        assert!(
            store
                .claim(vec![id], "sim".into())
                .await
                .unwrap()
                .is_empty(),
            "not claimed twice"
        );
    }
}

#[tokio::test]
async fn a_receipt_kept_before_a_restart_still_settles_its_message() {
    // The writer knows which early receipts are kept without reading for them: after a restart
    // it must know the ones on disk.
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = open(dir.path());
        let id = submit(&store, "+393471234567").await;
        store.claim(vec![id], "smsc".into()).await.unwrap();
        let applied = store
            .apply(vec![receipt("smsc", "ABC", ReceiptOutcome::Delivered)])
            .await
            .unwrap();
        assert_eq!(applied, vec![Applied::ReceiptKept]);
        store.close().await;
        id
    };
    let store = open(dir.path());
    // Requeued by the restart (it was sending), sent again; the SMSC names the same id.
    let claimed = store.claim(vec![id], "smsc".into()).await.unwrap();
    assert_eq!(claimed.len(), 1);
    store
        .apply(vec![Update::PartAccepted {
            id,
            parts: 0..=0,
            channel: "smsc".into(),
            remote_id: Some("abc".into()),
            at: now_millis(),
        }])
        .await
        .unwrap();
    assert_eq!(store.get(id).unwrap().unwrap().status, Status::Delivered);
}
