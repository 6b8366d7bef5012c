use super::*;
use crate::smpp::content::{CodingPolicy, ContentOptions, LongMethod, encode_text};
use crate::smpp::frame::{Address, Frame, SubmitFields, decode_one, encode_to_vec, submit_sm};

const NOW: Millis = 1_795_000_000_000; // 2026-11-18

fn account() -> SmppAccountSettings {
    SmppAccountSettings {
        system_id: "shop".into(),
        ..SmppAccountSettings::default()
    }
}

fn defaults() -> Defaults {
    Defaults {
        region: Some("IT".into()),
        ..Defaults::default()
    }
}

fn rules<'a>(account: &'a SmppAccountSettings, defaults: &'a Defaults) -> IntakeRules<'a> {
    IntakeRules {
        account,
        defaults,
        region: phone::region(defaults.region.as_deref()),
    }
}

fn fields(text: &str) -> SubmitFields {
    let content = encode_text(
        text,
        gsm7::count_parts(text).0,
        ContentOptions::default(),
        1,
    )
    .unwrap()
    .remove(0);
    SubmitFields {
        source: Address {
            ton: 5,
            npi: 0,
            addr: "MyShop".into(),
        },
        dest: Address {
            ton: 1,
            npi: 1,
            addr: "393471234567".into(),
        },
        registered_delivery: 1,
        ..content::fields_of(&Address::default(), &Address::default(), content)
    }
}

/// Through the wire and back, as the server gets it.
fn command(fields: &SubmitFields) -> Command {
    match decode_one(&encode_to_vec(&submit_sm(9, fields).unwrap()).unwrap()).unwrap() {
        Frame::Pdu(c) => c,
        other => panic!("{other:?}"),
    }
}

fn read(fields: &SubmitFields) -> Result<Intake, Refusal> {
    let (a, d) = (account(), defaults());
    read_submit(&command(fields), rules(&a, &d), NOW)
}

