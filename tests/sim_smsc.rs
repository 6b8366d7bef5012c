//! `parla sim smsc` end to end: the real binary on loopback TCP, driven by a small SMPP client
//! built from the frame builders and `SmppCodec`, and watched through its JSON event lines.
//! Timeouts are only failure guards: every wait is for an event or a PDU.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use parla::channel::InboundPart;
use parla::codec::gsm7;
use parla::smpp::content::{self, ContentOptions, Delivery, LongMethod, SmsContent};
use parla::smpp::frame::{
    self, Address, BindFields, BindMode, ESME_ROK, Frame, SmppCodec, SubmitFields,
};
use rusmpp::{Command, Pdu};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, Encoder};

/// Failure guard for every wait.
const GUARD: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------------- the simulator

/// The real `parla sim smsc` process.
struct Sim {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<Value>,
    /// Events read but not yet matched by a wait.
    unmatched: Vec<Value>,
    addr: SocketAddr,
}

impl Sim {
    async fn start(args: &[&str]) -> Sim {
        let mut child = Process::new(env!("CARGO_BIN_EXE_parla"))
            .args(["sim", "smsc", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("parla sim smsc starts");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel(100_000);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                if tx.blocking_send(value).is_err() {
                    break;
                }
            }
        });
        let mut sim = Sim {
            child,
            stdin,
            lines,
            unmatched: Vec::new(),
            addr: "127.0.0.1:0".parse().unwrap(),
        };
        let ready = sim.event("ready").await;
        sim.addr = ready["addr"].as_str().unwrap().parse().unwrap();
        sim
    }

    fn control(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The first event (in order, also among those already read) that `pred` accepts.
    async fn wait(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.unmatched.iter().position(&pred) {
            return self.unmatched.remove(i);
        }
        let deadline = tokio::time::Instant::now() + GUARD;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(value)) if pred(&value) => return value,
                Ok(Some(value)) => self.unmatched.push(value),
                Ok(None) => panic!(
                    "sim ended while waiting for {what}; saw {:?}",
                    self.unmatched
                ),
                Err(_) => panic!("no {what} within {GUARD:?}; saw {:?}", self.unmatched),
            }
        }
    }

    async fn event(&mut self, name: &str) -> Value {
        self.wait(name, |v| v["event"] == name).await
    }

    /// Sends a control line and returns its answer (an event named `answer`).
    async fn ask(&mut self, line: &str, answer: &str) -> Value {
        self.control(line);
        self.event(answer).await
    }

    async fn counters(&mut self) -> Value {
        self.ask("counters", "counters").await["counters"].clone()
    }

    /// Waits for the process to exit.
    async fn exit_status(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < GUARD, "sim did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------------- the client

/// A minimal ESME over one TCP connection.
struct Esme {
    stream: TcpStream,
    codec: SmppCodec,
    rbuf: BytesMut,
    seq: u32,
    /// deliver_sm read while waiting for something else.
    delivers: std::collections::VecDeque<Command>,
}

impl Esme {
    async fn connect(addr: SocketAddr) -> Esme {
        Esme {
            stream: TcpStream::connect(addr).await.unwrap(),
            codec: SmppCodec::new(),
            rbuf: BytesMut::new(),
            seq: 0,
            delivers: Default::default(),
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    async fn send(&mut self, command: &Command) {
        let mut buf = BytesMut::new();
        self.codec.encode(command, &mut buf).unwrap();
        self.stream.write_all(&buf).await.unwrap();
    }

    /// The next frame; `None` at the end of the stream (or a reset).
    async fn next(&mut self) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + GUARD;
        loop {
            if let Some(frame) = self.codec.decode(&mut self.rbuf).unwrap() {
                return Some(frame);
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rbuf))
                .await
                .expect("a PDU within the guard");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    async fn next_pdu(&mut self) -> Command {
        match self.next().await {
            Some(Frame::Pdu(command)) => command,
            other => panic!("expected a PDU, got {other:?}"),
        }
    }

    /// The next command that is not a deliver_sm (those are kept for `deliver`).
    async fn next_reply(&mut self) -> Command {
        loop {
            let command = self.next_pdu().await;
            if u32::from(command.id()) == 0x0000_0005 {
                self.delivers.push_back(command);
            } else {
                return command;
            }
        }
    }

    async fn deliver(&mut self) -> Command {
        if let Some(command) = self.delivers.pop_front() {
            return command;
        }
        let command = self.next_pdu().await;
        assert_eq!(u32::from(command.id()), 0x0000_0005, "{command:?}");
        command
    }

    async fn ack(&mut self, deliver: &Command, status: u32) {
        self.send(&frame::deliver_sm_resp(deliver.sequence_number(), status))
            .await;
    }

    async fn bind(&mut self, mode: BindMode, system_id: &str, password: &str) -> u32 {
        let seq = self.next_seq();
        let fields = BindFields {
            system_id: system_id.into(),
            password: password.into(),
            ..BindFields::default()
        };
        self.send(&frame::bind(mode, seq, &fields).unwrap()).await;
        let resp = self.next_reply().await;
        assert_eq!(resp.sequence_number(), seq);
        assert_ne!(u32::from(resp.id()) & 0x8000_0000, 0, "{resp:?}");
        u32::from(resp.status())
    }

    async fn bound(addr: SocketAddr, mode: BindMode) -> Esme {
        let mut esme = Esme::connect(addr).await;
        assert_eq!(esme.bind(mode, "acct", "secret").await, ESME_ROK);
        esme
    }

    /// Submits and returns (status, message_id).
    async fn submit(&mut self, fields: &SubmitFields) -> (u32, String) {
        let seq = self.next_seq();
        self.send(&frame::submit_sm(seq, fields).unwrap()).await;
        let resp = self.next_reply().await;
        assert_eq!(
            (u32::from(resp.id()), resp.sequence_number()),
            (0x8000_0004, seq)
        );
        let id = match resp.pdu() {
            Some(Pdu::SubmitSmResp(b)) => b.message_id().as_str().to_string(),
            _ => String::new(),
        };
        (u32::from(resp.status()), id)
    }
}

fn addr(number: &str) -> Address {
    content::address_for(number).unwrap()
}

fn fields_of(content: SmsContent, registered_delivery: u8) -> SubmitFields {
    SubmitFields {
        registered_delivery,
        ..content::fields_of(&addr("Shop"), &addr("+393471234567"), content)
    }
}

/// The submit_sm a text is sent as.
fn text_submits(text: &str, method: LongMethod, reference: u16, rd: u8) -> Vec<SubmitFields> {
    let options = ContentOptions {
        long_method: method,
        ..ContentOptions::default()
    };
    content::encode_text(text, gsm7::choose_encoding(text), options, reference)
        .unwrap()
        .into_iter()
        .map(|c| fields_of(c, rd))
        .collect()
}

/// (receipted id, stat word) of a receipt as the gateway reads it.
fn read_receipt(deliver: &Command) -> (String, String) {
    match content::read_delivery(deliver, false).unwrap() {
        Delivery::Receipt {
            remote_id, state, ..
        } => (remote_id, format!("{state:?}")),
        other => panic!("not a receipt: {other:?}"),
    }
}

// ------------------------------------------------------------------------------- tests

#[tokio::test]
async fn binds_are_checked_and_can_be_refused() {
    let mut sim = Sim::start(&["--system-id", "acct", "--password", "secret"]).await;
    let mut esme = Esme::connect(sim.addr).await;
    assert_eq!(esme.bind(BindMode::Transmitter, "acct", "nope").await, 0x0E);
    assert_eq!(
        esme.bind(BindMode::Transmitter, "other", "secret").await,
        0x0F
    );
    let refused = sim.event("bind_refused").await;
    assert_eq!(refused["status"], "0x0000000E");
    // Submits before a successful bind are refused.
    let submit = fields_of(SmsContent::default(), 0);
    assert_eq!(esme.submit(&submit).await.0, 0x04);
    assert_eq!(esme.bind(BindMode::Transceiver, "acct", "secret").await, 0);
    let bound = sim.event("bound").await;
    assert_eq!(bound["mode"], "transceiver");
    assert_eq!(bound["system_id"], "acct");
    assert_eq!(
        esme.bind(BindMode::Transceiver, "acct", "secret").await,
        0x05
    );

    sim.ask("refuse-binds 0x0D", "refuse_binds").await;
    let mut second = Esme::connect(sim.addr).await;
    assert_eq!(
        second.bind(BindMode::Receiver, "acct", "secret").await,
        0x0D
    );
    sim.ask("refuse-binds off", "refuse_binds").await;
    assert_eq!(second.bind(BindMode::Receiver, "acct", "secret").await, 0);
    // A receiver may not submit.
    assert_eq!(second.submit(&submit).await.0, 0x04);

    let counters = sim.counters().await;
    assert_eq!(counters["binds"], 2);
    assert_eq!(counters["binds_refused"], 4);
    assert_eq!(counters["connections_open"], 2);

    // The same refusal from the command line.
    let mut refusing = Sim::start(&["--refuse-binds", "0x0D"]).await;
    let mut esme = Esme::connect(refusing.addr).await;
    assert_eq!(esme.bind(BindMode::Transceiver, "any", "any").await, 0x0D);
    refusing.event("bind_refused").await;
}

#[tokio::test]
async fn texts_arrive_whole_by_each_method() {
    let mut sim = Sim::start(&[]).await;
    let mut esme = Esme::bound(sim.addr, BindMode::Transmitter).await;
    let gsm_long: String = (0..60).map(|i| format!("part{i:02} ")).collect();
    let ucs2_long = "Привет мир 👋 ".repeat(12);
    let cases = [
        ("Hello @ world {€}", LongMethod::Udh, 1, "single"),
        ("Привет 👋", LongMethod::Udh, 1, "single"),
        (gsm_long.as_str(), LongMethod::Udh, 3, "udh"),
        (gsm_long.as_str(), LongMethod::Sar, 3, "sar"),
        (gsm_long.as_str(), LongMethod::Payload, 1, "payload"),
        (ucs2_long.as_str(), LongMethod::Udh, 3, "udh"),
        (ucs2_long.as_str(), LongMethod::Sar, 3, "sar"),
        (ucs2_long.as_str(), LongMethod::Payload, 1, "payload"),
    ];
    for (i, (text, method, parts, label)) in cases.into_iter().enumerate() {
        let reference = 40 + i as u16;
        let submits = text_submits(text, method, reference, 0);
        if label != "payload" {
            assert_eq!(submits.len(), parts, "{label} {text}");
        }
        for (n, fields) in submits.iter().enumerate() {
            let (status, id) = esme.submit(fields).await;
            assert_eq!(status, 0);
            let event = sim.event("submit").await;
            assert_eq!(event["message_id"], id);
            assert_eq!(event["status"], "0x00000000");
            assert_eq!(event["dest"], "393471234567");
            if parts > 1 && label != "payload" {
                let part: InboundPart = serde_json::from_value(event["part"].clone()).unwrap();
                assert_eq!(
                    (part.reference, part.total, part.seq),
                    (reference, 3, n as u8 + 1)
                );
            } else {
                assert!(event["part"].is_null());
            }
        }
        let message = sim.event("message").await;
        assert_eq!(message["text"], text, "{label}");
        assert_eq!(message["method"], label);
        assert_eq!(message["source"], "Shop");
        let want_parts = if label == "payload" { 1 } else { parts };
        assert_eq!(message["parts"], want_parts);
    }
    let counters = sim.counters().await;
    assert_eq!(counters["messages"], 8);
    assert_eq!(counters["submit_resps"]["0x00000000"], 2 + 3 * 4 + 2);
}

#[tokio::test]
async fn message_ids_in_each_style() {
    let cases = [
        ("hex", ["1a2b3c4d", "1a2b3c4e"]),
        ("hex-upper", ["001A2B3C4D", "001A2B3C4E"]),
        ("decimal", ["439041101", "439041102"]),
    ];
    for (style, want) in cases {
        let sim = Sim::start(&["--id-style", style]).await;
        let mut esme = Esme::bound(sim.addr, BindMode::Transmitter).await;
        let fields = text_submits("hi", LongMethod::Udh, 1, 0).remove(0);
        assert_eq!(esme.submit(&fields).await.1, want[0], "{style}");
        assert_eq!(esme.submit(&fields).await.1, want[1], "{style}");
    }
    let sim = Sim::start(&["--id-style", "uuid", "--id-start", "255"]).await;
    let mut esme = Esme::bound(sim.addr, BindMode::Transmitter).await;
    let fields = text_submits("hi", LongMethod::Udh, 1, 0).remove(0);
    let id = esme.submit(&fields).await.1;
    let groups: Vec<&str> = id.split('-').collect();
    assert_eq!(
        groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12],
        "{id}"
    );
    assert_eq!(groups[4], "0000000000ff");
    assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
}

#[tokio::test]
async fn receipts_in_each_style_and_id_form() {
    let cases = [
        // style, id form, share, want id from "001A2B3C4D", stat, tlvs, text
        (
            "text",
            "same",
            "0",
            "001A2B3C4D",
            "Some(Delivered)",
            false,
            true,
        ),
        (
            "tlv",
            "decimal",
            "1",
            "439041101",
            "Some(Undeliverable)",
            true,
            false,
        ),
        (
            "both",
            "hex",
            "0",
            "1a2b3c4d",
            "Some(Delivered)",
            true,
            true,
        ),
    ];
    for (style, form, share, want_id, want_state, tlvs, text) in cases {
        let mut sim = Sim::start(&[
            "--id-style",
            "hex-upper",
            "--receipt-style",
            style,
            "--receipt-id-form",
            form,
            "--undeliverable-share",
            share,
            "--receipt-delay-ms",
            "20",
        ])
        .await;
        let mut esme = Esme::bound(sim.addr, BindMode::Transceiver).await;
        let fields = text_submits("Ciao, a presto! Arrivederci", LongMethod::Udh, 1, 1).remove(0);
        let (_, id) = esme.submit(&fields).await;
        assert_eq!(id, "001A2B3C4D");
        let deliver = esme.deliver().await;
        let sms = content::sms_of(&deliver).unwrap();
        assert_eq!(sms.content.esm_class, 0x04, "{style}");
        assert_eq!(sms.source.addr, "393471234567");
        assert_eq!(sms.dest.addr, "Shop");
        assert_eq!(sms.receipted_message_id.is_some(), tlvs, "{style}");
        assert_eq!(!sms.content.short_message.is_empty(), text, "{style}");
        if text {
            let body = String::from_utf8(sms.content.short_message.clone()).unwrap();
            assert!(
                body.starts_with(&format!("id:{want_id} sub:001 dlvrd:")),
                "{body}"
            );
            assert!(body.ends_with(" text:Ciao, a presto! Arri"), "{body}");
        }
        let (remote_id, state) = read_receipt(&deliver);
        assert_eq!((remote_id.as_str(), state.as_str()), (want_id, want_state));
        esme.ack(&deliver, 0).await;
        let sent = sim.event("receipt_sent").await;
        assert_eq!(sent["message_id"], "001A2B3C4D");
        assert_eq!(sent["receipt_id"], want_id);
        let acked = sim.event("receipt_acked").await;
        assert_eq!(acked["status"], "0x00000000");
        let counters = sim.counters().await;
        assert_eq!(
            (&counters["receipts_acked"], &counters["pending"]),
            (&1.into(), &0.into())
        );
    }
}

#[tokio::test]
async fn receipts_are_never_lost() {
    let mut sim = Sim::start(&[
        "--receipt-delay-ms",
        "10",
        "--retry-delay-ms",
        "50",
        "--delivery-timeout-ms",
        "300",
    ])
    .await;
    let mut first = Esme::bound(sim.addr, BindMode::Transceiver).await;
    let fields = text_submits("hello", LongMethod::Udh, 1, 1).remove(0);
    let (_, id) = first.submit(&fields).await;
    let receipt = first.deliver().await;
    assert_eq!(read_receipt(&receipt).0, id);
    // Dropped without an answer: the next session of the account gets it.
    drop(first);
    sim.event("disconnected").await;
    let requeued = sim.event("requeued").await;
    assert_eq!(requeued["reason"], "disconnected");
    let mut second = Esme::bound(sim.addr, BindMode::Receiver).await;
    let again = second.deliver().await;
    assert_eq!(read_receipt(&again).0, id);
    // Answered with an error: sent again after the retry delay.
    second.ack(&again, 0x08).await;
    let third = second.deliver().await;
    assert_eq!(read_receipt(&third).0, id);
    assert_ne!(third.sequence_number(), again.sequence_number());
    // Not answered at all: sent again after the delivery timeout.
    let fourth = second.deliver().await;
    assert_eq!(read_receipt(&fourth).0, id);
    second.ack(&fourth, 0).await;
    let attempts: Vec<Value> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(sim.event("receipt_sent").await["attempt"].clone());
        }
        v
    };
    assert_eq!(attempts, [1, 2, 3, 4]);
    sim.wait("acked OK", |v| {
        v["event"] == "receipt_acked" && v["status"] == "0x00000000"
    })
    .await;
    let counters = sim.counters().await;
    assert_eq!(counters["receipts_sent"], 4);
    assert_eq!(counters["receipts_acked"], 1);
    assert_eq!(counters["pending"], 0);
}

