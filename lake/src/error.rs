use deltalake::DeltaTableError;

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("lake.url {url:?} is not valid: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("could not reach the store at {url}")]
    Store {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error(
        "the store at {url} does not enforce put-if-absent (If-None-Match): a second \
         conditional write of {probe} succeeded. Concurrent Delta commits would silently \
         overwrite each other. Use a store that supports conditional writes (AWS S3, MinIO, \
         ...) or, if exactly one process ever writes to this lake, set lake.single_writer = true"
    )]
    UnsafeStore { url: String, probe: String },
    #[error("Delta table {table}")]
    Delta {
        table: String,
        #[source]
        source: Box<DeltaTableError>,
    },
    #[error("table {table}: another writer committed for {app_id} since version {read_version}")]
    TxnConflict {
        table: String,
        app_id: String,
        read_version: u64,
    },
    #[error("table {table}: a concurrent commit conflicts with this one (read at version {read_version}): {reason}")]
    Conflict {
        table: String,
        read_version: u64,
        reason: String,
    },
    #[error("could not encode data for {table}")]
    Encode {
        table: String,
        #[source]
        source: arrow::error::ArrowError,
    },
}

impl LakeError {
    pub fn delta(table: &str, source: DeltaTableError) -> Self {
        Self::Delta {
            table: table.to_string(),
            source: Box::new(source),
        }
    }
}
