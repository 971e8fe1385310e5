//! The image manifest, serialised canonically (keys sorted) so that the same
//! image always has the same bytes and digest.

use crate::oci::blob::{canonical_json, descriptor, Blob};
use oci_spec::image::{ImageManifestBuilder, MediaType};
use std::collections::BTreeMap;

/// The manifest's bytes (canonical JSON).
pub fn manifest_json(
    config: &Blob,
    layers: &[Blob],
    annotations: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut m = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(config, None))
        .layers(
            layers
                .iter()
                .map(|l| descriptor(l, None))
                .collect::<Vec<_>>(),
        );
    if !annotations.is_empty() {
        m = m.annotations(
            annotations
                .clone()
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    canonical_json(&m.build().expect("all manifest fields set"))
}

/// An OCI image index over `manifests`, each with its platform (canonical
/// JSON, so the same images give the same index digest).
pub fn index_json(manifests: &[(&Blob, &crate::oci::Platform)]) -> Vec<u8> {
    let entries: Vec<serde_json::Value> = manifests
        .iter()
        .map(|(b, p)| {
            serde_json::json!({
                "mediaType": b.media_type,
                "digest": b.digest,
                "size": b.size,
                "platform": p.to_json(),
            })
        })
        .collect();
    canonical_json(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::oci::blob::INDEX_MEDIA_TYPE,
        "manifests": entries,
    }))
}
