//! What an image is made of, from what Nix knows: one package per store
//! path of the closure (name and version as `builtins.parseDrvName` splits
//! them, NAR hash and size, the layer holding it, its references), in
//! CycloneDX 1.6 and SPDX 2.3 JSON, and an in-toto statement with SLSA
//! provenance v1. Pure and deterministic: the same image gives the same
//! bytes (times come from the image's creation time, never the clock).

use crate::nix::flake::{FlakeSource, Meta};
use crate::nix::hash::Sha256;
use crate::nix::name::parse_drv_name;
use crate::nix::{Closure, StorePath};
use crate::oci::blob::{canonical_json, Blob};
use crate::oci::referrer::{Referrer, CYCLONEDX, IN_TOTO, SPDX};
use crate::oci::{LayerRecord, Platform};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// nixoci's name for how it builds an image (SLSA `buildType`).
pub const BUILD_TYPE: &str = "https://github.com/nixoci/nixoci/blob/main/README.md#provenance";
/// Who built it: nixoci on the machine that ran it (SLSA `builder.id`).
pub const BUILDER_ID: &str = "https://github.com/nixoci/nixoci/blob/main/README.md#builder";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What Nix told about the output, beyond its closure.
#[derive(Debug, Clone, Default)]
pub struct BuildFacts {
    pub meta: Meta,
    /// The flake, as locked; `None` for a store path given directly.
    pub flake: Option<FlakeSource>,
    /// The root derivation, when the output was evaluated.
    pub derivation: Option<String>,
    /// The Nix system built for.
    pub system: String,
}

/// The image the documents describe: by its content (the manifest), not
/// by a name, so every name an image is stored under shares one set of
/// documents.
pub struct Subject<'a> {
    pub platform: &'a Platform,
    pub manifest: &'a Blob,
    /// RFC 3339 UTC.
    pub created: &'a str,
    pub closure: &'a Closure,
    /// The layer holding each store path.
    pub layer_of: BTreeMap<&'a StorePath, &'a LayerRecord>,
    /// The options that shaped the image (provenance's parameters).
    pub options: Value,
}

/// The three referrers of an image: CycloneDX, SPDX, provenance.
pub fn referrers(s: &Subject, facts: &BuildFacts) -> Vec<Referrer> {
    vec![
        Referrer::new(s.manifest, CYCLONEDX, cyclonedx(s, facts), s.created),
        Referrer::new(s.manifest, SPDX, spdx(s, facts), s.created),
        Referrer::new(s.manifest, IN_TOTO, provenance(s, facts), s.created),
    ]
}

/// `2024-01-02T03:04:05Z`: SPDX allows no fraction of a second.
fn whole_seconds(created: &str) -> String {
    match created.get(..19) {
        Some(head) if created.len() > 20 => format!("{head}Z"),
        _ => created.to_string(),
    }
}

/// A UUID made from the manifest digest (the same image, the same serial).
fn uuid_of(d: &crate::oci::Digest, salt: &str) -> String {
    let h = crate::oci::Digest::of(format!("{salt}{d}").as_bytes());
    let x = h.hex();
    format!(
        "{}-{}-4{}-8{}-{}",
        &x[..8],
        &x[8..12],
        &x[13..16],
        &x[17..20],
        &x[20..32]
    )
}

fn nar_hex(closure: &Closure, p: &StorePath) -> Option<String> {
    Sha256::parse(&closure.paths[p].nar_hash)
        .ok()
        .map(|h| h.hex())
}

/// The image's name in the documents: its root store path's name, as
/// `builtins.parseDrvName` splits it (`hello-app`), lower-cased for purl.
fn image_name<'a>(s: &Subject<'a>) -> &'a str {
    parse_drv_name(s.closure.root.name()).0
}

fn oci_purl(s: &Subject) -> String {
    let name: String = image_name(s)
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.' | '_' | '-') => c,
            _ => '-',
        })
        .collect();
    format!("pkg:oci/{name}@sha256%3A{}", s.manifest.digest.hex())
}

fn license_ids(meta: &Meta) -> Vec<&str> {
    meta.licenses
        .iter()
        .filter_map(|l| l.spdx_id.as_deref())
        .filter(|id| {
            !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.+".contains(&b))
        })
        .collect()
}

