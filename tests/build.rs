//! `nixoci build` against real Nix, checked with umoci, skopeo and chroot.

mod common;

use common::*;
use std::io::Read;
use std::path::Path;
use std::process::Command;

fn names_in_history(config: &serde_json::Value) -> Vec<String> {
    config["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["created_by"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn hello_runs_and_is_read_by_umoci_and_skopeo() {
    let fx = Fixture::flake("hello");
    let (oci, dock, ociar) = (fx.out("oci"), fx.out("d.tar"), fx.out("o.tar"));
    let doc = fx.build_json(&[
        ".",
        "-o",
        &format!("oci:{}", oci.display()),
        "-o",
        &format!("docker-archive:{}", dock.display()),
        "-o",
        &format!("oci-archive:{}", ociar.display()),
    ]);
    assert_eq!(doc["reference"], "docker.io/library/hello-app:latest");
    nixoci::sink::oci_dir::fsck(&oci).unwrap();
    let root = doc["store_path"].as_str().unwrap().to_string();
    let closure = nix_closure(&root);

    // skopeo reads all three forms; the OCI ones have our manifest digest.
    let digest = doc["manifest"]["digest"].as_str().unwrap();
    for r in [
        format!("oci:{}:latest", oci.display()),
        format!("oci-archive:{}:latest", ociar.display()),
    ] {
        assert_eq!(skopeo_inspect(&r, false)["Digest"], digest, "{r}");
    }
    let d = skopeo_inspect(&format!("docker-archive:{}", dock.display()), false);
    assert_eq!(d["Layers"].as_array().unwrap().len(), 5);

    // Config: entrypoint from meta.mainProgram, PATH, history naming each layer's paths.
    let config = skopeo_inspect(&format!("oci:{}:latest", oci.display()), true);
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!([format!("{root}/bin/hello")])
    );
    assert_eq!(config["config"]["Env"], serde_json::json!(["PATH=/bin"]));
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["created"], "1970-01-01T00:00:01Z");
    let hist = names_in_history(&config);
    // busybox is reached twice (app, lib), the others once: ties broken by name.
    let suffixes: Vec<&str> = hist[..4]
        .iter()
        .map(|h| h.rsplit('-').next().unwrap())
        .collect();
    assert_eq!(suffixes, ["busybox", "data", "lib", "app"], "{hist:?}");
    assert!(hist[4].contains("root layer"), "{hist:?}");

    // umoci unpacks it: the closure is byte-for-byte the store, the root layer is right.
    let rootfs = umoci_unpack(&oci, "latest", &fx.out("bundle"));
    assert_closure_in_rootfs(&closure, &rootfs);
    assert_eq!(
        std::fs::read_link(rootfs.join("bin/hello")).unwrap(),
        Path::new(&format!("{root}/bin/hello"))
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(rootfs.join("tmp"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o1777
    );
    assert!(std::fs::read_to_string(rootfs.join("etc/passwd"))
        .unwrap()
        .starts_with("root:x:0:0:"));
    assert!(std::fs::read_to_string(rootfs.join("etc/group"))
        .unwrap()
        .contains("nobody:x:65534:"));

    // And it runs: the entrypoint, chrooted into the unpacked image.
    let out = run(Command::new("chroot").arg(&rootfs).arg("/bin/hello"));
    assert_eq!(out, "hello from nix\n");

    // The docker-archive: what docker load reads; layers are plain tars.
    let mut a = tar::Archive::new(std::fs::File::open(&dock).unwrap());
    let mut manifest = None;
    let mut layer_magic = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        if name == "manifest.json" {
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            manifest = Some(serde_json::from_str::<serde_json::Value>(&s).unwrap());
        } else if name.ends_with("/layer.tar") {
            let mut head = vec![0u8; 512];
            e.read_exact(&mut head).unwrap();
            layer_magic.push(head[257..262].to_vec());
        }
    }
    let manifest = manifest.expect("manifest.json");
    assert_eq!(
        manifest[0]["RepoTags"],
        serde_json::json!(["hello-app:latest"])
    );
    assert_eq!(layer_magic.len(), 5);
    assert!(layer_magic.iter().all(|m| m == b"ustar"));
    // Copied out of the docker-archive by skopeo, it unpacks to the same tree.
    let copy = fx.out("from-docker");
    run(Command::new("skopeo").args([
        "copy",
        &format!("docker-archive:{}", dock.display()),
        &format!("oci:{}:latest", copy.display()),
    ]));
    let rootfs2 = umoci_unpack(&copy, "latest", &fx.out("bundle2"));
    assert_closure_in_rootfs(&closure, &rootfs2);

    // A docker-archive alone compresses nothing (its layers are plain
    // tars), whatever --compression says; the image (config) is the same.
    let alone = fx.out("alone.tar");
    for args in [
        &[][..],
        &["--compression", "gzip", "--compression-level", "9"][..],
    ] {
        let only = fx.build_json(
            &[
                &[".", "-o", &format!("docker-archive:{}", alone.display())][..],
                args,
            ]
            .concat(),
        );
        for l in only["layers"].as_array().unwrap() {
            assert_eq!(
                l["blob"]["mediaType"],
                "application/vnd.oci.image.layer.v1.tar"
            );
            assert_eq!(l["blob"]["digest"], l["diff_id"]);
        }
        assert_eq!(only["config"], doc["config"]);
        assert_eq!(
            std::fs::read(&alone).unwrap(),
            std::fs::read(&dock).unwrap()
        );
    }
}

