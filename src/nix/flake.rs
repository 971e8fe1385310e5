//! What a flake says about where an output came from: its source's locked
//! NAR hash and its locked inputs (`flake.lock`), and the output's `meta`.
//! These feed an image's SBOM and provenance.

use super::hash::Sha256;
use super::FlakeRef;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FlakeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a flake.lock nixoci can read: {why}")]
    Lock { path: PathBuf, why: String },
}

/// One license of `meta.license`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct License {
    pub spdx_id: Option<String>,
    pub full_name: Option<String>,
}

/// The parts of a flake output's `meta` an SBOM carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Meta {
    pub description: Option<String>,
    pub homepage: Option<String>,
    #[serde(default)]
    pub licenses: Vec<License>,
}

/// A `meta` evaluation that cannot fail on odd values: each part is
/// taken only when it has the type expected (nixpkgs' `license` is an
/// attribute set, a list of them, or a string).
pub const META_EXPR: &str = "let m = if builtins.isAttrs (d.meta or null) then d.meta else {}; \
    str = v: if builtins.isString v then v else null; \
    lic = l: if builtins.isAttrs l then { spdxId = str (l.spdxId or null); fullName = str (l.fullName or null); } \
      else if builtins.isString l then { spdxId = null; fullName = l; } else null; \
    ls = m.license or null; \
    home = m.homepage or null; \
    in { description = str (m.description or null); \
         homepage = if builtins.isList home then (if home == [] then null else str (builtins.head home)) else str home; \
         licenses = builtins.filter (x: x != null) (map lic (if builtins.isList ls then ls else if ls == null then [] else [ ls ])); }";

/// An input of `flake.lock`, as locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedInput {
    /// The node's key in `flake.lock` (the input's name for direct inputs).
    pub name: String,
    /// `github`, `git`, `path`, `tarball`, ...
    pub kind: String,
    /// A location-independent reference where one can be made
    /// (`github:owner/repo/rev`, `git+url?rev=...`, the tarball URL).
    pub uri: Option<String>,
    pub nar_hash: Option<Sha256>,
    pub rev: Option<String>,
}

/// The source of a flake, as locked: what provenance names instead of a
/// local directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlakeSource {
    /// The flake reference without a local path: `path:` sources are
    /// named by their NAR hash only (the same source in two directories is
    /// the same source); other references as given.
    pub reference: String,
    /// The attribute asked for (`web`), if any.
    pub output: Option<String>,
    pub nar_hash: Option<Sha256>,
    pub inputs: Vec<LockedInput>,
}

#[derive(Deserialize)]
struct RawLock {
    nodes: BTreeMap<String, RawNode>,
    root: Option<String>,
}

#[derive(Deserialize)]
struct RawNode {
    locked: Option<BTreeMap<String, serde_json::Value>>,
}

/// The locked inputs of a `flake.lock` document, by node key.
pub fn parse_lock(path: &Path, bytes: &[u8]) -> Result<Vec<LockedInput>, FlakeError> {
    let bad = |why: String| FlakeError::Lock {
        path: path.into(),
        why,
    };
    let raw: RawLock = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let root = raw.root.as_deref().unwrap_or("root");
    let mut out = Vec::new();
    for (key, node) in &raw.nodes {
        if key == root {
            continue;
        }
        let Some(locked) = &node.locked else { continue };
        let s = |k: &str| locked.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let kind = s("type").unwrap_or_default();
        let nar_hash = match s("narHash") {
            Some(h) => Some(Sha256::parse(&h).map_err(|e| bad(format!("node '{key}': {e}")))?),
            None => None,
        };
        let rev = s("rev");
        let uri = match kind.as_str() {
            "github" | "gitlab" | "sourcehut" => match (s("owner"), s("repo")) {
                (Some(o), Some(r)) => Some(format!(
                    "{kind}:{o}/{r}{}",
                    rev.as_deref().map(|r| format!("/{r}")).unwrap_or_default()
                )),
                _ => None,
            },
            "git" | "hg" => s("url").map(|u| {
                let mut u = format!("{kind}+{u}");
                if let Some(r) = &rev {
                    u.push_str(if u.contains('?') { "&rev=" } else { "?rev=" });
                    u.push_str(r);
                }
                u
            }),
            "tarball" | "file" => s("url"),
            // A local path says nothing another machine can use.
            _ => None,
        };
        out.push(LockedInput {
            name: key.clone(),
            kind,
            uri,
            nar_hash,
            rev,
        });
    }
    Ok(out)
}

