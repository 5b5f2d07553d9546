//! A line -> the JSON record sent to Kafka, in the shape ingest's default mapping reads.
//!
//! - A line that is a JSON object passes through as written, with `host`, `file` and the
//!   labels spliced in at its front where the object lacks them (the application's own
//!   fields win). It is checked, not re-serialised: its bytes reach the topic unchanged.
//! - Any other line becomes `{"timestamp","host","message","file",labels...}`, the
//!   timestamp being when it was read, plus `"truncated":true` when it was cut at the line
//!   limit and `"invalid_utf8":true` when bytes that were not UTF-8 were replaced by U+FFFD.

use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};

/// The fields added to every record of one file: encoded once, reused for every line.
#[derive(Debug, Clone)]
pub struct Fields {
    /// `(name, "name":value)` for host, file and each label, in that order.
    added: Vec<(String, Vec<u8>)>,
}

impl Fields {
    pub fn new(host: &str, file: &str, labels: &[(String, serde_json::Value)]) -> Self {
        let mut added = Vec::with_capacity(2 + labels.len());
        for (name, value) in [
            ("host", serde_json::Value::from(host)),
            ("file", serde_json::Value::from(file)),
        ]
        .into_iter()
        .chain(labels.iter().map(|(k, v)| (k.as_str(), v.clone())))
        {
            let mut member = serde_json::to_vec(name).expect("a string encodes");
            member.push(b':');
            serde_json::to_writer(&mut member, &value).expect("a JSON value encodes");
            added.push((name.to_string(), member));
        }
        Self { added }
    }
}

/// What encoding found out about a line, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    pub invalid_utf8: bool,
}

/// Writes the record for `line` into `out` (cleared first). `timestamp` is the JSON string
/// of the read time, quotes included.
pub fn encode(
    out: &mut Vec<u8>,
    line: &[u8],
    truncated: bool,
    fields: &Fields,
    timestamp: &str,
) -> Encoded {
    out.clear();
    if !truncated && splice_object(out, line, fields) {
        return Encoded::default();
    }
    out.clear();
    out.extend_from_slice(b"{\"timestamp\":");
    out.extend_from_slice(timestamp.as_bytes());
    let (host, file) = (&fields.added[0].1, &fields.added[1].1);
    out.push(b',');
    out.extend_from_slice(host);
    out.extend_from_slice(b",\"message\":");
    let invalid_utf8 = match simdutf8::basic::from_utf8(line) {
        Ok(s) => {
            write_json_string(out, s);
            false
        }
        Err(_) => {
            write_json_string(out, &String::from_utf8_lossy(line));
            true
        }
    };
    out.push(b',');
    out.extend_from_slice(file);
    if truncated {
        out.extend_from_slice(b",\"truncated\":true");
    }
    if invalid_utf8 {
        out.extend_from_slice(b",\"invalid_utf8\":true");
    }
    for (_, member) in &fields.added[2..] {
        out.push(b',');
        out.extend_from_slice(member);
    }
    out.push(b'}');
    Encoded { invalid_utf8 }
}

/// Writes `s` as a JSON string. Runs of bytes that need no escape (most of a log line) are
/// found eight at a time and copied whole.
fn write_json_string(out: &mut Vec<u8>, s: &str) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    /// A byte of `w` is zero (the classic SWAR test; exact for the first such byte).
    fn has_zero(w: u64) -> bool {
        w.wrapping_sub(ONES) & !w & HIGHS != 0
    }
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if i + 8 <= bytes.len() {
            let w = u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
            let control = w.wrapping_sub(0x20 * ONES) & !w & HIGHS != 0;
            if !control
                && !has_zero(w ^ (b'"' as u64 * ONES))
                && !has_zero(w ^ (b'\\' as u64 * ONES))
            {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.extend_from_slice(escape);
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// If `line` is one JSON object, writes it with the missing added fields in front and
/// returns true.
fn splice_object(out: &mut Vec<u8>, line: &[u8], fields: &Fields) -> bool {
    let text = line.trim_ascii();
    if text.first() != Some(&b'{') || text.last() != Some(&b'}') {
        return false;
    }
    // serde_json skips the strings it ignores without checking their UTF-8.
    if simdutf8::basic::from_utf8(text).is_err() {
        return false;
    }
    let names: Vec<&str> = fields.added.iter().map(|(n, _)| n.as_str()).collect();
    let mut present = vec![false; names.len()];
    let mut de = serde_json::Deserializer::from_slice(text);
    let seed = TopLevelKeys {
        names: &names,
        present: &mut present,
    };
    if seed.deserialize(&mut de).and_then(|()| de.end()).is_err() {
        return false;
    }
    let inner = &text[1..];
    let empty = inner.trim_ascii_start().first() == Some(&b'}');
    out.push(b'{');
    let mut first = true;
    for ((_, member), present) in fields.added.iter().zip(&present) {
        if *present {
            continue;
        }
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(member);
        first = false;
    }
    if !first && !empty {
        out.push(b',');
    }
    out.extend_from_slice(inner);
    true
}

/// Walks one JSON object, marking which of `names` are among its top-level keys; values are
/// checked and skipped.
struct TopLevelKeys<'a> {
    names: &'a [&'a str],
    present: &'a mut [bool],
}

