//! The pure image core: the layering plan of a closure, the tar byte format
//! of a layer, the config and the manifest. No threads, no caches, no
//! sinks, no process-wide state: the same inputs give the same bytes.
//! Driving layers into sinks is [`crate::pipeline`]'s job.

pub mod compress;
pub mod config;
pub mod layer;
pub mod layering;
pub mod manifest;
pub mod rootfs;
pub mod sbom;
pub mod tar;

pub use compress::Compression;
