//! Assemble an image from a closure into a set of sinks.
//!
//! Each layer is produced in one pass: the tar stream is hashed (diff_id),
//! copied to the sinks that store plain tars, and compressed; the compressed
//! stream is hashed (blob digest) and copied to the sinks that store
//! compressed layers. Layers are built in parallel, largest first; for a
//! sink that unpacks layers bottom-up as they arrive, one worker walks the
//! layers bottom-up instead, so the unpack starts at once. A layer whose
//! cached digests every sink already holds is not read at all.

use super::cache::{LayerCache, FORMAT};
use crate::image::compress::Compression;
use crate::image::config::{config_json, LayerHistory, RuntimeConfig};
use crate::image::layer::{LayerContent, LayerError};
use crate::image::layering::{plan, LayerKind, LayeringError, PlannedLayer};
use crate::image::manifest::manifest_json;
use crate::image::rootfs::RootLayerOptions;
use crate::image::tar::TarWriter;
use crate::nix::Closure;
use crate::oci::blob::{Blob, CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use crate::oci::digest::{Digest, HashingWriter};
use crate::oci::{ImageRecord, ImageRef, LayerRecord, Platform};
use crate::sink::{BlobSink, BlobWriter, LayerForm, ReadyLayer, SinkError};
use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error(transparent)]
    Layering(#[from] LayeringError),
    #[error("layer {index} ({what}): {source}")]
    Layer {
        index: usize,
        what: String,
        source: LayerError,
    },
    #[error("{sink}: {source}")]
    Sink { sink: String, source: SinkError },
    #[error(transparent)]
    Config(#[from] crate::image::config::ConfigError),
    #[error(transparent)]
    Level(#[from] crate::image::compress::LevelError),
    #[error("interrupted; what this build wrote was removed")]
    Interrupted,
}

/// Everything that decides the image's bytes.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub reference: ImageRef,
    pub platform: Platform,
    pub runtime: RuntimeConfig,
    /// RFC 3339.
    pub created: String,
    pub mtime: u64,
    pub compression: Compression,
    pub level: i32,
    pub max_layers: usize,
    pub root_layer: RootLayerOptions,
    pub annotations: BTreeMap<String, String>,
    /// What Nix said about the output, for the SBOM and provenance
    /// attached to the image; `None`: attach nothing (`--no-sbom`).
    pub attest: Option<crate::image::sbom::BuildFacts>,
}

impl ImageSpec {
    /// The options that shape the image, as provenance records them (not
    /// its name: the documents describe the content, whatever its name).
    fn shaping(&self) -> serde_json::Value {
        serde_json::json!({
            "platform": self.platform.to_json(),
            "config": self.runtime,
            "created": self.created,
            "mtime": self.mtime,
            "compression": self.compression,
            "compressionLevel": self.level,
            "maxLayers": self.max_layers,
            "rootLayer": self.root_layer,
            "annotations": self.annotations,
        })
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    /// Layers produced by reading the store.
    pub layers_built: usize,
    /// Layers whose cached digests every sink already held.
    pub layers_cached: usize,
    /// Uncompressed bytes read and written into tars.
    pub bytes_read: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone)]
pub struct AssembledImage {
    pub record: ImageRecord,
    pub plan: Vec<PlannedLayer>,
    pub stats: Stats,
}

/// Progress callbacks: called from worker threads.
pub trait Progress: Sync {
    fn layer_started(&self, _index: usize, _total: usize, _what: &str, _bytes: u64) {}
    fn bytes(&self, _n: u64) {}
    fn layer_done(&self, _index: usize, _record: &LayerRecord, _cached: bool) {}
    /// Something to tell the user (an image loaded as it is).
    fn note(&self, _message: &str) {}
    /// A warning (options ignored): shown even where notes are not.
    fn warn(&self, _message: &str) {}
}

pub struct NoProgress;
impl Progress for NoProgress {}

fn describe(l: &PlannedLayer, root: &crate::nix::StorePath) -> String {
    match l.kind {
        LayerKind::Single | LayerKind::RootOutput => l.paths[0].to_string(),
        LayerKind::Rest => format!("{} more store paths", l.paths.len()),
        LayerKind::RootLayer => format!("root layer for {root}"),
    }
}

/// The cache key of a layer: content identity plus byte-affecting options.
fn layer_key(spec: &ImageSpec, closure: &Closure, l: &PlannedLayer) -> String {
    let paths: Vec<(String, &str)> = match l.kind {
        LayerKind::RootLayer => vec![(
            closure.root.to_string(),
            closure.root_info().nar_hash.as_str(),
        )],
        _ => l
            .paths
            .iter()
            .map(|p| (p.to_string(), closure.paths[p].nar_hash.as_str()))
            .collect(),
    };
    let key = serde_json::json!({
        "format": FORMAT,
        "root_layer": (l.kind == LayerKind::RootLayer).then_some(spec.root_layer),
        "paths": paths,
        "mtime": spec.mtime,
        "compression": spec.compression,
        "level": spec.level,
    });
    Digest::of(&crate::oci::blob::canonical_json(&key))
        .hex()
        .to_string()
}

/// What a planned layer holds.
fn content_of(spec: &ImageSpec, closure: &Closure, l: &PlannedLayer) -> LayerContent {
    match l.kind {
        LayerKind::RootLayer => LayerContent::Root {
            root: closure.root.clone(),
            options: spec.root_layer,
        },
        _ => LayerContent::Store(l.paths.clone()),
    }
}

/// Writes to several writers.
struct Fanout(Vec<Box<dyn BlobWriter>>);

impl Write for Fanout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for w in &mut self.0 {
            w.write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.iter_mut().try_for_each(|w| w.flush())
    }
}

