//! The simulated modem without I/O: bytes in, bytes out, time passed in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::codec::gsm7::{self, Gsm7Error};
use crate::codec::tpdu::{
    self, Concat, DeliverSpec, EncodedPdu, Pdu, StatusReportSpec, Timestamp, TpduError,
};

/// Longest command line kept; a longer one is answered `ERROR` (a fuzzy host cannot grow memory).
const MAX_LINE: usize = 1024;
/// Most hex digits kept after the `AT+CMGS` prompt (an SCA of 12 octets plus a 164-octet TPDU
/// is 352 digits; the rest is headroom for junk a host may add).
const MAX_PDU_HEX: usize = 1024;
/// Most entries kept in `sent()` and in the undrained event queue; older ones are dropped so a
/// long soak does not grow without bound.
const MAX_RECORDS: usize = 10_000;
/// Most parts a received text may need.
const MAX_RECEIVE_PARTS: usize = 255;
/// 2026-01-01T00:00:00Z: the wall clock of a core whose config names none, so tests are
/// reproducible.
const DEFAULT_CLOCK_START: i64 = 1_767_225_600;
/// Status of a delivered message (TS 23.040 §9.2.3.15).
const STATUS_DELIVERED: u8 = 0x00;
/// Failure statuses drawn for `report_failure_share`: validity period expired, incompatible
/// destination.
const STATUS_FAILED: [u8; 2] = [0x46, 0x41];

/// Commands that need the SMS part of the firmware (refused before "SMS Ready").
const SMS_COMMANDS: &[&str] = &[
    "+CMGF", "+CPMS", "+CNMI", "+CSMS", "+CSCA", "+CSMP", "+CMGS", "+CMGR", "+CMGL", "+CMGD",
    "+CNMA", "+CMGW", "+CMSS",
];
/// SMS commands that touch the SIM or network and so fail while the SIM wants its PIN.
const SIM_COMMANDS: &[&str] = &[
    "+CPMS", "+CSCA", "+CMGS", "+CMGR", "+CMGL", "+CMGD", "+CMGW", "+CMSS",
];

/// Device behaviours of real modems (see `shared/corpus/modem-quirks.md`), each off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct Quirks {
    /// Echo on after start and reset: every command line and the PDU come back (Huawei, SIMCom).
    pub echo: bool,
    /// Prompt `\r\n>\r\n` without the space (SIMCom SIM7670G).
    pub bare_prompt: bool,
    /// `^RSSI:14` and a `+CMTI` for a waiting message between `AT+CMGS=` and the prompt (Huawei).
    pub urc_during_send: bool,
    /// New messages pushed as `+CMT` whatever `AT+CNMI` said.
    pub direct_delivery: bool,
    /// Status reports pushed as `+CDS` whatever `AT+CNMI` said.
    pub direct_reports: bool,
    /// `AT+CNMI` is refused and nothing is ever announced: the host must poll (Nokia N79).
    pub no_cnmi: bool,
    /// `+CPIN: READY` without the final `OK` (Wavecom).
    pub cpin_without_ok: bool,
    /// Reports stored in `SR` but announced as `+CDSI: "SM",<i>` (Quectel EC25).
    pub wrong_report_memory: bool,
    /// SMS commands answer `ERROR` until `SMS Ready`, printed a while after start or reset
    /// (SIMCom SIM800).
    pub sms_ready_late: bool,
}

impl Quirks {
    /// The names [`parse_quirks`] takes, in the order of the fields.
    pub const NAMES: [&'static str; 9] = [
        "echo",
        "bare-prompt",
        "urc-during-send",
        "direct-delivery",
        "direct-reports",
        "no-cnmi",
        "cpin-without-ok",
        "wrong-report-memory",
        "sms-ready-late",
    ];

    /// Switches one quirk by name (`-` or `_` between words, any case); false when unknown.
    pub fn set(&mut self, name: &str, on: bool) -> bool {
        let flag = match name.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "echo" => &mut self.echo,
            "bare-prompt" => &mut self.bare_prompt,
            "urc-during-send" => &mut self.urc_during_send,
            "direct-delivery" => &mut self.direct_delivery,
            "direct-reports" => &mut self.direct_reports,
            "no-cnmi" => &mut self.no_cnmi,
            "cpin-without-ok" => &mut self.cpin_without_ok,
            "wrong-report-memory" => &mut self.wrong_report_memory,
            "sms-ready-late" => &mut self.sms_ready_late,
            _ => return false,
        };
        *flag = on;
        true
    }
}

/// Quirks from a comma list such as `"echo,bare-prompt"`; empty items are skipped, an unknown
/// name is an error that lists the known ones.
pub fn parse_quirks(list: &str) -> Result<Quirks, String> {
    let mut quirks = Quirks::default();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !quirks.set(name, true) {
            return Err(format!(
                "unknown modem quirk {name:?}; known: {}",
                Quirks::NAMES.join(", ")
            ));
        }
    }
    Ok(quirks)
}

/// Settings of a simulated modem.
#[derive(Debug, Clone, PartialEq)]
pub struct SimModemConfig {
    /// Delay before each answer to a command (echo is immediate, as on a real UART).
    pub latency: Duration,
    /// Device behaviours to imitate.
    pub quirks: Quirks,
    /// SIM PIN; `AT+CPIN?` says `SIM PIN` until `AT+CPIN="<pin>"` (again after each reset).
    pub pin: Option<String>,
    /// Slots of the `SM` memory (received messages).
    pub storage_capacity: usize,
    /// Slots of the `SR` memory (status reports).
    pub report_capacity: usize,
    /// Index of the first slot: 0 like Huawei and Quectel, 1 like SIMCom.
    pub index_base: usize,
    /// Time from an accepted SUBMIT that asked for a report to its status report.
    pub report_delay: Duration,
    /// Share (0..=1) of status reports that say "failed" (0x46 or 0x41).
    pub report_failure_share: f64,
    /// Share (0..=1) of sends answered `+CMS ERROR: 38` (network out of order, transient).
    pub failure_share: f64,
    /// Seed of the generator behind every random choice, so runs repeat.
    pub seed: u64,
    /// Service centre put in front of DELIVER and STATUS-REPORT PDUs (`None` writes `00`), and
    /// what `AT+CSCA?` shows.
    pub smsc: Option<String>,
    /// What `AT+CGSN` prints.
    pub imei: String,
    /// Time from `AT+CFUN=1,1` to `RDY`; input is ignored meanwhile.
    pub reset_delay: Duration,
    /// How long after start or `RDY` `SMS Ready` comes with the `sms-ready-late` quirk.
    pub sms_ready_delay: Duration,
    /// Unix seconds at the `now` given to [`SimModemCore::new`], for TP-SCTS and TP-DT; `None`
    /// is 2026-01-01T00:00:00Z in the core (tests repeat) and the system clock in the runner.
    pub clock_start_unix: Option<i64>,
    /// Default of [`ReceiveOptions::out_of_order`].
    pub out_of_order: bool,
    /// Default of [`ReceiveOptions::duplicate`].
    pub duplicate_part: bool,
}

