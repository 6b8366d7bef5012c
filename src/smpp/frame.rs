//! SMPP 3.4 framing on top of `rusmpp` 0.4.
//!
//! Why not `rusmpp::tokio_codec::CommandCodec` directly: a decode error there
//! ends the `Framed` stream (one malformed PDU from a peer would drop the
//! whole link), it accepts unknown command ids as `Pdu::Other`, and it does not
//! check that the body decoder consumed exactly `command_length` bytes (a
//! body-less PDU carrying extra bytes desynchronises the stream). [`SmppCodec`]
//! frames by `command_length` itself and hands rusmpp exactly one frame at a
//! time, so a bad frame becomes [`Frame::Invalid`] and the link goes on. Only a
//! `command_length` that makes framing impossible is fatal
//! ([`FrameError::BadLength`]).
//!
//! rusmpp types default to SMPP 5.0; parla binds as 3.4. The builders here
//! set every 3.4 field explicitly (see [`submit_sm`] and [`bind`]), and the
//! decoder rejects the 5.0-only broadcast operations as unknown commands.

use bytes::{BufMut, BytesMut};
use rusmpp::{
    Command, CommandStatus, Pdu,
    decode::{COctetStringDecodeError, Decode, DecodeErrorKind, DecodeWithLength},
    encode::{Length, owned::Encode},
    pdus::{
        AlertNotification, BindReceiver, BindReceiverResp, BindTransceiver, BindTransceiverResp,
        BindTransmitter, BindTransmitterResp, DataSm, DataSmResp, DeliverSm, DeliverSmResp,
        Outbind, ReplaceSm, SubmitMulti, SubmitMultiResp, SubmitSm, SubmitSmResp,
        parts::{AlertNotificationParts, DeliverSmParts, ReplaceSmParts},
    },
    tlvs::{MessageSubmissionRequestTlvValue, Tlv, TlvTag, TlvValue},
    types::{AnyOctetString, COctetString, EmptyOrFullCOctetString, OctetString},
    values::{
        DataCoding, DestAddress, ErrorCodeNetworkType, EsmClass, InterfaceVersion, MessagePayload,
        MessageState, NetworkErrorCode, Npi, PriorityFlag, RegisteredDelivery,
        ReplaceIfPresentFlag, ServiceType, Ton,
    },
};
use serde_json::{Map, Value, json};
use tokio_util::codec::{Decoder, Encoder};

/// Length of the SMPP header: command_length, command_id, command_status,
/// sequence_number (4 octets each, big-endian).
pub const HEADER_LEN: usize = 16;

/// Largest `command_length` accepted or sent, in octets (64 KiB).
///
/// SMPP 3.4 sets no limit, but its largest legitimate PDU is a submit_multi
/// to 254 destinations or a message_payload of a few KiB; 64 KiB leaves ample
/// room while bounding what one peer can make us buffer. A larger length is
/// treated as a broken stream ([`FrameError::BadLength`]).
pub const MAX_PDU: usize = 64 * 1024;

/// `interface_version` for SMPP 3.4 (rusmpp defaults to 0x50, SMPP 5.0).
pub const INTERFACE_VERSION_34: u8 = 0x34;

/// ESME_ROK: no error.
pub const ESME_ROK: u32 = 0x0000_0000;
/// ESME_RINVCMDLEN: command_length invalid, or the body does not fit it.
pub const ESME_RINVCMDLEN: u32 = 0x0000_0002;
/// ESME_RINVCMDID: command_id unknown to SMPP 3.4.
pub const ESME_RINVCMDID: u32 = 0x0000_0003;
/// ESME_RSYSERR: system error; used when a field is malformed in a way no
/// more specific code describes.
pub const ESME_RSYSERR: u32 = 0x0000_0008;
/// ESME_RINVSRCADR: invalid source address.
pub const ESME_RINVSRCADR: u32 = 0x0000_000A;
/// ESME_RINVDSTADR: invalid destination address.
pub const ESME_RINVDSTADR: u32 = 0x0000_000B;
/// ESME_RINVSERTYP: invalid service_type.
pub const ESME_RINVSERTYP: u32 = 0x0000_0015;
/// ESME_RINVSCHED: invalid schedule_delivery_time.
pub const ESME_RINVSCHED: u32 = 0x0000_0061;
/// ESME_RINVEXPIRY: invalid validity_period.
pub const ESME_RINVEXPIRY: u32 = 0x0000_0062;
/// ESME_RINVOPTPARSTREAM: the TLV area does not split into TLVs.
pub const ESME_RINVOPTPARSTREAM: u32 = 0x0000_00C0;

/// One item from the decoder.
// Pdu is the common case, so its size is what gets moved anyway; boxing
// would add an allocation per PDU.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A well-formed SMPP 3.4 PDU.
    ///
    /// `command.pdu()` is `None` only for a response sent without a body
    /// (e.g. submit_sm_resp with an error status, which SMPP 3.4 allows);
    /// requests always carry their body. TLVs that SMPP 3.4 does not define,
    /// or whose value rusmpp cannot read, arrive as `TlvValue::Other` with
    /// their tag and raw value (so match on the tag, not only on the typed
    /// variant); bodies with room for a single TLV (bind_*_resp,
    /// alert_notification, replace_sm) keep only theirs.
    Pdu(Command),
    /// A frame of valid length whose content could not be decoded; the
    /// stream stays in sync and the next frame follows.
    Invalid {
        /// Sequence number from the header, for the reply.
        sequence_number: u32,
        /// Raw command_id from the header.
        command_id: u32,
        /// SMPP status to answer with, not the header's: ESME_RINVCMDID,
        /// ESME_RINVCMDLEN, ESME_RINVOPTPARSTREAM, a field's own code for
        /// submit_sm / deliver_sm / data_sm (ESME_RINVSRCADR, ...), else
        /// ESME_RSYSERR.
        command_status: u32,
        /// Human-readable cause, for logs.
        reason: String,
    },
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Transport error (or, at end of stream, bytes of an unfinished PDU).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// `command_length` below 16 or above [`MAX_PDU`]: framing is lost. The
    /// caller should send generic_nack ESME_RINVCMDLEN (with the sequence
    /// number when known) and close the link.
    #[error("invalid command_length {command_length} (allowed {HEADER_LEN}..={MAX_PDU})")]
    BadLength {
        /// The length read from the header.
        command_length: u32,
        /// Sequence number, when the 16-octet header was complete.
        sequence_number: Option<u32>,
    },
    /// A command could not be built or encoded (field too long, not ASCII,
    /// PDU larger than [`MAX_PDU`], ...).
    #[error("cannot encode PDU: {0}")]
    Encode(String),
    /// [`decode_one`]: the input ends before the PDU does.
    #[error("incomplete PDU: {needed} octets needed, {available} given")]
    Incomplete {
        /// Octets needed (the header, or command_length).
        needed: usize,
        /// Octets given.
        available: usize,
    },
    /// [`decode_one`]: octets left after the PDU.
    #[error("{extra} octets after the end of the PDU")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// [`decode_hex`]: the text is not hexadecimal.
    #[error("invalid hex: {0}")]
    Hex(String),
}

impl FrameError {
    /// The generic_nack to send before closing after [`FrameError::BadLength`]
    /// (sequence number 0 when the header was incomplete); `None` otherwise.
    pub fn generic_nack(&self) -> Option<Command> {
        match self {
            Self::BadLength {
                sequence_number, ..
            } => Some(generic_nack(sequence_number.unwrap_or(0), ESME_RINVCMDLEN)),
            _ => None,
        }
    }
}

/// The four header fields, read without interpretation.
#[derive(Debug, Clone, Copy)]
struct Header {
    command_length: u32,
    command_id: u32,
    sequence_number: u32,
}

impl Header {
    /// Reads the header; `None` if `bytes` is shorter than [`HEADER_LEN`].
    fn read(bytes: &[u8]) -> Option<Self> {
        let word = |i: usize| {
            bytes
                .get(i..i + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        Some(Self {
            command_length: word(0)?,
            command_id: word(4)?,
            sequence_number: word(12)?,
        })
    }
}

fn length_ok(command_length: u32) -> bool {
    (HEADER_LEN..=MAX_PDU).contains(&(command_length as usize))
}

/// Tokio codec for SMPP 3.4 over a byte stream.
///
/// Decoding yields [`Frame`]s; only [`FrameError::BadLength`] (and I/O) end
/// the stream. After `BadLength` the codec stays failed and discards
/// whatever it is given, so its buffer cannot grow.
///
/// Encoding writes rusmpp [`Command`]s as they are. Mind rusmpp's defaults:
/// `EsmClass::default()` encodes as 0x08 (ANSI-41 "delivery
/// acknowledgement"), not 0x00, and `InterfaceVersion::default()` is 0x50;
/// build commands with the functions of this module, which set both
/// explicitly.
#[derive(Debug, Default)]
pub struct SmppCodec {
    /// Set once framing is lost: (command_length, sequence_number).
    failed: Option<(u32, Option<u32>)>,
}

impl SmppCodec {
    /// A fresh codec.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Decoder for SmppCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if let Some((command_length, sequence_number)) = self.failed {
            src.clear();
            return Err(FrameError::BadLength {
                command_length,
                sequence_number,
            });
        }
        // Wait for the whole header even when the length alone is already
        // bad: the sequence number lets the caller address its generic_nack.
        let Some(header) = src.get(..HEADER_LEN).and_then(Header::read) else {
            src.reserve(HEADER_LEN - src.len());
            return Ok(None);
        };
        if !length_ok(header.command_length) {
            tracing::warn!(
                command_length = header.command_length,
                sequence_number = header.sequence_number,
                "SMPP framing lost"
            );
            self.failed = Some((header.command_length, Some(header.sequence_number)));
            src.clear();
            return Err(FrameError::BadLength {
                command_length: header.command_length,
                sequence_number: Some(header.sequence_number),
            });
        }
        let len = header.command_length as usize;
        if src.len() < len {
            src.reserve(len - src.len());
            return Ok(None);
        }
        let frame = src.split_to(len);
        Ok(Some(decode_frame(&frame)))
    }
}

impl Encoder<&Command> for SmppCodec {
    type Error = FrameError;

    fn encode(&mut self, command: &Command, dst: &mut BytesMut) -> Result<(), FrameError> {
        // rusmpp's Length covers everything but command_length itself.
        let len = 4 + command.length();
        if len > MAX_PDU {
            return Err(FrameError::Encode(format!(
                "{len}-octet PDU exceeds MAX_PDU ({MAX_PDU})"
            )));
        }
        let start = dst.len();
        dst.reserve(len);
        dst.put_u32(len as u32);
        command.encode(dst);
        if dst.len() - start != len {
            // Would only happen if rusmpp's Length and Encode disagreed;
            // never put a mis-framed PDU on the wire.
            let written = dst.len() - start;
            dst.truncate(start);
            return Err(FrameError::Encode(format!(
                "rusmpp wrote {written} octets for a {len}-octet PDU"
            )));
        }
        Ok(())
    }
}

impl Encoder<Command> for SmppCodec {
    type Error = FrameError;

    fn encode(&mut self, command: Command, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode(&command, dst)
    }
}

/// Encodes one command as wire bytes (see [`SmppCodec`] for rusmpp's
/// defaults to avoid).
pub fn encode_to_vec(command: &Command) -> Result<Vec<u8>, FrameError> {
    let mut buf = BytesMut::new();
    SmppCodec::new().encode(command, &mut buf)?;
    Ok(buf.to_vec())
}

/// Decodes one complete PDU (bytes exactly as on the wire) for tools:
/// `Ok(Frame)`, or `Err` for a bad command_length, incomplete input or
/// octets after the PDU.
pub fn decode_one(bytes: &[u8]) -> Result<Frame, FrameError> {
    let Some(header) = Header::read(bytes) else {
        // A length field alone can already show the stream is broken.
        if let Some(b) = bytes.get(..4) {
            let command_length = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            if !length_ok(command_length) {
                return Err(FrameError::BadLength {
                    command_length,
                    sequence_number: None,
                });
            }
        }
        return Err(FrameError::Incomplete {
            needed: HEADER_LEN,
            available: bytes.len(),
        });
    };
    if !length_ok(header.command_length) {
        return Err(FrameError::BadLength {
            command_length: header.command_length,
            sequence_number: Some(header.sequence_number),
        });
    }
    let len = header.command_length as usize;
    match bytes.len().cmp(&len) {
        std::cmp::Ordering::Less => Err(FrameError::Incomplete {
            needed: len,
            available: bytes.len(),
        }),
        std::cmp::Ordering::Greater => Err(FrameError::TrailingBytes {
            extra: bytes.len() - len,
        }),
        std::cmp::Ordering::Equal => Ok(decode_frame(bytes)),
    }
}

