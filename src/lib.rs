pub mod containerd;
pub mod image;
pub mod interrupt;
pub mod nix;
pub mod pipeline;
pub mod sink;
