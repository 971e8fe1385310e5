//! Loading existing images into sinks: an OCI layout, an OCI archive, a
//! docker-archive (`docker save`'s format, plain or gzip), or a store path
//! holding one of these.
//!
//! Archives are read in two passes, with no temporary copy: the first keeps
//! the small JSON documents (index, manifests, configs), the second streams
//! each needed layer, in archive order, into the sinks.

use crate::image::config::Platform;
use crate::image::digest::{Digest, HashingWriter};
use crate::image::manifest::{Blob, CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use crate::image::reference::{ImageRef, ReferenceError};
use crate::sink::{BlobSink, BlobWriter, ImageRecord, LayerRecord, SinkError};
use std::collections::{BTreeMap, BTreeSet};
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

/// Where the blobs of an OCI image come from.
enum Blobs<'a> {
    Dir(&'a Path),
    /// JSON documents kept from the first pass of an archive.
    Docs(&'a BTreeMap<String, Vec<u8>>, &'a Path),
}

impl Blobs<'_> {
    fn json(&self, d: &Digest) -> Result<Vec<u8>, LoadError> {
        match self {
            Blobs::Dir(root) => {
                let p = root.join("blobs/sha256").join(d.hex());
                std::fs::read(&p).map_err(|_| LoadError::Missing {
                    path: root.to_path_buf(),
                    what: "blob",
                    name: d.to_string(),
                })
            }
            Blobs::Docs(docs, path) => docs
                .get(&format!("blobs/sha256/{}", d.hex()))
                .cloned()
                .ok_or_else(|| LoadError::Missing {
                    path: path.to_path_buf(),
                    what: "blob",
                    name: d.to_string(),
                }),
        }
    }
}

fn parse_json(path: &Path, what: &str, bytes: &[u8]) -> Result<serde_json::Value, LoadError> {
    serde_json::from_slice(bytes).map_err(|e| LoadError::Invalid {
        path: path.into(),
        why: format!("{what} is not valid JSON: {e}"),
    })
}

/// This machine's architecture as OCI names it (`amd64`, `arm64`).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

/// The entry of an index (or manifest list) for linux on this machine.
pub fn platform_entry(index: &serde_json::Value) -> Option<&serde_json::Value> {
    index["manifests"]
        .as_array()?
        .iter()
        .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == host_arch())
}

pub fn platform_of(config: &serde_json::Value) -> Platform {
    Platform {
        architecture: config["architecture"].as_str().unwrap_or("amd64").into(),
        os: config["os"].as_str().unwrap_or("linux").into(),
        variant: config["variant"].as_str().map(Into::into),
    }
}

