//! The dispatcher: claims due messages from the store and hands them to a channel, as fast as the
//! channel's window allows; and the retry policy that decides when a transient failure is tried
//! again (exponential backoff with jitter, capped, until the attempts or the validity run out).

use std::sync::Arc;
use std::time::Duration;

use std::collections::{HashMap, HashSet};

use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::channel::{Claim, LinkState, SendJob, StatusHandle};
use crate::config::RetrySettings;
use crate::message::{MessageId, Millis, now_millis};
use crate::route::{Lane, Router};
use crate::store::{Store, StoreError, Update};

/// When to try a transiently failed message again.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Backoff after the first attempt.
    pub initial: Duration,
    /// Cap on the backoff.
    pub max: Duration,
    /// Growth factor per attempt.
    pub multiplier: f64,
    /// Share of the backoff randomized either way (0 to 1).
    pub jitter: f64,
    /// Attempts before giving up.
    pub max_attempts: u32,
}

impl From<&RetrySettings> for RetryPolicy {
    fn from(s: &RetrySettings) -> Self {
        RetryPolicy {
            initial: s.initial_backoff,
            max: s.max_backoff,
            multiplier: s.multiplier,
            jitter: s.jitter,
            max_attempts: s.max_attempts,
        }
    }
}

impl RetryPolicy {
    /// The backoff before attempt `attempt + 1`, given that `attempt` attempts were made (>= 1).
    /// `unit` is a random number in [0, 1) that spreads retries by +/- jitter.
    pub fn backoff(&self, attempt: u32, unit: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let base = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = base.min(self.max.as_secs_f64());
        let spread = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64((capped * spread).max(0.0))
    }

    /// When to retry after `attempt` attempts failed at `now`, or None when attempts are used up.
    /// A channel's own minimum wait (`retry_after`, e.g. when throttled) is honored.
    pub fn retry_at(
        &self,
        attempt: u32,
        now: Millis,
        retry_after: Option<Duration>,
        unit: f64,
    ) -> Option<Millis> {
        if attempt >= self.max_attempts {
            return None;
        }
        let wait = self
            .backoff(attempt, unit)
            .max(retry_after.unwrap_or_default());
        let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        Some(now.saturating_add(wait_ms))
    }
}

/// A channel as the dispatcher sees it: a name, the sending side of its job queue, and its status
/// (it is only handed messages while it is up).
#[derive(Clone)]
pub struct ChannelHandle {
    /// The channel's name.
    pub name: String,
    /// Its job queue (bounded: its window).
    pub jobs: mpsc::Sender<SendJob>,
    /// Its claim budget (its window): one permit per message claimed for it whose outcome is
    /// not yet on disk, so a kill leaves at most that many `sending`.
    pub claims: Arc<Semaphore>,
    /// Whether it can send.
    pub status: StatusHandle,
}

/// Longest the dispatcher sleeps without looking at the queue (it is also woken by intake).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Most messages claimed in one store request.
const CLAIM_BATCH: usize = 512;
/// Pause after a claim found nothing left: another channel's claim of the same messages is
/// being committed.
const CLAIM_RACE_PAUSE: Duration = Duration::from_millis(5);

/// Moves due messages from the store to channels: one feeding loop per channel, each taking
/// as many messages as its channel has room for, while that channel is up. A configuration
/// reload adds and removes channels and replaces the routes ([`DispatchChange`]).
pub struct Dispatcher {
    store: Store,
    channels: Vec<ChannelHandle>,
    wake: Arc<Notify>,
    router: Arc<Router>,
    changes_tx: mpsc::Sender<DispatchChange>,
    changes: mpsc::Receiver<DispatchChange>,
}

/// What a configuration reload changes in the dispatcher.
pub enum DispatchChange {
    /// Feed this channel (new, or started again with new settings).
    Add(ChannelHandle),
    /// Stop feeding the channel with this name (what it holds, it hands back itself).
    Remove(String),
    /// The routes are these now.
    Routes(Arc<Router>),
}

/// What the feeding loops share.
struct Shared {
    store: Store,
    /// Bumped when new work may be due; every idle loop looks.
    poke: watch::Sender<u64>,
    /// Messages some loop is claiming right now: the others skip them, so channels claim in
    /// parallel (sharing the store's group commit) without racing for the same messages.
    claiming: std::sync::Mutex<HashSet<MessageId>>,
    /// Which lanes of the queue each channel serves follows from the routes and from which
    /// channels are up.
    router: std::sync::RwLock<Arc<Router>>,
    statuses: std::sync::RwLock<Vec<(String, StatusHandle)>>,
}

