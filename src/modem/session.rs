//! One modem's AT session as a state machine without I/O: frames from the modem and the passing
//! of time go in, bytes to write and what happened come out. The task that owns the serial port
//! ([`super::driver`]) only moves bytes and events; every decision about the conversation with the
//! modem is here, so the transcripts of real devices can replay through it in tests.
//!
//! Commands go out one at a time. A final result always belongs to the command in flight;
//! unsolicited codes are handled whenever they come, including between `AT+CMGS` and its prompt.
//! After a timeout the session resynchronises (ESC, then `AT`, then a short quiet time) before the
//! next command, so a late answer to the old command is not taken as the answer to a new one.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::channel::ModemInfo;
use crate::codec::at::{ErrorCode, FinalResult, Frame, Urc};

/// What the session needs to know about its modem.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// SIM PIN, entered once when the SIM asks for it (never retried: three wrong tries lock it).
    pub pin: Option<String>,
    /// Message storage for received messages ("SM", "ME", "MT").
    pub storage: String,
    /// `AT+CNMI` parameters for new-message indications.
    pub indications: String,
    /// How long an ordinary command may take.
    pub command_timeout: Duration,
    /// How long `AT+CMGS` may take once the PDU is written (the network answers).
    pub send_timeout: Duration,
    /// Extra commands sent at the end of initialisation (vendor settings).
    pub init_commands: Vec<String>,
    /// How often signal, registration and operator are read.
    pub health_interval: Duration,
    /// How often stored messages are looked for when the modem cannot announce them.
    pub poll_interval: Duration,
    /// How often stored messages are looked for anyway (a missed indication loses nothing).
    pub sweep_interval: Duration,
    /// Consecutive timeouts after which the modem is declared unresponsive (and reset).
    pub unresponsive_after: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            pin: None,
            storage: "SM".into(),
            indications: "2,1,0,2,0".into(),
            command_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(60),
            init_commands: Vec::new(),
            health_interval: Duration::from_secs(60),
            poll_interval: Duration::from_secs(15),
            sweep_interval: Duration::from_secs(300),
            unresponsive_after: 3,
        }
    }
}

/// Where a received message or report sits in the modem, so it can be removed once committed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Slot {
    /// Stored in `memory` at `index`: deleted with `AT+CMGD` after commit.
    Stored {
        /// "SM", "ME", "SR", ...
        memory: String,
        /// The modem's index.
        index: u32,
    },
    /// Pushed directly (`+CMT`, `+CDS`): acknowledged with `AT+CNMA` after commit.
    Direct,
}

/// Why a send did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The modem answered with an error.
    Rejected(FinalResult),
    /// No answer in time. The modem may still have sent it.
    Timeout,
    /// The session was reset or closed before the answer came.
    Interrupted,
}

impl SendError {
    /// Whether trying again later may help. `+CMS ERROR` codes that name the destination or the
    /// content (TS 24.011 / 27.005) are permanent; everything else (network, SIM busy, timeouts)
    /// is worth another try.
    pub fn is_permanent(&self) -> bool {
        match self {
            SendError::Rejected(FinalResult::CmsError(ErrorCode::Number(code))) => matches!(
                code,
                1 | 8 | 10 | 21 | 28 | 29 | 30 | 50 | 96 | 97 | 98 | 111 | 127 | 300..=305
            ),
            _ => false,
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Rejected(result) => write!(f, "modem refused: {}", describe(result)),
            SendError::Timeout => write!(f, "modem did not answer in time"),
            SendError::Interrupted => write!(f, "modem session was reset"),
        }
    }
}

/// What the session asks of its driver, or tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes to write to the port.
    Write(Vec<u8>),
    /// Initialisation finished: the modem can send.
    Ready,
    /// A part went out; `reference` is the TP-MR the modem gave it (`+CMGS: <mr>`).
    Sent {
        /// The driver's token for this part.
        token: u64,
        /// The message reference, for matching status reports.
        reference: u8,
    },
    /// A part did not go out.
    SendFailed {
        /// The driver's token for this part.
        token: u64,
        /// Why.
        error: SendError,
    },
    /// A received SMS (PDU hex as the modem printed it): commit it, then call
    /// [`Session::acknowledge`].
    Received {
        /// The PDU, SCA first.
        pdu: String,
        /// Where it sits in the modem.
        slot: Slot,
    },
    /// A status report (PDU hex); same contract as `Received`.
    Report {
        /// The PDU, SCA first.
        pdu: String,
        /// Where it sits in the modem.
        slot: Slot,
    },
    /// Something in [`Session::info`] changed.
    InfoChanged,
    /// The modem stopped answering: reset it and open the port again.
    Unresponsive,
    /// The modem cannot be used until someone acts (SIM PIN missing or refused, PUK, no SIM).
    Blocked(String),
    /// The answer to [`Session::raw`].
    RawDone {
        /// The caller's token.
        token: u64,
        /// Information lines of the answer.
        lines: Vec<String>,
        /// The final result; None when the modem did not answer in time.
        result: Option<FinalResult>,
    },
}

