//! The simulated SMSC without I/O: decoded frames in, commands out, time passed in.
//!
//! One [`SmscCore`] serves every connection: it holds the accounts' bind state, the message-id
//! counter, the injected faults, the receipts and MO messages waiting for a receiver, and the
//! counters. The I/O layer ([`super::server`]) feeds it with `handle_*` calls and drains
//! `poll_*`; nothing here reads a clock or touches a socket, so the tests drive it with made-up
//! times.

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

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusmpp::{Command, Pdu};
use serde::Serialize;
use thiserror::Error;

use crate::channel::InboundPart;
use crate::codec::{gsm7, receipt};
use crate::smpp::content::{self, ContentError, ContentOptions, LongMethod};
use crate::smpp::frame::{self, Address, BindMode, Frame, SubmitFields};

/// system_id the simulator gives in its bind responses.
pub const SMSC_SYSTEM_ID: &str = "parla-sim";

/// ESME_RINVBNDSTS: command not allowed in the current bind state.
const ESME_RINVBNDSTS: u32 = 0x04;
/// ESME_RALYBND: already bound.
const ESME_RALYBND: u32 = 0x05;
/// ESME_RBINDFAIL: bind failed (sent while the simulator stops).
const ESME_RBINDFAIL: u32 = 0x0D;
/// ESME_RINVPASWD: invalid password.
const ESME_RINVPASWD: u32 = 0x0E;
/// ESME_RINVSYSID: invalid system_id.
const ESME_RINVSYSID: u32 = 0x0F;
/// ESME_RMSGQFUL: message queue full (more receipts pending than `max_pending`).
const ESME_RMSGQFUL: u32 = 0x14;
/// ESME_RTHROTTLED.
const ESME_RTHROTTLED: u32 = 0x58;

/// esm_class of an SMSC delivery receipt.
const ESM_RECEIPT: u8 = 0x04;
/// message_state DELIVERED.
const STATE_DELIVERED: u8 = 2;
/// message_state UNDELIVERABLE.
const STATE_UNDELIVERABLE: u8 = 5;
/// network_error_code of an undeliverable receipt: GSM (3), error 1.
const UNDELIVERABLE_NETWORK_ERROR: [u8; 3] = [3, 0, 1];

/// Concatenated messages being reassembled at most; past it the oldest is forgotten.
const MAX_PARTIAL: usize = 10_000;
/// Time `begin_shutdown` gives bound sessions to answer their unbind.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How message ids in submit_sm_resp look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdStyle {
    /// Lowercase hexadecimal without leading zeros ("1a2b3c4d").
    #[default]
    Hex,
    /// Uppercase hexadecimal zero-padded to 10 digits ("00001A2B3C").
    HexUpper,
    /// Decimal ("439041101").
    Decimal,
    /// A UUID-looking string whose last 12 hex digits are the counter.
    Uuid,
}

impl IdStyle {
    /// The style named `hex`, `hex-upper`, `decimal` or `uuid`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "hex" => Self::Hex,
            "hex-upper" => Self::HexUpper,
            "decimal" => Self::Decimal,
            "uuid" => Self::Uuid,
            _ => return None,
        })
    }
}

/// Where a receipt carries its information.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReceiptStyle {
    /// receipted_message_id and message_state TLVs, empty short_message.
    Tlv,
    /// The SMPP 3.4 Appendix B text in short_message, no TLVs.
    #[default]
    Text,
    /// Both.
    Both,
}

impl ReceiptStyle {
    /// The style named `tlv`, `text` or `both`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "tlv" => Self::Tlv,
            "text" => Self::Text,
            "both" => Self::Both,
            _ => return None,
        })
    }
}

/// Which form of the message id a receipt names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReceiptIdForm {
    /// Exactly as in the submit_sm_resp.
    #[default]
    Same,
    /// The id's number in decimal, whatever the resp showed (the classic SMSC mismatch).
    Decimal,
    /// The id's number in lowercase hexadecimal.
    Hex,
}

impl ReceiptIdForm {
    /// The form named `same`, `decimal` or `hex`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "same" => Self::Same,
            "decimal" => Self::Decimal,
            "hex" => Self::Hex,
            _ => return None,
        })
    }
}

/// How `mo` sends its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoMethod {
    /// One deliver_sm; the text must fit one SMS.
    Single,
    /// One deliver_sm per part with a concatenation UDH (esm_class 0x40).
    Udh,
    /// One deliver_sm per part with the sar_* TLVs.
    Sar,
    /// One deliver_sm with the whole text in message_payload.
    Payload,
}

impl MoMethod {
    /// The method named `single`, `udh`, `sar` or `payload`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "single" => Self::Single,
            "udh" => Self::Udh,
            "sar" => Self::Sar,
            "payload" => Self::Payload,
            _ => return None,
        })
    }
}

/// Settings of the simulated SMSC.
#[derive(Debug, Clone, PartialEq)]
pub struct SmscConfig {
    /// The only system_id accepted in binds; `None` accepts any.
    pub system_id: Option<String>,
    /// The only password accepted; `None` accepts any.
    pub password: Option<String>,
    /// How message ids look.
    pub id_style: IdStyle,
    /// The number of the first message id, so runs repeat.
    pub id_start: u64,
    /// Time from an accepted submit_sm to its receipt.
    pub receipt_delay: Duration,
    /// Where receipts carry their information.
    pub receipt_style: ReceiptStyle,
    /// Which form of the id receipts name.
    pub receipt_id_form: ReceiptIdForm,
    /// Share (0 to 1) of receipts that say UNDELIV.
    pub undeliverable_share: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Refuse every bind with this status.
    pub refuse_binds: Option<u32>,
    /// No per-submit, per-receipt, per-MO-part nor message events (and no reassembly).
    pub quiet: bool,
    /// deliver_sm (receipts and MO) unacknowledged per session at most.
    pub deliver_window: usize,
    /// Time a deliver_sm_resp may take before the deliver_sm is sent again.
    pub delivery_timeout: Duration,
    /// Time before a deliver_sm answered with an error status is sent again.
    pub retry_delay: Duration,
    /// Receipts and MO parts held at most (scheduled, queued or unacknowledged); past it
    /// submit_sm asking for a receipt is answered ESME_RMSGQFUL.
    pub max_pending: usize,
}

