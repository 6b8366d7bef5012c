//! The simulated SMSC on TCP: a listener task, one task per connection owning its socket, and a
//! timer task, all driving the one shared [`SmscCore`] behind a mutex that is never held
//! across an `.await`.
//!
//! A connection task reads what is there, decodes every whole frame, hands them to the core in
//! one locked call, and writes all the answers with one write: no flush per PDU. Output the
//! core makes for other connections (a receipt that became due, an MO) is left in their
//! outboxes and their tasks are woken through a [`Notify`]. Events go to a bounded channel
//! with `try_send`: a printer that falls behind loses events (counted), it never slows the
//! SMSC.

// Frames come straight off the wire: let the compiler hold the "never panics" promise.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::core::{
    CloseKind, ConnId, Counters, MoError, MoMethod, SHUTDOWN_GRACE, SmscConfig, SmscCore, SmscEvent,
};
use crate::smpp::frame::{Frame, FrameError, SmppCodec};

/// Connections served at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 1024;
/// Events waiting for the printer; past it events are dropped and counted.
pub const EVENT_QUEUE: usize = 16 * 1024;
/// Octets waiting to be written to a peer beyond which its requests are no longer read.
const MAX_UNWRITTEN: usize = 1024 * 1024;
/// Read buffer of a connection.
const READ_BUFFER: usize = 64 * 1024;

/// Why the simulator could not start.
#[derive(Debug, Error)]
pub enum SmscError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
}

/// What the tasks share.
struct Shared {
    state: Mutex<State>,
    /// Wakes the timer task when an earlier deadline appeared.
    timer: Notify,
    /// Signalled when the last connection is gone.
    idle: Notify,
}

struct State {
    core: SmscCore,
    wakers: HashMap<ConnId, Arc<Notify>>,
    /// The deadline the timer task sleeps until.
    armed: Option<Instant>,
    events: mpsc::Sender<SmscEvent>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug; the state is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// After every call into the core: wakes connections with new output (but `current`,
    /// which drains its own), hands events to the printer and re-arms the timer.
    fn dispatch(&self, state: &mut State, current: Option<ConnId>) {
        while let Some(conn) = state.core.poll_woken() {
            if Some(conn) != current
                && let Some(notify) = state.wakers.get(&conn)
            {
                notify.notify_one();
            }
        }
        let mut dropped = 0;
        while let Some(event) = state.core.poll_event() {
            if state.events.try_send(event).is_err() {
                dropped += 1;
            }
        }
        if dropped > 0 {
            state.core.note_events_dropped(dropped);
        }
        let next = state.core.next_deadline();
        if let Some(next) = next
            && state.armed.is_none_or(|armed| next < armed)
        {
            state.armed = Some(next);
            self.timer.notify_one();
        }
        if state.core.connections_open() == 0 {
            self.idle.notify_waiters();
        }
    }

    /// Runs `f` on the core under the lock, then dispatches.
    fn with_core<T>(&self, f: impl FnOnce(&mut SmscCore) -> T) -> T {
        let mut state = self.lock();
        let out = f(&mut state.core);
        self.dispatch(&mut state, None);
        out
    }
}

fn now() -> Instant {
    Instant::now()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A running simulated SMSC.
pub struct SmscHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    events: Option<mpsc::Receiver<SmscEvent>>,
    /// Stops accepting connections.
    accept: CancellationToken,
    /// Stops every task.
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl std::fmt::Debug for SmscHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmscHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Binds `listen` and starts serving.
pub async fn spawn(listen: SocketAddr, config: SmscConfig) -> Result<SmscHandle, SmscError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| SmscError::Listen {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| SmscError::Listen {
        addr: listen,
        source,
    })?;
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            core: SmscCore::new(config, now(), unix_now()),
            wakers: HashMap::new(),
            armed: None,
            events: events_tx,
        }),
        timer: Notify::new(),
        idle: Notify::new(),
    });
    let cancel = CancellationToken::new();
    let accept = cancel.child_token();
    let tracker = TaskTracker::new();
    tracker.spawn(run_timer(shared.clone(), cancel.clone()));
    tracker.spawn(run_listener(
        listener,
        shared.clone(),
        accept.clone(),
        cancel.clone(),
        tracker.clone(),
    ));
    Ok(SmscHandle {
        addr,
        shared,
        events: Some(events_rx),
        accept,
        cancel,
        tracker,
    })
}