impl Shared {
    fn poke(&self) {
        self.poke.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The lanes `channel` serves now.
    fn lanes_for(&self, channel: &str) -> Vec<Lane> {
        let router = self
            .router
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let statuses = self
            .statuses
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        router.lanes_for(channel, |name| {
            statuses
                .iter()
                .any(|(n, s)| n == name && s.state() == LinkState::Up)
        })
    }

    fn set_status(&self, name: &str, status: Option<StatusHandle>) {
        let mut statuses = self
            .statuses
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        statuses.retain(|(n, _)| n != name);
        if let Some(status) = status {
            statuses.push((name.to_owned(), status));
        }
    }

    /// Up to `room` due messages of `lanes` no other loop is claiming, marked as ours; and
    /// whether more are due.
    fn pick(&self, lanes: &[Lane], room: usize) -> Result<(Vec<MessageId>, bool), StoreError> {
        let mut claiming = self
            .claiming
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = self.store.due(lanes, now_millis(), room + claiming.len())?;
        let mine: Vec<MessageId> = due
            .into_iter()
            .filter(|id| !claiming.contains(id))
            .take(room)
            .collect();
        claiming.extend(mine.iter().copied());
        let more = mine.len() == room;
        Ok((mine, more))
    }

    fn release(&self, ids: &[MessageId]) {
        let mut claiming = self
            .claiming
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for id in ids {
            claiming.remove(id);
        }
    }
}

impl Dispatcher {
    /// `wake` is notified by intake when new messages are queued; `router` says which
    /// channel takes which messages.
    pub fn new(
        store: Store,
        channels: Vec<ChannelHandle>,
        wake: Arc<Notify>,
        router: Arc<Router>,
    ) -> Self {
        let (changes_tx, changes) = mpsc::channel(64);
        Dispatcher {
            store,
            channels,
            wake,
            router,
            changes_tx,
            changes,
        }
    }

    /// Where a configuration reload sends its changes.
    pub fn changes(&self) -> mpsc::Sender<DispatchChange> {
        self.changes_tx.clone()
    }

    /// Runs until `shutdown`. Store errors are logged and retried.
    pub async fn run(self, shutdown: CancellationToken) {
        let Dispatcher {
            store,
            channels,
            wake,
            router,
            changes_tx,
            changes,
        } = self;
        // Only reloads send changes: when every sender is gone, none come.
        drop(changes_tx);
        if channels.is_empty() {
            tracing::warn!("no channel is configured: messages stay queued until one is");
        }
        let shared = Arc::new(Shared {
            store,
            poke: watch::Sender::new(0),
            claiming: std::sync::Mutex::new(HashSet::new()),
            router: std::sync::RwLock::new(router),
            statuses: std::sync::RwLock::new(Vec::new()),
        });
        let mut feeding = Feeding {
            shared: shared.clone(),
            loops: JoinSet::new(),
            watchers: JoinSet::new(),
            running: HashMap::new(),
            shutdown: shutdown.clone(),
        };
        for channel in channels {
            feeding.add(channel);
        }
        let mut changes = Some(changes);
        loop {
            let change = async {
                match changes.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                // Intake's wake-ups reach every loop, not just one.
                _ = wake.notified() => shared.poke(),
                change = change => match change {
                    Some(DispatchChange::Add(channel)) => feeding.add(channel),
                    Some(DispatchChange::Remove(name)) => feeding.remove(&name),
                    Some(DispatchChange::Routes(router)) => {
                        *shared
                            .router
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = router;
                        shared.poke();
                    }
                    None => changes = None,
                },
                Some(_) = feeding.loops.join_next() => {}
            }
        }
        while feeding.loops.join_next().await.is_some() {}
    }
}

/// The feeding loops running, by channel.
struct Feeding {
    shared: Arc<Shared>,
    loops: JoinSet<()>,
    /// Dropped (so aborted) with the dispatcher.
    watchers: JoinSet<()>,
    running: HashMap<String, (CancellationToken, tokio::task::AbortHandle)>,
    shutdown: CancellationToken,
}

impl Feeding {
    fn add(&mut self, channel: ChannelHandle) {
        self.remove(&channel.name);
        self.shared
            .set_status(&channel.name, Some(channel.status.clone()));
        // A channel going up or down moves lanes between channels (failover): every loop
        // looks again at once.
        let mut state = channel.status.subscribe();
        let watcher = self.shared.clone();
        let watching = self.watchers.spawn(async move {
            while state.changed().await.is_ok() {
                watcher.poke();
            }
        });
        let token = self.shutdown.child_token();
        self.running
            .insert(channel.name.clone(), (token.clone(), watching));
        self.loops.spawn(feed(self.shared.clone(), channel, token));
        self.shared.poke();
    }

