//! The small pieces of Nix that nixoci needs: store paths, `nix path-info`
//! output, closures (from the store's database where it can be read), and
//! running `nix build` on a flake.
//!
//! The parsing parts are a synchronous, pure core; only [`command`] runs Nix.

pub mod closure;
pub mod closure_cache;
pub mod command;
pub mod daemon;
pub mod db;
pub mod flake;
pub mod hash;
pub mod name;
pub mod nar;
pub mod path_info;
pub mod store_path;

pub use closure::Closure;
pub use closure_cache::ClosureCache;
pub use command::{FlakeRef, Nix, NixError};
pub use path_info::{parse_path_info_json, PathInfo};
pub use store_path::{StorePath, StorePathError, STORE_DIR};
