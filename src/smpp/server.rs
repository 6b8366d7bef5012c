//! The SMPP server for integrators: parla as an SMSC that shop platforms and CRMs bind to.
//!
//! One task accepts connections (at most `max_connections`; more are closed at once) and one
//! task per connection drives its [`ServerSession`]: binds are judged against the accounts
//! (Argon2 off the runtime's threads, a guard against password guessing), submits are read by
//! [`intake`] and answered only once the store has them on disk, query_sm / cancel_sm work on
//! the account's own messages.
//!
//! Receipts and replies for an account wait in its durable outbox (written by the store in the
//! same commit as the change they report). One pump task per account hands them to the
//! account's receiver and transceiver binds, within each bind's deliver window, and deletes
//! each only once its deliver_sm_resp came back; what fails or was in flight on a dropped
//! connection is delivered again (so a client may see a receipt twice, never zero times).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rusmpp::{Command, Pdu};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::auth::{self, BindAttempt, GuessGuard};
use super::deliveries;
use super::frame::{BindMode, SmppCodec};
use super::intake::{self, ESME_RCANCELFAIL, ESME_RQUERYFAIL, Intake, IntakeRules};
use super::server_session::{BindRequest, DeliverError, Output, ServerConfig, ServerSession};
use super::session::{
    ESME_RALYBND, ESME_RBINDFAIL, ESME_RINVPASWD, ESME_RINVSYSID, ESME_RTHROTTLED,
};
use crate::config::{Defaults, SmppAccountSettings, SmppServerSettings};
use crate::message::{MessageId, now_millis};
use crate::store::{
    OutboxEntry, OutboxKey, OutboxReader, PartSubmitted, Store, StoreError, Submitted,
};
use phonenumber::country::Id as Region;

/// What the server needs from the rest of the daemon.
#[derive(Clone)]
pub struct ServerContext {
    /// Where submits go and receipts and replies come from.
    pub store: Store,
    /// Wakes the dispatcher when a submit made a message due.
    pub wake: Arc<Notify>,
    /// Validity, kind and part limit of messages that do not say.
    pub defaults: Defaults,
    /// Region of numbers written without a country code.
    pub region: Option<Region>,
}

/// Outbox entries read from the store at a time by an account's pump.
const OUTBOX_BATCH: usize = 256;
/// Delivered entries deleted from the outbox per store request at most.
const DONE_BATCH: usize = 512;
/// Argon2 password checks running at once at most (see `Shared::verifying`).
const MAX_CONCURRENT_PASSWORD_CHECKS: usize = 2;
/// The longest wait before a refused or unanswered delivery is tried again.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

struct Shared {
    settings: SmppServerSettings,
    ctx: ServerContext,
    /// The accounts in force; a configuration reload replaces them.
    accounts: std::sync::RwLock<Accounts>,
    guard: Mutex<GuessGuard>,
    /// Password checks running at once at most: each Argon2 check takes ~19 MiB and tens of
    /// milliseconds of CPU, and a crowd of connections binding at once must not take the
    /// machine's memory or starve the rest of the gateway.
    verifying: Semaphore,
    shutdown: CancellationToken,
    next_conn: AtomicU64,
}

/// The accounts binds are judged against, and their shared state by system_id.
#[derive(Default)]
struct Accounts {
    settings: Arc<Vec<SmppAccountSettings>>,
    by_id: HashMap<String, Arc<Account>>,
}

impl Shared {
    fn accounts(&self) -> std::sync::RwLockReadGuard<'_, Accounts> {
        self.accounts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn account(&self, system_id: &str) -> Option<Arc<Account>> {
        self.accounts().by_id.get(system_id).cloned()
    }
}

/// One account's state shared by its connections and its outbox pump.
struct Account {
    settings: SmppAccountSettings,
    /// Cancelled when a reload removes or changes the account: its binds are unbound (the
    /// client binds again under the new settings) and its pump stops.
    retired: CancellationToken,
    target: String,
    rate: Option<DefaultDirectRateLimiter>,
    binds: AtomicUsize,
    receivers: Mutex<Vec<ReceiverSlot>>,
    receivers_changed: Notify,
    results: mpsc::Sender<DeliveryResult>,
}

