//! An OCI image layout directory (image-spec 1.0): `oci-layout`,
//! `index.json`, `blobs/sha256/<hex>`.
//!
//! Blobs are written under a temporary name and renamed into place once
//! their digest is known. `index.json` is read, changed and replaced (write
//! and rename) while holding a lock on the layout directory, so concurrent
//! builds into one layout are safe. An image whose name and tag are already
//! in the index replaces that entry; every other entry is kept.

use super::{BlobSink, BlobWriter, ImageRecord, IndexRecord, LayerForm, SinkError};
use crate::oci::blob::{canonical_json, Blob, INDEX_MEDIA_TYPE};
use crate::oci::digest::{Digest, HashingWriter};
pub use crate::util::fs::tmp_name;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
const LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

pub struct OciDir {
    root: PathBuf,
    form: LayerForm,
    /// Whether this build created the directory (then abort removes it).
    created: bool,
    /// Blobs this build added (abort removes them).
    added: Arc<Mutex<Vec<PathBuf>>>,
}

/// Check that `path` can become a file or directory: its parent must be a
/// directory (or creatable) and must not be a regular file.
pub fn check_output_path(path: &Path) -> Result<(), SinkError> {
    let mut anc = path.parent();
    while let Some(a) = anc {
        if a.as_os_str().is_empty() {
            break;
        }
        match fs::metadata(a) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => {
                return Err(SinkError::Invalid(format!(
                    "cannot write to {}: {} is a regular file, not a directory; choose another output path",
                    path.display(),
                    a.display()
                )))
            }
            Err(_) => anc = a.parent(),
        }
    }
    Ok(())
}

