//! Running Nix: evaluate and build a flake output, read a closure.
//!
//! Nix is evaluated once per build: `nix eval --apply` yields the output
//! path, the derivation and `meta.mainProgram`. If the output is already
//! in the store, its closure comes from the closure cache (a rebuild of an
//! unchanged output calls Nix once) or `nix path-info`, which evaluates
//! nothing. Otherwise the derivation is realised by path (no second
//! evaluation) first.

use super::closure::{Closure, ClosureError};
use super::closure_cache::ClosureCache;
use super::path_info::{parse_path_info_json, PathInfoError};
use super::store_path::{StorePath, StorePathError};
use serde::Deserialize;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const FEATURES: &str = "nix-command flakes";

#[derive(Debug, thiserror::Error)]
pub enum NixError {
    #[error("`nix` was not found on PATH. Install Nix (Debian: `apt-get install nix-bin`; elsewhere see https://nixos.org/download) or set $NIXOCI_NIX to its path")]
    Missing,
    #[error("could not run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}):\n{stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{message}\n(`{command}` said: {stderr})")]
    NoDaemon {
        message: String,
        command: String,
        stderr: String,
    },
    #[error("flake directory '{0}' does not exist")]
    NoDirectory(PathBuf),
    #[error("'{0}' has no flake.nix: a flake reference is DIR#OUTPUT, DIR or .#OUTPUT, where DIR holds flake.nix")]
    NoFlake(PathBuf),
    #[error("`{command}` printed output nixoci cannot read: {why}")]
    Output { command: String, why: String },
    #[error("flake output {0} is not a derivation (it has no drvPath); nixoci builds packages")]
    NotDerivation(String),
    #[error(transparent)]
    PathInfo(#[from] PathInfoError),
    #[error(transparent)]
    StorePath(#[from] StorePathError),
    #[error(transparent)]
    Closure(#[from] ClosureError),
}

/// A flake reference as nixoci's CLI takes it, turned into the `path:` form
/// (untracked files count, as for a Kurtosis package upload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlakeRef {
    /// What Nix is given, e.g. `path:/abs/dir#web`.
    pub installable: String,
    /// The local flake directory, when the reference is one.
    pub dir: Option<PathBuf>,
    pub output: Option<String>,
}

impl FlakeRef {
    /// `DIR#OUTPUT`, `DIR` (default package) or `.#OUTPUT`. A reference that
    /// already has a scheme (`path:`, `git+file:`, `github:` …) is given to
    /// Nix as it is.
    pub fn parse(s: &str) -> Result<Self, NixError> {
        let (dir, output) = match s.split_once('#') {
            Some((d, o)) => (d, Some(o.to_string()).filter(|o| !o.is_empty())),
            None => (s, None),
        };
        let has_scheme = dir
            .split_once(':')
            .is_some_and(|(scheme, _)| !scheme.contains('/') && !scheme.is_empty());
        if has_scheme {
            return Ok(FlakeRef {
                installable: s.to_string(),
                dir: None,
                output,
            });
        }
        let dir = if dir.is_empty() { "." } else { dir };
        let path = Path::new(dir);
        if !path.is_dir() {
            return Err(NixError::NoDirectory(path.to_path_buf()));
        }
        let abs = std::fs::canonicalize(path).map_err(|_| NixError::NoDirectory(path.into()))?;
        if !abs.join("flake.nix").is_file() {
            return Err(NixError::NoFlake(abs));
        }
        let mut installable = format!("path:{}", abs.display());
        if let Some(o) = &output {
            installable.push('#');
            installable.push_str(o);
        }
        Ok(FlakeRef {
            installable,
            dir: Some(abs),
            output,
        })
    }
}

/// The result of building a flake output.
#[derive(Debug, Clone)]
pub struct Built {
    pub out_path: StorePath,
    /// `meta.mainProgram`, when the flake sets it.
    pub main_program: Option<String>,
    /// The derivation that builds it.
    pub derivation: String,
    /// Its description, homepage and licenses, where `meta` has them.
    pub meta: super::flake::Meta,
    pub closure: Closure,
}

/// How to run Nix: the binary and extra `--option k v` pairs.
#[derive(Debug, Clone, Default)]
pub struct Nix {
    pub binary: Option<PathBuf>,
    pub options: Vec<(String, String)>,
    pub system: Option<String>,
    /// Closures read before (none by default).
    pub closure_cache: ClosureCache,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EvalResult {
    out: Option<String>,
    drv: Option<String>,
    main: Option<String>,
    #[serde(default)]
    meta: super::flake::Meta,
}

#[derive(Deserialize)]
struct BuildResult {
    outputs: std::collections::BTreeMap<String, String>,
}

impl Nix {
    fn command(&self, args: &[&str]) -> (Command, String) {
        let bin: OsString = self
            .binary
            .clone()
            .map(Into::into)
            .or_else(|| std::env::var_os("NIXOCI_NIX"))
            .unwrap_or_else(|| "nix".into());
        let mut cmd = Command::new(&bin);
        let mut all: Vec<String> = vec!["--extra-experimental-features".into(), FEATURES.into()];
        if let Some(system) = &self.system {
            all.extend(["--option".into(), "system".into(), system.clone()]);
        }
        for (k, v) in &self.options {
            all.extend(["--option".into(), k.clone(), v.clone()]);
        }
        all.extend(args.iter().map(|s| s.to_string()));
        cmd.args(&all);
        let shown = std::iter::once(bin.to_string_lossy().into_owned())
            .chain(all.iter().map(|a| shell_quote(a)))
            .collect::<Vec<_>>()
            .join(" ");
        (cmd, shown)
    }

    /// Whether the local store's database says what this Nix would: not
    /// turned off (`NIXOCI_NIX_DB=off`), the default binary (not one the
    /// caller chose), and no setting pointing Nix at another store or
    /// state directory.
    fn reads_local_db(&self) -> bool {
        let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
        let remote_is_local = std::env::var("NIX_REMOTE")
            .map(|r| ["", "local", "daemon", "auto"].contains(&r.as_str()))
            .unwrap_or(true);
        std::env::var("NIXOCI_NIX_DB").as_deref() != Ok("off")
            && self.binary.is_none()
            && !set("NIXOCI_NIX")
            && remote_is_local
            && !["NIX_STATE_DIR", "NIX_STORE_DIR", "NIX_STORE"]
                .iter()
                .any(|k| set(k))
            && !std::env::var("NIX_CONFIG").is_ok_and(|c| {
                c.lines()
                    .any(|l| l.split('=').next().is_some_and(|k| k.trim() == "store"))
            })
            && !self.options.iter().any(|(k, _)| k == "store")
    }

    /// Run Nix, returning stdout; stderr is captured for the error.
    fn run(&self, args: &[&str]) -> Result<Vec<u8>, NixError> {
        let (mut cmd, shown) = self.command(args);
        tracing::debug!(command = %shown, "running nix");
        let out = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => NixError::Missing,
                _ => NixError::Spawn {
                    command: shown.clone(),
                    source: e,
                },
            })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
            if let Some(message) = super::daemon::unreachable() {
                return Err(NixError::NoDaemon {
                    message,
                    command: shown,
                    stderr,
                });
            }
            return Err(NixError::Failed {
                command: shown,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim_end().to_string(),
            });
        }
        Ok(out.stdout)
    }