#[test]
fn edge_cases_survive_every_compression() {
    let fx = Fixture::flake("edge");
    let mut diff_ids = Vec::new();
    for comp in ["gzip", "none", "zstd"] {
        let oci = fx.out(&format!("oci-{comp}"));
        let doc = fx.build_json(&[
            ".#default",
            "--compression",
            comp,
            "-o",
            &format!("oci:{}", oci.display()),
        ]);
        nixoci::sink::oci_dir::fsck(&oci).unwrap();
        let config = skopeo_inspect(&format!("oci:{}:latest", oci.display()), true);
        diff_ids.push(config["rootfs"]["diff_ids"].clone());
        let root = doc["store_path"].as_str().unwrap();
        let media = doc["layers"][0]["blob"]["mediaType"]
            .as_str()
            .unwrap()
            .to_string();
        match comp {
            "zstd" => {
                assert_eq!(media, "application/vnd.oci.image.layer.v1.tar+zstd");
                // umoci 0.4.7 reads no zstd; skopeo copies it, verifying every blob.
                let copy = fx.out("zstd-copy");
                run(Command::new("skopeo").args([
                    "copy",
                    &format!("oci:{}:latest", oci.display()),
                    &format!("oci:{}:latest", copy.display()),
                ]));
                nixoci::sink::oci_dir::fsck(&copy).unwrap();
            }
            _ => {
                let rootfs = umoci_unpack(&oci, "latest", &fx.out(&format!("bundle-{comp}")));
                assert_closure_in_rootfs(&nix_closure(root), &rootfs);
                // The single-file store path is a file in the image too.
                let single =
                    std::fs::read_link(rootfs.join(&root[1..]).join("single-link")).unwrap();
                assert!(rootfs.join(single.strip_prefix("/").unwrap()).is_file());
            }
        }
    }
    // Compression changes blobs, never the layers' content.
    assert_eq!(diff_ids[0], diff_ids[1]);
    assert_eq!(diff_ids[0], diff_ids[2]);
}

