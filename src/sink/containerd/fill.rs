//! The fast unpack path: when containerd runs on this host, in this mount
//! namespace, and its snapshotter hands out a plain directory for a prepared
//! snapshot (overlayfs: the `upperdir`; the first layer: a bind mount of the
//! snapshot's `fs`), nixoci writes the layer's entries there itself, straight
//! from the store, instead of having containerd extract the tar through an
//! overlay mount of every lower layer. The result is what `diff.Apply` makes
//! of the same tar: same names, types, modes, owners (0:0), link targets,
//! contents and times (atime = mtime = the layer mtime); a test checks it.
//! Anything else falls back to `diff.Apply`; `NIXOCI_UNPACK=apply` forces that.
//!
//! Into overlayfs snapshots, a store file that already is exactly what the
//! layer says (owner 0:0, the mode and mtime of the layer, on the same
//! filesystem) is hard-linked instead of copied: the same tree for the cost
//! of a directory entry. Store files never change in place, snapshots are
//! never written once committed, and a container that writes to one gets
//! a copy-up in its own upper directory, so the store is never touched
//! through a container (tests write, append, chmod and chown to a linked
//! file from a running container and compare the store file). What a link
//! changes: the store inode's link count and ctime, and files the store
//! already shares (`nix-store --optimise`) share one inode in the snapshot
//! too; no layer consumer reads either. Not linked: top-level store paths
//! that are single files (their ctime identifies them to the closure
//! cache), other owners (a single-user store), another filesystem
//! (`EXDEV`), the native snapshotter (it bind-mounts its directories) and
//! `NIXOCI_LINK=copy`.

use crate::image::layer::{Emit, LayerContent, LayerError, StoreFile};
use crate::image::tar::copy_exact;
use containerd_client::types::Mount;
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Mutex;

/// The directory to fill for a prepared snapshot, if nixoci can fill it:
/// as root, or as the user whose rootless containerd made it (`rootless`),
/// whose files are owned by 0:0 inside the engine's user namespace, as
/// the layer says, when this user writes them.
pub fn fill_target(mounts: &[Mount], rootless: bool) -> Option<PathBuf> {
    if !may_fill(rootless) || mounts.len() != 1 {
        return None;
    }
    let m = &mounts[0];
    let dir = match m.r#type.as_str() {
        "bind" => PathBuf::from(&m.source),
        "overlay" => PathBuf::from(m.options.iter().find_map(|o| o.strip_prefix("upperdir="))?),
        _ => return None,
    };
    // It must be visible here (same mount namespace) and still empty.
    let empty = fs::read_dir(&dir).ok()?.next().is_none();
    (dir.is_absolute() && empty).then_some(dir)
}

/// Whether nixoci may fill snapshots itself: as root, or as the user of a
/// rootless engine; not with `NIXOCI_UNPACK=apply`.
pub fn may_fill(rootless: bool) -> bool {
    // SAFETY: geteuid has no preconditions.
    std::env::var("NIXOCI_UNPACK").as_deref() != Ok("apply")
        && (unsafe { libc::geteuid() } == 0 || rootless)
}

/// Writes entries into a directory as `diff.Apply` would extract them.
/// Directories and symlinks are made in order; store files are copied by
/// copier threads, when there are any.
pub struct DirFiller {
    root: PathBuf,
    mtime: libc::timespec,
    /// The device of `root` where store files may be linked into it.
    link_dev: Option<u64>,
    linked: std::sync::atomic::AtomicUsize,
    copied: std::sync::atomic::AtomicUsize,
    cloned: std::sync::atomic::AtomicUsize,
    /// Directories and their modes, to get both once their children are
    /// written (until then they are writable by their owner: a user's
    /// rootless fill has no CAP_DAC_OVERRIDE).
    dirs: Vec<(PathBuf, u32)>,
    copies: Option<SyncSender<CopyJob>>,
}

/// A store file for a copier thread.
struct CopyJob {
    src: fs::File,
    dest: PathBuf,
    mode: u32,
    size: u64,
}

/// What a fill did with the store files.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FillStats {
    pub linked: usize,
    /// Copied by cloning (`FICLONE`).
    pub cloned: usize,
    /// Copied byte for byte.
    pub copied: usize,
}

/// Whether store files may be linked into snapshots of `snapshotter`.
pub fn may_link(snapshotter: &str) -> bool {
    snapshotter == "overlayfs" && std::env::var("NIXOCI_LINK").as_deref() != Ok("copy")
}

