//! Webhooks: events POSTed to the integrator's endpoints and to messages' own callback URLs,
//! signed, retried, never lost.
//!
//! The store writes each event into every subscribed endpoint's outbox, and into the outbox of
//! its message's callback host, in the same commit as the change it reports ([`event`],
//! [`callback`]). One task per endpoint, and one for all callbacks, reads those outboxes in
//! order and POSTs each event, with the Standard Webhooks headers webhook-id (the event's id,
//! given when it was stored: every attempt, a restart and a replay send the same, so receivers
//! can drop repeats), webhook-timestamp and webhook-signature. A 2xx deletes the event;
//! anything else is retried with exponential backoff (1 s doubling to 10 min) until
//! `retry_for` after the event, then the event is dead-lettered: kept in the store and logged,
//! no longer tried. Redirects are not followed.
//!
//! Nobody waits for anybody: endpoints do not share tasks, connections or queues; within the
//! callback task every host and port has its own outbox (a lane), its own few POSTs in flight
//! and its own failure count, so a dead host's events wait on their own retry schedule while
//! other hosts' flow. A lane whose attempts all fail stops taking new events until one gets
//! through, so memory holds a few events per lane, not a dead host's backlog.

pub mod callback;
pub mod event;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{CallbackSettings, WebhookSettings};
use crate::message::now_millis;
use crate::store::{OutboxEntry, OutboxItem, OutboxKey, OutboxReader, Store};

/// Events read from an endpoint's outbox at a time.
const BATCH: usize = 256;
/// Events read from one callback host's outbox at a time (there may be many hosts).
const CALLBACK_BATCH: usize = 16;
/// Callback hosts served at once; more wait until one has nothing left.
const MAX_CALLBACK_LANES: usize = 1024;
/// POSTs to one callback host in flight at once at most, so a slow host cannot take all of
/// `max_in_flight`.
const CALLBACK_HOST_IN_FLIGHT: usize = 4;
/// Delivered events deleted per store request at most.
const DONE_BATCH: usize = 256;
/// The longest a delivered event waits to be deleted while other attempts are in flight (a
/// slow host's), so a restart sends few of them again.
const DONE_DELAY: Duration = Duration::from_millis(500);
/// The first retry delay; it doubles up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts of one event.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);

/// What one attempt came to.
enum Attempt {
    Delivered,
    Failed(String),
    /// Never to be tried again (a callback URL the config no longer allows).
    Refused(String),
}

/// Where a delivery task's events go.
enum Destination {
    /// A configured endpoint: its one outbox, its URL.
    Endpoint { target: String, url: String },
    /// Messages' callback URLs: an outbox per host and port, each event to its own URL.
    Callbacks(callback::Policy),
}

/// What a delivery task needs besides the store.
struct Delivery {
    /// For logs: the endpoint's name, or "callbacks".
    name: String,
    key: Vec<u8>,
    client: reqwest::Client,
    retry_for_ms: i64,
    max_in_flight: usize,
    per_lane: usize,
    destination: Destination,
    metrics: crate::metrics::WebhookMetrics,
}

/// What the settings of a task say, before its client and key are made.
struct Setup<'a> {
    name: &'a str,
    secret: &'a str,
    timeout: Duration,
    retry_for: Duration,
    max_in_flight: usize,
    metrics: crate::metrics::WebhookMetrics,
}

impl Delivery {
    /// None (logged) when the secret or the HTTP client is unusable.
    fn new(setup: &Setup<'_>, destination: Destination) -> Option<Delivery> {
        let name = setup.name;
        let key = match event::secret_key(setup.secret) {
            Ok(key) => key,
            Err(e) => {
                // check-config refuses such a secret; this is a last line of defence.
                tracing::error!(webhook = %name, error = %e, "webhook secret unusable; no events are sent to it");
                return None;
            }
        };
        let mut builder = reqwest::Client::builder()
            .timeout(setup.timeout)
            // A redirect would send the signed event somewhere the operator (or the checked
            // callback URL) did not name: a 3xx fails like any other answer.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("parla/", env!("CARGO_PKG_VERSION")));
        if let Destination::Callbacks(policy) = &destination {
            // A proxy would resolve the names instead of the resolver that checks them.
            builder = builder.no_proxy();
            if !policy.allows_private_addresses() {
                builder = builder.dns_resolver(std::sync::Arc::new(callback::PublicResolver));
            }
        }
        let client = match builder.build() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(webhook = %name, error = %e, "webhook HTTP client could not be built");
                return None;
            }
        };
        let max_in_flight = setup.max_in_flight.max(1);
        let per_lane = match destination {
            Destination::Endpoint { .. } => max_in_flight,
            Destination::Callbacks(_) => CALLBACK_HOST_IN_FLIGHT.min(max_in_flight),
        };
        Some(Delivery {
            name: name.to_owned(),
            key,
            client,
            retry_for_ms: i64::try_from(setup.retry_for.as_millis()).unwrap_or(i64::MAX),
            max_in_flight,
            per_lane,
            destination,
            metrics: setup.metrics.clone(),
        })
    }
}

