//! /v1/conversations: a thread per customer number, both directions; replies from the number
//! the customer last wrote to.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::messages::{
    Page, SendRequest, cursor, idempotency_key, page_limit, parse_json, query, submit, validate,
};
use super::{ApiError, ApiState, ClientScope};
use crate::message::{Kind, format_millis};
use crate::phone;
use crate::store::{Conversation, ConversationCursor, Direction, ThreadItem};

/// A conversation as the API lists it.
#[derive(Debug, Serialize)]
pub struct ConversationView {
    customer: String,
    last_activity_at: String,
    last_message: LastMessageView,
    /// Messages from the customer since the thread was last read.
    unread: u32,
    /// The latest reference (order id) of a message sent to the customer.
    reference: Option<String>,
}

#[derive(Debug, Serialize)]
struct LastMessageView {
    direction: &'static str,
    id: String,
    /// Its first 60 characters.
    text: String,
    /// The message's status now ("out" only; absent once it was swept).
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
}

fn view(state: &ApiState, c: &Conversation) -> Result<ConversationView, ApiError> {
    let status = match c.last_message.direction {
        Direction::Out => state
            .store
            .get(c.last_message.id)?
            .map(|m| m.status.as_str()),
        Direction::In => None,
    };
    Ok(ConversationView {
        customer: c.customer.clone(),
        last_activity_at: format_millis(c.last_activity_at),
        last_message: LastMessageView {
            direction: c.last_message.direction.as_str(),
            id: c.last_message.id.to_string(),
            text: c.last_message.text.clone(),
            status,
        },
        unread: c.unread,
        reference: c.reference.clone(),
    })
}

/// One message of a thread.
#[derive(Debug, Serialize)]
struct ThreadItemView {
    direction: &'static str,
    id: String,
    text: String,
    /// The message's status ("out" only).
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    /// When it was created ("out") or received ("in").
    at: String,
    /// The channel it went out on (null until sent) or came in on.
    channel: Option<String>,
}

impl From<&ThreadItem> for ThreadItemView {
    fn from(item: &ThreadItem) -> Self {
        match item {
            ThreadItem::Out(m) => ThreadItemView {
                direction: Direction::Out.as_str(),
                id: m.id.to_string(),
                text: m.text.clone(),
                status: Some(m.status.as_str()),
                at: format_millis(m.created_at),
                channel: m.channel.clone(),
            },
            ThreadItem::In(m) => ThreadItemView {
                direction: Direction::In.as_str(),
                id: m.id.to_string(),
                text: m.text.clone(),
                status: None,
                at: format_millis(m.received_at),
                channel: Some(m.channel.clone()),
            },
        }
    }
}

/// `GET /v1/conversations/{customer}`: the conversation and a page of its thread.
#[derive(Debug, Serialize)]
pub struct ThreadView {
    conversation: ConversationView,
    items: Vec<ThreadItemView>,
    /// Pass as `cursor` for older messages; absent on the last page.
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

/// Messages per page of a thread unless `limit` says otherwise.
const THREAD_PAGE: usize = 100;

/// The customer's number as conversations key it: E.164 (national numbers read in the
/// configured region), or as written when it is not a number (a customer known by a sender id
/// the network passed on has a conversation under that id).
fn customer(state: &ApiState, input: &str) -> String {
    phone::normalize(input, state.region).unwrap_or_else(|_| input.to_owned())
}

/// The customer's conversation; for a customer who never wrote (the store keeps no record for
/// them), one made from the latest message they were sent. None: nothing was ever exchanged.
fn conversation_of(state: &ApiState, customer: &str) -> Result<Option<Conversation>, ApiError> {
    if let Some(c) = state.store.conversation(customer)? {
        return Ok(Some(c));
    }
    Ok(state
        .store
        .thread(customer, None, 1)?
        .into_iter()
        .find_map(|item| match item {
            ThreadItem::Out(m) => Some(Conversation::outgoing(None, &m)),
            ThreadItem::In(_) => None,
        }))
}

fn no_conversation(customer: &str) -> ApiError {
    ApiError::not_found(format!("no conversation with {customer}"))
}

/// `GET /v1/conversations?limit=&cursor=`: latest activity first.
pub async fn list(
    State(state): State<Arc<ApiState>>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<axum::Json<Page<ConversationView>>, ApiError> {
    let q = query(q)?;
    let limit = page_limit(q.limit)?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<ConversationCursor>().map_err(|_| {
                ApiError::bad_request("invalid_query", "cursor is not one this API gave")
                    .field("cursor")
            })
        })
        .transpose()?;
    let conversations = state.store.list_conversations(after.as_ref(), limit)?;
    let next_cursor = (conversations.len() == limit)
        .then(|| {
            conversations
                .last()
                .map(|c| ConversationCursor::after(c).to_string())
        })
        .flatten();
    let items = conversations
        .iter()
        .map(|c| view(&state, c))
        .collect::<Result<_, _>>()?;
    Ok(axum::Json(Page { items, next_cursor }))
}

/// `GET /v1/conversations/{customer}?limit=&cursor=`: the thread, both directions, newest
/// first; reading it marks the conversation read. 404 when nothing was ever exchanged.
pub async fn thread(
    State(state): State<Arc<ApiState>>,
    Path(input): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<axum::Json<ThreadView>, ApiError> {
    let q = query(q)?;
    let limit = page_limit(Some(q.limit.unwrap_or(THREAD_PAGE)))?;
    let before = cursor(q.cursor.as_deref())?;
    let customer = customer(&state, &input);
    let mut conversation =
        conversation_of(&state, &customer)?.ok_or_else(|| no_conversation(&customer))?;
    let items = state.store.thread(&customer, before, limit)?;
    // What was read is what was there when the conversation was: a message that came in
    // since stays unread.
    if conversation.unread > 0 {
        state
            .store
            .mark_read(&customer, conversation.last_inbound_id)
            .await?;
        conversation.unread = 0;
    }
    let next_cursor = (items.len() == limit)
        .then(|| items.last().map(|i| i.id().to_string()))
        .flatten();
    Ok(axum::Json(ThreadView {
        conversation: view(&state, &conversation)?,
        items: items.iter().map(ThreadItemView::from).collect(),
        next_cursor,
    }))
}

/// Body of `POST /v1/conversations/{customer}/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyRequest {
    text: String,
}

/// `POST /v1/conversations/{customer}/messages` `{"text"}`: a transactional reply, from the
/// number the customer last wrote to (when it can be a sender), validated and answered like
/// `POST /v1/messages`. 404 when there is no conversation.
pub async fn reply(
    State(state): State<Arc<ApiState>>,
    Extension(scope): Extension<ClientScope>,
    Path(input): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let idempotency = idempotency_key(&headers)?;
    let req: ReplyRequest = parse_json(body)?;
    let customer = customer(&state, &input);
    let conversation =
        conversation_of(&state, &customer)?.ok_or_else(|| no_conversation(&customer))?;
    // The sticky number; one that cannot be a sender leaves the channel's default.
    let from = conversation
        .last_inbound_to
        .as_deref()
        .and_then(|to| phone::normalize_sender(to, state.region).ok());
    let new = validate(
        &state,
        SendRequest {
            to: customer,
            text: req.text,
            from,
            kind: Some(Kind::Transactional),
            send_at: None,
            validity_s: None,
            reference: None,
        },
    )?;
    submit(&state, scope, idempotency, new).await
}
