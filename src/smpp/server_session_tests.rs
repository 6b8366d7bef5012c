use super::*;
use crate::smpp::content::sms_of;
use crate::smpp::frame::{Address, BindFields, decode_one, encode_to_vec};
use crate::smpp::session::ESME_RINVPASWD;
use crate::smpp::session::MAX_SEQUENCE_NUMBER;

const GENERIC_NACK: u32 = 0x8000_0000;
const BIND_RECEIVER_RESP: u32 = 0x8000_0001;
const BIND_TRANSMITTER_RESP: u32 = 0x8000_0002;
const BIND_TRANSCEIVER_RESP: u32 = 0x8000_0009;
const QUERY_SM: u32 = 0x0000_0003;
const QUERY_SM_RESP: u32 = 0x8000_0003;
const SUBMIT_SM_RESP: u32 = 0x8000_0004;
const DELIVER_SM: u32 = 0x0000_0005;
const DELIVER_SM_RESP: u32 = 0x8000_0005;
const UNBIND: u32 = 0x0000_0006;
const UNBIND_RESP: u32 = 0x8000_0006;
const CANCEL_SM: u32 = 0x0000_0008;
const CANCEL_SM_RESP: u32 = 0x8000_0008;
const OUTBIND: u32 = 0x0000_000B;
const ENQUIRE_LINK: u32 = 0x0000_0015;
const ENQUIRE_LINK_RESP: u32 = 0x8000_0015;
const SUBMIT_MULTI: u32 = 0x0000_0021;
const DATA_SM: u32 = 0x0000_0103;
const DATA_SM_RESP: u32 = 0x8000_0103;
const DATA_SM_BODY: &[u8] = b"\0\x01\x01123\0\x01\x01456\0\x00\x00\x00";
const QUERY_SM_BODY: &[u8] = b"m1\0\x01\x01123\0";
const CANCEL_SM_BODY: &[u8] = b"\0m1\0\x01\x01123\0\x01\x01456\0";
const SUBMIT_MULTI_BODY: &[u8] = b"\0\x01\x01123\0\x01\x01\x01\x01456\0\0\0\0\0\0\x01\0\0\0\x02hi";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn config() -> ServerConfig {
    ServerConfig {
        system_id: "parla".into(),
        window: 2,
        deliver_window: 2,
        response_timeout: secs(10),
        enquire_link_interval: secs(30),
        idle_timeout: secs(120),
        bind_timeout: secs(10),
        unbind_timeout: secs(5),
    }
}

/// A frame from the peer, through the real decoder.
fn raw(command_id: u32, status: u32, seq: u32, body: &[u8]) -> Frame {
    decode_one(&raw_bytes(command_id, status, seq, body)).expect("frame")
}

/// A PDU's wire bytes.
fn raw_bytes(command_id: u32, status: u32, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend(((16 + body.len()) as u32).to_be_bytes());
    bytes.extend(command_id.to_be_bytes());
    bytes.extend(status.to_be_bytes());
    bytes.extend(seq.to_be_bytes());
    bytes.extend(body);
    bytes
}

/// `command` as the peer would send it: encoded, then decoded.
fn wire(command: &Command) -> Frame {
    decode_one(&encode_to_vec(command).expect("encode")).expect("decode")
}

fn bind_frame(mode: BindMode, seq: u32, password: &str) -> Frame {
    let fields = BindFields {
        system_id: "acme".into(),
        password: password.into(),
        system_type: "web".into(),
        address_range: "^44".into(),
        ..BindFields::default()
    };
    wire(&frame::bind(mode, seq, &fields).unwrap())
}

fn fields() -> SubmitFields {
    SubmitFields {
        source: Address {
            ton: 1,
            npi: 1,
            addr: "447700900000".into(),
        },
        dest: Address {
            ton: 1,
            npi: 1,
            addr: "447700900001".into(),
        },
        short_message: b"hello".to_vec(),
        ..SubmitFields::default()
    }
}

fn submit(seq: u32) -> Frame {
    wire(&frame::submit_sm(seq, &fields()).unwrap())
}

fn drain(s: &mut ServerSession) -> Vec<Output> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

/// (command_id, command_status, sequence_number) of every `Send`.
fn sent(outputs: &[Output]) -> Vec<(u32, u32, u32)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send(c) => Some((
                u32::from(c.id()),
                u32::from(c.status()),
                c.sequence_number(),
            )),
            _ => None,
        })
        .collect()
}

fn delivered(outputs: &[Output]) -> Vec<(u64, Result<(), DeliverError>)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Delivered { token, result } => Some((*token, result.clone())),
            _ => None,
        })
        .collect()
}

fn closed(outputs: &[Output]) -> bool {
    matches!(outputs.last(), Some(Output::Closed { .. }))
        && outputs
            .iter()
            .filter(|o| matches!(o, Output::Closed { .. }))
            .count()
            == 1
}

/// A session bound in `mode` at `t0`, outputs drained.
fn bound_with(config: ServerConfig, mode: BindMode) -> (ServerSession, Instant) {
    let t0 = Instant::now();
    let mut s = ServerSession::new(config, t0);
    s.on_frame(bind_frame(mode, 1, "secret"), t0);
    let out = drain(&mut s);
    assert!(matches!(out.as_slice(), [Output::Authenticate { .. }]));
    s.accept_bind(1, t0);
    drain(&mut s);
    assert_eq!(s.bound_mode(), Some(mode));
    (s, t0)
}

