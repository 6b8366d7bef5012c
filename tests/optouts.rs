//! Opt-outs end to end: the real `parla` binary with `parla sim smsc` as its carrier, over an
//! SMPP link. A customer's STOP reaches parla as a deliver_sm, is confirmed by an SMS back to
//! them, and refuses marketing at the API; START lifts it.

mod support;

use serde_json::{Value, json};
use support::{Binary, Client, Listening, start_sim_smsc, wait_api, wait_delivered, write_config};

const CUSTOMER: &str = "+393471234567";
const SHOP: &str = "+393400000001";

fn send(client: &Client, kind: &str, text: &str) -> support::Answer {
    client.post(
        "/v1/messages",
        &json!({"to": CUSTOMER, "text": text, "kind": kind}),
    )
}

/// The SMS the SMSC took for the customer whose text starts with `head`.
fn sms_to_customer(smsc: &Listening, head: &str) -> Value {
    smsc.wait_event("message", |e| {
        e["dest"] == CUSTOMER.trim_start_matches('+')
            && e["text"].as_str().is_some_and(|t| t.starts_with(head))
    })
}

#[test]
fn stop_blocks_marketing_and_is_confirmed_start_lifts_it() {
    let mut smsc = start_sim_smsc(&[]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[store]\npath = \"store\"\n\
             [retry]\ninitial_backoff = \"100ms\"\nmax_backoff = \"500ms\"\n\
             [optouts]\nstop_reply = \"Stopped: reply START to undo\"\n\
             start_reply = \"Started again: reply STOP to stop\"\n\
             [[smpp.client]]\nname = \"carrier\"\nhost = \"127.0.0.1\"\nport = {}\n\
             system_id = \"carrier\"\npassword = \"secret\"\nreconnect_min = \"100ms\"\n\
             reconnect_max = \"500ms\"\nsource = \"Shop\"\n",
            smsc.port
        ),
    );
    let mut parla = Binary::start(dir.path(), Some(&config), &[]);
    let client = parla.client.clone();
    wait_api(&client, "/v1/channels", "the link up", |b| {
        b["items"][0]["state"] == "up"
    });
    let first = send(&client, "marketing", "Sale: 20% off today");
    assert_eq!(first.status, 202, "{:?}", first.body);
    wait_delivered(&client, first.body["id"].as_str().unwrap());

    // The customer answers STOP: it is confirmed from the number they wrote to.
    smsc.command(&format!("mo {CUSTOMER} {SHOP} single STOP"));
    let confirmation = sms_to_customer(&smsc, "Stopped");
    assert_eq!(confirmation["text"], "Stopped: reply START to undo");
    assert_eq!(
        confirmation["source"],
        SHOP.trim_start_matches('+'),
        "{confirmation}"
    );
    let entry = client.get(&format!("/v1/optouts/{CUSTOMER}"));
    assert_eq!(entry.status, 200, "{:?}", entry.body);
    assert_eq!(entry.body["scope"], "marketing");
    assert_eq!(entry.body["source"], "keyword");
    assert_eq!(entry.body["text"], "STOP");

    // Marketing is refused; transactional messages still go.
    let refused = send(&client, "marketing", "Sale: 30% off today");
    assert_eq!(
        (refused.status, refused.code()),
        (422, "opted_out"),
        "{:?}",
        refused.body
    );
    let order = send(&client, "transactional", "Your order 1234 has shipped");
    assert_eq!(order.status, 202, "{:?}", order.body);
    wait_delivered(&client, order.body["id"].as_str().unwrap());
    sms_to_customer(&smsc, "Your order 1234");

    // START lifts it, and is confirmed too.
    smsc.command(&format!("mo {CUSTOMER} {SHOP} single start"));
    let started = sms_to_customer(&smsc, "Started again");
    assert_eq!(started["source"], SHOP.trim_start_matches('+'), "{started}");
    wait_api(&client, "/v1/optouts", "the list empty again", |b| {
        b["items"].as_array().is_some_and(Vec::is_empty)
    });
    let again = send(&client, "marketing", "Sale: 40% off today");
    assert_eq!(again.status, 202, "{:?}", again.body);
    wait_delivered(&client, again.body["id"].as_str().unwrap());
    sms_to_customer(&smsc, "Sale: 40%");
    // The refused one never reached the SMSC.
    assert!(
        smsc.events("message")
            .iter()
            .all(|e| !e["text"].as_str().unwrap_or("").contains("30%")),
        "{}",
        smsc.all_events()
    );
    // Both keywords are stored as the customer's messages.
    let inbound = client.get("/v1/inbound").body;
    let texts: Vec<&str> = inbound["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, ["start", "STOP"], "{inbound}");

    let status = parla.terminate();
    assert!(status.success(), "{status:?}\n{}", parla.log());
}
