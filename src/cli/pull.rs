//! `nixoci pull REF`: an image from a registry into containerd, unpacked.

use super::{print_notes, usage, ContainerdArgs};
use nixoci::image::ImageRef;
use nixoci::sink::{BlobSink, SinkSpec};

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  nixoci pull docker.io/library/busybox:latest\n  nixoci pull 127.0.0.1:5000/web:1 --insecure"
)]
pub struct PullArgs {
    #[arg(value_name = "REF")]
    reference: String,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

pub fn run(a: PullArgs, containerd: &ContainerdArgs) -> anyhow::Result<()> {
    let reference = ImageRef::parse(&a.reference).map_err(usage)?;
    let ctx = containerd.sink_context(1);
    let sinks = nixoci::pipeline::open_sinks(&[SinkSpec::Containerd(None)], &ctx);
    print_notes(&ctx);
    let sinks = sinks?;
    let client = nixoci::registry::pull::client(&reference, &ctx.registry, None)?;
    let refs: Vec<&dyn BlobSink> = sinks.iter().map(|s| s.as_ref()).collect();
    let record = nixoci::registry::pull::pull(&reference, &client, &refs)?;
    let report = serde_json::json!({
        "reference": record.reference.to_string(),
        "manifest_digest": record.manifest.digest.to_string(),
        "layers": record.layers.len(),
        "containerd": sinks[0].report(),
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
