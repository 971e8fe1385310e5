//! `containerd[:NAMESPACE]`: blobs stream into containerd's content store
//! under a lease; layers are unpacked into the snapshotter as they arrive
//! (in chain order, while later layers are still being built); then GC
//! labels are set, the image record written (last, so a failure never leaves
//! an image pointing at missing content), and the lease deleted.

pub mod extract;
pub mod fill;
pub mod stage;
pub mod unpack;

use crate::containerd::content::{self, Upload};
use crate::containerd::placed::{self, PlacedBlob};
use crate::containerd::{images, Client, ContainerdError, REFERRER_LABEL};
use crate::image::layer::LayerContent;
use crate::oci::digest::Digest;
use crate::oci::{ImageRecord, IndexRecord, LayerRecord, Platform};
use crate::sink::{BlobSink, BlobWriter, LayerForm, ReadyLayer, SinkError};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::runtime::Handle;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;
use unpack::{chain_ids, unpack, unpack_as_ready, Committed, UnpackStats};

type Unpacker = JoinHandle<Result<UnpackStats, ContainerdError>>;

pub struct ContainerdSink {
    rt: Handle,
    client: Client,
    lease: String,
    snapshotter: String,
    sent: Arc<AtomicU64>,
    unpacked: Mutex<Option<UnpackStats>>,
    /// Layers go to a task that unpacks them while the rest are built.
    ready: Mutex<Option<UnboundedSender<ReadyLayer>>>,
    unpacker: Mutex<Option<Unpacker>>,
    /// A multi-platform build: the platforms to unpack (empty: this
    /// machine's), the platform being built, and the unpack tasks of the
    /// platforms built before it.
    unpack_platforms: Vec<Platform>,
    current: Mutex<Option<Platform>>,
    /// Blobs found in the content store (not written now), with their
    /// labels: not leased one by one (see `has_blob`).
    found: Mutex<std::collections::HashMap<String, std::collections::HashMap<String, String>>>,
    /// Blobs looked up ahead (`expect_blobs`): `has_blob` answers these
    /// from `found`, with no call.
    looked_up: Mutex<std::collections::HashSet<String>>,
    /// Calls made to look blobs up (`Info`, or `List` for many).
    blob_lookups: AtomicUsize,
    parked: Mutex<Vec<(Platform, Unpacker)>>,
    /// containerd's content directory, where layer blobs are placed
    /// (see [`placed`]); `refused` once containerd did not see one there.
    content_dir: Option<std::path::PathBuf>,
    refused: Arc<std::sync::atomic::AtomicBool>,
    committed: Arc<Committed>,
    /// Blobs placed in containerd's content directory (not streamed).
    placed: Arc<AtomicU64>,
    /// Where layers are filled ahead of the snapshot chain (overlayfs).
    stager: Option<Arc<stage::Stager>>,
    /// Layers extracted from their blobs as they arrived, for the unpack.
    extracted: stage::Extracted,
    /// The layers of the image being built filled ahead of their build.
    planned: Mutex<stage::Planned>,
}

impl ContainerdSink {
    /// `client` is connected (in the target namespace); a lease is created.
    pub fn open(
        rt: Handle,
        client: Client,
        snapshotter: &str,
        unpack_platforms: &[Platform],
    ) -> Result<Self, SinkError> {
        let lease = rt.block_on(images::create_lease(&client))?;
        let client = client.with_lease(Some(lease.clone()));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let committed = Arc::new(Committed::default());
        let rootless = client.rootless.is_some();
        let stager = if snapshotter == "overlayfs" && fill::may_fill(rootless) {
            rt.block_on(crate::containerd::plugin_root(
                &client,
                "io.containerd.snapshotter.v1",
                snapshotter,
            ))
            .and_then(|root| stage::Stager::new(&root, fill::may_link(snapshotter) && !rootless))
            .map(Arc::new)
        } else {
            None
        };
        let extracted = stage::Extracted::default();
        let planned = stage::Planned::default();
        let unpacker = rt.spawn(unpack_as_ready(
            client.clone(),
            snapshotter.into(),
            rx,
            Arc::clone(&committed),
            stager.clone(),
            Arc::clone(&extracted),
            Arc::clone(&planned),
        ));
        let content_dir = rt.block_on(placed::content_dir(&client));
        Ok(ContainerdSink {
            rt,
            client,
            lease,
            snapshotter: snapshotter.into(),
            sent: Arc::default(),
            unpacked: Mutex::new(None),
            ready: Mutex::new(Some(tx)),
            unpacker: Mutex::new(Some(unpacker)),
            unpack_platforms: unpack_platforms.to_vec(),
            current: Mutex::new(None),
            found: Mutex::default(),
            looked_up: Mutex::default(),
            blob_lookups: AtomicUsize::new(0),
            parked: Mutex::new(Vec::new()),
            content_dir,
            refused: Arc::default(),
            committed,
            placed: Arc::default(),
            stager,
            extracted,
            planned: Mutex::new(planned),
        })
    }