/// Writes to the compressor, if there is one (uncompressed layers are
/// hashed once, as the diff), and a fanout (plain sinks).
struct Tee<A>(Option<A>, Fanout);

impl<A: Write> Write for Tee<A> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(a) = &mut self.0 {
            a.write_all(buf)?;
        }
        self.1.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if let Some(a) = &mut self.0 {
            a.flush()?;
        }
        self.1.flush()
    }
}

/// Counts bytes for progress, in large steps.
struct Counting<'a, W> {
    inner: W,
    progress: &'a dyn Progress,
    pending: u64,
    total: &'a AtomicU64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pending += n as u64;
        if self.pending >= 8 << 20 {
            self.progress.bytes(self.pending);
            self.total.fetch_add(self.pending, Ordering::Relaxed);
            self.pending = 0;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct Job<'a> {
    spec: &'a ImageSpec,
    closure: &'a Closure,
    sinks: &'a [&'a dyn BlobSink],
    cache: &'a LayerCache,
    cancel: &'a AtomicBool,
    progress: &'a dyn Progress,
    bytes_read: &'a AtomicU64,
}

impl Job<'_> {
    fn sink_err(sink: &dyn BlobSink) -> impl FnOnce(SinkError) -> AssembleError + '_ {
        move |source| AssembleError::Sink {
            sink: sink.describe(),
            source,
        }
    }

    /// Produce one layer (or take it from the cache). Returns (record, from
    /// cache). `early` is called once the layer's digests are known, before
    /// its blobs are committed (with whether it was built now).
    fn run(
        &self,
        index: usize,
        l: &PlannedLayer,
        early: &dyn Fn(&LayerRecord, bool),
    ) -> Result<(LayerRecord, bool), AssembleError> {
        let key = layer_key(self.spec, self.closure, l);
        if let Some(cached) = self.cache.get(&key) {
            let all_have = self.sinks.iter().all(|s| match s.layer_form() {
                LayerForm::Compressed => s.has_blob(&cached.blob.digest),
                LayerForm::Uncompressed => s.has_blob(&cached.diff_id),
            });
            if all_have {
                early(&cached, false);
                return Ok((cached, true));
            }
        }
        let what = describe(l, &self.closure.root);
        let layer_err = |source| AssembleError::Layer {
            index,
            what: what.clone(),
            source,
        };
        let write_err = |e: io::Error| layer_err(LayerError::Write(e));
        let mut plain = Vec::new();
        let mut packed = Vec::new();
        for s in self.sinks {
            let w = s.begin_blob().map_err(Self::sink_err(*s))?;
            match (s.layer_form(), self.spec.compression) {
                (LayerForm::Uncompressed, _) | (_, Compression::None) => plain.push(w),
                (LayerForm::Compressed, _) => packed.push(w),
            }
        }
        let uncompressed = self.spec.compression == Compression::None;
        let encoder = if uncompressed {
            None
        } else {
            Some(
                self.spec
                    .compression
                    .encoder(self.spec.level, HashingWriter::new(Fanout(packed)))
                    .map_err(write_err)?,
            )
        };
        let diff = HashingWriter::new(Tee(encoder, Fanout(plain)));
        let counting = Counting {
            inner: diff,
            progress: self.progress,
            pending: 0,
            total: self.bytes_read,
        };
        let mut tar = TarWriter::new(BufWriter::with_capacity(1 << 20, counting), self.spec.mtime);
        content_of(self.spec, self.closure, l)
            .write_to(&mut tar, &|| {
                self.cancel.load(Ordering::Relaxed) || crate::util::interrupt::interrupted()
            })
            .map_err(layer_err)?;
        let buffered = tar.finish().map_err(write_err)?;
        let counting = buffered
            .into_inner()
            .map_err(|e| write_err(e.into_error()))?;
        self.progress.bytes(counting.pending);
        self.bytes_read
            .fetch_add(counting.pending, Ordering::Relaxed);
        let (diff_id, size, Tee(encoder, Fanout(plain))) = counting.inner.finish();
        let (blob, packed) = match encoder {
            None => (
                Blob {
                    media_type: self.spec.compression.media_type().into(),
                    digest: diff_id.clone(),
                    size,
                },
                Vec::new(),
            ),
            Some(e) => {
                let (digest, size, Fanout(packed)) = e.finish().map_err(write_err)?.finish();
                let media_type = self.spec.compression.media_type().into();
                (
                    Blob {
                        media_type,
                        digest,
                        size,
                    },
                    packed,
                )
            }
        };
        let record = LayerRecord {
            diff_id,
            uncompressed_size: size,
            blob,
        };
        early(&record, true);
        let (diff_id, blob) = (&record.diff_id, &record.blob);
        let sinks_plain = self
            .sinks
            .iter()
            .filter(|s| s.layer_form() == LayerForm::Uncompressed || uncompressed);
        let sinks_packed = self
            .sinks
            .iter()
            .filter(|s| s.layer_form() == LayerForm::Compressed && !uncompressed);
        for (w, s) in plain.into_iter().zip(sinks_plain) {
            w.commit(diff_id).map_err(Self::sink_err(*s))?;
        }
        for (w, s) in packed.into_iter().zip(sinks_packed) {
            w.commit(&blob.digest).map_err(Self::sink_err(*s))?;
        }
        self.cache.put(&key, &record);
        Ok((record, false))
    }
}

