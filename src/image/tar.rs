//! A deterministic tar writer. Names are raw bytes end to end; every header
//! has uid/gid 0, no user or group names, and one fixed mtime. A name or
//! link target that ustar cannot hold (too long, or not UTF-8), a size of
//! 8 GiB or more and an mtime past 2242 (11 octal digits) go into a PAX
//! extended header.

use std::io::{self, Read, Write};

const BLOCK: usize = 512;
/// ustar's 11 octal digits hold sizes below 8 GiB, and times up to 2242.
const USTAR_MAX_SIZE: u64 = 0o77777777777;
const USTAR_MAX_TIME: u64 = 0o77777777777;
const PAX_NAME: &[u8] = b"././@PaxHeader";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    File,
    Dir,
    Symlink,
}

/// Copy exactly `size` bytes from `from` to `to`; a source that ends early
/// (a file that shrank while being read) is an error naming `what`.
pub fn copy_exact(
    from: &mut dyn Read,
    to: &mut dyn Write,
    size: u64,
    buf: &mut [u8],
    what: &str,
) -> io::Result<()> {
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = from.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{what} shrank while being read"),
            ));
        }
        to.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

pub struct TarWriter<W> {
    inner: W,
    mtime: u64,
}

fn octal(field: &mut [u8], value: u64) {
    // Zero-padded octal, NUL-terminated, filling the field; a value too
    // large for it is clamped (the caller puts the real one in a PAX record).
    let digits = field.len() - 1;
    let max = (1u64 << (3 * digits as u32).min(63)) - 1;
    let value = value.min(max);
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    // "<len> <key>=<value>\n", where <len> counts the whole record.
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len.to_string().len() + body != len {
        len = len.to_string().len() + body;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Split a name into ustar (prefix, name) fields, if it fits.
fn ustar_split(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= 100 {
        return Some((&[], name));
    }
    // A directory's trailing '/' may not be the split point.
    let body = name.strip_suffix(b"/").unwrap_or(name);
    (0..body.len().min(156))
        .rev()
        .filter(|&i| body[i] == b'/')
        .map(|i| (&name[..i], &name[i + 1..]))
        .find(|(p, n)| p.len() <= 155 && n.len() <= 100 && !n.is_empty())
}

impl<W: Write> TarWriter<W> {
    pub fn new(inner: W, mtime: u64) -> Self {
        TarWriter { inner, mtime }
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    fn header(
        &mut self,
        name: &[u8],
        ty: EntryType,
        mode: u32,
        size: u64,
        link: &[u8],
    ) -> io::Result<()> {
        let utf8 = std::str::from_utf8(name).is_ok() && std::str::from_utf8(link).is_ok();
        let split = ustar_split(name).filter(|_| utf8);
        let mut pax = Vec::new();
        if !utf8 {
            pax_record(&mut pax, "hdrcharset", b"BINARY");
        }
        if split.is_none() {
            pax_record(&mut pax, "path", name);
        }
        if link.len() > 100 || !utf8 {
            pax_record(&mut pax, "linkpath", link);
        }
        if size > USTAR_MAX_SIZE {
            pax_record(&mut pax, "size", size.to_string().as_bytes());
        }
        if self.mtime > USTAR_MAX_TIME {
            pax_record(&mut pax, "mtime", self.mtime.to_string().as_bytes());
        }
        if !pax.is_empty() {
            self.raw_header(b'x', (&[], PAX_NAME), 0o644, pax.len() as u64, &[])?;
            self.inner.write_all(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        let (prefix, short) = split.unwrap_or((&[], &name[..name.len().min(100)]));
        let flag = match ty {
            EntryType::File => b'0',
            EntryType::Dir => b'5',
            EntryType::Symlink => b'2',
        };
        let link = &link[..link.len().min(100)];
        self.raw_header(flag, (prefix, short), mode, size.min(USTAR_MAX_SIZE), link)
    }

    fn raw_header(
        &mut self,
        flag: u8,
        (prefix, name): (&[u8], &[u8]),
        mode: u32,
        size: u64,
        link: &[u8],
    ) -> io::Result<()> {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name);
        octal(&mut h[100..108], u64::from(mode & 0o7777));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(
            &mut h[124..136],
            if flag == b'5' || flag == b'2' {
                0
            } else {
                size
            },
        );
        octal(&mut h[136..148], self.mtime);
        h[156] = flag;
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        octal(&mut h[329..337], 0);
        octal(&mut h[337..345], 0);
        h[345..345 + prefix.len()].copy_from_slice(prefix);
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        octal(&mut h[148..155], u64::from(sum));
        h[155] = b' ';
        self.inner.write_all(&h)
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.inner.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// A directory; `name` should end in '/'.
    pub fn dir(&mut self, name: &[u8], mode: u32) -> io::Result<()> {
        self.header(name, EntryType::Dir, mode, 0, &[])
    }

    pub fn symlink(&mut self, name: &[u8], target: &[u8]) -> io::Result<()> {
        self.header(name, EntryType::Symlink, 0o777, 0, target)
    }

    /// A regular file whose content is exactly `size` bytes of `content`.
    /// `buf` is scratch space for the copy.
    pub fn file(
        &mut self,
        name: &[u8],
        mode: u32,
        size: u64,
        content: &mut dyn Read,
        buf: &mut [u8],
    ) -> io::Result<()> {
        self.header(name, EntryType::File, mode, size, &[])?;
        copy_exact(
            content,
            &mut self.inner,
            size,
            buf,
            &String::from_utf8_lossy(name),
        )?;
        self.pad(size)
    }

    pub fn file_bytes(&mut self, name: &[u8], mode: u32, content: &[u8]) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        self.file(
            name,
            mode,
            content.len() as u64,
            &mut &content[..],
            &mut buf,
        )
    }

    /// Write the end-of-archive marker and return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.inner.write_all(&[0u8; 2 * BLOCK])?;
        Ok(self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    /// (name, type, mode, content, link target, mtime)
    type Entry = (Vec<u8>, tar::EntryType, u32, Vec<u8>, Option<Vec<u8>>, u64);

    fn entries(bytes: &[u8]) -> Vec<Entry> {
        let mut a = tar::Archive::new(bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path_bytes().into_owned();
                let ty = e.header().entry_type();
                let mode = e.header().mode().unwrap();
                let link = e.link_name_bytes().map(|l| l.into_owned());
                let mtime = e.header().mtime().unwrap();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (name, ty, mode, data, link, mtime)
            })
            .collect()
    }

    #[test]
    fn roundtrip_through_the_tar_crate() {
        let long = format!("nix/store/{}/{}", "d".repeat(60), "f".repeat(120));
        let very_long_dir = format!("{}/", "x/".repeat(200));
        let non_utf8: &[u8] = b"nix/store/a/caf\xe9";
        let mut w = TarWriter::new(Vec::new(), 1);
        w.dir(b"nix/", 0o755).unwrap();
        w.file_bytes(b"nix/a", 0o444, b"hello").unwrap();
        w.file_bytes(long.as_bytes(), 0o555, b"").unwrap();
        w.dir(very_long_dir.as_bytes(), 0o555).unwrap();
        w.file_bytes(non_utf8, 0o444, b"x").unwrap();
        w.symlink(b"nix/l", "t".repeat(150).as_bytes()).unwrap();
        w.symlink(b"nix/bad", b"../caf\xe9").unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 512, 0);
        let e = entries(&bytes);
        assert_eq!(e.len(), 7);
        assert_eq!(e[0].0, b"nix/");
        assert_eq!(e[0].1, tar::EntryType::Directory);
        assert_eq!(
            (e[1].2, e[1].3.as_slice(), e[1].5),
            (0o444, &b"hello"[..], 1)
        );
        assert_eq!(e[2].0, long.as_bytes());
        assert_eq!(e[2].2, 0o555);
        assert_eq!(e[3].0, very_long_dir.as_bytes());
        assert_eq!(e[4].0, non_utf8);
        assert_eq!(e[5].4.as_deref(), Some("t".repeat(150).as_bytes()));
        assert_eq!(e[6].4.as_deref(), Some(&b"../caf\xe9"[..]));
    }

    #[test]
    fn deterministic_and_independently_readable() {
        let make = || {
            let mut w = TarWriter::new(Vec::new(), 1);
            w.dir(b"d/", 0o755).unwrap();
            w.file_bytes(b"d/f", 0o644, b"data").unwrap();
            w.finish().unwrap()
        };
        assert_eq!(make(), make());
        // GNU tar, an independent reader, lists it with uid 0 and the mtime.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.tar");
        std::fs::write(&p, make()).unwrap();
        let out = std::process::Command::new("tar")
            .arg("--numeric-owner")
            .arg("-tvf")
            .arg(&p)
            .output()
            .unwrap();
        let listing = String::from_utf8(out.stdout).unwrap();
        assert!(listing.contains("0/0"), "{listing}");
        assert!(listing.contains("1970-01-01"), "{listing}");
        assert!(listing.contains("d/f"), "{listing}");
    }

    #[test]
    fn big_sizes_use_pax() {
        // Header only: the size is what matters.
        let mut w = TarWriter::new(Vec::new(), 1);
        w.header(b"big", EntryType::File, 0o444, 9 << 30, &[])
            .unwrap();
        let bytes = w.finish().unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains(&format!("size={}", 9u64 << 30)),
            "PAX size record"
        );
    }

    #[test]
    fn pax_record_lengths() {
        let mut v = Vec::new();
        pax_record(&mut v, "path", b"abc");
        assert_eq!(v, b"12 path=abc\n");
        let mut v = Vec::new();
        pax_record(&mut v, "path", &[b'a'; 90]);
        assert_eq!(v.len(), 99);
        assert!(v.starts_with(b"99 path="));
        // Where the length's own digits push it from 2 to 3 digits.
        let mut v = Vec::new();
        pax_record(&mut v, "path", &[b'a'; 91]);
        assert_eq!(v.len(), 101);
        assert!(v.starts_with(b"101 path="));
        let _ = std::ffi::OsStr::from_bytes(&v);
    }

    #[test]
    fn short_read_is_an_error() {
        let mut w = TarWriter::new(Vec::new(), 1);
        let mut buf = [0u8; 16];
        let err = w
            .file(b"f", 0o444, 10, &mut &b"abc"[..], &mut buf)
            .unwrap_err();
        assert!(err.to_string().contains("shrank"));
    }
}
