//! Subcommands, one file each. Every file parses its arguments, calls the
//! library, and prints; no logic of its own beyond that.

mod build;
mod cache;
mod clean;
mod enclave;
mod engine;
mod files;
pub mod helper;
mod images;
mod load;
mod port;
mod pull;
mod push;
mod run;
mod sbom;
mod service;
mod verify;

pub use service::ExitCode;

use clap::{Parser, Subcommand};

/// A usage or validation error (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

pub fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    Usage(e.to_string()).into()
}

/// Parse `--output` values and check, before anything runs, that each path
/// can be written and each namespace is valid.
pub fn parse_outputs(values: &[String]) -> anyhow::Result<Vec<nixoci::sink::SinkSpec>> {
    let mut outputs = Vec::with_capacity(values.len());
    for v in values {
        let o = nixoci::sink::SinkSpec::parse(v).map_err(usage)?;
        if let Some(p) = o.path() {
            nixoci::sink::oci_dir::check_output_path(p).map_err(usage)?;
        }
        if let nixoci::sink::SinkSpec::Containerd(Some(ns)) = &o {
            nixoci::containerd::check_namespace(ns).map_err(usage)?;
        }
        outputs.push(o);
    }
    Ok(outputs)
}

/// Tell the user what opening the outputs did (such as starting the
/// private containerd).
pub fn print_notes(ctx: &nixoci::sink::SinkContext) {
    for note in ctx.notes.lock().unwrap().drain(..) {
        eprintln!("{note}");
    }
}

#[derive(Parser)]
#[command(
    name = "nixoci",
    version,
    about = "Build OCI container images from Nix flakes, natively and reproducibly, with no Docker daemon",
    long_about = None,
)]
pub struct Cli {
    /// Print tracing logs (also: RUST_LOG=nixoci=debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(flatten)]
    pub containerd: ContainerdArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Build a flake output (or a store path) into an OCI image.
    Build(Box<build::BuildArgs>),
    /// Manage the layer cache.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Load an OCI layout, OCI archive or docker-archive (or a store path holding one).
    Load(load::LoadArgs),
    /// List or remove images in the containerd namespace.
    #[command(subcommand)]
    Images(images::ImagesCommand),
    /// Start, stop or show nixoci's private containerd.
    #[command(subcommand)]
    Engine(engine::EngineCommand),
    /// Run a Kurtosis-style package (kurtosis.yml + main.star) in an enclave.
    Run(Box<run::RunArgs>),
    /// List, inspect or remove enclaves.
    #[command(subcommand)]
    Enclave(enclave::EnclaveCommand),
    /// Logs, exec, stop, start or remove one service of an enclave.
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Inspect, download or upload an enclave's files artifacts.
    #[command(subcommand)]
    Files(files::FilesCommand),
    /// Remove stopped enclaves (-a: every enclave, and nixoci's images).
    Clean(clean::CleanArgs),
    /// Where a service's port answers from the host.
    #[command(subcommand)]
    Port(port::PortCommand),
    /// Push an image (OCI layout, OCI archive, docker-archive) to a registry.
    Push(push::PushArgs),
    /// Pull an image from a registry into containerd.
    Pull(pull::PullArgs),
    /// Re-hash every blob of an image and report what is missing or corrupt.
    Verify(verify::VerifyArgs),
    /// Print the SBOM (CycloneDX or SPDX) or provenance attached to an image.
    Sbom(sbom::SbomArgs),
}

/// How to reach containerd (DESIGN.md: address order and namespace).
#[derive(clap::Args, Clone)]
pub struct ContainerdArgs {
    /// containerd socket; default: the first that answers of $CONTAINERD_ADDRESS,
    /// the private containerd, $XDG_RUNTIME_DIR/containerd/containerd.sock,
    /// /run/containerd/containerd.sock; else the private one is started.
    #[arg(long, global = true, value_name = "SOCKET")]
    pub containerd_address: Option<String>,
    /// containerd namespace.
    #[arg(long, global = true, env = "CONTAINERD_NAMESPACE", default_value = nixoci::containerd::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Snapshotter to unpack images into.
    #[arg(long, global = true, default_value = nixoci::containerd::DEFAULT_SNAPSHOTTER)]
    pub snapshotter: String,
    /// Talk plain HTTP to registries (only for registries without TLS).
    #[arg(long, global = true)]
    pub insecure: bool,
    /// Also trust the CA certificates (PEM) in this file for registries.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,
}

impl ContainerdArgs {
    pub fn connect_options(&self, autostart: bool) -> nixoci::containerd::address::Connect {
        nixoci::containerd::address::Connect {
            address: self.containerd_address.clone(),
            namespace: self.namespace.clone(),
            autostart,
        }
    }

    pub fn sink_context(&self, mtime: u64) -> nixoci::sink::SinkContext {
        let mut ctx = nixoci::sink::SinkContext::new(mtime, self.connect_options(true));
        ctx.snapshotter = self.snapshotter.clone();
        ctx.registry = self.registry_options();
        ctx
    }

    pub fn registry_options(&self) -> nixoci::registry::Options {
        nixoci::registry::Options {
            insecure: self.insecure,
            ca_file: self.ca_file.clone(),
        }
    }

    /// A runtime and a connected client (starting the private containerd
    /// when `autostart` and none answers).
    pub fn connect(
        &self,
        autostart: bool,
    ) -> anyhow::Result<(tokio::runtime::Handle, nixoci::containerd::Client)> {
        nixoci::containerd::check_namespace(&self.namespace).map_err(usage)?;
        let rt = nixoci::util::runtime::handle()?;
        let home = nixoci::containerd::engine::nixoci_home();
        let connected = rt.block_on(nixoci::containerd::address::connect(
            &self.connect_options(autostart),
            &home,
        ))?;
        if let Some(note) = connected.started {
            eprintln!("{note}");
        }
        Ok((rt, connected.client))
    }
}

pub fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let filter = match (std::env::var("RUST_LOG"), verbose) {
        (Ok(f), _) => EnvFilter::new(f),
        (Err(_), 0) => EnvFilter::new("warn"),
        (Err(_), 1) => EnvFilter::new("nixoci=debug"),
        (Err(_), _) => EnvFilter::new("nixoci=trace"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Build(a) => build::run(*a, cli.verbose, &cli.containerd),
        Command::Cache(c) => cache::run(c),
        Command::Images(c) => images::run(c, &cli.containerd),
        Command::Load(a) => load::run(a, &cli.containerd),
        Command::Engine(c) => engine::run(c),
        Command::Run(a) => run::run(*a, &cli.containerd),
        Command::Enclave(c) => enclave::run(c, &cli.containerd),
        Command::Service(c) => service::run(c, &cli.containerd),
        Command::Files(c) => files::run(c),
        Command::Clean(a) => clean::run(a, &cli.containerd),
        Command::Port(c) => port::run(c),
        Command::Push(a) => push::run(a, &cli.containerd),
        Command::Pull(a) => pull::run(a, &cli.containerd),
        Command::Verify(a) => verify::run(a, &cli.containerd),
        Command::Sbom(a) => sbom::run(a, &cli.containerd),
    }
}

/// `--platform` (`linux/arm64`), checked before anything runs.
pub fn parse_platform(s: Option<&str>) -> anyhow::Result<Option<nixoci::oci::Platform>> {
    s.map(nixoci::oci::Platform::parse)
        .transpose()
        .map_err(usage)
}
