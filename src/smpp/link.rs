//! An SMPP carrier link as a [`Channel`]: one task per TCP connection drives a [`Session`]
//! (the protocol as a state machine without I/O), submits queued messages as far as the
//! window and the rate limit allow, and reports what the SMSC answers, its receipts and the
//! customers' replies.
//!
//! - Reconnects with exponential backoff and jitter, so a fleet of gateways restarted together
//!   does not hammer an SMSC that just came back; a bind refused for its credentials waits
//!   `bind_refused_backoff` and is shown on the channel.
//! - Throttled (ESME_RTHROTTLED): the part is submitted again after a pause of the whole link
//!   that doubles while the SMSC keeps saying so; the message never leaves the link for it.
//! - A receipt or reply is acknowledged (deliver_sm_resp) only after the store committed it;
//!   when it could not, the SMSC is told to retry (ESME_RX_T_APPN).
//! - When the link drops, jobs not yet submitted go back to the queue at once (another channel
//!   may take them); submits in flight go back as possibly sent.
//! - On shutdown: stop taking messages, let submits in flight and commits finish, unbind.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::Framed;

use crate::channel::{
    Channel, ChannelContext, ChannelError, ChannelEvent, ChannelTask, Closed, EventSink, Failure,
    LinkState, SendJob, StatusHandle,
};
use crate::config::{DefaultAlphabet, SmppBindMode, SmppClientSettings};
use crate::message::{MessageId, now_millis};
use crate::watchdog::Heartbeat;

use super::content::{self, Dc0, Delivery};
use super::frame::{BindFields, BindMode, SmppCodec};
use super::outbound::{self, PartSubmit};
use super::session::{
    ESME_RX_P_APPN, ESME_RX_T_APPN, MAX_UNACKED_DELIVERIES, Output, Session, SessionConfig,
    SubmitError, SubmitErrorKind, status_text,
};

/// Throttle pauses double up to this.
const MAX_THROTTLE_PAUSE: Duration = Duration::from_secs(60);
/// Throttled answers for one part after which its message goes back to the queue (and may be
/// taken by another channel) instead of waiting on this link.
const MAX_THROTTLES_PER_PART: u32 = 8;
/// At shutdown, how long receipts and replies being committed may delay the unbind.
const COMMIT_GRACE: Duration = Duration::from_secs(2);
/// The detail of a link bound as receiver only (never handed messages).
const RECEIVE_ONLY: &str = "receive-only link";
/// How the channel's detail begins while the receiving connection is down.
const RECEIVER_DOWN: &str = "receiving connection down: ";
/// A link that stayed bound this long starts its reconnect backoff from the beginning.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// An SMPP link to a carrier's SMSC as a [`Channel`].
pub struct SmppChannel {
    settings: SmppClientSettings,
    metrics: crate::metrics::LinkMetrics,
}

impl SmppChannel {
    /// A channel for the link these settings describe.
    pub fn new(settings: SmppClientSettings) -> Self {
        SmppChannel {
            settings,
            metrics: Default::default(),
        }
    }

    /// The same, counting its window use and throttling into `metrics`.
    pub fn with_metrics(mut self, metrics: crate::metrics::LinkMetrics) -> Self {
        self.metrics = metrics;
        self
    }
}

impl Channel for SmppChannel {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn kind(&self) -> &'static str {
        "smpp"
    }

    /// Twice the submit window: while one window's worth is in flight, the next is already
    /// claimed and waiting (or its answers are being committed), so the link never idles on a
    /// claim. This is also the link's claim budget, so what a kill can send twice: one window
    /// measured 30-35% slower (bench/smpp.py, 2026-11-23).
    fn window(&self) -> usize {
        self.settings.window.saturating_mul(2).max(1)
    }

    fn run(self: Box<Self>, ctx: ChannelContext) -> ChannelTask {
        Box::pin(run(self.settings, self.metrics, ctx))
    }
}

/// What one connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Submits, and receives too when bound as transceiver.
    Send,
    /// Only receives receipts and replies.
    Receive,
}

