//! The main loop: consume, map, buffer; react to rebalances; flush when due.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loglake_lake::append::AppendTable;
use loglake_lake::evolve::{compare, SchemaChange};
use loglake_lake::progress::quarantined_offsets;
use loglake_lake::{Lake, LakeError, REJECTED_SUFFIX};
use loglake_schemas::{
    table_arrow_schema, Mapper, RawRecord, RejectedRecord, SchemaSet, PARTITION_COLUMNS,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};

use crate::batcher::{FastMap, TopicBuffer};
use crate::config::{IngestConfig, KafkaConfig};
use crate::consumer::{Consumer, RebalanceEvent, TokenSource};
use crate::error::IngestError;
use crate::metrics::{now_ms, Metrics};
use crate::probe;
use crate::resume::Target;
use crate::stalls::ProbeOutcome;

/// One topic's tables and buffers.
#[derive(Debug)]
pub(crate) struct TopicState {
    pub buffer: TopicBuffer,
    pub table: AppendTable,
    pub rejected_table: Option<AppendTable>,
    /// Parquet bytes per buffered byte, learned from earlier flushes; sizes files.
    pub ratio: f64,
}

/// What this worker knows of one assigned Kafka partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartitionState {
    /// `txn` version in the data table: every offset up to it is archived.
    pub committed: Option<i64>,
    /// `txn` version in the quarantine table: every bad record up to it is quarantined.
    pub committed_rejected: Option<i64>,
    /// Next offset to accept; `None` while the partition awaits its seek.
    pub next: Option<i64>,
    /// `txn` version of the partition's newest archived event time (ms), in the data table.
    pub event_time: Option<i64>,
}

pub(crate) struct Worker {
    pub config: IngestConfig,
    pub kafka: KafkaConfig,
    pub lake: Lake,
    pub schemas: SchemaSet,
    pub metrics: Arc<Metrics>,
    pub topics: FastMap<String, TopicState>,
    pub partitions: FastMap<(String, i32), PartitionState>,
    /// Per partition whose quarantine `txn` is ahead of its data `txn` (a crash came between
    /// the two commits of a flush): the offsets of that range the quarantine table holds.
    /// Replaying the range, exactly these are skipped, whatever today's schema makes of them.
    pub quarantined_ahead: FastMap<(String, i32), BTreeSet<i64>>,
    /// Topics whose buffer reached the file size: flush at the next turn.
    pub due: BTreeSet<String>,
    pub failing: u32,
    pub backoff_until: Option<Instant>,
    pub(crate) last_consume_error: Option<(String, Instant)>,
    /// When librdkafka last reported a batch it could not decode (its error names no
    /// partition: the stall tracker says which one).
    pub(crate) last_decode_error: Option<Instant>,
    /// Partitions with a probe under way, and where their answers arrive.
    pub(crate) probing: BTreeSet<(String, i32)>,
    pub(crate) probe_tx: std::sync::mpsc::Sender<ProbeOutcome>,
    pub(crate) probe_rx: std::sync::mpsc::Receiver<ProbeOutcome>,
    /// Reused key for the per-message partition lookup, so a record costs no allocation.
    lookup: (String, i32),
    /// Wall clock (µs) read once per batch of messages: a record's `received_at`.
    batch_started_us: i64,
    /// The client settings and tokens for one-partition probes of the broker.
    pub probe_client: rdkafka::ClientConfig,
    pub tokens: TokenSource,
    /// Partitions whose seek failed, and where they must go: retried on the tick.
    pub unseeked: BTreeMap<(String, i32), Target>,
    /// librdkafka reported an offset out of range: check every position on the next tick.
    pub recheck: bool,
}

pub(crate) use loglake_lake::progress::{event_time_app_id, offset_app_id as app_id};

pub(crate) fn now_us() -> i64 {
    now_ms() * 1000
}

