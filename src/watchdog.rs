//! The systemd watchdog, tied to real progress: every main loop (dispatcher, correlator, store
//! writer, syncer and sweep, channel loops, the API and SMPP accept loops, the SMPP servers'
//! outbox pumps, webhook and callback deliveries) holds a [`Heartbeat`] and beats as it goes
//! round; while it waits for input it is marked idle, so a quiet gateway is not mistaken for a
//! hung one. (The SMPP server's per-connection loops hold none: a client that stops reading
//! holds its own connection up, and must not get the whole daemon restarted.) The watchdog task
//! pings systemd (`WATCHDOG=1`) only while no loop has been busy without a beat for longer than
//! the allowed staleness; a loop stuck in a call that never returns stops the pings, and systemd
//! restarts the daemon.
//!
//! The decision ([`Watchdog::check`]) is pure: it takes the heartbeats' last beats and `now`.
//! Loops register in a process-wide registry ([`register`]), like a global tracing subscriber:
//! they live in modules that should not need a handle threaded through their constructors.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A loop's progress, shared between the loop and the registry.
#[derive(Debug, Default)]
struct Pulse {
    /// Milliseconds since the registry's epoch at the last beat.
    last: AtomicU64,
    /// Waits for input in progress (more than one when a loop waits in several places at once).
    idle: AtomicU32,
}

#[derive(Debug)]
struct Entry {
    name: String,
    pulse: Arc<Pulse>,
}

#[derive(Debug)]
struct Inner {
    epoch: Instant,
    next_id: AtomicU64,
    entries: Mutex<BTreeMap<u64, Entry>>,
}

/// A registry of heartbeats. Cheap to clone (a handle); [`global`] is the daemon's.
#[derive(Debug, Clone)]
pub struct Heartbeats {
    inner: Arc<Inner>,
}

impl Default for Heartbeats {
    fn default() -> Self {
        Self::new()
    }
}

