//! A package on disk (`kurtosis.yml` + `main.star`) and locators: paths in
//! a package, `/`-rooted at the package root, else relative to the `.star`
//! file that names them. A locator may also start with the package's own
//! name (`github.com/org/repo/static/x`), as in Kurtosis.

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
}

#[derive(serde::Deserialize)]
struct Manifest {
    name: Option<String>,
    description: Option<String>,
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
        Ok(Package {
            root,
            name,
            description: m.description,
        })
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
        } else if locator.contains("://") || looks_like_remote(locator) {
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

/// `github.com/x/y/...`: another package's locator.
fn looks_like_remote(locator: &str) -> bool {
    let first = locator.split('/').next().unwrap_or("");
    first.contains('.') && first != "." && first != ".." && locator.contains('/')
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
