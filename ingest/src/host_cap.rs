//! The cap on new hosts per topic (`ingest.max_open_partitions`): how many distinct hosts
//! one topic may write in an hour of the worker's time, over all its flushes. It keeps a
//! topic keyed by request ids from writing one file per record.
//!
//! Counting only what one flush holds bounds the files of a flush, not their rate: a topic
//! flushed every few seconds would still add a cap's worth of one-row files, and of entries
//! in every reader's and writer's file list (~2 KiB each in a delta-rs snapshot), with each
//! flush. Counted over an hour, a topic adds at most a cap's worth of hosts an hour; the
//! rows of the hosts past it go to the overflow host (one file per hour of events and flush).
//!
//! The window is an hour of the worker's clock, not of event time: a fleet's hosts are the
//! same from one event hour to the next and are counted once per window whatever hours their
//! records carry, while hosts that come and go (pods) are forgotten within the hour.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

/// How long admitted hosts are remembered.
pub const WINDOW: Duration = Duration::from_secs(3600);

/// The hosts a topic admitted since the window began.
#[derive(Debug)]
pub struct HostCap {
    max: usize,
    /// A 64-bit hash stands for a host: 8 bytes whatever the host's length; two hosts
    /// sharing one only let the second through the cap.
    hasher: foldhash::fast::RandomState,
    hosts: HashSet<u64, foldhash::fast::RandomState>,
    since: Instant,
    /// A host was refused this window.
    refused: bool,
}

/// What [`HostCap::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Refused: the window's hosts are at the cap. `first` for the window's first refusal
    /// (worth telling the operator once).
    Refused {
        first: bool,
    },
}

impl HostCap {
    /// `max` hosts (at least one) may be admitted per window.
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            hasher: foldhash::fast::RandomState::default(),
            hosts: HashSet::default(),
            since: Instant::now(),
            refused: false,
        }
    }

    /// Whether `host` may have partitions of its own: admitted already this window, or
    /// there is room. `overflow_host` is always admitted (and never counted).
    pub fn admit(&mut self, host: &str, overflow_host: &str) -> Admission {
        if host == overflow_host {
            return Admission::Admitted;
        }
        let hash = self.hasher.hash_one(host);
        if self.hosts.contains(&hash) {
            return Admission::Admitted;
        }
        if self.hosts.len() >= self.max {
            let first = !std::mem::replace(&mut self.refused, true);
            return Admission::Refused { first };
        }
        self.hosts.insert(hash);
        Admission::Admitted
    }

    /// Between flushes (no partition open): starts a new window once [`WINDOW`] has passed
    /// since this one began.
    pub fn roll(&mut self, now: Instant) {
        if now.saturating_duration_since(self.since) >= WINDOW {
            self.hosts = HashSet::default();
            self.since = now;
            self.refused = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_admits_its_cap_of_hosts_and_those_again() {
        let mut cap = HostCap::new(3);
        let admitted: Vec<Admission> = ["a", "b", "c", "d", "a", "c", "e", "_o"]
            .iter()
            .map(|h| cap.admit(h, "_o"))
            .collect();
        use Admission::*;
        assert_eq!(
            admitted,
            [
                Admitted,
                Admitted,
                Admitted,
                Refused { first: true },
                Admitted,
                Admitted,
                Refused { first: false },
                Admitted
            ]
        );
        // Within the hour nothing changes; after it, there is room again.
        let start = cap.since;
        cap.roll(start + WINDOW - Duration::from_secs(1));
        assert_eq!(cap.admit("d", "_o"), Refused { first: false });
        cap.roll(start + WINDOW);
        for host in ["d", "e", "f"] {
            assert_eq!(cap.admit(host, "_o"), Admitted);
        }
        // One past the cap of the new window, and the first refusal of it.
        assert_eq!(cap.admit("a", "_o"), Refused { first: true });
    }
}
