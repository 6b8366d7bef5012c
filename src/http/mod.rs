//! The local HTTP API (axum): routes, authentication, limits and JSON errors. Handlers live in
//! [`messages`], [`conversations`] and [`optouts`]; they only validate, write to the store and read from it.

mod conversations;
mod error;
mod messages;
mod optouts;
pub mod server;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use subtle::ConstantTimeEq;
use tokio::sync::{Notify, Semaphore};

pub use error::ApiError;

use crate::channel::{ChannelRegistry, LinkState};
use crate::config::{Defaults, HttpSettings};
use crate::store::Store;

/// What the handlers share.
pub struct ApiState {
    /// Where messages go.
    pub store: Store,
    /// Wakes the dispatcher when a message is queued.
    pub wake: Arc<Notify>,
    /// Defaults applied to submitted messages.
    pub defaults: Defaults,
    /// Region for national numbers.
    pub region: Option<phonenumber::country::Id>,
    /// The channels' status, for `GET /v1/channels`.
    pub channels: ChannelRegistry,
    /// Bearer tokens; a configuration reload replaces them.
    tokens: std::sync::RwLock<Arc<Vec<String>>>,
    /// Which `callback_url`s messages may carry; None: callbacks are off.
    pub callbacks: Option<crate::webhook::callback::Policy>,
    /// Bounds requests in progress: past it, requests wait (backpressure, bounded memory).
    slots: Semaphore,
    /// What `GET /metrics` shows; None: it answers 404.
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl ApiState {
    /// The state for a router over `store`.
    pub fn new(
        store: Store,
        wake: Arc<Notify>,
        http: &HttpSettings,
        defaults: Defaults,
        channels: ChannelRegistry,
    ) -> Self {
        let region = crate::phone::region(defaults.region.as_deref());
        ApiState {
            store,
            wake,
            defaults,
            region,
            channels,
            tokens: std::sync::RwLock::new(Arc::new(http.tokens.clone())),
            callbacks: None,
            slots: Semaphore::new(http.max_concurrent_requests.max(1)),
            metrics: None,
        }
    }

    fn tokens(&self) -> Arc<Vec<String>> {
        self.tokens
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the bearer tokens (a configuration reload): requests from now on need one of
    /// these.
    pub fn set_tokens(&self, tokens: Vec<String>) {
        *self
            .tokens
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(tokens);
    }

    /// The same, serving `metrics` at `GET /metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

impl ApiState {
    /// Takes messages' `callback_url`s under `policy` (None: refuses them).
    pub fn with_callbacks(mut self, policy: Option<crate::webhook::callback::Policy>) -> Self {
        self.callbacks = policy;
        self
    }
}

/// Who is calling, for scoping idempotency keys: one client's keys never collide with another's.
#[derive(Debug, Clone)]
pub struct ClientScope(pub String);

/// The API router.
pub fn router(state: Arc<ApiState>, max_body_bytes: usize) -> Router {
    let v1 = Router::new()
        .route("/v1/messages", get(messages::list).post(messages::create))
        .route(
            "/v1/messages/{id}",
            get(messages::get_one).delete(messages::cancel),
        )
        .route("/v1/inbound", get(messages::list_inbound))
        .route("/v1/conversations", get(conversations::list))
        .route("/v1/conversations/{customer}", get(conversations::thread))
        .route(
            "/v1/conversations/{customer}/messages",
            axum::routing::post(conversations::reply),
        )
        .route("/v1/optouts", get(optouts::list).post(optouts::create))
        .route(
            "/v1/optouts/{number}",
            get(optouts::get_one).delete(optouts::remove),
        )
        .route("/v1/channels", get(list_channels))
        .route("/v1/webhooks/deliveries", get(webhooks::list))
        .route(
            "/v1/webhooks/deliveries/{id}/retry",
            axum::routing::post(webhooks::retry),
        )
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(v1)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limit_concurrency,
        ))
        .with_state(state)
}

async fn healthz(State(state): State<Arc<ApiState>>) -> Response {
    match state.store.health() {
        Ok(()) => axum::Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Ready: the store takes writes and at least one channel can send. Load balancers and
/// orchestrators stop sending traffic here while it answers 503.
async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    if let Err(e) = state.store.health() {
        return ApiError::from(e).into_response();
    }
    let statuses = state.channels.statuses();
    if statuses.iter().any(|s| s.state == LinkState::Up) {
        return axum::Json(serde_json::json!({"status": "ready"})).into_response();
    }
    let why: Vec<String> = statuses
        .iter()
        .map(|s| match &s.detail {
            Some(detail) => format!("{} {} ({detail})", s.name, s.state.as_str()),
            None => format!("{} {}", s.name, s.state.as_str()),
        })
        .collect();
    let message = if why.is_empty() {
        "no channel is configured".to_string()
    } else {
        format!("no channel can send: {}", why.join(", "))
    };
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message).into_response()
}

/// Prometheus metrics in the OpenMetrics text format.
async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    let Some(metrics) = state.metrics.clone() else {
        return ApiError::not_found("metrics are not kept by this server").into_response();
    };
    // Reads the outbox keyspaces: off the async workers.
    match tokio::task::spawn_blocking(move || metrics.render()).await {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                crate::metrics::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "metrics could not be read",
        )
        .into_response(),
    }
}

async fn list_channels(State(state): State<Arc<ApiState>>) -> Response {
    axum::Json(serde_json::json!({ "items": state.channels.statuses() })).into_response()
}

async fn limit_concurrency(
    State(state): State<Arc<ApiState>>,
    req: Request,
    next: Next,
) -> Response {
    match state.slots.acquire().await {
        Ok(_permit) => next.run(req).await,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the gateway is shutting down",
        )
        .into_response(),
    }
}

/// With tokens configured, every /v1 request needs `Authorization: Bearer <token>`; without,
/// only clients on loopback are served (the config refuses a public address without tokens).
async fn authenticate(
    State(state): State<Arc<ApiState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let tokens = state.tokens();
    let scope = if tokens.is_empty() {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        match peer {
            Some(addr) if addr.ip().is_loopback() => ClientScope("local".into()),
            _ => {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "no API tokens are configured, so only clients on this machine are served",
                )
                .into_response();
            }
        }
    } else {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let matched = presented.and_then(|p| {
            // Compare against every token in constant time, so timing tells nothing.
            let mut found = None;
            for (i, t) in tokens.iter().enumerate() {
                if bool::from(t.as_bytes().ct_eq(p.as_bytes())) {
                    found = Some(i);
                }
            }
            found
        });
        match matched {
            Some(i) => ClientScope(format!("token:{}", fingerprint(&tokens[i]))),
            None => {
                return (
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "missing or wrong bearer token (Authorization: Bearer <token>)",
                    ),
                )
                    .into_response();
            }
        }
    };
    req.extensions_mut().insert(scope);
    next.run(req).await
}

/// A stable, non-reversible label for a token, so idempotency scopes survive token reordering
/// and restarts without storing the token itself.
fn fingerprint(token: &str) -> String {
    crate::message::fingerprint(token.as_bytes())
}
