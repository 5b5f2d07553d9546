//! What can stop the agent. Everything else (a file that vanished, a broker that is down) is
//! logged, counted and retried.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid configuration: {key}: {message}")]
    Config { key: String, message: String },
    #[error("{}: {message}", path.display())]
    State { path: PathBuf, message: String },
    #[error("could not create the Kafka producer (check the [kafka] settings): {0}")]
    Producer(#[source] rdkafka::error::KafkaError),
    #[error(transparent)]
    Kafka(#[from] loglake_ingest::IngestError),
    #[error("metrics endpoint on {listen}: {source}")]
    Metrics {
        listen: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the tailing thread failed: {0}")]
    Thread(String),
}

impl AgentError {
    pub(crate) fn config(key: &str, message: impl Into<String>) -> Self {
        Self::Config {
            key: key.into(),
            message: message.into(),
        }
    }
}
