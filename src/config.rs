//! Typed settings. Three layers, later ones winning: the defaults built into these structs, the
//! TOML file, and `PARLA_SECTION__KEY` environment variables (e.g. `PARLA_HTTP__LISTEN`). Every
//! struct denies unknown keys, so a typo is an error rather than a silently ignored setting, and
//! [`load`] reports every problem at once, each with its key path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::message::Kind;

/// Where the daemon's settings come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A TOML file, which must exist.
    File(PathBuf),
    /// No file: the embedded demo (simulated channel, store in ./parla-data).
    Demo,
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// `[http]`: the API.
    pub http: HttpSettings,
    /// `[store]`: the durable store.
    pub store: StoreSettings,
    /// `[defaults]`: what a message gets when it does not say.
    pub defaults: Defaults,
    /// `[retry]`: backoff of transient failures.
    pub retry: RetrySettings,
    /// `[sim]`: the simulated channel.
    pub sim: SimSettings,
    /// `[[modem]]`: GSM modems, one table each.
    #[serde(rename = "modem")]
    pub modems: Vec<ModemSettings>,
    /// `[smpp]`: SMPP carrier links (`[[smpp.client]]`).
    pub smpp: SmppSettings,
    /// `[[route]]`: which channels send to which destinations, in which order.
    #[serde(rename = "route")]
    pub routes: Vec<crate::route::RouteSettings>,
    /// `[[webhook]]`: endpoints that receive events.
    #[serde(rename = "webhook")]
    pub webhooks: Vec<WebhookSettings>,
    /// `[callbacks]`: per-message `callback_url`s, off until a secret is set.
    pub callbacks: CallbackSettings,
    /// `[optouts]`: STOP / START / HELP keywords and their confirmations.
    pub optouts: OptOutSettings,
    /// `[quiet_hours]`: when marketing messages wait.
    pub quiet_hours: QuietHoursSettings,
    /// `[conversations]`: which thread a customer's message joins.
    pub conversations: ConversationSettings,
    /// `[log]`: how the daemon logs.
    pub log: LogSettings,
}

/// How log lines are written (to stderr: journald under systemd).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// "plain" (one readable line per event) or "json" (one JSON object per line, for log
    /// shippers).
    pub format: LogFormat,
    /// The level filter ("info", "debug", "parla=debug,fjall=warn"); RUST_LOG overrides it.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Plain,
            level: "info".into(),
        }
    }
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// How customers' messages are put into conversations.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConversationSettings {
    /// A customer's message to a number the shop never wrote to them from (the reply number
    /// of an alphanumeric sender) joins their latest conversation active within this window.
    #[serde(with = "humantime_serde")]
    pub reply_window: Duration,
}

impl Default for ConversationSettings {
    fn default() -> Self {
        ConversationSettings {
            reply_window: Duration::from_millis(
                crate::store::DEFAULT_REPLY_WINDOW_MS.unsigned_abs(),
            ),
        }
    }
}

/// The longest reply window: a customer's answer months later is a new conversation.
const MAX_REPLY_WINDOW: Duration = Duration::from_secs(90 * 24 * 3600);

/// The daily window when marketing messages are not sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuietHoursSettings {
    /// Whether marketing messages wait through the window.
    pub enabled: bool,
    /// When it starts ("HH:MM", local time in `time_zone`).
    pub start: String,
    /// When it ends; before `start`: the next day.
    pub end: String,
    /// IANA time zone of the shop's customers ("Europe/Rome").
    pub time_zone: String,
}

impl Default for QuietHoursSettings {
    fn default() -> Self {
        QuietHoursSettings {
            enabled: false,
            start: "21:00".into(),
            end: "08:00".into(),
            time_zone: "UTC".into(),
        }
    }
}

impl QuietHoursSettings {
    /// The window, when enabled and valid.
    pub fn window(&self) -> Option<crate::schedule::QuietHours> {
        if !self.enabled {
            return None;
        }
        crate::schedule::QuietHours::new(&self.start, &self.end, &self.time_zone).ok()
    }
}

/// A webhook endpoint: where events are POSTed, signed with its secret.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// Its name (logs, and the events' outbox).
    pub name: String,
    /// The URL events are POSTed to (http or https).
    pub url: String,
    /// The Standard Webhooks secret: "whsec_" followed by base64 of at least 24 random bytes.
    pub secret: String,
    /// The events it receives; default: all.
    pub events: Vec<crate::webhook::event::EventType>,
    /// The longest wait for an answer to one POST.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long an event is retried before it is dead-lettered.
    #[serde(with = "humantime_serde")]
    pub retry_for: Duration,
    /// POSTs to it in flight at once at most.
    pub max_in_flight: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            name: String::new(),
            url: String::new(),
            secret: String::new(),
            events: crate::webhook::event::EventType::ALL.to_vec(),
            timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(3 * 24 * 3600),
            max_in_flight: 4,
        }
    }
}

/// Per-message callbacks: a message submitted with a `callback_url` gets its own status events
/// POSTed there, signed with this section's secret. API clients choose these URLs, so the
/// section is off until a secret is set, and an operator can confine them to known hosts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallbackSettings {
    /// The Standard Webhooks secret every callback is signed with ("whsec_" and base64 of at
    /// least 24 random bytes); empty: callbacks are off and `callback_url` is refused.
    pub secret: String,
    /// The longest wait for an answer to one POST.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long an event is retried before it is dead-lettered.
    #[serde(with = "humantime_serde")]
    pub retry_for: Duration,
    /// POSTs in flight at once over all hosts; each host gets at most a few of them, so a
    /// slow host cannot take them all.
    pub max_in_flight: usize,
    /// The hosts callback URLs may name: "shop.example.com", or "*.example.com" for any
    /// name under example.com; empty: any host. Against API clients that would make the
    /// gateway call hosts the operator did not mean to. In the environment: a comma-separated
    /// list.
    #[serde(deserialize_with = "list_or_comma_string")]
    pub allowed_hosts: Vec<String>,
    /// Whether callbacks may go to loopback, private, link-local (cloud metadata) and other
    /// non-public addresses; off, such URLs are refused and names resolving only to such
    /// addresses are not connected to.
    pub allow_private_addresses: bool,
}

impl Default for CallbackSettings {
    fn default() -> Self {
        CallbackSettings {
            secret: String::new(),
            timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(3 * 24 * 3600),
            max_in_flight: 64,
            allowed_hosts: Vec::new(),
            allow_private_addresses: false,
        }
    }
}

impl CallbackSettings {
    /// Whether callbacks are on (a secret is set).
    pub fn enabled(&self) -> bool {
        !self.secret.is_empty()
    }
}

impl Settings {
    /// Every channel's name, in the order channels are started.
    pub fn channel_names(&self) -> Vec<String> {
        let sim = self.sim.enabled.then(|| self.sim.name.clone());
        sim.into_iter()
            .chain(self.modems.iter().map(|m| m.name.clone()))
            .chain(self.smpp.client.iter().map(|c| c.name.clone()))
            .collect()
    }
}

/// SMPP.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SmppSettings {
    /// `[[smpp.client]]`: links to carriers' SMSCs, one table each; each is a channel.
    pub client: Vec<SmppClientSettings>,
    /// `[smpp.server]`: the SMPP server integrators bind to.
    pub server: SmppServerSettings,
}

/// The SMPP server for integrators (parla as their SMSC).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmppServerSettings {
    /// Whether it listens.
    pub enabled: bool,
    /// Where it listens.
    pub listen: SocketAddr,
    /// The system_id parla answers binds with.
    pub system_id: String,
    /// Connections open at most (binds or not).
    pub max_connections: usize,
    /// Silence after which a connection is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Silence after which parla sends enquire_link.
    #[serde(with = "humantime_serde")]
    pub enquire_link_interval: Duration,
    /// Longest wait for a client's answer (deliver_sm_resp, enquire_link_resp), and for its
    /// bind after it connects.
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// How long after a message to a customer their reply still belongs to the account that
    /// sent it (reply routing by conversation).
    #[serde(with = "humantime_serde")]
    pub conversation_window: Duration,
    /// `[[smpp.server.account]]`: who may bind.
    pub account: Vec<SmppAccountSettings>,
}

impl Default for SmppServerSettings {
    fn default() -> Self {
        SmppServerSettings {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 2775)),
            system_id: "parla".into(),
            max_connections: 64,
            idle_timeout: Duration::from_secs(300),
            enquire_link_interval: Duration::from_secs(30),
            response_timeout: Duration::from_secs(10),
            conversation_window: Duration::from_secs(7 * 24 * 3600),
            account: Vec::new(),
        }
    }
}

