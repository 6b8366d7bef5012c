//! SMPP carrier links end to end: the real `parla` binary against `parla sim smsc`, a simulated
//! SMSC on loopback TCP, both as child processes. The SMSC prints one JSON line per event; the
//! tests await those and parla's API, with timeouts only as failure guards.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::{
    Binary, Client, GUARD, Listening, long_gsm, start_sim_smsc, wait_api, wait_delivered,
    write_config,
};

/// A `[[smpp.client]]` table for a link to `port`, with quick reconnects for tests.
fn link(name: &str, port: u16, extra: &str) -> String {
    format!(
        "[[smpp.client]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         system_id = \"{name}\"\npassword = \"secret\"\nreconnect_min = \"100ms\"\n\
         reconnect_max = \"500ms\"\nsource = \"Shop\"\n{extra}\n"
    )
}

fn start_parla(dir: &Path, tables: &str) -> Binary {
    let config = write_config(
        dir,
        &format!(
            "[store]\npath = \"store\"\n\
             [retry]\ninitial_backoff = \"100ms\"\nmax_backoff = \"500ms\"\n{tables}"
        ),
    );
    Binary::start(dir, Some(&config), &[])
}

fn post(client: &Client, to: &str, text: &str) -> String {
    let a = client.post("/v1/messages", &json!({"to": to, "text": text}));
    assert_eq!(a.status, 202, "{:?}", a.body);
    a.body["id"].as_str().unwrap().to_string()
}

fn wait_links_up(client: &Client, count: usize) {
    wait_api(client, "/v1/channels", "every link up", |b| {
        let items = b["items"].as_array().unwrap();
        items.len() == count && items.iter().all(|c| c["state"] == "up")
    });
}

/// A UCS-2 text of two parts (more than 70 units).
fn long_ucs2(tag: &str) -> String {
    format!("{tag}: Ваш заказ отправлен сегодня, спасибо за покупку! Номер отслеживания 12345 🚚")
}

fn channel(client: &Client, name: &str) -> Value {
    let b = client.get("/v1/channels").body;
    b["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no channel {name} in {b}"))
}

