//! The SMSC side of one integrator (ESME) connection, as a state machine without I/O.
//!
//! parla acts as an SMSC towards integrators. The task that owns the accepted TCP connection
//! drives a [`ServerSession`] (the server-side counterpart of [`super::session::Session`]):
//!
//! 1. [`ServerSession::new`] at accept time; nothing is sent until the ESME binds;
//! 2. every decoded [`Frame`] goes to [`ServerSession::on_frame`], and
//!    [`ServerSession::on_tick`] is called at [`ServerSession::next_deadline`];
//! 3. after each call, [`ServerSession::poll_output`] is drained: `Send` commands are written
//!    in order, the other outputs are decisions the caller takes and answers:
//!    [`Output::Authenticate`] with [`ServerSession::accept_bind`] /
//!    [`ServerSession::refuse_bind`], [`Output::Submit`] with
//!    [`ServerSession::submit_accepted`] / [`ServerSession::submit_refused`],
//!    [`Output::Request`] with [`ServerSession::answer`];
//! 4. receipts and MO messages go out with [`ServerSession::deliver`] (while
//!    [`ServerSession::can_deliver`]); each accepted token gets exactly one
//!    [`Output::Delivered`];
//! 5. [`Output::Closed`] is always the last output: write the `Send`s queued before it, then
//!    drop the connection. If the transport fails first, call
//!    [`ServerSession::connection_lost`].
//!
//! The machine never reads the clock: every entry point that needs time takes `now`.
//! Nothing the peer sends can make it panic or grow without bound: submits awaiting the
//! caller are at most `window` (more are answered at once with ESME_RMSGQFUL), so are
//! query_sm / cancel_sm, deliveries in flight at most `deliver_window`, and each input
//! queues a bounded number of outputs.

// Frames come straight off the wire: let the compiler hold the "never panics" promise.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rusmpp::{
    Command, CommandId, CommandStatus, Pdu,
    pdus::{DataSmResp, QuerySmResp, SubmitMultiResp},
    types::COctetString,
};

use super::frame::{self, BindMode, ESME_RINVCMDID, ESME_ROK, ESME_RSYSERR, Frame, SubmitFields};
use super::session::{
    ESME_RALYBND, ESME_RBINDFAIL, ESME_RINVBNDSTS, ESME_RMSGQFUL, after, c_text, data_sm_resp,
    is_response_id, next_free_seq,
};

/// Refused binds after which the connection is closed (SMSCs let an ESME retry a few times
/// on the same connection, but not forever).
pub const MAX_BIND_ATTEMPTS: u32 = 3;

/// deliver_sm response timeouts in a row (no deliver response in between) after which the
/// connection is closed: the ESME is not processing deliveries.
pub const MAX_CONSECUTIVE_TIMEOUTS: u32 = 3;

/// Session parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// What parla answers as system_id in bind responses (ASCII, at most 15 characters;
    /// other characters are dropped and the rest cut to 15).
    pub system_id: String,
    /// submit_sm / data_sm awaiting the caller's decision at most; more are answered at once
    /// with ESME_RMSGQFUL, never queued. Also the bound on query_sm / cancel_sm awaiting an
    /// answer. 0 is taken as 1.
    pub window: usize,
    /// deliver_sm sent and unanswered at most (0 is taken as 1).
    pub deliver_window: usize,
    /// Time allowed for a deliver_sm_resp or enquire_link_resp.
    pub response_timeout: Duration,
    /// Silence from the ESME after which we send an enquire_link (while bound).
    pub enquire_link_interval: Duration,
    /// Total silence from the ESME after which the connection is closed (after an unbind
    /// when bound).
    pub idle_timeout: Duration,
    /// Time allowed from connect until a bind is accepted; after it the connection closes.
    pub bind_timeout: Duration,
    /// Time allowed, after we send unbind, for its response, the deliveries in flight and the
    /// caller's pending decisions.
    pub unbind_timeout: Duration,
}

impl ServerConfig {
    /// A configuration with common defaults: window 10, deliver window 10, responses within
    /// 10 s, enquire_link after 30 s of silence, idle close after 120 s, bind within 10 s,
    /// unbind within 5 s.
    pub fn new(system_id: &str) -> Self {
        Self {
            system_id: system_id.to_owned(),
            window: 10,
            deliver_window: 10,
            response_timeout: Duration::from_secs(10),
            enquire_link_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            bind_timeout: Duration::from_secs(10),
            unbind_timeout: Duration::from_secs(5),
        }
    }
}

