//! The runner: one tokio task owns a pseudo-terminal master and drives a [`SimModemCore`];
//! the host opens the slave (`/dev/pts/N`, or a symlink to it) like a USB modem's tty.
//!
//! No slave fd is kept open here. Keeping one would hide the host's close from the master, but
//! it would also keep the tty alive with the `TIOCEXCL` flag serialport sets on open, so a
//! non-root host could never reopen the port (`EBUSY`). Instead, reading the master while no
//! host has the slave open gives `EIO` (Linux): the runner then counts the host as gone, drops
//! what the modem prints (a USB modem's output with the port closed is lost too) and probes
//! every [`PROBE_INTERVAL`] until reads work again. Before the first open the master reads
//! `EAGAIN`, so output written then waits in the pty for the first host.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};
use thiserror::Error;
use tokio::io::unix::AsyncFd;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::core::{
    Counters, ReceiveError, ReceiveOptions, SentSms, SimEvent, SimModemConfig, SimModemCore,
};

/// How often a runner whose host closed the port checks whether one opened it again.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// Most bytes waiting for a host that does not read; older ones are dropped past it.
const MAX_BACKLOG: usize = 64 * 1024;
/// Control requests waiting for the task.
const CONTROL_QUEUE: usize = 32;
/// Events a slow subscriber may fall behind by before it misses some.
const EVENT_QUEUE: usize = 1024;

/// Why a handle request failed.
#[derive(Debug, Error)]
pub enum SimError {
    /// The modem task has ended (shutdown, or every handle dropped).
    #[error("the simulated modem has shut down")]
    Closed,
    /// The text could not be delivered.
    #[error(transparent)]
    Receive(#[from] ReceiveError),
    /// Opening the pty or pointing the link failed.
    #[error("simulated modem pty: {0}")]
    Io(#[from] io::Error),
}

enum Control {
    Receive {
        from: String,
        text: String,
        options: Option<ReceiveOptions>,
        reply: oneshot::Sender<Result<usize, ReceiveError>>,
    },
    Sent(oneshot::Sender<Vec<SentSms>>),
    Counters(oneshot::Sender<Counters>),
    Stall(bool, oneshot::Sender<()>),
    FailNext(u32, u16, oneshot::Sender<()>),
    Garbage(u32, oneshot::Sender<()>),
    ReportNow(u8, oneshot::Sender<bool>),
    Vanish(oneshot::Sender<()>),
    Reappear(oneshot::Sender<io::Result<PathBuf>>),
    Shutdown(oneshot::Sender<()>),
}

/// Paths the handle reads without a round trip to the task.
#[derive(Debug, Default)]
struct Paths {
    /// The link when one was asked for, else the pts.
    public: PathBuf,
    /// The `/dev/pts/N` of the current pty.
    pts: PathBuf,
}

/// Talks to a running simulated modem; cheap to clone. The task ends at
/// [`shutdown`](Self::shutdown) or when the last handle is dropped.
#[derive(Clone)]
pub struct SimModemHandle {
    control: mpsc::Sender<Control>,
    paths: Arc<Mutex<Paths>>,
    events: broadcast::Sender<SimEvent>,
}

impl std::fmt::Debug for SimModemHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimModemHandle")
            .field("path", &self.path())
            .finish_non_exhaustive()
    }
}

impl SimModemHandle {
    fn read_paths<T>(&self, read: impl FnOnce(&Paths) -> T) -> T {
        match self.paths.lock() {
            Ok(paths) => read(&paths),
            Err(poisoned) => read(&poisoned.into_inner()),
        }
    }

    /// Where the host opens the modem: the link when one was given, else the pts path.
    pub fn path(&self) -> PathBuf {
        self.read_paths(|p| p.public.clone())
    }

    /// The `/dev/pts/N` of the current pty (changes at [`reappear`](Self::reappear)).
    pub fn pts_path(&self) -> PathBuf {
        self.read_paths(|p| p.pts.clone())
    }

    /// Events from now on (sent, report, received, refused).
    pub fn subscribe(&self) -> broadcast::Receiver<SimEvent> {
        self.events.subscribe()
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Control,
    ) -> Result<T, SimError> {
        let (reply, answer) = oneshot::channel();
        self.control
            .send(make(reply))
            .await
            .map_err(|_| SimError::Closed)?;
        answer.await.map_err(|_| SimError::Closed)
    }