/// Runs the link until shutdown.
pub async fn run(
    settings: SmppClientSettings,
    metrics: crate::metrics::LinkMetrics,
    ctx: ChannelContext,
) -> Result<(), ChannelError> {
    let ChannelContext {
        mut jobs,
        events,
        status,
        shutdown,
    } = ctx;
    let link = Link {
        settings: Arc::new(settings),
        events,
        status,
        shutdown,
        metrics,
    };
    let result = match link.settings.bind {
        SmppBindMode::Transceiver => {
            link.connection_loop(BindMode::Transceiver, Role::Send, Some(&mut jobs))
                .await
        }
        SmppBindMode::Transmitter => {
            link.connection_loop(BindMode::Transmitter, Role::Send, Some(&mut jobs))
                .await
        }
        SmppBindMode::TransmitterReceiver => {
            let (sent, received) = tokio::join!(
                link.connection_loop(BindMode::Transmitter, Role::Send, Some(&mut jobs)),
                link.connection_loop(BindMode::Receiver, Role::Receive, None),
            );
            sent.and(received)
        }
        SmppBindMode::Receiver => {
            link.status
                .set_state(LinkState::Paused, Some(RECEIVE_ONLY.into()));
            link.connection_loop(BindMode::Receiver, Role::Receive, None)
                .await
        }
    };
    // Whatever the dispatcher handed over meanwhile goes back untried.
    jobs.close();
    while let Some(job) = jobs.recv().await {
        link.give_back(&job, "the link stopped").await?;
    }
    result
}

/// The link's shared parts.
struct Link {
    settings: Arc<SmppClientSettings>,
    events: EventSink,
    status: StatusHandle,
    shutdown: tokio_util::sync::CancellationToken,
    metrics: crate::metrics::LinkMetrics,
}

/// How a connection ended.
enum End {
    /// Shutdown: unbound (or never connected).
    Shutdown,
    /// The SMSC refused the bind.
    BindRefused { status: u32, permanent: bool },
    /// Lost or closed; `bound_for` is how long it was bound (zero if never).
    Lost { reason: String, bound_for: Duration },
}

impl Link {
    fn name(&self) -> &str {
        &self.settings.name
    }

