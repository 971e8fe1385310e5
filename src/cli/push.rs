//! `nixoci push SOURCE REF`: an existing image to a registry.

use super::{print_notes, usage, ContainerdArgs};
use nixoci::oci::ImageRef;
use nixoci::pipeline::{copy, ImageSource};
use nixoci::sink::SinkSpec;

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  nixoci push oci:./nixoci-out:web registry.example/team/web:1\n  nixoci push docker-archive:web.tar 127.0.0.1:5000/web --insecure"
)]
pub struct PushArgs {
    /// oci:DIR, oci-archive:FILE, docker-archive:FILE, a store path holding
    /// one, or containerd:REF (an image of the namespace).
    source: String,
    /// Where to push: an image reference (its tag, else the source's).
    #[arg(value_name = "REF")]
    reference: String,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

pub fn run(a: PushArgs, containerd: &ContainerdArgs) -> anyhow::Result<()> {
    let target = ImageRef::parse(&a.reference).map_err(usage)?;
    let outputs = [SinkSpec::Registry(a.reference.clone())];
    let ctx = containerd.sink_context(1);
    let source = match super::verify::image_source(&a.source)? {
        ImageSource::Registry(..) => {
            return Err(usage("push takes oci:DIR, oci-archive:FILE, docker-archive:FILE, a store path holding one, or containerd:REF; to copy between registries, pull first"))
        }
        s => s,
    };
    let loaded = copy(&source, &outputs, &ctx, None, Some(&target), None);
    print_notes(&ctx);
    let reports = loaded?.reports;
    let report = &reports[0];
    if a.json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!(
            "pushed {} ({}): {} blobs uploaded, {} already there, {} mounted",
            report["reference"].as_str().unwrap_or(""),
            report["manifest_digest"].as_str().unwrap_or(""),
            report["blobs_uploaded"],
            report["blobs_skipped"],
            report["blobs_mounted"],
        );
    }
    Ok(())
}
