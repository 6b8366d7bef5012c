//! parla's SMPP server end to end, with an ESME not written in this project: the real `parla`
//! binary serves integrators, tests/interop/esme.js (on the npm package `smpp`) binds and
//! submits, and `parla sim smsc` is the carrier behind parla's own SMPP link, so receipts and
//! customer replies travel the whole way back. Needs node and `npm ci --prefix tests/interop`
//! (CI's .ci/run installs both); PARLA_SKIP_INTEROP=1 skips these tests.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use support::{
    Binary, EventProcess, GUARD, interop_dir, long_gsm, start_sim_smsc, wait_api, write_config,
};

const PASSWORD: &str = "pw1";
const SHOP_NUMBER: &str = "+393400000001";

/// parla with the SMPP server on a free port, accounts `shop` (any bind mode) and `slow` (one
/// submit a second), and one link to the simulated SMSC on `smsc_port`.
fn start_parla(dir: &Path, smsc_port: u16, extra: &str) -> (Binary, u16) {
    start_parla_with(
        dir,
        smsc_port,
        "enquire_link_interval = \"1s\"\nresponse_timeout = \"2s\"\n",
        extra,
    )
}

/// [`start_parla`] with these `[smpp.server]` keys instead of its quick timers.
fn start_parla_with(dir: &Path, smsc_port: u16, server: &str, extra: &str) -> (Binary, u16) {
    let hash = parla::smpp::auth::hash_password(PASSWORD).unwrap();
    let config = write_config(
        dir,
        &format!(
            "[store]\npath = \"store\"\nreassembly_timeout = \"2s\"\n\
             [sim]\nenabled = false\n\
             [retry]\ninitial_backoff = \"100ms\"\nmax_backoff = \"500ms\"\n\
             [smpp.server]\nenabled = true\nlisten = \"127.0.0.1:0\"\n{server}\
             [[smpp.server.account]]\nsystem_id = \"shop\"\npassword_hash = \"{hash}\"\n\
             reply_numbers = [\"{SHOP_NUMBER}\"]\nmax_binds = 8\n{extra}\n\
             [[smpp.server.account]]\nsystem_id = \"slow\"\npassword_hash = \"{hash}\"\n\
             max_rate = 1\n\
             [[smpp.client]]\nname = \"carrier\"\nhost = \"127.0.0.1\"\nport = {smsc_port}\n\
             system_id = \"parla\"\npassword = \"secret\"\nreconnect_min = \"100ms\"\n\
             reconnect_max = \"500ms\"\nsource = \"Shop\"\n"
        ),
    );
    let parla = Binary::start(dir, Some(&config), &[]);
    let port = parla.smpp_port();
    (parla, port)
}

fn start_esme(dir: &Path) -> EventProcess {
    let mut command = Command::new("node");
    command.arg(dir.join("esme.js"));
    let esme = EventProcess::start("esme.js", command);
    esme.wait_event("ready", |_| true);
    esme
}

/// Connects and binds `name`; returns the bind status.
fn bind(
    esme: &mut EventProcess,
    name: &str,
    port: u16,
    mode: &str,
    system_id: &str,
    password: &str,
) -> u64 {
    esme.command(&format!(
        "connect {name} {port} {mode} {system_id} {password}"
    ));
    esme.wait_event("bind", |e| e["name"] == name)["status"]
        .as_u64()
        .unwrap()
}

/// Submits and waits for every part's answer; returns them in part order.
fn submit(esme: &mut EventProcess, name: &str, tag: &str, spec: &Value) -> Vec<Value> {
    esme.command(&format!("submit {name} {tag} {spec}"));
    let first = esme.wait_event("submit_resp", |e| e["tag"] == tag);
    let parts = first["parts"].as_u64().unwrap() as usize;
    let mut answers = esme.wait(&format!("{parts} answers to {tag}"), |events| {
        let answers: Vec<Value> = events
            .iter()
            .filter(|e| e["event"] == "submit_resp" && e["tag"] == tag)
            .cloned()
            .collect();
        (answers.len() == parts).then_some(answers)
    });
    answers.sort_by_key(|a| a["part"].as_u64());
    answers
}

fn accepted_id(answers: &[Value]) -> String {
    for a in answers {
        assert_eq!(a["status"], 0, "{a}");
    }
    let id = answers[0]["message_id"].as_str().unwrap().to_string();
    assert!(
        answers.iter().all(|a| a["message_id"] == id.as_str()),
        "every part answered with the one message id: {answers:?}"
    );
    id
}

