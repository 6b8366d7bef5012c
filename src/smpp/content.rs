//! What the SMS-carrying SMPP PDUs (submit_sm, deliver_sm, data_sm) carry, in both
//! directions: text by data_coding, concatenation by UDH, SAR TLVs or message_payload, and
//! whether a deliver_sm / data_sm is a delivery receipt or a message from a phone.
//!
//! Used by the SMPP client link (sending submit_sm, reading deliver_sm / data_sm) and by the
//! simulated SMSC (reading submit_sm, sending deliver_sm). Pure: no I/O, no clock, and no
//! input makes it panic.
//!
//! Decisions other modules rely on:
//! - Parts are cut by [`gsm7::segment_as`], the function intake counted them with, so the part
//!   count stored per message is the number of PDUs sent (UDH and SAR); the coding policy
//!   only changes the octets of each part.
//! - data_coding 0 is read and written as GSM 03.38 (the SMSC default alphabet), one septet per
//!   octet unless the link says packed. Packed septets start on a septet boundary after a UDH
//!   (fill bits, TS 23.040 §9.2.3.24) and 7 spare bits at the end are filled with CR, which
//!   the reader drops (TS 23.038 §6.1.2.3.1).
//! - A receipt's text is read from the raw octets (receipt fields are ASCII whatever the
//!   data_coding says), and from the decoded text when that fails (UCS-2 receipts).

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

use bytes::BytesMut;
use rusmpp::{Command, Pdu, encode::owned::Encode, tlvs::Tlv};

use crate::channel::InboundPart;
use crate::codec::gsm7::{self, Encoding, Gsm7Error, PartPayload};
use crate::codec::receipt::{self, ReceiptState};
use crate::codec::tpdu::{Concat, InformationElement};
use crate::smpp::frame::{self, Address, SubmitFields};

/// esm_class UDHI bit: short_message (or message_payload) starts with a user data header.
const ESM_UDHI: u8 = 0x40;
/// esm_class message type bits (SMPP 3.4 §5.2.12, bits 5..2).
const ESM_TYPE_MASK: u8 = 0x3C;

/// data_coding: SMSC default alphabet (taken as GSM 03.38).
const DC_DEFAULT: u8 = 0x00;
/// data_coding: ISO-8859-1.
const DC_LATIN1: u8 = 0x03;
/// data_coding: UCS-2 (UTF-16BE).
const DC_UCS2: u8 = 0x08;

/// Largest short_message (SMPP 3.4 sm_length 0..=254).
const MAX_SHORT_MESSAGE: usize = 254;
/// Largest message_payload (the TLV length field is 16 bits).
const MAX_PAYLOAD: usize = 65_535;
/// Most parts a UDH or the SAR TLVs can number.
const MAX_CONCAT_PARTS: usize = 255;

/// GSM 03.38 carriage return: the padding of 7 spare bits in packed septets.
const SEPTET_CR: u8 = 0x0D;

const TAG_RECEIPTED_MESSAGE_ID: u16 = 0x001E;
const TAG_SAR_MSG_REF_NUM: u16 = 0x020C;
const TAG_SAR_TOTAL_SEGMENTS: u16 = 0x020E;
const TAG_SAR_SEGMENT_SEQNUM: u16 = 0x020F;
const TAG_NETWORK_ERROR_CODE: u16 = 0x0423;
const TAG_MESSAGE_PAYLOAD: u16 = 0x0424;
const TAG_MESSAGE_STATE: u16 = 0x0427;

/// How a text longer than one SMS is sent on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LongMethod {
    /// One submit_sm per part, each starting with a concatenation UDH (esm_class 0x40); what
    /// handsets see on the air, and what every SMSC passes through.
    #[default]
    Udh,
    /// One submit_sm per part with the sar_msg_ref_num / sar_total_segments /
    /// sar_segment_seqnum TLVs; the SMSC builds the UDH.
    Sar,
    /// One submit_sm with the whole text in the message_payload TLV; the SMSC splits it.
    Payload,
}

/// Which data_coding GSM-alphabet texts are sent with (UCS-2 texts always go as 8).
///
/// A policy never changes how many parts a text is cut into (see [`encode_text`]); where it
/// could not keep that count it is not applied, as noted per variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodingPolicy {
    /// data_coding 0, the SMSC's default alphabet taken as GSM 03.38.
    #[default]
    Gsm7,
    /// data_coding 3 (ISO-8859-1) when every character of the part is Latin-1, else 0 (the
    /// Greek capitals and '€' of the GSM alphabet are not Latin-1). For
    /// [`LongMethod::Payload`] the whole text decides.
    Latin1,
    /// data_coding 8 (UCS-2) for single-part texts whose UCS-2 form fits short_message (at most
    /// 127 UTF-16 units) and for [`LongMethod::Payload`]. A multi-part text on
    /// [`LongMethod::Udh`] or [`LongMethod::Sar`], or a longer single part, keeps data_coding
    /// 0: a 153-septet part would need 306 octets, which neither short_message nor one SMS on
    /// the air can hold, so UCS-2 there would change the part count.
    Ucs2,
}

/// Link settings that shape content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContentOptions {
    /// How texts longer than one SMS are sent.
    pub long_method: LongMethod,
    /// Which data_coding GSM-alphabet texts are sent with.
    pub coding: CodingPolicy,
    /// GSM 7-bit with data_coding 0 is packed 7-bit (true) or one septet per octet (false, the
    /// common SMPP default).
    pub gsm7_packed: bool,
}

/// The content fields of one SMS PDU.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SmsContent {
    /// esm_class; [`encode_text`] only sets the UDHI bit 0x40, callers OR in their own bits.
    pub esm_class: u8,
    /// data_coding.
    pub data_coding: u8,
    /// short_message, at most 254 octets (UDH included); empty when `message_payload` is used.
    pub short_message: Vec<u8>,
    /// message_payload TLV (0x0424).
    pub message_payload: Option<Vec<u8>>,
    /// sar_msg_ref_num / sar_total_segments / sar_segment_seqnum TLVs (0x020C / 0x020E /
    /// 0x020F), present only when all three are.
    pub sar: Option<InboundPart>,
}

/// What one SMS PDU says, read by [`decode_sms`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedSms {
    /// The text (UDH stripped).
    pub text: String,
    /// Where it belongs in a concatenated message (UDH concatenation IE or SAR TLVs); `None`
    /// for a message of one part.
    pub part: Option<InboundPart>,
}

/// The content fields and addresses of a submit_sm, deliver_sm or data_sm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsPdu {
    /// source_addr with its TON and NPI.
    pub source: Address,
    /// destination_addr with its TON and NPI.
    pub dest: Address,
    /// registered_delivery.
    pub registered_delivery: u8,
    /// esm_class, data_coding, short_message and the content TLVs (data_sm has no
    /// short_message: empty).
    pub content: SmsContent,
    /// receipted_message_id TLV 0x001E (without its NUL; `None` when absent or empty).
    pub receipted_message_id: Option<String>,
    /// message_state TLV 0x0427.
    pub message_state: Option<u8>,
    /// network_error_code TLV 0x0423 (3 octets: network type, error code big-endian).
    pub network_error_code: Option<[u8; 3]>,
}

/// What a deliver_sm / data_sm from an SMSC is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A delivery receipt: esm_class message type bits (esm_class & 0x3C) are 0x04 (SMSC
    /// delivery receipt), 0x08 (SME delivery ack), 0x10 (SME manual/user ack) or 0x20
    /// (intermediate notification); or (lenient, as real SMSCs send esm_class 0 receipts) the
    /// PDU has receipted_message_id + message_state TLVs.
    Receipt {
        /// receipted_message_id TLV when present, else the text's id: field.
        remote_id: String,
        /// message_state TLV when present and known, else the text's stat:.
        state: Option<ReceiptState>,
        /// network_error_code TLV rendered e.g. "GSM error 0x0001", else the text's err: when
        /// it is not all zeros ("receipt err:107"); `None` when no error.
        error: Option<String>,
    },
    /// A message from a phone (MO).
    Sms {
        /// source_addr; with TON 1 (international) written as "+digits" (a leading '+' not
        /// doubled), else as received.
        from: String,
        /// destination_addr, written like `from`.
        to: String,
        /// The text.
        text: String,
        /// Where it belongs in a concatenated message.
        part: Option<InboundPart>,
    },
}

