//! The exact part of an Add's Delta statistics, parsed once per file per table version.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// What a file's Delta statistics say exactly about one column. Only integer bounds are
/// exact: Delta writes timestamps in milliseconds and may truncate strings, and DataFusion
/// takes exact bounds as answers (`max(x)` from statistics alone), not only for pruning.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct ExactStats {
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub nulls: Option<u64>,
}

/// The parts of an Add's `stats` JSON the scan uses, read without building a JSON tree
/// (the index parses every live file's statistics once per table version).
#[derive(Debug, serde::Deserialize)]
pub(super) struct DeltaStats<'a> {
    #[serde(rename = "numRecords")]
    pub num_records: Option<u64>,
    #[serde(rename = "minValues", default, borrow)]
    min: HashMap<Cow<'a, str>, Int>,
    #[serde(rename = "maxValues", default, borrow)]
    max: HashMap<Cow<'a, str>, Int>,
    #[serde(rename = "nullCount", default, borrow)]
    nulls: HashMap<Cow<'a, str>, Int>,
}

/// A statistic that is an integer, or `None` for anything else (strings, floats, the nested
/// statistics of a struct column), which is skipped unparsed.
#[derive(Debug, Clone, Copy)]
struct Int(Option<i64>);

impl<'de> serde::Deserialize<'de> for Int {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Int;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a statistic")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Int, E> {
                Ok(Int(Some(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Int, E> {
                Ok(Int(i64::try_from(v).ok()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Int, E> {
                Ok(Int(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Int, E> {
                Ok(Int(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Int, E> {
                Ok(Int(None))
            }
            fn visit_unit<E>(self) -> Result<Int, E> {
                Ok(Int(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Int, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Int(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Int, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Int(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl DeltaStats<'_> {
    /// Per column: integer bounds found in both `minValues` and `maxValues`, and top-level
    /// null counts.
    pub fn exact(&self, names: &mut HashMap<String, Arc<str>>) -> Vec<(Arc<str>, ExactStats)> {
        let mut out: Vec<(Arc<str>, ExactStats)> = Vec::new();
        for name in self.min.keys().chain(self.nulls.keys()) {
            if out.iter().any(|(n, _)| **n == **name) {
                continue;
            }
            let int = |m: &HashMap<Cow<str>, Int>| m.get(name).and_then(|v| v.0);
            let bounds = int(&self.min).zip(int(&self.max));
            let stats = ExactStats {
                min: bounds.map(|b| b.0),
                max: bounds.map(|b| b.1),
                nulls: int(&self.nulls).and_then(|n| u64::try_from(n).ok()),
            };
            if stats == ExactStats::default() {
                continue;
            }
            let name = match names.get(name.as_ref()) {
                Some(n) => n.clone(),
                None => {
                    let n: Arc<str> = Arc::from(name.as_ref());
                    names.insert(name.to_string(), n.clone());
                    n
                }
            };
            out.push((name, stats));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_integer_bounds_and_null_counts_are_taken_as_exact() {
        let stats: DeltaStats = serde_json::from_str(
            r#"{"numRecords":3,"minValues":{"_kafka_offset":5,"timestamp":"2026-02-01T00:00:00.001Z","n":1.5,"s":{"a":1}},
                "maxValues":{"_kafka_offset":9,"timestamp":"2026-02-01T00:59:00Z","n":2.5},
                "nullCount":{"_kafka_offset":0,"message":2,"s":{"a":0}}}"#,
        )
        .unwrap();
        assert_eq!(stats.num_records, Some(3));
        let mut names = HashMap::new();
        let mut got = stats.exact(&mut names);
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let got: Vec<(&str, ExactStats)> = got.iter().map(|(n, s)| (&**n, *s)).collect();
        assert_eq!(
            got,
            [
                (
                    "_kafka_offset",
                    ExactStats {
                        min: Some(5),
                        max: Some(9),
                        nulls: Some(0)
                    }
                ),
                (
                    "message",
                    ExactStats {
                        min: None,
                        max: None,
                        nulls: Some(2)
                    }
                ),
            ]
        );
    }
}
