//! Partition pruning the user does not have to ask for.
//!
//! Ingest files every row under the `date` (`YYYY-MM-DD`) and `hour` (`HH`) of its own
//! `timestamp`, both UTC and zero-padded, so `(date, hour)` sorts like time. A filter on
//! `timestamp` therefore implies a filter on the partition columns, which Delta's log replay
//! uses to skip whole hours without opening a file. DataFusion cannot know that relation, so
//! [`partition_filters`] derives the implied predicates and the table provider adds them to the
//! scan (they are implied, never stricter: a row the user's filter keeps is never dropped).
//!
//! Filters arrive after DataFusion's simplifier: `now() - interval '1 hour'` and
//! `'2026-01-02T03:00:00Z'` are already timestamp literals, `BETWEEN` may still be one node.

use datafusion::logical_expr::{Between, BinaryExpr, Operator};
use datafusion::prelude::{col, lit, Expr};
use datafusion::scalar::ScalarValue;
use loglake_schemas::format_partition;

/// The column ingest partitions by.
pub const TIME_COLUMN: &str = "timestamp";

/// A bound on `timestamp`, in microseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    /// `timestamp >= t` or `timestamp > t`.
    From(i64),
    /// `timestamp <= t` or `timestamp < t`.
    Until(i64),
}

/// The partition predicates implied by `filters` (each a conjunct of the query's WHERE).
pub fn partition_filters(filters: &[Expr]) -> Vec<Expr> {
    let (from, until) = hour_bounds(filters);
    let mut out = Vec::new();
    if let Some((date, hour)) = from {
        // (date, hour) >= (d, h)
        out.push(col("date").gt_eq(lit(date.clone())));
        out.push(col("date").gt(lit(date)).or(col("hour").gt_eq(lit(hour))));
    }
    if let Some((date, hour)) = until {
        // (date, hour) <= (d, h)
        out.push(col("date").lt_eq(lit(date.clone())));
        out.push(col("date").lt(lit(date)).or(col("hour").lt_eq(lit(hour))));
    }
    out
}

/// A `(date, hour)` partition: `("2026-01-02", "03")`.
pub type Hour = (String, String);

/// The first and last `(date, hour)` partition a row kept by `filters` can lie in; `None`
/// where the filters leave that side open.
pub fn hour_bounds(filters: &[Expr]) -> (Option<Hour>, Option<Hour>) {
    let mut bounds = Vec::new();
    for f in filters {
        collect_bounds(f, &mut bounds);
    }
    let from = bounds
        .iter()
        .filter_map(|b| match b {
            Bound::From(t) => Some(*t),
            Bound::Until(_) => None,
        })
        .max();
    let until = bounds
        .iter()
        .filter_map(|b| match b {
            Bound::Until(t) => Some(*t),
            Bound::From(_) => None,
        })
        .min();
    (from.map(format_partition), until.map(format_partition))
}

fn collect_bounds(expr: &Expr, out: &mut Vec<Bound>) {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::And => {
                collect_bounds(left, out);
                collect_bounds(right, out);
            }
            Operator::Eq | Operator::Gt | Operator::GtEq | Operator::Lt | Operator::LtEq => {
                let (op, t) = if is_time_column(left) {
                    match literal_micros(right) {
                        Some(t) => (*op, t),
                        None => return,
                    }
                } else if is_time_column(right) {
                    match (literal_micros(left), op.swap()) {
                        (Some(t), Some(op)) => (op, t),
                        _ => return,
                    }
                } else {
                    return;
                };
                match op {
                    Operator::Eq => {
                        out.push(Bound::From(t));
                        out.push(Bound::Until(t));
                    }
                    // Strict bounds exclude `t` itself: `timestamp < 06:00` ends in hour 05.
                    Operator::Gt => out.push(Bound::From(t.saturating_add(1))),
                    Operator::GtEq => out.push(Bound::From(t)),
                    Operator::Lt => out.push(Bound::Until(t.saturating_sub(1))),
                    Operator::LtEq => out.push(Bound::Until(t)),
                    _ => {}
                }
            }
            _ => {}
        },
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if is_time_column(expr) => {
            if let Some(t) = literal_micros(low) {
                out.push(Bound::From(t));
            }
            if let Some(t) = literal_micros(high) {
                out.push(Bound::Until(t));
            }
        }
        _ => {}
    }
}

/// `timestamp`, possibly behind the casts type coercion adds (`CAST(timestamp AS
/// Timestamp(ns))` when compared with `now()`).
fn is_time_column(expr: &Expr) -> bool {
    match expr {
        Expr::Column(c) => c.name == TIME_COLUMN,
        Expr::Cast(c) => is_time_column(&c.expr),
        Expr::TryCast(c) => is_time_column(&c.expr),
        _ => false,
    }
}

