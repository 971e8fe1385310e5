//! Copying files out of a running container (`store` of a task,
//! `plan.store_service_files`), through `/proc/PID/root` of its process.
//!
//! The container is outside input: every path is resolved with
//! `openat2(RESOLVE_IN_ROOT)`, so a symbolic link in it (`/data -> /etc`)
//! resolves inside the container's root and never reaches the host's files;
//! below the named path, links are copied as links and never followed.
//! Devices, sockets and FIFOs are skipped.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn cstr(p: &OsStr) -> io::Result<CString> {
    CString::new(p.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
}

fn openat(dir: &OwnedFd, name: &OsStr, flags: i32) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: a valid directory fd and C string; the result is checked.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open `path` (absolute in the container) under `root`, resolved as if
/// `root` were `/`.
fn open_in_root(root: &OwnedFd, path: &str) -> io::Result<OwnedFd> {
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    let c = cstr(OsStr::new(rel))?;
    // SAFETY: open_how is plain data; zero is its default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 with a valid fd, C string and open_how of the size
    // given; the result is checked.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: fstat into a zeroed struct; the result is checked.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// Copy `src` (absolute in the container of process `pid`) to `dst` on the
/// host: a file to `dst`, a directory's tree to `dst`. A `src` ending in
/// `/.` is the same as the directory. The number of files copied.
/// [`copy_out`] where the container's engine lives: here, or (rootless)
/// by nixoci's helper inside the engine's namespaces, where the
/// container's files are readable whatever their owner.
pub fn copy_out_where(
    pid: u32,
    src: &str,
    dst: &Path,
    host: &super::network::NetHost,
) -> io::Result<u64> {
    let ns = match host {
        super::network::NetHost::Host => return copy_out(pid, src, dst),
        super::network::NetHost::Engine(ns) => ns,
        super::network::NetHost::Gone => {
            return Err(io::Error::other("the rootless containerd has stopped"))
        }
    };
    let out = ns.run_helper(&[
        OsStr::new("copy-out"),
        OsStr::new(&pid.to_string()),
        OsStr::new(src),
        dst.as_os_str(),
    ])?;
    out.trim()
        .parse()
        .map_err(|_| io::Error::other(format!("nixoci's helper answered '{}'", out.trim())))
}

pub fn copy_out(pid: u32, src: &str, dst: &Path) -> io::Result<u64> {
    let root = File::open(format!("/proc/{pid}/root"))?;
    let root = OwnedFd::from(root);
    let found = open_in_root(&root, src)?;
    let st = fstat(&found)?;
    let mut n = 0;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {
            let dir = openat(&found, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY)?;
            copy_dir(&dir, dst, st.st_mode & 0o7777, &mut n)?;
        }
        libc::S_IFREG => {
            let file = openat(&found, OsStr::new("."), libc::O_RDONLY).or_else(|_| {
                // An O_PATH fd of a file reopens through /proc/self/fd.
                let p = PathBuf::from(format!("/proc/self/fd/{}", found.as_raw_fd()));
                File::open(p).map(OwnedFd::from)
            })?;
            copy_file(file, dst, st.st_mode & 0o7777)?;
            n += 1;
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{src} is neither a file nor a directory"),
            ))
        }
    }
    Ok(n)
}

fn copy_file(from: OwnedFd, dst: &Path, mode: u32) -> io::Result<()> {
    let mut from = File::from(from);
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)?;
    io::copy(&mut from, &mut to)?;
    to.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))
}

fn entries(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    let again = openat(dir, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY)?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", again.as_raw_fd()));
    let mut names: Vec<OsString> = std::fs::read_dir(path)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    Ok(names)
}

fn copy_dir(dir: &OwnedFd, dst: &Path, mode: u32, n: &mut u64) -> io::Result<()> {
    std::fs::DirBuilder::new().mode(0o700).create(dst)?;
    for name in entries(dir)? {
        let target = dst.join(&name);
        let path = openat(dir, &name, libc::O_PATH | libc::O_NOFOLLOW)?;
        let st = fstat(&path)?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let sub = openat(
                    dir,
                    &name,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                )?;
                copy_dir(&sub, &target, st.st_mode & 0o7777, n)?;
            }
            libc::S_IFREG => {
                let f = openat(dir, &name, libc::O_RDONLY | libc::O_NOFOLLOW)?;
                copy_file(f, &target, st.st_mode & 0o7777)?;
                *n += 1;
            }
            libc::S_IFLNK => {
                let c = cstr(&name)?;
                let mut buf = vec![0u8; 4096];
                // SAFETY: readlinkat into a buffer of the given length.
                let len = unsafe {
                    libc::readlinkat(
                        dir.as_raw_fd(),
                        c.as_ptr(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                    )
                };
                if len < 0 {
                    return Err(io::Error::last_os_error());
                }
                buf.truncate(len as usize);
                std::os::unix::fs::symlink(OsStr::from_bytes(&buf), &target)?;
                *n += 1;
            }
            _ => {}
        }
    }
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode & 0o777))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our own process's root is the host's `/`: a link to `/etc` inside a
    /// copied tree stays a link; the tree is copied.
    #[test]
    fn copies_a_tree_and_keeps_links_as_links() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("a/b")).unwrap();
        std::fs::write(src.join("a/b/f"), b"hello").unwrap();
        std::os::unix::fs::symlink("/etc", src.join("a/etc")).unwrap();
        let dst = d.path().join("dst");
        let n = copy_out(std::process::id(), src.to_str().unwrap(), &dst).unwrap();
        assert_eq!(n, 2);
        assert_eq!(std::fs::read(dst.join("a/b/f")).unwrap(), b"hello");
        assert_eq!(
            std::fs::read_link(dst.join("a/etc")).unwrap(),
            Path::new("/etc")
        );
        let e = copy_out(
            std::process::id(),
            "/nonexistent-nixoci",
            &d.path().join("x"),
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
