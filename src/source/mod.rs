//! Loading existing images into sinks: an OCI layout, an OCI archive, a
//! docker-archive (`docker save`'s format, plain or gzip), or a store path
//! holding one of these.
//!
//! Archives are read in two passes, with no temporary copy: the first keeps
//! the small JSON documents (index, manifests, configs), the second streams
//! each needed layer, in archive order, into the sinks.

pub mod containerd;
pub mod docker;
pub mod documents;
pub mod layout;
pub mod registry;

pub use documents::store_documents;

use crate::oci::blob::Blob;
use crate::oci::digest::Digest;
use crate::oci::reference::{ImageRef, ReferenceError};
use crate::oci::{ImageRecord, LayerRecord, Platform};
use crate::sink::{BlobSink, BlobWriter, SinkError};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// JSON documents larger than this are not kept from the first pass.
const MAX_DOC: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}: manifest.json not found in the image")]
    NoManifestJson(PathBuf),
    #[error(
        "{0}: Image has more than 1 label/tag (the archive holds {1} images; nixoci loads one)"
    )]
    SeveralImages(PathBuf, usize),
    #[error("{path}: {what} '{name}' is listed but missing from the archive")]
    Missing {
        path: PathBuf,
        what: &'static str,
        name: String,
    },
    #[error("{path}: layer {layer} has diff_id {actual}, but the config says {expected}")]
    DiffId {
        path: PathBuf,
        layer: String,
        actual: Digest,
        expected: Digest,
    },
    #[error("{path}: {why}")]
    Invalid { path: PathBuf, why: String },
    #[error("{path}: the {what} named {expected} has digest {actual}: it was corrupted or replaced; nothing of it was kept")]
    Corrupt {
        path: PathBuf,
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{0}: no image name: the source names none; pass --tag NAME[:TAG]")]
    NoName(PathBuf),
    #[error("{path}: it holds {n} images ({names}); choose one with --tag")]
    Ambiguous {
        path: PathBuf,
        n: usize,
        names: String,
    },
    #[error("'{0}' is not a source nixoci can load: expected oci:DIR, oci-archive:FILE, docker-archive:FILE or a store path holding one")]
    Source(String),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("{sink}: {source}")]
    Sink { sink: String, source: SinkError },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadSource {
    Oci(PathBuf),
    OciArchive(PathBuf),
    DockerArchive(PathBuf),
    /// An executable that prints a docker-archive (`streamLayeredImage`).
    Stream(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LoadError + '_ {
    move |source| LoadError::Io {
        path: path.into(),
        source,
    }
}

impl LoadSource {
    pub fn parse(s: &str) -> Result<Self, LoadError> {
        match s.split_once(':') {
            Some(("oci", p)) if !p.is_empty() => Ok(LoadSource::Oci(p.into())),
            Some(("oci-archive", p)) if !p.is_empty() => Ok(LoadSource::OciArchive(p.into())),
            Some(("docker-archive", p)) if !p.is_empty() => Ok(LoadSource::DockerArchive(p.into())),
            _ if s.starts_with("/nix/store/") => Self::detect(Path::new(s)),
            _ => Err(LoadError::Source(s.into())),
        }
    }

    /// What a path holds: a layout directory, a `stream-` script, or an
    /// archive (by its content).
    pub fn detect(path: &Path) -> Result<Self, LoadError> {
        use std::os::unix::fs::PermissionsExt;
        let md = std::fs::metadata(path).map_err(io_err(path))?;
        if md.is_dir() {
            return if path.join("oci-layout").is_file() {
                Ok(LoadSource::Oci(path.into()))
            } else {
                Err(LoadError::Source(path.display().to_string()))
            };
        }
        let base = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // In the store the name is <hash>-stream-<name>.
        let name = base.split_once('-').map_or(base.as_str(), |(_, n)| n);
        if (name.starts_with("stream-") || base.starts_with("stream-"))
            && md.permissions().mode() & 0o111 != 0
        {
            return Ok(LoadSource::Stream(path.into()));
        }
        // The first entry that tells the two apart decides, so a large
        // archive is not read through twice (here, then when loading).
        let mut is_oci = false;
        let mut is_tar = false;
        for_each_entry(path, &mut |name, _| {
            is_tar = true;
            Ok(match name {
                "oci-layout" => {
                    is_oci = true;
                    ControlFlow::Break(())
                }
                "manifest.json" => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            })
        })
        .map_err(|_| LoadError::Source(path.display().to_string()))?;
        match (is_tar, is_oci) {
            (true, true) => Ok(LoadSource::OciArchive(path.into())),
            (true, false) => Ok(LoadSource::DockerArchive(path.into())),
            _ => Err(LoadError::Source(path.display().to_string())),
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            LoadSource::Oci(p)
            | LoadSource::OciArchive(p)
            | LoadSource::DockerArchive(p)
            | LoadSource::Stream(p) => p,
        }
    }
}

/// A reader that gunzips what starts with the gzip magic.
fn gunzip_if_needed(r: Box<dyn Read>) -> Result<Box<dyn Read>, LoadError> {
    use std::io::BufRead;
    let mut r = BufReader::with_capacity(1 << 20, r);
    let gz = r
        .fill_buf()
        .map_err(io_err(Path::new("-")))?
        .starts_with(&[0x1f, 0x8b]);
    Ok(if gz {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else {
        Box::new(r)
    })
}

/// Open a file, transparently gunzipping it.
fn open_maybe_gzip(path: &Path) -> Result<Box<dyn Read>, LoadError> {
    let mut f = BufReader::with_capacity(1 << 20, File::open(path).map_err(io_err(path))?);
    let head = {
        use std::io::BufRead;
        f.fill_buf()
            .map_err(io_err(path))?
            .get(..2)
            .map(<[u8]>::to_vec)
    };
    if head.as_deref() == Some(&[0x1f, 0x8b][..]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(f)))
    } else {
        Ok(Box::new(f))
    }
}

