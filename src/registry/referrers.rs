//! OCI 1.1 referrers on a registry: pushed as manifests with a `subject`;
//! found through the referrers API (`GET /v2/<name>/referrers/<digest>`)
//! where the registry has it, else through the referrers tag schema
//! (`sha256-<hex>`: an index of the referrers), which the client keeps
//! up to date when the registry does not answer a push with `OCI-Subject`.

use super::{Client, RegistryError};
use crate::oci::blob::{canonical_json, INDEX_MEDIA_TYPE};
use crate::oci::digest::Digest;
use crate::oci::referrer::{fallback_tag, Referrer};
use serde_json::{json, Value};

/// A referrer as an index lists it: its manifest descriptor and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub artifact_type: String,
}

fn entry(r: &Referrer) -> Value {
    let annotations: Value = serde_json::from_slice::<Value>(&r.manifest_bytes)
        .ok()
        .and_then(|m| m.get("annotations").cloned())
        .unwrap_or(Value::Null);
    let mut e = r.index_entry();
    if annotations.is_object() {
        e["annotations"] = annotations;
    }
    e
}

fn listed(index: &[u8]) -> Vec<Listed> {
    let Ok(v) = serde_json::from_slice::<Value>(index) else {
        return Vec::new();
    };
    v["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            Some(Listed {
                media_type: m["mediaType"].as_str()?.to_string(),
                digest: Digest::parse(m["digest"].as_str()?).ok()?,
                size: m["size"].as_u64()?,
                artifact_type: m["artifactType"].as_str().unwrap_or_default().to_string(),
            })
        })
        .collect()
}

impl Client {
    /// Push the referrers of `subject` (their blobs must be there): each
    /// manifest by digest; then, unless the registry said it indexes them
    /// itself (`OCI-Subject`), the fallback tag's index, merged with what
    /// it listed before.
    pub fn push_referrers(
        &self,
        subject: &Digest,
        referrers: &[Referrer],
    ) -> Result<(), RegistryError> {
        if referrers.is_empty() {
            return Ok(());
        }
        let mut indexed = true;
        for r in referrers {
            let url = self.url(&format!("manifests/{}", r.manifest.digest));
            let len = r.manifest_bytes.len().to_string();
            let reply = self.call(
                "put referrer",
                "PUT",
                &url,
                &[
                    ("Content-Type", &r.manifest.media_type),
                    ("Content-Length", &len),
                ],
                Some(&r.manifest_bytes),
            )?;
            let reply = self.expect("put referrer", &url, reply, &[200, 201])?;
            if reply.header("oci-subject") != Some(subject.to_string().as_str()) {
                indexed = false;
            }
        }
        if indexed {
            return Ok(());
        }
        let tag = fallback_tag(subject);
        let mut entries: Vec<Value> = match self.get_manifest_if_any(&tag)? {
            Some(bytes) => serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v["manifests"].as_array().cloned())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        for r in referrers {
            let d = r.manifest.digest.to_string();
            entries.retain(|e| e["digest"].as_str() != Some(d.as_str()));
            entries.push(entry(r));
        }
        let index = canonical_json(&json!({
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": entries,
        }));
        self.put_manifest(&tag, INDEX_MEDIA_TYPE, &index)?;
        Ok(())
    }

    /// The referrers of `subject`: from the referrers API, else from the
    /// fallback tag, else none.
    pub fn referrers(&self, subject: &Digest) -> Result<Vec<Listed>, RegistryError> {
        let url = self.url(&format!("referrers/{subject}"));
        let reply = self.call(
            "list referrers",
            "GET",
            &url,
            &[("Accept", INDEX_MEDIA_TYPE)],
            None,
        )?;
        if reply.status == 200
            && reply
                .header("content-type")
                .is_some_and(|t| t.starts_with(INDEX_MEDIA_TYPE))
        {
            return Ok(listed(&reply.body));
        }
        if reply.status != 404 && reply.status != 200 {
            self.expect("list referrers", &url, reply, &[200, 404])?;
        }
        Ok(self
            .get_manifest_if_any(&fallback_tag(subject))?
            .map(|b| listed(&b))
            .unwrap_or_default())
    }

    /// A manifest by tag or digest, or `None` where the registry has none.
    fn get_manifest_if_any(&self, reference: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        let url = self.url(&format!("manifests/{reference}"));
        let accept = format!("{INDEX_MEDIA_TYPE}, application/vnd.oci.image.manifest.v1+json");
        let reply = self.call("get manifest", "GET", &url, &[("Accept", &accept)], None)?;
        if reply.status == 404 {
            return Ok(None);
        }
        Ok(Some(self.expect("get manifest", &url, reply, &[200])?.body))
    }
}
