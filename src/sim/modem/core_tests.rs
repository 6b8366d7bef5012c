use super::*;

use crate::codec::tpdu::{Pdu, SubmitSpec};

/// A core with its own clock, and helpers that return what the modem printed.
struct Rig {
    core: SimModemCore,
    now: Instant,
}

impl Rig {
    fn new(config: SimModemConfig) -> Rig {
        let now = Instant::now();
        Rig {
            core: SimModemCore::new(config, now),
            now,
        }
    }

    fn with_quirks(list: &str) -> Rig {
        Rig::new(SimModemConfig {
            quirks: parse_quirks(list).unwrap(),
            ..SimModemConfig::default()
        })
    }

    fn output(&mut self) -> String {
        let mut text = Vec::new();
        while let Some(bytes) = self.core.poll_output() {
            text.extend(bytes);
        }
        String::from_utf8(text).expect("modem output is ASCII")
    }

    /// Writes `input` and returns what is printed at once.
    fn send(&mut self, input: &str) -> String {
        self.core.input(input.as_bytes(), self.now);
        self.output()
    }

    /// Lets `d` pass and returns what was printed.
    fn wait(&mut self, d: Duration) -> String {
        self.now += d;
        self.core.tick(self.now);
        self.output()
    }

    fn receive(&mut self, from: &str, text: &str) -> String {
        self.core.receive_sms(from, text, self.now).unwrap();
        self.output()
    }

    /// A complete AT+CMGS exchange; returns everything printed after the PDU.
    fn cmgs(&mut self, pdu: &EncodedPdu) -> String {
        let prompt = self.send(&format!("AT+CMGS={}\r", pdu.tpdu_len));
        assert!(
            prompt.ends_with("> ") || prompt.ends_with(">\r\n"),
            "{prompt:?}"
        );
        self.send(&format!("{}\x1a", pdu.to_hex()))
    }
}

fn submit(to: &str, text: &str, report: bool) -> EncodedPdu {
    crate::sim::modem::pty::tests::submit_pdu(to, text, report)
}

/// The PDU lines of a `+CMGL`/`+CMGR`/`+CMT`/`+CDS` answer (lines of hex digits only).
fn pdu_lines(output: &str) -> Vec<Pdu> {
    output
        .split("\r\n")
        .filter(|l| l.len() > 10 && l.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|l| tpdu::decode(&tpdu::decode_hex(l).unwrap(), true).unwrap())
        .collect()
}

fn deliver(pdu: &Pdu) -> &tpdu::Deliver {
    match pdu {
        Pdu::Deliver(d) => d,
        other => panic!("not a deliver: {other:?}"),
    }
}

fn report(pdu: &Pdu) -> &tpdu::StatusReport {
    match pdu {
        Pdu::StatusReport(r) => r,
        other => panic!("not a report: {other:?}"),
    }
}

const OK: &str = "\r\nOK\r\n";
const ERROR: &str = "\r\nERROR\r\n";

// ------------------------------------------------------------------------------ basics

#[test]
fn at_answers_ok_case_insensitively_with_cr_or_crlf() {
    let mut rig = Rig::new(SimModemConfig::default());
    assert_eq!(rig.send("AT\r"), OK);
    assert_eq!(rig.send("at\r\n"), OK);
    assert_eq!(rig.send("aT\r"), OK);
    // Split across writes.
    assert_eq!(rig.send("A"), "");
    assert_eq!(rig.send("T\r"), OK);
}

#[test]
fn unknown_commands_error_and_noise_is_ignored() {
    let mut rig = Rig::new(SimModemConfig::default());
    assert_eq!(rig.send("AT+FOO\r"), ERROR);
    assert_eq!(rig.send("AT+FOO=1,2\r"), ERROR);
    assert_eq!(rig.send("ATQ5\r"), ERROR);
    assert_eq!(rig.send("AT#\r"), ERROR);
    assert_eq!(rig.send("\r"), "");
    assert_eq!(rig.send("hello\r"), "");
    assert_eq!(rig.send("\x1b\x1a\n"), "");
    // Even with CMEE=1 an unknown command is plain ERROR, as on real modems.
    assert_eq!(rig.send("AT+CMEE=1\r"), OK);
    assert_eq!(rig.send("AT+FOO\r"), ERROR);
}

#[test]
fn echo_is_off_by_default_and_switches_with_ate() {
    let mut rig = Rig::new(SimModemConfig::default());
    assert_eq!(rig.send("ATE1\r"), OK);
    assert_eq!(rig.send("AT\r"), "AT\r\r\nOK\r\n");
    assert_eq!(rig.send("ATE0\r"), "ATE0\r\r\nOK\r\n");
    assert_eq!(rig.send("AT\r"), OK);
}

#[test]
fn chained_commands_run_in_order_with_one_final_result() {
    let mut rig = Rig::new(SimModemConfig::default());
    assert_eq!(rig.send("ATE0V1\r"), OK);
    assert_eq!(rig.send("AT&FE0\r"), OK);
    assert_eq!(
        rig.send("AT+CMEE=1;+CSQ;+CMGF=0\r"),
        "\r\n+CSQ: 21,99\r\n\r\nOK\r\n"
    );
    assert_eq!(rig.send("AT+CMEE?\r"), "\r\n+CMEE: 1\r\n\r\nOK\r\n");
    // The first failure ends the line.
    assert_eq!(rig.send("AT+CMGF=1;+CSQ\r"), "\r\n+CMS ERROR: 303\r\n");
}

#[test]
fn cmee_selects_plain_numeric_or_verbose_errors() {
    let mut rig = Rig::new(SimModemConfig::default());
    assert_eq!(rig.send("AT+CMGF=1\r"), ERROR);
    assert_eq!(rig.send("AT+CMEE=1\r"), OK);
    assert_eq!(rig.send("AT+CMGF=1\r"), "\r\n+CMS ERROR: 303\r\n");
    assert_eq!(rig.send("AT+CPIN=\"1\"\r"), "\r\n+CME ERROR: 3\r\n");
    assert_eq!(rig.send("AT+CMEE=2\r"), OK);
    assert_eq!(
        rig.send("AT+CMGF=1\r"),
        "\r\n+CMS ERROR: operation not supported\r\n"
    );
    assert_eq!(rig.send("AT+CMEE=0\r"), OK);
    assert_eq!(rig.send("AT+CMEE=3\r"), ERROR);
    assert_eq!(rig.send("AT+CMEE=?\r"), "\r\n+CMEE: (0-2)\r\n\r\nOK\r\n");
}