/// A timestamp literal of any unit, as microseconds. Rounding toward the bound's outside
/// keeps the derived predicate implied: seconds and millis are exact, nanos floor, and a
/// partition is an hour wide, so a microsecond never moves a row across one.
fn literal_micros(expr: &Expr) -> Option<i64> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    match value {
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMicrosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(v.div_euclid(1_000)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_767_323_045_000_000; // 2026-01-02T03:04:05Z

    fn ts(v: i64) -> Expr {
        lit(ScalarValue::TimestampMicrosecond(
            Some(v),
            Some("UTC".into()),
        ))
    }

    fn shown(filters: &[Expr]) -> Vec<String> {
        partition_filters(filters)
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn a_lower_bound_keeps_its_hour_and_every_later_one() {
        let got = shown(&[col("timestamp").gt_eq(ts(T))]);
        assert_eq!(
            got,
            vec![
                "date >= Utf8(\"2026-01-02\")",
                "date > Utf8(\"2026-01-02\") OR hour >= Utf8(\"03\")"
            ]
        );
    }

    #[test]
    fn between_and_flipped_comparisons_bound_both_sides() {
        let hour = 3_600_000_000;
        let a = shown(&[Expr::Between(Between::new(
            Box::new(col("timestamp")),
            false,
            Box::new(ts(T)),
            Box::new(ts(T + hour)),
        ))]);
        let b = shown(&[ts(T)
            .lt_eq(col("timestamp"))
            .and(col("timestamp").lt(ts(T + hour)))]);
        assert_eq!(a, b);
        assert_eq!(a.len(), 4);
        assert!(a[3].contains("hour <= Utf8(\"04\")"), "{a:?}");
    }

    #[test]
    fn the_tightest_bound_wins_and_casts_and_nanos_are_understood() {
        let ns = lit(ScalarValue::TimestampNanosecond(
            Some((T + 7_200_000_000) * 1000),
            Some("+00:00".into()),
        ));
        let cast = Expr::Cast(datafusion::logical_expr::Cast::new(
            Box::new(col("timestamp")),
            arrow::datatypes::DataType::Timestamp(
                arrow::datatypes::TimeUnit::Nanosecond,
                Some("+00:00".into()),
            ),
        ));
        let got = shown(&[col("timestamp").gt(ts(T)), cast.gt_eq(ns)]);
        assert_eq!(got[0], "date >= Utf8(\"2026-01-02\")");
        assert!(got[1].ends_with("hour >= Utf8(\"05\")"), "{got:?}");
    }

    #[test]
    fn a_strict_bound_on_the_hour_leaves_the_next_hour_out() {
        let six = 1_767_333_600_000_000; // 2026-01-02T06:00:00Z
        let got = shown(&[col("timestamp").lt(ts(six))]);
        assert!(got[1].ends_with("hour <= Utf8(\"05\")"), "{got:?}");
        let got = shown(&[col("timestamp").lt_eq(ts(six))]);
        assert!(got[1].ends_with("hour <= Utf8(\"06\")"), "{got:?}");
        let got = shown(&[col("timestamp").gt(ts(six - 1))]);
        assert!(got[1].ends_with("hour >= Utf8(\"06\")"), "{got:?}");
    }

    #[test]
    fn filters_on_other_columns_or_negations_imply_nothing() {
        assert!(shown(&[col("level").eq(lit("ERROR"))]).is_empty());
        assert!(shown(&[col("timestamp").gt(ts(T)).or(col("level").eq(lit("x")))]).is_empty());
        assert!(shown(&[Expr::Between(Between::new(
            Box::new(col("timestamp")),
            true,
            Box::new(ts(T)),
            Box::new(ts(T + 1)),
        ))])
        .is_empty());
        assert!(shown(&[col("timestamp").not_eq(ts(T))]).is_empty());
    }

    /// Every row kept by the user's filter lies in a partition the derived filters keep.
    #[test]
    fn derived_filters_never_drop_a_matching_row() {
        let hour = 3_600_000_000i64;
        for offset in [-1, 0, 1, hour - 1, hour, 5 * hour + 17, 30 * 24 * hour] {
            let row = T + offset;
            let (d, h) = format_partition(row);
            for (lo, hi) in [
                (T, T + hour),
                (T - 1, row),
                (row, row),
                (T + hour, T + 2 * hour),
            ] {
                let user_keeps = row >= lo && row <= hi;
                let (ld, lh) = format_partition(lo);
                let (hd, hh) = format_partition(hi);
                let derived_keeps = (d.as_str(), h.as_str()) >= (ld.as_str(), lh.as_str())
                    && (d.as_str(), h.as_str()) <= (hd.as_str(), hh.as_str());
                assert!(!user_keeps || derived_keeps, "row {row} in [{lo}, {hi}]");
            }
        }
    }
}
