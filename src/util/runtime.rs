//! The one async runtime of the process, built on first use and kept for
//! its life: two worker threads (the heavy work happens on the pipeline's
//! own threads; the runtime only drives gRPC and child processes). Sync
//! code enters it through [`handle`]; async code never blocks on it.

use std::sync::OnceLock;
use tokio::runtime::{Handle, Runtime};

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The runtime's handle (building it the first time).
pub fn handle() -> std::io::Result<Handle> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt.handle().clone());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("nixoci-rt")
        .enable_all()
        .build()?;
    // Two threads racing here: one runtime wins, the other is dropped
    // before it ran anything.
    let _ = RUNTIME.set(rt);
    RUNTIME
        .get()
        .map(|rt| rt.handle().clone())
        .ok_or_else(|| std::io::Error::other("the async runtime could not be kept"))
}
