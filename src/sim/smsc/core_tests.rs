use super::*;

use crate::codec::receipt;
use crate::smpp::frame::{BindFields, generic_nack};

fn t0() -> Instant {
    Instant::now()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A core with `adjust` applied to the default settings, started at `now` = Unix 1767225600
/// (2026-01-01T00:00:00Z).
fn core_with(now: Instant, adjust: impl FnOnce(&mut SmscConfig)) -> SmscCore {
    let mut config = SmscConfig::default();
    adjust(&mut config);
    SmscCore::new(config, now, 1_767_225_600)
}

fn bind_frame(mode: BindMode, seq: u32, system_id: &str, password: &str) -> Frame {
    let fields = BindFields {
        system_id: system_id.into(),
        password: password.into(),
        ..BindFields::default()
    };
    Frame::Pdu(frame::bind(mode, seq, &fields).unwrap())
}

fn submit_fields(text: &str, registered_delivery: u8) -> SubmitFields {
    SubmitFields {
        source: Address {
            ton: 5,
            npi: 0,
            addr: "Shop".into(),
        },
        dest: Address {
            ton: 1,
            npi: 1,
            addr: "393471234567".into(),
        },
        registered_delivery,
        short_message: text.as_bytes().to_vec(),
        ..SubmitFields::default()
    }
}

fn submit(seq: u32, text: &str, registered_delivery: u8) -> Frame {
    Frame::Pdu(frame::submit_sm(seq, &submit_fields(text, registered_delivery)).unwrap())
}

fn out(core: &mut SmscCore, conn: ConnId) -> Vec<Command> {
    let mut v = Vec::new();
    core.poll_transmit(conn, &mut v);
    v
}

fn events(core: &mut SmscCore) -> Vec<SmscEvent> {
    std::iter::from_fn(|| core.poll_event()).collect()
}

fn status(c: &Command) -> u32 {
    u32::from(c.status())
}

fn id(c: &Command) -> u32 {
    u32::from(c.id())
}

fn message_id(c: &Command) -> String {
    match c.pdu() {
        Some(Pdu::SubmitSmResp(b)) => b.message_id().as_str().to_string(),
        other => panic!("not a submit_sm_resp: {other:?}"),
    }
}

/// A connection bound with `mode` as "acct", and what it got after the bind_resp.
fn bound_rest(core: &mut SmscCore, mode: BindMode, now: Instant) -> (ConnId, Vec<Command>) {
    let conn = core.handle_connect("127.0.0.1:1");
    core.handle_frame(conn, bind_frame(mode, 1, "acct", "pw"), now);
    let mut resp = out(core, conn);
    assert_eq!(status(&resp[0]), 0);
    resp.remove(0);
    (conn, resp)
}

/// A connection bound with `mode` as "acct" that got nothing but the bind_resp.
fn bound(core: &mut SmscCore, mode: BindMode, now: Instant) -> ConnId {
    let (conn, rest) = bound_rest(core, mode, now);
    assert!(rest.is_empty(), "{rest:?}");
    conn
}

#[test]
fn binds_are_judged_by_credentials_and_faults() {
    let now = t0();
    let mut core = core_with(now, |c| {
        c.system_id = Some("acct".into());
        c.password = Some("secret".into());
    });
    let conn = core.handle_connect("peer");
    let cases = [
        ("other", "secret", ESME_RINVSYSID),
        ("acct", "wrong", ESME_RINVPASWD),
        ("acct", "secret", 0),
        ("acct", "secret", ESME_RALYBND),
    ];
    for (i, (sys, pw, want)) in cases.into_iter().enumerate() {
        let seq = i as u32 + 1;
        core.handle_frame(conn, bind_frame(BindMode::Transceiver, seq, sys, pw), now);
        let resp = out(&mut core, conn);
        assert_eq!(resp.len(), 1);
        assert_eq!(id(&resp[0]), 0x8000_0009);
        assert_eq!((resp[0].sequence_number(), status(&resp[0])), (seq, want));
    }
    let ev = events(&mut core);
    assert!(matches!(ev[0], SmscEvent::Connected { .. }));
    assert!(matches!(&ev[1], SmscEvent::BindRefused { status, .. } if status == "0x0000000F"));
    assert!(
        matches!(&ev[3], SmscEvent::Bound { mode: "transceiver", system_id, .. } if system_id == "acct")
    );

    // refuse-binds wins over good credentials; off again restores them.
    core.refuse_binds(Some(0x0D));
    let c2 = core.handle_connect("peer");
    core.handle_frame(c2, bind_frame(BindMode::Receiver, 7, "acct", "secret"), now);
    assert_eq!(status(&out(&mut core, c2)[0]), 0x0D);
    core.refuse_binds(None);
    core.handle_frame(c2, bind_frame(BindMode::Receiver, 8, "acct", "secret"), now);
    let resp = out(&mut core, c2);
    assert_eq!((id(&resp[0]), status(&resp[0])), (0x8000_0001, 0));
    let counters = core.counters();
    assert_eq!((counters.binds, counters.binds_refused), (2, 4));
}

#[test]
fn requests_out_of_state_and_garbage() {
    let now = t0();
    let mut core = core_with(now, |_| {});
    let conn = core.handle_connect("peer");
    core.handle_frame(conn, submit(3, "hi", 0), now);
    core.handle_frame(conn, Frame::Pdu(frame::enquire_link(4)), now);
    core.handle_frame(
        conn,
        Frame::Invalid {
            sequence_number: 5,
            command_id: 0x777,
            command_status: frame::ESME_RINVCMDID,
            reason: "junk".into(),
        },
        now,
    );
    let resp = out(&mut core, conn);
    assert_eq!(
        resp.iter()
            .map(|c| (id(c), c.sequence_number(), status(c)))
            .collect::<Vec<_>>(),
        [
            (0x8000_0004, 3, ESME_RINVBNDSTS),
            (0x8000_0015, 4, 0),
            (0x8000_0000, 5, frame::ESME_RINVCMDID),
        ]
    );
    // A receiver may not submit.
    let rx = bound(&mut core, BindMode::Receiver, now);
    core.handle_frame(rx, submit(9, "hi", 0), now);
    assert_eq!(status(&out(&mut core, rx)[0]), ESME_RINVBNDSTS);
    // Unbind: unbind_resp, then a graceful close.
    core.handle_frame(rx, Frame::Pdu(frame::unbind(10)), now);
    let mut v = Vec::new();
    assert_eq!(core.poll_transmit(rx, &mut v), Some(CloseKind::Graceful));
    assert_eq!(id(&v[0]), 0x8000_0006);
    // Framing lost: generic_nack ESME_RINVCMDLEN and close.
    core.handle_framing_lost(conn, Some(77));
    let mut v = Vec::new();
    assert_eq!(core.poll_transmit(conn, &mut v), Some(CloseKind::Graceful));
    assert_eq!(
        (id(&v[0]), v[0].sequence_number(), status(&v[0])),
        (0x8000_0000, 77, frame::ESME_RINVCMDLEN)
    );
    assert_eq!(core.counters().generic_nacks_sent, 2);
}

#[test]
fn message_ids_in_each_style_count_from_id_start() {
    let now = t0();
    let cases = [
        (IdStyle::Hex, ["1a2b3c4d", "1a2b3c4e"]),
        (IdStyle::HexUpper, ["001A2B3C4D", "001A2B3C4E"]),
        (IdStyle::Decimal, ["439041101", "439041102"]),
    ];
    for (style, want) in cases {
        let mut core = core_with(now, |c| {
            c.id_style = style;
            // 439041101 is 0x1A2B3C4D.
            c.id_start = 0x1A2B_3C4D;
        });
        let conn = bound(&mut core, BindMode::Transmitter, now);
        core.handle_frame(conn, submit(2, "a", 0), now);
        core.handle_frame(conn, submit(3, "b", 0), now);
        let ids: Vec<String> = out(&mut core, conn).iter().map(message_id).collect();
        assert_eq!(ids, want, "{style:?}");
    }
    let mut core = core_with(now, |c| c.id_style = IdStyle::Uuid);
    let conn = bound(&mut core, BindMode::Transmitter, now);
    core.handle_frame(conn, submit(2, "a", 0), now);
    core.handle_frame(conn, submit(3, "b", 0), now);
    let ids: Vec<String> = out(&mut core, conn).iter().map(message_id).collect();
    for (id, n) in ids.iter().zip([439_041_101u64, 439_041_102]) {
        let groups: Vec<&str> = id.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12],
            "{id}"
        );
        assert!(groups[2].starts_with('4'), "{id}");
        assert_eq!(u64::from_str_radix(groups[4], 16).unwrap(), n);
    }
    assert_eq!(ids[0][..24], ids[1][..24]);
}

