//! Where images go. Every sink takes blobs through [`BlobWriter`]s (written
//! under a temporary name, committed under their digest) and then the image
//! record; a sink that fails or is aborted leaves nothing half-written.

pub mod archive;
pub mod containerd;
pub mod discard;
pub mod oci_dir;
pub mod registry;

use crate::image::compress::Compression;
use crate::oci::digest::Digest;
pub use crate::oci::{ImageRecord, IndexRecord, LayerRecord};
use std::io::{self, Write};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Containerd(Box<crate::containerd::ContainerdError>),
    #[error(transparent)]
    Registry(Box<crate::registry::RegistryError>),
    #[error(transparent)]
    Reference(#[from] crate::oci::reference::ReferenceError),
    #[error("{sink}: writing a blob: {source}")]
    Write { sink: String, source: io::Error },
    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),
    #[error("blob {expected} arrived with digest {actual}: the data was corrupted on the way")]
    DigestMismatch { expected: Digest, actual: Digest },
}

impl From<crate::containerd::ContainerdError> for SinkError {
    fn from(e: crate::containerd::ContainerdError) -> Self {
        SinkError::Containerd(Box::new(e))
    }
}

impl From<crate::registry::RegistryError> for SinkError {
    fn from(e: crate::registry::RegistryError) -> Self {
        SinkError::Registry(Box::new(e))
    }
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

/// A layer as it becomes ready, with what it holds (when known, so that a
/// local containerd's snapshot can be filled without extracting the tar).
#[derive(Debug, Clone)]
pub struct ReadyLayer {
    pub index: usize,
    pub total: usize,
    pub record: LayerRecord,
    pub content: Option<crate::image::layer::LayerContent>,
    pub mtime: u64,
    /// Built by this run (not taken from the layer cache).
    pub built: bool,
}

pub trait BlobSink: Send + Sync {
    /// For messages: `oci:./out`.
    fn describe(&self) -> String;
    fn layer_form(&self) -> LayerForm;
    /// Whether the sink already holds this blob (so it need not be sent).
    fn has_blob(&self, digest: &Digest) -> bool;
    /// `has_blob` will be asked of these (the layers of an image that are
    /// in the layer cache, or in a source): a sink may look them all up at
    /// once (containerd: one call instead of one each). Default: nothing.
    fn expect_blobs(&self, _digests: &[Digest]) {}
    fn begin_blob(&self) -> Result<Box<dyn BlobWriter>, SinkError>;
    /// Begin the blob of layer `i` of `layers` (a load or a pull): a sink
    /// may do more with a layer's bytes than keep them (containerd's
    /// extracts them into a snapshot as they arrive). Default: a blob.
    fn begin_layer(
        &self,
        _layers: &[crate::oci::LayerRecord],
        _i: usize,
    ) -> Result<Box<dyn BlobWriter>, SinkError> {
        self.begin_blob()
    }
    /// Record the image. Called after every blob is committed.
    fn finish(&self, image: &ImageRecord) -> Result<(), SinkError>;
    /// Undo what this build wrote (best effort); called when the build fails.
    fn abort(&self);

    /// Whether the sink has recorded this very image already, complete.
    /// When every sink of a build does, nothing is sent and each gets
    /// `finish_held` instead of `finish`. Default: no.
    fn holds_image(&self, _image: &ImageRecord) -> bool {
        false
    }

    /// The build ends with the image the sink already holds: release what
    /// the sink took for the build (a lease, say).
    fn finish_held(&self, _image: &ImageRecord) -> Result<(), SinkError> {
        Ok(())
    }

    /// A multi-platform build: the images that follow are for `platform`
    /// until the next call (containerd unpacks only the platforms asked).
    fn begin_image(&self, _platform: &crate::oci::Platform) {}

    /// Record several images, one per platform, as one index under its
    /// name (instead of `finish` for each). Their blobs, configs,
    /// manifests and referrers are in already; the index blob is not.
    fn finish_index(&self, _index: &IndexRecord) -> Result<(), SinkError> {
        Err(SinkError::Invalid(format!(
            "{} holds one platform; build one --system into it, or choose an oci:, oci-archive:, containerd or registry: output",
            self.describe()
        )))
    }