    /// Connects, runs a session, and reconnects after a pause until shutdown.
    async fn connection_loop(
        &self,
        mode: BindMode,
        role: Role,
        mut jobs: Option<&mut mpsc::Receiver<SendJob>>,
    ) -> Result<(), ChannelError> {
        let s = &self.settings;
        let mut backoff = Backoff::new(s.reconnect_min, s.reconnect_max);
        let addr = format!("{}:{}", s.host, s.port);
        let heartbeat = crate::watchdog::register(match role {
            Role::Send => format!("SMPP link {}", self.name()),
            Role::Receive => format!("SMPP link {} (receiver)", self.name()),
        });
        loop {
            heartbeat.beat();
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            let connect = tokio::time::timeout(s.connect_timeout, TcpStream::connect(&addr));
            let connected = tokio::select! {
                r = heartbeat.idle(connect) => r,
                () = self.shutdown.cancelled() => return Ok(()),
            };
            let end = match connected {
                Ok(Ok(stream)) => {
                    // Small PDUs must not wait for Nagle: a submit_sm_resp is 17+ octets.
                    let _ = stream.set_nodelay(true);
                    self.run_connection(stream, mode, role, jobs.as_deref_mut(), &heartbeat)
                        .await?
                }
                Ok(Err(e)) => End::Lost {
                    reason: format!("cannot connect to {addr}: {e}"),
                    bound_for: Duration::ZERO,
                },
                Err(_) => End::Lost {
                    reason: format!(
                        "cannot connect to {addr}: no answer in {:?}",
                        s.connect_timeout
                    ),
                    bound_for: Duration::ZERO,
                },
            };
            let (wait, why) = match end {
                End::Shutdown => return Ok(()),
                End::BindRefused { status, permanent } => {
                    let name = status_text(status);
                    if permanent {
                        backoff.reset();
                        (
                            s.bind_refused_backoff,
                            format!("bind refused: {name} (check system_id and password)"),
                        )
                    } else {
                        (backoff.next(), format!("bind refused: {name}"))
                    }
                }
                End::Lost { reason, bound_for } => {
                    if bound_for >= STABLE_AFTER {
                        backoff.reset();
                    }
                    (backoff.next(), reason)
                }
            };
            let detail = format!(
                "{why}; retrying in {}",
                humantime::format_duration(round_ms(wait))
            );
            tracing::warn!(channel = %self.name(), role = ?role, "{detail}");
            match role {
                Role::Send => self.status.set_state(LinkState::Down, Some(detail)),
                // Sending may still work: say why receipts and replies do not come.
                Role::Receive => self.status.update(|s| {
                    s.detail = Some(format!("{RECEIVER_DOWN}{detail}"));
                }),
            }
            // While down, jobs handed over before the link fell go back at once.
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = heartbeat.idle(&mut sleep) => break,
                    () = self.shutdown.cancelled() => return Ok(()),
                    Some(job) = recv_job(&mut jobs) => self.give_back(&job, "the link is down").await?,
                }
            }
        }
    }

    /// Reports a job as never tried: it goes back to the queue without counting an attempt.
    async fn give_back(&self, job: &SendJob, why: &str) -> Result<(), Closed> {
        self.events
            .send_for(
                job,
                ChannelEvent::SendFailed {
                    id: job.message.id,
                    attempt: job.message.attempts,
                    failure: Failure::NotSent,
                    reason: format!("not sent on {}: {why}", self.name()),
                    retry_after: None,
                },
            )
            .await
    }

    fn session_config(&self, mode: BindMode) -> SessionConfig {
        let s = &self.settings;
        let mut config = SessionConfig::new(
            mode,
            BindFields {
                system_id: s.system_id.clone(),
                password: s.password.clone(),
                system_type: s.system_type.clone(),
                interface_version: s.interface_version,
                addr_ton: 0,
                addr_npi: 0,
                address_range: s.address_range.clone(),
            },
        );
        config.window = s.window;
        config.response_timeout = s.response_timeout;
        config.bind_timeout = s.response_timeout;
        config.enquire_link_interval = s.enquire_link_interval;
        config
    }

    /// One TCP connection, from bind to close.
    async fn run_connection(
        &self,
        stream: TcpStream,
        mode: BindMode,
        role: Role,
        jobs: Option<&mut mpsc::Receiver<SendJob>>,
        heartbeat: &Heartbeat,
    ) -> Result<End, ChannelError> {
        let session =
            Session::new(self.session_config(mode), std::time::Instant::now()).map_err(|e| {
                ChannelError::Fatal {
                    channel: self.name().to_string(),
                    reason: format!("cannot build the bind: {e}"),
                }
            })?;
        let mut conn = Connection {
            link: self,
            framed: Framed::new(stream, SmppCodec::default()),
            session,
            role,
            jobs,
            heartbeat,
            work: Work::default(),
            rate: Rate::new(self.settings.max_rate, self.settings.window),
            throttle: Throttle::new(self.settings.throttle_backoff),
            commits: mpsc::channel(MAX_UNACKED_DELIVERIES),
            commits_pending: 0,
            bound_at: None,
            stopping: None,
            bind_refused: None,
        };
        conn.run().await
    }
}