impl Heartbeats {
    /// An empty registry; its clock starts now.
    pub fn new() -> Self {
        Heartbeats {
            inner: Arc::new(Inner {
                epoch: Instant::now(),
                next_id: AtomicU64::new(0),
                entries: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// Milliseconds since this registry was made: the time heartbeats and checks use.
    pub fn now(&self) -> u64 {
        u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Registers a loop named `name` (as logs will say it), counting as having just beaten.
    /// It is deregistered when the heartbeat is dropped, except during a panic: a loop that
    /// died stays registered and goes stale, so the watchdog reports it.
    pub fn register(&self, name: impl Into<String>) -> Heartbeat {
        let pulse = Arc::new(Pulse::default());
        pulse.last.store(self.now(), Ordering::SeqCst);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            Entry {
                name: name.into(),
                pulse: pulse.clone(),
            },
        );
        Heartbeat {
            id,
            pulse,
            registry: self.clone(),
        }
    }

    /// What every registered loop did last, in registration order.
    pub fn snapshot(&self) -> Vec<Beat> {
        self.lock()
            .iter()
            .map(|(id, e)| Beat {
                id: *id,
                name: e.name.clone(),
                // Idle first: a wait ends with a beat before it stops counting as idle.
                idle: e.pulse.idle.load(Ordering::SeqCst) > 0,
                last: e.pulse.last.load(Ordering::SeqCst),
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        // The map stays consistent even if a holder panicked: every change is one call.
        self.inner
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The daemon's registry.
pub fn global() -> &'static Heartbeats {
    static GLOBAL: LazyLock<Heartbeats> = LazyLock::new(Heartbeats::new);
    &GLOBAL
}

/// Registers a loop in the daemon's registry; see [`Heartbeats::register`].
pub fn register(name: impl Into<String>) -> Heartbeat {
    global().register(name)
}

/// One loop's place in a registry: beat on progress, wrap waits for input in [`Heartbeat::idle`].
#[derive(Debug)]
pub struct Heartbeat {
    id: u64,
    pulse: Arc<Pulse>,
    registry: Heartbeats,
}

impl Heartbeat {
    /// The loop made progress (call once per iteration).
    pub fn beat(&self) {
        self.beat_at(self.registry.now());
    }

    /// The loop made progress at `now` (milliseconds on the registry's clock).
    pub fn beat_at(&self, now: u64) {
        self.pulse.last.fetch_max(now, Ordering::SeqCst);
    }

    /// Awaits `fut`, a wait for input (a queue, a socket, a timer), with the loop counted as
    /// idle meanwhile; its end counts as a beat. In a `select!`, wrapping one branch that is
    /// always enabled covers the whole wait: `select!` drops every branch before the winner's
    /// handler runs, so the handler counts as busy.
    pub async fn idle<F: Future>(&self, fut: F) -> F::Output {
        let _idle = IdleGuard::new(self);
        fut.await
    }

    /// [`Heartbeat::idle`] for threads: calls `wait` (a blocking receive) with the loop idle.
    pub fn idle_blocking<T>(&self, wait: impl FnOnce() -> T) -> T {
        let _idle = IdleGuard::new(self);
        wait()
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Left registered with its last beat: the loop is gone, which the watchdog must see.
            return;
        }
        self.registry.lock().remove(&self.id);
    }
}

/// Counts the loop idle until dropped; the drop is a beat.
struct IdleGuard<'a>(&'a Heartbeat);

impl<'a> IdleGuard<'a> {
    fn new(heartbeat: &'a Heartbeat) -> Self {
        heartbeat.pulse.idle.fetch_add(1, Ordering::SeqCst);
        IdleGuard(heartbeat)
    }
}

impl Drop for IdleGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The wait ended in a panic: not progress, and no longer idle.
            self.0.pulse.idle.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        // Beat before leaving idle, so a check never sees "busy" with an old beat.
        self.0.beat();
        self.0.pulse.idle.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A loop's state as the watchdog reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    /// The registration (names may repeat; ids do not).
    pub id: u64,
    /// The loop's name.
    pub name: String,
    /// Waiting for input.
    pub idle: bool,
    /// Its last beat, milliseconds on the registry's clock.
    pub last: u64,
}

/// What a check decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Every loop is idle or beat recently: tell systemd all is well.
    pub ping: bool,
    /// Loops that went stale since the last check: (name, time since their last beat).
    pub newly_stale: Vec<(String, Duration)>,
    /// Loops reported stale before that made progress again (or ended).
    pub recovered: Vec<String>,
    /// Every loop stale now, by name.
    pub stale: Vec<String>,
}

/// The watchdog's decision: which loops are stale, and whether to ping. Pure: the caller
/// passes the beats and the time.
#[derive(Debug, Clone)]
pub struct Watchdog {
    stale_after: Duration,
    /// Stale loops already reported, so each is logged once per episode.
    reported: BTreeMap<u64, String>,
}

/// The least staleness allowed, whatever WatchdogSec says: a busy step as long as a slow
/// disk's fsync must not count as a hang.
pub const MIN_STALE: Duration = Duration::from_secs(5);

impl Watchdog {
    /// A loop busy for longer than `stale_after` without a beat is hung.
    pub fn new(stale_after: Duration) -> Self {
        Watchdog {
            stale_after,
            reported: BTreeMap::new(),
        }
    }

    /// The watchdog for systemd's `WATCHDOG_USEC`: pings every half of it, and a loop busy for
    /// half of it (at least [`MIN_STALE`]) is hung. Returns (watchdog, ping interval).
    pub fn for_timeout(timeout: Duration) -> (Self, Duration) {
        let half = timeout / 2;
        (Watchdog::new(half.max(MIN_STALE)), half)
    }

    /// The allowed staleness.
    pub fn stale_after(&self) -> Duration {
        self.stale_after
    }

    /// Decides at `now` (milliseconds on the beats' clock) from the loops' last beats.
    pub fn check(&mut self, beats: &[Beat], now: u64) -> Verdict {
        let limit = u64::try_from(self.stale_after.as_millis()).unwrap_or(u64::MAX);
        let mut verdict = Verdict::default();
        let mut stale_ids = BTreeSet::new();
        for b in beats {
            let since = now.saturating_sub(b.last);
            if b.idle || since <= limit {
                continue;
            }
            stale_ids.insert(b.id);
            verdict.stale.push(b.name.clone());
            if let std::collections::btree_map::Entry::Vacant(e) = self.reported.entry(b.id) {
                e.insert(b.name.clone());
                verdict
                    .newly_stale
                    .push((b.name.clone(), Duration::from_millis(since)));
            }
        }
        let reported = std::mem::take(&mut self.reported);
        for (id, name) in reported {
            if stale_ids.contains(&id) {
                self.reported.insert(id, name);
            } else {
                verdict.recovered.push(name);
            }
        }
        verdict.ping = verdict.stale.is_empty();
        verdict
    }
}

/// systemd's watchdog timeout, when the unit sets WatchdogSec and this process is the one it
/// watches (WATCHDOG_USEC and WATCHDOG_PID, read by `sd_notify::watchdog_enabled`).
pub fn systemd_timeout() -> Option<Duration> {
    let mut usec = 0;
    (sd_notify::watchdog_enabled(false, &mut usec) && usec > 0).then(|| Duration::from_micros(usec))
}

/// Pings systemd every `every` while [`Watchdog::check`] allows it; logs each loop that goes
/// stale (once) and each that recovers. Runs until the runtime stops.
pub async fn run(heartbeats: Heartbeats, mut watchdog: Watchdog, every: Duration) {
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut withheld = false;
    loop {
        ticks.tick().await;
        let verdict = watchdog.check(&heartbeats.snapshot(), heartbeats.now());
        for (name, since) in &verdict.newly_stale {
            tracing::error!(
                main_loop = %name,
                busy_for = %humantime::format_duration(Duration::from_secs(since.as_secs())),
                "a main loop makes no progress (hung, or stopped by a panic); \
                 withholding watchdog pings so systemd restarts the gateway"
            );
        }
        for name in &verdict.recovered {
            tracing::warn!(main_loop = %name, "the main loop makes progress again");
        }
        if verdict.ping {
            let mut states = vec![sd_notify::NotifyState::Watchdog];
            let status;
            if withheld {
                status = "running".to_string();
                states.push(sd_notify::NotifyState::Status(&status));
            }
            withheld = false;
            if let Err(e) = sd_notify::notify(false, &states) {
                tracing::warn!(error = %e, "cannot ping the systemd watchdog");
            }
        } else if !withheld || !verdict.newly_stale.is_empty() {
            withheld = true;
            let status = format!("hung: {}", verdict.stale.join(", "));
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(&status)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALE: Duration = Duration::from_secs(10);

    fn names(v: &[(String, Duration)]) -> Vec<&str> {
        v.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn all_recent_beats_ping() {
        let reg = Heartbeats::new();
        let a = reg.register("dispatcher");
        let b = reg.register("correlator");
        a.beat_at(1_000);
        b.beat_at(5_000);
        let mut w = Watchdog::new(STALE);
        let v = w.check(&reg.snapshot(), 11_000);
        assert!(v.ping, "{v:?}");
        assert!(v.stale.is_empty() && v.newly_stale.is_empty());
    }

    #[test]
    fn a_busy_loop_without_beats_withholds_pings_and_is_reported_once() {
        let reg = Heartbeats::new();
        let a = reg.register("dispatcher");
        let b = reg.register("store writer");
        a.beat_at(1_000);
        b.beat_at(1_000);
        let mut w = Watchdog::new(STALE);
        // Exactly at the limit is still fine.
        assert!(w.check(&reg.snapshot(), 11_000).ping);
        a.beat_at(11_500);
        let v = w.check(&reg.snapshot(), 11_500);
        assert!(!v.ping);
        assert_eq!(names(&v.newly_stale), ["store writer"]);
        assert_eq!(v.newly_stale[0].1, Duration::from_millis(10_500));
        assert_eq!(v.stale, ["store writer"]);
        // Still stale: no ping, not reported again.
        let v = w.check(&reg.snapshot(), 20_000);
        assert!(!v.ping && v.newly_stale.is_empty(), "{v:?}");
        assert_eq!(v.stale, ["store writer"]);
        // It beats again: pings resume, and the recovery is said.
        b.beat_at(20_001);
        let v = w.check(&reg.snapshot(), 20_002);
        assert!(v.ping);
        assert_eq!(v.recovered, ["store writer"]);
        let v = w.check(&reg.snapshot(), 20_003);
        assert!(v.recovered.is_empty());
    }

    #[test]
    fn an_idle_loop_is_never_stale() {
        let reg = Heartbeats::new();
        let a = reg.register("correlator");
        a.beat_at(0);
        let mut w = Watchdog::new(STALE);
        let far = 3_600_000;
        let v = a.idle_blocking(|| w.check(&reg.snapshot(), far));
        assert!(v.ping, "waiting for input is not hanging: {v:?}");
        // The wait's end is a beat: right after it, it is not stale either.
        let after = reg.now();
        assert!(w.check(&reg.snapshot(), after).ping);
        // But busy long after that, it is.
        assert!(!w.check(&reg.snapshot(), after + far).ping);
    }

    #[test]
    fn nested_waits_stay_idle_until_the_last_ends() {
        let reg = Heartbeats::new();
        let a = reg.register("smpp link");
        a.beat_at(0);
        let mut w = Watchdog::new(STALE);
        a.idle_blocking(|| {
            a.idle_blocking(|| ());
            assert!(w.check(&reg.snapshot(), 3_600_000).ping);
        });
    }

    #[test]
    fn idle_future_counts_while_pending_and_beats_when_dropped() {
        let reg = Heartbeats::new();
        let a = reg.register("modem");
        a.beat_at(0);
        let mut w = Watchdog::new(STALE);
        let mut wait = Box::pin(a.idle(std::future::pending::<()>()));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        // Polled once: now it waits.
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        assert!(w.check(&reg.snapshot(), 3_600_000).ping);
        // Dropped (another select! branch won): busy again, from a fresh beat.
        drop(wait);
        let snap = reg.snapshot();
        assert!(!snap[0].idle);
        assert!(w.check(&snap, reg.now()).ping);
        assert!(!w.check(&snap, reg.now() + 3_600_000).ping);
    }

    #[test]
    fn dropped_heartbeats_deregister_but_panicked_loops_stay_and_go_stale() {
        let reg = Heartbeats::new();
        {
            let _gone = reg.register("modem removed");
        }
        assert!(reg.snapshot().is_empty());
        let r = reg.clone();
        let died = std::thread::spawn(move || {
            let hb = r.register("dispatcher for sim");
            hb.beat_at(0);
            hb.idle_blocking(|| panic!("a bug"));
        })
        .join();
        assert!(died.is_err());
        let snap = reg.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].name, "dispatcher for sim");
        assert!(!snap[0].idle, "a panicked wait is not idle");
        let mut w = Watchdog::new(STALE);
        let v = w.check(&snap, reg.now() + 60_000);
        assert!(!v.ping);
        assert_eq!(names(&v.newly_stale), ["dispatcher for sim"]);
    }

    #[test]
    fn an_ended_stale_loop_counts_as_recovered() {
        let reg = Heartbeats::new();
        let a = reg.register("store syncer");
        a.beat_at(0);
        let mut w = Watchdog::new(STALE);
        assert!(!w.check(&reg.snapshot(), 60_000).ping);
        drop(a);
        let v = w.check(&reg.snapshot(), 60_001);
        assert!(v.ping);
        assert_eq!(v.recovered, ["store syncer"]);
    }

    #[test]
    fn no_loops_means_ping() {
        let mut w = Watchdog::new(STALE);
        assert!(w.check(&[], 0).ping);
    }

    #[test]
    fn beats_never_go_back_in_time() {
        let reg = Heartbeats::new();
        let a = reg.register("x");
        a.beat_at(50_000);
        a.beat_at(10);
        assert_eq!(reg.snapshot()[0].last, 50_000);
    }

    #[test]
    fn timeouts_map_to_ping_interval_and_staleness() {
        let (w, every) = Watchdog::for_timeout(Duration::from_secs(30));
        assert_eq!(every, Duration::from_secs(15));
        assert_eq!(w.stale_after(), Duration::from_secs(15));
        let (w, every) = Watchdog::for_timeout(Duration::from_secs(1));
        assert_eq!(every, Duration::from_millis(500));
        assert_eq!(w.stale_after(), MIN_STALE);
    }
}