/// A bound receiver or transceiver of an account: where its pump hands outbox entries.
struct ReceiverSlot {
    conn: u64,
    handouts: mpsc::Sender<OutboxEntry>,
}

/// What became of one handed-out outbox entry.
struct DeliveryResult {
    entry: OutboxEntry,
    result: Result<(), DeliverError>,
}

impl Account {
    fn new(
        settings: SmppAccountSettings,
        results: mpsc::Sender<DeliveryResult>,
        retired: CancellationToken,
    ) -> Self {
        let rate = rate_limiter(settings.max_rate);
        Account {
            retired,
            target: crate::store::smpp_target(&settings.system_id),
            rate,
            binds: AtomicUsize::new(0),
            receivers: Mutex::new(Vec::new()),
            receivers_changed: Notify::new(),
            results,
            settings,
        }
    }

    /// Offers `entry` to a receiver with room, starting after the last one served; gives it
    /// back when none has.
    fn offer(&self, mut entry: OutboxEntry, start: &mut usize) -> Option<OutboxEntry> {
        let mut receivers = lock(&self.receivers);
        let mut i = 0;
        while i < receivers.len() {
            let slot = (*start + i) % receivers.len();
            let Some(receiver) = receivers.get(slot) else {
                break;
            };
            match receiver.handouts.try_send(entry) {
                Ok(()) => {
                    *start = slot + 1;
                    return None;
                }
                Err(mpsc::error::TrySendError::Full(back)) => {
                    entry = back;
                    i += 1;
                }
                Err(mpsc::error::TrySendError::Closed(back)) => {
                    entry = back;
                    receivers.remove(slot);
                }
            }
        }
        Some(entry)
    }
}

/// A GCRA limiter allowing `per_second` with bursts of a tenth of a second's worth; `None`
/// when unlimited.
fn rate_limiter(per_second: f64) -> Option<DefaultDirectRateLimiter> {
    if !(per_second.is_finite() && per_second > 0.0) {
        return None;
    }
    let burst = NonZeroU32::new((per_second / 10.0).clamp(1.0, 10_000.0) as u32)?;
    let quota = Quota::with_period(Duration::from_secs_f64(1.0 / per_second))?.allow_burst(burst);
    Some(RateLimiter::direct(quota))
}

