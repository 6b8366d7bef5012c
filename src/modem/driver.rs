//! The task that owns one modem's serial port: it moves bytes between the port and the
//! [`Session`], turns the session's outputs into channel events, and recovers from a modem that
//! hangs (reset, reopen) or vanishes (reopen with backoff when it comes back).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_serial::{SerialPortBuilderExt, SerialStream};

use super::session::{Output, Session, SessionConfig, Slot};
use crate::channel::{
    ChannelContext, ChannelEvent, Closed, EventSink, Failure, InboundPart, LinkState, SendJob,
    StatusHandle,
};
use crate::codec::at::AtDecoder;
use crate::codec::gsm7;
use crate::codec::tpdu::{self, Concat, Pdu, ReportOutcome, SubmitSpec};
use crate::config::{FlowControl, ModemSettings};
use crate::message::{Millis, ReceiptOutcome, now_millis};
use crate::watchdog::Heartbeat;

/// Errors of the modem layer.
#[derive(Debug, thiserror::Error)]
pub enum ModemError {
    /// The port could not be opened.
    #[error("cannot open {port}: {source}")]
    Open {
        /// The configured port.
        port: String,
        /// Why.
        source: tokio_serial::Error,
    },
    /// Reading or writing the port failed (the modem went away).
    #[error("serial port: {0}")]
    Io(#[from] std::io::Error),
    /// The port gave end of file (the modem went away).
    #[error("the modem closed the line")]
    Eof,
    /// The modem stopped answering.
    #[error("the modem stopped answering")]
    Unresponsive,
    /// The modem cannot be used until someone acts.
    #[error("{0}")]
    Blocked(String),
    /// The gateway is shutting down.
    #[error(transparent)]
    Closed(#[from] Closed),
}

/// Pause after a reset before the port is opened again (the modem reboots).
const AFTER_RESET: Duration = Duration::from_secs(3);
/// First wait before reopening a port that failed.
const REOPEN_START: Duration = Duration::from_millis(500);
/// Read buffer size.
const READ_CHUNK: usize = 4096;

/// Opens the port with the configured line settings (exclusively: TIOCEXCL).
pub fn open_port(settings: &ModemSettings) -> Result<SerialStream, ModemError> {
    let port = settings.port.to_string_lossy().into_owned();
    let flow = match settings.flow_control {
        FlowControl::None => tokio_serial::FlowControl::None,
        FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
        FlowControl::Software => tokio_serial::FlowControl::Software,
    };
    tokio_serial::new(&port, settings.baud_rate)
        .data_bits(tokio_serial::DataBits::Eight)
        .parity(tokio_serial::Parity::None)
        .stop_bits(tokio_serial::StopBits::One)
        .flow_control(flow)
        .open_native_async()
        .inspect(|stream| {
            // What the modem said to a previous owner of the port is not for us.
            let _ = tokio_serial::SerialPort::clear(stream, tokio_serial::ClearBuffer::Input);
        })
        .map_err(|source| ModemError::Open { port, source })
}

/// The session settings a modem's config asks for.
pub fn session_config(settings: &ModemSettings) -> SessionConfig {
    SessionConfig {
        pin: settings.pin.clone(),
        storage: settings.storage.clone(),
        indications: settings.indications.clone(),
        command_timeout: settings.command_timeout,
        send_timeout: settings.send_timeout,
        init_commands: settings.init_commands.clone(),
        health_interval: settings.health_interval,
        poll_interval: settings.poll_interval,
        sweep_interval: settings.sweep_interval,
        unresponsive_after: settings.unresponsive_after,
    }
}

/// The remote id a part is known by for status reports: the 8-bit reference and the last
/// digits of the recipient. Reports name the recipient nationally or internationally as the
/// network likes, so only the trailing digits are compared; the reference wraps after 256
/// messages, and the store then points the id at the newest message.
pub fn remote_id(reference: u8, recipient: &str) -> String {
    let digits: Vec<char> = recipient.chars().filter(char::is_ascii_digit).collect();
    let tail: String = digits[digits.len().saturating_sub(8)..].iter().collect();
    format!("{reference}/{tail}")
}

/// Pacing that protects a SIM from its carrier's spam limits.
#[derive(Debug)]
struct Pacing {
    min_interval: Duration,
    daily_cap: u32,
    day: i64,
    sent_today: u32,
    last_send: Option<Instant>,
}

const DAY_MS: i64 = 86_400_000;

impl Pacing {
    fn new(settings: &ModemSettings) -> Self {
        Pacing {
            min_interval: settings.min_send_interval,
            daily_cap: settings.daily_cap,
            day: now_millis() / DAY_MS,
            sent_today: 0,
            last_send: None,
        }
    }

    fn roll_day(&mut self, now_ms: Millis) {
        let day = now_ms / DAY_MS;
        if day != self.day {
            self.day = day;
            self.sent_today = 0;
        }
    }

    /// Whether today's cap is used up.
    fn capped(&mut self, now_ms: Millis) -> bool {
        self.roll_day(now_ms);
        self.daily_cap > 0 && self.sent_today >= self.daily_cap
    }

    /// When the next part may go.
    fn next_send_at(&self) -> Option<Instant> {
        self.last_send.map(|t| t + self.min_interval)
    }

    fn record(&mut self, now: Instant, now_ms: Millis) {
        self.roll_day(now_ms);
        self.sent_today = self.sent_today.saturating_add(1);
        self.last_send = Some(now);
    }
}

/// A message being sent, part by part.
struct Current {
    job: SendJob,
    /// Parts still to send, with their PDU (hex) and TPDU length.
    parts: VecDeque<(u8, String, usize)>,
    /// Token of the part the session is sending.
    in_flight: Option<(u64, u8)>,
    /// Whether any part was written to the modem yet.
    started: bool,
}

impl Current {
    /// How to hand the message back when the modem goes away: untried, it does not count as an
    /// attempt; once a part was written, the modem may have sent it.
    fn failure_if_stopped(&self) -> Failure {
        if self.started {
            Failure::Transient
        } else {
            Failure::NotSent
        }
    }
}

/// What ended one opening of the port.
enum End {
    Shutdown,
    Lost(ModemError),
}

/// Runs a modem channel until shutdown.
pub async fn run(settings: ModemSettings, ctx: ChannelContext) -> Result<(), Closed> {
    let ChannelContext {
        mut jobs,
        events,
        status,
        shutdown,
    } = ctx;
    let name: Arc<str> = Arc::from(settings.name.as_str());
    let mut pacing = Pacing::new(&settings);
    let mut backoff = REOPEN_START;
    let heartbeat = crate::watchdog::register(format!("modem {}", settings.name));
    status.update(|s| {
        s.modem = Some(crate::channel::ModemInfo {
            port: settings.port.display().to_string(),
            ..Default::default()
        })
    });
    loop {
        heartbeat.beat();
        if shutdown.is_cancelled() {
            hand_back_queued(&mut jobs, &events, "the gateway is shutting down").await?;
            return Ok(());
        }
        let wait = match open_port(&settings) {
            Ok(port) => {
                tracing::info!(modem = %name, port = %settings.port.display(), "port open");
                let mut link = Link {
                    settings: &settings,
                    events: &events,
                    status: &status,
                    pacing: &mut pacing,
                    heartbeat: &heartbeat,
                    next_token: 0,
                    reached_ready: false,
                };
                match link.drive(port, &mut jobs, &shutdown).await {
                    End::Shutdown => return Ok(()),
                    End::Lost(ModemError::Closed(c)) => return Err(c),
                    End::Lost(ModemError::Blocked(why)) => {
                        tracing::error!(modem = %name, reason = %why, "modem blocked; fix it and restart");
                        status.set_state(LinkState::Down, Some(why));
                        // Nothing to retry on our own (a PIN is never tried twice).
                        refuse_until_shutdown(&mut jobs, &events, &shutdown, &heartbeat).await?;
                        return Ok(());
                    }
                    End::Lost(e) => {
                        tracing::warn!(modem = %name, error = %e, "modem lost; reopening");
                        status.set_state(LinkState::Down, Some(e.to_string()));
                        // A modem that worked for a while is retried promptly; one that fails
                        // again and again right after opening backs off further each time.
                        if link.reached_ready {
                            backoff = REOPEN_START;
                        }
                        let wait = if matches!(e, ModemError::Unresponsive) {
                            backoff.max(AFTER_RESET)
                        } else {
                            backoff
                        };
                        backoff = (backoff * 2).min(settings.reopen_max_backoff);
                        wait
                    }
                }
            }
            Err(e) => {
                tracing::warn!(modem = %name, error = %e, retry_in = ?backoff, "cannot open the modem");
                status.set_state(LinkState::Down, Some(e.to_string()));
                let wait = backoff;
                backoff = (backoff * 2).min(settings.reopen_max_backoff);
                wait
            }
        };
        // While down, whatever reaches us goes straight back to the queue.
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = heartbeat.idle(&mut sleep) => break,
                _ = shutdown.cancelled() => break,
                job = jobs.recv() => match job {
                    Some(job) => fail_job(&events, &job, Failure::NotSent, "the modem is not available").await?,
                    None => return Ok(()),
                },
            }
        }
    }
}

