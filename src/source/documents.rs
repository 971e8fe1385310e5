//! The one reading layer. Every document an image source gives (index,
//! manifest, config) is parsed here with oci-spec's types, and every
//! document or blob read from any source is checked here against the
//! digest that named it, before anything is committed to a sink.

use super::{finish_record, LoadError};
use crate::oci::blob::Blob;
use crate::oci::digest::{Digest, HashingWriter};
use crate::oci::platform::{host_arch, platform_entry};
use crate::oci::{ImageRecord, ImageRef, LayerRecord, Platform};
use crate::sink::BlobSink;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use std::io::{self, Read};
use std::path::Path;

/// Check that `bytes` hash to `expected` (the digest that named them).
pub fn verified(
    origin: &Path,
    what: &str,
    expected: &Digest,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, LoadError> {
    let actual = Digest::of(&bytes);
    if actual != *expected {
        return Err(LoadError::Corrupt {
            path: origin.into(),
            what: what.into(),
            expected: expected.clone(),
            actual,
        });
    }
    Ok(bytes)
}

/// A reader that hashes what passes through and, at its end, fails with
/// `InvalidData` unless the bytes hashed to the digest expected.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: HashingWriter<io::Sink>,
    expected: Digest,
    done: bool,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, expected: &Digest) -> Self {
        VerifyingReader {
            inner,
            hasher: HashingWriter::new(io::sink()),
            expected: expected.clone(),
            done: false,
        }
    }
}

/// The message of a [`VerifyingReader`]'s failure; [`copy_blob`] turns it
/// back into [`LoadError::Corrupt`].
#[derive(Debug, thiserror::Error)]
#[error("blob {expected} arrived with digest {actual}")]
pub struct Mismatch {
    pub expected: Digest,
    pub actual: Digest,
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.done = true;
            let h = std::mem::replace(&mut self.hasher, HashingWriter::new(io::sink()));
            let (actual, _, _) = h.finish();
            if actual != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    Mismatch {
                        expected: self.expected.clone(),
                        actual,
                    },
                ));
            }
            return Ok(0);
        }
        io::Write::write_all(&mut self.hasher, &buf[..n])?;
        Ok(n)
    }
}

fn invalid(origin: &Path, why: String) -> LoadError {
    LoadError::Invalid {
        path: origin.into(),
        why,
    }
}

/// An image index (or Docker manifest list).
pub fn parse_index(origin: &Path, what: &str, bytes: &[u8]) -> Result<ImageIndex, LoadError> {
    serde_json::from_slice(bytes)
        .map_err(|e| invalid(origin, format!("{what} is not a valid image index: {e}")))
}

pub fn parse_manifest(origin: &Path, bytes: &[u8]) -> Result<ImageManifest, LoadError> {
    serde_json::from_slice(bytes).map_err(|e| {
        invalid(
            origin,
            format!("the manifest is not a valid image manifest: {e}"),
        )
    })
}

pub fn parse_config(origin: &Path, bytes: &[u8]) -> Result<ImageConfiguration, LoadError> {
    serde_json::from_slice(bytes).map_err(|e| {
        invalid(
            origin,
            format!("the config is not a valid image config: {e}"),
        )
    })
}

/// Whether a media type names an index or a Docker manifest list.
pub fn is_index(media_type: &str) -> bool {
    media_type.ends_with("image.index.v1+json") || media_type.contains("manifest.list")
}

/// A descriptor as nixoci keeps it (sha256 digests only).
pub fn blob_of(origin: &Path, d: &Descriptor) -> Result<Blob, LoadError> {
    let digest = Digest::parse(d.digest().as_ref())
        .map_err(|e| invalid(origin, format!("descriptor digest: {e}")))?;
    Ok(Blob {
        media_type: d.media_type().to_string(),
        digest,
        size: d.size(),
    })
}

