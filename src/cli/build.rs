use super::{parse_outputs, print_notes, usage};
use anyhow::Context;
use clap::Args;
use nixoci::image::config::{parse_command, parse_expose, parse_key_value, RuntimeConfig};
use nixoci::image::layering::DEFAULT_MAX_LAYERS;
use nixoci::image::rootfs::RootLayerOptions;
use nixoci::image::Compression;
use nixoci::nix::{FlakeRef, Nix, StorePath};
use nixoci::oci::time::parse_created;
use nixoci::oci::{ImageRef, LayerRecord, Platform};
use nixoci::pipeline::assemble::{secs, Progress};
use nixoci::pipeline::cache::{default_cache_dir, LayerCache};
use nixoci::pipeline::{
    build, realise, source_date_epoch, ImageOptions, NixOutput, Outcome, PipelineError, Source,
};
use nixoci::sink::SinkSpec;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Instant;

#[derive(Args)]
#[command(after_help = "Examples:
  nixoci build ./app#web --tag web:1
  nixoci build . --output oci:./out --output docker-archive:web.tar
  nixoci build --store-path /nix/store/...-web --compression zstd")]
pub struct BuildArgs {
    /// Flake reference: DIR#OUTPUT, DIR (its default package) or .#OUTPUT.
    #[arg(
        value_name = "REF",
        required_unless_present = "store_path",
        conflicts_with = "store_path"
    )]
    flake: Option<String>,
    /// Build from an already built store path, without calling `nix build`.
    #[arg(long, value_name = "PATH")]
    store_path: Option<String>,
    /// Where to write the image; may repeat: oci:DIR, oci-archive:FILE, docker-archive:FILE.
    #[arg(
        short,
        long = "output",
        value_name = "SINK",
        default_value = "oci:./nixoci-out"
    )]
    outputs: Vec<String>,
    /// Image name, NAME[:TAG]; defaults to the output's store path name.
    #[arg(short, long)]
    tag: Option<String>,
    /// Nix system to build for (default: this machine's). Repeat it for a
    /// multi-platform image: one image per system and an OCI index over
    /// them under the tag.
    #[arg(long = "system", value_name = "SYSTEM")]
    systems: Vec<String>,
    /// The same in Docker's words, comma-separated or repeated:
    /// linux/amd64,linux/arm64 (each becomes its Nix system).
    #[arg(long = "platform", value_name = "PLATFORMS", value_delimiter = ',')]
    platforms: Vec<String>,
    /// With containerd outputs, the platforms of a multi-platform image to
    /// unpack (default: this machine's); may repeat.
    #[arg(long = "unpack-platform", value_name = "PLATFORM")]
    unpack_platforms: Vec<String>,
    /// Extra Nix option, KEY=VALUE; may repeat.
    #[arg(long = "nix-option", value_name = "KEY=VALUE")]
    nix_options: Vec<String>,
    /// Layer compression [default: gzip; none when every output is
    /// containerd or a docker-archive]. docker-archive layers are always
    /// plain tars.
    #[arg(long, value_enum)]
    compression: Option<Compression>,
    /// Compression level (gzip 0-9, default 6; zstd 1-19, default 3; 1 when
    /// every output is containerd or a docker-archive).
    #[arg(long)]
    compression_level: Option<i32>,
    /// Upper bound on the number of layers (4..=125).
    #[arg(long, default_value_t = DEFAULT_MAX_LAYERS)]
    max_layers: usize,
    /// Entrypoint: a JSON array or a whitespace-separated string.
    /// Default: the flake output's meta.mainProgram, if set.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Cmd: a JSON array or a whitespace-separated string.
    #[arg(long)]
    cmd: Option<String>,
    /// Environment variable, KEY=VALUE; may repeat.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    #[arg(long)]
    workdir: Option<String>,
    /// User (and group) to run as: uid[:gid] or name.
    #[arg(long)]
    user: Option<String>,
    /// Exposed port, PORT[/tcp|udp|sctp]; may repeat.
    #[arg(long = "expose", value_name = "PORT")]
    expose: Vec<String>,
    /// Config label, KEY=VALUE; may repeat.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Manifest annotation, KEY=VALUE; may repeat.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    /// Creation time: 'now', epoch seconds or RFC 3339. Default: the layer mtime.
    #[arg(long)]
    created: Option<String>,
    /// Attach no SBOM (CycloneDX, SPDX) or provenance to the image.
    #[arg(long)]
    no_sbom: bool,
    /// Do not link the output's top-level entries into /.
    #[arg(long)]
    no_root_links: bool,
    /// Do not create /tmp.
    #[arg(long)]
    no_tmp: bool,
    /// Do not write /etc/passwd and /etc/group.
    #[arg(long)]
    no_etc_passwd: bool,
    /// Do not use the layer and closure caches (every layer is read again,
    /// every closure asked of Nix).
    #[arg(long)]
    no_cache: bool,
    /// Layers built at once (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Print one JSON document with digests, sizes and timings.
    #[arg(long)]
    json: bool,
}

