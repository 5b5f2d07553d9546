//! Bytes of a file -> lines, with the byte offset each one ends at.
//!
//! A line ends at `\n` (a `\r` before it is dropped). Bytes after the last `\n` are held until
//! the rest arrives, or until the caller gives up waiting ([`LineReader::flush`]). A line
//! longer than the limit keeps its first `max` bytes and is marked truncated; the rest is
//! skipped up to its newline, so memory stays bounded by `max` whatever the file holds.

/// One line, as it will be sent.
#[derive(Debug, PartialEq, Eq)]
pub struct Line<'a> {
    pub bytes: &'a [u8],
    /// The file offset just past this line (and its newline): where reading resumes once
    /// this line is delivered.
    pub end: u64,
    /// Cut at the limit.
    pub truncated: bool,
}

#[derive(Debug)]
pub struct LineReader {
    max: usize,
    /// The start of the line being assembled (bytes read, no newline yet), up to `max` bytes.
    held: Vec<u8>,
    /// The line being assembled is longer than `max`: the rest is skipped.
    cut: bool,
}

impl LineReader {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            held: Vec::new(),
            cut: false,
        }
    }

    /// Lowers the line limit (the broker refused records this large).
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Bytes held for a line whose newline has not arrived.
    pub fn pending(&self) -> bool {
        !self.held.is_empty() || self.cut
    }

    /// Forgets the held partial line (the file is read again from an earlier offset).
    pub fn reset(&mut self) {
        self.held = Vec::new();
        self.cut = false;
    }

    /// Splits `chunk`, read at file offset `at`, emitting every complete line.
    pub fn feed(&mut self, chunk: &[u8], at: u64, mut emit: impl FnMut(Line<'_>)) {
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', chunk) {
            let end = at + nl as u64 + 1;
            let segment = &chunk[start..nl];
            start = nl + 1;
            if self.held.is_empty() && !self.cut {
                let truncated = segment.len() > self.max;
                let bytes = if truncated {
                    &segment[..self.max]
                } else {
                    strip_cr(segment)
                };
                emit(Line {
                    bytes,
                    end,
                    truncated,
                });
            } else {
                self.hold(segment);
                let truncated = self.cut;
                let bytes = if truncated {
                    &self.held[..]
                } else {
                    strip_cr(&self.held)
                };
                emit(Line {
                    bytes,
                    end,
                    truncated,
                });
                self.held.clear();
                self.cut = false;
            }
        }
        self.hold(&chunk[start..]);
        if self.held.capacity() > 4 * self.max.max(64 * 1024) && self.held.is_empty() {
            self.held = Vec::new();
        }
    }

    /// Emits the held partial line as a line of its own, ending at `end` (the file's read
    /// position): its writer has stopped short of a newline.
    pub fn flush(&mut self, end: u64, mut emit: impl FnMut(Line<'_>)) {
        if !self.pending() {
            return;
        }
        emit(Line {
            bytes: &self.held,
            end,
            truncated: self.cut,
        });
        self.held.clear();
        self.cut = false;
    }

    fn hold(&mut self, bytes: &[u8]) {
        let room = self.max - self.held.len().min(self.max);
        if bytes.len() > room {
            self.cut = true;
        }
        self.held.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Out = Vec<(Vec<u8>, u64, bool)>;

    fn run(reader: &mut LineReader, chunks: &[&[u8]]) -> Out {
        let mut out = Vec::new();
        let mut at = 0;
        for c in chunks {
            reader.feed(c, at, |l| out.push((l.bytes.to_vec(), l.end, l.truncated)));
            at += c.len() as u64;
        }
        out
    }

    #[test]
    fn lines_end_at_newlines_and_lose_their_cr() {
        let mut r = LineReader::new(100);
        let out = run(&mut r, &[b"a\r\nbb\n\nccc"]);
        assert_eq!(
            out,
            vec![
                (b"a".to_vec(), 3, false),
                (b"bb".to_vec(), 6, false),
                (b"".to_vec(), 7, false)
            ]
        );
        assert!(r.pending());
        let mut flushed = Vec::new();
        r.flush(10, |l| flushed.push((l.bytes.to_vec(), l.end)));
        assert_eq!(flushed, vec![(b"ccc".to_vec(), 10)]);
        assert!(!r.pending());
    }

    #[test]
    fn a_line_split_across_reads_is_joined() {
        let mut r = LineReader::new(100);
        let out = run(&mut r, &[b"hel", b"lo\r", b"\nx\n"]);
        assert_eq!(
            out,
            vec![(b"hello".to_vec(), 7, false), (b"x".to_vec(), 9, false)]
        );
    }

    #[test]
    fn a_long_line_is_cut_and_the_next_one_is_whole() {
        let mut r = LineReader::new(4);
        let out = run(&mut r, &[b"abcdefgh\nij\n", b"klmno", b"pq\nr\n"]);
        assert_eq!(
            out,
            vec![
                (b"abcd".to_vec(), 9, true),
                (b"ij".to_vec(), 12, false),
                (b"klmn".to_vec(), 20, true),
                (b"r".to_vec(), 22, false)
            ]
        );
    }

    proptest! {
        /// However the bytes are split into reads, the lines are the same, every one ends
        /// where its newline is, and none exceeds the limit.
        #[test]
        fn chunking_does_not_change_the_lines(
            lines in proptest::collection::vec("[a-z\r]{0,12}", 0..20),
            cuts in proptest::collection::vec(0usize..200, 0..6),
            max in 1usize..16,
        ) {
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let bytes = text.as_bytes();
            let whole = run(&mut LineReader::new(max), &[bytes]);
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            points.sort();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&bytes[last..p]);
                last = p;
            }
            chunks.push(&bytes[last..]);
            let split = run(&mut LineReader::new(max), &chunks);
            prop_assert_eq!(&whole, &split);
            prop_assert_eq!(whole.len(), lines.len());
            for ((got, end, truncated), want) in whole.iter().zip(&lines) {
                prop_assert!(got.len() <= max);
                prop_assert_eq!(bytes[*end as usize - 1], b'\n');
                if *truncated {
                    prop_assert!(want.len() > max);
                    prop_assert_eq!(&got[..], &want.as_bytes()[..max]);
                } else {
                    let want = want.strip_suffix('\r').unwrap_or(want);
                    prop_assert_eq!(&got[..], want.as_bytes());
                }
            }
        }
    }
}
