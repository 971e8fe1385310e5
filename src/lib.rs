pub mod containerd;
pub mod image;
pub mod interrupt;
pub mod load;
pub mod nix;
pub mod pipeline;
pub mod sink;