#[tokio::test]
async fn mo_messages_single_and_long() {
    let mut sim = Sim::start(&[]).await;
    // Queued before anyone can receive.
    let queued = sim
        .ask("mo +393471234567 4000 single Ciao, ci sei?", "mo_queued")
        .await;
    assert_eq!(queued["parts"], 1);
    let mut esme = Esme::bound(sim.addr, BindMode::Receiver).await;
    let deliver = esme.deliver().await;
    let sms = content::sms_of(&deliver).unwrap();
    assert_eq!((sms.content.esm_class, sms.content.data_coding), (0, 0));
    match content::read_delivery(&deliver, false).unwrap() {
        Delivery::Sms {
            from,
            to,
            text,
            part,
        } => {
            assert_eq!(
                (from.as_str(), to.as_str(), text.as_str()),
                ("+393471234567", "4000", "Ciao, ci sei?")
            );
            assert_eq!(part, None);
        }
        other => panic!("{other:?}"),
    }
    esme.ack(&deliver, 0).await;
    assert_eq!(sim.event("mo_acked").await["status"], "0x00000000");

    let long = "Sì, arrivo fra venti minuti. ".repeat(8);
    let ucs2 = "Да, через двадцать минут 👍 ".repeat(4);
    for (method, text, esm) in [
        ("udh", &long, 0x40),
        ("sar", &long, 0),
        ("payload", &long, 0),
        ("udh", &ucs2, 0x40),
    ] {
        let queued = sim
            .ask(
                &format!("mo +393471234567 4000 {method} {text}"),
                "mo_queued",
            )
            .await;
        let parts = queued["parts"].as_u64().unwrap();
        assert_eq!(parts, if method == "payload" { 1 } else { 2 }, "{method}");
        let mut whole = String::new();
        for n in 0..parts {
            let deliver = esme.deliver().await;
            let sms = content::sms_of(&deliver).unwrap();
            assert_eq!(sms.content.esm_class, esm, "{method}");
            assert_eq!(sms.content.sar.is_some(), method == "sar");
            assert_eq!(sms.content.message_payload.is_some(), method == "payload");
            match content::read_delivery(&deliver, false).unwrap() {
                Delivery::Sms { text, part, .. } => {
                    if parts > 1 {
                        assert_eq!(part.map(|p| (p.total, p.seq)), Some((2, n as u8 + 1)));
                    }
                    whole.push_str(&text);
                }
                other => panic!("{other:?}"),
            }
            esme.ack(&deliver, 0).await;
        }
        assert_eq!(&whole, text, "{method}");
    }
    let counters = sim.counters().await;
    assert_eq!(counters["mo_sent"], 1 + 2 + 2 + 1 + 2);
    // Errors are reported, not fatal.
    let error = sim.ask("mo +39 4000 telegraph hi", "error").await;
    assert!(error["message"].as_str().unwrap().contains("usage"));
    let error = sim
        .ask(&format!("mo +39 4000 single {long}"), "error")
        .await;
    assert!(error["message"].as_str().unwrap().contains("udh"));
}

