//! parla under systemd: the real binary's notify messages (READY, WATCHDOG, STOPPING) on a real
//! notify socket, and systemd/parla.service checked by `systemd-analyze` (verify, security).

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use support::{Binary, Client, parla_bin, write_config};

/// What arrived on the notify socket, in order; for READY=1, whether /healthz answered 200
/// right then.
#[derive(Default)]
struct Notes {
    messages: Vec<String>,
    healthz_at_ready: Option<Result<u16, String>>,
}

type Shared = Arc<(Mutex<Notes>, Condvar)>;

/// Reads the notify socket until the test ends. On READY=1 it asks /healthz at once: systemd
/// starts what depends on parla at that moment, so the API must answer by then.
fn listen(socket: UnixDatagram, api: Client) -> Shared {
    let notes: Shared = Arc::default();
    let writer = notes.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned();
            let healthz = text.lines().any(|l| l == "READY=1").then(|| {
                api.request("GET", "/healthz", None, &[])
                    .map(|a| a.status)
                    .map_err(|e| e.to_string())
            });
            let (lock, changed) = &*writer;
            let mut notes = lock.lock().unwrap();
            if healthz.is_some() {
                notes.healthz_at_ready = healthz;
            }
            notes.messages.push(text);
            changed.notify_all();
        }
    });
    notes
}

/// Waits until `done` holds for the messages so far; panics with them after `limit`.
fn wait_for(notes: &Shared, what: &str, limit: Duration, done: impl Fn(&[String]) -> bool) {
    let start = Instant::now();
    let (lock, changed) = &**notes;
    let mut n = lock.lock().unwrap();
    while !done(&n.messages) {
        let left = limit.saturating_sub(start.elapsed());
        assert!(
            !left.is_zero(),
            "{what}: not within {limit:?}; notify messages: {:?}",
            n.messages
        );
        n = changed.wait_timeout(n, left).unwrap().0;
    }
}

fn count(messages: &[String], line: &str) -> usize {
    messages
        .iter()
        .filter(|m| m.lines().any(|l| l == line))
        .count()
}

/// A free loopback port, so the test knows the API's address before parla says it.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `parla serve` in `dir` with `config` (None: the demo) and `env`, and WATCHDOG_PID set to its
/// pid as systemd would: sd_notify::watchdog_enabled wants it to be the process's own, so a
/// shell learns its pid ($$) and keeps it when it execs parla.
fn start_watched(dir: &Path, config: Option<&Path>, env: &[(&str, &str)]) -> Binary {
    let parla = Binary::command(dir, config, env);
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
        .arg(parla.get_program())
        .args(parla.get_args());
    if let Some(d) = parla.get_current_dir() {
        sh.current_dir(d);
    }
    for (k, v) in parla.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    Binary::spawn(sh)
}

