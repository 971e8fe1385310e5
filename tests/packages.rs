//! Remote packages for real: a package imports others by
//! `github.com/...` locators, served by a local git mirror that the user's
//! git configuration (`url.<base>.insteadOf`) points at, as an air-gapped
//! organisation would. nixoci fetches with the git CLI into its cache,
//! honours `replace:`, works offline once fetched, fetches again only on
//! `--update`, and names every file of an import chain in its errors.

mod common;

use common::{copy_dir, show};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

struct Mirror {
    tmp: tempfile::TempDir,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=nixoci", "-c", "user.email=t@nixoci"])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Mirror {
    /// `github.com/acme/lib` as a bare repository: commit 1 (greeting v1)
    /// tagged v1, commit 2 (greeting v2) on main; the top package copied.
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/packages/remote");
        let work = tmp.path().join("work");
        copy_dir(&fixtures.join("acme-lib"), &work);
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-qm", "v1"]);
        git(&work, &["tag", "v1"]);
        std::fs::write(work.join("static/greeting.txt"), "v2\n").unwrap();
        // Outside input: a link that leads out of the checkout.
        std::os::unix::fs::symlink("/etc/passwd", work.join("escape.star")).unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-qm", "v2"]);
        let bare = tmp.path().join("mirror/acme/lib.git");
        std::fs::create_dir_all(bare.parent().unwrap()).unwrap();
        git(
            tmp.path(),
            &[
                "clone",
                "-q",
                "--bare",
                work.to_str().unwrap(),
                bare.to_str().unwrap(),
            ],
        );
        let assets = tmp.path().join("assets");
        copy_dir(&fixtures.join("acme-assets"), &assets);
        git(&assets, &["init", "-q", "-b", "main"]);
        git(&assets, &["add", "-A"]);
        git(&assets, &["commit", "-qm", "assets"]);
        let bare_assets = tmp.path().join("mirror/acme/assets.git");
        git(
            tmp.path(),
            &[
                "clone",
                "-q",
                "--bare",
                assets.to_str().unwrap(),
                bare_assets.to_str().unwrap(),
            ],
        );
        copy_dir(&fixtures.join("top"), &tmp.path().join("top"));
        std::fs::write(
            tmp.path().join("gitconfig"),
            format!(
                "[url \"file://{}/mirror/\"]\n\tinsteadOf = https://github.com/\n",
                tmp.path().display()
            ),
        )
        .unwrap();
        Mirror { tmp }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// A new commit on main with `greeting`.
    fn push_greeting(&self, greeting: &str) {
        let work = self.path("work");
        std::fs::write(work.join("static/greeting.txt"), format!("{greeting}\n")).unwrap();
        git(&work, &["commit", "-qam", greeting]);
        let bare = self.path("mirror/acme/lib.git");
        git(&work, &["push", "-q", bare.to_str().unwrap(), "main"]);
    }

    fn nixoci(&self) -> Command {
        let mut c = common::nixoci_with_cache(&self.path("cache"));
        c.env("GIT_CONFIG_GLOBAL", self.path("gitconfig"));
        c
    }

    /// `nixoci run PACKAGE --dry-run --json [ARGS]`: the printed messages,
    /// or the error.
    fn dry_run(&self, package: &str, args: &str, extra: &[&str]) -> Result<Vec<String>, String> {
        let out = self
            .nixoci()
            .args(["run", package, "--dry-run", "--json"])
            .args(extra)
            .arg(args)
            .output()
            .unwrap();
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        Ok(plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["msg"].as_str().map(String::from))
            .collect())
    }
}

