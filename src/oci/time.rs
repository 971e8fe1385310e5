//! Times as OCI documents carry them: RFC 3339 UTC, years 0000 to 9999,
//! which is what every consumer parses.

/// The last second that RFC 3339 (four-digit years) can write:
/// 9999-12-31T23:59:59Z.
pub const MAX_EPOCH: u64 = 253_402_300_799;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimeError {
    #[error(
        "{what} '{value}' is not a number of seconds since the epoch (expected 0..={MAX_EPOCH})"
    )]
    NotSeconds { what: String, value: String },
    #[error("{what} '{value}' is after 9999-12-31T23:59:59Z, which image configs cannot carry (expected 0..={MAX_EPOCH})")]
    TooLate { what: String, value: String },
    #[error("{what} '{value}': expected 'now', seconds since the epoch (0..={MAX_EPOCH}), or an RFC 3339 UTC time like 2024-01-02T03:04:05Z")]
    Shape { what: String, value: String },
}

/// Seconds since the epoch, checked to be writable as RFC 3339.
pub fn parse_epoch(what: &str, value: &str) -> Result<u64, TimeError> {
    let secs: u64 = value.trim().parse().map_err(|_| TimeError::NotSeconds {
        what: what.into(),
        value: value.into(),
    })?;
    if secs > MAX_EPOCH {
        return Err(TimeError::TooLate {
            what: what.into(),
            value: value.into(),
        });
    }
    Ok(secs)
}

/// Seconds since the epoch as RFC 3339 UTC. Values past [`MAX_EPOCH`] are
/// clamped to it (inputs are checked with [`parse_epoch`] first).
pub fn rfc3339(secs: u64) -> String {
    let secs = secs.min(MAX_EPOCH);
    let (y, m, d) = civil_from_days((secs / 86400) as i64);
    let rem = secs % 86400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Year, month and day of a count of days since 1970-01-01 (negative
/// before), in the proleptic Gregorian calendar (Howard Hinnant's
/// `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Whether `s` is an RFC 3339 UTC time (`YYYY-MM-DDTHH:MM:SS[.frac]Z`) with
/// every field in range.
pub fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return false;
    }
    if b[13] != b':' || b[16] != b':' || b[b.len() - 1] != b'Z' {
        return false;
    }
    let frac = &s[19..s.len() - 1];
    let frac_ok = frac.is_empty()
        || (frac.len() >= 2
            && frac.starts_with('.')
            && frac[1..].bytes().all(|c| c.is_ascii_digit()));
    let fields = (
        num(0..4),
        num(5..7),
        num(8..10),
        num(11..13),
        num(14..16),
        num(17..19),
    );
    let (Some(_), Some(mo), Some(d), Some(h), Some(mi), Some(se)) = fields else {
        return false;
    };
    frac_ok && (1..=12).contains(&mo) && (1..=31).contains(&d) && h < 24 && mi < 60 && se <= 60
}

/// `--created`: `now`, epoch seconds, or RFC 3339 UTC (kept as given).
pub fn parse_created(what: &str, s: &str) -> Result<String, TimeError> {
    if s == "now" {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        return Ok(rfc3339(now));
    }
    if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
        return parse_epoch(what, s).map(rfc3339);
    }
    if is_rfc3339_utc(s) {
        Ok(s.into())
    } else {
        Err(TimeError::Shape {
            what: what.into(),
            value: s.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1), "1970-01-01T00:00:01Z");
        assert_eq!(rfc3339(951782400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1700000000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(MAX_EPOCH), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn epochs_are_checked() {
        assert_eq!(
            parse_epoch("SOURCE_DATE_EPOCH", "1700000000"),
            Ok(1700000000)
        );
        assert!(matches!(
            parse_epoch("SOURCE_DATE_EPOCH", "253402300800"),
            Err(TimeError::TooLate { .. })
        ));
        assert!(matches!(
            parse_epoch("SOURCE_DATE_EPOCH", "99999999999999999999999"),
            Err(TimeError::NotSeconds { .. })
        ));
        assert!(parse_epoch("x", "-1").is_err());
        assert!(parse_epoch("x", "1e9").is_err());
    }

    #[test]
    fn created_values() {
        assert_eq!(
            parse_created("--created", "1").unwrap(),
            "1970-01-01T00:00:01Z"
        );
        assert!(parse_created("--created", "now").unwrap().ends_with('Z'));
        assert_eq!(
            parse_created("--created", "2024-01-02T03:04:05.5Z").unwrap(),
            "2024-01-02T03:04:05.5Z"
        );
        for bad in [
            "yesterday",
            "",
            "2024-13-02T03:04:05Z",
            "2024-01-02T25:04:05Z",
            "20245-01-02T03:04:05Z",
            "2024-01-02T03:04:05",
            "2024-01-02T03:04:05.Z",
            "99999999999999",
            "2024-0a-02T03:04:05Z",
        ] {
            assert!(parse_created("--created", bad).is_err(), "{bad}");
        }
    }
}
