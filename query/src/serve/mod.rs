//! `loglake serve`: the HTTP SQL API over the lake (see [`http`] for the endpoints).
//!
//! Queries run on a runtime of their own (`serve.query_threads`), so accepting connections,
//! `/healthz` and `/metrics` answer while every query thread is busy.

pub mod config;
pub mod http;
pub mod metrics;
pub mod sql;
pub mod tables;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use loglake_lake::Lake;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use config::ServeConfig;

use crate::engine::QueryEngine;
use crate::error::QueryError;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("could not listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("could not start the query runtime")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("the HTTP server failed")]
    Http(#[source] std::io::Error),
}

/// Serves until `shutdown`; then stops accepting and lets the requests in progress finish.
/// `on_listening` gets the bound address (port 0 picks a free one).
pub async fn serve(
    lake: Lake,
    config: ServeConfig,
    shutdown: CancellationToken,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let addr = config.validate().map_err(ServeError::Config)?;
    let threads = match config.query_threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let query_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("loglake-query")
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    let engine = Arc::new(QueryEngine::new(lake, config.limits())?);
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = metrics::ServeMetrics::register(&mut registry);
    let state = Arc::new(http::AppState {
        engine,
        slots: Arc::new(Semaphore::new(config.max_concurrent_queries)),
        running: Mutex::new(HashMap::new()),
        metrics,
        registry,
        query_runtime: query_runtime.handle().clone(),
        described: Mutex::new(HashMap::new()),
        config,
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(ServeError::Http)?;
    tracing::info!(addr = %bound, auth = if state.config.tokens.is_empty() { "none" } else { "bearer" }, "serving SQL over HTTP");
    on_listening(bound);
    let app = http::router(Arc::clone(&state));
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(ServeError::Http);
    query_runtime.shutdown_background();
    tracing::info!("query service stopped");
    result
}
