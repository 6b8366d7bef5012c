//! /v1/messages and /v1/inbound: validate, store, read.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState, ClientScope};
use crate::codec::gsm7;
use crate::message::{
    InboundMessage, Kind, Message, MessageId, Millis, NewMessage, format_millis, now_millis,
};
use crate::phone;
use crate::store::{ListFilter, Submitted};

/// Body of `POST /v1/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SendRequest {
    pub(super) to: String,
    pub(super) text: String,
    #[serde(default)]
    pub(super) from: Option<String>,
    #[serde(default)]
    pub(super) kind: Option<Kind>,
    /// RFC 3339 time before which the message is not sent.
    #[serde(default)]
    pub(super) send_at: Option<String>,
    #[serde(default)]
    pub(super) validity_s: Option<u64>,
    /// The shop's own reference (order id), kept with the message.
    #[serde(default)]
    pub(super) reference: Option<String>,
    /// An http(s) URL that gets this message's status events, signed with the
    /// `[callbacks]` secret.
    #[serde(default)]
    pub(super) callback_url: Option<String>,
}

const MAX_REFERENCE_CHARS: usize = 128;
const MAX_IDEMPOTENCY_KEY: usize = 255;
const MIN_VALIDITY_S: u64 = crate::config::MIN_VALIDITY.as_secs();
const MAX_VALIDITY_S: u64 = crate::config::MAX_VALIDITY.as_secs();
/// Furthest ahead a message can be scheduled.
const MAX_SCHEDULE_AHEAD_MS: Millis = 365 * 24 * 3600 * 1000;

/// A message as the API shows it.
#[derive(Debug, Serialize)]
pub struct MessageView {
    id: String,
    status: &'static str,
    to: String,
    from: Option<String>,
    text: String,
    kind: &'static str,
    reference: Option<String>,
    callback_url: Option<String>,
    encoding: &'static str,
    parts: usize,
    created_at: String,
    send_at: Option<String>,
    expires_at: String,
    attempts: u32,
    channel: Option<String>,
    possible_duplicate: bool,
    part_states: Vec<PartView>,
    history: Vec<TransitionView>,
}

#[derive(Debug, Serialize)]
struct PartView {
    status: &'static str,
    remote_id: Option<String>,
}

#[derive(Debug, Serialize)]
struct TransitionView {
    status: &'static str,
    at: String,
    reason: Option<String>,
}

impl From<&Message> for MessageView {
    fn from(m: &Message) -> Self {
        MessageView {
            id: m.id.to_string(),
            status: m.status.as_str(),
            to: m.to.clone(),
            from: m.from.clone(),
            text: m.text.clone(),
            kind: m.kind.as_str(),
            reference: m.reference.clone(),
            callback_url: m.options.callback_url.clone(),
            encoding: m.encoding.as_str(),
            parts: m.parts.len(),
            created_at: format_millis(m.created_at),
            send_at: m.send_at.map(format_millis),
            expires_at: format_millis(m.expires_at),
            attempts: m.attempts,
            channel: m.channel.clone(),
            possible_duplicate: m.possible_duplicate,
            part_states: m
                .parts
                .iter()
                .map(|p| PartView {
                    status: p.status.as_str(),
                    remote_id: p.remote_id.clone(),
                })
                .collect(),
            history: m
                .history
                .iter()
                .map(|t| TransitionView {
                    status: t.status.as_str(),
                    at: format_millis(t.at),
                    reason: t.reason.clone(),
                })
                .collect(),
        }
    }
}

/// Parses a JSON body, telling syntax errors (400 malformed_json) from bodies that do not match
/// the request's shape (400 invalid_request, naming the field).
pub(super) fn parse_json<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body too large",
            )
        } else {
            ApiError::bad_request("malformed_body", rejection.body_text())
        }
    })?;
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let value = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() {
            let err = ApiError::bad_request("invalid_request", inner.to_string());
            if path == "." { err } else { err.field(path) }
        } else {
            ApiError::bad_request("malformed_json", format!("body is not valid JSON: {inner}"))
        }
    })?;
    Ok(value)
}