    pub fn unpack_stats(&self) -> Option<UnpackStats> {
        *self.unpacked.lock().unwrap()
    }

    async fn record(&self, image: &ImageRecord) -> Result<(), ContainerdError> {
        self.ready.lock().unwrap().take();
        let early = self.unpacker.lock().unwrap().take();
        let completed = self.complete(image, early, true).await;
        stage::remove_extracted(&self.extracted);
        let planned = Arc::clone(&self.planned.lock().unwrap());
        stage::discard_planned(&planned).await;
        completed?;
        let name = format!(
            "{}:{}",
            image.reference.name(),
            image.reference.tag_or_latest()
        );
        images::put(&self.client, &name, &image.manifest).await?;
        images::delete_lease(&self.client, &self.lease).await
    }

    /// Whether the namespace has `image` under its name, unpacked (the
    /// config's GC label names the top snapshot, which exists) and with
    /// its referrers labelled.
    async fn has_recorded(&self, image: &ImageRecord) -> bool {
        let c = &self.client;
        let name = format!(
            "{}:{}",
            image.reference.name(),
            image.reference.tag_or_latest()
        );
        let Ok(Some(recorded)) = images::get(c, &name).await else {
            return false;
        };
        if recorded.target.map(|t| t.digest) != Some(image.manifest.digest.to_string()) {
            return false;
        }
        let diff_ids: Vec<Digest> = image.layers.iter().map(|l| l.diff_id.clone()).collect();
        let Some(top) = chain_ids(&diff_ids).last().map(|d| d.to_string()) else {
            return false;
        };
        let Ok(Some(config)) = content::info(c, &image.config.digest).await else {
            return false;
        };
        let label = format!("containerd.io/gc.ref.snapshot.{}", self.snapshotter);
        if config.labels.get(&label) != Some(&top)
            || !matches!(
                unpack::snapshot_exists(c, &self.snapshotter, &top).await,
                Ok(true)
            )
        {
            return false;
        }
        if image.referrers.is_empty() {
            return true;
        }
        let Ok(Some(manifest)) = content::info(c, &image.manifest.digest).await else {
            return false;
        };
        image.referrers.iter().all(|r| {
            let d = r.manifest.digest.to_string();
            manifest
                .labels
                .iter()
                .any(|(k, v)| k.starts_with(REFERRER_LABEL) && *v == d)
        })
    }

    /// Whether a multi-platform build unpacks `p`.
    fn wants_unpacked(&self, p: &Platform) -> bool {
        if self.unpack_platforms.is_empty() {
            *p == Platform::host()
        } else {
            self.unpack_platforms.contains(p)
        }
    }

    /// Park the unpack task of the image built last (if it has one).
    fn park_current(&self) {
        self.ready.lock().unwrap().take();
        let planned = Arc::clone(&self.planned.lock().unwrap());
        self.rt.block_on(stage::discard_planned(&planned));
        let task = self.unpacker.lock().unwrap().take();
        match (self.current.lock().unwrap().take(), task) {
            (Some(p), Some(t)) => self.parked.lock().unwrap().push((p, t)),
            (None, Some(t)) => t.abort(),
            _ => {}
        }
    }

