//! Finding files and deciding where each is read from: the glob scan, renames, files that
//! left their path, truncation and rewrites in place, inode reuse, and the `max_open_files`
//! slots.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::time::Instant;

use crate::config::ReadFrom;
use crate::line::LineReader;
use crate::metrics::FileLabel;
use crate::multiline::Multiline;
use crate::positions::{FileKey, Fingerprint, FINGERPRINT_BYTES};
use crate::record::Fields;
use crate::ship::Ack;

use super::{Flight, Tailer, Tracked};

impl Tailer {
    /// Expands the globs and reconciles what they find with what is tracked.
    pub(super) fn scan(&mut self, now: Instant) {
        let mut seen: HashMap<FileKey, (PathBuf, usize, std::fs::Metadata)> = HashMap::new();
        for (i, input) in self.inputs.iter().enumerate() {
            for pattern in &input.config.paths {
                let Ok(paths) = glob::glob(pattern) else {
                    continue;
                };
                for path in paths.flatten() {
                    if input.exclude.iter().any(|p| p.matches_path(&path)) {
                        continue;
                    }
                    let Ok(meta) = std::fs::metadata(&path) else {
                        continue;
                    };
                    if !meta.is_file() {
                        continue;
                    }
                    seen.entry(FileKey::of(&meta)).or_insert((path, i, meta));
                }
            }
        }
        for t in self.files.values_mut() {
            if seen.contains_key(&t.key) {
                continue;
            }
            if !t.gone {
                t.gone = true;
                t.at_eof = false;
                // rotate_wait counts from the rotation: its writer may not have moved on yet.
                t.last_growth = now;
                self.metrics.rotations.inc();
                tracing::info!(file = %t.path.display(), "file left its path: reading it to its end");
            } else if let Some(file) = &t.file {
                // No path leads to it any more: its writer may still be appending (until it
                // reopens its log), which only the handle shows.
                if file.metadata().is_ok_and(|m| m.len() > t.read_pos) {
                    t.at_eof = false;
                }
            }
        }
        for (key, (path, input, meta)) in seen {
            match self.by_key.get(&key) {
                Some(&id) => self.refresh(id, path, &meta, now),
                None => self.admit(key, path, input, &meta, now),
            }
        }
        self.open_waiting(now);
        let mut waiting = 0;
        for t in self.files.values() {
            if t.wants_a_slot() {
                waiting += 1;
            }
            let label = FileLabel {
                file: t.path.display().to_string(),
            };
            self.metrics
                .lag
                .get_or_create(&label)
                .set(t.size.saturating_sub(t.acked) as i64);
        }
        self.metrics.files_waiting.set(waiting);
    }

    /// A tracked file seen again at `path`.
    pub(super) fn refresh(
        &mut self,
        id: u32,
        path: PathBuf,
        meta: &std::fs::Metadata,
        now: Instant,
    ) {
        let host = self.host.clone();
        let t = self.files.get_mut(&id).expect("tracked");
        if t.path != path {
            tracing::info!(from = %t.path.display(), to = %path.display(), "file renamed");
            self.metrics.lag.remove(&FileLabel {
                file: t.path.display().to_string(),
            });
            t.fields = Fields::new(&host, &path.to_string_lossy(), &self.inputs[t.input].labels);
            t.path = path;
        }
        if t.gone {
            t.gone = false;
        }
        let size = meta.len();
        let changed = size != t.size;
        t.size = size;
        let Some(file) = &t.file else {
            return;
        };
        let rewritten = if size < t.read_pos {
            true
        } else if changed || t.fingerprint.len < FINGERPRINT_BYTES as u32 {
            match t.fingerprint.check(file) {
                Ok(Some(fp)) => {
                    t.fingerprint = fp;
                    false
                }
                Ok(None) => true,
                Err(_) => false,
            }
        } else {
            false
        };
        if changed {
            t.at_eof = false;
        }
        if rewritten {
            self.metrics.truncations.inc();
            tracing::warn!(file = %t.path.display(), read = t.read_pos, size,
                "file truncated or rewritten in place (copytruncate): reading it again from its start");
            let fingerprint =
                Fingerprint::read(file, FINGERPRINT_BYTES).unwrap_or(Fingerprint::EMPTY);
            t.rewind(0, &mut self.in_flight);
            t.fingerprint = fingerprint;
            t.last_growth = now;
        }
    }

    /// A file seen for the first time (since this start).
    pub(super) fn admit(
        &mut self,
        key: FileKey,
        path: PathBuf,
        input: usize,
        meta: &std::fs::Metadata,
        now: Instant,
    ) {
        let id = self.next_free_id();
        let start_at_end = self.first_start && self.inputs[input].config.read_from == ReadFrom::End;
        let max_line = self.inputs[input].max_line;
        let multiline = self.inputs[input].rule.clone().map(|rule| {
            Multiline::new(
                rule,
                self.inputs[input].config.multiline_max_lines,
                max_line,
                self.inputs[input].config.multiline_timeout,
            )
        });
        let t = Tracked {
            id,
            saved: self.known.remove(&key),
            key,
            input,
            fields: Fields::new(
                &self.host,
                &path.to_string_lossy(),
                &self.inputs[input].labels,
            ),
            path,
            file: None,
            fingerprint: Fingerprint::EMPTY,
            read_pos: 0,
            acked: 0,
            size: meta.len(),
            reader: LineReader::new(max_line),
            multiline,
            flight: Flight::default(),
            at_eof: false,
            last_growth: now,
            gone: false,
            retry_at: None,
            failures: 0,
            start: start_at_end.then_some(meta.len()),
        };
        self.by_key.insert(key, id);
        self.files.insert(id, t);
    }