/// The locked source of `flake`: for a local directory, the NAR hash of
/// the directory (what Nix locks a `path:` flake by) and its `flake.lock`.
pub fn source_of(flake: &FlakeRef) -> Result<FlakeSource, FlakeError> {
    let Some(dir) = &flake.dir else {
        let reference = flake
            .installable
            .split_once('#')
            .map_or(flake.installable.as_str(), |(r, _)| r)
            .to_string();
        return Ok(FlakeSource {
            reference,
            output: flake.output.clone(),
            nar_hash: None,
            inputs: Vec::new(),
        });
    };
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FlakeError::Io { path, source }
    };
    let nar_hash = super::nar::nar_hash(dir).map_err(io(dir))?;
    let lock = dir.join("flake.lock");
    let inputs = match std::fs::read(&lock) {
        Ok(bytes) => parse_lock(&lock, &bytes)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(&lock)(e)),
    };
    Ok(FlakeSource {
        reference: format!("path:?narHash={}", nar_hash.sri()),
        output: flake.output.clone(),
        nar_hash: Some(nar_hash),
        inputs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_become_location_free_references() {
        let lock = br#"{"nodes":{
            "nixpkgs":{"locked":{"lastModified":1,"narHash":"sha256-1kDPewzvCH/o+sk7jmemdUcZ1+wH0e4hkt2sMoGbArI=","owner":"NixOS","repo":"nixpkgs","rev":"abc","type":"github"}},
            "lib":{"locked":{"type":"git","url":"https://example.org/lib.git","rev":"def","narHash":"sha256-1kDPewzvCH/o+sk7jmemdUcZ1+wH0e4hkt2sMoGbArI="}},
            "local":{"locked":{"type":"path","path":"/home/me/x","narHash":"sha256-1kDPewzvCH/o+sk7jmemdUcZ1+wH0e4hkt2sMoGbArI="}},
            "root":{"inputs":{"nixpkgs":"nixpkgs","lib":"lib","local":"local"}}},
            "root":"root","version":7}"#;
        let inputs = parse_lock(Path::new("flake.lock"), lock).unwrap();
        let names: Vec<_> = inputs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["lib", "local", "nixpkgs"]);
        assert_eq!(
            inputs[0].uri.as_deref(),
            Some("git+https://example.org/lib.git?rev=def")
        );
        assert_eq!(inputs[1].uri, None);
        assert_eq!(inputs[2].uri.as_deref(), Some("github:NixOS/nixpkgs/abc"));
        assert!(inputs.iter().all(|i| i.nar_hash.is_some()));
        let bad = parse_lock(
            Path::new("flake.lock"),
            br#"{"nodes":{"x":{"locked":{"narHash":"md5-x"}}}}"#,
        );
        assert!(bad.unwrap_err().to_string().contains("node 'x'"));
        assert!(parse_lock(Path::new("flake.lock"), b"[").is_err());
    }
}

#[cfg(test)]
mod eval_tests {
    /// The `meta` expression against odd values, with the real `nix`
    /// where there is one.
    #[test]
    fn meta_expression_takes_only_what_has_the_expected_type() {
        let cases = [
            (
                r#"{ description = "A web"; homepage = "https://x"; license = { spdxId = "MIT"; fullName = "MIT License"; f = x: x; }; }"#,
                r#"{"description":"A web","homepage":"https://x","licenses":[{"fullName":"MIT License","spdxId":"MIT"}]}"#,
            ),
            (
                r#"{ description = 3; homepage = [ "a" "b" ]; license = [ { spdxId = "MIT"; } "custom" 4 ]; }"#,
                r#"{"description":null,"homepage":"a","licenses":[{"fullName":null,"spdxId":"MIT"},{"fullName":"custom","spdxId":null}]}"#,
            ),
            (
                "null",
                r#"{"description":null,"homepage":null,"licenses":[]}"#,
            ),
        ];
        for (meta, want) in cases {
            let expr = format!("let d = {{ meta = {meta}; }}; in {}", super::META_EXPR);
            let out = match std::process::Command::new("nix")
                .args([
                    "--extra-experimental-features",
                    "nix-command",
                    "eval",
                    "--json",
                    "--expr",
                    &expr,
                ])
                .output()
            {
                Ok(o) => o,
                Err(_) => return, // no Nix here: tests/build.rs covers it with Nix
            };
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want);
        }
    }
}
