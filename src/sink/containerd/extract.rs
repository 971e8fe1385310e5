//! Layers that arrive as blobs (a pull, a load) extracted by nixoci into a
//! staging directory (see [`super::stage`]) while their bytes arrive,
//! instead of containerd's `diff.Apply` afterwards, through an overlay
//! mount of every lower layer, one layer at a time.
//!
//! The result must be what `diff.Apply` makes of the same blob in an
//! overlayfs upper directory: names, types, modes, owners, link targets,
//! contents, times (atime = the later of the entry's atime and mtime;
//! directories get theirs after their contents), `user.` and `security.`
//! extended attributes, whiteouts as 0:0 character devices and opaque
//! directories as `trusted.overlay.opaque=y`. A test compares the two.
//!
//! Only what can be made exactly so is extracted. Anything else declines
//! the layer: device nodes, fifos, sparse files, a `..` component, an entry
//! under something that is not a directory of this layer, an entry over
//! one already made, a hard link to anything but a file of this layer, a
//! PAX record not listed here, other extended attributes, data after the
//! end of the archive, a stream that does not decompress. Then the staging
//! directory is removed and containerd applies the blob, as before, with
//! its own rules and errors. So a hostile archive never has its names
//! interpreted here beyond this: every entry is made relative to the
//! staging directory, under directories this extraction made itself, with
//! calls that never follow a symlink in the last component.
//!
//! The bytes are checked twice: the blob against its digest (by the
//! caller, before anything is committed) and the decompressed stream
//! against the layer's diff_id (here; a mismatch declines, and containerd's
//! apply then reports it).

use crate::oci::digest::{Digest, HashingWriter};
use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What came of an extraction.
#[derive(Debug)]
pub enum Outcome {
    /// Every entry was made; the decompressed stream had this digest.
    Extracted { diff_id: Digest, entries: usize },
    /// Not extracted (why); the caller removes the directory.
    Declined(String),
}

/// Media types of layers that may be extracted (their compression is
/// told by the stream's first bytes, as containerd tells it).
pub fn extractable(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Other,
}

/// The reason an entry declines the layer.
#[derive(Debug)]
struct Decline(String);

impl From<io::Error> for Decline {
    fn from(e: io::Error) -> Self {
        Decline(e.to_string())
    }
}

/// A reader that hashes what passes through it.
struct Hashed<R> {
    inner: R,
    hash: HashingWriter<io::Sink>,
}

impl<R: Read> Read for Hashed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Extract the layer blob `blob` reads into the empty directory `dir`.
/// `rootless`: this process is the user of a rootless engine (every entry
/// must be owned by 0:0, which files this user makes are in there; no
/// whiteouts, no extended attributes). `Err` only for a failure of this
/// host (writing `dir`); a layer nixoci does not extract is `Declined`.
pub fn extract(blob: &mut dyn Read, dir: &Path, rootless: bool) -> io::Result<Outcome> {
    let mut blob = BufReader::with_capacity(1 << 16, blob);
    let head = blob.fill_buf()?.to_vec();
    let stream: Box<dyn Read + '_> = if head.starts_with(&[0x1f, 0x8b, 0x08]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(blob))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(blob)?)
    } else {
        Box::new(blob)
    };
    let mut stream = Hashed {
        inner: stream,
        hash: HashingWriter::new(io::sink()),
    };
    let root = open_dir(dir)?;
    let mut x = Extractor {
        root,
        rootless,
        made: HashMap::new(),
        dirs: Vec::new(),
        buf: vec![0u8; 1 << 20],
        entries: 0,
    };
    let walked = x.entries(&mut stream);
    match walked {
        Ok(()) => {}
        Err(Decline(why)) => return Ok(Outcome::Declined(why)),
    }
    // What follows the end of the archive is hashed too (it is part of
    // the diff); containerd's reader takes zeros there, nothing else.
    loop {
        let n = match stream.read(&mut x.buf) {
            Ok(n) => n,
            Err(e) => return Ok(Outcome::Declined(format!("reading the layer: {e}"))),
        };
        if n == 0 {
            break;
        }
        if x.buf[..n].iter().any(|b| *b != 0) {
            return Ok(Outcome::Declined(
                "data after the end of the archive".into(),
            ));
        }
    }
    x.finish_dirs()?;
    let (diff_id, _, _) = stream.hash.finish();
    Ok(Outcome::Extracted {
        diff_id,
        entries: x.entries,
    })
}