pub(super) fn validate(state: &ApiState, req: SendRequest) -> Result<NewMessage, ApiError> {
    let to = phone::normalize(&req.to, state.region)
        .map_err(|e| ApiError::invalid("invalid_number", "to", e.to_string()))?;
    if req.text.trim().is_empty() {
        return Err(ApiError::invalid("empty_text", "text", "text is empty"));
    }
    let max_parts = usize::from(state.defaults.max_parts);
    let (encoding, parts) = gsm7::count_parts(&req.text);
    if parts > max_parts {
        return Err(ApiError::invalid(
            "too_many_parts",
            "text",
            format!(
                "text needs {parts} SMS parts in {}; at most {max_parts} are allowed",
                encoding.as_str()
            ),
        ));
    }
    let from = req
        .from
        .as_deref()
        .map(|f| phone::normalize_sender(f, state.region))
        .transpose()
        .map_err(|e| ApiError::invalid("invalid_sender", "from", e.to_string()))?;
    let now = now_millis();
    let send_at = match req.send_at.as_deref() {
        None => None,
        Some(s) => {
            let ts: jiff::Timestamp = s.parse().map_err(|_| {
                ApiError::invalid(
                    "invalid_send_at",
                    "send_at",
                    "send_at must be an RFC 3339 time such as 2026-12-01T09:00:00+01:00",
                )
            })?;
            let ms = ts.as_millisecond();
            if ms > now + MAX_SCHEDULE_AHEAD_MS {
                return Err(ApiError::invalid(
                    "invalid_send_at",
                    "send_at",
                    "send_at is more than a year ahead",
                ));
            }
            Some(ms)
        }
    };
    let validity_s = req.validity_s.unwrap_or(state.defaults.validity.as_secs());
    if !(MIN_VALIDITY_S..=MAX_VALIDITY_S).contains(&validity_s) {
        return Err(ApiError::invalid(
            "invalid_validity",
            "validity_s",
            format!("validity_s must be between {MIN_VALIDITY_S} and {MAX_VALIDITY_S}"),
        ));
    }
    if let Some(r) = &req.reference
        && (r.chars().count() > MAX_REFERENCE_CHARS || r.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(
            "invalid_reference",
            "reference",
            format!("reference must be at most {MAX_REFERENCE_CHARS} printable characters"),
        ));
    }
    let callback_url = req
        .callback_url
        .as_deref()
        .map(|url| callback_url(state, url))
        .transpose()?;
    Ok(NewMessage {
        to,
        from,
        text: req.text,
        kind: req.kind.unwrap_or(state.defaults.kind),
        reference: req.reference,
        encoding,
        parts: u8::try_from(parts).unwrap_or(u8::MAX),
        send_at,
        validity_ms: i64::try_from(validity_s * 1000).unwrap_or(i64::MAX),
        origin: None,
        options: crate::message::MessageOptions {
            callback_url,
            ..Default::default()
        },
    })
}

/// The callback URL as stored, when callbacks are on and the URL is one they may call.
fn callback_url(state: &ApiState, url: &str) -> Result<String, ApiError> {
    use crate::webhook::callback::CallbackUrlError;
    let Some(policy) = &state.callbacks else {
        return Err(ApiError::invalid(
            "callbacks_disabled",
            "callback_url",
            "this gateway has no [callbacks] secret, so it sends no callbacks; leave out \
             callback_url or ask its operator to configure [callbacks]",
        ));
    };
    match policy.check(url) {
        Ok(url) => Ok(url.into()),
        Err(CallbackUrlError::Invalid(m)) => {
            Err(ApiError::invalid("invalid_callback_url", "callback_url", m))
        }
        Err(CallbackUrlError::HostNotAllowed(m)) => Err(ApiError::invalid(
            "callback_host_not_allowed",
            "callback_url",
            m,
        )),
    }
}

pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(
            "invalid_idempotency_key",
            format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"
            ),
        )
        .field("Idempotency-Key")
    };
    let key = value.to_str().map_err(|_| bad())?;
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| (0x21..0x7f).contains(&b))
    {
        return Err(bad());
    }
    Ok(Some(key.to_string()))
}

/// `POST /v1/messages`: 202 once the message is on disk.
pub async fn create(
    State(state): State<Arc<ApiState>>,
    Extension(scope): Extension<ClientScope>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let idempotency = idempotency_key(&headers)?;
    let req: SendRequest = parse_json(body)?;
    let new = validate(&state, req)?;
    submit(&state, scope, idempotency, new).await
}

/// Stores a validated message and answers 202 with it (marked `Idempotent-Replayed` when an
/// earlier request with the same key made it).
pub(super) async fn submit(
    state: &ApiState,
    scope: ClientScope,
    idempotency: Option<String>,
    new: NewMessage,
) -> Result<Response, ApiError> {
    let submitted = state
        .store
        .submit(new, idempotency.map(|k| (scope.0, k)))
        .await?;
    let replayed = matches!(submitted, Submitted::Existing(_));
    if !replayed {
        state.wake.notify_one();
    }
    let view = MessageView::from(submitted.message());
    let mut response = (StatusCode::ACCEPTED, axum::Json(view)).into_response();
    if replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

fn parse_id(id: &str) -> Result<MessageId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("no message {id:?}")))
}