/// An integrator's account on the SMPP server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmppAccountSettings {
    /// The bind's system_id (at most 15 characters).
    pub system_id: String,
    /// Argon2id hash of the password in PHC form, from `parla hash-password`.
    pub password_hash: String,
    /// Bind modes allowed: transceiver, transmitter, receiver, transmitter_receiver (both
    /// halves).
    pub bind_modes: Vec<SmppBindMode>,
    /// Binds of this account open at once at most.
    pub max_binds: usize,
    /// submit_sm per second at most over all its binds (ESME_RTHROTTLED beyond); 0: no limit.
    pub max_rate: f64,
    /// submit_sm awaiting their submit_sm_resp at most per bind (ESME_RMSGQFUL beyond).
    pub window: usize,
    /// Senders it may use (exact, as in source_addr or +E.164); empty: any.
    pub allowed_sources: Vec<String>,
    /// Client addresses it may bind from (CIDR, e.g. "10.0.0.0/8"); empty: any.
    pub allowed_ips: Vec<ipnet::IpNet>,
    /// deliver_sm (receipts, replies) sent and unanswered at most per bind.
    pub deliver_window: usize,
    /// What its data_coding 0 means, both in its submits and in the replies sent to it.
    pub default_alphabet: DefaultAlphabet,
    /// How replies longer than one SMS are delivered to it: "udh", "sar" or "payload".
    pub long_messages: crate::smpp::content::LongMethod,
    /// Customer replies to these numbers (the number they wrote to) go to this account.
    pub reply_numbers: Vec<String>,
    /// Customer messages whose first word is one of these (any case) go to this account.
    pub reply_keywords: Vec<String>,
    /// Customer messages no rule gives to an account go to this one (at most one account).
    pub catch_all_replies: bool,
    /// Where the integrator's ESME listens for an SMPP outbind: while receipts or replies wait
    /// and no bind of the account receives, parla connects there and asks it to bind. Unset:
    /// parla waits for the client to bind.
    pub outbind: Option<SocketAddr>,
    /// The password parla's outbind carries (the ESME may check it; at most 8 characters).
    pub outbind_password: String,
    /// How long parla waits between outbind attempts.
    #[serde(with = "humantime_serde")]
    pub outbind_interval: Duration,
}

impl Default for SmppAccountSettings {
    fn default() -> Self {
        SmppAccountSettings {
            system_id: String::new(),
            password_hash: String::new(),
            bind_modes: vec![
                SmppBindMode::Transceiver,
                SmppBindMode::Transmitter,
                SmppBindMode::Receiver,
            ],
            max_binds: 4,
            max_rate: 0.0,
            window: 100,
            allowed_sources: Vec::new(),
            allowed_ips: Vec::new(),
            deliver_window: 10,
            default_alphabet: DefaultAlphabet::Gsm7,
            long_messages: crate::smpp::content::LongMethod::Udh,
            reply_numbers: Vec::new(),
            reply_keywords: Vec::new(),
            catch_all_replies: false,
            outbind: None,
            outbind_password: String::new(),
            outbind_interval: Duration::from_secs(30),
        }
    }
}

/// How a link binds to its SMSC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SmppBindMode {
    /// One connection sends and receives.
    Transceiver,
    /// Two connections: one sends, one receives (SMSCs without transceiver binds).
    TransmitterReceiver,
    /// Send only: no receipts and no replies arrive on this link.
    Transmitter,
    /// Receive only (a number for replies, sent to through another link).
    Receiver,
}

/// What an SMSC means by data_coding 0 ("SMSC default alphabet").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAlphabet {
    /// GSM 03.38, as SMPP says.
    Gsm7,
    /// ISO-8859-1 (and so ASCII), as some SMSCs pass it through.
    Latin1,
}

/// One SMPP link to a carrier's SMSC.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmppClientSettings {
    /// Channel name, used in message records and `GET /v1/channels`.
    pub name: String,
    /// The SMSC's host name or address.
    pub host: String,
    /// The SMSC's port.
    pub port: u16,
    /// Account (bind system_id), at most 15 characters.
    pub system_id: String,
    /// Password, at most 8 characters.
    pub password: String,
    /// system_type of the bind, when the carrier asks for one (at most 12 characters).
    pub system_type: String,
    /// transceiver, transmitter_receiver, transmitter or receiver.
    pub bind: SmppBindMode,
    /// SMPP version the bind announces: 0x34 (3.4), or 0x33 for old SMSCs.
    pub interface_version: u8,
    /// address_range of receiver binds (which numbers' replies to receive; "" for all).
    pub address_range: String,
    /// submit_sm awaiting their response at most (the carrier's contract says how many).
    pub window: usize,
    /// submit_sm per second at most; 0 for no limit.
    pub max_rate: f64,
    /// Silence after which an enquire_link checks the link.
    #[serde(with = "humantime_serde")]
    pub enquire_link_interval: Duration,
    /// Longest wait for the answer to a request (bind, submit_sm, enquire_link).
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// Longest wait for the TCP connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// First wait before reconnecting after the link failed; doubles (with jitter) up to
    /// `reconnect_max`.
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest wait between reconnects.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Wait after the SMSC refused the credentials (retrying sooner cannot help and may lock
    /// the account).
    #[serde(with = "humantime_serde")]
    pub bind_refused_backoff: Duration,
    /// Pause of the whole link after the SMSC said "throttled"; doubles while it keeps saying so.
    #[serde(with = "humantime_serde")]
    pub throttle_backoff: Duration,
    /// Sender for messages that name none: a number (+E.164 or short code) or an alphanumeric
    /// id of up to 11 characters. Unset: the SMSC's default.
    pub source: Option<String>,
    /// TON of the sender, instead of the automatic one (1 for +numbers, 3 for short codes, 5
    /// for alphanumeric ids).
    pub source_ton: Option<u8>,
    /// NPI of the sender, instead of the automatic one.
    pub source_npi: Option<u8>,
    /// TON of recipients (1: international; they are stored in E.164).
    pub dest_ton: u8,
    /// NPI of recipients (1: E.164).
    pub dest_npi: u8,
    /// data_coding of texts in the GSM alphabet: gsm7 (0), latin1 (3, when the text fits
    /// Latin-1) or ucs2 (8). Other texts always go as UCS-2 (8).
    pub data_coding: crate::smpp::content::CodingPolicy,
    /// GSM 7-bit texts (data_coding 0) packed 7-bit, rather than one character per octet.
    pub gsm7_packed: bool,
    /// How the SMSC writes data_coding 0 in replies: gsm7 (GSM 03.38, the standard) or latin1
    /// (SMSCs that pass ASCII / ISO-8859-1 through).
    pub default_alphabet: DefaultAlphabet,
    /// How texts longer than one SMS go: udh (parts with a header), sar (parts with SAR
    /// parameters) or payload (one message_payload; the SMSC splits it).
    pub long_messages: crate::smpp::content::LongMethod,
    /// Ask for delivery receipts.
    pub registered_delivery: bool,
    /// service_type of submit_sm ("" for the SMSC's default).
    pub service_type: String,
    /// A customer's SMS delivered again with the same addresses and content within this time
    /// is taken for the SMSC resending it (its deliver_sm_resp was lost) and stored once; 0
    /// keeps every copy.
    #[serde(with = "humantime_serde")]
    pub mo_dedupe_window: Duration,
}

impl Default for SmppClientSettings {
    fn default() -> Self {
        SmppClientSettings {
            name: String::new(),
            host: String::new(),
            port: 2775,
            system_id: String::new(),
            password: String::new(),
            system_type: String::new(),
            bind: SmppBindMode::Transceiver,
            interface_version: 0x34,
            address_range: String::new(),
            window: 10,
            max_rate: 0.0,
            enquire_link_interval: Duration::from_secs(30),
            response_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            bind_refused_backoff: Duration::from_secs(300),
            throttle_backoff: Duration::from_secs(1),
            source: None,
            source_ton: None,
            source_npi: None,
            dest_ton: 1,
            dest_npi: 1,
            data_coding: crate::smpp::content::CodingPolicy::Gsm7,
            gsm7_packed: false,
            default_alphabet: DefaultAlphabet::Gsm7,
            long_messages: crate::smpp::content::LongMethod::Udh,
            registered_delivery: true,
            service_type: String::new(),
            mo_dedupe_window: Duration::from_secs(300),
        }
    }
}

/// Opt-outs: customers' STOP / STOPALL / START / HELP messages (see [`crate::optout`]).
/// Keywords are compared with the customer's whole message, ignoring case, accents and
/// trailing `.`, `!` and `?`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptOutSettings {
    /// Whether customers' keywords change the suppression list and are answered. The list
    /// (managed through the API too) refuses messages at submit either way.
    pub enabled: bool,
    /// Keywords that opt the customer out of marketing messages.
    #[serde(deserialize_with = "list_or_comma_string")]
    pub stop_keywords: Vec<String>,
    /// Keywords that opt the customer out of every message, transactional ones too.
    #[serde(deserialize_with = "list_or_comma_string")]
    pub stop_all_keywords: Vec<String>,
    /// Keywords that take the customer off the list.
    #[serde(deserialize_with = "list_or_comma_string")]
    pub start_keywords: Vec<String>,
    /// Keywords answered with `help_reply`; the list does not change.
    #[serde(deserialize_with = "list_or_comma_string")]
    pub help_keywords: Vec<String>,
    /// Confirmation of a STOP keyword; "" for none.
    pub stop_reply: String,
    /// Confirmation of a STOPALL keyword; "" for none.
    pub stop_all_reply: String,
    /// Confirmation of a START keyword; "" for none.
    pub start_reply: String,
    /// Answer to a HELP keyword; "" for none.
    pub help_reply: String,
}

fn words(list: &[&str]) -> Vec<String> {
    list.iter().map(|w| w.to_string()).collect()
}

