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

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer as _;

use crate::config::{AgentConfig, InputConfig};
use crate::line::LineReader;
use crate::metrics::{FileLabel, InputCounters, Metrics};
use crate::multiline::{Multiline, Rule};
use crate::positions::{FileKey, Fingerprint, Position, Store};
use crate::record::{timestamp_now, Fields};
use crate::ship::{Ack, Event, Producer};

mod discover;
mod send;
use send::{send_outbox, Flight, InFlight, Sink};

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
        let Some(seq) = t.flight.full_seq(ack.seq) else {
            return;
        };
        let input = &mut self.inputs[t.input];
        match result {
            Ok(()) => {
                self.last_ack = now;
                input.counters.sent.inc();
                t.failures = 0;
                let Some(end) = t.flight.delivered(seq, &mut self.in_flight) else {
                    return;
                };
                t.acked = end;
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
