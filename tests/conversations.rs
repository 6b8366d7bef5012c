//! Conversations end to end: the real `parla` binary with two `parla sim smsc` carriers. The
//! shop's order notification goes out on the route's carrier from an alphanumeric sender; the
//! customer answers the shop's number on the other carrier; both land in one thread, and the
//! shop's reply through the API goes out on the carrier and from the number the customer used.
//! Long messages: one status from the receipts of all their parts.

mod support;

use serde_json::{Value, json};
use support::{
    Binary, Client, Listening, long_gsm, start_sim_smsc, wait_api, wait_delivered, write_config,
};

const CUSTOMER: &str = "+393471234567";
/// The shop's number on carrier B: customers write to it (the alphanumeric sender of carrier
/// A cannot be answered).
const SHOP_NUMBER: &str = "+393400000002";

fn digits(number: &str) -> &str {
    number.trim_start_matches('+')
}

/// The SMS `smsc` took for the customer with text `text`.
fn sms_to_customer(smsc: &Listening, text: &str) -> Value {
    smsc.wait_event("message", |e| {
        e["dest"] == digits(CUSTOMER) && e["text"] == text
    })
}

fn start(dir: &std::path::Path, a: &Listening, b: &Listening) -> Binary {
    let link = |name: &str, port: u16, source: &str| {
        format!(
            "[[smpp.client]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             system_id = \"{name}\"\npassword = \"secret\"\nreconnect_min = \"100ms\"\n\
             reconnect_max = \"300ms\"\nbind_refused_backoff = \"300ms\"\nsource = \"{source}\"\n"
        )
    };
    let config = write_config(
        dir,
        &format!(
            "[store]\npath = \"store\"\n\
             [retry]\ninitial_backoff = \"100ms\"\nmax_backoff = \"500ms\"\n\
             {}{}\
             [[route]]\nchannels = [\"carrier-a\"]\n",
            link("carrier-a", a.port, "MyShop"),
            link("carrier-b", b.port, SHOP_NUMBER),
        ),
    );
    let parla = Binary::start(dir, Some(&config), &[]);
    wait_api(&parla.client, "/v1/channels", "both links up", |b| {
        b["items"]
            .as_array()
            .is_some_and(|links| links.len() == 2 && links.iter().all(|l| l["state"] == "up"))
    });
    parla
}

fn thread(client: &Client) -> Value {
    let answer = client.get(&format!("/v1/conversations/{CUSTOMER}"));
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.body
}

