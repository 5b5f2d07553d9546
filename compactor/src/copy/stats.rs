//! The Delta statistics of a copied file, from its inputs' own.

use std::cmp::Ordering;

use serde_json::{Map, Value};

/// The Delta statistics (`numRecords`, `minValues`, `maxValues`, `nullCount`) of a file that
/// holds exactly the rows of files with statistics `inputs`. A column keeps a bound only when
/// every input has one of a comparable kind; `None` when an input has no row count.
/// `time_columns` are the paths of timestamp columns, whose bounds are compared as times (Delta
/// writes them in RFC 3339 of varying width: `10:00:00Z` is before `10:00:00.5Z`).
pub fn merged_stats(inputs: &[Option<String>], time_columns: &[Vec<String>]) -> Option<String> {
    let parsed: Vec<Map<String, Value>> = inputs
        .iter()
        .map(|s| match serde_json::from_str(s.as_deref()?) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        })
        .collect::<Option<_>>()?;
    if parsed.is_empty() {
        return None;
    }
    let mut out = Map::new();
    let records: Option<i64> = parsed
        .iter()
        .map(|m| m.get("numRecords").and_then(Value::as_i64))
        .sum();
    out.insert("numRecords".into(), Value::from(records?));
    for (key, stat) in [
        ("minValues", Stat::Min),
        ("maxValues", Stat::Max),
        ("nullCount", Stat::NullCount),
    ] {
        let values: Option<Vec<&Value>> = parsed.iter().map(|m| m.get(key)).collect();
        let merge = Merge { stat, time_columns };
        if let Some(merged) = values.and_then(|v| merge.column(&v, &mut Vec::new())) {
            out.insert(key.into(), merged);
        }
    }
    Some(Value::Object(out).to_string())
}

#[derive(Debug, Clone, Copy)]
enum Stat {
    Min,
    Max,
    NullCount,
}

/// Merges one statistic of every column across inputs.
struct Merge<'a> {
    stat: Stat,
    time_columns: &'a [Vec<String>],
}

impl Merge<'_> {
    /// Merges objects key by key (nested columns are nested objects), keeping the keys every
    /// input has and that merge.
    fn column(&self, values: &[&Value], path: &mut Vec<String>) -> Option<Value> {
        let Some(Value::Object(first)) = values.first() else {
            return self.leaf(values, path);
        };
        let mut out = Map::new();
        for key in first.keys() {
            let column: Option<Vec<&Value>> = values.iter().map(|v| v.get(key)).collect();
            path.push(key.clone());
            let merged = column.and_then(|column| {
                if column.iter().all(|v| v.is_object()) {
                    self.column(&column, path)
                } else {
                    self.leaf(&column, path)
                }
            });
            path.pop();
            if let Some(merged) = merged {
                out.insert(key.clone(), merged);
            }
        }
        Some(Value::Object(out))
    }

    fn leaf(&self, values: &[&Value], path: &[String]) -> Option<Value> {
        let keep = match self.stat {
            Stat::NullCount => {
                return values
                    .iter()
                    .map(|v| v.as_i64())
                    .sum::<Option<i64>>()
                    .map(Value::from)
            }
            Stat::Min => Ordering::Less,
            Stat::Max => Ordering::Greater,
        };
        let is_time = self.time_columns.iter().any(|c| c == path);
        let mut best = *values.first()?;
        for &v in &values[1..] {
            if compare(v, best, is_time)? == keep {
                best = v;
            }
        }
        Some(best.clone())
    }
}

