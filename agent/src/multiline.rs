//! Lines -> multi-line records (a Java stack trace, a Python traceback) by one of two rules,
//! as Vector's `multiline` modes do it:
//!
//! - `Start(re)`: a line matching `re` starts a record, every other line joins the one before
//!   (`^\d{4}-\d{2}-\d{2}` for logs whose records start with a date).
//! - `Continue(re)`: a line matching `re` joins the record before, every other line starts
//!   one (`^[ \t]|^Caused by:` for indented continuation lines).
//!
//! A record is sent when the next one starts, after `max_lines`, or when no line joined it
//! for the timeout (the caller asks with [`Multiline::expire`]). Its bytes are bounded by the
//! line limit: lines past it are dropped from the record, which is marked truncated.

use std::time::{Duration, Instant};

use regex::bytes::Regex;

use crate::line::Line;

#[derive(Debug, Clone)]
pub enum Rule {
    Start(Regex),
    Continue(Regex),
}

#[derive(Debug)]
pub struct Multiline {
    rule: Rule,
    max_lines: usize,
    max_bytes: usize,
    timeout: Duration,
    held: Vec<u8>,
    lines: usize,
    end: u64,
    truncated: bool,
    last_line: Option<Instant>,
}

impl Multiline {
    pub fn new(rule: Rule, max_lines: usize, max_bytes: usize, timeout: Duration) -> Self {
        Self {
            rule,
            max_lines,
            max_bytes,
            timeout,
            held: Vec::new(),
            lines: 0,
            end: 0,
            truncated: false,
            last_line: None,
        }
    }

    pub fn set_max_bytes(&mut self, max: usize) {
        self.max_bytes = max;
    }

    pub fn pending(&self) -> bool {
        self.lines > 0
    }

    pub fn reset(&mut self) {
        self.held = Vec::new();
        self.lines = 0;
        self.truncated = false;
        self.last_line = None;
    }

    /// Takes one line; emits the record it completes, if any.
    pub fn push(&mut self, line: Line<'_>, now: Instant, mut emit: impl FnMut(Line<'_>)) {
        let joins = self.lines > 0
            && self.lines < self.max_lines
            && match &self.rule {
                Rule::Start(re) => !re.is_match(line.bytes),
                Rule::Continue(re) => re.is_match(line.bytes),
            };
        if !joins {
            self.flush(&mut emit);
        } else {
            self.held.push(b'\n');
        }
        let room = self.max_bytes.saturating_sub(self.held.len());
        if line.bytes.len() > room {
            self.truncated = true;
        }
        self.held
            .extend_from_slice(&line.bytes[..line.bytes.len().min(room)]);
        self.truncated |= line.truncated;
        self.lines += 1;
        self.end = line.end;
        self.last_line = Some(now);
    }

    /// Emits the held record if no line joined it for the timeout (or `force`).
    pub fn expire(&mut self, now: Instant, force: bool, mut emit: impl FnMut(Line<'_>)) {
        let due = self
            .last_line
            .is_some_and(|t| force || now.duration_since(t) >= self.timeout);
        if due {
            self.flush(&mut emit);
        }
    }

    fn flush(&mut self, emit: &mut impl FnMut(Line<'_>)) {
        if self.lines == 0 {
            return;
        }
        emit(Line {
            bytes: &self.held,
            end: self.end,
            truncated: self.truncated,
        });
        self.held.clear();
        self.lines = 0;
        self.truncated = false;
        self.last_line = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(m: &mut Multiline, lines: &[&str]) -> Vec<(String, u64, bool)> {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut end = 0;
        for l in lines {
            end += l.len() as u64 + 1;
            let line = Line {
                bytes: l.as_bytes(),
                end,
                truncated: false,
            };
            m.push(line, now, |r| {
                out.push((String::from_utf8_lossy(r.bytes).into(), r.end, r.truncated))
            });
        }
        m.expire(now, true, |r| {
            out.push((String::from_utf8_lossy(r.bytes).into(), r.end, r.truncated))
        });
        out
    }

    const TRACE: &[&str] = &[
        "2026-12-01 10:00:00 ERROR boom",
        "java.lang.IllegalStateException: x",
        "\tat a.b.C.d(C.java:1)",
        "Caused by: java.io.IOException: y",
        "\t... 3 more",
        "2026-12-01 10:00:01 INFO fine",
    ];

    #[test]
    fn a_stack_trace_is_one_record_by_its_start_pattern() {
        let re = Regex::new(r"^\d{4}-\d{2}-\d{2}").unwrap();
        let mut m = Multiline::new(Rule::Start(re), 100, 1 << 20, Duration::from_secs(1));
        let out = feed(&mut m, TRACE);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, TRACE[..5].join("\n"));
        let first_end: usize = TRACE[..5].iter().map(|l| l.len() + 1).sum();
        assert_eq!(out[0].1, first_end as u64);
        assert_eq!(out[1].0, TRACE[5]);
    }

    #[test]
    fn a_stack_trace_is_one_record_by_its_continuation_pattern() {
        let re = Regex::new(r"^[ \t]|^Caused by:|^java\.").unwrap();
        let mut m = Multiline::new(Rule::Continue(re), 100, 1 << 20, Duration::from_secs(1));
        let out = feed(&mut m, TRACE);
        assert_eq!(
            out.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
            vec![TRACE[..5].join("\n").as_str(), TRACE[5]]
        );
    }

    #[test]
    fn records_are_bounded_in_lines_and_bytes() {
        let re = Regex::new(r"^S").unwrap();
        let mut m = Multiline::new(Rule::Start(re.clone()), 2, 1 << 20, Duration::from_secs(1));
        let out = feed(&mut m, &["S1", "a", "b", "c"]);
        assert_eq!(
            out.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
            vec!["S1\na", "b\nc"]
        );
        let mut m = Multiline::new(Rule::Start(re), 100, 6, Duration::from_secs(1));
        let out = feed(&mut m, &["S1234", "abcdef", "S2"]);
        assert_eq!(out[0], ("S1234\n".into(), 13, true));
        assert_eq!(out[1], ("S2".into(), 16, false));
    }

    #[test]
    fn a_record_waits_for_its_timeout() {
        let re = Regex::new(r"^S").unwrap();
        let mut m = Multiline::new(Rule::Start(re), 100, 1 << 20, Duration::from_secs(1));
        let t0 = Instant::now();
        let line = Line {
            bytes: b"S",
            end: 2,
            truncated: false,
        };
        m.push(line, t0, |_| panic!("nothing to emit yet"));
        let mut out = 0;
        m.expire(t0 + Duration::from_millis(500), false, |_| out += 1);
        assert_eq!(out, 0);
        m.expire(t0 + Duration::from_secs(1), false, |_| out += 1);
        assert_eq!(out, 1);
        assert!(!m.pending());
    }
}
