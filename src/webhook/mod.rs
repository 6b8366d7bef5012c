//! Webhooks: events POSTed to the integrator's endpoints, signed, retried, never lost.
//!
//! The store writes each event into every subscribed endpoint's outbox in the same commit as
//! the change it reports ([`event`]). One task per endpoint reads its outbox in order and POSTs
//! each event (at most `max_in_flight` at once), with the Standard Webhooks headers
//! webhook-id (the event's id, given when it was stored: every attempt, a restart and a replay
//! send the same, so receivers can drop repeats),
//! webhook-timestamp and webhook-signature. A 2xx deletes the event; anything else is retried
//! with exponential backoff (1 s doubling to 10 min) until `retry_for` after the event, then
//! the event is dead-lettered: kept in the store and logged, no longer tried. Endpoints do not
//! share tasks, connections or queues, so a slow or dead one holds up nobody else.

pub mod event;

use std::collections::HashMap;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::WebhookSettings;
use crate::message::now_millis;
use crate::store::{OutboxEntry, OutboxItem, OutboxKey, OutboxReader, Store};

/// Events read from the outbox at a time.
const BATCH: usize = 256;
/// Delivered events deleted per store request at most.
const DONE_BATCH: usize = 256;
/// The first retry delay; it doubles up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts of one event.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);

/// What one attempt came to.
enum Attempt {
    Delivered,
    Failed(String),
}

/// Delivers endpoint `settings`' events until `shutdown`.
pub async fn run(settings: WebhookSettings, store: Store, shutdown: CancellationToken) {
    let key = match event::secret_key(&settings.secret) {
        Ok(key) => key,
        Err(e) => {
            // check-config refuses such a secret; this is a last line of defence.
            tracing::error!(webhook = %settings.name, error = %e, "webhook secret unusable; no events are sent to it");
            return;
        }
    };
    let client = match reqwest::Client::builder()
        .timeout(settings.timeout)
        // A redirect would send the signed event somewhere the operator did not configure: an
        // endpoint that moved answers 3xx, which fails like any other answer.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("parla/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(webhook = %settings.name, error = %e, "webhook HTTP client could not be built");
            return;
        }
    };
    let target = event::target(&settings.name);
    let retry_for_ms = i64::try_from(settings.retry_for.as_millis()).unwrap_or(i64::MAX);
    let max_in_flight = settings.max_in_flight.max(1);
    let mut changed = store.outbox_changed();
    let mut outbox = OutboxReader::new(&target, BATCH);
    let mut failures: HashMap<OutboxKey, u32> = HashMap::new();
    let mut in_flight: JoinSet<(OutboxEntry, Attempt)> = JoinSet::new();
    let mut done: Vec<OutboxKey> = Vec::new();
    // Failed attempts since the last success: once the endpoint looks down (every attempt in
    // flight failed), only retries go out, so a dead endpoint does not pull its whole backlog
    // into memory; one event it keeps refusing does not hold up the others. With nothing
    // left to retry, one new event at a time probes it.
    let mut consecutive_failures = 0usize;
    loop {
        while in_flight.len() < max_in_flight {
            let looks_down = consecutive_failures >= max_in_flight
                && (outbox.has_retries() || !in_flight.is_empty());
            let entry = match outbox.next(&store, !looks_down) {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(webhook = %settings.name, error = %e, "webhook outbox unreadable; will try again");
                    break;
                }
            };
            let OutboxItem::Event { id, body, .. } = &entry.item else {
                // Not an event (cannot happen for a webhook target): nothing to send.
                done.push(entry.key.clone());
                continue;
            };
            let request = client
                .post(&settings.url)
                .header("content-type", "application/json")
                .header("webhook-id", id.as_str());
            let (id, body) = (id.clone(), body.clone());
            let key = key.clone();
            in_flight.spawn(async move {
                let timestamp = now_millis().div_euclid(1000);
                let signature = event::signature(&key, &id, timestamp, body.as_bytes());
                let sent = request
                    .header("webhook-timestamp", timestamp.to_string())
                    .header("webhook-signature", signature)
                    .body(body)
                    .send()
                    .await;
                let attempt = match sent {
                    Ok(r) if r.status().is_success() => Attempt::Delivered,
                    Ok(r) => Attempt::Failed(format!("HTTP {}", r.status())),
                    Err(e) => Attempt::Failed(e.to_string()),
                };
                (entry, attempt)
            });
        }
        if !done.is_empty() && (done.len() >= DONE_BATCH || in_flight.is_empty()) {
            let keys = std::mem::take(&mut done);
            if let Err(e) = store.outbox_done(keys.clone()).await {
                tracing::warn!(webhook = %settings.name, error = %e, "delivered events not yet removed from the outbox; will try again");
                done = keys;
            }
        }
        let next_retry = outbox.next_retry().map(Instant::from_std);
        tokio::select! {
            () = shutdown.cancelled() => break,
            r = changed.changed() => {
                if r.is_err() {
                    break;
                }
            }
            Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                let Ok((entry, attempt)) = joined else { continue };
                match attempt {
                    Attempt::Delivered => {
                        consecutive_failures = 0;
                        failures.remove(&entry.key);
                        done.push(entry.key);
                    }
                    Attempt::Failed(reason) => {
                        consecutive_failures += 1;
                        let event = match &entry.item {
                            OutboxItem::Event { id, .. } => id.clone(),
                            _ => String::new(),
                        };
                        let age = entry
                            .key
                            .id()
                            .map_or(0, |id| now_millis() - i64::try_from(id.0.timestamp_ms()).unwrap_or(0));
                        let n = failures.entry(entry.key.clone()).or_insert(0);
                        *n = n.saturating_add(1);
                        if age >= retry_for_ms {
                            tracing::error!(webhook = %settings.name, %event, attempts = *n, %reason, "webhook event dead-lettered: not delivered within retry_for");
                            failures.remove(&entry.key);
                            if let Err(e) = store.outbox_dead_letter(entry.key.clone(), reason).await {
                                tracing::warn!(webhook = %settings.name, error = %e, "dead-lettering failed; will try the event again");
                                outbox.retry_after(entry, MAX_RETRY_DELAY);
                            }
                        } else {
                            let delay = FIRST_RETRY_DELAY
                                .saturating_mul(1u32 << (*n - 1).min(16))
                                .min(MAX_RETRY_DELAY);
                            tracing::debug!(webhook = %settings.name, %event, %reason, ?delay, "webhook delivery failed; will retry");
                            outbox.retry_after(entry, delay);
                        }
                    }
                }
            }
            () = sleep_until(next_retry), if next_retry.is_some() => {}
        }
    }
    // Attempts in flight are dropped: their events stay in the outbox for the next start.
    in_flight.abort_all();
    if !done.is_empty() {
        let _ = store.outbox_done(done).await;
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