/// Whether the store file of `md` (for entry `name`) already is what the
/// layer says: owner 0:0, `mode`, the layer mtime, on device `dev`; and
/// not a top-level store path (see the module comment).
fn linkable(name: &[u8], md: &fs::Metadata, mode: u32, mtime: libc::time_t, dev: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    let top_level = name
        .strip_prefix(b"nix/store/")
        .is_some_and(|rest| !rest.contains(&b'/'));
    !top_level
        && md.uid() == 0
        && md.gid() == 0
        && md.mode() & 0o7777 == mode
        && md.mtime() == mtime
        && md.mtime_nsec() == 0
        && md.dev() == dev
}

/// Copier threads per fill: the copies are kernel work, which a second
/// core halves when it is free (the last, largest layers).
const COPIERS: usize = 2;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other("NUL in path"))
}

impl DirFiller {
    pub fn new(root: &Path, mtime: u64) -> Self {
        DirFiller {
            root: root.to_path_buf(),
            mtime: filler_mtime(mtime),
            link_dev: None,
            linked: Default::default(),
            copied: Default::default(),
            cloned: Default::default(),
            dirs: Vec::new(),
            copies: None,
        }
    }

    fn path(&self, name: &[u8]) -> PathBuf {
        let name = name.strip_suffix(b"/").unwrap_or(name);
        self.root.join(OsStr::from_bytes(name))
    }

    fn set_times(&self, p: &Path) -> io::Result<()> {
        set_times(p, self.mtime)
    }

    /// Give directories their modes and times, deepest first.
    pub fn finish(mut self) -> io::Result<()> {
        let dirs = std::mem::take(&mut self.dirs);
        for (d, mode) in dirs.iter().rev() {
            fs::set_permissions(d, fs::Permissions::from_mode(*mode))?;
            self.set_times(d)?;
        }
        Ok(())
    }
}

fn set_times(p: &Path, mtime: libc::timespec) -> io::Result<()> {
    let times = [mtime, mtime];
    let c = cpath(p)?;
    // SAFETY: a valid C path and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Copy a store file to `dest`: a clone where the filesystem shares
/// extents (`FICLONE`: btrfs, XFS; the same bytes for no space), else
/// inside the kernel (`copy_file_range`: no trip through a buffer here);
/// where the kernel cannot (another filesystem on an old kernel, say), the
/// rest is read and written. Whether it was cloned.
fn copy_store_file(
    src: &mut fs::File,
    dest: &Path,
    mode: u32,
    size: u64,
    mtime: libc::timespec,
) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)?;
    let cloned = size > 0 && clone_whole(src, &f)?;
    let mut left = if cloned { 0 } else { size };
    while left > 0 {
        let want = usize::try_from(left.min(1 << 30)).unwrap_or(1 << 30);
        // SAFETY: two open descriptors; null offsets use (and advance)
        // each file's own position.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                std::ptr::null_mut(),
                f.as_raw_fd(),
                std::ptr::null_mut(),
                want,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if !matches!(
                e.raw_os_error(),
                Some(libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP)
            ) {
                return Err(e);
            }
            // Both positions have advanced by what was copied.
            let mut buf = vec![0u8; 1 << 16];
            copy_exact(src, &mut f, left, &mut buf, &dest.display().to_string())?;
            break;
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while being read", dest.display()),
            ));
        }
        left -= n as u64;
    }
    drop(f);
    fs::set_permissions(dest, fs::Permissions::from_mode(mode))?;
    set_times(dest, mtime)?;
    Ok(cloned)
}