/// Decodes one frame of exactly `command_length` octets (already checked to
/// be within bounds). rusmpp only ever sees this frame, so it cannot read
/// into the next PDU.
fn decode_frame(frame: &[u8]) -> Frame {
    let Some(header) = Header::read(frame) else {
        // Unreachable: callers pass at least HEADER_LEN octets.
        return invalid_header(frame);
    };
    let invalid = |command_status: u32, reason: String| {
        tracing::debug!(
            command_id = header.command_id,
            sequence_number = header.sequence_number,
            command_status,
            %reason,
            "invalid SMPP frame"
        );
        Frame::Invalid {
            sequence_number: header.sequence_number,
            command_id: header.command_id,
            command_status,
            reason,
        }
    };
    let Some(name) = command_name(header.command_id) else {
        // rusmpp would decode this as Pdu::Other without complaint, and
        // the SMPP 5.0 broadcast operations as real PDUs: both are unknown
        // to a 3.4 peer.
        return invalid(
            ESME_RINVCMDID,
            format!("unknown command_id 0x{:08X}", header.command_id),
        );
    };
    let body = frame.get(HEADER_LEN..).unwrap_or_default();
    // TLVs are split off and decoded one by one (see parse_tlvs), so
    // rusmpp only decodes the mandatory fields here.
    let (mandatory_len, tlvs) = match tlv_offset(header.command_id, body) {
        None => (body.len(), None),
        Some(Err((status, e))) => return invalid(status, format!("{name}: {e}")),
        Some(Ok(offset)) => match parse_tlvs(body.get(offset..).unwrap_or_default()) {
            Ok(tlvs) => (offset, Some(tlvs)),
            Err(e) => return invalid(ESME_RINVOPTPARSTREAM, format!("{name}: {e}")),
        },
    };
    // From command_id on: rusmpp's Command decoder does not read the length.
    let mut src = BytesMut::from(frame.get(4..HEADER_LEN + mandatory_len).unwrap_or_default());
    let len = src.len();
    let command = match Command::decode(&mut src, len) {
        Ok((command, size)) if size == len && src.is_empty() => command,
        Ok((_, size)) => {
            return invalid(
                ESME_RINVCMDLEN,
                format!(
                    "{name}: {} octets after the body fields",
                    len.saturating_sub(size)
                ),
            );
        }
        Err(e) => return invalid(status_for(e.kind()), format!("{name}: {e}")),
    };
    let is_request = header.command_id & 0x8000_0000 == 0;
    if command.pdu().is_none() && is_request {
        return invalid(ESME_RINVCMDLEN, format!("{name}: body missing"));
    }
    Frame::Pdu(match tlvs {
        Some(tlvs) => with_tlvs(command, tlvs),
        None => command,
    })
}

/// Cursor over a body's mandatory fields, to find where its TLVs start.
/// Errors carry the status to answer with.
struct Walk<'a> {
    body: &'a [u8],
    pos: usize,
}

type WalkError = (u32, String);

fn short_body() -> WalkError {
    (
        ESME_RINVCMDLEN,
        "body ends inside its mandatory fields".into(),
    )
}

impl Walk<'_> {
    fn u8(&mut self) -> Result<u8, WalkError> {
        let b = *self.body.get(self.pos).ok_or_else(short_body)?;
        self.pos += 1;
        Ok(b)
    }

    fn skip(&mut self, n: usize) -> Result<(), WalkError> {
        if self.body.len() - self.pos < n {
            return Err(short_body());
        }
        self.pos += n;
        Ok(())
    }

    /// A C-octet string; returns its octets without the NUL.
    fn cstr(&mut self) -> Result<&[u8], WalkError> {
        let rest = self.body.get(self.pos..).unwrap_or_default();
        let nul = rest.iter().position(|&b| b == 0).ok_or_else(|| {
            (
                ESME_RINVCMDLEN,
                "C-octet string not NUL-terminated before the end of the body".into(),
            )
        })?;
        self.pos += nul + 1;
        Ok(&rest[..nul])
    }

    /// A C-octet string field checked against SMPP 3.4 (ASCII, at most
    /// `max` octets with the NUL), so that a peer gets the field's own
    /// error code rather than rusmpp's generic one.
    fn field(&mut self, name: &str, max: usize, status: u32) -> Result<(), WalkError> {
        let value = self.cstr()?;
        if value.len() >= max || !value.is_ascii() {
            return Err((
                status,
                format!("{name} not ASCII of at most {} characters", max - 1),
            ));
        }
        Ok(())
    }

    /// schedule_delivery_time / validity_period: empty or 16 characters.
    fn time(&mut self, name: &str, status: u32) -> Result<(), WalkError> {
        let value = self.cstr()?;
        if !(value.is_empty() || value.len() == 16 && value.is_ascii()) {
            return Err((status, format!("{name} neither empty nor 16 characters")));
        }
        Ok(())
    }

    /// short_message with its sm_length.
    fn short_message(&mut self) -> Result<(), WalkError> {
        let len = self.u8()?;
        self.skip(usize::from(len))
    }
}

/// Where the TLVs of a body start (SMPP 3.4 §4 layouts), for the commands
/// that can carry TLVs; `None` for the others and for an empty body (a
/// response without body).
fn tlv_offset(command_id: u32, body: &[u8]) -> Option<Result<usize, WalkError>> {
    if body.is_empty() {
        return None;
    }
    let mut w = Walk { body, pos: 0 };
    let walked = match command_id {
        // submit_sm, deliver_sm
        0x0000_0004 | 0x0000_0005 => (|| {
            w.field("service_type", 6, ESME_RINVSERTYP)?;
            w.skip(2)?;
            w.field("source_addr", 21, ESME_RINVSRCADR)?;
            w.skip(2)?;
            w.field("destination_addr", 21, ESME_RINVDSTADR)?;
            w.skip(3)?; // esm_class, protocol_id, priority_flag
            w.time("schedule_delivery_time", ESME_RINVSCHED)?;
            w.time("validity_period", ESME_RINVEXPIRY)?;
            w.skip(4)?; // registered_delivery .. sm_default_msg_id
            w.short_message()
        })(),
        // data_sm; SMPP 3.4 allows 65-octet addresses here, rusmpp 21.
        0x0000_0103 => (|| {
            w.field("service_type", 6, ESME_RINVSERTYP)?;
            w.skip(2)?;
            w.field("source_addr", 21, ESME_RINVSRCADR)?;
            w.skip(2)?;
            w.field("destination_addr", 21, ESME_RINVDSTADR)?;
            w.skip(3) // esm_class, registered_delivery, data_coding
        })(),
        // submit_multi
        0x0000_0021 => (|| {
            w.cstr()?;
            w.skip(2)?;
            w.cstr()?;
            for _ in 0..w.u8()? {
                match w.u8()? {
                    1 => {
                        w.skip(2)?;
                        w.cstr()?;
                    }
                    // A distribution list name; rusmpp rejects other flags.
                    _ => {
                        w.cstr()?;
                    }
                }
            }
            w.skip(3)?;
            w.cstr()?;
            w.cstr()?;
            w.skip(4)?;
            w.short_message()
        })(),
        // submit_multi_resp
        0x8000_0021 => (|| {
            w.cstr()?; // message_id
            for _ in 0..w.u8()? {
                w.skip(2)?;
                w.cstr()?;
                w.skip(4)?; // error_status_code
            }
            Ok(())
        })(),
        // replace_sm (message_payload is its only TLV)
        0x0000_0007 => (|| {
            w.cstr()?; // message_id
            w.skip(2)?;
            w.cstr()?; // source_addr
            w.cstr()?; // schedule_delivery_time
            w.cstr()?; // validity_period
            w.skip(2)?; // registered_delivery, sm_default_msg_id
            w.short_message()
        })(),
        // alert_notification
        0x0000_0102 => (|| {
            w.skip(2)?;
            w.cstr()?;
            w.skip(2)?;
            w.cstr().map(drop)
        })(),
        // submit_sm_resp, deliver_sm_resp, data_sm_resp: message_id;
        // bind_*_resp: system_id
        0x8000_0004 | 0x8000_0005 | 0x8000_0103 | 0x8000_0001 | 0x8000_0002 | 0x8000_0009 => {
            w.cstr().map(drop)
        }
        _ => return None,
    };
    Some(walked.map(|()| w.pos))
}

/// Splits a TLV area by the TLVs' own length fields (rusmpp reads
/// fixed-size values by their type and ignores the length field, so one odd
/// TLV would garble all after it). A TLV that SMPP 3.4 defines is decoded by
/// rusmpp from exactly its own octets; any other tag (vendor-specific, or an
/// SMPP 5.0 tag that rusmpp would check by 5.0 rules), or a 3.4 TLV whose
/// value rusmpp rejects, is kept as `TlvValue::Other` with its raw value:
/// SMPP 3.4 has unrecognised optional parameters ignored, and a delivery
/// receipt must not be refused over a TLV we do not use.
fn parse_tlvs(mut area: &[u8]) -> Result<Vec<Tlv>, String> {
    let mut tlvs = Vec::new();
    while !area.is_empty() {
        let Some(&[t0, t1, l0, l1]) = area.get(..4) else {
            return Err(format!("{} octets left, too few for a TLV", area.len()));
        };
        let tag = u16::from_be_bytes([t0, t1]);
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let Some(raw) = area.get(..4 + len) else {
            return Err(format!(
                "TLV 0x{tag:04X} declares {len} octets, {} left",
                area.len() - 4
            ));
        };
        tlvs.push(decode_tlv(tag, raw));
        area = &area[raw.len()..];
    }
    Ok(tlvs)
}

fn decode_tlv(tag: u16, raw: &[u8]) -> Tlv {
    if is_smpp34_tlv(tag) {
        let mut src = BytesMut::from(raw);
        if let Ok((tlv, size)) = <Tlv as Decode>::decode(&mut src) {
            let value_len = tlv.value().map_or(0, Length::length);
            if size == raw.len() && src.is_empty() && value_len == raw.len() - 4 {
                return tlv;
            }
        }
        tracing::debug!(tag, "TLV value not decodable, kept raw");
    }
    Tlv::new(TlvValue::Other {
        tag: TlvTag::from(tag),
        value: AnyOctetString::from_slice(raw.get(4..).unwrap_or_default()),
    })
}

/// The first TLV with `tag`, for bodies with room for one TLV only.
fn pick(tlvs: Vec<Tlv>, tag: u16) -> Option<Tlv> {
    let count = tlvs.len();
    let found = tlvs.into_iter().find(|t| u16::from(t.tag()) == tag);
    if count > usize::from(found.is_some()) {
        tracing::debug!(count, "TLVs this PDU cannot hold were dropped");
    }
    found
}

fn is_smpp34_tlv(tag: u16) -> bool {
    !matches!(tlv_info(tag).0, "unknown" | "vendor_specific")
}

/// Puts split-off TLVs back into a decoded body. The bodies that hold a
/// single TLV (bind_*_resp, alert_notification, replace_sm) keep the first
/// one with their tag; others there are dropped, as SMPP 3.4 allows.
fn with_tlvs(command: Command, tlvs: Vec<Tlv>) -> Command {
    let Some(pdu) = command.pdu().cloned() else {
        return command;
    };
    // Variant and body type share their name.
    macro_rules! list {
        ($ty:ident, $b:expr) => {{
            let mut parts = $b.into_parts();
            parts.tlvs = tlvs;
            Pdu::$ty($ty::from_parts(parts))
        }};
    }
    macro_rules! single {
        ($ty:ident, $b:expr, $field:ident, $tag:expr) => {{
            let mut parts = $b.into_parts();
            parts.$field = pick(tlvs, $tag);
            Pdu::$ty($ty::from_parts(parts))
        }};
    }
    let pdu = match pdu {
        Pdu::SubmitSm(b) => list!(SubmitSm, b),
        Pdu::DeliverSm(b) => list!(DeliverSm, b),
        Pdu::DataSm(b) => list!(DataSm, b),
        Pdu::SubmitMulti(b) => list!(SubmitMulti, b),
        Pdu::SubmitSmResp(b) => list!(SubmitSmResp, b),
        Pdu::DeliverSmResp(b) => list!(DeliverSmResp, b),
        Pdu::DataSmResp(b) => list!(DataSmResp, b),
        Pdu::SubmitMultiResp(b) => list!(SubmitMultiResp, b),
        Pdu::BindTransmitterResp(b) => {
            single!(BindTransmitterResp, b, sc_interface_version, 0x0210)
        }
        Pdu::BindReceiverResp(b) => single!(BindReceiverResp, b, sc_interface_version, 0x0210),
        Pdu::BindTransceiverResp(b) => {
            single!(BindTransceiverResp, b, sc_interface_version, 0x0210)
        }
        Pdu::AlertNotification(b) => single!(AlertNotification, b, ms_availability_status, 0x0422),
        Pdu::ReplaceSm(b) => single!(ReplaceSm, b, message_payload, 0x0424),
        other => other,
    };
    Command::new(command.status(), command.sequence_number(), pdu)
}

fn invalid_header(frame: &[u8]) -> Frame {
    Frame::Invalid {
        sequence_number: 0,
        command_id: 0,
        command_status: ESME_RINVCMDLEN,
        reason: format!("frame of {} octets is shorter than a header", frame.len()),
    }
}

/// The status to answer a frame rusmpp could not decode with.
fn status_for(kind: DecodeErrorKind) -> u32 {
    match kind {
        // The fields run past the end of the frame: the body does not fit
        // command_length.
        DecodeErrorKind::UnexpectedEof
        | DecodeErrorKind::COctetStringDecodeError(COctetStringDecodeError::NotNullTerminated) => {
            ESME_RINVCMDLEN
        }
        // Without rusmpp's "verbose" feature the failing field is unknown,
        // so no field-specific code can be chosen.
        _ => ESME_RSYSERR,
    }
}

