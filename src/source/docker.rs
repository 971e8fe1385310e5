//! Reading a docker-archive (`docker save`'s format, plain or gzip) or the
//! output of a `stream-` script (as `streamLayeredImage` makes), in one
//! pass: a stream can be read only once.

use super::documents::{config_diff_ids, parse_config, platform_of};
use super::layout::keep_small;
use super::{finish, for_each_entry_in, gunzip_if_needed, io_err, sink_err, LoadError, Plan};
use crate::oci::blob::{Blob, CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use crate::oci::digest::{Digest, HashingWriter};
use crate::oci::{ImageRecord, ImageRef, LayerRecord};
use crate::sink::{BlobSink, BlobWriter};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::ops::ControlFlow;
use std::path::Path;

/// One image of a docker-archive's `manifest.json`.
#[derive(Debug, serde::Deserialize)]
struct DockerImage {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
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
pub fn load_docker(
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
    let images: Vec<DockerImage> =
        serde_json::from_slice(manifest).map_err(|e| LoadError::Invalid {
            path: label.into(),
            why: format!("manifest.json is not a docker-archive manifest: {e}"),
        })?;
    if images.len() != 1 {
        return Err(LoadError::SeveralImages(label.into(), images.len()));
    }
    let m = &images[0];
    let config_name = m.config.clone();
    let config_bytes = docs
        .get(&config_name)
        .cloned()
        .ok_or_else(|| LoadError::Missing {
            path: label.into(),
            what: "config",
            name: config_name.clone(),
        })?;
    let cfg = parse_config(label, &config_bytes)?;
    let layer_names = &m.layers;
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
    let repo_tags: Vec<String> = m.repo_tags.clone().unwrap_or_default();
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
            referrers: Vec::new(),
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
        (_, Some(g)) => (true, g.finish().map_err(io_err(label))?.finish().0),
        (Some(p), None) => (false, p.finish().0),
        (None, None) => (false, Digest::of(b"")),
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
pub fn load_stream(
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
    let (Some(mut stderr), Some(stdout)) = (child.stderr.take(), child.stdout.take()) else {
        let _ = child.kill();
        return Err(LoadError::Invalid {
            path: script.into(),
            why: "the stream script's output could not be read".into(),
        });
    };
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
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
