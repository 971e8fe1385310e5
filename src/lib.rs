pub mod image;
pub mod nix;
pub mod sink;