    /// Evaluate the flake output once, build it if it is not in the store
    /// yet, and read its closure.
    pub fn build(&self, flake: &FlakeRef) -> Result<Built, NixError> {
        let apply = format!(
            "d: {{ out = d.outPath or null; drv = d.drvPath or null; \
             main = (d.meta or {{}}).mainProgram or null; meta = {}; }}",
            super::flake::META_EXPR
        );
        let args = ["eval", "--json", &flake.installable, "--apply", &apply];
        let stdout = self.run(&args)?;
        let eval: EvalResult = serde_json::from_slice(&stdout).map_err(|e| NixError::Output {
            command: "nix eval".into(),
            why: e.to_string(),
        })?;
        let (Some(out), Some(drv)) = (eval.out, eval.drv) else {
            return Err(NixError::NotDerivation(flake.installable.clone()));
        };
        let out_path = StorePath::parse(&out)?;
        // Already built (the usual rebuild): path-info answers for valid
        // paths only, so an error just means "build it first".
        if Path::new(&out).exists() {
            if let Ok(closure) = self.closure(&out_path) {
                return Ok(Built {
                    out_path,
                    main_program: eval.main,
                    derivation: drv,
                    meta: eval.meta,
                    closure,
                });
            }
        }
        let stdout = self.run(&["build", "--json", "--no-link", &drv])?;
        let built: Vec<BuildResult> =
            serde_json::from_slice(&stdout).map_err(|e| NixError::Output {
                command: "nix build".into(),
                why: e.to_string(),
            })?;
        if !built.iter().any(|b| b.outputs.values().any(|p| *p == out)) {
            return Err(NixError::Output {
                command: "nix build".into(),
                why: format!("{out} is not among the outputs it built"),
            });
        }
        let closure = self.closure(&out_path)?;
        Ok(Built {
            out_path,
            main_program: eval.main,
            derivation: drv,
            meta: eval.meta,
            closure,
        })
    }

