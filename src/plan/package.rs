//! A package on disk (`kurtosis.yml` + `main.star`) and locators: paths in
//! a package, `/`-rooted at the package root, else relative to the `.star`
//! file that names them. A locator may also start with the package's own
//! name (`github.com/org/repo/static/x`), as in Kurtosis.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{dir}: not a package directory ({why}); a package is a directory with kurtosis.yml and main.star")]
    NotAPackage { dir: PathBuf, why: String },
    #[error("{file}: {why}")]
    Manifest { file: PathBuf, why: String },
    #[error("locator '{locator}' leaves the package {root}: locators name files inside the package (a leading / is the package root)")]
    Escapes { locator: String, root: PathBuf },
    #[error("locator '{locator}': {path} does not exist")]
    Missing { locator: String, path: PathBuf },
    #[error("locator '{0}' is empty")]
    Empty(String),
}

#[derive(Debug, Clone)]
pub struct Package {
    /// Canonical root directory.
    pub root: PathBuf,
    /// `name` from kurtosis.yml.
    pub name: String,
    pub description: Option<String>,
    /// `replace:` from kurtosis.yml: a package name → the locator or local
    /// directory that stands in for it (honoured in the package that is
    /// run, for every package it reaches, as Kurtosis does).
    pub replace: BTreeMap<String, String>,
    /// Where the package's files came from, for the names files carry in
    /// messages (`None`: the package that is run, whose files are named
    /// relative to its root).
    pub origin: Option<Origin>,
}

/// The repository (or replacement directory) a package was found in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// What names the directory `base`: `github.com/OWNER/REPO`, or the
    /// package name a local replacement stands in for.
    pub label: String,
    pub version: Option<String>,
    /// The checkout (or replacement) directory.
    pub base: PathBuf,
    /// The commit checked out (`None`: a local replacement directory).
    pub commit: Option<String>,
}

#[derive(serde::Deserialize)]
struct Manifest {
    name: Option<String>,
    description: Option<String>,
    #[serde(default)]
    replace: Option<BTreeMap<String, String>>,
}

impl Package {
    pub fn open(dir: &Path) -> Result<Self, PackageError> {
        let root = dir.canonicalize().map_err(|e| PackageError::NotAPackage {
            dir: dir.into(),
            why: e.to_string(),
        })?;
        if !root.is_dir() {
            return Err(PackageError::NotAPackage {
                dir: dir.into(),
                why: "not a directory".into(),
            });
        }
        let yml = root.join("kurtosis.yml");
        let text = std::fs::read_to_string(&yml).map_err(|e| PackageError::NotAPackage {
            dir: dir.into(),
            why: format!("cannot read kurtosis.yml: {e}"),
        })?;
        let m: Manifest = serde_yaml::from_str(&text).map_err(|e| PackageError::Manifest {
            file: yml.clone(),
            why: e.to_string(),
        })?;
        let name =
            m.name
                .filter(|n| !n.trim().is_empty())
                .ok_or_else(|| PackageError::Manifest {
                    file: yml.clone(),
                    why: "has no 'name' (a locator such as github.com/org/repo)".into(),
                })?;
        let mut replace = BTreeMap::new();
        for (k, v) in m.replace.unwrap_or_default() {
            let key = k.trim().trim_end_matches('/').to_string();
            let value = v.trim().to_string();
            if key.is_empty() || value.is_empty() {
                return Err(PackageError::Manifest {
                    file: yml.clone(),
                    why: format!("replace: '{k}: {v}' needs a package name and what replaces it (a locator or a local directory)"),
                });
            }
            replace.insert(key, value);
        }
        Ok(Package {
            root,
            name,
            description: m.description,
            replace,
            origin: None,
        })
    }

    /// A repository directory without kurtosis.yml, read as a package named
    /// `name` (its files can be uploaded and read; Kurtosis allows it).
    pub fn bare(root: &Path, name: &str) -> Self {
        Package {
            root: root.to_path_buf(),
            name: name.into(),
            description: None,
            replace: BTreeMap::new(),
            origin: None,
        }
    }

    /// Does `locator` name something in this package by its own name?
    pub fn owns(&self, locator: &str) -> bool {
        let own = self.name.trim_end_matches('/');
        !locator.contains('@')
            && locator
                .strip_prefix(own)
                .is_some_and(|r| r.is_empty() || r.starts_with('/'))
    }

    /// The name a file of this package carries in messages and locations:
    /// relative to the root for the package that is run, else its locator
    /// (`github.com/OWNER/REPO/PATH@VERSION`).
    pub fn display(&self, path: &Path) -> String {
        match &self.origin {
            None => self.relative(path).to_string_lossy().into_owned(),
            Some(o) => {
                let rel = path.strip_prefix(&o.base).unwrap_or(path);
                let mut s = o.label.clone();
                if !rel.as_os_str().is_empty() {
                    s.push('/');
                    s.push_str(&rel.to_string_lossy());
                }
                if let Some(v) = &o.version {
                    s.push('@');
                    s.push_str(v);
                }
                s
            }
        }
    }

