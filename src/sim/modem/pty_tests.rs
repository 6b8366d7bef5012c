use super::*;
use crate::sim::modem::parse_quirks;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::{SerialPortBuilderExt, SerialStream};

use crate::codec::gsm7;
use crate::codec::tpdu::{self, EncodedPdu, SubmitSpec};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A single-part GSM 7-bit SUBMIT.
pub(crate) fn submit_pdu(to: &str, text: &str, report: bool) -> EncodedPdu {
    let septets = gsm7::to_septets(text).unwrap();
    tpdu::encode_submit(&SubmitSpec {
        destination: to,
        payload: tpdu::Payload::Septets(&septets),
        concat: None,
        reference: 0,
        status_report: report,
        validity: None,
        smsc: None,
        reject_duplicates: false,
        class: None,
    })
    .unwrap()
}

/// Reads until `pattern` has arrived; returns everything read.
pub(crate) async fn read_until(port: &mut SerialStream, pattern: &[u8]) -> String {
    read_while(port, |seen| {
        !seen.windows(pattern.len()).any(|w| w == pattern)
    })
    .await
}

/// Reads until `count` line ends have arrived.
async fn read_lines(port: &mut SerialStream, count: usize) -> String {
    read_while(port, |seen| {
        seen.windows(2).filter(|w| w == b"\r\n").count() < count
    })
    .await
}