    /// The closure of a built store path: from the closure cache while
    /// every path of it is unchanged on disk, else from the store's
    /// database where that is the local store's and readable (see
    /// [`super::db`]), else from `nix path-info`.
    pub fn closure(&self, root: &StorePath) -> Result<Closure, NixError> {
        if let Some(infos) = self.closure_cache.get(root) {
            if let Ok(c) = Closure::new(root.clone(), infos) {
                return Ok(c);
            }
        }
        let from_db = if self.reads_local_db() {
            super::db::closure(Path::new(super::db::DB), root)
                .inspect_err(|e| tracing::debug!("the store's database: {e}; asking nix path-info"))
                .ok()
        } else {
            None
        };
        let infos = match from_db {
            Some(infos) => infos,
            None => {
                let path = root.to_string();
                parse_path_info_json(&self.run(&["path-info", "--json", "--recursive", &path])?)?
            }
        };
        self.closure_cache.put(root, &infos);
        Ok(Closure::new(root.clone(), infos)?)
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=#+@,".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flake_refs() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("flake.nix"), "{}").unwrap();
        let dir = std::fs::canonicalize(d.path()).unwrap();
        let r = FlakeRef::parse(&format!("{}#web", d.path().display())).unwrap();
        assert_eq!(r.installable, format!("path:{}#web", dir.display()));
        assert_eq!(r.output.as_deref(), Some("web"));
        let r = FlakeRef::parse(d.path().to_str().unwrap()).unwrap();
        assert_eq!(r.installable, format!("path:{}", dir.display()));
        assert_eq!(r.output, None);
        let r = FlakeRef::parse("github:owner/repo#x").unwrap();
        assert_eq!(r.installable, "github:owner/repo#x");
        let missing = FlakeRef::parse("/nonexistent/dir#x").unwrap_err();
        assert!(missing.to_string().contains("does not exist"), "{missing}");
        let empty = tempfile::tempdir().unwrap();
        let e = FlakeRef::parse(empty.path().to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains("has no flake.nix"), "{e}");
    }

    #[test]
    fn missing_nix_says_how_to_install() {
        let nix = Nix {
            binary: Some("/nonexistent/nix".into()),
            ..Default::default()
        };
        let err = nix.run(&["--version"]).unwrap_err().to_string();
        assert!(err.contains("apt-get install nix-bin"), "{err}");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("path:/a#b"), "path:/a#b");
        assert_eq!(shell_quote("d: x"), "'d: x'");
    }
}