/// Hands every queued job back, untried.
async fn hand_back_queued(
    jobs: &mut mpsc::Receiver<SendJob>,
    events: &EventSink,
    why: &str,
) -> Result<(), Closed> {
    while let Ok(job) = jobs.try_recv() {
        fail_job(events, &job, Failure::NotSent, why).await?;
    }
    Ok(())
}

async fn refuse_until_shutdown(
    jobs: &mut mpsc::Receiver<SendJob>,
    events: &EventSink,
    shutdown: &tokio_util::sync::CancellationToken,
    heartbeat: &Heartbeat,
) -> Result<(), Closed> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return hand_back_queued(jobs, events, "the gateway is shutting down").await,
            job = heartbeat.idle(jobs.recv()) => match job {
                Some(job) => fail_job(events, &job, Failure::NotSent, "the modem is blocked").await?,
                None => return Ok(()),
            },
        }
    }
}

async fn fail_job(
    events: &EventSink,
    job: &SendJob,
    failure: Failure,
    reason: &str,
) -> Result<(), Closed> {
    events
        .send_for(
            job,
            ChannelEvent::SendFailed {
                id: job.message.id,
                attempt: job.message.attempts,
                failure,
                reason: reason.to_string(),
                retry_after: None,
            },
        )
        .await
}