impl Default for OptOutSettings {
    fn default() -> Self {
        OptOutSettings {
            enabled: true,
            stop_keywords: words(&[
                "STOP",
                "UNSUBSCRIBE",
                "CANCEL",
                "END",
                "QUIT",
                // Italian
                "BASTA",
                "ANNULLA",
                "DISISCRIVI",
                "DISISCRIVIMI",
                "CANCELLAMI",
                // Spanish
                "BAJA",
                "PARAR",
                "CANCELAR",
                // French (accents do not matter: ARRÊT, DÉSABONNER match too)
                "ARRET",
                "DESABONNER",
                "DESINSCRIRE",
                // German
                "STOPP",
                "ABMELDEN",
                "ABBESTELLEN",
                "ENDE",
            ]),
            stop_all_keywords: words(&["STOPALL"]),
            start_keywords: words(&[
                "START",
                "UNSTOP",
                "SUBSCRIBE",
                // Italian
                "ISCRIVI",
                "ISCRIVIMI",
                // Spanish
                "ALTA",
                "SUSCRIBIR",
                // French
                "ABONNER",
                // German
                "ANMELDEN",
            ]),
            help_keywords: words(&["HELP", "INFO", "AIUTO", "AYUDA", "AIDE", "HILFE"]),
            stop_reply: "You will no longer receive marketing messages from us. \
                         Reply START to receive them again."
                .into(),
            stop_all_reply: "You will no longer receive any messages from us, order \
                             updates included. Reply START to receive them again."
                .into(),
            start_reply: "You will receive our messages again. Reply STOP to stop \
                          marketing messages, STOPALL to stop all messages."
                .into(),
            help_reply: "Reply STOP to stop marketing messages, STOPALL to stop all \
                         messages, START to receive them again."
                .into(),
        }
    }
}

impl OptOutSettings {
    /// Each keyword list with its key and what its keywords are.
    pub fn lists(&self) -> [(&'static str, &[String], crate::optout::Keyword); 4] {
        use crate::optout::Keyword;
        [
            ("stop_keywords", &self.stop_keywords, Keyword::Stop),
            (
                "stop_all_keywords",
                &self.stop_all_keywords,
                Keyword::StopAll,
            ),
            ("start_keywords", &self.start_keywords, Keyword::Start),
            ("help_keywords", &self.help_keywords, Keyword::Help),
        ]
    }
}

/// Keywords are one word each and in one list only; replies fit `max_parts` SMS.
fn validate_optouts(o: &OptOutSettings, max_parts: u8, out: &mut Vec<ConfigProblem>) {
    let mut seen: Vec<(String, String)> = Vec::new();
    for (list, keywords, _) in o.lists() {
        for (j, k) in keywords.iter().enumerate() {
            let key = format!("optouts.{list}.{j}");
            if k.is_empty() || k.chars().any(|c| c.is_whitespace() || c.is_control()) {
                out.push(problem(key, "one word, without spaces"));
                continue;
            }
            let folded = crate::optout::fold(k);
            match seen.iter().find(|(f, _)| *f == folded) {
                Some((_, other)) if !other.starts_with(&format!("optouts.{list}.")) => {
                    out.push(problem(
                        key,
                        format!("{k} is in {other} too; a keyword can mean only one thing"),
                    ));
                }
                Some(_) => {}
                None => seen.push((folded, key)),
            }
        }
    }
    for (k, text) in [
        ("stop_reply", &o.stop_reply),
        ("stop_all_reply", &o.stop_all_reply),
        ("start_reply", &o.start_reply),
        ("help_reply", &o.help_reply),
    ] {
        let (encoding, parts) = crate::codec::gsm7::count_parts(text);
        // max_parts 0 is reported on its own key.
        if max_parts > 0 && parts > usize::from(max_parts) {
            out.push(problem(
                format!("optouts.{k}"),
                format!(
                    "needs {parts} SMS parts in {}; defaults.max_parts allows {max_parts}",
                    encoding.as_str()
                ),
            ));
        }
    }
}

/// Serial flow control of a modem's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowControl {
    /// No flow control (most USB modems).
    None,
    /// RTS/CTS.
    Hardware,
    /// XON/XOFF.
    Software,
}

/// One GSM modem.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModemSettings {
    /// Channel name, used in message records and `GET /v1/channels`.
    pub name: String,
    /// The serial device; prefer a stable /dev/serial/by-id/... path.
    pub port: PathBuf,
    /// Line speed. USB modems ignore it; real serial lines (and autobauding modems) need it right.
    pub baud_rate: u32,
    /// Flow control on the line.
    pub flow_control: FlowControl,
    /// SIM PIN, entered once if the SIM asks (never retried: wrong tries lock the SIM).
    pub pin: Option<String>,
    /// The SIM's own number in E.164, shown as the recipient of inbound messages.
    pub number: Option<String>,
    /// SMS centre to put in each PDU; unset: the one stored on the SIM.
    pub smsc: Option<String>,
    /// Storage for received messages: "SM" (SIM), "ME" (modem), "MT" (both).
    pub storage: String,
    /// `AT+CNMI` parameters; fallbacks and then polling are tried when the modem refuses them.
    pub indications: String,
    /// Ask the network for status reports (delivery receipts).
    pub status_reports: bool,
    /// Longest wait for an ordinary command's answer.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Longest wait for the network to take a message after the PDU is written.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// How often signal, registration and operator are read.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    /// How often storage is read when the modem cannot announce new messages.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often storage is read anyway, so a missed announcement loses nothing.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Consecutive timeouts after which the modem is reset.
    pub unresponsive_after: u32,
    /// Command that resets a hung modem before the port is opened again; "" for none.
    pub reset_command: String,
    /// Longest wait between attempts to open a port that is gone (it doubles up to this).
    #[serde(with = "humantime_serde")]
    pub reopen_max_backoff: Duration,
    /// Least time between two messages, to keep the SIM under carriers' spam limits.
    #[serde(with = "humantime_serde")]
    pub min_send_interval: Duration,
    /// Most messages (parts) a day through this SIM; 0 for no cap.
    pub daily_cap: u32,
    /// Extra AT commands at the end of initialisation (vendor settings).
    pub init_commands: Vec<String>,
}

impl Default for ModemSettings {
    fn default() -> Self {
        ModemSettings {
            name: String::new(),
            port: PathBuf::new(),
            baud_rate: 115_200,
            flow_control: FlowControl::None,
            pin: None,
            number: None,
            smsc: None,
            storage: "SM".into(),
            indications: "2,1,0,2,0".into(),
            status_reports: true,
            command_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(60),
            health_interval: Duration::from_secs(60),
            poll_interval: Duration::from_secs(15),
            sweep_interval: Duration::from_secs(300),
            unresponsive_after: 3,
            reset_command: "AT+CFUN=1,1".into(),
            reopen_max_backoff: Duration::from_secs(60),
            min_send_interval: Duration::ZERO,
            daily_cap: 0,
            init_commands: Vec::new(),
        }
    }
}

/// The local HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Address to listen on. Keep it on loopback unless tokens are set.
    pub listen: SocketAddr,
    /// Bearer tokens that may use the API. Empty: only clients on loopback are answered.
    /// In the environment: a comma-separated list.
    #[serde(deserialize_with = "list_or_comma_string")]
    pub tokens: Vec<String>,
    /// Largest request body accepted; larger ones get 413 before they are read.
    pub max_body_bytes: usize,
    /// Requests handled at once; more wait for a slot (backpressure, not memory growth).
    pub max_concurrent_requests: usize,
    /// Open connections at once; further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// A client must send a request's headers within this time, or its connection is closed
    /// (so idle or trickling connections cannot hold the server's slots forever).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8725)),
            tokens: Vec::new(),
            max_body_bytes: 64 * 1024,
            max_concurrent_requests: 1024,
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

/// The durable store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// Database directory. Default: $STATE_DIRECTORY (set by systemd) or ./parla-data.
    pub path: Option<PathBuf>,
    /// The storage engine's block cache in MiB: the main lever on memory use.
    pub cache_capacity_mb: u64,
    /// How long finished messages (delivered, failed, expired, canceled) stay readable.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Most write requests committed by one flush.
    pub max_group: usize,
    /// Free disk space (MiB) kept in reserve: below it, writes are refused with 503 instead of
    /// running the disk full (which would need a restart to recover from).
    pub min_free_mb: u64,
    /// How long the parts of a concatenated inbound message are waited for; after it, what
    /// arrived is stored as an incomplete message (with its missing parts named).
    #[serde(with = "humantime_serde")]
    pub reassembly_timeout: Duration,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            path: None,
            cache_capacity_mb: 8,
            retention: Duration::from_secs(7 * 24 * 3600),
            max_group: 4096,
            min_free_mb: 64,
            reassembly_timeout: Duration::from_secs(3600),
        }
    }
}

impl StoreSettings {
    /// The directory to use, resolving the default.
    pub fn resolved_path(&self) -> PathBuf {
        if let Some(p) = &self.path {
            return p.clone();
        }
        // systemd may list several directories, separated by colons; ours is the first.
        match std::env::var("STATE_DIRECTORY") {
            Ok(dirs) if !dirs.is_empty() => PathBuf::from(dirs.split(':').next().unwrap_or(&dirs)),
            _ => PathBuf::from("./parla-data"),
        }
    }
}

