//! /v1/optouts: the suppression list of customers who opted out (by keyword or through here).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::messages::{Page, page_limit, parse_json, query};
use super::{ApiError, ApiState};
use crate::message::format_millis;
use crate::optout::{OptOut, OptOutScope};
use crate::phone;

/// Body of `POST /v1/optouts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddRequest {
    number: String,
    scope: OptOutScope,
}

/// An entry as the API shows it.
#[derive(Debug, Serialize)]
pub struct OptOutView {
    number: String,
    scope: &'static str,
    at: String,
    /// The customer's message that did it; null when added through the API.
    text: Option<String>,
    source: &'static str,
    /// That message in `GET /v1/inbound`.
    inbound_id: Option<String>,
}

impl From<&OptOut> for OptOutView {
    fn from(o: &OptOut) -> Self {
        OptOutView {
            number: o.number.clone(),
            scope: o.scope.as_str(),
            at: format_millis(o.at),
            text: o.text.clone(),
            source: o.source.as_str(),
            inbound_id: o.inbound_id.map(|id| id.to_string()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

/// The number as the list keys it: E.164, national numbers read in the configured region.
fn number(state: &ApiState, input: &str) -> Result<String, ApiError> {
    phone::normalize(input, state.region)
        .map_err(|e| ApiError::invalid("invalid_number", "number", e.to_string()))
}

/// `GET /v1/optouts?limit=&cursor=`: in number order.
pub async fn list(
    State(state): State<Arc<ApiState>>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<axum::Json<Page<OptOutView>>, ApiError> {
    let q = query(q)?;
    let limit = page_limit(q.limit)?;
    let items = state.store.list_optouts(q.cursor.as_deref(), limit)?;
    let next_cursor = (items.len() == limit)
        .then(|| items.last().map(|o| o.number.clone()))
        .flatten();
    Ok(axum::Json(Page {
        items: items.iter().map(OptOutView::from).collect(),
        next_cursor,
    }))
}

/// `GET /v1/optouts/{number}`: 404 when the number is not on the list.
pub async fn get_one(
    State(state): State<Arc<ApiState>>,
    Path(input): Path<String>,
) -> Result<axum::Json<OptOutView>, ApiError> {
    let number = number(&state, &input)?;
    let entry = state
        .store
        .optout(&number)?
        .ok_or_else(|| ApiError::not_found(format!("{number} has not opted out")))?;
    Ok(axum::Json(OptOutView::from(&entry)))
}

/// `POST /v1/optouts` `{"number", "scope": "marketing" | "all"}`: puts the number on the list,
/// replacing its entry if it had one; 201 once on disk.
pub async fn create(
    State(state): State<Arc<ApiState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: AddRequest = parse_json(body)?;
    let number = number(&state, &req.number)?;
    let entry = state.store.add_optout(&number, req.scope).await?;
    Ok((StatusCode::CREATED, axum::Json(OptOutView::from(&entry))).into_response())
}

/// `DELETE /v1/optouts/{number}`: takes the number off the list; 204, or 404 when it was not
/// on it.
pub async fn remove(
    State(state): State<Arc<ApiState>>,
    Path(input): Path<String>,
) -> Result<StatusCode, ApiError> {
    let number = number(&state, &input)?;
    if state.store.remove_optout(&number).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("{number} has not opted out")))
    }
}
