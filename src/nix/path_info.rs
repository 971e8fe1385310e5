//! `nix path-info --json` output. Nix 2.8 prints a list of objects with a
//! `path` field; newer Nix prints an object keyed by path. Both are accepted.

use super::store_path::{StorePath, StorePathError};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum PathInfoError {
    #[error("nix path-info printed JSON nixoci cannot read: {0}")]
    Json(#[from] serde_json::Error),
    #[error("nix path-info printed an invalid store path: {0}")]
    StorePath(#[from] StorePathError),
    #[error("nix path-info says '{0}' is not valid (not built or not in the store)")]
    Invalid(String),
    #[error("nix path-info gave no narHash for '{0}'")]
    NoNarHash(String),
}

/// What nixoci keeps of a store path's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    pub path: StorePath,
    /// As Nix prints it (`sha256-<base64>` or `sha256:<base32>`); used as a cache key.
    pub nar_hash: String,
    pub nar_size: u64,
    /// Other store paths this one refers to; a self-reference is dropped.
    pub references: Vec<StorePath>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawInfo {
    path: Option<String>,
    nar_hash: Option<String>,
    #[serde(default)]
    nar_size: u64,
    #[serde(default)]
    references: Vec<String>,
    #[serde(default = "yes")]
    valid: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    List(Vec<RawInfo>),
    Object(BTreeMap<String, Option<RawInfo>>),
}

/// Parse `nix path-info --json [--recursive]` output, sorted by path.
pub fn parse_path_info_json(bytes: &[u8]) -> Result<Vec<PathInfo>, PathInfoError> {
    let raw: Raw = serde_json::from_slice(bytes)?;
    let entries: Vec<(String, Option<RawInfo>)> = match raw {
        Raw::List(list) => list
            .into_iter()
            .map(|r| (r.path.clone().unwrap_or_default(), Some(r)))
            .collect(),
        Raw::Object(map) => map.into_iter().collect(),
    };
    let mut out = Vec::with_capacity(entries.len());
    for (path, info) in entries {
        let info = match info {
            Some(i) if i.valid => i,
            _ => return Err(PathInfoError::Invalid(path)),
        };
        let store_path = StorePath::parse(&path)?;
        let nar_hash = info
            .nar_hash
            .ok_or_else(|| PathInfoError::NoNarHash(path.clone()))?;
        let mut references = info
            .references
            .iter()
            .map(|r| StorePath::parse(r))
            .collect::<Result<Vec<_>, _>>()?;
        references.retain(|r| *r != store_path);
        references.sort();
        references.dedup();
        out.push(PathInfo {
            path: store_path,
            nar_hash,
            nar_size: info.nar_size,
            references,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = include_str!("../../fixtures/nix/path-info-2.8.json");
    const OBJECT: &str = include_str!("../../fixtures/nix/path-info-2.19.json");

    #[test]
    fn list_and_object_forms_agree() {
        let a = parse_path_info_json(LIST.as_bytes()).unwrap();
        let b = parse_path_info_json(OBJECT.as_bytes()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 3);
        let app = a.iter().find(|i| i.path.name() == "hello-app").unwrap();
        assert_eq!(app.references.len(), 2, "self-reference dropped");
        assert_eq!(app.nar_size, 680);
        assert!(app.nar_hash.starts_with("sha256-"));
    }

    #[test]
    fn invalid_path_is_an_error() {
        let json = r#"{"/nix/store/c6h2jv2bf9iav4f9jqy0n6j9b0zgl4f3-x": null}"#;
        let err = parse_path_info_json(json.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("is not valid"), "{err}");
        let json = r#"[{"path":"/nix/store/c6h2jv2bf9iav4f9jqy0n6j9b0zgl4f3-x","valid":false}]"#;
        assert!(parse_path_info_json(json.as_bytes()).is_err());
    }

    #[test]
    fn bad_reference_is_an_error() {
        let json = r#"[{"path":"/nix/store/c6h2jv2bf9iav4f9jqy0n6j9b0zgl4f3-x","narHash":"sha256-x","references":["/tmp/x"]}]"#;
        let err = parse_path_info_json(json.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("/tmp/x"), "{err}");
    }
}
