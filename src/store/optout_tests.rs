//! The opt-out list: keywords applied with the inbound message, the check at submit, the API's
//! entries.

use super::*;
use crate::codec::gsm7::Encoding;
use crate::config::OptOutSettings;
use crate::message::{Kind, Origin, OriginAddress, ReceiptRequest, now_millis};

const CUSTOMER: &str = "+393471234567";
const SHOP: &str = "+393400000001";

fn settings() -> OptOutSettings {
    OptOutSettings {
        stop_reply: "stopped".into(),
        stop_all_reply: "stopped all".into(),
        start_reply: "started".into(),
        help_reply: "help text".into(),
        ..OptOutSettings::default()
    }
}

fn open_with(dir: &Path, settings: &OptOutSettings) -> Store {
    let mut options = StoreOptions::new(dir);
    options.rules.optouts = Arc::new(OptOutRules::new(settings, 3_600_000));
    Store::open(&options).unwrap().0
}

fn open(dir: &Path) -> Store {
    open_with(dir, &settings())
}

fn message(to: &str, kind: Kind) -> NewMessage {
    NewMessage {
        to: to.into(),
        from: Some("Shop".into()),
        text: "20% off everything today".into(),
        kind,
        reference: None,
        encoding: Encoding::Gsm7,
        parts: 1,
        send_at: None,
        validity_ms: 3_600_000,
        origin: None,
        options: Default::default(),
    }
}

fn from_customer(from: &str, to: &str, text: &str) -> Update {
    Update::Inbound(InboundNew {
        channel: "carrier".into(),
        from: from.into(),
        to: to.into(),
        text: text.into(),
        received_at: now_millis(),
        in_reply_to: None,
        part: None,
        dedupe: None,
    })
}

/// Applies one customer message and returns its inbound id.
async fn customer_says(store: &Store, text: &str) -> MessageId {
    let applied = store
        .apply(vec![from_customer(CUSTOMER, SHOP, text)])
        .await
        .unwrap();
    match applied[..] {
        [Applied::Inbound(id)] => id,
        _ => panic!("{applied:?}"),
    }
}

/// Messages to `to`, oldest first.
fn messages_to(store: &Store, to: &str) -> Vec<Message> {
    let filter = ListFilter {
        status: None,
        to: Some(to.into()),
    };
    let mut all = store.list(&filter, None, 100).unwrap().messages;
    all.reverse();
    all
}

async fn refused(store: &Store, kind: Kind) -> Option<(OptOutScope, OptOutSource)> {
    match store.submit(message(CUSTOMER, kind), None).await {
        Ok(_) => None,
        Err(StoreError::OptedOut {
            number, scope, by, ..
        }) => {
            assert_eq!(number, CUSTOMER);
            Some((scope, by))
        }
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn stop_refuses_marketing_only_and_is_confirmed_in_the_same_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(refused(&store, Kind::Marketing).await, None);
    let before = messages_to(&store, CUSTOMER).len();

    let id = customer_says(&store, " Stop!").await;
    // One apply: the inbound message, the entry and the confirmation are all there.
    let inbound = store.list_inbound(None, 10).unwrap();
    assert_eq!((inbound[0].id, inbound[0].text.as_str()), (id, " Stop!"));
    let entry = store.optout(CUSTOMER).unwrap().expect("on the list");
    assert_eq!(entry.scope, OptOutScope::Marketing);
    assert_eq!(entry.source, OptOutSource::Keyword);
    assert_eq!(entry.text.as_deref(), Some(" Stop!"));
    assert_eq!(entry.inbound_id, Some(id));
    assert_eq!(entry.at, inbound[0].received_at);
    let sent = messages_to(&store, CUSTOMER);
    assert_eq!(sent.len(), before + 1);
    let confirmation = sent.last().unwrap();
    assert_eq!(confirmation.text, "stopped");
    assert_eq!(confirmation.from.as_deref(), Some(SHOP));
    assert_eq!(confirmation.kind, Kind::Transactional);
    assert_eq!(confirmation.status, Status::Queued);
    assert_eq!(confirmation.origin, None);
    assert_eq!(confirmation.expires_at - confirmation.created_at, 3_600_000);
    let due = store.due(&store.lanes(), now_millis(), 10).unwrap();
    assert!(due.contains(&confirmation.id), "{due:?}");

    assert_eq!(
        refused(&store, Kind::Marketing).await,
        Some((OptOutScope::Marketing, OptOutSource::Keyword))
    );
    assert_eq!(refused(&store, Kind::Transactional).await, None);
    // Nothing was stored for the refusal.
    assert_eq!(messages_to(&store, CUSTOMER).len(), before + 2);
    // Other customers are not affected.
    let other = store
        .submit(message("+393471234568", Kind::Marketing), None)
        .await;
    assert!(other.is_ok(), "{other:?}");
    store.close().await;
    drop(store);
    // The list is durable.
    let store = open(dir.path());
    assert!(refused(&store, Kind::Marketing).await.is_some());
    store.close().await;
}

#[tokio::test]
async fn stop_all_refuses_everything_and_a_later_stop_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    customer_says(&store, "STOP").await;
    let first = customer_says(&store, "stopall").await;
    assert_eq!(
        refused(&store, Kind::Transactional).await,
        Some((OptOutScope::All, OptOutSource::Keyword))
    );
    assert!(refused(&store, Kind::Marketing).await.is_some());
    // A narrower STOP afterwards keeps STOPALL (and its record), and is answered with the
    // STOPALL text, which says what is in force.
    customer_says(&store, "STOP").await;
    let entry = store.optout(CUSTOMER).unwrap().unwrap();
    assert_eq!(entry.scope, OptOutScope::All);
    assert_eq!(entry.inbound_id, Some(first));
    assert!(refused(&store, Kind::Transactional).await.is_some());
    let texts: Vec<String> = messages_to(&store, CUSTOMER)
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["stopped", "stopped all", "stopped all"]);
    store.close().await;
}

