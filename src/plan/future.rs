//! Future references: results known only at execution (an exec's output and
//! code, extracted fields) are strings such as
//! `{{kurtosis:7f3a…:output.runtime_value}}` during interpretation, as in
//! Kurtosis, and are replaced by the real value when a later instruction
//! runs.

use sha2::{Digest as _, Sha256};
use std::collections::HashMap;

const OPEN: &str = "{{kurtosis:";
const CLOSE: &str = ".runtime_value}}";

/// A stable id for the future references of instruction number `n`.
pub fn id_for(n: usize) -> String {
    let h = Sha256::digest(format!("nixoci instruction {n}").as_bytes());
    h.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The reference to `field` of the result `id`.
pub fn reference(id: &str, field: &str) -> String {
    format!("{OPEN}{id}:{field}{CLOSE}")
}

/// Values known so far: (id, field) → value.
#[derive(Debug, Default, Clone)]
pub struct Runtime {
    values: HashMap<(String, String), serde_json::Value>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "{reference} is not known yet: it is the result of an instruction that has not run (or failed)"
)]
pub struct Unresolved {
    pub reference: String,
}

/// The references in `s`: (byte range, id, field).
fn find(s: &str) -> Vec<(std::ops::Range<usize>, &str, &str)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(start) = s[at..].find(OPEN).map(|i| i + at) {
        let body = start + OPEN.len();
        let Some(end) = s[body..].find(CLOSE).map(|i| i + body) else {
            break;
        };
        if let Some((id, field)) = s[body..end].split_once(':') {
            if !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !field.contains('{')
            {
                out.push((start..end + CLOSE.len(), id, field));
            }
        }
        at = end + CLOSE.len();
    }
    out
}

pub fn contains_reference(s: &str) -> bool {
    !find(s).is_empty()
}

impl Runtime {
    pub fn set(&mut self, id: &str, field: &str, value: serde_json::Value) {
        self.values.insert((id.into(), field.into()), value);
    }

    fn get(&self, id: &str, field: &str, whole: &str) -> Result<&serde_json::Value, Unresolved> {
        self.values
            .get(&(id.to_string(), field.to_string()))
            .ok_or_else(|| Unresolved {
                reference: whole.into(),
            })
    }

    /// Replace every reference in `s` by its value as text.
    pub fn resolve_str(&self, s: &str) -> Result<String, Unresolved> {
        let refs = find(s);
        if refs.is_empty() {
            return Ok(s.to_string());
        }
        let mut out = String::with_capacity(s.len());
        let mut at = 0;
        for (range, id, field) in refs {
            out.push_str(&s[at..range.start]);
            match self.get(id, field, &s[range.clone()])? {
                serde_json::Value::String(v) => out.push_str(v),
                other => out.push_str(&other.to_string()),
            }
            at = range.end;
        }
        out.push_str(&s[at..]);
        Ok(out)
    }

    /// Resolve a value: a string that is exactly one reference becomes the
    /// referenced value with its type (so `code` stays a number); other
    /// strings have their references replaced as text; lists and objects
    /// are resolved element by element.
    pub fn resolve(&self, v: &serde_json::Value) -> Result<serde_json::Value, Unresolved> {
        use serde_json::Value as J;
        Ok(match v {
            J::String(s) => {
                let refs = find(s);
                match refs.as_slice() {
                    [(range, id, field)] if range.start == 0 && range.end == s.len() => {
                        self.get(id, field, s)?.clone()
                    }
                    _ => J::String(self.resolve_str(s)?),
                }
            }
            J::Array(a) => J::Array(
                a.iter()
                    .map(|x| self.resolve(x))
                    .collect::<Result<_, _>>()?,
            ),
            J::Object(o) => J::Object(
                o.iter()
                    .map(|(k, x)| Ok((self.resolve_str(k)?, self.resolve(x)?)))
                    .collect::<Result<_, Unresolved>>()?,
            ),
            other => other.clone(),
        })
    }

    pub fn resolve_all(&self, v: &[String]) -> Result<Vec<String>, Unresolved> {
        v.iter().map(|s| self.resolve_str(s)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_reference_keeps_its_type_and_embedded_ones_become_text() {
        let id = id_for(3);
        let mut rt = Runtime::default();
        rt.set(&id, "code", json!(0));
        rt.set(&id, "output", json!("hi\n"));
        let code = reference(&id, "code");
        assert_eq!(rt.resolve(&json!(code)).unwrap(), json!(0));
        let s = format!("code={code} out={}", reference(&id, "output"));
        assert_eq!(rt.resolve_str(&s).unwrap(), "code=0 out=hi\n");
        assert_eq!(
            rt.resolve(&json!([code, {"k": code}])).unwrap(),
            json!([0, {"k": 0}])
        );
    }

    #[test]
    fn unknown_references_are_errors_and_lookalikes_are_text() {
        let rt = Runtime::default();
        let r = reference(&id_for(1), "output");
        assert_eq!(rt.resolve_str(&r).unwrap_err().reference, r);
        for s in [
            "{{kurtosis:",
            "{{kurtosis:x}}",
            "a {{ b }}",
            "{{kurtosis::y.runtime_value}}",
        ] {
            assert_eq!(rt.resolve_str(s).unwrap(), s);
        }
        assert_ne!(id_for(1), id_for(2));
        assert_eq!(id_for(1).len(), 32);
    }
}
