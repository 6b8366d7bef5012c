//! Intake load generator: N clients, each on its own keep-alive connection, together POST exactly
//! M messages to `/v1/messages` and time every request from send to full response.
//!
//! ```text
//! cargo run --release --example intake_load -- --url http://127.0.0.1:8725 --clients 16 --messages 100000
//! ```
//!
//! Prints one JSON line on stdout:
//! `{"clients":N,"messages":M,"accepted":..,"errors":..,"seconds":..,"msgs_per_s":..,"p50_ms":..,"p99_ms":..,"max_ms":..}`.
//! Every response must be 202; anything else (another status, a transport error, a timeout) is
//! an error, described on stderr, and makes the exit status non-zero. `bench/intake.sh` runs it.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use serde::Serialize;

/// Longest a single request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How often progress goes to stderr on long runs.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// Failures described in full on stderr; the rest are only counted.
const FAILURES_SHOWN: usize = 10;

#[derive(Parser)]
#[command(about = "POST messages to a running parla and measure intake")]
struct Args {
    /// Base URL of the API, e.g. http://127.0.0.1:8725.
    #[arg(long)]
    url: String,
    /// Concurrent clients, each with its own keep-alive connection.
    #[arg(long, default_value_t = 16)]
    clients: u64,
    /// Messages to send in total, shared among the clients.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Bearer token, when the daemon has http.tokens set.
    #[arg(long)]
    token: Option<String>,
}

/// The line printed at the end.
#[derive(Serialize)]
struct Summary {
    clients: u64,
    messages: u64,
    accepted: u64,
    errors: u64,
    seconds: f64,
    msgs_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// What one client saw.
#[derive(Default)]
struct ClientReport {
    /// Microseconds from send to full response, one per request that got a response.
    latencies_us: Vec<u64>,
    /// Responses by status code.
    statuses: BTreeMap<u16, u64>,
    /// Requests that got no response (connection error, timeout).
    transport_errors: u64,
    /// The first few failures, described.
    failures: Vec<String>,
}

impl ClientReport {
    fn fail(&mut self, what: String) {
        if self.failures.len() < FAILURES_SHOWN {
            self.failures.push(what);
        }
    }
}

/// A valid Italian mobile number (+39 347 and 7 digits) that differs per message.
fn recipient(n: u64) -> String {
    format!("+39347{:07}", n % 10_000_000)
}

fn body(n: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"to":"{}","text":"Order {n} has shipped. Track it at https://example.test/t/{n}"}}"#,
        recipient(n)
    ))
}

/// Sends messages until the shared counter reaches `total`.
async fn run_client(
    uri: Uri,
    auth: Option<Arc<str>>,
    next: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    total: u64,
) -> ClientReport {
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    let host = uri
        .authority()
        .map_or_else(String::new, |a| a.as_str().to_string());
    let mut report = ClientReport::default();
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= total {
            return report;
        }
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(uri.path())
            .header(header::HOST, host.as_str())
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(auth) = &auth {
            request = request.header(header::AUTHORIZATION, auth.as_ref());
        }
        let request = match request.body(Full::new(body(n))) {
            Ok(r) => r,
            Err(e) => {
                report.transport_errors += 1;
                report.fail(format!("message {n}: cannot build the request: {e}"));
                continue;
            }
        };
        let start = Instant::now();
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let response = send(&mut sender, &uri, request).await?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, bytes))
        })
        .await;
        let elapsed = start.elapsed();
        done.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(Ok((status, bytes))) => {
                report
                    .latencies_us
                    .push(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
                *report.statuses.entry(status.as_u16()).or_default() += 1;
                if status != StatusCode::ACCEPTED {
                    report.fail(format!(
                        "message {n}: HTTP {status}: {}",
                        String::from_utf8_lossy(&bytes)
                    ));
                }
            }
            Ok(Err(e)) => {
                report.transport_errors += 1;
                report.fail(format!("message {n}: {e:#}"));
            }
            Err(_) => {
                // The connection may still carry the abandoned request.
                sender = None;
                report.transport_errors += 1;
                report.fail(format!("message {n}: no response in {REQUEST_TIMEOUT:?}"));
            }
        }
    }
}

