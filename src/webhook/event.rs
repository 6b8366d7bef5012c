//! Webhook events without I/O: which endpoints want which events, the JSON each event is, and
//! its Standard Webhooks signature (<https://www.standardwebhooks.com/>).
//!
//! An event's body is rendered once, when the change it reports is committed, and stored in
//! the endpoint's outbox; every delivery attempt sends the same bytes under the same id.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;

use crate::message::{InboundMessage, Message, Status, format_millis};

/// The events an endpoint may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// An outgoing message reached sent, delivered, failed, expired or canceled.
    #[serde(rename = "message.status")]
    MessageStatus,
    /// A customer's message was stored.
    #[serde(rename = "message.received")]
    MessageReceived,
    /// A customer opted out.
    #[serde(rename = "conversation.opted_out")]
    OptedOut,
    /// A customer opted back in.
    #[serde(rename = "conversation.opted_in")]
    OptedIn,
}

impl EventType {
    /// Every event type.
    pub const ALL: [EventType; 4] = [
        EventType::MessageStatus,
        EventType::MessageReceived,
        EventType::OptedOut,
        EventType::OptedIn,
    ];

    /// The name in payloads and the config.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::MessageStatus => "message.status",
            EventType::MessageReceived => "message.received",
            EventType::OptedOut => "conversation.opted_out",
            EventType::OptedIn => "conversation.opted_in",
        }
    }
}

/// The outbox target of endpoint `name`.
pub fn target(name: &str) -> String {
    format!("webhook:{name}")
}

/// One endpoint's subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    /// Its outbox target ([`target`] of its name).
    pub target: String,
    /// What it wants.
    pub events: Vec<EventType>,
}

/// Which endpoints want which events; the store writes each event once per endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscriptions {
    /// The endpoints.
    pub endpoints: Vec<Subscriber>,
}

impl Subscriptions {
    /// The subscriptions of the configured endpoints.
    pub fn from_settings(endpoints: &[crate::config::WebhookSettings]) -> Self {
        Subscriptions {
            endpoints: endpoints
                .iter()
                .map(|e| Subscriber {
                    target: target(&e.name),
                    events: e.events.clone(),
                })
                .collect(),
        }
    }

    /// The targets that want `event`.
    pub fn targets_for(&self, event: EventType) -> impl Iterator<Item = &str> {
        self.endpoints
            .iter()
            .filter(move |s| s.events.contains(&event))
            .map(|s| s.target.as_str())
    }

    /// Whether some endpoint wants `event`.
    pub fn wants(&self, event: EventType) -> bool {
        self.targets_for(event).next().is_some()
    }
}

fn envelope(event: EventType, at: i64, data: serde_json::Value) -> String {
    json!({
        "type": event.as_str(),
        "timestamp": format_millis(at),
        "data": data,
    })
    .to_string()
}

/// The message.status body for `m` having moved from `old`; None when its status did not
/// change or is one integrators need not hear of (queued, sending: the API's answer says
/// queued, and retries would repeat both).
pub fn status_body(old: Option<&Message>, m: &Message) -> Option<String> {
    if old.is_some_and(|o| o.status == m.status)
        || matches!(m.status, Status::Queued | Status::Sending)
    {
        return None;
    }
    let at = m.status_since();
    Some(envelope(
        EventType::MessageStatus,
        at,
        json!({
            "id": m.id.to_string(),
            "status": m.status.as_str(),
            "previous_status": old.map(|o| o.status.as_str()),
            "to": m.to,
            "from": m.from,
            "reference": m.reference,
            "kind": m.kind.as_str(),
            "channel": m.channel,
            "parts": m.parts.len(),
            "reason": m.history.last().and_then(|t| t.reason.clone()),
            "at": format_millis(at),
        }),
    ))
}

/// The message.received body for a stored customer's message.
pub fn received_body(m: &InboundMessage) -> String {
    envelope(
        EventType::MessageReceived,
        m.received_at,
        json!({
            "id": m.id.to_string(),
            "from": m.from,
            "to": m.to,
            "text": m.text,
            "channel": m.channel,
            "parts": m.parts,
            "missing_parts": m.missing_parts,
            "in_reply_to": m.in_reply_to.map(|id| id.to_string()),
            "received_at": format_millis(m.received_at),
        }),
    )
}

/// The conversation.opted_out body for a customer's new opt-out entry.
pub fn opted_out_body(entry: &crate::optout::OptOut) -> String {
    envelope(
        EventType::OptedOut,
        entry.at,
        json!({
            "number": entry.number,
            "scope": entry.scope.as_str(),
            "source": entry.source.as_str(),
            "text": entry.text,
            "inbound_id": entry.inbound_id.map(|id| id.to_string()),
            "at": format_millis(entry.at),
        }),
    )
}

/// The conversation.opted_in body for a customer taken off the list at `at` (by a keyword,
/// the customer's message `inbound_id`, or through the API).
pub fn opted_in_body(
    number: &str,
    at: i64,
    inbound_id: Option<crate::message::MessageId>,
) -> String {
    envelope(
        EventType::OptedIn,
        at,
        json!({
            "number": number,
            "source": if inbound_id.is_some() { "keyword" } else { "api" },
            "inbound_id": inbound_id.map(|id| id.to_string()),
            "at": format_millis(at),
        }),
    )
}

/// The key of a Standard Webhooks secret ("whsec_" then base64; the prefix is optional).
///
/// # Errors
///
/// When the rest is not base64 or decodes to fewer than 24 bytes.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = STANDARD
        .decode(encoded)
        .map_err(|e| format!("not base64 after \"whsec_\": {e}"))?;
    if key.len() < 24 {
        return Err(format!(
            "{} bytes of key; use at least 24 (e.g. whsec_ followed by `openssl rand -base64 32`)",
            key.len()
        ));
    }
    Ok(key)
}

/// The webhook-signature header value: "v1," then the base64 HMAC-SHA256 of
/// "{id}.{timestamp}.{body}" under `key`.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification (and its reference libraries).
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_must_be_base64_keys() {
        assert!(secret_key("whsec_not base64!").is_err());
        assert!(secret_key("whsec_c2hvcnQ=").is_err(), "5 bytes");
        assert_eq!(
            secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
            secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
        );
    }

    #[test]
    fn subscriptions_route_events_to_endpoints() {
        let subs = Subscriptions {
            endpoints: vec![
                Subscriber {
                    target: target("crm"),
                    events: vec![EventType::MessageStatus, EventType::MessageReceived],
                },
                Subscriber {
                    target: target("audit"),
                    events: vec![EventType::OptedOut],
                },
            ],
        };
        let status: Vec<&str> = subs.targets_for(EventType::MessageStatus).collect();
        assert_eq!(status, ["webhook:crm"]);
        assert!(subs.wants(EventType::OptedOut));
        assert!(!subs.wants(EventType::OptedIn));
    }
}
