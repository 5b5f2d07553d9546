//! The HTTP API's frame: shared state, routes, bearer auth, the probes and `/v1/openapi.json`.
//! axum for routing, tower-http for compression and CORS; the endpoints live in [`super::sql`]
//! and [`super::tables`].
//!
//! **Invariant:** a client can always tell a complete answer from a cut one. Errors known
//! before the first byte get their status code and a JSON body; after it, NDJSON ends with an
//! `{"error": ...}` line instead of its `{"end": ...}` line, and CSV, Arrow and Parquet abort
//! the response (no final chunk), which every HTTP client reports as an error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::engine::QueryEngine;
use crate::serve::admit::token_ok;
use crate::serve::config::ServeConfig;
use crate::serve::metrics::ServeMetrics;
use crate::serve::{sql, tables};

pub const QUERY_ID_HEADER: &str = "x-loglake-query-id";
pub(crate) const TRUNCATED_HEADER: &str = "x-loglake-truncated";
const OPENAPI: &str = include_str!("openapi.json");

/// What every handler shares.
pub struct AppState {
    pub engine: Arc<QueryEngine>,
    pub config: ServeConfig,
    pub slots: Arc<Semaphore>,
    pub running: Mutex<HashMap<String, CancellationToken>>,
    pub metrics: ServeMetrics,
    pub registry: Registry,
    pub query_runtime: tokio::runtime::Handle,
    /// `/v1/tables` entries by table, valid for the Delta version they describe.
    pub described: Mutex<HashMap<String, (u64, serde_json::Value)>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .finish()
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/sql", get(sql::sql_get).post(sql::sql_post))
        .route("/v1/queries/{id}", delete(sql::cancel))
        .route("/v1/tables", get(tables::list_tables))
        .route("/v1/tables/{name}", get(tables::show_table))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            authenticate,
        ));
    let limit = state.config.max_statement_size.as_u64() as usize + 64 * 1024;
    let mut app = Router::new()
        .merge(api)
        .route("/v1/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .layer(
            tower_http::compression::CompressionLayer::new()
                .gzip(true)
                .zstd(true),
        );
    if !state.config.cors_origins.is_empty() {
        use tower_http::cors::{AllowOrigin, CorsLayer};
        let origins = if state.config.cors_origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(
                state
                    .config
                    .cors_origins
                    .iter()
                    .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()),
            )
        };
        app = app.layer(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([Method::GET, Method::POST, Method::DELETE])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::HeaderName::from_static(QUERY_ID_HEADER),
                ])
                .expose_headers([
                    header::ETAG,
                    header::HeaderName::from_static(QUERY_ID_HEADER),
                    header::HeaderName::from_static(TRUNCATED_HEADER),
                ]),
        );
    }
    app.with_state(state)
}

// ---------------------------------------------------------------------------------------------
// Auth

/// Bearer tokens, checked before the body is read. Compared in constant time.
async fn authenticate(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if state.config.tokens.is_empty() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    if token_ok(&state.config, presented) {
        return next.run(request).await;
    }
    state.metrics.unauthorized.inc();
    let message = if presented.is_some() {
        "the bearer token is not valid"
    } else {
        "missing Authorization: Bearer <token>"
    };
    let mut r = (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": {"code": "unauthorized", "message": message}})),
    )
        .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"loglake\""),
    );
    r
}

// ---------------------------------------------------------------------------------------------
// Probes and documents

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the lake answers a listing.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.engine.catalog().lake().ping().await {
        Ok(()) => "ready\n".into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the lake does not answer: {e}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        loglake_telemetry::render(&state.registry),
    )
        .into_response()
}