/// Waits for `token` to be cancelled; forever without one.
async fn cancelled(token: Option<CancellationToken>) {
    match token {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}

/// A poisoned lock only means another task panicked while holding it; the data (counters,
/// lists) is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Serves integrators on `listener` until `shutdown`: then every connection is unbound
/// gracefully and the pumps stop. Returns once all have.
pub async fn serve(
    listener: TcpListener,
    settings: SmppServerSettings,
    ctx: ServerContext,
    shutdown: CancellationToken,
    mut reloads: tokio::sync::watch::Receiver<Vec<SmppAccountSettings>>,
) {
    let tracker = TaskTracker::new();
    let accounts = settings.account.clone();
    let shared = Arc::new(Shared {
        settings,
        ctx,
        accounts: std::sync::RwLock::new(Accounts::default()),
        guard: Mutex::new(GuessGuard::default()),
        verifying: Semaphore::new(MAX_CONCURRENT_PASSWORD_CHECKS),
        shutdown: shutdown.clone(),
        next_conn: AtomicU64::new(1),
    });
    set_accounts(&shared, &tracker, accounts);
    let connections = Arc::new(Semaphore::new(shared.settings.max_connections.max(1)));
    let heartbeat = crate::watchdog::register("SMPP server listener");
    loop {
        heartbeat.beat();
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            Ok(()) = reloads.changed() => {
                let accounts = reloads.borrow_and_update().clone();
                set_accounts(&shared, &tracker, accounts);
                continue;
            }
            accepted = heartbeat.idle(listener.accept()) => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "SMPP server: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = shared.settings.max_connections, "SMPP server: connection limit reached; closing the new connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tracker.spawn(async move {
            let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
            let mut conn = Connection::new(shared, id, peer, stream);
            conn.run().await;
            drop(permit);
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// Puts `wanted` in force: accounts whose settings did not change keep their binds and pump;
/// changed and removed ones are retired (their binds unbound, their pump stopped; what their
/// outbox holds stays for the new pump or the retention sweep); changed and new ones start.
fn set_accounts(shared: &Arc<Shared>, tracker: &TaskTracker, wanted: Vec<SmppAccountSettings>) {
    let mut started = Vec::new();
    {
        let mut accounts = shared
            .accounts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        accounts.by_id.retain(|id, account| {
            let kept = wanted.iter().any(|w| *w == account.settings);
            if !kept {
                tracing::info!(account = %id, "SMPP account retired by a reload: its binds are unbound");
                account.retired.cancel();
            }
            kept
        });
        for settings in &wanted {
            if accounts.by_id.contains_key(&settings.system_id) {
                continue;
            }
            let capacity = settings
                .max_binds
                .saturating_mul(settings.deliver_window)
                .clamp(16, 65_536);
            let (results_tx, results_rx) = mpsc::channel(capacity);
            let account = Arc::new(Account::new(
                settings.clone(),
                results_tx,
                shared.shutdown.child_token(),
            ));
            accounts
                .by_id
                .insert(settings.system_id.clone(), account.clone());
            started.push((account, results_rx));
        }
        accounts.settings = Arc::new(wanted);
    }
    for (account, results) in started {
        if let Some(addr) = account.settings.outbind {
            tracker.spawn(outbinder(shared.clone(), account.clone(), addr));
        }
        tracker.spawn(pump(shared.clone(), account, results));
    }
}

// ----------------------------------------------------------------------------- connections

/// A decision taken off the connection task, coming back to it.
enum Answer {
    Bind {
        sequence_number: u32,
        result: Result<Arc<Account>, u32>,
    },
    Submit {
        sequence_number: u32,
        result: Result<MessageId, u32>,
    },
    Request {
        sequence_number: u32,
        result: Result<Box<Command>, u32>,
    },
}

/// An outbox entry being delivered on this connection.
struct Delivering {
    entry: OutboxEntry,
    /// Its deliver_sm not yet answered (or not yet sent).
    waiting: usize,
    failure: Option<DeliverError>,
}

struct Connection {
    shared: Arc<Shared>,
    id: u64,
    peer: SocketAddr,
    framed: Framed<TcpStream, SmppCodec>,
    session: ServerSession,
    account: Option<Arc<Account>>,
    /// Set once a bind slot of `account` is taken (released at the end).
    holds_bind: bool,
    handouts: Option<mpsc::Receiver<OutboxEntry>>,
    answers: (mpsc::Sender<Answer>, mpsc::Receiver<Answer>),
    /// deliver_sm built and waiting for room in the deliver window: (delivery, command).
    outgoing: VecDeque<(u64, Command)>,
    delivering: HashMap<u64, Delivering>,
    /// Session token -> delivery.
    tokens: HashMap<u64, u64>,
    next_token: u64,
    unbind_sent: bool,
}

impl Connection {
    fn new(shared: Arc<Shared>, id: u64, peer: SocketAddr, stream: TcpStream) -> Self {
        let s = &shared.settings;
        let mut config = ServerConfig::new(&s.system_id);
        config.response_timeout = s.response_timeout;
        config.bind_timeout = s.response_timeout;
        config.idle_timeout = s.idle_timeout;
        config.enquire_link_interval = s.enquire_link_interval;
        // The account's own windows are set when it binds; until then one request at a time.
        config.window = 1;
        config.deliver_window = 1;
        let session = ServerSession::new(config, std::time::Instant::now());
        let answers = mpsc::channel(64);
        Connection {
            shared,
            id,
            peer,
            framed: Framed::new(stream, SmppCodec::default()),
            session,
            account: None,
            holds_bind: false,
            handouts: None,
            answers,
            outgoing: VecDeque::new(),
            delivering: HashMap::new(),
            tokens: HashMap::new(),
            next_token: 1,
            unbind_sent: false,
        }
    }

    /// Sends an outbind (we connected to the ESME): it answers with a bind on this connection.
    async fn outbind(&mut self, password: &str) -> Result<(), String> {
        let command = super::frame::outbind(&self.shared.settings.system_id, password)
            .map_err(|e| e.to_string())?;
        self.framed.send(command).await.map_err(|e| e.to_string())
    }

    fn system_id(&self) -> &str {
        self.account
            .as_ref()
            .map_or("", |a| a.settings.system_id.as_str())
    }

    async fn run(&mut self) {
        tracing::debug!(peer = %self.peer, conn = self.id, "SMPP client connected");
        loop {
            let mut closed = None;
            // First, so the deliver_sm it starts go out with this round's flush: once the
            // client is quiet, nothing else would wake this loop before their response timeout.
            self.send_deliveries();
            while let Some(output) = self.session.poll_output() {
                match output {
                    Output::Send(command) => {
                        if let Err(e) = self.framed.feed(command).await {
                            self.session.connection_lost(&e.to_string());
                        }
                    }
                    Output::Authenticate {
                        sequence_number,
                        request,
                    } => self.authenticate(sequence_number, request),
                    Output::Bound { mode, system_id } => self.on_bound(mode, &system_id),
                    Output::Submit {
                        sequence_number,
                        command,
                    } => self.on_submit(sequence_number, &command),
                    Output::Request {
                        sequence_number,
                        command,
                    } => self.on_request(sequence_number, &command),
                    Output::Delivered { token, result } => self.on_delivered(token, result).await,
                    Output::Closed { reason } => closed = Some(reason),
                }
            }
            if let Some(reason) = closed {
                let _ = SinkExt::<Command>::flush(&mut self.framed).await;
                self.finish(&reason).await;
                return;
            }
            if let Err(e) = SinkExt::<Command>::flush(&mut self.framed).await {
                self.session.connection_lost(&e.to_string());
                continue;
            }
            let wake = self.session.next_deadline().map(Instant::from_std);
            let take_handouts = self.outgoing.is_empty() && self.session.can_deliver();
            let retired = self.account.as_ref().map(|a| a.retired.clone());
            tokio::select! {
                () = self.shared.shutdown.cancelled(), if !self.unbind_sent => {
                    self.unbind_sent = true;
                    self.session.unbind(std::time::Instant::now());
                }
                () = cancelled(retired), if !self.unbind_sent => {
                    self.unbind_sent = true;
                    self.session.unbind(std::time::Instant::now());
                }
                frame = self.framed.next() => {
                    let now = std::time::Instant::now();
                    match frame {
                        Some(Ok(frame)) => self.session.on_frame(frame, now),
                        Some(Err(e)) => self.session.connection_lost(&e.to_string()),
                        None => self.session.connection_lost("closed by the client"),
                    }
                }
                Some(answer) = self.answers.1.recv() => self.on_answer(answer),
                Some(entry) = recv_handout(&mut self.handouts), if take_handouts => self.take(entry).await,
                () = sleep_until(wake) => self.session.on_tick(std::time::Instant::now()),
            }
        }
    }

    // --- binds

    fn authenticate(&mut self, sequence_number: u32, request: BindRequest) {
        let now = std::time::Instant::now();
        let ip = self.peer.ip();
        if !lock(&self.shared.guard).may_try(ip, now) {
            tracing::warn!(peer = %self.peer, system_id = %request.system_id, "SMPP bind refused: too many failed binds from this address");
            self.session
                .refuse_bind(sequence_number, ESME_RBINDFAIL, now);
            return;
        }
        let shared = self.shared.clone();
        let answers = self.answers.0.clone();
        let peer = self.peer;
        tokio::spawn(async move {
            let open_binds = shared
                .account(&request.system_id)
                .map_or(0, |a| a.binds.load(Ordering::Relaxed));
            let accounts = shared.accounts().settings.clone();
            // Argon2 takes tens of milliseconds of CPU: off the runtime's threads, a few at a
            // time.
            let Ok(_permit) = shared.verifying.acquire().await else {
                return;
            };
            let judged = {
                let request = request.clone();
                tokio::task::spawn_blocking(move || {
                    let attempt = BindAttempt {
                        system_id: &request.system_id,
                        password: &request.password,
                        mode: request.mode,
                        peer: peer.ip(),
                        open_binds,
                    };
                    auth::judge(&accounts, &attempt).map(|a| a.system_id.clone())
                })
                .await
                .unwrap_or(Err(ESME_RBINDFAIL))
            };
            let result =
                judged.and_then(|system_id| shared.account(&system_id).ok_or(ESME_RINVSYSID));
            let _ = answers
                .send(Answer::Bind {
                    sequence_number,
                    result,
                })
                .await;
        });
    }

    fn on_bind_judged(&mut self, sequence_number: u32, result: Result<Arc<Account>, u32>) {
        let now = std::time::Instant::now();
        let ip: IpAddr = self.peer.ip();
        match result {
            Ok(account) => {
                let max = account.settings.max_binds;
                let slot = account
                    .binds
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < max).then_some(n + 1)
                    });
                if slot.is_err() {
                    tracing::warn!(peer = %self.peer, system_id = %account.settings.system_id, max, "SMPP bind refused: the account has its most binds open");
                    self.session.refuse_bind(sequence_number, ESME_RALYBND, now);
                    return;
                }
                lock(&self.shared.guard).succeeded(ip);
                self.session
                    .set_windows(account.settings.window, account.settings.deliver_window);
                self.account = Some(account);
                self.holds_bind = true;
                self.session.accept_bind(sequence_number, now);
            }
            Err(status) => {
                // Only a wrong password or an unknown account counts as a guess.
                if matches!(status, ESME_RINVPASWD | ESME_RINVSYSID)
                    && let Some(lockout) = lock(&self.shared.guard).failed(ip, now)
                {
                    tracing::warn!(peer = %self.peer, ?lockout, "SMPP binds from this address refused for a while after repeated failures");
                }
                tracing::info!(peer = %self.peer, status = format_args!("0x{status:08X}"), "SMPP bind refused");
                self.session.refuse_bind(sequence_number, status, now);
            }
        }
    }

    fn on_bound(&mut self, mode: BindMode, system_id: &str) {
        tracing::info!(peer = %self.peer, conn = self.id, %system_id, ?mode, "SMPP client bound");
        let Some(account) = self.account.clone() else {
            return;
        };
        if matches!(mode, BindMode::Receiver | BindMode::Transceiver) {
            let (tx, rx) = mpsc::channel(account.settings.deliver_window.max(1));
            lock(&account.receivers).push(ReceiverSlot {
                conn: self.id,
                handouts: tx,
            });
            self.handouts = Some(rx);
            account.receivers_changed.notify_one();
        }
    }

    // --- submits, queries, cancels

    fn on_submit(&mut self, sequence_number: u32, command: &Command) {
        let Some(account) = self.account.clone() else {
            self.session
                .submit_refused(sequence_number, super::session::ESME_RINVBNDSTS);
            return;
        };
        if account.rate.as_ref().is_some_and(|r| r.check().is_err()) {
            self.session
                .submit_refused(sequence_number, ESME_RTHROTTLED);
            return;
        }
        let ctx = &self.shared.ctx;
        let rules = IntakeRules {
            account: &account.settings,
            defaults: &ctx.defaults,
            region: ctx.region,
        };
        let intake = match intake::read_submit(command, rules, now_millis()) {
            Ok(intake) => intake,
            Err(refusal) => {
                tracing::debug!(system_id = %account.settings.system_id, status = format_args!("0x{:08X}", refusal.status), reason = %refusal.reason, "submit refused");
                self.session.submit_refused(sequence_number, refusal.status);
                return;
            }
        };
        let store = ctx.store.clone();
        let wake = ctx.wake.clone();
        let answers = self.answers.0.clone();
        let system_id = account.settings.system_id.clone();
        // The commit waits for a disk sync; the connection reads on meanwhile (the session's
        // window bounds how many wait).
        tokio::spawn(async move {
            let stored = match intake {
                Intake::Whole(new) => store.submit(new, None).await.map(|s| match s {
                    Submitted::Created(m) | Submitted::Existing(m) => (m.id, true),
                }),
                Intake::Part(part) => store.submit_part(part).await.map(|p| match p {
                    PartSubmitted::Kept(id) | PartSubmitted::Repeated(id) => (id, false),
                    PartSubmitted::Complete(m) => (m.id, true),
                }),
            };
            let result = match stored {
                Ok((id, queued)) => {
                    if queued {
                        wake.notify_one();
                    }
                    Ok(id)
                }
                Err(e) => {
                    let status = store_status(&e);
                    tracing::warn!(%system_id, error = %e, status = format_args!("0x{status:08X}"), "submit not stored");
                    Err(status)
                }
            };
            let _ = answers
                .send(Answer::Submit {
                    sequence_number,
                    result,
                })
                .await;
        });
    }

    fn on_request(&mut self, sequence_number: u32, command: &Command) {
        let system_id = self.system_id().to_owned();
        let id = match intake::requested_id(command) {
            Ok(id) => id,
            Err(status) => {
                self.session.answer_error(sequence_number, status);
                return;
            }
        };
        let store = self.shared.ctx.store.clone();
        let found = match store.get(id) {
            Ok(found) => found.filter(|m| intake::owned_by(m, &system_id)),
            Err(e) => {
                tracing::warn!(error = %e, "query_sm / cancel_sm: store unreadable");
                self.session.answer_error(sequence_number, store_status(&e));
                return;
            }
        };
        match (command.pdu(), found) {
            (Some(Pdu::QuerySm(_)), Some(message)) => {
                let resp = intake::query_resp(sequence_number, &message);
                self.session.answer(sequence_number, resp);
            }
            (Some(Pdu::QuerySm(_)), None) => {
                self.session.answer_error(sequence_number, ESME_RQUERYFAIL);
            }
            (Some(Pdu::CancelSm(_)), Some(message)) => {
                let answers = self.answers.0.clone();
                tokio::spawn(async move {
                    let result = match store.cancel(message.id).await {
                        Ok(_) => Ok(Box::new(intake::cancel_resp(sequence_number))),
                        Err(StoreError::WrongStatus { .. } | StoreError::NotFound(_)) => {
                            Err(ESME_RCANCELFAIL)
                        }
                        Err(e) => Err(store_status(&e)),
                    };
                    let _ = answers
                        .send(Answer::Request {
                            sequence_number,
                            result,
                        })
                        .await;
                });
            }
            _ => self.session.answer_error(sequence_number, ESME_RCANCELFAIL),
        }
    }

    fn on_answer(&mut self, answer: Answer) {
        match answer {
            Answer::Bind {
                sequence_number,
                result,
            } => self.on_bind_judged(sequence_number, result),
            Answer::Submit {
                sequence_number,
                result: Ok(id),
            } => {
                if let Err(e) = self
                    .session
                    .submit_accepted(sequence_number, &id.to_string())
                {
                    tracing::error!(error = %e, "submit_sm_resp could not carry the message id");
                    self.session
                        .submit_refused(sequence_number, super::frame::ESME_RSYSERR);
                }
            }
            Answer::Submit {
                sequence_number,
                result: Err(status),
            } => self.session.submit_refused(sequence_number, status),
            Answer::Request {
                sequence_number,
                result: Ok(resp),
            } => self.session.answer(sequence_number, *resp),
            Answer::Request {
                sequence_number,
                result: Err(status),
            } => self.session.answer_error(sequence_number, status),
        }
    }

    // --- deliveries

    /// Builds the deliver_sm of an outbox entry handed to this connection.
    async fn take(&mut self, entry: OutboxEntry) {
        let Some(account) = self.account.clone() else {
            self.report(entry, Err(DeliverError::Closed)).await;
            return;
        };
        match deliveries::commands_for(&entry.item, &account.settings) {
            Ok(commands) if !commands.is_empty() => {
                let delivery = self.next_token;
                self.next_token += 1;
                self.delivering.insert(
                    delivery,
                    Delivering {
                        entry,
                        waiting: commands.len(),
                        failure: None,
                    },
                );
                self.outgoing
                    .extend(commands.into_iter().map(|c| (delivery, c)));
            }
            Ok(_) => self.report(entry, Ok(())).await,
            Err(reason) => {
                self.report(entry, Err(DeliverError::Invalid { reason }))
                    .await;
            }
        }
    }

    /// Sends built deliver_sm while the deliver window has room.
    fn send_deliveries(&mut self) {
        while self.session.can_deliver() {
            let Some((delivery, command)) = self.outgoing.pop_front() else {
                return;
            };
            let token = self.next_token;
            self.next_token += 1;
            self.tokens.insert(token, delivery);
            if self
                .session
                .deliver_command(token, command.clone(), std::time::Instant::now())
                .is_err()
            {
                self.tokens.remove(&token);
                self.outgoing.push_front((delivery, command));
                return;
            }
        }
    }

    async fn on_delivered(&mut self, token: u64, result: Result<(), DeliverError>) {
        let Some(delivery) = self.tokens.remove(&token) else {
            return;
        };
        let finished = match self.delivering.get_mut(&delivery) {
            Some(d) => {
                d.waiting = d.waiting.saturating_sub(1);
                if let Err(e) = result {
                    d.failure.get_or_insert(e);
                }
                d.waiting == 0
            }
            None => false,
        };
        if finished && let Some(d) = self.delivering.remove(&delivery) {
            let result = d.failure.map_or(Ok(()), Err);
            self.report(d.entry, result).await;
        }
    }

    async fn report(&self, entry: OutboxEntry, result: Result<(), DeliverError>) {
        if let Some(account) = &self.account {
            let _ = account.results.send(DeliveryResult { entry, result }).await;
        }
    }

    /// The session closed: everything handed to this connection goes back to the pump, the
    /// bind slot is released.
    async fn finish(&mut self, reason: &str) {
        tracing::info!(peer = %self.peer, conn = self.id, system_id = %self.system_id(), %reason, "SMPP client disconnected");
        if let Some(account) = self.account.clone() {
            lock(&account.receivers).retain(|r| r.conn != self.id);
            if let Some(mut rx) = self.handouts.take() {
                rx.close();
                while let Ok(entry) = rx.try_recv() {
                    self.report(entry, Err(DeliverError::Closed)).await;
                }
            }
            self.outgoing.clear();
            self.tokens.clear();
            for (_, d) in std::mem::take(&mut self.delivering) {
                self.report(d.entry, Err(DeliverError::Closed)).await;
            }
            if self.holds_bind {
                account.binds.fetch_sub(1, Ordering::AcqRel);
                self.holds_bind = false;
            }
            account.receivers_changed.notify_one();
        }
    }
}

/// The command_status a store failure is answered with: the message was not taken, and the
/// client must not think it was. A recipient who opted out is a refusal of this message
/// (ESME_RSUBMITFAIL), not a fault of the system.
fn store_status(e: &StoreError) -> u32 {
    match e {
        StoreError::OptedOut { .. } => super::session::ESME_RSUBMITFAIL,
        _ => super::frame::ESME_RSYSERR,
    }
}

async fn recv_handout(rx: &mut Option<mpsc::Receiver<OutboxEntry>>) -> Option<OutboxEntry> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

// ------------------------------------------------------------------------------ outbox pump

/// Hands an account's outbox to its bound receivers until shutdown.
async fn pump(
    shared: Arc<Shared>,
    account: Arc<Account>,
    mut results: mpsc::Receiver<DeliveryResult>,
) {
    let store = shared.ctx.store.clone();
    let mut changed = store.outbox_changed();
    let mut outbox = OutboxReader::new(&account.target, OUTBOX_BATCH);
    let mut failures: HashMap<OutboxKey, u32> = HashMap::new();
    let mut done: Vec<OutboxKey> = Vec::new();
    let mut start = 0usize;
    // Hands out with try_send only, so no client can hold this loop up.
    let heartbeat = crate::watchdog::register(format!(
        "SMPP outbox pump of {}",
        account.settings.system_id
    ));
    loop {
        heartbeat.beat();
        // Hand out while a receiver has room: due retries first, then what is new.
        loop {
            let receiving = !lock(&account.receivers).is_empty();
            let entry = match outbox.next(&store, receiving) {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(account = %account.settings.system_id, error = %e, "outbox unreadable; will try again");
                    break;
                }
            };
            if let Some(back) = account.offer(entry, &mut start) {
                // No room anywhere: it goes first once a receiver has some.
                outbox.give_back(back);
                break;
            }
        }
        if !done.is_empty() && (done.len() >= DONE_BATCH || results.is_empty()) {
            let keys = std::mem::take(&mut done);
            if let Err(e) = store.outbox_done(keys.clone()).await {
                // They stay in the outbox and would be delivered again after a restart.
                tracing::warn!(account = %account.settings.system_id, error = %e, "delivered receipts not yet removed from the outbox; will try again");
                done = keys;
            }
        }
        let next_retry = outbox.next_retry().map(Instant::from_std);
        tokio::select! {
            // Always enabled: the loop counts as idle for the whole wait.
            () = heartbeat.idle(account.retired.cancelled()) => break,
            r = changed.changed() => {
                if r.is_err() {
                    // The store closed.
                    break;
                }
            }
            () = account.receivers_changed.notified() => {}
            Some(r) = results.recv() => {
                let key = r.entry.key.clone();
                match r.result {
                    Ok(()) => {
                        failures.remove(&key);
                        done.push(key);
                    }
                    Err(e @ (DeliverError::Invalid { .. } | DeliverError::Refused { status: super::session::ESME_RX_P_APPN })) => {
                        // The client will never take it: keeping it would block nothing but
                        // would be retried forever.
                        tracing::warn!(account = %account.settings.system_id, error = %e, item = ?r.entry.item, "delivery dropped: the client refuses it for good");
                        failures.remove(&key);
                        done.push(key);
                    }
                    Err(DeliverError::Closed) => {
                        // Not the client's refusal: on to another bind (or the next one) now.
                        outbox.give_back(r.entry);
                    }
                    Err(e) => {
                        let n = failures.entry(key).or_insert(0);
                        *n = n.saturating_add(1);
                        let delay = Duration::from_secs(1u64 << (*n).min(9)).min(MAX_RETRY_DELAY);
                        tracing::debug!(account = %account.settings.system_id, error = %e, ?delay, "delivery will be tried again");
                        outbox.retry_after(r.entry, delay);
                    }
                }
            }
            () = sleep_until(next_retry), if next_retry.is_some() => {}
        }
    }
    if !done.is_empty() {
        let _ = store.outbox_done(done).await;
    }
}

// ------------------------------------------------------------------------------ outbind

/// Asks an account's ESME to bind (SMPP outbind to `addr`) while its outbox has something and
/// none of its binds receives; one connection at a time, every `outbind_interval` at most.
async fn outbinder(shared: Arc<Shared>, account: Arc<Account>, addr: SocketAddr) {
    let store = shared.ctx.store.clone();
    let mut changed = store.outbox_changed();
    let interval = account.settings.outbind_interval;
    loop {
        let receiving = !lock(&account.receivers).is_empty();
        let waiting = !receiving
            && store
                .outbox(&account.target, None, 1)
                .is_ok_and(|entries| !entries.is_empty());
        if waiting {
            let connect =
                tokio::time::timeout(shared.settings.response_timeout, TcpStream::connect(addr));
            match connect.await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
                    let mut conn = Connection::new(shared.clone(), id, addr, stream);
                    match conn.outbind(&account.settings.outbind_password).await {
                        Ok(()) => {
                            tracing::info!(account = %account.settings.system_id, %addr, "SMPP outbind sent: receipts or replies wait");
                            conn.run().await;
                        }
                        Err(e) => {
                            tracing::warn!(account = %account.settings.system_id, %addr, error = %e, "SMPP outbind failed");
                        }
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(account = %account.settings.system_id, %addr, error = %e, "SMPP outbind: cannot connect");
                }
                Err(_) => {
                    tracing::warn!(account = %account.settings.system_id, %addr, "SMPP outbind: connect timed out");
                }
            }
            tokio::select! {
                () = account.retired.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        } else {
            tokio::select! {
                () = account.retired.cancelled() => return,
                r = changed.changed() => {
                    if r.is_err() {
                        return;
                    }
                }
                // A receiver may have gone meanwhile.
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optout::{OptOutScope, OptOutSource};

    #[test]
    fn an_opted_out_recipient_is_a_submit_failure_and_the_rest_system_errors() {
        let opted_out = StoreError::OptedOut {
            number: "+393471234567".into(),
            scope: OptOutScope::Marketing,
            at: 0,
            by: OptOutSource::Keyword,
            text: Some("STOP".into()),
        };
        assert_eq!(
            store_status(&opted_out),
            super::super::session::ESME_RSUBMITFAIL
        );
        assert_eq!(
            store_status(&StoreError::Closed),
            super::super::frame::ESME_RSYSERR
        );
        assert_eq!(
            store_status(&StoreError::Unavailable("disk full".into())),
            super::super::frame::ESME_RSYSERR
        );
    }
}