    fn remove(&mut self, name: &str) {
        if let Some((token, watching)) = self.running.remove(name) {
            token.cancel();
            watching.abort();
            self.shared.set_status(name, None);
            // Its lanes pass to the channels that remain.
            self.shared.poke();
        }
    }
}

/// Feeds one channel until shutdown or until the channel stops.
async fn feed(shared: Arc<Shared>, channel: ChannelHandle, shutdown: CancellationToken) {
    let mut poked = shared.poke.subscribe();
    let heartbeat = crate::watchdog::register(format!("dispatcher for {}", channel.name));
    loop {
        heartbeat.beat();
        if shutdown.is_cancelled() {
            return;
        }
        if channel.status.state() != LinkState::Up {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                up = heartbeat.idle(channel.status.wait_up()) => if !up { return },
            }
            continue;
        }
        // Wait for room in the channel's claim budget and job queue before claiming anything,
        // so claimed messages never pile up in memory and a kill leaves at most the budget
        // `sending`.
        let mut claims = tokio::select! {
            _ = shutdown.cancelled() => return,
            claims = heartbeat.idle(channel.claims.clone().acquire_owned()) => match claims {
                Ok(c) => c,
                Err(_) => return,
            },
        };
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            permit = heartbeat.idle(channel.jobs.reserve()) => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let room = (channel.jobs.capacity() + 1)
            .min(channel.claims.available_permits() + 1)
            .min(CLAIM_BATCH);
        if room > 1
            && let Ok(more) = channel
                .claims
                .clone()
                .try_acquire_many_owned(room as u32 - 1)
        {
            claims.merge(more);
        }
        let room = claims.num_permits();
        let lanes = shared.lanes_for(&channel.name);
        let (due, more_waiting) = match shared.pick(&lanes, room) {
            Ok(picked) => picked,
            Err(e) => {
                tracing::error!(error = %e, "reading the queue failed");
                (Vec::new(), false)
            }
        };
        if due.is_empty() {
            drop((permit, claims));
            idle(&shared.store, &lanes, &mut poked, &shutdown).await;
            continue;
        }
        if more_waiting {
            // Other channels may be idle while more is due.
            shared.poke();
        }
        let result = shared.store.claim(due.clone(), channel.name.clone()).await;
        shared.release(&due);
        let claimed = match result {
            Ok(c) => c,
            Err(StoreError::Closed) => return,
            Err(e) => {
                tracing::error!(error = %e, "claiming due messages failed; retrying");
                drop(permit);
                idle(&shared.store, &lanes, &mut poked, &shutdown).await;
                continue;
            }
        };
        if claimed.is_empty() {
            drop(permit);
            tokio::time::sleep(CLAIM_RACE_PAUSE).await;
            continue;
        }
        let mut permit = Some(permit);
        let mut jobs = claimed.into_iter().map(|c| SendJob {
            message: c.message,
            parts_to_send: c.parts_to_send,
            // One permit per job; the permits of messages not claimed after all go back when
            // `claims` is dropped, at the end of this round.
            claim: claims.split(1).map_or_else(Claim::default, Claim::new),
        });
        while let Some(job) = jobs.next() {
            tracing::debug!(id = %job.message.id, channel = %channel.name, "handing over");
            // The first job uses the permit; the rest fit in the room we saw, and if the
            // channel shrank meanwhile this waits (backpressure), it never drops.
            let sent = match permit.take() {
                Some(p) => {
                    p.send(job);
                    Ok(())
                }
                None => heartbeat
                    .idle(channel.jobs.send(job))
                    .await
                    .map_err(|e| e.0),
            };
            if let Err(job) = sent {
                // The channel stopped between our claim and the hand-over: put these
                // messages straight back in the queue rather than leave them "sending".
                requeue(
                    &shared.store,
                    std::iter::once(job).chain(jobs),
                    &channel.name,
                )
                .await;
                return;
            }
        }
    }
}

async fn requeue(store: &Store, jobs: impl Iterator<Item = SendJob>, channel: &str) {
    let now = now_millis();
    let updates: Vec<Update> = jobs
        .map(|job| Update::SendFailed {
            id: job.message.id,
            reason: format!("channel {channel} stopped before taking it"),
            retry_at: Some(now),
            at: now,
            not_attempted: true,
            maybe_sent: false,
            refused_by: None,
        })
        .collect();
    let count = updates.len();
    if let Err(e) = store.apply(updates).await {
        tracing::warn!(count, error = %e, "could not requeue; they will be at the next start");
    }
}

