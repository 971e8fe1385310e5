//! Where Kurtosis packages come from: locators of other packages
//! (`github.com/OWNER/REPO[/PATH][@REF]`) and the resolvers that turn a
//! repository and a version into a directory on disk. [`git::GitResolver`]
//! fetches with the git CLI (so the user's git configuration applies:
//! credentials, proxies, `url.<base>.insteadOf` mirrors) into a cache;
//! interpretation is given a resolver and stays a function of its inputs.

pub mod git;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PackagesError {
    #[error("locator '{locator}': {why}")]
    Locator { locator: String, why: String },
    #[error("{repo}{at}: {why}", at = version.as_deref().map(|v| format!("@{v}")).unwrap_or_default())]
    Fetch {
        repo: String,
        version: Option<String>,
        why: String,
    },
    #[error("{locator}: remote packages are not available here ({why})")]
    NoRemote { locator: String, why: String },
    #[error("{0}")]
    Url(String),
    #[error("package cache {path}: {why}")]
    Cache { path: PathBuf, why: String },
}

/// A locator of something in another package's repository:
/// `github.com/OWNER/REPO[/PATH][@VERSION]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locator {
    /// `github.com/OWNER/REPO`.
    pub repo: String,
    /// The path inside the repository, without a leading `/` ("" for its root).
    pub path: String,
    /// A tag, branch or commit; `None`: the default branch.
    pub version: Option<String>,
}

/// The hosts whose repositories nixoci fetches (as Kurtosis: GitHub only).
pub const HOSTS: &[&str] = &["github.com"];

impl Locator {
    /// Does `s` name another package (a host with a dot as its first
    /// segment) rather than a path?
    pub fn is_remote(s: &str) -> bool {
        let first = s.split('/').next().unwrap_or("");
        first.contains('.') && first != "." && first != ".." && s.contains('/')
    }

    pub fn parse(s: &str) -> Result<Self, PackagesError> {
        let bad = |why: &str| PackagesError::Locator {
            locator: s.into(),
            why: why.into(),
        };
        let s2 = s.strip_prefix("https://").unwrap_or(s);
        let (body, version) = match s2.split_once('@') {
            Some((b, v)) => {
                if v.is_empty() {
                    return Err(bad("nothing follows '@' (a tag, branch or commit)"));
                }
                if v.starts_with('-') || v.contains("..") || v.chars().any(char::is_whitespace) {
                    return Err(bad("the version after '@' is not a tag, branch or commit"));
                }
                (b, Some(v.to_string()))
            }
            None => (s2, None),
        };
        let mut parts = body.trim_end_matches('/').split('/');
        let host = parts.next().unwrap_or("");
        if !HOSTS.contains(&host) {
            return Err(bad(&format!(
                "nixoci fetches packages from {} only (github.com/OWNER/REPO[/PATH][@VERSION]); a package elsewhere can be cloned and given as a local directory, or named in kurtosis.yml's replace:",
                HOSTS.join(", ")
            )));
        }
        let owner = parts.next().unwrap_or("");
        let repo = parts.next().unwrap_or("").trim_end_matches(".git");
        let ok = |x: &str| {
            !x.is_empty()
                && x != "."
                && x != ".."
                && x.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if !ok(owner) || !ok(repo) {
            return Err(bad("expected github.com/OWNER/REPO[/PATH][@VERSION]"));
        }
        let rest: Vec<&str> = parts.filter(|p| !p.is_empty() && *p != ".").collect();
        if rest.contains(&"..") {
            return Err(bad("'..' may not appear in a package locator"));
        }
        Ok(Locator {
            repo: format!("{host}/{owner}/{repo}"),
            path: rest.join("/"),
            version,
        })
    }

    /// `github.com/OWNER/REPO/PATH` (no version).
    pub fn without_version(&self) -> String {
        if self.path.is_empty() {
            self.repo.clone()
        } else {
            format!("{}/{}", self.repo, self.path)
        }
    }

    /// The URL git is asked for (the user's `insteadOf` rules rewrite it).
    pub fn url(&self) -> String {
        format!("https://{}.git", self.repo)
    }
}

impl std::fmt::Display for Locator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.without_version())?;
        if let Some(v) = &self.version {
            write!(f, "@{v}")?;
        }
        Ok(())
    }
}

/// A repository checked out at one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    pub dir: PathBuf,
    pub commit: String,
}

/// Gives the directory of a repository at a version. Interpretation asks
/// it for every remote locator; each call with the same arguments must
/// return the same checkout within one interpretation.
pub trait Resolver {
    fn checkout(&self, repo: &str, version: Option<&str>) -> Result<Checkout, PackagesError>;

    /// The content of an `http://` or `https://` URL (`read_file`).
    fn read_url(&self, url: &str) -> Result<Vec<u8>, PackagesError>;
}

/// The most `read_file` takes from a URL.
pub const URL_LIMIT: u64 = 64 << 20;

/// A resolver for interpretations that must not fetch: every remote locator
/// is refused with `why`.
pub struct NoRemote(pub &'static str);

impl Resolver for NoRemote {
    fn checkout(&self, repo: &str, version: Option<&str>) -> Result<Checkout, PackagesError> {
        Err(PackagesError::NoRemote {
            locator: match version {
                Some(v) => format!("{repo}@{v}"),
                None => repo.into(),
            },
            why: self.0.into(),
        })
    }

    fn read_url(&self, url: &str) -> Result<Vec<u8>, PackagesError> {
        Err(PackagesError::NoRemote {
            locator: url.into(),
            why: self.0.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locators_parse_as_kurtosis_writes_them() {
        let l = Locator::parse("github.com/kurtosis-tech/postgres-package/main.star").unwrap();
        assert_eq!(l.repo, "github.com/kurtosis-tech/postgres-package");
        assert_eq!(l.path, "main.star");
        assert_eq!(l.version, None);
        let l = Locator::parse("github.com/o/r@v1.2.0").unwrap();
        assert_eq!(
            (l.path.as_str(), l.version.as_deref()),
            ("", Some("v1.2.0"))
        );
        let l = Locator::parse("github.com/o/r/a/b/c.star@feature/x").unwrap();
        assert_eq!(l.path, "a/b/c.star");
        assert_eq!(l.version.as_deref(), Some("feature/x"));
        assert_eq!(l.to_string(), "github.com/o/r/a/b/c.star@feature/x");
        let l = Locator::parse("https://github.com/o/r.git").unwrap();
        assert_eq!(l.repo, "github.com/o/r");
        for bad in [
            "gitlab.com/o/r",
            "github.com/o",
            "github.com//r",
            "github.com/o/r/../../x",
            "github.com/o/r@",
            "github.com/o/r@--upload-pack=x",
            "github.com/o/r@a..b",
            "github.com/o;rm/r",
        ] {
            assert!(Locator::parse(bad).is_err(), "{bad}");
        }
        assert!(Locator::is_remote("github.com/o/r"));
        assert!(!Locator::is_remote("./lib/x.star"));
        assert!(!Locator::is_remote("../x.star"));
        assert!(!Locator::is_remote("main.star"));
    }
}