/// Steps of initialisation, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Init {
    Attention,
    EchoOff,
    VerboseErrors,
    PinQuery,
    PinEnter,
    Manufacturer,
    Model,
    Revision,
    Imei,
    PduMode,
    Storage,
    Indications,
    OperatorFormat,
    Extra(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Signal,
    Registration,
    Operator,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Purpose {
    Init(Init),
    Health(Health),
    Send {
        token: u64,
        pdu: String,
    },
    /// `AT+CPMS` selecting where the next read/delete happens.
    Select {
        memory: String,
    },
    Read {
        slot: Slot,
        report_hint: bool,
    },
    List {
        memory: String,
    },
    Delete {
        slot: Slot,
    },
    AckDirect,
    Resync,
    /// A command for a person or a tool (`parla modem probe`); its answer is handed back.
    Raw {
        token: u64,
    },
}

#[derive(Debug, Clone)]
struct Command {
    line: String,
    purpose: Purpose,
    timeout: Duration,
    /// Information lines start with this ("+CREG:"), so they are taken as the answer even
    /// when the parser thought them unsolicited.
    expect: Option<String>,
    /// The modem may answer with its information line and no final result (Wavecom +CPIN).
    final_optional: bool,
    not_before: Option<Instant>,
    /// The message memory this command works on: it is skipped unless the modem really has
    /// that memory selected (a refused `AT+CPMS` must not make us read or delete elsewhere).
    memory: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Sent,
    /// `AT+CMGS` is waiting for the prompt.
    AwaitPrompt,
    /// The PDU was written; waiting for `+CMGS:` and the final result.
    PduSent,
}

#[derive(Debug)]
struct Running {
    command: Command,
    deadline: Instant,
    phase: Phase,
    info: Vec<String>,
}

/// How often a step that the modem refuses early after power-up (SIM800 before "SMS Ready",
/// SIM busy) is tried again, and how many times.
const EARLY_RETRY: Duration = Duration::from_secs(2);
const EARLY_RETRIES: u32 = 15;
/// `AT` probes before the modem counts as silent (autobauding modems need a few).
const ATTENTION_TRIES: u32 = 5;
const ATTENTION_TIMEOUT: Duration = Duration::from_secs(2);
/// Silence after a resync before the next command, so late answers are drained.
const RESYNC_QUIET: Duration = Duration::from_millis(300);
/// Wait for a final result after an answer line when the modem may not send one.
const OPTIONAL_FINAL_GRACE: Duration = Duration::from_millis(500);
/// Wait for the SIM after entering the PIN.
const PIN_SETTLE: Duration = Duration::from_secs(3);
/// Storage selections tried in turn: three parameters first (some Huawei sticks take no other).
const STORAGE_FORMS: usize = 3;
/// Indication settings tried after the configured one, before falling back to polling.
const INDICATION_FALLBACKS: [&str; 3] = ["2,1,0,1,0", "1,1,0,2,0", "2,1"];

/// The session with one modem.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    queue: VecDeque<Command>,
    running: Option<Running>,
    out: VecDeque<Output>,
    info: ModemInfo,
    ready: bool,
    blocked: bool,
    polling: bool,
    /// Final results after a resync are drained until this time.
    quiet_until: Option<Instant>,
    consecutive_timeouts: u32,
    early_retries: u32,
    attention_tries: u32,
    pin_tried: bool,
    storage_form: usize,
    indication_try: usize,
    /// Memory the queued `AT+CPMS` commands will have selected when the queue is done.
    selected: String,
    /// Memory the modem confirmed selected.
    active: String,
    /// The modem refused to select "SR": status reports are not read from there.
    no_report_memory: bool,
    /// Received messages handed out and not yet deleted (not to be handed out twice).
    pending: HashSet<Slot>,
    /// Pending slots the modem announced a new message at: read again once deleted.
    announced_while_pending: HashSet<Slot>,
    next_health: Instant,
    next_sweep: Instant,
    send_in_flight: bool,
}

impl Session {
    /// A session that starts initialising the modem at `now`.
    pub fn new(config: SessionConfig, now: Instant) -> Self {
        let selected = config.storage.clone();
        let mut session = Session {
            queue: VecDeque::new(),
            running: None,
            out: VecDeque::new(),
            info: ModemInfo::default(),
            ready: false,
            blocked: false,
            polling: false,
            quiet_until: None,
            consecutive_timeouts: 0,
            early_retries: 0,
            attention_tries: 0,
            pin_tried: false,
            storage_form: 0,
            indication_try: 0,
            active: selected.clone(),
            selected,
            no_report_memory: false,
            pending: HashSet::new(),
            announced_while_pending: HashSet::new(),
            next_health: now,
            next_sweep: now,
            send_in_flight: false,
            config,
        };
        session.push_init(Init::Attention, None);
        session.pump(now);
        session
    }

    /// A session past initialisation with nothing queued, for replaying recorded exchanges.
    #[cfg(test)]
    fn ready_for_replay(config: SessionConfig, now: Instant) -> Self {
        let mut session = Session::new(config, now);
        session.queue.clear();
        session.running = None;
        session.out.clear();
        session.ready = true;
        session.next_health = now + Duration::from_secs(86_400);
        session.next_sweep = now + Duration::from_secs(86_400);
        session
    }

    /// What the modem told about itself so far.
    pub fn info(&self) -> &ModemInfo {
        &self.info
    }

    /// True once initialisation finished and nothing blocks sending.
    pub fn is_ready(&self) -> bool {
        self.ready && !self.blocked
    }

    /// True when a part may be handed over with [`Session::send`].
    pub fn can_send(&self) -> bool {
        self.is_ready() && !self.send_in_flight
    }

    /// Sends one part: `pdu` is the hex PDU with its SCA, `tpdu_len` the length `AT+CMGS` wants.
    /// The answer comes as [`Output::Sent`] or [`Output::SendFailed`] with `token`.
    pub fn send(&mut self, token: u64, pdu: String, tpdu_len: usize, now: Instant) {
        if !self.can_send() {
            self.out.push_back(Output::SendFailed {
                token,
                error: SendError::Interrupted,
            });
            return;
        }
        self.send_in_flight = true;
        let command = Command {
            line: format!("AT+CMGS={tpdu_len}"),
            purpose: Purpose::Send { token, pdu },
            timeout: self.config.command_timeout,
            expect: Some("+CMGS:".into()),
            final_optional: false,
            not_before: None,
            memory: None,
        };
        self.queue.push_back(command);
        self.pump(now);
    }