/// The single deliver_sm in `cmds`, as (short_message text, TLV tags).
fn deliver(c: &Command) -> content::SmsPdu {
    assert_eq!(id(c), 0x0000_0005, "{c:?}");
    content::sms_of(c).unwrap()
}

#[test]
fn receipts_go_to_a_receiver_of_the_account_after_the_delay() {
    let now = t0();
    let mut core = core_with(now, |_| {});
    let tx = bound(&mut core, BindMode::Transmitter, now);
    // Another account's receiver never sees this account's receipts.
    let other = core.handle_connect("peer");
    core.handle_frame(
        other,
        bind_frame(BindMode::Receiver, 1, "someone", "pw"),
        now,
    );
    out(&mut core, other);
    core.handle_frame(tx, submit(2, "Hello there, this is a long text", 1), now);
    let id = message_id(&out(&mut core, tx)[0]);
    assert_eq!(core.next_deadline(), Some(now + ms(200)));
    // Nobody of "acct" receives yet: it waits.
    core.handle_timeout(now + ms(200));
    assert!(out(&mut core, tx).is_empty());
    assert!(out(&mut core, other).is_empty());
    let (rx, got) = bound_rest(&mut core, BindMode::Receiver, now + ms(300));
    assert_eq!(got.len(), 1);
    let sms = deliver(&got[0]);
    assert_eq!(sms.content.esm_class, 0x04);
    assert_eq!(sms.source.addr, "393471234567");
    assert_eq!(sms.dest.addr, "Shop");
    let text = String::from_utf8(sms.content.short_message.clone()).unwrap();
    assert_eq!(
        text,
        format!(
            "id:{id} sub:001 dlvrd:001 submit date:2601010000 done date:2601010000 \
             stat:DELIVRD err:000 text:Hello there, this is"
        )
    );
    let parsed = receipt::parse(text.as_bytes()).unwrap();
    assert_eq!(parsed.stat.as_deref(), Some("DELIVRD"));
    assert_eq!(sms.receipted_message_id, None);
    // Acknowledged: nothing pending, nothing resent.
    core.handle_frame(
        rx,
        Frame::Pdu(frame::deliver_sm_resp(got[0].sequence_number(), 0)),
        now + ms(301),
    );
    let counters = core.counters();
    assert_eq!(
        (
            counters.receipts_sent,
            counters.receipts_acked,
            counters.pending
        ),
        (1, 1, 0)
    );
    core.handle_timeout(now + Duration::from_secs(60));
    assert!(out(&mut core, rx).is_empty());
}