/// Plain progress lines (not on a terminal, or with -v).
struct Lines {
    on: bool,
    /// Notes are for people (not with --json).
    human: bool,
}

/// A progress bar on a terminal: bytes of the closure, layers done.
struct Bar {
    bar: indicatif::ProgressBar,
    total_layers: std::sync::atomic::AtomicUsize,
    done: std::sync::atomic::AtomicUsize,
    weights: std::sync::Mutex<BTreeMap<usize, u64>>,
}

impl Bar {
    fn new(total_bytes: u64) -> Self {
        let bar = indicatif::ProgressBar::new(total_bytes);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {msg}")
                .expect("a valid template"),
        );
        Bar {
            bar,
            total_layers: Default::default(),
            done: Default::default(),
            weights: Default::default(),
        }
    }
}

impl Progress for Bar {
    fn note(&self, message: &str) {
        self.bar.suspend(|| eprintln!("{message}"));
    }
    fn warn(&self, message: &str) {
        self.note(message);
    }
    fn layer_started(&self, index: usize, total: usize, _what: &str, bytes: u64) {
        use std::sync::atomic::Ordering;
        self.total_layers.store(total, Ordering::Relaxed);
        self.weights.lock().unwrap().insert(index, bytes);
    }
    fn bytes(&self, n: u64) {
        self.bar.inc(n);
    }
    fn layer_done(&self, index: usize, _r: &LayerRecord, cached: bool) {
        use std::sync::atomic::Ordering;
        if cached {
            // Not read: count its bytes as done.
            let w = self
                .weights
                .lock()
                .unwrap()
                .get(&index)
                .copied()
                .unwrap_or(0);
            self.bar.inc(w);
        }
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let total = self.total_layers.load(Ordering::Relaxed);
        self.bar.set_message(format!("layers {done}/{total}"));
    }
}

impl Progress for Lines {
    fn note(&self, message: &str) {
        if self.human {
            eprintln!("{message}");
        }
    }
    fn warn(&self, message: &str) {
        eprintln!("{message}");
    }
    fn layer_done(&self, index: usize, r: &LayerRecord, cached: bool) {
        if self.on {
            let how = if cached { "cached" } else { "built" };
            eprintln!(
                "layer {:>3}: {} {} ({} bytes, {} compressed)",
                index + 1,
                how,
                r.blob.digest,
                r.uncompressed_size,
                r.blob.size
            );
        }
    }
}

/// The systems asked for (`--system`, `--platform`), in order, each once.
fn systems(a: &BuildArgs) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for s in &a.systems {
        Platform::from_nix_system(s).map_err(usage)?;
        out.push(s.clone());
    }
    for p in &a.platforms {
        out.push(Platform::parse(p.trim()).map_err(usage)?.nix_system());
    }
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|s| seen.insert(s.clone()));
    Ok(out)
}

