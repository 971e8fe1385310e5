//! What a finished image is made of: its layers' digests and sizes, its
//! config and manifest documents.

use super::blob::Blob;
use super::digest::Digest;
use super::platform::Platform;
use super::reference::ImageRef;

/// One layer of a finished image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerRecord {
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    /// The blob the manifest lists (equal to the diff_id when uncompressed).
    pub blob: Blob,
}

/// Several images of one name, one per platform, and the OCI image index
/// over them: what a multi-platform build records under its tag.
#[derive(Debug, Clone)]
pub struct IndexRecord {
    pub reference: ImageRef,
    pub index: Blob,
    pub index_bytes: Vec<u8>,
    /// In the index's order.
    pub images: Vec<ImageRecord>,
}

/// Everything a sink needs to record an image once its blobs are in.
#[derive(Debug, Clone)]
pub struct ImageRecord {
    pub reference: ImageRef,
    pub platform: Platform,
    pub config: Blob,
    pub config_bytes: Vec<u8>,
    pub manifest: Blob,
    pub manifest_bytes: Vec<u8>,
    pub layers: Vec<LayerRecord>,
    /// Artifacts about the image (SBOM, provenance), stored beside it.
    pub referrers: Vec<super::referrer::Referrer>,
}