impl Default for SmscConfig {
    fn default() -> Self {
        Self {
            system_id: None,
            password: None,
            id_style: IdStyle::Hex,
            id_start: 439_041_101,
            receipt_delay: Duration::from_millis(200),
            receipt_style: ReceiptStyle::Text,
            receipt_id_form: ReceiptIdForm::Same,
            undeliverable_share: 0.0,
            seed: 1,
            refuse_binds: None,
            quiet: false,
            deliver_window: 100,
            delivery_timeout: Duration::from_secs(10),
            retry_delay: Duration::from_secs(1),
            max_pending: 1_000_000,
        }
    }
}

/// A connection, numbered from 1 in the order they were accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ConnId(pub u64);

/// How a connection is to be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    /// Write what is queued, then close.
    Graceful,
    /// Close at once, writing nothing more.
    Abrupt,
}

/// What the simulated SMSC did (JSON: `{"event": "...", ...}`). Statuses are `"0x%08X"`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SmscEvent {
    /// A TCP connection was accepted.
    Connected {
        /// Its number.
        conn: ConnId,
        /// The peer's address.
        peer: String,
    },
    /// A bind was accepted.
    Bound {
        /// The connection.
        conn: ConnId,
        /// "transmitter", "receiver" or "transceiver".
        mode: &'static str,
        /// The account.
        system_id: String,
    },
    /// A bind was refused.
    BindRefused {
        /// The connection.
        conn: ConnId,
        /// The bind asked for.
        mode: &'static str,
        /// The account given.
        system_id: String,
        /// The status answered.
        status: String,
    },
    /// A submit_sm was answered (not with `quiet`).
    Submit {
        /// The connection.
        conn: ConnId,
        /// The id given; `None` when refused.
        message_id: Option<String>,
        /// source_addr.
        source: String,
        /// destination_addr.
        dest: String,
        /// data_coding.
        data_coding: u8,
        /// esm_class.
        esm_class: u8,
        /// registered_delivery.
        registered_delivery: u8,
        /// The text of this SMS (UDH stripped); `None` if it could not be read.
        text: Option<String>,
        /// Its place in a concatenated message (UDH or SAR).
        part: Option<InboundPart>,
        /// The status answered.
        status: String,
    },
    /// A whole message arrived: one SMS, or the last missing part (not with `quiet`).
    Message {
        /// source_addr.
        source: String,
        /// destination_addr.
        dest: String,
        /// The whole text.
        text: String,
        /// SMS it came in.
        parts: u8,
        /// "single", "udh", "sar" or "payload".
        method: &'static str,
    },
    /// A delivery receipt was written (not with `quiet`).
    ReceiptSent {
        /// The connection.
        conn: ConnId,
        /// The id as the submit_sm_resp gave it.
        message_id: String,
        /// The id as the receipt names it.
        receipt_id: String,
        /// "DELIVRD" or "UNDELIV".
        stat: &'static str,
        /// 1 for the first time.
        attempt: u32,
    },
    /// A receipt's deliver_sm_resp came (not with `quiet`).
    ReceiptAcked {
        /// The connection.
        conn: ConnId,
        /// The id as the submit_sm_resp gave it.
        message_id: String,
        /// Its status; not OK means it will be sent again.
        status: String,
    },
    /// A part of an MO message was written.
    MoSent {
        /// The connection.
        conn: ConnId,
        /// The MO message's number (from the `mo_queued` answer).
        mo: u64,
        /// This part's number, from 1.
        seq: u8,
        /// Parts of the message.
        total: u8,
        /// 1 for the first time.
        attempt: u32,
    },
    /// An MO part's deliver_sm_resp came.
    MoAcked {
        /// The connection.
        conn: ConnId,
        /// The MO message's number.
        mo: u64,
        /// This part's number.
        seq: u8,
        /// Its status; not OK means it will be sent again.
        status: String,
    },
    /// A deliver_sm goes back to the queue (not with `quiet`).
    Requeued {
        /// The connection it was sent on.
        conn: ConnId,
        /// "receipt" or "mo".
        what: &'static str,
        /// The message id (receipts) or MO number and part ("3/2").
        id: String,
        /// "timeout", "status 0x...", "disconnected".
        reason: String,
    },
    /// A session unbound (either side asked).
    Unbound {
        /// The connection.
        conn: ConnId,
    },
    /// A connection ended.
    Disconnected {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: String,
    },
    /// A generic_nack was sent.
    GenericNackSent {
        /// The connection.
        conn: ConnId,
        /// The offending frame's sequence number.
        sequence_number: u32,
        /// The status sent.
        status: String,
        /// What was wrong.
        reason: String,
    },
    /// A request was read and dropped unanswered because the SMSC is stalled (not with
    /// `quiet`).
    Ignored {
        /// The connection.
        conn: ConnId,
        /// The command's SMPP name.
        command: &'static str,
        /// Its sequence number.
        sequence_number: u32,
    },
    /// Something went wrong that the operator should see.
    Error {
        /// What.
        message: String,
    },
}

