//! The HTTP API over real loopback TCP against a real sled store: what integrators see, and that
//! bad input gets its documented error and leaves the store unchanged.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Client, InProcess};

/// A daemon with no channel: messages stay queued, so the store only changes through the API.
fn quiet_daemon() -> InProcess {
    InProcess::start(|s| {
        s.defaults.region = Some("IT".into());
        s.defaults.max_parts = 3;
    })
}

fn message_count(client: &Client) -> usize {
    client.all_messages().len()
}

#[test]
fn submit_get_list_and_cancel() {
    let d = quiet_daemon();
    let c = &d.client;
    let a = c.post(
        "/v1/messages",
        &json!({"to": "347 123 4567", "text": "Your order 1234 ships tomorrow", "from": "MyShop",
                "reference": "order-1234", "kind": "marketing"}),
    );
    assert_eq!(a.status, 202, "{:?}", a.body);
    assert_eq!(a.body["status"], "queued");
    assert_eq!(
        a.body["to"], "+393471234567",
        "national number normalized with the region"
    );
    assert_eq!(a.body["parts"], 1);
    assert_eq!(a.body["encoding"], "gsm7");
    assert_eq!(a.body["kind"], "marketing");
    let id = a.body["id"].as_str().unwrap().to_string();

    let ucs2 = c.post(
        "/v1/messages",
        &json!({"to": "+393471234568", "text": "Grazie! 🎉 Il tuo ordine è in consegna"}),
    );
    assert_eq!(ucs2.status, 202);
    assert_eq!(ucs2.body["encoding"], "ucs2");

    let got = c.get(&format!("/v1/messages/{id}"));
    assert_eq!(got.status, 200);
    assert_eq!(got.body["reference"], "order-1234");
    assert_eq!(got.body["history"][0]["status"], "queued");

    let page = c.get("/v1/messages?limit=1");
    assert_eq!(page.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(page.body["items"][0]["id"], ucs2.body["id"], "newest first");
    let cursor = page.body["next_cursor"].as_str().unwrap();
    let page2 = c.get(&format!("/v1/messages?limit=1&cursor={cursor}"));
    assert_eq!(page2.body["items"][0]["id"], id.as_str());
    let by_to = c.get("/v1/messages?to=%2B393471234567&status=queued");
    assert_eq!(by_to.body["items"].as_array().unwrap().len(), 1);

    let canceled = c.delete(&format!("/v1/messages/{id}"));
    assert_eq!(canceled.status, 200, "{:?}", canceled.body);
    assert_eq!(canceled.body["status"], "canceled");
    let again = c.delete(&format!("/v1/messages/{id}"));
    assert_eq!(again.status, 409);
    assert_eq!(again.code(), "not_cancelable");
    let canceled_list = c.get("/v1/messages?status=canceled");
    assert_eq!(canceled_list.body["items"].as_array().unwrap().len(), 1);
}

#[test]
fn idempotency_key_replays_or_conflicts() {
    let d = quiet_daemon();
    let c = &d.client;
    let body = json!({"to": "+393471234567", "text": "code 123456"});
    let send = |b: &Value, key: &str| {
        c.request(
            "POST",
            "/v1/messages",
            Some(b.to_string().as_bytes()),
            &[("Idempotency-Key", key)],
        )
        .unwrap()
    };
    let first = send(&body, "order-1234-sms");
    let second = send(&body, "order-1234-sms");
    assert_eq!(first.status, 202);
    assert_eq!(second.status, 202);
    assert_eq!(first.body["id"], second.body["id"]);
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    let different = send(
        &json!({"to": "+393471234567", "text": "code 999999"}),
        "order-1234-sms",
    );
    assert_eq!(different.status, 409);
    assert_eq!(different.code(), "idempotency_conflict");
    assert_eq!(message_count(c), 1);
}

/// What is sent, the body, and the expected status, error code and field.
type BadCase = (
    &'static str,
    Vec<u8>,
    u16,
    &'static str,
    Option<&'static str>,
);

/// Each bad request gets its status and code, and the store is unchanged afterwards.
#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let d = quiet_daemon();
    let c = &d.client;
    assert_eq!(
        c.post(
            "/v1/messages",
            &json!({"to": "+393471234567", "text": "ok"})
        )
        .status,
        202
    );
    let before = c.all_messages();
    let long_text = "x".repeat(153 * 3 + 1);
    let cases: Vec<BadCase> = vec![
        (
            "malformed JSON",
            b"{\"to\": ".to_vec(),
            400,
            "malformed_json",
            None,
        ),
        (
            "not JSON",
            b"to=123&text=hi".to_vec(),
            400,
            "malformed_json",
            None,
        ),
        (
            "unknown field",
            br#"{"to":"+393471234567","text":"hi","priority":9}"#.to_vec(),
            400,
            "invalid_request",
            None,
        ),
        (
            "wrong type",
            br#"{"to":393471234567,"text":"hi"}"#.to_vec(),
            400,
            "invalid_request",
            Some("to"),
        ),
        (
            "missing text",
            br#"{"to":"+393471234567"}"#.to_vec(),
            400,
            "invalid_request",
            None,
        ),
        (
            "unknown kind",
            br#"{"to":"+393471234567","text":"hi","kind":"spam"}"#.to_vec(),
            400,
            "invalid_request",
            Some("kind"),
        ),
        (
            "invalid number",
            br#"{"to":"+39 12","text":"hi"}"#.to_vec(),
            422,
            "invalid_number",
            Some("to"),
        ),
        (
            "letters as number",
            br#"{"to":"call me","text":"hi"}"#.to_vec(),
            422,
            "invalid_number",
            Some("to"),
        ),
        (
            "empty text",
            br#"{"to":"+393471234567","text":"  "}"#.to_vec(),
            422,
            "empty_text",
            Some("text"),
        ),
        (
            "too many parts",
            json!({"to":"+393471234567","text": long_text})
                .to_string()
                .into_bytes(),
            422,
            "too_many_parts",
            Some("text"),
        ),
        (
            "bad sender",
            br#"{"to":"+393471234567","text":"hi","from":"ThisIsTooLongASender"}"#.to_vec(),
            422,
            "invalid_sender",
            Some("from"),
        ),
        (
            "bad send_at",
            br#"{"to":"+393471234567","text":"hi","send_at":"tomorrow"}"#.to_vec(),
            422,
            "invalid_send_at",
            Some("send_at"),
        ),
        (
            "bad validity",
            br#"{"to":"+393471234567","text":"hi","validity_s":5}"#.to_vec(),
            422,
            "invalid_validity",
            Some("validity_s"),
        ),
    ];
    for (what, body, status, code, field) in cases {
        let a = c.request("POST", "/v1/messages", Some(&body), &[]).unwrap();
        assert_eq!(a.status, status, "{what}: {:?}", a.body);
        assert_eq!(a.code(), code, "{what}: {:?}", a.body);
        assert!(
            a.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        if let Some(f) = field {
            assert_eq!(a.body["error"]["field"], f, "{what}: {:?}", a.body);
        }
    }
    let bad_key = c
        .request(
            "POST",
            "/v1/messages",
            Some(br#"{"to":"+393471234567","text":"hi"}"#),
            &[("Idempotency-Key", "has spaces in it")],
        )
        .unwrap();
    assert_eq!(
        (bad_key.status, bad_key.code()),
        (400, "invalid_idempotency_key")
    );
    for (path, status, code) in [
        ("/v1/messages/not-an-id", 404, "not_found"),
        ("/v1/messages/01J0000000000000000000000Z", 404, "not_found"),
        ("/v1/nothing", 404, "not_found"),
        ("/v1/messages?limit=0", 400, "invalid_query"),
        ("/v1/messages?status=lost", 400, "invalid_query"),
        ("/v1/messages?cursor=zzz", 400, "invalid_query"),
        ("/v1/messages?bogus=1", 400, "invalid_query"),
    ] {
        let a = c.get(path);
        assert_eq!((a.status, a.code()), (status, code), "{path}: {:?}", a.body);
    }
    let put = c.request("PUT", "/v1/messages", Some(b"{}"), &[]).unwrap();
    assert_eq!((put.status, put.code()), (405, "method_not_allowed"));
    assert_eq!(c.all_messages(), before, "the store is unchanged");
}

/// A 2 MB body is refused with 413 from its Content-Length, before it is read.
#[test]
fn oversized_body_is_refused() {
    let d = quiet_daemon();
    let addr = d.client.base.trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let size = 2 * 1024 * 1024;
    write!(
        stream,
        "POST /v1/messages HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {size}\r\n\r\n"
    )
    .unwrap();
    // Send part of the body; the server must answer without waiting for the rest.
    let _ = stream.write_all(&vec![b' '; 256 * 1024]);
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
        if response.windows(4).any(|w| w == b"\r\n\r\n") && response.ends_with(b"}}") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("payload_too_large"), "{text}");
    assert!(d.client.all_messages().is_empty());

    // Also the chunked way, where the size is only known while reading.
    let big = json!({"to": "+393471234567", "text": "y".repeat(size)}).to_string();
    let a = d
        .client
        .request("POST", "/v1/messages", Some(big.as_bytes()), &[]);
    if let Ok(a) = a {
        assert_eq!((a.status, a.code()), (413, "payload_too_large"));
    }
    // A fresh client: the server closes a connection whose body it refused to read, and a
    // pooled connection might be that one.
    let fresh = Client::new(addr.parse().unwrap());
    assert!(fresh.all_messages().is_empty());
}

#[test]
fn tokens_are_required_when_configured() {
    let token = "s3cret-token-0123456789";
    let d = InProcess::start(|s| s.http.tokens = vec![token.into()]);
    let body = json!({"to": "+393471234567", "text": "hi"});
    let none = d.client.post("/v1/messages", &body);
    assert_eq!((none.status, none.code()), (401, "unauthorized"));
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let wrong = d
        .client
        .clone()
        .with_token("s3cret-token-0123456780")
        .post("/v1/messages", &body);
    assert_eq!((wrong.status, wrong.code()), (401, "unauthorized"));
    let authed = d.client.clone().with_token(token);
    assert!(
        authed.all_messages().is_empty(),
        "refused requests stored nothing"
    );
    assert_eq!(authed.post("/v1/messages", &body).status, 202);
    assert_eq!(authed.all_messages().len(), 1);
    // Health checks need no token.
    assert_eq!(d.client.get("/healthz").status, 200);
}

#[test]
fn sim_channel_delivers_and_customers_reply() {
    let d = InProcess::start(|s| {
        s.sim.enabled = true;
        s.sim.accept_delay = Duration::from_millis(5);
        s.sim.delivery_delay = Duration::from_millis(50);
        s.sim.failure_share = 0.0;
        s.sim.reply_share = 1.0;
    });
    let c = &d.client;
    // 200 GSM 7-bit characters (è is in the alphabet): two parts.
    let text = "Il tuo ordine è partito! ".repeat(8);
    let a = c.post(
        "/v1/messages",
        &json!({"to": "+393471234567", "text": text, "from": "MyShop"}),
    );
    assert_eq!(a.status, 202);
    assert_eq!(a.body["parts"], 2);
    let id = a.body["id"].as_str().unwrap();
    let done = c.wait_for(id, Duration::from_secs(20), |m| m["status"] == "delivered");
    let statuses: Vec<&str> = done["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["queued", "sending", "sent", "delivered"]);
    assert!(
        done["part_states"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["remote_id"].is_string())
    );
    let start = std::time::Instant::now();
    loop {
        let inbound = c.get("/v1/inbound");
        if let Some(reply) = inbound.body["items"].as_array().and_then(|i| i.first()) {
            assert_eq!(reply["from"], "+393471234567");
            assert_eq!(reply["to"], "MyShop");
            assert_eq!(reply["in_reply_to"], id);
            assert_eq!(reply["parts"], 1);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no reply came");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The channel list shows the simulator up, with what it carried (counted once the
    // correlator's commit returned, a moment after the reply became readable).
    let start = std::time::Instant::now();
    let channels = loop {
        let channels = c.get("/v1/channels");
        assert_eq!(channels.status, 200);
        if channels.body["items"][0]["received"] == 1 || start.elapsed() > Duration::from_secs(5) {
            break channels;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let sim = &channels.body["items"][0];
    assert_eq!(sim["name"], "sim");
    assert_eq!(sim["kind"], "sim");
    assert_eq!(sim["state"], "up");
    assert_eq!(sim["sent"], 2, "{sim}");
    assert_eq!(sim["received"], 1, "{sim}");
    assert_eq!(sim["failed"], 0);
    assert!(sim.get("modem").is_none());
}

#[test]
fn scheduled_message_waits_for_send_at() {
    let d = InProcess::start(|s| {
        s.sim.enabled = true;
        s.sim.accept_delay = Duration::from_millis(1);
        s.sim.delivery_delay = Duration::from_millis(10);
        s.sim.failure_share = 0.0;
    });
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600);
    let a = d.client.post(
        "/v1/messages",
        &json!({"to": "+393471234567", "text": "tomorrow's deal", "send_at": later.to_string()}),
    );
    assert_eq!(a.status, 202, "{:?}", a.body);
    let now = d.client.post(
        "/v1/messages",
        &json!({"to": "+393471234567", "text": "now"}),
    );
    d.client.wait_for(
        now.body["id"].as_str().unwrap(),
        Duration::from_secs(20),
        |m| m["status"] == "delivered",
    );
    let held = d
        .client
        .get(&format!("/v1/messages/{}", a.body["id"].as_str().unwrap()));
    assert_eq!(held.body["status"], "queued", "not sent before send_at");
}

fn http_addr(d: &InProcess) -> std::net::SocketAddr {
    d.client.base.trim_start_matches("http://").parse().unwrap()
}

/// A client that opens a connection and trickles its headers is cut off after
/// http.header_read_timeout, instead of holding the connection forever.
#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let d = InProcess::start(|s| s.http.header_read_timeout = Duration::from_millis(500));
    let mut slow = std::net::TcpStream::connect(http_addr(&d)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let start = std::time::Instant::now();
    let mut rest = Vec::new();
    // The server closes the connection (possibly after a 408); the read ends either way.
    let _ = slow.read_to_end(&mut rest);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the connection stayed open"
    );
    let answer = String::from_utf8_lossy(&rest);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    // Others are served normally meanwhile and after.
    assert_eq!(d.client.get("/healthz").status, 200);
}

/// Past http.max_connections, new clients wait for a free slot rather than being served at
/// once; idle connections are closed by the header timeout, which frees the slots.
#[test]
fn connections_beyond_the_cap_wait_for_a_slot() {
    let d = InProcess::start(|s| {
        s.http.max_connections = 2;
        s.http.header_read_timeout = Duration::from_secs(1);
    });
    let idle: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(http_addr(&d)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let start = std::time::Instant::now();
    assert_eq!(d.client.get("/healthz").status, 200);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(700),
        "served after {waited:?}: the cap did not hold"
    );
    drop(idle);
}

/// Applies a customer's message as a channel would report it (no channel runs here).
fn customer_says(d: &InProcess, from: &str, to: &str, text: &str) {
    let update = parla::store::Update::Inbound(parla::store::InboundNew {
        channel: "carrier".into(),
        from: from.into(),
        to: to.into(),
        text: text.into(),
        received_at: parla::message::now_millis(),
        in_reply_to: None,
        part: None,
        dedupe: None,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let applied = runtime.block_on(d.store.apply(vec![update])).unwrap();
    assert!(
        matches!(applied[..], [parla::store::Applied::Inbound(_)]),
        "{applied:?}"
    );
}

#[test]
fn a_stop_keyword_refuses_marketing_with_opted_out_and_start_lifts_it() {
    let d = quiet_daemon();
    let c = &d.client;
    let send = |kind: &str| {
        c.post(
            "/v1/messages",
            &json!({"to": "347 123 4567", "text": "Sale today", "kind": kind}),
        )
    };
    assert_eq!(send("marketing").status, 202);
    customer_says(&d, "+393471234567", "+393400000001", "Stop");
    let before = message_count(c);
    let refused = send("marketing");
    assert_eq!(
        (refused.status, refused.code()),
        (422, "opted_out"),
        "{:?}",
        refused.body
    );
    assert_eq!(refused.body["error"]["field"], "to");
    let why = refused.body["error"]["message"].as_str().unwrap();
    assert!(
        why.contains("+393471234567 opted out of marketing messages") && why.contains("\"Stop\""),
        "{why}"
    );
    assert_eq!(message_count(c), before, "a refusal stores nothing");
    assert_eq!(send("transactional").status, 202);
    // The confirmation is queued to the customer from the number they wrote to.
    let confirmation = c.get("/v1/messages?to=%2B393471234567").body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["from"] == "+393400000001")
        .cloned()
        .expect("a confirmation");
    assert_eq!(confirmation["kind"], "transactional");
    assert!(
        confirmation["text"].as_str().unwrap().contains("START"),
        "{confirmation}"
    );

    let entry = c.get("/v1/optouts/+393471234567");
    assert_eq!(entry.status, 200, "{:?}", entry.body);
    assert_eq!(entry.body["scope"], "marketing");
    assert_eq!(entry.body["source"], "keyword");
    assert_eq!(entry.body["text"], "Stop");
    let inbound = c.get("/v1/inbound").body;
    assert_eq!(entry.body["inbound_id"], inbound["items"][0]["id"]);
    // National numbers are read in the region, as for /v1/messages.
    assert_eq!(c.get("/v1/optouts/3471234567").body, entry.body);

    customer_says(&d, "+393471234567", "+393400000001", "START");
    assert_eq!(c.get("/v1/optouts/+393471234567").status, 404);
    assert_eq!(send("marketing").status, 202);
}

#[test]
fn optouts_are_added_listed_and_removed_through_the_api() {
    let d = quiet_daemon();
    let c = &d.client;
    let added = c.post(
        "/v1/optouts",
        &json!({"number": "347 123 4567", "scope": "all"}),
    );
    assert_eq!(added.status, 201, "{:?}", added.body);
    assert_eq!(added.body["number"], "+393471234567");
    assert_eq!(added.body["scope"], "all");
    assert_eq!(added.body["source"], "api");
    assert_eq!(added.body["text"], Value::Null);
    assert!(added.body["at"].as_str().unwrap().ends_with('Z'));
    let refused = c.post(
        "/v1/messages",
        &json!({"to": "+393471234567", "text": "Your code is 1234"}),
    );
    assert_eq!((refused.status, refused.code()), (422, "opted_out"));
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("all messages"),
        "{:?}",
        refused.body
    );
    for number in ["+49301234567", "+393471234568"] {
        let a = c.post(
            "/v1/optouts",
            &json!({"number": number, "scope": "marketing"}),
        );
        assert_eq!(a.status, 201);
    }
    let page = c.get("/v1/optouts?limit=2");
    assert_eq!(page.status, 200);
    let numbers = |b: &Value| -> Vec<String> {
        b["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["number"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(numbers(&page.body), ["+393471234567", "+393471234568"]);
    let cursor = page.body["next_cursor"].as_str().unwrap();
    let next = c.get(&format!(
        "/v1/optouts?limit=2&cursor={}",
        cursor.replace('+', "%2B")
    ));
    assert_eq!(numbers(&next.body), ["+49301234567"]);
    assert_eq!(next.body["next_cursor"], Value::Null);

    // Bad requests change nothing.
    for (body, status, code) in [
        (
            json!({"number": "12", "scope": "all"}),
            422,
            "invalid_number",
        ),
        (
            json!({"number": "+393471234569", "scope": "some"}),
            400,
            "invalid_request",
        ),
        (json!({"number": "+393471234569"}), 400, "invalid_request"),
        (
            json!({"number": "+393471234569", "scope": "all", "why": "x"}),
            400,
            "invalid_request",
        ),
    ] {
        let a = c.post("/v1/optouts", &body);
        assert_eq!((a.status, a.code()), (status, code), "{body}: {:?}", a.body);
    }
    assert_eq!(
        c.get("/v1/optouts").body["items"].as_array().unwrap().len(),
        3
    );
    assert_eq!(c.get("/v1/optouts?limit=0").code(), "invalid_query");
    assert_eq!(c.get("/v1/optouts/not-a-number").code(), "invalid_number");

    let removed = c.delete("/v1/optouts/%2B393471234567");
    assert_eq!(removed.status, 204);
    let again = c.delete("/v1/optouts/+393471234567");
    assert_eq!((again.status, again.code()), (404, "not_found"));
    assert_eq!(c.get("/v1/optouts/+393471234567").status, 404);
    let sent = c.post(
        "/v1/messages",
        &json!({"to": "+393471234567", "text": "Your code is 1234"}),
    );
    assert_eq!(sent.status, 202);
}

#[test]
fn optouts_need_the_token_like_every_v1_route() {
    let token = "s3cret-token-0123456789";
    let d = InProcess::start(|s| s.http.tokens = vec![token.into()]);
    let body = json!({"number": "+393471234567", "scope": "all"});
    assert_eq!(d.client.post("/v1/optouts", &body).status, 401);
    assert_eq!(d.client.get("/v1/optouts").status, 401);
    assert_eq!(d.client.delete("/v1/optouts/+393471234567").status, 401);
    let authed = d.client.clone().with_token(token);
    assert_eq!(authed.post("/v1/optouts", &body).status, 201);
    assert_eq!(authed.get("/v1/optouts/+393471234567").status, 200);
}

#[test]
fn conversations_list_threads_mark_read_and_reply_from_the_sticky_number() {
    let d = quiet_daemon();
    let c = &d.client;
    assert_eq!(c.get("/v1/conversations").body["items"], json!([]));
    assert_eq!(c.get("/v1/conversations/%2B393471234567").status, 404);
    let none = c.post(
        "/v1/conversations/%2B393471234567/messages",
        &json!({"text": "hello?"}),
    );
    assert_eq!(none.status, 404, "{:?}", none.body);

    let sent = c.post(
        "/v1/messages",
        &json!({"to": "347 123 4567", "text": "Your order 1234 ships tomorrow",
                "reference": "order-1234"}),
    );
    assert_eq!(sent.status, 202);
    customer_says(
        &d,
        "+393471234567",
        "+393400000001",
        "Can it come on Friday?",
    );
    // Another customer, who answers too; the shop's latest message to them is the last.
    c.post(
        "/v1/messages",
        &json!({"to": "+393479999999", "text": "Your order 99 ships today"}),
    );
    customer_says(&d, "+393479999999", "+393400000001", "ok");
    c.post(
        "/v1/messages",
        &json!({"to": "+393479999999", "text": "Another customer's order"}),
    );
    // Customers who never wrote are not listed (their threads can still be read).
    let silent = c.post(
        "/v1/messages",
        &json!({"to": "+393478888888", "text": "Your code is 1234"}),
    );
    assert_eq!(silent.status, 202);

    let list = c.get("/v1/conversations");
    assert_eq!(list.status, 200, "{:?}", list.body);
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(
        items[0]["customer"], "+393479999999",
        "latest activity first"
    );
    assert_eq!(items[0]["last_message"]["direction"], "out");
    assert_eq!(items[0]["last_message"]["status"], "queued");
    let anna = &items[1];
    assert_eq!(anna["customer"], "+393471234567");
    assert_eq!(anna["unread"], 1);
    assert_eq!(anna["reference"], "order-1234");
    assert_eq!(anna["last_message"]["direction"], "in");
    assert_eq!(anna["last_message"]["text"], "Can it come on Friday?");
    let first = c.get("/v1/conversations?limit=1");
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let second = c.get(&format!("/v1/conversations?limit=1&cursor={cursor}"));
    assert_eq!(second.body["items"][0]["customer"], "+393471234567");
    assert_eq!(c.get("/v1/conversations?cursor=nope").status, 400);

    // The thread, by national number too; reading it marks it read.
    let thread = c.get("/v1/conversations/3471234567");
    assert_eq!(thread.status, 200, "{:?}", thread.body);
    let messages = thread.body["items"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["direction"], "in");
    assert_eq!(messages[0]["channel"], "carrier");
    assert!(messages[0].get("status").is_none());
    assert_eq!(messages[1]["direction"], "out");
    assert_eq!(messages[1]["id"], sent.body["id"]);
    assert_eq!(messages[1]["status"], "queued");
    assert_eq!(thread.body["conversation"]["unread"], 0);
    let listed = c.get("/v1/conversations").body;
    assert_eq!(listed["items"][1]["unread"], 0, "read stays read");

    // The reply goes from the number the customer wrote to, as a transactional message.
    let reply = c.post(
        "/v1/conversations/%2B393471234567/messages",
        &json!({"text": "Yes, Friday it is"}),
    );
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    assert_eq!(reply.body["to"], "+393471234567");
    assert_eq!(reply.body["from"], "+393400000001");
    assert_eq!(reply.body["kind"], "transactional");
    assert_eq!(reply.body["status"], "queued");
    let thread = c.get("/v1/conversations/%2B393471234567?limit=1");
    assert_eq!(thread.body["items"][0]["id"], reply.body["id"]);
    let older = thread.body["next_cursor"].as_str().unwrap();
    let page = c.get(&format!("/v1/conversations/%2B393471234567?cursor={older}"));
    assert_eq!(page.body["items"].as_array().unwrap().len(), 2);
    // A customer who never wrote: the thread is there, and a reply goes from the channel's
    // default sender.
    let thread = c.get("/v1/conversations/%2B393478888888");
    assert_eq!(thread.status, 200, "{:?}", thread.body);
    assert_eq!(thread.body["items"][0]["id"], silent.body["id"]);
    assert_eq!(thread.body["conversation"]["unread"], 0);
    let unsticky = c.post(
        "/v1/conversations/%2B393478888888/messages",
        &json!({"text": "Any questions?"}),
    );
    assert_eq!(unsticky.status, 202, "{:?}", unsticky.body);
    assert_eq!(unsticky.body["from"], Value::Null);
    // Replies are validated like any message.
    let empty = c.post(
        "/v1/conversations/%2B393471234567/messages",
        &json!({"text": "  "}),
    );
    assert_eq!((empty.status, empty.code()), (422, "empty_text"));
    let extra = c.post(
        "/v1/conversations/%2B393471234567/messages",
        &json!({"text": "hi", "to": "+393479999999"}),
    );
    assert_eq!(extra.status, 400);

    // The shop's first messages went from the default sender: Anna's conversation has no
    // shop number, and replies stick to the channel and number she wrote to.
    let thread = c.get("/v1/conversations/%2B393471234567").body;
    assert_eq!(thread["conversation"]["shop_number"], Value::Null);
    assert_eq!(thread["conversation"]["channel"], "carrier");
    // The shop writes to Anna from a second number; her answer to it opens a second
    // conversation, now her latest, with its own thread.
    let booking = c.post(
        "/v1/messages",
        &json!({"to": "+393471234567", "from": "+393400000002",
                "text": "Table for 2 at 8pm?", "reference": "booking-7"}),
    );
    assert_eq!(booking.status, 202, "{:?}", booking.body);
    customer_says(&d, "+393471234567", "393400000002", "yes please");
    let latest = c.get("/v1/conversations/%2B393471234567").body;
    assert_eq!(latest["conversation"]["shop_number"], "+393400000002");
    assert_eq!(latest["conversation"]["reference"], "booking-7");
    let texts: Vec<_> = latest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["yes please", "Table for 2 at 8pm?"]);
    assert_eq!(latest["conversations"].as_array().unwrap().len(), 2);
    assert_eq!(latest["conversations"][1]["shop_number"], Value::Null);
    let listed = c.get("/v1/conversations").body;
    assert_eq!(listed["items"].as_array().unwrap().len(), 3);
    let by_reference = c.get("/v1/conversations?reference=booking-7").body;
    assert_eq!(by_reference["items"].as_array().unwrap().len(), 1);
    // The first conversation is still there by its shop number (none: ""), and a reply
    // names which one it goes to.
    let first = c.get("/v1/conversations/%2B393471234567?shop_number=").body;
    assert_eq!(first["conversation"]["shop_number"], Value::Null);
    assert_eq!(first["items"][0]["id"], reply.body["id"]);
    let in_latest = c.post(
        "/v1/conversations/%2B393471234567/messages",
        &json!({"text": "Booked!"}),
    );
    assert_eq!(in_latest.body["from"], "+393400000002");
    let in_first = c.post(
        "/v1/conversations/%2B393471234567/messages",
        &json!({"text": "See you Friday", "shop_number": ""}),
    );
    assert_eq!(
        in_first.body["from"], "+393400000001",
        "{:?}",
        in_first.body
    );
    // Which made it the latest again.
    let latest = c.get("/v1/conversations/%2B393471234567").body;
    assert_eq!(latest["conversation"]["shop_number"], Value::Null);
    let unknown = c.get("/v1/conversations/%2B393471234567?shop_number=%2B390000");
    assert_eq!(unknown.status, 404);
    // A reply takes a callback URL like any message (this daemon has callbacks off).
    let callback = c.post(
        "/v1/conversations/%2B393471234567/messages",
        &json!({"text": "tracked", "callback_url": "https://shop.example/sms"}),
    );
    assert_eq!(
        (callback.status, callback.code()),
        (422, "callbacks_disabled")
    );
}

#[test]
fn inbound_since_polls_oldest_first() {
    let d = quiet_daemon();
    let c = &d.client;
    let start = c.get("/v1/inbound?since=2020-01-01T00:00:00Z");
    assert_eq!(start.status, 200, "{:?}", start.body);
    assert_eq!(start.body["items"], json!([]));
    customer_says(&d, "+393471111111", "+393400000001", "one");
    customer_says(&d, "+393472222222", "+393400000001", "two");
    customer_says(&d, "+393471111111", "+393400000001", "three");
    let all = c.get("/v1/inbound?since=2020-01-01T00:00:00Z");
    let texts: Vec<_> = all.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["one", "two", "three"]);
    let page = c.get("/v1/inbound?since=2020-01-01T00:00:00Z&limit=2");
    let next = page.body["next_cursor"].as_str().unwrap();
    let rest = c.get(&format!("/v1/inbound?since={next}"));
    assert_eq!(rest.body["items"][0]["text"], "three");
    assert_eq!(rest.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        c.get("/v1/inbound?since=2999-01-01T00:00:00Z").body["items"],
        json!([])
    );
    assert_eq!(c.get("/v1/inbound?since=yesterday").status, 400);
    assert_eq!(
        c.get(&format!("/v1/inbound?since={next}&cursor={next}"))
            .status,
        400
    );
    // Without since: newest first, as before.
    assert_eq!(c.get("/v1/inbound").body["items"][0]["text"], "three");
}

/// The value of the sample `name{labels}` in a metrics text, when present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.split(' ').next()?.parse().ok()
    })
}

#[test]
fn metrics_count_messages_by_status_and_channel_and_readyz_follows_the_channels() {
    // No channel: not ready, with the reason; the queue is counted all the same.
    let idle = quiet_daemon();
    let not_ready = idle.client.get("/readyz");
    assert_eq!((not_ready.status, not_ready.code()), (503, "not_ready"));
    assert!(
        not_ready.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no channel is configured")
    );
    idle.client.post(
        "/v1/messages",
        &json!({"to": "+393471234567", "text": "waits"}),
    );
    let text = idle.client.get("/metrics");
    let text = text.body.as_str().unwrap();
    assert_eq!(sample(text, "parla_messages{status=\"queued\"}"), Some(1.0));

    let d = InProcess::start(|s| {
        s.sim.enabled = true;
        s.sim.accept_delay = Duration::from_millis(5);
        s.sim.delivery_delay = Duration::from_millis(20);
        s.sim.failure_share = 0.0;
        s.sim.reply_share = 0.0;
    });
    let c = &d.client;
    support::wait_api(c, "/readyz", "ready", |b| b["status"] == "ready");
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let a = c.post(
                "/v1/messages",
                &json!({"to": "+393471234567", "text": format!("hello {i}")}),
            );
            assert_eq!(a.status, 202);
            a.body["id"].as_str().unwrap().to_owned()
        })
        .collect();
    for id in &ids {
        c.wait_for(id, support::GUARD, |m| m["status"] == "delivered");
    }
    let answer = c.get("/metrics");
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text"))
    );
    let text = answer.body.as_str().unwrap();
    let value = |series: &str| sample(text, series).unwrap_or_else(|| panic!("{series}:\n{text}"));
    assert_eq!(value("parla_messages{status=\"delivered\"}"), 3.0);
    assert_eq!(value("parla_messages{status=\"queued\"}"), 0.0);
    assert_eq!(value("parla_messages{status=\"sending\"}"), 0.0);
    assert_eq!(
        value("parla_message_outcomes_total{channel=\"sim\",status=\"sent\"}"),
        3.0
    );
    assert_eq!(
        value("parla_message_outcomes_total{channel=\"sim\",status=\"delivered\"}"),
        3.0
    );
    assert_eq!(value("parla_submit_to_sent_seconds_count"), 3.0);
    assert_eq!(value("parla_sent_to_delivered_seconds_count"), 3.0);
    assert_eq!(value("parla_channel_up{channel=\"sim\",kind=\"sim\"}"), 1.0);
    assert_eq!(value("parla_channel_sms_sent_total{channel=\"sim\"}"), 3.0);
    assert!(value("parla_store_syncs_total") >= 1.0);
    assert!(text.ends_with("# EOF\n"), "{text}");
}
