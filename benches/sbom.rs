//! Benchmark: making an image's SBOM (CycloneDX, SPDX) and provenance for
//! a closure, over repeated runs, against what reading the closure from
//! Nix costs (`nix path-info --json --recursive`) in the same run.
//!
//!   cargo bench --bench sbom -- STORE_PATH [RUNS]     (bench/sbom.sh runs it)

use nixoci::image::layering::plan;
use nixoci::image::sbom::{referrers, BuildFacts, Subject};
use nixoci::nix::{Nix, StorePath};
use nixoci::oci::blob::{Blob, MANIFEST_MEDIA_TYPE};
use nixoci::oci::{Digest, LayerRecord, Platform};
use std::time::{Duration, Instant};

fn stats(mut d: Vec<Duration>) -> (f64, f64, f64) {
    d.sort();
    let ms = |x: Duration| x.as_secs_f64() * 1000.0;
    (ms(d[0]), ms(d[d.len() / 2]), ms(d[d.len() - 1]))
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(root) = args.first() else {
        eprintln!("usage: cargo bench --bench sbom -- STORE_PATH [RUNS]");
        std::process::exit(2);
    };
    let runs: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(50);
    let root = StorePath::parse(root).expect("a store path");
    let nix = Nix::default();

    let mut floor = Vec::new();
    let mut closure = None;
    for _ in 0..5 {
        let t = Instant::now();
        closure = Some(nix.closure(&root).expect("nix path-info"));
        floor.push(t.elapsed());
    }
    let closure = closure.unwrap();
    let layers = plan(&closure, 100, true).expect("a layering plan");
    let records: Vec<LayerRecord> = (0..layers.len())
        .map(|i| LayerRecord {
            diff_id: Digest::of(format!("diff {i}").as_bytes()),
            uncompressed_size: 0,
            blob: Blob {
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                digest: Digest::of(format!("blob {i}").as_bytes()),
                size: 0,
            },
        })
        .collect();
    let platform = Platform::host();
    let manifest = Blob {
        media_type: MANIFEST_MEDIA_TYPE.into(),
        digest: Digest::of(b"manifest"),
        size: 1,
    };
    let facts = BuildFacts {
        system: "x86_64-linux".into(),
        ..Default::default()
    };
    let mut times = Vec::with_capacity(runs);
    let mut bytes = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let subject = Subject {
            platform: &platform,
            manifest: &manifest,
            created: "1970-01-01T00:00:01Z",
            closure: &closure,
            layer_of: layers
                .iter()
                .zip(&records)
                .flat_map(|(l, r)| l.paths.iter().map(move |p| (p, r)))
                .collect(),
            options: serde_json::json!({}),
        };
        let docs = referrers(&subject, &facts);
        times.push(t.elapsed());
        bytes = docs.iter().map(|r| r.blobs[1].1.len()).sum::<usize>();
    }
    let (fmin, fmed, _) = stats(floor);
    let (min, med, max) = stats(times);
    println!(
        "closure: {root}, {} store paths, {} layers",
        closure.paths.len(),
        layers.len()
    );
    println!("floor: nix path-info --json --recursive    median {fmed:8.2} ms (min {fmin:.2})");
    println!(
        "SBOM + SPDX + provenance ({runs} runs)      median {med:8.2} ms (min {min:.2}, max {max:.2}) = {:.3}x the floor; {bytes} bytes of documents",
        med / fmed
    );
}