impl Worker {
    pub fn new(
        config: IngestConfig,
        kafka: KafkaConfig,
        lake: Lake,
        schemas: SchemaSet,
        metrics: Arc<Metrics>,
        probe_client: rdkafka::ClientConfig,
        tokens: TokenSource,
    ) -> Self {
        let (probe_tx, probe_rx) = std::sync::mpsc::channel();
        Self {
            config,
            kafka,
            lake,
            schemas,
            metrics,
            topics: FastMap::default(),
            partitions: FastMap::default(),
            quarantined_ahead: FastMap::default(),
            due: BTreeSet::new(),
            failing: 0,
            backoff_until: None,
            last_consume_error: None,
            last_decode_error: None,
            probing: BTreeSet::new(),
            probe_tx,
            probe_rx,
            lookup: (String::new(), 0),
            batch_started_us: now_us(),
            probe_client,
            tokens,
            unseeked: BTreeMap::new(),
            recheck: false,
        }
    }

    pub fn buffered_bytes(&self) -> usize {
        self.topics.values().map(|t| t.buffer.bytes()).sum()
    }

    fn over_budget(&self) -> bool {
        self.buffered_bytes() as u64 >= self.config.memory_budget.as_u64()
    }

    /// A buffer reached the file size, or the budget is full: flush before reading on.
    pub fn needs_flush(&self) -> bool {
        !self.due.is_empty() || self.over_budget()
    }

    /// Stop reading while over budget and unable to flush: memory stays bounded.
    pub fn paused(&self) -> bool {
        self.failing > 0 && self.over_budget()
    }

    pub fn on_consume_error(&mut self, error: KafkaError) {
        if let KafkaError::MessageConsumption(code) | KafkaError::MessageConsumptionFatal(code) =
            &error
        {
            self.metrics.consumer_error(&format!("{code:?}"));
            if probe::is_decode_error(*code) {
                self.last_decode_error = Some(Instant::now());
            }
            // `auto.offset.reset = error`: a position Kafka no longer holds.
            if matches!(
                code,
                RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange
            ) {
                self.recheck = true;
            }
        } else {
            self.metrics.consumer_error("other");
        }
        let text = error.to_string();
        let repeat = matches!(&self.last_consume_error, Some((last, at)) if *last == text && at.elapsed() < Duration::from_secs(30));
        if !repeat {
            tracing::warn!(error = %text, "consumer error");
            self.last_consume_error = Some((text, Instant::now()));
        }
    }

    /// Messages follow that arrived together: they share one reading of the clock
    /// (a batch lasts milliseconds).
    pub fn begin_batch(&mut self) {
        self.batch_started_us = now_us();
    }

    pub fn on_message(&mut self, msg: &BorrowedMessage<'_>) {
        let topic = msg.topic();
        let partition = msg.partition();
        let offset = msg.offset();
        if self.lookup.0 != topic {
            self.lookup.0.clear();
            self.lookup.0.push_str(topic);
        }
        self.lookup.1 = partition;
        let Some(state) = self.partitions.get_mut(&self.lookup) else {
            return; // not (or no longer) ours
        };
        let Some(next) = state.next else {
            return; // awaiting its seek; the broker sends it again from the right place
        };
        if offset < next {
            Metrics::add(&self.metrics.skipped_already_committed, 1);
            return;
        }
        state.next = Some(offset + 1);
        let committed_rejected = state.committed_rejected;
        let Some(topic_state) = self.topics.get_mut(topic) else {
            return;
        };
        let payload = msg.payload();
        Metrics::add(&self.metrics.records_in, 1);
        Metrics::add(
            &self.metrics.bytes_in,
            payload.map_or(0, <[u8]>::len) as u64,
        );
        let kafka_timestamp_ms = msg.timestamp().to_millis();
        let received_at_us = self.batch_started_us;
        let raw = RawRecord {
            payload,
            key: msg.key(),
            partition,
            offset,
            kafka_timestamp_ms,
            received_at_us,
        };
        let buffer = &mut topic_state.buffer;
        let mut event_us = None;
        let quarantined_before = offset <= committed_rejected.unwrap_or(-1)
            && self
                .quarantined_ahead
                .get(&self.lookup)
                .is_some_and(|held| held.contains(&offset));
        if quarantined_before {
            // Committed to the quarantine table before a crash stopped the data commit.
            Metrics::add(&self.metrics.skipped_already_committed, 1);
            buffer.note_offset(partition, offset, kafka_timestamp_ms, None);
            return;
        }
        match buffer.mapper().map(&raw) {
            Ok(mut row) => {
                event_us = Some(row.timestamp_us);
                let pushed = buffer.push_row(&mut row);
                if pushed.overflowed {
                    Metrics::add(&self.metrics.overflow_rows, 1);
                }
                if pushed.first_overflow {
                    tracing::warn!(
                        topic,
                        max_open_partitions = self.config.max_open_partitions,
                        "the topic wrote max_open_partitions hosts this hour: rows of further \
                         hosts go to the _overflow host, their own kept in \
                         attributes._original_host (raise ingest.max_open_partitions if they \
                         are real hosts)"
                    );
                }
                if pushed.full
                    || pushed.part_bytes as f64 * topic_state.ratio
                        >= self.config.max_file_size.as_u64() as f64
                {
                    self.due.insert(topic.to_string());
                }
            }
            // Bad now, and not quarantined by an earlier commit (if it lies in a range an
            // earlier commit quarantined, it was good then: quarantined now, never lost).
            Err(rejection) => {
                tracing::debug!(topic, partition, offset, reason = %rejection, "record quarantined");
                buffer.push_rejected(
                    &RejectedRecord {
                        topic,
                        partition,
                        offset,
                        kafka_timestamp_ms,
                        key: raw.key,
                        payload,
                        received_at_us,
                    },
                    &rejection,
                );
            }
        }
        buffer.note_offset(partition, offset, kafka_timestamp_ms, event_us);
    }

