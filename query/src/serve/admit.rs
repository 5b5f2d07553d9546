//! What every protocol does around a query: take a concurrency slot (or be refused as busy),
//! register a cancel handle under the query's id, count it in flight, and record its outcome
//! in the metrics when it ends — however it ends, the client going away included.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use datafusion::logical_expr::LogicalPlan;

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::engine::{Control, Params, Running, Stats};
use crate::error::QueryError;
use crate::serve::config::ServeConfig;
use crate::serve::http::AppState;

/// Why a query was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `max_concurrent_queries` are running.
    Busy,
    /// A query with this id is running (HTTP lets the client choose ids).
    DuplicateId,
}

pub(crate) fn busy_message(state: &AppState) -> String {
    format!(
        "{} queries are running, the most serve.max_concurrent_queries allows; retry later",
        state.config.max_concurrent_queries
    )
}

/// One query from admission to its last row. Dropping it cancels the query (the client went
/// away) and records the outcome: `status` if one was set, else `disconnected`.
pub(crate) struct Admission {
    state: Arc<AppState>,
    id: String,
    protocol: &'static str,
    pub cancel: CancellationToken,
    started: Instant,
    pub status: Option<&'static str>,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("id", &self.id)
            .field("protocol", &self.protocol)
            .finish()
    }
}

impl Admission {
    /// Admits a query under `id`, which `DELETE /v1/queries/{id}` can then cancel whichever
    /// protocol it came by.
    pub fn admit(
        state: &Arc<AppState>,
        id: String,
        protocol: &'static str,
    ) -> Result<Self, Refused> {
        let Ok(permit) = Arc::clone(&state.slots).try_acquire_owned() else {
            state.metrics.rejected_busy.inc();
            state.metrics.finished(protocol, "busy");
            return Err(Refused::Busy);
        };
        let cancel = CancellationToken::new();
        {
            let mut running = state.running.lock().unwrap_or_else(|e| e.into_inner());
            if running.contains_key(&id) {
                return Err(Refused::DuplicateId);
            }
            running.insert(id.clone(), cancel.clone());
        }
        state.metrics.in_flight.inc();
        Ok(Self {
            state: Arc::clone(state),
            id,
            protocol,
            cancel,
            started: Instant::now(),
            status: None,
            _permit: permit,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The answer was sent in full.
    pub fn finished(&mut self, stats: &Stats) {
        let m = &self.state.metrics;
        m.rows_returned.inc_by(stats.rows);
        m.bytes_scanned.inc_by(stats.bytes_scanned);
        self.status = Some("ok");
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.state
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        self.state.metrics.in_flight.dec();
        self.state
            .metrics
            .duration
            .observe(self.started.elapsed().as_secs_f64());
        let status = self.status.unwrap_or("disconnected");
        self.state.metrics.finished(self.protocol, status);
        if status == "disconnected" {
            tracing::info!(query_id = %self.id, protocol = self.protocol, "client went away: query cancelled");
        }
    }
}

/// Whether `presented` is one of the configured tokens (any, when none are configured).
/// Compared in constant time.
pub(crate) fn token_ok(config: &ServeConfig, presented: Option<&str>) -> bool {
    if config.tokens.is_empty() {
        return true;
    }
    presented.is_some_and(|p| {
        config
            .tokens
            .iter()
            .any(|t| constant_time_eq(t.expose().as_bytes(), p.as_bytes()))
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A query admitted, bound and running, its first batch already in hand (so errors at the
/// start can still be reported as errors, not as a cut answer). Its batches come from
/// [`Started::next`], which records the outcome in the admission.
pub(crate) struct Started {
    pub running: Running,
    admission: Admission,
    first: Option<Result<RecordBatch, QueryError>>,
    done: bool,
}

impl Started {
    /// Binds `plan` and runs it on the query runtime within `timeout`, under `admission`.
    pub async fn start(
        state: &AppState,
        mut admission: Admission,
        plan: LogicalPlan,
        params: Params,
        timeout: Duration,
    ) -> Result<Self, QueryError> {
        let cancel = admission.cancel.clone();
        let planned = tokio::select! {
            p = state.engine.bind(plan, &params, None) => p,
            _ = cancel.cancelled() => Err(QueryError::Cancelled),
            _ = tokio::time::sleep(timeout) => Err(QueryError::Timeout(timeout)),
        };
        let planned = planned.inspect_err(|e| admission.status = Some(e.code()))?;
        let mut running = state.engine.run(
            planned,
            Control {
                cancel,
                timeout,
                runtime: Some(state.query_runtime.clone()),
            },
        );
        let first = match running.next().await {
            Some(Err(e)) => {
                admission.status = Some(e.code());
                return Err(e);
            }
            other => other,
        };
        Ok(Self {
            running,
            admission,
            first,
            done: false,
        })
    }

    pub async fn next(&mut self) -> Option<Result<RecordBatch, QueryError>> {
        if self.done {
            return None;
        }
        let next = match self.first.take() {
            Some(item) => Some(item),
            None => self.running.next().await,
        };
        match next {
            Some(Ok(batch)) => Some(Ok(batch)),
            Some(Err(e)) => {
                self.done = true;
                self.admission.status = Some(e.code());
                tracing::warn!(query_id = %self.admission.id(), protocol = self.admission.protocol, error = %e, "query failed mid-answer");
                Some(Err(e))
            }
            None => {
                self.done = true;
                let stats = self.running.stats();
                self.admission.finished(&stats);
                None
            }
        }
    }
}