/// One opening of the port.
struct Link<'a> {
    settings: &'a ModemSettings,
    events: &'a EventSink,
    status: &'a StatusHandle,
    pacing: &'a mut Pacing,
    /// The channel's loop, for the watchdog.
    heartbeat: &'a Heartbeat,
    next_token: u64,
    /// Initialisation finished on this opening.
    reached_ready: bool,
}

impl Link<'_> {
    async fn drive(
        &mut self,
        port: SerialStream,
        jobs: &mut mpsc::Receiver<SendJob>,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> End {
        let (mut reader, mut writer) = tokio::io::split(port);
        let mut decoder = AtDecoder::new();
        let mut session = Session::new(session_config(self.settings), Instant::now());
        let mut buf = vec![0u8; READ_CHUNK];
        let mut current: Option<Current> = None;
        let (commit_tx, mut commit_rx) = mpsc::channel::<(Slot, bool)>(64);
        let heartbeat = self.heartbeat;
        let result: Result<(), ModemError> = async {
            loop {
                heartbeat.beat();
                // Act on everything the session decided, then start the next part if we may.
                while let Some(output) = session.poll_output() {
                    self.handle(output, &mut session, &mut current, &mut writer, &commit_tx)
                        .await?;
                }
                self.refresh_state(&session);
                let now = Instant::now();
                let pace_at = self.pacing.next_send_at().filter(|t| *t > now);
                if session.can_send()
                    && pace_at.is_none()
                    && let Some(cur) = current.as_mut()
                    && cur.in_flight.is_none()
                {
                    if let Some((part, pdu, len)) = cur.parts.pop_front() {
                        let token = self.next_token;
                        self.next_token += 1;
                        cur.in_flight = Some((token, part));
                        cur.started = true;
                        session.send(token, pdu, len, now);
                        continue;
                    }
                    // Every part went out.
                    current = None;
                }
                let wake = [session.next_deadline(), pace_at]
                    .into_iter()
                    .flatten()
                    .min();
                let sleep_for = wake.map_or(Duration::from_secs(3600), |t| {
                    t.saturating_duration_since(Instant::now())
                });
                let take_job = current.is_none() && session.can_send();
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    // Idle while this select waits; the read branch is always enabled.
                    read = heartbeat.idle(reader.read(&mut buf)) => {
                        let n = read?;
                        if n == 0 {
                            return Err(ModemError::Eof);
                        }
                        decoder.push(buf.get(..n).unwrap_or_default());
                        let now = Instant::now();
                        while let Some(frame) = decoder.next_frame() {
                            tracing::trace!(modem = %self.settings.name, ?frame, "from modem");
                            session.on_frame(frame, now);
                        }
                    }
                    _ = tokio::time::sleep(sleep_for) => session.on_tick(Instant::now()),
                    job = jobs.recv(), if take_job => match job {
                        Some(job) => current = self.start(job).await?,
                        None => return Ok(()),
                    },
                    Some((slot, committed)) = commit_rx.recv() => {
                        session.acknowledge(slot, committed, Instant::now());
                    }
                }
            }
        }
        .await;
        // The part in flight and the rest of the message go back to the queue.
        session.close();
        let reason = match &result {
            Ok(()) => "the gateway is shutting down".to_string(),
            Err(e) => format!("modem {}: {e}", self.settings.name),
        };
        if let Some(cur) = current.take() {
            // A part written and not answered: the modem may have sent it before the line
            // went, so the retry may be a duplicate; the history says so, and the message is
            // marked and counted as a possible duplicate.
            let (failure, reason) = if cur.in_flight.is_some() && result.is_err() {
                (
                    Failure::Unknown,
                    format!("{reason} while sending; the modem may have sent it"),
                )
            } else {
                (cur.failure_if_stopped(), reason.clone())
            };
            if let Err(e) = fail_job(self.events, &cur.job, failure, &reason).await {
                return End::Lost(e.into());
            }
        }
        if let Err(e) = hand_back_queued(jobs, self.events, &reason).await {
            return End::Lost(e.into());
        }
        match result {
            Ok(()) => End::Shutdown,
            Err(e) => {
                if matches!(e, ModemError::Unresponsive) && !self.settings.reset_command.is_empty()
                {
                    let mut line = self.settings.reset_command.clone().into_bytes();
                    line.push(b'\r');
                    // Best effort: a hung modem may not take even this.
                    let write = writer.write_all(&line);
                    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
                    tracing::warn!(modem = %self.settings.name, command = %self.settings.reset_command, "modem reset");
                }
                End::Lost(e)
            }
        }
    }

    /// Up when the session is ready, registered (or registration unknown) and not capped.
    fn refresh_state(&mut self, session: &Session) {
        if !session.is_ready() {
            if self.status.state() == LinkState::Up {
                self.status
                    .set_state(LinkState::Down, Some("initialising".into()));
            }
            return;
        }
        let registration = session.info().registration.as_deref();
        if matches!(
            registration,
            Some("not_registered" | "searching" | "denied")
        ) {
            let why = format!(
                "not registered on a network ({})",
                registration.unwrap_or("")
            );
            self.status.set_state(LinkState::Down, Some(why));
        } else if self.pacing.capped(now_millis()) {
            self.status.set_state(
                LinkState::Paused,
                Some(format!(
                    "daily cap of {} messages reached; resumes at 00:00 UTC",
                    self.pacing.daily_cap
                )),
            );
        } else {
            self.status.set_state(LinkState::Up, None);
        }
    }

    /// Encodes every part of a job; a message that cannot be encoded fails for good.
    async fn start(&mut self, job: SendJob) -> Result<Option<Current>, ModemError> {
        match encode_parts(&job, self.settings) {
            Ok(parts) => Ok(Some(Current {
                job,
                parts: parts.into(),
                in_flight: None,
                started: false,
            })),
            Err(reason) => {
                fail_job(self.events, &job, Failure::Permanent, &reason).await?;
                Ok(None)
            }
        }
    }

    async fn handle(
        &mut self,
        output: Output,
        session: &mut Session,
        current: &mut Option<Current>,
        writer: &mut tokio::io::WriteHalf<SerialStream>,
        commits: &mpsc::Sender<(Slot, bool)>,
    ) -> Result<(), ModemError> {
        match output {
            Output::Write(bytes) => {
                tracing::trace!(modem = %self.settings.name, bytes = %String::from_utf8_lossy(&bytes), "to modem");
                writer.write_all(&bytes).await?;
                writer.flush().await?;
            }
            Output::Ready => {
                self.reached_ready = true;
                tracing::info!(modem = %self.settings.name, info = ?session.info(), "modem ready");
            }
            Output::InfoChanged => {
                let info = session.info().clone();
                let port = self.settings.port.display().to_string();
                self.status.update(|s| {
                    s.modem = Some(crate::channel::ModemInfo { port, ..info });
                });
            }
            Output::Sent { token, reference } => {
                let Some(cur) = current.as_mut() else {
                    return Ok(());
                };
                let Some((_, part)) = cur.in_flight.take_if(|(t, _)| *t == token) else {
                    return Ok(());
                };
                self.pacing.record(Instant::now(), now_millis());
                let remote = remote_id(reference, &cur.job.message.to);
                self.events
                    .send_for(
                        &cur.job,
                        ChannelEvent::Accepted {
                            id: cur.job.message.id,
                            parts: part..=part,
                            remote_id: Some(remote),
                        },
                    )
                    .await?;
            }
            Output::SendFailed { token, error } => {
                let Some(cur) = current.take() else {
                    return Ok(());
                };
                if cur.in_flight.is_some_and(|(t, _)| t != token) {
                    *current = Some(cur);
                    return Ok(());
                }
                let failure = match error {
                    _ if error.is_permanent() => Failure::Permanent,
                    // No answer: the modem may still have sent it.
                    super::session::SendError::Timeout | super::session::SendError::Interrupted => {
                        Failure::Unknown
                    }
                    super::session::SendError::Rejected(_) => Failure::Transient,
                };
                tracing::info!(modem = %self.settings.name, id = %cur.job.message.id, %error, "send failed");
                fail_job(self.events, &cur.job, failure, &error.to_string()).await?;
            }
            Output::Received { pdu, slot } => {
                let event = self.inbound_event(&pdu);
                self.commit(event, slot, commits);
            }
            Output::Report { pdu, slot } => match self.report_event(&pdu) {
                Some(event) => self.commit(event, slot, commits),
                // Not final yet (the SC is still trying) or unreadable: nothing to record.
                None => session.acknowledge(slot, true, Instant::now()),
            },
            Output::Unresponsive => return Err(ModemError::Unresponsive),
            Output::Blocked(why) => return Err(ModemError::Blocked(why)),
            Output::RawDone { .. } => {}
        }
        Ok(())
    }

    /// Commits an event in the background; the session hears of the outcome, and only then
    /// deletes the message from the modem.
    fn commit(&self, event: ChannelEvent, slot: Slot, commits: &mpsc::Sender<(Slot, bool)>) {
        let events = self.events.clone();
        let commits = commits.clone();
        tokio::spawn(async move {
            let committed = events.send_committed(event).await.unwrap_or(false);
            let _ = commits.send((slot, committed)).await;
        });
    }

    fn inbound_event(&self, pdu_hex: &str) -> ChannelEvent {
        let to = self
            .settings
            .number
            .clone()
            .unwrap_or_else(|| self.settings.name.clone());
        let bytes = tpdu::decode_hex(pdu_hex);
        // The same stored SMS read again (after a crash between commit and delete) is the same
        // bytes: the store keeps it once.
        let dedupe = Some(crate::channel::Dedupe::from(
            crate::message::fingerprint(bytes.as_deref().unwrap_or(pdu_hex.as_bytes())).as_str(),
        ));
        let decoded = bytes.and_then(|b| tpdu::decode(&b, true));
        match decoded {
            Ok(Pdu::Deliver(d)) => {
                let text = d.user_data.text.clone().unwrap_or_else(|| {
                    format!("[binary SMS: {}]", tpdu::to_hex(&d.user_data.data))
                });
                ChannelEvent::Inbound {
                    from: d.originator.value.clone(),
                    to,
                    text,
                    in_reply_to: None,
                    part: d.user_data.concat.map(|c| InboundPart {
                        reference: c.reference,
                        total: c.total,
                        seq: c.seq,
                    }),
                    dedupe,
                }
            }
            other => {
                // Kept, not dropped: an operator can still read what came.
                let why = match other {
                    Ok(_) => "not an SMS-DELIVER".to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(modem = %self.settings.name, pdu = pdu_hex, error = %why, "undecodable message from the modem");
                ChannelEvent::Inbound {
                    from: "unknown".into(),
                    to,
                    text: format!("[undecodable SMS ({why}): {pdu_hex}]"),
                    in_reply_to: None,
                    part: None,
                    dedupe,
                }
            }
        }
    }

    fn report_event(&self, pdu_hex: &str) -> Option<ChannelEvent> {
        let decoded = tpdu::decode_hex(pdu_hex).and_then(|b| tpdu::decode(&b, true));
        let report = match decoded {
            Ok(Pdu::StatusReport(r)) => r,
            Ok(_) => return None,
            Err(e) => {
                tracing::warn!(modem = %self.settings.name, pdu = pdu_hex, error = %e, "undecodable status report");
                return None;
            }
        };
        let outcome = match report.outcome() {
            ReportOutcome::Delivered => ReceiptOutcome::Delivered,
            ReportOutcome::Failed => ReceiptOutcome::Failed,
            ReportOutcome::Pending => return None,
        };
        Some(ChannelEvent::Receipt {
            remote_id: remote_id(report.reference, &report.recipient.value),
            outcome,
            reason: (outcome == ReceiptOutcome::Failed)
                .then(|| format!("status report TP-ST 0x{:02X}", report.status)),
        })
    }
}