struct Extractor {
    root: OwnedFd,
    rootless: bool,
    /// Every path made so far (relative, normalized), and what it is.
    made: HashMap<Vec<u8>, Kind>,
    /// Directories made, with their mode and times, for the end.
    dirs: Vec<(CString, u32, [libc::timespec; 2])>,
    buf: Vec<u8>,
    entries: usize,
}

/// An entry's metadata, as containerd applies it.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    times: [libc::timespec; 2],
    xattrs: Vec<(CString, Vec<u8>)>,
}

fn decline<T>(why: impl Into<String>) -> Result<T, Decline> {
    Err(Decline(why.into()))
}

/// `name` as containerd cleans it (empty and `.` components dropped), or
/// a decline for `..`. Empty: the root itself.
fn normalize(name: &[u8]) -> Result<Vec<u8>, Decline> {
    let mut out: Vec<u8> = Vec::with_capacity(name.len());
    for c in name.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return decline("a '..' in an entry's name"),
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(out)
}

fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

fn cstr(b: &[u8]) -> Result<CString, Decline> {
    CString::new(b).or_else(|_| decline("a NUL in a name"))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: a valid C path; the descriptor is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Seconds and nanoseconds of a PAX time (`1700000000.5`); as containerd
/// bounds times, one outside 1970..2262 is the epoch.
fn pax_time(v: &[u8]) -> Result<libc::timespec, Decline> {
    let s = std::str::from_utf8(v).or_else(|_| decline("a PAX time that is not text"))?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs
        .parse()
        .or_else(|_| decline(format!("a PAX time '{s}'")))?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return decline(format!("a PAX time '{s}'"));
    }
    let mut nanos: i64 = 0;
    for (i, d) in frac.bytes().take(9).enumerate() {
        nanos += i64::from(d - b'0') * 10i64.pow(8 - i as u32);
    }
    Ok(bounded(secs, nanos))
}

fn bounded(secs: i64, nanos: i64) -> libc::timespec {
    // containerd's boundTime: before the epoch or after what nanoseconds
    // since it can hold, the epoch.
    if !(0..=i64::MAX / 1_000_000_000 - 1).contains(&secs) {
        libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        }
    } else {
        libc::timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        }
    }
}

fn later(a: libc::timespec, b: libc::timespec) -> libc::timespec {
    if (a.tv_sec, a.tv_nsec) > (b.tv_sec, b.tv_nsec) {
        a
    } else {
        b
    }
}

impl Extractor {
    fn entries(&mut self, stream: &mut dyn Read) -> Result<(), Decline> {
        let mut archive = tar::Archive::new(stream);
        let entries = archive
            .entries()
            .map_err(|e| Decline(format!("reading the archive: {e}")))?;
        for e in entries {
            let mut e = e.map_err(|e| Decline(format!("reading the archive: {e}")))?;
            self.entry(&mut e)?;
            self.entries += 1;
        }
        Ok(())
    }

