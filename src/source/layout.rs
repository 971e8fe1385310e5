//! Reading an OCI image layout (`oci:DIR`) or an OCI archive
//! (`oci-archive:FILE`, a tar of a layout, read in two passes with no
//! temporary copy: the first keeps the small JSON documents, the second
//! streams each needed layer, in archive order, into the sinks).

use super::documents::{
    blob_of, config_diff_ids, is_index, layer_records, parse_config, parse_index, parse_manifest,
    pick_platform, platform_of, read_referrer, verified,
};
use super::{copy_blob, finish, for_each_entry, io_err, LoadError, Plan, MAX_DOC};
use crate::oci::blob::Blob;
use crate::oci::digest::Digest;
use crate::oci::{ImageRecord, ImageRef, Platform};
use crate::sink::BlobSink;
use oci_spec::image::{Descriptor, ImageIndex};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::ops::ControlFlow;
use std::path::Path;

const CONTAINERD_NAME: &str = "io.containerd.image.name";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Where the documents of an OCI image come from.
enum Blobs<'a> {
    Dir(&'a Path),
    /// JSON documents kept from the first pass of an archive.
    Docs(&'a BTreeMap<String, Vec<u8>>, &'a Path),
}

impl Blobs<'_> {
    fn origin(&self) -> &Path {
        match self {
            Blobs::Dir(p) | Blobs::Docs(_, p) => p,
        }
    }

    /// A document, checked against its digest.
    fn json(&self, what: &str, d: &Digest) -> Result<Vec<u8>, LoadError> {
        let missing = || LoadError::Missing {
            path: self.origin().to_path_buf(),
            what: "blob",
            name: d.to_string(),
        };
        let bytes = match self {
            Blobs::Dir(root) => {
                let p = root.join("blobs/sha256").join(d.hex());
                std::fs::read(&p).map_err(|_| missing())?
            }
            Blobs::Docs(docs, _) => docs
                .get(&format!("blobs/sha256/{}", d.hex()))
                .cloned()
                .ok_or_else(missing)?,
        };
        verified(self.origin(), what, d, bytes)
    }
}

fn annotation<'a>(d: &'a Descriptor, key: &str) -> Option<&'a str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// The image a layout or OCI archive holds: (name, manifest descriptor).
/// Entries with a `subject` are artifacts about an image, not images.
fn pick_from_index(
    path: &Path,
    index: &ImageIndex,
    blobs: &Blobs,
    tag: Option<&ImageRef>,
    want: Option<&Platform>,
    keep_index: bool,
) -> Result<(Option<ImageRef>, Blob), LoadError> {
    let entries: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|m| subject_of_entry(path, m, blobs).is_none())
        .collect();
    let chosen: Vec<&Descriptor> = match tag {
        Some(t) if entries.len() > 1 => entries
            .iter()
            .copied()
            .filter(|m| {
                annotation(m, CONTAINERD_NAME) == Some(&t.to_string())
                    || annotation(m, REF_NAME) == t.tag.as_deref()
            })
            .collect(),
        _ => entries.clone(),
    };
    if chosen.len() != 1 {
        let names: Vec<&str> = entries
            .iter()
            .filter_map(|m| annotation(m, CONTAINERD_NAME).or(annotation(m, REF_NAME)))
            .collect();
        return Err(LoadError::Ambiguous {
            path: path.into(),
            n: entries.len(),
            names: names.join(", "),
        });
    }
    let m = chosen[0];
    let name = annotation(m, CONTAINERD_NAME).and_then(|n| ImageRef::parse(n).ok());
    let mut desc = blob_of(path, m)?;
    // A nested index (several platforms): take the one asked, else this machine's.
    if is_index(&desc.media_type) && !keep_index {
        let nested = parse_index(
            path,
            "the nested index",
            &blobs.json("index", &desc.digest)?,
        )?;
        desc = pick_platform(path, &nested, want)?;
    }
    Ok((name, desc))
}