    /// Opens (creating on first use) a topic's tables.
    async fn ensure_topic(&mut self, topic: &str) -> Result<(), IngestError> {
        if self.topics.contains_key(topic) {
            return Ok(());
        }
        let mapper = Mapper::new(self.schemas.for_topic(topic))?;
        let schema = table_arrow_schema(mapper.schema());
        let mut table = self
            .lake
            .open_or_create(topic, &schema, &PARTITION_COLUMNS)
            .await?;
        let wanted = loglake_lake::evolve::as_stored(&schema, topic)?;
        // Workers that start together with the same new schema file race to add its columns;
        // the losers compare again with the winner's table.
        for attempt in 1.. {
            match compare(&*table.arrow_schema()?, &wanted) {
                SchemaChange::None => break,
                SchemaChange::Add(fields) => {
                    let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
                    tracing::info!(table = topic, columns = ?names, "schema file adds columns: evolving the table (rows archived before read them as null)");
                    match table.add_columns(&fields).await {
                        Ok(_) => {}
                        Err(LakeError::Conflict { .. }) if attempt < 5 => table.refresh().await?,
                        Err(e) => return Err(e.into()),
                    }
                }
                SchemaChange::Refused(why) => {
                    return Err(IngestError::Config {
                        key: format!("schemas/{topic}.toml"),
                        message: format!("does not fit table {topic}: {why}"),
                    })
                }
            }
        }
        let rejected_table = self
            .lake
            .open_append(&format!("{topic}{REJECTED_SUFFIX}"))
            .await?;
        self.topics.insert(
            topic.to_string(),
            TopicState {
                buffer: TopicBuffer::new(
                    mapper,
                    self.config.max_open_partitions,
                    table.configuration(),
                ),
                table,
                rejected_table,
                ratio: 1.0,
            },
        );
        Ok(())
    }

