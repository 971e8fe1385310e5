//! Property tests of the pure parts that take outside input: whatever they
//! are given, they answer (a value or an error) and never panic, and what
//! they write reads back as written.

use nixoci::image::tar::TarWriter;
use nixoci::oci::time::{parse_created, parse_epoch, rfc3339, MAX_EPOCH};
use nixoci::oci::ImageRef;
use nixoci::plan::duration;
use proptest::prelude::*;
use std::io::Read;
use std::path::Path;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn references_parse_or_refuse_and_round_trip(s in "\\PC{0,80}") {
        if let Ok(r) = ImageRef::parse(&s) {
            let again = ImageRef::parse(&r.to_string()).expect("a printed reference parses");
            prop_assert_eq!(again, r);
        }
    }

    #[test]
    fn reference_shaped_inputs_round_trip(
        host in proptest::option::of("[a-z0-9]{1,10}(\\.[a-z]{2,5})?(:[0-9]{1,5})?"),
        path in "[a-z0-9]{1,10}(/[a-z0-9]{1,10}){0,2}",
        tag in proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
    ) {
        let mut s = String::new();
        if let Some(h) = &host { s.push_str(h); s.push('/'); }
        s.push_str(&path);
        if let Some(t) = &tag { s.push(':'); s.push_str(t); }
        if let Ok(r) = ImageRef::parse(&s) {
            prop_assert_eq!(ImageRef::parse(&r.to_string()).unwrap(), r);
        }
    }

    #[test]
    fn durations_parse_or_refuse(s in "[0-9.]{0,25}(ns|us|ms|s|m|h|x|){0,3}[0-9]{0,3}") {
        if let Ok(d) = duration::parse(&s) {
            prop_assert!(d <= duration::MAX);
        }
    }

    #[test]
    fn durations_add_up(h in 0u64..1000, m in 0u64..60, s in 0u64..60, ms in 0u64..1000) {
        let text = format!("{h}h{m}m{s}s{ms}ms");
        let want = std::time::Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + ms);
        prop_assert_eq!(duration::parse(&text).unwrap(), want);
    }

    #[test]
    fn epochs_and_created_times(s in "\\PC{0,30}", n in any::<u64>()) {
        let _ = parse_created("--created", &s);
        match parse_epoch("SOURCE_DATE_EPOCH", &n.to_string()) {
            Ok(v) => {
                prop_assert!(v <= MAX_EPOCH);
                let t = rfc3339(v);
                prop_assert_eq!(parse_created("--created", &t).unwrap(), t);
            }
            Err(_) => prop_assert!(n > MAX_EPOCH),
        }
    }

    // Names are any bytes but NUL and '\n': the `tar` crate, the reader
    // here, splits PAX records at a newline inside a value (GNU tar reads
    // such names as written; checked by hand).
    #[test]
    fn tar_entries_read_back_as_written(
        names in proptest::collection::btree_set(
            proptest::collection::vec((1u8..=255).prop_filter("newline", |b| *b != b'\n'), 1..300),
            1..6,
        ),
        mode in 0u32..0o10000,
        content in proptest::collection::vec(any::<u8>(), 0..2000),
        mtime in 0u64..=MAX_EPOCH,
    ) {
        let mut out = Vec::new();
        let mut t = TarWriter::new(&mut out, mtime);
        for n in &names {
            t.file_bytes(n, mode, &content).unwrap();
        }
        t.finish().unwrap();
        prop_assert_eq!(out.len() % 512, 0);
        let mut a = tar::Archive::new(&out[..]);
        let mut seen = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            prop_assert_eq!(&body, &content);
            prop_assert_eq!(e.header().mode().unwrap(), mode);
            if mtime <= 0o77777777777 {
                prop_assert_eq!(e.header().mtime().unwrap(), mtime);
            } else {
                let pax = e.pax_extensions().unwrap().expect("a PAX header");
                let m = pax
                    .filter_map(Result::ok)
                    .find(|x| x.key() == Ok("mtime"))
                    .expect("an mtime record");
                prop_assert_eq!(m.value().unwrap(), mtime.to_string());
            }
            seen.push(e.path_bytes().into_owned());
        }
        let want: Vec<Vec<u8>> = names.into_iter().collect();
        prop_assert_eq!(seen, want);
    }

    #[test]
    fn image_documents_parse_or_refuse(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        use nixoci::source::documents::*;
        let o = Path::new("fuzz");
        let _ = parse_index(o, "index", &bytes);
        let _ = parse_manifest(o, &bytes);
        let _ = parse_config(o, &bytes);
        let _ = manifest_blobs(o, &bytes);
    }

    #[test]
    fn json_shaped_documents_parse_or_refuse(
        digest in "(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}|[a-z]{0,8}:?[0-9a-f]{0,70})",
        size in any::<i64>(),
        media in "\\PC{0,30}",
        diff in "\\PC{0,80}",
    ) {
        use nixoci::source::documents::*;
        let o = Path::new("fuzz");
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": media, "digest": digest, "size": size},
            "layers": [{"mediaType": media, "digest": digest, "size": size}],
        });
        let _ = manifest_blobs(o, manifest.to_string().as_bytes());
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [
            {"mediaType": media, "digest": digest, "size": size, "platform": {"os": "linux", "architecture": media}}]});
        if let Ok(i) = parse_index(o, "index", index.to_string().as_bytes()) {
            let _ = pick_platform(o, &i, None);
        }
        let config = serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff]}});
        if let Ok(c) = parse_config(o, config.to_string().as_bytes()) {
            let _ = config_diff_ids(o, &c, 1, "the manifest");
        }
    }

    #[test]
    fn iptables_output_parses_or_is_skipped(text in "(-A CNI-DN-[a-f0-9]{4} .{0,80}\n){0,5}\\PC{0,200}") {
        let _ = nixoci::enclave::network::parse_published(&text);
    }

    #[test]
    fn auth_challenges_and_base64(h in "\\PC{0,120}", b in proptest::collection::vec(any::<u8>(), 0..100)) {
        let _ = nixoci::registry::auth::parse_challenge(&h);
        let enc = nixoci::util::base64::base64_encode(&b);
        prop_assert_eq!(nixoci::util::base64::base64_decode(&enc), Some(b));
        let _ = nixoci::util::base64::base64_decode(&h);
    }

    #[test]
    fn subnet_pools_parse_or_refuse(s in "\\PC{0,24}", a in any::<u8>(), b in any::<u8>(), p in 0u8..40) {
        let _ = nixoci::enclave::network::parse_pool(&s);
        let _ = nixoci::enclave::network::parse_pool(&format!("{a}.{b}.0.0/{p}"));
    }
}

