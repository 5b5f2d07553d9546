//! SQL over the lake, for every front end: a DataFusion session whose catalog is the lake
//! ([`catalog`]), an engine that plans one read-only statement and runs it as a bounded,
//! cancellable stream ([`engine`]), answer formats ([`format`](mod@format)), and the service
//! `loglake serve` ([`serve`](mod@serve)): HTTP, the Postgres wire protocol and Arrow Flight SQL, all on
//! that one engine. The session also carries `pg_catalog` and the functions Postgres drivers
//! call on connect.
//!
//! **Never:** write to the lake, read a local file or URL, or hold more than
//! `memory_per_query` for a query. The sandbox is checked on the plan (DataFusion's
//! `SQLOptions::verify_plan`), not on the SQL text.
//!
//! Tables are named after their topic (lowercased, `[^a-z0-9_]` -> `_`); a topic's quarantine
//! is `<name>__rejected`; `logs` spans every topic. A filter on `timestamp` prunes the
//! `date`/`hour` partitions by itself ([`prune`]), found by search in a per-version index of
//! the table's files (`scan`): a one-hour query does not read the rest of the table's file list.
//!
//! ```no_run
//! # async fn demo(lake: loglake_lake::Lake) -> Result<(), loglake_query::QueryError> {
//! let engine = loglake_query::QueryEngine::new(lake, loglake_query::Limits::default())?;
//! let batches = engine
//!     .sql("SELECT host, count(*) FROM app_logs WHERE timestamp > now() - interval '1 hour' GROUP BY host")
//!     .await?;
//! # Ok(()) }
//! ```

pub mod catalog;
pub mod engine;
mod error;
pub mod format;
mod limits;
mod pg_compat;
pub mod prune;
mod scan;
pub mod serve;

pub use engine::{Control, Params, Planned, QueryEngine, Running, Stats};
pub use error::QueryError;
pub use format::{Encoder, Format};
pub use limits::Limits;
pub use serve::{serve, ServeConfig, ServeError};
