//! Files written whole or not at all.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// `PID-N`: unique among this host's live processes and this process's
/// temporary files.
pub fn unique_suffix() -> String {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

/// A temporary name beside `path`, unique in this process and host-wide by
/// pid: `.NAME.tmp-PID-N`.
pub fn tmp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", unique_suffix()))
}

/// A file that could not be written, named.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct WriteError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// Write `bytes` to `path` through a temporary file and a rename, so a
/// reader sees the old content or the new, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let tmp = tmp_name(path);
    let result = fs::write(&tmp, bytes)
        .map_err(|source| WriteError {
            path: tmp.clone(),
            source,
        })
        .and_then(|()| {
            fs::rename(&tmp, path).map_err(|source| WriteError {
                path: path.to_path_buf(),
                source,
            })
        });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Remove a cache directory; returns how many entries it held.
pub fn prune_dir(dir: &Path) -> io::Result<usize> {
    let n = match fs::read_dir(dir) {
        Ok(rd) => rd.count(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    fs::remove_dir_all(dir)?;
    Ok(n)
}

/// Give the open file `f` the name `target` (`linkat` of `/proc/self/fd/N`,
/// which needs no capability, unlike `AT_EMPTY_PATH`; an unnamed
/// `O_TMPFILE` file gets its first name this way).
pub fn link_open_file(f: &fs::File, target: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let src = std::ffi::CString::new(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .map_err(io::Error::other)?;
    let dst = std::ffi::CString::new(target.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: two valid C paths.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            src.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_leave_the_file_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.json");
        write_atomic(&f, b"one").unwrap();
        write_atomic(&f, b"two").unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left");
        let e = write_atomic(&dir.path().join("missing/a.json"), b"x").unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        assert_eq!(prune_dir(dir.path()).unwrap(), 1);
        assert_eq!(prune_dir(dir.path()).unwrap(), 0);
    }
}
