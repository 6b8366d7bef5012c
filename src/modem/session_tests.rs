use super::*;

fn ok() -> Frame {
    Frame::Final(FinalResult::Ok)
}

fn info(line: &str) -> Frame {
    Frame::Info(line.into())
}

fn urc(line: &str, urc: Urc) -> Frame {
    Frame::Urc {
        line: line.into(),
        urc,
    }
}

/// A session and a scripted modem that answers what it is written.
struct Harness {
    session: Session,
    now: Instant,
    /// Every command line and PDU written, in order (CR / Ctrl-Z stripped).
    written: Vec<String>,
    outputs: Vec<Output>,
    /// Index in `written` of the next write the script has not answered yet.
    answered: usize,
}

impl Harness {
    fn new(config: SessionConfig) -> Self {
        let now = Instant::now();
        let mut h = Harness {
            session: Session::new(config, now),
            now,
            written: Vec::new(),
            outputs: Vec::new(),
            answered: 0,
        };
        h.drain();
        h
    }

    fn drain(&mut self) {
        while let Some(o) = self.session.poll_output() {
            match o {
                Output::Write(bytes) => {
                    let text = String::from_utf8_lossy(&bytes);
                    self.written
                        .push(text.trim_end_matches(['\r', '\x1a']).to_string());
                }
                other => self.outputs.push(other),
            }
        }
    }

    fn feed(&mut self, frames: Vec<Frame>) {
        for f in frames {
            self.session.on_frame(f, self.now);
        }
        self.drain();
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.session.on_tick(self.now);
        self.drain();
    }