/// The TLVs of a body (empty for bodies without any).
fn tlvs_of(pdu: &Pdu) -> Vec<Tlv> {
    match pdu {
        Pdu::SubmitSm(b) => b.tlvs().to_vec(),
        Pdu::DeliverSm(b) => b.tlvs().to_vec(),
        Pdu::DataSm(b) => b.tlvs().to_vec(),
        Pdu::SubmitMulti(b) => b.tlvs().to_vec(),
        Pdu::SubmitSmResp(b) => b.tlvs().to_vec(),
        Pdu::DeliverSmResp(b) => b.tlvs().to_vec(),
        Pdu::DataSmResp(b) => b.tlvs().to_vec(),
        Pdu::SubmitMultiResp(b) => b.tlvs().to_vec(),
        Pdu::BindTransmitterResp(b) => b.sc_interface_version_tlv().cloned().into_iter().collect(),
        Pdu::BindReceiverResp(b) => b.sc_interface_version_tlv().cloned().into_iter().collect(),
        Pdu::BindTransceiverResp(b) => b.sc_interface_version_tlv().cloned().into_iter().collect(),
        Pdu::AlertNotification(b) => {
            let AlertNotificationParts {
                ms_availability_status,
                ..
            } = b.clone().into_parts();
            ms_availability_status.into_iter().collect()
        }
        Pdu::ReplaceSm(b) => {
            let ReplaceSmParts {
                message_payload, ..
            } = b.clone().into_parts();
            message_payload.into_iter().collect()
        }
        _ => Vec::new(),
    }
}

/// SMPP 3.4 name of a command_id, `None` for ids 3.4 does not define.
pub fn command_name(command_id: u32) -> Option<&'static str> {
    Some(match command_id {
        0x8000_0000 => "generic_nack",
        0x0000_0001 => "bind_receiver",
        0x8000_0001 => "bind_receiver_resp",
        0x0000_0002 => "bind_transmitter",
        0x8000_0002 => "bind_transmitter_resp",
        0x0000_0003 => "query_sm",
        0x8000_0003 => "query_sm_resp",
        0x0000_0004 => "submit_sm",
        0x8000_0004 => "submit_sm_resp",
        0x0000_0005 => "deliver_sm",
        0x8000_0005 => "deliver_sm_resp",
        0x0000_0006 => "unbind",
        0x8000_0006 => "unbind_resp",
        0x0000_0007 => "replace_sm",
        0x8000_0007 => "replace_sm_resp",
        0x0000_0008 => "cancel_sm",
        0x8000_0008 => "cancel_sm_resp",
        0x0000_0009 => "bind_transceiver",
        0x8000_0009 => "bind_transceiver_resp",
        0x0000_000B => "outbind",
        0x0000_0015 => "enquire_link",
        0x8000_0015 => "enquire_link_resp",
        0x0000_0021 => "submit_multi",
        0x8000_0021 => "submit_multi_resp",
        0x0000_0102 => "alert_notification",
        0x0000_0103 => "data_sm",
        0x8000_0103 => "data_sm_resp",
        _ => return None,
    })
}

/// SMPP 3.4 name of a command_status (§5.1.3), `None` for reserved or
/// vendor-specific codes.
pub fn status_name(status: u32) -> Option<&'static str> {
    Some(match status {
        0x00 => "ESME_ROK",
        0x01 => "ESME_RINVMSGLEN",
        0x02 => "ESME_RINVCMDLEN",
        0x03 => "ESME_RINVCMDID",
        0x04 => "ESME_RINVBNDSTS",
        0x05 => "ESME_RALYBND",
        0x06 => "ESME_RINVPRTFLG",
        0x07 => "ESME_RINVREGDLVFLG",
        0x08 => "ESME_RSYSERR",
        0x0A => "ESME_RINVSRCADR",
        0x0B => "ESME_RINVDSTADR",
        0x0C => "ESME_RINVMSGID",
        0x0D => "ESME_RBINDFAIL",
        0x0E => "ESME_RINVPASWD",
        0x0F => "ESME_RINVSYSID",
        0x11 => "ESME_RCANCELFAIL",
        0x13 => "ESME_RREPLACEFAIL",
        0x14 => "ESME_RMSGQFUL",
        0x15 => "ESME_RINVSERTYP",
        0x33 => "ESME_RINVNUMDESTS",
        0x34 => "ESME_RINVDLNAME",
        0x40 => "ESME_RINVDESTFLAG",
        0x42 => "ESME_RINVSUBREP",
        0x43 => "ESME_RINVESMCLASS",
        0x44 => "ESME_RCNTSUBDL",
        0x45 => "ESME_RSUBMITFAIL",
        0x48 => "ESME_RINVSRCTON",
        0x49 => "ESME_RINVSRCNPI",
        0x50 => "ESME_RINVDSTTON",
        0x51 => "ESME_RINVDSTNPI",
        0x53 => "ESME_RINVSYSTYP",
        0x54 => "ESME_RINVREPFLAG",
        0x55 => "ESME_RINVNUMMSGS",
        0x58 => "ESME_RTHROTTLED",
        0x61 => "ESME_RINVSCHED",
        0x62 => "ESME_RINVEXPIRY",
        0x63 => "ESME_RINVDFTMSGID",
        0x64 => "ESME_RX_T_APPN",
        0x65 => "ESME_RX_P_APPN",
        0x66 => "ESME_RX_R_APPN",
        0x67 => "ESME_RQUERYFAIL",
        0xC0 => "ESME_RINVOPTPARSTREAM",
        0xC1 => "ESME_ROPTPARNOTALLWD",
        0xC2 => "ESME_RINVPARLEN",
        0xC3 => "ESME_RMISSINGOPTPARAM",
        0xC4 => "ESME_RINVOPTPARAMVAL",
        0xFE => "ESME_RDELIVERYFAILURE",
        0xFF => "ESME_RUNKNOWNERR",
        _ => return None,
    })
}

// ---------------------------------------------------------------- builders

/// generic_nack with `status` (e.g. [`ESME_RINVCMDID`]); empty body.
pub fn generic_nack(sequence_number: u32, status: u32) -> Command {
    Command::new(
        CommandStatus::from(status),
        sequence_number,
        Pdu::GenericNack,
    )
}

/// enquire_link; empty body.
pub fn enquire_link(sequence_number: u32) -> Command {
    Command::new(CommandStatus::EsmeRok, sequence_number, Pdu::EnquireLink)
}

/// enquire_link_resp; empty body.
pub fn enquire_link_resp(sequence_number: u32) -> Command {
    Command::new(
        CommandStatus::EsmeRok,
        sequence_number,
        Pdu::EnquireLinkResp,
    )
}

/// unbind; empty body.
pub fn unbind(sequence_number: u32) -> Command {
    Command::new(CommandStatus::EsmeRok, sequence_number, Pdu::Unbind)
}

/// unbind_resp; empty body.
pub fn unbind_resp(sequence_number: u32) -> Command {
    Command::new(CommandStatus::EsmeRok, sequence_number, Pdu::UnbindResp)
}

/// deliver_sm_resp with `status`; the body is message_id NULL (one 0x00
/// octet), as SMPP 3.4 §4.6.2 prescribes, whatever the status.
pub fn deliver_sm_resp(sequence_number: u32, status: u32) -> Command {
    Command::new(
        CommandStatus::from(status),
        sequence_number,
        DeliverSmResp::new(COctetString::empty(), Vec::new()),
    )
}

/// Which bind operation to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// bind_transmitter (0x00000002).
    Transmitter,
    /// bind_receiver (0x00000001).
    Receiver,
    /// bind_transceiver (0x00000009).
    Transceiver,
}

/// Body of a bind_* (SMPP 3.4 §4.1). Strings are ASCII without the NUL;
/// maximum lengths (excluding NUL): system_id 15, password 8, system_type
/// 12, address_range 40.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindFields {
    /// system_id.
    pub system_id: String,
    /// password.
    pub password: String,
    /// system_type ("" for none).
    pub system_type: String,
    /// interface_version; [`INTERFACE_VERSION_34`] by default.
    pub interface_version: u8,
    /// addr_ton.
    pub addr_ton: u8,
    /// addr_npi.
    pub addr_npi: u8,
    /// address_range ("" for none).
    pub address_range: String,
}

impl Default for BindFields {
    fn default() -> Self {
        Self {
            system_id: String::new(),
            password: String::new(),
            system_type: String::new(),
            interface_version: INTERFACE_VERSION_34,
            addr_ton: 0,
            addr_npi: 0,
            address_range: String::new(),
        }
    }
}

/// A C-octet string of at most `MAX` octets including the NUL.
fn c_string<const MAX: usize>(
    field: &str,
    value: &str,
) -> Result<COctetString<1, MAX>, FrameError> {
    COctetString::from_string(value.to_owned())
        .map_err(|e| FrameError::Encode(format!("{field} {value:?}: {e}")))
}

/// A time field: empty, or the 16-character SMPP absolute/relative format.
fn time_string(field: &str, value: &str) -> Result<EmptyOrFullCOctetString<17>, FrameError> {
    let mut bytes = value.as_bytes().to_vec();
    bytes.push(0);
    EmptyOrFullCOctetString::from_vec(bytes)
        .map_err(|e| FrameError::Encode(format!("{field} {value:?}: {e}")))
}

/// outbind (SMPP 3.4 §4.1.7): an SMSC asking an ESME that listens to bind. Fails if
/// `system_id` is over 15 or `password` over 8 characters, or either is not ASCII.
pub fn outbind(system_id: &str, password: &str) -> Result<Command, FrameError> {
    Ok(Command::new(
        CommandStatus::EsmeRok,
        0,
        Outbind::new(
            c_string::<16>("system_id", system_id)?,
            c_string::<9>("password", password)?,
        ),
    ))
}

/// bind_transmitter / bind_receiver / bind_transceiver. Fails if a string
/// is too long or not ASCII.
pub fn bind(
    mode: BindMode,
    sequence_number: u32,
    fields: &BindFields,
) -> Result<Command, FrameError> {
    let system_id = c_string::<16>("system_id", &fields.system_id)?;
    let password = c_string::<9>("password", &fields.password)?;
    let system_type = c_string::<13>("system_type", &fields.system_type)?;
    let address_range = c_string::<41>("address_range", &fields.address_range)?;
    let version = InterfaceVersion::from(fields.interface_version);
    let ton = Ton::from(fields.addr_ton);
    let npi = Npi::from(fields.addr_npi);
    let pdu: Pdu = match mode {
        BindMode::Transmitter => BindTransmitter::new(
            system_id,
            password,
            system_type,
            version,
            ton,
            npi,
            address_range,
        )
        .into(),
        BindMode::Receiver => BindReceiver::new(
            system_id,
            password,
            system_type,
            version,
            ton,
            npi,
            address_range,
        )
        .into(),
        BindMode::Transceiver => BindTransceiver::new(
            system_id,
            password,
            system_type,
            version,
            ton,
            npi,
            address_range,
        )
        .into(),
    };
    Ok(Command::new(CommandStatus::EsmeRok, sequence_number, pdu))
}

/// An SME address: TON, NPI and the digits or alphanumeric sender (ASCII,
/// at most 20 characters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Address {
    /// Type of number.
    pub ton: u8,
    /// Numbering plan indicator.
    pub npi: u8,
    /// The address itself.
    pub addr: String,
}

/// Body of a submit_sm (SMPP 3.4 §4.4.1). protocol_id, priority_flag,
/// replace_if_present_flag and sm_default_msg_id are sent as 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubmitFields {
    /// service_type ("" for the SMSC default; at most 5 characters).
    pub service_type: String,
    /// Source address.
    pub source: Address,
    /// Destination address.
    pub dest: Address,
    /// esm_class, sent exactly as given (e.g. 0x40 when short_message
    /// starts with a UDH).
    pub esm_class: u8,
    /// registered_delivery (0x01: receipt on final outcome).
    pub registered_delivery: u8,
    /// data_coding.
    pub data_coding: u8,
    /// validity_period: "" or 16 characters (YYMMDDhhmmsstnnp / R).
    pub validity_period: String,
    /// schedule_delivery_time: "" or 16 characters.
    pub schedule_delivery_time: String,
    /// short_message, at most 254 octets (SMPP 3.4 sm_length range); must
    /// be empty with `message_payload`.
    pub short_message: Vec<u8>,
    /// message_payload TLV (0x0424).
    pub message_payload: Option<Vec<u8>>,
    /// sar_msg_ref_num TLV (0x020C); the three sar_* go together.
    pub sar_msg_ref_num: Option<u16>,
    /// sar_total_segments TLV (0x020E).
    pub sar_total_segments: Option<u8>,
    /// sar_segment_seqnum TLV (0x020F).
    pub sar_segment_seqnum: Option<u8>,
}

/// submit_sm. TLVs go in the order sar_msg_ref_num, sar_total_segments,
/// sar_segment_seqnum, message_payload. Fails on fields SMPP 3.4 does not
/// allow (lengths, non-ASCII strings, short_message together with
/// message_payload, an incomplete sar_* set).
pub fn submit_sm(sequence_number: u32, fields: &SubmitFields) -> Result<Command, FrameError> {
    let f = fields;
    // SMPP 3.4 sm_length is 0..=254.
    if f.short_message.len() > 254 {
        return Err(FrameError::Encode(format!(
            "short_message of {} octets exceeds 254",
            f.short_message.len()
        )));
    }
    if f.message_payload.is_some() && !f.short_message.is_empty() {
        return Err(FrameError::Encode(
            "short_message must be empty when message_payload is used".into(),
        ));
    }
    let mut tlvs = Vec::new();
    match (
        f.sar_msg_ref_num,
        f.sar_total_segments,
        f.sar_segment_seqnum,
    ) {
        (Some(r), Some(t), Some(s)) => {
            tlvs.push(MessageSubmissionRequestTlvValue::SarMsgRefNum(r));
            tlvs.push(MessageSubmissionRequestTlvValue::SarTotalSegments(t));
            tlvs.push(MessageSubmissionRequestTlvValue::SarSegmentSeqnum(s));
        }
        (None, None, None) => {}
        _ => {
            return Err(FrameError::Encode(
                "sar_msg_ref_num, sar_total_segments and sar_segment_seqnum go together".into(),
            ));
        }
    }
    if let Some(payload) = &f.message_payload {
        // The TLV length field is 16 bits.
        if payload.len() > usize::from(u16::MAX) {
            return Err(FrameError::Encode(format!(
                "message_payload of {} octets exceeds 65535",
                payload.len()
            )));
        }
        tlvs.push(MessageSubmissionRequestTlvValue::MessagePayload(
            MessagePayload::new(AnyOctetString::from_slice(payload)),
        ));
    }
    let short_message = OctetString::from_slice(&f.short_message)
        .map_err(|e| FrameError::Encode(format!("short_message: {e}")))?;
    let body = SubmitSm::new(
        ServiceType::new(c_string::<6>("service_type", &f.service_type)?),
        Ton::from(f.source.ton),
        Npi::from(f.source.npi),
        c_string::<21>("source_addr", &f.source.addr)?,
        Ton::from(f.dest.ton),
        Npi::from(f.dest.npi),
        c_string::<21>("destination_addr", &f.dest.addr)?,
        // Never EsmClass::default(): that is 0x08 in rusmpp 0.4.
        EsmClass::from(f.esm_class),
        0,
        PriorityFlag::from(0),
        time_string("schedule_delivery_time", &f.schedule_delivery_time)?,
        time_string("validity_period", &f.validity_period)?,
        RegisteredDelivery::from(f.registered_delivery),
        ReplaceIfPresentFlag::from(0),
        DataCoding::from(f.data_coding),
        0,
        short_message,
        tlvs,
    );
    Ok(Command::new(CommandStatus::EsmeRok, sequence_number, body))
}

