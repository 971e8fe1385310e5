//! The one road to sinks: Nix (build and closure) → image assembly →
//! sinks, or a source → sinks. `nixoci build`, `load`, `push`, `pull` and
//! `run` all go through here.

pub mod assemble;
pub mod cache;
mod options;

pub use options::{source_date_epoch, ImageOptions};

use crate::nix::{Closure, FlakeRef, Nix, NixError, StorePath};
use crate::oci::reference::{ImageRef, ReferenceError};
use crate::oci::time::TimeError;
use crate::oci::Platform;
use crate::registry::auth::Credentials;
use crate::sink::{BlobSink, SinkContext, SinkError, SinkSpec};
use crate::source::LoadSource;
use assemble::{assemble, AssembleError, AssembledImage, Progress};
use cache::LayerCache;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Nix(#[from] NixError),
    #[error(transparent)]
    Flake(#[from] crate::nix::flake::FlakeError),
    #[error("{0} holds one platform (docker load reads no index): build one --system into it, or choose oci:, oci-archive:, containerd or registry:")]
    SeveralPlatforms(String),
    #[error("{0} is an image already (dockerTools); a multi-platform build assembles packages only: build it for one --system")]
    MultiPlatformImage(StorePath),
    #[error(transparent)]
    Assemble(#[from] AssembleError),
    #[error("{sink}: {source}")]
    Sink { sink: String, source: SinkError },
    #[error("no image name given and none can be made from the store path name '{0}': pass --tag NAME[:TAG]")]
    NoName(String),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Load(#[from] crate::source::LoadError),
    #[error(transparent)]
    Pull(#[from] crate::source::registry::PullError),
    #[error(transparent)]
    Export(#[from] crate::source::containerd::ExportError),
    #[error(transparent)]
    Time(#[from] TimeError),
    #[error(transparent)]
    Platform(#[from] crate::oci::platform::PlatformError),
    #[error("{0} is already an image; nixoci does not write it again as a docker-archive. Use it as it is, or choose containerd, oci: or oci-archive:")]
    ImageAsDockerArchive(StorePath),
    #[error(transparent)]
    Verify(#[from] crate::sink::oci_dir::FsckError),
    #[error("--compression zstd cannot go with a docker-archive output: docker-archive layers are plain tars, as `docker save` writes them, and `docker load` reads no zstd. Use gzip or none, or an oci:/oci-archive: output")]
    ZstdDockerArchive,
    #[error(transparent)]
    Config(#[from] crate::image::config::ConfigError),
    #[error(transparent)]
    Level(#[from] crate::image::compress::LevelError),
    #[error(transparent)]
    Layering(#[from] crate::image::layering::LayeringError),
    #[error("flake output {0} is none of the forms nixoci builds: a package (a directory), a docker-archive (a tar or gzip file, as dockerTools.buildImage and buildLayeredImage make) or an executable named stream-* (as streamLayeredImage makes)")]
    OutputForm(StorePath),
}

/// What to build from.
#[derive(Debug, Clone)]
pub enum Source {
    Flake(FlakeRef),
    StorePath(StorePath),
}

/// The result of the Nix side.
#[derive(Debug, Clone)]
pub struct NixOutput {
    pub closure: Closure,
    pub main_program: Option<String>,
    /// The flake built from (none for a store path given directly).
    pub flake: Option<FlakeRef>,
    pub derivation: Option<String>,
    pub meta: crate::nix::flake::Meta,
    pub nix_seconds: f64,
}

pub fn realise(nix: &Nix, source: &Source) -> Result<NixOutput, NixError> {
    let start = std::time::Instant::now();
    let out = match source {
        Source::Flake(f) => {
            let built = nix.build(f)?;
            NixOutput {
                closure: built.closure,
                main_program: built.main_program,
                flake: Some(f.clone()),
                derivation: Some(built.derivation),
                meta: built.meta,
                nix_seconds: 0.0,
            }
        }
        Source::StorePath(p) => NixOutput {
            closure: nix.closure(p)?,
            main_program: None,
            flake: None,
            derivation: None,
            meta: Default::default(),
            nix_seconds: 0.0,
        },
    };
    Ok(NixOutput {
        nix_seconds: start.elapsed().as_secs_f64(),
        ..out
    })
}

/// The default image name: the store path's name, made a valid repository
/// name (`/nix/store/<hash>-edge-app` → `edge-app:latest`).
pub fn default_reference(root: &StorePath) -> Result<ImageRef, PipelineError> {
    let mut name: String = root
        .name()
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.' | '_' | '-') => c,
            _ => '-',
        })
        .collect();
    while name.contains("..") {
        name = name.replace("..", ".");
    }
    let name = name
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    ImageRef::parse(&name).map_err(|_| PipelineError::NoName(root.name().into()))
}

/// An image built into its outputs.
pub struct Built {
    pub image: AssembledImage,
    /// What each output did (`bytes_written`, ...), in the order of the outputs.
    pub reports: Vec<serde_json::Value>,
}

/// Open every output; if one cannot be opened, those opened are aborted.
pub fn open_sinks(
    outputs: &[SinkSpec],
    ctx: &SinkContext,
) -> Result<Vec<Box<dyn BlobSink>>, PipelineError> {
    let mut sinks: Vec<Box<dyn BlobSink>> = Vec::new();
    for o in outputs {
        match o.open(ctx) {
            Ok(s) => sinks.push(s),
            Err(source) => {
                for s in &sinks {
                    s.abort();
                }
                return Err(PipelineError::Sink {
                    sink: o.to_string(),
                    source,
                });
            }
        }
    }
    Ok(sinks)
}

/// Open every sink, build into them. Sinks opened here are aborted on error.
pub fn build_into(
    spec: &assemble::ImageSpec,
    closure: &Closure,
    outputs: &[SinkSpec],
    ctx: &SinkContext,
    cache: &LayerCache,
    jobs: usize,
    progress: &dyn Progress,
) -> Result<Built, PipelineError> {
    let sinks = open_sinks(outputs, ctx)?;
    let refs: Vec<&dyn BlobSink> = sinks.iter().map(|s| s.as_ref()).collect();
    let image = assemble(spec, closure, &refs, cache, jobs, progress)?;
    let reports = sinks.iter().map(|s| s.report()).collect();
    Ok(Built { image, reports })
}

/// An existing image loaded into its outputs.
pub struct Loaded {
    pub record: crate::oci::ImageRecord,
    pub reports: Vec<serde_json::Value>,
}

/// Load `source` into every output (aborted on error). The image is named
/// `tag`, else by the source, else `fallback`.
pub fn load_into(
    source: &LoadSource,
    outputs: &[SinkSpec],
    ctx: &SinkContext,
    tag: Option<&ImageRef>,
    fallback: Option<&ImageRef>,
    want: Option<&Platform>,
) -> Result<Loaded, PipelineError> {
    with_sinks(outputs, ctx, |sinks| {
        Ok(crate::source::load(source, sinks, tag, fallback, want)?)
    })
}

/// Open every output, let `copy` fill them, and collect their reports. On
/// an error the outputs are aborted (again, where the source already did:
/// aborting twice is harmless).
fn with_sinks(
    outputs: &[SinkSpec],
    ctx: &SinkContext,
    copy: impl FnOnce(&[&dyn BlobSink]) -> Result<crate::oci::ImageRecord, PipelineError>,
) -> Result<Loaded, PipelineError> {
    let sinks = open_sinks(outputs, ctx)?;
    let refs: Vec<&dyn BlobSink> = sinks.iter().map(|s| s.as_ref()).collect();
    let record = copy(&refs).inspect_err(|_| refs.iter().for_each(|s| s.abort()))?;
    let reports = sinks.iter().map(|s| s.report()).collect();
    Ok(Loaded { record, reports })
}

/// What a flake output is: a package (a directory: built natively), or an
/// image Nix already made (a docker-archive, plain or gzip, as dockerTools'
/// buildImage and buildLayeredImage make; an OCI archive; or a `stream-`
/// script, as streamLayeredImage makes).
pub fn classify_output(root: &StorePath) -> Result<Option<LoadSource>, PipelineError> {
    let path = root.to_path_buf();
    if path.is_dir() {
        return Ok(None);
    }
    LoadSource::detect(&path)
        .map(Some)
        .map_err(|_| PipelineError::OutputForm(root.clone()))
}

/// What a build made: an image assembled from the closure, or an image
/// Nix had already made, loaded as it is.
pub enum Outcome {
    Built(Built),
    Loaded(Loaded),
}

impl Outcome {
    pub fn record(&self) -> &crate::oci::ImageRecord {
        match self {
            Outcome::Built(b) => &b.image.record,
            Outcome::Loaded(l) => &l.record,
        }
    }

    pub fn reports(&self) -> &[serde_json::Value] {
        match self {
            Outcome::Built(b) => &b.reports,
            Outcome::Loaded(l) => &l.reports,
        }
    }
}

/// The one way a realised flake output or store path becomes an image in
/// `outputs`, for `nixoci build` and `nixoci run` alike: a package is
/// assembled natively with `opts`; an image Nix already made (dockerTools)
/// is loaded as it is (then `opts` shapes nothing but the name, and the
/// options that would have been ignored are named through `progress`).
#[allow(clippy::too_many_arguments)]
pub fn build(
    built: &NixOutput,
    opts: &ImageOptions,
    outputs: &[SinkSpec],
    ctx: &SinkContext,
    cache: &LayerCache,
    jobs: usize,
    progress: &dyn Progress,
) -> Result<Outcome, PipelineError> {
    let closure = &built.closure;
    opts.check(outputs)?;
    if let Some(image) = classify_output(&closure.root)? {
        progress.note(&format!(
            "{} is an image already ({}); loading it",
            closure.root,
            match image {
                LoadSource::Stream(_) => "a stream- script",
                LoadSource::OciArchive(_) => "an OCI archive",
                _ => "a docker-archive",
            }
        ));
        if outputs.iter().any(SinkSpec::is_docker_archive) {
            return Err(PipelineError::ImageAsDockerArchive(closure.root.clone()));
        }
        let ignored = opts.shaping_flags();
        if !ignored.is_empty() {
            progress.warn(&format!(
                "warning: {} is an image already; its own config and layers are kept, so {} {} ignored",
                closure.root,
                ignored.join(", "),
                if ignored.len() == 1 { "is" } else { "are" }
            ));
        }
        if opts.sbom {
            progress.note(&format!(
                "{} gets no SBOM or provenance: its content is not a closure nixoci packed",
                closure.root
            ));
        }
        let fallback = default_reference(&closure.root).ok();
        let loaded = load_into(
            &image,
            outputs,
            ctx,
            opts.tag.as_ref(),
            fallback.as_ref(),
            None,
        )?;
        return Ok(Outcome::Loaded(loaded));
    }
    let spec = image_spec(built, opts, outputs, ctx)?;
    let b = build_into(&spec, closure, outputs, ctx, cache, jobs, progress)?;
    Ok(Outcome::Built(b))
}

/// The spec of the image of `built`, with what Nix said about it for the
/// SBOM and provenance (unless `--no-sbom`).
fn image_spec(
    built: &NixOutput,
    opts: &ImageOptions,
    outputs: &[SinkSpec],
    ctx: &SinkContext,
) -> Result<assemble::ImageSpec, PipelineError> {
    let closure = &built.closure;
    let mut spec = opts.spec(closure, built.main_program.as_deref(), outputs, ctx.mtime)?;
    if opts.sbom {
        let flake = match &built.flake {
            Some(f) => Some(crate::nix::flake::source_of(f)?),
            None => None,
        };
        spec.attest = Some(crate::image::sbom::BuildFacts {
            meta: built.meta.clone(),
            flake,
            derivation: built.derivation.clone(),
            system: opts
                .system
                .clone()
                .unwrap_or_else(crate::oci::platform::host_system),
        });
    }
    Ok(spec)
}

/// A multi-platform image: one image per system and the index over them.
pub struct MultiBuilt {
    pub index: crate::oci::IndexRecord,
    pub images: Vec<AssembledImage>,
    pub reports: Vec<serde_json::Value>,
}

/// Build one image per realised output (`builts[i]` built for
/// `systems[i]`) into every output, each as a single-platform build of
/// that system would make it, and record the OCI image index over them
/// under the one name. Layers that are the same bytes on several
/// platforms are stored once. Every output must hold an index (not a
/// docker-archive) and every output must be a package.
#[allow(clippy::too_many_arguments)]
pub fn build_multi(
    builts: &[NixOutput],
    systems: &[String],
    opts: &ImageOptions,
    outputs: &[SinkSpec],
    ctx: &SinkContext,
    cache: &LayerCache,
    jobs: usize,
    progress: &dyn Progress,
) -> Result<MultiBuilt, PipelineError> {
    opts.check(outputs)?;
    if let Some(o) = outputs.iter().find(|o| o.is_docker_archive()) {
        return Err(PipelineError::SeveralPlatforms(o.to_string()));
    }
    for b in builts {
        if classify_output(&b.closure.root)?.is_some() {
            return Err(PipelineError::MultiPlatformImage(b.closure.root.clone()));
        }
    }
    let sinks = open_sinks(outputs, ctx)?;
    let refs: Vec<&dyn BlobSink> = sinks.iter().map(|s| s.as_ref()).collect();
    let result = (|| {
        let mut images = Vec::new();
        for (built, system) in builts.iter().zip(systems) {
            let o = ImageOptions {
                system: Some(system.clone()),
                ..opts.clone()
            };
            let spec = image_spec(built, &o, outputs, ctx)?;
            for s in &refs {
                s.begin_image(&spec.platform);
            }
            images.push(assemble::assemble_unrecorded(
                &spec,
                &built.closure,
                &refs,
                cache,
                jobs,
                progress,
            )?);
        }
        let entries: Vec<(&crate::oci::Blob, &crate::oci::Platform)> = images
            .iter()
            .map(|i| (&i.record.manifest, &i.record.platform))
            .collect();
        let index_bytes = crate::image::manifest::index_json(&entries);
        let index = crate::oci::IndexRecord {
            reference: images[0].record.reference.clone(),
            index: crate::oci::Blob {
                media_type: crate::oci::blob::INDEX_MEDIA_TYPE.into(),
                digest: crate::oci::Digest::of(&index_bytes),
                size: index_bytes.len() as u64,
            },
            index_bytes,
            images: images.iter().map(|i| i.record.clone()).collect(),
        };
        for s in &refs {
            s.finish_index(&index)
                .map_err(|source| PipelineError::Sink {
                    sink: s.describe(),
                    source,
                })?;
        }
        Ok::<_, PipelineError>((index, images))
    })();
    match result {
        Ok((index, images)) => Ok(MultiBuilt {
            index,
            images,
            reports: sinks.iter().map(|s| s.report()).collect(),
        }),
        Err(e) => {
            for s in &refs {
                s.abort();
            }
            Err(e)
        }
    }
}

/// Where an existing image is copied from.
pub enum ImageSource {
    /// An OCI layout, OCI archive, docker-archive or stream script.
    Load(LoadSource),
    /// An image of the containerd namespace.
    Containerd(ImageRef),
    /// A registry, with credentials if any (else the Docker config's).
    Registry(ImageRef, Option<Credentials>),
}

/// Copy an existing image into `outputs` (aborted on error). A loaded
/// image is named `tag`, else by the source, else `fallback`.
pub fn copy(
    source: &ImageSource,
    outputs: &[SinkSpec],
    ctx: &SinkContext,
    tag: Option<&ImageRef>,
    fallback: Option<&ImageRef>,
    want: Option<&Platform>,
) -> Result<Loaded, PipelineError> {
    if want.is_none() {
        if let ImageSource::Load(l) = source {
            if let Some(top) = crate::source::layout::top_index(l, tag)? {
                return copy_index(source, top, outputs, ctx, tag, fallback);
            }
        }
    }
    with_sinks(outputs, ctx, |sinks| {
        copy_into(source, sinks, ctx, tag, fallback, want)
    })
}

/// Copy an image index (several platforms) whole: every platform's image,
/// then the index itself (the same bytes, so the same digest) under the
/// name.
fn copy_index(
    source: &ImageSource,
    top: crate::source::layout::TopIndex,
    outputs: &[SinkSpec],
    ctx: &SinkContext,
    tag: Option<&ImageRef>,
    fallback: Option<&ImageRef>,
) -> Result<Loaded, PipelineError> {
    let crate::source::layout::TopIndex {
        name,
        index,
        bytes: index_bytes,
        platforms,
    } = top;
    let reference = tag
        .cloned()
        .or(name)
        .or(fallback.cloned())
        .ok_or(PipelineError::NoName(index.digest.to_string()))?;
    let sinks = open_sinks(outputs, ctx)?;
    let refs: Vec<&dyn BlobSink> = sinks.iter().map(|s| s.as_ref()).collect();
    let result = (|| {
        let mut images = Vec::new();
        for p in &platforms {
            for s in &refs {
                s.begin_image(p);
            }
            let unrecorded: Vec<crate::sink::Unrecorded> =
                refs.iter().map(|s| crate::sink::Unrecorded(*s)).collect();
            let views: Vec<&dyn BlobSink> = unrecorded.iter().map(|s| s as &dyn BlobSink).collect();
            images.push(copy_into(
                source,
                &views,
                ctx,
                Some(&reference),
                None,
                Some(p),
            )?);
        }
        let record = crate::oci::IndexRecord {
            reference: reference.clone(),
            index,
            index_bytes,
            images,
        };
        for s in &refs {
            s.finish_index(&record)
                .map_err(|source| PipelineError::Sink {
                    sink: s.describe(),
                    source,
                })?;
        }
        Ok::<_, PipelineError>(record)
    })();
    match result {
        Ok(record) => Ok(Loaded {
            record: record.images[0].clone(),
            reports: sinks.iter().map(|s| s.report()).collect(),
        }),
        Err(e) => {
            for s in &refs {
                s.abort();
            }
            Err(e)
        }
    }
}

/// Read `source` into `sinks` (which it aborts on its own errors).
fn copy_into(
    source: &ImageSource,
    sinks: &[&dyn BlobSink],
    ctx: &SinkContext,
    tag: Option<&ImageRef>,
    fallback: Option<&ImageRef>,
    want: Option<&Platform>,
) -> Result<crate::oci::ImageRecord, PipelineError> {
    Ok(match source {
        ImageSource::Load(l) => crate::source::load(l, sinks, tag, fallback, want)?,
        ImageSource::Containerd(name) => {
            let (rt, client) = containerd_of(ctx)?;
            crate::source::containerd::export(&rt, &client, name, sinks, want)?
        }
        ImageSource::Registry(reference, creds) => {
            let client = registry_of(reference, ctx, creds)?;
            crate::source::registry::pull(reference, &client, sinks, want)?
        }
    })
}

/// The runtime and a client of the context's containerd (a source).
fn containerd_of(
    ctx: &SinkContext,
) -> Result<(tokio::runtime::Handle, crate::containerd::Client), PipelineError> {
    let containerd = |source| PipelineError::Sink {
        sink: "containerd".into(),
        source,
    };
    let client = ctx.containerd(None).map_err(containerd)?;
    let rt = ctx.runtime().map_err(containerd)?;
    Ok((rt, client))
}

/// A registry client to read `reference` with `creds` (else the Docker
/// config's).
fn registry_of(
    reference: &ImageRef,
    ctx: &SinkContext,
    creds: &Option<Credentials>,
) -> Result<crate::registry::Client, PipelineError> {
    Ok(
        crate::source::registry::client(reference, &ctx.registry, creds.clone())
            .map_err(crate::source::registry::PullError::from)?,
    )
}

/// What `nixoci verify` found: every blob read whole and matching the
/// digest that names it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verified {
    pub images: usize,
    pub blobs: u64,
    pub bytes: u64,
}

/// Re-hash every blob of an image (of every image, for an OCI layout) and
/// check each against the digest that names it. An OCI layout lists every
/// problem it has; other sources stop at the first.
pub fn verify(source: &ImageSource, ctx: &SinkContext) -> Result<Verified, PipelineError> {
    if let ImageSource::Load(LoadSource::Oci(dir)) = source {
        let s = crate::sink::oci_dir::fsck(dir)?;
        return Ok(Verified {
            images: s.manifests,
            blobs: s.blobs as u64,
            bytes: s.bytes,
        });
    }
    let sink = crate::sink::discard::Discard::default();
    let sinks: [&dyn BlobSink; 1] = [&sink];
    // Only for loading: a verified image is named nowhere.
    let name = ImageRef::parse("nixoci-verify")?;
    copy_into(source, &sinks, ctx, None, Some(&name), None)?;
    let (blobs, bytes) = sink.counted();
    Ok(Verified {
        images: 1,
        blobs,
        bytes,
    })
}

/// The manifest of the image `source` names (`tag` picks one in a layout
/// with several) and the artifacts attached to it (SBOM, provenance),
/// with no layer read.
pub fn referrers(
    source: &ImageSource,
    ctx: &SinkContext,
    tag: Option<&ImageRef>,
    want: Option<&Platform>,
) -> Result<(crate::oci::Digest, Vec<crate::oci::Referrer>), PipelineError> {
    Ok(match source {
        ImageSource::Load(l) => {
            let (desc, refs) = crate::source::layout::referrers(l, tag, want)?;
            (desc.digest, refs)
        }
        ImageSource::Containerd(name) => {
            let (rt, client) = containerd_of(ctx)?;
            crate::source::containerd::referrers(&rt, &client, name, want)?
        }
        ImageSource::Registry(reference, creds) => {
            let client = registry_of(reference, ctx, creds)?;
            crate::source::registry::referrers(reference, &client, want)?
        }
    })
}

/// An image made for a service (`NixBuildSpec`), in containerd.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServiceImage {
    pub reference: String,
    pub store_path: String,
    pub manifest: String,
    /// How it was made: `built` (native layers), `loaded` (a dockerTools image).
    pub how: &'static str,
    /// Layers read from the store (0: every layer came from the cache).
    pub layers_built: usize,
    pub layers: usize,
    pub unpack: Option<crate::sink::containerd::unpack::UnpackStats>,
    pub seconds: f64,
}

/// Build a flake output into containerd (namespace of `ctx`) as
/// `reference`, through [`build`] with the defaults of `nixoci build`, so
/// both give the same image for the same output and environment.
pub fn build_service_image(
    nix: &Nix,
    flake: &FlakeRef,
    reference: &ImageRef,
    ctx: &SinkContext,
    cache: &LayerCache,
    jobs: usize,
) -> Result<ServiceImage, PipelineError> {
    let started = std::time::Instant::now();
    let built = realise(nix, &Source::Flake(flake.clone()))?;
    let opts = ImageOptions {
        tag: Some(reference.clone()),
        system: nix.system.clone(),
        ..Default::default()
    };
    let outputs = [SinkSpec::Containerd(None)];
    let outcome = build(
        &built,
        &opts,
        &outputs,
        ctx,
        cache,
        jobs,
        &assemble::NoProgress,
    )?;
    let record = outcome.record();
    let (how, layers_built) = match &outcome {
        Outcome::Built(b) => ("built", b.image.stats.layers_built),
        Outcome::Loaded(l) => ("loaded", l.record.layers.len()),
    };
    Ok(ServiceImage {
        reference: reference.to_string(),
        store_path: built.closure.root.to_string(),
        manifest: record.manifest.digest.to_string(),
        how,
        layers_built,
        layers: record.layers.len(),
        unpack: unpack_stats(outcome.reports()),
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn unpack_stats(
    reports: &[serde_json::Value],
) -> Option<crate::sink::containerd::unpack::UnpackStats> {
    let u = reports.first()?.get("unpack")?;
    Some(crate::sink::containerd::unpack::UnpackStats {
        applied: u.get("applied")?.as_u64()? as usize,
        filled: u.get("filled")?.as_u64()? as usize,
        existing: u.get("existing")?.as_u64()? as usize,
        files_linked: u.get("files_linked").and_then(|v| v.as_u64()).unwrap_or(0) as usize,
        files_copied: u.get("files_copied").and_then(|v| v.as_u64()).unwrap_or(0) as usize,
        files_cloned: u.get("files_cloned").and_then(|v| v.as_u64()).unwrap_or(0) as usize,
        staged: u.get("staged").and_then(|v| v.as_u64()).unwrap_or(0) as usize,
        extracted: u.get("extracted").and_then(|v| v.as_u64()).unwrap_or(0) as usize,
        snapshot_lookups: u
            .get("snapshot_lookups")
            .and_then(|v| v.as_u64())
            .unwrap_or(0) as usize,
    })
}
