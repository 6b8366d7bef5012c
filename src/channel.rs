//! The Channel abstraction that modems, SMPP links and the simulator implement.
//!
//! A channel is a task. It takes [`SendJob`]s from a bounded queue (the dispatcher waits when the
//! queue is full: that is the channel's window) and only *reports* what happened as
//! [`ChannelEvent`]s; it never touches the store. The correlator turns events into message state.
//!
//! Contract for implementations:
//! - report every part of every job taken, exactly once, as `Accepted` or the job as `SendFailed`,
//!   through [`EventSink::send_for`], so the job's [`Claim`] is released only once its outcome is
//!   on disk;
//! - on shutdown, stop taking jobs and report each unfinished job as a transient `SendFailed`, so
//!   it goes back to the queue instead of waiting for crash recovery;
//! - report receipts and inbound messages only after the peer gave them, and acknowledge them to
//!   the peer only after [`EventSink::send_committed`] returned (nothing accepted is lost).

use std::future::Future;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::message::{Message, MessageId, Millis, ReceiptOutcome, format_millis, now_millis};

/// One message handed to a channel.
#[derive(Debug, Clone)]
pub struct SendJob {
    /// The message as claimed (its `attempts` counts this attempt).
    pub message: Arc<Message>,
    /// Parts (0-based) to send; earlier attempts may have sent the others.
    pub parts_to_send: Vec<u8>,
    /// The job's place in its channel's claim budget.
    pub claim: Claim,
}

/// One place in a channel's claim budget: the messages claimed for the channel (`sending` on
/// disk) whose outcome is not yet on disk. A kill requeues exactly those as possible
/// duplicates, so the budget bounds what a kill may send twice. The place is given back when the
/// job and every event reported about it ([`EventSink::send_for`]) are dropped: the correlator
/// drops events only after committing them.
#[derive(Debug, Clone, Default)]
pub struct Claim {
    /// Only held: dropping the last clone gives the place back.
    _place: Option<Arc<OwnedSemaphorePermit>>,
}

impl Claim {
    /// Holds `permit` (one permit) until every clone is dropped.
    pub fn new(permit: OwnedSemaphorePermit) -> Self {
        Claim {
            _place: Some(Arc::new(permit)),
        }
    }
}

/// Whether a failure may succeed on a later attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Busy, throttled, link down before sending: try again later.
    Transient,
    /// Tried, and its fate is unknown: the link dropped or the line went (or the answer never
    /// came) after the message was handed over, so the network may have it. Tried again like a
    /// transient failure, and the message is marked and counted as a possible duplicate.
    Unknown,
    /// Invalid destination, barred, rejected content: trying again cannot help.
    Permanent,
    /// The channel never tried it (it stopped or went down before the message's turn): back
    /// to the queue at once, and the attempt does not count.
    NotSent,
}

/// What a channel reports.
#[derive(Debug, Clone)]
pub enum ChannelEvent {
    /// The network took parts; `remote_id` is what their receipts will name.
    Accepted {
        /// The message.
        id: MessageId,
        /// Which parts (0-based): one, or several when one submission carried them (an SMPP
        /// message_payload holds the whole text, and its one receipt settles them all).
        parts: RangeInclusive<u8>,
        /// The network's id for it (SMPP message_id, modem reference).
        remote_id: Option<String>,
    },
    /// The job failed. `retry_after` lets a channel ask for a minimum wait (e.g. throttling).
    SendFailed {
        /// The message.
        id: MessageId,
        /// The job's attempt number (the message's `attempts` when claimed).
        attempt: u32,
        /// Whether trying again may help.
        failure: Failure,
        /// What went wrong, for the message's history.
        reason: String,
        /// The least time to wait before the next attempt, when the peer said so.
        retry_after: Option<Duration>,
    },
    /// A delivery receipt.
    Receipt {
        /// The id the network gave the part when it accepted it.
        remote_id: String,
        /// What happened to the part.
        outcome: ReceiptOutcome,
        /// The network's error, when it gave one.
        reason: Option<String>,
    },
    /// A message from a customer.
    Inbound {
        /// The customer's number as the network gave it.
        from: String,
        /// The number or sender id the customer wrote to.
        to: String,
        /// The decoded text.
        text: String,
        /// The message this answers, when the channel knows.
        in_reply_to: Option<MessageId>,
        /// Set when this is one part of a concatenated message: the store keeps parts until
        /// the message is whole (or too old), then stores it as one inbound message.
        part: Option<InboundPart>,
        /// A fingerprint of the SMS as the network delivered it, when the channel may hand the
        /// same one over twice (a modem read again after a crash between commit and delete, an
        /// SMSC resending a deliver_sm whose answer was lost): the store keeps one.
        dedupe: Option<Dedupe>,
    },
}