/// Receives a job when there is a queue to receive from; never resolves otherwise.
async fn recv_job(jobs: &mut Option<&mut mpsc::Receiver<SendJob>>) -> Option<SendJob> {
    match jobs {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A job on the link: its parts waiting, in flight, and how it ends.
struct JobState {
    job: SendJob,
    /// Parts (submits) queued but not yet submitted.
    waiting: usize,
    /// Submits awaiting their response.
    in_flight: usize,
    /// Whether any submit of this job reached the SMSC.
    attempted: bool,
    /// Set when the job has failed; it is reported once nothing is in flight.
    failure: Option<(Failure, String, Option<Duration>)>,
}

/// One submit waiting for its turn or its response.
struct Pending {
    job: MessageId,
    submit: PartSubmit,
    throttled: u32,
}

/// The jobs a connection holds.
#[derive(Default)]
struct Work {
    jobs: HashMap<MessageId, JobState>,
    queue: VecDeque<Pending>,
    in_flight: HashMap<u64, Pending>,
    next_token: u64,
}

/// A delivery's answer once its commit is done: (sequence_number, command_status).
type Ack = (u32, u32);

/// One TCP connection and its session.
struct Connection<'a> {
    link: &'a Link,
    framed: Framed<TcpStream, SmppCodec>,
    session: Session,
    role: Role,
    jobs: Option<&'a mut mpsc::Receiver<SendJob>>,
    /// The link's loop, for the watchdog.
    heartbeat: &'a Heartbeat,
    work: Work,
    rate: Rate,
    throttle: Throttle,
    /// Receipts and replies committed (or not).
    commits: (mpsc::Sender<Ack>, mpsc::Receiver<Ack>),
    commits_pending: usize,
    bound_at: Option<Instant>,
    /// Set at shutdown: the unbind waits for commits until then.
    stopping: Option<Instant>,
    bind_refused: Option<(u32, bool)>,
}

impl Connection<'_> {
    async fn run(&mut self) -> Result<End, ChannelError> {
        let mut unbind_sent = false;
        loop {
            self.heartbeat.beat();
            // Act on everything the session asked for, then write it all at once.
            let mut closed = None;
            while let Some(output) = self.session.poll_output() {
                match output {
                    Output::Send(command) => {
                        if let Err(e) = self.framed.feed(command).await {
                            self.session.connection_lost(&e.to_string());
                        }
                    }
                    Output::Bound { system_id } => self.on_bound(&system_id),
                    Output::BindFailed { status, permanent } => {
                        self.bind_refused = Some((status, permanent));
                    }
                    Output::Submitted { token, result } => self.on_submitted(token, result).await?,
                    Output::Deliver {
                        sequence_number,
                        command,
                    } => self.on_deliver(sequence_number, &command),
                    Output::Closed { reason } => closed = Some(reason),
                }
            }
            if let Err(e) = SinkExt::<rusmpp::Command>::flush(&mut self.framed).await
                && closed.is_none()
            {
                self.session.connection_lost(&e.to_string());
                continue;
            }
            if let Some(reason) = closed {
                return self.finish(reason).await;
            }
            if self.submit_ready() {
                continue;
            }
            let now = Instant::now();
            if let Some(since) = self.stopping
                && !unbind_sent
                && (self.commits_pending == 0 || now >= since + COMMIT_GRACE)
                && self.work.in_flight.is_empty()
            {
                unbind_sent = true;
                self.session.unbind(std::time::Instant::now());
                continue;
            }
            let wake = self.next_wake();
            let take_jobs = self.takes_jobs();
            tokio::select! {
                () = self.link.shutdown.cancelled(), if self.stopping.is_none() => {
                    self.stopping = Some(Instant::now());
                    self.give_back_waiting("the gateway is stopping").await?;
                }
                // Idle while this select waits; the frame branch is always enabled.
                frame = self.heartbeat.idle(self.framed.next()) => {
                    let now = std::time::Instant::now();
                    match frame {
                        Some(Ok(frame)) => self.session.on_frame(frame, now),
                        Some(Err(e)) => self.session.connection_lost(&e.to_string()),
                        None => self.session.connection_lost("closed by the SMSC"),
                    }
                }
                Some((sequence_number, status)) = self.commits.1.recv() => {
                    self.commits_pending = self.commits_pending.saturating_sub(1);
                    self.session.ack_deliver(sequence_number, status, std::time::Instant::now());
                }
                () = sleep_until(wake) => self.session.on_tick(std::time::Instant::now()),
                Some(job) = recv_job(&mut self.jobs), if take_jobs => self.take(job).await?,
            }
        }
    }

    fn on_bound(&mut self, system_id: &str) {
        self.bound_at = Some(Instant::now());
        tracing::info!(channel = %self.link.name(), smsc = %system_id, role = ?self.role, "SMPP link bound");
        match self.role {
            Role::Send => self.link.status.set_state(LinkState::Up, None),
            Role::Receive => {
                let receive_only = self.link.settings.bind == SmppBindMode::Receiver;
                self.link.status.update(|s| {
                    if s.detail
                        .as_deref()
                        .is_some_and(|d| d.starts_with(RECEIVER_DOWN))
                    {
                        s.detail = receive_only.then(|| RECEIVE_ONLY.to_string());
                    }
                });
            }
        }
    }

    /// Whether to take another job: bound as sender, not stopping, and few enough parts
    /// waiting that the window stays full without hoarding messages another link could send.
    fn takes_jobs(&self) -> bool {
        self.role == Role::Send
            && self.stopping.is_none()
            && self.session.is_bound()
            && self.work.queue.len() < self.link.settings.window
    }

    /// Submits waiting parts while the window, the rate and any throttle pause allow.
    /// Returns true when it submitted something (there is output to write).
    fn submit_ready(&mut self) -> bool {
        let now = Instant::now();
        let mut submitted = false;
        while self.session.can_submit() && self.throttle.allows(now) {
            let Some(pending) = self.work.queue.pop_front() else {
                break;
            };
            let Some(state) = self.work.jobs.get_mut(&pending.job) else {
                continue;
            };
            state.waiting = state.waiting.saturating_sub(1);
            if state.failure.is_some() {
                // The job failed already: its other parts are not sent.
                continue;
            }
            if !self.rate.take(now) {
                state.waiting += 1;
                self.work.queue.push_front(pending);
                break;
            }
            let token = self.work.next_token;
            self.work.next_token = self.work.next_token.wrapping_add(1);
            if self
                .session
                .submit(
                    token,
                    pending.submit.fields.clone(),
                    std::time::Instant::now(),
                )
                .is_err()
            {
                state.waiting += 1;
                self.work.queue.push_front(pending);
                break;
            }
            state.in_flight += 1;
            state.attempted = true;
            self.work.in_flight.insert(token, pending);
            submitted = true;
        }
        if submitted {
            self.report_window();
        }
        submitted
    }

    fn report_window(&self) {
        self.link.metrics.window(
            self.link.name(),
            self.work.in_flight.len(),
            self.link.settings.window,
        );
    }

    /// When something is due: a session timer, the end of a throttle pause, the rate limit.
    fn next_wake(&self) -> Option<Instant> {
        let session = self.session.next_deadline().map(to_tokio);
        let waiting = !self.work.queue.is_empty();
        let throttle = self.throttle.until.filter(|_| waiting);
        let rate = self.rate.next_at().filter(|_| waiting);
        let grace = self.stopping.map(|s| s + COMMIT_GRACE);
        [session, throttle, rate, grace].into_iter().flatten().min()
    }

    /// Takes a job: its submits join the queue, or it fails at once if it cannot be encoded.
    async fn take(&mut self, job: SendJob) -> Result<(), Closed> {
        let id = job.message.id;
        match outbound::submits_for(
            &job.message,
            &job.parts_to_send,
            &self.link.settings,
            now_millis(),
        ) {
            Ok(submits) if !submits.is_empty() => {
                let waiting = submits.len();
                for submit in submits {
                    self.work.queue.push_back(Pending {
                        job: id,
                        submit,
                        throttled: 0,
                    });
                }
                self.work.jobs.insert(
                    id,
                    JobState {
                        job,
                        waiting,
                        in_flight: 0,
                        attempted: false,
                        failure: None,
                    },
                );
                Ok(())
            }
            Ok(_) => self.link.give_back(&job, "no part to send").await,
            Err(reason) => {
                self.link
                    .events
                    .send_for(
                        &job,
                        ChannelEvent::SendFailed {
                            id,
                            attempt: job.message.attempts,
                            failure: Failure::Permanent,
                            reason: format!("cannot be sent on {}: {reason}", self.link.name()),
                            retry_after: None,
                        },
                    )
                    .await
            }
        }
    }

    /// A submit_sm was answered (or will never be).
    async fn on_submitted(
        &mut self,
        token: u64,
        result: Result<String, SubmitError>,
    ) -> Result<(), Closed> {
        let Some(mut pending) = self.work.in_flight.remove(&token) else {
            return Ok(());
        };
        self.report_window();
        let id = pending.job;
        let Some(state) = self.work.jobs.get_mut(&id) else {
            return Ok(());
        };
        state.in_flight = state.in_flight.saturating_sub(1);
        match result {
            Ok(message_id) => {
                self.throttle.success();
                self.link
                    .events
                    .send_for(
                        &state.job,
                        ChannelEvent::Accepted {
                            id,
                            parts: pending.submit.parts.clone(),
                            remote_id: Some(message_id),
                        },
                    )
                    .await?;
            }
            Err(e) if e.kind == SubmitErrorKind::Throttled && state.failure.is_none() => {
                self.link.metrics.throttled(self.link.name());
                let pause = self.throttle.throttled(Instant::now());
                pending.throttled += 1;
                if pending.throttled >= MAX_THROTTLES_PER_PART {
                    state.failure = Some((
                        Failure::Transient,
                        format!(
                            "{}: throttled {} times in a row",
                            self.link.name(),
                            pending.throttled
                        ),
                        Some(pause),
                    ));
                } else {
                    tracing::debug!(channel = %self.link.name(), ?pause, "throttled by the SMSC");
                    // Sent again first, once the pause is over.
                    state.waiting += 1;
                    self.work.queue.push_front(pending);
                }
            }
            Err(e) => {
                if state.failure.is_none() {
                    state.failure = Some(failure_of(&e, self.link.name()));
                }
            }
        }
        self.settle(id).await
    }

    /// Reports a job once nothing of it is waiting or in flight (or it failed and nothing is in
    /// flight), and forgets it.
    async fn settle(&mut self, id: MessageId) -> Result<(), Closed> {
        let Some(state) = self.work.jobs.get(&id) else {
            return Ok(());
        };
        let done = state.in_flight == 0 && (state.waiting == 0 || state.failure.is_some());
        if !done {
            return Ok(());
        }
        let Some(state) = self.work.jobs.remove(&id) else {
            return Ok(());
        };
        if state.failure.is_some() {
            self.work.queue.retain(|p| p.job != id);
        }
        if let Some((failure, reason, retry_after)) = state.failure {
            self.link
                .events
                .send_for(
                    &state.job,
                    ChannelEvent::SendFailed {
                        id,
                        attempt: state.job.message.attempts,
                        failure,
                        reason,
                        retry_after,
                    },
                )
                .await?;
        }
        Ok(())
    }

    /// At shutdown: parts not yet submitted are not sent; their jobs end as soon as nothing of
    /// them is in flight.
    async fn give_back_waiting(&mut self, why: &str) -> Result<(), Closed> {
        let ids: Vec<MessageId> = self.work.jobs.keys().copied().collect();
        for id in ids {
            if let Some(state) = self.work.jobs.get_mut(&id)
                && state.waiting > 0
                && state.failure.is_none()
            {
                state.failure = Some(if state.attempted {
                    (
                        Failure::Transient,
                        format!("{}: {why} before all parts were sent", self.link.name()),
                        None,
                    )
                } else {
                    (
                        Failure::NotSent,
                        format!("not sent on {}: {why}", self.link.name()),
                        None,
                    )
                });
            }
            self.settle(id).await?;
        }
        Ok(())
    }

    /// A deliver_sm or data_sm: a receipt or a reply is committed, then acknowledged.
    fn on_deliver(&mut self, sequence_number: u32, command: &rusmpp::Command) {
        let dc0 = match self.link.settings.default_alphabet {
            DefaultAlphabet::Latin1 => Dc0::Latin1,
            DefaultAlphabet::Gsm7 => Dc0::from(self.link.settings.gsm7_packed),
        };
        let event = match content::read_delivery(command, dc0) {
            Ok(Delivery::Receipt {
                remote_id,
                state,
                error,
            }) => match state.and_then(|s| s.outcome()) {
                Some(outcome) => ChannelEvent::Receipt {
                    remote_id,
                    outcome,
                    // What the network said, e.g. "undeliverable (receipt err:001)".
                    reason: match (outcome, state, error) {
                        (crate::message::ReceiptOutcome::Delivered, _, error) => error,
                        (_, Some(s), Some(e)) => {
                            Some(format!("{} ({e})", format!("{s:?}").to_ascii_lowercase()))
                        }
                        (_, Some(s), None) => Some(format!("{s:?}").to_ascii_lowercase()),
                        (_, None, error) => error,
                    },
                },
                None => {
                    // ENROUTE, ACCEPTD, UNKNOWN: not an outcome; nothing to keep.
                    tracing::debug!(channel = %self.link.name(), %remote_id, ?state, "intermediate receipt");
                    self.session
                        .ack_deliver(sequence_number, 0, std::time::Instant::now());
                    return;
                }
            },
            Ok(Delivery::Sms {
                from,
                to,
                text,
                part,
            }) => ChannelEvent::Inbound {
                from,
                to,
                text,
                in_reply_to: None,
                part,
                dedupe: mo_dedupe(command, self.link.settings.mo_dedupe_window),
            },
            Err(e) => {
                tracing::warn!(channel = %self.link.name(), error = %e, "unreadable delivery refused");
                self.session.ack_deliver(
                    sequence_number,
                    ESME_RX_P_APPN,
                    std::time::Instant::now(),
                );
                return;
            }
        };
        let events = self.link.events.clone();
        let done = self.commits.0.clone();
        self.commits_pending += 1;
        // Committing waits for a disk sync; the connection goes on meanwhile.
        tokio::spawn(async move {
            let status = match events.send_committed(event).await {
                Ok(true) => 0,
                _ => ESME_RX_T_APPN,
            };
            let _ = done.send((sequence_number, status)).await;
        });
    }

    /// The session closed: every job still here ends, and the connection says why.
    async fn finish(&mut self, reason: String) -> Result<End, ChannelError> {
        let bound_for = self.bound_at.map_or(Duration::ZERO, |at| at.elapsed());
        let stopping = self.stopping.is_some();
        self.give_back_waiting(if stopping {
            "the gateway is stopping"
        } else {
            "the link dropped"
        })
        .await?;
        if self.role == Role::Send && !stopping {
            self.link
                .status
                .set_state(LinkState::Down, Some(reason.clone()));
        }
        Ok(if let Some((status, permanent)) = self.bind_refused {
            End::BindRefused { status, permanent }
        } else if stopping {
            tracing::info!(channel = %self.link.name(), role = ?self.role, "SMPP link unbound");
            End::Shutdown
        } else {
            End::Lost { reason, bound_for }
        })
    }
}

