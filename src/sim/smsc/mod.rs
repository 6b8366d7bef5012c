//! A simulated SMPP 3.4 SMSC on real loopback TCP, for the SMPP links' integration tests and
//! benchmarks. Also `parla sim smsc` ([`run_cli`]).
//!
//! - [`SmscCore`]: the SMSC as a pure state machine (frames in, commands out, time passed in):
//!   binds, submit_sm with message ids in several styles, delivery receipts, MO messages,
//!   reassembly of concatenated submits, injected faults.
//! - [`spawn`]: a listener, one task per connection owning its socket, and a timer task, all
//!   driving one shared core; [`SmscHandle`] injects faults and MO messages.
//!
//! Decisions the tests of other modules may rely on:
//! - Message ids count from `id_start` (439041101 by default) in the order submits are
//!   accepted, over all connections; refused submits use no id.
//! - A receipt goes to a session bound as receiver or transceiver with the submitter's
//!   system_id; MO messages to any receiving session. With none bound they wait. A deliver_sm
//!   answered with an error status is sent again after `retry_delay` (1 s); one unanswered for
//!   `delivery_timeout` (10 s) or on a connection that closes goes back to the front of the
//!   queue at once: receipts and MO are never lost. At most `deliver_window` (100) are
//!   unanswered per session.
//! - Receipts' dates are UTC; their `text:` is the first 20 characters of the part, printable
//!   ASCII only (`?` for anything else), as the receipt is sent with data_coding 0.
//!   UNDELIV receipts say `err:001` and carry network_error_code GSM/1 in the TLV styles.
//! - `stall on`: requests are read and dropped unanswered (an `ignored` event each), no
//!   deliver_sm is written; deliver_sm_resp and unbind_resp from the peer are still taken.
//!   `stall off` answers nothing of what was dropped, as a hung SMSC that recovers would not.
//! - `drop` closes every socket at once without unbind and without writing what was queued.
//! - `quit` (and the end of stdin) ends a stall, sends unbind to every bound session, closes
//!   the others, refuses new connections, and closes what has not answered after
//!   [`SHUTDOWN_GRACE`] (2 s). Receipts and MO not yet acknowledged are lost with the process.
//! - A refused bind leaves the connection open; the peer may try again.
//! - Requests other than bind, enquire_link, unbind and submit_sm get generic_nack
//!   ESME_RINVCMDID (ESME_RINVBNDSTS before a bind); an undecodable frame gets generic_nack with
//!   its sequence number and the status [`crate::smpp::frame::Frame::Invalid`] names.
//! - With `quiet`, submits, receipts, requeues, stalls and whole messages print no event and
//!   concatenated submits are not reassembled; MO events and counters stay.

mod core;
mod server;

pub use self::core::{
    CloseKind, ConnId, Counters, IdStyle, MoError, MoMethod, ReceiptIdForm, ReceiptStyle,
    SHUTDOWN_GRACE, SMSC_SYSTEM_ID, SmscConfig, SmscCore, SmscEvent,
};
pub use self::server::{EVENT_QUEUE, MAX_CONNECTIONS, SmscError, SmscHandle, spawn};

use std::net::SocketAddr;

use serde_json::json;

use super::cli::{CliOutcome, cli_error, print_json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

/// Events printed in one write at most.
const PRINT_BATCH: usize = 256;

/// Runs `parla sim smsc`: listens on `listen`, prints `{"event":"ready","addr":...}`, then one
/// JSON line per [`SmscEvent`] and per control answer, and reads control lines until `quit` or
/// the end of `stdin`:
///
/// ```text
/// mo <from> <to> <single|udh|sar|payload> <text...>   a phone sends a text (to any receiver)
/// throttle <n>                  the next n submit_sm are answered ESME_RTHROTTLED (0x58)
/// fail <n> <status-hex>         the next n submit_sm are answered with that status
/// undeliver <k>                 the k-th submit_sm accepted from now on gets an UNDELIV receipt
/// drop                          close every connection at once, without unbind
/// stall on|off                  stop answering anything / answer again
/// refuse-binds <status-hex>|off refuse every bind with that status / judge binds again
/// counters                      print the counters
/// quit                          unbind every session (2 s grace), close and stop
/// ```
///
/// A bad line prints `{"event":"error","message":...}` and is otherwise ignored.
pub async fn run_cli<R, W>(
    config: SmscConfig,
    listen: SocketAddr,
    stdin: R,
    mut stdout: W,
) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut smsc = spawn(listen, config)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let Some(mut events) = smsc.take_events() else {
        return Err(std::io::Error::other("events already taken"));
    };
    print_json(
        &mut stdout,
        &json!({"event": "ready", "addr": smsc.addr().to_string()}),
    )
    .await?;
    let mut lines = stdin.lines();
    let mut batch = Vec::with_capacity(PRINT_BATCH);
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                match cli_command(&smsc, &line) {
                    CliOutcome::Print(value) => print_json(&mut stdout, &value).await?,
                    CliOutcome::Nothing => {}
                    CliOutcome::Quit => break,
                }
            }
            count = events.recv_many(&mut batch, PRINT_BATCH) => {
                if count == 0 {
                    break;
                }
                print_events(&mut stdout, &mut batch).await?;
            }
        }
    }
    smsc.shutdown().await;
    // Everything the shutdown produced (unbound, disconnected).
    while events.recv_many(&mut batch, PRINT_BATCH).await > 0 {
        print_events(&mut stdout, &mut batch).await?;
    }
    stdout.flush().await
}

