//! The Channel abstraction that modems, SMPP links and the simulator implement.
//!
//! A channel is a task. It takes [`SendJob`]s from a bounded queue (the dispatcher waits when the
//! queue is full: that is the channel's window) and only *reports* what happened as
//! [`ChannelEvent`]s; it never touches the store. The correlator turns events into message state.
//!
//! Contract for implementations:
//! - report every part of every job taken, exactly once, as `Accepted` or the job as `SendFailed`;
//! - on shutdown, stop taking jobs and report each unfinished job as a transient `SendFailed`, so
//!   it goes back to the queue instead of waiting for crash recovery;
//! - report receipts and inbound messages only after the peer gave them, and acknowledge them to
//!   the peer only after [`EventSink::send_committed`] returned (nothing accepted is lost).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::message::{Message, MessageId, Millis, ReceiptOutcome, now_millis};

/// One message handed to a channel.
#[derive(Debug, Clone)]
pub struct SendJob {
    /// The message as claimed (its `attempts` counts this attempt).
    pub message: Arc<Message>,
    /// Parts (0-based) to send; earlier attempts may have sent the others.
    pub parts_to_send: Vec<u8>,
}

/// Whether a failure may succeed on a later attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Busy, throttled, link down, timeout: try again later.
    Transient,
    /// Invalid destination, barred, rejected content: trying again cannot help.
    Permanent,
}

/// What a channel reports.
#[derive(Debug, Clone)]
pub enum ChannelEvent {
    /// The network took one part; `remote_id` is what its receipts will name.
    Accepted {
        /// The message.
        id: MessageId,
        /// Which part (0-based).
        part: u8,
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
    },
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
        self.tx
            .send(EventEnvelope {
                channel: self.channel.clone(),
                at: now_millis(),
                event,
                committed: None,
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
    /// Cancelled when the channel must hand back its work and stop.
    pub shutdown: CancellationToken,
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
    /// Jobs the channel can hold at once (the size of its job queue).
    fn window(&self) -> usize;
    /// The channel's task; it returns after `ctx.shutdown` is cancelled and its jobs are settled.
    fn run(self: Box<Self>, ctx: ChannelContext) -> ChannelTask;
}
