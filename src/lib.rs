pub mod image;
pub mod nix;
pub mod pipeline;
pub mod sink;
