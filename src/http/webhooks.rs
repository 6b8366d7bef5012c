//! `/v1/webhooks/deliveries`: webhook events and callbacks given up on (dead-lettered), and
//! replaying them.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::ApiState;
use super::error::ApiError;
use crate::message::format_millis;
use crate::store::{DeadLetterEntry, OutboxItem};

/// The most deliveries one listing returns.
const MAX_LIST: usize = 1000;

/// Query of `GET /v1/webhooks/deliveries`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// Only "failed" (dead-lettered) is listed.
    status: Option<String>,
    /// At most this many (default and maximum 1000).
    limit: Option<usize>,
}

/// One failed delivery.
#[derive(Debug, Serialize)]
pub struct DeliveryView {
    /// The event's id (its webhook-id).
    id: String,
    /// The endpoint's name, or "callback" for a message's own callback.
    endpoint: String,
    /// Where a callback was POSTed (absent for configured endpoints).
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    /// The event type.
    #[serde(rename = "type")]
    event_type: String,
    /// Always "failed" here.
    status: &'static str,
    /// Why the last attempt failed.
    reason: String,
    /// When it was given up on.
    failed_at: String,
    /// The event as it would be POSTed.
    payload: serde_json::Value,
}

fn view(entry: DeadLetterEntry) -> Option<DeliveryView> {
    let (endpoint, url, id, event_type, body) = match entry.letter.item {
        OutboxItem::Event {
            id,
            event_type,
            body,
        } => {
            let endpoint = entry
                .target
                .strip_prefix("webhook:")
                .unwrap_or(&entry.target);
            (endpoint.to_owned(), None, id, event_type, body)
        }
        OutboxItem::Callback {
            url,
            id,
            event_type,
            body,
        } => ("callback".to_owned(), Some(url), id, event_type, body),
        OutboxItem::Receipt { .. } | OutboxItem::Reply { .. } => return None,
    };
    Some(DeliveryView {
        id,
        endpoint,
        url,
        event_type,
        status: "failed",
        reason: entry.letter.reason,
        failed_at: format_millis(entry.letter.at),
        payload: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
    })
}

/// `GET /v1/webhooks/deliveries?status=failed`: events and callbacks not delivered within
/// their retry_for.
pub async fn list(
    State(state): State<Arc<ApiState>>,
    q: Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    if q.status.as_deref().unwrap_or("failed") != "failed" {
        return Err(ApiError::invalid(
            "invalid_status",
            "status",
            "only status=failed (dead-lettered deliveries) is listed",
        ));
    }
    let limit = q.limit.unwrap_or(MAX_LIST).clamp(1, MAX_LIST);
    let items: Vec<DeliveryView> = state
        .store
        .dead_letters(limit)?
        .into_iter()
        .filter_map(view)
        .collect();
    Ok(axum::Json(serde_json::json!({ "items": items })).into_response())
}

/// `POST /v1/webhooks/deliveries/{id}/retry`: the dead-lettered event goes back to its
/// endpoint's (or callback host's) queue (same id), to be delivered and retried as a new event
/// would.
pub async fn retry(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !state.store.replay_dead_letter(&id).await? {
        return Err(ApiError::not_found(format!(
            "no failed delivery {id}; GET /v1/webhooks/deliveries?status=failed lists them"
        )));
    }
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "id": id, "status": "pending" })),
    )
        .into_response())
}