fn whole(fields: &SubmitFields) -> NewMessage {
    match read(fields) {
        Ok(Intake::Whole(m)) => m,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_plain_submit_is_a_queued_message_with_its_origin() {
    let m = whole(&fields("Your order 1234 has shipped"));
    assert_eq!(m.to, "+393471234567");
    assert_eq!(m.from.as_deref(), Some("MyShop"));
    assert_eq!(m.text, "Your order 1234 has shipped");
    assert_eq!(m.parts, 1);
    assert_eq!(m.send_at, None);
    assert_eq!(m.validity_ms, 48 * 3600 * 1000);
    let origin = m.origin.unwrap();
    assert_eq!(origin.account, "shop");
    assert_eq!(origin.receipt, ReceiptRequest::Final);
    assert_eq!(origin.source.addr, "MyShop");
    assert_eq!(
        (origin.dest.addr.as_str(), origin.dest.ton),
        ("393471234567", 1)
    );
}

#[test]
fn national_numbers_use_the_region_and_ucs2_is_read() {
    let mut f = fields("x");
    f.dest = Address {
        ton: 0,
        npi: 1,
        addr: "3471234567".into(),
    };
    let ucs2 = encode_text(
        "Привет",
        gsm7::Encoding::Ucs2,
        ContentOptions {
            coding: CodingPolicy::Ucs2,
            ..ContentOptions::default()
        },
        1,
    )
    .unwrap()
    .remove(0);
    f.data_coding = ucs2.data_coding;
    f.short_message = ucs2.short_message;
    let m = whole(&f);
    assert_eq!(m.to, "+393471234567");
    assert_eq!(m.text, "Привет");
    assert_eq!(m.encoding, gsm7::Encoding::Ucs2);
}

#[test]
fn schedule_and_validity_are_honoured() {
    let mut f = fields("Sale starts now");
    f.schedule_delivery_time = "000000010000000R".into(); // in an hour
    f.validity_period = "000000030000000R".into(); // 3 h from now: 2 h after the start
    let m = whole(&f);
    assert_eq!(m.send_at, Some(NOW + 3_600_000));
    assert_eq!(m.validity_ms, 2 * 3_600_000);
    f.validity_period = "000000000030000R".into(); // ends before the start
    assert_eq!(read(&f).unwrap_err().status, ESME_RINVEXPIRY);
    f.validity_period = "garbage000000000".into();
    assert_eq!(read(&f).unwrap_err().status, ESME_RINVEXPIRY);
    f.validity_period = String::new();
    f.schedule_delivery_time = "990101000000000R".into(); // 99 years
    assert_eq!(read(&f).unwrap_err().status, ESME_RINVSCHED);
}

#[test]
fn bad_addresses_and_senders_are_refused_with_their_status() {
    let mut f = fields("hi");
    f.dest.addr = String::new();
    assert_eq!(read(&f).unwrap_err().status, ESME_RINVDSTADR);
    f.dest.addr = "12".into();
    assert_eq!(read(&f).unwrap_err().status, ESME_RINVDSTADR);

    let mut f = fields("hi");
    f.source.addr = "ThisSenderIsTooLong".into();
    assert_eq!(read(&f).unwrap_err().status, ESME_RINVSRCADR);

    // An account limited to some senders.
    let account = SmppAccountSettings {
        allowed_sources: vec!["MyShop".into(), "+393400000001".into()],
        ..account()
    };
    let d = defaults();
    let mut f = fields("hi");
    assert!(read_submit(&command(&f), rules(&account, &d), NOW).is_ok());
    f.source = Address {
        ton: 1,
        npi: 1,
        addr: "393400000001".into(),
    };
    let Intake::Whole(m) = read_submit(&command(&f), rules(&account, &d), NOW).unwrap() else {
        panic!()
    };
    assert_eq!(m.from.as_deref(), Some("+393400000001"));
    f.source.addr = "393400000002".into();
    let refused = read_submit(&command(&f), rules(&account, &d), NOW).unwrap_err();
    assert_eq!(refused.status, ESME_RINVSRCADR);
    assert!(refused.reason.contains("not allowed"), "{}", refused.reason);
    // No sender: the channel's default.
    f.source.addr = String::new();
    let Intake::Whole(m) = read_submit(&command(&f), rules(&account, &d), NOW).unwrap() else {
        panic!()
    };
    assert_eq!(m.from, None);
}

#[test]
fn empty_and_overlong_texts_are_refused() {
    let mut f = fields("x");
    f.short_message.clear();
    assert_eq!(read(&f).unwrap_err().status, ESME_RINVMSGLEN);
    // 11 parts' worth in message_payload, over the default limit of 10.
    let mut f = fields("x");
    f.short_message.clear();
    f.message_payload = Some("a".repeat(153 * 11).into_bytes());
    assert_eq!(read(&f).unwrap_err().status, ESME_RINVMSGLEN);
    // 10 parts are fine, as one message.
    f.message_payload = Some("a".repeat(153 * 10).into_bytes());
    assert_eq!(whole(&f).parts, 10);
}

#[test]
fn udh_and_sar_parts_are_parts_of_one_message() {
    let text = "a".repeat(200);
    for method in [LongMethod::Udh, LongMethod::Sar] {
        let options = ContentOptions {
            long_method: method,
            ..ContentOptions::default()
        };
        let contents = encode_text(&text, gsm7::Encoding::Gsm7, options, 77).unwrap();
        assert_eq!(contents.len(), 2);
        let mut joined = String::new();
        for (i, c) in contents.into_iter().enumerate() {
            let f = SubmitFields {
                sar_msg_ref_num: c.sar.map(|p| p.reference),
                sar_total_segments: c.sar.map(|p| p.total),
                sar_segment_seqnum: c.sar.map(|p| p.seq),
                esm_class: c.esm_class,
                short_message: c.short_message,
                ..fields("x")
            };
            match read(&f) {
                Ok(Intake::Part(part)) => {
                    assert_eq!(part.scope, "smpp:shop");
                    assert_eq!(part.source, "MyShop");
                    assert_eq!((part.reference, part.total), (77, 2));
                    assert_eq!(usize::from(part.seq), i + 1);
                    assert_eq!(part.message.to, "+393471234567");
                    joined.push_str(&part.text);
                }
                other => panic!("{method:?}: {other:?}"),
            }
        }
        assert_eq!(joined, text);
    }
    // A broken UDH.
    let mut f = fields("x");
    f.esm_class = 0x40;
    f.short_message = vec![0x05, 0x00, 0x03];
    assert_eq!(read(&f).unwrap_err().status, ESME_RINVESMCLASS);
}

#[test]
fn query_and_cancel_name_our_ids_only() {
    use rusmpp::pdus::{CancelSm, QuerySm};
    let id = MessageId(ulid::Ulid::from_parts(1_795_000_000_000, 5));
    let query = |raw: &str| {
        Command::new(
            CommandStatus::EsmeRok,
            3,
            QuerySm::builder()
                .message_id(COctetString::from_string(raw.to_owned()).unwrap())
                .build(),
        )
    };
    assert_eq!(requested_id(&query(&id.to_string())), Ok(id));
    assert_eq!(requested_id(&query("12345")), Err(ESME_RINVMSGID));
    let cancel = Command::new(
        CommandStatus::EsmeRok,
        4,
        CancelSm::builder()
            .message_id(COctetString::from_string(id.to_string()).unwrap())
            .build(),
    );
    assert_eq!(requested_id(&cancel), Ok(id));
}

#[test]
fn query_resp_tells_state_and_final_date() {
    let m = whole(&fields("hello"));
    let mut message = Message {
        id: MessageId(ulid::Ulid::from_parts(1_795_000_000_000, 5)),
        to: m.to,
        from: m.from,
        text: m.text,
        kind: m.kind,
        reference: None,
        encoding: m.encoding,
        created_at: NOW,
        send_at: None,
        expires_at: NOW + 1000,
        status: Status::Sent,
        due_at: NOW,
        attempts: 1,
        channel: None,
        possible_duplicate: false,
        parts: Vec::new(),
        history: Vec::new(),
        idempotency_key: None,
        origin: m.origin,
        options: Default::default(),
    };
    assert!(owned_by(&message, "shop"));
    assert!(!owned_by(&message, "shop2"));
    let read_back = |message: &Message| {
        let c = query_resp(3, message);
        match decode_one(&encode_to_vec(&c).unwrap()).unwrap() {
            Frame::Pdu(c) => match c.pdu() {
                Some(Pdu::QuerySmResp(b)) => (
                    content::c_string(b.final_date.as_ref()),
                    u8::from(b.message_state),
                    content::c_string(b.message_id.as_ref()),
                ),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        read_back(&message),
        (String::new(), 1, message.id.to_string())
    );
    message.transition(Status::Delivered, NOW + 60_000, None);
    let (date, state, _) = read_back(&message);
    assert_eq!(state, 2);
    assert_eq!(time::parse(&date, 0), Ok(Some(NOW + 60_000)));
}