#[test]
fn receipt_styles_and_id_forms() {
    let now = t0();
    let cases = [
        (ReceiptStyle::Tlv, ReceiptIdForm::Same, "001A2B3C4D"),
        (ReceiptStyle::Both, ReceiptIdForm::Decimal, "439041101"),
        (ReceiptStyle::Text, ReceiptIdForm::Hex, "1a2b3c4d"),
    ];
    for (style, form, want_id) in cases {
        let mut core = core_with(now, |c| {
            c.id_start = 0x1A2B_3C4D;
            c.id_style = IdStyle::HexUpper;
            c.receipt_style = style;
            c.receipt_id_form = form;
            c.undeliverable_share = 1.0;
        });
        let trx = bound(&mut core, BindMode::Transceiver, now);
        core.handle_frame(trx, submit(2, "hi", 1), now);
        assert_eq!(message_id(&out(&mut core, trx)[0]), "001A2B3C4D");
        core.handle_timeout(now + ms(200));
        let sms = deliver(&out(&mut core, trx)[0]);
        let text = String::from_utf8(sms.content.short_message.clone()).unwrap();
        match style {
            ReceiptStyle::Tlv => assert_eq!(text, ""),
            _ => {
                let parsed = receipt::parse(text.as_bytes()).unwrap();
                assert_eq!(parsed.id, want_id);
                assert_eq!(parsed.stat.as_deref(), Some("UNDELIV"));
                assert_eq!(parsed.err.as_deref(), Some("001"));
                assert_eq!(parsed.dlvrd, Some(0));
            }
        }
        if style == ReceiptStyle::Text {
            assert_eq!(sms.receipted_message_id, None);
            assert_eq!(sms.message_state, None);
        } else {
            assert_eq!(sms.receipted_message_id.as_deref(), Some(want_id));
            assert_eq!(sms.message_state, Some(5));
            assert_eq!(sms.network_error_code, Some([3, 0, 1]));
        }
    }
}