    /// Reads the table's progress for `partitions` (all of one topic), checks it against what
    /// Kafka still holds ([`resume`]) and positions each partition accordingly.
    pub async fn resolve(
        &mut self,
        consumer: &Consumer,
        topic: &str,
        partitions: &[i32],
    ) -> Result<(), IngestError> {
        self.ensure_topic(topic).await?;
        let state = self.topics.get_mut(topic).expect("ensured above");
        state.table.refresh().await?;
        let rejected_dir = format!("{topic}{REJECTED_SUFFIX}");
        if state.rejected_table.is_none() {
            state.rejected_table = self.lake.open_append(&rejected_dir).await?;
        }
        if let Some(t) = state.rejected_table.as_mut() {
            t.refresh().await?;
        }
        let txns = state.table.txns().clone();
        let rejected_txns = match &state.rejected_table {
            Some(t) => t.txns().clone(),
            None => Default::default(),
        };
        let mut ahead = Vec::new();
        // Loaded whole only when a crash left quarantined records ahead of the data.
        let mut rejected: Option<deltalake::DeltaTable> = None;
        for &partition in partitions {
            let id = app_id(&self.kafka.group_id, partition);
            let committed = txns.get(&id).copied().unwrap_or(-1);
            if let Some(&quarantined) = rejected_txns.get(&id).filter(|q| **q > committed) {
                if rejected.is_none() {
                    rejected = self.lake.open_table(&rejected_dir).await?;
                }
                if let Some(rejected) = &rejected {
                    let held =
                        quarantined_offsets(rejected, partition, committed, quarantined).await?;
                    tracing::info!(topic, partition, committed, quarantined, held = held.len(),
                        "quarantine commit ahead of the data commit (a crash between them): replaying the range");
                    ahead.push((partition, held));
                }
            }
        }
        for &partition in partitions {
            self.quarantined_ahead
                .remove(&(topic.to_string(), partition));
        }
        for (partition, held) in ahead {
            self.quarantined_ahead
                .insert((topic.to_string(), partition), held);
        }
        for &partition in partitions {
            let id = app_id(&self.kafka.group_id, partition);
            let committed = txns.get(&id).copied();
            let committed_rejected = rejected_txns.get(&id).copied();
            let event_time = txns
                .get(&event_time_app_id(&self.kafka.group_id, partition))
                .copied();
            self.metrics
                .fetch
                .lock()
                .expect("fetch tracker")
                .forget(topic, partition);
            self.partitions.insert(
                (topic.to_string(), partition),
                PartitionState {
                    committed,
                    committed_rejected,
                    next: None,
                    event_time,
                },
            );
            let decision = self.decide(consumer, topic, partition, committed).await?;
            tracing::info!(topic, partition, committed = ?committed, committed_rejected = ?committed_rejected, ?decision, "partition resolved");
            self.position(consumer, topic, partition, decision).await?;
        }
        Ok(())
    }

