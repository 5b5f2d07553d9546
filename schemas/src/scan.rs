//! One pass over a JSON object record, without building a tree of the whole record.
//!
//! Only the top-level fields the mapper may take (the candidates for timestamp, host, level,
//! message and the typed columns, see [`Wanted`]) are parsed, into [`Val`]s that borrow
//! their strings from the record. Every other
//! field is re-serialised straight into the `attributes` text as the parser reads it, so a
//! record with many fields costs one parse and one write, not a map of owned keys and values
//! that is then serialised again. The text is exactly what `serde_json` prints for the same
//! value: compact, numbers as parsed, strings escaped the same way.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::fields::Held;
use crate::val::{Key, Val};
use print::{push_members, separate, write_json, write_other, write_plain_key};

mod print;
mod quick;

/// The top-level keys whose values the mapper may take, each with a slot (its index) by which
/// the mapper finds the field ([`FieldPath`](crate::fields::FieldPath) adds them).
#[derive(Debug, Clone, Default)]
pub(crate) struct Wanted {
    /// By length (names of 63 bytes or more share the last entry): a key is compared only
    /// with the few names of its length, most keys with none.
    by_length: Vec<Vec<Name>>,
    count: usize,
}

/// A wanted name with its first eight bytes as an integer: a key is compared with it in one
/// integer compare, and byte by byte only past the eighth byte.
#[derive(Debug, Clone)]
struct Name {
    text: String,
    head: u64,
    slot: usize,
}

impl Wanted {
    /// The slot of `name`, added if new.
    pub fn add(&mut self, name: &str) -> usize {
        if let Some(slot) = self.slot(name) {
            return slot;
        }
        let at = length_class(name);
        if self.by_length.len() <= at {
            self.by_length.resize(at + 1, Vec::new());
        }
        let slot = self.count;
        self.by_length[at].push(Name {
            text: name.to_string(),
            head: head(name),
            slot,
        });
        self.count += 1;
        slot
    }

    pub fn slot(&self, key: &str) -> Option<usize> {
        let names = self.by_length.get(length_class(key))?;
        if names.is_empty() {
            return None;
        }
        let key_head = head(key);
        names
            .iter()
            .find(|n| {
                n.head == key_head
                    && n.text.len() == key.len()
                    && (key.len() <= 8 || n.text.as_bytes()[8..] == key.as_bytes()[8..])
            })
            .map(|n| n.slot)
    }
}

fn length_class(name: &str) -> usize {
    name.len().min(63)
}

/// The first eight bytes of `name`, zero-padded.
fn head(name: &str) -> u64 {
    match name.as_bytes().first_chunk::<8>() {
        Some(first) => u64::from_le_bytes(*first),
        None => name
            .bytes()
            .rev()
            .fold(0, |word, c| (word << 8) | u64::from(c)),
    }
}

/// A record's fields, split: the wanted ones as values, the others already as JSON text.
#[derive(Debug)]
pub(crate) struct Fields<'a> {
    /// Wanted fields; the mapper takes from here, and what it leaves goes to `attributes`.
    pub held: Held<'a>,
    /// `{` then `"key":value` for every other field, in record order, comma-separated. Text
    /// from the start: copied from the record or printed by serde_json, so it becomes
    /// `attributes` without a second UTF-8 check.
    rest: String,
}

impl<'a> Fields<'a> {
    /// Fields that all sit in `held` (text formats: the pattern's captures).
    pub fn held(held: Held<'a>) -> Self {
        Self {
            held,
            rest: String::from("{"),
        }
    }

    /// Scans a JSON object (the text must start with `{` after whitespace).
    pub fn scan(text: &'a str, wanted: &Wanted) -> Result<Self, serde_json::Error> {
        match quick::scan(text, wanted) {
            Some(fields) => Ok(fields),
            None => Self::scan_serde(text, wanted),
        }
    }

    /// No fields yet, with room for those of a record of `text`.
    fn empty_for(text: &str) -> Self {
        let mut rest = String::with_capacity(text.len() / 2);
        rest.push('{');
        Self {
            held: Held::default(),
            rest,
        }
    }

    /// [`Fields::scan`] for every shape of record, with serde_json's errors.
    fn scan_serde(text: &'a str, wanted: &Wanted) -> Result<Self, serde_json::Error> {
        let mut fields = Self::empty_for(text);
        let mut de = serde_json::Deserializer::from_str(text);
        de.deserialize_map(Scan {
            wanted,
            fields: &mut fields,
        })?;
        de.end()?;
        Ok(fields)
    }