async fn read_while(port: &mut SerialStream, more: impl Fn(&[u8]) -> bool) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    let done = tokio::time::timeout(TIMEOUT, async {
        while more(&seen) {
            let n = port.read(&mut buf).await.expect("read from the modem");
            assert!(
                n > 0,
                "modem closed the port; got {:?}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        done.is_ok(),
        "the modem did not finish; got {:?}",
        String::from_utf8_lossy(&seen)
    );
    String::from_utf8(seen).unwrap()
}

/// Asserts nothing arrives for a while.
async fn read_nothing(port: &mut SerialStream, wait: Duration) {
    let mut buf = [0u8; 512];
    if let Ok(result) = tokio::time::timeout(wait, port.read(&mut buf)).await {
        let n = result.unwrap_or(0);
        panic!("unexpected {:?}", String::from_utf8_lossy(&buf[..n]));
    }
}

fn open(path: &Path) -> SerialStream {
    tokio_serial::new(path.to_string_lossy(), 115_200)
        .open_native_async()
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// A path in the temp dir no other test uses.
fn temp_link(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("parla-simmodem-{}-{name}", std::process::id()))
}

#[tokio::test]
async fn answers_at_through_tokio_serial() {
    let modem = spawn(SimModemConfig::default(), None).await.unwrap();
    assert_eq!(modem.path(), modem.pts_path());
    assert!(modem.path().starts_with("/dev/pts"));
    let mut port = open(&modem.path());
    port.write_all(b"AT\r").await.unwrap();
    assert_eq!(read_until(&mut port, b"OK\r\n").await, "\r\nOK\r\n");
    port.write_all(b"AT+CGMI\r").await.unwrap();
    assert_eq!(
        read_until(&mut port, b"OK\r\n").await,
        "\r\nparla\r\n\r\nOK\r\n"
    );
    modem.shutdown().await.unwrap();
    assert!(matches!(modem.sent().await, Err(SimError::Closed)));
}

#[tokio::test]
async fn full_send_and_receive_over_the_pty() {
    let modem = spawn(
        SimModemConfig {
            quirks: parse_quirks("echo").unwrap(),
            report_delay: Duration::from_millis(50),
            ..SimModemConfig::default()
        },
        None,
    )
    .await
    .unwrap();
    let mut events = modem.subscribe();
    let mut port = open(&modem.path());
    port.write_all(b"ATE0\r").await.unwrap();
    assert_eq!(read_until(&mut port, b"OK\r\n").await, "ATE0\r\r\nOK\r\n");
    port.write_all(b"AT+CMGF=0;+CNMI=2,1,0,1,0\r")
        .await
        .unwrap();
    read_until(&mut port, b"OK\r\n").await;

    let pdu = submit_pdu("+4915112345678", "over the pty", true);
    port.write_all(format!("AT+CMGS={}\r", pdu.tpdu_len).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_until(&mut port, b"> ").await, "\r\n> ");
    port.write_all(pdu.to_hex().as_bytes()).await.unwrap();
    port.write_all(b"\x1a").await.unwrap();
    assert_eq!(
        read_until(&mut port, b"OK\r\n").await,
        "\r\n+CMGS: 0\r\n\r\nOK\r\n"
    );
    let cds = read_lines(&mut port, 3).await;
    let hex = cds.split("\r\n").nth(2).unwrap();
    assert_eq!(cds, format!("\r\n+CDS: {}\r\n{hex}\r\n", hex.len() / 2 - 8));
    match tpdu::decode(&tpdu::decode_hex(hex).unwrap(), true).unwrap() {
        tpdu::Pdu::StatusReport(report) => assert_eq!(report.reference, 0),
        other => panic!("{other:?}"),
    }

    let sent = modem.sent().await.unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, "+4915112345678");
    assert_eq!(sent[0].text, "over the pty");
    let first = tokio::time::timeout(TIMEOUT, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(first, SimEvent::Sent(ref s) if s.reference == 0));

    assert_eq!(modem.receive_sms("+393331234567", "ciao").await.unwrap(), 1);
    assert_eq!(
        read_until(&mut port, b"\r\n+CMTI: \"SM\",0\r\n").await,
        "\r\n+CMTI: \"SM\",0\r\n"
    );
    port.write_all(b"AT+CMGR=0\r").await.unwrap();
    let read = read_until(&mut port, b"OK\r\n").await;
    let hex = read.split("\r\n").nth(2).unwrap();
    let pdu = tpdu::decode(&tpdu::decode_hex(hex).unwrap(), true).unwrap();
    assert_eq!(pdu.user_data().unwrap().text.as_deref(), Some("ciao"));
    assert_eq!(modem.counters().await.unwrap().sends_accepted, 1);
    modem.shutdown().await.unwrap();
}

#[tokio::test]
async fn failures_and_stall_over_the_pty() {
    let modem = spawn(SimModemConfig::default(), None).await.unwrap();
    let mut port = open(&modem.path());
    port.write_all(b"AT+CMEE=1\r").await.unwrap();
    read_until(&mut port, b"OK\r\n").await;
    modem.fail_next_sends(1, 42).await.unwrap();
    let pdu = submit_pdu("+4915112345678", "fail", false);
    port.write_all(format!("AT+CMGS={}\r", pdu.tpdu_len).as_bytes())
        .await
        .unwrap();
    read_until(&mut port, b"> ").await;
    port.write_all(format!("{}\x1a", pdu.to_hex()).as_bytes())
        .await
        .unwrap();
    assert_eq!(
        read_until(&mut port, b"\r\n+CMS ERROR: 42\r\n").await,
        "\r\n+CMS ERROR: 42\r\n"
    );

    modem.set_stalled(true).await.unwrap();
    port.write_all(b"AT\r").await.unwrap();
    read_nothing(&mut port, Duration::from_millis(300)).await;
    modem.set_stalled(false).await.unwrap();
    port.write_all(b"AT\r").await.unwrap();
    assert_eq!(read_until(&mut port, b"OK\r\n").await, "\r\nOK\r\n");
    modem.shutdown().await.unwrap();
}

#[tokio::test]
async fn host_can_close_and_reopen_and_misses_what_came_meanwhile() {
    let modem = spawn(SimModemConfig::default(), None).await.unwrap();
    let mut port = open(&modem.path());
    port.write_all(b"AT+CNMI=2,1\r").await.unwrap();
    read_until(&mut port, b"OK\r\n").await;
    drop(port);
    tokio::time::sleep(Duration::from_millis(100)).await;
    modem.receive_sms("+4912345", "while closed").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut port = open(&modem.path());
    port.write_all(b"AT\r").await.unwrap();
    // No stale +CMTI in front: output with the port closed is lost, as on a USB modem.
    assert_eq!(read_until(&mut port, b"OK\r\n").await, "\r\nOK\r\n");
    port.write_all(b"AT+CMGL=4\r").await.unwrap();
    assert!(
        read_until(&mut port, b"OK\r\n")
            .await
            .contains("+CMGL: 0,0,,")
    );
    modem.shutdown().await.unwrap();
}

#[tokio::test]
async fn vanish_closes_the_port_and_reappear_replugs_via_the_link() {
    let link = temp_link("vanish");
    let modem = spawn(SimModemConfig::default(), Some(link.clone()))
        .await
        .unwrap();
    assert_eq!(modem.path(), link);
    let first_pts = modem.pts_path();
    assert_eq!(std::fs::read_link(&link).unwrap(), first_pts);

    let mut port = open(&link);
    port.write_all(b"AT\r").await.unwrap();
    read_until(&mut port, b"OK\r\n").await;
    modem.receive_sms("+4912345", "kept").await.unwrap();

    modem.vanish().await.unwrap();
    assert!(std::fs::symlink_metadata(&link).is_err(), "link removed");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(TIMEOUT, port.read(&mut buf))
        .await
        .expect("the host notices the unplug");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(modem.counters().await.is_ok(), "still running");
    drop(port);

    assert_eq!(modem.reappear().await.unwrap(), link);
    let second_pts = modem.pts_path();
    assert_eq!(std::fs::read_link(&link).unwrap(), second_pts);
    let mut port = open(&link);
    // A replug is a power cycle: RDY first, then commands.
    assert_eq!(read_until(&mut port, b"RDY\r\n").await, "\r\nRDY\r\n");
    port.write_all(b"AT+CMGL=4\r").await.unwrap();
    let listing = read_until(&mut port, b"OK\r\n").await;
    assert!(
        listing.contains("+CMGL: 0,0,,"),
        "storage survived: {listing:?}"
    );

    modem.shutdown().await.unwrap();
    // The task removes the link on the way out.
    tokio::time::timeout(TIMEOUT, async {
        while std::fs::symlink_metadata(&link).is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("link removed at shutdown");
}

#[tokio::test]
async fn link_replaces_a_symlink_but_not_a_file() {
    let link = temp_link("replace");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/nonexistent", &link).unwrap();
    let modem = spawn(SimModemConfig::default(), Some(link.clone()))
        .await
        .unwrap();
    assert_eq!(std::fs::read_link(&link).unwrap(), modem.pts_path());
    drop(modem);
    // Dropping the last handle stops the task, which removes the link.
    tokio::time::timeout(TIMEOUT, async {
        while std::fs::symlink_metadata(&link).is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("link removed when the handles are gone");

    std::fs::write(&link, b"not a link").unwrap();
    let error = spawn(SimModemConfig::default(), Some(link.clone()))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
    std::fs::remove_file(&link).unwrap();
}