/// The image a layout or OCI archive holds: (name, manifest descriptor).
fn pick_from_index(
    path: &Path,
    index: &serde_json::Value,
    blobs: &Blobs,
    tag: Option<&ImageRef>,
) -> Result<(Option<ImageRef>, Blob), LoadError> {
    let entries: Vec<&serde_json::Value> = index["manifests"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let name_of = |m: &serde_json::Value| -> Option<String> {
        m["annotations"]["io.containerd.image.name"]
            .as_str()
            .or(m["annotations"]["org.opencontainers.image.ref.name"].as_str())
            .map(String::from)
    };
    let chosen: Vec<&serde_json::Value> = match tag {
        Some(t) if entries.len() > 1 => entries
            .iter()
            .copied()
            .filter(|m| {
                let full = m["annotations"]["io.containerd.image.name"].as_str();
                let short = m["annotations"]["org.opencontainers.image.ref.name"].as_str();
                full == Some(&t.to_string()) || short == t.tag.as_deref()
            })
            .collect(),
        _ => entries.clone(),
    };
    if chosen.len() != 1 {
        let names: Vec<String> = entries.iter().filter_map(|m| name_of(m)).collect();
        return Err(LoadError::Ambiguous {
            path: path.into(),
            n: entries.len(),
            names: names.join(", "),
        });
    }
    let m = chosen[0];
    let name = m["annotations"]["io.containerd.image.name"]
        .as_str()
        .and_then(|n| ImageRef::parse(n).ok());
    let mut desc: Blob = serde_json::from_value(m.clone()).map_err(|e| LoadError::Invalid {
        path: path.into(),
        why: format!("index entry: {e}"),
    })?;
    // A nested index (several platforms): take this machine's.
    if desc.media_type.ends_with("image.index.v1+json") || desc.media_type.contains("manifest.list")
    {
        let nested = parse_json(path, "index", &blobs.json(&desc.digest)?)?;
        let m = platform_entry(&nested).ok_or_else(|| LoadError::Invalid {
            path: path.into(),
            why: format!("the index has no linux/{} image", host_arch()),
        })?;
        desc = serde_json::from_value(m.clone()).map_err(|e| LoadError::Invalid {
            path: path.into(),
            why: format!("index entry: {e}"),
        })?;
    }
    Ok((name, desc))
}

/// A config's `rootfs.diff_ids`, which must number `layers` (what the
/// manifest lists).
pub fn config_diff_ids(
    path: &Path,
    cfg: &serde_json::Value,
    layers: usize,
    listed_by: &str,
) -> Result<Vec<Digest>, LoadError> {
    let diff_ids: Vec<Digest> = cfg["rootfs"]["diff_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| Digest::parse(d.as_str().unwrap_or_default()))
        .collect::<Result<_, _>>()
        .map_err(|e| LoadError::Invalid {
            path: path.into(),
            why: format!("config diff_ids: {e}"),
        })?;
    if diff_ids.len() != layers {
        return Err(LoadError::Invalid {
            path: path.into(),
            why: format!(
                "{listed_by} lists {layers} layers and the config {} diff_ids",
                diff_ids.len()
            ),
        });
    }
    Ok(diff_ids)
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
}

fn oci_plan(
    path: &Path,
    index: &serde_json::Value,
    blobs: &Blobs,
    tag: Option<&ImageRef>,
    fallback: Option<&ImageRef>,
) -> Result<Plan, LoadError> {
    let (name, desc) = pick_from_index(path, index, blobs, tag)?;
    let name = tag
        .cloned()
        .or(name)
        .or(fallback.cloned())
        .ok_or_else(|| LoadError::NoName(path.into()))?;
    let manifest_bytes = blobs.json(&desc.digest)?;
    let manifest = parse_json(path, "manifest", &manifest_bytes)?;
    let config: Blob =
        serde_json::from_value(manifest["config"].clone()).map_err(|e| LoadError::Invalid {
            path: path.into(),
            why: format!("manifest config: {e}"),
        })?;
    let layers: Vec<Blob> =
        serde_json::from_value(manifest["layers"].clone()).map_err(|e| LoadError::Invalid {
            path: path.into(),
            why: format!("manifest layers: {e}"),
        })?;
    let config_bytes = blobs.json(&config.digest)?;
    let cfg = parse_json(path, "config", &config_bytes)?;
    let diff_ids = config_diff_ids(path, &cfg, layers.len(), "the manifest")?;
    Ok(Plan {
        name,
        platform: platform_of(&cfg),
        config,
        config_bytes,
        manifest: desc,
        manifest_bytes,
        layers: layer_records(layers, diff_ids),
    })
}

/// Copy `reader` into every sink that lacks `digest`; verify it.
pub fn copy_blob(
    reader: &mut dyn Read,
    digest: &Digest,
    sinks: &[&dyn BlobSink],
) -> Result<(), LoadError> {
    let needing: Vec<&&dyn BlobSink> = sinks.iter().filter(|s| !s.has_blob(digest)).collect();
    if needing.is_empty() {
        return Ok(());
    }
    let mut writers: Vec<Box<dyn BlobWriter>> = Vec::new();
    for s in &needing {
        writers.push(s.begin_blob().map_err(sink_err(**s))?);
    }
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).map_err(|source| LoadError::Io {
            path: PathBuf::from(digest.to_string()),
            source,
        })?;
        if n == 0 {
            break;
        }
        for w in &mut writers {
            w.write_all(&buf[..n]).map_err(|source| LoadError::Io {
                path: PathBuf::from(digest.to_string()),
                source,
            })?;
        }
    }
    for (w, s) in writers.into_iter().zip(needing) {
        w.commit(digest).map_err(sink_err(*s))?;
    }
    Ok(())
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
) -> Result<ImageRecord, LoadError> {
    let result = load_inner(source, sinks, tag, fallback);
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
) -> Result<ImageRecord, LoadError> {
    let path = source.path();
    match source {
        LoadSource::Oci(root) => {
            let index_path = root.join("index.json");
            let index = parse_json(
                path,
                "index.json",
                &std::fs::read(&index_path).map_err(io_err(&index_path))?,
            )?;
            let plan = oci_plan(path, &index, &Blobs::Dir(root), tag, fallback)?;
            for l in &plan.layers {
                let p = root.join("blobs/sha256").join(l.blob.digest.hex());
                if sinks.iter().all(|s| s.has_blob(&l.blob.digest)) {
                    continue;
                }
                let mut f = File::open(&p).map_err(|_| LoadError::Missing {
                    path: root.clone(),
                    what: "layer",
                    name: l.blob.digest.to_string(),
                })?;
                copy_blob(&mut f, &l.blob.digest, sinks)?;
            }
            finish(plan, sinks)
        }
        LoadSource::OciArchive(file) => {
            let mut docs = BTreeMap::new();
            for_each_entry(file, &mut |name, r| {
                if name == "index.json" || name.starts_with("blobs/") {
                    keep_small(file, name, r, &mut docs)?;
                }
                Ok(ControlFlow::Continue(()))
            })?;
            let index = docs.get("index.json").ok_or_else(|| LoadError::Missing {
                path: file.clone(),
                what: "file",
                name: "index.json".into(),
            })?;
            let index = parse_json(path, "index.json", index)?;
            let plan = oci_plan(path, &index, &Blobs::Docs(&docs, file), tag, fallback)?;
            let wanted: BTreeMap<String, Digest> = plan
                .layers
                .iter()
                .map(|l| {
                    (
                        format!("blobs/sha256/{}", l.blob.digest.hex()),
                        l.blob.digest.clone(),
                    )
                })
                .collect();
            let mut seen = BTreeSet::new();
            for_each_entry(file, &mut |name, r| {
                if let Some(d) = wanted.get(name) {
                    if seen.insert(name.to_string()) {
                        copy_blob(r, d, sinks)?;
                    }
                }
                Ok(if seen.len() == wanted.len() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            })?;
            if let Some((name, _)) = wanted.iter().find(|(n, _)| !seen.contains(*n)) {
                return Err(LoadError::Missing {
                    path: file.clone(),
                    what: "layer",
                    name: name.clone(),
                });
            }
            finish(plan, sinks)
        }
        LoadSource::DockerArchive(file) => {
            load_docker(file, open_maybe_gzip(file)?, sinks, tag, fallback)
        }
        LoadSource::Stream(script) => load_stream(script, sinks, tag, fallback),
    }
}

fn keep_small(
    file: &Path,
    name: &str,
    r: &mut dyn Read,
    docs: &mut BTreeMap<String, Vec<u8>>,
) -> Result<(), LoadError> {
    let mut v = Vec::new();
    r.take(MAX_DOC + 1)
        .read_to_end(&mut v)
        .map_err(io_err(file))?;
    if v.len() as u64 <= MAX_DOC && v.first().is_some_and(|b| *b == b'{' || *b == b'[') {
        docs.insert(name.to_string(), v);
    }
    Ok(())
}

/// Hashes what it is given as a layer: the blob digest, and the diff_id of
/// the (possibly gzip) content.
struct LayerHasher {
    blob: HashingWriter<io::Sink>,
    plain: Option<HashingWriter<io::Sink>>,
    gz: Option<flate2::write::GzDecoder<HashingWriter<io::Sink>>>,
    first: bool,
}

impl Write for LayerHasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.first && !buf.is_empty() {
            self.first = false;
            if buf.starts_with(&[0x1f, 0x8b]) {
                self.gz = Some(flate2::write::GzDecoder::new(
                    HashingWriter::new(io::sink()),
                ));
                self.plain = None;
            }
        }
        self.blob.write_all(buf)?;
        if let Some(p) = &mut self.plain {
            p.write_all(buf)?;
        }
        if let Some(g) = &mut self.gz {
            g.write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Read a docker-archive in one pass (a `stream-` script's output can be
/// read only once): every layer-like entry (a tar or gzip stream, by its
/// first bytes) is streamed into the sinks as it comes, hashed on the way;
/// the small JSON documents are kept; `manifest.json` (which
/// `streamLayeredImage` writes last) then says which blobs make the image,
/// and each layer's diff_id is checked against the config.
fn load_docker(
    label: &Path,
    reader: Box<dyn Read>,
    sinks: &[&dyn BlobSink],
    tag: Option<&ImageRef>,
    fallback: Option<&ImageRef>,
) -> Result<ImageRecord, LoadError> {
    let mut docs = BTreeMap::new();
    let mut streamed: BTreeMap<String, (Blob, Digest)> = BTreeMap::new();
    for_each_entry_in(label, reader, &mut |name, e| {
        let mut head = Vec::with_capacity(512);
        e.take(512).read_to_end(&mut head).map_err(io_err(label))?;
        let is_layer = head.starts_with(&[0x1f, 0x8b])
            || head.get(257..262) == Some(&b"ustar"[..])
            || name.ends_with(".tar")
            || (!head.is_empty() && head.iter().all(|b| *b == 0));
        let mut r = (&head[..]).chain(e);
        if is_layer {
            if let std::collections::btree_map::Entry::Vacant(slot) =
                streamed.entry(name.to_string())
            {
                slot.insert(stream_layer(label, &mut r, sinks)?);
            }
        } else {
            keep_small(label, name, &mut r, &mut docs)?;
        }
        Ok(ControlFlow::Continue(()))
    })?;
    let manifest = docs
        .get("manifest.json")
        .ok_or_else(|| LoadError::NoManifestJson(label.into()))?;
    let manifest = parse_json(label, "manifest.json", manifest)?;
    let images = manifest.as_array().cloned().unwrap_or_default();
    if images.len() != 1 {
        return Err(LoadError::SeveralImages(label.into(), images.len()));
    }
    let m = &images[0];
    let config_name = m["Config"].as_str().unwrap_or_default().to_string();
    let config_bytes = docs
        .get(&config_name)
        .cloned()
        .ok_or_else(|| LoadError::Missing {
            path: label.into(),
            what: "config",
            name: config_name.clone(),
        })?;
    let cfg = parse_json(label, "config", &config_bytes)?;
    let layer_names: Vec<String> = m["Layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str().map(String::from))
        .collect();
    let diff_ids = config_diff_ids(label, &cfg, layer_names.len(), "manifest.json")?;
    let mut layers = Vec::with_capacity(layer_names.len());
    for (name, expected) in layer_names.iter().zip(diff_ids) {
        let (blob, diff_id) = streamed
            .get(name)
            .cloned()
            .ok_or_else(|| LoadError::Missing {
                path: label.into(),
                what: "layer",
                name: name.clone(),
            })?;
        if diff_id != expected {
            return Err(LoadError::DiffId {
                path: label.into(),
                layer: name.clone(),
                actual: diff_id,
                expected,
            });
        }
        layers.push(LayerRecord {
            diff_id,
            uncompressed_size: 0,
            blob,
        });
    }
    let repo_tags: Vec<String> = m["RepoTags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(String::from))
        .collect();
    let name = match (tag, repo_tags.as_slice()) {
        (Some(t), tags) => {
            if !tags
                .iter()
                .any(|r| ImageRef::parse(r).ok().as_ref() == Some(t))
            {
                tracing::warn!(
                    "{}: the archive names {} ({}); it is stored as {t}",
                    label.display(),
                    if tags.is_empty() {
                        "no image"
                    } else {
                        "another image"
                    },
                    tags.join(", ")
                );
            }
            t.clone()
        }
        (None, [one]) => ImageRef::parse(one)?,
        (None, []) => match fallback {
            Some(f) => {
                tracing::warn!(
                    "{}: the archive names no image; it is stored as {f}",
                    label.display()
                );
                f.clone()
            }
            None => return Err(LoadError::NoName(label.into())),
        },
        (None, _) => {
            return Err(LoadError::Invalid {
                path: label.into(),
                why: format!(
                    "Image has more than 1 label/tag ({}); choose one with --tag",
                    repo_tags.join(", ")
                ),
            })
        }
    };
    let config = Blob {
        media_type: CONFIG_MEDIA_TYPE.into(),
        digest: Digest::of(&config_bytes),
        size: config_bytes.len() as u64,
    };
    let layer_blobs: Vec<Blob> = layers.iter().map(|l| l.blob.clone()).collect();
    let manifest_bytes =
        crate::image::manifest::manifest_json(&config, &layer_blobs, &BTreeMap::new());
    let manifest = Blob {
        media_type: MANIFEST_MEDIA_TYPE.into(),
        digest: Digest::of(&manifest_bytes),
        size: manifest_bytes.len() as u64,
    };
    finish(
        Plan {
            name,
            platform: platform_of(&cfg),
            config,
            config_bytes,
            manifest,
            manifest_bytes,
            layers,
        },
        sinks,
    )
}

/// Stream one layer into every sink; returns its blob and diff_id.
fn stream_layer(
    label: &Path,
    r: &mut dyn Read,
    sinks: &[&dyn BlobSink],
) -> Result<(Blob, Digest), LoadError> {
    let mut writers: Vec<(Box<dyn BlobWriter>, &dyn BlobSink)> = Vec::new();
    for s in sinks {
        writers.push((s.begin_blob().map_err(sink_err(*s))?, *s));
    }
    let mut h = LayerHasher {
        blob: HashingWriter::new(io::sink()),
        plain: Some(HashingWriter::new(io::sink())),
        gz: None,
        first: true,
    };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).map_err(io_err(label))?;
        if n == 0 {
            break;
        }
        h.write_all(&buf[..n]).map_err(io_err(label))?;
        for (w, _) in &mut writers {
            w.write_all(&buf[..n]).map_err(io_err(label))?;
        }
    }
    let (digest, size, _) = h.blob.finish();
    let (gzip, diff_id) = match (h.plain, h.gz) {
        (Some(p), _) => (false, p.finish().0),
        (None, Some(g)) => (true, g.finish().map_err(io_err(label))?.finish().0),
        (None, None) => unreachable!("one hasher is always set"),
    };
    for (w, s) in writers {
        w.commit(&digest).map_err(sink_err(s))?;
    }
    let media_type = if gzip {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    } else {
        "application/vnd.oci.image.layer.v1.tar"
    };
    Ok((
        Blob {
            media_type: media_type.into(),
            digest,
            size,
        },
        diff_id,
    ))
}

/// Run a `stream-` script (as `streamLayeredImage` makes) and load the
/// docker-archive it prints, streamed: no copy of the whole image is kept.
fn load_stream(
    script: &Path,
    sinks: &[&dyn BlobSink],
    tag: Option<&ImageRef>,
    fallback: Option<&ImageRef>,
) -> Result<ImageRecord, LoadError> {
    let mut child = std::process::Command::new(script)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(io_err(script))?;
    let mut stderr = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let stdout = child.stdout.take().expect("piped");
    let result = gunzip_if_needed(Box::new(stdout))
        .and_then(|r| load_docker(script, r, sinks, tag, fallback));
    let status = child.wait().map_err(io_err(script))?;
    let stderr = err_reader.join().unwrap_or_default();
    match result {
        Ok(_) if !status.success() => Err(LoadError::Invalid {
            path: script.into(),
            why: format!(
                "the stream script exited with {status}:\n{}",
                stderr.trim_end()
            ),
        }),
        Err(e) if !status.success() => Err(LoadError::Invalid {
            path: script.into(),
            why: format!(
                "{e}; the stream script exited with {status}:\n{}",
                stderr.trim_end()
            ),
        }),
        other => other,
    }
}

/// The config and layer blobs a manifest lists (`origin` names where it
/// came from, for messages).
pub fn manifest_blobs(origin: &Path, manifest: &[u8]) -> Result<(Blob, Vec<Blob>), LoadError> {
    let m = parse_json(origin, "manifest", manifest)?;
    let invalid = |what: &str, e: serde_json::Error| LoadError::Invalid {
        path: origin.into(),
        why: format!("manifest {what}: {e}"),
    };
    let config = serde_json::from_value(m["config"].clone()).map_err(|e| invalid("config", e))?;
    let layers = serde_json::from_value(m["layers"].clone()).map_err(|e| invalid("layers", e))?;
    Ok((config, layers))
}

/// A loaded image's layers: each blob with its diff_id (sizes unknown).
fn layer_records(blobs: Vec<Blob>, diff_ids: Vec<Digest>) -> Vec<LayerRecord> {
    blobs
        .into_iter()
        .zip(diff_ids)
        .map(|(blob, diff_id)| LayerRecord {
            diff_id,
            uncompressed_size: 0,
            blob,
        })
        .collect()
}

/// An image held as documents elsewhere (a registry, a content store),
/// from its manifest (of `media_type`): fetch the config through
/// `get_config`, copy each layer the sinks lack through `open`, then record
/// the image with its own manifest and config bytes.
pub fn store_documents<E: From<LoadError>>(
    origin: &Path,
    reference: ImageRef,
    media_type: String,
    manifest_bytes: Vec<u8>,
    sinks: &[&dyn BlobSink],
    get_config: impl FnOnce(&Digest) -> Result<Vec<u8>, E>,
    mut open: impl FnMut(&Digest) -> Result<Box<dyn Read>, E>,
) -> Result<ImageRecord, E> {
    let (config, layers) = manifest_blobs(origin, &manifest_bytes)?;
    let manifest = Blob {
        media_type,
        digest: Digest::of(&manifest_bytes),
        size: manifest_bytes.len() as u64,
    };
    let config_bytes = get_config(&config.digest)?;
    if Digest::of(&config_bytes) != config.digest {
        return Err(LoadError::Invalid {
            path: origin.into(),
            why: format!("the config does not match its digest {}", config.digest),
        }
        .into());
    }
    let cfg = parse_json(origin, "config", &config_bytes)?;
    let diff_ids = config_diff_ids(origin, &cfg, layers.len(), "the manifest")?;
    for l in &layers {
        if sinks.iter().all(|s| s.has_blob(&l.digest)) {
            continue;
        }
        let mut r = open(&l.digest)?;
        copy_blob(&mut r, &l.digest, sinks)?;
    }
    let record = ImageRecord {
        reference,
        platform: platform_of(&cfg),
        manifest,
        manifest_bytes,
        config,
        config_bytes,
        layers: layer_records(layers, diff_ids),
    };
    Ok(finish_record(record, sinks)?)
}
