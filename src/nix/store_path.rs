//! Typed Nix store paths: `/nix/store/<32 nixbase32 chars>-<name>`.

use std::fmt;
use std::path::{Path, PathBuf};

/// The only store directory nixoci supports; images put paths at the same place.
pub const STORE_DIR: &str = "/nix/store";

/// The alphabet of Nix's base-32 encoding (no e, o, u, t).
const NIXBASE32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
const HASH_LEN: usize = 32;
const MAX_NAME_LEN: usize = 211;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StorePathError {
    #[error("'{0}' is not in the Nix store ({STORE_DIR}/<hash>-<name>)")]
    NotInStore(String),
    #[error("'{path}' has an invalid store hash: {why}")]
    BadHash { path: String, why: String },
    #[error("'{path}' has an invalid store path name: {why}")]
    BadName { path: String, why: String },
}

/// A store path, split into its hash part and its name. Ordered by the full
/// path, which is the order Nix itself lists paths in.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    /// The full base name, `<hash>-<name>`; kept whole so ordering is by path.
    base: String,
}

impl StorePath {
    /// Parse an absolute store path such as `/nix/store/abc…-hello-1.0`.
    /// A path below a store path (`…-hello/bin/x`) is rejected.
    pub fn parse(s: &str) -> Result<Self, StorePathError> {
        let rest = s
            .strip_prefix(STORE_DIR)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| StorePathError::NotInStore(s.to_string()))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        Self::from_base_name(rest).map_err(|e| match e {
            StorePathError::BadHash { why, .. } => StorePathError::BadHash {
                path: s.into(),
                why,
            },
            StorePathError::BadName { why, .. } => StorePathError::BadName {
                path: s.into(),
                why,
            },
            other => other,
        })
    }

    /// Parse `<hash>-<name>` (the base name of a store path).
    pub fn from_base_name(base: &str) -> Result<Self, StorePathError> {
        let bad_hash = |why: &str| StorePathError::BadHash {
            path: base.into(),
            why: why.into(),
        };
        let bad_name = |why: String| StorePathError::BadName {
            path: base.into(),
            why,
        };
        if base.len() < HASH_LEN + 2 || base.as_bytes()[HASH_LEN] != b'-' {
            return Err(bad_hash("expected 32 base-32 characters, then '-'"));
        }
        let (hash, name) = (&base[..HASH_LEN], &base[HASH_LEN + 1..]);
        if let Some(c) = hash.bytes().find(|c| !NIXBASE32.contains(c)) {
            return Err(bad_hash(&format!(
                "character '{}' is not in Nix's base-32 alphabet",
                c as char
            )));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(bad_name(format!("longer than {MAX_NAME_LEN} bytes")));
        }
        if name.starts_with('.') {
            return Err(bad_name("starts with '.'".into()));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "+-._?=".contains(*c)))
        {
            return Err(bad_name(format!("character {c:?} is not allowed")));
        }
        Ok(StorePath { base: base.into() })
    }

    /// The 32-character hash part.
    pub fn hash(&self) -> &str {
        &self.base[..HASH_LEN]
    }

    /// The name after the hash (`hello-1.0`).
    pub fn name(&self) -> &str {
        &self.base[HASH_LEN + 1..]
    }

    /// `<hash>-<name>`.
    pub fn base_name(&self) -> &str {
        &self.base
    }

    /// The absolute path on this machine.
    pub fn to_path_buf(&self) -> PathBuf {
        Path::new(STORE_DIR).join(&self.base)
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{STORE_DIR}/{}", self.base)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({self})")
    }
}

impl std::str::FromStr for StorePath {
    type Err = StorePathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hash_and_name() {
        let p = StorePath::parse("/nix/store/c6h2jv2bf9iav4f9jqy0n6j9b0zgl4f3-hello-app").unwrap();
        assert_eq!(p.hash(), "c6h2jv2bf9iav4f9jqy0n6j9b0zgl4f3");
        assert_eq!(p.name(), "hello-app");
        assert_eq!(
            p.to_string(),
            "/nix/store/c6h2jv2bf9iav4f9jqy0n6j9b0zgl4f3-hello-app"
        );
        assert_eq!(
            StorePath::parse("/nix/store/c6h2jv2bf9iav4f9jqy0n6j9b0zgl4f3-hello-app/").unwrap(),
            p
        );
    }

    #[test]
    fn rejects_bad_paths() {
        let bad = [
            ("/usr/bin/x", "is not in the Nix store"),
            ("/nix/store/short-x", "invalid store hash"),
            (
                "/nix/store/e6h2jv2bf9iav4f9jqy0n6j9b0zgl4f3-x",
                "'e' is not in Nix's base-32",
            ),
            (
                "/nix/store/c6h2jv2bf9iav4f9jqy0n6j9b0zgl4f3-.x",
                "starts with '.'",
            ),
            (
                "/nix/store/c6h2jv2bf9iav4f9jqy0n6j9b0zgl4f3-a b",
                "' ' is not allowed",
            ),
            (
                "/nix/store/c6h2jv2bf9iav4f9jqy0n6j9b0zgl4f3-x/bin",
                "'/' is not allowed",
            ),
            (
                "/nix/store/c6h2jv2bf9iav4f9jqy0n6j9b0zgl4f3-",
                "invalid store hash",
            ),
        ];
        for (input, want) in bad {
            let err = StorePath::parse(input).unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
        }
        let long = format!(
            "/nix/store/c6h2jv2bf9iav4f9jqy0n6j9b0zgl4f3-{}",
            "a".repeat(212)
        );
        assert!(StorePath::parse(&long)
            .unwrap_err()
            .to_string()
            .contains("longer than 211"));
    }

    #[test]
    fn orders_by_full_path() {
        let a = StorePath::parse("/nix/store/00000000000000000000000000000000-zzz").unwrap();
        let b = StorePath::parse("/nix/store/11111111111111111111111111111111-aaa").unwrap();
        assert!(a < b);
    }
}