impl OciDir {
    /// Open (creating if needed) a layout at `root`.
    pub fn open(root: &Path, form: LayerForm) -> Result<Self, SinkError> {
        check_output_path(root)?;
        let created = match fs::symlink_metadata(root) {
            Ok(m) if m.is_dir() => {
                let empty = fs::read_dir(root)
                    .map_err(SinkError::io(root))?
                    .next()
                    .is_none();
                if !empty && !root.join("oci-layout").is_file() {
                    return Err(SinkError::Invalid(format!(
                        "{} exists and is not an OCI layout (no oci-layout file); refusing to write into it. Choose an empty or new directory",
                        root.display()
                    )));
                }
                false
            }
            Ok(_) => {
                return Err(SinkError::Invalid(format!(
                    "{} exists and is not a directory; an oci: output is a directory",
                    root.display()
                )))
            }
            Err(_) => true,
        };
        // `oci-layout` comes first, so that a concurrent build into the same
        // new directory sees either an empty directory or a layout.
        fs::create_dir_all(root).map_err(SinkError::io(root))?;
        let layout = root.join("oci-layout");
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&layout)
        {
            Ok(mut f) => {
                use std::io::Write as _;
                f.write_all(LAYOUT.as_bytes())
                    .map_err(SinkError::io(&layout))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(SinkError::io(&layout)(e)),
        }
        let blobs = root.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(SinkError::io(&blobs))?;
        // An index from the start (empty until an image is recorded), so a
        // layout killed before its first image is still a valid layout.
        let index_path = root.join("index.json");
        if !index_path.exists() {
            let lock = File::open(root).map_err(SinkError::io(root))?;
            lock.lock().map_err(SinkError::io(root))?;
            if !index_path.exists() {
                write_atomic(&index_path, &canonical_json(&read_index(&index_path)?))?;
            }
        }
        Ok(OciDir {
            root: root.to_path_buf(),
            form,
            created,
            added: Arc::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    fn update_index(&self, image: &ImageRecord) -> Result<(), SinkError> {
        self.record_entry(
            &image.reference,
            &image.manifest,
            Some(&image.platform),
            std::slice::from_ref(image),
        )
    }

    /// Record `top` (an image manifest, or an index over `images`) under
    /// `reference`, with the referrers of `images` beside it, replacing an
    /// entry of the same name and the referrers that went with it.
    fn record_entry(
        &self,
        reference: &crate::oci::ImageRef,
        top: &Blob,
        platform: Option<&crate::oci::Platform>,
        images: &[ImageRecord],
    ) -> Result<(), SinkError> {
        let lock = File::open(&self.root).map_err(SinkError::io(&self.root))?;
        lock.lock().map_err(SinkError::io(&self.root))?;
        let index_path = self.root.join("index.json");
        let mut index = read_index(&index_path)?;
        // Under the lock: every blob of the image is still there (a
        // concurrent build that failed removes only blobs no recorded image
        // uses, but may have removed one this build found and skipped).
        let blobs = std::iter::once(top).chain(images.iter().flat_map(|image| {
            [&image.manifest, &image.config]
                .into_iter()
                .chain(image.layers.iter().map(|l| &l.blob))
                .chain(image.referrers.iter().flat_map(|r| {
                    std::iter::once(&r.manifest).chain(r.blobs.iter().map(|(b, _)| b))
                }))
        }));
        for b in blobs {
            if !self.blob_path(&b.digest).is_file() {
                return Err(SinkError::Invalid(format!(
                    "{}: blob {} vanished while this build ran (a concurrent build into this layout failed and removed it); build again",
                    self.describe(),
                    b.digest
                )));
            }
        }
        let full = format!("{}:{}", reference.name(), reference.tag_or_latest());
        let manifests = index
            .get_mut("manifests")
            .and_then(|m| m.as_array_mut())
            .ok_or_else(|| {
                SinkError::Invalid(format!("{}: no manifests array", index_path.display()))
            })?;
        manifests.retain(|m| m["annotations"][CONTAINERD_NAME].as_str() != Some(full.as_str()));
        // Referrers go with their image: drop those whose subject no image
        // entry names any more (the entry just replaced), and this image's
        // own (added again below).
        let root = self.root.clone();
        let subjects: BTreeSet<String> = manifests
            .iter()
            .filter(|m| !is_referrer_entry(m))
            .flat_map(|m| entry_manifests(&root, m))
            .collect();
        let new: BTreeSet<String> = images
            .iter()
            .map(|i| i.manifest.digest.to_string())
            .collect();
        manifests.retain(|m| {
            if !is_referrer_entry(m) {
                return true;
            }
            match entry_subject(&root, m) {
                Some(subject) => subjects.contains(&subject) && !new.contains(&subject),
                None => true,
            }
        });
        let mut entry = serde_json::json!({
            "mediaType": top.media_type,
            "digest": top.digest,
            "size": top.size,
            "annotations": {
                REF_NAME: reference.tag_or_latest(),
                CONTAINERD_NAME: full,
            },
        });
        if let Some(p) = platform {
            entry["platform"] = p.to_json();
        }
        manifests.push(entry);
        manifests.extend(
            images
                .iter()
                .flat_map(|i| &i.referrers)
                .map(|r| r.index_entry()),
        );
        write_atomic(&index_path, &canonical_json(&index))
        // The lock is released when `lock` is dropped.
    }
}

/// The image manifests an `index.json` entry stands for: itself, or the
/// manifests of the index it names.
fn entry_manifests(root: &Path, m: &serde_json::Value) -> Vec<String> {
    let Some(d) = m["digest"].as_str() else {
        return Vec::new();
    };
    if !m["mediaType"].as_str().is_some_and(is_index_type) {
        return vec![d.to_string()];
    }
    nested_manifests(root, d)
        .into_iter()
        .map(|b| b.digest.to_string())
        .collect()
}

fn is_index_type(media_type: &str) -> bool {
    media_type == INDEX_MEDIA_TYPE
}

/// The manifests an index blob of the layout lists (none if unreadable).
fn nested_manifests(root: &Path, digest: &str) -> Vec<Blob> {
    let Ok(d) = Digest::parse(digest) else {
        return Vec::new();
    };
    fs::read(root.join("blobs/sha256").join(d.hex()))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| serde_json::from_value(v["manifests"].clone()).ok())
        .unwrap_or_default()
}

/// Whether an `index.json` entry is an artifact about an image (an OCI
/// 1.1 referrer: it has an `artifactType`), not an image.
pub fn is_referrer_entry(m: &serde_json::Value) -> bool {
    m.get("artifactType").is_some()
}

/// The subject digest of a referrer entry, from its manifest.
fn entry_subject(root: &Path, m: &serde_json::Value) -> Option<String> {
    let d = Digest::parse(m["digest"].as_str()?).ok()?;
    let bytes = fs::read(root.join("blobs/sha256").join(d.hex())).ok()?;
    crate::oci::referrer::subject_of(&bytes).map(|(s, _)| s.to_string())
}

fn read_index(path: &Path) -> Result<serde_json::Value, SinkError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            SinkError::Invalid(format!(
                "{} is not valid JSON ({e}); fix or remove it",
                path.display()
            ))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [],
        })),
        Err(e) => Err(SinkError::Io {
            path: path.into(),
            source: e,
        }),
    }
}