    async fn record_index(&self, index: &IndexRecord) -> Result<(), ContainerdError> {
        let c = &self.client;
        let mut labels = BTreeMap::new();
        for (i, image) in index.images.iter().enumerate() {
            let early = {
                let mut parked = self.parked.lock().unwrap();
                parked
                    .iter()
                    .position(|(p, _)| *p == image.platform)
                    .map(|i| parked.remove(i).1)
            };
            let unpack = self.wants_unpacked(&image.platform);
            self.complete(image, early, unpack).await?;
            labels.insert(
                format!("containerd.io/gc.ref.content.m.{i}"),
                image.manifest.digest.to_string(),
            );
        }
        content::set_labels(c, &index.index.digest, &labels).await?;
        let name = format!(
            "{}:{}",
            index.reference.name(),
            index.reference.tag_or_latest()
        );
        images::put(c, &name, &index.index).await?;
        images::delete_lease(c, &self.lease).await
    }

    /// Everything but the image record: labels, the unpack (with what
    /// `early` unpacked while the image was built), the GC references of
    /// the manifest and its referrers.
    async fn complete(
        &self,
        image: &ImageRecord,
        early: Option<Unpacker>,
        unpacked: bool,
    ) -> Result<(), ContainerdError> {
        let c = &self.client;
        // An uncompressed layer is its own diff: containerd needs no label
        // to say so (a label is a metadata write, with its fsync, each).
        for l in image.layers.iter().filter(|l| l.blob.digest != l.diff_id) {
            let key = "containerd.io/uncompressed";
            let has = self
                .found
                .lock()
                .unwrap()
                .get(&l.blob.digest.to_string())
                .and_then(|labels| labels.get(key).cloned());
            if has.as_deref() == Some(l.diff_id.to_string().as_str()) {
                continue;
            }
            let labels = [(key.to_string(), l.diff_id.to_string())].into();
            content::set_labels(c, &l.blob.digest, &labels).await?;
        }
        if !unpacked {
            if let Some(t) = early {
                t.abort();
            }
            return self.manifest_labels(image).await;
        }
        // What unpacked while the image was built; if that did not cover
        // every layer (a load sends none), every layer is checked and
        // applied where missing.
        let mut stats = match early {
            Some(task) => task
                .await
                .map_err(|e| ContainerdError::Engine(format!("the unpack task failed: {e}")))??,
            None => UnpackStats::default(),
        };
        if stats.layers() != image.layers.len() {
            let all = unpack(c, &self.snapshotter, &image.layers).await?;
            if stats.layers() == 0 {
                stats = all;
            } else {
                stats.merge(all);
            }
        }
        {
            let mut u = self.unpacked.lock().unwrap();
            match u.as_mut() {
                Some(before) => before.merge(stats),
                None => *u = Some(stats),
            }
        }
        let diff_ids: Vec<Digest> = image.layers.iter().map(|l| l.diff_id.clone()).collect();
        if let Some(top) = chain_ids(&diff_ids).last() {
            let labels = [(
                format!("containerd.io/gc.ref.snapshot.{}", self.snapshotter),
                top.to_string(),
            )]
            .into();
            content::set_labels(c, &image.config.digest, &labels).await?;
            unpack::top_snapshot_kept(c, &self.snapshotter, &diff_ids).await?;
        }
        self.manifest_labels(image).await
    }

    /// After the manifest refers to its layers: that every blob found in
    /// the content store (and so not leased) is still there.
    async fn blobs_kept(&self, image: &ImageRecord) -> Result<(), ContainerdError> {
        let found: Vec<Digest> = {
            let f = self.found.lock().unwrap();
            image
                .layers
                .iter()
                .map(|l| l.blob.digest.clone())
                .filter(|d| f.contains_key(&d.to_string()))
                .collect()
        };
        self.blob_lookups
            .fetch_add(content::calls_for(found.len()), Ordering::Relaxed);
        let there = content::infos(&self.client, &found).await?;
        if let Some(d) = found.iter().find(|d| !there.contains_key(&d.to_string())) {
            return Err(ContainerdError::Engine(format!(
                "containerd's garbage collector removed layer {d} while nixoci imported the image (something else deleted an image that used it at that moment): run the command again"
            )));
        }
        Ok(())
    }

