//! Finding and taking fields of a JSON object: by exact key (`host.name` as one key, as ECS
//! shippers flatten it) or by dotted path into nested objects. Taking a field removes it, so
//! what is left is exactly what goes to `attributes`.

use serde_json::{Map, Value};

/// A field by exact key, else by dotted path into nested objects.
pub(crate) fn get_path<'a>(fields: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = fields.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut current = fields.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// Removes a field found as [`get_path`] finds it; emptied parent objects go too.
pub(crate) fn take_path(fields: &mut Map<String, Value>, path: &str) -> Option<Value> {
    if let Some(v) = fields.remove(path) {
        return Some(v);
    }
    let (head, rest) = path.split_once('.')?;
    let child = fields.get_mut(head)?.as_object_mut()?;
    let taken = take_path(child, rest)?;
    if child.is_empty() {
        fields.remove(head);
    }
    Some(taken)
}

pub(crate) fn take_first_string(
    fields: &mut Map<String, Value>,
    names: &[String],
) -> Option<String> {
    for name in names {
        if let Some(Value::String(s)) = get_path(fields, name) {
            if s.is_empty() {
                continue;
            }
            let s = s.clone();
            take_path(fields, name);
            return Some(s);
        }
    }
    None
}

pub(crate) fn take_first_scalar(
    fields: &mut Map<String, Value>,
    names: &[String],
) -> Option<String> {
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
        let mut m =
            json!({"host.name": "flat", "host": {"name": "nested", "ip": "1"}, "a": {"b": 1}})
                .as_object()
                .unwrap()
                .clone();
        assert_eq!(take_path(&mut m, "host.name"), Some(json!("flat")));
        assert_eq!(take_path(&mut m, "host.name"), Some(json!("nested")));
        assert_eq!(take_path(&mut m, "a.b"), Some(json!(1)));
        assert_eq!(Value::Object(m), json!({"host": {"ip": "1"}}));
    }
}
