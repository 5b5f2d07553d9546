//! `loglake agent`: tails log files on a host and ships their lines to Kafka, where
//! `loglake ingest` (or any consumer) picks them up. No line lost or doubled across rotation,
//! restarts and broker outages, except the documented windows (README, "The agent").
//!
//! - [`config`]: `[agent]` and `[[agent.inputs]]`.
//! - `tail`: the one tailing thread — reads files in turns, applies the timeouts, moves each
//!   file's acknowledged offset and writes the positions. Its `discover` finds files (globs
//!   polled every `poll_interval`, filesystem notifications only wake it early) and follows
//!   renames, deletions and truncations; its `send` hands records to the producer and counts
//!   what is unacknowledged.
//! - `line` and `multiline`: bytes -> lines (partial lines, CRLF, the line limit) -> records.
//! - `record`: a line -> the JSON record ingest's default mapping reads.
//! - `positions`: file identity (device + inode + a fingerprint of the first bytes) and the
//!   positions file, replaced atomically, refused when corrupt.
//! - `ship`: the idempotent producer and its delivery reports.
//! - `metrics`: `/metrics` and `/healthz`.

pub mod config;
mod error;
mod line;
mod metrics;
mod multiline;
mod positions;
mod record;
mod ship;
mod tail;

use std::path::{Component, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt as _;
use loglake_ingest::{KafkaConfig, TokenSource};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{AgentConfig, InputConfig};
pub use error::AgentError;

use crate::metrics::Metrics;
use crate::positions::{StateLock, Store};
use crate::ship::Event;

/// Runs the agent until `shutdown`: then it stops reading, waits for the broker to
/// acknowledge what was sent (at most `shutdown_grace`), writes the positions and returns.
///
/// Boxed here so that the agent's loop is compiled in this (optimised) crate, not in the
/// binary's, which polls it: see `loglake_ingest::run`.
pub fn run(
    kafka: KafkaConfig,
    config: AgentConfig,
    shutdown: CancellationToken,
) -> BoxFuture<'static, Result<(), AgentError>> {
    run_agent(kafka, config, shutdown).boxed()
}

async fn run_agent(
    kafka: KafkaConfig,
    config: AgentConfig,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    config.validate()?;
    kafka.validate_security()?;
    let host = config.host()?;
    let state_dir = config.state_dir();
    let lock = StateLock::acquire(&state_dir)?;
    let store = Store::new(&state_dir);
    let saved = store.load()?;
    let metrics = Arc::new(Metrics::new());
    let tasks = TaskTracker::new();
    let stop_tasks = CancellationToken::new();
    let tokens = TokenSource::for_config(&kafka, &tasks, stop_tasks.clone()).await?;
    let (events, inbox) = std::sync::mpsc::channel();
    let producer = ship::create(
        ship::producer_config(&kafka, &config, &host),
        events.clone(),
        tokens,
    )?;
    if config.metrics_listen != "off" {
        let render = {
            let m = metrics.clone();
            Arc::new(move || m.render())
        };
        let health = {
            let m = metrics.clone();
            Arc::new(move || m.health())
        };
        let addr = loglake_telemetry::serve(
            &config.metrics_listen,
            render,
            health,
            stop_tasks.clone(),
            &tasks,
        )
        .await
        .map_err(|source| AgentError::Metrics {
            listen: config.metrics_listen.clone(),
            source,
        })?;
        tracing::info!(%addr, "metrics listening");
    }
    let woken = Arc::new(AtomicBool::new(false));
    let _watcher = config
        .notify
        .then(|| watch(&config, ship::waker(events.clone(), woken.clone())))
        .flatten();
    let stop = Arc::new(AtomicBool::new(false));
    tokio::spawn({
        let (stop, events) = (stop.clone(), events.clone());
        async move {
            shutdown.cancelled().await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = events.send(Event::Stop);
        }
    });
    drop(events);
    tracing::info!(
        host,
        inputs = config.inputs.len(),
        positions = %store.path().display(),
        first_start = saved.is_none(),
        "agent started"
    );
    let tailer = tail::Tailer::new(tail::Parts {
        config,
        host,
        store,
        saved,
        producer,
        events: inbox,
        woken,
        stop,
        metrics,
    })?;
    tokio::task::spawn_blocking(move || tailer.run())
        .await
        .map_err(|e| AgentError::Thread(e.to_string()))?;
    stop_tasks.cancel();
    tasks.close();
    tasks.wait().await;
    drop(lock);
    tracing::info!("agent stopped");
    Ok(())
}

/// Watches the directories the globs start from; a notification only wakes the loop early
/// (polling finds everything anyway, which is what network filesystems rely on).
fn watch(
    config: &AgentConfig,
    wake: impl Fn() + Send + 'static,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let handler = move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            wake();
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "no filesystem notifications: polling only");
            return None;
        }
    };
    for input in &config.inputs {
        for pattern in &input.paths {
            let (dir, recursive) = watch_root(pattern);
            let mode = if recursive {
                notify::RecursiveMode::Recursive
            } else {
                notify::RecursiveMode::NonRecursive
            };
            if let Err(e) = watcher.watch(&dir, mode) {
                tracing::debug!(dir = %dir.display(), error = %e, "not watched (polled)");
            }
        }
    }
    Some(watcher)
}

/// The directory a glob's files live under (the components before the first wildcard), and
/// whether the glob descends below it.
fn watch_root(pattern: &str) -> (PathBuf, bool) {
    let mut root = PathBuf::new();
    let path = std::path::Path::new(pattern);
    let components: Vec<Component<'_>> = path.components().collect();
    for (i, c) in components.iter().enumerate() {
        let s = c.as_os_str().to_string_lossy();
        if s.contains(['*', '?', '[']) {
            let recursive = components[i..].len() > 1 || s.contains("**");
            return (root, recursive);
        }
        if i + 1 == components.len() {
            break;
        }
        root.push(c);
    }
    (root, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_are_watched_from_their_last_fixed_directory() {
        assert_eq!(
            watch_root("/var/log/app/*.log"),
            (PathBuf::from("/var/log/app"), false)
        );
        assert_eq!(
            watch_root("/var/log/app/current.log"),
            (PathBuf::from("/var/log/app"), false)
        );
        assert_eq!(
            watch_root("/var/log/**/*.log"),
            (PathBuf::from("/var/log"), true)
        );
        assert_eq!(
            watch_root("/srv/*/logs/app.log"),
            (PathBuf::from("/srv"), true)
        );
    }
}