/// Running totals and gauges, for `counters`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Binds accepted.
    pub binds: u64,
    /// Binds refused.
    pub binds_refused: u64,
    /// submit_sm handled (not those ignored while stalled).
    pub submits: u64,
    /// submit_sm_resp sent, by status ("0x00000000": n).
    pub submit_resps: BTreeMap<String, u64>,
    /// Receipts written (resends included).
    pub receipts_sent: u64,
    /// Receipts acknowledged with status OK.
    pub receipts_acked: u64,
    /// Receipt deliver_sm_resp with another status, and timeouts.
    pub receipts_failed: u64,
    /// MO parts written (resends included).
    pub mo_sent: u64,
    /// MO parts acknowledged with status OK.
    pub mo_acked: u64,
    /// MO deliver_sm_resp with another status, and timeouts.
    pub mo_failed: u64,
    /// Receipts and MO parts not yet acknowledged (scheduled, queued or in flight).
    pub pending: u64,
    /// Unbinds (either side).
    pub unbinds: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Connections accepted.
    pub connections_total: u64,
    /// generic_nack sent.
    pub generic_nacks_sent: u64,
    /// Whole messages seen (not counted with `quiet`).
    pub messages: u64,
    /// Requests dropped unanswered while stalled.
    pub ignored: u64,
    /// Events not printed because the printer fell behind.
    pub events_dropped: u64,
}

/// Why an MO message could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MoError {
    /// The text or an address cannot be sent.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// `single` was asked but the text needs more than one SMS.
    #[error("the text needs {parts} SMS; use udh, sar or payload")]
    TooLong {
        /// SMS it needs.
        parts: usize,
    },
    /// A part cannot be built as a deliver_sm.
    #[error("cannot build the deliver_sm: {0}")]
    Frame(String),
    /// The queue is full.
    #[error("{0} deliveries already pending; wait for receivers to take them")]
    QueueFull(usize),
}

/// Who may take a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    /// Sessions of this account (receipts go back to the submitter's account).
    Account(Arc<str>),
    /// Any receiving session (MO).
    Any,
}

#[derive(Debug, Clone)]
struct ReceiptInfo {
    message_id: String,
    receipt_id: String,
    /// The submit's source (the receipt's destination).
    source: Address,
    /// The submit's destination (the receipt's source).
    dest: Address,
    delivered: bool,
    submit_secs: i64,
    done_secs: i64,
    /// The start of the text, ASCII only.
    text: String,
}

#[derive(Debug, Clone)]
struct MoPart {
    mo: u64,
    seq: u8,
    total: u8,
    fields: SubmitFields,
}

#[derive(Debug, Clone)]
enum DeliveryKind {
    Receipt(Box<ReceiptInfo>),
    Mo(Box<MoPart>),
}

#[derive(Debug, Clone)]
struct Delivery {
    target: Target,
    /// Times written so far.
    attempts: u32,
    kind: DeliveryKind,
}

impl Delivery {
    fn what(&self) -> &'static str {
        match self.kind {
            DeliveryKind::Receipt(_) => "receipt",
            DeliveryKind::Mo(_) => "mo",
        }
    }

    fn label(&self) -> String {
        match &self.kind {
            DeliveryKind::Receipt(r) => r.message_id.clone(),
            DeliveryKind::Mo(m) => format!("{}/{}", m.mo, m.seq),
        }
    }
}

/// A delivery waiting for its time (receipt delay, retry delay).
struct Timed {
    due: Instant,
    order: u64,
    delivery: Delivery,
}

impl PartialEq for Timed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timed {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.order).cmp(&(other.due, other.order))
    }
}

struct InFlight {
    seq: u32,
    deadline: Instant,
    delivery: Delivery,
}

#[derive(Debug, Clone)]
enum ConnState {
    Open,
    Bound { mode: BindMode, system_id: Arc<str> },
}

struct Conn {
    state: ConnState,
    outbox: Vec<Command>,
    close: Option<CloseKind>,
    /// Sequence number of the next request the SMSC sends.
    next_seq: u32,
    /// deliver_sm written and not yet answered, in the order written.
    inflight: VecDeque<InFlight>,
    /// The unbind the SMSC sent while stopping.
    unbind_seq: Option<u32>,
    woken: bool,
}

impl Conn {
    fn next_seq(&mut self) -> u32 {
        let seq = self.next_seq;
        self.next_seq = if seq >= 0x7FFF_FFFF { 1 } else { seq + 1 };
        seq
    }

    fn receives(&self) -> Option<&Arc<str>> {
        match &self.state {
            ConnState::Bound { mode, system_id } if *mode != BindMode::Transmitter => {
                Some(system_id)
            }
            _ => None,
        }
    }
}

type PartialKey = (String, String, u16);

struct Partial {
    total: u8,
    texts: BTreeMap<u8, String>,
}

/// Concatenated submits being put back together.
#[derive(Default)]
struct Reassembly {
    partial: HashMap<PartialKey, Partial>,
    order: VecDeque<PartialKey>,
}

impl Reassembly {
    /// Adds one part; the whole text and part count when it was the last one missing.
    fn add(&mut self, key: PartialKey, part: InboundPart, text: String) -> Option<(String, u8)> {
        let entry = self.partial.entry(key.clone()).or_insert_with(|| Partial {
            total: part.total,
            texts: BTreeMap::new(),
        });
        if entry.total != part.total {
            // A new message reusing the reference: start over.
            entry.total = part.total;
            entry.texts.clear();
        }
        entry.texts.insert(part.seq, text);
        if entry.texts.len() == usize::from(entry.total) {
            let done = self.partial.remove(&key)?;
            return Some((done.texts.into_values().collect(), done.total));
        }
        if entry.texts.len() == 1 {
            self.order.push_back(key);
        }
        while self.partial.len() > MAX_PARTIAL {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.partial.remove(&oldest);
        }
        if self.order.len() > 2 * MAX_PARTIAL {
            let partial = &self.partial;
            self.order.retain(|k| partial.contains_key(k));
        }
        None
    }
}

