//! A store path name split into name and version as Nix's
//! `builtins.parseDrvName` splits it: at the first `-` not followed by a
//! letter.

/// `("hello", "2.12.1")` for `hello-2.12.1`; the version is empty when the
/// name has none (`bash-interactive` stays whole).
pub fn parse_drv_name(s: &str) -> (&str, &str) {
    let b = s.as_bytes();
    for i in 0..b.len() {
        if b[i] == b'-' && b.get(i + 1).is_some_and(|c| !c.is_ascii_alphabetic()) {
            return (&s[..i], &s[i + 1..]);
        }
    }
    (s, "")
}

#[cfg(test)]
mod tests {
    use super::parse_drv_name;

    #[test]
    fn like_builtins_parse_drv_name() {
        assert_eq!(parse_drv_name("hello-2.12.1"), ("hello", "2.12.1"));
        assert_eq!(
            parse_drv_name("bash-interactive-5.2"),
            ("bash-interactive", "5.2")
        );
        assert_eq!(
            parse_drv_name("glibc-2.38-44-bin"),
            ("glibc", "2.38-44-bin")
        );
        assert_eq!(parse_drv_name("source"), ("source", ""));
        assert_eq!(parse_drv_name("x-"), ("x-", ""));
        assert_eq!(
            parse_drv_name("perl5.36.0-Moo-2.0"),
            ("perl5.36.0-Moo", "2.0")
        );
        assert_eq!(parse_drv_name("a--1"), ("a", "-1"));
    }
}