/// Make the empty file `dest` a clone of all of `src` (`FICLONE`).
/// `Ok(false)` where the filesystems cannot (ext4, tmpfs, two
/// filesystems): then the file is copied.
fn clone_whole(src: &fs::File, dest: &fs::File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: two open descriptors; FICLONE takes the source's as its
    // argument and changes only `dest`.
    let r = unsafe { libc::ioctl(dest.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(
            libc::EOPNOTSUPP
            | libc::EXDEV
            | libc::EINVAL
            | libc::ENOTTY
            | libc::ENOSYS
            | libc::EPERM
            | libc::ETXTBSY,
        ) => Ok(false),
        _ => Err(e),
    }
}

impl Emit for DirFiller {
    fn dir(&mut self, name: &[u8], mode: u32) -> io::Result<()> {
        let p = self.path(name);
        match fs::create_dir(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && p.is_dir() => {}
            Err(e) => return Err(e),
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(mode | 0o700))?;
        self.dirs.push((p, mode));
        Ok(())
    }

    fn symlink(&mut self, name: &[u8], target: &[u8]) -> io::Result<()> {
        let p = self.path(name);
        symlink(OsStr::from_bytes(target), &p)?;
        self.set_times(&p)
    }

    fn file(
        &mut self,
        name: &[u8],
        mode: u32,
        size: u64,
        content: &mut dyn Read,
        buf: &mut [u8],
    ) -> io::Result<()> {
        let p = self.path(name);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)?;
        copy_exact(content, &mut f, size, buf, &p.display().to_string())?;
        drop(f);
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
        self.set_times(&p)
    }

    /// Linked where the store file already is what the layer says (see
    /// `linkable`); else opened and copied.
    fn store_file_at(
        &mut self,
        name: &[u8],
        mode: u32,
        md: &fs::Metadata,
        path: &Path,
    ) -> Option<io::Result<()>> {
        let dev = self.link_dev?;
        if !linkable(name, md, mode, self.mtime.tv_sec, dev) {
            return None;
        }
        // By path: no open and no stat beyond the walk's (the store is
        // root's and never changes in place).
        fs::hard_link(path, self.path(name)).ok()?;
        self.linked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(Ok(()))
    }

    /// Handed to a copier thread (a duplicate of the open file), or copied
    /// here when there is none.
    fn store_file(
        &mut self,
        name: &[u8],
        mode: u32,
        size: u64,
        src: &mut StoreFile<'_>,
        _buf: &mut [u8],
    ) -> io::Result<()> {
        let dest = self.path(name);
        self.copied
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match &self.copies {
            Some(tx) => {
                let job = CopyJob {
                    src: src.inner.try_clone()?,
                    dest,
                    mode,
                    size,
                };
                tx.send(job)
                    .map_err(|_| io::Error::other("the copier threads ended"))
            }
            None => {
                if copy_store_file(&mut src.inner, &dest, mode, size, self.mtime)? {
                    self.cloned
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(())
            }
        }
    }
}

/// Fill `dir` with the layer's entries: the walk makes directories and
/// symlinks in order, copier threads copy the files; directories get their
/// times when every copy is done.
pub fn fill(
    dir: &Path,
    content: &LayerContent,
    mtime: u64,
    link: bool,
) -> Result<FillStats, LayerError> {
    use std::os::unix::fs::MetadataExt;
    let mut filler = DirFiller::new(dir, mtime);
    if link {
        filler.link_dev = fs::metadata(dir).ok().map(|m| m.dev());
    }
    let first_error: Mutex<Option<io::Error>> = Mutex::new(None);
    let cloned = std::sync::atomic::AtomicUsize::new(0);
    // Each queued job holds an open file: a short queue keeps descriptors few.
    let (tx, rx) = sync_channel::<CopyJob>(64);
    let rx = Mutex::new(rx);
    let walked = std::thread::scope(|scope| {
        for _ in 0..COPIERS {
            scope.spawn(|| loop {
                let job = rx.lock().unwrap().recv();
                let Ok(mut job) = job else { break };
                let copied = copy_store_file(
                    &mut job.src,
                    &job.dest,
                    job.mode,
                    job.size,
                    filler_mtime(mtime),
                );
                match copied {
                    Ok(true) => {
                        cloned.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        first_error.lock().unwrap().get_or_insert(e);
                    }
                }
            });
        }
        filler.copies = Some(tx);
        let walked = content.write_to(&mut filler, &crate::util::interrupt::interrupted);
        // The copiers end when the queue is empty and closed.
        filler.copies = None;
        walked
    });
    walked?;
    if let Some(e) = first_error.into_inner().unwrap() {
        return Err(LayerError::Write(e));
    }
    let cloned = cloned.into_inner() + filler.cloned.load(std::sync::atomic::Ordering::Relaxed);
    let stats = FillStats {
        linked: filler.linked.load(std::sync::atomic::Ordering::Relaxed),
        cloned,
        copied: filler.copied.load(std::sync::atomic::Ordering::Relaxed) - cloned,
    };
    filler.finish().map_err(LayerError::Write)?;
    Ok(stats)
}

fn filler_mtime(mtime: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    }
}

/// Remove everything below `dir` (after a failed fill), keeping `dir`.
pub fn empty_dir(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            // Store files are read-only: make directories writable to remove them.
            let _ = make_writable(&p);
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                let _ = fs::remove_dir_all(&p);
            } else {
                let _ = fs::remove_file(&p);
            }
        }
    }
}

