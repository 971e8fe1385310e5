//! Small helpers every layer may use: atomic file writes, nixoci's
//! directories, the process-wide interrupt flag and async runtime. A leaf.

pub mod base64;
pub mod direct;
pub mod dirs;
pub mod fs;
pub mod http;
pub mod interrupt;
pub mod runtime;