    /// A text from `from` arrives (see [`SimModemCore::receive_sms`]); returns the part count.
    pub async fn receive_sms(&self, from: &str, text: &str) -> Result<usize, SimError> {
        self.receive(from, text, None).await
    }

    /// [`receive_sms`](Self::receive_sms) with explicit part-order options.
    pub async fn receive_sms_with(
        &self,
        from: &str,
        text: &str,
        options: ReceiveOptions,
    ) -> Result<usize, SimError> {
        self.receive(from, text, Some(options)).await
    }

    async fn receive(
        &self,
        from: &str,
        text: &str,
        options: Option<ReceiveOptions>,
    ) -> Result<usize, SimError> {
        let (from, text) = (from.to_owned(), text.to_owned());
        Ok(self
            .request(|reply| Control::Receive {
                from,
                text,
                options,
                reply,
            })
            .await??)
    }

    /// Every SUBMIT accepted so far.
    pub async fn sent(&self) -> Result<Vec<SentSms>, SimError> {
        self.request(Control::Sent).await
    }

    /// Running totals.
    pub async fn counters(&self) -> Result<Counters, SimError> {
        self.request(Control::Counters).await
    }

    /// Hangs the modem or brings it back (see [`SimModemCore::set_stalled`]).
    pub async fn set_stalled(&self, stalled: bool) -> Result<(), SimError> {
        self.request(|reply| Control::Stall(stalled, reply)).await
    }

    /// The next `n` sends answer `+CMS ERROR: <cms_code>`.
    pub async fn fail_next_sends(&self, n: u32, cms_code: u16) -> Result<(), SimError> {
        self.request(|reply| Control::FailNext(n, cms_code, reply))
            .await
    }

    /// Sends `lines` lines of noise to the host (see [`SimModemCore::garbage`]).
    ///
    /// [`SimModemCore::garbage`]: super::core::SimModemCore::garbage
    pub async fn garbage(&self, lines: u32) -> Result<(), SimError> {
        self.request(|reply| Control::Garbage(lines, reply)).await
    }

    /// Produces the status report for TP-MR `reference` now; false when none is pending.
    pub async fn report_now(&self, reference: u8) -> Result<bool, SimError> {
        self.request(|reply| Control::ReportNow(reference, reply))
            .await
    }

    /// Unplugs the modem: the master is closed (the host reads EOF or `EIO`, writes fail) and
    /// the link removed. The modem keeps its memories and keeps receiving meanwhile.
    pub async fn vanish(&self) -> Result<(), SimError> {
        self.request(Control::Vanish).await
    }

    /// Plugs the modem in again on a new pty and re-points the link; returns
    /// [`path`](Self::path). Like a replugged USB modem it power-cycles: settings and PIN
    /// state reset and `RDY` follows; memories, the TP-MR counter and pending reports survive.
    /// Also valid without a [`vanish`](Self::vanish) first (an unplug and replug at once).
    pub async fn reappear(&self) -> Result<PathBuf, SimError> {
        Ok(self.request(Control::Reappear).await??)
    }

    /// Stops the task, closes the pty and removes the link.
    pub async fn shutdown(&self) -> Result<(), SimError> {
        self.request(Control::Shutdown).await
    }
}

/// Starts a simulated modem on a new pty; with `link`, a symlink there points to the pts
/// (an existing symlink is replaced, anything else is an error). A config without
/// `clock_start_unix` gets the system clock.
pub async fn spawn(
    mut config: SimModemConfig,
    link: Option<PathBuf>,
) -> io::Result<SimModemHandle> {
    if config.clock_start_unix.is_none() {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        config.clock_start_unix = Some(i64::try_from(unix).unwrap_or(i64::MAX));
    }
    let pty = Pty::open()?;
    if let Some(link) = &link {
        point_link(link, &pty.pts)?;
    }
    let paths = Arc::new(Mutex::new(Paths {
        public: link.clone().unwrap_or_else(|| pty.pts.clone()),
        pts: pty.pts.clone(),
    }));
    let (control, requests) = mpsc::channel(CONTROL_QUEUE);
    let (events, _) = broadcast::channel(EVENT_QUEUE);
    let runner = Runner {
        core: SimModemCore::new(config, now()),
        pty: Some(pty),
        link,
        host: true,
        out: VecDeque::new(),
        paths: Arc::clone(&paths),
        events: events.clone(),
    };
    tokio::spawn(runner.run(requests));
    Ok(SimModemHandle {
        control,
        paths,
        events,
    })
}

