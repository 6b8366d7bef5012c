//! A simulated GSM modem on a real pseudo-terminal, speaking TS 27.005 PDU mode, so the modem
//! driver can be tested end to end through the same serial port code it uses on `/dev/ttyUSB0`.
//! Also `parla sim modem` ([`run_cli`]).
//!
//! - [`SimModemCore`]: the modem as a pure state machine (bytes in, bytes out, time passed in),
//!   with switchable [`Quirks`] of real devices (`shared/corpus/modem-quirks.md`).
//! - [`spawn`]: one tokio task owns the pty master and runs the core; [`SimModemHandle`] feeds
//!   it messages, failures, unplug and replug, and reads what the host sent.
//!
//! Decisions the tests of other modules may rely on:
//! - Errors: unknown commands and syntax errors are always `ERROR`; `+CME ERROR`/`+CMS ERROR`
//!   appear only after `AT+CMEE=1` (numeric) or `2` (text), else `ERROR`.
//! - Storage indexes start at `index_base` (0 by default); `SM` and `SR` are separate memories,
//!   `ME`/`MT` are accepted as names of `SM`. Reading an empty slot answers a bare `OK`, an index
//!   past the memory `+CMS ERROR: 321`. `AT+CMGL` and `AT+CMGR` mark messages read.
//! - `AT+CNMI` starts at `0,0,0,0,0` (TS 27.005 default) after start and reset: messages are
//!   stored silently and status reports stored in `SR` silently until the host asks otherwise.
//! - Indications produced while the host is typing a PDU (after the prompt) or while the modem
//!   reboots are held and printed after the final result / `RDY`, unless `urc-during-send`.
//! - TP-MR counts from 0 and wraps after 255; it survives resets. The modem ignores the host's
//!   TP-MR, as real modems do.
//! - `no-cnmi` beats `direct-delivery` / `direct-reports`: nothing is ever announced.

mod core;
mod pty;

pub use self::core::{
    Counters, Quirks, ReceiveError, ReceiveOptions, SentSms, SimEvent, SimModemConfig,
    SimModemCore, parse_quirks,
};
pub use self::pty::{PROBE_INTERVAL, SimError, SimModemHandle, spawn};

use std::path::PathBuf;

use serde_json::json;

use super::cli::{CliOutcome, cli_error, print_json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast::error::RecvError;

/// Runs `parla sim modem`: starts a modem, prints `{"event":"ready","path":...}`, then one JSON
/// line per [`SimEvent`] and per control answer, and reads control lines until `quit` or the
/// end of `stdin`:
///
/// ```text
/// receive <from> <text...>   a text arrives (the rest of the line, verbatim)
/// stall on|off               hang the modem / bring it back
/// fail <n> <cms-code>        the next n sends answer +CMS ERROR: <cms-code>
/// report <reference>         produce the pending status report for that TP-MR now
/// counters                   print the counters
/// vanish                     unplug (the link disappears)
/// reappear                   plug in again; prints a new "ready" line
/// quit                       stop
/// ```
///
/// A bad line prints `{"event":"error","message":...}` and is otherwise ignored.
pub async fn run_cli<R, W>(
    config: SimModemConfig,
    link: Option<PathBuf>,
    stdin: R,
    mut stdout: W,
) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let modem = spawn(config, link).await?;
    let mut events = modem.subscribe();
    print_json(
        &mut stdout,
        &json!({"event": "ready", "path": modem.path()}),
    )
    .await?;
    let mut lines = stdin.lines();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                match cli_command(&modem, &line).await {
                    CliOutcome::Print(value) => print_json(&mut stdout, &value).await?,
                    CliOutcome::Nothing => {}
                    CliOutcome::Quit => break,
                }
            }
            event = events.recv() => match event {
                Ok(event) => {
                    let value = serde_json::to_value(&event)
                        .unwrap_or_else(|e| json!({"event": "error", "message": e.to_string()}));
                    print_json(&mut stdout, &value).await?;
                }
                Err(RecvError::Lagged(missed)) => {
                    let message = format!("{missed} events were missed");
                    print_json(&mut stdout, &json!({"event": "error", "message": message})).await?;
                }
                Err(RecvError::Closed) => break,
            },
        }
    }
    // Already gone is fine: quitting is all that is asked.
    let _ = modem.shutdown().await;
    stdout.flush().await
}