fn bound(mode: BindMode) -> (ServerSession, Instant) {
    bound_with(config(), mode)
}

#[test]
fn bind_ok_in_three_modes() {
    for (mode, resp) in [
        (BindMode::Transmitter, BIND_TRANSMITTER_RESP),
        (BindMode::Receiver, BIND_RECEIVER_RESP),
        (BindMode::Transceiver, BIND_TRANSCEIVER_RESP),
    ] {
        let t0 = Instant::now();
        let mut s = ServerSession::new(config(), t0);
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.next_deadline(), Some(t0 + secs(10)));
        s.on_frame(bind_frame(mode, 7, "secret"), t0);
        let out = drain(&mut s);
        let [
            Output::Authenticate {
                sequence_number: 7,
                request,
            },
        ] = out.as_slice()
        else {
            panic!("{out:?}");
        };
        assert_eq!(
            request,
            &BindRequest {
                mode,
                system_id: "acme".into(),
                password: "secret".into(),
                system_type: "web".into(),
                interface_version: 0x34,
                address_range: "^44".into(),
            }
        );
        assert_eq!(s.bound_mode(), None);
        s.accept_bind(7, t0 + secs(1));
        let out = drain(&mut s);
        assert_eq!(sent(&out), [(resp, 0, 7)]);
        let Some(Output::Send(c)) = out.first() else {
            panic!()
        };
        let json = frame::to_json(&wire(c));
        assert_eq!(json["body"]["system_id"], "parla");
        assert_eq!(
            out.get(1),
            Some(&Output::Bound {
                mode,
                system_id: "acme".into()
            })
        );
        assert_eq!(s.bound_mode(), Some(mode));
        assert_eq!(s.can_deliver(), mode != BindMode::Transmitter);
        // Next: our enquire_link, 30 s after the bind.
        assert_eq!(s.next_deadline(), Some(t0 + secs(31)));
    }
}

#[test]
fn wrong_password_then_ok() {
    let t0 = Instant::now();
    let mut s = ServerSession::new(config(), t0);
    s.on_frame(bind_frame(BindMode::Transceiver, 1, "wrong"), t0);
    drain(&mut s);
    s.refuse_bind(1, ESME_RINVPASWD, t0);
    let out = drain(&mut s);
    assert_eq!(sent(&out), [(BIND_TRANSCEIVER_RESP, ESME_RINVPASWD, 1)]);
    assert_eq!(out.len(), 1);
    // A decision for a bind no longer pending is ignored.
    s.accept_bind(1, t0);
    assert!(drain(&mut s).is_empty());
    s.on_frame(bind_frame(BindMode::Transceiver, 2, "secret"), t0);
    assert!(matches!(
        drain(&mut s).as_slice(),
        [Output::Authenticate {
            sequence_number: 2,
            ..
        }]
    ));
    s.accept_bind(3, t0);
    assert!(drain(&mut s).is_empty(), "wrong sequence number ignored");
    s.accept_bind(2, t0);
    assert_eq!(sent(&drain(&mut s)), [(BIND_TRANSCEIVER_RESP, 0, 2)]);
    assert_eq!(s.bound_mode(), Some(BindMode::Transceiver));
}

#[test]
fn three_refusals_close() {
    let t0 = Instant::now();
    let mut s = ServerSession::new(config(), t0);
    for seq in 1..=3 {
        s.on_frame(bind_frame(BindMode::Transmitter, seq, "x"), t0);
        drain(&mut s);
        // Status 0 is no refusal: sent as ESME_RBINDFAIL.
        let status = if seq == 2 { 0 } else { ESME_RINVPASWD };
        s.refuse_bind(seq, status, t0);
        let out = drain(&mut s);
        let want = if seq == 2 {
            ESME_RBINDFAIL
        } else {
            ESME_RINVPASWD
        };
        assert_eq!(sent(&out), [(BIND_TRANSMITTER_RESP, want, seq)]);
        assert_eq!(closed(&out), seq == 3, "{out:?}");
    }
    assert!(s.is_closed());
    assert_eq!(s.next_deadline(), None);
    s.on_frame(bind_frame(BindMode::Transmitter, 4, "x"), t0);
    assert!(drain(&mut s).is_empty());
}