#[test]
fn remote_packages_come_from_git_with_replace_pins_and_a_cache() {
    let m = Mirror::new();
    let top = m.path("top");
    let top = top.to_str().unwrap();
    let want = |head: &str| {
        vec![
            "pinned lib:v1".to_string(),
            format!("head lib:{head}"),
            "sub sub".into(),
            "vendored vendored".into(),
            "renamed lib:v1".into(),
            "own TOP:".into(),
            "asset an asset".into(),
        ]
    };
    assert_eq!(m.dry_run(top, "{}", &[]).unwrap(), want("v2"));
    // The cache holds each repository by commit.
    let commits = m.path("cache/nixoci/packages/github.com/acme/lib/commits");
    let n = std::fs::read_dir(&commits).unwrap().count();
    assert_eq!(n, 2, "one checkout per commit (v1 and main)");
    // The plan names every package it read, with the commit.
    let out = m
        .nixoci()
        .args(["run", top, "--dry-run", "--json"])
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sources: Vec<String> = plan["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {} {}",
                p["name"].as_str().unwrap(),
                p["source"].as_str().unwrap(),
                p["commit"].as_str().map_or(0, str::len)
            )
        })
        .collect();
    for want in [
        "github.com/acme/lib github.com/acme/lib@v1 40",
        "github.com/acme/lib github.com/acme/lib 40",
        "github.com/acme/lib/sub github.com/acme/lib 40",
        "github.com/acme/vendored github.com/acme/vendored 0",
        "github.com/acme/assets github.com/acme/assets 40",
    ] {
        assert!(sources.contains(&want.to_string()), "{want}: {sources:?}");
    }

    // Offline: the mirror gone, the same run works from the cache.
    std::fs::rename(m.path("mirror"), m.path("mirror.away")).unwrap();
    assert_eq!(m.dry_run(top, "{}", &[]).unwrap(), want("v2"));
    let err = m.dry_run(top, "{}", &["--update"]).unwrap_err();
    assert!(
        err.contains("github.com/acme/lib") && err.contains("git cannot fetch it"),
        "{err}"
    );
    std::fs::rename(m.path("mirror.away"), m.path("mirror")).unwrap();

    // A new commit on the branch is seen on --update only; the tag stays.
    m.push_greeting("v3");
    assert_eq!(m.dry_run(top, "{}", &[]).unwrap(), want("v2"));
    assert_eq!(m.dry_run(top, "{}", &["--update"]).unwrap(), want("v3"));
    assert_eq!(m.dry_run(top, "{}", &[]).unwrap(), want("v3"));

    // Errors name each file of the import chain, remote ones by locator.
    let err = m.dry_run(top, r#"{"broken": true}"#, &[]).unwrap_err();
    assert!(
        err.contains("main.star:13:9: github.com/acme/lib/broken.star:2:") && err.contains("image"),
        "{err}"
    );
    let err = m.dry_run(top, r#"{"missing": true}"#, &[]).unwrap_err();
    assert!(
        err.contains("main.star:15:9") && err.contains("github.com/acme/missing"),
        "{err}"
    );

    // A link in a fetched repository never leads out of it.
    let err = m.dry_run(top, r#"{"escape": true}"#, &[]).unwrap_err();
    assert!(err.contains("through a symbolic link"), "{err}");
    // Locators are checked before git sees them.
    for bad in [
        "github.com/acme/lib@--upload-pack=touch",
        "github.com/acme/../lib",
        "gitlab.com/acme/lib",
    ] {
        let err = m.dry_run(bad, "{}", &[]).unwrap_err();
        assert!(
            err.contains(bad) || err.contains("not a package"),
            "{bad}: {err}"
        );
    }

    // A package run by its locator, at a tag: its files are named by it.
    let out = m.dry_run("github.com/acme/lib/sub@v1", "{}", &[]).unwrap();
    assert_eq!(out, vec!["sub sees lib:v3"]);
    let err = m
        .dry_run("github.com/acme/lib/static", "{}", &[])
        .unwrap_err();
    assert!(err.contains("kurtosis.yml"), "{err}");

    // `cache prune` empties the package cache.
    let out = m.nixoci().args(["cache", "prune"]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 cached package repositories"),
        "{}",
        show(&out)
    );
    assert!(!m.path("cache/nixoci/packages").exists());
}

/// `read_file` of an http(s) URL fetches it (a server on loopback); a
/// status that is no success is an error naming the URL.
#[test]
fn read_file_fetches_urls() {
    let m = Mirror::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 2048];
            let n = s.read(&mut buf).unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            let resp = if req.starts_with("GET /ok.txt ") {
                "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nserved"
                    .to_string()
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
            };
            s.write_all(resp.as_bytes()).unwrap();
        }
    });
    let top = m.path("top");
    let ok = format!(r#"{{"url": "http://127.0.0.1:{port}/ok.txt"}}"#);
    let out = m.dry_run(top.to_str().unwrap(), &ok, &[]).unwrap();
    assert_eq!(out.last().unwrap(), "url served");
    let missing = format!(r#"{{"url": "http://127.0.0.1:{port}/gone.txt"}}"#);
    let err = m.dry_run(top.to_str().unwrap(), &missing, &[]).unwrap_err();
    assert!(
        err.contains("main.star:25:") && err.contains("/gone.txt") && err.contains("404"),
        "{err}"
    );
    server.join().unwrap();
}
