//! Putting a partition where the table says it is, with Kafka's agreement.
//!
//! [`resume`] decides (pure); this acts: it asks the broker for the watermarks (and, when the
//! end looks too low, whether the last archived record is still there), then seeks, records
//! an `offset_gap`, starts an accepted recreated topic over, or stops the partition.
//!
//! **Invariant: no fallback position.** librdkafka's `auto.offset.reset` is `error` for the
//! worker's consumer (the configured value only picks where a partition the table has never
//! seen starts), and a partition whose seek failed reads nothing (`next` is `None`) until a
//! later seek succeeds. So the consumer group's committed offsets, or a reset to either end,
//! can never decide where archiving continues.

use std::time::Duration;

use loglake_lake::commit::{commit_with_progress, TxnUpdate};
use loglake_schemas::{RejectedRecord, Rejection, RejectionKind};
use rdkafka::consumer::Consumer as _;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use crate::consumer::{starts_at_end, Consumer};
use crate::error::IngestError;
use crate::metrics::{now_ms, Metrics};
use crate::probe;
use crate::resume::{self, Resume, Start, Target};
use crate::worker::{app_id, Worker};

/// How long the broker may take to answer a watermark query or a confirmation fetch.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

impl Worker {
    /// What to do with a partition whose table progress is `committed`.
    pub(crate) async fn decide(
        &self,
        consumer: &Consumer,
        topic: &str,
        partition: i32,
        committed: Option<i64>,
    ) -> Result<Resume, IngestError> {
        let start = if starts_at_end(&self.kafka) {
            Start::End
        } else {
            Start::Beginning
        };
        if committed.is_none() {
            return Ok(resume::classify(None, 0, 0, start));
        }
        let (low, high) = tokio::task::block_in_place(|| {
            consumer.fetch_watermarks(topic, partition, BROKER_TIMEOUT)
        })
        .map_err(|source| IngestError::Kafka {
            context: format!("reading the offsets Kafka holds for {topic}[{partition}]"),
            source,
        })?;
        let decision = resume::classify(committed, low, high, start);
        let Resume::Confirm {
            committed,
            low,
            end,
        } = decision
        else {
            return Ok(decision);
        };
        let (client, tokens, t) = (
            self.probe_client.clone(),
            self.tokens.clone(),
            topic.to_string(),
        );
        let there = tokio::task::spawn_blocking(move || {
            probe::probe(&client, &tokens, &t, partition, committed, BROKER_TIMEOUT).record_exists()
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|answer| answer)
        .map_err(|reason| IngestError::Probe {
            topic: topic.to_string(),
            partition,
            reason,
        })?;
        Ok(resume::confirmed(committed, low, end, there))
    }

    /// Acts on a decision: seek, record a gap and seek past it, start over, or stop.
    pub(crate) async fn position(
        &mut self,
        consumer: &Consumer,
        topic: &str,
        partition: i32,
        decision: Resume,
    ) -> Result<(), IngestError> {
        match decision {
            Resume::At(target) => self.seek_to(consumer, topic, partition, target).await,
            Resume::Gap { first, last } => {
                self.record_gap(topic, partition, first, last);
                self.seek_to(consumer, topic, partition, Target::Offset(last + 1))
                    .await
            }
            Resume::Recreated {
                committed,
                low,
                end,
            } if self
                .config
                .accept_recreated_topics
                .iter()
                .any(|t| t == topic) =>
            {
                self.start_over(topic, partition, committed, low).await?;
                tracing::warn!(
                    topic,
                    partition,
                    archived_through = committed,
                    new_end = end,
                    starts_at = low,
                    "recreated topic accepted (ingest.accept_recreated_topics): the partition starts over at the new topic's first offset"
                );
                self.seek_to(consumer, topic, partition, Target::Offset(low))
                    .await
            }
            Resume::Recreated { committed, end, .. } => {
                self.block(consumer, topic, partition, committed, end);
                Ok(())
            }
            Resume::Confirm { .. } => unreachable!("decide() answers every Confirm"),
        }
    }

    /// Seeks, retrying briefly; if the seek still fails the partition reads nothing until
    /// [`Worker::retry_seeks`] succeeds.
    async fn seek_to(
        &mut self,
        consumer: &Consumer,
        topic: &str,
        partition: i32,
        target: Target,
    ) -> Result<(), IngestError> {
        let key = (topic.to_string(), partition);
        for attempt in 0..10 {
            match try_seek(consumer, topic, partition, target) {
                Ok(next) => {
                    self.unseeked.remove(&key);
                    if let Some(s) = self.partitions.get_mut(&key) {
                        s.next = Some(next);
                    }
                    return Ok(());
                }
                Err(e) if attempt == 9 => {
                    tracing::warn!(topic, partition, ?target, error = %e, "seek failed; the partition reads nothing until a retry succeeds");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        if let Some(s) = self.partitions.get_mut(&key) {
            s.next = None;
        }
        self.unseeked.insert(key, target);
        Ok(())
    }

    /// On the tick: seeks that failed are tried again.
    pub fn retry_seeks(&mut self, consumer: &Consumer) {
        let pending: Vec<((String, i32), Target)> =
            self.unseeked.iter().map(|(k, t)| (k.clone(), *t)).collect();
        for (key, target) in pending {
            if !self.partitions.contains_key(&key) {
                self.unseeked.remove(&key);
                continue;
            }
            if let Ok(next) = try_seek(consumer, &key.0, key.1, target) {
                tracing::info!(topic = %key.0, partition = key.1, ?target, "seek succeeded on retry");
                if let Some(s) = self.partitions.get_mut(&key) {
                    s.next = Some(next);
                }
                self.unseeked.remove(&key);
            }
        }
    }

    /// After librdkafka reported an offset out of range (retention overtook a lagging
    /// partition, or the topic was recreated under it): every partition is checked against
    /// Kafka's offsets from where it stands, and moved only where they disagree.
    pub async fn recheck_positions(&mut self, consumer: &Consumer) -> Result<(), IngestError> {
        self.recheck = false;
        let standing: Vec<((String, i32), i64)> = self
            .partitions
            .iter()
            .filter_map(|(k, s)| s.next.map(|n| (k.clone(), n)))
            .collect();
        for ((topic, partition), next) in standing {
            let decision = self
                .decide(consumer, &topic, partition, Some(next - 1))
                .await?;
            if decision == Resume::At(Target::Offset(next)) {
                continue;
            }
            tracing::warn!(%topic, partition, next, ?decision, "partition position disagrees with Kafka's offsets");
            if matches!(decision, Resume::Recreated { .. }) {
                // What is buffered belongs to the old generation: commit it first.
                self.flush_topic(consumer, &topic).await?;
            }
            self.position(consumer, &topic, partition, decision).await?;
        }
        Ok(())
    }

    /// Kafka deleted `first..=last` before they were read: one `offset_gap` quarantine row,
    /// committed by the next flush like any quarantined record.
    fn record_gap(&mut self, topic: &str, partition: i32, first: i64, last: i64) {
        let Some(topic_state) = self.topics.get_mut(topic) else {
            return;
        };
        let lost = last - first + 1;
        let detected_ms = now_ms();
        let now = chrono::DateTime::from_timestamp_millis(detected_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default();
        let rejection = Rejection {
            kind: RejectionKind::OffsetGap,
            detail: format!(
                "offsets {first}..={last} of {topic}[{partition}] ({lost} offsets) were deleted by Kafka \
                 (retention) before loglake archived them; detected at {now}"
            ),
        };
        topic_state.buffer.push_rejected(
            &RejectedRecord {
                topic,
                partition,
                offset: first,
                kafka_timestamp_ms: None,
                key: None,
                payload: None,
                received_at_us: detected_ms * 1000,
            },
            &rejection,
        );
        topic_state.buffer.note_offset(partition, first, None, None);
        topic_state.buffer.note_offset(partition, last, None, None);
        Metrics::add(&self.metrics.offset_gaps, 1);
        Metrics::add(&self.metrics.offset_gap_records, lost as u64);
        tracing::error!(
            topic,
            partition,
            first,
            last,
            lost,
            "records deleted by Kafka before they were archived (retention shorter than the outage or the lag): recorded as an offset_gap row in the quarantine table"
        );
    }

    /// A recreated topic not accepted: stop reading the partition, loudly.
    fn block(
        &mut self,
        consumer: &Consumer,
        topic: &str,
        partition: i32,
        committed: i64,
        end: i64,
    ) {
        let key = (topic.to_string(), partition);
        if let Some(s) = self.partitions.get_mut(&key) {
            s.next = None;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        if let Err(e) = consumer.pause(&tpl) {
            tracing::debug!(topic, partition, error = %e, "could not pause a blocked partition; its records are ignored");
        }
        self.metrics
            .fetch
            .lock()
            .expect("fetch tracker")
            .forget(topic, partition);
        self.metrics
            .blocked
            .lock()
            .expect("blocked set")
            .insert(key);
        tracing::error!(
            topic,
            partition,
            archived_through = committed,
            kafka_end = end,
            "partition stopped: Kafka's offsets restarted below what the table archived, so the topic was deleted and \
             created again. Nothing of the new topic is archived until you accept it: add the topic to \
             ingest.accept_recreated_topics (env LOGLAKE_INGEST_ACCEPT_RECREATED_TOPICS) and restart; it then starts \
             over at the new topic's first offset"
        );
    }

    /// Records in both tables that the partition starts over: `txn(p) = low - 1`, quarantine
    /// table first (so its skip mark never stays above the data table's).
    async fn start_over(
        &mut self,
        topic: &str,
        partition: i32,
        committed: i64,
        low: i64,
    ) -> Result<(), IngestError> {
        let id = app_id(&self.kafka.group_id, partition);
        let key = (topic.to_string(), partition);
        let (expected, expected_rejected) = self
            .partitions
            .get(&key)
            .map(|s| (s.committed, s.committed_rejected))
            .unwrap_or_default();
        let restart = low - 1;
        let metadata = |table: &str| {
            let mut m = serde_json::Map::new();
            m.insert(
                "loglake.recreated_topic".into(),
                json!({"topic": topic, "partition": partition, "archived_through": committed,
                       "starts_over_at": low, "table": table}),
            );
            m
        };
        let state = self
            .topics
            .get_mut(topic)
            .expect("resolved topics are open");
        if let (Some(table), Some(_)) = (state.rejected_table.as_mut(), expected_rejected) {
            let txn = TxnUpdate {
                app_id: id.clone(),
                expected: expected_rejected,
                version: restart,
            };
            commit_with_progress(table, Vec::new(), &[txn], metadata("quarantine")).await?;
        }
        let txn = TxnUpdate {
            app_id: id,
            expected,
            version: restart,
        };
        commit_with_progress(&mut state.table, Vec::new(), &[txn], metadata("data")).await?;
        if let Some(s) = self.partitions.get_mut(&key) {
            s.committed = Some(restart);
            s.committed_rejected = expected_rejected.map(|_| restart);
        }
        Ok(())
    }
}

/// Seeks; the offset from which records are accepted afterwards.
fn try_seek(
    consumer: &Consumer,
    topic: &str,
    partition: i32,
    target: Target,
) -> Result<i64, rdkafka::error::KafkaError> {
    let (offset, next) = match target {
        Target::Beginning => (Offset::Beginning, 0),
        Target::End => (Offset::End, 0),
        Target::Offset(o) => (Offset::Offset(o), o),
    };
    consumer.seek(topic, partition, offset, Duration::from_secs(5))?;
    Ok(next)
}
