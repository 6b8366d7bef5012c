//! The reliability suite: the real `parla` binary killed with SIGKILL at random moments while
//! everything it does is under way at once, and faults of its peers, checked against what the
//! peers themselves saw.
//!
//! One rig ([`Rig`]) runs per scenario, all real parts on 127.0.0.1: `parla serve` with a sled
//! store in a temp dir; a carrier link (window [`SMPP_WINDOW`]) to `parla sim smsc` (a child
//! process, so it outlives parla's kills, as a real SMSC would); a GSM modem `parla sim modem`
//! on a real pseudo-terminal (a child process too); parla's SMPP server with one account, used
//! by an ESME on the npm package `smpp` (tests/interop/esme.js); a `[[webhook]]` endpoint on an
//! HTTP receiver in this test that checks every signature; routes that send `+3934799...` by
//! the modem and everything else by the link.
//!
//! Each round of [`kill9_rounds_under_mixed_load`]: HTTP clients POST messages (every `202`
//! recorded), the ESME submits (every `ESME_ROK` recorded), customers write through the SMSC
//! (`mo`) and the modem (`receive`); parla is killed at a random moment (a seeded RNG: the
//! seed is printed, `PARLA_RELIABILITY_SEED` replays it) and started again on the same store;
//! once everything drained, the round checks
//! - every accepted message is stored and delivered (the simulators keep their receipts and
//!   status reports across parla's kills and hand them over after the reconnect);
//! - every customer message the SMSC saw acknowledged (deliver_sm_resp OK) or the modem took is
//!   stored exactly once;
//! - messages requeued as `possible_duplicate` are at most the claim budgets of the two
//!   channels, and every message the SMSC or the modem really got twice is one of them (or one
//!   whose history says a dropped link may have sent it);
//! - every delivered message produced a signed `message.status` "delivered" event, every stored
//!   reply a `message.received` one, and a `webhook-id` seen twice came with the same body;
//! - every message the ESME submitted came back to it as a receipt.
//!
//! The CI form runs 3 rounds of modest load; the long form (bench/reliability.sh) sets
//! `PARLA_RELIABILITY_ROUNDS` (20) and `PARLA_RELIABILITY_REPORT` (a file the per-round table
//! is appended to). The load: `PARLA_RELIABILITY_HTTP_CLIENTS` (4) clients, each pausing
//! `PARLA_RELIABILITY_PAUSE_MS` (2) between requests, and a kill 300 ms to
//! `PARLA_RELIABILITY_KILL_WITHIN_MS` (1500) after the load starts. `PARLA_RELIABILITY_RUST_LOG`
//! sets parla's log filter (`info,parla::modem=trace` shows the AT conversation) for the
//! failure messages.
//!
//! The fault tests below fill what tests/smpp.rs, tests/modem.rs and tests/e2e.rs do not cover
//! (see each one's comment).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Binary, Client, EventProcess, Listening, interop_dir, parla_bin, write_config};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SHOP_NUMBER: &str = "+393400000001";
const MODEM_NUMBER: &str = "+393470000000";
const ESME_PASSWORD: &str = "pw1";
/// The carrier link's window (submits in flight).
const SMPP_WINDOW: usize = 10;
/// A modem's window (parla's `MODEM_WINDOW`): the message it sends and those queued behind it.
const MODEM_WINDOW: usize = 3;
/// Messages a kill can leave `sending`, so requeued as possible duplicates: each channel's
/// claim budget (messages claimed for it whose outcome is not yet on disk), which is its job
/// queue: twice the submit window for an SMPP link, [`MODEM_WINDOW`] for a modem.
const CLAIMED_BOUND: usize = 2 * SMPP_WINDOW + MODEM_WINDOW;
/// Longest a round may take to drain after the restart; reached only when something is wrong.
const DRAIN_GUARD: Duration = Duration::from_secs(120);

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

// ------------------------------------------------------------------------------ webhooks

/// One POST as the receiver saw it.
#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    body: Value,
    signature_ok: bool,
    /// The headers, for a failure message.
    #[allow(dead_code)] // read by Debug
    headers: BTreeMap<String, String>,
}

/// An HTTP server on a free loopback port that answers 200 and keeps what it was sent.
struct Receiver {
    port: u16,
    seen: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let key = parla::webhook::event::secret_key(SECRET).unwrap();
        let s = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (s, key) = (s.clone(), key.clone());
                std::thread::spawn(move || {
                    // A request cut short (parla killed mid-POST) is simply not recorded.
                    let _ = serve_one(stream, &s, &key);
                });
            }
        });
        Receiver { port, seen }
    }

    fn seen(&self) -> Vec<Delivery> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve_one(
    mut stream: std::net::TcpStream,
    seen: &Mutex<Vec<Delivery>>,
    key: &[u8],
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut headers = BTreeMap::new();
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        // A connection opened by a parla killed before it wrote anything.
        return Ok(());
    }
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            headers.insert(k.to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let id = headers.get("webhook-id").cloned().unwrap_or_default();
    let timestamp: i64 = headers
        .get("webhook-timestamp")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let expected = parla::webhook::event::signature(key, &id, timestamp, &body);
    let delivery = Delivery {
        signature_ok: headers.get("webhook-signature") == Some(&expected),
        id,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        headers,
    };
    // Recorded before the answer: an event parla may not have seen answered still counts as
    // received (and its repeat as a duplicate), as for a real endpoint.
    seen.lock().unwrap().push(delivery);
    write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
}

// ------------------------------------------------------------------------------ the rig

/// Everything a scenario runs: parla and its peers.
struct Rig {
    dir: tempfile::TempDir,
    config: PathBuf,
    smsc: Listening,
    modem: EventProcess,
    esme: Option<Arc<Mutex<EventProcess>>>,
    receiver: Receiver,
    parla: Option<Binary>,
    smpp_port: u16,
    /// ESME sessions opened so far (each restart needs a new one).
    binds: usize,
}