    /// Layer `index` of the image being built will be made by this build
    /// (it is not in the layer cache), with `content`: called for each
    /// such layer, in order, before any is built. A sink may start on it
    /// (containerd fills its snapshot ahead). Default: nothing.
    fn layer_planned(
        &self,
        _index: usize,
        _content: &crate::image::layer::LayerContent,
        _mtime: u64,
    ) {
    }

    /// A layer is in the sink (its blob committed or already there).
    /// Layers arrive in any order; a sink may start work on them (containerd
    /// unpacks in chain order) before `finish`.
    fn layer_ready(&self, _layer: &ReadyLayer) {}

    /// Whether `layer_ready` may come as soon as a layer's digests are
    /// known, before its blob is committed (containerd: the unpack fills
    /// snapshots from the store, and waits for a blob only where
    /// containerd itself must apply it).
    fn ready_before_commit(&self) -> bool {
        false
    }

    /// How many layers a load or a pull may copy into this sink at once
    /// (see `source::copy_layers`). Default: two, one a core here.
    fn layers_at_once(&self) -> usize {
        if self.layer_form() == LayerForm::Uncompressed {
            // A docker-archive's entries follow the order they come in.
            1
        } else {
            2
        }
    }

    /// Whether the sink works on layers bottom-up as they arrive (then
    /// layers are built in that order rather than largest first).
    fn wants_layers_in_order(&self) -> bool {
        false
    }

    /// Blob bytes this sink received (for reports and tests).
    fn bytes_written(&self) -> u64 {
        0
    }

    /// What the sink did, for `--json`: at least `bytes_written`.
    fn report(&self) -> serde_json::Value {
        serde_json::json!({ "bytes_written": self.bytes_written() })
    }

    fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), SinkError> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let mut w = self.begin_blob()?;
        w.write_all(bytes).map_err(|source| SinkError::Write {
            sink: self.describe(),
            source,
        })?;
        w.commit(digest)
    }
}

/// Put an image's referrers (their blobs, then their manifests) into a
/// sink that stores manifests; a docker-archive has no place for them.
pub fn put_referrers(sink: &dyn BlobSink, image: &ImageRecord) -> Result<(), SinkError> {
    if sink.layer_form() == LayerForm::Uncompressed {
        return Ok(());
    }
    for r in &image.referrers {
        for (blob, bytes) in &r.blobs {
            sink.put_blob(&blob.digest, bytes)?;
        }
        sink.put_blob(&r.manifest.digest, &r.manifest_bytes)?;
    }
    Ok(())
}

/// A sink seen through this adapter takes an image's blobs and documents
/// but records nothing on `finish`: one platform of an index being copied,
/// recorded with the others by `finish_index` on the sink itself.
pub struct Unrecorded<'a>(pub &'a dyn BlobSink);

impl BlobSink for Unrecorded<'_> {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn layer_form(&self) -> LayerForm {
        self.0.layer_form()
    }
    fn has_blob(&self, digest: &Digest) -> bool {
        self.0.has_blob(digest)
    }
    fn expect_blobs(&self, digests: &[Digest]) {
        self.0.expect_blobs(digests)
    }
    fn begin_blob(&self) -> Result<Box<dyn BlobWriter>, SinkError> {
        self.0.begin_blob()
    }
    fn begin_layer(
        &self,
        layers: &[crate::oci::LayerRecord],
        i: usize,
    ) -> Result<Box<dyn BlobWriter>, SinkError> {
        self.0.begin_layer(layers, i)
    }
    fn layers_at_once(&self) -> usize {
        self.0.layers_at_once()
    }
    fn layer_planned(&self, index: usize, content: &crate::image::layer::LayerContent, mtime: u64) {
        self.0.layer_planned(index, content, mtime)
    }
    fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), SinkError> {
        self.0.put_blob(digest, bytes)
    }
    fn finish(&self, _image: &ImageRecord) -> Result<(), SinkError> {
        Ok(())
    }
    fn abort(&self) {
        self.0.abort()
    }
    fn layer_ready(&self, layer: &ReadyLayer) {
        self.0.layer_ready(layer)
    }
    fn ready_before_commit(&self) -> bool {
        self.0.ready_before_commit()
    }
    fn wants_layers_in_order(&self) -> bool {
        self.0.wants_layers_in_order()
    }
}

