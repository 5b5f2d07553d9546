//! Which hosts one topic has written to each event hour, remembered across flushes: the cap
//! on hosts per hour (`ingest.max_open_partitions`) that keeps a topic keyed by request ids
//! from writing one file per record.
//!
//! Counting only what one flush holds bounds the files of a flush, not of an hour: a topic
//! flushed every few seconds would still add a cap's worth of one-row files, and of entries
//! in every reader's and writer's file list, with each flush. Remembered per hour, the cap
//! holds for the hour: once an hour has its hosts, a new host's rows go to the overflow host
//! (one file per flush).

use std::collections::{BTreeMap, HashSet};
use std::hash::BuildHasher;

/// Hours, and the hashes of the hosts admitted to each: at most four hours' worth of the cap
/// in all, oldest hours forgotten first.
#[derive(Debug)]
pub struct HourHosts {
    max_per_hour: usize,
    max_remembered: usize,
    /// A 64-bit hash stands for a host: 8 bytes whatever the host's length, and two hosts
    /// sharing one only let the second through the cap.
    hasher: foldhash::fast::RandomState,
    hours: BTreeMap<i64, HashSet<u64, foldhash::fast::RandomState>>,
    remembered: usize,
}

/// Hours' worth of a full cap remembered: the hour being written, the one before (late
/// records, the turn of the hour) and room for stragglers.
const HOURS_REMEMBERED: usize = 4;

impl HourHosts {
    /// `max_per_hour` hosts may be admitted to one hour.
    pub fn new(max_per_hour: usize) -> Self {
        let max_per_hour = max_per_hour.max(1);
        Self {
            max_per_hour,
            max_remembered: max_per_hour.saturating_mul(HOURS_REMEMBERED),
            hasher: foldhash::fast::RandomState::default(),
            hours: BTreeMap::new(),
            remembered: 0,
        }
    }

    /// Whether `host` may have its own partition in `hour` (hours since the epoch): it
    /// already has one, or the hour has room. `overflow_host` is always admitted.
    pub fn admit(&mut self, host: &str, hour: i64, overflow_host: &str) -> bool {
        if host == overflow_host {
            return true;
        }
        let hash = self.hasher.hash_one(host);
        let hosts = self.hours.entry(hour).or_default();
        if hosts.contains(&hash) {
            return true;
        }
        if hosts.len() >= self.max_per_hour {
            return false;
        }
        hosts.insert(hash);
        self.remembered += 1;
        // Forgetting an hour lets its cap be spent again: once per `HOURS_REMEMBERED` full
        // hours at the worst (records spread over many hours), never for the hours written.
        while self.remembered > self.max_remembered {
            let Some((_, forgotten)) = self.hours.pop_first() else {
                break;
            };
            self.remembered -= forgotten.len();
        }
        true
    }

    /// Hosts remembered, over all hours.
    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        self.remembered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_admits_its_cap_of_hosts_and_those_again() {
        let mut hosts = HourHosts::new(3);
        let admitted: Vec<bool> = ["a", "b", "c", "d", "a", "c", "e"]
            .iter()
            .map(|h| hosts.admit(h, 10, "_o"))
            .collect();
        assert_eq!(admitted, [true, true, true, false, true, true, false]);
        // The next hour has its own cap; the overflow host always goes through.
        assert!(hosts.admit("d", 11, "_o"));
        assert!(hosts.admit("_o", 10, "_o"));
        assert_eq!(hosts.remembered(), 4);
    }

    #[test]
    fn memory_stays_bounded_over_many_hours() {
        let mut hosts = HourHosts::new(10);
        for hour in 0..1_000 {
            for h in 0..10 {
                assert!(hosts.admit(&format!("h{h}"), hour, "_o"));
            }
        }
        assert!(hosts.remembered() <= 40, "{}", hosts.remembered());
        // The newest hours are the ones remembered.
        assert!(!hosts.admit("new", 999, "_o"));
    }
}
