//! SMPP 3.4 ESME (client) session as a state machine without I/O.
//!
//! The task that owns the TCP connection drives a [`Session`]:
//!
//! 1. [`Session::new`] queues the bind;
//! 2. every decoded [`Frame`] goes to [`Session::on_frame`], and
//!    [`Session::on_tick`] is called at [`Session::next_deadline`];
//! 3. after each call, [`Session::poll_output`] is drained: `Send` commands
//!    are written in order, the other outputs are acted upon;
//! 4. [`Output::Closed`] is always the last output: write the `Send`s queued
//!    before it (e.g. an unbind_resp), then drop the connection. If the
//!    transport fails first, call [`Session::connection_lost`].
//!
//! The machine never reads the clock: every entry point takes `now`.
//! Nothing a peer sends can make it panic or grow without bound: requests
//! in flight are bounded by the window (plus one enquire_link and one
//! unbind), deliveries awaiting acknowledgement by
//! [`MAX_UNACKED_DELIVERIES`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rusmpp::{Command, CommandId, CommandStatus, Pdu, pdus::DataSmResp, types::COctetString};

use super::frame::{
    self, BindFields, BindMode, ESME_RINVCMDID, ESME_RINVCMDLEN, ESME_ROK, Frame, FrameError,
    SubmitFields,
};

/// ESME_RINVMSGLEN: message length invalid.
pub const ESME_RINVMSGLEN: u32 = 0x01;
/// ESME_RINVBNDSTS: command not allowed in the current bind state.
pub const ESME_RINVBNDSTS: u32 = 0x04;
/// ESME_RALYBND: already bound.
pub const ESME_RALYBND: u32 = 0x05;
/// ESME_RBINDFAIL: bind failed.
pub const ESME_RBINDFAIL: u32 = 0x0D;
/// ESME_RINVPASWD: invalid password.
pub const ESME_RINVPASWD: u32 = 0x0E;
/// ESME_RINVSYSID: invalid system_id.
pub const ESME_RINVSYSID: u32 = 0x0F;
/// ESME_RMSGQFUL: message queue full.
pub const ESME_RMSGQFUL: u32 = 0x14;
/// ESME_RSUBMITFAIL: submit_sm or submit_multi failed.
pub const ESME_RSUBMITFAIL: u32 = 0x45;
/// ESME_RINVSYSTYP: invalid system_type.
pub const ESME_RINVSYSTYP: u32 = 0x53;
/// ESME_RTHROTTLED: throttling error, the ESME exceeded allowed rates.
pub const ESME_RTHROTTLED: u32 = 0x58;
/// ESME_RX_T_APPN: temporary application error; the SMSC retries later.
pub const ESME_RX_T_APPN: u32 = 0x64;
/// ESME_RX_P_APPN: permanent application error; for deliveries that can never be read, so
/// the sender stops offering them.
pub const ESME_RX_P_APPN: u32 = 0x65;

/// Highest sequence number (SMPP 3.4 §3.2: 0x00000001..=0x7FFFFFFF).
pub const MAX_SEQUENCE_NUMBER: u32 = 0x7FFF_FFFF;

/// Deliveries handed out as [`Output::Deliver`] and not yet acknowledged
/// beyond which new ones are refused with ESME_RX_T_APPN (the SMSC retries
/// later), so a caller that stops acknowledging cannot make memory grow.
pub const MAX_UNACKED_DELIVERIES: usize = 1000;

/// Session parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Which bind to send.
    pub bind_mode: BindMode,
    /// The bind's body.
    pub bind: BindFields,
    /// Submits in flight at most (0 is taken as 1).
    pub window: usize,
    /// Time allowed for the response to a submit_sm or enquire_link.
    pub response_timeout: Duration,
    /// Silence from the peer after which an enquire_link is sent.
    pub enquire_link_interval: Duration,
    /// Time allowed for the bind response.
    pub bind_timeout: Duration,
    /// Time allowed, after [`Session::unbind`], for the unbind_resp and the
    /// responses to submits in flight.
    pub unbind_timeout: Duration,
    /// Submit response timeouts in a row (no submit response in between)
    /// after which the link is closed (0 is taken as 1).
    pub max_consecutive_timeouts: u32,
}

impl SessionConfig {
    /// A configuration with common defaults: window 10, responses within
    /// 10 s, enquire_link after 30 s of silence, bind within 10 s, unbind
    /// within 5 s, close after 3 timeouts in a row.
    pub fn new(bind_mode: BindMode, bind: BindFields) -> Self {
        Self {
            bind_mode,
            bind,
            window: 10,
            response_timeout: Duration::from_secs(10),
            enquire_link_interval: Duration::from_secs(30),
            bind_timeout: Duration::from_secs(10),
            unbind_timeout: Duration::from_secs(5),
            max_consecutive_timeouts: 3,
        }
    }
}

/// What the session asks of its driver, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write this command.
    Send(Command),
    /// The bind succeeded: submits may flow (unless bound as receiver).
    Bound {
        /// The SMSC's system_id from the bind response.
        system_id: String,
    },
    /// The bind was refused; [`Output::Closed`] follows.
    BindFailed {
        /// The command_status of the bind response or generic_nack.
        status: u32,
        /// Credentials or account problem (see [`bind_failure_is_permanent`]):
        /// back off long and report; otherwise retry soon.
        permanent: bool,
    },
    /// Outcome of [`Session::submit`] for `token`; exactly one per accepted
    /// submit.
    Submitted {
        /// The caller's token.
        token: u64,
        /// The SMSC's message_id as given, or why there is none.
        result: Result<String, SubmitError>,
    },
    /// A deliver_sm or data_sm from the SMSC. Commit it, then call
    /// [`Session::ack_deliver`] with `sequence_number`.
    Deliver {
        /// Sequence number to acknowledge.
        sequence_number: u32,
        /// The deliver_sm or data_sm as received.
        command: Command,
    },
    /// The connection must be dropped (after writing the `Send`s queued
    /// before this). Every submit in flight has already been reported as
    /// [`SubmitErrorKind::Interrupted`]; this is the last output.
    Closed {
        /// Why, for logs.
        reason: String,
    },
}

/// Why a submit did not yield a message_id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {reason}")]
pub struct SubmitError {
    /// The SMSC's command_status, when it sent one.
    pub status: Option<u32>,
    /// What to do about it.
    pub kind: SubmitErrorKind,
    /// Human-readable cause, for logs.
    pub reason: String,
}

/// How the caller should treat a failed submit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitErrorKind {
    /// ESME_RTHROTTLED: retry the message, and slow down the whole link.
    Throttled,
    /// Transient: retry later (possibly on another link).
    Retry,
    /// The SMSC will never accept this message as it is.
    Permanent,
    /// The link closed while the submit was in flight: the SMSC may or may
    /// not have the message.
    Interrupted,
}

/// [`Session::submit`] was called while [`Session::can_submit`] is false.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "SMPP session cannot take a submit now (not bound as transmitter, unbinding, or window full)"
)]
pub struct NotReady;

