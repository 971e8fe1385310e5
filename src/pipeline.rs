//! The build pipeline: Nix (build and closure) → image assembly → sinks.
//! Used by `nixoci build` and, later, by plan execution.

use crate::image::assemble::{assemble, AssembleError, AssembledImage, ImageSpec, Progress};
use crate::image::cache::LayerCache;
use crate::image::reference::{ImageRef, ReferenceError};
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
    let refs: Vec<&dyn BlobSink> = sinks.iter().map(|s| s.as_ref()).collect();
    let image = assemble(spec, closure, &refs, cache, jobs, progress)?;
    let reports = sinks.iter().map(|s| s.report()).collect();
    Ok(Built { image, reports })
}
