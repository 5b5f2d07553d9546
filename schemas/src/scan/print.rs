//! The `attributes` text as serde_json prints it: the members the scans write (keys without
//! escapes and values copied as they stand, the rest re-serialised as they are parsed), and
//! the held fields written back into their places.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The comma before a member, unless it is the object's first.
pub(super) fn separate(out: &mut String) {
    if out.len() > 1 {
        out.push(',');
    }
}

/// Appends `members`, a run of `rest`'s members (with its separating comma unless it starts
/// at the first), to the object `out`.
pub(super) fn push_members(out: &mut String, members: &str) {
    let members = members.strip_prefix(',').unwrap_or(members);
    if !members.is_empty() {
        separate(out);
        out.push_str(members);
    }
}

/// Prints `value` as JSON onto `out`.
pub(super) fn write_json<T: serde::Serialize + ?Sized>(out: &mut String, value: &T) {
    // Printing a str, a number or a value cannot fail.
    let _ = serde_json::to_writer(Utf8Sink(out), value);
}

/// serde_json's writer onto a `String`. serde_json writes a string's text in runs cut at the
/// ASCII bytes it escapes, and numbers as ASCII, so every write is whole UTF-8; each is
/// checked all the same (a few bytes, on the rare values not copied as they stand).
struct Utf8Sink<'a>(&'a mut String);

impl std::io::Write for Utf8Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = std::str::from_utf8(buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        self.0.push_str(text);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes `"key":` (after a comma unless it is the first) for a key with no escapes (no
/// quote, backslash or control character).
pub(super) fn write_plain_key(out: &mut String, key: &str) {
    separate(out);
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
}

/// Writes the JSON value `text` (as serde_json delimited it) as serde_json prints it.
pub(super) fn write_other(out: &mut String, text: &str) -> Result<(), serde_json::Error> {
    if prints_as_is(text) {
        out.push_str(text);
        Ok(())
    } else {
        // Validated once already: this parse fails only on a lone surrogate escape.
        let mut de = serde_json::Deserializer::from_str(text);
        Transcode(out).deserialize(&mut de)
    }
}

/// True when `serde_json` prints the JSON value `text` (as its parser delimited it: valid,
/// no whitespace around it) byte for byte as it stands: no whitespace inside, no escapes,
/// no number it would print differently (fractions, exponents, `-0`, integers past i64).
/// Most attribute values are such, and are then copied instead of parsed and printed.
pub(super) fn prints_as_is(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => match memchr::memchr2(b'"', b'\\', &b[i + 1..]) {
                Some(n) if b[i + 1 + n] == b'"' => i += n + 2,
                _ => return false,
            },
            b'-' | b'0'..=b'9' => {
                let negative = b[i] == b'-';
                let first = i + usize::from(negative);
                i = first;
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                let digits = i - first;
                if digits == 0
                    || digits > 18
                    || (negative && b[first] == b'0')
                    || matches!(b.get(i), Some(b'.' | b'e' | b'E'))
                {
                    return false;
                }
            }
            // Structure, and the letters of true, false and null.
            b'{' | b'}' | b'[' | b']' | b',' | b':' | b'a' | b'e' | b'f' | b'l' | b'n' | b'r'
            | b's' | b't' | b'u' => i += 1,
            _ => return false,
        }
    }
    true
}

/// Any JSON value, written to `out` as `serde_json` would print it, as it is parsed.
struct Transcode<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for Transcode<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Transcode<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        write_json(self.0, &v);
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        write_json(self.0, &v);
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        write_json(self.0, &v);
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // Same as a parsed `Value`: serde_json prints non-finite floats as null.
        write_json(self.0, &v);
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        write_json(self.0, v);
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.push_str("null");
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let out = self.0;
        let mut first = true;
        loop {
            out.push(if first { '[' } else { ',' });
            if seq.next_element_seed(Transcode(&mut *out))?.is_none() {
                out.pop();
                out.push_str(if first { "[]" } else { "]" });
                return Ok(());
            }
            first = false;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.0;
        let mut first = true;
        loop {
            out.push(if first { '{' } else { ',' });
            if map.next_key_seed(KeyText(&mut *out))?.is_none() {
                out.pop();
                out.push_str(if first { "{}" } else { "}" });
                return Ok(());
            }
            out.push(':');
            map.next_value_seed(Transcode(&mut *out))?;
            first = false;
        }
    }
}

/// A nested object's key, written to `out`.
struct KeyText<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for KeyText<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyText<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        write_json(self.0, v);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn values_copied_as_they_stand_are_exactly_those_serde_json_prints_so() {
        for same in [
            "1",
            "-12",
            "0",
            "123456789012345678",
            "true",
            "null",
            r#""a é/""#,
            "[]",
            "{}",
            r#"{"a":[1,"x",{"b":null}],"c":false}"#,
        ] {
            let printed = serde_json::from_str::<Value>(same).unwrap().to_string();
            assert!(prints_as_is(same), "{same}");
            assert_eq!(printed, same);
        }
        for different in [
            "-0",
            "1.50",
            "1e3",
            "1E3",
            "12345678901234567890",
            r#""a\u00e9""#,
            r#""\/""#,
            "[1, 2]",
            r#"{"a": 1}"#,
            r#"{"a":1.0}"#,
        ] {
            assert!(!prints_as_is(different), "{different}");
        }
    }
}