#[test]
fn pdus_before_bind() {
    let t0 = Instant::now();
    let mut s = ServerSession::new(config(), t0);
    s.on_frame(submit(1), t0);
    s.on_frame(raw(DATA_SM, 0, 2, DATA_SM_BODY), t0);
    s.on_frame(raw(QUERY_SM, 0, 3, QUERY_SM_BODY), t0);
    s.on_frame(raw(CANCEL_SM, 0, 4, CANCEL_SM_BODY), t0);
    s.on_frame(raw(OUTBIND, 0, 5, b"sys\0pw\0"), t0);
    s.on_frame(raw(ENQUIRE_LINK, 0, 6, b""), t0);
    s.on_frame(wire(&frame::deliver_sm(7, &fields()).unwrap()), t0);
    s.on_frame(raw(SUBMIT_MULTI, 0, 8, SUBMIT_MULTI_BODY), t0);
    assert_eq!(
        sent(&drain(&mut s)),
        [
            (SUBMIT_SM_RESP, ESME_RINVBNDSTS, 1),
            (DATA_SM_RESP, ESME_RINVBNDSTS, 2),
            (QUERY_SM_RESP, ESME_RINVBNDSTS, 3),
            (CANCEL_SM_RESP, ESME_RINVBNDSTS, 4),
            (GENERIC_NACK, ESME_RINVBNDSTS, 5),
            (ENQUIRE_LINK_RESP, 0, 6),
            (DELIVER_SM_RESP, ESME_RINVBNDSTS, 7),
            (0x8000_0021, ESME_RINVBNDSTS, 8),
        ]
    );
    // While the bind is being judged, still not bound.
    s.on_frame(bind_frame(BindMode::Transmitter, 9, "secret"), t0);
    drain(&mut s);
    s.on_frame(submit(10), t0);
    assert_eq!(
        sent(&drain(&mut s)),
        [(SUBMIT_SM_RESP, ESME_RINVBNDSTS, 10)]
    );
    // Unbind before bind: answered, then closed.
    s.on_frame(raw(UNBIND, 0, 11, b""), t0);
    let out = drain(&mut s);
    assert_eq!(sent(&out), [(UNBIND_RESP, 0, 11)]);
    assert!(closed(&out));
}

#[test]
fn double_bind() {
    let t0 = Instant::now();
    let mut s = ServerSession::new(config(), t0);
    s.on_frame(bind_frame(BindMode::Transmitter, 1, "secret"), t0);
    drain(&mut s);
    // While authenticating.
    s.on_frame(bind_frame(BindMode::Receiver, 2, "secret"), t0);
    assert_eq!(
        sent(&drain(&mut s)),
        [(BIND_RECEIVER_RESP, ESME_RALYBND, 2)]
    );
    s.accept_bind(1, t0);
    drain(&mut s);
    // While bound.
    s.on_frame(bind_frame(BindMode::Transceiver, 3, "secret"), t0);
    assert_eq!(
        sent(&drain(&mut s)),
        [(BIND_TRANSCEIVER_RESP, ESME_RALYBND, 3)]
    );
    assert_eq!(s.bound_mode(), Some(BindMode::Transmitter));
}

#[test]
fn window_overflow_is_refused_not_queued() {
    let (mut s, t0) = bound(BindMode::Transmitter);
    for seq in 1..=5 {
        s.on_frame(submit(seq), t0);
    }
    let out = drain(&mut s);
    let submits: Vec<u32> = out
        .iter()
        .filter_map(|o| match o {
            Output::Submit {
                sequence_number,
                command,
            } => {
                let sms = sms_of(command).expect("sms");
                assert_eq!(sms.dest.addr, "447700900001");
                Some(*sequence_number)
            }
            _ => None,
        })
        .collect();
    assert_eq!(submits, [1, 2]);
    assert_eq!(
        sent(&out),
        [
            (SUBMIT_SM_RESP, ESME_RMSGQFUL, 3),
            (SUBMIT_SM_RESP, ESME_RMSGQFUL, 4),
            (SUBMIT_SM_RESP, ESME_RMSGQFUL, 5),
        ]
    );
    assert_eq!(s.submits_pending(), 2);
    // A sequence number reused while pending is refused.
    s.on_frame(submit(1), t0);
    assert_eq!(sent(&drain(&mut s)), [(SUBMIT_SM_RESP, ESME_RSYSERR, 1)]);
    // An invalid message_id leaves the submit pending.
    assert!(s.submit_accepted(1, &"x".repeat(65)).is_err());
    assert!(drain(&mut s).is_empty());
    s.submit_accepted(1, "msg-1").unwrap();
    let out = drain(&mut s);
    assert_eq!(sent(&out), [(SUBMIT_SM_RESP, 0, 1)]);
    let Some(Output::Send(c)) = out.first() else {
        panic!()
    };
    assert_eq!(frame::to_json(&wire(c))["body"]["message_id"], "msg-1");
    s.submit_refused(2, 0x45);
    assert_eq!(sent(&drain(&mut s)), [(SUBMIT_SM_RESP, 0x45, 2)]);
    // Answered twice or never asked: ignored.
    s.submit_accepted(2, "again").unwrap();
    s.submit_refused(99, 0x45);
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.submits_pending(), 0);
    s.on_frame(submit(6), t0);
    assert!(matches!(
        drain(&mut s).as_slice(),
        [Output::Submit {
            sequence_number: 6,
            ..
        }]
    ));
}

#[test]
fn receiver_may_not_submit() {
    let (mut s, t0) = bound(BindMode::Receiver);
    s.on_frame(submit(1), t0);
    s.on_frame(raw(DATA_SM, 0, 2, DATA_SM_BODY), t0);
    s.on_frame(raw(QUERY_SM, 0, 3, QUERY_SM_BODY), t0);
    assert_eq!(
        sent(&drain(&mut s)),
        [
            (SUBMIT_SM_RESP, ESME_RINVBNDSTS, 1),
            (DATA_SM_RESP, ESME_RINVBNDSTS, 2),
            (QUERY_SM_RESP, ESME_RINVBNDSTS, 3),
        ]
    );
    assert_eq!(s.submits_pending(), 0);
}

