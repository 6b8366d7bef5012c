//! The modem channel end to end: the daemon drives `parla sim modem`'s simulated modem through a
//! real pseudo-terminal, opened with tokio-serial exactly as a USB modem would be, and the tests
//! watch the result through the HTTP API.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parla::config::{ModemSettings, Settings};
use parla::sim::modem::{ReceiveOptions, SimModemConfig, SimModemHandle, parse_quirks};
use serde_json::{Value, json};
use support::{Binary, Client, InProcess, write_config};

/// A simulated modem running on its own runtime in the test process.
struct Modem {
    handle: SimModemHandle,
    link: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl Modem {
    fn start(dir: &Path, config: SimModemConfig) -> Modem {
        Modem::start_named(dir, "modem0", config)
    }

    fn start_named(dir: &Path, name: &str, config: SimModemConfig) -> Modem {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let link = dir.join(name);
        let handle = runtime
            .block_on(parla::sim::modem::spawn(config, Some(link.clone())))
            .expect("simulated modem starts");
        Modem {
            handle,
            link,
            runtime,
        }
    }

    fn with_quirks(dir: &Path, quirks: &str) -> Modem {
        let config = SimModemConfig {
            quirks: parse_quirks(quirks).expect("known quirks"),
            report_delay: Duration::from_millis(200),
            ..SimModemConfig::default()
        };
        Modem::start(dir, config)
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    fn receive(&self, from: &str, text: &str) {
        self.block_on(self.handle.receive_sms(from, text)).unwrap();
    }

    fn sent(&self) -> Vec<parla::sim::modem::SentSms> {
        self.block_on(self.handle.sent()).unwrap()
    }
}

/// Modem settings for tests: short timeouts, so recovery happens within seconds.
fn modem_settings(port: &Path) -> ModemSettings {
    ModemSettings {
        name: "modem1".into(),
        port: port.to_path_buf(),
        number: Some("+393470000000".into()),
        command_timeout: Duration::from_secs(2),
        send_timeout: Duration::from_secs(5),
        poll_interval: Duration::from_millis(500),
        sweep_interval: Duration::from_secs(2),
        reopen_max_backoff: Duration::from_millis(500),
        unresponsive_after: 2,
        ..ModemSettings::default()
    }
}

fn daemon_with(port: &Path, adjust: impl FnOnce(&mut Settings)) -> InProcess {
    let modem = modem_settings(port);
    InProcess::start(move |s| {
        s.modems = vec![modem];
        s.retry.initial_backoff = Duration::from_millis(200);
        s.retry.max_backoff = Duration::from_secs(1);
        adjust(s);
    })
}

fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn channel(c: &Client) -> Value {
    c.get("/v1/channels").body["items"][0].clone()
}

fn wait_channel_state(c: &Client, state: &str) -> Value {
    wait_until(
        &format!("the modem channel to be {state}"),
        Duration::from_secs(20),
        || {
            let ch = channel(c);
            (ch["state"] == state).then_some(ch)
        },
    )
}

fn inbound(c: &Client) -> Vec<Value> {
    c.get("/v1/inbound?limit=100").body["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn post(c: &Client, to: &str, text: &str) -> String {
    let a = c.post("/v1/messages", &json!({"to": to, "text": text}));
    assert_eq!(a.status, 202, "{}", a.body);
    a.body["id"].as_str().unwrap().to_string()
}

fn wait_status(c: &Client, id: &str, status: &str) -> Value {
    c.wait_for(id, Duration::from_secs(30), |m| m["status"] == status)
}

#[test]
fn sends_gsm7_and_ucs2_messages_single_and_multipart_and_sees_them_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let modem = Modem::with_quirks(dir.path(), "");
    let d = daemon_with(&modem.link, |_| {});
    let c = &d.client;
    wait_channel_state(c, "up");
    // Registration and operator come with the first health check (CREG, then COPS), just
    // after the modem is up.
    let ch = wait_until("registration and operator", Duration::from_secs(10), || {
        let ch = channel(c);
        (ch["modem"]["registration"] == "home" && !ch["modem"]["operator"].is_null()).then_some(ch)
    });
    assert_eq!(ch["kind"], "modem");
    assert_eq!(ch["modem"]["model"], "SIMMODEM");
    assert_eq!(ch["modem"]["sim"], "READY");
    assert_eq!(ch["modem"]["signal_rssi"], 21);
    assert_eq!(ch["modem"]["operator"], "SIMNET");
    assert_eq!(ch["modem"]["new_message_mode"], "indications");

    // GSM 7-bit with every extension character, one part.
    let ext = "Ordine {A-12}: 10€ [ok] ~ ^ | \\ fine";
    // UCS-2 with emoji (surrogate pairs), three parts of at most 67 units.
    let emoji = "Il tuo pacco 📦 è in viaggio 🚚! ".repeat(6);
    // GSM 7-bit, two parts.
    let long = "La consegna è prevista per domani mattina. ".repeat(5);
    let ids: Vec<String> = [ext, emoji.as_str(), long.as_str()]
        .iter()
        .map(|t| post(c, "+393471234567", t))
        .collect();
    for id in &ids {
        let m = wait_status(c, id, "delivered");
        assert!(
            m["part_states"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["status"] == "delivered" && p["remote_id"].is_string()),
            "{m}"
        );
    }
    let sent = modem.sent();
    assert_eq!(sent.len(), 1 + 3 + 2, "{sent:?}");
    assert!(sent.iter().all(|s| s.to == "+393471234567"));
    assert!(sent.iter().all(|s| s.status_report_requested));
    assert_eq!(sent[0].text, ext);
    assert_eq!(sent[0].concat, None);
    let joined: String = sent[1..4].iter().map(|s| s.text.as_str()).collect();
    assert_eq!(joined, emoji);
    let refs: Vec<(u8, u8)> = sent[1..4]
        .iter()
        .map(|s| s.concat.map(|(_, total, seq)| (total, seq)).unwrap())
        .collect();
    assert_eq!(refs, [(3, 1), (3, 2), (3, 3)]);
    let joined: String = sent[4..].iter().map(|s| s.text.as_str()).collect();
    assert_eq!(joined, long);
    let ch = channel(c);
    assert_eq!(ch["sent"], 6, "{ch}");
}

#[test]
fn receives_single_and_concatenated_messages_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let modem = Modem::with_quirks(dir.path(), "");
    let d = daemon_with(&modem.link, |_| {});
    let c = &d.client;
    wait_channel_state(c, "up");
    modem.receive("+393471111111", "Posso ritirare sabato?");
    let long = "Vorrei cambiare l'indirizzo di consegna, è possibile? ".repeat(6);
    let options = ReceiveOptions {
        out_of_order: true,
        duplicate: true,
    };
    let parts = modem
        .block_on(
            modem
                .handle
                .receive_sms_with("+393472222222", &long, options),
        )
        .unwrap();
    assert!(parts >= 3);
    wait_until("two inbound messages", Duration::from_secs(20), || {
        let items = inbound(c);
        (items.len() >= 2).then_some(items)
    });
    // Give a duplicate or a late re-read a chance to show up, then check exactly-once.
    std::thread::sleep(Duration::from_secs(3));
    let items = inbound(c);
    assert_eq!(items.len(), 2, "{items:?}");
    let short = items.iter().find(|m| m["from"] == "+393471111111").unwrap();
    assert_eq!(short["text"], "Posso ritirare sabato?");
    assert_eq!(short["to"], "+393470000000");
    assert_eq!(short["channel"], "modem1");
    let whole = items.iter().find(|m| m["from"] == "+393472222222").unwrap();
    assert_eq!(whole["text"], long.as_str());
    assert_eq!(whole["parts"], parts);
    assert_eq!(whole["missing_parts"], json!([]));
    // Counted in SMS, like "sent"; the repeated part is not counted.
    assert_eq!(channel(c)["received"], 1 + parts);
}

/// Runs one send and one receive against a modem with these quirks.
fn round_trip_with(quirks: &str) {
    let dir = tempfile::tempdir().unwrap();
    let modem = Modem::with_quirks(dir.path(), quirks);
    let d = daemon_with(&modem.link, |_| {});
    let c = &d.client;
    wait_channel_state(c, "up");
    let id = post(c, "+393471234567", "Il tuo ordine 1234 è partito");
    wait_status(c, &id, "delivered");
    modem.receive("+393471111111", "Grazie!");
    let items = wait_until("the reply", Duration::from_secs(20), || {
        let items = inbound(c);
        (!items.is_empty()).then_some(items)
    });
    assert_eq!(items[0]["text"], "Grazie!", "{quirks}");
    assert_eq!(modem.sent().len(), 1, "{quirks}");
}

#[test]
fn echo_on_and_pdu_echoed_after_the_prompt() {
    round_trip_with("echo");
}

#[test]
fn prompt_without_space() {
    round_trip_with("bare-prompt");
}

#[test]
fn unsolicited_codes_between_the_command_and_the_prompt() {
    round_trip_with("urc-during-send");
}

#[test]
fn messages_and_reports_pushed_directly() {
    round_trip_with("direct-delivery,direct-reports");
}

#[test]
fn no_new_message_indications_means_polling() {
    round_trip_with("no-cnmi");
}

#[test]
fn pin_status_without_final_ok() {
    round_trip_with("cpin-without-ok");
}

#[test]
fn status_report_announced_in_the_wrong_memory() {
    round_trip_with("wrong-report-memory");
}

#[test]
fn sms_commands_refused_until_sms_ready() {
    round_trip_with("sms-ready-late");
}

#[test]
fn several_modems_share_the_queue_and_one_going_away_leaves_the_others_sending() {
    let dir = tempfile::tempdir().unwrap();
    let a = Modem::start_named(dir.path(), "a", SimModemConfig::default());
    let b = Modem::start_named(dir.path(), "b", SimModemConfig::default());
    let (port_a, port_b) = (a.link.clone(), b.link.clone());
    let d = InProcess::start(move |s| {
        let mut first = modem_settings(&port_a);
        first.name = "a".into();
        let mut second = modem_settings(&port_b);
        second.name = "b".into();
        s.modems = vec![first, second];
    });
    let c = &d.client;
    wait_until("both modems up", Duration::from_secs(20), || {
        let items = c.get("/v1/channels").body["items"].clone();
        items
            .as_array()
            .is_some_and(|i| i.len() == 2 && i.iter().all(|ch| ch["state"] == "up"))
            .then_some(())
    });
    let ids: Vec<String> = (0..40)
        .map(|i| post(c, "+393471234567", &format!("messaggio {i}")))
        .collect();
    for id in &ids {
        wait_status(c, id, "delivered");
    }
    let (sent_a, sent_b) = (a.sent().len(), b.sent().len());
    assert_eq!(sent_a + sent_b, 40);
    assert!(
        sent_a > 0 && sent_b > 0,
        "both modems sent: {sent_a}/{sent_b}"
    );

    // One modem unplugged: everything goes out through the other.
    a.block_on(a.handle.vanish()).unwrap();
    wait_until("modem a down", Duration::from_secs(20), || {
        (c.get("/v1/channels").body["items"][0]["state"] == "down").then_some(())
    });
    let ids: Vec<String> = (0..10)
        .map(|i| post(c, "+393471234567", &format!("dopo {i}")))
        .collect();
    for id in &ids {
        let m = wait_status(c, id, "delivered");
        assert_eq!(m["channel"], "b", "{m}");
    }
    assert_eq!(b.sent().len(), sent_b + 10);
}

#[test]
fn survives_the_modem_vanishing_and_coming_back() {
    let dir = tempfile::tempdir().unwrap();
    let modem = Modem::with_quirks(dir.path(), "");
    let d = daemon_with(&modem.link, |_| {});
    let c = &d.client;
    wait_channel_state(c, "up");
    let first = post(c, "+393471234567", "prima");
    wait_status(c, &first, "delivered");

    modem.block_on(modem.handle.vanish()).unwrap();
    let down = wait_channel_state(c, "down");
    assert!(down["detail"].is_string(), "{down}");
    // Queued while the modem is gone: it waits, it is not lost or failed.
    let second = post(c, "+393471234567", "seconda");
    std::thread::sleep(Duration::from_secs(1));
    let m = c.get(&format!("/v1/messages/{second}")).body;
    assert!(m["status"] == "queued", "{m}");

    modem.block_on(modem.handle.reappear()).unwrap();
    wait_channel_state(c, "up");
    wait_status(c, &second, "delivered");
    assert_eq!(modem.sent().len(), 2);
}

#[test]
fn a_hung_modem_is_reset_and_its_message_is_sent_after_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let modem = Modem::with_quirks(dir.path(), "");
    let d = daemon_with(&modem.link, |_| {});
    let c = &d.client;
    wait_channel_state(c, "up");
    modem.block_on(modem.handle.set_stalled(true)).unwrap();
    let id = post(c, "+393471234567", "ci sei?");
    wait_channel_state(c, "down");
    modem.block_on(modem.handle.set_stalled(false)).unwrap();
    wait_channel_state(c, "up");
    let m = wait_status(c, &id, "delivered");
    // The send that hung was put back in the queue, not failed.
    assert!(m["attempts"].as_u64().unwrap() >= 1, "{m}");
    assert_eq!(modem.sent().len(), 1, "sent once: {:?}", modem.sent());
}

