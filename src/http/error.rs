//! API errors: every failure is JSON `{"error": {"code", "message", "field"?}}` with the right
//! HTTP status, so integrators can branch on `code` and people can read `message`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::message::format_millis;
use crate::optout::{OptOutScope, OptOutSource};
use crate::store::StoreError;

/// An error answer of the API.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code (`invalid_number`, ...).
    pub code: &'static str,
    /// What was wrong, for a person.
    pub message: String,
    /// The request field at fault, when there is one.
    pub field: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// Names the request field at fault.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 422: the request is well-formed but a value is not acceptable.
    pub fn invalid(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message).field(field)
    }

    /// 400 with a code and message.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => ApiError::not_found(format!("no message {id}")),
            StoreError::WrongStatus { id, status } => ApiError::new(
                StatusCode::CONFLICT,
                "not_cancelable",
                format!("message {id} is {status}; only queued messages can be canceled"),
            ),
            StoreError::IdempotencyConflict(id) => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                format!("this Idempotency-Key was used for message {id} with a different request"),
            )
            .field("Idempotency-Key"),
            StoreError::Unavailable(reason) => {
                tracing::error!(reason, "store unavailable; answering 503");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the message store cannot write right now (disk full or I/O error); \
                     nothing was stored: retry later",
                )
            }
            StoreError::Unconfirmed(reason) => {
                tracing::error!(reason, "store failed while writing; answering 503");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_failed",
                    "the message store failed while writing this request (disk full or I/O \
                     error): it may or may not have been stored, and parla stops to be \
                     restarted. Retry with the same Idempotency-Key: a stored message is then \
                     returned instead of a second one made",
                )
            }
            StoreError::OptedOut {
                number,
                scope,
                at,
                by,
                text,
            } => {
                let what = match scope {
                    OptOutScope::Marketing => "marketing messages",
                    OptOutScope::All => "all messages",
                };
                let how = match (by, text) {
                    (OptOutSource::Keyword, Some(text)) => format!("by replying {text:?}"),
                    (OptOutSource::Keyword, None) => "by keyword".to_string(),
                    (OptOutSource::Api, _) => "through the API".to_string(),
                };
                ApiError::invalid(
                    "opted_out",
                    "to",
                    format!(
                        "{number} opted out of {what} on {} {how}; nothing was stored. It lifts \
                         when they reply START, or with DELETE /v1/optouts/{number}",
                        format_millis(at)
                    ),
                )
            }
            // The HTTP API submits no parts; mapped for completeness.
            StoreError::InvalidPart(reason) => ApiError::bad_request("invalid_part", reason),
            StoreError::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the gateway is shutting down; nothing was stored: retry later",
            ),
            e @ (StoreError::Corrupt { .. } | StoreError::Open { .. }) => {
                tracing::error!(error = %e, "store error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal store error; see the gateway's log",
                )
            }
        }
    }
}
