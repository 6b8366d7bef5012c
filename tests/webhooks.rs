//! Webhooks and callbacks end to end: the real `parla` binary with its simulated channel POSTs
//! events to real HTTP servers in this test, which check each signature, can be switched to
//! failing (an outage), and count events by their webhook-id.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Binary, write_config};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One POST as the receiver saw it.
#[derive(Debug, Clone)]
struct Delivery {
    path: String,
    id: String,
    body: Value,
    signature_ok: bool,
}

/// An HTTP server on a free loopback port: answers 200 (or 503 while `down`), and keeps what
/// it was sent.
struct Receiver {
    port: u16,
    down: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Delivery>>>,
    refused: Arc<Mutex<usize>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0));
        let key = parla::webhook::event::secret_key(SECRET).unwrap();
        let (d, s, r) = (down.clone(), seen.clone(), refused.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (d, s, r, key) = (d.clone(), s.clone(), r.clone(), key.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut headers = BTreeMap::new();
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let path = line.split(' ').nth(1).unwrap_or_default().to_string();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = line.trim_end().split_once(':') {
                            headers.insert(k.to_ascii_lowercase(), v.trim().to_string());
                        }
                    }
                    let length: usize = headers["content-length"].parse().unwrap();
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    let status = if d.load(Ordering::SeqCst) {
                        *r.lock().unwrap() += 1;
                        "503 Service Unavailable"
                    } else {
                        let id = headers["webhook-id"].clone();
                        let timestamp: i64 = headers["webhook-timestamp"].parse().unwrap();
                        let expected =
                            parla::webhook::event::signature(&key, &id, timestamp, &body);
                        s.lock().unwrap().push(Delivery {
                            path,
                            id,
                            body: serde_json::from_slice(&body).unwrap(),
                            signature_ok: headers["webhook-signature"] == expected,
                        });
                        "200 OK"
                    };
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                });
            }
        });
        Receiver {
            port,
            down,
            seen,
            refused,
        }
    }

    fn seen(&self) -> Vec<Delivery> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `done` holds for what was received.
    fn wait(&self, what: &str, done: impl Fn(&[Delivery]) -> bool) -> Vec<Delivery> {
        let start = Instant::now();
        loop {
            let seen = self.seen();
            if done(&seen) {
                return seen;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{what}: not in 30s; received {seen:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn start_parla(dir: &std::path::Path, port: u16) -> Binary {
    start_parla_with(dir, port, "")
}

fn start_parla_with(dir: &std::path::Path, port: u16, extra: &str) -> Binary {
    start_simulated(
        dir,
        &format!(
            "[[webhook]]\nname = \"test\"\nurl = \"http://127.0.0.1:{port}/events\"\n\
             secret = \"{SECRET}\"\ntimeout = \"2s\"\n{extra}\n"
        ),
    )
}

/// The binary with its simulated channel (every message delivered, every one answered) and
/// the config `section`.
fn start_simulated(dir: &std::path::Path, section: &str) -> Binary {
    let config = write_config(
        dir,
        &format!(
            "[store]\npath = \"store\"\n\
             [sim]\nenabled = true\naccept_delay = \"10ms\"\ndelivery_delay = \"50ms\"\n\
             failure_share = 0.0\nreply_share = 1.0\n{section}"
        ),
    );
    Binary::start(dir, Some(&config), &[])
}

/// Events by type and message id, each counted once per webhook-id.
fn by_id(seen: &[Delivery]) -> BTreeMap<String, Value> {
    seen.iter()
        .map(|d| (d.id.clone(), d.body.clone()))
        .collect()
}

fn statuses_of(events: &BTreeMap<String, Value>, message: &str) -> Vec<String> {
    let mut statuses: Vec<String> = events
        .values()
        .filter(|b| b["type"] == "message.status" && b["data"]["id"] == message)
        .map(|b| b["data"]["status"].as_str().unwrap().to_string())
        .collect();
    statuses.sort();
    statuses
}

#[test]
fn events_reach_the_endpoint_signed_once_each_across_an_outage_and_a_restart() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let mut parla = start_parla(dir.path(), receiver.port);
    let client = parla.client.clone();

    // A message: its sent and delivered statuses, and the simulated customer's reply.
    let a = client.post(
        "/v1/messages",
        &json!({"to": "+393471234567", "text": "Your order 1234 ships tomorrow"}),
    );
    assert_eq!(a.status, 202, "{:?}", a.body);
    let first = a.body["id"].as_str().unwrap().to_string();
    let seen = receiver.wait("sent, delivered and a reply", |seen| {
        let events = by_id(seen);
        statuses_of(&events, &first) == ["delivered", "sent"]
            && events.values().any(|b| b["type"] == "message.received")
    });
    assert!(seen.iter().all(|d| d.signature_ok), "{seen:#?}");
    assert!(seen.iter().all(|d| d.id.starts_with("evt_")), "{seen:#?}");
    let reply = by_id(&seen)
        .into_values()
        .find(|b| b["type"] == "message.received")
        .unwrap();
    assert_eq!(reply["data"]["from"], "+393471234567", "{reply}");

    // An outage: the endpoint answers 503; the events wait and are retried.
    receiver.down.store(true, Ordering::SeqCst);
    let b = client.post(
        "/v1/messages",
        &json!({"to": "+393471234568", "text": "Your order 1235 ships tomorrow"}),
    );
    let second = b.body["id"].as_str().unwrap().to_string();
    client.wait_for(&second, support::GUARD, |m| m["status"] == "delivered");
    let start = Instant::now();
    while *receiver.refused.lock().unwrap() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no attempt during the outage"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The metrics count both outcomes.
    let metrics = client.get("/metrics");
    let metrics = metrics.body.as_str().unwrap();
    let count = |result: &str| -> f64 {
        let series =
            format!("parla_webhook_attempts_total{{webhook=\"test\",result=\"{result}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{series}missing:\n{metrics}"))
    };
    assert!(
        count("delivered") >= 3.0 && count("failed") >= 1.0,
        "{metrics}"
    );
    // The daemon restarts during the outage: nothing owed is lost.
    let status = parla.terminate();
    assert!(status.success(), "{status:?}; log:\n{}", parla.log());
    let parla = start_parla(dir.path(), receiver.port);
    receiver.down.store(false, Ordering::SeqCst);
    let seen = receiver.wait("the second message's events after the outage", |seen| {
        statuses_of(&by_id(seen), &second) == ["delivered", "sent"]
    });
    assert!(seen.iter().all(|d| d.signature_ok), "{seen:#?}");
    // Every event once by id: no id carries two different bodies, and the first message's
    // events did not come back as new ones.
    let events = by_id(&seen);
    for d in &seen {
        assert_eq!(events[&d.id], d.body, "one body per event id");
    }
    assert_eq!(statuses_of(&events, &first), ["delivered", "sent"]);
    // Every customer's message the gateway stored was announced (the simulator may not have
    // sent the second reply before the restart: it keeps its timers in memory).
    let inbound = parla.client.get("/v1/inbound");
    let stored: Vec<String> = inbound.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!stored.is_empty());
    receiver.wait("a message.received per stored reply", |seen| {
        let mut announced: Vec<String> = by_id(seen)
            .values()
            .filter(|b| b["type"] == "message.received")
            .map(|b| b["data"]["id"].as_str().unwrap().to_string())
            .collect();
        announced.sort();
        let mut expected = stored.clone();
        expected.sort();
        announced == expected
    });
    drop(parla);
}

/// Waits for the two status events of message `id` to be dead-lettered, and checks what the
/// listing says of them.
fn dead_letters(client: &support::Client, endpoint: &str, id: &str) -> Vec<Value> {
    let failed = support::wait_api(
        client,
        "/v1/webhooks/deliveries?status=failed",
        "two dead letters",
        |b| b["items"].as_array().unwrap().len() == 2,
    );
    let items = failed["items"].as_array().unwrap().clone();
    for item in &items {
        assert_eq!(item["endpoint"], endpoint, "{item}");
        assert_eq!(item["type"], "message.status", "{item}");
        assert_eq!(item["status"], "failed", "{item}");
        assert_eq!(item["reason"], "HTTP 503 Service Unavailable", "{item}");
        assert_eq!(item["payload"]["data"]["id"], id, "{item}");
    }
    items
}

#[test]
fn events_not_delivered_in_time_are_dead_lettered_listed_and_replayed() {
    let receiver = Receiver::start();
    receiver.down.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let parla = start_parla_with(
        dir.path(),
        receiver.port,
        "retry_for = \"2s\"\nevents = [\"message.status\"]",
    );
    let client = parla.client.clone();
    let a = client.post(
        "/v1/messages",
        &json!({"to": "+393471234567", "text": "Your order 1234 ships tomorrow"}),
    );
    let id = a.body["id"].as_str().unwrap().to_string();
    // Both status events fail for 2 s, then are given up on.
    let failed = dead_letters(&client, "test", &id);
    let items = &failed;
    assert!(receiver.seen().is_empty());
    let bad = client.get("/v1/webhooks/deliveries?status=pending");
    assert_eq!(bad.status, 422, "{:?}", bad.body);
    // No [callbacks] secret: a callback_url is refused, and nothing is stored.
    let bad = client.post(
        "/v1/messages",
        &json!({"to": "+393471234568", "text": "Hi", "callback_url": "https://shop.example/cb"}),
    );
    assert_eq!(bad.status, 422, "{:?}", bad.body);
    assert_eq!(bad.code(), "callbacks_disabled", "{:?}", bad.body);
    assert_eq!(client.all_messages().len(), 1);
    let bad = client.get("/v1/webhooks/deliveries?status=pending");
    assert_eq!(bad.status, 422, "{:?}", bad.body);

    // The endpoint is back: an operator replays one; it arrives under its own id, once.
    replay_first(&client, &receiver, items);
}

/// Brings `receiver` back, replays the first of the two dead letters `items`, and checks it
/// arrives under its id, once, and leaves the other listed; what the receiver got.
fn replay_first(client: &support::Client, receiver: &Receiver, items: &[Value]) -> Delivery {
    receiver.down.store(false, Ordering::SeqCst);
    let event = items[0]["id"].as_str().unwrap().to_string();
    let retry = format!("/v1/webhooks/deliveries/{event}/retry");
    let replayed = client.post(&retry, &json!({}));
    assert_eq!(replayed.status, 202, "{:?}", replayed.body);
    let seen = receiver.wait("the replayed event", |seen| !seen.is_empty());
    assert_eq!(seen[0].id, event);
    assert!(seen[0].signature_ok);
    assert_eq!(seen[0].body, items[0]["payload"]);
    let again = client.post(&retry, &json!({}));
    assert_eq!(again.status, 404, "{:?}", again.body);
    let left = client.get("/v1/webhooks/deliveries?status=failed");
    let left = left.body["items"].as_array().unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    seen[0].clone()
}

fn start_parla_callbacks(dir: &std::path::Path, extra: &str) -> Binary {
    start_simulated(
        dir,
        &format!(
            "[callbacks]\nsecret = \"{SECRET}\"\ntimeout = \"2s\"\n\
             allowed_hosts = [\"127.0.0.1\"]\nallow_private_addresses = true\n{extra}\n"
        ),
    )
}

/// Submits a message whose callbacks go to `url`; its id.
fn send_with_callback(client: &support::Client, to: &str, url: &str) -> String {
    let answer = client.post(
        "/v1/messages",
        &json!({"to": to, "text": "Your order ships tomorrow", "callback_url": url}),
    );
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    assert_eq!(answer.body["callback_url"], url, "{:?}", answer.body);
    answer.body["id"].as_str().unwrap().to_string()
}

fn wait_refused(receiver: &Receiver, at_least: usize) {
    let start = Instant::now();
    while *receiver.refused.lock().unwrap() < at_least {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "fewer than {at_least} attempts during the outage"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn callbacks_go_to_each_message_url_and_a_dead_host_holds_up_no_other() {
    let a = Receiver::start();
    let b = Receiver::start();
    a.down.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let mut parla = start_parla_callbacks(dir.path(), "");
    let client = parla.client.clone();

    // Refused callback URLs store nothing.
    for (url, code) in [
        ("ftp://127.0.0.1/cb", "invalid_callback_url"),
        ("/cb/relative", "invalid_callback_url"),
        ("http://user:pw@127.0.0.1/cb", "invalid_callback_url"),
        ("http://localhost:9/cb", "callback_host_not_allowed"),
    ] {
        let bad = client.post(
            "/v1/messages",
            &json!({"to": "+393471234567", "text": "Hi", "callback_url": url}),
        );
        assert_eq!(bad.status, 422, "{url}: {:?}", bad.body);
        assert_eq!(bad.code(), code, "{url}: {:?}", bad.body);
        assert_eq!(bad.body["error"]["field"], "callback_url", "{:?}", bad.body);
    }
    assert!(client.all_messages().is_empty());

    // A is down, B is up: B gets its message's events while A's wait.
    let url_a = format!("http://127.0.0.1:{}/cb/1", a.port);
    let url_b = format!("http://127.0.0.1:{}/cb/2", b.port);
    let first = send_with_callback(&client, "+393471234567", &url_a);
    let second = send_with_callback(&client, "+393471234568", &url_b);
    b.wait("B's events while A is down", |seen| {
        statuses_of(&by_id(seen), &second) == ["delivered", "sent"]
    });
    // A was tried, and is tried again on its own schedule.
    wait_refused(&a, 2);
    client.wait_for(&first, support::GUARD, |m| m["status"] == "delivered");

    // A restart during A's outage: nothing owed is lost, and B still does not wait for A.
    let status = parla.terminate();
    assert!(status.success(), "{status:?}; log:\n{}", parla.log());
    let parla = start_parla_callbacks(dir.path(), "");
    let client = parla.client.clone();
    let url_b3 = format!("http://127.0.0.1:{}/cb/3", b.port);
    let third = send_with_callback(&client, "+393471234569", &url_b3);
    b.wait("B's events after the restart, A still down", |seen| {
        statuses_of(&by_id(seen), &third) == ["delivered", "sent"]
    });
    assert!(a.seen().is_empty());

    // A is back: its events arrive, each once, signed.
    a.down.store(false, Ordering::SeqCst);
    let seen_a = a.wait("A's events after its outage", |seen| {
        statuses_of(&by_id(seen), &first) == ["delivered", "sent"]
    });
    let seen_b = b.seen();
    for (seen, expected) in [
        (&seen_a, vec![(&first, "/cb/1")]),
        (&seen_b, vec![(&second, "/cb/2"), (&third, "/cb/3")]),
    ] {
        assert!(seen.iter().all(|d| d.signature_ok), "{seen:#?}");
        assert!(seen.iter().all(|d| d.id.starts_with("evt_")), "{seen:#?}");
        let events = by_id(seen);
        for d in seen {
            assert_eq!(events[&d.id], d.body, "one body per event id");
            assert_eq!(d.body["type"], "message.status", "{d:?}");
            let (_, path) = expected
                .iter()
                .find(|(id, _)| d.body["data"]["id"] == id.as_str())
                .unwrap_or_else(|| panic!("an event of another host's message: {d:?}"));
            assert_eq!(&d.path, path, "{d:?}");
        }
        assert_eq!(events.len(), 2 * expected.len(), "{seen:#?}");
    }
    // A answered every attempt once it was up: each event exactly once.
    assert_eq!(seen_a.len(), 2, "{seen_a:#?}");
    drop(parla);
}

#[test]
fn callbacks_not_delivered_in_time_are_dead_lettered_listed_and_replayed() {
    let receiver = Receiver::start();
    receiver.down.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let parla = start_parla_callbacks(dir.path(), "retry_for = \"2s\"");
    let client = parla.client.clone();
    let url = format!("http://127.0.0.1:{}/cb/9", receiver.port);
    let id = send_with_callback(&client, "+393471234567", &url);
    let items = dead_letters(&client, "callback", &id);
    for item in &items {
        assert_eq!(item["url"], url.as_str(), "{item}");
    }
    let replayed = replay_first(&client, &receiver, &items);
    assert_eq!(replayed.path, "/cb/9");
}