/// Defaults applied to submitted messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// ISO 3166 region (e.g. "IT") for numbers written without +country code; unset: such
    /// numbers are refused.
    pub region: Option<String>,
    /// Kind of a message that does not say.
    pub kind: Kind,
    /// How long a message may wait to be sent before it expires.
    #[serde(with = "humantime_serde")]
    pub validity: Duration,
    /// Longest message accepted, in parts (each part is billed as one SMS).
    pub max_parts: u8,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            region: None,
            kind: Kind::Transactional,
            validity: Duration::from_secs(48 * 3600),
            max_parts: 10,
        }
    }
}

/// Shortest validity a message may have (config default or API `validity_s`).
pub const MIN_VALIDITY: Duration = Duration::from_secs(60);
/// Longest validity a message may have.
pub const MAX_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);

/// Retries of transient channel failures: exponential backoff with jitter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Wait before the second attempt.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Factor between consecutive backoffs (>= 1).
    pub multiplier: f64,
    /// Share of each backoff that is randomized (0 to 1), so retries of many messages spread out.
    pub jitter: f64,
    /// Attempts before a message that keeps failing transiently is marked failed.
    pub max_attempts: u32,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            initial_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(600),
            multiplier: 2.0,
            jitter: 0.2,
            max_attempts: 20,
        }
    }
}

/// The built-in simulated channel: accepts messages, reports deliveries, has customers reply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimSettings {
    /// Whether the simulated channel runs (always, in the embedded demo).
    pub enabled: bool,
    /// Channel name used in message records.
    pub name: String,
    /// Time the simulated network takes to accept one part.
    #[serde(with = "humantime_serde")]
    pub accept_delay: Duration,
    /// Time from acceptance to the delivery receipt.
    #[serde(with = "humantime_serde")]
    pub delivery_delay: Duration,
    /// Share of messages (0 to 1) whose receipt says undeliverable.
    pub failure_share: f64,
    /// Share of delivered messages (0 to 1) the simulated customer answers.
    pub reply_share: f64,
    /// Messages the channel holds at once (its in-flight window).
    pub window: usize,
}

impl Default for SimSettings {
    fn default() -> Self {
        SimSettings {
            enabled: false,
            name: "sim".into(),
            accept_delay: Duration::from_millis(20),
            delivery_delay: Duration::from_secs(2),
            failure_share: 0.05,
            reply_share: 0.25,
            window: 1024,
        }
    }
}

/// Checks every channel (modems, SMPP links) and that their names are unique.
fn validate_channels(s: &Settings, out: &mut Vec<ConfigProblem>) {
    let mut names: Vec<&str> = Vec::new();
    if s.sim.enabled {
        names.push(&s.sim.name);
    }
    validate_modems(s, &mut names, out);
    validate_smpp_clients(s, &mut names, out);
    validate_smpp_server(&s.smpp.server, out);
    for (key, message) in crate::route::check(&s.routes, &names) {
        out.push(problem(key, message));
    }
    validate_webhooks(&s.webhooks, s.store.retention, out);
    validate_callbacks(&s.callbacks, s.store.retention, out);
    if let Err((key, message)) = crate::schedule::QuietHours::new(
        &s.quiet_hours.start,
        &s.quiet_hours.end,
        &s.quiet_hours.time_zone,
    ) {
        out.push(problem(format!("quiet_hours.{key}"), message));
    }
    if tracing_subscriber::EnvFilter::try_new(&s.log.level).is_err() {
        out.push(problem(
            "log.level",
            "a level or filter such as \"info\", \"debug\" or \"parla=debug,fjall=warn\"",
        ));
    }
    let window = s.conversations.reply_window;
    if window.is_zero() || window > MAX_REPLY_WINDOW {
        out.push(problem(
            "conversations.reply_window",
            "a duration from 1s to 90d (e.g. \"7d\")",
        ));
    }
}

fn validate_webhooks(
    webhooks: &[WebhookSettings],
    retention: Duration,
    out: &mut Vec<ConfigProblem>,
) {
    let mut names: Vec<&str> = Vec::new();
    for (i, w) in webhooks.iter().enumerate() {
        let key = |k: &str| format!("webhook.{i}.{k}");
        if w.name.is_empty()
            || w.name.len() > 64
            || !w
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            out.push(problem(key("name"), "1 to 64 letters, digits, '-' or '_'"));
        } else if names.contains(&w.name.as_str()) {
            out.push(problem(
                key("name"),
                format!("{} names another webhook already", w.name),
            ));
        }
        names.push(&w.name);
        if !(w.url.starts_with("http://") || w.url.starts_with("https://"))
            || w.url.chars().any(char::is_whitespace)
        {
            out.push(problem(key("url"), "an http:// or https:// URL"));
        }
        if let Err(e) = crate::webhook::event::secret_key(&w.secret) {
            out.push(problem(key("secret"), e));
        }
        if w.events.is_empty() {
            out.push(problem(key("events"), "at least one event"));
        }
        validate_delivery(&key, (w.timeout, w.retry_for, retention), out);
        if !(1..=256).contains(&w.max_in_flight) {
            out.push(problem(key("max_in_flight"), "must be between 1 and 256"));
        }
    }
}

/// The checks webhook endpoints and callbacks share: the timeout, and a retry_for within the
/// retention (`timing`), each under `key`.
fn validate_delivery(
    key: &dyn Fn(&str) -> String,
    (timeout, retry_for, retention): (Duration, Duration, Duration),
    out: &mut Vec<ConfigProblem>,
) {
    if timeout < Duration::from_millis(100) {
        out.push(problem(key("timeout"), "must be at least 100ms"));
    }
    if retry_for < Duration::from_secs(1) {
        out.push(problem(key("retry_for"), "must be at least 1s"));
    } else if retry_for > retention {
        // The store drops outbox entries older than the retention.
        out.push(problem(
            key("retry_for"),
            format!(
                "must not exceed store.retention ({}): older events are dropped",
                humantime::format_duration(retention)
            ),
        ));
    }
}

fn validate_callbacks(c: &CallbackSettings, retention: Duration, out: &mut Vec<ConfigProblem>) {
    let key = |k: &str| format!("callbacks.{k}");
    // Off (no secret), the rest is unused: an old config with a short retention stays valid.
    if !c.enabled() {
        return;
    }
    if let Err(e) = crate::webhook::event::secret_key(&c.secret) {
        out.push(problem(key("secret"), e));
    }
    validate_delivery(&key, (c.timeout, c.retry_for, retention), out);
    if !(1..=1024).contains(&c.max_in_flight) {
        out.push(problem(key("max_in_flight"), "must be between 1 and 1024"));
    }
    for (i, host) in c.allowed_hosts.iter().enumerate() {
        if let Err(e) = crate::webhook::callback::HostPattern::parse(host) {
            out.push(problem(format!("callbacks.allowed_hosts.{i}"), e));
        }
    }
}

fn validate_smpp_server(server: &SmppServerSettings, out: &mut Vec<ConfigProblem>) {
    let key = |k: &str| format!("smpp.server.{k}");
    if server.system_id.is_empty() || server.system_id.len() > 15 {
        out.push(problem(key("system_id"), "1 to 15 characters"));
    }
    if server.max_connections == 0 {
        out.push(problem(key("max_connections"), "must be at least 1"));
    }
    for (k, d) in [
        ("idle_timeout", server.idle_timeout),
        ("enquire_link_interval", server.enquire_link_interval),
        ("response_timeout", server.response_timeout),
    ] {
        if d < Duration::from_millis(100) {
            out.push(problem(key(k), "must be at least 100ms"));
        }
    }
    if server.conversation_window < Duration::from_secs(1) {
        out.push(problem(key("conversation_window"), "must be at least 1s"));
    }
    if server.enabled && server.account.is_empty() {
        out.push(problem(
            key("account"),
            "the server is enabled but no [[smpp.server.account]] may bind",
        ));
    }
    let mut ids: Vec<&str> = Vec::new();
    for (i, a) in server.account.iter().enumerate() {
        let key = |k: &str| format!("smpp.server.account.{i}.{k}");
        if a.system_id.is_empty()
            || a.system_id.len() > 15
            || !a.system_id.bytes().all(|b| b.is_ascii_graphic())
        {
            out.push(problem(
                key("system_id"),
                "1 to 15 printable ASCII characters",
            ));
        } else if ids.contains(&a.system_id.as_str()) {
            out.push(problem(
                key("system_id"),
                format!("{} names another account already", a.system_id),
            ));
        }
        ids.push(&a.system_id);
        if let Err(e) = crate::smpp::auth::check_hash(&a.password_hash) {
            out.push(problem(
                key("password_hash"),
                format!("not a password hash ({e}); make one with `parla hash-password`"),
            ));
        }
        if a.bind_modes.is_empty() {
            out.push(problem(key("bind_modes"), "at least one bind mode"));
        }
        if a.max_binds == 0 {
            out.push(problem(key("max_binds"), "must be at least 1"));
        }
        if !(1..=1000).contains(&a.window) {
            out.push(problem(key("window"), "must be between 1 and 1000"));
        }
        if !a.max_rate.is_finite() || a.max_rate < 0.0 {
            out.push(problem(
                key("max_rate"),
                "messages per second, 0 for no limit",
            ));
        }
        if !(1..=1000).contains(&a.deliver_window) {
            out.push(problem(key("deliver_window"), "must be between 1 and 1000"));
        }
        for (j, n) in a.reply_numbers.iter().enumerate() {
            let digits = n.strip_prefix('+').unwrap_or(n);
            if digits.is_empty()
                || digits.len() > 20
                || !digits.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                out.push(problem(
                    format!("smpp.server.account.{i}.reply_numbers.{j}"),
                    "a number or short code as customers write to it (e.g. \"+393400000001\" or \"4242\")",
                ));
            }
        }
        if a.outbind_password.len() > 8 || !a.outbind_password.bytes().all(|b| b.is_ascii_graphic())
        {
            out.push(problem(
                key("outbind_password"),
                "at most 8 printable ASCII characters",
            ));
        }
        if a.outbind_interval < Duration::from_millis(100) {
            out.push(problem(key("outbind_interval"), "must be at least 100ms"));
        }
        for (j, k) in a.reply_keywords.iter().enumerate() {
            if k.is_empty() || k.chars().any(char::is_whitespace) {
                out.push(problem(
                    format!("smpp.server.account.{i}.reply_keywords.{j}"),
                    "one word, without spaces",
                ));
            }
        }
    }
    let catch_all: Vec<&str> = server
        .account
        .iter()
        .filter(|a| a.catch_all_replies)
        .map(|a| a.system_id.as_str())
        .collect();
    if catch_all.len() > 1 {
        out.push(problem(
            key("account"),
            format!(
                "catch_all_replies is set on {} accounts ({}); at most one may take the replies no rule routes",
                catch_all.len(),
                catch_all.join(", ")
            ),
        ));
    }
}