    /// Queues any command (a line without CR); the answer comes as [`Output::RawDone`].
    pub fn raw(&mut self, token: u64, line: String, now: Instant) {
        let expect = answer_prefix(&line);
        let c = self.command(line, Purpose::Raw { token }, expect.as_deref());
        self.queue.push_back(c);
        self.pump(now);
    }

    /// After a [`Output::Received`] or [`Output::Report`] was committed (`committed`) or could
    /// not be (`!committed`: it stays in the modem and is read again at the next sweep).
    pub fn acknowledge(&mut self, slot: Slot, committed: bool, now: Instant) {
        if !committed {
            self.pending.remove(&slot);
            return;
        }
        match &slot {
            Slot::Stored { memory, index } => {
                self.select_memory(memory);
                let mut delete = self.command(
                    format!("AT+CMGD={index}"),
                    Purpose::Delete { slot: slot.clone() },
                    None,
                );
                delete.memory = Some(memory.clone());
                self.queue.push_back(delete);
                self.restore_memory();
                // The slot stays pending until the delete is done: a listing in between must
                // not hand the message out again (and a second delete could then hit a new
                // message stored at the same index).
            }
            Slot::Direct => {
                self.queue
                    .push_back(self.command("AT+CNMA".into(), Purpose::AckDirect, None));
            }
        }
        self.pump(now);
    }

    /// The modem said something.
    pub fn on_frame(&mut self, frame: Frame, now: Instant) {
        match frame {
            Frame::Echo(_) => {}
            Frame::Prompt => self.on_prompt(now),
            Frame::Final(result) => self.on_final(result, now),
            Frame::Info(line) => self.on_info(line, now),
            Frame::Urc { line, urc } => {
                if self.expects(&line) {
                    self.on_info(line, now);
                } else {
                    self.on_urc(urc);
                }
            }
        }
        self.pump(now);
    }

    /// Time passed: deadlines, retries and periodic work.
    pub fn on_tick(&mut self, now: Instant) {
        if let Some(running) = &self.running
            && now >= running.deadline
        {
            self.on_timeout(now);
        }
        if self.quiet_until.is_some_and(|t| now >= t) {
            self.quiet_until = None;
        }
        if self.is_ready() {
            if now >= self.next_health {
                self.next_health = now + self.config.health_interval;
                self.queue_health();
            }
            if now >= self.next_sweep {
                let every = if self.polling {
                    self.config.poll_interval
                } else {
                    self.config.sweep_interval
                };
                self.next_sweep = now + every;
                self.queue_list();
            }
        }
        self.pump(now);
    }