/// Classifies a submit_sm_resp error status (SMPP 3.4 §5.1.3).
///
/// | status | kind | why |
/// |---|---|---|
/// | 0x58 RTHROTTLED | Throttled | rate limit of the account, not of this message |
/// | 0x08 RSYSERR | Retry | SMSC-side fault |
/// | 0x14 RMSGQFUL | Retry | SMSC queue full, clears with time |
/// | 0x45 RSUBMITFAIL | Retry | unspecified SMSC failure; usually routing/transient |
/// | 0x64 RX_T_APPN | Retry | "temporary" by definition |
/// | 0x04 RINVBNDSTS | Retry | the SMSC disagrees about the bind, not the message |
/// | 0x01 RINVMSGLEN, 0x02 RINVCMDLEN, 0x03 RINVCMDID | Permanent | our PDU is wrong; resending it unchanged fails again |
/// | 0x0A RINVSRCADR, 0x0B RINVDSTADR, 0x48..0x51 TON/NPI | Permanent | addressing of this message |
/// | 0x06, 0x07, 0x0C, 0x15, 0x43, 0x54, 0x61, 0x62, 0x63, 0xC0..0xC4 | Permanent | a field of this message |
/// | 0x65 RX_P_APPN, 0x66 RX_R_APPN | Permanent | "permanent" / "reject" by definition |
/// | anything else (incl. vendor 0x400..0x4FF) | Permanent | unknown meaning: do not loop on it |
///
/// The default is Permanent, as in Kannel: retrying an unknown refusal
/// risks an endless loop, and a vendor code known to be transient can be
/// special-cased by the caller from [`SubmitError::status`].
pub fn classify_submit_status(status: u32) -> SubmitErrorKind {
    match status {
        ESME_RTHROTTLED => SubmitErrorKind::Throttled,
        frame::ESME_RSYSERR
        | ESME_RMSGQFUL
        | ESME_RSUBMITFAIL
        | ESME_RX_T_APPN
        | ESME_RINVBNDSTS => SubmitErrorKind::Retry,
        _ => SubmitErrorKind::Permanent,
    }
}

/// Whether a bind refusal is permanent: RBINDFAIL 0x0D, RINVPASWD 0x0E,
/// RINVSYSID 0x0F and RINVSYSTYP 0x53 mean the account or credentials are
/// wrong, which retrying will not fix; anything else (RSYSERR, RTHROTTLED,
/// RALYBND while the SMSC still holds an old session, ...) may clear.
pub fn bind_failure_is_permanent(status: u32) -> bool {
    matches!(
        status,
        ESME_RBINDFAIL | ESME_RINVPASWD | ESME_RINVSYSID | ESME_RINVSYSTYP
    )
}

/// data_sm_resp with `status` and an empty message_id (frame.rs has only
/// deliver_sm_resp).
pub fn data_sm_resp(sequence_number: u32, status: u32) -> Command {
    Command::new(
        CommandStatus::from(status),
        sequence_number,
        DataSmResp::new(COctetString::empty(), Vec::new()),
    )
}

/// A request of ours awaiting its response.
#[derive(Debug, Clone, Copy)]
struct Request {
    kind: Kind,
    deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bind,
    Submit { token: u64 },
    EnquireLink,
    Unbind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Binding,
    Bound,
    /// Our unbind is out; `resp` once its response came.
    Unbinding {
        deadline: Instant,
        resp: bool,
    },
    Closed,
}

/// Which response a delivery awaiting acknowledgement needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    DeliverSm,
    DataSm,
}

impl Delivery {
    fn resp(self, sequence_number: u32, status: u32) -> Command {
        match self {
            Self::DeliverSm => frame::deliver_sm_resp(sequence_number, status),
            Self::DataSm => data_sm_resp(sequence_number, status),
        }
    }
}

/// `now + d`, saturating far in the future instead of panicking on an
/// absurd configured duration.
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

pub(crate) fn status_text(status: u32) -> String {
    match frame::status_name(status) {
        Some(name) => format!("{name} (0x{status:08X})"),
        None => format!("0x{status:08X}"),
    }
}

/// A C-octet string as text; lossy, as it only feeds logs and ids.
pub(crate) fn c_text<const MIN: usize, const MAX: usize>(s: &COctetString<MIN, MAX>) -> String {
    let bytes: &[u8] = s.as_ref();
    String::from_utf8_lossy(bytes.strip_suffix(&[0]).unwrap_or(bytes)).into_owned()
}

/// The next sequence number from `next` (1..=[`MAX_SEQUENCE_NUMBER`], wrapping) that is not
/// `in_use`; both session sides use it. Terminates: the numbers in flight are bounded by a
/// window, far below 2^31 - 1.
pub(crate) fn next_free_seq(next: &mut u32, in_use: impl Fn(u32) -> bool) -> u32 {
    loop {
        let seq = *next;
        *next = if seq >= MAX_SEQUENCE_NUMBER {
            1
        } else {
            seq + 1
        };
        if !in_use(seq) {
            return seq;
        }
    }
}

pub(crate) fn is_response_id(command_id: u32) -> bool {
    command_id & 0x8000_0000 != 0
}

/// An SMPP 3.4 ESME session; see the module documentation.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    /// Next sequence number to try, in 1..=MAX_SEQUENCE_NUMBER.
    next_seq: u32,
    requests: HashMap<u32, Request>,
    /// Submits among `requests`.
    submits: usize,
    /// Sequence number of our enquire_link in flight.
    enquire_link: Option<u32>,
    deliveries: HashMap<u32, Delivery>,
    last_rx: Instant,
    consecutive_timeouts: u32,
    outputs: VecDeque<Output>,
}