#[test]
fn cpin_ready_without_pin() {
    let mut rig = Rig::new(SimModemConfig::default());
    assert_eq!(rig.send("AT+CPIN?\r"), "\r\n+CPIN: READY\r\n\r\nOK\r\n");
}

#[test]
fn cpin_asks_for_the_configured_pin() {
    let mut rig = Rig::new(SimModemConfig {
        pin: Some("1234".into()),
        ..SimModemConfig::default()
    });
    assert_eq!(rig.send("AT+CPIN?\r"), "\r\n+CPIN: SIM PIN\r\n\r\nOK\r\n");
    assert_eq!(rig.send("AT+CPIN=\"0000\"\r"), ERROR);
    assert_eq!(rig.send("AT+CMEE=1\r"), OK);
    assert_eq!(rig.send("AT+CPIN=\"0000\"\r"), "\r\n+CME ERROR: 16\r\n");
    assert_eq!(rig.send("AT+CMGL=4\r"), "\r\n+CMS ERROR: 311\r\n");
    assert_eq!(rig.send("AT+CPIN=\"1234\"\r"), OK);
    assert_eq!(rig.send("AT+CPIN?\r"), "\r\n+CPIN: READY\r\n\r\nOK\r\n");
    assert_eq!(rig.send("AT+CMGL=4\r"), OK);
}

#[test]
fn identification_strings() {
    let mut rig = Rig::new(SimModemConfig::default());
    assert_eq!(rig.send("AT+CGMI\r"), "\r\nparla\r\n\r\nOK\r\n");
    assert_eq!(rig.send("AT+CGMM\r"), "\r\nSIMMODEM\r\n\r\nOK\r\n");
    assert_eq!(rig.send("AT+CGMR\r"), "\r\n1.0\r\n\r\nOK\r\n");
    let imei = rig.send("AT+CGSN\r");
    let digits = imei
        .trim_start_matches("\r\n")
        .split("\r\n")
        .next()
        .unwrap();
    assert_eq!(digits.len(), 15);
    assert!(digits.bytes().all(|b| b.is_ascii_digit()));
    assert!(imei.ends_with(OK));
}

#[test]
fn network_and_format_commands() {
    let mut rig = Rig::new(SimModemConfig::default());
    assert_eq!(rig.send("AT+CMGF=0\r"), OK);
    assert_eq!(rig.send("AT+CMGF?\r"), "\r\n+CMGF: 0\r\n\r\nOK\r\n");
    assert_eq!(rig.send("AT+CMGF=1\r"), ERROR);
    assert_eq!(rig.send("AT+COPS=3,0\r"), OK);
    assert_eq!(
        rig.send("AT+COPS?\r"),
        "\r\n+COPS: 0,0,\"SIMNET\",7\r\n\r\nOK\r\n"
    );
    assert_eq!(rig.send("AT+CSQ\r"), "\r\n+CSQ: 21,99\r\n\r\nOK\r\n");
    assert_eq!(rig.send("AT+CREG?\r"), "\r\n+CREG: 0,1\r\n\r\nOK\r\n");
    assert_eq!(rig.send("AT+CSMS?\r"), "\r\n+CSMS: 0,1,1,1\r\n\r\nOK\r\n");
    assert_eq!(rig.send("AT+CSMS=1\r"), "\r\n+CSMS: 1,1,1\r\n\r\nOK\r\n");
    assert_eq!(
        rig.send("AT+CSCA?\r"),
        "\r\n+CSCA: \"+15550000000\",145\r\n\r\nOK\r\n"
    );
    assert_eq!(rig.send("AT+CNMA\r"), OK);
    assert_eq!(rig.send("AT+CFUN?\r"), "\r\n+CFUN: 1\r\n\r\nOK\r\n");
}

#[test]
fn cpms_takes_one_to_three_memories() {
    let mut rig = Rig::new(SimModemConfig::default());
    assert_eq!(
        rig.send("AT+CPMS=\"SM\"\r"),
        "\r\n+CPMS: 0,30,0,30,0,30\r\n\r\nOK\r\n"
    );
    rig.receive("+4912345", "hi");
    assert_eq!(
        rig.send("AT+CPMS=\"SM\",\"SM\"\r"),
        "\r\n+CPMS: 1,30,1,30,1,30\r\n\r\nOK\r\n"
    );
    assert_eq!(
        rig.send("AT+CPMS=\"SR\",\"SM\",\"SM\"\r"),
        "\r\n+CPMS: 0,30,1,30,1,30\r\n\r\nOK\r\n"
    );
    assert_eq!(
        rig.send("AT+CPMS?\r"),
        "\r\n+CPMS: \"SR\",0,30,\"SM\",1,30,\"SM\",1,30\r\n\r\nOK\r\n"
    );
    assert_eq!(rig.send("AT+CPMS=\"XX\"\r"), ERROR);
    assert_eq!(rig.send("AT+CPMS=\"SM\",\"SM\",\"SM\",\"SM\"\r"), ERROR);
    assert_eq!(rig.send("AT+CPMS=\"SM\",\"SR\"\r"), ERROR);
    assert!(
        rig.send("AT+CPMS=?\r")
            .starts_with("\r\n+CPMS: (\"SM\",\"SR\")")
    );
}

