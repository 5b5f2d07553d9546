//! Finding and taking fields of a record: by exact key (`host.name` as one key, as ECS
//! shippers flatten it) or by dotted path into nested objects. Taking a field removes it, so
//! what is left is exactly what goes to `attributes`.
//!
//! Top-level fields are found by slot, not by name: every name the mapper may look up has a
//! slot in [`Wanted`](crate::scan::Wanted), given when the mapper is built, and the scan
//! tags each field it holds with its key's slot. Finding a field is then an integer compare
//! over the few held fields, however many names a schema tries.

use std::borrow::Cow;

use crate::scan::Wanted;
use crate::val::{member, member_mut, remove_member, Object, Val};

/// One top-level field the mapper may take.
#[derive(Debug)]
pub(crate) struct HeldField<'a> {
    pub key: Cow<'a, str>,
    /// The key's slot in [`Wanted`]; `None` for a field no configured name refers to (a
    /// pattern's capture that is not a column), which only goes to `attributes`.
    pub slot: Option<usize>,
    /// `None` once taken.
    pub value: Option<Val<'a>>,
    /// Where the field stood in the record's other fields (a byte offset into their text);
    /// `None` for fields added by the mapper, which go last.
    pub at: Option<usize>,
}

/// The top-level fields the mapper may take, in record order. A record has few of them, so
/// a vector searched by slot beats a hash map (no hashing, no key allocation).
#[derive(Debug, Default)]
pub(crate) struct Held<'a> {
    pub fields: Vec<HeldField<'a>>,
}

impl<'a> Held<'a> {
    fn position(&self, slot: usize) -> Option<usize> {
        self.fields
            .iter()
            .position(|f| f.slot == Some(slot) && f.value.is_some())
    }

    pub fn get(&self, slot: usize) -> Option<&Val<'a>> {
        self.position(slot)
            .and_then(|i| self.fields[i].value.as_ref())
    }

    fn get_mut(&mut self, slot: usize) -> Option<&mut Val<'a>> {
        let i = self.position(slot)?;
        self.fields[i].value.as_mut()
    }

    pub fn remove(&mut self, slot: usize) -> Option<Val<'a>> {
        let i = self.position(slot)?;
        self.fields[i].value.take()
    }

    /// Sets a field; a key already present keeps its place (a repeated key in a JSON object
    /// means its last value, as for any JSON parser that builds a map). Keys without a slot
    /// are unique by construction (a pattern's capture names).
    pub fn insert(
        &mut self,
        slot: Option<usize>,
        key: Cow<'a, str>,
        value: Val<'a>,
        at: Option<usize>,
    ) {
        let existing = slot.and_then(|s| self.fields.iter_mut().find(|f| f.slot == Some(s)));
        match existing {
            Some(field) => field.value = Some(value),
            None => self.fields.push(HeldField {
                key,
                slot,
                value: Some(value),
                at,
            }),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.fields.iter().all(|f| f.value.is_none())
    }
}

/// A configured field name (`timestamp`, `host.name`), resolved against [`Wanted`] once.
#[derive(Debug, Clone)]
pub(crate) struct FieldPath {
    /// The slot of the whole name as one flat key.
    flat: usize,
    /// For a dotted name: the slot of its first segment, and the path below it.
    nested: Option<(usize, String)>,
}

impl FieldPath {
    /// Resolves `name`, adding it (and for a dotted name its first segment) to `wanted`.
    pub fn new(wanted: &mut Wanted, name: &str) -> Self {
        Self {
            flat: wanted.add(name),
            nested: name
                .split_once('.')
                .map(|(head, rest)| (wanted.add(head), rest.to_string())),
        }
    }

    pub fn many(wanted: &mut Wanted, names: &[String]) -> Vec<Self> {
        names.iter().map(|n| Self::new(wanted, n)).collect()
    }
}

