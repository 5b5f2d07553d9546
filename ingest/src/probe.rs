//! Finding a record batch that can never be decoded, and how far it reaches.
//!
//! librdkafka stops at a batch it cannot decompress or parse: it reports an error (without
//! saying which partition or where the batch ends) and fetches the same batch again, forever.
//! When a partition has stalled, the worker asks here, from a fresh consumer assigned to just
//! that partition, whether the batch at the stalled offset decodes. If it fails every one of
//! the configured attempts, [`undecodable_extent`] finds the first offset past it by probing
//! further offsets (a fetch inside a batch returns the whole batch, so the probe's answer is
//! the same for every offset of one batch): exponential steps, then bisection. The caller
//! quarantines the offsets in between as `undecodable_batch` and seeks past them.
//!
//! Blocking: run it on a blocking thread.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use crate::consumer::{ProbeContext, TokenSource};

/// What one fetch at an offset showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// A record at or after the offset was delivered.
    Decodes,
    /// The batch holding the offset cannot be decoded; librdkafka's error.
    Undecodable(String),
    /// Nothing at or after the offset: the end of the partition, or no answer in time while
    /// nothing went wrong.
    Nothing(String),
    /// Nothing conclusive (connection trouble, an error).
    Unknown(String),
}

/// Errors that mean "this batch's bytes cannot become records", as opposed to a fetch that
/// failed for reasons of the network, the broker or permissions.
pub fn is_decode_error(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::BadCompression
            | RDKafkaErrorCode::BadMessage
            | RDKafkaErrorCode::NotImplemented
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::UnsupportedCompressionType
    )
}

/// Fetches `topic[partition]` at `offset` with a consumer of its own (no group, no commits)
/// and says whether the first thing that comes back is a record or a decode error.
pub fn probe(
    client: &ClientConfig,
    tokens: &TokenSource,
    topic: &str,
    partition: i32,
    offset: i64,
    timeout: Duration,
) -> ProbeResult {
    let mut config = client.clone();
    config
        .remove("group.id")
        .set("group.id", format!("loglake-probe-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("statistics.interval.ms", "0");
    let consumer: BaseConsumer<ProbeContext> = match config
        .create_with_context(ProbeContext(tokens.clone()))
    {
        Ok(c) => c,
        Err(e) => return ProbeResult::Unknown(format!("could not create a probe consumer: {e}")),
    };
    let mut tpl = TopicPartitionList::new();
    if let Err(e) = tpl.add_partition_offset(topic, partition, Offset::Offset(offset)) {
        return ProbeResult::Unknown(e.to_string());
    }
    if let Err(e) = consumer.assign(&tpl) {
        return ProbeResult::Unknown(format!("could not assign: {e}"));
    }
    let deadline = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(msg)) if msg.partition() == partition && msg.offset() >= offset => {
                return ProbeResult::Decodes;
            }
            Some(Ok(_)) => {}
            Some(Err(KafkaError::MessageConsumption(code))) if is_decode_error(code) => {
                return ProbeResult::Undecodable(code.to_string());
            }
            // At the end: nothing past `offset` exists (yet).
            Some(Err(KafkaError::PartitionEOF(_))) => {
                return ProbeResult::Nothing("end of partition".into())
            }
            // Past the end, or before the start (`auto.offset.reset = error`).
            Some(Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange,
            ))) => return ProbeResult::Nothing("offset out of range".into()),
            Some(Err(e)) => last = Some(e.to_string()),
            None => {}
        }
    }
    match last {
        Some(error) => ProbeResult::Unknown(error),
        None => ProbeResult::Nothing("no record in time".into()),
    }
}

impl ProbeResult {
    /// Whether a record at or after the probed offset can still be fetched (a batch that
    /// cannot be decoded counts: it is there). `Err` when the broker could not be asked.
    pub fn record_exists(self) -> Result<bool, String> {
        match self {
            Self::Decodes | Self::Undecodable(_) => Ok(true),
            Self::Nothing(_) => Ok(false),
            Self::Unknown(why) => Err(why),
        }
    }
}

/// Where an undecodable region starting at a known-bad `start` ends, given `end` (the
/// broker's end offset; nothing at or past it can be probed). `probe(o)` says whether the
/// batch holding offset `o` decodes. Returns the last undecodable offset, or the reason the
/// search could not finish.
///
/// Assumes the region is contiguous: offsets from `start` up to some `last` are undecodable
/// and `last + 1` decodes. About 2·log2(region size) probes.
pub fn undecodable_extent(
    start: i64,
    end: i64,
    mut probe: impl FnMut(i64) -> ProbeResult,
) -> Result<i64, String> {
    let mut bad = start;
    let mut good = None;
    let mut step = 1i64;
    while good.is_none() {
        let at = bad.saturating_add(step);
        if at >= end {
            good = Some(end);
            break;
        }
        match probe(at) {
            ProbeResult::Undecodable(_) => {
                bad = at;
                step = step.saturating_mul(2);
            }
            ProbeResult::Decodes => good = Some(at),
            ProbeResult::Unknown(why) | ProbeResult::Nothing(why) => {
                return Err(format!("probe at offset {at}: {why}"))
            }
        }
    }
    let mut good = good.expect("set above");
    while good - bad > 1 {
        let mid = bad + (good - bad) / 2;
        match probe(mid) {
            ProbeResult::Undecodable(_) => bad = mid,
            ProbeResult::Decodes => good = mid,
            ProbeResult::Unknown(why) | ProbeResult::Nothing(why) => {
                return Err(format!("probe at offset {mid}: {why}"))
            }
        }
    }
    Ok(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn region(first: i64, last: i64) -> impl FnMut(i64) -> ProbeResult {
        move |o| {
            if (first..=last).contains(&o) {
                ProbeResult::Undecodable("Local: Invalid compressed data".into())
            } else {
                ProbeResult::Decodes
            }
        }
    }

    #[test]
    fn finds_a_single_bad_batch() {
        assert_eq!(undecodable_extent(5, 100, region(5, 7)), Ok(7));
        assert_eq!(undecodable_extent(5, 100, region(5, 5)), Ok(5));
    }

    #[test]
    fn a_bad_tail_ends_at_the_end_offset() {
        assert_eq!(undecodable_extent(5, 9, region(5, 1000)), Ok(8));
        assert_eq!(undecodable_extent(5, 6, region(5, 1000)), Ok(5));
    }

    #[test]
    fn an_inconclusive_probe_stops_the_search() {
        let err = undecodable_extent(0, 100, |o| {
            if o < 3 {
                ProbeResult::Undecodable("x".into())
            } else {
                ProbeResult::Unknown("timed out".into())
            }
        })
        .unwrap_err();
        assert!(err.contains("timed out"), "{err}");
    }

    proptest! {
        #[test]
        fn extent_is_exact_and_cheap(start in 0i64..1_000_000, len in 1i64..100_000, tail in 0i64..1_000) {
            let last = start + len - 1;
            let end = last + 1 + tail;
            let mut probes = 0u32;
            let mut inner = region(start, last);
            let got = undecodable_extent(start, end, |o| { probes += 1; inner(o) });
            let want = if tail == 0 { end - 1 } else { last };
            prop_assert_eq!(got, Ok(want));
            prop_assert!(probes <= 2 * (64 - (len as u64).leading_zeros()) + 2, "{} probes", probes);
        }
    }
}