/// Errors of the content layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    /// The text cannot be sent as asked (a character outside GSM 7-bit with
    /// [`Encoding::Gsm7`], or more than 255 parts for UDH / SAR).
    #[error("text cannot be sent: {0}")]
    Unencodable(#[from] Gsm7Error),
    /// An address SMPP cannot carry.
    #[error("address {address:?}: {reason}")]
    Address {
        /// The address as given.
        address: String,
        /// What is wrong with it and what would do.
        reason: &'static str,
    },
    /// A delivery receipt with neither a receipted_message_id TLV nor a text with an id:.
    #[error("delivery receipt unreadable: {reason}")]
    Receipt {
        /// What was missing.
        reason: &'static str,
    },
    /// The user data header (esm_class 0x40) does not fit the data.
    #[error("malformed user data header: {reason}")]
    Udh {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The PDU is not one that carries an SMS.
    #[error("{command} does not carry an SMS")]
    NotSms {
        /// SMPP name of the command ("unknown" for ids SMPP 3.4 does not define).
        command: &'static str,
    },
    /// A part needs more octets than its field holds (254 for short_message, 65535 for
    /// message_payload).
    #[error("part {part} needs {octets} octets, more than the {max} its field holds")]
    TooLong {
        /// The part, from 1.
        part: usize,
        /// Octets it needs.
        octets: usize,
        /// Octets the field holds.
        max: usize,
    },
}

// ------------------------------------------------------------------------------------ encoding

/// The PDUs a text is sent as, in part order.
///
/// For [`LongMethod::Udh`] and [`LongMethod::Sar`]: exactly one per part of
/// `gsm7::segment_as(text, encoding, usize::MAX)`, the part count the gateway computed at
/// intake and stores per message; only the octets of each part change with the coding policy.
/// For [`LongMethod::Payload`]: one PDU with the whole text in message_payload (short_message
/// empty), or, if the text is one part, a plain short_message. A single-part text never gets a
/// UDH or SAR TLVs.
///
/// `reference` is the concatenation reference: UDH IEI 0x00 (8-bit) when it is at most 255,
/// else IEI 0x08 (16-bit); SAR is always 16-bit. Parts are sized for the 6-octet UDH, so with
/// a 16-bit UDH a full part is one octet over the 140 of an SMS on the air: links whose SMSC
/// checks that should be given references up to 255.
///
/// # Errors
///
/// [`ContentError::Unencodable`] for a character outside GSM 7-bit with [`Encoding::Gsm7`] or
/// more than 255 parts with UDH / SAR; [`ContentError::TooLong`] for a payload over 65535
/// octets.
pub fn encode_text(
    text: &str,
    encoding: Encoding,
    options: ContentOptions,
    reference: u16,
) -> Result<Vec<SmsContent>, ContentError> {
    let parts = gsm7::segment_as(text, encoding, usize::MAX)?.parts;
    let packed = options.gsm7_packed;
    if let [single] = parts.as_slice() {
        // One part: the policy applies as long as the octets still fit short_message.
        let coding = match options.coding {
            CodingPolicy::Ucs2 if single_ucs2_len(single) > MAX_SHORT_MESSAGE => CodingPolicy::Gsm7,
            coding => coding,
        };
        let (data_coding, short_message) = encode_part(single, coding, packed, &[]);
        check_len(1, short_message.len(), MAX_SHORT_MESSAGE)?;
        return Ok(vec![SmsContent {
            data_coding,
            short_message,
            ..SmsContent::default()
        }]);
    }
    let total = parts.len();
    if options.long_method == LongMethod::Payload {
        let whole = match encoding {
            Encoding::Gsm7 => PartPayload::Septets(gsm7::to_septets(text)?),
            Encoding::Ucs2 => PartPayload::Ucs2(gsm7::to_ucs2(text)),
        };
        let (data_coding, payload) = encode_part(&whole, options.coding, packed, &[]);
        check_len(1, payload.len(), MAX_PAYLOAD)?;
        return Ok(vec![SmsContent {
            data_coding,
            message_payload: Some(payload),
            ..SmsContent::default()
        }]);
    }
    let total_u8 = u8::try_from(total).map_err(|_| Gsm7Error::TooManyParts {
        needed: total,
        max: MAX_CONCAT_PARTS,
    })?;
    // See CodingPolicy::Ucs2: a multi-part GSM text keeps its GSM parts.
    let coding = match options.coding {
        CodingPolicy::Ucs2 => CodingPolicy::Gsm7,
        coding => coding,
    };
    let mut out = Vec::with_capacity(total);
    for (index, part) in parts.iter().enumerate() {
        // At most 255 parts (checked above), so the sequence number fits.
        let seq = u8::try_from(index + 1).unwrap_or(u8::MAX);
        let content = match options.long_method {
            LongMethod::Sar => {
                let (data_coding, short_message) = encode_part(part, coding, packed, &[]);
                SmsContent {
                    data_coding,
                    short_message,
                    sar: Some(InboundPart {
                        reference,
                        total: total_u8,
                        seq,
                    }),
                    ..SmsContent::default()
                }
            }
            // Payload with more than one part returned above.
            LongMethod::Udh | LongMethod::Payload => {
                let udh = concat_udh(reference, total_u8, seq);
                let (data_coding, short_message) = encode_part(part, coding, packed, &udh);
                SmsContent {
                    esm_class: ESM_UDHI,
                    data_coding,
                    short_message,
                    ..SmsContent::default()
                }
            }
        };
        check_len(index + 1, content.short_message.len(), MAX_SHORT_MESSAGE)?;
        out.push(content);
    }
    Ok(out)
}

fn check_len(part: usize, octets: usize, max: usize) -> Result<(), ContentError> {
    if octets > max {
        return Err(ContentError::TooLong { part, octets, max });
    }
    Ok(())
}

/// Octets of a part sent as UCS-2.
fn single_ucs2_len(part: &PartPayload) -> usize {
    match part {
        PartPayload::Septets(septets) => gsm7::from_septets(septets)
            .encode_utf16()
            .count()
            .saturating_mul(2),
        PartPayload::Ucs2(units) => units.len().saturating_mul(2),
    }
}

/// The concatenation UDH: `05 00 03 ref total seq`, or `06 08 04 ref_hi ref_lo total seq`
/// when the reference needs 16 bits.
fn concat_udh(reference: u16, total: u8, seq: u8) -> Vec<u8> {
    match u8::try_from(reference) {
        Ok(reference) => vec![0x05, 0x00, 0x03, reference, total, seq],
        Err(_) => {
            let [hi, lo] = reference.to_be_bytes();
            vec![0x06, 0x08, 0x04, hi, lo, total, seq]
        }
    }
}

/// data_coding and octets (`udh` first) of one part under `coding`.
fn encode_part(
    part: &PartPayload,
    coding: CodingPolicy,
    packed: bool,
    udh: &[u8],
) -> (u8, Vec<u8>) {
    let mut out = udh.to_vec();
    let septets = match part {
        PartPayload::Ucs2(units) => {
            out.extend(gsm7::ucs2_to_be_bytes(units));
            return (DC_UCS2, out);
        }
        PartPayload::Septets(septets) => septets,
    };
    match coding {
        CodingPolicy::Ucs2 => {
            let text = gsm7::from_septets(septets);
            out.extend(gsm7::ucs2_to_be_bytes(&gsm7::to_ucs2(&text)));
            return (DC_UCS2, out);
        }
        CodingPolicy::Latin1 => {
            let text = gsm7::from_septets(septets);
            let latin1: Option<Vec<u8>> = text
                .chars()
                .map(|ch| u8::try_from(u32::from(ch)).ok())
                .collect();
            if let Some(latin1) = latin1 {
                out.extend(latin1);
                return (DC_LATIN1, out);
            }
        }
        CodingPolicy::Gsm7 => {}
    }
    if packed {
        out.extend(pack_with_padding(septets, fill_bits(udh.len())));
    } else {
        out.extend_from_slice(septets);
    }
    (DC_DEFAULT, out)
}

/// Fill bits that put the first septet after a UDH of `udh_octets` on a septet boundary.
fn fill_bits(udh_octets: usize) -> u8 {
    // Always 0..=6.
    u8::try_from((7 - udh_octets.saturating_mul(8) % 7) % 7).unwrap_or(0)
}

/// Packs septets after `fill` bits, TS 23.038 §6.1.2.3.1 style: 7 spare bits at the end are
/// a CR (so the reader does not see an '@'), and a text whose own last CR ends on an octet
/// boundary gets a second CR (which the reader would otherwise take for padding; the
/// recipient then sees CR CR, which the standard defines to look like one CR).
fn pack_with_padding(septets: &[u8], fill: u8) -> Vec<u8> {
    let bits = usize::from(fill).saturating_add(septets.len().saturating_mul(7));
    let spare = (8 - bits % 8) % 8;
    let ends_with_cr = septets.last() == Some(&SEPTET_CR);
    if spare == 7 || (spare == 0 && ends_with_cr) {
        let mut padded = septets.to_vec();
        padded.push(SEPTET_CR);
        gsm7::pack_septets(&padded, fill)
    } else {
        gsm7::pack_septets(septets, fill)
    }
}

// ------------------------------------------------------------------------------------ decoding

/// How a link reads data_coding 0, the "SMSC default alphabet": GSM 03.38 as the standard
/// says (one septet per octet, or packed), or Latin-1, as SMSCs that pass ASCII / ISO-8859-1
/// through write it (there "@" arrives as 0x40, which GSM reads as "¡").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dc0 {
    /// GSM 03.38, one septet per octet.
    #[default]
    Gsm7,
    /// GSM 03.38, packed 7-bit.
    Gsm7Packed,
    /// ISO-8859-1 (ASCII included).
    Latin1,
}

impl From<bool> for Dc0 {
    /// GSM 7-bit, packed when `true`.
    fn from(gsm7_packed: bool) -> Self {
        if gsm7_packed {
            Dc0::Gsm7Packed
        } else {
            Dc0::Gsm7
        }
    }
}

/// How the octets of a data_coding are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alphabet {
    /// GSM 03.38, packed or not per the link.
    Gsm7,
    /// One octet per character, U+0000..=U+00FF: Latin-1, IA5, and 8-bit data or charsets
    /// this module does not decode (nothing is lost, nothing fails).
    Latin1,
    /// UTF-16 big-endian.
    Ucs2,
}

/// The alphabet of an SMPP data_coding: SMPP 3.4 §5.2.19 for 0x00..=0x0F, GSM 03.38 §4 data
/// coding groups above.
fn alphabet(data_coding: u8) -> Alphabet {
    match data_coding {
        0x00 => Alphabet::Gsm7,
        0x08 => Alphabet::Ucs2,
        // 1 IA5, 3 Latin-1, 2 / 4 8-bit binary, 5..=0x0F national charsets and reserved.
        0x01..=0x07 | 0x09..=0x0F => Alphabet::Latin1,
        // General data coding (00xx) and its auto-deletion form (01xx): compressed text
        // cannot be read; alphabet bits 3..2 otherwise.
        0x10..=0x7F if data_coding & 0x20 != 0 => Alphabet::Latin1,
        0x10..=0x7F => match (data_coding >> 2) & 0x03 {
            0 => Alphabet::Gsm7,
            2 => Alphabet::Ucs2,
            _ => Alphabet::Latin1,
        },
        // Message waiting groups: discard / store with the GSM alphabet, store with UCS-2.
        0xC0..=0xDF => Alphabet::Gsm7,
        0xE0..=0xEF => Alphabet::Ucs2,
        // Data coding / message class: bit 2 clear GSM 7-bit, set 8-bit data.
        0xF0..=0xFF if data_coding & 0x04 == 0 => Alphabet::Gsm7,
        // 0x80..=0xBF reserved, and 8-bit data.
        _ => Alphabet::Latin1,
    }
}

/// Reads the text and concatenation position of one SMS PDU.
///
/// Octets come from message_payload when present (short_message is then ignored), else from
/// short_message. When esm_class has 0x40 the UDH is stripped and a concatenation IE (0x00 or
/// 0x08) gives `part`; otherwise (or when the UDH has none) the SAR TLVs do. A part with total
/// 1, or with a sequence number outside 1..=total, is `part: None`.
///
/// Text by data_coding: 0 as `dc0` says (GSM 7-bit unpacked or packed, or Latin-1; a `bool`
/// means GSM 7-bit, packed when true), 1 IA5 / ASCII, 3 Latin-1, 8
/// UCS-2 big-endian (an odd trailing octet ignored, lone surrogates as U+FFFD), 0xF0..=0xFF
/// GSM 7-bit when bit 2 is clear and 8-bit data when set, 0x10..=0x7F per the GSM 03.38 §4
/// general data coding alphabet bits (00 GSM, 01 8-bit, 10 UCS-2), 0xC0..=0xEF per the
/// message waiting groups; 8-bit data (2, 4, ...) and anything unknown as Latin-1, so nothing
/// is lost and nothing fails.
///
/// # Errors
///
/// [`ContentError::Udh`] when the UDH length runs past the data or an information element
/// past the UDH.
pub fn decode_sms(content: &SmsContent, dc0: impl Into<Dc0>) -> Result<DecodedSms, ContentError> {
    let dc0 = dc0.into();
    let data = content
        .message_payload
        .as_deref()
        .unwrap_or(&content.short_message);
    let (udh_octets, concat, body) = if content.esm_class & ESM_UDHI != 0 {
        split_udh(data)?
    } else {
        (0, None, data)
    };
    let part = concat
        .map(|c| InboundPart {
            reference: c.reference,
            total: c.total,
            seq: c.seq,
        })
        .or(content.sar)
        .filter(|p| p.total > 1 && p.seq >= 1 && p.seq <= p.total);
    let text = match alphabet(content.data_coding) {
        Alphabet::Gsm7 if content.data_coding == 0 && dc0 == Dc0::Latin1 => {
            body.iter().copied().map(char::from).collect()
        }
        Alphabet::Gsm7 if dc0 == Dc0::Gsm7Packed => {
            unpack_with_padding(body, fill_bits(udh_octets))
        }
        Alphabet::Gsm7 => gsm7::from_septets(body),
        Alphabet::Ucs2 => gsm7::ucs2_from_be_bytes(body),
        Alphabet::Latin1 => body.iter().copied().map(char::from).collect(),
    };
    Ok(DecodedSms { text, part })
}

