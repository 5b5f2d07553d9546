//! Which partitions cannot advance: librdkafka's fetch position, the broker's end offset and
//! how long the position has stood still, per assigned partition.
//!
//! librdkafka retries a fetch it cannot use (a batch it cannot decompress, a denied topic, a
//! broker it cannot authenticate to) forever, and the consumer's error events do not say which
//! partition failed. What it does report, in its statistics, is each partition's next fetch
//! offset and the broker's high watermark: a partition whose position stands still below the
//! end while nothing waits in the fetch queue is stuck, whatever the cause. Pure: the caller
//! passes the clock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One statistics sample of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchSample {
    /// The next offset librdkafka will fetch.
    pub position: i64,
    /// The broker's end offset for what this consumer may read (last stable offset under
    /// read_committed, else the high watermark).
    pub end: i64,
    /// Messages fetched and waiting for the application: when there are any, the partition is
    /// waiting on us (backpressure), not on the broker.
    pub queued: i64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    sample: FetchSample,
    /// When `sample.position` was first seen at its current value.
    since: Instant,
    /// Whether the current episode was already reported (logged, counted).
    reported: bool,
}

/// A partition that has not advanced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    pub topic: String,
    pub partition: i32,
    /// The offset it cannot get past.
    pub position: i64,
    pub end: i64,
    pub stalled_for: Duration,
    /// First time this episode is returned by [`StallTracker::newly_stalled`].
    pub new: bool,
}

/// Per-partition fetch progress and stall episodes.
#[derive(Debug, Default)]
pub struct StallTracker {
    parts: HashMap<(String, i32), Entry>,
    episodes: HashMap<(String, i32), u64>,
}

impl StallTracker {
    /// Records a statistics sample taken at `now`.
    pub fn observe(&mut self, topic: &str, partition: i32, sample: FetchSample, now: Instant) {
        let key = (topic.to_string(), partition);
        match self.parts.get_mut(&key) {
            Some(e) if e.sample.position == sample.position && sample.position >= 0 => {
                e.sample = sample;
            }
            _ => {
                self.parts.insert(
                    key,
                    Entry {
                        sample,
                        since: now,
                        reported: false,
                    },
                );
            }
        }
    }

    /// The partition is no longer ours (revoked) or was moved on purpose (a seek).
    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.parts.remove(&(topic.to_string(), partition));
    }

    /// Keeps only the partitions `keep` says are still assigned.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, i32) -> bool) {
        self.parts.retain(|(t, p), _| keep(t, *p));
    }

    fn is_stalled(e: &Entry, now: Instant, after: Duration) -> bool {
        e.sample.position >= 0
            && e.sample.end > e.sample.position
            && e.sample.queued == 0
            && now.duration_since(e.since) >= after
    }

    /// Every partition stalled for at least `after`; an episode is `new` the first time it
    /// is returned (and is counted then).
    pub fn stalled(&mut self, now: Instant, after: Duration) -> Vec<Stall> {
        let mut out = Vec::new();
        for ((topic, partition), e) in self.parts.iter_mut() {
            if !Self::is_stalled(e, now, after) {
                continue;
            }
            let new = !e.reported;
            if new {
                e.reported = true;
                *self
                    .episodes
                    .entry((topic.clone(), *partition))
                    .or_default() += 1;
            }
            out.push(Stall {
                topic: topic.clone(),
                partition: *partition,
                position: e.sample.position,
                end: e.sample.end,
                stalled_for: now.duration_since(e.since),
                new,
            });
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        out
    }

    /// For `/metrics`: every tracked partition with whether it is stalled now, and how many
    /// stall episodes it had.
    pub fn gauges(&self, now: Instant, after: Duration) -> Vec<(String, i32, bool, u64)> {
        let mut out: Vec<_> = self
            .parts
            .iter()
            .map(|((t, p), e)| {
                let episodes = self.episodes.get(&(t.clone(), *p)).copied().unwrap_or(0);
                (t.clone(), *p, Self::is_stalled(e, now, after), episodes)
            })
            .collect();
        out.sort();
        out
    }

    /// The longest current stall.
    pub fn longest(&self, now: Instant) -> Option<(String, i32, Duration)> {
        self.parts
            .iter()
            .filter(|(_, e)| Self::is_stalled(e, now, Duration::ZERO))
            .map(|((t, p), e)| (t.clone(), *p, now.duration_since(e.since)))
            .max_by_key(|(_, _, d)| *d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(position: i64, end: i64) -> FetchSample {
        FetchSample {
            position,
            end,
            queued: 0,
        }
    }

    #[test]
    fn a_position_that_stands_below_the_end_is_a_stall() {
        let mut t = StallTracker::default();
        let t0 = Instant::now();
        let after = Duration::from_secs(10);
        t.observe("logs", 0, sample(5, 9), t0);
        t.observe("logs", 0, sample(5, 12), t0 + Duration::from_secs(5));
        assert!(t.stalled(t0 + Duration::from_secs(9), after).is_empty());
        let s = t.stalled(t0 + Duration::from_secs(10), after);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].position, s[0].end, s[0].new), (5, 12, true));
        // Reported once per episode.
        let s = t.stalled(t0 + Duration::from_secs(11), after);
        assert!(!s[0].new);
        assert_eq!(
            t.gauges(t0 + Duration::from_secs(11), after)[0],
            ("logs".into(), 0, true, 1)
        );
        assert_eq!(
            t.longest(t0 + Duration::from_secs(11)).unwrap().2,
            Duration::from_secs(11)
        );
        // It moves again: the episode ends.
        t.observe("logs", 0, sample(6, 12), t0 + Duration::from_secs(12));
        assert!(t.stalled(t0 + Duration::from_secs(13), after).is_empty());
        assert!(!t.gauges(t0 + Duration::from_secs(13), after)[0].2);
    }

    #[test]
    fn idle_partitions_and_backpressure_are_not_stalls() {
        let mut t = StallTracker::default();
        let t0 = Instant::now();
        let after = Duration::from_secs(1);
        t.observe("idle", 0, sample(7, 7), t0);
        t.observe("unknown", 0, sample(-1001, 7), t0);
        t.observe(
            "busy",
            0,
            FetchSample {
                position: 3,
                end: 100,
                queued: 40,
            },
            t0,
        );
        assert!(t.stalled(t0 + Duration::from_secs(60), after).is_empty());
    }

    #[test]
    fn forgotten_partitions_start_over() {
        let mut t = StallTracker::default();
        let t0 = Instant::now();
        t.observe("logs", 1, sample(5, 9), t0);
        t.forget("logs", 1);
        t.observe("logs", 1, sample(5, 9), t0 + Duration::from_secs(30));
        assert!(t
            .stalled(t0 + Duration::from_secs(31), Duration::from_secs(10))
            .is_empty());
        t.retain(|_, _| false);
        assert!(t.gauges(t0, Duration::ZERO).is_empty());
    }
}