    /// When [`Session::on_tick`] should be called next.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut times = Vec::with_capacity(5);
        if let Some(r) = &self.running {
            times.push(r.deadline);
        }
        times.extend(self.quiet_until);
        if let Some(at) = self.queue.front().and_then(|c| c.not_before) {
            times.push(at);
        }
        if self.is_ready() {
            times.push(self.next_health);
            times.push(self.next_sweep);
        }
        times.into_iter().min()
    }

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Ends the session (port gone, reset): the part being sent, if any, is reported failed.
    pub fn close(&mut self) {
        if let Some(running) = self.running.take()
            && let Purpose::Send { token, .. } = running.command.purpose
        {
            self.out.push_back(Output::SendFailed {
                token,
                error: SendError::Interrupted,
            });
        }
        for command in self.queue.drain(..) {
            if let Purpose::Send { token, .. } = command.purpose {
                self.out.push_back(Output::SendFailed {
                    token,
                    error: SendError::Interrupted,
                });
            }
        }
        self.send_in_flight = false;
        self.ready = false;
    }

    fn command(&self, line: String, purpose: Purpose, expect: Option<&str>) -> Command {
        Command {
            line,
            purpose,
            timeout: self.config.command_timeout,
            expect: expect.map(str::to_string),
            final_optional: false,
            not_before: None,
            memory: None,
        }
    }

    /// Whether `line` answers the command in flight (for lines the parser took as unsolicited).
    fn expects(&self, line: &str) -> bool {
        let Some(running) = &self.running else {
            return false;
        };
        running
            .command
            .expect
            .as_deref()
            .is_some_and(|prefix| starts_with_ignore_case(line, prefix))
    }

    /// Starts the next command when none is in flight and the line is quiet.
    fn pump(&mut self, now: Instant) {
        if self.running.is_some() || self.quiet_until.is_some_and(|t| now < t) {
            return;
        }
        if self
            .queue
            .front()
            .and_then(|c| c.not_before)
            .is_some_and(|t| now < t)
        {
            return;
        }
        let command = loop {
            let Some(command) = self.queue.pop_front() else {
                return;
            };
            match &command.memory {
                Some(m) if *m != self.active => {
                    // Its AT+CPMS was refused: reading or deleting now would hit another memory.
                    tracing::debug!(command = %command.line, memory = %m, "skipped: memory not selected");
                    self.forget_pending(&command.purpose);
                }
                _ => break command,
            }
        };
        let is_send = matches!(command.purpose, Purpose::Send { .. });
        let mut bytes = command.line.clone().into_bytes();
        bytes.push(b'\r');
        self.out.push_back(Output::Write(bytes));
        self.running = Some(Running {
            deadline: now + command.timeout,
            phase: if is_send {
                Phase::AwaitPrompt
            } else {
                Phase::Sent
            },
            info: Vec::new(),
            command,
        });
    }

    fn on_prompt(&mut self, now: Instant) {
        let Some(running) = &mut self.running else {
            return;
        };
        let Purpose::Send { pdu, .. } = &running.command.purpose else {
            return;
        };
        if running.phase != Phase::AwaitPrompt {
            return;
        }
        let mut bytes = pdu.clone().into_bytes();
        bytes.push(0x1A);
        self.out.push_back(Output::Write(bytes));
        running.phase = Phase::PduSent;
        running.deadline = now + self.config.send_timeout;
    }

    fn on_info(&mut self, line: String, now: Instant) {
        let Some(running) = &mut self.running else {
            tracing::debug!(line, "modem line outside any command");
            return;
        };
        running.info.push(line);
        if running.command.final_optional {
            running.deadline = running.deadline.min(now + OPTIONAL_FINAL_GRACE);
        }
    }

    fn on_final(&mut self, result: FinalResult, now: Instant) {
        let Some(running) = self.running.take() else {
            tracing::debug!(?result, "final result outside any command (late answer)");
            return;
        };
        if running.command.purpose == Purpose::Resync {
            // Whatever answers now may be the late answer of the command that timed out:
            // let the line go quiet before the next command.
            self.quiet_until = Some(now + RESYNC_QUIET);
            if result.is_ok() {
                self.consecutive_timeouts = 0;
            }
            return;
        }
        self.consecutive_timeouts = 0;
        let outcome = if result.is_ok() {
            Ok(running.info)
        } else {
            Err(Some(result))
        };
        self.complete(running.command, outcome, now);
    }

    fn on_timeout(&mut self, now: Instant) {
        let Some(running) = self.running.take() else {
            return;
        };
        if running.command.final_optional && !running.info.is_empty() {
            // The answer came and the modem never ends it with OK (Wavecom +CPIN).
            self.complete(running.command, Ok(running.info), now);
            return;
        }
        self.consecutive_timeouts += 1;
        let was_prompt = running.phase == Phase::AwaitPrompt;
        let attention = running.command.purpose == Purpose::Init(Init::Attention);
        tracing::debug!(command = %running.command.line, "modem command timed out");
        if self.consecutive_timeouts >= self.config.unresponsive_after && !attention {
            if let Purpose::Send { token, .. } = running.command.purpose {
                self.send_in_flight = false;
                self.out.push_back(Output::SendFailed {
                    token,
                    error: SendError::Timeout,
                });
            }
            self.out.push_back(Output::Unresponsive);
            return;
        }
        if was_prompt {
            // ESC abandons a message the modem is still waiting for.
            self.out.push_back(Output::Write(vec![0x1B]));
        }
        if !attention {
            self.queue.push_front(Command {
                line: "AT".into(),
                purpose: Purpose::Resync,
                timeout: ATTENTION_TIMEOUT,
                expect: None,
                final_optional: false,
                not_before: None,
                memory: None,
            });
        }
        self.complete(running.command, Err(None), now);
    }

    /// A command finished: `Ok(info lines)`, `Err(Some(result))` refused, `Err(None)` timeout.
    fn complete(
        &mut self,
        command: Command,
        outcome: Result<Vec<String>, Option<FinalResult>>,
        now: Instant,
    ) {
        match command.purpose {
            Purpose::Init(step) => self.init_done(step, outcome, now),
            Purpose::Health(h) => {
                if let Ok(lines) = outcome {
                    self.health_done(h, &lines);
                }
            }
            Purpose::Send { token, .. } => {
                self.send_in_flight = false;
                let output = match outcome {
                    Ok(lines) => match lines.iter().find_map(|l| cmgs_reference(l)) {
                        Some(reference) => Output::Sent { token, reference },
                        // OK without +CMGS: sent, but no reference to match a report to.
                        None => {
                            tracing::warn!("modem sent without naming a reference (+CMGS)");
                            Output::Sent {
                                token,
                                reference: 0,
                            }
                        }
                    },
                    Err(Some(result)) => Output::SendFailed {
                        token,
                        error: SendError::Rejected(result),
                    },
                    Err(None) => Output::SendFailed {
                        token,
                        error: SendError::Timeout,
                    },
                };
                self.out.push_back(output);
            }
            Purpose::Select { memory } => match outcome {
                Ok(_) => self.active = memory,
                Err(e) => {
                    tracing::debug!(%memory, result = ?e, "the modem refused the memory");
                    if memory == "SR" {
                        self.no_report_memory = true;
                    }
                    // What follows was queued as if it were selected; the next selection must
                    // ask again.
                    self.selected = self.active.clone();
                }
            },
            Purpose::Delete { slot } => {
                if let Err(e) = outcome {
                    tracing::debug!(?slot, result = ?e, "delete refused; read again later");
                }
                self.pending.remove(&slot);
                // Something new was announced at this index meanwhile: read it now.
                if self.announced_while_pending.remove(&slot) {
                    self.queue_read(slot, false);
                }
            }
            Purpose::AckDirect | Purpose::Resync => {
                if let Err(e) = outcome {
                    tracing::debug!(command = %command.line, result = ?e, "modem refused");
                }
            }
            Purpose::Read { slot, report_hint } => self.read_done(slot, report_hint, outcome),
            Purpose::Raw { token } => {
                let (lines, result) = match outcome {
                    Ok(lines) => (lines, Some(FinalResult::Ok)),
                    Err(result) => (Vec::new(), result),
                };
                self.out.push_back(Output::RawDone {
                    token,
                    lines,
                    result,
                });
            }
            Purpose::List { memory } => match outcome {
                Ok(lines) => self.list_done(&memory, &lines),
                Err(e) => tracing::debug!(result = ?e, "listing stored messages failed"),
            },
        }
    }

    fn push_init(&mut self, step: Init, not_before: Option<Instant>) {
        let (line, expect, final_optional): (String, Option<&str>, bool) = match step {
            Init::Attention => ("AT".into(), None, false),
            Init::EchoOff => ("ATE0".into(), None, false),
            Init::VerboseErrors => ("AT+CMEE=1".into(), None, false),
            Init::PinQuery => ("AT+CPIN?".into(), Some("+CPIN:"), true),
            Init::PinEnter => (
                format!("AT+CPIN=\"{}\"", self.config.pin.as_deref().unwrap_or("")),
                None,
                false,
            ),
            Init::Manufacturer => ("AT+CGMI".into(), Some("+CGMI:"), false),
            Init::Model => ("AT+CGMM".into(), Some("+CGMM:"), false),
            Init::Revision => ("AT+CGMR".into(), Some("+CGMR:"), false),
            Init::Imei => ("AT+CGSN".into(), Some("+CGSN:"), false),
            Init::PduMode => ("AT+CMGF=0".into(), None, false),
            Init::Storage => (self.storage_command(), Some("+CPMS:"), false),
            Init::Indications => {
                let params = match self.indication_try {
                    0 => self.config.indications.clone(),
                    n => INDICATION_FALLBACKS
                        .get(n - 1)
                        .copied()
                        .unwrap_or("2,1")
                        .to_string(),
                };
                (format!("AT+CNMI={params}"), None, false)
            }
            Init::OperatorFormat => ("AT+COPS=3,0".into(), None, false),
            Init::Extra(i) => (
                self.config
                    .init_commands
                    .get(i)
                    .cloned()
                    .unwrap_or_default(),
                None,
                false,
            ),
        };
        let timeout = if step == Init::Attention {
            ATTENTION_TIMEOUT
        } else {
            self.config.command_timeout
        };
        self.queue.push_back(Command {
            line,
            purpose: Purpose::Init(step),
            timeout,
            expect: expect.map(str::to_string),
            final_optional,
            not_before,
            memory: None,
        });
    }

    fn storage_command(&self) -> String {
        let m = &self.config.storage;
        match self.storage_form {
            0 => format!("AT+CPMS=\"{m}\",\"{m}\",\"{m}\""),
            1 => format!("AT+CPMS=\"{m}\",\"{m}\""),
            _ => format!("AT+CPMS=\"{m}\""),
        }
    }

    fn block(&mut self, why: String) {
        self.blocked = true;
        self.ready = false;
        self.out.push_back(Output::Blocked(why));
    }

    /// Retries a step the modem refuses early after power-up; true when a retry was queued.
    fn retry_early(&mut self, step: Init, now: Instant) -> bool {
        if self.early_retries >= EARLY_RETRIES {
            return false;
        }
        self.early_retries += 1;
        self.push_init(step, Some(now + EARLY_RETRY));
        true
    }

    fn init_done(
        &mut self,
        step: Init,
        outcome: Result<Vec<String>, Option<FinalResult>>,
        now: Instant,
    ) {
        use Init::*;
        let next = match (step, &outcome) {
            (Attention, Ok(_)) => {
                if self.attention_tries > 0 {
                    // After ESC, a modem that was at the prompt answers OK for the abandoned
                    // message and then for the AT: the second OK must not answer the next
                    // command. Let the line go quiet first, as after a resync.
                    self.quiet_until = Some(now + RESYNC_QUIET);
                }
                Some(EchoOff)
            }
            (Attention, Err(_)) => {
                self.attention_tries += 1;
                if self.attention_tries >= ATTENTION_TRIES {
                    self.out.push_back(Output::Unresponsive);
                } else {
                    // A modem left at the `AT+CMGS` prompt (the process before this one was
                    // killed mid-send) takes every line as PDU text until ESC: abandon it.
                    self.out.push_back(Output::Write(vec![0x1B]));
                    self.push_init(Attention, None);
                }
                None
            }
            // Not every modem takes these; the session copes without.
            (EchoOff, _) => Some(VerboseErrors),
            (VerboseErrors, _) => Some(PinQuery),
            (PinQuery, Ok(lines)) if !lines.iter().any(|l| value_after(l, "+CPIN:").is_some()) => {
                // A bare OK is no answer: a late OK of a command sent before (by a process
                // killed mid-command, say) taken for this one. Ask again; never block on it.
                if !self.retry_early(PinQuery, now) {
                    self.block("the SIM does not answer (AT+CPIN? without +CPIN:)".into());
                }
                None
            }
            (PinQuery, Ok(lines)) => {
                let state = lines
                    .iter()
                    .find_map(|l| value_after(l, "+CPIN:"))
                    .unwrap_or_default()
                    .trim_matches('"')
                    .to_ascii_uppercase();
                self.info.sim = Some(state.clone());
                self.out.push_back(Output::InfoChanged);
                match state.as_str() {
                    "READY" => Some(Manufacturer),
                    "SIM PIN" if self.pin_tried => {
                        self.block(
                            "the SIM refused the configured PIN; fix modem.pin (one try was used)"
                                .into(),
                        );
                        None
                    }
                    "SIM PIN" => match self.config.pin {
                        Some(_) => Some(PinEnter),
                        None => {
                            self.block("the SIM needs a PIN and modem.pin is not set".into());
                            None
                        }
                    },
                    other => {
                        self.block(format!("the SIM is not usable: {other}"));
                        None
                    }
                }
            }
            (PinQuery, Err(Some(FinalResult::CmeError(ErrorCode::Number(10))))) => {
                self.block("no SIM card (+CME ERROR: 10)".into());
                None
            }
            (PinQuery, Err(_)) => {
                if !self.retry_early(PinQuery, now) {
                    self.block("the SIM does not answer (AT+CPIN?)".into());
                }
                None
            }
            (PinEnter, Ok(_)) => {
                self.pin_tried = true;
                self.push_init(PinQuery, Some(now + PIN_SETTLE));
                None
            }
            (PinEnter, Err(e)) => {
                self.pin_tried = true;
                self.block(format!(
                    "the SIM refused the configured PIN ({}); fix modem.pin",
                    e.as_ref().map_or("timeout".into(), describe)
                ));
                None
            }
            (Manufacturer | Model | Revision | Imei, _) => {
                if let Ok(lines) = &outcome {
                    let value = identification(lines);
                    match step {
                        Manufacturer => self.info.manufacturer = value,
                        Model => self.info.model = value,
                        Revision => self.info.revision = value,
                        _ => self.info.imei = value,
                    }
                    self.out.push_back(Output::InfoChanged);
                }
                Some(match step {
                    Manufacturer => Model,
                    Model => Revision,
                    Revision => Imei,
                    _ => PduMode,
                })
            }
            (PduMode, Ok(_)) => Some(Storage),
            (PduMode, Err(_)) => {
                // SIMCom answers ERROR to SMS commands until "SMS Ready".
                if !self.retry_early(PduMode, now) {
                    self.block("the modem refuses PDU mode (AT+CMGF=0)".into());
                }
                None
            }
            (Storage, Ok(lines)) => {
                self.note_storage(lines);
                self.active = self.config.storage.clone();
                self.selected = self.active.clone();
                Some(Indications)
            }
            (Storage, Err(_)) => {
                self.storage_form += 1;
                if self.storage_form < STORAGE_FORMS {
                    Some(Storage)
                } else {
                    tracing::warn!(storage = %self.config.storage, "the modem refuses the message storage; using its default");
                    Some(Indications)
                }
            }
            (Indications, Ok(_)) => {
                self.info.new_message_mode = Some("indications".into());
                self.out.push_back(Output::InfoChanged);
                Some(OperatorFormat)
            }
            (Indications, Err(_)) => {
                self.indication_try += 1;
                if self.indication_try <= INDICATION_FALLBACKS.len() {
                    Some(Indications)
                } else {
                    tracing::warn!(
                        "the modem has no new-message indications (+CNMI); polling instead"
                    );
                    self.polling = true;
                    self.info.new_message_mode = Some("polling".into());
                    self.out.push_back(Output::InfoChanged);
                    Some(OperatorFormat)
                }
            }
            (OperatorFormat, _) => {
                if self.config.init_commands.is_empty() {
                    self.init_finished(now);
                    None
                } else {
                    Some(Extra(0))
                }
            }
            (Extra(i), result) => {
                if let Err(e) = result {
                    tracing::warn!(command = ?self.config.init_commands.get(i), result = ?e, "extra init command refused");
                }
                if i + 1 < self.config.init_commands.len() {
                    Some(Extra(i + 1))
                } else {
                    self.init_finished(now);
                    None
                }
            }
        };
        if let Some(step) = next {
            self.push_init(step, None);
        }
    }

    fn init_finished(&mut self, now: Instant) {
        self.ready = true;
        self.queue_health();
        self.next_health = now + self.config.health_interval;
        // Messages that arrived while nobody listened are picked up first.
        self.next_sweep = now;
        self.out.push_back(Output::Ready);
    }

    fn note_storage(&mut self, lines: &[String]) {
        if let Some(v) = lines.iter().find_map(|l| value_after(l, "+CPMS:")) {
            let fields = split_fields(v);
            if let (Some(used), Some(total)) = (fields.first(), fields.get(1)) {
                self.info.storage = Some(format!("{} {used}/{total}", self.config.storage));
                self.out.push_back(Output::InfoChanged);
            }
        }
    }

    fn queue_health(&mut self) {
        for (h, line, expect) in [
            (Health::Signal, "AT+CSQ", "+CSQ:"),
            (Health::Registration, "AT+CREG?", "+CREG:"),
            (Health::Operator, "AT+COPS?", "+COPS:"),
        ] {
            let already = self.queue.iter().any(|c| c.purpose == Purpose::Health(h));
            if !already {
                let c = self.command(line.into(), Purpose::Health(h), Some(expect));
                self.queue.push_back(c);
            }
        }
    }

    fn health_done(&mut self, h: Health, lines: &[String]) {
        match h {
            Health::Signal => {
                let rssi = lines
                    .iter()
                    .find_map(|l| value_after(l, "+CSQ:"))
                    .and_then(|v| split_fields(v).first().and_then(|f| f.parse::<u8>().ok()));
                if let Some(rssi) = rssi {
                    self.set_signal(rssi);
                }
            }
            Health::Registration => {
                // Answer form: +CREG: <n>,<stat>[,<lac>,<ci>[,<AcT>]]
                let stat = lines
                    .iter()
                    .find_map(|l| value_after(l, "+CREG:"))
                    .and_then(|v| split_fields(v).get(1).and_then(|f| f.parse::<u8>().ok()));
                if let Some(stat) = stat {
                    self.set_registration(stat);
                }
            }
            Health::Operator => {
                // +COPS: <mode>[,<format>,"<oper>"[,<AcT>]]
                let name = lines
                    .iter()
                    .find_map(|l| value_after(l, "+COPS:"))
                    .and_then(|v| {
                        split_fields(v)
                            .get(2)
                            .map(|s| s.trim_matches('"').to_string())
                    })
                    .filter(|s| !s.is_empty());
                if self.info.operator != name {
                    self.info.operator = name;
                    self.out.push_back(Output::InfoChanged);
                }
            }
        }
    }

    fn set_signal(&mut self, rssi: u8) {
        let dbm = (rssi <= 31).then(|| -113 + 2 * i32::from(rssi));
        if self.info.signal_rssi != Some(rssi) {
            self.info.signal_rssi = Some(rssi);
            self.info.signal_dbm = dbm;
            self.out.push_back(Output::InfoChanged);
        }
    }

    fn set_registration(&mut self, stat: u8) {
        let text = match stat {
            0 => "not_registered",
            1 => "home",
            2 => "searching",
            3 => "denied",
            5 => "roaming",
            _ => "unknown",
        };
        if self.info.registration.as_deref() != Some(text) {
            self.info.registration = Some(text.into());
            self.out.push_back(Output::InfoChanged);
        }
    }

    fn on_urc(&mut self, urc: Urc) {
        match urc {
            Urc::NewMessage { memory, index } => self.fetch(memory, index, false),
            Urc::NewStatusReport { memory, index } => self.fetch(memory, index, true),
            Urc::Deliver { pdu: Some(pdu), .. } => self.out.push_back(Output::Received {
                pdu,
                slot: Slot::Direct,
            }),
            Urc::StatusReport { pdu: Some(pdu), .. } => self.out.push_back(Output::Report {
                pdu,
                slot: Slot::Direct,
            }),
            Urc::Deliver { pdu: None, .. } | Urc::StatusReport { pdu: None, .. } => {
                tracing::warn!("the modem announced a message without its PDU; sweeping storage");
                if self.is_ready() {
                    self.queue_list();
                }
            }
            Urc::Registration {
                stat: Some(stat), ..
            } => self.set_registration(stat),
            Urc::Signal(rssi) => self.set_signal(rssi),
            Urc::SimStatus(state) => {
                let state = state.trim_matches('"').to_ascii_uppercase();
                if self.info.sim.as_deref() != Some(state.as_str()) {
                    self.info.sim = Some(state);
                    self.out.push_back(Output::InfoChanged);
                }
            }
            // SIMCom prints RDY when it (re)starts: everything set up is gone. (Huawei's ^BOOT
            // looks similar but is a periodic keep-alive.)
            Urc::Ready => {
                if self.ready {
                    tracing::warn!("the modem restarted by itself");
                    self.out.push_back(Output::Unresponsive);
                }
            }
            other => tracing::trace!(urc = ?other, "unsolicited"),
        }
    }

    /// Reads a message the modem announced at `index`.
    fn fetch(&mut self, memory: String, index: i64, report: bool) {
        let (Ok(index), true) = (u32::try_from(index), !memory.is_empty() || report) else {
            // "+CMTI: ,-1" (SIM7000G): the message cannot be read by index; a sweep finds it.
            if self.is_ready() {
                self.queue_list();
            }
            return;
        };
        let memory = if memory.is_empty() {
            self.config.storage.clone()
        } else {
            memory.trim_matches('"').to_string()
        };
        let slot = Slot::Stored { memory, index };
        if self.pending.contains(&slot) {
            self.announced_while_pending.insert(slot);
            return;
        }
        self.queue_read(slot, report);
    }

    fn queue_read(&mut self, slot: Slot, report_hint: bool) {
        let Slot::Stored { memory, index } = &slot else {
            return;
        };
        let (memory, index) = (memory.clone(), *index);
        self.select_memory(&memory);
        let mut read = self.command(
            format!("AT+CMGR={index}"),
            Purpose::Read { slot, report_hint },
            Some("+CMGR:"),
        );
        read.memory = Some(memory);
        self.queue.push_back(read);
        self.restore_memory();
    }

    fn select_memory(&mut self, memory: &str) {
        if memory != self.selected {
            let line = format!(
                "AT+CPMS=\"{memory}\",\"{s}\",\"{s}\"",
                s = self.config.storage
            );
            let c = self.command(
                line,
                Purpose::Select {
                    memory: memory.to_string(),
                },
                Some("+CPMS:"),
            );
            self.queue.push_back(c);
            self.selected = memory.to_string();
        }
    }

    fn restore_memory(&mut self) {
        let storage = self.config.storage.clone();
        if self.selected != storage {
            self.select_memory(&storage);
        }
    }

    /// Lists the storage, and the status-report memory where reports may wait unannounced.
    fn queue_list(&mut self) {
        let storage = self.config.storage.clone();
        self.queue_list_of(&storage);
        if !self.no_report_memory && storage != "SR" {
            self.queue_list_of("SR");
        }
    }

    fn queue_list_of(&mut self, memory: &str) {
        let purpose = Purpose::List {
            memory: memory.to_string(),
        };
        if self.queue.iter().any(|c| c.purpose == purpose) {
            return;
        }
        self.select_memory(memory);
        let mut list = self.command("AT+CMGL=4".into(), purpose, Some("+CMGL:"));
        list.memory = Some(memory.to_string());
        self.queue.push_back(list);
        self.restore_memory();
    }

    /// A read or delete that will not happen: its slot may be handed out again later.
    fn forget_pending(&mut self, purpose: &Purpose) {
        if let Purpose::Read { slot, .. } | Purpose::Delete { slot } = purpose {
            self.pending.remove(slot);
        }
    }

    fn read_done(
        &mut self,
        slot: Slot,
        report_hint: bool,
        outcome: Result<Vec<String>, Option<FinalResult>>,
    ) {
        let lines = match outcome {
            Ok(lines) => lines,
            Err(e) => {
                tracing::debug!(?slot, result = ?e, "reading a stored message failed");
                return;
            }
        };
        let Some((stat, pdu)) = stored_pdus(&lines, "+CMGR:").into_iter().next() else {
            // Quectel EC25 names "SM" in +CDSI for a report it stored in "SR": read there.
            if let Slot::Stored { memory, index } = &slot
                && report_hint
                && memory != "SR"
            {
                self.queue_read(
                    Slot::Stored {
                        memory: "SR".into(),
                        index: *index,
                    },
                    true,
                );
            } else {
                tracing::debug!(?slot, "nothing stored there");
            }
            return;
        };
        self.hand_out(stat, pdu, slot);
    }

    fn list_done(&mut self, memory: &str, lines: &[String]) {
        for (index, stat, pdu) in listed_pdus(lines) {
            let slot = Slot::Stored {
                memory: memory.to_string(),
                index,
            };
            self.hand_out(stat, pdu, slot);
        }
    }

    /// Hands a stored PDU to the driver once. Stored outgoing messages (stat 2/3) are not ours
    /// to read or delete.
    fn hand_out(&mut self, stat: Option<u8>, pdu: String, slot: Slot) {
        if matches!(stat, Some(2 | 3)) || self.pending.contains(&slot) {
            return;
        }
        self.pending.insert(slot.clone());
        // The first octet after the SCA says what it is; MTI 2 is a status report.
        if pdu_is_status_report(&pdu) {
            self.out.push_back(Output::Report { pdu, slot });
        } else {
            self.out.push_back(Output::Received { pdu, slot });
        }
    }
}