/// A bind_transmitter / bind_receiver / bind_transceiver to judge. Strings are the decoded
/// C-octet strings (lossy UTF-8, without the NUL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindRequest {
    /// Which bind it is.
    pub mode: BindMode,
    /// The ESME's system_id (the account).
    pub system_id: String,
    /// The password.
    pub password: String,
    /// system_type ("" when none).
    pub system_type: String,
    /// interface_version (0x34 for SMPP 3.4, 0x33 or lower for older clients).
    pub interface_version: u8,
    /// address_range ("" when none); parla may use it to route MO messages.
    pub address_range: String,
}

/// Why a delivery did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliverError {
    /// The ESME answered with an error status (deliver_sm_resp, or generic_nack; a
    /// generic_nack with status 0 or an undecodable response is reported as ESME_RSYSERR).
    #[error("refused by the ESME with status 0x{status:08X}")]
    Refused {
        /// The command_status of the answer.
        status: u32,
    },
    /// No answer within `response_timeout`: the ESME may or may not have it.
    #[error("no deliver_sm_resp in time")]
    Timeout,
    /// The connection closed while the delivery was in flight: the ESME may or may not have
    /// it.
    #[error("connection closed while the delivery was in flight")]
    Closed,
    /// The command could not be built or is not a deliver_sm / data_sm; it was not sent.
    #[error("delivery not sent: {reason}")]
    Invalid {
        /// What was wrong.
        reason: String,
    },
}

/// [`ServerSession::deliver`] was called while [`ServerSession::can_deliver`] is false.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "SMPP server session cannot deliver now (not bound as receiver or transceiver, unbinding, or deliver window full)"
)]
pub struct NotReady;

/// What the session asks of its driver, in order.
// Command is the common payload; boxing would add an allocation per PDU.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write this command.
    Send(Command),
    /// A bind to judge: answer with [`ServerSession::accept_bind`] or
    /// [`ServerSession::refuse_bind`] with this sequence number.
    Authenticate {
        /// Sequence number of the bind.
        sequence_number: u32,
        /// What the ESME sent.
        request: BindRequest,
    },
    /// The bind was accepted (its bind_resp is queued before this).
    Bound {
        /// How the ESME is bound.
        mode: BindMode,
        /// The ESME's system_id.
        system_id: String,
    },
    /// A submit_sm or data_sm to commit: answer with [`ServerSession::submit_accepted`] or
    /// [`ServerSession::submit_refused`] with this sequence number.
    Submit {
        /// Sequence number to answer.
        sequence_number: u32,
        /// The submit_sm or data_sm as received (see [`super::content::sms_of`]).
        command: Command,
    },
    /// A query_sm or cancel_sm: answer with [`ServerSession::answer`] (the caller builds the
    /// response).
    Request {
        /// Sequence number to answer.
        sequence_number: u32,
        /// The query_sm or cancel_sm as received.
        command: Command,
    },
    /// Outcome of [`ServerSession::deliver`] for `token`; exactly one per accepted token.
    Delivered {
        /// The caller's token.
        token: u64,
        /// `Ok` once the ESME acknowledged with ESME_ROK.
        result: Result<(), DeliverError>,
    },
    /// The connection must be dropped (after writing the `Send`s queued before this). Every
    /// delivery in flight has already been reported; this is the last output.
    Closed {
        /// Why, for logs.
        reason: String,
    },
}

/// A request of ours awaiting its response.
#[derive(Debug, Clone, Copy)]
struct Pending {
    kind: Kind,
    deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A deliver_sm or data_sm; `resp` is the response expected.
    Deliver {
        token: u64,
        resp: CommandId,
    },
    EnquireLink,
    Unbind,
}

/// Which response a submit awaiting the caller needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubmitKind {
    SubmitSm,
    DataSm,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Connected, waiting for a bind.
    Open,
    /// A bind handed out as [`Output::Authenticate`], not yet judged.
    Authenticating {
        sequence_number: u32,
        mode: BindMode,
        system_id: String,
    },
    Bound {
        mode: BindMode,
    },
    /// Our unbind is out; `resp` once its response came.
    Unbinding {
        mode: BindMode,
        deadline: Instant,
        resp: bool,
    },
    Closed,
}

fn bind_mode_of(id: CommandId) -> Option<BindMode> {
    match id {
        CommandId::BindTransmitter => Some(BindMode::Transmitter),
        CommandId::BindReceiver => Some(BindMode::Receiver),
        CommandId::BindTransceiver => Some(BindMode::Transceiver),
        _ => None,
    }
}

