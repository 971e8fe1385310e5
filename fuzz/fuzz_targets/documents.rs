//! Index, manifest and config documents from any source: parsed or
//! refused, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nixoci::source::documents::*;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let o = Path::new("fuzz");
    if let Ok(i) = parse_index(o, "index", data) {
        let _ = pick_platform(o, &i, None);
    }
    let _ = manifest_blobs(o, data);
    if let Ok(c) = parse_config(o, data) {
        let _ = config_diff_ids(o, &c, 1, "the manifest");
        let _ = platform_of(&c);
    }
});