#[test]
fn failure_only_receipts_and_the_undeliverable_share() {
    let now = t0();
    // Share 0: registered_delivery 2 asks for failures only, so no receipt at all.
    let mut core = core_with(now, |_| {});
    let trx = bound(&mut core, BindMode::Transceiver, now);
    core.handle_frame(trx, submit(2, "a", 2), now);
    out(&mut core, trx);
    assert_eq!(core.next_deadline(), None);
    // Half: the seeded draw decides, the same way every run.
    let draw = |seed| {
        let mut core = core_with(now, |c| {
            c.undeliverable_share = 0.5;
            c.seed = seed;
        });
        let trx = bound(&mut core, BindMode::Transceiver, now);
        for seq in 2..42 {
            core.handle_frame(trx, submit(seq, "a", 1), now);
        }
        out(&mut core, trx);
        core.handle_timeout(now + ms(200));
        out(&mut core, trx)
            .iter()
            .map(|c| {
                deliver(c)
                    .content
                    .short_message
                    .windows(12)
                    .any(|w| w == b"stat:UNDELIV")
            })
            .collect::<Vec<bool>>()
    };
    let first = draw(7);
    assert_eq!(first.len(), 40);
    assert_eq!(first, draw(7));
    let undeliv = first.iter().filter(|u| **u).count();
    assert!((8..=32).contains(&undeliv), "{undeliv}");
}

#[test]
fn unacknowledged_receipts_are_sent_again() {
    let now = t0();
    let mut core = core_with(now, |c| {
        c.delivery_timeout = Duration::from_secs(10);
        c.retry_delay = Duration::from_secs(1);
    });
    let trx = bound(&mut core, BindMode::Transceiver, now);
    core.handle_frame(trx, submit(2, "a", 1), now);
    let id = message_id(&out(&mut core, trx)[0]);
    core.handle_timeout(now + ms(200));
    let first = out(&mut core, trx);
    assert_eq!(first.len(), 1);

    // The connection drops before the resp: the next session of the account gets it.
    core.handle_disconnect(trx, "peer closed", now + ms(300));
    let (next, again) = bound_rest(&mut core, BindMode::Receiver, now + ms(400));
    assert_eq!(again.len(), 1);
    assert_eq!(deliver(&again[0]).content, deliver(&first[0]).content);

    // An error status: sent again after the retry delay.
    core.handle_frame(
        next,
        Frame::Pdu(frame::deliver_sm_resp(again[0].sequence_number(), 0x08)),
        now + ms(500),
    );
    assert!(out(&mut core, next).is_empty());
    assert_eq!(core.next_deadline(), Some(now + ms(1500)));
    core.handle_timeout(now + ms(1500));
    let third = out(&mut core, next);
    assert_eq!(third.len(), 1);

    // No answer at all: after the timeout it goes out again.
    core.handle_timeout(now + ms(1500) + Duration::from_secs(10));
    let fourth = out(&mut core, next);
    assert_eq!(fourth.len(), 1);
    assert_ne!(fourth[0].sequence_number(), third[0].sequence_number());
    core.handle_frame(
        next,
        Frame::Pdu(frame::deliver_sm_resp(fourth[0].sequence_number(), 0)),
        now + ms(12_000),
    );
    let sent: Vec<u32> = events(&mut core)
        .into_iter()
        .filter_map(|e| match e {
            SmscEvent::ReceiptSent {
                attempt,
                message_id,
                ..
            } => {
                assert_eq!(message_id, id);
                Some(attempt)
            }
            _ => None,
        })
        .collect();
    assert_eq!(sent, [1, 2, 3, 4]);
    let c = core.counters();
    assert_eq!(
        (
            c.receipts_sent,
            c.receipts_acked,
            c.receipts_failed,
            c.pending
        ),
        (4, 1, 2, 0)
    );
}