/// Splits user data into (UDH octets including UDHL, first valid concatenation IE, the rest).
/// Empty data carries no header (seen from real SMSCs with UDHI and no data).
fn split_udh(data: &[u8]) -> Result<(usize, Option<Concat>, &[u8]), ContentError> {
    let Some((&udhl, after)) = data.split_first() else {
        return Ok((0, None, data));
    };
    let udhl = usize::from(udhl);
    let (Some(mut header), Some(body)) = (after.get(..udhl), after.get(udhl..)) else {
        return Err(ContentError::Udh {
            reason: "header length runs past the end of the data",
        });
    };
    let mut concat = None;
    while let Some((&iei, rest)) = header.split_first() {
        let Some((&len, rest)) = rest.split_first() else {
            return Err(ContentError::Udh {
                reason: "information element cut by the end of the header",
            });
        };
        let len = usize::from(len);
        let (Some(ie_data), Some(rest)) = (rest.get(..len), rest.get(len..)) else {
            return Err(ContentError::Udh {
                reason: "information element runs past the end of the header",
            });
        };
        if concat.is_none() {
            concat = Concat::from_ie(&InformationElement {
                iei,
                data: ie_data.to_vec(),
            });
        }
        header = rest;
    }
    Ok((1 + udhl, concat, body))
}

/// Text of packed septets after `fill` bits: as many septets as the octets hold, less a CR
/// that only fills 7 spare bits (see [`pack_with_padding`]).
fn unpack_with_padding(packed: &[u8], fill: u8) -> String {
    let bits = packed
        .len()
        .saturating_mul(8)
        .saturating_sub(usize::from(fill));
    let count = bits / 7;
    // The count fits the octets by construction; an error would mean no septets at all.
    let mut septets = gsm7::unpack_septets(packed, count, fill).unwrap_or_default();
    if bits % 7 == 0 && septets.last() == Some(&SEPTET_CR) {
        septets.pop();
    }
    gsm7::from_septets(&septets)
}

/// The submit_sm / deliver_sm fields that carry `content` from `source` to `dest` (the other
/// fields at their defaults).
pub fn fields_of(source: &Address, dest: &Address, content: SmsContent) -> SubmitFields {
    SubmitFields {
        source: source.clone(),
        dest: dest.clone(),
        esm_class: content.esm_class,
        data_coding: content.data_coding,
        short_message: content.short_message,
        message_payload: content.message_payload,
        sar_msg_ref_num: content.sar.map(|p| p.reference),
        sar_total_segments: content.sar.map(|p| p.total),
        sar_segment_seqnum: content.sar.map(|p| p.seq),
        ..SubmitFields::default()
    }
}

// ---------------------------------------------------------------------------------- PDU fields

/// The content fields and addresses of a submit_sm, deliver_sm or data_sm; `None` for other
/// PDUs (and for a response without body).
pub fn sms_of(command: &Command) -> Option<SmsPdu> {
    // The three bodies share these fields but no trait: one expansion reads them all.
    macro_rules! read {
        ($b:expr, $short_message:expr) => {
            sms_pdu(
                address(
                    $b.source_addr_ton.into(),
                    $b.source_addr_npi.into(),
                    &$b.source_addr,
                ),
                address(
                    $b.dest_addr_ton.into(),
                    $b.dest_addr_npi.into(),
                    &$b.destination_addr,
                ),
                u8::from($b.registered_delivery),
                u8::from($b.esm_class),
                u8::from($b.data_coding),
                $short_message,
                $b.tlvs(),
            )
        };
    }
    match command.pdu()? {
        Pdu::SubmitSm(b) => Some(read!(b, b.short_message().as_ref())),
        Pdu::DeliverSm(b) => Some(read!(b, b.short_message().as_ref())),
        Pdu::DataSm(b) => Some(read!(b, &[])),
        _ => None,
    }
}

/// An address from its fields; the C-octet string without its NUL.
fn address(ton: u8, npi: u8, addr: &impl AsRef<[u8]>) -> Address {
    Address {
        ton,
        npi,
        addr: c_string(addr.as_ref()),
    }
}

/// Text of C-octet string octets: up to the first NUL, non-UTF-8 as U+FFFD.
pub(crate) fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(bytes.get(..end).unwrap_or_default()).into_owned()
}

/// The value octets of a TLV, whether rusmpp decoded it into a typed value or kept it raw:
/// re-encoding gives the wire octets back (frame.rs checked each value has the length its
/// TLV declares).
fn tlv_value(tlv: &Tlv) -> Vec<u8> {
    let mut buf = BytesMut::new();
    tlv.encode(&mut buf);
    buf.get(4..).map(<[u8]>::to_vec).unwrap_or_default()
}

/// An [`SmsPdu`] from a body's fields; the TLVs read by tag, first occurrence wins.
fn sms_pdu(
    source: Address,
    dest: Address,
    registered_delivery: u8,
    esm_class: u8,
    data_coding: u8,
    short_message: &[u8],
    tlvs: &[Tlv],
) -> SmsPdu {
    let mut pdu = SmsPdu {
        source,
        dest,
        registered_delivery,
        content: SmsContent {
            esm_class,
            data_coding,
            short_message: short_message.to_vec(),
            message_payload: None,
            sar: None,
        },
        receipted_message_id: None,
        message_state: None,
        network_error_code: None,
    };
    let (mut sar_ref, mut sar_total, mut sar_seq) = (None, None, None);
    for tlv in tlvs {
        let tag = u16::from(tlv.tag());
        let value = tlv_value(tlv);
        match (tag, value.as_slice()) {
            (TAG_MESSAGE_PAYLOAD, _) if pdu.content.message_payload.is_none() => {
                pdu.content.message_payload = Some(value);
            }
            (TAG_RECEIPTED_MESSAGE_ID, raw) if pdu.receipted_message_id.is_none() => {
                pdu.receipted_message_id =
                    Some(c_string(raw).trim().to_owned()).filter(|id| !id.is_empty());
            }
            (TAG_MESSAGE_STATE, &[state]) if pdu.message_state.is_none() => {
                pdu.message_state = Some(state);
            }
            (TAG_NETWORK_ERROR_CODE, &[a, b, c]) if pdu.network_error_code.is_none() => {
                pdu.network_error_code = Some([a, b, c]);
            }
            (TAG_SAR_MSG_REF_NUM, &[hi, lo]) if sar_ref.is_none() => {
                sar_ref = Some(u16::from_be_bytes([hi, lo]));
            }
            (TAG_SAR_TOTAL_SEGMENTS, &[total]) if sar_total.is_none() => sar_total = Some(total),
            (TAG_SAR_SEGMENT_SEQNUM, &[seq]) if sar_seq.is_none() => sar_seq = Some(seq),
            _ => {}
        }
    }
    if let (Some(reference), Some(total), Some(seq)) = (sar_ref, sar_total, sar_seq) {
        pdu.content.sar = Some(InboundPart {
            reference,
            total,
            seq,
        });
    }
    pdu
}

// ---------------------------------------------------------------------------------- deliveries

/// Classifies and reads a deliver_sm or data_sm from an SMSC: a delivery receipt (see
/// [`Delivery::Receipt`] for what counts as one) or a message from a phone.
///
/// # Errors
///
/// [`ContentError::NotSms`] for any other PDU; [`ContentError::Receipt`] for a receipt with
/// neither a receipted_message_id TLV nor a text with an id:; what [`decode_sms`] rejects in a
/// message from a phone.
pub fn read_delivery(command: &Command, dc0: impl Into<Dc0>) -> Result<Delivery, ContentError> {
    let dc0 = dc0.into();
    let pdu = match command.pdu() {
        Some(Pdu::DeliverSm(_) | Pdu::DataSm(_)) => sms_of(command),
        _ => None,
    }
    .ok_or_else(|| ContentError::NotSms {
        command: frame::command_name(u32::from(command.id())).unwrap_or("unknown"),
    })?;
    let typed_receipt = matches!(
        pdu.content.esm_class & ESM_TYPE_MASK,
        0x04 | 0x08 | 0x10 | 0x20
    );
    let tlv_receipt = pdu.receipted_message_id.is_some() && pdu.message_state.is_some();
    if typed_receipt || tlv_receipt {
        return read_receipt(&pdu, dc0);
    }
    let decoded = decode_sms(&pdu.content, dc0)?;
    Ok(Delivery::Sms {
        from: gateway_number(&pdu.source),
        to: gateway_number(&pdu.dest),
        text: decoded.text,
        part: decoded.part,
    })
}

/// An address as the gateway writes numbers: "+digits" for TON 1 (international).
fn gateway_number(address: &Address) -> String {
    if address.ton == 1 && !address.addr.is_empty() && !address.addr.starts_with('+') {
        format!("+{}", address.addr)
    } else {
        address.addr.clone()
    }
}

fn read_receipt(pdu: &SmsPdu, dc0: Dc0) -> Result<Delivery, ContentError> {
    let content = &pdu.content;
    let raw = content
        .message_payload
        .as_deref()
        .unwrap_or(&content.short_message);
    let from_raw = || receipt::parse(raw).ok();
    let from_text = || {
        decode_sms(content, dc0)
            .ok()
            .and_then(|d| receipt::parse(d.text.as_bytes()).ok())
    };
    // Receipt fields are ASCII: the raw octets read best, except in UCS-2.
    let parsed = if alphabet(content.data_coding) == Alphabet::Ucs2 {
        from_text().or_else(from_raw)
    } else {
        from_raw().or_else(from_text)
    };
    let remote_id = pdu
        .receipted_message_id
        .clone()
        .or_else(|| parsed.as_ref().map(|r| r.id.clone()))
        .ok_or(ContentError::Receipt {
            reason: "no receipted_message_id TLV and no id: in the text",
        })?;
    let state = pdu
        .message_state
        .and_then(ReceiptState::from_message_state)
        .or_else(|| parsed.as_ref().and_then(receipt::Receipt::state));
    let error = pdu.network_error_code.and_then(network_error).or_else(|| {
        parsed
            .as_ref()
            .and_then(|r| r.err.as_deref())
            .filter(|err| !err.trim().chars().all(|c| c == '0'))
            .map(|err| format!("receipt err:{}", err.trim()))
    });
    Ok(Delivery::Receipt {
        remote_id,
        state,
        error,
    })
}

