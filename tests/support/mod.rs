//! Shared helpers for the integration tests: a daemon in this process (fast, for API tests) and
//! the real `parla` binary (for end-to-end tests), both on real loopback TCP with a real sled
//! directory, and a small JSON HTTP client.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A JSON answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(String, String)>,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A small HTTP client bound to one base URL.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    agent: ureq::Agent,
    token: Option<String>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Client {
            base: format!("http://{addr}"),
            agent,
            token: None,
        }
    }

    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    /// Sends a request; `body` is sent as is (it need not be valid JSON).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, ureq::Error> {
        let url = format!("{}{}", self.base, path);
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = &self.token {
            builder = builder.header("Authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let mut response = match body {
            Some(b) => self.agent.run(
                builder
                    .header("Content-Type", "application/json")
                    .body(b.to_vec())
                    .unwrap(),
            )?,
            None => self.agent.run(builder.body(()).unwrap())?,
        };
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let text = response.body_mut().read_to_string()?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer {
            status,
            body,
            headers,
        })
    }

    pub fn post(&self, path: &str, body: &Value) -> Answer {
        self.request("POST", path, Some(body.to_string().as_bytes()), &[])
            .unwrap()
    }

    pub fn get(&self, path: &str) -> Answer {
        self.request("GET", path, None, &[]).unwrap()
    }

    pub fn delete(&self, path: &str) -> Answer {
        self.request("DELETE", path, None, &[]).unwrap()
    }

    /// Every message in the store, via the API's pages.
    pub fn all_messages(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/messages?limit=500&cursor={c}"),
                None => "/v1/messages?limit=500".to_string(),
            };
            let page = self.get(&path);
            assert_eq!(page.status, 200, "{:?}", page.body);
            out.extend(page.body["items"].as_array().unwrap().iter().cloned());
            match page.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
    }

    /// Polls a message until `done` says so, or panics after `timeout`.
    pub fn wait_for(&self, id: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let a = self.get(&format!("/v1/messages/{id}"));
            assert_eq!(a.status, 200, "{:?}", a.body);
            if done(&a.body) {
                return a.body;
            }
            assert!(
                start.elapsed() < timeout,
                "message {id} did not get there in {timeout:?}: {}",
                a.body
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The daemon running inside the test process, on its own runtime.
pub struct InProcess {
    pub client: Client,
    pub store: parla::store::Store,
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: tokio_util::sync::CancellationToken,
    wait: Option<tokio::task::JoinHandle<Result<(), parla::daemon::DaemonError>>>,
    _dir: Option<tempfile::TempDir>,
}

impl InProcess {
    /// Starts with `adjust` applied to settings that use a fresh temp store and port 0.
    pub fn start(adjust: impl FnOnce(&mut parla::config::Settings)) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = parla::config::Settings::default();
        settings.http.listen = "127.0.0.1:0".parse().unwrap();
        settings.store.path = Some(dir.path().join("store"));
        adjust(&mut settings);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let daemon = runtime
            .block_on(parla::daemon::start(settings))
            .expect("daemon starts");
        let client = Client::new(daemon.http_addr);
        let store = daemon.store.clone();
        let shutdown = daemon.shutdown_token();
        let wait = runtime.spawn(daemon.wait());
        InProcess {
            client,
            store,
            runtime: Some(runtime),
            shutdown,
            wait: Some(wait),
            _dir: Some(dir),
        }
    }

    /// Graceful shutdown; returns what the daemon returned.
    pub fn stop(&mut self) {
        self.shutdown.cancel();
        if let (Some(rt), Some(wait)) = (self.runtime.as_ref(), self.wait.take()) {
            rt.block_on(wait).unwrap().unwrap();
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let (Some(rt), Some(wait)) = (self.runtime.as_ref(), self.wait.take()) {
            let _ = rt.block_on(wait);
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// Path of the real binary under test.
pub fn parla_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_parla"))
}

/// The real `parla serve` process.
pub struct Binary {
    pub child: Child,
    pub addr: SocketAddr,
    pub client: Client,
    /// Everything it logged so far.
    pub log: Arc<Mutex<String>>,
}

/// The API address in the daemon's ready line, plain ("... parla is ready ... api=ADDR") or
/// JSON (`[log] format = "json"`).
fn ready_address(line: &str) -> Option<String> {
    if !line.contains("parla is ready") {
        return None;
    }
    if line.starts_with('{') {
        let json: Value = serde_json::from_str(line).ok()?;
        return json["fields"]["api"].as_str().map(str::to_owned);
    }
    Some(line.split("api=").nth(1)?.trim().to_string())
}

impl Binary {
    /// Starts `parla serve` in `dir` (its working directory), with `--config` when given, and
    /// extra environment. It listens on a free port (PARLA_HTTP__LISTEN=127.0.0.1:0 unless the
    /// caller sets it) and is ready when it logs so.
    pub fn start(dir: &Path, config: Option<&Path>, env: &[(&str, &str)]) -> Binary {
        Binary::spawn(Binary::command(dir, config, env))
    }

    /// The command [`Binary::start`] runs, for a caller that changes it before
    /// [`Binary::spawn`].
    pub fn command(dir: &Path, config: Option<&Path>, env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(parla_bin());
        cmd.arg("serve").current_dir(dir);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        cmd.env_remove("STATE_DIRECTORY")
            .env("RUST_LOG", "info")
            .env("PARLA_HTTP__LISTEN", "127.0.0.1:0");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Spawns `cmd` (a `parla serve`, see [`Binary::command`]) and waits until it is ready.
    pub fn spawn(mut cmd: Command) -> Binary {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("parla starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let log_writer = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // Logged before the ready signal: a caller reading the log after start sees it.
                {
                    let mut l = log_writer.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
                if let Some(addr) = ready_address(&line) {
                    let _ = ready_tx.send(addr);
                }
            }
        });
        let addr = match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a.parse().expect("address in the ready line"),
            Err(_) => {
                let _ = child.kill();
                panic!("parla did not get ready; its log:\n{}", log.lock().unwrap());
            }
        };
        Binary {
            child,
            addr,
            client: Client::new(addr),
            log,
        }
    }

    /// kill -9: no chance to flush anything.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGHUP: the daemon reloads its configuration.
    pub fn hangup(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    }

    /// Waits until the log has `count` lines containing `text`.
    pub fn wait_log(&self, text: &str, count: usize) {
        let start = Instant::now();
        loop {
            let log = self.log();
            if log.matches(text).count() >= count {
                return;
            }
            assert!(
                start.elapsed() < GUARD,
                "no {count} x {text:?} in the log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "parla did not stop after SIGTERM; log:\n{}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The port of parla's SMPP server, from its ready line (`smpp=127.0.0.1:PORT`).
    pub fn smpp_port(&self) -> u16 {
        let log = self.log();
        log.split("smpp=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no smpp= address in the ready line:\n{log}"))
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a config file into `dir`.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("parla.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// What a child process printed so far, and whether it is still printing.
#[derive(Default)]
struct Seen {
    events: Vec<Value>,
    ended: bool,
}

/// A child process that prints one JSON event per line (a simulator, an SMSC) and reads
/// commands on its stdin; tests await its events, with [`GUARD`] as the failure guard.
pub struct EventProcess {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    seen: Arc<(Mutex<Seen>, Condvar)>,
    stderr: Arc<Mutex<String>>,
}

/// Longest wait for any one event a test expects; only reached when something is wrong.
pub const GUARD: Duration = Duration::from_secs(20);

impl EventProcess {
    /// Starts `command` (its stdio is taken over); `name` is for failure messages.
    pub fn start(name: &str, mut command: Command) -> EventProcess {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
        let stdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let seen = Arc::new((Mutex::new(Seen::default()), Condvar::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let writer = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|_| json!({"event": "unparsed", "line": line}));
                writer.0.lock().unwrap().events.push(event);
                writer.1.notify_all();
            }
            writer.0.lock().unwrap().ended = true;
            writer.1.notify_all();
        });
        let stderr_writer = stderr.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text);
            stderr_writer.lock().unwrap().push_str(&text);
        });
        let stdin = child.stdin.take();
        EventProcess {
            name: name.to_string(),
            child,
            stdin,
            seen,
            stderr,
        }
    }

    /// Sends one command line.
    pub fn command(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("its stdin is open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits until `found` finds something in the events so far; panics after [`GUARD`] or
    /// when the process ended first.
    pub fn wait<T>(&self, what: &str, mut found: impl FnMut(&[Value]) -> Option<T>) -> T {
        let start = Instant::now();
        let (lock, changed) = &*self.seen;
        let mut seen = lock.lock().unwrap();
        loop {
            if let Some(t) = found(&seen.events) {
                return t;
            }
            let left = GUARD.saturating_sub(start.elapsed());
            assert!(
                !seen.ended && !left.is_zero(),
                "{} {}: no {what} in {GUARD:?}; its events:\n{}\nits stderr:\n{}",
                self.name,
                if seen.ended { "ended" } else { "is running" },
                lines(&seen.events),
                self.stderr.lock().unwrap()
            );
            seen = changed.wait_timeout(seen, left).unwrap().0;
        }
    }

    /// Waits for the first event of kind `event` for which `matches` holds.
    pub fn wait_event(&self, event: &str, matches: impl Fn(&Value) -> bool) -> Value {
        self.wait(&format!("{event} event as expected"), |events| {
            events
                .iter()
                .find(|e| e["event"] == event && matches(e))
                .cloned()
        })
    }

    /// Every event of kind `event` so far.
    pub fn events(&self, event: &str) -> Vec<Value> {
        let seen = self.seen.0.lock().unwrap();
        seen.events
            .iter()
            .filter(|e| e["event"] == event)
            .cloned()
            .collect()
    }

    pub fn all_events(&self) -> String {
        lines(&self.seen.0.lock().unwrap().events)
    }
}

impl Drop for EventProcess {
    fn drop(&mut self) {
        // Its stdin closing makes it quit; the kill is for one that hangs.
        drop(self.stdin.take());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn lines(events: &[Value]) -> String {
    events
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Polls the API until `done` holds for what `path` answers.
pub fn wait_api(client: &Client, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let a = client.get(path);
        assert_eq!(a.status, 200, "GET {path}: {:?}", a.body);
        if done(&a.body) {
            return a.body;
        }
        assert!(
            start.elapsed() < GUARD,
            "{what}: not in {GUARD:?}; GET {path}: {}",
            a.body
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An [`EventProcess`] that serves on a port it announces in a "ready" event (an SMSC).
pub struct Listening {
    pub process: EventProcess,
    pub port: u16,
}

impl Listening {
    /// Starts `command` and waits for its ready event; `port` reads the port from it.
    pub fn start(name: &str, command: Command, port: impl Fn(&Value) -> Option<u16>) -> Listening {
        let process = EventProcess::start(name, command);
        let port = process.wait("the ready line", |events| {
            events
                .iter()
                .filter(|e| e["event"] == "ready")
                .find_map(&port)
        });
        Listening { process, port }
    }
}

impl std::ops::Deref for Listening {
    type Target = EventProcess;
    fn deref(&self) -> &EventProcess {
        &self.process
    }
}

impl std::ops::DerefMut for Listening {
    fn deref_mut(&mut self) -> &mut EventProcess {
        &mut self.process
    }
}

/// tests/interop (smsc.js, esme.js), once node and the npm package smpp are there; `None` when
/// PARLA_SKIP_INTEROP=1 skips the tests that use it.
pub fn interop_dir() -> Option<PathBuf> {
    if std::env::var("PARLA_SKIP_INTEROP").as_deref() == Ok("1") {
        eprintln!("test skipped: PARLA_SKIP_INTEROP=1");
        return None;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    let node = Command::new("node").arg("--version").output();
    assert!(
        matches!(&node, Ok(out) if out.status.success()),
        "the tests with node-smpp need node (and npm) on PATH: install them (apt-get install -y nodejs \
         npm), then run `npm ci --prefix tests/interop`; or set PARLA_SKIP_INTEROP=1 to skip it \
         ({node:?})"
    );
    assert!(
        dir.join("node_modules/smpp/package.json").exists(),
        "the tests with node-smpp need the npm package smpp: run `npm ci --prefix tests/interop` \
         (or set PARLA_SKIP_INTEROP=1 to skip it)"
    );
    Some(dir)
}

/// A GSM text of three SMS parts (380 characters, more than 2 x 153), naming `tag`.
pub fn long_gsm(tag: &str) -> String {
    let mut text = String::new();
    let mut i = 0;
    while text.chars().count() < 380 {
        text.push_str(&format!("{tag} item {i} ships today; "));
        i += 1;
    }
    text.chars()
        .take(380)
        .collect::<String>()
        .trim_end()
        .to_string()
}

/// `parla sim smsc` on a free port, receipts after 50 ms, with `args` added.
pub fn start_sim_smsc(args: &[&str]) -> Listening {
    let mut command = Command::new(parla_bin());
    command
        .args([
            "sim",
            "smsc",
            "--listen",
            "127.0.0.1:0",
            "--receipt-delay-ms",
            "50",
        ])
        .args(args);
    Listening::start("parla sim smsc", command, |ready| {
        ready["addr"].as_str()?.rsplit(':').next()?.parse().ok()
    })
}

/// Waits for message `id` to be delivered; fails at once if it fails or expires.
pub fn wait_delivered(client: &Client, id: &str) -> Value {
    client.wait_for(id, GUARD, |m| {
        assert!(
            !matches!(m["status"].as_str(), Some("failed" | "expired")),
            "{m}"
        );
        m["status"] == "delivered"
    })
}