#[test]
fn data_sm_is_answered_with_data_sm_resp() {
    let (mut s, t0) = bound(BindMode::Transceiver);
    s.on_frame(raw(DATA_SM, 0, 1, DATA_SM_BODY), t0);
    s.on_frame(raw(DATA_SM, 0, 2, DATA_SM_BODY), t0);
    let out = drain(&mut s);
    assert_eq!(out.len(), 2);
    assert!(
        matches!(&out[0], Output::Submit { sequence_number: 1, command } if command.id() == CommandId::DataSm)
    );
    s.submit_accepted(1, "d1").unwrap();
    s.submit_refused(2, 0x0B);
    let out = drain(&mut s);
    assert_eq!(sent(&out), [(DATA_SM_RESP, 0, 1), (DATA_SM_RESP, 0x0B, 2)]);
    let Some(Output::Send(c)) = out.first() else {
        panic!()
    };
    assert_eq!(frame::to_json(&wire(c))["body"]["message_id"], "d1");
}

#[test]
fn garbage_and_unsupported_get_generic_nack() {
    let (mut s, t0) = bound(BindMode::Transceiver);
    // Unknown command id.
    s.on_frame(raw(0x0000_0777, 0, 1, b"xy"), t0);
    // submit_sm with a body that does not decode.
    s.on_frame(raw(0x0000_0004, 0, 2, b"\x01\x02"), t0);
    // Known but not supported by parla.
    s.on_frame(raw(SUBMIT_MULTI, 0, 3, SUBMIT_MULTI_BODY), t0);
    s.on_frame(raw(OUTBIND, 0, 4, b"sys\0pw\0"), t0);
    s.on_frame(wire(&frame::deliver_sm(5, &fields()).unwrap()), t0);
    let out = sent(&drain(&mut s));
    assert_eq!(out.len(), 5);
    assert_eq!(out[0], (GENERIC_NACK, ESME_RINVCMDID, 1));
    assert_eq!((out[1].0, out[1].2), (GENERIC_NACK, 2));
    assert_ne!(out[1].1, ESME_ROK);
    assert_eq!(out[2], (GENERIC_NACK, ESME_RINVCMDID, 3));
    assert_eq!(out[3], (GENERIC_NACK, ESME_RINVCMDID, 4));
    assert_eq!(out[4], (GENERIC_NACK, ESME_RINVCMDID, 5));
    // Responses to nothing we sent, valid or not, are ignored.
    s.on_frame(raw(DELIVER_SM_RESP, 0, 42, b"\0"), t0);
    s.on_frame(raw(GENERIC_NACK, 3, 43, b""), t0);
    s.on_frame(raw(DELIVER_SM_RESP, 0, 44, b"\x01\x02"), t0);
    s.on_frame(raw(0x8000_0777, 0, 45, b""), t0);
    assert!(drain(&mut s).is_empty());
}

#[test]
fn query_and_cancel_are_answered_by_the_caller() {
    let (mut s, t0) = bound(BindMode::Transmitter);
    s.on_frame(raw(QUERY_SM, 0, 1, QUERY_SM_BODY), t0);
    s.on_frame(raw(CANCEL_SM, 0, 2, CANCEL_SM_BODY), t0);
    s.on_frame(raw(QUERY_SM, 0, 3, QUERY_SM_BODY), t0);
    let out = drain(&mut s);
    assert!(matches!(
        &out[0],
        Output::Request {
            sequence_number: 1,
            ..
        }
    ));
    assert!(matches!(
        &out[1],
        Output::Request {
            sequence_number: 2,
            ..
        }
    ));
    assert_eq!(sent(&out), [(QUERY_SM_RESP, ESME_RMSGQFUL, 3)]);
    // Sent with the request's sequence number, whatever the caller put.
    s.answer(
        2,
        Command::new(CommandStatus::EsmeRok, 999, Pdu::CancelSmResp),
    );
    // The wrong response type becomes a generic_nack.
    s.answer(1, frame::enquire_link_resp(1));
    s.answer(1, frame::enquire_link_resp(1));
    assert_eq!(
        sent(&drain(&mut s)),
        [(CANCEL_SM_RESP, 0, 2), (GENERIC_NACK, ESME_RSYSERR, 1)]
    );
}

#[test]
fn answer_error_uses_the_request_s_own_response() {
    let (mut s, t0) = bound(BindMode::Transmitter);
    s.on_frame(raw(QUERY_SM, 0, 1, QUERY_SM_BODY), t0);
    s.on_frame(raw(CANCEL_SM, 0, 2, CANCEL_SM_BODY), t0);
    drain(&mut s);
    s.answer_error(1, 0x67);
    s.answer_error(2, 0);
    // Already answered: nothing more.
    s.answer_error(2, 0x11);
    assert_eq!(
        sent(&drain(&mut s)),
        [(QUERY_SM_RESP, 0x67, 1), (CANCEL_SM_RESP, ESME_RSYSERR, 2)]
    );
}

