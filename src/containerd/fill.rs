//! The fast unpack path: when containerd runs on this host, in this mount
//! namespace, and its snapshotter hands out a plain directory for a prepared
//! snapshot (overlayfs: the `upperdir`; the first layer: a bind mount of the
//! snapshot's `fs`), nixoci writes the layer's entries there itself, straight
//! from the store, instead of having containerd extract the tar through an
//! overlay mount of every lower layer. The result is what `diff.Apply` makes
//! of the same tar: same names, types, modes, owners (0:0), link targets,
//! contents and times (atime = mtime = the layer mtime); a test checks it.
//! Anything else falls back to `diff.Apply`; `NIXOCI_UNPACK=apply` forces that.

use crate::image::layer::{Emit, LayerContent, LayerError};
use crate::image::tar::copy_exact;
use containerd_client::types::Mount;
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// The directory to fill for a prepared snapshot, if nixoci can fill it.
pub fn fill_target(mounts: &[Mount]) -> Option<PathBuf> {
    if std::env::var("NIXOCI_UNPACK").as_deref() == Ok("apply") {
        return None;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || mounts.len() != 1 {
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

/// Writes entries into a directory as `diff.Apply` would extract them.
pub struct DirFiller {
    root: PathBuf,
    mtime: libc::timespec,
    /// Directories, to get their times once their children are written.
    dirs: Vec<PathBuf>,
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other("NUL in path"))
}

impl DirFiller {
    pub fn new(root: &Path, mtime: u64) -> Self {
        DirFiller {
            root: root.to_path_buf(),
            mtime: libc::timespec {
                tv_sec: mtime as libc::time_t,
                tv_nsec: 0,
            },
            dirs: Vec::new(),
        }
    }

    fn path(&self, name: &[u8]) -> PathBuf {
        let name = name.strip_suffix(b"/").unwrap_or(name);
        self.root.join(OsStr::from_bytes(name))
    }

    fn set_times(&self, p: &Path) -> io::Result<()> {
        let times = [self.mtime, self.mtime];
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

    /// Give directories their times, deepest first.
    pub fn finish(mut self) -> io::Result<()> {
        let dirs = std::mem::take(&mut self.dirs);
        for d in dirs.iter().rev() {
            self.set_times(d)?;
        }
        Ok(())
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
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
        self.dirs.push(p);
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
}

/// Fill `dir` with the layer's entries.
pub fn fill(dir: &Path, content: &LayerContent, mtime: u64) -> Result<(), LayerError> {
    let mut filler = DirFiller::new(dir, mtime);
    content.write_to(&mut filler, &AtomicBool::new(false))?;
    filler.finish().map_err(LayerError::Write)
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