#[test]
fn layer_tars_are_deterministic_and_sorted_by_bytes() {
    let fx = Fixture::flake("edge");
    let oci = fx.out("oci");
    let doc = fx.build_json(&[
        ".",
        "--compression",
        "none",
        "-o",
        &format!("oci:{}", oci.display()),
    ]);
    let layers = doc["layers"].as_array().unwrap();
    let root = doc["store_path"].as_str().unwrap();
    // The root output's layer is second to last.
    let blob = layers[layers.len() - 2]["blob"]["digest"].as_str().unwrap();
    let path = oci.join("blobs/sha256").join(&blob[7..]);
    let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
    let mut names: Vec<Vec<u8>> = Vec::new();
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        assert_eq!(h.mtime().unwrap(), 1);
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
        assert_eq!(h.username_bytes().unwrap_or_default(), b"");
        let name = e.path_bytes().into_owned();
        if name.ends_with(b"/hard-a") || name.ends_with(b"/hard-b") {
            assert_eq!(
                h.entry_type(),
                tar::EntryType::Regular,
                "hardlinks become files"
            );
        }
        names.push(name);
    }
    assert_eq!(&names[..2], [b"nix/".to_vec(), b"nix/store/".to_vec()]);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries in byte order");
    let base = format!("{}/", &root[1..]);
    let has = |suffix: &[u8]| {
        names
            .iter()
            .any(|n| n.starts_with(base.as_bytes()) && n.ends_with(suffix))
    };
    assert!(has(b"caf\xe9-latin1"), "non-UTF-8 name kept as bytes");
    assert!(has("café-utf8".as_bytes()));
    assert!(has(b"empty/nested-empty/"), "empty directories kept");
    assert!(has(b"file-at-the-bottom-of-a-very-long-path"));
    assert!(names.iter().any(|n| n.len() > 255));
    // "sort/a-b/" sorts before "sort/a/" by bytes ('-' < '/').
    let pos = |s: &str| {
        names
            .iter()
            .position(|n| n.ends_with(s.as_bytes()))
            .unwrap()
    };
    assert!(pos("sort/a-b/") < pos("sort/a.c"));
    assert!(pos("sort/a.c") < pos("sort/a/"));
}

#[test]
fn reproducible_cold_and_warm_in_different_directories() {
    let fx = Fixture::flake("hello");
    let build = |cache: &str, out: &str| -> (String, Vec<u8>) {
        let dir = fx.out(out);
        let tar = fx.out(&format!("{out}.tar"));
        let o = nixoci_with_cache(&fx.out(cache))
            .current_dir(fx.dir())
            .args(["build", ".", "--json", "-o"])
            .arg(format!("oci:{}", dir.display()))
            .arg("-o")
            .arg(format!("docker-archive:{}", tar.display()))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", show(&o));
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (
            doc["manifest"]["digest"].as_str().unwrap().into(),
            std::fs::read(tar).unwrap(),
        )
    };
    let (cold1, tar1) = build("cache1", "a");
    let (cold2, tar2) = build("cache2", "b");
    let (warm, tar3) = build("cache1", "c");
    assert_eq!(cold1, cold2);
    assert_eq!(cold1, warm);
    assert!(
        tar1 == tar2 && tar2 == tar3,
        "docker-archives are byte-identical"
    );
    // The warm build took every layer from the cache.
    let o = nixoci_with_cache(&fx.out("cache1"))
        .current_dir(fx.dir())
        .args(["build", ".", "--json", "-o"])
        .arg(format!("oci:{}", fx.out("a").display()))
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["stats"]["layers_built"], 0);
    assert_eq!(doc["stats"]["bytes_read"], 0);
    assert_eq!(doc["manifest"]["digest"], cold1.as_str());
}

#[test]
fn one_layout_many_images() {
    let fx = Fixture::flake("hello");
    let oci = fx.out("layout");
    let o = format!("oci:{}", oci.display());
    let a = fx.build_json(&[".", "--tag", "a:1", "-o", &o]);
    let blobs = || std::fs::read_dir(oci.join("blobs/sha256")).unwrap().count();
    let before = blobs();
    // Another name over the same layers shares every blob (the manifest
    // too, and its SBOMs and provenance, which describe the content).
    fx.build_json(&[".", "--tag", "b", "-o", &o]);
    assert_eq!(blobs(), before);
    // Same name, different config: replaces the entry; the other stays.
    let a2 = fx.build_json(&[".", "--tag", "a:1", "--env", "X=1", "-o", &o]);
    assert_ne!(a["manifest"]["digest"], a2["manifest"]["digest"]);
    let images = nixoci::sink::oci_dir::list_images(&oci).unwrap();
    let names: Vec<&String> = images.keys().collect();
    assert_eq!(
        names,
        ["docker.io/library/a:1", "docker.io/library/b:latest"]
    );
    assert_eq!(
        images["docker.io/library/a:1"].digest.to_string(),
        a2["manifest"]["digest"].as_str().unwrap()
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
    let refs: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m.get("artifactType").is_none())
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(refs, ["latest", "1"]);
    nixoci::sink::oci_dir::fsck(&oci).unwrap();
    // skopeo finds each by its tag.
    skopeo_inspect(&format!("oci:{}:1", oci.display()), false);
}