/// How the store recognizes an SMS a channel hands over twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dedupe {
    /// A fingerprint of what the network delivered.
    pub fingerprint: String,
    /// A second arrival counts as the same SMS only within this time of the first; `None`:
    /// whenever (the fingerprint is unique to one SMS, e.g. it includes the network's
    /// timestamp). Without a timestamp (SMPP), identical texts far apart are real repeats.
    pub within_ms: Option<crate::message::Millis>,
}

impl From<&str> for Dedupe {
    /// A fingerprint unique to one SMS.
    fn from(fingerprint: &str) -> Self {
        Dedupe {
            fingerprint: fingerprint.to_owned(),
            within_ms: None,
        }
    }
}

/// Where one received SMS belongs in a concatenated message (UDH or SAR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct InboundPart {
    /// The sender's reference for the whole message (8 or 16 bits).
    pub reference: u16,
    /// How many parts the whole message has.
    pub total: u8,
    /// This part's number, from 1.
    pub seq: u8,
}

/// An event with where and when it happened, and optionally who waits for it to be committed.
#[derive(Debug)]
pub struct EventEnvelope {
    /// The channel that reported it.
    pub channel: Arc<str>,
    /// When it was reported.
    pub at: Millis,
    /// What happened.
    pub event: ChannelEvent,
    /// Answered once the event is durably applied (or failed to be).
    pub committed: Option<oneshot::Sender<bool>>,
    /// The claim of the job the event is about, held until the event is applied.
    pub claim: Claim,
}

/// The channel went away (shutdown).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the gateway is shutting down")]
pub struct Closed;

/// Where a channel sends its events.
#[derive(Debug, Clone)]
pub struct EventSink {
    channel: Arc<str>,
    tx: mpsc::Sender<EventEnvelope>,
}

impl EventSink {
    /// A sink that labels events with `channel`.
    pub fn new(channel: Arc<str>, tx: mpsc::Sender<EventEnvelope>) -> Self {
        EventSink { channel, tx }
    }

    /// Reports an event (waits while the correlator is behind: backpressure).
    pub async fn send(&self, event: ChannelEvent) -> Result<(), Closed> {
        self.send_claimed(event, Claim::default()).await
    }

    /// Reports an event about `job` (its acceptance or failure): the job's claim is held until
    /// the event is on disk.
    pub async fn send_for(&self, job: &SendJob, event: ChannelEvent) -> Result<(), Closed> {
        self.send_claimed(event, job.claim.clone()).await
    }

    async fn send_claimed(&self, event: ChannelEvent, claim: Claim) -> Result<(), Closed> {
        self.tx
            .send(EventEnvelope {
                channel: self.channel.clone(),
                at: now_millis(),
                event,
                committed: None,
                claim,
            })
            .await
            .map_err(|_| Closed)
    }

    /// Reports an event and waits until it is on disk: for inbound messages and receipts, which
    /// may be acknowledged to the peer (deleted from the modem, deliver_sm_resp) only then.
    /// Returns false when the store could not commit it: do not acknowledge.
    pub async fn send_committed(&self, event: ChannelEvent) -> Result<bool, Closed> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(EventEnvelope {
                channel: self.channel.clone(),
                at: now_millis(),
                event,
                committed: Some(tx),
                claim: Claim::default(),
            })
            .await
            .map_err(|_| Closed)?;
        rx.await.map_err(|_| Closed)
    }
}

