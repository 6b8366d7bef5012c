//! End-to-end tests of the real `parla` binary: the embedded demo, the CLI, kill -9 under load,
//! graceful shutdown and config checking.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use support::{Binary, parla_bin, write_config};

/// Fast simulated network, no failures, so every message ends delivered.
const FAST_SIM: &[(&str, &str)] = &[
    ("PARLA_SIM__ACCEPT_DELAY", "2ms"),
    ("PARLA_SIM__DELIVERY_DELAY", "100ms"),
    ("PARLA_SIM__FAILURE_SHARE", "0"),
];

#[test]
fn demo_runs_without_config_and_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let d = Binary::start(dir.path(), None, FAST_SIM);
    assert!(
        d.log().contains("DEMO"),
        "the demo says so loudly:\n{}",
        d.log()
    );
    let a = d.client.post(
        "/v1/messages",
        &json!({"to": "+393471234567", "text": "Your order 1234 ships tomorrow"}),
    );
    assert_eq!(a.status, 202, "{:?}", a.body);
    let id = a.body["id"].as_str().unwrap();
    d.client
        .wait_for(id, Duration::from_secs(20), |m| m["status"] == "delivered");
    assert!(
        dir.path().join("parla-data").join("version").exists(),
        "the demo keeps its store in ./parla-data"
    );

    // The CLI talks to the same daemon.
    let api = d.client.base.clone();
    let sent = Command::new(parla_bin())
        .args([
            "send",
            "--api",
            &api,
            "--to",
            "+39 347 765 4321",
            "--text",
            "hi from the CLI",
        ])
        .output()
        .unwrap();
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let out = String::from_utf8_lossy(&sent.stdout);
    let cli_id = out.split_whitespace().next().unwrap().to_string();
    assert!(out.contains("+393477654321"), "{out}");
    d.client.wait_for(&cli_id, Duration::from_secs(20), |m| {
        m["status"] == "delivered"
    });
    let status = Command::new(parla_bin())
        .args(["status", "--api", &api, &cli_id])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{out}");
    assert!(
        out.contains("delivered") && out.contains("accepted by sim"),
        "{out}"
    );

    let refused = Command::new(parla_bin())
        .args(["send", "--api", &api, "--to", "nonsense", "--text", "x"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("invalid_number"));
}

#[test]
fn explicit_config_that_does_not_exist_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(parla_bin())
        .args(["serve", "--config", "/nonexistent/parla.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
    assert!(
        !dir.path().join("parla-data").exists(),
        "no demo store was made"
    );
}

/// kill -9 in the middle of a load: every message that got a 202 is there after the restart and
/// is sent; the ones a crash may have sent twice are marked and counted. (Messages the network
/// had accepted before the kill may stay "sent": the simulator's pending receipts die with the
/// process, where a real SMSC would deliver them after the reconnect.)
#[test]
fn kill9_under_load_loses_no_accepted_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[store]\npath = \"store\"\n[sim]\nenabled = true\naccept_delay = \"5ms\"\n\
         delivery_delay = \"300ms\"\nfailure_share = 0.0\nreply_share = 0.2\n",
    );
    let mut d = Binary::start(dir.path(), Some(&config), &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..8 {
        let client = d.client.clone();
        let stop = stop.clone();
        let count = count.clone();
        workers.push(std::thread::spawn(move || {
            let mut accepted = Vec::new();
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let body = json!({"to": format!("+3934712{:05}", w * 10_000 + n), "text": format!("msg {w}-{n}")});
                match client.request("POST", "/v1/messages", Some(body.to_string().as_bytes()), &[]) {
                    Ok(a) if a.status == 202 => {
                        accepted.push(a.body["id"].as_str().unwrap().to_string());
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(a) => panic!("unexpected answer before the kill: {} {:?}", a.status, a.body),
                    // The kill: a request in flight has no answer; its fate is unknown to the
                    // client, which is allowed to be either way.
                    Err(_) => break,
                }
            }
            accepted
        }));
    }
    // Kill once the load is well under way (and the channel busy), at a moment that varies.
    let start = std::time::Instant::now();
    while count.load(Ordering::Relaxed) < 300 && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(fastrand_ms()));
    d.kill9();
    stop.store(true, Ordering::Relaxed);
    let accepted: BTreeSet<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(
        accepted.len() >= 300,
        "the load ran ({} accepted)",
        accepted.len()
    );

    let d = Binary::start(dir.path(), Some(&config), &[]);
    let stored: BTreeSet<String> = d
        .client
        .all_messages()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<&String> = accepted.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "{} accepted messages lost: {missing:?}",
        missing.len()
    );
    let mut duplicates = 0;
    for id in &accepted {
        let m = d.client.wait_for(id, Duration::from_secs(60), |m| {
            m["status"] == "delivered" || m["status"] == "sent"
        });
        if m["possible_duplicate"] == true {
            duplicates += 1;
        }
    }
    // Possible duplicates are only those a channel held at the kill: at most its window.
    assert!(duplicates <= 1024, "{duplicates} possible duplicates");
    let log = d.log();
    if duplicates > 0 {
        assert!(
            log.contains("requeued"),
            "the restart reports requeued messages:\n{log}"
        );
    }
}

