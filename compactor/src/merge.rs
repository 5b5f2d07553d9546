//! A k-way merge of record batch streams that are each sorted by one timestamp column.
//!
//! Ingest writes every file sorted by `timestamp`, so merging an hour's files is a merge, not
//! a sort: memory holds one batch per input (plus the output batch being built), however
//! large the hour. Ties keep input order (then row order), so a merge is deterministic.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{concat_batches, interleave_record_batch};
use arrow::datatypes::{SchemaRef, TimestampMicrosecondType};
use arrow::error::ArrowError;
use futures::{Stream, StreamExt as _};

struct Cursor<S> {
    stream: S,
    batch: Option<RecordBatch>,
    /// The merge column's index in `batch`.
    column: usize,
    row: usize,
    /// The current batch is used up: fetch the next before merging on (after the rows taken
    /// from it were emitted, since they point into it).
    refill: bool,
    done: bool,
}

/// Merges `inputs`, each sorted ascending by `column` (microsecond timestamps; nulls first),
/// into batches of at most `batch_rows` rows in the same order.
pub struct SortedMerge<S> {
    schema: SchemaRef,
    column: String,
    batch_rows: usize,
    cursors: Vec<Cursor<S>>,
    heap: BinaryHeap<Reverse<(i64, usize)>>,
    started: bool,
}

impl<S> std::fmt::Debug for SortedMerge<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SortedMerge")
            .field("inputs", &self.cursors.len())
            .field("column", &self.column)
            .finish_non_exhaustive()
    }
}

fn key(batch: &RecordBatch, column: usize, row: usize) -> i64 {
    let values = batch
        .column(column)
        .as_primitive::<TimestampMicrosecondType>();
    if values.is_null(row) {
        i64::MIN
    } else {
        values.value(row)
    }
}

