//! The correlator: the one place that turns channel events into message state. Acceptances and
//! failures move messages along (with the retry policy deciding when a transient failure is tried
//! again), receipts find their message through the remote-id index, and customer replies are
//! stored. Events are applied in batches, so a burst of receipts costs one disk flush.
//! (Conversation threads and webhooks build on this in later work; opt-out keywords are
//! applied by the store, in the write that stores the customer's message.)

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::channel::{ChannelEvent, ChannelRegistry, Counts, EventEnvelope, Failure};
use crate::dispatch::RetryPolicy;
use crate::phone;
use crate::store::{Applied, InboundNew, Store, StoreError, Update};

/// Most events applied in one store request.
const MAX_BATCH: usize = 1024;

/// Applies channel events to the store.
pub struct Correlator {
    store: Store,
    policy: RetryPolicy,
    region: Option<phonenumber::country::Id>,
    channels: ChannelRegistry,
    /// Wakes the dispatcher: a customer's message may queue an answer (an opt-out
    /// confirmation) in the same write.
    wake: Arc<Notify>,
}

impl Correlator {
    /// A correlator over `store`, deciding retries with `policy` and reading customer numbers
    /// in `region`.
    /// Counts each applied event in its channel's status in `channels`, and notifies `wake`
    /// (the dispatcher's) after storing customers' messages.
    pub fn new(
        store: Store,
        policy: RetryPolicy,
        region: Option<phonenumber::country::Id>,
        channels: ChannelRegistry,
        wake: Arc<Notify>,
    ) -> Self {
        Correlator {
            store,
            policy,
            region,
            channels,
            wake,
        }
    }

    /// Maps one event to a store update.
    fn update_for(&self, envelope: &EventEnvelope) -> Update {
        let channel = envelope.channel.to_string();
        let at = envelope.at;
        match &envelope.event {
            ChannelEvent::Accepted {
                id,
                parts,
                remote_id,
            } => Update::PartAccepted {
                id: *id,
                parts: parts.clone(),
                channel,
                remote_id: remote_id.clone(),
                at,
            },
            ChannelEvent::SendFailed {
                id,
                attempt,
                failure,
                reason,
                retry_after,
            } => {
                let retry_at = match failure {
                    Failure::Permanent => None,
                    Failure::NotSent => Some(at),
                    Failure::Transient | Failure::Unknown => {
                        self.policy
                            .retry_at(*attempt, at, *retry_after, fastrand::f64())
                    }
                };
                let reason = match (failure, retry_at) {
                    (Failure::Transient | Failure::Unknown, None) => {
                        format!("{reason} (gave up after {attempt} attempts)")
                    }
                    _ => reason.clone(),
                };
                Update::SendFailed {
                    id: *id,
                    reason,
                    retry_at,
                    at,
                    not_attempted: *failure == Failure::NotSent,
                    maybe_sent: *failure == Failure::Unknown,
                    refused_by: (*failure == Failure::Permanent).then(|| channel.clone()),
                }
            }
            ChannelEvent::Receipt {
                remote_id,
                outcome,
                reason,
            } => Update::Receipt {
                channel,
                remote_id: remote_id.clone(),
                outcome: *outcome,
                reason: reason.clone(),
                at,
            },
            ChannelEvent::Inbound {
                from,
                to,
                text,
                in_reply_to,
                part,
                dedupe,
            } => Update::Inbound(InboundNew {
                channel,
                from: phone::normalize(from, self.region).unwrap_or_else(|_| from.clone()),
                to: to.clone(),
                text: text.clone(),
                received_at: at,
                in_reply_to: *in_reply_to,
                part: *part,
                dedupe: dedupe.clone(),
            }),
        }
    }

    /// Runs until every channel has dropped its event sink. A batch the store refuses (disk
    /// full) is retried until it is stored: events are never dropped, and channels wait
    /// meanwhile (the event queue is bounded). Only at shutdown does it give up on a batch;
    /// start-up recovery then requeues what it concerned.
    pub async fn run(self, mut events: mpsc::Receiver<EventEnvelope>, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let heartbeat = crate::watchdog::register("correlator");
        while heartbeat
            .idle(events.recv_many(&mut batch, MAX_BATCH))
            .await
            > 0
        {
            let updates: Vec<Update> = batch.iter().map(|e| self.update_for(e)).collect();
            let mut backoff = RETRY_START;
            let ok = loop {
                match self.store.apply(updates.clone()).await {
                    Ok(applied) => {
                        // Counted per channel and batch: one status update per channel.
                        let mut counts: Vec<(&str, Counts)> = Vec::new();
                        for (envelope, applied) in batch.iter().zip(&applied) {
                            log_applied(envelope, applied);
                            // Repeats (a part received twice, a late acceptance) count once.
                            if matches!(applied, Applied::Ignored(_)) {
                                continue;
                            }
                            let channel: &str = &envelope.channel;
                            match counts.iter_mut().find(|(name, _)| *name == channel) {
                                Some((_, c)) => c.add(&envelope.event),
                                None => {
                                    let mut c = Counts::default();
                                    c.add(&envelope.event);
                                    counts.push((channel, c));
                                }
                            }
                        }
                        self.channels.count(&counts);
                        if applied.iter().any(|a| matches!(a, Applied::Inbound(_))) {
                            self.wake.notify_one();
                        }
                        break true;
                    }
                    Err(StoreError::Closed) => {
                        tracing::error!(
                            events = batch.len(),
                            "store closed before channel events were applied"
                        );
                        break false;
                    }
                    Err(e) if shutdown.is_cancelled() => {
                        tracing::error!(error = %e, events = batch.len(), "shutting down with channel events not stored; recovery requeues their messages");
                        break false;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, events = batch.len(), retry_in = ?backoff, "cannot store channel events yet");
                        tokio::select! {
                            _ = heartbeat.idle(tokio::time::sleep(backoff)) => {}
                            _ = shutdown.cancelled() => {}
                        }
                        backoff = (backoff * 2).min(RETRY_MAX);
                    }
                }
            };
            for envelope in batch.drain(..) {
                if let Some(done) = envelope.committed {
                    let _ = done.send(ok);
                }
            }
        }
    }
}

/// Backoff while the store refuses writes.
const RETRY_START: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

fn log_applied(envelope: &EventEnvelope, applied: &Applied) {
    let channel = &*envelope.channel;
    match applied {
        Applied::Message { id, status } => {
            tracing::debug!(%id, %status, channel, "message updated");
        }
        Applied::Inbound(id) => {
            if let ChannelEvent::Inbound {
                from, in_reply_to, ..
            } = &envelope.event
            {
                match in_reply_to {
                    Some(original) => {
                        tracing::info!(%id, from, channel, reply_to = %original, "reply received")
                    }
                    None => tracing::info!(%id, from, channel, "inbound message received"),
                }
            }
        }
        Applied::PartKept => {
            tracing::debug!(
                channel,
                "part of a concatenated message kept until the rest comes"
            );
        }
        Applied::ReceiptKept => {
            tracing::debug!(channel, "receipt kept until its message is accepted");
        }
        Applied::Ignored(why) => tracing::debug!(channel, why, "channel event ignored"),
    }
}