/// A field by exact key, else by dotted path into nested objects.
pub(crate) fn get_path<'v, 'a>(fields: &'v Held<'a>, path: &FieldPath) -> Option<&'v Val<'a>> {
    if let Some(v) = fields.get(path.flat) {
        return Some(v);
    }
    let (head, rest) = path.nested.as_ref()?;
    get_nested(fields.get(*head)?.as_object()?, rest)
}

fn get_nested<'v, 'a>(fields: &'v Object<'a>, path: &str) -> Option<&'v Val<'a>> {
    if let Some(v) = member(fields, path) {
        return Some(v);
    }
    let (head, rest) = path.split_once('.')?;
    get_nested(member(fields, head)?.as_object()?, rest)
}

/// Removes a field found as [`get_path`] finds it; emptied parent objects go too.
pub(crate) fn take_path<'a>(fields: &mut Held<'a>, path: &FieldPath) -> Option<Val<'a>> {
    if let Some(v) = fields.remove(path.flat) {
        return Some(v);
    }
    let (head, rest) = path.nested.as_ref()?;
    let child = fields.get_mut(*head)?.as_object_mut()?;
    let taken = take_nested(child, rest)?;
    if child.is_empty() {
        fields.remove(*head);
    }
    Some(taken)
}

fn take_nested<'a>(fields: &mut Object<'a>, path: &str) -> Option<Val<'a>> {
    if let Some(v) = remove_member(fields, path) {
        return Some(v);
    }
    let (head, rest) = path.split_once('.')?;
    let child = member_mut(fields, head)?.as_object_mut()?;
    let taken = take_nested(child, rest)?;
    if child.is_empty() {
        remove_member(fields, head);
    }
    Some(taken)
}

pub(crate) fn take_first_string<'a>(
    fields: &mut Held<'a>,
    names: &[FieldPath],
) -> Option<Cow<'a, str>> {
    for name in names {
        if let Some(Val::Str(s)) = get_path(fields, name) {
            if s.is_empty() {
                continue;
            }
            if let Some(Val::Str(s)) = take_path(fields, name) {
                return Some(s);
            }
        }
    }
    None
}

pub(crate) fn take_first_scalar<'a>(
    fields: &mut Held<'a>,
    names: &[FieldPath],
) -> Option<Cow<'a, str>> {
    for name in names {
        match get_path(fields, name) {
            Some(Val::Str(_)) => {
                if let Some(Val::Str(s)) = take_path(fields, name) {
                    return Some(s);
                }
            }
            Some(v @ (Val::Number(_) | Val::Bool(_))) => {
                let s = v.to_json();
                take_path(fields, name);
                return Some(Cow::Owned(s));
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(text: &str) -> Val<'_> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn flat_key_wins_then_nested_path_and_empty_parents_go() {
        let mut wanted = Wanted::default();
        let host_name = FieldPath::new(&mut wanted, "host.name");
        let abc = FieldPath::new(&mut wanted, "a.b.c");
        let a = FieldPath::new(&mut wanted, "a");
        let mut held = Held::default();
        for (k, v) in [
            ("host.name", r#""flat""#),
            ("host", r#"{"name": "nested", "ip": "1"}"#),
            ("a", r#"{"b": {"c": 1}}"#),
        ] {
            held.insert(wanted.slot(k), k.into(), val(v), None);
        }
        assert_eq!(take_path(&mut held, &host_name), Some(val(r#""flat""#)));
        assert_eq!(take_path(&mut held, &host_name), Some(val(r#""nested""#)));
        assert_eq!(take_path(&mut held, &abc), Some(val("1")));
        assert_eq!(take_path(&mut held, &a), None, "emptied parents went");
        let host = wanted.slot("host").unwrap();
        assert_eq!(held.get(host), Some(&val(r#"{"ip": "1"}"#)));
        held.insert(Some(host), "host".into(), val(r#""again""#), None);
        assert_eq!(held.fields.len(), 3, "a key set again keeps its place");
    }
}