pub fn run(a: BuildArgs, verbose: u8, containerd: &super::ContainerdArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    // Validate everything the user gave before running anything.
    let outputs = parse_outputs(&a.outputs)?;
    let systems = systems(&a)?;
    let unpack_platforms = a
        .unpack_platforms
        .iter()
        .map(|p| Platform::parse(p).map_err(usage))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if systems.len() > 1 {
        if let Some(o) = outputs.iter().find(|o| o.is_docker_archive()) {
            return Err(usage(nixoci::pipeline::PipelineError::SeveralPlatforms(
                o.to_string(),
            )));
        }
        if a.store_path.is_some() {
            return Err(usage(
                "--store-path gives one closure, for one system; a multi-platform build needs a flake reference",
            ));
        }
    }
    nixoci::containerd::check_namespace(&containerd.namespace).map_err(usage)?;
    let opts = image_options(&a).map_err(usage)?;
    opts.check(&outputs).map_err(usage)?;
    let mtime = source_date_epoch().map_err(usage)?;
    let mut nix = Nix {
        system: systems.first().cloned(),
        closure_cache: if a.no_cache {
            Default::default()
        } else {
            nixoci::nix::ClosureCache::new(default_cache_dir())
        },
        ..Default::default()
    };
    for o in &a.nix_options {
        nix.options
            .push(parse_key_value("--nix-option", o).map_err(usage)?);
    }
    let source = match (&a.flake, &a.store_path) {
        (_, Some(p)) => Source::StorePath(StorePath::parse(p).map_err(usage)?),
        (Some(f), None) => Source::Flake(FlakeRef::parse(f).map_err(usage)?),
        (None, None) => return Err(usage("give a flake reference or --store-path")),
    };
    let human = !a.json;
    if human {
        match &source {
            Source::Flake(f) => eprintln!("building {} with nix", f.installable),
            Source::StorePath(p) => eprintln!("reading the closure of {p}"),
        }
    }
    if systems.len() > 1 {
        return run_multi(
            &a,
            MultiRun {
                started,
                verbose,
                outputs,
                opts,
                mtime,
                nix,
                source,
                systems,
                unpack_platforms,
            },
            containerd,
        );
    }
    let built = realise(&nix, &source)?;
    let closure = &built.closure;
    if human {
        eprintln!(
            "closure of {}: {} store paths, {} bytes",
            closure.root,
            closure.paths.len(),
            closure.nar_size()
        );
    }
    let (cache, jobs) = cache_and_jobs(&a);
    let bar_on = human && verbose == 0 && std::io::stderr().is_terminal();
    let lines = Lines {
        on: human && !bar_on,
        human,
    };
    let bar = bar_on.then(|| Bar::new(closure.nar_size()));
    let progress: &dyn Progress = match &bar {
        Some(b) => b,
        None => &lines,
    };
    let ctx = containerd.sink_context(mtime);
    let result = build(&built, &opts, &outputs, &ctx, &cache, jobs, progress);
    if let Some(b) = &bar {
        b.bar.finish_and_clear();
    }
    print_notes(&ctx);
    let outcome = match result {
        Err(e @ PipelineError::ImageAsDockerArchive(_)) => return Err(usage(e)),
        r => r.with_context(|| format!("building the image of {}", closure.root))?,
    };
    let stats = match &outcome {
        Outcome::Built(b) => Some(&b.image.stats),
        Outcome::Loaded(_) => None,
    };
    report(
        a.json,
        started,
        outcome.record(),
        &outputs,
        outcome.reports().to_vec(),
        closure,
        stats,
        built.nix_seconds,
    )
}

/// The image options the flags give, checked.
fn image_options(a: &BuildArgs) -> anyhow::Result<ImageOptions> {
    let mut runtime = RuntimeConfig {
        entrypoint: a.entrypoint.as_deref().map(parse_command),
        cmd: a.cmd.as_deref().map(parse_command),
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        ..Default::default()
    };
    for e in &a.env {
        runtime.env.push(parse_key_value("--env", e)?);
    }
    for p in &a.expose {
        runtime.exposed_ports.push(parse_expose(p)?);
    }
    for l in &a.labels {
        let (k, v) = parse_key_value("--label", l)?;
        runtime.labels.insert(k, v);
    }
    let mut annotations = BTreeMap::new();
    for l in &a.annotations {
        let (k, v) = parse_key_value("--annotation", l)?;
        annotations.insert(k, v);
    }
    Ok(ImageOptions {
        tag: a.tag.as_deref().map(ImageRef::parse).transpose()?,
        system: systems(a)?.first().cloned(),
        runtime,
        annotations,
        created: a
            .created
            .as_deref()
            .map(|c| parse_created("--created", c))
            .transpose()?,
        compression: a.compression,
        compression_level: a.compression_level,
        max_layers: a.max_layers,
        root_layer: RootLayerOptions {
            links: !a.no_root_links,
            tmp: !a.no_tmp,
            etc_passwd: !a.no_etc_passwd,
        },
        sbom: !a.no_sbom,
    })
}

/// The layer cache (none with --no-cache) and the number of layer jobs.
fn cache_and_jobs(a: &BuildArgs) -> (LayerCache, usize) {
    let cache = if a.no_cache {
        LayerCache::disabled()
    } else {
        LayerCache::new(default_cache_dir())
    };
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    (cache, jobs)
}

/// A multi-platform build, validated.
struct MultiRun {
    started: Instant,
    verbose: u8,
    outputs: Vec<SinkSpec>,
    opts: ImageOptions,
    mtime: u64,
    nix: Nix,
    source: Source,
    systems: Vec<String>,
    unpack_platforms: Vec<Platform>,
}