/// The entry of an index for `want`, else for this machine's platform.
pub fn pick_platform(
    origin: &Path,
    index: &ImageIndex,
    want: Option<&Platform>,
) -> Result<Blob, LoadError> {
    let entry = platform_entry(index, want).ok_or_else(|| {
        let has: Vec<String> = index
            .manifests()
            .iter()
            .filter_map(|m| m.platform().as_ref())
            .map(|p| {
                let mut s = format!("{}/{}", p.os(), p.architecture());
                if let Some(v) = p.variant() {
                    s.push('/');
                    s.push_str(v);
                }
                s
            })
            .collect();
        let asked = want.map_or_else(|| format!("linux/{}", host_arch()), |p| p.to_string());
        invalid(
            origin,
            format!(
                "the index has no {asked} image (it has: {}); choose one with --platform",
                has.join(", ")
            ),
        )
    })?;
    blob_of(origin, entry)
}

pub fn platform_of(config: &ImageConfiguration) -> Platform {
    Platform {
        architecture: config.architecture().to_string(),
        os: config.os().to_string(),
        variant: config.variant().clone(),
    }
}

/// A config's `rootfs.diff_ids`, which must number `layers` (what the
/// manifest lists).
pub fn config_diff_ids(
    origin: &Path,
    cfg: &ImageConfiguration,
    layers: usize,
    listed_by: &str,
) -> Result<Vec<Digest>, LoadError> {
    let diff_ids: Vec<Digest> = cfg
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| Digest::parse(d))
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(origin, format!("config diff_ids: {e}")))?;
    if diff_ids.len() != layers {
        return Err(invalid(
            origin,
            format!(
                "{listed_by} lists {layers} layers and the config {} diff_ids",
                diff_ids.len()
            ),
        ));
    }
    Ok(diff_ids)
}

/// The config and layer blobs a manifest lists.
pub fn manifest_blobs(origin: &Path, manifest: &[u8]) -> Result<(Blob, Vec<Blob>), LoadError> {
    let m = parse_manifest(origin, manifest)?;
    let config = blob_of(origin, m.config())?;
    let layers = m
        .layers()
        .iter()
        .map(|l| blob_of(origin, l))
        .collect::<Result<_, _>>()?;
    Ok((config, layers))
}

