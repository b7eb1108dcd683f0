//! Mutations of a seed file, drawn (and shrunk) by proptest.

use proptest::prelude::*;
use serde_json::Value;

/// Text that readers find hard.
const SPLICES: &[&[u8]] = &[
    b"99999999999999999999999999",
    b"-1",
    b"1e308",
    b"NaN",
    b"18446744073709551616",
    b"\xff\xfe\xc3\x28",
    b"\"",
    b"\n",
    b",,,,",
    b"\x00",
    b"\\u0000",
    b"\r\n",
];

/// One change to a file. Positions are fractions of the length (in 1/65536), so that a
/// mutation means the same on any seed and shrinks toward the start.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Flip one bit.
    Flip { at: u16, bit: u8 },
    /// Cut the file.
    Truncate { at: u16 },
    /// Insert bytes.
    Insert { at: u16, bytes: Vec<u8> },
    /// Insert a hard string (huge numbers, invalid UTF-8, quotes, NUL).
    Splice { at: u16, which: usize },
    /// Copy a span elsewhere.
    Duplicate { from: u16, len: u16, to: u16 },
    /// Nest `depth` arrays or objects at a point.
    Nest { at: u16, depth: u16, object: bool },
    /// JSON only: replace a value (chosen in document order) by another type or size.
    Retype { node: u16, with: u8 },
    /// Binary only: overwrite 8 bytes with a gigantic little-endian number (a declared size).
    HugeSize { at: u16 },
}

pub fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one =
        prop_oneof![
            (any::<u16>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
            any::<u16>().prop_map(|at| Mutation::Truncate { at }),
            (any::<u16>(), prop::collection::vec(any::<u8>(), 1..16))
                .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
            (any::<u16>(), 0..SPLICES.len()).prop_map(|(at, which)| Mutation::Splice { at, which }),
            (any::<u16>(), any::<u16>(), any::<u16>())
                .prop_map(|(from, len, to)| Mutation::Duplicate { from, len, to }),
            (any::<u16>(), 1u16..5000, any::<bool>())
                .prop_map(|(at, depth, object)| Mutation::Nest { at, depth, object }),
            (any::<u16>(), 0u8..8).prop_map(|(node, with)| Mutation::Retype { node, with }),
            any::<u16>().prop_map(|at| Mutation::HugeSize { at }),
        ];
    prop::collection::vec(one, 1..5)
}

fn pos(at: u16, len: usize) -> usize {
    (at as usize * (len + 1)) >> 16
}

/// The seed with the mutations applied in order. `json`: the seed is one JSON document (or one
/// per line), which `Retype` edits structurally.
pub fn apply(seed: &[u8], muts: &[Mutation], json: bool) -> Vec<u8> {
    let mut b = seed.to_vec();
    for m in muts {
        match m {
            Mutation::Flip { at, bit } if !b.is_empty() => {
                let i = pos(*at, b.len() - 1);
                b[i] ^= 1 << bit;
            }
            Mutation::Truncate { at } => b.truncate(pos(*at, b.len())),
            Mutation::Insert { at, bytes } => {
                let i = pos(*at, b.len());
                b.splice(i..i, bytes.iter().copied());
            }
            Mutation::Splice { at, which } => {
                let i = pos(*at, b.len());
                b.splice(i..i, SPLICES[*which].iter().copied());
            }
            Mutation::Duplicate { from, len, to } if !b.is_empty() => {
                let s = pos(*from, b.len() - 1);
                let e = (s + 1 + pos(*len, 4096)).min(b.len());
                let span = b[s..e].to_vec();
                let t = pos(*to, b.len());
                b.splice(t..t, span);
            }
            Mutation::Nest { at, depth, object } => {
                let i = pos(*at, b.len());
                let open: &[u8] = if *object { b"{\"a\":" } else { b"[" };
                let nest: Vec<u8> = open.repeat(*depth as usize);
                b.splice(i..i, nest);
            }
            Mutation::Retype { node, with } if json => b = retype(&b, *node, *with),
            Mutation::HugeSize { at } if !json && b.len() >= 8 => {
                let i = pos(*at, b.len() - 8);
                let huge = [u64::MAX, 1 << 40, u32::MAX as u64, 1 << 62][*at as usize % 4];
                b[i..i + 8].copy_from_slice(&huge.to_le_bytes());
            }
            _ => {}
        }
    }
    b
}

/// Replaces the `node`-th value of the JSON document (or of one line of JSONL) by another.
fn retype(b: &[u8], node: u16, with: u8) -> Vec<u8> {
    let text = String::from_utf8_lossy(b);
    let lines: Vec<&str> = text.lines().collect();
    let (whole, line) = match serde_json::from_str::<Value>(&text) {
        Ok(v) => (Some(v), None),
        Err(_) if lines.len() > 1 => {
            let i = node as usize % lines.len();
            match serde_json::from_str::<Value>(lines[i]) {
                Ok(v) => (Some(v), Some(i)),
                Err(_) => (None, None),
            }
        }
        Err(_) => (None, None),
    };
    let Some(mut v) = whole else {
        return b.to_vec();
    };
    let count = count_nodes(&v);
    let mut k = node as usize % count.max(1);
    replace_nth(&mut v, &mut k, with);
    let out = serde_json::to_string(&v).unwrap();
    match line {
        None => out.into_bytes(),
        Some(i) => {
            let mut lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            lines[i] = out;
            lines.join("\n").into_bytes()
        }
    }
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count_nodes).sum(),
        Value::Object(o) => o.values().map(count_nodes).sum(),
        _ => 0,
    }
}

fn replacement(old: &Value, with: u8) -> Value {
    match with {
        0 => Value::Null,
        1 => Value::from(u64::MAX),
        2 => Value::from(-1),
        3 => Value::from(1e300),
        4 => Value::from("x"),
        5 => Value::Array(vec![old.clone(), old.clone()]),
        6 => serde_json::json!({"k": old.clone()}),
        _ => Value::from(true),
    }
}

fn replace_nth(v: &mut Value, k: &mut usize, with: u8) -> bool {
    if *k == 0 {
        *v = replacement(v, with);
        return true;
    }
    *k -= 1;
    match v {
        Value::Array(a) => a.iter_mut().any(|x| replace_nth(x, k, with)),
        Value::Object(o) => o.values_mut().any(|x| replace_nth(x, k, with)),
        _ => false,
    }
}