#[tokio::test]
async fn start_lifts_the_opt_out_and_help_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    customer_says(&store, "STOPALL").await;
    customer_says(&store, "HELP").await;
    assert_eq!(
        store.optout(CUSTOMER).unwrap().unwrap().scope,
        OptOutScope::All
    );
    customer_says(&store, "Start.").await;
    assert_eq!(store.optout(CUSTOMER).unwrap(), None);
    assert_eq!(refused(&store, Kind::Marketing).await, None);
    // START from someone not on the list is confirmed too, and changes nothing.
    customer_says(&store, "START").await;
    customer_says(&store, "aiuto").await;
    assert_eq!(store.optout(CUSTOMER).unwrap(), None);
    let texts: Vec<String> = messages_to(&store, CUSTOMER)
        .into_iter()
        .filter(|m| m.kind == Kind::Transactional)
        .map(|m| m.text)
        .collect();
    assert_eq!(
        texts,
        [
            "stopped all",
            "help text",
            "started",
            "started",
            "help text"
        ]
    );
    // Ordinary messages are stored and change nothing.
    customer_says(&store, "stop sending me the wrong size").await;
    assert_eq!(store.optout(CUSTOMER).unwrap(), None);
    assert_eq!(store.list_inbound(None, 100).unwrap().len(), 6);
    store.close().await;
}

#[tokio::test]
async fn confirmations_need_a_number_to_go_to_and_empty_replies_send_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut quiet = settings();
    quiet.stop_reply = String::new();
    let store = open_with(dir.path(), &quiet);
    // The number the customer wrote to cannot be a sender (a modem without its number set):
    // the channel's default sender answers.
    store
        .apply(vec![from_customer(CUSTOMER, "", "HELP")])
        .await
        .unwrap();
    let help = messages_to(&store, CUSTOMER);
    assert_eq!(help.len(), 1);
    assert_eq!(
        (help[0].text.as_str(), help[0].from.as_deref()),
        ("help text", None)
    );
    // A short code is a sender.
    store
        .apply(vec![from_customer(CUSTOMER, "4242", "STOP")])
        .await
        .unwrap();
    assert!(store.optout(CUSTOMER).unwrap().is_some());
    assert_eq!(
        messages_to(&store, CUSTOMER).len(),
        1,
        "no stop_reply: none sent"
    );
    // A customer without an E.164 number is not put on the list and not answered.
    let applied = store
        .apply(vec![from_customer("Amazon", SHOP, "STOP")])
        .await
        .unwrap();
    assert!(matches!(applied[0], Applied::Inbound(_)), "{applied:?}");
    assert!(store.list_optouts(None, 10).unwrap().len() == 1);
    assert!(messages_to(&store, "Amazon").is_empty());
    store.close().await;
}