/// Build the image of `closure` into every sink. On error every sink is
/// aborted (what this build wrote is removed).
pub fn assemble(
    spec: &ImageSpec,
    closure: &Closure,
    sinks: &[&dyn BlobSink],
    cache: &LayerCache,
    jobs: usize,
    progress: &dyn Progress,
) -> Result<AssembledImage, AssembleError> {
    let result = assemble_inner(spec, closure, sinks, cache, jobs, progress, true);
    if result.is_err() {
        for s in sinks {
            s.abort();
        }
    }
    result
}

/// Put the image's blobs, config, manifest and referrers into every sink,
/// and record nothing: one platform of a multi-platform build, recorded
/// with the others as an index (`BlobSink::finish_index`). The caller
/// aborts the sinks on error.
pub fn assemble_unrecorded(
    spec: &ImageSpec,
    closure: &Closure,
    sinks: &[&dyn BlobSink],
    cache: &LayerCache,
    jobs: usize,
    progress: &dyn Progress,
) -> Result<AssembledImage, AssembleError> {
    assemble_inner(spec, closure, sinks, cache, jobs, progress, false)
}

fn assemble_inner(
    spec: &ImageSpec,
    closure: &Closure,
    sinks: &[&dyn BlobSink],
    cache: &LayerCache,
    jobs: usize,
    progress: &dyn Progress,
    record_image: bool,
) -> Result<AssembledImage, AssembleError> {
    let start = Instant::now();
    spec.compression.check_level(spec.level)?;
    let layers = plan(closure, spec.max_layers, spec.root_layer.any())?;
    // Nothing changed: every layer's digests are in the cache and every
    // output already holds this very image (containerd: the same record,
    // unpacked). Then nothing is read, sent or written, and no call is
    // made per layer.
    if record_image && !sinks.is_empty() {
        let cached: Option<Vec<LayerRecord>> = layers
            .iter()
            .map(|l| cache.get(&layer_key(spec, closure, l)))
            .collect();
        if let Some(records) = cached {
            let record = image_record(spec, closure, &layers, records)?;
            if sinks.iter().all(|s| s.holds_image(&record)) {
                for s in sinks {
                    s.finish_held(&record).map_err(Job::sink_err(*s))?;
                }
                let stats = Stats {
                    layers_cached: layers.len(),
                    seconds: start.elapsed().as_secs_f64(),
                    ..Default::default()
                };
                return Ok(AssembledImage {
                    record,
                    plan: layers,
                    stats,
                });
            }
        }
    }
    // The sinks hear which blobs they will be asked for (the layers in the
    // cache), to look them up at once.
    let cached: Vec<LayerRecord> = layers
        .iter()
        .filter_map(|l| cache.get(&layer_key(spec, closure, l)))
        .collect();
    if !cached.is_empty() {
        for s in sinks {
            let digests: Vec<Digest> = cached
                .iter()
                .map(|r| match s.layer_form() {
                    LayerForm::Compressed => r.blob.digest.clone(),
                    LayerForm::Uncompressed => r.diff_id.clone(),
                })
                .collect();
            s.expect_blobs(&digests);
        }
    }
    // Largest first, so the long layers start early. When a sink unpacks
    // layers bottom-up as they arrive (containerd), the largest still starts
    // first, then the rest go bottom-up so the unpack can follow at once.
    let mut order: Vec<usize> = (0..layers.len()).collect();
    let weight =
        |l: &PlannedLayer| -> u64 { l.paths.iter().map(|p| closure.paths[p].nar_size).sum() };
    let in_order = sinks.iter().any(|s| s.wants_layers_in_order());
    if in_order {
        // The large layers first (each over a sixteenth of the image, largest
        // first, and at least the largest), so none of them is left for the
        // end, when it would hold up the unpack; then the rest bottom-up.
        let total: u64 = layers.iter().map(weight).sum();
        let mut big: Vec<usize> = (0..layers.len())
            .filter(|&i| weight(&layers[i]) >= total / 16)
            .collect();
        if big.is_empty() {
            big.extend(
                (0..layers.len()).max_by_key(|&i| (weight(&layers[i]), std::cmp::Reverse(i))),
            );
        }
        big.sort_by_key(|&i| (std::cmp::Reverse(weight(&layers[i])), i));
        order.retain(|i| !big.contains(i));
        order.splice(0..0, big);
    } else {
        order.sort_by_key(|&i| std::cmp::Reverse(weight(&layers[i])));
    }
    // Sinks that start on layers before they are built hear of every one
    // this build will make (not in the layer cache), bottom-up.
    if sinks.iter().any(|s| s.ready_before_commit()) {
        for (i, l) in layers.iter().enumerate() {
            if cache.get(&layer_key(spec, closure, l)).is_none() {
                let content = content_of(spec, closure, l);
                for s in sinks.iter().filter(|s| s.ready_before_commit()) {
                    s.layer_planned(i, &content, spec.mtime);
                }
            }
        }
    }
    let results: Mutex<Vec<Option<(LayerRecord, bool)>>> = Mutex::new(vec![None; layers.len()]);
    let first_error: Mutex<Option<AssembleError>> = Mutex::new(None);
    // Each layer is taken by one worker. With a sink that unpacks bottom-up
    // as layers arrive and more than one worker, the first worker walks the
    // layers bottom-up, so the unpack's chain starts at once and is fed in
    // order, while the others take the large layers first.
    let claimed: Vec<AtomicBool> = layers.iter().map(|_| AtomicBool::new(false)).collect();
    let workers = jobs.max(1).min(layers.len());
    let bottom_up: Vec<usize> = (0..layers.len()).collect();
    let list_of = |w: usize| -> &[usize] {
        if in_order && workers > 1 && w == 0 {
            &bottom_up
        } else {
            &order
        }
    };
    let cancel = AtomicBool::new(false);
    let bytes_read = AtomicU64::new(0);
    let job = Job {
        spec,
        closure,
        sinks,
        cache,
        cancel: &cancel,
        progress,
        bytes_read: &bytes_read,
    };
    std::thread::scope(|scope| {
        for w in 0..workers {
            let list = list_of(w);
            let (claimed, cancel, results, first_error) =
                (&claimed, &cancel, &results, &first_error);
            let (job, layers, weight) = (&job, &layers, &weight);
            let mut at = 0;
            scope.spawn(move || loop {
                // What is behind `at` is taken: layers are only ever claimed.
                while at < list.len() && claimed[list[at]].swap(true, Ordering::AcqRel) {
                    at += 1;
                }
                if at >= list.len() || cancel.load(Ordering::Relaxed) {
                    break;
                }
                let i = list[at];
                let what = describe(&layers[i], &closure.root);
                progress.layer_started(i, layers.len(), &what, weight(&layers[i]));
                // Sinks that take a layer before its blob is committed
                // get it then; the others once it is.
                let ready = |rec: &LayerRecord, early: bool, built: bool| {
                    let to = || sinks.iter().filter(|s| s.ready_before_commit() == early);
                    if to().next().is_none() {
                        return;
                    }
                    let ready = ReadyLayer {
                        index: i,
                        total: layers.len(),
                        record: rec.clone(),
                        content: Some(content_of(spec, closure, &layers[i])),
                        mtime: spec.mtime,
                        built,
                    };
                    for s in to() {
                        s.layer_ready(&ready);
                    }
                };
                match job.run(i, &layers[i], &|rec, built| ready(rec, true, built)) {
                    Ok((rec, cached)) => {
                        progress.layer_done(i, &rec, cached);
                        ready(&rec, false, !cached);
                        results.lock().unwrap()[i] = Some((rec, cached));
                    }
                    Err(e) => {
                        cancel.store(true, Ordering::Relaxed);
                        let mut slot = first_error.lock().unwrap();
                        // A cancellation is a consequence of another layer's error, not the cause.
                        let held_cancel = matches!(
                            &*slot,
                            Some(AssembleError::Layer {
                                source: LayerError::Cancelled,
                                ..
                            })
                        );
                        if slot.is_none() || held_cancel {
                            *slot = Some(e);
                        }
                        break;
                    }
                }
            });
        }
    });
    if crate::util::interrupt::interrupted() {
        return Err(AssembleError::Interrupted);
    }
    if let Some(e) = first_error.into_inner().unwrap() {
        return Err(e);
    }
    let results: Vec<(LayerRecord, bool)> = results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let mut stats = Stats {
        layers_cached: results.iter().filter(|r| r.1).count(),
        ..Default::default()
    };
    stats.layers_built = results.len() - stats.layers_cached;
    stats.bytes_read = bytes_read.into_inner();
    let records: Vec<LayerRecord> = results.into_iter().map(|r| r.0).collect();

    let record = image_record(spec, closure, &layers, records)?;
    if spec.attest.is_some() {
        if let Some(s) = sinks
            .iter()
            .find(|s| s.layer_form() == LayerForm::Uncompressed)
        {
            progress.note(&format!(
                "{}: a docker-archive has no place for the SBOM and provenance; the other outputs get them",
                s.describe()
            ));
        }
    }
    for s in sinks {
        s.put_blob(&record.config.digest, &record.config_bytes)
            .map_err(Job::sink_err(*s))?;
        crate::sink::put_referrers(*s, &record).map_err(Job::sink_err(*s))?;
        if s.layer_form() == LayerForm::Compressed {
            s.put_blob(&record.manifest.digest, &record.manifest_bytes)
                .map_err(Job::sink_err(*s))?;
        }
    }
    if crate::util::interrupt::interrupted() {
        return Err(AssembleError::Interrupted);
    }
    if record_image {
        for s in sinks {
            s.finish(&record).map_err(Job::sink_err(*s))?;
        }
    }
    stats.seconds = start.elapsed().as_secs_f64();
    Ok(AssembledImage {
        record,
        plan: layers,
        stats,
    })
}

