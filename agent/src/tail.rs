//! The tailing loop: one thread that finds files, reads them, turns lines into records, hands
//! them to the producer, and moves each file's checkpoint as the broker acknowledges.
//!
//! Per file, records are numbered in file order; the broker's acknowledgements move the
//! file's *acknowledged offset* to the end of the longest acknowledged prefix, and only that
//! offset is written to the positions file. Reading stops while `max_in_flight` bytes wait
//! for acknowledgement, so a broker outage costs bounded memory: the files are the buffer.
//!
//! A file's life: found by a glob (or waiting for a slot under `max_open_files`), opened,
//! read as it grows; when its path stops leading to it (renamed, deleted) it is read to its
//! end and let go `rotate_wait` after it stopped growing; when it shrinks below the read
//! position or its first bytes change (copytruncate), it is read again from the start.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer as _};

use crate::config::{AgentConfig, InputConfig, ReadFrom};
use crate::line::{Line, LineReader};
use crate::metrics::{FileLabel, InputCounters, Metrics};
use crate::multiline::{Multiline, Rule};
use crate::positions::{FileKey, Fingerprint, Position, Store, FINGERPRINT_BYTES};
use crate::record::{encode, timestamp_now, Fields};
use crate::ship::{Ack, Event, Producer};

/// Bytes read from one file per turn: files take turns, so one busy file cannot starve the
/// others.
const CHUNK: usize = 256 * 1024;
/// The longest the loop sleeps when nothing happens (timeouts are checked this often).
const TICK: Duration = Duration::from_millis(100);
/// Records waiting this long with no acknowledgement make /healthz fail.
const UNACKED_UNHEALTHY: Duration = Duration::from_secs(120);

/// One `[[agent.inputs]]`, compiled.
struct Input {
    config: InputConfig,
    exclude: Vec<glob::Pattern>,
    rule: Option<Rule>,
    labels: Vec<(String, serde_json::Value)>,
    counters: InputCounters,
    /// The line limit: `max_line_bytes`, lowered if the broker refuses records that large.
    max_line: usize,
}

/// Records handed over for one file and not yet acknowledged, in file order.
#[derive(Default)]
struct Flight {
    /// Bumped when the file is read again from an earlier offset: acknowledgements of older
    /// records no longer move its offset.
    generation: u8,
    next_seq: u64,
    /// (seq, the offset just past the record, its bytes), oldest first.
    pending: VecDeque<(u64, u64, u32)>,
    /// Acknowledged out of order (after a retry).
    done: BTreeSet<u64>,
    /// Encoded records the producer's queue had no room for: sent before anything newer.
    outbox: VecDeque<(u64, Vec<u8>)>,
}

struct Tracked {
    id: u32,
    key: FileKey,
    input: usize,
    path: PathBuf,
    /// `None` while waiting for a slot under `max_open_files`.
    file: Option<File>,
    fields: Fields,
    fingerprint: Fingerprint,
    read_pos: u64,
    acked: u64,
    size: u64,
    reader: LineReader,
    multiline: Option<Multiline>,
    flight: Flight,
    at_eof: bool,
    last_growth: Instant,
    /// Its path no longer leads to it: read to the end, then let go.
    gone: bool,
    /// Read again from `acked` at this instant (a delivery failed).
    retry_at: Option<Instant>,
    failures: u32,
    /// Where to start once opened (not yet decided for a waiting file).
    start: Option<u64>,
    /// Its entry in the positions file at start, until it is opened.
    saved: Option<Position>,
}

impl Tracked {
    fn idle(&self) -> bool {
        self.at_eof
            && !self.reader.pending()
            && !self.multiline.as_ref().is_some_and(Multiline::pending)
            && self.flight.pending.is_empty()
    }

    /// Not open, and something to read: new, or grown since it was closed.
    fn wants_a_slot(&self) -> bool {
        self.file.is_none() && (self.start.is_none() || self.size > self.read_pos)
    }

    /// Forgets everything after the acknowledged offset: it is read again from there.
    fn rewind(&mut self, to: u64, in_flight: &mut InFlight) {
        self.flight.generation = self.flight.generation.wrapping_add(1);
        // Written off now: acknowledgements of an older generation are ignored.
        for (_, _, bytes) in self.flight.pending.drain(..) {
            in_flight.remove(u64::from(bytes));
        }
        self.flight.outbox.clear();
        self.flight.done.clear();
        self.reader.reset();
        if let Some(m) = &mut self.multiline {
            m.reset();
        }
        self.read_pos = to;
        self.acked = to;
        self.at_eof = false;
    }