/// The runtime's clock as std time, so tests with paused tokio time stay consistent.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// The master side of a pty pair.
struct Pty {
    master: Master,
    pts: PathBuf,
}

/// The master fd, watched by the reactor while a host is there. Tokio keeps a hangup
/// ("read closed") sticky for the life of a registration, so after the host closes the slave
/// the fd is taken out of the reactor and registered afresh when a host is back; otherwise
/// every later wait would return at once.
#[derive(Default)]
enum Master {
    Watched(AsyncFd<OwnedFd>),
    Idle(OwnedFd),
    /// Only while switching, or after a failed registration.
    #[default]
    Gone,
}

impl Pty {
    fn open() -> io::Result<Pty> {
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
        grantpt(&master)?;
        unlockpt(&master)?;
        let pts = PathBuf::from(OsString::from_vec(
            ptsname(&master, Vec::new())?.into_bytes(),
        ));
        // Raw before any byte flows: termios set through the master applies to the pair
        // (Linux), so nothing is echoed or translated even if the host never sets raw mode.
        let mut termios = tcgetattr(&master)?;
        termios.make_raw();
        tcsetattr(&master, OptionalActions::Now, &termios)?;
        rustix::io::ioctl_fionbio(&master, true)?;
        let mut pty = Pty {
            master: Master::Idle(master),
            pts,
        };
        pty.watch()?;
        Ok(pty)
    }

    fn watched(&self) -> Option<&AsyncFd<OwnedFd>> {
        match &self.master {
            Master::Watched(fd) => Some(fd),
            _ => None,
        }
    }

    /// Registers the master with the reactor (again).
    fn watch(&mut self) -> io::Result<()> {
        match std::mem::take(&mut self.master) {
            Master::Idle(fd) => {
                // SAFETY: an `OwnedFd` owns its descriptor: it stays open and `as_raw_fd`
                // returns the same one until the `AsyncFd` drops it or gives it back with
                // `into_inner`, which is all `register` asks. (The safe `AsyncFd::new` is
                // deprecated since tokio 1.54 for not being able to promise this.)
                match unsafe { AsyncFd::register(fd) } {
                    Ok(watched) => self.master = Master::Watched(watched),
                    Err(error) => {
                        let (fd, cause) = error.into_parts();
                        self.master = Master::Idle(fd);
                        return Err(cause);
                    }
                }
            }
            other => self.master = other,
        }
        Ok(())
    }

    /// Takes the master out of the reactor (it stays open).
    fn unwatch(&mut self) {
        self.master = match std::mem::take(&mut self.master) {
            Master::Watched(fd) => Master::Idle(fd.into_inner()),
            other => other,
        };
    }

    /// A non-blocking read straight from the fd, watched or not.
    fn read_now(&self, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match &self.master {
            Master::Watched(fd) => rustix::io::read(fd.get_ref(), buf),
            Master::Idle(fd) => rustix::io::read(fd, buf),
            Master::Gone => Err(rustix::io::Errno::BADF),
        }
    }
}

/// What waiting for input gave.
enum ReadOutcome {
    /// Bytes from the host (0: end of file).
    Data(usize),
    /// A hangup was seen but the read would block: the host closed and opened the port again
    /// in between. The registration must be renewed.
    Reopened,
}