/// Sleeps until the next message is due, something is poked, or a second passes.
async fn idle(
    store: &Store,
    lanes: &[Lane],
    poked: &mut watch::Receiver<u64>,
    shutdown: &CancellationToken,
) {
    let sleep_for = match store.next_due(lanes) {
        Ok(Some(at)) => {
            let ms = u64::try_from(at.saturating_sub(now_millis())).unwrap_or(0);
            Duration::from_millis(ms.max(1)).min(IDLE_POLL)
        }
        _ => IDLE_POLL,
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = poked.changed() => {}
        _ = tokio::time::sleep(sleep_for) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(600),
            multiplier: 2.0,
            jitter: 0.2,
            max_attempts: 5,
        }
    }

    #[test]
    fn backoff_grows_exponentially_and_caps() {
        let p = RetryPolicy {
            jitter: 0.0,
            ..policy()
        };
        let secs: Vec<u64> = (1..=10).map(|a| p.backoff(a, 0.5).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]);
    }

    #[test]
    fn jitter_spreads_within_bounds() {
        let p = policy();
        assert_eq!(p.backoff(1, 0.0), Duration::from_secs(4));
        assert_eq!(p.backoff(1, 1.0), Duration::from_secs(6));
        assert_eq!(p.backoff(1, 0.5), Duration::from_secs(5));
    }

    /// A kill requeues what is `sending` on disk: the dispatcher claims no more for a channel
    /// than its window until outcomes are committed, however fast the channel answers.
    #[tokio::test]
    async fn a_channel_has_at_most_its_window_claimed_until_outcomes_are_on_disk() {
        use crate::channel::{ChannelEvent, ChannelRegistry, EventSink};
        use crate::conversation::Correlator;
        use crate::message::{Kind, NewMessage, Status};

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&crate::store::StoreOptions::new(dir.path()))
            .unwrap()
            .0;
        let mut ids = Vec::new();
        for n in 0..6 {
            let message = NewMessage {
                to: format!("+3932000000{n:02}"),
                from: None,
                text: "hello".into(),
                kind: Kind::Transactional,
                reference: None,
                encoding: crate::codec::gsm7::Encoding::Gsm7,
                parts: 1,
                send_at: None,
                validity_ms: 3_600_000,
                origin: None,
                options: Default::default(),
            };
            ids.push(store.submit(message, None).await.unwrap().message().id);
        }
        const WINDOW: usize = 2;
        let (jobs_tx, mut jobs) = mpsc::channel(WINDOW);
        let status = StatusHandle::new("c", "sim");
        status.set_state(LinkState::Up, None);
        let handle = ChannelHandle {
            name: "c".into(),
            jobs: jobs_tx,
            claims: Arc::new(Semaphore::new(WINDOW)),
            status: status.clone(),
        };
        let (events_tx, events_rx) = mpsc::channel(16);
        let events = EventSink::new(Arc::from("c"), events_tx);
        let wake = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let correlator = Correlator::new(
            store.clone(),
            policy(),
            None,
            ChannelRegistry::new(vec![status]),
            wake.clone(),
        );
        tokio::spawn(correlator.run(events_rx, shutdown.clone()));
        let router = Arc::new(Router::new(&[], &["c".to_string()]));
        let dispatcher = Dispatcher::new(store.clone(), vec![handle], wake, router);
        tokio::spawn(dispatcher.run(shutdown.clone()));

        let sending = |store: &Store| {
            ids.iter()
                .filter(|id| store.get(**id).unwrap().unwrap().status == Status::Sending)
                .count()
        };
        let first = jobs.recv().await.unwrap();
        let second = jobs.recv().await.unwrap();
        // The channel took both and its queue has room again, but both claims are held.
        let third = tokio::time::timeout(Duration::from_millis(300), jobs.recv()).await;
        assert!(
            third.is_err(),
            "a third message was claimed while two are unanswered"
        );
        assert_eq!(sending(&store), WINDOW);

        // The first is answered; the next claim waits for that answer to be on disk.
        events
            .send_for(
                &first,
                ChannelEvent::Accepted {
                    id: first.message.id,
                    parts: 0..=0,
                    remote_id: Some("R1".into()),
                },
            )
            .await
            .unwrap();
        drop(first);
        let third = jobs.recv().await.unwrap();
        assert_eq!(store.get(ids[0]).unwrap().unwrap().status, Status::Sent);
        assert_eq!(sending(&store), WINDOW);

        // A job the channel drops without a word also gives its place back (and stays
        // `sending` on disk until recovery): never a place lost for good.
        drop(second);
        let fourth = jobs.recv().await.unwrap();
        assert_eq!(sending(&store), WINDOW + 1);
        drop((third, fourth));
        shutdown.cancel();
    }

    #[test]
    fn attempts_run_out_and_channel_wait_is_honored() {
        let p = policy();
        assert_eq!(p.retry_at(5, 1000, None, 0.5), None);
        assert_eq!(p.retry_at(1, 1000, None, 0.5), Some(6000));
        assert_eq!(
            p.retry_at(1, 1000, Some(Duration::from_secs(30)), 0.5),
            Some(31_000)
        );
    }
}