#[test]
fn cnmi_is_stored_and_validated() {
    let mut rig = Rig::new(SimModemConfig::default());
    assert_eq!(rig.send("AT+CNMI?\r"), "\r\n+CNMI: 0,0,0,0,0\r\n\r\nOK\r\n");
    assert_eq!(rig.send("AT+CNMI=2,1,0,2,0\r"), OK);
    assert_eq!(rig.send("AT+CNMI?\r"), "\r\n+CNMI: 2,1,0,2,0\r\n\r\nOK\r\n");
    assert_eq!(rig.send("AT+CNMI=2,1,0,3\r"), ERROR);
    assert_eq!(rig.send("AT+CNMI=x\r"), ERROR);
    assert_eq!(rig.send("AT+CNMI=1,2\r"), OK);
    assert_eq!(rig.send("AT+CNMI?\r"), "\r\n+CNMI: 1,2,0,2,0\r\n\r\nOK\r\n");
    assert!(rig.send("AT+CNMI=?\r").starts_with("\r\n+CNMI: (0-3)"));
}

// ------------------------------------------------------------------------------ sending

#[test]
fn cmgs_prompt_pdu_ctrl_z_and_reference_wrap() {
    let mut rig = Rig::new(SimModemConfig::default());
    let pdu = submit("+4915112345678", "Hello", false);
    assert_eq!(rig.send(&format!("AT+CMGS={}\r", pdu.tpdu_len)), "\r\n> ");
    assert_eq!(
        rig.send(&format!("{}\x1a", pdu.to_hex())),
        "\r\n+CMGS: 0\r\n\r\nOK\r\n"
    );
    let sent = rig.core.sent();
    assert_eq!(
        sent,
        [SentSms {
            to: "+4915112345678".into(),
            text: "Hello".into(),
            reference: 0,
            concat: None,
            status_report_requested: false,
        }]
    );
    for mr in 1..=255 {
        assert_eq!(rig.cmgs(&pdu), format!("\r\n+CMGS: {mr}\r\n\r\nOK\r\n"));
    }
    assert_eq!(rig.cmgs(&pdu), "\r\n+CMGS: 0\r\n\r\nOK\r\n");
    assert_eq!(rig.core.sent().len(), 257);
    assert_eq!(rig.core.counters().sends_accepted, 257);
    assert!(matches!(rig.core.poll_event(), Some(SimEvent::Sent(_))));
}

#[test]
fn cmgs_accepts_the_pdu_in_pieces_with_line_ends() {
    let mut rig = Rig::new(SimModemConfig::default());
    let pdu = submit("12345", "split", false);
    let hex = pdu.to_hex();
    rig.send(&format!("AT+CMGS={}\r\n", pdu.tpdu_len));
    let (a, b) = hex.split_at(7);
    assert_eq!(rig.send(a), "");
    assert_eq!(rig.send(b), "");
    assert_eq!(rig.send("\r\n"), "");
    assert_eq!(rig.send("\x1a"), "\r\n+CMGS: 0\r\n\r\nOK\r\n");
    assert_eq!(rig.core.sent()[0].to, "12345");
}

#[test]
fn cmgs_length_mismatch_is_304() {
    let mut rig = Rig::new(SimModemConfig::default());
    assert_eq!(rig.send("AT+CMEE=1\r"), OK);
    let pdu = submit("+4915112345678", "Hello", false);
    rig.send(&format!("AT+CMGS={}\r", pdu.tpdu_len + 1));
    assert_eq!(
        rig.send(&format!("{}\x1a", pdu.to_hex())),
        "\r\n+CMS ERROR: 304\r\n"
    );
    // Not hex, odd length, empty, not a SUBMIT: all 304.
    for bad in [
        "ZZ",
        "001",
        "",
        "07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07",
    ] {
        rig.send("AT+CMGS=10\r");
        assert_eq!(
            rig.send(&format!("{bad}\x1a")),
            "\r\n+CMS ERROR: 304\r\n",
            "{bad}"
        );
    }
    assert!(rig.core.sent().is_empty());
    assert_eq!(rig.core.counters().bad_pdus, 5);
    // The reference was not used up.
    assert_eq!(rig.cmgs(&pdu), "\r\n+CMGS: 0\r\n\r\nOK\r\n");
    // Bad length arguments.
    assert_eq!(rig.send("AT+CMGS=0\r"), "\r\n+CMS ERROR: 304\r\n");
    assert_eq!(rig.send("AT+CMGS=abc\r"), "\r\n+CMS ERROR: 304\r\n");
    assert_eq!(rig.send("AT+CMGS=\"+123\"\r"), "\r\n+CMS ERROR: 304\r\n");
}

#[test]
fn esc_cancels_the_send() {
    let mut rig = Rig::new(SimModemConfig::default());
    let pdu = submit("+4915112345678", "Hello", false);
    rig.send(&format!("AT+CMGS={}\r", pdu.tpdu_len));
    assert_eq!(rig.send(&format!("{}\x1b", pdu.to_hex())), OK);
    assert!(rig.core.sent().is_empty());
    assert_eq!(rig.core.counters().sends_cancelled, 1);
    // Back in command mode.
    assert_eq!(rig.send("AT\r"), OK);
    assert_eq!(rig.cmgs(&pdu), "\r\n+CMGS: 0\r\n\r\nOK\r\n");
}

#[test]
fn concatenated_and_ucs2_submits_are_recorded_per_part() {
    let mut rig = Rig::new(SimModemConfig::default());
    let units = gsm7::to_ucs2("Grüße ✓");
    let pdu = tpdu::encode_submit(&SubmitSpec {
        destination: "+4915112345678",
        payload: tpdu::Payload::Ucs2(&units),
        concat: Some(Concat {
            reference: 0x39,
            total: 3,
            seq: 2,
            sixteen_bit: false,
        }),
        reference: 0,
        status_report: true,
        validity: Some(Duration::from_secs(3600)),
        smsc: Some("+420603052000"),
        reject_duplicates: false,
        class: None,
    })
    .unwrap();
    assert_eq!(rig.cmgs(&pdu), "\r\n+CMGS: 0\r\n\r\nOK\r\n");
    let sent = &rig.core.sent()[0];
    assert_eq!(sent.text, "Grüße ✓");
    assert_eq!(sent.concat, Some((0x39, 3, 2)));
    assert!(sent.status_report_requested);
}

