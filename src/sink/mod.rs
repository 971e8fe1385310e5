//! Where images go. Every sink takes blobs through [`BlobWriter`]s (written
//! under a temporary name, committed under their digest) and then the image
//! record; a sink that fails or is aborted leaves nothing half-written.

pub mod archive;
pub mod oci_dir;

use crate::image::digest::Digest;
use crate::image::manifest::Blob;
use crate::image::ImageRef;
use std::io::{self, Write};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Invalid(String),
    #[error("blob {expected} arrived with digest {actual}: the data was corrupted on the way")]
    DigestMismatch { expected: Digest, actual: Digest },
}

impl SinkError {
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> SinkError {
        let path = path.into();
        move |source| SinkError::Io { path, source }
    }
}

/// Whether a sink stores layers compressed (as the manifest lists them) or
/// as plain tars (docker-archive, as `docker save` writes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerForm {
    Compressed,
    Uncompressed,
}

/// A blob being written. Dropping it without `commit` discards it.
pub trait BlobWriter: Write + Send {
    fn commit(self: Box<Self>, digest: &Digest) -> Result<(), SinkError>;
}

/// One layer of a finished image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerRecord {
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    /// The blob the manifest lists (equal to the diff_id when uncompressed).
    pub blob: Blob,
}

/// Everything a sink needs to record an image once its blobs are in.
#[derive(Debug, Clone)]
pub struct ImageRecord {
    pub reference: ImageRef,
    pub platform: crate::image::config::Platform,
    pub config: Blob,
    pub config_bytes: Vec<u8>,
    pub manifest: Blob,
    pub manifest_bytes: Vec<u8>,
    pub layers: Vec<LayerRecord>,
}

pub trait BlobSink: Send + Sync {
    /// For messages: `oci:./out`.
    fn describe(&self) -> String;
    fn layer_form(&self) -> LayerForm;
    /// Whether the sink already holds this blob (so it need not be sent).
    fn has_blob(&self, digest: &Digest) -> bool;
    fn begin_blob(&self) -> Result<Box<dyn BlobWriter>, SinkError>;
    /// Record the image. Called after every blob is committed.
    fn finish(&self, image: &ImageRecord) -> Result<(), SinkError>;
    /// Undo what this build wrote (best effort); called when the build fails.
    fn abort(&self);

    fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), SinkError> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let mut w = self.begin_blob()?;
        w.write_all(bytes)
            .map_err(|e| SinkError::Invalid(format!("{}: {e}", self.describe())))?;
        w.commit(digest)
    }
}

/// An `--output` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    Oci(PathBuf),
    OciArchive(PathBuf),
    DockerArchive(PathBuf),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SinkSpecError {
    #[error("--output '{0}': expected oci:DIR, oci-archive:FILE or docker-archive:FILE")]
    Unknown(String),
    #[error("--output '{0}': the path is empty")]
    EmptyPath(String),
    #[error("--output '{0}': {1} output is not implemented in this version of nixoci; use oci:DIR, oci-archive:FILE or docker-archive:FILE")]
    NotYet(String, &'static str),
}

impl SinkSpec {
    pub fn parse(s: &str) -> Result<Self, SinkSpecError> {
        let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
        let path = || {
            if rest.is_empty() {
                Err(SinkSpecError::EmptyPath(s.into()))
            } else {
                Ok(PathBuf::from(rest))
            }
        };
        match kind {
            "oci" => Ok(SinkSpec::Oci(path()?)),
            "oci-archive" => Ok(SinkSpec::OciArchive(path()?)),
            "docker-archive" => Ok(SinkSpec::DockerArchive(path()?)),
            "containerd" => Err(SinkSpecError::NotYet(s.into(), "the containerd")),
            "registry" => Err(SinkSpecError::NotYet(s.into(), "the registry")),
            _ => Err(SinkSpecError::Unknown(s.into())),
        }
    }

    /// Whether the sink stores plain tars (and so cannot take zstd layers).
    pub fn is_docker_archive(&self) -> bool {
        matches!(self, SinkSpec::DockerArchive(_))
    }

    pub fn open(&self, mtime: u64) -> Result<Box<dyn BlobSink>, SinkError> {
        Ok(match self {
            SinkSpec::Oci(p) => Box::new(oci_dir::OciDir::open(p, LayerForm::Compressed)?),
            SinkSpec::OciArchive(p) => Box::new(archive::ArchiveSink::open(
                archive::ArchiveKind::Oci,
                p,
                mtime,
            )?),
            SinkSpec::DockerArchive(p) => Box::new(archive::ArchiveSink::open(
                archive::ArchiveKind::Docker,
                p,
                mtime,
            )?),
        })
    }
}

impl std::fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkSpec::Oci(p) => write!(f, "oci:{}", p.display()),
            SinkSpec::OciArchive(p) => write!(f, "oci-archive:{}", p.display()),
            SinkSpec::DockerArchive(p) => write!(f, "docker-archive:{}", p.display()),
        }
    }
}
