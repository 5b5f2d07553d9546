//! Event-time parsing. All times are UTC microseconds since the Unix epoch.

use crate::val::Val;
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde::Deserialize;

/// Earliest event time accepted (2000-01-01T00:00:00Z); older values are treated as unusable.
pub const MIN_EVENT_TIME_US: i64 = 946_684_800_000_000;
/// Latest event time accepted at all (2200-01-01T00:00:00Z).
pub const MAX_EVENT_TIME_US: i64 = 7_258_118_400_000_000;

/// How a timestamp field is written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TimestampFormat {
    #[default]
    Auto,
    Rfc3339,
    UnixSeconds,
    UnixMillis,
    UnixMicros,
    UnixNanos,
    /// A chrono strftime pattern, read as UTC.
    Strftime(String),
}

impl<'de> Deserialize<'de> for TimestampFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "auto" => Self::Auto,
            "rfc3339" => Self::Rfc3339,
            "unix_s" => Self::UnixSeconds,
            "unix_ms" => Self::UnixMillis,
            "unix_us" => Self::UnixMicros,
            "unix_ns" => Self::UnixNanos,
            other if other.contains('%') => Self::Strftime(other.to_string()),
            other => {
                return Err(serde::de::Error::custom(format!(
                    "timestamp_format {other:?}: expected auto, rfc3339, unix_s, unix_ms, \
                     unix_us, unix_ns or a strftime pattern such as \"%Y-%m-%d %H:%M:%S\""
                )))
            }
        })
    }
}

fn epoch_auto(n: f64) -> Option<i64> {
    // Pick the unit by magnitude: seconds until year ~5138, then ms, µs, ns.
    let abs = n.abs();
    let us = if abs < 1e11 {
        n * 1e6
    } else if abs < 1e14 {
        n * 1e3
    } else if abs < 1e17 {
        n
    } else {
        n / 1e3
    };
    us.is_finite().then_some(us as i64)
}

/// `YYYY-MM-DDTHH:MM:SS[.f]Z`, the shape nearly every shipper writes, read without chrono
/// (which is general and several times slower). Anything else, including leap seconds and
/// offsets, returns `None` and goes the general way.
fn parse_utc_fast(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || !matches!(b[b.len() - 1], b'Z' | b'z') {
        return None;
    }
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, minute) = (digits(&b[11..13])?, digits(&b[14..16])?);
    let second = digits(&b[17..19])?;
    if !(1..=12).contains(&month) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if day < 1 || day > month_days[month as usize - 1] {
        return None;
    }
    let fraction = &b[19..b.len() - 1];
    let micros = match fraction.split_first() {
        None => 0,
        Some((b'.', digits)) if (1..=9).contains(&digits.len()) => {
            let mut us = 0;
            for i in 0..6 {
                let d = match digits.get(i) {
                    Some(c) if c.is_ascii_digit() => i64::from(c - b'0'),
                    Some(_) => return None,
                    None => 0,
                };
                us = us * 10 + d;
            }
            if !digits[6.min(digits.len())..].iter().all(u8::is_ascii_digit) {
                return None;
            }
            us
        }
        Some(_) => return None,
    };
    // Days since the epoch of a civil date (H. Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hour) * 60 + minute) * 60_000_000 + second * 1_000_000 + micros)
}

/// The value of `b`, all ASCII digits (at most four: no overflow). Inlined: as a closure it
/// was a call for each field of every timestamp, 40 % of the parse.
#[inline(always)]
fn digits(b: &[u8]) -> Option<i64> {
    let mut n = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(c - b'0');
    }
    Some(n)
}

fn parse_text(s: &str, format: &TimestampFormat) -> Option<i64> {
    let s = s.trim();
    if matches!(format, TimestampFormat::Auto | TimestampFormat::Rfc3339) {
        if let Some(us) = parse_utc_fast(s) {
            return Some(us);
        }
    }
    match format {
        TimestampFormat::Strftime(pattern) => {
            if let Ok(dt) = DateTime::parse_from_str(s, pattern) {
                return Some(dt.with_timezone(&Utc).timestamp_micros());
            }
            NaiveDateTime::parse_from_str(s, pattern)
                .ok()
                .map(|n| Utc.from_utc_datetime(&n).timestamp_micros())
        }
        TimestampFormat::Rfc3339 => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| d.timestamp_micros()),
        TimestampFormat::Auto => {
            if let Ok(d) = DateTime::parse_from_rfc3339(s) {
                return Some(d.timestamp_micros());
            }
            for pattern in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
                if let Ok(n) = NaiveDateTime::parse_from_str(s, pattern) {
                    return Some(Utc.from_utc_datetime(&n).timestamp_micros());
                }
            }
            for pattern in ["%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f %z"] {
                if let Ok(d) = DateTime::parse_from_str(s, pattern) {
                    return Some(d.timestamp_micros());
                }
            }
            s.parse::<f64>().ok().and_then(epoch_auto)
        }
        unix => s.parse::<f64>().ok().and_then(|n| epoch_unit(n, unix)),
    }
}