    /// A file id no tracked file holds (ids wrap at 2^24, the room an `Ack` has).
    pub(super) fn next_free_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = (self.next_id + 1) % Ack::FILE_IDS;
            if !self.files.contains_key(&id) {
                return id;
            }
        }
    }

    /// Positions saved for files not found at start: gone while the agent was down.
    pub(super) fn forget_vanished(&mut self) {
        for (_, p) in self.known.drain() {
            tracing::warn!(file = %p.path.display(), offset = p.offset,
                "a file of the positions file is gone (deleted or renamed out of the globs while the agent was down): what it held past the offset was not read");
        }
    }

    pub(super) fn open_count(&self) -> usize {
        self.files.values().filter(|t| t.file.is_some()).count()
    }

    /// Opens waiting files while there are free slots, closing idle files to make room for
    /// waiting ones that have something to read.
    pub(super) fn open_waiting(&mut self, now: Instant) {
        let mut open = self.open_count();
        let wanting: Vec<u32> = self
            .files
            .iter()
            .filter(|(_, t)| t.wants_a_slot())
            .map(|(id, _)| *id)
            .collect();
        let mut idle: Vec<u32> =
            if wanting.len() > self.config.max_open_files - open.min(self.config.max_open_files) {
                let mut idle: Vec<(Instant, u32)> = self
                    .files
                    .iter()
                    .filter(|(_, t)| {
                        t.file.is_some()
                            && !t.gone
                            && t.idle()
                            && now.duration_since(t.last_growth) >= self.config.poll_interval
                    })
                    .map(|(id, t)| (t.last_growth, *id))
                    .collect();
                idle.sort();
                idle.into_iter().map(|(_, id)| id).rev().collect()
            } else {
                Vec::new()
            };
        for id in wanting {
            if open >= self.config.max_open_files {
                let Some(victim) = idle.pop() else {
                    break;
                };
                if let Some(v) = self.files.get_mut(&victim) {
                    v.file = None;
                    v.start = Some(v.acked);
                    open -= 1;
                }
            }
            if self.open(id, now) {
                open += 1;
            }
        }
        self.metrics.open_files.set(open as i64);
    }

    /// Opens a tracked file and decides where it is read from. False if it could not be
    /// opened (it is tried again on the next scan).
    pub(super) fn open(&mut self, id: u32, now: Instant) -> bool {
        let t = self.files.get_mut(&id).expect("tracked");
        let file = match File::open(&t.path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(file = %t.path.display(), error = %e, "could not open");
                return false;
            }
        };
        let Ok(meta) = file.metadata() else {
            return false;
        };
        if FileKey::of(&meta) != t.key {
            // The path leads to another file since the scan: the next scan sorts it out.
            return false;
        }
        let size = meta.len();
        let (start, fingerprint) = match (t.saved.take(), t.start) {
            (Some(saved), _) => match saved.fingerprint.check(&file) {
                Ok(Some(fp)) if saved.offset <= size => (saved.offset, fp),
                Ok(Some(_)) => {
                    tracing::warn!(file = %t.path.display(), saved = saved.offset, size,
                        "file shorter than its saved position (truncated while the agent was down): reading it from its start");
                    (
                        0,
                        Fingerprint::read(&file, FINGERPRINT_BYTES).unwrap_or(Fingerprint::EMPTY),
                    )
                }
                _ => {
                    tracing::info!(file = %t.path.display(),
                        "saved position belongs to an older file with the same inode: reading this one from its start");
                    (
                        0,
                        Fingerprint::read(&file, FINGERPRINT_BYTES).unwrap_or(Fingerprint::EMPTY),
                    )
                }
            },
            (None, Some(at)) if t.fingerprint != Fingerprint::EMPTY || at > 0 => {
                // Reopened after waiting for a slot, or a first start at the end.
                match t.fingerprint.check(&file) {
                    Ok(Some(fp)) if at <= size => (at, fp),
                    _ if t.fingerprint == Fingerprint::EMPTY && at <= size => (
                        at,
                        Fingerprint::read(&file, FINGERPRINT_BYTES).unwrap_or(Fingerprint::EMPTY),
                    ),
                    _ => (
                        0,
                        Fingerprint::read(&file, FINGERPRINT_BYTES).unwrap_or(Fingerprint::EMPTY),
                    ),
                }
            }
            _ => (
                0,
                Fingerprint::read(&file, FINGERPRINT_BYTES).unwrap_or(Fingerprint::EMPTY),
            ),
        };
        t.fingerprint = fingerprint;
        t.read_pos = start;
        t.acked = start;
        t.size = size;
        t.start = Some(start);
        t.file = Some(file);
        t.at_eof = false;
        t.last_growth = now;
        true
    }
}
