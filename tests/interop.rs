//! Interoperability: the real `parla` binary's SMPP client link against an SMSC that is not
//! written in this project, tests/interop/smsc.js on node-smpp (the npm package `smpp`). It
//! needs node and the package: `npm ci --prefix tests/interop` (CI's .ci/run installs both).
//! PARLA_SKIP_INTEROP=1 skips it; without node or the package it fails rather than pass
//! silently.
//!
//! The SMSC prints one JSON line per event (bind, submit, whole message, receipt, MO, unbind);
//! the test awaits those and parla's API, with timeouts only as failure guards.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use support::{Binary, Client, GUARD, Listening, interop_dir, wait_api, write_config};

const SYSTEM_ID: &str = "parla";
const PASSWORD: &str = "secret1";
const CUSTOMER: &str = "+393471234567";
const SHOP_NUMBER: &str = "+393400000001";

/// tests/interop/smsc.js, listening on a free port.
fn start_smsc(dir: &Path) -> Listening {
    let mut command = Command::new("node");
    command
        .arg(dir.join("smsc.js"))
        .args(["0", "--system-id", SYSTEM_ID, "--password", PASSWORD]);
    Listening::start("smsc.js", command, |ready| {
        ready["port"].as_u64().and_then(|p| u16::try_from(p).ok())
    })
}

fn post_message(client: &Client, to: &str, text: &str) -> String {
    let a = client.post(
        "/v1/messages",
        &json!({"to": to, "text": text, "from": "Shop"}),
    );
    assert_eq!(a.status, 202, "{:?}", a.body);
    a.body["id"].as_str().unwrap().to_string()
}

/// A GSM text of three parts (more than 2 x 153 characters): plain letters, digits and spaces.
fn three_part_text() -> String {
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 400 {
        text.push_str(&format!("Item {i} of your order ships today "));
        i += 1;
    }
    text.truncate(400);
    text.trim_end().to_string()
}

