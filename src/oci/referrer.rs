//! Artifacts about an image (SBOM, provenance) as OCI 1.1 referrers: an
//! image manifest with an `artifactType`, the empty config, one layer
//! holding the document, and a `subject` naming the image manifest.

use super::blob::{canonical_json, Blob, MANIFEST_MEDIA_TYPE};
use super::digest::Digest;
use serde_json::json;

pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY_BYTES: &[u8] = b"{}";
pub const CYCLONEDX: &str = "application/vnd.cyclonedx+json";
pub const SPDX: &str = "application/spdx+json";
pub const IN_TOTO: &str = "application/vnd.in-toto+json";

/// A referrer manifest with the blobs it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub artifact_type: String,
    pub manifest: Blob,
    pub manifest_bytes: Vec<u8>,
    /// The config and layer blobs with their bytes (small documents).
    pub blobs: Vec<(Blob, Vec<u8>)>,
}

impl Referrer {
    /// The referrer of `subject` holding `document` (of `artifact_type`),
    /// created at `created` (RFC 3339: the image's own time, so the same
    /// image gives the same referrer).
    pub fn new(subject: &Blob, artifact_type: &str, document: Vec<u8>, created: &str) -> Self {
        let config = Blob {
            media_type: EMPTY_MEDIA_TYPE.into(),
            digest: Digest::of(EMPTY_BYTES),
            size: EMPTY_BYTES.len() as u64,
        };
        let layer = Blob {
            media_type: artifact_type.into(),
            digest: Digest::of(&document),
            size: document.len() as u64,
        };
        let manifest_bytes = canonical_json(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "artifactType": artifact_type,
            "config": config,
            "layers": [layer],
            "subject": subject,
            "annotations": { "org.opencontainers.image.created": created },
        }));
        Referrer {
            artifact_type: artifact_type.into(),
            manifest: Blob {
                media_type: MANIFEST_MEDIA_TYPE.into(),
                digest: Digest::of(&manifest_bytes),
                size: manifest_bytes.len() as u64,
            },
            manifest_bytes,
            blobs: vec![(config, EMPTY_BYTES.to_vec()), (layer, document)],
        }
    }

    /// Its entry in an `index.json` or a referrers index: the manifest
    /// descriptor with its `artifactType`.
    pub fn index_entry(&self) -> serde_json::Value {
        json!({
            "mediaType": self.manifest.media_type,
            "digest": self.manifest.digest,
            "size": self.manifest.size,
            "artifactType": self.artifact_type,
        })
    }

    /// The document a referrer made by [`Referrer::new`] holds (its one layer).
    pub fn document(&self) -> Option<&[u8]> {
        self.blobs
            .iter()
            .find(|(b, _)| b.media_type != EMPTY_MEDIA_TYPE)
            .map(|(_, bytes)| bytes.as_slice())
    }
}

/// What a manifest says about itself as a referrer: its `subject` digest
/// and `artifactType` (else its config's media type, as the distribution
/// spec 1.1 says), or `None` for a manifest with no subject.
pub fn subject_of(manifest: &[u8]) -> Option<(Digest, String)> {
    let v: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    let subject = Digest::parse(v.get("subject")?.get("digest")?.as_str()?).ok()?;
    let kind = v
        .get("artifactType")
        .and_then(|a| a.as_str())
        .or_else(|| v.get("config")?.get("mediaType")?.as_str())
        .unwrap_or_default()
        .to_string();
    Some((subject, kind))
}

/// The tag a registry without the referrers API keeps an image's
/// referrers under (distribution spec 1.1's referrers tag schema).
pub fn fallback_tag(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_referrer_names_its_subject_and_type() {
        let subject = Blob {
            media_type: MANIFEST_MEDIA_TYPE.into(),
            digest: Digest::of(b"image"),
            size: 5,
        };
        let r = Referrer::new(
            &subject,
            SPDX,
            b"{\"spdx\":1}".to_vec(),
            "1970-01-01T00:00:01Z",
        );
        assert_eq!(r.manifest.digest, Digest::of(&r.manifest_bytes));
        assert_eq!(r.document(), Some(&b"{\"spdx\":1}"[..]));
        assert_eq!(
            r.blobs[0].0.digest.to_string(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(
            subject_of(&r.manifest_bytes),
            Some((subject.digest.clone(), SPDX.into()))
        );
        assert_eq!(subject_of(b"{\"config\":{}}"), None);
        assert_eq!(
            fallback_tag(&subject.digest),
            format!("sha256-{}", subject.digest.hex())
        );
        // Deterministic: the same inputs give the same bytes.
        let again = Referrer::new(
            &subject,
            SPDX,
            b"{\"spdx\":1}".to_vec(),
            "1970-01-01T00:00:01Z",
        );
        assert_eq!(again, r);
    }
}
