//! The `parla` command: a thin CLI over the library. anyhow lives here only.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand};
use parla::config::{self, ConfigSource, Settings};

// jemalloc: the writer and the HTTP tasks allocate many small buffers. Measured at 256 clients:
// glibc 5.8k msg/s (malloc was a fifth of the writer's time), mimalloc 12k msg/s but 170+ MB
// peak RSS, jemalloc 11.3k msg/s at 87 MB.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start: freed pages go back to the system after 1 s instead of
/// 10 (measured at 256 clients: peak RSS 107 -> 99 MiB, CPU the same).
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: JemallocConf = JemallocConf(c"dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

/// A C string pointer jemalloc reads as `const char *malloc_conf`.
#[repr(transparent)]
struct JemallocConf(*const std::ffi::c_char);

// SAFETY: it points to a string literal, which lives as long as the program and is never written.
unsafe impl Sync for JemallocConf {}

#[derive(Parser)]
#[command(name = "parla", version, about = "Self-hosted two-way SMS gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. Without --config and without /etc/parla/parla.toml it runs the embedded
    /// demo: a simulated channel, the store in ./parla-data, the API on 127.0.0.1:8725.
    Serve {
        /// Configuration file (TOML). When given, it must exist.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Queue a message through the running gateway's API.
    Send {
        /// Recipient, international (+39...) or national with defaults.region set.
        #[arg(long)]
        to: String,
        /// Message text.
        #[arg(long)]
        text: String,
        /// Sender: number, short code or alphanumeric id.
        #[arg(long)]
        from: Option<String>,
        /// "transactional" (default) or "marketing".
        #[arg(long)]
        kind: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show a message's status and history.
    Status {
        /// Message id, as `send` printed it.
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Check a configuration file; every problem is listed with its key.
    CheckConfig {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the hash of a password for `password_hash` of an [[smpp.server.account]]. The
    /// password is read from the first line of stdin, so it stays out of the shell's history
    /// and the process list: `parla hash-password < file`, or type it and press Enter.
    HashPassword,
    /// Maintenance of the message store (run while the daemon is stopped).
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Decode what a modem or network printed, for debugging.
    Decode {
        #[command(subcommand)]
        command: DecodeCommand,
    },
    /// GSM modem tools.
    Modem {
        #[command(subcommand)]
        command: ModemCommand,
    },
    /// Simulators for trying parla without hardware.
    Sim {
        #[command(subcommand)]
        command: SimCommand,
    },
    /// Print the manual page parla(1) (roff) from this CLI's definition, or with --dir write it
    /// and one page per subcommand (parla-serve.1, parla-store-compact.1, ...) there. The
    /// package build uses it.
    #[command(hide = true)]
    Man {
        /// Directory to write the pages into (created if missing).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SimCommand {
    /// A simulated GSM modem on a pseudo-terminal. Prints {"event":"ready","path":...} then one
    /// JSON line per event; reads commands on stdin: receive <from> <text>, stall on|off,
    /// fail <n> <cms-code>, garbage <lines>, report <reference>, counters, vanish, reappear,
    /// quit.
    Modem {
        /// Also make this path a symlink to the pty (a stable name for configs and tests).
        #[arg(long)]
        link: Option<PathBuf>,
        /// Device quirks, comma-separated: echo, bare-prompt, urc-during-send, direct-delivery,
        /// direct-reports, no-cnmi, cpin-without-ok, wrong-report-memory, sms-ready-late.
        #[arg(long, default_value = "")]
        quirks: String,
        /// Delay before each answer, in milliseconds.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Time from a message to its status report, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        report_delay_ms: u64,
        /// Share (0 to 1) of status reports that say the message failed.
        #[arg(long, default_value_t = 0.0)]
        report_failure_share: f64,
        /// Share (0 to 1) of sends answered +CMS ERROR: 38 (a transient network failure).
        #[arg(long, default_value_t = 0.0)]
        failure_share: f64,
        /// SIM PIN the simulated SIM asks for.
        #[arg(long)]
        pin: Option<String>,
        /// Seed of every random choice, so runs repeat.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// A simulated SMPP 3.4 SMSC on TCP. Prints {"event":"ready","addr":...} then one JSON line
    /// per event (connected, bound, bind_refused, submit, message, receipt_sent, receipt_acked,
    /// mo_sent, mo_acked, requeued, ignored, unbound, disconnected, generic_nack_sent, error);
    /// reads commands on stdin: mo <from> <to> <single|udh|sar|payload> <text>, throttle <n>,
    /// fail <n> <status-hex>, undeliver <k>, drop, stall on|off, refuse-binds <status-hex>|off,
    /// counters, quit.
    Smsc {
        /// Address to listen on (port 0: any free port; the ready line tells which).
        #[arg(long, default_value = "127.0.0.1:2775")]
        listen: std::net::SocketAddr,
        /// The only system_id accepted in binds (default: any).
        #[arg(long)]
        system_id: Option<String>,
        /// The only password accepted in binds (default: any).
        #[arg(long)]
        password: Option<String>,
        /// Message ids: hex (1a2b3c4d), hex-upper (00001A2B3C), decimal or uuid.
        #[arg(long, default_value = "hex")]
        id_style: String,
        /// Number of the first message id.
        #[arg(long, default_value_t = 439_041_101)]
        id_start: u64,
        /// Time from an accepted submit_sm to its receipt, in milliseconds.
        #[arg(long, default_value_t = 200)]
        receipt_delay_ms: u64,
        /// Receipts carry tlv (receipted_message_id, message_state), text (in short_message) or
        /// both.
        #[arg(long, default_value = "text")]
        receipt_style: String,
        /// The id a receipt names: same as the submit_sm_resp, or its number in decimal or hex.
        #[arg(long, default_value = "same")]
        receipt_id_form: String,
        /// Share (0 to 1) of receipts that say UNDELIV.
        #[arg(long, default_value_t = 0.0)]
        undeliverable_share: f64,
        /// Seed of every random choice, so runs repeat.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Refuse every bind with this status (hex, e.g. 0x0D).
        #[arg(long)]
        refuse_binds: Option<String>,
        /// No per-submit, per-receipt nor message events (for benchmarks); counters still work.
        #[arg(long)]
        quiet: bool,
        /// deliver_sm (receipts, MO) unanswered per session at most.
        #[arg(long, default_value_t = 100)]
        deliver_window: usize,
        /// Time a deliver_sm_resp may take before the deliver_sm is sent again, in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        delivery_timeout_ms: u64,
        /// Time before a deliver_sm answered with an error is sent again, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        retry_delay_ms: u64,
    },
}

#[derive(Subcommand)]
enum DecodeCommand {
    /// Print an SMS PDU (as AT+CMGR / +CMT / +CDS print it) as JSON.
    Pdu {
        /// The PDU in hex, SMSC address first.
        hex: String,
        /// The PDU has no SMSC address prefix (modems with the "no-smsc" quirk).
        #[arg(long)]
        no_smsc: bool,
    },
    /// Print an SMPP PDU (hex, as on the wire) as JSON; a malformed one shows the error an SMSC
    /// or parla would answer it with.
    Smpp {
        /// The PDU in hex, header first.
        hex: String,
    },
    /// Print an SMPP delivery receipt text ("id:... sub:... stat:DELIVRD ...") as JSON, with
    /// the id forms it matches and the outcome it means.
    Receipt {
        /// The receipt text, as one argument (quote it).
        text: String,
    },
}

#[derive(Subcommand)]
enum ModemCommand {
    /// Open a modem, initialise it as the gateway would (nothing is sent or deleted) and print
    /// what it found as JSON. Stop the daemon first if it uses this port.
    Probe {
        /// The serial device, e.g. /dev/ttyUSB2 or /dev/serial/by-id/...
        port: PathBuf,
        /// Line speed.
        #[arg(long, default_value_t = 115_200)]
        baud_rate: u32,
        /// Flow control: none, hardware or software.
        #[arg(long, default_value = "none")]
        flow_control: String,
        /// SIM PIN, if the SIM asks for one (entered once).
        #[arg(long, env = "PARLA_MODEM_PIN", hide_env_values = true)]
        pin: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Rewrite the store with only its live data, giving back disk space.
    Compact {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct ApiArgs {
    /// Base URL of the API. Default: from the configuration's http.listen.
    #[arg(long, env = "PARLA_API")]
    api: Option<String>,
    /// Bearer token. Default: the configuration's first http.tokens entry.
    #[arg(long, env = "PARLA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Configuration file to take the API address and token from.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(config.as_deref()),
        Command::Send {
            to,
            text,
            from,
            kind,
            api,
        } => send(&api, to, text, from, kind),
        Command::Status { id, api } => status(&api, &id),
        Command::Man { dir } => man(dir.as_deref()),
        Command::CheckConfig { config } => return check_config(config.as_deref()),
        Command::HashPassword => hash_password(),
        Command::Store {
            command: StoreCommand::Compact { config },
        } => compact(config.as_deref()),
        Command::Decode {
            command: DecodeCommand::Pdu { hex, no_smsc },
        } => decode_pdu(&hex, !no_smsc),
        Command::Decode {
            command: DecodeCommand::Receipt { text },
        } => decode_receipt(&text),
        Command::Decode {
            command: DecodeCommand::Smpp { hex },
        } => decode_smpp(&hex),
        Command::Modem {
            command:
                ModemCommand::Probe {
                    port,
                    baud_rate,
                    flow_control,
                    pin,
                    timeout,
                },
        } => modem_probe(port, baud_rate, &flow_control, pin, timeout),
        Command::Sim {
            command:
                SimCommand::Modem {
                    link,
                    quirks,
                    latency_ms,
                    report_delay_ms,
                    report_failure_share,
                    failure_share,
                    pin,
                    seed,
                },
        } => sim_modem(
            link,
            &quirks,
            parla::sim::modem::SimModemConfig {
                latency: Duration::from_millis(latency_ms),
                report_delay: Duration::from_millis(report_delay_ms),
                report_failure_share,
                failure_share,
                pin,
                seed,
                ..Default::default()
            },
        ),
        Command::Sim {
            command:
                SimCommand::Smsc {
                    listen,
                    system_id,
                    password,
                    id_style,
                    id_start,
                    receipt_delay_ms,
                    receipt_style,
                    receipt_id_form,
                    undeliverable_share,
                    seed,
                    refuse_binds,
                    quiet,
                    deliver_window,
                    delivery_timeout_ms,
                    retry_delay_ms,
                },
        } => (|| {
            use parla::sim::smsc::{IdStyle, ReceiptIdForm, ReceiptStyle, SmscConfig};
            let config = SmscConfig {
                system_id,
                password,
                id_style: IdStyle::parse(&id_style).with_context(|| {
                    format!("--id-style is hex, hex-upper, decimal or uuid, not {id_style:?}")
                })?,
                id_start,
                receipt_delay: Duration::from_millis(receipt_delay_ms),
                receipt_style: ReceiptStyle::parse(&receipt_style).with_context(|| {
                    format!("--receipt-style is tlv, text or both, not {receipt_style:?}")
                })?,
                receipt_id_form: ReceiptIdForm::parse(&receipt_id_form).with_context(|| {
                    format!("--receipt-id-form is same, decimal or hex, not {receipt_id_form:?}")
                })?,
                undeliverable_share,
                seed,
                refuse_binds: refuse_binds.as_deref().map(parse_status).transpose()?,
                quiet,
                deliver_window,
                delivery_timeout: Duration::from_millis(delivery_timeout_ms),
                retry_delay: Duration::from_millis(retry_delay_ms),
                ..SmscConfig::default()
            };
            sim_smsc(listen, config)
        })(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("parla: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn decode_pdu(hex: &str, with_smsc: bool) -> Result<()> {
    use parla::codec::tpdu;
    let bytes = tpdu::decode_hex(hex).context("not a hex PDU")?;
    let pdu = tpdu::decode(&bytes, with_smsc).context("not a valid SMS PDU")?;
    let mut json = serde_json::to_value(&pdu)?;
    if let tpdu::Pdu::StatusReport(r) = &pdu
        && let Some(obj) = json.as_object_mut()
    {
        obj.insert("outcome".into(), serde_json::to_value(r.outcome())?);
    }
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}

fn decode_smpp(hex: &str) -> Result<()> {
    use parla::smpp::frame;
    let bytes = frame::decode_hex(hex).context("not a hex PDU")?;
    let decoded = frame::decode_one(&bytes).context("not a complete SMPP PDU")?;
    println!(
        "{}",
        serde_json::to_string_pretty(&frame::to_json(&decoded))?
    );
    Ok(())
}

fn decode_receipt(text: &str) -> Result<()> {
    use parla::codec::receipt;
    let parsed = receipt::parse(text.as_bytes())?;
    let mut json = serde_json::to_value(&parsed)?;
    if let Some(obj) = json.as_object_mut() {
        obj.insert("state".into(), serde_json::to_value(parsed.state())?);
        obj.insert(
            "outcome".into(),
            serde_json::to_value(parsed.state().and_then(|s| s.outcome()))?,
        );
        obj.insert(
            "id_candidates".into(),
            serde_json::to_value(receipt::id_candidates(&parsed.id))?,
        );
    }
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}

fn modem_probe(
    port: PathBuf,
    baud_rate: u32,
    flow_control: &str,
    pin: Option<String>,
    timeout: u64,
) -> Result<()> {
    use parla::config::{FlowControl, ModemSettings};
    let flow_control = match flow_control {
        "none" => FlowControl::None,
        "hardware" => FlowControl::Hardware,
        "software" => FlowControl::Software,
        other => bail!("--flow-control is none, hardware or software, not {other:?}"),
    };
    let settings = ModemSettings {
        name: "probe".into(),
        port,
        baud_rate,
        flow_control,
        pin,
        ..ModemSettings::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(parla::modem::driver::probe(
        &settings,
        Duration::from_secs(timeout),
    ))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if report.ready {
        Ok(())
    } else {
        bail!(
            "the modem is not usable: {}",
            report.problem.as_deref().unwrap_or("unknown")
        )
    }
}

fn sim_modem(
    link: Option<PathBuf>,
    quirks: &str,
    mut config: parla::sim::modem::SimModemConfig,
) -> Result<()> {
    config.quirks = parla::sim::modem::parse_quirks(quirks).map_err(anyhow::Error::msg)?;
    for (name, share) in [
        ("--report-failure-share", config.report_failure_share),
        ("--failure-share", config.failure_share),
    ] {
        if !(0.0..=1.0).contains(&share) {
            bail!("{name} is a share from 0 to 1");
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(parla::sim::modem::run_cli(
        config,
        link,
        tokio::io::BufReader::new(tokio::io::stdin()),
        tokio::io::stdout(),
    ))?;
    Ok(())
}

/// An SMPP command_status in hex (`0x0D`, `0d`).
fn parse_status(text: &str) -> Result<u32> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    u32::from_str_radix(digits, 16)
        .ok()
        .filter(|_| !digits.is_empty() && digits.len() <= 8)
        .with_context(|| format!("{text:?} is not a status in hex (e.g. 0x0D)"))
}

fn sim_smsc(listen: std::net::SocketAddr, config: parla::sim::smsc::SmscConfig) -> Result<()> {
    if !(0.0..=1.0).contains(&config.undeliverable_share) {
        bail!("--undeliverable-share is a share from 0 to 1");
    }
    if config.deliver_window == 0 {
        bail!("--deliver-window must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(parla::sim::smsc::run_cli(
        config,
        listen,
        tokio::io::BufReader::new(tokio::io::stdin()),
        tokio::io::stdout(),
    ));
    // The stdin reader may still block in its thread (after `quit` stdin stays open): do not
    // wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result?;
    Ok(())
}

/// The CLI as the manual pages describe it: no `help` subcommand (its flag is documented).
fn man_command() -> clap::Command {
    Cli::command().disable_help_subcommand(true)
}

/// `parla man`: parla(1) on stdout, or every page into `dir`.
fn man(dir: Option<&Path>) -> Result<()> {
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(man_command(), dir)
                .with_context(|| format!("writing manual pages into {}", dir.display()))?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(man_command())
                .render(&mut out)
                .context("writing the manual page")?;
        }
    }
    Ok(())
}

fn load(explicit: Option<&Path>) -> Result<(ConfigSource, Settings)> {
    let source = config::choose_source(explicit);
    match config::load(&source, std::env::vars()) {
        Ok(s) => Ok((source, s)),
        Err(errors) => {
            let mut text = String::from("configuration is not valid:");
            for p in &errors.0 {
                text.push_str(&format!("\n  {}: {}", p.key, p.message));
            }
            bail!(text)
        }
    }
}

fn init_logging(log: &config::LogSettings) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Under systemd, journald stamps each line itself and shows no colors.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!journald && std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match (log.format, journald) {
        (config::LogFormat::Json, _) => builder.json().init(),
        (config::LogFormat::Plain, true) => builder.without_time().init(),
        (config::LogFormat::Plain, false) => builder.init(),
    }
}

fn serve(config: Option<&Path>) -> Result<()> {
    let (source, settings) = load(config)?;
    init_logging(&settings.log);
    match &source {
        ConfigSource::File(p) => tracing::info!(config = %p.display(), "configuration loaded"),
        ConfigSource::Demo => {
            tracing::warn!("no configuration file: running the embedded DEMO");
            tracing::warn!(
                "messages go to a SIMULATED network, not to real phones; copy conf/parla.toml \
                 to /etc/parla/parla.toml (or pass --config) to run for real"
            );
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("parla")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        // Signal handlers exist from before the start on: a SIGTERM right after READY must
        // take the graceful path, not the default action.
        let mut signals = Signals::install().context("installing signal handlers")?;
        let daemon = parla::daemon::start(settings).await?;
        let token = daemon.shutdown_token();
        let mut stop = signals.stop;
        tokio::spawn(async move {
            stop.recv().await;
            let _ = sd_notify::notify(
                false,
                &[
                    sd_notify::NotifyState::Stopping,
                    sd_notify::NotifyState::Status("stopping: handing back unfinished work"),
                ],
            );
            token.cancel();
            // A second signal means "now": exit without the graceful path (the store's
            // crash recovery handles whatever was in flight).
            stop.recv().await;
            tracing::warn!("second signal: exiting at once");
            std::process::exit(130);
        });
        tokio::spawn(reload_on_hangup(
            signals.hangup.take(),
            source,
            daemon.reload_handle(),
        ));
        // start() returned: the API and SMPP listeners are bound and every channel started.
        let status = format!("ready: API on {}", daemon.http_addr);
        let _ = sd_notify::notify(
            false,
            &[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status(&status),
            ],
        );
        if let Some(timeout) = parla::watchdog::systemd_timeout() {
            let (watchdog, every) = parla::watchdog::Watchdog::for_timeout(timeout);
            tracing::info!(
                timeout = ?timeout,
                stale_after = ?watchdog.stale_after(),
                "systemd watchdog on: pinging while the main loops make progress"
            );
            let heartbeats = parla::watchdog::global().clone();
            tokio::spawn(parla::watchdog::run(heartbeats, watchdog, every));
        }
        match daemon.smpp_addr {
            // Fields before api=: tools read the API address as the line's last word.
            Some(smpp) => tracing::info!(smpp = %smpp, api = %daemon.http_addr, "parla is ready"),
            None => tracing::info!(api = %daemon.http_addr, "parla is ready"),
        }
        daemon.wait().await?;
        Ok(())
    })
}

/// The signals `serve` acts on.
struct Signals {
    /// SIGTERM and SIGINT: shut down (a second one: exit at once).
    stop: StopSignals,
    /// SIGHUP: reload the configuration.
    hangup: Option<tokio::signal::unix::Signal>,
}

struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            stop: StopSignals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            },
            hangup: Some(signal(SignalKind::hangup())?),
        })
    }
}

/// `systemctl reload parla` (SIGHUP): reads the configuration again; a broken one is refused
/// with its problems in the log and the running one stays; a good one is applied in place.
async fn reload_on_hangup(
    hangup: Option<tokio::signal::unix::Signal>,
    source: ConfigSource,
    daemon: parla::reload::ReloadHandle,
) {
    let Some(mut hangup) = hangup else { return };
    while hangup.recv().await.is_some() {
        let mut states = vec![sd_notify::NotifyState::Reloading];
        states.extend(sd_notify::NotifyState::monotonic_usec_now().ok());
        let _ = sd_notify::notify(false, &states);
        tracing::info!("SIGHUP: reloading the configuration");
        let status = match config::load(&source, std::env::vars()) {
            Err(errors) => {
                for p in &errors.0 {
                    tracing::error!(key = %p.key, problem = %p.message, "configuration reload refused");
                }
                tracing::error!(
                    problems = errors.0.len(),
                    "configuration reload refused: the running configuration stays in force"
                );
                "reload refused: the configuration has problems (see the log)".to_string()
            }
            Ok(settings) => match daemon.reload(settings).await {
                Ok(report) => {
                    tracing::info!(
                        added = ?report.channels_added,
                        removed = ?report.channels_removed,
                        restarted = ?report.channels_restarted,
                        kept = ?report.channels_kept,
                        webhooks = ?report.webhooks_changed,
                        "configuration reloaded"
                    );
                    if !report.need_restart.is_empty() {
                        tracing::warn!(
                            sections = ?report.need_restart,
                            "these settings changed but take effect only at the next restart"
                        );
                    }
                    "ready: configuration reloaded".to_string()
                }
                Err(e) => {
                    tracing::error!(error = %e, "configuration reload failed");
                    format!("reload failed: {e}")
                }
            },
        };
        let _ = sd_notify::notify(
            false,
            &[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status(&status),
            ],
        );
    }
}

fn check_config(config: Option<&Path>) -> ExitCode {
    let source = config::choose_source(config);
    match config::load(&source, std::env::vars()) {
        Ok(settings) => {
            match source {
                ConfigSource::File(p) => println!("{}: ok", p.display()),
                ConfigSource::Demo => println!(
                    "no configuration file ({} does not exist): the embedded demo settings are ok",
                    config::DEFAULT_CONFIG_PATH
                ),
            }
            if settings.sim.enabled {
                println!("note: the simulated channel is enabled; it sends to no real phone");
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for p in &errors.0 {
                eprintln!("{}: {}", p.key, p.message);
            }
            eprintln!("{} problem(s) found", errors.0.len());
            ExitCode::from(2)
        }
    }
}

fn compact(config: Option<&Path>) -> Result<()> {
    let (_, settings) = load(config)?;
    let path = settings.store.resolved_path();
    if !parla::store::exists_at(&path) {
        bail!("no store at {}", path.display());
    }
    let report = parla::store::compact(
        &path,
        settings.store.cache_capacity_mb.saturating_mul(1024 * 1024),
    )
    .with_context(|| format!("compacting {}", path.display()))?;
    println!(
        "compacted {}: {} keys, {} -> {} bytes",
        path.display(),
        report.keys,
        report.bytes_before,
        report.bytes_after
    );
    Ok(())
}

/// Where the API is and how to authenticate, from the flags or the configuration.
struct Api {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Api {
    fn new(args: &ApiArgs) -> Result<Api> {
        let settings = match (&args.api, &args.config) {
            (Some(_), None) => None,
            _ => Some(load(args.config.as_deref())?.1),
        };
        let base = match &args.api {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => {
                let mut addr = settings
                    .as_ref()
                    .map_or_else(|| Settings::default().http.listen, |s| s.http.listen);
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("http://{addr}")
            }
        };
        let token = args
            .token
            .clone()
            .or_else(|| settings.and_then(|s| s.http.tokens.first().cloned()));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Ok(Api { base, token, agent })
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let url = format!("{}{}", self.base, path);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let response = match (method, body) {
            ("POST", Some(body)) => {
                let mut req = self.agent.post(&url);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.send_json(body)
            }
            _ => {
                let mut req = self.agent.get(&url);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.call()
            }
        };
        let mut response =
            response.with_context(|| format!("cannot reach parla at {}", self.base))?;
        let status = response.status();
        let json: serde_json::Value = response
            .body_mut()
            .read_json()
            .with_context(|| format!("unexpected answer from {url} (HTTP {status})"))?;
        if !status.is_success() {
            let msg = json["error"]["message"].as_str().unwrap_or("unknown error");
            let code = json["error"]["code"].as_str().unwrap_or("error");
            bail!("{msg} ({code}, HTTP {})", status.as_u16());
        }
        Ok(json)
    }
}

fn send(
    args: &ApiArgs,
    to: String,
    text: String,
    from: Option<String>,
    kind: Option<String>,
) -> Result<()> {
    let api = Api::new(args)?;
    let mut body = serde_json::json!({"to": to, "text": text});
    if let Some(f) = from {
        body["from"] = f.into();
    }
    if let Some(k) = kind {
        body["kind"] = k.into();
    }
    let m = api.call("POST", "/v1/messages", Some(body))?;
    println!(
        "{}  {}  to {}  ({} part(s), {})",
        m["id"].as_str().unwrap_or("?"),
        m["status"].as_str().unwrap_or("?"),
        m["to"].as_str().unwrap_or("?"),
        m["parts"],
        m["encoding"].as_str().unwrap_or("?"),
    );
    Ok(())
}

fn status(args: &ApiArgs, id: &str) -> Result<()> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        bail!("{id:?} is not a message id");
    }
    let api = Api::new(args)?;
    let m = api.call("GET", &format!("/v1/messages/{id}"), None)?;
    println!(
        "{}  {}  to {}",
        m["id"].as_str().unwrap_or("?"),
        m["status"].as_str().unwrap_or("?"),
        m["to"].as_str().unwrap_or("?")
    );
    if let Some(history) = m["history"].as_array() {
        for t in history {
            let reason = t["reason"]
                .as_str()
                .map(|r| format!("  {r}"))
                .unwrap_or_default();
            println!(
                "  {}  {}{}",
                t["at"].as_str().unwrap_or("?"),
                t["status"].as_str().unwrap_or("?"),
                reason
            );
        }
    }
    Ok(())
}

/// `parla hash-password`: the first line of stdin, without its line end, hashed.
fn hash_password() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        anyhow::bail!("no password on stdin");
    }
    if password.len() > 8 {
        // SMPP 3.4 carries at most 8 characters: a longer one could never be typed in a bind.
        anyhow::bail!("an SMPP password has at most 8 characters");
    }
    let hash = parla::smpp::auth::hash_password(password).map_err(anyhow::Error::msg)?;
    println!("{hash}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// roff escapes hyphens (`check\-config`); the words as a reader sees them.
    fn plain(roff: &str) -> String {
        roff.replace("\\-", "-")
    }

    #[test]
    fn man_page_names_every_subcommand() {
        let mut page = Vec::new();
        clap_mangen::Man::new(man_command())
            .render(&mut page)
            .unwrap();
        let page = plain(&String::from_utf8(page).unwrap());
        assert!(page.contains(".TH parla 1"), "{page}");
        let visible: Vec<String> = man_command()
            .get_subcommands()
            .filter(|c| !c.is_hide_set())
            .map(|c| c.get_name().to_string())
            .collect();
        assert!(visible.len() >= 9, "{visible:?}");
        for name in &visible {
            assert!(
                page.contains(name.as_str()),
                "parla(1) does not mention {name}:\n{page}"
            );
        }
        assert!(!visible.iter().any(|n| n == "man" || n == "help"));
    }

    /// Every command at every depth has its page, naming its own subcommands and options.
    #[test]
    fn man_pages_cover_every_command() {
        fn walk(cmd: &clap::Command, path: &str, dir: &Path) {
            let file = dir.join(format!("{path}.1"));
            let page = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let page = plain(&page);
            for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
                if let Some(long) = arg.get_long() {
                    assert!(
                        page.contains(&format!("--{long}")),
                        "{path}.1 lacks --{long}"
                    );
                }
            }
            for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
                assert!(
                    page.contains(sub.get_name()),
                    "{path}.1 lacks {}",
                    sub.get_name()
                );
                walk(sub, &format!("{path}-{}", sub.get_name()), dir);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        man(Some(dir.path())).unwrap();
        walk(&man_command(), "parla", dir.path());
        assert!(dir.path().join("parla-store-compact.1").exists());
        assert!(!dir.path().join("parla-man.1").exists());
    }
}