    /// Answers each new write with `respond` until the modem has nothing more to say. When the
    /// session waits for a timer, time is moved on to it (at most `limit` times).
    fn run(&mut self, mut respond: impl FnMut(&str) -> Vec<Frame>) {
        self.drain();
        for _ in 0..200 {
            if self.answered < self.written.len() {
                let line = self.written[self.answered].clone();
                self.answered += 1;
                let frames = respond(&line);
                self.feed(frames);
                continue;
            }
            // Nothing to answer: let a pending retry or quiet time pass, if any is close.
            match self.session.next_deadline() {
                Some(at) if at <= self.now + Duration::from_secs(5) => {
                    let wait = at.saturating_duration_since(self.now);
                    self.advance(wait);
                    if self.answered == self.written.len() {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }
}

/// A modem that knows the standard commands (answers as a Quectel/SIMCom would).
fn standard(line: &str) -> Vec<Frame> {
    match line {
        "AT+CPIN?" => vec![info("+CPIN: READY"), ok()],
        "AT+CGMI" => vec![info("QUECTEL"), ok()],
        "AT+CGMM" => vec![info("EC25"), ok()],
        "AT+CGMR" => vec![info("Revision: EC25EFAR06A10M4G"), ok()],
        "AT+CGSN" => vec![info("867962040000000"), ok()],
        l if l.starts_with("AT+CPMS=") => vec![info("+CPMS: 0,50,0,50,0,50"), ok()],
        "AT+CSQ" => vec![info("+CSQ: 20,99"), ok()],
        "AT+CREG?" => vec![
            urc(
                "+CREG: 0,1",
                Urc::Registration {
                    stat: Some(0),
                    lac: None,
                    cell: None,
                    act: None,
                },
            ),
            ok(),
        ],
        "AT+COPS?" => vec![info("+COPS: 0,0,\"vodafone IT\",7"), ok()],
        "AT+CMGL=4" => vec![ok()],
        _ => vec![ok()],
    }
}

fn ready_harness() -> Harness {
    ready_harness_with(SessionConfig::default())
}

fn ready_harness_with(config: SessionConfig) -> Harness {
    let mut h = Harness::new(config);
    h.run(standard);
    assert!(h.session.is_ready(), "written: {:?}", h.written);
    h.take_outputs();
    h
}

#[test]
fn initialises_in_order_and_reports_what_the_modem_is() {
    let mut h = Harness::new(SessionConfig::default());
    h.run(standard);
    let commands: Vec<&str> = h.written.iter().map(String::as_str).collect();
    assert_eq!(
        &commands[..13],
        [
            "AT",
            "ATE0",
            "AT+CMEE=1",
            "AT+CPIN?",
            "AT+CGMI",
            "AT+CGMM",
            "AT+CGMR",
            "AT+CGSN",
            "AT+CMGF=0",
            "AT+CPMS=\"SM\",\"SM\",\"SM\"",
            "AT+CNMI=2,1,0,2,0",
            "AT+COPS=3,0",
            // Ready: health first, then the sweep of what arrived while nobody listened.
            "AT+CSQ",
        ]
    );
    assert!(commands.contains(&"AT+CMGL=4"));
    assert!(h.outputs.contains(&Output::Ready));
    let info = h.session.info();
    assert_eq!(info.model.as_deref(), Some("EC25"));
    assert_eq!(info.manufacturer.as_deref(), Some("QUECTEL"));
    assert_eq!(info.sim.as_deref(), Some("READY"));
    assert_eq!(info.signal_rssi, Some(20));
    assert_eq!(info.signal_dbm, Some(-73));
    // "+CREG: 0,1" answered AT+CREG? although the parser took it for a URC.
    assert_eq!(info.registration.as_deref(), Some("home"));
    assert_eq!(info.operator.as_deref(), Some("vodafone IT"));
    assert_eq!(info.storage.as_deref(), Some("SM 0/50"));
    assert_eq!(info.new_message_mode.as_deref(), Some("indications"));
}

#[test]
fn sends_a_part_and_records_its_reference() {
    let mut h = ready_harness();
    assert!(h.session.can_send());
    h.session.send(
        7,
        "0011000B911326880736F40000A90BC8329BFD06".into(),
        19,
        h.now,
    );
    h.drain();
    assert!(!h.session.can_send());
    assert_eq!(h.written.last().unwrap(), "AT+CMGS=19");
    h.feed(vec![Frame::Prompt]);
    assert_eq!(
        h.written.last().unwrap(),
        "0011000B911326880736F40000A90BC8329BFD06"
    );
    h.feed(vec![info("+CMGS: 64"), ok()]);
    assert_eq!(
        h.take_outputs(),
        vec![Output::Sent {
            token: 7,
            reference: 64
        }]
    );
    assert!(h.session.can_send());
}

#[test]
fn a_new_message_indication_during_the_prompt_is_read_after_the_send() {
    let mut h = ready_harness();
    h.session.send(1, "00AA".into(), 1, h.now);
    h.drain();
    // The URC lands between AT+CMGS and its prompt (Huawei noise does this too).
    h.feed(vec![
        urc(
            "+CMTI: \"SM\",3",
            Urc::NewMessage {
                memory: "SM".into(),
                index: 3,
            },
        ),
        urc("^RSSI:14", Urc::Signal(14)),
        Frame::Prompt,
    ]);
    assert_eq!(h.written.last().unwrap(), "00AA");
    h.feed(vec![info("+CMGS: 5"), ok()]);
    assert_eq!(h.written.last().unwrap(), "AT+CMGR=3");
    let pdu = "07913366003051F5040B913366304381F900005180719120348004D4F29C0E";
    h.feed(vec![info("+CMGR: 0,,23"), info(pdu), ok()]);
    let outputs = h.take_outputs();
    assert!(outputs.contains(&Output::Sent {
        token: 1,
        reference: 5
    }));
    let slot = Slot::Stored {
        memory: "SM".into(),
        index: 3,
    };
    assert!(outputs.contains(&Output::Received {
        pdu: pdu.into(),
        slot: slot.clone()
    }));
    // Deleted only once committed.
    assert_ne!(h.written.last().unwrap(), "AT+CMGD=3");
    h.session.acknowledge(slot, true, h.now);
    h.drain();
    assert_eq!(h.written.last().unwrap(), "AT+CMGD=3");
}

#[test]
fn an_uncommitted_message_stays_in_the_modem_and_is_read_again() {
    let mut h = ready_harness();
    let pdu = "07913366003051F5040B913366304381F900005180719120348004D4F29C0E";
    // A modem with one message in SM and none in SR.
    let mut in_sr = false;
    let mut listing = move |line: &str| {
        if line.starts_with("AT+CPMS=") {
            in_sr = line.starts_with("AT+CPMS=\"SR\"");
        }
        match line {
            "AT+CMGL=4" if !in_sr => vec![info("+CMGL: 0,0,,23"), info(pdu), ok()],
            other => standard(other),
        }
    };
    h.advance(SessionConfig::default().sweep_interval);
    h.run(&mut listing);
    let slot = Slot::Stored {
        memory: "SM".into(),
        index: 0,
    };
    let received = |o: &Vec<Output>| {
        o.iter()
            .filter(|o| matches!(o, Output::Received { .. }))
            .count()
    };
    assert_eq!(received(&h.take_outputs()), 1);
    // A second sweep while the commit is pending does not hand it out twice.
    h.advance(SessionConfig::default().sweep_interval);
    h.run(&mut listing);
    assert_eq!(received(&h.take_outputs()), 0);
    h.session.acknowledge(slot, false, h.now);
    h.advance(SessionConfig::default().sweep_interval);
    h.run(&mut listing);
    assert_eq!(received(&h.take_outputs()), 1);
    assert!(!h.written.iter().any(|w| w.starts_with("AT+CMGD")));
}

#[test]
fn a_message_stays_pending_until_its_delete_is_done() {
    let mut h = ready_harness();
    let pdu = "07913366003051F5040B913366304381F900005180719120348004D4F29C0E";
    h.feed(vec![urc(
        "+CMTI: \"SM\",0",
        Urc::NewMessage {
            memory: "SM".into(),
            index: 0,
        },
    )]);
    h.run(|line| match line {
        "AT+CMGR=0" => vec![info("+CMGR: 0,,23"), info(pdu), ok()],
        other => standard(other),
    });
    let slot = Slot::Stored {
        memory: "SM".into(),
        index: 0,
    };
    h.session.acknowledge(slot.clone(), true, h.now);
    h.drain();
    assert_eq!(h.written.last().unwrap(), "AT+CMGD=0");
    // Before the delete's OK: a new message is announced at the same index, and a sweep lists
    // the old one still there. Neither is handed out now.
    h.feed(vec![urc(
        "+CMTI: \"SM\",0",
        Urc::NewMessage {
            memory: "SM".into(),
            index: 0,
        },
    )]);
    h.take_outputs();
    h.feed(vec![ok()]);
    // The delete is done: the new message at index 0 is read.
    assert_eq!(h.written.last().unwrap(), "AT+CMGR=0");
    h.feed(vec![info("+CMGR: 0,,23"), info(pdu), ok()]);
    assert!(
        h.take_outputs()
            .iter()
            .any(|o| matches!(o, Output::Received { slot: s, .. } if *s == slot))
    );
}

#[test]
fn a_wavecom_pin_answer_without_ok_still_completes() {
    let mut h = Harness::new(SessionConfig::default());
    h.run(|line| match line {
        // No final result, as the Wavecom MULTIBAND 900E does.
        "AT+CPIN?" => vec![info("+CPIN: READY")],
        other => standard(other),
    });
    assert!(h.session.is_ready(), "{:?}", h.written);
}

#[test]
fn a_bare_ok_to_the_pin_query_is_asked_again_not_taken_for_an_unusable_sim() {
    // A late OK meant for a command of the port's previous owner (killed mid-command).
    let mut h = Harness::new(SessionConfig::default());
    let mut first = true;
    h.run(|line| match line {
        "AT+CPIN?" if std::mem::take(&mut first) => vec![ok()],
        other => standard(other),
    });
    assert!(h.session.is_ready(), "{:?}", h.written);
    assert_eq!(h.written.iter().filter(|w| *w == "AT+CPIN?").count(), 2);
    assert!(!h.outputs.iter().any(|o| matches!(o, Output::Blocked(_))));
}

#[test]
fn a_pin_is_entered_once_and_a_refusal_blocks_without_retrying() {
    let config = SessionConfig {
        pin: Some("1234".into()),
        ..SessionConfig::default()
    };
    let mut h = Harness::new(config);
    h.run(|line| match line {
        "AT+CPIN?" => vec![info("+CPIN: SIM PIN"), ok()],
        "AT+CPIN=\"1234\"" => vec![Frame::Final(FinalResult::CmeError(ErrorCode::Number(16)))],
        other => standard(other),
    });
    assert!(!h.session.is_ready());
    let tries = h
        .written
        .iter()
        .filter(|w| w.starts_with("AT+CPIN="))
        .count();
    assert_eq!(tries, 1);
    assert!(
        h.outputs
            .iter()
            .any(|o| matches!(o, Output::Blocked(why) if why.contains("PIN")))
    );
}

#[test]
fn a_sim_asking_for_a_pin_nobody_configured_blocks() {
    let mut h = Harness::new(SessionConfig::default());
    h.run(|line| match line {
        "AT+CPIN?" => vec![info("+CPIN: SIM PIN"), ok()],
        other => standard(other),
    });
    assert!(!h.written.iter().any(|w| w.starts_with("AT+CPIN=")));
    assert!(
        h.outputs
            .iter()
            .any(|o| matches!(o, Output::Blocked(why) if why.contains("modem.pin")))
    );
}

#[test]
fn sms_commands_refused_before_sms_ready_are_retried() {
    let mut refusals = 2;
    let mut h = Harness::new(SessionConfig::default());
    h.run(|line| match line {
        "AT+CMGF=0" if refusals > 0 => {
            refusals -= 1;
            vec![Frame::Final(FinalResult::Error)]
        }
        other => standard(other),
    });
    assert!(h.session.is_ready());
    assert_eq!(h.written.iter().filter(|w| *w == "AT+CMGF=0").count(), 3);
}

#[test]
fn without_new_message_indications_it_polls() {
    let mut h = Harness::new(SessionConfig::default());
    h.run(|line| match line {
        l if l.starts_with("AT+CNMI") => vec![Frame::Final(FinalResult::Error)],
        other => standard(other),
    });
    assert!(h.session.is_ready());
    assert_eq!(
        h.session.info().new_message_mode.as_deref(),
        Some("polling")
    );
    let lists = |h: &Harness| h.written.iter().filter(|w| *w == "AT+CMGL=4").count();
    let before = lists(&h);
    h.advance(SessionConfig::default().poll_interval);
    h.run(standard);
    // The storage and the status-report memory.
    assert_eq!(lists(&h), before + 2);
    assert!(
        h.written
            .iter()
            .any(|w| w == "AT+CPMS=\"SR\",\"SM\",\"SM\"")
    );
}

#[test]
fn storage_falls_back_to_shorter_forms() {
    let mut h = Harness::new(SessionConfig::default());
    h.run(|line| match line {
        "AT+CPMS=\"SM\",\"SM\",\"SM\"" => vec![Frame::Final(FinalResult::Error)],
        other => standard(other),
    });
    assert!(h.written.iter().any(|w| w == "AT+CPMS=\"SM\",\"SM\""));
    assert!(h.session.is_ready());
}

#[test]
fn a_timeout_resyncs_and_a_late_answer_is_not_taken_for_the_next_command() {
    // No periodic work in the way of the commands this test watches.
    let mut h = ready_harness_with(SessionConfig {
        health_interval: Duration::from_secs(3600),
        sweep_interval: Duration::from_secs(3600),
        ..SessionConfig::default()
    });
    h.session.send(9, "00AA".into(), 1, h.now);
    h.drain();
    h.feed(vec![Frame::Prompt]);
    // No answer: the send times out and is reported.
    h.advance(SessionConfig::default().send_timeout);
    assert!(h.take_outputs().contains(&Output::SendFailed {
        token: 9,
        error: SendError::Timeout
    }));
    assert_eq!(h.written.last().unwrap(), "AT");
    // The late answer of the send arrives now, then the resync's own OK.
    h.feed(vec![info("+CMGS: 3"), ok(), ok()]);
    assert!(
        !h.outputs.iter().any(|o| matches!(o, Output::Sent { .. })),
        "a late answer must not count as a send"
    );
    // The next command waits for quiet; a reading taken right now would be wrong.
    h.session.raw(77, "AT+CSQ".into(), h.now);
    h.drain();
    assert_ne!(h.written.last().unwrap(), "AT+CSQ");
    h.advance(Duration::from_millis(400));
    assert_eq!(h.written.last().unwrap(), "AT+CSQ");
    h.feed(vec![info("+CSQ: 11,99"), ok()]);
    assert!(h.take_outputs().contains(&Output::RawDone {
        token: 77,
        lines: vec!["+CSQ: 11,99".into()],
        result: Some(FinalResult::Ok)
    }));
}

#[test]
fn a_silent_modem_is_declared_unresponsive() {
    let mut h = ready_harness();
    for _ in 0..5 {
        h.session.raw(1, "AT+CSQ".into(), h.now);
        h.drain();
        h.advance(Duration::from_secs(11));
        h.advance(Duration::from_secs(3));
    }
    assert!(h.outputs.contains(&Output::Unresponsive));
}

#[test]
fn a_modem_that_never_answers_at_start_is_unresponsive() {
    let mut h = Harness::new(SessionConfig::default());
    for _ in 0..ATTENTION_TRIES {
        h.advance(ATTENTION_TIMEOUT);
    }
    assert!(h.outputs.contains(&Output::Unresponsive));
    // Each try after the first is preceded by ESC, for a modem left at a send prompt.
    let mut expected = vec!["AT".to_string()];
    for _ in 1..ATTENTION_TRIES {
        expected.extend(["\x1b".to_string(), "AT".to_string()]);
    }
    assert_eq!(h.written, expected);
}

#[test]
fn a_modem_left_at_the_send_prompt_is_freed_with_esc_and_its_second_ok_answers_nothing() {
    let mut h = Harness::new(SessionConfig::default());
    // The first AT is taken as PDU text: no answer.
    h.advance(ATTENTION_TIMEOUT);
    assert_eq!(h.written, ["AT", "\x1b", "AT"]);
    // OK for the abandoned message, then OK for the AT, in one read.
    h.feed(vec![ok(), ok()]);
    h.advance(RESYNC_QUIET);
    // The next step went out after the quiet time and waits for its own answer.
    assert_eq!(h.written, ["AT", "\x1b", "AT", "ATE0"]);
    h.feed(vec![ok()]);
    assert_eq!(h.written.len(), 5, "{:?}", h.written);
}

#[test]
fn pushed_status_reports_are_acknowledged_after_commit() {
    let mut h = ready_harness();
    let pdu = "079119890400202306400C91197909913764511090718384225110907183252200";
    h.feed(vec![urc(
        "+CDS: 25",
        Urc::StatusReport {
            length: Some(25),
            pdu: Some(pdu.into()),
        },
    )]);
    assert_eq!(
        h.take_outputs(),
        vec![Output::Report {
            pdu: pdu.into(),
            slot: Slot::Direct
        }]
    );
    h.session.acknowledge(Slot::Direct, true, h.now);
    h.drain();
    assert_eq!(h.written.last().unwrap(), "AT+CNMA");
}

#[test]
fn a_report_announced_in_the_wrong_memory_is_read_from_sr() {
    let mut h = ready_harness();
    let report = "079119890400202306400C91197909913764511090718384225110907183252200";
    h.feed(vec![urc(
        "+CDSI: \"SM\",0",
        Urc::NewStatusReport {
            memory: "SM".into(),
            index: 0,
        },
    )]);
    let mut in_sr = false;
    h.run(|line| {
        if line.starts_with("AT+CPMS=") {
            in_sr = line.starts_with("AT+CPMS=\"SR\"");
        }
        match line {
            // Quectel EC25: SM index 0 is empty; the report is in SR.
            "AT+CMGR=0" if in_sr => vec![info("+CMGR: ,,25"), info(report), ok()],
            "AT+CMGR=0" => vec![ok()],
            other => standard(other),
        }
    });
    let slot = Slot::Stored {
        memory: "SR".into(),
        index: 0,
    };
    assert!(
        h.take_outputs().contains(&Output::Report {
            pdu: report.into(),
            slot: slot.clone()
        }),
        "{:?}",
        h.written
    );
    // Reading there left the storage as configured.
    assert_eq!(h.written.last().unwrap(), "AT+CPMS=\"SM\",\"SM\",\"SM\"");
    h.session.acknowledge(slot, true, h.now);
    h.run(standard);
    let n = h.written.len();
    assert_eq!(
        h.written[n - 3..],
        [
            "AT+CPMS=\"SR\",\"SM\",\"SM\"",
            "AT+CMGD=0",
            "AT+CPMS=\"SM\",\"SM\",\"SM\""
        ]
    );
}

#[test]
fn a_refused_memory_selection_never_reads_or_deletes_elsewhere() {
    let mut h = ready_harness();
    h.advance(SessionConfig::default().sweep_interval);
    let pdu = "07913366003051F5040B913366304381F900005180719120348004D4F29C0E";
    // This modem has no SR memory: the listing that follows the refused selection would list
    // SM again and hand its messages out as if they were in SR.
    h.run(|line| match line {
        "AT+CPMS=\"SR\",\"SM\",\"SM\"" => vec![Frame::Final(FinalResult::Error)],
        "AT+CMGL=4" => vec![info("+CMGL: 0,0,,23"), info(pdu), ok()],
        other => standard(other),
    });
    let received: Vec<&Output> = h
        .outputs
        .iter()
        .filter(|o| matches!(o, Output::Received { .. }))
        .collect();
    assert_eq!(
        received,
        [&Output::Received {
            pdu: pdu.into(),
            slot: Slot::Stored {
                memory: "SM".into(),
                index: 0
            }
        }]
    );
    // And it is not asked for SR again at the next sweep.
    let selections = |h: &Harness| {
        h.written
            .iter()
            .filter(|w| w.starts_with("AT+CPMS=\"SR\""))
            .count()
    };
    let before = selections(&h);
    h.advance(SessionConfig::default().sweep_interval);
    h.run(standard);
    assert_eq!(selections(&h), before);
}

#[test]
fn stored_outgoing_messages_are_left_alone() {
    let mut h = ready_harness();
    h.advance(SessionConfig::default().sweep_interval);
    h.run(|line| match line {
        "AT+CMGL=4" => vec![
            info("+CMGL: 1,2,,20"),
            info("0011000B911326880736F40000A90BC8329BFD06"),
            ok(),
        ],
        other => standard(other),
    });
    assert!(
        !h.outputs
            .iter()
            .any(|o| matches!(o, Output::Received { .. }))
    );
}

#[test]
fn a_cmti_without_index_triggers_a_sweep() {
    let mut h = ready_harness();
    let lists = h.written.iter().filter(|w| *w == "AT+CMGL=4").count();
    h.feed(vec![urc(
        "+CMTI: ,-1",
        Urc::NewMessage {
            memory: String::new(),
            index: -1,
        },
    )]);
    assert_eq!(
        h.written.iter().filter(|w| *w == "AT+CMGL=4").count(),
        lists + 1
    );
}

#[test]
fn a_restart_is_noticed_but_huawei_keepalives_are_not_restarts() {
    let mut h = ready_harness();
    h.feed(vec![
        urc(
            "^BOOT:20952570,0,0,0,72",
            Urc::HuaweiBoot("20952570,0,0,0,72".into()),
        ),
        urc("^RSSI:14", Urc::Signal(14)),
    ]);
    assert!(!h.outputs.contains(&Output::Unresponsive));
    assert_eq!(h.session.info().signal_rssi, Some(14));
    h.feed(vec![urc("RDY", Urc::Ready)]);
    assert!(h.outputs.contains(&Output::Unresponsive));
}

#[test]
fn cms_errors_are_classified() {
    let rejected = |n| SendError::Rejected(FinalResult::CmsError(ErrorCode::Number(n)));
    assert!(rejected(1).is_permanent());
    assert!(rejected(304).is_permanent());
    assert!(!rejected(42).is_permanent());
    assert!(!rejected(331).is_permanent());
    assert!(!SendError::Timeout.is_permanent());
    assert!(!SendError::Rejected(FinalResult::Error).is_permanent());
}

#[test]
fn helpers_read_modem_answers() {
    assert_eq!(cmgs_reference("+CMGS: 64"), Some(64));
    assert_eq!(cmgs_reference("+CMGS:300"), Some(44));
    assert_eq!(answer_prefix("AT+CPMS=\"SM\""), Some("+CPMS:".into()));
    assert_eq!(answer_prefix("at^sysinfo"), Some("^SYSINFO:".into()));
    assert_eq!(answer_prefix("ATE0"), None);
    assert!(pdu_is_status_report(
        "079119890400202306400C91197909913764511090718384225110907183252200"
    ));
    assert!(!pdu_is_status_report(
        "07913366003051F5040B913366304381F900005180719120348004D4F29C0E"
    ));
    assert!(!pdu_is_status_report("zz"));
    assert_eq!(
        identification(&["+CGMR: Revision: X".into()]).as_deref(),
        Some("Revision: X")
    );
    assert_eq!(
        identification(&[" MULTIBAND  900E  1800 ".into()]).as_deref(),
        Some("MULTIBAND  900E  1800")
    );
}

/// One host command of a transcript and what the modem said until the next one.
#[derive(Debug, Default)]
struct Exchange {
    command: Option<String>,
    /// `<<` entries: answers (and echoes).
    answers: Vec<Vec<u8>>,
    /// Every modem byte, `<<` and `!!`, in order.
    modem: Vec<u8>,
}

fn exchanges(name: &str) -> Vec<Exchange> {
    use crate::codec::at::tests::{entry_bytes, read_transcript, unescape};
    let mut out = vec![Exchange::default()];
    for line in read_transcript(name).lines() {
        if let Some(host) = line.strip_prefix(">> ") {
            let host = host.split(" ##").next().unwrap_or("").trim_end();
            let bytes = unescape(host);
            let text = String::from_utf8_lossy(&bytes).to_string();
            // The PDU (and its Ctrl-Z) belongs to the AT+CMGS before it.
            if text.ends_with('\x1a') || text.trim().is_empty() {
                continue;
            }
            let command = text.trim_start_matches('\x1b').trim_end_matches('\r');
            out.push(Exchange {
                command: Some(command.to_string()),
                ..Exchange::default()
            });
        } else if let Some(answer) = line.strip_prefix("<< ") {
            let bytes = entry_bytes(answer);
            let last = out.last_mut().unwrap();
            last.modem.extend_from_slice(&bytes);
            last.answers.push(bytes);
        } else if let Some(urc) = line.strip_prefix("!! ") {
            out.last_mut().unwrap().modem.extend(entry_bytes(urc));
        }
    }
    out
}

/// Every transcript replays through the session: each command gets exactly the answer lines
/// and final result the modem gave it, never a URC line or another command's answer.
#[test]
fn transcripts_replay_without_a_wrong_match() {
    use crate::codec::at::tests::TRANSCRIPTS;
    use crate::codec::at::{AtDecoder, Frame};
    let mut checked = 0;
    for name in TRANSCRIPTS {
        let mut now = Instant::now();
        let config = SessionConfig::default();
        let mut session = Session::ready_for_replay(config.clone(), now);
        let mut decoder = AtDecoder::new();
        for (token, exchange) in exchanges(name).into_iter().enumerate() {
            let token = token as u64;
            let is_send = exchange
                .command
                .as_deref()
                .is_some_and(|c| c.to_ascii_uppercase().starts_with("AT+CMGS="));
            match &exchange.command {
                Some(c) if is_send => session.send(token, "0011".into(), 1, now),
                Some(c) => session.raw(token, c.clone(), now),
                None => {}
            }
            decoder.push(&exchange.modem);
            let mut finals = Vec::new();
            while let Some(frame) = decoder.next_frame() {
                if let Frame::Final(f) = &frame {
                    finals.push(f.clone());
                }
                session.on_frame(frame, now);
            }
            // Commands without a final result in the source run into their timeout.
            let mut outputs: Vec<Output> = std::iter::from_fn(|| session.poll_output()).collect();
            let answered = |o: &Output| match o {
                Output::RawDone { token: t, .. }
                | Output::Sent { token: t, .. }
                | Output::SendFailed { token: t, .. } => *t == token,
                _ => false,
            };
            if exchange.command.is_some() && !outputs.iter().any(answered) {
                now += config.send_timeout.max(config.command_timeout);
                session.on_tick(now);
                // Answer the resync that follows a timeout, then let the line go quiet.
                session.on_frame(Frame::Final(FinalResult::Ok), now);
                now += Duration::from_secs(1);
                session.on_tick(now);
                outputs.extend(std::iter::from_fn(|| session.poll_output()));
            }
            // A URC in the exchange may make the session read or list on its own; then that
            // command is first in line and takes the modem's answer (rightly), and ours waits.
            let own_command = outputs.iter().any(|o| match o {
                Output::Write(w) => {
                    let w = String::from_utf8_lossy(w);
                    w.starts_with("AT")
                        && Some(w.trim_end()) != exchange.command.as_deref()
                        && !is_send
                }
                _ => false,
            });
            let done: Vec<&Output> = outputs.iter().filter(|o| answered(o)).collect();
            if exchange.command.is_none() {
                assert!(done.is_empty(), "{name}: answer without command: {done:?}");
                continue;
            }
            assert_eq!(done.len(), 1, "{name} {:?}: {outputs:?}", exchange.command);
            let answer_text: Vec<String> = exchange
                .answers
                .iter()
                .map(|a| String::from_utf8_lossy(a).to_string())
                .collect();
            match done[0] {
                Output::RawDone { result: None, .. } if own_command => continue,
                Output::RawDone { lines, result, .. } => {
                    for line in lines {
                        assert!(
                            answer_text.iter().any(|a| a.contains(line.as_str())),
                            "{name} {:?}: {line:?} is not part of its answer",
                            exchange.command
                        );
                    }
                    assert_eq!(
                        result.as_ref(),
                        finals.first(),
                        "{name} {:?}",
                        exchange.command
                    );
                }
                Output::Sent { .. } => assert_eq!(finals.first(), Some(&FinalResult::Ok)),
                Output::SendFailed { error, .. } => match error {
                    SendError::Rejected(r) => assert_eq!(Some(r), finals.first()),
                    _ => assert!(finals.is_empty(), "{name}: {finals:?}"),
                },
                _ => unreachable!(),
            }
            checked += 1;
        }
        let _ = session.info();
    }
    eprintln!("{checked} exchanges checked");
    assert!(checked >= 40, "only {checked} exchanges checked");
}