/// The subject of an index entry that is a referrer (its manifest has a
/// `subject`), else `None`.
fn subject_of_entry(path: &Path, m: &Descriptor, blobs: &Blobs) -> Option<Digest> {
    if is_index(m.media_type().as_ref()) {
        return None;
    }
    let d = blob_of(path, m).ok()?;
    let bytes = blobs.json("manifest", &d.digest).ok()?;
    crate::oci::referrer::subject_of(&bytes).map(|(s, _)| s)
}

/// The referrers of `subject` that the index lists beside it.
fn referrers_of(
    path: &Path,
    index: &ImageIndex,
    blobs: &Blobs,
    subject: &Digest,
) -> Result<Vec<crate::oci::Referrer>, LoadError> {
    let mut out = Vec::new();
    for m in index.manifests() {
        if subject_of_entry(path, m, blobs).as_ref() != Some(subject) {
            continue;
        }
        let d = blob_of(path, m)?;
        let bytes = blobs.json("referrer manifest", &d.digest)?;
        if let Some(r) =
            read_referrer(path, subject, &d, bytes, |b| blobs.json("referrer blob", b))?
        {
            out.push(r);
        }
    }
    Ok(out)
}

/// The referrers of the image `SOURCE` names in a layout or OCI archive
/// (for `nixoci sbom`), with no layer read.
pub fn referrers(
    source: &super::LoadSource,
    tag: Option<&ImageRef>,
    want: Option<&Platform>,
) -> Result<(Blob, Vec<crate::oci::Referrer>), LoadError> {
    let found = with_layout(source, |root, index, blobs| {
        let (_, desc) = pick_from_index(root, index, blobs, tag, want, false)?;
        let refs = referrers_of(root, index, blobs, &desc.digest)?;
        Ok((desc, refs))
    })?;
    found.ok_or_else(|| LoadError::Invalid {
        path: source.path().into(),
        why: "a docker-archive or stream script holds no SBOM or provenance (nixoci attaches them to OCI layouts, OCI archives, registries and containerd)".into(),
    })
}

/// Call `f` with the index and documents of a layout or OCI archive
/// (`None` for other sources).
fn with_layout<T>(
    source: &super::LoadSource,
    f: impl FnOnce(&Path, &ImageIndex, &Blobs) -> Result<T, LoadError>,
) -> Result<Option<T>, LoadError> {
    let docs;
    let (root, blobs, index_bytes) = match source {
        super::LoadSource::Oci(root) => {
            let p = root.join("index.json");
            let bytes = std::fs::read(&p).map_err(io_err(&p))?;
            (root.as_path(), Blobs::Dir(root), bytes)
        }
        super::LoadSource::OciArchive(file) => {
            docs = archive_documents(file)?;
            let bytes = docs
                .get("index.json")
                .cloned()
                .ok_or_else(|| LoadError::Missing {
                    path: file.into(),
                    what: "file",
                    name: "index.json".into(),
                })?;
            (file.as_path(), Blobs::Docs(&docs, file), bytes)
        }
        _ => return Ok(None),
    };
    let index = parse_index(root, "index.json", &index_bytes)?;
    f(root, &index, &blobs).map(Some)
}

fn oci_plan(
    path: &Path,
    index: &ImageIndex,
    blobs: &Blobs,
    tag: Option<&ImageRef>,
    fallback: Option<&ImageRef>,
    want: Option<&Platform>,
) -> Result<Plan, LoadError> {
    let (name, desc) = pick_from_index(path, index, blobs, tag, want, false)?;
    let name = tag
        .cloned()
        .or(name)
        .or(fallback.cloned())
        .ok_or_else(|| LoadError::NoName(path.into()))?;
    let manifest_bytes = blobs.json("manifest", &desc.digest)?;
    let manifest = parse_manifest(path, &manifest_bytes)?;
    let config = blob_of(path, manifest.config())?;
    let layers: Vec<Blob> = manifest
        .layers()
        .iter()
        .map(|l| blob_of(path, l))
        .collect::<Result<_, _>>()?;
    let config_bytes = blobs.json("config", &config.digest)?;
    let cfg = parse_config(path, &config_bytes)?;
    let diff_ids = config_diff_ids(path, &cfg, layers.len(), "the manifest")?;
    let referrers = referrers_of(path, index, blobs, &desc.digest)?;
    Ok(Plan {
        referrers,
        name,
        platform: platform_of(&cfg),
        config,
        config_bytes,
        manifest: desc,
        manifest_bytes,
        layers: layer_records(layers, diff_ids),
    })
}

