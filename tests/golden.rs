//! Golden digests: a small synthetic closure (three store paths added from
//! `fixtures/golden/store` with `nix-store --add`, so their paths depend on
//! their content alone) is assembled in process with each compression, and
//! every digest must equal the one recorded in `fixtures/golden/digests.json`.
//! A dependency bump that changes a byte of a layer, the config or the
//! manifest fails here loudly. After an intended change, regenerate with
//! `scripts/regen-golden.sh` and say why in the commit.

use nixoci::containerd::address::Connect;
use nixoci::image::Compression;
use nixoci::nix::{Closure, PathInfo, StorePath};
use nixoci::pipeline::assemble::NoProgress;
use nixoci::pipeline::cache::LayerCache;
use nixoci::pipeline::{build_into, ImageOptions};
use nixoci::sink::{SinkContext, SinkSpec};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn add(dir: &Path) -> StorePath {
    let o = Command::new("nix-store")
        .arg("--add")
        .arg(dir)
        .output()
        .expect("nix-store runs (scripts/setup.sh installs nix-bin)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    StorePath::parse(String::from_utf8(o.stdout).unwrap().trim()).unwrap()
}

/// root → lib → data, and root → data.
fn closure() -> Closure {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/golden/store");
    let data = add(&fx.join("golden-data"));
    let lib = add(&fx.join("golden-lib"));
    let root = add(&fx.join("golden-root"));
    let info = |p: &StorePath, refs: Vec<StorePath>| PathInfo {
        path: p.clone(),
        nar_hash: format!("sha256:{}", p.base_name()),
        nar_size: 1000,
        references: refs,
    };
    Closure::new(
        root.clone(),
        vec![
            info(&root, vec![lib.clone(), data.clone()]),
            info(&lib, vec![data.clone()]),
            info(&data, vec![]),
        ],
    )
    .unwrap()
}

/// (case name, compression, level, mtime).
const CASES: &[(&str, Compression, i32, u64)] = &[
    ("gzip-6", Compression::Gzip, 6, 1),
    ("zstd-3", Compression::Zstd, 3, 1),
    ("none", Compression::None, 0, 1),
    (
        "gzip-1-epoch-1700000000",
        Compression::Gzip,
        1,
        1_700_000_000,
    ),
];

fn digests_of(closure: &Closure) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    for (name, compression, level, mtime) in CASES {
        let tmp = tempfile::tempdir().unwrap();
        let outputs = [SinkSpec::Oci(tmp.path().join("layout"))];
        let opts = ImageOptions {
            tag: Some("golden:1".parse().unwrap()),
            system: Some("x86_64-linux".into()),
            compression: Some(*compression),
            compression_level: Some(*level),
            ..Default::default()
        };
        let spec = opts.spec(closure, Some("hello"), &outputs, *mtime).unwrap();
        let ctx = SinkContext::new(
            *mtime,
            Connect {
                address: None,
                namespace: "default".into(),
                autostart: false,
            },
        );
        let built = build_into(
            &spec,
            closure,
            &outputs,
            &ctx,
            &LayerCache::disabled(),
            2,
            &NoProgress,
        )
        .unwrap();
        let r = &built.image.record;
        out.insert(
            name.to_string(),
            serde_json::json!({
                "manifest": r.manifest.digest.to_string(),
                "config": r.config.digest.to_string(),
                "layers": r.layers.iter().map(|l| l.blob.digest.to_string()).collect::<Vec<_>>(),
                "diff_ids": r.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
            }),
        );
    }
    out
}

#[test]
fn images_of_a_fixed_closure_have_the_recorded_digests() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/golden/digests.json");
    let got = digests_of(&closure());
    // Two assemblies of one closure are byte-identical.
    assert_eq!(got, digests_of(&closure()), "assembly is not deterministic");
    if std::env::var_os("NIXOCI_REGENERATE_GOLDEN").is_some() {
        let text = serde_json::to_string_pretty(&got).unwrap() + "\n";
        std::fs::write(&file, text).unwrap();
        eprintln!("wrote {}", file.display());
        return;
    }
    let want: BTreeMap<String, serde_json::Value> = serde_json::from_slice(
        &std::fs::read(&file)
            .expect("fixtures/golden/digests.json exists (scripts/regen-golden.sh makes it)"),
    )
    .unwrap();
    for (name, w) in &want {
        assert_eq!(
            got.get(name),
            Some(w),
            "{name}: the image bytes changed (a dependency bump or a format change?). If intended, run scripts/regen-golden.sh and say why in the commit"
        );
    }
    assert_eq!(want.len(), got.len(), "cases differ from the recorded ones");
    // Uncompressed layers are their own diff_ids; compressed ones are not.
    let none = &want["none"];
    assert_eq!(none["layers"], none["diff_ids"]);
    assert_ne!(want["gzip-6"]["layers"], want["gzip-6"]["diff_ids"]);
    // Compression changes blobs, never the diff_ids or the config.
    assert_eq!(want["gzip-6"]["diff_ids"], want["zstd-3"]["diff_ids"]);
    assert_eq!(want["gzip-6"]["config"], want["zstd-3"]["config"]);
    // The epoch changes every layer's bytes.
    assert_ne!(
        want["gzip-1-epoch-1700000000"]["diff_ids"],
        want["gzip-6"]["diff_ids"]
    );
}
