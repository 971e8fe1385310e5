//! Fills made ahead of the snapshot chain. A snapshot can only be prepared
//! on its committed parent, so snapshots are made one after another, in
//! chain order, and each costs containerd a few milliseconds (two metadata
//! transactions to prepare, two to commit, and a walk of the new layer to
//! count its disk usage). Filling each snapshot inside that chain made the
//! fills wait for it, and it for them. Instead, a layer is filled as soon
//! as its digests are known, into a staging directory of its own beside
//! the overlayfs snapshotter's snapshots (the same filesystem, so store
//! files are still linked); when the chain reaches it, its snapshot is
//! prepared, the staged entries are renamed into the snapshot's upper
//! directory (a rename per top-level entry), and it is committed.
//!
//! Staging directories are `<snapshotter root>/nixoci-staging/<pid>-<n>`;
//! containerd never looks there. A build removes its own when it fails;
//! one killed mid-way leaves them to the next build, which removes those
//! whose process is gone.

use super::fill::{empty_dir, fill, FillStats};
use crate::image::layer::{LayerContent, LayerError};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where layers of one build are staged.
pub struct Stager {
    base: PathBuf,
    link: bool,
}

/// Staging directories made by this process: numbered across every build
/// it runs (a `nixoci run` builds several images at once).
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A layer being (or done being) staged.
pub type Staged = tokio::task::JoinHandle<Result<(PathBuf, FillStats), LayerError>>;

/// Layers extracted from their blobs as they arrived (see
/// [`super::extract`]), by blob digest, until the unpack takes them.
pub type Extracted = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, PathBuf>>>;

/// Remove what was extracted and not taken (a failed or aborted import).
pub fn remove_extracted(extracted: &Extracted) {
    let dirs: Vec<PathBuf> = extracted.lock().unwrap().drain().map(|(_, d)| d).collect();
    for d in dirs {
        remove(&d);
    }
}

impl Stager {
    /// Staging beside the snapshots of the overlayfs snapshotter whose
    /// root is `snapshotter_root`, when it is there and writable from
    /// here. Leftovers of builds whose process is gone are removed.
    pub fn new(snapshotter_root: &Path, link: bool) -> Option<Stager> {
        if !snapshotter_root.join("snapshots").is_dir() {
            return None;
        }
        let base = snapshotter_root.join("nixoci-staging");
        fs::create_dir_all(&base).ok()?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let probe = base.join(format!("{}-{n}-probe", std::process::id()));
        fs::create_dir(&probe).ok()?;
        fs::remove_dir(&probe).ok()?;
        if let Ok(rd) = fs::read_dir(&base) {
            for e in rd.flatten() {
                let name = e.file_name();
                let pid = name.to_str().and_then(|n| n.split('-').next());
                let gone = pid.is_some_and(|p| !Path::new("/proc").join(p).exists());
                if gone {
                    remove(&e.path());
                }
            }
        }
        Some(Stager { base, link })
    }

    /// A new, empty staging directory.
    pub fn new_dir(&self) -> io::Result<PathBuf> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = self.base.join(format!("{}-{n}", std::process::id()));
        fs::create_dir(&dir)?;
        Ok(dir)
    }

    /// Start filling `content` into a new staging directory.
    pub fn stage(&self, content: LayerContent, mtime: u64) -> Staged {
        let made = self.new_dir();
        let link = self.link;
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let dir = made.map_err(LayerError::Write)?;
            match fill(&dir, &content, mtime, link) {
                Ok(stats) => {
                    tracing::debug!(
                        dir = %dir.display(),
                        ?stats,
                        secs = started.elapsed().as_secs_f64(),
                        "staged"
                    );
                    Ok((dir, stats))
                }
                Err(e) => {
                    remove(&dir);
                    Err(e)
                }
            }
        })
    }
}

/// Move the staged entries of `staged` into `target` (an empty snapshot
/// directory) and remove the staging directory.
pub fn move_into(staged: &Path, target: &Path) -> io::Result<()> {
    for e in fs::read_dir(staged)? {
        let e = e?;
        fs::rename(e.path(), target.join(e.file_name()))?;
    }
    fs::remove_dir(staged)
}

/// Remove a staging directory that will not be used.
pub fn remove(dir: &Path) {
    empty_dir(dir);
    let _ = fs::remove_dir(dir);
}

/// Drop a staged layer that will not be used (its snapshot exists, or
/// containerd applies it): wait for its fill, then remove what it made.
pub async fn discard(staged: Staged) {
    if let Ok(Ok((dir, _))) = staged.await {
        let _ = tokio::task::spawn_blocking(move || remove(&dir)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two builds in one process (a `nixoci run` builds images at once)
    /// stage into directories of their own.
    #[test]
    fn builds_in_one_process_stage_apart() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("snapshots")).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (a, b) = (
            Stager::new(root.path(), false).unwrap(),
            Stager::new(root.path(), false).unwrap(),
        );
        let empty = || LayerContent::Store(Vec::new());
        let staged = rt.block_on(async {
            let (x, y) = (a.stage(empty(), 1), b.stage(empty(), 1));
            (x.await.unwrap().unwrap().0, y.await.unwrap().unwrap().0)
        });
        assert_ne!(staged.0, staged.1);
        let target = root.path().join("target");
        fs::create_dir(&target).unwrap();
        move_into(&staged.0, &target).unwrap();
        assert!(!staged.0.exists());
        remove(&staged.1);
        assert!(!staged.1.exists());
    }
}