/// Realise the output for every system (in parallel: Nix locks what it
/// must), then build one image per system and the index over them.
fn run_multi(a: &BuildArgs, m: MultiRun, containerd: &super::ContainerdArgs) -> anyhow::Result<()> {
    let human = !a.json;
    let builts: Vec<NixOutput> = std::thread::scope(|scope| {
        let handles: Vec<_> = m
            .systems
            .iter()
            .map(|system| {
                let nix = Nix {
                    system: Some(system.clone()),
                    ..m.nix.clone()
                };
                let source = &m.source;
                scope.spawn(move || {
                    realise(&nix, source).map_err(|e| {
                        anyhow::Error::new(e).context(format!(
                            "building for {system} (a system this machine cannot build for needs emulation, binfmt with qemu-user-static and `extra-platforms = {system}` in nix.conf, or a remote builder)"
                        ))
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("the realise thread does not panic"))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    if human {
        for (b, system) in builts.iter().zip(&m.systems) {
            eprintln!(
                "{system}: closure of {}: {} store paths, {} bytes",
                b.closure.root,
                b.closure.paths.len(),
                b.closure.nar_size()
            );
        }
    }
    let (cache, jobs) = cache_and_jobs(a);
    let lines = Lines {
        on: human && m.verbose > 0,
        human,
    };
    let mut ctx = containerd.sink_context(m.mtime);
    ctx.unpack_platforms = m.unpack_platforms.clone();
    let result = nixoci::pipeline::build_multi(
        &builts, &m.systems, &m.opts, &m.outputs, &ctx, &cache, jobs, &lines,
    );
    print_notes(&ctx);
    let built = result.context("building the multi-platform image")?;
    let nix_seconds = builts.iter().map(|b| b.nix_seconds).fold(0.0, f64::max);
    if a.json {
        let doc = serde_json::json!({
            "reference": built.index.reference.to_string(),
            "index": built.index.index,
            "manifests": built.images.iter().zip(&builts).map(|(i, b)| serde_json::json!({
                "platform": i.record.platform.to_string(),
                "store_path": b.closure.root.to_string(),
                "manifest": i.record.manifest,
                "layers": i.record.layers,
                "referrers": i.record.referrers.iter().map(|x| serde_json::json!({
                    "artifactType": x.artifact_type,
                    "manifest": x.manifest,
                })).collect::<Vec<_>>(),
                "stats": i.stats,
            })).collect::<Vec<_>>(),
            "outputs": m.outputs.iter().zip(built.reports).map(|(o, mut rep)| {
                rep["sink"] = o.to_string().into();
                rep
            }).collect::<Vec<_>>(),
            "timings": {
                "nix_seconds": (nix_seconds * 1000.0).round() / 1000.0,
                "total_seconds": secs(m.started.elapsed()),
            },
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "{} {} (index of {}) in {:.2}s",
            built.index.reference,
            built.index.index.digest,
            built
                .images
                .iter()
                .map(|i| i.record.platform.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            m.started.elapsed().as_secs_f64()
        );
        for o in &m.outputs {
            println!("  -> {o}");
        }
    }
    Ok(())
}

/// Print the result: a line per output, or one JSON document.
#[allow(clippy::too_many_arguments)]
fn report(
    json: bool,
    started: Instant,
    r: &nixoci::oci::ImageRecord,
    outputs: &[SinkSpec],
    reports: Vec<serde_json::Value>,
    closure: &nixoci::nix::Closure,
    stats: Option<&nixoci::pipeline::assemble::Stats>,
    nix_seconds: f64,
) -> anyhow::Result<()> {
    if json {
        let doc = serde_json::json!({
            "reference": r.reference.to_string(),
            "store_path": closure.root.to_string(),
            "manifest": r.manifest,
            "config": r.config,
            "layers": r.layers,
            "referrers": r.referrers.iter().map(|x| serde_json::json!({
                "artifactType": x.artifact_type,
                "manifest": x.manifest,
            })).collect::<Vec<_>>(),
            "outputs": outputs
                .iter()
                .zip(reports)
                .map(|(o, mut rep)| {
                    rep["sink"] = o.to_string().into();
                    rep
                })
                .collect::<Vec<_>>(),
            "stats": stats,
            "timings": {
                "nix_seconds": (nix_seconds * 1000.0).round() / 1000.0,
                "assemble_seconds": stats.map(|s| (s.seconds * 1000.0).round() / 1000.0),
                "total_seconds": secs(started.elapsed()),
            },
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        let size: u64 = r.layers.iter().map(|l| l.blob.size).sum();
        let how = match stats {
            Some(s) => format!("{} built, {} cached", s.layers_built, s.layers_cached),
            None => "loaded".into(),
        };
        let attached = if r.referrers.is_empty() {
            String::new()
        } else {
            ", SBOM and provenance attached".to_string()
        };
        println!(
            "{} {} ({} layers, {how}, {size} bytes{attached}) in {:.2}s",
            r.reference,
            r.manifest.digest,
            r.layers.len(),
            started.elapsed().as_secs_f64()
        );
        for o in outputs {
            println!("  -> {o}");
        }
    }
    Ok(())
}