fn make_writable(p: &Path) -> io::Result<()> {
    let md = fs::symlink_metadata(p)?;
    if md.is_dir() {
        fs::set_permissions(p, fs::Permissions::from_mode(0o755))?;
        for e in fs::read_dir(p)?.flatten() {
            make_writable(&e.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_files_are_copied_exactly_or_refused() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&src, &data).unwrap();
        let t = filler_mtime(1);
        let dest = d.path().join("dest");
        // Cloned or copied: the test's temp dir may or may not share extents.
        copy_store_file(&mut fs::File::open(&src).unwrap(), &dest, 0o555, 200_000, t).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), data);
        let md = fs::metadata(&dest).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o555);
        assert_eq!(std::os::unix::fs::MetadataExt::mtime(&md), 1);
        // A file shorter than its recorded size (changed under us) is an error.
        let e = copy_store_file(
            &mut fs::File::open(&src).unwrap(),
            &d.path().join("short"),
            0o444,
            300_000,
            t,
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("shrank"), "{e}");
    }

    /// Where the filesystem shares extents (XFS here, on a loop device),
    /// a store file is cloned: the same bytes, mode and time, sharing the
    /// source's extents; from another filesystem it is copied.
    #[test]
    fn store_files_are_cloned_where_the_filesystem_shares_extents() {
        use std::process::Command;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("not root: no loop mount, nothing to check");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let (img, mnt) = (d.path().join("xfs.img"), d.path().join("mnt"));
        fs::File::create(&img).unwrap().set_len(320 << 20).unwrap();
        let ok = |c: &mut Command| {
            let o = c.output().unwrap();
            assert!(
                o.status.success(),
                "{c:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        ok(Command::new("mkfs.xfs")
            .args(["-q", "-m", "reflink=1"])
            .arg(&img));
        fs::create_dir(&mnt).unwrap();
        ok(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt));
        let check = std::panic::catch_unwind(|| {
            let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
            let src = mnt.join("src");
            fs::write(&src, &data).unwrap();
            let t = filler_mtime(1);
            let dest = mnt.join("clone");
            let cloned = copy_store_file(
                &mut fs::File::open(&src).unwrap(),
                &dest,
                0o555,
                1_000_000,
                t,
            )
            .unwrap();
            assert!(cloned);
            assert_eq!(fs::read(&dest).unwrap(), data);
            let md = fs::metadata(&dest).unwrap();
            assert_eq!(md.permissions().mode() & 0o7777, 0o555);
            assert_eq!(std::os::unix::fs::MetadataExt::mtime(&md), 1);
            // The extents are shared with the source (filefrag's flag).
            let o = Command::new("filefrag")
                .arg("-v")
                .arg(&dest)
                .output()
                .unwrap();
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(out.contains("shared"), "{out}");
            // From another filesystem: copied.
            let other = d.path().join("other");
            fs::write(&other, &data).unwrap();
            let copied = copy_store_file(
                &mut fs::File::open(&other).unwrap(),
                &mnt.join("copy"),
                0o444,
                1_000_000,
                t,
            )
            .unwrap();
            assert!(!copied);
            assert_eq!(fs::read(mnt.join("copy")).unwrap(), data);
        });
        let _ = Command::new("umount").arg(&mnt).status();
        check.unwrap();
    }

    /// Only a file that already is what the layer says is linked.
    #[test]
    fn only_files_as_the_layer_says_are_linked() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("f");
        fs::write(&src, b"data").unwrap();
        fs::set_permissions(&src, fs::Permissions::from_mode(0o444)).unwrap();
        set_times(&src, filler_mtime(1)).unwrap();
        let md = fs::metadata(&src).unwrap();
        let name = b"nix/store/abc-x/share/f";
        let ok = |name: &[u8], mode, mtime, dev| linkable(name, &md, mode, mtime, dev);
        // (as root, which the tests are: owner 0:0)
        if md.uid() != 0 {
            return;
        }
        assert!(ok(name, 0o444, 1, md.dev()));
        assert!(
            !ok(b"nix/store/abc-x", 0o444, 1, md.dev()),
            "a top-level file"
        );
        assert!(!ok(name, 0o555, 1, md.dev()), "another mode");
        assert!(!ok(name, 0o444, 2, md.dev()), "another mtime");
        assert!(!ok(name, 0o444, 1, md.dev() + 1), "another filesystem");
        // Another owner (a single-user Nix store): copied.
        std::os::unix::fs::chown(&src, Some(1000), Some(1000)).unwrap();
        let md = fs::metadata(&src).unwrap();
        assert!(!linkable(name, &md, 0o444, 1, md.dev()));
        // A link is the same inode.
        let dest = d.path().join("linked");
        fs::hard_link(&src, &dest).unwrap();
        assert_eq!(fs::metadata(&dest).unwrap().ino(), md.ino());
    }
}
