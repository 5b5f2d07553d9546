//! `loglake serve`: the HTTP SQL API over the lake (see [`http`] for the endpoints), and the
//! Postgres wire protocol (`pg`) and Arrow Flight SQL (`flight`) on the same engine, limits, tokens and metrics.
//!
//! Queries run on a runtime of their own (`serve.query_threads`), so accepting connections,
//! `/healthz` and `/metrics` answer while every query thread is busy.

mod admit;
pub mod config;
mod flight;
pub mod http;
pub mod metrics;
mod pg;
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
    let query_runtime = QueryRuntime(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("loglake-query")
            .enable_all()
            .build()
            .map_err(ServeError::Runtime)?,
    ));
    let engine = Arc::new(QueryEngine::new(lake, config.limits())?);
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = metrics::ServeMetrics::register(&mut registry);
    let state = Arc::new(http::AppState {
        engine,
        slots: Arc::new(Semaphore::new(config.max_concurrent_queries)),
        running: Mutex::new(HashMap::new()),
        metrics,
        registry,
        query_runtime: query_runtime.handle(),
        described: Mutex::new(HashMap::new()),
        config,
    });
    let tls = match (&state.config.pg_tls_cert, &state.config.pg_tls_key) {
        (Some(cert), Some(key)) => Some(pg::tls_acceptor(cert, key)?),
        _ => None,
    };
    let mut fronts = Vec::new();
    if let Some(listen) = state.config.pg_listen.clone() {
        let (pg_listener, pg_addr) = bind("serve.pg_listen", &listen).await?;
        tracing::info!(addr = %pg_addr, tls = tls.is_some(), "serving SQL over the Postgres wire protocol");
        fronts.push(tokio::spawn(pg::serve_pg(
            Arc::clone(&state),
            pg_listener,
            tls,
            shutdown.clone(),
        )));
    }
    if let Some(listen) = state.config.flight_listen.clone() {
        let (flight_listener, flight_addr) = bind("serve.flight_listen", &listen).await?;
        tracing::info!(addr = %flight_addr, "serving SQL over Arrow Flight SQL");
        let state = Arc::clone(&state);
        let shutdown = shutdown.clone();
        fronts.push(tokio::spawn(async move {
            if let Err(e) = flight::serve_flight(state, flight_listener, shutdown).await {
                tracing::error!(error = %e, "the Flight SQL server failed");
            }
        }));
    }
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
    for front in fronts {
        let _ = front.await;
    }
    drop(query_runtime);
    tracing::info!("query service stopped");
    result
}

/// The queries' own runtime, shut down without waiting however [`serve`] returns: a runtime
/// dropped the ordinary way inside the service's async context panics (it did when a listen
/// address was taken, instead of saying so).
struct QueryRuntime(Option<tokio::runtime::Runtime>);

impl QueryRuntime {
    fn handle(&self) -> tokio::runtime::Handle {
        self.0
            .as_ref()
            .map(|rt| rt.handle().clone())
            .expect("the runtime lives until dropped")
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Binds a front end's `key` (`serve.pg_listen`, `serve.flight_listen`).
async fn bind(key: &str, addr: &str) -> Result<(tokio::net::TcpListener, SocketAddr), ServeError> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| ServeError::Config(format!("{key}: {addr:?} is not host:port ({e})")))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(ServeError::Http)?;
    Ok((listener, bound))
}