#[test]
fn the_deliver_window_bounds_what_is_unanswered() {
    let now = t0();
    let mut core = core_with(now, |c| c.deliver_window = 3);
    let trx = bound(&mut core, BindMode::Transceiver, now);
    for seq in 2..12 {
        core.handle_frame(trx, submit(seq, "a", 1), now);
    }
    out(&mut core, trx);
    core.handle_timeout(now + ms(200));
    let first = out(&mut core, trx);
    assert_eq!(first.len(), 3);
    core.handle_frame(
        trx,
        Frame::Pdu(frame::deliver_sm_resp(first[1].sequence_number(), 0)),
        now + ms(201),
    );
    assert_eq!(out(&mut core, trx).len(), 1);
    // A generic_nack to a deliver_sm frees its slot too, and it is retried later.
    core.handle_frame(
        trx,
        Frame::Pdu(generic_nack(first[0].sequence_number(), 3)),
        now + ms(202),
    );
    assert_eq!(out(&mut core, trx).len(), 1);
    assert_eq!(core.counters().pending, 9);
}

#[test]
fn throttle_and_fail_answer_the_next_submits() {
    let now = t0();
    let mut core = core_with(now, |_| {});
    let tx = bound(&mut core, BindMode::Transmitter, now);
    core.throttle(2);
    core.fail(1, 0x0B);
    for seq in 2..7 {
        core.handle_frame(tx, submit(seq, "a", 1), now);
    }
    let statuses: Vec<u32> = out(&mut core, tx).iter().map(status).collect();
    assert_eq!(statuses, [0x58, 0x58, 0x0B, 0, 0]);
    let c = core.counters();
    assert_eq!(c.submit_resps.get("0x00000058"), Some(&2));
    assert_eq!(c.submit_resps.get("0x0000000B"), Some(&1));
    assert_eq!(c.submit_resps.get("0x00000000"), Some(&2));
    // Refused submits get no receipt and use no id.
    assert_eq!(c.pending, 2);
    let ev = events(&mut core);
    let refused = ev.iter().find_map(|e| match e {
        SmscEvent::Submit {
            message_id, status, ..
        } if status == "0x00000058" => Some(message_id.clone()),
        _ => None,
    });
    assert_eq!(refused, Some(None));
}

#[test]
fn stalled_reads_and_answers_nothing_then_resumes() {
    let now = t0();
    let mut core = core_with(now, |_| {});
    let trx = bound(&mut core, BindMode::Transceiver, now);
    core.handle_frame(trx, submit(2, "a", 1), now);
    out(&mut core, trx);
    core.set_stalled(true, now);
    core.handle_frame(trx, submit(3, "b", 1), now);
    core.handle_frame(trx, Frame::Pdu(frame::enquire_link(4)), now);
    core.handle_timeout(now + ms(200));
    assert!(
        out(&mut core, trx).is_empty(),
        "nothing written while stalled"
    );
    assert_eq!(core.counters().ignored, 2);
    core.set_stalled(false, now + ms(300));
    let got = out(&mut core, trx);
    // The receipt of the first submit; nothing for the dropped requests.
    assert_eq!(got.iter().map(id).collect::<Vec<_>>(), [0x0000_0005]);
    // Ignored requests are not handled at all.
    assert_eq!(core.counters().submits, 1);
}