/// CycloneDX 1.6 JSON.
pub fn cyclonedx(s: &Subject, facts: &BuildFacts) -> Vec<u8> {
    let closure = s.closure;
    let mut components = Vec::new();
    let mut dependencies = vec![json!({ "ref": "image", "dependsOn": [closure.root.to_string()] })];
    for (p, info) in &closure.paths {
        let (name, version) = parse_drv_name(p.name());
        let mut props = vec![
            json!({ "name": "nix:store_path", "value": p.to_string() }),
            json!({ "name": "nix:nar_hash", "value": info.nar_hash }),
            json!({ "name": "nix:nar_size", "value": info.nar_size.to_string() }),
        ];
        if let Some(l) = s.layer_of.get(p) {
            props.push(json!({ "name": "oci:layer_digest", "value": l.blob.digest.to_string() }));
            props.push(json!({ "name": "oci:layer_diff_id", "value": l.diff_id.to_string() }));
        }
        let mut c = json!({
            "type": if *p == closure.root { "application" } else { "library" },
            "bom-ref": p.to_string(),
            "name": name,
            "properties": props,
        });
        if !version.is_empty() {
            c["version"] = json!(version);
        }
        if let Some(hex) = nar_hex(closure, p) {
            c["hashes"] = json!([{ "alg": "SHA-256", "content": hex }]);
        }
        if *p == closure.root {
            if let Some(d) = &facts.meta.description {
                c["description"] = json!(d);
            }
            let ids = license_ids(&facts.meta);
            let mut licenses: Vec<Value> = ids
                .iter()
                .map(|id| json!({ "license": { "id": id } }))
                .collect();
            for l in &facts.meta.licenses {
                if l.spdx_id.as_deref().is_none_or(|id| !ids.contains(&id)) {
                    if let Some(n) = &l.full_name {
                        licenses.push(json!({ "license": { "name": n } }));
                    }
                }
            }
            if !licenses.is_empty() {
                c["licenses"] = json!(licenses);
            }
            if let Some(h) = &facts.meta.homepage {
                c["externalReferences"] = json!([{ "type": "website", "url": h }]);
            }
        }
        components.push(c);
        let refs: Vec<String> = info.references.iter().map(|r| r.to_string()).collect();
        dependencies.push(json!({ "ref": p.to_string(), "dependsOn": refs }));
    }
    canonical_json(&json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": format!("urn:uuid:{}", uuid_of(&s.manifest.digest, "cyclonedx")),
        "version": 1,
        "metadata": {
            "timestamp": s.created,
            "tools": { "components": [{ "type": "application", "name": "nixoci", "version": VERSION }] },
            "component": {
                "type": "container",
                "bom-ref": "image",
                "name": image_name(s),
                "version": s.manifest.digest.to_string(),
                "purl": oci_purl(s),
                "hashes": [{ "alg": "SHA-256", "content": s.manifest.digest.hex() }],
            },
            "properties": [
                { "name": "oci:platform", "value": platform_string(s.platform) },
            ],
        },
        "components": components,
        "dependencies": dependencies,
    }))
}

fn platform_string(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

fn spdx_id(p: &StorePath) -> String {
    // The store hash is nixbase32: letters and digits only.
    format!("SPDXRef-StorePath-{}", p.hash())
}

/// SPDX 2.3 JSON.
pub fn spdx(s: &Subject, facts: &BuildFacts) -> Vec<u8> {
    let closure = s.closure;
    let mut packages = vec![json!({
        "SPDXID": "SPDXRef-Image",
        "name": image_name(s),
        "versionInfo": s.manifest.digest.to_string(),
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [{ "algorithm": "SHA256", "checksumValue": s.manifest.digest.hex() }],
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": oci_purl(s),
        }],
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Image",
    })];
    for (p, info) in &closure.paths {
        let (name, version) = parse_drv_name(p.name());
        let mut comment = format!(
            "Nix store path {p}; NAR hash {}; NAR size {}",
            info.nar_hash, info.nar_size
        );
        if let Some(l) = s.layer_of.get(p) {
            comment.push_str(&format!(
                "; in layer {} (diff_id {})",
                l.blob.digest, l.diff_id
            ));
        }
        let mut pkg = json!({
            "SPDXID": spdx_id(p),
            "name": name,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "copyrightText": "NOASSERTION",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "comment": comment,
        });
        if !version.is_empty() {
            pkg["versionInfo"] = json!(version);
        }
        if let Some(hex) = nar_hex(closure, p) {
            pkg["checksums"] = json!([{ "algorithm": "SHA256", "checksumValue": hex }]);
        }
        if *p == closure.root {
            pkg["primaryPackagePurpose"] = json!("APPLICATION");
            if let Some(d) = &facts.meta.description {
                pkg["description"] = json!(d);
            }
            if let Some(h) = &facts.meta.homepage {
                pkg["homepage"] = json!(h);
            }
            let ids = license_ids(&facts.meta);
            if !ids.is_empty() && ids.len() == facts.meta.licenses.len() {
                pkg["licenseDeclared"] = json!(ids.join(" AND "));
            }
        }
        packages.push(pkg);
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": spdx_id(p),
        }));
        for r in &info.references {
            relationships.push(json!({
                "spdxElementId": spdx_id(p),
                "relationshipType": "DEPENDS_ON",
                "relatedSpdxElement": spdx_id(r),
            }));
        }
    }
    canonical_json(&json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}@{}", image_name(s), s.manifest.digest),
        "documentNamespace": format!(
            "https://spdx.org/spdxdocs/nixoci/{}-{}",
            oci_purl(s).trim_start_matches("pkg:oci/").split('@').next().unwrap_or_default(),
            uuid_of(&s.manifest.digest, "spdx")
        ),
        "creationInfo": {
            "created": whole_seconds(s.created),
            "creators": [format!("Tool: nixoci-{VERSION}")],
        },
        "documentDescribes": ["SPDXRef-Image"],
        "packages": packages,
        "relationships": relationships,
    }))
}