#[test]
fn injected_failures_answer_the_cms_code_after_the_pdu() {
    let mut rig = Rig::new(SimModemConfig::default());
    rig.send("AT+CMEE=1\r");
    rig.core.fail_next_sends(2, 500);
    let pdu = submit("+4915112345678", "Hello", false);
    assert_eq!(rig.cmgs(&pdu), "\r\n+CMS ERROR: 500\r\n");
    assert_eq!(rig.cmgs(&pdu), "\r\n+CMS ERROR: 500\r\n");
    assert_eq!(rig.cmgs(&pdu), "\r\n+CMGS: 0\r\n\r\nOK\r\n");
    assert_eq!(rig.core.counters().sends_failed, 2);
}

#[test]
fn failure_share_gives_transient_cms_38() {
    let mut rig = Rig::new(SimModemConfig {
        failure_share: 1.0,
        ..SimModemConfig::default()
    });
    rig.send("AT+CMEE=1\r");
    let pdu = submit("+4915112345678", "Hello", false);
    assert_eq!(rig.cmgs(&pdu), "\r\n+CMS ERROR: 38\r\n");
    // Without CMEE the host sees ERROR.
    rig.send("AT+CMEE=0\r");
    assert_eq!(rig.cmgs(&pdu), ERROR);

    let mut half = Rig::new(SimModemConfig {
        failure_share: 0.5,
        seed: 7,
        ..SimModemConfig::default()
    });
    let answers: Vec<String> = (0..40).map(|_| half.cmgs(&pdu)).collect();
    let failed = answers.iter().filter(|a| a.as_str() == ERROR).count();
    assert!((5..35).contains(&failed), "{failed} of 40 failed");
}

#[test]
fn cmgs_refused_without_radio() {
    let mut rig = Rig::new(SimModemConfig::default());
    rig.send("AT+CMEE=1\r");
    assert_eq!(rig.send("AT+CFUN=4\r"), OK);
    assert_eq!(rig.send("AT+CMGS=20\r"), "\r\n+CMS ERROR: 331\r\n");
    assert_eq!(rig.send("AT+CFUN=1\r"), OK);
    assert_eq!(rig.send("AT+CMGS=20\r"), "\r\n> ");
}

// ------------------------------------------------------------------------------ receiving

#[test]
fn receive_single_is_announced_and_readable() {
    let mut rig = Rig::new(SimModemConfig::default());
    assert_eq!(rig.send("AT+CNMI=2,1,0,0,0\r"), OK);
    assert_eq!(
        rig.receive("+4915112345678", "Hi there"),
        "\r\n+CMTI: \"SM\",0\r\n"
    );
    let read = rig.send("AT+CMGR=0\r");
    let header = read.split("\r\n").nth(1).unwrap();
    let pdus = pdu_lines(&read);
    let d = deliver(&pdus[0]);
    assert_eq!(
        header,
        format!(
            "+CMGR: 0,,{}",
            read.split("\r\n").nth(2).unwrap().len() / 2 - 8
        )
    );
    assert_eq!(d.originator.value, "+4915112345678");
    assert_eq!(d.user_data.text.as_deref(), Some("Hi there"));
    assert_eq!(d.user_data.concat, None);
    assert_eq!(d.smsc.as_ref().unwrap().value, "+15550000000");
    // 2026-01-01T00:00:00Z: the default clock, as no time passed.
    assert_eq!(d.scts.to_rfc3339(), "2026-01-01T00:00:00+00:00");
    assert!(read.ends_with(OK));
    // Read now.
    assert!(rig.send("AT+CMGR=0\r").starts_with("\r\n+CMGR: 1,,"));
    assert_eq!(rig.core.stored_messages(), 1);
}

#[test]
fn receive_long_text_in_three_parts() {
    let mut rig = Rig::new(SimModemConfig {
        clock_start_unix: Some(1_700_000_000),
        ..SimModemConfig::default()
    });
    rig.send("AT+CNMI=2,1,0,0,0\r");
    let text: String = (0..400)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    rig.now += Duration::from_secs(10);
    let announced = rig.receive("+4915112345678", &text);
    assert_eq!(
        announced,
        "\r\n+CMTI: \"SM\",0\r\n\r\n+CMTI: \"SM\",1\r\n\r\n+CMTI: \"SM\",2\r\n"
    );
    let listing = rig.send("AT+CMGL=4\r");
    assert!(listing.starts_with("\r\n+CMGL: 0,0,,"), "{listing:?}");
    assert_eq!(listing.matches("+CMGL: ").count(), 3);
    let pdus = pdu_lines(&listing);
    assert_eq!(pdus.len(), 3);
    let mut joined = String::new();
    for (i, pdu) in pdus.iter().enumerate() {
        let d = deliver(pdu);
        let concat = d.user_data.concat.unwrap();
        assert_eq!((concat.total, concat.seq), (3, i as u8 + 1));
        assert_eq!(concat.reference, 0);
        assert_eq!(d.scts.to_unix_millis(), Some(1_700_000_010_000));
        joined.push_str(d.user_data.text.as_deref().unwrap());
    }
    assert_eq!(joined, text);
    // Listing marked them read: "received unread" is now empty, "read" has three.
    assert_eq!(rig.send("AT+CMGL=0\r"), OK);
    assert_eq!(rig.send("AT+CMGL=1\r").matches("+CMGL: ").count(), 3);
    // The next long text uses the next concatenation reference.
    rig.receive("+4915112345678", &text);
    let pdus = pdu_lines(&rig.send("AT+CMGR=3\r"));
    assert_eq!(deliver(&pdus[0]).user_data.concat.unwrap().reference, 1);
}

#[test]
fn receive_ucs2_and_alphanumeric_originator() {
    let mut rig = Rig::new(SimModemConfig::default());
    rig.core.receive_sms("Parla", "Ciao 😀", rig.now).unwrap();
    let pdus = pdu_lines(&rig.send("AT+CMGL=4\r"));
    let d = deliver(&pdus[0]);
    assert_eq!(d.originator.value, "Parla");
    assert_eq!(d.user_data.text.as_deref(), Some("Ciao 😀"));
    assert!(rig.core.receive_sms("", "x", rig.now).is_err());
}

