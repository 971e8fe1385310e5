//! `nixoci pull REF`: an image from a registry into containerd, unpacked.

use super::{print_notes, usage, ContainerdArgs};
use nixoci::oci::ImageRef;
use nixoci::pipeline::{copy, ImageSource};
use nixoci::sink::SinkSpec;

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  nixoci pull docker.io/library/busybox:latest\n  nixoci pull 127.0.0.1:5000/web:1 --insecure"
)]
pub struct PullArgs {
    #[arg(value_name = "REF")]
    reference: String,
    /// From an index (several platforms), the image of this platform
    /// (`linux/arm64`, `linux/amd64`, ...); default: this machine's.
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

pub fn run(a: PullArgs, containerd: &ContainerdArgs) -> anyhow::Result<()> {
    let reference = ImageRef::parse(&a.reference).map_err(usage)?;
    let ctx = containerd.sink_context(1);
    let source = ImageSource::Registry(reference.clone(), None);
    let platform = super::parse_platform(a.platform.as_deref())?;
    let loaded = copy(
        &source,
        &[SinkSpec::Containerd(None)],
        &ctx,
        None,
        None,
        platform.as_ref(),
    );
    print_notes(&ctx);
    let loaded = loaded?;
    let record = &loaded.record;
    let report = serde_json::json!({
        "reference": record.reference.to_string(),
        "manifest_digest": record.manifest.digest.to_string(),
        "layers": record.layers.len(),
        "containerd": loaded.reports[0],
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "pulled {} ({}, {} layers) into containerd namespace {}",
            record.reference,
            record.manifest.digest,
            record.layers.len(),
            containerd.namespace
        );
    }
    Ok(())
}