fn texts(thread: &Value) -> Vec<String> {
    thread["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn an_order_and_the_customer_s_answer_share_a_thread_and_the_reply_sticks_to_their_channel() {
    let carrier_a = start_sim_smsc(&[]);
    let mut carrier_b = start_sim_smsc(&[]);
    let dir = tempfile::tempdir().unwrap();
    let parla = start(dir.path(), &carrier_a, &carrier_b);
    let client = &parla.client;

    // The order notification takes the route: carrier A, from the alphanumeric sender.
    let order = client.post(
        "/v1/messages",
        &json!({"to": CUSTOMER, "text": "Your order 1234 ships tomorrow",
                "reference": "order-1234"}),
    );
    assert_eq!(order.status, 202, "{:?}", order.body);
    let order_id = order.body["id"].as_str().unwrap();
    let delivered = wait_delivered(client, order_id);
    assert_eq!(delivered["channel"], "carrier-a");
    let sms = sms_to_customer(&carrier_a, "Your order 1234 ships tomorrow");
    assert_eq!(sms["source"], "MyShop");

    // The customer answers the shop's number, which carrier B serves.
    carrier_b.command(&format!(
        "mo {CUSTOMER} {SHOP_NUMBER} single Can you deliver Saturday?"
    ));
    let answered = wait_api(
        client,
        "/v1/inbound?since=2020-01-01T00:00:00Z",
        "the answer",
        |b| b["items"].as_array().is_some_and(|items| !items.is_empty()),
    );
    assert_eq!(answered["items"][0]["channel"], "carrier-b");
    let unread = client.get("/v1/conversations").body;
    assert_eq!(unread["items"][0]["unread"], 1, "{unread}");
    let t = thread(client);
    assert_eq!(
        texts(&t),
        [
            "Can you deliver Saturday?",
            "Your order 1234 ships tomorrow"
        ],
        "one thread, newest first: {t}"
    );
    assert_eq!(t["items"][1]["id"], order_id);
    assert_eq!(t["items"][1]["status"], "delivered");
    assert_eq!(t["items"][0]["direction"], "in");
    assert_eq!(t["conversation"]["reference"], "order-1234");
    assert_eq!(t["conversation"]["channel"], "carrier-b");
    let listed = client.get("/v1/conversations?reference=order-1234").body;
    assert_eq!(listed["items"][0]["customer"], CUSTOMER, "{listed}");
    assert_eq!(
        listed["items"][0]["unread"], 0,
        "reading the thread marked it read"
    );

    // The shop replies in the thread: carrier B (not the route's A), from the number the
    // customer wrote to.
    let reply = client.post(
        &format!("/v1/conversations/{CUSTOMER}/messages"),
        &json!({"text": "Yes, Saturday it is"}),
    );
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    assert_eq!(reply.body["from"], SHOP_NUMBER);
    let delivered = wait_delivered(client, reply.body["id"].as_str().unwrap());
    assert_eq!(delivered["channel"], "carrier-b");
    let sms = sms_to_customer(&carrier_b, "Yes, Saturday it is");
    assert_eq!(sms["source"], digits(SHOP_NUMBER));
    assert!(
        carrier_a
            .events("message")
            .iter()
            .all(|e| e["text"] != "Yes, Saturday it is"),
        "the reply went out once, on B"
    );
    assert_eq!(
        texts(&thread(client)),
        [
            "Yes, Saturday it is",
            "Can you deliver Saturday?",
            "Your order 1234 ships tomorrow"
        ]
    );

    // Carrier B goes away: a reply waits for no one, the route's carrier takes it.
    carrier_b.command("refuse-binds 0x0D");
    carrier_b.command("drop");
    wait_api(client, "/v1/channels", "carrier B down", |b| {
        b["items"].as_array().is_some_and(|links| {
            links
                .iter()
                .any(|l| l["name"] == "carrier-b" && l["state"] != "up")
        })
    });
    let fallback = client.post(
        &format!("/v1/conversations/{CUSTOMER}/messages"),
        &json!({"text": "The driver calls before"}),
    );
    assert_eq!(fallback.status, 202, "{:?}", fallback.body);
    let delivered = wait_delivered(client, fallback.body["id"].as_str().unwrap());
    assert_eq!(delivered["channel"], "carrier-a");
    sms_to_customer(&carrier_a, "The driver calls before");
    drop(parla);
}

#[test]
fn receipts_of_every_part_make_one_status_and_a_failed_part_fails_the_message() {
    let mut carrier_a = start_sim_smsc(&[]);
    let carrier_b = start_sim_smsc(&[]);
    let dir = tempfile::tempdir().unwrap();
    let parla = start(dir.path(), &carrier_a, &carrier_b);
    let client = &parla.client;
    let send = |text: &str| {
        let answer = client.post("/v1/messages", &json!({"to": CUSTOMER, "text": text}));
        assert_eq!(answer.status, 202, "{:?}", answer.body);
        assert_eq!(answer.body["parts"], 3);
        answer.body["id"].as_str().unwrap().to_owned()
    };

    // Three parts, three receipts: one "delivered", once every part is.
    let whole = send(&long_gsm("whole"));
    let m = wait_delivered(client, &whole);
    let parts = m["part_states"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    assert!(parts.iter().all(|p| p["status"] == "delivered"), "{m}");
    let ids: std::collections::BTreeSet<_> = parts
        .iter()
        .filter_map(|p| p["remote_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 3, "each part has its own id at the SMSC: {m}");
    let delivered_transitions = m["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "delivered")
        .count();
    assert_eq!(delivered_transitions, 1, "{m}");

    // The second part is undeliverable: the message fails, saying which part and why.
    carrier_a.command("undeliver 2");
    carrier_a.wait_event("undeliver", |_| true);
    let broken = send(&long_gsm("broken"));
    // (The other parts' receipts still count for their parts once the message failed.)
    let m = client.wait_for(&broken, support::GUARD, |m| {
        m["status"] == "failed"
            && m["part_states"]
                .as_array()
                .is_some_and(|parts| parts.iter().all(|p| p["status"] != "sent"))
    });
    let states: Vec<_> = m["part_states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(states, ["delivered", "failed", "delivered"], "{m}");
    let reason = m["history"].as_array().unwrap().last().unwrap()["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(reason, "part 2 of 3: undeliverable (receipt err:001)");
    drop(parla);
}