/// An `--output` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    Oci(PathBuf),
    OciArchive(PathBuf),
    DockerArchive(PathBuf),
    /// The namespace, if given (else the global one).
    Containerd(Option<String>),
    /// An image reference (its tag, else --tag's).
    Registry(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SinkSpecError {
    #[error("--output '{0}': expected oci:DIR, oci-archive:FILE, docker-archive:FILE, containerd[:NAMESPACE] or registry:REF")]
    Unknown(String),
    #[error("--output '{0}': the path is empty")]
    EmptyPath(String),
    #[error("--output '{0}': {1}")]
    Registry(String, String),
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
            "containerd" => Ok(SinkSpec::Containerd(
                Some(rest.to_string()).filter(|n| !n.is_empty()),
            )),
            "registry" => {
                crate::oci::reference::ImageRef::parse(rest)
                    .map_err(|e| SinkSpecError::Registry(s.into(), e.to_string()))?;
                Ok(SinkSpec::Registry(rest.to_string()))
            }
            _ => Err(SinkSpecError::Unknown(s.into())),
        }
    }

    /// Whether the image stays on this host (containerd, a docker-archive
    /// to load), where time matters more than blob size.
    pub fn is_local(&self) -> bool {
        matches!(self, SinkSpec::Containerd(_) | SinkSpec::DockerArchive(_))
    }

    /// Whether the sink stores plain tars (and so cannot take zstd layers).
    pub fn is_docker_archive(&self) -> bool {
        matches!(self, SinkSpec::DockerArchive(_))
    }

    /// The output path of a file or directory sink.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            SinkSpec::Oci(p) | SinkSpec::OciArchive(p) | SinkSpec::DockerArchive(p) => Some(p),
            SinkSpec::Containerd(_) | SinkSpec::Registry(_) => None,
        }
    }

    pub fn open(&self, ctx: &SinkContext) -> Result<Box<dyn BlobSink>, SinkError> {
        Ok(match self {
            SinkSpec::Oci(p) => Box::new(oci_dir::OciDir::open(p, LayerForm::Compressed)?),
            SinkSpec::OciArchive(p) => Box::new(archive::ArchiveSink::open(
                archive::ArchiveKind::Oci,
                p,
                ctx.mtime,
            )?),
            SinkSpec::DockerArchive(p) => Box::new(archive::ArchiveSink::open(
                archive::ArchiveKind::Docker,
                p,
                ctx.mtime,
            )?),
            SinkSpec::Registry(r) => Box::new(registry::RegistrySink::open(r, &ctx.registry)?),
            SinkSpec::Containerd(ns) => {
                let client = ctx.containerd(ns.as_deref())?;
                let snapshotter = client.snapshotter(&ctx.snapshotter);
                Box::new(containerd::ContainerdSink::open(
                    ctx.runtime()?,
                    client,
                    &snapshotter,
                    &ctx.unpack_platforms,
                )?)
            }
        })
    }
}

/// What opening sinks needs beyond their own spec: the layer mtime, and how
/// to reach containerd (connected once, on first use).
pub struct SinkContext {
    pub mtime: u64,
    pub containerd: crate::containerd::address::Connect,
    pub snapshotter: String,
    /// The platforms of a multi-platform image that containerd unpacks
    /// (empty: this machine's).
    pub unpack_platforms: Vec<crate::oci::Platform>,
    /// How to reach registries (`registry:` outputs).
    pub registry: crate::registry::Options,
    client: std::sync::Mutex<Option<crate::containerd::Client>>,
    /// Things to tell the user (such as the private containerd being started).
    pub notes: std::sync::Mutex<Vec<String>>,
}

