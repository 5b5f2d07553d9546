//! Finding and taking fields of a record: by exact key (`host.name` as one key, as ECS
//! shippers flatten it) or by dotted path into nested objects. Taking a field removes it, so
//! what is left is exactly what goes to `attributes`.

use std::borrow::Cow;

use serde_json::{Map, Value};

/// One top-level field the mapper may take.
#[derive(Debug)]
pub(crate) struct HeldField<'a> {
    pub key: Cow<'a, str>,
    /// `None` once taken.
    pub value: Option<Value>,
    /// Where the field stood in the record's other fields (a byte offset into their text);
    /// `None` for fields added by the mapper, which go last.
    pub at: Option<usize>,
}

/// The top-level fields the mapper may take, in record order. A record has few of them, so
/// a vector searched by key beats a hash map (no hashing, no key allocation).
#[derive(Debug, Default)]
pub(crate) struct Held<'a> {
    pub fields: Vec<HeldField<'a>>,
}

impl<'a> Held<'a> {
    fn position(&self, key: &str) -> Option<usize> {
        self.fields
            .iter()
            .position(|f| f.value.is_some() && f.key == key)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.position(key)
            .and_then(|i| self.fields[i].value.as_ref())
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        let i = self.position(key)?;
        self.fields[i].value.as_mut()
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.position(key)?;
        self.fields[i].value.take()
    }

    /// Sets a field; a key already present keeps its place (a repeated key in a JSON object
    /// means its last value, as for any JSON parser that builds a map).
    pub fn insert(&mut self, key: Cow<'a, str>, value: Value, at: Option<usize>) {
        match self.fields.iter_mut().find(|f| f.key == key) {
            Some(field) => field.value = Some(value),
            None => self.fields.push(HeldField {
                key,
                value: Some(value),
                at,
            }),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.fields.iter().all(|f| f.value.is_none())
    }
}

/// A field by exact key, else by dotted path into nested objects.
pub(crate) fn get_path<'v>(fields: &'v Held<'_>, path: &str) -> Option<&'v Value> {
    if let Some(v) = fields.get(path) {
        return Some(v);
    }
    let (head, rest) = path.split_once('.')?;
    get_nested(fields.get(head)?.as_object()?, rest)
}

fn get_nested<'v>(fields: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    if let Some(v) = fields.get(path) {
        return Some(v);
    }
    let (head, rest) = path.split_once('.')?;
    get_nested(fields.get(head)?.as_object()?, rest)
}

/// Removes a field found as [`get_path`] finds it; emptied parent objects go too.
pub(crate) fn take_path(fields: &mut Held<'_>, path: &str) -> Option<Value> {
    if let Some(v) = fields.remove(path) {
        return Some(v);
    }
    let (head, rest) = path.split_once('.')?;
    let child = fields.get_mut(head)?.as_object_mut()?;
    let taken = take_nested(child, rest)?;
    if child.is_empty() {
        fields.remove(head);
    }
    Some(taken)
}

fn take_nested(fields: &mut Map<String, Value>, path: &str) -> Option<Value> {
    if let Some(v) = fields.shift_remove(path) {
        return Some(v);
    }
    let (head, rest) = path.split_once('.')?;
    let child = fields.get_mut(head)?.as_object_mut()?;
    let taken = take_nested(child, rest)?;
    if child.is_empty() {
        fields.shift_remove(head);
    }
    Some(taken)
}

pub(crate) fn take_first_string(fields: &mut Held<'_>, names: &[String]) -> Option<String> {
    for name in names {
        if let Some(Value::String(s)) = get_path(fields, name) {
            if s.is_empty() {
                continue;
            }
            if let Some(Value::String(s)) = take_path(fields, name) {
                return Some(s);
            }
        }
    }
    None
}

pub(crate) fn take_first_scalar(fields: &mut Held<'_>, names: &[String]) -> Option<String> {
    for name in names {
        match get_path(fields, name) {
            Some(Value::String(_)) => {
                if let Some(Value::String(s)) = take_path(fields, name) {
                    return Some(s);
                }
            }
            Some(v @ (Value::Number(_) | Value::Bool(_))) => {
                let s = v.to_string();
                take_path(fields, name);
                return Some(s);
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flat_key_wins_then_nested_path_and_empty_parents_go() {
        let mut held = Held::default();
        for (k, v) in [
            ("host.name", json!("flat")),
            ("host", json!({"name": "nested", "ip": "1"})),
            ("a", json!({"b": {"c": 1}})),
        ] {
            held.insert(k.into(), v, None);
        }
        assert_eq!(take_path(&mut held, "host.name"), Some(json!("flat")));
        assert_eq!(take_path(&mut held, "host.name"), Some(json!("nested")));
        assert_eq!(take_path(&mut held, "a.b.c"), Some(json!(1)));
        assert_eq!(take_path(&mut held, "a"), None, "emptied parents went");
        assert_eq!(held.get("host"), Some(&json!({"ip": "1"})));
        held.insert("host".into(), json!("again"), None);
        assert_eq!(held.fields.len(), 3, "a key set again keeps its place");
    }
}
