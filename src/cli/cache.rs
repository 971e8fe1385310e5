use clap::Subcommand;
use nixoci::pipeline::cache::{default_cache_dir, LayerCache};

#[derive(Subcommand)]
pub enum CacheCommand {
    /// Empty the layer, closure and package caches ($XDG_CACHE_HOME/nixoci, else
    /// ~/.cache/nixoci).
    Prune,
}

pub fn run(c: CacheCommand) -> anyhow::Result<()> {
    match c {
        CacheCommand::Prune => {
            let n = LayerCache::new(default_cache_dir()).prune()?;
            let c = nixoci::nix::ClosureCache::new(default_cache_dir()).prune()?;
            let p = nixoci::packages::git::GitResolver::prune(
                &nixoci::util::dirs::cache_dir_or_home(),
            )?;
            println!("removed {n} cached layer entries, {c} cached closures and {p} cached package repositories");
            Ok(())
        }
    }
}