    /// The path a locator names, used from the file `from` (a path inside
    /// the package). The path is not required to exist.
    pub fn locate(&self, from: &Path, locator: &str) -> Result<PathBuf, PackageError> {
        if locator.is_empty() {
            return Err(PackageError::Empty(locator.into()));
        }
        let escapes = || PackageError::Escapes {
            locator: locator.into(),
            root: self.root.clone(),
        };
        let own = self.name.trim_end_matches('/');
        let (base, rest) = if let Some(r) = locator.strip_prefix('/') {
            (self.root.clone(), r)
        } else if let Some(r) = locator
            .strip_prefix(own)
            .filter(|r| r.is_empty() || r.starts_with('/'))
        {
            (self.root.clone(), r.trim_start_matches('/'))
        } else if locator.contains("://") || crate::packages::Locator::is_remote(locator) {
            return Err(escapes());
        } else {
            let dir = from.parent().unwrap_or(&self.root).to_path_buf();
            (dir, locator)
        };
        // Lexical normalisation: `..` may not climb above the root.
        let rel = base.strip_prefix(&self.root).map_err(|_| escapes())?;
        let mut parts: Vec<std::ffi::OsString> =
            rel.components().map(|c| c.as_os_str().into()).collect();
        for c in Path::new(rest).components() {
            match c {
                Component::Normal(p) => parts.push(p.into()),
                Component::CurDir => {}
                Component::ParentDir => {
                    if parts.pop().is_none() {
                        return Err(escapes());
                    }
                }
                Component::RootDir | Component::Prefix(_) => return Err(escapes()),
            }
        }
        let mut path = self.root.clone();
        path.extend(parts);
        // A symlink inside the package may point outside it.
        if let Ok(real) = path.canonicalize() {
            if !real.starts_with(&self.root) {
                return Err(escapes());
            }
        }
        Ok(path)
    }

    /// Like [`Package::locate`], and the path must exist.
    pub fn locate_existing(&self, from: &Path, locator: &str) -> Result<PathBuf, PackageError> {
        let path = self.locate(from, locator)?;
        if !path.exists() {
            return Err(PackageError::Missing {
                locator: locator.into(),
                path,
            });
        }
        Ok(path)
    }

    /// `path` relative to the root, for messages and locations.
    pub fn relative<'a>(&self, path: &'a Path) -> &'a Path {
        path.strip_prefix(&self.root).unwrap_or(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package() -> (tempfile::TempDir, Package) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("kurtosis.yml"),
            "name: github.com/me/pkg\ndescription: test\n",
        )
        .unwrap();
        std::fs::create_dir_all(d.path().join("lib/static")).unwrap();
        let p = Package::open(d.path()).unwrap();
        (d, p)
    }

    #[test]
    fn locators_resolve_like_kurtosis() {
        let (_d, p) = package();
        let main = p.root.join("main.star");
        let lib = p.root.join("lib/mod.star");
        assert_eq!(p.locate(&main, "./lib").unwrap(), p.root.join("lib"));
        assert_eq!(p.locate(&lib, "static").unwrap(), p.root.join("lib/static"));
        assert_eq!(
            p.locate(&lib, "/lib/static").unwrap(),
            p.root.join("lib/static")
        );
        assert_eq!(p.locate(&lib, "../main.star").unwrap(), main);
        assert_eq!(
            p.locate(&lib, "github.com/me/pkg/lib/static").unwrap(),
            p.root.join("lib/static")
        );
        assert_eq!(p.locate(&main, "./").unwrap(), p.root);
    }

    #[test]
    fn locators_may_not_leave_the_package() {
        let (d, p) = package();
        let main = p.root.join("main.star");
        for bad in ["../x", "/../x", "lib/../../x", "github.com/other/pkg/x"] {
            let e = p.locate(&main, bad).unwrap_err();
            assert!(matches!(e, PackageError::Escapes { .. }), "{bad}: {e}");
        }
        std::os::unix::fs::symlink("/etc", d.path().join("lib/out")).unwrap();
        assert!(matches!(
            p.locate(&main, "lib/out/passwd"),
            Err(PackageError::Escapes { .. })
        ));
    }

    #[test]
    fn a_directory_without_kurtosis_yml_is_not_a_package() {
        let d = tempfile::tempdir().unwrap();
        let e = Package::open(d.path()).unwrap_err().to_string();
        assert!(e.contains("kurtosis.yml"), "{e}");
    }
}
