//! `containerd[:NAMESPACE]`: blobs stream into containerd's content store
//! under a lease; then the layers are unpacked into the snapshotter, GC
//! labels set, the image record written (last, so a failure never leaves an
//! image pointing at missing content), and the lease deleted.

use super::{BlobSink, BlobWriter, ImageRecord, LayerForm, SinkError};
use crate::containerd::content::{self, Upload};
use crate::containerd::unpack::{chain_ids, unpack, UnpackStats};
use crate::containerd::{images, Client, ContainerdError};
use crate::image::digest::Digest;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::runtime::Handle;

pub struct ContainerdSink {
    rt: Handle,
    client: Client,
    lease: String,
    snapshotter: String,
    sent: Arc<AtomicU64>,
    unpacked: Mutex<Option<UnpackStats>>,
}

fn sink_err(e: ContainerdError) -> SinkError {
    SinkError::Invalid(e.to_string())
}

impl ContainerdSink {
    /// `client` is connected (in the target namespace); a lease is created.
    pub fn open(rt: Handle, client: Client, snapshotter: &str) -> Result<Self, SinkError> {
        let lease = rt
            .block_on(images::create_lease(&client))
            .map_err(sink_err)?;
        Ok(ContainerdSink {
            rt,
            client: client.with_lease(Some(lease.clone())),
            lease,
            snapshotter: snapshotter.into(),
            sent: Arc::default(),
            unpacked: Mutex::new(None),
        })
    }

    /// Blob bytes sent to containerd so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn unpack_stats(&self) -> Option<UnpackStats> {
        *self.unpacked.lock().unwrap()
    }

    async fn record(&self, image: &ImageRecord) -> Result<(), ContainerdError> {
        let c = &self.client;
        for l in &image.layers {
            let labels = [(
                "containerd.io/uncompressed".to_string(),
                l.diff_id.to_string(),
            )]
            .into();
            content::set_labels(c, &l.blob.digest, &labels).await?;
        }
        let stats = unpack(c, &self.snapshotter, &image.layers).await?;
        *self.unpacked.lock().unwrap() = Some(stats);
        let diff_ids: Vec<Digest> = image.layers.iter().map(|l| l.diff_id.clone()).collect();
        if let Some(top) = chain_ids(&diff_ids).last() {
            let labels = [(
                format!("containerd.io/gc.ref.snapshot.{}", self.snapshotter),
                top.to_string(),
            )]
            .into();
            content::set_labels(c, &image.config.digest, &labels).await?;
        }
        let mut labels: BTreeMap<String, String> = BTreeMap::new();
        labels.insert(
            "containerd.io/gc.ref.content.config".into(),
            image.config.digest.to_string(),
        );
        for (i, l) in image.layers.iter().enumerate() {
            labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                l.blob.digest.to_string(),
            );
        }
        content::set_labels(c, &image.manifest.digest, &labels).await?;
        let name = format!(
            "{}:{}",
            image.reference.name(),
            image.reference.tag_or_latest()
        );
        images::put(c, &name, &image.manifest).await?;
        images::delete_lease(c, &self.lease).await
    }
}

struct ContainerdBlob(Option<Upload>);

impl Write for ContainerdBlob {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.as_mut().expect("not committed").write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlobWriter for ContainerdBlob {
    fn commit(mut self: Box<Self>, digest: &Digest) -> Result<(), SinkError> {
        self.0
            .take()
            .expect("committed once")
            .commit(digest)
            .map_err(sink_err)
    }
}

impl BlobSink for ContainerdSink {
    fn describe(&self) -> String {
        format!(
            "containerd:{} ({})",
            self.client.namespace, self.client.address
        )
    }
    fn layer_form(&self) -> LayerForm {
        LayerForm::Compressed
    }
    fn has_blob(&self, digest: &Digest) -> bool {
        matches!(
            self.rt.block_on(content::info(&self.client, digest)),
            Ok(Some(_))
        )
    }
    fn begin_blob(&self) -> Result<Box<dyn BlobWriter>, SinkError> {
        Ok(Box::new(ContainerdBlob(Some(Upload::start(
            &self.rt,
            &self.client,
            Arc::clone(&self.sent),
        )))))
    }
    fn finish(&self, image: &ImageRecord) -> Result<(), SinkError> {
        self.rt.block_on(self.record(image)).map_err(sink_err)
    }
    fn abort(&self) {
        let _ = self
            .rt
            .block_on(images::delete_lease(&self.client, &self.lease));
    }
    fn bytes_written(&self) -> u64 {
        self.bytes_sent()
    }
}