#[tokio::test]
async fn throttle_fail_and_stall() {
    let mut sim = Sim::start(&[]).await;
    let mut esme = Esme::bound(sim.addr, BindMode::Transmitter).await;
    let fields = text_submits("hi", LongMethod::Udh, 1, 0).remove(0);
    sim.ask("throttle 2", "throttle").await;
    assert_eq!(esme.submit(&fields).await, (0x58, String::new()));
    assert_eq!(esme.submit(&fields).await.0, 0x58);
    sim.ask("fail 1 0x14", "fail").await;
    assert_eq!(esme.submit(&fields).await.0, 0x14);
    let (status, id) = esme.submit(&fields).await;
    assert_eq!((status, id.as_str()), (0, "1a2b3c4d"));

    // Stalled: the submit is read (the sim says so) but never answered, not even later.
    sim.ask("stall on", "stall").await;
    esme.send(&frame::submit_sm(100, &fields).unwrap()).await;
    let ignored = sim.event("ignored").await;
    assert_eq!(
        (
            ignored["command"].as_str(),
            ignored["sequence_number"].as_u64()
        ),
        (Some("submit_sm"), Some(100))
    );
    esme.send(&frame::enquire_link(101)).await;
    sim.wait("enquire_link ignored", |v| {
        v["event"] == "ignored" && v["sequence_number"] == 101
    })
    .await;
    sim.ask("stall off", "stall").await;
    esme.send(&frame::enquire_link(102)).await;
    let next = esme.next_pdu().await;
    assert_eq!(
        (u32::from(next.id()), next.sequence_number()),
        (0x8000_0015, 102)
    );
    let counters = sim.counters().await;
    assert_eq!(counters["submit_resps"]["0x00000058"], 2);
    assert_eq!(counters["submit_resps"]["0x00000014"], 1);
    assert_eq!(counters["ignored"], 2);
    assert_eq!(sim.ask("stall sideways", "error").await["event"], "error");
}