/// What a channel task gets to work with.
pub struct ChannelContext {
    /// Messages to send; the queue's size is the channel's window.
    pub jobs: mpsc::Receiver<SendJob>,
    /// Where to report what happened.
    pub events: EventSink,
    /// Where to say whether the channel can send, and what it knows about its device or link.
    pub status: StatusHandle,
    /// Cancelled when the channel must hand back its work and stop.
    pub shutdown: CancellationToken,
}

/// Whether a channel can take messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Opening its device or link for the first time.
    Starting,
    /// Sending: the dispatcher hands it messages.
    Up,
    /// Cannot send (device gone, link down, SIM problem); it is trying to recover.
    Down,
    /// Working but not taking messages for now (a daily cap reached, throttled).
    Paused,
}

impl LinkState {
    /// The name the API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Starting => "starting",
            LinkState::Up => "up",
            LinkState::Down => "down",
            LinkState::Paused => "paused",
        }
    }
}

/// What a modem reported last (the modem channel fills it in).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ModemInfo {
    /// The serial port.
    pub port: String,
    /// `AT+CGMI`.
    pub manufacturer: Option<String>,
    /// `AT+CGMM`.
    pub model: Option<String>,
    /// `AT+CGMR`.
    pub revision: Option<String>,
    /// `AT+CGSN`.
    pub imei: Option<String>,
    /// `AT+CPIN?`: "READY", "SIM PIN", ...
    pub sim: Option<String>,
    /// `AT+CSQ` RSSI, 0-31 (99 unknown).
    pub signal_rssi: Option<u8>,
    /// The same in dBm, when known.
    pub signal_dbm: Option<i32>,
    /// `AT+CREG?`: home, roaming, searching, denied, not_registered, unknown.
    pub registration: Option<String>,
    /// `AT+COPS?`: the network's name.
    pub operator: Option<String>,
    /// How new messages are noticed: "indications" (+CNMI) or "polling".
    pub new_message_mode: Option<String>,
    /// Message storage in use and its fill, e.g. "SM 3/50".
    pub storage: Option<String>,
}

/// A channel's state as `GET /v1/channels` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelStatus {
    /// The channel's name.
    pub name: String,
    /// "sim", "modem" or "smpp".
    pub kind: &'static str,
    /// Whether it can send.
    pub state: LinkState,
    /// Why it is down or paused, in words.
    pub detail: Option<String>,
    /// When the state last changed (RFC 3339).
    pub since: String,
    /// SMS (parts) the network accepted.
    pub sent: u64,
    /// SMS (parts) received from customers, repeats not counted.
    pub received: u64,
    /// Messages that failed permanently on this channel.
    pub failed: u64,
    /// Modem details, for modem channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modem: Option<ModemInfo>,
}

/// A channel's side of its status: it reports state changes and device details here; the
/// dispatcher only hands messages to channels that are up, and the API shows it.
#[derive(Debug, Clone)]
pub struct StatusHandle {
    tx: Arc<watch::Sender<ChannelStatus>>,
}

impl StatusHandle {
    /// A handle for a channel that is starting.
    pub fn new(name: &str, kind: &'static str) -> Self {
        let status = ChannelStatus {
            name: name.to_string(),
            kind,
            state: LinkState::Starting,
            detail: None,
            since: format_millis(now_millis()),
            sent: 0,
            received: 0,
            failed: 0,
            modem: None,
        };
        StatusHandle {
            tx: Arc::new(watch::Sender::new(status)),
        }
    }

    /// Sets the state (and why); a no-op when nothing changes, so calling it often is cheap.
    pub fn set_state(&self, state: LinkState, detail: Option<String>) {
        self.tx.send_if_modified(|s| {
            if s.state == state && s.detail == detail {
                return false;
            }
            if s.state != state {
                s.since = format_millis(now_millis());
            }
            s.state = state;
            s.detail = detail;
            true
        });
    }

    /// Changes details without waking those who wait for a state change.
    pub fn update(&self, change: impl FnOnce(&mut ChannelStatus)) {
        self.tx.send_if_modified(|s| {
            let state = s.state;
            change(s);
            s.state = state;
            false
        });
    }

    /// The current status.
    pub fn get(&self) -> ChannelStatus {
        self.tx.borrow().clone()
    }

