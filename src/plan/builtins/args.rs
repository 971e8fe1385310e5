//! Starlark values to Rust values, each refused with Kurtosis' own words
//! (`Value for 'x' was expected to be a starlark.String but was ...`).

use super::*;

pub(super) fn type_name(v: Value) -> String {
    let t = v.get_type();
    let mut c = t.chars();
    match c.next() {
        Some(f) => format!("starlark.{}{}", f.to_ascii_uppercase(), c.as_str()),
        None => "starlark.Unknown".into(),
    }
}

pub(super) fn string(arg: &str, v: Value) -> anyhow::Result<String> {
    v.unpack_str().map(String::from).ok_or_else(|| {
        anyhow::anyhow!(
            "Value for '{arg}' was expected to be a starlark.String but was '{}'",
            type_name(v)
        )
    })
}

pub(super) fn nonempty(arg: &str, v: Value) -> anyhow::Result<String> {
    let s = string(arg, v)?;
    if s.is_empty() {
        anyhow::bail!("Value for '{arg}' was an empty string. This is disallowed");
    }
    Ok(s)
}

pub(super) fn opt<'v, T>(
    v: Option<Value<'v>>,
    f: impl FnOnce(Value<'v>) -> anyhow::Result<T>,
) -> anyhow::Result<Option<T>> {
    match v {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => f(v).map(Some),
    }
}

pub(super) fn int(arg: &str, v: Value) -> anyhow::Result<i64> {
    if let Some(i) = v.unpack_i32() {
        return Ok(i as i64);
    }
    match v.to_json_value() {
        Ok(serde_json::Value::Number(n)) if n.is_i64() => Ok(n.as_i64().expect("checked")),
        _ => anyhow::bail!(
            "Value for '{arg}' was expected to be a starlark.Int but was '{}'",
            type_name(v)
        ),
    }
}

/// An integer in `lo..=hi` (`unit` names what it counts, for the message).
pub(super) fn ranged(arg: &str, v: Value, lo: u64, hi: u64, unit: &str) -> anyhow::Result<u64> {
    let i = int(arg, v)?;
    match u64::try_from(i) {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => anyhow::bail!("Value for '{arg}' is {i}, outside {lo}..={hi} ({unit})"),
    }
}

pub(super) fn items<'v>(arg: &str, v: Value<'v>) -> anyhow::Result<Vec<Value<'v>>> {
    if let Some(l) = ListRef::from_value(v) {
        return Ok(l.content().to_vec());
    }
    if let Some(t) = TupleRef::from_value(v) {
        return Ok(t.content().to_vec());
    }
    anyhow::bail!(
        "Value for '{arg}' was expected to be a starlark.List but was '{}'",
        type_name(v)
    )
}

pub(super) fn string_list(arg: &str, v: Value) -> anyhow::Result<Vec<String>> {
    items(arg, v)?
        .into_iter()
        .enumerate()
        .map(|(i, x)| string(&format!("{arg}[{i}]"), x))
        .collect()
}

pub(super) fn entries<'v>(arg: &str, v: Value<'v>) -> anyhow::Result<Vec<(String, Value<'v>)>> {
    let d = DictRef::from_value(v).ok_or_else(|| {
        anyhow::anyhow!(
            "Value for '{arg}' was expected to be a starlark.Dict but was '{}'",
            type_name(v)
        )
    })?;
    d.iter()
        .map(|(k, x)| Ok((string(&format!("key of {arg}"), k)?, x)))
        .collect()
}

pub(super) fn string_dict(arg: &str, v: Value) -> anyhow::Result<BTreeMap<String, String>> {
    entries(arg, v)?
        .into_iter()
        .map(|(k, x)| {
            let s = string(&format!("{arg}[{k:?}]"), x)?;
            Ok((k, s))
        })
        .collect()
}

pub(super) fn json(arg: &str, v: Value) -> anyhow::Result<serde_json::Value> {
    v.to_json_value()
        .map_err(|e| anyhow::anyhow!("Value for '{arg}' cannot be used as data: {e}"))
}

pub(super) fn downcast<'v, T: starlark::values::StarlarkValue<'v> + Clone>(
    arg: &str,
    want: &str,
    v: Value<'v>,
) -> anyhow::Result<T> {
    v.downcast_ref::<T>().cloned().ok_or_else(|| {
        anyhow::anyhow!(
            "Value for '{arg}' was expected to be a {want} but was '{}'",
            type_name(v)
        )
    })
}

pub(super) fn duration(arg: &str, s: &str) -> anyhow::Result<crate::plan::duration::GoDuration> {
    crate::plan::duration::GoDuration::parse(s)
        .map_err(|e| anyhow::anyhow!("Value for '{arg}': {e}"))
}

/// `acceptable_codes`, else `default`.
pub(super) fn codes(v: Option<Value>, default: &[i64]) -> anyhow::Result<Vec<i64>> {
    Ok(opt(v, |v| {
        items("acceptable_codes", v)?
            .into_iter()
            .enumerate()
            .map(|(i, x)| int(&format!("acceptable_codes[{i}]"), x))
            .collect::<anyhow::Result<Vec<i64>>>()
    })?
    .unwrap_or_else(|| default.to_vec()))
}

pub(super) fn extract_map(v: Option<Value>) -> anyhow::Result<BTreeMap<String, String>> {
    let extract = opt(v, |v| string_dict("extract", v))?.unwrap_or_default();
    for (k, expr) in &extract {
        crate::plan::jq::check(expr).map_err(|e| anyhow::anyhow!("extract '{k}': {e}"))?;
    }
    Ok(extract)
}

pub(super) fn assertion(v: Value) -> anyhow::Result<Assertion> {
    let s = string("assertion", v)?;
    Assertion::parse(&s)
        .ok_or_else(|| anyhow::anyhow!("assertion '{s}' is not one of {}", Assertion::ALL))
}
