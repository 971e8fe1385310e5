//! Index, manifest and config documents, referrers, flake.lock files,
//! platforms and Nix hashes from any source: parsed or refused, never a
//! panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nixoci::source::documents::*;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let o = Path::new("fuzz");
    if let Ok(i) = parse_index(o, "index", data) {
        let _ = pick_platform(o, &i, None);
    }
    // Referrers and flake.lock files, as hostile as any document.
    let _ = nixoci::oci::referrer::subject_of(data);
    let _ = nixoci::nix::flake::parse_lock(o, data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = nixoci::oci::Platform::parse(s);
        let _ = nixoci::nix::hash::Sha256::parse(s);
        let _ = nixoci::nix::name::parse_drv_name(s);
    }
    let _ = manifest_blobs(o, data);
    if let Ok(c) = parse_config(o, data) {
        let _ = config_diff_ids(o, &c, 1, "the manifest");
        let _ = platform_of(&c);
    }
});