/// Write `bytes` to a temporary file beside `path`, then rename it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SinkError> {
    crate::util::fs::write_atomic(path, bytes).map_err(|e| SinkError::Io {
        path: e.path,
        source: e.source,
    })
}

struct DirBlob {
    tmp: PathBuf,
    file: Option<HashingWriter<BufWriter<File>>>,
    dest: PathBuf,
    added: Arc<Mutex<Vec<PathBuf>>>,
}

impl Write for DirBlob {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.as_mut().expect("not committed").write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("not committed").flush()
    }
}

impl BlobWriter for DirBlob {
    fn commit(mut self: Box<Self>, digest: &Digest) -> Result<(), SinkError> {
        let (actual, _, buf) = self.file.take().expect("committed once").finish();
        buf.into_inner().map_err(|e| SinkError::Io {
            path: self.tmp.clone(),
            source: e.into_error(),
        })?;
        if actual != *digest {
            return Err(SinkError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let dest = self.dest.join(digest.hex());
        if dest.exists() {
            return Ok(()); // Drop removes the temp file.
        }
        fs::rename(&self.tmp, &dest).map_err(SinkError::io(&dest))?;
        self.added.lock().unwrap().push(dest);
        Ok(())
    }
}

impl Drop for DirBlob {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

impl BlobSink for OciDir {
    fn describe(&self) -> String {
        format!("oci:{}", self.root.display())
    }
    fn layer_form(&self) -> LayerForm {
        self.form
    }
    fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }
    fn begin_blob(&self) -> Result<Box<dyn BlobWriter>, SinkError> {
        let tmp = self.root.join(format!(
            "blobs/sha256/.tmp-{}",
            crate::util::fs::unique_suffix()
        ));
        let file = File::create(&tmp).map_err(SinkError::io(&tmp))?;
        Ok(Box::new(DirBlob {
            tmp,
            file: Some(HashingWriter::new(BufWriter::with_capacity(1 << 20, file))),
            dest: self.root.join("blobs/sha256"),
            added: Arc::clone(&self.added),
        }))
    }
    fn finish(&self, image: &ImageRecord) -> Result<(), SinkError> {
        self.update_index(image)
    }
    fn finish_index(&self, index: &IndexRecord) -> Result<(), SinkError> {
        self.put_blob(&index.index.digest, &index.index_bytes)?;
        self.record_entry(&index.reference, &index.index, None, &index.images)
    }
    /// Remove what this build added and no recorded image uses, under the
    /// index lock (a concurrent build may use the rest); the directory
    /// itself only if this build created it and no image was recorded in
    /// it since.
    fn abort(&self) {
        let added: Vec<PathBuf> = self.added.lock().unwrap().drain(..).collect();
        let Ok(lock) = File::open(&self.root) else {
            return;
        };
        if lock.lock().is_err() {
            return;
        }
        let used = referenced_blobs(&self.root);
        for p in added {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            if !name.is_some_and(|n| used.contains(&n)) {
                let _ = fs::remove_file(p);
            }
        }
        if self.created && used.is_empty() {
            let blobs_left = fs::read_dir(self.root.join("blobs/sha256"))
                .map(|d| {
                    d.flatten()
                        .any(|e| !e.file_name().to_string_lossy().starts_with(".tmp-"))
                })
                .unwrap_or(false);
            if !blobs_left {
                let _ = fs::remove_dir_all(&self.root);
            }
        }
    }
}

/// The hex digests of every blob the layout's recorded images use (their
/// manifests, configs and layers), as far as they can be read.
fn referenced_blobs(root: &Path) -> std::collections::BTreeSet<String> {
    let mut used = std::collections::BTreeSet::new();
    let Ok(index) = read_index(&root.join("index.json")) else {
        return used;
    };
    let top: Vec<Blob> = serde_json::from_value(index["manifests"].clone()).unwrap_or_default();
    let mut descs = Vec::new();
    for m in top {
        if is_index_type(&m.media_type) {
            used.insert(m.digest.hex().to_string());
            descs.extend(nested_manifests(root, &m.digest.to_string()));
        } else {
            descs.push(m);
        }
    }
    for m in descs {
        used.insert(m.digest.hex().to_string());
        let Ok(bytes) = fs::read(root.join("blobs/sha256").join(m.digest.hex())) else {
            continue;
        };
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let config: Option<Blob> = serde_json::from_value(doc["config"].clone()).ok();
        let layers: Vec<Blob> = serde_json::from_value(doc["layers"].clone()).unwrap_or_default();
        for b in config.into_iter().chain(layers) {
            used.insert(b.digest.hex().to_string());
        }
    }
    used
}

/// What `fsck` found wrong in a layout.
#[derive(Debug, thiserror::Error)]
#[error("OCI layout {root} is inconsistent:\n{}", problems.join("\n"))]
pub struct FsckError {
    pub root: PathBuf,
    pub problems: Vec<String>,
}

/// Verify a layout: `oci-layout`, `index.json`, and every blob reachable from
/// it present with the digest and size its descriptor gives.
pub fn fsck(root: &Path) -> Result<FsckStats, FsckError> {
    let mut problems = Vec::new();
    let mut stats = FsckStats::default();
    let layout: Option<serde_json::Value> = fs::read(root.join("oci-layout"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if layout.as_ref().map(|l| &l["imageLayoutVersion"]) != Some(&serde_json::json!("1.0.0")) {
        problems.push("oci-layout is missing or not version 1.0.0".to_string());
    }
    let index: serde_json::Value =
        match fs::read(root.join("index.json")).map(|b| serde_json::from_slice(&b)) {
            Ok(Ok(v)) => v,
            _ => {
                problems.push("index.json is missing or not JSON".into());
                return Err(FsckError {
                    root: root.into(),
                    problems,
                });
            }
        };
    let mut check = |blob: &Blob, problems: &mut Vec<String>| -> Option<Vec<u8>> {
        let path = root.join("blobs/sha256").join(blob.digest.hex());
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(_) => {
                problems.push(format!("blob {} is missing", blob.digest));
                return None;
            }
        };
        let mut h = HashingWriter::new(Vec::new());
        let mut buf = vec![0u8; 1 << 20];
        let keep = blob.media_type.ends_with("+json");
        loop {
            let n = f.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            if keep {
                h.write_all(&buf[..n]).unwrap();
            } else {
                h.get_mut().clear();
                h.write_all(&buf[..n]).unwrap();
            }
        }
        let (d, size, content) = h.finish();
        stats.blobs += 1;
        stats.bytes += size;
        if d != blob.digest || size != blob.size {
            problems.push(format!(
                "blob {} has digest {d} and size {size} (descriptor says {})",
                blob.digest, blob.size
            ));
            return None;
        }
        keep.then_some(content)
    };
    let top: Vec<Blob> = serde_json::from_value(index["manifests"].clone()).unwrap_or_default();
    // An index (several platforms) stands for the manifests it lists.
    let mut descs = Vec::new();
    for m in top {
        if !is_index_type(&m.media_type) {
            descs.push(m);
            continue;
        }
        let Some(bytes) = check(&m, &mut problems) else {
            continue;
        };
        match serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| serde_json::from_value::<Vec<Blob>>(v["manifests"].clone()).ok())
        {
            Some(nested) => descs.extend(nested),
            None => problems.push(format!("index {} lists no manifests", m.digest)),
        }
    }
    let images: BTreeSet<Digest> = descs.iter().map(|m| m.digest.clone()).collect();
    for m in descs {
        let Some(bytes) = check(&m, &mut problems) else {
            continue;
        };
        let Ok(manifest) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            problems.push(format!("manifest {} is not JSON", m.digest));
            continue;
        };
        let config: Option<Blob> = serde_json::from_value(manifest["config"].clone()).ok();
        let layers: Vec<Blob> =
            serde_json::from_value(manifest["layers"].clone()).unwrap_or_default();
        let Some(config) = config else {
            problems.push(format!("manifest {} has no config", m.digest));
            continue;
        };
        let config_bytes = check(&config, &mut problems);
        for l in &layers {
            check(l, &mut problems);
        }
        if let Some((subject, _)) = crate::oci::referrer::subject_of(&bytes) {
            stats.referrers += 1;
            if !images.contains(&subject) {
                problems.push(format!(
                    "referrer {} is about {subject}, which index.json does not list",
                    m.digest
                ));
            }
            continue;
        }
        stats.manifests += 1;
        if let Some(cb) = config_bytes {
            let cfg: serde_json::Value = serde_json::from_slice(&cb).unwrap_or_default();
            let n = cfg["rootfs"]["diff_ids"].as_array().map_or(0, Vec::len);
            if n != layers.len() {
                problems.push(format!(
                    "manifest {} lists {} layers, its config {n} diff_ids",
                    m.digest,
                    layers.len()
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(stats)
    } else {
        Err(FsckError {
            root: root.into(),
            problems,
        })
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct FsckStats {
    /// Image manifests.
    pub manifests: usize,
    /// Artifacts about them (SBOM, provenance).
    pub referrers: usize,
    pub blobs: usize,
    pub bytes: u64,
}

/// The image entries of a layout's index: full name → manifest descriptor.
pub fn list_images(root: &Path) -> Result<BTreeMap<String, Blob>, SinkError> {
    let index = read_index(&root.join("index.json"))?;
    let mut out = BTreeMap::new();
    for m in index["manifests"].as_array().into_iter().flatten() {
        if is_referrer_entry(m) {
            continue;
        }
        let name = m["annotations"][CONTAINERD_NAME]
            .as_str()
            .or(m["annotations"][REF_NAME].as_str())
            .unwrap_or_default()
            .to_string();
        if let Ok(b) = serde_json::from_value::<Blob>(m.clone()) {
            out.insert(name, b);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::{ImageRef, LayerRecord, Platform};

    fn put(dir: &OciDir, bytes: &[u8]) -> Digest {
        let d = Digest::of(bytes);
        dir.put_blob(&d, bytes).unwrap();
        d
    }

    fn blob(media_type: &str, d: &Digest, size: usize) -> Blob {
        Blob {
            media_type: media_type.into(),
            digest: d.clone(),
            size: size as u64,
        }
    }

    /// A failed build removes only the blobs it added that no recorded
    /// image uses; a blob another image recorded meanwhile stays.
    #[test]
    fn abort_keeps_what_recorded_images_use() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("layout");
        let first = OciDir::open(&root, LayerForm::Compressed).unwrap();
        let shared = put(&first, b"shared layer");
        let own = put(&first, b"only the failed build's");
        // Meanwhile a concurrent build records an image using `shared`.
        let other = OciDir::open(&root, LayerForm::Compressed).unwrap();
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{shared}"]}}}}"#
        )
        .into_bytes();
        let config = &config[..];
        let cfg = put(&other, config);
        let layer = blob("application/vnd.oci.image.layer.v1.tar", &shared, 12);
        let cfg_blob = blob(crate::oci::blob::CONFIG_MEDIA_TYPE, &cfg, config.len());
        let manifest = crate::image::manifest::manifest_json(
            &cfg_blob,
            std::slice::from_ref(&layer),
            &BTreeMap::new(),
        );
        let man = put(&other, &manifest);
        other
            .finish(&ImageRecord {
                reference: ImageRef::parse("other:1").unwrap(),
                platform: Platform::host(),
                config: cfg_blob,
                config_bytes: config.to_vec(),
                manifest: blob(crate::oci::blob::MANIFEST_MEDIA_TYPE, &man, manifest.len()),
                manifest_bytes: manifest.clone(),
                layers: vec![LayerRecord {
                    diff_id: shared.clone(),
                    uncompressed_size: 12,
                    blob: layer,
                }],
                referrers: Vec::new(),
            })
            .unwrap();
        first.abort();
        assert!(
            first.blob_path(&shared).is_file(),
            "a blob the other image uses was removed"
        );
        assert!(
            !first.blob_path(&own).exists(),
            "the failed build's own blob stayed"
        );
        assert!(root.join("index.json").is_file(), "the layout itself stays");
        fsck(&root).unwrap();
    }

    /// An image whose blob vanished is not recorded.
    #[test]
    fn an_image_missing_a_blob_is_not_recorded() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = OciDir::open(&tmp.path().join("l"), LayerForm::Compressed).unwrap();
        let gone = Digest::of(b"gone");
        let b = blob(crate::oci::blob::CONFIG_MEDIA_TYPE, &gone, 4);
        let e = dir
            .finish(&ImageRecord {
                reference: ImageRef::parse("x:1").unwrap(),
                platform: Platform::host(),
                config: b.clone(),
                config_bytes: Vec::new(),
                manifest: b,
                manifest_bytes: Vec::new(),
                layers: Vec::new(),
                referrers: Vec::new(),
            })
            .unwrap_err();
        assert!(e.to_string().contains("vanished"), "{e}");
    }
}