    fn position(&self) -> Option<Position> {
        if self.start.is_none() {
            return self.saved.clone();
        }
        Some(Position {
            path: self.path.clone(),
            key: self.key,
            fingerprint: self.fingerprint,
            offset: self.acked,
        })
    }
}

/// Bytes and records handed to the producer (or its outbox) and not yet acknowledged.
#[derive(Debug, Default)]
struct InFlight {
    records: u64,
    bytes: u64,
}

impl InFlight {
    fn add(&mut self, bytes: u64) {
        self.records += 1;
        self.bytes += bytes;
    }

    fn remove(&mut self, bytes: u64) {
        self.records = self.records.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

pub struct Tailer {
    config: AgentConfig,
    host: String,
    inputs: Vec<Input>,
    files: BTreeMap<u32, Tracked>,
    by_key: HashMap<FileKey, u32>,
    next_id: u32,
    /// Positions loaded at start and not yet matched to a file found.
    known: HashMap<FileKey, Position>,
    first_start: bool,
    store: Store,
    producer: Producer,
    events: Receiver<Event>,
    woken: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    in_flight: InFlight,
    read_buf: Vec<u8>,
    encode_buf: Vec<u8>,
    /// Since when acknowledged positions wait to be written.
    dirty_since: Option<Instant>,
    last_ack: Instant,
}

/// What the loop needs from its caller.
pub struct Parts {
    pub config: AgentConfig,
    pub host: String,
    pub store: Store,
    pub saved: Option<Vec<Position>>,
    pub producer: Producer,
    pub events: Receiver<Event>,
    pub woken: Arc<AtomicBool>,
    pub stop: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
}

impl Tailer {
    pub fn new(parts: Parts) -> Result<Self, crate::AgentError> {
        let Parts {
            config,
            host,
            store,
            saved,
            producer,
            events,
            woken,
            stop,
            metrics,
        } = parts;
        let max_line = config.max_line_bytes.as_u64().min(u32::MAX as u64) as usize;
        let inputs = config
            .inputs
            .iter()
            .map(|c| {
                let regex = |re: &Option<String>| {
                    re.as_deref()
                        .map(|r| regex::bytes::Regex::new(r).expect("validated"))
                };
                let rule = regex(&c.multiline_start)
                    .map(Rule::Start)
                    .or_else(|| regex(&c.multiline_continue).map(Rule::Continue));
                Input {
                    exclude: c
                        .exclude
                        .iter()
                        .map(|p| glob::Pattern::new(p).expect("validated"))
                        .collect(),
                    rule,
                    labels: c
                        .labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    counters: metrics.input(c.name()),
                    max_line,
                    config: c.clone(),
                }
            })
            .collect();
        let first_start = saved.is_none();
        let known = saved
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.key, p))
            .collect();
        Ok(Self {
            config,
            host,
            inputs,
            files: BTreeMap::new(),
            by_key: HashMap::new(),
            next_id: 0,
            known,
            first_start,
            store,
            producer,
            events,
            woken,
            stop,
            metrics,
            in_flight: InFlight::default(),
            read_buf: vec![0; CHUNK],
            encode_buf: Vec::with_capacity(4096),
            dirty_since: None,
            last_ack: Instant::now(),
        })
    }