/// How the store recognizes this deliver_sm sent again (the SMSC resends one whose
/// deliver_sm_resp it did not get): its addresses and content, within `window`. SMPP gives MO
/// messages no timestamp, so identical texts further apart are real repeats.
fn mo_dedupe(command: &rusmpp::Command, window: Duration) -> Option<crate::channel::Dedupe> {
    if window.is_zero() {
        return None;
    }
    let sms = content::sms_of(command)?;
    let mut bytes = Vec::new();
    for address in [&sms.source, &sms.dest] {
        bytes.extend_from_slice(&[address.ton, address.npi]);
        bytes.extend_from_slice(address.addr.as_bytes());
        bytes.push(0);
    }
    bytes.extend_from_slice(&[sms.content.esm_class, sms.content.data_coding]);
    bytes.extend_from_slice(&sms.content.short_message);
    bytes.push(0);
    bytes.extend_from_slice(sms.content.message_payload.as_deref().unwrap_or_default());
    if let Some(sar) = sms.content.sar {
        bytes.extend_from_slice(&sar.reference.to_be_bytes());
        bytes.extend_from_slice(&[sar.total, sar.seq]);
    }
    Some(crate::channel::Dedupe {
        fingerprint: crate::message::fingerprint(&bytes),
        within_ms: Some(i64::try_from(window.as_millis()).unwrap_or(i64::MAX)),
    })
}