/// deliver_sm: the same body as [`submit_sm`] (SMPP 3.4 §4.6.1 mirrors §4.4.1), built from the
/// same fields and checked the same way; esm_class is sent exactly as given (0x04 for a delivery
/// receipt, 0x40 for a UDH, 0x00 for a plain mobile-originated SMS), never rusmpp's default.
/// TLVs in the order sar_msg_ref_num, sar_total_segments, sar_segment_seqnum, message_payload.
pub fn deliver_sm(sequence_number: u32, fields: &SubmitFields) -> Result<Command, FrameError> {
    let submit = submit_sm(sequence_number, fields)?;
    let Some(Pdu::SubmitSm(body)) = submit.pdu().cloned() else {
        // submit_sm always builds a SubmitSm body.
        return Err(FrameError::Encode("submit_sm built no body".into()));
    };
    let p = body.into_parts();
    let body = DeliverSm::from_parts(DeliverSmParts {
        service_type: p.service_type,
        source_addr_ton: p.source_addr_ton,
        source_addr_npi: p.source_addr_npi,
        source_addr: p.source_addr,
        dest_addr_ton: p.dest_addr_ton,
        dest_addr_npi: p.dest_addr_npi,
        destination_addr: p.destination_addr,
        esm_class: p.esm_class,
        protocol_id: p.protocol_id,
        priority_flag: p.priority_flag,
        schedule_delivery_time: p.schedule_delivery_time,
        validity_period: p.validity_period,
        registered_delivery: p.registered_delivery,
        replace_if_present_flag: p.replace_if_present_flag,
        data_coding: p.data_coding,
        sm_default_msg_id: p.sm_default_msg_id,
        sm_length: p.sm_length,
        short_message: p.short_message,
        tlvs: p.tlvs,
    });
    Ok(Command::new(CommandStatus::EsmeRok, sequence_number, body))
}

/// [`deliver_sm`] with the delivery receipt TLVs of SMPP 3.4 §5.3.2 appended, in this order and
/// each only when given: receipted_message_id (0x001E, at most 64 ASCII characters),
/// message_state (0x0427, e.g. 2 DELIVERED, 5 UNDELIVERABLE) and network_error_code (0x0423:
/// network type, then the error code big-endian). `SubmitFields` carries no receipt fields
/// because submit_sm never has them; an SMSC (or its simulator) building a receipt uses this.
pub fn deliver_sm_with_tlvs(
    sequence_number: u32,
    fields: &SubmitFields,
    receipted_message_id: Option<&str>,
    message_state: Option<u8>,
    network_error_code: Option<[u8; 3]>,
) -> Result<Command, FrameError> {
    let command = deliver_sm(sequence_number, fields)?;
    let mut extra = Vec::new();
    if let Some(id) = receipted_message_id {
        extra.push(Tlv::new(TlvValue::ReceiptedMessageId(c_string::<65>(
            "receipted_message_id",
            id,
        )?)));
    }
    if let Some(state) = message_state {
        extra.push(Tlv::new(TlvValue::MessageState(MessageState::from(state))));
    }
    if let Some([network_type, hi, lo]) = network_error_code {
        extra.push(Tlv::new(TlvValue::NetworkErrorCode(NetworkErrorCode::new(
            ErrorCodeNetworkType::from(network_type),
            u16::from_be_bytes([hi, lo]),
        ))));
    }
    Ok(with_extra_tlvs(command, extra))
}

/// `command` with `tlvs` appended to the ones its body already has, for the bodies that hold a
/// TLV list (submit_sm, deliver_sm, data_sm, submit_multi and their responses); other commands
/// come back unchanged.
pub fn with_extra_tlvs(command: Command, tlvs: Vec<Tlv>) -> Command {
    if tlvs.is_empty() {
        return command;
    }
    let Some(pdu) = command.pdu() else {
        return command;
    };
    let mut all = tlvs_of(pdu);
    if !matches!(
        pdu,
        Pdu::SubmitSm(_)
            | Pdu::DeliverSm(_)
            | Pdu::DataSm(_)
            | Pdu::SubmitMulti(_)
            | Pdu::SubmitSmResp(_)
            | Pdu::DeliverSmResp(_)
            | Pdu::DataSmResp(_)
            | Pdu::SubmitMultiResp(_)
    ) {
        return command;
    }
    all.extend(tlvs);
    with_tlvs(command, all)
}

/// bind_transmitter_resp / bind_receiver_resp / bind_transceiver_resp (by `mode`) with `status`
/// and the SMSC's `system_id` (ASCII, at most 15 characters). The body is sent whatever the
/// status (SMPP 3.4 allows leaving it out on error; clients accept both), without the
/// sc_interface_version TLV.
pub fn bind_resp(
    mode: BindMode,
    sequence_number: u32,
    status: u32,
    system_id: &str,
) -> Result<Command, FrameError> {
    let system_id = c_string::<16>("system_id", system_id)?;
    let pdu: Pdu = match mode {
        BindMode::Transmitter => BindTransmitterResp::new(system_id, None).into(),
        BindMode::Receiver => BindReceiverResp::new(system_id, None).into(),
        BindMode::Transceiver => BindTransceiverResp::new(system_id, None).into(),
    };
    Ok(Command::new(
        CommandStatus::from(status),
        sequence_number,
        pdu,
    ))
}

/// submit_sm_resp with `status` and `message_id` (ASCII, at most 64 characters; "" for none, as
/// an SMSC sends with an error status).
pub fn submit_sm_resp(
    sequence_number: u32,
    status: u32,
    message_id: &str,
) -> Result<Command, FrameError> {
    let message_id = c_string::<65>("message_id", message_id)?;
    Ok(Command::new(
        CommandStatus::from(status),
        sequence_number,
        SubmitSmResp::new(message_id, Vec::new()),
    ))
}

// -------------------------------------------------------------------- JSON

/// JSON for `parla decode smpp HEX`.
///
/// A PDU gives `{"command", "command_id", "command_status",
/// "command_status_name", "sequence_number", "body"}`; body fields use the
/// SMPP 3.4 names (service_type, source_addr_ton, ...), with TON/NPI and
/// other plain numbers as numbers, esm_class / registered_delivery /
/// data_coding / interface_version as "0x.." strings, `short_message_hex`
/// always and `short_message_text` when it reads as text (ASCII, Latin-1
/// for data_coding 3, UCS-2 for data_coding 8; after the UDH, given as
/// `udh_hex`, when esm_class has UDHI), and `tlvs` as a list of
/// `{tag, name, length, value_hex, value_text?, value?}`. `body` is null for
/// a response sent without body. An invalid frame gives `{"invalid":
/// {command, command_id, command_status (to answer with),
/// command_status_name, sequence_number, reason}}`.
pub fn to_json(frame: &Frame) -> Value {
    match frame {
        Frame::Pdu(command) => {
            let id = u32::from(command.id());
            let status = u32::from(command.status());
            json!({
                "command": command_label(id),
                "command_id": hex32(id),
                "command_status": hex32(status),
                "command_status_name": status_name(status),
                "sequence_number": command.sequence_number(),
                "body": command.pdu().map_or(Value::Null, body_json),
            })
        }
        Frame::Invalid {
            sequence_number,
            command_id,
            command_status,
            reason,
        } => json!({
            "invalid": {
                "command": command_label(*command_id),
                "command_id": hex32(*command_id),
                "command_status": hex32(*command_status),
                "command_status_name": status_name(*command_status),
                "sequence_number": sequence_number,
                "reason": reason,
            }
        }),
    }
}

fn command_label(id: u32) -> &'static str {
    command_name(id).unwrap_or("unknown")
}

fn hex32(v: u32) -> String {
    format!("0x{v:08X}")
}

fn hex8(v: u8) -> String {
    format!("0x{v:02X}")
}

fn hex(bytes: &[u8]) -> String {
    crate::codec::tpdu::to_hex(bytes)
}

/// Text of printable ASCII (tab, CR and LF allowed), `None` otherwise.
fn ascii_text(bytes: &[u8]) -> Option<String> {
    let printable = |b: &u8| matches!(b, 0x20..=0x7E | b'\t' | b'\r' | b'\n');
    (!bytes.is_empty() && bytes.iter().all(printable))
        .then(|| String::from_utf8_lossy(bytes).into_owned())
}

/// Message text by data_coding, when it reads as text.
fn message_text(bytes: &[u8], data_coding: u8) -> Option<String> {
    match data_coding {
        // UCS-2 (big-endian); UTF-16 also covers surrogate pairs sent by
        // phones that really use UTF-16.
        0x08 => {
            if bytes.is_empty() || !bytes.len().is_multiple_of(2) {
                return None;
            }
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units)
                .ok()
                .filter(|s| !s.chars().any(|c| c.is_control() && !"\t\r\n".contains(c)))
        }
        // Latin-1: each octet is the code point.
        0x03 => {
            let printable = |b: &u8| matches!(b, 0x20..=0x7E | 0xA0..=0xFF | b'\t' | b'\r' | b'\n');
            (!bytes.is_empty() && bytes.iter().all(printable))
                .then(|| bytes.iter().map(|&b| char::from(b)).collect())
        }
        _ => ascii_text(bytes),
    }
}

/// Adds short_message_hex / udh_hex / short_message_text.
fn short_message_json(body: &mut Map<String, Value>, sm: &[u8], esm_class: u8, data_coding: u8) {
    body.insert("sm_length".into(), json!(sm.len()));
    body.insert("short_message_hex".into(), json!(hex(sm)));
    let mut text_part = sm;
    if esm_class & 0x40 != 0
        && let Some((&udhl, rest)) = sm.split_first()
        && let Some(text) = rest.get(usize::from(udhl)..)
    {
        body.insert("udh_hex".into(), json!(hex(&sm[..=usize::from(udhl)])));
        text_part = text;
    }
    if let Some(text) = message_text(text_part, data_coding) {
        body.insert("short_message_text".into(), json!(text));
    }
}

/// SMPP 3.4 TLV names (§5.3.2) and whether the value is an integer.
fn tlv_info(tag: u16) -> (&'static str, bool) {
    match tag {
        0x0005 => ("dest_addr_subunit", true),
        0x0006 => ("dest_network_type", true),
        0x0007 => ("dest_bearer_type", true),
        0x0008 => ("dest_telematics_id", true),
        0x000D => ("source_addr_subunit", true),
        0x000E => ("source_network_type", true),
        0x000F => ("source_bearer_type", true),
        0x0010 => ("source_telematics_id", true),
        0x0017 => ("qos_time_to_live", true),
        0x0019 => ("payload_type", true),
        0x001D => ("additional_status_info_text", false),
        0x001E => ("receipted_message_id", false),
        0x0030 => ("ms_msg_wait_facilities", true),
        0x0201 => ("privacy_indicator", true),
        0x0202 => ("source_subaddress", false),
        0x0203 => ("dest_subaddress", false),
        0x0204 => ("user_message_reference", true),
        0x0205 => ("user_response_code", true),
        0x020A => ("source_port", true),
        0x020B => ("destination_port", true),
        0x020C => ("sar_msg_ref_num", true),
        0x020D => ("language_indicator", true),
        0x020E => ("sar_total_segments", true),
        0x020F => ("sar_segment_seqnum", true),
        0x0210 => ("sc_interface_version", true),
        0x0302 => ("callback_num_pres_ind", true),
        0x0303 => ("callback_num_atag", false),
        0x0304 => ("number_of_messages", true),
        0x0381 => ("callback_num", false),
        0x0420 => ("dpf_result", true),
        0x0421 => ("set_dpf", true),
        0x0422 => ("ms_availability_status", true),
        0x0423 => ("network_error_code", false),
        0x0424 => ("message_payload", false),
        0x0425 => ("delivery_failure_reason", true),
        0x0426 => ("more_messages_to_send", true),
        0x0427 => ("message_state", true),
        0x0501 => ("ussd_service_op", true),
        0x1201 => ("display_time", true),
        0x1203 => ("sms_signal", true),
        0x1204 => ("ms_validity", true),
        0x130C => ("alert_on_message_delivery", true),
        0x1380 => ("its_reply_type", true),
        0x1383 => ("its_session_info", false),
        0x1400..=0x3FFF => ("vendor_specific", false),
        _ => ("unknown", false),
    }
}

