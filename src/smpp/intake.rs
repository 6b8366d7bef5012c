//! What an integrator's PDUs ask of the store, without I/O: submit_sm / data_sm as a message
//! (or one part of a long one) with the status to refuse it with when it cannot be taken, and
//! the answers to query_sm and cancel_sm.

// PDUs come straight off the wire: let the compiler hold the "never panics" promise.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use rusmpp::{
    Command, CommandStatus, Pdu,
    pdus::QuerySmResp,
    types::{COctetString, EmptyOrFullCOctetString},
    values::MessageState,
};

use super::content::{self, Dc0};
use super::frame::{
    ESME_RINVDSTADR, ESME_RINVEXPIRY, ESME_RINVSCHED, ESME_RINVSRCADR, ESME_RSYSERR,
};
use super::session::ESME_RINVMSGLEN;
use super::time;
use crate::codec::gsm7;
use crate::config::{DefaultAlphabet, Defaults, SmppAccountSettings};
use crate::message::{
    Message, MessageId, Millis, NewMessage, Origin, OriginAddress, ReceiptRequest, Status,
};
use crate::phone;
use crate::store::SubmitPart;
use phonenumber::country::Id as Region;

/// ESME_RINVMSGID: the message id is not one of ours.
pub const ESME_RINVMSGID: u32 = 0x0C;
/// ESME_RCANCELFAIL: cancel_sm failed (the message is no longer queued, or not known).
pub const ESME_RCANCELFAIL: u32 = 0x11;
/// ESME_RINVESMCLASS: esm_class (here: its user data header) is invalid.
pub const ESME_RINVESMCLASS: u32 = 0x43;
/// ESME_RQUERYFAIL: query_sm failed (no such message of this account).
pub const ESME_RQUERYFAIL: u32 = 0x67;
/// ESME_RINVOPTPARAMVAL: an optional parameter's value is invalid.
pub const ESME_RINVOPTPARAMVAL: u32 = 0xC4;

/// The longest validity a submit may ask for; longer ones are cut to it.
pub const MAX_VALIDITY_MS: Millis = 30 * 24 * 3600 * 1000;
/// How far ahead a submit may be scheduled.
pub const MAX_SCHEDULE_AHEAD_MS: Millis = 365 * 24 * 3600 * 1000;

/// A submit that cannot be taken: the command_status to answer with, and why (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// command_status of the submit_sm_resp.
    pub status: u32,
    /// What was wrong.
    pub reason: String,
}

fn refuse(status: u32, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason: reason.into(),
    }
}

/// What a submit_sm / data_sm asks for.
#[derive(Debug, Clone)]
pub enum Intake {
    /// A whole message.
    Whole(NewMessage),
    /// One part of a long message, joined with the others by the store.
    Part(SubmitPart),
}

/// The account's settings and the gateway defaults a submit is read with.
#[derive(Debug, Clone, Copy)]
pub struct IntakeRules<'a> {
    /// The bound account.
    pub account: &'a SmppAccountSettings,
    /// Validity, kind and the part limit of messages that do not say.
    pub defaults: &'a Defaults,
    /// Region of numbers written without a country code.
    pub region: Option<Region>,
}

