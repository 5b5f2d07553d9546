//! One flush cycle of one topic: quarantined records first, then the rows, each a single
//! Delta commit carrying one `txn` per Kafka partition (the last offset covered); then the
//! advisory Kafka commit. The data commit also carries each partition's newest event time as a
//! second `txn` (see `loglake_lake::progress`), from which readers derive `complete_through`.
//!
//! **Invariant:** every bad record at or below the data table's `txn(p)` is in the quarantine
//! table (its commit comes first), so a restart resumes at `txn(p) + 1` of the data table. If
//! the quarantine table's `txn(p)` is ahead (a crash between the two commits), the records of
//! that range it holds are skipped and every other one is stored — by what was committed, not
//! by how today's schema maps them (`Worker::quarantined_ahead`).

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use loglake_lake::commit::{commit_with_progress, TxnUpdate};
use loglake_lake::write::{write_files, write_partitions, writer_properties};
use loglake_lake::{LakeError, REJECTED_SUFFIX};
use loglake_schemas::{rejected_arrow_schema, REJECTED_PARTITION_COLUMNS};
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use crate::consumer::Consumer;
use crate::error::IngestError;
use crate::metrics::{now_ms, FlushBeat, Metrics};
use crate::worker::{app_id, event_time_app_id, Worker};

fn metadata(records: usize) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert(
        "loglake.writer".into(),
        json!(format!("loglake-ingest-{}", std::process::id())),
    );
    m.insert("loglake.records".into(), json!(records));
    m
}