    /// [`Worker::resolve`], retried with backoff for about two minutes: a store that is down
    /// for a while delays the partitions, it does not kill the worker.
    pub async fn resolve_with_retry(
        &mut self,
        consumer: &Consumer,
        topic: &str,
        partitions: &[i32],
    ) -> Result<(), IngestError> {
        let mut delay = Duration::from_millis(250);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match self.resolve(consumer, topic, partitions).await {
                Ok(()) => return Ok(()),
                Err(e @ (IngestError::Config { .. } | IngestError::Schema(_))) => return Err(e),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    tracing::warn!(topic, error = %e, retry_in = ?delay, "could not read committed offsets; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    pub async fn on_rebalance(
        &mut self,
        consumer: &Consumer,
        event: RebalanceEvent,
    ) -> Result<(), IngestError> {
        match event {
            RebalanceEvent::Revoked(list) => {
                let topics: BTreeSet<String> = list.iter().map(|(t, _)| t.clone()).collect();
                for topic in &topics {
                    // Safe after the fact: the commit only lands if nobody else moved our txns.
                    if let Err(e) = self.flush_topic(consumer, topic).await {
                        tracing::warn!(topic, error = %e, "flush on revocation failed; records will be re-read by their new owner");
                        if let Some(t) = self.topics.get_mut(topic) {
                            t.buffer.clear();
                        }
                        self.due.remove(topic);
                        let keep: Vec<i32> = self
                            .partitions
                            .keys()
                            .filter(|(t, p)| t == topic && !list.contains(&(t.clone(), *p)))
                            .map(|(_, p)| *p)
                            .collect();
                        for p in &keep {
                            if let Some(s) = self.partitions.get_mut(&(topic.clone(), *p)) {
                                s.next = None;
                            }
                        }
                        self.resolve_with_retry(consumer, topic, &keep).await?;
                    }
                }
                let mut blocked = self.metrics.blocked.lock().expect("blocked set");
                for key in &list {
                    self.partitions.remove(key);
                    self.unseeked.remove(key);
                    blocked.remove(key);
                }
            }
            RebalanceEvent::Assigned(list) => {
                let mut by_topic: HashMap<String, Vec<i32>> = HashMap::new();
                for (t, p) in list {
                    if t.ends_with(REJECTED_SUFFIX) {
                        // Matched by kafka.topic_pattern (named topics are refused at start):
                        // never ours, its records are ignored.
                        tracing::error!(topic = %t, partition = p, "topic not archived: its name ends in the quarantine tables' suffix {REJECTED_SUFFIX:?}; narrow kafka.topic_pattern");
                        continue;
                    }
                    self.partitions.insert(
                        (t.clone(), p),
                        PartitionState {
                            committed: None,
                            committed_rejected: None,
                            next: None,
                            event_time: None,
                        },
                    );
                    by_topic.entry(t).or_default().push(p);
                }
                for (topic, partitions) in by_topic {
                    self.resolve_with_retry(consumer, &topic, &partitions)
                        .await?;
                }
                // Topics this worker no longer owns (eager rebalancing revoked everything and
                // flushed it): their tables' snapshots are dropped, not kept for ever.
                let owned: BTreeSet<&str> =
                    self.partitions.keys().map(|(t, _)| t.as_str()).collect();
                let before = self.topics.len();
                self.topics
                    .retain(|t, state| owned.contains(t.as_str()) || !state.buffer.is_empty());
                if self.topics.len() < before {
                    tracing::info!(
                        released = before - self.topics.len(),
                        "tables of topics no longer assigned released"
                    );
                }
                self.metrics
                    .open_topics
                    .store(self.topics.len() as i64, Relaxed);
            }
        }
        Ok(())
    }

    /// Flushes every topic that is due: file size reached, max latency reached, or the
    /// memory budget full (the topic holding the most first).
    pub async fn flush_due(&mut self, consumer: &Consumer) {
        self.metrics
            .buffered_bytes
            .store(self.buffered_bytes() as i64, Relaxed);
        if matches!(self.backoff_until, Some(t) if Instant::now() < t) {
            return;
        }
        let mut due: Vec<String> = self
            .topics
            .iter()
            .filter(|(name, t)| {
                !t.buffer.is_empty()
                    && (self.due.contains(*name)
                        || t.buffer
                            .oldest()
                            .is_some_and(|o| o.elapsed() >= self.config.max_latency))
            })
            .map(|(name, _)| name.clone())
            .collect();
        if self.over_budget() {
            if let Some((name, _)) = self.topics.iter().max_by_key(|(_, t)| t.buffer.bytes()) {
                if !due.contains(name) {
                    due.insert(0, name.clone());
                }
            }
        }
        for topic in due {
            match self.flush_topic(consumer, &topic).await {
                Ok(()) => {
                    self.due.remove(&topic);
                    self.failing = 0;
                    self.backoff_until = None;
                    self.metrics.failing_flushes.store(0, Relaxed);
                }
                Err(e) => {
                    self.failing += 1;
                    let backoff = Duration::from_millis(250 << self.failing.min(7));
                    self.backoff_until = Some(Instant::now() + backoff);
                    Metrics::add(&self.metrics.commit_failures, 1);
                    self.metrics
                        .failing_flushes
                        .store(self.failing as u64, Relaxed);
                    tracing::error!(topic, error = %e, source = ?std::error::Error::source(&e), retry_in = ?backoff, "flush failed; data stays buffered");
                    break;
                }
            }
        }
        self.metrics
            .buffered_bytes
            .store(self.buffered_bytes() as i64, Relaxed);
    }

    /// Flushes everything (shutdown).
    pub async fn flush_all(&mut self, consumer: &Consumer) -> Result<(), IngestError> {
        let topics: Vec<String> = self.topics.keys().cloned().collect();
        for topic in topics {
            self.flush_topic(consumer, &topic).await?;
        }
        Ok(())
    }
}