/// Reads a submit_sm or data_sm of `rules.account` received at `now`.
///
/// # Errors
///
/// A [`Refusal`] with the status SMPP defines for what is wrong: ESME_RINVSRCADR (a sender
/// the account may not use, or not a valid sender), ESME_RINVDSTADR, ESME_RINVESMCLASS (a
/// broken user data header), ESME_RINVMSGLEN (empty, or more parts than allowed),
/// ESME_RINVOPTPARAMVAL (part numbers that do not add up), ESME_RINVSCHED,
/// ESME_RINVEXPIRY.
pub fn read_submit(
    command: &Command,
    rules: IntakeRules<'_>,
    now: Millis,
) -> Result<Intake, Refusal> {
    let Some(sms) = content::sms_of(command) else {
        return Err(refuse(ESME_RSYSERR, "not a submit_sm or data_sm"));
    };
    let account = rules.account;
    let from = sender(&sms.source, account, rules.region)?;
    let to = recipient(&sms.dest, rules.region)?;
    let dc0 = match account.default_alphabet {
        DefaultAlphabet::Gsm7 => Dc0::Gsm7,
        DefaultAlphabet::Latin1 => Dc0::Latin1,
    };
    let decoded = content::decode_sms(&sms.content, dc0)
        .map_err(|e| refuse(ESME_RINVESMCLASS, e.to_string()))?;
    if decoded.text.is_empty() {
        return Err(refuse(ESME_RINVMSGLEN, "the message has no text"));
    }
    let (schedule, validity) = match command.pdu() {
        Some(Pdu::SubmitSm(b)) => (
            content::c_string(b.schedule_delivery_time.as_ref()),
            content::c_string(b.validity_period.as_ref()),
        ),
        _ => (String::new(), String::new()),
    };
    let send_at = time::parse(&schedule, now)
        .map_err(|e| refuse(ESME_RINVSCHED, e.to_string()))?
        .filter(|&at| at > now);
    if send_at.is_some_and(|at| at > now + MAX_SCHEDULE_AHEAD_MS) {
        return Err(refuse(
            ESME_RINVSCHED,
            "schedule_delivery_time is more than a year ahead",
        ));
    }
    let start = send_at.unwrap_or(now);
    let validity_ms =
        match time::parse(&validity, now).map_err(|e| refuse(ESME_RINVEXPIRY, e.to_string()))? {
            None => i64::try_from(rules.defaults.validity.as_millis()).unwrap_or(MAX_VALIDITY_MS),
            Some(end) if end <= start => {
                return Err(refuse(
                    ESME_RINVEXPIRY,
                    "validity_period ends before the message could be sent",
                ));
            }
            Some(end) => (end - start).min(MAX_VALIDITY_MS),
        };
    let max_parts = rules.defaults.max_parts;
    let origin = Origin {
        account: account.system_id.clone(),
        receipt: ReceiptRequest::from_registered_delivery(sms.registered_delivery),
        source: origin_address(&sms.source),
        dest: origin_address(&sms.dest),
    };
    let (encoding, parts) = gsm7::count_parts(&decoded.text);
    let message = NewMessage {
        to,
        from,
        text: decoded.text,
        kind: rules.defaults.kind,
        reference: None,
        encoding,
        parts: u8::try_from(parts).unwrap_or(u8::MAX),
        send_at,
        validity_ms,
        origin: Some(origin),
        options: Default::default(),
    };
    match decoded.part {
        Some(part) if part.total > 1 => {
            if part.seq == 0 || part.seq > part.total {
                return Err(refuse(
                    ESME_RINVOPTPARAMVAL,
                    format!("part {} of {} does not exist", part.seq, part.total),
                ));
            }
            if part.total > max_parts {
                return Err(refuse(
                    ESME_RINVMSGLEN,
                    format!(
                        "the message has {} parts; at most {max_parts} are allowed",
                        part.total
                    ),
                ));
            }
            Ok(Intake::Part(SubmitPart {
                scope: crate::store::smpp_target(&account.system_id),
                source: sms.source.addr.clone(),
                reference: part.reference,
                total: part.total,
                seq: part.seq,
                text: message.text.clone(),
                message,
            }))
        }
        _ => {
            if parts > usize::from(max_parts) {
                return Err(refuse(
                    ESME_RINVMSGLEN,
                    format!("the text needs {parts} SMS parts; at most {max_parts} are allowed"),
                ));
            }
            Ok(Intake::Whole(message))
        }
    }
}

fn origin_address(address: &super::frame::Address) -> OriginAddress {
    OriginAddress {
        addr: address.addr.clone(),
        ton: address.ton,
        npi: address.npi,
    }
}