#[test]
fn notifies_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let port = free_port();
    let listen_on = format!("127.0.0.1:{port}");
    let api = Client::new(listen_on.parse().unwrap());
    let notes = listen(socket, api);

    // The simulated channel plus every other watched loop: an SMPP server account's outbox
    // pump, a webhook, the callback deliveries and the store sweep. Nothing is sent, so each
    // waits the whole time: a wait not counted as idle shows as a hang after 5 s.
    let hash = parla::smpp::auth::hash_password("pw1").unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[store]\npath = \"store\"\n\
             [sim]\nenabled = true\n\
             [smpp.server]\nenabled = true\nlisten = \"127.0.0.1:0\"\n\
             [[smpp.server.account]]\nsystem_id = \"shop\"\npassword_hash = \"{hash}\"\n\
             [[webhook]]\nname = \"down\"\nurl = \"http://127.0.0.1:{closed}/events\"\n\
             secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
             [callbacks]\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n",
            closed = free_port(),
        ),
    );
    let mut d = start_watched(
        dir.path(),
        Some(&config),
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            // 1 s: pings every 500 ms.
            ("WATCHDOG_USEC", "1000000"),
            ("PARLA_HTTP__LISTEN", &listen_on),
        ],
    );

    wait_for(&notes, "READY=1", Duration::from_secs(30), |m| {
        count(m, "READY=1") == 1
    });
    let healthz = notes.0.lock().unwrap().healthz_at_ready.clone();
    assert_eq!(
        healthz,
        Some(Ok(200)),
        "the API answers when READY=1 is sent"
    );
    // At 1 s, pings come every 500 ms; 14 of them span 6.5 s, more than a loop may stay busy
    // (5 s): the quiet gateway's loops (sim channel, dispatcher, correlator, store threads and
    // sweep, SMPP outbox pump, webhook and callback deliveries) are waiting, not hung. The limit
    // is only reached when pings stopped.
    wait_for(&notes, "14 x WATCHDOG=1", Duration::from_secs(60), |m| {
        count(m, "WATCHDOG=1") >= 14
    });
    assert!(!d.log().contains("makes no progress"), "{}", d.log());
    {
        let n = notes.0.lock().unwrap();
        let first_ready = n.messages.iter().position(|m| m.contains("READY=1"));
        let first_ping = n.messages.iter().position(|m| m.contains("WATCHDOG=1"));
        assert!(first_ready < first_ping, "{:?}", n.messages);
        assert_eq!(count(&n.messages, "STOPPING=1"), 0, "{:?}", n.messages);
    }
    assert!(d.log().contains("systemd watchdog on"), "{}", d.log());

    let before_term = notes.0.lock().unwrap().messages.len();
    let status = d.terminate();
    assert!(status.success(), "{status:?}\n{}", d.log());
    // It exited, so whatever it sent is in the socket's queue: the reader gets it promptly.
    wait_for(&notes, "STOPPING=1", Duration::from_secs(10), |m| {
        count(m, "STOPPING=1") == 1
    });
    let n = notes.0.lock().unwrap();
    let stopping = n
        .messages
        .iter()
        .position(|m| m.lines().any(|l| l == "STOPPING=1"))
        .unwrap();
    assert!(stopping >= before_term, "STOPPING=1 only after SIGTERM");
    assert!(d.log().contains("bye"), "{}", d.log());
    eprintln!("notify messages: {:?}", n.messages);
}

/// The thread of `pid` named `name` (as /proc shows it), if any.
fn thread_named(pid: u32, name: &str) -> Option<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .find(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .and_then(|t| t.file_name().to_str()?.parse().ok())
}

/// One thread of a child stopped with ptrace (PTRACE_SEIZE + PTRACE_INTERRUPT stop that thread
/// alone, unlike SIGSTOP); resumed on drop. A stand-in for a thread stuck in a call that never
/// returns (an fdatasync on a dying disk).
struct Frozen(i32);

impl Frozen {
    /// None when ptrace is not allowed here.
    fn freeze(tid: i32) -> Option<Frozen> {
        let null = std::ptr::null_mut::<libc::c_void>();
        // SAFETY: ptrace on a thread of our own child; no memory is passed.
        if unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, null, null) } != 0 {
            eprintln!(
                "test skipped: ptrace is not allowed here ({})",
                std::io::Error::last_os_error()
            );
            return None;
        }
        // SAFETY: as above.
        assert_eq!(
            unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, null, null) },
            0,
            "{}",
            std::io::Error::last_os_error()
        );
        let mut status = 0;
        // SAFETY: waiting for the traced thread's stop; `status` is ours.
        let waited = unsafe { libc::waitpid(tid, &mut status, libc::__WALL) };
        assert_eq!(waited, tid, "{}", std::io::Error::last_os_error());
        Some(Frozen(tid))
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let null = std::ptr::null_mut::<libc::c_void>();
        // SAFETY: detaching from the thread we seized; it runs on.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, self.0, null, null) };
    }
}

