//! /v1/conversations: a thread per customer number and shop number, both directions; replies
//! on the channel and from the number the customer last wrote to.

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
    /// The number or sender id the shop writes from in this conversation; null for the
    /// channel's default sender.
    shop_number: Option<String>,
    /// The channel the customer last wrote on: replies go out on it.
    channel: Option<String>,
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
        shop_number: Some(c.shop_number.clone()).filter(|s| !s.is_empty()),
        channel: c.last_inbound_channel.clone(),
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
    /// The shop number of its conversation (null: the default sender).
    shop_number: Option<String>,
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
                shop_number: shop_number(item),
            },
            ThreadItem::In(m) => ThreadItemView {
                direction: Direction::In.as_str(),
                id: m.id.to_string(),
                text: m.text.clone(),
                status: None,
                at: format_millis(m.received_at),
                channel: Some(m.channel.clone()),
                shop_number: shop_number(item),
            },
        }
    }
}

fn shop_number(item: &ThreadItem) -> Option<String> {
    Some(item.conversation_number().to_owned()).filter(|s| !s.is_empty())
}

/// `GET /v1/conversations/{customer}`: the conversation and a page of its thread.
#[derive(Debug, Serialize)]
pub struct ThreadView {
    conversation: ConversationView,
    /// All of the customer's conversations (one per shop number), latest activity first.
    conversations: Vec<ConversationView>,
    items: Vec<ThreadItemView>,
    /// Pass as `cursor` for older messages; absent on the last page.
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
    /// Only conversations whose latest reference (an order id) is this.
    reference: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadQuery {
    limit: Option<usize>,
    cursor: Option<String>,
    /// Which of the customer's conversations; default: the latest.
    shop_number: Option<String>,
}

/// Messages per page of a thread unless `limit` says otherwise.
const THREAD_PAGE: usize = 100;

/// The customer's number as conversations key it: E.164 (national numbers read in the
/// configured region), or as written when it is not a number (a customer known by a sender id
/// the network passed on has a conversation under that id).
fn customer(state: &ApiState, input: &str) -> String {
    phone::normalize(input, state.region).unwrap_or_else(|_| input.to_owned())
}

/// How many of a customer's latest messages are read for conversations that have no record.
const UNRECORDED_SCAN: usize = 100;

/// The customer's conversations, latest activity first. The store keeps a record once the
/// customer wrote; conversations they never answered are made from the latest message sent
/// from each shop number.
fn conversations_of(state: &ApiState, customer: &str) -> Result<Vec<Conversation>, ApiError> {
    let mut all = state.store.conversations_of(customer)?;
    for item in state.store.thread(customer, None, None, UNRECORDED_SCAN)? {
        if let ThreadItem::Out(m) = item
            && !all.iter().any(|c| c.is_shop(m.conversation_number()))
        {
            all.push(Conversation::outgoing(None, &m));
        }
    }
    all.sort_by_key(|c| std::cmp::Reverse(c.last_activity_at));
    Ok(all)
}

/// The conversation with `shop` among `all`, or the latest one.
fn pick(
    all: &[Conversation],
    shop: Option<&str>,
    customer: &str,
) -> Result<Conversation, ApiError> {
    let found = match shop {
        Some(shop) => all.iter().find(|c| c.is_shop(shop)),
        None => all.first(),
    };
    found.cloned().ok_or_else(|| match shop {
        Some(shop) => ApiError::not_found(format!("no conversation with {customer} from {shop}")),
        None => ApiError::not_found(format!("no conversation with {customer}")),
    })
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
    let conversations =
        state
            .store
            .list_conversations(after.as_ref(), limit, q.reference.as_deref())?;
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

/// `GET /v1/conversations/{customer}?shop_number=&limit=&cursor=`: a conversation (the one
/// with `shop_number`, else the latest) and its thread, both directions, newest first; reading
/// it marks the conversation read. 404 when nothing was ever exchanged.
pub async fn thread(
    State(state): State<Arc<ApiState>>,
    Path(input): Path<String>,
    q: Result<Query<ThreadQuery>, QueryRejection>,
) -> Result<axum::Json<ThreadView>, ApiError> {
    let q = query(q)?;
    let limit = page_limit(Some(q.limit.unwrap_or(THREAD_PAGE)))?;
    let before = cursor(q.cursor.as_deref())?;
    let customer = customer(&state, &input);
    let mut all = conversations_of(&state, &customer)?;
    let conversation = pick(&all, q.shop_number.as_deref(), &customer)?;
    let items = state
        .store
        .thread(&customer, Some(&conversation.shop_number), before, limit)?;
    // What was read is what was there when the conversation was: a message that came in
    // since stays unread.
    if conversation.unread > 0 {
        state
            .store
            .mark_read(
                &customer,
                &conversation.shop_number,
                conversation.last_inbound_id,
            )
            .await?;
        for c in all
            .iter_mut()
            .filter(|c| c.is_shop(&conversation.shop_number))
        {
            c.unread = 0;
        }
    }
    let next_cursor = (items.len() == limit)
        .then(|| items.last().map(|i| i.id().to_string()))
        .flatten();
    let selected = all
        .iter()
        .find(|c| c.is_shop(&conversation.shop_number))
        .unwrap_or(&conversation);
    Ok(axum::Json(ThreadView {
        conversation: view(&state, selected)?,
        conversations: all
            .iter()
            .map(|c| view(&state, c))
            .collect::<Result<_, _>>()?,
        items: items.iter().map(ThreadItemView::from).collect(),
        next_cursor,
    }))
}

/// Body of `POST /v1/conversations/{customer}/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyRequest {
    text: String,
    /// Which of the customer's conversations; default: the latest.
    #[serde(default)]
    shop_number: Option<String>,
    /// The shop's own reference (an order id), kept on the message and the conversation.
    #[serde(default)]
    reference: Option<String>,
    /// Where this reply's status events go too, as with `POST /v1/messages`.
    #[serde(default)]
    callback_url: Option<String>,
}

/// `POST /v1/conversations/{customer}/messages` `{"text", "shop_number"?, "reference"?,
/// "callback_url"?}`: a
/// transactional reply in the conversation (the one with `shop_number`, else the latest), on
/// the channel and from the number the customer last wrote to (when it can be a sender),
/// validated and answered like `POST /v1/messages`. 404 when there is no conversation.
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
    let all = conversations_of(&state, &customer)?;
    let conversation = pick(&all, req.shop_number.as_deref(), &customer)?;
    // The sticky number: the one the customer wrote to (a modem without a configured number
    // reports its name there: not a sender), else the conversation's own; else the
    // channel's default.
    let is_number = |to: &&str| {
        let digits = to.strip_prefix('+').unwrap_or(to);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    };
    let from = conversation
        .last_inbound_to
        .as_deref()
        .filter(is_number)
        .or(Some(conversation.shop_number.as_str()).filter(|s| !s.is_empty()))
        .and_then(|to| phone::normalize_sender(to, state.region).ok());
    // The sticky channel: the one the customer wrote on, else the one that carried the
    // conversation's latest message.
    let channel = match &conversation.last_inbound_channel {
        Some(channel) => Some(channel.clone()),
        None => state
            .store
            .get(conversation.last_message.id)?
            .and_then(|m| m.channel),
    };
    let mut new = validate(
        &state,
        SendRequest {
            to: customer,
            text: req.text,
            from,
            kind: Some(Kind::Transactional),
            send_at: None,
            validity_s: None,
            reference: req.reference,
            callback_url: req.callback_url,
        },
    )?;
    new.options.channel = channel;
    new.options.shop_number = Some(conversation.shop_number);
    submit(&state, scope, idempotency, new).await
}
