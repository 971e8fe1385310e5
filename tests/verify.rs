//! `nixoci verify`: every blob of an image re-hashed against the digest
//! that names it, for each source form; a corrupt or missing blob is exit
//! 1 with the blob named. Containerd and registry sources are verified in
//! their own suites, after their writes.

mod common;

use common::{show, Fixture};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

fn verify(fx: &Fixture, source: &str) -> std::process::Output {
    fx.nixoci().args(["verify", source]).output().unwrap()
}

/// Flip one byte of the content of the first non-empty regular file
/// inside the tar at `path` (the archive stays a valid tar).
fn corrupt_tar_content(path: &Path) {
    let offset = {
        let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
        let mut found = None;
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            if e.header().entry_type().is_file() && e.size() > 16 {
                found = Some(e.raw_file_position() + 8);
                break;
            }
        }
        found.expect("a file with content")
    };
    flip(path, offset);
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// GNU tar with these arguments; it must succeed.
fn tar(args: &[&str]) {
    let st = std::process::Command::new("tar")
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "tar {args:?}");
}

fn flip(path: &Path, offset: u64) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut b = [0u8];
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[b[0] ^ 0x5a]).unwrap();
}

#[test]
fn every_source_form_is_verified_and_corruption_is_named() {
    let fx = Fixture::flake("hello");
    let layout = fx.out("layout");
    let oci_archive = fx.out("image.tar");
    let docker = fx.out("docker.tar");
    fx.build_ok(&[
        ".",
        "-o",
        &format!("oci:{}", layout.display()),
        "-o",
        &format!("oci-archive:{}", oci_archive.display()),
        "-o",
        &format!("docker-archive:{}", docker.display()),
    ]);
    for src in [
        format!("oci:{}", layout.display()),
        format!("oci-archive:{}", oci_archive.display()),
        format!("docker-archive:{}", docker.display()),
    ] {
        let o = verify(&fx, &src);
        assert!(o.status.success(), "{src}: {}", show(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("every blob matches its digest"), "{out}");
        let j = fx
            .nixoci()
            .args(["verify", &src, "--json"])
            .output()
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
        assert!(doc["blobs"].as_u64().unwrap() >= 3, "{doc}");
    }

    // A layer of the layout with one byte changed: named, exit 1.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(manifest_digest)).unwrap()).unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    // The OCI archive made from the corrupt layout.
    let size = std::fs::metadata(blob(&layer)).unwrap().len();
    flip(&blob(&layer), size / 2);
    let o = verify(&fx, &format!("oci:{}", layout.display()));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&layer),
        "{}",
        show(&o)
    );
    let rebuilt = fx.out("corrupt.tar");
    tar(&["-cf", p(&rebuilt), "-C", p(&layout), "."]);
    let o = verify(&fx, &format!("oci-archive:{}", rebuilt.display()));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&layer) && err.contains("corrupted or replaced"),
        "{err}"
    );

    // A missing blob.
    std::fs::remove_file(blob(&layer)).unwrap();
    let o = verify(&fx, &format!("oci:{}", layout.display()));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is missing"),
        "{}",
        show(&o)
    );

    // A docker-archive whose layer content changed: its diff_id no longer
    // matches the config.
    let dir = fx.out("docker-x");
    std::fs::create_dir_all(&dir).unwrap();
    tar(&["-xf", p(&docker), "-C", p(&dir)]);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let layer_tar = dir.join(m[0]["Layers"][0].as_str().unwrap());
    corrupt_tar_content(&layer_tar);
    let bad = fx.out("bad-docker.tar");
    tar(&["-cf", p(&bad), "-C", p(&dir), "."]);
    let o = verify(&fx, &format!("docker-archive:{}", bad.display()));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("diff_id"),
        "{}",
        show(&o)
    );

    // Not a source: a usage error.
    let o = verify(&fx, "nowhere:x");
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
}
