//! nixoci as a library. The modules are layers; each uses only those above
//! it in this list (checked by `tests/architecture.rs`):
//!
//! - [`util`]: atomic writes, the interrupt flag;
//! - [`nix`]: store paths, closures, the `nix` CLI (knows nothing of OCI);
//!   [`rootless`]: entering a rootless engine's namespaces, rootlesskit's
//!   port API, the checks a rootless engine needs;
//! - [`oci`]: digests, descriptors, references, platforms, image records;
//! - [`image`]: the pure image core: layering plan, tar, config, manifest;
//! - [`containerd`], [`registry`]: clients of the two daemons nixoci talks to;
//!   [`packages`]: Kurtosis packages fetched with git into a cache;
//! - [`source`], [`sink`]: where images are read from and written to;
//! - [`pipeline`]: the one road from a flake output, store path or source
//!   to sinks (threads, layer cache);
//! - [`plan`]: Kurtosis package interpretation (pure);
//! - [`enclave`]: plan execution on containerd.

pub mod containerd;
pub mod enclave;
pub mod image;
pub mod nix;
pub mod oci;
pub mod packages;
pub mod pipeline;
pub mod plan;
pub mod registry;
pub mod rootless;
pub mod sink;
pub mod source;
pub mod util;