/// The PDUs of the parts a job must send, in order.
fn encode_parts(
    job: &SendJob,
    settings: &ModemSettings,
) -> Result<Vec<(u8, String, usize)>, String> {
    let m = &job.message;
    let segmented = gsm7::segment_as(&m.text, m.encoding, usize::MAX)
        .map_err(|e| format!("cannot encode the text: {e}"))?;
    let total = u8::try_from(segmented.parts.len()).map_err(|_| "too many parts".to_string())?;
    // Stable across attempts, so parts resent later still join the ones sent before.
    let concat_reference = m.id.to_bytes().iter().fold(0u8, |a, b| a ^ b);
    let remaining_ms = m.expires_at.saturating_sub(now_millis());
    let validity =
        (remaining_ms > 0).then(|| Duration::from_millis(u64::try_from(remaining_ms).unwrap_or(0)));
    let mut out = Vec::with_capacity(job.parts_to_send.len());
    for &part in &job.parts_to_send {
        let payload = segmented
            .parts
            .get(usize::from(part))
            .ok_or_else(|| format!("part {part} does not exist"))?;
        let spec = SubmitSpec {
            destination: &m.to,
            payload: payload.into(),
            concat: (total > 1).then_some(Concat {
                reference: u16::from(concat_reference),
                total,
                seq: part + 1,
                sixteen_bit: false,
            }),
            reference: 0,
            status_report: settings.status_reports,
            validity,
            smsc: settings.smsc.as_deref(),
            reject_duplicates: false,
            class: None,
        };
        let encoded =
            tpdu::encode_submit(&spec).map_err(|e| format!("cannot encode the PDU: {e}"))?;
        out.push((part, encoded.to_hex(), encoded.tpdu_len));
    }
    Ok(out)
}