fn epoch_unit(n: f64, format: &TimestampFormat) -> Option<i64> {
    let us = match format {
        TimestampFormat::UnixSeconds => n * 1e6,
        TimestampFormat::UnixMillis => n * 1e3,
        TimestampFormat::UnixMicros => n,
        TimestampFormat::UnixNanos => n / 1e3,
        _ => return epoch_auto(n),
    };
    us.is_finite().then_some(us as i64)
}

/// Reads a JSON value as an event time, in UTC microseconds. `None` when the value is not a
/// time in this format or lies outside 2000..2200.
pub(crate) fn parse_timestamp_value(value: &Val<'_>, format: &TimestampFormat) -> Option<i64> {
    let us = match value {
        Val::Str(s) => parse_text(s, format),
        Val::Number(n) => n.as_f64().and_then(|n| epoch_unit(n, format)),
        _ => None,
    }?;
    (MIN_EVENT_TIME_US..MAX_EVENT_TIME_US)
        .contains(&us)
        .then_some(us)
}

/// The Hive partition values (`date`, `hour`) of an event time. Plain arithmetic instead of
/// strftime: it runs for every new (host, hour) buffer and for rows that report theirs.
pub fn format_partition(timestamp_us: i64) -> (String, String) {
    const DAYS_FROM_CE_TO_UNIX_EPOCH: i64 = 719_163;
    let secs = timestamp_us.div_euclid(1_000_000);
    let days = secs.div_euclid(86_400) + DAYS_FROM_CE_TO_UNIX_EPOCH;
    let hour = secs.rem_euclid(86_400) / 3600;
    let date = i32::try_from(days)
        .ok()
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .unwrap_or_default();
    (
        format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day()),
        format!("{hour:02}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::{json, Value};

    fn parse(value: &Value, format: &TimestampFormat) -> Option<i64> {
        parse_timestamp_value(&Val::deserialize(value.clone()).unwrap(), format)
    }

    const T: i64 = 1_767_323_045_000_000; // 2026-01-02T03:04:05Z

    #[test]
    fn auto_reads_common_shapes() {
        let f = TimestampFormat::Auto;
        for v in [
            json!("2026-01-02T03:04:05Z"),
            json!("2026-01-02T04:04:05+01:00"),
            json!("2026-01-02 03:04:05"),
            json!("2026-01-02T03:04:05.000"),
            json!(1_767_323_045),
            json!(1_767_323_045_000i64),
            json!(1_767_323_045_000_000i64),
            json!(1_767_323_045_000_000_000i64),
            json!("1767323045"),
            json!(1_767_323_045.0),
        ] {
            assert_eq!(parse(&v, &f), Some(T), "{v}");
        }
    }

    #[test]
    fn absurd_and_malformed_are_none() {
        let f = TimestampFormat::Auto;
        for v in [
            json!("yesterday"),
            json!(""),
            json!(true),
            json!(null),
            json!({}),
            json!("1900-01-01T00:00:00Z"),
            json!("9999-01-01T00:00:00Z"),
            json!(-5),
            json!(1e300),
        ] {
            assert_eq!(parse(&v, &f), None, "{v}");
        }
    }

    #[test]
    fn strftime_is_utc() {
        let f = TimestampFormat::Strftime("%y%m%d %H%M%S".into());
        assert_eq!(parse(&json!("260102 030405"), &f), Some(T));
    }

    #[test]
    fn partition_values() {
        assert_eq!(format_partition(T), ("2026-01-02".into(), "03".into()));
    }

    proptest::proptest! {
        #[test]
        fn fast_utc_path_matches_chrono(us in MIN_EVENT_TIME_US..MAX_EVENT_TIME_US, digits in 0usize..10) {
            let dt = Utc.timestamp_micros(us).unwrap();
            let text = match digits {
                0 => dt.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                n => format!("{}{}Z", dt.format("%Y-%m-%dT%H:%M:%S."), &format!("{:09}", dt.timestamp_subsec_nanos())[..n]),
            };
            let chrono = DateTime::parse_from_rfc3339(&text).unwrap().timestamp_micros();
            proptest::prop_assert_eq!(parse_utc_fast(&text), Some(chrono), "{}", text);
        }

        #[test]
        fn fast_utc_path_refuses_what_it_does_not_know(text in "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,10})?[Zz+]?") {
            if let Some(us) = parse_utc_fast(&text) {
                let chrono = DateTime::parse_from_rfc3339(&text).map(|d| d.timestamp_micros());
                proptest::prop_assert_eq!(Ok(us), chrono, "{}", text);
            }
        }

        #[test]
        fn partition_matches_chrono(us in MIN_EVENT_TIME_US..MAX_EVENT_TIME_US) {
            let (date, hour) = format_partition(us);
            let dt = Utc.timestamp_micros(us).unwrap();
            proptest::prop_assert_eq!(date, dt.date_naive().to_string());
            proptest::prop_assert_eq!(hour.parse::<u32>().unwrap(), chrono::Timelike::hour(&dt));
        }

        #[test]
        fn rfc3339_roundtrips(us in MIN_EVENT_TIME_US..MAX_EVENT_TIME_US) {
            let s = Utc.timestamp_micros(us).unwrap().to_rfc3339();
            proptest::prop_assert_eq!(parse(&Value::String(s), &TimestampFormat::Auto), Some(us));
        }
    }
}