#[tokio::test]
async fn with_keywords_disabled_the_list_still_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let mut off = settings();
    off.enabled = false;
    let store = open_with(dir.path(), &off);
    customer_says(&store, "STOP").await;
    assert_eq!(store.optout(CUSTOMER).unwrap(), None);
    assert!(messages_to(&store, CUSTOMER).is_empty());
    store
        .add_optout(CUSTOMER, OptOutScope::Marketing)
        .await
        .unwrap();
    assert_eq!(
        refused(&store, Kind::Marketing).await,
        Some((OptOutScope::Marketing, OptOutSource::Api))
    );
    store.close().await;
}

#[tokio::test]
async fn the_api_adds_replaces_lists_and_removes_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for number in ["+393471234569", CUSTOMER, "+4915123456789", "+393471234568"] {
        let entry = store.add_optout(number, OptOutScope::All).await.unwrap();
        assert_eq!(entry.source, OptOutSource::Api);
        assert_eq!((entry.text, entry.inbound_id), (None, None));
    }
    // An operator's explicit choice replaces the entry, narrower or not.
    store
        .add_optout(CUSTOMER, OptOutScope::Marketing)
        .await
        .unwrap();
    assert_eq!(refused(&store, Kind::Transactional).await, None);
    let numbers = |page: Vec<OptOut>| page.into_iter().map(|o| o.number).collect::<Vec<_>>();
    assert_eq!(
        numbers(store.list_optouts(None, 2).unwrap()),
        [CUSTOMER, "+393471234568"]
    );
    assert_eq!(
        numbers(store.list_optouts(Some("+393471234568"), 2).unwrap()),
        ["+393471234569", "+4915123456789"]
    );
    assert!(
        store
            .list_optouts(Some("+4915123456789"), 2)
            .unwrap()
            .is_empty()
    );
    // Entries of other keyspaces never show up.
    store
        .submit(message("+393471234570", Kind::Marketing), None)
        .await
        .unwrap();
    assert_eq!(store.list_optouts(None, 100).unwrap().len(), 4);
    assert!(store.remove_optout(CUSTOMER).await.unwrap());
    assert!(!store.remove_optout(CUSTOMER).await.unwrap());
    assert_eq!(store.optout(CUSTOMER).unwrap(), None);
    assert_eq!(refused(&store, Kind::Marketing).await, None);
    store.close().await;
}

#[tokio::test]
async fn a_repeated_request_accepted_before_the_opt_out_is_answered_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = Some(("api".to_string(), "k1".to_string()));
    let first = store
        .submit(message(CUSTOMER, Kind::Marketing), key.clone())
        .await
        .unwrap();
    customer_says(&store, "STOP").await;
    let again = store
        .submit(message(CUSTOMER, Kind::Marketing), key)
        .await
        .unwrap();
    assert!(matches!(again, Submitted::Existing(_)));
    assert_eq!(again.message().id, first.message().id);
    store.close().await;
}

#[tokio::test]
async fn a_reassembled_keyword_counts_like_a_single_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let part = |seq: u8, text: &str| {
        Update::Inbound(InboundNew {
            part: Some(crate::channel::InboundPart {
                reference: 7,
                total: 2,
                seq,
            }),
            ..match from_customer(CUSTOMER, SHOP, text) {
                Update::Inbound(new) => new,
                _ => unreachable!(),
            }
        })
    };
    let applied = store
        .apply(vec![part(2, "ALL"), part(1, "STOP")])
        .await
        .unwrap();
    assert_eq!(applied[0], Applied::PartKept);
    assert!(matches!(applied[1], Applied::Inbound(_)));
    assert_eq!(
        store.optout(CUSTOMER).unwrap().unwrap().scope,
        OptOutScope::All
    );
    store.close().await;
}

