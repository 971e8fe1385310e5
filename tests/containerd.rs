//! Importing into a real containerd (started per test) and running with runc.

mod common;

use common::*;
use std::process::{Command, Stdio};

/// `nixoci build ... -o containerd:NS` against `cd`; returns the --json document.
fn build_into(fx: &Fixture, cd: &Containerd, ns: &str, args: &[&str]) -> serde_json::Value {
    let o = fx
        .nixoci()
        .current_dir(fx.dir())
        .env("NIXOCI_HOME", fx.out("home"))
        .args([
            "build",
            "--json",
            "--containerd-address",
            &cd.socket(),
            "-o",
            &format!("containerd:{ns}"),
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn nixoci_images(fx: &Fixture, cd: &Containerd, ns: &str, args: &[&str]) -> std::process::Output {
    fx.nixoci()
        .env("NIXOCI_HOME", fx.out("home"))
        .args([
            "images",
            "--containerd-address",
            &cd.socket(),
            "--namespace",
            ns,
        ])
        .args(args)
        .output()
        .unwrap()
}

/// Every image record of the namespace resolves: all content present and unpacked.
fn assert_images_complete(cd: &Containerd, ns: &str) {
    let out = run(cd.ctr(ns).args(["images", "check"]));
    for line in out.lines().skip(1) {
        assert!(line.contains("complete"), "incomplete image: {line}\n{out}");
        assert!(line.trim_end().ends_with("true"), "not unpacked: {line}");
    }
}

#[test]
fn import_run_reimport_share_and_remove() {
    let cd = Containerd::start();
    let fx = Fixture::flake("hello");
    let doc = build_into(&fx, &cd, "t1", &["."]);
    assert!(doc["outputs"][0]["bytes_written"].as_u64().unwrap() > 1_000_000);
    // Only containerd: uncompressed unless asked otherwise; every layer is
    // its own diff.
    for l in doc["layers"].as_array().unwrap() {
        assert_eq!(
            l["blob"]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar"
        );
        assert_eq!(l["blob"]["digest"], l["diff_id"]);
    }
    assert_eq!(
        cd.run_image("t1", "docker.io/library/hello-app:latest", &[]),
        "hello from nix\n"
    );
    assert_images_complete(&cd, "t1");
    // What containerd holds re-hashes whole.
    let v = fx
        .nixoci()
        .args([
            "verify",
            "containerd:hello-app",
            "--namespace",
            "t1",
            "--containerd-address",
        ])
        .arg(cd.socket())
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", show(&v));
    assert!(String::from_utf8_lossy(&v.stdout).contains("every blob matches its digest"));
    assert_eq!(
        run(cd.ctr("t1").args(["leases", "ls", "-q"])).trim(),
        "",
        "the lease is deleted"
    );
    // GC labels, as containerd's own unpacker sets them.
    let content = run(cd.ctr("t1").args(["content", "ls"]));
    let manifest = doc["manifest"]["digest"].as_str().unwrap();
    let mline = content.lines().find(|l| l.starts_with(manifest)).unwrap();
    assert!(
        mline.contains("containerd.io/gc.ref.content.config="),
        "{mline}"
    );
    assert!(
        mline.contains("containerd.io/gc.ref.content.l.4="),
        "{mline}"
    );
    let config = doc["config"]["digest"].as_str().unwrap();
    let cline = content.lines().find(|l| l.starts_with(config)).unwrap();
    assert!(
        cline.contains("containerd.io/gc.ref.snapshot.overlayfs=sha256:"),
        "{cline}"
    );
    // Plain layers need no label naming their diff (compressed ones have
    // it: the identity test's zstd and gzip builds, checked by
    // `images check` above and containerd's own unpack there).
    assert_eq!(content.matches("containerd.io/uncompressed=").count(), 0);

    // Re-import: nothing is sent; the image is recorded and unpacked
    // already, so nothing is asked per layer either.
    let again = build_into(&fx, &cd, "t1", &["."]);
    assert_eq!(again["outputs"][0]["bytes_written"], 0);
    assert_eq!(again["manifest"]["digest"], doc["manifest"]["digest"]);
    assert_eq!(again["stats"]["layers_cached"], 5, "{again}");
    assert_eq!(again["outputs"][0]["unpack"]["existing"], 5, "{again}");
    assert_eq!(run(cd.ctr("t1").args(["leases", "ls", "-q"])).trim(), "");
    // Without its record (removed by hand), the image is recorded again
    // from what containerd still has.
    run(cd
        .ctr("t1")
        .args(["images", "rm", "docker.io/library/hello-app:latest"]));
    let back = build_into(&fx, &cd, "t1", &["."]);
    assert_eq!(back["manifest"]["digest"], doc["manifest"]["digest"]);
    assert_eq!(
        cd.run_image("t1", "docker.io/library/hello-app:latest", &[]),
        "hello from nix\n"
    );

    // Another image over the same store paths (no entrypoint, another name)
    // shares every blob and snapshot.
    let snaps = cd.snapshots("t1");
    let other = build_into(
        &fx,
        &cd,
        "t1",
        &[".#hello", "--tag", "other:1", "--no-sbom"],
    );
    // Only the new config and manifest are sent.
    let sent = other["outputs"][0]["bytes_written"].as_u64().unwrap();
    assert!(sent < 4096, "{other}");
    assert_eq!(cd.snapshots("t1"), snaps);
    assert_eq!(
        cd.run_image("t1", "docker.io/library/other:1", &["/bin/hello"]),
        "hello from nix\n"
    );

    // images ls and rm.
    let ls = nixoci_images(&fx, &cd, "t1", &["ls"]);
    let ls = String::from_utf8_lossy(&ls.stdout).into_owned();
    assert!(
        ls.contains("docker.io/library/hello-app:latest\tsha256:"),
        "{ls}"
    );
    assert!(ls.contains("docker.io/library/other:1"), "{ls}");
    let rm = nixoci_images(&fx, &cd, "t1", &["rm", "other:1"]);
    assert!(rm.status.success(), "{}", show(&rm));
    let rm = nixoci_images(&fx, &cd, "t1", &["rm", "other:1"]);
    assert_eq!(rm.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&rm.stderr).contains("no image docker.io/library/other:1"));
}

#[test]
fn images_sharing_store_paths_share_blobs_and_snapshots() {
    let cd = Containerd::start();
    let fx = Fixture::flake("hello");
    // greet-lib's image starts with the same three layers as hello-app's:
    // busybox, greet-data, and greet-lib itself (as the root output here, one
    // of the dependencies there: the same tar either way). Those blobs and
    // snapshots (chain IDs) are shared.
    let a = build_into(&fx, &cd, "s", &["."]);
    let b = build_into(&fx, &cd, "s", &[".#greet-lib", "--no-sbom"]);
    assert_eq!(a["layers"].as_array().unwrap().len(), 5);
    assert_eq!(b["layers"].as_array().unwrap().len(), 4);
    assert_eq!(a["layers"][0], b["layers"][0]);
    assert_eq!(a["layers"][1], b["layers"][1]);
    assert_eq!(a["layers"][2], b["layers"][2]);
    assert_eq!(cd.snapshots("s").len(), 5 + 4 - 3);
    let busybox_layer = a["layers"][0]["blob"]["size"].as_u64().unwrap();
    let sent = b["outputs"][0]["bytes_written"].as_u64().unwrap();
    assert!(
        sent < busybox_layer / 10,
        "shared layers are not sent again: {sent}"
    );
    // The three shared layers cost one call each way, not one per layer:
    // their blobs are looked up together before the build and together
    // again once the manifest refers to them (the other two calls are the
    // new config's and manifest's); their snapshots by the top one alone.
    let out = &b["outputs"][0];
    assert_eq!(out["blob_lookups"], 4, "{out}");
    assert_eq!(out["unpack"]["existing"], 3, "{out}");
    assert_eq!(out["unpack"]["snapshot_lookups"], 1, "{out}");
    assert_images_complete(&cd, "s");
}

/// A string field (a JSON pointer) of every layer of a --json document.
fn of_layers(doc: &serde_json::Value, field: &str) -> Vec<String> {
    doc["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.pointer(field).unwrap().as_str().unwrap().to_string())
        .collect()
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Layers from the layer cache whose top snapshot is gone (removed by
/// hand here) are looked up one by one again, and the missing ones are
/// unpacked.
#[test]
fn cached_layers_whose_top_snapshot_is_gone_are_unpacked_again() {
    let cd = Containerd::start();
    let fx = Fixture::flake("hello");
    let a = build_into(&fx, &cd, "g", &["."]);
    let diff_ids = of_layers(&a, "/diff_id");
    let mut top = diff_ids[0].clone();
    for d in &diff_ids[1..] {
        use sha2::Digest;
        let h = sha2::Sha256::digest(format!("{top} {d}").as_bytes());
        top = format!("sha256:{}", hex_of(&h));
    }
    let snaps = cd.snapshots("g");
    assert!(snaps.contains(&top), "{snaps:?} lacks {top}");
    // The snapshots below it go with it, to containerd's collector (they
    // were kept only as its parents), sooner or later.
    run(cd.ctr("g").args(["snapshot", "rm", &top]));
    assert!(!cd.snapshots("g").contains(&top));

    let b = build_into(&fx, &cd, "g", &["."]);
    assert_eq!(b["manifest"]["digest"], a["manifest"]["digest"]);
    let out = &b["outputs"][0];
    assert_eq!(out["bytes_written"], 0, "{out}");
    let (existing, filled) = (&out["unpack"]["existing"], &out["unpack"]["filled"]);
    assert_eq!(
        existing.as_u64().unwrap() + filled.as_u64().unwrap(),
        5,
        "{out}"
    );
    assert!(filled.as_u64().unwrap() >= 1, "{out}");
    // The top of the run, then each layer.
    assert_eq!(out["unpack"]["snapshot_lookups"], 1 + 5, "{out}");
    assert_eq!(cd.snapshots("g"), snaps);
    assert_eq!(
        cd.run_image("g", "docker.io/library/hello-app:latest", &[]),
        "hello from nix\n"
    );
    assert_images_complete(&cd, "g");
}

#[test]
fn edge_cases_unpacked_by_containerd_match_the_store() {
    let cd = Containerd::start();
    let fx = Fixture::flake("edge");
    let doc = build_into(&fx, &cd, "e", &["."]);
    assert_eq!(
        cd.run_image("e", "docker.io/library/edge-cases:latest", &["/bin/run"]),
        "edge\n"
    );
    // Every file shape, as containerd's diff.Apply wrote it into the snapshot.
    let mnt = tempfile::tempdir().unwrap();
    run(cd
        .ctr("e")
        .args(["images", "mount", "docker.io/library/edge-cases:latest"])
        .arg(mnt.path()));
    let root = doc["store_path"].as_str().unwrap();
    let check =
        std::panic::catch_unwind(|| assert_closure_in_rootfs(&nix_closure(root), mnt.path()));
    run(cd.ctr("e").args(["images", "unmount"]).arg(mnt.path()));
    check.unwrap();
}

#[test]
fn k8s_io_images_are_seen_by_the_cri() {
    let cd = Containerd::start();
    let fx = Fixture::flake("hello");
    build_into(
        &fx,
        &cd,
        "k8s.io",
        &[".", "--tag", "registry.example/team/hello:v1"],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The CRI plugin learns of images from containerd's events, so it may
    // take a moment; the kubelet polls the same way.
    let tags: Vec<String> = rt.block_on(async {
        let channel = containerd_client::connect(cd.socket()).await.unwrap();
        let mut cri = k8s_cri::v1::image_service_client::ImageServiceClient::new(channel);
        let spec = k8s_cri::v1::ImageSpec {
            image: "registry.example/team/hello:v1".into(),
            ..Default::default()
        };
        let start = std::time::Instant::now();
        loop {
            let status = cri
                .image_status(k8s_cri::v1::ImageStatusRequest {
                    image: Some(spec.clone()),
                    verbose: false,
                })
                .await
                .unwrap()
                .into_inner();
            if status.image.is_some() {
                break;
            }
            assert!(
                start.elapsed().as_secs() < 20,
                "the CRI never saw the image"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let list = cri
            .list_images(k8s_cri::v1::ListImagesRequest { filter: None })
            .await
            .unwrap();
        list.into_inner()
            .images
            .into_iter()
            .flat_map(|i| i.repo_tags)
            .collect()
    });
    assert!(
        tags.contains(&"registry.example/team/hello:v1".to_string()),
        "{tags:?}"
    );
}

#[test]
fn private_engine_from_nothing_and_unreachable_addresses() {
    let fx = Fixture::flake("hello");
    let home = fx.out("home");
    let nixoci = || {
        let mut c = fx.nixoci();
        c.current_dir(fx.dir())
            .env("NIXOCI_HOME", &home)
            .env_remove("CONTAINERD_ADDRESS")
            .env_remove("XDG_RUNTIME_DIR");
        c
    };
    // No containerd answers and none can be started: every address is named.
    let o = nixoci()
        .env("NIXOCI_CONTAINERD", "/nonexistent/containerd")
        .args([
            "build",
            ".",
            "--containerd-address",
            "/nonexistent/dir/x.sock",
            "-o",
            "containerd",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for want in [
        "/nonexistent/dir/x.sock",
        &format!("{}/containerd/containerd.sock", home.display()),
        "/run/containerd/containerd.sock",
        "apt-get install containerd runc",
    ] {
        assert!(err.contains(want), "missing {want:?} in {err}");
    }
    // From nothing: the build starts the private containerd and says so.
    let o = nixoci()
        .args(["build", ".", "-o", "containerd"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("started nixoci's private containerd"));
    let sock = home.join("containerd/containerd.sock");
    let mut ctr = Command::new("ctr");
    ctr.arg("--address").arg(&sock);
    let out = ctr_run(ctr, &home, "docker.io/library/hello-app:latest", None, &[]);
    assert_eq!(out, "hello from nix\n");
    // Reused, not started again.
    let o = nixoci()
        .args(["build", ".", "-o", "containerd"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(!String::from_utf8_lossy(&o.stderr).contains("started"));
    let status = run(nixoci().args(["engine", "status"]));
    assert!(status.starts_with("running: containerd"), "{status}");
    assert!(run(nixoci().args(["engine", "stop"])).contains("stopped"));
    assert!(run(nixoci().args(["engine", "status"])).starts_with("not running"));
    assert!(run(nixoci().args(["engine", "start"])).contains("started"));
    assert!(run(nixoci().args(["engine", "stop"])).contains("stopped"));
}

#[test]
fn sigkill_at_any_moment_leaves_no_broken_image() {
    let cd = Containerd::start();
    let fx = Fixture::flake("big");
    // Each kill lands mid-work, and proves it: at the moment of the kill
    // the build's lease exists (content is being written or unpacked, no
    // image record yet). Delays after the lease appears spread the kills
    // over the upload, the unpack and the record.
    let mut proven = 0;
    for (i, delay_ms) in [0u64, 20, 60, 150, 300, 600].into_iter().enumerate() {
        let mut child = fx
            .nixoci()
            .current_dir(fx.dir())
            .env("NIXOCI_HOME", fx.out("home"))
            .args([
                "build",
                ".",
                "--no-cache",
                "--containerd-address",
                &cd.socket(),
                "-o",
                "containerd:kill",
            ])
            .arg("--tag")
            .arg(format!("k{i}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        let leases = || run(cd.ctr("kill").args(["leases", "ls", "-q"]));
        while leases().trim().is_empty() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "kill {i}: the build ended before it took a lease"
            );
            assert!(started.elapsed().as_secs() < 120, "kill {i}: no lease");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let mid_work = !leases().trim().is_empty();
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        if mid_work {
            proven += 1;
        }
        assert_images_complete(&cd, "kill");
    }
    assert!(
        proven >= 4,
        "only {proven} of 6 kills landed while the lease existed"
    );
    // The next run completes, the image runs, and every blob re-hashes.
    build_into(&fx, &cd, "kill", &[".", "--tag", "final"]);
    assert_images_complete(&cd, "kill");
    // What killed builds staged (layers filled ahead of the snapshot
    // chain) was removed by that run, and it left none of its own.
    let staging = cd
        .dir
        .path()
        .join("root/io.containerd.snapshotter.v1.overlayfs/nixoci-staging");
    let left: Vec<_> = std::fs::read_dir(&staging).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    let v = fx
        .nixoci()
        .env("NIXOCI_HOME", fx.out("home"))
        .args([
            "verify",
            "containerd:final",
            "--namespace",
            "kill",
            "--containerd-address",
        ])
        .arg(cd.socket())
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", show(&v));
}

fn nixoci_load(fx: &Fixture, cd: &Containerd, args: &[&str]) -> std::process::Output {
    fx.nixoci()
        .env("NIXOCI_HOME", fx.out("home"))
        .args([
            "load",
            "--containerd-address",
            &cd.socket(),
            "--namespace",
            "load",
        ])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn load_every_source_form() {
    let cd = Containerd::start();
    let fx = Fixture::flake("hello");
    let (oci, ociar, dock) = (fx.out("oci"), fx.out("o.tar"), fx.out("d.tar"));
    fx.build_ok(&[
        ".",
        "-o",
        &format!("oci:{}", oci.display()),
        "-o",
        &format!("oci-archive:{}", ociar.display()),
        "-o",
        &format!("docker-archive:{}", dock.display()),
    ]);
    // A gzip docker-archive, as dockerTools.buildImage makes, and the same in the store.
    let gz = fx.out("d.tar.gz");
    run(Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -c {} > {}", dock.display(), gz.display())));
    let in_store = run(Command::new("nix-store").arg("--add").arg(&gz))
        .trim()
        .to_string();
    let sources = [
        format!("oci:{}", oci.display()),
        format!("oci-archive:{}", ociar.display()),
        format!("docker-archive:{}", dock.display()),
        format!("docker-archive:{}", gz.display()),
        in_store,
    ];
    for (i, s) in sources.iter().enumerate() {
        let o = nixoci_load(&fx, &cd, &[s, "--tag", &format!("l{i}")]);
        assert!(o.status.success(), "{s}: {}", show(&o));
        let out = cd.run_image("load", &format!("docker.io/library/l{i}:latest"), &[]);
        assert_eq!(out, "hello from nix\n", "{s}");
    }
    assert_images_complete(&cd, "load");
    // Without --tag the name comes from the source.
    let o = nixoci_load(&fx, &cd, &[&format!("docker-archive:{}", dock.display())]);
    assert!(o.status.success(), "{}", show(&o));
    let ls = run(cd.ctr("load").args(["images", "ls", "-q"]));
    assert!(ls.contains("docker.io/library/hello-app:latest"), "{ls}");
    // And into an OCI layout, checked by skopeo.
    let out = fx.out("reloaded");
    let o = fx
        .nixoci()
        .args([
            "load",
            &format!("docker-archive:{}", gz.display()),
            "-o",
            &format!("oci:{}", out.display()),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    nixoci::sink::oci_dir::fsck(&out).unwrap();
    skopeo_inspect(&format!("oci:{}:latest", out.display()), false);
}

/// (name, content) of a tar entry.
type TarEntry<'a> = (&'a str, Vec<u8>);

/// Write a tar with the given entries.
fn write_tar(path: &std::path::Path, entries: &[TarEntry]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.finish().unwrap();
}

#[test]
fn malformed_archives_are_refused_with_kurtosis_messages() {
    let cd = Containerd::start();
    let fx = Fixture::flake("hello");
    let layer = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "f", &b"abc"[..]).unwrap();
        b.into_inner().unwrap()
    };
    let diff = nixoci::oci::Digest::of(&layer).to_string();
    let config = |d: &str| {
        format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{d}"]}}}}"#).into_bytes()
    };
    let manifest = |n: usize| {
        let one = r#"{"Config":"c.json","RepoTags":["x:1"],"Layers":["l/layer.tar"]}"#;
        format!("[{}]", vec![one; n].join(",")).into_bytes()
    };
    let cases: Vec<(&str, Vec<TarEntry>, &str)> = vec![
        (
            "no-manifest",
            vec![("c.json", config(&diff)), ("l/layer.tar", layer.clone())],
            "manifest.json not found in the image",
        ),
        (
            "two-images",
            vec![
                ("manifest.json", manifest(2)),
                ("c.json", config(&diff)),
                ("l/layer.tar", layer.clone()),
            ],
            "Image has more than 1 label/tag",
        ),
        (
            "no-layer",
            vec![("manifest.json", manifest(1)), ("c.json", config(&diff))],
            "layer 'l/layer.tar' is listed but missing",
        ),
        (
            "no-config",
            vec![
                ("manifest.json", manifest(1)),
                ("l/layer.tar", layer.clone()),
            ],
            "config 'c.json' is listed but missing",
        ),
        (
            "bad-diff-id",
            vec![
                ("manifest.json", manifest(1)),
                ("c.json", config(&format!("sha256:{}", "0".repeat(64)))),
                ("l/layer.tar", layer.clone()),
            ],
            "but the config says sha256:0000",
        ),
    ];
    for (name, entries, want) in cases {
        let path = fx.out(&format!("{name}.tar"));
        write_tar(&path, &entries);
        let o = nixoci_load(&fx, &cd, &[&format!("docker-archive:{}", path.display())]);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", show(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{name}: want {want:?} in {err}");
        assert!(
            err.contains(&path.display().to_string()),
            "{name}: the archive is named: {err}"
        );
    }
    // The good case loads, so the refusals above are about the faults.
    let good = fx.out("good.tar");
    write_tar(
        &good,
        &[
            ("manifest.json", manifest(1)),
            ("c.json", config(&diff)),
            ("l/layer.tar", layer),
        ],
    );
    let o = nixoci_load(&fx, &cd, &[&format!("docker-archive:{}", good.display())]);
    assert!(o.status.success(), "{}", show(&o));
    let ls = run(cd.ctr("load").args(["images", "ls", "-q"]));
    assert_eq!(
        ls.trim(),
        "docker.io/library/x:1",
        "only the good image was recorded"
    );
    assert_eq!(
        run(cd.ctr("load").args(["leases", "ls", "-q"])).trim(),
        "",
        "no lease left by the failures"
    );
}

/// Rewrite a blob of an OCI layout under its new digest; returns the digest.
fn put_blob(layout: &std::path::Path, bytes: &[u8]) -> String {
    let d = nixoci::oci::Digest::of(bytes);
    std::fs::write(layout.join("blobs/sha256").join(d.hex()), bytes).unwrap();
    d.to_string()
}

#[test]
fn digest_mismatches_reported_by_containerd_are_errors() {
    let cd = Containerd::start();
    let fx = Fixture::flake("hello");
    let read_json = |p: std::path::PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };

    // 1. A layer blob whose bytes no longer match its digest: the content
    //    commit fails (containerd checks the expected digest).
    let corrupt = fx.out("corrupt");
    let doc = fx.build_json(&[".", "-o", &format!("oci:{}", corrupt.display())]);
    let layer = doc["layers"][0]["blob"]["digest"].as_str().unwrap();
    let path = corrupt.join("blobs/sha256").join(&layer[7..]);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let o = nixoci_load(
        &fx,
        &cd,
        &[&format!("oci:{}", corrupt.display()), "--tag", "corrupt:1"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(layer) && err.contains("digest"), "{err}");

    // 2. A config whose diff_id disagrees with the layer's content: diff.Apply
    //    reports the real digest and the import fails.
    let lying = fx.out("lying");
    let doc = fx.build_json(&[".", "-o", &format!("oci:{}", lying.display())]);
    let blobs = lying.join("blobs/sha256");
    let manifest_digest = doc["manifest"]["digest"].as_str().unwrap();
    let mut manifest = read_json(blobs.join(&manifest_digest[7..]));
    let mut config = read_json(blobs.join(&doc["config"]["digest"].as_str().unwrap()[7..]));
    config["rootfs"]["diff_ids"][0] = format!("sha256:{}", "1".repeat(64)).into();
    let cbytes = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = put_blob(&lying, &cbytes).into();
    manifest["config"]["size"] = cbytes.len().into();
    let mbytes = serde_json::to_vec(&manifest).unwrap();
    let mut index = read_json(lying.join("index.json"));
    index["manifests"][0]["digest"] = put_blob(&lying, &mbytes).into();
    index["manifests"][0]["size"] = mbytes.len().into();
    std::fs::write(
        lying.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let o = nixoci_load(
        &fx,
        &cd,
        &[&format!("oci:{}", lying.display()), "--tag", "lying:1"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("the layer is corrupt") && err.contains("1111111111"),
        "{err}"
    );

    // Neither left an image or a lease behind.
    assert_eq!(run(cd.ctr("load").args(["images", "ls", "-q"])).trim(), "");
    assert_eq!(run(cd.ctr("load").args(["leases", "ls", "-q"])).trim(), "");
}

#[test]
fn filling_snapshots_directly_matches_diff_apply() {
    let cd = Containerd::start();
    // containerd's differ gets plain blobs (the default here), zstd and
    // gzip ones.
    for (flake, image, layers, compression, media) in [
        ("hello", "hello-app", 5, "none", "tar"),
        ("hello", "hello-app", 5, "zstd", "tar+zstd"),
        ("edge", "edge-cases", 4, "gzip", "tar+gzip"),
    ] {
        let fx = Fixture::flake(flake);
        // The fast path (the default here: containerd is local, we are
        // root): blobs placed in containerd's content directory, layers
        // filled ahead of the snapshot chain...
        let tag = format!("{flake}-{compression}");
        let (fill_ns, apply_ns) = (format!("fill-{tag}"), format!("apply-{tag}"));
        let args: &[&str] = match compression {
            "none" => &["."],
            c => &[".", "--compression", c],
        };
        let fast = build_into(&fx, &cd, &fill_ns, args);
        let got = fast["layers"][0]["blob"]["mediaType"].as_str().unwrap();
        assert_eq!(got, format!("application/vnd.oci.image.layer.v1.{media}"));
        assert_eq!(fast["outputs"][0]["unpack"]["filled"], layers, "{fast}");
        assert_eq!(fast["outputs"][0]["unpack"]["staged"], layers, "{fast}");
        assert_eq!(fast["outputs"][0]["unpack"]["applied"], 0);
        // Every layer, the config and the manifest (and the referrers).
        assert!(
            fast["outputs"][0]["blobs_placed"].as_u64().unwrap() > layers + 1,
            "{fast}"
        );
        // A compressed layer is labelled with its diff, as containerd's
        // own unpacker labels it; a plain one is its diff.
        let labels = run(cd.ctr(&fill_ns).args(["content", "ls"]))
            .matches("containerd.io/uncompressed=")
            .count();
        assert_eq!(
            labels,
            if compression == "none" {
                0
            } else {
                layers as usize
            }
        );
        // Store files linked, not copied (one filesystem, owner 0:0).
        assert!(
            fast["outputs"][0]["unpack"]["files_linked"]
                .as_u64()
                .unwrap()
                > 0,
            "{fast}"
        );
        // And copied when asked: the third tree compared below.
        let copy_ns = format!("copy-{tag}");
        let o = fx
            .nixoci()
            .current_dir(fx.dir())
            .env("NIXOCI_HOME", fx.out("home"))
            .env("NIXOCI_LINK", "copy")
            .args(["build", ".", "--json", "--compression", compression])
            .args(["--containerd-address", &cd.socket(), "-o"])
            .arg(format!("containerd:{copy_ns}"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", show(&o));
        let copied: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let u = &copied["outputs"][0]["unpack"];
        assert_eq!(u["files_linked"], 0, "{copied}");
        // ...and containerd's own diff.Apply of the same blobs.
        let o = fx
            .nixoci()
            .current_dir(fx.dir())
            .env("NIXOCI_HOME", fx.out("home"))
            .env("NIXOCI_UNPACK", "apply")
            .args([
                "build",
                ".",
                "--json",
                "--compression",
                compression,
                "--containerd-address",
                &cd.socket(),
                "-o",
            ])
            .arg(format!("containerd:{apply_ns}"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", show(&o));
        let slow: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(slow["outputs"][0]["unpack"]["applied"], layers, "{slow}");
        assert_eq!(slow["manifest"], fast["manifest"]);
        // The two unpacked images, as a container sees them, are identical.
        let name = format!("docker.io/library/{image}:latest");
        let (m1, m2, m3) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        for (ns, m) in [(&fill_ns, &m1), (&apply_ns, &m2), (&copy_ns, &m3)] {
            run(cd.ctr(ns).args(["images", "mount", &name]).arg(m.path()));
        }
        let check = std::panic::catch_unwind(|| {
            assert_identical_trees(m2.path(), m1.path());
            assert_identical_trees(m2.path(), m3.path());
        });
        for (ns, m) in [(&fill_ns, &m1), (&apply_ns, &m2), (&copy_ns, &m3)] {
            run(cd.ctr(ns).args(["images", "unmount"]).arg(m.path()));
        }
        check.unwrap();
    }
    assert_eq!(
        cd.run_image("fill-hello-none", "docker.io/library/hello-app:latest", &[]),
        "hello from nix\n"
    );
    assert_eq!(
        cd.run_image(
            "fill-edge-gzip",
            "docker.io/library/edge-cases:latest",
            &["/bin/run"]
        ),
        "edge\n"
    );
}

#[test]
fn dockertools_outputs_are_loaded_as_they_are() {
    let cd = Containerd::start();
    let fx = Fixture::flake("dockertools");
    let mut digests = Vec::new();
    for output in ["plain", "gzipped", "stream"] {
        // Named by the archive (RepoTags web:latest) when no --tag is given.
        let doc = build_into(&fx, &cd, output, &[&format!(".#{output}")]);
        assert_eq!(doc["reference"], "docker.io/library/web:latest", "{output}");
        assert_eq!(
            cd.run_image(output, "docker.io/library/web:latest", &[]),
            "hello from a docker-archive\n"
        );
        assert_images_complete(&cd, output);
        digests.push(doc["manifest"]["digest"].clone());
        // --tag wins, with a warning that the archive says otherwise.
        let o = fx
            .nixoci()
            .current_dir(fx.dir())
            .env("NIXOCI_HOME", fx.out("home"))
            .args([
                "build",
                &format!(".#{output}"),
                "--tag",
                "other:2",
                "--containerd-address",
                &cd.socket(),
            ])
            .arg("-o")
            .arg(format!("containerd:{output}"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", show(&o));
        assert!(String::from_utf8_lossy(&o.stderr)
            .contains("it is stored as docker.io/library/other:2"));
        assert_eq!(
            cd.run_image(output, "docker.io/library/other:2", &[]),
            "hello from a docker-archive\n"
        );
    }
    // Plain, gzip and streamed: the same layers, so the same image.
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    // Into an OCI layout too, read by skopeo; flags that would change the
    // config are ignored, with a warning saying so.
    let oci = fx.out("oci");
    let o = fx
        .nixoci()
        .current_dir(fx.dir())
        .args(["build", ".#stream", "--entrypoint", "/bin/sh", "-o"])
        .arg(format!("oci:{}", oci.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("so --entrypoint is ignored"),
        "{}",
        show(&o)
    );
    nixoci::sink::oci_dir::fsck(&oci).unwrap();
    let cfg = skopeo_inspect(&format!("oci:{}:latest", oci.display()), true);
    assert_eq!(
        cfg["config"]["Entrypoint"],
        serde_json::json!(["/bin/hello"])
    );
    // Anything else is refused, naming the forms accepted; nothing is written.
    let o = fx
        .nixoci()
        .current_dir(fx.dir())
        .args(["build", ".#notanimage", "-o"])
        .arg(format!("oci:{}", fx.out("never").display()))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for want in [
        "just-a-file",
        "a package (a directory)",
        "a docker-archive",
        "stream-",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    assert!(!fx.out("never").exists());
}

/// A raw tar entry: any name (`..`, absolute), a file or a symlink.
fn raw_entry(out: &mut Vec<u8>, name: &str, link: Option<&str>, data: &[u8]) {
    let mut h = tar::Header::new_old();
    {
        let b = h.as_mut_bytes();
        b[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            b[157..157 + l.len()].copy_from_slice(l.as_bytes());
        }
    }
    h.set_mode(0o644);
    h.set_size(if link.is_some() { 0 } else { data.len() as u64 });
    h.set_entry_type(if link.is_some() {
        tar::EntryType::Symlink
    } else {
        tar::EntryType::Regular
    });
    h.set_mtime(1);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    if link.is_none() {
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
}

/// Hostile paths never write outside the image: a docker-archive whose
/// manifest names files outside the archive is refused (names are looked
/// up among the archive's own entries, never opened as paths), and a layer
/// whose entries climb out with `..`, are absolute, or write through a
/// symlink to the host is unpacked (by containerd's `diff.Apply`) with
/// everything kept inside the snapshot.
#[test]
fn hostile_archive_paths_never_write_outside_the_image() {
    let cd = Containerd::start();
    let fx = Fixture::flake("hello");
    let tag = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let outside = std::env::temp_dir().join(format!("nixoci-escape-dir-{tag}"));
    let layer = {
        let mut t = Vec::new();
        raw_entry(
            &mut t,
            &format!("../../../../../../tmp/escape-dotdot-{tag}"),
            None,
            b"x",
        );
        raw_entry(&mut t, &format!("/tmp/escape-abs-{tag}"), None, b"x");
        raw_entry(&mut t, "lnk", Some(outside.to_str().unwrap()), b"");
        raw_entry(&mut t, &format!("lnk/escape-link-{tag}"), None, b"x");
        t.extend_from_slice(&[0u8; 1024]);
        t
    };
    let diff = nixoci::oci::Digest::of(&layer).to_string();
    let config = format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff}"]}}}}"#).into_bytes();
    std::fs::create_dir_all(&outside).unwrap();
    // The manifest naming paths outside the archive: refused.
    let escaping = fx.out("escaping.tar");
    write_tar(
        &escaping,
        &[(
            "manifest.json",
            br#"[{"Config":"/etc/passwd","RepoTags":["x:1"],"Layers":["../../../etc/shadow"]}]"#
                .to_vec(),
        )],
    );
    let o = nixoci_load(
        &fx,
        &cd,
        &[&format!("docker-archive:{}", escaping.display())],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is listed but missing from the archive"),
        "{}",
        show(&o)
    );
    // The hostile layer.
    let hostile = fx.out("hostile.tar");
    write_tar(
        &hostile,
        &[
            (
                "manifest.json",
                br#"[{"Config":"c.json","RepoTags":["hostile:1"],"Layers":["l/layer.tar"]}]"#
                    .to_vec(),
            ),
            ("c.json", config),
            ("l/layer.tar", layer),
        ],
    );
    let o = nixoci_load(
        &fx,
        &cd,
        &[&format!("docker-archive:{}", hostile.display())],
    );
    let host_files = [
        std::env::temp_dir().join(format!("escape-dotdot-{tag}")),
        std::path::PathBuf::from(format!("/tmp/escape-dotdot-{tag}")),
        std::path::PathBuf::from(format!("/tmp/escape-abs-{tag}")),
        outside.join(format!("escape-link-{tag}")),
    ];
    for f in &host_files {
        assert!(
            !f.exists(),
            "{} was written on the host ({})",
            f.display(),
            show(&o)
        );
    }
    // containerd's diff.Apply keeps each such entry, inside the snapshot
    // (`..` stops at its root, absolute paths and symlink targets resolve
    // within it), as Docker does.
    assert!(o.status.success(), "{}", show(&o));
    {
        let found = run(Command::new("find")
            .arg(cd.dir.path().join("root"))
            .arg("-name")
            .arg(format!("escape-*-{tag}")));
        assert_eq!(found.lines().count(), 3, "{found}");
        for line in found.lines() {
            assert!(
                line.contains("/snapshots/") && line.contains("/fs/"),
                "outside a snapshot: {line}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&outside);
}

/// What a store file is, for comparing it before and after.
fn store_file_state(p: &std::path::Path) -> (Vec<u8>, u32, u32, u32, i64, i64, u64) {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(p).unwrap();
    (
        std::fs::read(p).unwrap(),
        md.mode(),
        md.uid(),
        md.gid(),
        md.mtime(),
        md.mtime_nsec(),
        md.ino(),
    )
}

/// A file linked from the store into a snapshot is the store's inode, and
/// a container that writes, appends, chmods and chowns it changes its own
/// copy (overlayfs copy-up), never the store.
#[test]
fn a_container_cannot_change_the_store_through_a_linked_file() {
    use std::os::unix::fs::MetadataExt;
    let cd = Containerd::start();
    let fx = Fixture::flake("hello");
    let doc = build_into(&fx, &cd, "link", &["."]);
    assert!(
        doc["outputs"][0]["unpack"]["files_linked"]
            .as_u64()
            .unwrap()
            > 0,
        "{doc}"
    );
    let root = doc["store_path"].as_str().unwrap();
    let closure = nix_closure(root);
    let data = closure.iter().find(|p| p.ends_with("-greet-data")).unwrap();
    let bb = closure.iter().find(|p| p.ends_with("-busybox")).unwrap();
    let file = std::path::PathBuf::from(format!("{data}/share/greeting"));
    let before = store_file_state(&file);
    // Linked: the image's file is the store's inode.
    let m = tempfile::tempdir().unwrap();
    let name = "docker.io/library/hello-app:latest";
    run(cd.ctr("link").args(["images", "mount", name]).arg(m.path()));
    let in_image = m.path().join(file.strip_prefix("/").unwrap());
    let ino = std::fs::metadata(&in_image).map(|md| md.ino());
    run(cd.ctr("link").args(["images", "unmount"]).arg(m.path()));
    assert_eq!(
        ino.unwrap(),
        before.6,
        "the image's file is not the store's inode"
    );
    let script = format!(
        "echo written > {f}.new && cat {f}.new > {f} && echo appended >> {f} && chmod 777 {f} && chown 1:1 {f} && cat {f}",
        f = file.display()
    );
    let out = cd.run_image(
        "link",
        name,
        &[&format!("{bb}/busybox"), "sh", "-c", &script],
    );
    assert_eq!(out, "written\nappended\n");
    assert_eq!(store_file_state(&file), before, "the store file changed");
    // And the image itself is unchanged for the next container.
    assert_eq!(cd.run_image("link", name, &[]), "hello from nix\n");
}

/// Where containerd's root is another filesystem than the store (a
/// tmpfs here), store files are copied.
#[test]
fn store_files_are_copied_across_filesystems() {
    let cd = Containerd::start_on(|d| {
        let root = d.join("root");
        std::fs::create_dir_all(&root).unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&root));
    });
    let root = cd.dir.path().join("root");
    let result = std::panic::catch_unwind(|| {
        let fx = Fixture::flake("hello");
        let doc = build_into(&fx, &cd, "xdev", &["."]);
        let u = &doc["outputs"][0]["unpack"];
        assert_eq!(u["files_linked"], 0, "{doc}");
        assert!(u["files_copied"].as_u64().unwrap() > 0, "{doc}");
        assert_eq!(
            cd.run_image("xdev", "docker.io/library/hello-app:latest", &[]),
            "hello from nix\n"
        );
    });
    drop(cd);
    let _ = Command::new("umount").arg("-l").arg(&root).status();
    result.unwrap();
}

/// Many blobs looked up at once: exactly those containerd has, over more
/// than one call's worth of digests, in this namespace only.
#[test]
fn blobs_looked_up_together_are_exactly_those_held() {
    use nixoci::containerd::content::{calls_for, infos};
    use nixoci::oci::digest::Digest;
    let cd = Containerd::start();
    let fx = Fixture::flake("hello");
    let doc = build_into(&fx, &cd, "l", &["."]);
    let real = of_layers(&doc, "/blob/digest");
    let mut asked: Vec<Digest> = (0..70u32)
        .map(|i| Digest::of(format!("absent {i}").as_bytes()))
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt
        .block_on(nixoci::containerd::Client::connect(&cd.socket(), "l"))
        .unwrap();
    let none = rt.block_on(infos(&client, &asked)).unwrap();
    assert!(none.is_empty(), "{none:?}");
    // The real ones spread over both calls' worth.
    for (i, r) in real.iter().enumerate() {
        asked.insert(i * 17, Digest::parse(r).unwrap());
    }
    assert!(calls_for(asked.len()) > 1);
    let found = rt.block_on(infos(&client, &asked)).unwrap();
    let mut got: Vec<&String> = found.keys().collect();
    got.sort();
    let mut want: Vec<&String> = real.iter().collect();
    want.sort();
    want.dedup();
    assert_eq!(got, want);
    for (d, info) in &found {
        assert_eq!(&info.digest, d);
        assert!(info.size > 0);
    }
    // Another namespace holds none of them.
    let other = rt
        .block_on(nixoci::containerd::Client::connect(
            &cd.socket(),
            "elsewhere",
        ))
        .unwrap();
    assert!(rt.block_on(infos(&other, &asked)).unwrap().is_empty());
}

/// Blobs placed in containerd's content directory: containerd names the
/// directory, takes a placed blob without its bytes, refuses one it cannot
/// see (then it is streamed, from the same file), and a damaged file under
/// a digest's name is an error naming it.
#[test]
fn blobs_are_placed_where_containerd_sees_them_else_streamed() {
    use nixoci::containerd::placed::{content_dir, PlacedBlob};
    use nixoci::oci::digest::Digest;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let cd = Containerd::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt
        .block_on(nixoci::containerd::Client::connect(&cd.socket(), "placed"))
        .unwrap();
    // Under a lease, as an import is: containerd's garbage collector (its
    // first run is 100 ms after start) would take unreferenced blobs.
    let lease = rt
        .block_on(nixoci::containerd::images::create_lease(&client))
        .unwrap();
    let client = client.with_lease(Some(lease));
    let real = cd.dir.path().join("root/io.containerd.content.v1.content");
    assert_eq!(rt.block_on(content_dir(&client)).as_deref(), Some(&*real));
    let blobs = |dir: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.join("blobs/sha256"))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let place = |dir: &std::path::Path, bytes: &[u8]| {
        let sent = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicBool::new(false));
        let mut b = PlacedBlob::start(
            dir,
            rt.handle(),
            &client,
            Arc::clone(&sent),
            Arc::clone(&refused),
        )
        .unwrap();
        b.write_all(bytes).unwrap();
        let d = Digest::of(bytes);
        (b.commit(&d), refused.load(Ordering::Relaxed), d)
    };
    let content = |d: &Digest| run(cd.ctr("placed").args(["content", "get", &d.to_string()]));

    // Into containerd's own directory: placed, read-only, and containerd
    // serves it (and `content get` re-reads it whole).
    let (placed, refused, d) = place(&real, b"placed blob\n");
    assert!(placed.unwrap() && !refused);
    let file = real.join("blobs/sha256").join(d.hex());
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777,
        0o444
    );
    assert_eq!(content(&d), "placed blob\n");

    // Into a directory containerd does not use: containerd refuses the
    // commit, the blob is streamed, and the decoy is left as it was.
    let decoy = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(decoy.path().join("ingest")).unwrap();
    std::fs::create_dir_all(decoy.path().join("blobs/sha256")).unwrap();
    let (placed, refused, d) = place(decoy.path(), b"streamed instead\n");
    assert!(!placed.unwrap() && refused);
    assert!(blobs(decoy.path()).is_empty(), "{:?}", blobs(decoy.path()));
    assert_eq!(content(&d), "streamed instead\n");
    assert!(blobs(&real).contains(&d.hex().to_string()));

    // A file of another size under the digest's name: an error naming it.
    let bytes = b"a blob whose file is damaged\n";
    let d = Digest::of(bytes);
    let damaged = real.join("blobs/sha256").join(d.hex());
    std::fs::write(&damaged, b"short").unwrap();
    let (placed, _, _) = place(&real, bytes);
    let e = placed.unwrap_err().to_string();
    assert!(
        e.contains(&damaged.display().to_string()) && e.contains("damaged"),
        "{e}"
    );

    // Nothing else was left in containerd's directory: the placed file,
    // the streamed one and the damaged one.
    assert_eq!(blobs(&real).len(), 3, "{:?}", blobs(&real));
}

/// Mount `name` of namespaces `fast` and `slow` and compare them strictly
/// (then `also` on the first), unmounting either way.
fn compare_mounted(
    cd: &Containerd,
    name: &str,
    fast: &str,
    slow: &str,
    also: impl Fn(&std::path::Path) + std::panic::RefUnwindSafe,
) {
    let (m1, m2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for (ns, m) in [(fast, &m1), (slow, &m2)] {
        run(cd.ctr(ns).args(["images", "mount", name]).arg(m.path()));
    }
    let check = std::panic::catch_unwind(|| {
        assert_identical_trees_strictly(m2.path(), m1.path());
        also(m1.path());
    });
    for (ns, m) in [(fast, &m1), (slow, &m2)] {
        run(cd.ctr(ns).args(["images", "unmount"]).arg(m.path()));
    }
    check.unwrap();
}

/// A tar entry for [`crafted_layer`]: name (written raw), type, mode,
/// owner, link target, data and PAX records.
type Entry<'a> = (
    &'a str,
    u8,
    u32,
    (u64, u64),
    &'a str,
    &'a [u8],
    &'a [(&'a str, &'a str)],
);

fn crafted_layer(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, mode, owner, link, data, pax) in entries {
        if !pax.is_empty() {
            b.append_pax_extensions(pax.iter().map(|(k, v)| (*k, v.as_bytes())))
                .unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(tar::EntryType::new(*kind));
        h.set_mode(*mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// An OCI layout at `dir` of one image (tag `1`) whose layers are these
/// tars, each compressed as named (`gzip`, `zstd`, `none`).
fn crafted_layout(dir: &std::path::Path, layers: &[(Vec<u8>, &str)]) {
    use nixoci::oci::digest::Digest;
    use std::io::Write;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = Digest::of(bytes);
        std::fs::write(blobs.join(d.hex()), bytes).unwrap();
        (d.to_string(), bytes.len())
    };
    let (mut descs, mut diff_ids) = (Vec::new(), Vec::new());
    for (tar, how) in layers {
        diff_ids.push(Digest::of(tar).to_string());
        let (blob, media) = match *how {
            "gzip" => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(tar).unwrap();
                (gz.finish().unwrap(), "tar+gzip")
            }
            "zstd" => (zstd::stream::encode_all(&tar[..], 1).unwrap(), "tar+zstd"),
            _ => (tar.clone(), "tar"),
        };
        let (digest, size) = put(&blob);
        descs.push(serde_json::json!({
            "mediaType": format!("application/vnd.oci.image.layer.v1.{media}"),
            "digest": digest, "size": size,
        }));
    }
    let config = serde_json::json!({
        "architecture": nixoci::oci::platform::host_arch(), "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (cd, cs) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": descs,
    });
    let (md, ms) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
            "annotations": {"org.opencontainers.image.ref.name": "1"}}],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

#[test]
fn layers_extracted_as_they_arrive_match_diff_apply() {
    let cd = Containerd::start();
    let dir = tempfile::tempdir().unwrap();
    let none: &[(&str, &str)] = &[];
    let first = crafted_layer(&[
        ("etc/", b'5', 0o755, (0, 0), "", b"", none),
        ("etc/sub/", b'5', 0o750, (5, 6), "", b"", none),
        ("etc/a", b'0', 0o644, (0, 0), "", b"a\n", none),
        (
            "etc/sub/x",
            b'0',
            0o600,
            (1000, 100),
            "",
            b"x\n",
            &[
                ("mtime", "1600000000.123456789"),
                ("SCHILY.xattr.user.test", "1"),
            ],
        ),
        ("etc/sub/y", b'0', 0o644, (0, 0), "", b"y\n", none),
        ("opt/", b'5', 0o755, (0, 0), "", b"", none),
        ("opt/keep", b'0', 0o644, (0, 0), "", b"keep\n", none),
        ("opt/old", b'0', 0o644, (0, 0), "", b"old\n", none),
        ("bin/", b'5', 0o755, (0, 0), "", b"", none),
        ("bin/tool", b'0', 0o4755, (0, 0), "", b"#!tool\n", none),
        ("bin/tool2", b'1', 0o4755, (0, 0), "bin/tool", b"", none),
        ("bin/sh", b'2', 0o777, (0, 0), "tool", b"", none),
    ]);
    let second = crafted_layer(&[
        ("opt/", b'5', 0o755, (0, 0), "", b"", none),
        ("opt/.wh.old", b'0', 0o644, (0, 0), "", b"", none),
        ("etc/", b'5', 0o755, (0, 0), "", b"", none),
        ("etc/sub/", b'5', 0o750, (5, 6), "", b"", none),
        ("etc/sub/.wh..wh..opq", b'0', 0o644, (0, 0), "", b"", none),
        ("etc/sub/z", b'0', 0o640, (0, 7), "", b"z\n", none),
    ]);
    // Declined (a '..'): containerd applies it, as it would anyway.
    let third = crafted_layer(&[("../escape", b'0', 0o644, (0, 0), "", b"out\n", none)]);
    crafted_layout(
        dir.path(),
        &[(first, "gzip"), (second, "zstd"), (third, "none")],
    );
    let load = |ns: &str, apply: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_nixoci"));
        if apply {
            c.env("NIXOCI_UNPACK", "apply");
        }
        let o = c
            .args([
                "load",
                "--json",
                "--tag",
                "crafted:1",
                "--containerd-address",
            ])
            .arg(cd.socket())
            .args(["--namespace", ns])
            .arg(format!("oci:{}", dir.path().display()))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", show(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["outputs"][0]["unpack"].clone()
    };
    let fast = load("extracted", false);
    assert_eq!(
        (fast["extracted"].as_u64(), fast["applied"].as_u64()),
        (Some(2), Some(1)),
        "{fast}"
    );
    let slow = load("applied", true);
    assert_eq!(
        (slow["extracted"].as_u64(), slow["applied"].as_u64()),
        (Some(0), Some(3)),
        "{slow}"
    );
    let name = "docker.io/library/crafted:1";
    compare_mounted(&cd, name, "extracted", "applied", |p| {
        // What the layers say, as a container sees it.
        assert!(!p.join("opt/old").exists() && p.join("opt/keep").exists());
        assert!(!p.join("etc/sub/x").exists() && p.join("etc/sub/z").exists());
        assert_eq!(std::fs::read(p.join("escape")).unwrap(), b"out\n");
    });
    // An image nixoci built (long and non-UTF-8 names, PAX records): the
    // same, loaded both ways.
    let fx = Fixture::flake("edge");
    let layout = fx.out("layout");
    fx.build_ok(&[
        fx.dir().to_str().unwrap(),
        "--compression",
        "gzip",
        "--tag",
        "crafted:1",
        "-o",
        &format!("oci:{}", layout.display()),
    ]);
    copy_dir(&layout, dir.path());
    let fast = load("edge-extracted", false);
    assert_eq!(
        (fast["extracted"].as_u64(), fast["applied"].as_u64()),
        (Some(4), Some(0)),
        "{fast}"
    );
    let slow = load("edge-applied", true);
    assert_eq!(slow["applied"].as_u64(), Some(4), "{slow}");
    compare_mounted(&cd, name, "edge-extracted", "edge-applied", |_| {});
    // Nothing is left in staging.
    let staging = cd
        .dir
        .path()
        .join("root/io.containerd.snapshotter.v1.overlayfs/nixoci-staging");
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);

    // A layer whose bytes are not its digest's: an error naming it, and
    // nothing extracted is left.
    let bad = tempfile::tempdir().unwrap();
    let other = crafted_layer(&[("f", b'0', 0o644, (0, 0), "", b"f\n", none)]);
    crafted_layout(bad.path(), &[(other, "gzip")]);
    let blobs = bad.path().join("blobs/sha256");
    let manifest: serde_json::Value = {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(bad.path().join("index.json")).unwrap()).unwrap();
        let d = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string();
        serde_json::from_slice(&std::fs::read(blobs.join(d)).unwrap()).unwrap()
    };
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let mut bytes = std::fs::read(blobs.join(&layer)).unwrap();
    let last = bytes.len() - 9;
    bytes[last] ^= 0xff;
    std::fs::write(blobs.join(&layer), bytes).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_nixoci"))
        .args(["load", "--tag", "bad:1", "--containerd-address"])
        .arg(cd.socket())
        .args(["--namespace", "bad"])
        .arg(format!("oci:{}", bad.path().display()))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&layer[..12]),
        "{}",
        show(&o)
    );
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
    assert_eq!(run(cd.ctr("bad").args(["images", "ls", "-q"])).trim(), "");
}

/// An interrupted import into containerd exits 130 and leaves nothing: no
/// image, no lease, and none of the layers it filled ahead of their build
/// (or was filling) in staging.
#[test]
fn an_interrupted_import_leaves_no_staged_layers() {
    let cd = Containerd::start();
    let fx = Fixture::flake("big");
    let root = realise(&fx.dir());
    let staging = cd
        .dir
        .path()
        .join("root/io.containerd.snapshotter.v1.overlayfs/nixoci-staging");
    // Slow layers (gzip at level 9), so the interrupt lands mid-build.
    let child = fx
        .nixoci()
        .env("NIXOCI_HOME", fx.out("home"))
        .args(["build", "--store-path", &root, "--no-cache"])
        .args(["--compression", "gzip", "--compression-level", "9"])
        .args(["--containerd-address", &cd.socket(), "-o", "containerd:int"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while std::fs::read_dir(&staging)
        .map(|d| d.count() == 0)
        .unwrap_or(true)
    {
        assert!(started.elapsed().as_secs() < 60, "nothing was ever staged");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", show(&o));
    let left: Vec<_> = std::fs::read_dir(&staging).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(run(cd.ctr("int").args(["images", "ls", "-q"])).trim(), "");
    assert_eq!(run(cd.ctr("int").args(["leases", "ls", "-q"])).trim(), "");
}