#[test]
fn transient_failures_are_retried_and_permanent_ones_fail() {
    let dir = tempfile::tempdir().unwrap();
    let modem = Modem::with_quirks(dir.path(), "");
    let d = daemon_with(&modem.link, |_| {});
    let c = &d.client;
    wait_channel_state(c, "up");
    // 38: network out of order (transient).
    modem.block_on(modem.handle.fail_next_sends(2, 38)).unwrap();
    let id = post(c, "+393471234567", "riprova");
    let m = wait_status(c, &id, "delivered");
    assert_eq!(m["attempts"], 3, "{m}");
    // 1: unassigned number (permanent).
    modem.block_on(modem.handle.fail_next_sends(1, 1)).unwrap();
    let id = post(c, "+393471234567", "numero sbagliato");
    let m = wait_status(c, &id, "failed");
    assert_eq!(m["attempts"], 1, "{m}");
    let reason = m["history"].as_array().unwrap().last().unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("unassigned number"), "{reason}");
    assert_eq!(channel(c)["failed"], 1);
}

/// A daemon whose modem's SIM wants PIN 4321, configured with `pin`.
fn daemon_with_pin(dir: &Path, pin: &str) -> (Modem, InProcess) {
    let modem = Modem::start(
        dir,
        SimModemConfig {
            pin: Some("4321".into()),
            ..SimModemConfig::default()
        },
    );
    let mut settings = modem_settings(&modem.link);
    settings.pin = Some(pin.into());
    let d = InProcess::start(move |s| s.modems = vec![settings]);
    (modem, d)
}