#[test]
fn smpp_link_interoperates_with_node_smpp() {
    let Some(interop) = interop_dir() else { return };
    let mut smsc = start_smsc(&interop);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[store]\npath = \"store\"\n\
             [sim]\nenabled = false\n\
             [[smpp.client]]\nname = \"nodesmsc\"\nhost = \"127.0.0.1\"\nport = {}\n\
             system_id = \"{SYSTEM_ID}\"\npassword = \"{PASSWORD}\"\nbind = \"transceiver\"\n\
             window = 10\nenquire_link_interval = \"1s\"\nreconnect_min = \"100ms\"\n\
             reconnect_max = \"1s\"\n",
            smsc.port
        ),
    );
    let mut parla = Binary::start(dir.path(), Some(&config), &[]);
    let client = parla.client.clone();

    // The bind, seen from both sides.
    let bind = smsc.wait_event("bind", |_| true);
    assert_eq!(bind["command"], "bind_transceiver", "{bind}");
    assert_eq!(bind["system_id"], SYSTEM_ID, "{bind}");
    assert_eq!(bind["interface_version"], 0x34, "{bind}");
    assert_eq!(bind["status"], 0, "{bind}");
    wait_api(&client, "/v1/channels", "the link up", |b| {
        b["items"][0]["name"] == "nodesmsc" && b["items"][0]["state"] == "up"
    });

    // (a) A GSM text and a UCS-2 text, one part each, with receipts that carry the
    // receipted_message_id TLV (in hex, as the submit_sm_resp) beside the decimal id: text.
    let gsm = "Your order 1234 ships tomorrow";
    let ucs2 = "Ciao Zoë, il tuo ordine è pronto ✓ 🙂";
    let gsm_id = post_message(&client, "+393471234501", gsm);
    let ucs2_id = post_message(&client, "+393471234502", ucs2);
    let gsm_submit = smsc.wait_event("submit", |e| e["to"] == "+393471234501");
    assert_eq!(gsm_submit["data_coding"], 0, "{gsm_submit}");
    assert_eq!(gsm_submit["esm_class"], 0, "{gsm_submit}");
    assert_eq!(gsm_submit["text"], gsm, "{gsm_submit}");
    assert_eq!(gsm_submit["from"], "Shop", "{gsm_submit}");
    assert_eq!(
        gsm_submit["source_ton"], 5,
        "alphanumeric sender: {gsm_submit}"
    );
    assert_eq!(gsm_submit["dest_ton"], 1, "{gsm_submit}");
    assert_eq!(gsm_submit["registered_delivery"], 1, "{gsm_submit}");
    let ucs2_submit = smsc.wait_event("submit", |e| e["to"] == "+393471234502");
    assert_eq!(ucs2_submit["data_coding"], 8, "{ucs2_submit}");
    assert_eq!(ucs2_submit["text"], ucs2, "{ucs2_submit}");
    for (to, text) in [("+393471234501", gsm), ("+393471234502", ucs2)] {
        let m = smsc.wait_event("message", |e| e["to"] == to);
        assert_eq!(m["text"], text, "{m}");
        assert_eq!(m["from"], "Shop", "{m}");
        assert_eq!(m["parts"], 1, "{m}");
    }
    for (id, submit) in [(&gsm_id, &gsm_submit), (&ucs2_id, &ucs2_submit)] {
        let m = client.wait_for(id, GUARD, |m| m["status"] == "delivered");
        assert_eq!(m["channel"], "nodesmsc", "{m}");
        assert_eq!(m["part_states"][0]["status"], "delivered", "{m}");
        assert_eq!(m["part_states"][0]["remote_id"], submit["id"], "{m}");
    }

    // A three-part text (UDH), whose receipts name the id only in decimal (the classic
    // mismatch with the hex id of the submit_sm_resp).
    smsc.command("set receipt_tlv 0");
    smsc.wait_event("set", |e| e["key"] == "receipt_tlv" && e["value"] == "0");
    let long = three_part_text();
    let long_id = post_message(&client, "+393471234503", &long);
    let m = smsc.wait_event("message", |e| e["to"] == "+393471234503");
    assert_eq!(m["text"], long.as_str(), "{m}");
    assert_eq!(m["parts"], 3, "{m}");
    let submits: Vec<Value> = smsc
        .events("submit")
        .into_iter()
        .filter(|e| e["to"] == "+393471234503")
        .collect();
    assert_eq!(submits.len(), 3, "{submits:?}");
    let reference = &submits[0]["concat"]["ref"];
    let mut seqs: Vec<u64> = submits
        .iter()
        .map(|s| {
            assert_eq!(s["esm_class"].as_u64().unwrap() & 0x40, 0x40, "UDHI: {s}");
            assert_eq!(s["data_coding"], 0, "{s}");
            assert_eq!(s["concat"]["total"], 3, "{s}");
            assert_eq!(&s["concat"]["ref"], reference, "one reference: {s}");
            s["concat"]["seq"].as_u64().unwrap()
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, [1, 2, 3]);
    let m = client.wait_for(&long_id, GUARD, |m| m["status"] == "delivered");
    let mut remote_ids: Vec<&str> = m["part_states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["status"], "delivered", "{m}");
            p["remote_id"].as_str().unwrap()
        })
        .collect();
    let mut submitted: Vec<&str> = submits.iter().map(|s| s["id"].as_str().unwrap()).collect();
    remote_ids.sort_unstable();
    submitted.sort_unstable();
    assert_eq!(remote_ids, submitted, "{m}");
    for receipt in smsc.events("receipt_sent") {
        let id = receipt["id"].as_str().unwrap();
        if submitted.contains(&id) {
            assert_eq!(receipt["tlv"], false, "{receipt}");
            let decimal = u64::from_str_radix(id, 16).unwrap().to_string();
            assert_eq!(receipt["decimal"], decimal.as_str(), "{receipt}");
            assert_ne!(decimal, id, "the two forms differ");
        }
    }
    // Every receipt (5 parts) was acknowledged with ESME_ROK.
    let acked = smsc.wait("five receipts acknowledged", |events| {
        let acked: Vec<&Value> = events
            .iter()
            .filter(|e| e["event"] == "receipt_acked")
            .collect();
        (acked.len() >= 5).then(|| acked.into_iter().cloned().collect::<Vec<_>>())
    });
    assert!(acked.iter().all(|e| e["status"] == 0), "{acked:?}");

    // (b) A customer's reply (MO). parla acknowledges it only once stored, so the inbound list
    // has it by the time the SMSC has its deliver_sm_resp.
    smsc.command(&format!("mo {CUSTOMER} {SHOP_NUMBER} hello back"));
    let ack = smsc.wait_event("mo_acked", |_| true);
    assert_eq!(ack["status"], 0, "{ack}");
    let inbound = client.get("/v1/inbound");
    assert_eq!(inbound.status, 200, "{:?}", inbound.body);
    let items = inbound.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{:?}", inbound.body);
    let reply = &items[0];
    assert_eq!(reply["from"], CUSTOMER, "{reply}");
    assert_eq!(reply["text"], "hello back", "{reply}");
    assert_eq!(reply["channel"], "nodesmsc", "{reply}");
    assert_eq!(reply["to"], SHOP_NUMBER, "{reply}");
    assert_eq!(reply["parts"], 1, "{reply}");
    let channels = client.get("/v1/channels");
    let channel = &channels.body["items"][0];
    assert_eq!(channel["sent"], 5, "five parts accepted: {channel}");
    assert_eq!(channel["received"], 1, "{channel}");

    // Keepalive: once the link is quiet, parla's enquire_link is answered.
    smsc.wait_event("enquire_link", |_| true);
    assert_eq!(
        smsc.events("bind").len(),
        1,
        "the link never dropped: {}",
        smsc.all_events()
    );

    // (c) SIGTERM: parla unbinds and exits 0.
    let status = parla.terminate();
    assert!(status.success(), "{status:?}; log:\n{}", parla.log());
    let unbind = smsc.wait_event("unbind", |_| true);
    assert_eq!(unbind["system_id"], SYSTEM_ID, "{unbind}");
    smsc.wait_event("close", |_| true);
    assert!(
        parla.log().contains("SMPP link unbound"),
        "log:\n{}",
        parla.log()
    );
    let refused: Vec<Value> = ["generic_nack", "unsupported", "session_error", "error"]
        .iter()
        .flat_map(|e| smsc.events(e))
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
    smsc.command("quit");
    smsc.wait_event("quit", |_| true);
}