fn receipt_for(esme: &EventProcess, id: &str) -> Value {
    esme.wait_event("deliver", |e| {
        e["receipt"] == true && e["receipted_message_id"] == id
    })
}

#[test]
fn integrators_bind_submit_and_get_receipts_and_replies() {
    let Some(interop) = interop_dir() else { return };
    let mut smsc = start_sim_smsc(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (mut parla, port) = start_parla(dir.path(), smsc.port, "");
    let client = parla.client.clone();
    wait_api(&client, "/v1/channels", "the carrier link up", |b| {
        b["items"][0]["state"] == "up"
    });
    let mut esme = start_esme(&interop);

    // Binds: the three modes; a wrong password and an unknown account get their statuses.
    assert_eq!(bind(&mut esme, "trx", port, "trx", "shop", PASSWORD), 0);
    assert_eq!(bind(&mut esme, "tx", port, "tx", "shop", PASSWORD), 0);
    assert_eq!(bind(&mut esme, "rx", port, "rx", "shop", PASSWORD), 0);
    assert_eq!(bind(&mut esme, "bad", port, "trx", "shop", "wrong"), 0x0E);
    assert_eq!(
        bind(&mut esme, "who", port, "trx", "nobody", PASSWORD),
        0x0F
    );

    // GSM 7-bit through the transmitter; the receipt comes to a receiving bind with the id
    // of the submit_sm_resp, in the TLV and in the text.
    let gsm = "Your order 1234 ships tomorrow @ 10:00";
    let answers = submit(
        &mut esme,
        "tx",
        "gsm",
        &json!({"to": "+393471234501", "from": "MyShop", "text": gsm, "registered_delivery": 1}),
    );
    let gsm_id = accepted_id(&answers);
    let m = client.get(&format!("/v1/messages/{gsm_id}"));
    assert_eq!(m.status, 200, "the id is parla's own: {:?}", m.body);
    assert_eq!(m.body["text"], gsm);
    assert_eq!(m.body["from"], "MyShop");
    let receipt = receipt_for(&esme, &gsm_id);
    assert!(
        ["trx", "rx"].contains(&receipt["name"].as_str().unwrap()),
        "{receipt}"
    );
    assert_eq!(receipt["esm_class"], 4, "{receipt}");
    assert_eq!(receipt["message_state"], 2, "{receipt}");
    let text = receipt["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!("id:{gsm_id} sub:001 dlvrd:001")),
        "{text}"
    );
    assert!(text.contains("stat:DELIVRD"), "{text}");
    // From the customer back to the shop's sender, as submitted.
    assert_eq!(receipt["from"], "+393471234501", "{receipt}");
    assert_eq!(receipt["to"], "MyShop", "{receipt}");
    let sent = smsc.wait_event("submit", |e| e["dest"] == "393471234501");
    assert_eq!(sent["text"], gsm, "{sent}");

    // UCS-2 through the transceiver.
    let ucs2 = "Ciao Zoë, il tuo ordine è pronto ✓";
    let answers = submit(
        &mut esme,
        "trx",
        "ucs2",
        &json!({"to": "+393471234502", "from": "MyShop", "text": ucs2, "registered_delivery": 1}),
    );
    let ucs2_id = accepted_id(&answers);
    let sent = smsc.wait_event("submit", |e| e["dest"] == "393471234502");
    assert_eq!(sent["text"], ucs2, "{sent}");
    assert_eq!(sent["data_coding"], 8, "{sent}");
    receipt_for(&esme, &ucs2_id);

    // Long messages: UDH, SAR and message_payload, each one message with one id and one receipt.
    for (i, long) in ["udh", "sar", "payload"].into_iter().enumerate() {
        let text = long_gsm(long);
        let to = format!("+39347123460{i}");
        let answers = submit(
            &mut esme,
            "tx",
            long,
            &json!({"to": to, "from": "MyShop", "text": text, "registered_delivery": 1, "long": long}),
        );
        assert_eq!(
            answers.len(),
            if long == "payload" { 1 } else { 3 },
            "{answers:?}"
        );
        let id = accepted_id(&answers);
        let m = client.get(&format!("/v1/messages/{id}"));
        assert_eq!(m.body["text"], text.as_str(), "{long}: {:?}", m.body);
        assert_eq!(m.body["parts"], 3, "{long}: {:?}", m.body);
        let whole = smsc.wait_event("message", |e| e["dest"] == to[1..]);
        assert_eq!(whole["text"], text.as_str(), "{whole}");
        receipt_for(&esme, &id);
    }

    // query_sm: our delivered message; someone else's id or garbage is not found.
    esme.command(&format!("query trx q1 {gsm_id}"));
    let q = esme.wait_event("query_resp", |e| e["tag"] == "q1");
    assert_eq!(q["status"], 0, "{q}");
    assert_eq!(q["message_state"], 2, "{q}");
    assert_eq!(q["message_id"], gsm_id.as_str(), "{q}");
    assert_eq!(q["final_date"].as_str().unwrap().len(), 16, "{q}");
    esme.command("query trx q2 01ARZ3NDEKTSV4RRFFQ69G5FAV");
    let q = esme.wait_event("query_resp", |e| e["tag"] == "q2");
    assert_eq!(q["status"], 0x67, "{q}");
    esme.command("query trx q3 12345");
    let q = esme.wait_event("query_resp", |e| e["tag"] == "q3");
    assert_eq!(q["status"], 0x0C, "{q}");

    // cancel_sm: a message scheduled for later is canceled (and its DELETED receipt comes);
    // a second cancel, or one of a delivered message, fails.
    let answers = submit(
        &mut esme,
        "tx",
        "later",
        &json!({"to": "+393471234510", "from": "MyShop", "text": "tomorrow's sale",
                "registered_delivery": 1, "schedule_delivery_time": "000001000000000R"}),
    );
    let later_id = accepted_id(&answers);
    esme.command(&format!("cancel trx c1 {later_id}"));
    assert_eq!(
        esme.wait_event("cancel_resp", |e| e["tag"] == "c1")["status"],
        0
    );
    let m = client.get(&format!("/v1/messages/{later_id}"));
    assert_eq!(m.body["status"], "canceled", "{:?}", m.body);
    let deleted = receipt_for(&esme, &later_id);
    assert_eq!(deleted["message_state"], 4, "{deleted}");
    assert!(
        deleted["text"].as_str().unwrap().contains("stat:DELETED"),
        "{deleted}"
    );
    esme.command(&format!("cancel trx c2 {later_id}"));
    assert_eq!(
        esme.wait_event("cancel_resp", |e| e["tag"] == "c2")["status"],
        0x11
    );
    esme.command(&format!("cancel trx c3 {gsm_id}"));
    assert_eq!(
        esme.wait_event("cancel_resp", |e| e["tag"] == "c3")["status"],
        0x11
    );

    // A customer's reply to the shop number reaches the account's receivers.
    smsc.command(&format!(
        "mo +393471234501 {SHOP_NUMBER} single Can I change the address?"
    ));
    let inbound = wait_api(&client, "/v1/inbound", "the reply stored", |b| {
        !b["items"].as_array().unwrap().is_empty()
    });
    assert_eq!(inbound["items"][0]["to"], SHOP_NUMBER, "{inbound}");
    let reply = esme.wait_event("deliver", |e| e["receipt"] == false);
    assert_eq!(reply["from"], "+393471234501", "{reply}");
    assert_eq!(reply["to"], SHOP_NUMBER, "{reply}");
    assert_eq!(reply["text"], "Can I change the address?", "{reply}");
    assert_eq!(reply["esm_class"], 0, "{reply}");

    // Receipts wait while no bind receives: both receivers leave, a message is delivered,
    // and its receipt comes to the receiver that binds next.
    esme.command("unbind trx");
    esme.wait_event("unbind_resp", |e| e["name"] == "trx");
    esme.command("drop rx");
    esme.wait_event("close", |e| e["name"] == "rx");
    let answers = submit(
        &mut esme,
        "tx",
        "queued",
        &json!({"to": "+393471234520", "from": "MyShop", "text": "while you were away", "registered_delivery": 1}),
    );
    let queued_id = accepted_id(&answers);
    client.wait_for(&queued_id, GUARD, |m| m["status"] == "delivered");
    assert!(
        esme.events("deliver")
            .iter()
            .all(|e| e["receipted_message_id"] != queued_id.as_str()),
        "no receiver was bound"
    );
    assert_eq!(bind(&mut esme, "rx2", port, "rx", "shop", PASSWORD), 0);
    let late = receipt_for(&esme, &queued_id);
    assert_eq!(late["name"], "rx2", "{late}");

    // Throttling: the slow account may submit one a second.
    assert_eq!(bind(&mut esme, "slow", port, "trx", "slow", PASSWORD), 0);
    let mut statuses = Vec::new();
    for i in 0..5 {
        let answers = submit(
            &mut esme,
            "slow",
            &format!("slow{i}"),
            &json!({"to": "+393471234530", "text": format!("quick {i}")}),
        );
        statuses.push(answers[0]["status"].as_u64().unwrap());
    }
    assert_eq!(statuses[0], 0, "{statuses:?}");
    assert!(statuses.contains(&0x58), "ESME_RTHROTTLED: {statuses:?}");

    // SIGTERM: parla unbinds its clients and exits 0.
    let status = parla.terminate();
    assert!(status.success(), "{status:?}; log:\n{}", parla.log());
    esme.wait_event("unbound_by_server", |e| e["name"] == "tx");
    let errors: Vec<Value> = esme.events("error");
    assert!(errors.is_empty(), "{errors:?}");
    esme.command("quit");
    smsc.command("quit");
}

#[test]
fn malformed_pdus_and_pdus_before_bind_get_their_error_answers() {
    let Some(interop) = interop_dir() else { return };
    let smsc = start_sim_smsc(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (parla, port) = start_parla(dir.path(), smsc.port, "");
    let mut esme = start_esme(&interop);

    // A submit_sm before any bind: ESME_RINVBNDSTS.
    esme.command(&format!("connect early {port} trx nobody x"));
    assert_eq!(
        esme.wait_event("bind", |e| e["name"] == "early")["status"],
        0x0F
    );
    let answers = submit(
        &mut esme,
        "early",
        "prebind",
        &json!({"to": "+393471234540", "text": "x"}),
    );
    assert_eq!(answers[0]["status"], 0x04, "{answers:?}");
    // Unknown command id 0x00000777, sequence 7: generic_nack ESME_RINVCMDID.
    esme.command("raw early 00000010000007770000000000000007");
    let nack = esme.wait_event("pdu", |e| e["command"] == "generic_nack");
    assert_eq!(nack["command_status"], 3, "{nack}");
    assert_eq!(nack["sequence_number"], 7, "{nack}");

    assert_eq!(bind(&mut esme, "fresh", port, "trx", "shop", PASSWORD), 0);
    // A submit_sm whose body is cut short (command_length 20, 4 octets of body): an error
    // answer, not a crash; the session goes on.
    esme.command("raw fresh 000000140000000400000000000000090000abcd");
    let answer = esme.wait_event("pdu", |e| e["name"] == "fresh" && e["sequence_number"] == 9);
    assert_ne!(answer["command_status"], 0, "{answer}");
    let answers = submit(
        &mut esme,
        "fresh",
        "after",
        &json!({"to": "+393471234540", "text": "still here"}),
    );
    accepted_id(&answers);
    // Bad destination: ESME_RINVDSTADR.
    let answers = submit(
        &mut esme,
        "fresh",
        "baddest",
        &json!({"to": "12", "text": "x"}),
    );
    assert_eq!(answers[0]["status"], 0x0B, "{answers:?}");
    // A command_length under 16: framing is lost, parla answers and closes.
    esme.command("raw fresh 0000000800000004");
    esme.wait_event("close", |e| e["name"] == "fresh");
    assert!(!parla.log().contains("panicked"), "{}", parla.log());
    // The server still serves.
    assert_eq!(bind(&mut esme, "again", port, "trx", "shop", PASSWORD), 0);
    esme.command("quit");
}

#[test]
fn a_waiting_receipt_makes_parla_outbind_to_the_client() {
    let Some(interop) = interop_dir() else { return };
    let smsc = start_sim_smsc(&[]);
    let mut esme = start_esme(&interop);
    // The client's ESME listens for an outbind, and then binds as receiver with these.
    esme.command(&format!("listen pulled shop {PASSWORD}"));
    let listening = esme.wait_event("listening", |e| e["name"] == "pulled");
    let dir = tempfile::tempdir().unwrap();
    let (_parla, port) = start_parla(
        dir.path(),
        smsc.port,
        &format!(
            "outbind = \"127.0.0.1:{}\"\noutbind_password = \"ob1\"\noutbind_interval = \"300ms\"",
            listening["port"]
        ),
    );
    assert_eq!(bind(&mut esme, "tx", port, "tx", "shop", PASSWORD), 0);
    assert!(
        esme.events("outbind").is_empty(),
        "nothing waits yet: no outbind"
    );
    let answers = submit(
        &mut esme,
        "tx",
        "pull",
        &json!({"to": "+393471234550", "from": "MyShop", "text": "pull me", "registered_delivery": 1}),
    );
    let id = accepted_id(&answers);
    let outbind = esme.wait_event("outbind", |e| e["name"] == "pulled");
    assert_eq!(outbind["system_id"], "parla", "{outbind}");
    assert_eq!(outbind["password"], "ob1", "{outbind}");
    assert_eq!(
        esme.wait_event("bind", |e| e["name"] == "pulled")["status"],
        0
    );
    let receipt = receipt_for(&esme, &id);
    assert_eq!(receipt["name"], "pulled", "{receipt}");
    esme.command("quit");
}

#[test]
fn a_reload_keeps_unchanged_accounts_bound_and_unbinds_changed_ones() {
    let Some(interop) = interop_dir() else { return };
    let smsc = start_sim_smsc(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (parla, port) = start_parla(dir.path(), smsc.port, "");
    let mut esme = start_esme(&interop);
    assert_eq!(bind(&mut esme, "shop", port, "trx", "shop", PASSWORD), 0);
    assert_eq!(bind(&mut esme, "slow", port, "trx", "slow", PASSWORD), 0);
    // Not an account yet.
    assert_eq!(bind(&mut esme, "new", port, "trx", "new", PASSWORD), 0x0F);

    // The reload: "shop" unchanged, "slow" gets a new password, "new" appears.
    let hash = parla::smpp::auth::hash_password(PASSWORD).unwrap();
    let other = parla::smpp::auth::hash_password("pw2").unwrap();
    let config = std::fs::read_to_string(dir.path().join("parla.toml")).unwrap();
    let start = config.find("system_id = \"slow\"").unwrap();
    let end = start + config[start..].find("max_rate").unwrap();
    let config = format!(
        "{}system_id = \"slow\"\npassword_hash = \"{other}\"\n{}\
         [[smpp.server.account]]\nsystem_id = \"new\"\npassword_hash = \"{hash}\"\n",
        &config[..start],
        &config[end..],
    );
    write_config(dir.path(), &config);
    parla.hangup();
    parla.wait_log("configuration reloaded", 1);
    // "slow" was unbound by the server; "shop" was not, and still submits.
    esme.wait_event("unbound_by_server", |e| e["name"] == "slow");
    let answers = submit(
        &mut esme,
        "shop",
        "after-reload",
        &json!({"to": "+393471234567", "from": "MyShop", "text": "still bound"}),
    );
    accepted_id(&answers);
    assert!(
        esme.events("unbound_by_server")
            .iter()
            .all(|e| e["name"] != "shop"),
        "{}",
        esme.all_events()
    );
    // The old password no longer works for "slow"; the new one does; "new" binds.
    assert_eq!(
        bind(&mut esme, "slow-old", port, "trx", "slow", PASSWORD),
        0x0E
    );
    assert_eq!(bind(&mut esme, "slow-new", port, "trx", "slow", "pw2"), 0);
    assert_eq!(bind(&mut esme, "new-ok", port, "trx", "new", PASSWORD), 0);
    assert!(parla.log().contains("SMPP account retired by a reload"));
}

/// A receipt to a client with nothing else to say goes out at once. It once waited in the
/// connection's output until something else woke the connection: the next enquire_link, or the
/// response timeout of that same receipt, which then came again (seen as 10 s stalls in the
/// reliability suite). The server's own timers here are long, so only that bug makes it late.
#[test]
fn a_receipt_to_an_idle_client_is_not_held_back() {
    let Some(interop) = interop_dir() else { return };
    let smsc = start_sim_smsc(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (parla, port) = start_parla_with(
        dir.path(),
        smsc.port,
        "enquire_link_interval = \"60s\"\nresponse_timeout = \"30s\"\n",
        "",
    );
    wait_api(&parla.client, "/v1/channels", "the carrier link up", |b| {
        b["items"][0]["state"] == "up"
    });
    let mut esme = start_esme(&interop);
    assert_eq!(bind(&mut esme, "idle", port, "trx", "shop", PASSWORD), 0);
    for n in 0..3 {
        let tag = format!("m{n}");
        let answers = submit(
            &mut esme,
            "idle",
            &tag,
            &json!({"to": format!("+39347123470{n}"), "from": "MyShop", "text": "ok", "registered_delivery": 1}),
        );
        let id = accepted_id(&answers);
        // Quiet until the receipt: the guard (20 s) is shorter than the response timeout.
        let receipt = receipt_for(&esme, &id);
        assert_eq!(receipt["name"], "idle", "{receipt}");
    }
    assert!(!parla.log().contains("response timeout"), "{}", parla.log());
}
