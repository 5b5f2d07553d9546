use loglake_lake::LakeError;

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error("invalid configuration: {key} {message}")]
    Config { key: String, message: String },
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("table {table}: could not read {path}")]
    Read {
        table: String,
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("table {table}: could not write {path}")]
    Write {
        table: String,
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("table {table}: could not merge {partition}")]
    Merge {
        table: String,
        partition: String,
        #[source]
        source: arrow::error::ArrowError,
    },
    #[error("table {table}: another compactor committed since version {read_version}; re-planning on the next pass")]
    Fenced { table: String, read_version: u64 },
    #[error("{failed} of {tables} tables failed; first: {first}")]
    Pass {
        failed: usize,
        tables: usize,
        first: String,
    },
}