fn tlvs_json(tlvs: &[Tlv], data_coding: Option<u8>) -> Value {
    let items = tlvs
        .iter()
        .map(|tlv| {
            // Re-encoding gives the wire octets back: decode_frame checked
            // that each value has the length its TLV declares.
            let mut buf = BytesMut::new();
            tlv.encode(&mut buf);
            let value = buf.get(4..).unwrap_or_default();
            let tag = u16::from(tlv.tag());
            let (name, integer) = tlv_info(tag);
            let mut item = Map::new();
            item.insert("tag".into(), json!(format!("0x{tag:04X}")));
            item.insert("name".into(), json!(name));
            item.insert("length".into(), json!(tlv.value_length()));
            item.insert("value_hex".into(), json!(hex(value)));
            if integer && matches!(value.len(), 1 | 2 | 4) {
                let n = value.iter().fold(0u32, |n, &b| n << 8 | u32::from(b));
                item.insert("value".into(), json!(n));
            } else {
                let text = match (tag, data_coding) {
                    (0x0424, Some(dc)) => message_text(value, dc),
                    _ => ascii_text(value.strip_suffix(&[0]).unwrap_or(value)),
                };
                if let Some(text) = text {
                    item.insert("value_text".into(), json!(text));
                }
            }
            Value::Object(item)
        })
        .collect();
    Value::Array(items)
}

/// The encoded octets of a body part, for types shown as hex only.
fn encoded<T: Encode>(value: &T) -> Vec<u8> {
    let mut buf = BytesMut::new();
    value.encode(&mut buf);
    buf.to_vec()
}

fn body_json(pdu: &Pdu) -> Value {
    let mut m = Map::new();
    macro_rules! put {
        ($key:expr, $value:expr) => {
            m.insert($key.into(), json!($value))
        };
    }
    macro_rules! addr {
        ($ton_key:literal, $npi_key:literal, $addr_key:literal, $ton:expr, $npi:expr, $addr:expr) => {{
            put!($ton_key, u8::from($ton));
            put!($npi_key, u8::from($npi));
            put!($addr_key, $addr.as_str());
        }};
    }
    // The fields after the addresses, shared by submit_sm, deliver_sm and submit_multi.
    macro_rules! sm_tail {
        ($b:expr) => {{
            let b = $b;
            let esm = u8::from(b.esm_class);
            let dc = u8::from(b.data_coding);
            put!("esm_class", hex8(esm));
            put!("protocol_id", b.protocol_id);
            put!("priority_flag", u8::from(b.priority_flag));
            put!("schedule_delivery_time", b.schedule_delivery_time.as_str());
            put!("validity_period", b.validity_period.as_str());
            put!("registered_delivery", hex8(u8::from(b.registered_delivery)));
            put!(
                "replace_if_present_flag",
                u8::from(b.replace_if_present_flag)
            );
            put!("data_coding", hex8(dc));
            put!("sm_default_msg_id", b.sm_default_msg_id);
            short_message_json(&mut m, b.short_message().as_ref(), esm, dc);
            m.insert("tlvs".into(), tlvs_json(b.tlvs(), Some(dc)));
        }};
    }
    macro_rules! sm_fields {
        ($b:expr) => {{
            let b = $b;
            put!("service_type", b.service_type.value().as_str());
            addr!(
                "source_addr_ton",
                "source_addr_npi",
                "source_addr",
                b.source_addr_ton,
                b.source_addr_npi,
                b.source_addr
            );
            addr!(
                "dest_addr_ton",
                "dest_addr_npi",
                "destination_addr",
                b.dest_addr_ton,
                b.dest_addr_npi,
                b.destination_addr
            );
            sm_tail!(b);
        }};
    }
    macro_rules! bind_fields {
        ($b:expr) => {{
            let b = $b;
            put!("system_id", b.system_id.as_str());
            put!("password", b.password.as_str());
            put!("system_type", b.system_type.as_str());
            put!("interface_version", hex8(u8::from(b.interface_version)));
            put!("addr_ton", u8::from(b.addr_ton));
            put!("addr_npi", u8::from(b.addr_npi));
            put!("address_range", b.address_range.as_str());
        }};
    }
    macro_rules! bind_resp_fields {
        ($b:expr) => {{
            let b = $b;
            put!("system_id", b.system_id.as_str());
            let tlvs: Vec<Tlv> = b.sc_interface_version_tlv().cloned().into_iter().collect();
            m.insert("tlvs".into(), tlvs_json(&tlvs, None));
        }};
    }
    macro_rules! sm_resp_fields {
        ($b:expr) => {{
            let b = $b;
            put!("message_id", b.message_id().as_str());
            m.insert("tlvs".into(), tlvs_json(b.tlvs(), None));
        }};
    }
    match pdu {
        Pdu::BindTransmitter(b) => bind_fields!(b),
        Pdu::BindReceiver(b) => bind_fields!(b),
        Pdu::BindTransceiver(b) => bind_fields!(b),
        Pdu::BindTransmitterResp(b) => bind_resp_fields!(b),
        Pdu::BindReceiverResp(b) => bind_resp_fields!(b),
        Pdu::BindTransceiverResp(b) => bind_resp_fields!(b),
        Pdu::Outbind(b) => {
            put!("system_id", b.system_id.as_str());
            put!("password", b.password.as_str());
        }
        Pdu::SubmitSm(b) => sm_fields!(b),
        Pdu::DeliverSm(b) => sm_fields!(b),
        Pdu::SubmitSmResp(b) => sm_resp_fields!(b),
        Pdu::DeliverSmResp(b) => sm_resp_fields!(b),
        Pdu::DataSmResp(b) => sm_resp_fields!(b),
        Pdu::DataSm(b) => {
            put!("service_type", b.service_type.value().as_str());
            addr!(
                "source_addr_ton",
                "source_addr_npi",
                "source_addr",
                b.source_addr_ton,
                b.source_addr_npi,
                b.source_addr
            );
            addr!(
                "dest_addr_ton",
                "dest_addr_npi",
                "destination_addr",
                b.dest_addr_ton,
                b.dest_addr_npi,
                b.destination_addr
            );
            put!("esm_class", hex8(u8::from(b.esm_class)));
            put!("registered_delivery", hex8(u8::from(b.registered_delivery)));
            let dc = u8::from(b.data_coding);
            put!("data_coding", hex8(dc));
            m.insert("tlvs".into(), tlvs_json(b.tlvs(), Some(dc)));
        }
        Pdu::QuerySm(b) => {
            put!("message_id", b.message_id.as_str());
            addr!(
                "source_addr_ton",
                "source_addr_npi",
                "source_addr",
                b.source_addr_ton,
                b.source_addr_npi,
                b.source_addr
            );
        }
        Pdu::QuerySmResp(b) => {
            put!("message_id", b.message_id.as_str());
            put!("final_date", b.final_date.as_str());
            put!("message_state", u8::from(b.message_state));
            put!("error_code", b.error_code);
        }
        Pdu::CancelSm(b) => {
            put!("service_type", b.service_type.value().as_str());
            put!("message_id", b.message_id.as_str());
            addr!(
                "source_addr_ton",
                "source_addr_npi",
                "source_addr",
                b.source_addr_ton,
                b.source_addr_npi,
                b.source_addr
            );
            addr!(
                "dest_addr_ton",
                "dest_addr_npi",
                "destination_addr",
                b.dest_addr_ton,
                b.dest_addr_npi,
                b.destination_addr
            );
        }
        Pdu::ReplaceSm(b) => {
            put!("message_id", b.message_id.as_str());
            addr!(
                "source_addr_ton",
                "source_addr_npi",
                "source_addr",
                b.source_addr_ton,
                b.source_addr_npi,
                b.source_addr
            );
            put!("schedule_delivery_time", b.schedule_delivery_time.as_str());
            put!("validity_period", b.validity_period.as_str());
            put!("registered_delivery", hex8(u8::from(b.registered_delivery)));
            put!("sm_default_msg_id", b.sm_default_msg_id);
            // replace_sm has no data_coding: the original message's applies.
            short_message_json(&mut m, b.short_message().as_ref(), 0, 0);
            m.insert("tlvs".into(), tlvs_json(&tlvs_of(pdu), None));
        }
        Pdu::AlertNotification(b) => {
            addr!(
                "source_addr_ton",
                "source_addr_npi",
                "source_addr",
                b.source_addr_ton,
                b.source_addr_npi,
                b.source_addr
            );
            addr!(
                "esme_addr_ton",
                "esme_addr_npi",
                "esme_addr",
                b.esme_addr_ton,
                b.esme_addr_npi,
                b.esme_addr
            );
            m.insert("tlvs".into(), tlvs_json(&tlvs_of(pdu), None));
        }
        Pdu::SubmitMulti(b) => {
            put!("service_type", b.service_type.value().as_str());
            addr!(
                "source_addr_ton",
                "source_addr_npi",
                "source_addr",
                b.source_addr_ton,
                b.source_addr_npi,
                b.source_addr
            );
            put!("number_of_dests", b.dest_address().len());
            let dests: Vec<Value> = b
                .dest_address()
                .iter()
                .map(|d| match d {
                    DestAddress::SmeAddress(a) => json!({
                        "dest_flag": 1,
                        "dest_addr_ton": u8::from(a.dest_addr_ton),
                        "dest_addr_npi": u8::from(a.dest_addr_npi),
                        "destination_addr": a.destination_addr.as_str(),
                    }),
                    DestAddress::DistributionListName(l) => json!({
                        "dest_flag": 2,
                        "dl_name": l.dl_name.as_str(),
                    }),
                })
                .collect();
            put!("dest_address", dests);
            sm_tail!(b);
        }
        Pdu::SubmitMultiResp(b) => {
            put!("message_id", b.message_id.as_str());
            put!("no_unsuccess", b.no_unsuccess());
            let items: Vec<Value> = b
                .unsuccess_sme()
                .iter()
                .map(|u| {
                    json!({
                        "dest_addr_ton": u8::from(u.dest_addr_ton),
                        "dest_addr_npi": u8::from(u.dest_addr_npi),
                        "destination_addr": u.destination_addr.as_str(),
                        "error_status_code": hex32(u32::from(u.error_status_code)),
                    })
                })
                .collect();
            put!("unsuccess_sme", items);
            m.insert("tlvs".into(), tlvs_json(b.tlvs(), None));
        }
        Pdu::Unbind
        | Pdu::UnbindResp
        | Pdu::EnquireLink
        | Pdu::EnquireLinkResp
        | Pdu::GenericNack
        | Pdu::CancelSmResp
        | Pdu::ReplaceSmResp
        | Pdu::CancelBroadcastSmResp => {}
        // Not SMPP 3.4: the decoder never yields these, but a caller may
        // build one.
        other => {
            put!("body_hex", hex(&encoded(other)));
        }
    }
    Value::Object(m)
}