/// Human words for a final result.
pub fn describe(result: &FinalResult) -> String {
    match result {
        FinalResult::Ok => "OK".into(),
        FinalResult::Error => "ERROR".into(),
        FinalResult::CmeError(ErrorCode::Number(n)) => format!("+CME ERROR: {n}"),
        FinalResult::CmeError(ErrorCode::Text(t)) => format!("+CME ERROR: {t}"),
        FinalResult::CmsError(ErrorCode::Number(n)) => {
            format!("+CMS ERROR: {n} ({})", cms_meaning(*n))
        }
        FinalResult::CmsError(ErrorCode::Text(t)) => format!("+CMS ERROR: {t}"),
        FinalResult::NotSupported(t) => t.clone(),
    }
}

/// TS 24.011 / 27.005 meanings of the `+CMS ERROR` codes seen in practice.
fn cms_meaning(code: u16) -> &'static str {
    match code {
        1 => "unassigned number",
        8 => "operator determined barring",
        10 => "call barred",
        21 => "short message transfer rejected",
        27 => "destination out of service",
        28 => "unidentified subscriber",
        29 => "facility rejected",
        30 => "unknown subscriber",
        38 => "network out of order",
        41 => "temporary failure",
        42 => "congestion",
        47 => "resources unavailable",
        50 => "requested facility not subscribed",
        96 => "invalid mandatory information",
        300 => "ME failure",
        301 => "SMS service of ME reserved",
        302 => "operation not allowed",
        303 => "operation not supported",
        304 => "invalid PDU mode parameter",
        305 => "invalid text mode parameter",
        310 => "SIM not inserted",
        311 => "SIM PIN required",
        313 => "SIM failure",
        314 => "SIM busy",
        321 => "invalid memory index",
        322 => "memory full",
        330 => "SMSC address unknown",
        331 => "no network service",
        332 => "network timeout",
        500 => "unknown error",
        _ => "see TS 27.005",
    }
}