/// Reads what the host wrote, waiting for it.
async fn read_some(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<ReadOutcome> {
    loop {
        let mut guard = fd.readable().await?;
        let hangup = guard.ready().is_read_closed();
        match guard.try_io(|inner| rustix::io::read(inner.get_ref(), &mut *buf).map_err(Into::into))
        {
            Ok(result) => return result.map(ReadOutcome::Data),
            Err(_) if hangup => return Ok(ReadOutcome::Reopened),
            Err(_) => {}
        }
    }
}

/// Writes some of `data`, waiting until the pty takes it.
async fn write_some(fd: &AsyncFd<OwnedFd>, data: &[u8]) -> io::Result<usize> {
    loop {
        let mut guard = fd.writable().await?;
        if let Ok(result) =
            guard.try_io(|inner| rustix::io::write(inner.get_ref(), data).map_err(Into::into))
        {
            return result;
        }
    }
}

static LINK_SEQ: AtomicU64 = AtomicU64::new(0);

/// Points `link` at `target` atomically (a temporary symlink renamed over it).
fn point_link(link: &Path, target: &Path) -> io::Result<()> {
    if let Ok(meta) = std::fs::symlink_metadata(link)
        && !meta.file_type().is_symlink()
    {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a symlink", link.display()),
        ));
    }
    let name = link
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = link.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        LINK_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Removes `link` if it is a symlink (never a file someone put there since).
fn remove_link(link: &Path) {
    if std::fs::symlink_metadata(link).is_ok_and(|m| m.file_type().is_symlink())
        && let Err(error) = std::fs::remove_file(link)
    {
        tracing::warn!(%error, link = %link.display(), "sim modem: cannot remove link");
    }
}

/// The task's state.
struct Runner {
    core: SimModemCore,
    /// `None` while vanished.
    pty: Option<Pty>,
    link: Option<PathBuf>,
    /// False after the master read `EIO` (no host has the slave open) until a probe succeeds.
    host: bool,
    out: VecDeque<u8>,
    paths: Arc<Mutex<Paths>>,
    events: broadcast::Sender<SimEvent>,
}

/// What a select round produced.
enum Wake {
    Control(Option<Control>),
    Read(io::Result<ReadOutcome>),
    Wrote(io::Result<usize>),
    Probe,
    Timer,
}

