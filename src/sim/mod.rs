//! The simulated channel: a pretend network for the embedded demo and the tests. It accepts each
//! part after `accept_delay`, sends a delivery receipt after `delivery_delay` (undeliverable for a
//! `failure_share` of messages), and has the customer answer a `reply_share` of the delivered ones,
//! so the demo shows two-way traffic. It sends nothing anywhere.

mod cli;
pub mod modem;
pub mod smsc;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::time::DelayQueue;

use crate::channel::{
    Channel, ChannelContext, ChannelEvent, ChannelTask, Closed, EventSink, Failure, SendJob,
};
use crate::config::SimSettings;
use crate::message::{MessageId, ReceiptOutcome};

/// Most scheduled receipts and replies held; past it receipts are sent at once, so memory stays
/// bounded however fast messages come.
const MAX_SCHEDULED: usize = 200_000;

/// What the simulated customers answer.
const REPLIES: [&str; 5] = [
    "Thanks! Can you deliver on Saturday?",
    "Great, see you then",
    "Is it possible to change the address?",
    "Where is my parcel right now?",
    "Grazie, perfetto!",
];

/// The simulator as a [`Channel`].
pub struct SimChannel {
    settings: SimSettings,
}

impl SimChannel {
    /// A simulator with these settings.
    pub fn new(settings: SimSettings) -> Self {
        SimChannel { settings }
    }
}

enum Scheduled {
    Accept {
        job: Arc<SendJob>,
        part: u8,
    },
    Receipt {
        remote_id: String,
        outcome: ReceiptOutcome,
        reply_to: Option<(MessageId, String, String)>,
    },
    Reply {
        id: MessageId,
        customer: String,
        shop: String,
    },
}

impl Channel for SimChannel {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn kind(&self) -> &'static str {
        "sim"
    }

    fn window(&self) -> usize {
        self.settings.window
    }

    fn run(self: Box<Self>, ctx: ChannelContext) -> ChannelTask {
        Box::pin(async move { run(self.settings, ctx).await.map_err(Into::into) })
    }
}

async fn run(settings: SimSettings, ctx: ChannelContext) -> Result<(), Closed> {
    let ChannelContext {
        mut jobs,
        events,
        status,
        shutdown,
    } = ctx;
    status.set_state(crate::channel::LinkState::Up, None);
    let mut queue: DelayQueue<Scheduled> = DelayQueue::new();
    // Parts not yet accepted, per message: the in-flight window.
    let mut unaccepted: HashMap<MessageId, (Arc<SendJob>, usize)> = HashMap::new();
    let mut next_remote: u64 = 0;
    let heartbeat = crate::watchdog::register(format!("sim channel {}", settings.name));
    loop {
        heartbeat.beat();
        tokio::select! {
            // Idle while this select waits; the shutdown branch is always enabled.
            _ = heartbeat.idle(shutdown.cancelled()) => break,
            job = jobs.recv(), if unaccepted.len() < settings.window => {
                let Some(job) = job else { break };
                let job = Arc::new(job);
                let parts = job.parts_to_send.clone();
                if parts.is_empty() {
                    continue;
                }
                unaccepted.insert(job.message.id, (job.clone(), parts.len()));
                for part in parts {
                    queue.insert(Scheduled::Accept { job: job.clone(), part }, settings.accept_delay);
                }
            }
            Some(expired) = std::future::poll_fn(|cx| queue.poll_expired(cx)), if !queue.is_empty() => {
                match expired.into_inner() {
                    Scheduled::Accept { job, part } => {
                        next_remote += 1;
                        let remote_id = format!("SIM{next_remote:08X}");
                        let id = job.message.id;
                        events.send_for(&job, ChannelEvent::Accepted { id, parts: part..=part, remote_id: Some(remote_id.clone()) }).await?;
                        let last_part = match unaccepted.get_mut(&id) {
                            Some((_, left)) => { *left -= 1; *left == 0 }
                            None => false,
                        };
                        if last_part {
                            unaccepted.remove(&id);
                        }
                        let failed = fastrand::f64() < settings.failure_share;
                        let outcome = if failed { ReceiptOutcome::Failed } else { ReceiptOutcome::Delivered };
                        let reply_to = (last_part && !failed && fastrand::f64() < settings.reply_share)
                            .then(|| (id, job.message.to.clone(), job.message.from.clone().unwrap_or_else(|| settings.name.clone())));
                        let receipt = Scheduled::Receipt { remote_id, outcome, reply_to };
                        if queue.len() < MAX_SCHEDULED {
                            queue.insert(receipt, settings.delivery_delay);
                        } else {
                            deliver(&events, &mut queue, receipt, &settings).await?;
                        }
                    }
                    other => deliver(&events, &mut queue, other, &settings).await?,
                }
            }
        }
    }
    // Shutdown: every job taken but not fully accepted goes back to the queue. Receipts still
    // scheduled are dropped, as a real network's would be delayed: their messages stay "sent".
    jobs.close();
    let mut unfinished: Vec<Arc<SendJob>> = unaccepted.into_values().map(|(job, _)| job).collect();
    while let Ok(job) = jobs.try_recv() {
        unfinished.push(Arc::new(job));
    }
    for job in unfinished {
        events
            .send_for(
                &job,
                ChannelEvent::SendFailed {
                    id: job.message.id,
                    attempt: job.message.attempts,
                    failure: Failure::NotSent,
                    reason: "channel stopped before the network accepted it".into(),
                    retry_after: Some(Duration::ZERO),
                },
            )
            .await?;
    }
    Ok(())
}

async fn deliver(
    events: &EventSink,
    queue: &mut DelayQueue<Scheduled>,
    item: Scheduled,
    settings: &SimSettings,
) -> Result<(), Closed> {
    match item {
        Scheduled::Receipt {
            remote_id,
            outcome,
            reply_to,
        } => {
            let reason = (outcome == ReceiptOutcome::Failed)
                .then(|| "simulated: subscriber absent (UNDELIV)".to_string());
            events
                .send(ChannelEvent::Receipt {
                    remote_id,
                    outcome,
                    reason,
                })
                .await?;
            if let Some((id, customer, shop)) = reply_to {
                queue.insert(
                    Scheduled::Reply { id, customer, shop },
                    settings.delivery_delay,
                );
            }
        }
        Scheduled::Reply { id, customer, shop } => {
            let text = REPLIES[fastrand::usize(..REPLIES.len())];
            events
                .send(ChannelEvent::Inbound {
                    from: customer,
                    to: shop,
                    text: text.to_string(),
                    in_reply_to: Some(id),
                    part: None,
                    dedupe: None,
                })
                .await?;
        }
        Scheduled::Accept { .. } => {}
    }
    Ok(())
}