#[test]
fn out_of_order_and_duplicate_parts() {
    let mut rig = Rig::new(SimModemConfig::default());
    let text = "x".repeat(153 * 4);
    let options = ReceiveOptions {
        out_of_order: true,
        duplicate: true,
    };
    assert_eq!(
        rig.core
            .receive_sms_with("+4915112345678", &text, options, rig.now)
            .unwrap(),
        4
    );
    let pdus = pdu_lines(&rig.send("AT+CMGL=4\r"));
    let seqs: Vec<u8> = pdus
        .iter()
        .map(|p| deliver(p).user_data.concat.unwrap().seq)
        .collect();
    assert_eq!(seqs.len(), 5);
    assert_ne!(&seqs[..4], &[1, 2, 3, 4]);
    let mut unique = seqs.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique, [1, 2, 3, 4]);
}

#[test]
fn cmgr_empty_slot_is_bare_ok_and_out_of_range_is_321() {
    let mut rig = Rig::new(SimModemConfig {
        storage_capacity: 5,
        ..SimModemConfig::default()
    });
    assert_eq!(rig.send("AT+CMGR=3\r"), OK);
    assert_eq!(rig.send("AT+CMGR=5\r"), ERROR);
    rig.send("AT+CMEE=1\r");
    assert_eq!(rig.send("AT+CMGR=5\r"), "\r\n+CMS ERROR: 321\r\n");
    assert_eq!(rig.send("AT+CMGD=99\r"), "\r\n+CMS ERROR: 321\r\n");
    assert_eq!(rig.send("AT+CMGR=x\r"), "\r\n+CMS ERROR: 304\r\n");
}

#[test]
fn index_base_one_like_simcom() {
    let mut rig = Rig::new(SimModemConfig {
        index_base: 1,
        ..SimModemConfig::default()
    });
    rig.send("AT+CNMI=2,1\r");
    assert_eq!(rig.receive("+4912345", "one"), "\r\n+CMTI: \"SM\",1\r\n");
    assert!(rig.send("AT+CMGR=1\r").starts_with("\r\n+CMGR: 0,,"));
    rig.send("AT+CMEE=1\r");
    assert_eq!(rig.send("AT+CMGR=0\r"), "\r\n+CMS ERROR: 321\r\n");
}

#[test]
fn cmgd_deletes_one_read_or_all() {
    let mut rig = Rig::new(SimModemConfig::default());
    for i in 0..4 {
        rig.receive("+4912345", &format!("message {i}"));
    }
    assert_eq!(rig.send("AT+CMGD=1\r"), OK);
    assert_eq!(rig.send("AT+CMGR=1\r"), OK);
    assert_eq!(rig.core.stored_messages(), 3);
    // Deleting an empty slot is fine.
    assert_eq!(rig.send("AT+CMGD=1\r"), OK);
    // Flag 1 deletes read messages only.
    rig.send("AT+CMGR=0\r");
    assert_eq!(rig.send("AT+CMGD=0,1\r"), OK);
    assert_eq!(rig.core.stored_messages(), 2);
    // A new message takes the lowest free slot.
    rig.send("AT+CNMI=2,1\r");
    assert_eq!(rig.receive("+4912345", "again"), "\r\n+CMTI: \"SM\",0\r\n");
    assert_eq!(rig.send("AT+CMGD=0,4\r"), OK);
    assert_eq!(rig.core.stored_messages(), 0);
    assert_eq!(rig.send("AT+CMGL=4\r"), OK);
}

#[test]
fn full_storage_refuses_silently() {
    let mut rig = Rig::new(SimModemConfig {
        storage_capacity: 2,
        ..SimModemConfig::default()
    });
    rig.send("AT+CNMI=2,1\r");
    assert_eq!(rig.receive("+4912345", "a"), "\r\n+CMTI: \"SM\",0\r\n");
    assert_eq!(rig.receive("+4912345", "b"), "\r\n+CMTI: \"SM\",1\r\n");
    assert_eq!(rig.receive("+4912345", "c"), "");
    assert_eq!(rig.core.counters().refused, 1);
    assert_eq!(
        rig.send("AT+CPMS=\"SM\"\r"),
        "\r\n+CPMS: 2,2,2,2,2,2\r\n\r\nOK\r\n"
    );
    let events: Vec<SimEvent> = std::iter::from_fn(|| rig.core.poll_event()).collect();
    assert!(events.contains(&SimEvent::Refused { memory: "SM" }));
}

#[test]
fn cmt_mode_pushes_without_storing() {
    let mut rig = Rig::new(SimModemConfig::default());
    rig.send("AT+CNMI=2,2,0,0,0\r");
    let out = rig.receive("+4915112345678", "direct");
    let mut lines = out.split("\r\n");
    assert_eq!(lines.next(), Some(""));
    let header = lines.next().unwrap();
    let hex = lines.next().unwrap();
    assert_eq!(header, format!("+CMT: ,{}", hex.len() / 2 - 8));
    assert!(out.ends_with("\r\n"));
    assert_eq!(
        deliver(&pdu_lines(&out)[0]).user_data.text.as_deref(),
        Some("direct")
    );
    assert_eq!(rig.core.stored_messages(), 0);
    assert_eq!(rig.send("AT+CNMA\r"), OK);
}

#[test]
fn mt_zero_stores_silently_for_polling() {
    let mut rig = Rig::new(SimModemConfig::default());
    assert_eq!(rig.receive("+4912345", "quiet"), "");
    assert_eq!(rig.send("AT+CMGL=4\r").matches("+CMGL: 0,0,,").count(), 1);
}

// ------------------------------------------------------------------------------ reports