    /// The `attributes` text: every field still here, the held ones back in their places,
    /// fields the mapper added (such as `_original_host`) last. `None` when nothing is left.
    pub fn into_attributes(self) -> Option<String> {
        let Self { held, rest } = self;
        let mut out = if held.is_empty() {
            rest // the usual case: no copy
        } else {
            // Each held field's `at` is a member boundary of `rest`: its start, or just after
            // a member, where the comma before the next one (if any) stands.
            let mut out = String::with_capacity(rest.len() + 64);
            out.push('{');
            let mut done = 1;
            for field in &held.fields {
                let at = field.at.unwrap_or(rest.len());
                push_members(&mut out, &rest[done..at]);
                done = at;
                if let Some(value) = &field.value {
                    separate(&mut out);
                    write_json(&mut out, &*field.key);
                    out.push(':');
                    write_json(&mut out, value);
                }
            }
            push_members(&mut out, &rest[done..]);
            out
        };
        if out.len() <= 1 {
            return None;
        }
        out.push('}');
        Some(out)
    }
}

/// The top-level object: wanted fields to values, others to text.
struct Scan<'w, 'f, 'a> {
    wanted: &'w Wanted,
    fields: &'f mut Fields<'a>,
}

impl<'a> Visitor<'a> for Scan<'_, '_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<(), A::Error> {
        let fields = self.fields;
        while let Some(key) = map.next_key_seed(Key)? {
            if let Some(slot) = self.wanted.slot(&key) {
                let value: Val<'a> = map.next_value()?;
                let at = fields.rest.len();
                fields.held.insert(Some(slot), key, value, Some(at));
            } else {
                let out = &mut fields.rest;
                match key {
                    // Borrowed: no escapes, so no quote, backslash or control character.
                    Cow::Borrowed(key) => write_plain_key(out, key),
                    Cow::Owned(key) => {
                        separate(out);
                        write_json(out, &key);
                        out.push(':');
                    }
                }
                let raw: &'a RawValue = map.next_value()?;
                write_other(out, raw.get()).map_err(de::Error::custom)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::FieldPath;
    use serde_json::Value;

    fn attributes(text: &str, wanted: &[&str], take: &[&str]) -> Option<String> {
        let mut all = Wanted::default();
        for name in wanted {
            FieldPath::new(&mut all, name);
        }
        let mut fields = Fields::scan(text, &all).unwrap();
        for key in take {
            if let Some(slot) = all.slot(key) {
                fields.held.remove(slot);
            }
        }
        fields.into_attributes()
    }

    #[test]
    fn untouched_fields_read_as_serde_json_prints_them() {
        let text = r#" { "a" : [1, -2, 3.50, 1e300, {"x\"y": null, "z": []}, {}], "b\n": "é\u0001\ud83d\ude00", "c": true, "big": 18446744073709551615, "n": -9223372036854775808 } "#;
        let expected = serde_json::from_str::<Value>(text).unwrap().to_string();
        assert_eq!(
            attributes(text, &[], &[]).as_deref(),
            Some(expected.as_str())
        );
    }

    #[test]
    fn held_fields_keep_their_place_and_taken_ones_go() {
        let text = r#"{"a":1,"host":{"name":"h","ip":"1"},"b":2,"msg":"m","c":3}"#;
        let wanted = ["host.name", "msg"];
        assert_eq!(
            attributes(text, &wanted, &[]).as_deref(),
            Some(r#"{"a":1,"host":{"name":"h","ip":"1"},"b":2,"msg":"m","c":3}"#)
        );
        assert_eq!(
            attributes(text, &wanted, &["msg", "host"]).as_deref(),
            Some(r#"{"a":1,"b":2,"c":3}"#)
        );
        assert_eq!(attributes(r#"{"msg":"m"}"#, &wanted, &["msg"]), None);
        assert_eq!(attributes("{}", &wanted, &[]), None);
    }

    #[test]
    fn malformed_input_is_an_error() {
        let mut wanted = Wanted::default();
        wanted.add("msg");
        for bad in [
            r#"{"a":"#,
            r#"{"a":1} x"#,
            r#"{"a":[1,}"#,
            r#"{"msg":tru}"#,
            r#"{1:2}"#,
        ] {
            assert!(Fields::scan(bad, &wanted).is_err(), "{bad}");
        }
    }

    /// What a scan yields, in a form two scans can be compared by.
    fn outcome(
        fields: Result<Fields<'_>, serde_json::Error>,
    ) -> Result<(String, Option<String>), ()> {
        let fields = fields.map_err(drop)?;
        let held = format!("{:?}", fields.held);
        Ok((held, fields.into_attributes()))
    }

    fn quick_wanted() -> Wanted {
        let mut wanted = Wanted::default();
        for name in ["msg", "time", "host.name", "n"] {
            FieldPath::new(&mut wanted, name);
        }
        wanted
    }

    #[test]
    fn the_quick_scan_takes_flat_records_and_leaves_the_rest() {
        let wanted = quick_wanted();
        for taken in [
            r#"{"msg":"a\"b\\c\r","n":-12,"time":1.5e3,"x":"\u00e9\/","y":true,"z":null}"#,
            " {\n\"msg\" : \"m\" ,\t\"a\":0 } \r\n",
            "{}",
            r#"{"big":123456789012345678901,"neg0":-0,"f":0.25}"#,
        ] {
            assert!(quick::scan(taken, &wanted).is_some(), "{taken}");
            assert_eq!(
                outcome(Fields::scan(taken, &wanted)),
                outcome(Fields::scan_serde(taken, &wanted)),
                "{taken}"
            );
        }
        for left in [
            r#"{"host":{"name":"h"}}"#,
            r#"{"a":[1]}"#,
            r#"{"k\u0065y":1}"#,
            r#"{"a":01}"#,
            r#"{"a":1,}"#,
            r#"{"a":"x"} y"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":tru}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":1x}"#,
            r#"{"a":"\ud800"}"#,
        ] {
            assert!(quick::scan(left, &wanted).is_none(), "{left}");
        }
    }

    proptest::proptest! {
        /// On records built from the pieces real logs and hostile producers send, and on the
        /// same records mangled, the quick scan either leaves the record or yields exactly
        /// what the serde_json scan yields.
        #[test]
        fn the_quick_scan_agrees_with_serde_json(
            text in flat_record(),
            edits in proptest::collection::vec((0usize..1000, 0usize..12), 0..3),
        ) {
            let wanted = quick_wanted();
            let mut bytes = text.into_bytes();
            for (at, what) in edits {
                let at = at % (bytes.len() + 1);
                match what {
                    0 if at < bytes.len() => { bytes.remove(at); }
                    _ => bytes.insert(at, b"\"\\,:{}[]0-e "[what % 12]),
                }
            }
            let Ok(text) = String::from_utf8(bytes) else { return Ok(()) };
            if let Some(quick) = quick::scan(&text, &wanted) {
                proptest::prop_assert_eq!(outcome(Ok(quick)), outcome(Fields::scan_serde(&text, &wanted)));
            }
        }

        #[test]
        fn any_object_round_trips(doc in json_object()) {
            // Compared with what a parsed `Value` prints (serde_json's float parsing is not
            // always exact, in both paths alike).
            let text = doc.to_string();
            let printed = attributes(&text, &["k1"], &[]);
            let parsed = serde_json::from_str::<Value>(&text).unwrap();
            let expected = (!doc.as_object().unwrap().is_empty()).then(|| parsed.to_string());
            proptest::prop_assert_eq!(printed, expected);
        }
    }

    fn flat_record() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let key = prop_oneof![
            Just("msg"),
            Just("time"),
            Just("host.name"),
            Just("host"),
            Just("n"),
            Just("a"),
            Just("k\\u0061"),
            Just("k\\n"),
        ];
        let value = prop_oneof![
            Just(r#""plain é""#),
            Just(r#""a\"b\\c\r\n\t\b\f""#),
            Just(r#""\/x\u00e9\ud83d\ude00""#),
            Just(r#""\ud800""#),
            Just(r#""""#),
            // Long enough for the scan's 32-byte blocks, with stops inside and past them.
            Just(r#""GET /api/v1/users?page=2 HTTP/1.1 200 0.031s upstream=10.0.0.7:8080""#),
            Just(
                r#""[Sun Dec 04 04:47:44 2005] [error] mod_jk child workerEnv in error state 6\r""#
            ),
            Just(r#""java.lang.IllegalStateException: pool exhausted after 30000 ms \u00e9 \/ x""#),
            Just("0"),
            Just("-7"),
            Just("123456789012345678"),
            Just("1234567890123456789"),
            Just("18446744073709551616"),
            Just("-0"),
            Just("1.50"),
            Just("2e3"),
            Just("-1E-2"),
            Just("true"),
            Just("false"),
            Just("null"),
            Just("{}"),
            Just(r#"{"name":"h"}"#),
            Just("[1,2]"),
        ];
        let ws = prop_oneof![Just(""), Just(" "), Just("\n\t")];
        proptest::collection::vec((key, ws.clone(), value, ws), 0..6).prop_map(|members| {
            let body: Vec<String> = members
                .into_iter()
                .map(|(k, w1, v, w2)| format!("{w1}\"{k}\"{w1}:{w2}{v}{w2}"))
                .collect();
            format!("{{{}}}", body.join(","))
        })
    }

    fn json_object() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC{0,8}".prop_map(Value::String),
        ];
        let value = leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec(("k[0-9]", inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        });
        proptest::collection::vec(("k[0-9]", value), 0..5)
            .prop_map(|kv| Value::Object(kv.into_iter().collect()))
    }
}