    /// The GC references of a manifest (config, layers, referrers) and of
    /// its referrers (their blobs).
    async fn manifest_labels(&self, image: &ImageRecord) -> Result<(), ContainerdError> {
        let c = &self.client;
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
        // Referrers (containerd 1.6 has no place for them): kept in the
        // content store, each tied to its blobs and to the image manifest
        // by GC labels, so they live and go with the image.
        for (i, r) in image.referrers.iter().enumerate() {
            let mut own = BTreeMap::new();
            for (j, (b, _)) in r.blobs.iter().enumerate() {
                let key = if j == 0 {
                    "config".to_string()
                } else {
                    format!("l.{}", j - 1)
                };
                own.insert(
                    format!("containerd.io/gc.ref.content.{key}"),
                    b.digest.to_string(),
                );
            }
            content::set_labels(c, &r.manifest.digest, &own).await?;
            labels.insert(
                format!("{REFERRER_LABEL}{i}"),
                r.manifest.digest.to_string(),
            );
        }
        content::set_labels(c, &image.manifest.digest, &labels).await?;
        self.blobs_kept(image).await
    }
}

/// A blob streamed to containerd, or placed in its content directory.
struct ContainerdBlob {
    how: How,
    committed: Arc<Committed>,
    placed: Arc<AtomicU64>,
}

enum How {
    Streamed(Upload),
    Placed(PlacedBlob),
}