    fn meta(&self, e: &mut tar::Entry<'_, &mut dyn Read>) -> Result<Meta, Decline> {
        let h = e.header();
        let bad = |what: &str| Decline(format!("an entry's {what} field"));
        let uid = u32::try_from(h.uid().map_err(|_| bad("uid"))?).map_err(|_| bad("uid"))?;
        let gid = u32::try_from(h.gid().map_err(|_| bad("gid"))?).map_err(|_| bad("gid"))?;
        let mode = h.mode().map_err(|_| bad("mode"))? & 0o7777;
        let mtime = h.mtime().map_err(|_| bad("mtime"))?;
        let mut mtime = bounded(i64::try_from(mtime).unwrap_or(-1), 0);
        let mut atime = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut xattrs = Vec::new();
        if let Some(pax) = e.pax_extensions().map_err(|e| Decline(e.to_string()))? {
            for rec in pax {
                let rec = rec.map_err(|e| Decline(format!("a PAX record: {e}")))?;
                let key = rec.key_bytes();
                match key {
                    // Read by the archive reader itself (the name, the
                    // link's target, the size and the owner), or read by
                    // neither it nor Go's (owner names, ctime, the
                    // names' charset: names are bytes to both, a comment).
                    b"path" | b"linkpath" | b"size" | b"uid" | b"gid" | b"uname" | b"gname"
                    | b"ctime" | b"hdrcharset" | b"comment" => {}
                    b"mtime" => mtime = pax_time(rec.value_bytes())?,
                    b"atime" => atime = pax_time(rec.value_bytes())?,
                    k => match k.strip_prefix(b"SCHILY.xattr.") {
                        Some(name)
                            if !self.rootless
                                && (name.starts_with(b"user.")
                                    || name.starts_with(b"security.")) =>
                        {
                            xattrs.push((cstr(name)?, rec.value_bytes().to_vec()));
                        }
                        _ => {
                            return decline(format!(
                                "the PAX record '{}'",
                                String::from_utf8_lossy(k)
                            ))
                        }
                    },
                }
            }
        }
        if self.rootless && (uid != 0 || gid != 0) {
            return decline("an entry not owned by 0:0 in a rootless engine");
        }
        Ok(Meta {
            uid,
            gid,
            mode,
            times: [later(atime, mtime), mtime],
            xattrs,
        })
    }

    fn entry(&mut self, e: &mut tar::Entry<'_, &mut dyn Read>) -> Result<(), Decline> {
        use tar::EntryType as T;
        let kind = e.header().entry_type();
        let raw_name = e.path_bytes().into_owned();
        let path = normalize(&raw_name)?;
        if kind != T::Regular && e.size() != 0 {
            // Go's reader does not skip data of such entries; this one
            // would: they would read the rest of the archive apart.
            return decline("an entry with data that has no data");
        }
        if path.is_empty() {
            // containerd ignores what resolves to the root.
            return match kind {
                T::Directory | T::Regular | T::Symlink | T::Link => Ok(()),
                _ => decline("an entry for the root"),
            };
        }
        let (parent, base) = split_parent(&path);
        if !parent.is_empty() && self.made.get(parent) != Some(&Kind::Dir) {
            return decline(format!(
                "'{}' is under something not made as a directory in this layer",
                String::from_utf8_lossy(&path)
            ));
        }
        if self.made.contains_key(&path) {
            return decline(format!("'{}' comes twice", String::from_utf8_lossy(&path)));
        }
        if base.starts_with(b".wh.") {
            return self.whiteout(e, &path, parent, base);
        }
        let meta = self.meta(e)?;
        let c = cstr(&path)?;
        let root = self.root.as_raw_fd();
        match kind {
            T::Directory => {
                // SAFETY: a directory descriptor and a C path relative to it.
                check(unsafe { libc::mkdirat(root, c.as_ptr(), 0o700) })?;
                self.made.insert(path.clone(), Kind::Dir);
                self.owner(&c, &meta)?;
                if !meta.xattrs.is_empty() {
                    let d = self.open_at(&c, libc::O_DIRECTORY | libc::O_RDONLY)?;
                    set_xattrs(&d, &meta.xattrs)?;
                }
                self.dirs.push((c, meta.mode, meta.times));
            }
            T::Regular => {
                if raw_name.last() == Some(&b'/') {
                    return decline("a file named like a directory");
                }
                let mut f = self.open_at(
                    &c,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                )?;
                self.made.insert(path.clone(), Kind::File);
                let size = e.size();
                let mut left = size;
                while left > 0 {
                    let want = usize::try_from(left.min(self.buf.len() as u64)).unwrap_or(1);
                    let n = e
                        .read(&mut self.buf[..want])
                        .map_err(|e| Decline(format!("reading the archive: {e}")))?;
                    if n == 0 {
                        return decline("the archive ends inside a file");
                    }
                    f.write_all(&self.buf[..n])?;
                    left -= n as u64;
                }
                // SAFETY: an open descriptor.
                if meta.uid != 0 || meta.gid != 0 {
                    check(unsafe { libc::fchown(f.as_raw_fd(), meta.uid, meta.gid) })?;
                }
                set_xattrs(&f, &meta.xattrs)?;
                // SAFETY: an open descriptor; chmod after chown, which
                // clears set-id bits.
                check(unsafe { libc::fchmod(f.as_raw_fd(), meta.mode) })?;
                // SAFETY: an open descriptor and two timespecs.
                check(unsafe { libc::futimens(f.as_raw_fd(), meta.times.as_ptr()) })?;
            }
            T::Symlink => {
                if !meta.xattrs.is_empty() {
                    return decline("extended attributes on a symlink");
                }
                let t = cstr(&link_target(e))?;
                // SAFETY: a C target, a directory descriptor and a C path.
                check(unsafe { libc::symlinkat(t.as_ptr(), root, c.as_ptr()) })?;
                self.made.insert(path.clone(), Kind::Other);
                self.owner(&c, &meta)?;
                self.set_times(&c, &meta.times)?;
            }
            T::Link => {
                if !meta.xattrs.is_empty() {
                    return decline("extended attributes on a hard link");
                }
                let target = normalize(&link_target(e))?;
                if self.made.get(&target) != Some(&Kind::File) {
                    return decline("a hard link to something not a file of this layer");
                }
                let t = cstr(&target)?;
                // SAFETY: a directory descriptor and two C paths relative
                // to it; the target is not followed (no flag).
                check(unsafe { libc::linkat(root, t.as_ptr(), root, c.as_ptr(), 0) })?;
                self.made.insert(path.clone(), Kind::File);
                // containerd applies the link's header to the inode.
                // SAFETY: as above.
                check(unsafe {
                    libc::fchownat(
                        root,
                        c.as_ptr(),
                        meta.uid,
                        meta.gid,
                        libc::AT_SYMLINK_NOFOLLOW,
                    )
                })?;
                // SAFETY: as above (a regular file: no symlink to follow).
                check(unsafe { libc::fchmodat(root, c.as_ptr(), meta.mode, 0) })?;
                self.set_times(&c, &meta.times)?;
            }
            other => return decline(format!("an entry of type {other:?}")),
        }
        Ok(())
    }