/// A channel name's problem: empty, spaced, or taken.
fn check_channel_name<'a>(
    name: &'a str,
    key: String,
    names: &mut Vec<&'a str>,
    out: &mut Vec<ConfigProblem>,
) {
    if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        out.push(problem(key, "a name without spaces is required"));
    } else if names.contains(&name) {
        out.push(problem(
            key,
            format!("{name} names another channel already"),
        ));
    }
    names.push(name);
}

fn validate_smpp_clients<'a>(
    s: &'a Settings,
    names: &mut Vec<&'a str>,
    out: &mut Vec<ConfigProblem>,
) {
    for (i, c) in s.smpp.client.iter().enumerate() {
        let key = |k: &str| format!("smpp.client.{i}.{k}");
        check_channel_name(&c.name, key("name"), names, out);
        if c.host.is_empty()
            || c.host
                .chars()
                .any(|ch| ch.is_whitespace() || ch.is_control())
        {
            out.push(problem(
                key("host"),
                "the SMSC's host name or address is required",
            ));
        }
        if c.port == 0 {
            out.push(problem(key("port"), "must be a TCP port, e.g. 2775"));
        }
        for (k, value, max) in [
            ("system_id", &c.system_id, 15),
            ("password", &c.password, 8),
            ("system_type", &c.system_type, 12),
            ("address_range", &c.address_range, 40),
            ("service_type", &c.service_type, 5),
        ] {
            if value.len() > max || !value.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                out.push(problem(
                    key(k),
                    format!("at most {max} printable ASCII characters"),
                ));
            }
        }
        if c.system_id.is_empty() {
            out.push(problem(key("system_id"), "the account name is required"));
        }
        if !matches!(c.interface_version, 0x33 | 0x34) {
            out.push(problem(
                key("interface_version"),
                "0x34 (SMPP 3.4) or 0x33 (3.3)",
            ));
        }
        if !(1..=1000).contains(&c.window) {
            out.push(problem(key("window"), "must be between 1 and 1000"));
        }
        if !c.max_rate.is_finite() || c.max_rate < 0.0 {
            out.push(problem(
                key("max_rate"),
                "messages per second, 0 for no limit",
            ));
        }
        for (k, d) in [
            ("enquire_link_interval", c.enquire_link_interval),
            ("response_timeout", c.response_timeout),
            ("connect_timeout", c.connect_timeout),
            ("reconnect_min", c.reconnect_min),
            ("reconnect_max", c.reconnect_max),
            ("bind_refused_backoff", c.bind_refused_backoff),
            ("throttle_backoff", c.throttle_backoff),
        ] {
            if d < Duration::from_millis(100) {
                out.push(problem(key(k), "must be at least 100ms"));
            }
        }
        if c.reconnect_min > c.reconnect_max {
            out.push(problem(
                key("reconnect_min"),
                "must not exceed reconnect_max",
            ));
        }
        if let Some(source) = &c.source
            && let Err(e) = crate::smpp::content::address_for(source)
        {
            out.push(problem(key("source"), e.to_string()));
        }
        for (k, ton) in [("source_ton", c.source_ton), ("dest_ton", Some(c.dest_ton))] {
            if ton.is_some_and(|t| t > 6) {
                out.push(problem(key(k), "a type of number from 0 to 6"));
            }
        }
        for (k, npi) in [("source_npi", c.source_npi), ("dest_npi", Some(c.dest_npi))] {
            if npi.is_some_and(|n| !matches!(n, 0 | 1 | 3 | 4 | 6 | 8 | 9 | 10 | 14 | 18)) {
                out.push(problem(
                    key(k),
                    "a numbering plan SMPP 3.4 defines (0, 1, 3, 4, 6, 8, 9, 10, 14, 18)",
                ));
            }
        }
    }
}

fn validate_modems<'a>(s: &'a Settings, names: &mut Vec<&'a str>, out: &mut Vec<ConfigProblem>) {
    for (i, m) in s.modems.iter().enumerate() {
        let key = |k: &str| format!("modem.{i}.{k}");
        check_channel_name(&m.name, key("name"), names, out);
        if m.port.as_os_str().is_empty() {
            out.push(problem(
                key("port"),
                "the serial device is required, e.g. /dev/serial/by-id/usb-...",
            ));
        }
        if m.baud_rate == 0 {
            out.push(problem(
                key("baud_rate"),
                "must be a line speed like 115200",
            ));
        }
        if let Some(pin) = &m.pin
            && !(4..=8).contains(&pin.len())
        {
            out.push(problem(key("pin"), "a SIM PIN has 4 to 8 digits"));
        }
        if m.pin
            .as_deref()
            .is_some_and(|p| !p.bytes().all(|b| b.is_ascii_digit()))
        {
            out.push(problem(key("pin"), "a SIM PIN has only digits"));
        }
        if let Some(n) = &m.number
            && crate::phone::normalize(n, None).is_err()
        {
            out.push(problem(
                key("number"),
                "must be an E.164 number like +393471234567",
            ));
        }
        if let Some(n) = &m.smsc
            && crate::phone::normalize(n, None).is_err()
        {
            out.push(problem(
                key("smsc"),
                "must be an E.164 number like +393492000200",
            ));
        }
        if !(m.storage.len() == 2 && m.storage.bytes().all(|b| b.is_ascii_uppercase())) {
            out.push(problem(key("storage"), "a storage name like SM, ME or MT"));
        }
        let cnmi_ok = !m.indications.is_empty()
            && m.indications
                .split(',')
                .all(|f| f.len() == 1 && f.bytes().all(|b| b.is_ascii_digit()));
        if !cnmi_ok {
            out.push(problem(
                key("indications"),
                "AT+CNMI parameters like 2,1,0,2,0",
            ));
        }
        for (k, d) in [
            ("command_timeout", m.command_timeout),
            ("send_timeout", m.send_timeout),
            ("health_interval", m.health_interval),
            ("poll_interval", m.poll_interval),
            ("sweep_interval", m.sweep_interval),
            ("reopen_max_backoff", m.reopen_max_backoff),
        ] {
            if d < Duration::from_millis(100) {
                out.push(problem(key(k), "must be at least 100ms"));
            }
        }
        if m.unresponsive_after == 0 {
            out.push(problem(key("unresponsive_after"), "must be at least 1"));
        }
        let bad_command = |c: &str| c.is_empty() || c.chars().any(|ch| ch.is_control());
        if !m.reset_command.is_empty() && bad_command(&m.reset_command) {
            out.push(problem(
                key("reset_command"),
                "one AT command, no control characters",
            ));
        }
        for (j, c) in m.init_commands.iter().enumerate() {
            if bad_command(c) || !c.to_ascii_uppercase().starts_with("AT") {
                out.push(problem(
                    format!("modem.{i}.init_commands.{j}"),
                    "an AT command without control characters",
                ));
            }
        }
    }
}

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path (`http.listen`), or the file for problems of the whole file.
    pub key: String,
    /// What is wrong and what would be right.
    pub message: String,
}

/// Every problem found; loading fails if there is any.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.iter().map(|p| format!("{}: {}", p.key, p.message)).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

fn problem(key: impl Into<String>, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        key: key.into(),
        message: message.into(),
    }
}

/// Loads settings from `source` and the given environment (pass `std::env::vars()`; tests pass
/// their own). Only variables named `PARLA_SECTION__KEY` are read, so other `PARLA_*` variables
/// (the CLI's `PARLA_TOKEN`, say) never count as unknown keys.
pub fn load(
    source: &ConfigSource,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigErrors> {
    let mut builder = config::Config::builder();
    if let ConfigSource::File(path) = source {
        if !path.is_file() {
            return Err(ConfigErrors(vec![problem(
                path.display().to_string(),
                "no such file (parla only runs the demo when no --config is given and \
                 /etc/parla/parla.toml does not exist)",
            )]));
        }
        builder = builder.add_source(
            config::File::from(path.as_path())
                .format(config::FileFormat::Toml)
                .required(true),
        );
    }
    let env: config::Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| {
            k.strip_prefix("PARLA_")
                .is_some_and(|rest| rest.contains("__"))
        })
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix("PARLA")
            .prefix_separator("_")
            .separator("__")
            .source(Some(env)),
    );
    let origin = match source {
        ConfigSource::File(p) => p.display().to_string(),
        ConfigSource::Demo => "environment".into(),
    };
    let built = builder
        .build()
        .map_err(|e| ConfigErrors(vec![problem(origin, e.to_string())]))?;
    let (mut settings, mut problems) = deserialize_collecting(built.cache);
    if *source == ConfigSource::Demo {
        settings.sim.enabled = true;
    }
    problems.extend(validate(&settings));
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(ConfigErrors(problems))
    }
}

