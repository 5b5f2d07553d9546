//! The common record, scanned without serde's machinery: a flat object whose keys have no
//! escapes and whose values are strings, numbers, `true`, `false` or `null`.
//!
//! It walks the bytes once, takes the wanted fields as values and copies every other value
//! as it stands. Anything else — a nested object or array, an escaped key, a malformed byte
//! anywhere — returns `None`, and the record takes the serde_json scan, which reads every
//! shape and words every error. A scalar the walk does not read itself (a float, a `\u`
//! escape, an integer past 18 digits) is handed to serde_json alone. So the result is the
//! serde_json scan's, byte for byte, for every record this path accepts (a property test
//! compares the two on valid and on mangled records).

use std::borrow::Cow;

use serde::Deserialize as _;
use serde_json::value::RawValue;

use super::print::{write_other, write_plain_key};
use super::{Fields, Wanted};
use crate::val::Val;

/// Scans `text` as [`Fields::scan`] would, or returns `None` to leave it to that scan.
pub(super) fn scan<'a>(text: &'a str, wanted: &Wanted) -> Option<Fields<'a>> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    let mut fields = Fields::empty_for(text);
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let (end, Escapes::None) = string_end(b, i + 1)? else {
                return None; // an escaped key: the serde_json scan unescapes it
            };
            let key = &text[i + 1..end];
            i = skip_ws(b, end + 1);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = skip_ws(b, i + 1);
            if let Some(slot) = wanted.slot(key) {
                let (value, next) = wanted_value(text, i)?;
                let at = Some(fields.rest.len());
                fields
                    .held
                    .insert(Some(slot), Cow::Borrowed(key), value, at);
                i = next;
            } else {
                write_plain_key(&mut fields.rest, key);
                i = other_value(text, i, &mut fields.rest)?;
            }
            i = skip_ws(b, i);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_ws(b, i) == b.len()).then_some(fields)
}

/// What a string holds between its quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escapes {
    None,
    /// Only `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`: serde_json prints them as they stand.
    /// The first one's offset in the string's text.
    Simple(usize),
    /// Also `\/` or `\u`, which serde_json prints otherwise (`/`, the character itself).
    Other,
}

/// The index of the closing quote of the string whose content starts at `start`, and its
/// escapes; `None` when the string is not valid JSON (unterminated, a control character, an
/// unknown escape).
#[inline(always)]
fn string_end(b: &[u8], start: usize) -> Option<(usize, Escapes)> {
    let mut escapes = Escapes::None;
    let mut i = start;
    loop {
        // Eight bytes at a time (as serde_json skips strings), to the first byte that stops
        // the scan; byte by byte in the last few bytes of the record. Past the first eight,
        // a long string is skipped 32 bytes at a time to the block that holds the stop.
        let mut skipped = false;
        loop {
            match b.get(i..).and_then(<[u8]>::first_chunk::<8>) {
                Some(chunk) => {
                    let stops = stops(u64::from_le_bytes(*chunk));
                    if stops != 0 {
                        i += (stops.trailing_zeros() / 8) as usize;
                        break;
                    }
                    i += 8;
                    if !skipped {
                        skipped = true;
                        while let Some(block) = b.get(i..).and_then(<[u8]>::first_chunk::<32>) {
                            if any_stop(block) {
                                break;
                            }
                            i += 32;
                        }
                    }
                }
                None => {
                    while !is_stop(*b.get(i)?) {
                        i += 1;
                    }
                    break;
                }
            }
        }
        match b[i] {
            b'"' => return Some((i, escapes)),
            b'\\' => {
                match b.get(i + 1)? {
                    b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => {
                        if escapes == Escapes::None {
                            escapes = Escapes::Simple(i - start);
                        }
                    }
                    b'/' | b'u' => escapes = Escapes::Other,
                    _ => return None,
                }
                i += 2;
            }
            _ => return None, // a control character
        }
    }
}

/// A quote, a backslash or a control character.
fn is_stop(c: u8) -> bool {
    c == b'"' || c == b'\\' || c < 0x20
}

/// True when one of the 32 bytes [`is_stop`]: a fold without early exit, which LLVM
/// compiles to a few vector compares (SSE2, x86-64's baseline) instead of 32 byte compares.
fn any_stop(block: &[u8; 32]) -> bool {
    block.iter().fold(0u8, |any, &c| {
        any | u8::from((c == b'"') | (c == b'\\') | (c < 0x20))
    }) != 0
}