/// Load the image of an OCI layout directory.
pub fn load_layout(
    root: &Path,
    sinks: &[&dyn BlobSink],
    tag: Option<&ImageRef>,
    fallback: Option<&ImageRef>,
    want: Option<&Platform>,
) -> Result<ImageRecord, LoadError> {
    let index_path = root.join("index.json");
    let index = parse_index(
        root,
        "index.json",
        &std::fs::read(&index_path).map_err(io_err(&index_path))?,
    )?;
    let plan = oci_plan(root, &index, &Blobs::Dir(root), tag, fallback, want)?;
    let open = |d: &crate::oci::digest::Digest| -> Result<Box<dyn std::io::Read>, LoadError> {
        let p = root.join("blobs/sha256").join(d.hex());
        let f = File::open(&p).map_err(|_| LoadError::Missing {
            path: root.into(),
            what: "layer",
            name: d.to_string(),
        })?;
        Ok(Box::new(f))
    };
    super::copy_layers(root, &plan.layers, sinks, &open)?;
    finish(plan, sinks)
}

/// Keep a small JSON document of an archive's first pass.
pub(super) fn keep_small(
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

/// The first pass over an OCI archive: its small JSON documents.
fn archive_documents(file: &Path) -> Result<BTreeMap<String, Vec<u8>>, LoadError> {
    let mut docs = BTreeMap::new();
    for_each_entry(file, &mut |name, r| {
        if name == "index.json" || name.starts_with("blobs/") {
            keep_small(file, name, r, &mut docs)?;
        }
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(docs)
}

/// Load the image of an OCI archive.
pub fn load_archive(
    file: &Path,
    sinks: &[&dyn BlobSink],
    tag: Option<&ImageRef>,
    fallback: Option<&ImageRef>,
    want: Option<&Platform>,
) -> Result<ImageRecord, LoadError> {
    let docs = archive_documents(file)?;
    let index = docs.get("index.json").ok_or_else(|| LoadError::Missing {
        path: file.into(),
        what: "file",
        name: "index.json".into(),
    })?;
    let index = parse_index(file, "index.json", index)?;
    let plan = oci_plan(file, &index, &Blobs::Docs(&docs, file), tag, fallback, want)?;
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
                copy_blob(file, r, d, sinks)?;
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
            path: file.into(),
            what: "layer",
            name: name.clone(),
        });
    }
    finish(plan, sinks)
}

/// An image index over several platforms, as a layout names it.
pub struct TopIndex {
    pub name: Option<ImageRef>,
    pub index: Blob,
    pub bytes: Vec<u8>,
    pub platforms: Vec<Platform>,
}

/// The image index a layout or OCI archive names (by `tag` where it holds
/// several), when the image is one over several platforms: its name,
/// descriptor, bytes (checked against its digest) and platforms, so that
/// a copy can carry every platform and the index itself.
pub fn top_index(
    source: &super::LoadSource,
    tag: Option<&ImageRef>,
) -> Result<Option<TopIndex>, LoadError> {
    let found = with_layout(source, |root, index, blobs| {
        let (name, desc) = pick_from_index(root, index, blobs, tag, None, true)?;
        if !is_index(&desc.media_type) {
            return Ok(None);
        }
        let bytes = blobs.json("index", &desc.digest)?;
        let nested = parse_index(root, "the nested index", &bytes)?;
        let platforms: Vec<Platform> = nested
            .manifests()
            .iter()
            .filter_map(|m| m.platform().as_ref())
            .map(Platform::from_oci)
            .collect();
        // Copied whole only when every entry names its platform (the copy
        // picks each by it); otherwise as any index is: one platform.
        if platforms.is_empty() || platforms.len() != nested.manifests().len() {
            return Ok(None);
        }
        Ok(Some(TopIndex {
            name,
            index: desc,
            bytes,
            platforms,
        }))
    })?;
    Ok(found.flatten())
}