/// Deserializes, and on each error records its key path, drops that key (so its default applies)
/// and tries again: one run finds every unknown key and every bad value, not just the first.
fn deserialize_collecting(mut value: config::Value) -> (Settings, Vec<ConfigProblem>) {
    let mut problems = Vec::new();
    // Each round removes one key, so this ends; the cap is a guard against a bug here.
    for _ in 0..256 {
        match serde_path_to_error::deserialize::<_, Settings>(value.clone()) {
            Ok(settings) => return (settings, problems),
            Err(e) => {
                let path: Vec<String> = e
                    .path()
                    .iter()
                    .map(|seg| match seg {
                        serde_path_to_error::Segment::Seq { index } => index.to_string(),
                        serde_path_to_error::Segment::Map { key } => key.clone(),
                        serde_path_to_error::Segment::Enum { variant } => variant.clone(),
                        serde_path_to_error::Segment::Unknown => "?".into(),
                    })
                    .collect();
                let message = clean_message(&e.inner().to_string());
                let key = if path.is_empty() {
                    "(top level)".to_string()
                } else {
                    path.join(".")
                };
                problems.push(problem(key, message));
                if path.is_empty() || !remove_path(&mut value, &path) {
                    return (Settings::default(), problems);
                }
            }
        }
    }
    (Settings::default(), problems)
}

/// config's messages append "for key `x` in y"; we already name the key.
fn clean_message(message: &str) -> String {
    message
        .split(" for key `")
        .next()
        .unwrap_or(message)
        .to_string()
}

fn remove_path(value: &mut config::Value, path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    match &mut value.kind {
        config::ValueKind::Table(map) => {
            if rest.is_empty() {
                map.remove(first).is_some()
            } else {
                map.get_mut(first).is_some_and(|v| remove_path(v, rest))
            }
        }
        config::ValueKind::Array(items) => {
            let Ok(i) = first.parse::<usize>() else {
                return false;
            };
            if rest.is_empty() {
                if i < items.len() {
                    items.remove(i);
                    true
                } else {
                    false
                }
            } else {
                items.get_mut(i).is_some_and(|v| remove_path(v, rest))
            }
        }
        _ => false,
    }
}

/// Checks that need more than a type: ranges and combinations.
fn validate(s: &Settings) -> Vec<ConfigProblem> {
    let mut out = Vec::new();
    if s.http.tokens.is_empty() && !s.http.listen.ip().is_loopback() {
        out.push(problem(
            "http.tokens",
            format!(
                "http.listen is {} (not loopback), so at least one token is required; \
                 without tokens the API only serves clients on this machine",
                s.http.listen
            ),
        ));
    }
    for (i, token) in s.http.tokens.iter().enumerate() {
        if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            out.push(problem(
                format!("http.tokens.{i}"),
                "a token must be at least 16 characters, without spaces",
            ));
        }
    }
    if !(1024..=16 * 1024 * 1024).contains(&s.http.max_body_bytes) {
        out.push(problem(
            "http.max_body_bytes",
            "must be between 1024 and 16777216",
        ));
    }
    if s.http.max_connections == 0 {
        out.push(problem("http.max_connections", "must be at least 1"));
    }
    if s.http.header_read_timeout < Duration::from_millis(100) {
        out.push(problem(
            "http.header_read_timeout",
            "must be at least 100ms",
        ));
    }
    if s.http.max_concurrent_requests == 0 {
        out.push(problem(
            "http.max_concurrent_requests",
            "must be at least 1",
        ));
    }
    validate_channels(s, &mut out);
    if s.store.cache_capacity_mb == 0 {
        out.push(problem("store.cache_capacity_mb", "must be at least 1"));
    }
    if s.store.max_group == 0 {
        out.push(problem("store.max_group", "must be at least 1"));
    }
    if let Some(region) = &s.defaults.region
        && phonenumber::country::Id::from_str(&region.to_ascii_uppercase()).is_err()
    {
        out.push(problem(
            "defaults.region",
            format!("{region:?} is not an ISO 3166 region code such as \"IT\" or \"DE\""),
        ));
    }
    if !(MIN_VALIDITY..=MAX_VALIDITY).contains(&s.defaults.validity) {
        // The API applies the same bounds to validity_s: a default outside them would make every
        // request without validity_s fail.
        out.push(problem(
            "defaults.validity",
            "must be between 1m and 30days",
        ));
    }
    if s.defaults.max_parts == 0 {
        out.push(problem("defaults.max_parts", "must be at least 1"));
    }
    let r = &s.retry;
    if r.initial_backoff.is_zero() {
        out.push(problem("retry.initial_backoff", "must be more than 0s"));
    }
    if r.max_backoff < r.initial_backoff {
        out.push(problem(
            "retry.max_backoff",
            "must not be shorter than retry.initial_backoff",
        ));
    }
    if !(r.multiplier >= 1.0 && r.multiplier <= 100.0) {
        out.push(problem("retry.multiplier", "must be between 1 and 100"));
    }
    if !(0.0..=1.0).contains(&r.jitter) {
        out.push(problem("retry.jitter", "must be between 0 and 1"));
    }
    if r.max_attempts == 0 {
        out.push(problem("retry.max_attempts", "must be at least 1"));
    }
    for (key, share) in [
        ("sim.failure_share", s.sim.failure_share),
        ("sim.reply_share", s.sim.reply_share),
    ] {
        if !(0.0..=1.0).contains(&share) {
            out.push(problem(key, "must be between 0 and 1"));
        }
    }
    if s.sim.window == 0 {
        out.push(problem("sim.window", "must be at least 1"));
    }
    validate_optouts(&s.optouts, s.defaults.max_parts, &mut out);
    if s.sim.name.is_empty() || s.sim.name.contains(char::is_whitespace) {
        out.push(problem(
            "sim.name",
            "must be a non-empty name without spaces",
        ));
    }
    out
}

/// Accepts a TOML list or, from the environment, one comma-separated string.
fn list_or_comma_string<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        One(String),
    }
    Ok(match ListOrString::deserialize(d)? {
        ListOrString::List(v) => v,
        ListOrString::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect(),
    })
}

/// The default config file path.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/parla/parla.toml";

/// Decides where settings come from: an explicit path must exist; without one, the default path
/// is used when it exists, else the demo.
pub fn choose_source(explicit: Option<&Path>) -> ConfigSource {
    match explicit {
        Some(p) => ConfigSource::File(p.to_path_buf()),
        None if Path::new(DEFAULT_CONFIG_PATH).is_file() => {
            ConfigSource::File(PathBuf::from(DEFAULT_CONFIG_PATH))
        }
        None => ConfigSource::Demo,
    }
}