/// Layering: for any reference graph, every path lands in exactly one
/// layer, the root alone, within the bound.
mod layering {
    use nixoci::image::layering::{plan, LayerKind};
    use nixoci::nix::{Closure, PathInfo, StorePath};
    use proptest::prelude::*;

    fn path(i: usize) -> StorePath {
        StorePath::parse(&format!("/nix/store/{i:a>32}-p{i}")).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn every_path_once_root_alone(
            n in 1usize..40,
            edges in proptest::collection::vec((0usize..40, 0usize..40), 0..120),
            max_layers in 4usize..=125,
            root_layer in any::<bool>(),
        ) {
            // Edges from lower to higher index only: a DAG rooted at 0.
            let mut refs = vec![Vec::new(); n];
            for (a, b) in edges {
                let (a, b) = (a % n, b % n);
                if a < b && !refs[a].contains(&path(b)) {
                    refs[a].push(path(b));
                }
            }
            // Reach every path from the root.
            for i in 1..n {
                if !refs[0].contains(&path(i)) && (0..i).all(|j| !refs[j].contains(&path(i))) {
                    refs[0].push(path(i));
                }
            }
            let infos: Vec<PathInfo> = (0..n)
                .map(|i| PathInfo {
                    path: path(i),
                    nar_hash: format!("sha256:{i}"),
                    nar_size: 10,
                    references: refs[i].clone(),
                })
                .collect();
            let closure = Closure::new(path(0), infos).unwrap();
            let layers = plan(&closure, max_layers, root_layer).unwrap();
            prop_assert!(layers.len() <= max_layers);
            let mut seen: Vec<StorePath> = layers.iter().flat_map(|l| l.paths.clone()).collect();
            seen.sort();
            let mut want: Vec<StorePath> = closure.paths.keys().cloned().collect();
            want.sort();
            prop_assert_eq!(seen, want);
            let root_layers: Vec<_> = layers.iter().filter(|l| l.kind == LayerKind::RootOutput).collect();
            prop_assert_eq!(root_layers.len(), 1);
            prop_assert_eq!(&root_layers[0].paths, &vec![path(0)]);
            prop_assert_eq!(layers.iter().any(|l| l.kind == LayerKind::RootLayer), root_layer);
        }
    }
}

