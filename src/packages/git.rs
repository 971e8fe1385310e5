//! Remote packages fetched with the git CLI into a cache:
//!
//! ```text
//! <cache>/packages/github.com/OWNER/REPO/
//!     git/               a bare repository that every fetch adds to
//!     commits/<sha>/     the repository's files at one commit (read only)
//!     refs/<version>     the commit a version resolved to when last fetched
//! ```
//!
//! A version that names a commit is fetched once. A tag, a branch or the
//! default branch is fetched once and then read from `refs/` on every later
//! run, offline, until the user asks for `--update`: a moving branch does
//! not move under a user who did not ask it to.

use super::{Checkout, PackagesError, Resolver};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct GitResolver {
    /// `<cache>/packages`.
    root: PathBuf,
    /// Fetch named versions again, even when the cache has them.
    update: bool,
    /// Every answer given, so that one interpretation sees one commit per
    /// repository and version.
    seen: RefCell<BTreeMap<(String, Option<String>), Checkout>>,
}

fn is_commit(v: &str) -> bool {
    v.len() == 40 && v.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A file name for a version: hex, so that `feature/x` and any other byte
/// stays one component.
fn ref_file(version: Option<&str>) -> String {
    match version {
        None => "HEAD".into(),
        Some(v) => {
            let hex: String = v.bytes().map(|b| format!("{b:02x}")).collect();
            format!("v-{hex}")
        }
    }
}

impl GitResolver {
    pub fn new(cache_dir: &Path, update: bool) -> Self {
        GitResolver {
            root: cache_dir.join("packages"),
            update,
            seen: RefCell::new(BTreeMap::new()),
        }
    }

    /// Remove every cached package; the number of repositories removed.
    pub fn prune(cache_dir: &Path) -> std::io::Result<usize> {
        let root = cache_dir.join("packages");
        let mut n = 0;
        if let Ok(hosts) = std::fs::read_dir(&root) {
            for h in hosts.flatten() {
                for o in std::fs::read_dir(h.path()).into_iter().flatten().flatten() {
                    n += std::fs::read_dir(o.path()).into_iter().flatten().count();
                }
            }
        }
        match std::fs::remove_dir_all(&root) {
            Ok(()) => Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root.join(repo)
    }

    fn cached(&self, repo: &str, version: Option<&str>) -> Option<Checkout> {
        let dir = self.repo_dir(repo);
        let commit = match version {
            Some(v) if is_commit(v) => v.to_ascii_lowercase(),
            _ => {
                if self.update {
                    return None;
                }
                let text =
                    std::fs::read_to_string(dir.join("refs").join(ref_file(version))).ok()?;
                let c = text.trim().to_string();
                if !is_commit(&c) {
                    return None;
                }
                c
            }
        };
        let tree = dir.join("commits").join(&commit);
        tree.is_dir().then_some(Checkout { dir: tree, commit })
    }

    /// Fetch into the cache; a repository that could not be fetched at all
    /// leaves nothing behind.
    fn fetch(&self, repo: &str, version: Option<&str>) -> Result<Checkout, PackagesError> {
        let dir = self.repo_dir(repo);
        let new = !dir.exists();
        let r = self.fetch_into(repo, version);
        if r.is_err() && new {
            let _ = std::fs::remove_dir_all(&dir);
        }
        r
    }

    fn fetch_into(&self, repo: &str, version: Option<&str>) -> Result<Checkout, PackagesError> {
        let fail = |why: String| PackagesError::Fetch {
            repo: repo.into(),
            version: version.map(String::from),
            why,
        };
        let cache_err = |path: &Path, e: &dyn std::fmt::Display| PackagesError::Cache {
            path: path.into(),
            why: e.to_string(),
        };
        let dir = self.repo_dir(repo);
        let bare = dir.join("git");
        if !bare.join("HEAD").is_file() {
            std::fs::create_dir_all(&dir).map_err(|e| cache_err(&dir, &e))?;
            let tmp = crate::util::fs::tmp_name(&bare);
            git(&dir, &["init", "--bare", "--quiet", path_str(&tmp)?])
                .map_err(|e| cache_err(&bare, &e))?;
            if std::fs::rename(&tmp, &bare).is_err() {
                // Another nixoci made it first.
                let _ = std::fs::remove_dir_all(&tmp);
            }
        }
        let url = format!("https://{repo}.git");
        let want = version.unwrap_or("HEAD");
        let shallow = git(
            &bare,
            &["fetch", "--quiet", "--no-tags", "--depth=1", &url, want],
        );
        if let Err(first) = shallow {
            // A commit the server will not serve by itself, or a server
            // without shallow fetches: everything, then look it up.
            git(
                &bare,
                &[
                    "fetch",
                    "--quiet",
                    "--tags",
                    "--force",
                    &url,
                    "+refs/heads/*:refs/remotes/origin/*",
                ],
            )
            .map_err(|e| {
                fail(format!(
                    "git cannot fetch it: {}{}",
                    first.trim(),
                    if e.trim() == first.trim() {
                        String::new()
                    } else {
                        format!("; {}", e.trim())
                    }
                ))
            })?;
            let spec = format!("{want}^{{commit}}");
            let commit = git(&bare, &["rev-parse", "--verify", "--quiet", &spec])
                .map_err(|_| fail(format!("{url} has no tag, branch or commit '{want}'")))?;
            git(&bare, &["update-ref", "FETCH_HEAD", commit.trim()]).map_err(fail)?;
        }
        let commit = git(&bare, &["rev-parse", "--verify", "FETCH_HEAD^{commit}"])
            .map_err(fail)?
            .trim()
            .to_ascii_lowercase();
        if !is_commit(&commit) {
            return Err(fail(format!("git named '{commit}' as the commit")));
        }
        if let Some(v) = version.filter(|v| is_commit(v)) {
            if !v.eq_ignore_ascii_case(&commit) {
                return Err(fail(format!("git gave commit {commit} for it")));
            }
        }
        let commits = dir.join("commits");
        let tree = commits.join(&commit);
        if !tree.is_dir() {
            std::fs::create_dir_all(&commits).map_err(|e| cache_err(&commits, &e))?;
            let tmp = crate::util::fs::tmp_name(&tree);
            std::fs::create_dir(&tmp).map_err(|e| cache_err(&tmp, &e))?;
            let index = crate::util::fs::tmp_name(&dir.join("index"));
            let out = Command::new("git")
                .arg("--git-dir")
                .arg(&bare)
                .arg("--work-tree")
                .arg(&tmp)
                .args(["checkout", "--quiet", "--force", &commit, "--", "."])
                .env("GIT_INDEX_FILE", &index)
                .stdin(Stdio::null())
                .output();
            let _ = std::fs::remove_file(&index);
            let ok = matches!(&out, Ok(o) if o.status.success());
            if !ok {
                let _ = std::fs::remove_dir_all(&tmp);
                let why = match out {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                return Err(fail(format!("cannot check out {commit}: {why}")));
            }
            if std::fs::rename(&tmp, &tree).is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
                if !tree.is_dir() {
                    return Err(cache_err(&tree, &"cannot move the checkout in place"));
                }
            }
        }
        if !version.is_some_and(is_commit) {
            let refs = dir.join("refs");
            std::fs::create_dir_all(&refs).map_err(|e| cache_err(&refs, &e))?;
            let file = refs.join(ref_file(version));
            crate::util::fs::write_atomic(&file, format!("{commit}\n").as_bytes())
                .map_err(|e| cache_err(&file, &e))?;
        }
        Ok(Checkout { dir: tree, commit })
    }
}

fn path_str(p: &Path) -> Result<&str, PackagesError> {
    p.to_str().ok_or_else(|| PackagesError::Cache {
        path: p.into(),
        why: "the path is not UTF-8".into(),
    })
}

/// Run git in `dir`; its stdout, or its stderr as the error. Git never
/// prompts (a run would hang on it): credentials come from helpers.
fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                "git is not installed; remote packages are fetched with it (apt-get install git)"
                    .to_string()
            } else {
                format!("cannot run git: {e}")
            }
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(3)..].join("; ");
        Err(if tail.is_empty() {
            format!("git {} failed ({})", args.join(" "), out.status)
        } else {
            tail
        })
    }
}

impl Resolver for GitResolver {
    fn checkout(&self, repo: &str, version: Option<&str>) -> Result<Checkout, PackagesError> {
        let key = (repo.to_string(), version.map(String::from));
        if let Some(c) = self.seen.borrow().get(&key) {
            return Ok(c.clone());
        }
        let c = match self.cached(repo, version) {
            Some(c) => c,
            None => self.fetch(repo, version)?,
        };
        self.seen.borrow_mut().insert(key, c.clone());
        Ok(c)
    }

    fn read_url(&self, url: &str) -> Result<Vec<u8>, PackagesError> {
        crate::util::http::download(url, super::URL_LIMIT, std::time::Duration::from_secs(60))
            .map_err(PackagesError::Url)
    }
}
