//! What can go wrong with a query, in categories a front end maps to its own codes.

use std::time::Duration;

use datafusion::error::DataFusionError;
use loglake_lake::LakeError;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL does not parse or plan (syntax, unknown table or column, bad types): the
    /// user's to fix.
    #[error("invalid SQL: {}", .0.strip_backtrace())]
    Plan(#[source] DataFusionError),
    /// A parameter is missing, extra, or of a value the plan cannot take.
    #[error("bad parameter: {0}")]
    Param(String),
    /// The SQL asks for something a read-only archive does not do.
    #[error("refused: loglake's SQL is read-only (no DDL, DML, COPY, SET or PREPARE): {}", .0.strip_backtrace())]
    ReadOnly(#[source] DataFusionError),
    #[error("the statement is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    /// The query needed more memory (or spill space) than a query may have.
    #[error("resources exhausted: {}", .0.strip_backtrace())]
    ResourcesExhausted(#[source] DataFusionError),
    #[error("the query ran longer than {} and was stopped", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("the query was cancelled")]
    Cancelled,
    #[error("the query failed: {}", .0.strip_backtrace())]
    Execution(#[source] DataFusionError),
    #[error(transparent)]
    Lake(#[from] LakeError),
}

impl QueryError {
    /// An error while planning: the user's SQL, unless DataFusion says otherwise.
    pub(crate) fn plan(e: DataFusionError) -> Self {
        match e.find_root() {
            DataFusionError::ResourcesExhausted(_) => Self::ResourcesExhausted(e),
            DataFusionError::External(_)
            | DataFusionError::ObjectStore(_)
            | DataFusionError::IoError(_)
            | DataFusionError::Internal(_) => Self::Execution(e),
            _ => Self::Plan(e),
        }
    }

    /// An error while running.
    pub(crate) fn execution(e: DataFusionError) -> Self {
        match e.find_root() {
            DataFusionError::ResourcesExhausted(_) => Self::ResourcesExhausted(e),
            _ => Self::Execution(e),
        }
    }

    /// A short stable name, for clients and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Plan(_) => "invalid_sql",
            Self::Param(_) => "bad_parameter",
            Self::ReadOnly(_) => "read_only",
            Self::TooLarge { .. } => "statement_too_large",
            Self::ResourcesExhausted(_) => "resources_exhausted",
            Self::Timeout(_) => "timeout",
            Self::Cancelled => "cancelled",
            Self::Execution(_) => "execution_failed",
            Self::Lake(_) => "storage",
        }
    }
}