/// The prefix of a command's information lines: "AT+CPMS=..." -> "+CPMS:".
fn answer_prefix(line: &str) -> Option<String> {
    let body = line
        .get(2..)
        .filter(|_| starts_with_ignore_case(line, "AT"))?;
    if !(body.starts_with('+') || body.starts_with('^')) {
        return None;
    }
    let name: String = body
        .chars()
        .take_while(|c| !matches!(c, '=' | '?'))
        .collect();
    Some(format!("{}:", name.to_ascii_uppercase()))
}

fn starts_with_ignore_case(line: &str, prefix: &str) -> bool {
    line.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// The text after `prefix` ("+CSQ:") on `line`, trimmed.
fn value_after<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    if starts_with_ignore_case(line, prefix) {
        line.get(prefix.len()..).map(str::trim)
    } else {
        None
    }
}

/// Comma-separated fields, each trimmed (quotes kept: "SM" stays "\"SM\"" only when nested).
fn split_fields(value: &str) -> Vec<String> {
    value.split(',').map(|f| f.trim().to_string()).collect()
}

/// `+CMGS: <mr>` -> mr.
fn cmgs_reference(line: &str) -> Option<u8> {
    let v = value_after(line, "+CMGS:")?;
    let first = v.split(',').next()?.trim();
    first.parse::<u16>().ok().map(|n| (n % 256) as u8)
}

