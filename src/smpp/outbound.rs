//! What a queued message is sent as on an SMPP link: the submit_sm of each part, shaped by the
//! link's settings (addresses with their TON/NPI, data_coding, long-message method, receipts,
//! validity). Pure: no I/O, and the clock is passed in.

use std::ops::RangeInclusive;

use crate::config::SmppClientSettings;
use crate::message::{Message, Millis};

use super::content::{self, ContentOptions, LongMethod};
use super::frame::{Address, SubmitFields};

/// One submit_sm and the parts of the message it carries (one, or all of them when the whole
/// text goes in a message_payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartSubmit {
    /// The message's parts (0-based) this submit_sm carries.
    pub parts: RangeInclusive<u8>,
    /// The submit_sm.
    pub fields: SubmitFields,
}

/// The submit_sm for `parts_to_send` of `message`, in part order. Fails (for good: the same
/// message on the same link would fail again) when the text or an address cannot be encoded.
pub fn submits_for(
    message: &Message,
    parts_to_send: &[u8],
    settings: &SmppClientSettings,
    now: Millis,
) -> Result<Vec<PartSubmit>, String> {
    let options = ContentOptions {
        long_method: settings.long_messages,
        coding: settings.data_coding,
        gsm7_packed: settings.gsm7_packed,
    };
    let contents = content::encode_text(
        &message.text,
        message.encoding,
        options,
        concat_reference(message),
    )
    .map_err(|e| e.to_string())?;
    let source = source_address(
        message.from.as_deref().or(settings.source.as_deref()),
        settings,
    )?;
    let dest = Address {
        ton: settings.dest_ton,
        npi: settings.dest_npi,
        addr: message.to.trim_start_matches('+').to_string(),
    };
    let validity_period = validity(message.expires_at, now);
    let fields = |content: content::SmsContent| SubmitFields {
        service_type: settings.service_type.clone(),
        source: source.clone(),
        dest: dest.clone(),
        esm_class: content.esm_class,
        registered_delivery: u8::from(settings.registered_delivery),
        data_coding: content.data_coding,
        validity_period: validity_period.clone(),
        // The queue holds a message until its send_at: when it is submitted it is due.
        schedule_delivery_time: String::new(),
        short_message: content.short_message,
        message_payload: content.message_payload,
        sar_msg_ref_num: content.sar.map(|p| p.reference),
        sar_total_segments: content.sar.map(|p| p.total),
        sar_segment_seqnum: content.sar.map(|p| p.seq),
    };
    let total = message.parts.len();
    if contents.len() == 1 && total > 1 && settings.long_messages == LongMethod::Payload {
        // One message_payload carries the parts still to send. Parts sent before (by another
        // link, or before the method was changed) would be sent again: the whole text is
        // one unit here.
        let (Some(&first), Some(&last)) = (parts_to_send.iter().min(), parts_to_send.iter().max())
        else {
            return Ok(Vec::new());
        };
        let content = contents.into_iter().next().unwrap_or_default();
        return Ok(vec![PartSubmit {
            parts: first..=last,
            fields: fields(content),
        }]);
    }
    if contents.len() != total {
        return Err(format!(
            "the text is {} SMS on this link but was stored as {total}",
            contents.len()
        ));
    }
    let mut contents: Vec<Option<content::SmsContent>> = contents.into_iter().map(Some).collect();
    parts_to_send
        .iter()
        .map(|&part| {
            let content = contents
                .get_mut(usize::from(part))
                .and_then(Option::take)
                .ok_or_else(|| format!("part {part} does not exist or is listed twice"))?;
            Ok(PartSubmit {
                parts: part..=part,
                fields: fields(content),
            })
        })
        .collect()
}

/// A reference shared by a message's parts, the same on every attempt so parts resent later
/// join those sent before; 8-bit, as every handset reads that form.
fn concat_reference(message: &Message) -> u16 {
    u16::from(message.id.to_bytes().iter().fold(0u8, |a, b| a ^ b))
}

/// The sender's address: the automatic TON/NPI of [`content::address_for`], unless the link
/// sets its own.
fn source_address(sender: Option<&str>, settings: &SmppClientSettings) -> Result<Address, String> {
    let mut address =
        content::address_for(sender.unwrap_or_default()).map_err(|e| e.to_string())?;
    if let Some(ton) = settings.source_ton {
        address.ton = ton;
    }
    if let Some(npi) = settings.source_npi {
        address.npi = npi;
    }
    Ok(address)
}

