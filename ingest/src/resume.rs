//! Where a partition resumes: what the table archived against what Kafka still holds. Pure.
//!
//! The table's `txn(p)` is the last offset archived; the partition resumes at the next one.
//! Kafka may no longer agree that offset exists:
//!
//! - **Retention** deleted records the worker never read (it was stopped, or lagged past
//!   `retention.ms`): the partition's start offset is past the next expected one. The range
//!   becomes an `offset_gap` row in the quarantine table, and the partition moves on.
//! - **A recreated topic** (deleted and created again) restarts its offsets at 0: its end is
//!   below the next expected offset. Archiving on would skip the new generation's first
//!   records, or later mix two generations under one offset sequence; the partition stops
//!   until an operator accepts the new generation (`ingest.accept_recreated_topics`).
//!
//! A broker may report an end offset that lags its log (Tansu's is the base offset of the
//! last batch, plus one), so an end below the expected offset is first confirmed by fetching
//! the last archived offset: if that record is still there, the topic was not recreated.
//! What this cannot see: a topic recreated and refilled past the archived offset before the
//! worker looks again. Kafka's topic ids would tell; librdkafka's metadata API does not expose
//! them to us.

/// Where a partition the table has never seen starts (`auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Beginning,
    End,
}

/// Where to seek.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Beginning,
    End,
    Offset(i64),
}

/// What to do with a partition, given the table's progress and Kafka's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Seek there and read on.
    At(Target),
    /// Kafka no longer holds `first..=last`: record the gap, then read on from `last + 1`.
    Gap { first: i64, last: i64 },
    /// Kafka's end offset is below the next expected one: ask the broker whether the record
    /// at `committed` is still there before deciding (see [`confirmed`]).
    Confirm { committed: i64, low: i64, end: i64 },
    /// The partition restarted below what the table archived: stop it (or, accepted, start
    /// over at `low`, the new topic's first offset).
    Recreated { committed: i64, low: i64, end: i64 },
}

/// Decides from `committed` (the table's `txn(p)`; or, while running, the offset before the
/// next expected one) and Kafka's `low`/`high` watermarks (first offset held, next offset
/// to be written).
pub fn classify(committed: Option<i64>, low: i64, high: i64, start: Start) -> Resume {
    let Some(committed) = committed else {
        return Resume::At(match start {
            Start::Beginning => Target::Beginning,
            Start::End => Target::End,
        });
    };
    let next = committed.saturating_add(1);
    if high < next {
        Resume::Confirm {
            committed,
            low,
            end: high,
        }
    } else if low > next {
        Resume::Gap {
            first: next,
            last: low - 1,
        }
    } else {
        Resume::At(Target::Offset(next))
    }
}

/// The answer to [`Resume::Confirm`]: whether a record at or after `committed` could still be
/// fetched. `low` and `end` are the offsets Kafka reported.
pub fn confirmed(committed: i64, low: i64, end: i64, record_still_there: bool) -> Resume {
    if record_still_there {
        Resume::At(Target::Offset(committed.saturating_add(1)))
    } else {
        Resume::Recreated {
            committed,
            low,
            end,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_cases_a_user_meets() {
        // Never archived: the configured start.
        assert_eq!(
            classify(None, 5, 10, Start::Beginning),
            Resume::At(Target::Beginning)
        );
        assert_eq!(classify(None, 5, 10, Start::End), Resume::At(Target::End));
        // Caught up, or behind with everything still there.
        assert_eq!(
            classify(Some(9), 0, 10, Start::Beginning),
            Resume::At(Target::Offset(10))
        );
        assert_eq!(
            classify(Some(3), 0, 10, Start::End),
            Resume::At(Target::Offset(4))
        );
        // Retention deleted 4..=6 while the worker was stopped.
        assert_eq!(
            classify(Some(3), 7, 10, Start::Beginning),
            Resume::Gap { first: 4, last: 6 }
        );
        // Retention deleted everything up to the end, including what was never read.
        assert_eq!(
            classify(Some(3), 10, 10, Start::Beginning),
            Resume::Gap { first: 4, last: 9 }
        );
        // Recreated: the end is below what was archived.
        assert_eq!(
            classify(Some(99), 0, 12, Start::Beginning),
            Resume::Confirm {
                committed: 99,
                low: 0,
                end: 12
            }
        );
        assert_eq!(
            confirmed(99, 0, 12, false),
            Resume::Recreated {
                committed: 99,
                low: 0,
                end: 12
            }
        );
        // A broker whose end offset lags its log: the record is there, read on.
        assert_eq!(confirmed(99, 0, 12, true), Resume::At(Target::Offset(100)));
    }

    proptest! {
        /// Whatever Kafka reports, a resume never skips an offset Kafka still holds, and a
        /// gap covers exactly the offsets Kafka no longer holds.
        #[test]
        fn never_skips_what_kafka_holds(committed in -1i64..1_000, low in 0i64..1_200, len in 0i64..1_200) {
            let high = low + len;
            match classify(Some(committed), low, high, Start::End) {
                Resume::At(Target::Offset(at)) => {
                    prop_assert_eq!(at, committed + 1);
                    prop_assert!(low <= at && at <= high);
                }
                Resume::Gap { first, last } => {
                    prop_assert_eq!(first, committed + 1);
                    prop_assert_eq!(last + 1, low);
                    prop_assert!(first <= last && low <= high);
                }
                Resume::Confirm { committed: c, low: l, end } => {
                    prop_assert_eq!((c, l, end), (committed, low, high));
                    prop_assert!(high < committed + 1);
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }
}