/// Hex text to bytes, for the CLI. Whitespace, ':' and '-' separate
/// groups; each group may start with "0x".
pub fn decode_hex(text: &str) -> Result<Vec<u8>, FrameError> {
    let mut digits = String::with_capacity(text.len());
    for group in text.split(|c: char| c.is_whitespace() || c == ':' || c == '-') {
        let group = group
            .strip_prefix("0x")
            .or_else(|| group.strip_prefix("0X"))
            .unwrap_or(group);
        digits.push_str(group);
    }
    if let Some(bad) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(FrameError::Hex(format!("unexpected character {bad:?}")));
    }
    if !digits.len().is_multiple_of(2) {
        return Err(FrameError::Hex(format!(
            "odd number of hex digits ({})",
            digits.len()
        )));
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    };
    Ok(digits
        .as_bytes()
        .chunks_exact(2)
        .map(|p| nibble(p[0]) << 4 | nibble(p[1]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusmpp::tokio_codec::CommandCodec;

    const CORPUS: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/corpus/smpp/smpp-pdu-vectors.json"
    );

    fn vectors() -> Vec<Value> {
        let text = std::fs::read_to_string(CORPUS).expect("corpus file");
        let doc: Value = serde_json::from_str(&text).expect("corpus JSON");
        doc["vectors"].as_array().expect("vectors").clone()
    }

    fn vector(id_prefix: &str) -> Vec<u8> {
        let v = vectors()
            .into_iter()
            .find(|v| v["id"].as_str().unwrap().starts_with(id_prefix))
            .unwrap_or_else(|| panic!("no vector {id_prefix}"));
        decode_hex(v["pdu_hex"].as_str().unwrap()).unwrap()
    }

    /// Feeds `chunks` through one codec, draining after each; returns the
    /// decoder's results and the octets left in its buffer.
    fn run_codec<'a>(
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> (Vec<Result<Frame, FrameError>>, usize) {
        let mut codec = SmppCodec::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(frame)) => out.push(Ok(frame)),
                    Ok(None) => break,
                    Err(e) => {
                        out.push(Err(e));
                        break;
                    }
                }
            }
            // Bounded: an incomplete PDU never exceeds MAX_PDU.
            assert!(buf.len() < MAX_PDU.max(HEADER_LEN));
        }
        (out, buf.len())
    }

    fn whole(bytes: &[u8]) -> (Vec<Result<Frame, FrameError>>, usize) {
        run_codec([bytes])
    }

    fn byte_by_byte(bytes: &[u8]) -> (Vec<Result<Frame, FrameError>>, usize) {
        run_codec(bytes.chunks(1))
    }

    fn expect_pdu(result: &Result<Frame, FrameError>) -> &Command {
        match result {
            Ok(Frame::Pdu(c)) => c,
            other => panic!("expected a PDU, got {other:?}"),
        }
    }

    /// Compares our JSON view with the corpus' `decoded` fields.
    fn check_decoded(id: &str, frame: &Frame, decoded: &Value, wire_len: usize) -> Vec<String> {
        let json = to_json(frame);
        let body = &json["body"];
        let mut diffs = Vec::new();
        let mut diff = |key: &str, ours: &Value, theirs: &Value| {
            if ours != theirs {
                diffs.push(format!("{id}: {key}: ours {ours}, corpus {theirs}"));
            }
        };
        for (key, theirs) in decoded.as_object().unwrap() {
            match key.as_str() {
                "command_id" | "command_status" | "sequence_number" | "command" => {
                    diff(key, &json[key], theirs)
                }
                "command_length" => diff(key, &json!(wire_len), theirs),
                "short_message_ascii" => {
                    let ours = &body["short_message_text"];
                    // We read data_coding 8 as UCS-2, the corpus as ASCII.
                    if body["data_coding"] != "0x08" {
                        diff(key, ours, theirs)
                    }
                }
                "tlvs" => {
                    let pick = |list: &Value| -> Vec<(Value, Value, Value)> {
                        list.as_array()
                            .map(|l| {
                                l.iter()
                                    .map(|t| {
                                        (
                                            t["tag"].clone(),
                                            t["length"].clone(),
                                            t["value_hex"].clone(),
                                        )
                                    })
                                    .collect()
                            })
                            .unwrap_or_default()
                    };
                    let ours = json!(format!("{:?}", pick(&body["tlvs"])));
                    diff(key, &ours, &json!(format!("{:?}", pick(theirs))));
                }
                "note_length" | "walk_error" | "incomplete_header" => {}
                _ => diff(key, &body[key], theirs),
            }
        }
        diffs
    }

    #[test]
    fn corpus_vectors() {
        let mut diffs = Vec::new();
        let mut checked = 0;
        for v in vectors() {
            let id = v["id"].as_str().unwrap();
            let bytes = decode_hex(v["pdu_hex"].as_str().unwrap()).unwrap();
            assert_eq!(
                bytes.len() as u64,
                v["byte_length"].as_u64().unwrap(),
                "{id}"
            );
            let decoded = &v["decoded"];
            let category = v["category"].as_str().unwrap();
            let (one, left_one) = whole(&bytes);
            let (many, left_many) = byte_by_byte(&bytes);
            assert_eq!(
                format!("{one:?}"),
                format!("{many:?}"),
                "{id}: chunking changed the result"
            );
            assert_eq!(left_one, left_many, "{id}");
            match (category, id.split('-').nth(1).unwrap()) {
                ("regular" | "delivery-receipt", "15") => {
                    // Two enquire_link_resp, the second missing its last
                    // octet: one PDU now, the second once the octet comes.
                    assert_eq!(one.len(), 1, "{id}");
                    diffs.extend(check_decoded(id, one[0].as_ref().unwrap(), decoded, 16));
                    assert_eq!(left_one, 15, "{id}");
                    let (rest, left) = run_codec([&bytes[..], &[0xF1][..]]);
                    assert_eq!(rest.len(), 2, "{id}");
                    assert_eq!(expect_pdu(&rest[1]).sequence_number(), 0x0A34_2EF1);
                    assert_eq!(left, 0);
                    assert!(matches!(
                        decode_one(&bytes),
                        Err(FrameError::TrailingBytes { extra: 15 })
                    ));
                }
                ("regular" | "delivery-receipt", _) => {
                    assert_eq!(one.len(), 1, "{id}: {one:?}");
                    assert_eq!(left_one, 0, "{id}");
                    let command = expect_pdu(&one[0]);
                    assert_eq!(
                        Ok(Frame::Pdu(command.clone())),
                        decode_one(&bytes).map_err(|e| e.to_string())
                    );
                    diffs.extend(check_decoded(
                        id,
                        &one[0].as_ref().unwrap().clone(),
                        decoded,
                        bytes.len(),
                    ));
                    // What we decoded re-encodes to the same octets.
                    assert_eq!(encode_to_vec(command).unwrap(), bytes, "{id}: re-encoding");
                }
                ("framing/negative", "01" | "02" | "03") => {
                    // Incomplete header: need more bytes, nothing consumed.
                    assert!(one.is_empty(), "{id}");
                    assert_eq!(left_one, bytes.len(), "{id}");
                    assert!(
                        matches!(
                            decode_one(&bytes),
                            Err(FrameError::Incomplete { needed: 16, .. })
                        ),
                        "{id}"
                    );
                }
                ("framing/negative", "04") => {
                    // Unknown command_id: recoverable, all 16 octets consumed.
                    assert_eq!(left_one, 0, "{id}");
                    assert_eq!(
                        one[0].as_ref().unwrap(),
                        &Frame::Invalid {
                            sequence_number: 171_192_039,
                            command_id: 0x110,
                            command_status: ESME_RINVCMDID,
                            reason: "unknown command_id 0x00000110".into(),
                        }
                    );
                }
                ("framing/negative", "07") => {
                    // command_length 0xF0000011: framing lost.
                    assert!(
                        matches!(
                            one[..],
                            [Err(FrameError::BadLength {
                                command_length: 0xF000_0011,
                                sequence_number: Some(171_192_039)
                            })]
                        ),
                        "{id}: {one:?}"
                    );
                    assert_eq!(left_one, 0, "{id}: buffer dropped");
                }
                ("framing/negative", "19") => {
                    // message_id without NUL: invalid, framing kept.
                    assert_eq!(left_one, 0, "{id}");
                    let Ok(Frame::Invalid {
                        sequence_number,
                        command_status,
                        command_id,
                        ..
                    }) = &one[0]
                    else {
                        panic!("{id}: {one:?}");
                    };
                    assert_eq!(
                        (*sequence_number, *command_id, *command_status),
                        (171_192_033, 0x8000_0004, ESME_RINVCMDLEN)
                    );
                }
                ("framing/negative", "47") => {
                    // "WAU malformed" is well-formed SMPP (cloudhopper
                    // decodes it too); only its content is odd.
                    assert_eq!(left_one, 0, "{id}");
                    expect_pdu(&one[0]);
                    diffs.extend(check_decoded(
                        id,
                        one[0].as_ref().unwrap(),
                        decoded,
                        bytes.len(),
                    ));
                }
                _ => panic!("{id}: no expectation for this {category} vector; add one"),
            }
            for frame in one.iter().flatten() {
                let _ = to_json(frame);
            }
            checked += 1;
        }
        assert_eq!(checked, 66);
        assert!(diffs.is_empty(), "field mismatches:\n{}", diffs.join("\n"));
    }

    #[test]
    fn comparator_sees_differences() {
        let v = vectors()
            .into_iter()
            .find(|v| v["id"].as_str().unwrap().starts_with("smpp-35-"))
            .unwrap();
        let bytes = decode_hex(v["pdu_hex"].as_str().unwrap()).unwrap();
        let frame = decode_one(&bytes).unwrap();
        assert!(check_decoded("35", &frame, &v["decoded"], bytes.len()).is_empty());
        let mut tampered = v["decoded"].clone();
        tampered["source_addr"] = json!("123");
        tampered["tlvs"][2]["value_hex"] = json!("00");
        tampered["sequence_number"] = json!(3);
        assert_eq!(check_decoded("35", &frame, &tampered, bytes.len()).len(), 3);
    }

    fn pdu(command_id: u32, sequence_number: u32, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((HEADER_LEN + body.len()) as u32).to_be_bytes());
        out.extend_from_slice(&command_id.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&sequence_number.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn malformed_frame_does_not_end_the_stream() {
        let submit = vector("smpp-36-");
        // submit_sm cut inside destination_addr, command_length adjusted.
        let cut = pdu(0x0000_0004, 77, &submit[HEADER_LEN..30]);
        let mut stream = encode_to_vec(&enquire_link(1)).unwrap();
        stream.extend(pdu(0x0000_0777, 42, b"junk"));
        stream.extend(&cut);
        stream.extend(&submit);
        stream.extend(pdu(0x8000_0000, 43, b"x")); // generic_nack with a body
        stream.extend(encode_to_vec(&enquire_link_resp(2)).unwrap());
        for (results, left) in [
            whole(&stream),
            byte_by_byte(&stream),
            run_codec(stream.chunks(7)),
        ] {
            assert_eq!(left, 0);
            let summary: Vec<_> = results
                .iter()
                .map(|r| match r {
                    Ok(Frame::Pdu(c)) => (u32::from(c.id()), c.sequence_number(), 0),
                    Ok(Frame::Invalid {
                        command_id,
                        sequence_number,
                        command_status,
                        ..
                    }) => (*command_id, *sequence_number, *command_status),
                    Err(e) => panic!("{e}"),
                })
                .collect();
            assert_eq!(
                summary,
                [
                    (0x15, 1, 0),
                    (0x777, 42, ESME_RINVCMDID),
                    (0x4, 77, ESME_RINVCMDLEN),
                    (0x4, 20456, 0),
                    (0x8000_0000, 43, ESME_RINVCMDLEN),
                    (0x8000_0015, 2, 0),
                ]
            );
        }
    }

    #[tokio::test]
    async fn stream_over_a_pipe() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut tx, mut rx) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            let mut out = BytesMut::new();
            let mut codec = SmppCodec::new();
            codec.encode(enquire_link(9), &mut out).unwrap();
            out.extend_from_slice(&pdu(0x0000_0777, 10, &[]));
            codec.encode(&unbind(11), &mut out).unwrap();
            tx.write_all(&out).await.unwrap();
        });
        let mut codec = SmppCodec::new();
        let mut buf = BytesMut::new();
        let mut seen = Vec::new();
        while rx.read_buf(&mut buf).await.unwrap() > 0 {
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                seen.push(frame);
            }
        }
        writer.await.unwrap();
        assert!(codec.decode_eof(&mut buf).unwrap().is_none());
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0], Frame::Pdu(enquire_link(9)));
        assert!(matches!(
            seen[1],
            Frame::Invalid {
                sequence_number: 10,
                ..
            }
        ));
        assert_eq!(seen[2], Frame::Pdu(unbind(11)));
    }

    #[test]
    fn bad_length_is_fatal_and_sticky() {
        for (length, expect_seq) in [(15u32, 5u32), (0, 6), (MAX_PDU as u32 + 1, 7)] {
            let mut bytes = pdu(0x15, expect_seq, &[]);
            bytes[..4].copy_from_slice(&length.to_be_bytes());
            let mut codec = SmppCodec::new();
            let mut buf = BytesMut::from(&bytes[..]);
            buf.extend_from_slice(&encode_to_vec(&enquire_link(1)).unwrap());
            let err = codec.decode(&mut buf).unwrap_err();
            assert!(matches!(
                err,
                FrameError::BadLength { command_length, sequence_number: Some(s) }
                    if command_length == length && s == expect_seq
            ));
            assert!(buf.is_empty());
            // The caller's nack, then nothing more is decoded.
            let nack = encode_to_vec(&err.generic_nack().unwrap()).unwrap();
            assert_eq!(
                nack,
                pdu_with_status(0x8000_0000, ESME_RINVCMDLEN, expect_seq)
            );
            buf.extend_from_slice(&encode_to_vec(&enquire_link(2)).unwrap());
            assert!(matches!(
                codec.decode(&mut buf),
                Err(FrameError::BadLength { .. })
            ));
            assert!(buf.is_empty());
        }
        // A length of exactly MAX_PDU is still accepted.
        let mut big = pdu(0x0000_0777, 1, &vec![0; MAX_PDU - HEADER_LEN]);
        let (results, left) = whole(&big);
        assert!(matches!(results[..], [Ok(Frame::Invalid { .. })]));
        assert_eq!(left, 0);
        big.truncate(MAX_PDU - 1);
        assert!(matches!(
            decode_one(&big),
            Err(FrameError::Incomplete {
                needed: MAX_PDU,
                ..
            })
        ));
    }

    fn pdu_with_status(command_id: u32, status: u32, sequence_number: u32) -> Vec<u8> {
        let mut bytes = pdu(command_id, sequence_number, &[]);
        bytes[8..12].copy_from_slice(&status.to_be_bytes());
        bytes
    }

    #[test]
    fn decode_one_reports_framing_problems() {
        assert!(matches!(
            decode_one(&[]),
            Err(FrameError::Incomplete {
                needed: 16,
                available: 0
            })
        ));
        // The length alone shows the PDU is broken.
        assert!(matches!(
            decode_one(&[0, 0, 0, 5, 0]),
            Err(FrameError::BadLength {
                command_length: 5,
                sequence_number: None
            })
        ));
        let mut two = encode_to_vec(&enquire_link(1)).unwrap();
        two.push(0);
        assert!(matches!(
            decode_one(&two),
            Err(FrameError::TrailingBytes { extra: 1 })
        ));
        assert_eq!(
            FrameError::BadLength {
                command_length: 5,
                sequence_number: None
            }
            .generic_nack()
            .map(|c| c.sequence_number()),
            Some(0)
        );
        assert!(FrameError::Encode("x".into()).generic_nack().is_none());
    }

    #[test]
    fn body_problems_map_to_statuses() {
        let cases: [(u32, &[u8], u32); 6] = [
            // bind_transmitter without body
            (0x0000_0002, b"", ESME_RINVCMDLEN),
            // enquire_link with a body
            (0x0000_0015, b"\0", ESME_RINVCMDLEN),
            // SMPP 5.0 broadcast_sm is not 3.4
            (0x0000_0111, b"", ESME_RINVCMDID),
            // system_id longer than 16 octets
            (
                0x8000_0009,
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZ\0",
                ESME_RINVCMDLEN,
            ),
            // non-ASCII message_id
            (0x8000_0004, b"\xC3\xA9\0", ESME_RSYSERR),
            // TLV header cut short after message_id
            (0x8000_0004, b"id\0\x00\x1E\x00", ESME_RINVOPTPARSTREAM),
        ];
        for (id, body, status) in cases {
            match decode_one(&pdu(id, 3, body)).unwrap() {
                Frame::Invalid {
                    command_status,
                    sequence_number: 3,
                    command_id,
                    reason,
                } => {
                    assert_eq!((command_id, command_status), (id, status), "{reason}");
                }
                other => panic!("{id:#x}: {other:?}"),
            }
        }
        // submit_sm fields get their own codes.
        let sm = |service: &[u8], src: &[u8], dst: &[u8], validity: &[u8]| {
            let mut b = Vec::new();
            for (part, pre) in [(service, &b""[..]), (src, b"\x01\x01"), (dst, b"\x01\x01")] {
                b.extend_from_slice(pre);
                b.extend_from_slice(part);
                b.push(0);
            }
            b.extend_from_slice(b"\0\0\0\0");
            b.extend_from_slice(validity);
            b.extend_from_slice(b"\0\0\0\0\0\x01A");
            b
        };
        assert!(matches!(
            decode_one(&pdu(4, 1, &sm(b"", b"1", b"2", b""))),
            Ok(Frame::Pdu(_))
        ));
        for (body, status) in [
            (sm(b"TOOLONG", b"1", b"2", b""), ESME_RINVSERTYP),
            (sm(b"", &[b'1'; 21], b"2", b""), ESME_RINVSRCADR),
            (sm(b"", b"1", "Zürich".as_bytes(), b""), ESME_RINVDSTADR),
            (sm(b"", b"1", b"2", b"123"), ESME_RINVEXPIRY),
        ] {
            assert!(
                matches!(
                    decode_one(&pdu(4, 1, &body)),
                    Ok(Frame::Invalid { command_status, .. }) if command_status == status
                ),
                "{status:#x}"
            );
        }
        // A TLV whose value overruns the body.
        let bytes = pdu(0x8000_0004, 4, b"id\0\x04\x27\x00\x05\x02");
        assert!(matches!(
            decode_one(&bytes),
            Ok(Frame::Invalid {
                command_status: ESME_RINVOPTPARSTREAM,
                ..
            })
        ));
    }

    #[test]
    fn tlvs_are_framed_by_their_own_length() {
        // deliver_sm_resp whose message_state TLV declares 2 octets: rusmpp
        // alone would read one and misparse the rest; we keep it raw.
        let body = b"\0\x04\x27\x00\x02\x02\x09\x00\x1E\x00\x03abc";
        let frame = decode_one(&pdu(0x8000_0005, 8, body)).unwrap();
        let json = to_json(&frame);
        let tlvs = &json["body"]["tlvs"];
        assert_eq!(tlvs[0]["tag"], "0x0427");
        assert_eq!(tlvs[0]["value_hex"], "0209");
        // receipted_message_id without its NUL: kept raw, still readable.
        assert_eq!(tlvs[1]["tag"], "0x001E");
        assert_eq!(tlvs[1]["value_text"], "abc");
        let Frame::Pdu(command) = &frame else {
            panic!()
        };
        let Some(Pdu::DeliverSmResp(resp)) = command.pdu() else {
            panic!()
        };
        assert!(matches!(
            resp.tlvs()[1].value(),
            Some(TlvValue::Other { value, .. }) if value.as_ref() == b"abc"
        ));
        // Re-encoding keeps the octets.
        assert_eq!(encode_to_vec(command).unwrap(), pdu(0x8000_0005, 8, body));
    }

    #[test]
    fn builders_encode_exact_bytes() {
        let enc = |c: &Command| encode_to_vec(c).unwrap();
        assert_eq!(enc(&enquire_link(171_192_039)), vector("smpp-13-"));
        assert_eq!(
            enc(&enquire_link(0x1234)),
            decode_hex("00000010 00000015 00000000 00001234").unwrap()
        );
        assert_eq!(enc(&enquire_link_resp(171_192_045)), vector("smpp-14-"));
        assert_eq!(enc(&unbind(1)), vector("smpp-37-"));
        assert_eq!(enc(&unbind_resp(1)), vector("smpp-38-"));
        assert_eq!(enc(&generic_nack(11, ESME_RINVCMDID)), vector("smpp-87-"));
        assert_eq!(enc(&generic_nack(535_159, 0x01)), vector("smpp-39-"));
        assert_eq!(enc(&deliver_sm_resp(7, ESME_ROK)), vector("smpp-86-"));
        assert_eq!(
            enc(&deliver_sm_resp(8, 0x45)),
            decode_hex("00000011 80000005 00000045 00000008 00").unwrap()
        );

        let twitter = BindFields {
            system_id: "twitter".into(),
            password: "twitter".into(),
            ..BindFields::default()
        };
        assert_eq!(
            enc(&bind(BindMode::Transmitter, 235_871, &twitter).unwrap()),
            vector("smpp-32-")
        );
        assert_eq!(
            enc(&bind(BindMode::Receiver, 235_873, &twitter).unwrap()),
            vector("smpp-33-")
        );
        let all_tw = BindFields {
            system_id: "ALL_TW".into(),
            password: "ALL_TW".into(),
            addr_ton: 1,
            addr_npi: 2,
            ..BindFields::default()
        };
        assert_eq!(
            enc(&bind(BindMode::Transceiver, 235_857, &all_tw).unwrap()),
            vector("smpp-31-")
        );

        // submit_sm: UCS-2 with the three sar_* TLVs (constructed corpus
        // vector), and a plain one (cloudhopper's).
        let ucs2 = SubmitFields {
            source: Address {
                ton: 5,
                npi: 0,
                addr: "MyShop".into(),
            },
            dest: Address {
                ton: 1,
                npi: 1,
                addr: "393471234567".into(),
            },
            esm_class: 0,
            registered_delivery: 1,
            data_coding: 8,
            short_message: decode_hex("041F044004380432043504420020D83DDC4B").unwrap(),
            sar_msg_ref_num: Some(0x1234),
            sar_total_segments: Some(2),
            sar_segment_seqnum: Some(1),
            ..SubmitFields::default()
        };
        assert_eq!(enc(&submit_sm(2, &ucs2).unwrap()), vector("smpp-79-"));
        let plain = SubmitFields {
            source: Address {
                ton: 1,
                npi: 1,
                addr: "40404".into(),
            },
            dest: Address {
                ton: 1,
                npi: 1,
                addr: "44951361920".into(),
            },
            registered_delivery: 1,
            short_message: b"@$#!%&/:".to_vec(),
            ..SubmitFields::default()
        };
        assert_eq!(enc(&submit_sm(20456, &plain).unwrap()), vector("smpp-36-"));

        // Hand-assembled: every field set, message_payload instead of
        // short_message (SMPP 3.4 §4.4.1 layout).
        let full = SubmitFields {
            service_type: "CMT".into(),
            source: Address {
                ton: 5,
                npi: 0,
                addr: "parla".into(),
            },
            dest: Address {
                ton: 1,
                npi: 1,
                addr: "15551234".into(),
            },
            esm_class: 0x40,
            registered_delivery: 0x11,
            data_coding: 0x03,
            validity_period: "000001000000000R".into(),
            schedule_delivery_time: "250101120000004+".into(),
            message_payload: Some(b"hi".to_vec()),
            ..SubmitFields::default()
        };
        let expected = [
            "00000057 00000004 00000000 00000003",
            "434D5400",                                    // service_type "CMT"
            "05 00 7061726C6100",                          // source
            "01 01 313535353132333400",                    // destination
            "40 00 00",                                    // esm_class, protocol_id, priority_flag
            "3235 3031 3031 3132 3030 3030 3030 34 2B 00", // schedule_delivery_time
            "30303030303130303030303030303052 00",         // validity_period
            "11 00 03 00 00",                              // registered_delivery .. sm_length
            "0424 0002 6869",                              // message_payload
        ]
        .join(" ");
        assert_eq!(
            enc(&submit_sm(3, &full).unwrap()),
            decode_hex(&expected).unwrap()
        );

        // Each builder's output decodes back to itself.
        for command in [
            enquire_link(1),
            enquire_link_resp(1),
            unbind(1),
            unbind_resp(1),
            generic_nack(1, 3),
            deliver_sm_resp(1, 0),
            bind(BindMode::Transceiver, 1, &all_tw).unwrap(),
            submit_sm(1, &ucs2).unwrap(),
            submit_sm(1, &full).unwrap(),
        ] {
            assert_eq!(decode_one(&enc(&command)).unwrap(), Frame::Pdu(command));
        }
    }

    #[test]
    fn server_side_builders_round_trip() {
        let enc = |c: &Command| encode_to_vec(c).unwrap();
        let fields = SubmitFields {
            source: Address {
                ton: 1,
                npi: 1,
                addr: "393471234567".into(),
            },
            dest: Address {
                ton: 5,
                npi: 0,
                addr: "Shop".into(),
            },
            esm_class: 0x40,
            data_coding: 8,
            short_message: decode_hex("050003070201 00480069").unwrap(),
            ..SubmitFields::default()
        };
        let sar = SubmitFields {
            esm_class: 0,
            short_message: b"part".to_vec(),
            sar_msg_ref_num: Some(0x1234),
            sar_total_segments: Some(2),
            sar_segment_seqnum: Some(1),
            ..fields.clone()
        };
        let payload = SubmitFields {
            esm_class: 0,
            short_message: Vec::new(),
            message_payload: Some(b"a long text".to_vec()),
            ..fields.clone()
        };
        // deliver_sm has submit_sm's body octet for octet; only the command_id differs.
        for f in [&fields, &sar, &payload] {
            let deliver = enc(&deliver_sm(9, f).unwrap());
            let submit = enc(&submit_sm(9, f).unwrap());
            assert_eq!(deliver[4..8], [0, 0, 0, 5]);
            assert_eq!(deliver[..4], submit[..4]);
            assert_eq!(deliver[8..], submit[8..]);
        }
        // esm_class is sent as given, never rusmpp's default 0x08.
        let receipt_fields = SubmitFields {
            esm_class: 0x04,
            data_coding: 0,
            short_message: Vec::new(),
            ..fields.clone()
        };
        let plain = enc(&deliver_sm(
            1,
            &SubmitFields {
                esm_class: 0,
                ..receipt_fields.clone()
            },
        )
        .unwrap());
        assert_eq!(plain[HEADER_LEN + 1 + 15 + 7], 0x00);
        let receipt = deliver_sm_with_tlvs(
            3,
            &receipt_fields,
            Some("1a2b3c4d"),
            Some(5),
            Some([3, 0, 1]),
        )
        .unwrap();
        let bytes = enc(&receipt);
        assert_eq!(bytes[HEADER_LEN + 1 + 15 + 7], 0x04);
        assert!(bytes.ends_with(
            &decode_hex("001E 0009 3161326233633464 00  0427 0001 05  0423 0003 030001").unwrap()
        ));
        let only_state = deliver_sm_with_tlvs(4, &receipt_fields, None, Some(2), None).unwrap();
        assert!(enc(&only_state).ends_with(&decode_hex("0427 0001 02").unwrap()));
        let json = to_json(&decode_one(&bytes).unwrap());
        assert_eq!(json["body"]["tlvs"][0]["value_text"], "1a2b3c4d");
        assert_eq!(json["body"]["tlvs"][1]["value"], 5);
        // A body without a TLV list is left alone.
        assert_eq!(
            with_extra_tlvs(
                enquire_link(1),
                vec![Tlv::new(TlvValue::MessageState(MessageState::from(2)))]
            ),
            enquire_link(1)
        );

        assert_eq!(
            enc(&bind_resp(BindMode::Transceiver, 7, ESME_ROK, "SMSC").unwrap()),
            decode_hex("00000015 80000009 00000000 00000007 534D534300").unwrap()
        );
        assert_eq!(
            enc(&submit_sm_resp(8, ESME_ROK, "1a2b3c4d").unwrap()),
            decode_hex("00000019 80000004 00000000 00000008 3161326233633464 00").unwrap()
        );
        assert!(bind_resp(BindMode::Receiver, 1, 0, &"x".repeat(16)).is_err());
        assert!(submit_sm_resp(1, 0, &"x".repeat(65)).is_err());

        // Each builder's output decodes back to itself.
        for command in [
            deliver_sm(1, &fields).unwrap(),
            deliver_sm(2, &sar).unwrap(),
            deliver_sm(3, &payload).unwrap(),
            receipt,
            only_state,
            bind_resp(BindMode::Transmitter, 4, 0x0E, "SMSC").unwrap(),
            bind_resp(BindMode::Receiver, 5, ESME_ROK, "").unwrap(),
            bind_resp(BindMode::Transceiver, 6, ESME_ROK, "SMSC").unwrap(),
            submit_sm_resp(7, ESME_ROK, "00001A2B3C").unwrap(),
            submit_sm_resp(8, 0x58, "").unwrap(),
        ] {
            assert_eq!(decode_one(&enc(&command)).unwrap(), Frame::Pdu(command));
        }
    }

    #[test]
    fn builders_reject_what_smpp34_does_not_allow() {
        let too_long = BindFields {
            system_id: "a".repeat(16),
            ..BindFields::default()
        };
        assert!(matches!(
            bind(BindMode::Transmitter, 1, &too_long),
            Err(FrameError::Encode(_))
        ));
        let non_ascii = BindFields {
            password: "pässwd".into(),
            ..BindFields::default()
        };
        assert!(bind(BindMode::Receiver, 1, &non_ascii).is_err());
        let ok = SubmitFields {
            source: Address {
                addr: "a".into(),
                ..Address::default()
            },
            dest: Address {
                addr: "b".into(),
                ..Address::default()
            },
            ..SubmitFields::default()
        };
        assert!(submit_sm(1, &ok).is_ok());
        let bad = [
            SubmitFields {
                short_message: vec![0; 255],
                ..ok.clone()
            },
            SubmitFields {
                short_message: vec![1],
                message_payload: Some(vec![1]),
                ..ok.clone()
            },
            SubmitFields {
                sar_msg_ref_num: Some(1),
                ..ok.clone()
            },
            SubmitFields {
                validity_period: "1".into(),
                ..ok.clone()
            },
            SubmitFields {
                service_type: "TOOLONG".into(),
                ..ok.clone()
            },
            SubmitFields {
                dest: Address {
                    addr: "1".repeat(21),
                    ..Address::default()
                },
                ..ok.clone()
            },
            SubmitFields {
                message_payload: Some(vec![0; 65_536]),
                ..ok.clone()
            },
        ];
        for fields in bad {
            assert!(
                matches!(submit_sm(1, &fields), Err(FrameError::Encode(_))),
                "{fields:?}"
            );
        }
        // Within the TLV's limit but beyond MAX_PDU: the encoder refuses.
        let huge = submit_sm(
            1,
            &SubmitFields {
                message_payload: Some(vec![0; 65_535]),
                ..ok.clone()
            },
        )
        .unwrap();
        let mut buf = BytesMut::new();
        assert!(matches!(
            SmppCodec::new().encode(&huge, &mut buf),
            Err(FrameError::Encode(_))
        ));
        assert!(buf.is_empty());
    }

    /// rusmpp 0.4 behaviour this module works around; if one of these
    /// fails after an upgrade, revisit the workaround.
    #[test]
    fn rusmpp_quirks() {
        // EsmClass::default() is 0x08 (ANSI-41 delivery acknowledgement),
        // and a SubmitSm built without esm_class sends it.
        assert_eq!(u8::from(EsmClass::default()), 0x08);
        let sm = Command::new(CommandStatus::EsmeRok, 1, SubmitSm::builder().build());
        let bytes = encode_to_vec(&sm).unwrap();
        // header, service_type, 2 + source, 2 + destination, then esm_class
        assert_eq!(bytes[HEADER_LEN + 1 + 3 + 3], 0x08);
        // Types default to SMPP 5.0.
        assert_eq!(u8::from(InterfaceVersion::default()), 0x50);
        let bind = Command::new(
            CommandStatus::EsmeRok,
            1,
            BindTransmitter::builder().build(),
        );
        assert_eq!(encode_to_vec(&bind).unwrap()[HEADER_LEN + 3], 0x50);

        // Its codec decodes an unknown command_id as a PDU, not an error.
        let mut codec = CommandCodec::new();
        let mut buf = BytesMut::from(&pdu(0x0000_0777, 1, b"xy")[..]);
        let command = codec.decode(&mut buf).unwrap().unwrap();
        assert!(matches!(command.pdu(), Some(Pdu::Other { .. })));

        // Its codec ignores octets a body-less PDU leaves over: they become
        // the start of the "next" PDU and the stream is desynchronised.
        let mut stream = pdu(0x8000_0000, 1, b"\0\0\0");
        stream.extend(encode_to_vec(&enquire_link(2)).unwrap());
        let mut buf = BytesMut::from(&stream[..]);
        let first = codec.decode(&mut buf).unwrap().unwrap();
        assert!(first.pdu().is_none());
        assert!(
            codec.decode(&mut buf).is_err(),
            "reads 0x00000000 as a length"
        );

        // Its decoder rejects a deliver_sm over an SMPP 5.0 TLV tag that
        // 3.4 vendors use freely (0x060F, source_node_id in 5.0).
        let mut codec = CommandCodec::new();
        let mut buf = BytesMut::from(&vector("smpp-69-")[..]);
        assert!(codec.decode(&mut buf).is_err());
        assert!(matches!(decode_one(&vector("smpp-69-")), Ok(Frame::Pdu(_))));
    }

    #[test]
    fn json_view() {
        let frame = decode_one(&vector("smpp-35-")).unwrap();
        let json = to_json(&frame);
        assert_eq!(json["command"], "deliver_sm");
        assert_eq!(json["command_id"], "0x00000005");
        assert_eq!(json["command_status"], "0x00000000");
        assert_eq!(json["command_status_name"], "ESME_ROK");
        assert_eq!(json["sequence_number"], 2);
        let body = &json["body"];
        assert_eq!(body["source_addr"], "44951361920");
        assert_eq!(body["esm_class"], "0x04");
        assert!(
            body["short_message_text"]
                .as_str()
                .unwrap()
                .starts_with("id:0059113978 sub:001")
        );
        let tlvs = body["tlvs"].as_array().unwrap();
        assert_eq!(tlvs[2]["name"], "receipted_message_id");
        assert_eq!(tlvs[2]["value_text"], "38601fa");
        assert_eq!(tlvs[3]["name"], "message_state");
        assert_eq!(tlvs[3]["value"], 2);

        // UDH split off; UCS-2 read as text; vendor TLVs named so.
        let body = to_json(&decode_one(&vector("smpp-60-")).unwrap())["body"].clone();
        assert_eq!(body["udh_hex"], "03240103");
        assert_eq!(body["short_message_text"], "t{st");
        let body = to_json(&decode_one(&vector("smpp-79-")).unwrap())["body"].clone();
        assert_eq!(body["short_message_text"], "Привет 👋");
        let body = to_json(&decode_one(&vector("smpp-59-")).unwrap())["body"].clone();
        assert_eq!(body["tlvs"][0]["name"], "vendor_specific");
        assert_eq!(body["tlvs"][0]["value_text"], "(null)");
        let body = to_json(&decode_one(&vector("smpp-58-")).unwrap())["body"].clone();
        // The receipt in message_payload, its "text:" part raw UCS-2.
        let tlvs = body["tlvs"].as_array().unwrap();
        assert_eq!(tlvs.len(), 6);
        assert_eq!(tlvs[4]["name"], "message_payload");
        assert!(tlvs[4]["value_text"].is_null());

        // Response without body; invalid frame.
        let json = to_json(&decode_one(&vector("smpp-17-")).unwrap());
        assert_eq!(json["body"], Value::Null);
        let json = to_json(&decode_one(&vector("smpp-04-")).unwrap());
        assert_eq!(
            json,
            json!({"invalid": {
                "command": "unknown",
                "command_id": "0x00000110",
                "command_status": "0x00000003",
                "command_status_name": "ESME_RINVCMDID",
                "sequence_number": 171_192_039,
                "reason": "unknown command_id 0x00000110",
            }})
        );
    }

    #[test]
    fn hex_input() {
        let want = vec![0x00, 0x00, 0x00, 0x10, 0xAB];
        for text in [
            "00000010ab",
            " 0x00000010 AB\n",
            "00:00:00:10:ab",
            "0x00 0x00 0x00 0x10 0xAb",
        ] {
            assert_eq!(decode_hex(text).unwrap(), want, "{text}");
        }
        assert!(matches!(decode_hex("0g"), Err(FrameError::Hex(_))));
        assert!(matches!(decode_hex("abc"), Err(FrameError::Hex(_))));
        assert!(matches!(decode_hex("é"), Err(FrameError::Hex(_))));
        assert_eq!(decode_hex("").unwrap(), Vec::<u8>::new());
    }

    /// Everything the module does with untrusted octets; must not panic.
    fn exercise(bytes: &[u8], split: usize) {
        if let Ok(frame) = decode_one(bytes) {
            let _ = to_json(&frame);
            // What we accept, we can send back and read again unchanged.
            if let Frame::Pdu(command) = &frame {
                let again = encode_to_vec(command).expect("re-encode");
                assert_eq!(decode_one(&again).expect("re-decode"), frame);
            }
        }
        let split = split.min(bytes.len());
        let (results, _) = run_codec([&bytes[..split], &bytes[split..]]);
        for frame in results.iter().flatten() {
            let _ = to_json(frame);
            if let Frame::Pdu(command) = frame {
                let _ = encode_to_vec(command);
            }
        }
    }

    #[test]
    fn robust_against_random_bytes() {
        let mut rng = fastrand::Rng::with_seed(0x5EED_5EED_0BAD_F00D);
        let commands = [
            0x0000_0004u32,
            0x0000_0005,
            0x0000_0103,
            0x0000_0021,
            0x8000_0021,
            0x0000_0007,
            0x0000_0102,
            0x8000_0004,
            0x8000_0009,
            0x0000_0009,
            0x0000_0003,
            0x8000_0003,
            0x0000_0008,
            0x0000_000B,
            0x0000_0015,
            0x0000_0777,
        ];
        for round in 0..20_000 {
            let len = rng.usize(..200);
            let mut body: Vec<u8> = (0..len)
                .map(|_| match rng.usize(..4) {
                    0 => 0,
                    1 => b'0' + rng.usize(..10) as u8,
                    _ => rng.u8(..),
                })
                .collect();
            let bytes = if round % 4 == 0 {
                // Fully random, length field included.
                body.splice(0..0, rng.u32(..300).to_be_bytes());
                body
            } else {
                // A valid header over a random body, to reach rusmpp.
                pdu(commands[rng.usize(..commands.len())], round, &body)
            };
            exercise(&bytes, rng.usize(..bytes.len() + 1));
        }
        // A long random stream through one codec stays bounded.
        let stream: Vec<u8> = (0..200_000).map(|_| rng.u8(..)).collect();
        let _ = run_codec(stream.chunks(4096));
    }

    #[test]
    fn robust_against_truncation_and_mutation() {
        for v in vectors() {
            let bytes = decode_hex(v["pdu_hex"].as_str().unwrap()).unwrap();
            for cut in 0..bytes.len() {
                exercise(&bytes[..cut], cut / 2);
                // Truncated but with command_length saying so.
                if cut >= HEADER_LEN {
                    let mut t = bytes[..cut].to_vec();
                    t[..4].copy_from_slice(&(cut as u32).to_be_bytes());
                    exercise(&t, 3);
                }
            }
            for pos in 0..bytes.len() {
                for value in [
                    0x00,
                    0xFF,
                    0x7F,
                    0x80,
                    bytes[pos] ^ 0x01,
                    bytes[pos] ^ 0x40,
                    bytes[pos].wrapping_add(1),
                    bytes[pos].wrapping_sub(1),
                ] {
                    let mut m = bytes.clone();
                    m[pos] = value;
                    exercise(&m, pos);
                }
            }
        }
    }

    #[test]
    fn less_common_bodies() {
        let cases: [(u32, &[u8], bool); 7] = [
            (
                0x0000_0021, // submit_multi to an SME and a distribution list
                b"\0\x01\x01123\0\x02\x01\x01\x01456\0\x02list\0\0\0\0\0\0\x01\0\0\0\x02hi\x02\x04\x00\x02\x00\x07",
                true,
            ),
            (0x8000_0021, b"m1\0\x01\x01\x01456\0\x00\x00\x00\x45", true),
            (0x0000_0008, b"\0m1\0\x01\x01123\0\x01\x01456\0", true),
            (0x0000_000B, b"sys\0pw\0", true),
            // replace_sm holds only message_payload: the vendor TLV goes.
            (
                0x0000_0007,
                b"m1\0\x01\x01123\0\0\0\0\0\0\x14\x01\x00\x01\x00\x04\x24\x00\x02hi",
                false,
            ),
            (0x0000_0102, b"\x01\x01123\0\x01\x01456\0\x04\x22\x00\x01\x01", true),
            // bind_transmitter_resp: sc_interface_version after a vendor TLV.
            (
                0x8000_0002,
                b"SMSC\0\x14\x00\x00\x01\x09\x02\x10\x00\x01\x34",
                false,
            ),
        ];
        let mut views = Vec::new();
        for (id, body, same_octets) in cases {
            let bytes = pdu(id, 5, body);
            let Ok(Frame::Pdu(command)) = decode_one(&bytes) else {
                panic!("{id:#x}: {:?}", decode_one(&bytes));
            };
            assert_eq!(
                encode_to_vec(&command).unwrap() == bytes,
                same_octets,
                "{id:#x}"
            );
            views.push(to_json(&Frame::Pdu(command))["body"].clone());
        }
        assert_eq!(views[0]["number_of_dests"], 2);
        assert_eq!(views[0]["dest_address"][0]["destination_addr"], "456");
        assert_eq!(views[0]["dest_address"][1]["dl_name"], "list");
        assert_eq!(views[0]["short_message_text"], "hi");
        assert_eq!(views[0]["tlvs"][0]["name"], "user_message_reference");
        assert_eq!(views[0]["tlvs"][0]["value"], 7);
        assert_eq!(
            views[1]["unsuccess_sme"][0]["error_status_code"],
            "0x00000045"
        );
        assert_eq!(views[2]["message_id"], "m1");
        assert_eq!(views[3]["password"], "pw");
        assert_eq!(views[4]["tlvs"][0]["value_text"], "hi");
        assert_eq!(views[4]["tlvs"].as_array().unwrap().len(), 1);
        assert_eq!(views[5]["esme_addr"], "456");
        assert_eq!(views[5]["tlvs"][0]["name"], "ms_availability_status");
        assert_eq!(views[6]["tlvs"][0]["value"], 0x34);
        // A body outside SMPP 3.4, built by a caller, is shown as hex.
        let other = Command::new(
            CommandStatus::EsmeRok,
            1,
            Pdu::Other {
                command_id: rusmpp::CommandId::from(0x777u32),
                body: AnyOctetString::from_slice(b"\x01\x02"),
            },
        );
        assert_eq!(
            to_json(&Frame::Pdu(other))["body"],
            json!({"body_hex": "0102"})
        );
    }
}