#[test]
fn a_sim_pin_is_entered_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let (_modem, d) = daemon_with_pin(dir.path(), "4321");
    wait_channel_state(&d.client, "up");
}

#[test]
fn a_wrong_pin_blocks_the_modem_and_is_not_tried_again() {
    let dir = tempfile::tempdir().unwrap();
    let (_modem, d) = daemon_with_pin(dir.path(), "1111");
    wait_until("the PIN problem", Duration::from_secs(10), || {
        let ch = channel(&d.client);
        let blocked =
            ch["state"] == "down" && ch["detail"].as_str().is_some_and(|d| d.contains("PIN"));
        blocked.then_some(())
    });
    // Still blocked a while later: the PIN is never tried a second time.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(channel(&d.client)["state"], "down");
    let id = post(&d.client, "+393471234567", "resta in coda");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        d.client.get(&format!("/v1/messages/{id}")).body["status"],
        "queued"
    );
}

/// The real binary, killed with SIGKILL at random moments while customers write: every inbound
/// SMS ends up stored exactly once (a message read but not committed stays in the modem and is
/// read again; one committed but not yet deleted is recognised when read again).
#[test]
fn no_inbound_sms_is_lost_or_duplicated_when_the_daemon_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let modem = Modem::start(
        dir.path(),
        SimModemConfig {
            // Slow enough that kills land between reading and deleting.
            latency: Duration::from_millis(30),
            ..SimModemConfig::default()
        },
    );
    let config = write_config(
        dir.path(),
        &format!(
            "[store]\npath = \"{store}\"\n\
             [[modem]]\nname = \"modem1\"\nport = \"{port}\"\nnumber = \"+393470000000\"\n\
             command_timeout = \"2s\"\nsweep_interval = \"1s\"\nreopen_max_backoff = \"300ms\"\n",
            store = dir.path().join("store").display(),
            port = modem.link.display(),
        ),
    );
    let mut rng = fastrand::Rng::with_seed(7);
    let mut expected = Vec::new();
    for round in 0..6 {
        let mut daemon = Binary::start(dir.path(), Some(&config), &[]);
        for i in 0..4 {
            let text = format!("risposta {round}-{i}");
            modem.receive(&format!("+3934711{round:02}{i:03}"), &text);
            expected.push(text);
        }
        std::thread::sleep(Duration::from_millis(rng.u64(50..600)));
        daemon.kill9();
    }
    // A last, clean run lets the modem hand over whatever the kills left in it.
    let daemon = Binary::start(dir.path(), Some(&config), &[]);
    let c = &daemon.client;
    let start = Instant::now();
    let items = loop {
        let items = inbound(c);
        if items.len() >= expected.len() {
            break items;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let got: Vec<&str> = items.iter().filter_map(|m| m["text"].as_str()).collect();
            let missing: Vec<&String> = expected
                .iter()
                .filter(|t| !got.contains(&t.as_str()))
                .collect();
            panic!(
                "inbound messages missing after 60 s: {missing:?}\nmodem counters: {:?}\nlast daemon's log:\n{}",
                modem.block_on(modem.handle.counters()),
                daemon.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_secs(3));
    let items = if items.len() == expected.len() {
        inbound(c)
    } else {
        items
    };
    let mut texts: Vec<String> = items
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect();
    texts.sort();
    expected.sort();
    assert_eq!(texts, expected, "each inbound SMS exactly once");
}

#[test]
fn line_noise_from_the_modem_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let modem = Modem::with_quirks(dir.path(), "");
    let d = daemon_with(&modem.link, |_| {});
    let c = &d.client;
    wait_channel_state(c, "up");
    // Noise between every command and answer of ten sends and two received texts.
    let mut ids = Vec::new();
    for i in 0..10 {
        modem.block_on(modem.handle.garbage(7)).unwrap();
        ids.push(post(c, "+393471234567", &format!("noisy {i}")));
        if i % 5 == 0 {
            modem.receive("+393479876543", &format!("reply {i}"));
        }
    }
    for id in &ids {
        wait_status(c, id, "delivered");
    }
    let texts: Vec<String> = modem.sent().iter().map(|s| s.text.clone()).collect();
    for i in 0..10 {
        let want = format!("noisy {i}");
        assert_eq!(
            texts.iter().filter(|t| **t == want).count(),
            1,
            "{want} sent exactly once: {texts:?}"
        );
    }
    let inbound = wait_until("both replies stored", Duration::from_secs(20), || {
        let items = inbound(c);
        (items.len() >= 2).then_some(items)
    });
    let mut got: Vec<&str> = inbound
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, ["reply 0", "reply 5"]);
    assert_eq!(channel(c)["state"], "up");
}