/// A store that stops making anything durable stops the pings: the syncer thread is frozen, the
/// writer fills the queue to it and blocks, and systemd would restart the daemon. Once the
/// syncer runs again, the pings resume.
#[test]
fn a_stuck_store_stops_the_watchdog_pings() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let listen_on = format!("127.0.0.1:{}", free_port());
    let notes = listen(socket, Client::new(listen_on.parse().unwrap()));
    let mut d = start_watched(
        dir.path(),
        None,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
            ("PARLA_HTTP__LISTEN", &listen_on),
            ("PARLA_SIM__FAILURE_SHARE", "0"),
        ],
    );
    wait_for(&notes, "WATCHDOG=1", Duration::from_secs(30), |m| {
        count(m, "WATCHDOG=1") >= 2
    });
    let pid = d.child.id();
    let syncer = thread_named(pid, "parla-sync").expect("the store's sync thread");
    let Some(frozen) = Frozen::freeze(syncer) else {
        return;
    };

    // Messages one after another, each its own group: the writer applies them and hands them
    // to the frozen syncer until that queue is full, then waits, busy.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for i in 0..200 {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let client = d.client.clone();
        clients.push(std::thread::spawn(move || {
            let body = serde_json::json!({"to": format!("+3934712{i:05}"), "text": "stuck?"});
            let _ = client.request(
                "POST",
                "/v1/messages",
                Some(body.to_string().as_bytes()),
                &[("Content-Type", "application/json")],
            );
        }));
        std::thread::sleep(Duration::from_millis(20));
        let n = notes.0.lock().unwrap();
        if n.messages.iter().any(|m| m.contains("STATUS=hung")) {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    // Busy for 5 s (the least staleness), then found at the next check.
    wait_for(&notes, "STATUS=hung", Duration::from_secs(60), |m| {
        m.iter()
            .any(|m| m.contains("STATUS=hung") && m.contains("store writer"))
    });
    let hung_at = {
        let n = notes.0.lock().unwrap();
        n.messages
            .iter()
            .position(|m| m.contains("STATUS=hung"))
            .unwrap()
    };
    // While it stays stuck, no ping: three check intervals.
    std::thread::sleep(Duration::from_millis(1600));
    {
        let n = notes.0.lock().unwrap();
        let pings_since = count(&n.messages[hung_at..], "WATCHDOG=1");
        assert_eq!(pings_since, 0, "{:?}", n.messages);
    }
    let log = d.log();
    assert!(
        log.contains("a main loop makes no progress") && log.contains("store writer"),
        "{log}"
    );

    drop(frozen);
    let resumed_from = notes.0.lock().unwrap().messages.len();
    wait_for(&notes, "pings again", Duration::from_secs(60), |m| {
        count(&m[resumed_from..], "WATCHDOG=1") >= 2
    });
    for c in clients {
        let _ = c.join();
    }
    assert!(d.log().contains("makes progress again"), "{}", d.log());
    eprintln!("notify messages: {:?}", notes.0.lock().unwrap().messages);
    let status = d.terminate();
    assert!(status.success(), "{status:?}\n{}", d.log());
}

/// `systemd-analyze`, or None (with a note) when it is missing outside CI. Under CI it must be
/// there: .ci/run installs the systemd package.
fn systemd_analyze() -> Option<&'static str> {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("systemd-analyze");
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    assert!(
        !ci,
        "systemd-analyze is missing: install it (apt-get install -y systemd); CI is set, so \
         this test does not skip"
    );
    eprintln!(
        "test skipped: systemd-analyze is not installed (apt-get install -y systemd); it would \
         check systemd/parla.service"
    );
    None
}

/// systemd/parla.service copied into `dir`, running the binary under test (verify wants the
/// ExecStart program to exist).
fn unit_under_test(dir: &Path) -> std::path::PathBuf {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/parla.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("ExecStart=/usr/bin/parla "), "{text}");
    let text = text.replace(
        "ExecStart=/usr/bin/parla ",
        &format!("ExecStart={} ", parla_bin().display()),
    );
    let path = dir.join("parla.service");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn unit_file_verifies() {
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_under_test(dir.path());
    // --man=no: the man page named in Documentation= is installed by the package, not here.
    let out = Command::new(tool)
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(
        !stderr.contains("parla.service"),
        "systemd-analyze verify has remarks on the unit: {stderr}"
    );
}

/// The number in "→ Overall exposure level for parla.service: 1.5 OK".
fn exposure(report: &str) -> Option<f64> {
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))?;
    line.rsplit(':')
        .next()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn exposure_parses() {
    let report = "✓ UMask= ...\n\n→ Overall exposure level for parla.service: 1.5 OK 🙂\n";
    assert_eq!(exposure(report), Some(1.5));
    assert_eq!(exposure("nothing"), None);
}

#[test]
fn unit_file_is_hardened() {
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_under_test(dir.path());
    // --offline=yes: judge the file itself, with no running systemd to ask.
    let out = Command::new(tool)
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let level = exposure(&report).unwrap_or_else(|| {
        panic!(
            "no exposure level in systemd-analyze security's answer: {report}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    eprintln!("systemd-analyze security: exposure {level}");
    assert!(
        level <= 2.0,
        "systemd/parla.service is exposed {level} (at most 2.0):\n{report}"
    );
}
