use super::{parse_outputs, print_notes, usage, ContainerdArgs};
use clap::Args;
use nixoci::oci::ImageRef;
use nixoci::pipeline::{load_into, Loaded};
use nixoci::sink::SinkSpec;
use nixoci::source::LoadSource;

#[derive(Args)]
#[command(after_help = "Examples:
  nixoci load docker-archive:web.tar
  nixoci load oci:./nixoci-out --tag web:1 --output containerd:k8s.io
  nixoci load /nix/store/...-docker-image-web.tar.gz")]
pub struct LoadArgs {
    /// oci:DIR, oci-archive:FILE, docker-archive:FILE (plain or gzip), or a store path holding one.
    #[arg(value_name = "SOURCE")]
    source: String,
    /// Where to load it; may repeat: containerd[:NAMESPACE], oci:DIR, oci-archive:FILE.
    #[arg(
        short,
        long = "output",
        value_name = "SINK",
        default_value = "containerd"
    )]
    outputs: Vec<String>,
    /// Image name (also picks the image in a layout holding several).
    #[arg(short, long)]
    tag: Option<String>,
    /// From an index (several platforms), the image of this platform
    /// (`linux/arm64`, `linux/amd64`, ...); default: this machine's.
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    /// Print one JSON document with the digests.
    #[arg(long)]
    json: bool,
}

pub fn run(a: LoadArgs, containerd: &ContainerdArgs) -> anyhow::Result<()> {
    let source = LoadSource::parse(&a.source).map_err(usage)?;
    let tag = a
        .tag
        .as_deref()
        .map(ImageRef::parse)
        .transpose()
        .map_err(usage)?;
    let outputs = parse_outputs(&a.outputs)?;
    if outputs.iter().any(SinkSpec::is_docker_archive) {
        return Err(usage(
            "load cannot write a docker-archive (its layers may be compressed); use containerd, oci: or oci-archive:",
        ));
    }
    let ctx = containerd.sink_context(1);
    let platform = super::parse_platform(a.platform.as_deref())?;
    let result = load_into(
        &source,
        &outputs,
        &ctx,
        tag.as_ref(),
        None,
        platform.as_ref(),
    );
    print_notes(&ctx);
    let Loaded { record, reports } = result?;
    if a.json {
        let doc = serde_json::json!({
            "reference": record.reference.to_string(),
            "manifest": record.manifest,
            "config": record.config,
            "layers": record.layers,
            "outputs": outputs.iter().zip(reports).map(|(o, mut r)| {
                r["sink"] = o.to_string().into();
                r
            }).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "{} {} ({} layers)",
            record.reference,
            record.manifest.digest,
            record.layers.len()
        );
        for o in &outputs {
            println!("  -> {o}");
        }
    }
    Ok(())
}