/// A status in hex: `0x58`, `58`, `0x00000058`.
fn parse_status(text: &str) -> Option<u32> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

fn status_hex(status: u32) -> String {
    format!("0x{status:08X}")
}

/// The rest of `line` after `skip` whitespace-separated words, verbatim.
fn rest_after(line: &str, skip: usize) -> &str {
    let mut rest = line;
    for _ in 0..skip {
        rest = rest.trim_start();
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        rest = rest.get(end..).unwrap_or_default();
    }
    rest.strip_prefix(' ').unwrap_or(rest)
}

fn cli_command(smsc: &SmscHandle, line: &str) -> CliOutcome {
    let line = line.trim_end_matches(['\r', '\n']);
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return CliOutcome::Nothing;
    }
    let words: Vec<&str> = trimmed.split_whitespace().collect();
    let value = match words.as_slice() {
        ["mo", from, to, method, _, ..] => {
            let Some(method) = MoMethod::parse(method) else {
                return cli_error("usage: mo <from> <to> <single|udh|sar|payload> <text...>");
            };
            let text = rest_after(trimmed, 4);
            match smsc.send_mo(from, to, method, text) {
                Ok((mo, parts)) => json!({"event": "mo_queued", "mo": mo, "parts": parts}),
                Err(error) => return cli_error(error.to_string()),
            }
        }
        ["throttle", n] => match n.parse::<u32>() {
            Ok(n) => {
                smsc.throttle(n);
                json!({"event": "throttle", "count": n})
            }
            Err(_) => return cli_error("usage: throttle <n>"),
        },
        ["fail", n, status] => match (n.parse::<u32>(), parse_status(status)) {
            (Ok(n), Some(status)) => {
                smsc.fail(n, status);
                json!({"event": "fail", "count": n, "status": status_hex(status)})
            }
            _ => return cli_error("usage: fail <n> <status-hex>"),
        },
        ["undeliver", k] => match k.parse::<u32>() {
            Ok(k) => {
                smsc.undeliver(k);
                json!({"event": "undeliver", "submit": k})
            }
            Err(_) => return cli_error("usage: undeliver <k>"),
        },
        ["drop"] => json!({"event": "dropped", "connections": smsc.drop_all()}),
        ["stall", state] => {
            let on = match *state {
                "on" => true,
                "off" => false,
                _ => return cli_error("usage: stall on|off"),
            };
            smsc.set_stalled(on);
            json!({"event": "stall", "on": on})
        }
        ["refuse-binds", "off"] => {
            smsc.refuse_binds(None);
            json!({"event": "refuse_binds", "status": null})
        }
        ["refuse-binds", status] => match parse_status(status) {
            Some(status) => {
                smsc.refuse_binds(Some(status));
                json!({"event": "refuse_binds", "status": status_hex(status)})
            }
            None => return cli_error("usage: refuse-binds <status-hex>|off"),
        },
        ["counters"] => json!({"event": "counters", "counters": smsc.counters()}),
        ["quit"] => return CliOutcome::Quit,
        _ => {
            return cli_error(format!(
                "unknown command {trimmed:?}; expected mo <from> <to> <method> <text>, \
                 throttle <n>, fail <n> <status-hex>, drop, stall on|off, \
                 refuse-binds <status-hex>|off, counters or quit"
            ));
        }
    };
    CliOutcome::Print(value)
}

async fn print_events<W: AsyncWrite + Unpin>(
    out: &mut W,
    batch: &mut Vec<SmscEvent>,
) -> std::io::Result<()> {
    let mut text = String::new();
    for event in batch.drain(..) {
        match serde_json::to_string(&event) {
            Ok(line) => text.push_str(&line),
            Err(e) => {
                text.push_str(&json!({"event": "error", "message": e.to_string()}).to_string())
            }
        }
        text.push('\n');
    }
    out.write_all(text.as_bytes()).await?;
    out.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_rest_of_line() {
        assert_eq!(parse_status("0x58"), Some(0x58));
        assert_eq!(parse_status("0B"), Some(0x0B));
        assert_eq!(parse_status("0x00000014"), Some(0x14));
        assert_eq!(parse_status("0x"), None);
        assert_eq!(parse_status("zz"), None);
        assert_eq!(parse_status("123456789"), None);
        assert_eq!(
            rest_after("mo +391 12345 single hello  world ", 4),
            "hello  world "
        );
        assert_eq!(rest_after("  mo a b udh x", 4), "x");
    }
}