impl Write for ContainerdBlob {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.how {
            How::Streamed(u) => u.write(buf),
            How::Placed(p) => p.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlobWriter for ContainerdBlob {
    fn commit(self: Box<Self>, digest: &Digest) -> Result<(), SinkError> {
        let ContainerdBlob {
            how,
            committed,
            placed,
        } = *self;
        match how {
            How::Streamed(u) => u.commit(digest)?,
            How::Placed(p) => {
                if p.commit(digest)? {
                    placed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        committed.add(digest);
        Ok(())
    }
}

/// A layer blob extracted into a staging directory while it is written:
/// its bytes go to the blob and, through a short queue, to a thread that
/// decompresses and extracts them.
struct Extracting {
    blob: Option<Box<dyn BlobWriter>>,
    feed: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    worker: Option<std::thread::JoinHandle<io::Result<extract::Outcome>>>,
    dir: std::path::PathBuf,
    diff_id: Digest,
    extracted: stage::Extracted,
}

/// The extracting thread's end of the queue.
struct Fed {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl io::Read for Fed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(c) => (self.chunk, self.pos) = (c, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Extracting {
    fn start(
        blob: Box<dyn BlobWriter>,
        dir: std::path::PathBuf,
        layer: &LayerRecord,
        rootless: bool,
        extracted: stage::Extracted,
    ) -> Self {
        // Sixteen chunks (a megabyte each at most) between the two.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
        let d = dir.clone();
        let layer_digest = layer.blob.digest.clone();
        let worker = std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let mut fed = Fed {
                rx,
                chunk: Vec::new(),
                pos: 0,
            };
            let outcome = extract::extract(&mut fed, &d, rootless);
            tracing::debug!(
                layer = %layer_digest,
                ?outcome,
                secs = started.elapsed().as_secs_f64(),
                "extracted"
            );
            outcome
        });
        Extracting {
            blob: Some(blob),
            feed: Some(tx),
            worker: Some(worker),
            dir,
            diff_id: layer.diff_id.clone(),
            extracted,
        }
    }

    /// Close the queue and wait for the extraction: the directory, when
    /// the layer was extracted and is its diff_id.
    fn end(&mut self) -> Option<std::path::PathBuf> {
        self.feed = None;
        let outcome = self.worker.take()?.join();
        match outcome {
            Ok(Ok(extract::Outcome::Extracted { diff_id, .. })) if diff_id == self.diff_id => {
                Some(self.dir.clone())
            }
            _ => {
                stage::remove(&self.dir);
                None
            }
        }
    }
}

impl Write for Extracting {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(blob) = self.blob.as_mut() else {
            return Err(io::Error::other("the blob was committed"));
        };
        blob.write_all(buf)?;
        // An extraction that stopped (declined) takes no more.
        if let Some(feed) = &self.feed {
            if feed.send(buf.to_vec()).is_err() {
                self.feed = None;
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlobWriter for Extracting {
    fn commit(mut self: Box<Self>, digest: &Digest) -> Result<(), SinkError> {
        let dir = self.end();
        let committed = match self.blob.take() {
            Some(b) => b.commit(digest),
            None => Ok(()),
        };
        match (committed, dir) {
            (Ok(()), Some(dir)) => {
                let old = self
                    .extracted
                    .lock()
                    .unwrap()
                    .insert(digest.to_string(), dir);
                // The same blob twice in one image: one extraction is used.
                if let Some(old) = old {
                    stage::remove(&old);
                }
                Ok(())
            }
            (Ok(()), None) => Ok(()),
            (Err(e), dir) => {
                if let Some(dir) = dir {
                    stage::remove(&dir);
                }
                Err(e)
            }
        }
    }
}

impl Drop for Extracting {
    /// Not committed (the bytes did not match, say): nothing extracted stays.
    fn drop(&mut self) {
        if self.worker.is_some() {
            if let Some(dir) = self.end() {
                stage::remove(&dir);
            }
        }
    }
}

impl ContainerdSink {
    fn blob(&self, how: How) -> Box<dyn BlobWriter> {
        Box::new(ContainerdBlob {
            how,
            committed: Arc::clone(&self.committed),
            placed: Arc::clone(&self.placed),
        })
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
        // A look, not a lease (a write, with its fsync, per blob): the
        // manifest, written under the lease, refers to every layer once
        // the image is complete, and then `blobs_kept` checks that each
        // found blob is still there.
        let d = digest.to_string();
        if self.looked_up.lock().unwrap().contains(&d) {
            return self.found.lock().unwrap().contains_key(&d);
        }
        self.blob_lookups.fetch_add(1, Ordering::Relaxed);
        match self.rt.block_on(content::info(&self.client, digest)) {
            Ok(Some(info)) => {
                self.found
                    .lock()
                    .unwrap()
                    .insert(digest.to_string(), info.labels);
                self.committed.add(digest);
                true
            }
            _ => false,
        }
    }
    fn expect_blobs(&self, digests: &[Digest]) {
        // One look for all (see `has_blob`); should it fail, each is
        // looked up when asked.
        self.blob_lookups
            .fetch_add(content::calls_for(digests.len()), Ordering::Relaxed);
        let Ok(infos) = self.rt.block_on(content::infos(&self.client, digests)) else {
            return;
        };
        let mut found = self.found.lock().unwrap();
        for d in digests {
            if let Some(info) = infos.get(&d.to_string()) {
                found.insert(d.to_string(), info.labels.clone());
                self.committed.add(d);
            }
        }
        self.looked_up
            .lock()
            .unwrap()
            .extend(digests.iter().map(|d| d.to_string()));
    }
    fn begin_blob(&self) -> Result<Box<dyn BlobWriter>, SinkError> {
        if let Some(dir) = &self.content_dir {
            if !self.refused.load(Ordering::Relaxed) {
                let placed = PlacedBlob::start(
                    dir,
                    &self.rt,
                    &self.client,
                    Arc::clone(&self.sent),
                    Arc::clone(&self.refused),
                );
                // A directory that takes no unnamed file (a filesystem
                // without O_TMPFILE): streamed.
                if let Ok(p) = placed {
                    return Ok(self.blob(How::Placed(p)));
                }
            }
        }
        Ok(self.blob(How::Streamed(Upload::start(
            &self.rt,
            &self.client,
            Arc::clone(&self.sent),
        ))))
    }
    /// A layer blob of a pull or a load: extracted into a staging
    /// directory as it arrives, when the snapshot chain will want it (see
    /// [`extract`]).
    fn begin_layer(
        &self,
        layers: &[LayerRecord],
        i: usize,
    ) -> Result<Box<dyn BlobWriter>, SinkError> {
        let blob = self.begin_blob()?;
        let layer = &layers[i];
        let Some(stager) = &self.stager else {
            return Ok(blob);
        };
        if !extract::extractable(&layer.blob.media_type) || self.ready.lock().unwrap().is_none() {
            return Ok(blob);
        }
        // The same layers may be unpacked already from blobs compressed
        // otherwise (built here, pulled from elsewhere).
        let diff_ids: Vec<Digest> = layers[..=i].iter().map(|l| l.diff_id.clone()).collect();
        let Some(chain) = chain_ids(&diff_ids).pop() else {
            return Ok(blob);
        };
        let exists = self.rt.block_on(unpack::snapshot_exists(
            &self.client,
            &self.snapshotter,
            &chain.to_string(),
        ));
        if !matches!(exists, Ok(false)) {
            return Ok(blob);
        }
        let Ok(dir) = stager.new_dir() else {
            return Ok(blob);
        };
        Ok(Box::new(Extracting::start(
            blob,
            dir,
            layer,
            self.client.rootless.is_some(),
            Arc::clone(&self.extracted),
        )))
    }
    fn holds_image(&self, image: &ImageRecord) -> bool {
        self.rt.block_on(self.has_recorded(image))
    }
    fn finish_held(&self, image: &ImageRecord) -> Result<(), SinkError> {
        self.ready.lock().unwrap().take();
        if let Some(t) = self.unpacker.lock().unwrap().take() {
            t.abort();
        }
        *self.unpacked.lock().unwrap() = Some(UnpackStats {
            existing: image.layers.len(),
            ..Default::default()
        });
        self.rt
            .block_on(images::delete_lease(&self.client, &self.lease))
            .map_err(SinkError::from)
    }
    fn begin_image(&self, platform: &Platform) {
        self.park_current();
        if self.wants_unpacked(platform) {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            // Each image's own: layer indexes are an image's.
            let planned = stage::Planned::default();
            let task = self.rt.spawn(unpack_as_ready(
                self.client.clone(),
                self.snapshotter.clone(),
                rx,
                Arc::clone(&self.committed),
                self.stager.clone(),
                Arc::clone(&self.extracted),
                Arc::clone(&planned),
            ));
            *self.planned.lock().unwrap() = planned;
            *self.ready.lock().unwrap() = Some(tx);
            *self.unpacker.lock().unwrap() = Some(task);
        }
        *self.current.lock().unwrap() = Some(platform.clone());
    }
    fn finish_index(&self, index: &IndexRecord) -> Result<(), SinkError> {
        self.park_current();
        self.put_blob(&index.index.digest, &index.index_bytes)?;
        self.rt
            .block_on(self.record_index(index))
            .map_err(SinkError::from)
    }
    /// Filled ahead, in the order planned, while the layers are built.
    fn layer_planned(&self, index: usize, content: &LayerContent, mtime: u64) {
        let (Some(stager), true) = (&self.stager, self.ready.lock().unwrap().is_some()) else {
            return;
        };
        let fill = stager.plan(&self.rt, content.clone(), mtime);
        self.planned
            .lock()
            .unwrap()
            .lock()
            .unwrap()
            .insert(index, fill);
    }
    fn layer_ready(&self, layer: &ReadyLayer) {
        if let Some(tx) = self.ready.lock().unwrap().as_ref() {
            let _ = tx.send(layer.clone());
        }
    }
    fn finish(&self, image: &ImageRecord) -> Result<(), SinkError> {
        self.rt
            .block_on(self.record(image))
            .map_err(SinkError::from)
    }
    fn abort(&self) {
        self.ready.lock().unwrap().take();
        if let Some(task) = self.unpacker.lock().unwrap().take() {
            task.abort();
        }
        for (_, task) in self.parked.lock().unwrap().drain(..) {
            task.abort();
        }
        stage::remove_extracted(&self.extracted);
        let planned = Arc::clone(&self.planned.lock().unwrap());
        self.rt.block_on(stage::discard_planned(&planned));
        // What the unpack held (filled, or being filled): removed once
        // nothing fills it.
        if let Some(stager) = &self.stager {
            self.rt.block_on(stager.settle());
            stager.sweep();
        }
        let _ = self
            .rt
            .block_on(images::delete_lease(&self.client, &self.lease));
    }
    fn wants_layers_in_order(&self) -> bool {
        true
    }
    fn ready_before_commit(&self) -> bool {
        true
    }
    fn bytes_written(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
    fn report(&self) -> serde_json::Value {
        serde_json::json!({
            "bytes_written": self.bytes_written(),
            "blobs_placed": self.placed.load(Ordering::Relaxed),
            "blob_lookups": self.blob_lookups.load(Ordering::Relaxed),
            "unpack": self.unpack_stats(),
        })
    }
}
