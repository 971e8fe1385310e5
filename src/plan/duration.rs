//! Go-style durations as Kurtosis takes them (`300ms`, `15s`, `2m`,
//! `1h30m`, `1.5s`), held typed in the plan: parsed once, when the package
//! is interpreted, and never again.

use std::fmt;
use std::time::Duration;

/// The longest duration accepted: Go's own limit (about 292 years).
pub const MAX: Duration = Duration::from_nanos(i64::MAX as u64);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("'{0}' is not a duration such as \"500ms\", \"15s\", \"2m\" or \"1h30m\"")]
    Shape(String),
    #[error("'{0}' is longer than a duration can be (at most 2562047h47m16s, about 292 years)")]
    TooLong(String),
}

/// A duration with the text it was written as (kept for messages and the
/// plan's JSON, which show what the package said).
#[derive(Clone, PartialEq, Eq)]
pub struct GoDuration {
    text: String,
    value: Duration,
}

impl GoDuration {
    pub fn parse(s: &str) -> Result<Self, DurationError> {
        Ok(GoDuration {
            text: s.to_string(),
            value: parse(s)?,
        })
    }

    pub fn get(&self) -> Duration {
        self.value
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({:?})", self.text, self.value)
    }
}

impl serde::Serialize for GoDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        GoDuration::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Parse a Go-style duration, refusing anything past [`MAX`].
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    let shape = || DurationError::Shape(s.to_string());
    let rest = s.trim();
    if rest.is_empty() {
        return Err(shape());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = rest;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..n];
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit: u128 = match &rest[..u] {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(shape()),
        };
        rest = &rest[u..];
        total = total
            .checked_add(
                amount(number, nanos_per_unit)
                    .ok_or_else(shape)?
                    .ok_or_else(|| DurationError::TooLong(s.to_string()))?,
            )
            .filter(|t| *t <= MAX)
            .ok_or_else(|| DurationError::TooLong(s.to_string()))?;
    }
    Ok(total)
}

/// `number` (digits, at most one '.') times a unit, exactly in
/// nanoseconds: None if the number is malformed, Some(None) if too large.
fn amount(number: &str, nanos_per_unit: u128) -> Option<Option<Duration>> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return None;
    }
    let digits_ok = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if !digits_ok(int) || !digits_ok(frac) {
        return None;
    }
    let too_long = Some(None);
    // More than 30 integer digits cannot fit in any case.
    if int.trim_start_matches('0').len() > 30 {
        return too_long;
    }
    let int_value: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let Some(mut nanos) = int_value.checked_mul(nanos_per_unit) else {
        return too_long;
    };
    // Fractions below a nanosecond are dropped, as Go does.
    let mut scale = nanos_per_unit;
    for b in frac.bytes().take(30) {
        scale /= 10;
        nanos += u128::from(b - b'0') * scale;
    }
    if nanos > MAX.as_nanos() {
        return too_long;
    }
    Some(Some(Duration::from_nanos(nanos as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        let p = |s| parse(s).ok();
        assert_eq!(p("15s"), Some(Duration::from_secs(15)));
        assert_eq!(p("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(p("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(p("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(p(".5s"), Some(Duration::from_millis(500)));
        assert_eq!(p("0"), Some(Duration::ZERO));
        assert_eq!(
            p("2562047h47m16s"),
            Some(Duration::from_secs(9_223_372_036))
        );
        for bad in ["", "15", "s", "10x", "1s2", ".s", "1..5s", "-1s", "1e9s"] {
            assert!(matches!(parse(bad), Err(DurationError::Shape(_))), "{bad}");
        }
        for long in [
            "2562048h",
            "99999999999999999999999999999999999999999h",
            "18446744073709551616s",
            "2562047h47m17s",
        ] {
            assert!(
                matches!(parse(long), Err(DurationError::TooLong(_))),
                "{long}"
            );
        }
    }

    #[test]
    fn typed_durations_keep_their_text() {
        let d = GoDuration::parse("1m30s").unwrap();
        assert_eq!(d.get(), Duration::from_secs(90));
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1m30s\"");
        let back: GoDuration = serde_json::from_str("\"1m30s\"").unwrap();
        assert_eq!(back, d);
        assert!(serde_json::from_str::<GoDuration>("\"soon\"").is_err());
    }
}
