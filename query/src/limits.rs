//! What one query may use. Shared by every front end; `[serve]` sets it for the service.

use std::path::PathBuf;
use std::time::Duration;

/// Per-query limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A statement longer than this is refused before parsing.
    pub max_statement_bytes: usize,
    /// A query is stopped (and its CPU freed) after this long.
    pub query_timeout: Duration,
    /// Memory one query may hold; sorts and aggregations spill past it, other operators fail
    /// with "resources exhausted".
    pub memory_per_query: usize,
    /// Rows returned at most; more are cut off and the answer is marked truncated.
    pub max_result_rows: Option<u64>,
    /// Where spills go (default: the OS temp directory).
    pub spill_dir: Option<PathBuf>,
    /// All queries' spill files together stay under this.
    pub max_spill_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_statement_bytes: 1 << 20,
            query_timeout: Duration::from_secs(300),
            memory_per_query: 1 << 30,
            max_result_rows: None,
            spill_dir: None,
            max_spill_bytes: 10 << 30,
        }
    }
}