impl Default for SimModemConfig {
    fn default() -> Self {
        SimModemConfig {
            latency: Duration::ZERO,
            quirks: Quirks::default(),
            pin: None,
            storage_capacity: 30,
            report_capacity: 30,
            index_base: 0,
            report_delay: Duration::from_secs(1),
            report_failure_share: 0.0,
            failure_share: 0.0,
            seed: 1,
            smsc: Some("+15550000000".to_owned()),
            // The textbook example IMEI: 15 digits with a valid Luhn check digit.
            imei: "490154203237518".to_owned(),
            reset_delay: Duration::from_millis(500),
            sms_ready_delay: Duration::from_secs(2),
            clock_start_unix: None,
            out_of_order: false,
            duplicate_part: false,
        }
    }
}

/// How [`SimModemCore::receive_sms_with`] hands the parts of one text to the modem.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// Deliver the parts of a concatenated text in a shuffled order (never the original one).
    pub out_of_order: bool,
    /// Deliver one part (chosen at random) twice.
    pub duplicate: bool,
}

/// One SMS-SUBMIT the modem accepted (one part of a message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SentSms {
    /// Destination as decoded: `"+<digits>"` for international numbers.
    pub to: String,
    /// Text of this part (hex of the octets for 8-bit data).
    pub text: String,
    /// TP-MR the modem gave it (the `+CMGS: <mr>`).
    pub reference: u8,
    /// Concatenation (reference, total, sequence) from the UDH.
    pub concat: Option<(u16, u8, u8)>,
    /// TP-SRR was set.
    pub status_report_requested: bool,
}

/// What the simulated modem did, for test harnesses and the CLI (JSON: `{"event": "...", ...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SimEvent {
    /// A SUBMIT was accepted.
    Sent(SentSms),
    /// A status report was produced (pushed or stored).
    Report {
        /// TP-MR of the SUBMIT.
        reference: u8,
        /// The destination of the SUBMIT.
        recipient: String,
        /// TP-ST.
        status: u8,
    },
    /// A text arrived from the network (some parts may have been refused: storage full).
    Received {
        /// Originator.
        from: String,
        /// The whole text.
        text: String,
        /// Parts it was sent as.
        parts: usize,
    },
    /// A message or report was not stored because the memory was full.
    Refused {
        /// `"SM"` or `"SR"`.
        memory: &'static str,
    },
}

/// Running totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Command lines processed.
    pub commands: u64,
    /// Final results other than OK.
    pub errors: u64,
    /// SUBMITs accepted (`+CMGS: <mr>`).
    pub sends_accepted: u64,
    /// SUBMITs refused by injected or random failures.
    pub sends_failed: u64,
    /// Sends cancelled with ESC.
    pub sends_cancelled: u64,
    /// PDUs after the prompt that did not decode or had the wrong length (`+CMS ERROR: 304`).
    pub bad_pdus: u64,
    /// DELIVER PDUs handed to the modem (parts, duplicates included).
    pub received_parts: u64,
    /// Messages and reports stored.
    pub stored: u64,
    /// Messages and reports refused because the memory was full.
    pub refused: u64,
    /// Status reports produced.
    pub reports: u64,
    /// Input bytes ignored while stalled or rebooting.
    pub swallowed_bytes: u64,
}

/// Why a text could not be received.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReceiveError {
    /// The text cannot be split into at most 255 parts.
    #[error("text cannot be sent: {0}")]
    Text(#[from] Gsm7Error),
    /// The originator (or the configured SMSC) is not a valid address.
    #[error("cannot encode the message: {0}")]
    Encode(#[from] TpduError),
}

/// A final result other than OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    /// `ERROR` whatever `AT+CMEE` says (unknown command, syntax).
    Plain,
    /// `+CME ERROR: <n>` (TS 27.007) with `AT+CMEE=1`/`2`.
    Cme(u16),
    /// `+CMS ERROR: <n>` (TS 27.005) with `AT+CMEE=1`/`2`.
    Cms(u16),
}

/// What one command does.
enum Outcome {
    /// Information lines, then `OK` (unless more commands follow on the line).
    Ok(Vec<String>),
    /// Information lines and no final result at all (`cpin-without-ok`).
    NoFinal(Vec<String>),
    /// Final error.
    Err(Fail),
    /// `AT+CMGS=<len>`: show the prompt and read a PDU.
    Prompt(usize),
    /// `AT+CFUN=1,1`: answer OK, then reboot.
    Reset,
}

/// Memories a host can select with `AT+CPMS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mem {
    Sm,
    Sr,
}

impl Mem {
    fn name(self) -> &'static str {
        match self {
            Mem::Sm => "SM",
            Mem::Sr => "SR",
        }
    }

    /// "ME" and "MT" are taken as SM: one message memory is enough to test a gateway.
    fn parse(text: &str) -> Option<Mem> {
        match text.trim().to_ascii_uppercase().as_str() {
            "SM" | "ME" | "MT" => Some(Mem::Sm),
            "SR" => Some(Mem::Sr),
            _ => None,
        }
    }
}

/// Settings a reset (`AT+CFUN=1,1`, `ATZ`) returns to their defaults.
#[derive(Debug, Clone, Copy)]
struct Settings {
    echo: bool,
    cmee: u8,
    cnmi: [u8; 5],
    mems: [Mem; 3],
    creg: u8,
    csms: u8,
}

impl Settings {
    fn defaults(quirks: &Quirks) -> Self {
        Settings {
            echo: quirks.echo,
            cmee: 0,
            // TS 27.005 defaults: indications buffered, nothing routed to the host.
            cnmi: [0; 5],
            mems: [Mem::Sm; 3],
            creg: 0,
            csms: 0,
        }
    }

    fn mt(&self) -> u8 {
        self.cnmi.get(1).copied().unwrap_or(0)
    }

    fn ds(&self) -> u8 {
        self.cnmi.get(3).copied().unwrap_or(0)
    }
}

/// How input bytes are read.
enum InputMode {
    /// Command lines ended by CR.
    Command { line: Vec<u8>, overflow: bool },
    /// After the `AT+CMGS` prompt: hex until Ctrl-Z (send) or ESC (cancel).
    Pdu {
        expected: usize,
        hex: Vec<u8>,
        overflow: bool,
    },
}

impl InputMode {
    fn command() -> Self {
        InputMode::Command {
            line: Vec::new(),
            overflow: false,
        }
    }
}

/// A stored message or report.
#[derive(Debug, Clone)]
struct Stored {
    read: bool,
    pdu: EncodedPdu,
}

/// A status report waiting for its time.
#[derive(Debug, Clone)]
struct PendingReport {
    due: Instant,
    reference: u8,
    recipient: String,
    submitted_unix: i64,
    status: u8,
}

/// The simulated modem as a pure state machine. Feed it the host's bytes with
/// [`input`](Self::input), call [`tick`](Self::tick) at [`next_deadline`](Self::next_deadline),
/// and send what [`poll_output`](Self::poll_output) returns to the host.
pub struct SimModemCore {
    config: SimModemConfig,
    now: Instant,
    started: Instant,
    clock_start_unix: i64,
    rng: fastrand::Rng,
    settings: Settings,
    fun: u8,
    pin_ok: bool,
    mode: InputMode,
    rebooting_until: Option<Instant>,
    sms_ready_at: Option<Instant>,
    sm: Vec<Option<Stored>>,
    sr: Vec<Option<Stored>>,
    next_mr: u8,
    next_concat_ref: u8,
    reports: Vec<PendingReport>,
    fail_next: (u32, u16),
    stalled: bool,
    out: VecDeque<(Instant, Vec<u8>)>,
    held: Vec<Vec<u8>>,
    events: VecDeque<SimEvent>,
    sent: Vec<SentSms>,
    counters: Counters,
    smsc: Option<String>,
}

