//! SBOM and provenance: made from the closure, validated by the reference
//! validators (PyPI's cyclonedx-python-lib and spdx-tools), attached as
//! OCI 1.1 referrers, and carried through layouts, archives, a registry
//! without the referrers API (Debian's docker-registry) and containerd.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The validators' virtualenv (installed once by scripts/validators.sh).
fn validators() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/validators.sh");
        PathBuf::from(run(&mut Command::new(script)).trim())
    })
    .clone()
}

fn validate_cyclonedx(file: &Path) {
    let py = "import sys\nfrom cyclonedx.validation.json import JsonStrictValidator\nfrom cyclonedx.schema import SchemaVersion\nerr = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\nif err is not None:\n    sys.exit(f'invalid CycloneDX 1.6: {str(err)[:3000]}')\n";
    run(Command::new(validators().join("python"))
        .args(["-c", py])
        .arg(file));
}

fn validate_spdx(file: &Path) {
    let out = run(Command::new(validators().join("pyspdxtools"))
        .arg("-i")
        .arg(file));
    assert!(
        !out.to_lowercase().contains("invalid"),
        "pyspdxtools: {out}"
    );
}

/// `nixoci sbom ARGS` → the document's bytes (written to `save` too).
fn sbom(fx: &Fixture, args: &[&str], save: &Path) -> Value {
    let out = fx.nixoci().arg("sbom").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "nixoci sbom {args:?}:\n{}",
        show(&out)
    );
    std::fs::write(save, &out.stdout).unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

fn nix(args: &[&str]) -> String {
    run(Command::new("nix")
        .args(["--extra-experimental-features", "nix-command flakes"])
        .args(args))
}

/// A store path's narHash as SHA-256 hex, converted by Nix itself.
fn nar_hex(path: &str) -> String {
    let info: Value = serde_json::from_str(&nix(&["path-info", "--json", path])).unwrap();
    let h = info[0]["narHash"].as_str().unwrap().to_string();
    let h = h.strip_prefix("sha256:").unwrap_or(&h).to_string();
    nix(&["hash", "to-base16", "--type", "sha256", &h])
        .trim()
        .to_string()
}

fn references(path: &str) -> BTreeSet<String> {
    run(Command::new("nix-store").args(["--query", "--references", path]))
        .lines()
        .filter(|r| *r != path)
        .map(String::from)
        .collect()
}

/// The index.json entries of a layout: (images, referrers).
fn index_entries(layout: &Path) -> (Vec<Value>, Vec<Value>) {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .cloned()
        .partition(|m| m.get("artifactType").is_none())
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap()),
    )
    .unwrap()
}

/// The names in a layer blob (a gzip tar), read by tar itself.
fn layer_names(layout: &Path, digest: &str) -> String {
    let path = layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap());
    run(Command::new("tar").arg("-tzf").arg(path))
}

fn prop<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c["properties"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)?["value"]
        .as_str()
}

