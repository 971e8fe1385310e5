//! `nixoci clean [-a]`: remove stopped enclaves; with -a, every enclave and
//! the images nixoci wrote.

use super::enclave::{remove, states};
use super::ContainerdArgs;
use nixoci::enclave::{self, Enclave};

#[derive(clap::Args)]
pub struct CleanArgs {
    /// Remove running enclaves too, and the images nixoci wrote to the namespace.
    #[arg(short, long)]
    all: bool,
}

pub fn run(a: CleanArgs, args: &ContainerdArgs) -> anyhow::Result<()> {
    let (rt, client) = args.connect(true)?;
    for name in enclave::list_names() {
        let e = Enclave::open(&name)?;
        let running = states(&rt, &client, &e)?
            .iter()
            .any(|(_, s)| s == "running");
        if running && !a.all {
            continue;
        }
        let n = remove(&rt, &client, e, &client.snapshotter(&args.snapshotter))?;
        println!("removed enclave {name} ({n} containers)");
    }
    if a.all {
        let images = rt.block_on(nixoci::containerd::images::list(&client))?;
        for i in images {
            if i.labels
                .get(nixoci::containerd::images::MANAGED_LABEL)
                .map(String::as_str)
                == Some("true")
            {
                rt.block_on(nixoci::containerd::images::delete(&client, &i.name))?;
                println!("removed image {}", i.name);
            }
        }
    }
    Ok(())
}
