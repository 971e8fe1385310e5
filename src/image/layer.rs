//! The content of a store layer: `nix/`, `nix/store/` and the store paths,
//! streamed into a [`TarWriter`] in the byte order of the names as written
//! (directories end in '/').
//!
//! Walking each directory with its children sorted by `name` + '/' for
//! directories gives exactly that order, since a directory and everything
//! below it share the prefix `dir/`: no list of the whole layer is held.

use super::tar::TarWriter;
use crate::nix::{StorePath, STORE_DIR};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const COPY_BUF: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{0} is a whiteout file ('.wh.' prefix), which an OCI layer cannot carry: rename it in the derivation")]
    Whiteout(PathBuf),
    #[error("{0} is neither a file, a directory nor a symlink, which a store path cannot hold")]
    FileType(PathBuf),
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("writing layer: {0}")]
    Write(#[source] io::Error),
    #[error("cancelled")]
    Cancelled,
}

/// The tar name of a store path: `nix/store/<hash>-<name>`.
pub fn store_name(p: &StorePath) -> Vec<u8> {
    format!("{}/{}", &STORE_DIR[1..], p.base_name()).into_bytes()
}

/// Where a layer's entries go: a tar stream, or (for a local containerd) the
/// snapshot directory itself. One walk of the store serves both, so the two
/// cannot disagree.
pub trait Emit {
    /// A directory; `name` ends in '/'.
    fn dir(&mut self, name: &[u8], mode: u32) -> io::Result<()>;
    fn symlink(&mut self, name: &[u8], target: &[u8]) -> io::Result<()>;
    /// A regular file of exactly `size` bytes read from `content`; `buf` is scratch space.
    fn file(
        &mut self,
        name: &[u8],
        mode: u32,
        size: u64,
        content: &mut dyn Read,
        buf: &mut [u8],
    ) -> io::Result<()>;

    /// A regular file from the store; by default read through `file`.
    fn store_file(
        &mut self,
        name: &[u8],
        mode: u32,
        size: u64,
        src: &mut StoreFile<'_>,
        buf: &mut [u8],
    ) -> io::Result<()> {
        self.file(name, mode, size, src, buf)
    }

    /// A store file offered by its path before it is opened: `Some` when
    /// the emitter took it without reading it (a snapshot filler linking
    /// it), `None` to have it opened and given to `store_file`.
    fn store_file_at(
        &mut self,
        _name: &[u8],
        _mode: u32,
        _md: &fs::Metadata,
        _path: &Path,
    ) -> Option<io::Result<()>> {
        None
    }

    fn file_bytes(&mut self, name: &[u8], mode: u32, content: &[u8]) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        self.file(
            name,
            mode,
            content.len() as u64,
            &mut &content[..],
            &mut buf,
        )
    }
}

impl<W: Write> Emit for TarWriter<W> {
    fn dir(&mut self, name: &[u8], mode: u32) -> io::Result<()> {
        TarWriter::dir(self, name, mode)
    }
    fn symlink(&mut self, name: &[u8], target: &[u8]) -> io::Result<()> {
        TarWriter::symlink(self, name, target)
    }
    fn file(
        &mut self,
        name: &[u8],
        mode: u32,
        size: u64,
        content: &mut dyn Read,
        buf: &mut [u8],
    ) -> io::Result<()> {
        TarWriter::file(self, name, mode, size, content, buf)
    }
}

/// What a layer holds, enough to write it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerContent {
    /// Store paths (with `nix/` and `nix/store/`).
    Store(Vec<StorePath>),
    /// The root layer of an output.
    Root {
        root: StorePath,
        options: super::rootfs::RootLayerOptions,
    },
}

impl LayerContent {
    /// Write the layer's entries, in byte order of their names.
    pub fn write_to<E: Emit>(&self, e: &mut E, cancel: Cancel<'_>) -> Result<(), LayerError> {
        match self {
            LayerContent::Store(paths) => write_store_layer(e, paths, cancel),
            LayerContent::Root { root, options } => {
                super::rootfs::write_root_layer(e, root, *options).map_err(LayerError::Write)
            }
        }
    }
}

pub fn write_store_prefix<E: Emit>(tar: &mut E) -> io::Result<()> {
    tar.dir(b"nix/", 0o755)?;
    tar.dir(b"nix/store/", 0o755)
}