#[tokio::test]
async fn drop_closes_every_connection_without_unbind() {
    let mut sim = Sim::start(&[]).await;
    let mut a = Esme::bound(sim.addr, BindMode::Transceiver).await;
    let mut b = Esme::bound(sim.addr, BindMode::Receiver).await;
    sim.ask("stall on", "stall").await;
    let fields = text_submits("hi", LongMethod::Udh, 1, 0).remove(0);
    a.send(&frame::submit_sm(50, &fields).unwrap()).await;
    sim.event("ignored").await;
    let dropped = sim.ask("drop", "dropped").await;
    assert_eq!(dropped["connections"], 2);
    // Nothing but the end of the stream: no unbind, no late submit_sm_resp.
    assert!(a.next().await.is_none());
    assert!(b.next().await.is_none());
    for _ in 0..2 {
        let gone = sim.event("disconnected").await;
        assert_eq!(gone["reason"], "dropped by the simulator");
    }
    sim.ask("stall off", "stall").await;
    // The SMSC itself is still there.
    let _again = Esme::bound(sim.addr, BindMode::Transceiver).await;
    assert_eq!(sim.counters().await["connections_open"], 1);
}

#[tokio::test]
async fn garbage_gets_generic_nack_and_unbind_closes() {
    let mut sim = Sim::start(&[]).await;
    let mut esme = Esme::bound(sim.addr, BindMode::Transceiver).await;
    // An unknown command_id.
    let junk = [
        0, 0, 0, 0x14, 0, 0, 0x07, 0x77, 0, 0, 0, 0, 0, 0, 0, 42, b'j', b'u', b'n', b'k',
    ];
    esme.stream.write_all(&junk).await.unwrap();
    let nack = esme.next_pdu().await;
    assert_eq!(
        (
            u32::from(nack.id()),
            nack.sequence_number(),
            u32::from(nack.status())
        ),
        (0x8000_0000, 42, 0x03)
    );
    // A submit_sm whose body is cut short.
    let mut cut = frame::encode_to_vec(
        &frame::submit_sm(43, &text_submits("hi", LongMethod::Udh, 1, 0)[0]).unwrap(),
    )
    .unwrap();
    cut.truncate(24);
    cut[..4].copy_from_slice(&24u32.to_be_bytes());
    esme.stream.write_all(&cut).await.unwrap();
    let nack = esme.next_pdu().await;
    assert_eq!(
        (u32::from(nack.id()), nack.sequence_number()),
        (0x8000_0000, 43)
    );
    let event = sim.event("generic_nack_sent").await;
    assert_eq!(event["sequence_number"], 42);
    // The session goes on.
    esme.send(&frame::enquire_link(44)).await;
    assert_eq!(esme.next_pdu().await.sequence_number(), 44);
    // Unbind: unbind_resp, then the end of the stream.
    esme.send(&frame::unbind(45)).await;
    let resp = esme.next_pdu().await;
    assert_eq!(
        (u32::from(resp.id()), resp.sequence_number()),
        (0x8000_0006, 45)
    );
    assert!(esme.next().await.is_none());
    sim.event("unbound").await;
    sim.event("disconnected").await;

    // A length that breaks framing: generic_nack ESME_RINVCMDLEN, then the connection closes.
    let mut other = Esme::connect(sim.addr).await;
    other
        .stream
        .write_all(&[0, 0, 0, 5, 0, 0, 0, 0x15, 0, 0, 0, 0, 0, 0, 0, 9])
        .await
        .unwrap();
    let nack = other.next_pdu().await;
    assert_eq!(
        (nack.sequence_number(), u32::from(nack.status())),
        (9, 0x02)
    );
    assert!(other.next().await.is_none());
}