/// The image record of `layers` built into `records`: config, manifest
/// and (unless `--no-sbom`) the referrers. Pure.
fn image_record(
    spec: &ImageSpec,
    closure: &Closure,
    layers: &[PlannedLayer],
    records: Vec<LayerRecord>,
) -> Result<ImageRecord, AssembleError> {
    let history: Vec<LayerHistory> = layers
        .iter()
        .map(|l| LayerHistory {
            created_by: match l.kind {
                LayerKind::RootLayer => {
                    format!("nixoci: root layer ({})", root_layer_parts(spec.root_layer))
                }
                _ => format!(
                    "nixoci: {}",
                    l.paths
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            },
            comment: Some(
                match l.kind {
                    LayerKind::Single => "store path",
                    LayerKind::Rest => "remaining store paths",
                    LayerKind::RootOutput => "root output",
                    LayerKind::RootLayer => "root layer",
                }
                .into(),
            ),
        })
        .collect();
    let diff_ids: Vec<Digest> = records.iter().map(|r| r.diff_id.clone()).collect();
    let config_bytes = config_json(
        &spec.platform,
        &spec.runtime,
        &spec.created,
        &diff_ids,
        &history,
    )?;
    let config = Blob {
        media_type: CONFIG_MEDIA_TYPE.into(),
        digest: Digest::of(&config_bytes),
        size: config_bytes.len() as u64,
    };
    let layer_blobs: Vec<Blob> = records.iter().map(|r| r.blob.clone()).collect();
    let manifest_bytes = manifest_json(&config, &layer_blobs, &spec.annotations);
    let manifest = Blob {
        media_type: MANIFEST_MEDIA_TYPE.into(),
        digest: Digest::of(&manifest_bytes),
        size: manifest_bytes.len() as u64,
    };
    let mut record = ImageRecord {
        reference: spec.reference.clone(),
        platform: spec.platform.clone(),
        config,
        config_bytes,
        manifest,
        manifest_bytes,
        layers: records,
        referrers: Vec::new(),
    };
    if let Some(facts) = &spec.attest {
        let layer_of = layers
            .iter()
            .zip(&record.layers)
            .flat_map(|(l, r)| l.paths.iter().map(move |p| (p, r)))
            .collect();
        let subject = crate::image::sbom::Subject {
            platform: &record.platform,
            manifest: &record.manifest,
            created: &spec.created,
            closure,
            layer_of,
            options: spec.shaping(),
        };
        record.referrers = crate::image::sbom::referrers(&subject, facts);
    }
    Ok(record)
}

fn root_layer_parts(o: RootLayerOptions) -> String {
    let mut parts = Vec::new();
    if o.links {
        parts.push("links into /");
    }
    if o.tmp {
        parts.push("/tmp");
    }
    if o.etc_passwd {
        parts.push("/etc/passwd, /etc/group");
    }
    parts.join(", ")
}

/// For timings in `--json`.
pub fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}
