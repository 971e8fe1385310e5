//! What shapes an image beyond its closure, with the defaults every road
//! to an image shares (`nixoci build`, `nixoci run`'s `NixBuildSpec`).

use super::assemble::ImageSpec;
use super::{default_reference, PipelineError};
use crate::image::compress::Compression;
use crate::image::config::RuntimeConfig;
use crate::image::layering::DEFAULT_MAX_LAYERS;
use crate::image::rootfs::RootLayerOptions;
use crate::nix::Closure;
use crate::oci::platform::{host_system, Platform};
use crate::oci::time::{parse_epoch, rfc3339, TimeError};
use crate::oci::ImageRef;
use crate::sink::SinkSpec;
use std::collections::BTreeMap;

/// The layer mtime and default creation time: `$SOURCE_DATE_EPOCH` when set
/// (checked to be a time image configs can carry), else 1.
pub fn source_date_epoch() -> Result<u64, TimeError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => parse_epoch("SOURCE_DATE_EPOCH", &v),
        _ => Ok(1),
    }
}

/// Everything the user may set about an image built from a closure.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// The image name; default: the root store path's name.
    pub tag: Option<ImageRef>,
    /// The Nix system built for (the image's platform); default: this host's.
    pub system: Option<String>,
    /// Entrypoint, cmd, env and the rest, as given (defaults filled in by
    /// [`ImageOptions::spec`]).
    pub runtime: RuntimeConfig,
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339; default: the layer mtime.
    pub created: Option<String>,
    pub compression: Option<Compression>,
    pub compression_level: Option<i32>,
    pub max_layers: usize,
    pub root_layer: RootLayerOptions,
    /// Attach an SBOM and provenance (default; `--no-sbom` turns it off).
    pub sbom: bool,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            tag: None,
            system: None,
            runtime: RuntimeConfig::default(),
            annotations: BTreeMap::new(),
            created: None,
            compression: None,
            compression_level: None,
            max_layers: DEFAULT_MAX_LAYERS,
            root_layer: RootLayerOptions::default(),
            sbom: true,
        }
    }
}

impl ImageOptions {
    /// The flags given that shape an assembled image (ignored when the
    /// output is an image already).
    pub fn shaping_flags(&self) -> Vec<&'static str> {
        let r = &self.runtime;
        [
            ("--entrypoint", r.entrypoint.is_some()),
            ("--cmd", r.cmd.is_some()),
            ("--env", !r.env.is_empty()),
            ("--workdir", r.workdir.is_some()),
            ("--user", r.user.is_some()),
            ("--expose", !r.exposed_ports.is_empty()),
            ("--label", !r.labels.is_empty()),
            ("--annotation", !self.annotations.is_empty()),
            ("--created", self.created.is_some()),
            (
                "--compression",
                self.compression.is_some() || self.compression_level.is_some(),
            ),
            ("--max-layers", self.max_layers != DEFAULT_MAX_LAYERS),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect()
    }

    /// Everything about these options that can be wrong for `outputs`,
    /// checked before anything runs: zstd with a docker-archive, the
    /// compression level, `--max-layers`, the system.
    pub fn check(&self, outputs: &[SinkSpec]) -> Result<(), PipelineError> {
        if self.compression == Some(Compression::Zstd)
            && outputs.iter().any(SinkSpec::is_docker_archive)
        {
            return Err(PipelineError::ZstdDockerArchive);
        }
        let (compression, level) =
            crate::sink::layer_compression(outputs, self.compression, self.compression_level);
        compression.check_level(level)?;
        crate::image::layering::check_max_layers(self.max_layers)?;
        self.platform()?;
        Ok(())
    }

    /// The platform of the image (from `system`, else this host's).
    pub fn platform(&self) -> Result<Platform, PipelineError> {
        let system = self.system.clone().unwrap_or_else(host_system);
        Ok(Platform::from_nix_system(&system)?)
    }

    /// Everything that decides the image's bytes, for `closure` going to
    /// `outputs` with layers dated `mtime`. The entrypoint defaults to the
    /// output's `meta.mainProgram`; `PATH=/bin` is set when the root links
    /// are made and no `PATH` is given.
    pub fn spec(
        &self,
        closure: &Closure,
        main_program: Option<&str>,
        outputs: &[SinkSpec],
        mtime: u64,
    ) -> Result<ImageSpec, PipelineError> {
        self.check(outputs)?;
        let (compression, level) =
            crate::sink::layer_compression(outputs, self.compression, self.compression_level);
        let reference = match &self.tag {
            Some(t) => t.clone(),
            None => default_reference(&closure.root)?,
        };
        let mut runtime = self.runtime.clone();
        if runtime.entrypoint.is_none() {
            if let Some(main) = main_program {
                runtime.entrypoint = Some(vec![format!("{}/bin/{main}", closure.root)]);
            }
        }
        if self.root_layer.links && !runtime.env.iter().any(|(k, _)| k == "PATH") {
            runtime.env.insert(0, ("PATH".into(), "/bin".into()));
        }
        Ok(ImageSpec {
            reference,
            platform: self.platform()?,
            runtime,
            created: self.created.clone().unwrap_or_else(|| rfc3339(mtime)),
            mtime,
            compression,
            level,
            max_layers: self.max_layers,
            root_layer: self.root_layer,
            annotations: self.annotations.clone(),
            attest: None,
        })
    }
}
