//! Writing a new file straight to the disk (`O_DIRECT`), when the file
//! system takes it: whole aligned blocks go from one reused buffer to the
//! device, with no copy into the page cache and no write-back later. A
//! layer blob of a cold import is written once and read by nobody soon
//! after, so the page cache gains nothing from it; the copy into it was the
//! largest single cost of a cold import (a profile of the medium closure:
//! 15% of all CPU time, more than hashing the layers).
//!
//! Where `O_DIRECT` is refused (at open, or by a write: the file system's
//! alignment is stricter than ours), the file is written through the page
//! cache as before, with its write-out started every few megabytes, and
//! this process does not try `O_DIRECT` again. `NIXOCI_DIRECT=off` turns it
//! off. The tail that does not fill an aligned block is written through
//! the page cache; the caller's `fdatasync` writes it out.

use std::fs;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};

/// The alignment of offsets, lengths and memory for `O_DIRECT` writes: a
/// page, a multiple of every common logical block size.
pub const ALIGN: usize = 4096;
/// The bytes gathered before a write to the disk.
const CHUNK: usize = 2 << 20;
/// How much written data starts its write-out at once, when written
/// through the page cache. Smaller steps keep less of nixoci's data queued
/// at the disk ahead of containerd's own metadata syncs, which the snapshot
/// chain waits for (a cold import of the medium closure, medians of six:
/// 1.20 s with 8 MB, 1.13 s with 2 MB).
const WRITE_OUT_STEP: u64 = 2 << 20;

/// Set once `O_DIRECT` was refused: later files go through the page cache.
static REFUSED: AtomicBool = AtomicBool::new(false);

fn wanted() -> bool {
    !REFUSED.load(Ordering::Relaxed) && std::env::var("NIXOCI_DIRECT").as_deref() != Ok("off")
}

/// A page-aligned buffer of `CHUNK` bytes, from a small pool: a cold
/// import writes a hundred blobs, and fresh memory costs a page fault a page.
struct Buf {
    mem: Vec<u8>,
    start: usize,
}

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

impl Buf {
    fn new() -> Self {
        let mem = POOL
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_else(|| vec![0u8; CHUNK + ALIGN]);
        let start = mem.as_ptr().align_offset(ALIGN);
        Buf { mem, start }
    }
    fn bytes(&self) -> &[u8] {
        &self.mem[self.start..self.start + CHUNK]
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + CHUNK]
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let mem = std::mem::take(&mut self.mem);
        if let Ok(mut p) = POOL.lock() {
            if p.len() < 4 {
                p.push(mem);
            }
        }
    }
}

/// A thread writing full buffers while the next one fills: an `O_DIRECT`
/// write returns once the device has the bytes.
struct Writer {
    tx: mpsc::SyncSender<(Buf, u64)>,
    back: mpsc::Receiver<(Buf, io::Result<()>)>,
    in_flight: usize,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    fn start(file: &fs::File) -> io::Result<Self> {
        let file = file.try_clone()?;
        let (tx, rx) = mpsc::sync_channel::<(Buf, u64)>(1);
        let (back_tx, back) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("nixoci-write".into())
            .spawn(move || {
                for (buf, at) in rx {
                    let r = write_direct_at(&file, buf.bytes(), at);
                    if back_tx.send((buf, r)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Writer {
            tx,
            back,
            in_flight: 0,
            thread,
        })
    }

    /// A written buffer back (waiting for it), with the write's outcome.
    fn returned(&mut self) -> io::Result<Buf> {
        let (buf, r) = self
            .back
            .recv()
            .map_err(|_| io::Error::other("the writing thread ended"))?;
        self.in_flight -= 1;
        r.map(|()| buf)
    }

    /// Wait for every write, then end the thread.
    fn end(mut self) -> io::Result<()> {
        let mut first = Ok(());
        while self.in_flight > 0 {
            if let Err(e) = self.returned() {
                first = first.and(Err(e));
            }
        }
        drop(self.tx);
        let _ = self.thread.join();
        first
    }
}

/// `data` (aligned, a whole number of blocks) at `at` of `file`; through
/// the page cache from now on if the file system refuses it.
fn write_direct_at(file: &fs::File, data: &[u8], at: u64) -> io::Result<()> {
    match file.write_all_at(data, at) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            REFUSED.store(true, Ordering::Relaxed);
            set_direct(file, false)?;
            file.write_all_at(data, at)
        }
        r => r,
    }
}

enum Mode {
    Cached,
    /// The buffer being filled, how full it is, and the writer (once a
    /// buffer was full).
    Direct {
        fill: Buf,
        len: usize,
        writer: Option<Writer>,
    },
}

/// A new file being written from its start.
pub struct DirectFile {
    file: fs::File,
    mode: Mode,
    /// The bytes taken so far.
    size: u64,
    /// Where the bytes handed to the file (or its writer) end.
    placed: u64,
    /// Where write-out has been started up to (page-cache mode).
    started: u64,
}

impl DirectFile {
    /// An unnamed file (`O_TMPFILE`) in `dir`, readable and writable, of
    /// `mode`.
    pub fn tmpfile(dir: &Path, mode: u32) -> io::Result<Self> {
        let open = |flags: i32| {
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_TMPFILE | flags)
                .mode(mode)
                .open(dir)
        };
        if wanted() {
            match open(libc::O_DIRECT) {
                Ok(file) => return Ok(Self::new(file, true)),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    REFUSED.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        open(0).map(|f| Self::new(f, false))
    }

    /// `file`, empty, opened with `O_DIRECT` when `direct`.
    pub fn new(file: fs::File, direct: bool) -> Self {
        let mode = if direct {
            Mode::Direct {
                fill: Buf::new(),
                len: 0,
                writer: None,
            }
        } else {
            Mode::Cached
        };
        DirectFile {
            file,
            mode,
            size: 0,
            placed: 0,
            started: 0,
        }
    }

    /// Whether bytes still go straight to the disk.
    pub fn is_direct(&self) -> bool {
        // SAFETY: an open descriptor.
        let flags = unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_GETFL) };
        matches!(self.mode, Mode::Direct { .. }) && flags >= 0 && flags & libc::O_DIRECT != 0
    }

