//! Receipts and customer replies waiting in an account's outbox, as the deliver_sm PDUs the
//! integrator receives; pure.
//!
//! A receipt carries the SMPP 3.4 Appendix B text ("id:... sub:001 dlvrd:... stat:...") and
//! the receipted_message_id / message_state TLVs, so clients that read either find the id
//! their submit_sm_resp gave. A reply longer than one SMS goes as the account's
//! `long_messages` says: UDH parts, SAR parts, or one message_payload.

#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use rusmpp::Command;

use super::content::{self, CodingPolicy, ContentOptions};
use super::frame::{self, Address, SubmitFields};
use crate::codec::{gsm7, receipt};
use crate::config::{DefaultAlphabet, SmppAccountSettings};
use crate::message::{MessageId, OriginAddress, Status};
use crate::store::OutboxItem;

/// esm_class of an SMSC delivery receipt.
const ESM_RECEIPT: u8 = 0x04;

/// The deliver_sm PDUs (sequence numbers unset) that bring `item` to `account`, in order.
///
/// # Errors
///
/// Why the item cannot be delivered (a text no coding can carry, a field SMPP cannot hold):
/// it never will be, so the caller drops it with this reason in the log.
pub fn commands_for(
    item: &OutboxItem,
    account: &SmppAccountSettings,
) -> Result<Vec<Command>, String> {
    match item {
        OutboxItem::Receipt {
            message_id,
            status,
            submitted_at,
            done_at,
            reason: _,
            parts: _,
            text_head,
            source,
            dest,
        } => receipt_command(
            *message_id,
            *status,
            (*submitted_at, *done_at),
            text_head,
            source,
            dest,
        )
        .map(|c| vec![c]),
        OutboxItem::Reply {
            inbound_id,
            from,
            to,
            text,
            ..
        } => reply_commands(*inbound_id, from, to, text, account),
        OutboxItem::Event { .. } | OutboxItem::Callback { .. } => {
            Err("a webhook event is not for an SMPP account".into())
        }
    }
}

/// The receipt's stat: word, message_state TLV value and err: code for a final status.
pub fn receipt_stat(status: Status) -> (&'static str, u8, &'static str) {
    match status {
        Status::Delivered => ("DELIVRD", 2, "000"),
        Status::Expired => ("EXPIRED", 3, "000"),
        Status::Canceled => ("DELETED", 4, "000"),
        // Not final, so never in a receipt; read as "on its way" should one ever be.
        Status::Queued | Status::Sending | Status::Sent => ("ENROUTE", 1, "000"),
        Status::Failed => ("UNDELIV", 5, "001"),
    }
}

fn address(a: &OriginAddress) -> Address {
    Address {
        ton: a.ton,
        npi: a.npi,
        addr: a.addr.clone(),
    }
}

fn receipt_command(
    id: MessageId,
    status: Status,
    (submitted_at, done_at): (i64, i64),
    text_head: &str,
    source: &OriginAddress,
    dest: &OriginAddress,
) -> Result<Command, String> {
    let (stat, state, err) = receipt_stat(status);
    let id = id.to_string();
    let text = format!(
        "id:{id} sub:001 dlvrd:{} submit date:{} done date:{} stat:{stat} err:{err} text:{}",
        if status == Status::Delivered {
            "001"
        } else {
            "000"
        },
        receipt::date(submitted_at.div_euclid(1000)),
        receipt::date(done_at.div_euclid(1000)),
        receipt::text_head(text_head),
    );
    // A receipt goes from the recipient back to the sender of the submit.
    let fields = SubmitFields {
        source: address(dest),
        dest: address(source),
        esm_class: ESM_RECEIPT,
        short_message: text.into_bytes(),
        ..SubmitFields::default()
    };
    frame::deliver_sm_with_tlvs(0, &fields, Some(&id), Some(state), None).map_err(|e| e.to_string())
}

/// An address for a number or sender as parla stores it; one SMPP cannot carry as such (an
/// overlong sender) goes as TON/NPI 0 cut to the 20 characters the field holds.
fn address_of(number: &str) -> Address {
    content::address_for(number).unwrap_or_else(|_| Address {
        ton: 0,
        npi: 0,
        addr: number
            .chars()
            .filter(char::is_ascii_graphic)
            .take(20)
            .collect(),
    })
}

