use loglake_lake::LakeError;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("invalid configuration: {key} {message}")]
    Config { key: String, message: String },
    #[error(transparent)]
    Schema(#[from] loglake_schemas::SchemaError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("Kafka: {context}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("could not check {topic}[{partition}] against the broker: {reason}")]
    Probe {
        topic: String,
        partition: i32,
        reason: String,
    },
    #[error("could not build Arrow data for topic {topic}")]
    Arrow {
        topic: String,
        #[source]
        source: arrow::error::ArrowError,
    },
    #[error("Kafka authentication: {message}")]
    Auth { message: String },
    #[error("metrics endpoint could not listen on {addr}")]
    Metrics {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("shutdown: the final flush did not finish within {grace:?}; uncommitted records will be re-read on restart")]
    ShutdownTimeout { grace: std::time::Duration },
}
