//! Which small files of which closed hours to merge. Pure: the caller passes the files and
//! the time.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};

/// One live data file of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub path: String,
    pub host: String,
    pub date: String,
    pub hour: String,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct PlanConfig {
    /// Merged files aim at this size.
    pub target_file_size: u64,
    /// An hour is closed this long after it ends (late records still arrive until then).
    pub grace: Duration,
    /// Fewer small files than this in an hour are left alone.
    pub min_files: usize,
    /// At most this many files per merge.
    pub max_fan_in: usize,
}

impl Default for PlanConfig {
    fn default() -> Self {
        Self {
            target_file_size: 256 << 20,
            grace: Duration::from_secs(3600),
            min_files: 2,
            max_fan_in: 128,
        }
    }
}

/// Files of one (host, date, hour) to rewrite as one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    pub host: String,
    pub date: String,
    pub hour: String,
    pub inputs: Vec<String>,
    pub bytes: u64,
}

/// When the hour `date`/`hour` ends; `None` for values that are not a date and an hour.
pub fn hour_end(date: &str, hour: &str) -> Option<DateTime<Utc>> {
    let day = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let h: u32 = hour.parse().ok().filter(|h| *h < 24)?;
    let start = Utc.from_utc_datetime(&day.and_hms_opt(h, 0, 0)?);
    Some(start + chrono::Duration::hours(1))
}

/// Plans merges: in every closed hour, small files (under half the target) are packed,
/// smallest first, into groups of at most the target size and `max_fan_in` files; groups of
/// fewer than `min_files` files are dropped.
pub fn plan(files: &[FileInfo], now: DateTime<Utc>, config: &PlanConfig) -> Vec<Merge> {
    let grace = chrono::Duration::from_std(config.grace).unwrap_or(chrono::Duration::MAX);
    let mut by_hour: BTreeMap<(&str, &str, &str), Vec<&FileInfo>> = BTreeMap::new();
    for f in files {
        if f.size < config.target_file_size / 2 {
            by_hour
                .entry((&f.host, &f.date, &f.hour))
                .or_default()
                .push(f);
        }
    }
    let mut merges = Vec::new();
    for ((host, date, hour), mut small) in by_hour {
        let closed = hour_end(date, hour).is_some_and(|end| end + grace <= now);
        if !closed {
            continue;
        }
        small.sort_by_key(|f| (f.size, f.path.as_str()));
        let mut group: Vec<&FileInfo> = Vec::new();
        let mut bytes = 0;
        let mut flush = |group: &mut Vec<&FileInfo>, bytes: &mut u64| {
            if group.len() >= config.min_files.max(2) {
                merges.push(Merge {
                    host: host.to_string(),
                    date: date.to_string(),
                    hour: hour.to_string(),
                    inputs: group.iter().map(|f| f.path.clone()).collect(),
                    bytes: *bytes,
                });
            }
            group.clear();
            *bytes = 0;
        };
        for f in small {
            let full =
                bytes + f.size > config.target_file_size || group.len() >= config.max_fan_in.max(2);
            if full && !group.is_empty() {
                flush(&mut group, &mut bytes);
            }
            group.push(f);
            bytes += f.size;
        }
        flush(&mut group, &mut bytes);
    }
    merges
}

/// The files of hours that ended more than `retention` before `now` (retention removes
/// them). Files whose date/hour do not parse are kept: nothing is deleted on a guess.
pub fn expired(files: &[FileInfo], now: DateTime<Utc>, retention: Duration) -> Vec<&FileInfo> {
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    files
        .iter()
        .filter(|f| {
            hour_end(&f.date, &f.hour)
                .and_then(|end| end.checked_add_signed(retention))
                .is_some_and(|gone| gone <= now)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(path: &str, hour: &str, size: u64) -> FileInfo {
        FileInfo {
            path: path.into(),
            host: "h".into(),
            date: "2026-01-02".into(),
            hour: hour.into(),
            size,
        }
    }

    #[test]
    fn open_hours_are_left_alone() {
        let now = Utc.with_ymd_and_hms(2026, 1, 2, 4, 30, 0).unwrap();
        let files = [
            file("a", "03", 1),
            file("b", "03", 1),
            file("c", "02", 1),
            file("d", "02", 1),
        ];
        let merges = plan(&files, now, &PlanConfig::default());
        assert_eq!(merges.len(), 1, "03 closes at 05:00 with an hour of grace");
        assert_eq!(merges[0].hour, "02");
    }

    #[test]
    fn big_files_and_lone_files_stay() {
        let now = Utc.with_ymd_and_hms(2026, 1, 3, 0, 0, 0).unwrap();
        let cfg = PlanConfig {
            target_file_size: 100,
            ..Default::default()
        };
        assert!(plan(&[file("a", "01", 80), file("b", "01", 90)], now, &cfg).is_empty());
        assert!(plan(&[file("a", "01", 10)], now, &cfg).is_empty());
        assert!(plan(&[file("a", "bad", 10), file("b", "bad", 10)], now, &cfg).is_empty());
    }

    #[test]
    fn retention_takes_whole_hours_that_ended_long_enough_ago() {
        let now = Utc.with_ymd_and_hms(2026, 1, 12, 3, 30, 0).unwrap();
        let day = Duration::from_secs(86400);
        let mut files = vec![file("a", "01", 5), file("b", "02", 5), file("c", "bad", 5)];
        files.push(FileInfo {
            date: "2026-01-11".into(),
            ..file("d", "03", 5)
        });
        // 2026-01-02 hours end long before; 2026-01-11 03:00-04:00 ends 23.5h before now.
        let gone: Vec<&str> = expired(&files, now, day)
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        assert_eq!(gone, vec!["a", "b"]);
        assert!(expired(&files, now, day * 30).is_empty());
    }

    proptest! {
        #[test]
        fn plans_are_sound(sizes in proptest::collection::vec((0u64..200, 0u32..24), 0..60)) {
            let files: Vec<FileInfo> = sizes.iter().enumerate()
                .map(|(i, (size, hour))| file(&format!("f{i}"), &format!("{hour:02}"), *size))
                .collect();
            let now = Utc.with_ymd_and_hms(2026, 1, 2, 12, 0, 0).unwrap();
            let cfg = PlanConfig { target_file_size: 200, grace: Duration::from_secs(1800), min_files: 2, max_fan_in: 5 };
            let merges = plan(&files, now, &cfg);
            let mut seen = std::collections::HashSet::new();
            for m in &merges {
                prop_assert!(m.inputs.len() >= 2 && m.inputs.len() <= 5);
                prop_assert!(m.bytes <= 200);
                prop_assert!(hour_end(&m.date, &m.hour).unwrap() + chrono::Duration::minutes(30) <= now);
                for i in &m.inputs {
                    prop_assert!(seen.insert(i.clone()), "file planned twice");
                    let f = files.iter().find(|f| &f.path == i).unwrap();
                    prop_assert_eq!(&f.hour, &m.hour);
                }
            }
        }
    }
}