/// network_error_code (SMPP 3.4 §5.3.2.31: network type, then a 2-octet error code) as text;
/// `None` for error code 0. Some SMSCs send three ASCII digits instead ("000").
fn network_error(code: [u8; 3]) -> Option<String> {
    if code.iter().all(u8::is_ascii_digit) {
        return (code != *b"000").then(|| format!("network error {}", c_string(&code)));
    }
    let [network, hi, lo] = code;
    let value = u16::from_be_bytes([hi, lo]);
    if value == 0 {
        return None;
    }
    let network = match network {
        1 => "ANSI-136 access denied",
        2 => "IS-95 access denied",
        3 => "GSM",
        4 => "ANSI-136 cause",
        5 => "IS-95 cause",
        6 => "ANSI-41",
        7 => "SMPP",
        8 => "message center",
        other => return Some(format!("network type {other} error 0x{value:04X}")),
    };
    Some(format!("{network} error 0x{value:04X}"))
}

// ----------------------------------------------------------------------------------- addresses

/// Longest address SMPP 3.4 carries in submit_sm / deliver_sm (21 octets with the NUL).
const MAX_ADDRESS: usize = 20;
/// Longest alphanumeric sender (TS 23.040 §9.1.2.5: 11 characters).
const MAX_ALPHANUMERIC: usize = 11;
/// Longest all-digit address taken as a short code rather than an international number.
const MAX_SHORT_CODE: usize = 8;