/// What a failed submit means for its message.
fn failure_of(e: &SubmitError, link: &str) -> (Failure, String, Option<Duration>) {
    let failure = match (e.kind, e.status) {
        (SubmitErrorKind::Permanent, _) => Failure::Permanent,
        // No answer: the SMSC may have taken it.
        (SubmitErrorKind::Interrupted, _) | (_, None) => Failure::Unknown,
        (SubmitErrorKind::Throttled | SubmitErrorKind::Retry, Some(_)) => Failure::Transient,
    };
    let reason = match (e.kind, e.status) {
        (SubmitErrorKind::Interrupted, _) => format!(
            "{link}: the link dropped before the SMSC answered; it may have the message ({})",
            e.reason
        ),
        (_, None) => format!("{link}: {}; the SMSC may have the message", e.reason),
        (_, Some(_)) => format!("{link}: SMSC refused: {}", e.reason),
    };
    (failure, reason, None)
}

fn to_tokio(at: std::time::Instant) -> Instant {
    Instant::from_std(at)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reconnect delays: doubling from `min` to `max`, each drawn from its upper half so that
/// links restarted together spread out.
#[derive(Debug, Clone)]
struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            current: min,
        }
    }

    fn next(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        base.mul_f64(0.5 + fastrand::f64() / 2.0)
    }

    fn reset(&mut self) {
        self.current = self.min;
    }
}

