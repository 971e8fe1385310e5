//! `nixoci sbom SOURCE`: print the SBOM or provenance attached to an image.

use super::verify::image_source;
use super::{print_notes, usage, ContainerdArgs};
use nixoci::oci::referrer::{CYCLONEDX, IN_TOTO, SPDX};
use nixoci::oci::ImageRef;
use nixoci::pipeline::referrers;
use std::io::{IsTerminal, Write};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Cyclonedx,
    Spdx,
}

#[derive(clap::Args)]
#[command(after_help = "Examples:
  nixoci sbom oci:./nixoci-out > web.cdx.json
  nixoci sbom oci-archive:web.tar --format spdx
  nixoci sbom containerd:web:latest --provenance
  nixoci sbom registry:127.0.0.1:5000/web:1 --insecure

The document is printed exactly as it is stored (its digest is the one the
image's referrer lists). Exit code 1 when the image has none attached.")]
pub struct SbomArgs {
    /// oci:DIR, oci-archive:FILE, containerd:REF or registry:REF.
    #[arg(value_name = "SOURCE")]
    source: String,
    /// The SBOM format.
    #[arg(long, value_enum, default_value = "cyclonedx")]
    format: Format,
    /// Print the provenance (an in-toto statement, SLSA v1) instead.
    #[arg(long, conflicts_with = "format")]
    provenance: bool,
    /// The image, in a layout holding several: NAME[:TAG].
    #[arg(long)]
    tag: Option<String>,
    /// From an index (several platforms), the image of this platform
    /// (`linux/arm64`, `linux/amd64`, ...); default: this machine's.
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
}

pub fn run(a: SbomArgs, containerd: &ContainerdArgs) -> anyhow::Result<()> {
    let source = image_source(&a.source)?;
    let tag = a
        .tag
        .as_deref()
        .map(ImageRef::parse)
        .transpose()
        .map_err(usage)?;
    let (kind, what) = match (a.provenance, a.format) {
        (true, _) => (IN_TOTO, "provenance"),
        (false, Format::Cyclonedx) => (CYCLONEDX, "CycloneDX SBOM"),
        (false, Format::Spdx) => (SPDX, "SPDX SBOM"),
    };
    let ctx = containerd.sink_context(1);
    let platform = super::parse_platform(a.platform.as_deref())?;
    let result = referrers(&source, &ctx, tag.as_ref(), platform.as_ref());
    print_notes(&ctx);
    let (manifest, found) = result?;
    let Some(doc) = found
        .iter()
        .filter(|r| r.artifact_type == kind)
        .find_map(|r| r.document())
    else {
        let attached: Vec<&str> = found.iter().map(|r| r.artifact_type.as_str()).collect();
        anyhow::bail!(
            "{}: image {manifest} has no {what} attached{}. nixoci attaches one to every image it builds from a closure (unless --no-sbom); images loaded as they are (dockerTools archives, stream scripts) have none",
            a.source,
            if attached.is_empty() {
                String::new()
            } else {
                format!(" (it has: {})", attached.join(", "))
            }
        );
    };
    let mut out = std::io::stdout().lock();
    out.write_all(doc)?;
    if out.is_terminal() {
        out.write_all(b"\n")?;
    }
    Ok(())
}