/// Archives and layouts fed truncated and mutated bytes: every load ends in
/// an image or an error, never a panic, and an image only when every blob
/// matched its digest.
mod archives {
    use nixoci::oci::Digest;
    use nixoci::sink::discard::Discard;
    use nixoci::sink::BlobSink;
    use nixoci::source::{load, LoadSource};
    use proptest::prelude::*;

    fn tar_of(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// A valid docker-archive and a valid OCI archive of one small image.
    fn archives() -> (Vec<u8>, Vec<u8>) {
        let layer = tar_of(&[("hello.txt", b"hello, world\n".to_vec())]);
        let diff = Digest::of(&layer);
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff}"]}}}}"#
        )
        .into_bytes();
        let cfg = Digest::of(&config);
        let docker = tar_of(&[
            ("layer.tar", layer.clone()),
            (&format!("{}.json", cfg.hex()), config.clone()),
            (
                "manifest.json",
                format!(
                    r#"[{{"Config":"{}.json","RepoTags":["x:1"],"Layers":["layer.tar"]}}]"#,
                    cfg.hex()
                )
                .into_bytes(),
            ),
        ]);
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cfg}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{diff}","size":{}}}]}}"#,
            config.len(),
            layer.len()
        )
        .into_bytes();
        let man = Digest::of(&manifest);
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{man}","size":{},"annotations":{{"io.containerd.image.name":"docker.io/library/x:1"}}}}]}}"#,
            manifest.len()
        )
        .into_bytes();
        let oci = tar_of(&[
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
            ("index.json", index),
            (&format!("blobs/sha256/{}", man.hex()), manifest),
            (&format!("blobs/sha256/{}", cfg.hex()), config),
            (&format!("blobs/sha256/{}", diff.hex()), layer),
        ]);
        (docker, oci)
    }

    fn try_load(bytes: &[u8], oci: bool) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.tar");
        std::fs::write(&f, bytes).unwrap();
        let src = if oci {
            LoadSource::OciArchive(f)
        } else {
            LoadSource::DockerArchive(f)
        };
        let sink = Discard::default();
        let sinks: [&dyn BlobSink; 1] = [&sink];
        let fallback = "fallback:1".parse().unwrap();
        load(&src, &sinks, None, Some(&fallback), None).is_ok()
    }

    #[test]
    fn the_unmutated_archives_load() {
        let (docker, oci) = archives();
        assert!(try_load(&docker, false));
        assert!(try_load(&oci, true));
    }

    /// The OCI archive unpacked as a layout directory, one file mutated.
    /// Returns (loaded, whether the mutated file was a blob).
    fn try_layout(
        archive: &[u8],
        file: usize,
        at: usize,
        x: u8,
        cut: Option<usize>,
    ) -> (bool, bool) {
        let dir = tempfile::tempdir().unwrap();
        tar::Archive::new(archive).unpack(dir.path()).unwrap();
        let mut files: Vec<_> = walk(dir.path());
        files.sort();
        let f = &files[file % files.len()];
        let blob = f.components().any(|c| c.as_os_str() == "blobs");
        let mut bytes = std::fs::read(f).unwrap();
        if !bytes.is_empty() {
            let n = bytes.len();
            bytes[at % n] ^= x;
        }
        if let Some(c) = cut {
            bytes.truncate(c % (bytes.len() + 1));
        }
        std::fs::write(f, bytes).unwrap();
        let sink = Discard::default();
        let sinks: [&dyn BlobSink; 1] = [&sink];
        let loaded = load(
            &LoadSource::Oci(dir.path().into()),
            &sinks,
            None,
            None,
            None,
        )
        .is_ok();
        (loaded, blob)
    }

    fn walk(d: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn mutated_layouts_are_refused(
            file in 0usize..5,
            at in 0usize..5000,
            x in 1u8..=255,
            cut in proptest::option::of(0usize..5000),
        ) {
            let (_, oci) = archives();
            // Every blob is named by its digest: a changed or cut blob is
            // refused. (index.json is named by nothing; a change that keeps
            // it valid may load.)
            let (loaded, blob) = try_layout(&oci, file, at, x, cut);
            prop_assert!(!(loaded && blob), "a mutated blob loaded");
        }

        #[test]
        fn mutated_archives_load_or_refuse(
            oci in any::<bool>(),
            cut in proptest::option::of(0usize..20_000),
            flips in proptest::collection::vec((0usize..20_000, 1u8..=255), 0..4),
        ) {
            let (docker, oci_bytes) = archives();
            let mut bytes = if oci { oci_bytes } else { docker };
            let original = bytes.clone();
            for (at, x) in flips {
                let n = bytes.len();
                bytes[at % n] ^= x;
            }
            if let Some(c) = cut {
                bytes.truncate(c % (original.len() + 1));
            }
            // Never a panic; loading an altered archive is possible only
            // where the change is outside every checked byte (padding).
            let _ = try_load(&bytes, oci);
        }
    }
}