/// The simulated SMSC as a state machine; see the module documentation.
pub struct SmscCore {
    config: SmscConfig,
    /// `now` at creation and the Unix time it stands for: receipts' dates.
    epoch: (Instant, i64),
    rng: fastrand::Rng,
    next_id: u64,
    uuid_prefix: (u32, u16, u16, u16),
    next_conn: u64,
    conns: BTreeMap<ConnId, Conn>,
    throttle: u32,
    fail: Option<(u32, u32)>,
    /// Counts accepted submit_sm down to the one whose receipt says UNDELIV (0: none).
    undeliver_in: u32,
    refuse_binds: Option<u32>,
    stalled: bool,
    scheduled: BinaryHeap<Reverse<Timed>>,
    next_order: u64,
    ready: HashMap<Target, VecDeque<Delivery>>,
    pending: usize,
    reassembly: Reassembly,
    events: VecDeque<SmscEvent>,
    woken: Vec<ConnId>,
    counters: Counters,
    statuses: HashMap<u32, u64>,
    shutdown: Option<Instant>,
    next_mo: u64,
    mo_reference: u8,
}

fn status_hex(status: u32) -> String {
    format!("0x{status:08X}")
}

fn mode_name(mode: BindMode) -> &'static str {
    match mode {
        BindMode::Transmitter => "transmitter",
        BindMode::Receiver => "receiver",
        BindMode::Transceiver => "transceiver",
    }
}