/// Delivers endpoint `settings`' events until `shutdown`, counting attempts into `metrics`.
pub async fn run(
    settings: WebhookSettings,
    store: Store,
    shutdown: CancellationToken,
    metrics: crate::metrics::WebhookMetrics,
) {
    let setup = Setup {
        name: &settings.name,
        secret: &settings.secret,
        timeout: settings.timeout,
        retry_for: settings.retry_for,
        max_in_flight: settings.max_in_flight,
        metrics,
    };
    let destination = Destination::Endpoint {
        target: event::target(&settings.name),
        url: settings.url.clone(),
    };
    if let Some(delivery) = Delivery::new(&setup, destination) {
        delivery.run(store, shutdown).await;
    }
}

/// Delivers messages' callbacks under `settings` until `shutdown`; nothing when callbacks are
/// off.
pub async fn run_callbacks(
    settings: CallbackSettings,
    store: Store,
    shutdown: CancellationToken,
    metrics: crate::metrics::WebhookMetrics,
) {
    let Some(policy) = callback::Policy::from_settings(&settings) else {
        return;
    };
    let setup = Setup {
        name: "callbacks",
        secret: &settings.secret,
        timeout: settings.timeout,
        retry_for: settings.retry_for,
        max_in_flight: settings.max_in_flight,
        metrics,
    };
    if let Some(delivery) = Delivery::new(&setup, Destination::Callbacks(policy)) {
        delivery.run(store, shutdown).await;
    }
}

/// One outbox target as the task holds it: what it read, what it retries, how it fares.
struct Lane {
    reader: OutboxReader,
    /// Failed attempts per event held.
    failures: HashMap<OutboxKey, u32>,
    /// Failed attempts since the last success: once the target looks down (every attempt in
    /// flight failed), only retries go out, so a dead target does not pull its whole backlog
    /// into memory; one event it keeps refusing does not hold up the others. With nothing
    /// left to retry, one new event at a time probes it.
    consecutive_failures: usize,
    in_flight: usize,
    /// The last read found nothing new: no read until the outbox changes.
    drained: bool,
}

impl Lane {
    fn new(target: &str, batch: usize) -> Lane {
        Lane {
            reader: OutboxReader::new(target, batch),
            failures: HashMap::new(),
            consecutive_failures: 0,
            in_flight: 0,
            drained: false,
        }
    }

    /// The next event to attempt, if the lane has room for one.
    fn next(
        &mut self,
        store: &Store,
        per_lane: usize,
    ) -> Result<Option<OutboxEntry>, crate::store::StoreError> {
        if self.in_flight >= per_lane {
            return Ok(None);
        }
        let looks_down = self.consecutive_failures >= per_lane
            && (self.reader.has_retries() || self.in_flight > 0);
        let take_new = !looks_down && !self.drained;
        let entry = self.reader.next(store, take_new)?;
        if entry.is_none() && take_new {
            self.drained = true;
        }
        Ok(entry)
    }

    /// Nothing held, nothing in flight, nothing new: the lane can go.
    fn idle(&self) -> bool {
        self.drained && self.in_flight == 0 && !self.reader.has_retries()
    }
}

/// An attempt in flight: the lane it belongs to.
type Flights = HashMap<tokio::task::Id, String>;