/// Helper for tests and tools: an environment with nothing in it.
pub fn no_env() -> BTreeMap<String, String> {
    BTreeMap::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_config(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn load_text(text: &str) -> Result<Settings, ConfigErrors> {
        let f = write_config(text);
        load(&ConfigSource::File(f.path().to_path_buf()), no_env())
    }

    #[test]
    fn example_config_parses_and_sets_every_section() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conf/parla.toml");
        let s = load(&ConfigSource::File(path), no_env()).expect("conf/parla.toml must load");
        assert_eq!(s.http.listen, "127.0.0.1:8725".parse().unwrap());
        assert!(
            s.sim.enabled,
            "the example enables the simulator so it runs as is"
        );
        // The example documents the opt-out defaults as they are.
        let (example, built_in) = (&s.optouts, OptOutSettings::default());
        assert_eq!(example.lists(), built_in.lists());
        assert_eq!(
            [
                &example.stop_reply,
                &example.stop_all_reply,
                &example.start_reply,
                &example.help_reply
            ],
            [
                &built_in.stop_reply,
                &built_in.stop_all_reply,
                &built_in.start_reply,
                &built_in.help_reply
            ]
        );
    }

    #[test]
    fn example_config_mentions_every_key() {
        // conf/parla.toml documents every key: each key of the defaults must appear in it.
        let text = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conf/parla.toml"),
        )
        .unwrap();
        let table: toml_like::Table = toml_like::parse_keys(&text);
        for key in [
            "http.listen",
            "http.tokens",
            "http.max_body_bytes",
            "http.max_concurrent_requests",
            "http.max_connections",
            "http.header_read_timeout",
            "store.path",
            "store.cache_capacity_mb",
            "store.retention",
            "store.max_group",
            "store.min_free_mb",
            "store.reassembly_timeout",
            "defaults.region",
            "defaults.kind",
            "defaults.validity",
            "defaults.max_parts",
            "retry.initial_backoff",
            "retry.max_backoff",
            "retry.multiplier",
            "retry.jitter",
            "retry.max_attempts",
            "sim.enabled",
            "sim.name",
            "sim.accept_delay",
            "sim.delivery_delay",
            "sim.failure_share",
            "sim.reply_share",
            "sim.window",
            "modem.name",
            "modem.port",
            "modem.baud_rate",
            "modem.flow_control",
            "modem.pin",
            "modem.number",
            "modem.smsc",
            "modem.storage",
            "modem.indications",
            "modem.status_reports",
            "modem.command_timeout",
            "modem.send_timeout",
            "modem.health_interval",
            "modem.poll_interval",
            "modem.sweep_interval",
            "modem.unresponsive_after",
            "modem.reset_command",
            "modem.reopen_max_backoff",
            "modem.min_send_interval",
            "modem.daily_cap",
            "modem.init_commands",
            "route.prefixes",
            "route.channels",
            "smpp.server.enabled",
            "smpp.server.listen",
            "smpp.server.system_id",
            "smpp.server.max_connections",
            "smpp.server.idle_timeout",
            "smpp.server.enquire_link_interval",
            "smpp.server.response_timeout",
            "smpp.server.conversation_window",
            "smpp.server.account.system_id",
            "smpp.server.account.password_hash",
            "smpp.server.account.bind_modes",
            "smpp.server.account.max_binds",
            "smpp.server.account.max_rate",
            "smpp.server.account.window",
            "smpp.server.account.allowed_sources",
            "smpp.server.account.allowed_ips",
            "smpp.server.account.deliver_window",
            "smpp.server.account.default_alphabet",
            "smpp.server.account.long_messages",
            "smpp.server.account.reply_numbers",
            "smpp.server.account.reply_keywords",
            "smpp.server.account.catch_all_replies",
            "smpp.server.account.outbind",
            "smpp.server.account.outbind_password",
            "smpp.server.account.outbind_interval",
            "smpp.client.name",
            "smpp.client.host",
            "smpp.client.port",
            "smpp.client.system_id",
            "smpp.client.password",
            "smpp.client.system_type",
            "smpp.client.bind",
            "smpp.client.interface_version",
            "smpp.client.address_range",
            "smpp.client.window",
            "smpp.client.max_rate",
            "smpp.client.enquire_link_interval",
            "smpp.client.response_timeout",
            "smpp.client.connect_timeout",
            "smpp.client.reconnect_min",
            "smpp.client.reconnect_max",
            "smpp.client.bind_refused_backoff",
            "smpp.client.throttle_backoff",
            "smpp.client.source",
            "smpp.client.source_ton",
            "smpp.client.source_npi",
            "smpp.client.dest_ton",
            "smpp.client.dest_npi",
            "smpp.client.data_coding",
            "smpp.client.gsm7_packed",
            "smpp.client.default_alphabet",
            "smpp.client.long_messages",
            "smpp.client.registered_delivery",
            "smpp.client.service_type",
            "smpp.client.mo_dedupe_window",
            "conversations.reply_window",
            "log.format",
            "log.level",
            "quiet_hours.enabled",
            "quiet_hours.start",
            "quiet_hours.end",
            "quiet_hours.time_zone",
            "webhook.name",
            "webhook.url",
            "webhook.secret",
            "webhook.events",
            "webhook.timeout",
            "webhook.retry_for",
            "webhook.max_in_flight",
            "callbacks.secret",
            "callbacks.timeout",
            "callbacks.retry_for",
            "callbacks.max_in_flight",
            "callbacks.allowed_hosts",
            "callbacks.allow_private_addresses",
            "optouts.enabled",
            "optouts.stop_keywords",
            "optouts.stop_all_keywords",
            "optouts.start_keywords",
            "optouts.help_keywords",
            "optouts.stop_reply",
            "optouts.stop_all_reply",
            "optouts.start_reply",
            "optouts.help_reply",
        ] {
            assert!(
                table.contains(key),
                "conf/parla.toml does not document {key}"
            );
        }
    }

    /// Finds `key = ` lines, commented out or not, under `[section]` headers.
    mod toml_like {
        pub type Table = std::collections::BTreeSet<String>;
        pub fn parse_keys(text: &str) -> Table {
            let mut section = String::new();
            let mut keys = Table::new();
            for line in text.lines() {
                let line = line.trim().trim_start_matches('#').trim();
                if line.starts_with('[') && line.ends_with(']') {
                    // [section] and [[array-of-tables]] alike.
                    section = line.trim_matches(['[', ']']).to_string();
                } else if let Some((key, _)) = line.split_once(" = ")
                    && !key.contains(' ')
                {
                    keys.insert(format!("{section}.{key}"));
                }
            }
            keys
        }
    }

    #[test]
    fn modems_are_read_and_checked_each_with_its_key_path() {
        let s = load_text(
            "[[modem]]\nname = \"m1\"\nport = \"/dev/ttyUSB0\"\npin = \"1234\"\n\
             [[modem]]\nname = \"m2\"\nport = \"/dev/ttyUSB1\"\nflow_control = \"hardware\"\n",
        )
        .unwrap();
        assert_eq!(s.modems.len(), 2);
        assert_eq!(s.modems[1].flow_control, FlowControl::Hardware);
        assert_eq!(s.modems[0].storage, "SM");
        let err = load_text(
            "[[modem]]\nname = \"m1\"\nport = \"\"\npin = \"12a4\"\nindications = \"2;1\"\n\
             [[modem]]\nname = \"m1\"\nport = \"/dev/ttyUSB1\"\nbaud = 9600\n\
             init_commands = [\"ATZ\", \"rm -rf\"]\n",
        )
        .unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "modem.0.port",
            "modem.0.pin",
            "modem.0.indications",
            "modem.1.baud",
            "modem.1.name",
            "modem.1.init_commands.1",
        ] {
            assert!(keys.contains(&key), "{key} not in {keys:?}");
        }
    }

    #[test]
    fn smpp_links_are_read_and_checked_each_with_its_key_path() {
        let s = load_text(
            "[[smpp.client]]\nname = \"c1\"\nhost = \"smsc.example\"\nsystem_id = \"shop\"\n\
             bind = \"transmitter_receiver\"\nlong_messages = \"sar\"\ndata_coding = \"latin1\"\n\
             interface_version = 0x33\nsource = \"Shop\"\n",
        )
        .unwrap();
        let link = &s.smpp.client[0];
        assert_eq!(link.bind, SmppBindMode::TransmitterReceiver);
        assert_eq!(link.long_messages, crate::smpp::content::LongMethod::Sar);
        assert_eq!(link.data_coding, crate::smpp::content::CodingPolicy::Latin1);
        assert_eq!(
            (link.interface_version, link.port, link.window),
            (0x33, 2775, 10)
        );
        let err = load_text(
            "[[modem]]\nname = \"c1\"\nport = \"/dev/ttyUSB0\"\n\
             [[smpp.client]]\nname = \"c1\"\nhost = \"\"\nsystem_id = \"an-account-name-too-long\"\n\
             password = \"password9\"\nwindow = 0\nmax_rate = -1\nsource = \"Sender name too long\"\n\
             reconnect_min = \"2m\"\nsource_ton = 9\ndest_npi = 5\ninterface_version = 0x50\n\
             bind = \"both\"\n",
        )
        .unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "smpp.client.0.bind",
            "smpp.client.0.name",
            "smpp.client.0.host",
            "smpp.client.0.system_id",
            "smpp.client.0.password",
            "smpp.client.0.window",
            "smpp.client.0.max_rate",
            "smpp.client.0.source",
            "smpp.client.0.reconnect_min",
            "smpp.client.0.source_ton",
            "smpp.client.0.dest_npi",
            "smpp.client.0.interface_version",
        ] {
            assert!(keys.contains(&key), "{key} not in {keys:?}");
        }
    }

    #[test]
    fn routes_name_configured_channels() {
        let s = load_text(
            "[[modem]]\nname = \"m1\"\nport = \"/dev/ttyUSB0\"\n\
             [[smpp.client]]\nname = \"c1\"\nhost = \"smsc.example\"\nsystem_id = \"shop\"\n\
             [[route]]\nprefixes = [\"+39\"]\nchannels = [[\"m1\"], \"c1\"]\n",
        )
        .unwrap();
        assert_eq!(s.routes.len(), 1);
        assert_eq!(s.channel_names(), vec!["m1".to_string(), "c1".to_string()]);
        let err = load_text(
            "[[modem]]\nname = \"m1\"\nport = \"/dev/ttyUSB0\"\n\
             [[route]]\nprefixes = [\"39\"]\nchannels = [\"m2\"]\n",
        )
        .unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["route.0.prefixes.0", "route.0.channels.0"]);
    }

    #[test]
    fn callbacks_are_off_without_a_secret_and_checked_when_on() {
        let off = load_text("[store]\nretention = \"1d\"\n").unwrap();
        assert!(
            !off.callbacks.enabled(),
            "off by default, whatever the retention"
        );
        let on = load_text(
            "[callbacks]\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
             allowed_hosts = [\"shop.example\", \"*.example.com\"]\n",
        )
        .unwrap();
        assert!(on.callbacks.enabled());
        assert_eq!(on.callbacks.retry_for, Duration::from_secs(3 * 24 * 3600));
        assert!(!on.callbacks.allow_private_addresses);
        let err = load_text(
            "[store]\nretention = \"1d\"\n\
             [callbacks]\nsecret = \"short\"\ntimeout = \"1ms\"\nmax_in_flight = 0\n\
             allowed_hosts = [\"ok.example\", \"*\", \"http://x/\"]\n",
        )
        .unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "callbacks.secret",
                "callbacks.timeout",
                "callbacks.retry_for",
                "callbacks.max_in_flight",
                "callbacks.allowed_hosts.1",
                "callbacks.allowed_hosts.2",
            ]
        );
    }

    #[test]
    fn webhooks_are_read_and_checked() {
        let s = load_text(
            "[[webhook]]\nname = \"crm\"\nurl = \"https://crm.example.com/hook\"\n\
             secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nevents = [\"message.status\"]\n",
        )
        .unwrap();
        assert_eq!(s.webhooks[0].retry_for, Duration::from_secs(3 * 24 * 3600));
        assert_eq!(
            s.webhooks[0].events,
            [crate::webhook::event::EventType::MessageStatus]
        );
        let err = load_text(
            "[store]\nretention = \"1d\"\n\
             [[webhook]]\nname = \"a b\"\nurl = \"ftp://x\"\nsecret = \"short\"\n\
             events = []\nmax_in_flight = 0\n\
             [[webhook]]\nname = \"crm\"\nurl = \"http://127.0.0.1:9/\"\n\
             secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nretry_for = \"2d\"\n",
        )
        .unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "webhook.0.name",
                "webhook.0.url",
                "webhook.0.secret",
                "webhook.0.events",
                "webhook.0.retry_for",
                "webhook.0.max_in_flight",
                "webhook.1.retry_for",
            ]
        );
        let unknown = load_text("[[webhook]]\nname = \"x\"\nevents = [\"message.sent\"]\n");
        assert!(unknown.is_err());
    }

    #[test]
    fn smpp_server_accounts_are_read_and_checked() {
        let hash = crate::smpp::auth::hash_password("pw").unwrap();
        let s = load_text(&format!(
            "[[smpp.server.account]]\nsystem_id = \"shop\"\npassword_hash = \"{hash}\"\n\
             allowed_ips = [\"10.0.0.0/8\"]\nbind_modes = [\"transmitter_receiver\"]\n"
        ))
        .unwrap();
        let account = &s.smpp.server.account[0];
        assert_eq!(account.bind_modes, [SmppBindMode::TransmitterReceiver]);
        assert_eq!(account.window, 100);
        assert_eq!(s.smpp.server.listen.port(), 2775);
        let err = load_text(&format!(
            "[smpp.server]\nenabled = true\nmax_connections = 0\n\
             [[smpp.server.account]]\nsystem_id = \"shop\"\npassword_hash = \"secret\"\n\
             catch_all_replies = true\nreply_numbers = [\"+39 340\"]\n\
             [[smpp.server.account]]\nsystem_id = \"shop\"\npassword_hash = \"{hash}\"\n\
             window = 0\nbind_modes = []\nallowed_ips = [\"10.0.0.300/8\"]\n\
             catch_all_replies = true\nreply_keywords = [\"two words\"]\ndeliver_window = 0\n"
        ))
        .unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "smpp.server.max_connections",
            "smpp.server.account.0.password_hash",
            "smpp.server.account.1.system_id",
            "smpp.server.account.1.window",
            "smpp.server.account.1.bind_modes",
            "smpp.server.account.1.allowed_ips.0",
            "smpp.server.account.0.reply_numbers.0",
            "smpp.server.account.1.reply_keywords.0",
            "smpp.server.account.1.deliver_window",
            "smpp.server.account",
        ] {
            assert!(keys.contains(&key), "{key} not in {keys:?}");
        }
        let none = load_text("[smpp.server]\nenabled = true\n").unwrap_err();
        let keys: Vec<&str> = none.0.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["smpp.server.account"]);
    }

    #[test]
    fn optouts_are_read_and_checked_each_with_its_key_path() {
        let s =
            load_text("[optouts]\nstop_keywords = [\"STOP\", \"Fermati\"]\nhelp_reply = \"\"\n")
                .unwrap();
        assert_eq!(s.optouts.stop_keywords, ["STOP", "Fermati"]);
        assert!(s.optouts.enabled);
        assert_eq!(s.optouts.stop_all_keywords, ["STOPALL"]);
        assert!(s.optouts.help_reply.is_empty());
        // The defaults hold no keyword twice.
        assert!(load_text("").is_ok());
        let long = "x".repeat(200);
        let err = load_text(&format!(
            "[defaults]\nmax_parts = 1\n\
             [optouts]\nstop_keywords = [\"STOP\", \"two words\", \"\", \"Arrêt\"]\n\
             start_keywords = [\"stop\", \"START\"]\nhelp_keywords = [\"ARRET\"]\n\
             start_reply = \"{long}\"\n"
        ))
        .unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "optouts.stop_keywords.1",
                "optouts.stop_keywords.2",
                "optouts.start_keywords.0",
                "optouts.help_keywords.0",
                "optouts.start_reply",
            ]
        );
        assert!(
            err.0[2].message.contains("optouts.stop_keywords.0"),
            "{err}"
        );
        let env = [(
            "PARLA_OPTOUTS__HELP_KEYWORDS".to_string(),
            "HELP,AIUTO".to_string(),
        )];
        let s = load(&ConfigSource::Demo, env).unwrap();
        assert_eq!(s.optouts.help_keywords, ["HELP", "AIUTO"]);
    }

    #[test]
    fn defaults_without_file_are_the_demo() {
        let s = load(&ConfigSource::Demo, no_env()).unwrap();
        assert!(s.sim.enabled);
        assert_eq!(s.http.listen.port(), 8725);
        assert!(s.http.tokens.is_empty());
    }

    #[test]
    fn file_without_sim_section_runs_no_simulator() {
        let s = load_text("[http]\nlisten = \"127.0.0.1:9001\"\n").unwrap();
        assert!(!s.sim.enabled);
        assert_eq!(s.http.listen.port(), 9001);
    }

    #[test]
    fn missing_explicit_file_is_an_error_not_the_demo() {
        let err = load(
            &ConfigSource::File("/nonexistent/parla.toml".into()),
            no_env(),
        )
        .unwrap_err();
        assert!(err.0[0].message.contains("no such file"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key_path() {
        let err = load_text(
            "[http]\nlisten = \"not an address\"\nbogus = 1\n\
             [store]\ncache_capacity_mb = \"lots\"\n\
             [retry]\njitter = 3.0\n\
             [conversations]\nreply_window = \"0s\"\n\
             [log]\nlevel = \"lots=of=noise\"\n\
             [nonsense]\nx = 1\n",
        )
        .unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
        for expected in [
            "http.listen",
            "http.bogus",
            "store.cache_capacity_mb",
            "retry.jitter",
            "conversations.reply_window",
            "log.level",
            "nonsense",
        ] {
            assert!(keys.contains(&expected), "{expected} missing in {keys:?}");
        }
    }

    #[test]
    fn syntax_error_names_the_file() {
        let err = load_text("[http\nlisten=").unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert!(err.0[0].key.ends_with(".toml"), "{err}");
    }

    #[test]
    fn environment_overrides_file() {
        let f = write_config("[http]\nlisten = \"127.0.0.1:9001\"\n");
        let env = [
            (
                "PARLA_HTTP__LISTEN".to_string(),
                "127.0.0.1:9002".to_string(),
            ),
            (
                "PARLA_HTTP__TOKENS".to_string(),
                "aaaaaaaaaaaaaaaa,bbbbbbbbbbbbbbbb".to_string(),
            ),
            ("PARLA_RETRY__MAX_ATTEMPTS".to_string(), "3".to_string()),
            (
                "PARLA_CALLBACKS__ALLOWED_HOSTS".to_string(),
                "shop.example,*.example.com".to_string(),
            ),
            (
                "PARLA_TOKEN".to_string(),
                "for the CLI, not a key".to_string(),
            ),
        ];
        let s = load(&ConfigSource::File(f.path().to_path_buf()), env).unwrap();
        assert_eq!(s.http.listen.port(), 9002);
        assert_eq!(s.http.tokens.len(), 2);
        assert_eq!(s.retry.max_attempts, 3);
        assert_eq!(s.callbacks.allowed_hosts, ["shop.example", "*.example.com"]);
    }

    #[test]
    fn bad_environment_value_names_its_key() {
        let env = [("PARLA_HTTP__LISTEN".to_string(), "nowhere".to_string())];
        let err = load(&ConfigSource::Demo, env).unwrap_err();
        assert_eq!(err.0[0].key, "http.listen");
    }

    #[test]
    fn public_listen_address_needs_tokens() {
        let err = load_text("[http]\nlisten = \"0.0.0.0:8725\"\n").unwrap_err();
        assert_eq!(err.0[0].key, "http.tokens");
        load_text("[http]\nlisten = \"0.0.0.0:8725\"\ntokens = [\"0123456789abcdef0123\"]\n")
            .unwrap();
    }

    #[test]
    fn semantic_checks() {
        let err = load_text(
            "[defaults]\nregion = \"XX\"\nmax_parts = 0\nvalidity = \"60days\"\n\
             [http]\ntokens = [\"short\"]\n",
        )
        .unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "http.tokens.0",
                "defaults.region",
                "defaults.validity",
                "defaults.max_parts"
            ]
        );
    }
}
