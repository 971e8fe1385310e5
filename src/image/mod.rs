//! Image assembly: a pure core that turns a closure into OCI layers, a config
//! and a manifest. Nothing here runs Nix or talks to a daemon; blobs go to
//! whatever [`crate::sink::BlobSink`]s the caller gives.

pub mod assemble;
pub mod cache;
pub mod compress;
pub mod config;
pub mod digest;
pub mod layer;
pub mod layering;
pub mod manifest;
pub mod reference;
pub mod rootfs;
pub mod tar;

pub use compress::Compression;
pub use digest::Digest;
pub use reference::ImageRef;