impl Runner {
    async fn run(mut self, mut requests: mpsc::Receiver<Control>) {
        let mut buf = vec![0u8; 4096];
        loop {
            self.pump();
            let deadline = self
                .core
                .next_deadline()
                .map(tokio::time::Instant::from_std);
            let master = self.pty.as_ref().and_then(Pty::watched);
            let reading = master.is_some() && self.host;
            let writing = reading && !self.out.is_empty();
            let probing = self.pty.is_some() && !self.host;
            let (front, _) = self.out.as_slices();
            let wake = tokio::select! {
                request = requests.recv() => Wake::Control(request),
                result = async {
                    match master {
                        Some(master) => read_some(master, &mut buf).await,
                        None => std::future::pending().await,
                    }
                }, if reading => Wake::Read(result),
                result = async {
                    match master {
                        Some(master) => write_some(master, front).await,
                        None => std::future::pending().await,
                    }
                }, if writing => Wake::Wrote(result),
                () = tokio::time::sleep(PROBE_INTERVAL), if probing => Wake::Probe,
                () = async {
                    match deadline {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => Wake::Timer,
            };
            match wake {
                Wake::Control(None) => break,
                Wake::Control(Some(request)) => {
                    if !self.control(request) {
                        break;
                    }
                }
                Wake::Read(result) => self.read_result(result, &buf),
                Wake::Wrote(Ok(n)) => {
                    self.out.drain(..n.min(self.out.len()));
                }
                Wake::Wrote(Err(error)) => {
                    tracing::debug!(%error, "sim modem: write failed; host gone");
                    self.host_gone();
                }
                Wake::Probe => self.probe(&mut buf),
                Wake::Timer => {}
            }
        }
        self.pty = None;
        if let Some(link) = &self.link {
            remove_link(link);
        }
    }

    /// Runs due timers and moves the core's output and events out.
    fn pump(&mut self) {
        self.core.tick(now());
        while let Some(bytes) = self.core.poll_output() {
            if self.pty.is_some() && self.host {
                self.out.extend(bytes);
            }
        }
        if self.out.len() > MAX_BACKLOG {
            let excess = self.out.len() - MAX_BACKLOG;
            self.out.drain(..excess);
            tracing::debug!(excess, "sim modem: host does not read; output dropped");
        }
        while let Some(event) = self.core.poll_event() {
            // No subscriber is fine: events are for whoever listens.
            let _ = self.events.send(event);
        }
    }

    fn read_result(&mut self, result: io::Result<ReadOutcome>, buf: &[u8]) {
        match result {
            Ok(ReadOutcome::Data(n)) if n > 0 => {
                if let Some(bytes) = buf.get(..n) {
                    self.core.input(bytes, now());
                }
            }
            Ok(ReadOutcome::Reopened) => {
                if let Some(pty) = &mut self.pty {
                    pty.unwatch();
                    if let Err(error) = pty.watch() {
                        tracing::warn!(%error, "sim modem: cannot watch the pty");
                    }
                }
            }
            Ok(ReadOutcome::Data(_)) => self.host_gone(),
            Err(error) => {
                // EIO: the last host fd on the slave was closed.
                tracing::debug!(%error, "sim modem: host closed the port");
                self.host_gone();
            }
        }
    }

    fn host_gone(&mut self) {
        self.host = false;
        self.out.clear();
        if let Some(pty) = &mut self.pty {
            pty.unwatch();
        }
    }

    /// While no host is there: a read that gives data or `EAGAIN` means one opened the port.
    fn probe(&mut self, buf: &mut [u8]) {
        let Some(pty) = &mut self.pty else { return };
        let n = match pty.read_now(&mut *buf) {
            Ok(n) if n > 0 => n,
            Err(rustix::io::Errno::AGAIN) => 0,
            _ => return,
        };
        if let Err(error) = pty.watch() {
            tracing::warn!(%error, "sim modem: cannot watch the pty");
            return;
        }
        self.host = true;
        if let Some(bytes) = buf.get(..n) {
            self.core.input(bytes, now());
        }
    }

    /// Handles one request; false to stop.
    fn control(&mut self, request: Control) -> bool {
        match request {
            Control::Receive {
                from,
                text,
                options,
                reply,
            } => {
                let result = match options {
                    Some(options) => self.core.receive_sms_with(&from, &text, options, now()),
                    None => self.core.receive_sms(&from, &text, now()),
                };
                let _ = reply.send(result);
            }
            Control::Sent(reply) => {
                let _ = reply.send(self.core.sent().to_vec());
            }
            Control::Counters(reply) => {
                let _ = reply.send(self.core.counters());
            }
            Control::Stall(stalled, reply) => {
                self.core.set_stalled(stalled);
                let _ = reply.send(());
            }
            Control::FailNext(n, code, reply) => {
                self.core.fail_next_sends(n, code);
                let _ = reply.send(());
            }
            Control::Garbage(lines, reply) => {
                self.core.garbage(lines, now());
                let _ = reply.send(());
            }
            Control::ReportNow(reference, reply) => {
                let _ = reply.send(self.core.report_now(reference, now()));
            }
            Control::Vanish(reply) => {
                self.vanish();
                let _ = reply.send(());
            }
            Control::Reappear(reply) => {
                let _ = reply.send(self.reappear());
            }
            Control::Shutdown(reply) => {
                let _ = reply.send(());
                return false;
            }
        }
        true
    }

    fn vanish(&mut self) {
        self.pty = None;
        self.out.clear();
        if let Some(link) = &self.link {
            remove_link(link);
        }
    }

    fn reappear(&mut self) -> io::Result<PathBuf> {
        // Close the old master first so the host of the old pty sees the unplug.
        self.vanish();
        let pty = Pty::open()?;
        if let Some(link) = &self.link {
            point_link(link, &pty.pts)?;
        }
        let public = self.link.clone().unwrap_or_else(|| pty.pts.clone());
        match self.paths.lock() {
            Ok(mut paths) => {
                paths.public = public.clone();
                paths.pts = pty.pts.clone();
            }
            Err(poisoned) => {
                let mut paths = poisoned.into_inner();
                paths.public = public.clone();
                paths.pts = pty.pts.clone();
            }
        }
        self.pty = Some(pty);
        self.host = true;
        self.core.power_cycle(now());
        Ok(public)
    }
}

#[cfg(test)]
#[path = "pty_tests.rs"]
pub(super) mod tests;
