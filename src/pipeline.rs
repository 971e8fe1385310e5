//! The build pipeline: Nix (build and closure) → image assembly → sinks.
//! Used by `nixoci build` and, later, by plan execution.

use crate::image::assemble::{assemble, AssembleError, AssembledImage, ImageSpec, Progress};
use crate::image::cache::LayerCache;
use crate::image::reference::{ImageRef, ReferenceError};
use crate::load::LoadSource;
use crate::nix::{Closure, FlakeRef, Nix, NixError, StorePath};
use crate::sink::{BlobSink, SinkContext, SinkError, SinkSpec};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Nix(#[from] NixError),
    #[error(transparent)]
    Assemble(#[from] AssembleError),
    #[error("{sink}: {source}")]
    Sink { sink: String, source: SinkError },
    #[error("no image name given and none can be made from the store path name '{0}': pass --tag NAME[:TAG]")]
    NoName(String),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Load(#[from] crate::load::LoadError),
    #[error(transparent)]
    Config(#[from] crate::image::config::ConfigError),
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
    pub nix_seconds: f64,
}

pub fn realise(nix: &Nix, source: &Source) -> Result<NixOutput, NixError> {
    let start = std::time::Instant::now();
    let (closure, main_program) = match source {
        Source::Flake(f) => {
            let built = nix.build(f)?;
            (built.closure, built.main_program)
        }
        Source::StorePath(p) => (nix.closure(p)?, None),
    };
    Ok(NixOutput {
        closure,
        main_program,
        nix_seconds: start.elapsed().as_secs_f64(),
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
    spec: &ImageSpec,
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
    pub record: crate::sink::ImageRecord,
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
) -> Result<Loaded, PipelineError> {
    let sinks = open_sinks(outputs, ctx)?;
    let refs: Vec<&dyn BlobSink> = sinks.iter().map(|s| s.as_ref()).collect();
    let record = crate::load::load(source, &refs, tag, fallback)?;
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

/// The Nix system of this machine.
pub fn host_system() -> String {
    let arch = match std::env::consts::ARCH {
        "x86" => "i686",
        "arm" => "armv7l",
        "powerpc64" => "powerpc64le",
        a => a,
    };
    format!("{arch}-{}", std::env::consts::OS)
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
    pub unpack: Option<crate::containerd::unpack::UnpackStats>,
    pub seconds: f64,
}

/// Build a flake output into containerd (namespace of `ctx`) as `reference`,
/// with the defaults of `nixoci build`: a package is assembled natively, an
/// image Nix made (dockerTools) is loaded as it is.
pub fn build_service_image(
    nix: &Nix,
    flake: &FlakeRef,
    reference: &ImageRef,
    ctx: &SinkContext,
    cache: &LayerCache,
    jobs: usize,
) -> Result<ServiceImage, PipelineError> {
    use crate::image::config::{rfc3339, Platform, RuntimeConfig};
    let started = std::time::Instant::now();
    let built = realise(nix, &Source::Flake(flake.clone()))?;
    let closure = &built.closure;
    let outputs = [SinkSpec::Containerd(None)];
    if let Some(image) = classify_output(&closure.root)? {
        let loaded = load_into(&image, &outputs, ctx, Some(reference), None)?;
        return Ok(ServiceImage {
            reference: reference.to_string(),
            store_path: closure.root.to_string(),
            manifest: loaded.record.manifest.digest.to_string(),
            how: "loaded",
            layers_built: loaded.record.layers.len(),
            layers: loaded.record.layers.len(),
            unpack: unpack_stats(&loaded.reports),
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    let mut runtime = RuntimeConfig::default();
    if let Some(main) = &built.main_program {
        runtime.entrypoint = Some(vec![format!("{}/bin/{main}", closure.root)]);
    }
    runtime.env.push(("PATH".into(), "/bin".into()));
    let system = nix.system.clone().unwrap_or_else(host_system);
    let platform = Platform::from_nix_system(&system)?;
    let (compression, level) = crate::sink::layer_compression(&outputs, None, None);
    let spec = ImageSpec {
        reference: reference.clone(),
        platform,
        runtime,
        created: rfc3339(ctx.mtime),
        mtime: ctx.mtime,
        compression,
        level,
        max_layers: crate::image::layering::DEFAULT_MAX_LAYERS,
        root_layer: Default::default(),
        annotations: Default::default(),
    };
    let b = build_into(
        &spec,
        closure,
        &outputs,
        ctx,
        cache,
        jobs,
        &crate::image::assemble::NoProgress,
    )?;
    Ok(ServiceImage {
        reference: reference.to_string(),
        store_path: closure.root.to_string(),
        manifest: b.image.record.manifest.digest.to_string(),
        how: "built",
        layers_built: b.image.stats.layers_built,
        layers: b.image.record.layers.len(),
        unpack: unpack_stats(&b.reports),
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn unpack_stats(reports: &[serde_json::Value]) -> Option<crate::containerd::unpack::UnpackStats> {
    let u = reports.first()?.get("unpack")?;
    Some(crate::containerd::unpack::UnpackStats {
        applied: u.get("applied")?.as_u64()? as usize,
        filled: u.get("filled")?.as_u64()? as usize,
        existing: u.get("existing")?.as_u64()? as usize,
    })
}