/// Write `paths` (sorted or not) as a layer, without the end marker.
pub fn write_store_layer<E: Emit>(
    tar: &mut E,
    paths: &[StorePath],
    cancel: Cancel<'_>,
) -> Result<(), LayerError> {
    write_store_prefix(tar).map_err(LayerError::Write)?;
    let mut items: Vec<(Vec<u8>, PathBuf, fs::Metadata)> = Vec::with_capacity(paths.len());
    for p in paths {
        let fs_path = p.to_path_buf();
        let md = fs::symlink_metadata(&fs_path).map_err(|source| LayerError::Read {
            path: fs_path.clone(),
            source,
        })?;
        let mut key = p.base_name().as_bytes().to_vec();
        if md.is_dir() {
            key.push(b'/');
        }
        items.push((key, fs_path, md));
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let mut buf = vec![0u8; COPY_BUF];
    let mut walker = Walker {
        buf: &mut buf,
        cancel,
    };
    for (key, fs_path, md) in items {
        let mut name = b"nix/store/".to_vec();
        name.extend_from_slice(&key);
        walker.entry(tar, &mut name, &fs_path, &md)?;
    }
    Ok(())
}

/// Asked between entries and reads: whether to stop (the caller's own
/// cancellation, an interrupt). The image core keeps no flag of its own.
pub type Cancel<'a> = &'a (dyn Fn() -> bool + Sync);

/// Never stop.
pub fn never() -> bool {
    false
}

fn cancelled(cancel: Cancel<'_>) -> bool {
    cancel()
}

/// An open store file being emitted. Reading it fails once the build is
/// cancelled, so that a large file does not delay an interrupt.
pub struct StoreFile<'a> {
    pub inner: File,
    cancel: Cancel<'a>,
}

impl io::Read for StoreFile<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if cancelled(self.cancel) {
            return Err(io::Error::other("cancelled"));
        }
        self.inner.read(buf)
    }
}

struct Walker<'a> {
    buf: &'a mut [u8],
    cancel: Cancel<'a>,
}

impl Walker<'_> {
    /// Write one entry and, for a directory, everything below it. `name` is
    /// the tar name (with '/' for a directory), reused as a path buffer.
    fn entry<E: Emit>(
        &mut self,
        tar: &mut E,
        name: &mut Vec<u8>,
        path: &Path,
        md: &fs::Metadata,
    ) -> Result<(), LayerError> {
        if cancelled(self.cancel) {
            return Err(LayerError::Cancelled);
        }
        if path
            .file_name()
            .is_some_and(|n| n.as_bytes().starts_with(b".wh."))
        {
            return Err(LayerError::Whiteout(path.into()));
        }
        let mode = md.permissions().mode() & 0o7777;
        let read_err = |source| LayerError::Read {
            path: path.into(),
            source,
        };
        let ft = md.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(path).map_err(read_err)?;
            tar.symlink(name, target.as_os_str().as_bytes())
                .map_err(LayerError::Write)?;
        } else if ft.is_file() {
            if let Some(taken) = tar.store_file_at(name, mode, md, path) {
                return taken.map_err(LayerError::Write);
            }
            let f = File::open(path).map_err(read_err)?;
            let mut f = StoreFile {
                inner: f,
                cancel: self.cancel,
            };
            // Hardlinks are written as regular files: each name gets the content.
            tar.store_file(name, mode, md.size(), &mut f, self.buf)
                .map_err(|e| {
                    if cancelled(self.cancel) {
                        LayerError::Cancelled
                    } else if e.kind() == io::ErrorKind::UnexpectedEof {
                        read_err(e)
                    } else {
                        LayerError::Write(e)
                    }
                })?;
        } else if ft.is_dir() {
            tar.dir(name, mode).map_err(LayerError::Write)?;
            let mut children: Vec<(Vec<u8>, fs::Metadata)> = Vec::new();
            for e in fs::read_dir(path).map_err(read_err)? {
                let e = e.map_err(read_err)?;
                let md = e.metadata().map_err(read_err)?;
                let mut key = e.file_name().as_bytes().to_vec();
                if md.is_dir() {
                    key.push(b'/');
                }
                children.push((key, md));
            }
            children.sort_by(|a, b| a.0.cmp(&b.0));
            let base = name.len();
            for (key, md) in children {
                name.truncate(base);
                name.extend_from_slice(&key);
                let child_name = key.strip_suffix(b"/").unwrap_or(&key);
                let child = path.join(std::ffi::OsStr::from_bytes(child_name));
                self.entry(tar, name, &child, &md)?;
            }
            name.truncate(base);
        } else {
            return Err(LayerError::FileType(path.into()));
        }
        Ok(())
    }
}