impl<'de> DeserializeSeed<'de> for TopLevelKeys<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopLevelKeys<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(found) = map.next_key_seed(KeyIndex(self.names))? {
            if let Some(i) = found {
                self.present[i] = true;
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

/// A key -> its index among the names looked for.
struct KeyIndex<'a>(&'a [&'a str]);

impl<'de> DeserializeSeed<'de> for KeyIndex<'_> {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIndex<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|n| *n == v))
    }
}

/// The read time: Unix milliseconds (the Kafka record's timestamp) and a JSON string,
/// RFC 3339, UTC, microseconds (the record's `timestamp`).
pub fn timestamp_now() -> (i64, String) {
    let now = chrono::Utc::now();
    let text = now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    (now.timestamp_millis(), format!("\"{text}\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn fields() -> Fields {
        Fields::new(
            "web-1",
            "/var/log/a \"b\".log",
            &[("service".into(), json!("api")), ("tier".into(), json!(2))],
        )
    }

    fn enc(line: &[u8], truncated: bool) -> (Vec<u8>, Encoded) {
        let mut out = Vec::new();
        let e = encode(
            &mut out,
            line,
            truncated,
            &fields(),
            "\"2026-12-01T10:00:00.000000Z\"",
        );
        (out, e)
    }

    #[test]
    fn a_text_line_becomes_a_record_with_host_file_and_labels() {
        let (out, e) = enc(b"GET /x \"quoted\" \t tab", false);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"timestamp": "2026-12-01T10:00:00.000000Z", "host": "web-1",
                   "message": "GET /x \"quoted\" \t tab", "file": "/var/log/a \"b\".log",
                   "service": "api", "tier": 2})
        );
        assert!(!e.invalid_utf8);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_marked() {
        let (out, e) = enc(b"bad \xff\xfe line", false);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["message"], json!("bad \u{fffd}\u{fffd} line"));
        assert_eq!(v["invalid_utf8"], json!(true));
        assert!(e.invalid_utf8);
        let (out, _) = enc(b"{\"a\": \"\xff\"}", false);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["invalid_utf8"],
            json!(true),
            "not UTF-8, so not passed through"
        );
    }

    proptest::proptest! {
        /// The escaper writes what serde_json writes, for any text (control characters,
        /// quotes, backslashes, multi-byte characters, at any alignment).
        #[test]
        fn strings_are_escaped_as_serde_json_escapes_them(s in "(\\PC|[\\x00-\\x1f\"\\\\])*") {
            let mut out = Vec::new();
            write_json_string(&mut out, &s);
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&s).unwrap());
        }
    }

    #[test]
    fn a_json_object_keeps_its_bytes_and_its_own_fields() {
        let line = br#"  {"host": "app-7", "level":"warn", "n": [1, {"file": 2}]} "#;
        let (out, _) = enc(line, false);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"file":"/var/log/a \"b\".log","service":"api","tier":2,"host": "app-7", "level":"warn", "n": [1, {"file": 2}]}"#
        );
        let (out, _) = enc(b"{ }", false);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"host": "web-1", "file": "/var/log/a \"b\".log", "service": "api", "tier": 2})
        );
        let (out, _) = enc(br#"{"host":1,"file":2,"service":3,"tier":4}"#, false);
        assert_eq!(out, br#"{"host":1,"file":2,"service":3,"tier":4}"#);
        let (out, _) = enc(br#"{"h\u006fst":"escaped key"}"#, false);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["host"], json!("escaped key"));
    }

    #[test]
    fn anything_else_that_looks_like_json_is_text() {
        for line in [
            &b"{not json}"[..],
            b"{\"a\":1} trailing",
            b"[1,2]",
            b"{\"a\":1}{\"b\":2}",
        ] {
            let (out, _) = enc(line, false);
            let v: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["message"], json!(String::from_utf8_lossy(line)), "{v}");
        }
        let (out, _) = enc(br#"{"a":1}"#, true);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["message"], json!("{\"a\":1}"), "a cut object is text");
        assert_eq!(v["truncated"], json!(true));
    }
}