/// SIGTERM: the daemon finishes what is in flight, hands back what the channel had not sent,
/// and exits 0; the next start finds nothing left "sending".
#[test]
fn sigterm_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        // A slow network, so messages are in the channel when the signal comes.
        "[store]\npath = \"store\"\n[sim]\nenabled = true\naccept_delay = \"10s\"\n",
    );
    let mut d = Binary::start(dir.path(), Some(&config), &[]);
    let mut ids = Vec::new();
    for i in 0..20 {
        let a = d.client.post(
            "/v1/messages",
            &json!({"to": format!("+39347123{:04}", i), "text": "hello"}),
        );
        assert_eq!(a.status, 202);
        ids.push(a.body["id"].as_str().unwrap().to_string());
    }
    d.client.wait_for(&ids[19], Duration::from_secs(10), |m| {
        m["status"] == "sending"
    });
    let status = d.terminate();
    assert!(status.success(), "exit {status:?}; log:\n{}", d.log());
    assert!(d.log().contains("store flushed and closed"), "{}", d.log());

    let d = Binary::start(dir.path(), Some(&config), &[]);
    assert!(
        !d.log().contains("requeued"),
        "nothing was left sending:\n{}",
        d.log()
    );
    for id in &ids {
        let m = d.client.get(&format!("/v1/messages/{id}")).body;
        // Handed back untried: queued again at once (the new run may already be sending it),
        // not counted as an attempt, not a possible duplicate.
        assert!(m["status"] == "queued" || m["status"] == "sending", "{m}");
        assert_eq!(m["possible_duplicate"], false);
        let history = m["history"].as_array().unwrap();
        assert!(
            history.iter().any(|t| t["reason"]
                .as_str()
                .is_some_and(|r| r.contains("channel stopped"))),
            "{m}"
        );
        assert!(m["attempts"].as_u64().unwrap() <= 1, "{m}");
    }
}

#[test]
fn check_config_names_each_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[http]\nlisten = \"0.0.0.0:80\"\ntoken = \"x\"\n[store]\nretention = \"forever\"\n\
         [defaults]\nregion = \"Italy\"\n[retry]\nmultiplier = 0.5\n",
    );
    let out = Command::new(parla_bin())
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "http.token:",
        "store.retention:",
        "defaults.region:",
        "retry.multiplier:",
        "http.tokens:",
    ] {
        assert!(err.contains(key), "{key} not named in:\n{err}");
    }

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/parla.toml");
    let ok = Command::new(parla_bin())
        .args(["check-config", "--config", example])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// A kill delay between 0 and 200 ms that differs from run to run.
fn fastrand_ms() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    u64::from(nanos % 200)
}

/// A small tmpfs, unmounted when dropped. Needs root (CI runs as root); set
/// PARLA_TEST_NO_MOUNT=1 to skip the test on a machine where mounting is not allowed.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(Tmpfs(path.to_path_buf()));
        }
        assert!(
            std::env::var_os("PARLA_TEST_NO_MOUNT").is_some(),
            "mounting a tmpfs failed: run the tests as root, or set PARLA_TEST_NO_MOUNT=1 to skip"
        );
        None
    }
}

impl Tmpfs {
    /// Fills it up; returns the file to delete to free the space.
    fn fill(&self) -> std::path::PathBuf {
        let filler = self.0.join("filler");
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=1M"])
            .arg(format!("of={}", filler.display()))
            .stderr(std::process::Stdio::null())
            .status();
        filler
    }
}