    /// The bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Write what is left and hand back the file, no longer `O_DIRECT`
    /// (reads of it need no alignment). Its data is not yet synced.
    pub fn finish(mut self) -> io::Result<fs::File> {
        if let Mode::Direct { fill, len, writer } = std::mem::replace(&mut self.mode, Mode::Cached)
        {
            if let Some(w) = writer {
                w.end()?;
            }
            let whole = len / ALIGN * ALIGN;
            let data = &fill.bytes()[..len];
            if whole > 0 {
                write_direct_at(&self.file, &data[..whole], self.placed)?;
            }
            set_direct(&self.file, false)?;
            self.file
                .write_all_at(&data[whole..], self.placed + whole as u64)?;
            self.placed += len as u64;
        }
        Ok(self.file)
    }

    /// Write through the page cache, starting write-out as it goes: the
    /// caller's `fdatasync` then waits for the last stretch only.
    fn write_cached(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, self.placed)?;
        self.placed += data.len() as u64;
        if self.placed - self.started >= WRITE_OUT_STEP {
            // SAFETY: an open descriptor and a range within the file; the
            // call only starts write-out (an error leaves it to fdatasync).
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.started as libc::off64_t,
                    (self.placed - self.started) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.started = self.placed;
        }
        Ok(())
    }
}

impl Write for DirectFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let Mode::Direct { fill, len, writer } = &mut self.mode else {
            self.write_cached(data)?;
            self.size += data.len() as u64;
            return Ok(data.len());
        };
        let n = data.len().min(CHUNK - *len);
        fill.bytes_mut()[*len..*len + n].copy_from_slice(&data[..n]);
        *len += n;
        self.size += n as u64;
        if *len == CHUNK {
            let w = match writer {
                Some(w) => w,
                None => writer.insert(Writer::start(&self.file)?),
            };
            // At most one buffer in flight: wait for it, and fill it next.
            let spare = if w.in_flight > 0 {
                w.returned()?
            } else {
                Buf::new()
            };
            let full = std::mem::replace(fill, spare);
            w.tx.send((full, self.placed))
                .map_err(|_| io::Error::other("the writing thread ended"))?;
            w.in_flight += 1;
            self.placed += CHUNK as u64;
            *len = 0;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn set_direct(f: &fs::File, on: bool) -> io::Result<()> {
    let fd = f.as_raw_fd();
    // SAFETY: an open descriptor; only the status flags change.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 4099) as u8).collect()
    }

    fn read_back(f: fs::File) -> Vec<u8> {
        let mut f = f;
        let mut out = Vec::new();
        std::io::Seek::rewind(&mut f).unwrap();
        f.read_to_end(&mut out).unwrap();
        out
    }

    /// Sizes around the buffer and the alignment, written in uneven
    /// pieces, read back equal, whichever way the file system took them.
    #[test]
    fn bytes_read_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        for size in [
            0,
            1,
            511,
            ALIGN,
            ALIGN + 1,
            CHUNK - 1,
            CHUNK,
            CHUNK + 513,
            3 * CHUNK + 4095,
        ] {
            let data = pattern(size);
            // Opened here, not through `tmpfile`: another test may have
            // had `O_DIRECT` refused, which `tmpfile` remembers.
            let direct = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_TMPFILE | libc::O_DIRECT)
                .mode(0o644)
                .open(dir.path());
            let mut f = match direct {
                Ok(file) => DirectFile::new(file, true),
                Err(e) => {
                    eprintln!("O_DIRECT not taken here ({e}): through the page cache");
                    DirectFile::tmpfile(dir.path(), 0o644).unwrap()
                }
            };
            let was = f.is_direct();
            for piece in data.chunks(777_777) {
                f.write_all(piece).unwrap();
            }
            assert_eq!(f.size(), size as u64);
            // Aligned writes at aligned offsets: never refused where the
            // open was taken.
            assert_eq!(f.is_direct(), was, "size {size}");
            let file = f.finish().unwrap();
            file.sync_data().unwrap();
            assert_eq!(file.metadata().unwrap().len(), size as u64);
            assert!(read_back(file) == data, "size {size}");
        }
    }

    /// A write the file system refuses (`O_DIRECT` at an offset no
    /// device takes) goes through the page cache, and the file is whole.
    #[test]
    fn a_refused_direct_write_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // A misaligned start: one byte there already, as if placed.
        fs::write(&path, b"x").unwrap();
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path);
        let Ok(file) = file else {
            eprintln!("O_DIRECT not taken here at all; nothing to refuse");
            return;
        };
        let mut f = DirectFile::new(file, true);
        f.placed = 1;
        f.size = 1;
        let data = pattern(CHUNK + 10);
        f.write_all(&data).unwrap();
        let file = f.finish().unwrap();
        let mut want = b"x".to_vec();
        want.extend_from_slice(&data);
        assert!(read_back(file) == want);
        // ext4 and XFS refuse a write at offset 1 (tmpfs takes anything).
        let c = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C path and a zeroed struct for the kernel to fill.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut st) }, 0);
        if [0xEF53, 0x5846_5342].contains(&(st.f_type as i64)) {
            assert!(
                REFUSED.load(Ordering::Relaxed),
                "the misaligned write was taken"
            );
        }
    }
}
