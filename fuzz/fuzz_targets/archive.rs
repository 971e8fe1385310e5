//! docker-archives and OCI archives of any bytes, loaded into a sink that
//! keeps nothing: an image or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nixoci::sink::discard::Discard;
use nixoci::sink::BlobSink;
use nixoci::source::{load, LoadSource};

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("nixoci-fuzz-{}.tar", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let fallback = "fuzz:1".parse().expect("a valid reference");
    for source in [
        LoadSource::DockerArchive(path.clone()),
        LoadSource::OciArchive(path.clone()),
    ] {
        let sink = Discard::default();
        let sinks: [&dyn BlobSink; 1] = [&sink];
        let _ = load(&source, &sinks, None, Some(&fallback), None);
    }
    let _ = std::fs::remove_file(&path);
});