#[test]
fn concurrent_builds_into_one_layout() {
    let fx = Fixture::flake("hello");
    fx.build_ok(&[".", "-o", &format!("oci:{}", fx.out("warm").display())]);
    let oci = fx.out("shared");
    let children: Vec<_> = (0..6)
        .map(|i| {
            fx.nixoci()
                .current_dir(fx.dir())
                .args(["build", ".", "--json", "--tag"])
                .arg(format!("t{i}"))
                .arg("--env")
                .arg(format!("N={i}"))
                .arg("-o")
                .arg(format!("oci:{}", oci.display()))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", show(&o));
    }
    assert_eq!(nixoci::sink::oci_dir::list_images(&oci).unwrap().len(), 6);
    nixoci::sink::oci_dir::fsck(&oci).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(oci.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn store_path_flags_and_config() {
    let fx = Fixture::flake("hello");
    let first = fx.build_json(&[".", "-o", &format!("oci:{}", fx.out("first").display())]);
    let root = first["store_path"].as_str().unwrap();
    let oci = fx.out("oci");
    let doc = fx.build_json(&[
        "--store-path",
        root,
        "--tag",
        "127.0.0.1:5000/me/hello:v2",
        "--no-root-links",
        "--no-tmp",
        "--no-etc-passwd",
        "--entrypoint",
        r#"["/bin/sh","-c"]"#,
        "--cmd",
        "echo  hi",
        "--env",
        "A=1",
        "--workdir",
        "/work",
        "--user",
        "65534:65534",
        "--expose",
        "8080",
        "--expose",
        "53/udp",
        "--label",
        "team=infra",
        "--annotation",
        "org.example.note=x",
        "--created",
        "2024-01-02T03:04:05Z",
        "-o",
        &format!("oci:{}", oci.display()),
    ]);
    assert_eq!(doc["reference"], "127.0.0.1:5000/me/hello:v2");
    // No root layer: one layer per store path.
    assert_eq!(
        doc["layers"].as_array().unwrap().len(),
        nix_closure(root).len()
    );
    let c = skopeo_inspect(&format!("oci:{}:v2", oci.display()), true);
    let cfg = &c["config"];
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(cfg["Cmd"], serde_json::json!(["echo", "hi"]));
    assert_eq!(
        cfg["Env"],
        serde_json::json!(["A=1"]),
        "no PATH without root links"
    );
    assert_eq!(cfg["WorkingDir"], "/work");
    assert_eq!(cfg["User"], "65534:65534");
    assert_eq!(
        cfg["ExposedPorts"],
        serde_json::json!({"53/udp": {}, "8080/tcp": {}})
    );
    assert_eq!(cfg["Labels"], serde_json::json!({"team": "infra"}));
    assert_eq!(c["created"], "2024-01-02T03:04:05Z");
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            oci.join("blobs/sha256")
                .join(&doc["manifest"]["digest"].as_str().unwrap()[7..]),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(m["annotations"]["org.example.note"], "x");

    // --max-layers 4 over 3 dependencies: one single, the rest, root, root layer.
    let doc = fx.build_json(&[
        ".",
        "--max-layers",
        "4",
        "-o",
        &format!("oci:{}", fx.out("four").display()),
    ]);
    assert_eq!(doc["layers"].as_array().unwrap().len(), 4);
    let c = skopeo_inspect(&format!("oci:{}:latest", fx.out("four").display()), true);
    let hist = names_in_history(&c);
    assert_eq!(hist[1].matches("/nix/store/").count(), 2, "{hist:?}");
    let rootfs = umoci_unpack(&fx.out("four"), "latest", &fx.out("b4"));
    assert_closure_in_rootfs(&nix_closure(root), &rootfs);
    // SOURCE_DATE_EPOCH sets mtimes and the creation time.
    let o = fx
        .nixoci()
        .current_dir(fx.dir())
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", ".", "--json", "-o"])
        .arg(format!("oci:{}", fx.out("sde").display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let c = skopeo_inspect(&format!("oci:{}:latest", fx.out("sde").display()), true);
    assert_eq!(c["created"], "2023-11-14T22:13:20Z");
}

/// Run a failing build; check the exit code and message and that the
/// output was not created.
fn fails(fx: &Fixture, args: &[&str], env: &[(&str, &str)], code: i32, want: &[&str]) {
    let out = fx.out("never");
    let mut c = fx.nixoci();
    c.current_dir(fx.dir()).arg("build").args(args);
    if !args.iter().any(|a| a.starts_with("-o") || *a == "--output") {
        c.arg("-o").arg(format!("oci:{}", out.display()));
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {}", show(&o));
    for w in want {
        assert!(err.contains(w), "{args:?}: missing {w:?} in:\n{err}");
    }
    assert!(!out.exists(), "{args:?} left {}", out.display());
}

#[test]
fn bad_input_is_a_clear_error_and_writes_nothing() {
    let fx = Fixture::flake("edge");
    fails(
        &fx,
        &["."],
        &[("NIXOCI_NIX", "/nonexistent/nix")],
        1,
        &["apt-get install nix-bin"],
    );
    fails(
        &fx,
        &[".#failing"],
        &[],
        1,
        &["this derivation fails on purpose", "nix", "build"],
    );
    fails(
        &fx,
        &["/nonexistent/flake#x"],
        &[],
        2,
        &["/nonexistent/flake", "does not exist"],
    );
    fails(
        &fx,
        &[".#nope"],
        &[],
        1,
        &["does not provide attribute", "nope"],
    );
    fails(&fx, &[".#whiteout"], &[], 1, &[".wh.secret", "whiteout"]);
    fails(
        &fx,
        &[".", "--tag", "Bad:x"],
        &[],
        2,
        &["'Bad:x'", "lowercase"],
    );
    fails(
        &fx,
        &[".", "--max-layers", "3"],
        &[],
        2,
        &["--max-layers 3", "between 4 and 125"],
    );
    let docker = format!("docker-archive:{}", fx.out("never").display());
    fails(
        &fx,
        &[".", "--compression", "zstd", "-o", &docker],
        &[],
        2,
        &["zstd", "docker-archive"],
    );
    let file = fx.out("plain-file");
    std::fs::write(&file, "x").unwrap();
    let under_file = format!("oci:{}/out", file.display());
    fails(
        &fx,
        &[".", "-o", &under_file],
        &[],
        2,
        &["is a regular file"],
    );
    fails(&fx, &[".", "-o", "tarball:x"], &[], 2, &["oci:DIR"]);
    fails(
        &fx,
        &[".", "--compression-level", "12"],
        &[],
        2,
        &["0 to 9"],
    );
    // A failure after layers were written leaves an existing layout as it was.
    let layout = fx.out("existing");
    fx.build_ok(&[".#default", "-o", &format!("oci:{}", layout.display())]);
    let before: Vec<_> = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let o = fx
        .nixoci()
        .current_dir(fx.dir())
        .args(["build", ".#whiteout", "-o"])
        .arg(format!("oci:{}", layout.display()))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let after: Vec<_> = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before.len(), after.len());
    nixoci::sink::oci_dir::fsck(&layout).unwrap();
}

#[test]
fn help_and_version() {
    let o = nixoci_with_cache(Path::new("/nonexistent"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("nixoci 0.1.0"));
    let o = nixoci_with_cache(Path::new("/nonexistent"))
        .args(["build", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    for w in [
        "--store-path",
        "--compression",
        "--max-layers",
        "docker-archive:FILE",
        "Examples:",
    ] {
        assert!(help.contains(w), "{w}");
    }
    let o = nixoci_with_cache(Path::new("/nonexistent"))
        .args(["build"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn interrupt_exits_130_and_leaves_nothing() {
    let fx = Fixture::flake("big");
    // Build the store path first, so the interrupt lands in the layer work.
    let root = realise(&fx.dir());
    for (kind, target) in [
        ("oci", fx.out("layout")),
        ("oci-archive", fx.out("image.tar")),
    ] {
        let mut child = fx
            .nixoci()
            .args([
                "build",
                "--store-path",
                &root,
                "--no-cache",
                "--compression-level",
                "9",
                "-o",
            ])
            .arg(format!("{kind}:{}", target.display()))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until a blob is being written, then interrupt.
        let started = std::time::Instant::now();
        let writing = || {
            walk(fx.tmp.path()).iter().any(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".tmp-")
            })
        };
        while !writing() {
            assert!(started.elapsed().as_secs() < 60, "no blob was ever written");
            assert!(
                child.try_wait().unwrap().is_none(),
                "build ended before it could be interrupted"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(130), "{}", show(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains("interrupted"));
        assert!(!target.exists(), "{kind} output left behind");
        let left: Vec<_> = walk(fx.tmp.path())
            .into_iter()
            .filter(|p| !p.starts_with(fx.dir()) && !p.starts_with(fx.out("cache")))
            .collect();
        assert!(left.is_empty(), "{kind}: left {left:?}");
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn progress_is_lines_without_a_terminal_and_a_bar_on_one() {
    let fx = Fixture::flake("hello");
    let o = fx
        .nixoci()
        .current_dir(fx.dir())
        .args(["build", ".", "--no-cache", "-o"])
        .arg(format!("oci:{}", fx.out("a").display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("layer   1: built sha256:"), "{err}");
    // On a terminal (script(1) gives the command a pty): a bar, no lines.
    let cmd = format!(
        "XDG_CACHE_HOME={} {} build . --no-cache -o oci:{}",
        fx.out("cache").display(),
        env!("CARGO_BIN_EXE_nixoci"),
        fx.out("b").display()
    );
    let out = run(Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(fx.dir()));
    assert!(out.contains("layers 5/5"), "{out}");
    assert!(!out.contains("layer   1: built"), "{out}");
}

#[test]
fn system_and_nix_options_reach_nix() {
    let fx = Fixture::flake("hello");
    let attempt = |args: &[&str]| {
        fx.nixoci()
            .current_dir(fx.dir())
            .arg("build")
            .args(args)
            .arg("-o")
            .arg(format!("oci:{}", fx.out("never").display()))
            .output()
            .unwrap()
    };
    // The flake has x86_64-linux packages only: Nix looks for aarch64's.
    let ways: [&[&str]; 2] = [
        &[".", "--system", "aarch64-linux"],
        &[".", "--nix-option", "system=aarch64-linux"],
    ];
    for args in ways {
        let o = attempt(args);
        assert_eq!(o.status.code(), Some(1), "{}", show(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("packages.aarch64-linux.default"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        attempt(&[".", "--nix-option", "no-equals"]).status.code(),
        Some(2)
    );
    assert_eq!(
        attempt(&[".", "--system", "vax-vms"]).status.code(),
        Some(2)
    );
    // With a store path, --system names the image's platform.
    let first = fx.build_json(&[".", "-o", &format!("oci:{}", fx.out("a").display())]);
    let root = first["store_path"].as_str().unwrap();
    let oci = fx.out("arm");
    fx.build_ok(&[
        "--store-path",
        root,
        "--system",
        "aarch64-linux",
        "-o",
        &format!("oci:{}", oci.display()),
    ]);
    let cfg = skopeo_inspect(&format!("oci:{}:latest", oci.display()), true);
    assert_eq!(cfg["architecture"], "arm64");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["platform"]["architecture"], "arm64");
}

#[test]
fn nix_is_evaluated_once_and_a_rebuild_calls_it_once() {
    let fx = Fixture::flake("hello");
    // An output of its own, so that the first build is a real one.
    let flake = fx.dir().join("flake.nix");
    let unique = format!(
        "hello from nix {}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let text = std::fs::read_to_string(&flake).unwrap();
    std::fs::write(&flake, text.replace("hello from nix", &unique)).unwrap();
    // A nix that writes down how it is called.
    let log = fx.out("nix.log");
    let wrapper = fx.out("nix");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec nix \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let calls = || -> Vec<String> {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        std::fs::remove_file(&log).ok();
        // The subcommand of each call, after the options nixoci puts first.
        text.lines()
            .map(|l| {
                l.split(' ')
                    .find(|w| ["eval", "build", "path-info"].contains(w))
                    .unwrap_or(l)
                    .to_string()
            })
            .collect()
    };
    let build = |args: &[&str]| {
        let o = fx
            .nixoci()
            .current_dir(fx.dir())
            .env("NIXOCI_NIX", &wrapper)
            .arg("build")
            .args(args)
            .arg("-o")
            .arg(format!("oci:{}", fx.out("oci").display()))
            .arg("--json")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", show(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let doc = build(&["."]);
    assert_eq!(calls(), ["eval", "build", "path-info"]);
    // A rebuild asks Nix its evaluation only: the closure is cached.
    build(&["."]);
    assert_eq!(calls(), ["eval"]);
    // With --store-path, Nix is not called at all.
    let store_path = doc["store_path"].as_str().unwrap().to_string();
    build(&["--store-path", &store_path]);
    assert_eq!(calls(), Vec::<String>::new());
    // A store path that is not the file it was (here: its ctime moved, as
    // when it is deleted and made again) is asked of Nix again.
    run(Command::new("chmod").args(["0555", &store_path]));
    build(&["."]);
    assert_eq!(calls(), ["eval", "path-info"]);
    build(&["--no-cache", "."]);
    assert_eq!(calls(), ["eval", "path-info"]);
    let image = fx.out("oci");
    let rootfs = umoci_unpack(&image, "latest", &fx.out("bundle"));
    let greeting = std::fs::read_dir(rootfs.join("nix/store"))
        .unwrap()
        .flatten()
        .find_map(|e| std::fs::read_to_string(e.path().join("share/greeting")).ok())
        .unwrap();
    assert_eq!(greeting.trim(), unique);
}

/// SIGKILL (no chance to clean up) while blobs are being written into an
/// OCI layout: each kill proves it landed mid-write (a temporary blob
/// existed at that moment); the layout's index never names a missing or
/// partial blob, the next build succeeds, and `nixoci verify` is clean.
#[test]
fn sigkill_while_writing_a_layout_leaves_it_consistent() {
    let fx = Fixture::flake("big");
    let layout = fx.out("layout");
    let root = fx.build_json(&[".", "-o", &format!("oci:{}", fx.out("warm").display())])
        ["store_path"]
        .as_str()
        .unwrap()
        .to_string();
    let mut proven = 0;
    for (i, delay_ms) in [0u64, 40, 120, 300].into_iter().enumerate() {
        let mut child = fx
            .nixoci()
            .args(["build", "--store-path", &root, "--no-cache", "--tag"])
            .arg(format!("k{i}"))
            .arg("-o")
            .arg(format!("oci:{}", layout.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let writing = || {
            walk(&layout).iter().any(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".tmp-")
            })
        };
        let started = std::time::Instant::now();
        while !writing() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "kill {i}: ended before writing"
            );
            assert!(
                started.elapsed().as_secs() < 60,
                "kill {i}: no blob written"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        if writing() && child.try_wait().unwrap().is_none() {
            proven += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        // Whatever index.json names is there, whole.
        nixoci::sink::oci_dir::fsck(&layout).unwrap();
    }
    assert!(proven >= 3, "only {proven} of 4 kills landed mid-write");
    fx.build_ok(&[
        "--store-path",
        &root,
        "--tag",
        "final",
        "-o",
        &format!("oci:{}", layout.display()),
    ]);
    let o = fx
        .nixoci()
        .args(["verify", &format!("oci:{}", layout.display())])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
}

/// Times an image config cannot carry are refused before anything runs,
/// with the value and the range named (they used to panic in the tar
/// writer); the largest accepted epoch builds.
#[test]
fn out_of_range_times_are_refused_not_panics() {
    let fx = Fixture::flake("hello");
    let out = format!("oci:{}", fx.out("layout").display());
    for (epoch, created, want) in [
        (
            Some("99999999999999999999"),
            None,
            "not a number of seconds",
        ),
        (Some("253402300800"), None, "after 9999-12-31T23:59:59Z"),
        (Some("-5"), None, "not a number of seconds"),
        (None, Some("99999999999999"), "after 9999-12-31T23:59:59Z"),
        (None, Some("2024-13-01T00:00:00Z"), "RFC 3339"),
    ] {
        let mut c = fx.nixoci();
        c.current_dir(fx.dir()).args(["build", ".", "-o", &out]);
        if let Some(e) = epoch {
            c.env("SOURCE_DATE_EPOCH", e);
        }
        if let Some(t) = created {
            c.args(["--created", t]);
        }
        let o = c.output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(2),
            "{epoch:?} {created:?}: {}",
            show(&o)
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want) && !err.contains("panicked"), "{err}");
        assert!(!fx.out("layout").exists(), "nothing is written");
    }
    // The last second RFC 3339 holds: mtimes past 2242 go into PAX records.
    let o = fx
        .nixoci()
        .current_dir(fx.dir())
        .env("SOURCE_DATE_EPOCH", "253402300799")
        .args(["build", ".", "--json", "-o", &out])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let cfg = common::skopeo_inspect(&format!("oci:{}:latest", fx.out("layout").display()), true);
    assert_eq!(cfg["created"], "9999-12-31T23:59:59Z", "{cfg}");
}

/// The closure read from the store's database is what `nix path-info`
/// says, path for path; a build from a store path then needs no Nix at all
/// (none on PATH), and makes the very image a build through Nix makes
/// from the same store path.
/// `NIXOCI_NIX_DB=off` asks Nix (and without one, says how to install it).
#[test]
fn the_store_database_says_what_nix_path_info_says() {
    let fx = Fixture::flake("hello");
    let o = fx
        .nixoci()
        .current_dir(fx.dir())
        .args(["build", ".", "--json", "-o"])
        .arg(format!("oci:{}", fx.out("first").display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let root = doc["store_path"].as_str().unwrap().to_string();
    let from_nix = nixoci::nix::parse_path_info_json(
        run(Command::new("nix").args([
            "--extra-experimental-features",
            "nix-command",
            "path-info",
            "--json",
            "--recursive",
            &root,
        ]))
        .as_bytes(),
    )
    .unwrap();
    let from_db = nixoci::nix::db::closure(
        Path::new(nixoci::nix::db::DB),
        &nixoci::nix::StorePath::parse(&root).unwrap(),
    )
    .unwrap();
    assert!(from_db.len() >= 2, "{from_db:?}");
    assert_eq!(from_db, from_nix);

    // No nix on PATH, a cache of its own: the database alone.
    let no_nix = fx.out("bin");
    std::fs::create_dir_all(&no_nix).unwrap();
    let build = |name: &str, env: &[(&str, &str)]| {
        let mut cmd = nixoci_with_cache(&fx.out(&format!("cache-{name}")));
        cmd.args(["build", "--store-path", &root, "--json", "-o"])
            .arg(format!("oci:{}", fx.out(name).display()))
            .envs(env.iter().copied());
        cmd.output().unwrap()
    };
    let o = build("db", &[("PATH", no_nix.to_str().unwrap())]);
    assert!(o.status.success(), "{}", show(&o));
    let db_doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let o = build(
        "off",
        &[("PATH", no_nix.to_str().unwrap()), ("NIXOCI_NIX_DB", "off")],
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("apt-get install nix-bin"),
        "{}",
        show(&o)
    );
    let o = build("nix", &[("NIXOCI_NIX_DB", "off")]);
    assert!(o.status.success(), "{}", show(&o));
    let nix_doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(db_doc["manifest"], nix_doc["manifest"]);
}
