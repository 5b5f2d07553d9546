//! What a pass planned and did, per table and in total: the plan `--dry-run` prints and the
//! summary line every pass ends with.

use std::fmt;
use std::time::Duration;

use bytesize::ByteSize;

use crate::planner::Merge;
use crate::table::MergeDone;

/// One table's pass.
#[derive(Debug, Default, Clone)]
pub struct TableReport {
    pub table: String,
    pub files_before: usize,
    pub files_after: usize,
    /// Planned: merges, files and bytes in, files out expected.
    pub planned_merges: usize,
    pub planned_files_in: usize,
    pub planned_bytes_in: u64,
    pub planned_files_out: usize,
    /// Done.
    pub merged: usize,
    /// Of those, merges done by copying row groups (no decoding).
    pub copied: usize,
    pub files_in: usize,
    pub bytes_in: u64,
    pub files_out: usize,
    pub bytes_out: u64,
    pub rows: u64,
    /// Merges skipped because a concurrent commit conflicted.
    pub skipped: usize,
    /// Another compactor committed first: the rest of the table was left to it.
    pub fenced: bool,
    pub expired_files: usize,
    pub expired_bytes: u64,
    pub checkpointed: bool,
    pub logs_removed: usize,
    pub vacuumed_files: usize,
    /// Files vacuum would delete (dry run).
    pub vacuum_candidates: usize,
    /// The plan `--dry-run` prints, one line per merge and a total line.
    pub plan: String,
    pub duration: Duration,
}

impl TableReport {
    pub fn new(table: &str) -> Self {
        Self {
            table: table.to_string(),
            ..Default::default()
        }
    }

    pub fn planned(&mut self, merges: &[Merge], target: u64) {
        self.planned_merges = merges.len();
        self.planned_files_in = merges.iter().map(|m| m.inputs.len()).sum();
        self.planned_bytes_in = merges.iter().map(|m| m.bytes).sum();
        self.planned_files_out = merges
            .iter()
            .map(|m| m.bytes.div_ceil(target.max(1)).max(1) as usize)
            .sum();
    }

    pub fn merged(&mut self, merge: &Merge, done: &MergeDone) {
        self.merged += 1;
        self.copied += usize::from(done.copied);
        self.files_in += merge.inputs.len();
        self.bytes_in += merge.bytes;
        self.files_out += done.files_out;
        self.bytes_out += done.bytes_out;
        self.rows += done.rows;
    }

    /// The plan, one line per merge and a total line (`--dry-run`).
    pub fn plan_text(&self, merges: &[Merge], target: u64) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for m in merges {
            let _ = writeln!(
                out,
                "{}\thost={}/date={}/hour={}\tmerge {} files, {} -> ~{} file(s)",
                self.table,
                m.host,
                m.date,
                m.hour,
                m.inputs.len(),
                ByteSize(m.bytes),
                m.bytes.div_ceil(target.max(1)).max(1)
            );
        }
        let _ = writeln!(
            out,
            "{}\tplan: {} merges, {} files ({}) in, ~{} out; retention removes {} files ({}); vacuum would delete {} files",
            self.table,
            self.planned_merges,
            self.planned_files_in,
            ByteSize(self.planned_bytes_in),
            self.planned_files_out,
            self.expired_files,
            ByteSize(self.expired_bytes),
            self.vacuum_candidates
        );
        out
    }
}

/// A whole pass.
#[derive(Debug, Default, Clone)]
pub struct PassReport {
    pub tables: Vec<TableReport>,
    pub failed: Vec<(String, String)>,
    pub duration: Duration,
}

impl PassReport {
    fn sum(&self, f: impl Fn(&TableReport) -> u64) -> u64 {
        self.tables.iter().map(f).sum()
    }

    /// Small files left behind (in open hours, or below `min_files`): the debt the next
    /// passes pay.
    pub fn small_file_debt(&self) -> u64 {
        self.sum(|t| t.files_after as u64)
    }
}

impl fmt::Display for PassReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} tables ({} failed): {} partitions merged ({} by copying row groups), files {} -> {}, bytes {} -> {}, {} rows; \
             retention removed {} files; vacuum deleted {} files; {} log entries cleaned; \
             {} files live; {:.1}s",
            self.tables.len(),
            self.failed.len(),
            self.sum(|t| t.merged as u64),
            self.sum(|t| t.copied as u64),
            self.sum(|t| t.files_in as u64),
            self.sum(|t| t.files_out as u64),
            ByteSize(self.sum(|t| t.bytes_in)),
            ByteSize(self.sum(|t| t.bytes_out)),
            self.sum(|t| t.rows),
            self.sum(|t| t.expired_files as u64),
            self.sum(|t| t.vacuumed_files as u64),
            self.sum(|t| t.logs_removed as u64),
            self.small_file_debt(),
            self.duration.as_secs_f64()
        )
    }
}