impl Session {
    /// Starts a session: the bind is the first output. Fails if the bind
    /// fields cannot be encoded (too long, not ASCII).
    pub fn new(mut config: SessionConfig, now: Instant) -> Result<Self, FrameError> {
        config.window = config.window.max(1);
        config.max_consecutive_timeouts = config.max_consecutive_timeouts.max(1);
        let bind = frame::bind(config.bind_mode, 1, &config.bind)?;
        let mut session = Self {
            state: State::Binding,
            next_seq: 2,
            requests: HashMap::new(),
            submits: 0,
            enquire_link: None,
            deliveries: HashMap::new(),
            last_rx: now,
            consecutive_timeouts: 0,
            outputs: VecDeque::new(),
            config,
        };
        session.requests.insert(
            1,
            Request {
                kind: Kind::Bind,
                deadline: after(now, session.config.bind_timeout),
            },
        );
        session.outputs.push_back(Output::Send(bind));
        Ok(session)
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Whether [`Session::submit`] would be accepted: bound as transmitter
    /// or transceiver, not unbinding, window not full.
    pub fn can_submit(&self) -> bool {
        self.state == State::Bound
            && self.config.bind_mode != BindMode::Receiver
            && self.submits < self.config.window
    }

    /// Submits in flight (enquire_link and unbind are not counted).
    pub fn in_flight(&self) -> usize {
        self.submits
    }

    /// Whether the bind succeeded and the session is neither closed nor
    /// unbinding.
    pub fn is_bound(&self) -> bool {
        self.state == State::Bound
    }

    /// Whether [`Output::Closed`] has been emitted.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// When [`Session::on_tick`] must be called next; `None` once closed.
    pub fn next_deadline(&self) -> Option<Instant> {
        let requests = self.requests.values().map(|r| r.deadline);
        let state = match self.state {
            State::Closed => return None,
            State::Binding => None,
            State::Unbinding { deadline, .. } => Some(deadline),
            State::Bound => self
                .enquire_link
                .is_none()
                .then(|| after(self.last_rx, self.config.enquire_link_interval)),
        };
        requests.chain(state).min()
    }

    /// Sends a submit_sm for `fields`; its outcome comes later as
    /// [`Output::Submitted`] with `token`. Fields the SMSC could never
    /// accept (too long, not ASCII, ...) are reported at once as
    /// [`SubmitErrorKind::Permanent`] without being sent.
    pub fn submit(
        &mut self,
        token: u64,
        fields: SubmitFields,
        now: Instant,
    ) -> Result<(), NotReady> {
        if !self.can_submit() {
            return Err(NotReady);
        }
        let seq = self.alloc_seq();
        match frame::submit_sm(seq, &fields) {
            Ok(command) => {
                self.requests.insert(
                    seq,
                    Request {
                        kind: Kind::Submit { token },
                        deadline: after(now, self.config.response_timeout),
                    },
                );
                self.submits += 1;
                self.outputs.push_back(Output::Send(command));
            }
            Err(e) => self.outputs.push_back(Output::Submitted {
                token,
                result: Err(SubmitError {
                    status: None,
                    kind: SubmitErrorKind::Permanent,
                    reason: e.to_string(),
                }),
            }),
        }
        Ok(())
    }

    /// Answers the delivery `sequence_number` (from [`Output::Deliver`])
    /// with `status`: 0 once committed, or e.g. [`ESME_RX_T_APPN`] so the
    /// SMSC retries. Unknown or already acknowledged numbers are ignored.
    pub fn ack_deliver(&mut self, sequence_number: u32, status: u32, _now: Instant) {
        if self.state == State::Closed {
            return;
        }
        match self.deliveries.remove(&sequence_number) {
            Some(kind) => self
                .outputs
                .push_back(Output::Send(kind.resp(sequence_number, status))),
            None => tracing::warn!(sequence_number, "ack for no delivery awaiting one"),
        }
    }

    /// Starts a graceful unbind: no more submits; submits in flight are
    /// reported as their responses come, or as Interrupted at
    /// `unbind_timeout`; then [`Output::Closed`]. Before the bind completed
    /// there is nothing to unbind: the session closes at once.
    pub fn unbind(&mut self, now: Instant) {
        match self.state {
            State::Binding => self.close("unbind requested before bound".into()),
            State::Bound => {
                let deadline = after(now, self.config.unbind_timeout);
                let seq = self.alloc_seq();
                self.requests.insert(
                    seq,
                    Request {
                        kind: Kind::Unbind,
                        deadline,
                    },
                );
                self.state = State::Unbinding {
                    deadline,
                    resp: false,
                };
                self.outputs.push_back(Output::Send(frame::unbind(seq)));
            }
            State::Unbinding { .. } | State::Closed => {}
        }
    }

    /// The transport failed (EOF, I/O error, framing lost): submits in
    /// flight are reported Interrupted, then [`Output::Closed`].
    pub fn connection_lost(&mut self, reason: &str) {
        self.close(format!("connection lost: {reason}"));
    }

    /// Handles one frame from the peer.
    pub fn on_frame(&mut self, frame: Frame, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        // Any traffic proves the link alive: the enquire_link timer restarts.
        self.last_rx = now;
        match frame {
            Frame::Pdu(command) => {
                if is_response_id(u32::from(command.id())) {
                    self.on_response(command);
                } else {
                    self.on_request(command);
                }
            }
            Frame::Invalid {
                sequence_number,
                command_id,
                command_status,
                reason,
            } => self.on_invalid(sequence_number, command_id, command_status, &reason),
        }
    }

    /// Handles the passing of time: response timeouts, bind and unbind
    /// timeouts, enquire_link.
    pub fn on_tick(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        let mut expired: Vec<(Instant, u32)> = self
            .requests
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(&seq, r)| (r.deadline, seq))
            .collect();
        expired.sort_unstable();
        for (_, seq) in expired {
            if self.state == State::Closed {
                return;
            }
            let Some(request) = self.requests.remove(&seq) else {
                continue;
            };
            match request.kind {
                Kind::Submit { token } => {
                    self.submits -= 1;
                    self.consecutive_timeouts += 1;
                    tracing::warn!(
                        sequence_number = seq,
                        consecutive = self.consecutive_timeouts,
                        "submit_sm response timeout"
                    );
                    self.outputs.push_back(Output::Submitted {
                        token,
                        result: Err(SubmitError {
                            status: None,
                            kind: SubmitErrorKind::Retry,
                            reason: "no response in time".into(),
                        }),
                    });
                    if self.consecutive_timeouts >= self.config.max_consecutive_timeouts {
                        let n = self.consecutive_timeouts;
                        self.close(format!("{n} submit_sm response timeouts in a row"));
                    } else {
                        self.maybe_unbound();
                    }
                }
                Kind::Bind => self.close("no bind response in time".into()),
                Kind::EnquireLink => self.close("enquire_link unanswered".into()),
                Kind::Unbind => self.close("no unbind_resp in time".into()),
            }
        }
        match self.state {
            State::Unbinding { deadline, .. } if deadline <= now => {
                self.close("responses still missing at unbind timeout".into());
            }
            State::Bound
                if self.enquire_link.is_none()
                    && after(self.last_rx, self.config.enquire_link_interval) <= now =>
            {
                let seq = self.alloc_seq();
                self.requests.insert(
                    seq,
                    Request {
                        kind: Kind::EnquireLink,
                        deadline: after(now, self.config.response_timeout),
                    },
                );
                self.enquire_link = Some(seq);
                self.outputs
                    .push_back(Output::Send(frame::enquire_link(seq)));
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------ internals

    /// The next free sequence number. Terminates: at most window + 3
    /// numbers are in flight out of 2^31 - 1.
    fn alloc_seq(&mut self) -> u32 {
        next_free_seq(&mut self.next_seq, |seq| self.requests.contains_key(&seq))
    }

    fn send(&mut self, command: Command) {
        self.outputs.push_back(Output::Send(command));
    }

    fn response_id(&self, kind: Kind) -> CommandId {
        match kind {
            Kind::Bind => match self.config.bind_mode {
                BindMode::Transmitter => CommandId::BindTransmitterResp,
                BindMode::Receiver => CommandId::BindReceiverResp,
                BindMode::Transceiver => CommandId::BindTransceiverResp,
            },
            Kind::Submit { .. } => CommandId::SubmitSmResp,
            Kind::EnquireLink => CommandId::EnquireLinkResp,
            Kind::Unbind => CommandId::UnbindResp,
        }
    }

    fn on_response(&mut self, command: Command) {
        let seq = command.sequence_number();
        let id = command.id();
        let status = u32::from(command.status());
        if id == CommandId::SubmitSmResp {
            // Even a late one shows the SMSC is processing submits.
            self.consecutive_timeouts = 0;
        }
        let Some(request) = self.requests.get(&seq).copied() else {
            tracing::debug!(
                sequence_number = seq,
                command = ?id,
                "response to no request in flight (late or bogus), ignored"
            );
            return;
        };
        if id == CommandId::GenericNack {
            self.requests.remove(&seq);
            self.on_failed_request(seq, request.kind, Some(status), "generic_nack");
            return;
        }
        if id != self.response_id(request.kind) {
            tracing::warn!(
                sequence_number = seq,
                command = ?id,
                expected = ?self.response_id(request.kind),
                "protocol error: response does not match the request, ignored"
            );
            return;
        }
        self.requests.remove(&seq);
        match request.kind {
            Kind::Bind => {
                if status == ESME_ROK {
                    let system_id = match command.pdu() {
                        Some(
                            Pdu::BindTransmitterResp(rusmpp::pdus::BindTransmitterResp {
                                system_id,
                                ..
                            })
                            | Pdu::BindReceiverResp(rusmpp::pdus::BindReceiverResp {
                                system_id, ..
                            })
                            | Pdu::BindTransceiverResp(rusmpp::pdus::BindTransceiverResp {
                                system_id,
                                ..
                            }),
                        ) => c_text(system_id),
                        _ => String::new(),
                    };
                    tracing::info!(%system_id, "SMPP bound");
                    self.state = State::Bound;
                    self.outputs.push_back(Output::Bound { system_id });
                } else {
                    self.on_failed_request(seq, Kind::Bind, Some(status), "bind refused");
                }
            }
            Kind::Submit { token } => {
                self.submits -= 1;
                let result = if status == ESME_ROK {
                    match command.pdu() {
                        Some(Pdu::SubmitSmResp(resp)) => Ok(c_text(resp.message_id())),
                        _ => {
                            // Accepted all the same: retrying would duplicate.
                            tracing::warn!(sequence_number = seq, "submit_sm_resp OK without body");
                            Ok(String::new())
                        }
                    }
                } else {
                    Err(SubmitError {
                        status: Some(status),
                        kind: classify_submit_status(status),
                        reason: format!("submit_sm_resp {}", status_text(status)),
                    })
                };
                self.outputs.push_back(Output::Submitted { token, result });
                self.maybe_unbound();
            }
            Kind::EnquireLink => self.enquire_link = None,
            Kind::Unbind => self.unbind_answered(),
        }
    }

    /// A request of ours answered by generic_nack (`status` given) or by a
    /// response we could not decode (`status` None).
    fn on_failed_request(&mut self, seq: u32, kind: Kind, status: Option<u32>, what: &str) {
        let text = status.map(status_text).unwrap_or_default();
        tracing::warn!(sequence_number = seq, ?kind, "{what} {text}");
        match kind {
            Kind::Bind => {
                let status = status.unwrap_or(frame::ESME_RSYSERR);
                self.outputs.push_back(Output::BindFailed {
                    status,
                    permanent: bind_failure_is_permanent(status),
                });
                self.close(format!("{what} {}", status_text(status)));
            }
            Kind::Submit { token } => {
                self.submits -= 1;
                self.consecutive_timeouts = 0;
                let kind = match status {
                    Some(ESME_RTHROTTLED) => SubmitErrorKind::Throttled,
                    _ => SubmitErrorKind::Retry,
                };
                self.outputs.push_back(Output::Submitted {
                    token,
                    result: Err(SubmitError {
                        status,
                        kind,
                        reason: format!("{what} {text}"),
                    }),
                });
                self.maybe_unbound();
            }
            // The peer answered, so the link is alive.
            Kind::EnquireLink => self.enquire_link = None,
            Kind::Unbind => self.unbind_answered(),
        }
    }

    fn unbind_answered(&mut self) {
        if let State::Unbinding { deadline, .. } = self.state {
            self.state = State::Unbinding {
                deadline,
                resp: true,
            };
        }
        self.maybe_unbound();
    }

    /// Closes once unbinding is complete: unbind_resp received and no
    /// submit left in flight.
    fn maybe_unbound(&mut self) {
        if matches!(self.state, State::Unbinding { resp: true, .. }) && self.submits == 0 {
            self.close("unbound".into());
        }
    }

    fn on_request(&mut self, command: Command) {
        let seq = command.sequence_number();
        let id = command.id();
        match id {
            CommandId::EnquireLink => self.send(frame::enquire_link_resp(seq)),
            CommandId::Unbind => {
                self.send(frame::unbind_resp(seq));
                self.close("peer unbound".into());
            }
            // No response exists for these: answering would confuse the peer.
            CommandId::AlertNotification | CommandId::Outbind => {
                tracing::debug!(sequence_number = seq, command = ?id, "ignored");
            }
            _ if self.state == State::Binding => {
                tracing::warn!(sequence_number = seq, command = ?id, "request before bound");
                self.send(frame::generic_nack(seq, ESME_RINVBNDSTS));
            }
            CommandId::DeliverSm => self.on_delivery(seq, Delivery::DeliverSm, command),
            CommandId::DataSm => self.on_delivery(seq, Delivery::DataSm, command),
            _ => {
                tracing::warn!(sequence_number = seq, command = ?id, "request not handled by an ESME");
                self.send(frame::generic_nack(seq, ESME_RINVCMDID));
            }
        }
    }

    fn on_delivery(&mut self, seq: u32, kind: Delivery, command: Command) {
        let refuse = if self.config.bind_mode == BindMode::Transmitter {
            Some(ESME_RINVBNDSTS)
        } else if self.state != State::Bound {
            // Unbinding: the link closes soon; the SMSC keeps it for later.
            Some(ESME_RX_T_APPN)
        } else if self.deliveries.len() >= MAX_UNACKED_DELIVERIES
            && !self.deliveries.contains_key(&seq)
        {
            Some(ESME_RX_T_APPN)
        } else {
            None
        };
        match refuse {
            Some(status) => {
                tracing::debug!(sequence_number = seq, status, "delivery refused");
                self.send(kind.resp(seq, status));
            }
            None => {
                self.deliveries.insert(seq, kind);
                self.outputs.push_back(Output::Deliver {
                    sequence_number: seq,
                    command,
                });
            }
        }
    }

    fn on_invalid(&mut self, seq: u32, command_id: u32, status: u32, reason: &str) {
        tracing::warn!(
            sequence_number = seq,
            command_id,
            status,
            reason,
            "invalid PDU"
        );
        if is_response_id(command_id) && frame::command_name(command_id).is_some() {
            // Never answer a response: the peer would apply a generic_nack
            // to its own request with that sequence number (sequence
            // numbers are per direction). A mangled answer to our request
            // fails that request.
            if let Some(request) = self.requests.get(&seq).copied()
                && (u32::from(self.response_id(request.kind)) == command_id
                    || command_id == u32::from(CommandId::GenericNack))
            {
                self.requests.remove(&seq);
                let what = format!("undecodable response ({reason})");
                self.on_failed_request(seq, request.kind, None, &what);
            }
            return;
        }
        // The header was sound, only the body is bad: SMPP answers with the
        // command's own response carrying the error.
        let own_resp = status != ESME_RINVCMDLEN;
        let reply = match command_id {
            0x0000_0005 if own_resp => frame::deliver_sm_resp(seq, status),
            0x0000_0103 if own_resp => data_sm_resp(seq, status),
            _ => frame::generic_nack(seq, status),
        };
        self.send(reply);
    }

    /// Reports every submit in flight as Interrupted, then Closed.
    fn close(&mut self, reason: String) {
        if self.state == State::Closed {
            return;
        }
        let mut submits: Vec<(Instant, u32, u64)> = self
            .requests
            .iter()
            .filter_map(|(&seq, r)| match r.kind {
                Kind::Submit { token } => Some((r.deadline, seq, token)),
                _ => None,
            })
            .collect();
        submits.sort_unstable();
        for (_, _, token) in submits {
            self.outputs.push_back(Output::Submitted {
                token,
                result: Err(SubmitError {
                    status: None,
                    kind: SubmitErrorKind::Interrupted,
                    reason: format!("link closed: {reason}"),
                }),
            });
        }
        self.requests.clear();
        self.deliveries.clear();
        self.submits = 0;
        self.enquire_link = None;
        self.state = State::Closed;
        tracing::info!(%reason, "SMPP session closed");
        self.outputs.push_back(Output::Closed { reason });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use frame::{Address, decode_one};

    const SUBMIT_SM: u32 = 0x0000_0004;
    const SUBMIT_SM_RESP: u32 = 0x8000_0004;
    const DELIVER_SM: u32 = 0x0000_0005;
    const DATA_SM: u32 = 0x0000_0103;
    const GENERIC_NACK: u32 = 0x8000_0000;
    const ENQUIRE_LINK: u32 = 0x0000_0015;
    const ENQUIRE_LINK_RESP: u32 = 0x8000_0015;
    const UNBIND: u32 = 0x0000_0006;
    const UNBIND_RESP: u32 = 0x8000_0006;
    const QUERY_SM: u32 = 0x0000_0003;
    const DELIVER_BODY: &[u8] =
        b"\0\x01\x01123\0\x01\x01456\0\x00\x00\x00\0\0\x00\x00\x00\x00\x02hi";
    const DATA_SM_BODY: &[u8] = b"\0\x01\x01123\0\x01\x01456\0\x00\x00\x00";

    /// A frame from the peer, through the real decoder.
    fn raw(command_id: u32, status: u32, seq: u32, body: &[u8]) -> Frame {
        let mut bytes = Vec::new();
        bytes.extend(((16 + body.len()) as u32).to_be_bytes());
        bytes.extend(command_id.to_be_bytes());
        bytes.extend(status.to_be_bytes());
        bytes.extend(seq.to_be_bytes());
        bytes.extend(body);
        decode_one(&bytes).expect("frame")
    }

    fn bind_resp_id(mode: BindMode) -> u32 {
        match mode {
            BindMode::Receiver => 0x8000_0001,
            BindMode::Transmitter => 0x8000_0002,
            BindMode::Transceiver => 0x8000_0009,
        }
    }

    fn submit_resp(seq: u32, message_id: &str) -> Frame {
        let mut body = message_id.as_bytes().to_vec();
        body.push(0);
        raw(SUBMIT_SM_RESP, 0, seq, &body)
    }

    fn config(mode: BindMode) -> SessionConfig {
        SessionConfig::new(
            mode,
            BindFields {
                system_id: "parla".into(),
                password: "secret".into(),
                ..BindFields::default()
            },
        )
    }

    fn fields() -> SubmitFields {
        SubmitFields {
            source: Address {
                ton: 5,
                npi: 0,
                addr: "parla".into(),
            },
            dest: Address {
                ton: 1,
                npi: 1,
                addr: "447700900000".into(),
            },
            short_message: b"hello".to_vec(),
            ..SubmitFields::default()
        }
    }

    fn drain(s: &mut Session) -> Vec<Output> {
        std::iter::from_fn(|| s.poll_output()).collect()
    }

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

    fn results(outputs: &[Output]) -> Vec<(u64, Result<String, SubmitErrorKind>)> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Submitted { token, result } => {
                    Some((*token, result.clone().map_err(|e| e.kind)))
                }
                _ => None,
            })
            .collect()
    }

    fn bound_with(config: SessionConfig) -> (Session, Instant) {
        let t = Instant::now();
        let mode = config.bind_mode;
        let mut s = Session::new(config, t).unwrap();
        drain(&mut s);
        s.on_frame(raw(bind_resp_id(mode), 0, 1, b"SMSC\0"), t);
        assert_eq!(
            drain(&mut s),
            [Output::Bound {
                system_id: "SMSC".into()
            }]
        );
        (s, t)
    }

    fn bound() -> (Session, Instant) {
        bound_with(config(BindMode::Transceiver))
    }

    /// Submits `token` and returns its sequence number.
    fn submit(s: &mut Session, token: u64, now: Instant) -> u32 {
        s.submit(token, fields(), now).unwrap();
        let out = drain(s);
        let [(SUBMIT_SM, 0, seq)] = sent(&out)[..] else {
            panic!("{out:?}");
        };
        seq
    }

    #[test]
    fn bind_success_in_each_mode() {
        for (mode, id) in [
            (BindMode::Transceiver, 0x09),
            (BindMode::Transmitter, 0x02),
            (BindMode::Receiver, 0x01),
        ] {
            let t = Instant::now();
            let mut s = Session::new(config(mode), t).unwrap();
            let out = drain(&mut s);
            assert_eq!(sent(&out), [(id, 0, 1)]);
            assert_eq!(
                out[0],
                Output::Send(frame::bind(mode, 1, &config(mode).bind).unwrap())
            );
            assert!(!s.can_submit() && !s.is_bound());
            assert_eq!(s.submit(1, fields(), t), Err(NotReady));
            assert_eq!(s.next_deadline(), Some(t + Duration::from_secs(10)));
            // A bind response of another mode is a protocol error.
            s.on_frame(raw(0x8000_0004 | 0x8000_0000, 0, 1, b"x\0"), t);
            assert!(drain(&mut s).is_empty());
            s.on_frame(raw(bind_resp_id(mode), 0, 1, b"SMSC\0"), t);
            assert_eq!(
                drain(&mut s),
                [Output::Bound {
                    system_id: "SMSC".into()
                }]
            );
            assert!(s.is_bound());
            assert_eq!(s.can_submit(), mode != BindMode::Receiver);
            assert_eq!(
                s.next_deadline(),
                Some(t + Duration::from_secs(30)),
                "enquire_link timer"
            );
        }
    }

    #[test]
    fn bind_failures() {
        for (status, permanent) in [
            (ESME_RBINDFAIL, true),
            (ESME_RINVPASWD, true),
            (ESME_RINVSYSID, true),
            (ESME_RINVSYSTYP, true),
            (frame::ESME_RSYSERR, false),
            (ESME_RTHROTTLED, false),
            (ESME_RALYBND, false),
        ] {
            let t = Instant::now();
            let mut s = Session::new(config(BindMode::Transmitter), t).unwrap();
            drain(&mut s);
            // Error responses may come without body.
            s.on_frame(raw(0x8000_0002, status, 1, b""), t);
            let out = drain(&mut s);
            assert_eq!(out[0], Output::BindFailed { status, permanent });
            assert!(matches!(out[1], Output::Closed { .. }));
            assert_eq!(out.len(), 2);
            assert!(s.is_closed() && !s.can_submit());
            assert_eq!(s.next_deadline(), None);
            s.on_frame(raw(ENQUIRE_LINK, 0, 9, b""), t);
            s.on_tick(t + Duration::from_secs(3600));
            assert!(drain(&mut s).is_empty());
        }
        // generic_nack to the bind.
        let t = Instant::now();
        let mut s = Session::new(config(BindMode::Transceiver), t).unwrap();
        drain(&mut s);
        s.on_frame(raw(GENERIC_NACK, ESME_RINVPASWD, 1, b""), t);
        let out = drain(&mut s);
        assert_eq!(
            out[0],
            Output::BindFailed {
                status: ESME_RINVPASWD,
                permanent: true
            }
        );
        assert!(matches!(out[1], Output::Closed { .. }));
        // Bind fields that cannot be encoded.
        let mut bad = config(BindMode::Transceiver);
        bad.bind.system_id = "much-too-long-system-id".into();
        assert!(Session::new(bad, t).is_err());
    }

    #[test]
    fn before_bound() {
        let t = Instant::now();
        let mut s = Session::new(config(BindMode::Transceiver), t).unwrap();
        drain(&mut s);
        s.on_frame(raw(DELIVER_SM, 0, 7, DELIVER_BODY), t);
        s.on_frame(raw(ENQUIRE_LINK, 0, 8, b""), t);
        s.on_frame(raw(SUBMIT_SM_RESP, 0, 99, b"x\0"), t);
        assert_eq!(
            sent(&drain(&mut s)),
            [
                (GENERIC_NACK, ESME_RINVBNDSTS, 7),
                (ENQUIRE_LINK_RESP, 0, 8)
            ]
        );
        s.on_tick(t + Duration::from_millis(9_999));
        assert!(drain(&mut s).is_empty());
        s.on_tick(t + Duration::from_secs(10));
        let out = drain(&mut s);
        assert!(
            matches!(&out[..], [Output::Closed { reason }] if reason.contains("bind")),
            "{out:?}"
        );
        // Peer unbinds before the bind response.
        let mut s = Session::new(config(BindMode::Transceiver), t).unwrap();
        drain(&mut s);
        s.on_frame(raw(UNBIND, 0, 3, b""), t);
        let out = drain(&mut s);
        assert_eq!(sent(&out), [(UNBIND_RESP, 0, 3)]);
        assert!(matches!(out.last(), Some(Output::Closed { .. })));
    }

    #[test]
    fn submit_and_response() {
        let (mut s, t) = bound();
        s.submit(42, fields(), t).unwrap();
        let out = drain(&mut s);
        assert_eq!(out, [Output::Send(frame::submit_sm(2, &fields()).unwrap())]);
        assert_eq!(s.in_flight(), 1);
        assert_eq!(s.next_deadline(), Some(t + Duration::from_secs(10)));
        s.on_frame(submit_resp(2, "0a1b2c"), t);
        assert_eq!(
            drain(&mut s),
            [Output::Submitted {
                token: 42,
                result: Ok("0a1b2c".into())
            }]
        );
        assert_eq!(s.in_flight(), 0);
        // A second response for the same number is ignored.
        s.on_frame(submit_resp(2, "0a1b2c"), t);
        assert!(drain(&mut s).is_empty());
        // Fields that cannot be encoded: reported at once, nothing sent.
        let bad = SubmitFields {
            short_message: vec![0; 300],
            ..fields()
        };
        s.submit(43, bad, t).unwrap();
        assert_eq!(
            results(&drain(&mut s)),
            [(43, Err(SubmitErrorKind::Permanent))]
        );
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn window_full_until_a_response() {
        let mut c = config(BindMode::Transmitter);
        c.window = 2;
        let (mut s, t) = bound_with(c);
        let a = submit(&mut s, 1, t);
        assert!(s.can_submit());
        submit(&mut s, 2, t);
        assert!(!s.can_submit());
        assert_eq!(s.submit(3, fields(), t), Err(NotReady));
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.in_flight(), 2);
        s.on_frame(submit_resp(a, "m1"), t);
        assert!(s.can_submit());
        submit(&mut s, 3, t);
        assert!(!s.can_submit());
    }

    #[test]
    fn out_of_order_responses() {
        let (mut s, t) = bound();
        let seqs: Vec<u32> = (10..13).map(|k| submit(&mut s, k, t)).collect();
        for &i in &[2, 0, 1] {
            s.on_frame(submit_resp(seqs[i], &format!("m{i}")), t);
        }
        assert_eq!(
            results(&drain(&mut s)),
            [
                (12, Ok("m2".into())),
                (10, Ok("m0".into())),
                (11, Ok("m1".into()))
            ]
        );
    }

    #[test]
    fn error_statuses_are_classified() {
        let (mut s, t) = bound();
        let cases = [
            (ESME_RTHROTTLED, SubmitErrorKind::Throttled),
            (ESME_RMSGQFUL, SubmitErrorKind::Retry),
            (frame::ESME_RSYSERR, SubmitErrorKind::Retry),
            (ESME_RSUBMITFAIL, SubmitErrorKind::Retry),
            (ESME_RX_T_APPN, SubmitErrorKind::Retry),
            (frame::ESME_RINVDSTADR, SubmitErrorKind::Permanent),
            (frame::ESME_RINVSRCADR, SubmitErrorKind::Permanent),
            (ESME_RINVMSGLEN, SubmitErrorKind::Permanent),
            (0x0000_0401, SubmitErrorKind::Permanent),
        ];
        for (k, (status, kind)) in cases.into_iter().enumerate() {
            let seq = submit(&mut s, k as u64, t);
            s.on_frame(raw(SUBMIT_SM_RESP, status, seq, b""), t);
            let out = drain(&mut s);
            let [
                Output::Submitted {
                    token,
                    result: Err(e),
                },
            ] = &out[..]
            else {
                panic!("{out:?}");
            };
            assert_eq!(*token, k as u64);
            assert_eq!((e.status, e.kind), (Some(status), kind), "{e}");
        }
        // generic_nack: Retry, or Throttled for RTHROTTLED; sequence 0 or
        // unknown: nothing.
        let a = submit(&mut s, 100, t);
        let b = submit(&mut s, 101, t);
        s.on_frame(raw(GENERIC_NACK, ESME_RINVCMDLEN, a, b""), t);
        s.on_frame(raw(GENERIC_NACK, ESME_RTHROTTLED, b, b""), t);
        s.on_frame(raw(GENERIC_NACK, ESME_RINVCMDLEN, 0, b""), t);
        s.on_frame(raw(GENERIC_NACK, ESME_RINVCMDLEN, 5000, b""), t);
        let out = drain(&mut s);
        assert_eq!(
            results(&out),
            [
                (100, Err(SubmitErrorKind::Retry)),
                (101, Err(SubmitErrorKind::Throttled))
            ]
        );
        assert!(s.is_bound() && s.in_flight() == 0);
    }

    #[test]
    fn timeout_then_late_response_ignored() {
        let (mut s, t) = bound();
        let seq = submit(&mut s, 7, t);
        let deadline = t + Duration::from_secs(10);
        assert_eq!(s.next_deadline(), Some(deadline));
        s.on_tick(deadline - Duration::from_millis(1));
        assert!(drain(&mut s).is_empty());
        s.on_tick(deadline);
        let out = drain(&mut s);
        let [
            Output::Submitted {
                token: 7,
                result: Err(e),
            },
        ] = &out[..]
        else {
            panic!("{out:?}");
        };
        assert_eq!((e.kind, e.status), (SubmitErrorKind::Retry, None));
        assert_eq!(s.in_flight(), 0);
        s.on_frame(submit_resp(seq, "late"), deadline);
        assert!(drain(&mut s).is_empty());
        assert!(s.is_bound());
    }

    #[test]
    fn consecutive_timeouts_close_the_link() {
        let (mut s, t) = bound();
        let sec = Duration::from_secs(1);
        // Two timeouts, then a response resets the count.
        submit(&mut s, 1, t);
        submit(&mut s, 2, t);
        let c = submit(&mut s, 3, t + sec);
        s.on_tick(t + 10 * sec);
        assert_eq!(results(&drain(&mut s)).len(), 2);
        s.on_frame(submit_resp(c, "ok"), t + 10 * sec);
        drain(&mut s);
        // Three in a row: closed, the rest reported Interrupted in order.
        for k in 4..=8 {
            submit(&mut s, k, t + 10 * sec + (k as u32) * sec);
        }
        s.on_tick(t + 27 * sec);
        let out = drain(&mut s);
        assert_eq!(
            results(&out),
            [
                (4, Err(SubmitErrorKind::Retry)),
                (5, Err(SubmitErrorKind::Retry)),
                (6, Err(SubmitErrorKind::Retry)),
                (7, Err(SubmitErrorKind::Interrupted)),
                (8, Err(SubmitErrorKind::Interrupted)),
            ]
        );
        assert!(matches!(out.last(), Some(Output::Closed { reason }) if reason.contains("3")));
        assert!(s.is_closed() && s.in_flight() == 0);
    }

    #[test]
    fn enquire_link_when_idle() {
        let (mut s, t) = bound();
        let sec = Duration::from_secs(1);
        // Traffic from the peer pushes the timer back.
        s.on_frame(raw(ENQUIRE_LINK, 0, 77, b""), t + 20 * sec);
        assert_eq!(sent(&drain(&mut s)), [(ENQUIRE_LINK_RESP, 0, 77)]);
        assert_eq!(s.next_deadline(), Some(t + 50 * sec));
        s.on_tick(t + 30 * sec);
        assert!(drain(&mut s).is_empty());
        s.on_tick(t + 50 * sec);
        let out = drain(&mut s);
        let [(ENQUIRE_LINK, 0, seq)] = sent(&out)[..] else {
            panic!("{out:?}");
        };
        assert_eq!(s.next_deadline(), Some(t + 60 * sec));
        s.on_frame(raw(ENQUIRE_LINK_RESP, 0, seq, b""), t + 55 * sec);
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.next_deadline(), Some(t + 85 * sec));
        // Unanswered: closed, with the submit in flight interrupted.
        s.on_tick(t + 85 * sec);
        let out = drain(&mut s);
        let [(ENQUIRE_LINK, 0, _)] = sent(&out)[..] else {
            panic!("{out:?}");
        };
        submit(&mut s, 9, t + 86 * sec);
        s.on_tick(t + 95 * sec);
        let out = drain(&mut s);
        assert_eq!(results(&out), [(9, Err(SubmitErrorKind::Interrupted))]);
        assert!(
            matches!(out.last(), Some(Output::Closed { reason }) if reason.contains("enquire_link"))
        );
    }