/// `GET /v1/messages/{id}`.
pub async fn get_one(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<axum::Json<MessageView>, ApiError> {
    let id = parse_id(&id)?;
    let m = state
        .store
        .get(id)?
        .ok_or_else(|| ApiError::not_found(format!("no message {id}")))?;
    Ok(axum::Json(MessageView::from(&m)))
}

/// `DELETE /v1/messages/{id}`: cancels a message not yet handed to a channel.
pub async fn cancel(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<axum::Json<MessageView>, ApiError> {
    let id = parse_id(&id)?;
    let m = state.store.cancel(id).await?;
    Ok(axum::Json(MessageView::from(&m)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub(super) items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub(super) next_cursor: Option<String>,
}

pub(super) fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be 1 to {MAX_PAGE}"),
        )
        .field("limit"));
    }
    Ok(limit)
}

pub(super) fn cursor(cursor: Option<&str>) -> Result<Option<MessageId>, ApiError> {
    cursor
        .map(|c| {
            c.parse().map_err(|_| {
                ApiError::bad_request("invalid_query", "cursor is not one this API gave")
                    .field("cursor")
            })
        })
        .transpose()
}

pub(super) fn query<T: serde::de::DeserializeOwned>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

/// `GET /v1/messages?status=&to=&limit=&cursor=`: newest first.
pub async fn list(
    State(state): State<Arc<ApiState>>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Page<MessageView>>, ApiError> {
    let q = query(q)?;
    let limit = page_limit(q.limit)?;
    let status = q
        .status
        .as_deref()
        .map(|s| {
            s.parse().map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    "status must be one of queued, sending, sent, delivered, failed, expired, canceled",
                )
                .field("status")
            })
        })
        .transpose()?;
    let to =
        q.to.as_deref()
            .map(|t| phone::normalize(t, state.region))
            .transpose()
            .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()).field("to"))?;
    let before = cursor(q.cursor.as_deref())?;
    let page = state
        .store
        .list(&ListFilter { status, to }, before, limit)?;
    Ok(axum::Json(Page {
        items: page.messages.iter().map(MessageView::from).collect(),
        next_cursor: page.next.map(|id| id.to_string()),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundQuery {
    limit: Option<usize>,
    cursor: Option<String>,
    /// RFC 3339 time or inbound id: list what was stored after it, oldest first (polling).
    since: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct InboundView {
    id: String,
    channel: String,
    from: String,
    to: String,
    text: String,
    received_at: String,
    in_reply_to: Option<String>,
    parts: u8,
    missing_parts: Vec<u8>,
}

impl From<&InboundMessage> for InboundView {
    fn from(m: &InboundMessage) -> Self {
        InboundView {
            id: m.id.to_string(),
            channel: m.channel.clone(),
            from: m.from.clone(),
            to: m.to.clone(),
            text: m.text.clone(),
            received_at: format_millis(m.received_at),
            in_reply_to: m.in_reply_to.map(|id| id.to_string()),
            parts: m.parts,
            missing_parts: m.missing_parts.clone(),
        }
    }
}

/// Where `since` starts: after an inbound id, or at an RFC 3339 time (everything stored from
/// then on: ids begin with the time they were stored).
fn since(since: &str) -> Result<MessageId, ApiError> {
    if let Ok(id) = since.parse::<MessageId>() {
        return Ok(id);
    }
    let ts: jiff::Timestamp = since.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_query",
            "since must be an RFC 3339 time such as 2026-12-01T09:00:00Z or an inbound message id",
        )
        .field("since")
    })?;
    let ms = u64::try_from(ts.as_millisecond()).unwrap_or(0);
    Ok(MessageId(ulid::Ulid::from_parts(ms, 0)))
}

/// `GET /v1/inbound?limit=&cursor=`: customer messages, newest first. With `since=` (an RFC
/// 3339 time or an inbound id), those stored after it, oldest first: to poll, pass the last id
/// seen (or `next_cursor`) as `since`.
pub async fn list_inbound(
    State(state): State<Arc<ApiState>>,
    q: Result<Query<InboundQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Page<InboundView>>, ApiError> {
    let q = query(q)?;
    let limit = page_limit(q.limit)?;
    let items = match q.since.as_deref() {
        Some(_) if q.cursor.is_some() => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "with since, pass the next page's start as since, not cursor",
            )
            .field("cursor"));
        }
        Some(s) => state.store.inbound_after(since(s)?, limit)?,
        None => state
            .store
            .list_inbound(cursor(q.cursor.as_deref())?, limit)?,
    };
    let next_cursor = (items.len() == limit)
        .then(|| items.last().map(|m| m.id.to_string()))
        .flatten();
    Ok(axum::Json(Page {
        items: items.iter().map(InboundView::from).collect(),
        next_cursor,
    }))
}