/// A working directory whose store (`mnt/store`) is on a 24 MiB tmpfs, and the configuration
/// that says so with `min_free_mb` of reserve; None where mounting is not allowed. (Bound in
/// this order, the tmpfs is unmounted before the directory is removed.)
fn store_on_small_tmpfs(
    min_free_mb: u64,
) -> Option<(tempfile::TempDir, Tmpfs, std::path::PathBuf)> {
    let dir = tempfile::tempdir().unwrap();
    let mount = Tmpfs::mount(&dir.path().join("mnt"), "24m")?;
    let config = write_config(
        dir.path(),
        &format!("[store]\npath = \"mnt/store\"\nmin_free_mb = {min_free_mb}\n"),
    );
    Some((dir, mount, config))
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A full disk: requests get 503 with a clear code, health says so, nothing that was refused is
/// in the store, and when space comes back the gateway resumes by itself, having lost nothing.
#[test]
fn full_disk_answers_503_and_stores_nothing_half_written() {
    let Some((dir, mount, config)) = store_on_small_tmpfs(2) else {
        return;
    };
    let mut d = Binary::start(dir.path(), Some(&config), &[]);
    let before = d.client.post(
        "/v1/messages",
        &json!({"to": "+393471234567", "text": "before"}),
    );
    assert_eq!(before.status, 202);
    let filler = mount.fill();
    let mut accepted = vec![before.body["id"].as_str().unwrap().to_string()];
    let mut refused = 0;
    for i in 0..40 {
        let a = d.client.post(
            "/v1/messages",
            &json!({"to": "+393471234567", "text": format!("{i} {}", "x".repeat(600))}),
        );
        match a.status {
            // sled may still have room in a segment it had already allocated: such writes are
            // synced and count as accepted.
            202 => accepted.push(a.body["id"].as_str().unwrap().to_string()),
            503 => {
                assert_eq!(a.code(), "store_unavailable", "{:?}", a.body);
                refused += 1;
            }
            other => panic!("unexpected {other}: {:?}", a.body),
        }
    }
    assert!(refused > 0, "the full disk was noticed");
    let health = d.client.get("/healthz");
    assert_eq!((health.status, health.code()), (503, "store_unavailable"));
    let listed: Vec<String> = d
        .client
        .all_messages()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    let mut expected = accepted.clone();
    expected.reverse();
    assert_eq!(listed, expected, "exactly the accepted messages are stored");

    // Space comes back: writes resume by themselves, and health recovers.
    std::fs::remove_file(&filler).unwrap();
    let after = d.client.post(
        "/v1/messages",
        &json!({"to": "+393471234567", "text": "after"}),
    );
    assert_eq!(after.status, 202, "{:?}", after.body);
    accepted.push(after.body["id"].as_str().unwrap().to_string());
    assert_eq!(d.client.get("/healthz").status, 200);

    // And after a restart, exactly the accepted messages are there.
    assert!(d.terminate().success(), "{}", d.log());
    let d = Binary::start(dir.path(), Some(&config), &[]);
    let mut listed: Vec<String> = d
        .client
        .all_messages()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    listed.reverse();
    assert_eq!(listed, accepted);
}

/// A write the disk refuses with no free-space reserve to catch it first (store.min_free_mb = 0):
/// the engine cannot be trusted after a failed journal write, so the daemon stops with an error
/// for its service manager to restart it, instead of answering 503 for ever. A request caught
/// in the failure is told its outcome is unknown (its bytes may have reached the journal);
/// restarted once there is space, the store has every acknowledged message, none of those
/// refused outright, and a retry with the same Idempotency-Key settles each unknown one once.
#[test]
fn a_store_that_fails_to_write_stops_the_daemon_and_a_restart_keeps_what_was_acknowledged() {
    #[derive(Debug, PartialEq)]
    enum Outcome {
        Accepted(String),
        Refused,
        Unknown,
    }
    let Some((dir, mount, config)) = store_on_small_tmpfs(0) else {
        return;
    };
    let mut d = Binary::start(dir.path(), Some(&config), &[]);
    let body =
        |i: usize| json!({"to": "+393471234567", "text": format!("{i} {}", "x".repeat(600))});
    let post = |client: &support::Client, i: usize| {
        let key = format!("k{i}");
        client.request(
            "POST",
            "/v1/messages",
            Some(body(i).to_string().as_bytes()),
            &[("Idempotency-Key", key.as_str())],
        )
    };
    let first = post(&d.client, 0).unwrap();
    assert_eq!(first.status, 202);
    let mut outcomes = vec![Outcome::Accepted(first.body["id"].as_str().unwrap().into())];
    let filler = mount.fill();
    for i in 1..200 {
        let outcome = match post(&d.client, i) {
            // The journal may have had room left in a block it had already written.
            Ok(a) if a.status == 202 => Outcome::Accepted(a.body["id"].as_str().unwrap().into()),
            Ok(a) if a.status == 503 && a.code() == "store_failed" => Outcome::Unknown,
            Ok(a) if a.status == 503 && a.code() == "store_unavailable" => Outcome::Refused,
            Ok(a) => panic!("unexpected {}: {:?}", a.status, a.body),
            // Stopping: the API no longer takes connections (or the answer was lost).
            Err(_) => Outcome::Unknown,
        };
        let stopping = outcome == Outcome::Unknown;
        outcomes.push(outcome);
        if stopping {
            break;
        }
    }
    assert_eq!(outcomes.last(), Some(&Outcome::Unknown), "{outcomes:?}");
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = d.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "parla did not stop; log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1), "{}", d.log());
    // The reader thread may still be copying the last lines.
    d.wait_log("parla stopped so that it is restarted", 1);

    std::fs::remove_file(&filler).unwrap();
    let d = Binary::start(dir.path(), Some(&config), &[]);
    let stored = |client: &support::Client| -> Vec<(usize, String)> {
        let mut found: Vec<(usize, String)> = client
            .all_messages()
            .iter()
            .map(|m| {
                let i = m["text"].as_str().unwrap().split(' ').next().unwrap();
                (i.parse().unwrap(), m["id"].as_str().unwrap().to_string())
            })
            .collect();
        found.sort();
        found
    };
    let after_restart = stored(&d.client);
    for (i, outcome) in outcomes.iter().enumerate() {
        let found: Vec<&String> = after_restart
            .iter()
            .filter(|(n, _)| *n == i)
            .map(|(_, id)| id)
            .collect();
        match outcome {
            Outcome::Accepted(id) => assert_eq!(found, [id], "acknowledged {i}"),
            Outcome::Refused => assert!(found.is_empty(), "refused {i} was stored: {found:?}"),
            Outcome::Unknown => assert!(found.len() <= 1, "{i} stored twice: {found:?}"),
        }
    }
    for (i, outcome) in outcomes.iter().enumerate() {
        if *outcome == Outcome::Unknown {
            let again = post(&d.client, i).unwrap();
            assert!(
                again.status == 202 || again.status == 200,
                "{:?}",
                again.body
            );
        }
    }
    let settled = stored(&d.client);
    let expected: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| **o != Outcome::Refused)
        .map(|(i, _)| i)
        .collect();
    let numbers: Vec<usize> = settled.iter().map(|(i, _)| *i).collect();
    assert_eq!(
        numbers, expected,
        "each request stored once, the refused ones never"
    );
}

