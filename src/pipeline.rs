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
    let (root, main_program) = match source {
        Source::Flake(f) => {
            let built = nix.build(f)?;
            (built.out_path, built.main_program)
        }
        Source::StorePath(p) => (p.clone(), None),
    };
    let closure = nix.closure(&root)?;
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
