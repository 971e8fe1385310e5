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
    /// Layers planned ahead (see [`Stager::plan`]), filled one at a time,
    /// in chain order, by one thread.
    queue: std::sync::Mutex<Option<std::sync::mpsc::Sender<Queued>>>,
    /// Every staging directory made for this build (see [`Stager::sweep`]).
    made: std::sync::Mutex<Vec<PathBuf>>,
}

/// What the staging thread is asked.
enum Queued {
    /// A layer to fill ahead.
    Fill {
        dir: io::Result<PathBuf>,
        content: LayerContent,
        mtime: u64,
        wanted: std::sync::Arc<std::sync::atomic::AtomicBool>,
        done: tokio::sync::oneshot::Sender<Result<(PathBuf, FillStats), LayerError>>,
    },
    /// Say when everything queued before is done.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// A layer filled ahead: its fill, and whether it is still wanted (a
/// layer not yet filled when it is no longer wanted is not filled).
pub struct PlannedFill {
    pub staged: Staged,
    wanted: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl PlannedFill {
    /// Not wanted: not filled if not begun; removed once filled.
    pub async fn discard(self) {
        self.wanted.store(false, Ordering::Relaxed);
        discard(self.staged).await
    }
}

/// Layers of one image filled ahead, by index, until the unpack takes them.
pub type Planned = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<usize, PlannedFill>>>;

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
        Some(Stager {
            base,
            link,
            queue: std::sync::Mutex::new(None),
            made: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// A new, empty staging directory.
    pub fn new_dir(&self) -> io::Result<PathBuf> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = self.base.join(format!("{}-{n}", std::process::id()));
        fs::create_dir(&dir)?;
        self.made.lock().unwrap().push(dir.clone());
        Ok(dir)
    }

    /// Wait until the staging thread has done everything queued so far.
    pub async fn settle(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = match self.queue.lock().unwrap().as_ref() {
            Some(q) => q.send(Queued::Barrier(tx)).is_ok(),
            None => false,
        };
        if sent {
            let _ = rx.await;
        }
    }

    /// Remove every staging directory of this build that is still there
    /// (a failed or interrupted build; call once nothing fills them:
    /// after [`Stager::settle`]). Those moved into snapshots are gone.
    pub fn sweep(&self) {
        let made = std::mem::take(&mut *self.made.lock().unwrap());
        for d in made.iter().filter(|d| d.exists()) {
            remove(d);
        }
    }

    /// Start filling `content` into a new staging directory.
    pub fn stage(&self, content: LayerContent, mtime: u64) -> Staged {
        let made = self.new_dir();
        let link = self.link;
        tokio::task::spawn_blocking(move || fill_staged(made, &content, mtime, link))
    }

    /// Queue `content` (a layer this build will make) to be filled ahead,
    /// before it is built: fills are made one at a time, in the order
    /// planned (the chain's), by one thread, while the layers are built.
    /// A layer of many small files then is ready when the chain comes to
    /// it, whenever it is built. `rt` runs the handle.
    pub fn plan(
        &self,
        rt: &tokio::runtime::Handle,
        content: LayerContent,
        mtime: u64,
    ) -> PlannedFill {
        let (done, rx) = tokio::sync::oneshot::channel();
        let wanted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let job = Queued::Fill {
            dir: self.new_dir(),
            content,
            mtime,
            wanted: std::sync::Arc::clone(&wanted),
            done,
        };
        let mut queue = self.queue.lock().unwrap();
        let tx = queue.get_or_insert_with(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Queued>();
            let link = self.link;
            std::thread::spawn(move || {
                for job in rx {
                    let (dir, content, mtime, wanted, done) = match job {
                        Queued::Barrier(tx) => {
                            let _ = tx.send(());
                            continue;
                        }
                        Queued::Fill {
                            dir,
                            content,
                            mtime,
                            wanted,
                            done,
                        } => (dir, content, mtime, wanted, done),
                    };
                    // Not wanted any more (the build failed, the layer
                    // came from the cache): not filled.
                    if !wanted.load(Ordering::Relaxed) {
                        if let Ok(d) = &dir {
                            remove(d);
                        }
                        let _ = done.send(Err(LayerError::Cancelled));
                        continue;
                    }
                    let filled = fill_staged(dir, &content, mtime, link);
                    if let Err(Ok((dir, _))) = done.send(filled) {
                        remove(&dir);
                    }
                }
            });
            tx
        });
        if let Err(std::sync::mpsc::SendError(Queued::Fill { dir: Ok(d), .. })) = tx.send(job) {
            remove(&d);
        }
        let staged = rt.spawn(async move {
            rx.await.unwrap_or_else(|_| {
                Err(LayerError::Write(io::Error::other(
                    "the staging thread ended",
                )))
            })
        });
        PlannedFill { staged, wanted }
    }
}

/// Fill `content` into the staging directory `made`; it is removed when
/// that fails.
fn fill_staged(
    made: io::Result<PathBuf>,
    content: &LayerContent,
    mtime: u64,
    link: bool,
) -> Result<(PathBuf, FillStats), LayerError> {
    let started = std::time::Instant::now();
    let dir = made.map_err(LayerError::Write)?;
    match fill(&dir, content, mtime, link) {
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

/// Drop every layer planned and not taken (a failed build, layers from
/// the cache, an image done).
pub async fn discard_planned(planned: &Planned) {
    let all: Vec<PlannedFill> = planned.lock().unwrap().drain().map(|(_, p)| p).collect();
    for p in &all {
        p.wanted.store(false, Ordering::Relaxed);
    }
    for p in all {
        p.discard().await;
    }
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