/// Sends one request on the client's connection, connecting first when it has none (or the
/// daemon closed it).
async fn send(
    sender: &mut Option<SendRequest<Full<Bytes>>>,
    uri: &Uri,
    request: Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        let host = uri.host().context("the URL has no host")?;
        let port = uri.port_u16().unwrap_or(80);
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .with_context(|| format!("cannot connect to {host}:{port}"))?;
        stream.set_nodelay(true)?;
        let (s, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        *sender = Some(s);
    }
    let Some(s) = sender.as_mut() else {
        bail!("no connection");
    };
    let sent = async {
        s.ready().await?;
        s.send_request(request).await
    }
    .await;
    if sent.is_err() {
        // A fresh connection for the next request.
        *sender = None;
    }
    Ok(sent?)
}

/// Nearest-rank percentile of sorted values, in milliseconds.
fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted_us.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted_us.len()) - 1;
    sorted_us[i] as f64 / 1000.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

async fn run(args: Args) -> Result<bool> {
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let uri: Uri = format!("{}/v1/messages", args.url.trim_end_matches('/'))
        .parse()
        .with_context(|| {
            format!(
                "--url {:?} is not a URL like http://127.0.0.1:8725",
                args.url
            )
        })?;
    if uri.scheme_str() != Some("http") {
        bail!("--url must start with http:// (this generator speaks plain HTTP/1.1)");
    }
    let auth: Option<Arc<str>> = args
        .token
        .as_deref()
        .map(|t| Arc::from(format!("Bearer {t}")));
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));

    let progress = {
        let done = done.clone();
        let total = args.messages;
        tokio::spawn(async move {
            let start = Instant::now();
            loop {
                tokio::time::sleep(PROGRESS_EVERY).await;
                let n = done.load(Ordering::Relaxed);
                eprintln!(
                    "intake_load: {n}/{total} after {:.0} s ({:.0} msgs/s)",
                    start.elapsed().as_secs_f64(),
                    n as f64 / start.elapsed().as_secs_f64()
                );
            }
        })
    };

    let start = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..args.clients {
        clients.spawn(run_client(
            uri.clone(),
            auth.clone(),
            next.clone(),
            done.clone(),
            args.messages,
        ));
    }
    let mut latencies_us = Vec::with_capacity(usize::try_from(args.messages).unwrap_or(0));
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut transport_errors = 0;
    let mut failures = Vec::new();
    while let Some(joined) = clients.join_next().await {
        let report = joined.context("a client task panicked")?;
        latencies_us.extend(report.latencies_us);
        for (status, count) in report.statuses {
            *statuses.entry(status).or_default() += count;
        }
        transport_errors += report.transport_errors;
        failures.extend(report.failures);
    }
    let seconds = start.elapsed().as_secs_f64();
    progress.abort();

    latencies_us.sort_unstable();
    let accepted = statuses.get(&202).copied().unwrap_or(0);
    let errors = args.messages - accepted;
    let summary = Summary {
        clients: args.clients,
        messages: args.messages,
        accepted,
        errors,
        seconds: round3(seconds),
        msgs_per_s: (accepted as f64 / seconds).round(),
        p50_ms: round3(percentile_ms(&latencies_us, 0.50)),
        p99_ms: round3(percentile_ms(&latencies_us, 0.99)),
        max_ms: round3(percentile_ms(&latencies_us, 1.0)),
    };
    println!("{}", serde_json::to_string(&summary)?);

    if errors > 0 {
        let by_status: Vec<String> = statuses
            .iter()
            .filter(|(s, _)| **s != 202)
            .map(|(s, n)| format!("HTTP {s}: {n}"))
            .collect();
        eprintln!(
            "intake_load: {errors} of {} messages were not accepted ({}; no response: {transport_errors})",
            args.messages,
            if by_status.is_empty() {
                "no other status".to_string()
            } else {
                by_status.join(", ")
            }
        );
        for f in failures.iter().take(FAILURES_SHOWN) {
            eprintln!("  {f}");
        }
    }
    Ok(errors == 0)
}

fn main() -> ExitCode {
    let args = Args::parse();
    // One thread: the generator shares the machine's cores with the daemon it measures, and
    // with hyper's pooled client on every core it took a fifth more CPU per request.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("intake_load: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("intake_load: {e:#}");
            ExitCode::from(2)
        }
    }
}