fn digest_set(h: &Sha256, rev: Option<&str>) -> Value {
    let mut d = json!({ "sha256": h.hex() });
    if let Some(r) = rev {
        d["gitCommit"] = json!(r);
    }
    d
}

/// An in-toto Statement v1 with an SLSA Provenance v1 predicate. Digests
/// of sources are the SHA-256 of their NAR serialisation (what Nix locks
/// them by); `annotations.narHash` gives the same in Nix's SRI form.
pub fn provenance(s: &Subject, facts: &BuildFacts) -> Vec<u8> {
    let mut external = json!({
        "system": facts.system,
        "image": s.options,
    });
    let mut deps = Vec::new();
    match &facts.flake {
        Some(f) => {
            let mut flake = json!({ "source": f.reference });
            if let Some(o) = &f.output {
                flake["output"] = json!(o);
            }
            external["flake"] = flake;
            if let Some(h) = &f.nar_hash {
                deps.push(json!({
                    "name": "flake",
                    "uri": f.reference,
                    "digest": digest_set(h, None),
                    "annotations": { "narHash": h.sri() },
                }));
            }
            for i in &f.inputs {
                let mut d = json!({ "name": format!("flake-input:{}", i.name) });
                if let Some(u) = &i.uri {
                    d["uri"] = json!(u);
                }
                let mut ann = json!({ "type": i.kind });
                if let Some(h) = &i.nar_hash {
                    d["digest"] = digest_set(h, i.rev.as_deref());
                    ann["narHash"] = json!(h.sri());
                } else if let Some(r) = &i.rev {
                    d["digest"] = json!({ "gitCommit": r });
                }
                d["annotations"] = ann;
                deps.push(d);
            }
        }
        None => external["storePath"] = json!(s.closure.root.to_string()),
    }
    if let Some(drv) = &facts.derivation {
        deps.push(json!({ "name": "derivation", "uri": format!("file://{drv}") }));
    }
    let root = s.closure.root_info();
    let mut out = json!({ "name": "output", "uri": format!("file://{}", root.path) });
    if let Ok(h) = Sha256::parse(&root.nar_hash) {
        out["digest"] = json!({ "sha256": h.hex() });
    }
    deps.push(out);
    canonical_json(&json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{
            "name": image_name(s),
            "digest": { "sha256": s.manifest.digest.hex() },
        }],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": { "id": BUILDER_ID, "version": { "nixoci": VERSION } },
            },
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::flake::License;

    #[test]
    fn times_serials_and_licenses_are_what_the_formats_allow() {
        assert_eq!(
            whole_seconds("2024-01-02T03:04:05.123Z"),
            "2024-01-02T03:04:05Z"
        );
        assert_eq!(
            whole_seconds("2024-01-02T03:04:05Z"),
            "2024-01-02T03:04:05Z"
        );
        let d = crate::oci::Digest::of(b"m");
        let u = uuid_of(&d, "x");
        let parts: Vec<usize> = u.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
        assert!(u.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
        assert_eq!(u, uuid_of(&d, "x"));
        assert_ne!(u, uuid_of(&d, "y"));
        let meta = Meta {
            licenses: vec![
                License {
                    spdx_id: Some("MIT".into()),
                    full_name: None,
                },
                License {
                    spdx_id: Some("not an id".into()),
                    full_name: None,
                },
                License {
                    spdx_id: Some("GPL-2.0+".into()),
                    full_name: None,
                },
            ],
            ..Default::default()
        };
        assert_eq!(license_ids(&meta), ["MIT", "GPL-2.0+"]);
    }
}