#[tokio::test]
async fn quit_unbinds_sessions_and_exits() {
    let mut sim = Sim::start(&[]).await;
    let mut esme = Esme::bound(sim.addr, BindMode::Transceiver).await;
    sim.control("quit");
    let unbind = esme.next_pdu().await;
    assert_eq!(u32::from(unbind.id()), 0x0000_0006);
    esme.send(&frame::unbind_resp(unbind.sequence_number()))
        .await;
    assert!(esme.next().await.is_none());
    sim.event("unbound").await;
    assert!(sim.exit_status().await.success());
}

/// Throughput with receipts on: one connection, a window of submits in flight, every receipt
/// acknowledged. Run with `cargo test --release --test sim_smsc -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn throughput() {
    const TOTAL: u32 = 200_000;
    const WINDOW: u32 = 2_000;
    let mut sim = Sim::start(&[
        "--quiet",
        "--receipt-delay-ms",
        "0",
        "--deliver-window",
        "1000",
    ])
    .await;
    let esme = Esme::bound(sim.addr, BindMode::Transceiver).await;
    let fields = text_submits(
        "Your parcel arrives today between 10 and 12",
        LongMethod::Udh,
        1,
        1,
    )
    .remove(0);
    let mut template = Vec::new();
    for seq in 1..=WINDOW {
        template.push(frame::encode_to_vec(&frame::submit_sm(seq, &fields).unwrap()).unwrap());
    }
    let (mut reader, mut writer) = esme.stream.into_split();
    let start = Instant::now();
    let (acks_tx, mut acks_rx) = mpsc::channel::<u32>(100_000);
    let (resp_tx, mut resp_rx) = mpsc::channel::<()>(100_000);
    let read = tokio::spawn(async move {
        let mut codec = SmppCodec::new();
        let mut buf = BytesMut::with_capacity(1 << 20);
        let (mut resps, mut receipts) = (0u32, 0u32);
        while resps < TOTAL || receipts < TOTAL {
            if reader.read_buf(&mut buf).await.unwrap() == 0 {
                panic!("closed after {resps} resps, {receipts} receipts");
            }
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                let Frame::Pdu(c) = frame else {
                    panic!("{frame:?}")
                };
                match u32::from(c.id()) {
                    0x8000_0004 => {
                        assert_eq!(u32::from(c.status()), 0);
                        resps += 1;
                        let _ = resp_tx.try_send(());
                    }
                    0x0000_0005 => {
                        receipts += 1;
                        acks_tx.send(c.sequence_number()).await.unwrap();
                    }
                    _ => {}
                }
            }
        }
        (resps, receipts)
    });
    let mut sent = 0u32;
    let mut in_flight = 0u32;
    let mut out = Vec::with_capacity(1 << 20);
    let mut codec = SmppCodec::new();
    let mut acks_open = true;
    while sent < TOTAL || acks_open {
        out.clear();
        while sent < TOTAL && in_flight < WINDOW {
            out.extend_from_slice(&template[(sent % WINDOW) as usize]);
            sent += 1;
            in_flight += 1;
        }
        let mut ack_buf = BytesMut::new();
        while let Ok(seq) = acks_rx.try_recv() {
            codec
                .encode(frame::deliver_sm_resp(seq, 0), &mut ack_buf)
                .unwrap();
        }
        out.extend_from_slice(&ack_buf);
        if !out.is_empty() {
            writer.write_all(&out).await.unwrap();
            continue;
        }
        tokio::select! {
            r = resp_rx.recv() => {
                if r.is_some() {
                    in_flight -= 1;
                    while resp_rx.try_recv().is_ok() { in_flight -= 1; }
                }
            }
            seq = acks_rx.recv() => match seq {
                Some(seq) => {
                    codec.encode(frame::deliver_sm_resp(seq, 0), &mut ack_buf).unwrap();
                    writer.write_all(&ack_buf).await.unwrap();
                }
                None => acks_open = false,
            },
        }
    }
    let (resps, receipts) = read.await.unwrap();
    let elapsed = start.elapsed();
    println!(
        "{resps} submit_sm answered and {receipts} receipts acknowledged in {elapsed:?}: {:.0} submit_sm/s",
        f64::from(resps) / elapsed.as_secs_f64()
    );
    let counters = sim.counters().await;
    println!("{counters}");
    assert_eq!(counters["receipts_sent"], TOTAL);
}
