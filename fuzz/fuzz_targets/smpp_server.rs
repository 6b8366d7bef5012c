//! libFuzzer target for the SMPP server's handling of what integrators send: the bytes are
//! framed by the codec and every frame goes into one server session, whose requests (bind
//! decisions, submits, queries) the target answers as the gateway would, alternately yes and
//! no; time moves on between frames. Every submit is also read as the server reads it
//! (smpp::intake: addresses, text, parts, times) and every query_sm / cancel_sm's id. No input
//! may panic, and what the session keeps must stay within its windows.
#![no_main]

use std::time::{Duration, Instant};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use parla::config::{Defaults, SmppAccountSettings};
use parla::smpp::frame::{SmppCodec, generic_nack};
use parla::smpp::intake::{self, IntakeRules};
use parla::smpp::server_session::{Output, ServerConfig, ServerSession};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut now = t0;
    let config = ServerConfig::new("parla");
    let (window, deliver_window) = (config.window, config.deliver_window);
    let mut session = ServerSession::new(config, now);
    let mut codec = SmppCodec::new();
    let mut buf = BytesMut::from(data);
    let mut yes = true;
    let mut token = 0u64;
    let account = SmppAccountSettings {
        system_id: "shop".into(),
        allowed_sources: vec!["Shop".into()],
        ..SmppAccountSettings::default()
    };
    let defaults = Defaults::default();
    let rules = IntakeRules {
        account: &account,
        defaults: &defaults,
        region: parla::phone::region(Some("IT")),
    };
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        session.on_frame(frame, now);
        while let Some(output) = session.poll_output() {
            match output {
                Output::Authenticate {
                    sequence_number, ..
                } => {
                    if yes {
                        session.accept_bind(sequence_number, now);
                    } else {
                        session.refuse_bind(sequence_number, 0x0E, now);
                    }
                }
                Output::Submit {
                    sequence_number,
                    command,
                } => {
                    let _ = intake::read_submit(&command, rules, 1_795_000_000_000);
                    if yes {
                        let _ = session.submit_accepted(sequence_number, "01KABCDEF");
                    } else {
                        session.submit_refused(sequence_number, 0x08);
                    }
                }
                Output::Request {
                    sequence_number,
                    command,
                } => {
                    let _ = intake::requested_id(&command);
                    session.answer(sequence_number, generic_nack(sequence_number, 0x08));
                }
                _ => {}
            }
            yes = !yes;
        }
        if session.can_deliver() {
            token += 1;
            let _ = session.deliver(token, &Default::default(), now);
        }
        assert!(session.submits_pending() <= window);
        assert!(session.deliveries_in_flight() <= deliver_window);
        now += Duration::from_millis(700);
        session.on_tick(now);
        while session.poll_output().is_some() {}
        if session.is_closed() {
            break;
        }
    }
});