#[test]
fn every_closure_path_is_in_the_sbom_with_its_hash_layer_and_references() {
    let fx = Fixture::flake("hello");
    let layout = fx.out("layout");
    let doc = fx.build_json(&[
        ".#default",
        "--output",
        &format!("oci:{}", layout.display()),
    ]);
    let root = doc["store_path"].as_str().unwrap().to_string();
    let manifest_digest = doc["manifest"]["digest"].as_str().unwrap().to_string();
    let oci = format!("oci:{}", layout.display());

    // Beside the image in index.json, without a ref.name; readers of the
    // layout still see one image.
    let (images, referrers) = index_entries(&layout);
    assert_eq!(images.len(), 1);
    let types: BTreeSet<&str> = referrers
        .iter()
        .map(|r| r["artifactType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        BTreeSet::from([
            "application/spdx+json",
            "application/vnd.cyclonedx+json",
            "application/vnd.in-toto+json"
        ])
    );
    for r in &referrers {
        assert!(r["annotations"]
            .get("org.opencontainers.image.ref.name")
            .is_none());
        let m: Value =
            serde_json::from_slice(&blob(&layout, r["digest"].as_str().unwrap())).unwrap();
        assert_eq!(m["subject"]["digest"], manifest_digest.as_str());
        assert_eq!(
            m["config"]["mediaType"],
            "application/vnd.oci.empty.v1+json"
        );
        assert_eq!(m["artifactType"], r["artifactType"]);
        assert_eq!(m["layers"][0]["mediaType"], r["artifactType"]);
    }
    assert_eq!(
        run(Command::new("umoci").args(["ls", "--layout"]).arg(&layout)).trim(),
        "latest"
    );
    assert_eq!(
        skopeo_inspect(&format!("{oci}:latest"), false)["Digest"],
        manifest_digest.as_str()
    );
    run(fx.nixoci().args(["verify", &oci]));

    // CycloneDX: one component per store path, with the NAR hash Nix
    // gives, the layer that holds it, and the references as dependencies.
    let cdx = sbom(&fx, &[&oci], &fx.out("bom.cdx.json"));
    validate_cyclonedx(&fx.out("bom.cdx.json"));
    let closure: BTreeSet<String> = nix_closure(&root).into_iter().collect();
    let components: BTreeMap<String, &Value> = cdx["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["bom-ref"].as_str().unwrap().to_string(), c))
        .collect();
    assert_eq!(components.keys().cloned().collect::<BTreeSet<_>>(), closure);
    let raw = run(Command::new("skopeo").args(["inspect", "--raw", &format!("{oci}:latest")]));
    let manifest: Value = serde_json::from_str(&raw).unwrap();
    let layer_digests: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    let deps: BTreeMap<&str, BTreeSet<String>> = cdx["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["ref"].as_str().unwrap(),
                d["dependsOn"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    for (path, c) in &components {
        assert_eq!(c["hashes"][0]["alg"], "SHA-256");
        assert_eq!(c["hashes"][0]["content"], nar_hex(path).as_str(), "{path}");
        assert_eq!(prop(c, "nix:store_path"), Some(path.as_str()));
        let layer = prop(c, "oci:layer_digest").unwrap();
        assert!(layer_digests.contains(&layer), "{path}: {layer}");
        let base = path.strip_prefix("/").unwrap();
        assert!(
            layer_names(&layout, layer)
                .lines()
                .any(|n| n.trim_end_matches('/') == base),
            "{path} is not in layer {layer}"
        );
        assert_eq!(deps[path.as_str()], references(path), "{path}");
    }
    let (name, version) = (
        components[&root]["name"].as_str().unwrap(),
        components[&root]["version"].as_str(),
    );
    assert_eq!((name, version), ("hello-app", None));
    assert_eq!(components[&root]["type"], "application");
    assert_eq!(cdx["metadata"]["component"]["type"], "container");
    assert_eq!(cdx["metadata"]["component"]["name"], "hello-app");
    assert_eq!(
        cdx["metadata"]["component"]["purl"],
        format!(
            "pkg:oci/hello-app@sha256%3A{}",
            manifest_digest.strip_prefix("sha256:").unwrap()
        )
        .as_str()
    );
    assert_eq!(
        cdx["metadata"]["component"]["hashes"][0]["content"],
        manifest_digest.strip_prefix("sha256:").unwrap()
    );
    assert_eq!(deps["image"], BTreeSet::from([root.clone()]));

    // SPDX: the same packages and DEPENDS_ON relationships.
    let spdx = sbom(&fx, &[&oci, "--format", "spdx"], &fx.out("bom.spdx.json"));
    validate_spdx(&fx.out("bom.spdx.json"));
    let packages = spdx["packages"].as_array().unwrap();
    assert_eq!(packages.len(), closure.len() + 1);
    let depends: usize = spdx["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["relationshipType"] == "DEPENDS_ON")
        .count();
    assert_eq!(
        depends,
        closure.iter().map(|p| references(p).len()).sum::<usize>()
    );
    for p in &closure {
        let hex = nar_hex(p);
        assert!(
            packages
                .iter()
                .any(|x| x["checksums"][0]["checksumValue"] == hex.as_str()),
            "{p}"
        );
    }

    // Provenance: the image manifest as subject; the flake by its locked
    // NAR hash (as Nix computes it), the derivation and the output.
    let prov = sbom(&fx, &[&oci, "--provenance"], &fx.out("prov.json"));
    assert_eq!(prov["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(prov["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(
        prov["subject"][0]["digest"]["sha256"],
        manifest_digest.strip_prefix("sha256:").unwrap()
    );
    let meta: Value = serde_json::from_str(&nix(&[
        "flake",
        "metadata",
        "--json",
        &format!("path:{}", fx.dir().display()),
    ]))
    .unwrap();
    let def = &prov["predicate"]["buildDefinition"];
    let deps = def["resolvedDependencies"].as_array().unwrap();
    let flake = deps.iter().find(|d| d["name"] == "flake").unwrap();
    assert_eq!(flake["annotations"]["narHash"], meta["locked"]["narHash"]);
    assert_eq!(def["externalParameters"]["flake"]["output"], "default");
    assert_eq!(def["externalParameters"]["system"], "x86_64-linux");
    let drv = nix(&[
        "eval",
        "--raw",
        &format!("path:{}#default.drvPath", fx.dir().display()),
    ]);
    assert!(deps
        .iter()
        .any(|d| d["name"] == "derivation" && d["uri"] == format!("file://{drv}").as_str()));
    assert!(
        !prov.to_string().contains(fx.dir().to_str().unwrap()),
        "a local path leaked: {prov}"
    );
}

#[test]
fn the_same_source_in_two_places_gives_the_same_documents() {
    let a = Fixture::flake("hello");
    let b = Fixture::flake("hello");
    let mut seen = Vec::new();
    for fx in [&a, &b] {
        let layout = fx.out("layout");
        let doc = fx.build_json(&[
            fx.dir().to_str().unwrap(),
            "--output",
            &format!("oci:{}", layout.display()),
            "--output",
            &format!("oci-archive:{}", fx.out("image.tar").display()),
        ]);
        let refs: Vec<Value> = doc["referrers"].as_array().unwrap().clone();
        assert_eq!(refs.len(), 3, "{doc}");
        // The archive holds the same documents as the layout.
        let from_archive = sbom(
            fx,
            &[
                &format!("oci-archive:{}", fx.out("image.tar").display()),
                "--provenance",
            ],
            &fx.out("p.json"),
        );
        let from_layout = sbom(
            fx,
            &[&format!("oci:{}", layout.display()), "--provenance"],
            &fx.out("p2.json"),
        );
        assert_eq!(from_archive, from_layout);
        run(Command::new("skopeo").args([
            "inspect",
            &format!("oci-archive:{}:latest", fx.out("image.tar").display()),
        ]));
        seen.push(refs);
    }
    // Byte-identical: the same referrer manifests (and so the same blobs).
    assert_eq!(seen[0], seen[1]);
}

#[test]
fn flake_inputs_and_meta_are_recorded() {
    let fx = Fixture::flake("attested");
    // The input: a git repository with one commit.
    let repo = fx.out("data");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("greeting"), "hello from an input\n").unwrap();
    let git = |args: &[&str]| {
        run(Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
            .args(args))
    };
    git(&["init", "-q"]);
    git(&["add", "greeting"]);
    git(&["commit", "-qm", "data"]);
    let rev = git(&["rev-parse", "HEAD"]).trim().to_string();
    let flake_nix = fx.dir().join("flake.nix");
    let text = std::fs::read_to_string(&flake_nix)
        .unwrap()
        .replace("@DATA_URL@", &format!("git+file://{}", repo.display()));
    std::fs::write(&flake_nix, text).unwrap();
    // Lock it first, as a user would commit flake.lock.
    run(Command::new("nix")
        .current_dir(fx.dir())
        .args([
            "--extra-experimental-features",
            "nix-command flakes",
            "flake",
            "lock",
        ])
        .arg(format!("path:{}", fx.dir().display())));
    let lock: Value =
        serde_json::from_slice(&std::fs::read(fx.dir().join("flake.lock")).unwrap()).unwrap();

    let layout = fx.out("layout");
    fx.build_ok(&[".", "--output", &format!("oci:{}", layout.display())]);
    let oci = format!("oci:{}", layout.display());
    let prov = sbom(&fx, &[&oci, "--provenance"], &fx.out("prov.json"));
    let deps = prov["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    let input = deps
        .iter()
        .find(|d| d["name"] == "flake-input:data")
        .unwrap_or_else(|| panic!("no input in {prov}"));
    assert_eq!(input["digest"]["gitCommit"], rev.as_str());
    assert_eq!(
        input["annotations"]["narHash"],
        lock["nodes"]["data"]["locked"]["narHash"]
    );
    assert_eq!(input["annotations"]["type"], "git");
    assert_eq!(
        input["uri"],
        format!("git+file://{}?rev={rev}", repo.display()).as_str()
    );

    let cdx = sbom(&fx, &[&oci], &fx.out("bom.json"));
    validate_cyclonedx(&fx.out("bom.json"));
    let spdx = sbom(&fx, &[&oci, "--format", "spdx"], &fx.out("spdx.json"));
    validate_spdx(&fx.out("spdx.json"));
    let root = cdx["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "application")
        .unwrap();
    assert_eq!(root["name"], "attested-app");
    assert_eq!(root["version"], "1.2.3");
    assert_eq!(
        root["description"],
        "An app whose image says what it is made of"
    );
    assert_eq!(root["licenses"][0]["license"]["id"], "MIT");
    assert_eq!(root["licenses"][1]["license"]["name"], "Custom Terms");
    assert_eq!(
        root["externalReferences"][0]["url"],
        "https://example.org/attested"
    );
    let pkg = spdx["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["primaryPackagePurpose"] == "APPLICATION")
        .unwrap();
    assert_eq!(pkg["homepage"], "https://example.org/attested");
    // Not every license has an SPDX id: no expression is claimed.
    assert_eq!(pkg["licenseDeclared"], "NOASSERTION");
}

#[test]
fn images_without_documents_say_so() {
    let fx = Fixture::flake("hello");
    let layout = fx.out("layout");
    let oci = format!("oci:{}", layout.display());
    fx.build_ok(&[".", "--no-sbom", "--output", &oci]);
    let (images, referrers) = index_entries(&layout);
    assert_eq!((images.len(), referrers.len()), (1, 0));
    let o = fx.nixoci().args(["sbom", &oci]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("has no CycloneDX SBOM attached"),
        "{}",
        show(&o)
    );

    // A dockerTools image is loaded as it is: no SBOM, said once.
    let dt = Fixture::flake("dockertools");
    let out = dt
        .nixoci()
        .current_dir(dt.dir())
        .args(["build", ".#plain", "--output"])
        .arg(format!("oci:{}", dt.out("layout").display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("gets no SBOM or provenance").count(),
        1,
        "{err}"
    );
    assert_eq!(index_entries(&dt.out("layout")).1.len(), 0);

    // A docker-archive has no place for them: said once, the other
    // outputs get them.
    let out = fx
        .nixoci()
        .current_dir(fx.dir())
        .args(["build", ".", "--output"])
        .arg(format!("docker-archive:{}", fx.out("d.tar").display()))
        .arg("--output")
        .arg(format!("oci:{}", fx.out("l2").display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("a docker-archive has no place for the SBOM")
            .count(),
        1,
        "{err}"
    );
    assert_eq!(index_entries(&fx.out("l2")).1.len(), 3);
    let o = fx
        .nixoci()
        .args([
            "sbom",
            &format!("docker-archive:{}", fx.out("d.tar").display()),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
}

#[test]
fn a_replaced_image_takes_its_referrers_with_it() {
    let fx = Fixture::flake("hello");
    let layout = fx.out("layout");
    let oci = format!("oci:{}", layout.display());
    let first = fx.build_json(&[".", "--output", &oci, "--tag", "hello:1"]);
    let other = fx.build_json(&[".", "--output", &oci, "--tag", "hello:2", "--env", "A=1"]);
    let again = fx.build_json(&[".", "--output", &oci, "--tag", "hello:1", "--env", "A=2"]);
    let (images, referrers) = index_entries(&layout);
    assert_eq!((images.len(), referrers.len()), (2, 6));
    let subjects: BTreeSet<String> = referrers
        .iter()
        .map(|r| {
            let m: Value =
                serde_json::from_slice(&blob(&layout, r["digest"].as_str().unwrap())).unwrap();
            m["subject"]["digest"].as_str().unwrap().to_string()
        })
        .collect();
    let want: BTreeSet<String> = [&other, &again]
        .iter()
        .map(|d| d["manifest"]["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(subjects, want);
    assert!(!subjects.contains(first["manifest"]["digest"].as_str().unwrap()));
    run(fx.nixoci().args(["verify", &oci]));
    // A referrer whose image is gone from index.json is a problem verify names.
    let index_path = layout.join("index.json");
    let mut index: Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let kept = index.clone();
    let other_digest = other["manifest"]["digest"].as_str().unwrap().to_string();
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["digest"] != other_digest.as_str());
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let o = fx.nixoci().args(["verify", &oci]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("which index.json does not list"),
        "{}",
        show(&o)
    );
    std::fs::write(&index_path, serde_json::to_vec(&kept).unwrap()).unwrap();
    let p = sbom(
        &fx,
        &[&oci, "--provenance", "--tag", "hello:2"],
        &fx.out("p.json"),
    );
    assert_eq!(
        p["subject"][0]["digest"]["sha256"],
        other["manifest"]["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap()
    );
    assert_eq!(
        p["predicate"]["buildDefinition"]["externalParameters"]["image"]["config"]["env"][1],
        serde_json::json!(["A", "1"])
    );
}

#[test]
fn referrers_travel_through_a_registry_and_containerd() {
    let reg = Registry::start("");
    let cd = Containerd::start();
    let fx = Fixture::flake("hello");
    let layout = fx.out("layout");
    let target = format!("{}/hello/app:1", reg.addr());
    let doc = fx.build_json(&[
        ".",
        "--insecure",
        "--output",
        &format!("oci:{}", layout.display()),
        "--output",
        &format!("registry:{target}"),
    ]);
    let digest = doc["manifest"]["digest"].as_str().unwrap().to_string();
    let hex = digest.strip_prefix("sha256:").unwrap();
    let from_layout = sbom(
        &fx,
        &[&format!("oci:{}", layout.display())],
        &fx.out("a.json"),
    );

    // docker-registry has no referrers API: the fallback tag lists all three.
    let fallback = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{}/hello/app:sha256-{hex}", reg.addr()),
    ]));
    let fallback: Value = serde_json::from_str(&fallback).unwrap();
    assert_eq!(
        fallback["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(
        fallback["manifests"].as_array().unwrap().len(),
        3,
        "{fallback}"
    );
    let from_registry = sbom(
        &fx,
        &[&format!("registry:{target}"), "--insecure"],
        &fx.out("b.json"),
    );
    assert_eq!(from_registry, from_layout);

    // nixoci pull brings them into containerd, with the image only in
    // the image list.
    let o = fx
        .nixoci()
        .args([
            "pull",
            "--insecure",
            "--containerd-address",
            &cd.socket(),
            &target,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let from_containerd = sbom(
        &fx,
        &[
            &format!("containerd:{target}"),
            "--containerd-address",
            &cd.socket(),
        ],
        &fx.out("c.json"),
    );
    assert_eq!(from_containerd, from_layout);
    let images = run(cd.ctr("default").args(["images", "ls", "-q"]));
    assert_eq!(images.lines().count(), 1, "{images}");
    let labels = run(cd.ctr("default").args(["content", "ls"]));
    let referrer_labels = labels
        .lines()
        .filter(|l| l.starts_with(&digest))
        .map(|l| l.matches("containerd.io/gc.ref.content.referrer.").count())
        .sum::<usize>();
    assert_eq!(referrer_labels, 3, "{labels}");

    // nixoci push from containerd to a new repository: the fallback tag there too.
    let o = fx
        .nixoci()
        .args(["push", "--insecure", "--containerd-address", &cd.socket()])
        .arg(format!("containerd:{target}"))
        .arg(format!("{}/again/app:1", reg.addr()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let again = sbom(
        &fx,
        &[
            &format!("registry:{}/again/app:1", reg.addr()),
            "--insecure",
            "--provenance",
        ],
        &fx.out("d.json"),
    );
    assert_eq!(again["subject"][0]["digest"]["sha256"], hex);

    // Built straight into containerd: the same documents.
    let o = fx
        .nixoci()
        .current_dir(fx.dir())
        .env("NIXOCI_HOME", fx.out("home"))
        .args([
            "build",
            ".",
            "--containerd-address",
            &cd.socket(),
            "--output",
            "containerd:direct",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let direct = sbom(
        &fx,
        &[
            "containerd:hello-app:latest",
            "--containerd-address",
            &cd.socket(),
            "--namespace",
            "direct",
        ],
        &fx.out("e.json"),
    );
    // zstd layers there (a local output), so other layer digests; the same
    // store paths with the same hashes.
    let paths = |d: &Value| -> BTreeSet<(String, String)> {
        d["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["bom-ref"].to_string(), c["hashes"].to_string()))
            .collect()
    };
    assert_eq!(paths(&direct), paths(&from_layout));
    assert_ne!(direct["metadata"], from_layout["metadata"]);
}