#[test]
fn windows_set_at_bind_time_apply() {
    let t0 = Instant::now();
    let mut config = config();
    config.window = 1;
    let mut s = ServerSession::new(config, t0);
    s.on_frame(bind_frame(BindMode::Transceiver, 1, "secret"), t0);
    drain(&mut s);
    s.set_windows(3, 1);
    s.accept_bind(1, t0);
    drain(&mut s);
    for seq in 2..=5 {
        s.on_frame(submit(seq), t0);
    }
    let out = drain(&mut s);
    let submits = out
        .iter()
        .filter(|o| matches!(o, Output::Submit { .. }))
        .count();
    assert_eq!(submits, 3);
    assert_eq!(sent(&out), [(SUBMIT_SM_RESP, ESME_RMSGQFUL, 5)]);
    // Deliver window 1: a second delivery waits for the first's answer.
    assert!(s.can_deliver());
    s.deliver(1, &fields(), t0).unwrap();
    assert!(!s.can_deliver());
}

#[test]
fn enquire_link_both_ways() {
    let (mut s, t0) = bound(BindMode::Transceiver);
    s.on_frame(raw(ENQUIRE_LINK, 0, 5, b""), t0 + secs(10));
    assert_eq!(sent(&drain(&mut s)), [(ENQUIRE_LINK_RESP, 0, 5)]);
    // Ours after 30 s of silence.
    assert_eq!(s.next_deadline(), Some(t0 + secs(40)));
    s.on_tick(t0 + secs(39));
    assert!(drain(&mut s).is_empty());
    s.on_tick(t0 + secs(40));
    let out = sent(&drain(&mut s));
    assert_eq!(out, [(ENQUIRE_LINK, 0, 1)]);
    assert_eq!(s.next_deadline(), Some(t0 + secs(50)));
    s.on_frame(raw(ENQUIRE_LINK_RESP, 0, 1, b""), t0 + secs(41));
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.next_deadline(), Some(t0 + secs(71)));
    // Unanswered: closed.
    s.on_tick(t0 + secs(71));
    assert_eq!(sent(&drain(&mut s)), [(ENQUIRE_LINK, 0, 2)]);
    s.on_tick(t0 + secs(80));
    assert!(drain(&mut s).is_empty());
    s.on_tick(t0 + secs(81));
    let out = drain(&mut s);
    assert!(closed(&out));
    assert!(matches!(&out[0], Output::Closed { reason } if reason.contains("enquire_link")));
    // A generic_nack also answers an enquire_link.
    let (mut s, t0) = bound(BindMode::Transceiver);
    s.on_tick(t0 + secs(30));
    drain(&mut s);
    s.on_frame(raw(GENERIC_NACK, 3, 1, b""), t0 + secs(31));
    s.on_tick(t0 + secs(41));
    assert!(drain(&mut s).is_empty());
    assert!(!s.is_closed());
}

#[test]
fn idle_timeout() {
    // Bound: unbind, then close once answered.
    let cfg = ServerConfig {
        enquire_link_interval: secs(1000),
        ..config()
    };
    let (mut s, t0) = bound_with(cfg.clone(), BindMode::Transceiver);
    s.on_frame(raw(ENQUIRE_LINK, 0, 1, b""), t0 + secs(50));
    drain(&mut s);
    assert_eq!(s.next_deadline(), Some(t0 + secs(170)));
    s.on_tick(t0 + secs(169));
    assert!(drain(&mut s).is_empty());
    s.on_tick(t0 + secs(170));
    assert_eq!(sent(&drain(&mut s)), [(UNBIND, 0, 1)]);
    assert!(!s.can_deliver());
    s.on_frame(raw(UNBIND_RESP, 0, 1, b""), t0 + secs(171));
    assert!(closed(&drain(&mut s)));
    // Bound, and silent even to the unbind: closed at unbind_timeout.
    let (mut s, t0) = bound_with(cfg.clone(), BindMode::Transceiver);
    s.on_tick(t0 + secs(120));
    drain(&mut s);
    s.on_tick(t0 + secs(125));
    assert!(closed(&drain(&mut s)));
    // Before bind: closed at once.
    let t0 = Instant::now();
    let mut s = ServerSession::new(
        ServerConfig {
            bind_timeout: secs(1000),
            ..cfg
        },
        t0,
    );
    s.on_tick(t0 + secs(120));
    let out = drain(&mut s);
    assert!(sent(&out).is_empty());
    assert!(closed(&out));
}

#[test]
fn bind_timeout() {
    let t0 = Instant::now();
    let mut s = ServerSession::new(config(), t0);
    s.on_frame(raw(ENQUIRE_LINK, 0, 1, b""), t0 + secs(5));
    drain(&mut s);
    s.on_tick(t0 + secs(9));
    assert!(drain(&mut s).is_empty());
    s.on_tick(t0 + secs(10));
    let out = drain(&mut s);
    assert!(closed(&out));
    assert!(matches!(&out[0], Output::Closed { reason } if reason.contains("bind")));
}