#[tokio::test]
async fn a_multi_part_submit_to_an_opted_out_number_completes_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .add_optout(CUSTOMER, OptOutScope::Marketing)
        .await
        .unwrap();
    let address = |addr: &str| OriginAddress {
        addr: addr.into(),
        ton: 1,
        npi: 1,
    };
    let mut new = message(CUSTOMER, Kind::Marketing);
    new.origin = Some(Origin {
        account: "shopA".into(),
        receipt: ReceiptRequest::Final,
        source: address("3900111"),
        dest: address("393471234567"),
    });
    let part = |reference: u16, seq: u8, text: &str, message: &NewMessage| SubmitPart {
        scope: smpp_target("shopA"),
        source: "3900111".into(),
        reference,
        total: 2,
        seq,
        text: text.into(),
        message: message.clone(),
    };
    let kept = store.submit_part(part(9, 1, "Sale: ", &new)).await.unwrap();
    let completed = store
        .submit_part(part(9, 2, "50% off", &new))
        .await
        .unwrap();
    let PartSubmitted::Complete(m) = completed else {
        panic!("not complete: {completed:?}");
    };
    assert_eq!(m.id, kept.id());
    assert_eq!(m.status, Status::Failed);
    let reason = m.history.last().unwrap().reason.clone().unwrap();
    assert!(reason.contains("opted out of marketing"), "{reason}");
    assert!(m.parts.iter().all(|p| p.status == Status::Failed));
    assert!(
        store
            .due(&store.lanes(), now_millis(), 10)
            .unwrap()
            .is_empty()
    );
    // The client asked for receipts: it learns the failure from one.
    let owed = store.outbox(&smpp_target("shopA"), None, 10).unwrap();
    assert!(
        matches!(
            &owed[..],
            [OutboxEntry {
                item: OutboxItem::Receipt {
                    status: Status::Failed,
                    ..
                },
                ..
            }]
        ),
        "{owed:?}"
    );
    // A transactional one goes.
    new.kind = Kind::Transactional;
    store.submit_part(part(10, 1, "Your ", &new)).await.unwrap();
    let completed = store.submit_part(part(10, 2, "order", &new)).await.unwrap();
    let PartSubmitted::Complete(m) = completed else {
        panic!("not complete: {completed:?}");
    };
    assert_eq!(m.status, Status::Queued);
    store.close().await;
}

#[tokio::test]
async fn messages_queued_before_the_opt_out_are_canceled_when_they_come_due() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let offer = store
        .submit(message(CUSTOMER, Kind::Marketing), None)
        .await
        .unwrap()
        .message()
        .id;
    let order = store
        .submit(message(CUSTOMER, Kind::Transactional), None)
        .await
        .unwrap()
        .message()
        .id;
    // The customer opts out of marketing while both wait for a channel.
    store
        .add_optout(CUSTOMER, OptOutScope::Marketing)
        .await
        .unwrap();
    let claimed = store
        .claim(vec![offer, order], "carrier".into())
        .await
        .unwrap();
    let ids: Vec<_> = claimed.iter().map(|c| c.message.id).collect();
    assert_eq!(ids, [order], "the order still goes");
    let canceled = store.get(offer).unwrap().unwrap();
    assert_eq!(canceled.status, Status::Canceled);
    assert!(canceled.parts.iter().all(|p| p.status == Status::Canceled));
    let reason = canceled.history.last().unwrap().reason.clone().unwrap();
    assert!(
        reason.starts_with("the recipient opted out of marketing messages"),
        "{reason}"
    );
    assert_eq!(canceled.attempts, 0);
    assert!(
        store
            .due(&store.lanes(), now_millis(), 10)
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_list_still_refuses_after_a_restart() {
    // The writer skips the list's reads for numbers it knows are not on it: what it knows must
    // come from the disk at open, for entries from the API and from keywords alike.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .add_optout("+393471234569", OptOutScope::All)
            .await
            .unwrap();
        customer_says(&store, "STOP").await;
        store.close().await;
    }
    let store = open(dir.path());
    assert_eq!(
        refused(&store, Kind::Marketing).await,
        Some((OptOutScope::Marketing, OptOutSource::Keyword))
    );
    let by_api = store
        .submit(message("+393471234569", Kind::Transactional), None)
        .await;
    assert!(
        matches!(by_api, Err(StoreError::OptedOut { .. })),
        "{by_api:?}"
    );
    store.close().await;
}