/// `parla store compact` refuses while the daemon runs (sled's lock), and afterwards keeps every
/// live message.
#[test]
fn store_compact_keeps_live_messages() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[store]\npath = \"store\"\n");
    let mut d = Binary::start(dir.path(), Some(&config), &[]);
    let mut ids = Vec::new();
    for i in 0..30 {
        let a = d.client.post(
            "/v1/messages",
            &json!({"to": format!("+39347123{:04}", i), "text": "hello"}),
        );
        ids.push(a.body["id"].as_str().unwrap().to_string());
    }
    for id in &ids[..20] {
        assert_eq!(d.client.delete(&format!("/v1/messages/{id}")).status, 200);
    }
    let compact = || {
        Command::new(parla_bin())
            .args(["store", "compact", "--config"])
            .arg(&config)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let busy = compact();
    assert!(
        !busy.status.success(),
        "compaction must not run beside the daemon"
    );
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("another parla process"),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );
    assert!(d.terminate().success());
    let done = compact();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(String::from_utf8_lossy(&done.stdout).contains("compacted"));
    let d = Binary::start(dir.path(), Some(&config), &[]);
    for (i, id) in ids.iter().enumerate() {
        let m = d.client.get(&format!("/v1/messages/{id}"));
        let expected = if i < 20 { "canceled" } else { "queued" };
        assert_eq!(m.body["status"], expected, "{id}");
    }
}

#[test]
fn hash_password_prints_a_hash_of_the_line_on_stdin() {
    use std::io::Write;
    let run = |input: &str| {
        let mut child = std::process::Command::new(parla_bin())
            .arg("hash-password")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run("s3cret!\n");
    assert!(out.status.success(), "{out:?}");
    let hash = String::from_utf8(out.stdout).unwrap();
    let hash = hash.trim();
    assert!(
        parla::smpp::auth::verify_password(hash, "s3cret!"),
        "{hash}"
    );
    assert!(!parla::smpp::auth::verify_password(hash, "s3cret!\n"));
    // Nothing to hash, or more than SMPP can carry: an error, no hash.
    for bad in ["\n", "ninechars\n"] {
        let out = run(bad);
        assert!(!out.status.success(), "{bad:?}: {out:?}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn json_logs_are_one_object_per_line_with_fields() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[store]\npath = \"store\"\n[sim]\nenabled = true\n[log]\nformat = \"json\"\n",
    );
    let mut d = Binary::start(dir.path(), Some(&config), &[]);
    let status = d.terminate();
    assert!(status.success(), "{}", d.log());
    let lines: Vec<serde_json::Value> = d
        .log()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
    let ready = lines
        .iter()
        .find(|l| l["fields"]["message"] == "parla is ready")
        .expect("the ready line");
    assert!(
        ready["fields"]["api"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["channel"] == "sim" && l["level"] == "WARN"),
        "the channel is a field: {}",
        d.log()
    );
}
