//! The producer: idempotent, `acks=all`, no delivery timeout (a broker outage is waited
//! out, never turned into lost lines), delivery reports forwarded to the tailing loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use rdkafka::client::OAuthToken;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use loglake_ingest::{KafkaConfig, TokenSource};

use crate::config::AgentConfig;
use crate::error::AgentError;

/// Which record of which file a delivery report is about.
#[derive(Debug)]
pub struct Ack {
    /// The tracked file's id (unique for the life of the agent).
    pub file: u64,
    pub generation: u32,
    pub seq: u64,
    pub bytes: u32,
}

/// What wakes the tailing loop.
#[derive(Debug)]
pub enum Event {
    Delivered(Box<Ack>, Result<(), KafkaError>),
    /// A filesystem notification: some watched file changed.
    Wake,
    Stop,
}

pub type Producer = ThreadedProducer<ShipContext>;

#[derive(Debug)]
pub struct ShipContext {
    events: Sender<Event>,
    tokens: TokenSource,
}

impl ClientContext for ShipContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        self.tokens.token()
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(target: "librdkafka", fac, "{log_message}")
            }
            L::Warning => tracing::warn!(target: "librdkafka", fac, "{log_message}"),
            _ => tracing::debug!(target: "librdkafka", fac, "{log_message}"),
        }
    }
}

impl ProducerContext for ShipContext {
    type DeliveryOpaque = Box<Ack>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Box<Ack>) {
        let result = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.clone()),
        };
        // The loop is gone only at exit, when reports no longer matter.
        let _ = self.events.send(Event::Delivered(ack, result));
    }
}

/// The producer's settings: the shared connection settings, loglake's delivery guarantees,
/// then `agent.producer_options`.
pub fn producer_config(kafka: &KafkaConfig, agent: &AgentConfig, host: &str) -> ClientConfig {
    let mut client = loglake_ingest::connection_config(kafka);
    let max_line = agent.max_line_bytes.as_u64();
    let in_flight_kib = agent.max_in_flight.as_u64() / 1024;
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // 0 = no timeout: a record waits out any outage rather than fail.
        .set("message.timeout.ms", "0")
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        // Room for the agent's own in-flight limit plus one chunk's records past it.
        .set(
            "queue.buffering.max.kbytes",
            (in_flight_kib * 2 + 1024).to_string(),
        )
        .set("queue.buffering.max.messages", "10000000")
        .set(
            "message.max.bytes",
            (max_line * 2 + 64 * 1024)
                .clamp(1_000_000, 1_000_000_000)
                .to_string(),
        )
        .set("client.id", format!("loglake-agent-{host}"));
    for (k, v) in &agent.producer_options {
        client.set(k, v);
    }
    client
}

pub fn create(
    config: ClientConfig,
    events: Sender<Event>,
    tokens: TokenSource,
) -> Result<Producer, AgentError> {
    config
        .create_with_context(ShipContext { events, tokens })
        .map_err(AgentError::Producer)
}

/// Filesystem notifications -> one coalesced `Wake` at a time.
pub fn waker(events: Sender<Event>, woken: Arc<AtomicBool>) -> impl Fn() + Send + 'static {
    move || {
        if !woken.swap(true, Ordering::Relaxed) {
            let _ = events.send(Event::Wake);
        }
    }
}