async fn cli_command(modem: &SimModemHandle, line: &str) -> CliOutcome {
    let line = line.trim_end_matches(['\r', '\n']);
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return CliOutcome::Nothing;
    }
    let (verb, rest) = trimmed.split_once(' ').unwrap_or((trimmed, ""));
    let args: Vec<&str> = rest.split_whitespace().collect();
    let result = match (verb, args.as_slice()) {
        ("receive", [from, ..]) => {
            let text = rest
                .trim_start()
                .strip_prefix(from)
                .map(|t| t.strip_prefix(' ').unwrap_or(t))
                .unwrap_or_default();
            match modem.receive_sms(from, text).await {
                // The modem's own "received" event tells the rest.
                Ok(_) => return CliOutcome::Nothing,
                Err(error) => Err(error),
            }
        }
        ("stall", [state]) => {
            let on = match *state {
                "on" => true,
                "off" => false,
                _ => return cli_error("usage: stall on|off"),
            };
            modem
                .set_stalled(on)
                .await
                .map(|()| json!({"event": "stall", "on": on}))
        }
        ("fail", [n, code]) => match (n.parse::<u32>(), code.parse::<u16>()) {
            (Ok(n), Ok(code)) => modem
                .fail_next_sends(n, code)
                .await
                .map(|()| json!({"event": "fail", "count": n, "code": code})),
            _ => return cli_error("usage: fail <n> <cms-code>"),
        },
        ("garbage", [n]) => match n.parse::<u32>() {
            Ok(n) => modem
                .garbage(n)
                .await
                .map(|()| json!({"event": "garbage", "lines": n})),
            Err(_) => return cli_error("usage: garbage <lines>"),
        },
        ("report", [reference]) => match reference.parse::<u8>() {
            Ok(reference) => match modem.report_now(reference).await {
                Ok(true) => return CliOutcome::Nothing,
                Ok(false) => {
                    return cli_error(format!("no pending report for reference {reference}"));
                }
                Err(error) => Err(error),
            },
            Err(_) => return cli_error("usage: report <reference 0-255>"),
        },
        ("counters", []) => modem
            .counters()
            .await
            .map(|counters| json!({"event": "counters", "counters": counters})),
        ("vanish", []) => modem.vanish().await.map(|()| json!({"event": "vanished"})),
        ("reappear", []) => modem
            .reappear()
            .await
            .map(|path| json!({"event": "ready", "path": path})),
        ("quit", []) => return CliOutcome::Quit,
        _ => {
            return cli_error(format!(
                "unknown command {trimmed:?}; expected receive <from> <text>, stall on|off, \
                 fail <n> <code>, garbage <lines>, report <ref>, counters, vanish, reappear \
                 or quit"
            ));
        }
    };
    match result {
        Ok(value) => CliOutcome::Print(value),
        Err(error) => cli_error(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    use tokio::io::{AsyncReadExt, BufReader};

    /// Reads JSON lines from the CLI's stdout until one has `event == wanted`.
    async fn next_event(
        lines: &mut tokio::io::Lines<BufReader<tokio::io::DuplexStream>>,
        wanted: &str,
    ) -> Value {
        loop {
            let line = tokio::time::timeout(std::time::Duration::from_secs(5), lines.next_line())
                .await
                .expect("cli answered in time")
                .expect("read")
                .expect("cli still running");
            let value: Value = serde_json::from_str(&line).expect("json line");
            if value["event"] == wanted {
                return value;
            }
        }
    }

    #[tokio::test]
    async fn cli_prints_ready_events_and_errors() {
        let (mut control, cli_stdin) = tokio::io::duplex(4096);
        let (cli_stdout, output) = tokio::io::duplex(64 * 1024);
        let cli = tokio::spawn(run_cli(
            SimModemConfig::default(),
            None,
            BufReader::new(cli_stdin),
            cli_stdout,
        ));
        let mut lines = BufReader::new(output).lines();
        let ready = next_event(&mut lines, "ready").await;
        let path = ready["path"].as_str().expect("path").to_owned();
        assert!(path.starts_with("/dev/pts/"), "{path}");

        control
            .write_all(b"receive +4915112345678 hello  there\n")
            .await
            .unwrap();
        let received = next_event(&mut lines, "received").await;
        assert_eq!(received["from"], "+4915112345678");
        assert_eq!(received["text"], "hello  there");
        assert_eq!(received["parts"], 1);

        control.write_all(b"frobnicate\n").await.unwrap();
        let error = next_event(&mut lines, "error").await;
        assert!(error["message"].as_str().unwrap().contains("frobnicate"));
        control.write_all(b"fail two 38\n").await.unwrap();
        next_event(&mut lines, "error").await;
        control.write_all(b"report 7\n").await.unwrap();
        next_event(&mut lines, "error").await;

        control.write_all(b"stall on\n").await.unwrap();
        assert_eq!(next_event(&mut lines, "stall").await["on"], true);
        control.write_all(b"fail 2 500\n").await.unwrap();
        assert_eq!(next_event(&mut lines, "fail").await["code"], 500);
        control.write_all(b"counters\n").await.unwrap();
        let counters = next_event(&mut lines, "counters").await;
        assert_eq!(counters["counters"]["received_parts"], 1);

        control.write_all(b"vanish\n").await.unwrap();
        next_event(&mut lines, "vanished").await;
        control.write_all(b"reappear\n").await.unwrap();
        let again = next_event(&mut lines, "ready").await;
        assert!(again["path"].as_str().unwrap().starts_with("/dev/pts/"));

        control.write_all(b"quit\n").await.unwrap();
        cli.await.unwrap().unwrap();
        let mut rest = String::new();
        lines.into_inner().read_to_string(&mut rest).await.unwrap();
    }

    #[tokio::test]
    async fn cli_reports_sends_made_through_the_pty() {
        use tokio_serial::SerialPortBuilderExt;

        let (mut control, cli_stdin) = tokio::io::duplex(4096);
        let (cli_stdout, output) = tokio::io::duplex(64 * 1024);
        let cli = tokio::spawn(run_cli(
            SimModemConfig::default(),
            None,
            BufReader::new(cli_stdin),
            cli_stdout,
        ));
        let mut lines = BufReader::new(output).lines();
        let ready = next_event(&mut lines, "ready").await;
        let path = ready["path"].as_str().unwrap().to_owned();
        let mut port = tokio_serial::new(&path, 115_200)
            .open_native_async()
            .expect("open pty slave");
        let pdu = crate::sim::modem::pty::tests::submit_pdu("+391234567", "ciao", true);
        port.write_all(format!("AT+CMGS={}\r", pdu.tpdu_len).as_bytes())
            .await
            .unwrap();
        crate::sim::modem::pty::tests::read_until(&mut port, b"> ").await;
        port.write_all(format!("{}\x1a", pdu.to_hex()).as_bytes())
            .await
            .unwrap();
        crate::sim::modem::pty::tests::read_until(&mut port, b"OK\r\n").await;
        let sent = next_event(&mut lines, "sent").await;
        assert_eq!(sent["to"], "+391234567");
        assert_eq!(sent["text"], "ciao");
        assert_eq!(sent["reference"], 0);
        control.write_all(b"report 0\n").await.unwrap();
        let report = next_event(&mut lines, "report").await;
        assert_eq!(report["reference"], 0);
        assert_eq!(report["status"], 0);
        drop(control);
        cli.await.unwrap().unwrap();
    }
}
