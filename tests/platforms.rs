//! Multi-platform images: one image per Nix system and an OCI index over
//! them, built here for x86_64 natively and for aarch64 under qemu-user
//! (binfmt, set up by scripts/setup.sh), read by skopeo, pushed to and
//! pulled from a docker-registry, imported into containerd and run there
//! for both platforms.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The multi fixture, with Debian's arm64 busybox beside the host's.
fn multi() -> Fixture {
    let fx = Fixture::flake("multi");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/busybox-arm64.sh");
    let arm = PathBuf::from(run(&mut Command::new(script)).trim());
    let dir = fx.dir().join("bb-arm64");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(arm, dir.join("busybox")).unwrap();
    fx
}

const BOTH: [&str; 4] = ["--system", "x86_64-linux", "--system", "aarch64-linux"];

fn layer_digests(m: &Value) -> BTreeSet<String> {
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["blob"]["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn one_index_for_two_platforms_in_a_layout() {
    let fx = multi();
    let layout = fx.out("layout");
    let oci = format!("oci:{}", layout.display());
    let mut args = vec![".", "--output", &oci];
    args.extend(BOTH);
    let doc = fx.build_json(&args);
    let index_digest = doc["index"]["digest"].as_str().unwrap().to_string();
    let manifests = doc["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    assert_eq!(manifests[0]["platform"], "linux/amd64");
    assert_eq!(manifests[1]["platform"], "linux/arm64/v8");

    // skopeo reads the index, and each platform from it.
    let raw: Value = serde_json::from_str(&run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        &format!("{oci}:latest"),
    ])))
    .unwrap();
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    let platforms: Vec<Value> = raw["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"].clone())
        .collect();
    assert_eq!(
        platforms,
        [
            serde_json::json!({"architecture": "amd64", "os": "linux"}),
            serde_json::json!({"architecture": "arm64", "os": "linux", "variant": "v8"}),
        ]
    );
    let arm = run(Command::new("skopeo").args([
        "inspect",
        "--override-arch",
        "arm64",
        "--config",
        &format!("{oci}:latest"),
    ]));
    let arm: Value = serde_json::from_str(&arm).unwrap();
    assert_eq!(arm["architecture"], "arm64");
    assert_eq!(arm["variant"], "v8");
    let host = skopeo_inspect(&format!("{oci}:latest"), true);
    assert_eq!(host["architecture"], "amd64");

    // The architecture-independent greeting is one layer both share.
    let shared: Vec<String> = layer_digests(&manifests[0])
        .intersection(&layer_digests(&manifests[1]))
        .cloned()
        .collect();
    assert_eq!(shared.len(), 1, "{doc}");

    // Each platform's manifest is what a single-platform build makes.
    for (system, m) in [
        ("x86_64-linux", &manifests[0]),
        ("aarch64-linux", &manifests[1]),
    ] {
        let single = fx.build_json(&[
            ".",
            "--system",
            system,
            "--output",
            &format!("oci:{}", fx.out(system).display()),
        ]);
        assert_eq!(single["manifest"], m["manifest"], "{system}");
        assert_eq!(m["referrers"].as_array().unwrap().len(), 3);
    }
    // The provenance of the arm64 image says what it was built for.
    let o = fx
        .nixoci()
        .args(["sbom", &oci, "--provenance", "--platform", "linux/arm64"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let prov: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        prov["predicate"]["buildDefinition"]["externalParameters"]["system"],
        "aarch64-linux"
    );
    assert_eq!(
        prov["subject"][0]["digest"]["sha256"],
        manifests[1]["manifest"]["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap()
    );
    run(fx.nixoci().args(["verify", &oci]));
    // nixoci load chooses a platform from the index (default: this machine's).
    for (platform, m) in [(None, &manifests[0]), (Some("linux/arm64"), &manifests[1])] {
        let out = fx.out(&format!(
            "loaded-{}",
            platform.unwrap_or("host").replace('/', "-")
        ));
        let mut load = fx.nixoci();
        load.args(["load", &oci, "--json", "-o"])
            .arg(format!("oci:{}", out.display()));
        if let Some(p) = platform {
            load.args(["--platform", p]);
        }
        let o = load.output().unwrap();
        assert!(o.status.success(), "{}", show(&o));
        let loaded: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            loaded["manifest"]["digest"], m["manifest"]["digest"],
            "{platform:?}"
        );
    }

    // Reproducible: another copy, in Docker's words, gives the same index;
    // and into an OCI archive too.
    let again = multi();
    let archive = again.out("multi.tar");
    let doc2 = again.build_json(&[
        ".",
        "--platform",
        "linux/amd64,linux/arm64",
        "--output",
        &format!("oci-archive:{}", archive.display()),
    ]);
    assert_eq!(doc2["index"]["digest"], index_digest.as_str());
    let raw2 = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        &format!("oci-archive:{}:latest", archive.display()),
    ]));
    assert_eq!(
        format!("sha256:{}", sha256_hex(raw2.as_bytes())),
        index_digest
    );

    // A docker-archive holds one platform: refused before anything runs.
    let o = fx
        .nixoci()
        .current_dir(fx.dir())
        .args(["build", ".", "--output"])
        .arg(format!("docker-archive:{}", fx.out("d.tar").display()))
        .args(BOTH)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("holds one platform"),
        "{}",
        show(&o)
    );
    assert!(!fx.out("d.tar").exists());
    // A platform nixoci does not know, and a system the flake lacks.
    let o = fx
        .nixoci()
        .current_dir(fx.dir())
        .args(["build", ".", "--platform", "linux/mips"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let o = fx
        .nixoci()
        .current_dir(fx.dir())
        .args([
            "build",
            ".",
            "--system",
            "x86_64-linux",
            "--system",
            "riscv64-linux",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("riscv64-linux") && err.contains("extra-platforms"),
        "{err}"
    );
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[test]
fn two_platforms_through_a_registry_and_containerd() {
    let reg = Registry::start("");
    let cd = Containerd::start();
    let fx = multi();
    let target = format!("{}/multi/app:1", reg.addr());
    let layout = fx.out("layout");
    let socket = cd.socket();
    let mut args = vec![
        ".",
        "--insecure",
        "--containerd-address",
        &socket,
        "--output",
        "containerd",
    ];
    let reg_out = format!("registry:{target}");
    let oci = format!("oci:{}", layout.display());
    args.extend(["--output", &reg_out, "--output", &oci]);
    args.extend(BOTH);
    let doc = fx.build_json(&args);
    let index = doc["index"]["digest"].as_str().unwrap().to_string();
    let arm_manifest = doc["manifests"][1]["manifest"]["digest"]
        .as_str()
        .unwrap()
        .to_string();

    // containerd: the index, both platforms listed; the host's runs
    // natively, the arm64 one under emulation.
    let ls = run(cd.ctr("default").args(["images", "ls"]));
    assert!(ls.contains("linux/amd64,linux/arm64/v8"), "{ls}");
    assert!(ls.contains(&index), "{ls}");
    let image = "docker.io/library/multi-app:latest";
    assert_eq!(
        cd.run_image("default", image, &[]),
        "hello from every platform\nx86_64\n"
    );
    assert_eq!(
        cd.run_image_on("default", image, Some("linux/arm64"), &[]),
        "hello from every platform\naarch64\n"
    );
    let ours = fx
        .nixoci()
        .args([
            "images",
            "ls",
            "--json",
            "--containerd-address",
            &cd.socket(),
        ])
        .output()
        .unwrap();
    let ours: Value = serde_json::from_slice(&ours.stdout).unwrap();
    assert_eq!(
        ours[0]["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64/v8"])
    );

    // Both unpacked when asked.
    let mut args = vec![
        ".",
        "--containerd-address",
        &socket,
        "--output",
        "containerd:both",
    ];
    args.extend([
        "--unpack-platform",
        "linux/arm64",
        "--unpack-platform",
        "linux/amd64",
    ]);
    args.extend(BOTH);
    let both = fx.build_json(&args);
    let u = &both["outputs"][0]["unpack"];
    let layers = u["applied"].as_u64().unwrap()
        + u["filled"].as_u64().unwrap()
        + u["existing"].as_u64().unwrap();
    assert_eq!(layers, 8, "{both}");

    // The registry holds the index; nixoci pulls one platform of it.
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{target}"),
    ]));
    assert_eq!(format!("sha256:{}", sha256_hex(raw.as_bytes())), index);
    let arm = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--override-arch",
        "arm64",
        &format!("docker://{target}"),
    ]));
    let arm: Value = serde_json::from_str(&arm).unwrap();
    assert_eq!(arm["Architecture"], "arm64");
    let o = fx
        .nixoci()
        .args([
            "pull",
            "--insecure",
            "--json",
            "--platform",
            "linux/arm64",
            "--containerd-address",
            &cd.socket(),
            "--namespace",
            "arm",
            &target,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let pulled: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(pulled["manifest_digest"], arm_manifest.as_str());
    assert_eq!(
        cd.run_image_on("arm", &target, Some("linux/arm64"), &[]),
        "hello from every platform\naarch64\n"
    );
    // And the host's, by default.
    let o = fx
        .nixoci()
        .args([
            "pull",
            "--insecure",
            "--json",
            "--containerd-address",
            &cd.socket(),
        ])
        .args(["--namespace", "host", &target])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let pulled: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        pulled["manifest_digest"],
        doc["manifests"][0]["manifest"]["digest"]
    );
    assert_eq!(
        cd.run_image("host", &target, &[]),
        "hello from every platform\nx86_64\n"
    );
    // A platform the index lacks is named with those it has.
    let o = fx
        .nixoci()
        .args([
            "pull",
            "--insecure",
            "--platform",
            "linux/riscv64",
            "--containerd-address",
            &cd.socket(),
            &target,
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no linux/riscv64 image") && err.contains("linux/arm64/v8"),
        "{err}"
    );

    // nixoci push of the layout carries the whole index.
    let pushed = format!("{}/pushed/app:2", reg.addr());
    run(fx.nixoci().args(["push", "--insecure", &oci, &pushed]));
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{pushed}"),
    ]));
    assert_eq!(format!("sha256:{}", sha256_hex(raw.as_bytes())), index);

    // An index whose entries name no platform is pushed as any index is
    // read (this machine's platform, which it cannot name): a clear error.
    let bare_layout = fx.out("bare");
    copy_dir(&layout, &bare_layout);
    let blobs = bare_layout.join("blobs/sha256");
    let mut nested: Value = serde_json::from_slice(
        &std::fs::read(blobs.join(index.strip_prefix("sha256:").unwrap())).unwrap(),
    )
    .unwrap();
    for m in nested["manifests"].as_array_mut().unwrap() {
        m.as_object_mut().unwrap().remove("platform");
    }
    let bytes = serde_json::to_vec(&nested).unwrap();
    let hex = sha256_hex(&bytes);
    std::fs::write(blobs.join(&hex), &bytes).unwrap();
    let top = std::fs::read_to_string(bare_layout.join("index.json"))
        .unwrap()
        .replace(&index, &format!("sha256:{hex}"));
    let mut top: Value = serde_json::from_str(&top).unwrap();
    for m in top["manifests"].as_array_mut().unwrap() {
        if m["digest"] == format!("sha256:{hex}").as_str() {
            m["size"] = bytes.len().into();
        }
    }
    std::fs::write(
        bare_layout.join("index.json"),
        serde_json::to_vec(&top).unwrap(),
    )
    .unwrap();
    let o = fx
        .nixoci()
        .args(["push", "--insecure"])
        .arg(format!("oci:{}", bare_layout.display()))
        .arg(format!("{}/bare/app:1", reg.addr()))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("the index has no linux/amd64 image"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
