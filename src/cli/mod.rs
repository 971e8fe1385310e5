//! Subcommands, one file each. Every file parses its arguments, calls the
//! library, and prints; no logic of its own beyond that.

mod build;
mod cache;

use clap::{Parser, Subcommand};

/// A usage or validation error (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

pub fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    Usage(e.to_string()).into()
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
        Command::Build(a) => build::run(*a, cli.verbose),
        Command::Cache(c) => cache::run(c),
    }
}
