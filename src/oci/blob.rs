//! Blob descriptors, media types and canonical JSON (keys sorted), so that
//! the same document always has the same bytes and digest.

use super::digest::Digest;
use oci_spec::image::{DescriptorBuilder, MediaType};
use std::collections::BTreeMap;

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// Sort object keys at every level.
fn sorted(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut pairs: Vec<_> = m.into_iter().collect();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(pairs.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.into_iter().map(sorted).collect())
        }
        other => other,
    }
}

/// Canonical JSON bytes of any serialisable value: keys sorted, no spaces.
pub fn canonical_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let value = serde_json::to_value(v).expect("image documents serialise");
    serde_json::to_vec(&sorted(value)).expect("JSON values serialise")
}

/// A blob's descriptor: what a manifest or index points at.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Blob {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

fn oci_digest(d: &Digest) -> oci_spec::image::Digest {
    d.to_string()
        .parse()
        .expect("sha256 digests are valid OCI digests")
}

pub fn descriptor(
    b: &Blob,
    annotations: Option<&BTreeMap<String, String>>,
) -> oci_spec::image::Descriptor {
    let mut d = DescriptorBuilder::default()
        .media_type(MediaType::from(b.media_type.as_str()))
        .digest(oci_digest(&b.digest))
        .size(b.size);
    if let Some(a) = annotations.filter(|a| !a.is_empty()) {
        d = d.annotations(
            a.clone()
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    d.build().expect("all descriptor fields set")
}