fn send_with_report(rig: &mut Rig, to: &str) -> u8 {
    let answer = rig.cmgs(&submit(to, "report me", true));
    answer
        .trim()
        .strip_prefix("+CMGS: ")
        .and_then(|r| r.split("\r\n").next())
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn status_report_pushed_as_cds_after_the_delay() {
    let mut rig = Rig::new(SimModemConfig {
        report_delay: Duration::from_secs(3),
        ..SimModemConfig::default()
    });
    rig.send("AT+CNMI=2,1,0,1,0\r");
    rig.cmgs(&submit("+4915112345678", "no report", false));
    let mr = send_with_report(&mut rig, "+4915112345678");
    assert_eq!(mr, 1);
    assert_eq!(
        rig.core.next_deadline(),
        Some(rig.now + Duration::from_secs(3))
    );
    assert_eq!(rig.wait(Duration::from_secs(2)), "");
    let out = rig.wait(Duration::from_secs(1));
    let hex = out.split("\r\n").nth(2).unwrap();
    assert_eq!(out, format!("\r\n+CDS: {}\r\n{hex}\r\n", hex.len() / 2 - 8));
    let r = report(&pdu_lines(&out)[0]).clone();
    assert_eq!(r.reference, 1);
    assert_eq!(r.recipient.value, "+4915112345678");
    assert_eq!(r.status, 0);
    assert_eq!(r.scts.to_rfc3339(), "2026-01-01T00:00:00+00:00");
    assert_eq!(r.discharge.to_rfc3339(), "2026-01-01T00:00:03+00:00");
    // Only one report: the first send did not ask.
    assert_eq!(rig.wait(Duration::from_secs(10)), "");
    assert_eq!(rig.core.counters().reports, 1);
    assert_eq!(rig.core.next_deadline(), None);
}

#[test]
fn status_report_stored_in_sr_and_announced_cdsi() {
    let mut rig = Rig::new(SimModemConfig::default());
    rig.send("AT+CNMI=2,1,0,2,0\r");
    let mr = send_with_report(&mut rig, "+4915112345678");
    assert_eq!(rig.wait(Duration::from_secs(1)), "\r\n+CDSI: \"SR\",0\r\n");
    // SM index 0 is empty; the report is in SR.
    assert_eq!(rig.send("AT+CMGR=0\r"), OK);
    rig.send("AT+CPMS=\"SR\"\r");
    let out = rig.send("AT+CMGR=0\r");
    assert!(out.starts_with("\r\n+CMGR: 0,,"));
    assert_eq!(report(&pdu_lines(&out)[0]).reference, mr);
    assert_eq!(rig.core.stored_reports(), 1);
    assert_eq!(rig.send("AT+CMGD=0\r"), OK);
    assert_eq!(rig.core.stored_reports(), 0);
}

#[test]
fn failed_reports_and_report_now() {
    let mut rig = Rig::new(SimModemConfig {
        report_failure_share: 1.0,
        report_delay: Duration::from_secs(3600),
        ..SimModemConfig::default()
    });
    rig.send("AT+CNMI=2,1,0,1,0\r");
    let mr = send_with_report(&mut rig, "+4915112345678");
    assert!(!rig.core.report_now(mr.wrapping_add(1), rig.now));
    assert!(rig.core.report_now(mr, rig.now));
    let out = rig.output();
    let status = report(&pdu_lines(&out)[0]).status;
    assert!(status == 0x46 || status == 0x41, "{status:#x}");
    assert!(!rig.core.report_now(mr, rig.now));
    let events: Vec<SimEvent> = std::iter::from_fn(|| rig.core.poll_event()).collect();
    assert!(events.iter().any(|e| matches!(
        e,
        SimEvent::Report { reference, status: s, .. } if *reference == mr && *s == status
    )));
}

#[test]
fn ds_zero_stores_reports_silently() {
    let mut rig = Rig::new(SimModemConfig::default());
    send_with_report(&mut rig, "+4915112345678");
    assert_eq!(rig.wait(Duration::from_secs(2)), "");
    assert_eq!(rig.core.stored_reports(), 1);
}

// ------------------------------------------------------------------------------ timing

#[test]
fn latency_delays_answers_but_not_echo() {
    let mut rig = Rig::new(SimModemConfig {
        latency: Duration::from_millis(300),
        quirks: parse_quirks("echo").unwrap(),
        ..SimModemConfig::default()
    });
    assert_eq!(rig.send("AT\r"), "AT\r");
    assert_eq!(
        rig.core.next_deadline(),
        Some(rig.now + Duration::from_millis(300))
    );
    assert_eq!(rig.wait(Duration::from_millis(299)), "");
    assert_eq!(rig.wait(Duration::from_millis(1)), OK);
    // Two commands in one write: answers in order, each after the latency.
    assert_eq!(rig.send("AT+CSQ\rAT\r"), "AT+CSQ\r");
    assert_eq!(
        rig.wait(Duration::from_millis(300)),
        format!("\r\n+CSQ: 21,99\r\n{OK}AT\r{OK}")
    );
}

#[test]
fn stalled_modem_swallows_everything() {
    let mut rig = Rig::new(SimModemConfig::default());
    rig.send("AT+CNMI=2,1\r");
    rig.core.set_stalled(true);
    assert!(rig.core.is_stalled());
    assert_eq!(rig.send("AT\r"), "");
    assert_eq!(rig.receive("+4912345", "lost announcement"), "");
    assert_eq!(rig.wait(Duration::from_secs(5)), "");
    assert_eq!(rig.core.counters().swallowed_bytes, 3);
    rig.core.set_stalled(false);
    assert_eq!(rig.send("AT\r"), OK);
    // The message itself was stored.
    assert_eq!(rig.core.stored_messages(), 1);
}

#[test]
fn cfun_reset_answers_ok_then_rdy_and_forgets_settings() {
    let mut rig = Rig::new(SimModemConfig::default());
    rig.send("ATE1\r");
    rig.send("AT+CMEE=1\r");
    rig.receive("+4912345", "survives");
    assert_eq!(rig.send("AT+CFUN=1,1\r"), "AT+CFUN=1,1\r\r\nOK\r\n");
    // Rebooting: input is lost.
    assert_eq!(rig.send("AT\r"), "");
    assert_eq!(rig.wait(Duration::from_millis(499)), "");
    assert_eq!(rig.wait(Duration::from_millis(1)), "\r\nRDY\r\n");
    // Echo off and CMEE 0 again.
    assert_eq!(rig.send("AT+CMGF=1\r"), ERROR);
    assert_eq!(rig.core.stored_messages(), 1);
    // The TP-MR counter survives.
    let pdu = submit("+4912345", "x", false);
    rig.cmgs(&pdu);
    rig.send("AT+CFUN=1,1\r");
    rig.wait(Duration::from_secs(1));
    assert_eq!(rig.cmgs(&pdu), "\r\n+CMGS: 1\r\n\r\nOK\r\n");
}

#[test]
fn reset_asks_for_the_pin_again_and_holds_urcs_until_rdy() {
    let mut rig = Rig::new(SimModemConfig {
        pin: Some("0000".into()),
        ..SimModemConfig::default()
    });
    rig.send("AT+CPIN=\"0000\"\r");
    rig.send("AT+CNMI=2,1\r");
    rig.send("AT+CFUN=1,1\r");
    // Arrives during the reboot: stored; not announced, as the reset cleared AT+CNMI.
    assert_eq!(rig.receive("+4912345", "during reboot"), "");
    assert_eq!(rig.wait(Duration::from_secs(1)), "\r\nRDY\r\n");
    assert_eq!(rig.send("AT+CPIN?\r"), "\r\n+CPIN: SIM PIN\r\n\r\nOK\r\n");
    assert_eq!(rig.core.stored_messages(), 1);
}

#[test]
fn urcs_wait_while_the_host_types_a_pdu() {
    let mut rig = Rig::new(SimModemConfig::default());
    rig.send("AT+CNMI=2,1\r");
    let pdu = submit("+4912345", "x", false);
    assert_eq!(rig.send(&format!("AT+CMGS={}\r", pdu.tpdu_len)), "\r\n> ");
    assert_eq!(rig.receive("+4912345", "meanwhile"), "");
    assert_eq!(
        rig.send(&format!("{}\x1a", pdu.to_hex())),
        "\r\n+CMGS: 0\r\n\r\nOK\r\n\r\n+CMTI: \"SM\",0\r\n"
    );
}

// ------------------------------------------------------------------------------ quirks

#[test]
fn parse_quirks_names() {
    let all = parse_quirks(&Quirks::NAMES.join(",")).unwrap();
    assert!(all.echo && all.bare_prompt && all.urc_during_send && all.direct_delivery);
    assert!(all.direct_reports && all.no_cnmi && all.cpin_without_ok);
    assert!(all.wrong_report_memory && all.sms_ready_late);
    assert_eq!(parse_quirks("").unwrap(), Quirks::default());
    assert_eq!(
        parse_quirks(" echo , BARE_PROMPT,").unwrap(),
        Quirks {
            echo: true,
            bare_prompt: true,
            ..Quirks::default()
        }
    );
    let error = parse_quirks("echo,telepathy").unwrap_err();
    assert!(
        error.contains("telepathy") && error.contains("bare-prompt"),
        "{error}"
    );
}

#[test]
fn quirk_echo_echoes_commands_and_the_pdu_after_the_prompt() {
    let mut rig = Rig::with_quirks("echo");
    let pdu = submit("+4915112345678", "Hello", false);
    let hex = pdu.to_hex();
    assert_eq!(
        rig.send(&format!("AT+CMGS={}\r", pdu.tpdu_len)),
        format!("AT+CMGS={}\r\r\n> ", pdu.tpdu_len)
    );
    // Huawei K3765: the PDU comes back on the prompt's line.
    assert_eq!(rig.send(&hex), hex);
    assert_eq!(rig.send("\x1a"), "\r\n+CMGS: 0\r\n\r\nOK\r\n");
}

#[test]
fn quirk_bare_prompt() {
    let mut rig = Rig::with_quirks("echo,bare-prompt");
    // SIMCom SIM7670G hexdump: "AT+CMGS=26\r\r\n>\r\n".
    assert_eq!(rig.send("AT+CMGS=26\r"), "AT+CMGS=26\r\r\n>\r\n");
}

#[test]
fn quirk_urc_during_send() {
    let mut rig = Rig::with_quirks("urc-during-send");
    rig.send("AT+CNMI=2,1\r");
    assert_eq!(rig.send("AT+CMGS=20\r"), "\r\n^RSSI:14\r\n\r\n> ");
    rig.send("\x1b");
    rig.receive("+4912345", "waiting");
    assert_eq!(
        rig.send("AT+CMGS=20\r"),
        "\r\n^RSSI:14\r\n\r\n+CMTI: \"SM\",0\r\n\r\n> "
    );
    // A message arriving while the host types is printed at once, too.
    assert_eq!(rig.receive("+4912345", "now"), "\r\n+CMTI: \"SM\",1\r\n");
}

#[test]
fn quirk_direct_delivery_and_reports_ignore_cnmi() {
    let mut rig = Rig::with_quirks("direct-delivery,direct-reports");
    assert!(rig.receive("+4912345", "pushed").starts_with("\r\n+CMT: ,"));
    assert_eq!(rig.core.stored_messages(), 0);
    send_with_report(&mut rig, "+4912345");
    assert!(rig.wait(Duration::from_secs(1)).starts_with("\r\n+CDS: "));
    assert_eq!(rig.core.stored_reports(), 0);
}

#[test]
fn quirk_no_cnmi_refuses_and_never_announces() {
    let mut rig = Rig::with_quirks("no-cnmi,direct-delivery");
    assert_eq!(rig.send("AT+CNMI=2,1,0,2,0\r"), ERROR);
    assert_eq!(rig.send("AT+CNMI=?\r"), ERROR);
    assert_eq!(rig.receive("+4912345", "poll me"), "");
    send_with_report(&mut rig, "+4912345");
    assert_eq!(rig.wait(Duration::from_secs(1)), "");
    assert_eq!(rig.send("AT+CMGL=4\r").matches("+CMGL:").count(), 1);
    assert_eq!(rig.core.stored_reports(), 1);
}

#[test]
fn quirk_cpin_without_ok() {
    let mut rig = Rig::with_quirks("cpin-without-ok");
    assert_eq!(rig.send("AT+CPIN?\r"), "\r\n+CPIN: READY\r\n");
    assert_eq!(rig.send("AT\r"), OK);
}

#[test]
fn quirk_wrong_report_memory() {
    let mut rig = Rig::with_quirks("wrong-report-memory");
    rig.send("AT+CNMI=2,1,0,2,0\r");
    send_with_report(&mut rig, "+4912345");
    assert_eq!(rig.wait(Duration::from_secs(1)), "\r\n+CDSI: \"SM\",0\r\n");
    // As on the EC25: SM index 0 is empty.
    assert_eq!(rig.send("AT+CMGR=0\r"), OK);
    assert_eq!(rig.core.stored_reports(), 1);
}

#[test]
fn quirk_sms_ready_late() {
    let mut rig = Rig::with_quirks("sms-ready-late");
    rig.send("AT+CMEE=1\r");
    assert_eq!(rig.send("AT+CMGF=0\r"), ERROR);
    assert_eq!(rig.send("AT+CPMS=\"SM\"\r"), ERROR);
    // Non-SMS commands work meanwhile.
    assert_eq!(rig.send("AT+CSQ\r"), "\r\n+CSQ: 21,99\r\n\r\nOK\r\n");
    assert_eq!(rig.wait(Duration::from_millis(1999)), "");
    assert_eq!(rig.wait(Duration::from_millis(1)), "\r\nSMS Ready\r\n");
    assert_eq!(rig.send("AT+CMGF=0\r"), OK);
    // Again after a reset, counted from RDY.
    rig.send("AT+CFUN=1,1\r");
    assert_eq!(rig.wait(Duration::from_millis(500)), "\r\nRDY\r\n");
    assert_eq!(rig.send("AT+CMGF=0\r"), ERROR);
    assert_eq!(rig.wait(Duration::from_secs(2)), "\r\nSMS Ready\r\n");
    assert_eq!(rig.send("AT+CMGF=0\r"), OK);
}

// ------------------------------------------------------------------------------ robustness

#[test]
fn random_garbage_never_panics() {
    let mut rng = fastrand::Rng::with_seed(0x5EED);
    let fragments: &[&[u8]] = &[
        b"AT",
        b"AT+CMGS=",
        b"AT+CMGS=23\r",
        b"AT+CMGR=",
        b"AT+CMGD=0,4\r",
        b"AT+CPMS=\"SR\",\"SM\"\r",
        b"AT+CNMI=2,2,0,1,0\r",
        b"AT+CFUN=1,1\r",
        b"AT+CMEE=2\r",
        b"ATE1\r",
        b"\"",
        b";",
        b",",
        b"=?",
        b"\x1a",
        b"\x1b",
        b"\r",
        b"\n",
        b"0791",
        b"FF",
        "é😀".as_bytes(),
        b"AT+CMGS=164\r",
        b"\xff\xfe\x00",
    ];
    for round in 0..40u64 {
        let quirks = parse_quirks(&Quirks::NAMES.join(",")).unwrap();
        let mut rig = Rig::new(SimModemConfig {
            quirks: if round % 2 == 0 {
                quirks
            } else {
                Quirks::default()
            },
            latency: Duration::from_millis(rng.u64(0..50)),
            storage_capacity: rng.usize(0..4),
            report_capacity: rng.usize(0..3),
            index_base: rng.usize(0..2),
            failure_share: 0.3,
            report_failure_share: 0.5,
            seed: round,
            pin: (round % 3 == 0).then(|| "1234".into()),
            ..SimModemConfig::default()
        });
        for _ in 0..400 {
            let mut bytes = Vec::new();
            for _ in 0..rng.usize(1..8) {
                if rng.bool() {
                    bytes.extend_from_slice(fragments[rng.usize(..fragments.len())]);
                } else {
                    bytes.extend((0..rng.usize(0..40)).map(|_| rng.u8(..)));
                }
            }
            rig.core.input(&bytes, rig.now);
            match rng.u8(0..20) {
                0 => {
                    let _ =
                        rig.core
                            .receive_sms("+4912345", &"y".repeat(rng.usize(0..400)), rig.now);
                }
                1 => rig.core.set_stalled(rng.bool()),
                2 => {
                    rig.core.report_now(rng.u8(..), rig.now);
                }
                3 => rig.core.power_cycle(rig.now),
                _ => {}
            }
            rig.now += Duration::from_millis(rng.u64(0..800));
            rig.core.tick(rig.now);
            while rig.core.poll_output().is_some() {}
            while rig.core.poll_event().is_some() {}
        }
    }
    // A line far longer than the buffer is an ERROR, not growth.
    let mut rig = Rig::new(SimModemConfig::default());
    let long = format!("AT+{}\r", "X".repeat(100_000));
    assert_eq!(rig.send(&long), ERROR);
    rig.send("AT+CMEE=1\r");
    rig.send("AT+CMGS=20\r");
    assert_eq!(
        rig.send(&format!("{}\x1a", "A".repeat(100_000))),
        "\r\n+CMS ERROR: 304\r\n"
    );
}

#[test]
fn command_parser_splits_basic_and_extended_commands() {
    let commands = parse_commands("E0V1+CMGF=0;+CPMS=\"SM\",\"a;b\";&F;+CSQ").unwrap();
    assert_eq!(commands.len(), 6);
    assert_eq!(
        commands[3],
        Command::Extended {
            name: "+CPMS".into(),
            op: Op::Set(Args(vec![("SM".into(), true), ("a;b".into(), true)])),
        }
    );
    assert_eq!(
        commands[4],
        Command::Basic {
            name: "&F".into(),
            value: None
        }
    );
    assert!(parse_commands("").unwrap().is_empty());
    assert!(parse_commands("+").is_none());
    assert!(parse_commands("E99999999999").is_none());
    assert!(parse_commands("&1").is_none());
}