    /// Runs until the stop flag is raised, then waits for deliveries (bounded by
    /// `shutdown_grace`) and writes the positions a last time.
    pub fn run(mut self) {
        let now = Instant::now();
        self.scan(now);
        self.forget_vanished();
        let mut next_scan = now + self.config.poll_interval;
        let mut next_save = now + self.config.checkpoint_interval;
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            self.drain_events(now);
            if now >= next_scan {
                self.scan(now);
                next_scan = now + self.config.poll_interval;
            }
            let progressed = self.read_round(now);
            self.expire(now);
            if now >= next_save {
                self.save(now);
                next_save = now + self.config.checkpoint_interval;
            }
            if !progressed {
                let wait = next_scan.saturating_duration_since(now).min(TICK);
                match self.events.recv_timeout(wait) {
                    Ok(event) => self.handle(event, Instant::now()),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        self.finish();
    }

    fn finish(&mut self) {
        tracing::info!(
            in_flight = self.in_flight.records,
            "stopping: waiting for the broker to acknowledge what was sent"
        );
        if let Err(e) = self.producer.flush(self.config.shutdown_grace) {
            tracing::warn!(error = %e, in_flight = self.in_flight.records,
                "not everything was acknowledged in agent.shutdown_grace: those lines are sent again on the next start");
        }
        self.drain_events(Instant::now());
        self.save(Instant::now());
    }

    fn drain_events(&mut self, now: Instant) {
        while let Ok(event) = self.events.try_recv() {
            self.handle(event, now);
        }
    }

    fn handle(&mut self, event: Event, now: Instant) {
        match event {
            Event::Wake => {
                self.woken.store(false, Ordering::Relaxed);
                for t in self.files.values_mut() {
                    if t.file.is_some() {
                        t.at_eof = false;
                    }
                }
            }
            Event::Stop => {}
            Event::Delivered(ack, result) => self.acknowledged(ack, result, now),
        }
    }

    fn acknowledged(&mut self, ack: Ack, result: Result<(), KafkaError>, now: Instant) {
        let Some(t) = self.files.get_mut(&ack.file) else {
            return;
        };
        if ack.generation != t.flight.generation {
            return;
        }
        let Some(&(front, _, _)) = t.flight.pending.front() else {
            return;
        };
        // The full sequence number from its low 32 bits: pending records are consecutive.
        let seq = front + u64::from(ack.seq.wrapping_sub(front as u32));
        let input = &mut self.inputs[t.input];
        match result {
            Ok(()) => {
                self.last_ack = now;
                input.counters.sent.inc();
                t.failures = 0;
                let f = &mut t.flight;
                if seq != front {
                    f.done.insert(seq);
                    return;
                }
                let (_, end, bytes) = f.pending.pop_front().expect("front");
                self.in_flight.remove(u64::from(bytes));
                t.acked = end;
                while let Some(&(s, end, bytes)) = f.pending.front() {
                    if !f.done.remove(&s) {
                        break;
                    }
                    f.pending.pop_front();
                    self.in_flight.remove(u64::from(bytes));
                    t.acked = end;
                }
                if f.pending.is_empty() && f.pending.capacity() > 64 {
                    // A burst's bookkeeping is not kept for the file's idle life: with
                    // thousands of files it would add up.
                    f.pending = VecDeque::new();
                }
                self.dirty_since.get_or_insert(now);
            }
            Err(e) => {
                self.metrics.send_errors.inc();
                if matches!(
                    e.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::MessageSizeTooLarge)
                ) && input.max_line > 1024
                {
                    let bytes = t
                        .flight
                        .pending
                        .iter()
                        .find(|p| p.0 == seq)
                        .map_or(input.max_line, |p| p.2 as usize);
                    input.max_line = (bytes / 2).clamp(1024, input.max_line);
                    tracing::warn!(topic = %input.config.topic, max_line = input.max_line,
                        "the broker refused a record as too large: lines of this input are now cut at {} bytes (set agent.max_line_bytes below the topic's max.message.bytes)", input.max_line);
                }
                if t.retry_at.is_none() {
                    t.failures += 1;
                    let backoff = Duration::from_millis(500 << t.failures.min(6));
                    tracing::error!(file = %t.path.display(), topic = %input.config.topic, error = %e,
                        retry_in = ?backoff, "a record was not delivered: the file is read again from its last acknowledged line");
                    t.retry_at = Some(now + backoff);
                }
            }
        }
    }

    /// Expands the globs and reconciles what they find with what is tracked.
    fn scan(&mut self, now: Instant) {
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
    fn refresh(&mut self, id: u32, path: PathBuf, meta: &std::fs::Metadata, now: Instant) {
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
    fn admit(
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
    fn next_free_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = (self.next_id + 1) % Ack::FILE_IDS;
            if !self.files.contains_key(&id) {
                return id;
            }
        }
    }

    /// Positions saved for files not found at start: gone while the agent was down.
    fn forget_vanished(&mut self) {
        for (_, p) in self.known.drain() {
            tracing::warn!(file = %p.path.display(), offset = p.offset,
                "a file of the positions file is gone (deleted or renamed out of the globs while the agent was down): what it held past the offset was not read");
        }
    }

    fn open_count(&self) -> usize {
        self.files.values().filter(|t| t.file.is_some()).count()
    }

    /// Opens waiting files while there are free slots, closing idle files to make room for
    /// waiting ones that have something to read.
    fn open_waiting(&mut self, now: Instant) {
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
    fn open(&mut self, id: u32, now: Instant) -> bool {
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

    /// One turn of reading: each open file that may have more gets one chunk. True if any
    /// bytes were read or sent.
    fn read_round(&mut self, now: Instant) -> bool {
        let max_in_flight = self.config.max_in_flight.as_u64();
        let mut progressed = false;
        let mut timestamp: Option<(i64, String)> = None;
        let ids: Vec<u32> = self.files.keys().copied().collect();
        for id in ids {
            let t = self.files.get_mut(&id).expect("tracked");
            if let Some(at) = t.retry_at {
                if now < at {
                    continue;
                }
                t.retry_at = None;
                let acked = t.acked;
                t.rewind(acked, &mut self.in_flight);
                let max_line = self.inputs[t.input].max_line;
                t.reader.set_max(max_line);
                if let Some(m) = &mut t.multiline {
                    m.set_max_bytes(max_line);
                }
            }
            let input = &self.inputs[t.input];
            if !t.flight.outbox.is_empty() {
                progressed |= send_outbox(t, input, &self.producer, &self.host);
                if !t.flight.outbox.is_empty() {
                    continue;
                }
            }
            if t.at_eof || self.in_flight.bytes >= max_in_flight {
                continue;
            }
            let Some(file) = &t.file else {
                continue;
            };
            let n = match file.read_at(&mut self.read_buf, t.read_pos) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(file = %t.path.display(), error = %e, "read failed");
                    t.at_eof = true;
                    continue;
                }
            };
            if n == 0 {
                t.at_eof = true;
                continue;
            }
            progressed = true;
            t.last_growth = now;
            t.size = t.size.max(t.read_pos + n as u64);
            let ts = timestamp.get_or_insert_with(timestamp_now);
            let at = t.read_pos;
            t.read_pos += n as u64;
            input.counters.bytes.inc_by(n as u64);
            let Tracked {
                reader,
                multiline,
                fields,
                flight,
                file: _,
                ..
            } = &mut *t;
            let mut sink = Sink {
                producer: &self.producer,
                out: &mut self.encode_buf,
                input,
                host: &self.host,
                fields,
                timestamp: ts,
                flight,
                file: id,
                in_flight: &mut self.in_flight,
            };
            let mut lines = 0u64;
            reader.feed(&self.read_buf[..n], at, |line| {
                lines += 1;
                match multiline {
                    Some(m) => m.push(line, now, |record| sink.emit(record)),
                    None => sink.emit(line),
                }
            });
            input.counters.lines.inc_by(lines);
        }
        self.metrics
            .in_flight_records
            .set(self.in_flight.records as i64);
        self.metrics
            .in_flight_bytes
            .set(self.in_flight.bytes as i64);
        progressed
    }

    /// Timeouts: partial last lines, multi-line records, files that left their path.
    fn expire(&mut self, now: Instant) {
        let mut timestamp: Option<(i64, String)> = None;
        let mut finished = Vec::new();
        for (&id, t) in self.files.iter_mut() {
            let input = &self.inputs[t.input];
            let quiet = now.duration_since(t.last_growth);
            let letting_go = t.gone && t.at_eof && quiet >= self.config.rotate_wait;
            let flush_partial = t.at_eof
                && t.reader.pending()
                && (letting_go || quiet >= self.config.partial_line_timeout);
            let ml_due = t.multiline.as_ref().is_some_and(Multiline::pending);
            if !flush_partial && !ml_due && !letting_go {
                continue;
            }
            let ts = timestamp.get_or_insert_with(timestamp_now);
            let Tracked {
                reader,
                multiline,
                fields,
                flight,
                read_pos,
                ..
            } = &mut *t;
            let mut sink = Sink {
                producer: &self.producer,
                out: &mut self.encode_buf,
                input,
                host: &self.host,
                fields,
                timestamp: ts,
                flight,
                file: id,
                in_flight: &mut self.in_flight,
            };
            if flush_partial {
                reader.flush(*read_pos, |line| {
                    input.counters.lines.inc();
                    match multiline.as_mut() {
                        Some(m) => m.push(line, now, |record| sink.emit(record)),
                        None => sink.emit(line),
                    }
                });
            }
            if let Some(m) = multiline {
                m.expire(now, letting_go, |record| sink.emit(record));
            }
            if letting_go && t.idle() && t.flight.outbox.is_empty() {
                finished.push(id);
            }
        }
        for (&id, t) in self.files.iter() {
            if t.gone && t.file.is_none() {
                tracing::warn!(file = %t.path.display(),
                    "a file waiting for a slot under agent.max_open_files left its path before it was opened: what it held past its position was not read");
                finished.push(id);
            }
        }
        for id in finished {
            let t = self.files.remove(&id).expect("tracked");
            self.by_key.remove(&t.key);
            self.metrics.lag.remove(&FileLabel {
                file: t.path.display().to_string(),
            });
            tracing::info!(file = %t.path.display(), offset = t.acked, "file read to its end and let go");
            self.dirty_since.get_or_insert(now);
        }
    }

    /// Writes the positions file if acknowledged positions moved.
    fn save(&mut self, now: Instant) {
        let unacked =
            self.in_flight.records > 0 && now.duration_since(self.last_ack) >= UNACKED_UNHEALTHY;
        let Some(since) = self.dirty_since else {
            self.metrics.checkpoint_age.set(0.0);
            self.set_health(unacked.then(|| self.unacked_reason(now)));
            return;
        };
        let positions: Vec<Position> = self.files.values().filter_map(Tracked::position).collect();
        match self.store.save(&self.host, positions) {
            Ok(()) => {
                self.dirty_since = None;
                self.metrics.checkpoint_age.set(0.0);
                self.set_health(unacked.then(|| self.unacked_reason(now)));
            }
            Err(e) => {
                self.metrics
                    .checkpoint_age
                    .set(now.duration_since(since).as_secs_f64());
                let why = format!("could not write {}: {e}", self.store.path().display());
                tracing::error!("{why}");
                self.set_health(Some(why));
            }
        }
    }

    fn unacked_reason(&self, now: Instant) -> String {
        format!(
            "no acknowledgement from the broker for {}s with {} records waiting",
            now.duration_since(self.last_ack).as_secs(),
            self.in_flight.records
        )
    }

    fn set_health(&self, why: Option<String>) {
        *self.metrics.unhealthy.lock().expect("health") = why;
    }
}

/// Sends a file's queued records, oldest first, until the producer's queue is full again.
fn send_outbox(t: &mut Tracked, input: &Input, producer: &Producer, host: &str) -> bool {
    let mut sent = false;
    while let Some((seq, record)) = t.flight.outbox.front() {
        let ack = Ack {
            file: t.id,
            generation: t.flight.generation,
            seq: *seq as u32,
        }
        .pack();
        let r = BaseRecord::with_opaque_to(&input.config.topic, ack)
            .key(host)
            .payload(&record[..]);
        match producer.send(r) {
            Ok(()) => {
                t.flight.outbox.pop_front();
                sent = true;
            }
            Err(_) => break,
        }
    }
    sent
}

/// Where one file's lines go: encoded, numbered, handed to the producer.
struct Sink<'a> {
    producer: &'a Producer,
    out: &'a mut Vec<u8>,
    input: &'a Input,
    host: &'a str,
    fields: &'a Fields,
    /// The read time: Unix ms and the JSON string.
    timestamp: &'a (i64, String),
    flight: &'a mut Flight,
    file: u32,
    in_flight: &'a mut InFlight,
}

impl Sink<'_> {
    fn emit(&mut self, line: Line<'_>) {
        let mut bytes = line.bytes;
        let mut truncated = line.truncated;
        loop {
            let e = encode(self.out, bytes, truncated, self.fields, &self.timestamp.1);
            let seq = self.flight.next_seq;
            if !self.flight.outbox.is_empty() {
                self.queue(seq, line.end, e.invalid_utf8, truncated);
                return;
            }
            let ack = Ack {
                file: self.file,
                generation: self.flight.generation,
                seq: seq as u32,
            }
            .pack();
            let record = BaseRecord::with_opaque_to(&self.input.config.topic, ack)
                .key(self.host)
                .payload(&self.out[..])
                .timestamp(self.timestamp.0);
            match self.producer.send(record) {
                Ok(()) => {
                    self.sent(seq, line.end, e.invalid_utf8, truncated);
                    return;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _))
                    if bytes.len() > 1024 =>
                {
                    // Larger than the producer's message.max.bytes (JSON escaping can
                    // multiply a line's size): cut it further.
                    bytes = &bytes[..bytes.len() / 2];
                    truncated = true;
                }
                Err(_) => {
                    // Queue full (or a transient refusal): kept, sent before anything newer.
                    self.queue(seq, line.end, e.invalid_utf8, truncated);
                    return;
                }
            }
        }
    }

    fn queue(&mut self, seq: u64, end: u64, invalid_utf8: bool, truncated: bool) {
        self.flight.outbox.push_back((seq, self.out.clone()));
        self.sent(seq, end, invalid_utf8, truncated);
    }

    fn sent(&mut self, seq: u64, end: u64, invalid_utf8: bool, truncated: bool) {
        let bytes = self.out.len() as u32;
        self.flight.next_seq += 1;
        self.flight.pending.push_back((seq, end, bytes));
        self.in_flight.add(u64::from(bytes));
        if truncated {
            self.input.counters.truncated.inc();
        }
        if invalid_utf8 {
            self.input.counters.invalid_utf8.inc();
        }
    }
}
