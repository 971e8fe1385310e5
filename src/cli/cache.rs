use clap::Subcommand;
use nixoci::pipeline::cache::{default_cache_dir, LayerCache};

#[derive(Subcommand)]
pub enum CacheCommand {
    /// Empty the layer and closure caches ($XDG_CACHE_HOME/nixoci, else
    /// ~/.cache/nixoci).
    Prune,
}

pub fn run(c: CacheCommand) -> anyhow::Result<()> {
    match c {
        CacheCommand::Prune => {
            let n = LayerCache::new(default_cache_dir()).prune()?;
            let c = nixoci::nix::ClosureCache::new(default_cache_dir()).prune()?;
            println!("removed {n} cached layer entries and {c} cached closures");
            Ok(())
        }
    }
}