/// The TON/NPI and address for a number or sender (SMPP 3.4 §5.2.5 / §5.2.6).
///
/// "+" followed by digits: TON 1 NPI 1 (international), the digits without '+'. All digits, at
/// most 8: short code, TON 3 (network specific) NPI 0. All digits, longer: TON 1 NPI 1 (the
/// gateway stores E.164, so a long number is international). Anything else: alphanumeric TON
/// 5 NPI 0. Empty: TON 0 NPI 0 "" (the SMSC's default).
///
/// # Errors
///
/// [`ContentError::Address`] for an alphanumeric sender over 11 characters or outside
/// printable ASCII, and for a number over 20 digits. Nothing is truncated.
pub fn address_for(number: &str) -> Result<Address, ContentError> {
    let err = |reason| ContentError::Address {
        address: number.to_owned(),
        reason,
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let numeric = |digits: &str, ton: u8, npi: u8| {
        if digits.len() > MAX_ADDRESS {
            return Err(err("more than 20 digits; SMPP cannot carry it"));
        }
        Ok(Address {
            ton,
            npi,
            addr: digits.to_owned(),
        })
    };
    if number.is_empty() {
        return Ok(Address::default());
    }
    if let Some(digits) = number.strip_prefix('+')
        && all_digits(digits)
    {
        return numeric(digits, 1, 1);
    }
    if all_digits(number) {
        return if number.len() <= MAX_SHORT_CODE {
            numeric(number, 3, 0)
        } else {
            numeric(number, 1, 1)
        };
    }
    if !number.bytes().all(|b| (0x20..=0x7E).contains(&b)) {
        return Err(err(
            "an alphanumeric sender must be printable ASCII; use a number or plain letters",
        ));
    }
    if number.len() > MAX_ALPHANUMERIC {
        return Err(err(
            "an alphanumeric sender has at most 11 characters; shorten it",
        ));
    }
    Ok(Address {
        ton: 5,
        npi: 0,
        addr: number.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smpp::frame::{Frame, decode_hex, decode_one, encode_to_vec};
    use serde_json::Value;

    const VECTORS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/corpus/smpp/smpp-pdu-vectors.json"
    ));
    const RECEIPTS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/corpus/smpp/dlr-receipts.tsv"
    ));

    // ---- helpers --------------------------------------------------------------------

    fn vectors() -> Vec<Value> {
        let doc: Value = serde_json::from_str(VECTORS).unwrap();
        doc["vectors"].as_array().unwrap().clone()
    }

    fn vector(id_prefix: &str) -> Command {
        let v = vectors()
            .into_iter()
            .find(|v| v["id"].as_str().unwrap().starts_with(id_prefix))
            .unwrap();
        command(&decode_hex(v["pdu_hex"].as_str().unwrap()).unwrap())
    }

    fn command(bytes: &[u8]) -> Command {
        match decode_one(bytes) {
            Ok(Frame::Pdu(command)) => command,
            other => panic!("not a PDU: {other:?}"),
        }
    }

    /// A PDU on the wire: header (sequence number 1) and body.
    fn wire(command_id: u32, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(u32::try_from(16 + body.len()).unwrap().to_be_bytes());
        out.extend(command_id.to_be_bytes());
        out.extend(0u32.to_be_bytes());
        out.extend(1u32.to_be_bytes());
        out.extend(body);
        out
    }

    fn push_addr(body: &mut Vec<u8>, (ton, npi, addr): (u8, u8, &str)) {
        body.extend([ton, npi]);
        body.extend(addr.as_bytes());
        body.push(0);
    }

    fn push_tlvs(body: &mut Vec<u8>, tlvs: &[(u16, Vec<u8>)]) {
        for (tag, value) in tlvs {
            body.extend(tag.to_be_bytes());
            body.extend(u16::try_from(value.len()).unwrap().to_be_bytes());
            body.extend(value);
        }
    }

    type Addr<'a> = (u8, u8, &'a str);
    const PHONE: Addr<'static> = (1, 1, "447700900123");
    const SHOP: Addr<'static> = (5, 0, "Shop");

    /// A deliver_sm as an SMSC sends it, decoded by frame.rs.
    fn deliver(
        from: Addr,
        esm: u8,
        dc: u8,
        short_message: &[u8],
        tlvs: &[(u16, Vec<u8>)],
    ) -> Command {
        let mut body = vec![0]; // service_type
        push_addr(&mut body, from);
        push_addr(&mut body, SHOP);
        body.extend([esm, 0, 0, 0, 0, 0, 0, dc, 0]);
        body.push(u8::try_from(short_message.len()).unwrap());
        body.extend(short_message);
        push_tlvs(&mut body, tlvs);
        command(&wire(0x0000_0005, &body))
    }

    /// A data_sm as an SMSC sends it.
    fn data_sm(from: Addr, esm: u8, dc: u8, tlvs: &[(u16, Vec<u8>)]) -> Command {
        let mut body = vec![0];
        push_addr(&mut body, from);
        push_addr(&mut body, SHOP);
        body.extend([esm, 0, dc]);
        push_tlvs(&mut body, tlvs);
        command(&wire(0x0000_0103, &body))
    }

    /// The TLVs a content carries.
    fn content_tlvs(c: &SmsContent) -> Vec<(u16, Vec<u8>)> {
        let mut tlvs = Vec::new();
        if let Some(p) = c.sar {
            tlvs.push((TAG_SAR_MSG_REF_NUM, p.reference.to_be_bytes().to_vec()));
            tlvs.push((TAG_SAR_TOTAL_SEGMENTS, vec![p.total]));
            tlvs.push((TAG_SAR_SEGMENT_SEQNUM, vec![p.seq]));
        }
        if let Some(payload) = &c.message_payload {
            tlvs.push((TAG_MESSAGE_PAYLOAD, payload.clone()));
        }
        tlvs
    }

    /// A submit_sm of `content` built by frame.rs, through the wire and back.
    fn submit(content: &SmsContent) -> Command {
        let fields = SubmitFields {
            source: address_for("Shop").unwrap(),
            dest: address_for("+447700900123").unwrap(),
            esm_class: content.esm_class,
            registered_delivery: 1,
            data_coding: content.data_coding,
            short_message: content.short_message.clone(),
            message_payload: content.message_payload.clone(),
            sar_msg_ref_num: content.sar.map(|p| p.reference),
            sar_total_segments: content.sar.map(|p| p.total),
            sar_segment_seqnum: content.sar.map(|p| p.seq),
            ..SubmitFields::default()
        };
        let bytes = encode_to_vec(&frame::submit_sm(7, &fields).unwrap()).unwrap();
        command(&bytes)
    }

    fn options(long_method: LongMethod, coding: CodingPolicy, gsm7_packed: bool) -> ContentOptions {
        ContentOptions {
            long_method,
            coding,
            gsm7_packed,
        }
    }

    fn receipt_of(delivery: Delivery) -> (String, Option<ReceiptState>, Option<String>) {
        match delivery {
            Delivery::Receipt {
                remote_id,
                state,
                error,
            } => (remote_id, state, error),
            other => panic!("not a receipt: {other:?}"),
        }
    }

    // ---- encode / decode round trip -------------------------------------------------

    const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡\
                             ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
    const GSM_EXT: &str = "€{}[]~\\^|\u{0C}";
    const NON_GSM: &str = "áçÈПриветд中文ðþ";
    const EMOJI: &str = "👋😀🎉🇮🇹";

    /// A random text of 1..=5 parts (roughly): GSM-only (basic and extension characters, no
    /// CR, see `packed_cr_padding`) or with characters only UCS-2 carries.
    fn random_text(rng: &mut fastrand::Rng, gsm_only: bool) -> String {
        let pick = |rng: &mut fastrand::Rng, set: &str| {
            let chars: Vec<char> = set.chars().collect();
            chars[rng.usize(..chars.len())]
        };
        let parts = rng.usize(1..=5);
        let (single, concat) = if gsm_only { (160, 153) } else { (70, 67) };
        let target = if parts == 1 {
            rng.usize(..=single)
        } else {
            rng.usize(concat * (parts - 1) + 1..=concat * parts)
        };
        let mut text = String::new();
        let mut units = 0;
        while units < target {
            let ch = match (gsm_only, rng.usize(..10)) {
                (_, 0) => pick(rng, GSM_EXT),
                (false, 1) => pick(rng, NON_GSM),
                (false, 2) => pick(rng, EMOJI),
                _ => pick(rng, GSM_BASIC),
            };
            units += if gsm_only {
                gsm7::char_septet_len(ch).unwrap()
            } else {
                ch.len_utf16()
            };
            text.push(ch);
        }
        text
    }

    fn is_latin1(text: &str) -> bool {
        text.chars().all(|c| u32::from(c) <= 0xFF)
    }

    /// Encodes, checks the shape of each PDU, sends each as a submit_sm and as a deliver_sm
    /// through frame.rs, and reads the text back.
    fn check_round_trip(text: &str, encoding: Encoding, options: ContentOptions, reference: u16) {
        let ctx = format!("{text:?} {encoding:?} {options:?} ref {reference}");
        let contents = encode_text(text, encoding, options, reference).expect(&ctx);
        let segmented = gsm7::segment_as(text, encoding, usize::MAX).unwrap();
        let parts = segmented.parts.len();
        let multi = parts > 1;
        let payload = multi && options.long_method == LongMethod::Payload;
        assert_eq!(contents.len(), if payload { 1 } else { parts }, "{ctx}");
        let total = u8::try_from(contents.len()).unwrap();
        let mut from_submit = String::new();
        let mut from_deliver = String::new();
        for (i, c) in contents.iter().enumerate() {
            let seq = u8::try_from(i + 1).unwrap();
            // Shape.
            assert!(c.short_message.len() <= MAX_SHORT_MESSAGE, "{ctx}");
            assert_eq!(c.message_payload.is_some(), payload, "{ctx}");
            if payload {
                assert!(c.short_message.is_empty(), "{ctx}");
            }
            let udh = multi && options.long_method == LongMethod::Udh;
            assert_eq!(c.esm_class, if udh { ESM_UDHI } else { 0 }, "{ctx}");
            let sar = multi && options.long_method == LongMethod::Sar;
            assert_eq!(
                c.sar,
                sar.then_some(InboundPart {
                    reference,
                    total,
                    seq
                }),
                "{ctx}"
            );
            let part_text = if payload {
                text.to_owned()
            } else {
                segmented.parts[i].to_text()
            };
            let want_dc = match (encoding, options.coding) {
                (Encoding::Ucs2, _) => DC_UCS2,
                (Encoding::Gsm7, CodingPolicy::Gsm7) => DC_DEFAULT,
                (Encoding::Gsm7, CodingPolicy::Latin1) if is_latin1(&part_text) => DC_LATIN1,
                (Encoding::Gsm7, CodingPolicy::Latin1) => DC_DEFAULT,
                (Encoding::Gsm7, CodingPolicy::Ucs2)
                    if payload || (!multi && part_text.encode_utf16().count() <= 127) =>
                {
                    DC_UCS2
                }
                (Encoding::Gsm7, CodingPolicy::Ucs2) => DC_DEFAULT,
            };
            assert_eq!(c.data_coding, want_dc, "{ctx} part {seq}");
            let want_part = (multi && !payload).then_some(InboundPart {
                reference,
                total,
                seq,
            });

            // Straight back.
            let direct = decode_sms(c, options.gsm7_packed).expect(&ctx);
            assert_eq!(direct.part, want_part, "{ctx}");
            assert_eq!(direct.text, part_text, "{ctx} part {seq}");

            // As a submit_sm read by the simulated SMSC.
            let pdu = sms_of(&submit(c)).expect(&ctx);
            assert_eq!(&pdu.content, c, "{ctx}");
            assert_eq!(pdu.registered_delivery, 1);
            let decoded = decode_sms(&pdu.content, options.gsm7_packed).expect(&ctx);
            assert_eq!(decoded.part, want_part, "{ctx}");
            from_submit.push_str(&decoded.text);

            // As a deliver_sm read by the link.
            let mo = deliver(
                PHONE,
                c.esm_class,
                c.data_coding,
                &c.short_message,
                &content_tlvs(c),
            );
            match read_delivery(&mo, options.gsm7_packed).expect(&ctx) {
                Delivery::Sms {
                    from,
                    to,
                    text,
                    part,
                } => {
                    assert_eq!(from, "+447700900123");
                    assert_eq!(to, "Shop");
                    assert_eq!(part, want_part, "{ctx}");
                    from_deliver.push_str(&text);
                }
                other => panic!("{ctx}: {other:?}"),
            }
        }
        assert_eq!(from_submit, text, "{ctx}");
        assert_eq!(from_deliver, text, "{ctx}");
    }

    #[test]
    fn random_texts_round_trip_for_every_method_policy_and_packing() {
        let mut rng = fastrand::Rng::with_seed(0xC0_47E4_7000);
        let mut shapes = std::collections::BTreeSet::new();
        for round in 0..120 {
            let gsm_only = round % 3 != 0;
            let text = random_text(&mut rng, gsm_only);
            let encodings: &[Encoding] = if gsm_only {
                &[Encoding::Gsm7, Encoding::Ucs2]
            } else {
                &[Encoding::Ucs2]
            };
            // 8-bit and 16-bit UDH references.
            let reference = if rng.bool() {
                rng.u16(..=255)
            } else {
                rng.u16(256..)
            };
            for &encoding in encodings {
                shapes.insert((
                    encoding.as_str(),
                    gsm7::count_parts_as(&text, encoding).unwrap(),
                ));
                for method in [LongMethod::Udh, LongMethod::Sar, LongMethod::Payload] {
                    for coding in [CodingPolicy::Gsm7, CodingPolicy::Latin1, CodingPolicy::Ucs2] {
                        for packed in [false, true] {
                            check_round_trip(
                                &text,
                                encoding,
                                options(method, coding, packed),
                                reference,
                            );
                        }
                    }
                }
            }
        }
        // The generator reached 1 to 5 parts in both alphabets.
        for encoding in ["gsm7", "ucs2"] {
            for parts in 1..=5 {
                assert!(
                    shapes.contains(&(encoding, parts)),
                    "{encoding} {parts}: {shapes:?}"
                );
            }
        }
    }

    #[test]
    fn edge_texts_round_trip() {
        let gsm = [
            String::new(),
            "@".into(),
            "1234567".into(),  // 7 spare bits: CR padding
            "12345678".into(), // no spare bits
            "€".repeat(80),    // 160 septets in one part
            "€".repeat(81),    // escape pairs never cut
            "a".repeat(160),
            "a".repeat(161),
            "a".repeat(153 * 5),
            "{".repeat(77) + "\n",
            "Ça coute 5€ à Zürich ΔΣ".into(),
        ];
        let ucs2 = [
            "👋".repeat(35),
            "👋".repeat(36),
            "x".to_owned() + &"👋".repeat(40),
            "Привет 👋".into(),
        ];
        for method in [LongMethod::Udh, LongMethod::Sar, LongMethod::Payload] {
            for coding in [CodingPolicy::Gsm7, CodingPolicy::Latin1, CodingPolicy::Ucs2] {
                for packed in [false, true] {
                    let o = options(method, coding, packed);
                    for reference in [0, 255, 256, u16::MAX] {
                        for text in &gsm {
                            check_round_trip(text, Encoding::Gsm7, o, reference);
                            check_round_trip(text, Encoding::Ucs2, o, reference);
                        }
                        for text in &ucs2 {
                            check_round_trip(text, Encoding::Ucs2, o, reference);
                        }
                    }
                }
            }
        }
    }

    // ---- hand-written vectors -------------------------------------------------------

    #[test]
    fn udh_bytes() {
        let text = "a".repeat(154) + "bcdefgh";
        let o = ContentOptions::default();
        let parts = encode_text(&text, Encoding::Gsm7, o, 0x42).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].esm_class, 0x40);
        assert_eq!(parts[0].data_coding, 0);
        assert_eq!(
            parts[0].short_message[..6],
            [0x05, 0x00, 0x03, 0x42, 0x02, 0x01]
        );
        assert_eq!(parts[0].short_message.len(), 6 + 153);
        assert_eq!(parts[0].short_message[6..], [b'a'; 153]);
        assert_eq!(parts[1].short_message, b"\x05\x00\x03\x42\x02\x02abcdefgh");

        let parts = encode_text(&text, Encoding::Gsm7, o, 0x1234).unwrap();
        assert_eq!(
            parts[1].short_message,
            b"\x06\x08\x04\x12\x34\x02\x02abcdefgh"
        );

        // UCS-2: big-endian UTF-16 after the UDH, surrogates kept.
        let text = "👋".repeat(36); // 72 units: 33 + 3 emoji, a pair is never cut
        let parts = encode_text(&text, Encoding::Ucs2, o, 7).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].data_coding, 8);
        assert_eq!(parts[0].short_message.len(), 6 + 33 * 4);
        assert_eq!(
            parts[1].short_message[..10],
            [0x05, 0x00, 0x03, 0x07, 0x02, 0x02, 0xD8, 0x3D, 0xDC, 0x4B]
        );

        // Packed after a 6-octet UDH: one fill bit, so "hello" starts on a septet boundary.
        let text = "hellohello".repeat(17); // 170 septets: 153 + 17
        let packed = options(LongMethod::Udh, CodingPolicy::Gsm7, true);
        let parts = encode_text(&text, Encoding::Gsm7, packed, 0xCC).unwrap();
        assert_eq!(
            parts[0].short_message[..6],
            [0x05, 0x00, 0x03, 0xCC, 0x02, 0x01]
        );
        assert_eq!(
            parts[0].short_message[6..15],
            [0xD0, 0x65, 0x36, 0xFB, 0x8D, 0x2E, 0xB3, 0xD9, 0x6F]
        );
        // (1 + 153 * 7) bits = 134 octets.
        assert_eq!(parts[0].short_message.len(), 6 + 134);

        // Packed without UDH.
        let one = encode_text("hello", Encoding::Gsm7, packed, 0).unwrap();
        assert_eq!(one[0].short_message, [0xE8, 0x32, 0x9B, 0xFD, 0x06]);
        assert_eq!(one[0].esm_class, 0);
    }

    #[test]
    fn packed_cr_padding() {
        let packed = options(LongMethod::Udh, CodingPolicy::Gsm7, true);
        let read = |bytes: &[u8]| {
            let c = SmsContent {
                short_message: bytes.to_vec(),
                ..SmsContent::default()
            };
            decode_sms(&c, true).unwrap().text
        };
        // 7 septets leave 7 spare bits: a CR, not an '@', fills them, and is dropped on read.
        let c = encode_text("1234567", Encoding::Gsm7, packed, 0).unwrap();
        assert_eq!(
            c[0].short_message,
            [0x31, 0xD9, 0x8C, 0x56, 0xB3, 0xDD, 0x1A]
        );
        assert_eq!(read(&c[0].short_message), "1234567");
        // Zero padding from a careless sender reads as a trailing '@' (nothing to tell).
        assert_eq!(
            read(&[0x31, 0xD9, 0x8C, 0x56, 0xB3, 0xDD, 0x00]),
            "1234567@"
        );
        // A CR of the text itself that ends on an octet boundary gets a second one
        // (TS 23.038 §6.1.2.3.1), so the reader keeps it: the recipient sees CR CR.
        let c = encode_text("123456\r", Encoding::Gsm7, packed, 0).unwrap();
        assert_eq!(c[0].short_message.len(), 7);
        assert_eq!(read(&c[0].short_message), "123456\r");
        let c = encode_text("1234567\r", Encoding::Gsm7, packed, 0).unwrap();
        assert_eq!(c[0].short_message.len(), 8);
        assert_eq!(read(&c[0].short_message), "1234567\r\r");
        // A CR elsewhere is kept as is.
        for text in ["\r", "12\r34", "\r\r\r"] {
            let c = encode_text(text, Encoding::Gsm7, packed, 0).unwrap();
            assert_eq!(read(&c[0].short_message), text);
        }
        // Unpacked septets are exact whatever they end with.
        let c = encode_text("1234567\r", Encoding::Gsm7, ContentOptions::default(), 0).unwrap();
        assert_eq!(decode_sms(&c[0], false).unwrap().text, "1234567\r");
    }

    #[test]
    fn coding_policies() {
        let latin1 = options(LongMethod::Udh, CodingPolicy::Latin1, false);
        let c = encode_text("Ça coute 5 £", Encoding::Gsm7, latin1, 0).unwrap();
        assert_eq!(c[0].data_coding, 3);
        assert_eq!(c[0].short_message, b"\xC7a coute 5 \xA3");
        // '€' and Greek capitals are GSM but not Latin-1: that part goes as GSM.
        let c = encode_text("5€", Encoding::Gsm7, latin1, 0).unwrap();
        assert_eq!(
            (c[0].data_coding, c[0].short_message.clone()),
            (0, vec![0x35, 0x1B, 0x65])
        );
        // Per part.
        let text = "a".repeat(160) + "Ω";
        let c = encode_text(&text, Encoding::Gsm7, latin1, 0).unwrap();
        assert_eq!((c[0].data_coding, c[1].data_coding), (3, 0));

        let ucs2 = options(LongMethod::Udh, CodingPolicy::Ucs2, false);
        let c = encode_text("Hi", Encoding::Gsm7, ucs2, 0).unwrap();
        assert_eq!(
            (c[0].data_coding, c[0].short_message.clone()),
            (8, vec![0, b'H', 0, b'i'])
        );
        // 127 units fit short_message as UCS-2, 128 do not: GSM then.
        let c = encode_text(&"a".repeat(127), Encoding::Gsm7, ucs2, 0).unwrap();
        assert_eq!((c[0].data_coding, c[0].short_message.len()), (8, 254));
        let c = encode_text(&"a".repeat(128), Encoding::Gsm7, ucs2, 0).unwrap();
        assert_eq!((c[0].data_coding, c[0].short_message.len()), (0, 128));
        // Multi-part keeps its GSM parts; payload takes the policy.
        let c = encode_text(&"a".repeat(200), Encoding::Gsm7, ucs2, 0).unwrap();
        assert!(c.iter().all(|c| c.data_coding == 0));
        let payload = options(LongMethod::Payload, CodingPolicy::Ucs2, false);
        let c = encode_text(&"a".repeat(200), Encoding::Gsm7, payload, 0).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].data_coding, 8);
        assert_eq!(c[0].message_payload.as_ref().unwrap().len(), 400);
        // UCS-2 texts are always data_coding 8.
        for coding in [CodingPolicy::Gsm7, CodingPolicy::Latin1] {
            let c = encode_text(
                "Hi",
                Encoding::Ucs2,
                options(LongMethod::Udh, coding, true),
                0,
            )
            .unwrap();
            assert_eq!(c[0].data_coding, 8);
        }
    }

    #[test]
    fn sar_tlvs() {
        let sar = options(LongMethod::Sar, CodingPolicy::Gsm7, false);
        let parts = encode_text(&"b".repeat(300), Encoding::Gsm7, sar, 0x1234).unwrap();
        assert_eq!(parts.len(), 2);
        let bytes = encode_to_vec(&submit(&parts[1])).unwrap();
        let tail = [
            0x02, 0x0C, 0x00, 0x02, 0x12, 0x34, // sar_msg_ref_num
            0x02, 0x0E, 0x00, 0x01, 0x02, // sar_total_segments
            0x02, 0x0F, 0x00, 0x01, 0x02, // sar_segment_seqnum
        ];
        assert!(bytes.ends_with(&tail), "{bytes:02X?}");
        assert_eq!(parts[1].esm_class, 0);
        assert_eq!(parts[1].short_message, vec![b'b'; 147]);

        // A corpus submit_sm with SAR and UCS-2.
        let pdu = sms_of(&vector("smpp-79-")).unwrap();
        assert_eq!(
            pdu.source,
            Address {
                ton: 5,
                npi: 0,
                addr: "MyShop".into()
            }
        );
        let d = decode_sms(&pdu.content, false).unwrap();
        assert_eq!(d.text, "Привет 👋");
        assert_eq!(
            d.part,
            Some(InboundPart {
                reference: 0x1234,
                total: 2,
                seq: 1
            })
        );

        // Incomplete or out-of-range SAR is no part.
        let mo = deliver(
            PHONE,
            0,
            0,
            b"x",
            &[(0x020C, vec![0, 1]), (0x020E, vec![2])],
        );
        assert!(matches!(
            read_delivery(&mo, false),
            Ok(Delivery::Sms { part: None, .. })
        ));
        let mo = deliver(
            PHONE,
            0,
            0,
            b"x",
            &[(0x020C, vec![0, 1]), (0x020E, vec![2]), (0x020F, vec![3])],
        );
        assert!(matches!(
            read_delivery(&mo, false),
            Ok(Delivery::Sms { part: None, .. })
        ));
    }

    #[test]
    fn too_many_parts_for_udh_or_sar() {
        let text = "a".repeat(153 * 256);
        for method in [LongMethod::Udh, LongMethod::Sar] {
            let e = encode_text(
                &text,
                Encoding::Gsm7,
                options(method, CodingPolicy::Gsm7, false),
                1,
            )
            .unwrap_err();
            assert_eq!(
                e,
                ContentError::Unencodable(Gsm7Error::TooManyParts {
                    needed: 256,
                    max: 255
                })
            );
        }
        let payload = options(LongMethod::Payload, CodingPolicy::Gsm7, false);
        let c = encode_text(&text, Encoding::Gsm7, payload, 1).unwrap();
        assert_eq!(c[0].message_payload.as_ref().unwrap().len(), 153 * 256);
        let e = encode_text(&"a".repeat(65_536), Encoding::Gsm7, payload, 1).unwrap_err();
        assert!(matches!(
            e,
            ContentError::TooLong {
                octets: 65_536,
                max: 65_535,
                ..
            }
        ));
        let e = encode_text("Привет", Encoding::Gsm7, payload, 1).unwrap_err();
        assert!(matches!(
            e,
            ContentError::Unencodable(Gsm7Error::Unencodable { ch: 'П', index: 0 })
        ));
    }

    #[test]
    fn receipt_with_tlvs_only() {
        let dr = deliver(
            PHONE,
            0x04,
            0,
            b"",
            &[(0x001E, b"abc123\0".to_vec()), (0x0427, vec![2])],
        );
        assert_eq!(
            read_delivery(&dr, false).unwrap(),
            Delivery::Receipt {
                remote_id: "abc123".into(),
                state: Some(ReceiptState::Delivered),
                error: None
            }
        );
        // Network error rendered; unknown message_state gives no state.
        let dr = deliver(
            PHONE,
            0x04,
            0,
            b"",
            &[
                (0x001E, b"abc123\0".to_vec()),
                (0x0427, vec![5]),
                (0x0423, vec![3, 0x00, 0x01]),
            ],
        );
        let (_, state, error) = receipt_of(read_delivery(&dr, false).unwrap());
        assert_eq!(state, Some(ReceiptState::Undeliverable));
        assert_eq!(error.as_deref(), Some("GSM error 0x0001"));
        let dr = deliver(
            PHONE,
            0x04,
            0,
            b"",
            &[(0x001E, b"x\0".to_vec()), (0x0427, vec![42])],
        );
        assert_eq!(receipt_of(read_delivery(&dr, false).unwrap()).1, None);
        // A receipt with nothing to match on.
        let dr = deliver(PHONE, 0x04, 0, b"hello", &[]);
        assert!(matches!(
            read_delivery(&dr, false),
            Err(ContentError::Receipt { .. })
        ));
    }

    /// One TSV row: column name -> cell.
    fn tsv_rows() -> Vec<std::collections::HashMap<&'static str, &'static str>> {
        let mut lines = RECEIPTS.lines();
        let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
        lines
            .filter(|l| !l.is_empty())
            .map(|l| header.iter().copied().zip(l.split('\t')).collect())
            .collect()
    }

    /// `\xHH` escapes of the TSV as octets.
    fn unescape(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = s.as_bytes();
        while let Some((&b, tail)) = rest.split_first() {
            if let Some(hex) = rest.strip_prefix(b"\\x").and_then(|r| r.get(..2))
                && let Ok(v) = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16)
            {
                out.push(v);
                rest = &rest[4..];
            } else {
                out.push(b);
                rest = tail;
            }
        }
        out
    }

    #[test]
    fn receipt_with_text_only() {
        let rows = tsv_rows();
        assert_eq!(rows.len(), 20);
        for row in rows {
            let name = row["id"];
            let text = if row["notes"].contains("escaped with \\x") {
                unescape(row["receipt_text"])
            } else {
                row["receipt_text"].as_bytes().to_vec()
            };
            // As short_message, and (SMSCs do both) as message_payload.
            assert!(text.len() <= 254, "{name}");
            let dr = deliver(PHONE, 0x04, 0, &text, &[]);
            let payload_dr = deliver(PHONE, 0x04, 0, b"", &[(0x0424, text.clone())]);
            let data = data_sm(PHONE, 0x04, 0, &[(0x0424, text.clone())]);
            for command in [dr, payload_dr, data] {
                let result = read_delivery(&command, false);
                if name == "ch-invalid-i" {
                    assert!(
                        matches!(result, Err(ContentError::Receipt { .. })),
                        "{name}"
                    );
                    continue;
                }
                let (remote_id, state, error) = receipt_of(result.unwrap());
                if row["exp_id"].is_empty() {
                    // ch-invalid-txt: a strict parser rejects it, receipt.rs tolerates it.
                    assert_eq!(remote_id, "0123456789", "{name}");
                    continue;
                }
                assert_eq!(remote_id, row["exp_id"], "{name}");
                assert_eq!(state, ReceiptState::from_stat(row["exp_stat"]), "{name}");
                let err: u32 = row["exp_err"].parse().unwrap();
                assert_eq!(error.is_some(), err != 0, "{name} {error:?}");
            }
        }
        // The error as written.
        let dr = deliver(PHONE, 0x04, 0, b"id:9 stat:UNDELIV err:0a1 text:x", &[]);
        let (_, state, error) = receipt_of(read_delivery(&dr, false).unwrap());
        assert_eq!(state, Some(ReceiptState::Undeliverable));
        assert_eq!(error.as_deref(), Some("receipt err:0a1"));
        // A UCS-2 receipt text.
        let ucs2: Vec<u8> = gsm7::ucs2_to_be_bytes(&gsm7::to_ucs2("id:77 stat:DELIVRD err:000"));
        let dr = deliver(PHONE, 0x04, 8, &ucs2, &[]);
        assert_eq!(
            receipt_of(read_delivery(&dr, false).unwrap()),
            ("77".into(), Some(ReceiptState::Delivered), None)
        );
    }

    #[test]
    fn receipt_with_tlvs_and_text() {
        // TLVs win over the text: receipted_message_id "38601fa" is the hex of id 0059113978.
        let (remote_id, state, error) =
            receipt_of(read_delivery(&vector("smpp-35-"), false).unwrap());
        assert_eq!(remote_id, "38601fa");
        assert_eq!(state, Some(ReceiptState::Delivered));
        assert_eq!(error, None);
        let text = b"id:0059113978 sub:001 dlvrd:001 submit date:1002101730 done date:1002101731 stat:DELIVRD err:000 text:hi";
        let dr = deliver(
            PHONE,
            0x04,
            0,
            text,
            &[(0x001E, b"other\0".to_vec()), (0x0427, vec![8])],
        );
        let (remote_id, state, _) = receipt_of(read_delivery(&dr, false).unwrap());
        assert_eq!(remote_id, "other");
        assert_eq!(state, Some(ReceiptState::Rejected));
        // message_state absent: the text's stat.
        let dr = deliver(PHONE, 0x04, 0, text, &[(0x001E, b"other\0".to_vec())]);
        assert_eq!(
            receipt_of(read_delivery(&dr, false).unwrap()).1,
            Some(ReceiptState::Delivered)
        );
    }

    #[test]
    fn receipt_with_esm_class_0_but_tlvs() {
        let dr = deliver(
            PHONE,
            0x00,
            0,
            b"hello",
            &[(0x001E, b"m-1\0".to_vec()), (0x0427, vec![3])],
        );
        assert_eq!(
            receipt_of(read_delivery(&dr, false).unwrap()),
            ("m-1".into(), Some(ReceiptState::Expired), None)
        );
        // One of the two TLVs alone does not make a receipt.
        let mo = deliver(PHONE, 0x00, 0, b"hello", &[(0x001E, b"m-1\0".to_vec())]);
        assert!(matches!(
            read_delivery(&mo, false),
            Ok(Delivery::Sms { .. })
        ));
        // The other esm_class receipt types.
        for esm in [0x08, 0x10, 0x20, 0x85] {
            let dr = deliver(PHONE, esm, 0, b"id:5 stat:ENROUTE", &[]);
            assert_eq!(
                receipt_of(read_delivery(&dr, false).unwrap()),
                ("5".into(), Some(ReceiptState::Enroute), None),
                "{esm:#x}"
            );
        }
    }

    #[test]
    fn data_sm_receipt_and_message() {
        let dr = data_sm(
            PHONE,
            0x04,
            0,
            &[
                (0x0427, vec![2]),
                (0x001E, b"DS-9\0".to_vec()),
                (0x0423, vec![8, 0x01, 0x00]),
            ],
        );
        assert_eq!(
            receipt_of(read_delivery(&dr, false).unwrap()),
            (
                "DS-9".into(),
                Some(ReceiptState::Delivered),
                Some("message center error 0x0100".into())
            )
        );
        let pdu = sms_of(&dr).unwrap();
        assert!(pdu.content.short_message.is_empty());
        assert_eq!(pdu.network_error_code, Some([8, 1, 0]));
        // Corpus data_sm: a message in message_payload.
        assert_eq!(
            read_delivery(&vector("smpp-50-"), false).unwrap(),
            Delivery::Sms {
                from: "+5552710000".into(),
                to: "9695".into(),
                text: "Test".into(),
                part: None
            }
        );
    }

    #[test]
    fn data_coding_0_is_read_as_latin1_on_links_whose_smsc_writes_it_so() {
        let mo = deliver(PHONE, 0, 0, b"Hi @ caf\xE9 $5", &[]);
        let text = |dc0: Dc0| match read_delivery(&mo, dc0).unwrap() {
            Delivery::Sms { text, .. } => text,
            other => panic!("{other:?}"),
        };
        assert_eq!(text(Dc0::Latin1), "Hi @ café $5");
        // Read as GSM 03.38, 0x40 is "¡" and 0x24 is "¤": what such a link would show.
        assert_eq!(text(Dc0::Gsm7), text(Dc0::from(false)));
        assert_ne!(text(Dc0::Gsm7), "Hi @ café $5");
        // Only data_coding 0 is the SMSC's alphabet: 0xF0 stays GSM 7-bit.
        let flash = deliver(PHONE, 0, 0xF0, b"\x00hi", &[]);
        match read_delivery(&flash, Dc0::Latin1).unwrap() {
            Delivery::Sms { text, .. } => assert_eq!(text, "@hi"),
            other => panic!("{other:?}"),
        }
        // Receipts read the same either way.
        let receipt = deliver(
            PHONE,
            0x04,
            0,
            b"id:0A1B sub:001 dlvrd:001 stat:DELIVRD err:000",
            &[],
        );
        assert_eq!(
            read_delivery(&receipt, Dc0::Latin1).unwrap(),
            read_delivery(&receipt, Dc0::Gsm7).unwrap()
        );
    }

    #[test]
    fn mo_sources_and_codings() {
        let read = |from: Addr, esm: u8, dc: u8, sm: &[u8]| {
            read_delivery(&deliver(from, esm, dc, sm, &[]), false)
        };
        let sms = |from: &str, text: &str| Delivery::Sms {
            from: from.into(),
            to: "Shop".into(),
            text: text.into(),
            part: None,
        };
        // TON 1 gets its '+', once.
        assert_eq!(
            read((1, 1, "393471234567"), 0, 0, b"hi").unwrap(),
            sms("+393471234567", "hi")
        );
        assert_eq!(
            read((1, 1, "+393471234567"), 0, 0, b"hi").unwrap(),
            sms("+393471234567", "hi")
        );
        assert_eq!(
            read((2, 1, "3471234567"), 0, 0, b"hi").unwrap(),
            sms("3471234567", "hi")
        );
        assert_eq!(
            read((5, 0, "Bank"), 0, 0, b"hi").unwrap(),
            sms("Bank", "hi")
        );
        assert_eq!(read((1, 1, ""), 0, 0, b"hi").unwrap(), sms("", "hi"));
        let p = "+39347";
        // data_coding 8: UTF-16BE, surrogates, odd trailing octet ignored.
        let ucs2 = [0x04, 0x1F, 0xD8, 0x3D, 0xDC, 0x4B, 0x00];
        assert_eq!(read((1, 1, "39347"), 0, 8, &ucs2).unwrap(), sms(p, "П👋"));
        // data_coding 3: Latin-1.
        assert_eq!(
            read((1, 1, "39347"), 0, 3, b"caf\xE9 \xA3").unwrap(),
            sms(p, "café £")
        );
        // data_coding 1: IA5.
        assert_eq!(
            read((1, 1, "39347"), 0, 1, b"a@b$_").unwrap(),
            sms(p, "a@b$_")
        );
        // data_coding 0: GSM 03.38 septets, extension table included.
        assert_eq!(
            read((1, 1, "39347"), 0, 0, b"\x00\x02\x1B\x65\x11").unwrap(),
            sms(p, "@$€_")
        );
        // 0xF0: GSM 7-bit class 0 (flash); 0xF4: 8-bit data; 0x18: general group UCS-2.
        assert_eq!(
            read((1, 1, "39347"), 0, 0xF0, b"\x00hi").unwrap(),
            sms(p, "@hi")
        );
        assert_eq!(
            read((1, 1, "39347"), 0, 0xF4, b"\x00\xFF").unwrap(),
            sms(p, "\0ÿ")
        );
        assert_eq!(
            read((1, 1, "39347"), 0, 0x18, b"\x00h\x00i").unwrap(),
            sms(p, "hi")
        );
        // 2 (8-bit) and unknown ones as Latin-1.
        for dc in [2, 4, 5, 0x0E, 0x2C, 0x84, 0xBF] {
            assert_eq!(
                read((1, 1, "39347"), 0, dc, b"\x00\xE9").unwrap(),
                sms(p, "\0é"),
                "{dc:#x}"
            );
        }
        // Packed GSM per the link.
        let mo = deliver((1, 1, "39347"), 0, 0, &[0xE8, 0x32, 0x9B, 0xFD, 0x06], &[]);
        assert_eq!(read_delivery(&mo, true).unwrap(), sms(p, "hello"));

        // UDH stripped, concat read; other IEs skipped.
        let sm = [
            0x09, 0x24, 0x01, 0x03, 0x08, 0x04, 0xAB, 0xCD, 0x03, 0x02, b'h', b'i',
        ];
        let Delivery::Sms { text, part, .. } = read((1, 1, "39347"), 0x40, 0, &sm).unwrap() else {
            panic!()
        };
        assert_eq!(text, "hi");
        assert_eq!(
            part,
            Some(InboundPart {
                reference: 0xABCD,
                total: 3,
                seq: 2
            })
        );
        // A concatenation IE saying 1 of 1 is no part.
        let sm = [0x05, 0x00, 0x03, 0x01, 0x01, 0x01, b'h'];
        assert_eq!(read((1, 1, "39347"), 0x40, 0, &sm).unwrap(), sms(p, "h"));
        // UDHI with no data at all.
        assert_eq!(read((1, 1, "39347"), 0x40, 0, b"").unwrap(), sms(p, ""));
        // Corpus: data_coding 1 with a UDH.
        let pdu = sms_of(&vector("smpp-60-")).unwrap();
        assert_eq!(decode_sms(&pdu.content, false).unwrap().text, "t{st");
    }

    #[test]
    fn malformed_udh_is_an_error_not_a_panic() {
        let cases: [&[u8]; 5] = [
            &[0x05, 0x00, 0x03],             // UDHL beyond the data
            &[0xFF],                         // ditto, nothing after it
            &[0x03, 0x00, 0x05, 0x01],       // IE longer than the header
            &[0x01, 0x00],                   // IE without its length octet
            &[0x04, 0x00, 0x03, 0x01, 0x02], // IE cut by the header's end
        ];
        for sm in cases {
            let mo = deliver(PHONE, 0x40, 0, sm, &[]);
            assert!(
                matches!(read_delivery(&mo, false), Err(ContentError::Udh { .. })),
                "{sm:02X?}"
            );
            let c = SmsContent {
                esm_class: 0x40,
                data_coding: 8,
                message_payload: Some(sm.to_vec()),
                ..SmsContent::default()
            };
            assert!(matches!(
                decode_sms(&c, true),
                Err(ContentError::Udh { .. })
            ));
        }
    }

    #[test]
    fn not_sms() {
        let link = frame::enquire_link(3);
        assert_eq!(sms_of(&link), None);
        assert_eq!(
            read_delivery(&link, false),
            Err(ContentError::NotSms {
                command: "enquire_link"
            })
        );
        // A submit_sm is an SMS but not a delivery.
        let submit_sm = vector("smpp-36-");
        assert!(sms_of(&submit_sm).is_some());
        assert_eq!(
            read_delivery(&submit_sm, false),
            Err(ContentError::NotSms {
                command: "submit_sm"
            })
        );
    }

    #[test]
    fn addresses() {
        let a = |ton, npi, addr: &str| Address {
            ton,
            npi,
            addr: addr.into(),
        };
        assert_eq!(
            address_for("+393471234567").unwrap(),
            a(1, 1, "393471234567")
        );
        assert_eq!(
            address_for("393471234567").unwrap(),
            a(1, 1, "393471234567")
        );
        assert_eq!(address_for("40404").unwrap(), a(3, 0, "40404"));
        assert_eq!(address_for("12345678").unwrap(), a(3, 0, "12345678"));
        assert_eq!(address_for("123456789").unwrap(), a(1, 1, "123456789"));
        assert_eq!(address_for("MyShop").unwrap(), a(5, 0, "MyShop"));
        assert_eq!(address_for("Shop 24-7").unwrap(), a(5, 0, "Shop 24-7"));
        assert_eq!(address_for("ABCDEFGHIJK").unwrap(), a(5, 0, "ABCDEFGHIJK"));
        assert_eq!(address_for("+1abc").unwrap(), a(5, 0, "+1abc"));
        assert_eq!(address_for("").unwrap(), a(0, 0, ""));
        for bad in [
            "ABCDEFGHIJKL",
            "Café",
            "+123456789012345678901",
            "123456789012345678901",
        ] {
            assert!(
                matches!(address_for(bad), Err(ContentError::Address { .. })),
                "{bad}"
            );
        }
        // What address_for gives, submit_sm takes.
        for ok in [
            "+393471234567",
            "40404",
            "ABCDEFGHIJK",
            "+12345678901234567890",
            "",
        ] {
            let fields = SubmitFields {
                dest: address_for(ok).unwrap(),
                ..SubmitFields::default()
            };
            assert!(frame::submit_sm(1, &fields).is_ok(), "{ok}");
        }
    }

    #[test]
    fn options_in_config_form() {
        let m: Vec<LongMethod> = serde_json::from_str(r#"["udh","sar","payload"]"#).unwrap();
        assert_eq!(m, [LongMethod::Udh, LongMethod::Sar, LongMethod::Payload]);
        let c: Vec<CodingPolicy> = serde_json::from_str(r#"["gsm7","latin1","ucs2"]"#).unwrap();
        assert_eq!(
            c,
            [CodingPolicy::Gsm7, CodingPolicy::Latin1, CodingPolicy::Ucs2]
        );
        assert_eq!(
            serde_json::to_string(&LongMethod::Payload).unwrap(),
            r#""payload""#
        );
        assert_eq!(
            ContentOptions::default(),
            options(LongMethod::Udh, CodingPolicy::Gsm7, false)
        );
    }

    // ---- corpus and robustness ------------------------------------------------------

    /// Characters GSM 03.38 and ASCII write with the same code, so an ASCII view of
    /// data_coding 0 octets made of them is also their GSM text.
    fn gsm_equals_ascii(text: &str) -> bool {
        text.chars()
            .all(|c| c.is_ascii_alphanumeric() || " !\"#%&'()*+,-./:;<=>?\n".contains(c))
    }

    #[test]
    fn corpus_vectors() {
        let mut seen = 0;
        for v in vectors() {
            let id = v["id"].as_str().unwrap();
            let d = &v["decoded"];
            let name = d["command"].as_str().unwrap_or("");
            if !matches!(name, "deliver_sm" | "data_sm" | "submit_sm") {
                // Other PDUs, when they decode at all, carry no SMS.
                if let Ok(Frame::Pdu(c)) =
                    decode_one(&decode_hex(v["pdu_hex"].as_str().unwrap()).unwrap())
                {
                    assert_eq!(sms_of(&c), None, "{id}");
                    assert!(
                        matches!(read_delivery(&c, false), Err(ContentError::NotSms { .. })),
                        "{id}"
                    );
                }
                continue;
            }
            let Ok(Frame::Pdu(command)) =
                decode_one(&decode_hex(v["pdu_hex"].as_str().unwrap()).unwrap())
            else {
                continue;
            };
            seen += 1;
            let pdu = sms_of(&command).unwrap_or_else(|| panic!("{id}"));
            let hex8 = |field: &str| {
                u8::from_str_radix(d[field].as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
            };
            assert_eq!(pdu.content.esm_class, hex8("esm_class"), "{id}");
            assert_eq!(pdu.content.data_coding, hex8("data_coding"), "{id}");
            assert_eq!(pdu.registered_delivery, hex8("registered_delivery"), "{id}");
            assert_eq!(pdu.source.addr, d["source_addr"].as_str().unwrap(), "{id}");
            assert_eq!(
                pdu.dest.addr,
                d["destination_addr"].as_str().unwrap(),
                "{id}"
            );
            assert_eq!(
                u64::from(pdu.source.ton),
                d["source_addr_ton"].as_u64().unwrap(),
                "{id}"
            );
            if let Some(hex) = d["short_message_hex"].as_str() {
                assert_eq!(pdu.content.short_message, decode_hex(hex).unwrap(), "{id}");
            }
            let tlv = |name: &str| {
                d["tlvs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|t| t["name"] == name)
                    .cloned()
            };
            if let Some(t) = tlv("message_payload") {
                assert_eq!(
                    pdu.content.message_payload.as_deref(),
                    Some(&decode_hex(t["value_hex"].as_str().unwrap()).unwrap()[..]),
                    "{id}"
                );
            }
            if let Some(t) = tlv("receipted_message_id") {
                assert_eq!(
                    pdu.receipted_message_id.as_deref(),
                    t["value_ascii"].as_str(),
                    "{id}"
                );
            }
            let decoded = decode_sms(&pdu.content, false);
            // Where the corpus shows the text (and it reads the same in GSM and ASCII).
            let ascii = match tlv("message_payload") {
                Some(t) => t["value_ascii"].as_str().map(str::to_owned),
                None => d["short_message_ascii"].as_str().map(str::to_owned),
            };
            if let Some(ascii) = ascii
                && pdu.content.esm_class & ESM_UDHI == 0
                && (matches!(pdu.content.data_coding, 1 | 3) || gsm_equals_ascii(&ascii))
            {
                assert_eq!(decoded.as_ref().unwrap().text, ascii, "{id}");
            }
            let delivery = read_delivery(&command, false);
            if name == "submit_sm" {
                assert!(matches!(delivery, Err(ContentError::NotSms { .. })), "{id}");
                continue;
            }
            let delivery = delivery.unwrap_or_else(|e| panic!("{id}: {e}"));
            if pdu.content.esm_class & ESM_TYPE_MASK == 0x04 {
                let (remote_id, state, error) = receipt_of(delivery);
                if let Some(t) = tlv("receipted_message_id") {
                    assert_eq!(remote_id, t["value_ascii"].as_str().unwrap(), "{id}");
                }
                assert!(state.is_some(), "{id}");
                // Error only where the receipt says so (smpp-44: err:107; smpp-82: err:001).
                assert_eq!(
                    error.is_some(),
                    matches!(&id[..8], "smpp-44-" | "smpp-82-"),
                    "{id}: {error:?}"
                );
            } else {
                assert!(matches!(delivery, Delivery::Sms { .. }), "{id}");
            }
        }
        assert!(seen >= 20, "{seen}");
        // Vectors with more to say.
        let r = receipt_of(read_delivery(&vector("smpp-58-"), false).unwrap());
        assert_eq!(r, ("1d305b4c".into(), Some(ReceiptState::Delivered), None));
        let r = receipt_of(read_delivery(&vector("smpp-44-"), false).unwrap());
        assert_eq!(
            r,
            (
                "94251430923".into(),
                Some(ReceiptState::Accepted),
                Some("receipt err:107".into())
            )
        );
        let d = decode_sms(&sms_of(&vector("smpp-76-")).unwrap().content, false).unwrap();
        assert_eq!(d.text, "§");
    }

    /// Everything this module does with a PDU from a peer.
    fn exercise(bytes: &[u8]) {
        if let Ok(Frame::Pdu(command)) = decode_one(bytes) {
            if let Some(pdu) = sms_of(&command) {
                let _ = decode_sms(&pdu.content, false);
                let _ = decode_sms(&pdu.content, true);
            }
            let _ = read_delivery(&command, false);
            let _ = read_delivery(&command, true);
        }
    }

    #[test]
    fn robust_against_mutated_vectors() {
        for v in vectors() {
            let bytes = decode_hex(v["pdu_hex"].as_str().unwrap()).unwrap();
            for pos in 16..bytes.len() {
                for value in [
                    0x00,
                    0xFF,
                    0x40,
                    0x08,
                    bytes[pos] ^ 0x40,
                    bytes[pos].wrapping_add(1),
                ] {
                    let mut m = bytes.clone();
                    m[pos] = value;
                    exercise(&m);
                }
            }
        }
    }

    #[test]
    fn robust_against_random_content() {
        let mut rng = fastrand::Rng::with_seed(0x0DDC_0DE5);
        for _ in 0..20_000 {
            let len = rng.usize(..40);
            let data: Vec<u8> = (0..len)
                .map(|_| if rng.bool() { rng.u8(..8) } else { rng.u8(..) })
                .collect();
            let c = SmsContent {
                esm_class: if rng.bool() { 0x40 } else { rng.u8(..) },
                data_coding: rng.u8(..),
                short_message: data.clone(),
                message_payload: rng.bool().then(|| data.clone()),
                sar: rng.bool().then(|| InboundPart {
                    reference: rng.u16(..),
                    total: rng.u8(..4),
                    seq: rng.u8(..4),
                }),
            };
            for packed in [false, true] {
                if let Ok(d) = decode_sms(&c, packed)
                    && let Some(p) = d.part
                {
                    assert!(p.total > 1 && (1..=p.total).contains(&p.seq));
                }
            }
            let mut tlvs = Vec::new();
            for _ in 0..rng.usize(..4) {
                let tag = [0x001E, 0x0427, 0x0423, 0x0424, 0x020C, 0x020E, 0x020F][rng.usize(..7)];
                let value: Vec<u8> = (0..rng.usize(..5)).map(|_| rng.u8(..)).collect();
                tlvs.push((tag, value));
            }
            let sm = c
                .short_message
                .get(..c.short_message.len().min(254))
                .unwrap();
            let mut body = vec![0];
            push_addr(&mut body, PHONE);
            push_addr(&mut body, SHOP);
            body.extend([c.esm_class, 0, 0, 0, 0, 0, 0, c.data_coding, 0]);
            body.push(u8::try_from(sm.len()).unwrap());
            body.extend(sm);
            push_tlvs(&mut body, &tlvs);
            exercise(&wire(0x0000_0005, &body));
        }
    }
}
