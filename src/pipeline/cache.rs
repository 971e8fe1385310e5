//! The layer cache: for a layer's content key (its store paths' narHashes
//! plus every option that changes its bytes), the digests and sizes it had.
//! A sink that already holds those blobs needs nothing more, so an unchanged
//! layer is never re-read.

use crate::oci::LayerRecord;
use std::fs;
use std::path::PathBuf;

/// Bumped whenever the layer byte format changes.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone)]
pub struct LayerCache {
    dir: Option<PathBuf>,
}

pub use crate::util::dirs::cache_dir as default_cache_dir;

impl LayerCache {
    pub fn new(dir: Option<PathBuf>) -> Self {
        LayerCache {
            dir: dir.map(|d| d.join(format!("layers-v{FORMAT}"))),
        }
    }

    pub fn disabled() -> Self {
        LayerCache { dir: None }
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{key}.json")))
    }

    pub fn get(&self, key: &str) -> Option<LayerRecord> {
        let bytes = fs::read(self.path(key)?).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Best effort: a cache that cannot be written only costs speed.
    pub fn put(&self, key: &str, record: &LayerRecord) {
        let (Some(dir), Some(path)) = (&self.dir, self.path(key)) else {
            return;
        };
        if fs::create_dir_all(dir).is_err() {
            return;
        }
        let bytes = serde_json::to_vec(record).expect("records serialise");
        if let Err(e) = crate::util::fs::write_atomic(&path, &bytes) {
            tracing::debug!("layer cache not written: {e}");
        }
    }

    /// Remove every entry; returns how many were removed.
    pub fn prune(&self) -> std::io::Result<usize> {
        self.dir.as_deref().map_or(Ok(0), prune_dir)
    }
}

/// Remove a cache directory; returns how many entries it held (0 if it
/// did not exist).
pub use crate::util::fs::prune_dir;