/// An identification answer: its lines without the echoed prefix, joined (Nokia prints several).
fn identification(lines: &[String]) -> Option<String> {
    let text: Vec<&str> = lines
        .iter()
        .map(|l| {
            l.split_once(':')
                .filter(|(head, _)| head.starts_with('+'))
                .map_or(l.as_str(), |(_, rest)| rest)
                .trim()
        })
        .filter(|l| !l.is_empty())
        .collect();
    (!text.is_empty()).then(|| text.join(" "))
}

fn is_hex_line(line: &str) -> bool {
    let t = line.trim().trim_end_matches('"');
    t.len() >= 2 && t.bytes().all(|b| b.is_ascii_hexdigit())
}

/// PDUs after `+CMGR:` headers: (stat, pdu).
fn stored_pdus(lines: &[String], header: &str) -> Vec<(Option<u8>, String)> {
    let mut out = Vec::new();
    let mut iter = lines.iter().peekable();
    while let Some(line) = iter.next() {
        if let Some(v) = value_after(line, header)
            && let Some(next) = iter.peek()
            && is_hex_line(next)
        {
            let stat = v.split(',').next().and_then(|s| s.trim().parse().ok());
            out.push((stat, next.trim().to_string()));
            iter.next();
        }
    }
    out
}

/// PDUs of an `AT+CMGL` listing: (index, stat, pdu).
fn listed_pdus(lines: &[String]) -> Vec<(u32, Option<u8>, String)> {
    let mut out = Vec::new();
    let mut iter = lines.iter().peekable();
    while let Some(line) = iter.next() {
        let Some(v) = value_after(line, "+CMGL:") else {
            continue;
        };
        let fields = split_fields(v);
        let index = fields.first().and_then(|f| f.parse::<u32>().ok());
        let stat = fields.get(1).and_then(|f| f.parse::<u8>().ok());
        if let (Some(index), Some(next)) = (index, iter.peek())
            && is_hex_line(next)
        {
            out.push((index, stat, next.trim().to_string()));
            iter.next();
        }
    }
    out
}

/// Whether a PDU (SCA first) is an SMS-STATUS-REPORT (MTI 2), from its first octets only.
fn pdu_is_status_report(pdu: &str) -> bool {
    let byte = |i: usize| {
        pdu.get(i * 2..i * 2 + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
    };
    let Some(sca_len) = byte(0) else {
        return false;
    };
    byte(usize::from(sca_len) + 1).is_some_and(|fo| fo & 0x03 == 0x02)
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