    /// The current state.
    pub fn state(&self) -> LinkState {
        self.tx.borrow().state
    }

    /// A receiver woken on every state change (not on counter or detail updates).
    pub fn subscribe(&self) -> watch::Receiver<ChannelStatus> {
        self.tx.subscribe()
    }

    /// Waits until the channel is up; returns false when the channel's status is gone.
    pub async fn wait_up(&self) -> bool {
        let mut rx = self.tx.subscribe();
        rx.wait_for(|s| s.state == LinkState::Up).await.is_ok()
    }
}

/// Every channel's status, by name: what `GET /v1/channels` lists. A configuration reload adds
/// and removes channels.
#[derive(Debug, Clone, Default)]
pub struct ChannelRegistry {
    channels: Arc<std::sync::RwLock<Vec<StatusHandle>>>,
}

impl ChannelRegistry {
    /// A registry of these channels, in configuration order.
    pub fn new(channels: Vec<StatusHandle>) -> Self {
        ChannelRegistry {
            channels: Arc::new(std::sync::RwLock::new(channels)),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<StatusHandle>> {
        self.channels
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Each channel's status.
    pub fn statuses(&self) -> Vec<ChannelStatus> {
        self.read().iter().map(StatusHandle::get).collect()
    }

    /// The handle of the channel called `name`.
    pub fn get(&self, name: &str) -> Option<StatusHandle> {
        self.read()
            .iter()
            .find(|h| h.tx.borrow().name == name)
            .cloned()
    }

    /// Replaces the channel called like `handle`'s, or adds it at the end.
    pub fn put(&self, handle: StatusHandle) {
        let name = handle.get().name;
        let mut channels = self
            .channels
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match channels.iter_mut().find(|h| h.tx.borrow().name == name) {
            Some(slot) => *slot = handle,
            None => channels.push(handle),
        }
    }

    /// Forgets the channel called `name`.
    pub fn remove(&self, name: &str) {
        self.channels
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|h| h.tx.borrow().name != name);
    }

    /// Adds a batch's counts to each channel's counters, one update per channel.
    pub fn count(&self, counts: &[(&str, Counts)]) {
        for (channel, c) in counts {
            if let Some(handle) = self.get(channel) {
                handle.update(|s| {
                    s.sent += c.sent;
                    s.received += c.received;
                    s.failed += c.failed;
                });
            }
        }
    }
}

/// What a batch of events adds to one channel's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Parts accepted.
    pub sent: u64,
    /// SMS received.
    pub received: u64,
    /// Messages failed for good.
    pub failed: u64,
}

impl Counts {
    /// Counts one event.
    pub fn add(&mut self, event: &ChannelEvent) {
        match event {
            ChannelEvent::Accepted { parts, .. } => self.sent += parts.clone().count() as u64,
            ChannelEvent::Inbound { .. } => self.received += 1,
            ChannelEvent::SendFailed {
                failure: Failure::Permanent,
                ..
            } => self.failed += 1,
            _ => {}
        }
    }
}

/// Errors that end a channel task.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The channel cannot go on (its configuration or device is unusable).
    #[error("channel {channel}: {reason}")]
    Fatal {
        /// The channel's name.
        channel: String,
        /// What is wrong, for the log.
        reason: String,
    },
    /// The gateway is shutting down.
    #[error(transparent)]
    Closed(#[from] Closed),
}

/// A future a channel runs as its task.
pub type ChannelTask = Pin<Box<dyn Future<Output = Result<(), ChannelError>> + Send>>;

/// A way to send messages: a modem, an SMPP link, the simulator.
pub trait Channel: Send + 'static {
    /// Unique name, used in message records and the remote-id index.
    fn name(&self) -> &str;
    /// "sim", "modem" or "smpp", for status listings.
    fn kind(&self) -> &'static str;
    /// Jobs the channel can hold at once (the size of its job queue), and its claim budget:
    /// messages claimed for it whose outcome is not yet on disk.
    fn window(&self) -> usize;
    /// The channel's task; it returns after `ctx.shutdown` is cancelled and its jobs are settled.
    fn run(self: Box<Self>, ctx: ChannelContext) -> ChannelTask;
}