/// What `parla modem probe` found.
#[derive(Debug, serde::Serialize)]
pub struct ProbeReport {
    /// The port and the line settings used (a pty or USB modem takes any; a real serial line
    /// only its own).
    pub port: String,
    /// Line speed used.
    pub baud_rate: u32,
    /// Flow control used.
    pub flow_control: FlowControl,
    /// Whether initialisation finished: the modem could send with these settings.
    pub ready: bool,
    /// What stopped it, if it did not finish.
    pub problem: Option<String>,
    /// Model, SIM, signal, registration, operator, storage, indication mode.
    pub modem: crate::channel::ModemInfo,
    /// Answers to capability queries, by command.
    pub capabilities: std::collections::BTreeMap<String, Vec<String>>,
}

/// Capability queries `probe` asks after initialisation.
const PROBE_QUERIES: [&str; 4] = ["AT+CPMS=?", "AT+CNMI=?", "AT+CSCA?", "AT+CSMS?"];

/// Opens a modem, initialises it as the channel would (nothing is sent or deleted), asks a few
/// capability queries and reports. Gives up after `limit`.
pub async fn probe(settings: &ModemSettings, limit: Duration) -> Result<ProbeReport, ModemError> {
    let port = open_port(settings)?;
    let (mut reader, mut writer) = tokio::io::split(port);
    let mut decoder = AtDecoder::new();
    let mut session = Session::new(session_config(settings), Instant::now());
    let mut report = ProbeReport {
        port: settings.port.display().to_string(),
        baud_rate: settings.baud_rate,
        flow_control: settings.flow_control,
        ready: false,
        problem: None,
        modem: crate::channel::ModemInfo::default(),
        capabilities: Default::default(),
    };
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = vec![0u8; READ_CHUNK];
    let mut waiting = 0usize;
    loop {
        while let Some(output) = session.poll_output() {
            match output {
                Output::Write(bytes) => {
                    writer.write_all(&bytes).await?;
                    writer.flush().await?;
                }
                Output::Ready => {
                    report.ready = true;
                    for (token, query) in PROBE_QUERIES.iter().enumerate() {
                        session.raw(token as u64, (*query).to_string(), Instant::now());
                    }
                    waiting = PROBE_QUERIES.len();
                }
                Output::RawDone {
                    token,
                    lines,
                    result,
                } => {
                    let mut answer = lines;
                    if let Some(r) = result.filter(|r| !r.is_ok()) {
                        answer.push(super::session::describe(&r));
                    } else if answer.is_empty() {
                        answer.push("OK".into());
                    }
                    let query = PROBE_QUERIES.get(token as usize).copied().unwrap_or("?");
                    report.capabilities.insert(query.to_string(), answer);
                    waiting = waiting.saturating_sub(1);
                }
                Output::Blocked(why) => report.problem = Some(why),
                Output::Unresponsive => {
                    report.problem = Some(
                        "the modem does not answer AT: check the port, baud rate and flow control"
                            .into(),
                    )
                }
                _ => {}
            }
        }
        report.modem = session.info().clone();
        report.modem.port = report.port.clone();
        if report.problem.is_some() || (report.ready && waiting == 0) {
            return Ok(report);
        }
        let wake = session.next_deadline().map_or(Duration::from_secs(1), |t| {
            t.saturating_duration_since(Instant::now())
        });
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                report.problem.get_or_insert_with(|| "gave up waiting for the modem".into());
                return Ok(report);
            }
            read = reader.read(&mut buf) => {
                let n = read?;
                if n == 0 {
                    return Err(ModemError::Eof);
                }
                decoder.push(buf.get(..n).unwrap_or_default());
                while let Some(frame) = decoder.next_frame() {
                    session.on_frame(frame, Instant::now());
                }
            }
            _ = tokio::time::sleep(wake) => session.on_tick(Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_ids_match_national_and_international_recipients() {
        assert_eq!(remote_id(64, "+919790199137"), "64/90199137");
        assert_eq!(remote_id(64, "09790199137"), remote_id(64, "+919790199137"));
        assert_eq!(remote_id(7, "123"), "7/123");
        assert_ne!(remote_id(7, "+391111"), remote_id(8, "+391111"));
    }

    #[test]
    fn pacing_spaces_sends_and_caps_the_day() {
        let settings = ModemSettings {
            min_send_interval: Duration::from_secs(2),
            daily_cap: 2,
            ..ModemSettings::default()
        };
        let mut p = Pacing::new(&settings);
        let t0 = Instant::now();
        let day = p.day * DAY_MS;
        assert_eq!(p.next_send_at(), None);
        assert!(!p.capped(day + 1));
        p.record(t0, day + 1);
        assert_eq!(p.next_send_at(), Some(t0 + Duration::from_secs(2)));
        p.record(t0, day + 2);
        assert!(p.capped(day + 3));
        assert!(!p.capped(day + DAY_MS), "a new day starts a new count");
    }
}
