use super::{usage, ContainerdArgs};
use clap::Subcommand;
use nixoci::containerd::images;
use nixoci::oci::ImageRef;
use nixoci::source::containerd::image_platforms;

#[derive(Subcommand)]
pub enum ImagesCommand {
    /// List the images of the namespace.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove an image record (its content and snapshots are then garbage collected).
    Rm {
        /// Image reference, normalised as Docker does (`web` is docker.io/library/web:latest).
        #[arg(value_name = "REF")]
        reference: String,
    },
}

pub fn run(c: ImagesCommand, args: &ContainerdArgs) -> anyhow::Result<()> {
    match c {
        ImagesCommand::Ls { json } => {
            let (rt, client) = args.connect(false)?;
            let list = rt.block_on(images::list(&client))?;
            let platforms = |t: &containerd_client::types::Descriptor| -> Vec<String> {
                image_platforms(&rt, &client, &t.media_type, &t.digest)
                    .iter()
                    .map(ToString::to_string)
                    .collect()
            };
            if json {
                let v: Vec<_> = list
                    .iter()
                    .map(|i| {
                        let t = i.target.clone().unwrap_or_default();
                        serde_json::json!({"name": i.name, "digest": t.digest, "media_type": t.media_type, "size": t.size, "platforms": platforms(&t)})
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for i in &list {
                    let t = i.target.clone().unwrap_or_default();
                    println!("{}\t{}\t{}", i.name, t.digest, platforms(&t).join(","));
                }
            }
            Ok(())
        }
        ImagesCommand::Rm { reference } => {
            let r = ImageRef::parse(&reference).map_err(usage)?;
            let (rt, client) = args.connect(false)?;
            if rt.block_on(images::delete(&client, &r.to_string()))? {
                println!("removed {r}");
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "no image {r} in namespace {}",
                    client.namespace
                ))
            }
        }
    }
}
