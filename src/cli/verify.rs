//! `nixoci verify SOURCE`: re-hash every blob of an image.

use super::{print_notes, usage, ContainerdArgs};
use nixoci::oci::ImageRef;
use nixoci::pipeline::{verify, ImageSource};
use nixoci::source::LoadSource;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  nixoci verify oci:./nixoci-out
  nixoci verify docker-archive:web.tar
  nixoci verify containerd:web:latest
  nixoci verify registry:127.0.0.1:5000/web:1 --insecure

Exit code 1 when a blob is missing or does not match its digest.")]
pub struct VerifyArgs {
    /// oci:DIR (every image in it), oci-archive:FILE, docker-archive:FILE,
    /// a store path holding one, containerd:REF or registry:REF.
    #[arg(value_name = "SOURCE")]
    source: String,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

/// The image source a `verify` (or `push`) argument names.
pub fn image_source(s: &str) -> anyhow::Result<ImageSource> {
    Ok(if let Some(r) = s.strip_prefix("containerd:") {
        ImageSource::Containerd(ImageRef::parse(r).map_err(usage)?)
    } else if let Some(r) = s.strip_prefix("registry:") {
        ImageSource::Registry(ImageRef::parse(r).map_err(usage)?, None)
    } else {
        ImageSource::Load(LoadSource::parse(s).map_err(usage)?)
    })
}

pub fn run(a: VerifyArgs, containerd: &ContainerdArgs) -> anyhow::Result<()> {
    let source = image_source(&a.source)?;
    let ctx = containerd.sink_context(1);
    let result = verify(&source, &ctx);
    print_notes(&ctx);
    let v = result?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{}: {} image(s), {} blobs, {} bytes: every blob matches its digest",
            a.source, v.images, v.blobs, v.bytes
        );
    }
    Ok(())
}