/// `system_id` made valid for a bind_resp: printable ASCII, at most 15 characters.
fn sanitize_system_id(system_id: &str) -> String {
    system_id
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(15)
        .collect()
}

/// The response to request `command_id` carrying an error `status`: the command's own
/// response when SMPP 3.4 defines one, generic_nack otherwise.
fn error_resp(command_id: u32, sequence_number: u32, status: u32, system_id: &str) -> Command {
    let with = |pdu: Pdu| Command::new(CommandStatus::from(status), sequence_number, pdu);
    let bind = |mode| {
        frame::bind_resp(mode, sequence_number, status, system_id)
            .unwrap_or_else(|_| frame::generic_nack(sequence_number, status))
    };
    match command_id {
        0x0000_0001 => bind(BindMode::Receiver),
        0x0000_0002 => bind(BindMode::Transmitter),
        0x0000_0009 => bind(BindMode::Transceiver),
        0x0000_0003 => with(QuerySmResp::default().into()),
        0x0000_0004 => frame::submit_sm_resp(sequence_number, status, "")
            .unwrap_or_else(|_| frame::generic_nack(sequence_number, status)),
        0x0000_0005 => frame::deliver_sm_resp(sequence_number, status),
        0x0000_0007 => with(Pdu::ReplaceSmResp),
        0x0000_0008 => with(Pdu::CancelSmResp),
        0x0000_0021 => with(SubmitMultiResp::default().into()),
        0x0000_0103 => data_sm_resp(sequence_number, status),
        _ => frame::generic_nack(sequence_number, status),
    }
}

/// The SMSC side of one ESME connection; see the module documentation.
#[derive(Debug)]
pub struct ServerSession {
    config: ServerConfig,
    state: State,
    /// Bind deadline, counted from connect; applies until bound.
    bind_deadline: Instant,
    refused_binds: u32,
    /// Next sequence number to try for our requests, in 1..=MAX_SEQUENCE_NUMBER.
    next_seq: u32,
    /// Our requests in flight: deliveries, enquire_link, unbind.
    pending: HashMap<u32, Pending>,
    /// Deliveries among `pending`.
    deliveries: usize,
    /// Sequence number of our enquire_link in flight.
    enquire_link: Option<u32>,
    /// submit_sm / data_sm awaiting the caller, by the ESME's sequence number.
    submits: HashMap<u32, SubmitKind>,
    /// query_sm / cancel_sm awaiting the caller, by sequence number: the response expected.
    requests: HashMap<u32, CommandId>,
    last_rx: Instant,
    consecutive_timeouts: u32,
    outputs: VecDeque<Output>,
}

impl ServerSession {
    /// A session for a connection accepted at `now`: waits for a bind.
    pub fn new(mut config: ServerConfig, now: Instant) -> Self {
        config.window = config.window.max(1);
        config.deliver_window = config.deliver_window.max(1);
        config.system_id = sanitize_system_id(&config.system_id);
        Self {
            state: State::Open,
            bind_deadline: after(now, config.bind_timeout),
            refused_binds: 0,
            next_seq: 1,
            pending: HashMap::new(),
            deliveries: 0,
            enquire_link: None,
            submits: HashMap::new(),
            requests: HashMap::new(),
            last_rx: now,
            consecutive_timeouts: 0,
            outputs: VecDeque::new(),
            config,
        }
    }