    #[test]
    fn response_of_the_wrong_kind_is_ignored() {
        let (mut s, t) = bound();
        s.on_tick(t + Duration::from_secs(30));
        let [(ENQUIRE_LINK, 0, seq)] = sent(&drain(&mut s))[..] else {
            panic!();
        };
        s.on_frame(submit_resp(seq, "x"), t + Duration::from_secs(31));
        assert!(drain(&mut s).is_empty());
        // The enquire_link is still in flight and still answerable.
        s.on_frame(
            raw(ENQUIRE_LINK_RESP, 0, seq, b""),
            t + Duration::from_secs(32),
        );
        s.on_tick(t + Duration::from_secs(45));
        assert!(drain(&mut s).is_empty());
        assert!(s.is_bound());
        // And the other way round: an enquire_link_resp for a submit.
        let a = submit(&mut s, 1, t + Duration::from_secs(45));
        s.on_frame(
            raw(ENQUIRE_LINK_RESP, 0, a, b""),
            t + Duration::from_secs(46),
        );
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.in_flight(), 1);
    }

    #[test]
    fn peer_unbind() {
        let (mut s, t) = bound();
        submit(&mut s, 1, t);
        submit(&mut s, 2, t);
        s.on_frame(raw(UNBIND, 0, 55, b""), t);
        let out = drain(&mut s);
        assert_eq!(sent(&out), [(UNBIND_RESP, 0, 55)]);
        assert_eq!(
            results(&out),
            [
                (1, Err(SubmitErrorKind::Interrupted)),
                (2, Err(SubmitErrorKind::Interrupted))
            ]
        );
        assert!(matches!(out.last(), Some(Output::Closed { reason }) if reason == "peer unbound"));
    }

    #[test]
    fn our_unbind() {
        let sec = Duration::from_secs(1);
        // Nothing in flight.
        let (mut s, t) = bound();
        s.unbind(t);
        let [(UNBIND, 0, seq)] = sent(&drain(&mut s))[..] else {
            panic!();
        };
        assert!(!s.can_submit() && !s.is_bound());
        assert_eq!(s.submit(1, fields(), t), Err(NotReady));
        s.on_frame(raw(UNBIND_RESP, 0, seq, b""), t);
        assert_eq!(
            drain(&mut s),
            [Output::Closed {
                reason: "unbound".into()
            }]
        );

        // With submits in flight: their responses still count.
        let (mut s, t) = bound();
        let a = submit(&mut s, 1, t);
        let b = submit(&mut s, 2, t);
        s.unbind(t);
        let [(UNBIND, 0, seq)] = sent(&drain(&mut s))[..] else {
            panic!();
        };
        s.on_frame(submit_resp(a, "ma"), t);
        s.on_frame(raw(UNBIND_RESP, 0, seq, b""), t);
        assert_eq!(results(&drain(&mut s)), [(1, Ok("ma".into()))]);
        assert!(!s.is_closed());
        // Deliveries while unbinding are left to the SMSC to retry.
        s.on_frame(raw(DELIVER_SM, 0, 600, DELIVER_BODY), t);
        assert_eq!(sent(&drain(&mut s)), [(0x8000_0005, ESME_RX_T_APPN, 600)]);
        s.on_frame(submit_resp(b, "mb"), t);
        let out = drain(&mut s);
        assert_eq!(results(&out), [(2, Ok("mb".into()))]);
        assert!(matches!(out.last(), Some(Output::Closed { .. })));

        // With a submit never answered: Interrupted at unbind_timeout.
        let mut c = config(BindMode::Transmitter);
        c.response_timeout = 60 * sec;
        let (mut s, t) = bound_with(c);
        submit(&mut s, 1, t);
        s.unbind(t + sec);
        let [(UNBIND, 0, seq)] = sent(&drain(&mut s))[..] else {
            panic!();
        };
        s.on_frame(raw(UNBIND_RESP, 0, seq, b""), t + 2 * sec);
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.next_deadline(), Some(t + 6 * sec));
        s.on_tick(t + 6 * sec);
        let out = drain(&mut s);
        assert_eq!(results(&out), [(1, Err(SubmitErrorKind::Interrupted))]);
        assert!(matches!(out.last(), Some(Output::Closed { .. })));

        // No unbind_resp at all.
        let (mut s, t) = bound();
        s.unbind(t);
        drain(&mut s);
        s.on_tick(t + 5 * sec);
        assert!(matches!(&drain(&mut s)[..], [Output::Closed { .. }]));

        // Unbind before bound: closes at once.
        let mut s = Session::new(config(BindMode::Transceiver), t).unwrap();
        drain(&mut s);
        s.unbind(t);
        assert!(matches!(&drain(&mut s)[..], [Output::Closed { .. }]));
    }

    #[test]
    fn invalid_frames_are_nacked_and_the_session_goes_on() {
        let (mut s, t) = bound();
        let a = submit(&mut s, 1, t);
        // Unknown command_id.
        let unknown = raw(0x0000_0110, 0, 171, b"xy");
        assert!(matches!(unknown, Frame::Invalid { .. }));
        s.on_frame(unknown, t);
        assert_eq!(sent(&drain(&mut s)), [(GENERIC_NACK, ESME_RINVCMDID, 171)]);
        // A deliver_sm with a bad body: its own response carries the error.
        let mut body = b"\0\x01\x01".to_vec();
        body.extend([b'1'; 30]);
        body.extend(&DELIVER_BODY[7..]);
        s.on_frame(raw(DELIVER_SM, 0, 172, &body), t);
        assert_eq!(
            sent(&drain(&mut s)),
            [(0x8000_0005, frame::ESME_RINVSRCADR, 172)]
        );
        // Truncated body: the length is wrong, generic_nack.
        s.on_frame(raw(DELIVER_SM, 0, 173, b"\0\x01\x01"), t);
        assert_eq!(sent(&drain(&mut s)), [(GENERIC_NACK, ESME_RINVCMDLEN, 173)]);
        // A bad response is not answered; a bad answer to our submit fails it.
        s.on_frame(raw(SUBMIT_SM_RESP, 0, 9999, b"no-nul"), t);
        assert!(drain(&mut s).is_empty());
        s.on_frame(raw(SUBMIT_SM_RESP, 0, a, b"no-nul"), t);
        assert_eq!(results(&drain(&mut s)), [(1, Err(SubmitErrorKind::Retry))]);
        // Still usable.
        assert!(s.is_bound() && s.can_submit());
        let b = submit(&mut s, 2, t);
        s.on_frame(submit_resp(b, "m"), t);
        assert_eq!(results(&drain(&mut s)), [(2, Ok("m".into()))]);
    }

    #[test]
    fn requests_an_esme_does_not_handle() {
        let (mut s, t) = bound();
        s.on_frame(raw(QUERY_SM, 0, 5, b"1\0\x01\x01123\0"), t);
        let submit_sm = frame::submit_sm(6, &fields()).unwrap();
        s.on_frame(Frame::Pdu(submit_sm), t);
        // alert_notification has no response.
        s.on_frame(raw(0x0000_0102, 0, 7, b"\x01\x01123\0\x01\x01456\0"), t);
        assert_eq!(
            sent(&drain(&mut s)),
            [
                (GENERIC_NACK, ESME_RINVCMDID, 5),
                (GENERIC_NACK, ESME_RINVCMDID, 6)
            ]
        );
    }

    #[test]
    fn deliveries_are_acked_by_the_caller() {
        let (mut s, t) = bound();
        let frame = raw(DELIVER_SM, 0, 300, DELIVER_BODY);
        let Frame::Pdu(command) = frame.clone() else {
            panic!("{frame:?}");
        };
        s.on_frame(frame, t);
        assert_eq!(
            drain(&mut s),
            [Output::Deliver {
                sequence_number: 300,
                command
            }]
        );
        s.on_frame(raw(DATA_SM, 0, 301, DATA_SM_BODY), t);
        assert!(matches!(
            &drain(&mut s)[..],
            [Output::Deliver {
                sequence_number: 301,
                ..
            }]
        ));
        s.ack_deliver(301, ESME_RX_T_APPN, t);
        s.ack_deliver(300, 0, t);
        s.ack_deliver(300, 0, t); // already acknowledged
        s.ack_deliver(12345, 0, t); // never delivered
        assert_eq!(
            drain(&mut s),
            [
                Output::Send(data_sm_resp(301, ESME_RX_T_APPN)),
                Output::Send(frame::deliver_sm_resp(300, 0)),
            ]
        );
    }

    #[test]
    fn deliveries_beyond_the_bound_are_refused() {
        let (mut s, t) = bound_with(config(BindMode::Receiver));
        for seq in 1..=MAX_UNACKED_DELIVERIES as u32 {
            s.on_frame(raw(DELIVER_SM, 0, seq, DELIVER_BODY), t);
        }
        assert_eq!(drain(&mut s).len(), MAX_UNACKED_DELIVERIES);
        s.on_frame(raw(DELIVER_SM, 0, 5000, DELIVER_BODY), t);
        s.on_frame(raw(DATA_SM, 0, 5001, DATA_SM_BODY), t);
        assert_eq!(
            drain(&mut s),
            [
                Output::Send(frame::deliver_sm_resp(5000, ESME_RX_T_APPN)),
                Output::Send(data_sm_resp(5001, ESME_RX_T_APPN)),
            ]
        );
        s.ack_deliver(1, 0, t);
        drain(&mut s);
        s.on_frame(raw(DELIVER_SM, 0, 5002, DELIVER_BODY), t);
        assert!(matches!(&drain(&mut s)[..], [Output::Deliver { .. }]));
    }

    #[test]
    fn transmitter_refuses_deliveries() {
        let (mut s, t) = bound_with(config(BindMode::Transmitter));
        s.on_frame(raw(DELIVER_SM, 0, 9, DELIVER_BODY), t);
        s.on_frame(raw(DATA_SM, 0, 10, DATA_SM_BODY), t);
        assert_eq!(
            drain(&mut s),
            [
                Output::Send(frame::deliver_sm_resp(9, ESME_RINVBNDSTS)),
                Output::Send(data_sm_resp(10, ESME_RINVBNDSTS)),
            ]
        );
    }

    #[test]
    fn sequence_numbers_wrap_and_skip_those_in_flight() {
        let (mut s, t) = bound();
        s.next_seq = 1;
        assert_eq!(submit(&mut s, 1, t), 1);
        assert_eq!(submit(&mut s, 2, t), 2);
        s.next_seq = MAX_SEQUENCE_NUMBER - 1;
        assert_eq!(submit(&mut s, 3, t), MAX_SEQUENCE_NUMBER - 1);
        assert_eq!(submit(&mut s, 4, t), MAX_SEQUENCE_NUMBER);
        assert_eq!(submit(&mut s, 5, t), 3);
        s.on_frame(submit_resp(MAX_SEQUENCE_NUMBER, "m"), t);
        assert_eq!(results(&drain(&mut s)), [(4, Ok("m".into()))]);
    }

    #[test]
    fn connection_lost_interrupts_submits() {
        let (mut s, t) = bound();
        submit(&mut s, 1, t);
        s.on_frame(raw(DELIVER_SM, 0, 3, DELIVER_BODY), t);
        drain(&mut s);
        s.connection_lost("eof");
        let out = drain(&mut s);
        assert_eq!(results(&out), [(1, Err(SubmitErrorKind::Interrupted))]);
        assert!(matches!(out.last(), Some(Output::Closed { .. })));
        // Too late to acknowledge.
        s.ack_deliver(3, 0, t);
        assert!(drain(&mut s).is_empty());
    }

    #[test]
    fn random_frames_and_ticks() {
        let mut rng = fastrand::Rng::with_seed(0x5EED_0F5E_5510_1700);
        let ids = [
            0x8000_0000u32,
            0x8000_0001,
            0x8000_0002,
            0x8000_0009,
            SUBMIT_SM_RESP,
            ENQUIRE_LINK,
            ENQUIRE_LINK_RESP,
            UNBIND,
            UNBIND_RESP,
            DELIVER_SM,
            DATA_SM,
            QUERY_SM,
            SUBMIT_SM,
            0x0000_0102,
            0x0000_000B,
            0x8000_0005,
            0x0000_0777,
        ];
        let statuses = [0, 0, 0, 0x58, 0x14, 0x0B, 0x0E, 0x08, 0x400];
        for round in 0..1000 {
            let mut c = config(
                [
                    BindMode::Transceiver,
                    BindMode::Transmitter,
                    BindMode::Receiver,
                ][round % 3],
            );
            c.window = 1 + rng.usize(..8);
            c.max_consecutive_timeouts = 1 + rng.usize(..4) as u32;
            let mut now = Instant::now();
            let mut s = Session::new(c.clone(), now).unwrap();
            if rng.usize(..5) != 0 {
                let id = bind_resp_id(c.bind_mode);
                s.on_frame(raw(id, 0, 1, b"SMSC\0"), now);
            }
            let mut pending = std::collections::HashSet::new();
            let mut delivered = Vec::new();
            let mut last_seqs = vec![1u32];
            let mut token = 0;
            for _ in 0..400 {
                match rng.usize(..12) {
                    10 | 11 => {
                        // A plausible answer to one of our recent requests.
                        let seq =
                            last_seqs[last_seqs.len() - 1 - rng.usize(..last_seqs.len().min(8))];
                        let status = statuses[rng.usize(..statuses.len())];
                        let id = [
                            SUBMIT_SM_RESP,
                            SUBMIT_SM_RESP,
                            SUBMIT_SM_RESP,
                            ENQUIRE_LINK_RESP,
                            UNBIND_RESP,
                            GENERIC_NACK,
                        ][rng.usize(..6)];
                        s.on_frame(
                            raw(
                                id,
                                status,
                                seq,
                                if id == SUBMIT_SM_RESP { b"m\0" } else { b"" },
                            ),
                            now,
                        );
                    }
                    0..=4 => {
                        let id = ids[rng.usize(..ids.len())];
                        let status = statuses[rng.usize(..statuses.len())];
                        let seq = match rng.usize(..3) {
                            0 => last_seqs[rng.usize(..last_seqs.len())],
                            1 => rng.usize(..5) as u32,
                            _ => rng.u32(..),
                        };
                        let body: Vec<u8> = match (rng.usize(..3), id) {
                            (0, _) => (0..rng.usize(..40)).map(|_| rng.u8(..)).collect(),
                            (_, DELIVER_SM) => DELIVER_BODY.to_vec(),
                            (_, DATA_SM) => DATA_SM_BODY.to_vec(),
                            (_, SUBMIT_SM_RESP | 0x8000_0001 | 0x8000_0002 | 0x8000_0009) => {
                                b"id\0".to_vec()
                            }
                            _ => Vec::new(),
                        };
                        s.on_frame(raw(id, status, seq, &body), now);
                    }
                    5 | 6 => {
                        token += 1;
                        if s.submit(token, fields(), now).is_ok() {
                            pending.insert(token);
                        }
                    }
                    7 => {
                        now += Duration::from_millis(rng.u64(..15_000));
                        s.on_tick(now);
                    }
                    8 => {
                        if let Some(seq) = delivered.pop() {
                            s.ack_deliver(seq, 0, now);
                        }
                    }
                    _ => {
                        if rng.usize(..20) == 0 {
                            s.unbind(now);
                        } else if let Some(d) = s.next_deadline() {
                            now = now.max(d);
                            s.on_tick(now);
                        }
                    }
                }
                assert!(s.in_flight() <= c.window);
                assert!(s.deliveries.len() <= MAX_UNACKED_DELIVERIES);
                while let Some(out) = s.poll_output() {
                    match out {
                        Output::Send(command) => {
                            let seq = command.sequence_number();
                            // Our requests use valid numbers; responses echo the peer's.
                            if !is_response_id(u32::from(command.id())) {
                                assert!((1..=MAX_SEQUENCE_NUMBER).contains(&seq));
                                last_seqs.push(seq);
                            }
                            frame::encode_to_vec(&command).expect("encodable");
                        }
                        Output::Submitted { token, .. } => {
                            assert!(pending.remove(&token), "token {token} reported twice");
                        }
                        Output::Deliver {
                            sequence_number, ..
                        } => delivered.push(sequence_number),
                        Output::Closed { .. } => {
                            assert!(pending.is_empty(), "unreported: {pending:?}");
                            assert!(s.poll_output().is_none(), "Closed is last");
                        }
                        Output::Bound { .. } | Output::BindFailed { .. } => {}
                    }
                }
                if s.is_closed() {
                    break;
                }
            }
        }
    }
}
