//! The Kafka side: consumer creation, and rebalance events signalled (never acted on) from
//! librdkafka's callbacks. The main loop reads the Delta txn versions and seeks.

use std::sync::Arc;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::{ClientContext, Statistics, TopicPartitionList};
use tokio::sync::mpsc::UnboundedSender;

use crate::config::KafkaConfig;
use crate::error::IngestError;
use crate::metrics::Metrics;

/// What a rebalance did, in the order librdkafka did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
}

/// librdkafka context: forwards rebalances to the main loop and statistics to metrics.
#[derive(Debug)]
pub struct LoglakeContext {
    events: UnboundedSender<RebalanceEvent>,
    metrics: Arc<Metrics>,
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ClientContext for LoglakeContext {
    fn stats(&self, statistics: Statistics) {
        let mut lag = self.metrics.lag.lock().expect("lag map");
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    lag.insert((topic.clone(), *partition), p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for LoglakeContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let revoked = partitions(tpl);
            tracing::info!(partitions = ?revoked, "partitions revoked");
            let mut lag = self.metrics.lag.lock().expect("lag map");
            for key in &revoked {
                lag.remove(key);
            }
            let _ = self.events.send(RebalanceEvent::Revoked(revoked));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let assigned = partitions(tpl);
                tracing::info!(partitions = ?assigned, "partitions assigned");
                let _ = self.events.send(RebalanceEvent::Assigned(assigned));
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

pub type Consumer = StreamConsumer<LoglakeContext>;

/// Builds the consumer and subscribes it. loglake's settings come first so that
/// `kafka.options` can tune everything else.
pub fn create(
    config: &KafkaConfig,
    events: UnboundedSender<RebalanceEvent>,
    metrics: Arc<Metrics>,
) -> Result<Consumer, IngestError> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Eager protocols only: cooperative rebalancing plus commits causes storms.
        .set("partition.assignment.strategy", "range,roundrobin")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "5000")
        // librdkafka prefetches up to 64 MiB by default, outside `memory_budget`; 16 MiB
        // keeps a busy partition fed and the worker's footprint close to its budget.
        .set("queued.max.messages.kbytes", "16384")
        .set("client.id", format!("loglake-{}", std::process::id()));
    for (key, value) in &config.options {
        client.set(key, value);
    }
    let consumer: Consumer = client
        .create_with_context(LoglakeContext { events, metrics })
        .map_err(|source| IngestError::Kafka {
            context: "could not create the consumer (check kafka.options)".into(),
            source,
        })?;
    let subscription = config.subscription();
    let topics: Vec<&str> = subscription.iter().map(String::as_str).collect();
    rdkafka::consumer::Consumer::subscribe(&consumer, &topics).map_err(|source| {
        IngestError::Kafka {
            context: format!("could not subscribe to {topics:?}"),
            source,
        }
    })?;
    Ok(consumer)
}

/// `auto.offset.reset` as configured: where a partition with no txn in the table starts.
pub fn starts_at_end(config: &KafkaConfig) -> bool {
    matches!(
        config.options.get("auto.offset.reset").map(String::as_str),
        Some("latest" | "largest" | "end")
    )
}
