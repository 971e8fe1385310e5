//! `extract` of recipes: jq expressions through jaq (jaq-core, jaq-std,
//! jaq-json). The input is the output or body parsed as JSON, or the text
//! as a JSON string when it is not JSON.

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{data, unwrap_valr, Compiler, Ctx, Vars};
use jaq_json::Val;

type Filter = jaq_core::Filter<data::JustLut<Val>>;

fn compile(expr: &str) -> Result<Filter, String> {
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let funs = jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs());
    let loader = Loader::new(defs);
    let arena = Arena::default();
    let modules = loader
        .load(
            &arena,
            File {
                code: expr,
                path: (),
            },
        )
        .map_err(|errs| {
            format!(
                "'{expr}' is not a jq expression ({} error(s) parsing it)",
                errs.len()
            )
        })?;
    Compiler::default()
        .with_funs(funs)
        .compile(modules)
        .map_err(|errs| {
            let names: Vec<String> = errs
                .into_iter()
                .flat_map(|(_, es)| es.into_iter().map(|(name, _)| name.to_string()))
                .collect();
            format!("'{expr}' does not compile (unknown: {})", names.join(", "))
        })
}

/// Check at interpretation that `expr` compiles.
pub fn check(expr: &str) -> Result<(), String> {
    compile(expr).map(|_| ())
}

/// The first value `expr` gives on `text`.
pub fn extract(expr: &str, text: &str) -> Result<serde_json::Value, String> {
    let filter = compile(expr)?;
    let input = match jaq_json::read::parse_single(text.trim().as_bytes()) {
        Ok(v) if !text.trim().is_empty() => v,
        _ => Val::from(text.to_string()),
    };
    let ctx = Ctx::<data::JustLut<Val>>::new(&filter.lut, Vars::new([]));
    let mut out = filter.id.run((ctx, input)).map(unwrap_valr);
    match out.next() {
        Some(Ok(v)) => {
            let s = v.to_string();
            serde_json::from_str(&s).or(Ok(serde_json::Value::String(s)))
        }
        Some(Err(e)) => Err(format!("'{expr}' failed: {e}")),
        None => Err(format!("'{expr}' gave no value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extracts_from_json_and_text() {
        assert_eq!(extract(".a.b", r#"{"a": {"b": 7}}"#).unwrap(), json!(7));
        assert_eq!(extract(".[1]", "[1, \"x\"]").unwrap(), json!("x"));
        assert_eq!(extract(". | length", "hello").unwrap(), json!(5));
        assert_eq!(
            extract(".name | ascii_upcase", r#"{"name":"web"}"#).unwrap(),
            json!("WEB")
        );
        assert!(check(".a |").is_err());
        assert!(check("nosuchfunction").is_err());
        assert!(extract("error(\"x\")", "1").is_err());
    }
}