/// validity_period in SMPP absolute form (UTC), or "" (the SMSC's default) when the message
/// has no time left or its end cannot be written.
fn validity(expires_at: Millis, now: Millis) -> String {
    if expires_at <= now {
        return String::new();
    }
    super::time::format(expires_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::gsm7::{self, Encoding};
    use crate::message::{Kind, MessageId, PartState, Status};
    use crate::smpp::content::CodingPolicy;

    fn message(text: &str, from: Option<&str>) -> Message {
        let (encoding, parts) = gsm7::count_parts(text);
        Message {
            id: MessageId(ulid::Ulid::from_parts(1_700_000_000_000, 42)),
            to: "+393471234567".into(),
            from: from.map(Into::into),
            text: text.into(),
            kind: Kind::Transactional,
            reference: None,
            encoding,
            created_at: 0,
            send_at: None,
            expires_at: 1_700_000_000_000 + 3_600_000,
            status: Status::Sending,
            due_at: 0,
            attempts: 1,
            channel: None,
            possible_duplicate: false,
            parts: vec![
                PartState {
                    status: Status::Sending,
                    remote_id: None,
                };
                parts
            ],
            history: Vec::new(),
            idempotency_key: None,
            origin: None,
            options: Default::default(),
        }
    }

    fn link() -> SmppClientSettings {
        SmppClientSettings {
            name: "carrier".into(),
            host: "127.0.0.1".into(),
            system_id: "shop".into(),
            ..SmppClientSettings::default()
        }
    }

    const NOW: Millis = 1_700_000_000_000;

    #[test]
    fn a_short_text_is_one_submit_with_receipts_and_validity() {
        let m = message("Your order 1234 has shipped", Some("Shop"));
        let submits = submits_for(&m, &[0], &link(), NOW).unwrap();
        assert_eq!(submits.len(), 1);
        let f = &submits[0].fields;
        assert_eq!(submits[0].parts, 0..=0);
        assert_eq!(
            (f.source.ton, f.source.npi, f.source.addr.as_str()),
            (5, 0, "Shop")
        );
        assert_eq!(
            (f.dest.ton, f.dest.npi, f.dest.addr.as_str()),
            (1, 1, "393471234567")
        );
        assert_eq!(
            (f.esm_class, f.data_coding, f.registered_delivery),
            (0, 0, 1)
        );
        assert_eq!(f.short_message, b"Your order 1234 has shipped");
        // 2023-11-14 22:13:20 UTC plus one hour.
        assert_eq!(f.validity_period, "231114231320000+");
        assert!(f.schedule_delivery_time.is_empty());
    }

    #[test]
    fn senders_get_the_ton_npi_their_form_needs_unless_the_link_says() {
        let mut settings = link();
        let source = |m: &Message, s: &SmppClientSettings| {
            submits_for(m, &[0], s, NOW).unwrap()[0]
                .fields
                .source
                .clone()
        };
        let international = source(&message("hi", Some("+4915123456789")), &settings);
        assert_eq!((international.ton, international.npi), (1, 1));
        assert_eq!(international.addr, "4915123456789");
        let short = source(&message("hi", Some("40123")), &settings);
        assert_eq!((short.ton, short.npi), (3, 0));
        settings.source = Some("+390212345678".into());
        let default = source(&message("hi", None), &settings);
        assert_eq!(default.addr, "390212345678");
        settings.source_ton = Some(0);
        settings.source_npi = Some(0);
        let forced = source(&message("hi", None), &settings);
        assert_eq!((forced.ton, forced.npi), (0, 0));
        assert!(
            submits_for(
                &message("hi", Some("A sender too long")),
                &[0],
                &link(),
                NOW
            )
            .is_err()
        );
    }

    #[test]
    fn long_texts_go_as_udh_parts_sar_parts_or_one_payload() {
        let text = "x".repeat(400);
        let m = message(&text, None);
        assert_eq!(m.parts.len(), 3);
        let mut settings = link();
        let udh = submits_for(&m, &[0, 1, 2], &settings, NOW).unwrap();
        assert_eq!(udh.len(), 3);
        assert!(udh.iter().all(|s| s.fields.esm_class == 0x40));
        assert_eq!(udh[1].parts, 1..=1);
        // Parts sent on an earlier attempt are not sent again.
        assert_eq!(
            submits_for(&m, &[2], &settings, NOW).unwrap()[0].parts,
            2..=2
        );
        settings.long_messages = LongMethod::Sar;
        let sar = submits_for(&m, &[0, 1, 2], &settings, NOW).unwrap();
        assert_eq!(sar.len(), 3);
        assert_eq!(
            (
                sar[2].fields.sar_total_segments,
                sar[2].fields.sar_segment_seqnum
            ),
            (Some(3), Some(3))
        );
        assert_eq!(sar[0].fields.esm_class, 0);
        settings.long_messages = LongMethod::Payload;
        let payload = submits_for(&m, &[0, 1, 2], &settings, NOW).unwrap();
        assert_eq!(payload.len(), 1);
        assert_eq!(payload[0].parts, 0..=2);
        assert_eq!(
            payload[0].fields.message_payload.as_deref(),
            Some(text.as_bytes())
        );
    }

    #[test]
    fn the_coding_policy_picks_data_coding() {
        let mut settings = link();
        settings.data_coding = CodingPolicy::Latin1;
        let latin = submits_for(
            &message("Prenotazione è confermata", None),
            &[0],
            &settings,
            NOW,
        )
        .unwrap();
        assert_eq!(latin[0].fields.data_coding, 3);
        let ucs2 = submits_for(&message("Заказ отправлен", None), &[0], &settings, NOW).unwrap();
        assert_eq!(ucs2[0].fields.data_coding, 8);
        assert_eq!(message("Заказ отправлен", None).encoding, Encoding::Ucs2);
    }

    #[test]
    fn no_validity_is_sent_for_a_message_past_its_end() {
        let m = message("late", None);
        let f = &submits_for(&m, &[0], &link(), m.expires_at + 1).unwrap()[0].fields;
        assert!(f.validity_period.is_empty());
    }
}
