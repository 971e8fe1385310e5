//! Small helpers every layer may use: atomic file writes and the process-wide
//! interrupt flag. A leaf.

pub mod dirs;
pub mod fs;
pub mod interrupt;