/// TON 1 (international) numbers as "+digits", whether or not the client wrote the '+'.
fn written(address: &super::frame::Address) -> String {
    if address.ton == 1 {
        format!("+{}", address.addr.trim_start_matches('+'))
    } else {
        address.addr.clone()
    }
}

/// The sender: one the account may use, as parla stores senders; `None` (the channel's
/// default) when the client left source_addr empty.
fn sender(
    source: &super::frame::Address,
    account: &SmppAccountSettings,
    region: Option<Region>,
) -> Result<Option<String>, Refusal> {
    if source.addr.is_empty() {
        return Ok(None);
    }
    let as_written = written(source);
    if !account.allowed_sources.is_empty()
        && !account.allowed_sources.iter().any(|allowed| {
            allowed == &source.addr
                || allowed == &as_written
                || allowed.trim_start_matches('+') == as_written.trim_start_matches('+')
        })
    {
        return Err(refuse(
            ESME_RINVSRCADR,
            format!("sender {:?} is not allowed for this account", source.addr),
        ));
    }
    // TON 5 is alphanumeric: never read as a number.
    let normalized = if source.ton == 5 {
        phone::normalize_sender(&source.addr, None)
    } else {
        phone::normalize_sender(&as_written, region)
    };
    normalized
        .map(Some)
        .map_err(|e| refuse(ESME_RINVSRCADR, format!("sender {:?}: {e}", source.addr)))
}

fn recipient(dest: &super::frame::Address, region: Option<Region>) -> Result<String, Refusal> {
    if dest.addr.is_empty() {
        return Err(refuse(ESME_RINVDSTADR, "destination_addr is empty"));
    }
    phone::normalize(&written(dest), region)
        .map_err(|e| refuse(ESME_RINVDSTADR, format!("destination {:?}: {e}", dest.addr)))
}

/// The message id a query_sm or cancel_sm names.
///
/// # Errors
///
/// ESME_RINVMSGID when it is not an id parla gave.
pub fn requested_id(command: &Command) -> Result<MessageId, u32> {
    let raw = match command.pdu() {
        Some(Pdu::QuerySm(b)) => content::c_string(b.message_id.as_ref()),
        Some(Pdu::CancelSm(b)) => content::c_string(b.message_id.as_ref()),
        _ => return Err(ESME_RSYSERR),
    };
    raw.trim().parse().map_err(|_| ESME_RINVMSGID)
}

/// Whether `message` belongs to `system_id` (others' messages are answered as unknown).
pub fn owned_by(message: &Message, system_id: &str) -> bool {
    message
        .origin
        .as_ref()
        .is_some_and(|o| o.account == system_id)
}

/// The SMPP message_state of a status (SMPP 3.4 §5.2.28).
pub fn message_state(status: Status) -> u8 {
    match status {
        Status::Queued | Status::Sending | Status::Sent => 1, // ENROUTE
        Status::Delivered => 2,
        Status::Expired => 3,
        Status::Canceled => 4, // DELETED
        Status::Failed => 5,   // UNDELIVERABLE
    }
}

/// The query_sm_resp for `message` (found and owned by the querying account).
pub fn query_resp(sequence_number: u32, message: &Message) -> Command {
    let final_date = if message.status.is_final() {
        time::format(message.status_since())
    } else {
        String::new()
    };
    let mut date = final_date.into_bytes();
    date.push(0);
    let body = QuerySmResp::new(
        COctetString::<1, 65>::from_string(message.id.to_string()).unwrap_or_default(),
        EmptyOrFullCOctetString::<17>::from_vec(date).unwrap_or_default(),
        MessageState::from(message_state(message.status)),
        0,
    );
    Command::new(CommandStatus::EsmeRok, sequence_number, body)
}

/// The empty cancel_sm_resp of a cancel that worked.
pub fn cancel_resp(sequence_number: u32) -> Command {
    Command::new(CommandStatus::EsmeRok, sequence_number, Pdu::CancelSmResp)
}

#[cfg(test)]
#[path = "intake_tests.rs"]
mod tests;