/// The high bit of each of the eight bytes of `word` (little-endian) that [`is_stop`], with
/// the bit trick serde_json uses; bits above the lowest may be wrong, the lowest is exact.
fn stops(word: u64) -> u64 {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    let zero_in = |w: u64| w.wrapping_sub(ONES) & !w;
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = zero_in(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_in(word ^ (ONES * u64::from(b'\\')));
    (control | quote | backslash) & HIGH
}

/// The value at `i` of a wanted field, and the index after it.
fn wanted_value(text: &str, i: usize) -> Option<(Val<'_>, usize)> {
    let b = text.as_bytes();
    match *b.get(i)? {
        b'"' => {
            let (end, escapes) = string_end(b, i + 1)?;
            let raw = &text[i + 1..end];
            let value = match escapes {
                Escapes::None => Cow::Borrowed(raw),
                Escapes::Simple(first) => Cow::Owned(unescape_simple(raw, first)),
                Escapes::Other => return delegated_value(text, i),
            };
            Some((Val::Str(value), end + 1))
        }
        b'-' | b'0'..=b'9' => match number(b, i)? {
            Number::Integer(value, end) => Some((value, end)),
            Number::Other => delegated_value(text, i),
        },
        _ => literal(b, i),
    }
}

/// Copies the value at `i` of another field to `out` as serde_json prints it; returns the
/// index after it.
fn other_value(text: &str, i: usize, out: &mut String) -> Option<usize> {
    let b = text.as_bytes();
    let end = match *b.get(i)? {
        b'"' => match string_end(b, i + 1)? {
            (end, Escapes::None | Escapes::Simple(_)) => end + 1,
            (_, Escapes::Other) => return delegated_other(text, i, out),
        },
        b'-' | b'0'..=b'9' => match number(b, i)? {
            Number::Integer(_, end) => end,
            Number::Other => return delegated_other(text, i, out),
        },
        _ => literal(b, i)?.1,
    };
    out.push_str(&text[i..end]);
    Some(end)
}

/// A scalar the walk does not read itself, read by serde_json alone.
fn delegated_value(text: &str, i: usize) -> Option<(Val<'_>, usize)> {
    let raw = scalar(text, i)?;
    let value = serde_json::from_str(raw.get()).ok()?;
    Some((value, i + raw.get().len()))
}

fn delegated_other(text: &str, i: usize, out: &mut String) -> Option<usize> {
    let raw = scalar(text, i)?;
    write_other(out, raw.get()).ok()?;
    Some(i + raw.get().len())
}

/// The raw text of the scalar at `i` (objects and arrays are the serde_json scan's: its
/// nesting limit counts from the record's top).
fn scalar(text: &str, i: usize) -> Option<&RawValue> {
    let mut de = serde_json::Deserializer::from_str(&text[i..]);
    let raw = <&RawValue>::deserialize(&mut de).ok()?;
    (!raw.get().starts_with(['{', '['])).then_some(raw)
}

/// A number as the walk reads it.
enum Number {
    /// An integer of at most 18 digits, not `-0` (serde_json reads and prints those
    /// unchanged), and the index after it.
    Integer(Val<'static>, usize),
    /// Any other number: a fraction, an exponent, `-0`, more digits. Delegated.
    Other,
}

/// The number at `i`; `None` when it is not valid JSON.
fn number(b: &[u8], i: usize) -> Option<Number> {
    let negative = b[i] == b'-';
    let first = i + usize::from(negative);
    let mut end = first;
    while b.get(end).is_some_and(u8::is_ascii_digit) {
        end += 1;
    }
    let digits = end - first;
    if digits == 0 || (b[first] == b'0' && digits > 1) {
        return None; // no digits, or a leading zero
    }
    if digits > 18
        || (negative && b[first] == b'0')
        || matches!(b.get(end), Some(b'.' | b'e' | b'E'))
    {
        return Some(Number::Other);
    }
    if !ends_value(b, end) {
        return None;
    }
    // At most 18 digits: no overflow.
    let magnitude = b[first..end]
        .iter()
        .fold(0u64, |n, &c| n * 10 + u64::from(c - b'0'));
    let value = if negative {
        Val::Number((-(magnitude as i64)).into())
    } else {
        Val::Number(magnitude.into())
    };
    Some(Number::Integer(value, end))
}

/// `true`, `false` or `null` at `i`.
fn literal(b: &[u8], i: usize) -> Option<(Val<'static>, usize)> {
    let rest = &b[i..];
    let (value, len) = if rest.starts_with(b"true") {
        (Val::Bool(true), 4)
    } else if rest.starts_with(b"false") {
        (Val::Bool(false), 5)
    } else if rest.starts_with(b"null") {
        (Val::Null, 4)
    } else {
        return None;
    };
    ends_value(b, i + len).then_some((value, i + len))
}

/// True when a scalar may end at `i`: what follows is whitespace, `,`, `}` or the end.
fn ends_value(b: &[u8], i: usize) -> bool {
    matches!(
        b.get(i),
        None | Some(b' ' | b'\t' | b'\n' | b'\r' | b',' | b'}')
    )
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The text of a string holding only the escapes of [`Escapes::Simple`], the first at
/// `first`: the scan found it, so a message that ends in an escaped `\r` or `\n`, as many
/// log lines do, is not searched again.
fn unescape_simple(raw: &str, first: usize) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    let mut next = Some(first);
    while let Some(at) = next {
        out.push_str(&rest[..at]);
        // Checked by `string_end`: an ASCII letter, quote or backslash follows.
        let c = rest.as_bytes()[at + 1];
        out.push(match c {
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            _ => char::from(c), // `"` or `\`
        });
        rest = &rest[at + 2..];
        next = memchr::memchr(b'\\', rest.as_bytes());
    }
    out.push_str(rest);
    out
}