/// `now + d`, saturating instead of panicking on a huge configured duration.
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now)
}

impl SimModemCore {
    /// A modem switched on at `now`, with empty memories.
    pub fn new(config: SimModemConfig, now: Instant) -> Self {
        let settings = Settings::defaults(&config.quirks);
        let sms_ready_at = config
            .quirks
            .sms_ready_late
            .then(|| later(now, config.sms_ready_delay));
        SimModemCore {
            now,
            started: now,
            clock_start_unix: config.clock_start_unix.unwrap_or(DEFAULT_CLOCK_START),
            rng: fastrand::Rng::with_seed(config.seed),
            settings,
            fun: 1,
            pin_ok: config.pin.is_none(),
            mode: InputMode::command(),
            rebooting_until: None,
            sms_ready_at,
            sm: vec![None; config.storage_capacity],
            sr: vec![None; config.report_capacity],
            next_mr: 0,
            next_concat_ref: 0,
            reports: Vec::new(),
            fail_next: (0, 0),
            stalled: false,
            out: VecDeque::new(),
            held: Vec::new(),
            events: VecDeque::new(),
            sent: Vec::new(),
            counters: Counters::default(),
            smsc: config.smsc.clone(),
            config,
        }
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &SimModemConfig {
        &self.config
    }

    /// Every SUBMIT accepted so far (the oldest are dropped past 10 000).
    pub fn sent(&self) -> &[SentSms] {
        &self.sent
    }

    /// Running totals.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// True while [`set_stalled`](Self::set_stalled) holds the modem hung.
    pub fn is_stalled(&self) -> bool {
        self.stalled
    }

    /// Messages in `SM` (read or not).
    pub fn stored_messages(&self) -> usize {
        self.sm.iter().flatten().count()
    }

    /// Reports in `SR`.
    pub fn stored_reports(&self) -> usize {
        self.sr.iter().flatten().count()
    }

    /// The next event for a harness, oldest first.
    pub fn poll_event(&mut self) -> Option<SimEvent> {
        self.events.pop_front()
    }

    /// Hangs the modem (`true`): all input is swallowed, nothing is printed, timers wait; what
    /// was about to be printed is lost. `false` brings it back where it was.
    pub fn set_stalled(&mut self, stalled: bool) {
        self.stalled = stalled;
        if stalled {
            self.out.clear();
            self.held.clear();
        }
    }

    /// The next `n` sends are answered `+CMS ERROR: <code>` after their PDU.
    pub fn fail_next_sends(&mut self, n: u32, cms_code: u16) {
        self.fail_next = (n, cms_code);
    }

    /// Line noise: `lines` lines no modem should send (binary bytes, broken UTF-8, escape
    /// sequences, unknown and malformed indications), as a bad cable or a confused firmware
    /// produces, queued after whatever is already due.
    pub fn garbage(&mut self, lines: u32, now: Instant) {
        const NOISE: [&[u8]; 6] = [
            b"\xff\xfe\x00\x01\x7f\x80",
            b"\x80\x81garbled\xc3(",
            b"\x1b[0m~~~~",
            b"^BOOT:12345,0,0,0,75",
            b"+CSQ: 99,99,99,99,99",
            b"OKAY?ERR",
        ];
        self.advance(now);
        for i in 0..lines {
            let noise = NOISE[i as usize % NOISE.len()];
            let mut line = Vec::with_capacity(noise.len() + 4);
            line.extend_from_slice(b"\r\n");
            line.extend_from_slice(noise);
            line.extend_from_slice(b"\r\n");
            self.emit(line);
        }
    }

    /// Powers the modem off and on (a replug): settings and PIN state reset, `RDY` after
    /// `reset_delay`; memories, the TP-MR counter and pending reports survive.
    pub fn power_cycle(&mut self, now: Instant) {
        self.advance(now);
        self.out.clear();
        self.reset();
    }

    /// Bytes written by the host.
    pub fn input(&mut self, bytes: &[u8], now: Instant) {
        self.advance(now);
        if self.stalled || self.rebooting_until.is_some() {
            self.counters.swallowed_bytes = self
                .counters
                .swallowed_bytes
                .saturating_add(bytes.len() as u64);
            return;
        }
        let mut echo = Vec::new();
        for &b in bytes {
            // A command may have started a reboot: the rest of this write is lost with it.
            if self.rebooting_until.is_some() {
                self.counters.swallowed_bytes = self.counters.swallowed_bytes.saturating_add(1);
                continue;
            }
            match &mut self.mode {
                InputMode::Command { line, overflow } => match b {
                    b'\r' => {
                        let line = std::mem::take(line);
                        let overflow = std::mem::replace(overflow, false);
                        self.command_line(&line, overflow);
                    }
                    // LF after CR, and the ESC / Ctrl-Z a host sends to get out of a prompt it
                    // believes is open, mean nothing in command mode.
                    b'\n' | 0x1A | 0x1B => {}
                    // Backspace, as S5 defines it.
                    0x08 => {
                        line.pop();
                    }
                    _ if line.len() >= MAX_LINE => *overflow = true,
                    _ => line.push(b),
                },
                InputMode::Pdu {
                    expected,
                    hex,
                    overflow,
                } => match b {
                    0x1A => {
                        let expected = *expected;
                        let hex = std::mem::take(hex);
                        let overflow = *overflow;
                        self.flush_echo(&mut echo);
                        self.mode = InputMode::command();
                        self.submit(expected, &hex, overflow);
                    }
                    0x1B => {
                        self.flush_echo(&mut echo);
                        self.mode = InputMode::command();
                        self.counters.sends_cancelled += 1;
                        self.answer(b"\r\nOK\r\n".to_vec());
                        self.release_held();
                    }
                    // Line ends and blanks some hosts put around the PDU are not part of it.
                    b'\r' | b'\n' | b' ' | b'\t' => {}
                    _ => {
                        if self.settings.echo {
                            echo.push(b);
                        }
                        if hex.len() >= MAX_PDU_HEX {
                            *overflow = true;
                        } else {
                            hex.push(b);
                        }
                    }
                },
            }
        }
        self.flush_echo(&mut echo);
    }

    /// Lets time pass: finishes a reboot, prints `SMS Ready`, produces due status reports.
    pub fn tick(&mut self, now: Instant) {
        self.advance(now);
    }

    /// When [`tick`](Self::tick) next has work, or output becomes due.
    pub fn next_deadline(&self) -> Option<Instant> {
        let output = self.out.front().map(|(due, _)| *due);
        if self.stalled {
            return output;
        }
        [
            output,
            self.rebooting_until,
            self.sms_ready_at,
            self.reports.iter().map(|r| r.due).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Bytes for the host that are due, or `None`.
    pub fn poll_output(&mut self) -> Option<Vec<u8>> {
        let mut bytes: Option<Vec<u8>> = None;
        while let Some((due, _)) = self.out.front() {
            if *due > self.now {
                break;
            }
            if let Some((_, chunk)) = self.out.pop_front() {
                bytes.get_or_insert_with(Vec::new).extend_from_slice(&chunk);
            }
        }
        bytes
    }

    /// A text from `from` arrives from the network, split into parts as a phone would send it,
    /// with the options of the config.
    pub fn receive_sms(
        &mut self,
        from: &str,
        text: &str,
        now: Instant,
    ) -> Result<usize, ReceiveError> {
        let options = ReceiveOptions {
            out_of_order: self.config.out_of_order,
            duplicate: self.config.duplicate_part,
        };
        self.receive_sms_with(from, text, options, now)
    }

    /// [`receive_sms`](Self::receive_sms) with explicit options; returns the number of parts.
    /// Each part is stored and announced `+CMTI`, or pushed as `+CMT`, per `AT+CNMI` and the
    /// quirks. Nothing is delivered when any part cannot be encoded.
    pub fn receive_sms_with(
        &mut self,
        from: &str,
        text: &str,
        options: ReceiveOptions,
        now: Instant,
    ) -> Result<usize, ReceiveError> {
        self.advance(now);
        let segmented = gsm7::segment(text, MAX_RECEIVE_PARTS)?;
        let total = segmented.parts.len();
        let concat_ref = (total > 1).then(|| {
            let r = self.next_concat_ref;
            self.next_concat_ref = r.wrapping_add(1);
            r
        });
        let scts = self.timestamp(self.now);
        let mut pdus = Vec::with_capacity(total);
        for (i, part) in segmented.parts.iter().enumerate() {
            let concat = concat_ref.map(|reference| Concat {
                reference: u16::from(reference),
                total: u8::try_from(total).unwrap_or(u8::MAX),
                seq: u8::try_from(i + 1).unwrap_or(u8::MAX),
                sixteen_bit: false,
            });
            pdus.push(tpdu::encode_deliver(&DeliverSpec {
                smsc: self.config.smsc.as_deref(),
                originator: from,
                scts,
                payload: part.into(),
                concat,
                class: None,
            })?);
        }
        if options.out_of_order && pdus.len() > 1 {
            let original = pdus.clone();
            self.rng.shuffle(&mut pdus);
            if pdus == original {
                pdus.rotate_left(1);
            }
        }
        if options.duplicate && !pdus.is_empty() {
            let i = self.rng.usize(..pdus.len());
            if let Some(copy) = pdus.get(i).cloned() {
                // The copy comes last, as a retransmission by the network would.
                pdus.push(copy);
            }
        }
        for pdu in pdus {
            self.deliver(pdu);
        }
        self.event(SimEvent::Received {
            from: from.to_owned(),
            text: text.to_owned(),
            parts: total,
        });
        Ok(total)
    }

    /// Produces the pending status report for TP-MR `reference` now; false when none waits.
    pub fn report_now(&mut self, reference: u8, now: Instant) -> bool {
        self.advance(now);
        let Some(pos) = self.reports.iter().position(|r| r.reference == reference) else {
            return false;
        };
        let report = self.reports.remove(pos);
        self.produce_report(report);
        true
    }

    // ------------------------------------------------------------------------- time

    /// Moves the clock (never backwards) and runs what became due.
    fn advance(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
        if self.stalled {
            return;
        }
        if let Some(until) = self.rebooting_until
            && until <= self.now
        {
            self.rebooting_until = None;
            self.emit(b"\r\nRDY\r\n".to_vec());
            if self.config.quirks.sms_ready_late {
                self.sms_ready_at = Some(later(self.now, self.config.sms_ready_delay));
            }
            self.release_held();
        }
        if let Some(at) = self.sms_ready_at
            && at <= self.now
        {
            self.sms_ready_at = None;
            self.urc(b"\r\nSMS Ready\r\n".to_vec());
        }
        if self.reports.iter().any(|r| r.due <= self.now) {
            let now = self.now;
            let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reports)
                .into_iter()
                .partition(|r| r.due <= now);
            self.reports = waiting;
            for report in due {
                self.produce_report(report);
            }
        }
    }

    /// Wall-clock seconds at `at`, from the configured start.
    fn unix_at(&self, at: Instant) -> i64 {
        let elapsed = at.saturating_duration_since(self.started).as_secs();
        self.clock_start_unix
            .saturating_add(i64::try_from(elapsed).unwrap_or(i64::MAX))
    }

    fn timestamp(&self, at: Instant) -> Timestamp {
        timestamp_unix(self.unix_at(at))
    }

    // ------------------------------------------------------------------------- output

    /// Queues bytes due now, behind anything still waiting (the line is serial).
    fn emit(&mut self, bytes: Vec<u8>) {
        self.emit_at(self.now, bytes);
    }

    fn emit_at(&mut self, due: Instant, bytes: Vec<u8>) {
        if self.stalled || bytes.is_empty() {
            return;
        }
        let due = match self.out.back() {
            Some((last, _)) if *last > due => *last,
            _ => due,
        };
        self.out.push_back((due, bytes));
    }

    /// Queues an answer after the configured latency.
    fn answer(&mut self, bytes: Vec<u8>) {
        self.emit_at(later(self.now, self.config.latency), bytes);
    }

    fn flush_echo(&mut self, echo: &mut Vec<u8>) {
        if !echo.is_empty() {
            let bytes = std::mem::take(echo);
            self.emit(bytes);
        }
    }

    /// An unsolicited result: held while the host is typing a PDU or the modem reboots (TS 27.005
    /// buffers indications while the link is reserved), unless a quirk says otherwise.
    fn urc(&mut self, bytes: Vec<u8>) {
        let in_prompt = matches!(self.mode, InputMode::Pdu { .. });
        if self.rebooting_until.is_some() || (in_prompt && !self.config.quirks.urc_during_send) {
            if !self.stalled {
                if self.held.len() >= MAX_RECORDS {
                    self.held.remove(0);
                }
                self.held.push(bytes);
            }
        } else {
            self.emit(bytes);
        }
    }

    fn release_held(&mut self) {
        for bytes in std::mem::take(&mut self.held) {
            self.answer(bytes);
        }
    }

    fn event(&mut self, event: SimEvent) {
        if self.events.len() >= MAX_RECORDS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn final_text(&self, fail: Fail) -> String {
        match (fail, self.settings.cmee) {
            (Fail::Plain, _) | (_, 0) => "ERROR".to_owned(),
            (Fail::Cme(n), 2) => format!("+CME ERROR: {}", cme_text(n)),
            (Fail::Cms(n), 2) => format!("+CMS ERROR: {}", cms_text(n)),
            (Fail::Cme(n), _) => format!("+CME ERROR: {n}"),
            (Fail::Cms(n), _) => format!("+CMS ERROR: {n}"),
        }
    }

    // ------------------------------------------------------------------------- commands

    fn command_line(&mut self, raw: &[u8], overflow: bool) {
        if self.settings.echo {
            let mut echo = raw.to_vec();
            echo.push(b'\r');
            self.emit(echo);
        }
        let text = String::from_utf8_lossy(raw);
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        // A modem hunts for "AT"; other lines (a PDU typed without a prompt, noise) get no answer.
        let Some(body) = text
            .get(..2)
            .filter(|p| p.eq_ignore_ascii_case("AT"))
            .and_then(|_| text.get(2..))
        else {
            tracing::trace!(line = %text, "sim modem: ignored non-AT line");
            return;
        };
        self.counters.commands += 1;
        if overflow {
            self.finish(Vec::new(), Err(Fail::Plain));
            return;
        }
        let Some(commands) = parse_commands(body) else {
            self.finish(Vec::new(), Err(Fail::Plain));
            return;
        };
        let mut info = Vec::new();
        for command in &commands {
            match self.execute(command) {
                Outcome::Ok(lines) => info.extend(lines),
                Outcome::NoFinal(lines) => {
                    info.extend(lines);
                    self.finish(info, Ok(false));
                    return;
                }
                Outcome::Err(fail) => {
                    self.finish(info, Err(fail));
                    return;
                }
                Outcome::Prompt(expected) => {
                    self.prompt(info, expected);
                    return;
                }
                Outcome::Reset => {
                    self.finish(info, Ok(true));
                    self.reset();
                    return;
                }
            }
        }
        self.finish(info, Ok(true));
    }

    /// Information lines, then the final result (`Ok(false)`: none).
    fn finish(&mut self, info: Vec<String>, result: Result<bool, Fail>) {
        let mut text = String::new();
        if !info.is_empty() {
            text.push_str("\r\n");
            text.push_str(&info.join("\r\n"));
            text.push_str("\r\n");
        }
        match result {
            Ok(true) => text.push_str("\r\nOK\r\n"),
            Ok(false) => {}
            Err(fail) => {
                self.counters.errors += 1;
                text.push_str("\r\n");
                text.push_str(&self.final_text(fail));
                text.push_str("\r\n");
            }
        }
        self.answer(text.into_bytes());
    }

    fn prompt(&mut self, info: Vec<String>, expected: usize) {
        let mut text = String::new();
        for line in info {
            text.push_str("\r\n");
            text.push_str(&line);
            text.push_str("\r\n");
        }
        if self.config.quirks.urc_during_send {
            text.push_str("\r\n^RSSI:14\r\n");
            let waiting = self
                .sm
                .iter()
                .enumerate()
                .rev()
                .find(|(_, slot)| slot.as_ref().is_some_and(|s| !s.read));
            if let Some((slot, _)) = waiting {
                text.push_str(&format!(
                    "\r\n+CMTI: \"SM\",{}\r\n",
                    slot + self.config.index_base
                ));
            }
        }
        text.push_str(if self.config.quirks.bare_prompt {
            "\r\n>\r\n"
        } else {
            "\r\n> "
        });
        self.answer(text.into_bytes());
        self.mode = InputMode::Pdu {
            expected,
            hex: Vec::new(),
            overflow: false,
        };
    }

    fn reset(&mut self) {
        self.settings = Settings::defaults(&self.config.quirks);
        self.fun = 1;
        self.pin_ok = self.config.pin.is_none();
        self.mode = InputMode::command();
        self.sms_ready_at = None;
        self.rebooting_until = Some(later(self.now, self.config.reset_delay));
    }

    fn sms_ready(&self) -> bool {
        !self.config.quirks.sms_ready_late
            || (self.sms_ready_at.is_none() && self.rebooting_until.is_none())
    }

    fn execute(&mut self, command: &Command) -> Outcome {
        match command {
            Command::Basic { name, value } => self.basic(name, *value),
            Command::Extended { name, op } => {
                let name = name.as_str();
                if SMS_COMMANDS.contains(&name) {
                    if !self.sms_ready() {
                        return Outcome::Err(Fail::Plain);
                    }
                    if !self.pin_ok && SIM_COMMANDS.contains(&name) {
                        return Outcome::Err(Fail::Cms(311));
                    }
                }
                self.extended(name, op)
            }
        }
    }

    fn basic(&mut self, name: &str, value: Option<u32>) -> Outcome {
        match (name, value.unwrap_or(0)) {
            ("E", v @ 0..=1) => {
                self.settings.echo = v == 1;
                Outcome::Ok(Vec::new())
            }
            ("V", 1) | ("Q", 0) => Outcome::Ok(Vec::new()),
            ("Z", 0) | ("&F", 0) => {
                self.settings = Settings::defaults(&self.config.quirks);
                Outcome::Ok(Vec::new())
            }
            ("I", 0) => Outcome::Ok(vec![
                "Manufacturer: parla".to_owned(),
                "Model: SIMMODEM".to_owned(),
                "Revision: 1.0".to_owned(),
                format!("IMEI: {}", self.config.imei),
            ]),
            // Harmless settings hosts send out of habit (DCD, DTR, flow control, hang up).
            ("&C" | "&D" | "&K" | "&W" | "H" | "X" | "L" | "M", _) => Outcome::Ok(Vec::new()),
            _ => Outcome::Err(Fail::Plain),
        }
    }

    fn extended(&mut self, name: &str, op: &Op) -> Outcome {
        let ok = || Outcome::Ok(Vec::new());
        let line = |s: String| Outcome::Ok(vec![s]);
        match (name, op) {
            ("+CMEE", Op::Set(args)) => match args.num(0) {
                Ok(Some(n @ 0..=2)) => {
                    self.settings.cmee = n as u8;
                    ok()
                }
                _ => Outcome::Err(Fail::Plain),
            },
            ("+CMEE", Op::Exec) => {
                self.settings.cmee = 0;
                ok()
            }
            ("+CMEE", Op::Read) => line(format!("+CMEE: {}", self.settings.cmee)),
            ("+CMEE", Op::Test) => line("+CMEE: (0-2)".to_owned()),

            ("+CPIN", Op::Read) => {
                let state = if self.pin_ok { "READY" } else { "SIM PIN" };
                let lines = vec![format!("+CPIN: {state}")];
                if self.config.quirks.cpin_without_ok {
                    Outcome::NoFinal(lines)
                } else {
                    Outcome::Ok(lines)
                }
            }
            ("+CPIN", Op::Set(args)) => {
                if self.pin_ok {
                    return Outcome::Err(Fail::Cme(3));
                }
                let given = args.text(0).unwrap_or_default();
                if self.config.pin.as_deref() == Some(given.as_str()) {
                    self.pin_ok = true;
                    ok()
                } else {
                    Outcome::Err(Fail::Cme(16))
                }
            }
            ("+CPIN", Op::Test) => ok(),

            ("+CGMI" | "+GMI", Op::Exec) => line("parla".to_owned()),
            ("+CGMM" | "+GMM", Op::Exec) => line("SIMMODEM".to_owned()),
            ("+CGMR" | "+GMR", Op::Exec) => line("1.0".to_owned()),
            ("+CGSN" | "+GSN", Op::Exec) => line(self.config.imei.clone()),
            (
                "+CGMI" | "+GMI" | "+CGMM" | "+GMM" | "+CGMR" | "+GMR" | "+CGSN" | "+GSN",
                Op::Test,
            ) => ok(),
            ("+GCAP", Op::Exec) => line("+GCAP: +CGSM".to_owned()),

            ("+CMGF", Op::Set(args)) => match args.num(0) {
                Ok(Some(0)) => ok(),
                Ok(Some(1)) => Outcome::Err(Fail::Cms(303)),
                _ => Outcome::Err(Fail::Plain),
            },
            ("+CMGF", Op::Exec) => ok(),
            ("+CMGF", Op::Read) => line("+CMGF: 0".to_owned()),
            ("+CMGF", Op::Test) => line("+CMGF: (0)".to_owned()),

            ("+CPMS", Op::Set(args)) => self.cpms_set(args),
            ("+CPMS", Op::Read) => {
                let parts: Vec<String> = self
                    .settings
                    .mems
                    .iter()
                    .map(|&m| {
                        let (used, total) = self.usage(m);
                        format!("\"{}\",{used},{total}", m.name())
                    })
                    .collect();
                line(format!("+CPMS: {}", parts.join(",")))
            }
            ("+CPMS", Op::Test) => line("+CPMS: (\"SM\",\"SR\"),(\"SM\"),(\"SM\")".to_owned()),

            ("+CNMI", _) if self.config.quirks.no_cnmi => Outcome::Err(Fail::Plain),
            ("+CNMI", Op::Set(args)) => {
                const RANGES: [u8; 5] = [3, 3, 3, 2, 1];
                let mut cnmi = self.settings.cnmi;
                if args.len() > 5 {
                    return Outcome::Err(Fail::Plain);
                }
                for (i, (slot, max)) in cnmi.iter_mut().zip(RANGES).enumerate() {
                    match args.num(i) {
                        Ok(None) => {}
                        Ok(Some(v)) if v <= u32::from(max) => *slot = v as u8,
                        _ => return Outcome::Err(Fail::Cms(303)),
                    }
                }
                self.settings.cnmi = cnmi;
                ok()
            }
            ("+CNMI", Op::Read) => {
                let [a, b, c, d, e] = self.settings.cnmi;
                line(format!("+CNMI: {a},{b},{c},{d},{e}"))
            }
            ("+CNMI", Op::Test) => line("+CNMI: (0-3),(0-3),(0-3),(0-2),(0,1)".to_owned()),

            ("+CSMS", Op::Set(args)) => match args.num(0) {
                Ok(Some(n @ 0..=1)) => {
                    self.settings.csms = n as u8;
                    line("+CSMS: 1,1,1".to_owned())
                }
                _ => Outcome::Err(Fail::Cms(303)),
            },
            ("+CSMS", Op::Read) => line(format!("+CSMS: {},1,1,1", self.settings.csms)),
            ("+CSMS", Op::Test) => line("+CSMS: (0,1)".to_owned()),

            ("+CSCA", Op::Read) => line(match &self.smsc {
                Some(number) if number.starts_with('+') => format!("+CSCA: \"{number}\",145"),
                Some(number) => format!("+CSCA: \"{number}\",129"),
                None => "+CSCA: \"\",129".to_owned(),
            }),
            ("+CSCA", Op::Set(args)) => match args.text(0) {
                Some(number) if !number.is_empty() => {
                    self.smsc = Some(number);
                    ok()
                }
                _ => Outcome::Err(Fail::Cms(304)),
            },
            ("+CSMP", Op::Set(_)) => ok(),
            ("+CSMP", Op::Read) => line("+CSMP: 17,167,0,0".to_owned()),
            ("+CSCS", Op::Set(_)) => ok(),
            ("+CSCS", Op::Read) => line("+CSCS: \"GSM\"".to_owned()),
            ("+CSCS", Op::Test) => line("+CSCS: (\"GSM\",\"UCS2\",\"IRA\")".to_owned()),

            ("+COPS", Op::Set(_)) => ok(),
            ("+COPS", Op::Read) => line("+COPS: 0,0,\"SIMNET\",7".to_owned()),
            ("+COPS", Op::Test) => {
                line("+COPS: (2,\"SIMNET\",\"SIMNET\",\"00101\",7),,(0-4),(0-2)".to_owned())
            }
            ("+CSQ", Op::Exec) => line("+CSQ: 21,99".to_owned()),
            ("+CSQ", Op::Test) => line("+CSQ: (0-31,99),(0-7,99)".to_owned()),
            ("+CREG", Op::Set(args)) => match args.num(0) {
                Ok(Some(n @ 0..=2)) => {
                    self.settings.creg = n as u8;
                    ok()
                }
                _ => Outcome::Err(Fail::Cme(3)),
            },
            ("+CREG", Op::Read) => {
                let stat = if self.fun == 1 { 1 } else { 0 };
                line(format!("+CREG: {},{stat}", self.settings.creg))
            }
            ("+CREG", Op::Test) => line("+CREG: (0-2)".to_owned()),

            ("+CFUN", Op::Set(args)) => match (args.num(0), args.num(1)) {
                (Ok(Some(1)), Ok(Some(1))) => Outcome::Reset,
                (Ok(Some(f @ (0 | 1 | 4))), Ok(None | Some(0))) => {
                    self.fun = f as u8;
                    ok()
                }
                _ => Outcome::Err(Fail::Cme(3)),
            },
            ("+CFUN", Op::Read) => line(format!("+CFUN: {}", self.fun)),
            ("+CFUN", Op::Test) => line("+CFUN: (0,1,4),(0-1)".to_owned()),

            ("+CMGS", Op::Set(args)) => match args.num(0) {
                Ok(Some(n @ 1..=164)) if args.len() == 1 => {
                    if self.fun != 1 {
                        Outcome::Err(Fail::Cms(331))
                    } else {
                        Outcome::Prompt(n as usize)
                    }
                }
                _ => Outcome::Err(Fail::Cms(304)),
            },
            ("+CMGS", Op::Test) => ok(),
            ("+CMGR", Op::Set(args)) => self.cmgr(args),
            ("+CMGL", Op::Set(args)) => match args.num(0) {
                Ok(Some(stat @ 0..=4)) => self.cmgl(stat),
                _ => Outcome::Err(Fail::Cms(304)),
            },
            ("+CMGL", Op::Exec) => self.cmgl(0),
            ("+CMGL", Op::Test) => line("+CMGL: (0-4)".to_owned()),
            ("+CMGD", Op::Set(args)) => self.cmgd(args),
            ("+CMGD", Op::Test) => {
                let last = self.capacity(self.settings.mems[0]) + self.config.index_base;
                line(format!(
                    "+CMGD: ({}-{}),(0-4)",
                    self.config.index_base,
                    last.saturating_sub(1)
                ))
            }
            ("+CNMA", Op::Exec | Op::Set(_)) => ok(),
            ("+CNMA", Op::Test) => line("+CNMA: (0-2)".to_owned()),
            _ => Outcome::Err(Fail::Plain),
        }
    }

    fn memory(&self, mem: Mem) -> &[Option<Stored>] {
        match mem {
            Mem::Sm => &self.sm,
            Mem::Sr => &self.sr,
        }
    }

    fn memory_mut(&mut self, mem: Mem) -> &mut Vec<Option<Stored>> {
        match mem {
            Mem::Sm => &mut self.sm,
            Mem::Sr => &mut self.sr,
        }
    }

    fn capacity(&self, mem: Mem) -> usize {
        self.memory(mem).len()
    }

    fn usage(&self, mem: Mem) -> (usize, usize) {
        let slots = self.memory(mem);
        (slots.iter().flatten().count(), slots.len())
    }

    fn cpms_set(&mut self, args: &Args) -> Outcome {
        if args.is_empty() || args.len() > 3 {
            return Outcome::Err(Fail::Cms(302));
        }
        let mut mems = self.settings.mems;
        for (i, slot) in mems.iter_mut().enumerate().take(args.len()) {
            let Some(mem) = args.text(i).as_deref().and_then(Mem::parse) else {
                return Outcome::Err(Fail::Cms(302));
            };
            // Only mem1 (read/delete) can be SR: nothing is written or received into it.
            if i > 0 && mem == Mem::Sr {
                return Outcome::Err(Fail::Cms(302));
            }
            *slot = mem;
        }
        self.settings.mems = mems;
        let parts: Vec<String> = mems
            .iter()
            .map(|&m| {
                let (used, total) = self.usage(m);
                format!("{used},{total}")
            })
            .collect();
        Outcome::Ok(vec![format!("+CPMS: {}", parts.join(","))])
    }

    /// Slot of a host-given index in mem1, or the error a modem gives for it.
    fn slot_of(&self, args: &Args) -> Result<(Mem, usize), Fail> {
        let mem = self.settings.mems[0];
        let index = match args.num(0) {
            Ok(Some(i)) => i as usize,
            _ => return Err(Fail::Cms(304)),
        };
        let slot = index
            .checked_sub(self.config.index_base)
            .filter(|&s| s < self.capacity(mem))
            .ok_or(Fail::Cms(321))?;
        Ok((mem, slot))
    }

    fn cmgr(&mut self, args: &Args) -> Outcome {
        let (mem, slot) = match self.slot_of(args) {
            Ok(found) => found,
            Err(fail) => return Outcome::Err(fail),
        };
        match self.memory_mut(mem).get_mut(slot).and_then(Option::as_mut) {
            Some(stored) => {
                let stat = u8::from(stored.read);
                stored.read = true;
                Outcome::Ok(vec![
                    format!("+CMGR: {stat},,{}", stored.pdu.tpdu_len),
                    stored.pdu.to_hex(),
                ])
            }
            // Real modems answer a bare OK for an empty slot.
            None => Outcome::Ok(Vec::new()),
        }
    }

    fn cmgl(&mut self, wanted: u32) -> Outcome {
        let mem = self.settings.mems[0];
        let base = self.config.index_base;
        let mut lines = Vec::new();
        for (slot, entry) in self.memory_mut(mem).iter_mut().enumerate() {
            let Some(stored) = entry else { continue };
            let stat = u32::from(stored.read);
            if wanted != 4 && wanted != stat {
                continue;
            }
            lines.push(format!(
                "+CMGL: {},{stat},,{}",
                slot + base,
                stored.pdu.tpdu_len
            ));
            lines.push(stored.pdu.to_hex());
            // Listing reads, as on real modems.
            stored.read = true;
        }
        Outcome::Ok(lines)
    }

    fn cmgd(&mut self, args: &Args) -> Outcome {
        let flag = match args.num(1) {
            Ok(None) => 0,
            Ok(Some(f @ 0..=4)) => f,
            _ => return Outcome::Err(Fail::Cms(304)),
        };
        if flag == 0 {
            let (mem, slot) = match self.slot_of(args) {
                Ok(found) => found,
                Err(fail) => return Outcome::Err(fail),
            };
            if let Some(entry) = self.memory_mut(mem).get_mut(slot) {
                *entry = None;
            }
        } else {
            // Flags 1-3 delete read messages (nothing sent or unsent is stored here), 4 all.
            let mem = self.settings.mems[0];
            for entry in self.memory_mut(mem).iter_mut() {
                if flag == 4 || entry.as_ref().is_some_and(|s| s.read) {
                    *entry = None;
                }
            }
        }
        Outcome::Ok(Vec::new())
    }

    // ------------------------------------------------------------------------- sending

    fn submit(&mut self, expected: usize, hex: &[u8], overflow: bool) {
        let result = self.check_submit(expected, hex, overflow);
        let text = match result {
            Err(fail) => {
                self.counters.bad_pdus += 1;
                self.counters.errors += 1;
                format!("\r\n{}\r\n", self.final_text(fail))
            }
            Ok(submit) => {
                if self.fail_next.0 > 0 {
                    self.fail_next.0 -= 1;
                    self.counters.sends_failed += 1;
                    self.counters.errors += 1;
                    format!("\r\n{}\r\n", self.final_text(Fail::Cms(self.fail_next.1)))
                } else if self.config.failure_share > 0.0
                    && self.rng.f64() < self.config.failure_share
                {
                    self.counters.sends_failed += 1;
                    self.counters.errors += 1;
                    format!("\r\n{}\r\n", self.final_text(Fail::Cms(38)))
                } else {
                    let mr = self.accept(submit);
                    format!("\r\n+CMGS: {mr}\r\n\r\nOK\r\n")
                }
            }
        };
        self.answer(text.into_bytes());
        self.release_held();
    }

    fn check_submit(
        &self,
        expected: usize,
        hex: &[u8],
        overflow: bool,
    ) -> Result<tpdu::Submit, Fail> {
        let bad = Fail::Cms(304);
        if overflow {
            return Err(bad);
        }
        let text = std::str::from_utf8(hex).map_err(|_| bad)?;
        let bytes = tpdu::decode_hex(text).map_err(|_| bad)?;
        let sca_field = usize::from(*bytes.first().ok_or(bad)?) + 1;
        if bytes.len().checked_sub(sca_field) != Some(expected) {
            return Err(bad);
        }
        match tpdu::decode(&bytes, true) {
            Ok(Pdu::Submit(submit)) => Ok(submit),
            _ => Err(bad),
        }
    }

    /// Records an accepted SUBMIT and schedules its report; returns its TP-MR.
    fn accept(&mut self, submit: tpdu::Submit) -> u8 {
        let mr = self.next_mr;
        self.next_mr = mr.wrapping_add(1);
        let user_data = &submit.user_data;
        let sent = SentSms {
            to: submit.destination.value.clone(),
            text: user_data
                .text
                .clone()
                .unwrap_or_else(|| tpdu::to_hex(&user_data.data)),
            reference: mr,
            concat: user_data.concat.map(|c| (c.reference, c.total, c.seq)),
            status_report_requested: submit.status_report_request(),
        };
        self.counters.sends_accepted += 1;
        if sent.status_report_requested {
            let failed = self.config.report_failure_share > 0.0
                && self.rng.f64() < self.config.report_failure_share;
            let status = if failed {
                STATUS_FAILED[usize::from(self.rng.bool())]
            } else {
                STATUS_DELIVERED
            };
            self.reports.push(PendingReport {
                due: later(self.now, self.config.report_delay),
                reference: mr,
                recipient: sent.to.clone(),
                submitted_unix: self.unix_at(self.now),
                status,
            });
        }
        if self.sent.len() >= MAX_RECORDS {
            self.sent.drain(..MAX_RECORDS / 2);
        }
        self.sent.push(sent.clone());
        self.event(SimEvent::Sent(sent));
        mr
    }

    // ------------------------------------------------------------------------- receiving

    /// Puts a PDU into a memory; its index, or `None` when full.
    fn store(&mut self, mem: Mem, pdu: EncodedPdu) -> Option<usize> {
        let base = self.config.index_base;
        let memory = self.memory_mut(mem);
        let Some((slot, entry)) = memory.iter_mut().enumerate().find(|(_, e)| e.is_none()) else {
            self.counters.refused += 1;
            self.event(SimEvent::Refused { memory: mem.name() });
            return None;
        };
        *entry = Some(Stored { read: false, pdu });
        self.counters.stored += 1;
        Some(slot + base)
    }

    fn deliver(&mut self, pdu: EncodedPdu) {
        self.counters.received_parts += 1;
        let quirks = self.config.quirks;
        let mt = self.settings.mt();
        if !quirks.no_cnmi && (quirks.direct_delivery || mt == 2) {
            let text = format!("\r\n+CMT: ,{}\r\n{}\r\n", pdu.tpdu_len, pdu.to_hex());
            self.urc(text.into_bytes());
            return;
        }
        let Some(index) = self.store(Mem::Sm, pdu) else {
            return;
        };
        if !quirks.no_cnmi && (mt == 1 || mt == 3) {
            self.urc(format!("\r\n+CMTI: \"SM\",{index}\r\n").into_bytes());
        }
    }

    fn produce_report(&mut self, report: PendingReport) {
        let spec = StatusReportSpec {
            smsc: self.config.smsc.as_deref(),
            reference: report.reference,
            recipient: &report.recipient,
            scts: timestamp_unix(report.submitted_unix),
            discharge: self.timestamp(self.now),
            status: report.status,
        };
        let pdu = match tpdu::encode_status_report(&spec) {
            Ok(pdu) => pdu,
            Err(error) => {
                // An alphanumeric destination has no report address: the network sends none.
                tracing::debug!(%error, "sim modem: no status report");
                return;
            }
        };
        self.counters.reports += 1;
        self.event(SimEvent::Report {
            reference: report.reference,
            recipient: report.recipient,
            status: report.status,
        });
        let quirks = self.config.quirks;
        let ds = self.settings.ds();
        if !quirks.no_cnmi && (quirks.direct_reports || ds == 1) {
            let text = format!("\r\n+CDS: {}\r\n{}\r\n", pdu.tpdu_len, pdu.to_hex());
            self.urc(text.into_bytes());
            return;
        }
        let Some(index) = self.store(Mem::Sr, pdu) else {
            return;
        };
        if !quirks.no_cnmi && ds == 2 {
            let memory = if quirks.wrong_report_memory {
                "SM"
            } else {
                "SR"
            };
            self.urc(format!("\r\n+CDSI: \"{memory}\",{index}\r\n").into_bytes());
        }
    }
}

/// A UTC timestamp for TP-SCTS / TP-DT; the epoch if the seconds are out of range.
fn timestamp_unix(unix: i64) -> Timestamp {
    Timestamp::from_unix_seconds(unix, 0)
        .or_else(|| Timestamp::from_unix_seconds(DEFAULT_CLOCK_START, 0))
        .unwrap_or(Timestamp {
            year: 2026,
            month: 1,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
            offset_minutes: 0,
        })
}

fn cme_text(code: u16) -> String {
    match code {
        3 => "operation not allowed".to_owned(),
        4 => "operation not supported".to_owned(),
        10 => "SIM not inserted".to_owned(),
        11 => "SIM PIN required".to_owned(),
        16 => "incorrect password".to_owned(),
        _ => code.to_string(),
    }
}

fn cms_text(code: u16) -> String {
    match code {
        38 => "network out of order".to_owned(),
        302 => "operation not allowed".to_owned(),
        303 => "operation not supported".to_owned(),
        304 => "invalid PDU mode parameter".to_owned(),
        311 => "SIM PIN required".to_owned(),
        321 => "invalid memory index".to_owned(),
        322 => "memory full".to_owned(),
        331 => "no network service".to_owned(),
        _ => code.to_string(),
    }
}

// ----------------------------------------------------------------------------- command parsing

/// One command of a command line (several may be joined with `;`).
#[derive(Debug, PartialEq, Eq)]
enum Command {
    /// `E1`, `&F`, `Z` ...: an uppercase name and an optional number.
    Basic { name: String, value: Option<u32> },
    /// `+NAME` / `^NAME` with its operation.
    Extended { name: String, op: Op },
}

#[derive(Debug, PartialEq, Eq)]
enum Op {
    Exec,
    Read,
    Test,
    Set(Args),
}

/// Comma-separated parameters; each is (text, was quoted).
#[derive(Debug, PartialEq, Eq)]
struct Args(Vec<(String, bool)>);

impl Args {
    fn parse(text: &str) -> Args {
        let mut items = Vec::new();
        let mut current = String::new();
        let mut quoted = false;
        let mut in_quotes = false;
        for ch in text.chars() {
            match ch {
                '"' => {
                    in_quotes = !in_quotes;
                    quoted = true;
                }
                ',' if !in_quotes => {
                    items.push((current.trim().to_owned(), quoted));
                    current.clear();
                    quoted = false;
                }
                _ => current.push(ch),
            }
        }
        items.push((current.trim().to_owned(), quoted));
        Args(items)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0
            .iter()
            .all(|(text, quoted)| text.is_empty() && !quoted)
    }

    /// `Ok(None)` for a missing or empty parameter, `Err` for one that is not a number.
    fn num(&self, i: usize) -> Result<Option<u32>, ()> {
        match self.0.get(i) {
            None => Ok(None),
            Some((text, false)) if text.is_empty() => Ok(None),
            Some((text, false)) => text.parse().map(Some).map_err(|_| ()),
            Some((_, true)) => Err(()),
        }
    }

    fn text(&self, i: usize) -> Option<String> {
        self.0.get(i).map(|(text, _)| text.clone())
    }
}

/// Splits what follows `AT` into commands; `None` on a syntax error.
fn parse_commands(body: &str) -> Option<Vec<Command>> {
    let mut commands = Vec::new();
    let mut rest = body;
    loop {
        rest = rest.trim_start_matches([' ', ';']);
        let mut chars = rest.chars();
        let Some(first) = chars.next() else { break };
        if matches!(first, '+' | '^' | '$' | '*' | '%') {
            let name_len = rest
                .char_indices()
                .skip(1)
                .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '!')))
                .map_or(rest.len(), |(i, _)| i);
            let name = rest.get(..name_len)?.to_ascii_uppercase();
            if name.len() < 2 {
                return None;
            }
            rest = rest.get(name_len..)?;
            let op = if let Some(r) = rest.strip_prefix("=?") {
                rest = r;
                Op::Test
            } else if let Some(r) = rest.strip_prefix('?') {
                rest = r;
                Op::Read
            } else if let Some(r) = rest.strip_prefix('=') {
                let end = arguments_end(r);
                let args = Args::parse(r.get(..end)?);
                rest = r.get(end..)?;
                Op::Set(args)
            } else {
                Op::Exec
            };
            commands.push(Command::Extended { name, op });
        } else {
            let name_len = if first == '&' {
                let second = chars.next()?;
                if !second.is_ascii_alphabetic() {
                    return None;
                }
                2
            } else if first.is_ascii_alphabetic() {
                1
            } else {
                return None;
            };
            let name = rest.get(..name_len)?.to_ascii_uppercase();
            rest = rest.get(name_len..)?;
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let value = if digits == 0 {
                None
            } else {
                Some(rest.get(..digits)?.parse().ok()?)
            };
            rest = rest.get(digits..)?;
            commands.push(Command::Basic { name, value });
        }
    }
    Some(commands)
}

/// Byte offset of the `;` that ends a parameter list (outside quotes), or the end.
fn arguments_end(text: &str) -> usize {
    let mut in_quotes = false;
    for (i, ch) in text.char_indices() {
        match ch {
            '"' => in_quotes = !in_quotes,
            ';' if !in_quotes => return i,
            _ => {}
        }
    }
    text.len()
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