fn reply_commands(
    id: MessageId,
    from: &str,
    to: &str,
    text: &str,
    account: &SmppAccountSettings,
) -> Result<Vec<Command>, String> {
    let options = ContentOptions {
        long_method: account.long_messages,
        coding: match account.default_alphabet {
            DefaultAlphabet::Gsm7 => CodingPolicy::Gsm7,
            DefaultAlphabet::Latin1 => CodingPolicy::Latin1,
        },
        gsm7_packed: false,
    };
    let (encoding, _) = gsm7::count_parts(text);
    // The same reference for every part, derived from the stored id, so parts resent after a
    // lost connection join the ones that arrived.
    let reference = u16::from(id.to_bytes().iter().fold(0u8, |a, b| a ^ b));
    let contents =
        content::encode_text(text, encoding, options, reference).map_err(|e| e.to_string())?;
    let source = address_of(from);
    let dest = address_of(to);
    contents
        .into_iter()
        .map(|c| {
            frame::deliver_sm(0, &content::fields_of(&source, &dest, c)).map_err(|e| e.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smpp::content::{Delivery, LongMethod, read_delivery};
    use crate::smpp::frame::{decode_one, encode_to_vec};

    fn wire(command: &Command) -> Command {
        let bytes = encode_to_vec(command).unwrap();
        match decode_one(&bytes).unwrap() {
            frame::Frame::Pdu(c) => c,
            other => panic!("{other:?}"),
        }
    }

    fn id() -> MessageId {
        MessageId(ulid::Ulid::from_parts(1_790_000_000_000, 7))
    }

    fn receipt(status: Status) -> OutboxItem {
        OutboxItem::Receipt {
            message_id: id(),
            status,
            submitted_at: 1_790_000_000_000,
            done_at: 1_790_000_060_000,
            reason: None,
            parts: 1,
            text_head: "Your order ¥ shipped today".into(),
            source: OriginAddress {
                addr: "MyShop".into(),
                ton: 5,
                npi: 0,
            },
            dest: OriginAddress {
                addr: "393471234567".into(),
                ton: 1,
                npi: 1,
            },
        }
    }

    #[test]
    fn a_receipt_reads_back_as_the_receipt_of_the_submitted_id() {
        let account = SmppAccountSettings::default();
        for (status, state) in [
            (Status::Delivered, receipt::ReceiptState::Delivered),
            (Status::Failed, receipt::ReceiptState::Undeliverable),
            (Status::Expired, receipt::ReceiptState::Expired),
            (Status::Canceled, receipt::ReceiptState::Deleted),
        ] {
            let commands = commands_for(&receipt(status), &account).unwrap();
            assert_eq!(commands.len(), 1);
            let command = wire(&commands[0]);
            let sms = content::sms_of(&command).unwrap();
            // Back from the customer to the shop's sender, as the submit had it.
            assert_eq!(sms.source.addr, "393471234567");
            assert_eq!((sms.source.ton, sms.source.npi), (1, 1));
            assert_eq!(sms.dest.addr, "MyShop");
            assert_eq!(sms.dest.ton, 5);
            assert_eq!(sms.content.esm_class, 0x04);
            let text = String::from_utf8(sms.content.short_message.clone()).unwrap();
            assert!(text.starts_with(&format!("id:{} sub:001", id())), "{text}");
            assert!(text.contains("submit date:2609211413"), "{text}");
            assert!(text.ends_with("text:Your order ? shipped"), "{text}");
            let parsed = receipt::parse(text.as_bytes()).unwrap();
            assert_eq!(parsed.state(), Some(state));
            match read_delivery(&command, false).unwrap() {
                Delivery::Receipt {
                    remote_id,
                    state: read,
                    ..
                } => {
                    assert_eq!(remote_id, id().to_string());
                    assert_eq!(read, Some(state));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    fn reply(text: &str) -> OutboxItem {
        OutboxItem::Reply {
            inbound_id: id(),
            from: "+393471234567".into(),
            to: "4242".into(),
            text: text.into(),
            received_at: 1_790_000_000_000,
            in_reply_to: None,
        }
    }

    fn read_sms(
        command: &Command,
    ) -> (String, String, String, Option<crate::channel::InboundPart>) {
        match read_delivery(&wire(command), false).unwrap() {
            Delivery::Sms {
                from,
                to,
                text,
                part,
            } => (from, to, text, part),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_short_reply_is_one_plain_deliver_sm() {
        let commands =
            commands_for(&reply("Yes, 2 pcs @ 5€"), &SmppAccountSettings::default()).unwrap();
        assert_eq!(commands.len(), 1);
        let (from, to, text, part) = read_sms(&commands[0]);
        assert_eq!(
            (from.as_str(), to.as_str(), text.as_str()),
            ("+393471234567", "4242", "Yes, 2 pcs @ 5€")
        );
        assert_eq!(part, None);
    }

    #[test]
    fn long_replies_go_as_the_account_asks() {
        let long = "Grazie! ".repeat(30);
        let mut account = SmppAccountSettings::default();
        for (method, pdus) in [
            (LongMethod::Udh, 2),
            (LongMethod::Sar, 2),
            (LongMethod::Payload, 1),
        ] {
            account.long_messages = method;
            let commands = commands_for(&reply(&long), &account).unwrap();
            assert_eq!(commands.len(), pdus, "{method:?}");
            let joined: String = commands.iter().map(|c| read_sms(c).2).collect();
            assert_eq!(joined, long, "{method:?}");
            if pdus > 1 {
                let parts: Vec<_> = commands.iter().map(|c| read_sms(c).3.unwrap()).collect();
                assert_eq!(parts[0].reference, parts[1].reference);
                assert_eq!((parts[0].seq, parts[1].seq, parts[0].total), (1, 2, 2));
            }
        }
        // UCS-2 texts too.
        account.long_messages = LongMethod::Udh;
        let cyrillic = "Спасибо за заказ! ".repeat(6);
        let commands = commands_for(&reply(&cyrillic), &account).unwrap();
        assert!(commands.len() > 1);
        let joined: String = commands.iter().map(|c| read_sms(c).2).collect();
        assert_eq!(joined, cyrillic);
    }

    #[test]
    fn latin1_accounts_get_latin1_replies() {
        let account = SmppAccountSettings {
            default_alphabet: DefaultAlphabet::Latin1,
            ..SmppAccountSettings::default()
        };
        let commands = commands_for(&reply("Ciao @ è"), &account).unwrap();
        let sms = content::sms_of(&wire(&commands[0])).unwrap();
        assert_eq!(sms.content.data_coding, 3);
        assert_eq!(sms.content.short_message, b"Ciao @ \xe8");
    }
}