impl Delivery {
    async fn run(self, store: Store, shutdown: CancellationToken) {
        let mut changed = store.outbox_changed();
        let mut lanes: BTreeMap<String, Lane> = BTreeMap::new();
        self.discover(&store, &mut lanes);
        let mut in_flight: JoinSet<(OutboxEntry, Attempt)> = JoinSet::new();
        let mut flights = Flights::new();
        let mut done: Vec<OutboxKey> = Vec::new();
        // When the oldest of `done` was delivered.
        let mut done_since = Instant::now();
        let mut turn = 0usize;
        // Attempts run in their own tasks: this loop only waits on them, the outbox and timers.
        let heartbeat = crate::watchdog::register(match self.destination {
            Destination::Callbacks(_) => "callback deliveries".to_string(),
            Destination::Endpoint { .. } => format!("webhook {}", self.name),
        });
        loop {
            heartbeat.beat();
            turn = turn.wrapping_add(1);
            self.fill(
                &store,
                &mut lanes,
                (&mut in_flight, &mut flights),
                &mut done,
                turn,
            );
            if !done.is_empty()
                && (done.len() >= DONE_BATCH
                    || in_flight.is_empty()
                    || done_since.elapsed() >= DONE_DELAY)
            {
                let keys = std::mem::take(&mut done);
                if let Err(e) = store.outbox_done(keys.clone()).await {
                    tracing::warn!(webhook = %self.name, error = %e, "delivered events not yet removed from the outbox; will try again");
                    done = keys;
                }
                done_since = Instant::now();
            }
            // A lane is forgotten only once its deliveries are deleted, so that reading its
            // outbox again cannot find one of them.
            if done.is_empty() && matches!(self.destination, Destination::Callbacks(_)) {
                let before = lanes.len();
                lanes.retain(|_, lane| !lane.idle());
                if before == MAX_CALLBACK_LANES && lanes.len() < before {
                    self.discover(&store, &mut lanes);
                }
            }
            let flush_at = (!done.is_empty()).then(|| done_since + DONE_DELAY);
            let next_retry = lanes
                .values()
                .filter_map(|l| l.reader.next_retry())
                .map(Instant::from_std)
                .chain(flush_at)
                .min();
            tokio::select! {
                // Always enabled: the loop counts as idle for the whole wait.
                () = heartbeat.idle(shutdown.cancelled()) => break,
                r = changed.changed() => {
                    if r.is_err() {
                        break;
                    }
                    for lane in lanes.values_mut() {
                        lane.drained = false;
                    }
                    self.discover(&store, &mut lanes);
                }
                Some(joined) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                    let (task, result) = match joined {
                        Ok((task, result)) => (task, Some(result)),
                        Err(e) => (e.id(), None),
                    };
                    let Some(lane) = flights.remove(&task).and_then(|t| lanes.get_mut(&t)) else {
                        continue;
                    };
                    lane.in_flight = lane.in_flight.saturating_sub(1);
                    let Some((entry, attempt)) = result else {
                        // Cannot happen (attempts do not panic); the event stays in the store.
                        tracing::warn!(webhook = %self.name, "a delivery attempt was lost; its event is sent again after a restart");
                        continue;
                    };
                    if done.is_empty() {
                        done_since = Instant::now();
                    }
                    self.handle_attempt(&store, lane, entry, attempt, &mut done).await;
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

    /// Adds a lane for every target with events that has none yet.
    fn discover(&self, store: &Store, lanes: &mut BTreeMap<String, Lane>) {
        match &self.destination {
            Destination::Endpoint { target, .. } => {
                lanes
                    .entry(target.clone())
                    .or_insert_with(|| Lane::new(target, BATCH));
            }
            Destination::Callbacks(_) => {
                match store.outbox_targets(callback::TARGET_PREFIX, MAX_CALLBACK_LANES) {
                    Ok(targets) => {
                        for target in targets {
                            if lanes.len() >= MAX_CALLBACK_LANES {
                                break;
                            }
                            lanes
                                .entry(target)
                                .or_insert_with_key(|t| Lane::new(t, CALLBACK_BATCH));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(webhook = %self.name, error = %e, "callback outboxes unreadable; will try again");
                    }
                }
            }
        }
    }

    /// Starts attempts while there is room, lanes taking turns (starting at a different one
    /// each time, so none is always first).
    fn fill(
        &self,
        store: &Store,
        lanes: &mut BTreeMap<String, Lane>,
        (in_flight, flights): (&mut JoinSet<(OutboxEntry, Attempt)>, &mut Flights),
        done: &mut Vec<OutboxKey>,
        turn: usize,
    ) {
        let n = lanes.len().max(1);
        let (after, before): (Vec<_>, Vec<_>) = lanes
            .iter_mut()
            .enumerate()
            .partition(|(i, _)| *i >= turn % n);
        for (_, (target, lane)) in after.into_iter().chain(before) {
            while in_flight.len() < self.max_in_flight {
                let entry = match lane.next(store, self.per_lane) {
                    Ok(Some(entry)) => entry,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(webhook = %self.name, error = %e, "webhook outbox unreadable; will try again");
                        break;
                    }
                };
                let Some(request) = self.request_for(&entry.item) else {
                    // Not an event for this task (cannot happen): nothing to send.
                    done.push(entry.key.clone());
                    continue;
                };
                let task = match request {
                    Ok((request, id, body)) => {
                        let key = self.key.clone();
                        in_flight.spawn(async move {
                            let attempt = attempt(request, &key, &id, body).await;
                            (entry, attempt)
                        })
                    }
                    Err(reason) => {
                        in_flight.spawn(async move { (entry, Attempt::Refused(reason)) })
                    }
                };
                lane.in_flight += 1;
                flights.insert(task.id(), target.clone());
            }
        }
    }

    /// The POST for `item` with its id and body; None when the item is not this task's, an
    /// error when it must not be sent.
    fn request_for(
        &self,
        item: &OutboxItem,
    ) -> Option<Result<(reqwest::RequestBuilder, String, String), String>> {
        let (url, id, body) = match (&self.destination, item) {
            (Destination::Endpoint { url, .. }, OutboxItem::Event { id, body, .. }) => {
                (url.as_str(), id, body)
            }
            (Destination::Callbacks(policy), OutboxItem::Callback { url, id, body, .. }) => {
                // Checked again: the operator may have narrowed the policy since.
                if let Err(e) = policy.check(url) {
                    return Some(Err(e.to_string()));
                }
                (url.as_str(), id, body)
            }
            _ => return None,
        };
        let request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id.as_str());
        Some(Ok((request, id.clone(), body.clone())))
    }

    /// Deletes a delivered event, schedules a failed one's retry, or dead-letters it.
    async fn handle_attempt(
        &self,
        store: &Store,
        lane: &mut Lane,
        entry: OutboxEntry,
        attempt: Attempt,
        done: &mut Vec<OutboxKey>,
    ) {
        self.metrics
            .attempt(&self.name, matches!(attempt, Attempt::Delivered));
        let (reason, give_up) = match attempt {
            Attempt::Delivered => {
                lane.consecutive_failures = 0;
                lane.failures.remove(&entry.key);
                done.push(entry.key);
                return;
            }
            Attempt::Failed(reason) => (reason, false),
            Attempt::Refused(reason) => (reason, true),
        };
        lane.consecutive_failures += 1;
        let event = entry.item.event_id().unwrap_or_default().to_owned();
        let age = entry.key.id().map_or(0, |id| {
            now_millis() - i64::try_from(id.0.timestamp_ms()).unwrap_or(0)
        });
        let n = lane.failures.entry(entry.key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        if give_up || age >= self.retry_for_ms {
            let why = if give_up {
                "webhook event dead-lettered: its URL is no longer allowed"
            } else {
                "webhook event dead-lettered: not delivered within retry_for"
            };
            tracing::error!(webhook = %self.name, %event, attempts = *n, %reason, "{why}");
            self.metrics.dead_lettered(&self.name);
            lane.failures.remove(&entry.key);
            if let Err(e) = store.outbox_dead_letter(entry.key.clone(), reason).await {
                tracing::warn!(webhook = %self.name, error = %e, "dead-lettering failed; will try the event again");
                lane.reader.retry_after(entry, MAX_RETRY_DELAY);
            }
        } else {
            let delay = FIRST_RETRY_DELAY
                .saturating_mul(1u32 << (*n - 1).min(16))
                .min(MAX_RETRY_DELAY);
            tracing::debug!(webhook = %self.name, %event, %reason, ?delay, "webhook delivery failed; will retry");
            lane.reader.retry_after(entry, delay);
        }
    }
}

/// POSTs one event, signed now.
async fn attempt(request: reqwest::RequestBuilder, key: &[u8], id: &str, body: String) -> Attempt {
    let timestamp = now_millis().div_euclid(1000);
    let signature = event::signature(key, id, timestamp, body.as_bytes());
    let sent = request
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => Attempt::Delivered,
        Ok(r) => Attempt::Failed(format!("HTTP {}", r.status())),
        Err(e) => Attempt::Failed(e.to_string()),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