impl SinkContext {
    pub fn new(mtime: u64, containerd: crate::containerd::address::Connect) -> Self {
        SinkContext {
            mtime,
            containerd,
            snapshotter: crate::containerd::DEFAULT_SNAPSHOTTER.into(),
            unpack_platforms: Vec::new(),
            registry: Default::default(),
            client: std::sync::Mutex::new(None),
            notes: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn runtime(&self) -> Result<tokio::runtime::Handle, SinkError> {
        crate::util::runtime::handle().map_err(SinkError::Runtime)
    }

    /// A containerd client in `namespace` (else the default namespace).
    pub fn containerd(
        &self,
        namespace: Option<&str>,
    ) -> Result<crate::containerd::Client, SinkError> {
        let rt = self.runtime()?;
        let mut slot = self.client.lock().unwrap();
        if slot.is_none() {
            let home = crate::containerd::engine::nixoci_home();
            let connected =
                rt.block_on(crate::containerd::address::connect(&self.containerd, &home))?;
            if let Some(note) = connected.started {
                self.notes.lock().unwrap().push(note);
            }
            *slot = Some(connected.client);
        }
        let ns = namespace.unwrap_or(&self.containerd.namespace);
        crate::containerd::check_namespace(ns)?;
        slot.as_ref()
            .map(|client| client.in_namespace(ns))
            .ok_or_else(|| SinkError::Invalid("no containerd client".into()))
    }
}

impl std::fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkSpec::Oci(p) => write!(f, "oci:{}", p.display()),
            SinkSpec::OciArchive(p) => write!(f, "oci-archive:{}", p.display()),
            SinkSpec::DockerArchive(p) => write!(f, "docker-archive:{}", p.display()),
            SinkSpec::Containerd(None) => write!(f, "containerd"),
            SinkSpec::Containerd(Some(ns)) => write!(f, "containerd:{ns}"),
            SinkSpec::Registry(r) => write!(f, "registry:{r}"),
        }
    }
}

/// The layer compression and level of a build into `outputs`, given what
/// the user asked (`--compression`, `--compression-level`):
/// - only docker-archives: nothing compressed (their layers are plain
///   tars, so compressing would be work thrown away);
/// - only local outputs (containerd, docker-archive): nothing compressed
///   unless asked (then level 1 unless a level is given). The blobs stay
///   on this host, nixoci places them in containerd's content directory
///   itself, and compressing was most of a cold import's CPU; the
///   snapshot of a layer whose store files are linked costs no space, so
///   the image takes about its closure's size, less than a compressed
///   blob beside a copied snapshot;
/// - otherwise gzip unless asked otherwise, at the level given or the
///   compression's default.
pub fn layer_compression(
    outputs: &[SinkSpec],
    asked: Option<Compression>,
    level: Option<i32>,
) -> (Compression, i32) {
    if !outputs.is_empty() && outputs.iter().all(SinkSpec::is_docker_archive) {
        return (Compression::None, 0);
    }
    let local = !outputs.is_empty() && outputs.iter().all(SinkSpec::is_local);
    let compression = match (asked, level) {
        (Some(c), _) => c,
        // A level alone goes with the documented default.
        (None, Some(_)) => Compression::Gzip,
        (None, None) if local => Compression::None,
        (None, None) => Compression::Gzip,
    };
    let level = match level {
        Some(l) => l,
        None if local && compression != Compression::None => 1,
        None => compression.default_level(),
    };
    (compression, level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_follows_where_the_image_goes() {
        let p = |s: &str| SinkSpec::parse(s).unwrap();
        let (gz, zs, none) = (Compression::Gzip, Compression::Zstd, Compression::None);
        let docker = [p("docker-archive:/x.tar")];
        assert_eq!(layer_compression(&docker, None, None), (none, 0));
        assert_eq!(layer_compression(&docker, Some(gz), Some(9)), (none, 0));
        let local = [p("containerd:ns"), p("docker-archive:/x.tar")];
        assert_eq!(layer_compression(&local, None, None), (none, 0));
        assert_eq!(layer_compression(&local, Some(zs), None), (zs, 1));
        assert_eq!(layer_compression(&local, Some(gz), None), (gz, 1));
        assert_eq!(layer_compression(&local, None, Some(6)), (gz, 6));
        assert_eq!(layer_compression(&local, Some(zs), Some(3)), (zs, 3));
        assert_eq!(layer_compression(&local, Some(none), None), (none, 0));
        let shared = [p("containerd:ns"), p("oci:/l")];
        assert_eq!(layer_compression(&shared, None, None), (gz, 6));
        assert_eq!(
            layer_compression(&[p("registry:r/x:1")], Some(zs), None),
            (zs, 3)
        );
    }
}