/// What an entry callback returns: go on, or stop reading the archive.
type EntryResult = Result<ControlFlow<()>, LoadError>;

/// Call `f(name, entry)` for every regular file of a (possibly gzip) tar
/// file, until `f` breaks.
fn for_each_entry(
    path: &Path,
    f: &mut dyn FnMut(&str, &mut dyn Read) -> EntryResult,
) -> Result<(), LoadError> {
    for_each_entry_in(path, open_maybe_gzip(path)?, f)
}

/// Call `f(name, entry)` for every regular file of the tar `reader` reads;
/// `label` names it in errors.
fn for_each_entry_in(
    label: &Path,
    reader: Box<dyn Read>,
    f: &mut dyn FnMut(&str, &mut dyn Read) -> EntryResult,
) -> Result<(), LoadError> {
    let mut archive = tar::Archive::new(reader);
    for e in archive.entries().map_err(io_err(label))? {
        let mut e = e.map_err(io_err(label))?;
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = String::from_utf8_lossy(&e.path_bytes())
            .trim_start_matches("./")
            .to_string();
        if f(&name, &mut e)?.is_break() {
            break;
        }
    }
    Ok(())
}

/// The error of a sink, named.
fn sink_err(s: &dyn BlobSink) -> impl FnOnce(SinkError) -> LoadError + '_ {
    move |source| LoadError::Sink {
        sink: s.describe(),
        source,
    }
}

/// Everything but the layer bytes of an image to load.
struct Plan {
    name: ImageRef,
    config: Blob,
    config_bytes: Vec<u8>,
    manifest: Blob,
    manifest_bytes: Vec<u8>,
    layers: Vec<LayerRecord>,
    platform: Platform,
    referrers: Vec<crate::oci::Referrer>,
}

/// Copy `reader` into every sink that lacks `digest`. The bytes are
/// hashed on the way and nothing is committed unless they match `digest`
/// (`origin` names the source in messages).
pub fn copy_blob(
    origin: &Path,
    reader: &mut dyn Read,
    digest: &Digest,
    sinks: &[&dyn BlobSink],
) -> Result<(), LoadError> {
    copy_blob_of(origin, reader, digest, sinks, None)
}

/// [`copy_blob`], for layer `i` of `layers` when `layer` says so (a sink
/// may extract a layer as it arrives).
fn copy_blob_of(
    origin: &Path,
    reader: &mut dyn Read,
    digest: &Digest,
    sinks: &[&dyn BlobSink],
    layer: Option<(&[LayerRecord], usize)>,
) -> Result<(), LoadError> {
    let needing: Vec<&&dyn BlobSink> = sinks.iter().filter(|s| !s.has_blob(digest)).collect();
    if needing.is_empty() {
        return Ok(());
    }
    let mut writers: Vec<Box<dyn BlobWriter>> = Vec::new();
    for s in &needing {
        let w = match layer {
            Some((layers, i)) => s.begin_layer(layers, i),
            None => s.begin_blob(),
        };
        writers.push(w.map_err(sink_err(**s))?);
    }
    let mut reader = documents::VerifyingReader::new(reader, digest);
    let mut buf = vec![0u8; 1 << 20];
    let read_err = |source: io::Error| match source
        .get_ref()
        .and_then(|e| e.downcast_ref::<documents::Mismatch>())
    {
        Some(m) => LoadError::Corrupt {
            path: origin.into(),
            what: "blob".into(),
            expected: m.expected.clone(),
            actual: m.actual.clone(),
        },
        None => LoadError::Io {
            path: origin.join(digest.to_string()),
            source,
        },
    };
    loop {
        let n = reader.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        for w in &mut writers {
            w.write_all(&buf[..n]).map_err(|source| LoadError::Io {
                path: origin.join(digest.to_string()),
                source,
            })?;
        }
    }
    for (w, s) in writers.into_iter().zip(needing) {
        w.commit(digest).map_err(sink_err(*s))?;
    }
    Ok(())
}