#[test]
fn client_unbind_with_deliveries_pending() {
    let (mut s, t0) = bound(BindMode::Receiver);
    s.deliver(10, &fields(), t0).unwrap();
    s.deliver(11, &fields(), t0).unwrap();
    s.on_frame(raw(ENQUIRE_LINK, 0, 7, b""), t0);
    s.on_tick(t0 + secs(1));
    drain(&mut s);
    s.on_frame(raw(UNBIND, 0, 8, b""), t0 + secs(2));
    let out = drain(&mut s);
    assert_eq!(sent(&out), [(UNBIND_RESP, 0, 8)]);
    assert_eq!(
        delivered(&out),
        [
            (10, Err(DeliverError::Closed)),
            (11, Err(DeliverError::Closed))
        ]
    );
    assert!(closed(&out));
    assert!(matches!(out.first(), Some(Output::Send(_))));
    assert_eq!(s.deliver(12, &fields(), t0), Err(NotReady));
    // Late answers are ignored.
    s.on_frame(raw(DELIVER_SM_RESP, 0, 1, b"\0"), t0);
    assert!(drain(&mut s).is_empty());
}

#[test]
fn our_unbind_waits_for_deliveries_and_decisions() {
    let (mut s, t0) = bound(BindMode::Transceiver);
    s.deliver(1, &fields(), t0).unwrap();
    s.on_frame(submit(50), t0);
    drain(&mut s);
    s.unbind(t0 + secs(1));
    assert_eq!(sent(&drain(&mut s)), [(UNBIND, 0, 2)]);
    assert_eq!(s.bound_mode(), None);
    assert!(!s.can_deliver());
    assert_eq!(s.deliver(2, &fields(), t0), Err(NotReady));
    // New submits are refused while unbinding.
    s.on_frame(submit(51), t0 + secs(1));
    assert_eq!(
        sent(&drain(&mut s)),
        [(SUBMIT_SM_RESP, ESME_RINVBNDSTS, 51)]
    );
    s.on_frame(raw(UNBIND_RESP, 0, 2, b""), t0 + secs(2));
    assert!(drain(&mut s).is_empty());
    s.on_frame(raw(DELIVER_SM_RESP, 0, 1, b"\0"), t0 + secs(2));
    assert_eq!(delivered(&drain(&mut s)), [(1, Ok(()))]);
    // The pending submit can still be answered; then closed.
    s.submit_accepted(50, "m50").unwrap();
    let out = drain(&mut s);
    assert_eq!(sent(&out), [(SUBMIT_SM_RESP, 0, 50)]);
    assert!(closed(&out));
    // Unbind timeout with a delivery in flight.
    let (mut s, t0) = bound(BindMode::Transceiver);
    s.deliver(1, &fields(), t0).unwrap();
    s.unbind(t0);
    drain(&mut s);
    s.on_frame(raw(UNBIND_RESP, 0, 2, b""), t0 + secs(1));
    assert_eq!(s.next_deadline(), Some(t0 + secs(5)));
    s.on_tick(t0 + secs(5));
    let out = drain(&mut s);
    assert_eq!(delivered(&out), [(1, Err(DeliverError::Closed))]);
    assert!(closed(&out));
    // Before bind: closed at once.
    let mut s = ServerSession::new(config(), t0);
    s.unbind(t0);
    assert!(closed(&drain(&mut s)));
}

#[test]
fn deliver_window_and_matching() {
    let (mut s, t0) = bound_with(
        ServerConfig {
            deliver_window: 4,
            ..config()
        },
        BindMode::Transceiver,
    );
    for token in 1..=4 {
        assert!(s.can_deliver());
        s.deliver(token, &fields(), t0).unwrap();
    }
    assert!(!s.can_deliver());
    assert_eq!(s.deliver(5, &fields(), t0), Err(NotReady));
    let out = drain(&mut s);
    assert_eq!(
        sent(&out),
        [
            (DELIVER_SM, 0, 1),
            (DELIVER_SM, 0, 2),
            (DELIVER_SM, 0, 3),
            (DELIVER_SM, 0, 4)
        ]
    );
    assert_eq!(s.deliveries_in_flight(), 4);
    // Wrong response type: ignored.
    s.on_frame(raw(SUBMIT_SM_RESP, 0, 1, b"x\0"), t0);
    assert!(drain(&mut s).is_empty());
    s.on_frame(raw(DELIVER_SM_RESP, 0, 2, b"\0"), t0);
    s.on_frame(raw(DELIVER_SM_RESP, 0x64, 1, b"\0"), t0);
    s.on_frame(raw(GENERIC_NACK, 0x03, 3, b""), t0);
    s.on_frame(raw(GENERIC_NACK, 0, 4, b""), t0);
    assert_eq!(
        delivered(&drain(&mut s)),
        [
            (2, Ok(())),
            (1, Err(DeliverError::Refused { status: 0x64 })),
            (3, Err(DeliverError::Refused { status: 0x03 })),
            (
                4,
                Err(DeliverError::Refused {
                    status: ESME_RSYSERR
                })
            ),
        ]
    );
    // Answered twice: ignored.
    s.on_frame(raw(DELIVER_SM_RESP, 0, 2, b"\0"), t0);
    assert!(drain(&mut s).is_empty());
    // A receipt as a ready command, and something that is no delivery.
    let receipt = frame::deliver_sm_with_tlvs(0, &fields(), Some("m1"), Some(2), None).unwrap();
    s.deliver_command(20, receipt, t0).unwrap();
    s.deliver_command(21, frame::enquire_link(0), t0).unwrap();
    let out = drain(&mut s);
    assert_eq!(sent(&out), [(DELIVER_SM, 0, 5)]);
    assert!(matches!(
        delivered(&out).as_slice(),
        [(21, Err(DeliverError::Invalid { .. }))]
    ));
    // An undecodable deliver_sm_resp still answers: refused.
    s.on_frame(raw(DELIVER_SM_RESP, 0, 5, b"\x01\x02"), t0);
    assert_eq!(
        delivered(&drain(&mut s)),
        [(
            20,
            Err(DeliverError::Refused {
                status: ESME_RSYSERR
            })
        )]
    );
    // Unencodable fields: reported, not sent.
    let bad = SubmitFields {
        short_message: vec![0; 300],
        ..fields()
    };
    s.deliver(22, &bad, t0).unwrap();
    let out = drain(&mut s);
    assert!(sent(&out).is_empty());
    assert!(matches!(
        delivered(&out).as_slice(),
        [(22, Err(DeliverError::Invalid { .. }))]
    ));
}