    /// A whiteout, as containerd makes it in an overlayfs upper directory.
    fn whiteout(
        &mut self,
        e: &mut tar::Entry<'_, &mut dyn Read>,
        path: &[u8],
        parent: &[u8],
        base: &[u8],
    ) -> Result<(), Decline> {
        if self.rootless {
            return decline("a whiteout in a rootless engine");
        }
        let meta = self.meta(e)?;
        let root = self.root.as_raw_fd();
        if base == b".wh..wh..opq" {
            // The directory must be this layer's (not the root, whose
            // attributes a staging directory does not carry).
            if parent.is_empty() {
                return decline("an opaque root");
            }
            let d = self.open_at(&cstr(parent)?, libc::O_DIRECTORY | libc::O_RDONLY)?;
            let (name, value) = (c"trusted.overlay.opaque", b"y");
            // SAFETY: an open descriptor, a C name and a value of its length.
            check(unsafe {
                libc::fsetxattr(
                    d.as_raw_fd(),
                    name.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            })?;
            return Ok(());
        }
        let original = &base[4..];
        if original.is_empty() || original.starts_with(b".wh.") || original == b"." {
            return decline(format!("the whiteout '{}'", String::from_utf8_lossy(path)));
        }
        let mut target = parent.to_vec();
        if !target.is_empty() {
            target.push(b'/');
        }
        target.extend_from_slice(original);
        if self.made.contains_key(&target) {
            return decline("a whiteout of an entry of the same layer");
        }
        let c = cstr(&target)?;
        // SAFETY: a directory descriptor and a C path relative to it.
        check(unsafe { libc::mknodat(root, c.as_ptr(), libc::S_IFCHR, 0) })?;
        self.made.insert(target, Kind::Other);
        // SAFETY: as above; a device node, not a symlink.
        check(unsafe { libc::fchownat(root, c.as_ptr(), meta.uid, meta.gid, 0) })?;
        Ok(())
    }

    /// Set the times of `c`, not following a symlink.
    fn set_times(&self, c: &CString, times: &[libc::timespec; 2]) -> io::Result<()> {
        // SAFETY: a directory descriptor, a C path relative to it and two
        // timespecs.
        check(unsafe {
            libc::utimensat(
                self.root.as_raw_fd(),
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
    }

    fn owner(&self, c: &CString, meta: &Meta) -> Result<(), Decline> {
        if meta.uid != 0 || meta.gid != 0 {
            // SAFETY: a directory descriptor and a C path relative to it.
            check(unsafe {
                libc::fchownat(
                    self.root.as_raw_fd(),
                    c.as_ptr(),
                    meta.uid,
                    meta.gid,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            })?;
        }
        Ok(())
    }

    fn open_at(&self, c: &CString, flags: libc::c_int) -> Result<File, Decline> {
        // SAFETY: a directory descriptor and a C path relative to it; the
        // descriptor is owned by the File.
        let fd = unsafe {
            libc::openat(
                self.root.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                0o600,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: a descriptor just opened.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Directories get their modes and times last, deepest first.
    fn finish_dirs(&mut self) -> io::Result<()> {
        let root = self.root.as_raw_fd();
        for (c, mode, times) in self.dirs.iter().rev() {
            // SAFETY: a directory descriptor and a C path relative to it.
            check(unsafe { libc::fchmodat(root, c.as_ptr(), *mode, 0) })?;
            self.set_times(c, times)?;
        }
        Ok(())
    }
}

/// A link's target, as the archive names it.
fn link_target(e: &tar::Entry<'_, &mut dyn Read>) -> Vec<u8> {
    e.link_name_bytes()
        .map(|t| t.into_owned())
        .unwrap_or_default()
}

fn set_xattrs(f: &File, xattrs: &[(CString, Vec<u8>)]) -> Result<(), Decline> {
    for (name, value) in xattrs {
        // SAFETY: an open descriptor, a C name and a value of its length.
        let r = unsafe {
            libc::fsetxattr(
                f.as_raw_fd(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            // containerd skips what the filesystem does not support.
            if e.raw_os_error() != Some(libc::ENOTSUP) {
                return Err(e.into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// One tar entry, with its name written raw (so that hostile names are
    /// possible) and any PAX records before it.
    struct E<'a> {
        name: &'a [u8],
        kind: u8,
        mode: u32,
        owner: (u64, u64),
        mtime: u64,
        link: &'a [u8],
        data: &'a [u8],
        pax: &'a [(&'a str, &'a [u8])],
    }

    const F: E<'static> = E {
        name: b"",
        kind: b'0',
        mode: 0o644,
        owner: (0, 0),
        mtime: 1_000_000,
        link: b"",
        data: b"",
        pax: &[],
    };

    fn header(name: &[u8], kind: u8, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_size(size);
        h
    }

    fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in entries {
            if !e.pax.is_empty() {
                let mut recs = Vec::new();
                for (k, v) in e.pax {
                    let body_len = k.len() + v.len() + 3;
                    let mut len = body_len + body_len.to_string().len();
                    if (len).to_string().len() != body_len.to_string().len() {
                        len += 1;
                    }
                    recs.extend_from_slice(format!("{len} {k}=").as_bytes());
                    recs.extend_from_slice(v);
                    recs.push(b'\n');
                }
                let mut h = header(b"PaxHeaders/x", b'x', recs.len() as u64);
                h.set_cksum();
                out.extend_from_slice(h.as_bytes());
                out.extend_from_slice(&recs);
                out.resize(out.len().div_ceil(512) * 512, 0);
            }
            let mut h = header(e.name, e.kind, e.data.len() as u64);
            h.set_mode(e.mode);
            h.set_uid(e.owner.0);
            h.set_gid(e.owner.1);
            h.set_mtime(e.mtime);
            if !e.link.is_empty() {
                h.as_old_mut().linkname[..e.link.len()].copy_from_slice(e.link);
            }
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(e.data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn run(bytes: &[u8]) -> (tempfile::TempDir, Outcome) {
        let dir = tempfile::tempdir().unwrap();
        let out = extract(&mut &bytes[..], dir.path(), false).unwrap();
        (dir, out)
    }

    fn declined(entries: &[E<'_>], why: &str) {
        let (_d, out) = run(&tar_of(entries));
        match out {
            Outcome::Declined(w) => assert!(w.contains(why), "{w}"),
            o => panic!("extracted: {o:?}"),
        }
    }

    #[test]
    fn a_layer_is_extracted_as_containerd_applies_it() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root (owners, whiteouts)");
            return;
        }
        let tar = tar_of(&[
            E {
                name: b"./a/",
                kind: b'5',
                mode: 0o755,
                ..F
            },
            E {
                name: b"a/b/",
                kind: b'5',
                mode: 0o2750,
                owner: (5, 6),
                ..F
            },
            E {
                name: b"a/b/f",
                mode: 0o4755,
                owner: (1000, 100),
                data: b"hello",
                pax: &[("mtime", b"1700000000.25"), ("SCHILY.xattr.user.k", b"v")],
                ..F
            },
            E {
                name: b"a/h",
                kind: b'1',
                link: b"a/b/f",
                mode: 0o4755,
                owner: (1000, 100),
                ..F
            },
            E {
                name: b"/a/s",
                kind: b'2',
                link: b"../../etc/passwd",
                ..F
            },
            E {
                name: b"a/.wh.gone",
                ..F
            },
            E {
                name: b"a/b/.wh..wh..opq",
                ..F
            },
            E {
                name: b"./",
                kind: b'5',
                mode: 0o700,
                ..F
            },
        ]);
        let want = Digest::of(&tar);
        for compressed in [
            tar.clone(),
            {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&tar).unwrap();
                gz.finish().unwrap()
            },
            zstd::stream::encode_all(&tar[..], 1).unwrap(),
        ] {
            let (dir, out) = run(&compressed);
            let Outcome::Extracted { diff_id, entries } = out else {
                panic!("{out:?}")
            };
            assert_eq!(diff_id, want);
            assert_eq!(entries, 8);
            let p = dir.path();
            let md = |n: &str| std::fs::symlink_metadata(p.join(n)).unwrap();
            assert_eq!(md("a").mode() & 0o7777, 0o755);
            assert_eq!(
                (md("a/b").mode() & 0o7777, md("a/b").uid(), md("a/b").gid()),
                (0o2750, 5, 6)
            );
            let f = md("a/b/f");
            assert_eq!((f.mode() & 0o7777, f.uid(), f.gid()), (0o4755, 1000, 100));
            assert_eq!(
                (f.mtime(), f.mtime_nsec()),
                (1_000_000, 0),
                "the link's header last"
            );
            assert_eq!(f.nlink(), 2);
            assert_eq!(std::fs::read(p.join("a/h")).unwrap(), b"hello");
            assert_eq!(md("a/b").mtime(), 1_000_000);
            let s = md("a/s");
            assert!(s.file_type().is_symlink());
            assert_eq!(
                std::fs::read_link(p.join("a/s")).unwrap(),
                Path::new("../../etc/passwd")
            );
            // Whiteouts as overlayfs has them.
            use std::os::unix::fs::FileTypeExt;
            let w = md("a/gone");
            assert!(w.file_type().is_char_device() && w.rdev() == 0);
            assert!(!p.join("a/.wh.gone").exists());
            let mut v = [0u8; 4];
            let c = CString::new(p.join("a/b").as_os_str().as_bytes()).unwrap();
            // SAFETY: a C path and a buffer of its length.
            let n = unsafe {
                libc::getxattr(
                    c.as_ptr(),
                    c"trusted.overlay.opaque".as_ptr(),
                    v.as_mut_ptr().cast(),
                    4,
                )
            };
            assert_eq!(&v[..n as usize], b"y");
            let c = CString::new(p.join("a/b/f").as_os_str().as_bytes()).unwrap();
            // SAFETY: as above.
            let n =
                unsafe { libc::getxattr(c.as_ptr(), c"user.k".as_ptr(), v.as_mut_ptr().cast(), 4) };
            assert_eq!(&v[..n as usize], b"v");
            // The root entry is not applied.
            assert_ne!(md("").mode() & 0o777, 0o711);
        }
    }

    #[test]
    fn hostile_or_unusual_layers_are_declined_and_nothing_escapes() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("victim");
        std::fs::write(&target, b"safe").unwrap();
        let t = target.as_os_str().as_bytes();
        declined(
            &[E {
                name: b"a/../../x",
                data: b"x",
                ..F
            }],
            "'..'",
        );
        // Through a symlink of the layer itself.
        let parent = outside.path().as_os_str().as_bytes();
        declined(
            &[
                E {
                    name: b"l",
                    kind: b'2',
                    link: parent,
                    ..F
                },
                E {
                    name: b"l/victim",
                    data: b"owned",
                    ..F
                },
            ],
            "not made as a directory",
        );
        declined(
            &[E {
                name: b"h",
                kind: b'1',
                link: t,
                ..F
            }],
            "hard link",
        );
        declined(
            &[E {
                name: b"dev",
                kind: b'3',
                ..F
            }],
            "type",
        );
        declined(
            &[E {
                name: b"fifo",
                kind: b'6',
                ..F
            }],
            "type",
        );
        declined(&[E { name: b"x", ..F }, E { name: b"x", ..F }], "twice");
        declined(
            &[E {
                name: b"nodir/x",
                ..F
            }],
            "not made as a directory",
        );
        declined(
            &[E {
                name: b"d",
                kind: b'5',
                data: b"data",
                ..F
            }],
            "has no data",
        );
        declined(
            &[E {
                name: b"f",
                pax: &[("GNU.sparse.map", b"0,1")],
                ..F
            }],
            "PAX record",
        );
        declined(
            &[E {
                name: b"f",
                pax: &[("SCHILY.xattr.trusted.overlay.redirect", b"/x")],
                ..F
            }],
            "PAX record",
        );
        declined(
            &[E {
                name: b"f",
                pax: &[("mtime", b"soon")],
                ..F
            }],
            "PAX time",
        );
        declined(
            &[E {
                name: b".wh..wh..opq",
                ..F
            }],
            "opaque root",
        );
        // Data after the end of the archive.
        let mut tar = tar_of(&[E { name: b"f", ..F }]);
        tar.extend_from_slice(b"trailing");
        let (_d, out) = run(&tar);
        assert!(matches!(out, Outcome::Declined(w) if w.contains("after the end")));
        // Not a tar, not gzip that ends.
        let (_d, out) = run(&[0x1f, 0x8b, 0x08, 0, 1, 2, 3]);
        assert!(matches!(out, Outcome::Declined(_)));
        let (_d, out) = run(b"not a tar at all, and short");
        assert!(matches!(out, Outcome::Declined(_)));
        assert_eq!(std::fs::read(&target).unwrap(), b"safe");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_rootless_extraction_takes_only_what_its_user_can_make() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_of(&[E {
            name: b"f",
            owner: (1000, 0),
            ..F
        }]);
        let out = extract(&mut &tar[..], dir.path(), true).unwrap();
        assert!(matches!(out, Outcome::Declined(w) if w.contains("rootless")));
        let tar = tar_of(&[
            E {
                name: b"d/",
                kind: b'5',
                mode: 0o555,
                ..F
            },
            E {
                name: b"d/f",
                data: b"x",
                ..F
            },
        ]);
        let dir = tempfile::tempdir().unwrap();
        let out = extract(&mut &tar[..], dir.path(), true).unwrap();
        assert!(
            matches!(out, Outcome::Extracted { entries: 2, .. }),
            "{out:?}"
        );
        let md = std::fs::metadata(dir.path().join("d")).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o555);
        assert_eq!(
            pax_time(b"1700000000.123456789123").unwrap().tv_nsec,
            123_456_789
        );
        assert_eq!(pax_time(b"-5").unwrap().tv_sec, 0);
    }
}
