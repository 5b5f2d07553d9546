//! The archive as Delta tables on object storage: where tables live, how they are opened,
//! created, written and committed, and whether the store is safe to commit to.
//!
//! A [`Lake`] is a URL (`file:///path` or `s3://bucket/prefix`) plus credentials. Each Kafka
//! topic is one Delta table at `<lake>/<topic>` partitioned by `host`, `date`, `hour`; its
//! quarantine table sits at `<lake>/<topic>__rejected`. Commits carry Delta `txn` actions so a
//! writer can record how far it got in a source; an appending writer holds a table as an
//! [`append::AppendTable`] (version, schema, progress: never the file list), readers and the
//! compactor load it whole and commit through [`commit`]; [`progress`] reads the txns back in
//! one log replay and derives `complete_through`. A table's columns only grow
//! ([`evolve`]); writers align rows to them by name.
//!
//! This crate knows nothing of Kafka or of network protocols. It must never commit to a store
//! that ignores put-if-absent unless the operator acknowledged a single writer
//! ([`Lake::ensure_safe_for_writes`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), loglake_lake::LakeError> {
//! use loglake_lake::{Lake, LakeConfig};
//! let lake = Lake::connect(&LakeConfig::local("/tmp/lake")).await?;
//! lake.ensure_safe_for_writes().await?;
//! for table in lake.list_tables().await? {
//!     println!("{} -> {}", table.sql_name, table.url);
//! }
//! # Ok(()) }
//! ```

pub mod append;
pub mod commit;
mod config;
mod error;
pub mod evolve;
mod naming;
pub mod progress;
mod selfcheck;
mod store;
pub mod write;

pub use config::{LakeConfig, S3Config, Secret};
pub use error::LakeError;
pub use naming::{sql_table_name, TableInfo, REJECTED_SUFFIX};
pub use selfcheck::{check_put_if_absent, SELF_CHECK_PREFIX};
pub use store::Lake;

pub use deltalake;