#[test]
fn delivery_timeouts_close_after_three_in_a_row() {
    let (mut s, t0) = bound_with(
        ServerConfig {
            deliver_window: 3,
            ..config()
        },
        BindMode::Receiver,
    );
    s.deliver(1, &fields(), t0).unwrap();
    s.deliver(2, &fields(), t0 + secs(1)).unwrap();
    drain(&mut s);
    assert_eq!(s.next_deadline(), Some(t0 + secs(10)));
    s.on_tick(t0 + secs(10));
    assert_eq!(delivered(&drain(&mut s)), [(1, Err(DeliverError::Timeout))]);
    // An answer resets the count.
    s.on_frame(raw(DELIVER_SM_RESP, 0, 2, b"\0"), t0 + secs(10));
    drain(&mut s);
    for token in 3..=5 {
        s.deliver(token, &fields(), t0 + secs(10)).unwrap();
    }
    drain(&mut s);
    s.on_tick(t0 + secs(20));
    let out = drain(&mut s);
    assert_eq!(
        delivered(&out),
        [
            (3, Err(DeliverError::Timeout)),
            (4, Err(DeliverError::Timeout)),
            (5, Err(DeliverError::Timeout)),
        ]
    );
    assert!(closed(&out));
}

#[test]
fn sequence_numbers_wrap_and_skip_those_in_flight() {
    let (mut s, t0) = bound_with(
        ServerConfig {
            deliver_window: 3,
            ..config()
        },
        BindMode::Transceiver,
    );
    s.deliver(1, &fields(), t0).unwrap(); // seq 1
    s.next_seq = MAX_SEQUENCE_NUMBER;
    s.deliver(2, &fields(), t0).unwrap(); // seq MAX
    s.deliver(3, &fields(), t0).unwrap(); // 1 in flight: seq 2
    assert_eq!(
        sent(&drain(&mut s)),
        [
            (DELIVER_SM, 0, 1),
            (DELIVER_SM, 0, MAX_SEQUENCE_NUMBER),
            (DELIVER_SM, 0, 2)
        ]
    );
    s.on_frame(raw(DELIVER_SM_RESP, 0, MAX_SEQUENCE_NUMBER, b"\0"), t0);
    assert_eq!(delivered(&drain(&mut s)), [(2, Ok(()))]);
}

#[test]
fn connection_lost_reports_every_delivery() {
    let (mut s, t0) = bound(BindMode::Transceiver);
    s.deliver(1, &fields(), t0).unwrap();
    drain(&mut s);
    s.connection_lost("eof");
    let out = drain(&mut s);
    assert_eq!(delivered(&out), [(1, Err(DeliverError::Closed))]);
    assert!(closed(&out));
    s.connection_lost("again");
    s.on_tick(t0 + secs(1000));
    assert!(drain(&mut s).is_empty());
}

#[test]
fn config_is_made_safe() {
    let t0 = Instant::now();
    let mut s = ServerSession::new(
        ServerConfig {
            system_id: "pärla-gateway-with-a-long-name".into(),
            window: 0,
            deliver_window: 0,
            ..config()
        },
        t0,
    );
    s.on_frame(bind_frame(BindMode::Transceiver, 1, "pw"), t0);
    drain(&mut s);
    s.accept_bind(1, t0);
    let out = drain(&mut s);
    let Some(Output::Send(c)) = out.first() else {
        panic!("{out:?}")
    };
    assert_eq!(
        frame::to_json(&wire(c))["body"]["system_id"],
        "prla-gateway-wi"
    );
    assert!(s.can_deliver());
    s.on_frame(submit(2), t0);
    assert!(matches!(drain(&mut s).as_slice(), [Output::Submit { .. }]));
}

