//! A JSON value whose strings borrow from the record when they can: the fields a row takes
//! (message, host, level, typed string columns) reach the Arrow builders without an
//! allocation and a copy of their own per record. Strings with escapes are owned.
//!
//! Printed (for `attributes` and in rejection details) exactly as `serde_json` prints the
//! same record parsed into a `serde_json::Value` with `preserve_order`: an object keeps its
//! keys in record order, and a repeated key keeps its first place and its last value.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Number;

/// The members of an object, in record order, keys unique.
pub type Object<'a> = Vec<(Cow<'a, str>, Val<'a>)>;

/// A parsed JSON value, borrowing unescaped strings from the text it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    Null,
    Bool(bool),
    Number(Number),
    Str(Cow<'a, str>),
    Array(Vec<Val<'a>>),
    Object(Object<'a>),
}

impl<'a> Val<'a> {
    pub fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Self::Object(members) => Some(members),
            _ => None,
        }
    }

    pub fn as_object_mut(&mut self) -> Option<&mut Object<'a>> {
        match self {
            Self::Object(members) => Some(members),
            _ => None,
        }
    }

    /// The JSON text of the value, compact.
    pub fn to_json(&self) -> String {
        // Serialising a value with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The member `key` of an object.
pub fn member<'v, 'a>(members: &'v Object<'a>, key: &str) -> Option<&'v Val<'a>> {
    members.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

pub fn member_mut<'v, 'a>(members: &'v mut Object<'a>, key: &str) -> Option<&'v mut Val<'a>> {
    members.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Removes the member `key`, keeping the others in order.
pub fn remove_member<'a>(members: &mut Object<'a>, key: &str) -> Option<Val<'a>> {
    let at = members.iter().position(|(k, _)| k == key)?;
    Some(members.remove(at).1)
}

impl<'de> Deserialize<'de> for Val<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValVisitor)
    }
}

struct ValVisitor;

impl<'de> Visitor<'de> for ValVisitor {
    type Value = Val<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Val<'de>, E> {
        Ok(Val::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Val<'de>, E> {
        Ok(Val::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Val<'de>, E> {
        Ok(Val::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Val<'de>, E> {
        // As serde_json's own `Value`: a float it cannot hold is null.
        Ok(Number::from_f64(v).map_or(Val::Null, Val::Number))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Owned(v.to_string())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Owned(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Val<'de>, E> {
        Ok(Val::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Val<'de>, E> {
        Ok(Val::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Val<'de>, D::Error> {
        Val::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Val<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Val::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Val<'de>, A::Error> {
        let mut members: Object<'de> = Vec::new();
        while let Some(key) = map.next_key_seed(Key)? {
            let value: Val<'de> = map.next_value()?;
            match member_mut(&mut members, &key) {
                Some(slot) => *slot = value,
                None => members.push((key, value)),
            }
        }
        Ok(Val::Object(members))
    }
}

/// An object key, borrowed from the record unless it had escapes.
pub(crate) struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

impl Serialize for Val<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => s.serialize_unit(),
            Self::Bool(b) => s.serialize_bool(*b),
            Self::Number(n) => n.serialize(s),
            Self::Str(text) => s.serialize_str(text),
            Self::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Self::Object(members) => {
                let mut map = s.serialize_map(Some(members.len()))?;
                for (key, value) in members {
                    map.serialize_entry(key.as_ref(), value)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn unescaped_strings_are_borrowed_escaped_ones_owned() {
        let text = r#"{"a":"plain","b":"tab\there","c":["x",{"d":"y"}]}"#;
        let v: Val = serde_json::from_str(text).unwrap();
        let members = v.as_object().unwrap();
        assert!(matches!(
            member(members, "a"),
            Some(Val::Str(Cow::Borrowed("plain")))
        ));
        assert!(matches!(member(members, "b"), Some(Val::Str(Cow::Owned(s))) if s == "tab\there"));
        assert_eq!(v.to_json(), text);
    }

    #[test]
    fn a_repeated_key_keeps_its_place_and_its_last_value() {
        let text = r#"{"a":1,"b":2,"a":3}"#;
        let v: Val = serde_json::from_str(text).unwrap();
        assert_eq!(
            v.to_json(),
            serde_json::from_str::<Value>(text).unwrap().to_string()
        );
        assert_eq!(v.to_json(), r#"{"a":3,"b":2}"#);
    }

    proptest::proptest! {
        #[test]
        fn prints_as_serde_json_prints_the_same_text(text in json_text()) {
            let ours = serde_json::from_str::<Val>(&text).map(|v| v.to_json()).ok();
            let theirs = serde_json::from_str::<Value>(&text).map(|v| v.to_string()).ok();
            proptest::prop_assert_eq!(ours, theirs);
        }
    }

    /// JSON-ish text: valid documents of every kind, and some broken ones.
    fn json_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| format!("{f:e}")),
            Just("1e400".to_string()),
            Just("-0.0".to_string()),
            "\\PC{0,6}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            Just(r#""\u00e9\n\"\ud83d\ude00""#.to_string()),
            Just("[1,".to_string()),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|items| format!("[{}]", items.join(" , "))),
                proptest::collection::vec(("k[0-2]", inner), 0..4).prop_map(|kv| {
                    let members: Vec<String> = kv
                        .into_iter()
                        .map(|(k, v)| format!("\"{k}\": {v}"))
                        .collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }
}