impl SmscCore {
    /// A core started at `now`, which stands for the Unix time `unix_now` (for receipt dates).
    pub fn new(config: SmscConfig, now: Instant, unix_now: i64) -> Self {
        let mut rng = fastrand::Rng::with_seed(config.seed);
        let uuid_prefix = (
            rng.u32(..),
            rng.u16(..),
            rng.u16(..0x1000),
            rng.u16(..0x1000),
        );
        Self {
            epoch: (now, unix_now),
            rng,
            next_id: config.id_start,
            uuid_prefix,
            next_conn: 1,
            conns: BTreeMap::new(),
            throttle: 0,
            fail: None,
            undeliver_in: 0,
            refuse_binds: config.refuse_binds,
            stalled: false,
            scheduled: BinaryHeap::new(),
            next_order: 0,
            ready: HashMap::new(),
            pending: 0,
            reassembly: Reassembly::default(),
            events: VecDeque::new(),
            woken: Vec::new(),
            counters: Counters::default(),
            statuses: HashMap::new(),
            shutdown: None,
            next_mo: 1,
            mo_reference: 0,
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &SmscConfig {
        &self.config
    }

    fn unix(&self, now: Instant) -> i64 {
        let elapsed = now.saturating_duration_since(self.epoch.0).as_secs();
        self.epoch
            .1
            .saturating_add(i64::try_from(elapsed).unwrap_or(i64::MAX))
    }

    fn event(&mut self, event: SmscEvent) {
        self.events.push_back(event);
    }

    fn wake(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn)
            && !c.woken
        {
            c.woken = true;
            self.woken.push(conn);
        }
    }

    fn send(&mut self, conn: ConnId, command: Command) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.outbox.push(command);
        }
        self.wake(conn);
    }

    fn close(&mut self, conn: ConnId, kind: CloseKind) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if kind == CloseKind::Abrupt {
                c.outbox.clear();
            }
            if c.close != Some(CloseKind::Abrupt) {
                c.close = Some(kind);
            }
        }
        self.wake(conn);
    }

    // ------------------------------------------------------------------------- connections

    /// A connection was accepted; returns its number.
    pub fn handle_connect(&mut self, peer: &str) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.conns.insert(
            conn,
            Conn {
                state: ConnState::Open,
                outbox: Vec::new(),
                close: None,
                next_seq: 1,
                inflight: VecDeque::new(),
                unbind_seq: None,
                woken: false,
            },
        );
        self.counters.connections_total += 1;
        self.event(SmscEvent::Connected {
            conn,
            peer: peer.to_string(),
        });
        if self.shutdown.is_some() {
            self.close(conn, CloseKind::Graceful);
        }
        conn
    }

    /// The connection is gone (`reason` for the event): what it had not acknowledged goes back
    /// to the front of the queue, for the next receiving session of its account.
    pub fn handle_disconnect(&mut self, conn: ConnId, reason: &str, now: Instant) {
        let Some(mut c) = self.conns.remove(&conn) else {
            return;
        };
        let mut back: Vec<Delivery> = c.inflight.drain(..).map(|f| f.delivery).collect();
        for d in &back {
            self.requeued_event(conn, d, "disconnected");
        }
        while let Some(d) = back.pop() {
            self.ready
                .entry(d.target.clone())
                .or_default()
                .push_front(d);
        }
        self.event(SmscEvent::Disconnected {
            conn,
            reason: reason.to_string(),
        });
        self.fill_all(now);
    }

    /// Framing was lost on `conn` (a command_length out of bounds): generic_nack
    /// ESME_RINVCMDLEN, then close.
    pub fn handle_framing_lost(&mut self, conn: ConnId, sequence_number: Option<u32>) {
        let seq = sequence_number.unwrap_or(0);
        self.nack(
            conn,
            seq,
            frame::ESME_RINVCMDLEN,
            "command_length out of bounds".into(),
        );
        self.close(conn, CloseKind::Graceful);
    }

    fn nack(&mut self, conn: ConnId, sequence_number: u32, status: u32, reason: String) {
        if self.stalled {
            return;
        }
        self.send(conn, frame::generic_nack(sequence_number, status));
        self.counters.generic_nacks_sent += 1;
        self.event(SmscEvent::GenericNackSent {
            conn,
            sequence_number,
            status: status_hex(status),
            reason,
        });
    }

    // ------------------------------------------------------------------------------ frames

    /// One decoded frame from `conn`.
    pub fn handle_frame(&mut self, conn: ConnId, frame: Frame, now: Instant) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.close.is_some() {
            return;
        }
        match frame {
            Frame::Invalid {
                sequence_number,
                command_id,
                command_status,
                reason,
            } => {
                if self.stalled {
                    self.ignored(conn, command_id, sequence_number);
                    return;
                }
                self.nack(conn, sequence_number, command_status, reason);
            }
            Frame::Pdu(command) => self.handle_command(conn, command, now),
        }
    }

    fn ignored(&mut self, conn: ConnId, command_id: u32, sequence_number: u32) {
        self.counters.ignored += 1;
        if !self.config.quiet {
            self.event(SmscEvent::Ignored {
                conn,
                command: frame::command_name(command_id).unwrap_or("unknown"),
                sequence_number,
            });
        }
    }

    fn handle_command(&mut self, conn: ConnId, command: Command, now: Instant) {
        let id = u32::from(command.id());
        let seq = command.sequence_number();
        let status = u32::from(command.status());
        let is_request = id & 0x8000_0000 == 0;
        if is_request && self.stalled {
            self.ignored(conn, id, seq);
            return;
        }
        match id {
            0x0000_0001 => self.handle_bind(conn, BindMode::Receiver, &command, now),
            0x0000_0002 => self.handle_bind(conn, BindMode::Transmitter, &command, now),
            0x0000_0009 => self.handle_bind(conn, BindMode::Transceiver, &command, now),
            0x0000_0015 => self.send(conn, frame::enquire_link_resp(seq)),
            0x0000_0006 => {
                self.send(conn, frame::unbind_resp(seq));
                self.unbound(conn);
            }
            0x0000_0004 => self.handle_submit(conn, &command, now),
            0x8000_0005 => self.handle_deliver_resp(conn, seq, status, now),
            // A generic_nack to one of our deliver_sm counts as a failed response.
            0x8000_0000 => self.handle_deliver_resp(conn, seq, status.max(1), now),
            0x8000_0006 if self.conns.get(&conn).and_then(|c| c.unbind_seq) == Some(seq) => {
                self.unbound(conn);
            }
            _ if is_request => {
                let bound = matches!(
                    self.conns.get(&conn).map(|c| &c.state),
                    Some(ConnState::Bound { .. })
                );
                let (status, why) = if bound {
                    (frame::ESME_RINVCMDID, "not supported by the simulator")
                } else {
                    (ESME_RINVBNDSTS, "not allowed before a bind")
                };
                let name = frame::command_name(id).unwrap_or("unknown");
                self.nack(conn, seq, status, format!("{name}: {why}"));
            }
            // Other responses (enquire_link_resp, ...) need nothing.
            _ => {}
        }
    }

    fn unbound(&mut self, conn: ConnId) {
        self.counters.unbinds += 1;
        self.event(SmscEvent::Unbound { conn });
        self.close(conn, CloseKind::Graceful);
    }

    fn handle_bind(&mut self, conn: ConnId, mode: BindMode, command: &Command, now: Instant) {
        let seq = command.sequence_number();
        let (system_id, password) = match command.pdu() {
            Some(Pdu::BindTransmitter(b)) => (b.system_id.as_str(), b.password.as_str()),
            Some(Pdu::BindReceiver(b)) => (b.system_id.as_str(), b.password.as_str()),
            Some(Pdu::BindTransceiver(b)) => (b.system_id.as_str(), b.password.as_str()),
            _ => ("", ""),
        };
        let system_id = system_id.to_string();
        let already = matches!(
            self.conns.get(&conn).map(|c| &c.state),
            Some(ConnState::Bound { .. })
        );
        let status = if already {
            ESME_RALYBND
        } else if self.shutdown.is_some() {
            ESME_RBINDFAIL
        } else if let Some(status) = self.refuse_binds {
            status
        } else if self
            .config
            .system_id
            .as_deref()
            .is_some_and(|want| want != system_id)
        {
            ESME_RINVSYSID
        } else if self
            .config
            .password
            .as_deref()
            .is_some_and(|want| want != password)
        {
            ESME_RINVPASWD
        } else {
            frame::ESME_ROK
        };
        if let Ok(resp) = frame::bind_resp(mode, seq, status, SMSC_SYSTEM_ID) {
            self.send(conn, resp);
        }
        if status != frame::ESME_ROK {
            self.counters.binds_refused += 1;
            self.event(SmscEvent::BindRefused {
                conn,
                mode: mode_name(mode),
                system_id,
                status: status_hex(status),
            });
            return;
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = ConnState::Bound {
                mode,
                system_id: Arc::from(system_id.as_str()),
            };
        }
        self.counters.binds += 1;
        self.event(SmscEvent::Bound {
            conn,
            mode: mode_name(mode),
            system_id,
        });
        self.fill(conn, now);
    }

    /// The next message id: its number and its text in the configured style.
    fn next_message_id(&mut self) -> (u64, String) {
        let n = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let text = match self.config.id_style {
            IdStyle::Hex => format!("{n:x}"),
            IdStyle::HexUpper => format!("{n:010X}"),
            IdStyle::Decimal => n.to_string(),
            IdStyle::Uuid => {
                let (a, b, c, d) = self.uuid_prefix;
                format!(
                    "{a:08x}-{b:04x}-4{c:03x}-{:04x}-{:012x}",
                    0x8000 | d,
                    n & 0xFFFF_FFFF_FFFF
                )
            }
        };
        (n, text)
    }

    fn handle_submit(&mut self, conn: ConnId, command: &Command, now: Instant) {
        let seq = command.sequence_number();
        self.counters.submits += 1;
        let Some((account, may_submit)) = self.conns.get(&conn).map(|c| match &c.state {
            ConnState::Bound { mode, system_id } => {
                (Some(system_id.clone()), *mode != BindMode::Receiver)
            }
            ConnState::Open => (None, false),
        }) else {
            return;
        };
        let sms = content::sms_of(command);
        let receipt_wanted = sms.as_ref().map_or(0, |s| s.registered_delivery & 0x03);
        let needs_text = !self.config.quiet
            || (receipt_wanted != 0 && self.config.receipt_style != ReceiptStyle::Tlv);
        let decoded = match (&sms, needs_text) {
            (Some(sms), true) => content::decode_sms(&sms.content, false).ok(),
            _ => None,
        };
        let status = if !may_submit {
            ESME_RINVBNDSTS
        } else if self.throttle > 0 {
            self.throttle -= 1;
            ESME_RTHROTTLED
        } else if let Some((left, status)) = self.fail {
            self.fail = (left > 1).then_some((left - 1, status));
            status
        } else if receipt_wanted != 0 && self.pending >= self.config.max_pending {
            ESME_RMSGQFUL
        } else {
            frame::ESME_ROK
        };
        let id = (status == frame::ESME_ROK).then(|| self.next_message_id());
        let id_text = id.as_ref().map_or("", |(_, text)| text.as_str());
        if let Ok(resp) = frame::submit_sm_resp(seq, status, id_text) {
            self.send(conn, resp);
        }
        *self.statuses.entry(status).or_default() += 1;
        let Some(sms) = sms else {
            return;
        };
        if !self.config.quiet {
            self.event(SmscEvent::Submit {
                conn,
                message_id: id.as_ref().map(|(_, text)| text.clone()),
                source: sms.source.addr.clone(),
                dest: sms.dest.addr.clone(),
                data_coding: sms.content.data_coding,
                esm_class: sms.content.esm_class,
                registered_delivery: sms.registered_delivery,
                text: decoded.as_ref().map(|d| d.text.clone()),
                part: decoded.as_ref().and_then(|d| d.part),
                status: status_hex(status),
            });
        }
        let (Some((number, message_id)), Some(account)) = (id, account) else {
            return;
        };
        let chosen_undeliverable = self.undeliver_in == 1;
        self.undeliver_in = self.undeliver_in.saturating_sub(1);
        if !self.config.quiet
            && let Some(decoded) = &decoded
        {
            self.reassemble(&sms, decoded);
        }
        if receipt_wanted == 0 {
            return;
        }
        let undeliverable =
            chosen_undeliverable || self.rng.f64() < self.config.undeliverable_share;
        if receipt_wanted == 0x02 && !undeliverable {
            return;
        }
        let receipt_id = match self.config.receipt_id_form {
            ReceiptIdForm::Same => message_id.clone(),
            ReceiptIdForm::Decimal => number.to_string(),
            ReceiptIdForm::Hex => format!("{number:x}"),
        };
        let submit_secs = self.unix(now);
        let due = now + self.config.receipt_delay;
        let info = ReceiptInfo {
            message_id,
            receipt_id,
            source: sms.source,
            dest: sms.dest,
            delivered: !undeliverable,
            submit_secs,
            done_secs: self.unix(due),
            text: decoded
                .map(|d| receipt::text_head(&d.text))
                .unwrap_or_default(),
        };
        self.pending += 1;
        self.schedule(
            due,
            Delivery {
                target: Target::Account(account),
                attempts: 0,
                kind: DeliveryKind::Receipt(Box::new(info)),
            },
        );
    }

    fn reassemble(&mut self, sms: &content::SmsPdu, decoded: &content::DecodedSms) {
        let method = if sms.content.message_payload.is_some() {
            "payload"
        } else if decoded.part.is_none() {
            "single"
        } else if sms.content.sar.is_some() && sms.content.esm_class & 0x40 == 0 {
            "sar"
        } else {
            "udh"
        };
        let whole = match decoded.part {
            Some(part) if part.total > 1 && part.seq >= 1 && part.seq <= part.total => {
                let key = (
                    sms.source.addr.clone(),
                    sms.dest.addr.clone(),
                    part.reference,
                );
                self.reassembly.add(key, part, decoded.text.clone())
            }
            _ => Some((decoded.text.clone(), 1)),
        };
        if let Some((text, parts)) = whole {
            self.counters.messages += 1;
            self.event(SmscEvent::Message {
                source: sms.source.addr.clone(),
                dest: sms.dest.addr.clone(),
                text,
                parts,
                method,
            });
        }
    }

    fn schedule(&mut self, due: Instant, delivery: Delivery) {
        let order = self.next_order;
        self.next_order += 1;
        self.scheduled.push(Reverse(Timed {
            due,
            order,
            delivery,
        }));
    }

    fn handle_deliver_resp(&mut self, conn: ConnId, seq: u32, status: u32, now: Instant) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(index) = c.inflight.iter().position(|f| f.seq == seq) else {
            return;
        };
        let Some(InFlight { mut delivery, .. }) = c.inflight.remove(index) else {
            return;
        };
        let ok = status == frame::ESME_ROK;
        match &delivery.kind {
            DeliveryKind::Receipt(r) => {
                if ok {
                    self.counters.receipts_acked += 1;
                } else {
                    self.counters.receipts_failed += 1;
                }
                if !self.config.quiet {
                    let message_id = r.message_id.clone();
                    self.event(SmscEvent::ReceiptAcked {
                        conn,
                        message_id,
                        status: status_hex(status),
                    });
                }
            }
            DeliveryKind::Mo(m) => {
                if ok {
                    self.counters.mo_acked += 1;
                } else {
                    self.counters.mo_failed += 1;
                }
                let (mo, seq) = (m.mo, m.seq);
                self.event(SmscEvent::MoAcked {
                    conn,
                    mo,
                    seq,
                    status: status_hex(status),
                });
            }
        }
        if ok {
            self.pending = self.pending.saturating_sub(1);
        } else {
            self.requeued_event(conn, &delivery, &format!("status {}", status_hex(status)));
            delivery.attempts = delivery.attempts.max(1);
            self.schedule(now + self.config.retry_delay, delivery);
        }
        self.fill(conn, now);
    }

    fn requeued_event(&mut self, conn: ConnId, delivery: &Delivery, reason: &str) {
        if !self.config.quiet || matches!(delivery.kind, DeliveryKind::Mo(_)) {
            self.event(SmscEvent::Requeued {
                conn,
                what: delivery.what(),
                id: delivery.label(),
                reason: reason.to_string(),
            });
        }
    }

    // -------------------------------------------------------------------------- deliveries

    /// Writes queued deliveries to `conn` while its window has room.
    fn fill(&mut self, conn: ConnId, now: Instant) {
        if self.stalled || self.shutdown.is_some() {
            return;
        }
        let window = self.config.deliver_window.max(1);
        loop {
            let Some(c) = self.conns.get(&conn) else {
                return;
            };
            if c.close.is_some() || c.inflight.len() >= window {
                return;
            }
            let Some(account) = c.receives().cloned() else {
                return;
            };
            let delivery = self
                .ready
                .get_mut(&Target::Account(account))
                .and_then(VecDeque::pop_front)
                .or_else(|| {
                    self.ready
                        .get_mut(&Target::Any)
                        .and_then(VecDeque::pop_front)
                });
            let Some(delivery) = delivery else {
                return;
            };
            self.write_delivery(conn, delivery, now);
        }
    }

    fn fill_all(&mut self, now: Instant) {
        if self.ready.values().all(VecDeque::is_empty) {
            return;
        }
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.fill(conn, now);
        }
    }

    fn receipt_command(&self, seq: u32, r: &ReceiptInfo) -> Result<Command, frame::FrameError> {
        let (stat, state, err) = if r.delivered {
            ("DELIVRD", STATE_DELIVERED, "000")
        } else {
            ("UNDELIV", STATE_UNDELIVERABLE, "001")
        };
        let style = self.config.receipt_style;
        let short_message = if style == ReceiptStyle::Tlv {
            Vec::new()
        } else {
            format!(
                "id:{} sub:001 dlvrd:{} submit date:{} done date:{} stat:{stat} err:{err} text:{}",
                r.receipt_id,
                if r.delivered { "001" } else { "000" },
                receipt::date(r.submit_secs),
                receipt::date(r.done_secs),
                r.text
            )
            .into_bytes()
        };
        let fields = SubmitFields {
            source: r.dest.clone(),
            dest: r.source.clone(),
            esm_class: ESM_RECEIPT,
            short_message,
            ..SubmitFields::default()
        };
        if style == ReceiptStyle::Text {
            frame::deliver_sm(seq, &fields)
        } else {
            frame::deliver_sm_with_tlvs(
                seq,
                &fields,
                Some(&r.receipt_id),
                Some(state),
                (!r.delivered).then_some(UNDELIVERABLE_NETWORK_ERROR),
            )
        }
    }

    fn write_delivery(&mut self, conn: ConnId, mut delivery: Delivery, now: Instant) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let seq = c.next_seq();
        let built = match &delivery.kind {
            DeliveryKind::Receipt(r) => self.receipt_command(seq, r),
            DeliveryKind::Mo(m) => frame::deliver_sm(seq, &m.fields),
        };
        let command = match built {
            Ok(command) => command,
            Err(e) => {
                // Cannot happen for what was accepted; never loop on it.
                self.pending = self.pending.saturating_sub(1);
                let message = format!("{} {} dropped: {e}", delivery.what(), delivery.label());
                self.event(SmscEvent::Error { message });
                return;
            }
        };
        delivery.attempts += 1;
        let attempt = delivery.attempts;
        match &delivery.kind {
            DeliveryKind::Receipt(r) => {
                self.counters.receipts_sent += 1;
                if !self.config.quiet {
                    let event = SmscEvent::ReceiptSent {
                        conn,
                        message_id: r.message_id.clone(),
                        receipt_id: r.receipt_id.clone(),
                        stat: if r.delivered { "DELIVRD" } else { "UNDELIV" },
                        attempt,
                    };
                    self.event(event);
                }
            }
            DeliveryKind::Mo(m) => {
                self.counters.mo_sent += 1;
                let event = SmscEvent::MoSent {
                    conn,
                    mo: m.mo,
                    seq: m.seq,
                    total: m.total,
                    attempt,
                };
                self.event(event);
            }
        }
        let deadline = now + self.config.delivery_timeout;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.outbox.push(command);
            c.inflight.push_back(InFlight {
                seq,
                deadline,
                delivery,
            });
        }
        self.wake(conn);
    }

    // ------------------------------------------------------------------------------ timers

    /// Time passed: receipts and retries that are due are queued and written, deliver_sm
    /// unanswered for `delivery_timeout` go back to the front of the queue, and once the
    /// shutdown grace is over every connection is closed.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse(next)) = self.scheduled.peek() {
            if next.due > now {
                break;
            }
            let Some(Reverse(timed)) = self.scheduled.pop() else {
                break;
            };
            let d = timed.delivery;
            self.ready.entry(d.target.clone()).or_default().push_back(d);
        }
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in &conns {
            let mut expired = Vec::new();
            if let Some(c) = self.conns.get_mut(conn) {
                while c.inflight.front().is_some_and(|f| f.deadline <= now) {
                    if let Some(f) = c.inflight.pop_front() {
                        expired.push(f.delivery);
                    }
                }
            }
            for d in &expired {
                match d.kind {
                    DeliveryKind::Receipt(_) => self.counters.receipts_failed += 1,
                    DeliveryKind::Mo(_) => self.counters.mo_failed += 1,
                }
                self.requeued_event(*conn, d, "timeout");
            }
            while let Some(d) = expired.pop() {
                self.ready
                    .entry(d.target.clone())
                    .or_default()
                    .push_front(d);
            }
        }
        if self.shutdown.is_some_and(|deadline| deadline <= now) {
            for conn in conns {
                self.close(conn, CloseKind::Graceful);
            }
        }
        self.fill_all(now);
    }

    /// When [`SmscCore::handle_timeout`] should be called next.
    pub fn next_deadline(&self) -> Option<Instant> {
        let scheduled = self.scheduled.peek().map(|Reverse(t)| t.due);
        let inflight = self
            .conns
            .values()
            .filter_map(|c| c.inflight.front().map(|f| f.deadline))
            .min();
        let shutdown = self
            .shutdown
            .filter(|_| self.conns.values().any(|c| c.close.is_none()));
        [scheduled, inflight, shutdown].into_iter().flatten().min()
    }

    // ----------------------------------------------------------------------------- outputs

    /// Moves what is to be written to `conn` into `out`, in order; `Some` when the connection
    /// is then to be closed ([`CloseKind::Abrupt`]: at once, `out` is left as it was).
    pub fn poll_transmit(&mut self, conn: ConnId, out: &mut Vec<Command>) -> Option<CloseKind> {
        let c = self.conns.get_mut(&conn)?;
        c.woken = false;
        if c.close == Some(CloseKind::Abrupt) {
            c.outbox.clear();
            return c.close;
        }
        out.append(&mut c.outbox);
        c.close
    }

    /// A connection with something new to write or a close to act on, since the last call.
    pub fn poll_woken(&mut self) -> Option<ConnId> {
        self.woken.pop()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<SmscEvent> {
        self.events.pop_front()
    }

    // ---------------------------------------------------------------------------- controls

    /// The next `n` submit_sm are answered ESME_RTHROTTLED.
    pub fn throttle(&mut self, n: u32) {
        self.throttle = n;
    }

    /// The next `n` submit_sm (after those throttled) are answered with `status`.
    pub fn fail(&mut self, n: u32, status: u32) {
        self.fail = (n > 0).then_some((n, status));
    }

    /// The `k`-th submit_sm accepted from now on (1: the next) gets an UNDELIV receipt: one
    /// part of a long message can fail while the others are delivered. 0 cancels.
    pub fn undeliver(&mut self, k: u32) {
        self.undeliver_in = k;
    }

    /// Binds are refused with `status` (`None`: judged by the credentials again).
    pub fn refuse_binds(&mut self, status: Option<u32>) {
        self.refuse_binds = status;
    }

    /// Stalled: requests are read and dropped unanswered and no deliver_sm is written;
    /// responses from the peer are still taken. Back on, nothing dropped is answered late.
    pub fn set_stalled(&mut self, stalled: bool, now: Instant) {
        self.stalled = stalled;
        if !stalled {
            self.fill_all(now);
        }
    }

    /// Whether stalled.
    pub fn is_stalled(&self) -> bool {
        self.stalled
    }

    /// Closes every connection at once, without unbind and without writing anything queued;
    /// returns how many. What they had not acknowledged is sent again on the next sessions.
    pub fn drop_all(&mut self) -> usize {
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in &conns {
            self.close(*conn, CloseKind::Abrupt);
        }
        conns.len()
    }

    /// Queues an MO message from `from` to `to` for any receiving session; returns its number
    /// and how many deliver_sm it takes.
    pub fn send_mo(
        &mut self,
        from: &str,
        to: &str,
        method: MoMethod,
        text: &str,
        now: Instant,
    ) -> Result<(u64, usize), MoError> {
        let source = content::address_for(from)?;
        let dest = content::address_for(to)?;
        let long_method = match method {
            MoMethod::Single | MoMethod::Udh => LongMethod::Udh,
            MoMethod::Sar => LongMethod::Sar,
            MoMethod::Payload => LongMethod::Payload,
        };
        let options = ContentOptions {
            long_method,
            ..ContentOptions::default()
        };
        self.mo_reference = self.mo_reference.wrapping_add(1).max(1);
        let reference = u16::from(self.mo_reference);
        let parts = content::encode_text(text, gsm7::choose_encoding(text), options, reference)?;
        if method == MoMethod::Single && parts.len() > 1 {
            return Err(MoError::TooLong { parts: parts.len() });
        }
        if self.pending.saturating_add(parts.len()) > self.config.max_pending {
            return Err(MoError::QueueFull(self.pending));
        }
        let total = u8::try_from(parts.len()).unwrap_or(u8::MAX);
        let mo = self.next_mo;
        let mut deliveries = Vec::with_capacity(parts.len());
        for (index, part) in parts.into_iter().enumerate() {
            let fields = content::fields_of(&source, &dest, part);
            frame::deliver_sm(1, &fields).map_err(|e| MoError::Frame(e.to_string()))?;
            deliveries.push(Delivery {
                target: Target::Any,
                attempts: 0,
                kind: DeliveryKind::Mo(Box::new(MoPart {
                    mo,
                    seq: u8::try_from(index + 1).unwrap_or(u8::MAX),
                    total,
                    fields,
                })),
            });
        }
        self.next_mo += 1;
        let count = deliveries.len();
        self.pending += count;
        self.ready
            .entry(Target::Any)
            .or_default()
            .extend(deliveries);
        self.fill_all(now);
        Ok((mo, count))
    }

    /// Counters and gauges now.
    pub fn counters(&self) -> Counters {
        let mut counters = self.counters.clone();
        counters.submit_resps = self
            .statuses
            .iter()
            .map(|(status, n)| (status_hex(*status), *n))
            .collect();
        counters.pending = self.pending as u64;
        counters.connections_open = self.conns.len() as u64;
        counters
    }

    /// Counts events the printer could not take.
    pub fn note_events_dropped(&mut self, n: u64) {
        self.counters.events_dropped += n;
    }

    /// Connections open (not yet reported gone by [`SmscCore::handle_disconnect`]).
    pub fn connections_open(&self) -> usize {
        self.conns.len()
    }

    /// Starts stopping: bound sessions get an unbind, the others are closed, nothing more is
    /// delivered, new binds are refused; after [`SHUTDOWN_GRACE`] (see
    /// [`SmscCore::handle_timeout`]) every connection is closed. Ends a stall, so the unbinds
    /// can be written.
    pub fn begin_shutdown(&mut self, now: Instant) {
        if self.shutdown.is_some() {
            return;
        }
        self.shutdown = Some(now + SHUTDOWN_GRACE);
        self.stalled = false;
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            if c.close.is_some() {
                continue;
            }
            if matches!(c.state, ConnState::Bound { .. }) {
                let seq = c.next_seq();
                c.unbind_seq = Some(seq);
                self.send(conn, frame::unbind(seq));
            } else {
                self.close(conn, CloseKind::Graceful);
            }
        }
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