/// Opens a blob of a source by digest (from any thread).
pub type OpenBlob<'a, E> = dyn Fn(&Digest) -> Result<Box<dyn Read>, E> + Sync + 'a;

/// Copy every layer the sinks lack from `open`, several at a time (as
/// many as every sink takes: a fetch or a read overlaps the sinks' work on
/// the others: hashing, sending, writing), each checked against its
/// digest; as each is in, the sinks' `layer_ready` hears of it (containerd
/// unpacks it while others are fetched).
pub fn copy_layers<E: From<LoadError> + Send>(
    origin: &Path,
    layers: &[LayerRecord],
    sinks: &[&dyn BlobSink],
    open: &OpenBlob<'_, E>,
) -> Result<(), E> {
    let workers = sinks
        .iter()
        .map(|s| s.layers_at_once())
        .min()
        .unwrap_or(1)
        .max(1);
    let digests: Vec<Digest> = layers.iter().map(|l| l.blob.digest.clone()).collect();
    for s in sinks {
        s.expect_blobs(&digests);
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let first_error: std::sync::Mutex<Option<E>> = std::sync::Mutex::new(None);
    let one = |i: usize| -> Result<(), E> {
        let l = &layers[i];
        if !sinks.iter().all(|s| s.has_blob(&l.blob.digest)) {
            let mut r = open(&l.blob.digest)?;
            copy_blob_of(origin, &mut r, &l.blob.digest, sinks, Some((layers, i)))?;
        }
        let ready = crate::sink::ReadyLayer {
            index: i,
            total: layers.len(),
            record: l.clone(),
            content: None,
            mtime: 0,
            built: false,
        };
        for s in sinks {
            s.layer_ready(&ready);
        }
        Ok(())
    };
    std::thread::scope(|scope| {
        for _ in 0..workers.min(layers.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= layers.len() || failed.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                if let Err(e) = one(i) {
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    first_error.lock().unwrap().get_or_insert(e);
                    break;
                }
            });
        }
    });
    match first_error.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn finish(plan: Plan, sinks: &[&dyn BlobSink]) -> Result<ImageRecord, LoadError> {
    finish_record(
        ImageRecord {
            reference: plan.name,
            platform: plan.platform,
            config: plan.config,
            config_bytes: plan.config_bytes,
            manifest: plan.manifest,
            manifest_bytes: plan.manifest_bytes,
            layers: plan.layers,
            referrers: plan.referrers,
        },
        sinks,
    )
}

/// Put the config and manifest into every sink and record the image
/// (every layer blob must be there already).
pub fn finish_record(
    record: ImageRecord,
    sinks: &[&dyn BlobSink],
) -> Result<ImageRecord, LoadError> {
    for s in sinks {
        s.put_blob(&record.config.digest, &record.config_bytes)
            .map_err(sink_err(*s))?;
        crate::sink::put_referrers(*s, &record).map_err(sink_err(*s))?;
        s.put_blob(&record.manifest.digest, &record.manifest_bytes)
            .map_err(sink_err(*s))?;
        s.finish(&record).map_err(sink_err(*s))?;
    }
    Ok(record)
}

/// Load `source` into `sinks`. `tag` names the image (and picks it in a
/// layout with several). On error every sink is aborted.
pub fn load(
    source: &LoadSource,
    sinks: &[&dyn BlobSink],
    tag: Option<&ImageRef>,
    fallback: Option<&ImageRef>,
    want: Option<&Platform>,
) -> Result<ImageRecord, LoadError> {
    let result = load_inner(source, sinks, tag, fallback, want);
    if result.is_err() {
        for s in sinks {
            s.abort();
        }
    }
    result
}

fn load_inner(
    source: &LoadSource,
    sinks: &[&dyn BlobSink],
    tag: Option<&ImageRef>,
    fallback: Option<&ImageRef>,
    want: Option<&Platform>,
) -> Result<ImageRecord, LoadError> {
    match source {
        LoadSource::Oci(root) => layout::load_layout(root, sinks, tag, fallback, want),
        LoadSource::OciArchive(file) => layout::load_archive(file, sinks, tag, fallback, want),
        LoadSource::DockerArchive(file) => {
            docker::load_docker(file, open_maybe_gzip(file)?, sinks, tag, fallback)
        }
        LoadSource::Stream(script) => docker::load_stream(script, sinks, tag, fallback),
    }
}