/// A link-wide pause after the SMSC said "throttled", doubling while it keeps saying so.
#[derive(Debug, Clone)]
struct Throttle {
    initial: Duration,
    pause: Duration,
    until: Option<Instant>,
}

impl Throttle {
    fn new(initial: Duration) -> Self {
        Throttle {
            initial,
            pause: initial,
            until: None,
        }
    }

    fn allows(&self, now: Instant) -> bool {
        self.until.is_none_or(|until| now >= until)
    }

    /// Records a throttled answer; returns the pause started.
    fn throttled(&mut self, now: Instant) -> Duration {
        let pause = self.pause;
        // Answers to submits sent before the pause began do not stretch it further.
        if self.allows(now) {
            self.until = Some(now + pause);
            self.pause = (self.pause * 2).min(MAX_THROTTLE_PAUSE);
        }
        pause
    }

    fn success(&mut self) {
        self.pause = self.initial;
    }
}

/// The link's rate limit as a virtual schedule (GCRA): a submit may go when the schedule is
/// at most `burst` intervals ahead of now; bursts of a tenth of a second's worth are allowed.
#[derive(Debug, Clone)]
struct Rate {
    interval: Option<Duration>,
    burst: Duration,
    schedule: Option<Instant>,
}

impl Rate {
    fn new(per_second: f64, window: usize) -> Self {
        if !(per_second.is_finite() && per_second > 0.0) {
            return Rate {
                interval: None,
                burst: Duration::ZERO,
                schedule: None,
            };
        }
        let interval = Duration::from_secs_f64(1.0 / per_second);
        let burst_count = (per_second / 10.0).clamp(1.0, window.max(1) as f64);
        Rate {
            interval: Some(interval),
            burst: interval.mul_f64(burst_count - 1.0),
            schedule: None,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let Some(interval) = self.interval else {
            return true;
        };
        let schedule = self.schedule.map_or(now, |s| s.max(now));
        if schedule > now + self.burst {
            return false;
        }
        self.schedule = Some(schedule + interval);
        true
    }

    fn next_at(&self) -> Option<Instant> {
        let schedule = self.schedule?;
        self.interval?;
        Some(schedule.checked_sub(self.burst).unwrap_or(schedule))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resent_deliver_sm_has_the_fingerprint_of_the_first() {
        let mo = |seq: u32, text: &str| {
            let fields = crate::smpp::frame::SubmitFields {
                source: content::address_for("+393471234567").unwrap(),
                dest: content::address_for("+393400000001").unwrap(),
                short_message: text.as_bytes().to_vec(),
                ..Default::default()
            };
            crate::smpp::frame::deliver_sm(seq, &fields).unwrap()
        };
        let window = Duration::from_secs(300);
        let first = mo_dedupe(&mo(1, "YES"), window).unwrap();
        // The resend has another sequence number: the same SMS all the same.
        assert_eq!(mo_dedupe(&mo(9, "YES"), window), Some(first.clone()));
        assert_eq!(first.within_ms, Some(300_000));
        assert_ne!(
            mo_dedupe(&mo(2, "NO"), window).unwrap().fingerprint,
            first.fingerprint
        );
        assert_eq!(mo_dedupe(&mo(1, "YES"), Duration::ZERO), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let waits: Vec<Duration> = (0..6).map(|_| b.next()).collect();
        for (wait, base) in waits.iter().zip([1, 2, 4, 8, 8, 8]) {
            let base = Duration::from_secs(base);
            assert!(*wait >= base / 2 && *wait <= base, "{wait:?} for {base:?}");
        }
        b.reset();
        assert!(b.next() <= Duration::from_secs(1));
    }

    #[test]
    fn the_rate_limit_allows_its_rate_and_a_small_burst() {
        let start = Instant::now();
        let mut rate = Rate::new(100.0, 50);
        // A burst of 10 (a tenth of a second's worth), then one per 10 ms.
        let burst = (0..20).take_while(|_| rate.take(start)).count();
        assert_eq!(burst, 10);
        let next = rate.next_at().unwrap();
        assert_eq!(next, start + Duration::from_millis(10));
        assert!(rate.take(next));
        assert!(!rate.take(next));
        let mut unlimited = Rate::new(0.0, 10);
        assert!((0..10_000).all(|_| unlimited.take(start)));
        assert_eq!(unlimited.next_at(), None);
    }

    #[test]
    fn throttle_pauses_double_and_reset_on_success() {
        let now = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(1));
        assert!(t.allows(now));
        assert_eq!(t.throttled(now), Duration::from_secs(1));
        assert!(!t.allows(now));
        // Answers to submits already in flight do not stretch the pause.
        t.throttled(now);
        assert_eq!(t.until, Some(now + Duration::from_secs(1)));
        let later = now + Duration::from_secs(1);
        assert!(t.allows(later));
        assert_eq!(t.throttled(later), Duration::from_secs(2));
        t.success();
        assert_eq!(t.pause, Duration::from_secs(1));
    }
}