/// Random frames and random caller actions: no panic, everything stays bounded, Closed is
/// last and nothing follows it.
#[test]
fn random_frames_never_panic_and_stay_bounded() {
    let mut rng = fastrand::Rng::with_seed(0x5EED_0F5E_5510_B5AA);
    let valid: Vec<Vec<u8>> = [
        frame::bind(BindMode::Transceiver, 1, &BindFields::default()).unwrap(),
        frame::bind(BindMode::Receiver, 2, &BindFields::default()).unwrap(),
        frame::submit_sm(3, &fields()).unwrap(),
        frame::deliver_sm_resp(1, 0),
        frame::generic_nack(2, 0),
        frame::enquire_link(4),
        frame::enquire_link_resp(3),
        frame::unbind(5),
        frame::unbind_resp(1),
        frame::submit_sm_resp(2, 0, "x").unwrap(),
    ]
    .iter()
    .map(|c| encode_to_vec(c).unwrap())
    .chain([
        encode_to_vec(&frame::deliver_sm(6, &fields()).unwrap()).unwrap(),
        raw_bytes(DATA_SM, 0, 7, DATA_SM_BODY),
        raw_bytes(QUERY_SM, 0, 8, QUERY_SM_BODY),
        raw_bytes(CANCEL_SM, 0, 9, CANCEL_SM_BODY),
    ])
    .collect();
    let window = 3;
    let deliver_window = 4;
    let mut frames_seen = 0;
    let (mut binds, mut submits, mut deliveries) = (0usize, 0, 0);
    for _session in 0..300 {
        let mut now = Instant::now();
        let mut s = ServerSession::new(
            ServerConfig {
                window,
                deliver_window,
                ..config()
            },
            now,
        );
        let mut asked: Vec<(u8, u32)> = Vec::new();
        // Most sessions start bound, so the walk reaches submits and deliveries.
        if rng.usize(..4) != 0 {
            let mode = [
                BindMode::Transmitter,
                BindMode::Receiver,
                BindMode::Transceiver,
            ][rng.usize(..3)];
            s.on_frame(bind_frame(mode, 1, "pw"), now);
            s.accept_bind(1, now);
            binds += usize::from(drain(&mut s).len() == 3);
        }
        let mut closed_seen = false;
        for step in 0..200u64 {
            now += Duration::from_millis(rng.u64(..3000));
            match rng.usize(..10) {
                0..=5 => {
                    let bytes = match rng.usize(..3) {
                        0 => {
                            let len = rng.usize(..64);
                            let mut b: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
                            b.splice(0..0, ((16 + len) as u32).to_be_bytes());
                            b
                        }
                        1 => valid[rng.usize(..valid.len())].clone(),
                        _ => {
                            let mut b = valid[rng.usize(..valid.len())].clone();
                            for _ in 0..rng.usize(1..4) {
                                let pos = rng.usize(4..b.len());
                                b[pos] = rng.u8(..);
                            }
                            b
                        }
                    };
                    if let Ok(frame) = decode_one(&bytes) {
                        frames_seen += 1;
                        s.on_frame(frame, now);
                    }
                }
                6 => s.on_tick(now),
                7 => {
                    let _ = s.deliver(step, &fields(), now);
                }
                8 => {
                    if let Some((what, seq)) = asked.pop() {
                        match what {
                            0 if rng.bool() => s.accept_bind(seq, now),
                            0 => s.refuse_bind(seq, ESME_RINVPASWD, now),
                            1 if rng.bool() => {
                                let _ = s.submit_accepted(seq, "id");
                            }
                            1 => s.submit_refused(seq, 0x45),
                            _ => s.answer(seq, frame::generic_nack(seq, 0x67)),
                        }
                    }
                }
                _ => {
                    if rng.usize(..20) == 0 {
                        s.unbind(now);
                    }
                }
            }
            assert!(s.submits.len() <= window);
            assert!(s.requests.len() <= window);
            assert!(s.deliveries <= deliver_window);
            assert!(s.pending.len() <= deliver_window + 2);
            assert!(s.outputs.len() <= deliver_window + 4, "{:?}", s.outputs);
            for out in drain(&mut s) {
                assert!(!closed_seen, "output after Closed: {out:?}");
                match out {
                    Output::Authenticate {
                        sequence_number, ..
                    } => asked.push((0, sequence_number)),
                    Output::Submit {
                        sequence_number, ..
                    } => {
                        submits += 1;
                        asked.push((1, sequence_number));
                    }
                    Output::Request {
                        sequence_number, ..
                    } => asked.push((2, sequence_number)),
                    Output::Closed { .. } => closed_seen = true,
                    Output::Bound { .. } => binds += 1,
                    Output::Delivered { .. } => deliveries += 1,
                    Output::Send(c) => {
                        // Everything we send can be encoded.
                        encode_to_vec(&c).unwrap();
                    }
                }
            }
            if let Some(deadline) = s.next_deadline() {
                assert!(!closed_seen);
                assert!(deadline > now - Duration::from_secs(1000));
            }
        }
    }
    // The random walk reaches the interesting states.
    assert!(frames_seen > 10_000);
    assert!(
        binds > 50 && submits > 50 && deliveries > 50,
        "{binds} {submits} {deliveries}"
    );
}