/// A loaded image's layers: each blob with its diff_id (sizes unknown).
pub fn layer_records(blobs: Vec<Blob>, diff_ids: Vec<Digest>) -> Vec<LayerRecord> {
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

/// A referrer (SBOM, provenance, signature: a manifest with a `subject`)
/// read from a source: its manifest, checked against `expected`, and each
/// blob it lists through `get`, checked against its digest. A referrer
/// that is not about `subject` (a listing is outside input too), or with a
/// blob larger than a document may be, is skipped (`None`).
pub fn read_referrer<E: From<LoadError>>(
    origin: &Path,
    subject: &Digest,
    expected: &Blob,
    manifest_bytes: Vec<u8>,
    mut get: impl FnMut(&Digest) -> Result<Vec<u8>, E>,
) -> Result<Option<crate::oci::Referrer>, E> {
    let manifest_bytes = verified(
        origin,
        "referrer manifest",
        &expected.digest,
        manifest_bytes,
    )?;
    let Some((about, artifact_type)) = crate::oci::referrer::subject_of(&manifest_bytes) else {
        return Ok(None);
    };
    if about != *subject {
        tracing::warn!(referrer = %expected.digest, %about, %subject, "a listed referrer is about another manifest; skipped");
        return Ok(None);
    }
    let (config, layers) = manifest_blobs(origin, &manifest_bytes)?;
    let mut blobs = Vec::new();
    for b in std::iter::once(config).chain(layers) {
        if b.size > super::MAX_DOC {
            tracing::warn!(referrer = %expected.digest, blob = %b.digest, "a referrer's blob is too large to carry; skipped");
            return Ok(None);
        }
        let bytes = verified(origin, "referrer blob", &b.digest, get(&b.digest)?)?;
        blobs.push((b, bytes));
    }
    Ok(Some(crate::oci::Referrer {
        artifact_type,
        manifest: expected.clone(),
        manifest_bytes,
        blobs,
    }))
}

/// An image held as documents elsewhere (a registry, a content store),
/// from its manifest (of `media_type`; checked against `expected` when it
/// was fetched by digest): fetch the config through `get_config`, copy
/// each layer the sinks lack through `open`, each checked against its
/// digest, then record the image with its own manifest and config bytes.
#[allow(clippy::too_many_arguments)]
pub fn store_documents<E: From<LoadError> + Send>(
    origin: &Path,
    reference: ImageRef,
    media_type: String,
    manifest_bytes: Vec<u8>,
    expected: Option<&Digest>,
    referrers: Vec<crate::oci::Referrer>,
    sinks: &[&dyn BlobSink],
    get_config: impl FnOnce(&Digest) -> Result<Vec<u8>, E>,
    open: impl Fn(&Digest) -> Result<Box<dyn Read>, E> + Sync,
) -> Result<ImageRecord, E> {
    let manifest_bytes = match expected {
        Some(d) => verified(origin, "manifest", d, manifest_bytes)?,
        None => manifest_bytes,
    };
    let (config, layers) = manifest_blobs(origin, &manifest_bytes)?;
    let manifest = Blob {
        media_type,
        digest: Digest::of(&manifest_bytes),
        size: manifest_bytes.len() as u64,
    };
    let config_bytes = verified(
        origin,
        "config",
        &config.digest,
        get_config(&config.digest)?,
    )?;
    let cfg = parse_config(origin, &config_bytes)?;
    let diff_ids = config_diff_ids(origin, &cfg, layers.len(), "the manifest")?;
    let records = layer_records(layers, diff_ids);
    super::copy_layers(origin, &records, sinks, &open)?;
    let record = ImageRecord {
        reference,
        platform: platform_of(&cfg),
        manifest,
        manifest_bytes,
        config,
        config_bytes,
        layers: records,
        referrers,
    };
    Ok(finish_record(record, sinks)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_with_other_bytes_fails_at_its_end() {
        let good = Digest::of(b"hello");
        let mut out = Vec::new();
        VerifyingReader::new(&b"hello"[..], &good)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"hello");
        let err = VerifyingReader::new(&b"hellO"[..], &good)
            .read_to_end(&mut out)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains(&good.to_string()), "{err}");
    }

    #[test]
    fn a_listed_referrer_about_another_image_is_skipped() {
        let image = Blob {
            media_type: crate::oci::blob::MANIFEST_MEDIA_TYPE.into(),
            digest: Digest::of(b"image"),
            size: 5,
        };
        let r = crate::oci::Referrer::new(
            &image,
            "application/spdx+json",
            b"{}".to_vec(),
            "1970-01-01T00:00:01Z",
        );
        let get = |d: &Digest| -> Result<Vec<u8>, LoadError> {
            Ok(r.blobs
                .iter()
                .find(|(b, _)| b.digest == *d)
                .unwrap()
                .1
                .clone())
        };
        let o = Path::new("x");
        let read = |subject: &Digest| {
            read_referrer(o, subject, &r.manifest, r.manifest_bytes.clone(), get).unwrap()
        };
        assert_eq!(read(&image.digest), Some(r.clone()));
        assert_eq!(read(&Digest::of(b"another image")), None);
        // A manifest that is not what its digest names is refused.
        let e = read_referrer(o, &image.digest, &r.manifest, b"{}".to_vec(), get).unwrap_err();
        assert!(matches!(e, LoadError::Corrupt { .. }), "{e}");
    }

    #[test]
    fn documents_are_checked_against_their_digest() {
        let d = Digest::of(b"{}");
        assert!(verified(Path::new("x"), "manifest", &d, b"{}".to_vec()).is_ok());
        let e = verified(Path::new("x"), "manifest", &d, b"{ }".to_vec()).unwrap_err();
        assert!(matches!(e, LoadError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains(&d.to_string()));
    }
}