impl Worker {
    pub(crate) async fn flush_topic(
        &mut self,
        consumer: &Consumer,
        topic: &str,
    ) -> Result<(), IngestError> {
        let Some(state) = self.topics.get_mut(topic) else {
            return Ok(());
        };
        if state.buffer.is_empty() {
            return Ok(());
        }
        let _beat = FlushBeat::start(&self.metrics);
        let started = Instant::now();
        let progress = state.buffer.progress().clone();
        let arrow_err = |source| IngestError::Arrow {
            topic: topic.to_string(),
            source,
        };
        let max_file = self.config.max_file_size.as_u64();

        if state.buffer.has_rejected() {
            let batches = state.buffer.rejected_batches().map_err(arrow_err)?;
            let dir = format!("{topic}{REJECTED_SUFFIX}");
            if state.rejected_table.is_none() {
                state.rejected_table = Some(
                    self.lake
                        .open_or_create(&dir, &rejected_arrow_schema(), &REJECTED_PARTITION_COLUMNS)
                        .await?,
                );
            }
            let table = state.rejected_table.as_mut().expect("set above");
            table.refresh().await?;
            let parts: Vec<i32> = state.buffer.rejected_partitions().collect();
            let txns: Vec<TxnUpdate> = parts
                .iter()
                .map(|&p| {
                    let expected = self
                        .partitions
                        .get(&(topic.to_string(), p))
                        .and_then(|s| s.committed_rejected);
                    TxnUpdate {
                        app_id: app_id(&self.kafka.group_id, p),
                        expected,
                        // Never backwards: replaying a range an earlier quarantine commit
                        // covered, a flush may end below it.
                        version: progress[&p].last.max(expected.unwrap_or(-1)),
                    }
                })
                .collect();
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            let adds = write_files(table, batches, writer_properties(None), max_file).await?;
            match commit_with_progress(table, adds, &txns, metadata(rows)).await {
                Ok(version) => {
                    for (p, t) in parts.iter().zip(&txns) {
                        if let Some(s) = self.partitions.get_mut(&(topic.to_string(), *p)) {
                            s.committed_rejected = Some(t.version);
                        }
                    }
                    let n = state.buffer.clear_rejected();
                    Metrics::add(&self.metrics.quarantined, n as u64);
                    Metrics::add(&self.metrics.commits, 1);
                    tracing::info!(table = %dir, rows = n, version, "quarantined records committed");
                    if std::env::var_os("LOGLAKE_TEST_FAILPOINT")
                        .is_some_and(|f| f == "after_quarantine_commit")
                    {
                        // For tests: the crash between a flush's two commits.
                        tracing::error!("LOGLAKE_TEST_FAILPOINT=after_quarantine_commit: aborting");
                        std::process::abort();
                    }
                }
                Err(LakeError::TxnConflict { .. }) => {
                    return self.reset_topic(consumer, topic).await
                }
                Err(e) => return Err(e.into()),
            }
        }

        let state = self.topics.get_mut(topic).expect("checked above");
        let buffered = state.buffer.rows_bytes();
        let parts = state.buffer.data_batches().map_err(arrow_err)?;
        let rows: usize = parts
            .iter()
            .flat_map(|p| &p.batches)
            .map(|b| b.num_rows())
            .sum();
        state.table.refresh().await?;
        let partition = |p: i32| self.partitions.get(&(topic.to_string(), p));
        let mut txns: Vec<TxnUpdate> = progress
            .iter()
            .map(|(p, prog)| TxnUpdate {
                app_id: app_id(&self.kafka.group_id, *p),
                expected: partition(*p).and_then(|s| s.committed),
                version: prog.last,
            })
            .collect();
        // Each partition's newest event time, for readers' `complete_through`: it never moves
        // back, and a record stamped in the future moves it no further than now.
        let wall_ms = now_ms();
        let event_times: Vec<(i32, TxnUpdate)> = progress
            .iter()
            .filter_map(|(p, prog)| {
                let newest = prog.newest_event_us?.div_euclid(1000).min(wall_ms);
                let before = partition(*p).and_then(|s| s.event_time);
                let version = before.map_or(newest, |b| b.max(newest));
                (Some(version) != before).then(|| {
                    let app_id = event_time_app_id(&self.kafka.group_id, *p);
                    let expected = before;
                    (
                        *p,
                        TxnUpdate {
                            app_id,
                            expected,
                            version,
                        },
                    )
                })
            })
            .collect();
        txns.extend(event_times.iter().map(|(_, t)| t.clone()));
        let adds = if parts.is_empty() {
            Vec::new()
        } else {
            write_partitions(&state.table, parts, writer_properties(Some(0)), max_file).await?
        };
        let files = adds.len();
        let file_bytes: i64 = adds.iter().map(|a| a.size).sum();
        let version = match commit_with_progress(&mut state.table, adds, &txns, metadata(rows))
            .await
        {
            Ok(v) => v,
            Err(LakeError::TxnConflict { .. }) => return self.reset_topic(consumer, topic).await,
            Err(e) => return Err(e.into()),
        };
        if rows > 0 && buffered > 0 {
            let observed = file_bytes as f64 / buffered as f64;
            state.ratio = (state.ratio + observed) / 2.0;
        }
        state.buffer.clear();
        // The table was read again for this commit: properties a user set since count now.
        state.buffer.follow_table(state.table.configuration());
        // Whoever flushed (size, latency, revocation, shutdown), the topic is no longer due.
        self.due.remove(topic);
        let elapsed = started.elapsed();
        let m = &self.metrics;
        Metrics::add(&m.rows_written, rows as u64);
        Metrics::add(&m.files_written, files as u64);
        Metrics::add(&m.bytes_written, file_bytes.max(0) as u64);
        Metrics::add(&m.commits, 1);
        m.commit_seconds.0.observe(elapsed.as_secs_f64());
        let now = now_ms();
        m.last_commit_unix_ms.store(now, Relaxed);
        if let Some(newest) = progress.values().filter_map(|p| p.newest_kafka_ms).max() {
            m.freshness_ms.store(now - newest, Relaxed);
        }
        tracing::info!(
            table = topic,
            rows,
            files,
            bytes = file_bytes,
            version,
            elapsed_ms = elapsed.as_millis() as u64,
            "committed"
        );

        let mut offsets = TopicPartitionList::new();
        for (&p, prog) in &progress {
            if let Some(s) = self.partitions.get_mut(&(topic.to_string(), p)) {
                s.committed = Some(prog.last);
                let _ = offsets.add_partition_offset(topic, p, Offset::Offset(prog.last + 1));
            }
        }
        for (p, t) in event_times {
            if let Some(s) = self.partitions.get_mut(&(topic.to_string(), p)) {
                s.event_time = Some(t.version);
            }
        }
        // Advisory only (lag tooling); the Delta txn is the source of truth.
        if offsets.count() > 0 {
            if let Err(e) = consumer.commit(&offsets, CommitMode::Async) {
                tracing::debug!(error = %e, "advisory Kafka offset commit failed");
            }
        }
        Ok(())
    }

    /// Another writer committed for one of our partitions: drop what we hold for the topic
    /// and re-read from what the table says.
    async fn reset_topic(&mut self, consumer: &Consumer, topic: &str) -> Result<(), IngestError> {
        Metrics::add(&self.metrics.commit_conflicts, 1);
        tracing::warn!(
            topic,
            "another writer committed for our partitions: dropping buffers and re-reading"
        );
        if let Some(state) = self.topics.get_mut(topic) {
            state.buffer.clear();
        }
        self.due.remove(topic);
        let assigned: Vec<i32> = consumer
            .assignment()
            .map(|tpl| {
                tpl.elements()
                    .iter()
                    .filter(|e| e.topic() == topic)
                    .map(|e| e.partition())
                    .collect()
            })
            .unwrap_or_default();
        self.partitions
            .retain(|(t, p), _| t != topic || assigned.contains(p));
        for p in &assigned {
            if let Some(s) = self.partitions.get_mut(&(topic.to_string(), *p)) {
                s.next = None;
            }
        }
        self.resolve_with_retry(consumer, topic, &assigned).await
    }
}