impl SmscHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The events, once (`None` after the first call).
    pub fn take_events(&mut self) -> Option<mpsc::Receiver<SmscEvent>> {
        self.events.take()
    }

    /// The next `n` submit_sm are answered ESME_RTHROTTLED.
    pub fn throttle(&self, n: u32) {
        self.shared.with_core(|core| core.throttle(n));
    }

    /// The next `n` submit_sm are answered with `status`.
    pub fn fail(&self, n: u32, status: u32) {
        self.shared.with_core(|core| core.fail(n, status));
    }

    /// The `k`-th submit_sm accepted from now on gets an UNDELIV receipt.
    pub fn undeliver(&self, k: u32) {
        self.shared.with_core(|core| core.undeliver(k));
    }

    /// Binds are refused with `status`, or judged normally again (`None`).
    pub fn refuse_binds(&self, status: Option<u32>) {
        self.shared.with_core(|core| core.refuse_binds(status));
    }

    /// Stops or resumes answering (see [`SmscCore::set_stalled`]).
    pub fn set_stalled(&self, stalled: bool) {
        self.shared
            .with_core(|core| core.set_stalled(stalled, now()));
    }

    /// Closes every connection at once; returns how many.
    pub fn drop_all(&self) -> usize {
        self.shared.with_core(SmscCore::drop_all)
    }

    /// Queues an MO message (see [`SmscCore::send_mo`]).
    pub fn send_mo(
        &self,
        from: &str,
        to: &str,
        method: MoMethod,
        text: &str,
    ) -> Result<(u64, usize), MoError> {
        self.shared
            .with_core(|core| core.send_mo(from, to, method, text, now()))
    }

    /// Counters now.
    pub fn counters(&self) -> Counters {
        self.shared.lock().core.counters()
    }

    /// Stops: bound sessions get an unbind and up to [`SHUTDOWN_GRACE`] to answer it, then
    /// every connection is closed and every task has ended.
    pub async fn shutdown(self) {
        self.accept.cancel();
        let idle = self.shared.idle.notified();
        tokio::pin!(idle);
        idle.as_mut().enable();
        let open = self.shared.with_core(|core| {
            core.begin_shutdown(now());
            core.connections_open()
        });
        if open > 0 {
            // The core closes what did not answer after the grace; this is a backstop.
            let _ = tokio::time::timeout(SHUTDOWN_GRACE * 2, idle).await;
        }
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

async fn run_timer(shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        let deadline = {
            let mut state = shared.lock();
            state.armed = state.core.next_deadline();
            state.armed
        };
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = shared.timer.notified() => continue,
            () = sleep => {}
        }
        let mut state = shared.lock();
        state.core.handle_timeout(now());
        shared.dispatch(&mut state, None);
    }
}

async fn run_listener(
    listener: TcpListener,
    shared: Arc<Shared>,
    accept: CancellationToken,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (stream, peer) = tokio::select! {
            () = accept.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // EMFILE and the like: wait a little rather than spin.
                    tracing::warn!(%error, "sim smsc: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let notify = Arc::new(Notify::new());
        let conn = {
            let mut state = shared.lock();
            if state.core.connections_open() >= MAX_CONNECTIONS {
                let message = format!("connection from {peer} refused: {MAX_CONNECTIONS} open");
                if state.events.try_send(SmscEvent::Error { message }).is_err() {
                    state.core.note_events_dropped(1);
                }
                continue;
            }
            let conn = state.core.handle_connect(&peer.to_string());
            state.wakers.insert(conn, notify.clone());
            shared.dispatch(&mut state, Some(conn));
            conn
        };
        tracker.spawn(run_connection(
            stream,
            conn,
            shared.clone(),
            notify,
            cancel.clone(),
        ));
    }
}

/// Serves one connection until it closes; generic so tests can use an in-memory pipe.
async fn run_connection<S>(
    stream: S,
    conn: ConnId,
    shared: Arc<Shared>,
    notify: Arc<Notify>,
    cancel: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut codec = SmppCodec::new();
    let mut rbuf = BytesMut::with_capacity(READ_BUFFER);
    let mut wbuf = BytesMut::with_capacity(READ_BUFFER);
    let mut frames: Vec<Frame> = Vec::new();
    let mut commands = Vec::new();
    let mut framing_lost: Option<Option<u32>> = None;
    let mut closing = false;
    // Bind responses may already wait (none yet, but a shutdown may have closed it).
    let mut exchange = true;
    let reason: String = loop {
        if exchange {
            exchange = false;
            let close = {
                let mut state = shared.lock();
                let at = now();
                for frame in frames.drain(..) {
                    state.core.handle_frame(conn, frame, at);
                }
                if let Some(seq) = framing_lost.take() {
                    state.core.handle_framing_lost(conn, seq);
                }
                let close = state.core.poll_transmit(conn, &mut commands);
                shared.dispatch(&mut state, Some(conn));
                close
            };
            if close == Some(CloseKind::Abrupt) {
                break "dropped by the simulator".into();
            }
            for command in commands.drain(..) {
                if let Err(error) = codec.encode(&command, &mut wbuf) {
                    tracing::warn!(%error, "sim smsc: cannot encode a response");
                }
            }
            if close == Some(CloseKind::Graceful) {
                closing = true;
            }
        }
        if closing && wbuf.is_empty() {
            let _ = writer.shutdown().await;
            break "closed by the simulator".into();
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => break "simulator stopped".into(),
            () = notify.notified() => exchange = true,
            written = writer.write_buf(&mut wbuf), if !wbuf.is_empty() => match written {
                Ok(0) => break "peer stopped reading (write returned 0)".into(),
                Ok(_) => {}
                Err(error) => break format!("write failed: {error}"),
            },
            read = reader.read_buf(&mut rbuf), if !closing && wbuf.len() < MAX_UNWRITTEN => {
                match read {
                    Ok(0) => break "peer closed the connection".into(),
                    Ok(_) => {}
                    Err(error) => break format!("read failed: {error}"),
                }
                loop {
                    match codec.decode(&mut rbuf) {
                        Ok(Some(frame)) => frames.push(frame),
                        Ok(None) => break,
                        Err(FrameError::BadLength { sequence_number, .. }) => {
                            framing_lost = Some(sequence_number);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                exchange = !frames.is_empty() || framing_lost.is_some();
            }
        }
    };
    let mut state = shared.lock();
    state.wakers.remove(&conn);
    state.core.handle_disconnect(conn, &reason, now());
    shared.dispatch(&mut state, Some(conn));
}
