//! Handing a file's records to the producer and keeping count of what the broker has not
//! acknowledged yet: per file ([`Flight`]) and for the whole agent ([`InFlight`]).

use std::collections::{BTreeSet, VecDeque};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::BaseRecord;

use crate::line::Line;
use crate::record::{encode, Fields};
use crate::ship::{Ack, Producer};

use super::{Input, Tracked};

/// Records handed over for one file and not yet acknowledged, in file order.
#[derive(Default)]
pub(super) struct Flight {
    /// Bumped when the file is read again from an earlier offset: acknowledgements of older
    /// records no longer move its offset.
    pub(super) generation: u8,
    pub(super) next_seq: u64,
    /// (seq, the offset just past the record, its bytes), oldest first.
    pub(super) pending: VecDeque<(u64, u64, u32)>,
    /// Acknowledged out of order (after a retry).
    pub(super) done: BTreeSet<u64>,
    /// Encoded records the producer's queue had no room for: sent before anything newer.
    pub(super) outbox: VecDeque<(u64, Vec<u8>)>,
}

impl Flight {
    /// The full sequence number of a pending record from its low 32 bits (pending records are
    /// consecutive); `None` when nothing is pending.
    pub(super) fn full_seq(&self, low: u32) -> Option<u64> {
        let &(front, _, _) = self.pending.front()?;
        Some(front + u64::from(low.wrapping_sub(front as u32)))
    }

    /// Record `seq` was acknowledged: if that completes a longer acknowledged prefix, the
    /// offset just past it.
    pub(super) fn delivered(&mut self, seq: u64, in_flight: &mut InFlight) -> Option<u64> {
        let &(front, _, _) = self.pending.front()?;
        if seq != front {
            self.done.insert(seq);
            return None;
        }
        let mut acked = None;
        while let Some(&(s, end, bytes)) = self.pending.front() {
            if s != seq && !self.done.remove(&s) {
                break;
            }
            self.pending.pop_front();
            in_flight.remove(u64::from(bytes));
            acked = Some(end);
        }
        if self.pending.is_empty() && self.pending.capacity() > 64 {
            // A burst's bookkeeping is not kept for the file's idle life: with thousands of
            // files it would add up.
            self.pending = VecDeque::new();
        }
        acked
    }
}

/// Bytes and records handed to the producer (or its outbox) and not yet acknowledged.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    pub(super) records: u64,
    pub(super) bytes: u64,
}

impl InFlight {
    pub(super) fn add(&mut self, bytes: u64) {
        self.records += 1;
        self.bytes += bytes;
    }

    pub(super) fn remove(&mut self, bytes: u64) {
        self.records = self.records.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

/// Sends a file's queued records, oldest first, until the producer's queue is full again.
pub(super) fn send_outbox(t: &mut Tracked, input: &Input, producer: &Producer, host: &str) -> bool {
    let mut sent = false;
    while let Some((seq, record)) = t.flight.outbox.front() {
        let ack = Ack {
            file: t.id,
            generation: t.flight.generation,
            seq: *seq as u32,
        }
        .pack();
        let r = BaseRecord::with_opaque_to(&input.config.topic, ack)
            .key(host)
            .payload(&record[..]);
        match producer.send(r) {
            Ok(()) => {
                t.flight.outbox.pop_front();
                sent = true;
            }
            Err(_) => break,
        }
    }
    sent
}

/// Where one file's lines go: encoded, numbered, handed to the producer.
pub(super) struct Sink<'a> {
    pub(super) producer: &'a Producer,
    pub(super) out: &'a mut Vec<u8>,
    pub(super) input: &'a Input,
    pub(super) host: &'a str,
    pub(super) fields: &'a Fields,
    /// The read time: Unix ms and the JSON string.
    pub(super) timestamp: &'a (i64, String),
    pub(super) flight: &'a mut Flight,
    pub(super) file: u32,
    pub(super) in_flight: &'a mut InFlight,
}

impl Sink<'_> {
    pub(super) fn emit(&mut self, line: Line<'_>) {
        let mut bytes = line.bytes;
        let mut truncated = line.truncated;
        loop {
            let e = encode(self.out, bytes, truncated, self.fields, &self.timestamp.1);
            let seq = self.flight.next_seq;
            if !self.flight.outbox.is_empty() {
                self.queue(seq, line.end, e.invalid_utf8, truncated);
                return;
            }
            let ack = Ack {
                file: self.file,
                generation: self.flight.generation,
                seq: seq as u32,
            }
            .pack();
            let record = BaseRecord::with_opaque_to(&self.input.config.topic, ack)
                .key(self.host)
                .payload(&self.out[..])
                .timestamp(self.timestamp.0);
            match self.producer.send(record) {
                Ok(()) => {
                    self.sent(seq, line.end, e.invalid_utf8, truncated);
                    return;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _))
                    if bytes.len() > 1024 =>
                {
                    // Larger than the producer's message.max.bytes (JSON escaping can
                    // multiply a line's size): cut it further.
                    bytes = &bytes[..bytes.len() / 2];
                    truncated = true;
                }
                Err(_) => {
                    // Queue full (or a transient refusal): kept, sent before anything newer.
                    self.queue(seq, line.end, e.invalid_utf8, truncated);
                    return;
                }
            }
        }
    }

    pub(super) fn queue(&mut self, seq: u64, end: u64, invalid_utf8: bool, truncated: bool) {
        self.flight.outbox.push_back((seq, self.out.clone()));
        self.sent(seq, end, invalid_utf8, truncated);
    }

    pub(super) fn sent(&mut self, seq: u64, end: u64, invalid_utf8: bool, truncated: bool) {
        let bytes = self.out.len() as u32;
        self.flight.next_seq += 1;
        self.flight.pending.push_back((seq, end, bytes));
        self.in_flight.add(u64::from(bytes));
        if truncated {
            self.input.counters.truncated.inc();
        }
        if invalid_utf8 {
            self.input.counters.invalid_utf8.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_acknowledged_offset_is_the_end_of_the_longest_acknowledged_prefix() {
        let mut f = Flight::default();
        let mut in_flight = InFlight::default();
        for (seq, end) in [(0u64, 10u64), (1, 25), (2, 40)] {
            f.pending.push_back((seq, end, 100));
            in_flight.add(100);
        }
        assert_eq!(f.full_seq(1), Some(1));
        assert_eq!(
            f.delivered(1, &mut in_flight),
            None,
            "out of order: 0 is missing"
        );
        assert_eq!(
            f.delivered(0, &mut in_flight),
            Some(25),
            "0 and 1 are now a prefix"
        );
        assert_eq!(in_flight.records, 1);
        assert_eq!(f.delivered(2, &mut in_flight), Some(40));
        assert_eq!((in_flight.records, in_flight.bytes), (0, 0));
        assert_eq!(f.full_seq(3), None);
    }
}
