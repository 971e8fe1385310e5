//! Closures already read, by root store path, so that a rebuild of an
//! unchanged output asks Nix nothing but its evaluation.
//!
//! What `nix path-info` says of a valid store path (references, narHash,
//! narSize) never changes while the path stays valid. A path that is
//! deleted and made again (garbage collected and rebuilt, repaired,
//! optimised) is a new inode with a new ctime, so each entry keeps the
//! device, inode and ctime of every path of the closure, and is used only
//! while all of them still match.

use super::path_info::PathInfo;
use super::store_path::StorePath;
use serde::{Deserialize, Serialize};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Bumped whenever the entry format changes.
const FORMAT: u32 = 1;

#[derive(Debug, Clone, Default)]
pub struct ClosureCache {
    dir: Option<PathBuf>,
}

/// Which file a store path is on disk right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    dev: u64,
    ino: u64,
    ctime: i64,
    ctime_nsec: i64,
}

fn stamp(p: &Path) -> Option<Stamp> {
    let md = fs::symlink_metadata(p).ok()?;
    Some(Stamp {
        dev: md.dev(),
        ino: md.ino(),
        ctime: md.ctime(),
        ctime_nsec: md.ctime_nsec(),
    })
}

#[derive(Serialize, Deserialize)]
struct Entry {
    path: String,
    nar_hash: String,
    nar_size: u64,
    references: Vec<String>,
    stamp: Stamp,
}

impl ClosureCache {
    /// A cache under `dir` (nixoci's cache directory); `None` caches nothing.
    pub fn new(dir: Option<PathBuf>) -> Self {
        ClosureCache {
            dir: dir.map(|d| d.join(format!("closures-v{FORMAT}"))),
        }
    }

    fn path(&self, root: &StorePath) -> Option<PathBuf> {
        let name = root.to_string();
        let base = name.rsplit('/').next().unwrap_or(&name).to_string();
        self.dir.as_ref().map(|d| d.join(format!("{base}.json")))
    }

    /// The closure of `root`, if it was read before and every path of it
    /// is still the very file it was then.
    pub fn get(&self, root: &StorePath) -> Option<Vec<PathInfo>> {
        let file = self.path(root)?;
        let entries: Vec<Entry> = serde_json::from_slice(&fs::read(&file).ok()?).ok()?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            if stamp(Path::new(&e.path)) != Some(e.stamp) {
                let _ = fs::remove_file(&file);
                return None;
            }
            out.push(PathInfo {
                path: StorePath::parse(&e.path).ok()?,
                nar_hash: e.nar_hash,
                nar_size: e.nar_size,
                references: e
                    .references
                    .iter()
                    .map(|r| StorePath::parse(r))
                    .collect::<Result<_, _>>()
                    .ok()?,
            });
        }
        Some(out)
    }

    /// Best effort: a cache that cannot be written only costs speed.
    pub fn put(&self, root: &StorePath, infos: &[PathInfo]) {
        let (Some(dir), Some(file)) = (&self.dir, self.path(root)) else {
            return;
        };
        let mut entries = Vec::with_capacity(infos.len());
        for i in infos {
            let path = i.path.to_string();
            let Some(stamp) = stamp(Path::new(&path)) else {
                return;
            };
            entries.push(Entry {
                path,
                nar_hash: i.nar_hash.clone(),
                nar_size: i.nar_size,
                references: i.references.iter().map(|r| r.to_string()).collect(),
                stamp,
            });
        }
        if fs::create_dir_all(dir).is_err() {
            return;
        }
        let bytes = serde_json::to_vec(&entries).expect("entries serialise");
        if let Err(e) = crate::util::fs::write_atomic(&file, &bytes) {
            tracing::debug!("closure cache not written: {e}");
        }
    }

    /// Remove every entry; returns how many were removed.
    pub fn prune(&self) -> std::io::Result<usize> {
        self.dir
            .as_deref()
            .map_or(Ok(0), crate::util::fs::prune_dir)
    }
}