/// Orders two statistics values of one column: times as times, numbers by value, other
/// strings (text; dates, which are fixed-width) byte by byte as Parquet orders them, booleans
/// false first. Values of different kinds do not compare.
fn compare(a: &Value, b: &Value, is_time: bool) -> Option<Ordering> {
    match (a, b) {
        (Value::String(x), Value::String(y)) if is_time => {
            let x = chrono::DateTime::parse_from_rfc3339(x).ok()?;
            let y = chrono::DateTime::parse_from_rfc3339(y).ok()?;
            Some(x.cmp(&y))
        }
        _ if is_time => None,
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => x.as_f64()?.partial_cmp(&y.as_f64()?),
        },
        (Value::String(x), Value::String(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_the_union() {
        let a = r#"{"numRecords":3,"minValues":{"timestamp":"2026-01-02T00:00:00.000Z","level":"INFO","n":5,"attr":{"x":1.5}},"maxValues":{"timestamp":"2026-01-02T00:10:00.000Z","level":"WARN","n":9,"attr":{"x":2.0}},"nullCount":{"timestamp":0,"level":1,"n":0,"message":0,"attr":{"x":1}}}"#;
        let b = r#"{"numRecords":4,"minValues":{"timestamp":"2026-01-02T00:10:00.000Z","level":"DEBUG","n":-2,"attr":{"x":0.5}},"maxValues":{"timestamp":"2026-01-02T00:20:00.000Z","level":"ERROR","n":7,"attr":{"x":3}},"nullCount":{"timestamp":0,"level":2,"n":1,"message":0,"attr":{"x":0}}}"#;
        let time = [vec!["timestamp".to_string()]];
        let merged: Value =
            serde_json::from_str(&merged_stats(&[Some(a.into()), Some(b.into())], &time).unwrap())
                .unwrap();
        let expected: Value = serde_json::from_str(r#"{"numRecords":7,"minValues":{"timestamp":"2026-01-02T00:00:00.000Z","level":"DEBUG","n":-2,"attr":{"x":0.5}},"maxValues":{"timestamp":"2026-01-02T00:20:00.000Z","level":"WARN","n":9,"attr":{"x":3}},"nullCount":{"timestamp":0,"level":3,"n":1,"message":0,"attr":{"x":1}}}"#).unwrap();
        assert_eq!(merged, expected);
    }

    #[test]
    fn times_compare_as_times_not_as_text() {
        // Delta writes whole seconds without a fraction: as text, "…:00Z" sorts after "…:00.5Z".
        let a = r#"{"numRecords":1,"minValues":{"ts":"2026-01-02T10:00:00.500Z","s":"2026-01-02T10:00:00.500Z"},"maxValues":{"ts":"2026-01-02T10:00:00.500Z"}}"#;
        let b = r#"{"numRecords":1,"minValues":{"ts":"2026-01-02T10:00:00Z","s":"2026-01-02T10:00:00Z"},"maxValues":{"ts":"2026-01-02T10:00:01Z"}}"#;
        let merged: Value = serde_json::from_str(
            &merged_stats(&[Some(a.into()), Some(b.into())], &[vec!["ts".into()]]).unwrap(),
        )
        .unwrap();
        assert_eq!(merged["minValues"]["ts"], "2026-01-02T10:00:00Z");
        assert_eq!(merged["maxValues"]["ts"], "2026-01-02T10:00:01Z");
        // A text column is ordered as Parquet orders text: byte by byte.
        assert_eq!(merged["minValues"]["s"], "2026-01-02T10:00:00.500Z");
    }

    #[test]
    fn a_column_without_a_bound_in_one_input_has_none_in_the_union() {
        let a = r#"{"numRecords":1,"minValues":{"a":1,"b":"x"},"maxValues":{"a":1,"b":"x"},"nullCount":{"a":0,"b":0}}"#;
        let b = r#"{"numRecords":1,"minValues":{"a":2},"maxValues":{"a":2,"b":3},"nullCount":{"a":0,"b":1}}"#;
        let merged: Value =
            serde_json::from_str(&merged_stats(&[Some(a.into()), Some(b.into())], &[]).unwrap())
                .unwrap();
        assert_eq!(merged["minValues"], serde_json::json!({"a": 1}));
        // "x" and 3 do not compare: no bound rather than a wrong one.
        assert_eq!(merged["maxValues"], serde_json::json!({"a": 2}));
        assert_eq!(merged["nullCount"], serde_json::json!({"a": 0, "b": 1}));
    }

    #[test]
    fn no_row_count_no_statistics() {
        assert_eq!(
            merged_stats(&[Some(r#"{"numRecords":1}"#.into()), None], &[]),
            None
        );
        assert_eq!(
            merged_stats(&[Some(r#"{"minValues":{}}"#.into())], &[]),
            None
        );
        assert_eq!(merged_stats(&[], &[]), None);
    }
}