    /// Sets the submit and deliver windows of the account being bound (they are per account,
    /// and the account is known only once the bind is judged); call before
    /// [`ServerSession::accept_bind`]. 0 is taken as 1.
    pub fn set_windows(&mut self, window: usize, deliver_window: usize) {
        self.config.window = window.max(1);
        self.config.deliver_window = deliver_window.max(1);
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// How the ESME is bound; `None` before the bind, while unbinding and once closed.
    pub fn bound_mode(&self) -> Option<BindMode> {
        match self.state {
            State::Bound { mode } => Some(mode),
            _ => None,
        }
    }

    /// Whether [`Output::Closed`] has been emitted.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether [`ServerSession::deliver`] would be accepted: bound as receiver or
    /// transceiver, not unbinding, deliver window not full.
    pub fn can_deliver(&self) -> bool {
        matches!(
            self.state,
            State::Bound {
                mode: BindMode::Receiver | BindMode::Transceiver
            }
        ) && self.deliveries < self.config.deliver_window
    }

    /// Deliveries sent and not yet answered.
    pub fn deliveries_in_flight(&self) -> usize {
        self.deliveries
    }

    /// submit_sm / data_sm handed out as [`Output::Submit`] and not yet answered.
    pub fn submits_pending(&self) -> usize {
        self.submits.len()
    }

    /// When [`ServerSession::on_tick`] must be called next; `None` once closed.
    pub fn next_deadline(&self) -> Option<Instant> {
        let pending = self.pending.values().map(|p| p.deadline);
        let idle = after(self.last_rx, self.config.idle_timeout);
        let state = match self.state {
            State::Closed => return None,
            State::Open | State::Authenticating { .. } => Some(self.bind_deadline.min(idle)),
            State::Unbinding { deadline, .. } => Some(deadline),
            State::Bound { .. } => Some(match self.enquire_link {
                None => idle.min(after(self.last_rx, self.config.enquire_link_interval)),
                Some(_) => idle,
            }),
        };
        pending.chain(state).min()
    }

    /// Accepts the bind `sequence_number` from [`Output::Authenticate`]: bind_resp ESME_ROK,
    /// then [`Output::Bound`]. The enquire_link and idle timers restart at `now`. Ignored if
    /// that bind is not the one awaiting a decision.
    pub fn accept_bind(&mut self, sequence_number: u32, now: Instant) {
        let State::Authenticating {
            sequence_number: seq,
            mode,
            system_id,
        } = &self.state
        else {
            tracing::warn!(
                sequence_number,
                "accept_bind with no bind awaiting a decision"
            );
            return;
        };
        if *seq != sequence_number {
            tracing::warn!(sequence_number, "accept_bind for another bind, ignored");
            return;
        }
        let (mode, system_id) = (*mode, system_id.clone());
        self.send(error_resp(
            bind_command_id(mode),
            sequence_number,
            ESME_ROK,
            &self.config.system_id,
        ));
        self.state = State::Bound { mode };
        self.last_rx = self.last_rx.max(now);
        tracing::info!(%system_id, ?mode, "ESME bound");
        self.outputs.push_back(Output::Bound { mode, system_id });
    }

    /// Refuses the bind `sequence_number` with `status` (ESME_RINVPASWD, ESME_RINVSYSID,
    /// ESME_RBINDFAIL, ...; 0 is sent as ESME_RBINDFAIL). The connection stays open for
    /// another bind, except after [`MAX_BIND_ATTEMPTS`] refusals, when it closes. Ignored if
    /// that bind is not the one awaiting a decision.
    pub fn refuse_bind(&mut self, sequence_number: u32, status: u32, now: Instant) {
        let State::Authenticating {
            sequence_number: seq,
            mode,
            ..
        } = &self.state
        else {
            tracing::warn!(
                sequence_number,
                "refuse_bind with no bind awaiting a decision"
            );
            return;
        };
        if *seq != sequence_number {
            tracing::warn!(sequence_number, "refuse_bind for another bind, ignored");
            return;
        }
        let mode = *mode;
        let status = if status == ESME_ROK {
            ESME_RBINDFAIL
        } else {
            status
        };
        self.send(error_resp(
            bind_command_id(mode),
            sequence_number,
            status,
            &self.config.system_id,
        ));
        self.refused_binds += 1;
        self.last_rx = self.last_rx.max(now);
        if self.refused_binds >= MAX_BIND_ATTEMPTS {
            let n = self.refused_binds;
            self.close(format!("{n} binds refused"));
        } else {
            self.state = State::Open;
        }
    }

    /// Answers the submit `sequence_number` from [`Output::Submit`] with ESME_ROK and
    /// `message_id` (submit_sm_resp or data_sm_resp, as the request was). Fails, and leaves
    /// the submit awaiting a decision, if `message_id` is not ASCII or longer than 64
    /// characters. Unknown or already answered numbers are ignored.
    pub fn submit_accepted(
        &mut self,
        sequence_number: u32,
        message_id: &str,
    ) -> Result<(), frame::FrameError> {
        let Some(kind) = self.submits.get(&sequence_number).copied() else {
            tracing::warn!(
                sequence_number,
                "submit_accepted for no submit awaiting one"
            );
            return Ok(());
        };
        let resp = match kind {
            SubmitKind::SubmitSm => frame::submit_sm_resp(sequence_number, ESME_ROK, message_id)?,
            SubmitKind::DataSm => {
                let id =
                    COctetString::<1, 65>::from_string(message_id.to_owned()).map_err(|e| {
                        frame::FrameError::Encode(format!("message_id {message_id:?}: {e}"))
                    })?;
                Command::new(
                    CommandStatus::EsmeRok,
                    sequence_number,
                    DataSmResp::new(id, Vec::new()),
                )
            }
        };
        self.submits.remove(&sequence_number);
        self.send(resp);
        self.maybe_unbound();
        Ok(())
    }

    /// Answers the submit `sequence_number` from [`Output::Submit`] with the error `status`
    /// (0 is sent as ESME_RSYSERR). Unknown or already answered numbers are ignored.
    pub fn submit_refused(&mut self, sequence_number: u32, status: u32) {
        let Some(kind) = self.submits.remove(&sequence_number) else {
            tracing::warn!(sequence_number, "submit_refused for no submit awaiting one");
            return;
        };
        let status = if status == ESME_ROK {
            ESME_RSYSERR
        } else {
            status
        };
        let id = match kind {
            SubmitKind::SubmitSm => 0x0000_0004,
            SubmitKind::DataSm => 0x0000_0103,
        };
        self.send(error_resp(
            id,
            sequence_number,
            status,
            &self.config.system_id,
        ));
        self.maybe_unbound();
    }

    /// Answers the query_sm / cancel_sm `sequence_number` from [`Output::Request`] with
    /// `response`, sent with that sequence number. A response that is neither the matching
    /// `_resp` nor a generic_nack is replaced by a generic_nack ESME_RSYSERR. Unknown or
    /// already answered numbers are ignored.
    pub fn answer(&mut self, sequence_number: u32, mut response: Command) {
        let Some(expected) = self.requests.remove(&sequence_number) else {
            tracing::warn!(sequence_number, "answer for no request awaiting one");
            return;
        };
        let id = response.id();
        if id != expected && id != CommandId::GenericNack {
            tracing::warn!(sequence_number, command = ?id, ?expected, "answer of the wrong type");
            response = frame::generic_nack(sequence_number, ESME_RSYSERR);
        }
        response.sequence_number = sequence_number;
        self.send(response);
        self.maybe_unbound();
    }

    /// Answers the query_sm / cancel_sm `sequence_number` from [`Output::Request`] with the
    /// error `status` in its own response type (0 is sent as ESME_RSYSERR). Unknown or
    /// already answered numbers are ignored.
    pub fn answer_error(&mut self, sequence_number: u32, status: u32) {
        let Some(expected) = self.requests.get(&sequence_number).copied() else {
            tracing::warn!(sequence_number, "answer_error for no request awaiting one");
            return;
        };
        let status = if status == ESME_ROK {
            ESME_RSYSERR
        } else {
            status
        };
        // The request's id is its response's without the response bit.
        let request_id = u32::from(expected) & !0x8000_0000;
        let response = error_resp(request_id, sequence_number, status, &self.config.system_id);
        self.answer(sequence_number, response);
    }

    /// Sends a deliver_sm built from `fields`; its outcome comes later as
    /// [`Output::Delivered`] with `token`. Fields that cannot be encoded are reported at once
    /// as [`DeliverError::Invalid`] without being sent.
    pub fn deliver(
        &mut self,
        token: u64,
        fields: &SubmitFields,
        now: Instant,
    ) -> Result<(), NotReady> {
        if !self.can_deliver() {
            return Err(NotReady);
        }
        match frame::deliver_sm(0, fields) {
            Ok(command) => self.deliver_command(token, command, now),
            Err(e) => {
                self.outputs.push_back(Output::Delivered {
                    token,
                    result: Err(DeliverError::Invalid {
                        reason: e.to_string(),
                    }),
                });
                Ok(())
            }
        }
    }

    /// Sends a ready deliver_sm or data_sm (e.g. from [`frame::deliver_sm_with_tlvs`]) with a
    /// sequence number of ours; its outcome comes later as [`Output::Delivered`] with `token`.
    /// Any other command is reported at once as [`DeliverError::Invalid`] without being sent.
    pub fn deliver_command(
        &mut self,
        token: u64,
        mut command: Command,
        now: Instant,
    ) -> Result<(), NotReady> {
        if !self.can_deliver() {
            return Err(NotReady);
        }
        let resp = match command.id() {
            CommandId::DeliverSm => CommandId::DeliverSmResp,
            CommandId::DataSm => CommandId::DataSmResp,
            other => {
                self.outputs.push_back(Output::Delivered {
                    token,
                    result: Err(DeliverError::Invalid {
                        reason: format!("{other:?} is not a deliver_sm or data_sm"),
                    }),
                });
                return Ok(());
            }
        };
        let seq = self.alloc_seq();
        command.sequence_number = seq;
        command.status = CommandStatus::EsmeRok;
        self.pending.insert(
            seq,
            Pending {
                kind: Kind::Deliver { token, resp },
                deadline: after(now, self.config.response_timeout),
            },
        );
        self.deliveries += 1;
        self.send(command);
        Ok(())
    }

    /// Starts a graceful unbind: we send unbind; no new deliveries or submits; deliveries in
    /// flight resolve or time out and pending decisions may still be answered, until the
    /// unbind_resp came and nothing is pending, or `unbind_timeout`; then
    /// [`Output::Closed`]. Before the bind is accepted the session closes at once.
    pub fn unbind(&mut self, now: Instant) {
        match self.state {
            State::Open | State::Authenticating { .. } => {
                self.close("unbind requested before bound".into());
            }
            State::Bound { mode } => self.start_unbind(mode, now),
            State::Unbinding { .. } | State::Closed => {}
        }
    }

    /// The transport failed (EOF, I/O error, framing lost): deliveries in flight are reported
    /// [`DeliverError::Closed`], then [`Output::Closed`].
    pub fn connection_lost(&mut self, reason: &str) {
        self.close(format!("connection lost: {reason}"));
    }

    /// Handles one frame from the ESME.
    pub fn on_frame(&mut self, frame: Frame, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        // Any traffic proves the link alive: enquire_link and idle timers restart.
        self.last_rx = self.last_rx.max(now);
        match frame {
            Frame::Pdu(command) => {
                if is_response_id(u32::from(command.id())) {
                    self.on_response(&command);
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

    /// Handles the passing of time: response, bind, unbind and idle timeouts, enquire_link.
    pub fn on_tick(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        let mut expired: Vec<(Instant, u32)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&seq, p)| (p.deadline, seq))
            .collect();
        expired.sort_unstable();
        for (_, seq) in expired {
            if self.state == State::Closed {
                return;
            }
            let Some(p) = self.pending.remove(&seq) else {
                continue;
            };
            match p.kind {
                Kind::Deliver { token, .. } => {
                    self.deliveries = self.deliveries.saturating_sub(1);
                    self.consecutive_timeouts += 1;
                    tracing::warn!(
                        sequence_number = seq,
                        consecutive = self.consecutive_timeouts,
                        "deliver_sm response timeout"
                    );
                    self.outputs.push_back(Output::Delivered {
                        token,
                        result: Err(DeliverError::Timeout),
                    });
                    if self.consecutive_timeouts >= MAX_CONSECUTIVE_TIMEOUTS {
                        let n = self.consecutive_timeouts;
                        self.close(format!("{n} deliver_sm response timeouts in a row"));
                    } else {
                        self.maybe_unbound();
                    }
                }
                Kind::EnquireLink => self.close("enquire_link unanswered".into()),
                Kind::Unbind => self.close("no unbind_resp in time".into()),
            }
        }
        let idle = after(self.last_rx, self.config.idle_timeout) <= now;
        match self.state {
            State::Open | State::Authenticating { .. } if self.bind_deadline <= now => {
                self.close("no bind accepted in time".into());
            }
            State::Open | State::Authenticating { .. } if idle => {
                self.close("idle timeout".into());
            }
            State::Unbinding { deadline, .. } if deadline <= now => {
                self.close("unbind not complete in time".into());
            }
            State::Bound { mode } if idle => {
                tracing::info!("idle timeout, unbinding");
                self.start_unbind(mode, now);
            }
            State::Bound { .. }
                if self.enquire_link.is_none()
                    && after(self.last_rx, self.config.enquire_link_interval) <= now =>
            {
                let seq = self.alloc_seq();
                self.pending.insert(
                    seq,
                    Pending {
                        kind: Kind::EnquireLink,
                        deadline: after(now, self.config.response_timeout),
                    },
                );
                self.enquire_link = Some(seq);
                self.send(frame::enquire_link(seq));
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------ internals

    /// The next free sequence number. Terminates: at most deliver_window + 2 numbers are in
    /// flight out of 2^31 - 1.
    fn alloc_seq(&mut self) -> u32 {
        next_free_seq(&mut self.next_seq, |seq| self.pending.contains_key(&seq))
    }

    fn send(&mut self, command: Command) {
        self.outputs.push_back(Output::Send(command));
    }

    fn start_unbind(&mut self, mode: BindMode, now: Instant) {
        let deadline = after(now, self.config.unbind_timeout);
        let seq = self.alloc_seq();
        self.pending.insert(
            seq,
            Pending {
                kind: Kind::Unbind,
                deadline,
            },
        );
        self.state = State::Unbinding {
            mode,
            deadline,
            resp: false,
        };
        self.send(frame::unbind(seq));
    }

    fn on_response(&mut self, command: &Command) {
        let seq = command.sequence_number();
        let id = command.id();
        let status = u32::from(command.status());
        let Some(p) = self.pending.get(&seq).copied() else {
            tracing::debug!(
                sequence_number = seq,
                command = ?id,
                "response to no request in flight (late or bogus), ignored"
            );
            return;
        };
        let expected = match p.kind {
            Kind::Deliver { resp, .. } => resp,
            Kind::EnquireLink => CommandId::EnquireLinkResp,
            Kind::Unbind => CommandId::UnbindResp,
        };
        if id != expected && id != CommandId::GenericNack {
            tracing::debug!(
                sequence_number = seq,
                command = ?id,
                ?expected,
                "response does not match the request, ignored"
            );
            return;
        }
        let status = if id == CommandId::GenericNack && status == ESME_ROK {
            ESME_RSYSERR
        } else {
            status
        };
        self.resolve(seq, p.kind, status);
    }

    /// Our request `seq` was answered with `status`.
    fn resolve(&mut self, seq: u32, kind: Kind, status: u32) {
        self.pending.remove(&seq);
        match kind {
            Kind::Deliver { token, .. } => {
                self.deliveries = self.deliveries.saturating_sub(1);
                self.consecutive_timeouts = 0;
                let result = if status == ESME_ROK {
                    Ok(())
                } else {
                    Err(DeliverError::Refused { status })
                };
                self.outputs.push_back(Output::Delivered { token, result });
                self.maybe_unbound();
            }
            // Any answer shows the peer alive.
            Kind::EnquireLink => self.enquire_link = None,
            Kind::Unbind => {
                if let State::Unbinding { mode, deadline, .. } = self.state {
                    self.state = State::Unbinding {
                        mode,
                        deadline,
                        resp: true,
                    };
                }
                self.maybe_unbound();
            }
        }
    }

    /// Closes once our unbind is complete: unbind_resp received, no delivery in flight and
    /// no decision pending.
    fn maybe_unbound(&mut self) {
        if matches!(self.state, State::Unbinding { resp: true, .. })
            && self.deliveries == 0
            && self.submits.is_empty()
            && self.requests.is_empty()
        {
            self.close("unbound".into());
        }
    }

    fn refuse(&mut self, command: &Command, status: u32) {
        let seq = command.sequence_number();
        tracing::debug!(sequence_number = seq, command = ?command.id(), status, "request refused");
        self.send(error_resp(
            u32::from(command.id()),
            seq,
            status,
            &self.config.system_id,
        ));
    }

    fn on_request(&mut self, command: Command) {
        let seq = command.sequence_number();
        let id = command.id();
        if let Some(mode) = bind_mode_of(id) {
            self.on_bind(mode, command);
            return;
        }
        match id {
            CommandId::EnquireLink => {
                self.send(frame::enquire_link_resp(seq));
                return;
            }
            CommandId::Unbind => {
                self.send(frame::unbind_resp(seq));
                self.close("peer unbound".into());
                return;
            }
            _ => {}
        }
        let mode = match self.state {
            State::Bound { mode } => mode,
            _ => {
                self.refuse(&command, ESME_RINVBNDSTS);
                return;
            }
        };
        match id {
            CommandId::SubmitSm | CommandId::DataSm => {
                let kind = if id == CommandId::SubmitSm {
                    SubmitKind::SubmitSm
                } else {
                    SubmitKind::DataSm
                };
                if mode == BindMode::Receiver {
                    self.refuse(&command, ESME_RINVBNDSTS);
                } else if self.submits.contains_key(&seq) {
                    tracing::warn!(
                        sequence_number = seq,
                        "submit reuses a pending sequence number"
                    );
                    self.refuse(&command, ESME_RSYSERR);
                } else if self.submits.len() >= self.config.window {
                    self.refuse(&command, ESME_RMSGQFUL);
                } else {
                    self.submits.insert(seq, kind);
                    self.outputs.push_back(Output::Submit {
                        sequence_number: seq,
                        command,
                    });
                }
            }
            CommandId::QuerySm | CommandId::CancelSm => {
                let resp = if id == CommandId::QuerySm {
                    CommandId::QuerySmResp
                } else {
                    CommandId::CancelSmResp
                };
                if mode == BindMode::Receiver {
                    self.refuse(&command, ESME_RINVBNDSTS);
                } else if self.requests.contains_key(&seq) {
                    tracing::warn!(
                        sequence_number = seq,
                        "request reuses a pending sequence number"
                    );
                    self.refuse(&command, ESME_RSYSERR);
                } else if self.requests.len() >= self.config.window {
                    self.refuse(&command, ESME_RMSGQFUL);
                } else {
                    self.requests.insert(seq, resp);
                    self.outputs.push_back(Output::Request {
                        sequence_number: seq,
                        command,
                    });
                }
            }
            _ => {
                tracing::debug!(sequence_number = seq, command = ?id, "not supported by parla");
                self.send(frame::generic_nack(seq, ESME_RINVCMDID));
            }
        }
    }

    fn on_bind(&mut self, mode: BindMode, command: Command) {
        let seq = command.sequence_number();
        if self.state != State::Open {
            self.refuse(&command, ESME_RALYBND);
            return;
        }
        let request = match command.pdu() {
            Some(Pdu::BindTransmitter(b)) => Some((
                &b.system_id,
                &b.password,
                &b.system_type,
                b.interface_version,
                &b.address_range,
            )),
            Some(Pdu::BindReceiver(b)) => Some((
                &b.system_id,
                &b.password,
                &b.system_type,
                b.interface_version,
                &b.address_range,
            )),
            Some(Pdu::BindTransceiver(b)) => Some((
                &b.system_id,
                &b.password,
                &b.system_type,
                b.interface_version,
                &b.address_range,
            )),
            _ => None,
        };
        let Some((system_id, password, system_type, version, range)) = request else {
            // A bind always decodes with its body; be safe anyway.
            self.refuse(&command, ESME_RSYSERR);
            return;
        };
        let request = BindRequest {
            mode,
            system_id: c_text(system_id),
            password: c_text(password),
            system_type: c_text(system_type),
            interface_version: u8::from(version),
            address_range: c_text(range),
        };
        self.state = State::Authenticating {
            sequence_number: seq,
            mode,
            system_id: request.system_id.clone(),
        };
        self.outputs.push_back(Output::Authenticate {
            sequence_number: seq,
            request,
        });
    }

    fn on_invalid(&mut self, seq: u32, command_id: u32, status: u32, reason: &str) {
        tracing::debug!(
            sequence_number = seq,
            command_id,
            status,
            reason,
            "invalid PDU"
        );
        if is_response_id(command_id) {
            // Never answer a response. A mangled answer to one of our requests still answers
            // it: a delivery counts as refused.
            if let Some(p) = self.pending.get(&seq).copied() {
                let expected = match p.kind {
                    Kind::Deliver { resp, .. } => resp,
                    Kind::EnquireLink => CommandId::EnquireLinkResp,
                    Kind::Unbind => CommandId::UnbindResp,
                };
                if command_id == u32::from(expected)
                    || command_id == u32::from(CommandId::GenericNack)
                {
                    self.resolve(seq, p.kind, ESME_RSYSERR);
                }
            }
            return;
        }
        self.send(frame::generic_nack(seq, status));
    }

    /// Reports every delivery in flight as [`DeliverError::Closed`], then Closed.
    fn close(&mut self, reason: String) {
        if self.state == State::Closed {
            return;
        }
        let mut deliveries: Vec<(Instant, u32, u64)> = self
            .pending
            .iter()
            .filter_map(|(&seq, p)| match p.kind {
                Kind::Deliver { token, .. } => Some((p.deadline, seq, token)),
                _ => None,
            })
            .collect();
        deliveries.sort_unstable();
        for (_, _, token) in deliveries {
            self.outputs.push_back(Output::Delivered {
                token,
                result: Err(DeliverError::Closed),
            });
        }
        self.pending.clear();
        self.deliveries = 0;
        self.enquire_link = None;
        self.submits.clear();
        self.requests.clear();
        self.state = State::Closed;
        tracing::info!(%reason, "SMPP server session closed");
        self.outputs.push_back(Output::Closed { reason });
    }
}

fn bind_command_id(mode: BindMode) -> u32 {
    match mode {
        BindMode::Receiver => 0x0000_0001,
        BindMode::Transmitter => 0x0000_0002,
        BindMode::Transceiver => 0x0000_0009,
    }
}

#[cfg(test)]
#[path = "server_session_tests.rs"]
mod tests;