/// Four SMSCs, each with its own id style and receipt style, and four links sending long
/// messages each in their own way; routes pick the link by prefix. Every message must reach
/// its SMSC whole and come back delivered through its receipt.
#[test]
fn receipts_match_in_every_id_and_receipt_style_and_long_texts_go_by_each_method() {
    let cases = [
        // (link, prefix, SMSC arguments, link settings)
        (
            "udh",
            "+393470",
            vec![
                "--id-style",
                "hex",
                "--receipt-style",
                "text",
                "--receipt-id-form",
                "decimal",
            ],
            "long_messages = \"udh\"",
        ),
        (
            "sar",
            "+393471",
            vec!["--id-style", "hex-upper", "--receipt-style", "tlv"],
            "long_messages = \"sar\"\nbind = \"transmitter_receiver\"",
        ),
        (
            "payload",
            "+393472",
            vec![
                "--id-style",
                "decimal",
                "--receipt-style",
                "both",
                "--receipt-id-form",
                "hex",
            ],
            "long_messages = \"payload\"",
        ),
        (
            "uuid",
            "+393473",
            vec!["--id-style", "uuid", "--receipt-style", "text"],
            "long_messages = \"udh\"\ndata_coding = \"latin1\"",
        ),
    ];
    let smscs: Vec<Listening> = cases
        .iter()
        .map(|(_, _, args, _)| start_sim_smsc(args))
        .collect();
    let mut tables = String::new();
    for ((name, prefix, _, extra), smsc) in cases.iter().zip(&smscs) {
        tables.push_str(&link(name, smsc.port, extra));
        tables.push_str(&format!(
            "[[route]]\nprefixes = [\"{prefix}\"]\nchannels = [\"{name}\"]\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let parla = start_parla(dir.path(), &tables);
    let client = parla.client.clone();
    wait_links_up(&client, cases.len());

    let mut sent = Vec::new();
    for (i, (name, prefix, _, _)) in cases.iter().enumerate() {
        let texts = [
            format!("Order {i} shipped: {{tracking}} €5 [ok]"),
            format!("Ordine {i}: è partito, grazie! 😀"),
            long_gsm(name),
            long_ucs2(name),
        ];
        for (j, text) in texts.into_iter().enumerate() {
            let to = format!("{prefix}12345{j}");
            sent.push((i, to.clone(), text.clone(), post(&client, &to, &text)));
        }
    }
    for (i, to, text, id) in &sent {
        let (name, ..) = cases[*i];
        let m = wait_delivered(&client, id);
        assert_eq!(m["channel"], name, "{m}");
        let whole = smscs[*i].wait_event("message", |e| e["dest"] == to.trim_start_matches('+'));
        assert_eq!(whole["text"], text.as_str(), "{name}: {whole}");
        assert_eq!(whole["source"], "Shop", "{whole}");
        let parts = m["parts"].as_u64().unwrap();
        let expected_method = match (name, parts) {
            (_, 1) => "single",
            ("payload", _) => "payload",
            ("sar", _) => "sar",
            _ => "udh",
        };
        assert_eq!(whole["method"], expected_method, "{name}: {whole}");
        // Each part's remote id is the one the SMSC gave in its submit_sm_resp.
        let ids: Vec<String> = smscs[*i]
            .events("submit")
            .iter()
            .filter(|e| e["dest"] == to.trim_start_matches('+') && e["status"] == "0x00000000")
            .map(|e| e["message_id"].as_str().unwrap().to_string())
            .collect();
        for part in m["part_states"].as_array().unwrap() {
            let remote = part["remote_id"].as_str().unwrap();
            assert!(
                ids.iter().any(|id| id == remote),
                "{remote} not in {ids:?}: {m}"
            );
            assert_eq!(part["status"], "delivered", "{m}");
        }
    }
    // Every receipt was acknowledged after its commit, and nothing was counted twice.
    for ((name, ..), smsc) in cases.iter().zip(&smscs) {
        let submits = smsc
            .events("submit")
            .iter()
            .filter(|e| e["status"] == "0x00000000")
            .count();
        smsc.wait("every receipt acknowledged", |events| {
            let acked = events
                .iter()
                .filter(|e| e["event"] == "receipt_acked" && e["status"] == "0x00000000")
                .count();
            (acked == submits).then_some(())
        });
        // "sent" counts SMS parts: one message_payload carries several.
        let parts: u64 = sent
            .iter()
            .filter(|(i, ..)| cases[*i].0 == *name)
            .map(|(_, _, _, id)| {
                client.get(&format!("/v1/messages/{id}")).body["parts"]
                    .as_u64()
                    .unwrap()
            })
            .sum();
        let c = channel(&client, name);
        assert_eq!(c["sent"].as_u64().unwrap(), parts, "{name}: {c}");
        assert_eq!(c["failed"], 0, "{c}");
        if *name != "payload" {
            assert_eq!(submits as u64, parts, "{name}: one submit_sm per part");
        }
    }
}

/// A link bound as transmitter and receiver gets receipts and replies on the receiver; replies
/// arrive whole however the SMSC cut them; SIGTERM unbinds both connections.
#[test]
fn replies_single_and_long_arrive_whole_and_sigterm_unbinds() {
    let mut smsc = start_sim_smsc(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut parla = start_parla(
        dir.path(),
        &link("carrier", smsc.port, "bind = \"transmitter_receiver\""),
    );
    let client = parla.client.clone();
    wait_links_up(&client, 1);
    smsc.wait("both binds", |events| {
        let modes: Vec<&str> = events
            .iter()
            .filter(|e| e["event"] == "bound")
            .filter_map(|e| e["mode"].as_str())
            .collect();
        (modes.contains(&"transmitter") && modes.contains(&"receiver")).then_some(())
    });
    let id = post(&client, "+393471234567", "Your code is 123456");
    wait_delivered(&client, &id);

    let replies = [
        ("single", "Yes, thanks!".to_string()),
        ("udh", long_gsm("udh reply")),
        ("sar", long_ucs2("sar reply")),
        ("payload", long_gsm("payload reply")),
    ];
    for (i, (method, text)) in replies.iter().enumerate() {
        smsc.command(&format!("mo +39347555000{i} +393400000001 {method} {text}"));
    }
    let inbound = wait_api(&client, "/v1/inbound?limit=10", "four replies", |b| {
        b["items"].as_array().unwrap().len() == replies.len()
    });
    for (i, (method, text)) in replies.iter().enumerate() {
        let from = format!("+39347555000{i}");
        let m = inbound["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["from"] == from)
            .unwrap_or_else(|| panic!("no reply from {from}: {inbound}"));
        assert_eq!(m["text"], text.as_str(), "{method}: {m}");
        assert_eq!(m["to"], "+393400000001", "{m}");
        assert_eq!(m["channel"], "carrier", "{m}");
        assert_eq!(m["missing_parts"], json!([]), "{m}");
    }
    // Every deliver_sm (single 1, udh 3, sar 2, payload 1) was acknowledged with OK, once.
    let acks = smsc.wait("every deliver_sm acknowledged", |events| {
        let count = |kind: &str| events.iter().filter(|e| e["event"] == kind).count();
        (count("mo_sent") == 7 && count("mo_acked") == 7).then(|| {
            events
                .iter()
                .filter(|e| e["event"] == "mo_acked")
                .cloned()
                .collect::<Vec<_>>()
        })
    });
    assert!(acks.iter().all(|a| a["status"] == "0x00000000"), "{acks:?}");

    let status = parla.terminate();
    assert!(status.success(), "{status:?}\n{}", parla.log());
    smsc.wait("both connections unbound", |events| {
        (events.iter().filter(|e| e["event"] == "unbound").count() == 2).then_some(())
    });
}

/// Throttling, a dropped connection and a stalled SMSC: every message still ends delivered,
/// and parla counts each part once.
#[test]
fn throttling_a_dropped_link_and_a_stalled_smsc_lose_and_double_count_nothing() {
    let mut smsc = start_sim_smsc(&[]);
    let dir = tempfile::tempdir().unwrap();
    let parla = start_parla(
        dir.path(),
        &link(
            "carrier",
            smsc.port,
            "window = 5\nthrottle_backoff = \"200ms\"\nresponse_timeout = \"500ms\"\n\
             enquire_link_interval = \"1s\"",
        ),
    );
    let client = parla.client.clone();
    wait_links_up(&client, 1);
    let mut ids = Vec::new();

    // Throttled: the SMSC refuses three submits; parla pauses and sends them again.
    smsc.command("throttle 3");
    for i in 0..20 {
        ids.push(post(
            &client,
            &format!("+3934710000{i:02}"),
            &format!("throttled {i}"),
        ));
    }
    smsc.wait("three throttled answers", |events| {
        let throttled = events
            .iter()
            .filter(|e| e["event"] == "submit" && e["status"] == "0x00000058")
            .count();
        (throttled == 3).then_some(())
    });
    for id in &ids {
        wait_delivered(&client, id);
    }

    // Dropped: the SMSC closes the connection with submits in flight.
    for i in 0..20 {
        ids.push(post(
            &client,
            &format!("+3934720000{i:02}"),
            &format!("dropped {i}"),
        ));
        if i == 5 {
            smsc.command("drop");
        }
    }
    smsc.wait_event("disconnected", |_| true);
    for id in &ids {
        wait_delivered(&client, id);
    }

    // Stalled: the SMSC reads but answers nothing; parla times out, reconnects (the binds go
    // unanswered too) and sends everything once the SMSC answers again.
    smsc.command("stall on");
    for i in 0..10 {
        ids.push(post(
            &client,
            &format!("+3934730000{i:02}"),
            &format!("stalled {i}"),
        ));
    }
    wait_api(&client, "/v1/channels", "the link down", |b| {
        b["items"][0]["state"] == "down"
    });
    smsc.command("stall off");
    for id in &ids {
        wait_delivered(&client, id);
    }

    // Each message went out and was counted once by parla, whatever the SMSC saw twice.
    let c = channel(&client, "carrier");
    assert_eq!(c["sent"], ids.len(), "{c}");
    assert_eq!(c["failed"], 0, "{c}");
    let delivered = client.get("/v1/messages?status=delivered&limit=100").body;
    assert_eq!(delivered["items"].as_array().unwrap().len(), ids.len());
    let accepted = smsc
        .events("submit")
        .iter()
        .filter(|e| e["status"] == "0x00000000")
        .count();
    assert!(
        accepted >= ids.len(),
        "{accepted} accepted for {} messages",
        ids.len()
    );
}

/// Wrong credentials: the link reports the refusal and waits long before trying again.
#[test]
fn a_refused_bind_is_reported_and_not_retried_in_a_storm() {
    let smsc = start_sim_smsc(&["--password", "right"]);
    let dir = tempfile::tempdir().unwrap();
    let parla = start_parla(
        dir.path(),
        &link("carrier", smsc.port, "bind_refused_backoff = \"1h\""),
    );
    let client = parla.client.clone();
    let down = wait_api(&client, "/v1/channels", "the refusal shown", |b| {
        b["items"][0]["state"] == "down"
            && b["items"][0]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("ESME_RINVPASWD"))
    });
    let detail = down["items"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("retrying in 1h"), "{detail}");
    // A queued message waits; no bind storm meanwhile.
    let id = post(&client, "+393471234567", "waits for the link");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        smsc.events("bind_refused").len(),
        1,
        "{}",
        smsc.all_events()
    );
    let m = client.get(&format!("/v1/messages/{id}")).body;
    assert_eq!(m["status"], "queued", "{m}");
}

/// A route of two links: a message the first refuses for good goes to the second, and while
/// the first is down everything goes to the second; messages for other destinations never do.
#[test]
fn routes_fail_over_to_the_next_link_on_refusal_and_while_a_link_is_down() {
    let mut first = start_sim_smsc(&[]);
    let second = start_sim_smsc(&[]);
    let dir = tempfile::tempdir().unwrap();
    let parla = start_parla(
        dir.path(),
        &format!(
            "{}{}[[route]]\nprefixes = [\"+39\"]\nchannels = [\"first\", \"second\"]\n\
             [[route]]\nchannels = [\"first\"]\n",
            link("first", first.port, ""),
            link("second", second.port, ""),
        ),
    );
    let client = parla.client.clone();
    wait_links_up(&client, 2);

    // Both up: Italy goes to the first link.
    let id = post(&client, "+393471234567", "first choice");
    assert_eq!(wait_delivered(&client, &id)["channel"], "first");

    // The first link refuses the destination (ESME_RINVDSTADR): the second one sends it.
    first.command("fail 1 0x0B");
    let id = post(&client, "+393471234568", "refused, then handed over");
    let m = wait_delivered(&client, &id);
    assert_eq!(m["channel"], "second", "{m}");
    let reasons: Vec<&str> = m["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["reason"].as_str())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("handed to second")),
        "{reasons:?}"
    );
    // The default route has one step only: there a refusal fails the message.
    first.command("fail 1 0x0B");
    let id = post(&client, "+4915123456789", "no second step");
    let m = client.wait_for(&id, GUARD, |m| m["status"] == "failed");
    assert_eq!(m["channel"], "first", "{m}");

    // The first link down (binds refused): Italy goes to the second link, Germany waits.
    first.command("refuse-binds 0x08");
    first.command("drop");
    wait_api(&client, "/v1/channels", "the first link down", |b| {
        b["items"][0]["state"] == "down"
    });
    let italy: Vec<String> = (0..5)
        .map(|i| post(&client, &format!("+39347123460{i}"), "while first is down"))
        .collect();
    let germany = post(&client, "+4915123456780", "waits for first");
    for id in &italy {
        assert_eq!(wait_delivered(&client, id)["channel"], "second");
    }
    let m = client.get(&format!("/v1/messages/{germany}")).body;
    assert_eq!(m["status"], "queued", "{m}");
    // The first link back: Germany goes out on it.
    first.command("refuse-binds off");
    assert_eq!(wait_delivered(&client, &germany)["channel"], "first");
}