/// Docker config files of any shape: credentials, a helper to ask, or
/// nothing; never a panic, and a well-formed `auth` entry decodes to the
/// user and secret it encodes.
mod docker_config {
    use nixoci::registry::auth::{base64_encode, from_config, Found};
    use proptest::prelude::*;
    use std::path::Path;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300), reg in "[a-z0-9.:]{1,20}") {
            let _ = from_config(Path::new("config.json"), &bytes, &reg);
        }

        #[test]
        fn shaped_configs(
            reg in "[a-z]{1,8}(\\.[a-z]{2,4})?(:[0-9]{2,5})?",
            user in "[^:\\x00]{0,12}",
            secret in "\\PC{0,16}",
            auth in proptest::option::of("\\PC{0,30}"),
            helper in proptest::option::of("[a-z]{1,8}"),
            store in proptest::option::of("[a-z]{1,8}"),
        ) {
            let encoded = base64_encode(format!("{user}:{secret}").as_bytes());
            let mut cfg = serde_json::json!({"auths": {reg.clone(): {"auth": auth.clone().unwrap_or(encoded)}}});
            if let Some(h) = &helper { cfg["credHelpers"] = serde_json::json!({reg.clone(): h}); }
            if let Some(s) = &store { cfg["credsStore"] = serde_json::json!(s); }
            let found = from_config(Path::new("config.json"), cfg.to_string().as_bytes(), &reg).unwrap();
            match (&helper, &auth) {
                (Some(h), _) => prop_assert_eq!(found, Found::Helper(h.clone())),
                (None, None) => match found {
                    Found::Credentials(c) => {
                        prop_assert_eq!(c.username, user);
                        prop_assert_eq!(c.secret, secret);
                    }
                    other => prop_assert!(false, "{other:?}"),
                },
                (None, Some(_)) => {}
            }
        }
    }
}