impl<S, E> SortedMerge<S>
where
    S: Stream<Item = Result<RecordBatch, E>> + Unpin,
    E: Into<ArrowError>,
{
    pub fn new(schema: SchemaRef, column: &str, batch_rows: usize, inputs: Vec<S>) -> Self {
        Self {
            schema,
            column: column.to_string(),
            batch_rows: batch_rows.max(1),
            cursors: inputs
                .into_iter()
                .map(|stream| Cursor {
                    stream,
                    batch: None,
                    column: 0,
                    row: 0,
                    refill: true,
                    done: false,
                })
                .collect(),
            heap: BinaryHeap::new(),
            started: false,
        }
    }

    fn column_index(&self, batch: &RecordBatch) -> Result<usize, ArrowError> {
        let index = batch.schema().index_of(&self.column)?;
        if batch
            .column(index)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .is_none()
        {
            return Err(ArrowError::SchemaError(format!(
                "merge column {} is {}, not a microsecond timestamp",
                self.column,
                batch.column(index).data_type()
            )));
        }
        Ok(index)
    }

    /// Loads the next non-empty batch of every cursor that needs one.
    async fn refill(&mut self) -> Result<(), ArrowError> {
        for i in 0..self.cursors.len() {
            if !self.cursors[i].refill || self.cursors[i].done {
                continue;
            }
            let cursor = &mut self.cursors[i];
            cursor.refill = false;
            cursor.batch = None;
            loop {
                match cursor.stream.next().await {
                    Some(Ok(batch)) if batch.num_rows() == 0 => continue,
                    Some(Ok(batch)) => {
                        cursor.batch = Some(batch);
                        cursor.row = 0;
                        break;
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => {
                        cursor.done = true;
                        break;
                    }
                }
            }
            if let Some(batch) = &self.cursors[i].batch {
                let column = self.column_index(batch)?;
                self.heap.push(Reverse((key(batch, column, 0), i)));
                self.cursors[i].column = column;
            }
        }
        Ok(())
    }

    /// The next merged batch; `None` when every input is exhausted.
    ///
    /// Rows are taken in runs: once an input is the smallest, every following row of its batch
    /// that still sorts before the next input's head is taken with it (found by binary
    /// search). Inputs that follow each other in time thus pass through as slices of their
    /// batches, and only rows that really interleave are copied one by one.
    pub async fn next_batch(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        self.started = true;
        self.refill().await?;
        // (cursor, first row, end row) in output order.
        let mut runs: Vec<(usize, usize, usize)> = Vec::new();
        let mut taken = 0;
        while taken < self.batch_rows {
            let Some(Reverse((_, i))) = self.heap.pop() else {
                break;
            };
            let cursor = &mut self.cursors[i];
            let batch = cursor
                .batch
                .as_ref()
                .expect("a cursor in the heap has a batch");
            let limit = (cursor.row + (self.batch_rows - taken)).min(batch.num_rows());
            let end = match self.heap.peek() {
                None => limit,
                Some(&Reverse(next)) => {
                    // Ties go to the lower input index, as the heap orders them.
                    let (mut lo, mut hi) = (cursor.row + 1, limit);
                    while lo < hi {
                        let mid = lo + (hi - lo) / 2;
                        if (key(batch, cursor.column, mid), i) < next {
                            lo = mid + 1;
                        } else {
                            hi = mid;
                        }
                    }
                    lo
                }
            };
            runs.push((i, cursor.row, end));
            taken += end - cursor.row;
            cursor.row = end;
            if cursor.row < batch.num_rows() {
                self.heap
                    .push(Reverse((key(batch, cursor.column, cursor.row), i)));
            } else {
                // The rows taken from this batch must be emitted before it is replaced.
                cursor.refill = true;
                break;
            }
        }
        let batch_of = |i: usize| self.cursors[i].batch.as_ref().expect("taken from it");
        match runs.as_slice() {
            [] => Ok(None),
            [(i, start, end)] => Ok(Some(batch_of(*i).slice(*start, end - start))),
            // Long runs: copy them whole.
            _ if runs.len() * 8 <= taken => {
                let slices: Vec<RecordBatch> = runs
                    .iter()
                    .map(|&(i, start, end)| batch_of(i).slice(start, end - start))
                    .collect();
                Ok(Some(concat_batches(&self.schema, &slices)?))
            }
            _ => {
                // interleave wants the sources as a slice; map each cursor to its position.
                let mut sources: Vec<&RecordBatch> = Vec::new();
                let mut position = vec![usize::MAX; self.cursors.len()];
                for &(i, _, _) in &runs {
                    if position[i] == usize::MAX {
                        position[i] = sources.len();
                        sources.push(batch_of(i));
                    }
                }
                let indices: Vec<(usize, usize)> = runs
                    .iter()
                    .flat_map(|&(i, start, end)| {
                        let source = position[i];
                        (start..end).map(move |r| (source, r))
                    })
                    .collect();
                Ok(Some(interleave_record_batch(&sources, &indices)?))
            }
        }
    }

    /// The schema of the merged batches.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use futures::stream;
    use proptest::prelude::*;

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
            Field::new("id", DataType::Int64, false),
        ]))
    }

    fn batch(rows: &[(i64, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(TimestampMicrosecondArray::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap()
    }

    type Input = stream::Iter<std::vec::IntoIter<Result<RecordBatch, ArrowError>>>;

    fn input(batches: Vec<Vec<(i64, i64)>>) -> Input {
        stream::iter(
            batches
                .into_iter()
                .map(|b| Ok(batch(&b)))
                .collect::<Vec<_>>(),
        )
    }

    async fn collect(mut merge: SortedMerge<Input>) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        while let Some(b) = merge.next_batch().await.unwrap() {
            let ts = b.column(0).as_primitive::<TimestampMicrosecondType>();
            let id = b.column(1).as_primitive::<arrow::datatypes::Int64Type>();
            out.extend((0..b.num_rows()).map(|r| (ts.value(r), id.value(r))));
        }
        out
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    #[test]
    fn merges_in_order_with_ties_in_input_order() {
        let a = input(vec![vec![(1, 10), (3, 11)], vec![], vec![(5, 12)]]);
        let b = input(vec![vec![(1, 20), (2, 21)], vec![(6, 22)]]);
        let c = input(vec![]);
        let out = block_on(collect(SortedMerge::new(
            schema(),
            "timestamp",
            2,
            vec![a, b, c],
        )));
        assert_eq!(
            out,
            vec![(1, 10), (1, 20), (2, 21), (3, 11), (5, 12), (6, 22)]
        );
    }

    #[test]
    fn output_batches_respect_the_row_limit() {
        let a = input(vec![(0..100).map(|i| (i, i)).collect()]);
        let mut merge = SortedMerge::new(schema(), "timestamp", 7, vec![a]);
        let sizes: Vec<usize> = block_on(async {
            let mut sizes = Vec::new();
            while let Some(b) = merge.next_batch().await.unwrap() {
                sizes.push(b.num_rows());
            }
            sizes
        });
        assert!(sizes.iter().all(|n| *n <= 7));
        assert_eq!(sizes.iter().sum::<usize>(), 100);
    }

    proptest! {
        #[test]
        fn a_merge_is_a_stable_sort_of_the_union(
            inputs in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(0i64..50, 0..20), 0..5), 1..8),
            batch_rows in 1usize..40,
            // Inputs shifted apart by this much: from fully interleaved (0) to disjoint
            // ranges, taken as whole runs (inputs given in reverse time order).
            spread in 0i64..80,
        ) {
            // Each input sorted as ingest writes it; ids say (input, position).
            let mut expected = Vec::new();
            let mut streams = Vec::new();
            let mut id = 0;
            for (n, batches) in inputs.iter().enumerate() {
                let shift = (inputs.len() - n) as i64 * spread;
                let mut all: Vec<i64> = batches.iter().flatten().map(|t| t + shift).collect();
                all.sort();
                let mut it = all.into_iter();
                let mut bs = Vec::new();
                for b in batches {
                    let rows: Vec<(i64, i64)> = it.by_ref().take(b.len()).map(|t| { id += 1; (t, id) }).collect();
                    expected.extend(rows.iter().map(|r| (r.0, n, r.1)));
                    bs.push(rows);
                }
                streams.push(input(bs));
            }
            expected.sort();
            let want: Vec<(i64, i64)> = expected.into_iter().map(|(t, _, id)| (t, id)).collect();
            let got = block_on(collect(SortedMerge::new(schema(), "timestamp", batch_rows, streams)));
            prop_assert_eq!(got, want);
        }
    }
}
