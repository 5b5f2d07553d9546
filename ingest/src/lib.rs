//! Kafka -> buffers -> Parquet -> one Delta commit per flush, with the Kafka offsets inside.
//!
//! [`run`] is an ingest worker: it joins the consumer group, maps every record with its
//! topic's schema (`loglake-schemas`), buffers rows per (topic, host, date, hour) under one
//! memory budget, and flushes a topic when a buffer reaches the file size, when its oldest
//! record reaches the max latency, when the budget is full (largest first), on partition
//! revocation and on shutdown. Each flush is one commit to the topic's quarantine table
//! (if it holds bad records) and one to its data table, each carrying a Delta `txn` per
//! Kafka partition; on assignment a worker seeks past those versions, after checking them
//! against the offsets Kafka still holds (a retention gap becomes an `offset_gap` quarantine
//! row, a recreated topic stops its partitions until accepted). That is what makes ingest
//! exactly once across crashes and rebalances (see ARCHITECTURE.md). A schema file that adds
//! typed columns evolves the table; one that removes or retypes a column is refused.
//!
//! This crate must never commit Kafka offsets ahead of the Delta table, never let Kafka's
//! committed offsets or `auto.offset.reset` pick a position, never do IO inside a librdkafka
//! callback, and never drop a record: what cannot be archived is quarantined.
//!
//! ```no_run
//! # async fn demo(lake: loglake_lake::Lake, kafka: loglake_ingest::KafkaConfig) -> Result<(), loglake_ingest::IngestError> {
//! use tokio_util::sync::CancellationToken;
//! let shutdown = CancellationToken::new();
//! let schemas = loglake_schemas::SchemaSet::default();
//! loglake_ingest::run(kafka, loglake_ingest::IngestConfig::default(), lake, schemas, shutdown).await
//! # }
//! ```

mod batcher;
mod committer;
mod config;
mod consumer;
mod error;
mod host_cap;
mod metrics;
mod msk_iam;
mod positions;
mod probe;
mod resume;
mod stall;
mod stalls;
mod worker;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use futures::{FutureExt as _, StreamExt as _};
use loglake_lake::Lake;
use loglake_schemas::SchemaSet;
use rdkafka::consumer::Consumer as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{IngestConfig, KafkaConfig};
pub use consumer::{connection_config, TokenSource};
pub use error::IngestError;
pub use metrics::Metrics;

/// Runs one ingest worker until `shutdown` is cancelled, then flushes and commits what it
/// holds (within `shutdown_grace`) and leaves the consumer group.
///
/// The future comes boxed from this crate so that its state machine, the main loop's and
/// every future it awaits are compiled here, optimised: an `async fn`'s body is compiled in
/// the crate that polls it, and the binary's crate is built without optimisation (there the
/// loop held a worker to ~42,500 records/s, ~69,000 now, and took more CPU in each of four
/// paired runs; ARCHITECTURE.md, choices).
pub fn run(
    kafka: KafkaConfig,
    config: IngestConfig,
    lake: Lake,
    schemas: SchemaSet,
    shutdown: CancellationToken,
) -> LocalBoxFuture<'static, Result<(), IngestError>> {
    run_worker(kafka, config, lake, schemas, shutdown).boxed_local()
}

async fn run_worker(
    kafka: KafkaConfig,
    config: IngestConfig,
    lake: Lake,
    schemas: SchemaSet,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    kafka.validate()?;
    config.validate()?;
    lake.ensure_safe_for_writes().await?;

    let metrics = Arc::new(Metrics::default());
    metrics.heartbeat_unix_ms.store(metrics::now_ms(), Relaxed);
    metrics
        .stall_after_ms
        .store(config.stall_after.as_millis() as u64, Relaxed);
    metrics
        .stall_unhealthy_after_ms
        .store(config.stall_unhealthy_after.as_millis() as u64, Relaxed);
    let tasks = TaskTracker::new();
    let serve_stop = CancellationToken::new();
    if config.metrics_listen != "off" {
        let addr = metrics::serve(
            &config.metrics_listen,
            metrics.clone(),
            serve_stop.clone(),
            &tasks,
        )
        .await?;
        tracing::info!(%addr, "metrics listening");
    }
    /// Messages handled per turn of the main loop at most (the rebalance events and the
    /// flush checks run between turns).
    const MAX_BATCH: usize = 1024;
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    /// How long the cluster may take to answer at start before the worker gives up.
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
    let tokens = consumer::TokenSource::for_config(&kafka, &tasks, serve_stop.clone()).await?;
    let consumer = consumer::create(
        &kafka,
        events_tx,
        metrics.clone(),
        tokens.clone(),
        CONNECT_TIMEOUT,
    )
    .await?;
    let client = consumer::client_config(&kafka);
    let grace = config.shutdown_grace;
    let mut worker = worker::Worker::new(
        config,
        kafka,
        lake,
        schemas,
        metrics.clone(),
        client.clone(),
        tokens.clone(),
    );
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!("ingest started");

    // One stream for the worker's life: `recv` would register and drop a waker per message.
    let mut stream = consumer.stream();
    let outcome: Result<(), IngestError> = loop {
        let receiving = !worker.paused();
        let mut ticked = false;
        // The tick comes before `recv` so that a busy partition cannot starve the latency
        // flush and the heartbeat; it is ready only every 200ms, so it cannot starve `recv`.
        let received = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Ok(()),
            _ = tick.tick() => {
                ticked = true;
                None
            }
            received = stream.next(), if receiving => received,
        };
        if let Some(first) = received {
            worker.begin_batch();
            let mut next = Some(first);
            let mut handled = 0;
            // Messages librdkafka has already fetched are handled without a trip through
            // `select!` each, until a flush is due, a rebalance is pending (it is handled
            // before reading on, as before) or a batch is done.
            while let Some(received) = next.take() {
                match received {
                    Ok(msg) => worker.on_message(&msg),
                    Err(e) => {
                        worker.on_consume_error(e);
                        break;
                    }
                }
                handled += 1;
                if handled < MAX_BATCH && !worker.needs_flush() && events.is_empty() {
                    next = stream.next().now_or_never().flatten();
                }
            }
        }
        if ticked {
            metrics.heartbeat_unix_ms.store(metrics::now_ms(), Relaxed);
            worker.check_stalls(&consumer, &client, &tokens);
            worker.retry_seeks(&consumer);
            if worker.recheck {
                if let Err(e) = worker.recheck_positions(&consumer).await {
                    tracing::warn!(error = %e, "could not check positions against Kafka; retrying");
                    worker.recheck = true;
                }
            }
        }
        let mut failed = None;
        while let Ok(event) = events.try_recv() {
            if let Err(e) = worker.on_rebalance(&consumer, event).await {
                failed = Some(e);
                break;
            }
        }
        if let Some(e) = failed {
            break Err(e);
        }
        // Per message only the cheap checks; the latency scan runs on the tick.
        if ticked || worker.needs_flush() {
            worker.flush_due(&consumer).await;
        }
    };

    let result = match outcome {
        Ok(()) => {
            tracing::info!("shutting down: flushing buffers");
            match tokio::time::timeout(grace, worker.flush_all(&consumer)).await {
                Ok(r) => r,
                Err(_) => Err(IngestError::ShutdownTimeout { grace }),
            }
        }
        Err(e) => Err(e),
    };
    drop(stream);
    consumer.unsubscribe();
    drop(consumer);
    serve_stop.cancel();
    tasks.close();
    tasks.wait().await;
    if result.is_ok() {
        tracing::info!("ingest stopped cleanly");
    }
    result
}