impl Rig {
    /// Starts the peers and parla; `link_extra` goes into the carrier link's table, `esme`
    /// says whether to run the ESME (needs node and tests/interop's node_modules).
    fn start(link_extra: &str, modem_args: &[&str], esme: bool) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let smsc = support::start_sim_smsc(&[]);
        let link = dir.path().join("modem0");
        let mut command = Command::new(parla_bin());
        command
            .args(["sim", "modem", "--link"])
            .arg(&link)
            .args(["--report-delay-ms", "100"])
            .args(modem_args);
        let modem = EventProcess::start("parla sim modem", command);
        modem.wait_event("ready", |_| true);
        let receiver = Receiver::start();
        let hash = parla::smpp::auth::hash_password(ESME_PASSWORD).unwrap();
        let config = write_config(
            dir.path(),
            &format!(
                "[store]\npath = \"store\"\n\
                 [sim]\nenabled = false\n\
                 [retry]\ninitial_backoff = \"100ms\"\nmax_backoff = \"1s\"\n\
                 [smpp.server]\nenabled = true\nlisten = \"127.0.0.1:0\"\n\
                 [[smpp.server.account]]\nsystem_id = \"shop\"\npassword_hash = \"{hash}\"\n\
                 reply_numbers = [\"{SHOP_NUMBER}\"]\nmax_binds = 8\n\
                 [[smpp.client]]\nname = \"carrier\"\nhost = \"127.0.0.1\"\nport = {smsc}\n\
                 system_id = \"parla\"\npassword = \"secret\"\nwindow = {SMPP_WINDOW}\n\
                 reconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\n\
                 source = \"Shop\"\n{link_extra}\n\
                 [[modem]]\nname = \"modem1\"\nport = \"{port}\"\nnumber = \"{MODEM_NUMBER}\"\n\
                 command_timeout = \"2s\"\nsend_timeout = \"5s\"\npoll_interval = \"500ms\"\n\
                 sweep_interval = \"1s\"\nreopen_max_backoff = \"300ms\"\n\
                 unresponsive_after = 2\n\
                 [[route]]\nprefixes = [\"+3934799\"]\nchannels = [\"modem1\"]\n\
                 [[route]]\nchannels = [\"carrier\"]\n\
                 [[webhook]]\nname = \"rig\"\nurl = \"http://127.0.0.1:{hook}/events\"\n\
                 secret = \"{SECRET}\"\nevents = [\"message.status\", \"message.received\"]\n\
                 timeout = \"2s\"\nmax_in_flight = 8\n",
                smsc = smsc.port,
                port = link.display(),
                hook = receiver.port,
            ),
        );
        let esme = if esme {
            interop_dir().map(|interop| {
                let mut command = Command::new("node");
                command.arg(interop.join("esme.js"));
                let esme = EventProcess::start("esme.js", command);
                esme.wait_event("ready", |_| true);
                Arc::new(Mutex::new(esme))
            })
        } else {
            None
        };
        let mut rig = Rig {
            dir,
            config,
            smsc,
            modem,
            esme,
            receiver,
            parla: None,
            smpp_port: 0,
            binds: 0,
        };
        rig.start_parla();
        rig
    }

    fn client(&self) -> Client {
        self.parla.as_ref().expect("parla runs").client.clone()
    }

    /// Starts parla on the rig's store, waits for both channels, binds the ESME again.
    fn start_parla(&mut self) {
        let log_filter =
            std::env::var("PARLA_RELIABILITY_RUST_LOG").unwrap_or_else(|_| "info".into());
        let parla = Binary::start(
            self.dir.path(),
            Some(&self.config),
            &[("RUST_LOG", log_filter.as_str())],
        );
        self.smpp_port = parla.smpp_port();
        let client = parla.client.clone();
        self.parla = Some(parla);
        let start = Instant::now();
        loop {
            let last = client.get("/v1/channels").body;
            let items = last["items"].as_array().unwrap();
            if items.len() == 2 && items.iter().all(|c| c["state"] == "up") {
                break;
            }
            assert!(
                start.elapsed() < support::GUARD,
                "the channels not up in {:?}: {last}\nmodem: {}\nparla's log:\n{}",
                support::GUARD,
                self.modem.all_events(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(esme) = &self.esme {
            self.binds += 1;
            let name = format!("b{}", self.binds);
            let mut esme = esme.lock().unwrap();
            esme.command(&format!(
                "connect {name} {} trx shop {ESME_PASSWORD}",
                self.smpp_port
            ));
            let bind = esme.wait_event("bind", |e| e["name"] == name.as_str());
            assert_eq!(bind["status"], 0, "{bind}");
        }
    }

    /// The ESME session bound to the running parla.
    fn esme_session(&self) -> String {
        format!("b{}", self.binds)
    }

    fn kill9(&mut self) {
        self.parla.as_mut().expect("parla runs").kill9();
    }

    fn log(&self) -> String {
        self.parla.as_ref().map(Binary::log).unwrap_or_default()
    }
}

/// Every customer message stored, oldest first, through `GET /v1/inbound?since=`.
fn all_inbound(client: &Client) -> Vec<Value> {
    let mut out = Vec::new();
    let mut since = "1970-01-01T00:00:00Z".to_string();
    loop {
        let page = client.get(&format!("/v1/inbound?limit=500&since={since}"));
        assert_eq!(page.status, 200, "{:?}", page.body);
        out.extend(page.body["items"].as_array().unwrap().iter().cloned());
        match page.body["next_cursor"].as_str() {
            Some(c) => since = c.to_string(),
            None => return out,
        }
    }
}

/// Messages not yet in a final state: how many are queued or sending, and the ids and
/// channels of those sent (at most 500), which wait for their receipt.
fn unfinished(client: &Client) -> (usize, BTreeMap<String, String>) {
    // Every page: messages whose report the modem refused stay `sent` across rounds, and
    // more than one page of them (500) piles up in a long run.
    let page = |s: &str| {
        let mut items = Vec::new();
        let mut cursor = String::new();
        loop {
            let a = client.get(&format!("/v1/messages?status={s}&limit=500{cursor}"));
            assert_eq!(a.status, 200, "{:?}", a.body);
            items.extend(a.body["items"].as_array().cloned().unwrap_or_default());
            match a.body["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => return items,
            }
        }
    };
    let waiting = page("queued").len() + page("sending").len();
    let sent = page("sent")
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap_or_default().to_string(),
                m["channel"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    (waiting, sent)
}

/// Status reports the modem refused because its `SR` memory was full (while parla was down):
/// the simulated network does not send them again, so their messages stay `sent`.
fn reports_refused(rig: &Rig) -> usize {
    rig.modem
        .events("refused")
        .iter()
        .filter(|e| e["memory"] == "SR")
        .count()
}

/// Texts accepted more than once, with how many extra times: by the SMSC (submit answered
/// OK) and by the modem (SUBMIT accepted).
/// The message ids the ESME got receipts for.
fn receipted_ids(esme: &Mutex<EventProcess>) -> BTreeSet<String> {
    esme.lock()
        .unwrap()
        .events("deliver")
        .iter()
        .filter(|e| e["receipt"] == true)
        .filter_map(|e| e["receipted_message_id"].as_str().map(str::to_string))
        .collect()
}

fn extra_copies(rig: &Rig) -> BTreeMap<String, usize> {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for e in rig.smsc.events("submit") {
        if e["status"] == "0x00000000"
            && let Some(t) = e["text"].as_str()
        {
            *count.entry(t.to_string()).or_default() += 1;
        }
    }
    for e in rig.modem.events("sent") {
        if let Some(t) = e["text"].as_str() {
            *count.entry(t.to_string()).or_default() += 1;
        }
    }
    count
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(t, n)| (t, n - 1))
        .collect()
}

// ------------------------------------------------------------------------------ the load

/// What one round's load got accepted and injected.
#[derive(Default)]
struct Load {
    /// id -> text, answered 202.
    http: BTreeMap<String, String>,
    /// Texts written to the shop through the SMSC, with the SMSC's MO number.
    mo_smsc: Vec<(u64, String)>,
    /// Texts written to the modem.
    mo_modem: Vec<String>,
    /// HTTP answers other than 202 before the kill (must be none).
    refused: Vec<String>,
}

/// A recipient: every fourth message goes by the modem, the rest by the link.
fn recipient(kind: u32, worker: u32, n: u32) -> String {
    if n.is_multiple_of(4) {
        format!("+3934799{kind}{worker}{:03}", n % 1000)
    } else {
        format!("+3934800{kind}{worker}{:03}", n % 1000)
    }
}

/// Runs the load until `stop`; returns what it recorded.
fn run_load(rig: &mut Rig, round: usize, clients: u32, pause: Duration, stop: &AtomicBool) -> Load {
    std::thread::scope(|scope| {
        let mut http = Vec::new();
        for w in 0..clients {
            let client = rig.client();
            http.push(scope.spawn(move || {
                let mut accepted = BTreeMap::new();
                let mut refused = Vec::new();
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let text = format!("h{round}.{w}.{n} your order ships today");
                    let body = json!({"to": recipient(1, w, n), "text": text});
                    match client.request(
                        "POST",
                        "/v1/messages",
                        Some(body.to_string().as_bytes()),
                        &[],
                    ) {
                        Ok(a) if a.status == 202 => {
                            accepted.insert(a.body["id"].as_str().unwrap().to_string(), text);
                        }
                        Ok(a) => refused.push(format!("{} {}", a.status, a.body)),
                        // The kill: a request in flight has no answer; its fate is unknown
                        // to the client, which is allowed to be either way.
                        Err(_) => break,
                    }
                    std::thread::sleep(pause);
                }
                (accepted, refused)
            }));
        }
        let esme = rig.esme.clone().map(|esme| {
            let session = rig.esme_session();
            scope.spawn(move || {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let spec = json!({"to": recipient(2, 0, n), "from": "Shop",
                        "text": format!("e{round}.{n} your code is 1234"), "registered_delivery": 1});
                    esme.lock()
                        .unwrap()
                        .command(&format!("submit {session} e{round}.{n} {spec}"));
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        });
        let smsc = &mut rig.smsc;
        let modem = &mut rig.modem;
        let mut mo_smsc = Vec::new();
        let mut mo_modem = Vec::new();
        let mut i = 0u32;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let text = format!("s{round}.{i} can I pick it up on Saturday");
            smsc.command(&format!(
                "mo +39320{round:03}{i:04} {SHOP_NUMBER} single {text}"
            ));
            mo_smsc.push(text);
            if i.is_multiple_of(2) {
                let text = format!("m{round}.{i} please leave it at the door");
                modem.command(&format!("receive +39331{round:03}{i:04} {text}"));
                mo_modem.push(text);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut load = Load::default();
        for h in http {
            let (accepted, refused) = h.join().unwrap();
            load.http.extend(accepted);
            load.refused.extend(refused);
        }
        if let Some(e) = esme {
            e.join().unwrap();
        }
        // The SMSC answers each mo command with its number, in order.
        let queued = smsc.wait("an answer to every mo command", |events| {
            let q: Vec<u64> = events
                .iter()
                .filter(|e| e["event"] == "mo_queued")
                .filter_map(|e| e["mo"].as_u64())
                .collect();
            (q.len() >= mo_smsc.len()).then_some(q)
        });
        let first = queued.len() - mo_smsc.len();
        load.mo_smsc = queued[first..].iter().copied().zip(mo_smsc).collect();
        load.mo_modem = mo_modem;
        load
    })
}

/// The ESME's accepted submits of `round`: message id -> text.
fn esme_accepted(rig: &Rig, round: usize) -> BTreeMap<String, String> {
    let Some(esme) = &rig.esme else {
        return BTreeMap::new();
    };
    let esme = esme.lock().unwrap();
    let prefix = format!("e{round}.");
    esme.events("submit_resp")
        .iter()
        .filter(|e| e["status"] == 0 && e["tag"].as_str().is_some_and(|t| t.starts_with(&prefix)))
        .map(|e| {
            let tag = e["tag"].as_str().unwrap();
            (
                e["message_id"].as_str().unwrap().to_string(),
                format!("{tag} your code is 1234"),
            )
        })
        .collect()
}

// ------------------------------------------------------------------------------ a round

/// The figures of one round.
#[derive(Debug, Default, Clone)]
struct Figures {
    round: usize,
    kill_after_ms: u64,
    accepted_http: usize,
    accepted_smpp: usize,
    stored: usize,
    lost: usize,
    inbound_injected: usize,
    inbound_acked: usize,
    inbound_stored: usize,
    inbound_lost: usize,
    inbound_repeated: usize,
    requeued: usize,
    possible_duplicates: usize,
    /// Status reports the modem's full SR memory refused (their messages stay sent).
    reports_refused: usize,
    real_duplicates: usize,
    resent_after_link_drop: usize,
    webhook_events: usize,
    webhook_repeats: usize,
    esme_receipts: usize,
    drain_ms: u128,
    round_ms: u128,
}

impl Figures {
    const HEADER: &str = "| round | kill after ms | accepted HTTP | accepted SMPP | stored | lost | \
        inbound injected | acked | stored | lost | repeated | requeued | possible dup | \
        real dup (SMSC+modem) | reports refused (SR full) | webhook events | repeated deliveries | ESME receipts | drain ms | \
        round ms |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\
        ---:|---:|---:|---:|---:|";

    fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | \
             {} | {} | {} | {} |",
            self.round,
            self.kill_after_ms,
            self.accepted_http,
            self.accepted_smpp,
            self.stored,
            self.lost,
            self.inbound_injected,
            self.inbound_acked,
            self.inbound_stored,
            self.inbound_lost,
            self.inbound_repeated,
            self.requeued,
            self.possible_duplicates,
            self.real_duplicates,
            self.reports_refused,
            self.webhook_events,
            self.webhook_repeats,
            self.esme_receipts,
            self.drain_ms,
            self.round_ms,
        )
    }
}

/// What all rounds so far accepted and injected.
#[derive(Default)]
struct Ledger {
    /// id -> text.
    accepted: BTreeMap<String, String>,
    smpp_ids: BTreeSet<String>,
    /// Customer texts injected (the SMSC's acknowledged ones and the modem's).
    inbound: BTreeSet<String>,
    possible_duplicates: usize,
    extra_copies: usize,
    /// Webhook deliveries and distinct event ids seen so far.
    webhook_deliveries: usize,
    webhook_ids: usize,
    reports_refused: usize,
}

fn one_round(
    rig: &mut Rig,
    ledger: &mut Ledger,
    round: usize,
    rng: &mut fastrand::Rng,
    clients: u32,
    pause: Duration,
    kill_within: u64,
) -> Figures {
    let round_start = Instant::now();
    let kill_after = rng.u64(300..kill_within.max(301));
    let stop = AtomicBool::new(false);
    let load = run_load_with_kill(rig, round, clients, pause, &stop, kill_after);
    rig.kill9();
    assert!(
        load.refused.is_empty(),
        "round {round}: answers other than 202 before the kill: {:?}",
        &load.refused[..load.refused.len().min(5)]
    );
    // The ESME's answers are all printed once its session saw the connection close.
    if let Some(esme) = &rig.esme {
        let session = rig.esme_session();
        esme.lock()
            .unwrap()
            .wait_event("close", |e| e["name"] == session.as_str());
    }
    let smpp = esme_accepted(rig, round);
    rig.start_parla();
    let restart_log = rig.log();
    let requeued = restart_log
        .lines()
        .find(|l| l.contains("requeued, and they may reach"))
        .and_then(|l| l.split("count=").nth(1))
        .and_then(|c| c.split_whitespace().next())
        .and_then(|c| c.parse().ok())
        .unwrap_or(0usize);
    assert!(
        requeued <= CLAIMED_BOUND,
        "round {round}: {requeued} messages requeued as possible duplicates: more than the \
         two channels' claim budgets ({CLAIMED_BOUND}):\n{restart_log}"
    );

    ledger.accepted.extend(load.http.clone());
    ledger.accepted.extend(smpp.clone());
    ledger.smpp_ids.extend(smpp.keys().cloned());
    let client = rig.client();

    // Drain: the SMSC has every MO acknowledged, parla has nothing left to send, every reply
    // is stored, the webhook endpoint and the ESME got what they are owed.
    let drain_start = Instant::now();
    let mo_numbers: BTreeSet<u64> = load.mo_smsc.iter().map(|(n, _)| *n).collect();
    let mut slow_noted = false;
    let mut stuck: BTreeSet<String>;
    let (messages, inbound) = loop {
        let acked: BTreeSet<u64> = rig
            .smsc
            .events("mo_acked")
            .iter()
            .filter(|e| e["status"] == "0x00000000")
            .filter_map(|e| e["mo"].as_u64())
            .collect();
        let mo_left = mo_numbers.difference(&acked).count();
        let (waiting, sent) = unfinished(&client);
        let refused_reports = reports_refused(rig);
        // Done when only messages whose report the modem refused may still be sent.
        let queue = if sent.len() <= refused_reports && sent.values().all(|c| c == "modem1") {
            waiting
        } else {
            waiting + sent.len()
        };
        stuck = sent.keys().cloned().collect();
        let stored_texts: BTreeSet<String> = all_inbound(&client)
            .iter()
            .filter_map(|m| m["text"].as_str().map(str::to_string))
            .collect();
        let inbound_left = load
            .mo_smsc
            .iter()
            .map(|(_, t)| t)
            .chain(&load.mo_modem)
            .filter(|t| !stored_texts.contains(*t))
            .count();
        let hooks = rig.receiver.seen();
        let delivered_events: BTreeSet<&str> = hooks
            .iter()
            .filter(|d| {
                d.body["type"] == "message.status" && d.body["data"]["status"] == "delivered"
            })
            .filter_map(|d| d.body["data"]["id"].as_str())
            .collect();
        let sent_events: BTreeSet<&str> = hooks
            .iter()
            .filter(|d| d.body["type"] == "message.status" && d.body["data"]["status"] == "sent")
            .filter_map(|d| d.body["data"]["id"].as_str())
            .collect();
        let hookless: Vec<&String> = ledger
            .accepted
            .keys()
            .filter(|id| {
                if stuck.contains(*id) {
                    !sent_events.contains(id.as_str())
                } else {
                    !delivered_events.contains(id.as_str())
                }
            })
            .collect();
        let hooks_left = hookless.len();
        let receipts_left = rig.esme.as_ref().map_or(0, |esme| {
            let seen = receipted_ids(esme);
            ledger
                .smpp_ids
                .iter()
                .filter(|id| !seen.contains(*id) && !stuck.contains(*id))
                .count()
        });
        let left = format!(
            "MO unacknowledged at the SMSC {mo_left}, messages unfinished {queue}, replies not \
             stored {inbound_left}, delivered messages without their webhook event {hooks_left}, \
             ESME messages without a receipt {receipts_left}"
        );
        if !slow_noted && drain_start.elapsed() > Duration::from_secs(5) {
            // Not a failure; says what a slow round waited for.
            eprintln!("round {round}: still draining after 5 s: {left}");
            slow_noted = true;
        }
        if mo_left + queue + inbound_left + hooks_left + receipts_left == 0 {
            break (client.all_messages(), all_inbound(&client));
        }
        if drain_start.elapsed() >= DRAIN_GUARD {
            let stuck: Vec<String> = ["queued", "sending", "sent"]
                .iter()
                .flat_map(|s| {
                    client
                        .get(&format!("/v1/messages?status={s}&limit=20"))
                        .body["items"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .map(|m| format!("{} {} {} {}", m["id"], m["status"], m["to"], m["history"]))
                .collect();
            let hookless: Vec<String> = hookless
                .iter()
                .take(10)
                .map(|id| {
                    let m = client.get(&format!("/v1/messages/{id}")).body;
                    let events: Vec<String> = hooks
                        .iter()
                        .filter(|d| d.body["data"]["id"] == id.as_str())
                        .map(|d| format!("{} {}", d.body["type"], d.body["data"]["status"]))
                        .collect();
                    format!("{id} {} {} events {events:?}", m["status"], m["history"])
                })
                .collect();
            panic!(
                "round {round} (kill after {kill_after} ms) did not drain in {DRAIN_GUARD:?}: \
                 {left}\nunfinished:\n{}\nwithout their webhook event:\n{}\nthe modem \
                 refused: {:?}\nparla's warnings since the restart:\n{}\nMETRICS {}",
                stuck.join("\n"),
                hookless.join("\n"),
                rig.modem.events("refused"),
                rig.log()
                    .lines()
                    .filter(|l| !l.contains(" INFO ")
                        && !l.contains(" DEBUG ")
                        && !l.contains(" TRACE "))
                    .collect::<Vec<_>>()
                    .join("\n"),
                String::from_utf8_lossy(
                    &std::process::Command::new("curl")
                        .args(["-s", &format!("{}/metrics", client.base)])
                        .output()
                        .map(|o| o.stdout)
                        .unwrap_or_default()
                )
                .lines()
                .filter(|l| l.contains("outbox") || l.contains("webhook"))
                .collect::<Vec<_>>()
                .join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let drain_ms = drain_start.elapsed().as_millis();

    // Accepted messages: all there, all delivered.
    let by_id: BTreeMap<&str, &Value> = messages
        .iter()
        .map(|m| (m["id"].as_str().unwrap(), m))
        .collect();
    let round_ids: Vec<&String> = load.http.keys().chain(smpp.keys()).collect();
    let lost: Vec<&&String> = round_ids
        .iter()
        .filter(|id| !by_id.contains_key(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "round {round}: accepted messages lost: {lost:?}"
    );
    let earlier_lost = ledger
        .accepted
        .keys()
        .filter(|id| !by_id.contains_key(id.as_str()))
        .count();
    assert_eq!(earlier_lost, 0, "messages of earlier rounds lost");
    for id in &round_ids {
        let m = by_id[id.as_str()];
        if stuck.contains(id.as_str()) {
            assert_eq!(m["status"], "sent", "round {round}: {m}");
        } else {
            assert_eq!(m["status"], "delivered", "round {round}: {m}");
        }
        assert_eq!(
            m["text"].as_str(),
            ledger.accepted.get(id.as_str()).map(String::as_str),
            "{m}"
        );
    }

    // Duplicates: what the channels really got twice is within what parla marked.
    let flagged_total = messages
        .iter()
        .filter(|m| m["possible_duplicate"] == true)
        .count();
    let possible_duplicates = flagged_total - ledger.possible_duplicates;
    ledger.possible_duplicates = flagged_total;
    // The restart's requeued messages are marked; so are retries after a dropped link or a
    // submit that was never answered during the round.
    assert!(
        possible_duplicates >= requeued,
        "round {round}: {possible_duplicates} marked possible_duplicate, fewer than the \
         {requeued} the restart requeued"
    );
    // Every stored message, including those whose 202 the kill cut off: the network may have
    // them too.
    let text_to_id: BTreeMap<&str, &str> = messages
        .iter()
        .filter_map(|m| Some((m["text"].as_str()?, m["id"].as_str()?)))
        .collect();
    let copies = extra_copies(rig);
    let copies_total: usize = copies.values().sum();
    let real_duplicates = copies_total - ledger.extra_copies;
    ledger.extra_copies = copies_total;
    let mut resent_after_link_drop = 0;
    let details: Vec<String> = copies
        .keys()
        .filter_map(|t| by_id.get(text_to_id.get(t.as_str())?))
        .map(|m| {
            format!(
                "{}: possible_duplicate {} history {}",
                m["text"], m["possible_duplicate"], m["history"]
            )
        })
        .collect();
    // Not bounded by the submit window alone: a submit answered but whose answer was not yet
    // on disk at the kill is sent again too. Bounded by the claim budgets, all marked.
    assert!(
        real_duplicates <= possible_duplicates,
        "round {round}: {real_duplicates} SMS reached the network twice, more than the \
         {possible_duplicates} messages marked possible_duplicate:\n{}",
        details.join("\n"),
    );
    for (text, extra) in &copies {
        let id = text_to_id
            .get(text.as_str())
            .unwrap_or_else(|| panic!("the network got {text:?}, which nobody sent"));
        let m = by_id[id];
        let may_have = m["history"].as_array().unwrap().iter().any(|t| {
            t["reason"]
                .as_str()
                .is_some_and(|r| r.contains("may have the message"))
        });
        if may_have && m["possible_duplicate"] != true {
            resent_after_link_drop += 1;
        }
        assert!(
            m["possible_duplicate"] == true || may_have,
            "round {round}: {text:?} reached the network {} times but its message is neither \
             marked possible_duplicate nor says a dropped link may have sent it: {m}",
            extra + 1
        );
    }

    // What the simulators report as handed over: the SMSC's MO answered OK, the modem's
    // texts stored on its SIM (none refused for a full memory here).
    let smsc_acked = {
        let acked: BTreeSet<u64> = rig
            .smsc
            .events("mo_acked")
            .iter()
            .filter(|e| e["status"] == "0x00000000")
            .filter_map(|e| e["mo"].as_u64())
            .collect();
        mo_numbers.intersection(&acked).count()
    };
    let refused: Vec<Value> = rig
        .modem
        .events("refused")
        .into_iter()
        .filter(|e| e["memory"] == "SM")
        .collect();
    assert!(refused.is_empty(), "the modem's SIM was full: {refused:?}");
    let modem_received: BTreeSet<String> = rig
        .modem
        .events("received")
        .iter()
        .filter_map(|e| e["text"].as_str().map(str::to_string))
        .collect();
    let modem_kept = load
        .mo_modem
        .iter()
        .filter(|t| modem_received.contains(*t))
        .count();
    assert_eq!(modem_kept, load.mo_modem.len(), "the modem got every text");
    // Replies: each injected one stored exactly once (the SMSC's: those it saw acknowledged,
    // i.e. all, the drain waited for that).
    let mut stored_count: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &inbound {
        *stored_count.entry(m["text"].as_str().unwrap()).or_default() += 1;
    }
    let injected: Vec<&String> = load
        .mo_smsc
        .iter()
        .map(|(_, t)| t)
        .chain(&load.mo_modem)
        .collect();
    let inbound_lost = injected
        .iter()
        .filter(|t| !stored_count.contains_key(t.as_str()))
        .count();
    let repeated: Vec<(&&String, usize)> = injected
        .iter()
        .filter_map(|t| {
            let n = stored_count.get(t.as_str()).copied().unwrap_or(0);
            (n > 1).then_some((t, n))
        })
        .collect();
    assert_eq!(inbound_lost, 0, "round {round}: customer messages lost");
    assert!(
        repeated.is_empty(),
        "round {round}: customer messages stored more than once: {repeated:?}"
    );
    ledger
        .inbound
        .extend(injected.iter().map(|t| t.to_string()));

    // Webhooks: signed; an id seen twice carries the same body; every stored reply announced.
    let hooks = rig.receiver.seen();
    if let Some(bad) = hooks.iter().find(|d| !d.signature_ok) {
        panic!("round {round}: a webhook signature did not verify: {bad:?}");
    }
    let mut by_event: BTreeMap<&str, &Value> = BTreeMap::new();
    let mut webhook_repeats = 0;
    for d in &hooks {
        if let Some(earlier) = by_event.insert(&d.id, &d.body) {
            webhook_repeats += 1;
            assert_eq!(earlier, &d.body, "webhook-id {} with two bodies", d.id);
        }
    }
    let webhook_events = by_event.len() - ledger.webhook_ids;
    let webhook_repeats = webhook_repeats - (ledger.webhook_deliveries - ledger.webhook_ids);
    ledger.webhook_ids = by_event.len();
    ledger.webhook_deliveries = hooks.len();
    let received_events: BTreeSet<&str> = by_event
        .values()
        .filter(|b| b["type"] == "message.received")
        .filter_map(|b| b["data"]["text"].as_str())
        .collect();
    let unannounced: Vec<&&String> = injected
        .iter()
        .filter(|t| !received_events.contains(t.as_str()))
        .collect();
    assert!(
        unannounced.is_empty(),
        "round {round}: stored replies without a message.received event: {unannounced:?}"
    );

    let esme_receipts = rig.esme.as_ref().map_or(0, |esme| {
        let seen = receipted_ids(esme);
        smpp.keys().filter(|id| seen.contains(id.as_str())).count()
    });

    let refused_now = reports_refused(rig);
    let refused_round = refused_now - ledger.reports_refused;
    ledger.reports_refused = refused_now;

    Figures {
        round,
        kill_after_ms: kill_after,
        accepted_http: load.http.len(),
        accepted_smpp: smpp.len(),
        stored: round_ids.len() - lost.len(),
        lost: lost.len(),
        inbound_injected: injected.len(),
        inbound_acked: smsc_acked + modem_kept,
        inbound_stored: injected.len() - inbound_lost,
        inbound_lost,
        inbound_repeated: repeated.len(),
        requeued,
        possible_duplicates,
        real_duplicates,
        reports_refused: refused_round,
        resent_after_link_drop,
        webhook_events,
        webhook_repeats,
        esme_receipts,
        drain_ms,
        round_ms: round_start.elapsed().as_millis(),
    }
}

/// [`run_load`] with parla killed after `kill_after` ms; the load stops with the kill.
fn run_load_with_kill(
    rig: &mut Rig,
    round: usize,
    clients: u32,
    pause: Duration,
    stop: &AtomicBool,
    kill_after: u64,
) -> Load {
    let pid = rig.parla.as_ref().unwrap().child.id();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            std::thread::sleep(Duration::from_millis(kill_after));
            let pid = libc::pid_t::try_from(pid).unwrap();
            // SAFETY: SIGKILL to our own child process, which is reaped by Binary::kill9.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            stop.store(true, Ordering::Relaxed);
        });
        run_load(rig, round, clients, pause, stop)
    })
}

// ------------------------------------------------------------------------------ the suite

/// kill -9 at random moments under mixed load, `PARLA_RELIABILITY_ROUNDS` rounds (3): nothing
/// accepted lost, no reply lost or stored twice, duplicates only within the channels' windows
/// and all marked, every final status announced. See the module comment.
#[test]
fn kill9_rounds_under_mixed_load() {
    let rounds = env_u64("PARLA_RELIABILITY_ROUNDS", 3) as usize;
    let clients = env_u64("PARLA_RELIABILITY_HTTP_CLIENTS", 4) as u32;
    let pause = Duration::from_millis(env_u64("PARLA_RELIABILITY_PAUSE_MS", 2));
    let kill_within = env_u64("PARLA_RELIABILITY_KILL_WITHIN_MS", 1500);
    let seed = env_u64(
        "PARLA_RELIABILITY_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs()),
    );
    // Printed first, so a failure can be replayed with the same kill moments.
    eprintln!(
        "reliability: seed {seed} (replay: PARLA_RELIABILITY_SEED={seed}), {rounds} rounds, \
         {clients} HTTP clients, kill within {kill_within} ms"
    );
    let mut rng = fastrand::Rng::with_seed(seed);
    let started = Instant::now();
    let mut rig = Rig::start("response_timeout = \"5s\"", &[], true);
    let mut ledger = Ledger::default();
    let mut all = Vec::new();
    eprintln!("{}", Figures::HEADER);
    for round in 0..rounds {
        let f = one_round(
            &mut rig,
            &mut ledger,
            round,
            &mut rng,
            clients,
            pause,
            kill_within,
        );
        eprintln!("{}", f.row());
        all.push(f);
    }
    // A graceful stop at the end leaves nothing behind.
    let mut parla = rig.parla.take().unwrap();
    assert!(parla.terminate().success(), "{}", parla.log());

    let sum = |f: fn(&Figures) -> usize| all.iter().map(f).sum::<usize>();
    let totals = format!(
        "| total | | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | \
         {} | | {} |",
        sum(|f| f.accepted_http),
        sum(|f| f.accepted_smpp),
        sum(|f| f.stored),
        sum(|f| f.lost),
        sum(|f| f.inbound_injected),
        sum(|f| f.inbound_acked),
        sum(|f| f.inbound_stored),
        sum(|f| f.inbound_lost),
        sum(|f| f.inbound_repeated),
        sum(|f| f.requeued),
        sum(|f| f.possible_duplicates),
        sum(|f| f.real_duplicates),
        sum(|f| f.reports_refused),
        sum(|f| f.webhook_events),
        sum(|f| f.webhook_repeats),
        sum(|f| f.esme_receipts),
        started.elapsed().as_millis(),
    );
    eprintln!("{totals}");
    eprintln!(
        "reliability: seed {seed}, {rounds} rounds in {:.1} s; SMS resent after a link drop \
         (history says so, not marked): {}",
        started.elapsed().as_secs_f64(),
        sum(|f| f.resent_after_link_drop)
    );
    if let Ok(path) = std::env::var("PARLA_RELIABILITY_REPORT") {
        let mut text = format!(
            "Seed {seed} (`PARLA_RELIABILITY_SEED={seed}` replays the kill moments), {rounds} \
             rounds, {clients} HTTP clients pausing {} ms, an ESME submitting every 5 ms, a \
             reply through the SMSC every 20 ms and through the modem every 40 ms, kill -9 \
             300..{kill_within} ms into each round's load; {:.1} s in all.\n\n{}\n",
            pause.as_millis(),
            started.elapsed().as_secs_f64(),
            Figures::HEADER
        );
        for f in &all {
            text.push_str(&f.row());
            text.push('\n');
        }
        text.push_str(&totals);
        text.push('\n');
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }
}

// ------------------------------------------------------------------------------ faults

/// HTTP clients posting until `stop`, to the numbers `to(n)` gives; every 202 recorded.
fn post_until(
    client: Client,
    stop: Arc<AtomicBool>,
    tag: &'static str,
    to: fn(u32) -> String,
) -> std::thread::JoinHandle<BTreeMap<String, String>> {
    std::thread::spawn(move || {
        let mut accepted = BTreeMap::new();
        let mut n = 0u32;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let text = format!("{tag}{n} your parcel is on its way");
            let a = client.post("/v1/messages", &json!({"to": to(n), "text": text}));
            assert_eq!(a.status, 202, "{:?}", a.body);
            accepted.insert(a.body["id"].as_str().unwrap().to_string(), text);
            std::thread::sleep(Duration::from_millis(10));
        }
        accepted
    })
}

/// Waits for channel `name` to be in `state`; returns it.
fn wait_channel(client: &Client, name: &str, state: &str) -> Value {
    support::wait_api(client, "/v1/channels", &format!("{name} {state}"), |b| {
        b["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == name && c["state"] == state)
    })["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap()
}

/// Waits until every message in `accepted` is delivered, but for at most as many as the
/// modem's full `SR` memory refused reports for, which stay `sent` on the modem; returns the
/// store's messages by id.
fn wait_all_delivered(rig: &Rig, accepted: &BTreeMap<String, String>) -> BTreeMap<String, Value> {
    let client = rig.client();
    let start = Instant::now();
    loop {
        let all: BTreeMap<String, Value> = client
            .all_messages()
            .into_iter()
            .map(|m| (m["id"].as_str().unwrap().to_string(), m))
            .collect();
        let missing: Vec<&String> = accepted
            .keys()
            .filter(|id| !all.contains_key(*id))
            .collect();
        assert!(missing.is_empty(), "accepted messages lost: {missing:?}");
        let failed: Vec<&Value> = accepted
            .keys()
            .map(|id| &all[id])
            .filter(|m| matches!(m["status"].as_str(), Some("failed" | "expired")))
            .collect();
        assert!(failed.is_empty(), "messages failed: {failed:?}");
        let waiting: Vec<&Value> = accepted
            .keys()
            .map(|id| &all[id])
            .filter(|m| m["status"] != "delivered")
            .collect();
        let refused = reports_refused(rig);
        let only_refused_reports = waiting.len() <= refused
            && waiting
                .iter()
                .all(|m| m["status"] == "sent" && m["channel"] == "modem1");
        if waiting.is_empty() || only_refused_reports {
            return all;
        }
        assert!(
            start.elapsed() < DRAIN_GUARD,
            "{} messages not delivered in {DRAIN_GUARD:?} ({refused} status reports refused by \
             the modem's full SR memory)",
            waiting.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every text that reached the network more than once belongs to a message that says it may
/// have been sent twice: marked possible_duplicate, or with a history that says the SMSC (or
/// modem) may have had it. Returns how many extra copies there were.
fn check_copies_are_accounted(rig: &Rig, messages: &BTreeMap<String, Value>) -> usize {
    let by_text: BTreeMap<&str, &Value> = messages
        .values()
        .filter_map(|m| Some((m["text"].as_str()?, m)))
        .collect();
    let copies = extra_copies(rig);
    for (text, extra) in &copies {
        let m = by_text
            .get(text.as_str())
            .unwrap_or_else(|| panic!("the network got {text:?}, which nobody sent"));
        let says_so = m["possible_duplicate"] == true
            || m["history"].as_array().unwrap().iter().any(|t| {
                t["reason"].as_str().is_some_and(|r| {
                    ["may have the message", "may already", "may have sent it"]
                        .iter()
                        .any(|s| r.contains(s))
                })
            });
        assert!(
            says_so,
            "{text:?} reached the network {} times, and its message does not say it may have: {m}",
            extra + 1
        );
    }
    copies.values().sum()
}

/// The SMSC drops every connection mid-window (twice), stalls, throttles and refuses binds
/// with ESME_RBINDFAIL (a refusal parla backs off from, `bind_refused_backoff`) while messages
/// go out and customers write: every message is delivered, every copy the SMSC got twice is
/// one the message's history owns up to, every reply is stored once, and the link comes back
/// after each fault. tests/smpp.rs checks throttling, a drop and a stall one at a time for
/// outbound only (and a refused bind with wrong credentials); this adds replies and the
/// accounting of copies, under continuous load.
#[test]
fn smsc_faults_under_load_lose_nothing_and_every_copy_is_accounted_for() {
    let mut rig = Rig::start(
        "response_timeout = \"1s\"\nenquire_link_interval = \"1s\"\n\
         throttle_backoff = \"200ms\"\nbind_refused_backoff = \"2s\"",
        &[],
        false,
    );
    let client = rig.client();
    let stop = Arc::new(AtomicBool::new(false));
    let posters: Vec<_> = ["f0.", "f1.", "f2.", "f3."]
        .into_iter()
        .map(|tag| {
            post_until(client.clone(), stop.clone(), tag, |n| {
                format!("+3934800{:05}", n % 100_000)
            })
        })
        .collect();
    let mut replies = Vec::new();
    let mo = |rig: &mut Rig, replies: &mut Vec<String>| {
        for _ in 0..5 {
            let text = format!("r{} is the parcel insured", replies.len());
            rig.smsc.command(&format!(
                "mo +3932000{:05} {SHOP_NUMBER} single {text}",
                replies.len()
            ));
            replies.push(text);
        }
    };
    let submits_ok = |rig: &Rig| {
        rig.smsc
            .events("submit")
            .iter()
            .filter(|e| e["status"] == "0x00000000")
            .count()
    };
    for fault in ["drop", "drop again", "stall", "throttle", "refuse-binds"] {
        // Load under way: some submits accepted since the last fault.
        let before = submits_ok(&rig);
        rig.smsc.wait("submits under way", |events| {
            let n = events
                .iter()
                .filter(|e| e["event"] == "submit" && e["status"] == "0x00000000")
                .count();
            (n >= before + 20).then_some(())
        });
        mo(&mut rig, &mut replies);
        match fault {
            "drop" | "drop again" => {
                rig.smsc.command("drop");
            }
            "stall" => {
                rig.smsc.command("stall on");
                wait_channel(&client, "carrier", "down");
                mo(&mut rig, &mut replies);
                rig.smsc.command("stall off");
            }
            "throttle" => rig.smsc.command("throttle 5"),
            _ => {
                rig.smsc.command("refuse-binds 0x0D");
                rig.smsc.command("drop");
                let down = wait_channel(&client, "carrier", "down");
                let start = Instant::now();
                let down = loop {
                    let c = wait_channel(&client, "carrier", "down");
                    if c["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("RBINDFAIL"))
                    {
                        break c;
                    }
                    assert!(start.elapsed() < support::GUARD, "{down}");
                    std::thread::sleep(Duration::from_millis(50));
                };
                assert!(
                    down["detail"].as_str().unwrap().contains("retrying in"),
                    "{down}"
                );
                mo(&mut rig, &mut replies);
                rig.smsc.command("refuse-binds off");
            }
        }
        wait_channel(&client, "carrier", "up");
    }
    let before = submits_ok(&rig);
    rig.smsc.wait("submits after the last fault", |events| {
        let n = events
            .iter()
            .filter(|e| e["event"] == "submit" && e["status"] == "0x00000000")
            .count();
        (n >= before + 20).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let accepted: BTreeMap<String, String> = posters
        .into_iter()
        .flat_map(|p| p.join().unwrap())
        .collect();
    let messages = wait_all_delivered(&rig, &accepted);
    let copies = check_copies_are_accounted(&rig, &messages);
    let resent = messages
        .values()
        .filter(|m| {
            m["history"].as_array().unwrap().iter().any(|t| {
                t["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("may have the message"))
            })
        })
        .count();
    support::wait_api(&client, "/v1/inbound?limit=500", "every reply", |b| {
        b["items"].as_array().unwrap().len() >= replies.len()
    });
    // A repeat would show up late: let the SMSC's resends and parla's sweeps run once more.
    std::thread::sleep(Duration::from_secs(2));
    let stored = client.get("/v1/inbound?limit=500").body;
    let mut texts: Vec<&str> = stored["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    texts.sort_unstable();
    let mut expected: Vec<&str> = replies.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(texts, expected, "each reply stored exactly once");
    let flagged = messages
        .values()
        .filter(|m| m["possible_duplicate"] == true)
        .count();
    assert_eq!(
        flagged, resent,
        "every message sent again after a drop or an unanswered submit is marked \
         possible_duplicate, and no other"
    );
    eprintln!(
        "SMSC faults: {} messages delivered, {resent} sent again after a drop or a timeout, {} \
         copies the SMSC got twice (each owned up to in its history), {} replies stored once \
         each",
        accepted.len(),
        copies,
        replies.len()
    );
}

/// The modem refuses sends with `+CMS ERROR: 322` (memory full), hangs, vanishes and comes
/// back while messages go out and customers write, and its SIM fills up while parla is down:
/// every message is delivered, every copy the modem sent twice is owned up to, every text the
/// SIM kept is stored once, and those it refused (a full memory) are stored once the network
/// delivers them again. tests/modem.rs checks a vanish, a hang and transient failures one at a
/// time with a single message on the in-process daemon, and kills during inbound only; this
/// runs them on the real binary under load, and fills the SIM.
#[test]
fn modem_faults_under_load_lose_nothing() {
    let mut rig = Rig::start("response_timeout = \"5s\"", &[], false);
    let client = rig.client();
    let stop = Arc::new(AtomicBool::new(false));
    let posters: Vec<_> = ["g0.", "g1."]
        .into_iter()
        .map(|tag| {
            post_until(client.clone(), stop.clone(), tag, |n| {
                format!("+3934799{:05}", n % 100_000)
            })
        })
        .collect();
    let mut texts = Vec::new();
    let receive = |rig: &mut Rig, texts: &mut Vec<String>, count: usize| {
        for _ in 0..count {
            let text = format!("c{} ring the bell twice", texts.len());
            rig.modem
                .command(&format!("receive +3933100{:05} {text}", texts.len()));
            texts.push(text);
        }
    };
    let sends = |rig: &Rig| rig.modem.events("sent").len();
    let under_way = |rig: &Rig| {
        let before = sends(rig);
        rig.modem.wait("sends under way", |events| {
            let n = events.iter().filter(|e| e["event"] == "sent").count();
            (n >= before + 5).then_some(())
        });
    };
    under_way(&rig);
    receive(&mut rig, &mut texts, 3);
    rig.modem.command("fail 3 322");
    under_way(&rig);
    receive(&mut rig, &mut texts, 3);
    rig.modem.command("stall on");
    wait_channel(&client, "modem1", "down");
    receive(&mut rig, &mut texts, 3);
    rig.modem.command("stall off");
    wait_channel(&client, "modem1", "up");
    under_way(&rig);
    rig.modem.command("vanish");
    wait_channel(&client, "modem1", "down");
    rig.modem.command("reappear");
    wait_channel(&client, "modem1", "up");
    receive(&mut rig, &mut texts, 3);
    under_way(&rig);
    stop.store(true, Ordering::Relaxed);
    let accepted: BTreeMap<String, String> = posters
        .into_iter()
        .flat_map(|p| p.join().unwrap())
        .collect();

    // Every status report in before the kill, so none is refused by a full SR memory.
    wait_all_delivered(&rig, &accepted);
    // parla down while more texts come than the SIM holds (30 slots).
    rig.kill9();
    let sim_refusals = |rig: &Rig| {
        rig.modem
            .events("refused")
            .iter()
            .filter(|e| e["memory"] == "SM")
            .count()
    };
    let before = sim_refusals(&rig);
    receive(&mut rig, &mut texts, 35);
    let received = texts.len();
    rig.modem.wait("every text handed to the modem", |events| {
        let n = events.iter().filter(|e| e["event"] == "received").count();
        (n >= received).then_some(())
    });
    let refused = sim_refusals(&rig) - before;
    assert!(refused > 0, "the SIM filled up: {}", rig.modem.all_events());
    rig.start_parla();
    let client = rig.client();
    let messages = wait_all_delivered(&rig, &accepted);
    let copies = check_copies_are_accounted(&rig, &messages);
    // The network delivers the refused ones again once the SIM has room: they were never
    // acknowledged to it. Texts already stored are not sent again by a real network; here the
    // simulator cannot say which were refused, so every text not yet stored is.
    let stored = |client: &Client| -> Vec<String> {
        all_inbound(client)
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_string())
            .collect()
    };
    let kept = texts.len() - refused;
    let start = Instant::now();
    while stored(&client).len() < kept {
        if start.elapsed() > support::GUARD {
            rig.modem.command("counters");
            std::thread::sleep(Duration::from_millis(300));
            let events: Vec<String> = rig
                .modem
                .all_events()
                .lines()
                .filter(|l| !l.contains("\"sent\"") && !l.contains("\"report\""))
                .map(str::to_string)
                .collect();
            let log = rig.log();
            let log: Vec<&str> = log.lines().filter(|l| l.contains("modem")).collect();
            panic!(
                "what the SIM kept ({kept}) not stored in {:?}: {:?}\nmodem events:\n{}\nlog:\n{}",
                support::GUARD,
                stored(&client),
                events.join("\n"),
                log.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let now: BTreeSet<String> = stored(&client).into_iter().collect();
    let again: Vec<String> = texts
        .iter()
        .filter(|t| !now.contains(*t))
        .cloned()
        .collect();
    assert_eq!(
        again.len(),
        refused,
        "exactly the refused texts are missing"
    );
    for (i, text) in again.iter().enumerate() {
        rig.modem.command(&format!("receive +3933199{i:05} {text}"));
    }
    support::wait_api(&client, "/v1/inbound?limit=500", "every text", |b| {
        b["items"].as_array().unwrap().len() >= texts.len()
    });
    std::thread::sleep(Duration::from_secs(2));
    let mut got = stored(&client);
    got.sort();
    let mut expected = texts.clone();
    expected.sort();
    assert_eq!(got, expected, "each text stored exactly once");
    eprintln!(
        "modem faults: {} messages accepted, {} of them left sent (their status report refused \
         by the full SR memory while the modem hung or was gone), the others delivered; {copies} \
         copies the modem sent twice (each owned up to), {} texts stored once each ({refused} \
         refused by the full SIM, delivered again)",
        accepted.len(),
        messages.values().filter(|m| m["status"] == "sent").count(),
        texts.len()
    );
}

/// A process killed between `AT+CMGS` and its PDU leaves the modem waiting for the PDU: it
/// takes every later line as PDU text until ESC. The next parla must get it back (it sends ESC
/// when its first `AT` goes unanswered) and then send and receive. Done here by hand on the
/// pty, so it does not depend on a kill landing at that moment (the kill rounds above found
/// it that way).
#[test]
fn a_modem_left_at_the_send_prompt_by_a_killed_process_comes_back() {
    let mut rig = Rig::start("response_timeout = \"5s\"", &[], false);
    rig.kill9();
    let link = rig.dir.path().join("modem0");
    {
        let mut port = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&link)
            .unwrap();
        port.write_all(b"AT+CMGS=20\r").unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 64];
        while !seen.ends_with(b"> ") {
            let n = port.read(&mut buf).unwrap();
            assert!(n > 0, "the modem closed the line");
            seen.extend_from_slice(&buf[..n]);
        }
        // Killed here: no PDU, no ESC.
    }
    rig.start_parla();
    let client = rig.client();
    let a = client.post(
        "/v1/messages",
        &json!({"to": "+393479900001", "text": "after the prompt"}),
    );
    assert_eq!(a.status, 202, "{:?}", a.body);
    support::wait_delivered(&client, a.body["id"].as_str().unwrap());
    rig.modem.command("receive +393310000001 still there?");
    support::wait_api(&client, "/v1/inbound", "the text", |b| {
        b["items"][0]["text"] == "still there?"
    });
}
