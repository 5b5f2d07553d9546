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

/// Which record of which file a delivery report is about, packed into the producer's opaque
/// word so that sending allocates nothing of ours: the tracked file's id (24 bits), its
/// generation (8 bits), the record's sequence number (its low 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub file: u32,
    pub generation: u8,
    pub seq: u32,
}

const _: () = assert!(usize::BITS == 64, "the agent packs an Ack into 64 bits");

impl Ack {
    /// File ids wrap at this.
    pub const FILE_IDS: u32 = 1 << 24;

    pub fn pack(self) -> usize {
        (u64::from(self.file) << 40 | u64::from(self.generation) << 32 | u64::from(self.seq))
            as usize
    }

    pub fn unpack(word: usize) -> Self {
        let w = word as u64;
        Self {
            file: (w >> 40) as u32 & (Self::FILE_IDS - 1),
            generation: (w >> 32) as u8,
            seq: w as u32,
        }
    }
}

/// What wakes the tailing loop.
#[derive(Debug)]
pub enum Event {
    Delivered(Ack, Result<(), KafkaError>),
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
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: usize) {
        let result = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.clone()),
        };
        // The loop is gone only at exit, when reports no longer matter.
        let _ = self.events.send(Event::Delivered(Ack::unpack(ack), result));
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
        // Fewer, larger batches: librdkafka's cost is per batch as much as per record.
        .set("linger.ms", "50")
        .set("batch.num.messages", "100000")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_survives_the_opaque_word() {
        for ack in [
            Ack {
                file: 0,
                generation: 0,
                seq: 0,
            },
            Ack {
                file: Ack::FILE_IDS - 1,
                generation: 255,
                seq: u32::MAX,
            },
            Ack {
                file: 77,
                generation: 3,
                seq: 123_456,
            },
        ] {
            assert_eq!(Ack::unpack(ack.pack()), ack);
        }
    }
}
