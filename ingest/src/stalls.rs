//! Partitions that stop advancing: reported (metric, ERROR log, `/healthz`), and when the
//! cause is a record batch no client can decode, probed from fresh consumers and skipped as
//! `undecodable_batch` quarantine rows (see [`crate::probe`]).

use std::time::{Duration, Instant};

use loglake_schemas::{RejectedRecord, Rejection, RejectionKind};
use rdkafka::consumer::Consumer as _;
use rdkafka::Offset;

use crate::consumer::{Consumer, TokenSource};
use crate::metrics::Metrics;
use crate::probe::{self, ProbeResult};
use crate::worker::{now_us, Worker};

/// What the probe of a stalled partition found.
#[derive(Debug)]
pub(crate) struct ProbeOutcome {
    topic: String,
    partition: i32,
    /// The stalled offset.
    first: i64,
    /// Undecodable through this offset, with librdkafka's reason; or why not skipped.
    verdict: Result<(i64, String), String>,
}

impl Worker {
    /// On the tick: reports partitions that stopped advancing, starts a probe of those that
    /// stopped on an undecodable batch, and acts on probes that finished.
    pub fn check_stalls(
        &mut self,
        consumer: &Consumer,
        client: &rdkafka::ClientConfig,
        tokens: &TokenSource,
    ) {
        while let Ok(outcome) = self.probe_rx.try_recv() {
            self.probing
                .remove(&(outcome.topic.clone(), outcome.partition));
            self.on_probe(consumer, outcome);
        }
        let after = self.config.stall_after;
        let stalls = {
            let mut fetch = self.metrics.fetch.lock().expect("fetch tracker");
            fetch.retain(|t, p| {
                self.partitions
                    .get(&(t.to_string(), p))
                    .is_some_and(|s| s.next.is_some())
            });
            fetch.stalled(Instant::now(), after)
        };
        let decode_error_recent = self
            .last_decode_error
            .is_some_and(|at| at.elapsed() < after + Duration::from_secs(10));
        for stall in stalls {
            if stall.new {
                let last_error = self
                    .last_consume_error
                    .as_ref()
                    .map(|(text, _)| text.clone())
                    .unwrap_or_else(|| "none reported".into());
                tracing::error!(
                    topic = %stall.topic,
                    partition = stall.partition,
                    offset = stall.position,
                    end_offset = stall.end,
                    stalled_for = ?stall.stalled_for,
                    last_error = %last_error,
                    "partition stalled: cannot fetch past this offset although the broker holds records after it. \
                     A batch that cannot be decoded is quarantined after ingest.undecodable_attempts probes; \
                     otherwise check the broker, the topic's ACLs (Describe, Read) and the TLS/SASL settings"
                );
            }
            let key = (stall.topic.clone(), stall.partition);
            let attempts = self.config.undecodable_attempts;
            if attempts == 0 || !decode_error_recent || self.probing.contains(&key) {
                continue;
            }
            let ours = self
                .partitions
                .get(&key)
                .is_some_and(|s| s.next == Some(stall.position));
            if !ours {
                continue;
            }
            self.probing.insert(key);
            let tx = self.probe_tx.clone();
            let client = client.clone();
            let tokens = tokens.clone();
            let (topic, partition, first, end) =
                (stall.topic, stall.partition, stall.position, stall.end);
            tokio::task::spawn_blocking(move || {
                let verdict =
                    probe_partition(&client, &tokens, &topic, partition, first, end, attempts);
                let _ = tx.send(ProbeOutcome {
                    topic,
                    partition,
                    first,
                    verdict,
                });
            });
        }
    }

    /// A probe finished: quarantine the undecodable offsets (through the usual flush, so the
    /// same commit rules hold) and move the partition past them.
    fn on_probe(&mut self, consumer: &Consumer, outcome: ProbeOutcome) {
        let ProbeOutcome {
            topic,
            partition,
            first,
            verdict,
        } = outcome;
        let (last, error) = match verdict {
            Ok(v) => v,
            Err(why) => {
                tracing::error!(%topic, partition, offset = first, reason = %why, "stalled partition not skipped: the batch at this offset was not shown to be undecodable");
                return;
            }
        };
        let key = (topic.clone(), partition);
        let Some(state) = self.partitions.get_mut(&key) else {
            return; // revoked meanwhile
        };
        if state.next != Some(first) {
            return; // moved meanwhile
        }
        let Some(topic_state) = self.topics.get_mut(&topic) else {
            return;
        };
        let attempts = self.config.undecodable_attempts;
        let rejection = Rejection {
            kind: RejectionKind::UndecodableBatch,
            detail: format!(
                "offsets {first}..={last} of {topic}[{partition}] are in a record batch that cannot be decoded \
                 ({error}); skipped after {attempts} attempts (offsets that held no record are included)"
            ),
        };
        let received_at_us = now_us();
        let already = state.committed_rejected.unwrap_or(-1);
        for offset in first..=last {
            if offset > already {
                topic_state.buffer.push_rejected(
                    &RejectedRecord {
                        topic: &topic,
                        partition,
                        offset,
                        kafka_timestamp_ms: None,
                        key: None,
                        payload: None,
                        received_at_us,
                    },
                    &rejection,
                );
            }
            topic_state
                .buffer
                .note_offset(partition, offset, None, None);
        }
        state.next = Some(last + 1);
        if let Err(e) = consumer.seek(
            &topic,
            partition,
            Offset::Offset(last + 1),
            Duration::from_secs(5),
        ) {
            // The quarantined offsets stay buffered; the records after them arrive once the
            // seek succeeds, so the partition is resolved again from the table.
            tracing::warn!(%topic, partition, error = %e, "seek past an undecodable batch failed; re-reading from the table");
            state.next = None;
        }
        self.metrics
            .fetch
            .lock()
            .expect("fetch tracker")
            .forget(&topic, partition);
        Metrics::add(&self.metrics.undecodable_batches, 1);
        tracing::error!(%topic, partition, first, last, error = %error, "undecodable record batch quarantined as undecodable_batch; partition moves on");
    }
}

/// Probes `topic[partition]` at the stalled offset `attempts` times (a fresh consumer each);
/// if it never decodes, finds how far the undecodable region reaches.
fn probe_partition(
    client: &rdkafka::ClientConfig,
    tokens: &TokenSource,
    topic: &str,
    partition: i32,
    first: i64,
    end: i64,
    attempts: u32,
) -> Result<(i64, String), String> {
    const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
    let mut error = String::new();
    for attempt in 1..=attempts {
        match probe::probe(client, tokens, topic, partition, first, PROBE_TIMEOUT) {
            ProbeResult::Undecodable(e) => error = e,
            ProbeResult::Decodes => {
                return Err(format!(
                    "attempt {attempt} decoded it: the stall has another cause"
                ))
            }
            ProbeResult::Unknown(why) | ProbeResult::Nothing(why) => {
                return Err(format!("attempt {attempt}: {why}"))
            }
        }
    }
    let last = probe::undecodable_extent(first, end, |o| {
        probe::probe(client, tokens, topic, partition, o, PROBE_TIMEOUT)
    })?;
    Ok((last, error))
}