#[test]
fn drop_closes_everything_at_once_and_receipts_survive() {
    let now = t0();
    let mut core = core_with(now, |_| {});
    let trx = bound(&mut core, BindMode::Transceiver, now);
    core.handle_frame(trx, submit(2, "a", 1), now);
    core.handle_timeout(now + ms(200));
    assert_eq!(core.drop_all(), 1);
    let mut v = Vec::new();
    assert_eq!(core.poll_transmit(trx, &mut v), Some(CloseKind::Abrupt));
    assert!(v.is_empty(), "nothing queued is written");
    // Frames still in the reader are ignored.
    core.handle_frame(trx, submit(3, "b", 1), now);
    assert_eq!(core.counters().submits, 1);
    core.handle_disconnect(trx, "dropped", now + ms(250));
    let (_, got) = bound_rest(&mut core, BindMode::Receiver, now + ms(300));
    assert_eq!(got.iter().map(id).collect::<Vec<_>>(), [5]);
}

fn udh_part(reference: u8, total: u8, seq: u8, text: &str) -> SubmitFields {
    let mut sm = vec![5, 0, 3, reference, total, seq];
    sm.extend_from_slice(text.as_bytes());
    SubmitFields {
        esm_class: 0x40,
        short_message: sm,
        ..submit_fields("", 0)
    }
}

#[test]
fn concatenated_submits_are_reassembled_by_each_method() {
    let now = t0();
    let mut core = core_with(now, |_| {});
    let tx = bound(&mut core, BindMode::Transmitter, now);
    let sar = |seq: u8, text: &str| SubmitFields {
        sar_msg_ref_num: Some(0x1234),
        sar_total_segments: Some(2),
        sar_segment_seqnum: Some(seq),
        ..submit_fields(text, 0)
    };
    let payload = SubmitFields {
        message_payload: Some(b"a payload text".to_vec()),
        ..submit_fields("", 0)
    };
    let ucs2 = SubmitFields {
        data_coding: 8,
        short_message: crate::codec::gsm7::ucs2_to_be_bytes(&crate::codec::gsm7::to_ucs2("Привет")),
        ..submit_fields("", 0)
    };
    // Parts out of order, interleaved.
    for (seq, fields) in [
        udh_part(7, 3, 2, "two "),
        sar(2, "world"),
        udh_part(7, 3, 1, "one "),
        sar(1, "hello "),
        udh_part(7, 3, 3, "three"),
        payload,
        ucs2,
    ]
    .into_iter()
    .enumerate()
    {
        core.handle_frame(
            tx,
            Frame::Pdu(frame::submit_sm(seq as u32 + 2, &fields).unwrap()),
            now,
        );
    }
    let ev = events(&mut core);
    let parts: Vec<Option<InboundPart>> = ev
        .iter()
        .filter_map(|e| match e {
            SmscEvent::Submit { part, .. } => Some(*part),
            _ => None,
        })
        .collect();
    assert_eq!(parts.len(), 7);
    assert_eq!(
        parts[0],
        Some(InboundPart {
            reference: 7,
            total: 3,
            seq: 2
        })
    );
    assert_eq!(
        parts[1],
        Some(InboundPart {
            reference: 0x1234,
            total: 2,
            seq: 2
        })
    );
    let messages: Vec<(String, u8, &str)> = ev
        .iter()
        .filter_map(|e| match e {
            SmscEvent::Message {
                text,
                parts,
                method,
                ..
            } => Some((text.clone(), *parts, *method)),
            _ => None,
        })
        .collect();
    assert_eq!(
        messages,
        [
            ("hello world".to_string(), 2, "sar"),
            ("one two three".to_string(), 3, "udh"),
            ("a payload text".to_string(), 1, "payload"),
            ("Привет".to_string(), 1, "single"),
        ]
    );
}

