//! A sink that keeps nothing: it takes every blob (so a source is read and
//! checked whole) and counts what passed. `nixoci verify` copies into it.

use super::{BlobSink, BlobWriter, LayerForm, SinkError};
use crate::oci::{Digest, ImageRecord};
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Default)]
pub struct Discard {
    blobs: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

struct Counter {
    blobs: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    n: u64,
}

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.n += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlobWriter for Counter {
    fn commit(self: Box<Self>, _digest: &Digest) -> Result<(), SinkError> {
        // The source checked the bytes against the digest before this.
        self.blobs.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(self.n, Ordering::Relaxed);
        Ok(())
    }
}

impl Discard {
    /// Blobs and bytes that were read whole and matched their digests.
    pub fn counted(&self) -> (u64, u64) {
        (
            self.blobs.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

impl BlobSink for Discard {
    fn describe(&self) -> String {
        "verify".into()
    }
    fn layer_form(&self) -> LayerForm {
        LayerForm::Compressed
    }
    fn has_blob(&self, _digest: &Digest) -> bool {
        false
    }
    fn begin_blob(&self) -> Result<Box<dyn BlobWriter>, SinkError> {
        Ok(Box::new(Counter {
            blobs: Arc::clone(&self.blobs),
            bytes: Arc::clone(&self.bytes),
            n: 0,
        }))
    }
    fn finish(&self, _image: &ImageRecord) -> Result<(), SinkError> {
        Ok(())
    }
    fn abort(&self) {}
}