#[test]
fn mo_messages_go_to_any_receiver_by_each_method() {
    let now = t0();
    let mut core = core_with(now, |_| {});
    let long = "x".repeat(200);
    assert!(matches!(
        core.send_mo("+391", "12345", MoMethod::Single, &long, now),
        Err(MoError::TooLong { parts: 2 })
    ));
    assert!(
        core.send_mo("ThirteenChars", "12345", MoMethod::Single, "hi", now)
            .is_err()
    );
    // Queued before anyone is bound.
    assert_eq!(
        core.send_mo("+391", "12345", MoMethod::Single, "ciao", now)
            .unwrap(),
        (1, 1)
    );
    assert_eq!(
        core.send_mo("+391", "12345", MoMethod::Udh, &long, now)
            .unwrap(),
        (2, 2)
    );
    assert_eq!(
        core.send_mo("+391", "12345", MoMethod::Sar, &long, now)
            .unwrap(),
        (3, 2)
    );
    assert_eq!(
        core.send_mo("+391", "12345", MoMethod::Payload, &long, now)
            .unwrap(),
        (4, 1)
    );
    assert_eq!(
        core.send_mo("+391", "12345", MoMethod::Single, "Привет", now)
            .unwrap(),
        (5, 1)
    );
    let tx = bound(&mut core, BindMode::Transmitter, now);
    assert!(
        out(&mut core, tx).is_empty(),
        "a transmitter receives nothing"
    );
    let conn = core.handle_connect("peer");
    core.handle_frame(
        conn,
        bind_frame(BindMode::Receiver, 1, "any-account", "x"),
        now,
    );
    let got = out(&mut core, conn);
    assert_eq!(got.len(), 1 + 7);
    let sms: Vec<content::SmsPdu> = got[1..].iter().map(deliver).collect();
    assert_eq!(
        sms[0].source,
        Address {
            ton: 1,
            npi: 1,
            addr: "391".into()
        }
    );
    assert_eq!(sms[0].dest.addr, "12345");
    assert_eq!(
        (sms[0].content.esm_class, sms[0].content.data_coding),
        (0, 0)
    );
    assert_eq!(sms[0].content.short_message, b"ciao");
    assert_eq!(sms[1].content.esm_class, 0x40);
    assert!(sms[3].content.sar.is_some());
    assert_eq!(
        sms[5].content.message_payload.as_ref().map(Vec::len),
        Some(200)
    );
    assert_eq!(sms[6].content.data_coding, 8);
    let mut texts = String::new();
    for s in &sms[1..3] {
        texts.push_str(&content::decode_sms(&s.content, false).unwrap().text);
    }
    assert_eq!(texts, long);
    for c in &got[1..] {
        core.handle_frame(
            conn,
            Frame::Pdu(frame::deliver_sm_resp(c.sequence_number(), 0)),
            now,
        );
    }
    let acked = events(&mut core)
        .into_iter()
        .filter(|e| matches!(e, SmscEvent::MoAcked { status, .. } if status == "0x00000000"))
        .count();
    assert_eq!(acked, 7);
    assert_eq!(core.counters().pending, 0);
}

#[test]
fn shutdown_unbinds_then_closes_after_the_grace() {
    let now = t0();
    let mut core = core_with(now, |_| {});
    let a = bound(&mut core, BindMode::Transceiver, now);
    let b = bound(&mut core, BindMode::Transmitter, now);
    let open = core.handle_connect("peer");
    core.begin_shutdown(now);
    let mut v = Vec::new();
    assert_eq!(core.poll_transmit(open, &mut v), Some(CloseKind::Graceful));
    let unbind_a = out(&mut core, a);
    assert_eq!(id(&unbind_a[0]), 0x0000_0006);
    assert_eq!(id(&out(&mut core, b)[0]), 0x0000_0006);
    core.handle_frame(
        a,
        Frame::Pdu(frame::unbind_resp(unbind_a[0].sequence_number())),
        now,
    );
    let mut v = Vec::new();
    assert_eq!(core.poll_transmit(a, &mut v), Some(CloseKind::Graceful));
    // b never answers: closed once the grace is over.
    assert_eq!(core.next_deadline(), Some(now + SHUTDOWN_GRACE));
    core.handle_timeout(now + SHUTDOWN_GRACE);
    let mut v = Vec::new();
    assert_eq!(core.poll_transmit(b, &mut v), Some(CloseKind::Graceful));
    // New connections are closed at once.
    let late = core.handle_connect("late");
    core.handle_frame(
        late,
        bind_frame(BindMode::Transceiver, 1, "acct", "pw"),
        now,
    );
    let mut v = Vec::new();
    assert_eq!(core.poll_transmit(late, &mut v), Some(CloseKind::Graceful));
    assert!(v.is_empty());
}
